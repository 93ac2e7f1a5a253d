//! The transaction coordinator (KIP-98): transactional ids, their producer
//! ids and epochs, and the transactions they run.
//!
//! - [`state`]: one transactional id as a sans-I/O state machine
//!   ([`state::TxnMetadata`]): every rule of InitProducerId, AddPartitionsToTxn,
//!   AddOffsetsToTxn, EndTxn, the KIP-890 verification and the timeout lives
//!   there, with its unit tests.
//! - [`records`]: the key/value layouts of `__transaction_state` (Kafka's).
//! - this module: the async shell. It owns the ids behind one mutex, appends
//!   each new state to `__transaction_state` and answers only once it is
//!   durable, writes the commit/abort markers to the transaction's partitions
//!   (`Log::append_marker`, and for `__consumer_offsets` tells the group
//!   coordinator to publish or drop the pending offsets), and runs one timer
//!   task that aborts transactions past their timeout.
//!
//! Placement: a transactional id lives in partition
//! `abs(hashCode(id)) % partitions` of `__transaction_state` (Kafka's, the
//! same function as the group coordinator's); on one node this broker leads
//! every partition, so FindCoordinator always names it. The topic is created
//! on first use, with `transaction_state_partitions` partitions (Kafka's
//! `transaction.state.log.num.partitions`, default 50), compacted, no retention.
//!
//! Durability and recovery: a state is acknowledged only after its record is
//! fsynced. EndTxn writes PrepareCommit/PrepareAbort, then the markers, then
//! CompleteCommit/CompleteAbort, and is answered when that is durable (or
//! after 5 s, when the prepare record alone stands, as Kafka answers). Kafka
//! answers at the prepare record, but its next AddPartitionsToTxn then meets
//! CONCURRENT_TRANSACTIONS until the markers are in; on one node waiting for
//! them costs two more group commits and spares the client's retry. On start
//! the topic is replayed (before the port opens, so clients never see
//! COORDINATOR_LOAD_IN_PROGRESS) and every transaction found in a Prepare
//! state has its markers written again (a marker written twice is harmless,
//! as in Kafka) and is completed; so is every one found when this broker
//! takes a `__transaction_state` partition over from another. Like the group
//! coordinator, memory changes when the record is appended; if it does not
//! become durable in time the client gets COORDINATOR_NOT_AVAILABLE and
//! retries. A Prepare record in that case stays in memory, so its markers
//! follow once it is committed (or the next coordinator decides from its
//! log); a Complete record that cannot be written is tried again. Until then
//! every request of the id gets CONCURRENT_TRANSACTIONS.

pub mod records;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use weir_log::AppendOptions;
use weir_protocol::compression::Compression;
use weir_protocol::control::{ControlType, Marker};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::record::{self, BatchHeader, Record, RecordBatchBuilder};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::groups::{Durable, OFFSETS_TOPIC, partition_for};
use crate::topics::{Topic, TopicRegistry};
use crate::{Broker, now_ms};
use state::{Effect, InitOutcome, TopicPartition, TxnMetadata, TxnState};

/// Kafka's internal topic for transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// Read size while replaying a partition at start.
const REPLAY_READ_BYTES: usize = 1 << 20;
const REPLAY_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;
/// Pause before writing markers (or the Complete record) again after a failure; it doubles
/// with each failure in a row up to `MARKER_RETRY_MAX_MS`, so that transactions stuck behind
/// a disk that stays full retry at a bounded rate while one that failed once is not held up.
const MARKER_RETRY_MS: u64 = 1_000;
const MARKER_RETRY_MAX_MS: u64 = 5_000;

/// The pause after `pause_ms` (see `MARKER_RETRY_MS`).
fn next_marker_retry_ms(pause_ms: u64) -> u64 {
    pause_ms.saturating_mul(2).min(MARKER_RETRY_MAX_MS)
}
/// How long an EndTxn reply waits for its markers and Complete state.
const MARKERS_WAIT_MAX: Duration = Duration::from_secs(5);
/// Test-only: `kill -9` stand-in right after a PrepareCommit/PrepareAbort is
/// durable and before any marker is written, so a test can check that the
/// restarted coordinator completes the transaction. Read once at open.
pub const CRASH_AFTER_PREPARE_ENV: &str = "WEIR_TEST_CRASH_AFTER_PREPARE";

