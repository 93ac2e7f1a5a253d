//! DescribeTopicPartitions (KIP-966): topic and partition metadata a page at
//! a time, so that a client can describe topics with more partitions than fit
//! one response. Pages follow Kafka's DescribeTopicPartitionsRequestHandler:
//! topics in name order from the cursor's topic, at most
//! `response_partition_limit` partitions (capped at
//! [`PARTITIONS_PER_RESPONSE_MAX`]), and a `next_cursor` naming where the next
//! page starts.

use std::collections::BTreeSet;
use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::describe_topic_partitions::{
    Cursor, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};

use crate::Broker;
use crate::topics::{self, Topic};

/// Kafka's `max.request.partition.size.limit` default: the most partitions one
/// response carries, whatever the request asks for.
pub const PARTITIONS_PER_RESPONSE_MAX: i32 = 2000;

/// With no authorizer Kafka grants every topic operation: READ(3), WRITE(4),
/// CREATE(5), DELETE(6), ALTER(7), DESCRIBE(8), DESCRIBE_CONFIGS(10) and
/// ALTER_CONFIGS(11), one bit each.
const TOPIC_AUTHORIZED_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

fn partition_entry(node: i32, index: i32) -> DescribeTopicPartitionsResponsePartition {
    DescribeTopicPartitionsResponsePartition {
        error_code: ErrorCode::None.code(),
        partition_index: index,
        leader_id: node,
        leader_epoch: 0,
        replica_nodes: vec![node],
        isr_nodes: vec![node],
        eligible_leader_replicas: Some(Vec::new()),
        last_known_elr: Some(Vec::new()),
        offline_replicas: Vec::new(),
    }
}

fn topic_entry(
    topic: &Topic,
    partitions: Vec<DescribeTopicPartitionsResponsePartition>,
) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic {
        error_code: ErrorCode::None.code(),
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: topic.name.starts_with("__"),
        partitions,
        topic_authorized_operations: TOPIC_AUTHORIZED_OPERATIONS_ALL,
    }
}

fn error_entry(name: String, error: ErrorCode) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic {
        error_code: error.code(),
        is_internal: name.starts_with("__"),
        name: Some(name),
        ..Default::default()
    }
}

/// Kafka fails the whole request on a malformed cursor: every requested topic
/// gets the error.
fn invalid_request(request: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    DescribeTopicPartitionsResponse {
        topics: request
            .topics
            .into_iter()
            .map(|t| error_entry(t.name, ErrorCode::InvalidRequest))
            .collect(),
        ..Default::default()
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = broker.config.node_id;
    let all_topics = request.topics.is_empty();
    let cursor_topic = request
        .cursor
        .as_ref()
        .map(|c| c.topic_name.clone())
        .unwrap_or_default();
    // Sorted and without duplicates, from the cursor's topic on.
    let names: BTreeSet<String> = if all_topics {
        broker
            .registry()
            .iter()
            .map(|t| t.name.clone())
            .filter(|name| *name >= cursor_topic)
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.clone())
            .filter(|name| *name >= cursor_topic)
            .collect()
    };
    if let Some(cursor) = &request.cursor {
        let cursor_missing = !all_topics && !names.contains(&cursor.topic_name);
        if cursor_missing || cursor.partition_index < 0 {
            return invalid_request(request);
        }
    }
    let start_of = |name: &str| match &request.cursor {
        Some(c) if c.topic_name == name => c.partition_index,
        _ => 0,
    };
    let mut remaining = request
        .response_partition_limit
        .clamp(1, PARTITIONS_PER_RESPONSE_MAX);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            // The previous topic ended exactly at the limit: the next page
            // starts at this topic, whether or not it exists.
            next_cursor = Some(Cursor {
                topic_name: name,
                partition_index: 0,
            });
            break;
        }
        let Some(topic) = broker.topic(&name) else {
            // Asked for by name: say why it is missing. Listing all topics
            // skips one deleted meanwhile.
            if !all_topics {
                let error = match topics::validate_topic_name(&name) {
                    Ok(()) => ErrorCode::UnknownTopicOrPartition,
                    Err(_) => ErrorCode::InvalidTopicException,
                };
                topics.push(error_entry(name, error));
            }
            continue;
        };
        let count = topic.partition_count;
        let start = start_of(&name);
        let end = count.min(start.saturating_add(remaining));
        let partitions: Vec<_> = (start..end).map(|i| partition_entry(node, i)).collect();
        let taken = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
        topics.push(topic_entry(&topic, partitions));
        if end < count {
            next_cursor = Some(Cursor {
                topic_name: name,
                partition_index: end,
            });
            break;
        }
        remaining -= taken;
    }
    DescribeTopicPartitionsResponse {
        throttle_time_ms: 0,
        topics,
        next_cursor,
    }
}
