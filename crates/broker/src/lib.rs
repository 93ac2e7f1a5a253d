//! Weir's broker: Kafka API handlers over the topic registry and partition logs.
//!
//! Layout:
//! - [`config`]: the broker's settings.
//! - [`topic_config`]: per-topic settings under Kafka's names, and validation.
//! - [`topics`]: the topic registry and its on-disk metadata.
//! - [`partition`]: one partition (its log).
//! - [`producer_ids`]: producer ids for InitProducerId, reserved durably in blocks.
//! - [`txn`]: the transaction coordinator (state in `__transaction_state`).
//! - `handlers`: one module per group of Kafka APIs.
//! - [`error`]: broker errors and their single mapping to Kafka error codes.
//!
//! Every request is handled in two steps. [`Broker::handle`] does the part
//! that must happen in request order (decoding, validation, appending to logs,
//! metadata changes) and returns a [`PendingReply`]: a future for the part that
//! only waits (fsync, long-poll) and then encodes the response frame. The
//! server awaits those futures in order, so many requests of one connection
//! wait for durability together.

pub mod admin_view;
pub mod cleaner;
pub mod cluster;
pub mod cluster_config;
pub mod config;
pub mod data_dir;
pub mod dynamic_config;
pub mod error;
pub mod fetch_session;
pub mod follower;
pub mod frame;
pub mod groups;
mod handlers;
pub mod metrics;
pub mod partition;
pub mod produce_trace;
pub mod producer_ids;
mod refusals;
pub mod replica;
pub mod replication;
pub mod throttle;
pub mod topic_config;
pub mod topics;
pub mod txn;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use weir_log::LogEnv;
use weir_protocol::api::{self, ApiKey};
use weir_protocol::codec::{Encode, ErrorCodes};
use weir_protocol::header::RequestHeader;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use frame::{Frame, FrameChunk};
use topics::TopicRegistry;

/// The rest of a request's work: resolves to the encoded response frame
/// (length prefix included), to `None` when the client expects no response
/// (acks=0 produce), or to [`Frame::close_connection`] when the response
/// could not be produced and the connection must close.
pub type PendingReply = Pin<Box<dyn Future<Output = Option<Frame>> + Send>>;

/// One broker's state.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    /// Shared storage resources (fd cache, flusher).
    env: Arc<LogEnv>,
    /// Topics; the lock is held only to look up or swap `Arc<Topic>`s, never across I/O waits.
    topics: RwLock<TopicRegistry>,
    /// Consumer groups and committed offsets (state in `__consumer_offsets`).
    pub groups: groups::GroupCoordinator,
    /// Transactional ids and their transactions (state in `__transaction_state`).
    pub txn: txn::TxnCoordinator,
    /// When each refused (api key, version) was last logged, so that a client
    /// retrying a refused request can't flood the log.
    refusals: refusals::RefusalLog,
    /// Dynamic broker configs and group configs, as last applied from the
    /// metadata image (and kept on disk as a copy). Applying takes this lock and
    /// then the registry's, in that order.
    dynamic: Mutex<dynamic_config::DynamicConfigs>,
    /// Producer ids for idempotent producers (InitProducerId).
    pub producer_ids: producer_ids::ProducerIdManager,
    /// The metadata quorum and this broker's membership: set once, by
    /// [`Broker::join_cluster`], before the Kafka listener opens.
    cluster: std::sync::OnceLock<cluster::ClusterLink>,
    /// The replica fetchers of the partitions this broker follows.
    pub(crate) fetchers: replication::ReplicaFetchers,
    /// Paces every replica fetcher's copying of throttled replicas together
    /// (`follower.replication.throttled.rate` is per broker).
    pub(crate) follower_pacer: std::sync::Mutex<throttle::Pacer>,
    /// Paces what this broker serves, as a leader, to followers outside the
    /// ISR of the replicas a topic's `leader.replication.throttled.replicas`
    /// names (`leader.replication.throttled.rate` is per broker).
    pub(crate) leader_pacer: std::sync::Mutex<throttle::Pacer>,
    /// The log cleaner pool and threads (compaction).
    pub(crate) cleaners: Arc<cleaner::LogCleaners>,
    /// Request and connection counters (bumped by the server and handlers).
    pub metrics: Arc<metrics::RequestMetrics>,
    /// ISR removals and additions this broker proposed as a leader.
    pub isr_shrinks: std::sync::atomic::AtomicU64,
    pub isr_expands: std::sync::atomic::AtomicU64,
    /// KIP-227 fetch sessions (sans I/O); the lock is held only to begin or answer a
    /// fetch, never across a read or a wait.
    pub(crate) fetch_sessions: Mutex<fetch_session::SessionCache>,
    /// Holds the data directory's lock for as long as the broker exists.
    _data_dir: data_dir::DataDir,
}

