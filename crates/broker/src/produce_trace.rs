//! Where one produce request's time goes: read, decode, validate, append, the wait for the
//! group-commit sync (and the sync itself), the wait for the ISR, and the ack write.
//!
//! Owns: [`ProduceTrace`], a handful of `Instant`s and `Duration`s that ride with the request
//! (in its [`crate::Frame`]), and [`ProduceStepStats`], one histogram of relaxed atomics per
//! step, rendered on `/metrics` as `weir_produce_step_duration_seconds{step}`. Recording must
//! stay as cheap as the request metrics: no lock, no allocation, no lookup. A produce whose
//! ack took longer than `slow_produce_warn_ms` is logged at WARN with its breakdown and the
//! log events (rolls, checkpoints, retention deletes, ...) that ended while it waited, at most
//! once per [`SLOW_WARN_INTERVAL`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use weir_log::stats::{AtomicHistogram, SYNC_SECONDS_BUCKETS};
use weir_log::{HistogramSnapshot, SyncStats};

/// At most one slow-produce warning per this interval; the ones held back are counted in it.
pub const SLOW_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The steps of one produce, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceStep {
    /// First byte of the request frame read → whole frame buffered.
    Read,
    /// Frame buffered → produce handler entered (header and body decode, dispatch).
    Decode,
    /// Handler entered → every partition appended and registered for durability: validate and
    /// append below, plus lookups, locks and any wait for a CPU. With `decode`, `sync_wait`,
    /// `replicate` and `respond` it makes up `total`.
    Handle,
    /// Batch checks: sizes, CRC, offsets, timestamps (all partitions of the request).
    Validate,
    /// `Log::append` (all partitions): offset assignment and the write into the page cache.
    Append,
    /// Appended → durable callback fired: queueing for a flusher plus the sync.
    SyncWait,
    /// The group-commit sync (fdatasync) that made the records durable.
    Sync,
    /// Durable callback fired → the handler saw every partition acknowledged: the ISR wait
    /// (acks=all with followers) and the wake-up of the task that waits.
    Replicate,
    /// Every partition acknowledged → response encoded and written to the socket (includes
    /// waiting for earlier responses on the same connection, which are answered in order).
    Respond,
    /// First byte read → response written.
    Total,
}

impl ProduceStep {
    pub const ALL: [ProduceStep; 10] = [
        ProduceStep::Read,
        ProduceStep::Decode,
        ProduceStep::Handle,
        ProduceStep::Validate,
        ProduceStep::Append,
        ProduceStep::SyncWait,
        ProduceStep::Sync,
        ProduceStep::Replicate,
        ProduceStep::Respond,
        ProduceStep::Total,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProduceStep::Read => "read",
            ProduceStep::Decode => "decode",
            ProduceStep::Handle => "handle",
            ProduceStep::Validate => "validate",
            ProduceStep::Append => "append",
            ProduceStep::SyncWait => "sync_wait",
            ProduceStep::Sync => "sync",
            ProduceStep::Replicate => "replicate",
            ProduceStep::Respond => "respond",
            ProduceStep::Total => "total",
        }
    }
}

/// The broker's part of one produce's timings, filled in by the handler as the request goes.
/// `Copy` and fixed-size, so carrying it costs no allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProduceTrace {
    pub handler_started: Option<Instant>,
    pub validate: Duration,
    pub append: Duration,
    pub appended_at: Option<Instant>,
    /// The latest durable callback among the request's partitions.
    pub durable_at: Option<Instant>,
    /// The longest sync among those that made the partitions durable.
    pub sync: Duration,
    pub replicated_at: Option<Instant>,
    /// The response frame is encoded.
    pub encoded_at: Option<Instant>,
}

/// The server's part: when the frame's first byte arrived and when it was whole.
#[derive(Debug, Clone, Copy)]
pub struct FrameTiming {
    pub first_byte_at: Instant,
    pub complete_at: Instant,
}

/// One produce's steps, as durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDurations(pub [Duration; ProduceStep::ALL.len()]);

impl StepDurations {
    /// `written_at`: the response's last byte went to the socket.
    pub fn of(trace: &ProduceTrace, frame: &FrameTiming, written_at: Instant) -> StepDurations {
        let between = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let appended = trace.appended_at;
        // acks=0 and refused requests have no durable wait: their later steps start at append.
        let durable = trace.durable_at.or(appended);
        let replicated = trace.replicated_at.or(durable);
        StepDurations([
            frame
                .complete_at
                .saturating_duration_since(frame.first_byte_at),
            between(Some(frame.complete_at), trace.handler_started),
            between(trace.handler_started, appended),
            trace.validate,
            trace.append,
            between(appended, durable),
            trace.sync,
            between(durable, replicated),
            between(replicated, Some(written_at)),
            written_at.saturating_duration_since(frame.first_byte_at),
        ])
    }

    pub fn get(&self, step: ProduceStep) -> Duration {
        self.0[step as usize]
    }
}

/// Per-step histograms of every produce request answered, and the slow-produce warning.
#[derive(Debug)]
pub struct ProduceStepStats {
    steps: [AtomicHistogram<{ SYNC_SECONDS_BUCKETS.len() }>; ProduceStep::ALL.len()],
    /// Produces whose total exceeded the warning threshold (logged or not).
    pub slow: AtomicU64,
    /// Monotonic µs since `epoch` before which no warning is logged.
    next_warn_micros: AtomicU64,
    suppressed: AtomicU64,
    epoch: Instant,
}

