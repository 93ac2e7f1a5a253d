//! Leader election and ISR upkeep, as pure functions of the image and the
//! set of brokers that will be live once a decision is applied (KRaft's
//! `PartitionChangeBuilder` and `generateLeaderAndIsrUpdates`, without
//! eligible leader replicas, KIP-966).
//!
//! What [`partition_changes`] keeps true once its records are applied, for
//! every partition it got to:
//! - a broker that is not live is in no ISR, unless it is the ISR's last
//!   member: an ISR is never emptied, so the last replica known to hold
//!   every committed record stays named (and leads again when it returns);
//! - the leader is a live ISR member; a leader that is not gives way to the
//!   first live ISR member in replica order, else to `NO_LEADER`;
//! - with `unclean.leader.election.enable` a partition with no live ISR
//!   member is led by its first live replica, whose ISR is then itself alone.
//!
//! It writes at most one `PartitionChange` per partition, computed from the
//! image's state of that partition, so its records stay right when applied
//! in order, and it stops after `records_max` of them: the caller learns
//! whether it got through every partition ([`Changes::complete`]).

use std::collections::BTreeSet;

use crate::image::{MetadataImage, PartitionState};
use crate::records::{BrokerId, ConfigResource, MetadataRecord, NO_LEADER, TopicId};

/// Kafka's topic (and cluster-default) config that allows electing a
/// replica outside the ISR.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// How a partition's leader is chosen when it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Election {
    /// Move leadership to the first replica when it is a live ISR member,
    /// even if the current leader is fine (preferred-leader election).
    pub preferred: bool,
    /// With no live ISR member, elect the first live replica anyway.
    ///
    /// **This may lose acknowledged records**: the new leader may lack
    /// records that the old ISR had acknowledged (acks=all), and the
    /// replicas that had them truncate to the new leader's log once they
    /// return. Kafka's `unclean.leader.election.enable` trades exactly this
    /// for availability; it is off unless a topic or the cluster default
    /// turns it on ([`unclean_election_enabled`]).
    pub unclean: bool,
}

impl Election {
    /// Keep every partition led from its ISR; nothing else.
    pub const ONLINE: Election = Election {
        preferred: false,
        unclean: false,
    };
}

/// One partition's leader and ISR after an election, when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// `Some` when the leader changes (a new leader epoch).
    pub leader: Option<BrokerId>,
    /// `Some` when the ISR changes.
    pub isr: Option<Vec<BrokerId>>,
    /// The leader comes from outside the ISR (an unclean election).
    pub unclean: bool,
}

impl Elected {
    pub fn record(self, topic_id: TopicId, partition: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader: self.leader,
            isr: self.isr,
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        }
    }
}

/// Whether `topic` may elect a leader from outside its ISR: its own
/// `unclean.leader.election.enable`, else the cluster default set on
/// `ConfigResource::Broker(None)`, else false (Kafka's default). As Kafka's
/// `Boolean.parseBoolean`, only "true" in any case turns it on.
pub fn unclean_election_enabled(image: &MetadataImage, topic: &str) -> bool {
    #[cfg(test)]
    if crate::planted::is(crate::planted::Bug::UncleanWithoutConfig) {
        return true;
    }
    let value = image
        .configs_of(&ConfigResource::Topic(topic.to_string()))
        .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION_ENABLE))
        .or_else(|| {
            image
                .configs_of(&ConfigResource::Broker(None))
                .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION_ENABLE))
        });
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What `state` becomes when exactly the brokers in `live` are live, or
/// `None` when it stays as it is.
pub fn elect(
    state: &PartitionState,
    live: &BTreeSet<BrokerId>,
    election: Election,
) -> Option<Elected> {
    let mut isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| live.contains(r))
        .collect();
    if isr.is_empty() && !state.isr.is_empty() && !planted_empty_isr() {
        // The last member stays (KRaft without ELR does the same): the
        // leader if it was one, having had every committed record, else the
        // first ISR member in replica order.
        let keep = if state.isr.contains(&state.leader) {
            state.leader
        } else {
            state
                .replicas
                .iter()
                .copied()
                .find(|r| state.isr.contains(r))
                .unwrap_or(state.isr[0])
        };
        isr = vec![keep];
    }
    let valid = |isr: &[BrokerId], r: BrokerId| isr.contains(&r) && is_electable(live, r);
    let preferred = state.replicas.first().copied().unwrap_or(NO_LEADER);
    let mut unclean = false;
    let mut leader = if election.preferred && valid(&isr, preferred) {
        preferred
    } else if state.leader != NO_LEADER && valid(&isr, state.leader) {
        state.leader
    } else {
        state
            .replicas
            .iter()
            .copied()
            .find(|r| valid(&isr, *r))
            .unwrap_or(NO_LEADER)
    };
    if leader == NO_LEADER
        && election.unclean
        && let Some(first_live) = state.replicas.iter().copied().find(|r| live.contains(r))
    {
        leader = first_live;
        isr = vec![first_live];
        unclean = true;
    }
    let leader_change = (leader != state.leader).then_some(leader);
    let isr_change = (isr != state.isr).then_some(isr);
    if leader_change.is_none() && isr_change.is_none() {
        return None;
    }
    Some(Elected {
        leader: leader_change,
        isr: isr_change,
        unclean,
    })
}

