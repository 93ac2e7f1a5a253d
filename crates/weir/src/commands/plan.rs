//! The rebalance planner, sans I/O: from the brokers (with racks), every
//! partition's replicas and sizes, and the brokers to drain, which partitions
//! to move where. `weir cluster rebalance|decommission|recommission` feed it
//! what Metadata and DescribeLogDirs say and carry its plan out with
//! AlterPartitionReassignments.
//!
//! What a plan guarantees (unit tests below):
//! - no replica stays on a drained broker, and the replication factor of
//!   every partition is kept; if too few brokers are left for a partition's
//!   replication factor the plan is refused;
//! - replicas per broker differ by at most 1 across the brokers left;
//! - a partition's replicas are on distinct racks when the racks allow it
//!   (a move never puts a second replica on a rack that already has one,
//!   unless every candidate would);
//! - preferred leaders (first replicas) per broker differ by at most 1, when
//!   the replica sets allow it: reorderings move no data;
//! - it moves as few replicas as it can: a replica moves only off a drained
//!   broker or off a broker above the even share, and then the smallest
//!   partition that can go first.
//!
//! The work is bounded: at most one move per replica for the evening pass
//! (each move lowers the spread), and leader ordering is one pass.

use std::collections::{BTreeMap, BTreeSet};

/// One partition as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLoad {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    /// Its size on the leader (what each new replica copies).
    pub size_bytes: u64,
}

/// A partition whose replica list changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
    /// Bytes copied: the size times the number of new replicas.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
    /// Replicas per broker after the plan (drained brokers included, at 0).
    pub replicas_per_broker: BTreeMap<i32, usize>,
    /// Preferred leaders per broker after the plan.
    pub leaders_per_broker: BTreeMap<i32, usize>,
}

impl Plan {
    pub fn bytes_to_move(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "{topic}-{partition} has {replication_factor} replicas but only {brokers} brokers would be left: it would be short of replicas"
    )]
    TooFewBrokers {
        topic: String,
        partition: i32,
        replication_factor: usize,
        brokers: usize,
    },
    #[error("no broker is left to hold replicas")]
    NoBrokers,
}

