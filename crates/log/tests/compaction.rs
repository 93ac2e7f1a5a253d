//! Log compaction (`weir_log::cleaner`): a property test against an uncompacted model, with
//! simulated crashes at every step of a swap, plus scenario tests.
//!
//! The property: after any sequence of appends (keys, values, tombstones, several batches and
//! codecs), rolls and cleaning passes, some of them killed mid-swap and the log reopened,
//! - reading the log from its start gives, for every key, exactly the model's latest value (a
//!   key whose latest record is a tombstone is absent or a tombstone);
//! - batches are whole, CRC-valid, and their offsets dense and increasing;
//! - after a pass at time t, no tombstone remains in the cleaned part whose delete horizon
//!   (KIP-534) is at or before t, and every tombstone there carries a horizon.
//!
//! `cargo test -p weir-log --features planted-bug-keep-first --test compaction` plants a cleaner
//! that keeps each key's first value: the property test must fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::{Cleaner, CompactionConfig, FlushPolicy, Log, LogConfig, LogEnv};
use weir_protocol::compression::Compression;
use weir_protocol::record::{self, BatchHeader, Record, RecordBatchBuilder};

use common::read_all;

const DELETE_RETENTION_MS: i64 = 1_000;
const T0_MS: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        flush: FlushPolicy::EveryAppend,
        // Every sync stores a recovery point: cleanable segments must lie below it.
        recovery_point_interval_bytes: 1,
        recovery_point_interval_ms: 0,
        ..LogConfig::default()
    }
}

fn compaction() -> CompactionConfig {
    CompactionConfig {
        delete_retention_ms: DELETE_RETENTION_MS,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
        min_cleanable_dirty_ratio: 0.0,
    }
}

/// One record of the model: key and value (None = tombstone).
type Kv = (u8, Option<u16>);

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: Vec<Vec<Kv>>,
        codec: u8,
    },
    Roll,
    Clean {
        advance_ms: i64,
        crash_after_step: Option<u32>,
    },
}

fn codec(n: u8) -> Compression {
    Compression::ALL[usize::from(n) % Compression::ALL.len()]
}

fn kv() -> impl Strategy<Value = Kv> {
    (0u8..12, prop::option::weighted(0.8, any::<u16>()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop::collection::vec(prop::collection::vec(kv(), 1..6), 1..4), any::<u8>())
            .prop_map(|(batches, codec)| Op::Append { batches, codec }),
        2 => Just(Op::Roll),
        3 => (0i64..2_500, prop::option::weighted(0.4, 1u32..=4))
            .prop_map(|(advance_ms, crash_after_step)| Op::Clean { advance_ms, crash_after_step }),
    ]
}

fn encode_batch(records: &[Kv], compression: Compression, ts_ms: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new(compression).base_timestamp(ts_ms);
    for (i, (k, v)) in records.iter().enumerate() {
        b.push(Record {
            offset_delta: i as i32,
            timestamp_delta: i as i64,
            key: Some(Bytes::from(vec![b'k', *k])),
            value: v.map(|v| Bytes::from(v.to_be_bytes().to_vec())),
            headers: Vec::new(),
        });
    }
    b.build().expect("encode")
}

/// Rolls, then appends a filler (key 99) to the new active segment: a sealed segment holding
/// the end of the written data is left alone until the recovery point moves past it.
fn seal(log: &Log) {
    log.roll().expect("roll");
    let b = encode_batch(&[(99, Some(0))], Compression::None, T0_MS);
    log.append(&b, &Default::default()).expect("append");
    flush_and_publish(log);
}

fn flush_and_publish(log: &Log) {
    log.flush().expect("flush");
    log.set_high_watermark(log.log_end_offset());
}

