//! The read-only admin API's answers (`/v1/...` on the HTTP listener): the
//! cluster, topics with their partitions' offsets and replicas, consumer
//! groups with their lag.
//!
//! Owns: the JSON shapes, which `crates/server/src/openapi.json` documents and
//! the tests check against that document. Field names are part of a public
//! API that a web console builds on: add fields, never rename or remove one.
//! It must never write anything: these are views, built from the metadata
//! image, the local logs and the group coordinator when asked, off the Kafka
//! request path.

use std::sync::Arc;

use serde::Serialize;

use crate::Broker;

/// `GET /v1/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub cluster_id: String,
    /// The broker that answered.
    pub node_id: i32,
    /// The metadata quorum's leader (the active controller); null while there is none.
    pub controller_id: Option<i32>,
    /// The last metadata record this broker applied; null before it joined.
    pub metadata_applied_index: Option<u64>,
    pub brokers: Vec<BrokerView>,
}

#[derive(Debug, Serialize)]
pub struct BrokerView {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// `unfenced` (serving) or `fenced` (registered, not serving: starting,
    /// silent past its session timeout, or shutting down).
    pub state: &'static str,
    pub broker_epoch: i64,
}

/// `GET /v1/topics`.
#[derive(Debug, Serialize)]
pub struct TopicsView {
    pub topics: Vec<TopicSummary>,
}

#[derive(Debug, Serialize)]
pub struct TopicSummary {
    pub name: String,
    /// Kafka's text form of the topic id (URL-safe base64, no padding).
    pub topic_id: String,
    pub internal: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Partitions without a leader.
    pub offline_partitions: i32,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: i32,
}

/// `GET /v1/topics/{name}`.
#[derive(Debug, Serialize)]
pub struct TopicView {
    pub name: String,
    pub topic_id: String,
    pub internal: bool,
    /// Topic configs set on this topic (Kafka names); the rest are the broker's defaults.
    pub config_overrides: std::collections::BTreeMap<String, String>,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize)]
pub struct PartitionView {
    pub partition: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The partition's log as this broker holds it; null when it holds no replica.
    pub log: Option<LogView>,
}

#[derive(Debug, Serialize)]
pub struct LogView {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Below the first open transaction (what read_committed consumers may read up to).
    pub last_stable_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// Whether this broker leads the partition (its offsets are then the partition's).
    pub is_leader: bool,
}

/// `GET /v1/groups`.
#[derive(Debug, Serialize)]
pub struct GroupsView {
    pub groups: Vec<GroupSummary>,
}

#[derive(Debug, Serialize)]
pub struct GroupSummary {
    pub group_id: String,
    /// Kafka's state name, e.g. `Stable`, `Empty`, `PreparingRebalance`.
    pub state: &'static str,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    pub members: usize,
}

/// `GET /v1/groups/{id}`.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    /// The assignor (consumer groups) or protocol the members agreed on.
    pub protocol_name: String,
    pub members: Vec<MemberView>,
    pub offsets: Vec<GroupOffsetView>,
    /// Sum of the known lags.
    pub total_lag: i64,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The partitions assigned to the member (empty before it synced, or when
    /// its assignment is not in the consumer protocol's encoding).
    pub assignments: Vec<MemberAssignment>,
}

#[derive(Debug, Serialize)]
pub struct MemberAssignment {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Serialize)]
pub struct GroupOffsetView {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// The partition's high watermark, when this broker holds its log; else null.
    pub high_watermark: Option<i64>,
    /// High watermark minus committed offset (as kafka-consumer-groups shows it); null
    /// when the high watermark is not known here.
    pub lag: Option<i64>,
}

/// `GET /v1/config`: the broker's effective settings.
#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub entries: Vec<ConfigEntry>,
}

#[derive(Debug, Serialize)]
pub struct ConfigEntry {
    /// The key as in the TOML file; default topic configs as
    /// `topic_defaults.<Kafka name>`.
    pub name: String,
    /// The value as the TOML file would give it; null for an unset optional key.
    pub value: serde_json::Value,
    pub source: crate::config::ConfigSource,
}

