//! Rate limiting of the warnings logged when the server refuses something (a
//! connection over `connections_max`, an oversized or malformed frame). A
//! misbehaving client repeats the same thing in a tight loop; the log must
//! say what happens without being flooded by it.
//!
//! Owns: one limiter per kind of refusal, a pair of atomics. No lock, no
//! allocation: a refusal can arrive thousands of times a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one warning of a kind per this many milliseconds.
pub const WARN_INTERVAL_MS: u64 = 10_000;

/// Lets one warning through per [`WARN_INTERVAL_MS`], and counts the ones it holds back.
#[derive(Debug, Default)]
pub struct WarnLimit {
    /// Wall-clock ms when the next warning may be logged (0: at once).
    next_ms: AtomicU64,
    /// Refusals not logged since the last warning.
    suppressed: AtomicU64,
}

impl WarnLimit {
    pub const fn new() -> WarnLimit {
        WarnLimit {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning should be logged now, `n` being how many were
    /// held back since the last one; `None` when this one is held back.
    pub fn check(&self) -> Option<u64> {
        self.check_at(now_ms())
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        // Only the caller that moves the deadline logs; racing callers count as held back.
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms + WARN_INTERVAL_MS, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_and_the_rest_counted() {
        let limit = WarnLimit::new();
        let t0 = 1_000_000;
        assert_eq!(limit.check_at(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(limit.check_at(t0 + i), None);
        }
        assert_eq!(limit.check_at(t0 + WARN_INTERVAL_MS - 1), None);
        assert_eq!(limit.check_at(t0 + WARN_INTERVAL_MS), Some(501));
        assert_eq!(limit.check_at(t0 + WARN_INTERVAL_MS + 1), None);
        assert_eq!(limit.check_at(t0 + 3 * WARN_INTERVAL_MS), Some(1));
    }
}