/// Every record of the log in offset order, with its batch header.
fn records(log: &Log) -> Vec<(BatchHeader, i64, Record)> {
    let mut out = Vec::new();
    let mut expected = log.log_start_offset();
    for (base, last, crc_ok, bytes) in read_all(log, log.log_start_offset(), log.log_end_offset()) {
        assert!(crc_ok, "batch at {base} fails its CRC");
        assert_eq!(base, expected, "offsets must stay dense and increasing");
        expected = last + 1;
        let bytes = Bytes::from(bytes);
        let h = BatchHeader::parse(&bytes).expect("header");
        let mut prev = -1i64;
        for r in record::decode_records(&bytes, 1 << 24).expect("records decode") {
            let offset = base + i64::from(r.offset_delta);
            assert!(
                offset > prev && offset <= last,
                "record offsets inside their batch"
            );
            prev = offset;
            out.push((h, offset, r));
        }
    }
    assert_eq!(
        expected,
        log.log_end_offset(),
        "the log's batches end at its end"
    );
    out
}

fn check_latest(log: &Log, model: &BTreeMap<u8, (i64, Option<u16>)>) {
    let mut seen: BTreeMap<u8, (i64, Option<u16>)> = BTreeMap::new();
    for (_, offset, r) in records(log) {
        let key = *r.key.as_ref().expect("keyed").get(1).expect("key byte");
        let value = r.value.as_ref().map(|v| u16::from_be_bytes([v[0], v[1]]));
        seen.insert(key, (offset, value));
    }
    for (key, &(offset, value)) in model {
        match (value, seen.get(key)) {
            (Some(_), Some(&got)) => assert_eq!(got, (offset, value), "key {key}: latest value"),
            (Some(_), None) => panic!("key {key}: latest value {value:?} at {offset} lost"),
            (None, None) => {}
            (None, Some(&got)) => {
                assert_eq!(got, (offset, None), "key {key}: tombstone is the latest")
            }
        }
    }
    assert!(
        seen.keys().all(|k| model.contains_key(k)),
        "no invented keys"
    );
}

fn check_no_expired_tombstones(log: &Log, cleaned_to: i64, now_ms: i64) {
    for (h, offset, r) in records(log) {
        if offset >= cleaned_to || r.value.is_some() {
            continue;
        }
        assert!(
            h.has_delete_horizon(),
            "tombstone at {offset} in the cleaned part has a delete horizon"
        );
        assert!(
            h.base_timestamp > now_ms,
            "tombstone at {offset}: horizon {} passed at {now_ms}",
            h.base_timestamp
        );
    }
}

fn run(ops: Vec<Op>) {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&env, dir.path(), config()).unwrap();
    let mut model: BTreeMap<u8, (i64, Option<u16>)> = BTreeMap::new();
    let mut now = T0_MS;
    for op in ops {
        match op {
            Op::Append { batches, codec: c } => {
                for recs in batches {
                    now += 1;
                    let info = log
                        .append(&encode_batch(&recs, codec(c), now), &Default::default())
                        .expect("append");
                    for (i, (k, v)) in recs.iter().enumerate() {
                        model.insert(*k, (info.base_offset + i as i64, *v));
                    }
                }
                flush_and_publish(&log);
            }
            Op::Roll => {
                log.roll().expect("roll");
                flush_and_publish(&log);
            }
            Op::Clean {
                advance_ms,
                crash_after_step,
            } => {
                now += advance_ms;
                let mut cleaner = Cleaner::new(1 << 20, 0);
                cleaner.crash_after_step_for_test = crash_after_step;
                match log.clean(&mut cleaner, &compaction(), now, true) {
                    Ok(Some(report)) => {
                        check_no_expired_tombstones(&log, report.cleaned_to_offset, now);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        assert!(crash_after_step.is_some(), "clean failed: {e}");
                        let _ = log.abandon_for_test();
                        log = reopen(&env, dir.path());
                    }
                }
            }
        }
        check_latest(&log, &model);
    }
    // And once more after a restart.
    let _ = log.abandon_for_test();
    let log = reopen(&env, dir.path());
    check_latest(&log, &model);
}

