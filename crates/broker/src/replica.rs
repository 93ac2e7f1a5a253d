//! A partition leader's view of its followers: the sans-I/O core of replication.
//!
//! Fed by events (the leader's own log became durable up to an offset, a follower fetched at an
//! offset, time passed, the metadata image changed the ISR) and answering with decisions (the
//! new high watermark, an ISR change to propose to the controller). The tokio shells in
//! `replication.rs` and the fetch and produce handlers do the I/O; nothing here blocks or
//! reads a clock.
//!
//! The rules are Kafka's (`Partition`/`Replica` in apache/kafka, KIP-101, KIP-497), with one
//! step past them: a follower's fetch offset is its *durable* log end (the fetcher waits for
//! its own sync before fetching again), so the high watermark, the minimum over the ISR, only
//! passes records that are on disk on every in-sync replica.

use std::collections::BTreeMap;

use weir_metadata::records::BrokerId;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// The offset of its last fetch: everything below is durable there. -1 until it fetches in
    /// this leadership.
    log_end: i64,
    /// When it last held everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: u64,
    /// The leader's log end and the time at its previous fetch: a fetch reaching that end
    /// shows the follower was caught up then.
    previous_fetch_leader_end: i64,
    previous_fetch_ms: u64,
}

/// An ISR change this leader wants the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// Why a follower's fetch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerRefusal {
    /// The fetching broker holds no replica of this partition.
    NotAReplica,
}

/// Whether the controller's refusal of an ISR proposal says it was not applied. The shell
/// calls [`LeaderState::proposal_failed`] for these refusals only: any other refusal (a stale
/// partition epoch, say) may answer a duplicate of a request that did commit, and a missing
/// answer says nothing, so the proposal stays pending, and keeps counting for the high
/// watermark, until the image shows the outcome (as Kafka's `handleAlterPartitionError`,
/// which resets to the committed state only on these two).
pub fn refusal_means_not_applied(error_code: i16) -> bool {
    use weir_metadata::controller::codes;
    matches!(
        error_code,
        codes::OPERATION_NOT_ATTEMPTED | codes::INELIGIBLE_REPLICA
    )
}

/// One led partition's replication state.
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    replicas: Vec<BrokerId>,
    /// The ISR the metadata image holds (committed).
    isr: Vec<BrokerId>,
    /// An ISR change sent to the controller and not yet seen in the image, with when it was
    /// sent. While it is out, the high watermark counts the union of both (KIP-497's "maximal
    /// ISR"): a member being added counts at once, one being removed until the removal is
    /// committed.
    pending: Option<(Vec<BrokerId>, u64)>,
    followers: BTreeMap<BrokerId, Follower>,
    /// The leader's own durable log end.
    leader_durable_end: i64,
    /// Where this leadership's epoch starts: a follower joins the ISR only once it has all of
    /// the previous leaders' records (Kafka's `leaderEpochStartOffsetOpt` check).
    epoch_start_offset: i64,
    high_watermark: i64,
    /// Kafka's `replica.lag.time.max.ms`.
    lag_max_ms: u64,
}

/// How long an ISR proposal may go unanswered before it is sent again, unchanged (the
/// controller may have failed over and lost it).
pub const PROPOSAL_RETRY_MS: u64 = 5_000;

