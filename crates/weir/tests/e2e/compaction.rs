//! Log compaction through real clients (librdkafka via the `rdkafka` crate) and the `weir`
//! CLI: a change-data-capture table rebuilt from a compacted topic, `__consumer_offsets`
//! staying bounded under thousands of commits, and kill -9 in the middle of cleaning passes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Broker, create_topic};

/// A deterministic xorshift generator (no rand dependency; runs are reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn producer(broker: &Broker, compression: &str) -> ThreadedProducer<DefaultProducerContext> {
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
type ReadRecords = Vec<(i32, i64, String)>;

/// Reads `partitions` of `topic` from the beginning up to their current high watermarks and
/// applies each record to a table (a null value deletes the key). Returns the table and how
/// many records were read.
fn rebuild_table(
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
fn compact_with_cli(broker: &Broker, topic: &str) -> String {
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

fn log_bytes(dir: &Path) -> u64 {
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

#[test]
fn cdc_table_is_rebuilt_exactly_from_a_compacted_topic() {
    // No background cleaner: the passes run when the CLI asks, so the test knows when.
    let broker = Broker::start(&["--log-cleaner-threads", "0"]);
    let topic = "cdc";
    let partitions = 3;
    create_topic(
        &broker,
        topic,
        partitions,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    );
    // One producer per codec; each owns the keys congruent to its index, so every key's
    // changes come from one idempotent producer, in order.
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let producers: Vec<_> = codecs.iter().map(|c| producer(&broker, c)).collect();
    let mut model: HashMap<String, Option<String>> = HashMap::new();
    let mut rng = Rng(0x5eed_cdc0_0001);
    const CHANGES: u64 = 100_000;
    const KEYS: u64 = 1_000;
    for n in 0..CHANGES {
        let k = rng.next() % KEYS;
        let key = format!("row-{k}");
        let delete = rng.next().is_multiple_of(10);
        let value = (!delete).then(|| format!("v{n}-{}", "x".repeat((n % 40) as usize)));
        let p = &producers[(k % codecs.len() as u64) as usize];
        let mut record = BaseRecord::<String, String>::to(topic).key(&key);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, r)) = p.send(r) {
                assert!(e.to_string().contains("ueue"), "send: {e}");
                std::thread::sleep(Duration::from_millis(5));
                record = Some(r);
            }
        }
        model.insert(key, value);
    }
    for p in &producers {
        p.flush(Duration::from_secs(120)).expect("flush");
    }
    let expected: HashMap<String, String> = model
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();

    let before: u64 = (0..partitions)
        .map(|p| log_bytes(&broker.data_dir.join(format!("{topic}-{p}"))))
        .sum();
    let first = compact_with_cli(&broker, topic);
    // A second pass (tombstones got their delete horizon in the first) must change nothing
    // a reader sees.
    let _ = compact_with_cli(&broker, topic);
    let after: u64 = (0..partitions)
        .map(|p| log_bytes(&broker.data_dir.join(format!("{topic}-{p}"))))
        .sum();
    let (table, read) = rebuild_table(&broker, topic, partitions);
    assert_eq!(
        table.len(),
        expected.len(),
        "rows after compaction (weir topic compact said:\n{first})"
    );
    for (k, v) in &expected {
        assert_eq!(table.get(k), Some(v), "row {k}");
    }
    // Each partition's cleaned part (below its last cleaned offset, from the CLI's output)
    // holds each key at most once; the active segment is never cleaned.
    let cleaned_to: HashMap<i32, i64> = first
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect();
    assert_eq!(cleaned_to.len(), partitions as usize, "{first}");
    let mut seen: std::collections::HashSet<(i32, &str)> = Default::default();
    let mut in_cleaned = 0usize;
    for (p, offset, key) in &read {
        if *offset < cleaned_to[p] {
            in_cleaned += 1;
            assert!(
                seen.insert((*p, key.as_str())),
                "key {key} twice in the cleaned part of partition {p}"
            );
        }
    }
    let cleaned_offsets: i64 = cleaned_to.values().sum();
    eprintln!(
        "cdc: {CHANGES} changes over {KEYS} keys; {} records read back after compaction, \
         {in_cleaned} of them in the cleaned parts ({cleaned_offsets} offsets); log bytes \
         {before} -> {after}",
        read.len()
    );
    assert!(
        cleaned_offsets > (CHANGES / 2) as i64,
        "too little was cleaned:\n{first}"
    );
    // The describe output shows the cleaner's state.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["topic", "describe", topic, "-b", &broker.bootstrap()])
        .output()
        .expect("describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LAST-CLEANED-OFFSET"), "{text}");
}

