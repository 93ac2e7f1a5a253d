//! Broker configuration: what one `weir serve` process needs to know.
//!
//! The binary fills this from a TOML file, `WEIR_*` environment variables and
//! flags (in that order of precedence, lowest first); this crate only defines
//! the shape, the defaults and validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

pub use crate::cluster_config::{HostPort, Voters};
use crate::topic_config::TopicConfig;

/// Everything a single broker needs at start.
///
/// Each field's doc comment is also its `weir serve --help` text
/// ([`BrokerConfig::key_help`]), so it is written for operators.
#[derive(Debug, Clone, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in Metadata responses.
    pub node_id: i32,
    /// Where the Kafka listener binds (clients and, in a cluster, replica fetches).
    pub listen: HostPort,
    /// Where the operations HTTP listener binds (`/metrics`, `/health/live`,
    /// `/health/ready`). Loopback by default: metrics name topics and groups.
    pub http_listen: HostPort,
    /// Most partitions given per-partition metric series (the first ones by
    /// topic name, then index); the rest are counted in
    /// `weir_metrics_partition_series_dropped`. Bounds the size of a scrape.
    pub metrics_partition_series_max: usize,
    /// What Metadata tells clients to connect to; defaults to `listen` (but a
    /// wildcard bind address is replaced by 127.0.0.1, since clients can't dial 0.0.0.0).
    pub advertised_listen: Option<HostPort>,
    /// Where the metadata quorum's (Raft) listener binds. Defaults to this
    /// node's own entry in `controller_voters`; a single node needs none.
    pub controller_listen: Option<HostPort>,
    /// The metadata quorum's voters, KRaft's `controller.quorum.voters`
    /// shape (`1@host:9093,2@host:9093,3@host:9093`). Every voter must be
    /// given the same list. Unset: this node alone is the quorum. A node not
    /// in the list follows the metadata log as a non-voting learner.
    pub controller_voters: Option<Voters>,
    /// Kafka's `broker.rack`: replicas of a partition go to different racks
    /// while there are racks to spare.
    pub rack: Option<String>,
    /// Kafka's `broker.session.timeout.ms`: the controller fences a broker it
    /// has not heard from for this long.
    pub broker_session_timeout_ms: u64,
    /// Kafka's `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up with its leader
    /// for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// Kafka's `max.incremental.fetch.session.cache.slots`: how many KIP-227 fetch sessions
    /// this broker caches (0: none, every fetch is answered in full).
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Kafka's `auto.leader.rebalance.enable`: leadership moves back to each partition's
    /// preferred replica (the first) once it is live and in sync again.
    pub auto_leader_rebalance_enable: bool,
    /// How often the controller checks for that (Kafka's
    /// `leader.imbalance.check.interval.seconds`, in ms).
    pub leader_imbalance_check_interval_ms: u64,
    /// Root of all partition directories and broker metadata.
    pub data_dir: PathBuf,
    /// Stable id reported in Metadata/DescribeCluster.
    pub cluster_id: String,
    /// Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic.
    pub default_partitions: i32,
    /// Kafka's `socket.request.max.bytes`: frames larger than this close the connection.
    pub request_frame_bytes_max: usize,
    /// Kafka's `queued.max.request.bytes`: the most bytes of large requests
    /// (over 64 KiB) buffered across all connections while they arrive. Past
    /// it, connections stop reading until memory frees. Smaller requests live
    /// in each connection's 64 KiB read buffer (bounded by `connections_max`).
    pub queued_request_bytes_max: usize,
    /// Connections beyond this are refused at accept.
    pub connections_max: usize,
    /// Kafka's `connections.max.idle.ms`.
    pub connection_idle_ms_max: u64,
    /// Requests read from one connection but not yet answered.
    pub in_flight_requests_max: usize,
    /// Cap on open segment file descriptors across all partitions.
    pub open_files_max: usize,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// Kafka's `log.cleaner.threads`: threads compacting `compact` topics (0: none run in the
    /// background; `weir topic compact` still works, on one cleaner).
    pub log_cleaner_threads: usize,
    /// Kafka's `log.cleaner.io.max.bytes.per.second`: read plus write rate of each cleaner
    /// thread (0: unlimited).
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// Kafka's `log.cleaner.dedupe.buffer.size`: the key map memory of all cleaner threads
    /// together, split evenly between them.
    pub log_cleaner_dedupe_buffer_size: usize,
    /// Kafka's `log.cleaner.backoff.ms`: how long an idle cleaner thread sleeps.
    pub log_cleaner_backoff_ms: u64,
    /// Defaults for every topic (overridable per topic with Kafka config names).
    pub topic_defaults: TopicConfig,
    /// Kafka's `group.initial.rebalance.delay.ms`: the first JoinGroup round of
    /// an empty group waits this long for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka's `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// Kafka's `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// Kafka's `group.max.size` (also the cap of consumer-protocol groups).
    pub group_max_size: usize,
    /// Kafka's `group.consumer.heartbeat.interval.ms`: how often members of
    /// consumer-protocol (KIP-848) groups heartbeat.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Kafka's `group.consumer.session.timeout.ms`: a consumer-protocol member
    /// silent this long is removed.
    pub group_consumer_session_timeout_ms: i32,
    /// Kafka's `offsets.topic.num.partitions`: partitions of `__consumer_offsets`
    /// when it is created (later changes don't move existing groups).
    pub offsets_topic_partitions: i32,
    /// Kafka's `offsets.topic.segment.bytes`: `segment.bytes` of `__consumer_offsets` when it
    /// is created. Smaller than other topics' so the cleaner, which never touches the active
    /// segment, keeps the topic small.
    pub offsets_topic_segment_bytes: i64,
    /// Kafka's `transaction.state.log.segment.bytes`, for `__transaction_state`.
    pub transaction_state_segment_bytes: i64,
    /// Kafka's `offsets.retention.minutes`: how long an empty group's offsets are kept.
    pub offsets_retention_minutes: i64,
    /// Kafka's `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// Kafka's `offset.metadata.max.bytes`: the longest commit metadata string.
    pub offset_metadata_bytes_max: usize,
    /// Kafka's `group.consumer.min.heartbeat.interval.ms`: the lowest
    /// `consumer.heartbeat.interval.ms` a group config may set.
    pub group_consumer_min_heartbeat_interval_ms: i32,
    /// Kafka's `group.consumer.max.heartbeat.interval.ms`.
    pub group_consumer_max_heartbeat_interval_ms: i32,
    /// Kafka's `group.consumer.min.session.timeout.ms`: the lowest
    /// `consumer.session.timeout.ms` a group config may set.
    pub group_consumer_min_session_timeout_ms: i32,
    /// Kafka's `group.consumer.max.session.timeout.ms`.
    pub group_consumer_max_session_timeout_ms: i32,
    /// Kafka's `producer.id.expiration.ms`: a partition forgets an idempotent
    /// producer whose last batch is older than this.
    pub producer_id_expiration_ms: i64,
    /// Serve transactions (transactional InitProducerId, AddPartitionsToTxn,
    /// EndTxn, ...). Off, transactional clients get
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which every client treats as
    /// fatal (Kafka has no such switch; this is for operators who want none).
    pub transactions_enabled: bool,
    /// Kafka's `transaction.max.timeout.ms`: the longest `transaction.timeout.ms`
    /// a producer may ask for (INVALID_TRANSACTION_TIMEOUT above it).
    pub transaction_max_timeout_ms: i32,
    /// Kafka's `transaction.state.log.num.partitions`: partitions of
    /// `__transaction_state` when it is created.
    pub transaction_state_partitions: i32,
    /// Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`:
    /// how often transactions past their timeout are looked for and aborted.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// Which settings were given explicitly (config file, environment or
    /// flags), by field name; topic defaults as `topic_defaults.<kafka name>`.
    /// DescribeConfigs reports these as STATIC_BROKER_CONFIG and the rest as
    /// DEFAULT_CONFIG. Filled by the binary; never read from or written to TOML.
    #[serde(skip)]
    pub explicit: BTreeSet<String>,
    /// Where each setting's value came from, by the same names as `explicit`;
    /// a name absent here is at its default. Filled by [`ConfigLayers`].
    #[serde(skip)]
    pub sources: BTreeMap<String, ConfigSource>,
}