impl LeaderState {
    /// A new leadership (a new leader epoch). Every follower starts with an unknown position
    /// and a full `lag_max_ms` before it can be dropped from the ISR.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        high_watermark: i64,
        epoch_start_offset: i64,
        lag_max_ms: u64,
        now_ms: u64,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                (
                    r,
                    Follower {
                        log_end: -1,
                        last_caught_up_ms: now_ms,
                        previous_fetch_leader_end: -1,
                        previous_fetch_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderState {
            me,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
            pending: None,
            followers,
            leader_durable_end: high_watermark,
            epoch_start_offset,
            high_watermark,
            lag_max_ms,
        }
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Each follower's durable log end as of its last fetch (-1 before its first).
    pub fn follower_log_ends(&self) -> Vec<(BrokerId, i64)> {
        self.followers
            .iter()
            .map(|(id, f)| (*id, f.log_end))
            .collect()
    }

    /// The image changed this partition within the same leadership: a committed ISR change
    /// (ours or the controller's, e.g. a fenced broker removed) or new replicas. Returns the
    /// new high watermark if it rose.
    pub fn image_changed(
        &mut self,
        partition_epoch: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        now_ms: u64,
    ) -> Option<i64> {
        // Every change bumps the partition epoch. The shell applies each hosted partition's
        // state whenever any metadata record applies, so the same epoch is nothing new, and
        // must not drop a pending proposal: the high watermark would stop waiting for a member
        // being added, which the controller may still commit (found by the simulation).
        if partition_epoch <= self.partition_epoch {
            return None;
        }
        self.partition_epoch = partition_epoch;
        for &r in &replicas {
            if r != self.me {
                self.followers.entry(r).or_insert(Follower {
                    log_end: -1,
                    last_caught_up_ms: now_ms,
                    previous_fetch_leader_end: -1,
                    previous_fetch_ms: now_ms,
                });
            }
        }
        self.followers.retain(|id, _| replicas.contains(id));
        // A member the controller took out (fenced, restarted) must show its position again
        // from its current process before it may rejoin: what an old process reported says
        // nothing of a new one's disk.
        for gone in self.isr.iter().filter(|r| !isr.contains(r)) {
            if let Some(f) = self.followers.get_mut(gone) {
                f.log_end = -1;
                f.previous_fetch_leader_end = -1;
            }
        }
        self.replicas = replicas;
        self.isr = isr;
        // Whatever we proposed was either this change or overtaken by it.
        self.pending = None;
        self.recompute()
    }

    /// The controller refused our proposal saying it was not applied (see
    /// [`refusal_means_not_applied`]): the next tick may propose again.
    pub fn proposal_failed(&mut self) -> Option<i64> {
        self.pending = None;
        self.recompute()
    }

    /// The leader's log is durable below `end`.
    pub fn leader_durable(&mut self, end: i64) -> Option<i64> {
        if end <= self.leader_durable_end {
            return None;
        }
        self.leader_durable_end = end;
        self.recompute()
    }

    /// A follower fetched at `fetch_offset` (its durable log end) while the leader's log ended
    /// at `leader_end`. Returns the new high watermark if it rose.
    pub fn follower_fetched(
        &mut self,
        id: BrokerId,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: u64,
    ) -> Result<Option<i64>, FollowerRefusal> {
        let f = self
            .followers
            .get_mut(&id)
            .ok_or(FollowerRefusal::NotAReplica)?;
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = now_ms;
        } else if f.previous_fetch_leader_end >= 0 && fetch_offset >= f.previous_fetch_leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.previous_fetch_ms);
        }
        f.previous_fetch_leader_end = leader_end;
        f.previous_fetch_ms = now_ms;
        f.log_end = fetch_offset;
        Ok(self.recompute())
    }

    /// The ISR members the high watermark waits for: the committed ISR plus any member a
    /// pending proposal adds.
    fn maximal_isr(&self) -> impl Iterator<Item = BrokerId> + '_ {
        let added = self
            .pending
            .iter()
            .flat_map(|(isr, _)| isr.iter().copied())
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().copied().chain(added)
    }

    /// HW = min(leader durable end, each maximal-ISR follower's durable end); never lower
    /// than before.
    fn recompute(&mut self) -> Option<i64> {
        let mut hw = self.leader_durable_end;
        let followers_counted = !plant_hw_without_isr();
        for r in self.maximal_isr().filter(|_| followers_counted) {
            if r == self.me {
                continue;
            }
            let end = self.followers.get(&r).map_or(-1, |f| f.log_end);
            hw = hw.min(end);
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            Some(hw)
        } else {
            None
        }
    }

    /// Periodic check: followers that have not caught up within `lag_max_ms` leave the ISR;
    /// replicas that have caught up to the high watermark (and hold this epoch's start) join
    /// it. Returns the proposal to send, if any; one proposal is out at a time, and one left
    /// unanswered is sent again unchanged (it may have committed: only the image or a refusal
    /// saying otherwise ends it).
    pub fn tick(&mut self, now_ms: u64) -> Option<IsrProposal> {
        if let Some((isr, sent_ms)) = &mut self.pending {
            if now_ms.saturating_sub(*sent_ms) < PROPOSAL_RETRY_MS {
                return None;
            }
            *sent_ms = now_ms;
            return Some(IsrProposal {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                new_isr: isr.clone(),
            });
        }
        let mut new_isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                r == self.me
                    || self.followers.get(&r).is_some_and(|f| {
                        now_ms.saturating_sub(f.last_caught_up_ms) <= self.lag_max_ms
                    })
            })
            .collect();
        for (&r, f) in &self.followers {
            let caught_up = f.log_end >= self.high_watermark
                && f.log_end >= self.epoch_start_offset
                && now_ms.saturating_sub(f.last_caught_up_ms) <= self.lag_max_ms;
            if !new_isr.contains(&r) && caught_up {
                new_isr.push(r);
            }
        }
        // Replica order, as the controller and clients list it.
        new_isr.sort_by_key(|r| self.replicas.iter().position(|x| x == r));
        if !new_isr.contains(&self.me) {
            new_isr.insert(0, self.me);
        }
        let mut current = self.isr.clone();
        current.sort_by_key(|r| self.replicas.iter().position(|x| x == r));
        if new_isr == current {
            return None;
        }
        self.pending = Some((new_isr.clone(), now_ms));
        Some(IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr,
        })
    }
}

