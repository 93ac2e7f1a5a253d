//! The log cleaner threads: compaction of `compact` and `compact,delete` topics.
//!
//! Owns a fixed pool of [`Cleaner`]s (`log_cleaner_threads` of them, at least one, each with
//! `log_cleaner_dedupe_buffer_size / threads` bytes of key map and the I/O cap
//! `log_cleaner_io_max_bytes_per_second`) and the background threads that use them. A pass on
//! a log always holds one pooled cleaner, so however passes are started (the background
//! threads, or `weir topic compact` through [`Broker::compaction_status`]) at most
//! `threads` run at once and the cleaner memory stays bounded. It must never run a pass on
//! the async runtime's threads: passes do blocking file I/O.
//!
//! Each replica compacts its own log (as in Kafka): a follower appends its leader's batches
//! byte for byte and cleans what it has on its own schedule. Cleaned segments keep dense
//! offsets (see `weir_log::cleaner`), so followers fetching a cleaned range still get batches
//! that continue their log.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use weir_log::{Cleaner, CleanerStats};

use crate::Broker;

/// Lock that survives poisoning: a panicked pass must not stop every later one.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
use crate::config::BrokerConfig;
use crate::partition::Partition;

/// Smallest key map a cleaner gets, whatever the configured total.
const DEDUPE_BUFFER_BYTES_MIN: usize = 1024 * 1024;

#[derive(Default)]
struct Pool {
    idle: Vec<Cleaner>,
    stopping: bool,
}

/// The cleaner pool and its threads.
pub struct LogCleaners {
    pool: Mutex<Pool>,
    /// Signalled when a cleaner returns to the pool or on stop.
    returned: Condvar,
    /// Wakes the background threads early (stop).
    wake: Condvar,
    wake_lock: Mutex<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    backoff: Duration,
    background_threads: usize,
}

impl LogCleaners {
    pub fn new(config: &BrokerConfig) -> LogCleaners {
        let cleaners = config.log_cleaner_threads.max(1);
        let dedupe_bytes =
            (config.log_cleaner_dedupe_buffer_size / cleaners).max(DEDUPE_BUFFER_BYTES_MIN);
        let idle = (0..cleaners)
            .map(|_| Cleaner::new(dedupe_bytes, config.log_cleaner_io_max_bytes_per_second))
            .collect();
        LogCleaners {
            pool: Mutex::new(Pool {
                idle,
                stopping: false,
            }),
            returned: Condvar::new(),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            threads: Mutex::new(Vec::new()),
            backoff: Duration::from_millis(config.log_cleaner_backoff_ms.max(10)),
            background_threads: config.log_cleaner_threads,
        }
    }

    /// Starts the background threads (`log_cleaner_threads` of them).
    pub fn start(&self, broker: &Arc<Broker>) {
        let mut threads = lock(&self.threads);
        for i in 0..self.background_threads {
            let weak = Arc::downgrade(broker);
            let spawned = std::thread::Builder::new()
                .name(format!("log-cleaner-{i}"))
                .spawn(move || background(weak));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, "cannot start a log cleaner thread"),
            }
        }
    }

    /// Stops the threads after their current pass (a pass is not interrupted: it either swaps
    /// or leaves the old segments, and a later pass redoes it).
    pub fn stop(&self) {
        lock(&self.pool).stopping = true;
        self.returned.notify_all();
        {
            let _g = lock(&self.wake_lock);
            self.wake.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Takes a cleaner from the pool, waiting for one; `None` once stopping.
    fn take(&self) -> Option<Cleaner> {
        let mut pool = lock(&self.pool);
        loop {
            if pool.stopping {
                return None;
            }
            if let Some(c) = pool.idle.pop() {
                return Some(c);
            }
            pool = self.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, cleaner: Cleaner) {
        lock(&self.pool).idle.push(cleaner);
        self.returned.notify_one();
    }

    /// Sleeps for the backoff, or until stopped. False when stopping.
    fn idle_wait(&self) -> bool {
        let g = lock(&self.wake_lock);
        if lock(&self.pool).stopping {
            return false;
        }
        let _ = self.wake.wait_timeout(g, self.backoff);
        !lock(&self.pool).stopping
    }

    /// Runs one pass on `partition` with a pooled cleaner; `force` ignores the dirty ratio.
    fn clean_partition(
        &self,
        partition: &Partition,
        config: &weir_log::CompactionConfig,
        force: bool,
    ) -> bool {
        let Some(mut cleaner) = self.take() else {
            return false;
        };
        let started = std::time::Instant::now();
        match partition
            .log
            .clean(&mut cleaner, config, crate::now_ms(), force)
        {
            Ok(Some(r)) => tracing::info!(
                topic = %partition.topic, partition = partition.index,
                cleaned_to_offset = r.cleaned_to_offset, segments_before = r.segments_before,
                segments_after = r.segments_after, bytes_read = r.bytes_read,
                bytes_written = r.bytes_written, records_removed = r.records_removed,
                key_map_bytes = r.key_map_bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                "compacted log"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                topic = %partition.topic, partition = partition.index, error = %e,
                "compaction failed"
            ),
        }
        self.give_back(cleaner);
        true
    }
}

impl Broker {
    /// The cleaner state of each partition in `indexes` (in that order; `None` where this
    /// broker holds no log for it), after a compaction pass on each of them first when
    /// `compact_now` (whatever their dirty ratio; min.compaction.lag.ms still applies). A
    /// partition named twice is compacted once. `None` for an unknown topic.
    /// Blocking: call it off the async runtime.
    pub fn compaction_status(
        &self,
        topic: &str,
        indexes: &[i32],
        compact_now: bool,
    ) -> Option<Vec<Option<CleanerStats>>> {
        let t = self.topic(topic)?;
        let config = t.config.compaction_config();
        if compact_now {
            let wanted: std::collections::BTreeSet<i32> = indexes.iter().copied().collect();
            for p in wanted.iter().filter_map(|&i| t.partition(i)) {
                self.cleaners.clean_partition(p, &config, true);
            }
        }
        let now = crate::now_ms();
        Some(
            indexes
                .iter()
                .map(|&i| t.partition(i).map(|p| p.log.cleaner_stats(&config, now)))
                .collect(),
        )
    }
}

/// A background thread: passes over every compacted partition, then sleeps for the backoff.
/// Threads share the partitions; the per-log pass lock makes a second thread wait its turn,
/// and a log already cleaned is not dirty enough to be cleaned again.
fn background(broker: Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else { return };
        let partitions: Vec<(Arc<Partition>, weir_log::CompactionConfig)> = b
            .registry()
            .iter()
            .filter(|t| t.config.is_compacted())
            .flat_map(|t| {
                let config = t.config.compaction_config();
                t.partitions
                    .iter()
                    .map(move |p| (Arc::clone(p), config))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (p, config) in &partitions {
            if !b.cleaners.clean_partition(p, config, false) {
                return;
            }
        }
        let cleaners = Arc::clone(&b.cleaners);
        drop(b);
        if !cleaners.idle_wait() {
            return;
        }
    }
}
