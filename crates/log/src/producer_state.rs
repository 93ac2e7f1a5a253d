//! Per-partition producer state for idempotent producers (KIP-98, KIP-360): for each producer id
//! its epoch, the sequence ranges and offsets of its last [`PRODUCER_BATCHES_RETAINED`] batches
//! and the max timestamp of its last batch.
//!
//! Sans-I/O: [`ProducerState::check`] validates the batches of one append against the state and
//! returns either the updates to apply once the append is written, or the duplicate it repeats.
//! The log calls it under its append lock, after offsets are assigned and before any byte is
//! written, so two produces of one producer can't interleave between check and write.
//!
//! The rules follow Kafka's `ProducerAppendInfo.checkSequence` / `checkProducerEpoch` and
//! `ProducerStateEntry.findDuplicateBatch` for client appends:
//! - an epoch below the known one is INVALID_PRODUCER_EPOCH;
//! - a new (higher) epoch must start at sequence 0, unless the producer was unknown;
//! - at the same epoch the first sequence must follow the last one (wrapping after i32::MAX);
//! - an unknown producer (never seen, expired, or its batches deleted) may start at any sequence:
//!   since KIP-360 the broker no longer answers UNKNOWN_PRODUCER_ID;
//! - a batch whose epoch and sequence range equal one of the last five batches is a retry: the
//!   append writes nothing and answers with that batch's original offsets.
//!
//! Transactions (KIP-98), as Kafka's `ProducerAppendInfo.appendDataBatch` / `appendEndTxnMarker`:
//! - a producer's first transactional batch opens its transaction at that batch's base offset
//!   (`current_txn_first_offset`); a non-transactional batch while one is open is
//!   INVALID_TXN_STATE;
//! - a marker (control batch) closes it. Its epoch must be at least the producer's current one
//!   (Kafka's rule for transaction versions 0 and 1: INVALID_PRODUCER_EPOCH otherwise), and a newer
//!   epoch becomes current; its coordinator epoch must not be older than the last marker's
//!   (TRANSACTION_COORDINATOR_FENCED). A marker that closes a non-empty transaction yields a
//!   [`CompletedTxn`]; one for a producer without an open transaction changes only the epochs;
//! - a producer with an open transaction never expires.
//!
//! The state also keeps the open transactions ordered by first offset, so the first undecided
//! offset (the floor of the last stable offset) is one map lookup.

use std::collections::{BTreeMap, HashMap};

use weir_protocol::control::{ControlType, Marker};
use weir_protocol::record::BatchHeader;

/// Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`: the client keeps at most 5 requests in
/// flight per partition, so a retry always repeats one of the last 5 batches.
pub const PRODUCER_BATCHES_RETAINED: usize = 5;

/// One appended batch of a producer, as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What a partition knows about one producer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Max timestamp of the producer's last batch (Kafka's `lastTimestamp`): expiry counts from it.
    pub last_timestamp_ms: i64,
    /// Coordinator epoch of the producer's last marker (-1 before any): an older one is a zombie
    /// coordinator's.
    pub coordinator_epoch: i32,
    /// Base offset of the first batch of the producer's open transaction, -1 if none is open.
    pub current_txn_first_offset: i64,
    /// Oldest first; only the first `batch_count` are meaningful.
    batches: [ProducerBatch; PRODUCER_BATCHES_RETAINED],
    batch_count: u8,
}

impl ProducerEntry {
    pub fn new(producer_id: i64, epoch: i16, last_timestamp_ms: i64) -> ProducerEntry {
        ProducerEntry {
            producer_id,
            epoch,
            last_timestamp_ms,
            coordinator_epoch: -1,
            current_txn_first_offset: -1,
            batches: [ProducerBatch::default(); PRODUCER_BATCHES_RETAINED],
            batch_count: 0,
        }
    }

    /// Whether the producer has an open transaction in this partition.
    pub fn has_open_txn(&self) -> bool {
        self.current_txn_first_offset >= 0
    }

