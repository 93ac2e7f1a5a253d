//! Per-broker shared resources: the capped open-file cache and the group-commit flusher threads.
//!
//! A broker hosts thousands of partitions, each with several segment files, so file descriptors
//! are a scarce, shared resource: every segment `.log` file is opened lazily through [`FileCache`],
//! which closes the least recently used descriptors once `open_files_max` is reached (a reader
//! that still holds an `Arc<File>` keeps its descriptor until it drops it).
//!
//! Durability is batched: an append only marks its log dirty and queues it; a flusher thread
//! picks the log up, runs one `fdatasync` that covers every append that reached the file before
//! it, and then completes all waiters at once (group commit). Appends that arrive while a sync
//! runs are covered by the next one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lock;
use crate::log::Shared;

/// Flusher threads per environment: syncs of different partitions run in parallel, which
/// matters on devices that complete several flushes concurrently (NVMe, most SSDs).
const FLUSHER_THREADS_DEFAULT: usize = 4;

/// A file at least this large is deleted in steps (below).
const REAP_STEPWISE_MIN_BYTES: u64 = 8 << 20;
/// Bytes a large file is cut by per step when it is deleted. On ext4 mounted with `discard`,
/// the blocks a transaction frees are discarded when it commits, in the journal's thread, so
/// every fdatasync on the filesystem waits behind them: unlinking a 128 MiB segment at once
/// stalled acks for ~40 ms here (the device discards ~3 GB/s), a 2 GiB topic for most of a
/// second. A few MiB per step keep each commit's discard to about a millisecond.
const REAP_STEP_BYTES: u64 = 4 << 20;
/// Pause between steps: bounds the delete rate at 400 MiB/s, so steps spread over many commits.
const REAP_STEP_PAUSE: Duration = Duration::from_millis(10);
/// Most unlinked files waiting to be cut; beyond, a file's blocks are freed at once.
const REAP_QUEUE_FILES_MAX: usize = 4096;

/// Shared per broker: capped open-fd cache + group-commit flusher thread(s).
pub struct LogEnv {
    pub(crate) files: FileCache,
    /// Unlinked large files (held open) whose blocks the reaper thread frees in steps.
    reap_queue: Mutex<VecDeque<File>>,
    reap_cv: Condvar,
    queue: Mutex<FlushQueue>,
    queue_cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shutting_down: AtomicBool,
    /// Sync latency and group-commit batch sizes, read by the broker's metrics.
    pub(crate) stats: crate::stats::SyncStats,
}

#[derive(Default)]
struct FlushQueue {
    /// Logs that must be synced as soon as a flusher is free. A log is in here at most once
    /// (guarded by its `flush_queued` flag).
    ready: VecDeque<Arc<Shared>>,
    /// Logs under the `Interval` policy waiting for their `flush.ms` deadline.
    timed: BinaryHeap<Reverse<(Instant, u64)>>,
    timed_logs: HashMap<u64, Weak<Shared>>,
    timed_seq: u64,
}

impl LogEnv {
    /// Creates the environment and starts its flusher threads.
    pub fn new(open_files_max: usize) -> Arc<LogEnv> {
        Self::with_flushers(open_files_max, FLUSHER_THREADS_DEFAULT)
    }

