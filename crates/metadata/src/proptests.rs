//! Property tests over random sequences.
//!
//! - Replay: random records (valid and invalid mixed, drawn from a few ids
//!   and names so they collide) applied with snapshot-and-restore at random
//!   points give, at every step, the same image as plain replay, and a
//!   refused record changes nothing.
//! - Controller: random requests (AlterPartition and ElectLeaders among
//!   them, and unclean-election configs), ticks, time and failovers. Every
//!   decision's records apply, and after each one: every leader is a live
//!   (unfenced) member of its ISR or there is none; a partition without a
//!   leader has no live ISR member; ISRs are subsets of the replicas and
//!   never empty; a fenced broker is in an ISR only as its last member; a
//!   leader from outside the previous ISR came from an unclean election the
//!   topic (or the request) allowed; leader and partition epochs never go down.
//!
//! Each property is also run with a bug planted (`planted.rs`) and must fail
//! then, which shows it can.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::controller::{
    AlterPartitionItem, Controller, ControllerRequest, NewPartitions, NewTopic, TopicPartitions,
    election_type,
};
use crate::election::UNCLEAN_LEADER_ELECTION_ENABLE;
use crate::image::MetadataImage;
use crate::planted::{self, Bug};
use crate::records::{BrokerId, ConfigResource, MetadataRecord, NO_LEADER, TopicId};
use crate::testkit::{Sim, config, endpoint};

// ---- Replay ----

/// "a.b" and "a_b" collide for CreateTopics (not for the image).
const NAMES: [&str; 4] = ["a", "b", "a.b", "a_b"];

fn topic_id() -> impl Strategy<Value = TopicId> {
    // 0 is the all-zero id, which the image refuses.
    (0u8..4).prop_map(|k| [k; 16])
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES.to_vec()).prop_map(str::to_string)
}

fn broker() -> impl Strategy<Value = BrokerId> {
    -1i32..4
}

/// A replica set, its ISR and leader: mostly well formed, sometimes not.
fn partition_shape() -> impl Strategy<Value = (Vec<BrokerId>, Vec<BrokerId>, BrokerId)> {
    prop_oneof![
        4 => (prop::sample::subsequence(vec![0, 1, 2, 3], 1..=3), 0usize..=3, any::<bool>()).prop_map(
            |(replicas, isr_len, leaderless)| {
                let isr: Vec<BrokerId> = replicas.iter().copied().take(isr_len.max(1)).collect();
                let leader = if leaderless { NO_LEADER } else { isr[0] };
                (replicas, isr, leader)
            }
        ),
        1 => (prop::collection::vec(broker(), 0..4), prop::collection::vec(broker(), 0..4), broker()),
    ]
}

fn record() -> impl Strategy<Value = MetadataRecord> {
    let resource = prop_oneof![
        name().prop_map(ConfigResource::Topic),
        prop::option::of(0i32..2).prop_map(ConfigResource::Broker),
        Just(ConfigResource::Group("g".into())),
    ];
    prop_oneof![
        2 => (broker(), 0u8..2, prop::option::of(Just("r".to_string())), any::<bool>()).prop_map(
            |(broker_id, incarnation, rack, fenced)| MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id: [incarnation; 16],
                endpoints: endpoint(broker_id.max(0)),
                rack,
                fenced,
            }
        ),
        2 => (broker(), 0i64..20).prop_map(|(broker_id, broker_epoch)| MetadataRecord::FenceBroker { broker_id, broker_epoch }),
        2 => (broker(), 0i64..20).prop_map(|(broker_id, broker_epoch)| MetadataRecord::UnfenceBroker { broker_id, broker_epoch }),
        1 => (broker(), 0i64..20).prop_map(|(broker_id, broker_epoch)| MetadataRecord::UnregisterBroker { broker_id, broker_epoch }),
        3 => (name(), topic_id()).prop_map(|(name, topic_id)| MetadataRecord::Topic { name, topic_id }),
        4 => (topic_id(), 0i32..3, partition_shape(), 0i32..3, 0i32..3).prop_map(
            |(topic_id, partition, (replicas, isr, leader), leader_epoch, partition_epoch)| MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            }
        ),
        4 => (topic_id(), 0i32..3, prop::option::of(broker()), prop::option::of(partition_shape())).prop_map(
            |(topic_id, partition, leader, shape)| {
                let (replicas, isr) = match shape {
                    Some((replicas, isr, _)) => (Some(replicas), Some(isr)),
                    None => (None, None),
                };
                // Some changes start a reassignment (its first replica adding, its
                // last removing), so snapshots carry those lists too.
                let reassigning = partition == 1 && replicas.as_ref().is_some_and(|r| r.len() > 1);
                let adding_replicas = replicas.as_ref().filter(|_| reassigning).map(|r| vec![r[0]]);
                let removing_replicas = replicas.as_ref().filter(|_| reassigning).map(|r| vec![r[r.len() - 1]]);
                MetadataRecord::PartitionChange { topic_id, partition, leader, isr, replicas, adding_replicas, removing_replicas }
            }
        ),
        3 => (resource, prop::sample::select(vec!["x", "y", ""]), prop::option::of(prop::sample::select(vec!["1", "2"]))).prop_map(
            |(resource, name, value)| MetadataRecord::Config {
                resource,
                name: name.to_string(),
                value: value.map(str::to_string),
            }
        ),
        1 => topic_id().prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
        2 => (0i64..6, 0i64..3).prop_map(|(first, size)| MetadataRecord::ProducerIds {
            broker_id: 0,
            broker_epoch: 0,
            first_producer_id: first * 500,
            size: size * 500,
        }),
        1 => Just(MetadataRecord::NoOp),
    ]
}

