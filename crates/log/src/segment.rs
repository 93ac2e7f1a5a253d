//! One segment: a `.log` file of concatenated v2 batches named by its base offset, with a sparse
//! offset index (`.index`) and time index (`.timeindex`).
//!
//! The indexes live in memory while the log is open; they are written to disk when the segment is
//! sealed (rolled) and at clean shutdown. On-disk index files carry a summary (base, next offset,
//! `.log` size, max timestamp) and CRCs, so recovery can trust a sealed segment without scanning it,
//! and a missing, stale or torn index file is detected and rebuilt by scanning the `.log`. A sealed
//! segment below the recovery point is opened from its index header alone; the entries load on
//! first use ([`Segment::meta`]).
//!
//! The active segment's index entries are also appended, as they are made durable, to a
//! `.rpindex` file ("recovery-point index") that the log checkpoint refers to by entry count and
//! CRC: after a crash, recovery loads those entries and resumes the CRC scan at the recovery
//! point instead of reading the whole active segment.
//!
//! A segment holding abort markers also has a `.txnindex` (see `txn_index.rs`), written and
//! trusted with the other index files.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use weir_protocol::record::{BATCH_HEADER_BYTES, BatchHeader, verify_crc};

use crate::checkpoint::RecoveryPosition;
use crate::lock;
use crate::producer_state::AbortedTxn;
use crate::txn_index::{self, TXN_INDEX_EXT};

/// One sparse index entry: a batch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch, relative to the segment's base offset.
    pub rel_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
    /// Largest max-timestamp of all batches before this one in the segment (-1 if none):
    /// a timestamp search for `ts > ts_before` can start here.
    pub ts_before: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub index: Vec<IndexEntry>,
    pub max_ts: i64,
    pub max_ts_offset: i64,
    pub bytes_since_index: u64,
}

impl SegMeta {
    pub fn empty(base_offset: i64) -> SegMeta {
        SegMeta {
            index: Vec::new(),
            max_ts: -1,
            max_ts_offset: base_offset,
            bytes_since_index: 0,
        }
    }

