//! Change data capture over a compacted topic, through librdkafka and the `weir` CLI:
//! 100,000 updates and deletes over 1,000 keys from four producers (gzip, snappy, lz4, zstd),
//! compaction, then a consumer from offset 0 rebuilds exactly the final table.
//!
//! A test binary of its own. It used to time out in about 4 of 10 runs: four idempotent
//! producers starting at once could stall the broker in InitProducerId (a producer-id block
//! fetched under a lock that held runtime workers; fixed in `producer_ids.rs`).

#[path = "e2e/compaction_support.rs"]
#[allow(dead_code)]
mod compaction_support;
#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer};

use compaction_support::{Rng, compact_with_cli, log_bytes, producer, rebuild_table};
use harness::{Broker, create_topic};

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
