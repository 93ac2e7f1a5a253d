//! Topic administration through librdkafka's admin API: validation errors,
//! validate_only, LogAppendTime topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Broker, create_topic};

fn admin(broker: &Broker) -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime) {
    let admin = broker.client_config().create().expect("admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (admin, runtime)
}

fn create_error(
    broker: &Broker,
    topic: NewTopic<'_>,
    options: &AdminOptions,
) -> Option<RDKafkaErrorCode> {
    let (admin, runtime) = admin(broker);
    let results = runtime
        .block_on(admin.create_topics([&topic], options))
        .expect("request");
    results
        .into_iter()
        .next()
        .unwrap()
        .err()
        .map(|(_, code)| code)
}

#[test]
fn create_topics_rejects_bad_requests_with_kafka_codes() {
    let broker = Broker::start(&[]);
    let plain = AdminOptions::new();
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("rf3", 1, TopicReplication::Fixed(3)),
            &plain
        ),
        Some(RDKafkaErrorCode::InvalidReplicationFactor),
        "replication factor above live brokers"
    );
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("badcfg", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon"),
            &plain
        ),
        Some(RDKafkaErrorCode::InvalidConfig)
    );
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("nosuch", 1, TopicReplication::Fixed(1)).set("no.such.config", "1"),
            &plain
        ),
        Some(RDKafkaErrorCode::InvalidConfig)
    );
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
            &plain
        ),
        Some(RDKafkaErrorCode::InvalidTopic)
    );
    create_topic(&broker, "dotted.name", 1, &[]);
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("dotted_name", 1, TopicReplication::Fixed(1)),
            &plain
        ),
        Some(RDKafkaErrorCode::InvalidTopic),
        "names differing only in '.' and '_' collide"
    );
    // validate_only checks everything but creates nothing.
    let validate = AdminOptions::new().validate_only(true);
    assert_eq!(
        create_error(
            &broker,
            NewTopic::new("dry", 3, TopicReplication::Fixed(1)),
            &validate
        ),
        None
    );
    let consumer: BaseConsumer = broker.client_config().create().unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(
        metadata.topics().iter().all(|t| t.name() != "dry"),
        "validate_only must not create the topic"
    );
}

#[test]
fn log_append_time_topic_stamps_records_with_broker_time() {
    let broker = Broker::start(&[]);
    create_topic(
        &broker,
        "stamped",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("acks", "all").create().unwrap();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    producer
        .send(
            BaseRecord::<str, str>::to("stamped")
                .key("k")
                .payload("v")
                .timestamp(1_000),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "weir-e2e-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("stamped", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            match m.timestamp() {
                Timestamp::LogAppendTime(ts) => {
                    assert!(
                        ts >= before_ms,
                        "log append time {ts} is before the send at {before_ms}"
                    );
                    return;
                }
                other => panic!("expected a LogAppendTime timestamp, got {other:?}"),
            }
        }
    }
    panic!("record never arrived");
}
