//! Durability statistics of one [`crate::LogEnv`]: how long each group-commit
//! sync took and how many appends it acknowledged at once.
//!
//! Owns plain atomic counters only. The log must not know about any metrics
//! exposition format (the broker renders these as Prometheus histograms); and
//! recording must stay a few relaxed adds, since it runs on every sync.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

/// What the group-commit flushers of one environment did.
#[derive(Debug)]
pub struct SyncStats {
    /// Wall time of one flush's `fdatasync`s (and directory sync), in seconds.
    pub sync_seconds: AtomicHistogram<{ SYNC_SECONDS_BUCKETS.len() }>,
    /// Appends (durability waiters) that one sync completed: the group-commit batch.
    pub batch_appends: AtomicHistogram<{ BATCH_APPENDS_BUCKETS.len() }>,
    /// Syncs that failed (each poisons its log).
    pub sync_failures: AtomicU64,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            sync_seconds: AtomicHistogram::new(&SYNC_SECONDS_BUCKETS),
            batch_appends: AtomicHistogram::new(&BATCH_APPENDS_BUCKETS),
            sync_failures: AtomicU64::new(0),
        }
    }
}

impl SyncStats {
    pub(crate) fn record_sync(&self, took: Duration, appends_acknowledged: usize) {
        self.sync_seconds.observe(took.as_secs_f64());
        self.batch_appends.observe(appends_acknowledged as f64);
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
}