/// One step: a record, how far the index moves first (0: same entry as the
/// previous record), and whether the second node snapshots and restores after it.
type Step = (MetadataRecord, u64, bool);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((record(), 0u64..3, prop::bool::weighted(0.15)), 1..80)
}

fn replay_matches_snapshot_and_restore(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut plain = MetadataImage::new();
    let mut restored = MetadataImage::new();
    let mut index = 0;
    for (record, advance, snapshot) in steps {
        index += advance;
        let before = plain.clone();
        let outcome = plain.apply(index, record);
        if outcome.is_err() {
            let mut unchanged = before;
            unchanged.last_applied_index = Some(index);
            prop_assert_eq!(
                &plain,
                &unchanged,
                "a refused record changed the image: {:?}",
                record
            );
        }
        prop_assert_eq!(outcome.is_ok(), restored.apply(index, record).is_ok());
        if *snapshot {
            restored = MetadataImage::from_snapshot(&restored.to_snapshot())
                .map_err(|e| TestCaseError::fail(format!("own snapshot refused: {e}")))?;
        }
        prop_assert_eq!(&plain, &restored);
        plain.check_consistent().map_err(TestCaseError::fail)?;
    }
    Ok(())
}

// ---- Controller ----

#[derive(Debug, Clone)]
enum Op {
    Register {
        broker_id: BrokerId,
        incarnation: u8,
        rack: Option<u8>,
    },
    Heartbeat {
        broker_id: BrokerId,
        stale: bool,
        caught_up: bool,
        shutdown: bool,
    },
    Create {
        name: String,
        partitions: i32,
        replication_factor: i16,
        manual: Option<Vec<Vec<BrokerId>>>,
    },
    Delete {
        name: String,
    },
    Grow {
        name: String,
        total: i32,
    },
    Configure {
        name: String,
        value: Option<String>,
    },
    ProducerIds {
        broker_id: BrokerId,
        stale: bool,
    },
    /// Sets or removes `unclean.leader.election.enable` on a topic, or on
    /// the cluster default with `name: None`.
    Unclean {
        name: Option<String>,
        value: Option<bool>,
    },
    /// AlterPartition for one partition, from its leader unless `sender`
    /// says otherwise; the new ISR is the replicas picked by `isr_mask`
    /// (bit i: the i-th replica), plus the leader when `with_leader`.
    AlterIsr {
        name: String,
        partition: i32,
        sender: Option<BrokerId>,
        isr_mask: u8,
        with_leader: bool,
        stale_leader_epoch: bool,
        stale_partition_epoch: bool,
    },
    /// ElectLeaders for one partition, or all with `target: None`.
    Elect {
        unclean: bool,
        target: Option<(String, i32)>,
    },
    /// AlterPartitionReassignments for one partition: a target (0 to 3
    /// brokers, unknown ones included), or a cancellation with `None`.
    Reassign {
        name: String,
        partition: i32,
        target: Option<Vec<BrokerId>>,
    },
    Advance {
        ms: u64,
    },
    Tick,
    Failover,
    RestoreSnapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let broker = 0i32..5;
    prop_oneof![
        3 => (broker.clone(), 0u8..2, prop::option::of(0u8..2)).prop_map(|(broker_id, incarnation, rack)| Op::Register { broker_id, incarnation, rack }),
        6 => (broker.clone(), prop::bool::weighted(0.1), prop::bool::weighted(0.8), prop::bool::weighted(0.1)).prop_map(
            |(broker_id, stale, caught_up, shutdown)| Op::Heartbeat { broker_id, stale, caught_up, shutdown }
        ),
        4 => (name(), -1i32..5, prop_oneof![1 => -1i16..2, 2 => 2i16..4], prop::option::weighted(0.2, prop::collection::vec(prop::collection::vec(0i32..5, 0..3), 1..3))).prop_map(
            |(name, partitions, replication_factor, manual)| Op::Create { name, partitions, replication_factor, manual }
        ),
        1 => name().prop_map(|name| Op::Delete { name }),
        1 => (name(), 0i32..7).prop_map(|(name, total)| Op::Grow { name, total }),
        1 => (name(), prop::option::of(Just("1".to_string()))).prop_map(|(name, value)| Op::Configure { name, value }),
        1 => (broker.clone(), any::<bool>()).prop_map(|(broker_id, stale)| Op::ProducerIds { broker_id, stale }),
        1 => (prop::option::weighted(0.9, name()), prop::option::of(prop::bool::weighted(0.7))).prop_map(|(name, value)| Op::Unclean { name, value }),
        6 => (name(), 0i32..3, prop::option::weighted(0.15, broker.clone()), any::<u8>(), prop::bool::weighted(0.9), prop::bool::weighted(0.1), prop::bool::weighted(0.1)).prop_map(
            |(name, partition, sender, isr_mask, with_leader, stale_leader_epoch, stale_partition_epoch)| Op::AlterIsr { name, partition, sender, isr_mask, with_leader, stale_leader_epoch, stale_partition_epoch }
        ),
        2 => (any::<bool>(), prop::option::weighted(0.5, (name(), 0i32..3))).prop_map(|(unclean, target)| Op::Elect { unclean, target }),
        3 => (name(), 0i32..3, prop::option::weighted(0.8, prop::collection::vec(0i32..6, 0..4))).prop_map(
            |(name, partition, target)| Op::Reassign { name, partition, target }
        ),
        4 => (0u64..10_000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Tick),
        1 => Just(Op::Failover),
        1 => Just(Op::RestoreSnapshot),
    ]
}

