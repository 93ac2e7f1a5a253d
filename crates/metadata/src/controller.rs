//! The active controller's decisions, sans I/O: given the image and a request
//! (or the passage of time), which records to commit and what to answer.
//! The quorum shell serialises requests: it commits one decision's records
//! (and waits for them to be applied) before it asks for the next, so every
//! decision sees the image its predecessors produced.
//!
//! The controller is deterministic: the same image, time, request, heartbeat
//! memory and topic-id source give the same decision. Randomness (topic ids)
//! comes in through [`Controller::with_id_source`]; time comes in as `now_ms`.
//!
//! What every decision keeps true, once its records are applied (the property
//! tests in `proptests.rs` check it over random request sequences):
//! - its records apply without an `ApplyError`;
//! - every leader is an unfenced broker in its partition's ISR, or `NO_LEADER`;
//! - a partition without a leader has no unfenced broker in its ISR;
//! - no ISR is empty, and a fenced broker is in an ISR only as its last member;
//! - a leader from outside the ISR comes only from an unclean election;
//! - leader and partition epochs never go down.
//!
//! Leadership and ISRs move through [`crate::election`] when brokers are
//! fenced (session timeout, clean shutdown, a restarted incarnation
//! registering), unfenced, or on the periodic preferred-leader rebalance, and
//! through ElectLeaders. ISRs also change through AlterPartition, which only
//! a partition's leader sends (replication grows and shrinks its ISR).
//!
//! Every decision writes at most [`RECORDS_PER_REQUEST_MAX`] records. Work
//! that needs more (fencing a broker that leads more partitions than that)
//! is done in slices: each tick takes the next slice, and a broker is
//! fenced only with the last one, so leaders stay live throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::election::{self, Election, changed_partitions, partition_changes};
use crate::image::{MetadataImage, PartitionState};
use crate::names::{collision_key, validate_topic_name};
use crate::placement::{PlacementError, place_replicas};
use crate::reassignment;
use crate::records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, NO_LEADER, TopicId};

/// Kafka error codes the controller answers with (`Errors.java`). Kept here,
/// not taken from weir-protocol, so this crate has no wire dependency.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const INELIGIBLE_REPLICA: i16 = 107;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const DUPLICATE_VOTER: i16 = 126;
    pub const VOTER_NOT_FOUND: i16 = 127;
}

/// Kafka's topic config (and cluster default) for the fewest in-sync
/// replicas an acks=all write needs.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// ElectLeaders' election types (KIP-460).
pub mod election_type {
    pub const PREFERRED: i8 = 0;
    pub const UNCLEAN: i8 = 1;
}

/// The most records one admin request may produce, as Kafka's
/// `QuorumController.MAX_RECORDS_PER_USER_OP`; beyond it the whole request
/// fails with POLICY_VIOLATION, as Kafka's does. It also bounds the
/// partitions one CreateTopics or CreatePartitions can ask for.
pub const RECORDS_PER_REQUEST_MAX: usize = 10_000;

/// How many topic ids to draw before giving up on finding an unused one.
/// A random source collides with odds of 2^-122; running out means the
/// source is broken.
const TOPIC_ID_DRAWS_MAX: usize = 100;

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
    /// Claims the cluster id for the whole cluster if none is set yet; the
    /// answer's single item names the cluster's id either way.
    ClaimClusterId {
        cluster_id: String,
    },
    /// Brings a data directory written by single-node Weir (before the
    /// quorum) into the metadata log: its topics keep their ids. Topics the
    /// log already has are left as they are. See [`crate::import`].
    ImportTopics {
        topics: Vec<ImportedTopic>,
        /// The first producer id the old node had not reserved: blocks
        /// handed out from here on start at or above it.
        next_producer_id: i64,
    },
    /// A partition leader asks to change ISRs (Kafka's AlterPartition, v2+:
    /// topics by id). Answered per partition in request order.
    AlterPartition {
        broker_id: BrokerId,
        broker_epoch: i64,
        topics: Vec<AlterPartitionItem>,
    },
    /// Kafka's ElectLeaders (KIP-460): `election_type` is
    /// [`election_type::PREFERRED`] or [`election_type::UNCLEAN`];
    /// `partitions: None` means every partition.
    ElectLeaders {
        election_type: i8,
        partitions: Option<Vec<TopicPartitions>>,
    },
    /// Kafka's AlterPartitionReassignments (KIP-455): per partition a
    /// target replica list, or `None` to cancel. See [`crate::reassignment`].
    AlterPartitionReassignments {
        topics: Vec<ReassignTopic>,
        /// KIP-860: when false, a target of another size than the current
        /// replication factor is refused.
        allow_replication_factor_change: bool,
    },
}

/// The partitions of one topic to reassign (or, with `None`, to cancel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignTopic {
    pub name: String,
    pub partitions: Vec<(i32, Option<Vec<BrokerId>>)>,
}

/// One partition of an AlterPartition request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionItem {
    pub topic_id: TopicId,
    pub partition: i32,
    /// The leader epoch the sender leads in.
    pub leader_epoch: i32,
    /// The partition epoch the sender's view is at; the change applies only
    /// to that version of the partition (compare-and-set).
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// One partition's answer to AlterPartition: its state after the change,
/// or its current state with the error (leader -1, epochs -1 and an empty
/// ISR when the partition is unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionResult {
    pub topic_id: TopicId,
    pub partition: i32,
    pub error_code: i16,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
}

/// Partitions of one topic, by name (clients name topics in ElectLeaders).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// ElectLeaders' answer for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicElectionResult {
    pub topic: String,
    pub partitions: Vec<PartitionElectionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionElectionResult {
    pub partition: i32,
    pub error_code: i16,
    pub message: Option<String>,
}

/// One topic of a data directory from before the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTopic {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: i32,
    pub replicas: Vec<BrokerId>,
    pub configs: BTreeMap<String, String>,
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
    /// Per partition, in request order.
    AlterPartition(Vec<AlterPartitionResult>),
    /// `error_code` is the request's own (POLICY_VIOLATION when it would
    /// elect more than [`RECORDS_PER_REQUEST_MAX`] leaders, then with no
    /// results); with every partition asked for, partitions that need no
    /// election are left out, as Kafka does.
    ElectLeaders {
        error_code: i16,
        results: Vec<TopicElectionResult>,
    },
    /// AlterPartitionReassignments' answer per topic and partition, in
    /// request order (same shape as an election's).
    Reassignments(Vec<TopicElectionResult>),
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

impl ControllerError {
    /// The Kafka error code a broker answers with for this error.
    pub fn error_code(&self) -> i16 {
        match self {
            ControllerError::DuplicateBrokerId(_) => codes::DUPLICATE_BROKER_REGISTRATION,
            // As Kafka's checkBrokerEpoch: an unknown broker's epoch is stale too.
            ControllerError::StaleBrokerEpoch { .. } | ControllerError::UnknownBroker(_) => {
                codes::STALE_BROKER_EPOCH
            }
            ControllerError::Invalid(_) => codes::INVALID_REQUEST,
        }
    }
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
    /// Kafka's `auto.leader.rebalance.enable`: every
    /// `leader_imbalance_check_interval_ms` the tick moves leadership back to
    /// preferred replicas that are live ISR members.
    pub auto_leader_rebalance: bool,
    /// Kafka's `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
}

impl Default for ControllerConfig {
    /// Kafka's defaults.
    fn default() -> ControllerConfig {
        ControllerConfig {
            broker_session_timeout_ms: 9_000,
            producer_id_block_size: 1000,
            default_partitions: 1,
            default_replication_factor: 1,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

/// Where topic ids come from: random in production (KIP-516 ids are random
/// UUIDs), scripted in tests.
pub type TopicIdSource = Box<dyn FnMut() -> TopicId + Send>;

/// The controller's memory beyond the image: when it last heard from each broker.
/// Lost on failover; a new controller counts every broker as heard at its start.
pub struct Controller {
    pub config: ControllerConfig,
    last_heartbeat_ms: BTreeMap<BrokerId, u64>,
    /// Brokers that registered or heartbeated to this controller itself. A
    /// new controller gives every unfenced broker a grace period before
    /// fencing it, but only a broker heard here holds a session that keeps
    /// another incarnation of its id out (as KRaft's heartbeat manager): a
    /// node that restarts after kill -9 together with the controller must
    /// not wait out a session nobody saw.
    heard_here: BTreeSet<BrokerId>,
    /// `None`: ids derived from the log position and the topic name, which is
    /// deterministic but predictable; the quorum shell passes a random source.
    id_source: Option<TopicIdSource>,
    /// Brokers that asked to shut down (by broker epoch) but still lead or
    /// sit in ISRs because one decision could not move them all: ticks
    /// treat them as gone and fence them once they are off everything (as
    /// KRaft's controlled-shutdown state). Lost on failover; the session
    /// timeout then does the same.
    shutting_down: BTreeMap<BrokerId, i64>,
    /// When the last preferred-leader rebalance pass finished; `None` until
    /// this controller's first tick, so a new controller waits a full
    /// interval, as Kafka's.
    last_rebalance_ms: Option<u64>,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("last_heartbeat_ms", &self.last_heartbeat_ms)
            .field("id_source", &self.id_source.as_ref().map(|_| "custom"))
            .field("shutting_down", &self.shutting_down)
            .field("last_rebalance_ms", &self.last_rebalance_ms)
            .finish()
    }
}

/// One item's outcome inside a decision.
type ItemOutcome = Result<ItemSuccess, (i16, String)>;

/// How a new topic's replicas are chosen.
enum Plan {
    /// Given by the request, partition by partition.
    Manual(Vec<Vec<BrokerId>>),
    /// By [`place_replicas`] over the live brokers.
    Placed {
        partitions: usize,
        replication_factor: usize,
    },
}

struct ItemSuccess {
    records: Vec<MetadataRecord>,
    topic_id: Option<TopicId>,
}

fn fail<T>(code: i16, message: impl Into<String>) -> Result<T, (i16, String)> {
    Err((code, message.into()))
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            last_heartbeat_ms: BTreeMap::new(),
            heard_here: BTreeSet::new(),
            id_source: None,
            shutting_down: BTreeMap::new(),
            last_rebalance_ms: None,
        }
    }

    /// Topic ids come from `source` (for the quorum shell: 16 random bytes).
    /// Ids that are taken or reserved (all zero, Kafka's metadata topic id,
    /// or ones whose base64 form starts with '-') are drawn again.
    pub fn with_id_source(
        mut self,
        source: impl FnMut() -> TopicId + Send + 'static,
    ) -> Controller {
        self.id_source = Some(Box::new(source));
        self
    }

    /// When this controller last heard from `broker_id`, if it has.
    pub fn last_heard_ms(&self, broker_id: BrokerId) -> Option<u64> {
        self.last_heartbeat_ms.get(&broker_id).copied()
    }

