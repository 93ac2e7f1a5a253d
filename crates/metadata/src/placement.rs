//! Where new replicas go: spread evenly over the live brokers, leaders
//! striped round-robin, and no two replicas of a partition in one rack while
//! there are racks left (KRaft's `StripedReplicaPlacer` has the same goals).
//!
//! The brokers are laid out in one list that alternates racks (first broker
//! of each rack, then the second of each, ...). Partition `g` (counted from
//! `start`) is led by entry `g mod n`; its followers are taken after the
//! leader in list order, first from racks the partition does not use yet,
//! then from any broker it does not use yet. Each round of `n` partitions
//! shifts the followers one step further, so that the partitions a broker
//! leads do not all share the same followers (if it fails, its load spreads).
//! Brokers without a rack count as one rack of their own.

use std::collections::{BTreeMap, BTreeSet};

use crate::records::BrokerId;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error(
        "replication factor {replication_factor} is more than the {live_brokers} live (unfenced) broker(s) in the cluster"
    )]
    NotEnoughBrokers {
        replication_factor: usize,
        live_brokers: usize,
    },
}

/// Places `partitions` partitions of `replication_factor` replicas over
/// `brokers` (id and rack, any order), striping from `start`. The first
/// replica of each is its preferred leader.
pub fn place_replicas(
    brokers: &[(BrokerId, Option<String>)],
    start: usize,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let list = rack_alternating(brokers);
    let n = list.len();
    if replication_factor > n || n == 0 {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            live_brokers: n,
        });
    }
    let mut placed = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let g = start.wrapping_add(p);
        let leader = g % n;
        let followers = n - 1;
        let shift = if followers == 0 {
            0
        } else {
            (g / n) % followers
        };
        // Every entry but the leader, starting `shift` steps after it.
        let after_leader = (0..followers).map(|k| (leader + 1 + (shift + k) % followers) % n);
        let mut chosen = vec![leader];
        let mut racks_used = BTreeSet::from([list[leader].1]);
        for at in after_leader.clone() {
            if chosen.len() == replication_factor {
                break;
            }
            if racks_used.insert(list[at].1) {
                chosen.push(at);
            }
        }
        for at in after_leader {
            if chosen.len() == replication_factor {
                break;
            }
            if !chosen.contains(&at) {
                chosen.push(at);
            }
        }
        placed.push(chosen.into_iter().map(|at| list[at].0).collect());
    }
    Ok(placed)
}

/// The brokers in one list whose neighbours are in different racks while
/// racks last: racks in name order, brokers in id order within each.
fn rack_alternating(brokers: &[(BrokerId, Option<String>)]) -> Vec<(BrokerId, Option<&str>)> {
    let mut racks: BTreeMap<Option<&str>, BTreeSet<BrokerId>> = BTreeMap::new();
    for (id, rack) in brokers {
        racks.entry(rack.as_deref()).or_default().insert(*id);
    }
    let racks: Vec<(Option<&str>, Vec<BrokerId>)> = racks
        .into_iter()
        .map(|(rack, ids)| (rack, ids.into_iter().collect()))
        .collect();
    let deepest = racks.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0);
    let mut list = Vec::with_capacity(brokers.len());
    for depth in 0..deepest {
        for (rack, ids) in &racks {
            if let Some(id) = ids.get(depth) {
                list.push((*id, *rack));
            }
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(BrokerId, Option<&str>)]) -> Vec<(BrokerId, Option<String>)> {
        spec.iter()
            .map(|(id, rack)| (*id, rack.map(str::to_string)))
            .collect()
    }

    fn counts(placed: &[Vec<BrokerId>], leaders_only: bool) -> BTreeMap<BrokerId, usize> {
        let mut counts = BTreeMap::new();
        for replicas in placed {
            let take = if leaders_only { 1 } else { replicas.len() };
            for id in &replicas[..take] {
                *counts.entry(*id).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn replicas_and_leaders_spread_evenly_without_racks() {
        let live = brokers(&[
            (1, None),
            (2, None),
            (3, None),
            (4, None),
            (5, None),
            (6, None),
        ]);
        for start in [0, 5, 1234567] {
            let placed = place_replicas(&live, start, 60, 3).unwrap();
            for replicas in &placed {
                let distinct: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(distinct.len(), 3, "{replicas:?}");
            }
            let leaders = counts(&placed, true);
            assert!(leaders.values().all(|c| *c == 10), "leaders {leaders:?}");
            let all = counts(&placed, false);
            let (min, max) = (all.values().min().unwrap(), all.values().max().unwrap());
            assert_eq!(all.len(), 6);
            assert!(max - min <= 2, "replicas {all:?}");
        }
    }

    #[test]
    fn a_partitions_replicas_use_distinct_racks_while_racks_remain() {
        let three_racks = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        for replicas in place_replicas(&three_racks, 7, 30, 3).unwrap() {
            let racks: BTreeSet<_> = replicas.iter().map(|r| (r - 1) / 2).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        // Two racks, three replicas: both racks used, then any broker.
        let two_racks = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        for replicas in place_replicas(&two_racks, 0, 12, 3).unwrap() {
            let in_a = replicas.iter().filter(|r| **r <= 2).count();
            assert!(in_a == 1 || in_a == 2, "{replicas:?}");
        }
        // A lone broker in its own rack gets a replica of every partition at RF 2.
        let uneven = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for replicas in place_replicas(&uneven, 3, 12, 2).unwrap() {
            assert!(replicas.contains(&4), "{replicas:?}");
        }
    }

    #[test]
    fn more_replicas_than_live_brokers_is_refused_naming_both_numbers() {
        let live = brokers(&[(1, None), (2, None)]);
        let error = place_replicas(&live, 0, 1, 3).unwrap_err();
        assert_eq!(
            error,
            PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                live_brokers: 2
            }
        );
        let message = error.to_string();
        assert!(message.contains('3') && message.contains('2'), "{message}");
        assert!(place_replicas(&[], 0, 1, 1).is_err());
    }

    #[test]
    fn the_start_offset_moves_the_first_leader() {
        let live = brokers(&[(1, None), (2, None), (3, None)]);
        let firsts: BTreeSet<BrokerId> = (0..3)
            .map(|s| place_replicas(&live, s, 1, 1).unwrap()[0][0])
            .collect();
        assert_eq!(firsts.len(), 3);
    }
}
