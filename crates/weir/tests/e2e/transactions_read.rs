//! Reading transactions through librdkafka, before the transaction coordinator exists: the
//! partition is written through the log API while the broker is stopped (transactional
//! batches of three producers, a commit marker, an abort marker, one transaction left open),
//! then a real consumer reads it. read_committed must not see the aborted records (the fetch's
//! `aborted_transactions`) nor the open transaction's (the last stable offset); read_uncommitted
//! sees everything. The open producer shows in `weir topic describe` (DescribeProducers).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_log::{AppendOptions, Log, LogConfig, LogEnv};
use weir_protocol::control::{ControlType, Marker};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};

const TOPIC: &str = "txn-read";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One batch of `values`; transactional when `pid` is given (pid, first sequence).
fn batch(producer: Option<(i64, i32)>, values: &[&str]) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None).base_timestamp(now_ms());
    if let Some((pid, seq)) = producer {
        b = b.producer(pid, 0, seq).transactional(true);
    }
    for (i, v) in values.iter().enumerate() {
        b = b.record(Record {
            offset_delta: i as i32,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        });
    }
    b.build().expect("batch")
}

fn marker(log: &Log, pid: i64, control_type: ControlType) {
    log.append_marker(
        pid,
        0,
        Marker {
            control_type,
            coordinator_epoch: 0,
        },
        now_ms(),
        &AppendOptions::default(),
    )
    .expect("marker");
}

/// Writes the partition; returns (offset of the open transaction's first record, log end).
fn write_partition(dir: &std::path::Path) -> (i64, i64) {
    let env = LogEnv::new(16);
    let log = Log::open(&env, dir, LogConfig::default()).expect("open partition log");
    let opts = AppendOptions::default();
    log.append(&batch(None, &["p0"]), &opts).expect("append");
    log.append(&batch(Some((100, 0)), &["c0", "c1"]), &opts)
        .expect("append");
    log.append(&batch(Some((200, 0)), &["a0", "a1"]), &opts)
        .expect("append");
    log.append(&batch(Some((100, 2)), &["c2"]), &opts)
        .expect("append");
    log.append(&batch(Some((200, 2)), &["a2"]), &opts)
        .expect("append");
    marker(&log, 200, ControlType::Abort);
    marker(&log, 100, ControlType::Commit);
    log.append(&batch(None, &["p1"]), &opts).expect("append");
    let open = log
        .append(&batch(Some((300, 0)), &["o0", "o1"]), &opts)
        .expect("append")
        .base_offset;
    log.append(&batch(None, &["p2"]), &opts).expect("append");
    let end = log.log_end_offset();
    log.close().expect("close");
    (open, end)
}

/// Reads the partition from the start until `want` values arrived, then `quiet` more; returns
/// the values and the consumer's high watermark for its isolation level.
fn consume(broker: &Broker, isolation: &str, want: usize, quiet: Duration) -> (Vec<String>, i64) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", format!("txn-read-{isolation}"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || quiet_until.is_some_and(|q| now >= q) {
            break;
        }
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            let m = result.expect("consume");
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        if values.len() >= want && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + quiet);
        }
    }
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    (values, high)
}

#[test]
fn read_committed_consumer_skips_aborted_records_and_stops_at_the_open_transaction() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, TOPIC, 1, &[]);
    assert!(broker.stop(), "clean stop");
    let (open_offset, log_end) = write_partition(&broker.data_dir.join(format!("{TOPIC}-0")));
    broker.restart();

    let (committed, lso) = consume(&broker, "read_committed", 5, Duration::from_secs(2));
    assert_eq!(
        committed,
        ["p0", "c0", "c1", "c2", "p1"],
        "read_committed: committed and plain records only, up to the open transaction"
    );
    assert_eq!(
        lso, open_offset,
        "read_committed's end offset is the last stable offset"
    );

    let (all, hw) = consume(&broker, "read_uncommitted", 11, Duration::from_millis(500));
    assert_eq!(
        all,
        [
            "p0", "c0", "c1", "a0", "a1", "c2", "a2", "p1", "o0", "o1", "p2"
        ]
    );
    assert_eq!(hw, log_end);

    // DescribeProducers through the CLI: producer 300's transaction is open.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "topic",
            "describe",
            TOPIC,
            "--bootstrap",
            &broker.bootstrap(),
        ])
        .output()
        .expect("weir topic describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("producer 300  epoch 0  last sequence 1  last timestamp")
            && text.contains(&format!("open transaction from offset {open_offset}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("producer 200") && !l.contains("open transaction")),
        "{text}"
    );
}
