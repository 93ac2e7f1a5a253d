//! Retry pacing: exponential backoff with jitter, from the `backon` crate.
//!
//! A fixed pause makes every client that lost its broker come back at the
//! same instant; doubling spreads the load while the broker restarts, and
//! jitter keeps clients that failed together from retrying together. The
//! policy is bounded twice: by a number of retries and by the total time
//! spent sleeping, so a caller always gives up in a known time.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// How to space retries. Build one [`Backoff`] per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause.
    pub initial_backoff_ms: u64,
    /// No pause is longer than this.
    pub max_backoff_ms: u64,
    /// Retries after the first attempt; 0 disables retrying.
    pub retries_max: usize,
    /// Pauses of one operation add up to at most this.
    pub total_backoff_ms_max: u64,
}

impl Default for RetryPolicy {
    /// Kafka's clients start at retry.backoff.ms=100 and cap at
    /// retry.backoff.max.ms=1000; six retries then sleep about 4 s in all.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            retries_max: 6,
            total_backoff_ms_max: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The pauses of one operation: `None` once the budget is spent.
    pub fn backoff(&self) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_backoff_ms.max(1)))
            .with_max_delay(Duration::from_millis(
                self.max_backoff_ms.max(self.initial_backoff_ms).max(1),
            ))
            .with_factor(2.0)
            .with_max_times(self.retries_max)
            .with_total_delay(Some(Duration::from_millis(self.total_backoff_ms_max)))
            .with_jitter();
        Backoff {
            inner: Box::new(builder.build()),
            retries: 0,
        }
    }
}

/// The pauses left for one operation.
pub struct Backoff {
    inner: Box<dyn Iterator<Item = Duration> + Send>,
    retries: usize,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("retries", &self.retries)
            .finish()
    }
}

impl Backoff {
    /// The next pause, or `None` when no retry is left.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.inner.next()?;
        self.retries += 1;
        Some(delay)
    }

    /// Sleeps for the next pause; `false` (without sleeping) when no retry is left.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }

    /// Retries taken so far.
    pub fn retries(&self) -> usize {
        self.retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_stay_under_the_cap_and_run_out() {
        let policy = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 800,
            retries_max: 5,
            total_backoff_ms_max: 60_000,
        };
        let pauses: Vec<Duration> = std::iter::from_fn({
            let mut b = policy.backoff();
            move || b.next_delay()
        })
        .collect();
        assert_eq!(pauses.len(), 5, "{pauses:?}");
        // Jitter adds up to one base delay: pause n lies in [base, 2 * base].
        for (i, pause) in pauses.iter().enumerate() {
            let base = (100u64 << i).min(800);
            let ms = pause.as_millis() as u64;
            assert!(
                ms >= base && ms <= 2 * base,
                "pause {i} = {ms} ms, base {base}"
            );
        }
    }

    #[test]
    fn the_total_budget_ends_retries_early() {
        let policy = RetryPolicy {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 1_000,
            retries_max: 100,
            total_backoff_ms_max: 5_000,
        };
        let mut b = policy.backoff();
        let mut total = Duration::ZERO;
        while let Some(d) = b.next_delay() {
            total += d;
        }
        assert!(b.retries() < 100);
        assert!(total <= Duration::from_millis(5_000 + 2_000), "{total:?}");
    }

    #[test]
    fn jitter_spreads_clients_that_failed_together() {
        let policy = RetryPolicy::default();
        let firsts: std::collections::BTreeSet<u128> = (0..20)
            .filter_map(|_| policy.backoff().next_delay())
            .map(|d| d.as_micros())
            .collect();
        assert!(
            firsts.len() > 1,
            "every client would retry at once: {firsts:?}"
        );
    }
}
