//! Topic configuration under Kafka's config names (`retention.ms`, ...).
//!
//! Kafka users set these through CreateTopics, AlterConfigs and
//! IncrementalAlterConfigs and read them back with DescribeConfigs, so the
//! names, value syntax and validation follow Kafka. Weir's one deliberate
//! difference is durability: `flush.messages` defaults to 1, which means every
//! produce is fdatasync'ed (by group commit) before it is acknowledged. Setting
//! it higher gives Kafka's looser interval flushing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_log::{FlushPolicy, LogConfig};

/// Ten years: what `flush.ms` values meaning "never" are capped to.
const FLUSH_MS_NEVER: u64 = 10 * 365 * 24 * 3600 * 1000;

/// How a produced batch's timestamp is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Overwrite with the broker's clock at append.
    LogAppendTime,
}

/// A config value that failed validation; maps to Kafka's INVALID_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    Unknown(String),
    #[error(
        "unknown group config '{0}' (Weir's group configs: consumer.session.timeout.ms, consumer.heartbeat.interval.ms)"
    )]
    UnknownGroupConfig(String),
    #[error("invalid value '{value}' for config '{name}': {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// The effective configuration of one topic (defaults plus overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_policy: String,
    pub compression_type: String,
    pub delete_retention_ms: i64,
    pub file_delete_delay_ms: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: i32,
    pub max_compaction_lag_ms: i64,
    pub max_message_bytes: i32,
    pub message_timestamp_type: TimestampType,
    pub message_timestamp_before_max_ms: i64,
    pub message_timestamp_after_max_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub min_insync_replicas: i32,
    pub preallocate: bool,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: i32,
    pub segment_index_bytes: i32,
    pub segment_jitter_ms: i64,
    pub segment_ms: i64,
    pub unclean_leader_election_enable: bool,
    /// Kafka's `leader.replication.throttled.replicas`: `*`, or
    /// `partition:broker` pairs, whose leader-side replication the broker's
    /// `leader.replication.throttled.rate` caps (empty: none).
    pub leader_replication_throttled_replicas: String,
    /// Kafka's `follower.replication.throttled.replicas`: likewise for the
    /// follower side and `follower.replication.throttled.rate`.
    pub follower_replication_throttled_replicas: String,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            cleanup_policy: "delete".into(),
            compression_type: "producer".into(),
            delete_retention_ms: 86_400_000,
            file_delete_delay_ms: 60_000,
            flush_messages: 1,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            max_compaction_lag_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            min_insync_replicas: 1,
            preallocate: false,
            retention_bytes: -1,
            retention_ms: 604_800_000,
            segment_bytes: 1_073_741_824,
            segment_index_bytes: 10_485_760,
            segment_jitter_ms: 0,
            segment_ms: 604_800_000,
            unclean_leader_election_enable: false,
            leader_replication_throttled_replicas: String::new(),
            follower_replication_throttled_replicas: String::new(),
        }
    }
}

/// Every topic config name Weir accepts, in DescribeConfigs order.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

/// Kafka config types, for DescribeConfigs v3+ `config_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A throttled-replicas list as Kafka's `ThrottledReplicaListValidator`
/// accepts it: `*`, or comma-separated `partition:broker` pairs of
/// non-negative integers (or empty).
fn parse_throttled_replicas(name: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    if v == "*" || v.is_empty() {
        return Ok(v.to_string());
    }
    let mut pairs = Vec::new();
    for pair in v.split(',').map(str::trim) {
        let ok = pair.split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
        });
        if !ok {
            return Err(invalid(
                name,
                value,
                "expected *, or partition:broker pairs separated by commas",
            ));
        }
        pairs.push(pair.replace(' ', ""));
    }
    Ok(pairs.join(","))
}

impl TopicConfig {
    /// Whether replica `broker` of `partition` is in a throttled-replicas
    /// list (`*`: every replica).
    pub fn is_throttled(list: &str, partition: i32, broker: i32) -> bool {
        list == "*"
            || list
                .split(',')
                .any(|pair| pair == format!("{partition}:{broker}"))
    }
}

fn parse_long(name: &str, value: &str, min: i64) -> Result<i64, ConfigError> {
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "expected a whole number"))?;
    if parsed < min {
        return Err(invalid(name, value, format!("must be at least {min}")));
    }
    Ok(parsed)
}

fn parse_int(name: &str, value: &str, min: i32) -> Result<i32, ConfigError> {
    let parsed = parse_long(name, value, i64::from(min))?;
    i32::try_from(parsed).map_err(|_| invalid(name, value, "out of range for a 32-bit int"))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, value, "expected true or false")),
    }
}

