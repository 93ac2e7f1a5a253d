//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, the
//! broker and (KIP-848) groups.
//!
//! Topic configs are dynamic and persisted with the topic. Broker configs are
//! static (file, environment, flags) except the topic defaults (`log.*` and
//! friends), which may also be changed at runtime per broker or cluster-wide,
//! as in Kafka; those are persisted by `dynamic_config`. Group configs are
//! persisted there too and applied by the consumer-group coordinator.
//!
//! Every value is reported with its real source: a topic override
//! (TOPIC_CONFIG), a dynamic broker config (DYNAMIC_BROKER_CONFIG or
//! DYNAMIC_DEFAULT_BROKER_CONFIG), a setting given at start
//! (STATIC_BROKER_CONFIG) or the built-in default (DEFAULT_CONFIG).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use weir_metadata::image::DECOMMISSIONED_CONFIG;

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

use weir_metadata::controller::{ControllerRequest, ControllerResponse};
use weir_metadata::records::ConfigResource;

use super::admin::{internal_topic_role, is_internal_topic};
use crate::Broker;
use crate::config::BrokerConfig;
use crate::dynamic_config::{
    DynamicConfigs, GROUP_CONFIG_NAMES, GROUPS_WITH_CONFIGS_MAX, TOPIC_DEFAULT_BROKER_NAMES,
    group_config_default, topic_name_for_broker_name, validate_group_configs,
};
use crate::error::BrokerError;
use crate::topic_config::{ConfigError, ConfigType, TOPIC_CONFIG_NAMES, TopicConfig};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigResource.Type.GROUP (KIP-848), not the ACL resource type 3.
const RESOURCE_GROUP: i8 = 32;

pub const CONFIG_SOURCE_TOPIC: i8 = 1;
pub const CONFIG_SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;
pub const CONFIG_SOURCE_GROUP: i8 = 8;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Renders one static broker setting from a config.
type Render = fn(&BrokerConfig) -> String;