    /// Decides one request against `image` at time `now_ms`.
    ///
    /// For `RegisterBroker` the response's `broker_epoch` is -1: the epoch is
    /// the index of the log entry that commits the decision's records, which
    /// only the shell knows; it fills it in.
    pub fn handle(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        request: &ControllerRequest,
    ) -> Result<Decision, ControllerError> {
        self.note_unfenced_brokers(image, now_ms);
        match request {
            ControllerRequest::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
            } => self.register_broker(image, now_ms, *broker_id, *incarnation_id, endpoints, rack),
            ControllerRequest::BrokerHeartbeat {
                broker_id,
                broker_epoch,
                applied_index,
                want_shutdown,
            } => self.broker_heartbeat(
                image,
                now_ms,
                *broker_id,
                *broker_epoch,
                *applied_index,
                *want_shutdown,
            ),
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => Ok(self.create_topics(image, topics, *validate_only)),
            ControllerRequest::DeleteTopics { names } => Ok(delete_topics(image, names)),
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => Ok(create_partitions(image, topics, *validate_only)),
            ControllerRequest::AlterConfigs {
                changes,
                validate_only,
            } => Ok(alter_configs(image, changes, *validate_only)),
            ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => self.allocate_producer_ids(image, *broker_id, *broker_epoch),
            ControllerRequest::ClaimClusterId { cluster_id } => {
                let effective = image
                    .cluster_id
                    .clone()
                    .unwrap_or_else(|| cluster_id.clone());
                Ok(Decision {
                    records: if image.cluster_id.is_none() {
                        vec![MetadataRecord::ClusterId {
                            cluster_id: cluster_id.clone(),
                        }]
                    } else {
                        Vec::new()
                    },
                    response: ControllerResponse::Items(vec![ItemResult {
                        name: effective,
                        error_code: codes::NONE,
                        message: None,
                        topic_id: None,
                    }]),
                })
            }
            ControllerRequest::ImportTopics {
                topics,
                next_producer_id,
            } => Ok(crate::import::import_decision(
                image,
                topics,
                *next_producer_id,
            )),
            ControllerRequest::AlterPartition {
                broker_id,
                broker_epoch,
                topics,
            } => self.alter_partition(image, *broker_id, *broker_epoch, topics),
            ControllerRequest::ElectLeaders {
                election_type,
                partitions,
            } => self.elect_leaders(image, *election_type, partitions.as_deref()),
            ControllerRequest::AlterPartitionReassignments {
                topics,
                allow_replication_factor_change,
            } => Ok(self.alter_partition_reassignments(
                image,
                topics,
                *allow_replication_factor_change,
            )),
        }
    }

    /// Periodic work: fence brokers silent past the session timeout (and
    /// brokers whose clean shutdown one decision could not finish) after
    /// moving leadership and ISR membership off them; elect leaders for
    /// partitions that can have one again (unclean elections included, for
    /// topics that allow them); and, every `leader_imbalance_check_interval_ms`,
    /// move leadership back to preferred replicas.
    ///
    /// At most [`RECORDS_PER_REQUEST_MAX`] records. When the partitions to
    /// change are more, this tick changes the first ones and fences nobody;
    /// the next tick continues. A broker is fenced only by the tick that
    /// finds nothing left to move off it, so every leader stays live.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataRecord> {
        self.note_unfenced_brokers(image, now_ms);
        let going: Vec<(BrokerId, i64)> = image
            .live_brokers()
            .filter(|b| {
                !self.heard_within_session(b.broker_id, now_ms)
                    || self.shutting_down.get(&b.broker_id) == Some(&b.broker_epoch)
            })
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect();
        let mut live = self.live_set(image);
        for (broker_id, _) in &going {
            live.remove(broker_id);
        }
        // As KRaft's handleBrokerFenced: leadership and ISRs move first,
        // then the fence. Fences take at most half a decision, so the moves
        // always have room (more brokers going at once are fenced over
        // several ticks).
        let fences = going.len().min(RECORDS_PER_REQUEST_MAX / 2);
        let settled = partition_changes(
            image,
            &live,
            false,
            RECORDS_PER_REQUEST_MAX - fences,
            &BTreeSet::new(),
        );
        let mut records = settled.records;
        if !settled.complete {
            return records;
        }
        // Reassignments whose new replicas are in sync now complete (their
        // new replicas joined the ISR through AlterPartition since).
        let skip = changed_partitions(&records);
        let room = RECORDS_PER_REQUEST_MAX - fences - records.len();
        records.extend(reassignment_completions(image, &live, room, &skip));
        if self.rebalance_due(now_ms) {
            // Partitions changed above are settled already; the rest get a
            // preferred-leader election. Kafka also checks
            // `leader.imbalance.per.broker.percentage` before moving a
            // broker's partitions; this moves every partition whose
            // preferred replica can lead, whatever the share (KRaft's own
            // rebalance does the same).
            let skip = changed_partitions(&records);
            let room = RECORDS_PER_REQUEST_MAX - fences - records.len();
            let rebalanced = partition_changes(image, &live, true, room, &skip);
            records.extend(rebalanced.records);
            // An unfinished pass goes on at the next tick, as Kafka
            // reschedules its own at once.
            if rebalanced.complete {
                self.last_rebalance_ms = Some(now_ms);
            }
        }
        records.extend(
            going
                .into_iter()
                .take(fences)
                .map(|(broker_id, broker_epoch)| MetadataRecord::FenceBroker {
                    broker_id,
                    broker_epoch,
                }),
        );
        records
    }

    /// Whether a preferred-leader rebalance pass is due now. The first tick
    /// of a controller only starts the clock.
    fn rebalance_due(&mut self, now_ms: u64) -> bool {
        if !self.config.auto_leader_rebalance {
            return false;
        }
        match self.last_rebalance_ms {
            None => {
                self.last_rebalance_ms = Some(now_ms);
                false
            }
            Some(last) => {
                now_ms.saturating_sub(last) >= self.config.leader_imbalance_check_interval_ms
            }
        }
    }

    /// Brokers that may lead and sit in ISRs: unfenced and not shutting down.
    fn live_set(&self, image: &MetadataImage) -> BTreeSet<BrokerId> {
        image
            .live_brokers()
            .filter(|b| self.shutting_down.get(&b.broker_id) != Some(&b.broker_epoch))
            .map(|b| b.broker_id)
            .collect()
    }

    /// A controller that just took over has heard from nobody; it gives every
    /// unfenced broker a full session from now rather than fencing them all
    /// at its first tick. Brokers that left the image are forgotten.
    fn note_unfenced_brokers(&mut self, image: &MetadataImage, now_ms: u64) {
        self.last_heartbeat_ms
            .retain(|id, _| image.brokers.contains_key(id));
        self.heard_here.retain(|id| image.brokers.contains_key(id));
        // A shutdown ends with the fence or a new registration.
        self.shutting_down.retain(|id, epoch| {
            image
                .broker(*id)
                .is_some_and(|b| !b.fenced && b.broker_epoch == *epoch)
        });
        for broker in image.live_brokers() {
            self.last_heartbeat_ms
                .entry(broker.broker_id)
                .or_insert(now_ms);
        }
    }

    fn heard_within_session(&self, broker_id: BrokerId, now_ms: u64) -> bool {
        self.last_heartbeat_ms.get(&broker_id).is_some_and(|last| {
            now_ms.saturating_sub(*last) <= self.config.broker_session_timeout_ms
        })
    }

    fn register_broker(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        endpoints: &[Endpoint],
        rack: &Option<String>,
    ) -> Result<Decision, ControllerError> {
        if broker_id < 0 {
            return Err(ControllerError::Invalid(format!(
                "broker id {broker_id} is negative"
            )));
        }
        if let Some(existing) = image.broker(broker_id)
            && !existing.fenced
            && self.heard_here.contains(&broker_id)
            && self.heard_within_session(broker_id, now_ms)
            && existing.incarnation_id != incarnation_id
        {
            return Err(ControllerError::DuplicateBrokerId(broker_id));
        }
        // The new registration starts fenced (KRaft does the same) until the
        // broker heartbeats having applied the log up to it. Whatever the old
        // registration led moves off it now, and it leaves every ISR it was
        // not the last member of: it restarted, and what it holds is unknown
        // until it has caught up with a leader again. When that is more than
        // one decision can hold, ticks finish it; until then the partitions
        // not reached keep their fenced leader.
        let mut records = vec![MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id,
            endpoints: endpoints.to_vec(),
            rack: rack.clone(),
            fenced: true,
        }];
        let mut live = self.live_set(image);
        live.remove(&broker_id);
        records.extend(
            partition_changes(
                image,
                &live,
                false,
                RECORDS_PER_REQUEST_MAX - 1,
                &BTreeSet::new(),
            )
            .records,
        );
        self.shutting_down.remove(&broker_id);
        self.last_heartbeat_ms.insert(broker_id, now_ms);
        self.heard_here.insert(broker_id);
        Ok(Decision {
            records,
            response: ControllerResponse::RegisterBroker { broker_epoch: -1 },
        })
    }

    fn broker_heartbeat(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        broker_id: BrokerId,
        broker_epoch: i64,
        applied_index: u64,
        want_shutdown: bool,
    ) -> Result<Decision, ControllerError> {
        let broker = image
            .broker(broker_id)
            .ok_or(ControllerError::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id,
                given: broker_epoch,
                current: broker.broker_epoch,
            });
        }
        self.last_heartbeat_ms.insert(broker_id, now_ms);
        self.heard_here.insert(broker_id);
        let caught_up = u64::try_from(broker_epoch).is_ok_and(|epoch| applied_index >= epoch);
        let room = RECORDS_PER_REQUEST_MAX - 1;
        let (records, fenced, should_shut_down) = if want_shutdown {
            if broker.fenced {
                (Vec::new(), true, true)
            } else {
                // A clean shutdown: leadership and ISR membership move now
                // rather than after a session timeout, then the fence. If
                // one decision cannot hold it all, the broker stays unfenced
                // and told to wait; ticks carry on and fence it at the end.
                self.shutting_down.insert(broker_id, broker_epoch);
                let live = self.live_set(image);
                let changes = partition_changes(image, &live, false, room, &BTreeSet::new());
                let mut records = changes.records;
                if changes.complete {
                    self.shutting_down.remove(&broker_id);
                    records.push(MetadataRecord::FenceBroker {
                        broker_id,
                        broker_epoch,
                    });
                }
                (records, changes.complete, changes.complete)
            }
        } else if broker.fenced && caught_up {
            // As KRaft's handleBrokerUnfenced: the unfence first, then the
            // partitions that were waiting for a live ISR member (or, where
            // allowed, for any live replica).
            let mut live = self.live_set(image);
            live.insert(broker_id);
            let mut records = vec![MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            }];
            records.extend(partition_changes(image, &live, false, room, &BTreeSet::new()).records);
            (records, false, false)
        } else {
            (Vec::new(), broker.fenced, false)
        };
        Ok(Decision {
            records,
            response: ControllerResponse::BrokerHeartbeat {
                fenced,
                should_shut_down,
            },
        })
    }

    fn allocate_producer_ids(
        &mut self,
        image: &MetadataImage,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> Result<Decision, ControllerError> {
        let broker = image
            .broker(broker_id)
            .ok_or(ControllerError::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id,
                given: broker_epoch,
                current: broker.broker_epoch,
            });
        }
        let size = self.config.producer_id_block_size;
        if size <= 0 {
            return Err(ControllerError::Invalid(format!(
                "producer id block size {size} is not positive"
            )));
        }
        let first_producer_id = image.next_producer_id;
        if first_producer_id.checked_add(size).is_none() {
            return Err(ControllerError::Invalid(
                "producer ids are exhausted: the next block would pass the int64 limit".into(),
            ));
        }
        Ok(Decision {
            records: vec![MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                first_producer_id,
                size,
            }],
            response: ControllerResponse::ProducerIds {
                first_producer_id,
                size,
            },
        })
    }

    fn create_topics(
        &mut self,
        image: &MetadataImage,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Decision {
        let duplicates = duplicated(topics.iter().map(|t| t.name.as_str()));
        let live = live_placement(image);
        // Names and ids given out earlier in this request: the image does not
        // hold them yet.
        let mut new_keys: BTreeMap<String, String> = BTreeMap::new();
        let mut new_ids: BTreeSet<TopicId> = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(topics.len());
        for topic in topics {
            let outcome = if duplicates.contains(topic.name.as_str()) {
                fail(codes::INVALID_REQUEST, "Duplicate topic name.")
            } else {
                self.create_topic(image, topic, &live, &new_keys, &new_ids)
            };
            if let Ok(success) = &outcome {
                new_keys.insert(collision_key(&topic.name), topic.name.clone());
                new_ids.extend(success.topic_id);
            }
            outcomes.push((topic.name.clone(), outcome));
        }
        finish_items(outcomes, validate_only)
    }

    fn create_topic(
        &mut self,
        image: &MetadataImage,
        topic: &NewTopic,
        live: &[(BrokerId, Option<String>)],
        new_keys: &BTreeMap<String, String>,
        new_ids: &BTreeSet<TopicId>,
    ) -> ItemOutcome {
        let name = &topic.name;
        if let Err(why) = validate_topic_name(name) {
            return fail(codes::INVALID_TOPIC_EXCEPTION, why);
        }
        if image.topic_by_name(name).is_some() {
            return fail(
                codes::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            );
        }
        let key = collision_key(name);
        let colliding = image
            .topic_ids_by_name
            .keys()
            .find(|existing| collision_key(existing) == key)
            .or_else(|| new_keys.get(&key));
        if let Some(other) = colliding {
            return fail(
                codes::INVALID_TOPIC_EXCEPTION,
                format!(
                    "Topic '{name}' collides with existing topic '{other}' ('.' and '_' are treated alike)."
                ),
            );
        }
        if let Some(empty) = topic.configs.keys().find(|k| k.is_empty()) {
            return fail(
                codes::INVALID_CONFIG,
                format!("config name '{empty}' is empty"),
            );
        }
        let plan = match topic.assignments.as_ref().filter(|a| !a.is_empty()) {
            Some(manual) => {
                if topic.replication_factor != -1 {
                    return fail(
                        codes::INVALID_REQUEST,
                        "A manual partition assignment was specified, but replication factor was not set to -1.",
                    );
                }
                if topic.partitions != -1 {
                    return fail(
                        codes::INVALID_REQUEST,
                        "A manual partition assignment was specified, but numPartitions was not set to -1.",
                    );
                }
                if manual.len() > RECORDS_PER_REQUEST_MAX {
                    return fail(codes::POLICY_VIOLATION, too_many_partitions(manual.len()));
                }
                let dense = manual
                    .keys()
                    .enumerate()
                    .all(|(i, p)| usize::try_from(*p).ok() == Some(i));
                if !dense {
                    return fail(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        "partitions should be a consecutive 0-based integer sequence",
                    );
                }
                let replication_factor = manual.values().next().map_or(0, Vec::len);
                for replicas in manual.values() {
                    check_manual_assignment(image, replicas, replication_factor)?;
                }
                Plan::Manual(manual.values().cloned().collect())
            }
            None => {
                let replication_factor = match topic.replication_factor {
                    -1 => self.config.default_replication_factor,
                    rf => rf,
                };
                let Ok(replication_factor @ 1..) = usize::try_from(replication_factor) else {
                    return fail(
                        codes::INVALID_REPLICATION_FACTOR,
                        "Replication factor must be larger than 0, or -1 to use the default value.",
                    );
                };
                let partitions = match topic.partitions {
                    -1 => self.config.default_partitions,
                    n => n,
                };
                let Ok(partitions @ 1..) = usize::try_from(partitions) else {
                    return fail(
                        codes::INVALID_PARTITIONS,
                        "Number of partitions was set to an invalid non-positive value.",
                    );
                };
                if partitions > RECORDS_PER_REQUEST_MAX {
                    return fail(codes::POLICY_VIOLATION, too_many_partitions(partitions));
                }
                // Checked before an id is drawn, so a failed create draws none.
                if let Err(e) = place_replicas(live, 0, 1, replication_factor) {
                    return placement_failure(e);
                }
                Plan::Placed {
                    partitions,
                    replication_factor,
                }
            }
        };
        let topic_id = self.draw_topic_id(image, name, new_ids)?;
        let assignments = match plan {
            Plan::Manual(assignments) => assignments,
            Plan::Placed {
                partitions,
                replication_factor,
            } => place_replicas(
                live,
                start_offset(&topic_id),
                partitions,
                replication_factor,
            )
            .or_else(placement_failure)?,
        };
        let mut records = Vec::with_capacity(1 + topic.configs.len() + assignments.len());
        records.push(MetadataRecord::Topic {
            name: name.clone(),
            topic_id,
        });
        // As KRaft: configs after the topic (they need it) and before its partitions.
        records.extend(
            topic
                .configs
                .iter()
                .map(|(key, value)| MetadataRecord::Config {
                    resource: ConfigResource::Topic(name.clone()),
                    name: key.clone(),
                    value: Some(value.clone()),
                }),
        );
        for (index, replicas) in assignments.into_iter().enumerate() {
            records.push(new_partition(image, topic_id, index, replicas));
        }
        Ok(ItemSuccess {
            records,
            topic_id: Some(topic_id),
        })
    }

    fn draw_topic_id(
        &mut self,
        image: &MetadataImage,
        name: &str,
        new_ids: &BTreeSet<TopicId>,
    ) -> Result<TopicId, (i16, String)> {
        for attempt in 0..TOPIC_ID_DRAWS_MAX {
            let id = match &mut self.id_source {
                Some(source) => source(),
                None => derived_topic_id(image.last_applied_index, name, attempt),
            };
            if usable_topic_id(&id) && !image.topics.contains_key(&id) && !new_ids.contains(&id) {
                return Ok(id);
            }
        }
        fail(
            codes::UNKNOWN_SERVER_ERROR,
            format!("no unused topic id after {TOPIC_ID_DRAWS_MAX} draws"),
        )
    }
}

