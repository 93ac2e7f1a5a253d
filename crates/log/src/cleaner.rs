//! Log compaction: Kafka's log cleaner for one partition's log.
//!
//! A pass keeps, for every key, the record with the highest offset, drops tombstones whose
//! delete horizon has passed and the records of aborted transactions, and rewrites the log's
//! sealed segments below the first uncleanable offset (never the active segment). It owns the
//! key map (bounded in bytes, Kafka's dedupe buffer), the I/O throttle, the `.cleaned` /
//! `.swap` files and the cleaner checkpoint; it must never hold the log's append lock or its
//! segment list lock while it reads or writes segment data, only for the final swap.
//!
//! # One pass
//! 1. **Plan** (`plan`): the cleanable segments are the sealed ones wholly below
//!    min(active segment base, last stable offset, high watermark, synced offset) whose
//!    newest timestamp is at least `min.compaction.lag.ms` old. The dirty part starts at the
//!    cleaner checkpoint (`cleaner-offset-checkpoint`: the offset the last pass cleaned up to).
//!    The pass runs if the dirty bytes are at least `min.cleanable.dirty.ratio` of the
//!    cleanable bytes, if a dirty segment is older than `max.compaction.lag.ms`, or if forced.
//! 2. **Key map**: the keys of the dirty part, each with its highest offset. When the map is
//!    full, the pass cleans only up to the offset the map covers (as Kafka does), and the next
//!    pass starts there.
//! 3. **Rewrite**, per group of consecutive segments whose sizes sum to at most
//!    `segment.bytes` (small cleaned segments merge): each batch is copied verbatim when it
//!    loses nothing; otherwise its retained records are re-encoded with the batch's codec,
//!    base offset, last offset delta, leader epoch, producer id/epoch/base sequence and
//!    timestamp type (record timestamps are kept: they are re-based when the base timestamp
//!    becomes a KIP-534 delete horizon). Offsets never change.
//! 4. **Swap** (`Log::swap_cleaned`, crash-safe, below).
//!
//! # Where Weir differs from Kafka
//! - Offsets stay *dense*: a run of batches that lose every record becomes one empty batch
//!   (record count 0, no producer) spanning exactly their offsets, instead of a gap. So every
//!   invariant that relies on dense offsets (recovery's scan, the end-of-segment tripwire,
//!   followers' contiguity check) holds for cleaned segments too; the cost is 61 bytes per run.
//!   Clients skip empty batches (Kafka itself leaves empty batches for producer state).
//! - A transaction marker goes as in Kafka (once no batch of its transaction is kept, a pass
//!   gives it a delete horizon of `delete.retention.ms`; a pass after the horizon drops it,
//!   with its aborted-transaction index entry), with one more condition: no producer snapshot
//!   lies inside the transaction. Weir keeps snapshots at old segment bases (truncation
//!   rebuilds from them), and a rebuild from one taken while the transaction was open would
//!   never see it end without its marker, leaving the last stable offset stuck.
//! - The last batch of each live producer is kept, emptied if all its records go, so that the
//!   producer state survives a rebuild from the log, as in Kafka.
//!
//! # Crash safety
//! The cleaned group is written to `<base>.cleaned-<end>` and synced; renaming it to
//! `<base>.swap-<end>` (then syncing the directory) is the commit point. Under the log's locks
//! the old segments are marked replaced, every file of the group except `<base>.log` is
//! removed, the directory is synced, and the swap file is renamed over `<base>.log`. `Log::open`
//! deletes `.cleaned-*` files and completes a `.swap-<end>` it finds by removing every segment
//! file with a base in `[base, end)` and renaming the swap file to `<base>.log`. Either the
//! old segments or the cleaned one are served, never a mix.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_protocol::compression::Compression;
use weir_protocol::record::{
    self, BATCH_HEADER_BYTES, BatchHeader, Record, RecordBatchBuilder, TimestampType,
};

use crate::log::{Log, rw_read_segments};
use crate::producer_state::AbortedTxn;
use crate::segment::{self, SegMeta, Segment, batch_len, read_header};
use crate::{LogError, lock};

/// The partition directory's file holding the offset the last pass cleaned up to.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Largest decompressed batch the cleaner decodes; a larger one is copied as it is.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// What one key map entry costs besides its key bytes: the hash table slot, the boxed key's
/// allocation header and the offset. Kafka's map stores a 16-byte hash per key instead; storing
/// the key makes the map exact (no collisions) at the price of counting key bytes.
pub const KEY_MAP_ENTRY_OVERHEAD_BYTES: usize = 64;
/// The cleaner reads segments in chunks of this size (and accounts them to the throttle).
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// Per-topic compaction settings (Kafka topic config names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// `delete.retention.ms`: how long a tombstone stays after the pass that first saw it.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// The keys of the dirty part of a log with their highest offset, bounded in bytes.
pub struct KeyMap {
    entries: HashMap<Box<[u8]>, i64>,
    bytes_used: usize,
    bytes_max: usize,
}

