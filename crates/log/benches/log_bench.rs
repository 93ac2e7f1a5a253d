//! weir-log throughput against the machine's own limits, measured in the same run on the same
//! filesystem. Plain binary (harness = false); prints a table.
//!
//!   cargo bench -p weir-log --bench log_bench                 # everything
//!   cargo bench -p weir-log --bench log_bench -- recovery     # only the recovery comparison
//!   cargo bench -p weir-log --bench log_bench -- append       # only appends without fsync (profiling)
//!   cargo bench -p weir-log --bench log_bench -- group        # only group commit
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
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

fn append_case(
    env: &Arc<LogEnv>,
    dir: &Path,
    batch_bytes: usize,
    total: u64,
    cap: Duration,
    fsync: bool,
) -> Case {
    let flush = if fsync {
        FlushPolicy::EveryAppend
    } else {
        FlushPolicy::Interval {
            messages: u64::MAX,
            ms: 3_600_000,
        }
    };
    let log = Log::open(
        env,
        &fresh(dir, "append"),
        LogConfig {
            flush,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
    let opts = AppendOptions::default();
    let start = Instant::now();
    let mut n = 0u64;
    while n * (batch_bytes as u64) < total && start.elapsed() < cap {
        let info = log.append(&b, &opts).unwrap();
        if fsync {
            let (tx, rx) = mpsc::channel();
            log.on_durable(
                info.last_offset + 1,
                Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())),
            );
            assert!(rx.recv().unwrap());
        }
        n += 1;
    }
    let elapsed = start.elapsed();
    log.delete().unwrap();
    Case {
        bytes: n * batch_bytes as u64,
        batches: n,
        elapsed,
    }
}

/// Sequential `write`s of `batch_bytes`, with an `fdatasync` whenever `sync_every_bytes` more
/// bytes were written (`Some(batch_bytes)` = after every batch; `None` = never).
fn raw_write_case(
    dir: &Path,
    batch_bytes: usize,
    total: u64,
    cap: Duration,
    sync_every_bytes: Option<u64>,
) -> Case {
    let path = fresh(dir, "raw.bin");
    let mut f = File::create(&path).unwrap();
    let buf = vec![7u8; batch_bytes];
    let start = Instant::now();
    let mut n = 0u64;
    let mut unsynced = 0u64;
    while n * (batch_bytes as u64) < total && start.elapsed() < cap {
        f.write_all(&buf).unwrap();
        unsynced += batch_bytes as u64;
        if sync_every_bytes.is_some_and(|every| unsynced >= every) {
            rustix::fs::fdatasync(&f).unwrap();
            unsynced = 0;
        }
        n += 1;
    }
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    Case {
        bytes: n * batch_bytes as u64,
        batches: n,
        elapsed,
    }
}

/// `writers` threads, each appending one batch and waiting for its fsync (as concurrent produce
/// requests with acks=1 do), until `total` bytes or `cap`.
fn group_commit_case(
    env: &Arc<LogEnv>,
    dir: &Path,
    batch_bytes: usize,
    writers: usize,
    total: u64,
    cap: Duration,
) -> Case {
    let log = Arc::new(Log::open(env, &fresh(dir, "group"), LogConfig::default()).unwrap());
    let (n, elapsed) = group_commit_writes(&log, batch_bytes, writers, total, cap);
    if let Ok(log) = Arc::try_unwrap(log) {
        log.delete().unwrap();
    }
    Case {
        bytes: n * batch_bytes as u64,
        batches: n,
        elapsed,
    }
}

fn group_commit_writes(
    log: &Arc<Log>,
    batch_bytes: usize,
    writers: usize,
    total: u64,
    cap: Duration,
) -> (u64, Duration) {
    let b = Bytes::from(build_batch(1, 0, &vec![7u8; batch_bytes - 61]));
    let batches_max = total / batch_bytes as u64;
    let claimed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(log);
            let b = b.clone();
            let claimed = Arc::clone(&claimed);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < cap
                    && claimed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < batches_max
                {
                    let info = log.append(&b, &AppendOptions::default()).unwrap();
                    let (tx, rx) = mpsc::channel();
                    log.on_durable(
                        info.last_offset + 1,
                        Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())),
                    );
                    assert!(rx.recv().unwrap());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (n, start.elapsed())
}

fn read_case(env: &Arc<LogEnv>, dir: &Path, batch_bytes: usize, total: u64) -> (Case, Case) {
    let config = LogConfig {
        flush: FlushPolicy::Interval {
            messages: u64::MAX,
            ms: 3_600_000,
        },
        ..LogConfig::default()
    };
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
            let ours = Case {
                bytes,
                batches: count,
                elapsed: start.elapsed(),
            };
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
            let raw = Case {
                bytes: len,
                batches: count,
                elapsed: start.elapsed(),
            };
            log.delete().unwrap();
            return (ours, raw);
        }
    }
    unreachable!()
}

