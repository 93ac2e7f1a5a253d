//! The group coordinator: classic consumer groups and committed offsets.
//!
//! - [`group`]: one group as a sans-I/O state machine (join/sync/heartbeat/
//!   leave/timeouts → replies to deliver). All the protocol rules live there.
//! - [`consumer`]: one group of the consumer protocol (KIP-848, ConsumerGroupHeartbeat)
//!   as a sans-I/O state machine with its server-side assignors. Such a group
//!   lives inside a [`group::Group`] (field `consumer`), whose classic side
//!   then stays Empty and only holds the committed offsets.
//! - Online migration (KIP-848, Kafka's default `bidirectional` policy): a
//!   consumer-protocol member joining a live classic group converts it
//!   ([`group::Group::upgrade_to_consumer`]); its classic members stay, and
//!   the consumer group answers their JoinGroup/SyncGroup/Heartbeat/
//!   LeaveGroup itself. When only classic members are left it converts back
//!   ([`group::Group::maybe_downgrade`]) and rebalances. An empty group of
//!   either type is simply replaced by the first member to come.
//! - [`records`]: the key/value layouts of `__consumer_offsets` (Kafka's).
//! - this module: the async shell. It owns the groups behind one mutex, turns
//!   parked JoinGroup/SyncGroup requests into oneshot channels, appends state
//!   changes to `__consumer_offsets`, and runs one timer task that drives
//!   [`group::Group::tick`] at the next deadline (never polling).
//!
//! Durability: a group is stored in partition `hash(group) % partitions` of
//! `__consumer_offsets` (Kafka's placement, with Java's `String.hashCode`).
//! Offset commits and the group's membership (written when it becomes Stable
//! or Empty) are appended there; commits are acknowledged, and SyncGroup
//! answered, only once their record is fsynced. On start the coordinator
//! replays every partition to rebuild groups and offsets. The in-memory state
//! changes when the record is appended, before it is durable: a reader may see
//! a commit whose fsync later fails (the committer itself gets the error).
//!
//! Transactional offset commits (TxnOffsetCommit) are written as
//! transactional batches under the producer's id and epoch and kept in
//! `txn_offsets` until the transaction coordinator writes the marker to that
//! partition ([`GroupCoordinator::complete_txn_offsets`]): a commit marker
//! publishes them, an abort marker drops them. Replay does the same with the
//! markers it finds; offsets without a marker stay pending.
//!
//! Consumer-protocol membership (epochs, members, target assignments) is kept
//! in memory only; Kafka's ConsumerGroup* records are not written. After a
//! restart such members get UNKNOWN_MEMBER_ID and rejoin with epoch 0; their
//! committed offsets are durable like any other.
//!
//! The log has no compactor yet, so the topic is created with
//! `cleanup.policy=compact` and no retention: nothing is ever deleted by time,
//! and replay applies tombstones itself.

pub mod consumer;
pub mod group;
pub mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use weir_log::{AppendOptions, LogError};
use weir_protocol::compression::Compression;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::record::{self, BatchHeader, Record, RecordBatchBuilder};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::topics::{Topic, TopicRegistry};
use crate::{Broker, now_ms};
use consumer::{
    Assignment, ConsumerGroup, ConsumerLimits, ConsumerMember, HeartbeatReply, HeartbeatRequest,
    TopicCounts,
};
pub use group::GroupState;
use group::{
    Group, GroupLimits, JoinReply, JoinRequest, OffsetEntry, Outbox, Reply, SyncReply, SyncRequest,
};

/// Kafka's internal topic for group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Read size while replaying a partition at start.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Cap on a decompressed batch during replay (we never compress, but be safe).
const REPLAY_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;
/// The timer wakes at least this often to run offset expiry.
const IDLE_TICK_MS: u64 = 60_000;

type Waiter = oneshot::Sender<Reply>;
/// Resolves when an appended group record is durable.
pub type Durable = oneshot::Receiver<Result<(), LogError>>;

/// Committed offsets by topic, then partition (`None`: nothing committed).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetEntry>)>)>;
/// Per-partition outcomes by topic.
pub type PartitionCodes = Vec<(String, Vec<(i32, ErrorCode)>)>;

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Kafka's state name (classic or consumer-protocol states).
    pub state_name: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// What `/metrics` shows of a group.
#[derive(Debug, Clone)]
pub struct GroupMetrics {
    pub group_id: String,
    pub state_name: &'static str,
    pub members: usize,
    /// (topic, partition, committed offset).
    pub offsets: Vec<(String, i32, i64)>,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name (classic or consumer-protocol states).
    pub state_name: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// A consumer-protocol group as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub state_name: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    /// Each member with its target assignment.
    pub members: Vec<(ConsumerMember, Assignment)>,
}

