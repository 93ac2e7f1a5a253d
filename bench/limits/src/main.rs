//! `weir-limits`: what this machine can do without Weir, so that `bench/run`
//! can put each Weir figure next to its limit.
//!
//! - `disk --dir D [--mib N] [--sync-every-kib K]`: sequential 1 MiB writes
//!   to a new file in D (the broker's data-dir filesystem), with fdatasync
//!   every K KiB (0 = never; the figure is then the page-cache write rate).
//!   With `--direct` the file is opened O_DIRECT: the figure is the device's
//!   own sequential write rate (page cache bypassed; one fdatasync at the end
//!   is timed too, so the device's cache is flushed).
//! - `tcp [--mib N]`: a plain socket copy over 127.0.0.1 between two
//!   processes (this one reads; a child copy of it writes).
//! - `group-commit --dir D [--rate R] [--record-bytes B] [--seconds S]`: the
//!   floor under an fsync-before-ack latency: one thread appends B bytes R
//!   times a second to a new file, another runs fdatasync back to back
//!   whenever there is something new; a record's latency runs from its due
//!   time to the end of the first sync that started after it was written.
//!   `--prezeroed` writes the whole run as zeros and syncs it first, so the timed
//!   writes overwrite allocated blocks (fdatasync without a journal commit).
//!   With `--series FILE` it also writes, per 100 ms of due time, the wall
//!   clock (Unix ms), the worst latency and the record count as CSV, so a
//!   stall can be set beside an e2e run made at the same moment
//!   (`bench/latency-probe`).
//!
//! Each prints one JSON object: {"limit":..,"mib":..,"seconds":..,"mib_per_s":..}
//! (group-commit: {"limit":..,"records":..,"p50_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..}).
//! MiB = 1,048,576 bytes, as in `weir bench`.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Refuse absurd sizes from a typo rather than filling the disk.
const MIB_MAX: u64 = 1024 * 1024;
/// Buffer alignment for O_DIRECT writes.
const DIRECT_ALIGN_BYTES: usize = 4096;
/// Linux's O_DIRECT open flag, which differs by architecture (std has no
/// constant for it, and one number is not worth a libc dependency).
const O_DIRECT: Option<i32> = if cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86")
)) {
    Some(0o40000)
} else if cfg!(all(
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "arm")
)) {
    Some(0o200000)
} else {
    None
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("disk") => disk(&args[1..]),
        Some("tcp") => tcp(&args[1..]),
        Some("tcp-send") => tcp_send(&args[1..]),
        Some("group-commit") => group_commit(&args[1..]),
        _ => Err(
            "usage: weir-limits disk --dir DIR [--mib N] [--sync-every-kib K] [--direct] | tcp [--mib N] \
             | group-commit --dir DIR [--rate R] [--record-bytes B] [--seconds S] [--series FILE] [--prezeroed]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-limits: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `--name`, if present.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match flag(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name} wants a whole number, got '{v}'")),
    }
}

fn report(limit: &str, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mib = bytes as f64 / MIB as f64;
    println!(
        "{{\"limit\":\"{limit}\",\"mib\":{mib:.1},\"seconds\":{secs:.4},\"mib_per_s\":{:.1}}}",
        mib / secs
    );
}

