//! Restart work after a crash is bounded per partition whatever the log's history (issue 22,
//! item 4): the CRC scan starts at the recovery point, the producer-state rebuild replays batch
//! headers from a snapshot taken with a recent recovery point (not from the start of a long
//! active segment), and sealed segments below the recovery point cost one small header read
//! each, their index entries loading on first use. "Crash" is `abandon_for_test`: no
//! clean-shutdown checkpoint or snapshot, files left as kill -9 leaves them.

mod common;

use std::path::Path;
use std::sync::{Arc, mpsc};

use bytes::Bytes;
use common::*;
use weir_log::{AppendOptions, Log, LogConfig, LogEnv, LogError, ProducerStateError};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

/// Recovery points every 64 KiB of appends (the default is 16 MiB; the bound scales with it).
const INTERVAL_BYTES: u64 = 64 * 1024;
const PRODUCERS: [i64; 3] = [11, 12, 13];
/// Records per batch (each ~200 bytes): a batch is ~3.5 KiB.
const RECORDS: i32 = 16;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 1024,
        retention_ms: -1,
        recovery_point_interval_bytes: INTERVAL_BYTES,
        // Only the byte interval triggers recovery points, so the bound is deterministic.
        recovery_point_interval_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An idempotent batch of producer `pid` (epoch 0) from sequence `seq`.
fn idem(pid: i64, seq: i32, records: i32) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None)
        .base_timestamp(now_ms())
        .producer(pid, 0, seq);
    for i in 0..records {
        b = b.record(Record {
            offset_delta: i,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::from(payload((seq + i) as u64, 200))),
            headers: Vec::new(),
        });
    }
    b.build().expect("batch")
}

fn wait_durable(log: &Log, offset_exclusive: i64) {
    let (tx, rx) = mpsc::channel();
    log.on_durable(
        offset_exclusive,
        Box::new(move |r| tx.send(r.is_ok()).unwrap_or(())),
    );
    assert!(rx.recv().unwrap(), "sync failed");
}

/// Appends `batches` batches round-robin over the producers, each acknowledged (durable) before
/// the next, as acks=all would; `next_seq` tracks each producer's next sequence.
fn produce(log: &Log, batches: usize, next_seq: &mut [i32; 3]) {
    for i in 0..batches {
        let p = i % PRODUCERS.len();
        let info = log
            .append(
                &idem(PRODUCERS[p], next_seq[p], RECORDS),
                &AppendOptions::default(),
            )
            .expect("append");
        assert!(!info.duplicate);
        next_seq[p] += RECORDS;
        wait_durable(log, info.last_offset + 1);
    }
}

/// The producer state was rebuilt, not forgotten: a retry of each producer's last batch is a
/// duplicate, and a gap is refused.
fn assert_producers_survived(log: &Log, next_seq: &[i32; 3]) {
    for (p, &pid) in PRODUCERS.iter().enumerate() {
        let retry = log
            .append(
                &idem(pid, next_seq[p] - RECORDS, RECORDS),
                &AppendOptions::default(),
            )
            .expect("retry");
        assert!(retry.duplicate, "producer {pid}: retry after restart");
        assert!(matches!(
            log.append(&idem(pid, next_seq[p] + 1, 1), &AppendOptions::default()),
            Err(LogError::Producer(ProducerStateError::OutOfOrderSequence(
                _
            )))
        ));
    }
}

/// Opens after a crash and checks the work done is bounded by the recovery-point interval.
fn reopen_bounded(env: &Arc<LogEnv>, dir: &Path, segment_bytes: u64, round: usize) -> Log {
    let log = open(env, dir, config(segment_bytes));
    let stats = log.recovery_stats();
    let data_bytes = log.size_bytes();
    eprintln!("round {round}: {data_bytes} bytes of data, {stats:?}");
    // One interval plus the batch that crossed it, plus the unsynced tail (none here).
    assert!(
        stats.scanned_bytes <= 2 * INTERVAL_BYTES,
        "round {round}: CRC scan of {} bytes grows with the data ({data_bytes} bytes)",
        stats.scanned_bytes
    );
    // The snapshot lags the recovery point by at most one interval.
    assert!(
        stats.producer_replay_bytes <= 3 * INTERVAL_BYTES,
        "round {round}: producer-state replay of {} bytes ({} batches) grows with the data \
         ({data_bytes} bytes)",
        stats.producer_replay_bytes,
        stats.producer_replay_batches
    );
    // Sealed segments below the recovery point: header only. Only the segments the recovery
    // point has not passed yet (an interval's worth, plus the active one) are read.
    let segments_per_interval = (INTERVAL_BYTES / segment_bytes.min(INTERVAL_BYTES)) as usize;
    assert!(
        stats.index_files_loaded <= segments_per_interval + 2
            && stats.segments_scanned <= segments_per_interval + 2,
        "round {round}: index files of {} segments read and {} scanned at open ({} segments)",
        stats.index_files_loaded,
        stats.segments_scanned,
        stats.segments
    );
    log
}

#[test]
fn restart_after_crash_in_a_long_active_segment_replays_a_bounded_tail() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1 << 30; // one segment, as with Kafka's default segment.bytes
    let mut next_seq = [0i32; 3];
    let mut total = 0usize;
    for round in 0..4 {
        {
            let log = if round == 0 {
                open(&env, dir.path(), config(segment_bytes))
            } else {
                reopen_bounded(&env, dir.path(), segment_bytes, round)
            };
            if round > 0 {
                assert_producers_survived(&log, &next_seq);
                assert_eq!(log.segment_count(), 1);
            }
            // 150 batches (~500 KiB, ~8 intervals) per round: the active segment grows to 2 MB.
            produce(&log, 150, &mut next_seq);
            total += 150;
            log.abandon_for_test();
        }
    }
    let log = reopen_bounded(&env, dir.path(), segment_bytes, 4);
    assert_producers_survived(&log, &next_seq);
    let end = log.log_end_offset();
    assert_eq!(end, (total as i64) * i64::from(RECORDS));
    let got = read_all(&log, 0, end);
    assert!(got.iter().all(|b| b.2), "every batch passes its CRC");
    assert_eq!(got.len(), total);
}

#[test]
fn restart_after_crash_with_many_segments_reads_no_index_below_the_recovery_point() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 16 * 1024; // ~4 batches per segment
    let mut next_seq = [0i32; 3];
    let mut total = 0usize;
    for round in 0..3 {
        {
            let log = if round == 0 {
                open(&env, dir.path(), config(segment_bytes))
            } else {
                reopen_bounded(&env, dir.path(), segment_bytes, round)
            };
            if round > 0 {
                assert_producers_survived(&log, &next_seq);
            }
            produce(&log, 300, &mut next_seq);
            total += 300;
            log.abandon_for_test();
        }
    }
    let log = reopen_bounded(&env, dir.path(), segment_bytes, 3);
    assert!(log.segment_count() > 200, "{}", log.segment_count());
    assert_producers_survived(&log, &next_seq);
    // Lazily loaded indexes serve reads and timestamp lookups like loaded ones.
    let end = log.log_end_offset();
    let got = read_all(&log, 0, end);
    assert!(got.iter().all(|b| b.2), "every batch passes its CRC");
    assert_eq!(got.len(), total);
    let mid = got[total / 2].0;
    let in_mid = read_all(&log, mid + 1, end);
    assert_eq!(
        in_mid.first().map(|b| b.0),
        Some(mid),
        "read from inside a batch"
    );
    assert!(log.offset_for_timestamp(0).unwrap().is_some());
    assert!(log.max_timestamp().is_some());
}
