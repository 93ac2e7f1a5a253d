//! Dynamic broker configs and group configs across a restart and across brokers (they
//! live in the metadata log), spoken with raw
//! requests (the Python clients refuse the cluster-default broker resource ""
//! and cannot show the heartbeat interval a member is told), and keyless
//! records on a compacted topic through librdkafka.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::compression::Compression;
use weir_protocol::messages::consumer_group_heartbeat::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use weir_protocol::messages::describe_configs::{
    DescribeConfigsRequest, DescribeConfigsResource, DescribeConfigsResourceResult,
    DescribeConfigsResponse,
};
use weir_protocol::messages::incremental_alter_configs::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use weir_protocol::messages::produce::{
    PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
};
use weir_protocol::record::{Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};

const DESCRIBE_CONFIGS: i16 = 32;
const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
const CONSUMER_GROUP_HEARTBEAT: i16 = 68;
const PRODUCE: i16 = 0;
const INVALID_RECORD: i16 = 87;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_GROUP: i8 = 8;
const INVALID_REQUEST: i16 = 42;

/// Sends one request and returns the response body (header stripped).
/// `flexible` picks request header v2 and response header v1.
fn call<T: Encode>(broker: &Broker, api_key: i16, version: i16, flexible: bool, body: &T) -> Bytes {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(7);
    frame.put_i16(6);
    frame.put_slice(b"e2ecfg");
    if flexible {
        frame.put_u8(0);
    }
    body.encode(&mut frame, version).expect("encode request");
    let size = i32::try_from(frame.len() - 4).unwrap();
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    let mut stream = TcpStream::connect(broker.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&frame).expect("send");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("response length");
    let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(len)).unwrap()];
    stream.read_exact(&mut response).expect("response body");
    let header_bytes = if flexible { 5 } else { 4 };
    Bytes::from(response).slice(header_bytes..)
}

fn describe(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> (i16, Vec<DescribeConfigsResourceResult>) {
    let request = DescribeConfigsRequest {
        resources: vec![DescribeConfigsResource {
            resource_type,
            resource_name: name.to_string(),
            configuration_keys: None,
        }],
        include_synonyms: true,
        include_documentation: false,
    };
    let mut body = call(broker, DESCRIBE_CONFIGS, 3, false, &request);
    let response = DescribeConfigsResponse::decode(&mut body, 3).expect("decode DescribeConfigs");
    let result = response.results.into_iter().next().expect("one result");
    (result.error_code, result.configs)
}

fn config<'a>(
    configs: &'a [DescribeConfigsResourceResult],
    name: &str,
) -> &'a DescribeConfigsResourceResult {
    configs
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} not described"))
}

fn set(broker: &Broker, resource_type: i8, name: &str, key: &str, value: &str) -> i16 {
    let request = IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type,
            resource_name: name.to_string(),
            configs: vec![AlterableConfig {
                name: key.to_string(),
                config_operation: OP_SET,
                value: Some(value.to_string()),
            }],
        }],
        validate_only: false,
    };
    let mut body = call(broker, INCREMENTAL_ALTER_CONFIGS, 0, false, &request);
    let response = IncrementalAlterConfigsResponse::decode(&mut body, 0)
        .expect("decode IncrementalAlterConfigs");
    response.responses[0].error_code
}

fn heartbeat_interval_for(broker: &Broker, group: &str, topic: &str) -> i32 {
    let request = ConsumerGroupHeartbeatRequest {
        group_id: group.to_string(),
        member_id: String::new(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec![topic.to_string()]),
        topic_partitions: Some(Vec::new()),
        ..Default::default()
    };
    let mut body = call(broker, CONSUMER_GROUP_HEARTBEAT, 0, true, &request);
    let response = ConsumerGroupHeartbeatResponse::decode(&mut body, 0).expect("decode heartbeat");
    assert_eq!(response.error_code, 0, "{:?}", response.error_message);
    response.heartbeat_interval_ms
}

