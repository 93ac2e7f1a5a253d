//! One partition as the broker sees it: its log plus what fetchers wait on.

use std::sync::Arc;

use tokio::sync::Notify;
use weir_log::Log;

/// A partition led by this broker.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The partition's log; appends are serialized inside it.
    pub log: Arc<Log>,
    /// Woken when the high watermark rises: only fetches that wait on this
    /// partition wake and re-read, not every long-poll on the broker.
    pub watermark_raised: Arc<Notify>,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: Arc<Log>) -> Partition {
        Partition {
            topic,
            index,
            log,
            watermark_raised: Arc::new(Notify::new()),
        }
    }
}
