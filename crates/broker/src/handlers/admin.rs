//! Topic and cluster administration: CreateTopics, DeleteTopics,
//! CreatePartitions, DeleteRecords, DescribeCluster, DescribeLogDirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::create_partitions::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use weir_protocol::messages::create_topics::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsRequest, CreateTopicsResponse,
};
use weir_protocol::messages::delete_records::{
    DeleteRecordsPartitionResult, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteRecordsTopicResult,
};
use weir_protocol::messages::delete_topics::{
    DeletableTopicResult, DeleteTopicsRequest, DeleteTopicsResponse,
};
use weir_protocol::messages::describe_cluster::{
    DescribeClusterBroker, DescribeClusterRequest, DescribeClusterResponse,
};
use weir_protocol::messages::describe_log_dirs::{
    DescribeLogDirsPartition, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeLogDirsResult, DescribeLogDirsTopic,
};

use super::acl;
use super::configs::{CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use crate::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;
use crate::topics::Topic;

/// Live brokers: single-node Weir has exactly one.
const LIVE_BROKERS: i16 = 1;

/// Kafka's internal topics (`Topic.isInternal`): the broker's own state.
pub const INTERNAL_TOPICS: &[&str] = &[
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];

pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// What an internal topic holds, for refusal messages.
pub fn internal_topic_role(name: &str) -> &'static str {
    match name {
        "__consumer_offsets" => "it holds every group's committed offsets and metadata",
        "__transaction_state" => "it holds the state of every transaction",
        _ => "it holds broker state",
    }
}

fn topic_configs(
    topic_overrides: &BTreeMap<String, String>,
    config: &TopicConfig,
) -> Vec<CreatableTopicConfigs> {
    crate::topic_config::TOPIC_CONFIG_NAMES
        .iter()
        .map(|name| CreatableTopicConfigs {
            name: (*name).to_string(),
            value: config.get(name),
            read_only: false,
            config_source: if topic_overrides.contains_key(*name) {
                CONFIG_SOURCE_TOPIC
            } else {
                CONFIG_SOURCE_DEFAULT
            },
            is_sensitive: false,
        })
        .collect()
}

fn create_one(
    broker: &Broker,
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    assignment_count: usize,
    assignments_ok: bool,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(i32, TopicConfig, [u8; 16], BTreeMap<String, String>), BrokerError> {
    let partitions = if assignment_count > 0 {
        if num_partitions != -1 || replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "give either replica assignments or partition count and replication factor, not both".into(),
            ));
        }
        if !assignments_ok {
            return Err(BrokerError::InvalidRequest(format!(
                "replica assignments may only name broker {}",
                broker.config.node_id
            )));
        }
        i32::try_from(assignment_count).unwrap_or(i32::MAX)
    } else if num_partitions == -1 {
        broker.config.default_partitions
    } else {
        num_partitions
    };
    let replication = if replication_factor == -1 {
        1
    } else {
        replication_factor
    };
    if replication < 1 || replication > LIVE_BROKERS {
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "replication factor {replication} is larger than the {LIVE_BROKERS} live broker(s)"
        )));
    }
    let mut registry = broker.registry_mut();
    let config = registry
        .defaults()
        .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    registry.check_new(name, partitions)?;
    if validate_only {
        return Ok((partitions, config, [0; 16], overrides));
    }
    let topic = registry.create(name, partitions, overrides.clone())?;
    Ok((partitions, topic.config.clone(), topic.id, overrides))
}