/// A transaction as DescribeTransactions reports it.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<TopicPartition>,
}

/// What InitProducerId answers, after the state is durable.
pub type InitReply = Result<(i64, i16), ErrorCode>;

/// Where a state record was appended: what to watch to learn that it is committed.
struct Appended {
    durable: Durable,
    partition: Arc<crate::partition::Partition>,
    end_offset: i64,
    leader_epoch: i32,
}

/// A reply that is ready once a record is durable.
pub struct Pending<T> {
    durable: Option<Appended>,
    /// Runs after the record is durable (markers of a prepared transaction);
    /// returns the task writing them.
    then: Option<Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>>,
    /// Whether the reply also waits (up to [`MARKERS_WAIT_MAX`]) for that
    /// task: EndTxn does, so the client's next AddPartitionsToTxn finds the
    /// transaction complete instead of CONCURRENT_TRANSACTIONS and a 20 ms
    /// retry (librdkafka's back-off), which capped small transactions at
    /// about 8 a second.
    await_markers: bool,
    reply: T,
}

impl<T> Pending<T> {
    fn ready(reply: T) -> Self {
        Pending {
            durable: None,
            then: None,
            await_markers: false,
            reply,
        }
    }

    /// Waits for durability; a write that did not become durable is
    /// COORDINATOR_NOT_AVAILABLE (retriable: the client asks again).
    pub async fn wait(self) -> Result<T, ErrorCode> {
        if let Some(appended) = self.durable {
            let Appended {
                durable,
                partition,
                end_offset,
                leader_epoch,
            } = appended;
            if !matches!(durable.await, Ok(Ok(()))) {
                if let Some(then) = self.then {
                    // A Prepare record that missed its deadline (the in-sync replicas were cut
                    // off) is in memory already, and every later request of its id gets
                    // CONCURRENT_TRANSACTIONS until the markers are written. They may be once
                    // the record is committed; if leadership moves first, the new coordinator
                    // decides from its own log.
                    tokio::spawn(markers_once_committed(
                        partition,
                        end_offset,
                        leader_epoch,
                        then,
                    ));
                }
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
        }
        if let Some(then) = self.then {
            let markers = then();
            if self.await_markers {
                // Past the bound the prepare record still stands and the
                // markers follow; the client sees the usual Kafka behaviour.
                let _ = tokio::time::timeout(MARKERS_WAIT_MAX, markers).await;
            }
        }
        Ok(self.reply)
    }
}

pub struct TxnCoordinator {
    /// Kafka has no such switch; off, transactional clients get
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED (fatal in every client).
    pub enabled: bool,
    /// Partitions of `__transaction_state` when we create it.
    partitions_configured: i32,
    /// Kafka's `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    abort_scan_interval_ms: u64,
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// `__transaction_state` partitions (index, partition count) loaded since the timer last
    /// ran: their Prepare transactions are completed by it.
    loaded: Mutex<Vec<(i32, i32)>>,
    /// Transactional ids whose markers a task is writing now: a second task for the same id
    /// (a restart's recovery and the load of its partition both find it prepared) would write
    /// every marker twice.
    completing: Mutex<HashSet<String>>,
    wake: Arc<Notify>,
    started: AtomicBool,
    stopped: AtomicBool,
    crash_after_prepare: bool,
}

/// A transaction in PrepareCommit or PrepareAbort: what its completion needs.
struct Prepared {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TopicPartition>,
    marker: ControlType,
}

impl Prepared {
    fn of(meta: &TxnMetadata, marker: ControlType) -> Prepared {
        Prepared {
            transactional_id: meta.transactional_id.clone(),
            producer_id: meta.producer_id,
            producer_epoch: meta.producer_epoch,
            partitions: meta.partitions.iter().cloned().collect(),
            marker,
        }
    }
}

/// A transactional id in [`TxnCoordinator::completing`] for as long as its completion task
/// holds this.
struct Completing {
    broker: Arc<Broker>,
    transactional_id: String,
}

impl Drop for Completing {
    fn drop(&mut self) {
        self.broker
            .txn
            .completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.transactional_id);
    }
}