fn reopen(env: &Arc<LogEnv>, dir: &Path) -> Log {
    let log = Log::open(env, dir, config()).expect("reopen after a crash mid-pass");
    assert!(
        log.damage().is_none(),
        "a crash mid-pass must not damage the log: {:?}",
        log.damage()
    );
    log.set_high_watermark(log.log_end_offset());
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_latest_value_of_every_key_across_crashes(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

#[test]
fn compaction_shrinks_a_log_of_many_updates_to_one_record_per_key() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&env, dir.path(), config()).unwrap();
    for round in 0..50u16 {
        for key in 0..10u8 {
            let b = encode_batch(&[(key, Some(round))], Compression::Lz4, T0_MS);
            log.append(&b, &Default::default()).unwrap();
        }
    }
    seal(&log);
    let before = log.size_bytes();
    let report = log
        .clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, false)
        .unwrap()
        .expect("a dirty log is cleaned");
    assert_eq!(report.cleaned_to_offset, 500);
    let recs = records(&log);
    assert_eq!(recs.len(), 11, "one record per key, and the filler");
    assert!(
        recs.iter()
            .take(10)
            .all(|(_, _, r)| r.value.as_deref() == Some(&49u16.to_be_bytes()[..]))
    );
    assert!(
        log.size_bytes() < before / 4,
        "{} vs {before}",
        log.size_bytes()
    );
    // Nothing dirty is left: a second pass does nothing.
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, false)
            .unwrap()
            .is_none()
    );
    // And the cleaned segment survives a restart with its index.
    drop(log);
    let log = Log::open(&env, dir.path(), config()).unwrap();
    assert_eq!(records(&log).len(), 11);
}

#[test]
fn full_key_map_cleans_only_up_to_the_offset_it_covers() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&env, dir.path(), config()).unwrap();
    for round in 0..3u16 {
        for key in 0..40u8 {
            let b = encode_batch(&[(key, Some(round))], Compression::None, T0_MS);
            log.append(&b, &Default::default()).unwrap();
        }
    }
    seal(&log);
    // Room for 10 keys of 2 bytes.
    let mut cleaner = Cleaner::new(
        10 * (2 + weir_log::cleaner::KEY_MAP_ENTRY_OVERHEAD_BYTES),
        0,
    );
    let report = log
        .clean(&mut cleaner, &compaction(), T0_MS, true)
        .unwrap()
        .unwrap();
    assert_eq!(report.cleaned_to_offset, 10);
    assert!(report.key_map_bytes <= 10 * (2 + weir_log::cleaner::KEY_MAP_ENTRY_OVERHEAD_BYTES));
    // Passes continue from there until everything is clean; each key keeps its last value.
    let mut passes = 1;
    while log
        .clean(&mut cleaner, &compaction(), T0_MS, true)
        .unwrap()
        .is_some()
    {
        passes += 1;
        assert!(passes < 50);
    }
    let recs = records(&log);
    assert_eq!(recs.len(), 41, "one record per key, and the filler");
    assert!(
        recs.iter()
            .take(40)
            .all(|(_, _, r)| r.value.as_deref() == Some(&2u16.to_be_bytes()[..]))
    );
}

#[test]
fn active_segment_and_records_younger_than_min_lag_are_not_cleaned() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&env, dir.path(), config()).unwrap();
    for round in 0..5u16 {
        let b = encode_batch(
            &[(1, Some(round))],
            Compression::None,
            T0_MS + i64::from(round),
        );
        log.append(&b, &Default::default()).unwrap();
    }
    flush_and_publish(&log);
    // Everything is in the active segment.
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, true)
            .unwrap()
            .is_none()
    );
    seal(&log);
    let lagged = CompactionConfig {
        min_compaction_lag_ms: 60_000,
        ..compaction()
    };
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &lagged, T0_MS + 10, true)
            .unwrap()
            .is_none()
    );
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &lagged, T0_MS + 60_010, true)
            .unwrap()
            .is_some()
    );
    assert_eq!(records(&log).len(), 2);
}