/// Kafka's text form of a UUID: URL-safe base64 without padding (22 characters).
pub fn uuid_text(id: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

fn log_view(p: &crate::partition::Partition) -> LogView {
    LogView {
        log_start_offset: p.log.log_start_offset(),
        high_watermark: p.log.high_watermark(),
        last_stable_offset: p.log.last_stable_offset(),
        log_end_offset: p.log.log_end_offset(),
        size_bytes: p.log.size_bytes(),
        segments: p.log.segment_count(),
        is_leader: p.is_leader(),
    }
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Broker {
    pub fn cluster_view(&self) -> ClusterView {
        let mut view = ClusterView {
            cluster_id: self.cluster_id(),
            node_id: self.config.node_id,
            controller_id: None,
            metadata_applied_index: None,
            brokers: Vec::new(),
        };
        let Some(link) = self.cluster.get() else {
            return view;
        };
        view.controller_id = link.quorum.leader_id();
        let image = link.image();
        view.metadata_applied_index = image.last_applied_index;
        view.brokers = image
            .brokers
            .values()
            .map(|b| {
                let endpoint = b.endpoints.first();
                BrokerView {
                    node_id: b.broker_id,
                    host: endpoint.map(|e| e.host.clone()).unwrap_or_default(),
                    port: endpoint.map_or(0, |e| e.port),
                    rack: b.rack.clone(),
                    state: if b.fenced { "fenced" } else { "unfenced" },
                    broker_epoch: b.broker_epoch,
                }
            })
            .collect();
        view
    }

    /// Every topic: from the metadata image (cluster-wide) once joined, else
    /// the logs this broker holds.
    pub fn topics_view(&self) -> TopicsView {
        let mut topics: Vec<TopicSummary> = match self.cluster.get() {
            Some(link) => link
                .image()
                .topics
                .values()
                .map(|t| TopicSummary {
                    name: t.name.clone(),
                    topic_id: uuid_text(&t.topic_id),
                    internal: crate::handlers::admin::is_internal_topic(&t.name),
                    partitions: to_i32(t.partitions.len()),
                    replication_factor: t
                        .partitions
                        .values()
                        .next()
                        .map_or(0, |p| to_i32(p.replicas.len())),
                    offline_partitions: to_i32(
                        t.partitions.values().filter(|p| p.leader < 0).count(),
                    ),
                    under_replicated_partitions: to_i32(
                        t.partitions
                            .values()
                            .filter(|p| p.isr.len() < p.replicas.len())
                            .count(),
                    ),
                })
                .collect(),
            None => self
                .registry()
                .iter()
                .map(|t| TopicSummary {
                    name: t.name.clone(),
                    topic_id: uuid_text(&t.id),
                    internal: crate::handlers::admin::is_internal_topic(&t.name),
                    partitions: t.partition_count,
                    replication_factor: 1,
                    offline_partitions: 0,
                    under_replicated_partitions: 0,
                })
                .collect(),
        };
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        TopicsView { topics }
    }

    /// One topic, with every partition's replicas and, where this broker holds
    /// a replica, its log's offsets. `None` for a topic that does not exist.
    pub fn topic_view(&self, name: &str) -> Option<TopicView> {
        let local: Option<Arc<crate::topics::Topic>> = self.topic(name);
        let from_image = self.cluster.get().and_then(|link| {
            let image = link.image();
            let t = image.topic_by_name(name)?;
            let partitions: Vec<PartitionView> = t
                .partitions
                .iter()
                .map(|(index, state)| PartitionView {
                    partition: *index,
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    log: local
                        .as_ref()
                        .and_then(|l| l.partition(*index))
                        .map(|p| log_view(p)),
                })
                .collect();
            Some((t.topic_id, partitions))
        });
        let (topic_id, partitions) = match (from_image, &local) {
            (Some(found), _) => found,
            (None, Some(topic)) => {
                let me = self.config.node_id;
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| PartitionView {
                        partition: p.index,
                        leader: me,
                        leader_epoch: p.leader_epoch(),
                        replicas: vec![me],
                        isr: vec![me],
                        log: Some(log_view(p)),
                    })
                    .collect();
                (topic.id, partitions)
            }
            (None, None) => return None,
        };
        Some(TopicView {
            name: name.to_string(),
            topic_id: uuid_text(&topic_id),
            internal: crate::handlers::admin::is_internal_topic(name),
            config_overrides: local.map(|t| t.overrides.clone()).unwrap_or_default(),
            partitions,
        })
    }

    /// Every setting of this broker with its value and where the value came
    /// from (as started: dynamic broker configs set through the Kafka API are
    /// DescribeConfigs' business).
    pub fn config_view(&self) -> ConfigView {
        let mut entries = Vec::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&self.config) {
            for (name, value) in map {
                if name == "topic_defaults" {
                    if let serde_json::Value::Object(defaults) = value {
                        for (kafka_name, value) in defaults {
                            let name = format!("topic_defaults.{kafka_name}");
                            entries.push(ConfigEntry {
                                source: self.config.source_of(&name),
                                name,
                                value,
                            });
                        }
                    }
                    continue;
                }
                entries.push(ConfigEntry {
                    source: self.config.source_of(&name),
                    name,
                    value,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        ConfigView { entries }
    }

    /// The groups this broker coordinates.
    pub fn groups_view(&self) -> GroupsView {
        let groups = self
            .groups
            .list()
            .into_iter()
            .map(|g| {
                let members = self
                    .groups
                    .describe(&g.group_id)
                    .map_or(0, |d| d.members.len());
                GroupSummary {
                    group_id: g.group_id,
                    state: g.state_name,
                    group_type: g.group_type,
                    protocol_type: g.protocol_type,
                    members,
                }
            })
            .collect();
        GroupsView { groups }
    }

    /// One group this broker coordinates, with its committed offsets and lag.
    pub fn group_view(&self, group_id: &str) -> Option<GroupView> {
        let described = self.groups.describe(group_id)?;
        let committed = self
            .groups
            .metrics_snapshot()
            .into_iter()
            .find(|g| g.group_id == group_id)
            .map(|g| g.offsets)
            .unwrap_or_default();
        let mut offsets: Vec<GroupOffsetView> = committed
            .into_iter()
            .map(|(topic, partition, committed_offset)| {
                let high_watermark = self
                    .topic(&topic)
                    .and_then(|t| t.partition(partition).map(|p| p.log.high_watermark()));
                GroupOffsetView {
                    lag: high_watermark.map(|hw| (hw - committed_offset).max(0)),
                    topic,
                    partition,
                    committed_offset,
                    high_watermark,
                }
            })
            .collect();
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        // Only the consumer protocol's assignments have a known encoding (Connect's,
        // say, do not): others are shown as none rather than guessed at.
        let consumer_protocol = described.protocol_type == "consumer";
        Some(GroupView {
            group_id: group_id.to_string(),
            state: described.state_name,
            protocol_type: described.protocol_type,
            protocol_name: described.protocol_name,
            total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
            members: described
                .members
                .into_iter()
                .map(|m| MemberView {
                    member_id: m.member_id,
                    group_instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    assignments: member_assignments(consumer_protocol, &m.assignment),
                })
                .collect(),
            offsets,
        })
    }
}

/// A member's assignment decoded from the consumer protocol's encoding;
/// empty for other protocols or bytes that do not decode.
fn member_assignments(consumer_protocol: bool, assignment: &bytes::Bytes) -> Vec<MemberAssignment> {
    if !consumer_protocol {
        return Vec::new();
    }
    crate::groups::records::decode_consumer_assignment(assignment)
        .map(|a| {
            a.into_iter()
                .map(|(topic, partitions)| MemberAssignment {
                    topic,
                    partitions: partitions.into_iter().collect(),
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// What the web console reads beyond the JSON API (crates/server/src/console).
// Rust values rather than JSON shapes: they are not a public contract.
// ---------------------------------------------------------------------------

/// Produce and consume counters since the broker started (never reset), summed
/// over the partitions this broker holds. A reader turns two readings into a rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
}

/// What this broker holds of one topic: its logs' sizes and offsets, and traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicLocalStats {
    pub size_bytes: u64,
    /// Offsets between log start and high watermark, summed over partitions: the
    /// records a consumer could read (compaction gaps and transaction markers
    /// included, as in Kafka tools' "messages" counts).
    pub records: i64,
    pub traffic: TrafficCounters,
}

/// One configuration of a topic with its effective value and its source's Kafka name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigView {
    pub name: String,
    /// `None` for a config without a value (a null in DescribeConfigs).
    pub value: Option<String>,
    /// `DYNAMIC_TOPIC_CONFIG`, `STATIC_BROKER_CONFIG`, `DEFAULT_CONFIG`, ...
    pub source: &'static str,
}

/// One partition's reassignment in progress (KIP-455 state in the metadata image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentView {
    pub topic: String,
    pub partition: i32,
    /// Current replicas: the target first, then those that will go.
    pub replicas: Vec<i32>,
    pub target_replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    /// Per adding replica: how far it has copied the leader's log, when this
    /// broker leads the partition and so knows (`None` otherwise).
    pub adding_progress: Vec<AddingReplicaProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddingReplicaProgress {
    pub broker: i32,
    /// Whether it joined the ISR (the reassignment waits for every adding replica to).
    pub in_isr: bool,
    /// The offset it fetched up to, and the leader's log end, when known here.
    pub log_end_offset: Option<i64>,
    pub leader_log_end_offset: Option<i64>,
}

/// Where the message browser starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowseStart {
    Offset(i64),
    /// The first record whose batch has a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Bounds on one page of the message browser: what it may read from disk,
/// hold in memory and send to a browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowseLimits {
    pub records_max: usize,
    /// Keys, values and header values longer than this are cut (the full length is kept).
    pub value_bytes_max: usize,
    /// Bytes of batches read from the log per page (a single larger batch is
    /// still read, up to [`BROWSE_BATCH_BYTES_MAX`]).
    pub read_bytes_max: usize,
}

/// A batch larger than this is not read for the browser at all: it reports
/// [`BrowseError::BatchTooLarge`] rather than loading it into memory.
pub const BROWSE_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Decompressed bytes of one batch the browser will inflate.
const BROWSE_DECOMPRESSED_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Log reads for one page at most.
const BROWSE_READS_MAX: usize = 16;
/// Headers of one record shown; the rest are counted.
pub const BROWSE_HEADERS_MAX: usize = 32;

/// A possibly cut copy of a key, value or header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedBytes {
    /// At most `value_bytes_max` bytes (copied, so the batch they came from is freed).
    pub bytes: Vec<u8>,
    /// The whole length in the record.
    pub full_bytes: usize,
}

impl BrowsedBytes {
    pub fn is_truncated(&self) -> bool {
        self.bytes.len() < self.full_bytes
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    /// `CreateTime` or `LogAppendTime`.
    pub timestamp_type: &'static str,
    /// `None`: a null key / value (a tombstone, for values).
    pub key: Option<BrowsedBytes>,
    pub value: Option<BrowsedBytes>,
    pub headers: Vec<(String, Option<BrowsedBytes>)>,
    /// Headers not shown past [`BROWSE_HEADERS_MAX`].
    pub headers_omitted: usize,
    pub transactional: bool,
}

/// One page of records of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPage {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Where reading began (a timestamp start resolved to its offset).
    pub start_offset: i64,
    pub records: Vec<BrowsedRecord>,
    /// The offset to continue from; `None` once the high watermark is reached.
    pub next_offset: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrowseError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of {topic:?} does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("this broker holds no replica of partition {partition} of {topic:?}")]
    NotHeldHere { topic: String, partition: i32 },
    #[error("offset {offset} is outside the readable range {log_start_offset}..{high_watermark}")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("a batch of {batch_bytes} bytes is larger than the browser reads (16 MiB)")]
    BatchTooLarge { batch_bytes: usize },
    #[error("reading the log: {0}")]
    Log(String),
}

fn browsed(bytes: &[u8], value_bytes_max: usize) -> BrowsedBytes {
    BrowsedBytes {
        bytes: bytes
            .get(..value_bytes_max.min(bytes.len()))
            .unwrap_or_default()
            .to_vec(),
        full_bytes: bytes.len(),
    }
}

impl Broker {
    /// Produce and consume counters of every partition this broker holds.
    pub fn traffic_counters(&self) -> TrafficCounters {
        let mut total = TrafficCounters::default();
        for stats in self.topic_local_stats().values() {
            total.bytes_in += stats.traffic.bytes_in;
            total.records_in += stats.traffic.records_in;
            total.bytes_out += stats.traffic.bytes_out;
        }
        total
    }

    /// Per topic this broker holds: sizes, readable offsets and traffic.
    pub fn topic_local_stats(&self) -> std::collections::BTreeMap<String, TopicLocalStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let topics: Vec<Arc<crate::topics::Topic>> = self.registry().iter().cloned().collect();
        topics
            .iter()
            .map(|t| {
                let mut stats = TopicLocalStats::default();
                for p in &t.partitions {
                    stats.size_bytes += p.log.size_bytes();
                    stats.records += (p.log.high_watermark() - p.log.log_start_offset()).max(0);
                    stats.traffic.bytes_in += p.traffic.bytes_in.load(Relaxed);
                    stats.traffic.records_in += p.traffic.records_in.load(Relaxed);
                    stats.traffic.bytes_out += p.traffic.bytes_out.load(Relaxed);
                }
                (t.name.clone(), stats)
            })
            .collect()
    }

    /// A topic's configs with their sources, as DescribeConfigs gives them;
    /// `None` for a topic this broker does not hold.
    pub fn topic_configs_view(&self, name: &str) -> Option<Vec<TopicConfigView>> {
        crate::handlers::configs::topic_configs_with_sources(self, name).map(|entries| {
            entries
                .into_iter()
                .map(|(name, value, source)| TopicConfigView {
                    name,
                    value,
                    source,
                })
                .collect()
        })
    }

    /// Total lag of each group this broker coordinates (partitions whose high
    /// watermark is not known here count nothing), in group id order.
    pub fn group_lags(&self) -> Vec<(String, i64)> {
        let mut lags: Vec<(String, i64)> = self
            .groups
            .metrics_snapshot()
            .into_iter()
            .map(|g| {
                let lag = g
                    .offsets
                    .iter()
                    .filter_map(|(topic, partition, committed)| {
                        let hw = self
                            .topic(topic)?
                            .partition(*partition)?
                            .log
                            .high_watermark();
                        Some((hw - committed).max(0))
                    })
                    .sum();
                (g.group_id, lag)
            })
            .collect();
        lags.sort();
        lags
    }

    /// The metadata quorum as its leader describes it (voters, observers and
    /// their progress); `None` before this broker joined, an error text when
    /// no leader answered within `wait`.
    pub async fn quorum_view(
        &self,
        wait: std::time::Duration,
    ) -> Option<Result<crate::cluster::QuorumView, String>> {
        let link = self.cluster.get()?;
        Some(
            match tokio::time::timeout(wait, link.quorum.describe()).await {
                Ok(Ok(view)) => Ok(view),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no quorum leader answered within {} ms",
                    wait.as_millis()
                )),
            },
        )
    }

    /// Partitions with a reassignment in progress, from the metadata image.
    pub fn reassignments_view(&self) -> Vec<ReassignmentView> {
        let Some(link) = self.cluster.get() else {
            return Vec::new();
        };
        // Copied out first: the image's lock is not held while partitions' are taken.
        let moving: Vec<(String, i32, weir_metadata::image::PartitionState)> = link
            .image()
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, state)| state.is_reassigning())
                    .map(|(index, state)| (t.name.clone(), *index, state.clone()))
            })
            .collect();
        let mut out = Vec::new();
        for (topic, index, state) in moving {
            // Followers' progress is known only to the leader, in its replication state.
            let local = self.topic(&topic);
            let partition = local.as_ref().and_then(|l| l.partition(index));
            let (follower_ends, leader_end) = match partition {
                Some(p) if p.is_leader() => {
                    let ends = p
                        .replication()
                        .as_ref()
                        .map(|r| r.follower_log_ends())
                        .unwrap_or_default();
                    (ends, Some(p.log.log_end_offset()))
                }
                _ => (Vec::new(), None),
            };
            let adding_progress = state
                .adding_replicas
                .iter()
                .map(|b| AddingReplicaProgress {
                    broker: *b,
                    in_isr: state.isr.contains(b),
                    log_end_offset: follower_ends
                        .iter()
                        .find(|(id, end)| id == b && *end >= 0)
                        .map(|(_, end)| *end),
                    leader_log_end_offset: leader_end,
                })
                .collect();
            out.push(ReassignmentView {
                topic,
                partition: index,
                replicas: state.replicas.clone(),
                target_replicas: state.target_replicas(),
                adding_replicas: state.adding_replicas.clone(),
                removing_replicas: state.removing_replicas.clone(),
                isr: state.isr.clone(),
                leader: state.leader,
                adding_progress,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// One page of a partition's records, for the console's message browser:
    /// read from this broker's replica up to its high watermark (what a
    /// read_uncommitted consumer could see), control batches left out. Every
    /// size is bounded by `limits` and the constants above, whatever the log holds.
    pub fn browse_records(
        &self,
        topic: &str,
        partition: i32,
        start: BrowseStart,
        limits: BrowseLimits,
    ) -> Result<RecordPage, BrowseError> {
        use weir_protocol::record::{BatchHeader, TimestampType, decode_records, split_batches};
        let t = self
            .topic(topic)
            .ok_or_else(|| BrowseError::UnknownTopic(topic.to_string()))?;
        if partition < 0 || partition >= t.partition_count {
            return Err(BrowseError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        let p = t
            .partition(partition)
            .ok_or_else(|| BrowseError::NotHeldHere {
                topic: topic.to_string(),
                partition,
            })?;
        let log = &p.log;
        let high_watermark = log.high_watermark();
        let log_start_offset = log.log_start_offset();
        let start_offset = match start {
            BrowseStart::Offset(offset) => offset,
            BrowseStart::Timestamp(ts_ms) => log
                .offset_for_timestamp(ts_ms)
                .map_err(|e| BrowseError::Log(e.to_string()))?
                .map_or(high_watermark, |(offset, _)| offset),
        };
        if start_offset < log_start_offset || start_offset > high_watermark {
            return Err(BrowseError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset,
                high_watermark,
            });
        }
        let mut page = RecordPage {
            log_start_offset,
            high_watermark,
            start_offset,
            records: Vec::new(),
            next_offset: None,
        };
        let mut offset = start_offset;
        let mut read_bytes = 0usize;
        // Each pass reads at least one batch or stops; the bound on passes keeps a
        // page of only control batches from reading on and on.
        for _ in 0..BROWSE_READS_MAX {
            if offset >= high_watermark
                || page.records.len() >= limits.records_max
                || read_bytes >= limits.read_bytes_max
            {
                break;
            }
            let chunk_bytes = limits.read_bytes_max - read_bytes;
            let result = log
                .read(offset, chunk_bytes, high_watermark)
                .map_err(|e| BrowseError::Log(e.to_string()))?;
            if result.bytes == 0 {
                break;
            }
            if result.bytes > chunk_bytes.max(BROWSE_BATCH_BYTES_MAX) {
                return Err(BrowseError::BatchTooLarge {
                    batch_bytes: result.bytes,
                });
            }
            read_bytes += result.bytes;
            let mut raw = Vec::new();
            result
                .read_into(&mut raw)
                .map_err(|e| BrowseError::Log(e.to_string()))?;
            let raw = bytes::Bytes::from(raw);
            for batch in split_batches(&raw) {
                let batch = batch.map_err(|e| BrowseError::Log(e.to_string()))?;
                let header =
                    BatchHeader::parse(&batch).map_err(|e| BrowseError::Log(e.to_string()))?;
                let batch_end = header.last_offset() + 1;
                if header.is_control() {
                    offset = offset.max(batch_end);
                    continue;
                }
                let records = decode_records(&batch, BROWSE_DECOMPRESSED_BYTES_MAX)
                    .map_err(|e| BrowseError::Log(e.to_string()))?;
                let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
                for r in records {
                    let record_offset = header.base_offset + i64::from(r.offset_delta);
                    if record_offset < offset {
                        continue;
                    }
                    if page.records.len() >= limits.records_max {
                        break;
                    }
                    let headers_omitted = r.headers.len().saturating_sub(BROWSE_HEADERS_MAX);
                    page.records.push(BrowsedRecord {
                        offset: record_offset,
                        timestamp_ms: if log_append_time {
                            header.max_timestamp
                        } else {
                            header.base_timestamp + r.timestamp_delta
                        },
                        timestamp_type: if log_append_time {
                            "LogAppendTime"
                        } else {
                            "CreateTime"
                        },
                        key: r.key.as_deref().map(|k| browsed(k, limits.value_bytes_max)),
                        value: r
                            .value
                            .as_deref()
                            .map(|v| browsed(v, limits.value_bytes_max)),
                        headers: r
                            .headers
                            .iter()
                            .take(BROWSE_HEADERS_MAX)
                            .map(|h| {
                                (
                                    h.key.clone(),
                                    h.value
                                        .as_deref()
                                        .map(|v| browsed(v, limits.value_bytes_max)),
                                )
                            })
                            .collect(),
                        headers_omitted,
                        transactional: header.is_transactional(),
                    });
                    offset = record_offset + 1;
                }
                if page.records.len() >= limits.records_max {
                    break;
                }
                offset = offset.max(batch_end);
            }
        }
        page.next_offset = (offset < high_watermark).then_some(offset);
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_is_kafkas_url_safe_base64() {
        // Kafka's Uuid.toString of these bytes (checked with java.util.Base64.getUrlEncoder).
        assert_eq!(uuid_text(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(uuid_text(&[0xffu8; 16]), "_____________________w");
        let id: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(uuid_text(&id), "AAECAwQFBgcICQoLDA0ODw");
    }
}