#[test]
fn consumer_offsets_stay_bounded_and_survive_a_restart_after_compaction() {
    let mut broker = Broker::start(&[
        "--offsets-topic-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        "16384",
        "--log-cleaner-backoff-ms",
        "100",
    ]);
    create_topic(&broker, "tracked", 1, &[]);
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "committer")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    const COMMITS: i64 = 3_000;
    for i in 1..=COMMITS {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("tracked", 0, Offset::Offset(i))
            .expect("offset");
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    let dir = broker.data_dir.join("__consumer_offsets-0");
    // Uncompacted, 3,000 commits take ~300 KB here; the cleaner keeps the topic to its
    // active segment plus a few cleaned ones.
    const BOUND_BYTES: u64 = 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut size = log_bytes(&dir);
    while size > BOUND_BYTES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        size = log_bytes(&dir);
    }
    eprintln!("__consumer_offsets-0 after {COMMITS} commits: {size} bytes");
    assert!(
        size <= BOUND_BYTES,
        "__consumer_offsets-0 holds {size} bytes"
    );
    drop(consumer);

    assert!(broker.stop(), "clean stop");
    broker.restart();
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "committer")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("tracked", 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("committed offsets");
    let offset = committed
        .find_partition("tracked", 0)
        .expect("partition")
        .offset();
    assert_eq!(offset, Offset::Offset(COMMITS), "the last commit survives");
}

#[test]
fn kill9_during_cleaning_keeps_the_log_valid_and_every_latest_value() {
    // A slow cleaner (I/O capped) so that kills land in the middle of passes.
    let mut broker = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "20",
        "--log-cleaner-io-max-bytes-per-second",
        "400000",
    ]);
    let topic = "k9";
    create_topic(
        &broker,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let dir = broker.data_dir.join(format!("{topic}-0"));
    let mut model: HashMap<String, String> = HashMap::new();
    let mut rng = Rng(0x0c1e_a9e4);
    let mut mid_pass_kills = 0;
    const KILLS: usize = 12;
    for round in 0..KILLS {
        let p = producer(
            &broker,
            if round.is_multiple_of(2) {
                "lz4"
            } else {
                "none"
            },
        );
        for n in 0..3_000u64 {
            let key = format!("key-{}", rng.next() % 300);
            let value = format!("r{round}-n{n}-{}", "y".repeat((n % 50) as usize));
            let mut record = Some(
                BaseRecord::<String, String>::to(topic)
                    .key(&key)
                    .payload(&value),
            );
            while let Some(r) = record.take() {
                if let Err((_, r)) = p.send(r) {
                    std::thread::sleep(Duration::from_millis(5));
                    record = Some(r);
                }
            }
            model.insert(key, value);
        }
        p.flush(Duration::from_secs(60)).expect("flush");
        drop(p);
        // Let the cleaner start on the new dirty segments, then kill it somewhere in a pass.
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 400));
        broker.kill9();
        let in_flight = std::fs::read_dir(&dir)
            .expect("partition dir")
            .filter_map(Result::ok)
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.contains(".cleaned-") || name.contains(".swap-")
            });
        if in_flight {
            mid_pass_kills += 1;
        }
        broker.restart();
        let (table, _) = rebuild_table(&broker, topic, 1);
        assert_eq!(table.len(), model.len(), "round {round}: keys");
        for (k, v) in &model {
            assert_eq!(table.get(k), Some(v), "round {round}: key {k}");
        }
        assert!(
            !broker.log().contains("DATA DAMAGE"),
            "round {round}: the log must stay valid"
        );
    }
    eprintln!(
        "kill -9 during cleaning: {KILLS} kills, {mid_pass_kills} with a pass's files on disk"
    );
    assert!(mid_pass_kills >= 1, "no kill landed inside a cleaning pass");
}
