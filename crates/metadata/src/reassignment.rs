//! Partition reassignment (KIP-455) as KRaft's controller runs it, sans I/O:
//! pure functions from a partition's state (and the live brokers) to the
//! change to commit. Facts from apache/kafka
//! `metadata/.../controller/ReplicationControlManager.java`
//! (`changePartitionReassignment`, `cancelPartitionReassignment`) and
//! `PartitionReassignmentReplicas` / `PartitionReassignmentRevert`.
//!
//! A reassignment goes through three states, all in the image:
//! 1. started: `replicas` becomes the target followed by the replicas that go
//!    (`removing_replicas`); the target's new members are `adding_replicas`.
//!    New members are replicas now, so their brokers open the log and fetch
//!    from the leader, and the leader adds them to the ISR once caught up
//!    (AlterPartition, as for any follower);
//! 2. complete once every adding replica is in the ISR and the ISR keeps a
//!    live member outside the removing ones ([`completion`], checked by the
//!    controller's tick): `replicas` becomes the target, the removing
//!    replicas leave the ISR, and a leader being removed hands over to the
//!    first live target replica in the ISR (a new leader epoch);
//! 3. the removed replicas' brokers see they no longer host the partition,
//!    stop fetching and delete its log (the broker's reconciler).
//!
//! A new reassignment of a partition that is being reassigned replaces the
//! running one, as in Kafka: it is computed against the current replica
//! list (old target plus removing), so replicas of the old target that the
//! new one drops become removing replicas. A cancellation goes back to the
//! replicas from before (the current ones minus the adding ones).

use std::collections::BTreeSet;

use crate::image::PartitionState;
use crate::records::{BrokerId, MetadataRecord, NO_LEADER, TopicId};

/// One partition's change, as a `PartitionChange` record's optional fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub leader: Option<BrokerId>,
    pub isr: Option<Vec<BrokerId>>,
    pub replicas: Option<Vec<BrokerId>>,
    pub adding_replicas: Option<Vec<BrokerId>>,
    pub removing_replicas: Option<Vec<BrokerId>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }

    pub fn record(self, topic_id: TopicId, partition: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader: self.leader,
            isr: self.isr,
            replicas: self.replicas,
            adding_replicas: self.adding_replicas,
            removing_replicas: self.removing_replicas,
        }
    }

    /// The state after this change, as the image applies it (a named leader
    /// starts a new leader epoch; any change bumps the partition epoch).
    pub fn applied_to(&self, state: &PartitionState) -> PartitionState {
        if self.is_empty() {
            return state.clone();
        }
        PartitionState {
            replicas: self
                .replicas
                .clone()
                .unwrap_or_else(|| state.replicas.clone()),
            isr: self.isr.clone().unwrap_or_else(|| state.isr.clone()),
            leader: self.leader.unwrap_or(state.leader),
            leader_epoch: if self.leader.is_some() {
                state.leader_epoch.saturating_add(1)
            } else {
                state.leader_epoch
            },
            partition_epoch: state.partition_epoch.saturating_add(1),
            adding_replicas: self
                .adding_replicas
                .clone()
                .unwrap_or_else(|| state.adding_replicas.clone()),
            removing_replicas: self
                .removing_replicas
                .clone()
                .unwrap_or_else(|| state.removing_replicas.clone()),
        }
    }

    /// `later` applied after `self`, as one record: `later`'s fields win.
    fn then(self, later: Change) -> Change {
        Change {
            leader: later.leader.or(self.leader),
            isr: later.isr.or(self.isr),
            replicas: later.replicas.or(self.replicas),
            adding_replicas: later.adding_replicas.or(self.adding_replicas),
            removing_replicas: later.removing_replicas.or(self.removing_replicas),
        }
    }
}

