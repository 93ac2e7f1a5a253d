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
        // The flusher stores a recovery point after it acknowledges, so the last one may still be
        // on its way; a flush here waits for it (it takes the same lock), making the crash below
        // land after it, as the assertion on the scanned bytes assumes.
        log.flush().unwrap();
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

// ---- damage before the last segment --------------------------------------------------------
//
// A bad batch (or a gap) in a segment that is not the last must never make recovery delete the
// later segments: they may hold acknowledged data. The log opens damaged: it serves reads up to
// the damage, refuses every write, and leaves each file on disk as it was.

/// Ten 4 KiB batches per segment.
const DAMAGE_SEGMENT_BATCHES: u64 = 10;

fn damage_config() -> LogConfig {
    LogConfig {
        segment_bytes: DAMAGE_SEGMENT_BATCHES * BATCH_BYTES as u64,
        ..config(0)
    }
}

fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Writes 45 batches (segments at 0, 10, 20, 30, 40) and closes the log cleanly.
fn five_segments(env: &Arc<LogEnv>, dir: &Path) {
    let log = open(env, dir, damage_config());
    append_durable(&log, 0, 45);
    assert_eq!(log.segment_count(), 5);
    log.close().unwrap();
}

/// Every file of the segments at and after `from_base`, with its bytes.
fn files_from(dir: &Path, from_base: u64) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.len() > 20
                && name[..20].parse::<u64>().is_ok_and(|b| b >= from_base)
                && name.ends_with(".log")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Opens the damaged log twice (damage must be found again, not forgotten) and checks what
/// every damaged open must hold: reads up to `lost_from`, writes refused, later files intact.
fn assert_opens_damaged(env: &Arc<LogEnv>, dir: &Path, lost_from: u64, damaged_base: u64) {
    let kept_before = files_from(dir, damaged_base + DAMAGE_SEGMENT_BATCHES);
    assert_eq!(kept_before.len(), 3, "later segments present before open");
    for round in 0..2 {
        let log = open(env, dir, damage_config());
        let damage = log.damage().expect("recovery reports the damage").clone();
        assert_eq!(damage.lost_from_offset, lost_from as i64, "round {round}");
        assert_eq!(
            damage.kept_from_offset,
            (damaged_base + DAMAGE_SEGMENT_BATCHES) as i64
        );
        assert_eq!(
            damage.segment_path,
            segment_path(dir, damaged_base, "log"),
            "names the damaged segment"
        );
        assert_eq!(
            damage.kept_segments.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![20, 30, 40]
        );
        let message = damage.to_string();
        assert!(
            message.contains(&format!("offsets {lost_from}..19")),
            "{message}"
        );
        // Served up to the damage, every batch intact.
        assert_log_holds(&log, lost_from);
        // Every write is refused with the damage, none of them changes a file.
        let err = log
            .append(
                &batch(99, 1, BATCH_BYTES - 61, 99),
                &weir_log::AppendOptions {
                    leader_epoch: 0,
                    log_append_time_ms: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, weir_log::LogError::Damaged(_)), "{err}");
        assert!(log.roll().is_err());
        assert!(log.truncate_to(5).is_err());
        assert!(log.delete_records_before(1).is_err());
        assert!(log.apply_retention(i64::MAX).is_err());
        log.close().unwrap();
        assert_eq!(
            files_from(dir, damaged_base + DAMAGE_SEGMENT_BATCHES),
            kept_before,
            "later segments untouched (round {round})"
        );
    }
}

#[test]
fn flipped_byte_in_middle_segment_keeps_later_segments_and_stops_serving_there() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    five_segments(&env, dir.path());
    // Batch 13 (the 4th of segment 10) gets a flipped payload byte; its lost index forces the
    // CRC scan that finds it.
    let log_path = segment_path(dir.path(), 10, "log");
    let mut bytes = std::fs::read(&log_path).unwrap();
    bytes[3 * BATCH_BYTES + 1000] ^= 0x01;
    std::fs::write(&log_path, &bytes).unwrap();
    std::fs::remove_file(segment_path(dir.path(), 10, "index")).unwrap();
    assert_opens_damaged(&env, dir.path(), 13, 10);
    assert_eq!(
        std::fs::read(&log_path).unwrap(),
        bytes,
        "the damaged segment is not cut"
    );
}

#[test]
fn truncated_batch_in_middle_segment_keeps_later_segments_and_stops_serving_there() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    five_segments(&env, dir.path());
    // Segment 10 loses the second half of batch 16 and everything after it.
    let log_path = segment_path(dir.path(), 10, "log");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap();
    f.set_len(6 * BATCH_BYTES as u64 + 2048).unwrap();
    drop(f);
    assert_opens_damaged(&env, dir.path(), 16, 10);
    assert_eq!(
        std::fs::metadata(&log_path).unwrap().len(),
        6 * BATCH_BYTES as u64 + 2048,
        "the damaged segment is not cut"
    );
}

#[test]
fn lost_index_of_middle_segment_is_rebuilt_and_nothing_is_lost() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    five_segments(&env, dir.path());
    for ext in ["index", "timeindex"] {
        std::fs::remove_file(segment_path(dir.path(), 10, ext)).unwrap();
    }
    let log = open(&env, dir.path(), damage_config());
    assert!(log.damage().is_none());
    assert_log_holds(&log, 45);
    assert_eq!(log.offset_for_timestamp(14).unwrap(), Some((14, 14)));
    assert_eq!(
        append(&log, &batch(45, 1, BATCH_BYTES - 61, 45)).base_offset,
        45
    );
}

#[test]
fn gap_between_middle_segments_keeps_later_segments() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    five_segments(&env, dir.path());
    // Segment 10 ends on a batch boundary, three batches short of segment 20's base.
    let log_path = segment_path(dir.path(), 10, "log");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap();
    f.set_len(7 * BATCH_BYTES as u64).unwrap();
    drop(f);
    assert_opens_damaged(&env, dir.path(), 17, 10);
}
