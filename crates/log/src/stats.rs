//! Durability statistics of one [`crate::LogEnv`]: how long each group-commit
//! sync took and how many appends it acknowledged at once, and how long each
//! piece of background disk work took (segment rolls, index writes, checkpoints,
//! recovery-point stores, retention deletes), with the end of the latest one of
//! each kind, so a slow produce can be set beside what the log did meanwhile.
//!
//! Owns plain atomic counters only. The log must not know about any metrics
//! exposition format (the broker renders these as Prometheus histograms); and
//! recording must stay a few relaxed adds, since it runs on every sync.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Upper bounds of the fsync latency buckets, in seconds: from 50 µs (a
/// battery-backed cache or tmpfs) to 10 s (a device in trouble).
pub const SYNC_SECONDS_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Upper bounds of the group-commit batch size buckets, in appends acknowledged by one sync.
pub const BATCH_APPENDS_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A histogram over fixed bucket bounds, made of relaxed atomics (no lock).
#[derive(Debug)]
pub struct AtomicHistogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Per bucket (not cumulative), N bounds then +Inf.
    counts: Box<[AtomicU64]>,
    /// Sum of observed values, in the unit's millionths (µs for seconds), so that
    /// it can be an integer atomic.
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, count in this bucket alone); the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl<const N: usize> AtomicHistogram<N> {
    pub fn new(bounds: &'static [f64; N]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Relaxed);
        }
        // Float to int saturates; negative values (none are observed) become 0.
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// Disk work the log does besides appending and syncing. Each can delay appends (those done
/// under the append lock) or the next sync (those that make the journal commit more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// A segment roll under the append lock: producer snapshot, sealed index files, new file.
    Roll,
    /// Writing a sealed segment's `.index`/`.timeindex` (part of a roll).
    IndexWrite,
    /// Replacing the log checkpoint file (write, fsync, rename, directory fsync).
    Checkpoint,
    /// A recovery-point store after a sync (`.rpindex` append, index syncs, checkpoint).
    RecoveryPoint,
    /// Retention or delete-records removing whole segments (checkpoint and unlinks).
    RetentionDelete,
}

impl LogEvent {
    pub const ALL: [LogEvent; 5] = [
        LogEvent::Roll,
        LogEvent::IndexWrite,
        LogEvent::Checkpoint,
        LogEvent::RecoveryPoint,
        LogEvent::RetentionDelete,
    ];

    /// The label value in metrics and log lines.
    pub fn name(self) -> &'static str {
        match self {
            LogEvent::Roll => "roll",
            LogEvent::IndexWrite => "index_write",
            LogEvent::Checkpoint => "checkpoint",
            LogEvent::RecoveryPoint => "recovery_point",
            LogEvent::RetentionDelete => "retention_delete",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// One kind of [`LogEvent`]: a duration histogram and the latest occurrence.
#[derive(Debug)]
pub struct EventStats {
    pub seconds: AtomicHistogram<{ SYNC_SECONDS_BUCKETS.len() }>,
    /// When the latest one ended, in µs since the environment was made (0: never).
    last_end_micros: AtomicU64,
    /// How long the latest one took, in µs.
    last_took_micros: AtomicU64,
}

impl EventStats {
    fn new() -> EventStats {
        EventStats {
            seconds: AtomicHistogram::new(&SYNC_SECONDS_BUCKETS),
            last_end_micros: AtomicU64::new(0),
            last_took_micros: AtomicU64::new(0),
        }
    }
}

/// The latest event of one kind, as [`SyncStats::recent_events`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentEvent {
    pub event: LogEvent,
    pub took: Duration,
    /// When it ended.
    pub ended_at: Instant,
}

/// What the group-commit flushers of one environment did.
#[derive(Debug)]
pub struct SyncStats {
    /// Wall time of one flush's `fdatasync`s (and directory sync), in seconds.
    pub sync_seconds: AtomicHistogram<{ SYNC_SECONDS_BUCKETS.len() }>,
    /// Appends (durability waiters) that one sync completed: the group-commit batch.
    pub batch_appends: AtomicHistogram<{ BATCH_APPENDS_BUCKETS.len() }>,
    /// Syncs that failed (each poisons its log).
    pub sync_failures: AtomicU64,
    /// Per [`LogEvent`] kind, indexed by `LogEvent::slot`.
    events: [EventStats; LogEvent::ALL.len()],
    /// The zero of the `last_end_micros` clocks.
    epoch: Instant,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            sync_seconds: AtomicHistogram::new(&SYNC_SECONDS_BUCKETS),
            batch_appends: AtomicHistogram::new(&BATCH_APPENDS_BUCKETS),
            sync_failures: AtomicU64::new(0),
            events: std::array::from_fn(|_| EventStats::new()),
            epoch: Instant::now(),
        }
    }
}

