//! Produce: validate batches, append them in request order, then wait for
//! durability before acknowledging.
//!
//! The append happens inside [`handle`] (so requests on one connection land in
//! the order they were sent); only the wait for fdatasync is deferred into the
//! returned future. The high watermark moves when bytes are durable, so a
//! consumer never reads a record that a crash could still take back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_log::{AppendOptions, LogError};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::produce::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    ProduceRequest, ProduceResponse, TopicProduceResponse,
};
use weir_protocol::record::{self, BatchHeader, TimestampType as BatchTimestampType};

use crate::error::log_error_code;
use crate::partition::Partition;
use crate::produce_trace::ProduceTrace;
use crate::topic_config::{TimestampType, TopicConfig};
use crate::{Broker, PendingReply, encode_frame, now_ms};

/// The shortest wait for durability, whatever the client's timeout says.
const DURABILITY_WAIT_MS_MIN: u64 = 1_000;
/// Cap on one batch's decompressed records while checking keys of a
/// compacted topic's records (a zip bomb must not take the broker's memory).
const KEY_CHECK_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Kafka's client id for its own admin writes, the one writer allowed into
/// internal topics (ReplicaManager's `internalTopicsAllowed`).
const ADMIN_CLIENT_ID: &str = "__admin_client";

/// A partition's outcome, filled in as far as known when the append returns.
struct PartitionOutcome {
    index: i32,
    error: ErrorCode,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// Per-record errors (Kafka's `record_errors`): batch index is the
    /// record's index within the partition's records.
    record_errors: Vec<BatchIndexAndErrorMessage>,
    durable: Option<oneshot::Receiver<crate::DurableAck>>,
    /// acks=all: after durability here, wait for the high watermark to pass this end offset
    /// (every in-sync replica has the records) under this leader epoch.
    replicated: Option<ReplicatedWait>,
    /// KIP-951: for NOT_LEADER_OR_FOLLOWER, the leader and epoch this broker knows.
    current_leader: Option<(i32, i32)>,
}

impl PartitionOutcome {
    fn failed(index: i32, error: ErrorCode, message: Option<String>) -> PartitionOutcome {
        PartitionOutcome {
            index,
            error,
            error_message: message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            durable: None,
            replicated: None,
            current_leader: None,
        }
    }
}

struct ReplicatedWait {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
    min_insync_replicas: usize,
}

