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

    // The wire fields librdkafka acted on. Producer 200's aborted transaction began at offset 3
    // (p0, c0, c1 before it).
    let committed = raw_fetch(&broker, 1);
    assert_eq!(committed.last_stable_offset, open_offset);
    assert_eq!(committed.high_watermark, log_end);
    let aborted: Vec<(i64, i64)> = committed
        .aborted_transactions
        .expect("read_committed gets the list")
        .iter()
        .map(|a| (a.producer_id, a.first_offset))
        .collect();
    assert_eq!(aborted, [(200, 3)]);
    let uncommitted = raw_fetch(&broker, 0);
    assert_eq!(uncommitted.last_stable_offset, open_offset);
    assert!(uncommitted.aborted_transactions.is_none());

    // Bad input from clients: a control batch is INVALID_RECORD; a plain batch from producer 300
    // while its transaction is open is INVALID_TXN_STATE.
    const INVALID_TXN_STATE: i16 = 48;
    const INVALID_RECORD: i16 = 87;
    let control = weir_protocol::control::marker_batch(
        300,
        0,
        Marker {
            control_type: ControlType::Commit,
            coordinator_epoch: 0,
        },
        now_ms(),
    )
    .expect("marker");
    assert_eq!(raw_produce(&broker, control), INVALID_RECORD);
    let plain = RecordBatchBuilder::new(Compression::None)
        .base_timestamp(now_ms())
        .producer(300, 0, 2)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::from_static(b"x")),
            headers: Vec::new(),
        })
        .build()
        .expect("batch");
    assert_eq!(raw_produce(&broker, plain), INVALID_TXN_STATE);
}

/// One request straight from the wire; its decoded response.
fn raw<Req: weir_protocol::codec::Encode, Resp: weir_protocol::codec::Decode>(
    broker: &Broker,
    api_key: i16,
    version: i16,
    request: &Req,
) -> Resp {
    use bytes::BytesMut;
    use weir_protocol::header::{RequestHeader, ResponseHeader};
    let header = RequestHeader {
        api_key,
        api_version: version,
        correlation_id: 11,
        client_id: Some("raw-txn".into()),
    };
    let mut body = BytesMut::new();
    header.encode(&mut body).expect("header");
    request.encode(&mut body, version).expect("request");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let response = super::hostile::exchange(broker, &frame).expect("an answer");
    let mut response = Bytes::from(response);
    ResponseHeader::decode(
        &mut response,
        weir_protocol::api::response_header_version(api_key, version),
    )
    .expect("response header");
    Resp::decode(&mut response, version).expect("response")
}

/// Fetch v11 of partition 0 from offset 0 at `isolation_level`.
fn raw_fetch(
    broker: &Broker,
    isolation_level: i8,
) -> weir_protocol::messages::fetch::PartitionData {
    use weir_protocol::messages::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
    let request = FetchRequest {
        replica_id: -1,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        isolation_level,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: TOPIC.into(),
            partitions: vec![FetchPartition {
                partition: 0,
                current_leader_epoch: -1,
                fetch_offset: 0,
                last_fetched_epoch: -1,
                log_start_offset: -1,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let response: FetchResponse = raw(broker, 1, 11, &request);
    let mut partitions = response.responses.into_iter().flat_map(|t| t.partitions);
    let p = partitions.next().expect("partition 0");
    assert_eq!(p.error_code, 0);
    p
}

/// Produce v9 of `records` to partition 0, acks=all; the partition's error code.
fn raw_produce(broker: &Broker, records: Bytes) -> i16 {
    use weir_protocol::messages::produce::{
        PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
    };
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![TopicProduceData {
            name: TOPIC.into(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(records),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let response: ProduceResponse = raw(broker, 0, 9, &request);
    response.responses[0].partition_responses[0].error_code
}
