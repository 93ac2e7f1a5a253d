//! A data directory written by single-node Weir before the metadata quorum
//! (tests/fixtures/single-node-data-dir-2fb5387.tar.gz, see the README
//! there) upgrades in place: its topics, ids, overrides, records, committed
//! offsets and dynamic broker config are all there through librdkafka, and
//! producer ids, now handed out by the quorum, don't go back below what the
//! old reservation file had reserved. Twice: on the first start, which
//! imports, and on a restart, which reads the metadata log.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use weir_protocol::api::ApiKey;
use weir_protocol::messages::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};

use super::cluster_harness::{call, metadata};
use super::harness::Broker;

const FIXTURE: &str = "single-node-data-dir-2fb5387.tar.gz";
/// meta/topics/orders.json's `id_hex` in the fixture.
const ORDERS_ID_HEX: &str = "298b54fcd605df42254fa1c602e17637";
/// What the pre-quorum producer-id file says was reserved; written into the
/// unpacked fixture (which has none, as no idempotent producer wrote to it)
/// in that file's format: header, next unreserved id, crc32c of the rest.
const OLD_RESERVATION: i64 = 7000;
const OLD_RESERVATION_FILE: &str = "weir-producer-ids 1 7000 36cecab1\n";

fn unpack_fixture(into: &Path) -> std::path::PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(FIXTURE);
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "unpacking {}", archive.display());
    let data = into.join("data");
    assert!(data.join("meta/topics/orders.json").exists());
    assert!(
        !data.join("metadata").exists(),
        "the fixture predates the metadata log"
    );
    std::fs::write(data.join("meta/producer-ids"), OLD_RESERVATION_FILE).expect("reservation");
    data
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// All records of `topic` (partitions 0..`partitions`) from the beginning,
/// as (partition, key, value), waiting until `want` arrived.
fn read_all(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<(i32, Option<String>, String)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "upgrade-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "read {} of {want} records of {topic}",
            got.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push((
                m.partition(),
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    // Nothing beyond what the fixture holds (plus what earlier checks produced).
    assert!(consumer.poll(Duration::from_millis(500)).is_none());
    got
}

/// Everything the fixture holds, as seen through the broker; `extra_orders_0`
/// records that this test itself produced to orders-0 earlier.
fn check_everything_is_there(broker: &Broker, extra_orders_0: usize) {
    // Topics, partition counts, the original topic id.
    let m = metadata(broker.addr, None).expect("metadata");
    let topics: BTreeMap<String, usize> = m
        .topics
        .iter()
        .filter_map(|t| Some((t.name.clone()?, t.partitions.len())))
        .collect();
    assert_eq!(topics.get("orders"), Some(&3), "{topics:?}");
    assert_eq!(topics.get("events"), Some(&2), "{topics:?}");
    let orders = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some("orders"))
        .expect("orders");
    assert_eq!(hex(&orders.topic_id), ORDERS_ID_HEX, "orders keeps its id");
    for t in &m.topics {
        for p in &t.partitions {
            assert_eq!((p.error_code, p.leader_id), (0, 1), "{:?} {p:?}", t.name);
        }
    }

    // Topic overrides and the dynamic broker config.
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().expect("admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let described = runtime
        .block_on(admin.describe_configs(
            [
                &ResourceSpecifier::Topic("orders"),
                &ResourceSpecifier::Broker(1),
            ],
            &AdminOptions::new(),
        ))
        .expect("describe configs");
    let topic_configs = described[0].as_ref().expect("orders configs");
    for (name, value) in [("retention.ms", "86400000"), ("cleanup.policy", "delete")] {
        let entry = topic_configs
            .get(name)
            .unwrap_or_else(|| panic!("{name} listed"));
        assert_eq!(entry.value.as_deref(), Some(value), "{name}");
        assert!(!entry.is_default, "{name} is an override");
    }
    let broker_configs = described[1].as_ref().expect("broker configs");
    let retention = broker_configs
        .get("log.retention.ms")
        .expect("log.retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("604800000"));
    assert!(!retention.is_default, "the dynamic broker config survives");

    // The records: order-1..order-30 on orders-2, k1..k10 on events.
    let got = read_all(broker, "orders", 3, 30 + extra_orders_0);
    let on_2: Vec<String> = got
        .iter()
        .filter(|(p, _, _)| *p == 2)
        .map(|(_, _, v)| v.clone())
        .collect();
    let want: Vec<String> = (1..=30).map(|i| format!("order-{i}")).collect();
    assert_eq!(on_2, want);
    let mut events: Vec<(String, String)> = read_all(broker, "events", 2, 10)
        .into_iter()
        .map(|(_, k, v)| (k.expect("keyed"), v))
        .collect();
    events.sort();
    let mut want: Vec<(String, String)> = (1..=10)
        .map(|i| (format!("k{i}"), format!("event-{i}")))
        .collect();
    want.sort();
    assert_eq!(events, want);

    // legacy-group's committed offset.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "legacy-group")
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("orders", 2);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(30),
        "legacy-group's offset on orders-2"
    );
}

/// A fresh producer id from the broker (InitProducerId v4, no transaction).
fn new_producer_id(broker: &Broker) -> i64 {
    let response: InitProducerIdResponse = call(
        broker.addr,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
        },
    )
    .expect("InitProducerId");
    assert_eq!(response.error_code, 0, "{response:?}");
    response.producer_id
}

/// One record to orders-0 through an idempotent librdkafka producer.
fn produce_idempotently(broker: &Broker, value: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = broker
        .client_config()
        .set("enable.idempotence", "true")
        .create()
        .expect("idempotent producer");
    producer
        .send(
            BaseRecord::<(), str>::to("orders")
                .payload(value)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn a_single_node_data_dir_from_before_the_quorum_upgrades_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = unpack_fixture(tmp.path());
    let mut broker = Broker::start_in(
        data_dir.clone(),
        tmp.path().join("broker.log"),
        &["--node-id", "1"],
        &[],
    );
    assert!(
        data_dir.join("metadata").exists(),
        "the node keeps a metadata log now"
    );
    check_everything_is_there(&broker, 0);
    let first = new_producer_id(&broker);
    assert!(
        first >= OLD_RESERVATION,
        "producer id {first} may have been handed out before the upgrade (reserved up to {OLD_RESERVATION})"
    );
    produce_idempotently(&broker, "after-upgrade");

    assert!(broker.stop(), "clean stop");
    broker.restart();
    check_everything_is_there(&broker, 1);
    let second = new_producer_id(&broker);
    assert!(
        second > first,
        "producer ids went back from {first} to {second} across a restart"
    );
    produce_idempotently(&broker, "after-restart");
}
