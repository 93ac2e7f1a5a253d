//! Helpers of the compaction tests (`e2e/compaction.rs`, and `tests/compaction_cdc.rs`, which
//! includes this file): producers, a table rebuilt by a librdkafka consumer, the CLI's
//! compaction pass, a partition's bytes on disk.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::harness::Broker;

/// A deterministic xorshift generator (no rand dependency; runs are reproducible).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) fn producer(
    broker: &Broker,
    compression: &str,
) -> ThreadedProducer<DefaultProducerContext> {
    broker
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", compression)
        .create()
        .expect("producer")
}

/// (partition, offset, key) of every record read.
pub(crate) type ReadRecords = Vec<(i32, i64, String)>;

/// Reads `partitions` of `topic` from the beginning up to their current high watermarks and
/// applies each record to a table (a null value deletes the key). Returns the table and how
/// many records were read.
pub(crate) fn rebuild_table(
    broker: &Broker,
    topic: &str,
    partitions: i32,
) -> (HashMap<String, String>, ReadRecords) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "weir-e2e-compaction-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            remaining.insert(p, high);
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut table = HashMap::new();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} timed out; still waiting for {remaining:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf8");
                read.push((m.partition(), m.offset(), key.clone()));
                match m.payload() {
                    Some(v) => {
                        table.insert(key, String::from_utf8(v.to_vec()).expect("utf8"));
                    }
                    None => {
                        table.remove(&key);
                    }
                }
                if remaining
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high)
                {
                    remaining.remove(&m.partition());
                }
            }
            Some(Err(e)) if e.to_string().contains("oordinator") => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    (table, read)
}

/// Runs `weir topic compact` against the broker and returns its output.
pub(crate) fn compact_with_cli(broker: &Broker, topic: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["topic", "compact", topic, "-b", &broker.bootstrap()])
        .output()
        .expect("run weir topic compact");
    assert!(
        out.status.success(),
        "weir topic compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