/// Records from one pass over the image, and whether the pass reached the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub records: Vec<MetadataRecord>,
    /// False when `records_max` stopped the pass: some partitions were not
    /// looked at, and the caller should come back for them.
    pub complete: bool,
}

/// Settles every partition for the brokers in `live` (see the module doc),
/// each topic with its own unclean-election setting; with `preferred`, also
/// moves leadership to preferred replicas that are live ISR members. At
/// most `records_max` records; partitions in `skip` are left alone (a
/// caller's earlier pass already changed them in this decision).
pub fn partition_changes(
    image: &MetadataImage,
    live: &BTreeSet<BrokerId>,
    preferred: bool,
    records_max: usize,
    skip: &BTreeSet<(TopicId, i32)>,
) -> Changes {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        let election = Election {
            preferred,
            unclean: unclean_election_enabled(image, &topic.name),
        };
        for (partition, state) in &topic.partitions {
            if skip.contains(&(topic.topic_id, *partition)) {
                continue;
            }
            if let Some(elected) = elect(state, live, election) {
                if records.len() >= records_max {
                    return Changes {
                        records,
                        complete: false,
                    };
                }
                records.push(elected.record(topic.topic_id, *partition));
            }
        }
    }
    Changes {
        records,
        complete: true,
    }
}

/// The partitions a list of records changes.
pub fn changed_partitions(records: &[MetadataRecord]) -> BTreeSet<(TopicId, i32)> {
    records
        .iter()
        .filter_map(|r| match r {
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                ..
            } => Some((*topic_id, *partition)),
            _ => None,
        })
        .collect()
}

fn is_electable(live: &BTreeSet<BrokerId>, broker_id: BrokerId) -> bool {
    #[cfg(test)]
    if crate::planted::is(crate::planted::Bug::ElectFencedLeaders) {
        return true;
    }
    live.contains(&broker_id)
}

