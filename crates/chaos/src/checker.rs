//! The checker: a pure function from a run's history to a verdict, in the style of Jepsen's
//! Kafka analyses. Nothing here does I/O, so every rule is unit-tested on small hand-made
//! histories, each with one planted violation.
//!
//! The rules (Kafka's promises to a client using acks=all and idempotence):
//! - an acknowledged record is in the final full read, at the offset it was acknowledged at
//!   (read_uncommitted: every acked record; read_committed: those not in an aborted or
//!   undecided transaction);
//! - nothing is read that no producer sent;
//! - no record is stored twice (idempotence): a value is seen at one offset only, by anyone;
//! - one offset holds one value, whoever reads it;
//! - a final read returns each offset at most once and in increasing order; on a topic
//!   without transactions the offsets are dense (no control batch can sit in a gap there);
//! - per partition, one producer's records appear in the order it sent them;
//! - a consumer group's acknowledged commits never move backward, and the committed offset read
//!   back at the end is not below the last acknowledged one;
//! - read_committed never returns a record of an aborted transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::history::{Event, Isolation, TxnOutcome};

/// A (topic, partition).
pub type Tp = (String, i32);

/// One broken rule, with what is needed to find it in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acked record is not where it was acked in a final read.
    LostAck {
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
        reader: String,
    },
    /// A reader returned a value no producer sent.
    Phantom {
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
        reader: String,
    },
    /// One value was seen (read or acked) at more than one position.
    Duplicate {
        value: String,
        positions: Vec<(String, i32, i64)>,
    },
    /// One offset was seen (read or acked) holding different values.
    Divergence {
        topic: String,
        partition: i32,
        offset: i64,
        values: Vec<String>,
    },
    /// A final read returned an offset not above the one before it.
    OffsetNotIncreasing {
        topic: String,
        partition: i32,
        reader: String,
        offset: i64,
        previous: i64,
    },
    /// A final read of a topic without transactions skipped offsets `from..to`.
    OffsetGap {
        topic: String,
        partition: i32,
        reader: String,
        from: i64,
        to: i64,
    },
    /// A producer's record came before one it sent earlier, in one partition.
    OutOfOrder {
        topic: String,
        partition: i32,
        reader: String,
        producer: String,
        offset: i64,
        value: String,
        after_value: String,
    },
    /// A group's committed offset moved backward.
    CommitBackward {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        previous: i64,
    },
    /// read_committed returned a record of an aborted transaction.
    AbortedRead {
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
        reader: String,
    },
    /// Records were acked on a partition that no final read covered: the run cannot vouch
    /// for them.
    MissingFinalRead {
        topic: String,
        partition: i32,
        isolation: Isolation,
    },
}

impl Violation {
    /// A short stable name, for counting by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::LostAck { .. } => "lost-ack",
            Violation::Phantom { .. } => "phantom",
            Violation::Duplicate { .. } => "duplicate",
            Violation::Divergence { .. } => "divergence",
            Violation::OffsetNotIncreasing { .. } => "offset-not-increasing",
            Violation::OffsetGap { .. } => "offset-gap",
            Violation::OutOfOrder { .. } => "out-of-order",
            Violation::CommitBackward { .. } => "commit-backward",
            Violation::AbortedRead { .. } => "aborted-read",
            Violation::MissingFinalRead { .. } => "missing-final-read",
        }
    }
}

/// The verdict and the figures of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Records handed to producers.
    pub sends: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Acked records a final read was required to hold, counted once per final read.
    pub acked_checked: u64,
    /// Records whose send failed (may or may not be stored).
    pub indeterminate: u64,
    /// Records returned by readers (group consumers and final reads).
    pub reads: u64,
    pub commits_acked: u64,
    /// Client errors not about one record (fatal producer errors, failed transaction calls).
    pub client_errors: u64,
    pub txns_by_outcome: BTreeMap<String, u64>,
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Per fault kind, the longest time from a fault's start until every partition (of the
    /// topics without transactions) had acknowledged a record again.
    pub unavailable_ms_max_by_kind: BTreeMap<String, u64>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn count(&self, kind: &str) -> usize {
        self.violations.iter().filter(|v| v.kind() == kind).count()
    }

    pub fn violations_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut by_kind = BTreeMap::new();
        for v in &self.violations {
            *by_kind.entry(v.kind()).or_insert(0) += 1;
        }
        by_kind
    }
}

