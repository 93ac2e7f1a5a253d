//! `weir-log`: one partition's log on disk.
//!
//! # Layout
//! - [`LogEnv`] (`env.rs`): shared per broker. A capped cache of open segment files and the
//!   group-commit flusher threads that turn many appends into one `fdatasync`.
//! - [`Log`] (`log.rs`): one partition directory. Appends are serialized by a per-log mutex
//!   (partitions never block each other); reads take a snapshot of the segment list and return
//!   [`FileRange`]s for `sendfile`. Also retention, DeleteRecords, truncation, recovery, and the
//!   leader-epoch cache.
//! - `segment.rs`: a segment file with its sparse offset/time index, header walking, the
//!   CRC-verifying recovery scan and the active segment's recovery-point index.
//! - `checkpoint.rs`: atomically replaced small files (log checkpoint with the recovery point,
//!   leader epochs, producer state snapshots).
//! - `producer_state.rs`: idempotent producers' epochs and last five batches per producer id, a
//!   sans-I/O state machine the append checks under its lock; snapshotted at every roll, at
//!   close and with the recovery point, rebuilt on open (and after truncation) from the newest
//!   snapshot plus the batch headers after it.
//! - `txn_index.rs`: each segment's aborted transactions (`.txnindex`), written with the
//!   segment's index files and rebuilt from the log for segments recovery scans; with the open
//!   transactions in the producer state they give the last stable offset and what a
//!   read_committed fetch must report.
//! - `cleaner.rs`: compaction. A pass builds a bounded key map of the dirty part, rewrites the
//!   sealed segments below the first uncleanable offset into `.cleaned` files without holding
//!   the log's locks, and swaps them in under the append lock (`.swap` is the commit point,
//!   completed or discarded by `Log::open`); offsets stay dense (dropped runs become one empty
//!   batch).
//! - Batch headers are read and rewritten with `weir_protocol::record` (sans-I/O, no tokio), so
//!   storage and the codec agree on one definition of the v2 format.
//!
//! # Invariants
//! - Offsets are dense and monotonic; a batch is written exactly as received except for its base
//!   offset and partition leader epoch (both outside the CRC), or, for LogAppendTime, its max
//!   timestamp and attributes (the CRC is then recomputed). The cleaner later rewrites batches
//!   of compacted logs (fewer records, same offsets; see `cleaner.rs`).
//! - Readers never see bytes past a segment's committed size, nor batches at or beyond the
//!   caller's `max_offset_exclusive`.
//! - After a failed write or fsync the log is poisoned and refuses further writes.
//! - The flusher persists a recovery point (a synced offset, its position in its segment and the
//!   index entries before it) after successful syncs, at most every `recovery_point_interval_*`.
//!   On open only data after it is scanned: lengths, dense offsets and CRCs. In the last segment
//!   the first bad batch and everything after it is cut off (a crash's torn tail). Damage in an
//!   earlier segment cuts nothing: the log opens damaged ([`Damage`]), serves reads up to the
//!   damage, refuses writes, and keeps every later segment on disk. Bytes before the recovery
//!   point were fsynced and are trusted without re-reading them (as Kafka does): a sealed
//!   segment below it costs a stat and a 64-byte index-header read at open, its index loading
//!   on first use, so restart work is bounded per partition whatever the history.

mod checkpoint;
pub mod cleaner;
pub mod durable;
mod env;
mod log;
pub mod producer_state;
mod segment;
pub mod stats;
pub mod test_support;
mod txn_index;

use std::sync::{Mutex, MutexGuard};

pub use checkpoint::LEADER_EPOCH_CHECKPOINT_FILE;
pub use cleaner::{CleanReport, Cleaner, CleanerStats, CompactionConfig};
pub use env::LogEnv;
pub use log::{AppendInfo, AppendOptions, Damage, FileRange, Log, ReadResult, RecoveryStats};
pub use producer_state::{
    AbortedTxn, AppendOrigin, CompletedTxn, ProducerBatch, ProducerEntry, ProducerState,
    ProducerStateError,
};
pub use stats::{HistogramSnapshot, LogEvent, RecentEvent, SyncStats};

/// Lock that survives poisoning: a panic elsewhere must not make every later call panic too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Group-commit `fdatasync` before acknowledging: the default.
    EveryAppend,
    /// Kafka's `flush.messages` / `flush.ms`: acknowledge from the page cache, sync in the
    /// background after this many messages or milliseconds, whichever comes first.
    Interval { messages: u64, ms: u64 },
}

/// Per-log settings (Kafka topic config names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u32,
    /// `retention.ms`; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages` / `flush.ms`, or fsync-before-ack.
    pub flush: FlushPolicy,
    /// `segment.index.bytes`: a segment rolls once its offset index would exceed this.
    pub segment_index_bytes: u32,
    /// After a successful sync, the recovery point is persisted if this many bytes were appended
    /// since it was last persisted... (bounds how much recovery re-reads after a crash)
    pub recovery_point_interval_bytes: u64,
    /// ...or if this much time has passed (bounds the checkpoint cost for slow partitions to one
    /// small atomic file replacement per interval). Kafka: `log.flush.offset.checkpoint.interval.ms`
    /// (60 s there, for all partitions at once). Each store is per partition and costs ~2 ms of
    /// syncs here: at 1 s, 1,000 busy partitions kept a flusher thread busy with them, and 10 s
    /// raised (f)'s throughput by 6-17% in three paired runs. Re-reads after a crash stay
    /// bounded by the byte interval.
    pub recovery_point_interval_ms: u64,
    /// Kafka's broker config `producer.id.expiration.ms`: a producer whose last batch is older is
    /// forgotten (checked with retention).
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush: FlushPolicy::EveryAppend,
            segment_index_bytes: 10 * 1024 * 1024,
            recovery_point_interval_bytes: 16 * 1024 * 1024,
            recovery_point_interval_ms: 10_000,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("log is poisoned after a failed write or fsync and refuses writes")]
    Poisoned,
    #[error("log is closed")]
    Closed,
    /// Recovery found damage before the last segment; see [`Damage`].
    #[error("{0}")]
    Damaged(Box<Damage>),
    /// An idempotent producer's batch is out of sequence or from a stale epoch.
    #[error(transparent)]
    Producer(#[from] ProducerStateError),
    /// Written here but not (yet) on the in-sync replicas; set by the broker, which knows them.
    #[error("not replicated: {0}")]
    NotReplicated(&'static str),
    /// A follower's batches do not continue its log (replication).
    #[error("replicated batch starts at offset {found}, the log ends at {expected}")]
    NotContiguous { expected: i64, found: i64 },
    #[error("invalid record batch input: {0}")]
    InvalidBatch(&'static str),
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A client batch behind one of the same producer that failed to be written: answered with
    /// the same retriable storage error, so that the producer retries the failed one first.
    #[error(
        "batch {sequence} of producer {producer_id} could not be written; it must be retried \
         before the batches after it"
    )]
    BehindFailedWrite { producer_id: i64, sequence: i32 },
}
