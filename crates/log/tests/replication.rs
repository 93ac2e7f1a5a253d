//! A follower's log (`append_as_follower`, `truncate_to`, `restart_at`): the same bytes as its
//! leader's, with the leader's offsets and epochs.

mod common;

use bytes::Bytes;
use common::*;
use weir_log::{AppendOptions, LogEnv, LogError};

fn leader_append(log: &weir_log::Log, n: u64, epoch: i32) {
    log.append(
        &batch(n, (n % 3 + 1) as i32, 50 + n as usize, 1_000 + n as i64),
        &AppendOptions {
            leader_epoch: epoch,
            log_append_time_ms: None,
        },
    )
    .expect("leader append");
}

/// Everything the leader holds from `from`, as one buffer of whole batches.
fn leader_bytes(log: &weir_log::Log, from: i64) -> Bytes {
    let mut out = Vec::new();
    for b in read_all(log, from, log.log_end_offset()) {
        out.extend_from_slice(&b.3);
    }
    Bytes::from(out)
}

#[test]
fn a_follower_holds_the_leaders_bytes_offsets_and_epochs() {
    let env = LogEnv::new(16);
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(&env, ld.path(), small_config());
    let follower = open(&env, fd.path(), small_config());
    for n in 0..40 {
        leader_append(&leader, n, if n < 20 { 1 } else { 4 });
    }
    // In two fetches, as a fetcher would.
    let mid = read_all(&leader, 0, leader.log_end_offset())[15].0;
    let first = {
        let mut out = Vec::new();
        for b in read_all(&leader, 0, mid) {
            out.extend_from_slice(&b.3);
        }
        Bytes::from(out)
    };
    follower.append_as_follower(&first).unwrap();
    assert_eq!(follower.log_end_offset(), mid);
    follower
        .append_as_follower(&leader_bytes(&leader, mid))
        .unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(
        read_all(&follower, 0, follower.log_end_offset()),
        read_all(&leader, 0, leader.log_end_offset())
    );
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());
}

#[test]
fn batches_that_do_not_continue_the_log_are_refused_and_change_nothing() {
    let env = LogEnv::new(16);
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(&env, ld.path(), small_config());
    let follower = open(&env, fd.path(), small_config());
    for n in 0..10 {
        leader_append(&leader, n, 2);
    }
    let all = read_all(&leader, 0, leader.log_end_offset());
    // A gap: the second batch onwards without the first.
    let skipped = Bytes::from(
        all[1..]
            .iter()
            .flat_map(|b| b.3.clone())
            .collect::<Vec<u8>>(),
    );
    match follower.append_as_follower(&skipped) {
        Err(LogError::NotContiguous { expected: 0, found }) => assert_eq!(found, all[1].0),
        other => panic!("a gap must be refused, got {other:?}"),
    }
    // Out of order inside one append.
    let swapped = Bytes::from([all[1].3.clone(), all[0].3.clone()].concat());
    assert!(matches!(
        follower.append_as_follower(&swapped),
        Err(LogError::NotContiguous { .. })
    ));
    assert_eq!(follower.log_end_offset(), 0);
    assert!(follower.leader_epochs().is_empty());
}

#[test]
fn a_divergent_tail_is_cut_and_replaced_by_the_new_leaders() {
    let env = LogEnv::new(16);
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old_leader = open(&env, ad.path(), small_config());
    let new_leader = open(&env, bd.path(), small_config());
    for n in 0..10 {
        leader_append(&old_leader, n, 1);
    }
    new_leader
        .append_as_follower(&leader_bytes(&old_leader, 0))
        .unwrap();
    let common_end = old_leader.log_end_offset();
    // The old leader appended more in epoch 1 that never replicated; the new leader takes
    // epoch 2 and appends its own.
    for n in 10..15 {
        leader_append(&old_leader, n, 1);
    }
    for n in 100..103 {
        leader_append(&new_leader, n, 2);
    }
    // OffsetForLeaderEpoch(1) on the new leader: epoch 1 ended where epoch 2 began.
    assert_eq!(new_leader.end_offset_for_epoch(1), Some((1, common_end)));
    old_leader.truncate_to(common_end).unwrap();
    old_leader
        .append_as_follower(&leader_bytes(&new_leader, common_end))
        .unwrap();
    assert_eq!(
        read_all(&old_leader, 0, old_leader.log_end_offset()),
        read_all(&new_leader, 0, new_leader.log_end_offset())
    );
    assert_eq!(old_leader.leader_epochs(), new_leader.leader_epochs());
}

