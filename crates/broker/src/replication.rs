//! Replication's I/O shells: the replica fetchers a follower runs (one per leader broker,
//! fetching every partition it follows from that leader in one KIP-227 fetch session, as
//! Kafka's `ReplicaFetcherThread`; the session's rules are in
//! [`crate::fetch_session::FetcherSession`]), and the leadership transitions the metadata
//! image drives.
//!
//! The decisions live elsewhere: a leader's high watermark and ISR in [`crate::replica`], a
//! follower's truncation point and reading of fetch answers in [`crate::follower`], elections
//! in the controller. Here: sockets, the follower's truncation (only ever after asking the
//! leader with OffsetForLeaderEpoch, KIP-101/KIP-279) and its appends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use weir_client::connection::{Connection, ConnectionOptions};
use weir_log::{FlushPolicy, LogError};
use weir_metadata::records::BrokerId;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::fetch::{
    FetchPartition, FetchRequest, FetchTopic, ForgottenTopic, ReplicaState,
};
use weir_protocol::messages::offset_for_leader_epoch::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};

use crate::Broker;
use crate::cluster::Submitted;
use crate::fetch_session::{FetchParams, FetcherSession, PartitionKey};
use crate::follower::{self, FetchAnswer, LogView};
use crate::partition::Partition;
use weir_metadata::controller::{AlterPartitionItem, ControllerRequest, ControllerResponse};

/// Kafka's `replica.fetch.wait.max.ms`.
const FETCH_WAIT_MS: i32 = 500;
/// Kafka's `replica.fetch.max.bytes` (per partition) and `replica.fetch.response.max.bytes`.
const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
const FETCH_RESPONSE_BYTES_MAX: i32 = 10 * 1024 * 1024;
/// Kafka's `replica.fetch.backoff.ms`: after an error, before the partition is fetched again.
const BACKOFF: Duration = Duration::from_millis(200);
/// The Fetch version followers send: v15 carries the broker epoch (KIP-903), v16 the leader
/// hints; higher versions add nothing a follower uses.
const FETCH_VERSION_MAX: i16 = 16;
const FETCH_VERSION_MIN: i16 = 15;

/// A partition a follower copies, as the image names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub index: i32,
    pub leader_id: BrokerId,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone)]
struct FollowState {
    followed: Followed,
    /// OffsetForLeaderEpoch has been asked (and the log cut) in this leader epoch.
    truncated: bool,
    /// Not fetched before this instant (after an error).
    backoff_until: Option<tokio::time::Instant>,
}

struct Fetcher {
    leader_id: BrokerId,
    partitions: Mutex<BTreeMap<(String, i32), FollowState>>,
    changed: Notify,
    stopped: AtomicBool,
}

impl Fetcher {
    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), FollowState>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every fetcher this broker runs, by leader.
#[derive(Default)]
pub struct ReplicaFetchers {
    by_leader: Mutex<BTreeMap<BrokerId, Arc<Fetcher>>>,
}

impl ReplicaFetchers {
    /// Makes the fetchers follow exactly `wanted`: new partitions start with a truncation
    /// check, a partition whose leader or epoch changed starts over, a leader with nothing
    /// left to follow loses its fetcher.
    pub fn sync(&self, broker: &Arc<Broker>, wanted: Vec<Followed>) {
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|e| e.into_inner());
        let mut grouped: BTreeMap<BrokerId, Vec<Followed>> = BTreeMap::new();
        for f in wanted {
            grouped.entry(f.leader_id).or_default().push(f);
        }
        by_leader.retain(|leader, fetcher| {
            if grouped.contains_key(leader) {
                return true;
            }
            fetcher.stopped.store(true, Ordering::Release);
            fetcher.changed.notify_one();
            false
        });
        for (leader_id, followed) in grouped {
            let fetcher = by_leader.entry(leader_id).or_insert_with(|| {
                let fetcher = Arc::new(Fetcher {
                    leader_id,
                    partitions: Mutex::new(BTreeMap::new()),
                    changed: Notify::new(),
                    stopped: AtomicBool::new(false),
                });
                tokio::spawn(run_fetcher(Arc::downgrade(broker), fetcher.clone()));
                fetcher
            });
            let mut parts = fetcher.partitions();
            let mut changed = false;
            let keys: std::collections::BTreeSet<(String, i32)> = followed
                .iter()
                .map(|f| (f.topic.clone(), f.index))
                .collect();
            parts.retain(|key, _| {
                let keep = keys.contains(key);
                changed |= !keep;
                keep
            });
            for f in followed {
                let key = (f.topic.clone(), f.index);
                // A new partition, or a new leader or epoch: start over with a truncation check.
                if parts.get(&key).map(|s| &s.followed) != Some(&f) {
                    parts.insert(
                        key,
                        FollowState {
                            followed: f,
                            truncated: false,
                            backoff_until: None,
                        },
                    );
                    changed = true;
                }
            }
            drop(parts);
            if changed {
                fetcher.changed.notify_one();
            }
        }
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|e| e.into_inner());
        for fetcher in by_leader.values() {
            fetcher.stopped.store(true, Ordering::Release);
            fetcher.changed.notify_one();
        }
        by_leader.clear();
    }
}

