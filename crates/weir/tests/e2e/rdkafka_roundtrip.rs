//! librdkafka produces 200,000 records per compression codec to a 6-partition
//! topic with acks=all, and an assign()-based consumer reads every one back,
//! byte-identical and in per-partition order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::harness::{Broker, create_topic};

const RECORDS: usize = 200_000;
const PARTITIONS: i32 = 6;

/// The record the test sends as number `i`: some keys, values and headers are absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn expected(i: usize) -> Expected {
    let key = (i % 7 != 0).then(|| format!("key-{i}").into_bytes());
    let value = (i % 11 != 0).then(|| format!("value-{i}-{}", "x".repeat(i % 97)).into_bytes());
    let headers = if i % 3 == 0 {
        vec![
            ("seq".to_string(), Some(i.to_string().into_bytes())),
            ("empty".to_string(), None),
        ]
    } else {
        Vec::new()
    };
    Expected {
        key,
        value,
        headers,
    }
}

/// Records where each acknowledged record landed: (partition, offset) -> record number.
#[derive(Default)]
pub struct Acks {
    pub placed: Mutex<HashMap<(i32, i64), usize>>,
    pub failed: Mutex<Vec<(usize, String)>>,
}

pub struct AckContext(pub Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        match result {
            Ok(message) => {
                self.0
                    .placed
                    .lock()
                    .unwrap()
                    .insert((message.partition(), message.offset()), *index);
            }
            Err((error, _)) => self
                .0
                .failed
                .lock()
                .unwrap()
                .push((*index, error.to_string())),
        }
    }
}

fn to_expected(message: &rdkafka::message::BorrowedMessage<'_>) -> Expected {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    Expected {
        key: message.key().map(|k| k.to_vec()),
        value: message.payload().map(|v| v.to_vec()),
        headers,
    }
}

/// Produces `count` records with acks=all and the given codec, returning the acks.
pub fn produce_all(broker: &Broker, topic: &str, codec: &str, count: usize) -> Arc<Acks> {
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = broker
        .client_config()
        .set("acks", "all")
        .set("compression.codec", codec)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    for i in 0..count {
        let e = expected(i);
        let mut headers = OwnedHeaders::new();
        for (k, v) in &e.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(i));
        if let Some(k) = &e.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &e.value {
            record = record.payload(v.as_slice());
        }
        if !e.headers.is_empty() {
            record = record.headers(headers);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((err, back)) => {
                    assert!(
                        matches!(
                            err,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "send failed: {err}"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                    pending = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    acks
}

/// Reads every partition from the beginning up to its high watermark as it was
/// when called (or until the deadline passes), returning (partition, offset,
/// record) in read order. `expect_at_least` is a sanity floor on the total.
pub fn consume_all(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    expect_at_least: usize,
) -> Vec<(i32, i64, Expected)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "weir-e2e-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            remaining.insert(p, high);
        }
    }
    let total: i64 = remaining.values().sum();
    assert!(
        total >= expect_at_least as i64,
        "high watermarks sum to {total}, expected at least {expect_at_least}"
    );
    let mut seen = Vec::with_capacity(expect_at_least);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let (p, o) = (message.partition(), message.offset());
                if remaining.get(&p).is_some_and(|high| o + 1 >= *high) {
                    remaining.remove(&p);
                }
                seen.push((p, o, to_expected(&message)));
            }
            // librdkafka looks for a group coordinator because group.id is set;
            // Weir has no groups yet and assign() doesn't need one.
            Some(Err(e)) if e.to_string().contains("oordinator") => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    seen
}

fn roundtrip(codec: &str) {
    let broker = Broker::start(&[]);
    let topic = format!("roundtrip-{codec}");
    create_topic(&broker, &topic, PARTITIONS, &[]);
    let acks = produce_all(&broker, &topic, codec, RECORDS);
    let failed = acks.failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} deliveries failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let placed = acks.placed.lock().unwrap();
    assert_eq!(
        placed.len(),
        RECORDS,
        "every record must be acknowledged at a distinct offset"
    );

    let seen = consume_all(&broker, &topic, PARTITIONS, RECORDS);
    assert_eq!(seen.len(), RECORDS, "consumer must read back every record");
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut last_index: HashMap<i32, usize> = HashMap::new();
    for (partition, offset, record) in &seen {
        // Offsets are dense per partition and arrive in order.
        let want = next_offset.entry(*partition).or_insert(0);
        assert_eq!(
            *offset, *want,
            "partition {partition}: offsets must be dense and ordered"
        );
        *want += 1;
        let index = *placed.get(&(*partition, *offset)).unwrap_or_else(|| {
            panic!("partition {partition} offset {offset} was never acknowledged")
        });
        assert_eq!(
            record,
            &expected(index),
            "record {index} differs after the round trip"
        );
        // Records of one partition keep the order they were sent in.
        if let Some(prev) = last_index.insert(*partition, index) {
            assert!(
                prev < index,
                "partition {partition}: record {index} came after {prev}"
            );
        }
    }
}

#[test]
fn rdkafka_roundtrip_200k_records_uncompressed() {
    roundtrip("none");
}

#[test]
fn rdkafka_roundtrip_200k_records_gzip() {
    roundtrip("gzip");
}

#[test]
fn rdkafka_roundtrip_200k_records_snappy() {
    roundtrip("snappy");
}

#[test]
fn rdkafka_roundtrip_200k_records_lz4() {
    roundtrip("lz4");
}

#[test]
fn rdkafka_roundtrip_200k_records_zstd() {
    roundtrip("zstd");
}