fn planted_empty_isr() -> bool {
    #[cfg(test)]
    if crate::planted::is(crate::planted::Bug::ShrinkIsrToEmpty) {
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 7,
            ..PartitionState::default()
        }
    }

    fn live(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
        ids.iter().copied().collect()
    }

    const UNCLEAN: Election = Election {
        preferred: false,
        unclean: true,
    };
    const PREFERRED: Election = Election {
        preferred: true,
        unclean: false,
    };

    #[test]
    fn a_fenced_follower_leaves_the_isr_and_the_leader_stays() {
        let elected = elect(
            &state(&[1, 2, 3], &[1, 2, 3], 1),
            &live(&[1, 3]),
            Election::ONLINE,
        );
        assert_eq!(
            elected,
            Some(Elected {
                leader: None,
                isr: Some(vec![1, 3]),
                unclean: false
            })
        );
    }

    #[test]
    fn a_fenced_leader_leaves_the_isr_and_the_next_live_member_in_replica_order_leads() {
        // ISR order is 3, 2 but replica order puts 2 first.
        let elected = elect(
            &state(&[1, 2, 3], &[1, 3, 2], 1),
            &live(&[2, 3]),
            Election::ONLINE,
        );
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(2),
                isr: Some(vec![3, 2]),
                unclean: false
            })
        );
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_goes_offline() {
        let elected = elect(&state(&[1, 2], &[2], 2), &live(&[1]), Election::ONLINE);
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(NO_LEADER),
                isr: None,
                unclean: false
            })
        );
        // When every member goes at once, the leader is the one kept.
        let elected = elect(
            &state(&[1, 2, 3], &[1, 2], 2),
            &live(&[3]),
            Election::ONLINE,
        );
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(NO_LEADER),
                isr: Some(vec![2]),
                unclean: false
            })
        );
        // Already offline and down to one: nothing to do.
        assert_eq!(
            elect(
                &state(&[1, 2], &[2], NO_LEADER),
                &live(&[1]),
                Election::ONLINE
            ),
            None
        );
    }

    #[test]
    fn the_kept_member_leads_again_when_it_returns() {
        let elected = elect(
            &state(&[1, 2], &[2], NO_LEADER),
            &live(&[1, 2]),
            Election::ONLINE,
        );
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(2),
                isr: None,
                unclean: false
            })
        );
    }

    #[test]
    fn an_unclean_election_takes_the_first_live_replica_and_makes_it_the_whole_isr() {
        let elected = elect(&state(&[3, 1, 2], &[2], NO_LEADER), &live(&[1, 3]), UNCLEAN);
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(3),
                isr: Some(vec![3]),
                unclean: true
            })
        );
        // A live ISR member is always preferred over an unclean choice.
        let elected = elect(&state(&[3, 1, 2], &[2, 1], 2), &live(&[1, 3]), UNCLEAN);
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(1),
                isr: Some(vec![1]),
                unclean: false
            })
        );
        // Nobody live: nothing to elect.
        let elected = elect(&state(&[1, 2], &[2], 2), &live(&[]), UNCLEAN);
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(NO_LEADER),
                isr: None,
                unclean: false
            })
        );
    }

    #[test]
    fn a_preferred_election_moves_leadership_only_to_a_live_isr_member() {
        let elected = elect(&state(&[1, 2], &[2, 1], 2), &live(&[1, 2]), PREFERRED);
        assert_eq!(
            elected,
            Some(Elected {
                leader: Some(1),
                isr: None,
                unclean: false
            })
        );
        // Not in the ISR (it has not caught up yet): the leader stays.
        assert_eq!(
            elect(&state(&[1, 2], &[2], 2), &live(&[1, 2]), PREFERRED),
            None
        );
        // Not live: the leader stays.
        assert_eq!(
            elect(&state(&[1, 2], &[2, 1], 2), &live(&[2]), PREFERRED),
            Some(Elected {
                leader: None,
                isr: Some(vec![2]),
                unclean: false
            })
        );
    }

    #[test]
    fn unclean_election_is_off_unless_the_topic_or_the_cluster_default_says_true() {
        let mut image = MetadataImage::new();
        let set = |resource: ConfigResource, value: &str| MetadataRecord::Config {
            resource,
            name: UNCLEAN_LEADER_ELECTION_ENABLE.into(),
            value: Some(value.into()),
        };
        image
            .apply(
                1,
                &MetadataRecord::Topic {
                    name: "t".into(),
                    topic_id: [1; 16],
                },
            )
            .unwrap();
        assert!(!unclean_election_enabled(&image, "t"));
        image
            .apply(2, &set(ConfigResource::Broker(None), "TRUE"))
            .unwrap();
        assert!(unclean_election_enabled(&image, "t"));
        image
            .apply(3, &set(ConfigResource::Topic("t".into()), "false"))
            .unwrap();
        assert!(
            !unclean_election_enabled(&image, "t"),
            "the topic's own wins"
        );
        image
            .apply(4, &set(ConfigResource::Broker(Some(1)), "true"))
            .unwrap();
        image
            .apply(5, &set(ConfigResource::Broker(None), "yes"))
            .unwrap();
        assert!(
            !unclean_election_enabled(&image, "u"),
            "only \"true\" counts"
        );
    }
}