fn request_for(sim: &Sim, op: &Op) -> Option<ControllerRequest> {
    let epoch_of = |broker_id: BrokerId, stale: bool| {
        sim.image.broker(broker_id).map_or(0, |b| b.broker_epoch) - i64::from(stale)
    };
    Some(match op.clone() {
        Op::Register {
            broker_id,
            incarnation,
            rack,
        } => ControllerRequest::RegisterBroker {
            broker_id,
            incarnation_id: [incarnation; 16],
            endpoints: endpoint(broker_id),
            rack: rack.map(|r| format!("rack-{r}")),
        },
        Op::Heartbeat {
            broker_id,
            stale,
            caught_up,
            shutdown,
        } => ControllerRequest::BrokerHeartbeat {
            broker_id,
            broker_epoch: epoch_of(broker_id, stale),
            applied_index: if caught_up {
                sim.image.last_applied_index.unwrap_or(0)
            } else {
                0
            },
            want_shutdown: shutdown,
        },
        Op::Create {
            name,
            partitions,
            replication_factor,
            manual,
        } => ControllerRequest::CreateTopics {
            topics: vec![match manual {
                None => NewTopic {
                    name,
                    partitions,
                    replication_factor,
                    assignments: None,
                    configs: BTreeMap::new(),
                },
                Some(manual) => NewTopic {
                    name,
                    partitions: -1,
                    replication_factor: -1,
                    assignments: Some(
                        manual
                            .into_iter()
                            .enumerate()
                            .map(|(p, r)| (p as i32, r))
                            .collect(),
                    ),
                    configs: BTreeMap::from([("retention.ms".to_string(), "1".to_string())]),
                },
            }],
            validate_only: false,
        },
        Op::Delete { name } => ControllerRequest::DeleteTopics { names: vec![name] },
        Op::Grow { name, total } => ControllerRequest::CreatePartitions {
            topics: vec![NewPartitions {
                name,
                total,
                assignments: None,
            }],
            validate_only: false,
        },
        Op::Configure { name, value } => ControllerRequest::AlterConfigs {
            changes: vec![(ConfigResource::Topic(name), "segment.ms".into(), value)],
            validate_only: false,
        },
        Op::ProducerIds { broker_id, stale } => ControllerRequest::AllocateProducerIds {
            broker_id,
            broker_epoch: epoch_of(broker_id, stale),
        },
        Op::Unclean { name, value } => ControllerRequest::AlterConfigs {
            changes: vec![(
                name.map_or(ConfigResource::Broker(None), ConfigResource::Topic),
                UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                value.map(|v| v.to_string()),
            )],
            validate_only: false,
        },
        Op::AlterIsr {
            name,
            partition,
            sender,
            isr_mask,
            with_leader,
            stale_leader_epoch,
            stale_partition_epoch,
        } => {
            let topic = sim.image.topic_by_name(&name)?;
            let state = topic.partitions.get(&partition)?;
            let broker_id = sender.unwrap_or(state.leader);
            let mut new_isr: Vec<BrokerId> = state
                .replicas
                .iter()
                .enumerate()
                .filter(|(i, _)| isr_mask & (1 << i) != 0)
                .map(|(_, r)| *r)
                .collect();
            if with_leader && state.leader != NO_LEADER && !new_isr.contains(&state.leader) {
                new_isr.push(state.leader);
            }
            ControllerRequest::AlterPartition {
                broker_id,
                broker_epoch: epoch_of(broker_id, false),
                topics: vec![AlterPartitionItem {
                    topic_id: topic.topic_id,
                    partition,
                    leader_epoch: state.leader_epoch - i32::from(stale_leader_epoch),
                    partition_epoch: state.partition_epoch - i32::from(stale_partition_epoch),
                    new_isr,
                }],
            }
        }
        Op::Elect { unclean, target } => ControllerRequest::ElectLeaders {
            election_type: if unclean {
                election_type::UNCLEAN
            } else {
                election_type::PREFERRED
            },
            partitions: target.map(|(topic, partition)| {
                vec![TopicPartitions {
                    topic,
                    partitions: vec![partition],
                }]
            }),
        },
        Op::Reassign {
            name,
            partition,
            target,
        } => ControllerRequest::AlterPartitionReassignments {
            topics: vec![crate::controller::ReassignTopic {
                name,
                partitions: vec![(partition, target)],
            }],
            allow_replication_factor_change: true,
        },
        Op::Advance { .. } | Op::Tick | Op::Failover | Op::RestoreSnapshot => return None,
    })
}

