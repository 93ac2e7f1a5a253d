//! Rate limiting for the warning logged when a request is refused (an api or
//! version this broker doesn't serve). A misconfigured client retries the
//! same request in a loop, and a fuzzer sends every key and version: the log
//! must name each kind of refusal without being flooded by either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning per (api key, version) in this window.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Distinct (api key, version) pairs remembered at once. Past this, entries
/// older than the window are dropped; if all are recent, further new pairs
/// are not logged until some age out (memory stays bounded whatever is sent).
pub const REFUSAL_KINDS_MAX: usize = 1024;

#[derive(Default)]
pub struct RefusalLog {
    last_logged: Mutex<HashMap<(i16, i16), Instant>>,
}

impl RefusalLog {
    /// Whether a refusal of `api_key` at `version` should be logged now;
    /// records it if so.
    pub fn should_log(&self, api_key: i16, version: i16) -> bool {
        self.should_log_at(api_key, version, Instant::now())
    }

    fn should_log_at(&self, api_key: i16, version: i16, now: Instant) -> bool {
        // The map holds plain data, consistent after any panic: carry on.
        let mut last_logged = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
        let recent = |at: &Instant| now.saturating_duration_since(*at) < REFUSAL_LOG_INTERVAL;
        if let Some(at) = last_logged.get(&(api_key, version)) {
            if recent(at) {
                return false;
            }
        } else if last_logged.len() >= REFUSAL_KINDS_MAX {
            last_logged.retain(|_, at| recent(at));
            if last_logged.len() >= REFUSAL_KINDS_MAX {
                return false;
            }
        }
        last_logged.insert((api_key, version), now);
        debug_assert!(last_logged.len() <= REFUSAL_KINDS_MAX);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_each_kind_once_per_interval() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert!(log.should_log_at(0, 2, t0));
        assert!(!log.should_log_at(0, 2, t0 + Duration::from_secs(59)));
        assert!(
            log.should_log_at(0, 1, t0),
            "another version is another kind"
        );
        assert!(log.should_log_at(1, 2, t0), "another api is another kind");
        assert!(log.should_log_at(0, 2, t0 + REFUSAL_LOG_INTERVAL));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_kinds() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let mut logged = 0;
        for key in 0..100i16 {
            for version in 0..100i16 {
                logged += usize::from(log.should_log_at(key, version, t0));
            }
        }
        assert_eq!(logged, REFUSAL_KINDS_MAX);
        assert!(log.last_logged.lock().unwrap().len() <= REFUSAL_KINDS_MAX);
        // Once the window has passed, old kinds make room for new ones.
        assert!(log.should_log_at(5000, 0, t0 + REFUSAL_LOG_INTERVAL));
        assert!(log.last_logged.lock().unwrap().len() <= REFUSAL_KINDS_MAX);
    }
}
