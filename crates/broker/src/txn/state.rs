//! One transactional id's state machine (KIP-98), sans-I/O.
//!
//! Every request of the transaction coordinator is a method here that checks
//! the producer id and epoch, decides the transition and returns what the
//! shell must do (persist the new state, write markers) or the Kafka error
//! to answer. It never touches a log or a socket. The rules follow Kafka's
//! `TransactionCoordinator` / `TransactionMetadata`:
//!
//! ```text
//!   Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!     ▲                        │    └───EndTxn(abort)/timeout/fence──▶ PrepareAbort ──markers──▶ CompleteAbort
//!     └──────InitProducerId (epoch + 1) from Empty / CompleteCommit / CompleteAbort ◀───────────┘
//! ```
//!
//! While a Prepare state is being completed every request of that id gets
//! CONCURRENT_TRANSACTIONS (retriable), so a client waits for the markers.

use std::collections::BTreeSet;

use weir_protocol::control::ControlType;
use weir_protocol::error_code::ErrorCode;

/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Kafka's `RecordBatch.NO_PRODUCER_ID`.
pub const NO_PRODUCER_ID: i64 = -1;

/// Kafka's `TransactionState`, with its on-disk ids (`TransactionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The id stored in `TransactionLogValue.TransactionStatus`.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The marker a Prepare state writes, if it is one.
    pub fn pending_marker(self) -> Option<ControlType> {
        match self {
            TxnState::PrepareCommit => Some(ControlType::Commit),
            TxnState::PrepareAbort => Some(ControlType::Abort),
            _ => None,
        }
    }
}

/// Kafka's `TransactionMetadata.isEpochExhausted`: one epoch is kept in
/// reserve so that a fence can still bump once.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// A topic partition in a transaction.
pub type TopicPartition = (String, i32);

/// What the coordinator knows about one transactional id (one
/// `__transaction_state` record's worth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion), so a
    /// retried InitProducerId from it is recognised (KIP-360).
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, so a retried InitProducerId is
    /// answered with the current epoch instead of bumping again.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    /// When the current transaction began (-1 when none has).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What the shell does after a successful transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Append the new state to `__transaction_state` (and wait for it).
    pub persist: bool,
    /// After the state is durable, write this marker to every partition of
    /// the transaction, then complete it.
    pub markers: Option<ControlType>,
}

impl Effect {
    const NONE: Effect = Effect {
        persist: false,
        markers: None,
    };
    const PERSIST: Effect = Effect {
        persist: true,
        markers: None,
    };
    fn prepare(marker: ControlType) -> Effect {
        Effect {
            persist: true,
            markers: Some(marker),
        }
    }
}

/// What InitProducerId answers once the effect is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// The producer may go on with this id and epoch.
    Ready {
        producer_id: i64,
        producer_epoch: i16,
        effect: Effect,
    },
    /// An ongoing transaction was fenced: it is being aborted with a bumped
    /// epoch, and the client is told CONCURRENT_TRANSACTIONS so it retries
    /// once the abort is complete (Kafka's behaviour).
    FencingOngoing { effect: Effect },
}