pub struct GroupCoordinator {
    limits: GroupLimits,
    consumer_limits: ConsumerLimits,
    /// Partitions of `__consumer_offsets` when we create it.
    partitions_configured: i32,
    /// Kafka's `offsets.retention.minutes`, in ms.
    offsets_retention_ms: i64,
    offsets_retention_check_interval_ms: i64,
    /// Kafka's `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    groups: Mutex<HashMap<String, Group<Waiter>>>,
    /// Wakes the timer task when a deadline may have moved earlier.
    wake: Arc<Notify>,
    timer_started: AtomicBool,
    stopped: AtomicBool,
    next_expiry_check_ms: Mutex<i64>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by
    /// producer id: stored in `__consumer_offsets` as transactional batches,
    /// but visible to OffsetFetch only once the commit marker is written.
    /// Lock order: `groups`, then this.
    txn_offsets: Mutex<HashMap<i64, TxnOffsets>>,
}

/// Offsets a transaction committed, by (group, topic, partition).
type TxnOffsets = std::collections::BTreeMap<(String, String, i32), OffsetEntry>;

/// Java's `String.hashCode`, so groups land on the partitions Kafka would pick.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition that holds `group_id`.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

impl GroupCoordinator {
    /// Builds the coordinator and replays `__consumer_offsets` if it exists.
    pub fn open(
        config: &BrokerConfig,
        registry: &TopicRegistry,
    ) -> Result<GroupCoordinator, BrokerError> {
        let coordinator = GroupCoordinator {
            limits: GroupLimits {
                session_timeout_ms_min: config.group_min_session_timeout_ms,
                session_timeout_ms_max: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: i64::try_from(config.group_initial_rebalance_delay_ms)
                    .unwrap_or(i64::MAX),
                members_max: config.group_max_size,
            },
            consumer_limits: ConsumerLimits {
                heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
                session_timeout_ms: config.group_consumer_session_timeout_ms,
                members_max: config.group_max_size,
            },
            partitions_configured: config.offsets_topic_partitions,
            offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval_ms: i64::try_from(
                config.offsets_retention_check_interval_ms,
            )
            .unwrap_or(i64::MAX),
            offset_metadata_bytes_max: config.offset_metadata_bytes_max,
            groups: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            timer_started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            // Kafka runs the first expiry pass one interval after start, not at once.
            next_expiry_check_ms: Mutex::new(now_ms().saturating_add(
                i64::try_from(config.offsets_retention_check_interval_ms).unwrap_or(i64::MAX),
            )),
            txn_offsets: Mutex::new(HashMap::new()),
        };
        if let Some(topic) = registry.get(OFFSETS_TOPIC) {
            coordinator.replay(topic, None)?;
        }
        Ok(coordinator)
    }

    /// This broker became the leader of `__consumer_offsets` partition `index`: the groups
    /// stored there are rebuilt from its log, which replication kept up to date while another
    /// broker coordinated them (Kafka's group load on becoming leader).
    pub fn load_partition(&self, topic: &Topic, index: i32) -> Result<(), BrokerError> {
        self.unload_partition(topic.partition_count, index);
        self.replay(topic, Some(index))
    }