fn disk(args: &[String]) -> Result<(), String> {
    let dir = flag(args, "--dir").ok_or("disk needs --dir")?;
    let mib = number(args, "--mib", 1024)?.clamp(1, MIB_MAX);
    let sync_every_bytes = number(args, "--sync-every-kib", 1024)?.saturating_mul(1024);
    let direct = args.iter().any(|a| a == "--direct");
    let path = std::path::Path::new(dir).join(format!("weir-limits-{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(O_DIRECT.ok_or("--direct: O_DIRECT is not known for this target")?);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    // Not zeros: some filesystems and devices shortcut them. O_DIRECT needs
    // the buffer aligned to the device's block size (4 KiB covers it).
    let mut buffer = vec![0_u8; MIB + DIRECT_ALIGN_BYTES];
    let aligned_at = buffer.as_ptr().align_offset(DIRECT_ALIGN_BYTES);
    let chunk = buffer
        .get_mut(aligned_at..aligned_at + MIB)
        .ok_or("cannot align the write buffer")?;
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    let chunk = &*chunk;
    let started = Instant::now();
    let mut unsynced_bytes = 0u64;
    let result = (|| {
        for _ in 0..mib {
            file.write_all(chunk)?;
            unsynced_bytes += MIB as u64;
            if sync_every_bytes > 0 && unsynced_bytes >= sync_every_bytes {
                file.sync_data()?;
                unsynced_bytes = 0;
            }
        }
        if (direct || sync_every_bytes > 0) && unsynced_bytes > 0 {
            file.sync_data()?;
        }
        Ok::<(), std::io::Error>(())
    })();
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("writing {}: {e}", path.display()))?;
    let name = if direct {
        "disk_write_direct".to_owned()
    } else if sync_every_bytes > 0 {
        format!("disk_write_fdatasync_every_{}kib", sync_every_bytes / 1024)
    } else {
        "disk_write_no_sync".to_owned()
    };
    report(&name, mib * MIB as u64, elapsed);
    Ok(())
}

fn tcp(args: &[String]) -> Result<(), String> {
    let mib = number(args, "--mib", 4096)?.clamp(1, MIB_MAX);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut sender = Command::new(exe)
        .args([
            "tcp-send",
            "--addr",
            &addr.to_string(),
            "--mib",
            &mib.to_string(),
        ])
        .spawn()
        .map_err(|e| format!("spawn the sender: {e}"))?;
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; MIB];
    let started = Instant::now();
    let mut received = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let status = sender.wait().map_err(|e| e.to_string())?;
    if !status.success() || received != mib * MIB as u64 {
        return Err(format!(
            "sender exited with {status} after {received} bytes"
        ));
    }
    report("loopback_tcp", received, elapsed);
    Ok(())
}