/// Static broker configs Weir has an equivalent for: Kafka name, the
/// `BrokerConfig` field that holds it (for STATIC vs DEFAULT), Kafka type, value.
/// Read-only at runtime: Kafka cannot change these dynamically either, except
/// `max.connections` and the listeners, which Weir cannot change while running.
const STATIC_BROKER_CONFIGS: &[(&str, &str, ConfigType, Render)] = &[
    (
        "advertised.listeners",
        "advertised_listen",
        ConfigType::String,
        |c| format!("PLAINTEXT://{}", c.advertised()),
    ),
    (
        "auto.create.topics.enable",
        "auto_create_topics",
        ConfigType::Boolean,
        |c| c.auto_create_topics.to_string(),
    ),
    ("broker.id", "node_id", ConfigType::Int, |c| {
        c.node_id.to_string()
    }),
    (
        "connections.max.idle.ms",
        "connection_idle_ms_max",
        ConfigType::Long,
        |c| c.connection_idle_ms_max.to_string(),
    ),
    (
        "group.consumer.heartbeat.interval.ms",
        "group_consumer_heartbeat_interval_ms",
        ConfigType::Int,
        |c| c.group_consumer_heartbeat_interval_ms.to_string(),
    ),
    (
        "group.consumer.max.heartbeat.interval.ms",
        "group_consumer_max_heartbeat_interval_ms",
        ConfigType::Int,
        |c| c.group_consumer_max_heartbeat_interval_ms.to_string(),
    ),
    (
        "group.consumer.max.session.timeout.ms",
        "group_consumer_max_session_timeout_ms",
        ConfigType::Int,
        |c| c.group_consumer_max_session_timeout_ms.to_string(),
    ),
    (
        "group.consumer.max.size",
        "group_max_size",
        ConfigType::Int,
        |c| c.group_max_size.to_string(),
    ),
    (
        "group.consumer.min.heartbeat.interval.ms",
        "group_consumer_min_heartbeat_interval_ms",
        ConfigType::Int,
        |c| c.group_consumer_min_heartbeat_interval_ms.to_string(),
    ),
    (
        "group.consumer.min.session.timeout.ms",
        "group_consumer_min_session_timeout_ms",
        ConfigType::Int,
        |c| c.group_consumer_min_session_timeout_ms.to_string(),
    ),
    (
        "group.consumer.session.timeout.ms",
        "group_consumer_session_timeout_ms",
        ConfigType::Int,
        |c| c.group_consumer_session_timeout_ms.to_string(),
    ),
    (
        "group.initial.rebalance.delay.ms",
        "group_initial_rebalance_delay_ms",
        ConfigType::Int,
        |c| c.group_initial_rebalance_delay_ms.to_string(),
    ),
    (
        "group.max.session.timeout.ms",
        "group_max_session_timeout_ms",
        ConfigType::Int,
        |c| c.group_max_session_timeout_ms.to_string(),
    ),
    ("group.max.size", "group_max_size", ConfigType::Int, |c| {
        c.group_max_size.to_string()
    }),
    (
        "group.min.session.timeout.ms",
        "group_min_session_timeout_ms",
        ConfigType::Int,
        |c| c.group_min_session_timeout_ms.to_string(),
    ),
    ("listeners", "listen", ConfigType::String, |c| {
        format!("PLAINTEXT://{}", c.listen)
    }),
    ("log.dirs", "data_dir", ConfigType::String, |c| {
        c.data_dir.display().to_string()
    }),
    (
        "log.retention.check.interval.ms",
        "retention_check_interval_ms",
        ConfigType::Long,
        |c| c.retention_check_interval_ms.to_string(),
    ),
    ("max.connections", "connections_max", ConfigType::Int, |c| {
        c.connections_max.to_string()
    }),
    (
        "max.incremental.fetch.session.cache.slots",
        "max_incremental_fetch_session_cache_slots",
        ConfigType::Int,
        |c| c.max_incremental_fetch_session_cache_slots.to_string(),
    ),
    ("node.id", "node_id", ConfigType::Int, |c| {
        c.node_id.to_string()
    }),
    (
        "num.partitions",
        "default_partitions",
        ConfigType::Int,
        |c| c.default_partitions.to_string(),
    ),
    (
        "offset.metadata.max.bytes",
        "offset_metadata_bytes_max",
        ConfigType::Int,
        |c| c.offset_metadata_bytes_max.to_string(),
    ),
    (
        "offsets.retention.check.interval.ms",
        "offsets_retention_check_interval_ms",
        ConfigType::Long,
        |c| c.offsets_retention_check_interval_ms.to_string(),
    ),
    (
        "offsets.retention.minutes",
        "offsets_retention_minutes",
        ConfigType::Int,
        |c| c.offsets_retention_minutes.to_string(),
    ),
    (
        "offsets.topic.num.partitions",
        "offsets_topic_partitions",
        ConfigType::Int,
        |c| c.offsets_topic_partitions.to_string(),
    ),
    (
        "producer.id.expiration.ms",
        "producer_id_expiration_ms",
        ConfigType::Int,
        |c| c.producer_id_expiration_ms.to_string(),
    ),
    (
        "queued.max.request.bytes",
        "queued_request_bytes_max",
        ConfigType::Long,
        |c| c.queued_request_bytes_max.to_string(),
    ),
    (
        "socket.request.max.bytes",
        "request_frame_bytes_max",
        ConfigType::Int,
        |c| c.request_frame_bytes_max.to_string(),
    ),
];

fn synonym(name: &str, value: Option<String>, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym {
        name: name.to_string(),
        value,
        source,
    }
}

fn wanted(keys: Option<&Vec<String>>, name: &str) -> bool {
    keys.is_none_or(|k| k.is_empty() || k.iter().any(|x| x == name))
}

