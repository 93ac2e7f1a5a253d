//! What the console remembers between requests: recent throughput (for the
//! live chart and the topics list's rates) and each group's lag over the last
//! hour (for the lag chart). Sans I/O: the sampler task in `mod.rs` reads the
//! broker and hands readings in with their time; tests hand in their own.
//!
//! Owns: the rings and their bounds. Memory is fixed by the constants below,
//! whatever the number of groups or the uptime: it must never grow with
//! either.

use std::collections::{BTreeMap, VecDeque};

use weir_broker::admin_view::TrafficCounters;

/// Throughput readings kept: at one per [`THROUGHPUT_SAMPLE_MS`], five minutes.
pub const THROUGHPUT_SAMPLES_MAX: usize = 150;
pub const THROUGHPUT_SAMPLE_MS: u64 = 2_000;
/// Lag readings kept per group: one per [`LAG_SAMPLE_MS`] over an hour.
pub const LAG_SAMPLE_MS: u64 = 10_000;
pub const LAG_SAMPLES_MAX: usize = 360;
/// Groups whose lag is tracked at once; further groups are not charted (their
/// page says so) until a tracked one disappears.
pub const LAG_SERIES_MAX: usize = 50;

/// A throughput point between two readings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RatePoint {
    pub t_ms: i64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub records_in_per_s: f64,
}

/// Per-second rates from two counter readings `elapsed_ms` apart. A counter
/// that went down (never, short of a restart) gives 0 rather than nonsense.
fn rates(before: &TrafficCounters, after: &TrafficCounters, elapsed_ms: i64) -> (f64, f64, f64) {
    if elapsed_ms <= 0 {
        return (0.0, 0.0, 0.0);
    }
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1000.0 / elapsed_ms as f64;
    (
        per_s(before.bytes_in, after.bytes_in),
        per_s(before.bytes_out, after.bytes_out),
        per_s(before.records_in, after.records_in),
    )
}

/// Readings of the broker's traffic counters.
#[derive(Debug, Default)]
pub struct ThroughputHistory {
    /// (time in ms since the epoch, totals) oldest first, at most
    /// [`THROUGHPUT_SAMPLES_MAX`] + 1 (n points need n + 1 readings).
    totals: VecDeque<(i64, TrafficCounters)>,
    /// The last two per-topic readings, for each topic's current rate. Bounded
    /// by the topics that exist, which the cluster bounds.
    topics_before: Option<(i64, BTreeMap<String, TrafficCounters>)>,
    topics_last: Option<(i64, BTreeMap<String, TrafficCounters>)>,
}

impl ThroughputHistory {
    pub fn record(
        &mut self,
        t_ms: i64,
        total: TrafficCounters,
        topics: BTreeMap<String, TrafficCounters>,
    ) {
        if self.totals.len() > THROUGHPUT_SAMPLES_MAX {
            self.totals.pop_front();
        }
        self.totals.push_back((t_ms, total));
        self.topics_before = self.topics_last.take();
        self.topics_last = Some((t_ms, topics));
    }

    /// The rates between consecutive readings, oldest first.
    pub fn points(&self) -> Vec<RatePoint> {
        self.totals
            .iter()
            .zip(self.totals.iter().skip(1))
            .map(|((t0, a), (t1, b))| {
                let (bytes_in_per_s, bytes_out_per_s, records_in_per_s) = rates(a, b, t1 - t0);
                RatePoint {
                    t_ms: *t1,
                    bytes_in_per_s,
                    bytes_out_per_s,
                    records_in_per_s,
                }
            })
            .collect()
    }

    /// A topic's bytes in and out per second over the last sampling period;
    /// `None` before two readings, or for a topic not in both.
    pub fn topic_rates(&self, topic: &str) -> Option<(f64, f64)> {
        let (t0, before) = self.topics_before.as_ref()?;
        let (t1, last) = self.topics_last.as_ref()?;
        let (bytes_in, bytes_out, _) = rates(before.get(topic)?, last.get(topic)?, t1 - t0);
        Some((bytes_in, bytes_out))
    }
}

/// Each tracked group's total lag over the last hour.
#[derive(Debug, Default)]
pub struct LagHistory {
    /// Group id → (time in ms, total lag), oldest first, at most
    /// [`LAG_SAMPLES_MAX`] each; at most [`LAG_SERIES_MAX`] groups.
    series: BTreeMap<String, VecDeque<(i64, i64)>>,
}