/// Starts (or replaces) a reassignment of `state` to `target`, which the
/// caller has validated (non-empty, distinct, registered brokers). If the
/// partition can complete at once (a reordering of in-sync replicas, say),
/// the change completes it too. An empty change: nothing to do.
pub fn start(state: &PartitionState, target: &[BrokerId], live: &BTreeSet<BrokerId>) -> Change {
    let current = &state.replicas;
    let removing: Vec<BrokerId> = current
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    // A target member is adding if it is new, or was moving in a
    // reassignment this one replaces (adding, or removing and out of sync)
    // and is not in the ISR: it must be in sync before the old replicas go.
    let adding: Vec<BrokerId> = target
        .iter()
        .copied()
        .filter(|r| {
            !current.contains(r)
                || state.adding_replicas.contains(r)
                || state.removing_replicas.contains(r)
        })
        .filter(|r| !state.isr.contains(r))
        .collect();
    let mut merged: Vec<BrokerId> = target.to_vec();
    merged.extend(removing.iter().copied());
    let mut change = Change::default();
    if merged != *current {
        change.replicas = Some(merged);
    }
    if adding != state.adding_replicas {
        change.adding_replicas = Some(adding);
    }
    if removing != state.removing_replicas {
        change.removing_replicas = Some(removing);
    }
    if change.is_empty() {
        return change;
    }
    let after = change.applied_to(state);
    match completion(&after, live) {
        Some(done) => change.then(done),
        None => change,
    }
}

/// Why a cancellation can't be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelError {
    /// Nothing to cancel (NO_REASSIGNMENT_IN_PROGRESS).
    NotReassigning,
    /// Going back would leave an ISR of adding replicas only: it would take
    /// an unclean election (Kafka refuses unless the topic allows those;
    /// Weir always refuses, INVALID_REPLICA_ASSIGNMENT).
    Unclean,
}

/// Cancels the running reassignment: the replicas from before it, the ISR
/// without the adding replicas, and a new leader if the leader was adding.
pub fn cancel(state: &PartitionState, live: &BTreeSet<BrokerId>) -> Result<Change, CancelError> {
    if !state.is_reassigning() {
        return Err(CancelError::NotReassigning);
    }
    let replicas = state.original_replicas();
    let isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| !state.adding_replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(CancelError::Unclean);
    }
    let leader_stays = state.leader != NO_LEADER && isr.contains(&state.leader);
    let leader = if leader_stays {
        None
    } else {
        Some(
            replicas
                .iter()
                .copied()
                .find(|r| isr.contains(r) && live.contains(r))
                .unwrap_or(NO_LEADER),
        )
        .filter(|l| *l != state.leader)
    };
    Ok(Change {
        leader,
        isr: (isr != state.isr).then_some(isr),
        replicas: (replicas != state.replicas).then_some(replicas),
        adding_replicas: Some(Vec::new()),
        removing_replicas: Some(Vec::new()),
    })
}