/// Empties the page cache (needs root); false if that is not possible here.
fn drop_caches() -> bool {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

/// Reads every `.log` file in `dir` once in 1 MiB preads; returns (bytes, time).
fn read_segments_once(dir: &Path) -> (u64, Duration) {
    let start = Instant::now();
    let mut read = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(dir).unwrap() {
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
    (read, start.elapsed())
}

/// Writes `total` bytes as a broker would (default fsync-before-ack policy, 8 concurrent
/// producers sharing group commits), then drops the log without `close()` (on disk this is what
/// kill -9 leaves), and times recovery against reading the data once.
fn recovery(env: &Arc<LogEnv>, dir: &Path, total: u64) {
    let path = fresh(dir, "recovery");
    let config = LogConfig::default();
    let batch_bytes = 16 * 1024;
    let write_time;
    {
        let log = Arc::new(Log::open(env, &path, config).unwrap());
        let (_, t) = group_commit_writes(&log, batch_bytes, 8, total, Duration::from_secs(3600));
        write_time = t;
        // Dropped without close(): no clean-shutdown checkpoint.
    }
    let (read, warm_read) = read_segments_once(&path);
    // On a VM the first read after drop_caches may come from the physical disk and later ones
    // from the host's cache: read once unmeasured so that both measured runs see the same.
    let cold = drop_caches();
    read_segments_once(&path);
    drop_caches();
    let (_, cold_read) = read_segments_once(&path);
    drop_caches();
    let start = Instant::now();
    let log = Log::open(env, &path, config).unwrap();
    let recover = start.elapsed();
    let scanned = log.recovery_scanned_bytes();
    let end = log.log_end_offset();
    log.close().unwrap();
    drop(log);
    drop_caches();
    let start = Instant::now();
    let log = Log::open(env, &path, config).unwrap();
    let clean = start.elapsed();
    assert_eq!(log.log_end_offset(), end);
    log.delete().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "recovery of {:.0} MiB (written with group commit in {:.1} s) after kill -9: {:>8.1} ms, {:.1} MiB CRC-scanned | read it once: {:>8.1} ms ({}) | ratio {:.2}x | page-cache read once: {:.1} ms | reopen after clean close: {:.1} ms",
        read as f64 / (1024.0 * 1024.0),
        write_time.as_secs_f64(),
        ms(recover),
        scanned as f64 / (1024.0 * 1024.0),
        ms(cold_read),
        if cold {
            "cold cache, both"
        } else {
            "page cache, drop_caches failed"
        },
        recover.as_secs_f64() / cold_read.as_secs_f64(),
        ms(warm_read),
        ms(clean)
    );
}

fn main() {
    // cargo passes `--bench`; the first plain argument selects a mode.
    let mode = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| mode.as_deref().is_none_or(|m| m == name);
    let total = env_u64("WEIR_BENCH_MB", 64) << 20;
    let recovery_total = env_u64("WEIR_BENCH_RECOVERY_MB", 1024) << 20;
    let cap = Duration::from_secs(env_u64("WEIR_BENCH_SECS", 3));
    let tmp = match std::env::var("WEIR_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let dir = tmp.path();
    let env = LogEnv::new(1024);
    println!(
        "weir-log bench in {} (each case ≤ {} MiB or {:?})",
        dir.display(),
        total >> 20,
        cap
    );
    println!(
        "{:<34} {:>25} | {:<30} {:>25} | ours/raw",
        "case", "weir-log", "raw limit", ""
    );
    if mode.is_none() {
        for kib in [1usize, 16] {
            let bb = kib * 1024;
            let ours = append_case(&env, dir, bb, total, cap, true);
            let raw = raw_write_case(dir, bb, total, cap, Some(bb as u64));
            row(
                &format!("append {kib} KiB, fsync before ack"),
                &ours,
                "write+fdatasync per batch",
                &raw,
            );
        }
    }
    if run("append") {
        for kib in [1usize, 16] {
            let bb = kib * 1024;
            let ours = append_case(&env, dir, bb, total, cap, false);
            let raw = raw_write_case(dir, bb, total, cap, None);
            row(
                &format!("append {kib} KiB, no fsync"),
                &ours,
                "sequential write",
                &raw,
            );
        }
    }
    if run("group") {
        for kib in [1usize, 16] {
            let bb = kib * 1024;
            let ours = group_commit_case(&env, dir, bb, 8, total, cap);
            let raw = raw_write_case(dir, bb, total, cap, Some(bb as u64));
            row(
                &format!("group commit 8 writers, {kib} KiB"),
                &ours,
                "write+fdatasync per batch",
                &raw,
            );
            let raw = raw_write_case(dir, bb, ours.bytes, cap * 10, Some(1 << 20));
            row(
                &format!("group commit 8 writers, {kib} KiB"),
                &ours,
                "write+fdatasync per 1 MiB",
                &raw,
            );
        }
    }
    if mode.is_none() {
        for kib in [1usize, 16] {
            let (ours, raw) = read_case(&env, dir, kib * 1024, total);
            row(
                &format!("read {kib} KiB batches, page cache"),
                &ours,
                "sequential 1 MiB pread",
                &raw,
            );
        }
    }
    if run("recovery") {
        recovery(&env, dir, recovery_total);
    }
    env.shutdown();
}
