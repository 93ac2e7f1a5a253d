//! The topic registry: which topics exist, their partitions and configs, and
//! how that survives a restart.
//!
//! Layout under the data directory:
//! - `meta/cluster.json`: the cluster id, made on first start.
//! - `meta/topics/<topic>.json`: one file per topic (id, partition count,
//!   config overrides), written atomically (temp file, fsync, rename, fsync dir).
//! - `<topic>-<partition>/`: each partition's log directory (Kafka's naming).
//!
//! A topic exists exactly when its meta file does. Deletion removes the meta
//! file first, so a crash mid-delete leaves only orphan log directories, which
//! the next start removes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_log::{Log, LogConfig, LogEnv, durable};

use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topic_config::TopicConfig;
use weir_protocol::error_code::ErrorCode;

pub use weir_metadata::names::TOPIC_NAME_CHARS_MAX;
/// A bound on partitions per topic, so a CreateTopics can't ask for a billion directories.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// The most partitions a topic's meta file may claim. Above what the metadata log can
/// describe (a topic grows through several CreatePartitions, each within the controller's
/// per-request bound), far below what a corrupt count could make the broker open.
const META_PARTITIONS_MAX: i32 = 1_000_000;

/// What is persisted for one topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (KIP-516), as 32 hex chars on disk.
    pub id_hex: String,
    pub partitions: i32,
    /// The partitions whose logs this broker holds; absent (as written
    /// before the cluster) means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted: Option<Vec<i32>>,
    /// Only the configs set explicitly for this topic; the rest follow broker defaults.
    pub overrides: BTreeMap<String, String>,
}

/// A live topic.
pub struct Topic {
    pub name: String,
    pub id: [u8; 16],
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    /// The partitions whose logs this broker holds, by index ascending. On a
    /// single node that is all of them; in a cluster, those assigned here.
    pub partitions: Vec<Arc<Partition>>,
    /// How many partitions the topic has across the cluster.
    pub partition_count: i32,
}

impl Topic {
    /// The partition `index`, if this broker holds its log.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|i| &self.partitions[i])
    }

    /// The partition `index` for a request that only its leader may serve:
    /// UNKNOWN_TOPIC_OR_PARTITION when the topic has no such partition,
    /// NOT_LEADER_OR_FOLLOWER when it does but this broker does not lead it
    /// (clients then refresh metadata and go to the leader).
    pub fn led_partition(&self, index: i32) -> Result<&Arc<Partition>, ErrorCode> {
        if !(0..self.partition_count).contains(&index) {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        match self.partition(index) {
            Some(p) if p.is_leader() => Ok(p),
            _ => Err(ErrorCode::NotLeaderOrFollower),
        }
    }

    fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            id_hex: hex(&self.id),
            partitions: self.partition_count,
            hosted: Some(self.partitions.iter().map(|p| p.index).collect()),
            overrides: self.overrides.clone(),
        }
    }
}

/// [`Topic::led_partition`] for a topic a request named that may not exist here: a missing
/// topic is UNKNOWN_TOPIC_ID when the request named it by id (v13+ Produce and Fetch), else
/// UNKNOWN_TOPIC_OR_PARTITION. The one place Produce, Fetch, ListOffsets, OffsetForLeaderEpoch
/// and DeleteRecords get their routing errors from.
pub fn led_partition_of(
    topic: Option<&Arc<Topic>>,
    index: i32,
    by_id: bool,
) -> Result<(&Arc<Topic>, &Arc<Partition>), ErrorCode> {
    match topic {
        Some(t) => t.led_partition(index).map(|p| (t, p)),
        None if by_id => Err(ErrorCode::UnknownTopicId),
        None => Err(ErrorCode::UnknownTopicOrPartition),
    }
}

// Kafka's topic-name rules live with the controller, which decides
// CreateTopics; the broker checks names by the same functions.
pub use weir_metadata::names::{collision_key, validate_topic_name};

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 16 random bytes for topic ids and the cluster id.
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let filled = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if filled.is_err() {
        // Fall back to time and address entropy; ids need only be unique, not secret.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id = (nanos ^ (&id as *const _ as u128)).to_le_bytes();
    }
    id
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    durable::write_file_atomically(path, bytes)
}