/// The change that completes a running reassignment, once it may: every
/// adding replica is in the ISR, and the ISR without the removing replicas
/// has a live member that can lead. `None` while it must wait (or when no
/// reassignment runs).
pub fn completion(state: &PartitionState, live: &BTreeSet<BrokerId>) -> Option<Change> {
    if !state.is_reassigning() {
        return None;
    }
    if !state.adding_replicas.iter().all(|r| state.isr.contains(r)) {
        return None;
    }
    let target = state.target_replicas();
    let isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| !state.removing_replicas.contains(r))
        .collect();
    let leader_stays =
        state.leader != NO_LEADER && isr.contains(&state.leader) && live.contains(&state.leader);
    let leader = if leader_stays {
        None
    } else {
        // The first live target replica in the new ISR takes over. Without
        // one, wait: completing would leave the partition offline.
        Some(
            target
                .iter()
                .copied()
                .find(|r| isr.contains(r) && live.contains(r))?,
        )
    };
    Some(Change {
        leader,
        isr: (isr != state.isr).then_some(isr),
        replicas: Some(target),
        adding_replicas: Some(Vec::new()),
        removing_replicas: Some(Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
            ..PartitionState::default()
        }
    }

    fn live(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_move_adds_first_then_completes_once_the_new_replicas_are_in_sync() {
        let s = state(&[1, 2, 3], &[1, 2, 3], 1);
        let all = live(&[1, 2, 3, 4]);
        let started = start(&s, &[2, 3, 4], &all).applied_to(&s);
        assert_eq!(started.replicas, vec![2, 3, 4, 1]);
        assert_eq!(started.adding_replicas, vec![4]);
        assert_eq!(started.removing_replicas, vec![1]);
        assert_eq!(started.leader, 1, "the leader stays while 4 catches up");
        assert_eq!(started.target_replicas(), vec![2, 3, 4]);
        assert!(completion(&started, &all).is_none(), "4 is not in sync yet");
        let mut caught_up = started.clone();
        caught_up.isr = vec![1, 2, 3, 4];
        let done = completion(&caught_up, &all).unwrap().applied_to(&caught_up);
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!(done.leader, 2, "the removed leader hands over");
        assert_eq!(done.leader_epoch, caught_up.leader_epoch + 1);
        assert!(!done.is_reassigning());
    }

    #[test]
    fn a_reordering_of_in_sync_replicas_completes_at_once() {
        let s = state(&[1, 2, 3], &[1, 2, 3], 1);
        let done = start(&s, &[3, 2, 1], &live(&[1, 2, 3])).applied_to(&s);
        assert_eq!(done.replicas, vec![3, 2, 1]);
        assert!(!done.is_reassigning());
        assert_eq!(
            done.leader, 1,
            "leadership moves later, by preferred election"
        );
        assert!(start(&done, &[3, 2, 1], &live(&[1, 2, 3])).is_empty());
    }

    #[test]
    fn shrinking_to_in_sync_replicas_completes_at_once_and_moves_the_leader() {
        let s = state(&[1, 2, 3], &[1, 2, 3], 1);
        let done = start(&s, &[2, 3], &live(&[1, 2, 3])).applied_to(&s);
        assert_eq!(done.replicas, vec![2, 3]);
        assert_eq!(done.isr, vec![2, 3]);
        assert_eq!(done.leader, 2);
    }

    #[test]
    fn completion_waits_while_no_live_target_replica_is_in_sync() {
        let s = state(&[1, 2], &[1], 1);
        let started = start(&s, &[2, 3], &live(&[1, 2, 3])).applied_to(&s);
        assert_eq!(started.adding_replicas, vec![3]);
        let mut in_sync = started.clone();
        in_sync.isr = vec![1, 3];
        // 3 is in sync but has gone: nobody could lead.
        assert!(completion(&in_sync, &live(&[1, 2])).is_none());
        let done = completion(&in_sync, &live(&[1, 2, 3]))
            .unwrap()
            .applied_to(&in_sync);
        assert_eq!((done.leader, done.isr.clone()), (3, vec![3]));
    }

    #[test]
    fn a_second_reassignment_replaces_the_first() {
        let s = state(&[1, 2, 3], &[1, 2, 3], 1);
        let all = live(&[1, 2, 3, 4, 5]);
        let first = start(&s, &[1, 2, 4], &all).applied_to(&s);
        assert_eq!(first.replicas, vec![1, 2, 4, 3]);
        let second = start(&first, &[1, 2, 5], &all).applied_to(&first);
        assert_eq!(second.replicas, vec![1, 2, 5, 4, 3]);
        assert_eq!(second.adding_replicas, vec![5]);
        assert_eq!(second.removing_replicas, vec![4, 3]);
        // Back to a target holding the first one's adding replica, never
        // caught up: it still has to.
        let third = start(&second, &[1, 2, 4], &all).applied_to(&second);
        assert_eq!(third.adding_replicas, vec![4]);
        assert_eq!(third.removing_replicas, vec![5, 3]);
    }

    #[test]
    fn cancelling_goes_back_to_the_replicas_from_before() {
        let s = state(&[1, 2, 3], &[1, 2, 3], 1);
        let all = live(&[1, 2, 3, 4]);
        assert_eq!(cancel(&s, &all), Err(CancelError::NotReassigning));
        let started = start(&s, &[4, 2, 3], &all).applied_to(&s);
        let mut caught_up_not_done = started.clone();
        caught_up_not_done.isr = vec![1, 2, 3, 4];
        let back = cancel(&caught_up_not_done, &all)
            .unwrap()
            .applied_to(&caught_up_not_done);
        // As Kafka's revert: the current order without the adding ones.
        assert_eq!(back.replicas, vec![2, 3, 1]);
        assert_eq!(back.isr, vec![1, 2, 3]);
        assert_eq!(back.leader, 1);
        assert!(!back.is_reassigning());
    }

    #[test]
    fn cancelling_when_only_adding_replicas_are_in_sync_is_refused() {
        let mut s = state(&[2, 1], &[2], 2);
        s.adding_replicas = vec![2];
        s.removing_replicas = vec![1];
        assert_eq!(cancel(&s, &live(&[1, 2])), Err(CancelError::Unclean));
    }
}