/// Whether `topic` allows unclean elections, read from the configs
/// directly rather than through the controller's own lookup, so that a bug
/// there shows.
fn unclean_allowed(image: &MetadataImage, topic: &str) -> bool {
    let key = UNCLEAN_LEADER_ELECTION_ENABLE;
    let topic_value = image
        .configs_of(&ConfigResource::Topic(topic.to_string()))
        .and_then(|c| c.get(key));
    let default_value = image
        .configs_of(&ConfigResource::Broker(None))
        .and_then(|c| c.get(key));
    topic_value.or(default_value).is_some_and(|v| v == "true")
}

/// The leadership and ISR invariants of the controller's module doc, plus
/// the image's own. `before` is the image the decision was made on;
/// `unclean_request`: the decision was an unclean ElectLeaders.
fn check_leadership(
    before: &MetadataImage,
    image: &MetadataImage,
    unclean_request: bool,
    epochs: &mut BTreeMap<(TopicId, i32), (i32, i32)>,
) -> Result<(), String> {
    image.check_consistent()?;
    for p in image.partitions() {
        let (topic, index, state) = (&p.topic.name, p.partition, p.state);
        if state.leader != NO_LEADER && !image.is_live(state.leader) {
            return Err(format!(
                "{topic}-{index} is led by {}, which is not live",
                state.leader
            ));
        }
        if state.leader == NO_LEADER && state.isr.iter().any(|r| image.is_live(*r)) {
            return Err(format!(
                "{topic}-{index} has no leader but a live ISR member: {:?}",
                state.isr
            ));
        }
        if state.isr.is_empty() {
            return Err(format!("{topic}-{index} has an empty ISR"));
        }
        if state.isr.len() > 1 && state.isr.iter().any(|r| !image.is_live(*r)) {
            return Err(format!(
                "{topic}-{index} keeps a fenced broker in its ISR {:?}",
                state.isr
            ));
        }
        let previous = before.partition(&p.topic.topic_id, index);
        if let Some(previous) = previous
            && state.leader != NO_LEADER
            && state.leader != previous.leader
            && !previous.isr.contains(&state.leader)
            && !(unclean_request || unclean_allowed(before, topic))
        {
            return Err(format!(
                "{topic}-{index} elected {} from outside its ISR {:?} without an unclean election",
                state.leader, previous.isr
            ));
        }
        let now = (state.leader_epoch, state.partition_epoch);
        if let Some(before) = epochs.insert((p.topic.topic_id, index), now)
            && (now.0 < before.0 || now.1 < before.1)
        {
            return Err(format!(
                "{topic}-{index} epochs went from {before:?} to {now:?}"
            ));
        }
    }
    Ok(())
}

