//! One partition as the broker sees it: its log plus what fetchers wait on.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use weir_log::Log;

/// A partition whose log this broker holds.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The partition's log; appends are serialized inside it.
    pub log: Arc<Log>,
    /// Woken when the high watermark rises: only fetches that wait on this
    /// partition wake and re-read, not every long-poll on the broker.
    pub watermark_raised: Arc<Notify>,
    /// Woken after every append on the leader: followers' long-polling fetches wait on it
    /// (they read up to the log end, not the high watermark).
    pub appended: Arc<Notify>,
    /// The leader's view of its followers (ISR, their positions, the high watermark), while
    /// this broker leads the partition in a leadership that has been set up.
    replication: Mutex<Option<crate::replica::LeaderState>>,
    /// Whether this broker leads the partition, as the metadata image last
    /// said. Read on every produce and fetch, so it is an atomic beside the
    /// log rather than a lookup in the image.
    leader: AtomicBool,
    /// The leader epoch the image last gave the partition.
    leader_epoch: AtomicI32,
    /// Produce and consumer-fetch traffic, for `/metrics`.
    pub traffic: crate::metrics::PartitionTraffic,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: Arc<Log>) -> Partition {
        Partition {
            topic,
            index,
            log,
            watermark_raised: Arc::new(Notify::new()),
            appended: Arc::new(Notify::new()),
            replication: Mutex::new(None),
            leader: AtomicBool::new(true),
            leader_epoch: AtomicI32::new(0),
            traffic: Default::default(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Records what the metadata image says of this partition's leadership. Waiters on the
    /// high watermark (acks=all produces) are woken so they notice a lost leadership.
    pub fn set_leadership(&self, leader: bool, leader_epoch: i32) {
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
        if !leader {
            *self.replication() = None;
        }
        self.watermark_raised.notify_waiters();
    }

    /// The leader's replication state; `None` when this broker does not lead.
    pub fn replication(&self) -> MutexGuard<'_, Option<crate::replica::LeaderState>> {
        // Every update is a few field writes; a panic mid-way leaves a usable state.
        self.replication.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a high watermark the replication state decided and wakes its waiters.
    pub fn raise_high_watermark(&self, hw: i64) {
        if self.log.high_watermark() < hw {
            self.log.set_high_watermark(hw);
        }
        self.watermark_raised.notify_waiters();
    }

    /// The ISR size for `min.insync.replicas`, as the image last committed it; `None` when
    /// this broker has no replication state for the partition (not leading it).
    pub fn isr_len(&self) -> Option<usize> {
        self.replication().as_ref().map(|r| r.isr().len())
    }
}