/// What is known of one sent value.
struct Sent {
    producer: String,
    /// Its place in its producer's sends.
    seq: u64,
    transactional: bool,
}

/// Checks a whole history. Pure: the same history gives the same report.
pub fn check(events: &[Event]) -> Report {
    let mut report = Report::default();
    let mut sent: HashMap<&str, Sent> = HashMap::new();
    let mut producer_seq: HashMap<&str, u64> = HashMap::new();
    let mut txn_topics: BTreeSet<&str> = BTreeSet::new();
    let mut txn_outcome: HashMap<&str, TxnOutcome> = HashMap::new();
    // (tp, offset, value) acked, in history order.
    let mut acks: Vec<(Tp, i64, &str)> = Vec::new();
    let mut acks_anywhere: Vec<(Tp, &str)> = Vec::new();
    // Non-transactional ack times per tp, for unavailability.
    let mut ack_times: BTreeMap<Tp, Vec<u64>> = BTreeMap::new();
    // Every position a value was seen at, and every value an offset was seen holding.
    let mut positions_of: HashMap<&str, BTreeSet<(Tp, i64)>> = HashMap::new();
    let mut values_at: HashMap<(Tp, i64), BTreeSet<&str>> = HashMap::new();
    // Final reads: (reader, isolation) -> tp -> [(offset, value)] in read order.
    type FinalReads<'a> = BTreeMap<(String, Isolation), BTreeMap<Tp, Vec<(i64, &'a str)>>>;
    let mut finals: FinalReads = BTreeMap::new();
    let mut final_ends: BTreeMap<(String, Isolation), BTreeMap<Tp, i64>> = BTreeMap::new();
    let mut committed_reads: Vec<(&str, Isolation, Tp, i64, &str)> = Vec::new();
    let mut commits: BTreeMap<(String, Tp), i64> = BTreeMap::new();
    let mut faults: Vec<(u64, &str)> = Vec::new();
    let mut end_ms = 0;

    for event in events {
        match event {
            Event::Send {
                producer,
                topic,
                value,
                transactional,
                ..
            } => {
                report.sends += 1;
                let seq = producer_seq.entry(producer).or_insert(0);
                *seq += 1;
                if *transactional {
                    txn_topics.insert(topic);
                }
                sent.insert(
                    value,
                    Sent {
                        producer: producer.clone(),
                        seq: *seq,
                        transactional: *transactional,
                    },
                );
            }
            Event::Ack {
                t_ms,
                topic,
                partition,
                offset,
                value,
                ..
            } => {
                report.acked += 1;
                let tp = (topic.clone(), *partition);
                if !sent.get(value.as_str()).is_some_and(|s| s.transactional) {
                    ack_times.entry(tp.clone()).or_default().push(*t_ms);
                }
                // An ack without an offset (librdkafka reports -1001 when the broker answered
                // a retried batch as a duplicate without its offset): the record must be in
                // the final reads somewhere, at one offset.
                if *offset < 0 {
                    acks_anywhere.push((tp, value));
                    continue;
                }
                positions_of
                    .entry(value)
                    .or_default()
                    .insert((tp.clone(), *offset));
                values_at
                    .entry((tp.clone(), *offset))
                    .or_default()
                    .insert(value);
                acks.push((tp, *offset, value));
            }
            Event::SendFailed { .. } => report.indeterminate += 1,
            Event::TxnEnd {
                outcome, values, ..
            } => {
                let name = match outcome {
                    TxnOutcome::Committed => "committed",
                    TxnOutcome::Aborted => "aborted",
                    TxnOutcome::Unknown => "unknown",
                };
                *report.txns_by_outcome.entry(name.into()).or_insert(0) += 1;
                for v in values {
                    txn_outcome.insert(v, *outcome);
                }
            }
            Event::Read {
                reader,
                isolation,
                final_read,
                topic,
                partition,
                offset,
                value,
                ..
            } => {
                report.reads += 1;
                let tp = (topic.clone(), *partition);
                positions_of
                    .entry(value)
                    .or_default()
                    .insert((tp.clone(), *offset));
                values_at
                    .entry((tp.clone(), *offset))
                    .or_default()
                    .insert(value);
                if *isolation == Isolation::ReadCommitted {
                    committed_reads.push((reader, *isolation, tp.clone(), *offset, value));
                }
                if !sent.contains_key(value.as_str()) {
                    report.violations.push(Violation::Phantom {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        value: value.clone(),
                        reader: reader.clone(),
                    });
                }
                if *final_read {
                    finals
                        .entry((reader.clone(), *isolation))
                        .or_default()
                        .entry(tp)
                        .or_default()
                        .push((*offset, value));
                }
            }
            Event::FinalReadEnd {
                reader,
                isolation,
                topic,
                partition,
                end_offset,
                ..
            } => {
                final_ends
                    .entry((reader.clone(), *isolation))
                    .or_default()
                    .insert((topic.clone(), *partition), *end_offset);
            }
            Event::CommitAcked {
                group,
                topic,
                partition,
                offset,
                ..
            }
            | Event::CommittedFetched {
                group,
                topic,
                partition,
                offset,
                ..
            } => {
                if matches!(event, Event::CommitAcked { .. }) {
                    report.commits_acked += 1;
                }
                let key = (group.clone(), (topic.clone(), *partition));
                let previous = commits.entry(key).or_insert(*offset);
                if *offset < *previous {
                    report.violations.push(Violation::CommitBackward {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        previous: *previous,
                    });
                } else {
                    *previous = *offset;
                }
            }
            Event::Fault { t_ms, kind, .. } => {
                *report.faults_by_kind.entry(kind.clone()).or_insert(0) += 1;
                faults.push((*t_ms, kind));
            }
            Event::Healed { .. } => {}
            Event::ClientError { .. } => report.client_errors += 1,
        }
        end_ms = end_ms.max(event_time(event));
    }

    // read_committed must not see aborted data. Reads come before the TxnEnd that names
    // their transaction often enough, so this runs after the whole history is indexed.
    for (reader, _, (topic, partition), offset, value) in committed_reads {
        if txn_outcome.get(value) == Some(&TxnOutcome::Aborted) {
            report.violations.push(Violation::AbortedRead {
                topic,
                partition,
                offset,
                value: value.into(),
                reader: reader.into(),
            });
        }
    }

    for (value, positions) in &positions_of {
        if positions.len() > 1 {
            report.violations.push(Violation::Duplicate {
                value: (*value).into(),
                positions: positions
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, *o))
                    .collect(),
            });
        }
    }
    let mut divergent: Vec<_> = values_at
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .collect();
    divergent.sort_by(|a, b| a.0.cmp(b.0));
    for (((topic, partition), offset), values) in divergent {
        report.violations.push(Violation::Divergence {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
            values: values.iter().map(|v| (*v).into()).collect(),
        });
    }

    // Each final read: increasing offsets, dense where no transaction wrote, producer order.
    for ((reader, _), tps) in &finals {
        for ((topic, partition), records) in tps {
            let dense = !txn_topics.contains(topic.as_str());
            let mut previous: Option<i64> = None;
            let mut last_seq_of: HashMap<&str, (u64, &str)> = HashMap::new();
            for &(offset, value) in records {
                match previous {
                    Some(p) if offset <= p => {
                        report.violations.push(Violation::OffsetNotIncreasing {
                            topic: topic.clone(),
                            partition: *partition,
                            reader: reader.clone(),
                            offset,
                            previous: p,
                        });
                    }
                    _ => {
                        let expected = previous.map_or(0, |p| p + 1);
                        if dense && offset > expected {
                            report.violations.push(Violation::OffsetGap {
                                topic: topic.clone(),
                                partition: *partition,
                                reader: reader.clone(),
                                from: expected,
                                to: offset,
                            });
                        }
                        previous = Some(offset);
                    }
                }
                if let Some(s) = sent.get(value) {
                    if let Some((last_seq, last_value)) = last_seq_of.get(s.producer.as_str())
                        && s.seq < *last_seq
                    {
                        report.violations.push(Violation::OutOfOrder {
                            topic: topic.clone(),
                            partition: *partition,
                            reader: reader.clone(),
                            producer: s.producer.clone(),
                            offset,
                            value: value.into(),
                            after_value: (*last_value).into(),
                        });
                    }
                    last_seq_of.insert(&s.producer, (s.seq, value));
                }
            }
        }
    }

    // Every acked record in every final read that must hold it.
    let acked_tps: BTreeSet<&Tp> = acks.iter().map(|(tp, _, _)| tp).collect();
    for ((reader, isolation), ends) in &final_ends {
        let held: HashSet<(&Tp, i64, &str)> = finals
            .get(&(reader.clone(), *isolation))
            .into_iter()
            .flat_map(|tps| {
                tps.iter()
                    .flat_map(|(tp, records)| records.iter().map(move |&(o, v)| (tp, o, v)))
            })
            .collect();
        for tp in &acked_tps {
            if !ends.contains_key(*tp) {
                report.violations.push(Violation::MissingFinalRead {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    isolation: *isolation,
                });
            }
        }
        let held_anywhere: HashSet<(&Tp, &str)> = held.iter().map(|(tp, _, v)| (*tp, *v)).collect();
        for (tp, value) in &acks_anywhere {
            if !ends.contains_key(tp) || !required_in(*isolation, value, &txn_outcome, &sent) {
                continue;
            }
            report.acked_checked += 1;
            if !held_anywhere.contains(&(tp, *value)) {
                report.violations.push(Violation::LostAck {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: -1,
                    value: (*value).into(),
                    reader: reader.clone(),
                });
            }
        }
        for (tp, offset, value) in &acks {
            if !ends.contains_key(tp) {
                continue;
            }
            if !required_in(*isolation, value, &txn_outcome, &sent) {
                continue;
            }
            report.acked_checked += 1;
            if !held.contains(&(tp, *offset, *value)) {
                report.violations.push(Violation::LostAck {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: *offset,
                    value: (*value).into(),
                    reader: reader.clone(),
                });
            }
        }
    }
    if final_ends.is_empty() && !acks.is_empty() {
        for tp in acked_tps {
            report.violations.push(Violation::MissingFinalRead {
                topic: tp.0.clone(),
                partition: tp.1,
                isolation: Isolation::ReadUncommitted,
            });
        }
    }

    // Unavailability: from a fault's start until every partition acked again.
    for (fault_ms, kind) in faults {
        let mut worst = 0;
        for times in ack_times.values() {
            let next = times
                .iter()
                .find(|t| **t >= fault_ms)
                .copied()
                .unwrap_or(end_ms);
            worst = worst.max(next.saturating_sub(fault_ms));
        }
        let max = report
            .unavailable_ms_max_by_kind
            .entry(kind.into())
            .or_insert(0);
        *max = (*max).max(worst);
    }
    report
}