fn controller_keeps_its_invariants(ops: &[Op]) -> Result<(), TestCaseError> {
    let ids = Arc::new(AtomicU64::new(1));
    let mut sim = Sim::new();
    sim.controller = Controller::new(config()).with_id_source(shared_ids(&ids));
    // Three live brokers to start from, so that replicated topics exist
    // early; ids 3 and 4 start unregistered.
    for broker_id in 0..3 {
        sim.add_broker(broker_id, None);
    }
    let mut epochs = BTreeMap::new();
    for op in ops {
        let before = sim.image.clone();
        match op {
            Op::Advance { ms } => sim.now_ms += ms,
            Op::Tick => {
                let records = sim.controller.tick(&sim.image, sim.now_ms);
                sim.commit(&records).map_err(TestCaseError::fail)?;
            }
            Op::Failover => {
                sim.controller = Controller::new(config()).with_id_source(shared_ids(&ids));
            }
            Op::RestoreSnapshot => {
                sim.image = MetadataImage::from_snapshot(&sim.image.to_snapshot())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            _ => {
                let Some(request) = request_for(&sim, op) else {
                    continue;
                };
                if let Ok(decision) = sim.controller.handle(&sim.image, sim.now_ms, &request) {
                    if let crate::controller::ControllerResponse::Reassignments(results) =
                        &decision.response
                        && results[0].partitions[0].error_code != 0
                        && !decision.records.is_empty()
                    {
                        return Err(TestCaseError::fail(format!(
                            "{op:?} was refused but wrote {:?}",
                            decision.records
                        )));
                    }
                    sim.commit(&decision.records).map_err(|e| {
                        TestCaseError::fail(format!(
                            "{op:?} wrote a record that does not apply: {e}"
                        ))
                    })?;
                }
            }
        }
        let unclean_request = matches!(op, Op::Elect { unclean: true, .. });
        check_leadership(&before, &sim.image, unclean_request, &mut epochs)
            .map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
    }
    Ok(())
}

/// Topic ids that never repeat across failovers, as random ones would not.
fn shared_ids(counter: &Arc<AtomicU64>) -> impl FnMut() -> TopicId + Send + 'static {
    let counter = Arc::clone(counter);
    move || {
        let mut id = [0x5a; 16];
        id[..8].copy_from_slice(&counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        id
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..80)
}

proptest! {
    #![proptest_config(Config { cases: 2048, ..Config::default() })]

    #[test]
    fn snapshots_taken_anywhere_give_the_image_of_plain_replay(steps in steps()) {
        replay_matches_snapshot_and_restore(&steps)?;
    }

    #[test]
    fn the_controllers_records_always_apply_and_keep_leaders_live_and_in_the_isr(ops in ops()) {
        controller_keeps_its_invariants(&ops)?;
    }
}

/// Runs a property with a bug planted and expects it to be caught.
fn caught_with<S: Strategy>(
    bug: Bug,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> String
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = planted::with(bug, || runner.run(&strategy, property));
    match outcome {
        Err(TestError::Fail(why, _)) => why.to_string(),
        other => panic!("the planted bug {bug:?} went unnoticed: {other:?}"),
    }
}

#[test]
fn the_replay_property_catches_a_snapshot_that_forgets_producer_ids() {
    let why = caught_with(Bug::SnapshotForgetsProducerIds, 512, steps(), |steps| {
        replay_matches_snapshot_and_restore(&steps)
    });
    assert!(why.contains("next_producer_id"), "{why}");
}

#[test]
fn the_controller_property_catches_unclean_elections_the_config_did_not_allow() {
    // It takes a partition whose ISR lost a replica that then came back,
    // and then its leader gone: rarer than the other bugs, so more cases.
    let why = caught_with(Bug::UncleanWithoutConfig, 8192, ops(), |ops| {
        controller_keeps_its_invariants(&ops)
    });
    assert!(why.contains("without an unclean election"), "{why}");
}

#[test]
fn the_controller_property_catches_an_isr_shrunk_to_nothing() {
    let why = caught_with(Bug::ShrinkIsrToEmpty, 512, ops(), |ops| {
        controller_keeps_its_invariants(&ops)
    });
    assert!(why.contains("empty ISR"), "{why}");
}

#[test]
fn the_controller_property_catches_an_election_that_ignores_fencing() {
    let why = caught_with(Bug::ElectFencedLeaders, 512, ops(), |ops| {
        controller_keeps_its_invariants(&ops)
    });
    assert!(
        why.contains("not live") || why.contains("live ISR member"),
        "{why}"
    );
}
