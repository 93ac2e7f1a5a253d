//! The metadata log's records, modelled on KRaft's (`metadata/src/main/resources/common/metadata/*.json`
//! in apache/kafka): every change to the cluster's metadata is one of these,
//! committed through the quorum and applied in log order by every node.
//!
//! Records carry no offsets of their own: the image is fed `(offset, record)`,
//! and where KRaft derives something from the offset (a broker's epoch is the
//! offset of its registration) so do we.

use serde::{Deserialize, Serialize};

/// A broker id (Kafka's `node.id`).
pub type BrokerId = i32;
/// A topic id (KIP-516): 16 random bytes, never all zero.
pub type TopicId = [u8; 16];

/// "No leader": Kafka's -1 in Metadata responses.
pub const NO_LEADER: BrokerId = -1;

/// One listener a broker advertises to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Kafka's listener name (`PLAINTEXT`).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    /// A topic's override, by topic name (as KRaft's ConfigRecord).
    Topic(String),
    /// One broker's dynamic config, or the cluster-wide default with `None`.
    Broker(Option<BrokerId>),
    /// A consumer group's config (KIP-848 group configs), by group id.
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)registers. Its broker epoch is this record's offset; a new
    /// registration of the same id replaces the old one (a restart), and the
    /// broker starts fenced until it heartbeats as caught up.
    RegisterBroker {
        broker_id: BrokerId,
        /// Random per process start: tells a restart from a duplicate node id.
        incarnation_id: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        fenced: bool,
    },
    /// A broker leaves the cluster for good (decommission).
    UnregisterBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// The controller stopped hearing from a broker (session timeout) or it shut down.
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// The broker heartbeats again and has caught up with the metadata log.
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// A new topic. Its partitions follow as `Partition` records.
    Topic { name: String, topic_id: TopicId },
    /// One partition's full state: a new partition, or a snapshot of one.
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        /// `NO_LEADER` when no replica can lead (offline).
        leader: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A change to an existing partition. Fields left `None` keep their value.
    /// Every change bumps the partition epoch; a change of leader (including
    /// to or from `NO_LEADER`) also bumps the leader epoch, as KRaft does.
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        leader: Option<BrokerId>,
        isr: Option<Vec<BrokerId>>,
        replicas: Option<Vec<BrokerId>>,
        /// A reassignment's replicas still catching up (KIP-455, KRaft's
        /// `addingReplicas`): a subset of `replicas`. Absent in records
        /// written before reassignment existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding_replicas: Option<Vec<BrokerId>>,
        /// A reassignment's replicas that go once it completes (KRaft's
        /// `removingReplicas`): a subset of `replicas`, disjoint from adding.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing_replicas: Option<Vec<BrokerId>>,
    },
    /// Sets (`Some`) or removes (`None`) one config key of a resource.
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic and all its partitions and configs go away.
    RemoveTopic { topic_id: TopicId },
    /// A block of producer ids `[first, first + size)` handed to a broker.
    /// Blocks are allocated in order, so `first + size` is the next block's start.
    ProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
        first_producer_id: i64,
        size: i64,
    },
    /// Written by a new quorum leader before it acts as controller, so that
    /// it knows it has applied everything its predecessor committed.
    NoOp,
    /// The cluster's id (Kafka's `cluster.id`), claimed once by the first
    /// broker to register; every broker answers clients with it. A second
    /// claim with another id is refused by the image.
    ClusterId { cluster_id: String },
}
