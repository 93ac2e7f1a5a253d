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

use weir_metadata::controller::{ControllerRequest, ControllerResponse, NewPartitions, NewTopic};

use super::acl;
use super::configs::{CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use crate::Broker;
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;
use crate::topics::Topic;

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

/// What a topic's partition count and replication factor come to, and
/// whether the request may go to the controller as it is.
fn checked_new_topic(
    broker: &Broker,
    t: &weir_protocol::messages::create_topics::CreatableTopic,
    overrides: &BTreeMap<String, String>,
) -> Result<NewTopic, BrokerError> {
    let assignments = if t.assignments.is_empty() {
        None
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "give either replica assignments or partition count and replication factor, not both".into(),
            ));
        }
        Some(
            t.assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.clone()))
                .collect(),
        )
    };
    // Config values are checked here, where their meaning is known; the
    // controller only stores them.
    broker
        .registry()
        .defaults()
        .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // With an explicit assignment both stay -1 (the assignment says them), as the
    // controller requires.
    let manual = assignments.is_some();
    Ok(NewTopic {
        name: t.name.clone(),
        partitions: if t.num_partitions == -1 && !manual {
            broker.config.default_partitions
        } else {
            t.num_partitions
        },
        replication_factor: if t.replication_factor == -1 && !manual {
            1
        } else {
            t.replication_factor
        },
        assignments,
        configs: overrides.clone(),
    })
}

fn item_error(code: i16, message: Option<String>) -> (i16, Option<String>) {
    (code, message)
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results: Vec<CreatableTopicResult> = Vec::with_capacity(request.topics.len());
    let mut to_controller: Vec<NewTopic> = Vec::new();
    let mut overrides_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for t in &request.topics {
        let mut result = CreatableTopicResult {
            name: t.name.clone(),
            num_partitions: -1,
            replication_factor: -1,
            ..Default::default()
        };
        if !seen.insert(t.name.clone()) {
            result.error_code = ErrorCode::InvalidRequest.code();
            result.error_message = Some("topic named twice in one request".into());
            results.push(result);
            continue;
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
        match checked_new_topic(broker, t, &overrides) {
            Ok(new) => {
                overrides_of.insert(t.name.clone(), overrides);
                to_controller.push(new);
            }
            Err(e) => {
                result.error_code = e.code().code();
                result.error_message = Some(e.to_string());
            }
        }
        results.push(result);
    }
    let outcome: BTreeMap<String, (i16, Option<String>)> = if to_controller.is_empty() {
        BTreeMap::new()
    } else {
        let names: Vec<String> = to_controller.iter().map(|t| t.name.clone()).collect();
        let asked = ControllerRequest::CreateTopics {
            topics: to_controller,
            validate_only: request.validate_only,
        };
        match broker.run_on_controller(asked).await {
            Ok(ControllerResponse::Items(items)) => items
                .into_iter()
                .map(|i| (i.name, item_error(i.error_code, i.message)))
                .collect(),
            Ok(other) => names
                .into_iter()
                .map(|n| {
                    (
                        n,
                        (
                            ErrorCode::UnknownServerError.code(),
                            Some(format!("unexpected answer {other:?}")),
                        ),
                    )
                })
                .collect(),
            Err(e) => names
                .into_iter()
                .map(|n| (n, (e.code().code(), Some(e.to_string()))))
                .collect(),
        }
    };
    let image = broker.cluster().image();
    for result in &mut results {
        let Some((code, message)) = outcome.get(&result.name) else {
            continue;
        };
        result.error_code = *code;
        result.error_message = message.clone();
        if *code != 0 {
            continue;
        }
        let overrides = overrides_of.remove(&result.name).unwrap_or_default();
        let config = broker
            .registry()
            .defaults()
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_or_else(|_| broker.registry().defaults().clone());
        if let Some(topic) = image.topic_by_name(&result.name) {
            result.topic_id = topic.topic_id;
            result.num_partitions = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
            result.replication_factor = topic
                .partitions
                .values()
                .next()
                .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX));
        } else {
            // validate_only: nothing was created; report what would be.
            let wanted = request.topics.iter().find(|t| t.name == result.name);
            result.num_partitions = wanted
                .map(|t| {
                    if t.num_partitions == -1 {
                        broker.config.default_partitions
                    } else {
                        t.num_partitions
                    }
                })
                .unwrap_or(-1);
            result.replication_factor = wanted
                .map(|t| {
                    if t.replication_factor == -1 {
                        1
                    } else {
                        t.replication_factor
                    }
                })
                .unwrap_or(-1);
        }
        if header.api_version >= 5 {
            result.configs = Some(topic_configs(&overrides, &config));
        }
        if !request.validate_only {
            tracing::info!(topic = %result.name, partitions = result.num_partitions, "created topic");
        }
    }
    CreateTopicsResponse {
        throttle_time_ms: 0,
        topics: results,
    }
}