impl Broker {
    /// Opens the data directory, recovering every partition log.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        config.validate().map_err(BrokerError::InvalidRequest)?;
        // First, before anything in the directory is read or written: the lock
        // (one process per directory) and the node/cluster identity check.
        let data_dir =
            data_dir::DataDir::open(&config.data_dir, config.node_id, &config.cluster_id)?;
        let cluster_id = data_dir.cluster_id().to_string();
        let env = LogEnv::new(config.open_files_max);
        let dynamic = dynamic_config::DynamicConfigs::load(&config.data_dir)?;
        let topic_defaults = dynamic
            .topic_defaults(&config.topic_defaults)
            .map_err(|e| BrokerError::Corrupt(format!("stored dynamic broker configs: {e}")))?;
        let started = std::time::Instant::now();
        let registry = TopicRegistry::load(
            &config.data_dir,
            env.clone(),
            &topic_defaults,
            config.producer_id_expiration_ms,
        )?;
        let logs_opened = started.elapsed();
        let groups = groups::GroupCoordinator::open(&config, &registry)?;
        let groups_loaded = started.elapsed() - logs_opened;
        {
            // What restart work grows with (issue 22: it must stay bounded per partition).
            let mut sum = weir_log::RecoveryStats::default();
            let mut partitions = 0usize;
            for p in registry.iter().flat_map(|t| t.partitions.iter()) {
                let r = p.log.recovery_stats();
                partitions += 1;
                sum.segments += r.segments;
                sum.segments_lazy += r.segments_lazy;
                sum.index_files_loaded += r.index_files_loaded;
                sum.segments_scanned += r.segments_scanned;
                sum.scanned_bytes += r.scanned_bytes;
                sum.producer_replay_batches += r.producer_replay_batches;
                sum.producer_replay_bytes += r.producer_replay_bytes;
            }
            tracing::info!(
                logs_ms = logs_opened.as_millis() as u64,
                groups_ms = groups_loaded.as_millis() as u64,
                partitions,
                segments = sum.segments,
                segments_lazy = sum.segments_lazy,
                index_files_loaded = sum.index_files_loaded,
                segments_scanned = sum.segments_scanned,
                scanned_bytes = sum.scanned_bytes,
                producer_replay_batches = sum.producer_replay_batches,
                producer_replay_bytes = sum.producer_replay_bytes,
                "startup phases"
            );
        }
        // After the groups: its replay is not part of groups_ms above.
        let txn = txn::TxnCoordinator::open(&config, &registry)?;
        let producer_ids = producer_ids::ProducerIdManager::new(Box::new(
            producer_ids::LocalProducerIdSource::open(&config.data_dir.join("meta"))?,
        ));
        tracing::info!(topics = registry.len(), %cluster_id, "broker opened");
        let cleaners = Arc::new(cleaner::LogCleaners::new(&config));
        let fetch_sessions = Mutex::new(fetch_session::SessionCache::new(
            config.max_incremental_fetch_session_cache_slots,
            fetch_session::EVICTION_MS_MIN,
            fastrand::u64(..),
        ));
        Ok(Arc::new(Broker {
            config,
            cluster_id,
            env,
            topics: RwLock::new(registry),
            groups,
            txn,
            refusals: refusals::RefusalLog::default(),
            dynamic: Mutex::new(dynamic),
            producer_ids,
            cluster: std::sync::OnceLock::new(),
            fetchers: replication::ReplicaFetchers::default(),
            follower_pacer: std::sync::Mutex::new(throttle::Pacer::default()),
            leader_pacer: std::sync::Mutex::new(throttle::Pacer::default()),
            cleaners,
            metrics: Arc::new(metrics::RequestMetrics::new()),
            isr_shrinks: Default::default(),
            isr_expands: Default::default(),
            fetch_sessions,
            _data_dir: data_dir,
        }))
    }

    /// Flushes and checkpoints every log. Call after the server has drained.
    /// Starts the log cleaner threads (`log_cleaner_threads`).
    pub fn start_cleaners(self: &Arc<Self>) {
        self.cleaners.start(self);
    }

    pub fn shutdown(&self) {
        // First: a pass in progress finishes its swap (or leaves the old segments) before the
        // logs close.
        self.cleaners.stop();
        self.groups.shutdown();
        self.txn.shutdown();
        self.registry().close_all();
        self.env.shutdown();
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, TopicRegistry> {
        // A panic while holding the lock would poison it; the registry is still
        // consistent because every mutation swaps whole Arcs, so carry on.
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, TopicRegistry> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A coordinator's internal topic, if this broker has it. Absent, the
    /// creation goes to the controller in the background and the caller
    /// answers COORDINATOR_NOT_AVAILABLE, which clients retry.
    pub(crate) fn ensure_internal_topic(
        self: &Arc<Self>,
        name: &str,
        partitions: i32,
    ) -> Result<Arc<topics::Topic>, weir_protocol::error_code::ErrorCode> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        let broker = self.clone();
        let name = name.to_string();
        tokio::spawn(async move { broker.create_internal_topic(&name, partitions).await });
        Err(weir_protocol::error_code::ErrorCode::CoordinatorNotAvailable)
    }

    /// The log environment (flushers, open files, sync and log-event statistics).
    pub fn log_env(&self) -> &Arc<LogEnv> {
        &self.env
    }

    /// Runs retention on every partition. Called periodically by the binary.
    pub fn apply_retention(&self) {
        let now_ms = now_ms();
        let partitions: Vec<_> = self
            .registry()
            .iter()
            .flat_map(|t| t.partitions.iter().cloned().collect::<Vec<_>>())
            .collect();
        for partition in partitions {
            match partition.log.apply_retention(now_ms) {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    topic = %partition.topic, partition = partition.index, deleted,
                    "retention deleted segments"
                ),
                Err(e) => tracing::warn!(
                    topic = %partition.topic, partition = partition.index, error = %e,
                    "retention failed"
                ),
            }
        }
    }

    /// How often the binary should call [`Broker::apply_retention`].
    pub fn retention_interval(&self) -> Duration {
        Duration::from_millis(self.config.retention_check_interval_ms.max(100))
    }

    /// Handles one request from the client at `peer`. `None` means the
    /// connection must be closed.
    ///
    /// A request this broker can't serve (unknown api, one it doesn't
    /// handle, or a version outside its range) closes the connection, as
    /// Kafka does; the refusal is logged as a warning, at most once a minute
    /// per api and version, so an operator can see which client needs which
    /// setting.
    pub async fn handle(
        self: &Arc<Self>,
        peer: SocketAddr,
        header: RequestHeader,
        body: Bytes,
    ) -> Option<PendingReply> {
        let key = ApiKey::from_i16(header.api_key);
        let range = api::SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == header.api_key)
            .map(|(_, min, max)| (*min, *max));
        let (key, min, max) = match (key, range) {
            (Some(key), Some((min, max))) if handlers::is_handled(key) => (key, min, max),
            _ => {
                self.refuse(peer, &header, "api not supported");
                return None;
            }
        };
        if header.api_version < min || header.api_version > max {
            if key == ApiKey::ApiVersions {
                // Kafka answers with a v0 body listing what it supports, so the
                // client can retry with a version both sides know.
                return Some(ready(
                    handlers::api_versions::unsupported(&header).map(Frame::from),
                ));
            }
            self.refuse(peer, &header, "version not supported");
            return None;
        }
        handlers::dispatch(self, key, header, body).await
    }

    /// Logs a refused request (rate-limited) before its connection closes.
    fn refuse(&self, peer: SocketAddr, header: &RequestHeader, reason: &'static str) {
        if !self.refusals.should_log(header.api_key, header.api_version) {
            tracing::debug!(
                api_key = header.api_key,
                version = header.api_version,
                %peer,
                "request refused, {reason}; closing connection"
            );
            return;
        }
        let key = ApiKey::from_i16(header.api_key);
        let api = key.map(|k| format!("{k:?}"));
        let supported = api::SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == header.api_key)
            .filter(|_| key.is_some_and(handlers::is_handled))
            .map(|(_, min, max)| format!("{min}-{max}"));
        tracing::warn!(
            api = api.as_deref().unwrap_or("unknown"),
            api_key = header.api_key,
            version = header.api_version,
            supported = supported.as_deref().unwrap_or("none"),
            client_id = header.client_id.as_deref().unwrap_or(""),
            %peer,
            "request refused, {reason}; closing connection (see README, Client compatibility)"
        );
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A reply that needs no waiting.
fn ready(frame: Option<Frame>) -> PendingReply {
    Box::pin(std::future::ready(frame))
}

