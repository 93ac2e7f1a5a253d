//! A clean restart keeps topics, their configs and their data.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::harness::{Broker, create_topic};
use super::rdkafka_roundtrip::{consume_all, expected, produce_all};

#[test]
fn restart_keeps_topics_configs_and_data() {
    let mut broker = Broker::start(&[]);
    create_topic(
        &broker,
        "kept",
        4,
        &[("retention.ms", "123456789"), ("cleanup.policy", "delete")],
    );
    let acks = produce_all(&broker, "kept", "lz4", 5_000);
    assert!(acks.failed.lock().unwrap().is_empty());
    assert!(broker.stop(), "broker must exit cleanly on SIGTERM");
    broker.restart();

    let consumer: BaseConsumer = broker.client_config().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some("kept"), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(
        metadata.topics()[0].partitions().len(),
        4,
        "partition count must survive restart"
    );

    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().expect("admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let described = runtime
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic("kept")], &AdminOptions::new()))
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .unwrap()
        .expect("topic configs");
    let retention = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("123456789"));
    assert!(
        !retention.is_default,
        "an explicit override must not be reported as default"
    );

    let placed = acks.placed.lock().unwrap().clone();
    let seen = consume_all(&broker, "kept", 4, placed.len());
    assert_eq!(seen.len(), placed.len());
    for (partition, offset, record) in seen {
        let index = placed[&(partition, offset)];
        assert_eq!(record, expected(index));
    }
}