    /// A new epoch forgets the old epoch's batches (their sequences restart at 0).
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batch_count = 0;
        }
    }

    /// The retained batches, oldest first.
    pub fn batches(&self) -> &[ProducerBatch] {
        self.batches
            .get(..usize::from(self.batch_count))
            .unwrap_or(&[])
    }

    pub fn last_batch(&self) -> Option<&ProducerBatch> {
        self.batches().last()
    }

    /// Records an appended batch; a new epoch forgets the batches of the old one.
    pub fn push_batch(&mut self, epoch: i16, batch: ProducerBatch, max_timestamp_ms: i64) {
        self.set_epoch(epoch);
        let count = usize::from(self.batch_count);
        if count == PRODUCER_BATCHES_RETAINED {
            self.batches.rotate_left(1);
            if let Some(last) = self.batches.last_mut() {
                *last = batch;
            }
        } else {
            if let Some(slot) = self.batches.get_mut(count) {
                *slot = batch;
            }
            self.batch_count += 1;
        }
        self.last_timestamp_ms = max_timestamp_ms;
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<ProducerBatch> {
        if epoch != self.epoch {
            return None;
        }
        self.batches()
            .iter()
            .find(|b| b.first_sequence == first_seq && b.last_sequence == last_seq)
            .copied()
    }
}

/// Why a producer's batch is refused (mapped to Kafka error codes by the broker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    /// INVALID_PRODUCER_EPOCH
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// OUT_OF_ORDER_SEQUENCE_NUMBER
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// INVALID_TXN_STATE: a non-transactional batch while the producer's transaction is open.
    #[error("{0}")]
    InvalidTxnState(String),
    /// TRANSACTION_COORDINATOR_FENCED: a marker from an older coordinator epoch.
    #[error("{0}")]
    CoordinatorFenced(String),
}

/// A transaction a marker ended in this partition: from its first batch to the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// An aborted transaction as the transaction index holds it (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The last stable offset right after the abort: the first offset of the earliest
    /// transaction of another producer still open, else `last_offset + 1`. A read_committed
    /// fetch that ends below it needs no entry of a later segment.
    pub last_stable_offset: i64,
}

/// Who appends, which decides how much is checked (Kafka's `AppendOrigin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer's Produce request: epochs, sequences, duplicates and transaction state.
    Client,
    /// The broker's own coordinators (transaction markers; transactional offset commits, which
    /// carry no sequence): epochs and transaction state, no sequence or duplicate check.
    Coordinator,
    /// A follower copying its leader's batches: the leader checked them, so the state is
    /// replayed as is (Kafka's `AppendOrigin.REPLICATION`); refusing here would leave the
    /// replica unable to follow.
    Replication,
}

/// The outcome of checking one append.
#[derive(Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Append, then [`ProducerState::apply`] this update.
    Append(ProducerUpdate),
    /// The append repeats this already appended batch: write nothing, answer with its offsets.
    Duplicate(ProducerBatch),
}

/// What a checked append changes: the producers' new entries and the transactions its markers
/// ended, in append order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProducerUpdate {
    pub entries: Vec<ProducerEntry>,
    pub completed: Vec<CompletedTxn>,
}

impl ProducerUpdate {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.completed.is_empty()
    }
}

/// A batch of an append as the producer state sees it: its header, assigned base offset and,
/// for a control batch, the marker it carries (`None` for a control batch of another type).
#[derive(Debug, Clone, Copy)]
pub struct AppendedBatch<'a> {
    pub header: &'a BatchHeader,
    pub base_offset: i64,
    pub marker: Option<Marker>,
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset -> producer id (derived from `producers`).
    ongoing: BTreeMap<i64, i64>,
}

pub(crate) fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// Last sequence of a batch of `record_count` records starting at `first`; sequences wrap after
/// i32::MAX to 0, as Kafka's `DefaultRecordBatch.incrementSequence` does.
pub fn last_sequence(first: i32, last_offset_delta: i32) -> i32 {
    let sum = i64::from(first) + i64::from(last_offset_delta);
    if sum > i64::from(i32::MAX) {
        i32::try_from(sum - i64::from(i32::MAX) - 1).unwrap_or(0)
    } else {
        i32::try_from(sum).unwrap_or(i32::MAX)
    }
}