/// Encodes a response frame: length prefix, response header, body.
fn encode_response<T: Encode>(
    header: &RequestHeader,
    body: &T,
) -> Result<Bytes, weir_protocol::codec::EncodeError> {
    let header_version = api::response_header_version(header.api_key, header.api_version);
    let version = header.api_version;
    let header_len = if header_version >= 1 { 5 } else { 4 };
    let body_len = body.encoded_len(version);
    let mut buf = BytesMut::with_capacity(4 + header_len + body_len);
    buf.put_i32(0); // patched below once the real size is known
    buf.put_i32(header.correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // empty tagged-field section
    }
    body.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| weir_protocol::codec::EncodeError::TooLong(buf.len()))?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Encodes a response frame. A response that can't be encoded is a bug in
/// this broker; it is logged as an error and the connection closes, because
/// a client whose request goes unanswered would wait out its timeout and
/// other responses pipelined behind it would be out of step.
fn encode_frame<T: Encode + ErrorCodes>(header: &RequestHeader, body: &T) -> Option<Frame> {
    match encode_response(header, body) {
        Ok(bytes) => {
            let mut frame = Frame::from(bytes);
            frame.errors = metrics::ErrorTally::of(body);
            Some(frame)
        }
        Err(e) => {
            log_encode_failure(header, &e);
            Some(Frame::close_connection())
        }
    }
}

