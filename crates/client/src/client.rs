//! [`Client`]: bootstrap, a metadata cache, routing to partition leaders, and
//! the admin, offset and fetch calls the CLI and replica fetchers need.
//!
//! The client is a plain `&mut self` object: one task owns it and its
//! connections (one per broker address). Partition-scoped calls (ListOffsets,
//! Fetch, Produce, DeleteRecords) go to the partition's leader; cluster-wide
//! admin calls go to any broker, which forwards to the controller as KRaft
//! brokers do.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::{
    alter_configs, create_partitions, create_topics, delete_records, delete_topics,
    describe_cluster, describe_configs, describe_log_dirs, describe_producers, fetch,
    incremental_alter_configs, list_offsets, metadata, weir_compaction,
};
use weir_protocol::record::{self, BatchHeader, RecordError, RecordHeader, TimestampType};

use crate::connection::{Connection, ConnectionOptions, Request};
use crate::error::ClientError;

/// Settings for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "host:port" addresses tried in order until one answers.
    pub bootstrap: Vec<String>,
    pub connection: ConnectionOptions,
    /// Cap on one batch's decompressed size in fetch responses (zip-bomb guard).
    pub fetch_decompressed_bytes_max: usize,
    /// Timeout the broker is asked to honour for admin operations.
    pub admin_timeout_ms: i32,
}

impl ClientConfig {
    /// `bootstrap` is a comma-separated list of "host:port".
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            connection: ConnectionOptions::default(),
            fetch_decompressed_bytes_max: 64 * 1024 * 1024,
            admin_timeout_ms: 30_000,
        }
    }
}

/// A broker as listed in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// "host:port", with IPv6 hosts in brackets.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error: Option<ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: [u8; 16],
    pub is_internal: bool,
    pub error: Option<ErrorCode>,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

/// What DescribeCluster reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    /// The brokers clients may use (unfenced).
    pub brokers: Vec<BrokerInfo>,
    /// Registered but fenced brokers (DescribeCluster v2+, KIP-1073); empty
    /// from older brokers, which do not say.
    pub fenced_brokers: Vec<BrokerInfo>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1 asks for the broker default.
    pub num_partitions: i32,
    /// -1 asks for the broker default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, num_partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }
}

/// Kafka's config resource types (the subset Weir uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic,
    Broker,
}

impl ResourceType {
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Broker => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigResource {
    pub resource_type: ResourceType,
    pub name: String,
}

impl ConfigResource {
    pub fn topic(name: impl Into<String>) -> ConfigResource {
        ConfigResource {
            resource_type: ResourceType::Topic,
            name: name.into(),
        }
    }
    pub fn broker(node_id: i32) -> ConfigResource {
        ConfigResource {
            resource_type: ResourceType::Broker,
            name: node_id.to_string(),
        }
    }
}

/// Where a config value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSource(pub i8);

impl ConfigSource {
    pub const DEFAULT: ConfigSource = ConfigSource(5);
    pub const TOPIC: ConfigSource = ConfigSource(1);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "topic",
            2 => "dynamic-broker",
            3 => "dynamic-default-broker",
            4 => "static-broker",
            5 => "default",
            6 => "dynamic-broker-logger",
            7 => "client-metrics",
            8 => "group",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    pub is_sensitive: bool,
    pub source: ConfigSource,
    /// True when the value is the default (source DEFAULT, or v0's flag).
    pub is_default: bool,
}

/// IncrementalAlterConfigs operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOpType {
    Set,
    Delete,
    Append,
    Subtract,
}

impl ConfigOpType {
    pub fn code(self) -> i8 {
        match self {
            ConfigOpType::Set => 0,
            ConfigOpType::Delete => 1,
            ConfigOpType::Append => 2,
            ConfigOpType::Subtract => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigOp {
    pub name: String,
    pub op: ConfigOpType,
    pub value: Option<String>,
}

impl AlterConfigOp {
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp {
            name: name.into(),
            op: ConfigOpType::Set,
            value: Some(value.into()),
        }
    }
    pub fn delete(name: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp {
            name: name.into(),
            op: ConfigOpType::Delete,
            value: None,
        }
    }
}

/// Which offset ListOffsets should look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the next offset to be written).
    Latest,
    /// The first offset whose timestamp is >= this (Latest if none).
    Timestamp(i64),
}

impl OffsetSpec {
    /// The `timestamp` field value Kafka uses for this spec.
    pub fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// -1 when a timestamp lookup found no record at or after the timestamp.
    pub offset: i64,
    pub timestamp_ms: i64,
    pub leader_epoch: i32,
}

/// Where to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One record as read by [`Client::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<FetchedRecord>,
    /// Where the next fetch should start: one past the last batch returned
    /// (control batches included), or the requested offset if none was.
    pub next_offset: i64,
}

