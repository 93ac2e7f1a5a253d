//! Configs changed at runtime through (Incremental)AlterConfigs: dynamic broker
//! configs and group configs (KIP-848).
//!
//! The metadata log holds them, as Kafka's does (Config records for the BROKER
//! resource named by a node id or "" and for GROUP resources): a change goes to
//! the controller and every broker applies it from its image. Each broker also
//! keeps the last applied set in `meta/dynamic-configs.json`, replaced
//! atomically on every change, so that its logs open with the right topic
//! defaults before the image arrives at a restart. A file written before the
//! configs moved into the metadata log (no `from_metadata_log` mark) is imported
//! into it once, at join. Precedence for a broker setting, highest first
//! (Kafka's): per-broker dynamic (resource name = node id), cluster-wide dynamic
//! default (resource name ""), static (file, environment, flags), built-in
//! default.
//!
//! Only the topic defaults (`log.retention.ms`, ... : Kafka's
//! `DynamicLogConfig.ReconfigurableConfigs`) are dynamic in Weir; they apply to
//! every topic without its own override of the same config.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use weir_metadata::records::{BrokerId, ConfigResource};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::groups::consumer::ConsumerLimits;
use crate::topic_config::{ConfigError, TopicConfig};
use crate::topics::write_atomically;

/// Each topic config with its broker-level name (Kafka's
/// `ServerTopicConfigSynonyms.TOPIC_CONFIG_SYNONYMS`, first synonym only).
pub const TOPIC_DEFAULT_BROKER_NAMES: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", "compression.type"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("file.delete.delay.ms", "log.segment.delete.delay.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("preallocate", "log.preallocate"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.jitter.ms", "log.roll.jitter.ms"),
    ("segment.ms", "log.roll.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// The topic config a broker-level name sets, if it is one of the topic defaults.
pub fn topic_name_for_broker_name(broker_name: &str) -> Option<&'static str> {
    TOPIC_DEFAULT_BROKER_NAMES
        .iter()
        .find(|(_, b)| *b == broker_name)
        .map(|(t, _)| *t)
}

/// The broker-level name of a topic config.
pub fn broker_name_for_topic_name(topic_name: &str) -> Option<&'static str> {
    TOPIC_DEFAULT_BROKER_NAMES
        .iter()
        .find(|(t, _)| *t == topic_name)
        .map(|(_, b)| *b)
}

/// KIP-848 group configs Weir applies (Kafka's `GroupConfig`; the share.* and
/// streams.* ones are for group types Weir does not have).
pub const GROUP_SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const GROUP_HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";
pub const GROUP_CONFIG_NAMES: &[&str] = &[GROUP_SESSION_TIMEOUT, GROUP_HEARTBEAT_INTERVAL];

/// Groups that may carry configs at once: the file is rewritten whole on each
/// change, so it must stay small.
pub const GROUPS_WITH_CONFIGS_MAX: usize = 10_000;

/// What is persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicConfigs {
    /// Written from the metadata image (a copy of it), rather than by a broker
    /// that kept these configs on its own: such a file is imported once.
    pub from_metadata_log: bool,
    /// Cluster-wide dynamic defaults (BROKER resource named ""), broker names.
    pub broker_default: BTreeMap<String, String>,
    /// This broker's dynamic configs (BROKER resource named by its id).
    pub broker: BTreeMap<String, String>,
    /// Group configs by group id.
    pub groups: BTreeMap<String, BTreeMap<String, String>>,
}