fn log_encode_failure(header: &RequestHeader, error: &weir_protocol::codec::EncodeError) {
    tracing::error!(
        api_key = header.api_key,
        version = header.api_version,
        correlation_id = header.correlation_id,
        client_id = header.client_id.as_deref().unwrap_or(""),
        %error,
        "response could not be encoded; closing connection"
    );
}

/// Registers for everything below `end_offset` becoming durable; then feeds the leader's
/// replication state (which raises the high watermark once the ISR has it too) or, for a
/// partition without one, raises the watermark to `end_offset`, and wakes long-polling
/// fetches. The receiver resolves with the flush outcome.
pub(crate) fn watch_durability(
    partition: &Arc<partition::Partition>,
    end_offset: i64,
) -> tokio::sync::oneshot::Receiver<Result<(), weir_log::LogError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    when_durable(partition, end_offset, move |result| {
        let _ = tx.send(result);
    });
    rx
}

/// What a produce's durability wait reports: the flush outcome, when the callback fired (on
/// the flusher thread, before the task that awaits it is scheduled), and how long the sync took.
pub(crate) struct DurableAck {
    pub result: Result<(), weir_log::LogError>,
    pub at: std::time::Instant,
    pub sync: std::time::Duration,
}

/// [`watch_durability`], timed for the produce step metrics.
pub(crate) fn watch_durability_timed(
    partition: &Arc<partition::Partition>,
    end_offset: i64,
) -> tokio::sync::oneshot::Receiver<DurableAck> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let weak = Arc::downgrade(partition);
    when_durable(partition, end_offset, move |result| {
        let at = std::time::Instant::now();
        let sync = weak
            .upgrade()
            .map_or(std::time::Duration::ZERO, |p| p.log.last_sync_duration());
        let _ = tx.send(DurableAck { result, at, sync });
    });
    rx
}

/// Calls `done` with the flush outcome once everything below `end_offset` is durable, after
/// feeding the leader's replication state (which may raise the high watermark).
fn when_durable(
    partition: &Arc<partition::Partition>,
    end_offset: i64,
    done: impl FnOnce(Result<(), weir_log::LogError>) + Send + 'static,
) {
    let weak = Arc::downgrade(partition);
    partition.log.on_durable(
        end_offset,
        Box::new(move |result| {
            if let (Ok(()), Some(p)) = (&result, weak.upgrade()) {
                let decided = {
                    let mut replication = p.replication();
                    match replication.as_mut() {
                        Some(state) => state.leader_durable(end_offset),
                        // Not (yet) set up as a leader: a follower's own syncs do not move
                        // its watermark (the leader's fetch answers do).
                        None if !p.is_leader() => None,
                        None => Some(end_offset),
                    }
                };
                match decided {
                    Some(hw) => p.raise_high_watermark(hw),
                    None => p.watermark_raised.notify_waiters(),
                }
            }
            done(result);
        }),
    );
}

