//! Replication throttles (Kafka's KIP-73): `leader.replication.throttled.rate`
//! and `follower.replication.throttled.rate` are dynamic broker configs in
//! bytes per second; a topic's `leader/follower.replication.throttled.replicas`
//! lists the replicas they apply to (`*`: all). Weir enforces the follower
//! side: a broker's replica fetchers together copy throttled replicas at no
//! more than the follower rate (moves and catch-up), pacing themselves with
//! [`Pacer`]. The leader-side rate is accepted and stored, not enforced.

/// The rate configs, broker-level (per broker or cluster-wide default).
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const RATE_CONFIG_NAMES: &[&str] = &[LEADER_RATE, FOLLOWER_RATE];

/// The longest one call asks to wait, so a rate lowered to a trickle after a
/// big fetch does not park a fetcher for minutes (it sees a raised rate, or a
/// removed throttle, within this); the debt carries over. Fetchers also ask
/// a throttled partition for at most one second of bytes per round.
pub const PACE_WAIT_MS_MAX: u64 = 10_000;

/// Paces bytes to a rate, sans I/O: each batch of bytes copied pushes the
/// moment the next may start by `bytes / rate`; a caller waits until then.
/// Idle time is not saved up beyond one second of bytes (the burst).
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the bytes recorded so far have been "paid for" at the rate.
    free_at_ms: u64,
}

impl Pacer {
    /// Records `bytes` copied at `now_ms` under `rate_bytes_per_s` and
    /// returns how long to wait (ms, at most [`PACE_WAIT_MS_MAX`]) before
    /// copying more.
    pub fn record(&mut self, bytes: u64, rate_bytes_per_s: u64, now_ms: u64) -> u64 {
        let rate = rate_bytes_per_s.max(1);
        const BURST_MS: u64 = 1_000;
        let start = self.free_at_ms.max(now_ms.saturating_sub(BURST_MS));
        let cost_ms = bytes.saturating_mul(1_000) / rate;
        self.free_at_ms = start.saturating_add(cost_ms);
        self.free_at_ms.saturating_sub(now_ms).min(PACE_WAIT_MS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `chunk` bytes whenever allowed for `duration_ms` and returns
    /// the bytes copied.
    fn simulate(rate: u64, chunk: u64, duration_ms: u64) -> u64 {
        let mut pacer = Pacer::default();
        let (mut now, mut copied) = (0u64, 0u64);
        while now < duration_ms {
            copied += chunk;
            let wait = pacer.record(chunk, rate, now);
            now += wait.max(1);
        }
        copied
    }

    #[test]
    fn the_average_rate_stays_at_the_cap_whatever_the_chunk_size() {
        for chunk in [1_000, 64 * 1024, 1 << 20] {
            let copied = simulate(1 << 20, chunk, 20_000);
            let rate = copied as f64 / 20.0;
            // Within the first second's burst plus one chunk of the cap.
            assert!(
                rate <= (1 << 20) as f64 * 1.06 + chunk as f64 / 20.0,
                "chunk {chunk}: {rate} B/s"
            );
            assert!(rate >= (1 << 20) as f64 * 0.9, "chunk {chunk}: {rate} B/s");
        }
    }

    #[test]
    fn idle_time_saves_up_at_most_one_second() {
        let mut pacer = Pacer::default();
        // Idle for a minute, then 3 s worth of bytes at once: 2 s to wait.
        assert_eq!(pacer.record(3_000, 1_000, 60_000), 2_000);
        assert_eq!(pacer.free_at_ms, 59_000 + 3_000);
        // A huge debt waits at most PACE_WAIT_MS_MAX per call.
        assert_eq!(pacer.record(1 << 30, 1_000, 60_000), PACE_WAIT_MS_MAX);
    }
}
