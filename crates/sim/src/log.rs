//! One replica's partition data, in memory: records (each its leader epoch and a value), a
//! durable prefix and an unsynced tail, the high watermark and its checkpoint, and the
//! leader-epoch cache.
//!
//! Modelled, not the real `weir_log::Log`: that one lives on files and its epoch cache is
//! fused with them. The rules below are copied from it by behaviour, and each names the
//! `Log` method it stands for: `assign_leader_epoch`, `end_offset_for_epoch`, the epoch
//! bookkeeping of `append_as_follower`, `truncate_to` (`cut`) and what `open` keeps after a
//! crash. The log start is always 0: retention and DeleteRecords are not simulated, so the
//! follower's restart-at-the-leader's-log-start path is not reached here.

/// One record: the leader epoch it was written under and a value unique in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub epoch: i32,
    pub value: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SimLog {
    pub records: Vec<Rec>,
    /// Records below this survive a crash.
    pub durable_end: i64,
    pub high_watermark: i64,
    /// The high watermark as last checkpointed (at a sync); a restart starts from it.
    pub hw_checkpoint: i64,
    /// (epoch, start offset), oldest first. Persisted on every change, as the real cache.
    pub epochs: Vec<(i32, i64)>,
}

impl SimLog {
    pub fn end(&self) -> i64 {
        self.records.len() as i64
    }

    pub fn last_epoch(&self) -> Option<i32> {
        self.epochs.last().map(|&(e, _)| e)
    }

    pub fn view(&self) -> weir_broker::follower::LogView {
        weir_broker::follower::LogView {
            log_start_offset: 0,
            log_end_offset: self.end(),
            high_watermark: self.high_watermark,
            last_epoch: self.last_epoch(),
        }
    }

    /// `Log::assign_leader_epoch`.
    pub fn assign_leader_epoch(&mut self, epoch: i32, start_offset: i64) {
        if self
            .epochs
            .last()
            .is_some_and(|&(le, lo)| le == epoch && lo <= start_offset)
        {
            return;
        }
        self.epochs
            .retain(|&(ep, so)| ep < epoch && so < start_offset);
        self.epochs.push((epoch, start_offset));
    }

    /// `Log::end_offset_for_epoch`: the largest known epoch `<= epoch` and where it ended; an
    /// epoch older than the cache ended where the cache begins.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let i = self.epochs.partition_point(|&(ep, _)| ep <= epoch);
        let Some(&(found, _)) = i.checked_sub(1).and_then(|j| self.epochs.get(j)) else {
            return self
                .epochs
                .first()
                .map(|&(_, first_start)| (epoch, first_start));
        };
        let end = self.epochs.get(i).map_or(self.end(), |&(_, so)| so);
        Some((found, end))
    }

    /// A leader's append: its own epoch starts where its first record does.
    pub fn append_as_leader(&mut self, epoch: i32, value: u64) -> i64 {
        if self.last_epoch().is_none_or(|e| epoch > e) {
            let at = self.end();
            self.assign_leader_epoch(epoch, at);
        }
        self.records.push(Rec { epoch, value });
        self.end() - 1
    }

    /// `Log::append_as_follower`: each newer epoch the leader's records carry starts where
    /// its first record does, so the caches match (KIP-101).
    pub fn append_as_follower(&mut self, records: &[Rec]) {
        for r in records {
            if r.epoch >= 0 && self.last_epoch().is_none_or(|e| r.epoch > e) {
                let at = self.end();
                self.assign_leader_epoch(r.epoch, at);
            }
            self.records.push(*r);
        }
    }

    /// `Log::truncate_to`: an offset at or past the end cuts no record but still drops epochs
    /// starting at the end; the watermark and the durable end never pass the new end.
    pub fn truncate_to(&mut self, offset: i64) {
        let new_end = offset.clamp(0, self.end());
        self.records.truncate(new_end as usize);
        self.high_watermark = self.high_watermark.min(new_end);
        self.hw_checkpoint = self.hw_checkpoint.min(new_end);
        self.durable_end = self.durable_end.min(new_end);
        self.epochs.retain(|&(_, so)| so < new_end);
    }

    /// Everything written is now on disk; the watermark is checkpointed with it.
    pub fn sync(&mut self) {
        self.durable_end = self.end();
        self.hw_checkpoint = self.high_watermark;
    }

    /// Power loss: the unsynced tail is gone; on open the epoch cache keeps entries starting
    /// at or before the recovered end (`Log::open`), the watermark comes from its checkpoint.
    pub fn crash(&mut self) {
        let end = self.durable_end;
        self.records.truncate(end as usize);
        self.epochs.retain(|&(_, so)| so <= end);
        self.high_watermark = self.hw_checkpoint.min(end);
        self.hw_checkpoint = self.high_watermark;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_cache_answers_like_the_real_one() {
        let mut log = SimLog::default();
        log.append_as_leader(1, 10);
        log.append_as_leader(1, 11);
        log.append_as_follower(&[Rec {
            epoch: 3,
            value: 12,
        }]);
        assert_eq!(log.epochs, vec![(1, 0), (3, 2)]);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 2)));
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 2)));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 3)));
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));
        assert_eq!(log.end_offset_for_epoch(-1), None);
        log.truncate_to(2);
        assert_eq!(log.epochs, vec![(1, 0)]);
    }

    #[test]
    fn a_crash_keeps_the_durable_prefix_and_the_checkpointed_watermark() {
        let mut log = SimLog::default();
        log.append_as_leader(0, 1);
        log.high_watermark = 1;
        log.sync();
        log.append_as_leader(0, 2);
        log.high_watermark = 2;
        log.crash();
        assert_eq!(log.end(), 1);
        assert_eq!(log.high_watermark, 1);
    }
}
