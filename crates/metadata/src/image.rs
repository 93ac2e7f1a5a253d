//! The cluster metadata image: what every node knows after applying the
//! metadata log up to some index. A pure, deterministic state machine: the
//! same records in the same order give the same image on every node, and a
//! snapshot restored and then fed the rest of the log gives the same image as
//! replay from scratch.
//!
//! SKELETON: the signatures below are the contract the quorum and the broker
//! build against; the bodies are filled in by the image work.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, TopicId};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// The log index of its latest `RegisterBroker` (KRaft's broker epoch).
    pub broker_epoch: i64,
    pub incarnation_id: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// One partition's replica assignment and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    /// By partition index, dense from 0.
    pub partitions: BTreeMap<i32, PartitionState>,
}

/// Why a record could not be applied. The image is unchanged by such a
/// record, identically on every node, so skipping it keeps nodes in step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("{0}")]
    Inconsistent(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("metadata snapshot is not readable: {0}")]
    Decode(String),
}

/// The image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The index of the last entry applied, `None` before any.
    pub last_applied_index: Option<u64>,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    pub topics: BTreeMap<TopicId, TopicImage>,
    pub topic_ids_by_name: BTreeMap<String, TopicId>,
    pub configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id of the next block the controller hands out.
    pub next_producer_id: i64,
}

impl MetadataImage {
    pub fn new() -> MetadataImage {
        MetadataImage::default()
    }

    /// Applies one record of the log entry at `index`. Records of one entry
    /// share its index; indexes never go down.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        let _ = (index, record);
        unimplemented!("skeleton")
    }

    /// The image as bytes, for a Raft snapshot.
    pub fn to_snapshot(&self) -> Vec<u8> {
        unimplemented!("skeleton")
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        let _ = bytes;
        unimplemented!("skeleton")
    }
}