impl LagHistory {
    /// One reading of every group's lag. Groups tracked already get a point;
    /// new ones are taken on while there is room; a series whose newest point
    /// is over an hour old (its group is gone) is dropped, freeing its room.
    pub fn record(&mut self, t_ms: i64, lags: &[(String, i64)]) {
        let window_ms = (LAG_SAMPLE_MS as i64) * (LAG_SAMPLES_MAX as i64);
        self.series
            .retain(|_, points| points.back().is_some_and(|(t, _)| t_ms - t <= window_ms));
        for (group, lag) in lags {
            if !self.series.contains_key(group) && self.series.len() >= LAG_SERIES_MAX {
                continue;
            }
            let points = self.series.entry(group.clone()).or_default();
            if points.len() >= LAG_SAMPLES_MAX {
                points.pop_front();
            }
            points.push_back((t_ms, *lag));
        }
    }

    /// A group's points, oldest first; `None` when it is not tracked.
    pub fn points(&self, group: &str) -> Option<Vec<(i64, i64)>> {
        self.series.get(group).map(|p| p.iter().copied().collect())
    }

    pub fn tracked(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(bytes_in: u64, bytes_out: u64, records_in: u64) -> TrafficCounters {
        TrafficCounters {
            bytes_in,
            records_in,
            bytes_out,
        }
    }

    #[test]
    fn throughput_points_are_rates_between_readings() {
        let mut h = ThroughputHistory::default();
        assert!(h.points().is_empty());
        h.record(0, counters(0, 0, 0), BTreeMap::new());
        assert!(h.points().is_empty(), "one reading is no rate yet");
        h.record(2_000, counters(4_000, 1_000, 20), BTreeMap::new());
        let p = h.points();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].t_ms, 2_000);
        assert_eq!(p[0].bytes_in_per_s, 2_000.0);
        assert_eq!(p[0].bytes_out_per_s, 500.0);
        assert_eq!(p[0].records_in_per_s, 10.0);
    }

    #[test]
    fn throughput_ring_is_bounded() {
        let mut h = ThroughputHistory::default();
        for i in 0..(THROUGHPUT_SAMPLES_MAX as u64 * 3) {
            h.record(i as i64 * 2_000, counters(i * 10, 0, i), BTreeMap::new());
        }
        assert_eq!(h.points().len(), THROUGHPUT_SAMPLES_MAX);
        assert!(h.points().iter().all(|p| p.bytes_in_per_s == 5.0));
    }

    #[test]
    fn counters_going_backwards_give_zero_not_nonsense() {
        let mut h = ThroughputHistory::default();
        h.record(0, counters(100, 100, 100), BTreeMap::new());
        h.record(1_000, counters(0, 0, 0), BTreeMap::new());
        assert_eq!(h.points()[0].bytes_in_per_s, 0.0);
    }

    #[test]
    fn topic_rates_come_from_the_last_two_readings() {
        let mut h = ThroughputHistory::default();
        let topics = |n: u64| BTreeMap::from([("t".to_string(), counters(n, n / 2, 0))]);
        h.record(0, TrafficCounters::default(), topics(0));
        assert_eq!(h.topic_rates("t"), None);
        h.record(1_000, TrafficCounters::default(), topics(1_000));
        h.record(3_000, TrafficCounters::default(), topics(5_000));
        assert_eq!(h.topic_rates("t"), Some((2_000.0, 1_000.0)));
        assert_eq!(h.topic_rates("other"), None);
    }

    #[test]
    fn lag_series_are_capped_in_count_and_length() {
        let mut h = LagHistory::default();
        let lags: Vec<(String, i64)> = (0..LAG_SERIES_MAX + 10)
            .map(|i| (format!("g{i:03}"), i as i64))
            .collect();
        for step in 0..(LAG_SAMPLES_MAX + 5) {
            h.record(step as i64 * LAG_SAMPLE_MS as i64, &lags);
        }
        assert_eq!(h.tracked(), LAG_SERIES_MAX);
        assert_eq!(h.points("g000").unwrap().len(), LAG_SAMPLES_MAX);
        assert_eq!(h.points(&format!("g{:03}", LAG_SERIES_MAX + 5)), None);
    }

    #[test]
    fn a_vanished_group_frees_its_series_after_the_window() {
        let mut h = LagHistory::default();
        let full: Vec<(String, i64)> = (0..LAG_SERIES_MAX).map(|i| (format!("g{i}"), 1)).collect();
        h.record(0, &full);
        let newcomer = vec![("late".to_string(), 5)];
        h.record(1_000, &newcomer);
        assert_eq!(
            h.points("late"),
            None,
            "no room while the others are recent"
        );
        let hour_ms = LAG_SAMPLE_MS as i64 * LAG_SAMPLES_MAX as i64;
        h.record(hour_ms + 1, &newcomer);
        assert_eq!(h.points("late"), Some(vec![(hour_ms + 1, 5)]));
        assert_eq!(h.tracked(), 1);
    }
}
