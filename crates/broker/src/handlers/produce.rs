//! Produce: validate batches, append them in request order, then wait for
//! durability before acknowledging.
//!
//! The append happens inside [`handle`] (so requests on one connection land in
//! the order they were sent); only the wait for fdatasync is deferred into the
//! returned future. The high watermark moves when bytes are durable, so a
//! consumer never reads a record that a crash could still take back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_log::{AppendOptions, LogError};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse,
};
use weir_protocol::record::{self, BatchHeader, TimestampType as BatchTimestampType};

use crate::error::log_error_code;
use crate::partition::Partition;
use crate::topic_config::{TimestampType, TopicConfig};
use crate::{Broker, PendingReply, encode_frame, now_ms};

/// The shortest wait for durability, whatever the client's timeout says.
const DURABILITY_WAIT_MS_MIN: u64 = 1_000;

/// A partition's outcome, filled in as far as known when the append returns.
struct PartitionOutcome {
    index: i32,
    error: ErrorCode,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    durable: Option<oneshot::Receiver<Result<(), LogError>>>,
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
            durable: None,
        }
    }
}

/// Checks every batch of one partition's records; the partition's append is all or nothing.
fn validate(records: &Bytes, config: &TopicConfig, now_ms: i64) -> Result<(), (ErrorCode, String)> {
    if records.is_empty() {
        return Err((
            ErrorCode::CorruptMessage,
            "produce request carries no record batch".into(),
        ));
    }
    let max_message_bytes = usize::try_from(config.max_message_bytes).unwrap_or(0);
    for batch in record::split_batches(records) {
        let batch =
            batch.map_err(|e| (ErrorCode::CorruptMessage, format!("bad batch framing: {e}")))?;
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
            let ts = header.max_timestamp;
            let too_old = now_ms.saturating_sub(ts) > config.message_timestamp_before_max_ms;
            let too_new = ts.saturating_sub(now_ms) > config.message_timestamp_after_max_ms;
            if too_old || too_new {
                return Err((
                    ErrorCode::InvalidTimestamp,
                    format!("batch timestamp {ts} is outside the topic's allowed window"),
                ));
            }
        }
    }
    Ok(())
}

fn append_partition(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    config: &TopicConfig,
    records: Option<Bytes>,
    wants_ack: bool,
) -> PartitionOutcome {
    let index = partition.index;
    let records = records.unwrap_or_default();
    let now = now_ms();
    if let Err((code, message)) = validate(&records, config, now) {
        return PartitionOutcome::failed(index, code, Some(message));
    }
    let log_append_time_ms = match config.message_timestamp_type {
        TimestampType::LogAppendTime => Some(now),
        TimestampType::CreateTime => None,
    };
    let options = AppendOptions {
        leader_epoch: 0,
        log_append_time_ms,
    };
    let info = match partition.log.append(&records, &options) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = index, error = %e, "append failed");
            return PartitionOutcome::failed(index, log_error_code(&e), Some(e.to_string()));
        }
    };
    let rx = broker.raise_watermark_when_durable(partition, info.last_offset + 1);
    PartitionOutcome {
        index,
        error: ErrorCode::None,
        error_message: None,
        base_offset: info.base_offset,
        log_append_time_ms: info.log_append_time_ms,
        log_start_offset: info.log_start_offset,
        durable: wants_ack.then_some(rx),
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: ProduceRequest,
) -> Option<PendingReply> {
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
    // UNKNOWN_TOPIC_ID, as an unknown name is UNKNOWN_TOPIC_OR_PARTITION.
    let by_id = header.api_version >= 13;
    let unknown_topic = if by_id {
        ErrorCode::UnknownTopicId
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    let mut outcomes: Vec<(String, [u8; 16], Vec<PartitionOutcome>)> =
        Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = if by_id {
            broker.registry().by_id(&topic_data.topic_id).cloned()
        } else {
            broker.topic(&topic_data.name)
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let outcome = match topic
                .as_ref()
                .and_then(|t| t.partition(data.index).map(|p| (t, p)))
            {
                Some((topic, partition)) => {
                    append_partition(broker, partition, &topic.config, data.records, wants_ack)
                }
                None => PartitionOutcome::failed(data.index, unknown_topic, None),
            };
            partitions.push(outcome);
        }
        outcomes.push((topic_data.name, topic_data.topic_id, partitions));
    }
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
                    match tokio::time::timeout_at(deadline, durable).await {
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
                let failed = outcome.error != ErrorCode::None;
                partition_responses.push(PartitionProduceResponse {
                    index: outcome.index,
                    error_code: outcome.error.code(),
                    base_offset: if failed { -1 } else { outcome.base_offset },
                    log_append_time_ms: outcome.log_append_time_ms,
                    log_start_offset: outcome.log_start_offset,
                    error_message: outcome.error_message,
                    ..Default::default()
                });
            }
            responses.push(TopicProduceResponse {
                name,
                topic_id,
                partition_responses,
            });
        }
        let response = ProduceResponse {
            responses,
            throttle_time_ms: 0,
            ..Default::default()
        };
        encode_frame(&header, &response)
    }))
}