pub fn create_topics(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let node = broker.config.node_id;
    let mut seen = std::collections::HashSet::new();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let mut result = CreatableTopicResult {
                name: t.name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                ..Default::default()
            };
            if !seen.insert(t.name.clone()) {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = Some("topic named twice in one request".into());
                return result;
            }
            let mut overrides = BTreeMap::new();
            for c in &t.configs {
                match &c.value {
                    Some(v) => {
                        overrides.insert(c.name.clone(), v.clone());
                    }
                    None => {
                        overrides.remove(&c.name);
                    }
                }
            }
            let assignments_ok = t.assignments.iter().all(|a| a.broker_ids == [node]);
            match create_one(
                broker,
                &t.name,
                t.num_partitions,
                t.replication_factor,
                t.assignments.len(),
                assignments_ok,
                overrides,
                request.validate_only,
            ) {
                Ok((partitions, config, id, overrides)) => {
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    result.topic_id = id;
                    if header.api_version >= 5 {
                        result.configs = Some(topic_configs(&overrides, &config));
                    }
                    if !request.validate_only {
                        tracing::info!(topic = %t.name, partitions, "created topic");
                    }
                }
                Err(e) => {
                    result.error_code = e.code().code();
                    result.error_message = Some(e.to_string());
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse {
        throttle_time_ms: 0,
        topics,
    }
}

pub fn delete_topics(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics` (by name or id).
    let mut targets: Vec<(Option<String>, [u8; 16])> = request
        .topic_names
        .into_iter()
        .map(|n| (Some(n), [0; 16]))
        .collect();
    targets.extend(request.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let resolved = match &name {
                Some(n) => Some(n.clone()),
                None => broker.registry().by_id(&id).map(|t| t.name.clone()),
            };
            let mut result = DeletableTopicResult {
                name: name.clone(),
                topic_id: id,
                ..Default::default()
            };
            let outcome = match resolved {
                Some(n) if is_internal_topic(&n) => Err(BrokerError::InvalidTopic(format!(
                    "Cannot delete internal topic {n}: {}",
                    internal_topic_role(&n)
                ))),
                Some(n) => broker.registry_mut().delete(&n).map(|()| n),
                None => Err(BrokerError::UnknownTopic(String::new())),
            };
            match outcome {
                Ok(n) => {
                    tracing::info!(topic = %n, "deleted topic");
                    if header.api_version >= 6 {
                        result.name = Some(n);
                    }
                }
                Err(e) => {
                    result.error_code = if name.is_none() {
                        ErrorCode::UnknownTopicId.code()
                    } else {
                        e.code().code()
                    };
                    result.error_message = Some(e.to_string());
                }
            }
            result
        })
        .collect();
    DeleteTopicsResponse {
        throttle_time_ms: 0,
        responses,
    }
}

pub fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let mut result = CreatePartitionsTopicResult {
                name: t.name.clone(),
                ..Default::default()
            };
            let outcome = if is_internal_topic(&t.name) {
                Err(BrokerError::InvalidTopic(format!(
                    "Cannot add partitions to internal topic {}: groups are placed by \
                     hash modulo its partition count, so a new count would move them away \
                     from their stored state",
                    t.name
                )))
            } else if request.validate_only {
                match broker.topic(&t.name) {
                    None => Err(BrokerError::UnknownTopic(t.name.clone())),
                    Some(topic) if t.count <= topic.partition_count => {
                        Err(BrokerError::InvalidPartitions(format!(
                            "topic '{}' already has {} partitions",
                            t.name, topic.partition_count
                        )))
                    }
                    Some(_) => Ok(()),
                }
            } else {
                broker.registry_mut().add_partitions(&t.name, t.count)
            };
            if let Err(e) = outcome {
                result.error_code = e.code().code();
                result.error_message = Some(e.to_string());
            }
            result
        })
        .collect();
    CreatePartitionsResponse {
        throttle_time_ms: 0,
        results,
    }
}

pub fn delete_records(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic: Option<Arc<Topic>> = broker.topic(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut out = DeleteRecordsPartitionResult {
                        partition_index: p.partition_index,
                        low_watermark: -1,
                        ..Default::default()
                    };
                    let partition = match topic.as_ref().map(|t| t.led_partition(p.partition_index))
                    {
                        Some(Ok(partition)) => partition,
                        Some(Err(error)) => {
                            out.error_code = error.code();
                            return out;
                        }
                        None => {
                            out.error_code = ErrorCode::UnknownTopicOrPartition.code();
                            return out;
                        }
                    };
                    // Kafka's ReplicaManager refuses this for internal topics
                    // ("Cannot delete records of internal topic"); the
                    // response has no message field for it.
                    if is_internal_topic(&t.name) {
                        out.error_code = ErrorCode::InvalidTopicException.code();
                        return out;
                    }
                    let log = &partition.log;
                    // -1 means "up to the high watermark".
                    let target = if p.offset == -1 {
                        log.high_watermark()
                    } else {
                        p.offset
                    };
                    if target < 0 || target > log.high_watermark() {
                        out.error_code = ErrorCode::OffsetOutOfRange.code();
                        return out;
                    }
                    match log.delete_records_before(target) {
                        Ok(low) => out.low_watermark = low,
                        Err(e) => out.error_code = crate::error::log_error_code(&e).code(),
                    }
                    out
                })
                .collect();
            DeleteRecordsTopicResult {
                name: t.name,
                partitions,
            }
        })
        .collect();
    DeleteRecordsResponse {
        throttle_time_ms: 0,
        topics,
    }
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let advertised = broker.config.advertised();
    DescribeClusterResponse {
        cluster_authorized_operations: acl::authorized_operations(
            request.include_cluster_authorized_operations,
            acl::CLUSTER_OPERATIONS,
        ),
        throttle_time_ms: 0,
        error_code: 0,
        error_message: None,
        cluster_id: broker.cluster_id.clone(),
        controller_id: broker.config.node_id,
        brokers: vec![DescribeClusterBroker {
            broker_id: broker.config.node_id,
            host: advertised.host.clone(),
            port: i32::from(advertised.port),
            rack: None,
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let registry_topics: Vec<Arc<Topic>> = broker.registry().iter().cloned().collect();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request
        .topics
        .map(|ts| ts.into_iter().map(|t| (t.topic, t.partitions)).collect());
    let mut topics = Vec::new();
    for topic in registry_topics {
        let filter = match &wanted {
            None => None,
            Some(map) => match map.get(&topic.name) {
                None => continue,
                Some(list) => Some(list.clone()),
            },
        };
        let partitions = topic
            .partitions
            .iter()
            .filter(|p| filter.as_ref().is_none_or(|f| f.contains(&p.index)))
            .map(|p| DescribeLogDirsPartition {
                partition_index: p.index,
                partition_size: i64::try_from(p.log.size_bytes()).unwrap_or(i64::MAX),
                offset_lag: 0,
                is_future_key: false,
            })
            .collect();
        topics.push(DescribeLogDirsTopic {
            name: topic.name.clone(),
            partitions,
        });
    }
    let log_dir = std::fs::canonicalize(&broker.config.data_dir)
        .unwrap_or_else(|_| broker.config.data_dir.clone())
        .display()
        .to_string();
    DescribeLogDirsResponse {
        throttle_time_ms: 0,
        error_code: 0,
        results: vec![DescribeLogDirsResult {
            error_code: 0,
            log_dir,
            topics,
            ..Default::default()
        }],
    }
}
