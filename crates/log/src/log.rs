//! One partition's log: a directory of segments plus checkpoints.
//!
//! Concurrency: `append` (the per-log mutex) serializes appends and structural changes (roll,
//! truncation, retention). Readers never take it: they snapshot the segment list (`RwLock`, held
//! only to clone a `Vec` of `Arc`s) and read committed bytes, whose extent is published through
//! atomics after each write. Durability bookkeeping lives in `durable`, shared with the flusher.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use weir_protocol::control::Marker;
use weir_protocol::record::{self, BATCH_HEADER_BYTES, BatchHeader};

use crate::checkpoint::{self, LEADER_EPOCH_CHECKPOINT_FILE, LogCheckpoint, RecoveryPosition};
use crate::env::LogEnv;
use crate::producer_state::{
    AbortedTxn, AppendOrigin, AppendedBatch, CompletedTxn, ProducerCheck, ProducerEntry,
    ProducerState, ProducerStateError,
};
use crate::segment::{self, ScanStart, SegMeta, Segment, batch_len, read_header};
use crate::stats::LogEvent;
use crate::{FlushPolicy, LogConfig, LogError, lock};

/// Attempts of a read that raced with cleaner swaps before it gives up.
const READ_ATTEMPTS_MAX: usize = 8;

/// Largest number of iovecs per `pwritev` call (Linux IOV_MAX is 1024).
const IOVECS_PER_WRITE_MAX: usize = 512;

type DurableCallback = Box<dyn FnOnce(Result<(), LogError>) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOptions {
    /// Written into each batch's partition leader epoch; a new, higher epoch also starts a
    /// leader-epoch cache entry at the first appended offset.
    pub leader_epoch: i32,
    /// `Some(now)` for topics with `message.timestamp.type=LogAppendTime`.
    pub log_append_time_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless LogAppendTime was applied.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The append repeated one of an idempotent producer's last five batches: nothing was
    /// written, and the offsets are those of the original batch.
    pub duplicate: bool,
}

/// A byte range of a segment file, for `sendfile`. The `Arc` keeps the file open even if the
/// segment is deleted or its descriptor evicted from the cache meanwhile.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub ranges: Vec<FileRange>,
    pub bytes: usize,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The offset after the last batch returned (the upper bound for
    /// [`Log::aborted_transactions`]); the read's start offset when nothing was returned.
    pub end_offset: i64,
}

impl ReadResult {
    /// Copies the ranges into `out` (the path for TLS connections and tests).
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.reserve(self.bytes);
        for r in &self.ranges {
            let at = out.len();
            out.resize(at + r.len, 0);
            if let Some(dst) = out.get_mut(at..) {
                r.file.read_exact_at(dst, r.position)?;
            }
        }
        Ok(())
    }
}

/// One batch of an append, parsed before the append lock is taken.
struct PendingBatch {
    header: BatchHeader,
    /// What a control batch says, if it is a transaction marker.
    marker: Option<Marker>,
    bytes: Bytes,
    /// The header as written: offsets and leader epoch assigned.
    header_out: [u8; BATCH_HEADER_BYTES],
}

/// Appends up to this size are copied into one buffer and written with a single-buffer `pwrite`:
/// for small batches that is cheaper than the kernel walking a header+payload iovec list. Larger
/// ones are written with `pwritev` straight from the caller's buffers (no copy).
const APPEND_COPY_BYTES_MAX: usize = 8 * 1024;

pub(crate) struct AppendState {
    active: Arc<Segment>,
    /// The active segment's descriptor, without a strong reference: the file cache owns it and
    /// may evict it (the fd cap holds), but while it is open appends skip the cache lookup.
    active_file: Weak<File>,
    /// Reused buffer for small appends (see `APPEND_COPY_BYTES_MAX`).
    scratch: Vec<u8>,
    closed: bool,
    /// Messages appended since the last background flush was requested (`Interval` policy).
    unflushed_messages: u64,
    /// Idempotent producers' state, covering every batch below the log end. Under the append
    /// lock so that the sequence check and the write it permits are one step.
    pub(crate) producers: ProducerState,
    /// Producers whose batch passed the sequence check but could not be written (disk full, an
    /// I/O error), with that batch's epoch and first sequence. See [`behind_failed_write`].
    failed_writes: HashMap<i64, (i16, i32)>,
}

/// Most producers remembered in [`AppendState::failed_writes`]. Past it the map starts again
/// empty: a producer forgotten so gets OUT_OF_ORDER_SEQUENCE_NUMBER for the batches behind its
/// failed one, the answer before the map existed.
const FAILED_WRITES_MAX: usize = 4096;

/// The refusal for a client batch of a producer whose earlier batch failed to be written,
/// unless it is that batch again (its retry) or starts a newer epoch.
///
/// A producer has up to 5 requests in flight. When the first fails to be written and the disk
/// recovers before the next arrives, the sequence check would answer the next ones
/// OUT_OF_ORDER_SEQUENCE_NUMBER, and librdkafka answers that by bumping its epoch and sending
/// again, under new sequences, batches of other partitions that may already be written: one
/// storage error becomes duplicates (confluentinc/librdkafka#4953). Kafka never gives that
/// answer here, because a failed write takes the log directory offline and every later write
/// fails too. Refusing the batches behind the failed one with the same retriable storage error
/// gives the client what Kafka gives it: it retries the failed batch first, then the rest.
fn behind_failed_write(
    failed_writes: &HashMap<i64, (i16, i32)>,
    producers: &ProducerState,
    pending: &[PendingBatch],
) -> Option<LogError> {
    if failed_writes.is_empty() {
        return None;
    }
    pending.iter().find_map(|p| {
        let h = &p.header;
        let &(epoch, sequence) = failed_writes.get(&h.producer_id)?;
        // Only while the failed batch is still the producer's next one here: written meanwhile
        // through another leader and replicated to this log, it holds nothing up any more.
        let still_missing = producers.get(h.producer_id).is_none_or(|e| {
            e.epoch == epoch
                && e.last_batch()
                    .is_none_or(|b| crate::producer_state::in_sequence(b.last_sequence, sequence))
        });
        (still_missing
            && !h.is_control()
            && h.producer_epoch == epoch
            && h.base_sequence != sequence)
            .then(|| LogError::BehindFailedWrite {
                producer_id: h.producer_id,
                sequence,
            })
    })
}

/// Remembers the producers of client batches that passed the sequence check but were not
/// written, keeping an older failure of the same producer.
fn note_failed_write(
    failed_writes: &mut HashMap<i64, (i16, i32)>,
    pending: &[PendingBatch],
    origin: AppendOrigin,
) {
    if origin != AppendOrigin::Client {
        return;
    }
    for p in pending {
        let h = &p.header;
        if h.producer_id < 0 || h.is_control() {
            continue;
        }
        if failed_writes.len() >= FAILED_WRITES_MAX && !failed_writes.contains_key(&h.producer_id) {
            failed_writes.clear();
        }
        failed_writes
            .entry(h.producer_id)
            .and_modify(|e| {
                if e.0 != h.producer_epoch {
                    *e = (h.producer_epoch, h.base_sequence);
                }
            })
            .or_insert((h.producer_epoch, h.base_sequence));
    }
}

struct Durable {
    /// Offset (exclusive) up to which data has been written to segment files.
    written_end: i64,
    /// Offset (exclusive) up to which data is known to be on stable storage.
    synced_end: i64,
    /// Segments written since the last sync (the active one, plus any rolled meanwhile).
    unsynced: Vec<Arc<Segment>>,
    /// A segment file was created or removed: the directory needs an fsync too.
    dir_dirty: bool,
    waiters: Vec<(i64, DurableCallback)>,
    /// Where `written_end` lies in its segment, with the index state there: what a recovery
    /// point persisted after the next sync describes.
    written_point: WrittenPoint,
    /// Bytes appended since open (for the recovery-point byte interval).
    written_bytes_total: u64,
}

/// The end of the written data in its segment, captured atomically with `written_end`.
#[derive(Clone)]
struct WrittenPoint {
    seg: Arc<Segment>,
    position: u64,
    next_offset: i64,
    index_len: usize,
    max_ts: i64,
    max_ts_offset: i64,
    bytes_since_index: u64,
}

impl WrittenPoint {
    fn of(seg: &Arc<Segment>, meta: &SegMeta, position: u64, next_offset: i64) -> WrittenPoint {
        WrittenPoint {
            seg: Arc::clone(seg),
            position,
            next_offset,
            index_len: meta.index.len(),
            max_ts: meta.max_ts,
            max_ts_offset: meta.max_ts_offset,
            bytes_since_index: meta.bytes_since_index,
        }
    }
}

/// What the last stable offset depends on besides the high watermark. Kept apart from the
/// producer state (under the append lock) so that fetches and watermark raises never wait for
/// an append.
#[derive(Debug, Default)]
struct TxnTracker {
    /// First offset of the earliest open transaction; `i64::MAX` if none is open.
    first_undecided: i64,
    /// Transactions whose marker is written but not yet below the high watermark, as (first
    /// offset, marker offset): their records must not be read as committed until the marker
    /// is durable (Kafka's unreplicated transactions).
    unreplicated: Vec<(i64, i64)>,
}

impl TxnTracker {
    fn new(first_undecided: Option<i64>, unreplicated: Vec<(i64, i64)>) -> TxnTracker {
        TxnTracker {
            first_undecided: first_undecided.unwrap_or(i64::MAX),
            unreplicated,
        }
    }

    /// Forgets the completed transactions whose marker lies below `hw`.
    fn prune(&mut self, hw: i64) {
        self.unreplicated.retain(|&(_, marker)| marker >= hw);
    }

    fn first_unstable(&self) -> i64 {
        self.unreplicated
            .iter()
            .map(|&(first, _)| first)
            .fold(self.first_undecided, i64::min)
    }
}

/// The producer state for the log below some offset, and what replaying the log found.
struct Rebuilt {
    state: ProducerState,
    /// Where the replay started (the snapshot's offset, or the log start).
    replay_from: i64,
    /// Aborted transactions whose marker the replay met, in offset order.
    aborted: Vec<AbortedTxn>,
    /// Completed transactions whose marker lies at or above the high watermark.
    unreplicated: Vec<(i64, i64)>,
    /// Batch headers replayed and the bytes they span (recovery statistics).
    batches: u64,
    bytes: u64,
}

/// Largest control batch read whole while replaying (a marker is under 100 bytes).
const MARKER_BATCH_BYTES_MAX: u64 = 64 * 1024;

/// The producer state covering every batch below `offset`, captured under the append lock.
struct PendingSnapshot {
    offset: i64,
    entries: Vec<ProducerEntry>,
    /// `Shared::truncations` at capture: a truncation since makes it stale.
    truncations: u64,
}

/// When the recovery point was last persisted, for rate limiting.
struct RecoveryPointClock {
    at: Instant,
    written_bytes_total: u64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    env: Arc<LogEnv>,
    pub(crate) append: Mutex<AppendState>,
    segments: RwLock<Vec<Arc<Segment>>>,
    log_end: AtomicI64,
    log_start: AtomicI64,
    high_watermark: AtomicI64,
    durable: Mutex<Durable>,
    /// Serializes syncs of this log, and excludes them during truncation (a sync must not cover
    /// segments the truncation is removing).
    flush_lock: Mutex<()>,
    /// Serializes recovery-point stores (an `.rpindex` append and a checkpoint replacement, ~2 ms
    /// of syncs here). A flush takes it only after releasing `flush_lock`, so appends acked by
    /// the next sync don't wait behind that I/O; truncation, close and detach take it after
    /// `flush_lock`.
    recovery_point_lock: Mutex<()>,
    /// How long this log's latest sync took, in µs: a slow ack's breakdown names it.
    last_sync_micros: AtomicU64,
    /// One cleaning pass at a time per log (two would write the same `.cleaned` file).
    pub(crate) cleaning: Mutex<()>,
    /// The earliest KIP-534 delete horizon (ms) among the batches the last cleaning pass kept:
    /// once it passes, a pass is due even with nothing dirty, to drop what it covers. Kept in
    /// memory only (as in Kafka): `i64::MAX`, none known, until a pass runs after open.
    pub(crate) cleaner_horizon_ms: AtomicI64,
    /// The open transactions each producer snapshot records, by snapshot offset, as the cleaner
    /// last decoded them: snapshot files are replaced whole, never edited, so an entry stands
    /// while the file's length and modification time are unchanged. Holds at most one entry per
    /// snapshot file present at the last pass.
    snapshot_txns: Mutex<HashMap<i64, SnapshotTxns>>,
    /// Bumped by truncation: a recovery point captured before it may describe data that is gone,
    /// and is not stored.
    pub(crate) truncations: AtomicU64,
    poisoned: AtomicBool,
    pub(crate) flush_queued: AtomicBool,
    pub(crate) flush_timer_armed: AtomicBool,
    config: Mutex<LogConfig>,
    epochs: Mutex<Vec<(i32, i64)>>,
    /// Open and not yet stable transactions, for the last stable offset.
    txns: Mutex<TxnTracker>,
    /// (segment base, aborts) of the active segment's `.txnindex` as last stored.
    txn_index_persisted: Mutex<(i64, usize)>,
    pub(crate) checkpoint: Mutex<LogCheckpoint>,
    /// Test hook: the next sync fails as if the device returned EIO.
    fail_next_sync: AtomicBool,
    /// Set when the `Log` handle is closed or dropped: a flush still queued for it must not write
    /// checkpoints into a directory that may already have been reopened.
    detached: AtomicBool,
    recovery_point_clock: Mutex<RecoveryPointClock>,
    /// Set by a recovery-point store: the next append captures the producer state at its end
    /// into `pending_snapshot`.
    snapshot_wanted: AtomicBool,
    /// Producer state captured by an append, written as a snapshot by the first recovery-point
    /// store at or past its offset (so that it never describes data a crash can take back).
    pending_snapshot: Mutex<Option<PendingSnapshot>>,
    /// What opening this log cost (recovery diagnostics and the bounded-restart tests).
    recovery: Mutex<RecoveryStats>,
    /// Set by recovery when a segment before the last one is damaged; the log then refuses
    /// writes for its whole life.
    damage: Option<Damage>,
}

