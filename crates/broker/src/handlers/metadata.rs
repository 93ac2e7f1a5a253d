//! Metadata: brokers, topics and partition leadership, with auto-creation.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::metadata::{
    MetadataRequest, MetadataRequestTopic, MetadataResponse, MetadataResponseBroker,
    MetadataResponsePartition, MetadataResponseTopic,
};

use super::acl;
use crate::Broker;
use crate::topics::Topic;

pub fn topic_entry(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = broker.config.node_id;
    MetadataResponseTopic {
        error_code: ErrorCode::None.code(),
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: topic.name.starts_with("__"),
        partitions: topic
            .partitions
            .iter()
            .map(|p| MetadataResponsePartition {
                error_code: ErrorCode::None.code(),
                partition_index: p.index,
                leader_id: node,
                leader_epoch: 0,
                replica_nodes: vec![node],
                isr_nodes: vec![node],
                offline_replicas: Vec::new(),
            })
            .collect(),
        ..Default::default()
    }
}

fn error_entry(name: Option<String>, id: [u8; 16], code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: code.code(),
        name,
        topic_id: id,
        ..Default::default()
    }
}

/// Kafka's whole-request error answer for Metadata: each topic with the
/// error, a null name as "" (the response doesn't allow null before v12).
fn invalid_request(request: MetadataRequest) -> MetadataResponse {
    MetadataResponse {
        topics: request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                error_entry(
                    Some(t.name.unwrap_or_default()),
                    t.topic_id,
                    ErrorCode::InvalidRequest,
                )
            })
            .collect(),
        ..Default::default()
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let advertised = broker.config.advertised();
    // v0 has no null: an empty list means "all topics". From v1, null means all
    // and empty means none.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && header.api_version == 0,
    };
    // Topic ids arrive with v10 but are served from v12: Kafka refuses an id,
    // or a null name, in v10 and v11 (whose responses have no null name).
    if !all && header.api_version < 12 {
        let by_id = |t: &MetadataRequestTopic| t.name.is_none() || t.topic_id != [0; 16];
        if request
            .topics
            .as_ref()
            .is_some_and(|ts| ts.iter().any(by_id))
        {
            return invalid_request(request);
        }
    }
    let mut topics: Vec<MetadataResponseTopic> = if all {
        let mut topics: Vec<_> = broker.registry().iter().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics.iter().map(|t| topic_entry(broker, t)).collect()
    } else {
        let allow_create = request.allow_auto_topic_creation && broker.config.auto_create_topics;
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => match broker.find_or_create_topic(&name, allow_create) {
                    Ok(topic) => topic_entry(broker, &topic),
                    Err(e) => error_entry(Some(name), [0; 16], e.code()),
                },
                None => match broker.registry().by_id(&wanted.topic_id).cloned() {
                    Some(topic) => topic_entry(broker, &topic),
                    None => error_entry(None, wanted.topic_id, ErrorCode::UnknownTopicId),
                },
            })
            .collect()
    };
    if request.include_topic_authorized_operations {
        // Kafka reports them for every topic it looked up by name, not for ids it didn't find.
        for t in &mut topics {
            if t.error_code != ErrorCode::UnknownTopicId.code() {
                t.topic_authorized_operations = acl::bit_field(acl::TOPIC_OPERATIONS);
            }
        }
    }
    MetadataResponse {
        // Only v8-10 carry it (later versions moved it to DescribeCluster).
        cluster_authorized_operations: acl::authorized_operations(
            request.include_cluster_authorized_operations,
            acl::CLUSTER_OPERATIONS,
        ),
        throttle_time_ms: 0,
        brokers: vec![MetadataResponseBroker {
            node_id: broker.config.node_id,
            host: advertised.host.clone(),
            port: i32::from(advertised.port),
            rack: None,
        }],
        cluster_id: Some(broker.cluster_id.clone()),
        controller_id: broker.config.node_id,
        topics,
        ..Default::default()
    }
}