impl KeyMap {
    pub fn new(bytes_max: usize) -> KeyMap {
        KeyMap {
            entries: HashMap::new(),
            bytes_used: 0,
            bytes_max,
        }
    }

    /// Records `offset` for `key`; false (and nothing changed) if a new key does not fit.
    fn put(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(o) = self.entries.get_mut(key) {
            // The planted bug (a test-only feature) keeps a key's first offset: the property
            // test must catch it.
            if cfg!(feature = "planted-bug-keep-first") {
                *o = (*o).min(offset);
            } else {
                *o = (*o).max(offset);
            }
            return true;
        }
        let cost = key.len() + KEY_MAP_ENTRY_OVERHEAD_BYTES;
        if self.bytes_used + cost > self.bytes_max {
            return false;
        }
        self.bytes_used += cost;
        self.entries.insert(key.into(), offset);
        true
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(key).copied()
    }

    fn clear(&mut self) {
        self.entries = HashMap::new();
        self.bytes_used = 0;
    }

    /// Bytes the entries account for (keys plus the per-entry overhead).
    pub fn bytes_used(&self) -> usize {
        self.bytes_used
    }
}

/// Caps the cleaner's I/O at `bytes_per_second_max` (0 = unlimited) by sleeping.
pub struct Throttler {
    bytes_per_second_max: u64,
    window_start: Instant,
    window_bytes: u64,
}