/// Where the broker-level value of a topic default comes from, highest
/// precedence first (Kafka's order of synonyms).
fn topic_default_synonyms(
    broker: &Broker,
    dynamic: &DynamicConfigs,
    topic_name: &str,
    broker_name: &str,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if let Some(v) = dynamic.broker.get(broker_name) {
        out.push(synonym(
            broker_name,
            Some(v.clone()),
            CONFIG_SOURCE_DYNAMIC_BROKER,
        ));
    }
    if let Some(v) = dynamic.broker_default.get(broker_name) {
        out.push(synonym(
            broker_name,
            Some(v.clone()),
            CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
        ));
    }
    if broker
        .config
        .is_explicit(&format!("topic_defaults.{topic_name}"))
    {
        out.push(synonym(
            broker_name,
            broker.config.topic_defaults.get(topic_name),
            CONFIG_SOURCE_STATIC_BROKER,
        ));
    }
    out.push(synonym(
        broker_name,
        TopicConfig::default().get(topic_name),
        CONFIG_SOURCE_DEFAULT,
    ));
    out
}

/// One described config; the source is that of the first synonym.
fn entry(
    name: &str,
    value: Option<String>,
    synonyms: Vec<DescribeConfigsSynonym>,
    read_only: bool,
    config_type: ConfigType,
    include_synonyms: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let source = synonyms.first().map_or(CONFIG_SOURCE_DEFAULT, |s| s.source);
    DescribeConfigsResourceResult {
        name: name.to_string(),
        value,
        read_only,
        is_default: source == CONFIG_SOURCE_DEFAULT,
        config_source: if version >= 1 { source } else { -1 },
        is_sensitive: false,
        synonyms: if include_synonyms {
            synonyms
        } else {
            Vec::new()
        },
        config_type: config_type as i8,
        documentation: None,
    }
}

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
    let dynamic = broker.dynamic_configs().clone();
    Ok(TOPIC_CONFIG_NAMES
        .iter()
        .filter(|n| wanted(keys, n))
        .map(|n| {
            let value = topic.config.get(n);
            let mut synonyms = Vec::new();
            if topic.overrides.contains_key(*n) {
                synonyms.push(synonym(n, value.clone(), CONFIG_SOURCE_TOPIC));
            }
            if let Some(broker_name) = crate::dynamic_config::broker_name_for_topic_name(n) {
                synonyms.extend(topic_default_synonyms(broker, &dynamic, n, broker_name));
            }
            entry(
                n,
                value,
                synonyms,
                false,
                TopicConfig::config_type(n),
                include_synonyms,
                version,
            )
        })
        .collect())
}

/// A topic's every config with its effective value and the Kafka name of the
/// layer it comes from (`DYNAMIC_TOPIC_CONFIG`, `STATIC_BROKER_CONFIG`,
/// `DEFAULT_CONFIG`, ...), as DescribeConfigs v1+ reports it: the console's
/// topic page shows this, so it can't disagree with what a Kafka tool shows.
/// `None` for a topic this broker does not hold.
pub fn topic_configs_with_sources(
    broker: &Broker,
    name: &str,
) -> Option<Vec<(String, Option<String>, &'static str)>> {
    let entries = describe_topic(broker, name, None, false, 1).ok()?;
    Some(
        entries
            .into_iter()
            .map(|e| (e.name, e.value, config_source_name(e.config_source)))
            .collect(),
    )
}