#[test]
fn dynamic_broker_configs_apply_to_topics_and_survive_restart() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, "dyn-plain", 1, &[]);
    create_topic(&broker, "dyn-pinned", 1, &[("retention.ms", "3600000")]);
    assert_eq!(
        set(&broker, RESOURCE_BROKER, "1", "log.retention.ms", "1234567"),
        0
    );
    assert_eq!(
        set(&broker, RESOURCE_BROKER, "", "log.segment.bytes", "2097152"),
        0
    );
    // Read-only, and another broker's id: INVALID_REQUEST, as in Kafka.
    assert_eq!(
        set(&broker, RESOURCE_BROKER, "1", "num.partitions", "3"),
        INVALID_REQUEST
    );
    assert_eq!(
        set(&broker, RESOURCE_BROKER, "7", "log.retention.ms", "1000"),
        INVALID_REQUEST
    );
    let check = |broker: &Broker| {
        let (error, configs) = describe(broker, RESOURCE_BROKER, "1");
        assert_eq!(error, 0);
        let retention = config(&configs, "log.retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1234567"));
        assert_eq!(retention.config_source, SOURCE_DYNAMIC_BROKER);
        assert!(!retention.read_only);
        let segment = config(&configs, "log.segment.bytes");
        assert_eq!(segment.value.as_deref(), Some("2097152"));
        assert_eq!(segment.config_source, SOURCE_DYNAMIC_DEFAULT_BROKER);
        let sources: Vec<i8> = segment.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(sources, [SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_DEFAULT]);
        let partitions = config(&configs, "num.partitions");
        assert_eq!(partitions.config_source, SOURCE_DEFAULT);
        assert!(partitions.read_only);
        // The cluster-default resource lists only what is set at that level.
        let (error, defaults) = describe(broker, RESOURCE_BROKER, "");
        assert_eq!(error, 0);
        let names: Vec<&str> = defaults.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["log.segment.bytes"]);
        let (_, plain) = describe(broker, RESOURCE_TOPIC, "dyn-plain");
        let retention = config(&plain, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1234567"));
        assert_eq!(retention.config_source, SOURCE_DYNAMIC_BROKER);
        assert_eq!(
            config(&plain, "segment.bytes").value.as_deref(),
            Some("2097152")
        );
        let (_, pinned) = describe(broker, RESOURCE_TOPIC, "dyn-pinned");
        let retention = config(&pinned, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.config_source, SOURCE_TOPIC);
    };
    check(&broker);
    assert!(broker.stop(), "clean stop");
    broker.restart();
    check(&broker);
}

#[test]
fn group_config_sets_the_heartbeat_interval_members_are_told_and_survives_restart() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, "grp-cfg", 2, &[]);
    // As a client would: the first lookup creates __consumer_offsets.
    super::harness::wait_for_coordinator(&broker, "tuned", 0);
    assert_eq!(
        set(
            &broker,
            RESOURCE_GROUP,
            "tuned",
            "consumer.heartbeat.interval.ms",
            "6000"
        ),
        0
    );
    assert_eq!(heartbeat_interval_for(&broker, "tuned", "grp-cfg"), 6000);
    assert_eq!(heartbeat_interval_for(&broker, "untuned", "grp-cfg"), 5000);
    assert!(broker.stop(), "clean stop");
    broker.restart();
    let (error, configs) = describe(&broker, RESOURCE_GROUP, "tuned");
    assert_eq!(error, 0);
    let interval = config(&configs, "consumer.heartbeat.interval.ms");
    assert_eq!(interval.value.as_deref(), Some("6000"));
    assert_eq!(interval.config_source, SOURCE_GROUP);
    assert_eq!(heartbeat_interval_for(&broker, "tuned", "grp-cfg"), 6000);
}

/// Sends each delivery outcome back to the test.
struct Outcomes(mpsc::Sender<Result<(), KafkaError>>);

impl ClientContext for Outcomes {}

impl ProducerContext for Outcomes {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        let _ = self
            .0
            .send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

#[test]
fn keyless_records_on_a_compacted_topic_are_invalid_record_through_librdkafka() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "compacted", 1, &[("cleanup.policy", "compact")]);
    let (tx, rx) = mpsc::channel();
    let producer: ThreadedProducer<Outcomes> = broker
        .client_config()
        .set("linger.ms", "0")
        .set("retries", "0")
        .create_with_context(Outcomes(tx))
        .expect("producer");
    let send = |key: Option<&str>| {
        let mut record = BaseRecord::to("compacted").payload("v");
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
        producer.flush(Duration::from_secs(30)).expect("flush");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("delivery report")
    };
    match send(None) {
        Err(KafkaError::MessageProduction(code)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidRecord)
        }
        other => panic!("keyless record: expected INVALID_RECORD, got {other:?}"),
    }
    assert!(send(Some("k")).is_ok(), "keyed record must be stored");
}

#[test]
fn keyless_records_in_a_compressed_batch_are_named_in_record_errors() {
    let broker = Broker::start(&[]);
    create_topic(
        &broker,
        "compacted-raw",
        1,
        &[("cleanup.policy", "compact")],
    );
    let record = |offset_delta: i32, key: Option<&'static [u8]>| Record {
        offset_delta,
        timestamp_delta: 0,
        key: key.map(Bytes::from_static),
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Compressed, so the broker must look inside to find the keys.
    let batch = RecordBatchBuilder::new(Compression::Lz4)
        .base_timestamp(now_ms)
        .max_timestamp(now_ms)
        .record(record(0, Some(b"a")))
        .record(record(1, None))
        .record(record(2, Some(b"c")))
        .record(record(3, None))
        .build()
        .expect("batch");
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: "compacted-raw".into(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(batch),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut body = call(&broker, PRODUCE, 8, false, &request);
    let response = ProduceResponse::decode(&mut body, 8).expect("decode produce");
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, INVALID_RECORD);
    assert_eq!(partition.base_offset, -1);
    let indexes: Vec<i32> = partition
        .record_errors
        .iter()
        .map(|e| e.batch_index)
        .collect();
    assert_eq!(indexes, [1, 3]);
    let message = partition.error_message.as_deref().unwrap_or_default();
    assert!(
        message.contains(
            "Compacted topic cannot accept message without key in topic partition compacted-raw-0"
        ),
        "{message}"
    );
}