impl Throttler {
    pub fn new(bytes_per_second_max: u64) -> Throttler {
        Throttler {
            bytes_per_second_max,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Accounts `bytes` of I/O, sleeping until the rate is back under the cap.
    pub fn note(&mut self, bytes: u64) {
        if self.bytes_per_second_max == 0 {
            return;
        }
        self.window_bytes += bytes;
        let due =
            Duration::from_secs_f64(self.window_bytes as f64 / self.bytes_per_second_max as f64);
        let elapsed = self.window_start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        // Short windows: an idle spell does not buy a later burst above the cap.
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
    }
}

/// One cleaner thread's working state: its key map (memory bounded by the dedupe buffer size)
/// and its I/O throttle.
pub struct Cleaner {
    key_map: KeyMap,
    throttler: Throttler,
    /// Test hook: the pass stops dead (as a kill -9 would) after this step of a swap: 1 = the
    /// cleaned file is synced, 2 = committed (`.swap`), 3 = old files removed, 4 = renamed
    /// into place, before the index files. The log must then be abandoned and reopened.
    #[doc(hidden)]
    pub crash_after_step_for_test: Option<u32>,
}

/// Returns the simulated crash of [`Cleaner::crash_after_step_for_test`] at `step`.
pub(crate) fn crash_point(step: u32, crash_after: Option<u32>) -> Result<(), LogError> {
    if crash_after == Some(step) {
        return Err(LogError::Corrupt(format!(
            "simulated crash after cleaner swap step {step}"
        )));
    }
    Ok(())
}

impl Cleaner {
    /// `dedupe_buffer_bytes`: the key map's size (Kafka's `log.cleaner.dedupe.buffer.size` per
    /// thread); `io_bytes_per_second_max`: read plus write rate cap, 0 for none.
    pub fn new(dedupe_buffer_bytes: usize, io_bytes_per_second_max: u64) -> Cleaner {
        Cleaner {
            key_map: KeyMap::new(dedupe_buffer_bytes),
            throttler: Throttler::new(io_bytes_per_second_max),
            crash_after_step_for_test: None,
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// The offset the log is now cleaned up to (the next pass's first dirty offset).
    pub cleaned_to_offset: i64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Largest the key map got, in accounted bytes.
    pub key_map_bytes: usize,
    /// The earliest KIP-534 delete horizon (ms) among the batches kept; `i64::MAX` if none.
    pub delete_horizon_ms: i64,
}

/// What `weir topic describe` shows about a compacted partition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CleanerStats {
    /// The offset the log has been cleaned up to (the cleaner checkpoint, at least log start).
    pub last_cleaned_offset: i64,
    /// Bytes of cleanable segments already cleaned, and not yet.
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// dirty / (clean + dirty); 0 when nothing is cleanable.
    pub dirty_ratio: f64,
}

/// The segments a pass may touch and where their dirty part begins.
struct Plan {
    cleanable: Vec<Arc<Segment>>,
    first_dirty: i64,
    stats: CleanerStats,
    max_lag_due: bool,
    /// A delete horizon among the cleaned batches has passed: tombstones or markers can go.
    horizon_due: bool,
    /// Sealed segments from the one the stored recovery point names onward were left out: a
    /// newer recovery point would let them be cleaned.
    held_by_recovery_point: bool,
}

/// A record-level decision for one batch.
enum Outcome {
    /// Written as read.
    Verbatim,
    /// Re-encoded with fewer records or a delete horizon.
    Rewritten(Bytes),
    /// Every record goes; the batch's offsets join the surrounding empty run.
    Dropped,
    /// Every record goes but the batch is its producer's last: kept as an empty batch.
    Emptied(Bytes),
}

/// The transactions a pass walks through, per producer: whether any batch of the current one
/// is kept, which decides whether its marker may go.
pub(crate) struct Txns {
    /// Producers whose current transaction has a kept batch.
    kept: HashSet<i64>,
    /// The offset of each producer's last marker walked (kept or dropped).
    last_marker: HashMap<i64, i64>,
    /// Each producer snapshot's offset and the producers it records inside a transaction, with
    /// that transaction's first offset (`None`: unreadable, taken to hold all open).
    snapshots: Vec<(i64, Option<HashMap<i64, i64>>)>,
    /// (producer id, marker offset) of every marker this pass drops.
    dropped_markers: HashSet<(i64, i64)>,
}

impl Txns {
    pub(crate) fn new(snapshots: Vec<(i64, Option<HashMap<i64, i64>>)>) -> Txns {
        Txns {
            kept: HashSet::new(),
            last_marker: HashMap::new(),
            snapshots,
            dropped_markers: HashSet::new(),
        }
    }

    /// A transactional data batch and what became of it.
    fn data(&mut self, h: &BatchHeader, outcome: &Outcome) {
        if h.is_transactional() && h.producer_id >= 0 && !matches!(outcome, Outcome::Dropped) {
            self.kept.insert(h.producer_id);
        }
    }

    /// Whether a snapshot at or below the marker at `marker_offset` records its transaction
    /// open: one that began after the producer's previous marker. A rebuild from it would
    /// never see that transaction end without the marker.
    fn snapshot_holds_open(&self, producer_id: i64, marker_offset: i64) -> bool {
        let after = self
            .last_marker
            .get(&producer_id)
            .copied()
            .unwrap_or(i64::MIN);
        self.snapshots.iter().any(|(o, open)| {
            *o <= marker_offset
                && match open {
                    Some(open) => open
                        .get(&producer_id)
                        .is_some_and(|&first| first > after && first < marker_offset),
                    None => *o > after,
                }
        })
    }

    /// A marker: kept while any batch of its transaction is; then given a delete horizon;
    /// dropped once that has passed.
    fn marker(
        &mut self,
        h: &BatchHeader,
        bytes: &Bytes,
        config: &CompactionConfig,
        now_ms: i64,
    ) -> Result<Outcome, LogError> {
        let kept = self.kept.remove(&h.producer_id);
        let held = self.snapshot_holds_open(h.producer_id, h.base_offset);
        self.last_marker.insert(h.producer_id, h.base_offset);
        if kept || held {
            return Ok(Outcome::Verbatim);
        }
        if h.has_delete_horizon() {
            if now_ms >= h.base_timestamp {
                self.dropped_markers.insert((h.producer_id, h.base_offset));
                return Ok(Outcome::Dropped);
            }
            return Ok(Outcome::Verbatim);
        }
        let Ok(records) = record::decode_records(bytes, DECOMPRESSED_BATCH_BYTES_MAX) else {
            return Ok(Outcome::Verbatim);
        };
        let horizon = now_ms.saturating_add(config.delete_retention_ms.max(0));
        let mut b = RecordBatchBuilder::new(h.compression())
            .base_offset(h.base_offset)
            .partition_leader_epoch(h.partition_leader_epoch)
            .base_timestamp(horizon)
            .producer(h.producer_id, h.producer_epoch, h.base_sequence)
            .transactional(true)
            .control(true)
            .timestamp_type(h.timestamp_type())
            .last_offset_delta(h.last_offset_delta)
            .delete_horizon(true);
        if h.timestamp_type() == TimestampType::LogAppendTime {
            b = b.max_timestamp(h.max_timestamp);
        }
        for mut r in records {
            let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
            r.timestamp_delta = ts.saturating_sub(horizon);
            b.push(r);
        }
        let built = b
            .build()
            .map_err(|e| LogError::Corrupt(format!("cleaner: cannot re-encode a marker: {e}")))?;
        Ok(Outcome::Rewritten(built))
    }
}

/// A run of consecutive dropped batches, written as one empty batch.
struct EmptyRun {
    first_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    leader_epoch: i32,
}

fn empty_batch(
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    timestamp_ms: i64,
    producer: Option<&BatchHeader>,
) -> Result<Bytes, LogError> {
    let delta = i32::try_from(last_offset - base_offset)
        .map_err(|_| LogError::Corrupt("empty batch spans too many offsets".into()))?;
    let mut b = RecordBatchBuilder::new(Compression::None)
        .base_offset(base_offset)
        .partition_leader_epoch(leader_epoch)
        .base_timestamp(timestamp_ms)
        .max_timestamp(timestamp_ms)
        .last_offset_delta(delta);
    if let Some(h) = producer {
        b = b
            .producer(h.producer_id, h.producer_epoch, h.base_sequence)
            .transactional(h.is_transactional());
    }
    b.build()
        .map_err(|e| LogError::Corrupt(format!("cannot encode an empty batch: {e}")))
}

/// An empty batch (no records, no producer) spanning `[base_offset, last_offset]`: what the
/// cleaner writes for a run of removed batches, and a follower for the part of such a run it
/// lacks.
pub(crate) fn empty_batch_bytes(
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    timestamp_ms: i64,
) -> Result<Bytes, LogError> {
    empty_batch(base_offset, last_offset, leader_epoch, timestamp_ms, None)
}

pub(crate) fn read_checkpoint(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn store_checkpoint(dir: &Path, offset: i64) -> io::Result<()> {
    crate::checkpoint::write_atomic(
        dir,
        CLEANER_CHECKPOINT_FILE,
        format!("{offset}\n").as_bytes(),
    )
}

pub(crate) fn cleaned_file_name(base: i64, end: i64) -> String {
    format!("{base:020}.cleaned-{end}")
}

pub(crate) fn swap_file_name(base: i64, end: i64) -> String {
    format!("{base:020}.swap-{end}")
}

/// Completes or discards what an interrupted pass left in `dir` (called by `Log::open` before
/// it lists segments): `.cleaned-*` files are deleted; a `<base>.swap-<end>` replaces every
/// segment with a base in `[base, end)`.
pub(crate) fn recover_interrupted_swaps(dir: &Path) -> io::Result<()> {
    let mut swaps: Vec<(i64, i64, PathBuf)> = Vec::new();
    let mut bases: Vec<i64> = Vec::new();
    let mut changed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        if ext.starts_with("cleaned-") {
            std::fs::remove_file(entry.path())?;
            changed = true;
        } else if let Some(end) = ext
            .strip_prefix("swap-")
            .and_then(|e| e.parse::<i64>().ok())
        {
            swaps.push((base, end, entry.path()));
        } else if ext == "log" {
            bases.push(base);
        }
    }
    for (base, end, path) in swaps {
        tracing::warn!(dir = %dir.display(), base, end, "completing an interrupted cleaner swap");
        for &b in bases.iter().filter(|&&b| b >= base && b < end) {
            for ext in [
                "log",
                "index",
                "timeindex",
                segment::RPINDEX_EXT,
                crate::txn_index::TXN_INDEX_EXT,
            ] {
                match std::fs::remove_file(dir.join(segment::file_name(b, ext))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        std::fs::rename(&path, dir.join(segment::file_name(base, "log")))?;
        changed = true;
    }
    if changed {
        crate::durable::sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the batches of a segment file in order, in large chunks, with the throttle applied.
struct BatchReader<'a> {
    file: &'a File,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: u64,
    bytes_read: u64,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a File, size: u64, pos: u64) -> BatchReader<'a> {
        BatchReader {
            file,
            size,
            pos,
            buf: Vec::new(),
            buf_pos: pos,
            bytes_read: 0,
        }
    }

    /// The next whole batch (header and bytes) and its position.
    fn next(
        &mut self,
        throttler: &mut Throttler,
    ) -> Result<Option<(u64, BatchHeader, Bytes)>, LogError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let Some(h) = read_header(self.file, self.pos, self.size)? else {
            return Err(LogError::Corrupt(format!(
                "cleaner: no valid batch at position {} of a sealed segment",
                self.pos
            )));
        };
        let len = batch_len(&h);
        let in_buf =
            self.pos >= self.buf_pos && self.pos + len <= self.buf_pos + self.buf.len() as u64;
        if !in_buf {
            // `len` fits in the file (read_header checked it), so this is bounded by the file.
            let want = (self.size - self.pos).min(READ_CHUNK_BYTES.max(len));
            self.buf
                .resize(usize::try_from(want).unwrap_or(usize::MAX), 0);
            self.file.read_exact_at(&mut self.buf, self.pos)?;
            self.buf_pos = self.pos;
            self.bytes_read += want;
            throttler.note(want);
        }
        let at = usize::try_from(self.pos - self.buf_pos).unwrap_or(usize::MAX);
        let bytes = self
            .buf
            .get(at..at + usize::try_from(len).unwrap_or(usize::MAX))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| LogError::Corrupt("cleaner: batch outside its buffer".into()))?;
        let pos = self.pos;
        self.pos += len;
        Ok(Some((pos, h, bytes)))
    }
}

fn in_aborted(aborted: &[AbortedTxn], h: &BatchHeader) -> bool {
    h.is_transactional()
        && h.producer_id >= 0
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && h.base_offset >= a.first_offset
                && h.base_offset < a.last_offset
        })
}

impl Log {
    /// The cleaner's view of this log: how much is cleaned and how dirty the rest is.
    pub fn cleaner_stats(&self, config: &CompactionConfig, now_ms: i64) -> CleanerStats {
        self.plan(config, now_ms).stats
    }

