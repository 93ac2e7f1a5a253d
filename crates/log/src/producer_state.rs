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
//! Transactions are not built yet: the seam is `ProducerEntry`, where the first offset of an open
//! transaction will live, and `check`, where markers (control batches) will end it.

use std::collections::HashMap;

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
            batches: [ProducerBatch::default(); PRODUCER_BATCHES_RETAINED],
            batch_count: 0,
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
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batch_count = 0;
        }
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
}

/// The outcome of checking one append.
#[derive(Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Append, then [`ProducerState::apply`] these entries.
    Append(Vec<ProducerEntry>),
    /// The append repeats this already appended batch: write nothing, answer with its offsets.
    Duplicate(ProducerBatch),
}

/// A batch of an append as the producer state sees it: its header and assigned base offset.
#[derive(Debug, Clone, Copy)]
pub struct AppendedBatch<'a> {
    pub header: &'a BatchHeader,
    pub base_offset: i64,
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
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
        ProducerState {
            producers: entries.into_iter().map(|e| (e.producer_id, e)).collect(),
        }
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

    /// Validates a client append. Batches without a producer id are ignored. Nothing changes
    /// until [`ProducerState::apply`] is called with the returned entries.
    pub fn check(
        &self,
        batches: &[AppendedBatch<'_>],
    ) -> Result<ProducerCheck, ProducerStateError> {
        // Entries as updated by earlier batches of this same append (usually one producer).
        let mut updated: Vec<ProducerEntry> = Vec::new();
        for b in batches {
            let h = b.header;
            // Markers carry no sequence; they end a transaction rather than extend one.
            if h.producer_id < 0 || h.is_control() {
                continue;
            }
            let pid = h.producer_id;
            let epoch = h.producer_epoch;
            let first_seq = h.base_sequence;
            let last_seq = last_sequence(first_seq, h.last_offset_delta);
            let base = b.base_offset;
            let known = self.producers.get(&pid);
            let current = updated
                .iter()
                .find(|e| e.producer_id == pid)
                .or(known)
                .copied();
            if let Some(cur) = current {
                // Retries are looked up first, as Kafka does before validating the sequence.
                if let Some(dup) = cur.find_duplicate(epoch, first_seq, last_seq) {
                    return Ok(ProducerCheck::Duplicate(dup));
                }
                if epoch < cur.epoch {
                    return Err(ProducerStateError::InvalidProducerEpoch(format!(
                        "epoch of producer {pid} at offset {base} is {epoch}, which is smaller \
                         than the last seen epoch {}",
                        cur.epoch
                    )));
                }
                if epoch != cur.epoch {
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
            match updated.iter_mut().find(|e| e.producer_id == pid) {
                Some(slot) => *slot = next,
                None => updated.push(next),
            }
        }
        Ok(ProducerCheck::Append(updated))
    }

    /// Stores the entries a successful [`ProducerState::check`] returned.
    pub fn apply(&mut self, entries: Vec<ProducerEntry>) {
        for e in entries {
            self.producers.insert(e.producer_id, e);
        }
    }

    /// Replays a batch already in the log (rebuild after open or truncation): no validation, as
    /// Kafka's replication origin; a batch from an older epoch than known changes nothing.
    pub fn replay(&mut self, header: &BatchHeader, base_offset: i64) {
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let pid = header.producer_id;
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(pid, header.producer_epoch, -1));
        if header.producer_epoch < entry.epoch {
            return;
        }
        entry.push_batch(
            header.producer_epoch,
            ProducerBatch {
                first_sequence: header.base_sequence,
                last_sequence: last_sequence(header.base_sequence, header.last_offset_delta),
                first_offset: base_offset,
                last_offset: base_offset + i64::from(header.last_offset_delta),
            },
            header.max_timestamp,
        );
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms`). Returns how many were removed.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }
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
        }])? {
            ProducerCheck::Append(e) => {
                state.apply(e);
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
            },
            AppendedBatch {
                header: &b,
                base_offset: 2,
            },
        ]);
        assert!(
            matches!(ok, Ok(ProducerCheck::Append(ref e)) if e.len() == 1 && e[0].batches().len() == 2)
        );
        assert!(
            s.check(&[
                AppendedBatch {
                    header: &a,
                    base_offset: 0
                },
                AppendedBatch {
                    header: &gap,
                    base_offset: 2
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
            rebuilt.replay(&h, offset);
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
                base_offset: 0
            }]),
            Ok(ProducerCheck::Append(Vec::new()))
        );
    }
}