    /// This broker no longer leads `__consumer_offsets` partition `index`: its groups are
    /// dropped from memory (their members are told NOT_COORDINATOR and find the new one).
    pub fn unload_partition(&self, partition_count: i32, index: i32) {
        let mut groups = self.lock();
        let before = groups.len();
        groups.retain(|id, _| partition_for(id, partition_count) != index);
        let dropped = before - groups.len();
        drop(groups);
        self.txn_offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
            .for_each(|offsets| {
                offsets.retain(|(group, _, _), _| partition_for(group, partition_count) != index)
            });
        if dropped > 0 {
            tracing::info!(
                partition = index,
                groups = dropped,
                "group coordinator unloaded a partition"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group<Waiter>>> {
        // Group transitions never leave a half-updated map behind a panic, so carry on.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds groups from `__consumer_offsets`: every partition, or only `only`.
    fn replay(&self, topic: &Topic, only: Option<i32>) -> Result<(), BrokerError> {
        let now = now_ms();
        let mut groups = self.lock();
        let mut records_read = 0usize;
        // Transactional offset commits wait for their partition's marker:
        // (producer id -> records) per partition, in log order.
        let mut open_txns: HashMap<i64, Vec<Record>> = HashMap::new();
        let mut still_open: HashMap<i64, TxnOffsets> = HashMap::new();
        for partition in topic
            .partitions
            .iter()
            .filter(|p| only.is_none_or(|i| p.index == i))
        {
            open_txns.clear();
            let log = &partition.log;
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            while offset < end {
                let result = log.read(offset, REPLAY_READ_BYTES, end)?;
                if result.bytes == 0 {
                    break;
                }
                let mut buf = Vec::with_capacity(result.bytes);
                result.read_into(&mut buf)?;
                let buf = Bytes::from(buf);
                let mut progressed = false;
                for batch in record::split_batches(&buf) {
                    let batch =
                        batch.map_err(|e| BrokerError::Corrupt(format!("{OFFSETS_TOPIC}: {e}")))?;
                    let header = BatchHeader::parse(&batch)
                        .map_err(|e| BrokerError::Corrupt(format!("{OFFSETS_TOPIC}: {e}")))?;
                    let next = header.last_offset().saturating_add(1);
                    if next <= offset {
                        continue;
                    }
                    offset = next;
                    progressed = true;
                    let decoded = record::decode_records(&batch, REPLAY_DECOMPRESSED_BYTES_MAX)
                        .map_err(|e| BrokerError::Corrupt(format!("{OFFSETS_TOPIC}: {e}")))?;
                    if header.is_control() {
                        // A marker publishes (commit) or drops (abort) the
                        // producer's transactional commits in this partition.
                        let commit = decoded
                            .first()
                            .and_then(|r| r.key.as_ref())
                            .map(|k| weir_protocol::control::parse_control_key(k));
                        let records = open_txns.remove(&header.producer_id).unwrap_or_default();
                        if let Some(Ok(Some(weir_protocol::control::ControlType::Commit))) = commit
                        {
                            for rec in records {
                                apply_record(&mut groups, rec, now);
                            }
                        }
                        continue;
                    }
                    if header.is_transactional() && header.producer_id >= 0 {
                        records_read += decoded.len();
                        open_txns
                            .entry(header.producer_id)
                            .or_default()
                            .extend(decoded);
                        continue;
                    }
                    for rec in decoded {
                        records_read += 1;
                        apply_record(&mut groups, rec, now);
                    }
                }
                if !progressed {
                    break;
                }
            }
            // Transactions without a marker yet: the transaction coordinator
            // completes or aborts them, and its marker publishes or drops these.
            for (pid, records) in open_txns.drain() {
                let pending = still_open.entry(pid).or_default();
                for rec in records {
                    if let Some((group, topic, partition, entry)) = decode_offset_record(rec) {
                        pending.insert((group, topic, partition), entry);
                    }
                }
            }
        }
        {
            let mut pending = self.txn_offsets.lock().unwrap_or_else(|e| e.into_inner());
            if only.is_none() {
                pending.clear();
            }
            for (pid, offsets) in still_open {
                pending.entry(pid).or_default().extend(offsets);
            }
        }
        tracing::info!(
            groups = groups.len(),
            records = records_read,
            partition = ?only,
            "group coordinator loaded"
        );
        Ok(())
    }

    /// Makes sure `__consumer_offsets` exists (created on first use).
    pub fn ensure_offsets_topic(&self, broker: &Arc<Broker>) -> Result<Arc<Topic>, ErrorCode> {
        broker.ensure_internal_topic(OFFSETS_TOPIC, self.partitions_configured)
    }

    /// Appends group records to the group's partition and returns when they'll be durable.
    fn append(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        entries: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Durable, ErrorCode> {
        let topic = self.ensure_offsets_topic(broker)?;
        let count = topic.partition_count;
        let Some(partition) = topic.partition(partition_for(group_id, count)) else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        // Only the partition's leader writes group state: a follower's log holds its
        // leader's records only, and a stale coordinator's write would fork it.
        if !partition.is_leader() {
            return Err(ErrorCode::NotCoordinator);
        }
        let now = now_ms();
        let mut builder = RecordBatchBuilder::new(Compression::None).base_timestamp(now);
        for (i, (key, value)) in entries.into_iter().enumerate() {
            builder.push(Record {
                offset_delta: i32::try_from(i).unwrap_or(i32::MAX),
                timestamp_delta: 0,
                key: Some(key),
                value,
                headers: Vec::new(),
            });
        }
        let batch = builder.build().map_err(|e| {
            tracing::error!(error = %e, "encoding a group record batch failed");
            ErrorCode::UnknownServerError
        })?;
        let options = AppendOptions {
            leader_epoch: partition.leader_epoch(),
            log_append_time_ms: None,
        };
        let info = partition.log.append(&batch, &options).map_err(|e| {
            tracing::warn!(error = %e, group = group_id, "appending to {OFFSETS_TOPIC} failed");
            ErrorCode::CoordinatorNotAvailable
        })?;
        Ok(broker.raise_watermark_when_durable(partition, info.last_offset + 1))
    }

    /// Runs `f` on a group (creating it if `create`), persists the group if it
    /// changed, and delivers the replies `f` produced (after the write is durable).
    fn with_group<R>(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        create: bool,
        f: impl FnOnce(&mut Group<Waiter>, &mut Outbox<Waiter>) -> R,
    ) -> Option<R> {
        self.start_timer(broker);
        let now = now_ms();
        let mut out = Vec::new();
        let mut groups = self.lock();
        if !groups.contains_key(group_id) {
            if !create {
                return None;
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now));
        }
        let group = groups.get_mut(group_id)?;
        let result = f(group, &mut out);
        let durable = self.persist_if_dirty(broker, group);
        if group.is_removable() && group.generation() == 0 {
            // Nothing was ever stored for it (e.g. a refused first join).
            groups.remove(group_id);
        }
        drop(groups);
        deliver(out, durable);
        self.wake.notify_one();
        Some(result)
    }

    fn persist_if_dirty(&self, broker: &Arc<Broker>, group: &mut Group<Waiter>) -> Option<Durable> {
        if !group.take_dirty() {
            return None;
        }
        let value = records::group_value(&group.stored());
        self.append(
            broker,
            &group.id,
            vec![(records::group_key(&group.id), Some(value))],
        )
        .ok()
    }

    fn start_timer(&self, broker: &Arc<Broker>) {
        if self.timer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Broker> = Arc::downgrade(broker);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let next_ms = {
                    let Some(broker) = weak.upgrade() else { return };
                    if broker.groups.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    broker.groups.tick(&broker, now_ms())
                };
                let wait_ms = u64::try_from(next_ms.saturating_sub(now_ms()))
                    .unwrap_or(0)
                    .min(IDLE_TICK_MS);
                let notified = wake.notified();
                let _ = tokio::time::timeout(Duration::from_millis(wait_ms.max(1)), notified).await;
            }
        });
    }

    /// Runs every group's timers and offset expiry; returns the next deadline.
    fn tick(&self, broker: &Arc<Broker>, now: i64) -> i64 {
        let expire = {
            let mut next_check = self
                .next_expiry_check_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let due = *next_check <= now;
            if due {
                *next_check =
                    now.saturating_add(self.offsets_retention_check_interval_ms.max(1_000));
            }
            due
        };
        let mut next = now.saturating_add(i64::try_from(IDLE_TICK_MS).unwrap_or(i64::MAX));
        let mut groups = self.lock();
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        for group in groups.values_mut() {
            if group.next_deadline_ms().is_some_and(|d| d <= now) {
                let mut out = Vec::new();
                group.tick(now, &mut out);
                let durable = self.persist_if_dirty(broker, group);
                deliveries.push((out, durable));
            }
            if expire {
                let expired = group.expire_offsets(now, self.offsets_retention_ms);
                let gone = group.is_removable();
                let mut tombstones: Vec<(Bytes, Option<Bytes>)> = expired
                    .iter()
                    .map(|(t, p)| (records::offset_key(&group.id, t, *p), None))
                    .collect();
                if gone {
                    tombstones.push((records::group_key(&group.id), None));
                    dead.push(group.id.clone());
                }
                if !tombstones.is_empty() {
                    tracing::info!(group = %group.id, offsets = expired.len(), removed = gone, "expired offsets");
                    let _ = self.append(broker, &group.id, tombstones);
                }
            }
            if let Some(d) = group.next_deadline_ms() {
                next = next.min(d);
            }
        }
        for id in dead {
            groups.remove(&id);
        }
        drop(groups);
        for (out, durable) in deliveries {
            deliver(out, durable);
        }
        next
    }

    /// Answers every parked JoinGroup/SyncGroup with NOT_COORDINATOR so
    /// connections can drain; call when shutdown begins.
    pub fn abandon_waiters(&self) {
        self.stopped.store(true, Ordering::Release);
        let mut out = Vec::new();
        for group in self.lock().values_mut() {
            group.drain_waiters(ErrorCode::NotCoordinator, &mut out);
        }
        deliver(out, None);
        self.wake.notify_one();
    }

    /// Stops the timer task.
    pub fn shutdown(&self) {
        self.abandon_waiters();
    }

    // ---- requests -------------------------------------------------------

    pub fn join(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        mut req: JoinRequest,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let prefix = req
            .instance_id
            .clone()
            .unwrap_or_else(|| req.client_id.clone());
        req.fresh_member_id = format!("{prefix}-{}", uuid_text());
        let create = req.member_id.is_empty();
        let member_id = req.member_id.clone();
        let limits = self.limits.clone();
        let consumer_limits = self.consumer_limits.clone();
        let topics = Self::topic_counts(broker);
        let handled = self.with_group(broker, group_id, create, |g, out| {
            if let Some(c) = g.consumer.as_mut().filter(|c| !c.is_empty()) {
                // A live consumer group serves classic members itself (KIP-848 migration).
                let reply = c.classic_join(req, &topics, &consumer_limits, &limits, now_ms());
                out.push((tx, Reply::Join(reply)));
                return;
            }
            // An empty group of either type is simply replaced.
            g.consumer = None;
            g.join(req, tx, now_ms(), &limits, out)
        });
        if handled.is_none() {
            // Unknown group with a member id: the member belongs to a group that is gone.
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Reply::Join(JoinReply::error(
                ErrorCode::UnknownMemberId,
                &member_id,
            )));
            return rx;
        }
        rx
    }

