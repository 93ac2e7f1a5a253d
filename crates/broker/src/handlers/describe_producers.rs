//! DescribeProducers (KIP-664): the producers a partition's log knows, with their epoch, last
//! sequence and timestamp, last coordinator epoch and open transaction's first offset, as
//! Kafka's `ReplicaManager.activeProducerState` reports them. A partition this broker does not
//! have is UNKNOWN_TOPIC_OR_PARTITION.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::describe_producers::{
    DescribeProducersRequest, DescribeProducersResponse, PartitionResponse, ProducerState,
    TopicResponse,
};

use crate::Broker;

/// The active producers of one log, by producer id.
pub fn active_producers(log: &weir_log::Log) -> Vec<ProducerState> {
    log.producer_state()
        .entries()
        .into_iter()
        .map(|e| ProducerState {
            producer_id: e.producer_id,
            producer_epoch: i32::from(e.epoch),
            last_sequence: e.last_batch().map_or(-1, |b| b.last_sequence),
            last_timestamp: e.last_timestamp_ms,
            coordinator_epoch: e.coordinator_epoch,
            current_txn_start_offset: e.current_txn_first_offset,
        })
        .collect()
}

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.name);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(
                    |index| match topic.as_ref().and_then(|topic| topic.partition(index)) {
                        Some(partition) => PartitionResponse {
                            partition_index: index,
                            active_producers: active_producers(&partition.log),
                            ..Default::default()
                        },
                        None => PartitionResponse {
                            partition_index: index,
                            error_code: ErrorCode::UnknownTopicOrPartition.code(),
                            error_message: Some(format!(
                                "this server does not host partition {}-{index}",
                                t.name
                            )),
                            ..Default::default()
                        },
                    },
                )
                .collect();
            TopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    DescribeProducersResponse {
        throttle_time_ms: 0,
        topics,
    }
}
