//! Log compaction through real clients (librdkafka via the `rdkafka` crate) and the `weir`
//! CLI: `__consumer_offsets` and `__transaction_state` staying bounded and replaying after a
//! restart, and kill -9 in the middle of cleaning passes. The change-data-capture test is in
//! `tests/compaction_cdc.rs`, a process of its own (see there: it is flaky).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::compaction_support::{Rng, log_bytes, producer, rebuild_table};
use super::harness::{Broker, create_topic};

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
        "150000",
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
        // Wait (bounded) until a pass is writing its output, then kill it a random moment
        // later, somewhere in that pass or at its swap: a fixed sleep often missed every pass.
        let pass_files = || {
            std::fs::read_dir(&dir)
                .expect("partition dir")
                .filter_map(Result::ok)
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.contains(".cleaned-") || name.contains(".swap-")
                })
        };
        let waiting_since = std::time::Instant::now();
        while !pass_files() && waiting_since.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 40));
        broker.kill9();
        if pass_files() {
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
    assert!(
        mid_pass_kills >= 3,
        "only {mid_pass_kills} of {KILLS} kills landed inside a cleaning pass"
    );
}

#[test]
fn transaction_state_is_compacted_and_replays_after_a_restart() {
    // __transaction_state with small segments (TOML-only setting) and one partition.
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config_path = config_dir.path().join("weir.toml");
    std::fs::write(
        &config_path,
        "transaction_state_segment_bytes = 4096\nlog_cleaner_backoff_ms = 100\n",
    )
    .expect("config");
    let mut broker = Broker::start(&[
        "--config",
        config_path.to_str().expect("utf8 path"),
        "--transaction-state-partitions",
        "1",
    ]);
    create_topic(&broker, "txn-data", 1, &[]);
    let producer = |broker: &Broker| -> ThreadedProducer<DefaultProducerContext> {
        let p: ThreadedProducer<DefaultProducerContext> = broker
            .client_config()
            .set("transactional.id", "compacted-txn")
            .create()
            .expect("transactional producer");
        p.init_transactions(Duration::from_secs(30))
            .expect("init_transactions");
        p
    };
    let p = producer(&broker);
    const TRANSACTIONS: usize = 300;
    for i in 0..TRANSACTIONS {
        p.begin_transaction().expect("begin");
        let v = format!("{i}");
        p.send(BaseRecord::<str, str>::to("txn-data").key("k").payload(&v))
            .map_err(|(e, _)| e)
            .expect("send");
        p.commit_transaction(Duration::from_secs(30))
            .expect("commit");
    }
    drop(p);
    // Each transaction writes several state records (ongoing, prepare, complete); the cleaner
    // keeps the latest per transactional id.
    let dir = broker.data_dir.join("__transaction_state-0");
    const BOUND_BYTES: u64 = 32 * 1024;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut size = log_bytes(&dir);
    while size > BOUND_BYTES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        size = log_bytes(&dir);
    }
    eprintln!("__transaction_state-0 after {TRANSACTIONS} transactions: {size} bytes");
    assert!(
        size <= BOUND_BYTES,
        "__transaction_state-0 holds {size} bytes"
    );
    let describe = |broker: &Broker| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "txn",
                "describe",
                "compacted-txn",
                "-b",
                &broker.bootstrap(),
            ])
            .output()
            .expect("weir txn describe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("state") || l.starts_with("producer"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = describe(&broker);
    assert!(before.contains("CompleteCommit"), "{before}");
    assert!(broker.stop(), "clean stop");
    broker.restart();
    // Replayed from the compacted topic: the same state, producer id and epoch.
    assert_eq!(describe(&broker), before);
    // And the id goes on: a new producer fences the old epoch and commits.
    let p = producer(&broker);
    p.begin_transaction().expect("begin after restart");
    p.send(
        BaseRecord::<str, str>::to("txn-data")
            .key("k")
            .payload("after"),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    p.commit_transaction(Duration::from_secs(30))
        .expect("commit after restart");
}