impl Default for ProduceStepStats {
    fn default() -> Self {
        ProduceStepStats {
            steps: std::array::from_fn(|_| AtomicHistogram::new(&SYNC_SECONDS_BUCKETS)),
            slow: AtomicU64::new(0),
            next_warn_micros: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl ProduceStepStats {
    /// Records one answered produce. `slow_after`: the total above which it is logged at WARN
    /// (`None`: never), with the log events of `log_stats` that ended while it was in flight.
    pub fn record(
        &self,
        trace: &ProduceTrace,
        frame: &FrameTiming,
        written_at: Instant,
        slow_after: Option<Duration>,
        log_stats: &SyncStats,
    ) -> StepDurations {
        let d = StepDurations::of(trace, frame, written_at);
        for (h, took) in self.steps.iter().zip(d.0) {
            h.observe(took.as_secs_f64());
        }
        let total = d.get(ProduceStep::Total);
        if slow_after.is_some_and(|limit| total > limit) {
            self.slow.fetch_add(1, Relaxed);
            if let Some(suppressed) = self.may_warn(written_at) {
                warn_slow(&d, frame.first_byte_at, suppressed, log_stats);
            }
        }
        d
    }

    pub fn snapshot(&self, step: ProduceStep) -> HistogramSnapshot {
        self.steps[step as usize].snapshot()
    }

    /// `Some(held back since the last one)` if a warning may be logged at `now`.
    fn may_warn(&self, now: Instant) -> Option<u64> {
        let now_micros =
            u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(0);
        let next = self.next_warn_micros.load(Relaxed);
        let interval = u64::try_from(SLOW_WARN_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        if now_micros >= next
            && self
                .next_warn_micros
                .compare_exchange(next, now_micros + interval, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

fn warn_slow(d: &StepDurations, since: Instant, suppressed: u64, log_stats: &SyncStats) {
    let ms = |step| d.get(step).as_secs_f64() * 1e3;
    // Cold path (at most once a second): formatting here is fine.
    let events: Vec<String> = log_stats
        .recent_events(since)
        .iter()
        .map(|e| format!("{} {:.1} ms", e.event.name(), e.took.as_secs_f64() * 1e3))
        .collect();
    tracing::warn!(
        total_ms = ms(ProduceStep::Total),
        read_ms = ms(ProduceStep::Read),
        decode_ms = ms(ProduceStep::Decode),
        handle_ms = ms(ProduceStep::Handle),
        validate_ms = ms(ProduceStep::Validate),
        append_ms = ms(ProduceStep::Append),
        sync_wait_ms = ms(ProduceStep::SyncWait),
        sync_ms = ms(ProduceStep::Sync),
        replicate_ms = ms(ProduceStep::Replicate),
        respond_ms = ms(ProduceStep::Respond),
        log_events = %events.join(", "),
        suppressed,
        "slow produce (over slow_produce_warn_ms; log_events: the latest of each kind that ended \
         meanwhile, any partition; suppressed: slow produces not logged in the last second)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_taken_between_the_trace_marks() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let frame = FrameTiming {
            first_byte_at: t0,
            complete_at: at(1),
        };
        let trace = ProduceTrace {
            handler_started: Some(at(2)),
            validate: Duration::from_millis(1),
            append: Duration::from_millis(1),
            appended_at: Some(at(4)),
            durable_at: Some(at(14)),
            sync: Duration::from_millis(8),
            replicated_at: Some(at(15)),
            encoded_at: Some(at(15)),
        };
        let d = StepDurations::of(&trace, &frame, at(17));
        let ms = |s| d.get(s).as_millis();
        assert_eq!(ms(ProduceStep::Read), 1);
        assert_eq!(ms(ProduceStep::Decode), 1);
        assert_eq!(ms(ProduceStep::Handle), 2);
        assert_eq!(ms(ProduceStep::SyncWait), 10);
        assert_eq!(ms(ProduceStep::Sync), 8);
        assert_eq!(ms(ProduceStep::Replicate), 1);
        assert_eq!(ms(ProduceStep::Respond), 2);
        assert_eq!(ms(ProduceStep::Total), 17);
    }

    #[test]
    fn a_request_without_a_durable_wait_has_zero_wait_steps() {
        let t0 = Instant::now();
        let frame = FrameTiming {
            first_byte_at: t0,
            complete_at: t0,
        };
        let trace = ProduceTrace {
            appended_at: Some(t0 + Duration::from_millis(3)),
            ..Default::default()
        };
        let d = StepDurations::of(&trace, &frame, t0 + Duration::from_millis(5));
        assert_eq!(d.get(ProduceStep::SyncWait), Duration::ZERO);
        assert_eq!(d.get(ProduceStep::Replicate), Duration::ZERO);
        assert_eq!(d.get(ProduceStep::Total), Duration::from_millis(5));
    }

    #[test]
    fn slow_produces_are_counted_and_warnings_rate_limited() {
        let stats = ProduceStepStats::default();
        let log_stats = SyncStats::default();
        let t0 = Instant::now();
        let frame = FrameTiming {
            first_byte_at: t0,
            complete_at: t0,
        };
        let trace = ProduceTrace::default();
        let limit = Some(Duration::from_millis(50));
        stats.record(
            &trace,
            &frame,
            t0 + Duration::from_millis(10),
            limit,
            &log_stats,
        );
        assert_eq!(stats.slow.load(Relaxed), 0);
        for _ in 0..3 {
            stats.record(
                &trace,
                &frame,
                t0 + Duration::from_millis(60),
                limit,
                &log_stats,
            );
        }
        assert_eq!(stats.slow.load(Relaxed), 3);
        // The first was logged, the next two held back within the interval.
        assert_eq!(stats.suppressed.load(Relaxed), 2);
        assert_eq!(stats.snapshot(ProduceStep::Total).count, 4);
        stats.record(
            &trace,
            &frame,
            t0 + Duration::from_secs(5),
            None,
            &log_stats,
        );
        assert_eq!(stats.slow.load(Relaxed), 3, "no threshold, never slow");
    }
}