/// The fault harness (`crates/chaos`) and the simulation must show they can fail, so this is
/// the one planted bug of replication: with `WEIR_TEST_PLANT_HW_WITHOUT_ISR=1` in the
/// environment (read once) the leader raises the high watermark to its own durable end and
/// ignores its followers, so acks=all answers before any follower has the records. Never set it
/// outside those tests.
fn plant_hw_without_isr() -> bool {
    static PLANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| {
        let planted = std::env::var_os("WEIR_TEST_PLANT_HW_WITHOUT_ISR").is_some_and(|v| v == "1");
        if planted {
            tracing::warn!("test switch: the high watermark ignores the ISR (planted bug)");
        }
        planted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG_MS: u64 = 30_000;

    fn leader(isr: &[BrokerId]) -> LeaderState {
        LeaderState::new(1, 5, 10, vec![1, 2, 3], isr.to_vec(), 0, 0, LAG_MS, 1_000)
    }

    #[test]
    fn the_high_watermark_is_the_minimum_durable_end_over_the_isr() {
        let mut l = leader(&[1, 2, 3]);
        assert_eq!(l.leader_durable(100), None, "no follower has fetched yet");
        assert_eq!(l.follower_fetched(2, 100, 100, 1_001), Ok(None));
        assert_eq!(l.follower_fetched(3, 60, 100, 1_002), Ok(Some(60)));
        assert_eq!(l.follower_fetched(3, 100, 100, 1_003), Ok(Some(100)));
        // The leader's own sync bounds it too.
        assert_eq!(l.follower_fetched(2, 150, 150, 1_004), Ok(None));
        assert_eq!(l.follower_fetched(3, 150, 150, 1_004), Ok(None));
        assert_eq!(l.leader_durable(150), Some(150));
    }

    #[test]
    fn the_high_watermark_never_moves_back() {
        let mut l = leader(&[1, 2]);
        l.leader_durable(50);
        assert_eq!(l.follower_fetched(2, 50, 50, 1_001), Ok(Some(50)));
        // A follower that restarted and fetches from lower, or a member added to the ISR
        // that is behind, cannot lower it.
        assert_eq!(l.follower_fetched(2, 20, 50, 1_002), Ok(None));
        assert_eq!(
            l.image_changed(11, vec![1, 2, 3], vec![1, 2, 3], 1_003),
            None
        );
        assert_eq!(l.high_watermark(), 50);
    }

    #[test]
    fn a_single_replica_isr_follows_the_leaders_durability_alone() {
        let mut l = LeaderState::new(1, 0, 0, vec![1], vec![1], 0, 0, LAG_MS, 0);
        assert_eq!(l.leader_durable(7), Some(7));
        assert_eq!(l.tick(1_000_000), None);
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_a_caught_up_one_back_in() {
        let mut l = leader(&[1, 2, 3]);
        l.leader_durable(100);
        l.follower_fetched(2, 100, 100, 2_000).unwrap();
        l.follower_fetched(3, 40, 100, 2_000).unwrap();
        assert_eq!(l.tick(2_000), None, "nobody is past the lag limit yet");
        // Follower 2 keeps up, 3 stays behind.
        l.follower_fetched(2, 100, 100, 1_000 + LAG_MS + 1).unwrap();
        let p = l.tick(1_000 + LAG_MS + 1).expect("3 must be proposed out");
        assert_eq!(
            p,
            IsrProposal {
                leader_epoch: 5,
                partition_epoch: 10,
                new_isr: vec![1, 2]
            }
        );
        // While the removal is out, 3 still holds the high watermark back (it is committed
        // in the ISR until the controller says otherwise), and no second proposal goes out.
        assert_eq!(l.follower_fetched(2, 100, 100, 33_000), Ok(None));
        assert_eq!(l.tick(33_000), None);
        assert_eq!(
            l.image_changed(11, vec![1, 2, 3], vec![1, 2], 33_001),
            Some(100)
        );
        // 3 catches up to the high watermark: back in.
        l.follower_fetched(3, 100, 100, 41_000).unwrap();
        let p = l.tick(41_000).expect("3 must be proposed back");
        assert_eq!(p.new_isr, vec![1, 2, 3]);
        assert_eq!(p.partition_epoch, 11);
    }

    #[test]
    fn a_follower_joining_counts_for_the_high_watermark_at_once() {
        let mut l = leader(&[1]);
        l.leader_durable(100);
        assert_eq!(l.high_watermark(), 100);
        l.follower_fetched(2, 100, 100, 1_500).unwrap();
        assert_eq!(l.tick(1_500).unwrap().new_isr, vec![1, 2]);
        l.leader_durable(120);
        assert_eq!(l.high_watermark(), 100, "the joining member holds it back");
        assert_eq!(l.follower_fetched(2, 120, 120, 1_600), Ok(Some(120)));
    }

    #[test]
    fn an_unchanged_image_keeps_a_pending_expansion_holding_the_watermark() {
        // Found by the simulation (crates/sim, seed 11): the shell applies every hosted
        // partition's state whenever any metadata record applies, so an unchanged state must
        // not drop the expansion in flight. If it did, the watermark would pass the joining
        // follower, and once the expansion commits that follower may be elected without it.
        let mut l = leader(&[1]);
        l.leader_durable(100);
        l.follower_fetched(2, 100, 100, 1_500).unwrap();
        assert_eq!(l.tick(1_500).unwrap().new_isr, vec![1, 2]);
        assert_eq!(l.leader_durable(120), None);
        assert_eq!(l.image_changed(10, vec![1, 2, 3], vec![1], 1_600), None);
        assert_eq!(l.high_watermark(), 100, "2 is still joining");
        assert_eq!(l.follower_fetched(2, 120, 120, 1_700), Ok(Some(120)));
    }

    #[test]
    fn an_unanswered_expansion_is_sent_again_unchanged_and_keeps_holding_the_watermark() {
        // Found by the simulation (crates/sim, seed 8404): the controller may have committed
        // a proposal whose answer never came, so resending must not drop the joining member,
        // even when it has since fallen behind.
        let mut l = leader(&[1]);
        l.leader_durable(100);
        l.follower_fetched(2, 100, 100, 1_500).unwrap();
        assert_eq!(l.tick(1_500).unwrap().new_isr, vec![1, 2]);
        let later = 1_500 + LAG_MS + PROPOSAL_RETRY_MS;
        assert_eq!(l.leader_durable(120), None);
        let again = l.tick(later).expect("sent again");
        assert_eq!(again.new_isr, vec![1, 2], "the same proposal");
        assert_eq!(l.leader_durable(130), None);
        assert_eq!(l.high_watermark(), 100, "2 may be in the ISR already");
        // Only an answer saying it was not applied, or the image, ends the wait.
        assert_eq!(l.proposal_failed(), Some(130));
    }

    #[test]
    fn only_a_refusal_that_says_not_applied_drops_a_proposal() {
        use weir_metadata::controller::codes;
        assert!(refusal_means_not_applied(codes::OPERATION_NOT_ATTEMPTED));
        assert!(refusal_means_not_applied(codes::INELIGIBLE_REPLICA));
        for code in [
            codes::INVALID_UPDATE_VERSION,
            codes::FENCED_LEADER_EPOCH,
            codes::NOT_CONTROLLER,
            codes::INVALID_REQUEST,
            codes::UNKNOWN_TOPIC_ID,
            codes::STALE_BROKER_EPOCH,
        ] {
            assert!(!refusal_means_not_applied(code), "{code}");
        }
    }

    #[test]
    fn a_member_taken_out_of_the_isr_must_fetch_again_before_it_rejoins() {
        let mut l = leader(&[1, 2, 3]);
        l.leader_durable(100);
        l.follower_fetched(2, 100, 100, 2_000).unwrap();
        l.follower_fetched(3, 100, 100, 2_000).unwrap();
        // The controller fenced 3 (say it restarted on an empty disk).
        l.image_changed(11, vec![1, 2, 3], vec![1, 2], 2_100);
        assert_eq!(
            l.tick(2_200),
            None,
            "3's old position must not bring it back"
        );
        l.follower_fetched(3, 0, 100, 2_300).unwrap();
        assert_eq!(l.tick(2_300), None, "still behind");
        l.follower_fetched(3, 100, 100, 2_400).unwrap();
        assert_eq!(l.tick(2_400).map(|p| p.new_isr), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_missing_this_epochs_start_does_not_join() {
        let mut l = LeaderState::new(1, 5, 10, vec![1, 2], vec![1], 0, 80, LAG_MS, 0);
        l.leader_durable(100);
        l.follower_fetched(2, 60, 60, 10).unwrap();
        assert_eq!(l.high_watermark(), 100);
        assert_eq!(l.tick(10), None, "60 is below the epoch start 80");
    }

    #[test]
    fn a_lost_proposal_is_sent_again_and_a_refused_one_at_the_next_tick() {
        let mut l = leader(&[1, 2, 3]);
        let t = 1_000 + LAG_MS + 1;
        l.follower_fetched(2, 0, 0, t).unwrap();
        assert!(l.tick(t).is_some());
        assert!(l.tick(t + 1).is_none());
        assert!(l.tick(t + PROPOSAL_RETRY_MS).is_some(), "sent again");
        l.proposal_failed();
        assert!(l.tick(t + PROPOSAL_RETRY_MS + 1).is_some());
    }

    #[test]
    fn a_fetch_from_a_broker_without_a_replica_is_refused() {
        let mut l = leader(&[1, 2, 3]);
        assert_eq!(
            l.follower_fetched(9, 0, 0, 0),
            Err(FollowerRefusal::NotAReplica)
        );
        assert_eq!(
            l.follower_fetched(1, 0, 0, 0),
            Err(FollowerRefusal::NotAReplica),
            "the leader does not fetch from itself"
        );
    }
}