    fn plan(&self, config: &CompactionConfig, now_ms: i64) -> Plan {
        let s = &self.shared;
        let segs = rw_read_segments(self);
        let log_start = self.log_start_offset();
        let cp = *lock(&s.checkpoint);
        let limit = self
            .last_stable_offset()
            .min(self.high_watermark())
            // Only synced data: a cleaned segment drops records for newer ones later in the
            // log, which a crash must not be able to take back. (The stored recovery point may
            // lag; segments above it are rescanned at open, which cleaned ones pass.)
            .min(self.durable_offset());
        // The segments a recovery point names (stored, or the next one to be) describe
        // positions in their files: recovery would misread a cleaned file from them.
        let position_segment = cp.position.map(|p| p.segment_base);
        let written_segment = s.written_point_base();
        let lag_cutoff = now_ms.saturating_sub(config.min_compaction_lag_ms.max(0));
        let mut cleanable = Vec::new();
        let mut held_by_recovery_point = false;
        for (i, seg) in segs.iter().enumerate() {
            // Never the active (last) segment.
            if i + 1 == segs.len() || seg.next_offset() > limit {
                break;
            }
            if seg.base_offset == written_segment {
                break;
            }
            if Some(seg.base_offset) == position_segment {
                held_by_recovery_point = true;
                break;
            }
            let (max_ts, _) = seg.max_ts();
            let newest = if max_ts >= 0 { max_ts } else { seg.created_ms };
            if config.min_compaction_lag_ms > 0 && newest > lag_cutoff {
                break;
            }
            cleanable.push(Arc::clone(seg));
        }
        let first_base = segs.first().map_or(0, |sg| sg.base_offset);
        let log_end = self.log_end_offset();
        let first_dirty = match read_checkpoint(&s.dir) {
            Some(o) if o >= log_start && o <= log_end => o,
            _ => log_start.max(first_base),
        };
        let mut stats = CleanerStats {
            last_cleaned_offset: first_dirty,
            ..CleanerStats::default()
        };
        let mut max_lag_due = false;
        let max_lag_cutoff = now_ms.saturating_sub(config.max_compaction_lag_ms.max(0));
        for seg in &cleanable {
            if seg.next_offset() <= first_dirty {
                stats.clean_bytes += seg.size();
            } else {
                stats.dirty_bytes += seg.size();
                let (max_ts, _) = seg.max_ts();
                let newest = if max_ts >= 0 { max_ts } else { seg.created_ms };
                if config.max_compaction_lag_ms < i64::MAX && newest <= max_lag_cutoff {
                    max_lag_due = true;
                }
            }
        }
        let total = stats.clean_bytes + stats.dirty_bytes;
        if total > 0 {
            stats.dirty_ratio = stats.dirty_bytes as f64 / total as f64;
        }
        let horizon_due =
            !cleanable.is_empty() && s.cleaner_horizon_ms.load(Ordering::Acquire) <= now_ms;
        Plan {
            cleanable,
            first_dirty,
            stats,
            max_lag_due,
            horizon_due,
            held_by_recovery_point,
        }
    }