    pub fn with_flushers(open_files_max: usize, flusher_threads: usize) -> Arc<LogEnv> {
        let env = Arc::new(LogEnv {
            files: FileCache::new(open_files_max.max(1)),
            reap_queue: Mutex::new(VecDeque::new()),
            reap_cv: Condvar::new(),
            queue: Mutex::new(FlushQueue::default()),
            queue_cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            stats: crate::stats::SyncStats::default(),
        });
        let mut threads = Vec::new();
        for i in 0..flusher_threads.max(1) {
            // The thread holds a Weak so that dropping the last Arc<LogEnv> ends it.
            let weak = Arc::downgrade(&env);
            let spawned = std::thread::Builder::new()
                .name(format!("weir-log-flush-{i}"))
                .spawn(move || flusher_main(weak));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start log flusher thread"),
            }
        }
        let weak = Arc::downgrade(&env);
        match std::thread::Builder::new()
            .name("weir-log-reaper".into())
            .spawn(move || reaper_main(weak))
        {
            Ok(h) => threads.push(h),
            // Without it, files are freed as they are unlinked (see remove_file_stepwise).
            Err(e) => tracing::error!(error = %e, "cannot start log reaper thread"),
        }
        *lock(&env.threads) = threads;
        env
    }

    /// Stops the flushers after they drain already-queued syncs. Later syncs run inline.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.queue_cv.notify_all();
        self.reap_cv.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    /// What the group-commit syncs of every log in this environment did.
    pub fn sync_stats(&self) -> &crate::stats::SyncStats {
        &self.stats
    }

    /// Removes `path`. The name goes at once (a file of the same name may be created right
    /// after); a large file's blocks are then freed by the reaper thread a few MiB at a time,
    /// so that the filesystem's discards do not stall every fdatasync at once (see
    /// `REAP_STEP_BYTES`). A crash meanwhile leaves an orphan inode, which the filesystem
    /// frees at mount. The caller syncs the directory as for any unlink.
    pub(crate) fn remove_file_stepwise(&self, path: &Path) -> io::Result<()> {
        let large = std::fs::metadata(path)?.len() >= REAP_STEPWISE_MIN_BYTES;
        if !large || self.shutting_down.load(Ordering::SeqCst) {
            return std::fs::remove_file(path);
        }
        let file = OpenOptions::new().write(true).open(path)?;
        std::fs::remove_file(path)?;
        let mut q = lock(&self.reap_queue);
        if q.len() < REAP_QUEUE_FILES_MAX {
            q.push_back(file);
            drop(q);
            self.reap_cv.notify_one();
        }
        // Else `file` drops here: its blocks are freed at once, as a plain unlink does.
        Ok(())
    }

    /// Removes a directory tree (a deleted partition's) and fsyncs its parent, its large files
    /// through [`Self::remove_file_stepwise`] first.
    pub fn remove_dir_stepwise(&self, dir: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                match self.remove_file_stepwise(&entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        crate::durable::remove_dir_all(dir)
    }

    /// Files unlinked and not yet wholly freed by the reaper.
    pub fn reap_backlog_files(&self) -> usize {
        lock(&self.reap_queue).len()
    }

    /// Number of descriptors currently held by the file cache.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Queues `log` for a sync as soon as possible.
    pub(crate) fn schedule_flush_now(&self, log: &Arc<Shared>) {
        if log.flush_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            log.flush_queued.store(false, Ordering::Release);
            let _ = log.flush_now();
            return;
        }
        lock(&self.queue).ready.push_back(Arc::clone(log));
        self.queue_cv.notify_one();
    }

    /// Arms a one-shot timer that syncs `log` after `delay`, unless one is armed already.
    pub(crate) fn schedule_flush_after(&self, log: &Arc<Shared>, delay: Duration) {
        if log.flush_timer_armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut q = lock(&self.queue);
        q.timed_seq += 1;
        let seq = q.timed_seq;
        q.timed.push(Reverse((Instant::now() + delay, seq)));
        q.timed_logs.insert(seq, Arc::downgrade(log));
        drop(q);
        self.queue_cv.notify_one();
    }
}

