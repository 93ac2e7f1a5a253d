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
                })
                .collect(),
            offsets,
        })
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