/// What EndTxn answers once the effect is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOutcome {
    pub effect: Effect,
    /// The id and epoch the producer continues with (EndTxn v5 reports them).
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl TxnMetadata {
    /// A new transactional id with a fresh producer id; its epoch becomes 0
    /// at the first [`TxnMetadata::init_producer_id`].
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// InitProducerId with this transactional id. `expected` is the
    /// producer id and epoch the client sent (v3+, KIP-360), `fresh_id`
    /// hands out a new producer id when the epoch is exhausted.
    pub fn init_producer_id(
        &mut self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
        fresh_id: &mut dyn FnMut() -> Result<i64, ErrorCode>,
    ) -> Result<InitOutcome, ErrorCode> {
        // Kafka's isValidProducerId: a client that names an id must name the
        // current one, or (after a rotation) the previous one at an exhausted epoch.
        if let Some((pid, epoch)) = expected
            && self.producer_epoch != NO_PRODUCER_EPOCH
            && pid != self.producer_id
            && !(pid == self.previous_producer_id && epoch_exhausted(epoch))
        {
            return Err(ErrorCode::ProducerFenced);
        }
        match self.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Err(ErrorCode::ConcurrentTransactions),
            TxnState::Ongoing => {
                // Zombie fencing: the open transaction is aborted under a new
                // epoch, so the old producer's writes and EndTxn are refused.
                if !epoch_exhausted(self.producer_epoch) {
                    self.last_producer_epoch = self.producer_epoch;
                    self.producer_epoch += 1;
                }
                self.state = TxnState::PrepareAbort;
                self.last_update_ms = now_ms;
                Ok(InitOutcome::FencingOngoing {
                    effect: Effect::prepare(ControlType::Abort),
                })
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if let Some((pid, epoch)) = expected
                    && pid == self.producer_id
                    && self.producer_epoch != NO_PRODUCER_EPOCH
                {
                    if epoch == self.last_producer_epoch
                        && epoch != self.producer_epoch
                        && self.state == TxnState::Empty
                    {
                        // A retry of the InitProducerId that already bumped.
                        return Ok(InitOutcome::Ready {
                            producer_id: self.producer_id,
                            producer_epoch: self.producer_epoch,
                            effect: Effect::NONE,
                        });
                    }
                    if epoch != self.producer_epoch {
                        return Err(ErrorCode::ProducerFenced);
                    }
                }
                if self.producer_epoch != NO_PRODUCER_EPOCH && epoch_exhausted(self.producer_epoch)
                {
                    // Kafka rotates the producer id instead of wrapping the epoch.
                    let fresh = fresh_id()?;
                    self.previous_producer_id = self.producer_id;
                    self.producer_id = fresh;
                    self.producer_epoch = 0;
                    self.last_producer_epoch = NO_PRODUCER_EPOCH;
                } else {
                    self.last_producer_epoch = self.producer_epoch;
                    self.producer_epoch += 1;
                }
                self.timeout_ms = timeout_ms;
                self.state = TxnState::Empty;
                self.partitions.clear();
                self.start_ms = -1;
                self.last_update_ms = now_ms;
                Ok(InitOutcome::Ready {
                    producer_id: self.producer_id,
                    producer_epoch: self.producer_epoch,
                    effect: Effect::PERSIST,
                })
            }
        }
    }

    /// The producer-id/epoch check every request after InitProducerId makes.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
        if producer_id != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the
    /// transaction, which starts if none is open.
    pub fn add_partitions(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<Effect, ErrorCode> {
        self.check_producer(producer_id, producer_epoch)?;
        match self.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => return Err(ErrorCode::ConcurrentTransactions),
            TxnState::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => {
                return Ok(Effect::NONE);
            }
            TxnState::Ongoing => {}
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                self.partitions.clear();
                self.start_ms = now_ms;
                self.state = TxnState::Ongoing;
            }
        }
        self.partitions.extend(partitions.iter().cloned());
        self.last_update_ms = now_ms;
        Ok(Effect::PERSIST)
    }

    /// KIP-890 part 1: is this partition part of the producer's open transaction?
    pub fn verify(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partition: &TopicPartition,
    ) -> ErrorCode {
        if let Err(code) = self.check_producer(producer_id, producer_epoch) {
            return code;
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                ErrorCode::ConcurrentTransactions
            }
            TxnState::Ongoing if self.partitions.contains(partition) => ErrorCode::None,
            _ => ErrorCode::InvalidTxnState,
        }
    }

    /// EndTxn from the client. `bump_epoch` is EndTxn v5+ (KIP-890 part 2):
    /// the markers and the producer carry on with epoch + 1.
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        bump_epoch: bool,
        now_ms: i64,
    ) -> Result<EndOutcome, ErrorCode> {
        // A v5 retry arrives with the epoch the first attempt already bumped past.
        let retry_after_bump = bump_epoch
            && producer_id == self.producer_id
            && producer_epoch == self.last_producer_epoch
            && matches!(
                self.state,
                TxnState::PrepareCommit
                    | TxnState::PrepareAbort
                    | TxnState::CompleteCommit
                    | TxnState::CompleteAbort
            );
        if !retry_after_bump {
            self.check_producer(producer_id, producer_epoch)?;
        }
        let done = |effect| EndOutcome {
            effect,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
        };
        match (self.state, commit) {
            (TxnState::Ongoing, _) if !retry_after_bump => {
                if bump_epoch && !epoch_exhausted(self.producer_epoch) {
                    self.last_producer_epoch = self.producer_epoch;
                    self.producer_epoch += 1;
                }
                let (state, marker) = if commit {
                    (TxnState::PrepareCommit, ControlType::Commit)
                } else {
                    (TxnState::PrepareAbort, ControlType::Abort)
                };
                self.state = state;
                self.last_update_ms = now_ms;
                Ok(EndOutcome {
                    effect: Effect::prepare(marker),
                    producer_id: self.producer_id,
                    producer_epoch: self.producer_epoch,
                })
            }
            // A retry of an EndTxn that completed: answer as the first time.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(done(Effect::NONE))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            (TxnState::PrepareEpochFence, _) => Err(ErrorCode::ConcurrentTransactions),
            // Ending a transaction that was never begun, or the opposite of
            // what is already decided.
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The broker aborts a transaction open longer than its timeout (Kafka's
    /// abortTimedOutTransactions): the epoch is bumped so the hung producer
    /// is fenced. Returns the effect, or `None` if nothing is due.
    pub fn abort_if_timed_out(&mut self, now_ms: i64) -> Option<Effect> {
        if self.state != TxnState::Ongoing
            || self.start_ms.saturating_add(i64::from(self.timeout_ms)) >= now_ms
        {
            return None;
        }
        if !epoch_exhausted(self.producer_epoch) {
            self.last_producer_epoch = self.producer_epoch;
            self.producer_epoch += 1;
        }
        self.state = TxnState::PrepareAbort;
        self.last_update_ms = now_ms;
        Some(Effect::prepare(ControlType::Abort))
    }

    /// Every marker is written: the transaction is complete. Returns false
    /// (and changes nothing) if the state is not the Prepare state expected.
    pub fn complete(&mut self, producer_id: i64, producer_epoch: i16, now_ms: i64) -> bool {
        if producer_id != self.producer_id || producer_epoch != self.producer_epoch {
            return false;
        }
        let next = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return false,
        };
        self.state = next;
        self.partitions.clear();
        self.last_update_ms = now_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn no_fresh_id() -> Result<i64, ErrorCode> {
        panic!("no new producer id expected")
    }

    fn ready(meta: &mut TxnMetadata, expected: Option<(i64, i16)>) -> (i64, i16) {
        match meta.init_producer_id(expected, 60_000, NOW, &mut no_fresh_id) {
            Ok(InitOutcome::Ready {
                producer_id,
                producer_epoch,
                ..
            }) => (producer_id, producer_epoch),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    fn fresh() -> TxnMetadata {
        let mut m = TxnMetadata::new("tx", 7, 60_000, NOW);
        assert_eq!(ready(&mut m, None), (7, 0));
        m
    }

    #[test]
    fn first_init_gives_epoch_zero_and_each_reinit_bumps_it() {
        let mut m = fresh();
        assert_eq!(m.state, TxnState::Empty);
        assert_eq!(ready(&mut m, None), (7, 1));
        assert_eq!(ready(&mut m, None), (7, 2));
    }

    #[test]
    fn commit_walks_prepare_then_complete() {
        let mut m = fresh();
        let effect = m
            .add_partitions(7, 0, &[tp("a", 0), tp("a", 1)], NOW)
            .unwrap();
        assert_eq!(effect, Effect::PERSIST);
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.start_ms, NOW);
        // Adding the same partition again writes nothing.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap(),
            Effect::NONE
        );
        let end = m.end_txn(7, 0, true, false, NOW).unwrap();
        assert_eq!(end.effect.markers, Some(ControlType::Commit));
        assert_eq!(m.state, TxnState::PrepareCommit);
        // While markers are written, the producer waits.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("b", 0)], NOW),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            m.end_txn(7, 0, true, false, NOW),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            m.end_txn(7, 0, false, false, NOW),
            Err(ErrorCode::InvalidTxnState)
        );
        assert!(m.complete(7, 0, NOW));
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        // A retried commit is answered as success; an abort now is invalid.
        assert_eq!(
            m.end_txn(7, 0, true, false, NOW).unwrap().effect,
            Effect::NONE
        );
        assert_eq!(
            m.end_txn(7, 0, false, false, NOW),
            Err(ErrorCode::InvalidTxnState)
        );
        // The next transaction starts from CompleteCommit.
        m.add_partitions(7, 0, &[tp("b", 0)], NOW + 5).unwrap();
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.start_ms, NOW + 5);
        assert_eq!(m.partitions.len(), 1);
    }

    #[test]
    fn end_txn_without_add_partitions_is_invalid_txn_state() {
        let mut m = fresh();
        assert_eq!(
            m.end_txn(7, 0, true, false, NOW),
            Err(ErrorCode::InvalidTxnState)
        );
        assert_eq!(
            m.end_txn(7, 0, false, false, NOW),
            Err(ErrorCode::InvalidTxnState)
        );
    }

    #[test]
    fn wrong_producer_id_is_a_mapping_error_and_wrong_epoch_is_fenced() {
        let mut m = fresh();
        assert_eq!(
            m.add_partitions(8, 0, &[tp("a", 0)], NOW),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.add_partitions(7, 3, &[tp("a", 0)], NOW),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            m.end_txn(8, 0, true, false, NOW),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(m.state, TxnState::Empty, "refusals change nothing");
    }

    #[test]
    fn reinit_during_a_transaction_fences_and_aborts_it_first() {
        let mut m = fresh();
        m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap();
        let outcome = m
            .init_producer_id(None, 60_000, NOW, &mut no_fresh_id)
            .unwrap();
        assert_eq!(
            outcome,
            InitOutcome::FencingOngoing {
                effect: Effect::prepare(ControlType::Abort)
            }
        );
        assert_eq!(m.state, TxnState::PrepareAbort);
        assert_eq!(m.producer_epoch, 1, "markers carry the fencing epoch");
        // The zombie (epoch 0) is fenced everywhere.
        assert_eq!(
            m.end_txn(7, 0, true, false, NOW),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(m.verify(7, 0, &tp("a", 0)), ErrorCode::ProducerFenced);
        // The new producer retries while the abort completes ...
        assert!(matches!(
            m.init_producer_id(None, 60_000, NOW, &mut no_fresh_id),
            Err(ErrorCode::ConcurrentTransactions)
        ));
        assert!(m.complete(7, 1, NOW));
        assert_eq!(m.state, TxnState::CompleteAbort);
        // ... and then gets the next epoch.
        assert_eq!(ready(&mut m, None), (7, 2));
    }

    #[test]
    fn kip360_reinit_with_current_id_bumps_and_a_stale_one_is_fenced() {
        let mut m = fresh();
        assert_eq!(ready(&mut m, Some((7, 0))), (7, 1));
        // A retry of that same request (epoch 0 again) gets the same answer.
        assert_eq!(ready(&mut m, Some((7, 0))), (7, 1));
        assert_eq!(
            m.init_producer_id(Some((99, 0)), 60_000, NOW, &mut no_fresh_id),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(ready(&mut m, Some((7, 1))), (7, 2));
    }

    #[test]
    fn exhausted_epoch_rotates_to_a_new_producer_id() {
        let mut m = fresh();
        m.producer_epoch = i16::MAX - 1;
        let mut handed_out = Vec::new();
        let outcome = m
            .init_producer_id(None, 60_000, NOW, &mut || {
                handed_out.push(42);
                Ok(42)
            })
            .unwrap();
        assert!(matches!(
            outcome,
            InitOutcome::Ready {
                producer_id: 42,
                producer_epoch: 0,
                ..
            }
        ));
        assert_eq!(handed_out, vec![42]);
        assert_eq!(m.previous_producer_id, 7);
        // The old producer naming its exhausted epoch is recognised, not fenced.
        let outcome = m
            .init_producer_id(Some((7, i16::MAX - 1)), 60_000, NOW, &mut no_fresh_id)
            .unwrap();
        assert!(matches!(
            outcome,
            InitOutcome::Ready {
                producer_id: 42,
                ..
            }
        ));
    }

    #[test]
    fn timed_out_transaction_is_aborted_with_a_bumped_epoch() {
        let mut m = fresh();
        m.timeout_ms = 1_000;
        m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap();
        assert_eq!(m.abort_if_timed_out(NOW + 1_000), None, "not yet");
        let effect = m.abort_if_timed_out(NOW + 1_001).unwrap();
        assert_eq!(effect.markers, Some(ControlType::Abort));
        assert_eq!((m.state, m.producer_epoch), (TxnState::PrepareAbort, 1));
        assert!(m.complete(7, 1, NOW + 1_002));
        assert_eq!(m.state, TxnState::CompleteAbort);
        // The hung producer comes back: fenced.
        assert_eq!(
            m.add_partitions(7, 0, &[tp("a", 0)], NOW),
            Err(ErrorCode::ProducerFenced)
        );
        // Nothing else times out.
        assert_eq!(m.abort_if_timed_out(i64::MAX), None);
    }

    #[test]
    fn verify_accepts_only_partitions_of_the_open_transaction() {
        let mut m = fresh();
        assert_eq!(m.verify(7, 0, &tp("a", 0)), ErrorCode::InvalidTxnState);
        m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap();
        assert_eq!(m.verify(7, 0, &tp("a", 0)), ErrorCode::None);
        assert_eq!(m.verify(7, 0, &tp("a", 1)), ErrorCode::InvalidTxnState);
        assert_eq!(
            m.verify(8, 0, &tp("a", 0)),
            ErrorCode::InvalidProducerIdMapping
        );
    }

    #[test]
    fn end_txn_v5_bumps_the_epoch_and_a_retry_with_the_old_one_succeeds() {
        let mut m = fresh();
        m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap();
        let end = m.end_txn(7, 0, true, true, NOW).unwrap();
        assert_eq!((end.producer_id, end.producer_epoch), (7, 1));
        assert!(m.complete(7, 1, NOW));
        let retry = m.end_txn(7, 0, true, true, NOW).unwrap();
        assert_eq!((retry.effect, retry.producer_epoch), (Effect::NONE, 1));
    }

    #[test]
    fn complete_ignores_a_stale_completion() {
        let mut m = fresh();
        m.add_partitions(7, 0, &[tp("a", 0)], NOW).unwrap();
        m.end_txn(7, 0, false, false, NOW).unwrap();
        assert!(!m.complete(7, 5, NOW));
        assert_eq!(m.state, TxnState::PrepareAbort);
    }
}