impl DynamicConfigs {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("meta").join("dynamic-configs.json")
    }

    /// Loads the stored configs; none stored yet is an empty set.
    pub fn load(data_dir: &Path) -> Result<DynamicConfigs, BrokerError> {
        let path = Self::path(data_dir);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| BrokerError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DynamicConfigs::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the stored file (temp file, fsync, rename, fsync dir).
    pub fn persist(&self, data_dir: &Path) -> Result<(), BrokerError> {
        let path = Self::path(data_dir);
        if let Some(dir) = path.parent() {
            weir_log::durable::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| BrokerError::Internal(format!("serialize dynamic configs: {e}")))?;
        write_atomically(&path, &json)?;
        Ok(())
    }

    /// This broker's view of the image's dynamic configs.
    pub fn from_image(image: &weir_metadata::image::MetadataImage, me: BrokerId) -> DynamicConfigs {
        let mut out = DynamicConfigs {
            from_metadata_log: true,
            ..DynamicConfigs::default()
        };
        for (resource, configs) in &image.configs {
            match resource {
                ConfigResource::Broker(None) => out.broker_default = configs.clone(),
                ConfigResource::Broker(Some(id)) if *id == me => out.broker = configs.clone(),
                ConfigResource::Group(group) if !configs.is_empty() => {
                    out.groups.insert(group.clone(), configs.clone());
                }
                _ => {}
            }
        }
        out
    }

    /// The same configs, wherever they were kept.
    pub fn same_values(&self, other: &DynamicConfigs) -> bool {
        self.broker_default == other.broker_default
            && self.broker == other.broker
            && self.groups == other.groups
    }

    /// What a file from before the metadata log holds that `image_view` (the image's) does
    /// not: the changes that import it, as (resource, name, value). Keys the image already
    /// sets keep the image's value, the cluster's newer word.
    pub fn import_changes(
        &self,
        image_view: &DynamicConfigs,
        me: BrokerId,
    ) -> Vec<(ConfigResource, String, Option<String>)> {
        let mut changes = Vec::new();
        let mut add = |resource: ConfigResource,
                       ours: &BTreeMap<String, String>,
                       theirs: Option<&BTreeMap<String, String>>| {
            for (k, v) in ours {
                if theirs.is_none_or(|t| !t.contains_key(k)) {
                    changes.push((resource.clone(), k.clone(), Some(v.clone())));
                }
            }
        };
        add(
            ConfigResource::Broker(None),
            &self.broker_default,
            Some(&image_view.broker_default),
        );
        add(
            ConfigResource::Broker(Some(me)),
            &self.broker,
            Some(&image_view.broker),
        );
        for (group, configs) in &self.groups {
            add(
                ConfigResource::Group(group.clone()),
                configs,
                image_view.groups.get(group),
            );
        }
        changes
    }

    /// The topic defaults in force: the static ones with the dynamic default
    /// layer, then this broker's layer, on top.
    pub fn topic_defaults(
        &self,
        static_defaults: &TopicConfig,
    ) -> Result<TopicConfig, ConfigError> {
        let layered = self
            .broker_default
            .iter()
            .chain(self.broker.iter())
            .filter_map(|(name, value)| {
                topic_name_for_broker_name(name).map(|t| (t, value.as_str()))
            });
        static_defaults.with_overrides(layered)
    }

    /// The dynamic value of a broker config and where it comes from.
    pub fn broker_value(&self, broker_name: &str) -> Option<(&str, DynamicLevel)> {
        if let Some(v) = self.broker.get(broker_name) {
            return Some((v, DynamicLevel::Broker));
        }
        self.broker_default
            .get(broker_name)
            .map(|v| (v.as_str(), DynamicLevel::ClusterDefault))
    }

    /// The consumer-protocol timing for `group_id`: its group configs where
    /// set, the broker's otherwise.
    pub fn consumer_limits_for(&self, group_id: &str, broker: &ConsumerLimits) -> ConsumerLimits {
        let mut limits = broker.clone();
        if let Some(configs) = self.groups.get(group_id) {
            if let Some(v) = configs
                .get(GROUP_SESSION_TIMEOUT)
                .and_then(|v| v.parse().ok())
            {
                limits.session_timeout_ms = v;
            }
            if let Some(v) = configs
                .get(GROUP_HEARTBEAT_INTERVAL)
                .and_then(|v| v.parse().ok())
            {
                limits.heartbeat_interval_ms = v;
            }
        }
        limits
    }
}

/// Which dynamic layer a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicLevel {
    /// DYNAMIC_BROKER_CONFIG.
    Broker,
    /// DYNAMIC_DEFAULT_BROKER_CONFIG.
    ClusterDefault,
}

/// The broker-level default of a group config.
pub fn group_config_default(name: &str, config: &BrokerConfig) -> Option<i32> {
    match name {
        GROUP_SESSION_TIMEOUT => Some(config.group_consumer_session_timeout_ms),
        GROUP_HEARTBEAT_INTERVAL => Some(config.group_consumer_heartbeat_interval_ms),
        _ => None,
    }
}