impl Controller {
    /// Kafka's AlterPartition (`ReplicationControlManager.alterPartition`),
    /// checked in Kafka's order, each partition answered on its own:
    /// - an unknown topic id: UNKNOWN_TOPIC_ID; an unknown partition:
    ///   UNKNOWN_TOPIC_OR_PARTITION;
    /// - a leader or partition epoch newer than ours: NOT_CONTROLLER (we are
    ///   behind, or not the controller; the sender retries);
    /// - an older leader epoch: FENCED_LEADER_EPOCH;
    /// - a sender that is not the leader: INVALID_REQUEST (Kafka's answer;
    ///   not NOT_LEADER_OR_FOLLOWER);
    /// - an older partition epoch: INVALID_UPDATE_VERSION;
    /// - an ISR that names a broker twice, a non-replica or a negative id,
    ///   or that lacks the leader (so an empty one too): INVALID_REQUEST;
    /// - an ISR naming a broker that is unregistered, fenced or shutting
    ///   down: INELIGIBLE_REPLICA.
    ///
    /// A valid new ISR equal to the current one writes nothing. Each change
    /// is one `PartitionChange { isr }`; a partition named twice is checked
    /// the second time against the state the first change leaves. Past
    /// [`RECORDS_PER_REQUEST_MAX`] changes, further ones are answered
    /// OPERATION_NOT_ATTEMPTED (send them again).
    fn alter_partition(
        &mut self,
        image: &MetadataImage,
        broker_id: BrokerId,
        broker_epoch: i64,
        items: &[AlterPartitionItem],
    ) -> Result<Decision, ControllerError> {
        let broker = image
            .broker(broker_id)
            .ok_or(ControllerError::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id,
                given: broker_epoch,
                current: broker.broker_epoch,
            });
        }
        let live = self.live_set(image);
        let mut changed: BTreeMap<(TopicId, i32), PartitionState> = BTreeMap::new();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let key = (item.topic_id, item.partition);
            let current = changed
                .get(&key)
                .or_else(|| image.partition(&item.topic_id, item.partition));
            let answer = |error_code: i16, state: Option<&PartitionState>| AlterPartitionResult {
                topic_id: item.topic_id,
                partition: item.partition,
                error_code,
                leader: state.map_or(NO_LEADER, |s| s.leader),
                leader_epoch: state.map_or(-1, |s| s.leader_epoch),
                partition_epoch: state.map_or(-1, |s| s.partition_epoch),
                isr: state.map_or_else(Vec::new, |s| s.isr.clone()),
            };
            let Some(state) = current else {
                let code = if image.topic(&item.topic_id).is_none() {
                    codes::UNKNOWN_TOPIC_ID
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                };
                results.push(answer(code, None));
                continue;
            };
            let code = check_alter_partition(image, &live, broker_id, state, item);
            if code != codes::NONE || item.new_isr == state.isr {
                results.push(answer(code, Some(state)));
                continue;
            }
            if records.len() >= RECORDS_PER_REQUEST_MAX {
                results.push(answer(codes::OPERATION_NOT_ATTEMPTED, Some(state)));
                continue;
            }
            let after = changed_state(state, None, Some(&item.new_isr));
            records.push(MetadataRecord::PartitionChange {
                topic_id: item.topic_id,
                partition: item.partition,
                leader: None,
                isr: Some(item.new_isr.clone()),
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            });
            results.push(answer(codes::NONE, Some(&after)));
            changed.insert(key, after);
        }
        Ok(Decision {
            records,
            response: ControllerResponse::AlterPartition(results),
        })
    }

    /// Kafka's AlterPartitionReassignments (`ReplicationControlManager.
    /// alterPartitionReassignments`), per partition in request order:
    /// an unknown topic or partition is UNKNOWN_TOPIC_OR_PARTITION; a
    /// cancellation (`None`) without a running reassignment
    /// NO_REASSIGNMENT_IN_PROGRESS, one that would need an unclean election
    /// INVALID_REPLICA_ASSIGNMENT; a target that is empty, names a broker
    /// twice or one that is not registered INVALID_REPLICA_ASSIGNMENT (Kafka's
    /// `validateManualPartitionAssignment`); a target of another size when
    /// `allow_replication_factor_change` is false (KIP-860), or (Weir's rule,
    /// Kafka lets it through) smaller than the topic's `min.insync.replicas`,
    /// INVALID_REPLICATION_FACTOR. A refused partition changes nothing; the
    /// others go ahead. A reassignment of a partition already being
    /// reassigned replaces the running one, as Kafka does.
    fn alter_partition_reassignments(
        &mut self,
        image: &MetadataImage,
        topics: &[ReassignTopic],
        allow_replication_factor_change: bool,
    ) -> Decision {
        let live = self.live_set(image);
        let mut changed: BTreeMap<(TopicId, i32), PartitionState> = BTreeMap::new();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for (partition, target) in &topic.partitions {
                let outcome = (|| -> Result<(), (i16, String)> {
                    let Some(topic_image) = image.topic_by_name(&topic.name) else {
                        return fail(
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("Unable to find a topic named {}.", topic.name),
                        );
                    };
                    let key = (topic_image.topic_id, *partition);
                    let Some(state) = changed
                        .get(&key)
                        .or_else(|| topic_image.partitions.get(partition))
                    else {
                        return fail(
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("Unable to find partition {}:{partition}.", topic.name),
                        );
                    };
                    let change = match target {
                        None => reassignment::cancel(state, &live).map_err(|e| match e {
                            reassignment::CancelError::NotReassigning => (
                                codes::NO_REASSIGNMENT_IN_PROGRESS,
                                "No partition reassignment is in progress.".to_string(),
                            ),
                            reassignment::CancelError::Unclean => (
                                codes::INVALID_REPLICA_ASSIGNMENT,
                                format!(
                                    "Unable to revert partition assignment for {}:{partition} because it would require an unclean leader election.",
                                    topic.name
                                ),
                            ),
                        })?,
                        Some(target) => {
                            check_reassignment_target(image, target)?;
                            let current_rf = state.target_replicas().len();
                            if !allow_replication_factor_change && target.len() != current_rf {
                                return fail(
                                    codes::INVALID_REPLICATION_FACTOR,
                                    format!(
                                        "The replication factor is changed from {current_rf} to {} but allowReplicationFactorChange is false.",
                                        target.len()
                                    ),
                                );
                            }
                            let min_isr = min_insync_replicas(image, &topic.name);
                            if target.len() < min_isr {
                                return fail(
                                    codes::INVALID_REPLICATION_FACTOR,
                                    format!(
                                        "{} replicas are fewer than min.insync.replicas={min_isr} of topic {}: acks=all writes would fail.",
                                        target.len(),
                                        topic.name
                                    ),
                                );
                            }
                            reassignment::start(state, target, &live)
                        }
                    };
                    if change.is_empty() {
                        return Ok(());
                    }
                    if records.len() >= RECORDS_PER_REQUEST_MAX {
                        return fail(
                            codes::POLICY_VIOLATION,
                            format!(
                                "A request may change at most {RECORDS_PER_REQUEST_MAX} partitions."
                            ),
                        );
                    }
                    let after = change.applied_to(state);
                    records.push(change.record(key.0, *partition));
                    changed.insert(key, after);
                    Ok(())
                })();
                let (error_code, message) = match outcome {
                    Ok(()) => (codes::NONE, None),
                    Err((code, message)) => (code, Some(message)),
                };
                partitions.push(PartitionElectionResult {
                    partition: *partition,
                    error_code,
                    message,
                });
            }
            results.push(TopicElectionResult {
                topic: topic.name.clone(),
                partitions,
            });
        }
        Decision {
            records,
            response: ControllerResponse::Reassignments(results),
        }
    }

    /// Kafka's ElectLeaders (`ReplicationControlManager.electLeaders`).
    /// Preferred: ELECTION_NOT_NEEDED when the first replica leads already,
    /// else it leads if it is a live ISR member, else
    /// PREFERRED_LEADER_NOT_AVAILABLE. Unclean: ELECTION_NOT_NEEDED when
    /// the partition has a leader, else a live ISR member leads if there is
    /// one, else the first live replica (an unclean election: see
    /// [`Election::unclean`], it may lose acknowledged records), else
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE. Unknown topics and partitions:
    /// UNKNOWN_TOPIC_OR_PARTITION. An unknown election type refuses the
    /// whole request; so does one that would write more than
    /// [`RECORDS_PER_REQUEST_MAX`] records (POLICY_VIOLATION, nothing
    /// elected), as Kafka's bounded record list does.
    fn elect_leaders(
        &mut self,
        image: &MetadataImage,
        election_type: i8,
        partitions: Option<&[TopicPartitions]>,
    ) -> Result<Decision, ControllerError> {
        let unclean = match election_type {
            election_type::PREFERRED => false,
            election_type::UNCLEAN => true,
            other => {
                return Err(ControllerError::Invalid(format!(
                    "Unknown election type {other}"
                )));
            }
        };
        let election = Election {
            preferred: !unclean,
            unclean,
        };
        let live = self.live_set(image);
        let mut changed: BTreeMap<(TopicId, i32), PartitionState> = BTreeMap::new();
        let mut records = Vec::new();
        let mut too_many = false;
        let mut elect_one = |topic: &str, partition: i32| -> (i16, Option<String>) {
            let Some(topic_image) = image.topic_by_name(topic) else {
                return (
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(format!("No such topic as {topic}")),
                );
            };
            let key = (topic_image.topic_id, partition);
            let Some(state) = changed.get(&key).or(topic_image.partitions.get(&partition)) else {
                return (
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(format!("No such partition as {topic}-{partition}")),
                );
            };
            let not_needed = if unclean {
                state.leader != NO_LEADER
            } else {
                state.replicas.first() == Some(&state.leader)
            };
            if not_needed {
                return (codes::ELECTION_NOT_NEEDED, None);
            }
            match election::elect(state, &live, election) {
                Some(_) if records.len() >= RECORDS_PER_REQUEST_MAX => {
                    too_many = true;
                    (codes::POLICY_VIOLATION, None)
                }
                Some(elected) => {
                    let after = changed_state(state, elected.leader, elected.isr.as_deref());
                    records.push(elected.record(key.0, partition));
                    changed.insert(key, after);
                    (codes::NONE, None)
                }
                None if unclean => (codes::ELIGIBLE_LEADERS_NOT_AVAILABLE, None),
                None => (codes::PREFERRED_LEADER_NOT_AVAILABLE, None),
            }
        };
        let mut results = Vec::new();
        match partitions {
            Some(topics) => {
                for topic in topics {
                    let partitions = topic
                        .partitions
                        .iter()
                        .map(|p| {
                            let (error_code, message) = elect_one(&topic.topic, *p);
                            PartitionElectionResult {
                                partition: *p,
                                error_code,
                                message,
                            }
                        })
                        .collect();
                    results.push(TopicElectionResult {
                        topic: topic.topic.clone(),
                        partitions,
                    });
                }
            }
            None => {
                for (name, topic_id) in &image.topic_ids_by_name {
                    let indexes: Vec<i32> = image
                        .topic(topic_id)
                        .map(|t| t.partitions.keys().copied().collect())
                        .unwrap_or_default();
                    let partitions = indexes
                        .into_iter()
                        .filter_map(|p| {
                            let (error_code, message) = elect_one(name, p);
                            (error_code != codes::ELECTION_NOT_NEEDED).then_some(
                                PartitionElectionResult {
                                    partition: p,
                                    error_code,
                                    message,
                                },
                            )
                        })
                        .collect();
                    results.push(TopicElectionResult {
                        topic: name.clone(),
                        partitions,
                    });
                }
            }
        }
        if too_many {
            return Ok(Decision {
                records: Vec::new(),
                response: ControllerResponse::ElectLeaders {
                    error_code: codes::POLICY_VIOLATION,
                    results: Vec::new(),
                },
            });
        }
        Ok(Decision {
            records,
            response: ControllerResponse::ElectLeaders {
                error_code: codes::NONE,
                results,
            },
        })
    }
}

