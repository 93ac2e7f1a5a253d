//! weir-log throughput against the machine's own limits, measured in the same run on the same
//! filesystem. Plain binary (harness = false); prints a table.
//!
//!   cargo bench -p weir-log --bench log_bench                 # everything
//!   cargo bench -p weir-log --bench log_bench -- recovery     # only the recovery comparison
//! Env: WEIR_BENCH_MB (data per case, default 64), WEIR_BENCH_RECOVERY_MB (default 1024),
//!      WEIR_BENCH_SECS (time cap per case, default 3), WEIR_BENCH_DIR (default: temp dir).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_log::test_support::build_batch;
use weir_log::{AppendOptions, FlushPolicy, Log, LogConfig, LogEnv};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Case {
    bytes: u64,
    batches: u64,
    elapsed: Duration,
}

impl Case {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
    fn per_s(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }
}

fn row(name: &str, ours: &Case, raw_name: &str, raw: &Case) {
    println!(
        "{name:<34} {:>9.1} MB/s {:>10.0} b/s | {raw_name:<30} {:>9.1} MB/s {:>10.0} b/s | {:>5.0}%",
        ours.mb_s(),
        ours.per_s(),
        raw.mb_s(),
        raw.per_s(),
        100.0 * ours.mb_s() / raw.mb_s()
    );
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
    p
}

fn append_case(env: &Arc<LogEnv>, dir: &Path, batch_bytes: usize, total: u64, cap: Duration, fsync: bool) -> Case {
    let flush = if fsync { FlushPolicy::EveryAppend } else { FlushPolicy::Interval { messages: u64::MAX, ms: 3_600_000 } };
    let log = Log::open(env, &fresh(dir, "append"), LogConfig { flush, ..LogConfig::default() }).unwrap();
    let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
    let opts = AppendOptions::default();
    let start = Instant::now();
    let mut n = 0u64;
    while n * (batch_bytes as u64) < total && start.elapsed() < cap {
        let info = log.append(&b, &opts).unwrap();
        if fsync {
            let (tx, rx) = mpsc::channel();
            log.on_durable(info.last_offset + 1, Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())));
            assert!(rx.recv().unwrap());
        }
        n += 1;
    }
    let elapsed = start.elapsed();
    log.delete().unwrap();
    Case { bytes: n * batch_bytes as u64, batches: n, elapsed }
}

fn raw_write_case(dir: &Path, batch_bytes: usize, total: u64, cap: Duration, fsync: bool) -> Case {
    let path = fresh(dir, "raw.bin");
    let mut f = File::create(&path).unwrap();
    let buf = vec![7u8; batch_bytes];
    let start = Instant::now();
    let mut n = 0u64;
    while n * (batch_bytes as u64) < total && start.elapsed() < cap {
        f.write_all(&buf).unwrap();
        if fsync {
            rustix::fs::fdatasync(&f).unwrap();
        }
        n += 1;
    }
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    Case { bytes: n * batch_bytes as u64, batches: n, elapsed }
}

fn group_commit_case(env: &Arc<LogEnv>, dir: &Path, batch_bytes: usize, writers: usize, cap: Duration) -> Case {
    let log = Arc::new(Log::open(env, &fresh(dir, "group"), LogConfig::default()).unwrap());
    let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(&log);
            let b = b.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < cap {
                    let info = log.append(&b, &AppendOptions::default()).unwrap();
                    let (tx, rx) = mpsc::channel();
                    log.on_durable(info.last_offset + 1, Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())));
                    assert!(rx.recv().unwrap());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = start.elapsed();
    if let Ok(log) = Arc::try_unwrap(log) {
        log.delete().unwrap();
    }
    Case { bytes: n * batch_bytes as u64, batches: n, elapsed }
}

fn read_case(env: &Arc<LogEnv>, dir: &Path, batch_bytes: usize, total: u64) -> (Case, Case) {
    let config = LogConfig { flush: FlushPolicy::Interval { messages: u64::MAX, ms: 3_600_000 }, ..LogConfig::default() };
    let log = Log::open(env, &fresh(dir, "read"), config).unwrap();
    let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
    let count = total / batch_bytes as u64;
    for _ in 0..count {
        log.append(&b, &AppendOptions::default()).unwrap();
    }
    let end = log.log_end_offset();
    let fetch_bytes = 1 << 20;
    let mut buf = Vec::with_capacity(fetch_bytes * 2);
    // Warm the page cache once, then measure.
    for pass in 0..2 {
        let start = Instant::now();
        let mut next = 0;
        let mut bytes = 0u64;
        while next < end {
            let r = log.read(next, fetch_bytes, end).unwrap();
            buf.clear();
            r.read_into(&mut buf).unwrap();
            bytes += buf.len() as u64;
            // Next fetch offset: count the batches (each holds one record here).
            next += (r.bytes / batch_bytes) as i64;
        }
        if pass == 1 {
            let ours = Case { bytes, batches: count, elapsed: start.elapsed() };
            // Raw: sequential 1 MiB preads of the segment file itself.
            let seg = log.dir().join(format!("{:020}.log", 0));
            let f = File::open(&seg).unwrap();
            let len = f.metadata().unwrap().len();
            let mut rbuf = vec![0u8; fetch_bytes];
            let start = Instant::now();
            let mut pos = 0;
            while pos < len {
                let n = f.read_at(&mut rbuf, pos).unwrap();
                pos += n as u64;
            }
            let raw = Case { bytes: len, batches: count, elapsed: start.elapsed() };
            log.delete().unwrap();
            return (ours, raw);
        }
    }
    unreachable!()
}