/// The value and source of `key` in `resource`'s description on `broker`, if described.
fn described(broker: &Broker, resource_type: i8, name: &str, key: &str) -> Option<(String, i8)> {
    let (error, configs) = describe(broker, resource_type, name);
    assert_eq!(error, 0, "DescribeConfigs {name} on {}", broker.addr);
    configs
        .iter()
        .find(|c| c.name == key)
        .map(|c| (c.value.clone().unwrap_or_default(), c.config_source))
}

/// Dynamic broker configs (the cluster default and one broker's) and group configs are
/// Config records in the metadata log: set through one broker, every broker shows them,
/// and a broker killed and restarted still does.
#[test]
fn dynamic_configs_set_on_one_broker_reach_every_broker() {
    use super::cluster_harness::{Cluster, wait_for};
    let mut cluster = Cluster::start(&[]);
    assert_eq!(
        set(
            cluster.node(1),
            RESOURCE_BROKER,
            "",
            "log.retention.ms",
            "2345678"
        ),
        0
    );
    assert_eq!(
        set(
            cluster.node(2),
            RESOURCE_BROKER,
            "2",
            "log.segment.bytes",
            "2097152"
        ),
        0
    );
    super::harness::wait_for_coordinator(cluster.node(3), "tuned", 0);
    assert_eq!(
        set(
            cluster.node(3),
            RESOURCE_GROUP,
            "tuned",
            "consumer.heartbeat.interval.ms",
            "6000"
        ),
        0
    );
    let everywhere = |cluster: &Cluster| {
        for id in 1..=3 {
            let node = cluster.node(id);
            let retention = described(node, RESOURCE_BROKER, &id.to_string(), "log.retention.ms");
            if retention != Some(("2345678".into(), SOURCE_DYNAMIC_DEFAULT_BROKER)) {
                return None;
            }
            let segment = described(node, RESOURCE_BROKER, &id.to_string(), "log.segment.bytes");
            let want_segment_source = if id == 2 {
                SOURCE_DYNAMIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            if segment.map(|(_, source)| source) != Some(want_segment_source) {
                return None;
            }
            let group = described(
                node,
                RESOURCE_GROUP,
                "tuned",
                "consumer.heartbeat.interval.ms",
            );
            if group != Some(("6000".into(), SOURCE_GROUP)) {
                return None;
            }
        }
        Some(())
    };
    wait_for(
        "the dynamic configs on every broker",
        Duration::from_secs(30),
        || everywhere(&cluster),
    );
    cluster.node_mut(3).kill9();
    cluster.node_mut(3).restart();
    wait_for(
        "the dynamic configs on every broker after node 3's restart",
        Duration::from_secs(30),
        || everywhere(&cluster),
    );
}

/// A data directory from when a broker kept its dynamic configs on its own (a
/// `meta/dynamic-configs.json` without the mark of a copy of the metadata log) has them
/// imported into the log at start: they stay after the file is gone.
#[test]
fn dynamic_configs_kept_by_an_older_broker_are_imported_into_the_metadata_log() {
    let mut broker = Broker::start(&[]);
    super::harness::wait_for_coordinator(&broker, "old-group", 0);
    assert!(broker.stop(), "clean stop");
    let file = broker.data_dir.join("meta").join("dynamic-configs.json");
    std::fs::write(
        &file,
        r#"{"broker_default": {"log.retention.ms": "3456789"},
            "broker": {"log.segment.bytes": "3145728"},
            "groups": {"old-group": {"consumer.heartbeat.interval.ms": "7000"}}}"#,
    )
    .unwrap();
    broker.restart();
    let check = |broker: &Broker| {
        assert_eq!(
            described(broker, RESOURCE_BROKER, "", "log.retention.ms"),
            Some(("3456789".into(), SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        assert_eq!(
            described(broker, RESOURCE_BROKER, "1", "log.segment.bytes"),
            Some(("3145728".into(), SOURCE_DYNAMIC_BROKER))
        );
        assert_eq!(
            described(
                broker,
                RESOURCE_GROUP,
                "old-group",
                "consumer.heartbeat.interval.ms"
            ),
            Some(("7000".into(), SOURCE_GROUP))
        );
    };
    check(&broker);
    // The file is only a copy now: without it, the metadata log still has them.
    assert!(broker.stop(), "clean stop");
    std::fs::remove_file(&file).unwrap();
    broker.restart();
    check(&broker);
}
