//! One partition as the broker sees it: its log plus what fetchers wait on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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
    /// Whether this broker leads the partition, as the metadata image last
    /// said. Read on every produce and fetch, so it is an atomic beside the
    /// log rather than a lookup in the image.
    leader: AtomicBool,
    /// The leader epoch the image last gave the partition.
    leader_epoch: AtomicI32,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: Arc<Log>) -> Partition {
        Partition {
            topic,
            index,
            log,
            watermark_raised: Arc::new(Notify::new()),
            leader: AtomicBool::new(true),
            leader_epoch: AtomicI32::new(0),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Records what the metadata image says of this partition's leadership.
    pub fn set_leadership(&self, leader: bool, leader_epoch: i32) {
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
    }
}
