//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and
//! the broker.
//!
//! Topic configs are dynamic and persisted with the topic. Broker configs are
//! static in Weir (set in the TOML file or flags), so they can be described
//! but not altered; an alter says so rather than pretending.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_protocol::header::RequestHeader;
use weir_protocol::messages::alter_configs::{
    AlterConfigsRequest, AlterConfigsResourceResponse, AlterConfigsResponse,
};
use weir_protocol::messages::describe_configs::{
    DescribeConfigsRequest, DescribeConfigsResourceResult, DescribeConfigsResponse,
    DescribeConfigsResult, DescribeConfigsSynonym,
};
use weir_protocol::messages::incremental_alter_configs::{
    AlterConfigsResourceResponse as IncrementalResourceResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use crate::Broker;
use crate::error::BrokerError;
use crate::topic_config::{TOPIC_CONFIG_NAMES, TopicConfig};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
pub const CONFIG_SOURCE_TOPIC: i8 = 1;
pub const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Broker-level names of the topic defaults, as Kafka spells them.
const BROKER_NAMES_FOR_TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("log.cleanup.policy", "cleanup.policy"),
    ("compression.type", "compression.type"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
];

fn describe_topic(
    broker: &Broker,
    name: &str,
    keys: Option<&Vec<String>>,
    include_synonyms: bool,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let topic = broker
        .topic(name)
        .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
    let defaults = &broker.config.topic_defaults;
    Ok(TOPIC_CONFIG_NAMES
        .iter()
        .filter(|n| keys.is_none_or(|k| k.is_empty() || k.iter().any(|x| x == *n)))
        .map(|n| {
            let overridden = topic.overrides.contains_key(*n);
            let source = if overridden {
                CONFIG_SOURCE_TOPIC
            } else {
                CONFIG_SOURCE_DEFAULT
            };
            let mut synonyms = Vec::new();
            if include_synonyms {
                if overridden {
                    synonyms.push(DescribeConfigsSynonym {
                        name: (*n).to_string(),
                        value: topic.config.get(n),
                        source: CONFIG_SOURCE_TOPIC,
                    });
                }
                synonyms.push(DescribeConfigsSynonym {
                    name: (*n).to_string(),
                    value: defaults.get(n),
                    source: CONFIG_SOURCE_DEFAULT,
                });
            }
            DescribeConfigsResourceResult {
                name: (*n).to_string(),
                value: topic.config.get(n),
                read_only: false,
                is_default: !overridden,
                config_source: if version >= 1 { source } else { -1 },
                is_sensitive: false,
                synonyms,
                config_type: TopicConfig::config_type(n) as i8,
                documentation: None,
            }
        })
        .collect())
}

fn broker_values(broker: &Broker) -> Vec<(String, String)> {
    let c = &broker.config;
    let mut values = vec![
        ("broker.id".to_string(), c.node_id.to_string()),
        (
            "num.partitions".to_string(),
            c.default_partitions.to_string(),
        ),
        (
            "auto.create.topics.enable".to_string(),
            c.auto_create_topics.to_string(),
        ),
        (
            "socket.request.max.bytes".to_string(),
            c.request_frame_bytes_max.to_string(),
        ),
        (
            "connections.max.idle.ms".to_string(),
            c.connection_idle_ms_max.to_string(),
        ),
        ("log.dirs".to_string(), c.data_dir.display().to_string()),
        (
            "log.retention.check.interval.ms".to_string(),
            c.retention_check_interval_ms.to_string(),
        ),
    ];
    for (broker_name, topic_name) in BROKER_NAMES_FOR_TOPIC_DEFAULTS {
        if let Some(v) = c.topic_defaults.get(topic_name) {
            values.push(((*broker_name).to_string(), v));
        }
    }
    values
}

pub fn describe(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let mut result = DescribeConfigsResult {
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                ..Default::default()
            };
            let configs = match r.resource_type {
                RESOURCE_TOPIC => describe_topic(
                    broker,
                    &r.resource_name,
                    r.configuration_keys.as_ref(),
                    request.include_synonyms,
                    header.api_version,
                ),
                RESOURCE_BROKER => {
                    let own = broker.config.node_id.to_string();
                    if !r.resource_name.is_empty() && r.resource_name != own {
                        Err(BrokerError::InvalidRequest(format!(
                            "this is broker {own}, not '{}'",
                            r.resource_name
                        )))
                    } else {
                        Ok(broker_values(broker)
                            .into_iter()
                            .filter(|(n, _)| {
                                r.configuration_keys
                                    .as_ref()
                                    .is_none_or(|k| k.is_empty() || k.contains(n))
                            })
                            .map(|(name, value)| DescribeConfigsResourceResult {
                                name,
                                value: Some(value),
                                read_only: true,
                                is_default: false,
                                config_source: CONFIG_SOURCE_STATIC_BROKER,
                                config_type: 2,
                                ..Default::default()
                            })
                            .collect())
                    }
                }
                other => Err(BrokerError::InvalidRequest(format!(
                    "resource type {other} is not supported"
                ))),
            };
            match configs {
                Ok(configs) => result.configs = configs,
                Err(e) => {
                    result.error_code = e.code().code();
                    result.error_message = Some(e.to_string());
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse {
        throttle_time_ms: 0,
        results,
    }
}

fn broker_is_static(resource_type: i8) -> Option<BrokerError> {
    (resource_type == RESOURCE_BROKER).then(|| {
        BrokerError::InvalidRequest(
            "broker configs are static in Weir: set them in the config file or flags and restart"
                .into(),
        )
    })
}

fn apply_overrides(
    broker: &Broker,
    name: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    if validate_only {
        broker
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        broker
            .config
            .topic_defaults
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        return Ok(());
    }
    broker
        .registry_mut()
        .set_overrides(name, overrides, &broker.config.topic_defaults)
}

pub fn alter(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let outcome = if let Some(e) = broker_is_static(r.resource_type) {
                Err(e)
            } else if r.resource_type != RESOURCE_TOPIC {
                Err(BrokerError::InvalidRequest(format!(
                    "resource type {} is not supported",
                    r.resource_type
                )))
            } else {
                // AlterConfigs replaces the whole override set.
                let overrides = r
                    .configs
                    .iter()
                    .filter_map(|c| c.value.clone().map(|v| (c.name.clone(), v)))
                    .collect();
                apply_overrides(broker, &r.resource_name, overrides, request.validate_only)
            };
            let (error_code, error_message) = match outcome {
                Ok(()) => (0, None),
                Err(e) => (e.code().code(), Some(e.to_string())),
            };
            AlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
            }
        })
        .collect();
    AlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    }
}