    pub fn sync(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        req: SyncRequest,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        if self
            .with_group(broker, group_id, false, |g, out| {
                match g.consumer.as_mut().filter(|c| !c.is_empty()) {
                    Some(c) => {
                        let reply = c.classic_sync(&req, now_ms());
                        out.push((tx, Reply::Sync(reply)));
                    }
                    None => g.sync(req, tx, now_ms(), out),
                }
            })
            .is_none()
        {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Reply::Sync(SyncReply::error(ErrorCode::UnknownMemberId)));
            return rx;
        }
        rx
    }

    pub fn heartbeat(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> ErrorCode {
        self.with_group(broker, group_id, false, |g, _| {
            match g.consumer.as_mut().filter(|c| !c.is_empty()) {
                Some(c) => c.classic_heartbeat(member_id, instance_id, generation, now_ms()),
                None => g.heartbeat(member_id, instance_id, generation, now_ms()),
            }
        })
        .unwrap_or(ErrorCode::UnknownMemberId)
    }

    /// LeaveGroup for several members: one error per member.
    pub fn leave(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<ErrorCode> {
        self.with_group(broker, group_id, false, |g, out| {
            if let Some(c) = g.consumer.as_mut().filter(|c| !c.is_empty()) {
                return members
                    .iter()
                    .map(|(m, i)| c.classic_leave(m, i.as_deref()))
                    .collect();
            }
            members
                .iter()
                .map(|(m, i)| g.leave(m, i.as_deref(), now_ms(), out))
                .collect()
        })
        .unwrap_or_else(|| vec![ErrorCode::UnknownMemberId; members.len()])
    }

    /// OffsetCommit: checks the member, applies the offsets and returns when they'll be durable.
    /// `Err` is the error for every partition. `api_version` is OffsetCommit's.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        api_version: i16,
        offsets: Vec<(String, i32, OffsetEntry)>,
    ) -> Result<Option<Durable>, ErrorCode> {
        self.ensure_offsets_topic(broker)?;
        // Kafka: a commit with a negative generation (or member epoch) to a
        // group that does not exist creates a "simple" group, whatever the
        // member id; any other commit to an unknown group is refused.
        let simple = generation < 0;
        let unknown_group = if api_version >= 9 {
            ErrorCode::GroupIdNotFound
        } else {
            ErrorCode::IllegalGeneration
        };
        self.with_group(broker, group_id, simple, |g, _| {
            let code = match &g.consumer {
                Some(c) => c.check_member_epoch(member_id, generation),
                None => g.check_commit(member_id, instance_id, generation, now_ms()),
            };
            if code != ErrorCode::None {
                return Err(code);
            }
            if offsets.is_empty() {
                return Ok(None);
            }
            let entries = offsets
                .iter()
                .map(|(t, p, e)| {
                    (
                        records::offset_key(group_id, t, *p),
                        Some(records::offset_value(e)),
                    )
                })
                .collect();
            let durable = self.append(broker, group_id, entries)?;
            for (t, p, e) in offsets {
                g.offsets.insert((t, p), e);
            }
            Ok(Some(durable))
        })
        .unwrap_or(Err(unknown_group))
    }

    /// TxnOffsetCommit (KIP-98, KIP-447): offsets committed inside a
    /// transaction. They are written to the group's `__consumer_offsets`
    /// partition as one transactional batch under the producer's id and
    /// epoch, and become visible when the transaction's commit marker is
    /// written there ([`GroupCoordinator::complete_txn_offsets`]). The
    /// partition must be in the transaction (AddOffsetsToTxn first, KIP-890).
    /// `Err` is the error for every partition.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<(String, i32, OffsetEntry)>,
    ) -> Result<Option<Durable>, ErrorCode> {
        let topic = self.ensure_offsets_topic(broker)?;
        let count = topic.partition_count;
        let index = partition_for(group_id, count);
        let Some(partition) = topic.partition(index).cloned() else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        // Only the id's coordinator can answer from memory; elsewhere the commit is taken
        // unchecked, as produce does (see handlers::produce::verify_transactional).
        let code = if broker.txn.coordinates(broker, transactional_id) {
            broker.txn.verify(
                transactional_id,
                producer_id,
                producer_epoch,
                &(OFFSETS_TOPIC.to_string(), index),
            )
        } else {
            ErrorCode::None
        };
        if code != ErrorCode::None {
            return Err(code);
        }
        // A commit naming its member and generation is checked against the
        // group (KIP-447); one without (generation -1, no member) is a
        // standalone producer's and needs no group.
        let check_member = generation >= 0 || !member_id.is_empty();
        self.with_group(broker, group_id, !check_member, |g, _| {
            if check_member {
                let code = match &g.consumer {
                    Some(c) => c.check_member_epoch(member_id, generation),
                    None => g.check_commit(member_id, instance_id, generation, now_ms()),
                };
                if code != ErrorCode::None {
                    return Err(code);
                }
            }
            if offsets.is_empty() {
                return Ok(None);
            }
            let mut builder = RecordBatchBuilder::new(Compression::None)
                .base_timestamp(now_ms())
                // No sequence, as Kafka's group coordinator writes them: the
                // coordinator origin checks epochs and transaction state only.
                .producer(producer_id, producer_epoch, -1)
                .transactional(true);
            for (i, (t, p, e)) in offsets.iter().enumerate() {
                builder.push(Record {
                    offset_delta: i32::try_from(i).unwrap_or(i32::MAX),
                    timestamp_delta: 0,
                    key: Some(records::offset_key(group_id, t, *p)),
                    value: Some(records::offset_value(e)),
                    headers: Vec::new(),
                });
            }
            let batch = builder.build().map_err(|e| {
                tracing::error!(error = %e, "encoding a transactional offset batch failed");
                ErrorCode::UnknownServerError
            })?;
            let options = AppendOptions {
                leader_epoch: partition.leader_epoch(),
                log_append_time_ms: None,
            };
            let info = partition.log.append_as_coordinator(&batch, &options).map_err(|e| {
                tracing::warn!(error = %e, group = group_id, "appending transactional offsets failed");
                match e {
                    LogError::Producer(_) => ErrorCode::InvalidProducerEpoch,
                    _ => ErrorCode::CoordinatorNotAvailable,
                }
            })?;
            let mut pending = self.txn_offsets.lock().unwrap_or_else(|e| e.into_inner());
            let entries = pending.entry(producer_id).or_default();
            for (t, p, e) in offsets {
                entries.insert((group_id.to_string(), t, p), e);
            }
            Ok(Some(
                broker.raise_watermark_when_durable(&partition, info.last_offset + 1),
            ))
        })
        .unwrap_or(Err(ErrorCode::IllegalGeneration))
    }

    /// A transaction marker was written to `__consumer_offsets` partition
    /// `offsets_partition`: the producer's pending offsets of the groups
    /// stored there are published (commit) or dropped (abort).
    /// `partitions` is the topic's partition count (the placement modulus).
    pub fn complete_txn_offsets(
        &self,
        producer_id: i64,
        offsets_partition: i32,
        partitions: i32,
        commit: bool,
    ) {
        let now = now_ms();
        let mut groups = self.lock();
        let mut pending = self.txn_offsets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entries) = pending.get_mut(&producer_id) else {
            return;
        };
        let mine: Vec<(String, String, i32)> = entries
            .keys()
            .filter(|(group, _, _)| partition_for(group, partitions) == offsets_partition)
            .cloned()
            .collect();
        for key in mine {
            let Some(entry) = entries.remove(&key) else {
                continue;
            };
            if !commit {
                continue;
            }
            let (group, topic, partition) = key;
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now))
                .offsets
                .insert((topic, partition), entry);
        }
        if entries.is_empty() {
            pending.remove(&producer_id);
        }
    }

    /// Whether a transaction has an offset for this partition that is not yet
    /// committed (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.txn_offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|entries| {
                entries.contains_key(&(group_id.to_string(), topic.to_string(), partition))
            })
    }

    /// OffsetFetch for one group. `None` topics means every committed offset.
    /// Unknown groups and partitions read as offset -1 (no error).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> TopicOffsets {
        let groups = self.lock();
        let group = groups.get(group_id);
        match topics {
            Some(wanted) => wanted
                .iter()
                .map(|(t, parts)| {
                    let found = parts
                        .iter()
                        .map(|p| {
                            (
                                *p,
                                group.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned()),
                            )
                        })
                        .collect();
                    (t.clone(), found)
                })
                .collect(),
            None => {
                let mut out: TopicOffsets = Vec::new();
                if let Some(g) = group {
                    for ((t, p), e) in &g.offsets {
                        match out.last_mut() {
                            Some((last, list)) if last == t => list.push((*p, Some(e.clone()))),
                            _ => out.push((t.clone(), vec![(*p, Some(e.clone()))])),
                        }
                    }
                }
                out
            }
        }
    }

    /// OffsetDelete. `Err` is a group-level error; otherwise one code per partition.
    pub fn delete_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<(PartitionCodes, Option<Durable>), ErrorCode> {
        self.ensure_offsets_topic(broker)?;
        self.with_group(broker, group_id, false, |g, _| {
            let live = g.state() != GroupState::Empty;
            let protocol = g.protocol_name().unwrap_or_default().to_string();
            let subscribed: Vec<String> = if live && g.protocol_type() == Some("consumer") {
                g.members()
                    .flat_map(|m| records::subscribed_topics(&m.metadata_for(&protocol)))
                    .collect()
            } else {
                Vec::new()
            };
            let mut results = Vec::new();
            let mut tombstones = Vec::new();
            for (t, parts) in topics {
                let mut codes = Vec::new();
                for p in parts {
                    if live && subscribed.contains(t) {
                        codes.push((*p, ErrorCode::GroupSubscribedToTopic));
                        continue;
                    }
                    if g.offsets.remove(&(t.clone(), *p)).is_some() {
                        tombstones.push((records::offset_key(group_id, t, *p), None));
                    }
                    codes.push((*p, ErrorCode::None));
                }
                results.push((t.clone(), codes));
            }
            let durable = if tombstones.is_empty() {
                None
            } else {
                Some(self.append(broker, group_id, tombstones)?)
            };
            Ok((results, durable))
        })
        .unwrap_or(Err(ErrorCode::GroupIdNotFound))
    }

    /// DeleteGroups for one group: only an empty group can go.
    pub fn delete_group(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<Option<Durable>, ErrorCode> {
        self.ensure_offsets_topic(broker)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        match group.state() {
            GroupState::Empty if !group.consumer_members_gone() => {
                return Err(ErrorCode::NonEmptyGroup);
            }
            GroupState::Empty => {}
            GroupState::Dead => return Err(ErrorCode::GroupIdNotFound),
            _ => return Err(ErrorCode::NonEmptyGroup),
        }
        let mut tombstones: Vec<(Bytes, Option<Bytes>)> = group
            .offsets
            .keys()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        tombstones.push((records::group_key(group_id), None));
        let durable = self.append(broker, group_id, tombstones)?;
        let mut out = Vec::new();
        group.mark_dead(now_ms());
        group.drain_waiters(ErrorCode::CoordinatorNotAvailable, &mut out);
        groups.remove(group_id);
        drop(groups);
        deliver(out, None);
        Ok(Some(durable))
    }

    /// Every group's state, members and committed offsets, by group id, for a
    /// metrics scrape. Copies under the lock; the caller reads logs after.
    pub fn metrics_snapshot(&self) -> Vec<GroupMetrics> {
        let mut groups: Vec<GroupMetrics> = self
            .lock()
            .values()
            .map(|g| GroupMetrics {
                group_id: g.id.clone(),
                state_name: match &g.consumer {
                    Some(c) => c.state().name(),
                    None => g.state().name(),
                },
                members: match &g.consumer {
                    Some(c) => c.members().count(),
                    None => g.member_count(),
                },
                offsets: g
                    .offsets
                    .iter()
                    .map(|((topic, partition), entry)| (topic.clone(), *partition, entry.offset))
                    .collect(),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    pub fn list(&self) -> Vec<ListedGroup> {
        let mut listed: Vec<ListedGroup> = self
            .lock()
            .values()
            .map(|g| match &g.consumer {
                Some(c) => ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: "consumer".to_string(),
                    state_name: c.state().name(),
                    group_type: "consumer",
                },
                None => ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    state_name: g.state().name(),
                    group_type: "classic",
                },
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        if let Some(c) = &g.consumer {
            // Best effort for classic tools: members with their subscription
            // and current assignment in the classic consumer-protocol encoding.
            return Some(GroupDescription {
                state_name: c.state().name(),
                protocol_type: "consumer".to_string(),
                protocol_name: c.assignor().to_string(),
                members: c
                    .members()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: records::consumer_subscription(&m.subscribed_topic_names),
                        assignment: records::consumer_assignment(&m.assigned),
                    })
                    .collect(),
            });
        }
        let protocol = g.protocol_name().unwrap_or_default().to_string();
        let stable = g.state() == GroupState::Stable;
        Some(GroupDescription {
            state_name: g.state().name(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            protocol_name: protocol.clone(),
            members: g
                .members()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    // Kafka shows metadata and assignment only for a settled group.
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }
}

impl GroupCoordinator {
    /// Partition counts of every topic, for the consumer groups' assignors.
    pub fn topic_counts(broker: &Broker) -> TopicCounts {
        broker
            .registry()
            .iter()
            .map(|t| (t.name.clone(), t.partition_count))
            .collect()
    }

    /// ConsumerGroupHeartbeat (KIP-848). Membership lives in memory only: it
    /// is not written to `__consumer_offsets`, so after a restart members get
    /// UNKNOWN_MEMBER_ID and rejoin (committed offsets are durable as usual).
    pub fn consumer_heartbeat(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        mut req: HeartbeatRequest,
    ) -> HeartbeatReply {
        if let Err(code) = self.ensure_offsets_topic(broker) {
            return HeartbeatReply {
                error: code,
                ..Default::default()
            };
        }
        let topics = Self::topic_counts(broker);
        req.fresh_member_id = uuid_text();
        let create = req.member_epoch == 0;
        let limits = broker.consumer_limits_for(group_id, &self.consumer_limits);
        self.with_group(broker, group_id, create, |g, out| {
            if g.consumer.is_none() {
                if g.state() != GroupState::Empty || g.member_count() > 0 {
                    // KIP-848 online upgrade (Kafka's default migration
                    // policy, bidirectional): the live classic group becomes
                    // a consumer group that keeps its classic members.
                    if let Err(reason) =
                        g.upgrade_to_consumer(&topics, limits.members_max, now_ms(), out)
                    {
                        return HeartbeatReply {
                            error: ErrorCode::GroupIdNotFound,
                            error_message: Some(reason),
                            ..Default::default()
                        };
                    }
                    tracing::info!(
                        group = group_id,
                        "classic group upgraded to a consumer group"
                    );
                } else {
                    g.consumer = Some(ConsumerGroup::new());
                }
            }
            let reply = match &mut g.consumer {
                Some(c) => c.heartbeat(req, &topics, &limits, now_ms()),
                None => HeartbeatReply {
                    error: ErrorCode::UnknownServerError,
                    ..Default::default()
                },
            };
            // The last consumer-protocol member may just have left.
            g.maybe_downgrade(now_ms(), out);
            reply
        })
        .unwrap_or_else(|| HeartbeatReply {
            error: ErrorCode::UnknownMemberId,
            error_message: Some(format!("group {group_id} has no members")),
            ..Default::default()
        })
    }

    /// ConsumerGroupDescribe for one group.
    pub fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, ErrorCode> {
        let groups = self.lock();
        let Some(c) = groups.get(group_id).and_then(|g| g.consumer.as_ref()) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        Ok(ConsumerGroupDescription {
            state_name: c.state().name(),
            group_epoch: c.group_epoch(),
            assignment_epoch: c.assignment_epoch(),
            assignor: c.assignor().to_string(),
            members: c
                .members()
                .map(|m| (m.clone(), c.target_of(&m.member_id)))
                .collect(),
        })
    }

    /// Is `group_id` run by the consumer protocol?
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.lock()
            .get(group_id)
            .is_some_and(|g| g.consumer.is_some())
    }
}

/// Applies one replayed record to the groups being rebuilt.
fn apply_record(groups: &mut HashMap<String, Group<Waiter>>, rec: Record, now: i64) {
    let Some(key) = rec.key else { return };
    let key = match records::decode_key(key) {
        Ok(Some(key)) => key,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "skipping undecodable {OFFSETS_TOPIC} key");
            return;
        }
    };
    match key {
        records::Key::Offset {
            group,
            topic,
            partition,
        } => match rec.value {
            Some(value) => match records::decode_offset_value(value) {
                Ok(entry) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now))
                        .offsets
                        .insert((topic, partition), entry);
                }
                Err(e) => tracing::warn!(error = %e, %group, "skipping undecodable offset record"),
            },
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
        },
        records::Key::Group { group } => match rec.value {
            Some(value) => match records::decode_group_value(value) {
                Ok(stored) => groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now))
                    .restore(stored, now),
                Err(e) => tracing::warn!(error = %e, %group, "skipping undecodable group record"),
            },
            None => {
                groups.remove(&group);
            }
        },
    }
}

