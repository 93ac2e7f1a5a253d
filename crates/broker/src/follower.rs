//! A follower's decisions, sans I/O: what to ask the leader, where to cut its log, what a
//! fetch answer means. The replica fetchers in `replication.rs` feed these from a real log
//! and the wire; the deterministic simulation (`crates/sim`) feeds them from an in-memory
//! log and a simulated network, so both run the same rules.
//!
//! The leader's half of the same exchange, [`check_divergence`], is here too: it is the
//! other side of the follower's truncation protocol (KIP-101, KIP-279, KIP-320), and keeping
//! the pair together keeps them in step.
//!
//! Nothing here reads a clock, a file or a socket.

use weir_protocol::error_code::ErrorCode;

/// What a follower's log looks like to the decisions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    /// The newest entry of the leader-epoch cache, if any.
    pub last_epoch: Option<i32>,
}

impl LogView {
    fn is_empty(&self) -> bool {
        self.log_end_offset <= self.log_start_offset
    }
}

/// The epoch a follower names in OffsetForLeaderEpoch, or `None` when it holds nothing under
/// any epoch and so has nothing to cut (the partition counts as checked at once).
pub fn epoch_to_ask(log: &LogView) -> Option<i32> {
    match log.last_epoch {
        Some(epoch) if epoch >= 0 && !log.is_empty() => Some(epoch),
        _ => None,
    }
}

/// The `last_fetched_epoch` of a follower's fetch (KIP-320): an empty log has fetched
/// nothing, whatever epoch its cache starts with.
pub fn last_fetched_epoch(log: &LogView) -> i32 {
    if log.is_empty() {
        -1
    } else {
        log.last_epoch.unwrap_or(-1)
    }
}

/// Where a follower cuts its log, given the leader's answer for the follower's last epoch
/// (KIP-279): the leader's end of that epoch if the leader knows the epoch; if the leader's
/// latest epoch at or below ours is older, the smaller of the leader's end for it and ours;
/// if the leader knows none (-1), our high watermark. `our_end_for_epoch` is the local
/// epoch cache's OffsetForLeaderEpoch answer (largest epoch `<=` the one asked, and its end).
pub fn truncation_point(
    log: &LogView,
    our_epoch: i32,
    leader_epoch: i32,
    leader_end: i64,
    our_end_for_epoch: impl FnOnce(i32) -> Option<(i32, i64)>,
) -> i64 {
    let ours = log.log_end_offset;
    if leader_epoch < 0 || leader_end < 0 {
        return log.high_watermark.min(ours);
    }
    if leader_epoch == our_epoch {
        return leader_end.min(ours);
    }
    let our_end_for_theirs = our_end_for_epoch(leader_epoch).map_or(ours, |(_, end)| end);
    leader_end.min(our_end_for_theirs).min(ours)
}

/// What a follower does with one partition of a fetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Append the records (if any) and take the watermark.
    Append,
    /// The leader reports divergence: ask OffsetForLeaderEpoch before fetching again.
    Diverged,
    /// OFFSET_OUT_OF_RANGE: restart the log at `restart_at` if set (the follower is behind
    /// the leader's log start), then check truncation again (it may be ahead of the end).
    OutOfRange { restart_at: Option<i64> },
    /// Any other error: wait before fetching this partition again.
    BackOff,
}

/// Classifies one partition of a fetch answer. `diverging` is the answer's
/// `(diverging_epoch.epoch, diverging_epoch.end_offset)`.
pub fn classify_fetch_answer(
    error: ErrorCode,
    diverging: (i32, i64),
    leader_log_start: i64,
    log: &LogView,
) -> FetchAnswer {
    match error {
        ErrorCode::None => {}
        ErrorCode::OffsetOutOfRange => {
            return FetchAnswer::OutOfRange {
                restart_at: out_of_range_restart(log, leader_log_start),
            };
        }
        _ => return FetchAnswer::BackOff,
    }
    if diverging.0 >= 0 || diverging.1 >= 0 {
        return FetchAnswer::Diverged;
    }
    FetchAnswer::Append
}

/// OFFSET_OUT_OF_RANGE: a follower behind the leader's log start starts over there; one ahead
/// of the leader's end is cut by the truncation check that follows.
pub fn out_of_range_restart(log: &LogView, leader_log_start: i64) -> Option<i64> {
    (leader_log_start >= 0 && log.log_end_offset < leader_log_start).then_some(leader_log_start)
}

/// The follower's watermark after an answer (taken after appending): the leader's, as far as
/// this log reaches; `None` when it would not rise.
pub fn follower_high_watermark(leader_high_watermark: i64, log: &LogView) -> Option<i64> {
    let hw = leader_high_watermark.min(log.log_end_offset);
    (hw > log.high_watermark).then_some(hw)
}

/// The log start a follower moves to after an answer, if the leader's moved past its own and
/// the records before it are committed here.
pub fn log_start_to_advance(leader_log_start: i64, log: &LogView) -> Option<i64> {
    (leader_log_start > log.log_start_offset && leader_log_start <= log.high_watermark)
        .then_some(leader_log_start)
}