fn tcp_send(args: &[String]) -> Result<(), String> {
    let addr = flag(args, "--addr").ok_or("tcp-send needs --addr")?;
    let mib = number(args, "--mib", 4096)?.clamp(1, MIB_MAX);
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let chunk = vec![0x5au8; MIB];
    for _ in 0..mib {
        stream
            .write_all(&chunk)
            .map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}

/// What the writer and the syncer of `group_commit` share.
struct Commits {
    /// Records written so far; record i's due time is `due[i]`.
    written: usize,
    /// Records written before the last sync started.
    sync_started_at: usize,
    /// Records covered by a finished sync.
    synced: usize,
    due: Vec<Instant>,
    latency_ms: Vec<f64>,
    done: bool,
    error: Option<std::io::Error>,
}

fn group_commit(args: &[String]) -> Result<(), String> {
    use std::sync::{Arc, Condvar, Mutex, PoisonError};
    let dir = flag(args, "--dir").ok_or("group-commit needs --dir")?;
    let rate = number(args, "--rate", 10_000)?.clamp(1, 1_000_000);
    let record_bytes = number(args, "--record-bytes", 1100)?.clamp(1, MIB as u64) as usize;
    let seconds = number(args, "--seconds", 10)?.clamp(1, 3600);
    // Two timestamps per record are kept in memory: cap the run, not the machine.
    const RECORDS_MAX: u64 = 10_000_000;
    if rate * seconds > RECORDS_MAX {
        return Err(format!(
            "--rate x --seconds is {} records; the limit is {RECORDS_MAX}",
            rate * seconds
        ));
    }
    let records = usize::try_from(rate * seconds).map_err(|e| e.to_string())?;
    let series_path = flag(args, "--series");
    let path = std::path::Path::new(dir).join(format!("weir-limits-gc-{}.tmp", std::process::id()));
    let mut file = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    if args.iter().any(|a| a == "--prezeroed") {
        // The whole run's bytes written as zeros and synced first: the timed writes then
        // overwrite allocated blocks inside the file's size, so their fdatasync changes no
        // metadata and needs no journal commit (what a preallocating log would see).
        let total = u64::try_from(records).unwrap_or(0) * record_bytes as u64;
        let zeros = vec![0u8; MIB];
        let mut left = total;
        while left > 0 {
            let n = usize::try_from(left.min(MIB as u64)).unwrap_or(MIB);
            file.write_all(&zeros[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        file.sync_all().map_err(|e| e.to_string())?;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| e.to_string())?;
    }
    let sync_file = file.try_clone().map_err(|e| e.to_string())?;
    let shared = Arc::new((
        Mutex::new(Commits {
            written: 0,
            sync_started_at: 0,
            synced: 0,
            due: Vec::with_capacity(records),
            latency_ms: Vec::with_capacity(records),
            done: false,
            error: None,
        }),
        Condvar::new(),
    ));
    let syncer = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let (state, wake) = &*shared;
            loop {
                let target = {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    while !s.done && s.written == s.sync_started_at {
                        s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                    }
                    if s.written == s.sync_started_at {
                        return;
                    }
                    s.sync_started_at = s.written;
                    s.written
                };
                let synced = sync_file.sync_data();
                let now = Instant::now();
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = synced {
                    s.error = Some(e);
                    return;
                }
                for i in s.synced..target {
                    let ms = s
                        .due
                        .get(i)
                        .map_or(0.0, |d| now.duration_since(*d).as_secs_f64() * 1e3);
                    s.latency_ms.push(ms);
                }
                s.synced = target;
            }
        })
    };
    let record = vec![0x5a_u8; record_bytes];
    let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
    let started = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut write_error = None;
    for i in 0..records {
        // Paced by due time, so a stalled write delays the records behind it
        // (no coordinated omission).
        let due = started + interval * u32::try_from(i).unwrap_or(u32::MAX);
        // Sleep through most of a long gap (a low --rate used as a probe beside
        // a benchmark must not take a core), then spin for precision.
        let ahead = due.saturating_duration_since(Instant::now());
        if ahead > Duration::from_micros(300) {
            std::thread::sleep(ahead - Duration::from_micros(200));
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        if let Err(e) = file.write_all(&record) {
            write_error = Some(e);
            break;
        }
        let (state, wake) = &*shared;
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.due.push(due);
        s.written += 1;
        wake.notify_one();
    }
    {
        let (state, wake) = &*shared;
        state.lock().unwrap_or_else(PoisonError::into_inner).done = true;
        wake.notify_one();
    }
    let _ = syncer.join();
    let _ = std::fs::remove_file(&path);
    if let Some(e) = write_error {
        return Err(format!("writing {}: {e}", path.display()));
    }
    let (state, _) = &*shared;
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = s.error.take() {
        return Err(format!("fdatasync {}: {e}", path.display()));
    }
    if let Some(path) = series_path {
        // latency_ms[i] belongs to due[i]: syncs complete records in order.
        let mut rows: std::collections::BTreeMap<u128, (f64, u64)> = Default::default();
        for (due, ms) in s.due.iter().zip(&s.latency_ms) {
            let bucket = due.duration_since(started).as_millis() / 100;
            let row = rows.entry(bucket).or_insert((0.0, 0));
            row.0 = row.0.max(*ms);
            row.1 += 1;
        }
        let mut csv = String::from("unix_ms,max_ms,records\n");
        for (bucket, (max_ms, n)) in rows {
            csv.push_str(&format!(
                "{},{max_ms:.3},{n}\n",
                started_unix_ms + bucket * 100
            ));
        }
        std::fs::write(path, csv).map_err(|e| format!("writing {path}: {e}"))?;
    }
    let latency = &mut s.latency_ms;
    latency.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((latency.len() as f64 * q) as usize).min(latency.len().saturating_sub(1));
        latency.get(i).copied().unwrap_or(0.0)
    };
    println!(
        "{{\"limit\":\"group_commit_latency\",\"records\":{},\"rate\":{rate},\"record_bytes\":{record_bytes},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        latency.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    Ok(())
}