pub async fn delete_topics(
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
    let mut results = Vec::with_capacity(targets.len());
    let mut to_delete = Vec::new();
    {
        let image = broker.cluster().image();
        for (name, id) in targets {
            let resolved = match &name {
                Some(n) => Some(n.clone()),
                None => image.topic(&id).map(|t| t.name.clone()),
            };
            let mut result = DeletableTopicResult {
                name: name.clone(),
                topic_id: id,
                ..Default::default()
            };
            match resolved {
                Some(n) if is_internal_topic(&n) => {
                    result.error_code = ErrorCode::InvalidTopicException.code();
                    result.error_message = Some(format!(
                        "Cannot delete internal topic {n}: {}",
                        internal_topic_role(&n)
                    ));
                }
                Some(n) => {
                    if header.api_version >= 6 {
                        result.name = Some(n.clone());
                    }
                    to_delete.push(n);
                }
                None => {
                    result.error_code = ErrorCode::UnknownTopicId.code();
                    result.error_message = Some("unknown topic id".into());
                }
            }
            results.push((resolved_name(&result), result));
        }
    }
    if !to_delete.is_empty() {
        let asked = ControllerRequest::DeleteTopics {
            names: to_delete.clone(),
        };
        let outcome: BTreeMap<String, (i16, Option<String>)> =
            match broker.run_on_controller(asked).await {
                Ok(ControllerResponse::Items(items)) => items
                    .into_iter()
                    .map(|i| (i.name, (i.error_code, i.message)))
                    .collect(),
                Ok(_) | Err(_) => to_delete
                    .iter()
                    .map(|n| {
                        (
                            n.clone(),
                            (
                                ErrorCode::NotController.code(),
                                Some("no active controller".into()),
                            ),
                        )
                    })
                    .collect(),
            };
        for (name, result) in &mut results {
            if let Some(n) = name
                && let Some((code, message)) = outcome.get(n)
            {
                result.error_code = *code;
                result.error_message = message.clone();
                if *code == 0 {
                    tracing::info!(topic = %n, "deleted topic");
                }
            }
        }
    }
    DeleteTopicsResponse {
        throttle_time_ms: 0,
        responses: results.into_iter().map(|(_, r)| r).collect(),
    }
}

/// The topic a delete result is about, by name, once resolved.
fn resolved_name(result: &DeletableTopicResult) -> Option<String> {
    if result.error_code != 0 {
        return None;
    }
    result.name.clone()
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut to_controller = Vec::new();
    for t in &request.topics {
        let mut result = CreatePartitionsTopicResult {
            name: t.name.clone(),
            ..Default::default()
        };
        if is_internal_topic(&t.name) {
            result.error_code = ErrorCode::InvalidTopicException.code();
            result.error_message = Some(format!(
                "Cannot add partitions to internal topic {}: groups are placed by \
                 hash modulo its partition count, so a new count would move them away \
                 from their stored state",
                t.name
            ));
        } else {
            to_controller.push(NewPartitions {
                name: t.name.clone(),
                total: t.count,
                assignments: t
                    .assignments
                    .as_ref()
                    .map(|list| list.iter().map(|a| a.broker_ids.clone()).collect()),
            });
        }
        results.push(result);
    }
    if !to_controller.is_empty() {
        let names: Vec<String> = to_controller.iter().map(|t| t.name.clone()).collect();
        let asked = ControllerRequest::CreatePartitions {
            topics: to_controller,
            validate_only: request.validate_only,
        };
        let outcome: BTreeMap<String, (i16, Option<String>)> =
            match broker.run_on_controller(asked).await {
                Ok(ControllerResponse::Items(items)) => items
                    .into_iter()
                    .map(|i| (i.name, (i.error_code, i.message)))
                    .collect(),
                Ok(_) => BTreeMap::new(),
                Err(e) => names
                    .into_iter()
                    .map(|n| (n, (e.code().code(), Some(e.to_string()))))
                    .collect(),
            };
        for result in &mut results {
            if let Some((code, message)) = outcome.get(&result.name) {
                result.error_code = *code;
                result.error_message = message.clone();
            }
        }
    }
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
    let image = broker.cluster().image();
    DescribeClusterResponse {
        cluster_authorized_operations: acl::authorized_operations(
            request.include_cluster_authorized_operations,
            acl::CLUSTER_OPERATIONS,
        ),
        throttle_time_ms: 0,
        error_code: 0,
        error_message: None,
        cluster_id: broker.cluster_id(),
        controller_id: broker.cluster().quorum.leader_id().unwrap_or(-1),
        // KIP-1073: v2 may ask for the fenced (registered, not live)
        // brokers too, flagged; older versions never list them.
        brokers: image
            .brokers
            .values()
            .filter(|b| !b.fenced || request.include_fenced_brokers)
            .filter_map(|b| {
                let e = b.endpoints.first()?;
                Some(DescribeClusterBroker {
                    broker_id: b.broker_id,
                    host: e.host.clone(),
                    port: i32::from(e.port),
                    rack: b.rack.clone(),
                    is_fenced: b.fenced,
                })
            })
            .collect(),
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