/// The leader's check of a follower's fetch (KIP-320).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DivergenceCheck {
    /// The follower's log agrees with ours as far as it reaches: serve the fetch.
    Serve,
    /// Its last epoch predates everything we know: no end to name, so OFFSET_OUT_OF_RANGE and
    /// the follower checks its log with OffsetForLeaderEpoch.
    OutOfRange,
    /// Its last epoch ends earlier here (or is not ours) than where it fetches from: its tail
    /// is not ours. Answer with this epoch and end.
    Diverging { epoch: i32, end_offset: i64 },
}

/// `end_for_last_fetched` is the leader's epoch-cache answer for `last_fetched_epoch`.
pub fn check_divergence(
    last_fetched_epoch: i32,
    fetch_offset: i64,
    end_for_last_fetched: Option<(i32, i64)>,
) -> DivergenceCheck {
    if last_fetched_epoch < 0 {
        return DivergenceCheck::Serve;
    }
    match end_for_last_fetched {
        Some((epoch, end)) if epoch == last_fetched_epoch && end >= fetch_offset => {
            DivergenceCheck::Serve
        }
        None => DivergenceCheck::OutOfRange,
        Some((epoch, end_offset)) => DivergenceCheck::Diverging { epoch, end_offset },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(start: i64, end: i64, hw: i64, last_epoch: Option<i32>) -> LogView {
        LogView {
            log_start_offset: start,
            log_end_offset: end,
            high_watermark: hw,
            last_epoch,
        }
    }

    #[test]
    fn an_empty_log_asks_nothing_and_names_no_fetched_epoch() {
        let empty = log(10, 10, 10, Some(3));
        assert_eq!(epoch_to_ask(&empty), None);
        assert_eq!(last_fetched_epoch(&empty), -1);
        let held = log(0, 10, 5, Some(3));
        assert_eq!(epoch_to_ask(&held), Some(3));
        assert_eq!(last_fetched_epoch(&held), 3);
        assert_eq!(epoch_to_ask(&log(0, 10, 5, None)), None);
    }

    #[test]
    fn truncation_follows_the_leaders_end_of_our_epoch() {
        let l = log(0, 100, 40, Some(5));
        // Same epoch known: its end there, never past ours.
        assert_eq!(truncation_point(&l, 5, 5, 70, |_| None), 70);
        assert_eq!(truncation_point(&l, 5, 5, 170, |_| None), 100);
        // The leader knows only an older epoch: the smaller of both ends for it.
        assert_eq!(truncation_point(&l, 5, 3, 90, |_| Some((3, 60))), 60);
        assert_eq!(truncation_point(&l, 5, 3, 50, |_| Some((3, 60))), 50);
        // The leader knows no epoch at or below ours: our high watermark.
        assert_eq!(truncation_point(&l, 5, -1, -1, |_| None), 40);
    }

    #[test]
    fn a_fetch_answer_is_classified_by_error_then_divergence() {
        let l = log(0, 100, 40, Some(5));
        assert_eq!(
            classify_fetch_answer(ErrorCode::None, (-1, -1), 0, &l),
            FetchAnswer::Append
        );
        assert_eq!(
            classify_fetch_answer(ErrorCode::None, (4, 80), 0, &l),
            FetchAnswer::Diverged
        );
        assert_eq!(
            classify_fetch_answer(ErrorCode::OffsetOutOfRange, (-1, -1), 150, &l),
            FetchAnswer::OutOfRange {
                restart_at: Some(150)
            }
        );
        assert_eq!(
            classify_fetch_answer(ErrorCode::OffsetOutOfRange, (-1, -1), 50, &l),
            FetchAnswer::OutOfRange { restart_at: None }
        );
        assert_eq!(
            classify_fetch_answer(ErrorCode::NotLeaderOrFollower, (-1, -1), 0, &l),
            FetchAnswer::BackOff
        );
    }

    #[test]
    fn the_followers_watermark_and_log_start_only_move_forward_within_its_log() {
        let l = log(0, 100, 40, Some(5));
        assert_eq!(follower_high_watermark(60, &l), Some(60));
        assert_eq!(follower_high_watermark(160, &l), Some(100));
        assert_eq!(follower_high_watermark(30, &l), None);
        assert_eq!(log_start_to_advance(20, &l), Some(20));
        assert_eq!(log_start_to_advance(50, &l), None, "not committed here yet");
        assert_eq!(log_start_to_advance(0, &l), None);
    }

    #[test]
    fn the_leader_serves_only_a_follower_whose_last_epoch_agrees() {
        assert_eq!(check_divergence(-1, 50, None), DivergenceCheck::Serve);
        assert_eq!(
            check_divergence(4, 50, Some((4, 80))),
            DivergenceCheck::Serve
        );
        assert_eq!(
            check_divergence(4, 90, Some((4, 80))),
            DivergenceCheck::Diverging {
                epoch: 4,
                end_offset: 80
            }
        );
        assert_eq!(
            check_divergence(4, 50, Some((3, 40))),
            DivergenceCheck::Diverging {
                epoch: 3,
                end_offset: 40
            }
        );
        assert_eq!(check_divergence(4, 50, None), DivergenceCheck::OutOfRange);
    }
}
