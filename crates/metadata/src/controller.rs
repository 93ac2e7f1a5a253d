//! The active controller's decisions, sans I/O: given the image and a request
//! (or the passage of time), which records to commit and what to answer.
//! The quorum shell serialises requests: it commits one decision's records
//! (and waits for them to be applied) before it asks for the next, so every
//! decision sees the image its predecessors produced.
//!
//! SKELETON: the contract; bodies are filled in by the controller work.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::image::MetadataImage;
use crate::records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, TopicId};

/// Requests that only the active controller may decide. Any node accepts
/// them and forwards them to the controller (KIP-590's forwarding, over the
/// controller listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    RegisterBroker {
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    BrokerHeartbeat {
        broker_id: BrokerId,
        broker_epoch: i64,
        /// The broker has applied the metadata log at least this far.
        applied_index: u64,
        /// The broker is shutting down cleanly: fence it now.
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    /// Incremental config changes: `None` deletes the key.
    AlterConfigs {
        changes: Vec<(ConfigResource, String, Option<String>)>,
        validate_only: bool,
    },
    AllocateProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit assignment, partition index -> replicas, instead of placement.
    pub assignments: Option<BTreeMap<i32, Vec<BrokerId>>>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartitions {
    pub name: String,
    /// The topic's partition count afterwards.
    pub total: i32,
    pub assignments: Option<Vec<Vec<BrokerId>>>,
}

/// Per-item results use Kafka error codes so the broker can answer clients
/// without translating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub name: String,
    /// Kafka error code, 0 for success.
    pub error_code: i16,
    pub message: Option<String>,
    /// For a created topic: its id.
    pub topic_id: Option<TopicId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// `broker_epoch` is the index of the committed registration; the shell fills it in.
    RegisterBroker {
        broker_epoch: i64,
    },
    BrokerHeartbeat {
        fenced: bool,
        should_shut_down: bool,
    },
    Items(Vec<ItemResult>),
    ProducerIds {
        first_producer_id: i64,
        size: i64,
    },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerError {
    /// Another live process already holds this broker id.
    #[error("broker id {0} is already registered by a live process")]
    DuplicateBrokerId(BrokerId),
    #[error("stale broker epoch {given} for broker {broker_id} (current {current})")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        given: i64,
        current: i64,
    },
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("{0}")]
    Invalid(String),
}

/// What to commit and what to answer once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub records: Vec<MetadataRecord>,
    pub response: ControllerResponse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Kafka's `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// Producer ids per `ProducerIds` block (Kafka: 1000).
    pub producer_id_block_size: i64,
    /// Default partitions and RF for topics created without them (-1 in the request).
    pub default_partitions: i32,
    pub default_replication_factor: i16,
}

/// The controller's memory beyond the image: when it last heard from each broker.
/// Lost on failover; a new controller counts every broker as heard at its start.
#[derive(Debug)]
pub struct Controller {
    pub config: ControllerConfig,
    last_heartbeat_ms: BTreeMap<BrokerId, u64>,
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            last_heartbeat_ms: BTreeMap::new(),
        }
    }

    /// Decides one request against `image` at time `now_ms`.
    pub fn handle(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        request: &ControllerRequest,
    ) -> Result<Decision, ControllerError> {
        let _ = (image, now_ms, request, &mut self.last_heartbeat_ms);
        unimplemented!("skeleton")
    }

    /// Periodic work: fence brokers silent past the session timeout and move
    /// leadership off them (or mark their partitions offline).
    pub fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataRecord> {
        let _ = (image, now_ms);
        unimplemented!("skeleton")
    }
}