/// The work `Log::open` did, for the startup log line and the tests that check restart work stays
/// bounded whatever the log's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segments the log opened with.
    pub segments: usize,
    /// Sealed segments below the recovery point: only their 64-byte index header was read; the
    /// index entries load on first use.
    pub segments_lazy: usize,
    /// Segments whose index files were read at open (trusted without a scan if they validate).
    pub index_files_loaded: usize,
    /// Segments CRC-scanned (some of them from a recovery position).
    pub segments_scanned: usize,
    /// Bytes the CRC scan read (0 after a clean shutdown).
    pub scanned_bytes: u64,
    /// Batch headers read to rebuild the idempotent producers' state after the newest snapshot.
    pub producer_replay_batches: u64,
    /// Bytes those batches span in their segments.
    pub producer_replay_bytes: u64,
    /// Wall time of `Log::open`.
    pub open_micros: u64,
}

/// One partition's log. `Send + Sync`; share it as `Arc<Log>`.
pub struct Log {
    pub(crate) shared: Arc<Shared>,
}

/// Producer id -> first offset of its open transaction, as a producer snapshot records them.
pub(crate) type OpenTxns = HashMap<i64, i64>;

/// One snapshot's open transactions as decoded, with the file's (length, modification time) when
/// it was read.
struct SnapshotTxns {
    stamp: (u64, Option<std::time::SystemTime>),
    open: Option<OpenTxns>,
}

/// Largest producer snapshot file read: about 1.7 million producers with 5 batches each. A
/// larger file is taken as unreadable (open falls back to an older snapshot and the log; the
/// cleaner holds every transaction open) rather than read whole into memory.
const PRODUCER_SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A producer snapshot file's offset and entries; `None` when it is missing, too large, or
/// does not decode.
fn read_producer_snapshot(path: &Path) -> Option<(i64, Vec<ProducerEntry>)> {
    use std::io::Read as _;
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len > PRODUCER_SNAPSHOT_BYTES_MAX {
        tracing::warn!(
            path = %path.display(),
            len,
            "producer snapshot over {PRODUCER_SNAPSHOT_BYTES_MAX} bytes not read"
        );
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).ok()?);
    file.take(PRODUCER_SNAPSHOT_BYTES_MAX)
        .read_to_end(&mut bytes)
        .ok()?;
    checkpoint::decode_producer_snapshot(&bytes)
}

/// Records a [`LogEvent`] from its creation to its drop, so every return path counts.
struct EventMark<'a> {
    stats: &'a crate::stats::SyncStats,
    event: LogEvent,
    started: Instant,
}