    /// Records one appended batch (position, base offset, max timestamp, size).
    pub fn note_batch(
        &mut self,
        base: i64,
        position: u64,
        batch_base: i64,
        batch_max_ts: i64,
        batch_bytes: u64,
        index_interval_bytes: u32,
    ) {
        let first = position == 0;
        if (first || self.bytes_since_index >= u64::from(index_interval_bytes))
            && let (Ok(rel), Ok(pos)) = (u32::try_from(batch_base - base), u32::try_from(position))
        {
            if !first {
                self.index.push(IndexEntry {
                    rel_offset: rel,
                    position: pos,
                    ts_before: self.max_ts,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch_bytes;
        if batch_max_ts > self.max_ts {
            self.max_ts = batch_max_ts;
            self.max_ts_offset = batch_base;
        }
    }

    /// Last index entry at or before `offset`, as (base offset, position).
    pub fn floor_by_offset(&self, base: i64, offset: i64) -> (i64, u64) {
        let rel = offset - base;
        let i = self
            .index
            .partition_point(|e| i64::from(e.rel_offset) <= rel);
        match i.checked_sub(1).and_then(|j| self.index.get(j)) {
            Some(e) => (base + i64::from(e.rel_offset), u64::from(e.position)),
            None => (base, 0),
        }
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    /// Committed size: readers never look past it, so they never see a partial write.
    pub size: AtomicU64,
    /// One past the last offset stored here (== base_offset while empty).
    pub next_offset: AtomicI64,
    /// Wall-clock creation (or open) time, for `segment.ms`.
    pub created_ms: i64,
    /// Use [`Segment::meta`], which loads it first if it is still pending.
    meta: Mutex<SegMeta>,
    /// Set for a sealed segment opened below the recovery point: its index files are read on first
    /// use, not at open, so opening a log costs no read per sealed segment.
    meta_pending: AtomicBool,
    /// Transactions whose abort marker lies in this segment, in offset order (the `.txnindex`).
    /// Use [`Segment::aborted`], which loads it first if it is still pending.
    aborted: Mutex<Vec<AbortedTxn>>,
    /// Like `meta_pending`, for the `.txnindex` of a lazily opened sealed segment.
    aborted_pending: AtomicBool,
    /// Set by the cleaner before a cleaned segment is renamed over this one's file: a reader that
    /// opens `log_path` after seeing it set may hold the new file, whose positions differ, and
    /// must start over from a fresh segment list.
    pub replaced: AtomicBool,
}

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

impl Segment {
    pub fn new(dir: &Path, base_offset: i64, created_ms: i64) -> Segment {
        Segment {
            base_offset,
            log_path: dir.join(file_name(base_offset, "log")),
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            created_ms,
            meta: Mutex::new(SegMeta::empty(base_offset)),
            meta_pending: AtomicBool::new(false),
            aborted: Mutex::new(Vec::new()),
            aborted_pending: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
        }
    }

    /// The aborted transactions whose marker is in this segment, loaded from the `.txnindex`
    /// first if still pending (a lazily opened sealed segment).
    pub fn aborted(&self) -> MutexGuard<'_, Vec<AbortedTxn>> {
        let mut a = lock(&self.aborted);
        if self.aborted_pending.load(Ordering::Acquire) {
            // Synced with the other index files before the recovery point that trusts this
            // segment was stored; if it is invalid now, its aborts can't be recovered here.
            *a = txn_index::load(&self.txn_index_path(), self.base_offset, self.next_offset())
                .unwrap_or_else(|| {
                    tracing::error!(segment = %self.log_path.display(),
                        "transaction index of a sealed segment below the recovery point is invalid; its aborted transactions are not reported");
                    Vec::new()
                });
            self.aborted_pending.store(false, Ordering::Release);
        }
        a
    }

    pub fn set_aborted(&self, aborted: Vec<AbortedTxn>) {
        let mut a = lock(&self.aborted);
        *a = aborted;
        self.aborted_pending.store(false, Ordering::Release);
    }

    /// A sealed segment that recovery trusts without reading it (it lies wholly below the
    /// recovery point, so its data and index files were synced before that point was stored):
    /// `size` bytes holding offsets up to `next_offset`; the index is loaded on first use.
    pub fn sealed_lazy(
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
        size: u64,
        created_ms: i64,
    ) -> Segment {
        let seg = Segment::new(dir, base_offset, created_ms);
        seg.size.store(size, Ordering::Release);
        seg.next_offset.store(next_offset, Ordering::Release);
        seg.meta_pending.store(true, Ordering::Release);
        seg.aborted_pending.store(true, Ordering::Release);
        seg
    }

    /// The in-memory index and timestamps, loaded from the index files first if still pending.
    pub fn meta(&self) -> MutexGuard<'_, SegMeta> {
        let mut m = lock(&self.meta);
        if self.meta_pending.load(Ordering::Acquire) {
            *m = self.load_meta();
            self.meta_pending.store(false, Ordering::Release);
        }
        m
    }

    pub fn set_meta(&self, meta: SegMeta) {
        let mut m = lock(&self.meta);
        *m = meta;
        self.meta_pending.store(false, Ordering::Release);
    }

    /// Reads the index files of a lazily opened sealed segment. They were synced before the
    /// recovery point that trusts this segment was stored, so they should validate; if they
    /// don't (lost or damaged since), the index is rebuilt from the `.log` headers.
    fn load_meta(&self) -> SegMeta {
        if let Some((sum, meta)) = load_index_files(self)
            && sum.log_bytes == self.size()
            && sum.next_offset == self.next_offset()
        {
            return meta;
        }
        tracing::warn!(segment = %self.log_path.display(),
            "index files of a sealed segment below the recovery point are missing or stale; rebuilding the index from the log");
        let rebuilt = File::open(&self.log_path).and_then(|f| {
            scan(
                &f,
                self.base_offset,
                ScanStart::file_start(self.base_offset),
                LAZY_REBUILD_INDEX_INTERVAL_BYTES,
                false,
            )
        });
        match rebuilt {
            Ok(scan) => {
                let meta = scan.meta;
                // Best effort: the next open finds valid files again.
                if let Err(e) = write_index_files_from(self, &meta) {
                    tracing::warn!(segment = %self.log_path.display(), error = %e, "cannot rewrite index files");
                }
                meta
            }
            Err(e) => {
                // Reads still work without an index (they walk batch headers from the start).
                tracing::warn!(segment = %self.log_path.display(), error = %e, "cannot rebuild segment index");
                SegMeta::empty(self.base_offset)
            }
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn index_path(&self) -> PathBuf {
        self.log_path.with_extension("index")
    }

    pub fn timeindex_path(&self) -> PathBuf {
        self.log_path.with_extension("timeindex")
    }

    pub fn rpindex_path(&self) -> PathBuf {
        self.log_path.with_extension(RPINDEX_EXT)
    }

    pub fn txn_index_path(&self) -> PathBuf {
        self.log_path.with_extension(TXN_INDEX_EXT)
    }

    /// Every file that belongs to this segment: data, both indexes, recovery-point index,
    /// aborted-transaction index.
    pub fn file_paths(&self) -> [PathBuf; 5] {
        [
            self.log_path.clone(),
            self.index_path(),
            self.timeindex_path(),
            self.rpindex_path(),
            self.txn_index_path(),
        ]
    }

    pub fn max_ts(&self) -> (i64, i64) {
        let m = self.meta();
        (m.max_ts, m.max_ts_offset)
    }

    /// Position of the batch containing `offset` (or the first batch after it), walking headers
    /// from the closest index entry. Returns the position and that batch's header, if any.
    pub fn locate(&self, file: &File, offset: i64) -> io::Result<(u64, Option<BatchHeader>)> {
        let size = self.size();
        let (_, mut pos) = self.meta().floor_by_offset(self.base_offset, offset);
        while pos < size {
            let Some(h) = read_header(file, pos, size)? else {
                break;
            };
            if h.last_offset() >= offset {
                return Ok((pos, Some(h)));
            }
            pos += batch_len(&h);
        }
        Ok((pos.min(size), None))
    }

    /// Deletes the index files (they go stale once the segment is written again).
    pub fn remove_index_files(&self) {
        let _ = std::fs::remove_file(self.index_path());
        let _ = std::fs::remove_file(self.timeindex_path());
        // The `.txnindex` stays: it is validated against the segment's offsets where it is read,
        // the active segment's copy is what recovery uses below the producer snapshot it
        // replays from, and truncation rewrites it.
    }
}

/// Index spacing for an index rebuilt lazily (the topic's `index.interval.bytes` is not known
/// there); Kafka's default.
const LAZY_REBUILD_INDEX_INTERVAL_BYTES: u32 = 4096;

pub(crate) fn batch_len(h: &BatchHeader) -> u64 {
    h.total_bytes() as u64
}

/// Offset checks the codec's header parse leaves to the log: offsets must be non-negative,
/// dense (a non-negative delta) and must not overflow.
pub(crate) fn offsets_plausible(h: &BatchHeader) -> bool {
    h.last_offset_delta >= 0
        && h.base_offset >= 0
        && h.base_offset
            .checked_add(i64::from(h.last_offset_delta))
            .is_some()
}

/// Parses the header at the start of `b` and checks that the whole batch fits in `b.len()`
/// bytes (`remaining`), before anything is read or allocated on its behalf.
pub(crate) fn parse_header(b: &[u8], remaining: u64) -> Option<BatchHeader> {
    let h = BatchHeader::parse(b).ok()?;
    (offsets_plausible(&h) && batch_len(&h) <= remaining).then_some(h)
}

/// Reads and validates the header of the batch at `pos`; `None` if it does not fit in `size`.
pub(crate) fn read_header(file: &File, pos: u64, size: u64) -> io::Result<Option<BatchHeader>> {
    if pos + BATCH_HEADER_BYTES as u64 > size {
        return Ok(None);
    }
    let mut buf = [0u8; BATCH_HEADER_BYTES];
    file.read_exact_at(&mut buf, pos)?;
    Ok(parse_header(&buf, size - pos))
}

/// Where a scan starts: the file start with an empty index, or a recovery point.
pub(crate) struct ScanStart {
    pub position: u64,
    pub next_offset: i64,
    pub meta: SegMeta,
}

impl ScanStart {
    pub fn file_start(base_offset: i64) -> ScanStart {
        ScanStart {
            position: 0,
            next_offset: base_offset,
            meta: SegMeta::empty(base_offset),
        }
    }
}

/// Result of scanning a segment file.
pub(crate) struct ScanResult {
    /// Bytes of valid, whole batches from the start of the file.
    pub valid_bytes: u64,
    pub next_offset: i64,
    pub meta: SegMeta,
    /// True if the scan stopped before the end of the file (torn or corrupt tail).
    pub truncated: bool,
    /// Why the scan stopped early (for the recovery log), when `truncated`.
    pub stop_reason: Option<String>,
    /// Bytes read from the file by the scan (recovery diagnostics).
    pub bytes_read: u64,
}

/// Scans `file` from `start`: every batch must be whole, have offsets continuing densely from
/// `start.next_offset`, and (if `verify_crc`) a matching CRC. Stops at the first batch that is
/// not. Bytes before `start.position` are neither read nor checked.
pub(crate) fn scan(
    file: &File,
    base_offset: i64,
    start: ScanStart,
    index_interval_bytes: u32,
    verify: bool,
) -> io::Result<ScanResult> {
    let file_len = file.metadata()?.len();
    // Reads in large chunks: recovery speed is bounded by sequential read + CRC, not syscalls.
    const CHUNK_BYTES: usize = 1 << 20;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos: u64 = 0; // file position of buf[0]
    let mut pos: u64 = start.position;
    let mut expected = start.next_offset;
    let mut meta = start.meta;
    let mut truncated = false;
    let mut stop_reason: Option<String> = None;
    let mut bytes_read: u64 = 0;
    let mut fill = |buf: &mut Vec<u8>, at: u64, min_len: usize| -> io::Result<()> {
        let len = usize::try_from((file_len - at).min(CHUNK_BYTES as u64))
            .unwrap_or(CHUNK_BYTES)
            .max(min_len);
        buf.resize(len, 0);
        file.read_exact_at(buf, at)?;
        bytes_read += len as u64;
        Ok(())
    };
    loop {
        if pos >= file_len {
            break;
        }
        // Make sure the header is in the buffer.
        if pos + BATCH_HEADER_BYTES as u64 > file_len {
            truncated = true;
            stop_reason = Some(format!(
                "{} bytes at position {pos} are too few for a batch header",
                file_len - pos
            ));
            break;
        }
        if pos + BATCH_HEADER_BYTES as u64 > buf_pos + buf.len() as u64 || pos < buf_pos {
            fill(&mut buf, pos, 0)?;
            buf_pos = pos;
        }
        let at = usize::try_from(pos - buf_pos).unwrap_or(usize::MAX);
        let Some(h) = buf.get(at..).and_then(|b| parse_header(b, file_len - pos)) else {
            truncated = true;
            stop_reason = Some(format!(
                "the batch header at position {pos} is invalid or the batch runs past the end of the file"
            ));
            break;
        };
        let total = batch_len(&h);
        if h.base_offset != expected {
            truncated = true;
            stop_reason = Some(format!(
                "the batch at position {pos} has base offset {} where {expected} was expected",
                h.base_offset
            ));
            break;
        }
        if verify {
            if pos + total > buf_pos + buf.len() as u64 {
                // `total` fits in the file (checked by parse_header), so this is bounded.
                fill(&mut buf, pos, usize::try_from(total).unwrap_or(usize::MAX))?;
                buf_pos = pos;
            }
            let at = usize::try_from(pos - buf_pos).unwrap_or(usize::MAX);
            let end = at.saturating_add(usize::try_from(total).unwrap_or(usize::MAX));
            if buf.get(at..end).is_none_or(|b| verify_crc(b).is_err()) {
                truncated = true;
                stop_reason = Some(format!(
                    "the batch at position {pos} (offset {expected}) fails its CRC check"
                ));
                break;
            }
        }
        meta.note_batch(
            base_offset,
            pos,
            h.base_offset,
            h.max_timestamp,
            total,
            index_interval_bytes,
        );
        expected = h.last_offset() + 1;
        pos += total;
    }
    Ok(ScanResult {
        valid_bytes: pos,
        next_offset: expected,
        meta,
        truncated,
        stop_reason,
        bytes_read,
    })
}

// ---- recovery-point index ---------------------------------------------------------------------

pub(crate) const RPINDEX_EXT: &str = "rpindex";
/// rel_offset (u32), position (u32), ts_before (i64).
const RPINDEX_ENTRY_BYTES: usize = 16;

pub(crate) fn encode_rpindex_entries(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.len() * RPINDEX_ENTRY_BYTES);
    for e in entries {
        b.extend_from_slice(&e.rel_offset.to_be_bytes());
        b.extend_from_slice(&e.position.to_be_bytes());
        b.extend_from_slice(&e.ts_before.to_be_bytes());
    }
    b
}

/// CRC32C of entries as stored in a `.rpindex` file.
pub(crate) fn rpindex_crc(entries: &[IndexEntry]) -> u32 {
    crc32c::crc32c(&encode_rpindex_entries(entries))
}

/// Appends `entries` to the segment's `.rpindex` after the first `from` entries and syncs it.
/// Returns the CRC32C of all entries `0..from + entries.len()`, continuing from `crc_before`.
pub(crate) fn append_rpindex(
    seg: &Segment,
    from: u32,
    crc_before: u32,
    entries: &[IndexEntry],
) -> io::Result<u32> {
    let bytes = encode_rpindex_entries(entries);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(seg.rpindex_path())?;
    file.write_all_at(&bytes, u64::from(from) * RPINDEX_ENTRY_BYTES as u64)?;
    rustix::fs::fdatasync(&file)?;
    Ok(crc32c::crc32c_append(crc_before, &bytes))
}

/// Loads the active segment's state at a recovery point: the first `rp.index_count` entries of
/// its `.rpindex` (checked against the CRC in the checkpoint) plus the scalars stored there.
/// `None` if anything does not validate; the caller then scans the segment from its start.
pub(crate) fn load_recovery_start(
    seg: &Segment,
    rp: &RecoveryPosition,
    file_len: u64,
) -> Option<ScanStart> {
    let base = seg.base_offset;
    if rp.segment_base != base
        || rp.position > file_len
        || rp.next_offset < base
        || (rp.position == 0) != (rp.next_offset == base)
    {
        return None;
    }
    let count = usize::try_from(rp.index_count).ok()?;
    let want = count.checked_mul(RPINDEX_ENTRY_BYTES)?;
    let mut bytes = vec![0u8; 0];
    if count > 0 {
        let file = File::open(seg.rpindex_path()).ok()?;
        // Bounded by the file's real size before allocating.
        if file.metadata().ok()?.len() < want as u64 {
            return None;
        }
        bytes.resize(want, 0);
        file.read_exact_at(&mut bytes, 0).ok()?;
    }
    if crc32c::crc32c(&bytes) != rp.index_crc {
        return None;
    }
    let mut index = Vec::with_capacity(count);
    let mut prev: Option<IndexEntry> = None;
    for c in bytes.chunks_exact(RPINDEX_ENTRY_BYTES) {
        let e = IndexEntry {
            rel_offset: u32::from_be_bytes(c.get(0..4)?.try_into().ok()?),
            position: u32::from_be_bytes(c.get(4..8)?.try_into().ok()?),
            ts_before: i64::from_be_bytes(c.get(8..16)?.try_into().ok()?),
        };
        if u64::from(e.position) >= rp.position || i64::from(e.rel_offset) >= rp.next_offset - base
        {
            return None;
        }
        if prev.is_some_and(|p| {
            e.rel_offset <= p.rel_offset || e.position <= p.position || e.ts_before < p.ts_before
        }) {
            return None;
        }
        prev = Some(e);
        index.push(e);
    }
    let meta = SegMeta {
        index,
        max_ts: rp.max_ts,
        max_ts_offset: rp.max_ts_offset,
        bytes_since_index: rp.bytes_since_index,
    };
    Some(ScanStart {
        position: rp.position,
        next_offset: rp.next_offset,
        meta,
    })
}

// ---- index files ----------------------------------------------------------------------------

const INDEX_MAGIC: &[u8; 8] = b"WEIRIDX1";
const TIMEINDEX_MAGIC: &[u8; 8] = b"WEIRTIX1";
const INDEX_HEADER_BYTES: usize = 64;

/// What a sealed segment's `.index` header promises about its `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexSummary {
    pub base_offset: i64,
    pub next_offset: i64,
    pub log_bytes: u64,
}

/// Writes `.index` and `.timeindex` for a segment whose contents are `size` bytes up to `next`.
pub(crate) fn write_index_files(seg: &Segment) -> io::Result<()> {
    let meta = seg.meta().clone();
    write_index_files_from(seg, &meta)
}

fn write_index_files_from(seg: &Segment, meta: &SegMeta) -> io::Result<()> {
    let size = seg.size();
    let next = seg.next_offset();
    let mut idx = Vec::with_capacity(INDEX_HEADER_BYTES + meta.index.len() * 8);
    let mut body = Vec::with_capacity(meta.index.len() * 8);
    for e in &meta.index {
        body.extend_from_slice(&e.rel_offset.to_be_bytes());
        body.extend_from_slice(&e.position.to_be_bytes());
    }
    idx.extend_from_slice(INDEX_MAGIC);
    idx.extend_from_slice(&seg.base_offset.to_be_bytes());
    idx.extend_from_slice(&next.to_be_bytes());
    idx.extend_from_slice(&size.to_be_bytes());
    idx.extend_from_slice(&meta.max_ts.to_be_bytes());
    idx.extend_from_slice(&meta.max_ts_offset.to_be_bytes());
    idx.extend_from_slice(&(meta.index.len() as u32).to_be_bytes());
    idx.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    idx.extend_from_slice(&[0u8; 4]);
    let header_crc = crc32c::crc32c(&idx);
    idx.extend_from_slice(&header_crc.to_be_bytes());
    debug_assert_eq!(idx.len(), INDEX_HEADER_BYTES);
    idx.extend_from_slice(&body);

    let mut tix = Vec::with_capacity(16 + meta.index.len() * 8);
    let mut tbody = Vec::with_capacity(meta.index.len() * 8);
    for e in &meta.index {
        tbody.extend_from_slice(&e.ts_before.to_be_bytes());
    }
    tix.extend_from_slice(TIMEINDEX_MAGIC);
    tix.extend_from_slice(&(meta.index.len() as u32).to_be_bytes());
    tix.extend_from_slice(&crc32c::crc32c(&tbody).to_be_bytes());
    tix.extend_from_slice(&tbody);
    // Not synced here (this runs under the append lock at a roll): the flusher makes them durable
    // with `sync_index_files` before a recovery point relies on them. The files are
    // self-validating, so a torn one is rebuilt on open. The `.index` goes last: without it
    // none of the others is trusted.
    let aborted = seg.aborted().clone();
    txn_index::write(&seg.txn_index_path(), &aborted)?;
    std::fs::write(seg.timeindex_path(), tix)?;
    std::fs::write(seg.index_path(), idx)?;
    Ok(())
}

/// fdatasyncs a sealed segment's index files (their directory entries are covered by the log's
/// directory sync after the roll that created them).
pub(crate) fn sync_index_files(seg: &Segment) -> io::Result<()> {
    for path in [seg.index_path(), seg.timeindex_path()] {
        let file = std::fs::File::open(&path)?;
        rustix::fs::fdatasync(&file)?;
    }
    // Present only when the segment holds an abort marker.
    match std::fs::File::open(seg.txn_index_path()) {
        Ok(file) => rustix::fs::fdatasync(&file)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Reads and validates only the header of a sealed segment's `.index` (one 64-byte read).
pub(crate) fn load_index_summary(dir: &Path, base_offset: i64) -> Option<IndexSummary> {
    let file = File::open(dir.join(file_name(base_offset, "index"))).ok()?;
    let mut header = [0u8; INDEX_HEADER_BYTES];
    file.read_exact_at(&mut header, 0).ok()?;
    parse_index_header(&header, base_offset).map(|(sum, _)| sum)
}

/// The summary in a `.index` header plus (max_ts, max_ts_offset, entry count, body CRC), if the
/// header's magic, CRC and base offset check out.
fn parse_index_header(
    header: &[u8],
    base_offset: i64,
) -> Option<(IndexSummary, (i64, i64, usize, u32))> {
    if header.get(..8)? != INDEX_MAGIC {
        return None;
    }
    let stored_crc = u32::from_be_bytes(header.get(60..64)?.try_into().ok()?);
    if crc32c::crc32c(header.get(..60)?) != stored_crc {
        return None;
    }
    let i64_at = |at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(header.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?))
    };
    let base = i64_at(8)?;
    let next = i64_at(16)?;
    let log_bytes = u64::try_from(i64_at(24)?).ok()?;
    if base != base_offset || next < base {
        return None;
    }
    let rest = (
        i64_at(32)?,
        i64_at(40)?,
        usize::try_from(u32_at(48)?).ok()?,
        u32_at(52)?,
    );
    Some((
        IndexSummary {
            base_offset: base,
            next_offset: next,
            log_bytes,
        },
        rest,
    ))
}

/// Loads and validates both index files; `None` if missing, torn or inconsistent.
pub(crate) fn load_index_files(seg: &Segment) -> Option<(IndexSummary, SegMeta)> {
    let idx = std::fs::read(seg.index_path()).ok()?;
    let tix = std::fs::read(seg.timeindex_path()).ok()?;
    let header = idx.get(..INDEX_HEADER_BYTES)?;
    let (
        IndexSummary {
            base_offset: base,
            next_offset: next,
            log_bytes,
        },
        (max_ts, max_ts_offset, count, body_crc),
    ) = parse_index_header(header, seg.base_offset)?;
    let i64_at = |b: &[u8], at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let body = idx.get(INDEX_HEADER_BYTES..)?;
    if body.len() != count.checked_mul(8)? || crc32c::crc32c(body) != body_crc {
        return None;
    }
    if tix.get(..8)? != TIMEINDEX_MAGIC || usize::try_from(u32_at(&tix, 8)?).ok()? != count {
        return None;
    }
    let tbody = tix.get(16..)?;
    if tbody.len() != count.checked_mul(8)? || crc32c::crc32c(tbody) != u32_at(&tix, 12)? {
        return None;
    }
    let mut index = Vec::with_capacity(count);
    let mut prev: Option<IndexEntry> = None;
    for i in 0..count {
        let e = IndexEntry {
            rel_offset: u32_at(body, i * 8)?,
            position: u32_at(body, i * 8 + 4)?,
            ts_before: i64_at(tbody, i * 8)?,
        };
        // Entries must be strictly increasing and inside the file.
        if u64::from(e.position) >= log_bytes || i64::from(e.rel_offset) >= next - base {
            return None;
        }
        if let Some(p) = prev
            && (e.rel_offset <= p.rel_offset
                || e.position <= p.position
                || e.ts_before < p.ts_before)
        {
            return None;
        }
        prev = Some(e);
        index.push(e);
    }
    let meta = SegMeta {
        index,
        max_ts,
        max_ts_offset,
        bytes_since_index: 0,
    };
    Some((
        IndexSummary {
            base_offset: base,
            next_offset: next,
            log_bytes,
        },
        meta,
    ))
}
