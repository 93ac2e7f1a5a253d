//! One partition as the broker sees it: its log plus what fetchers wait on.

use std::sync::Arc;

use weir_log::Log;

/// A partition led by this broker.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The partition's log; appends are serialized inside it.
    pub log: Arc<Log>,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: Arc<Log>) -> Partition {
        Partition { topic, index, log }
    }
}