impl TopicConfig {
    /// The Kafka type of a config, for DescribeConfigs.
    pub fn config_type(name: &str) -> ConfigType {
        match name {
            "cleanup.policy"
            | "leader.replication.throttled.replicas"
            | "follower.replication.throttled.replicas" => ConfigType::List,
            "compression.type" | "message.timestamp.type" => ConfigType::String,
            "preallocate" | "unclean.leader.election.enable" => ConfigType::Boolean,
            "min.cleanable.dirty.ratio" => ConfigType::Double,
            "index.interval.bytes"
            | "max.message.bytes"
            | "min.insync.replicas"
            | "segment.bytes"
            | "segment.index.bytes" => ConfigType::Int,
            _ => ConfigType::Long,
        }
    }

    /// Sets one config by its Kafka name, validating the value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        match name {
            "cleanup.policy" => {
                // Kafka keeps the list in the order given (APPEND adds at the end),
                // ignores repeats (KAFKA-19875) and accepts the empty list, which
                // means neither delete nor compact: records are kept forever
                // (KIP-1161 made that explicit in 4.2; earlier releases behaved so too).
                let mut parts: Vec<&str> = Vec::new();
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if part != "delete" && part != "compact" {
                        return Err(invalid(
                            name,
                            value,
                            "expected delete, compact, both, or empty",
                        ));
                    }
                    if !parts.contains(&part) {
                        parts.push(part);
                    }
                }
                self.cleanup_policy = parts.join(",");
            }
            "compression.type" => {
                let v = value.trim().to_ascii_lowercase();
                if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]
                    .contains(&v.as_str())
                {
                    return Err(invalid(
                        name,
                        value,
                        "expected producer, uncompressed, gzip, snappy, lz4 or zstd",
                    ));
                }
                self.compression_type = v;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_long(name, value, 0)?,
            "file.delete.delay.ms" => self.file_delete_delay_ms = parse_long(name, value, 0)?,
            "flush.messages" => self.flush_messages = parse_long(name, value, 1)?,
            "flush.ms" => self.flush_ms = parse_long(name, value, 0)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_int(name, value, 0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse_long(name, value, 1)?,
            "max.message.bytes" => self.max_message_bytes = parse_int(name, value, 0)?,
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid(name, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = parse_long(name, value, 0)?
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = parse_long(name, value, 0)?
            }
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(name, value, "expected a number"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(invalid(name, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio = ratio;
            }
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_long(name, value, 0)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_int(name, value, 1)?,
            "preallocate" => self.preallocate = parse_bool(name, value)?,
            "retention.bytes" => self.retention_bytes = parse_long(name, value, -1)?,
            "retention.ms" => self.retention_ms = parse_long(name, value, -1)?,
            // Kafka's floor is 1 MiB in production; tests need tiny segments, so
            // Weir only insists that a segment can hold one batch header.
            "segment.bytes" => self.segment_bytes = parse_int(name, value, 128)?,
            "segment.index.bytes" => self.segment_index_bytes = parse_int(name, value, 4096)?,
            "segment.jitter.ms" => self.segment_jitter_ms = parse_long(name, value, 0)?,
            "segment.ms" => self.segment_ms = parse_long(name, value, 1)?,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = parse_bool(name, value)?
            }
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas = parse_throttled_replicas(name, value)?
            }
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas =
                    parse_throttled_replicas(name, value)?
            }
            _ => return Err(ConfigError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// Reads one config by its Kafka name, formatted as Kafka does.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = match name {
            "cleanup.policy" => self.cleanup_policy.clone(),
            "compression.type" => self.compression_type.clone(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "file.delete.delay.ms" => self.file_delete_delay_ms.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "preallocate" => self.preallocate.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "segment.jitter.ms" => self.segment_jitter_ms.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election_enable.to_string(),
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas.clone()
            }
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas.clone()
            }
            _ => return None,
        };
        Some(value)
    }

    /// Applies overrides on top of `self`, all or nothing.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut config = self.clone();
        for (name, value) in overrides {
            config.set(name, value)?;
        }
        config
            .validate()
            .map_err(|reason| invalid("(combination)", "", reason))?;
        Ok(config)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes < 61 {
            return Err("max.message.bytes must hold at least one batch header (61)".into());
        }
        Ok(())
    }

    /// Whether `cleanup.policy` includes `delete`: only then do retention.ms and
    /// retention.bytes remove old segments (Kafka's LogManager skips the rest).
    pub fn deletes_old_segments(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == "delete")
    }

    /// Whether `cleanup.policy` includes `compact`: such topics refuse keyless
    /// records, whether or not a cleaner runs yet.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == "compact")
    }

    /// The cleaner's view of this config (used only when [`TopicConfig::is_compacted`]).
    pub fn compaction_config(&self) -> weir_log::CompactionConfig {
        weir_log::CompactionConfig {
            delete_retention_ms: self.delete_retention_ms,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            max_compaction_lag_ms: self.max_compaction_lag_ms,
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio,
        }
    }

    /// The storage engine's view of this config.
    pub fn log_config(&self) -> LogConfig {
        let flush = if self.flush_messages <= 1 {
            FlushPolicy::EveryAppend
        } else {
            FlushPolicy::Interval {
                messages: u64::try_from(self.flush_messages).unwrap_or(u64::MAX),
                // Kafka spells "never" as Long.MAX_VALUE; a deadline that far out
                // would overflow a clock, so "never" becomes ten years.
                ms: u64::try_from(self.flush_ms)
                    .unwrap_or(u64::MAX)
                    .min(FLUSH_MS_NEVER),
            }
        };
        LogConfig {
            segment_bytes: u64::try_from(self.segment_bytes).unwrap_or(1 << 30),
            segment_ms: self.segment_ms,
            index_interval_bytes: u32::try_from(self.index_interval_bytes).unwrap_or(4096),
            // A compact-only or empty policy keeps every segment; the log only
            // knows retention limits, so "no deletion" is "no limit" there.
            retention_ms: if self.deletes_old_segments() {
                self.retention_ms
            } else {
                -1
            },
            retention_bytes: if self.deletes_old_segments() {
                self.retention_bytes
            } else {
                -1
            },
            flush,
            segment_index_bytes: u32::try_from(self.segment_index_bytes).unwrap_or(10 << 20),
            ..LogConfig::default()
        }
    }

    /// How long retention waits, for the broker's retention timer.
    pub fn retention(&self) -> Option<Duration> {
        u64::try_from(self.retention_ms)
            .ok()
            .map(Duration::from_millis)
    }
}

