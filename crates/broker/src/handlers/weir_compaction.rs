//! WeirCompaction (Weir's own API, key 32000): each requested partition's cleaner checkpoint
//! and dirty ratio on this broker, after a compaction pass on those partitions when
//! `compact_now` is set. The pass runs on a blocking thread with a pooled cleaner (see
//! `crate::cleaner`); a partition this broker does not host is UNKNOWN_TOPIC_OR_PARTITION, so
//! a caller can ask every broker.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::weir_compaction::{
    PartitionCompaction, WeirCompactionRequest, WeirCompactionResponse,
};

use crate::{Broker, PendingReply, encode_frame};

pub fn handle(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: WeirCompactionRequest,
) -> PendingReply {
    let broker = Arc::clone(broker);
    Box::pin(async move {
        let WeirCompactionRequest {
            topic,
            partition_indexes,
            compact_now,
            ..
        } = request;
        let b = Arc::clone(&broker);
        let indexes = partition_indexes.clone();
        let status =
            tokio::task::spawn_blocking(move || b.compaction_status(&topic, &indexes, compact_now))
                .await
                .ok()
                .flatten();
        let response = match status {
            None => WeirCompactionResponse {
                error_code: ErrorCode::UnknownTopicOrPartition.code(),
                ..Default::default()
            },
            Some(status) => WeirCompactionResponse {
                partitions: partition_indexes
                    .into_iter()
                    .zip(status)
                    .map(|(index, stats)| match stats {
                        Some(s) => PartitionCompaction {
                            partition_index: index,
                            error_code: 0,
                            last_cleaned_offset: s.last_cleaned_offset,
                            dirty_ratio: s.dirty_ratio,
                            clean_bytes: i64::try_from(s.clean_bytes).unwrap_or(i64::MAX),
                            dirty_bytes: i64::try_from(s.dirty_bytes).unwrap_or(i64::MAX),
                        },
                        None => PartitionCompaction {
                            partition_index: index,
                            error_code: ErrorCode::UnknownTopicOrPartition.code(),
                            last_cleaned_offset: -1,
                            ..Default::default()
                        },
                    })
                    .collect(),
                ..Default::default()
            },
        };
        encode_frame(&header, &response)
    })
}