/// All topics of this broker.
pub struct TopicRegistry {
    data_dir: PathBuf,
    meta_dir: PathBuf,
    env: Arc<LogEnv>,
    topics: HashMap<String, Arc<Topic>>,
    /// Topic defaults in force: static broker config plus dynamic broker
    /// configs. Every topic's config is these plus its own overrides.
    defaults: TopicConfig,
    /// Kafka's broker config `producer.id.expiration.ms`, given to every log.
    producer_id_expiration_ms: i64,
}

impl TopicRegistry {
    /// Loads every topic from disk, opening (and so recovering) its partition logs.
    pub fn load(
        data_dir: &Path,
        env: Arc<LogEnv>,
        defaults: &TopicConfig,
        producer_id_expiration_ms: i64,
    ) -> Result<TopicRegistry, BrokerError> {
        let meta_dir = data_dir.join("meta").join("topics");
        durable::create_dir_all(&meta_dir)?;
        let mut registry = TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            meta_dir,
            env,
            topics: HashMap::new(),
            defaults: defaults.clone(),
            producer_id_expiration_ms,
        };
        for entry in fs::read_dir(&registry.meta_dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = fs::read_to_string(&path)?;
            let meta: TopicMeta = serde_json::from_str(&text).map_err(|e| {
                BrokerError::Corrupt(format!("topic metadata {}: {e}", path.display()))
            })?;
            let topic = registry.open_topic(&meta, defaults)?;
            registry.topics.insert(meta.name.clone(), Arc::new(topic));
        }
        registry.remove_orphan_partitions()?;
        Ok(registry)
    }

    /// A topic's log settings plus the broker-wide ones logs need.
    fn log_config(&self, config: &TopicConfig) -> LogConfig {
        LogConfig {
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            ..config.log_config()
        }
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    fn open_topic(&self, meta: &TopicMeta, defaults: &TopicConfig) -> Result<Topic, BrokerError> {
        let config = defaults
            .with_overrides(meta.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| BrokerError::Corrupt(format!("topic {}: {e}", meta.name)))?;
        let id = unhex(&meta.id_hex)
            .ok_or_else(|| BrokerError::Corrupt(format!("topic {} has a bad id", meta.name)))?;
        // A count off the disk is bounded before anything is opened for it: a corrupted file
        // must not make the broker open (or allocate for) millions of partitions.
        if !(1..=META_PARTITIONS_MAX).contains(&meta.partitions) {
            return Err(BrokerError::Corrupt(format!(
                "topic {} claims {} partitions (at most {META_PARTITIONS_MAX})",
                meta.name, meta.partitions
            )));
        }
        let mut partitions = Vec::new();
        let mut hosted: Vec<i32> = match &meta.hosted {
            Some(hosted) => hosted.clone(),
            None => (0..meta.partitions).collect(),
        };
        hosted.sort_unstable();
        hosted.dedup();
        for index in hosted {
            if !(0..meta.partitions).contains(&index) {
                return Err(BrokerError::Corrupt(format!(
                    "topic {} holds partition {index} of {}",
                    meta.name, meta.partitions
                )));
            }
            partitions.push(Arc::new(self.open_partition(&meta.name, index, &config)?));
        }

        Ok(Topic {
            name: meta.name.clone(),
            id,
            overrides: meta.overrides.clone(),
            config,
            partitions,
            partition_count: meta.partitions,
        })
    }

    fn open_partition(
        &self,
        topic: &str,
        index: i32,
        config: &TopicConfig,
    ) -> Result<Partition, BrokerError> {
        let dir = self.partition_dir(topic, index);
        let log = Arc::new(Log::open(&self.env, &dir, self.log_config(config))?);
        // This broker leads the partition from here on, at epoch 0 (single node). Recording
        // the epoch now, as Kafka does at leader election, keeps the leader-epoch checkpoint
        // (a file replaced with two syncs) off the first produce's path: a fresh
        // 1,000-partition topic spent its first seconds of load writing them. A no-op when
        // the log already starts epoch 0 at or before its end.
        // Only for a log without epoch history: assigning epoch 0 at the end
        // of a log whose cache holds later epochs would replace that history
        // (and OffsetForLeaderEpoch would then find no epoch a consumer read).
        if log.leader_epochs().is_empty() {
            log.assign_leader_epoch(0, log.log_end_offset())?;
        }
        // The high watermark stays where the log's checkpoint left it: it moves once the
        // image says who leads (a leader raises it as its ISR syncs, which after a crash
        // includes the recovered tail reaching the disk; a follower takes its leader's).
        Ok(Partition::new(topic.to_string(), index, log))
    }

    /// Removes partition directories whose topic no longer exists (a crash mid-delete).
    fn remove_orphan_partitions(&self) -> Result<(), BrokerError> {
        for entry in fs::read_dir(&self.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let live = self
                .topics
                .get(topic)
                .is_some_and(|t| t.partition(index).is_some());
            if !live && validate_topic_name(topic).is_ok() {
                tracing::warn!(dir = %entry.path().display(), "removing orphan partition directory");
                durable::remove_dir_all(&entry.path())?;
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Topic>> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: &[u8; 16]) -> Option<&Arc<Topic>> {
        self.topics.values().find(|t| &t.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Topic>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Checks a would-be topic without creating it (CreateTopics validate_only).
    pub fn check_new(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        validate_topic_name(name).map_err(BrokerError::InvalidTopic)?;
        if self.topics.contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let key = collision_key(name);
        if let Some(other) = self.topics.keys().find(|t| collision_key(t) == key) {
            return Err(BrokerError::InvalidTopic(format!(
                "topic '{name}' collides with existing topic '{other}' ('.' and '_' are treated alike)"
            )));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(format!(
                "partition count must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {partitions}"
            )));
        }
        Ok(())
    }

    /// The topic defaults in force (static and dynamic broker configs).
    pub fn defaults(&self) -> &TopicConfig {
        &self.defaults
    }

    /// Replaces the topic defaults (a dynamic broker config changed) and
    /// recomputes the config of every topic that has no override of its own
    /// for what changed. All or nothing: a topic whose overrides would not
    /// combine with the new defaults fails the whole change.
    pub fn set_defaults(&mut self, defaults: TopicConfig) -> Result<(), BrokerError> {
        let mut updated = Vec::with_capacity(self.topics.len());
        for topic in self.topics.values() {
            let config = defaults
                .with_overrides(
                    topic
                        .overrides
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .map_err(BrokerError::InvalidConfig)?;
            updated.push((topic.clone(), config));
        }
        for (topic, config) in updated {
            if config == topic.config {
                continue;
            }
            for partition in &topic.partitions {
                partition.log.update_config(self.log_config(&config));
            }
            let replaced = Topic {
                name: topic.name.clone(),
                id: topic.id,
                overrides: topic.overrides.clone(),
                config,
                partitions: topic.partitions.clone(),
                partition_count: topic.partition_count,
            };
            self.topics.insert(topic.name.clone(), Arc::new(replaced));
        }
        self.defaults = defaults;
        Ok(())
    }

    fn persist(&self, meta: &TopicMeta) -> Result<(), BrokerError> {
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| BrokerError::Internal(format!("serialize topic meta: {e}")))?;
        write_atomically(&self.meta_dir.join(format!("{}.json", meta.name)), &json)?;
        Ok(())
    }

    /// Deletes a topic and its data.
    pub fn delete(&mut self, name: &str) -> Result<(), BrokerError> {
        let Some(topic) = self.topics.remove(name) else {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        };
        // The metadata file goes first, durably: once it is gone, a crash can only leave
        // partition directories that the next start removes as orphans. The other order could
        // bring the topic back with empty partitions. The answer to the client waits for both.
        durable::remove_file(&self.meta_dir.join(format!("{name}.json")))?;
        for partition in &topic.partitions {
            partition.log.close().ok();
            let dir = self.partition_dir(name, partition.index);
            if let Err(e) = self.env.remove_dir_stepwise(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
            }
        }
        Ok(())
    }

    /// Makes this broker's copy of a topic match the metadata image: its id,
    /// partition count and overrides, and a log for each partition in
    /// `hosted` (those whose replicas include this broker). Returns the
    /// topic as it now is. A local topic of the same name with another id is
    /// an older topic deleted and re-created while this broker was away: its
    /// data goes.
    pub fn sync_topic(
        &mut self,
        name: &str,
        id: [u8; 16],
        partition_count: i32,
        hosted: &[i32],
        overrides: &BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(old) = self.topics.get(name).cloned()
            && old.id != id
        {
            tracing::warn!(topic = name, old_id = %hex(&old.id), new_id = %hex(&id),
                "the metadata log names another topic of this name; deleting the local copy");
            self.delete(name)?;
        }
        let existing = self.topics.get(name).cloned();
        let config = self
            .defaults
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .or_else(|e| {
                // A stored override this build can't read must not stop the
                // broker from serving the topic: fall back to the defaults.
                tracing::error!(topic = name, error = %e, "topic overrides not understood; using defaults");
                Ok::<_, BrokerError>(self.defaults.clone())
            })?;
        let mut partitions: Vec<Arc<Partition>> = Vec::with_capacity(hosted.len());
        let mut changed = existing.is_none();
        for &index in hosted {
            match existing.as_ref().and_then(|t| t.partition(index)) {
                Some(p) => partitions.push(p.clone()),
                None => {
                    partitions.push(Arc::new(self.open_partition(name, index, &config)?));
                    changed = true;
                }
            }
        }
        partitions.sort_by_key(|p| p.index);
        if let Some(old) = &existing {
            // Partitions no longer assigned here (a reassignment moved them).
            for p in &old.partitions {
                if !hosted.contains(&p.index) {
                    p.log.close().ok();
                    let dir = self.partition_dir(name, p.index);
                    if let Err(e) = self.env.remove_dir_stepwise(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
                    }
                    changed = true;
                }
            }
            if old.partition_count != partition_count || &old.overrides != overrides {
                changed = true;
            }
            if old.config != config {
                for p in &partitions {
                    p.log.update_config(self.log_config(&config));
                }
            }
        }
        if !changed {
            return Ok(existing.expect("unchanged implies it existed"));
        }
        let topic = Topic {
            name: name.to_string(),
            id,
            overrides: overrides.clone(),
            config,
            partitions,
            partition_count,
        };
        self.persist(&topic.meta())?;
        let topic = Arc::new(topic);
        self.topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Flushes and checkpoints every log (clean shutdown).
    pub fn close_all(&self) {
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                if let Err(e) = partition.log.close() {
                    tracing::error!(topic = %topic.name, partition = partition.index, error = %e, "close failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod meta_bounds {
    use super::*;

    #[test]
    fn a_meta_file_claiming_too_many_partitions_is_refused_before_opening_any() {
        let dir = tempfile::tempdir().unwrap();
        let meta_dir = dir.path().join("meta").join("topics");
        std::fs::create_dir_all(&meta_dir).unwrap();
        let meta = TopicMeta {
            name: "huge".into(),
            id_hex: "0123456789abcdef0123456789abcdef".into(),
            partitions: i32::MAX,
            hosted: None,
            overrides: BTreeMap::new(),
        };
        std::fs::write(
            meta_dir.join("huge.json"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let loaded = TopicRegistry::load(
            dir.path(),
            LogEnv::new(16),
            &TopicConfig::default(),
            86_400_000,
        );
        match loaded {
            Err(BrokerError::Corrupt(message)) => assert!(message.contains("claims"), "{message}"),
            Err(other) => panic!("expected a corrupt-meta error, got {other}"),
            Ok(_) => panic!("a meta file claiming {} partitions was opened", i32::MAX),
        }
        // Nothing was opened for it.
        assert!(!dir.path().join("huge-0").exists());
    }
}
