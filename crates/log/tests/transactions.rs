//! Transactions on the partition side: the last stable offset, the aborted-transaction index,
//! and both kept consistent across clean restarts, crashes, truncation and retention.

mod common;

use bytes::Bytes;
use common::*;
use weir_log::{AbortedTxn, AppendOptions, Log, LogEnv, LogError, ProducerStateError};
use weir_protocol::control::{ControlType, Marker};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A transactional batch of `records` records from producer `pid`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, records: i32) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None)
        .base_timestamp(now_ms())
        .producer(pid, epoch, seq)
        .transactional(true);
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

fn end_txn(log: &Log, pid: i64, epoch: i16, control_type: ControlType) -> i64 {
    try_end_txn(log, pid, epoch, control_type, 0)
        .expect("marker")
        .base_offset
}

fn try_end_txn(
    log: &Log,
    pid: i64,
    epoch: i16,
    control_type: ControlType,
    coordinator_epoch: i32,
) -> Result<weir_log::AppendInfo, LogError> {
    log.append_marker(
        pid,
        epoch,
        Marker {
            control_type,
            coordinator_epoch,
        },
        now_ms(),
        &AppendOptions::default(),
    )
}

/// Everything appended so far counts as durable (what the broker does after the sync).
fn raise_hw(log: &Log) {
    log.set_high_watermark(log.log_end_offset());
}

#[test]
fn open_transaction_holds_the_lso_until_its_marker_is_below_the_high_watermark() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &batch(0, 3, 10, 0)); // offsets 0-2, no transaction
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), 3);
    append(&log, &txn_batch(7, 0, 0, 2)); // 3-4: opens producer 7's transaction
    append(&log, &batch(1, 2, 10, 0)); // 5-6
    raise_hw(&log);
    assert_eq!(log.high_watermark(), 7);
    assert_eq!(log.last_stable_offset(), 3, "held at the open transaction");
    let marker = end_txn(&log, 7, 0, ControlType::Commit);
    assert_eq!(marker, 7);
    assert_eq!(
        log.last_stable_offset(),
        3,
        "a marker not yet below the high watermark (not durable) does not release it"
    );
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), 8);
    assert_eq!(log.producer_state().first_undecided_offset(), None);
}

#[test]
fn aborted_transactions_are_indexed_and_reported_for_the_fetched_range() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &txn_batch(1, 0, 0, 2)); // 0-1 producer 1
    append(&log, &txn_batch(2, 0, 0, 2)); // 2-3 producer 2
    let abort1 = end_txn(&log, 1, 0, ControlType::Abort); // 4
    append(&log, &txn_batch(2, 0, 2, 1)); // 5
    end_txn(&log, 2, 0, ControlType::Commit); // 6
    append(&log, &txn_batch(1, 0, 2, 1)); // 7 producer 1's next transaction
    let abort2 = end_txn(&log, 1, 0, ControlType::Abort); // 8
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), 9);
    let first = AbortedTxn {
        producer_id: 1,
        first_offset: 0,
        last_offset: abort1,
        // Producer 2's transaction was still open at offset 2.
        last_stable_offset: 2,
    };
    let second = AbortedTxn {
        producer_id: 1,
        first_offset: 7,
        last_offset: abort2,
        last_stable_offset: 9,
    };
    assert_eq!(log.aborted_transactions(0, 9), vec![first, second]);
    // A read of [5, 7) overlaps neither aborted transaction's records.
    assert_eq!(log.aborted_transactions(5, 7), Vec::new());
    assert_eq!(log.aborted_transactions(1, 3), vec![first]);
    // The read reports where its data ends, the upper bound for the lookup.
    let r = log
        .read(0, 1 << 20, log.last_stable_offset())
        .expect("read");
    assert_eq!(r.end_offset, 9);
}

#[test]
fn txn_index_survives_roll_and_clean_restart() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let log = open(&env, dir.path(), small_config());
        append(&log, &txn_batch(1, 0, 0, 2));
        end_txn(&log, 1, 0, ControlType::Abort);
        log.roll().expect("roll");
        append(&log, &txn_batch(1, 0, 2, 2));
        end_txn(&log, 1, 0, ControlType::Abort);
        append(&log, &txn_batch(3, 0, 0, 1)); // left open
        raise_hw(&log);
        expected = log.aborted_transactions(0, log.log_end_offset());
        assert_eq!(expected.len(), 2);
        log.close().expect("close");
    }
    assert!(
        dir.path().join("00000000000000000000.txnindex").exists(),
        "the sealed segment's abort is on disk"
    );
    let log = open(&env, dir.path(), small_config());
    assert_eq!(log.aborted_transactions(0, log.log_end_offset()), expected);
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), 6, "the open transaction is kept");
    assert_eq!(
        log.producer_state()
            .get(3)
            .map(|e| e.current_txn_first_offset),
        Some(6)
    );
}

#[test]
fn txn_index_and_open_transactions_are_rebuilt_from_the_log_after_a_crash() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let log = open(&env, dir.path(), small_config());
        append(&log, &txn_batch(1, 0, 0, 2));
        end_txn(&log, 1, 0, ControlType::Abort);
        log.roll().expect("roll");
        append(&log, &txn_batch(2, 0, 0, 2)); // opens at 3
        append(&log, &txn_batch(1, 0, 2, 2));
        end_txn(&log, 1, 0, ControlType::Abort); // in the active segment: never written out
        raise_hw(&log);
        expected = log.aborted_transactions(0, log.log_end_offset());
        assert_eq!(expected.len(), 2);
        log.flush().unwrap();
        log.abandon_for_test();
    }
    // The crash also took the sealed segment's index files: everything is rebuilt by scanning.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("txnindex" | "index" | "timeindex")
        ) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = open(&env, dir.path(), small_config());
    assert!(log.recovery_scanned_bytes() > 0);
    assert_eq!(log.aborted_transactions(0, log.log_end_offset()), expected);
    raise_hw(&log);
    assert_eq!(
        log.last_stable_offset(),
        3,
        "producer 2's transaction is open"
    );
    end_txn(&log, 2, 0, ControlType::Commit);
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