#[test]
fn a_follower_behind_the_leaders_log_start_restarts_there() {
    let env = LogEnv::new(16);
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(&env, ld.path(), small_config());
    let follower = open(&env, fd.path(), small_config());
    for n in 0..30 {
        leader_append(&leader, n, 1);
    }
    follower
        .append_as_follower(&leader_bytes(&leader, 0))
        .unwrap();
    let start = read_all(&leader, 0, leader.log_end_offset())[20].0;
    leader.set_high_watermark(leader.log_end_offset());
    leader.delete_records_before(start).unwrap();
    // A fresh follower (nothing yet) must start at the leader's log start.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(&env, fresh_dir.path(), small_config());
    fresh.restart_at(start).unwrap();
    assert_eq!(
        (fresh.log_start_offset(), fresh.log_end_offset()),
        (start, start)
    );
    fresh
        .append_as_follower(&leader_bytes(&leader, start))
        .unwrap();
    assert_eq!(fresh.log_end_offset(), leader.log_end_offset());
    // Restarting past the end of a non-empty log empties it too.
    let beyond = follower.log_end_offset() + 7;
    follower.restart_at(beyond).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (beyond, beyond)
    );
    drop(follower);
    let reopened = open(&env, fd.path(), small_config());
    assert_eq!(reopened.log_end_offset(), beyond);
}

/// A broker that became leader (its epoch recorded at its log end) and was replaced before it
/// appended anything must drop that epoch when it follows: it holds no record of it, and a
/// follower naming it as its last fetched epoch is told it diverged on every fetch.
#[test]
fn truncating_at_the_end_drops_an_epoch_that_holds_no_record() {
    let env = LogEnv::new(16);
    let dir = tempfile::tempdir().unwrap();
    let log = open(&env, dir.path(), small_config());
    for n in 0..5 {
        leader_append(&log, n, 1);
    }
    let end = log.log_end_offset();
    log.assign_leader_epoch(2, end).unwrap();
    assert_eq!(log.leader_epochs().last(), Some(&(2, end)));
    log.truncate_to(end).unwrap();
    assert_eq!(log.log_end_offset(), end, "no record goes");
    assert_eq!(log.leader_epochs(), vec![(1, 0)]);
    drop(log);
    let reopened = open(&env, dir.path(), small_config());
    assert_eq!(
        reopened.leader_epochs(),
        vec![(1, 0)],
        "the dropped epoch stays dropped after a restart"
    );
}

/// After the leader's cleaner merged removed batches into one empty batch, a follower whose
/// log ends inside that run gets a batch starting below its end: it covers the rest of the run
/// with an empty batch of its own, and the batches after it follow byte for byte.
#[test]
fn a_follower_ending_inside_a_cleaned_empty_run_continues_past_it() {
    use weir_protocol::record::{Compression, Record, RecordBatchBuilder};
    let env = LogEnv::new(16);
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = weir_log::LogConfig {
        recovery_point_interval_bytes: 1,
        recovery_point_interval_ms: 0,
        ..small_config()
    };
    let leader = open(&env, ld.path(), config);
    let follower = open(&env, fd.path(), config);
    let keyed = |k: u8, v: u8| {
        RecordBatchBuilder::new(Compression::None)
            .record(Record {
                key: Some(Bytes::from(vec![k])),
                value: Some(Bytes::from(vec![v; 100])),
                ..Record::default()
            })
            .build()
            .unwrap()
    };
    // Key 1 written 10 times, then key 2 once (in the next segment).
    for v in 0..10 {
        leader
            .append(&keyed(1, v), &AppendOptions::default())
            .unwrap();
    }
    leader.roll().unwrap();
    leader
        .append(&keyed(2, 0), &AppendOptions::default())
        .unwrap();
    leader
        .append(&keyed(1, 99), &AppendOptions::default())
        .unwrap();
    leader.flush().unwrap();
    leader.set_high_watermark(leader.log_end_offset());
    // The follower got the first 4 batches before the leader cleaned.
    let first_four: Vec<u8> = read_all(&leader, 0, 4)
        .into_iter()
        .flat_map(|b| b.3)
        .collect();
    follower
        .append_as_follower(&Bytes::from(first_four))
        .unwrap();
    let mut cleaner = weir_log::Cleaner::new(1 << 20, 0);
    leader
        .clean(
            &mut cleaner,
            &weir_log::CompactionConfig::default(),
            0,
            true,
        )
        .unwrap()
        .expect("cleaned");
    // The leader now answers offset 4 with the empty batch [0, 8] (offset 9 keeps key 1: the
    // active segment, where key 1 was written again, is not cleaned).
    let rest = read_all(&leader, 4, leader.log_end_offset());
    assert_eq!((rest[0].0, rest[0].1), (0, 8), "{rest:?}");
    let bytes: Vec<u8> = rest.iter().flat_map(|b| b.3.clone()).collect();
    follower.append_as_follower(&Bytes::from(bytes)).unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    let got = read_all(&follower, 4, follower.log_end_offset());
    assert_eq!(
        (got[0].0, got[0].1),
        (4, 8),
        "the follower's own empty batch"
    );
    for (g, l) in got.iter().skip(1).zip(rest.iter().skip(1)) {
        assert_eq!(g.3, l.3, "later batches byte for byte");
    }
}