impl Drop for EventMark<'_> {
    fn drop(&mut self) {
        self.stats.record_event(self.event, self.started);
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A snapshot of the segment list (for the cleaner).
pub(crate) fn rw_read_segments(log: &Log) -> Vec<Arc<Segment>> {
    rw_read(&log.shared.segments).clone()
}

fn rw_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn rw_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Removes segments' files, newest first (see `truncate_to`).
fn remove_segment_files(s: &Shared, doomed: &[Arc<Segment>]) {
    for d in doomed.iter().rev() {
        s.env.files.forget(&d.log_path);
        for p in d.file_paths() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Writes all `slices` contiguously at `pos`, resuming after short writes (rare: only the
/// slow path rebuilds the iovec list).
fn write_all_at(file: &File, slices: &[IoSlice<'_>], mut pos: u64) -> io::Result<()> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut done = 0usize;
    while done < total {
        let n = if let [one] = slices {
            rustix::io::pwrite(file, one.get(done..).unwrap_or(&[]), pos)
        } else if done == 0 && slices.len() <= IOVECS_PER_WRITE_MAX {
            rustix::io::pwritev(file, slices, pos)
        } else {
            // Rebuild the remaining iovecs after `done` bytes.
            let mut skip = done;
            let mut rest: Vec<IoSlice<'_>> =
                Vec::with_capacity(slices.len().min(IOVECS_PER_WRITE_MAX));
            for s in slices {
                if rest.len() == IOVECS_PER_WRITE_MAX {
                    break;
                }
                if skip >= s.len() {
                    skip -= s.len();
                    continue;
                }
                rest.push(IoSlice::new(s.get(skip..).unwrap_or(&[])));
                skip = 0;
            }
            rustix::io::pwritev(file, &rest, pos)
        };
        let n = match n {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        done += n;
        pos += n as u64;
    }
    Ok(())
}

impl Shared {
    fn log_end(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }
    fn log_start(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Writes of any kind (appends, rolls, truncation, deletion) are refused on a damaged log.
    fn refuse_if_damaged(&self) -> Result<(), LogError> {
        match &self.damage {
            Some(d) => Err(LogError::Damaged(Box::new(d.clone()))),
            None => Ok(()),
        }
    }

    /// Base of the segment holding the end of the written data: the next recovery point stored
    /// names it, so the cleaner leaves it alone.
    pub(crate) fn written_point_base(&self) -> i64 {
        lock(&self.durable).written_point.seg.base_offset
    }

    pub(crate) fn refuse_if_damaged_pub(&self) -> Result<(), LogError> {
        self.refuse_if_damaged()
    }

    pub(crate) fn env_files_get(&self, path: &Path) -> io::Result<Arc<File>> {
        self.env.files.get(path)
    }

    /// For each producer snapshot at or below `up_to`: its offset and the producers it records
    /// inside a transaction, with that transaction's first offset; `None` for a snapshot that
    /// cannot be read (the cleaner then takes it to hold every transaction open). Decoded sets
    /// are kept between passes, so a pass reads only snapshots that are new or replaced.
    pub(crate) fn open_txns_in_snapshots(
        &self,
        up_to: i64,
    ) -> io::Result<Vec<(i64, Option<OpenTxns>)>> {
        let files = self.producer_snapshot_files()?;
        let mut cache = lock(&self.snapshot_txns);
        cache.retain(|o, _| files.iter().any(|(f, _)| f == o));
        let mut out = Vec::new();
        for (o, path) in files {
            if o > up_to {
                continue;
            }
            let stamp = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.len(), m.modified().ok()));
            if let (Some(stamp), Some(known)) = (stamp, cache.get(&o))
                && known.stamp == stamp
            {
                out.push((o, known.open.clone()));
                continue;
            }
            let open = read_producer_snapshot(&path).map(|(_, entries)| {
                entries
                    .iter()
                    .filter(|e| e.current_txn_first_offset >= 0)
                    .map(|e| (e.producer_id, e.current_txn_first_offset))
                    .collect::<OpenTxns>()
            });
            if let Some(stamp) = stamp {
                cache.insert(
                    o,
                    SnapshotTxns {
                        stamp,
                        open: open.clone(),
                    },
                );
            }
            out.push((o, open));
        }
        Ok(out)
    }

    fn poison(&self) {
        let waiters = {
            let mut d = lock(&self.durable);
            self.poisoned.store(true, Ordering::SeqCst);
            std::mem::take(&mut d.waiters)
        };
        for (_, cb) in waiters {
            cb(Err(LogError::Poisoned));
        }
    }

    fn store_checkpoint(&self, update: impl FnOnce(&mut LogCheckpoint)) -> io::Result<()> {
        let mut cp = lock(&self.checkpoint);
        let mut next = *cp;
        update(&mut next);
        if next != *cp {
            let started = Instant::now();
            next.store(&self.dir)?;
            self.env.stats.record_event(LogEvent::Checkpoint, started);
            *cp = next;
        }
        Ok(())
    }

    /// Syncs everything written so far, then completes the waiters it covers.
    pub(crate) fn flush_now(&self) -> Result<(), LogError> {
        self.flush(false)
    }

    /// As [`Shared::flush_now`], then stores the recovery point if anything was written since
    /// the last one, whatever the interval: for the cleaner, which cannot clean the segment a
    /// stored recovery point names (see `cleaner.rs`, `plan`).
    pub(crate) fn flush_and_store_recovery_point(&self) -> Result<(), LogError> {
        self.flush(true)
    }

    fn flush(&self, recovery_point_wanted: bool) -> Result<(), LogError> {
        let flushing = lock(&self.flush_lock);
        let truncations = self.truncations.load(Ordering::Acquire);
        if self.detached.load(Ordering::SeqCst) {
            let waiters = std::mem::take(&mut lock(&self.durable).waiters);
            for (_, cb) in waiters {
                cb(Err(LogError::Closed));
            }
            return Err(LogError::Closed);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            self.poison();
            return Err(LogError::Poisoned);
        }
        let (target, segs, dir_dirty, point, written_bytes_total) = {
            let mut d = lock(&self.durable);
            (
                d.written_end,
                std::mem::take(&mut d.unsynced),
                std::mem::take(&mut d.dir_dirty),
                d.written_point.clone(),
                d.written_bytes_total,
            )
        };
        let mut result: io::Result<()> = Ok(());
        let sync_started = Instant::now();
        let synced_anything = !segs.is_empty() || dir_dirty;
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            result = Err(io::Error::other("injected fsync failure"));
        }
        for seg in &segs {
            if result.is_err() {
                break;
            }
            match self.env.files.get(&seg.log_path) {
                Ok(f) => result = rustix::fs::fdatasync(&*f).map_err(io::Error::from),
                // Deleted meanwhile (retention or truncation): nothing left to sync.
                Err(e) if is_not_found(&e) => {}
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() && dir_dirty {
            result = crate::durable::sync_dir(&self.dir);
        }
        let sync_took = sync_started.elapsed();
        if let Err(e) = result {
            self.env.stats.sync_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(dir = %self.dir.display(), error = %e, "fdatasync failed; poisoning log");
            self.poison();
            return Err(LogError::Io(e));
        }
        let ready: Vec<DurableCallback> = {
            let mut d = lock(&self.durable);
            d.synced_end = d.synced_end.max(target);
            let synced = d.synced_end;
            let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut d.waiters)
                .into_iter()
                .partition(|(o, _)| *o <= synced);
            d.waiters = pending;
            done.into_iter().map(|(_, cb)| cb).collect()
        };
        if synced_anything {
            self.env.stats.record_sync(sync_took, ready.len());
            self.last_sync_micros.store(
                u64::try_from(sync_took.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        for cb in ready {
            cb(Ok(()));
        }
        // Waiters first: the checkpoint below must not add to ack latency.
        // Everything up to `point` is durable now. Persist it as the recovery point when a sealed
        // segment was just synced (so the next open trusts it whole) or when the interval is due.
        let active_base = rw_read(&self.segments)
            .last()
            .map_or(i64::MAX, |s| s.base_offset);
        let sealed_synced = segs.iter().any(|s| s.base_offset < active_base);
        let config = *lock(&self.config);
        let due = || {
            let clock = lock(&self.recovery_point_clock);
            written_bytes_total > clock.written_bytes_total
                && (recovery_point_wanted
                    || sealed_synced
                    || written_bytes_total - clock.written_bytes_total
                        >= config.recovery_point_interval_bytes
                    || clock.at.elapsed()
                        >= Duration::from_millis(config.recovery_point_interval_ms))
        };
        if due() {
            drop(flushing);
            let _rp = lock(&self.recovery_point_lock);
            // Asked again under the lock: the flushes that ended while the previous store ran
            // all found it due, and each storing again (a checkpoint replaced and a directory
            // synced, each a journal commit) stalled the data syncs beside them for 5 to 8 ms,
            // every 16 MiB (issue 21's periodic tail).
            if self.detached.load(Ordering::SeqCst)
                || self.truncations.load(Ordering::Acquire) != truncations
                || !due()
            {
                return Ok(());
            }
            let started = Instant::now();
            let _mark = EventMark {
                stats: &self.env.stats,
                event: LogEvent::RecoveryPoint,
                started,
            };
            // A sealed segment is trusted on open only through its index files, so they must be
            // durable before a recovery point past them is: otherwise a power cut loses them and
            // recovery rescans every segment sealed since (the rescan would grow with the data).
            // So must the producer snapshot each roll wrote, unsynced, at the end of a sealed
            // segment (the directory entry was synced with the new segment's, in the sync above).
            let sealed_indexes = segs
                .iter()
                .filter(|s| s.base_offset < active_base)
                .try_for_each(|s| {
                    segment::sync_index_files(s)?;
                    let snapshot = self
                        .dir
                        .join(checkpoint::producer_snapshot_name(s.next_offset()));
                    match File::open(&snapshot) {
                        Ok(f) => rustix::fs::fdatasync(&f).map_err(io::Error::from),
                        // Removed meanwhile (retention, or none written at this offset).
                        Err(e) if is_not_found(&e) => Ok(()),
                        Err(e) => Err(e),
                    }
                });
            if let Err(e) = sealed_indexes {
                if !is_not_found(&e) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync segment index files");
                }
                return Ok(());
            }
            match self.store_recovery_point(&point) {
                Ok(()) => {
                    *lock(&self.recovery_point_clock) = RecoveryPointClock {
                        at: Instant::now(),
                        written_bytes_total,
                    };
                    // The active segment's aborts go to disk before a producer snapshot past
                    // them can: recovery takes the aborts below its snapshot from this file.
                    match self.persist_active_txn_index(&point) {
                        Ok(()) => {
                            self.store_pending_producer_snapshot(point.next_offset, truncations)
                        }
                        Err(e) => {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the transaction index")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write log checkpoint")
                }
            }
        }
        Ok(())
    }

    /// Appends the index entries before `p` to its segment's `.rpindex` (synced) and returns the
    /// position to store in the checkpoint. `p` must lie in synced data; callers hold
    /// `recovery_point_lock` or have exclusive access.
    fn recovery_position(&self, p: &WrittenPoint) -> io::Result<Option<RecoveryPosition>> {
        let cp = *lock(&self.checkpoint);
        let (from, crc_before) = match cp.position {
            Some(r)
                if r.segment_base == p.seg.base_offset
                    && usize::try_from(r.index_count).is_ok_and(|c| c <= p.index_len) =>
            {
                (r.index_count, r.index_crc)
            }
            _ => (0, 0),
        };
        let Some(entries) = p
            .seg
            .meta()
            .index
            .get(from as usize..p.index_len)
            .map(<[_]>::to_vec)
        else {
            return Ok(None); // the index was rebuilt meanwhile (truncation): skip this one
        };
        let Ok(index_count) = u32::try_from(p.index_len) else {
            return Ok(None);
        };
        let index_crc = if entries.is_empty() {
            crc_before
        } else {
            segment::append_rpindex(&p.seg, from, crc_before, &entries)?
        };
        Ok(Some(RecoveryPosition {
            segment_base: p.seg.base_offset,
            position: p.position,
            next_offset: p.next_offset,
            index_count,
            index_crc,
            max_ts: p.max_ts,
            max_ts_offset: p.max_ts_offset,
            bytes_since_index: p.bytes_since_index,
        }))
    }

    /// Persists `p` (synced data) as the recovery point; drops the previous segment's `.rpindex`
    /// once the checkpoint no longer refers to it.
    fn store_recovery_point(&self, p: &WrittenPoint) -> io::Result<()> {
        let before = *lock(&self.checkpoint);
        if p.next_offset < before.recovery_point {
            return Ok(());
        }
        let Some(position) = self.recovery_position(p)? else {
            return Ok(());
        };
        self.store_checkpoint(|cp| {
            cp.recovery_point = p.next_offset;
            cp.position = Some(position);
        })?;
        if let Some(old) = before
            .position
            .filter(|o| o.segment_base != position.segment_base)
        {
            let _ = std::fs::remove_file(
                self.dir
                    .join(segment::file_name(old.segment_base, segment::RPINDEX_EXT)),
            );
        }
        Ok(())
    }

    /// Writes the producer state captured by an append since the last recovery point, if the
    /// recovery point just stored (`recovery_point`) covers it, and asks the next append for a
    /// new capture. The rebuild after a crash then replays batch headers from at most one
    /// recovery-point interval before the recovery point, not from the active segment's start
    /// (which may be a gigabyte away). Callers hold `recovery_point_lock`, which truncation
    /// takes too, so no truncation runs between the check below and the write.
    fn store_pending_producer_snapshot(&self, recovery_point: i64, truncations: u64) {
        let pending = lock(&self.pending_snapshot).take();
        let now_truncations = self.truncations.load(Ordering::Acquire);
        if let Some(p) = pending {
            if p.offset > recovery_point {
                // Not durable yet: keep it for the next recovery point.
                *lock(&self.pending_snapshot) = Some(p);
                return;
            }
            if p.truncations == now_truncations && truncations == now_truncations {
                let written = checkpoint::write_atomic(
                    &self.dir,
                    &checkpoint::producer_snapshot_name(p.offset),
                    &checkpoint::encode_producer_snapshot(p.offset, &p.entries),
                );
                match written {
                    Ok(()) => {
                        // Older snapshots taken this way are superseded; those at segment bases
                        // stay for truncation (they go with their segments).
                        let bases: Vec<i64> = rw_read(&self.segments)
                            .iter()
                            .map(|sg| sg.base_offset)
                            .collect();
                        if let Err(e) = self.delete_producer_snapshots(|o| {
                            o < p.offset && bases.binary_search(&o).is_err()
                        }) {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove old producer snapshots");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write producer snapshot")
                    }
                }
            }
        }
        self.snapshot_wanted.store(true, Ordering::Release);
    }

    /// Stores the aborts of `p`'s segment whose marker lies below `p` (synced data) as its
    /// `.txnindex`, replaced atomically, if they changed since the last store. Callers hold
    /// `recovery_point_lock` or have exclusive access.
    fn persist_active_txn_index(&self, p: &WrittenPoint) -> io::Result<()> {
        let entries: Vec<AbortedTxn> = p
            .seg
            .aborted()
            .iter()
            .copied()
            .filter(|a| a.last_offset < p.next_offset)
            .collect();
        let mut persisted = lock(&self.txn_index_persisted);
        if *persisted == (p.seg.base_offset, entries.len()) {
            return Ok(());
        }
        if entries.is_empty() {
            // A segment new since the last store: it has no file.
            *persisted = (p.seg.base_offset, 0);
            return Ok(());
        }
        crate::durable::write_file_atomically(
            &p.seg.txn_index_path(),
            &crate::txn_index::encode(&entries),
        )?;
        *persisted = (p.seg.base_offset, entries.len());
        Ok(())
    }

    /// Persists the producer state as of `offset` (everything below it is covered). Older
    /// snapshots stay: truncation rebuilds from the newest one at or below its target.
    fn write_producer_snapshot(&self, offset: i64, state: &ProducerState) -> io::Result<()> {
        checkpoint::write_atomic(
            &self.dir,
            &checkpoint::producer_snapshot_name(offset),
            &checkpoint::encode_producer_snapshot(offset, &state.entries()),
        )
    }

    fn producer_snapshot_files(&self) -> io::Result<Vec<(i64, PathBuf)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(o) = entry
                .file_name()
                .to_str()
                .and_then(checkpoint::producer_snapshot_offset)
            {
                out.push((o, entry.path()));
            }
        }
        out.sort_unstable_by_key(|(o, _)| *o);
        Ok(out)
    }

    /// The newest valid snapshot at or below `end`.
    fn load_producer_snapshot(
        &self,
        end: i64,
    ) -> Result<Option<(i64, Vec<ProducerEntry>)>, LogError> {
        for (o, path) in self.producer_snapshot_files()?.into_iter().rev() {
            if o > end {
                continue;
            }
            if let Some(snap) = read_producer_snapshot(&path)
                && snap.0 == o
            {
                return Ok(Some(snap));
            }
        }
        Ok(None)
    }

    fn delete_producer_snapshots(&self, doomed: impl Fn(i64) -> bool) -> io::Result<()> {
        for (o, path) in self.producer_snapshot_files()? {
            if doomed(o) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the producer state for the log below `end`: the newest snapshot at or below it,
    /// then every batch header after it (headers only: a record is read only for markers).
    /// Without a snapshot (a log written before producer state existed) only the last two
    /// segments are read, as Kafka does: older producers have long expired or will be treated as
    /// new (KIP-360). With `txn_from`, the replay starts at or below it (to rebuild the
    /// transaction indexes of segments from there on). Every abort the replay meets is returned.
    fn rebuild_producer_state(
        &self,
        end: i64,
        now_ms: i64,
        txn_from: Option<i64>,
        hw: i64,
    ) -> Result<Rebuilt, LogError> {
        let mut batches: u64 = 0;
        let mut bytes: u64 = 0;
        let segs = rw_read(&self.segments).clone();
        let snapshot_at_most = txn_from.map_or(end, |t| t.min(end));
        let (mut state, from) = match self.load_producer_snapshot(snapshot_at_most)? {
            Some((offset, entries)) => (ProducerState::from_entries(entries), offset),
            None => {
                let from = segs
                    .len()
                    .checked_sub(2)
                    .and_then(|i| segs.get(i))
                    .map_or(0, |sg| sg.base_offset);
                (ProducerState::new(), txn_from.map_or(from, |t| t.min(from)))
            }
        };
        let from = from.max(self.log_start());
        let mut aborted = Vec::new();
        let mut unreplicated = Vec::new();
        for seg in &segs {
            if seg.next_offset() <= from || seg.base_offset >= end {
                continue;
            }
            let file = self.env.files.get(&seg.log_path)?;
            let size = seg.size();
            let (mut pos, _) = seg.locate(&file, from)?;
            while let Some(h) = segment::read_header(&file, pos, size)? {
                if h.base_offset >= end {
                    break;
                }
                let len = batch_len(&h);
                let marker = if h.is_control() && h.producer_id >= 0 {
                    read_marker(&file, pos, len)?
                } else {
                    None
                };
                if let Some((txn, abort)) = state.replay(&h, h.base_offset, marker) {
                    if txn.last_offset >= hw {
                        unreplicated.push((txn.first_offset, txn.last_offset));
                    }
                    aborted.extend(abort);
                }
                pos += len;
                batches += 1;
                bytes += len;
            }
        }
        let expiration_ms = lock(&self.config).producer_id_expiration_ms;
        state.remove_expired(now_ms, expiration_ms);
        Ok(Rebuilt {
            state,
            replay_from: from,
            aborted,
            unreplicated,
            batches,
            bytes,
        })
    }

    /// The last stable offset: the high watermark, held back to the first offset of the earliest
    /// transaction that is open or whose marker is not yet below the high watermark, but never
    /// below the log start (retention may delete an open transaction's first records).
    fn last_stable_offset(&self) -> i64 {
        let t = lock(&self.txns);
        let hw = self.high_watermark.load(Ordering::Acquire);
        hw.min(t.first_unstable().max(self.log_start()))
    }

    fn persist_epochs(&self, epochs: &[(i32, i64)]) -> io::Result<()> {
        checkpoint::write_atomic(
            &self.dir,
            LEADER_EPOCH_CHECKPOINT_FILE,
            &checkpoint::encode_leader_epochs(epochs),
        )
    }

    /// Removes whole segments from the front (never the active one) and advances log start.
    fn delete_segments(&self, segs: &[Arc<Segment>]) -> Result<(), LogError> {
        if segs.is_empty() {
            return Ok(());
        }
        let _mark = EventMark {
            stats: &self.env.stats,
            event: LogEvent::RetentionDelete,
            started: Instant::now(),
        };
        let new_first = {
            let mut list = rw_write(&self.segments);
            list.retain(|s| !segs.iter().any(|d| Arc::ptr_eq(s, d)));
            list.first().map(|s| s.base_offset)
        };
        if let Some(first) = new_first {
            let start = self.log_start.fetch_max(first, Ordering::AcqRel).max(first);
            self.store_checkpoint(|cp| cp.log_start = cp.log_start.max(start))?;
            self.truncate_epochs_from_start(start)?;
            // Snapshots of deleted segments go with them; the newest is always kept. Producer
            // entries whose batches are all gone stay until they expire, as in Kafka.
            let newest = self
                .producer_snapshot_files()?
                .last()
                .map_or(i64::MIN, |(o, _)| *o);
            self.delete_producer_snapshots(|o| o < first && o != newest)?;
        }
        for s in segs {
            self.env.files.forget(&s.log_path);
            for p in s.file_paths() {
                match self.env.remove_file_stepwise(&p) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        lock(&self.durable).dir_dirty = true;
        Ok(())
    }

    fn truncate_epochs_from_start(&self, start: i64) -> io::Result<()> {
        let mut e = lock(&self.epochs);
        let below = e.iter().filter(|(_, s)| *s < start).count();
        if below == 0 || (below == 1 && e.first().is_some_and(|(_, s)| *s == start)) {
            return Ok(());
        }
        // Keep the latest epoch that started before `start`, now starting at `start`.
        let keep = e.get(below - 1).map(|&(ep, _)| (ep, start));
        let mut next: Vec<(i32, i64)> = keep.into_iter().collect();
        next.extend(e.iter().skip(below).copied().filter(|&(_, s)| s > start));
        if next != *e {
            self.persist_epochs(&next)?;
            *e = next;
        }
        Ok(())
    }
}

/// Reads the transaction marker in the control batch of `len` bytes at `pos`; `None` for another
/// kind of control batch, or one that can't be read as a marker.
fn read_marker(file: &File, pos: u64, len: u64) -> Result<Option<Marker>, LogError> {
    if len > MARKER_BATCH_BYTES_MAX {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, pos)?;
    Ok(
        weir_protocol::control::parse_marker_batch(&Bytes::from(buf))
            .ok()
            .flatten()
            .map(|(_, m)| m),
    )
}

/// Damage found by recovery inside the log, before its last segment: a batch that is torn, fails
/// its CRC, or breaks the offset sequence, or a gap or overlap between two segments. A single
/// node cannot repair it (a follower later may, from its leader), and cutting the log there would
/// delete every later segment, acknowledged data included. So the log opens *damaged*: reads are
/// served up to the damage, every write is refused, and nothing on disk is changed or deleted
/// until an operator acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file where the valid data ends.
    pub segment_path: PathBuf,
    /// Bytes of whole, valid batches at the start of that segment.
    pub valid_bytes: u64,
    /// The segment file's length on disk.
    pub file_bytes: u64,
    /// First offset that cannot be read: the log is served up to here.
    pub lost_from_offset: i64,
    /// First offset past the damage that the kept segments hold (the next segment's base).
    pub kept_from_offset: i64,
    /// Later segments, left untouched on disk and not served: (base offset, file bytes).
    pub kept_segments: Vec<(i64, u64)>,
    /// What the recovery scan found.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lost = if self.kept_from_offset > self.lost_from_offset {
            format!(
                "offsets {}..{} are unreadable",
                self.lost_from_offset,
                self.kept_from_offset - 1
            )
        } else {
            format!(
                "the segment overlaps the next one at offset {}",
                self.kept_from_offset
            )
        };
        write!(
            f,
            "damaged log segment {} ({}; valid up to byte {} of {}): {lost}; {} later segment(s) \
             from offset {} are kept on disk but not served; writes are refused until the damage \
             is repaired",
            self.segment_path.display(),
            self.reason,
            self.valid_bytes,
            self.file_bytes,
            self.kept_segments.len(),
            self.kept_from_offset
        )
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering anything not covered by the last
    /// checkpoint: each batch's length, dense offsets and CRC are checked from the recovery point
    /// on, a torn or corrupt tail of the last segment is cut off, and missing or stale indexes are
    /// rebuilt. Damage before the last segment opens the log damaged instead ([`Log::damage`]).
    pub fn open(env: &Arc<LogEnv>, dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        // A new partition directory must be durable in its parent before anything appended to
        // it is acknowledged: fsyncing the segment files does not make their directory's name
        // durable.
        let open_started = Instant::now();
        crate::durable::create_partition_dir(dir)?;
        let cp = LogCheckpoint::load(dir);
        let recovery_point = cp.map_or(-1, |c| c.recovery_point);
        let recovery_position = cp.and_then(|c| c.position);
        let created_ms = now_ms();
        // A cleaner pass interrupted by a crash: finish its swap or drop its output first, so
        // the segments listed below are either all old or include the cleaned one.
        crate::cleaner::recover_interrupted_swaps(dir)?;

        // Collect segment base offsets; clear leftovers of interrupted file replacements.
        let mut bases: Vec<i64> = Vec::new();
        let mut stray_indexes: Vec<(i64, PathBuf)> = Vec::new();
        let mut rpindexes: Vec<(i64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(base) = stem.parse::<i64>() else {
                continue;
            };
            match ext {
                "log" => bases.push(base),
                "index" | "timeindex" => stray_indexes.push((base, entry.path())),
                segment::RPINDEX_EXT => rpindexes.push((base, entry.path())),
                _ => {}
            }
        }
        bases.sort_unstable();
        for (base, path) in stray_indexes {
            if bases.binary_search(&base).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }

        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut scanned: Vec<Arc<Segment>> = Vec::new();
        let mut damage: Option<Damage> = None;
        let mut scanned_bytes: u64 = 0;
        let mut index_files_loaded: usize = 0;
        let mut segments_lazy: usize = 0;
        // Offset below which recovered data is known to be synced (where the first scan started).
        let mut synced_end: Option<i64> = None;
        // Files were cut, created or removed: the directory needs a sync before a checkpoint
        // relies on it.
        let mut dir_dirty = false;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            if let Some(next) = next_base
                && next <= recovery_point
            {
                // Wholly below the recovery point: its data was synced, and its index files
                // before the point was stored. Only the 64-byte index header is read here, as a
                // tripwire for a segment cut, lost or replaced since (its size and end must match
                // the file and the next segment); the index entries and the time index load on
                // first use. Open so costs a stat and one small read per sealed segment, not a
                // read of every index (Kafka, too, trusts segments below its recovery point and
                // loads their indexes lazily).
                let path = dir.join(segment::file_name(base, "log"));
                let file_len = std::fs::metadata(&path)?.len();
                if segment::load_index_summary(dir, base)
                    .is_some_and(|sum| sum.log_bytes == file_len && sum.next_offset == next)
                {
                    segments_lazy += 1;
                    segments.push(Arc::new(Segment::sealed_lazy(
                        dir, base, next, file_len, created_ms,
                    )));
                    continue;
                }
            }
            let seg = Segment::new(dir, base, created_ms);
            let file_len = std::fs::metadata(&seg.log_path)?.len();
            let trusted = segment::load_index_files(&seg)
                .filter(|(sum, _)| {
                    sum.log_bytes == file_len
                        && sum.next_offset <= recovery_point
                        && next_base.is_none_or(|n| n == sum.next_offset)
                })
                .and_then(|(sum, meta)| {
                    // An invalid transaction index makes the segment untrusted too: scanning it
                    // rebuilds the index from the markers.
                    crate::txn_index::load(&seg.txn_index_path(), base, sum.next_offset)
                        .map(|aborted| (sum, meta, aborted))
                });
            index_files_loaded += 1;
            if let Some((sum, meta, aborted)) = trusted {
                seg.size.store(sum.log_bytes, Ordering::Release);
                seg.next_offset.store(sum.next_offset, Ordering::Release);
                seg.set_meta(meta);
                seg.set_aborted(aborted);
                segments.push(Arc::new(seg));
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg.log_path)?;
            // Data before the recovery position was synced: resume the CRC scan there.
            let start = recovery_position
                .and_then(|rp| segment::load_recovery_start(&seg, &rp, file_len))
                .unwrap_or_else(|| ScanStart::file_start(base));
            synced_end.get_or_insert(start.next_offset);
            let scan = segment::scan(&file, base, start, config.index_interval_bytes, true)?;
            scanned_bytes += scan.bytes_read;
            let Some(next_base) = next_base else {
                // The last segment: a torn or corrupt tail here is what a crash leaves behind
                // (nothing was acknowledged past the last sync), so it is cut off.
                if scan.truncated {
                    tracing::warn!(dir = %dir.display(), segment = base, valid_bytes = scan.valid_bytes,
                        file_bytes = file_len, lost_from_offset = scan.next_offset,
                        reason = scan.stop_reason.as_deref().unwrap_or(""),
                        "truncating torn or corrupt log tail");
                    file.set_len(scan.valid_bytes)?;
                }
                seg.size.store(scan.valid_bytes, Ordering::Release);
                seg.next_offset.store(scan.next_offset, Ordering::Release);
                seg.set_meta(scan.meta);
                seg.remove_index_files();
                let seg = Arc::new(seg);
                segments.push(Arc::clone(&seg));
                scanned.push(seg);
                break;
            };
            seg.size.store(scan.valid_bytes, Ordering::Release);
            seg.next_offset.store(scan.next_offset, Ordering::Release);
            seg.set_meta(scan.meta);
            if !scan.truncated && scan.next_offset == next_base {
                seg.remove_index_files();
                let seg = Arc::new(seg);
                segments.push(Arc::clone(&seg));
                scanned.push(seg);
                continue;
            }
            // Damage before the last segment. Later segments hold data that may have been
            // acknowledged: keep every file as it is and stop serving at the damage.
            let reason = scan.stop_reason.clone().unwrap_or_else(|| {
                format!(
                    "the segment ends at offset {} but the next segment starts at {next_base}",
                    scan.next_offset
                )
            });
            let kept_segments = bases
                .iter()
                .skip(i + 1)
                .map(|&b| {
                    let bytes = std::fs::metadata(dir.join(segment::file_name(b, "log")))
                        .map_or(0, |m| m.len());
                    (b, bytes)
                })
                .collect();
            let found = Damage {
                segment_path: seg.log_path.clone(),
                valid_bytes: scan.valid_bytes,
                file_bytes: file_len,
                lost_from_offset: scan.next_offset,
                kept_from_offset: next_base,
                kept_segments,
                reason,
            };
            tracing::error!(dir = %dir.display(), segment = %found.segment_path.display(),
                reason = %found.reason, lost_from_offset = found.lost_from_offset,
                lost_to_offset = found.kept_from_offset - 1,
                kept_segments = ?found.kept_segments,
                "DATA DAMAGE: {found}");
            // Served in memory up to the damage; the file is not cut and its index files stay
            // untrusted, so every open finds the same damage until it is repaired.
            segments.push(Arc::new(seg));
            damage = Some(found);
            break;
        }
        // An empty segment at the end of a recovered log is fine; an empty log needs one.
        if segments.is_empty() {
            let start = cp.map_or(0, |c| c.log_start.max(0));
            let seg = Segment::new(dir, start, created_ms);
            File::create(&seg.log_path)?;
            segments.push(Arc::new(seg));
            dir_dirty = true;
        }
        // Rebuild sealed segments' index files. What was scanned is not synced here: it joins the
        // unsynced set, so the first sync after open covers it (and only then does the recovery
        // point move past it). Open itself needs no fsync after a crash.
        let last_base = segments.last().map_or(0, |s| s.base_offset);
        for seg in &scanned {
            if seg.base_offset != last_base {
                segment::write_index_files(seg)?;
            }
        }
        let active = Arc::clone(
            segments
                .last()
                .ok_or_else(|| LogError::Corrupt("no segments".into()))?,
        );

        let first_base = segments.first().map_or(0, |s| s.base_offset);
        let log_end = active.next_offset();
        let log_start = cp
            .map_or(first_base, |c| c.log_start)
            .clamp(first_base, log_end);
        let high_watermark = cp
            .map_or(log_start, |c| c.high_watermark)
            .clamp(log_start, log_end);
        let synced_end = synced_end.unwrap_or(log_end);
        // The active segment's `.rpindex` is extended rather than rewritten if the entries the
        // checkpoint says it holds are the first ones in memory (after resuming from it, or after
        // a clean shutdown).
        let rpindex_reusable = |rp: &RecoveryPosition| {
            let m = active.meta();
            rp.segment_base == active.base_offset
                && usize::try_from(rp.index_count)
                    .ok()
                    .and_then(|count| m.index.get(..count))
                    .is_some_and(|entries| segment::rpindex_crc(entries) == rp.index_crc)
        };
        // The checkpoint on disk stays valid after recovery (its position precedes anything cut).
        // It is replaced only if missing, or if it points past the recovered data (recovery point,
        // log start or high watermark beyond a cut tail), or if it names
        // an active-segment `.rpindex` that did not validate: that file is rewritten from its start
        // by the next recovery point, and the stale position must not vouch for it meanwhile.
        // A damaged log writes nothing: its checkpoint must go on describing the files on disk.
        let must_store = damage.is_none()
            && cp.is_none_or(|c| {
                c.recovery_point > synced_end
                    || c.log_start != log_start
                    || c.high_watermark != high_watermark
            })
            || damage.is_none()
                && recovery_position.is_some_and(|rp| {
                    rp.segment_base == active.base_offset && !rpindex_reusable(&rp)
                });
        let opened_cp = LogCheckpoint {
            recovery_point: cp.map_or(synced_end, |c| c.recovery_point.min(synced_end)),
            log_start,
            high_watermark,
            // Kept as on disk unless replaced (a position in a sealed segment stays valid until
            // the next recovery point moves past it).
            position: if must_store {
                recovery_position.filter(rpindex_reusable)
            } else {
                recovery_position
            },
        };
        if must_store {
            opened_cp.store(dir)?;
            dir_dirty = false;
        }
        let written_point = WrittenPoint::of(&active, &active.meta(), active.size(), log_end);
        let segment_count = segments.len();
        let epochs = std::fs::read(dir.join(LEADER_EPOCH_CHECKPOINT_FILE))
            .ok()
            .and_then(|b| checkpoint::decode_leader_epochs(&b))
            .unwrap_or_default();

        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            env: Arc::clone(env),
            append: Mutex::new(AppendState {
                active: Arc::clone(&active),
                active_file: Weak::new(),
                scratch: Vec::new(),
                closed: false,
                unflushed_messages: 0,
                producers: ProducerState::new(),
                failed_writes: HashMap::new(),
            }),
            segments: RwLock::new(segments),
            log_end: AtomicI64::new(log_end),
            log_start: AtomicI64::new(log_start),
            high_watermark: AtomicI64::new(high_watermark),
            durable: Mutex::new(Durable {
                written_end: log_end,
                synced_end,
                unsynced: scanned.clone(),
                dir_dirty,
                waiters: Vec::new(),
                written_point,
                // Recovered bytes past the recovery point count as new: the first sync after open
                // that is due persists a recovery point covering them.
                written_bytes_total: scanned_bytes,
            }),
            flush_lock: Mutex::new(()),
            recovery_point_lock: Mutex::new(()),
            last_sync_micros: AtomicU64::new(0),
            cleaning: Mutex::new(()),
            cleaner_horizon_ms: AtomicI64::new(i64::MAX),
            snapshot_txns: Mutex::new(HashMap::new()),
            truncations: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            flush_queued: AtomicBool::new(false),
            flush_timer_armed: AtomicBool::new(false),
            config: Mutex::new(config),
            epochs: Mutex::new(Vec::new()),
            txns: Mutex::new(TxnTracker::new(None, Vec::new())),
            txn_index_persisted: Mutex::new((active.base_offset, 0)),
            checkpoint: Mutex::new(opened_cp),
            fail_next_sync: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            recovery_point_clock: Mutex::new(RecoveryPointClock {
                at: Instant::now(),
                written_bytes_total: 0,
            }),
            // The first recovery point after open asks for a capture; until then the rebuild
            // replays from the newest snapshot on disk.
            snapshot_wanted: AtomicBool::new(true),
            pending_snapshot: Mutex::new(None),
            recovery: Mutex::new(RecoveryStats {
                segments: segment_count,
                segments_lazy,
                index_files_loaded,
                segments_scanned: scanned.len(),
                scanned_bytes,
                ..RecoveryStats::default()
            }),
            damage: damage.clone(),
        });
        // Keep the active segment's `.rpindex` and the one the checkpoint names; the sealed-format
        // index files of the active segment (from a clean shutdown) go stale with the next append.
        let named = opened_cp.position.map(|p| p.segment_base);
        for (base, path) in rpindexes {
            // Files of segments kept past damage are not ours to touch.
            let kept = damage.is_some() && base > active.base_offset;
            if base != active.base_offset && Some(base) != named && !kept {
                let _ = std::fs::remove_file(path);
            }
        }
        if damage.is_none() {
            active.remove_index_files();
        }
        if scanned_bytes > 0 {
            tracing::info!(dir = %dir.display(), scanned_bytes, log_end, "recovered log after unclean shutdown");
        }
        if synced_end < log_end && damage.is_none() {
            // Make the recovered tail durable soon without making open wait for it.
            env.schedule_flush_now(&shared);
        }
        let log = Log { shared };
        {
            let s = &log.shared;
            // A snapshot past the recovered end describes batches a crash took back; left on
            // disk it would be trusted once the log grows past its offset again.
            if damage.is_none() {
                s.delete_producer_snapshots(|o| o > log_end)?;
            }
            // Transaction indexes of the segments recovery scanned. A sealed one (its index
            // files were not trusted) gets its aborts from a replay starting at or below its
            // base. The active segment's `.txnindex` is stored with each recovery point before
            // the producer snapshot taken there, so it holds the aborts below the newest
            // snapshot and the usual replay from that snapshot finds the rest; only if it is
            // invalid does the replay start at the active segment's base.
            let active_base = active.base_offset;
            let mut txn_from = scanned
                .iter()
                .find(|sg| sg.base_offset != active_base)
                .map(|sg| sg.base_offset);
            let active_scanned = scanned.iter().any(|sg| sg.base_offset == active_base);
            let mut active_persisted = None;
            if txn_from.is_none() && active_scanned {
                match crate::txn_index::load(&active.txn_index_path(), active_base, log_end) {
                    Some(entries) => active_persisted = Some(entries),
                    None => txn_from = Some(active_base),
                }
            }
            let rebuilt = s.rebuild_producer_state(log_end, now_ms(), txn_from, high_watermark)?;
            for seg in &scanned {
                let mut aborted: Vec<AbortedTxn> = Vec::new();
                if seg.base_offset == active_base
                    && let Some(persisted) = &active_persisted
                {
                    aborted.extend(
                        persisted
                            .iter()
                            .filter(|a| a.last_offset < rebuilt.replay_from),
                    );
                }
                aborted.extend(rebuilt.aborted.iter().filter(|a| {
                    a.last_offset >= seg.base_offset && a.last_offset < seg.next_offset()
                }));
                seg.set_aborted(aborted);
            }
            // What the active segment's file holds (its entries are the ones in memory).
            let on_disk = match &active_persisted {
                Some(entries) => entries.len(),
                None if !active_scanned => active.aborted().len(),
                None => 0,
            };
            *lock(&s.txn_index_persisted) = (active_base, on_disk);
            let mut tracker =
                TxnTracker::new(rebuilt.state.first_undecided_offset(), rebuilt.unreplicated);
            tracker.prune(high_watermark);
            *lock(&s.txns) = tracker;
            let mut st = lock(&s.append);
            st.producers = rebuilt.state;
            st.failed_writes.clear();
            drop(st);
            let mut r = lock(&s.recovery);
            r.producer_replay_batches = rebuilt.batches;
            r.producer_replay_bytes = rebuilt.bytes;
            r.open_micros = u64::try_from(open_started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(dir = %dir.display(), stats = ?*r, "log opened");
        }
        // Drop epochs that point past the recovered end (their data was cut off).
        {
            let kept: Vec<(i32, i64)> = epochs
                .iter()
                .copied()
                .filter(|&(_, s)| s <= log_end)
                .collect();
            if damage.is_some() {
                *lock(&log.shared.epochs) = kept;
                return Ok(log);
            }
            if kept != epochs {
                log.shared.persist_epochs(&kept)?;
            }
            *lock(&log.shared.epochs) = kept;
            log.shared.truncate_epochs_from_start(log_start)?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Replaces the old segments of `group` with their cleaned form (see `cleaner.rs`, "Crash
    /// safety"). False, with the cleaned file removed, if the log changed under the pass (a
    /// truncation, retention or deletion touched the group, or the log closed).
    pub(crate) fn swap_cleaned(
        &self,
        group: &[Arc<Segment>],
        cleaned: crate::cleaner::CleanedGroup,
        truncations_expected: &mut u64,
        crash_after: Option<u32>,
    ) -> Result<bool, LogError> {
        use crate::cleaner::crash_point;
        let s = &self.shared;
        let st = lock(&s.append);
        let still_there = {
            let list = rw_read(&s.segments);
            group
                .iter()
                .zip(&cleaned.sizes_before)
                .all(|(g, &size)| g.size() == size && list.iter().any(|l| Arc::ptr_eq(l, g)))
        };
        if st.closed
            || s.truncations.load(Ordering::Acquire) != *truncations_expected
            || !still_there
            || s.refuse_if_damaged().is_err()
        {
            let _ = std::fs::remove_file(&cleaned.path);
            return Ok(false);
        }
        let base = cleaned.base;
        {
            // A recovery position inside the group describes bytes of a file about to go:
            // without it, recovery after a crash scans the cleaned segment from its start. A
            // recovery point captured before this swap must not be stored after it (it could
            // name the group again): the bump voids it, as a truncation does.
            let _rp = lock(&s.recovery_point_lock);
            *truncations_expected = s.truncations.fetch_add(1, Ordering::AcqRel) + 1;
            let doomed_position = |cp: &LogCheckpoint| {
                cp.position
                    .is_some_and(|p| group.iter().any(|g| g.base_offset == p.segment_base))
            };
            if doomed_position(&lock(&s.checkpoint)) {
                s.store_checkpoint(|cp| {
                    if doomed_position(cp) {
                        cp.position = None;
                    }
                })?;
            }
        }
        let swap_path = s
            .dir
            .join(crate::cleaner::swap_file_name(base, cleaned.end));
        // The commit point: from here on, recovery completes the swap.
        std::fs::rename(&cleaned.path, &swap_path)?;
        crate::durable::sync_dir(&s.dir)?;
        crash_point(2, crash_after)?;
        let created_ms = group.first().map_or_else(now_ms, |g| g.created_ms);
        let new_seg = Arc::new(Segment::new(&s.dir, base, created_ms));
        new_seg.size.store(cleaned.size, Ordering::Release);
        new_seg.next_offset.store(cleaned.end, Ordering::Release);
        new_seg.set_meta(cleaned.meta);
        new_seg.set_aborted(cleaned.aborted);
        {
            // Readers snapshot the list under this lock, so none starts on the old segments
            // while their files go; those already reading see `replaced` and start over.
            let mut list = rw_write(&s.segments);
            for g in group {
                g.replaced.store(true, Ordering::SeqCst);
            }
            for (i, g) in group.iter().enumerate() {
                for p in g.file_paths() {
                    if i == 0 && p == g.log_path {
                        continue;
                    }
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // The old files must be gone for good before the swap file takes the first one's
            // name: a crash must never leave the cleaned segment beside its old tail.
            crate::durable::sync_dir(&s.dir)?;
            crash_point(3, crash_after)?;
            std::fs::rename(&swap_path, &new_seg.log_path)?;
            for g in group {
                s.env.files.forget(&g.log_path);
            }
            let first = group
                .first()
                .ok_or_else(|| LogError::Corrupt("empty cleaned group".into()))?;
            let at = list
                .iter()
                .position(|l| Arc::ptr_eq(l, first))
                .ok_or_else(|| LogError::Corrupt("cleaned segment vanished".into()))?;
            list.splice(at..at + group.len(), [Arc::clone(&new_seg)]);
        }
        drop(st);
        crash_point(4, crash_after)?;
        // Until these exist, a restart rebuilds the index by scanning the segment.
        segment::write_index_files(&new_seg)?;
        segment::sync_index_files(&new_seg)?;
        crate::durable::sync_dir(&s.dir)?;
        Ok(true)
    }

    pub fn config(&self) -> LogConfig {
        *lock(&self.shared.config)
    }

    pub fn update_config(&self, config: LogConfig) {
        *lock(&self.shared.config) = config;
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// The damage recovery found before the last segment, if any: the log then serves reads up
    /// to [`Damage::lost_from_offset`] and refuses writes.
    pub fn damage(&self) -> Option<&Damage> {
        self.shared.damage.as_ref()
    }

    /// Appends one or more concatenated, already CRC-validated v2 batches, assigning offsets.
    /// Returns once the bytes are in the page cache; use [`Log::on_durable`] to wait for the sync.
    pub fn append(&self, batches: &Bytes, opts: &AppendOptions) -> Result<AppendInfo, LogError> {
        self.append_from(batches, opts, AppendOrigin::Client)
    }

    /// [`Log::append`] for the broker's own coordinators (Kafka's `AppendOrigin.COORDINATOR`):
    /// producer epochs and transaction state are checked, sequences are not (transactional
    /// offset commits carry none) and nothing is taken for a retry.
    pub fn append_as_coordinator(
        &self,
        batches: &Bytes,
        opts: &AppendOptions,
    ) -> Result<AppendInfo, LogError> {
        self.append_from(batches, opts, AppendOrigin::Coordinator)
    }

    /// A follower's append (replication): the leader's batches are written byte for byte, with
    /// the offsets and leader epochs the leader gave them, so every replica's log is the same
    /// bytes. The first batch must start at this log's end and the rest follow on without a gap;
    /// a batch carrying a newer leader epoch starts that epoch in the epoch cache.
    pub fn append_as_follower(&self, batches: &Bytes) -> Result<AppendInfo, LogError> {
        self.append_from(
            batches,
            &AppendOptions::default(),
            AppendOrigin::Replication,
        )
    }

    fn append_from(
        &self,
        batches: &Bytes,
        opts: &AppendOptions,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, LogError> {
        const NOT_WHOLE: LogError = LogError::InvalidBatch("not a sequence of whole v2 batches");
        self.shared.refuse_if_damaged()?;
        // Parsed before taking the lock. Each batch is written as [rewritten 61-byte header]
        // [original bytes after the header]: the payload is never copied (except for
        // LogAppendTime, whose CRC must be recomputed over a rewritten copy).
        let mut pending: Vec<PendingBatch> = Vec::with_capacity(1);
        for b in record::split_batches(batches) {
            let b = b.map_err(|_| NOT_WHOLE)?;
            let h = BatchHeader::parse(&b).map_err(|_| NOT_WHOLE)?;
            if !segment::offsets_plausible(&h) {
                return Err(NOT_WHOLE);
            }
            // A marker's record is read here, outside the lock (it is one small record).
            let marker = if h.is_control() && h.producer_id >= 0 {
                weir_protocol::control::parse_marker_batch(&b)
                    .map_err(|_| LogError::InvalidBatch("malformed transaction marker"))?
                    .map(|(_, m)| m)
            } else {
                None
            };
            pending.push(PendingBatch {
                header: h,
                marker,
                bytes: b,
                header_out: [0; BATCH_HEADER_BYTES],
            });
        }
        if pending.is_empty() {
            return Err(LogError::InvalidBatch("no batches"));
        }
        let record_span: i64 = pending
            .iter()
            .map(|p| i64::from(p.header.last_offset_delta) + 1)
            .sum();
        let s = &self.shared;
        let config = self.config();
        let mut st = lock(&s.append);
        if st.closed {
            return Err(LogError::Closed);
        }
        if s.poisoned.load(Ordering::SeqCst) {
            return Err(LogError::Poisoned);
        }
        let base_offset = s.log_end();
        let replicated = origin == AppendOrigin::Replication;
        if replicated
            && let Some(first) = pending.first_mut()
            && first.header.base_offset < base_offset
            && first.header.last_offset() >= base_offset
            && first.header.record_count == 0
            && first.header.producer_id < 0
            && !first.header.is_control()
        {
            // The leader's cleaner merged a run of removed batches into one empty batch that
            // starts below this follower's end (it had some of them). Its part from our end on
            // is the same nothing: an empty batch of our own covering it keeps offsets dense.
            let bytes = crate::cleaner::empty_batch_bytes(
                base_offset,
                first.header.last_offset(),
                first.header.partition_leader_epoch,
                first.header.max_timestamp,
            )?;
            let header = BatchHeader::parse(&bytes).map_err(|_| NOT_WHOLE)?;
            first.header = header;
            first.bytes = bytes;
        }
        // (Only that substitution changes the byte count.)
        let batches_bytes: u64 = pending.iter().map(|p| p.bytes.len() as u64).sum();
        if replicated {
            let mut expected = base_offset;
            for p in &pending {
                if p.header.base_offset != expected {
                    return Err(LogError::NotContiguous {
                        expected,
                        found: p.header.base_offset,
                    });
                }
                expected += i64::from(p.header.last_offset_delta) + 1;
            }
        }

        // Batches without a producer id (the common case) skip the producer state entirely.
        let mut producer_update = None;
        if pending.iter().any(|p| p.header.producer_id >= 0) {
            let mut at = base_offset;
            let appended: Vec<AppendedBatch<'_>> = pending
                .iter()
                .map(|p| {
                    let b = AppendedBatch {
                        header: &p.header,
                        base_offset: at,
                        marker: p.marker,
                    };
                    at += i64::from(p.header.last_offset_delta) + 1;
                    b
                })
                .collect();
            match st.producers.check_from(&appended, origin) {
                Ok(ProducerCheck::Append(update)) => producer_update = Some(update),
                Ok(ProducerCheck::Duplicate(dup)) => {
                    return Ok(AppendInfo {
                        base_offset: dup.first_offset,
                        last_offset: dup.last_offset,
                        log_append_time_ms: -1,
                        log_start_offset: s.log_start(),
                        duplicate: true,
                    });
                }
                Err(e @ ProducerStateError::OutOfOrderSequence(_)) => {
                    return Err(
                        behind_failed_write(&st.failed_writes, &st.producers, &pending)
                            .unwrap_or(LogError::Producer(e)),
                    );
                }
                Err(e) => return Err(e.into()),
            }
            // An unknown producer passes the sequence check with any sequence.
            if let Some(e) = behind_failed_write(&st.failed_writes, &st.producers, &pending) {
                return Err(e);
            }
        }

        // Rolled only now, after the checks: a failure from here on is one of writing, and the
        // producers of the batches are noted (see `behind_failed_write`).
        let rolled_and_opened = self
            .maybe_roll(&mut st, &config, batches_bytes, record_span)
            .and_then(|()| {
                let seg = Arc::clone(&st.active);
                match st.active_file.upgrade() {
                    Some(f) => Ok((seg, f)),
                    None => {
                        let f = s.env.files.get(&seg.log_path)?;
                        st.active_file = Arc::downgrade(&f);
                        Ok((seg, f))
                    }
                }
            });
        let (seg, file) = match rolled_and_opened {
            Ok(opened) => opened,
            Err(e) => {
                note_failed_write(&mut st.failed_writes, &pending, origin);
                return Err(e);
            }
        };
        let start_pos = seg.size();

        let mut next = base_offset;
        for p in &mut pending {
            if replicated {
                // As the leader wrote it: offsets were checked above, the epoch is the leader's.
                p.header_out
                    .copy_from_slice(p.bytes.get(..BATCH_HEADER_BYTES).ok_or(NOT_WHOLE)?);
                next += i64::from(p.header.last_offset_delta) + 1;
                continue;
            }
            if let Some(t) = opts.log_append_time_ms {
                let mut whole = BytesMut::from(&p.bytes[..]);
                record::set_log_append_time(&mut whole, t).map_err(|_| NOT_WHOLE)?;
                p.bytes = whole.freeze();
                p.header.max_timestamp = t;
            }
            let hdr = &mut p.header_out;
            hdr.copy_from_slice(p.bytes.get(..BATCH_HEADER_BYTES).ok_or(NOT_WHOLE)?);
            record::set_base_offset(hdr, next).map_err(|_| NOT_WHOLE)?;
            record::set_partition_leader_epoch(hdr, opts.leader_epoch).map_err(|_| NOT_WHOLE)?;
            next += i64::from(p.header.last_offset_delta) + 1;
        }
        let written = if batches.len() <= APPEND_COPY_BYTES_MAX {
            let buf = &mut st.scratch;
            buf.clear();
            for p in &pending {
                buf.extend_from_slice(&p.header_out);
                buf.extend_from_slice(p.bytes.get(BATCH_HEADER_BYTES..).unwrap_or(&[]));
            }
            write_all_at(&file, &[IoSlice::new(buf)], start_pos)
        } else {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(pending.len() * 2);
            for p in &pending {
                slices.push(IoSlice::new(&p.header_out));
                slices.push(IoSlice::new(
                    p.bytes.get(BATCH_HEADER_BYTES..).unwrap_or(&[]),
                ));
            }
            write_all_at(&file, &slices, start_pos)
        };
        if let Err(e) = written {
            // Cut the partial write off; if even that fails, the file state is unknown.
            if file.set_len(start_pos).is_err() {
                s.poison();
            }
            note_failed_write(&mut st.failed_writes, &pending, origin);
            return Err(e.into());
        }
        if !st.failed_writes.is_empty() {
            for p in &pending {
                st.failed_writes.remove(&p.header.producer_id);
            }
        }

        let end_pos = start_pos + batches_bytes;
        let point = {
            let mut m = seg.meta();
            let mut pos = start_pos;
            let mut batch_base = base_offset;
            for p in &pending {
                let len = p.bytes.len() as u64;
                m.note_batch(
                    seg.base_offset,
                    pos,
                    batch_base,
                    p.header.max_timestamp,
                    len,
                    config.index_interval_bytes,
                );
                pos += len;
                batch_base += i64::from(p.header.last_offset_delta) + 1;
            }
            WrittenPoint::of(&seg, &m, end_pos, next)
        };
        seg.size.store(end_pos, Ordering::Release);
        seg.next_offset.store(next, Ordering::Release);
        s.log_end.store(next, Ordering::Release);
        if let Some(update) = producer_update.filter(|u| !u.is_empty()) {
            let completed: Vec<CompletedTxn> = update.completed.clone();
            let undecided_before = st.producers.first_undecided_offset();
            let aborted = st.producers.apply(update);
            if !aborted.is_empty() {
                seg.aborted().extend(aborted);
            }
            // Before the append lock is released: the high watermark can't pass this append's
            // offsets before the tracker knows of the transactions they open or end. Idempotent
            // appends that change no transaction skip the tracker's lock.
            let changed =
                !completed.is_empty() || st.producers.first_undecided_offset() != undecided_before;
            if changed {
                let mut t = lock(&s.txns);
                t.first_undecided = st.producers.first_undecided_offset().unwrap_or(i64::MAX);
                t.unreplicated
                    .extend(completed.iter().map(|c| (c.first_offset, c.last_offset)));
                t.prune(s.high_watermark.load(Ordering::Acquire));
            }
        }
        if s.snapshot_wanted.load(Ordering::Relaxed)
            && s.snapshot_wanted.swap(false, Ordering::AcqRel)
        {
            *lock(&s.pending_snapshot) = Some(PendingSnapshot {
                offset: next,
                entries: st.producers.entries(),
                truncations: s.truncations.load(Ordering::Acquire),
            });
        }
        {
            let mut d = lock(&s.durable);
            d.written_end = next;
            d.written_point = point;
            d.written_bytes_total += batches_bytes;
            if d.unsynced.last().is_none_or(|u| !Arc::ptr_eq(u, &seg)) {
                d.unsynced.push(Arc::clone(&seg));
            }
        }
        if replicated {
            // Each leader epoch the leader's batches carry starts where its first batch does,
            // so this replica's epoch cache matches the leader's (KIP-101).
            let mut at = base_offset;
            for p in &pending {
                let epoch = p.header.partition_leader_epoch;
                if epoch >= 0 && lock(&s.epochs).last().is_none_or(|&(e, _)| epoch > e) {
                    self.assign_leader_epoch(epoch, at)?;
                }
                at += i64::from(p.header.last_offset_delta) + 1;
            }
        } else if opts.leader_epoch >= 0
            && lock(&s.epochs)
                .last()
                .is_none_or(|&(e, _)| opts.leader_epoch > e)
        {
            self.assign_leader_epoch(opts.leader_epoch, base_offset)?;
        }
        match config.flush {
            FlushPolicy::EveryAppend => {}
            FlushPolicy::Interval { messages, ms } => {
                let count: u64 = pending
                    .iter()
                    .map(|p| u64::try_from(p.header.record_count).unwrap_or(0))
                    .sum();
                st.unflushed_messages += count;
                if st.unflushed_messages >= messages {
                    st.unflushed_messages = 0;
                    s.env.schedule_flush_now(&self.shared);
                } else {
                    s.env
                        .schedule_flush_after(&self.shared, Duration::from_millis(ms));
                }
            }
        }
        drop(st);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: opts.log_append_time_ms.unwrap_or(-1),
            log_start_offset: s.log_start(),
            duplicate: false,
        })
    }

    /// Appends a transaction marker (a control batch, KIP-98) for `producer_id`: the end of
    /// its transaction in this partition. Written by the transaction coordinator, never by a
    /// client.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        timestamp_ms: i64,
        opts: &AppendOptions,
    ) -> Result<AppendInfo, LogError> {
        let batch =
            weir_protocol::control::marker_batch(producer_id, producer_epoch, marker, timestamp_ms)
                .map_err(|_| LogError::InvalidBatch("transaction marker could not be encoded"))?;
        self.append_as_coordinator(&batch, opts)
    }

    fn maybe_roll(
        &self,
        st: &mut AppendState,
        config: &LogConfig,
        incoming_bytes: u64,
        incoming_offsets: i64,
    ) -> Result<(), LogError> {
        let seg = &st.active;
        let size = seg.size();
        if size == 0 {
            return Ok(());
        }
        let index_full =
            (seg.meta().index.len() as u64 + 1) * 8 > u64::from(config.segment_index_bytes);
        let segment_bytes_max = config.segment_bytes.min(i32::MAX as u64);
        let must_roll = size + incoming_bytes > segment_bytes_max
            || now_ms().saturating_sub(seg.created_ms) >= config.segment_ms
            || index_full
            || self.shared.log_end() + incoming_offsets - seg.base_offset > i64::from(i32::MAX);
        if must_roll {
            self.roll_locked(st)?;
        }
        Ok(())
    }

    fn roll_locked(&self, st: &mut AppendState) -> Result<(), LogError> {
        let s = &self.shared;
        let base = s.log_end();
        if st.active.base_offset == base {
            return Ok(()); // already empty at the end
        }
        let _mark = EventMark {
            stats: &s.env.stats,
            event: LogEvent::Roll,
            started: Instant::now(),
        };
        // As Kafka does at every roll: a snapshot at the new segment's base bounds what a
        // rebuild after a crash reads to the active segment's headers. Written even when empty,
        // so a log without idempotent producers never needs a walk through older segments.
        // Not synced here, under the append lock (two fsyncs and a directory sync stalled every
        // append behind the roll), but by the flush the roll schedules, before a recovery point
        // past it is stored (Kafka's roll defers the same fsync to its flush task). A crash
        // before that leaves at worst a torn file, which fails its CRC and is skipped.
        checkpoint::write_unsynced(
            &s.dir,
            &checkpoint::producer_snapshot_name(base),
            &checkpoint::encode_producer_snapshot(base, &st.producers.entries()),
        )?;
        let seg = Arc::new(Segment::new(&s.dir, base, now_ms()));
        let file = s.env.files.create(&seg.log_path)?;
        let index_started = Instant::now();
        segment::write_index_files(&st.active)?;
        s.env
            .stats
            .record_event(LogEvent::IndexWrite, index_started);
        rw_write(&s.segments).push(Arc::clone(&seg));
        st.active = seg;
        st.active_file = Arc::downgrade(&file);
        lock(&s.durable).dir_dirty = true;
        // Kafka flushes a rolled segment in the background whatever the policy.
        s.env.schedule_flush_now(&self.shared);
        Ok(())
    }

    /// Starts a new segment at the log end (if the active one is not empty).
    pub fn roll(&self) -> Result<(), LogError> {
        self.shared.refuse_if_damaged()?;
        let mut st = lock(&self.shared.append);
        if st.closed {
            return Err(LogError::Closed);
        }
        self.roll_locked(&mut st)
    }

    /// Calls `done` once everything below `offset_exclusive` is durable per the flush policy
    /// (immediately if it already is; with an error if the log is poisoned). Many waiters share one
    /// `fdatasync`. Under `Interval`, data in the page cache counts as durable.
    pub fn on_durable(
        &self,
        offset_exclusive: i64,
        done: Box<dyn FnOnce(Result<(), LogError>) + Send>,
    ) {
        let s = &self.shared;
        if matches!(self.config().flush, FlushPolicy::Interval { .. }) {
            done(if s.poisoned.load(Ordering::SeqCst) {
                Err(LogError::Poisoned)
            } else {
                Ok(())
            });
            return;
        }
        let mut d = lock(&s.durable);
        if s.poisoned.load(Ordering::SeqCst) {
            drop(d);
            done(Err(LogError::Poisoned));
            return;
        }
        if offset_exclusive <= d.synced_end {
            drop(d);
            done(Ok(()));
            return;
        }
        d.waiters.push((offset_exclusive, done));
        drop(d);
        s.env.schedule_flush_now(&self.shared);
    }

    /// How long this log's latest group-commit sync took (zero before the first).
    pub fn last_sync_duration(&self) -> Duration {
        Duration::from_micros(self.shared.last_sync_micros.load(Ordering::Relaxed))
    }

    /// Syncs now, in the calling thread.
    pub fn flush(&self) -> Result<(), LogError> {
        self.shared.flush_now()
    }

    /// Offset (exclusive) known to be on stable storage.
    pub fn durable_offset(&self) -> i64 {
        lock(&self.shared.durable).synced_end
    }

    /// Reads whole batches starting with the one containing `offset`, up to `max_bytes` (but at
    /// least one whole batch, KIP-74), never including a batch that reaches `max_offset_exclusive`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ReadResult, LogError> {
        // A retry happens only when the cleaner swapped a segment in between; swaps of one log
        // are serialized and rare, so a few attempts always suffice in practice.
        for _ in 0..READ_ATTEMPTS_MAX - 1 {
            if let Some(r) = self.read_once(offset, max_bytes, max_offset_exclusive)? {
                return Ok(r);
            }
        }
        self.read_once(offset, max_bytes, max_offset_exclusive)?
            .ok_or_else(|| LogError::Corrupt("segments kept being replaced during a read".into()))
    }

    /// One attempt of [`Log::read`]; `None` if a segment it read was replaced by the cleaner
    /// meanwhile (its file handle may then belong to the cleaned segment).
    fn read_once(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Option<ReadResult>, LogError> {
        let s = &self.shared;
        let segs = rw_read(&s.segments).clone();
        let log_start = s.log_start();
        let log_end = s.log_end();
        let mut out = ReadResult {
            ranges: Vec::new(),
            bytes: 0,
            high_watermark: s.high_watermark.load(Ordering::Acquire),
            log_start_offset: log_start,
            end_offset: offset,
        };
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let limit = max_offset_exclusive.min(log_end);
        if offset >= limit {
            return Ok(Some(out));
        }
        let max_bytes = max_bytes as u64;
        let mut i = segs
            .partition_point(|sg| sg.base_offset <= offset)
            .saturating_sub(1);
        let mut taken: u64 = 0;
        let mut end_offset = offset;
        let mut looking_for_start = true;
        'segments: while let Some(seg) = segs.get(i) {
            i += 1;
            if seg.base_offset >= limit {
                break;
            }
            let file = match s.env.files.get(&seg.log_path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) && looking_for_start => {
                    // Deleted by retention since the snapshot.
                    return Err(LogError::OffsetOutOfRange {
                        offset,
                        log_start: s.log_start(),
                        log_end,
                    });
                }
                Err(e) if is_not_found(&e) => break,
                Err(e) => return Err(e.into()),
            };
            // Checked after the open: the cleaner sets the flag before renaming over the file.
            if seg.replaced.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let size = seg.size();
            let start = if looking_for_start {
                let (p, h) = seg.locate(&file, offset)?;
                if h.is_none() {
                    continue; // offset lies past this segment's data
                }
                looking_for_start = false;
                p
            } else {
                0
            };
            let mut pos = start;
            let mut done = false;
            while pos < size {
                let budget_left = max_bytes.saturating_sub(taken + (pos - start));
                if budget_left > 0 {
                    // Jump over whole batches using the index: an entry is a batch boundary.
                    let m = seg.meta();
                    let reach = (pos + budget_left).min(size);
                    let j1 = m.index.partition_point(|e| u64::from(e.position) <= reach);
                    let j2 = m
                        .index
                        .partition_point(|e| seg.base_offset + i64::from(e.rel_offset) <= limit);
                    if let Some(e) = j1.min(j2).checked_sub(1).and_then(|j| m.index.get(j))
                        && u64::from(e.position) > pos
                    {
                        pos = u64::from(e.position);
                    }
                }
                let Some(h) = read_header(&file, pos, size)? else {
                    break;
                };
                if h.last_offset() >= limit {
                    done = true;
                    break;
                }
                let len = batch_len(&h);
                let so_far = taken + (pos - start);
                if so_far + len > max_bytes && so_far > 0 {
                    done = true;
                    break;
                }
                pos += len;
                // The range's last batch is always read here (index jumps land on a batch
                // that is then read), so this ends at the last returned offset.
                end_offset = h.last_offset() + 1;
            }
            if pos > start {
                let len = usize::try_from(pos - start)
                    .map_err(|_| LogError::Corrupt("range too large".into()))?;
                out.ranges.push(FileRange {
                    file,
                    position: start,
                    len,
                });
                taken += pos - start;
            }
            if done || taken >= max_bytes {
                break 'segments;
            }
        }
        out.bytes = usize::try_from(taken).unwrap_or(usize::MAX);
        out.end_offset = end_offset;
        Ok(Some(out))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.log_start()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.shared.log_end()
    }

    pub fn high_watermark(&self) -> i64 {
        self.shared.high_watermark.load(Ordering::Acquire)
    }

    /// Raises the high watermark (never lowers it; clamped to the log end). Transactions whose
    /// marker it passes become stable.
    pub fn set_high_watermark(&self, hw: i64) {
        let s = &self.shared;
        let hw = hw.min(s.log_end());
        s.high_watermark.fetch_max(hw, Ordering::AcqRel);
        // Pruned with the watermark loaded under the tracker's lock, so a marker registered
        // concurrently is pruned by whichever of the two runs last.
        let mut t = lock(&s.txns);
        t.prune(s.high_watermark.load(Ordering::Acquire));
    }

    /// The last stable offset (LSO): read_committed consumers read below it. It is the high
    /// watermark unless a transaction holds it back: the earliest one that is open, or whose
    /// marker is not yet below the high watermark (not yet durable here), stops it at its first
    /// offset. It is never below the log start. It rises when a marker's offset falls below the
    /// high watermark (the marker is durable) and when the high watermark rises with no
    /// transaction below it.
    pub fn last_stable_offset(&self) -> i64 {
        self.shared.last_stable_offset()
    }

    /// The aborted transactions a read_committed fetch of `[fetch_offset, upper_bound)` must
    /// report (Kafka's `collectAbortedTransactions`): those whose abort marker is at or after
    /// the fetch offset and that began before the upper bound, from the segment holding the
    /// fetch offset on, until an entry's last stable offset reaches the upper bound.
    pub fn aborted_transactions(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let segs = rw_read(&self.shared.segments).clone();
        let first = segs
            .partition_point(|sg| sg.base_offset <= fetch_offset)
            .saturating_sub(1);
        let mut out = Vec::new();
        for seg in segs.iter().skip(first) {
            if crate::txn_index::collect(&seg.aborted(), fetch_offset, upper_bound, &mut out) {
                break;
            }
        }
        out
    }

    /// First batch whose max timestamp is `>= ts_ms`, as (offset, that batch's max timestamp).
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let s = &self.shared;
        let segs = rw_read(&s.segments).clone();
        let log_start = s.log_start();
        for seg in segs {
            if seg.max_ts().0 < ts_ms || seg.next_offset() <= log_start {
                continue;
            }
            let file = match s.env.files.get(&seg.log_path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if seg.replaced.load(Ordering::SeqCst) {
                // Swapped by the cleaner: its successor holds the same offsets and timestamps.
                return self.offset_for_timestamp(ts_ms);
            }
            let size = seg.size();
            let mut pos = {
                let m = seg.meta();
                let j = m.index.partition_point(|e| e.ts_before < ts_ms);
                j.checked_sub(1)
                    .and_then(|j| m.index.get(j))
                    .map_or(0, |e| u64::from(e.position))
            };
            while let Some(h) = read_header(&file, pos, size)? {
                if h.max_timestamp >= ts_ms && h.last_offset() >= log_start {
                    return Ok(Some((h.base_offset.max(log_start), h.max_timestamp)));
                }
                pos += batch_len(&h);
            }
        }
        Ok(None)
    }

    /// Largest batch max-timestamp in the log and the base offset of its batch.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        rw_read(&self.shared.segments)
            .iter()
            .map(|s| s.max_ts())
            .filter(|(ts, _)| *ts >= 0)
            .max_by_key(|(ts, _)| *ts)
    }

    /// DeleteRecords: advances log start to `offset` (at most the high watermark) and removes the
    /// segments wholly below it.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let s = &self.shared;
        s.refuse_if_damaged()?;
        let st = lock(&s.append);
        let hw = self.high_watermark();
        if offset > hw || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: s.log_start(),
                log_end: hw,
            });
        }
        let new_start = s.log_start.fetch_max(offset, Ordering::AcqRel).max(offset);
        s.store_checkpoint(|cp| cp.log_start = cp.log_start.max(new_start))?;
        let doomed: Vec<Arc<Segment>> = rw_read(&s.segments)
            .iter()
            .filter(|sg| !Arc::ptr_eq(sg, &st.active) && sg.next_offset() <= new_start)
            .cloned()
            .collect();
        s.delete_segments(&doomed)?;
        s.truncate_epochs_from_start(new_start)?;
        Ok(new_start)
    }

    /// Deletes old segments by `retention.bytes` / `retention.ms` and those below log start.
    /// Never the active segment, nor one holding offsets at or above the high watermark.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let s = &self.shared;
        s.refuse_if_damaged()?;
        let mut st = lock(&s.append);
        let config = self.config();
        st.producers
            .remove_expired(now_ms, config.producer_id_expiration_ms);
        let hw = self.high_watermark();
        let log_start = s.log_start();
        let segs = rw_read(&s.segments).clone();
        let mut total: i64 = segs.iter().map(|sg| sg.size() as i64).sum();
        let mut doomed = Vec::new();
        for seg in &segs {
            if Arc::ptr_eq(seg, &st.active) || seg.next_offset() > hw {
                break;
            }
            let size = seg.size() as i64;
            let (max_ts, _) = seg.max_ts();
            let ts = if max_ts >= 0 { max_ts } else { seg.created_ms };
            let by_size = config.retention_bytes >= 0 && total - size >= config.retention_bytes;
            let by_time =
                config.retention_ms >= 0 && now_ms.saturating_sub(ts) > config.retention_ms;
            let below_start = seg.next_offset() <= log_start;
            if !(by_size || by_time || below_start) {
                break;
            }
            total -= size;
            doomed.push(Arc::clone(seg));
        }
        s.delete_segments(&doomed)?;
        Ok(doomed.len())
    }

    /// Removes every batch at or beyond the one containing `offset` (replication truncation).
    /// Truncating to at or below the log start empties the log and restarts it at `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.cut(offset, false)
    }

    /// Empties the log and restarts it at `offset`, which may lie beyond its end: a follower
    /// that fell behind its leader's log start starts over there (Kafka's
    /// `truncateFullyAndStartAt`).
    pub fn restart_at(&self, offset: i64) -> Result<(), LogError> {
        self.cut(offset, true)
    }

    fn cut(&self, offset: i64, restart: bool) -> Result<(), LogError> {
        let s = &self.shared;
        s.refuse_if_damaged()?;
        let mut st = lock(&s.append);
        if st.closed {
            return Err(LogError::Closed);
        }
        if offset >= s.log_end() && !restart {
            // No record goes, but an epoch that starts at the log end holds none either: a
            // broker that became leader and was replaced before appending anything keeps such
            // an entry, and a follower that kept it would name that epoch as its last fetched
            // one forever, so the leader would report divergence on every fetch (Kafka clears
            // it here too).
            let end = s.log_end();
            let mut e = lock(&s.epochs);
            let kept: Vec<(i32, i64)> = e.iter().copied().filter(|&(_, so)| so < end).collect();
            if kept != *e {
                s.persist_epochs(&kept)?;
                *e = kept;
            }
            return Ok(());
        }
        let flushing = lock(&s.flush_lock);
        let storing_recovery_point = lock(&s.recovery_point_lock);
        s.truncations.fetch_add(1, Ordering::AcqRel);
        let config = self.config();
        let segs = rw_read(&s.segments).clone();
        let keep_idx = segs
            .partition_point(|sg| sg.base_offset < offset)
            .checked_sub(1);
        let new_end;
        let (_removed, keep): (Vec<Arc<Segment>>, Vec<Arc<Segment>>) = match keep_idx {
            Some(k) if offset > s.log_start() && !restart => {
                let seg = segs
                    .get(k)
                    .cloned()
                    .ok_or_else(|| LogError::Corrupt("segment index".into()))?;
                let doomed: Vec<Arc<Segment>> = segs.iter().skip(k + 1).cloned().collect();
                // Later segments go first, newest first: a crash part-way leaves a shorter log
                // that is still contiguous, never a cut segment followed by later ones (which
                // recovery would rightly take for damage).
                remove_segment_files(s, &doomed);
                let file = s.env.files.get(&seg.log_path)?;
                let (cut, _) = seg.locate(&file, offset)?;
                file.set_len(cut)?;
                let scan = segment::scan(
                    &file,
                    seg.base_offset,
                    ScanStart::file_start(seg.base_offset),
                    config.index_interval_bytes,
                    false,
                )?;
                seg.size.store(scan.valid_bytes, Ordering::Release);
                seg.next_offset.store(scan.next_offset, Ordering::Release);
                seg.set_meta(scan.meta);
                seg.remove_index_files();
                new_end = scan.next_offset;
                let keep = segs.iter().take(k + 1).cloned().collect();
                (doomed, keep)
            }
            _ => {
                // Nothing below `offset` survives: restart the log there.
                let seg = Arc::new(Segment::new(&s.dir, offset, now_ms()));
                let doomed: Vec<Arc<Segment>> = segs
                    .iter()
                    .filter(|sg| sg.base_offset != offset)
                    .cloned()
                    .collect();
                // Old segments go before the new one is made, for the same reason as above.
                remove_segment_files(s, &doomed);
                if let Some(same) = segs.iter().find(|sg| sg.base_offset == offset) {
                    s.env.files.forget(&same.log_path);
                    same.remove_index_files();
                    let _ = std::fs::remove_file(same.txn_index_path());
                }
                s.env.files.create(&seg.log_path)?;
                seg.set_meta(SegMeta::empty(offset));
                new_end = offset;
                s.log_start.store(offset, Ordering::Release);
                (doomed, vec![seg])
            }
        };
        *rw_write(&s.segments) = keep.clone();
        st.active = Arc::clone(
            keep.last()
                .ok_or_else(|| LogError::Corrupt("no segment left".into()))?,
        );
        st.active_file = Weak::new();
        s.log_end.store(new_end, Ordering::Release);
        // Cutting the batch that contains log start leaves an empty log starting at its end.
        s.log_start.fetch_min(new_end, Ordering::AcqRel);
        let hw = s.high_watermark.load(Ordering::Acquire).min(new_end);
        s.high_watermark.store(hw, Ordering::Release);
        {
            let mut d = lock(&s.durable);
            d.written_end = new_end;
            d.synced_end = d.synced_end.min(new_end);
            d.unsynced
                .retain(|u| keep.iter().any(|k| Arc::ptr_eq(k, u)));
            if d.unsynced
                .last()
                .is_none_or(|u| !Arc::ptr_eq(u, &st.active))
            {
                d.unsynced.push(Arc::clone(&st.active));
            }
            d.dir_dirty = true;
            d.written_point =
                WrittenPoint::of(&st.active, &st.active.meta(), st.active.size(), new_end);
        }
        let active_base = st.active.base_offset;
        let log_start = s.log_start();
        // The recovery position may lie in data that was just cut: forget it (the next one is
        // written from the segment's first index entry).
        s.store_checkpoint(|cp| {
            cp.recovery_point = cp.recovery_point.min(active_base);
            cp.position = None;
            cp.log_start = log_start;
            cp.high_watermark = cp.high_watermark.min(hw);
        })?;
        {
            let mut e = lock(&s.epochs);
            let kept: Vec<(i32, i64)> = e.iter().copied().filter(|&(_, so)| so < new_end).collect();
            if kept != *e {
                s.persist_epochs(&kept)?;
                *e = kept;
            }
        }
        if s.log_start() >= new_end {
            // Nothing is left: no snapshot describes this log any more.
            s.delete_producer_snapshots(|_| true)?;
        } else {
            s.delete_producer_snapshots(|o| o > new_end)?;
        }
        // Aborts whose marker was cut are no longer aborts here (Kafka's
        // `TransactionIndex.truncateTo`).
        for seg in &keep {
            seg.aborted().retain(|a| a.last_offset < new_end);
        }
        // The cut segment (now active) keeps a `.txnindex` true to what is left: recovery reads
        // it below the producer snapshot it replays from.
        {
            let entries = st.active.aborted().clone();
            let path = st.active.txn_index_path();
            if entries.is_empty() {
                match crate::durable::remove_file(&path) {
                    Err(e) if !is_not_found(&e) => return Err(e.into()),
                    _ => {}
                }
            } else {
                crate::durable::write_file_atomically(&path, &crate::txn_index::encode(&entries))?;
            }
            *lock(&s.txn_index_persisted) = (st.active.base_offset, entries.len());
        }
        let rebuilt = s.rebuild_producer_state(new_end, now_ms(), None, hw)?;
        {
            // Completed transactions below the cut stay unstable until the watermark passes
            // their marker; those the replay found again are not listed twice.
            let mut t = lock(&s.txns);
            let mut unreplicated: Vec<(i64, i64)> = t
                .unreplicated
                .iter()
                .copied()
                .filter(|&(_, marker)| marker < new_end)
                .collect();
            for u in rebuilt.unreplicated {
                if !unreplicated.contains(&u) {
                    unreplicated.push(u);
                }
            }
            *t = TxnTracker::new(rebuilt.state.first_undecided_offset(), unreplicated);
            t.prune(hw);
        }
        st.producers = rebuilt.state;
        st.failed_writes.clear();
        drop(storing_recovery_point);
        drop(flushing);
        drop(st);
        // The cut must reach the disk before a replica acts on it.
        s.flush_now()
    }

    pub fn size_bytes(&self) -> u64 {
        rw_read(&self.shared.segments)
            .iter()
            .map(|s| s.size())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        rw_read(&self.shared.segments).len()
    }

    /// Flushes and writes the clean-shutdown checkpoint, so the next open scans nothing.
    pub fn close(&self) -> Result<(), LogError> {
        let s = &self.shared;
        let mut st = lock(&s.append);
        if st.closed {
            return Ok(());
        }
        if s.damage.is_some() {
            // A damaged log writes nothing, not even at close: its files stay as recovery found
            // them, and the next open finds the same damage.
            st.closed = true;
            drop(st);
            self.detach();
            return Ok(());
        }
        s.flush_now()?;
        segment::write_index_files(&st.active)?;
        // The clean checkpoint below trusts these files: they must survive a power cut too.
        segment::sync_index_files(&st.active)?;
        let log_end = s.log_end();
        let hw = self.high_watermark();
        // Producer state at the log end: the next open reads no batch header.
        s.write_producer_snapshot(log_end, &st.producers)?;
        {
            let _flush = lock(&s.flush_lock);
            let _rp = lock(&s.recovery_point_lock);
            let point = lock(&s.durable).written_point.clone();
            s.store_recovery_point(&point)?;
            s.store_checkpoint(|cp| {
                cp.recovery_point = log_end;
                cp.high_watermark = hw;
            })?;
        }
        st.closed = true;
        drop(st);
        self.detach();
        Ok(())
    }

    /// Stops background work for this handle and waits for an in-flight sync to finish, so the
    /// directory can be reopened safely.
    fn detach(&self) {
        let s = &self.shared;
        {
            let _flush = lock(&s.flush_lock);
            let _rp = lock(&s.recovery_point_lock);
            s.detached.store(true, Ordering::SeqCst);
        }
        let waiters = std::mem::take(&mut lock(&s.durable).waiters);
        for (_, cb) in waiters {
            cb(Err(LogError::Closed));
        }
        for seg in rw_read(&s.segments).iter() {
            s.env.files.forget(&seg.log_path);
        }
    }

    /// Removes the log's directory.
    pub fn delete(self) -> Result<(), LogError> {
        let s = &self.shared;
        lock(&s.append).closed = true;
        self.detach();
        // Large files through the reaper: a topic's GiBs freed at once would stall every sync
        // on the filesystem behind their discards.
        s.env.remove_dir_stepwise(&s.dir)?;
        Ok(())
    }

    // ---- leader epochs -------------------------------------------------------------------

    /// Records that `epoch` starts at `start_offset`; conflicting later entries are dropped.
    pub fn assign_leader_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        let s = &self.shared;
        let mut e = lock(&s.epochs);
        if e.last()
            .is_some_and(|&(le, lo)| le == epoch && lo <= start_offset)
        {
            return Ok(());
        }
        let mut next: Vec<(i32, i64)> = e
            .iter()
            .copied()
            .filter(|&(ep, so)| ep < epoch && so < start_offset)
            .collect();
        next.push((epoch, start_offset));
        s.persist_epochs(&next)?;
        *e = next;
        Ok(())
    }

    /// (epoch, start offset) entries, oldest first.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        lock(&self.shared.epochs).clone()
    }

    /// OffsetForLeaderEpoch: the largest known epoch `<= epoch` and the offset where it ended
    /// (the next epoch's start, or the log end for the latest). An epoch older than every
    /// cached one ended where the first cached epoch starts, and is answered as itself, as
    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: this log holds nothing of it. `None` for
    /// an undefined (negative) epoch or an empty cache.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let e = lock(&self.shared.epochs);
        let i = e.partition_point(|&(ep, _)| ep <= epoch);
        let Some(&(found, _)) = i.checked_sub(1).and_then(|j| e.get(j)) else {
            return e.first().map(|&(_, first_start)| (epoch, first_start));
        };
        let end = e
            .get(i)
            .map_or_else(|| self.log_end_offset(), |&(_, so)| so);
        Some((found, end))
    }

    // ---- producer state ---------------------------------------------------------------------

    /// A copy of the idempotent producers' state (tests, DescribeProducers later).
    pub fn producer_state(&self) -> ProducerState {
        lock(&self.shared.append).producers.clone()
    }

    /// The newest valid snapshot at or below the log end, as (offset, entries).
    pub fn load_producer_snapshot(&self) -> Result<Option<(i64, Vec<ProducerEntry>)>, LogError> {
        self.shared.load_producer_snapshot(self.log_end_offset())
    }

    /// Bytes that recovery read (and CRC-checked) when this log was opened: 0 after a clean
    /// shutdown, otherwise about what was written after the last persisted recovery point.
    pub fn recovery_scanned_bytes(&self) -> u64 {
        lock(&self.shared.recovery).scanned_bytes
    }

    /// What opening this log cost: segments, index files read, bytes scanned, producer-state
    /// replay.
    pub fn recovery_stats(&self) -> RecoveryStats {
        *lock(&self.shared.recovery)
    }

    /// Test hook: drops the handle as a crash would (no clean-shutdown checkpoint) and returns
    /// the offset below which data had been synced when background syncs stopped, which a crash
    /// simulation must not damage.
    #[doc(hidden)]
    pub fn abandon_for_test(self) -> i64 {
        self.detach();
        lock(&self.shared.durable).synced_end
    }

    /// Test hook: makes the next sync fail as a device error would.
    #[doc(hidden)]
    pub fn inject_sync_failure_for_test(&self) {
        self.shared.fail_next_sync.store(true, Ordering::SeqCst);
    }
}

impl Drop for Log {
    /// Dropping without [`Log::close`] is like a crash as far as the files are concerned (no
    /// clean-shutdown checkpoint), but background syncs for this handle stop first.
    fn drop(&mut self) {
        if !self.shared.detached.load(Ordering::SeqCst) {
            self.detach();
        }
    }
}