#[test]
fn dirty_ratio_below_the_minimum_waits_unless_max_lag_passed() {
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&env, dir.path(), config()).unwrap();
    for round in 0..20u16 {
        let b = encode_batch(&[(1, Some(round))], Compression::None, T0_MS);
        log.append(&b, &Default::default()).unwrap();
    }
    seal(&log);
    let strict = CompactionConfig {
        min_cleanable_dirty_ratio: 1.1,
        ..compaction()
    };
    let stats = log.cleaner_stats(&strict, T0_MS);
    assert_eq!(stats.dirty_ratio, 1.0);
    assert_eq!(stats.last_cleaned_offset, 0);
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &strict, T0_MS, false)
            .unwrap()
            .is_none()
    );
    let lagged = CompactionConfig {
        max_compaction_lag_ms: 1_000,
        ..strict
    };
    assert!(
        log.clean(&mut Cleaner::new(1 << 20, 0), &lagged, T0_MS + 5_000, false)
            .unwrap()
            .is_some()
    );
    let stats = log.cleaner_stats(&strict, T0_MS);
    assert_eq!(stats.last_cleaned_offset, 20);
    assert_eq!(stats.dirty_ratio, 0.0);
}

/// A transactional batch of keyed records from producer `pid`.
fn txn_batch(pid: i64, seq: i32, records: &[Kv]) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::Zstd)
        .base_timestamp(T0_MS)
        .producer(pid, 0, seq)
        .transactional(true);
    for (i, (k, v)) in records.iter().enumerate() {
        b.push(Record {
            offset_delta: i as i32,
            timestamp_delta: 0,
            key: Some(Bytes::from(vec![b'k', *k])),
            value: v.map(|v| Bytes::from(v.to_be_bytes().to_vec())),
            headers: Vec::new(),
        });
    }
    b.build().expect("batch")
}

fn marker(log: &Log, pid: i64, control_type: weir_protocol::control::ControlType) {
    log.append_marker(
        pid,
        0,
        weir_protocol::control::Marker {
            control_type,
            coordinator_epoch: 0,
        },
        T0_MS,
        &Default::default(),
    )
    .expect("marker");
}

