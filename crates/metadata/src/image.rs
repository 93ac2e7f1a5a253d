//! The cluster metadata image: what every node knows after applying the
//! metadata log up to some index. A pure, deterministic state machine: the
//! same records in the same order give the same image on every node, and a
//! snapshot restored and then fed the rest of the log gives the same image as
//! replay from scratch.
//!
//!
//! A record that does not fit the image (an unknown topic id, a stale broker
//! epoch, a partition index that is not the next one...) is refused with an
//! [`ApplyError`] and changes nothing but `last_applied_index`. Every node
//! refuses it alike, so they stay in step; the controller never writes such
//! a record on purpose (the property tests in `tests.rs` hold it to that).
//!
//! What the image guarantees after every apply ([`MetadataImage::check_consistent`]):
//! topic names and ids are unique and map to each other; partitions are dense
//! from 0; a partition's replicas are distinct and non-empty, its ISR is a
//! subset of them, and its leader is in the ISR or is `NO_LEADER`; configs of
//! a topic exist only while the topic does; no resource has an empty config map.
//! Leadership across brokers (a leader must be unfenced) is the controller's
//! promise, not the image's: the image applies what was committed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, NO_LEADER, TopicId};

/// The per-broker dynamic config that marks a broker decommissioned (Weir's
/// own; Kafka has no such mark). A config record, so it lives in the
/// metadata log and every node's image.
pub const DECOMMISSIONED_CONFIG: &str = "weir.decommissioned";

/// Snapshots larger than this are refused before parsing. A metadata image of
/// a million partitions is about 150 MB of JSON; anything bigger is not ours.
pub const SNAPSHOT_BYTES_MAX: usize = 512 * 1024 * 1024;

/// The snapshot format's version; bumped when the layout changes.
pub const SNAPSHOT_VERSION: u32 = 1;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// While a reassignment runs (KIP-455), the union of the target and the
    /// replicas it replaces: the target first, in its order, then those going.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A running reassignment's new replicas, still catching up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<BrokerId>,
    /// A running reassignment's replicas that go when it completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is running (KRaft's `isReassigning`).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have once its reassignment completes
    /// (all of them when none runs), in order.
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas it had before the reassignment began (what a
    /// cancellation returns to), in order.
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
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
    /// The cluster's id, once the first broker claimed it.
    pub cluster_id: Option<String>,
}

/// One partition as the query helpers return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRef<'a> {
    pub topic: &'a TopicImage,
    pub partition: i32,
    pub state: &'a PartitionState,
}

/// The snapshot's layout. Maps keyed by a topic id or a config resource
/// become lists, because JSON object keys must be strings.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    last_applied_index: Option<u64>,
    brokers: Vec<BrokerRegistration>,
    topics: Vec<TopicImage>,
    configs: Vec<(ConfigResource, BTreeMap<String, String>)>,
    next_producer_id: i64,
    #[serde(default)]
    cluster_id: Option<String>,
}

fn inconsistent(message: String) -> ApplyError {
    ApplyError::Inconsistent(message)
}

/// A topic id in messages, as hex (how the rest of Weir prints ids).
pub(crate) fn hex(id: &TopicId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one partition's replica set, ISR and leader against each other.
fn check_partition_shape(
    replicas: &[BrokerId],
    isr: &[BrokerId],
    leader: BrokerId,
) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("no replicas".into());
    }
    let distinct: BTreeSet<BrokerId> = replicas.iter().copied().collect();
    if distinct.len() != replicas.len() {
        return Err(format!("replicas {replicas:?} name a broker twice"));
    }
    if replicas.iter().any(|r| *r < 0) {
        return Err(format!(
            "replicas {replicas:?} include a negative broker id"
        ));
    }
    let isr_distinct: BTreeSet<BrokerId> = isr.iter().copied().collect();
    if isr_distinct.len() != isr.len() {
        return Err(format!("ISR {isr:?} names a broker twice"));
    }
    if !isr_distinct.is_subset(&distinct) {
        return Err(format!(
            "ISR {isr:?} is not a subset of replicas {replicas:?}"
        ));
    }
    if leader != NO_LEADER && !isr_distinct.contains(&leader) {
        return Err(format!("leader {leader} is not in the ISR {isr:?}"));
    }
    Ok(())
}