/// A scalar as it may appear in TOML (`"retention.ms" = 1000` or `= "1000"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum ConfigScalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ConfigScalar {
    fn render(&self) -> String {
        match self {
            ConfigScalar::Bool(b) => b.to_string(),
            ConfigScalar::Int(i) => i.to_string(),
            ConfigScalar::Float(f) => f.to_string(),
            ConfigScalar::Text(s) => s.clone(),
        }
    }
}

// Serialized as a map of Kafka names to values, so a TOML file reads like Kafka's
// server.properties: `[topic_defaults] "retention.ms" = 3600000`.
impl Serialize for TopicConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, String> = TOPIC_CONFIG_NAMES
            .iter()
            .filter_map(|name| self.get(name).map(|value| (*name, value)))
            .collect();
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TopicConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, ConfigScalar>::deserialize(deserializer)?;
        let mut config = TopicConfig::default();
        for (name, value) in &raw {
            config
                .set(name, &value.render())
                .map_err(serde::de::Error::custom)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_rejected_with_the_config_name() {
        let mut config = TopicConfig::default();
        let err = config.set("retention.ms", "soon").unwrap_err();
        assert!(err.to_string().contains("retention.ms"));
        assert!(config.set("no.such.config", "1").is_err());
        assert!(config.set("cleanup.policy", "shred").is_err());
        assert!(config.set("message.timestamp.type", "Whenever").is_err());
    }

    #[test]
    fn cleanup_policy_keeps_order_drops_repeats_and_may_be_empty() {
        let mut config = TopicConfig::default();
        config
            .set("cleanup.policy", "delete,compact,delete")
            .unwrap();
        assert_eq!(config.cleanup_policy, "delete,compact");
        config.set("cleanup.policy", "").unwrap();
        assert_eq!(config.cleanup_policy, "");
        assert!(!config.deletes_old_segments() && !config.is_compacted());
    }

    #[test]
    fn retention_removes_segments_only_under_the_delete_policy() {
        let config = TopicConfig::default();
        assert_eq!(config.log_config().retention_ms, config.retention_ms);
        for policy in ["compact", ""] {
            let kept = config
                .with_overrides([("cleanup.policy", policy), ("retention.bytes", "10")])
                .unwrap();
            assert_eq!(kept.log_config().retention_ms, -1, "{policy:?}");
            assert_eq!(kept.log_config().retention_bytes, -1, "{policy:?}");
        }
        let both = config
            .with_overrides([("cleanup.policy", "compact,delete")])
            .unwrap();
        assert_eq!(both.log_config().retention_ms, config.retention_ms);
    }

    #[test]
    fn every_listed_name_round_trips_through_get_and_set() {
        let mut config = TopicConfig::default();
        for name in TOPIC_CONFIG_NAMES {
            let value = config.get(name).expect("listed name must be readable");
            config.set(name, &value).expect("own rendering must parse");
        }
        assert_eq!(config, TopicConfig::default());
    }

    #[test]
    fn flush_messages_one_means_fsync_before_ack() {
        let config = TopicConfig::default();
        assert!(matches!(
            config.log_config().flush,
            FlushPolicy::EveryAppend
        ));
        let loose = config
            .with_overrides([("flush.messages", "10000")])
            .unwrap();
        assert!(matches!(
            loose.log_config().flush,
            FlushPolicy::Interval { .. }
        ));
        // Kafka's "never" must not become a deadline that overflows the clock.
        let never = config
            .with_overrides([("flush.messages", "9223372036854775807")])
            .unwrap();
        let FlushPolicy::Interval { ms, .. } = never.log_config().flush else {
            panic!("interval policy")
        };
        assert!(
            std::time::Instant::now()
                .checked_add(std::time::Duration::from_millis(ms))
                .is_some()
        );
    }
}