    /// Runs one cleaning pass if the log is dirty enough (or `force`). `Ok(None)`: nothing to do.
    pub fn clean(
        &self,
        cleaner: &mut Cleaner,
        config: &CompactionConfig,
        now_ms: i64,
        force: bool,
    ) -> Result<Option<CleanReport>, LogError> {
        let s = &self.shared;
        s.refuse_if_damaged_pub()?;
        let _one_pass = lock(&s.cleaning);
        let mut plan = self.plan(config, now_ms);
        if plan.held_by_recovery_point {
            // A recovery point is stored at a roll only when the sync after it covers the
            // sealed segment, or once its interval (10 s, 16 MiB) passes after new writes: a
            // log written one synced batch at a time, then idle, could keep one naming an old
            // segment for good, and everything from there on would stay uncleaned. Stored now,
            // it names the segment being written, and this pass goes on past the old one. (A
            // pass that stopped there would leave a forced `weir topic compact` with nothing
            // cleaned.) A failed sync poisons the log and is reported by its writers; the
            // pass then cleans what the old point allows.
            if s.flush_and_store_recovery_point().is_ok() {
                plan = self.plan(config, now_ms);
            }
        }
        // With nothing dirty, a pass only re-walks the cleaned part to drop what a passed delete
        // horizon covers. (Horizons are known from the passes since open: after a restart the
        // next pass over dirty data finds them again.)
        let dirty_due = plan.stats.dirty_bytes > 0
            && (force
                || plan.max_lag_due
                || plan.stats.dirty_ratio >= config.min_cleanable_dirty_ratio);
        if !dirty_due && !plan.horizon_due {
            return Ok(None);
        }
        let mut truncations_expected = s.truncations.load(Ordering::Acquire);
        // Loaded now, so nothing reads these segments' index files while the swap replaces them.
        for seg in &plan.cleanable {
            drop(seg.meta());
            drop(seg.aborted());
        }
        let mut report = CleanReport {
            segments_before: plan.cleanable.len(),
            delete_horizon_ms: i64::MAX,
            ..CleanReport::default()
        };

        // The key map over the dirty part, from the first dirty offset on.
        cleaner.key_map.clear();
        let dirty_end = plan
            .cleanable
            .last()
            .map_or(plan.first_dirty, |sg| sg.next_offset());
        let aborted = self.aborted_transactions(
            plan.cleanable.first().map_or(0, |sg| sg.base_offset),
            dirty_end,
        );
        let mut map_end = dirty_end;
        'map: for seg in plan
            .cleanable
            .iter()
            .filter(|sg| sg.next_offset() > plan.first_dirty)
        {
            let file = s.env_files_get(&seg.log_path)?;
            let (start, _) = seg.locate(&file, plan.first_dirty)?;
            let mut reader = BatchReader::new(&file, seg.size(), start);
            while let Some((_, h, bytes)) = reader.next(&mut cleaner.throttler)? {
                if h.last_offset() < plan.first_dirty || h.is_control() || in_aborted(&aborted, &h)
                {
                    continue;
                }
                let Ok(records) = record::decode_records(&bytes, DECOMPRESSED_BATCH_BYTES_MAX)
                else {
                    continue; // copied as is below; its keys simply don't compact older records
                };
                for r in &records {
                    let offset = h.base_offset + i64::from(r.offset_delta);
                    if let Some(key) = &r.key
                        && !cleaner.key_map.put(key, offset)
                    {
                        map_end = offset;
                        report.bytes_read += reader.bytes_read;
                        break 'map;
                    }
                }
            }
            report.bytes_read += reader.bytes_read;
        }
        if map_end <= plan.first_dirty && plan.first_dirty < dirty_end {
            return Err(LogError::Corrupt(format!(
                "the cleaner's key map ({} bytes) cannot hold one key: raise log.cleaner.dedupe.buffer.size",
                cleaner.key_map.bytes_max
            )));
        }
        report.key_map_bytes = cleaner.key_map.bytes_used();

        // Segments cleaned this pass: every cleanable one starting below the map's end.
        let to_clean: Vec<Arc<Segment>> = plan
            .cleanable
            .iter()
            .filter(|sg| sg.base_offset < map_end)
            .cloned()
            .collect();
        let last_batches: HashMap<i64, i64> = lock(&s.append)
            .producers
            .entries()
            .iter()
            .filter_map(|e| e.last_batch().map(|b| (e.producer_id, b.last_offset)))
            .collect();
        let config_log = self.config();
        let segment_bytes_max = config_log.segment_bytes.min(i32::MAX as u64);
        let mut groups: Vec<Vec<Arc<Segment>>> = Vec::new();
        for seg in to_clean {
            let fits = groups.last().is_some_and(|g| {
                let bytes: u64 = g.iter().map(|x| x.size()).sum::<u64>() + seg.size();
                let first = g.first().map_or(seg.base_offset, |x| x.base_offset);
                bytes <= segment_bytes_max && seg.next_offset() - first < i64::from(i32::MAX)
            });
            match groups.last_mut() {
                Some(g) if fits => g.push(seg),
                _ => groups.push(vec![seg]),
            }
        }
        let mut swapped_all = true;
        let mut segments_after = 0usize;
        let mut txns = Txns::new(s.open_txns_in_snapshots(dirty_end)?);
        for group in &groups {
            let cleaned = self.clean_group(
                cleaner,
                group,
                &aborted,
                &last_batches,
                &mut txns,
                config,
                now_ms,
                config_log.index_interval_bytes,
                &mut report,
            )?;
            crash_point(1, cleaner.crash_after_step_for_test)?;
            if self.swap_cleaned(
                group,
                cleaned,
                &mut truncations_expected,
                cleaner.crash_after_step_for_test,
            )? {
                segments_after += 1;
            } else {
                swapped_all = false;
                break;
            }
        }
        if !swapped_all {
            return Ok(None);
        }
        report.segments_after = segments_after;
        report.cleaned_to_offset = map_end;
        store_checkpoint(&s.dir, map_end)?;
        s.cleaner_horizon_ms
            .store(report.delete_horizon_ms, Ordering::Release);
        Ok(Some(report))
    }