/// One log directory of one broker (DescribeLogDirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    pub broker_id: i32,
    pub path: String,
    pub error: Option<ErrorCode>,
    /// -1 when the broker does not say.
    pub total_bytes: i64,
    pub usable_bytes: i64,
    pub partitions: Vec<LogDirPartition>,
}

/// A partition's replica in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: i64,
    pub offset_lag: i64,
}

/// A Kafka client: metadata cache plus one connection per broker.
pub struct Client {
    config: ClientConfig,
    /// Keyed by "host:port".
    connections: HashMap<String, Connection>,
    /// The bootstrap address that answered; admin requests go here.
    bootstrap_addr: String,
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: HashMap<String, TopicInfo>,
    cluster_id: Option<String>,
    controller_id: i32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap_addr", &self.bootstrap_addr)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl Client {
    /// Connects to the first bootstrap address that answers and loads the
    /// broker list.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        for addr in &config.bootstrap {
            check_address(addr)?;
        }
        let mut last_error = ClientError::NoBootstrap;
        for addr in &config.bootstrap {
            match Connection::connect(addr, config.connection.clone()).await {
                Ok(conn) => {
                    let mut client = Client {
                        bootstrap_addr: addr.clone(),
                        connections: HashMap::from([(addr.clone(), conn)]),
                        config,
                        brokers: BTreeMap::new(),
                        topics: HashMap::new(),
                        cluster_id: None,
                        controller_id: -1,
                    };
                    client.metadata(Some(&[]), false).await?;
                    return Ok(client);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Brokers from the last metadata response.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }

    /// A topic from the metadata cache, without asking the broker.
    pub fn cached_topic(&self, topic: &str) -> Option<&TopicInfo> {
        self.topics.get(topic)
    }

    /// Forgets cached topic metadata, so the next lookup asks the broker.
    pub fn invalidate_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    // ---- connections and routing -------------------------------------------

    async fn connection(&mut self, addr: &str) -> Result<&mut Connection, ClientError> {
        // Every call through the client reads its own response, so a request
        // still in flight here belongs to a future that was dropped (e.g. a
        // fetch cancelled by Ctrl-C): its answer would arrive in place of
        // ours, so the connection is replaced.
        if self
            .connections
            .get(addr)
            .is_some_and(|c| c.is_broken() || c.in_flight() > 0)
        {
            self.connections.remove(addr);
        }
        if !self.connections.contains_key(addr) {
            let conn = Connection::connect(addr, self.config.connection.clone()).await?;
            self.connections.insert(addr.to_owned(), conn);
        }
        self.connections
            .get_mut(addr)
            .ok_or(ClientError::NoBootstrap)
    }

    /// Picks the connection for a node: its advertised address, or, for a
    /// single-broker cluster whose advertised address is not reachable from
    /// here (e.g. it advertises a container hostname), the bootstrap address
    /// that did answer.
    async fn node_connection(&mut self, node_id: i32) -> Result<&mut Connection, ClientError> {
        let addr = match self.brokers.get(&node_id) {
            Some(b) => b.addr(),
            None => {
                return Err(ClientError::Protocol {
                    addr: self.bootstrap_addr.clone(),
                    detail: format!("unknown broker id {node_id}"),
                });
            }
        };
        let fallback = (self.brokers.len() == 1 && addr != self.bootstrap_addr)
            .then(|| self.bootstrap_addr.clone());
        match (self.connection(&addr).await.err(), fallback) {
            (None, _) => self.connection(&addr).await,
            (Some(ClientError::Connect { .. } | ClientError::Timeout { .. }), Some(fallback)) => {
                tracing::debug!(advertised = %addr, %fallback, "advertised address unreachable; using bootstrap address");
                self.connection(&fallback).await
            }
            (Some(e), _) => Err(e),
        }
    }

    /// The bootstrap address this client was given.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap_addr
    }

    /// Sends a request to any broker (the bootstrap one, reconnecting once).
    pub async fn send_any<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        let addr = self.bootstrap_addr.clone();
        match self.connection(&addr).await?.send(request).await {
            Err(ClientError::Io { .. }) => self.connection(&addr).await?.send(request).await,
            other => other,
        }
    }

    /// Sends a request to one broker by node id.
    pub async fn send_to_node<R: Request>(
        &mut self,
        node_id: i32,
        request: &R,
        extra_wait_ms: u64,
    ) -> Result<R::Response, ClientError> {
        self.node_connection(node_id)
            .await?
            .send_with_extra_wait(request, extra_wait_ms)
            .await
    }

    /// Writes a request to a node and does not wait for a response (acks=0 produce).
    pub async fn send_to_node_without_response<R: Request>(
        &mut self,
        node_id: i32,
        request: &R,
    ) -> Result<(), ClientError> {
        self.node_connection(node_id)
            .await?
            .send_without_response(request)
            .await
    }

    /// The version a request would be sent at to the bootstrap broker.
    pub async fn version_for<R: Request>(&mut self) -> Result<i16, ClientError> {
        let addr = self.bootstrap_addr.clone();
        self.connection(&addr).await?.version_for::<R>()
    }

    // ---- metadata ------------------------------------------------------------

    /// Asks for metadata. `None` means every topic; `Some(&[])` means brokers
    /// only. Updates the cache.
    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
        allow_auto_topic_creation: bool,
    ) -> Result<ClusterMetadata, ClientError> {
        let request = metadata::MetadataRequest {
            topics: topics.map(|names| {
                names
                    .iter()
                    .map(|n| metadata::MetadataRequestTopic {
                        name: Some((*n).to_owned()),
                        ..Default::default()
                    })
                    .collect()
            }),
            allow_auto_topic_creation,
            ..Default::default()
        };
        let response = self.send_any(&request).await?;
        ClientError::check(response.error_code, None, || "Metadata".to_owned())?;
        let result = metadata_from_response(response);
        self.brokers = result
            .brokers
            .iter()
            .map(|b| (b.node_id, b.clone()))
            .collect();
        self.cluster_id.clone_from(&result.cluster_id);
        self.controller_id = result.controller_id;
        if topics.is_none() {
            self.topics.clear();
        }
        for topic in &result.topics {
            if topic.error.is_none() {
                self.topics.insert(topic.name.clone(), topic.clone());
            } else {
                self.topics.remove(&topic.name);
            }
        }
        Ok(result)
    }

    /// One topic's metadata, from the cache or the broker.
    pub async fn topic(
        &mut self,
        topic: &str,
        allow_auto_topic_creation: bool,
    ) -> Result<TopicInfo, ClientError> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.clone());
        }
        let result = self
            .metadata(Some(&[topic]), allow_auto_topic_creation)
            .await?;
        let Some(info) = result.topics.into_iter().find(|t| t.name == topic) else {
            return Err(ClientError::UnknownTopic(topic.to_owned()));
        };
        match info.error {
            None => Ok(info),
            Some(ErrorCode::UnknownTopicOrPartition) => {
                Err(ClientError::UnknownTopic(topic.to_owned()))
            }
            Some(code) => Err(ClientError::Kafka {
                code,
                message: None,
                context: format!("metadata for topic '{topic}'"),
            }),
        }
    }

    /// The leader's node id for a partition.
    pub async fn leader_for(
        &mut self,
        topic: &str,
        partition: i32,
        allow_auto_topic_creation: bool,
    ) -> Result<i32, ClientError> {
        let info = self.topic(topic, allow_auto_topic_creation).await?;
        let Some(p) = info.partitions.iter().find(|p| p.partition == partition) else {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partition_count: info.partitions.len(),
            });
        };
        if p.leader_id < 0 || !self.brokers.contains_key(&p.leader_id) {
            self.topics.remove(topic);
            return Err(ClientError::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(p.leader_id)
    }

    // ---- admin ---------------------------------------------------------------

    /// Creates topics; one result per topic, in request order.
    pub async fn create_topics(
        &mut self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
        let request = create_topics::CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|t| create_topics::CreatableTopic {
                    name: t.name.clone(),
                    num_partitions: t.num_partitions,
                    replication_factor: t.replication_factor,
                    assignments: Vec::new(),
                    configs: t
                        .configs
                        .iter()
                        .map(|(k, v)| create_topics::CreatableTopicConfig {
                            name: k.clone(),
                            value: Some(v.clone()),
                        })
                        .collect(),
                })
                .collect(),
            timeout_ms: self.config.admin_timeout_ms,
            validate_only,
        };
        let response = self.send_any(&request).await?;
        Ok(response
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name;
                let result = ClientError::check(t.error_code, t.error_message.as_deref(), || {
                    format!("create topic '{name}'")
                });
                (name, result)
            })
            .collect())
    }

    /// Creates one topic; an error if the broker refused it.
    pub async fn create_topic(&mut self, topic: &NewTopic) -> Result<(), ClientError> {
        let results = self
            .create_topics(std::slice::from_ref(topic), false)
            .await?;
        self.topics.remove(&topic.name);
        single_result(results, &topic.name)
    }

    /// Deletes topics by name; one result per topic.
    pub async fn delete_topics(
        &mut self,
        names: &[&str],
    ) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
        let request = delete_topics::DeleteTopicsRequest {
            // Both fields are filled; the encoder writes the one the version has.
            topic_names: names.iter().map(|n| (*n).to_owned()).collect(),
            topics: names
                .iter()
                .map(|n| delete_topics::DeleteTopicState {
                    name: Some((*n).to_owned()),
                    ..Default::default()
                })
                .collect(),
            timeout_ms: self.config.admin_timeout_ms,
        };
        let response = self.send_any(&request).await?;
        for n in names {
            self.topics.remove(*n);
        }
        Ok(response
            .responses
            .into_iter()
            .map(|r| {
                let name = r.name.unwrap_or_default();
                let result = ClientError::check(r.error_code, r.error_message.as_deref(), || {
                    format!("delete topic '{name}'")
                });
                (name, result)
            })
            .collect())
    }

    pub async fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let results = self.delete_topics(&[name]).await?;
        single_result(results, name)
    }

    /// Grows a topic to `total_count` partitions.
    pub async fn create_partitions(
        &mut self,
        topic: &str,
        total_count: i32,
    ) -> Result<(), ClientError> {
        let request = create_partitions::CreatePartitionsRequest {
            topics: vec![create_partitions::CreatePartitionsTopic {
                name: topic.to_owned(),
                count: total_count,
                assignments: None,
            }],
            timeout_ms: self.config.admin_timeout_ms,
            validate_only: false,
        };
        let response = self.send_any(&request).await?;
        self.topics.remove(topic);
        let results = response
            .results
            .into_iter()
            .map(|r| {
                let name = r.name;
                let result = ClientError::check(r.error_code, r.error_message.as_deref(), || {
                    format!("grow topic '{name}' to {total_count} partitions")
                });
                (name, result)
            })
            .collect();
        single_result(results, topic)
    }

    /// Describes one resource's configs (`keys` = None for all).
    pub async fn describe_configs(
        &mut self,
        resource: &ConfigResource,
        keys: Option<&[&str]>,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let request = describe_configs::DescribeConfigsRequest {
            resources: vec![describe_configs::DescribeConfigsResource {
                resource_type: resource.resource_type.code(),
                resource_name: resource.name.clone(),
                configuration_keys: keys.map(|k| k.iter().map(|s| (*s).to_owned()).collect()),
            }],
            include_synonyms: false,
            include_documentation: false,
        };
        let version = self
            .version_for::<describe_configs::DescribeConfigsRequest>()
            .await?;
        let response = self.send_any(&request).await?;
        let Some(result) = response
            .results
            .into_iter()
            .find(|r| r.resource_name == resource.name)
        else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap_addr.clone(),
                detail: format!(
                    "DescribeConfigs response lacks resource '{}'",
                    resource.name
                ),
            });
        };
        ClientError::check(result.error_code, result.error_message.as_deref(), || {
            format!("describe configs of '{}'", resource.name)
        })?;
        Ok(result
            .configs
            .into_iter()
            .map(|c| {
                let source = ConfigSource(c.config_source);
                let is_default = if version == 0 {
                    c.is_default
                } else {
                    source == ConfigSource::DEFAULT
                };
                ConfigEntry {
                    name: c.name,
                    value: c.value,
                    read_only: c.read_only,
                    is_sensitive: c.is_sensitive,
                    source,
                    is_default,
                }
            })
            .collect())
    }

    /// Replaces a resource's whole set of dynamic configs (legacy AlterConfigs).
    pub async fn alter_configs(
        &mut self,
        resource: &ConfigResource,
        entries: &[(String, String)],
    ) -> Result<(), ClientError> {
        let request = alter_configs::AlterConfigsRequest {
            resources: vec![alter_configs::AlterConfigsResource {
                resource_type: resource.resource_type.code(),
                resource_name: resource.name.clone(),
                configs: entries
                    .iter()
                    .map(|(k, v)| alter_configs::AlterableConfig {
                        name: k.clone(),
                        value: Some(v.clone()),
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        let response = self.send_any(&request).await?;
        for r in response.responses {
            ClientError::check(r.error_code, r.error_message.as_deref(), || {
                format!("alter configs of '{}'", r.resource_name)
            })?;
        }
        Ok(())
    }

    /// Sets, deletes, appends to or subtracts from individual configs.
    pub async fn incremental_alter_configs(
        &mut self,
        resource: &ConfigResource,
        ops: &[AlterConfigOp],
    ) -> Result<(), ClientError> {
        let request = incremental_alter_configs::IncrementalAlterConfigsRequest {
            resources: vec![incremental_alter_configs::AlterConfigsResource {
                resource_type: resource.resource_type.code(),
                resource_name: resource.name.clone(),
                configs: ops
                    .iter()
                    .map(|op| incremental_alter_configs::AlterableConfig {
                        name: op.name.clone(),
                        config_operation: op.op.code(),
                        value: op.value.clone(),
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        // A broker's own configs are changed on that broker (Kafka's admin
        // client routes them so too); the rest goes to any broker.
        let node = match resource.resource_type {
            ResourceType::Broker => resource.name.parse::<i32>().ok(),
            _ => None,
        };
        let response = match node {
            Some(id) if self.brokers().any(|b| b.node_id == id) => {
                self.send_to_node(id, &request, 0).await?
            }
            _ => self.send_any(&request).await?,
        };
        for r in response.responses {
            ClientError::check(r.error_code, r.error_message.as_deref(), || {
                format!("alter configs of '{}'", r.resource_name)
            })?;
        }
        Ok(())
    }

    /// Cluster id, controller and brokers. Falls back to Metadata when the
    /// broker does not serve DescribeCluster.
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription, ClientError> {
        match self
            .version_for::<describe_cluster::DescribeClusterRequest>()
            .await
        {
            Ok(_) => {}
            Err(ClientError::UnsupportedApi { .. }) => {
                let m = self.metadata(Some(&[]), false).await?;
                return Ok(ClusterDescription {
                    cluster_id: m.cluster_id.unwrap_or_default(),
                    controller_id: m.controller_id,
                    brokers: m.brokers,
                    fenced_brokers: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        }
        // Ignored below v2, where only unfenced brokers are listed.
        let request = describe_cluster::DescribeClusterRequest {
            include_fenced_brokers: true,
            ..Default::default()
        };
        let response = self.send_any(&request).await?;
        ClientError::check(
            response.error_code,
            response.error_message.as_deref(),
            || "describe cluster".to_owned(),
        )?;
        let (fenced, live): (Vec<_>, Vec<_>) =
            response.brokers.into_iter().partition(|b| b.is_fenced);
        let info = |b: describe_cluster::DescribeClusterBroker| BrokerInfo {
            node_id: b.broker_id,
            host: b.host,
            port: b.port,
            rack: b.rack,
        };
        Ok(ClusterDescription {
            cluster_id: response.cluster_id,
            controller_id: response.controller_id,
            brokers: live.into_iter().map(info).collect(),
            fenced_brokers: fenced.into_iter().map(info).collect(),
        })
    }

    // ---- partition-scoped calls ---------------------------------------------------

    /// Looks up an offset of one partition at its leader.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        self.list_offsets_isolated(topic, partition, spec, false)
            .await
    }

    /// [`Client::list_offsets`] with a choice of isolation: with
    /// `read_committed`, `Latest` answers the last stable offset (the end a
    /// read_committed consumer sees) instead of the high watermark.
    pub async fn list_offsets_isolated(
        &mut self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<ListedOffset, ClientError> {
        let leader = self.leader_for(topic, partition, false).await?;
        let request = list_offsets::ListOffsetsRequest {
            replica_id: -1,
            isolation_level: i8::from(read_committed),
            topics: vec![list_offsets::ListOffsetsTopic {
                name: topic.to_owned(),
                partitions: vec![list_offsets::ListOffsetsPartition {
                    partition_index: partition,
                    current_leader_epoch: -1,
                    timestamp: spec.wire_timestamp(),
                    max_num_offsets: 1,
                }],
            }],
            timeout_ms: self.config.admin_timeout_ms,
        };
        let response = self.send_to_node(leader, &request, 0).await?;
        let found = response
            .topics
            .into_iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition);
        let Some(p) = found else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap_addr.clone(),
                detail: format!("ListOffsets response lacks {topic}-{partition}"),
            });
        };
        if let Err(e) = ClientError::check(p.error_code, None, || {
            format!("list offsets of {topic}-{partition}")
        }) {
            if e.is_retriable() {
                self.topics.remove(topic);
            }
            return Err(e);
        }
        // v0 answers with a list of offsets instead of one offset.
        let offset = if p.old_style_offsets.is_empty() {
            p.offset
        } else {
            p.old_style_offsets.first().copied().unwrap_or(-1)
        };
        Ok(ListedOffset {
            offset,
            timestamp_ms: p.timestamp,
            leader_epoch: p.leader_epoch,
        })
    }

    /// Fetches records of one partition from `offset`, waiting up to
    /// `max_wait_ms` for at least one byte.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<FetchedPartition, ClientError> {
        let position = FetchPosition {
            topic: topic.to_owned(),
            partition,
            offset,
        };
        let mut results = self
            .fetch_many(std::slice::from_ref(&position), max_bytes, max_wait_ms)
            .await?;
        results.pop().unwrap_or_else(|| {
            Err(ClientError::NoLeader {
                topic: topic.to_owned(),
                partition,
            })
        })
    }

    /// Fetches several partitions, one request per leader. Results are in the
    /// order of `positions`; a partition-level error does not fail the others.
    /// `max_bytes` caps each partition and each response.
    pub async fn fetch_many(
        &mut self,
        positions: &[FetchPosition],
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<Vec<Result<FetchedPartition, ClientError>>, ClientError> {
        let mut results: Vec<Option<Result<FetchedPartition, ClientError>>> =
            vec![None; positions.len()];
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, pos) in positions.iter().enumerate() {
            match self.leader_for(&pos.topic, pos.partition, false).await {
                Ok(leader) => by_leader.entry(leader).or_default().push(i),
                Err(e) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(Err(e));
                    }
                }
            }
        }
        let decompressed_bytes_max = self.config.fetch_decompressed_bytes_max;
        let wait_ms = u64::try_from(max_wait_ms).unwrap_or(0);
        for (leader, indexes) in by_leader {
            let request = build_fetch_request(positions, &indexes, max_bytes, max_wait_ms);
            let response = match self.send_to_node(leader, &request, wait_ms).await {
                Ok(r) => r,
                Err(e) => {
                    for &i in &indexes {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(Err(e.clone()));
                        }
                    }
                    continue;
                }
            };
            ClientError::check(response.error_code, None, || "Fetch".to_owned())?;
            for topic in response.responses {
                for part in topic.partitions {
                    let Some(&i) = indexes.iter().find(|&&i| {
                        positions.get(i).is_some_and(|p| {
                            p.topic == topic.topic && p.partition == part.partition_index
                        })
                    }) else {
                        continue;
                    };
                    let Some(pos) = positions.get(i) else {
                        continue;
                    };
                    let result = partition_from_fetch(pos, part, decompressed_bytes_max);
                    if let Err(e) = &result
                        && e.is_retriable()
                    {
                        self.topics.remove(&pos.topic);
                    }
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(result);
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .zip(positions)
            .map(|(r, pos)| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Protocol {
                        addr: String::new(),
                        detail: format!("Fetch response lacks {}-{}", pos.topic, pos.partition),
                    })
                })
            })
            .collect())
    }

    /// Deletes records before `offset`; returns the new low watermark.
    pub async fn delete_records(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, ClientError> {
        let leader = self.leader_for(topic, partition, false).await?;
        let request = delete_records::DeleteRecordsRequest {
            topics: vec![delete_records::DeleteRecordsTopic {
                name: topic.to_owned(),
                partitions: vec![delete_records::DeleteRecordsPartition {
                    partition_index: partition,
                    offset,
                }],
            }],
            timeout_ms: self.config.admin_timeout_ms,
        };
        let response = self.send_to_node(leader, &request, 0).await?;
        let found = response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition);
        let Some(p) = found else {
            return Err(ClientError::Protocol {
                addr: String::new(),
                detail: format!("DeleteRecords response lacks {topic}-{partition}"),
            });
        };
        ClientError::check(p.error_code, None, || {
            format!("delete records of {topic}-{partition} before {offset}")
        })?;
        Ok(p.low_watermark)
    }

    /// The log directories of every broker and the size of each partition in
    /// them (DescribeLogDirs). `topics: None` asks for every partition.
    pub async fn describe_log_dirs(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<Vec<LogDirDescription>, ClientError> {
        let request = describe_log_dirs::DescribeLogDirsRequest {
            topics: topics.map(|names| {
                names
                    .iter()
                    .filter_map(|name| {
                        let info = self.topics.get(name)?;
                        Some(describe_log_dirs::DescribableLogDirTopic {
                            topic: name.clone(),
                            partitions: info.partitions.iter().map(|p| p.partition).collect(),
                        })
                    })
                    .collect()
            }),
        };
        let node_ids: Vec<i32> = self.brokers.keys().copied().collect();
        let mut dirs = Vec::new();
        for node_id in node_ids {
            let response = self.send_to_node(node_id, &request, 0).await?;
            ClientError::check(response.error_code, None, || {
                format!("describe log dirs of broker {node_id}")
            })?;
            for result in response.results {
                dirs.push(LogDirDescription {
                    broker_id: node_id,
                    path: result.log_dir,
                    error: error_of(result.error_code),
                    total_bytes: result.total_bytes,
                    usable_bytes: result.usable_bytes,
                    partitions: result
                        .topics
                        .into_iter()
                        .flat_map(|t| {
                            let name = t.name;
                            t.partitions.into_iter().map(move |p| LogDirPartition {
                                topic: name.clone(),
                                partition: p.partition_index,
                                size_bytes: p.partition_size,
                                offset_lag: p.offset_lag,
                            })
                        })
                        .collect(),
                });
            }
        }
        Ok(dirs)
    }

    /// WeirCompaction (Weir's own API) asked of one broker: the cleaner checkpoint and dirty
    /// ratio of the partitions of `topic` it hosts, after a compaction pass if `compact_now`.
    /// Partitions it does not host come back with UNKNOWN_TOPIC_OR_PARTITION.
    pub async fn weir_compaction(
        &mut self,
        node_id: i32,
        topic: &str,
        partitions: Vec<i32>,
        compact_now: bool,
    ) -> Result<Vec<weir_compaction::PartitionCompaction>, ClientError> {
        let request = weir_compaction::WeirCompactionRequest {
            topic: topic.to_owned(),
            partition_indexes: partitions,
            compact_now,
        };
        // A pass may take a while on a large log.
        let response = self.send_to_node(node_id, &request, 600_000).await?;
        ClientError::check(response.error_code, None, || {
            format!("compaction state of {topic} on node {node_id}")
        })?;
        Ok(response.partitions)
    }

    /// DescribeProducers for one partition, asked of its leader: the producers its log knows
    /// (epoch, last sequence and timestamp, coordinator epoch, open transaction's start).
    pub async fn describe_producers(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<describe_producers::ProducerState>, ClientError> {
        let leader = self.leader_for(topic, partition, false).await?;
        let request = describe_producers::DescribeProducersRequest {
            topics: vec![describe_producers::TopicRequest {
                name: topic.to_owned(),
                partition_indexes: vec![partition],
            }],
        };
        let response = self.send_to_node(leader, &request, 0).await?;
        let found = response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition);
        let Some(p) = found else {
            return Err(ClientError::Protocol {
                addr: String::new(),
                detail: format!("DescribeProducers response lacks {topic}-{partition}"),
            });
        };
        ClientError::check(p.error_code, p.error_message.as_deref(), || {
            format!("describe producers of {topic}-{partition}")
        })?;
        Ok(p.active_producers)
    }

    /// Sleeps for a retry backoff; a helper so callers need not depend on tokio.
    pub async fn backoff(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Rejects a bootstrap address that cannot be right before trying it, so the
/// error names the mistake ("no port") instead of a resolver failure.
pub fn check_address(addr: &str) -> Result<(), ClientError> {
    let bad = |problem| {
        Err(ClientError::BadAddress {
            addr: addr.to_owned(),
            problem,
        })
    };
    if addr.contains("://") {
        return bad("has a URL scheme");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("has no port");
    };
    // A bare IPv6 address ("::1") splits at its own colons.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("is an IPv6 address without brackets or port");
    }
    if host.is_empty() || host == "[]" {
        return bad("has no host");
    }
    if port.is_empty() {
        return bad("has no port");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => bad("has a port that is not a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

fn single_result(
    results: Vec<(String, Result<(), ClientError>)>,
    name: &str,
) -> Result<(), ClientError> {
    match results.into_iter().find(|(n, _)| n == name) {
        Some((_, result)) => result,
        None => Err(ClientError::Protocol {
            addr: String::new(),
            detail: format!("response lacks topic '{name}'"),
        }),
    }
}

fn metadata_from_response(response: metadata::MetadataResponse) -> ClusterMetadata {
    let brokers = response
        .brokers
        .into_iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id,
            host: b.host,
            port: b.port,
            rack: b.rack,
        })
        .collect();
    let topics = response
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader_id: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes,
                    isr: p.isr_nodes,
                    offline_replicas: p.offline_replicas,
                    error: error_of(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicInfo {
                name: t.name.unwrap_or_default(),
                topic_id: t.topic_id,
                is_internal: t.is_internal,
                error: error_of(t.error_code),
                partitions,
            }
        })
        .collect();
    ClusterMetadata {
        cluster_id: response.cluster_id,
        controller_id: response.controller_id,
        brokers,
        topics,
    }
}

fn error_of(code: i16) -> Option<ErrorCode> {
    (code != 0).then(|| ErrorCode::from_code_or_unknown(code))
}

fn build_fetch_request(
    positions: &[FetchPosition],
    indexes: &[usize],
    max_bytes: i32,
    max_wait_ms: i32,
) -> fetch::FetchRequest {
    let mut topics: Vec<fetch::FetchTopic> = Vec::new();
    for pos in indexes.iter().filter_map(|&i| positions.get(i)) {
        let partition = fetch::FetchPartition {
            partition: pos.partition,
            current_leader_epoch: -1,
            fetch_offset: pos.offset,
            last_fetched_epoch: -1,
            log_start_offset: -1,
            partition_max_bytes: max_bytes,
            ..Default::default()
        };
        match topics.iter_mut().find(|t| t.topic == pos.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(fetch::FetchTopic {
                topic: pos.topic.clone(),
                partitions: vec![partition],
                ..Default::default()
            }),
        }
    }
    fetch::FetchRequest {
        replica_id: -1,
        max_wait_ms,
        min_bytes: 1,
        max_bytes,
        isolation_level: 0,
        // No fetch session: every request is a full fetch.
        session_id: 0,
        session_epoch: -1,
        topics,
        ..Default::default()
    }
}

fn partition_from_fetch(
    pos: &FetchPosition,
    part: fetch::PartitionData,
    decompressed_bytes_max: usize,
) -> Result<FetchedPartition, ClientError> {
    ClientError::check(part.error_code, None, || {
        format!(
            "fetch {}-{} at offset {}",
            pos.topic, pos.partition, pos.offset
        )
    })?;
    let (records, next_offset) = decode_fetched_records(
        &part.records.unwrap_or_default(),
        pos.offset,
        decompressed_bytes_max,
    )?;
    Ok(FetchedPartition {
        topic: pos.topic.clone(),
        partition: pos.partition,
        high_watermark: part.high_watermark,
        log_start_offset: part.log_start_offset,
        last_stable_offset: part.last_stable_offset,
        records,
        next_offset,
    })
}

/// Decodes the record batches of one fetched partition. Records before
/// `fetch_offset` (a compressed batch may start earlier) and control batches
/// are skipped. A partial batch at the end is normal (the broker may cut the
/// response at max_bytes) and is dropped; a partial *first* batch is an error,
/// since the caller would otherwise fetch the same offset forever.
pub fn decode_fetched_records(
    records: &Bytes,
    fetch_offset: i64,
    decompressed_bytes_max: usize,
) -> Result<(Vec<FetchedRecord>, i64), ClientError> {
    let mut out = Vec::new();
    let mut next_offset = fetch_offset;
    for (whole_batches, batch) in record::split_batches(records).enumerate() {
        let batch = match batch {
            Ok(b) => b,
            Err(RecordError::BatchLengthExceedsBuffer { .. } | RecordError::Truncated { .. })
                if whole_batches > 0 =>
            {
                break;
            }
            Err(RecordError::BatchLengthExceedsBuffer {
                batch_bytes,
                available_bytes,
            }) => {
                return Err(ClientError::Record(format!(
                    "the batch at offset {fetch_offset} is {batch_bytes} bytes but only {available_bytes} were returned; raise max_bytes"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let header = BatchHeader::parse(&batch)?;
        if header.last_offset() < fetch_offset {
            continue;
        }
        next_offset = next_offset.max(header.last_offset().saturating_add(1));
        if header.is_control() {
            continue;
        }
        for r in record::decode_records(&batch, decompressed_bytes_max)? {
            let offset = header.base_offset.saturating_add(i64::from(r.offset_delta));
            if offset < fetch_offset {
                continue;
            }
            let timestamp_ms = match header.timestamp_type() {
                TimestampType::LogAppendTime => header.max_timestamp,
                TimestampType::CreateTime => {
                    header.base_timestamp.saturating_add(r.timestamp_delta)
                }
            };
            out.push(FetchedRecord {
                offset,
                timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
    }
    Ok((out, next_offset))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bootstrap_addresses_need_host_and_port() {
        use super::check_address;
        for good in [
            "127.0.0.1:9092",
            "localhost:1",
            "[::1]:9092",
            "kafka.example:65535",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("localhost", "has no port"),
            ("localhost:", "has no port"),
            (":9092", "has no host"),
            ("localhost:http", "not a number"),
            ("localhost:70000", "not a number"),
            ("::1", "IPv6"),
            ("http://localhost:9092", "URL scheme"),
        ] {
            let e = check_address(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    use super::*;
    use weir_protocol::compression::Compression;
    use weir_protocol::record::{Record, RecordBatchBuilder};

    fn batch(base_offset: i64, values: &[&str], compression: Compression) -> Bytes {
        let mut b = RecordBatchBuilder::new(compression)
            .base_offset(base_offset)
            .base_timestamp(1_000);
        for (i, v) in values.iter().enumerate() {
            b.push(Record {
                offset_delta: i as i32,
                timestamp_delta: i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: vec![],
            });
        }
        b.build().unwrap()
    }

    fn concat(parts: &[Bytes]) -> Bytes {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p);
        }
        Bytes::from(v)
    }

    #[test]
    fn fetched_records_before_the_fetch_offset_are_skipped() {
        let data = concat(&[
            batch(10, &["a", "b", "c"], Compression::Zstd),
            batch(13, &["d"], Compression::None),
        ]);
        let (records, next) = decode_fetched_records(&data, 11, 1 << 20).unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![11, 12, 13]);
        assert_eq!(next, 14);
        assert_eq!(records[0].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(records[0].timestamp_ms, 1_001);
    }

    #[test]
    fn partial_trailing_batch_is_dropped() {
        let second = batch(2, &["x"], Compression::None);
        let data = concat(&[
            batch(0, &["a", "b"], Compression::Gzip),
            second.slice(..second.len() - 3),
        ]);
        let (records, next) = decode_fetched_records(&data, 0, 1 << 20).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(next, 2);
    }

    #[test]
    fn partial_first_batch_is_an_error_not_a_silent_stall() {
        let b = batch(0, &["a"], Compression::None);
        let err = decode_fetched_records(&b.slice(..b.len() - 1), 0, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("max_bytes"), "{err}");
    }

    #[test]
    fn decompression_cap_is_enforced() {
        let big = "z".repeat(100_000);
        let data = batch(0, &[&big], Compression::Lz4);
        assert!(decode_fetched_records(&data, 0, 10_000).is_err());
    }

    #[test]
    fn empty_fetch_keeps_the_offset() {
        let (records, next) = decode_fetched_records(&Bytes::new(), 42, 1 << 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 42);
    }

    #[test]
    fn bootstrap_list_is_split_and_trimmed() {
        let c = ClientConfig::new(" a:1, b:2 ,,");
        assert_eq!(c.bootstrap, vec!["a:1".to_owned(), "b:2".to_owned()]);
    }

    #[test]
    fn ipv6_broker_address_is_bracketed() {
        let b = BrokerInfo {
            node_id: 1,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
    }
}