impl TxnCoordinator {
    /// Builds the coordinator and replays `__transaction_state` if it exists.
    pub fn open(config: &BrokerConfig, registry: &TopicRegistry) -> Result<Self, BrokerError> {
        let coordinator = TxnCoordinator {
            enabled: config.transactions_enabled,
            partitions_configured: config.transaction_state_partitions,
            max_timeout_ms: config.transaction_max_timeout_ms,
            abort_scan_interval_ms: config
                .transaction_abort_timed_out_transaction_cleanup_interval_ms,
            txns: Mutex::new(HashMap::new()),
            loaded: Mutex::new(Vec::new()),
            completing: Mutex::new(HashSet::new()),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            crash_after_prepare: std::env::var_os(CRASH_AFTER_PREPARE_ENV)
                .is_some_and(|v| v == "1"),
        };
        if let Some(topic) = registry.get(TRANSACTION_STATE_TOPIC) {
            coordinator.replay(topic, None)?;
        }
        Ok(coordinator)
    }

    /// This broker became the leader of `__transaction_state` partition `index`: the
    /// transactional ids stored there are rebuilt from its log. The timer task, woken now,
    /// completes the transactions left in a Prepare state, as after a restart (Kafka's new
    /// coordinator sends their markers again on load).
    pub fn load_partition(&self, topic: &Topic, index: i32) -> Result<(), BrokerError> {
        self.unload_partition(topic.partition_count, index);
        self.replay(topic, Some(index))?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, topic.partition_count));
        self.wake.notify_one();
        Ok(())
    }

    /// This broker no longer leads `__transaction_state` partition `index`: its ids are
    /// dropped from memory.
    pub fn unload_partition(&self, partition_count: i32, index: i32) {
        self.lock()
            .retain(|id, _| partition_for(id, partition_count) != index);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TxnMetadata>> {
        // Transitions work on a clone restored on failure; a panic leaves a whole map.
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds transactional ids from `__transaction_state`: every partition, or only `only`.
    fn replay(&self, topic: &Topic, only: Option<i32>) -> Result<(), BrokerError> {
        let corrupt = |e: &dyn std::fmt::Display| {
            BrokerError::Corrupt(format!("{TRANSACTION_STATE_TOPIC}: {e}"))
        };
        let mut txns = self.lock();
        let mut records_read = 0usize;
        for partition in topic
            .partitions
            .iter()
            .filter(|p| only.is_none_or(|i| p.index == i))
        {
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
                    let batch = batch.map_err(|e| corrupt(&e))?;
                    let header = BatchHeader::parse(&batch).map_err(|e| corrupt(&e))?;
                    let next = header.last_offset().saturating_add(1);
                    if next <= offset {
                        continue;
                    }
                    offset = next;
                    progressed = true;
                    if header.is_control() {
                        continue;
                    }
                    let decoded = record::decode_records(&batch, REPLAY_DECOMPRESSED_BYTES_MAX)
                        .map_err(|e| corrupt(&e))?;
                    for rec in decoded {
                        records_read += 1;
                        let Some(key) = rec.key else { continue };
                        let id = match records::decode_key(key) {
                            Ok(Some(id)) => id,
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping undecodable {TRANSACTION_STATE_TOPIC} key");
                                continue;
                            }
                        };
                        match rec.value {
                            None => {
                                txns.remove(&id);
                            }
                            Some(value) => match records::decode_value(&id, value) {
                                Ok(meta) => {
                                    txns.insert(id, meta);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, transactional_id = %id, "skipping undecodable transaction state")
                                }
                            },
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
        tracing::info!(
            transactional_ids = txns.len(),
            records = records_read,
            "transaction coordinator loaded"
        );
        Ok(())
    }

    /// Makes sure `__transaction_state` exists (created on first use).
    pub fn ensure_topic(&self, broker: &Arc<Broker>) -> Result<Arc<Topic>, ErrorCode> {
        broker.ensure_internal_topic(TRANSACTION_STATE_TOPIC, self.partitions_configured)
    }

    /// Appends one id's state to its partition; resolves when durable.
    fn append(&self, broker: &Arc<Broker>, meta: &TxnMetadata) -> Result<Appended, ErrorCode> {
        let topic = self.ensure_topic(broker)?;
        let count = topic.partition_count;
        let Some(partition) = topic.partition(partition_for(&meta.transactional_id, count)) else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        // Only the partition's leader writes transaction state (see the group coordinator).
        if !partition.is_leader() {
            return Err(ErrorCode::NotCoordinator);
        }
        let encode_failed = |e: weir_protocol::codec::EncodeError| {
            tracing::error!(error = %e, "encoding a transaction state record failed");
            ErrorCode::UnknownServerError
        };
        let key = records::key(&meta.transactional_id).map_err(encode_failed)?;
        let value = records::value(meta).map_err(encode_failed)?;
        let batch = RecordBatchBuilder::new(Compression::None)
            .base_timestamp(now_ms())
            .record(Record {
                offset_delta: 0,
                timestamp_delta: 0,
                key: Some(key),
                value: Some(value),
                headers: Vec::new(),
            })
            .build()
            .map_err(|e| {
                tracing::error!(error = %e, "encoding a transaction state batch failed");
                ErrorCode::UnknownServerError
            })?;
        let options = AppendOptions {
            leader_epoch: partition.leader_epoch(),
            log_append_time_ms: None,
        };
        let info = partition.log.append(&batch, &options).map_err(|e| {
            tracing::warn!(error = %e, transactional_id = %meta.transactional_id,
                "appending to {TRANSACTION_STATE_TOPIC} failed");
            ErrorCode::CoordinatorNotAvailable
        })?;
        let end_offset = info.last_offset + 1;
        Ok(Appended {
            durable: broker.raise_watermark_when_durable(partition, end_offset),
            partition: Arc::clone(partition),
            end_offset,
            leader_epoch: options.leader_epoch,
        })
    }

    /// Runs a transition on one id: `f` changes a copy; when it asks for it
    /// the copy is appended and then installed. A refusal or a failed
    /// append changes nothing.
    fn transition<T>(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        f: impl FnOnce(&mut TxnMetadata) -> Result<(Effect, T), ErrorCode>,
    ) -> Result<Pending<T>, ErrorCode> {
        let mut txns = self.lock();
        let Some(current) = txns.get(transactional_id) else {
            return Err(ErrorCode::InvalidProducerIdMapping);
        };
        let mut next = current.clone();
        let (effect, reply) = f(&mut next)?;
        let durable = if effect.persist {
            Some(self.append(broker, &next)?)
        } else {
            None
        };
        let then = effect
            .markers
            .map(|marker| self.after_prepare(broker, &next, marker));
        txns.insert(transactional_id.to_string(), next);
        Ok(Pending {
            durable,
            then,
            await_markers: false,
            reply,
        })
    }

    /// What runs once a Prepare state is durable: write the markers and complete.
    fn after_prepare(
        &self,
        broker: &Arc<Broker>,
        meta: &TxnMetadata,
        marker: ControlType,
    ) -> Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send> {
        let broker = broker.clone();
        let prepared = Prepared::of(meta, marker);
        let crash = self.crash_after_prepare;
        Box::new(move || {
            if crash {
                tracing::error!(transactional_id = %prepared.transactional_id, "{CRASH_AFTER_PREPARE_ENV}=1: aborting the process after the prepare record");
                std::process::abort();
            }
            TxnCoordinator::spawn_completion(broker, prepared)
        })
    }

    /// Starts the task that writes a prepared transaction's markers and completes it, unless
    /// one runs for the id already (then the returned task ends at once).
    fn spawn_completion(broker: Arc<Broker>, prepared: Prepared) -> tokio::task::JoinHandle<()> {
        let started = broker
            .txn
            .completing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prepared.transactional_id.clone());
        if !started {
            return tokio::spawn(async {});
        }
        // The guard frees the id however the task ends: done, panicked or cancelled at
        // shutdown. Left in the set, the id would never be completed on this broker again.
        let guard = Completing {
            broker: broker.clone(),
            transactional_id: prepared.transactional_id.clone(),
        };
        tokio::spawn(async move {
            let _guard = guard;
            write_markers_and_complete(broker, prepared).await;
        })
    }

    fn start_timer(&self, broker: &Arc<Broker>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.recover(broker, None);
        let weak: Weak<Broker> = Arc::downgrade(broker);
        let wake = self.wake.clone();
        let interval_ms = self.abort_scan_interval_ms.max(1);
        tokio::spawn(async move {
            loop {
                let notified = wake.notified();
                let _ = tokio::time::timeout(Duration::from_millis(interval_ms), notified).await;
                let Some(broker) = weak.upgrade() else { return };
                if broker.txn.stopped.load(Ordering::Acquire) {
                    return;
                }
                let loaded = std::mem::take(
                    &mut *broker.txn.loaded.lock().unwrap_or_else(|e| e.into_inner()),
                );
                if !loaded.is_empty() {
                    broker.txn.recover(&broker, Some(&loaded));
                }
                broker.txn.abort_timed_out(&broker, now_ms());
            }
        });
    }

    /// Starts the coordinator's background work: completing the transactions
    /// replay found in a Prepare state, and the timeout scan. Call once the
    /// broker is open, inside the runtime.
    pub fn start(&self, broker: &Arc<Broker>) {
        self.start_timer(broker);
    }

    /// Completes every transaction left in a Prepare state (after a crash), or only those of
    /// the given `__transaction_state` partitions (index, partition count).
    fn recover(&self, broker: &Arc<Broker>, only: Option<&[(i32, i32)]>) {
        let prepared: Vec<(TxnMetadata, ControlType)> = self
            .lock()
            .values()
            .filter(|m| {
                only.is_none_or(|parts| {
                    parts
                        .iter()
                        .any(|&(index, count)| partition_for(&m.transactional_id, count) == index)
                })
            })
            .filter_map(|m| m.state.pending_marker().map(|c| (m.clone(), c)))
            .collect();
        for (meta, marker) in prepared {
            tracing::info!(transactional_id = %meta.transactional_id, state = meta.state.name(),
                partitions = meta.partitions.len(), "completing a transaction prepared before restart");
            drop(TxnCoordinator::spawn_completion(
                broker.clone(),
                Prepared::of(&meta, marker),
            ));
        }
    }

    /// Aborts every transaction open longer than its timeout.
    fn abort_timed_out(&self, broker: &Arc<Broker>, now: i64) {
        let due: Vec<String> = self
            .lock()
            .values()
            .filter(|m| {
                m.state == TxnState::Ongoing
                    && m.start_ms.saturating_add(i64::from(m.timeout_ms)) < now
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in due {
            let pending = self.transition(broker, &id, |m| {
                m.abort_if_timed_out(now)
                    .map(|e| (e, ()))
                    .ok_or(ErrorCode::None)
            });
            match pending {
                Ok(pending) => {
                    tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
                    tokio::spawn(async move {
                        if let Err(code) = pending.wait().await {
                            tracing::warn!(transactional_id = %id, ?code, "timed-out abort not stored; retrying at the next scan");
                        }
                    });
                }
                Err(ErrorCode::None) => {}
                Err(code) => {
                    tracing::warn!(transactional_id = %id, ?code, "could not abort a timed-out transaction")
                }
            }
        }
    }

    /// Stops the timer task.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    // ---- requests -------------------------------------------------------

    /// InitProducerId with a transactional id.
    pub fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Pending<InitReply> {
        if !self.enabled {
            return Pending::ready(Err(ErrorCode::TransactionalIdAuthorizationFailed));
        }
        // Kafka: a timeout above transaction.max.timeout.ms (or not positive) is refused.
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Pending::ready(Err(ErrorCode::InvalidTransactionTimeout));
        }
        self.start_timer(broker);
        if let Err(code) = self.ensure_topic(broker) {
            return Pending::ready(Err(code));
        }
        let known = self.lock().contains_key(transactional_id);
        if !known {
            let producer_id = match broker.producer_ids.generate() {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(error = %e, "could not reserve producer ids");
                    return Pending::ready(Err(ErrorCode::UnknownServerError));
                }
            };
            self.lock()
                .entry(transactional_id.to_string())
                .or_insert_with(|| {
                    TxnMetadata::new(transactional_id, producer_id, timeout_ms, now_ms())
                });
        }
        let now = now_ms();
        let result = self.transition(broker, transactional_id, |m| {
            let mut fresh_id = || {
                broker.producer_ids.generate().map_err(|e| {
                    tracing::error!(error = %e, "could not reserve producer ids");
                    ErrorCode::UnknownServerError
                })
            };
            match m.init_producer_id(expected, timeout_ms, now, &mut fresh_id)? {
                InitOutcome::Ready {
                    producer_id,
                    producer_epoch,
                    effect,
                } => Ok((effect, Ok((producer_id, producer_epoch)))),
                InitOutcome::FencingOngoing { effect } => {
                    Ok((effect, Err(ErrorCode::ConcurrentTransactions)))
                }
            }
        });
        if result.is_err() && !known {
            // The first init of a new id did not get stored: forget it.
            let mut txns = self.lock();
            if txns
                .get(transactional_id)
                .is_some_and(|m| m.producer_epoch == state::NO_PRODUCER_EPOCH)
            {
                txns.remove(transactional_id);
            }
        }
        match result {
            Ok(pending) => pending,
            Err(code) => Pending::ready(Err(code)),
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Pending<()>, ErrorCode> {
        if !self.enabled {
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        self.start_timer(broker);
        let now = now_ms();
        self.transition(broker, transactional_id, |m| {
            Ok((
                m.add_partitions(producer_id, producer_epoch, partitions, now)?,
                (),
            ))
        })
    }

    /// Whether this broker coordinates `transactional_id` now (leads its
    /// `__transaction_state` partition), so that [`TxnCoordinator::verify`] can answer
    /// from memory.
    pub fn coordinates(&self, broker: &Broker, transactional_id: &str) -> bool {
        let Some(topic) = broker.topic(TRANSACTION_STATE_TOPIC) else {
            return false;
        };
        topic
            .partition(partition_for(transactional_id, topic.partition_count))
            .is_some_and(|p| p.is_leader())
    }

    /// KIP-890 part 1: is `partition` in the producer's open transaction?
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partition: &TopicPartition,
    ) -> ErrorCode {
        match self.lock().get(transactional_id) {
            Some(m) => m.verify(producer_id, producer_epoch, partition),
            None => ErrorCode::InvalidProducerIdMapping,
        }
    }

    /// EndTxn. The reply is the producer id and epoch to go on with.
    pub fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        bump_epoch: bool,
    ) -> Result<Pending<(i64, i16)>, ErrorCode> {
        if !self.enabled {
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        self.start_timer(broker);
        let now = now_ms();
        let mut pending = self.transition(broker, transactional_id, |m| {
            let end = m.end_txn(producer_id, producer_epoch, commit, bump_epoch, now)?;
            Ok((end.effect, (end.producer_id, end.producer_epoch)))
        })?;
        pending.await_markers = true;
        Ok(pending)
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnDescription> {
        self.lock().get(transactional_id).map(|m| TxnDescription {
            transactional_id: m.transactional_id.clone(),
            state: m.state,
            timeout_ms: m.timeout_ms,
            start_ms: m.start_ms,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            partitions: m.partitions.iter().cloned().collect(),
        })
    }

    /// ListTransactions: every id matching the filters (empty = any), sorted.
    /// `running_longer_than_ms` keeps transactions whose start is older (v1).
    pub fn list(
        &self,
        states: &[TxnState],
        producer_ids: &[i64],
        running_longer_than_ms: Option<i64>,
        id_pattern: Option<&regex_lite::Regex>,
    ) -> Vec<(String, i64, TxnState)> {
        let now = now_ms();
        let mut out: Vec<(String, i64, TxnState)> = self
            .lock()
            .values()
            .filter(|m| states.is_empty() || states.contains(&m.state))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|m| running_longer_than_ms.is_none_or(|d| now.saturating_sub(m.start_ms) > d))
            .filter(|m| id_pattern.is_none_or(|re| re.is_match(&m.transactional_id)))
            .map(|m| (m.transactional_id.clone(), m.producer_id, m.state))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Runs `then` (the markers of a prepared transaction) once the Prepare record below
/// `end_offset` is committed, for as long as this broker leads its partition in `leader_epoch`.
async fn markers_once_committed(
    partition: Arc<crate::partition::Partition>,
    end_offset: i64,
    leader_epoch: i32,
    then: Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>,
) {
    loop {
        if partition.log.is_poisoned() {
            // Its fsync failed: the record is not durable here, and this log takes no more
            // writes. The next coordinator decides from its own log.
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        match crate::wait_replicated(&partition, end_offset, leader_epoch, deadline).await {
            Ok(true) => {
                drop(then());
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::info!(error = %e, end_offset,
                    "a prepared transaction's record was not committed here; its next coordinator completes it");
                return;
            }
        }
    }
}

/// Sends one leader the markers of its partitions (Kafka's WriteTxnMarkers from the
/// coordinator to partition leaders). Returns the partitions that did not take them.
async fn send_markers(
    broker: &Broker,
    leader: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlType,
    partitions: Vec<TopicPartition>,
) -> Vec<TopicPartition> {
    use weir_protocol::messages::write_txn_markers::{
        WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
    };
    let Some(addr) = broker.broker_address(leader) else {
        return partitions;
    };
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &partitions {
        topics.entry(topic.clone()).or_default().push(*index);
    }
    let request = WriteTxnMarkersRequest {
        markers: vec![WritableTxnMarker {
            producer_id,
            producer_epoch,
            transaction_result: marker == ControlType::Commit,
            topics: topics
                .into_iter()
                .map(|(name, partition_indexes)| WritableTxnMarkerTopic {
                    name,
                    partition_indexes,
                })
                .collect(),
            coordinator_epoch: 0,
        }],
    };
    let options = weir_client::ConnectionOptions {
        client_id: format!("weir-txn-coordinator-{}", broker.config.node_id),
        connect_timeout_ms: 2_000,
        request_timeout_ms: 30_000,
        ..weir_client::ConnectionOptions::default()
    };
    let answer = match weir_client::Connection::connect(&addr, options).await {
        Ok(mut c) => c.send(&request).await,
        Err(e) => Err(e),
    };
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(leader, error = %e, "sending transaction markers failed; will retry");
            return partitions;
        }
    };
    let mut done: Vec<TopicPartition> = Vec::new();
    for m in response.markers {
        for t in m.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    done.push((t.name.clone(), p.partition_index));
                } else {
                    tracing::debug!(leader, topic = %t.name, partition = p.partition_index,
                        code = p.error_code, "a leader refused a transaction marker; will retry");
                }
            }
        }
    }
    partitions
        .into_iter()
        .filter(|tp| !done.contains(tp))
        .collect()
}

/// Writes `marker` to every partition of a prepared transaction, waits for
/// the markers to be durable, then stores the Complete state. A partition
/// that refuses is tried again, after 1 s and then at most every 5 s, until it
/// takes the marker (Kafka's coordinator also retries markers without end).
async fn write_markers_and_complete(broker: Arc<Broker>, prepared: Prepared) {
    let Prepared {
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
        marker,
    } = prepared;
    let mut left = partitions;
    let mut pause_ms = MARKER_RETRY_MS;
    loop {
        let mut waits = Vec::new();
        let mut failed = Vec::new();
        // Partitions led by other brokers, by leader: they get WriteTxnMarkers.
        let mut remote: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for (topic, index) in left {
            // A partition whose topic was deleted needs no marker (as Kafka).
            if broker.cluster().image().topic_by_name(&topic).is_none() {
                continue;
            }
            let local = broker
                .topic(&topic)
                .and_then(|t| t.partition(index).cloned().map(|p| (t, p)))
                .filter(|(_, p)| p.is_leader());
            let Some((found, partition)) = local else {
                match broker.partition_leader(&topic, index) {
                    Some((leader, _, _)) if leader != broker.config.node_id => {
                        remote.entry(leader).or_default().push((topic, index));
                    }
                    // No live leader right now: try again.
                    _ => failed.push((topic, index)),
                }
                continue;
            };
            let partition_count = found.partition_count;
            let options = AppendOptions {
                leader_epoch: partition.leader_epoch(),
                log_append_time_ms: None,
            };
            let m = Marker {
                control_type: marker,
                coordinator_epoch: 0,
            };
            match partition
                .log
                .append_marker(producer_id, producer_epoch, m, now_ms(), &options)
            {
                Ok(info) => {
                    if topic == OFFSETS_TOPIC {
                        broker.groups.complete_txn_offsets(
                            producer_id,
                            index,
                            partition_count,
                            marker == ControlType::Commit,
                        );
                    }
                    let durable =
                        broker.raise_watermark_when_durable(&partition, info.last_offset + 1);
                    waits.push(((topic, index), durable));
                }
                Err(e) => {
                    tracing::warn!(%topic, partition = index, error = %e, %transactional_id, "writing a transaction marker failed; will retry");
                    failed.push((topic, index));
                }
            }
        }
        for (leader, tps) in remote {
            failed.extend(
                send_markers(&broker, leader, producer_id, producer_epoch, marker, tps).await,
            );
        }
        for (tp, durable) in waits {
            if !matches!(durable.await, Ok(Ok(()))) {
                failed.push(tp);
            }
        }
        if failed.is_empty() {
            break;
        }
        if broker.txn.stopped.load(Ordering::Acquire) {
            return;
        }
        left = failed;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = next_marker_retry_ms(pause_ms);
    }
    let mut pause_ms = MARKER_RETRY_MS;
    // The Complete record: tried again while this broker still coordinates the id (a full
    // disk, a write that failed), since until it is stored every request of the id gets
    // CONCURRENT_TRANSACTIONS.
    let pending = loop {
        let now = now_ms();
        {
            let mut txns = broker.txn.lock();
            let Some(current) = txns.get(&transactional_id) else {
                return;
            };
            let mut next = current.clone();
            if !next.complete(producer_id, producer_epoch, now) {
                return;
            }
            match broker.txn.append(&broker, &next) {
                Ok(appended) => {
                    txns.insert(transactional_id.clone(), next);
                    break appended.durable;
                }
                Err(ErrorCode::NotCoordinator) => return,
                Err(code) => {
                    tracing::warn!(%transactional_id, ?code, "could not store the completed transaction; will retry");
                }
            }
        }
        if broker.txn.stopped.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = next_marker_retry_ms(pause_ms);
    };
    let _ = pending.await;
}

#[cfg(test)]
mod tests {
    use super::{MARKER_RETRY_MAX_MS, MARKER_RETRY_MS, next_marker_retry_ms};

    #[test]
    fn marker_retries_double_up_to_the_cap() {
        let mut pause_ms = MARKER_RETRY_MS;
        let mut seen = vec![pause_ms];
        for _ in 0..5 {
            pause_ms = next_marker_retry_ms(pause_ms);
            seen.push(pause_ms);
        }
        assert_eq!(seen, [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
        assert_eq!(next_marker_retry_ms(u64::MAX), MARKER_RETRY_MAX_MS);
    }
}