/// Records completing every reassignment that may complete (at most
/// `records_max`; the next tick does the rest), skipping partitions `skip`
/// already changes.
fn reassignment_completions(
    image: &MetadataImage,
    live: &BTreeSet<BrokerId>,
    records_max: usize,
    skip: &BTreeSet<(TopicId, i32)>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (partition, state) in &topic.partitions {
            if records.len() >= records_max {
                return records;
            }
            if skip.contains(&(topic.topic_id, *partition)) {
                continue;
            }
            if let Some(done) = reassignment::completion(state, live) {
                records.push(done.record(topic.topic_id, *partition));
            }
        }
    }
    records
}

/// The `min.insync.replicas` the controller can see for a topic: its
/// override, else the cluster-wide dynamic default, else Kafka's default of
/// 1 (a broker's static setting is not in the image).
fn min_insync_replicas(image: &MetadataImage, topic: &str) -> usize {
    image
        .configs_of(&ConfigResource::Topic(topic.to_string()))
        .and_then(|c| c.get(MIN_INSYNC_REPLICAS))
        .or_else(|| {
            image
                .configs_of(&ConfigResource::Broker(None))
                .and_then(|c| c.get(MIN_INSYNC_REPLICAS))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
}

/// AlterPartition's checks on one partition that exists, in Kafka's order
/// (`validateAlterPartitionData`). `NONE` when the change may be written.
fn check_alter_partition(
    image: &MetadataImage,
    live: &BTreeSet<BrokerId>,
    broker_id: BrokerId,
    state: &PartitionState,
    item: &AlterPartitionItem,
) -> i16 {
    if item.leader_epoch > state.leader_epoch || item.partition_epoch > state.partition_epoch {
        return codes::NOT_CONTROLLER;
    }
    if item.leader_epoch < state.leader_epoch {
        return codes::FENCED_LEADER_EPOCH;
    }
    if broker_id != state.leader {
        return codes::INVALID_REQUEST;
    }
    if item.partition_epoch < state.partition_epoch {
        return codes::INVALID_UPDATE_VERSION;
    }
    let mut seen = BTreeSet::new();
    let valid = item
        .new_isr
        .iter()
        .all(|r| *r >= 0 && state.replicas.contains(r) && seen.insert(*r));
    if !valid || !item.new_isr.contains(&state.leader) {
        return codes::INVALID_REQUEST;
    }
    let eligible = item
        .new_isr
        .iter()
        .all(|r| image.broker(*r).is_some() && live.contains(r));
    if !eligible {
        return codes::INELIGIBLE_REPLICA;
    }
    codes::NONE
}

/// A partition's state after a `PartitionChange` with these fields, as the
/// image applies it: every change bumps the partition epoch, naming a
/// leader bumps the leader epoch.
fn changed_state(
    state: &PartitionState,
    leader: Option<BrokerId>,
    isr: Option<&[BrokerId]>,
) -> PartitionState {
    PartitionState {
        replicas: state.replicas.clone(),
        isr: isr.map_or_else(|| state.isr.clone(), <[BrokerId]>::to_vec),
        leader: leader.unwrap_or(state.leader),
        leader_epoch: if leader.is_some() {
            state.leader_epoch.saturating_add(1)
        } else {
            state.leader_epoch
        },
        partition_epoch: state.partition_epoch.saturating_add(1),
        adding_replicas: state.adding_replicas.clone(),
        removing_replicas: state.removing_replicas.clone(),
    }
}

/// A reassignment's target, checked as Kafka's
/// `validateManualPartitionAssignment`: not empty, no broker twice, every
/// broker registered (fenced ones too: a stopped broker may be a target).
fn check_reassignment_target(
    image: &MetadataImage,
    target: &[BrokerId],
) -> Result<(), (i16, String)> {
    if target.is_empty() {
        return fail(
            codes::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes an empty replica list.",
        );
    }
    let mut seen = BTreeSet::new();
    for broker in target {
        if !seen.insert(*broker) {
            return fail(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "The manual partition assignment includes the broker {broker} more than once."
                ),
            );
        }
        if image.broker(*broker).is_none() {
            return fail(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "The manual partition assignment includes broker {broker}, but no such broker is registered."
                ),
            );
        }
    }
    Ok(())
}

/// Unfenced brokers with their racks, in id order: where new replicas may go.
/// The brokers new replicas may go to: live and not decommissioned.
fn live_placement(image: &MetadataImage) -> Vec<(BrokerId, Option<String>)> {
    image
        .live_brokers()
        .filter(|b| !image.is_decommissioned(b.broker_id))
        .map(|b| (b.broker_id, b.rack.clone()))
        .collect()
}

/// A new partition's record: ISR is the replicas that are live (placement
/// uses only live brokers, so all of them then), the leader the first of those.
fn new_partition(
    image: &MetadataImage,
    topic_id: TopicId,
    index: usize,
    replicas: Vec<BrokerId>,
) -> MetadataRecord {
    let isr: Vec<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|r| image.is_live(*r))
        .collect();
    MetadataRecord::Partition {
        topic_id,
        partition: i32::try_from(index).unwrap_or(i32::MAX),
        leader: isr.first().copied().unwrap_or(NO_LEADER),
        replicas,
        isr,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

/// Kafka's checks on a manual assignment (`validateManualPartitionAssignment`),
/// plus one: some replica must be live to lead.
fn check_manual_assignment(
    image: &MetadataImage,
    replicas: &[BrokerId],
    replication_factor: usize,
) -> Result<(), (i16, String)> {
    if replicas.is_empty() {
        return fail(
            codes::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes an empty replica list.",
        );
    }
    let mut seen = BTreeSet::new();
    for broker in replicas {
        if image.broker(*broker).is_none() {
            return fail(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "The manual partition assignment includes broker {broker}, but no such broker is registered."
                ),
            );
        }
        if !seen.insert(*broker) {
            return fail(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "The manual partition assignment includes the broker {broker} more than once."
                ),
            );
        }
    }
    if replicas.len() != replication_factor {
        return fail(
            codes::INVALID_REPLICA_ASSIGNMENT,
            format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with other partitions, which have {replication_factor} replica(s).",
                replicas.len()
            ),
        );
    }
    if !replicas.iter().any(|r| image.is_live(*r)) {
        return fail(
            codes::INVALID_REPLICA_ASSIGNMENT,
            format!("All brokers in the manual partition assignment {replicas:?} are fenced."),
        );
    }
    Ok(())
}

fn placement_failure<T>(error: PlacementError) -> Result<T, (i16, String)> {
    fail(codes::INVALID_REPLICATION_FACTOR, error.to_string())
}

fn too_many_partitions(partitions: usize) -> String {
    format!(
        "{partitions} partitions in one request is over the limit of {RECORDS_PER_REQUEST_MAX} records per request"
    )
}

/// Where striping starts for a topic: from its (random) id, so that the
/// first partitions of many topics do not all land on the same broker.
fn start_offset(topic_id: &TopicId) -> usize {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&topic_id[..8]);
    // Truncation is fine: any value is a valid starting point.
    u64::from_le_bytes(bytes) as usize
}

/// Ids Kafka never hands out (`Uuid.randomUuid`): zero, the metadata topic's
/// id (1), and ids whose base64 text starts with '-' (tools take it for a flag).
fn usable_topic_id(id: &TopicId) -> bool {
    let mut metadata_topic_id = [0u8; 16];
    metadata_topic_id[15] = 1;
    *id != [0u8; 16] && *id != metadata_topic_id && id[0] >> 2 != 62
}

/// A topic id from the log position and the name, for controllers built
/// without an id source. Two topics made at the same log position differ
/// by name; a retry differs by `attempt`.
fn derived_topic_id(last_applied_index: Option<u64>, name: &str, attempt: usize) -> TopicId {
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for byte in last_applied_index
        .map_or(u64::MAX, |i| i)
        .to_le_bytes()
        .iter()
        .chain(name.as_bytes())
        .chain(&(attempt as u64).to_le_bytes())
    {
        seed = (seed ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&splitmix64(seed).to_le_bytes());
    id[8..].copy_from_slice(&splitmix64(seed ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes());
    id
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Names that appear more than once (Kafka answers each with INVALID_REQUEST).
fn duplicated<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            twice.insert(name);
        }
    }
    twice
}

/// Turns per-item outcomes into a decision: successes contribute records
/// (none when validating only), and a request whose records would pass
/// [`RECORDS_PER_REQUEST_MAX`] fails whole, as Kafka's does.
fn finish_items(outcomes: Vec<(String, ItemOutcome)>, validate_only: bool) -> Decision {
    let record_count: usize = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .map(|s| s.records.len())
        .sum();
    let too_large = record_count > RECORDS_PER_REQUEST_MAX;
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(outcomes.len());
    for (name, outcome) in outcomes {
        let result = match outcome {
            Ok(_) if too_large => ItemResult {
                name,
                error_code: codes::POLICY_VIOLATION,
                message: Some(format!(
                    "Unable to perform excessively large batch operation: {record_count} records, the limit is {RECORDS_PER_REQUEST_MAX}."
                )),
                topic_id: None,
            },
            Ok(success) => {
                if !validate_only {
                    records.extend(success.records);
                }
                ItemResult {
                    name,
                    error_code: codes::NONE,
                    message: None,
                    topic_id: success.topic_id,
                }
            }
            Err((error_code, message)) => ItemResult {
                name,
                error_code,
                message: Some(message),
                topic_id: None,
            },
        };
        results.push(result);
    }
    Decision {
        records,
        response: ControllerResponse::Items(results),
    }
}

fn delete_topics(image: &MetadataImage, names: &[String]) -> Decision {
    let duplicates = duplicated(names.iter().map(String::as_str));
    let outcomes = names
        .iter()
        .map(|name| {
            let outcome = if duplicates.contains(name.as_str()) {
                fail(codes::INVALID_REQUEST, "Duplicate topic name.")
            } else {
                match image.topic_by_name(name) {
                    None => fail(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic '{name}' does not exist."),
                    ),
                    Some(topic) => Ok(ItemSuccess {
                        records: vec![MetadataRecord::RemoveTopic {
                            topic_id: topic.topic_id,
                        }],
                        topic_id: Some(topic.topic_id),
                    }),
                }
            };
            (name.clone(), outcome)
        })
        .collect();
    finish_items(outcomes, false)
}

fn create_partitions(
    image: &MetadataImage,
    topics: &[NewPartitions],
    validate_only: bool,
) -> Decision {
    let duplicates = duplicated(topics.iter().map(|t| t.name.as_str()));
    let live = live_placement(image);
    let outcomes = topics
        .iter()
        .map(|request| {
            let outcome = if duplicates.contains(request.name.as_str()) {
                fail(codes::INVALID_REQUEST, "Duplicate topic name.")
            } else {
                create_partitions_of(image, request, &live)
            };
            (request.name.clone(), outcome)
        })
        .collect();
    finish_items(outcomes, validate_only)
}