/// Whether a final read with `isolation` must hold the acked `value`.
fn required_in(
    isolation: Isolation,
    value: &str,
    txn_outcome: &HashMap<&str, TxnOutcome>,
    sent: &HashMap<&str, Sent>,
) -> bool {
    match isolation {
        Isolation::ReadUncommitted => true,
        Isolation::ReadCommitted => match txn_outcome.get(value) {
            Some(TxnOutcome::Committed) => true,
            Some(_) => false,
            None => !sent.get(value).is_some_and(|s| s.transactional),
        },
    }
}

fn event_time(event: &Event) -> u64 {
    match event {
        Event::Send { t_ms, .. }
        | Event::Ack { t_ms, .. }
        | Event::SendFailed { t_ms, .. }
        | Event::TxnEnd { t_ms, .. }
        | Event::Read { t_ms, .. }
        | Event::FinalReadEnd { t_ms, .. }
        | Event::CommitAcked { t_ms, .. }
        | Event::CommittedFetched { t_ms, .. }
        | Event::Fault { t_ms, .. }
        | Event::Healed { t_ms, .. }
        | Event::ClientError { t_ms, .. } => *t_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "t";

    fn send(producer: &str, partition: i32, value: &str) -> Event {
        Event::Send {
            t_ms: 0,
            producer: producer.into(),
            topic: T.into(),
            partition,
            value: value.into(),
            transactional: false,
        }
    }

    fn send_txn(producer: &str, topic: &str, value: &str) -> Event {
        Event::Send {
            t_ms: 0,
            producer: producer.into(),
            topic: topic.into(),
            partition: 0,
            value: value.into(),
            transactional: true,
        }
    }

    fn ack_in(topic: &str, partition: i32, offset: i64, value: &str) -> Event {
        Event::Ack {
            t_ms: 0,
            producer: "p".into(),
            topic: topic.into(),
            partition,
            offset,
            value: value.into(),
        }
    }

    fn ack(partition: i32, offset: i64, value: &str) -> Event {
        ack_in(T, partition, offset, value)
    }

    fn read_in(
        topic: &str,
        reader: &str,
        isolation: Isolation,
        final_read: bool,
        offset: i64,
        value: &str,
    ) -> Event {
        Event::Read {
            t_ms: 0,
            reader: reader.into(),
            isolation,
            final_read,
            topic: topic.into(),
            partition: 0,
            offset,
            value: value.into(),
        }
    }

    fn final_read(offset: i64, value: &str) -> Event {
        read_in(T, "final", Isolation::ReadUncommitted, true, offset, value)
    }

    fn final_end_in(topic: &str, isolation: Isolation, end_offset: i64) -> Event {
        Event::FinalReadEnd {
            t_ms: 0,
            reader: "final".into(),
            isolation,
            topic: topic.into(),
            partition: 0,
            end_offset,
        }
    }

    fn final_end(end_offset: i64) -> Event {
        final_end_in(T, Isolation::ReadUncommitted, end_offset)
    }

    fn commit(offset: i64) -> Event {
        Event::CommitAcked {
            t_ms: 0,
            group: "g".into(),
            topic: T.into(),
            partition: 0,
            offset,
        }
    }

    /// Three records sent, acked and read back in full: the baseline every planted history
    /// breaks in one place.
    fn clean() -> Vec<Event> {
        vec![
            send("p", 0, "a"),
            send("p", 0, "b"),
            send("p", 0, "c"),
            ack(0, 0, "a"),
            ack(0, 1, "b"),
            ack(0, 2, "c"),
            commit(1),
            commit(3),
            final_read(0, "a"),
            final_read(1, "b"),
            final_read(2, "c"),
            final_end(3),
        ]
    }

    fn kinds(events: &[Event]) -> BTreeMap<&'static str, usize> {
        check(events).violations_by_kind()
    }

    #[test]
    fn a_clean_history_passes_and_counts_what_it_checked() {
        let report = check(&clean());
        assert!(report.is_valid(), "{:?}", report.violations);
        assert_eq!(report.acked, 3);
        assert_eq!(report.acked_checked, 3);
        assert_eq!(report.commits_acked, 2);
    }

    #[test]
    fn an_acked_record_missing_from_the_final_read_is_lost() {
        let mut h = clean();
        h.retain(|e| *e != final_read(2, "c"));
        assert_eq!(kinds(&h), BTreeMap::from([("lost-ack", 1)]));
    }

    #[test]
    fn an_acked_offset_above_the_final_end_is_lost() {
        // The high watermark went back below an ack: the final read ends before it.
        let mut h = clean();
        h.retain(|e| *e != final_read(2, "c") && *e != final_end(3));
        h.push(final_end(2));
        assert_eq!(kinds(&h), BTreeMap::from([("lost-ack", 1)]));
    }

    #[test]
    fn an_acked_record_at_another_offset_is_lost_and_duplicated() {
        let mut h = clean();
        let i = h.iter().position(|e| *e == final_read(2, "c")).unwrap();
        h[i] = final_read(3, "c");
        h.retain(|e| *e != final_end(3));
        h.push(final_end(4));
        let k = kinds(&h);
        assert_eq!(k.get("lost-ack"), Some(&1));
        assert_eq!(k.get("duplicate"), Some(&1), "seen at 2 (ack) and 3 (read)");
        assert_eq!(k.get("offset-gap"), Some(&1));
    }

    #[test]
    fn an_ack_without_an_offset_needs_the_record_somewhere() {
        let mut h = clean();
        h.push(send("p", 0, "d"));
        h.push(ack(0, -1001, "d"));
        assert_eq!(kinds(&h), BTreeMap::from([("lost-ack", 1)]));
        h.retain(|e| *e != final_end(3));
        h.push(final_read(3, "d"));
        h.push(final_end(4));
        let report = check(&h);
        assert!(report.is_valid(), "{:?}", report.violations);
    }

    #[test]
    fn a_value_nobody_sent_is_a_phantom() {
        let mut h = clean();
        h.push(read_in(T, "c1", Isolation::ReadCommitted, false, 3, "zz"));
        assert_eq!(kinds(&h), BTreeMap::from([("phantom", 1)]));
    }

    #[test]
    fn a_value_stored_twice_is_a_duplicate() {
        let mut h = clean();
        h.retain(|e| *e != final_end(3));
        h.push(final_read(3, "c"));
        h.push(final_end(4));
        assert_eq!(kinds(&h), BTreeMap::from([("duplicate", 1)]));
    }

    #[test]
    fn two_values_at_one_offset_diverge() {
        let mut h = clean();
        h.push(send("p", 0, "d"));
        h.push(read_in(T, "c1", Isolation::ReadCommitted, false, 1, "d"));
        // "d" at offset 1 also makes it a duplicate-free value: it was only seen once.
        assert_eq!(kinds(&h), BTreeMap::from([("divergence", 1)]));
    }

    #[test]
    fn a_final_read_that_goes_back_is_caught() {
        let mut h = clean();
        h.retain(|e| *e != final_end(3));
        h.push(final_read(1, "b"));
        h.push(final_end(3));
        let k = kinds(&h);
        assert_eq!(k.get("offset-not-increasing"), Some(&1));
    }

    #[test]
    fn a_gap_on_a_topic_without_transactions_is_caught() {
        let mut h = clean();
        h.retain(|e| *e != final_read(1, "b"));
        let k = kinds(&h);
        assert_eq!(k.get("offset-gap"), Some(&1));
        assert_eq!(k.get("lost-ack"), Some(&1));
    }

    #[test]
    fn a_gap_on_a_transactional_topic_is_a_control_batch() {
        let h = vec![
            send_txn("tx", "x", "a"),
            send_txn("tx", "x", "b"),
            ack_in("x", 0, 0, "a"),
            ack_in("x", 0, 1, "b"),
            Event::TxnEnd {
                t_ms: 0,
                producer: "tx".into(),
                outcome: TxnOutcome::Committed,
                values: vec!["a".into(), "b".into()],
            },
            send_txn("tx", "x", "c"),
            ack_in("x", 0, 3, "c"),
            read_in("x", "final", Isolation::ReadUncommitted, true, 0, "a"),
            read_in("x", "final", Isolation::ReadUncommitted, true, 1, "b"),
            read_in("x", "final", Isolation::ReadUncommitted, true, 3, "c"),
            final_end_in("x", Isolation::ReadUncommitted, 5),
        ];
        let report = check(&h);
        assert!(report.is_valid(), "{:?}", report.violations);
    }

    #[test]
    fn records_out_of_send_order_are_caught() {
        let mut h = clean();
        let a = h.iter().position(|e| *e == final_read(0, "a")).unwrap();
        let b = h.iter().position(|e| *e == final_read(1, "b")).unwrap();
        // The broker stored b before a: acks and reads agree, the order is wrong.
        h[a] = final_read(0, "b");
        h[b] = final_read(1, "a");
        for e in h.iter_mut() {
            if *e == ack(0, 0, "a") {
                *e = ack(0, 0, "b");
            } else if *e == ack(0, 1, "b") {
                *e = ack(0, 1, "a");
            }
        }
        assert_eq!(kinds(&h), BTreeMap::from([("out-of-order", 1)]));
    }

    #[test]
    fn a_commit_moving_back_is_caught() {
        let mut h = clean();
        h.push(commit(2));
        assert_eq!(kinds(&h), BTreeMap::from([("commit-backward", 1)]));
        let mut h = clean();
        h.push(Event::CommittedFetched {
            t_ms: 0,
            group: "g".into(),
            topic: T.into(),
            partition: 0,
            offset: 1,
        });
        assert_eq!(kinds(&h), BTreeMap::from([("commit-backward", 1)]));
    }

    #[test]
    fn read_committed_seeing_an_aborted_record_is_caught() {
        let h = vec![
            send_txn("tx", "x", "a"),
            ack_in("x", 0, 0, "a"),
            read_in("x", "c1", Isolation::ReadCommitted, false, 0, "a"),
            read_in("x", "c2", Isolation::ReadUncommitted, false, 0, "a"),
            Event::TxnEnd {
                t_ms: 0,
                producer: "tx".into(),
                outcome: TxnOutcome::Aborted,
                values: vec!["a".into()],
            },
            read_in("x", "final", Isolation::ReadUncommitted, true, 0, "a"),
            final_end_in("x", Isolation::ReadUncommitted, 2),
            final_end_in("x", Isolation::ReadCommitted, 2),
        ];
        // Only the read_committed reader is wrong; the aborted record need not be in the
        // final read_committed read, and the uncommitted one holds it.
        assert_eq!(kinds(&h), BTreeMap::from([("aborted-read", 1)]));
    }

    #[test]
    fn a_committed_transaction_must_be_in_the_read_committed_final_read() {
        let h = vec![
            send_txn("tx", "x", "a"),
            ack_in("x", 0, 0, "a"),
            Event::TxnEnd {
                t_ms: 0,
                producer: "tx".into(),
                outcome: TxnOutcome::Committed,
                values: vec!["a".into()],
            },
            read_in("x", "final", Isolation::ReadUncommitted, true, 0, "a"),
            final_end_in("x", Isolation::ReadUncommitted, 2),
            final_end_in("x", Isolation::ReadCommitted, 2),
        ];
        assert_eq!(kinds(&h), BTreeMap::from([("lost-ack", 1)]));
    }

    #[test]
    fn acks_without_any_final_read_cannot_pass() {
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::FinalReadEnd { .. }));
        assert_eq!(kinds(&h), BTreeMap::from([("missing-final-read", 1)]));
    }

    #[test]
    fn unavailability_runs_from_the_fault_to_the_next_ack_on_every_partition() {
        let at = |t_ms, partition, offset, value: &str| Event::Ack {
            t_ms,
            producer: "p".into(),
            topic: T.into(),
            partition,
            offset,
            value: value.into(),
        };
        let h = vec![
            send("p", 0, "a"),
            send("p", 1, "b"),
            send("p", 0, "c"),
            Event::Fault {
                t_ms: 100,
                kind: "kill".into(),
                target: "1".into(),
            },
            at(150, 0, 0, "a"),
            at(900, 1, 0, "b"),
            at(1000, 0, 1, "c"),
        ];
        let report = check(&h);
        assert_eq!(report.unavailable_ms_max_by_kind.get("kill"), Some(&800));
        assert_eq!(report.faults_by_kind.get("kill"), Some(&1));
    }
}