/// Checks one group's complete set of configs as Kafka's `GroupConfig.validate`
/// does: known names, whole numbers >= 1, within the broker's min/max bounds,
/// and the session timeout above the heartbeat interval.
pub fn validate_group_configs(
    configs: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Result<(), ConfigError> {
    let mut values = BTreeMap::new();
    for name in GROUP_CONFIG_NAMES {
        let default = group_config_default(name, broker).unwrap_or(1);
        let value = match configs.get(*name) {
            Some(text) => {
                let parsed: i32 = text.trim().parse().map_err(|_| ConfigError::Invalid {
                    name: (*name).to_string(),
                    value: text.clone(),
                    reason: "expected a whole number".into(),
                })?;
                if parsed < 1 {
                    return Err(ConfigError::Invalid {
                        name: (*name).to_string(),
                        value: text.clone(),
                        reason: "must be at least 1".into(),
                    });
                }
                parsed
            }
            None => default,
        };
        values.insert(*name, value);
    }
    if let Some(unknown) = configs
        .keys()
        .find(|k| !GROUP_CONFIG_NAMES.contains(&k.as_str()))
    {
        return Err(ConfigError::UnknownGroupConfig(unknown.clone()));
    }
    let bound = |name: &str, value: i32, min: (i32, &str), max: (i32, &str)| {
        let reason = if value < min.0 {
            format!("must be greater than or equal to {} ({})", min.1, min.0)
        } else if value > max.0 {
            format!("must be less than or equal to {} ({})", max.1, max.0)
        } else {
            return Ok(());
        };
        Err(ConfigError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        })
    };
    let heartbeat = values[GROUP_HEARTBEAT_INTERVAL];
    let session = values[GROUP_SESSION_TIMEOUT];
    // Only values set on the group are held to the bounds: the broker's own
    // defaults were accepted at start.
    if configs.contains_key(GROUP_HEARTBEAT_INTERVAL) {
        bound(
            GROUP_HEARTBEAT_INTERVAL,
            heartbeat,
            (
                broker.group_consumer_min_heartbeat_interval_ms,
                "group.consumer.min.heartbeat.interval.ms",
            ),
            (
                broker.group_consumer_max_heartbeat_interval_ms,
                "group.consumer.max.heartbeat.interval.ms",
            ),
        )?;
    }
    if configs.contains_key(GROUP_SESSION_TIMEOUT) {
        bound(
            GROUP_SESSION_TIMEOUT,
            session,
            (
                broker.group_consumer_min_session_timeout_ms,
                "group.consumer.min.session.timeout.ms",
            ),
            (
                broker.group_consumer_max_session_timeout_ms,
                "group.consumer.max.session.timeout.ms",
            ),
        )?;
    }
    if session <= heartbeat {
        return Err(ConfigError::Invalid {
            name: GROUP_SESSION_TIMEOUT.to_string(),
            value: session.to_string(),
            reason: format!("must be greater than {GROUP_HEARTBEAT_INTERVAL} ({heartbeat})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_broker_layer_wins_over_cluster_default_and_static() {
        let mut statics = TopicConfig::default();
        statics.set("retention.ms", "1000").unwrap();
        let mut dynamic = DynamicConfigs::default();
        dynamic
            .broker_default
            .insert("log.retention.ms".into(), "2000".into());
        assert_eq!(dynamic.topic_defaults(&statics).unwrap().retention_ms, 2000);
        dynamic
            .broker
            .insert("log.retention.ms".into(), "3000".into());
        assert_eq!(dynamic.topic_defaults(&statics).unwrap().retention_ms, 3000);
    }

    #[test]
    fn group_configs_are_held_to_the_broker_bounds() {
        let broker = BrokerConfig::default();
        let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(validate_group_configs(&set(&[(GROUP_SESSION_TIMEOUT, "50000")]), &broker).is_ok());
        assert!(validate_group_configs(&set(&[(GROUP_SESSION_TIMEOUT, "1000")]), &broker).is_err());
        assert!(
            validate_group_configs(&set(&[(GROUP_HEARTBEAT_INTERVAL, "20000")]), &broker).is_err()
        );
        assert!(
            validate_group_configs(&set(&[("share.session.timeout.ms", "50000")]), &broker)
                .is_err()
        );
        assert!(validate_group_configs(&set(&[(GROUP_SESSION_TIMEOUT, "soon")]), &broker).is_err());
    }
}
