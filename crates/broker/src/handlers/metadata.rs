//! Metadata: brokers, topics and partition leadership, from the metadata
//! image this broker has applied, with auto-creation through the controller.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::metadata::{
    MetadataRequest, MetadataRequestTopic, MetadataResponse, MetadataResponseBroker,
    MetadataResponsePartition, MetadataResponseTopic,
};

use weir_metadata::image::{MetadataImage, TopicImage};
use weir_metadata::records::NO_LEADER;

use super::acl;
use super::admin::is_internal_topic;
use crate::Broker;
use crate::topics::validate_topic_name;

/// One topic's entry from the metadata image: every partition with its
/// leader, leader epoch, replicas, ISR and the replicas on brokers that are
/// not live. A partition without a live leader is LEADER_NOT_AVAILABLE.
pub fn topic_entry(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: ErrorCode::None.code(),
        name: Some(topic.name.clone()),
        topic_id: topic.topic_id,
        is_internal: is_internal_topic(&topic.name),
        partitions: topic
            .partitions
            .iter()
            .map(|(&index, p)| MetadataResponsePartition {
                error_code: if p.leader == NO_LEADER {
                    ErrorCode::LeaderNotAvailable.code()
                } else {
                    ErrorCode::None.code()
                },
                partition_index: index,
                leader_id: p.leader,
                leader_epoch: p.leader_epoch,
                replica_nodes: p.replicas.clone(),
                isr_nodes: p.isr.clone(),
                offline_replicas: p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !image.is_live(*r))
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The live brokers as Metadata lists them.
pub fn broker_entries(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .live_brokers()
        .filter_map(|b| {
            let e = b.endpoints.first()?;
            Some(MetadataResponseBroker {
                node_id: b.broker_id,
                host: e.host.clone(),
                port: i32::from(e.port),
                rack: b.rack.clone(),
            })
        })
        .collect()
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

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
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
    let allow_create = request.allow_auto_topic_creation && broker.config.auto_create_topics;
    if !all && allow_create {
        // Auto-creation goes through the controller like any CreateTopics;
        // the answer below then shows the new topics.
        let missing: Vec<String> = {
            let image = broker.cluster().image();
            request
                .topics
                .iter()
                .flatten()
                .filter_map(|t| t.name.clone())
                .filter(|n| image.topic_by_name(n).is_none() && validate_topic_name(n).is_ok())
                .collect()
        };
        if !missing.is_empty() {
            broker.auto_create_topics(missing).await;
        }
    }
    let image = broker.cluster().image();
    let mut topics: Vec<MetadataResponseTopic> = if all {
        let mut topics: Vec<_> = image.topics.values().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics.into_iter().map(|t| topic_entry(&image, t)).collect()
    } else {
        request
            .topics
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => match image.topic_by_name(&name) {
                    Some(topic) => topic_entry(&image, topic),
                    None => {
                        let code = match validate_topic_name(&name) {
                            Err(_) => ErrorCode::InvalidTopicException,
                            Ok(()) => ErrorCode::UnknownTopicOrPartition,
                        };
                        error_entry(Some(name), [0; 16], code)
                    }
                },
                None => match image.topic(&wanted.topic_id) {
                    Some(topic) => topic_entry(&image, topic),
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
        brokers: broker_entries(&image),
        cluster_id: Some(broker.cluster_id()),
        controller_id: broker.cluster().quorum.leader_id().unwrap_or(-1),
        topics,
        ..Default::default()
    }
}