/// Where a setting's value came from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    Default,
    File,
    Env,
    Flag,
}

impl ConfigSource {
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::Default => "default",
            ConfigSource::File => "file",
            ConfigSource::Env => "env",
            ConfigSource::Flag => "flag",
        }
    }
}

/// Builds a [`BrokerConfig`] from layers of settings: the built-in defaults,
/// then a TOML file, then `WEIR_<KEY>` variables, then `--<key>` flags (each
/// added in that order by the caller; a later one wins).
///
/// The one definition of the settings is [`BrokerConfig`] itself: its serde
/// field names are the keys in every layer ([`BrokerConfig::scalar_keys`]), so a
/// field added there is settable everywhere with no other change.
#[derive(Debug)]
pub struct ConfigLayers {
    /// The settings so far, as the serde form of `BrokerConfig`.
    merged: serde_json::Map<String, serde_json::Value>,
    sources: BTreeMap<String, ConfigSource>,
}

impl Default for ConfigLayers {
    fn default() -> Self {
        ConfigLayers::new()
    }
}

impl ConfigLayers {
    pub fn new() -> ConfigLayers {
        let merged = match serde_json::to_value(BrokerConfig::default()) {
            Ok(serde_json::Value::Object(map)) => map,
            // The defaults are a struct of plain fields; serializing them can't fail.
            _ => serde_json::Map::new(),
        };
        ConfigLayers {
            merged,
            sources: BTreeMap::new(),
        }
    }