/// The (group, topic, partition, offset) of an offset-commit record, if it is one.
fn decode_offset_record(rec: Record) -> Option<(String, String, i32, OffsetEntry)> {
    let key = records::decode_key(rec.key?).ok()??;
    let records::Key::Offset {
        group,
        topic,
        partition,
    } = key
    else {
        return None;
    };
    let entry = records::decode_offset_value(rec.value?).ok()?;
    Some((group, topic, partition, entry))
}

/// Sends replies, after `durable` resolves if there is a write to wait for.
fn deliver(out: Outbox<Waiter>, durable: Option<Durable>) {
    if out.is_empty() {
        return;
    }
    let Some(durable) = durable else {
        for (waiter, reply) in out {
            let _ = waiter.send(reply);
        }
        return;
    };
    tokio::spawn(async move {
        let stored = matches!(durable.await, Ok(Ok(())));
        for (waiter, reply) in out {
            let reply = match reply {
                // A SyncGroup success promises the assignment is stored; if it
                // isn't, the member retries and the group rebalances.
                Reply::Sync(s) if !stored && s.error == ErrorCode::None => {
                    Reply::Sync(SyncReply::error(ErrorCode::CoordinatorNotAvailable))
                }
                other => other,
            };
            let _ = waiter.send(reply);
        }
    });
}

/// A random 128-bit id as 32 hex chars (member ids; Kafka uses UUIDs).
fn uuid_text() -> String {
    crate::topics::hex(&crate::topics::random_id())
}

#[cfg(test)]
mod tests;
