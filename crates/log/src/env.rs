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

/// Shared per broker: capped open-fd cache + group-commit flusher thread(s).
pub struct LogEnv {
    pub(crate) files: FileCache,
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
        *lock(&env.threads) = threads;
        env
    }

    /// Stops the flushers after they drain already-queued syncs. Later syncs run inline.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.queue_cv.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    /// What the group-commit syncs of every log in this environment did.
    pub fn sync_stats(&self) -> &crate::stats::SyncStats {
        &self.stats
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