impl ProducerState {
    pub fn new() -> ProducerState {
        ProducerState::default()
    }

    pub fn from_entries(entries: impl IntoIterator<Item = ProducerEntry>) -> ProducerState {
        let mut s = ProducerState::new();
        for e in entries {
            s.insert(e);
        }
        s
    }

    /// Stores `e`, keeping the open-transaction map in step.
    fn insert(&mut self, e: ProducerEntry) {
        if let Some(old) = self.producers.insert(e.producer_id, e)
            && old.has_open_txn()
        {
            self.ongoing.remove(&old.current_txn_first_offset);
        }
        if e.has_open_txn() {
            self.ongoing
                .insert(e.current_txn_first_offset, e.producer_id);
        }
    }

    /// First offset of the earliest open transaction (Kafka's first undecided offset).
    pub fn first_undecided_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Open transactions as (first offset, producer id), earliest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(&o, &p)| (o, p))
    }

    /// The last stable offset right after `txn` completes (Kafka's
    /// `ProducerStateManager.lastStableOffset(completedTxn)`): the earliest open transaction of
    /// another producer, else the offset after the marker.
    pub fn last_stable_offset_after(&self, txn: &CompletedTxn) -> i64 {
        self.ongoing
            .iter()
            .find(|(_, pid)| **pid != txn.producer_id)
            .map_or(txn.last_offset + 1, |(&o, _)| o)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Entries sorted by producer id (a stable snapshot order).
    pub fn entries(&self) -> Vec<ProducerEntry> {
        let mut v: Vec<ProducerEntry> = self.producers.values().copied().collect();
        v.sort_unstable_by_key(|e| e.producer_id);
        v
    }

    /// Validates an append (client batches, or markers from the transaction coordinator).
    /// Batches without a producer id are ignored. Nothing changes until
    /// [`ProducerState::apply`] is called with the returned update.
    pub fn check(
        &self,
        batches: &[AppendedBatch<'_>],
    ) -> Result<ProducerCheck, ProducerStateError> {
        self.check_from(batches, AppendOrigin::Client)
    }

    /// [`ProducerState::check`] for an append from `origin`.
    pub fn check_from(
        &self,
        batches: &[AppendedBatch<'_>],
        origin: AppendOrigin,
    ) -> Result<ProducerCheck, ProducerStateError> {
        // Entries as updated by earlier batches of this same append (usually one producer).
        let mut update = ProducerUpdate::default();
        for b in batches {
            let h = b.header;
            if h.producer_id < 0 {
                continue;
            }
            let pid = h.producer_id;
            let current = update
                .entries
                .iter()
                .find(|e| e.producer_id == pid)
                .or_else(|| self.producers.get(&pid))
                .copied();
            // Retries are looked up first, as Kafka does before validating the sequence.
            if !h.is_control()
                && origin == AppendOrigin::Client
                && let Some(dup) = current.and_then(|cur| {
                    cur.find_duplicate(
                        h.producer_epoch,
                        h.base_sequence,
                        last_sequence(h.base_sequence, h.last_offset_delta),
                    )
                })
            {
                return Ok(ProducerCheck::Duplicate(dup));
            }
            let checked_as = (origin != AppendOrigin::Replication).then_some(origin);
            let Some((next, completed)) = step(current, b, checked_as)? else {
                continue;
            };
            update.completed.extend(completed);
            match update.entries.iter_mut().find(|e| e.producer_id == pid) {
                Some(slot) => *slot = next,
                None => update.entries.push(next),
            }
        }
        Ok(ProducerCheck::Append(update))
    }

    /// Stores the update a successful [`ProducerState::check`] returned. Returns the aborted
    /// transactions among its completed ones, with the last stable offset after each (for the
    /// transaction index).
    pub fn apply(&mut self, update: ProducerUpdate) -> Vec<AbortedTxn> {
        let mut aborted = Vec::new();
        for txn in &update.completed {
            if txn.aborted {
                aborted.push(AbortedTxn {
                    producer_id: txn.producer_id,
                    first_offset: txn.first_offset,
                    last_offset: txn.last_offset,
                    last_stable_offset: self.last_stable_offset_after(txn),
                });
            }
        }
        for e in update.entries {
            self.insert(e);
        }
        aborted
    }

    /// Replays a batch already in the log (rebuild after open or truncation): no validation, as
    /// Kafka's replication origin; a batch from an older epoch than known changes nothing.
    /// Returns the transaction a marker completed, if any, and the aborted-index entry for it if
    /// it was aborted.
    pub fn replay(
        &mut self,
        header: &BatchHeader,
        base_offset: i64,
        marker: Option<Marker>,
    ) -> Option<(CompletedTxn, Option<AbortedTxn>)> {
        if header.producer_id < 0 {
            return None;
        }
        let current = self.producers.get(&header.producer_id).copied();
        if current.is_some_and(|c| header.producer_epoch < c.epoch) {
            return None;
        }
        let b = AppendedBatch {
            header,
            base_offset,
            marker,
        };
        let (next, completed) = step(current, &b, None).ok().flatten()?;
        let aborted = self.apply(ProducerUpdate {
            entries: vec![next],
            completed: completed.into_iter().collect(),
        });
        completed.map(|c| (c, aborted.first().copied()))
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms`), except those with an open transaction. Returns
    /// how many were removed.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.has_open_txn() || now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }
}

/// One batch of producer `current` (None: unknown), checked as an append from `origin`, or
/// replayed as is (`None`: a batch already in the log). Returns the producer's next entry and
/// the transaction a marker completed, or `None` for a control batch that is not a marker.
fn step(
    current: Option<ProducerEntry>,
    b: &AppendedBatch<'_>,
    origin: Option<AppendOrigin>,
) -> Result<Option<(ProducerEntry, Option<CompletedTxn>)>, ProducerStateError> {
    let validate = origin.is_some();
    let h = b.header;
    let pid = h.producer_id;
    let epoch = h.producer_epoch;
    let base = b.base_offset;
    if h.is_control() {
        let Some(marker) = b.marker else {
            return Ok(None);
        };
        let mut next = current.unwrap_or_else(|| ProducerEntry::new(pid, epoch, -1));
        if validate {
            // Kafka's rule for transaction versions 0/1: a marker may carry the current epoch
            // (markers are written with the transaction's epoch) or a newer one (after fencing).
            if current.is_some() && epoch < next.epoch {
                return Err(ProducerStateError::InvalidProducerEpoch(format!(
                    "epoch of producer {pid} at offset {base} is {epoch}, which is smaller \
                     than the last seen epoch {} (transaction marker)",
                    next.epoch
                )));
            }
            if next.coordinator_epoch > marker.coordinator_epoch {
                return Err(ProducerStateError::CoordinatorFenced(format!(
                    "invalid coordinator epoch for producer {pid} at offset {base}: {} \
                     (zombie), {} (current)",
                    marker.coordinator_epoch, next.coordinator_epoch
                )));
            }
        }
        // Only a non-empty transaction completes: a marker without data in this partition moves
        // no offset and needs no index entry.
        let completed = next.has_open_txn().then_some(CompletedTxn {
            producer_id: pid,
            first_offset: next.current_txn_first_offset,
            last_offset: base,
            aborted: marker.control_type == ControlType::Abort,
        });
        next.set_epoch(epoch);
        next.coordinator_epoch = marker.coordinator_epoch;
        next.current_txn_first_offset = -1;
        next.last_timestamp_ms = h.max_timestamp;
        return Ok(Some((next, completed)));
    }
    let first_seq = h.base_sequence;
    let last_seq = last_sequence(first_seq, h.last_offset_delta);
    if validate && let Some(cur) = current {
        if epoch < cur.epoch {
            // Kafka answers every origin but replication so (a coordinator's write carries the
            // epoch of the producer it writes for).
            return Err(ProducerStateError::InvalidProducerEpoch(format!(
                "epoch of producer {pid} at offset {base} is {epoch}, which is smaller \
                 than the last seen epoch {}",
                cur.epoch
            )));
        }
        if origin != Some(AppendOrigin::Client) {
            // Coordinator writes carry no sequence to check.
        } else if epoch != cur.epoch {
            if first_seq != 0 {
                return Err(ProducerStateError::OutOfOrderSequence(format!(
                    "invalid sequence number for new epoch {epoch} of producer {pid} at \
                     offset {base}: {first_seq} (must be 0; current epoch {})",
                    cur.epoch
                )));
            }
        } else if let Some(last) = cur.last_batch()
            && !in_sequence(last.last_sequence, first_seq)
        {
            return Err(ProducerStateError::OutOfOrderSequence(format!(
                "out of order sequence number for producer {pid} at offset {base}: \
                 {first_seq} (incoming), {} (current end sequence)",
                last.last_sequence
            )));
        }
    }
    let mut next = current.unwrap_or_else(|| ProducerEntry::new(pid, epoch, -1));
    next.push_batch(
        epoch,
        ProducerBatch {
            first_sequence: first_seq,
            last_sequence: last_seq,
            first_offset: base,
            last_offset: base + i64::from(h.last_offset_delta),
        },
        h.max_timestamp,
    );
    if next.has_open_txn() && !h.is_transactional() {
        if validate {
            return Err(ProducerStateError::InvalidTxnState(format!(
                "expected a transactional write from producer {pid} at offset {base}: its \
                 transaction from offset {} is open",
                next.current_txn_first_offset
            )));
        }
    } else if !next.has_open_txn() && h.is_transactional() {
        next.current_txn_first_offset = base;
    }
    Ok(Some((next, None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        let mut b = RecordBatchBuilder::new(Compression::None)
            .base_timestamp(1_000)
            .producer(pid, epoch, seq);
        for i in 0..records {
            b = b.record(Record {
                offset_delta: i,
                timestamp_delta: 0,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Vec::new(),
            });
        }
        BatchHeader::parse(&b.build().expect("batch")).expect("header")
    }

    /// Checks and applies one batch at `base`; returns the check's outcome.
    fn append(
        state: &mut ProducerState,
        h: &BatchHeader,
        base: i64,
    ) -> Result<Option<ProducerBatch>, ProducerStateError> {
        match state.check(&[AppendedBatch {
            header: h,
            base_offset: base,
            marker: None,
        }])? {
            ProducerCheck::Append(u) => {
                state.apply(u);
                Ok(None)
            }
            ProducerCheck::Duplicate(d) => Ok(Some(d)),
        }
    }

    #[test]
    fn retry_of_each_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut s = ProducerState::new();
        // Six batches of 2 records: sequences 0-1, 2-3, ..., 10-11 at offsets 0, 2, ..., 10.
        for n in 0..6 {
            assert_eq!(
                append(&mut s, &header(7, 0, n * 2, 2), i64::from(n) * 2),
                Ok(None)
            );
        }
        for n in 1..6 {
            let dup = append(&mut s, &header(7, 0, n * 2, 2), 100).expect("duplicate");
            assert_eq!(
                dup,
                Some(ProducerBatch {
                    first_sequence: n * 2,
                    last_sequence: n * 2 + 1,
                    first_offset: i64::from(n) * 2,
                    last_offset: i64::from(n) * 2 + 1,
                })
            );
        }
        // The first batch fell out of the window: it is now an out-of-order sequence.
        assert!(matches!(
            append(&mut s, &header(7, 0, 0, 2), 100),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        assert_eq!(s.get(7).map(|e| e.batches().len()), Some(5));
    }

    #[test]
    fn sequence_gap_is_out_of_order_and_changes_nothing() {
        let mut s = ProducerState::new();
        append(&mut s, &header(1, 0, 0, 3), 0).expect("first");
        let before = s.clone();
        assert!(matches!(
            append(&mut s, &header(1, 0, 4, 1), 3),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        assert_eq!(s, before);
        assert_eq!(append(&mut s, &header(1, 0, 3, 1), 3), Ok(None));
    }

    #[test]
    fn stale_epoch_is_invalid_producer_epoch() {
        let mut s = ProducerState::new();
        append(&mut s, &header(1, 3, 0, 1), 0).expect("first");
        assert!(matches!(
            append(&mut s, &header(1, 2, 1, 1), 1),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn epoch_bump_restarts_sequences_at_zero() {
        let mut s = ProducerState::new();
        append(&mut s, &header(1, 0, 0, 5), 0).expect("first");
        assert!(matches!(
            append(&mut s, &header(1, 1, 5, 1), 5),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        assert_eq!(append(&mut s, &header(1, 1, 0, 1), 5), Ok(None));
        let e = s.get(1).expect("entry");
        assert_eq!((e.epoch, e.batches().len()), (1, 1));
        // The old epoch's batches no longer count as duplicates.
        assert!(matches!(
            append(&mut s, &header(1, 0, 0, 5), 6),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn unknown_producer_may_start_at_any_sequence() {
        let mut s = ProducerState::new();
        assert_eq!(append(&mut s, &header(9, 4, 17, 2), 0), Ok(None));
        assert_eq!(append(&mut s, &header(9, 4, 19, 1), 2), Ok(None));
    }

    #[test]
    fn sequence_wraps_after_i32_max() {
        let mut s = ProducerState::new();
        append(&mut s, &header(1, 0, i32::MAX - 1, 2), 0).expect("first");
        assert_eq!(
            s.get(1)
                .and_then(|e| e.last_batch())
                .map(|b| b.last_sequence),
            Some(i32::MAX)
        );
        assert_eq!(append(&mut s, &header(1, 0, 0, 1), 2), Ok(None));
        assert_eq!(last_sequence(i32::MAX, 2), 1);
    }

    #[test]
    fn two_batches_of_one_producer_in_one_append_are_checked_in_order() {
        let s = ProducerState::new();
        let a = header(1, 0, 0, 2);
        let b = header(1, 0, 2, 2);
        let gap = header(1, 0, 5, 1);
        let ok = s.check(&[
            AppendedBatch {
                header: &a,
                base_offset: 0,
                marker: None,
            },
            AppendedBatch {
                header: &b,
                base_offset: 2,
                marker: None,
            },
        ]);
        assert!(
            matches!(ok, Ok(ProducerCheck::Append(ref u)) if u.entries.len() == 1 && u.entries[0].batches().len() == 2)
        );
        assert!(
            s.check(&[
                AppendedBatch {
                    header: &a,
                    base_offset: 0,
                    marker: None,
                },
                AppendedBatch {
                    header: &gap,
                    base_offset: 2,
                    marker: None,
                },
            ])
            .is_err()
        );
    }

    #[test]
    fn replay_rebuilds_what_checked_appends_built() {
        let mut live = ProducerState::new();
        let mut rebuilt = ProducerState::new();
        let mut offset = 0;
        for (pid, epoch, seq, n) in [
            (1, 0, 0, 2),
            (2, 0, 0, 1),
            (1, 0, 2, 3),
            (1, 1, 0, 1),
            (2, 0, 1, 1),
        ] {
            let h = header(pid, epoch, seq, n);
            append(&mut live, &h, offset).expect("append");
            rebuilt.replay(&h, offset, None);
            offset += i64::from(n);
        }
        assert_eq!(live, rebuilt);
    }

    #[test]
    fn producers_expire_after_the_expiration_interval() {
        let mut s = ProducerState::new();
        append(&mut s, &header(1, 0, 0, 1), 0).expect("append");
        // The batch's max timestamp is 1_000.
        assert_eq!(s.remove_expired(1_999, 1_000), 0);
        assert_eq!(s.remove_expired(2_000, 1_000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn batches_without_producer_id_are_ignored() {
        let s = ProducerState::new();
        let h = header(-1, -1, -1, 3);
        assert_eq!(
            s.check(&[AppendedBatch {
                header: &h,
                base_offset: 0,
                marker: None,
            }]),
            Ok(ProducerCheck::Append(ProducerUpdate::default()))
        );
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        let mut b = RecordBatchBuilder::new(Compression::None)
            .base_timestamp(1_000)
            .producer(pid, epoch, seq)
            .transactional(true);
        for i in 0..records {
            b = b.record(Record {
                offset_delta: i,
                timestamp_delta: 0,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Vec::new(),
            });
        }
        BatchHeader::parse(&b.build().expect("batch")).expect("header")
    }

    fn marker_header(pid: i64, epoch: i16) -> BatchHeader {
        let m = Marker {
            control_type: ControlType::Commit,
            coordinator_epoch: 0,
        };
        let b = weir_protocol::control::marker_batch(pid, epoch, m, 2_000).expect("marker");
        BatchHeader::parse(&b).expect("header")
    }

    /// Checks and applies a marker at `base`; returns the aborted-index entries it made.
    fn end_txn(
        state: &mut ProducerState,
        pid: i64,
        epoch: i16,
        control_type: ControlType,
        coordinator_epoch: i32,
        base: i64,
    ) -> Result<Vec<AbortedTxn>, ProducerStateError> {
        let h = marker_header(pid, epoch);
        match state.check(&[AppendedBatch {
            header: &h,
            base_offset: base,
            marker: Some(Marker {
                control_type,
                coordinator_epoch,
            }),
        }])? {
            ProducerCheck::Append(u) => Ok(state.apply(u)),
            ProducerCheck::Duplicate(_) => panic!("a marker is never a duplicate"),
        }
    }

    #[test]
    fn first_transactional_batch_opens_the_transaction_and_its_marker_closes_it() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 0, 0, 2), 10).expect("first");
        append(&mut s, &txn_header(1, 0, 2, 3), 12).expect("second");
        assert_eq!(s.get(1).map(|e| e.current_txn_first_offset), Some(10));
        assert_eq!(s.first_undecided_offset(), Some(10));
        let aborted = end_txn(&mut s, 1, 0, ControlType::Commit, 0, 15).expect("commit");
        assert!(aborted.is_empty());
        assert_eq!(s.get(1).map(|e| e.current_txn_first_offset), Some(-1));
        assert_eq!(s.first_undecided_offset(), None);
        // The next transactional batch opens a new transaction.
        append(&mut s, &txn_header(1, 0, 5, 1), 16).expect("next txn");
        assert_eq!(s.first_undecided_offset(), Some(16));
    }

    #[test]
    fn abort_yields_an_index_entry_whose_lso_is_the_next_open_transaction() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 0, 0, 2), 0).expect("p1");
        append(&mut s, &txn_header(2, 0, 0, 2), 2).expect("p2");
        let aborted = end_txn(&mut s, 1, 0, ControlType::Abort, 0, 4).expect("abort");
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 4,
                last_stable_offset: 2,
            }]
        );
        let aborted = end_txn(&mut s, 2, 0, ControlType::Abort, 0, 5).expect("abort 2");
        assert_eq!(aborted.first().map(|a| a.last_stable_offset), Some(6));
    }

    #[test]
    fn non_transactional_batch_during_an_open_transaction_is_invalid_txn_state() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 0, 0, 1), 0).expect("txn");
        let before = s.clone();
        assert!(matches!(
            append(&mut s, &header(1, 0, 1, 1), 1),
            Err(ProducerStateError::InvalidTxnState(_))
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn marker_with_an_older_epoch_is_refused_and_a_newer_one_bumps_the_epoch() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 3, 0, 1), 0).expect("txn");
        assert!(matches!(
            end_txn(&mut s, 1, 2, ControlType::Commit, 0, 1),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
        // Fencing: the coordinator aborts with the bumped epoch.
        let aborted = end_txn(&mut s, 1, 4, ControlType::Abort, 0, 1).expect("abort");
        assert_eq!(aborted.len(), 1);
        assert_eq!(s.get(1).map(|e| e.epoch), Some(4));
        // The old epoch's data is now fenced.
        assert!(matches!(
            append(&mut s, &txn_header(1, 3, 1, 1), 2),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn marker_from_an_older_coordinator_epoch_is_fenced() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 0, 0, 1), 0).expect("txn");
        end_txn(&mut s, 1, 0, ControlType::Commit, 5, 1).expect("commit");
        append(&mut s, &txn_header(1, 0, 1, 1), 2).expect("txn 2");
        assert!(matches!(
            end_txn(&mut s, 1, 0, ControlType::Commit, 4, 3),
            Err(ProducerStateError::CoordinatorFenced(_))
        ));
    }

    #[test]
    fn marker_without_an_open_transaction_completes_nothing() {
        let mut s = ProducerState::new();
        let aborted = end_txn(&mut s, 9, 0, ControlType::Abort, 0, 0).expect("abort");
        assert!(aborted.is_empty());
        assert_eq!(s.get(9).map(|e| e.coordinator_epoch), Some(0));
        assert_eq!(s.first_undecided_offset(), None);
    }

    #[test]
    fn producer_with_an_open_transaction_never_expires() {
        let mut s = ProducerState::new();
        append(&mut s, &txn_header(1, 0, 0, 1), 0).expect("txn");
        append(&mut s, &header(2, 0, 0, 1), 1).expect("idempotent");
        assert_eq!(s.remove_expired(1_000_000, 1_000), 1);
        assert!(s.get(1).is_some());
    }

    #[test]
    fn replay_rebuilds_open_transactions_and_aborts() {
        let mut live = ProducerState::new();
        let mut rebuilt = ProducerState::new();
        let abort = Marker {
            control_type: ControlType::Abort,
            coordinator_epoch: 0,
        };
        let h1 = txn_header(1, 0, 0, 2);
        let h2 = txn_header(2, 0, 0, 1);
        append(&mut live, &h1, 0).expect("1");
        append(&mut live, &h2, 2).expect("2");
        let live_aborted = end_txn(&mut live, 1, 0, ControlType::Abort, 0, 3).expect("abort");
        rebuilt.replay(&h1, 0, None);
        rebuilt.replay(&h2, 2, None);
        let replayed = rebuilt.replay(&marker_header(1, 0), 3, Some(abort));
        assert_eq!(live, rebuilt);
        assert_eq!(replayed.and_then(|(_, a)| a), live_aborted.first().copied());
        assert_eq!(rebuilt.first_undecided_offset(), Some(2));
    }

    #[test]
    fn coordinator_writes_skip_sequence_and_duplicate_checks_but_not_epochs() {
        let mut s = ProducerState::new();
        // Transactional offset commits carry no sequence (-1).
        for base in 0..3 {
            let h = txn_header(1, 0, -1, 1);
            let b = AppendedBatch {
                header: &h,
                base_offset: base,
                marker: None,
            };
            match s.check_from(&[b], AppendOrigin::Coordinator) {
                Ok(ProducerCheck::Append(u)) => {
                    s.apply(u);
                }
                other => panic!("coordinator write refused: {other:?}"),
            }
        }
        assert_eq!(s.first_undecided_offset(), Some(0));
        // A client batch with those sequences would be out of order.
        assert!(append(&mut s, &txn_header(1, 0, 5, 1), 3).is_err());
        let stale = txn_header(1, -1, -1, 1);
        let b = AppendedBatch {
            header: &stale,
            base_offset: 3,
            marker: None,
        };
        assert!(matches!(
            s.check_from(&[b], AppendOrigin::Coordinator),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
    }
}