/// Checks a reassignment's adding and removing replicas against the replica
/// set: each a distinct subset of it, the two disjoint, and at least one
/// replica left once the removing ones go.
fn check_reassignment_shape(
    replicas: &[BrokerId],
    adding: &[BrokerId],
    removing: &[BrokerId],
) -> Result<(), String> {
    let distinct = |list: &[BrokerId]| list.iter().collect::<BTreeSet<_>>().len() == list.len();
    if !distinct(adding) || !distinct(removing) {
        return Err(format!(
            "adding {adding:?} or removing {removing:?} names a broker twice"
        ));
    }
    if !adding.iter().chain(removing).all(|r| replicas.contains(r)) {
        return Err(format!(
            "adding {adding:?} and removing {removing:?} must be replicas of {replicas:?}"
        ));
    }
    if adding.iter().any(|r| removing.contains(r)) {
        return Err(format!(
            "adding {adding:?} and removing {removing:?} overlap"
        ));
    }
    if removing.len() >= replicas.len() {
        return Err(format!(
            "removing {removing:?} would leave no replica of {replicas:?}"
        ));
    }
    Ok(())
}

impl MetadataImage {
    pub fn new() -> MetadataImage {
        MetadataImage::default()
    }

    /// Applies one record of the log entry at `index`. Records of one entry
    /// share its index; indexes never go down.
    ///
    /// `last_applied_index` advances even when the record is refused: the
    /// entry was applied, its record just changed nothing.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        if let Some(last) = self.last_applied_index
            && index < last
        {
            return Err(inconsistent(format!(
                "index {index} is below the last applied index {last}"
            )));
        }
        self.last_applied_index = Some(index);
        self.apply_record(index, record)
    }

    /// Marks an entry that carries no metadata record (a Raft membership
    /// change or a blank entry) as applied.
    pub fn note_applied(&mut self, index: u64) {
        if self.last_applied_index.is_none_or(|last| last < index) {
            self.last_applied_index = Some(index);
        }
    }

    /// Every check happens before the first change, so a refused record
    /// leaves the image as it was.
    fn apply_record(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
                fenced,
            } => {
                if *broker_id < 0 {
                    return Err(inconsistent(format!("broker id {broker_id} is negative")));
                }
                let broker_epoch = i64::try_from(index).map_err(|_| {
                    inconsistent(format!("index {index} does not fit a broker epoch"))
                })?;
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        broker_epoch,
                        incarnation_id: *incarnation_id,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                    },
                );
                Ok(())
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                self.current_broker(*broker_id, *broker_epoch, "unregister")?;
                self.brokers.remove(broker_id);
                Ok(())
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => {
                self.current_broker(*broker_id, *broker_epoch, "fence")?;
                if let Some(broker) = self.brokers.get_mut(broker_id) {
                    broker.fenced = true;
                }
                Ok(())
            }
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                self.current_broker(*broker_id, *broker_epoch, "unfence")?;
                if let Some(broker) = self.brokers.get_mut(broker_id) {
                    broker.fenced = false;
                }
                Ok(())
            }
            MetadataRecord::Topic { name, topic_id } => {
                if *topic_id == [0u8; 16] {
                    return Err(inconsistent(format!("topic '{name}' has the all-zero id")));
                }
                if name.is_empty() {
                    return Err(inconsistent("a topic with an empty name".into()));
                }
                if let Some(existing) = self.topic_ids_by_name.get(name) {
                    return Err(inconsistent(format!(
                        "topic '{name}' already exists with id {}",
                        hex(existing)
                    )));
                }
                if let Some(existing) = self.topics.get(topic_id) {
                    return Err(inconsistent(format!(
                        "topic id {} is already used by topic '{}'",
                        hex(topic_id),
                        existing.name
                    )));
                }
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
                self.topic_ids_by_name.insert(name.clone(), *topic_id);
                Ok(())
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topic = self.topics.get_mut(topic_id).ok_or_else(|| {
                    inconsistent(format!(
                        "partition {partition} of unknown topic id {}",
                        hex(topic_id)
                    ))
                })?;
                let next_index = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
                if *partition != next_index {
                    return Err(inconsistent(format!(
                        "topic '{}' has {next_index} partitions; a new partition must be {next_index}, not {partition}",
                        topic.name
                    )));
                }
                if *leader_epoch < 0 || *partition_epoch < 0 {
                    return Err(inconsistent(format!(
                        "partition {partition} of '{}' has a negative epoch",
                        topic.name
                    )));
                }
                check_partition_shape(replicas, isr, *leader).map_err(|why| {
                    inconsistent(format!("partition {partition} of '{}': {why}", topic.name))
                })?;
                topic.partitions.insert(
                    *partition,
                    PartitionState {
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                    },
                );
                Ok(())
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                adding_replicas,
                removing_replicas,
            } => {
                let topic = self.topics.get_mut(topic_id).ok_or_else(|| {
                    inconsistent(format!(
                        "change to partition {partition} of unknown topic id {}",
                        hex(topic_id)
                    ))
                })?;
                let name = &topic.name;
                let state = topic.partitions.get_mut(partition).ok_or_else(|| {
                    inconsistent(format!(
                        "change to unknown partition {partition} of '{name}'"
                    ))
                })?;
                let new_replicas = replicas.as_ref().unwrap_or(&state.replicas);
                let new_isr = isr.as_ref().unwrap_or(&state.isr);
                let new_leader = leader.unwrap_or(state.leader);
                let new_adding = adding_replicas.as_ref().unwrap_or(&state.adding_replicas);
                let new_removing = removing_replicas
                    .as_ref()
                    .unwrap_or(&state.removing_replicas);
                check_partition_shape(new_replicas, new_isr, new_leader)
                    .and_then(|()| check_reassignment_shape(new_replicas, new_adding, new_removing))
                    .map_err(|why| {
                        inconsistent(format!("partition {partition} of '{name}': {why}"))
                    })?;
                let partition_epoch = state.partition_epoch.checked_add(1).ok_or_else(|| {
                    inconsistent(format!(
                        "partition {partition} of '{name}': partition epoch overflows"
                    ))
                })?;
                // As KRaft's PartitionRegistration.merge: naming a leader, even
                // the current one, starts a new leader epoch; that is how a
                // change forces one.
                let leader_epoch = if leader.is_some() {
                    state.leader_epoch.checked_add(1).ok_or_else(|| {
                        inconsistent(format!(
                            "partition {partition} of '{name}': leader epoch overflows"
                        ))
                    })?
                } else {
                    state.leader_epoch
                };
                *state = PartitionState {
                    replicas: new_replicas.clone(),
                    isr: new_isr.clone(),
                    leader: new_leader,
                    leader_epoch,
                    partition_epoch,
                    adding_replicas: new_adding.clone(),
                    removing_replicas: new_removing.clone(),
                };
                Ok(())
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                if name.is_empty() {
                    return Err(inconsistent(format!(
                        "a config of {resource:?} with an empty name"
                    )));
                }
                if let ConfigResource::Topic(topic) = resource
                    && !self.topic_ids_by_name.contains_key(topic)
                {
                    // A config left for a topic that does not exist would be
                    // inherited by the next topic created with that name.
                    return Err(inconsistent(format!(
                        "config '{name}' for unknown topic '{topic}'"
                    )));
                }
                match value {
                    Some(value) => {
                        self.configs
                            .entry(resource.clone())
                            .or_default()
                            .insert(name.clone(), value.clone());
                    }
                    None => {
                        if let Some(entries) = self.configs.get_mut(resource) {
                            entries.remove(name);
                            if entries.is_empty() {
                                self.configs.remove(resource);
                            }
                        }
                    }
                }
                Ok(())
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or_else(|| {
                    inconsistent(format!("removal of unknown topic id {}", hex(topic_id)))
                })?;
                self.topic_ids_by_name.remove(&topic.name);
                self.configs.remove(&ConfigResource::Topic(topic.name));
                Ok(())
            }
            MetadataRecord::ProducerIds {
                broker_id: _,
                broker_epoch: _,
                first_producer_id,
                size,
            } => {
                if *size <= 0 || *first_producer_id < 0 {
                    return Err(inconsistent(format!(
                        "producer id block [{first_producer_id}, +{size}) is not a block"
                    )));
                }
                if *first_producer_id < self.next_producer_id {
                    return Err(inconsistent(format!(
                        "producer id block at {first_producer_id} overlaps ids handed out before {}",
                        self.next_producer_id
                    )));
                }
                let next = first_producer_id.checked_add(*size).ok_or_else(|| {
                    inconsistent(format!(
                        "producer id block at {first_producer_id} of {size} overflows"
                    ))
                })?;
                self.next_producer_id = next;
                Ok(())
            }
            MetadataRecord::NoOp => Ok(()),
            MetadataRecord::ClusterId { cluster_id } => match &self.cluster_id {
                Some(existing) if existing != cluster_id => Err(inconsistent(format!(
                    "the cluster id is {existing} already, not {cluster_id}"
                ))),
                _ if cluster_id.is_empty() || cluster_id.len() > 64 => {
                    Err(inconsistent("a cluster id is 1 to 64 characters".into()))
                }
                _ => {
                    self.cluster_id = Some(cluster_id.clone());
                    Ok(())
                }
            },
        }
    }

    /// The broker a Fence/Unfence/Unregister names, if that record is for its
    /// current registration. A record for an older epoch was overtaken by a
    /// re-registration and must not touch the new one.
    fn current_broker(
        &self,
        broker_id: BrokerId,
        broker_epoch: i64,
        action: &str,
    ) -> Result<&BrokerRegistration, ApplyError> {
        let broker = self.brokers.get(&broker_id).ok_or_else(|| {
            inconsistent(format!(
                "cannot {action} broker {broker_id}: not registered"
            ))
        })?;
        if broker.broker_epoch != broker_epoch {
            return Err(inconsistent(format!(
                "cannot {action} broker {broker_id} at epoch {broker_epoch}: its epoch is {}",
                broker.broker_epoch
            )));
        }
        Ok(broker)
    }

    /// The image as bytes, for a Raft snapshot.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            last_applied_index: self.last_applied_index,
            brokers: self.brokers.values().cloned().collect(),
            topics: self.topics.values().cloned().collect(),
            configs: self
                .configs
                .iter()
                .map(|(resource, entries)| (resource.clone(), entries.clone()))
                .collect(),
            next_producer_id: self.next_producer_id,
            cluster_id: self.cluster_id.clone(),
        };
        #[cfg(test)]
        let file = if crate::planted::is(crate::planted::Bug::SnapshotForgetsProducerIds) {
            SnapshotFile {
                next_producer_id: 0,
                ..file
            }
        } else {
            file
        };
        // Every key is a string or an integer and every value plain data, so
        // serialising cannot fail; an empty snapshot would fail to load loudly.
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Reads a snapshot written by [`MetadataImage::to_snapshot`]. Anything
    /// else (truncated, garbage, another version, or an image that breaks
    /// the image's invariants) is refused, never half-loaded.
    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        Self::from_snapshot_at_most(bytes, SNAPSHOT_BYTES_MAX)
    }

    fn from_snapshot_at_most(
        bytes: &[u8],
        bytes_max: usize,
    ) -> Result<MetadataImage, SnapshotError> {
        if bytes.len() > bytes_max {
            return Err(SnapshotError::Decode(format!(
                "{} bytes is over the {bytes_max}-byte limit",
                bytes.len()
            )));
        }
        let file: SnapshotFile =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if file.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Decode(format!(
                "version {} (this build reads version {SNAPSHOT_VERSION})",
                file.version
            )));
        }
        let mut image = MetadataImage {
            last_applied_index: file.last_applied_index,
            next_producer_id: file.next_producer_id,
            cluster_id: file.cluster_id,
            ..MetadataImage::default()
        };
        for broker in file.brokers {
            if image.brokers.insert(broker.broker_id, broker).is_some() {
                return Err(SnapshotError::Decode("a broker appears twice".into()));
            }
        }
        for topic in file.topics {
            if image
                .topic_ids_by_name
                .insert(topic.name.clone(), topic.topic_id)
                .is_some()
            {
                return Err(SnapshotError::Decode(format!(
                    "topic '{}' appears twice",
                    topic.name
                )));
            }
            if image.topics.insert(topic.topic_id, topic).is_some() {
                return Err(SnapshotError::Decode("a topic id appears twice".into()));
            }
        }
        for (resource, entries) in file.configs {
            if image.configs.insert(resource, entries).is_some() {
                return Err(SnapshotError::Decode(
                    "a config resource appears twice".into(),
                ));
            }
        }
        image.check_consistent().map_err(SnapshotError::Decode)?;
        Ok(image)
    }

    /// Checks the invariants every applied image keeps (see the module doc).
    pub fn check_consistent(&self) -> Result<(), String> {
        for (id, broker) in &self.brokers {
            if *id != broker.broker_id || *id < 0 {
                return Err(format!(
                    "broker {id} is filed under the wrong id or is negative"
                ));
            }
            if broker.broker_epoch < 0 {
                return Err(format!("broker {id} has a negative epoch"));
            }
        }
        if self.topic_ids_by_name.len() != self.topics.len() {
            return Err("topic names and topic ids do not match".into());
        }
        for (id, topic) in &self.topics {
            if *id != topic.topic_id || *id == [0u8; 16] {
                return Err(format!(
                    "topic '{}' is filed under the wrong id or is zero",
                    topic.name
                ));
            }
            if topic.name.is_empty() || self.topic_ids_by_name.get(&topic.name) != Some(id) {
                return Err(format!("topic '{}' is not found by its name", topic.name));
            }
            for (expected, (index, state)) in topic.partitions.iter().enumerate() {
                if usize::try_from(*index).ok() != Some(expected) {
                    return Err(format!(
                        "topic '{}' partitions are not dense from 0",
                        topic.name
                    ));
                }
                if state.leader_epoch < 0 || state.partition_epoch < 0 {
                    return Err(format!(
                        "partition {index} of '{}' has a negative epoch",
                        topic.name
                    ));
                }
                check_partition_shape(&state.replicas, &state.isr, state.leader)
                    .and_then(|()| {
                        check_reassignment_shape(
                            &state.replicas,
                            &state.adding_replicas,
                            &state.removing_replicas,
                        )
                    })
                    .map_err(|why| format!("partition {index} of '{}': {why}", topic.name))?;
            }
        }
        for (resource, entries) in &self.configs {
            if entries.is_empty() {
                return Err(format!("{resource:?} has an empty config map"));
            }
            if entries.keys().any(|k| k.is_empty()) {
                return Err(format!("{resource:?} has a config with an empty name"));
            }
            if let ConfigResource::Topic(name) = resource
                && !self.topic_ids_by_name.contains_key(name)
            {
                return Err(format!("configs for unknown topic '{name}'"));
            }
        }
        if self.next_producer_id < 0 {
            return Err("the next producer id is negative".into());
        }
        Ok(())
    }

    // Queries the broker answers from.

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Registered brokers that are not fenced: the ones that may lead.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether `weir cluster decommission` marked the broker (its dynamic
    /// config [`DECOMMISSIONED_CONFIG`] is `true`): placement keeps new
    /// replicas off it, across controller failovers and restarts, until
    /// `weir cluster recommission` clears the mark.
    pub fn is_decommissioned(&self, broker_id: BrokerId) -> bool {
        self.configs
            .get(&ConfigResource::Broker(Some(broker_id)))
            .and_then(|c| c.get(DECOMMISSIONED_CONFIG))
            .is_some_and(|v| v.trim() == "true")
    }

    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    pub fn topic(&self, topic_id: &TopicId) -> Option<&TopicImage> {
        self.topics.get(topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|id| self.topics.get(id))
    }

    pub fn partition(&self, topic_id: &TopicId, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic_id)?.partitions.get(&partition)
    }

    /// Every partition, in topic-id then partition order.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionRef<'_>> {
        self.topics.values().flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(move |(partition, state)| PartitionRef {
                    topic,
                    partition: *partition,
                    state,
                })
        })
    }

    /// Partitions where `broker_id` is a replica.
    pub fn partitions_with_replica(
        &self,
        broker_id: BrokerId,
    ) -> impl Iterator<Item = PartitionRef<'_>> {
        self.partitions()
            .filter(move |p| p.state.replicas.contains(&broker_id))
    }

    /// Partitions `broker_id` leads.
    pub fn partitions_led_by(&self, broker_id: BrokerId) -> impl Iterator<Item = PartitionRef<'_>> {
        self.partitions()
            .filter(move |p| p.state.leader == broker_id)
    }

    /// Partitions without a leader (`NO_LEADER`): offline to clients.
    pub fn offline_partitions(&self) -> impl Iterator<Item = PartitionRef<'_>> {
        self.partitions().filter(|p| p.state.leader == NO_LEADER)
    }

    /// The configs set for `resource`; `None` when none are.
    pub fn configs_of(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T1: TopicId = [1; 16];
    const T2: TopicId = [2; 16];

    fn register(broker_id: BrokerId) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id: [broker_id as u8; 16],
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
            }],
            rack: None,
            fenced: true,
        }
    }

    fn partition(topic_id: TopicId, partition: i32, replicas: &[BrokerId]) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn topic(name: &str, topic_id: TopicId) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id,
        }
    }

    /// Applies records at consecutive indexes from 1; all must apply.
    fn image_of(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for (i, record) in records.iter().enumerate() {
            image.apply(i as u64 + 1, record).expect("applies");
        }
        image
    }

    /// A record that must be refused: the error comes back, and nothing but
    /// the last applied index moves.
    fn assert_refused(image: &mut MetadataImage, index: u64, record: &MetadataRecord) {
        let before = image.clone();
        assert!(
            image.apply(index, record).is_err(),
            "{record:?} should be refused"
        );
        let mut expected = before;
        expected.last_applied_index = Some(index);
        assert_eq!(*image, expected, "a refused record changed the image");
    }

    #[test]
    fn broker_epoch_is_the_index_of_its_registration_and_a_reregistration_replaces_it() {
        let mut image = MetadataImage::new();
        image.apply(7, &register(1)).unwrap();
        assert_eq!(image.broker(1).unwrap().broker_epoch, 7);
        assert!(image.broker(1).unwrap().fenced);
        image
            .apply(
                8,
                &MetadataRecord::UnfenceBroker {
                    broker_id: 1,
                    broker_epoch: 7,
                },
            )
            .unwrap();
        assert!(!image.broker(1).unwrap().fenced);
        image.apply(12, &register(1)).unwrap();
        let broker = image.broker(1).unwrap();
        assert_eq!((broker.broker_epoch, broker.fenced), (12, true));
        assert_eq!(image.brokers.len(), 1);
    }

    #[test]
    fn fence_unfence_and_unregister_with_a_stale_epoch_are_refused() {
        let mut image = MetadataImage::new();
        image.apply(3, &register(1)).unwrap();
        image.apply(5, &register(1)).unwrap();
        for record in [
            MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 3,
            },
            MetadataRecord::FenceBroker {
                broker_id: 1,
                broker_epoch: 3,
            },
            MetadataRecord::UnregisterBroker {
                broker_id: 1,
                broker_epoch: 3,
            },
            MetadataRecord::UnfenceBroker {
                broker_id: 2,
                broker_epoch: 5,
            },
        ] {
            assert_refused(&mut image, 6, &record);
        }
        image
            .apply(
                7,
                &MetadataRecord::UnfenceBroker {
                    broker_id: 1,
                    broker_epoch: 5,
                },
            )
            .unwrap();
        image
            .apply(
                8,
                &MetadataRecord::FenceBroker {
                    broker_id: 1,
                    broker_epoch: 5,
                },
            )
            .unwrap();
        assert!(image.broker(1).unwrap().fenced);
        image
            .apply(
                9,
                &MetadataRecord::UnregisterBroker {
                    broker_id: 1,
                    broker_epoch: 5,
                },
            )
            .unwrap();
        assert!(image.broker(1).is_none());
    }

    #[test]
    fn partition_change_bumps_the_partition_epoch_always_and_the_leader_epoch_when_a_leader_is_named()
     {
        let mut image = image_of(&[topic("t", T1), partition(T1, 0, &[1, 2, 3])]);
        let change = |leader: Option<BrokerId>, isr: Option<Vec<BrokerId>>| {
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 0,
                leader,
                isr,
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            }
        };
        image.apply(10, &change(None, Some(vec![1, 2]))).unwrap();
        let state = image.partition(&T1, 0).unwrap();
        assert_eq!(
            (state.leader, state.leader_epoch, state.partition_epoch),
            (1, 0, 1)
        );
        assert_eq!(state.isr, vec![1, 2]);
        image.apply(11, &change(Some(2), None)).unwrap();
        let state = image.partition(&T1, 0).unwrap();
        assert_eq!(
            (state.leader, state.leader_epoch, state.partition_epoch),
            (2, 1, 2)
        );
        image.apply(12, &change(Some(NO_LEADER), None)).unwrap();
        let state = image.partition(&T1, 0).unwrap();
        assert_eq!(
            (state.leader, state.leader_epoch, state.partition_epoch),
            (NO_LEADER, 2, 3)
        );
        assert_eq!(image.offline_partitions().count(), 1);
    }

    #[test]
    fn a_partition_change_that_breaks_the_partition_is_refused() {
        let mut image = image_of(&[topic("t", T1), partition(T1, 0, &[1, 2])]);
        let bad = [
            // Leader outside the ISR.
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 0,
                leader: Some(3),
                isr: None,
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
            // ISR outside the replicas.
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 0,
                leader: None,
                isr: Some(vec![1, 4]),
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
            // Leader dropped from the ISR.
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 0,
                leader: None,
                isr: Some(vec![2]),
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
            // Duplicate replicas.
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 0,
                leader: None,
                isr: None,
                replicas: Some(vec![1, 2, 2]),
                adding_replicas: None,
                removing_replicas: None,
            },
            // Unknown partition and topic.
            MetadataRecord::PartitionChange {
                topic_id: T1,
                partition: 1,
                leader: None,
                isr: None,
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
            MetadataRecord::PartitionChange {
                topic_id: T2,
                partition: 0,
                leader: None,
                isr: None,
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
        ];
        for record in &bad {
            assert_refused(&mut image, 5, record);
        }
    }

    #[test]
    fn partitions_must_arrive_densely_and_topics_must_be_unique() {
        let mut image = image_of(&[topic("t", T1), partition(T1, 0, &[1])]);
        assert_refused(&mut image, 5, &partition(T1, 2, &[1]));
        assert_refused(&mut image, 5, &partition(T1, 0, &[1]));
        assert_refused(&mut image, 5, &partition(T2, 0, &[1]));
        assert_refused(&mut image, 5, &topic("t", T2));
        assert_refused(&mut image, 5, &topic("u", T1));
        assert_refused(&mut image, 5, &topic("u", [0; 16]));
        image.apply(6, &partition(T1, 1, &[1])).unwrap();
        assert_eq!(image.topic_by_name("t").unwrap().partitions.len(), 2);
    }

    #[test]
    fn remove_topic_drops_its_partitions_and_configs_and_frees_the_name() {
        let set = |topic: &str, name: &str, value: Option<&str>| MetadataRecord::Config {
            resource: ConfigResource::Topic(topic.into()),
            name: name.into(),
            value: value.map(str::to_string),
        };
        let mut image = image_of(&[
            topic("t", T1),
            partition(T1, 0, &[1]),
            set("t", "retention.ms", Some("1000")),
        ]);
        image
            .apply(10, &MetadataRecord::RemoveTopic { topic_id: T1 })
            .unwrap();
        assert!(image.topic_by_name("t").is_none());
        assert!(image.configs.is_empty());
        assert_refused(
            &mut image,
            11,
            &MetadataRecord::RemoveTopic { topic_id: T1 },
        );
        // A config for a topic that is gone would be inherited by its successor.
        assert_refused(&mut image, 11, &set("t", "retention.ms", Some("5")));
        image.apply(12, &topic("t", T2)).unwrap();
        assert!(
            image
                .configs_of(&ConfigResource::Topic("t".into()))
                .is_none()
        );
    }

    #[test]
    fn a_config_set_to_none_removes_the_key_and_an_empty_resource_is_dropped() {
        let broker = ConfigResource::Broker(None);
        let mut image = MetadataImage::new();
        let set = |name: &str, value: Option<&str>| MetadataRecord::Config {
            resource: ConfigResource::Broker(None),
            name: name.into(),
            value: value.map(str::to_string),
        };
        image.apply(1, &set("a", Some("1"))).unwrap();
        image.apply(2, &set("b", Some("2"))).unwrap();
        image.apply(3, &set("a", None)).unwrap();
        assert_eq!(image.configs_of(&broker).unwrap().len(), 1);
        image.apply(4, &set("b", None)).unwrap();
        assert!(image.configs.is_empty());
        image.apply(5, &set("b", None)).unwrap();
        assert_refused(&mut image, 6, &set("", Some("x")));
    }

    #[test]
    fn producer_id_blocks_advance_and_never_go_back() {
        let block = |first: i64, size: i64| MetadataRecord::ProducerIds {
            broker_id: 1,
            broker_epoch: 1,
            first_producer_id: first,
            size,
        };
        let mut image = MetadataImage::new();
        image.apply(1, &block(0, 1000)).unwrap();
        assert_eq!(image.next_producer_id, 1000);
        assert_refused(&mut image, 2, &block(500, 1000));
        assert_refused(&mut image, 2, &block(1000, 0));
        assert_refused(&mut image, 2, &block(i64::MAX - 1, 10));
        image.apply(3, &block(1000, 1000)).unwrap();
        assert_eq!(image.next_producer_id, 2000);
    }

    #[test]
    fn the_last_applied_index_advances_on_refused_records_and_never_goes_back() {
        let mut image = MetadataImage::new();
        image
            .apply(4, &MetadataRecord::RemoveTopic { topic_id: T1 })
            .unwrap_err();
        assert_eq!(image.last_applied_index, Some(4));
        image.apply(4, &MetadataRecord::NoOp).unwrap();
        image.apply(3, &MetadataRecord::NoOp).unwrap_err();
        assert_eq!(image.last_applied_index, Some(4));
        image.note_applied(9);
        image.note_applied(8);
        assert_eq!(image.last_applied_index, Some(9));
    }

    #[test]
    fn queries_find_partitions_by_broker_and_live_brokers() {
        let mut image = image_of(&[
            register(1),
            register(2),
            topic("t", T1),
            partition(T1, 0, &[1, 2]),
            partition(T1, 1, &[2]),
        ]);
        image
            .apply(
                10,
                &MetadataRecord::UnfenceBroker {
                    broker_id: 2,
                    broker_epoch: 2,
                },
            )
            .unwrap();
        assert_eq!(
            image
                .live_brokers()
                .map(|b| b.broker_id)
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(image.is_live(2) && !image.is_live(1) && !image.is_live(3));
        assert_eq!(image.partitions_with_replica(2).count(), 2);
        assert_eq!(
            image
                .partitions_led_by(2)
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(image.partitions_led_by(1).next().unwrap().topic.name, "t");
        assert_eq!(image.offline_partitions().count(), 0);
    }

    #[test]
    fn a_snapshot_restores_the_same_image() {
        let mut image = image_of(&[
            register(1),
            topic("t", T1),
            partition(T1, 0, &[1]),
            MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                name: "cleanup.policy".into(),
                value: Some("compact".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Group("g".into()),
                name: "consumer.session.timeout.ms".into(),
                value: Some("45000".into()),
            },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 1,
                first_producer_id: 0,
                size: 1000,
            },
        ]);
        image.note_applied(40);
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored, image);
        assert_eq!(
            MetadataImage::from_snapshot(&MetadataImage::new().to_snapshot()).unwrap(),
            MetadataImage::new()
        );
    }

    #[test]
    fn a_snapshot_that_is_not_ours_is_refused() {
        let image = image_of(&[topic("t", T1), partition(T1, 0, &[1])]);
        let text = String::from_utf8(image.to_snapshot()).unwrap();
        for bad in [
            text.replace("\"version\":1", "\"version\":2"),
            // Partition 0 renamed 3: not dense.
            text.replace("\"0\":{", "\"3\":{"),
            // The leader outside the ISR.
            text.replace("\"leader\":1", "\"leader\":2"),
            text[..text.len() / 2].to_string(),
            String::new(),
            "null".into(),
        ] {
            assert!(
                MetadataImage::from_snapshot(bad.as_bytes()).is_err(),
                "accepted {bad}"
            );
        }
        let too_big = MetadataImage::from_snapshot_at_most(text.as_bytes(), 10);
        assert!(matches!(too_big, Err(SnapshotError::Decode(m)) if m.contains("limit")));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_snapshot_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = MetadataImage::from_snapshot(&bytes);
        }

        #[test]
        fn a_mangled_snapshot_is_refused_or_consistent(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let image = image_of(&[register(1), topic("t", T1), partition(T1, 0, &[1]), partition(T1, 1, &[1])]);
            let mut bytes = image.to_snapshot();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(restored) = MetadataImage::from_snapshot(&bytes) {
                prop_assert!(restored.check_consistent().is_ok());
            }
        }
    }
}

#[cfg(test)]
mod cluster_id_tests {
    use super::*;

    #[test]
    fn the_first_cluster_id_claim_wins_and_survives_a_snapshot() {
        let mut image = MetadataImage::new();
        let claim = |id: &str| MetadataRecord::ClusterId {
            cluster_id: id.to_string(),
        };
        image.apply(1, &claim("first")).unwrap();
        image.apply(2, &claim("first")).unwrap();
        assert!(image.apply(3, &claim("second")).is_err());
        assert!(image.apply(4, &claim("")).is_err());
        assert_eq!(image.cluster_id.as_deref(), Some("first"));
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored, image);
    }
}