/// How long the broker's own writes wait for the in-sync replicas.
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until the high watermark passes `end_offset` under `leader_epoch` (Kafka's delayed
/// produce): `Ok(true)` once it has, `Ok(false)` at `deadline`. A lost leadership is an error:
/// the records may yet be truncated by the next leader, so they must not be acknowledged.
pub(crate) async fn wait_replicated(
    p: &partition::Partition,
    end_offset: i64,
    leader_epoch: i32,
    deadline: tokio::time::Instant,
) -> Result<bool, weir_log::LogError> {
    loop {
        let raised = p.watermark_raised.notified();
        tokio::pin!(raised);
        raised.as_mut().enable();
        if !p.is_leader() || p.leader_epoch() != leader_epoch {
            return Err(weir_log::LogError::NotReplicated("leadership moved"));
        }
        if p.log.high_watermark() >= end_offset {
            return Ok(true);
        }
        if tokio::time::timeout_at(deadline, raised).await.is_err() {
            return Ok(false);
        }
    }
}

impl Broker {
    /// Registers for everything below `end_offset` becoming durable; then
    /// raises the high watermark (consumers may read it from then on) and
    /// wakes long-polling fetches. The receiver resolves with the flush outcome.
    pub(crate) fn raise_watermark_when_durable(
        self: &Arc<Self>,
        partition: &Arc<partition::Partition>,
        end_offset: i64,
    ) -> tokio::sync::oneshot::Receiver<Result<(), weir_log::LogError>> {
        let durable = watch_durability(partition, end_offset);
        let replicated = partition
            .replication()
            .as_ref()
            .is_some_and(|r| r.replicas().len() > 1);
        if !replicated {
            return durable;
        }
        // The broker's own writes (group and transaction state, transaction markers) are
        // acknowledged as acks=all produces are: once every in-sync replica has them.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = Arc::clone(partition);
        let leader_epoch = p.leader_epoch();
        tokio::spawn(async move {
            let outcome = match durable.await {
                Ok(Ok(())) => {
                    let deadline = tokio::time::Instant::now() + REPLICATION_WAIT;
                    match wait_replicated(&p, end_offset, leader_epoch, deadline).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(weir_log::LogError::NotReplicated(
                            "timed out waiting for the in-sync replicas",
                        )),
                        Err(e) => Err(e),
                    }
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(weir_log::LogError::Closed),
            };
            let _ = tx.send(outcome);
        });
        rx
    }

    /// Looks a topic up without creating it.
    pub fn topic(&self, name: &str) -> Option<Arc<topics::Topic>> {
        self.registry().get(name).cloned()
    }

    fn dynamic_configs(&self) -> std::sync::MutexGuard<'_, dynamic_config::DynamicConfigs> {
        // Every change is validated and persisted before it is stored here, so
        // a panic elsewhere cannot leave it half-updated.
        self.dynamic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer-protocol (KIP-848) timing of one group: its group configs
    /// (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`) where
    /// set, the broker's otherwise.
    pub fn consumer_limits_for(
        &self,
        group_id: &str,
        broker_limits: &groups::consumer::ConsumerLimits,
    ) -> groups::consumer::ConsumerLimits {
        self.dynamic_configs()
            .consumer_limits_for(group_id, broker_limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::messages::metadata::{MetadataResponse, MetadataResponseTopic};

    fn metadata_header(version: i16) -> RequestHeader {
        RequestHeader {
            api_key: ApiKey::Metadata as i16,
            api_version: version,
            correlation_id: 7,
            client_id: Some("test".into()),
        }
    }

    #[test]
    fn a_response_that_cannot_be_encoded_closes_the_connection() {
        // A null topic name is not allowed before Metadata v12.
        let unencodable = MetadataResponse {
            topics: vec![MetadataResponseTopic {
                name: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        let frame = encode_frame(&metadata_header(11), &unencodable).expect("a frame");
        assert!(
            frame.close_connection,
            "never silence: the connection closes"
        );
        assert!(frame.chunks.is_empty(), "nothing half-encoded is sent");

        // The same body at v12 encodes and leaves the connection open.
        let frame = encode_frame(&metadata_header(12), &unencodable).expect("a frame");
        assert!(!frame.close_connection);
        assert!(!frame.is_empty());
    }
}