pub fn incremental_alter(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let outcome = (|| {
                if let Some(e) = broker_is_static(r.resource_type) {
                    return Err(e);
                }
                if r.resource_type != RESOURCE_TOPIC {
                    return Err(BrokerError::InvalidRequest(format!(
                        "resource type {} is not supported",
                        r.resource_type
                    )));
                }
                let topic = broker
                    .topic(&r.resource_name)
                    .ok_or_else(|| BrokerError::UnknownTopic(r.resource_name.clone()))?;
                let mut overrides = topic.overrides.clone();
                for c in &r.configs {
                    match c.config_operation {
                        OP_SET => {
                            let value = c.value.clone().ok_or_else(|| {
                                BrokerError::InvalidRequest(format!(
                                    "SET of '{}' needs a value",
                                    c.name
                                ))
                            })?;
                            overrides.insert(c.name.clone(), value);
                        }
                        OP_DELETE => {
                            if TopicConfig::default().get(&c.name).is_none() {
                                return Err(crate::topic_config::ConfigError::Unknown(
                                    c.name.clone(),
                                )
                                .into());
                            }
                            overrides.remove(&c.name);
                        }
                        OP_APPEND | OP_SUBTRACT if c.name == "cleanup.policy" => {
                            let current = topic.config.get("cleanup.policy").unwrap_or_default();
                            let mut items: Vec<String> = current
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect();
                            for v in c.value.as_deref().unwrap_or("").split(',').map(str::trim) {
                                if c.config_operation == OP_APPEND {
                                    if !items.iter().any(|i| i == v) {
                                        items.push(v.to_string());
                                    }
                                } else {
                                    items.retain(|i| i != v);
                                }
                            }
                            overrides.insert(c.name.clone(), items.join(","));
                        }
                        OP_APPEND | OP_SUBTRACT => {
                            return Err(BrokerError::InvalidRequest(format!(
                                "'{}' is not a list config; APPEND/SUBTRACT need a list",
                                c.name
                            )));
                        }
                        other => {
                            return Err(BrokerError::InvalidRequest(format!(
                                "unknown config operation {other}"
                            )));
                        }
                    }
                }
                apply_overrides(broker, &r.resource_name, overrides, request.validate_only)
            })();
            let (error_code, error_message) = match outcome {
                Ok(()) => (0, None),
                Err(e) => (e.code().code(), Some(e.to_string())),
            };
            IncrementalResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
            }
        })
        .collect();
    IncrementalAlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    }
}