    /// Adds a TOML file's settings. Unknown keys and values of the wrong type
    /// are errors naming the key.
    pub fn add_file(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        for (key, value) in table {
            let value = serde_json::to_value(&value).map_err(|e| format!("{key}: {e}"))?;
            if key == "topic_defaults" {
                let serde_json::Value::Object(names) = value else {
                    return Err("topic_defaults must be a table of topic configs".into());
                };
                check(&key, &serde_json::Value::Object(names.clone()))?;
                let defaults = self
                    .merged
                    .entry(key.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                for (name, v) in names {
                    self.sources
                        .insert(format!("topic_defaults.{name}"), ConfigSource::File);
                    if let serde_json::Value::Object(d) = defaults {
                        d.insert(name, v);
                    }
                }
                continue;
            }
            check(&key, &value)?;
            self.merged.insert(key.clone(), value);
            self.sources.insert(key, ConfigSource::File);
        }
        Ok(())
    }

    /// Sets one scalar key from text (an environment variable's or a flag's
    /// value): a number or boolean where the key takes one, else the text.
    pub fn set_text(&mut self, key: &str, text: &str, source: ConfigSource) -> Result<(), String> {
        if key == "topic_defaults" || !self.merged.contains_key(key) {
            return Err(format!("unknown config key {key:?}"));
        }
        // Try the text as a JSON scalar first (3000, true), then as a string; the
        // typed parse decides which one the key takes.
        let literal = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .filter(|v| v.is_number() || v.is_boolean());
        let candidates = literal
            .into_iter()
            .chain([serde_json::Value::String(text.to_string())]);
        let mut first_error = None;
        for value in candidates {
            match check(key, &value) {
                Ok(()) => {
                    self.merged.insert(key.to_string(), value);
                    self.sources.insert(key.to_string(), source);
                    return Ok(());
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| format!("{key}: invalid value {text:?}")))
    }

    /// Sets one default topic config (Kafka name) from text.
    pub fn set_topic_default(
        &mut self,
        name: &str,
        text: &str,
        source: ConfigSource,
    ) -> Result<(), String> {
        let mut probe = TopicConfig::default();
        probe.set(name, text).map_err(|e| e.to_string())?;
        if let Some(serde_json::Value::Object(d)) = self.merged.get_mut("topic_defaults") {
            d.insert(
                name.to_string(),
                serde_json::Value::String(text.to_string()),
            );
        }
        self.sources
            .insert(format!("topic_defaults.{name}"), source);
        Ok(())
    }

    /// The config these layers make, with `explicit` and `sources` filled in.
    pub fn build(self) -> Result<BrokerConfig, String> {
        let mut config: BrokerConfig =
            serde_json::from_value(serde_json::Value::Object(self.merged))
                .map_err(|e| e.to_string())?;
        config.explicit = self.sources.keys().cloned().collect();
        config.sources = self.sources;
        Ok(config)
    }
}

/// Checks that `key = value` alone is a valid setting, so that an error names
/// the key rather than the whole config.
fn check(key: &str, value: &serde_json::Value) -> Result<(), String> {
    let mut one = serde_json::Map::new();
    one.insert(key.to_string(), value.clone());
    serde_json::from_value::<BrokerConfig>(serde_json::Value::Object(one))
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

/// The shortest `connection_idle_ms_max` accepted: below a second, clients
/// that pause between requests (a consumer's heartbeat gap, a producer's
/// linger) would be cut off.
pub const CONNECTION_IDLE_MS_MIN: u64 = 1_000;
/// The fetch session cache's ceiling: with [`crate::fetch_session::SESSION_PARTITIONS_MAX`]
/// partitions each, the cache's memory stays bounded whatever the config says.
pub const FETCH_SESSION_CACHE_SLOTS_MAX: usize = 100_000;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            listen: HostPort::new("127.0.0.1", 9092),
            advertised_listen: None,
            controller_listen: None,
            controller_voters: None,
            rack: None,
            http_listen: HostPort::new("127.0.0.1", 9644),
            metrics_partition_series_max: 1_000,
            // Kafka's defaults are 9 s and 2 s. The session bounds how long a dead leader's
            // partitions wait for a new one, so Weir keeps it short; heartbeats are small RPCs
            // to the controller that write nothing unless a broker's state changes.
            broker_session_timeout_ms: 3_000,
            broker_heartbeat_interval_ms: 500,
            replica_lag_time_max_ms: 30_000,
            max_incremental_fetch_session_cache_slots: crate::fetch_session::CACHE_SLOTS_DEFAULT,
            auto_leader_rebalance_enable: true,
            // Kafka checks every 300 s; a returning broker here gets its leaderships back
            // within 30 s, so load spreads again soon after a rolling restart.
            leader_imbalance_check_interval_ms: 30_000,
            data_dir: PathBuf::from("weir-data"),
            cluster_id: String::new(),
            auto_create_topics: true,
            default_partitions: 1,
            request_frame_bytes_max: 100 * 1024 * 1024,
            queued_request_bytes_max: 512 * 1024 * 1024,
            connections_max: 10_000,
            connection_idle_ms_max: 600_000,
            in_flight_requests_max: 64,
            open_files_max: 4096,
            retention_check_interval_ms: 300_000,
            log_cleaner_threads: 1,
            log_cleaner_io_max_bytes_per_second: 0,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            log_cleaner_backoff_ms: 15_000,
            topic_defaults: TopicConfig::default(),
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 10_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
            offsets_topic_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            transaction_state_segment_bytes: 100 * 1024 * 1024,
            offsets_retention_minutes: 7 * 24 * 60,
            producer_id_expiration_ms: 86_400_000,
            transactions_enabled: true,
            transaction_max_timeout_ms: 900_000,
            transaction_state_partitions: 50,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_bytes_max: 4096,
            group_consumer_min_heartbeat_interval_ms: 5_000,
            group_consumer_max_heartbeat_interval_ms: 15_000,
            group_consumer_min_session_timeout_ms: 45_000,
            group_consumer_max_session_timeout_ms: 60_000,
            explicit: BTreeSet::new(),
            sources: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Whether `key` (a field name, or `topic_defaults.<kafka name>`) was set
    /// explicitly rather than left at its built-in default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Where the value of `key` (a field name, or `topic_defaults.<kafka name>`) came from.
    pub fn source_of(&self, key: &str) -> ConfigSource {
        self.sources
            .get(key)
            .copied()
            .unwrap_or(ConfigSource::Default)
    }

    /// Every setting that takes one value (all fields but `topic_defaults`, a
    /// table of Kafka topic configs): the keys of the TOML file, and of the
    /// `WEIR_<KEY>` variables and `--<key>` flags with `_` as `-`.
    /// What the setting `key` means, as one line: its field's doc comment.
    /// None for a name that is not a field.
    pub fn key_help(key: &str) -> Option<String> {
        let docs = <BrokerConfig as DocumentedFields>::get_field_docs(key).ok()?;
        Some(docs.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    pub fn scalar_keys() -> Vec<String> {
        match serde_json::to_value(BrokerConfig::default()) {
            Ok(serde_json::Value::Object(map)) => map
                .keys()
                .filter(|k| *k != "topic_defaults")
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The address clients are told to connect to.
    pub fn advertised(&self) -> HostPort {
        if let Some(addr) = &self.advertised_listen {
            return addr.clone();
        }
        let mut addr = self.listen.clone();
        if addr.is_wildcard() {
            addr.host = "127.0.0.1".into();
        }
        addr
    }

    /// The quorum's voters: the configured list, or this node alone.
    pub fn voters(&self) -> Voters {
        match &self.controller_voters {
            Some(voters) => voters.clone(),
            None => {
                let own = self
                    .controller_listen
                    .clone()
                    .unwrap_or_else(|| HostPort::new("127.0.0.1", 0));
                Voters([(self.node_id, own)].into_iter().collect())
            }
        }
    }

    /// Whether this node votes in the metadata quorum (else it is a learner).
    pub fn is_voter(&self) -> bool {
        self.voters().0.contains_key(&self.node_id)
    }

    /// Where this node's Raft listener binds: `controller_listen`, else its
    /// own voter entry. `None` for a quorum of one, which needs no listener.
    pub fn controller_bind(&self) -> Option<HostPort> {
        if let Some(addr) = &self.controller_listen {
            return Some(addr.clone());
        }
        let voters = self.controller_voters.as_ref()?;
        voters.0.get(&self.node_id).cloned()
    }

    /// Rejects settings that can't work, with a message that says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id < 0 {
            return Err(format!("node_id must be >= 0, got {}", self.node_id));
        }
        if let Some(voters) = &self.controller_voters {
            let own = voters.0.get(&self.node_id);
            if own.is_none() && self.controller_listen.is_none() {
                return Err(format!(
                    "node {} is not among the controller voters ({voters}), so it joins as a \
                     learner and needs --controller-listen HOST:PORT for the quorum to reach it",
                    self.node_id
                ));
            }
            if let (Some(own), Some(bind)) = (own, &self.controller_listen)
                && own.port != bind.port
            {
                return Err(format!(
                    "--controller-listen {bind} and this node's voter entry {}@{own} name \
                     different ports; the other voters dial {own}",
                    self.node_id
                ));
            }
        }
        if self.http_listen.port != 0 && self.http_listen == self.listen {
            return Err(format!(
                "http_listen and listen are both {}; the HTTP (metrics) listener needs a port \
                 of its own",
                self.listen
            ));
        }
        if self.max_incremental_fetch_session_cache_slots > FETCH_SESSION_CACHE_SLOTS_MAX {
            return Err(format!(
                "max_incremental_fetch_session_cache_slots must be at most \
                 {FETCH_SESSION_CACHE_SLOTS_MAX} (each slot may cache {} partitions), got {}",
                crate::fetch_session::SESSION_PARTITIONS_MAX,
                self.max_incremental_fetch_session_cache_slots
            ));
        }
        if self
            .rack
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.len() > 255)
        {
            return Err("rack must be 1 to 255 characters".into());
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return Err(format!(
                "broker_heartbeat_interval_ms ({}) must be > 0 and below broker_session_timeout_ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        if self.default_partitions < 1 {
            return Err(format!(
                "default_partitions must be >= 1, got {}",
                self.default_partitions
            ));
        }
        if self.producer_id_expiration_ms < 1
            || self.producer_id_expiration_ms > i64::from(i32::MAX)
        {
            return Err(format!(
                "producer_id_expiration_ms must be in [1, {}] (Kafka's int), got {}",
                i32::MAX,
                self.producer_id_expiration_ms
            ));
        }
        if self.request_frame_bytes_max < 1024 {
            return Err("request_frame_bytes_max must be at least 1024".into());
        }
        if self.request_frame_bytes_max > i32::MAX as usize {
            return Err(format!(
                "request_frame_bytes_max must be at most {} (Kafka frame sizes are 31-bit), got {}",
                i32::MAX,
                self.request_frame_bytes_max
            ));
        }
        if self.queued_request_bytes_max < self.request_frame_bytes_max {
            return Err(format!(
                "queued_request_bytes_max ({}) must be at least request_frame_bytes_max ({}): \
                 a request of the largest allowed size must fit",
                self.queued_request_bytes_max, self.request_frame_bytes_max
            ));
        }
        if self.connection_idle_ms_max < CONNECTION_IDLE_MS_MIN {
            return Err(format!(
                "connection_idle_ms_max must be at least {CONNECTION_IDLE_MS_MIN} ms, got {}: \
                 shorter closes connections of clients that merely pause between requests \
                 (Kafka's default connections.max.idle.ms is 600000)",
                self.connection_idle_ms_max
            ));
        }
        if self.log_cleaner_threads > 64 {
            return Err("log_cleaner_threads must be <= 64".into());
        }
        if self.log_cleaner_dedupe_buffer_size / self.log_cleaner_threads.max(1) < 1024 * 1024 {
            return Err(
                "log_cleaner_dedupe_buffer_size must give each cleaner thread >= 1 MiB".into(),
            );
        }
        if self.retention_check_interval_ms == 0 {
            return Err("retention_check_interval_ms must be >= 1".into());
        }
        if self.connections_max == 0 || self.in_flight_requests_max == 0 {
            return Err("connections_max and in_flight_requests_max must be >= 1".into());
        }
        if self.open_files_max < 16 {
            return Err("open_files_max must be at least 16".into());
        }
        if !(1..=crate::topics::PARTITIONS_PER_TOPIC_MAX).contains(&self.offsets_topic_partitions) {
            return Err(format!(
                "offsets_topic_partitions must be between 1 and {}, got {}",
                crate::topics::PARTITIONS_PER_TOPIC_MAX,
                self.offsets_topic_partitions
            ));
        }
        if self.group_min_session_timeout_ms <= 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(
                "group_min_session_timeout_ms must be > 0 and <= group_max_session_timeout_ms"
                    .into(),
            );
        }
        if self.group_consumer_heartbeat_interval_ms <= 0
            || self.group_consumer_session_timeout_ms <= self.group_consumer_heartbeat_interval_ms
        {
            return Err("group_consumer_heartbeat_interval_ms must be > 0 and below group_consumer_session_timeout_ms".into());
        }
        if self.group_consumer_min_heartbeat_interval_ms <= 0
            || self.group_consumer_min_heartbeat_interval_ms
                > self.group_consumer_max_heartbeat_interval_ms
            || self.group_consumer_min_session_timeout_ms <= 0
            || self.group_consumer_min_session_timeout_ms
                > self.group_consumer_max_session_timeout_ms
        {
            return Err(
                "group_consumer_min_*_ms must be > 0 and <= the matching group_consumer_max_*_ms"
                    .into(),
            );
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err(format!(
                "transaction_max_timeout_ms must be >= 1, got {}",
                self.transaction_max_timeout_ms
            ));
        }
        if !(1..=crate::topics::PARTITIONS_PER_TOPIC_MAX)
            .contains(&self.transaction_state_partitions)
        {
            return Err(format!(
                "transaction_state_partitions must be between 1 and {}, got {}",
                crate::topics::PARTITIONS_PER_TOPIC_MAX,
                self.transaction_state_partitions
            ));
        }
        if self.transaction_abort_timed_out_transaction_cleanup_interval_ms == 0 {
            return Err(
                "transaction_abort_timed_out_transaction_cleanup_interval_ms must be >= 1".into(),
            );
        }
        if self.group_max_size == 0 {
            return Err("group_max_size must be >= 1".into());
        }
        self.topic_defaults.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_remember_each_source() {
        let mut layers = ConfigLayers::new();
        layers
            .add_file(
                "node_id = 7\nlisten = \"127.0.0.1:19092\"\nrack = \"r1\"\n[topic_defaults]\n\"retention.ms\" = 60000\n",
            )
            .unwrap();
        layers
            .set_text("listen", "127.0.0.1:29092", ConfigSource::Env)
            .unwrap();
        layers.set_text("rack", "r2", ConfigSource::Env).unwrap();
        layers.set_text("rack", "r3", ConfigSource::Flag).unwrap();
        layers
            .set_text("auto_create_topics", "false", ConfigSource::Env)
            .unwrap();
        layers
            .set_topic_default("segment.bytes", "1048576", ConfigSource::Flag)
            .unwrap();
        let config = layers.build().unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.listen, HostPort::new("127.0.0.1", 29092));
        assert_eq!(config.rack.as_deref(), Some("r3"));
        assert!(!config.auto_create_topics);
        assert_eq!(
            config.topic_defaults.get("retention.ms").as_deref(),
            Some("60000")
        );
        assert_eq!(
            config.topic_defaults.get("segment.bytes").as_deref(),
            Some("1048576")
        );
        assert_eq!(config.source_of("node_id"), ConfigSource::File);
        assert_eq!(config.source_of("listen"), ConfigSource::Env);
        assert_eq!(config.source_of("rack"), ConfigSource::Flag);
        assert_eq!(config.source_of("auto_create_topics"), ConfigSource::Env);
        assert_eq!(
            config.source_of("default_partitions"),
            ConfigSource::Default
        );
        assert_eq!(
            config.source_of("topic_defaults.retention.ms"),
            ConfigSource::File
        );
        assert_eq!(
            config.source_of("topic_defaults.segment.bytes"),
            ConfigSource::Flag
        );
        assert!(config.is_explicit("listen") && !config.is_explicit("default_partitions"));
    }

    #[test]
    fn every_key_is_settable_from_text() {
        let defaults = serde_json::to_value(BrokerConfig::default()).unwrap();
        for key in BrokerConfig::scalar_keys() {
            let text = match &defaults[&key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => match key.as_str() {
                    "controller_voters" => "1@127.0.0.1:9093".into(),
                    "rack" => "r1".into(),
                    _ => "127.0.0.1:9999".into(),
                },
                other => other.to_string(),
            };
            let mut layers = ConfigLayers::new();
            layers
                .set_text(&key, &text, ConfigSource::Env)
                .unwrap_or_else(|e| panic!("{key}={text}: {e}"));
            let config = layers.build().unwrap();
            assert_eq!(config.source_of(&key), ConfigSource::Env, "{key}");
        }
        assert!(BrokerConfig::scalar_keys().len() > 40);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let mut layers = ConfigLayers::new();
        let e = layers
            .set_text("node_id", "seven", ConfigSource::Flag)
            .unwrap_err();
        assert!(e.starts_with("node_id:"), "{e}");
        let e = layers
            .set_text("no_such_key", "1", ConfigSource::Flag)
            .unwrap_err();
        assert!(e.contains("no_such_key"), "{e}");
        let e = layers.add_file("listen = 5\n").unwrap_err();
        assert!(e.starts_with("listen:"), "{e}");
        let e = layers.add_file("nope = 5\n").unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    fn refused(change: impl FnOnce(&mut BrokerConfig)) -> String {
        let mut config = BrokerConfig::default();
        change(&mut config);
        config.validate().expect_err("must be refused")
    }

    #[test]
    fn defaults_are_valid() {
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn a_learner_needs_a_controller_listener_and_a_voter_its_own_port() {
        let message = refused(|c| {
            c.node_id = 4;
            c.controller_voters = Some("1@a:9093,2@b:9093".parse().unwrap());
        });
        assert!(
            message.contains("learner") && message.contains("--controller-listen"),
            "{message}"
        );
        let message = refused(|c| {
            c.node_id = 1;
            c.controller_voters = Some("1@a:9093,2@b:9093".parse().unwrap());
            c.controller_listen = Some("0.0.0.0:9999".parse().unwrap());
        });
        assert!(message.contains("different ports"), "{message}");
        let mut c = BrokerConfig::default();
        c.controller_voters = Some("1@a:9093,2@b:9093".parse().unwrap());
        c.validate().unwrap();
        assert_eq!(c.controller_bind(), Some(HostPort::new("a", 9093)));
        assert!(c.is_voter());
        c.node_id = 3;
        c.controller_listen = Some("c:9093".parse().unwrap());
        c.validate().unwrap();
        assert!(!c.is_voter());
    }

    #[test]
    fn a_single_node_is_its_own_quorum_without_a_listener() {
        let c = BrokerConfig::default();
        assert_eq!(c.voters().0.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(c.is_voter());
        assert_eq!(c.controller_bind(), None);
    }

    #[test]
    fn idle_timeout_too_short_to_survive_a_pause_is_refused() {
        let message = refused(|c| c.connection_idle_ms_max = 0);
        assert!(message.contains("connection_idle_ms_max"), "{message}");
        assert!(message.contains("1000"), "{message}");
        let mut config = BrokerConfig::default();
        config.connection_idle_ms_max = CONNECTION_IDLE_MS_MIN;
        config.validate().unwrap();
    }

    #[test]
    fn request_memory_cap_must_hold_the_largest_request() {
        let message = refused(|c| {
            c.queued_request_bytes_max = c.request_frame_bytes_max - 1;
        });
        assert!(
            message.contains("queued_request_bytes_max")
                && message.contains("request_frame_bytes_max"),
            "{message}"
        );
        let message = refused(|c| {
            c.request_frame_bytes_max = usize::MAX;
            c.queued_request_bytes_max = usize::MAX;
        });
        assert!(message.contains("31-bit"), "{message}");
    }
}