    /// Writes the cleaned form of `group` to `<base>.cleaned-<end>` and syncs it.
    #[allow(clippy::too_many_arguments)]
    fn clean_group(
        &self,
        cleaner: &mut Cleaner,
        group: &[Arc<Segment>],
        aborted: &[AbortedTxn],
        last_batches: &HashMap<i64, i64>,
        txns: &mut Txns,
        config: &CompactionConfig,
        now_ms: i64,
        index_interval_bytes: u32,
        report: &mut CleanReport,
    ) -> Result<CleanedGroup, LogError> {
        let s = &self.shared;
        let base = group.first().map_or(0, |sg| sg.base_offset);
        let end = group.last().map_or(base, |sg| sg.next_offset());
        let path = s.dir.join(cleaned_file_name(base, end));
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut meta = SegMeta::empty(base);
        let mut pos: u64 = 0;
        let mut run: Option<EmptyRun> = None;
        let mut aborted_out: Vec<AbortedTxn> = Vec::new();
        let write = |bytes: &[u8],
                     h_base: i64,
                     max_ts: i64,
                     pos: &mut u64,
                     meta: &mut SegMeta,
                     throttler: &mut Throttler|
         -> Result<(), LogError> {
            out.write_all_at(bytes, *pos)?;
            meta.note_batch(
                base,
                *pos,
                h_base,
                max_ts,
                bytes.len() as u64,
                index_interval_bytes,
            );
            *pos += bytes.len() as u64;
            throttler.note(bytes.len() as u64);
            Ok(())
        };
        // A run of dropped batches is kept as one empty batch spanning its offsets, written
        // before the next kept batch (or at the end), so offsets stay dense for followers and
        // the last offset of the log is never lost.
        let flush_run = |run: &mut Option<EmptyRun>,
                         pos: &mut u64,
                         meta: &mut SegMeta,
                         throttler: &mut Throttler|
         -> Result<(), LogError> {
            let Some(r) = run.take() else {
                return Ok(());
            };
            let e = empty_batch(
                r.first_offset,
                r.last_offset,
                r.leader_epoch,
                r.max_timestamp,
                None,
            )?;
            write(&e, r.first_offset, r.max_timestamp, pos, meta, throttler)
        };
        for seg in group {
            aborted_out.extend(seg.aborted().iter().copied());
            let file = s.env_files_get(&seg.log_path)?;
            let mut reader = BatchReader::new(&file, seg.size(), 0);
            while let Some((_, h, bytes)) = reader.next(&mut cleaner.throttler)? {
                let outcome = if h.is_control() {
                    txns.marker(&h, &bytes, config, now_ms)?
                } else {
                    let outcome = decide(
                        &cleaner.key_map,
                        &h,
                        &bytes,
                        aborted,
                        last_batches,
                        config,
                        now_ms,
                        report,
                    )?;
                    txns.data(&h, &outcome);
                    outcome
                };
                let kept = match outcome {
                    Outcome::Dropped => {
                        match &mut run {
                            Some(r) => {
                                r.last_offset = h.last_offset();
                                r.max_timestamp = r.max_timestamp.max(h.max_timestamp);
                            }
                            None => {
                                run = Some(EmptyRun {
                                    first_offset: h.base_offset,
                                    last_offset: h.last_offset(),
                                    max_timestamp: h.max_timestamp,
                                    leader_epoch: h.partition_leader_epoch,
                                })
                            }
                        }
                        continue;
                    }
                    Outcome::Verbatim => bytes,
                    Outcome::Rewritten(b) | Outcome::Emptied(b) => b,
                };
                flush_run(&mut run, &mut pos, &mut meta, &mut cleaner.throttler)?;
                let kept_header = BatchHeader::parse(&kept).ok();
                let max_ts = kept_header
                    .as_ref()
                    .map_or(h.max_timestamp, |k| k.max_timestamp);
                if let Some(k) = kept_header.as_ref().filter(|k| k.has_delete_horizon()) {
                    report.delete_horizon_ms = report.delete_horizon_ms.min(k.base_timestamp);
                }
                write(
                    &kept,
                    h.base_offset,
                    max_ts,
                    &mut pos,
                    &mut meta,
                    &mut cleaner.throttler,
                )?;
            }
            report.bytes_read += reader.bytes_read;
        }
        flush_run(&mut run, &mut pos, &mut meta, &mut cleaner.throttler)?;
        // An abort whose marker is gone must leave the index too: a read_committed client
        // that is told of an aborted transaction skips its producer's records until it meets
        // the marker.
        aborted_out.retain(|a| {
            !txns
                .dropped_markers
                .contains(&(a.producer_id, a.last_offset))
        });
        rustix::fs::fdatasync(&out).map_err(io::Error::from)?;
        report.bytes_written += pos;
        Ok(CleanedGroup {
            path,
            base,
            end,
            size: pos,
            meta,
            aborted: aborted_out,
            sizes_before: group.iter().map(|sg| sg.size()).collect(),
        })
    }
}

/// A cleaned group written and synced, waiting for its swap.
pub(crate) struct CleanedGroup {
    pub path: PathBuf,
    pub base: i64,
    pub end: i64,
    pub size: u64,
    pub meta: SegMeta,
    pub aborted: Vec<AbortedTxn>,
    /// The old segments' sizes when they were read: a change since voids the swap.
    pub sizes_before: Vec<u64>,
}

#[allow(clippy::too_many_arguments)]
fn decide(
    key_map: &KeyMap,
    h: &BatchHeader,
    bytes: &Bytes,
    aborted: &[AbortedTxn],
    last_batches: &HashMap<i64, i64>,
    config: &CompactionConfig,
    now_ms: i64,
    report: &mut CleanReport,
) -> Result<Outcome, LogError> {
    debug_assert!(!h.is_control(), "markers are decided by Txns::marker");
    let producer_last =
        h.producer_id >= 0 && last_batches.get(&h.producer_id) == Some(&h.last_offset());
    let emptied = |report: &mut CleanReport| -> Result<Outcome, LogError> {
        report.records_removed += u64::try_from(h.record_count).unwrap_or(0);
        if producer_last {
            Ok(Outcome::Emptied(empty_batch(
                h.base_offset,
                h.last_offset(),
                h.partition_leader_epoch,
                h.max_timestamp,
                Some(h),
            )?))
        } else {
            Ok(Outcome::Dropped)
        }
    };
    if in_aborted(aborted, h) {
        return emptied(report);
    }
    let Ok(records) = record::decode_records(bytes, DECOMPRESSED_BATCH_BYTES_MAX) else {
        // Never drop what can't be read.
        return Ok(Outcome::Verbatim);
    };
    let horizon_passed = h.has_delete_horizon() && now_ms >= h.base_timestamp;
    let mut kept: Vec<&Record> = Vec::with_capacity(records.len());
    for r in &records {
        let offset = h.base_offset + i64::from(r.offset_delta);
        let Some(key) = &r.key else {
            continue; // a compacted topic refuses keyless records; Kafka's cleaner drops them too
        };
        let latest = match key_map.get(key) {
            None => true,
            Some(o) if cfg!(feature = "planted-bug-keep-first") => offset <= o,
            Some(o) => offset >= o,
        };
        if !latest {
            continue;
        }
        if r.value.is_none() && horizon_passed {
            continue;
        }
        kept.push(r);
    }
    if kept.is_empty() {
        return emptied(report);
    }
    let has_tombstone = kept.iter().any(|r| r.value.is_none());
    let set_horizon = has_tombstone && !h.has_delete_horizon();
    if kept.len() == records.len() && !set_horizon {
        return Ok(Outcome::Verbatim);
    }
    report.records_removed += (records.len() - kept.len()) as u64;
    let horizon = h.has_delete_horizon() || set_horizon;
    let base_ts = if set_horizon {
        now_ms.saturating_add(config.delete_retention_ms.max(0))
    } else {
        h.base_timestamp
    };
    let codec = h.compression();
    let mut b = RecordBatchBuilder::new(codec)
        .base_offset(h.base_offset)
        .partition_leader_epoch(h.partition_leader_epoch)
        .base_timestamp(base_ts)
        .producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .transactional(h.is_transactional())
        .timestamp_type(h.timestamp_type())
        .last_offset_delta(h.last_offset_delta)
        .delete_horizon(horizon);
    if h.timestamp_type() == TimestampType::LogAppendTime {
        b = b.max_timestamp(h.max_timestamp);
    }
    for r in kept {
        let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
        let mut r = r.clone();
        r.timestamp_delta = ts.saturating_sub(base_ts);
        b.push(r);
    }
    let built = b
        .build()
        .map_err(|e| LogError::Corrupt(format!("cleaner: cannot re-encode a batch: {e}")))?;
    debug_assert!(built.len() >= BATCH_HEADER_BYTES);
    Ok(Outcome::Rewritten(built))
}
