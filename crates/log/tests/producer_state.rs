//! Idempotent producers' state kept with the log: duplicates and sequence errors through
//! `Log::append`, and the state rebuilt after a clean close, a crash, truncation and retention.

mod common;

use bytes::Bytes;
use common::*;
use weir_log::{AppendOptions, LogConfig, LogEnv, LogError, ProducerStateError};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

/// A batch of `records` records from producer `pid` at `epoch`, first sequence `seq`.
fn idem(pid: i64, epoch: i16, seq: i32, records: i32) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None)
        .base_timestamp(weir_now_ms())
        .producer(pid, epoch, seq);
    for i in 0..records {
        b = b.record(Record {
            offset_delta: i,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::from(payload(
                u64::try_from(seq + i).unwrap_or(0),
                200,
            ))),
            headers: Vec::new(),
        });
    }
    b.build().expect("batch")
}

fn weir_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn try_append(log: &weir_log::Log, b: &Bytes) -> Result<weir_log::AppendInfo, LogError> {
    log.append(b, &AppendOptions::default())
}

#[test]
fn retried_batch_appends_nothing_and_returns_its_original_offsets() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &batch(0, 3, 10, 0)); // a plain batch first: offsets 0-2
    let first = append(&log, &idem(5, 0, 0, 4));
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (3, 6, false)
    );
    let second = append(&log, &idem(5, 0, 4, 2));
    let end = log.log_end_offset();
    for (b, original) in [(idem(5, 0, 0, 4), first), (idem(5, 0, 4, 2), second)] {
        let again = try_append(&log, &b).expect("duplicate is a success");
        assert!(again.duplicate);
        assert_eq!(
            (again.base_offset, again.last_offset),
            (original.base_offset, original.last_offset)
        );
    }
    assert_eq!(log.log_end_offset(), end, "a duplicate appends nothing");
}

#[test]
fn gap_and_stale_epoch_are_refused_and_write_nothing() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &idem(5, 2, 0, 1));
    let end = log.log_end_offset();
    assert!(matches!(
        try_append(&log, &idem(5, 2, 2, 1)),
        Err(LogError::Producer(ProducerStateError::OutOfOrderSequence(
            _
        )))
    ));
    assert!(matches!(
        try_append(&log, &idem(5, 1, 1, 1)),
        Err(LogError::Producer(
            ProducerStateError::InvalidProducerEpoch(_)
        ))
    ));
    assert_eq!(log.log_end_offset(), end);
}

/// Appends `count` single-record batches of producer `pid` from sequence `from`.
fn produce(log: &weir_log::Log, pid: i64, from: i32, count: i32) {
    for seq in from..from + count {
        append(log, &idem(pid, 0, seq, 1));
    }
}

/// After reopening, the next sequence is accepted, a retry of the last batch is a duplicate with
/// its offset, and a gap is refused: the state was rebuilt, not forgotten.
fn assert_state_survived(log: &weir_log::Log, pid: i64, next_seq: i32) {
    let dup = try_append(log, &idem(pid, 0, next_seq - 1, 1)).expect("retry");
    assert!(
        dup.duplicate,
        "retry of the last batch after reopen is a duplicate"
    );
    assert!(matches!(
        try_append(log, &idem(pid, 0, next_seq + 1, 1)),
        Err(LogError::Producer(ProducerStateError::OutOfOrderSequence(
            _
        )))
    ));
    assert!(
        !try_append(log, &idem(pid, 0, next_seq, 1))
            .expect("next")
            .duplicate
    );
}

#[test]
fn producer_state_survives_clean_restart() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&env, dir.path(), small_config());
        produce(&log, 7, 0, 40); // several rolls at 4 KiB segments
        assert!(log.segment_count() > 2);
        log.close().unwrap();
    }
    let log = open(&env, dir.path(), small_config());
    assert_eq!(
        log.load_producer_snapshot().unwrap().map(|s| s.0),
        Some(log.log_end_offset()),
        "clean close snapshots at the log end"
    );
    assert_state_survived(&log, 7, 40);
}

#[test]
fn producer_state_is_rebuilt_after_crash_from_snapshot_and_log_tail() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&env, dir.path(), small_config());
        produce(&log, 7, 0, 40);
        produce(&log, 8, 0, 3);
        log.flush().unwrap();
        log.abandon_for_test(); // no clean-close snapshot
    }
    let log = open(&env, dir.path(), small_config());
    let (snap, _) = log
        .load_producer_snapshot()
        .unwrap()
        .expect("roll snapshot");
    assert!(
        snap < log.log_end_offset(),
        "the tail after the snapshot is replayed"
    );
    assert_state_survived(&log, 7, 40);
    assert_state_survived(&log, 8, 3);
}

#[test]
fn truncation_rebuilds_producer_state_below_the_cut() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    produce(&log, 7, 0, 40); // offsets 0..40, sequence n at offset n
    log.truncate_to(30).unwrap();
    assert_state_survived(&log, 7, 30);
}

#[test]
fn expired_producers_are_forgotten_at_retention() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        producer_id_expiration_ms: 1_000,
        ..small_config()
    };
    let log = open(&env, dir.path(), config);
    produce(&log, 7, 0, 3);
    log.apply_retention(weir_now_ms()).unwrap();
    assert!(log.producer_state().get(7).is_some());
    log.apply_retention(weir_now_ms() + 10_000).unwrap();
    assert!(log.producer_state().get(7).is_none());
    // An expired producer is unknown: any sequence is accepted (KIP-360).
    append(&log, &idem(7, 0, 17, 1));
}