fn create_partitions_of(
    image: &MetadataImage,
    request: &NewPartitions,
    live: &[(BrokerId, Option<String>)],
) -> ItemOutcome {
    let name = &request.name;
    let Some(topic) = image.topic_by_name(name) else {
        return fail(
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Topic '{name}' does not exist."),
        );
    };
    let current = topic.partitions.len();
    let total = usize::try_from(request.total).unwrap_or(0);
    if total == current {
        return fail(
            codes::INVALID_PARTITIONS,
            format!("Topic already has {current} partition(s)."),
        );
    }
    if total < current {
        return fail(
            codes::INVALID_PARTITIONS,
            format!(
                "The topic {name} currently has {current} partition(s); {} would not be an increase.",
                request.total
            ),
        );
    }
    let additional = total - current;
    if additional > RECORDS_PER_REQUEST_MAX {
        return fail(codes::POLICY_VIOLATION, too_many_partitions(additional));
    }
    // A topic always has partition 0 (Topic and Partition records of a
    // create are committed together); its replica count is the topic's RF.
    let replication_factor = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len());
    let assignments = match &request.assignments {
        Some(manual) => {
            if manual.len() != additional {
                return fail(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                        manual.len()
                    ),
                );
            }
            for replicas in manual {
                check_manual_assignment(image, replicas, replication_factor)?;
            }
            manual.clone()
        }
        None => place_replicas(
            live,
            start_offset(&topic.topic_id).wrapping_add(current),
            additional,
            replication_factor,
        )
        .or_else(placement_failure)?,
    };
    let records = assignments
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| new_partition(image, topic.topic_id, current + i, replicas))
        .collect();
    Ok(ItemSuccess {
        records,
        topic_id: Some(topic.topic_id),
    })
}

/// Incremental config changes, one result per resource in order of first
/// appearance. A resource is changed whole or not at all. Values are not
/// checked here: the broker knows the configs and validates them before it
/// forwards the request.
fn alter_configs(
    image: &MetadataImage,
    changes: &[(ConfigResource, String, Option<String>)],
    validate_only: bool,
) -> Decision {
    let mut order: Vec<&ConfigResource> = Vec::new();
    let mut by_resource: BTreeMap<&ConfigResource, Vec<(&String, &Option<String>)>> =
        BTreeMap::new();
    for (resource, name, value) in changes {
        let entries = by_resource.entry(resource).or_default();
        if entries.is_empty() {
            order.push(resource);
        }
        entries.push((name, value));
    }
    let outcomes = order
        .into_iter()
        .map(|resource| {
            let entries = &by_resource[resource];
            (
                resource_name(resource),
                alter_resource(image, resource, entries),
            )
        })
        .collect();
    finish_items(outcomes, validate_only)
}

fn alter_resource(
    image: &MetadataImage,
    resource: &ConfigResource,
    entries: &[(&String, &Option<String>)],
) -> ItemOutcome {
    match resource {
        ConfigResource::Topic(topic) if image.topic_by_name(topic).is_none() => {
            return fail(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic '{topic}' does not exist."),
            );
        }
        ConfigResource::Broker(Some(id)) if *id < 0 => {
            return fail(
                codes::INVALID_REQUEST,
                format!("broker id {id} is negative"),
            );
        }
        ConfigResource::Group(group) if group.is_empty() => {
            return fail(codes::INVALID_REQUEST, "the group id is empty");
        }
        _ => {}
    }
    let mut seen = BTreeSet::new();
    for (name, _) in entries {
        if name.is_empty() {
            return fail(codes::INVALID_CONFIG, "a config name is empty");
        }
        if !seen.insert(*name) {
            return fail(
                codes::INVALID_REQUEST,
                format!("Error due to duplicate config keys: '{name}'"),
            );
        }
    }
    let records = entries
        .iter()
        .map(|(name, value)| MetadataRecord::Config {
            resource: resource.clone(),
            name: (*name).clone(),
            value: (*value).clone(),
        })
        .collect();
    Ok(ItemSuccess {
        records,
        topic_id: None,
    })
}