fn partition_of(broker: &Broker, topic: &str, index: i32) -> Option<Arc<Partition>> {
    broker.topic(topic)?.partition(index).cloned()
}

async fn run_fetcher(broker: Weak<Broker>, fetcher: Arc<Fetcher>) {
    let mut connection: Option<Connection> = None;
    // One session per connection to the leader: a new connection starts a full one.
    let mut session = FetcherSession::default();
    loop {
        if fetcher.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(this) = broker.upgrade() else { return };
        let due: Vec<FollowState> = {
            let now = tokio::time::Instant::now();
            fetcher
                .partitions()
                .values()
                .filter(|s| s.backoff_until.is_none_or(|t| t <= now))
                .cloned()
                .collect()
        };
        if due.is_empty() {
            drop(this);
            let _ = tokio::time::timeout(BACKOFF, fetcher.changed.notified()).await;
            continue;
        }
        let conn = match connection.as_mut().filter(|c| !c.is_broken()) {
            Some(c) => c,
            None => {
                let Some(addr) = this.broker_address(fetcher.leader_id) else {
                    drop(this);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                };
                let options = ConnectionOptions {
                    client_id: format!("weir-replica-fetcher-{}", this.config.node_id),
                    connect_timeout_ms: 2_000,
                    request_timeout_ms: 10_000,
                    ..ConnectionOptions::default()
                };
                drop(this);
                session.failed();
                match Connection::connect(&addr, options).await {
                    Ok(c) => connection.insert(c),
                    Err(e) => {
                        tracing::debug!(leader = fetcher.leader_id, error = %e, "replica fetcher cannot connect");
                        tokio::time::sleep(BACKOFF).await;
                        continue;
                    }
                }
            }
        };
        let Some(this) = broker.upgrade() else { return };
        let result = fetch_round(&this, &fetcher, conn, &mut session, due).await;
        drop(this);
        if let Err(e) = result {
            tracing::debug!(leader = fetcher.leader_id, error = %e, "replica fetch failed");
            session.failed();
            connection = None;
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// Marks a partition to wait before its next fetch.
fn back_off(fetcher: &Fetcher, key: &(String, i32)) {
    if let Some(s) = fetcher.partitions().get_mut(key) {
        s.backoff_until = Some(tokio::time::Instant::now() + BACKOFF);
    }
}

/// Marks a partition as needing a truncation check again (divergence seen).
fn needs_truncation(fetcher: &Fetcher, key: &(String, i32), epoch: i32) {
    if let Some(s) = fetcher.partitions().get_mut(key)
        && s.followed.leader_epoch == epoch
    {
        s.truncated = false;
    }
}

fn mark_truncated(fetcher: &Fetcher, key: &(String, i32), epoch: i32) {
    if let Some(s) = fetcher.partitions().get_mut(key)
        && s.followed.leader_epoch == epoch
    {
        s.truncated = true;
    }
}

async fn fetch_round(
    broker: &Arc<Broker>,
    fetcher: &Fetcher,
    conn: &mut Connection,
    session: &mut FetcherSession,
    due: Vec<FollowState>,
) -> Result<(), weir_client::ClientError> {
    let me = broker.config.node_id;
    let (to_truncate, to_fetch): (Vec<FollowState>, Vec<FollowState>) =
        due.into_iter().partition(|s| !s.truncated);
    if !to_truncate.is_empty() {
        truncate_round(broker, fetcher, conn, to_truncate).await?;
        return Ok(());
    }
    // Every partition due, with what this follower asks of each; the session decides which
    // of them the request lists.
    let mut wanted: Vec<(PartitionKey, FetchParams)> = Vec::new();
    let mut names: BTreeMap<[u8; 16], String> = BTreeMap::new();
    let mut fetched: BTreeMap<(String, i32), (Arc<Partition>, i32)> = BTreeMap::new();
    let throttle_rate = follower_rate(broker);
    for s in &to_fetch {
        let f = &s.followed;
        let Some(p) = partition_of(broker, &f.topic, f.index) else {
            continue;
        };
        let log = &p.log;
        let last_fetched_epoch = follower::last_fetched_epoch(&log_view(&p));
        wanted.push((
            PartitionKey {
                topic: f.topic.clone(),
                topic_id: f.topic_id,
                index: f.index,
            },
            FetchParams {
                // The durable end: the leader counts what we report as on our disk. It is
                // read here, after the last round's sync, and a change lists the partition
                // again, so the leader's cached offset for an unlisted one is still true.
                fetch_offset: log.log_end_offset(),
                max_bytes: match throttle_rate {
                    Some(rate) if follower_throttled(broker, &f.topic, f.index) => {
                        FETCH_PARTITION_BYTES_MAX
                            .min(i32::try_from(rate).unwrap_or(i32::MAX).max(1))
                    }
                    _ => FETCH_PARTITION_BYTES_MAX,
                },
                current_leader_epoch: f.leader_epoch,
                last_fetched_epoch,
                log_start_offset: log.log_start_offset(),
            },
        ));
        names.insert(f.topic_id, f.topic.clone());
        fetched.insert((f.topic.clone(), f.index), (p, f.leader_epoch));
    }
    if wanted.is_empty() {
        tokio::time::sleep(BACKOFF).await;
        return Ok(());
    }
    let version = conn
        .broker_versions(weir_protocol::api::ApiKey::Fetch as i16)
        .map_or(FETCH_VERSION_MIN, |(_, max)| max.min(FETCH_VERSION_MAX));
    if version < FETCH_VERSION_MIN {
        return Err(weir_client::ClientError::InvalidArgument(format!(
            "leader {} speaks Fetch only up to v{version}",
            fetcher.leader_id
        )));
    }
    let built = session.build(wanted);
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (key, params) in built.to_send {
        let partition = FetchPartition {
            partition: key.index,
            current_leader_epoch: params.current_leader_epoch,
            fetch_offset: params.fetch_offset,
            last_fetched_epoch: params.last_fetched_epoch,
            log_start_offset: params.log_start_offset,
            partition_max_bytes: params.max_bytes,
            ..FetchPartition::default()
        };
        match topics.last_mut() {
            Some(t) if t.topic_id == key.topic_id => t.partitions.push(partition),
            _ => topics.push(FetchTopic {
                topic: key.topic,
                topic_id: key.topic_id,
                partitions: vec![partition],
            }),
        }
    }
    let mut forgotten: Vec<ForgottenTopic> = Vec::new();
    for key in built.to_forget {
        match forgotten.last_mut() {
            Some(t) if t.topic_id == key.topic_id => t.partitions.push(key.index),
            _ => forgotten.push(ForgottenTopic {
                topic: key.topic,
                topic_id: key.topic_id,
                partitions: vec![key.index],
            }),
        }
    }
    let request = FetchRequest {
        replica_id: me,
        replica_state: ReplicaState {
            replica_id: me,
            replica_epoch: broker.cluster().broker_epoch(),
        },
        max_wait_ms: FETCH_WAIT_MS,
        min_bytes: 1,
        max_bytes: FETCH_RESPONSE_BYTES_MAX,
        isolation_level: 0,
        session_id: built.session_id,
        session_epoch: built.epoch,
        topics,
        forgotten_topics_data: forgotten,
        ..FetchRequest::default()
    };
    let pending = conn.write_request_at(&request, version).await?;
    let response = conn
        .read_response_with_extra_wait(pending, FETCH_WAIT_MS as u64)
        .await?;
    session.answered(response.error_code, response.session_id);
    if response.error_code != 0 {
        tracing::debug!(
            leader = fetcher.leader_id,
            code = response.error_code,
            "replica fetch refused"
        );
        tokio::time::sleep(BACKOFF).await;
        return Ok(());
    }
    // An incremental answer leaves out partitions with nothing new: nothing to do for them.
    let mut appended: Vec<(Arc<Partition>, i64)> = Vec::new();
    let mut throttled_bytes = 0u64;
    for topic in response.responses {
        let name = if topic.topic.is_empty() {
            match names.get(&topic.topic_id) {
                Some(name) => name.clone(),
                None => continue,
            }
        } else {
            topic.topic
        };
        for data in topic.partitions {
            let key = (name.clone(), data.partition_index);
            let Some((p, epoch)) = fetched.get(&key).cloned() else {
                continue;
            };
            if p.is_leader() {
                continue; // we took over meanwhile
            }
            let error = ErrorCode::from_code_or_unknown(data.error_code);
            let diverging = (data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
            match follower::classify_fetch_answer(
                error,
                diverging,
                data.log_start_offset,
                &log_view(&p),
            ) {
                FetchAnswer::Append => {}
                FetchAnswer::OutOfRange { restart_at } => {
                    if let Some(from) = restart_at {
                        restart_log_at(&p, from);
                    }
                    needs_truncation(fetcher, &key, epoch);
                    continue;
                }
                FetchAnswer::BackOff => {
                    tracing::debug!(topic = %name, partition = data.partition_index, error = ?error,
                        "replica fetch error; backing off");
                    back_off(fetcher, &key);
                    continue;
                }
                FetchAnswer::Diverged => {
                    tracing::debug!(topic = %name, partition = data.partition_index,
                        epoch = diverging.0, end_offset = diverging.1,
                        "the leader reports divergence; asking where to truncate");
                    needs_truncation(fetcher, &key, epoch);
                    continue;
                }
            }
            let records = data.records.unwrap_or_default();
            if !records.is_empty() {
                if follower_throttled(broker, &name, data.partition_index) {
                    throttled_bytes += records.len() as u64;
                }
                match append(&p, &records) {
                    Ok(()) => appended.push((p.clone(), p.log.log_end_offset())),
                    Err(LogError::NotContiguous { .. }) => {
                        needs_truncation(fetcher, &key, epoch);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %name, partition = data.partition_index, error = %e,
                            "follower append failed");
                        back_off(fetcher, &key);
                        continue;
                    }
                }
            }
            // The follower's watermark: the leader's, as far as this log reaches.
            if let Some(hw) = follower::follower_high_watermark(data.high_watermark, &log_view(&p))
            {
                p.raise_high_watermark(hw);
            }
            if let Some(start) =
                follower::log_start_to_advance(data.log_start_offset, &log_view(&p))
                && let Err(e) = p.log.delete_records_before(start)
            {
                tracing::warn!(topic = %name, error = %e, "follower could not advance its log start");
            }
        }
    }
    // Our next fetch offset is what the leader counts as on our disk: wait for the sync first
    // on topics that sync before acknowledging.
    let mut syncs = Vec::new();
    for (p, end) in appended {
        if matches!(p.log.config().flush, FlushPolicy::EveryAppend) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            p.log.on_durable(
                end,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            syncs.push(rx);
        }
    }
    for rx in syncs {
        if let Ok(Err(e)) = rx.await {
            tracing::warn!(error = %e, "follower sync failed");
        }
    }
    // Throttled replicas copy at no more than the broker's follower rate.
    if throttled_bytes > 0
        && let Some(rate) = follower_rate(broker)
    {
        let now = crate::now_ms().max(0) as u64;
        let wait_ms = broker
            .follower_pacer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(throttled_bytes, rate, now);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
    Ok(())
}

/// The broker's `follower.replication.throttled.rate`, if set.
fn follower_rate(broker: &Broker) -> Option<u64> {
    let dynamic = broker.dynamic_configs();
    dynamic
        .broker_value(crate::throttle::FOLLOWER_RATE)
        .and_then(|(v, _)| v.trim().parse().ok())
}

/// Whether this broker's replica of `topic`-`partition` is in the topic's
/// `follower.replication.throttled.replicas`.
fn follower_throttled(broker: &Broker, topic: &str, partition: i32) -> bool {
    broker.topic(topic).is_some_and(|t| {
        crate::topic_config::TopicConfig::is_throttled(
            &t.config.follower_replication_throttled_replicas,
            partition,
            broker.config.node_id,
        )
    })
}

fn append(p: &Partition, records: &Bytes) -> Result<(), LogError> {
    // A fetch answer may end in a partial batch (the leader's byte limit); only whole
    // batches are appended, the rest comes again with the next fetch.
    let whole = whole_batches_prefix(records);
    if whole == 0 {
        return Ok(());
    }
    p.log.append_as_follower(&records.slice(..whole))?;
    Ok(())
}

/// The length of the longest prefix of `records` made of whole batches.
fn whole_batches_prefix(records: &[u8]) -> usize {
    let mut at = 0usize;
    // A v2 batch: base offset (8), length (4) counting the bytes after it.
    while let Some(len) = records
        .get(at + 8..at + 12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_be_bytes)
    {
        let Ok(len) = usize::try_from(len) else { break };
        let end = at.saturating_add(12).saturating_add(len);
        if end > records.len() {
            break;
        }
        at = end;
    }
    at
}

/// What the follower core ([`crate::follower`]) sees of a partition's log.
fn log_view(p: &Partition) -> LogView {
    LogView {
        log_start_offset: p.log.log_start_offset(),
        log_end_offset: p.log.log_end_offset(),
        high_watermark: p.log.high_watermark(),
        last_epoch: p.log.leader_epochs().last().map(|&(e, _)| e),
    }
}

/// A follower behind the leader's log start starts over there (see
/// [`follower::out_of_range_restart`]).
fn restart_log_at(p: &Partition, leader_log_start: i64) {
    tracing::info!(topic = %p.topic, partition = p.index, from = leader_log_start,
        "follower is behind the leader's log start; restarting its log there");
    if let Err(e) = p.log.restart_at(leader_log_start) {
        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not restart the log");
    }
}

/// Asks the leader where each partition's last local epoch ends there and cuts the local log
/// to that (Kafka's truncation by leader epoch): whatever this replica holds beyond it was
/// never replicated under that epoch and may differ from the leader's.
async fn truncate_round(
    broker: &Arc<Broker>,
    fetcher: &Fetcher,
    conn: &mut Connection,
    states: Vec<FollowState>,
) -> Result<(), weir_client::ClientError> {
    let mut topics: BTreeMap<String, OffsetForLeaderTopic> = BTreeMap::new();
    let mut asked: BTreeMap<(String, i32), (Arc<Partition>, i32, i32)> = BTreeMap::new();
    for s in &states {
        let f = &s.followed;
        let Some(p) = partition_of(broker, &f.topic, f.index) else {
            continue;
        };
        let Some(our_epoch) = follower::epoch_to_ask(&log_view(&p)) else {
            // Nothing held (under any epoch): nothing to cut.
            mark_truncated(fetcher, &(f.topic.clone(), f.index), f.leader_epoch);
            continue;
        };
        topics
            .entry(f.topic.clone())
            .or_insert_with(|| OffsetForLeaderTopic {
                topic: f.topic.clone(),
                partitions: Vec::new(),
            })
            .partitions
            .push(OffsetForLeaderPartition {
                partition: f.index,
                current_leader_epoch: f.leader_epoch,
                leader_epoch: our_epoch,
            });
        asked.insert((f.topic.clone(), f.index), (p, f.leader_epoch, our_epoch));
    }
    if topics.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest {
        replica_id: broker.config.node_id,
        topics: topics.into_values().collect(),
    };
    let response = conn.send(&request).await?;
    for topic in response.topics {
        for r in topic.partitions {
            let key = (topic.topic.clone(), r.partition);
            let Some((p, leader_epoch, our_epoch)) = asked.get(&key).cloned() else {
                continue;
            };
            if ErrorCode::from_code_or_unknown(r.error_code) != ErrorCode::None {
                tracing::debug!(topic = %topic.topic, partition = r.partition, code = r.error_code,
                    "OffsetForLeaderEpoch refused; backing off");
                back_off(fetcher, &key);
                continue;
            }
            let cut = follower::truncation_point(
                &log_view(&p),
                our_epoch,
                r.leader_epoch,
                r.end_offset,
                |epoch| p.log.end_offset_for_epoch(epoch),
            );
            if cut < p.log.log_end_offset() {
                tracing::info!(topic = %topic.topic, partition = r.partition,
                    from = p.log.log_end_offset(), to = cut, leader_epoch,
                    "truncating a divergent tail before following the new leader");
            }
            // Even a cut at the log end matters: it drops an epoch this replica recorded as
            // leader but holds no record of (see `Log::truncate_to`).
            if let Err(e) = p.log.truncate_to(cut) {
                tracing::warn!(topic = %topic.topic, error = %e, "truncation failed");
                back_off(fetcher, &key);
                continue;
            }
            mark_truncated(fetcher, &key, leader_epoch);
        }
    }
    Ok(())
}

impl Broker {
    /// Applies one hosted partition's image state: a new leadership sets up the leader's
    /// replication state (a fresh view of every follower, the epoch's start recorded); a
    /// change within it (ISR, replicas) updates that state; anything else makes this broker
    /// a follower or idle.
    pub(crate) fn apply_partition_state(
        &self,
        topic: &crate::topics::Topic,
        p: &Arc<Partition>,
        state: &weir_metadata::image::PartitionState,
    ) -> bool {
        let me = self.config.node_id;
        let now = crate::now_ms().max(0) as u64;
        if state.leader != me {
            let was_leader = p.is_leader();
            p.set_leadership(false, state.leader_epoch);
            if was_leader {
                self.coordinators_unload(topic, p.index);
            }
            return false;
        }
        let same_leadership = p.is_leader()
            && p.replication()
                .as_ref()
                .is_some_and(|r| r.leader_epoch == state.leader_epoch);
        if same_leadership {
            let raised = p.replication().as_mut().and_then(|r| {
                r.image_changed(
                    state.partition_epoch,
                    state.replicas.clone(),
                    state.isr.clone(),
                    now,
                )
            });
            if let Some(hw) = raised {
                p.raise_high_watermark(hw);
            }
            return true;
        }
        let newer = p
            .log
            .leader_epochs()
            .last()
            .is_none_or(|&(e, _)| state.leader_epoch > e);
        if newer
            && let Err(e) = p
                .log
                .assign_leader_epoch(state.leader_epoch, p.log.log_end_offset())
        {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e,
                "could not record the leader epoch");
        }
        let end = p.log.log_end_offset();
        *p.replication() = Some(crate::replica::LeaderState::new(
            me,
            state.leader_epoch,
            state.partition_epoch,
            state.replicas.clone(),
            state.isr.clone(),
            p.log.high_watermark(),
            end,
            self.config.replica_lag_time_max_ms,
            now,
        ));
        p.set_leadership(true, state.leader_epoch);
        // The leader's own durable end feeds the watermark (alone, with an ISR of one).
        drop(crate::watch_durability(p, end));
        self.coordinators_load(topic, p.index);
        true
    }

    /// Coordinators move with the leadership of their internal topic's partitions.
    fn coordinators_load(&self, topic: &crate::topics::Topic, index: i32) {
        let loaded = match topic.name.as_str() {
            crate::groups::OFFSETS_TOPIC => self.groups.load_partition(topic, index),
            crate::txn::TRANSACTION_STATE_TOPIC => self.txn.load_partition(topic, index),
            _ => return,
        };
        if let Err(e) = loaded {
            tracing::error!(topic = %topic.name, partition = index, error = %e,
                "could not load coordinator state");
        }
    }

    pub(crate) fn coordinators_unload(&self, topic: &crate::topics::Topic, index: i32) {
        match topic.name.as_str() {
            crate::groups::OFFSETS_TOPIC => {
                self.groups.unload_partition(topic.partition_count, index)
            }
            crate::txn::TRANSACTION_STATE_TOPIC => {
                self.txn.unload_partition(topic.partition_count, index)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_log::test_support::build_batch;

    #[test]
    fn only_whole_batches_are_taken_from_a_cut_answer() {
        let a = build_batch(3, 1, b"abc");
        let b = build_batch(1, 2, b"defgh");
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(whole_batches_prefix(&both), both.len());
        assert_eq!(whole_batches_prefix(&both[..both.len() - 1]), a.len());
        assert_eq!(whole_batches_prefix(&both[..10]), 0);
        assert_eq!(whole_batches_prefix(&[]), 0);
        // A negative length stops the walk instead of wrapping.
        let mut bad = a.clone();
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(whole_batches_prefix(&bad), 0);
    }
}

/// The controller says it did not apply a partition's ISR proposal: the next check may propose
/// again (and the high watermark may rise, no longer waiting for a member that was being added).
fn proposal_failed(p: &Partition) {
    let raised = p.replication().as_mut().and_then(|r| r.proposal_failed());
    if let Some(hw) = raised {
        p.raise_high_watermark(hw);
    }
}

/// How often leaders check their followers for ISR changes. Kafka checks for shrinks every
/// `replica.lag.time.max.ms / 2` and expands on the fetch that catches a follower up; one
/// short period covers both here.
const ISR_CHECK: Duration = Duration::from_millis(250);

/// Proposes the ISR changes this broker's leaderships decide (AlterPartition to the
/// controller) until the broker is dropped. One request carries every partition's change.
pub(crate) async fn isr_loop(broker: Weak<Broker>) {
    let mut interval = tokio::time::interval(ISR_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(this) = broker.upgrade() else { return };
        let now = crate::now_ms().max(0) as u64;
        let mut asked: Vec<(Arc<Partition>, AlterPartitionItem)> = Vec::new();
        // The committed ISR size of each asked partition, to count shrinks and expands.
        let mut isr_sizes_before: Vec<usize> = Vec::new();
        for topic in this.registry().iter() {
            for p in &topic.partitions {
                let (proposal, isr_size) = {
                    let mut state = p.replication();
                    let isr_size = state.as_ref().map_or(0, |r| r.isr().len());
                    (state.as_mut().and_then(|r| r.tick(now)), isr_size)
                };
                if let Some(proposal) = proposal {
                    isr_sizes_before.push(isr_size);
                    asked.push((
                        Arc::clone(p),
                        AlterPartitionItem {
                            topic_id: topic.id,
                            partition: p.index,
                            leader_epoch: proposal.leader_epoch,
                            partition_epoch: proposal.partition_epoch,
                            new_isr: proposal.new_isr,
                        },
                    ));
                }
            }
        }
        if asked.is_empty() {
            continue;
        }
        for (p, item) in &asked {
            tracing::info!(topic = %p.topic, partition = p.index, isr = ?item.new_isr,
                leader_epoch = item.leader_epoch, "proposing an ISR change");
        }
        let request = ControllerRequest::AlterPartition {
            broker_id: this.config.node_id,
            broker_epoch: this.cluster().broker_epoch(),
            topics: asked.iter().map(|(_, item)| item.clone()).collect(),
        };
        let quorum = this.cluster().quorum.clone();
        drop(this);
        let answer = tokio::time::timeout(Duration::from_secs(5), quorum.submit(request)).await;
        // No answer says nothing of whether the change committed: the proposals stay pending
        // (still counting for the high watermark) and the next ticks send them again.
        let failed_all = |why: &str| {
            tracing::debug!(why, "ISR change not answered; it stays pending");
        };
        match answer {
            Ok(Ok(Submitted {
                response: ControllerResponse::AlterPartition(results),
                ..
            })) => {
                let counted = broker.upgrade();
                let committed = asked.iter().zip(&isr_sizes_before);
                for ((_, item), before) in committed.filter(|_| counted.is_some()) {
                    let refused = results.iter().any(|r| {
                        r.error_code != 0
                            && r.topic_id == item.topic_id
                            && r.partition == item.partition
                    });
                    if refused {
                        continue;
                    }
                    if let Some(b) = &counted {
                        let counter = if item.new_isr.len() < *before {
                            &b.isr_shrinks
                        } else {
                            &b.isr_expands
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                drop(counted);
                for r in results.iter().filter(|r| r.error_code != 0) {
                    tracing::info!(
                        partition = r.partition,
                        code = r.error_code,
                        "ISR change refused by the controller"
                    );
                    // Other refusals wait for the image (see `refusal_means_not_applied`).
                    if !crate::replica::refusal_means_not_applied(r.error_code) {
                        continue;
                    }
                    if let Some((p, _)) = asked.iter().find(|(_, item)| {
                        item.topic_id == r.topic_id && item.partition == r.partition
                    }) {
                        proposal_failed(p);
                    }
                }
            }
            Ok(Ok(other)) => failed_all(&format!("unexpected answer {other:?}")),
            Ok(Err(e)) => failed_all(&e.to_string()),
            Err(_) => failed_all("timed out"),
        }
    }
}