fn flusher_main(env: Weak<LogEnv>) {
    loop {
        let Some(env) = env.upgrade() else { return };
        let next = {
            let mut q = lock(&env.queue);
            loop {
                let now = Instant::now();
                while let Some(Reverse((due, seq))) = q.timed.peek().copied() {
                    if due > now {
                        break;
                    }
                    q.timed.pop();
                    if let Some(log) = q.timed_logs.remove(&seq).and_then(|w| w.upgrade()) {
                        log.flush_timer_armed.store(false, Ordering::Release);
                        if !log.flush_queued.swap(true, Ordering::AcqRel) {
                            q.ready.push_back(log);
                        }
                    }
                }
                if let Some(log) = q.ready.pop_front() {
                    break Some(log);
                }
                if env.shutting_down.load(Ordering::SeqCst) {
                    break None;
                }
                // Bounded wait so that a dropped env is noticed and timers are serviced.
                let wait = q
                    .timed
                    .peek()
                    .map(|Reverse((due, _))| due.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(500))
                    .min(Duration::from_millis(500));
                q = match env.queue_cv.wait_timeout(q, wait) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        };
        let Some(log) = next else { return };
        drop(env);
        // Cleared before syncing: an append that lands during the sync queues the log again.
        log.flush_queued.store(false, Ordering::Release);
        if let Err(e) = log.flush_now() {
            tracing::error!(dir = %log.dir.display(), error = %e, "log flush failed");
        }
    }
}

/// Frees the blocks of unlinked files in `REAP_STEP_BYTES` steps, `REAP_STEP_PAUSE` apart.
fn reaper_main(env: Weak<LogEnv>) {
    loop {
        let Some(strong) = env.upgrade() else { return };
        let next = {
            let mut q = lock(&strong.reap_queue);
            loop {
                if let Some(f) = q.pop_front() {
                    break Some(f);
                }
                if strong.shutting_down.load(Ordering::SeqCst) {
                    break None;
                }
                // Bounded so that a dropped env is noticed.
                q = match strong.reap_cv.wait_timeout(q, Duration::from_millis(500)) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        };
        let Some(file) = next else {
            // Shutting down: what is left is freed at once.
            lock(&strong.reap_queue).clear();
            return;
        };
        drop(strong);
        let mut len = file.metadata().map_or(0, |m| m.len());
        while len > 0 {
            // Cut to a step boundary first, then a whole step at a time.
            let cut = match len % REAP_STEP_BYTES {
                0 => REAP_STEP_BYTES,
                rest => rest,
            };
            len -= cut;
            if let Err(e) = file.set_len(len) {
                tracing::warn!(error = %e, "cannot cut an unlinked segment file; freeing it whole");
                break;
            }
            std::thread::sleep(REAP_STEP_PAUSE);
            if env
                .upgrade()
                .is_none_or(|e| e.shutting_down.load(Ordering::SeqCst))
            {
                break;
            }
        }
    }
}

/// LRU-capped cache of open segment files, keyed by path.
pub(crate) struct FileCache {
    open_files_max: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<PathBuf, (Arc<File>, u64)>,
    tick: u64,
    /// Bumped by every `forget`. A `get` opens outside the lock; if a forget ran meanwhile, the
    /// path may now name another file (the cleaner renames a cleaned segment over the old one),
    /// so the handle it opened is returned but not cached.
    forgets: u64,
}

impl FileCache {
    fn new(open_files_max: usize) -> FileCache {
        FileCache {
            open_files_max,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    /// Returns an open read-write handle for an existing file.
    pub(crate) fn get(&self, path: &Path) -> io::Result<Arc<File>> {
        let forgets_before = {
            let mut c = lock(&self.inner);
            c.tick += 1;
            let tick = c.tick;
            if let Some((f, used)) = c.map.get_mut(path) {
                *used = tick;
                return Ok(Arc::clone(f));
            }
            c.forgets
        };
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
        Ok(self.insert(path, file, Some(forgets_before)))
    }

    /// Creates (or truncates) a file and caches its handle.
    pub(crate) fn create(&self, path: &Path) -> io::Result<Arc<File>> {
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?,
        );
        self.forget(path);
        Ok(self.insert(path, file, None))
    }

    /// Caches `file` under `path`, unless a `forget` ran since `forgets_before` was read.
    fn insert(&self, path: &Path, file: Arc<File>, forgets_before: Option<u64>) -> Arc<File> {
        let mut c = lock(&self.inner);
        if forgets_before.is_some_and(|f| f != c.forgets) {
            return file;
        }
        c.tick += 1;
        let tick = c.tick;
        if let Some((existing, used)) = c.map.get_mut(path) {
            *used = tick;
            return Arc::clone(existing);
        }
        c.map.insert(path.to_path_buf(), (Arc::clone(&file), tick));
        if c.map.len() > self.open_files_max {
            // Evict the oldest ~1/16 at once so the O(n) selection is amortised over many misses.
            let evict_count = (self.open_files_max / 16).max(1).min(c.map.len() - 1);
            let mut ticks: Vec<u64> = c.map.values().map(|(_, t)| *t).collect();
            let (_, cutoff, _) = ticks.select_nth_unstable(evict_count - 1);
            let cutoff = *cutoff;
            c.map.retain(|_, (_, t)| *t > cutoff || *t == tick);
        }
        file
    }

    /// Drops the cached handle (before unlinking or replacing the file).
    pub(crate) fn forget(&self, path: &Path) {
        let mut c = lock(&self.inner);
        c.forgets += 1;
        c.map.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_deleted_file_frees_its_name_at_once_and_its_blocks_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let size = 5 * REAP_STEP_BYTES + 123;
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        // A second handle on the same inode shows what the reaper does to it.
        let watcher = File::open(&path).unwrap();
        let env = LogEnv::with_flushers(16, 1);
        env.remove_file_stepwise(&path).unwrap();
        assert!(!path.exists(), "the name goes at once");
        // A new file of the same name (a log restarted at the same offset) is not touched.
        std::fs::write(&path, b"new segment").unwrap();
        let mut lengths = vec![watcher.metadata().unwrap().len()];
        let deadline = Instant::now() + Duration::from_secs(10);
        while *lengths.last().unwrap() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            let len = watcher.metadata().unwrap().len();
            if Some(&len) != lengths.last() {
                lengths.push(len);
            }
        }
        assert_eq!(lengths.last(), Some(&0), "freed in the end: {lengths:?}");
        assert!(
            lengths.iter().any(|l| *l > 0 && *l < size),
            "cut in steps, not at once: {lengths:?}"
        );
        assert!(
            lengths[1..].iter().all(|l| l % REAP_STEP_BYTES == 0),
            "cut to step boundaries: {lengths:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new segment");
        assert_eq!(env.reap_backlog_files(), 0);
        env.shutdown();
    }

    #[test]
    fn a_small_deleted_file_is_simply_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let watcher = File::open(&path).unwrap();
        let env = LogEnv::with_flushers(16, 1);
        env.remove_file_stepwise(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(watcher.metadata().unwrap().len(), 4096);
        assert_eq!(env.reap_backlog_files(), 0);
        env.shutdown();
    }
}