/// A resource's name as Kafka's DescribeConfigs/AlterConfigs carry it: the
/// broker-wide default is the empty name.
fn resource_name(resource: &ConfigResource) -> String {
    match resource {
        ConfigResource::Topic(name) | ConfigResource::Group(name) => name.clone(),
        ConfigResource::Broker(Some(id)) => id.to_string(),
        ConfigResource::Broker(None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election;
    use crate::testkit::{SESSION_TIMEOUT_MS, Sim, config, endpoint};

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            assignments: None,
            configs: BTreeMap::new(),
        }
    }

    fn create(sim: &mut Sim, topics: Vec<NewTopic>) -> Vec<ItemResult> {
        items(sim.request(ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        }))
    }

    fn items(response: Result<ControllerResponse, ControllerError>) -> Vec<ItemResult> {
        match response {
            Ok(ControllerResponse::Items(items)) => items,
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn codes_of(results: &[ItemResult]) -> Vec<i16> {
        results.iter().map(|r| r.error_code).collect()
    }

    fn cluster(brokers: &[BrokerId]) -> Sim {
        let mut sim = Sim::new();
        for id in brokers {
            sim.add_broker(*id, None);
        }
        sim
    }

    fn state(sim: &Sim, topic: &str, partition: i32) -> crate::image::PartitionState {
        sim.image.topic_by_name(topic).unwrap().partitions[&partition].clone()
    }

    #[test]
    fn a_new_broker_starts_fenced_and_is_unfenced_once_it_has_applied_its_registration() {
        let mut sim = Sim::new();
        let epoch = sim.register(1, None).unwrap();
        assert!(sim.image.broker(1).unwrap().fenced);
        let behind = sim.request(ControllerRequest::BrokerHeartbeat {
            broker_id: 1,
            broker_epoch: epoch,
            applied_index: epoch as u64 - 1,
            want_shutdown: false,
        });
        assert_eq!(
            behind.unwrap(),
            ControllerResponse::BrokerHeartbeat {
                fenced: true,
                should_shut_down: false
            }
        );
        let caught_up = sim.request(ControllerRequest::BrokerHeartbeat {
            broker_id: 1,
            broker_epoch: epoch,
            applied_index: epoch as u64,
            want_shutdown: false,
        });
        assert_eq!(
            caught_up.unwrap(),
            ControllerResponse::BrokerHeartbeat {
                fenced: false,
                should_shut_down: false
            }
        );
        assert!(sim.image.is_live(1));
    }

    #[test]
    fn a_heartbeat_with_a_stale_epoch_or_from_an_unknown_broker_is_refused() {
        let mut sim = cluster(&[1]);
        let current = sim.image.broker(1).unwrap().broker_epoch;
        let stale = sim.request(ControllerRequest::BrokerHeartbeat {
            broker_id: 1,
            broker_epoch: current - 1,
            applied_index: 100,
            want_shutdown: false,
        });
        assert_eq!(
            stale,
            Err(ControllerError::StaleBrokerEpoch {
                broker_id: 1,
                given: current - 1,
                current
            })
        );
        assert_eq!(
            sim.heartbeat(7, false),
            Err(ControllerError::UnknownBroker(7))
        );
    }

    #[test]
    fn a_broker_id_held_by_a_live_process_is_refused_to_another_incarnation() {
        let mut sim = cluster(&[1]);
        let other_process = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [99; 16],
            endpoints: endpoint(1),
            rack: None,
        };
        assert_eq!(
            sim.request(other_process.clone()),
            Err(ControllerError::DuplicateBrokerId(1))
        );
        // The same process registering again is let through.
        let again = sim.register(1, None).unwrap();
        assert_eq!(sim.image.broker(1).unwrap().broker_epoch, again);
        // Once the holder is silent past the session, the id is free again.
        sim.heartbeat(1, false).unwrap();
        sim.now_ms += SESSION_TIMEOUT_MS + 1;
        assert!(sim.request(other_process.clone()).is_ok());
        assert_eq!(sim.image.broker(1).unwrap().incarnation_id, [99; 16]);
    }

    #[test]
    fn a_new_controller_lets_a_restarted_incarnation_in_at_once() {
        // kill -9 of a single node: its registration is unfenced in the
        // image, but the controller that comes up with it never heard from
        // the old process, so the restart must not wait out a session.
        let mut sim = cluster(&[1]);
        sim.controller = Controller::new(config());
        let restarted = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [98; 16],
            endpoints: endpoint(1),
            rack: None,
        };
        assert!(sim.request(restarted).is_ok());
        assert_eq!(sim.image.broker(1).unwrap().incarnation_id, [98; 16]);
        sim.heartbeat(1, false).unwrap();
        assert!(!sim.image.broker(1).unwrap().fenced);
        // Now that this controller hears the new incarnation, a third is refused.
        let third = ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [97; 16],
            endpoints: endpoint(1),
            rack: None,
        };
        assert_eq!(
            sim.request(third),
            Err(ControllerError::DuplicateBrokerId(1))
        );
    }

    #[test]
    fn a_fenced_registration_does_not_hold_its_id() {
        let mut sim = Sim::new();
        sim.register(1, None).unwrap();
        let other = sim.request(ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [99; 16],
            endpoints: endpoint(1),
            rack: None,
        });
        assert!(other.is_ok(), "{other:?}");
    }

    #[test]
    fn a_silent_broker_is_fenced_and_its_partitions_move_to_the_next_live_isr_member() {
        let mut sim = cluster(&[1, 2, 3]);
        let results = create(
            &mut sim,
            vec![NewTopic {
                assignments: Some(BTreeMap::from([(0, vec![1, 2, 3]), (1, vec![1, 3, 2])])),
                ..new_topic("replicated", -1, -1)
            }],
        );
        assert_eq!(codes_of(&results), vec![0]);
        create(
            &mut sim,
            vec![NewTopic {
                assignments: Some(BTreeMap::from([(0, vec![1])])),
                ..new_topic("single", -1, -1)
            }],
        );
        sim.now_ms += SESSION_TIMEOUT_MS / 2;
        sim.heartbeat(2, false).unwrap();
        sim.heartbeat(3, false).unwrap();
        assert!(sim.tick().is_empty(), "nobody is silent yet");
        sim.now_ms += SESSION_TIMEOUT_MS / 2 + 1;
        let records = sim.tick();
        assert!(matches!(
            records.last(),
            Some(MetadataRecord::FenceBroker { broker_id: 1, .. })
        ));
        assert!(!sim.image.is_live(1));
        let (p0, p1, single) = (
            state(&sim, "replicated", 0),
            state(&sim, "replicated", 1),
            state(&sim, "single", 0),
        );
        assert_eq!(
            (p0.leader, p0.leader_epoch),
            (2, 1),
            "replica order: 2 before 3"
        );
        assert_eq!((p1.leader, p1.leader_epoch), (3, 1));
        assert_eq!(p0.isr, vec![2, 3], "a fenced broker leaves the ISR");
        assert_eq!(p1.isr, vec![3, 2]);
        assert_eq!(
            (p0.partition_epoch, p1.partition_epoch),
            (1, 1),
            "one change each"
        );
        assert_eq!((single.leader, single.leader_epoch), (NO_LEADER, 1));
        assert_eq!(single.isr, vec![1], "the last member stays");
        assert_eq!(sim.image.offline_partitions().count(), 1);

        // Broker 1 comes back: the offline partition is its again; the others stay put.
        let response = sim.heartbeat(1, false).unwrap();
        assert_eq!(
            response,
            ControllerResponse::BrokerHeartbeat {
                fenced: false,
                should_shut_down: false
            }
        );
        let single = state(&sim, "single", 0);
        assert_eq!((single.leader, single.leader_epoch), (1, 2));
        let p0 = state(&sim, "replicated", 0);
        assert_eq!(
            (p0.leader, p0.isr),
            (2, vec![2, 3]),
            "it rejoins the ISR only through its leader's AlterPartition"
        );
        assert_eq!(sim.image.offline_partitions().count(), 0);
    }

    #[test]
    fn a_new_controller_gives_every_unfenced_broker_a_full_session() {
        let mut sim = cluster(&[1, 2]);
        sim.now_ms += 10 * SESSION_TIMEOUT_MS;
        sim.controller = Controller::new(config());
        assert!(sim.tick().is_empty());
        sim.now_ms += SESSION_TIMEOUT_MS;
        sim.heartbeat(2, false).unwrap();
        sim.now_ms += 1;
        let fenced: Vec<_> = sim
            .tick()
            .into_iter()
            .filter(|r| matches!(r, MetadataRecord::FenceBroker { .. }))
            .collect();
        assert_eq!(fenced.len(), 1);
        assert!(!sim.image.is_live(1) && sim.image.is_live(2));
    }

    #[test]
    fn a_clean_shutdown_fences_at_once_and_moves_leadership() {
        let mut sim = cluster(&[1, 2]);
        create(
            &mut sim,
            vec![NewTopic {
                assignments: Some(BTreeMap::from([(0, vec![1, 2])])),
                ..new_topic("t", -1, -1)
            }],
        );
        let response = sim.heartbeat(1, true).unwrap();
        assert_eq!(
            response,
            ControllerResponse::BrokerHeartbeat {
                fenced: true,
                should_shut_down: true
            }
        );
        assert!(!sim.image.is_live(1));
        assert_eq!(state(&sim, "t", 0).leader, 2);
        assert_eq!(state(&sim, "t", 0).isr, vec![2], "and leaves the ISR");
        // Asking again changes nothing.
        let index = sim.next_index;
        sim.heartbeat(1, true).unwrap();
        assert_eq!(sim.next_index, index, "no records");
    }

    #[test]
    fn a_restarted_leader_gives_up_leadership_until_it_is_unfenced() {
        let mut sim = cluster(&[1, 2]);
        let results = create(
            &mut sim,
            vec![
                NewTopic {
                    assignments: Some(BTreeMap::from([(0, vec![1, 2])])),
                    ..new_topic("t", -1, -1)
                },
                NewTopic {
                    assignments: Some(BTreeMap::from([(0, vec![1])])),
                    ..new_topic("u", -1, -1)
                },
            ],
        );
        assert_eq!(codes_of(&results), vec![0, 0]);
        sim.request(ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [1; 16],
            endpoints: endpoint(1),
            rack: None,
        })
        .unwrap();
        assert!(!sim.image.is_live(1));
        assert_eq!(state(&sim, "t", 0).leader, 2);
        assert_eq!(state(&sim, "u", 0).leader, NO_LEADER);
        sim.heartbeat(1, false).unwrap();
        assert_eq!(state(&sim, "u", 0).leader, 1);
    }

    #[test]
    fn create_topics_places_partitions_and_writes_topic_configs_and_partitions() {
        let mut sim = cluster(&[1, 2, 3]);
        let mut topic = new_topic("orders", 6, 2);
        topic
            .configs
            .insert("cleanup.policy".into(), "compact".into());
        let decision = sim
            .controller
            .handle(
                &sim.image,
                sim.now_ms,
                &ControllerRequest::CreateTopics {
                    topics: vec![topic],
                    validate_only: false,
                },
            )
            .unwrap();
        let kinds: Vec<&str> = decision
            .records
            .iter()
            .map(|r| match r {
                MetadataRecord::Topic { .. } => "topic",
                MetadataRecord::Config { .. } => "config",
                MetadataRecord::Partition { .. } => "partition",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "topic",
                "config",
                "partition",
                "partition",
                "partition",
                "partition",
                "partition",
                "partition"
            ]
        );
        let ControllerResponse::Items(results) = &decision.response else {
            panic!()
        };
        let topic_id = results[0].topic_id.expect("an id");
        sim.commit(&decision.records).unwrap();
        let image_topic = sim.image.topic_by_name("orders").unwrap();
        assert_eq!(image_topic.topic_id, topic_id);
        let mut leaders = BTreeMap::new();
        for state in image_topic.partitions.values() {
            assert_eq!(state.replicas.len(), 2);
            assert_eq!(state.isr, state.replicas);
            assert_eq!(state.leader, state.replicas[0]);
            assert_eq!((state.leader_epoch, state.partition_epoch), (0, 0));
            *leaders.entry(state.leader).or_insert(0) += 1;
        }
        assert_eq!(
            leaders.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "leaders spread evenly"
        );
        assert_eq!(
            sim.image
                .configs_of(&ConfigResource::Topic("orders".into()))
                .unwrap()["cleanup.policy"],
            "compact"
        );
    }

    #[test]
    fn create_topics_uses_the_defaults_for_minus_one_and_answers_kafkas_error_codes() {
        let mut sim = cluster(&[1, 2]);
        create(
            &mut sim,
            vec![new_topic("exists", 1, 1), new_topic("a.b", 1, 1)],
        );
        let mut empty_config = new_topic("cfg", 1, 1);
        empty_config.configs.insert(String::new(), "x".into());
        let results = create(
            &mut sim,
            vec![
                new_topic("defaults", -1, -1),
                new_topic("exists", 1, 1),
                new_topic("zero", 0, 1),
                new_topic("negative", -2, 1),
                new_topic("rf0", 1, 0),
                new_topic("rf3", 1, 3),
                new_topic("bad name", 1, 1),
                new_topic("a_b", 1, 1),
                new_topic("x.y", 1, 1),
                new_topic("x_y", 1, 1),
                empty_config,
                new_topic("twice", 1, 1),
                new_topic("twice", 1, 1),
                new_topic("huge", 20_000, 1),
            ],
        );
        assert_eq!(
            codes_of(&results),
            vec![0, 36, 37, 37, 38, 38, 17, 17, 0, 17, 40, 42, 42, 44]
        );
        let rf3 = results[5].message.as_deref().unwrap();
        assert!(
            rf3.contains('3') && rf3.contains('2'),
            "names both numbers: {rf3}"
        );
        assert_eq!(
            sim.image
                .topic_by_name("defaults")
                .unwrap()
                .partitions
                .len(),
            3
        );
        assert!(
            sim.image.topic_by_name("x.y").is_some() && sim.image.topic_by_name("x_y").is_none()
        );
    }

    #[test]
    fn validate_only_writes_nothing() {
        let mut sim = cluster(&[1]);
        let decision = sim
            .controller
            .handle(
                &sim.image,
                sim.now_ms,
                &ControllerRequest::CreateTopics {
                    topics: vec![new_topic("t", 2, 1), new_topic("t t", 1, 1)],
                    validate_only: true,
                },
            )
            .unwrap();
        assert!(decision.records.is_empty());
        let ControllerResponse::Items(results) = decision.response else {
            panic!()
        };
        assert_eq!(codes_of(&results), vec![0, 17]);
        let decision = sim
            .controller
            .handle(
                &sim.image,
                sim.now_ms,
                &ControllerRequest::AlterConfigs {
                    changes: vec![(
                        ConfigResource::Broker(None),
                        "log.retention.ms".into(),
                        Some("1".into()),
                    )],
                    validate_only: true,
                },
            )
            .unwrap();
        assert!(decision.records.is_empty());
    }

    #[test]
    fn manual_assignments_are_checked_as_kafka_does() {
        let mut sim = cluster(&[1, 2]);
        sim.register(3, None).unwrap(); // registered, fenced
        let manual = |name: &str, assignments: &[(i32, &[BrokerId])]| NewTopic {
            assignments: Some(assignments.iter().map(|(p, r)| (*p, r.to_vec())).collect()),
            ..new_topic(name, -1, -1)
        };
        let results = create(
            &mut sim,
            vec![
                manual("ok", &[(0, &[2, 3]), (1, &[3, 1])]),
                manual("gap", &[(0, &[1]), (2, &[2])]),
                manual("empty", &[(0, &[])]),
                manual("unknown", &[(0, &[9])]),
                manual("twice", &[(0, &[1, 1])]),
                manual("uneven", &[(0, &[1, 2]), (1, &[1])]),
                manual("fenced", &[(0, &[3])]),
                NewTopic {
                    partitions: 2,
                    ..manual("with-count", &[(0, &[1])])
                },
            ],
        );
        assert_eq!(codes_of(&results), vec![0, 39, 39, 39, 39, 39, 39, 42]);
        // ISR: the live replicas; leader: the first of them.
        let p1 = state(&sim, "ok", 1);
        assert_eq!(
            (p1.replicas.clone(), p1.isr.clone(), p1.leader),
            (vec![3, 1], vec![1], 1)
        );
    }

    #[test]
    fn replicas_go_to_distinct_racks() {
        let mut sim = Sim::new();
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            sim.add_broker(id, Some(rack));
        }
        create(&mut sim, vec![new_topic("t", 12, 3)]);
        for state in sim.image.topic_by_name("t").unwrap().partitions.values() {
            let racks: BTreeSet<_> = state
                .replicas
                .iter()
                .map(|r| sim.image.broker(*r).unwrap().rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{:?}", state.replicas);
        }
    }

    #[test]
    fn delete_topics_removes_known_topics_and_answers_unknown_ones() {
        let mut sim = cluster(&[1]);
        let mut topic = new_topic("t", 2, 1);
        topic.configs.insert("retention.ms".into(), "5".into());
        create(&mut sim, vec![topic]);
        let results = items(sim.request(ControllerRequest::DeleteTopics {
            names: vec!["t".into(), "nope".into(), "dup".into(), "dup".into()],
        }));
        assert_eq!(codes_of(&results), vec![0, 3, 42, 42]);
        assert!(results[0].topic_id.is_some());
        assert!(sim.image.topics.is_empty() && sim.image.configs.is_empty());
    }

    #[test]
    fn create_partitions_grows_a_topic_at_its_replication_factor() {
        let mut sim = cluster(&[1, 2, 3]);
        create(&mut sim, vec![new_topic("t", 2, 2)]);
        let grow =
            |name: &str, total: i32, assignments: Option<Vec<Vec<BrokerId>>>| NewPartitions {
                name: name.into(),
                total,
                assignments,
            };
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![
                grow("t", 5, None),
                grow("nope", 5, None),
                grow("u", 1, None),
            ],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![0, 3, 3]);
        let topic = sim.image.topic_by_name("t").unwrap();
        assert_eq!(topic.partitions.len(), 5);
        assert!(topic.partitions.values().all(|p| p.replicas.len() == 2));
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 5, None), grow("t", 4, None)],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![42, 42]);
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 4, None)],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![37]);
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 5, None)],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![37]);
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 7, Some(vec![vec![1, 2]]))],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![39]);
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 6, Some(vec![vec![3]]))],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![39], "RF must match the topic's");
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 6, Some(vec![vec![3, 1]]))],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![0]);
        assert_eq!(state(&sim, "t", 5).replicas, vec![3, 1]);
        // Two brokers gone: RF 2 cannot be placed on one.
        sim.heartbeat(1, true).unwrap();
        sim.heartbeat(2, true).unwrap();
        let results = items(sim.request(ControllerRequest::CreatePartitions {
            topics: vec![grow("t", 7, None)],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![38]);
    }

    #[test]
    fn alter_configs_writes_records_per_resource() {
        let mut sim = cluster(&[1]);
        create(&mut sim, vec![new_topic("t", 1, 1)]);
        let topic = ConfigResource::Topic("t".into());
        let results = items(sim.request(ControllerRequest::AlterConfigs {
            changes: vec![
                (topic.clone(), "retention.ms".into(), Some("10".into())),
                (
                    ConfigResource::Broker(Some(1)),
                    "log.cleaner.threads".into(),
                    Some("2".into()),
                ),
                (topic.clone(), "segment.ms".into(), Some("20".into())),
                (
                    ConfigResource::Topic("gone".into()),
                    "retention.ms".into(),
                    Some("1".into()),
                ),
                (
                    ConfigResource::Group("g".into()),
                    "x".into(),
                    Some("1".into()),
                ),
                (
                    ConfigResource::Group("g".into()),
                    "x".into(),
                    Some("2".into()),
                ),
                (
                    ConfigResource::Broker(None),
                    String::new(),
                    Some("2".into()),
                ),
            ],
            validate_only: false,
        }));
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["t", "1", "gone", "g", ""]);
        assert_eq!(codes_of(&results), vec![0, 0, 3, 42, 40]);
        assert_eq!(sim.image.configs_of(&topic).unwrap().len(), 2);
        assert!(
            sim.image
                .configs_of(&ConfigResource::Group("g".into()))
                .is_none()
        );
        items(sim.request(ControllerRequest::AlterConfigs {
            changes: vec![(topic.clone(), "retention.ms".into(), None)],
            validate_only: false,
        }));
        assert_eq!(sim.image.configs_of(&topic).unwrap().len(), 1);
    }

    #[test]
    fn producer_id_blocks_follow_each_other_and_need_the_current_epoch() {
        let mut sim = cluster(&[1]);
        let epoch = sim.image.broker(1).unwrap().broker_epoch;
        let allocate = |sim: &mut Sim, broker_id, broker_epoch| {
            sim.request(ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            })
        };
        assert_eq!(
            allocate(&mut sim, 1, epoch),
            Ok(ControllerResponse::ProducerIds {
                first_producer_id: 0,
                size: 1000
            })
        );
        assert_eq!(
            allocate(&mut sim, 1, epoch),
            Ok(ControllerResponse::ProducerIds {
                first_producer_id: 1000,
                size: 1000
            })
        );
        assert_eq!(sim.image.next_producer_id, 2000);
        assert!(matches!(
            allocate(&mut sim, 1, epoch - 1),
            Err(ControllerError::StaleBrokerEpoch { .. })
        ));
        assert_eq!(
            allocate(&mut sim, 4, 0),
            Err(ControllerError::UnknownBroker(4))
        );
    }

    #[test]
    fn a_reserved_or_taken_topic_id_is_drawn_again() {
        let mut scripted = vec![[0u8; 16], [0xf8; 16], [7; 16], [7; 16], [8; 16]].into_iter();
        let mut sim = cluster(&[1]);
        sim.controller =
            Controller::new(config()).with_id_source(move || scripted.next().unwrap_or([9; 16]));
        let results = create(&mut sim, vec![new_topic("a", 1, 1), new_topic("b", 1, 1)]);
        assert_eq!(results[0].topic_id, Some([7; 16]));
        assert_eq!(results[1].topic_id, Some([8; 16]));
    }

    #[test]
    fn without_an_id_source_ids_are_still_unique_and_deterministic() {
        let decide = || {
            let mut sim = cluster(&[1]);
            sim.controller = Controller::new(config());
            let first = create(&mut sim, vec![new_topic("a", 1, 1), new_topic("b", 1, 1)]);
            let second = create(&mut sim, vec![new_topic("c", 1, 1)]);
            [first[0].topic_id, first[1].topic_id, second[0].topic_id]
        };
        let ids = decide();
        assert_eq!(ids, decide());
        let distinct: BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    // ---- Replication: ISRs, elections, AlterPartition, ElectLeaders ----

    /// A topic with explicit replicas per partition.
    fn manual_topic(sim: &mut Sim, name: &str, replicas: &[&[BrokerId]]) -> TopicId {
        let results = create(
            sim,
            vec![NewTopic {
                assignments: Some(
                    replicas
                        .iter()
                        .enumerate()
                        .map(|(p, r)| (p as i32, r.to_vec()))
                        .collect(),
                ),
                ..new_topic(name, -1, -1)
            }],
        );
        assert_eq!(codes_of(&results), vec![0]);
        results[0].topic_id.unwrap()
    }

    fn set_config(sim: &mut Sim, resource: ConfigResource, name: &str, value: Option<&str>) {
        let results = items(sim.request(ControllerRequest::AlterConfigs {
            changes: vec![(resource, name.into(), value.map(str::to_string))],
            validate_only: false,
        }));
        assert_eq!(codes_of(&results), vec![0]);
    }

    fn alter(
        sim: &mut Sim,
        broker_id: BrokerId,
        items: Vec<AlterPartitionItem>,
    ) -> Result<Vec<AlterPartitionResult>, ControllerError> {
        let broker_epoch = sim.image.broker(broker_id).map_or(0, |b| b.broker_epoch);
        match sim.request(ControllerRequest::AlterPartition {
            broker_id,
            broker_epoch,
            topics: items,
        })? {
            ControllerResponse::AlterPartition(results) => Ok(results),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// An AlterPartition item at the partition's current epochs.
    fn isr_item(
        sim: &Sim,
        topic_id: TopicId,
        partition: i32,
        new_isr: &[BrokerId],
    ) -> AlterPartitionItem {
        let (leader_epoch, partition_epoch) = sim
            .image
            .partition(&topic_id, partition)
            .map_or((0, 0), |s| (s.leader_epoch, s.partition_epoch));
        AlterPartitionItem {
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr: new_isr.to_vec(),
        }
    }

    fn elect(
        sim: &mut Sim,
        election_type: i8,
        partitions: Option<Vec<(&str, Vec<i32>)>>,
    ) -> (i16, Vec<TopicElectionResult>) {
        let request = ControllerRequest::ElectLeaders {
            election_type,
            partitions: partitions.map(|p| {
                p.into_iter()
                    .map(|(topic, partitions)| TopicPartitions {
                        topic: topic.into(),
                        partitions,
                    })
                    .collect()
            }),
        };
        match sim.request(request).unwrap() {
            ControllerResponse::ElectLeaders {
                error_code,
                results,
            } => (error_code, results),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn election_codes(results: &[TopicElectionResult]) -> Vec<(String, i32, i16)> {
        results
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.clone(), p.partition, p.error_code))
            })
            .collect()
    }

    #[test]
    fn alter_partition_shrinks_and_grows_the_isr_and_answers_the_new_state() {
        let mut sim = cluster(&[1, 2, 3]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2, 3]]);
        let shrink = isr_item(&sim, t, 0, &[1, 3]);
        let results = alter(&mut sim, 1, vec![shrink]).unwrap();
        assert_eq!(
            results,
            vec![AlterPartitionResult {
                topic_id: t,
                partition: 0,
                error_code: codes::NONE,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 1,
                isr: vec![1, 3],
            }]
        );
        let p = state(&sim, "t", 0);
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1, 3], 0, 1)
        );
        // The same ISR again: nothing written, the current state answered.
        let index = sim.next_index;
        let same = isr_item(&sim, t, 0, &[1, 3]);
        let results = alter(&mut sim, 1, vec![same]).unwrap();
        assert_eq!(sim.next_index, index, "no records");
        assert_eq!((results[0].error_code, results[0].partition_epoch), (0, 1));
        let grow = isr_item(&sim, t, 0, &[1, 3, 2]);
        alter(&mut sim, 1, vec![grow]).unwrap();
        assert_eq!(state(&sim, "t", 0).isr, vec![1, 3, 2]);
    }

    #[test]
    fn alter_partition_checks_each_partition_in_kafkas_order() {
        let mut sim = cluster(&[1, 2, 3, 4]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2, 3], &[1, 2, 3]]);
        // Broker 3 shuts down: it leaves the ISRs and is fenced.
        sim.heartbeat(3, true).unwrap();
        assert_eq!(state(&sim, "t", 0).isr, vec![1, 2]);
        let at = |sim: &Sim, isr: &[BrokerId]| isr_item(sim, t, 0, isr);
        let cases: Vec<(BrokerId, AlterPartitionItem, i16)> = vec![
            (
                1,
                AlterPartitionItem {
                    topic_id: [9; 16],
                    ..at(&sim, &[1])
                },
                codes::UNKNOWN_TOPIC_ID,
            ),
            (
                1,
                AlterPartitionItem {
                    partition: 7,
                    ..at(&sim, &[1])
                },
                codes::UNKNOWN_TOPIC_OR_PARTITION,
            ),
            (
                1,
                AlterPartitionItem {
                    leader_epoch: 1,
                    ..at(&sim, &[1])
                },
                codes::NOT_CONTROLLER,
            ),
            (
                1,
                AlterPartitionItem {
                    partition_epoch: 9,
                    ..at(&sim, &[1])
                },
                codes::NOT_CONTROLLER,
            ),
            (
                1,
                AlterPartitionItem {
                    leader_epoch: -1,
                    ..at(&sim, &[1])
                },
                codes::FENCED_LEADER_EPOCH,
            ),
            (2, at(&sim, &[1]), codes::INVALID_REQUEST),
            (
                1,
                AlterPartitionItem {
                    partition_epoch: 0,
                    ..at(&sim, &[1])
                },
                codes::INVALID_UPDATE_VERSION,
            ),
            (1, at(&sim, &[]), codes::INVALID_REQUEST),
            (1, at(&sim, &[2]), codes::INVALID_REQUEST),
            (1, at(&sim, &[1, 4]), codes::INVALID_REQUEST),
            (1, at(&sim, &[1, 1]), codes::INVALID_REQUEST),
            (1, at(&sim, &[1, -1]), codes::INVALID_REQUEST),
            (1, at(&sim, &[1, 3]), codes::INELIGIBLE_REPLICA),
        ];
        let index = sim.next_index;
        for (sender, item, expected) in cases {
            let label = format!("{item:?} from {sender}");
            let results = alter(&mut sim, sender, vec![item]).unwrap();
            assert_eq!(results[0].error_code, expected, "{label}");
        }
        assert_eq!(sim.next_index, index, "no refused change wrote anything");
        // An error answers the current state.
        let items = vec![at(&sim, &[1])];
        let results = alter(&mut sim, 2, items).unwrap();
        assert_eq!(
            (
                results[0].leader,
                results[0].isr.clone(),
                results[0].partition_epoch
            ),
            (1, vec![1, 2], 1)
        );
        // Each partition on its own: one refused, one written. A partition
        // named twice is checked against the first change.
        let items = vec![
            at(&sim, &[1, 3]),
            isr_item(&sim, t, 1, &[1]),
            at(&sim, &[1]),
            at(&sim, &[1]),
        ];
        let results = alter(&mut sim, 1, items).unwrap();
        assert_eq!(
            results.iter().map(|r| r.error_code).collect::<Vec<_>>(),
            vec![
                codes::INELIGIBLE_REPLICA,
                0,
                0,
                codes::INVALID_UPDATE_VERSION
            ]
        );
        assert_eq!(state(&sim, "t", 1).isr, vec![1]);
        assert_eq!(state(&sim, "t", 0).isr, vec![1]);
        // The sender's broker epoch: STALE_BROKER_EPOCH, unknown brokers too.
        let stale = sim.request(ControllerRequest::AlterPartition {
            broker_id: 1,
            broker_epoch: 0,
            topics: vec![at(&sim, &[1])],
        });
        assert_eq!(stale.unwrap_err().error_code(), codes::STALE_BROKER_EPOCH);
        let unknown = sim.request(ControllerRequest::AlterPartition {
            broker_id: 9,
            broker_epoch: 0,
            topics: vec![],
        });
        assert_eq!(unknown.unwrap_err().error_code(), codes::STALE_BROKER_EPOCH);
    }

    #[test]
    fn a_returning_broker_rejoins_the_isr_through_its_leader_then_leads_again_after_a_rebalance() {
        let mut sim = cluster(&[1, 2]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2]]);
        sim.heartbeat(1, true).unwrap();
        let p = state(&sim, "t", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
        // A fenced broker cannot be added.
        let items = vec![isr_item(&sim, t, 0, &[2, 1])];
        let results = alter(&mut sim, 2, items).unwrap();
        assert_eq!(results[0].error_code, codes::INELIGIBLE_REPLICA);
        // Back and unfenced, not in the ISR: it does not lead.
        sim.register(1, None).unwrap();
        sim.heartbeat(1, false).unwrap();
        assert_eq!(state(&sim, "t", 0).leader, 2);
        let items = vec![isr_item(&sim, t, 0, &[2, 1])];
        let results = alter(&mut sim, 2, items).unwrap();
        assert_eq!(results[0].error_code, 0);
        // The rebalance runs once its interval has passed since the
        // controller's first tick.
        sim.tick();
        sim.now_ms += crate::testkit::REBALANCE_INTERVAL_MS - 1;
        sim.heartbeat(1, false).unwrap();
        sim.heartbeat(2, false).unwrap();
        sim.tick();
        assert_eq!(state(&sim, "t", 0).leader, 2, "not yet");
        sim.now_ms += 1;
        sim.tick();
        let p = state(&sim, "t", 0);
        assert_eq!((p.leader, p.isr, p.leader_epoch), (1, vec![2, 1], 2));
    }

    #[test]
    fn without_auto_rebalance_leadership_stays_where_it_is() {
        let mut sim = cluster(&[1, 2]);
        sim.controller = Controller::new(ControllerConfig {
            auto_leader_rebalance: false,
            ..config()
        });
        let t = manual_topic(&mut sim, "t", &[&[1, 2]]);
        sim.heartbeat(1, true).unwrap();
        sim.register(1, None).unwrap();
        sim.heartbeat(1, false).unwrap();
        let items = vec![isr_item(&sim, t, 0, &[2, 1])];
        alter(&mut sim, 2, items).unwrap();
        for _ in 0..3 {
            sim.now_ms += crate::testkit::REBALANCE_INTERVAL_MS;
            sim.heartbeat(1, false).unwrap();
            sim.heartbeat(2, false).unwrap();
            sim.tick();
        }
        assert_eq!(state(&sim, "t", 0).leader, 2);
    }

    #[test]
    fn a_restarted_broker_leaves_every_isr_when_it_registers_again() {
        let mut sim = cluster(&[1, 2, 3]);
        manual_topic(&mut sim, "t", &[&[1, 2, 3], &[2, 1, 3]]);
        manual_topic(&mut sim, "u", &[&[1]]);
        sim.request(ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: [1; 16],
            endpoints: endpoint(1),
            rack: None,
        })
        .unwrap();
        let (p0, p1, p2) = (
            state(&sim, "t", 0),
            state(&sim, "t", 1),
            state(&sim, "u", 0),
        );
        assert_eq!((p0.leader, p0.isr), (2, vec![2, 3]));
        assert_eq!((p1.leader, p1.isr, p1.leader_epoch), (2, vec![2, 3], 0));
        assert_eq!((p2.leader, p2.isr), (NO_LEADER, vec![1]));
    }

    #[test]
    fn when_every_isr_member_is_gone_the_last_one_stays_and_only_it_may_lead_cleanly() {
        let mut sim = cluster(&[1, 2]);
        manual_topic(&mut sim, "t", &[&[1, 2]]);
        sim.heartbeat(2, true).unwrap();
        sim.heartbeat(1, true).unwrap();
        let p = state(&sim, "t", 0);
        assert_eq!((p.leader, p.isr), (NO_LEADER, vec![1]));
        // Broker 2 returns: it was not in the ISR, so the partition stays offline.
        sim.register(2, None).unwrap();
        sim.heartbeat(2, false).unwrap();
        assert_eq!(state(&sim, "t", 0).leader, NO_LEADER);
        sim.register(1, None).unwrap();
        sim.heartbeat(1, false).unwrap();
        let p = state(&sim, "t", 0);
        assert_eq!((p.leader, p.isr), (1, vec![1]));
    }

    #[test]
    fn unclean_election_elects_a_live_replica_outside_the_isr_only_where_the_config_allows() {
        let mut sim = cluster(&[1, 2]);
        manual_topic(&mut sim, "clean", &[&[1, 2]]);
        manual_topic(&mut sim, "dirty", &[&[1, 2]]);
        set_config(
            &mut sim,
            ConfigResource::Topic("dirty".into()),
            election::UNCLEAN_LEADER_ELECTION_ENABLE,
            Some("true"),
        );
        sim.heartbeat(2, true).unwrap();
        sim.heartbeat(1, true).unwrap();
        sim.register(2, None).unwrap();
        sim.heartbeat(2, false).unwrap();
        let (clean, dirty) = (state(&sim, "clean", 0), state(&sim, "dirty", 0));
        assert_eq!((clean.leader, clean.isr), (NO_LEADER, vec![1]));
        assert_eq!(
            (dirty.leader, dirty.isr, dirty.leader_epoch),
            (2, vec![2], 2)
        );
        // Turned on later for the cluster: the next tick elects.
        set_config(
            &mut sim,
            ConfigResource::Broker(None),
            election::UNCLEAN_LEADER_ELECTION_ENABLE,
            Some("true"),
        );
        assert_eq!(
            state(&sim, "clean", 0).leader,
            NO_LEADER,
            "not by the config change"
        );
        sim.tick();
        let clean = state(&sim, "clean", 0);
        assert_eq!((clean.leader, clean.isr), (2, vec![2]));
    }

    #[test]
    fn elect_leaders_preferred_answers_kafkas_codes() {
        let mut sim = cluster(&[1, 2, 3]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2], &[1, 2], &[3, 2], &[2, 1]]);
        sim.heartbeat(1, true).unwrap();
        sim.register(1, None).unwrap();
        sim.heartbeat(1, false).unwrap();
        // Partition 0: 1 back in the ISR; partition 1: not.
        let items = vec![isr_item(&sim, t, 0, &[2, 1])];
        alter(&mut sim, 2, items).unwrap();
        let (error_code, results) = elect(
            &mut sim,
            election_type::PREFERRED,
            Some(vec![("t", vec![0, 1, 2, 9]), ("nope", vec![0])]),
        );
        assert_eq!(error_code, 0);
        assert_eq!(
            election_codes(&results),
            vec![
                ("t".into(), 0, codes::NONE),
                ("t".into(), 1, codes::PREFERRED_LEADER_NOT_AVAILABLE),
                ("t".into(), 2, codes::ELECTION_NOT_NEEDED),
                ("t".into(), 9, codes::UNKNOWN_TOPIC_OR_PARTITION),
                ("nope".into(), 0, codes::UNKNOWN_TOPIC_OR_PARTITION),
            ]
        );
        assert_eq!(state(&sim, "t", 0).leader, 1);
        // All partitions: those that need no election are left out.
        let (_, results) = elect(&mut sim, election_type::PREFERRED, None);
        assert_eq!(
            election_codes(&results),
            vec![("t".into(), 1, codes::PREFERRED_LEADER_NOT_AVAILABLE)]
        );
        let bad = sim.request(ControllerRequest::ElectLeaders {
            election_type: 2,
            partitions: None,
        });
        assert_eq!(bad.unwrap_err().error_code(), codes::INVALID_REQUEST);
    }

    #[test]
    fn elect_leaders_unclean_elects_outside_the_isr_only_for_leaderless_partitions() {
        let mut sim = cluster(&[1, 2, 3, 4]);
        manual_topic(&mut sim, "t", &[&[1, 2], &[1, 4], &[3, 2]]);
        for broker in [2, 4, 1] {
            sim.heartbeat(broker, true).unwrap();
        }
        sim.register(2, None).unwrap();
        sim.heartbeat(2, false).unwrap();
        // 0: offline with ISR [1] and 2 live outside it; 1: offline, none
        // of its replicas live; 2: led by 3.
        let offline: Vec<i32> = sim
            .image
            .offline_partitions()
            .map(|p| p.partition)
            .collect();
        assert_eq!(offline, vec![0, 1]);
        let (_, results) = elect(
            &mut sim,
            election_type::UNCLEAN,
            Some(vec![("t", vec![0, 1, 2])]),
        );
        assert_eq!(
            election_codes(&results),
            vec![
                ("t".into(), 0, codes::NONE),
                ("t".into(), 1, codes::ELIGIBLE_LEADERS_NOT_AVAILABLE),
                ("t".into(), 2, codes::ELECTION_NOT_NEEDED),
            ]
        );
        let p = state(&sim, "t", 0);
        assert_eq!((p.leader, p.isr), (2, vec![2]));
    }

    /// Three topics of 8,334 partitions on brokers [1, 2]: 25,002 partitions led by 1.
    fn big_cluster() -> Sim {
        let mut sim = cluster(&[1, 2]);
        for name in ["a", "b", "c"] {
            let results = create(
                &mut sim,
                vec![NewTopic {
                    assignments: Some((0..8_334).map(|p| (p, vec![1, 2])).collect()),
                    ..new_topic(name, -1, -1)
                }],
            );
            assert_eq!(codes_of(&results), vec![0]);
        }
        sim
    }

    fn led_by(sim: &Sim, broker_id: BrokerId) -> usize {
        sim.image.partitions_led_by(broker_id).count()
    }

    #[test]
    fn fencing_a_broker_that_leads_more_than_a_decision_holds_takes_several_ticks() {
        let mut sim = big_cluster();
        assert_eq!(led_by(&sim, 1), 25_002);
        sim.now_ms += SESSION_TIMEOUT_MS + 1;
        sim.heartbeat(2, false).unwrap();
        let mut sizes = Vec::new();
        while sim.image.is_live(1) {
            let records = sim.tick();
            assert!(records.len() <= RECORDS_PER_REQUEST_MAX);
            sizes.push(records.len());
            // Until the fence, whatever broker 1 still leads it leads live.
            if sim.image.is_live(1) {
                assert!(led_by(&sim, 1) > 0);
            }
            assert!(sizes.len() < 10, "never finished: {sizes:?}");
        }
        // A slice leaves room for the fence, which comes with the last one.
        assert_eq!(sizes, vec![9_999, 9_999, 5_004 + 1]);
        assert_eq!(led_by(&sim, 1), 0);
        assert_eq!(led_by(&sim, 2), 25_002);
        assert!(sim.image.partitions().all(|p| p.state.isr == vec![2]));
    }

    #[test]
    fn a_clean_shutdown_of_a_big_leader_finishes_over_ticks_and_only_then_says_shut_down() {
        let mut sim = big_cluster();
        let response = sim.heartbeat(1, true).unwrap();
        assert_eq!(
            response,
            ControllerResponse::BrokerHeartbeat {
                fenced: false,
                should_shut_down: false
            }
        );
        assert_eq!(led_by(&sim, 1), 25_002 - (RECORDS_PER_REQUEST_MAX - 1));
        // Heard from just now: the ticks go on because it is shutting down.
        let records = sim.tick();
        assert_eq!(records.len(), RECORDS_PER_REQUEST_MAX - 1);
        let records = sim.tick();
        assert!(matches!(
            records.last(),
            Some(MetadataRecord::FenceBroker { broker_id: 1, .. })
        ));
        assert!(!sim.image.is_live(1) && led_by(&sim, 1) == 0);
        let response = sim.heartbeat(1, true).unwrap();
        assert_eq!(
            response,
            ControllerResponse::BrokerHeartbeat {
                fenced: true,
                should_shut_down: true
            }
        );
    }

    #[test]
    fn a_big_leader_registering_again_is_moved_off_in_slices() {
        let mut sim = big_cluster();
        let decision = sim
            .controller
            .handle(
                &sim.image,
                sim.now_ms,
                &ControllerRequest::RegisterBroker {
                    broker_id: 1,
                    incarnation_id: [1; 16],
                    endpoints: endpoint(1),
                    rack: None,
                },
            )
            .unwrap();
        assert_eq!(decision.records.len(), RECORDS_PER_REQUEST_MAX);
        sim.commit(&decision.records).unwrap();
        sim.tick();
        sim.tick();
        assert_eq!(led_by(&sim, 1), 0);
        assert!(sim.tick().is_empty());
    }

    fn reassign(
        sim: &mut Sim,
        topic: &str,
        partitions: Vec<(i32, Option<Vec<BrokerId>>)>,
    ) -> Vec<(i32, i16)> {
        match sim
            .request(ControllerRequest::AlterPartitionReassignments {
                topics: vec![ReassignTopic {
                    name: topic.to_string(),
                    partitions,
                }],
                allow_replication_factor_change: true,
            })
            .unwrap()
        {
            ControllerResponse::Reassignments(results) => results[0]
                .partitions
                .iter()
                .map(|p| (p.partition, p.error_code))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_reassignment_adds_replicas_then_completes_on_the_tick_after_they_join_the_isr() {
        let mut sim = cluster(&[1, 2, 3, 4]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2, 3]]);
        assert_eq!(
            reassign(&mut sim, "t", vec![(0, Some(vec![4, 2, 3]))]),
            vec![(0, 0)]
        );
        let p = state(&sim, "t", 0);
        assert_eq!(
            (
                p.replicas.clone(),
                p.adding_replicas.clone(),
                p.removing_replicas.clone()
            ),
            (vec![4, 2, 3, 1], vec![4], vec![1])
        );
        // Not in sync yet: the tick leaves it running.
        sim.tick();
        assert!(state(&sim, "t", 0).is_reassigning());
        // The leader adds 4 to the ISR once it caught up.
        let grow = isr_item(&sim, t, 0, &[1, 2, 3, 4]);
        alter(&mut sim, 1, vec![grow]).unwrap();
        sim.tick();
        let p = state(&sim, "t", 0);
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert_eq!(p.isr, vec![2, 3, 4]);
        assert_eq!(
            p.leader, 4,
            "the removed leader hands over to the first target replica in sync"
        );
        sim.image.check_consistent().unwrap();
    }

    #[test]
    fn reassignment_bad_input_gets_kafkas_codes_and_changes_nothing() {
        let mut sim = cluster(&[1, 2, 3]);
        manual_topic(&mut sim, "t", &[&[1, 2]]);
        set_config(
            &mut sim,
            ConfigResource::Topic("t".into()),
            MIN_INSYNC_REPLICAS,
            Some("2"),
        );
        let before = sim.image.topic_by_name("t").unwrap().clone();
        let results = reassign(
            &mut sim,
            "t",
            vec![
                (0, Some(vec![1, 9])), // unknown broker
                (0, Some(vec![])),     // empty
                (0, Some(vec![1, 1])), // twice
                (0, Some(vec![3])),    // below min.insync.replicas
                (0, None),             // nothing to cancel
                (5, Some(vec![1, 2])), // no such partition
            ],
        );
        assert_eq!(
            results,
            vec![
                (0, codes::INVALID_REPLICA_ASSIGNMENT),
                (0, codes::INVALID_REPLICA_ASSIGNMENT),
                (0, codes::INVALID_REPLICA_ASSIGNMENT),
                (0, codes::INVALID_REPLICATION_FACTOR),
                (0, codes::NO_REASSIGNMENT_IN_PROGRESS),
                (5, codes::UNKNOWN_TOPIC_OR_PARTITION),
            ]
        );
        assert_eq!(
            reassign(&mut sim, "nope", vec![(0, Some(vec![1]))]),
            vec![(0, codes::UNKNOWN_TOPIC_OR_PARTITION)]
        );
        assert_eq!(sim.image.topic_by_name("t").unwrap(), &before);
        // KIP-860: with allow_replication_factor_change false, another size is refused.
        let answer = sim
            .request(ControllerRequest::AlterPartitionReassignments {
                topics: vec![ReassignTopic {
                    name: "t".into(),
                    partitions: vec![(0, Some(vec![1, 2, 3]))],
                }],
                allow_replication_factor_change: false,
            })
            .unwrap();
        match answer {
            ControllerResponse::Reassignments(r) => {
                assert_eq!(
                    r[0].partitions[0].error_code,
                    codes::INVALID_REPLICATION_FACTOR
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sim.image.topic_by_name("t").unwrap(), &before);
    }

    #[test]
    fn a_second_reassignment_replaces_the_running_one_and_a_cancel_restores_the_original() {
        let mut sim = cluster(&[1, 2, 3, 4, 5]);
        manual_topic(&mut sim, "t", &[&[1, 2, 3]]);
        assert_eq!(
            reassign(&mut sim, "t", vec![(0, Some(vec![1, 2, 4]))]),
            vec![(0, 0)]
        );
        // Kafka replaces a running reassignment rather than refusing it.
        assert_eq!(
            reassign(&mut sim, "t", vec![(0, Some(vec![1, 2, 5]))]),
            vec![(0, 0)]
        );
        let p = state(&sim, "t", 0);
        assert_eq!(p.target_replicas(), vec![1, 2, 5]);
        assert_eq!(p.adding_replicas, vec![5]);
        assert_eq!(p.removing_replicas, vec![4, 3]);
        assert_eq!(reassign(&mut sim, "t", vec![(0, None)]), vec![(0, 0)]);
        let p = state(&sim, "t", 0);
        assert!(!p.is_reassigning());
        assert_eq!(
            p.replicas,
            vec![1, 2, 4, 3],
            "the replicas from before the second one"
        );
        assert_eq!(p.isr, vec![1, 2, 3]);
        sim.image.check_consistent().unwrap();
    }

    #[test]
    fn a_reassignment_survives_a_new_controller_because_its_state_is_in_the_image() {
        let mut sim = cluster(&[1, 2, 3, 4]);
        let t = manual_topic(&mut sim, "t", &[&[1, 2, 3]]);
        reassign(&mut sim, "t", vec![(0, Some(vec![2, 3, 4]))]);
        // Failover: a fresh controller knows nothing but the image.
        sim.controller = Controller::new(config());
        let grow = isr_item(&sim, t, 0, &[1, 2, 3, 4]);
        alter(&mut sim, 1, vec![grow]).unwrap();
        sim.tick();
        let p = state(&sim, "t", 0);
        assert_eq!((p.replicas.clone(), p.leader), (vec![2, 3, 4], 2));
        assert!(!p.is_reassigning());
    }
}
