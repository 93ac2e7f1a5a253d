//! ListOffsets (earliest, latest, max timestamp, by time) and OffsetForLeaderEpoch.

use std::sync::Arc;

use weir_log::Log;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use weir_protocol::messages::offset_for_leader_epoch::{
    EpochEndOffset, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
};
use weir_protocol::record::{self, BatchHeader};

use crate::Broker;
use crate::error::log_error_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
/// Decompression cap when searching one batch for a timestamp.
const BATCH_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The first record at or after `ts_ms`: the log finds the batch, then we look
/// inside it, because Kafka answers with a record's offset, not a batch's.
fn offset_for_time(log: &Log, ts_ms: i64, limit: i64) -> Result<(i64, i64), ErrorCode> {
    let Some((batch_offset, _)) = log
        .offset_for_timestamp(ts_ms)
        .map_err(|e| log_error_code(&e))?
    else {
        return Ok((-1, -1));
    };
    if batch_offset >= limit {
        return Ok((-1, -1));
    }
    let result = log
        .read(batch_offset, 1, limit)
        .map_err(|e| log_error_code(&e))?;
    let mut bytes = Vec::with_capacity(result.bytes);
    result
        .read_into(&mut bytes)
        .map_err(|_| ErrorCode::KafkaStorageError)?;
    let bytes = bytes::Bytes::from(bytes);
    for batch in record::split_batches(&bytes) {
        let Ok(batch) = batch else { break };
        let Ok(header) = BatchHeader::parse(&batch) else {
            break;
        };
        if header.max_timestamp < ts_ms {
            continue;
        }
        if header.timestamp_type() == record::TimestampType::LogAppendTime {
            return Ok((header.base_offset, header.max_timestamp));
        }
        if let Ok(records) = record::decode_records(&batch, BATCH_DECOMPRESSED_BYTES_MAX) {
            for r in records {
                let record_ts = header.base_timestamp + r.timestamp_delta;
                let offset = header.base_offset + i64::from(r.offset_delta);
                if record_ts >= ts_ms && offset < limit {
                    return Ok((offset, record_ts));
                }
            }
        }
        return Ok((header.base_offset, header.max_timestamp));
    }
    Ok((-1, -1))
}

pub fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == 1;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse {
                        partition_index: p.partition_index,
                        timestamp: -1,
                        offset: -1,
                        leader_epoch: -1,
                        ..Default::default()
                    };
                    let partition = match crate::topics::led_partition_of(
                        topic.as_ref(),
                        p.partition_index,
                        false,
                    ) {
                        Ok((_, partition)) => partition,
                        Err(error) => {
                            out.error_code = error.code();
                            return out;
                        }
                    };
                    if let Some(error) =
                        epoch_mismatch(p.current_leader_epoch, partition.leader_epoch())
                    {
                        out.error_code = error.code();
                        return out;
                    }
                    out.leader_epoch = partition.leader_epoch();
                    let log = &partition.log;
                    let limit = if read_committed {
                        log.last_stable_offset()
                    } else {
                        log.high_watermark()
                    };
                    let answer = match p.timestamp {
                        LATEST => Ok((limit, -1)),
                        EARLIEST | EARLIEST_LOCAL => Ok((log.log_start_offset(), -1)),
                        LATEST_TIERED => Ok((-1, -1)),
                        // The record that holds the largest timestamp, not its batch's
                        // base offset (Kafka 3.8+, KAFKA-16310): the first record of the
                        // first batch at that timestamp.
                        MAX_TIMESTAMP => match log.max_timestamp() {
                            Some((ts, batch_offset)) if batch_offset < limit => {
                                offset_for_time(log, ts, limit)
                            }
                            _ => Ok((-1, -1)),
                        },
                        ts if ts >= 0 => offset_for_time(log, ts, limit),
                        _ => Err(ErrorCode::InvalidRequest),
                    };
                    match answer {
                        Ok((offset, timestamp)) => {
                            out.offset = offset;
                            out.timestamp = timestamp;
                            if header.api_version == 0 {
                                out.old_style_offsets = if offset >= 0 {
                                    vec![offset]
                                } else {
                                    Vec::new()
                                };
                            }
                        }
                        Err(code) => out.error_code = code.code(),
                    }
                    out
                })
                .collect();
            ListOffsetsTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse {
        throttle_time_ms: 0,
        topics,
    }
}

/// Kafka's check of a client's `current_leader_epoch` against the leader's:
/// older is FENCED_LEADER_EPOCH (the client's metadata is stale), newer is
/// UNKNOWN_LEADER_EPOCH (this broker's is); -1 skips the check.
pub(crate) fn epoch_mismatch(current_leader_epoch: i32, leader_epoch: i32) -> Option<ErrorCode> {
    if current_leader_epoch < 0 || current_leader_epoch == leader_epoch {
        None
    } else if current_leader_epoch < leader_epoch {
        Some(ErrorCode::FencedLeaderEpoch)
    } else {
        Some(ErrorCode::UnknownLeaderEpoch)
    }
}

/// The end of the asked epoch from the log's leader-epoch cache: the largest
/// epoch at or below it and where it ended (the next epoch's start, or the
/// log end for the current one).
pub fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut out = EpochEndOffset {
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1,
                        ..Default::default()
                    };
                    match crate::topics::led_partition_of(topic.as_ref(), p.partition, false) {
                        Err(error) => out.error_code = error.code(),
                        Ok((_, partition)) => {
                            if let Some(error) =
                                epoch_mismatch(p.current_leader_epoch, partition.leader_epoch())
                            {
                                out.error_code = error.code();
                            } else if p.leader_epoch >= 0
                                && let Some((epoch, end)) =
                                    partition.log.end_offset_for_epoch(p.leader_epoch)
                            {
                                out.leader_epoch = epoch;
                                out.end_offset = end;
                            }
                        }
                    }
                    out
                })
                .collect();
            OffsetForLeaderTopicResult {
                topic: t.topic,
                partitions,
            }
        })
        .collect();
    OffsetForLeaderEpochResponse {
        throttle_time_ms: 0,
        topics,
    }
}