/// Kafka's `ConfigEntry.ConfigSource` names for the wire codes.
fn config_source_name(code: i8) -> &'static str {
    match code {
        CONFIG_SOURCE_TOPIC => "DYNAMIC_TOPIC_CONFIG",
        CONFIG_SOURCE_DYNAMIC_BROKER => "DYNAMIC_BROKER_CONFIG",
        CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        CONFIG_SOURCE_STATIC_BROKER => "STATIC_BROKER_CONFIG",
        CONFIG_SOURCE_DEFAULT => "DEFAULT_CONFIG",
        CONFIG_SOURCE_GROUP => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Which layer of broker configs a BROKER resource name addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokerLevel {
    /// Resource name "": cluster-wide dynamic defaults.
    ClusterDefault,
    /// Resource name = this broker's id.
    ThisBroker,
}

fn broker_level(broker: &Broker, name: &str, describing: bool) -> Result<BrokerLevel, BrokerError> {
    if name.is_empty() {
        return Ok(BrokerLevel::ClusterDefault);
    }
    let own = broker.config.node_id;
    let Ok(id) = name.parse::<i32>() else {
        return Err(BrokerError::InvalidRequest(format!(
            "Node id must be an integer, but it is: {name}"
        )));
    };
    if id != own {
        let or_empty = if describing { " or empty string" } else { "" };
        return Err(BrokerError::InvalidRequest(format!(
            "Unexpected broker id, expected {own}{or_empty}, but received {name}"
        )));
    }
    Ok(BrokerLevel::ThisBroker)
}

/// A request for exactly the decommission mark of broker `id`: any broker
/// answers it from the image (Weir's own config, so `weir cluster info` can
/// show the mark of a broker that is stopped), where Kafka answers a
/// broker's configs only on that broker.
fn decommission_mark_of(name: &str, keys: Option<&Vec<String>>) -> Option<i32> {
    match keys.map(Vec::as_slice) {
        Some([key]) if key == DECOMMISSIONED_CONFIG => name.parse().ok(),
        _ => None,
    }
}

fn describe_decommission_mark(
    broker: &Broker,
    id: i32,
    include_synonyms: bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    let marked = broker.cluster().image().is_decommissioned(id);
    let value = marked.to_string();
    let source = if marked {
        CONFIG_SOURCE_DYNAMIC_BROKER
    } else {
        CONFIG_SOURCE_DEFAULT
    };
    vec![entry(
        DECOMMISSIONED_CONFIG,
        Some(value.clone()),
        vec![synonym(DECOMMISSIONED_CONFIG, Some(value), source)],
        false,
        ConfigType::Boolean,
        include_synonyms,
        version,
    )]
}

fn describe_broker(
    broker: &Broker,
    level: BrokerLevel,
    keys: Option<&Vec<String>>,
    include_synonyms: bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    let dynamic = broker.dynamic_configs().clone();
    let mut out = Vec::new();
    if level == BrokerLevel::ClusterDefault {
        // Kafka lists only the configs set at the cluster-default level here.
        for (name, value) in &dynamic.broker_default {
            if !wanted(keys, name) {
                continue;
            }
            let config_type = topic_name_for_broker_name(name)
                .map_or(ConfigType::String, TopicConfig::config_type);
            let synonyms = vec![synonym(
                name,
                Some(value.clone()),
                CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
            )];
            out.push(entry(
                name,
                Some(value.clone()),
                synonyms,
                false,
                config_type,
                include_synonyms,
                version,
            ));
        }
        return out;
    }
    let built_in = BrokerConfig::default();
    for (name, field, config_type, render) in STATIC_BROKER_CONFIGS {
        if !wanted(keys, name) {
            continue;
        }
        let mut synonyms = Vec::new();
        if broker.config.is_explicit(field) {
            synonyms.push(synonym(
                name,
                Some(render(&broker.config)),
                CONFIG_SOURCE_STATIC_BROKER,
            ));
        }
        synonyms.push(synonym(
            name,
            Some(render(&built_in)),
            CONFIG_SOURCE_DEFAULT,
        ));
        out.push(entry(
            name,
            Some(render(&broker.config)),
            synonyms,
            true,
            *config_type,
            include_synonyms,
            version,
        ));
    }
    // Dynamic per-broker configs that are no topic default: the replication
    // throttle rates and the decommission mark, when set.
    for (name, value) in &dynamic.broker {
        let extra = crate::throttle::RATE_CONFIG_NAMES.contains(&name.as_str())
            || name == DECOMMISSIONED_CONFIG;
        if !extra || !wanted(keys, name) {
            continue;
        }
        let config_type = if name == DECOMMISSIONED_CONFIG {
            ConfigType::Boolean
        } else {
            ConfigType::Long
        };
        out.push(entry(
            name,
            Some(value.clone()),
            vec![synonym(
                name,
                Some(value.clone()),
                CONFIG_SOURCE_DYNAMIC_BROKER,
            )],
            false,
            config_type,
            include_synonyms,
            version,
        ));
    }
    let defaults = broker.registry().defaults().clone();
    for (topic_name, broker_name) in TOPIC_DEFAULT_BROKER_NAMES {
        if !wanted(keys, broker_name) {
            continue;
        }
        out.push(entry(
            broker_name,
            defaults.get(topic_name),
            topic_default_synonyms(broker, &dynamic, topic_name, broker_name),
            false,
            TopicConfig::config_type(topic_name),
            include_synonyms,
            version,
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn describe_group(
    broker: &Broker,
    group_id: &str,
    keys: Option<&Vec<String>>,
    include_synonyms: bool,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    if group_id.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "Group name must not be empty".into(),
        ));
    }
    let own = broker
        .dynamic_configs()
        .groups
        .get(group_id)
        .cloned()
        .unwrap_or_default();
    Ok(GROUP_CONFIG_NAMES
        .iter()
        .filter(|n| wanted(keys, n))
        .map(|n| {
            let (value, source) = match own.get(*n) {
                Some(v) => (v.clone(), CONFIG_SOURCE_GROUP),
                None => (
                    group_config_default(n, &broker.config)
                        .unwrap_or_default()
                        .to_string(),
                    CONFIG_SOURCE_DEFAULT,
                ),
            };
            let synonyms = vec![synonym(n, Some(value.clone()), source)];
            entry(
                n,
                Some(value),
                synonyms,
                false,
                ConfigType::Int,
                include_synonyms,
                version,
            )
        })
        .collect())
}

pub fn describe(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = header.api_version;
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let mut result = DescribeConfigsResult {
                resource_type: r.resource_type,
                resource_name: r.resource_name.clone(),
                ..Default::default()
            };
            let keys = r.configuration_keys.as_ref();
            let synonyms = request.include_synonyms;
            let configs = match r.resource_type {
                RESOURCE_TOPIC => describe_topic(broker, &r.resource_name, keys, synonyms, version),
                RESOURCE_BROKER => match decommission_mark_of(&r.resource_name, keys) {
                    Some(id) => Ok(describe_decommission_mark(broker, id, synonyms, version)),
                    None => broker_level(broker, &r.resource_name, true)
                        .map(|level| describe_broker(broker, level, keys, synonyms, version)),
                },
                RESOURCE_GROUP => describe_group(broker, &r.resource_name, keys, synonyms, version),
                other => Err(BrokerError::InvalidRequest(format!(
                    "Unsupported resource type: {other}"
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

/// One requested change: name, operation, value.
struct Change {
    name: String,
    op: i8,
    value: Option<String>,
}

/// Kafka's checks common to both alter APIs: no config named twice, and no
/// null value except for DELETE.
fn check_changes(changes: &[Change]) -> Result<(), BrokerError> {
    let mut seen = HashSet::new();
    if changes.iter().any(|c| !seen.insert(c.name.as_str())) {
        return Err(BrokerError::InvalidRequest(
            "Error due to duplicate config keys".into(),
        ));
    }
    let nulls: Vec<&str> = changes
        .iter()
        .filter(|c| c.op != OP_DELETE && c.value.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(BrokerError::InvalidRequest(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    Ok(())
}

/// APPEND or SUBTRACT on a list value, as Kafka's ConfigurationControlManager
/// does: insertion order kept, no value added twice, empty items dropped, and
/// an empty result allowed.
fn apply_list_op(current: &str, op: i8, value: &str) -> String {
    let mut items: Vec<String> = current
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for v in value.split(',') {
        if op == OP_APPEND {
            if !items.iter().any(|i| i == v) {
                items.push(v.to_string());
            }
        } else {
            items.retain(|i| i != v);
        }
    }
    items.join(",")
}

fn not_a_list(op: i8, name: &str) -> BrokerError {
    let op = if op == OP_APPEND {
        "APPEND"
    } else {
        "SUBTRACT"
    };
    BrokerError::InvalidConfig(ConfigError::Invalid {
        name: name.to_string(),
        value: String::new(),
        reason: format!("Can't {op} to key {name} because its type is not LIST"),
    })
}

/// Applies changes to a map of set configs. `list_default` gives the value a
/// list op starts from when the key is not set (Kafka uses the config's
/// built-in default there); `is_list` says which keys are lists.
fn apply_changes(
    map: &mut BTreeMap<String, String>,
    changes: &[Change],
    is_list: impl Fn(&str) -> bool,
    list_default: impl Fn(&str) -> Option<String>,
) -> Result<(), BrokerError> {
    for c in changes {
        match c.op {
            OP_SET => {
                map.insert(c.name.clone(), c.value.clone().unwrap_or_default());
            }
            OP_DELETE => {
                map.remove(&c.name);
            }
            OP_APPEND | OP_SUBTRACT => {
                if !is_list(&c.name) {
                    return Err(not_a_list(c.op, &c.name));
                }
                let current = map
                    .get(&c.name)
                    .cloned()
                    .or_else(|| list_default(&c.name))
                    .unwrap_or_default();
                let next = apply_list_op(&current, c.op, c.value.as_deref().unwrap_or(""));
                map.insert(c.name.clone(), next);
            }
            other => {
                return Err(BrokerError::InvalidRequest(format!(
                    "Unknown operations type {other}"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses topic overrides that would let retention delete an internal
/// topic's records. Kafka allows `cleanup.policy=delete` on
/// `__consumer_offsets`; Weir refuses it, because it has no compaction yet
/// and the topic is where every group's offsets and metadata live.
fn check_internal_topic(
    name: &str,
    overrides: &BTreeMap<String, String>,
    defaults: &TopicConfig,
) -> Result<(), BrokerError> {
    if !is_internal_topic(name) {
        return Ok(());
    }
    let config =
        defaults.with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if config.deletes_old_segments() {
        return Err(BrokerError::InvalidConfig(ConfigError::Invalid {
            name: "cleanup.policy".into(),
            value: config.cleanup_policy,
            reason: format!(
                "internal topic {name} must not use the delete policy (retention would remove \
                 its records, and {}); Weir refuses this where Kafka allows it",
                internal_topic_role(name)
            ),
        }));
    }
    Ok(())
}

/// A resource's configs before and after a change that the controller must commit.
type ConfigChange = (
    ConfigResource,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

fn alter_topic(
    broker: &Broker,
    name: &str,
    changes: &[Change],
    replace_all: bool,
    validate_only: bool,
    pending: &mut Option<ConfigChange>,
) -> Result<(), BrokerError> {
    check_changes(changes)?;
    let registry = broker.registry();
    let topic = registry
        .get(name)
        .cloned()
        .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
    let mut overrides = if replace_all {
        BTreeMap::new()
    } else {
        topic.overrides.clone()
    };
    apply_changes(
        &mut overrides,
        changes,
        |n| {
            TopicConfig::config_type(n) == ConfigType::List
                && TopicConfig::default().get(n).is_some()
        },
        |n| TopicConfig::default().get(n),
    )?;
    if let Some(unknown) = changes
        .iter()
        .find(|c| TopicConfig::default().get(&c.name).is_none())
    {
        return Err(ConfigError::Unknown(unknown.name.clone()).into());
    }
    let defaults = registry.defaults().clone();
    check_internal_topic(name, &overrides, &defaults)?;
    defaults.with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if !validate_only {
        *pending = Some((
            ConfigResource::Topic(name.to_string()),
            topic.overrides.clone(),
            overrides,
        ));
    }
    Ok(())
}

/// Commits a resource's new configs through the controller (every broker
/// applies them from the metadata log), as the changed keys only.
async fn commit_config_change(broker: &Broker, change: ConfigChange) -> Result<(), BrokerError> {
    let (resource, old, new) = change;
    let mut changes: Vec<(ConfigResource, String, Option<String>)> = Vec::new();
    for (k, v) in &new {
        if old.get(k) != Some(v) {
            changes.push((resource.clone(), k.clone(), Some(v.clone())));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            changes.push((resource.clone(), k.clone(), None));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let request = ControllerRequest::AlterConfigs {
        changes,
        validate_only: false,
    };
    match broker.run_on_controller(request).await? {
        ControllerResponse::Items(items) => match items.into_iter().find(|i| i.error_code != 0) {
            None => Ok(()),
            Some(i) => Err(BrokerError::InvalidRequest(
                i.message
                    .unwrap_or_else(|| format!("controller error {}", i.error_code)),
            )),
        },
        other => Err(BrokerError::Internal(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

fn alter_broker(
    broker: &Broker,
    level: BrokerLevel,
    changes: &[Change],
    replace_all: bool,
    validate_only: bool,
) -> Result<Option<ConfigChange>, BrokerError> {
    check_changes(changes)?;
    let static_names: Vec<&str> = changes
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| {
            topic_name_for_broker_name(n).is_none()
                && !crate::throttle::RATE_CONFIG_NAMES.contains(n)
                && *n != DECOMMISSIONED_CONFIG
        })
        .collect();
    if !static_names.is_empty() {
        let (known, unknown): (Vec<&str>, Vec<&str>) = static_names
            .iter()
            .partition(|n| STATIC_BROKER_CONFIGS.iter().any(|(k, ..)| k == *n));
        let mut reasons = Vec::new();
        if !known.is_empty() {
            reasons.push(format!(
                "Cannot update these configs dynamically: {} (set them in the config file or flags and restart)",
                known.join(", ")
            ));
        }
        if !unknown.is_empty() {
            reasons.push(format!(
                "Weir has no broker config named {}",
                unknown.join(", ")
            ));
        }
        return Err(BrokerError::InvalidRequest(reasons.join("; ")));
    }
    let dynamic = broker.dynamic_configs().clone();
    let mut next = dynamic.clone();
    let map = match level {
        BrokerLevel::ClusterDefault => &mut next.broker_default,
        BrokerLevel::ThisBroker => &mut next.broker,
    };
    if replace_all {
        map.clear();
    }
    apply_changes(
        map,
        changes,
        |n| topic_name_for_broker_name(n).map(TopicConfig::config_type) == Some(ConfigType::List),
        |n| topic_name_for_broker_name(n).and_then(|t| TopicConfig::default().get(t)),
    )?;
    // Kafka answers bad broker config values with INVALID_REQUEST.
    for (name, value) in map.iter() {
        if crate::throttle::RATE_CONFIG_NAMES.contains(&name.as_str())
            && value.trim().parse::<u64>().is_err()
        {
            return Err(BrokerError::InvalidRequest(format!(
                "{name}: expected a non-negative number of bytes per second, got {value}"
            )));
        }
        if name == DECOMMISSIONED_CONFIG {
            if !matches!(level, BrokerLevel::ThisBroker) {
                return Err(BrokerError::InvalidRequest(format!(
                    "{name} marks one broker: set it on that broker's resource, not the cluster default"
                )));
            }
            if value != "true" && value != "false" {
                return Err(BrokerError::InvalidRequest(format!(
                    "{name}: expected true or false, got {value}"
                )));
            }
        }
        if let Some(topic_name) = topic_name_for_broker_name(name) {
            TopicConfig::default()
                .set(topic_name, value)
                .map_err(|e| BrokerError::InvalidRequest(format!("{name}: {e}")))?;
        }
    }
    next.topic_defaults(&broker.config.topic_defaults)
        .map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
    if validate_only {
        return Ok(None);
    }
    // Committed through the controller; every broker (this one included) applies it from
    // the metadata log.
    let (resource, old, new) = match level {
        BrokerLevel::ClusterDefault => (
            ConfigResource::Broker(None),
            &dynamic.broker_default,
            &next.broker_default,
        ),
        BrokerLevel::ThisBroker => (
            ConfigResource::Broker(Some(broker.config.node_id)),
            &dynamic.broker,
            &next.broker,
        ),
    };
    Ok(Some((resource, old.clone(), new.clone())))
}

fn alter_group(
    broker: &Broker,
    group_id: &str,
    changes: &[Change],
    replace_all: bool,
    validate_only: bool,
) -> Result<Option<ConfigChange>, BrokerError> {
    if group_id.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "Default group resources are not allowed.".into(),
        ));
    }
    check_changes(changes)?;
    let dynamic = broker.dynamic_configs().clone();
    let old = dynamic.groups.get(group_id).cloned().unwrap_or_default();
    let mut own = if replace_all {
        BTreeMap::new()
    } else {
        old.clone()
    };
    apply_changes(&mut own, changes, |_| false, |_| None)?;
    validate_group_configs(&own, &broker.config)?;
    if !own.is_empty()
        && !dynamic.groups.contains_key(group_id)
        && dynamic.groups.len() >= GROUPS_WITH_CONFIGS_MAX
    {
        return Err(BrokerError::InvalidRequest(format!(
            "at most {GROUPS_WITH_CONFIGS_MAX} groups may have configs; delete some first"
        )));
    }
    if validate_only {
        return Ok(None);
    }
    Ok(Some((
        ConfigResource::Group(group_id.to_string()),
        old,
        own,
    )))
}

async fn commit(broker: &Broker, pending: Option<ConfigChange>) -> Result<(), BrokerError> {
    match pending {
        Some(change) => commit_config_change(broker, change).await,
        None => Ok(()),
    }
}

async fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: &[Change],
    replace_all: bool,
    validate_only: bool,
) -> Result<(), BrokerError> {
    match resource_type {
        RESOURCE_TOPIC => {
            let mut pending = None;
            alter_topic(
                broker,
                name,
                changes,
                replace_all,
                validate_only,
                &mut pending,
            )?;
            commit(broker, pending).await
        }
        RESOURCE_BROKER => {
            let level = broker_level(broker, name, false)?;
            let pending = alter_broker(broker, level, changes, replace_all, validate_only)?;
            commit(broker, pending).await
        }
        RESOURCE_GROUP => {
            let pending = alter_group(broker, name, changes, replace_all, validate_only)?;
            commit(broker, pending).await
        }
        other => Err(BrokerError::InvalidRequest(format!(
            "Unknown resource type {other}"
        ))),
    }
}

/// Kafka answers every copy of a resource named twice in one request with
/// INVALID_REQUEST and applies none of them.
fn duplicated_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    for (t, n) in resources {
        if !seen.insert((t, n.to_string())) {
            twice.insert((t, n.to_string()));
        }
    }
    twice
}

fn outcome_fields(outcome: Result<(), BrokerError>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (0, None),
        Err(e) => (e.code().code(), Some(e.to_string())),
    }
}

pub async fn alter(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let twice = duplicated_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        {
            let outcome = if twice.contains(&(r.resource_type, r.resource_name.clone())) {
                Err(BrokerError::InvalidRequest(
                    "Each resource must appear at most once.".into(),
                ))
            } else {
                // AlterConfigs replaces the whole set of the resource's configs.
                let changes: Vec<Change> = r
                    .configs
                    .iter()
                    .map(|c| Change {
                        name: c.name.clone(),
                        op: OP_SET,
                        value: c.value.clone(),
                    })
                    .collect();
                alter_resource(
                    broker,
                    r.resource_type,
                    &r.resource_name,
                    &changes,
                    true,
                    request.validate_only,
                )
                .await
            };
            let (error_code, error_message) = outcome_fields(outcome);
            responses.push(AlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
            });
        }
    }
    AlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    }
}

pub async fn incremental_alter(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let twice = duplicated_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        {
            let outcome = if twice.contains(&(r.resource_type, r.resource_name.clone())) {
                Err(BrokerError::InvalidRequest(
                    "Each resource must appear at most once.".into(),
                ))
            } else {
                let changes: Vec<Change> = r
                    .configs
                    .iter()
                    .map(|c| Change {
                        name: c.name.clone(),
                        op: c.config_operation,
                        value: c.value.clone(),
                    })
                    .collect();
                alter_resource(
                    broker,
                    r.resource_type,
                    &r.resource_name,
                    &changes,
                    false,
                    request.validate_only,
                )
                .await
            };
            let (error_code, error_message) = outcome_fields(outcome);
            responses.push(IncrementalResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
            });
        }
    }
    IncrementalAlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_keeps_insertion_order_and_subtract_may_leave_nothing() {
        assert_eq!(
            apply_list_op("delete", OP_APPEND, "compact"),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op("delete,compact", OP_APPEND, "delete"),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op("delete,compact", OP_SUBTRACT, "delete"),
            "compact"
        );
        assert_eq!(apply_list_op("compact", OP_SUBTRACT, "compact"), "");
    }
}