/// acks=all: waits until every in-sync replica has the records. Kafka then answers
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min.insync.replicas` meanwhile.
async fn replicated(
    wait: &ReplicatedWait,
    deadline: tokio::time::Instant,
) -> Result<(), (ErrorCode, String)> {
    let p = &wait.partition;
    match crate::wait_replicated(p, wait.end_offset, wait.leader_epoch, deadline).await {
        Err(e) => Err((ErrorCode::NotLeaderOrFollower, e.to_string())),
        Ok(false) => Err((
            ErrorCode::RequestTimedOut,
            "timed out waiting for the in-sync replicas".into(),
        )),
        Ok(true) => {
            let isr = p.isr_len().unwrap_or(0);
            if isr < wait.min_insync_replicas {
                return Err((
                    ErrorCode::NotEnoughReplicasAfterAppend,
                    format!(
                        "the in-sync replicas shrank to {isr}, below min.insync.replicas={}, \
                         after the records were appended",
                        wait.min_insync_replicas
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// Kafka's LogValidator rule for compacted topics: every record needs a key
/// (a keyless record could never be compacted away). Run only for topics whose
/// cleanup.policy includes compact, so other topics pay nothing. Returns the
/// index of each keyless record, counted across the partition's batches.
fn keyless_records(records: &Bytes) -> Result<Vec<i32>, (ErrorCode, String)> {
    let mut keyless = Vec::new();
    let mut index: i32 = 0;
    for batch in record::split_batches(records) {
        let batch =
            batch.map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch framing: {e}")))?;
        let header = BatchHeader::parse(&batch)
            .map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch header: {e}")))?;
        if header.is_control() {
            continue;
        }
        // `validate` has checked the CRC; this only walks the records.
        record::summarize_records(&batch, KEY_CHECK_DECOMPRESSED_BYTES_MAX, |r| {
            if !r.has_key {
                keyless.push(index);
            }
            index = index.saturating_add(1);
        })
        .map_err(|e| (ErrorCode::CorruptMessage, format!("bad records: {e}")))?;
    }
    Ok(keyless)
}

/// The partition error for keyless records on a compacted topic, worded as
/// Kafka's: one record error each, and a summary naming the first three.
fn keyless_refusal(index: i32, partition: &Partition, keyless: &[i32]) -> PartitionOutcome {
    let what = format!(
        "Compacted topic cannot accept message without key in topic partition {}-{}.",
        partition.topic, partition.index
    );
    let record_errors: Vec<BatchIndexAndErrorMessage> = keyless
        .iter()
        .map(|&batch_index| BatchIndexAndErrorMessage {
            batch_index,
            batch_index_error_message: Some(what.clone()),
        })
        .collect();
    let first: Vec<String> = keyless
        .iter()
        .take(3)
        .map(|i| format!("record {i}: {what}"))
        .collect();
    let mut outcome = PartitionOutcome::failed(
        index,
        ErrorCode::InvalidRecord,
        Some(format!(
            "One or more records have been rejected due to {} record errors in total, and only \
             showing the first three errors at most: [{}]",
            keyless.len(),
            first.join(", ")
        )),
    );
    outcome.record_errors = record_errors;
    outcome
}

/// Decompression cap when a compressed batch's records must be read to find
/// its real max timestamp.
const BATCH_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A batch whose header's max timestamp is replaced by the one its records
/// carry, as Kafka's validator does (some clients, such as older Sarama, send
/// -1). `range` is the batch's byte range within the partition's records.
#[derive(Debug, PartialEq, Eq)]
struct MaxTimestampFix {
    range: std::ops::Range<usize>,
    max_timestamp: i64,
}

/// The smallest and largest record timestamps of a CreateTime batch. Records
/// of an uncompressed batch are always read (cheap: the bytes were just CRC'd
/// and no key or value is decoded); a compressed batch is decompressed only if
/// its header's max timestamp is missing (-1) or below its base timestamp,
/// otherwise the header's base and max timestamps stand for its records.
fn record_timestamp_bounds(
    batch: &Bytes,
    header: &BatchHeader,
) -> Result<(i64, i64), (ErrorCode, String)> {
    let header_plausible =
        header.max_timestamp >= 0 && header.max_timestamp >= header.base_timestamp;
    if header.compression() != record::Compression::None && header_plausible {
        return Ok((header.base_timestamp, header.max_timestamp));
    }
    // Kafka's NO_TIMESTAMP (-1) is exempt from the window checks; it only
    // counts towards the max when every record has it.
    let mut min_ts = i64::MAX;
    let mut max_ts = record::NO_TIMESTAMP;
    record::summarize_records(batch, BATCH_DECOMPRESSED_BYTES_MAX, |r| {
        let ts = header.base_timestamp.saturating_add(r.timestamp_delta);
        if ts != record::NO_TIMESTAMP {
            min_ts = min_ts.min(ts);
            max_ts = max_ts.max(ts);
        }
    })
    .map_err(|e| {
        (
            ErrorCode::CorruptMessage,
            format!("records of the batch can't be read: {e}"),
        )
    })?;
    Ok((min_ts.min(max_ts), max_ts))
}

/// Checks every batch of one partition's records; the partition's append is
/// all or nothing. Returns the max-timestamp corrections to apply before the
/// append.
fn validate(
    records: &Bytes,
    config: &TopicConfig,
    now_ms: i64,
) -> Result<Vec<MaxTimestampFix>, (ErrorCode, String)> {
    if records.is_empty() {
        return Err((
            ErrorCode::CorruptMessage,
            "produce request carries no record batch".into(),
        ));
    }
    let max_message_bytes = usize::try_from(config.max_message_bytes).unwrap_or(0);
    let mut fixes = Vec::new();
    let mut batch_start = 0usize;
    for batch in record::split_batches(records) {
        let batch =
            batch.map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch framing: {e}")))?;
        let range = batch_start..batch_start + batch.len();
        batch_start = range.end;
        let header = BatchHeader::parse(&batch)
            .map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch header: {e}")))?;
        if header.total_bytes() > max_message_bytes {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "batch of {} bytes exceeds max.message.bytes {}",
                    header.total_bytes(),
                    max_message_bytes
                ),
            ));
        }
        record::verify_crc(&batch).map_err(|e| {
            (
                ErrorCode::CorruptMessage,
                format!("batch CRC check failed: {e}"),
            )
        })?;
        // Kafka's LogValidator rules for client batches: markers are written only by the
        // transaction coordinator, and a producer id needs a sequence.
        if header.is_control() {
            return Err((
                ErrorCode::InvalidRecord,
                "Clients are not allowed to write control records".into(),
            ));
        }
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err((
                ErrorCode::InvalidRecord,
                format!(
                    "Invalid sequence number {} in record batch with producerId {}",
                    header.base_sequence, header.producer_id
                ),
            ));
        }
        if header.record_count <= 0
            || i64::from(header.last_offset_delta) + 1 != i64::from(header.record_count)
        {
            return Err((
                ErrorCode::CorruptMessage,
                format!(
                    "batch says {} records but last offset delta {}",
                    header.record_count, header.last_offset_delta
                ),
            ));
        }
        if config.message_timestamp_type == TimestampType::CreateTime
            && header.timestamp_type() == BatchTimestampType::CreateTime
        {
            let (min_ts, max_ts) = record_timestamp_bounds(&batch, &header)?;
            let too_old = min_ts != record::NO_TIMESTAMP
                && now_ms.saturating_sub(min_ts) > config.message_timestamp_before_max_ms;
            let too_new = max_ts != record::NO_TIMESTAMP
                && max_ts.saturating_sub(now_ms) > config.message_timestamp_after_max_ms;
            if too_old || too_new {
                let ts = if too_old { min_ts } else { max_ts };
                return Err((
                    ErrorCode::InvalidTimestamp,
                    format!(
                        "record timestamp {ts} is outside the topic's allowed window \
                         (message.timestamp.before.max.ms / message.timestamp.after.max.ms)"
                    ),
                ));
            }
            if max_ts != header.max_timestamp {
                fixes.push(MaxTimestampFix {
                    range,
                    max_timestamp: max_ts,
                });
            }
        }
    }
    Ok(fixes)
}

/// Rewrites the max timestamps `fixes` name (and those batches' CRCs) in a
/// copy of `records`. Only batches from clients that got the header wrong pay
/// for the copy.
fn apply_max_timestamp_fixes(
    records: &Bytes,
    fixes: &[MaxTimestampFix],
) -> Result<Bytes, (ErrorCode, String)> {
    let mut copy = bytes::BytesMut::from(&records[..]);
    for fix in fixes {
        let batch = copy.get_mut(fix.range.clone()).ok_or((
            ErrorCode::CorruptMessage,
            "batch range outside the records".to_string(),
        ))?;
        record::set_max_timestamp(batch, fix.max_timestamp)
            .map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch: {e}")))?;
    }
    Ok(copy.freeze())
}

/// KIP-890 part 1: a transactional batch is appended only if its partition
/// is in the producer's open transaction (AddPartitionsToTxn came first).
/// When this broker is the id's coordinator the check is a lookup. When
/// another broker coordinates it, the batch is appended unchecked, as Kafka
/// did before 3.6: asking that coordinator (AddPartitionsToTxn with
/// verify_only, as Kafka's partition leaders do) is not done yet, and looking
/// the id up here, where it is unknown, refused every transaction that wrote
/// to a partition led by another broker.
fn verify_transactional(
    broker: &Broker,
    transactional_id: Option<&str>,
    partition: &Partition,
    records: &Bytes,
) -> Result<(), (ErrorCode, String)> {
    let Some(transactional_id) = transactional_id else {
        return Ok(());
    };
    let Some(Ok(batch)) = record::split_batches(records).next() else {
        return Ok(()); // validation reports malformed records
    };
    let Ok(header) = BatchHeader::parse(&batch) else {
        return Ok(());
    };
    if !header.is_transactional() || header.is_control() || header.producer_id < 0 {
        return Ok(());
    }
    if !broker.txn.coordinates(broker, transactional_id) {
        return Ok(());
    }
    let code = broker.txn.verify(
        transactional_id,
        header.producer_id,
        header.producer_epoch,
        &(partition.topic.clone(), partition.index),
    );
    let code = match code {
        ErrorCode::None => return Ok(()),
        // As Kafka's produce path: the old epoch's error, and a retriable
        // error while the coordinator completes the previous transaction.
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        ErrorCode::ConcurrentTransactions => ErrorCode::NotEnoughReplicas,
        other => other,
    };
    Err((
        code,
        format!(
            "partition {}-{} is not in the open transaction of transactional id {transactional_id} \
             (producer {} epoch {})",
            partition.topic, partition.index, header.producer_id, header.producer_epoch
        ),
    ))
}

fn append_partition(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    config: &TopicConfig,
    records: Option<Bytes>,
    acks: i16,
    transactional_id: Option<&str>,
    trace: &mut ProduceTrace,
) -> PartitionOutcome {
    let wants_ack = acks != 0;
    let index = partition.index;
    // Kafka checks min.insync.replicas before appending for acks=all: with too few in-sync
    // replicas nothing is written.
    let min_insync = usize::try_from(config.min_insync_replicas.max(1)).unwrap_or(1);
    if acks == -1
        && let Some(isr) = partition.isr_len()
        && isr < min_insync
    {
        return PartitionOutcome::failed(
            index,
            ErrorCode::NotEnoughReplicas,
            Some(format!(
                "{isr} in-sync replicas, fewer than min.insync.replicas={min_insync}"
            )),
        );
    }
    let mut records = records.unwrap_or_default();
    let validate_started = Instant::now();
    let now = now_ms();
    if let Err((code, message)) =
        verify_transactional(broker, transactional_id, partition, &records)
    {
        return PartitionOutcome::failed(index, code, Some(message));
    }
    let fixes = match validate(&records, config, now) {
        Ok(fixes) => fixes,
        Err((code, message)) => return PartitionOutcome::failed(index, code, Some(message)),
    };
    if !fixes.is_empty() {
        match apply_max_timestamp_fixes(&records, &fixes) {
            Ok(fixed) => records = fixed,
            Err((code, message)) => return PartitionOutcome::failed(index, code, Some(message)),
        }
    }
    if config.is_compacted() {
        match keyless_records(&records) {
            Ok(keyless) if keyless.is_empty() => {}
            Ok(keyless) => return keyless_refusal(index, partition, &keyless),
            Err((code, message)) => return PartitionOutcome::failed(index, code, Some(message)),
        }
    }
    let log_append_time_ms = match config.message_timestamp_type {
        TimestampType::LogAppendTime => Some(now),
        TimestampType::CreateTime => None,
    };
    let options = AppendOptions {
        // Each batch carries the epoch of the leadership that appended it
        // (KIP-101), which OffsetForLeaderEpoch answers from.
        leader_epoch: partition.leader_epoch(),
        log_append_time_ms,
    };
    let append_started = Instant::now();
    trace.validate += append_started.saturating_duration_since(validate_started);
    let appended = partition.log.append(&records, &options);
    trace.append += append_started.elapsed();
    let info = match appended {
        Ok(info) => info,
        // A producer's sequence or epoch refusal is the client's business, not the broker's.
        Err(e @ LogError::Producer(_)) => {
            tracing::debug!(topic = %partition.topic, partition = index, error = %e, "producer batch refused");
            return PartitionOutcome::failed(index, log_error_code(&e), Some(e.to_string()));
        }
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = index, error = %e, "append failed");
            return PartitionOutcome::failed(index, log_error_code(&e), Some(e.to_string()));
        }
    };
    // A duplicate (an idempotent producer's retry) is acknowledged with its original offsets
    // once those are durable, like any append.
    partition.appended.notify_waiters();
    if !info.duplicate {
        let traffic = &partition.traffic;
        let records_in = u64::try_from(info.last_offset - info.base_offset + 1).unwrap_or(0);
        traffic.records_in.fetch_add(records_in, Ordering::Relaxed);
        traffic
            .bytes_in
            .fetch_add(records.len() as u64, Ordering::Relaxed);
    }
    // acks=1 waits for this broker's sync alone; acks=all then also for the ISR (below).
    let rx = crate::watch_durability_timed(partition, info.last_offset + 1);
    let replicated = (acks == -1).then(|| ReplicatedWait {
        partition: Arc::clone(partition),
        end_offset: info.last_offset + 1,
        leader_epoch: options.leader_epoch,
        min_insync_replicas: min_insync,
    });
    PartitionOutcome {
        index,
        error: ErrorCode::None,
        error_message: None,
        base_offset: info.base_offset,
        log_append_time_ms: info.log_append_time_ms,
        log_start_offset: info.log_start_offset,
        record_errors: Vec::new(),
        durable: wants_ack.then_some(rx),
        replicated,
        current_leader: None,
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: ProduceRequest,
) -> Option<PendingReply> {
    let mut trace = ProduceTrace {
        handler_started: Some(Instant::now()),
        ..Default::default()
    };
    let wants_ack = request.acks != 0;
    if !matches!(request.acks, -1..=1) {
        // Kafka rejects any other acks value for the whole request.
        let response = ProduceResponse {
            responses: request
                .topic_data
                .iter()
                .map(|t| TopicProduceResponse {
                    name: t.name.clone(),
                    topic_id: t.topic_id,
                    partition_responses: t
                        .partition_data
                        .iter()
                        .map(|p| PartitionProduceResponse {
                            index: p.index,
                            error_code: ErrorCode::InvalidRequiredAcks.code(),
                            base_offset: -1,
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        };
        return Some(crate::ready(encode_frame(&header, &response)));
    }
    // v13 (KIP-516) names topics by id; an id this broker doesn't know is
    // UNKNOWN_TOPIC_ID, as an unknown name is UNKNOWN_TOPIC_OR_PARTITION (and
    // so is a partition the topic doesn't have).
    let by_id = header.api_version >= 13;
    let mut node_endpoints: Vec<NodeEndpoint> = Vec::new();
    let mut outcomes: Vec<(String, [u8; 16], Vec<PartitionOutcome>)> =
        Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = if by_id {
            broker.registry().by_id(&topic_data.topic_id).cloned()
        } else {
            broker.topic(&topic_data.name)
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        // Kafka refuses client appends to its internal topics: a stray record
        // in __consumer_offsets would be replayed as group state.
        let internal = super::admin::is_internal_topic(&topic_data.name)
            && header.client_id.as_deref() != Some(ADMIN_CLIENT_ID);
        for data in topic_data.partition_data {
            if internal && topic.is_some() {
                partitions.push(PartitionOutcome::failed(
                    data.index,
                    ErrorCode::InvalidTopicException,
                    Some(format!(
                        "Cannot append to internal topic {}",
                        topic_data.name
                    )),
                ));
                continue;
            }
            let outcome = match crate::topics::led_partition_of(topic.as_ref(), data.index, by_id) {
                Ok((topic, partition)) => append_partition(
                    broker,
                    partition,
                    &topic.config,
                    data.records,
                    request.acks,
                    request.transactional_id.as_deref(),
                    &mut trace,
                ),
                Err(error) => {
                    let mut failed = PartitionOutcome::failed(data.index, error, None);
                    if error == ErrorCode::NotLeaderOrFollower {
                        let (leader, endpoint) = broker.leader_hint(&topic_data.name, data.index);
                        failed.current_leader = Some(leader);
                        if let Some((id, host, port, rack)) = endpoint
                            && !node_endpoints
                                .iter()
                                .any(|n: &NodeEndpoint| n.node_id == id)
                        {
                            node_endpoints.push(NodeEndpoint {
                                node_id: id,
                                host,
                                port: i32::from(port),
                                rack,
                            });
                        }
                    }
                    failed
                }
            };
            partitions.push(outcome);
        }
        outcomes.push((topic_data.name, topic_data.topic_id, partitions));
    }
    trace.appended_at = Some(Instant::now());
    if !wants_ack {
        return Some(crate::ready(None));
    }
    let wait = Duration::from_millis(
        u64::try_from(request.timeout_ms)
            .unwrap_or(0)
            .max(DURABILITY_WAIT_MS_MIN),
    );
    Some(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + wait;
        let mut responses = Vec::with_capacity(outcomes.len());
        for (name, topic_id, partitions) in outcomes {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for mut outcome in partitions {
                if let Some(durable) = outcome.durable.take() {
                    let acked = tokio::time::timeout_at(deadline, durable).await;
                    if let Ok(Ok(ack)) = &acked {
                        trace.durable_at = trace.durable_at.max(Some(ack.at));
                        trace.sync = trace.sync.max(ack.sync);
                    }
                    match acked.map(|r| r.map(|ack| ack.result)) {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(e))) => {
                            outcome.error = log_error_code(&e);
                            outcome.error_message = Some(format!("not durable: {e}"));
                        }
                        Ok(Err(_)) => {
                            outcome.error = ErrorCode::KafkaStorageError;
                            outcome.error_message = Some("flusher dropped the request".into());
                        }
                        Err(_) => {
                            outcome.error = ErrorCode::RequestTimedOut;
                            outcome.error_message = Some("timed out waiting for fsync".into());
                        }
                    }
                }
                if outcome.error == ErrorCode::None
                    && let Some(wait) = outcome.replicated.take()
                    && let Err((code, message)) = replicated(&wait, deadline).await
                {
                    outcome.error = code;
                    outcome.error_message = Some(message);
                }
                let failed = outcome.error != ErrorCode::None;
                partition_responses.push(PartitionProduceResponse {
                    index: outcome.index,
                    error_code: outcome.error.code(),
                    base_offset: if failed { -1 } else { outcome.base_offset },
                    log_append_time_ms: outcome.log_append_time_ms,
                    log_start_offset: outcome.log_start_offset,
                    record_errors: outcome.record_errors,
                    error_message: outcome.error_message,
                    current_leader: outcome
                        .current_leader
                        .map(|(leader_id, leader_epoch)| LeaderIdAndEpoch {
                            leader_id,
                            leader_epoch,
                        })
                        .unwrap_or_default(),
                    ..Default::default()
                });
            }
            responses.push(TopicProduceResponse {
                name,
                topic_id,
                partition_responses,
            });
        }
        trace.replicated_at = Some(Instant::now());
        let response = ProduceResponse {
            responses,
            throttle_time_ms: 0,
            node_endpoints,
        };
        let mut frame = encode_frame(&header, &response);
        trace.encoded_at = Some(Instant::now());
        if let Some(f) = frame.as_mut() {
            f.produce_trace = Some(trace);
        }
        frame
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

    const NOW_MS: i64 = 1_700_000_000_000;

    /// A batch of records at `NOW_MS + deltas[i]`, whose header claims `max`.
    fn batch(compression: Compression, deltas: &[i64], max: Option<i64>) -> Bytes {
        let mut builder = RecordBatchBuilder::new(compression).base_timestamp(NOW_MS);
        if let Some(max) = max {
            builder = builder.max_timestamp(max);
        }
        for (i, &d) in deltas.iter().enumerate() {
            builder = builder.record(Record {
                offset_delta: i as i32,
                timestamp_delta: d,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from(vec![b'v'; 300])),
                headers: Vec::new(),
            });
        }
        builder.build().unwrap()
    }

    fn header_max(records: &Bytes) -> i64 {
        BatchHeader::parse(records).unwrap().max_timestamp
    }

    #[test]
    fn missing_max_timestamp_is_derived_from_the_records() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let records = batch(compression, &[0, 7, 3], Some(-1));
            let fixes = validate(&records, &TopicConfig::default(), NOW_MS).unwrap();
            assert_eq!(
                fixes,
                vec![MaxTimestampFix {
                    range: 0..records.len(),
                    max_timestamp: NOW_MS + 7
                }],
                "{compression:?}"
            );
            let fixed = apply_max_timestamp_fixes(&records, &fixes).unwrap();
            assert_eq!(header_max(&fixed), NOW_MS + 7);
            record::verify_crc(&fixed).expect("CRC recomputed");
            assert_eq!(&fixed[BATCH_HEADER_END..], &records[BATCH_HEADER_END..]);
        }
    }

    /// Header bytes end here; the records after it are never rewritten.
    const BATCH_HEADER_END: usize = 61;

    #[test]
    fn wrong_max_timestamp_of_an_uncompressed_batch_is_corrected() {
        let records = batch(Compression::None, &[0, 9, 2], Some(NOW_MS + 2));
        let fixes = validate(&records, &TopicConfig::default(), NOW_MS).unwrap();
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].max_timestamp, NOW_MS + 9);
    }

    #[test]
    fn a_correct_header_needs_no_fix_and_no_copy() {
        for compression in [Compression::None, Compression::Gzip] {
            let mut two = bytes::BytesMut::new();
            two.extend_from_slice(&batch(compression, &[0, 4], None));
            two.extend_from_slice(&batch(compression, &[1, 2], None));
            let fixes = validate(&two.freeze(), &TopicConfig::default(), NOW_MS).unwrap();
            assert!(fixes.is_empty(), "{compression:?}");
        }
    }

    #[test]
    fn only_the_wrong_batch_of_several_is_rewritten() {
        let mut two = bytes::BytesMut::new();
        let good = batch(Compression::None, &[0, 4], None);
        let bad = batch(Compression::None, &[0, 5], Some(-1));
        two.extend_from_slice(&good);
        two.extend_from_slice(&bad);
        let records = two.freeze();
        let fixes = validate(&records, &TopicConfig::default(), NOW_MS).unwrap();
        assert_eq!(
            fixes,
            vec![MaxTimestampFix {
                range: good.len()..records.len(),
                max_timestamp: NOW_MS + 5
            }]
        );
        let fixed = apply_max_timestamp_fixes(&records, &fixes).unwrap();
        assert_eq!(&fixed[..good.len()], &good[..]);
        assert_eq!(header_max(&fixed.slice(good.len()..)), NOW_MS + 5);
    }

    #[test]
    fn timestamp_window_applies_to_record_timestamps_not_the_header() {
        let config = TopicConfig {
            message_timestamp_before_max_ms: 60_000,
            message_timestamp_after_max_ms: 60_000,
            ..TopicConfig::default()
        };
        // The header's max looks fine, but one record is two hours old.
        let old = batch(Compression::None, &[0, -7_200_000], Some(NOW_MS));
        let (code, message) = validate(&old, &config, NOW_MS).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidTimestamp, "{message}");
        // A header of -1 hides a record an hour in the future.
        let future = batch(Compression::None, &[0, 3_600_000], Some(-1));
        let (code, _) = validate(&future, &config, NOW_MS).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidTimestamp);
        let fine = batch(Compression::None, &[0, 30_000], None);
        validate(&fine, &config, NOW_MS).unwrap();
    }

    #[test]
    fn control_batches_and_producer_ids_without_sequence_are_invalid_record() {
        let marker = weir_protocol::control::marker_batch(
            7,
            0,
            weir_protocol::control::Marker {
                control_type: weir_protocol::control::ControlType::Abort,
                coordinator_epoch: 0,
            },
            NOW_MS,
        )
        .unwrap();
        let (code, message) = validate(&marker, &TopicConfig::default(), NOW_MS).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidRecord);
        assert!(message.contains("control records"), "{message}");
        let no_sequence = RecordBatchBuilder::new(Compression::None)
            .base_timestamp(NOW_MS)
            .producer(7, 0, -1)
            .transactional(true)
            .record(Record {
                offset_delta: 0,
                timestamp_delta: 0,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .build()
            .unwrap();
        let (code, _) = validate(&no_sequence, &TopicConfig::default(), NOW_MS).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidRecord);
    }
}