#[test]
fn truncation_below_a_marker_reopens_its_transaction_and_drops_its_index_entry() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &batch(0, 2, 10, 0)); // 0-1
    append(&log, &txn_batch(5, 0, 0, 3)); // 2-4
    let marker = end_txn(&log, 5, 0, ControlType::Abort); // 5
    append(&log, &batch(1, 2, 10, 0)); // 6-7
    raise_hw(&log);
    assert_eq!(log.aborted_transactions(0, 8).len(), 1);
    assert_eq!(log.last_stable_offset(), 8);
    log.truncate_to(marker).expect("truncate");
    assert_eq!(log.log_end_offset(), 5);
    assert!(log.aborted_transactions(0, 5).is_empty());
    assert_eq!(
        log.producer_state()
            .get(5)
            .map(|e| e.current_txn_first_offset),
        Some(2),
        "without its marker the transaction is open again"
    );
    assert_eq!(log.last_stable_offset(), 2);
    // The coordinator writes the marker again.
    end_txn(&log, 5, 0, ControlType::Abort);
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), 6);
    assert_eq!(log.aborted_transactions(0, 6).len(), 1);
}

#[test]
fn deleting_the_start_of_an_open_transaction_moves_the_lso_to_the_log_start() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &txn_batch(9, 0, 0, 2)); // 0-1, left open
    for n in 0..40 {
        if n % 10 == 0 {
            log.roll().expect("roll");
        }
        append(&log, &batch(n, 2, 100, 0));
    }
    raise_hw(&log);
    assert!(log.segment_count() > 2);
    assert_eq!(log.last_stable_offset(), 0);
    let start = log.delete_records_before(30).expect("delete records");
    assert_eq!(start, 30);
    assert_eq!(log.last_stable_offset(), 30);
    // The producer stays known with its transaction, as in Kafka; its marker still ends it.
    assert!(
        log.producer_state()
            .get(9)
            .is_some_and(|e| e.has_open_txn())
    );
    end_txn(&log, 9, 0, ControlType::Commit);
    raise_hw(&log);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

#[test]
fn markers_from_a_stale_epoch_or_coordinator_are_refused_and_write_nothing() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    append(&log, &txn_batch(4, 2, 0, 1));
    try_end_txn(&log, 4, 2, ControlType::Commit, 3).expect("commit");
    append(&log, &txn_batch(4, 2, 1, 1));
    let end = log.log_end_offset();
    assert!(matches!(
        try_end_txn(&log, 4, 1, ControlType::Abort, 3),
        Err(LogError::Producer(
            ProducerStateError::InvalidProducerEpoch(_)
        ))
    ));
    assert!(matches!(
        try_end_txn(&log, 4, 2, ControlType::Abort, 2),
        Err(LogError::Producer(ProducerStateError::CoordinatorFenced(_)))
    ));
    assert_eq!(log.log_end_offset(), end);
    // A plain batch inside the open transaction is refused too.
    let plain = RecordBatchBuilder::new(Compression::None)
        .base_timestamp(now_ms())
        .producer(4, 2, 2)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::from_static(b"x")),
            headers: Vec::new(),
        })
        .build()
        .expect("batch");
    assert!(matches!(
        log.append(&plain, &AppendOptions::default()),
        Err(LogError::Producer(ProducerStateError::InvalidTxnState(_)))
    ));
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn aborts_below_the_recovery_point_snapshot_survive_a_crash_without_replaying_the_segment() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    // Every sync stores a recovery point (and the producer snapshot captured before it); one
    // big active segment.
    let config = weir_log::LogConfig {
        segment_bytes: 1 << 30,
        recovery_point_interval_bytes: 1,
        ..small_config()
    };
    let expected;
    {
        let log = open(&env, dir.path(), config);
        append(&log, &txn_batch(1, 0, 0, 2));
        end_txn(&log, 1, 0, ControlType::Abort); // 2
        log.flush().unwrap();
        for n in 0..20 {
            append(&log, &batch(n, 2, 100, 0));
            log.flush().unwrap();
        }
        append(&log, &txn_batch(2, 0, 0, 1));
        end_txn(&log, 2, 0, ControlType::Abort);
        append(&log, &txn_batch(3, 0, 0, 1)); // left open
        log.flush().unwrap();
        raise_hw(&log);
        expected = log.aborted_transactions(0, log.log_end_offset());
        assert_eq!(expected.len(), 2);
        log.abandon_for_test();
    }
    let log = open(&env, dir.path(), config);
    let stats = log.recovery_stats();
    assert!(
        stats.producer_replay_batches < 10,
        "the replay starts at the newest snapshot, not the segment's start: {stats:?}"
    );
    assert_eq!(log.aborted_transactions(0, log.log_end_offset()), expected);
    raise_hw(&log);
    assert_eq!(
        log.last_stable_offset(),
        log.log_end_offset() - 1,
        "producer 3's transaction is open"
    );
}