fn recovery(env: &Arc<LogEnv>, dir: &Path, total: u64) {
    let path = fresh(dir, "recovery");
    let config = LogConfig { flush: FlushPolicy::Interval { messages: u64::MAX, ms: 3_600_000 }, ..LogConfig::default() };
    let batch_bytes = 16 * 1024;
    {
        let log = Log::open(env, &path, config).unwrap();
        let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
        for _ in 0..total / batch_bytes as u64 {
            log.append(&b, &AppendOptions::default()).unwrap();
        }
        // Dropped without close(): on disk this is what kill -9 leaves (no clean checkpoint).
    }
    // Time to read every segment once (the floor for a full CRC scan).
    let start = Instant::now();
    let mut read = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(&path).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let f = File::open(&p).unwrap();
            let mut pos = 0;
            loop {
                let n = f.read_at(&mut buf, pos).unwrap();
                if n == 0 {
                    break;
                }
                pos += n as u64;
                read += n as u64;
            }
        }
    }
    let read_once = start.elapsed();
    let start = Instant::now();
    let log = Log::open(env, &path, config).unwrap();
    let recover = start.elapsed();
    let end = log.log_end_offset();
    log.close().unwrap();
    drop(log);
    let start = Instant::now();
    let log = Log::open(env, &path, config).unwrap();
    let clean = start.elapsed();
    assert_eq!(log.log_end_offset(), end);
    log.delete().unwrap();
    println!(
        "recovery of {:.0} MiB after kill -9: {:>8.1} ms | read it once: {:>8.1} ms | ratio {:.2}x | reopen after clean close: {:.1} ms",
        read as f64 / (1024.0 * 1024.0),
        recover.as_secs_f64() * 1e3,
        read_once.as_secs_f64() * 1e3,
        recover.as_secs_f64() / read_once.as_secs_f64(),
        clean.as_secs_f64() * 1e3
    );
}

fn main() {
    let only_recovery = std::env::args().any(|a| a == "recovery");
    let total = env_u64("WEIR_BENCH_MB", 64) << 20;
    let recovery_total = env_u64("WEIR_BENCH_RECOVERY_MB", 1024) << 20;
    let cap = Duration::from_secs(env_u64("WEIR_BENCH_SECS", 3));
    let tmp = match std::env::var("WEIR_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let dir = tmp.path();
    let env = LogEnv::new(1024);
    println!("weir-log bench in {} (each case ≤ {} MiB or {:?})", dir.display(), total >> 20, cap);
    if !only_recovery {
        println!("{:<34} {:>25} | {:<30} {:>25} | ours/raw", "case", "weir-log", "raw limit", "");
        for kib in [1usize, 16] {
            let bb = kib * 1024;
            let ours = append_case(&env, dir, bb, total, cap, true);
            let raw = raw_write_case(dir, bb, total, cap, true);
            row(&format!("append {kib} KiB, fsync before ack"), &ours, "write+fdatasync per batch", &raw);
            let ours = append_case(&env, dir, bb, total, cap, false);
            let raw = raw_write_case(dir, bb, total, cap, false);
            row(&format!("append {kib} KiB, no fsync"), &ours, "sequential write", &raw);
        }
        for kib in [1usize, 16] {
            let bb = kib * 1024;
            let ours = group_commit_case(&env, dir, bb, 8, cap);
            let raw = raw_write_case(dir, bb, total, cap, true);
            row(&format!("group commit 8 writers, {kib} KiB"), &ours, "write+fdatasync per batch", &raw);
        }
        for kib in [1usize, 16] {
            let (ours, raw) = read_case(&env, dir, kib * 1024, total);
            row(&format!("read {kib} KiB batches, page cache"), &ours, "sequential 1 MiB pread", &raw);
        }
    }
    recovery(&env, dir, recovery_total);
    env.shutdown();
}
