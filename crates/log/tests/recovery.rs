//! Crash recovery with persisted recovery points: after a crash, open CRC-scans only what was
//! written after the last recovery point, restores the active segment's index from the
//! `.rpindex` file, still cuts a torn tail, and falls back to a full scan when the recovery-point
//! index does not validate. "Crash" here is dropping the `Log` without `close()`, which leaves the
//! files exactly as kill -9 would (the page cache survives a process kill).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use common::*;
use weir_log::test_support::with_offset_and_epoch;
use weir_log::{Log, LogConfig, LogEnv};

/// 4 KiB batches: 61-byte header + payload.
const BATCH_BYTES: usize = 4096;

fn config(recovery_point_interval_bytes: u64) -> LogConfig {
    LogConfig {
        index_interval_bytes: 1024,
        retention_ms: -1,
        recovery_point_interval_bytes,
        // Only the byte interval triggers recovery points here, so the tests are deterministic.
        recovery_point_interval_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn seg0(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.log", 0))
}

fn wait_durable(log: &Log, offset_exclusive: i64) {
    let (tx, rx) = mpsc::channel();
    log.on_durable(
        offset_exclusive,
        Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())),
    );
    assert!(rx.recv().unwrap(), "sync failed");
}

/// Appends batches `from..to` (batch n has timestamp n), waiting for each to be durable.
fn append_durable(log: &Log, from: u64, to: u64) {
    for n in from..to {
        let info = append(log, &batch(n, 1, BATCH_BYTES - 61, n as i64));
        assert_eq!(info.base_offset, n as i64);
        wait_durable(log, info.last_offset + 1);
    }
}

/// Every batch 0..count reads back with the bytes appended.
fn assert_log_holds(log: &Log, count: u64) {
    assert_eq!(log.log_end_offset(), count as i64);
    let got = read_all(log, 0, count as i64);
    assert_eq!(got.len() as u64, count);
    for (n, g) in got.iter().enumerate() {
        let expected =
            with_offset_and_epoch(&batch(n as u64, 1, BATCH_BYTES - 61, n as i64), n as i64, 0);
        assert!(g.2, "bad CRC at {n}");
        assert_eq!(g.3, expected, "batch {n} differs");
    }
}

#[test]
fn recovery_after_crash_scans_only_past_recovery_point() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let interval: u64 = 64 * 1024;
    {
        let log = open(&env, dir.path(), config(interval));
        append_durable(&log, 0, 256); // 1 MiB, a recovery point every 64 KiB
        for n in 256..259 {
            append(&log, &batch(n, 1, BATCH_BYTES - 61, n as i64)); // written, never synced
        }
    }
    let file_bytes = std::fs::metadata(seg0(dir.path())).unwrap().len();
    assert_eq!(file_bytes, 259 * BATCH_BYTES as u64);
    let log = open(&env, dir.path(), config(interval));
    let scanned = log.recovery_scanned_bytes();
    // At most one interval of synced data plus the three unsynced batches is re-read.
    assert!(scanned > 0, "the unsynced tail must be checked");
    assert!(
        scanned <= interval + 3 * BATCH_BYTES as u64,
        "scanned {scanned} of {file_bytes} bytes"
    );
    assert_log_holds(&log, 259);
    // The index and max timestamp restored from the recovery point answer time lookups.
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some((100, 100)));
    assert_eq!(log.max_timestamp(), Some((258, 258)));
    // Reads from the middle go through the restored index.
    let r = log.read(123, 1, i64::MAX).unwrap();
    assert_eq!(r.ranges[0].position, 123 * BATCH_BYTES as u64);
}

#[test]
fn without_recovery_points_crash_recovery_scans_whole_active_segment() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&env, dir.path(), config(u64::MAX));
        append_durable(&log, 0, 64);
    }
    let file_bytes = std::fs::metadata(seg0(dir.path())).unwrap().len();
    let log = open(&env, dir.path(), config(u64::MAX));
    assert_eq!(log.recovery_scanned_bytes(), file_bytes);
    assert_log_holds(&log, 64);
}

#[test]
fn torn_tail_after_recovery_point_is_cut_and_synced_batches_kept() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&env, dir.path(), config(0)); // a recovery point after every sync
        append_durable(&log, 0, 40);
        for n in 40..43 {
            append(&log, &batch(n, 1, BATCH_BYTES - 61, n as i64));
        }
    }
    // Tear the last unsynced batch and garble the one before it.
    let path = seg0(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(42 * BATCH_BYTES as u64 + 100).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 16], 41 * BATCH_BYTES as u64 + 2000)
        .unwrap();
    drop(f);
    let log = open(&env, dir.path(), config(0));
    assert!(log.recovery_scanned_bytes() <= 3 * BATCH_BYTES as u64);
    assert_log_holds(&log, 41);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        41 * BATCH_BYTES as u64
    );
    assert_eq!(
        append(&log, &batch(41, 1, BATCH_BYTES - 61, 41)).base_offset,
        41
    );
}

#[test]
fn garbled_recovery_point_index_falls_back_to_full_scan() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&env, dir.path(), config(0));
        append_durable(&log, 0, 40);
    }
    let rpindex = dir.path().join(format!("{:020}.rpindex", 0));
    let mut bytes = std::fs::read(&rpindex).expect("the active segment has a recovery-point index");
    assert!(!bytes.is_empty());
    bytes[5] ^= 0x40;
    std::fs::write(&rpindex, &bytes).unwrap();
    let log = open(&env, dir.path(), config(0));
    assert_eq!(log.recovery_scanned_bytes(), 40 * BATCH_BYTES as u64);
    assert_log_holds(&log, 40);
}

#[test]
fn recovery_points_carry_over_repeated_crashes_and_clean_reopens() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0;
    for round in 0..4u64 {
        let log = open(&env, dir.path(), config(16 * 1024));
        assert_log_holds(&log, next);
        if round == 3 {
            assert_eq!(
                log.recovery_scanned_bytes(),
                0,
                "a clean close leaves nothing to scan"
            );
        } else {
            assert!(log.recovery_scanned_bytes() <= 16 * 1024, "round {round}");
        }
        append_durable(&log, next, next + 30);
        next += 30;
        if round == 2 {
            log.close().unwrap();
        }
        // Otherwise dropped without close: a crash.
    }
    let log = open(&env, dir.path(), config(16 * 1024));
    assert_log_holds(&log, next);
    // Only the active segment's recovery-point index is kept.
    let rpindexes = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "rpindex")
        })
        .count();
    assert!(rpindexes <= 1);
}

#[test]
fn crash_after_roll_resumes_in_sealed_segment_and_scans_the_new_one() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 40 * BATCH_BYTES as u64,
        ..config(8 * 1024)
    };
    {
        let log = Arc::new(open(&env, dir.path(), cfg));
        append_durable(&log, 0, 100); // 2.5 segments
    }
    let log = open(&env, dir.path(), cfg);
    assert_eq!(log.segment_count(), 3);
    assert!(
        log.recovery_scanned_bytes() <= 8 * 1024,
        "scanned {}",
        log.recovery_scanned_bytes()
    );
    assert_log_holds(&log, 100);
}