#[test]
fn aborted_records_go_markers_stay_and_producer_state_survives() {
    use weir_protocol::control::ControlType;
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    // The records' timestamps are old: the producers must not expire on reopen.
    let config = LogConfig {
        producer_id_expiration_ms: i64::MAX,
        ..config()
    };
    let log = Log::open(&env, dir.path(), config).unwrap();
    // Producer 7 commits key 1 = 10, then aborts key 2 = 20; producer 8 commits key 2 = 30
    // and its batch is its last: all its records are superseded by a plain append below.
    log.append(&txn_batch(7, 0, &[(1, Some(10))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Commit);
    log.append(&txn_batch(7, 1, &[(2, Some(20))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Abort);
    log.append(&txn_batch(8, 0, &[(3, Some(30))]), &Default::default())
        .unwrap();
    marker(&log, 8, ControlType::Commit);
    log.append(
        &encode_batch(&[(3, Some(31))], Compression::None, T0_MS),
        &Default::default(),
    )
    .unwrap();
    seal(&log);
    let producers_before = log.producer_state().entries();
    log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, true)
        .unwrap()
        .expect("cleaned");
    let mut values: Vec<(u8, Option<Vec<u8>>)> = Vec::new();
    let mut markers = 0;
    let mut pid8_batch = None;
    let end = log.log_end_offset();
    for (base, _, _, bytes) in read_all(&log, 0, end) {
        let bytes = Bytes::from(bytes);
        let h = BatchHeader::parse(&bytes).unwrap();
        if h.is_control() {
            markers += 1;
            continue;
        }
        if h.producer_id == 8 {
            pid8_batch = Some((base, h.record_count, h.base_sequence));
        }
        for r in record::decode_records(&bytes, 1 << 20).unwrap() {
            values.push((r.key.unwrap()[1], r.value.map(|v| v.to_vec())));
        }
    }
    assert_eq!(
        markers, 3,
        "markers are kept while their transactions keep a batch"
    );
    assert!(
        !values.iter().any(|(k, _)| *k == 2),
        "the aborted record is gone: {values:?}"
    );
    assert!(values.contains(&(1, Some(10u16.to_be_bytes().to_vec()))));
    assert_eq!(
        values.iter().filter(|(k, _)| *k == 3).count(),
        1,
        "key 3 keeps only its latest value"
    );
    // Producer 8's last batch stays as an empty batch with its producer fields.
    assert_eq!(pid8_batch, Some((4, 0, 0)));
    drop(log);
    let log = Log::open(&env, dir.path(), config).unwrap();
    assert_eq!(log.producer_state().entries(), producers_before);
}

/// Every batch of the log: (base offset, last offset, header).
fn batches(log: &Log) -> Vec<(i64, i64, BatchHeader)> {
    read_all(log, log.log_start_offset(), log.log_end_offset())
        .into_iter()
        .map(|(base, last, crc_ok, bytes)| {
            assert!(crc_ok, "batch at {base} fails its CRC");
            (base, last, BatchHeader::parse(&Bytes::from(bytes)).unwrap())
        })
        .collect()
}

#[test]
fn markers_of_transactions_with_nothing_left_get_a_horizon_then_go() {
    use weir_protocol::control::ControlType;
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    // One segment until `seal`: a roll inside a transaction would keep its marker (below).
    let config = LogConfig {
        producer_id_expiration_ms: i64::MAX,
        segment_bytes: 1 << 20,
        ..config()
    };
    let log = Log::open(&env, dir.path(), config).unwrap();
    // The first sync's producer snapshot (at offset 1) must not fall inside a transaction.
    log.append(
        &encode_batch(&[(0, Some(0))], Compression::None, T0_MS),
        &Default::default(),
    )
    .unwrap();
    // Producer 7: commits key 1 (later overwritten), aborts key 2, commits key 6 (kept).
    // Producer 9: commits key 5 (kept).
    log.append(&txn_batch(7, 0, &[(1, Some(10))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Commit); // offset 2: goes
    log.append(&txn_batch(7, 1, &[(2, Some(20))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Abort); // offset 4: goes, with its index entry
    log.append(&txn_batch(9, 0, &[(5, Some(50))]), &Default::default())
        .unwrap();
    marker(&log, 9, ControlType::Commit); // offset 6: stays
    log.append(
        &encode_batch(&[(1, Some(11))], Compression::None, T0_MS),
        &Default::default(),
    )
    .unwrap();
    log.append(&txn_batch(7, 2, &[(6, Some(60))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Commit); // offset 9: stays
    seal(&log);
    let end = log.log_end_offset();
    let producers_before = log.producer_state().entries();
    assert_eq!(log.aborted_transactions(0, end).len(), 1);
    let markers = |log: &Log| -> Vec<(i64, bool)> {
        batches(log)
            .into_iter()
            .filter(|(_, _, h)| h.is_control())
            .map(|(base, _, h)| (base, h.has_delete_horizon()))
            .collect()
    };

    // First pass: the two markers whose transactions lost everything get a delete horizon.
    log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, true)
        .unwrap()
        .expect("cleaned");
    assert_eq!(
        markers(&log),
        vec![(2, true), (4, true), (6, false), (9, false)]
    );
    assert_eq!(
        log.aborted_transactions(0, end).len(),
        1,
        "the abort is still there"
    );

    // Nothing is dirty: no pass until the horizon has passed.
    let no_dirt = |now_ms| {
        log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), now_ms, false)
            .unwrap()
    };
    assert!(no_dirt(T0_MS + DELETE_RETENTION_MS - 1).is_none());
    // The pass the horizon brings drops them; their offsets stay covered (dense) by an empty
    // batch.
    no_dirt(T0_MS + DELETE_RETENTION_MS + 1).expect("a pass once the horizon has passed");
    assert_eq!(markers(&log), vec![(6, false), (9, false)]);
    assert_eq!(log.aborted_transactions(0, end), Vec::new());
    let mut next = log.log_start_offset();
    for (base, last, _) in batches(&log) {
        assert_eq!(base, next, "offsets stay dense");
        next = last + 1;
    }
    assert_eq!(next, end);
    let keys: Vec<u8> = records(&log)
        .into_iter()
        .filter(|(h, _, _)| !h.is_control())
        .filter_map(|(_, _, r)| r.key.map(|k| k[1]))
        .collect();
    assert_eq!(keys, vec![0, 5, 1, 6, 99]);

    // Rebuilt from the log, no transaction is left open and the producers are as before.
    drop(log);
    let log = Log::open(&env, dir.path(), config).unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.producer_state().entries(), producers_before);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

#[test]
fn a_marker_stays_while_a_producer_snapshot_lies_inside_its_transaction() {
    use weir_protocol::control::ControlType;
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&env, dir.path(), config()).unwrap();
    log.append(&txn_batch(7, 0, &[(1, Some(10))]), &Default::default())
        .unwrap();
    // A roll inside the transaction writes a producer snapshot that holds it open.
    log.roll().unwrap();
    marker(&log, 7, ControlType::Commit); // offset 1
    log.append(
        &encode_batch(&[(1, Some(11))], Compression::None, T0_MS),
        &Default::default(),
    )
    .unwrap();
    // So that the first transaction's batch is not the producer's last (which stays).
    log.append(&txn_batch(7, 1, &[(6, Some(60))]), &Default::default())
        .unwrap();
    marker(&log, 7, ControlType::Commit); // offset 4
    seal(&log);
    for now_ms in [T0_MS, T0_MS + DELETE_RETENTION_MS + 1] {
        log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), now_ms, true)
            .unwrap();
    }
    let markers: Vec<i64> = batches(&log)
        .into_iter()
        .filter(|(_, _, h)| h.is_control())
        .map(|(base, _, _)| base)
        .collect();
    assert_eq!(markers, vec![1, 4]);
    drop(log);
    let log = Log::open(&env, dir.path(), config()).unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

/// With the broker's recovery-point intervals (16 MiB, 10 s), a log written one synced batch at
/// a time stores no recovery point at its rolls. One stored earlier (here at a clean close)
/// names a segment the cleaner must not rewrite, so everything from there on stayed uncleaned
/// for as long as the log was idle (seen as `__consumer_offsets` never shrinking in CI), and a
/// forced pass cleaned nothing (seen as a CDC test's partition left whole). A pass now has a
/// recovery point stored first when one holds it back.
#[test]
fn a_stale_recovery_point_does_not_hold_the_cleaner_back_for_good() {
    let cfg = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        flush: FlushPolicy::EveryAppend,
        ..LogConfig::default()
    };
    let env = LogEnv::new(64);
    let dir = tempfile::tempdir().unwrap();
    let write_rounds = |log: &Log, rounds: std::ops::Range<u16>| {
        for round in rounds {
            for key in 0..10u8 {
                let b = encode_batch(&[(key, Some(round))], Compression::None, T0_MS);
                log.append(&b, &Default::default()).unwrap();
                flush_and_publish(log);
            }
        }
    };
    let log = Log::open(&env, dir.path(), cfg).unwrap();
    write_rounds(&log, 0..20);
    // The clean close stores a recovery point in the segment then active.
    log.close().unwrap();
    drop(log);
    let log = Log::open(&env, dir.path(), cfg).unwrap();
    write_rounds(&log, 20..40);
    let before = log.size_bytes();
    // One forced pass, as `weir topic compact` runs: it must get past the old point at once.
    log.clean(&mut Cleaner::new(1 << 20, 0), &compaction(), T0_MS, true)
        .unwrap();
    // Ten keys' latest values in the cleaned part, and the active segment's batches.
    let after = log.size_bytes();
    assert!(
        after <= 2 * 1024 + 10 * 100,
        "{after} bytes left of {before}: the cleaner stopped at the recovery point's segment"
    );
    let latest: BTreeMap<u8, Vec<u8>> = records(&log)
        .into_iter()
        .filter_map(|(_, _, r)| Some((r.key?.get(1).copied()?, r.value?.to_vec())))
        .collect();
    assert_eq!(latest.len(), 10);
    assert!(latest.values().all(|v| v[..] == 39u16.to_be_bytes()[..]));
}