/// Plans the moves. `brokers`: every live broker with its rack; `drain`:
/// those that must end up with no replica (decommission). Replicas on
/// brokers that are not in `brokers` at all (gone for good) are moved too.
pub fn plan(
    brokers: &BTreeMap<i32, Option<String>>,
    partitions: &[PartitionLoad],
    drain: &BTreeSet<i32>,
) -> Result<Plan, PlanError> {
    let keep: Vec<i32> = brokers
        .keys()
        .copied()
        .filter(|b| !drain.contains(b))
        .collect();
    if keep.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    for p in partitions {
        if p.replicas.len() > keep.len() {
            return Err(PlanError::TooFewBrokers {
                topic: p.topic.clone(),
                partition: p.partition,
                replication_factor: p.replicas.len(),
                brokers: keep.len(),
            });
        }
    }
    let rack_of = |b: i32| brokers.get(&b).cloned().flatten();
    let mut assignment: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    let mut count: BTreeMap<i32, usize> = keep.iter().map(|b| (*b, 0)).collect();
    for replicas in &assignment {
        for r in replicas {
            if let Some(c) = count.get_mut(r) {
                *c += 1;
            }
        }
    }
    // Where a replica may go for partition `i`: a kept broker not holding
    // it, fewest replicas first, a rack the partition lacks first.
    let best_target = |count: &BTreeMap<i32, usize>, replicas: &[i32], leaving: i32| {
        let racks: BTreeSet<Option<String>> = replicas
            .iter()
            .filter(|r| **r != leaving)
            .map(|r| rack_of(*r))
            .collect();
        keep.iter()
            .copied()
            .filter(|b| !replicas.contains(b))
            .min_by_key(|b| {
                let rack = rack_of(*b);
                let rack_taken = rack.is_some() && racks.contains(&rack);
                (rack_taken, count[b], *b)
            })
    };
    // 1. Replicas on drained or unknown brokers go to the emptiest broker.
    for replicas in assignment.iter_mut() {
        for slot in 0..replicas.len() {
            let r = replicas[slot];
            if count.contains_key(&r) {
                continue;
            }
            let target = best_target(&count, replicas, r).expect("enough brokers, checked above");
            replicas[slot] = target;
            *count.get_mut(&target).expect("a kept broker") += 1;
        }
    }
    // 2. Even out: while the fullest broker has 2 more than the emptiest,
    // move the smallest partition that can go from the one to the other.
    let moves_max: usize = assignment.iter().map(Vec::len).sum::<usize>() + 1;
    for _ in 0..moves_max {
        let (&max_b, &max_c) = count
            .iter()
            .max_by_key(|(b, c)| (**c, std::cmp::Reverse(**b)))
            .expect("kept brokers");
        let (&min_b, &min_c) = count
            .iter()
            .min_by_key(|(b, c)| (**c, **b))
            .expect("kept brokers");
        if max_c <= min_c + 1 {
            break;
        }
        let racks_ok = |replicas: &[i32]| {
            let rack = rack_of(min_b);
            rack.is_none() || !replicas.iter().any(|r| *r != max_b && rack_of(*r) == rack)
        };
        let candidate = (0..assignment.len())
            .filter(|i| assignment[*i].contains(&max_b) && !assignment[*i].contains(&min_b))
            .min_by_key(|i| (!racks_ok(&assignment[*i]), partitions[*i].size_bytes, *i));
        let Some(i) = candidate else { break };
        for r in assignment[i].iter_mut() {
            if *r == max_b {
                *r = min_b;
            }
        }
        *count.get_mut(&max_b).expect("kept") -= 1;
        *count.get_mut(&min_b).expect("kept") += 1;
    }
    // 3. Preferred leaders: each partition, in order, is led first by its
    // replica with the fewest preferred leaderships so far (its current
    // first replica on a tie), so no data moves for this.
    let mut leaders: BTreeMap<i32, usize> = keep.iter().map(|b| (*b, 0)).collect();
    for replicas in assignment.iter_mut() {
        let Some(pos) = (0..replicas.len()).min_by_key(|j| (leaders[&replicas[*j]], *j)) else {
            continue;
        };
        replicas.swap(0, pos);
        *leaders.get_mut(&replicas[0]).expect("kept") += 1;
    }
    let moves = partitions
        .iter()
        .zip(&assignment)
        .filter(|(p, to)| p.replicas != **to)
        .map(|(p, to)| {
            let new = to.iter().filter(|r| !p.replicas.contains(r)).count() as u64;
            Move {
                topic: p.topic.clone(),
                partition: p.partition,
                from: p.replicas.clone(),
                to: to.clone(),
                bytes: p.size_bytes * new,
            }
        })
        .collect();
    let mut replicas_per_broker = count;
    let mut leaders_per_broker = leaders;
    for b in drain {
        if brokers.contains_key(b) {
            replicas_per_broker.insert(*b, 0);
            leaders_per_broker.insert(*b, 0);
        }
    }
    Ok(Plan {
        moves,
        replicas_per_broker,
        leaders_per_broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[(i32, Option<&str>)]) -> BTreeMap<i32, Option<String>> {
        ids.iter()
            .map(|(b, r)| (*b, r.map(str::to_string)))
            .collect()
    }

    fn load(assignments: &[&[i32]]) -> Vec<PartitionLoad> {
        assignments
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionLoad {
                topic: "t".into(),
                partition: i as i32,
                replicas: r.to_vec(),
                size_bytes: 100 + i as u64,
            })
            .collect()
    }

    fn after(partitions: &[PartitionLoad], plan: &Plan) -> Vec<Vec<i32>> {
        partitions
            .iter()
            .map(|p| {
                plan.moves
                    .iter()
                    .find(|m| m.partition == p.partition)
                    .map_or(p.replicas.clone(), |m| m.to.clone())
            })
            .collect()
    }

    fn spread(counts: &BTreeMap<i32, usize>, skip: &BTreeSet<i32>) -> usize {
        let kept: Vec<usize> = counts
            .iter()
            .filter(|(b, _)| !skip.contains(b))
            .map(|(_, c)| *c)
            .collect();
        kept.iter().max().unwrap() - kept.iter().min().unwrap()
    }

    #[test]
    fn a_new_empty_broker_gets_its_share_and_leaders_even_out() {
        let b = brokers(&[(1, None), (2, None), (3, None), (4, None)]);
        let parts = load(&[
            &[1, 2, 3],
            &[2, 3, 1],
            &[3, 1, 2],
            &[1, 2, 3],
            &[2, 3, 1],
            &[3, 1, 2],
        ]);
        let plan = plan(&b, &parts, &BTreeSet::new()).unwrap();
        assert!(spread(&plan.replicas_per_broker, &BTreeSet::new()) <= 1);
        assert!(spread(&plan.leaders_per_broker, &BTreeSet::new()) <= 1);
        assert!(plan.replicas_per_broker[&4] >= 4);
        for replicas in after(&parts, &plan) {
            assert_eq!(replicas.len(), 3);
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        assert!(plan.bytes_to_move() > 0);
    }

    #[test]
    fn a_balanced_cluster_needs_no_move() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let parts = load(&[&[1, 2], &[2, 3], &[3, 1]]);
        let plan = plan(&b, &parts, &BTreeSet::new()).unwrap();
        assert!(plan.moves.is_empty(), "{:?}", plan.moves);
    }

    #[test]
    fn draining_a_broker_moves_every_replica_off_it_evenly() {
        let b = brokers(&[(1, None), (2, None), (3, None), (4, None)]);
        let parts = load(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1], &[4, 1, 2], &[1, 3, 4]]);
        let drain = BTreeSet::from([1]);
        let plan = plan(&b, &parts, &drain).unwrap();
        assert_eq!(plan.replicas_per_broker[&1], 0);
        for replicas in after(&parts, &plan) {
            assert!(!replicas.contains(&1));
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        assert!(spread(&plan.replicas_per_broker, &drain) <= 1);
    }

    #[test]
    fn draining_below_the_replication_factor_is_refused() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let parts = load(&[&[1, 2, 3]]);
        let err = plan(&b, &parts, &BTreeSet::from([3])).unwrap_err();
        assert!(matches!(
            err,
            PlanError::TooFewBrokers {
                replication_factor: 3,
                brokers: 2,
                ..
            }
        ));
    }

    #[test]
    fn moves_keep_replicas_on_distinct_racks() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        // Everything on 1 and 2 (racks a and b); 3 and 4 are new.
        let parts = load(&[&[1, 2], &[2, 1], &[1, 2], &[2, 1]]);
        let plan = plan(&b, &parts, &BTreeSet::new()).unwrap();
        assert!(spread(&plan.replicas_per_broker, &BTreeSet::new()) <= 1);
        for replicas in after(&parts, &plan) {
            let racks: BTreeSet<_> = replicas.iter().map(|r| b[r].clone()).collect();
            assert_eq!(racks.len(), 2, "{replicas:?} shares a rack");
        }
    }
}
