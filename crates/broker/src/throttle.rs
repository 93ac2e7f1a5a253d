//! Replication throttles (Kafka's KIP-73): `leader.replication.throttled.rate`
//! and `follower.replication.throttled.rate` are dynamic broker configs in
//! bytes per second; a topic's `leader/follower.replication.throttled.replicas`
//! lists the replicas they apply to (`*`: all). Both sides are enforced:
//!
//! - Follower: a broker's replica fetchers together copy throttled replicas
//!   at no more than the follower rate (moves and catch-up), pacing
//!   themselves with [`Pacer`].
//! - Leader (Kafka's ReplicationQuotaManager on the leader): a leader serves
//!   the throttled replicas it leads to followers outside the ISR at no more
//!   than the leader rate: while the bytes it served them are ahead of the
//!   rate ([`Pacer::is_ahead`]), a follower fetch gets such partitions with
//!   their watermarks and no records ([`leader_withholds`]). Followers in the
//!   ISR are never throttled, so a throttle cannot hold back acks=all writes.

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

impl Pacer {
    /// Whether the bytes recorded so far are ahead of the rate at `now_ms`:
    /// Kafka's "quota exceeded", after which a leader withholds throttled data.
    pub fn is_ahead(&self, now_ms: u64) -> bool {
        self.free_at_ms > now_ms
    }
}

/// Whether a leader answers a follower's fetch of one partition without
/// records (Kafka's `shouldLeaderThrottle`): the leader rate is set, the
/// partition's leader replica is in the topic's
/// `leader.replication.throttled.replicas`, the follower is not in the ISR,
/// and the leader's throttled bytes are ahead of the rate.
pub fn leader_withholds(
    rate_bytes_per_s: Option<u64>,
    listed: bool,
    follower_in_isr: bool,
    ahead: bool,
) -> bool {
    rate_bytes_per_s.is_some() && listed && !follower_in_isr && ahead
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

    /// A leader serving a fetch whenever it is not ahead, `chunk` bytes at a
    /// time, polled every `poll_ms`: the bytes it serves in `duration_ms`.
    fn serve_while_not_ahead(rate: u64, chunk: u64, poll_ms: u64, duration_ms: u64) -> u64 {
        let mut pacer = Pacer::default();
        let (mut now, mut served) = (0u64, 0u64);
        while now < duration_ms {
            if !leader_withholds(Some(rate), true, false, pacer.is_ahead(now)) {
                served += chunk;
                pacer.record(chunk, rate, now);
            }
            now += poll_ms;
        }
        served
    }

    #[test]
    fn a_leader_serves_throttled_followers_at_the_leader_rate() {
        for (chunk, poll_ms) in [(64 * 1024, 5), (1 << 20, 50), (8 << 20, 500)] {
            let served = serve_while_not_ahead(2 << 20, chunk, poll_ms, 30_000);
            let rate = served as f64 / 30.0;
            // One burst second and one chunk over at most.
            let cap = (2 << 20) as f64 + (2 << 20) as f64 / 30.0 + chunk as f64 / 30.0;
            assert!(rate <= cap, "chunk {chunk}: {rate} B/s > {cap}");
            assert!(rate >= (2 << 20) as f64 * 0.9, "chunk {chunk}: {rate} B/s");
        }
    }

    #[test]
    fn a_leader_withholds_only_listed_partitions_from_followers_outside_the_isr() {
        // Ahead of the rate: only a listed partition to an out-of-sync follower waits.
        assert!(leader_withholds(Some(1), true, false, true));
        assert!(!leader_withholds(Some(1), true, true, true), "ISR follower");
        assert!(!leader_withholds(Some(1), false, false, true), "not listed");
        assert!(!leader_withholds(None, true, false, true), "no leader rate");
        assert!(
            !leader_withholds(Some(1), true, false, false),
            "within the rate"
        );
        let mut pacer = Pacer::default();
        assert!(!pacer.is_ahead(0));
        pacer.record(2_000, 1_000, 10_000);
        assert!(pacer.is_ahead(10_000));
        assert!(pacer.is_ahead(10_999));
        assert!(!pacer.is_ahead(11_000));
    }
}