impl SyncStats {
    pub(crate) fn record_sync(&self, took: Duration, appends_acknowledged: usize) {
        self.sync_seconds.observe(took.as_secs_f64());
        self.batch_appends.observe(appends_acknowledged as f64);
    }

    /// Records one event that started at `started` and ended now; a few relaxed stores. Events
    /// over 10 ms are also logged at debug level: those are the ones that show in an ack tail.
    pub(crate) fn record_event(&self, event: LogEvent, started: Instant) {
        let now = Instant::now();
        let took = now.saturating_duration_since(started);
        let e = &self.events[event.slot()];
        e.seconds.observe(took.as_secs_f64());
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        e.last_took_micros.store(micros(took), Relaxed);
        // +1 so that an event ending in the first microsecond is not taken for "never".
        e.last_end_micros.store(
            micros(now.saturating_duration_since(self.epoch)) + 1,
            Relaxed,
        );
        if took >= Duration::from_millis(10) {
            tracing::debug!(
                event = event.name(),
                took_ms = took.as_secs_f64() * 1e3,
                "slow log event"
            );
        }
    }

    /// The duration histogram of one event kind.
    pub fn event_seconds(&self, event: LogEvent) -> HistogramSnapshot {
        self.events[event.slot()].seconds.snapshot()
    }

    /// The latest event of each kind that ended at or after `since` (any partition of this
    /// environment). The two stores of an event are not atomic together: a racing event may
    /// pair one's end with the other's duration, which is good enough for a diagnosis.
    pub fn recent_events(&self, since: Instant) -> Vec<RecentEvent> {
        LogEvent::ALL
            .into_iter()
            .filter_map(|event| {
                let e = &self.events[event.slot()];
                let end = e.last_end_micros.load(Relaxed);
                if end == 0 {
                    return None;
                }
                let ended_at = self.epoch + Duration::from_micros(end - 1);
                (ended_at >= since).then(|| RecentEvent {
                    event,
                    took: Duration::from_micros(e.last_took_micros.load(Relaxed)),
                    ended_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_lands_in_one_bucket() {
        let stats = SyncStats::default();
        stats.record_sync(Duration::from_micros(30), 1);
        stats.record_sync(Duration::from_millis(3), 5);
        stats.record_sync(Duration::from_secs(20), 5000);
        let s = stats.sync_seconds.snapshot();
        assert_eq!(s.count, 3);
        assert!((s.sum - 20.00303).abs() < 1e-6, "{}", s.sum);
        assert_eq!(s.buckets.first(), Some(&(0.00005, 1)));
        assert_eq!(
            s.buckets.iter().find(|(b, _)| *b == 0.005),
            Some(&(0.005, 1))
        );
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        let b = stats.batch_appends.snapshot();
        assert_eq!(b.count, 3);
        assert_eq!(b.sum, 5006.0);
        assert_eq!(b.buckets.first(), Some(&(1.0, 1)));
        assert_eq!(b.buckets.iter().find(|(u, _)| *u == 8.0), Some(&(8.0, 1)));
        assert_eq!(b.buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn events_are_counted_per_kind_and_the_latest_is_reported() {
        let stats = SyncStats::default();
        let before = Instant::now();
        assert!(stats.recent_events(stats.epoch).is_empty());
        // Ends are kept to the microsecond (rounded down): events must end clearly after `before`.
        std::thread::sleep(Duration::from_millis(1));
        stats.record_event(LogEvent::Roll, Instant::now() - Duration::from_millis(3));
        stats.record_event(LogEvent::RetentionDelete, Instant::now());
        assert_eq!(stats.event_seconds(LogEvent::Roll).count, 1);
        assert_eq!(stats.event_seconds(LogEvent::Checkpoint).count, 0);
        let recent = stats.recent_events(before);
        let kinds: Vec<_> = recent.iter().map(|r| r.event).collect();
        assert_eq!(kinds, vec![LogEvent::Roll, LogEvent::RetentionDelete]);
        assert!(recent[0].took >= Duration::from_millis(3), "{recent:?}");
        assert!(
            stats
                .recent_events(Instant::now() + Duration::from_secs(1))
                .is_empty()
        );
    }
}
