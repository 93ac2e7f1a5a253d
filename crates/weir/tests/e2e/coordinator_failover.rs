//! A group's committed offsets survive the loss of the broker that coordinates it (issue 14
//! item 6): `__consumer_offsets` is replicated, and the coordinator moves with the leadership
//! of the group's partition and reloads the group from the replicated log.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use weir_protocol::api::ApiKey;
use weir_protocol::messages::find_coordinator::{FindCoordinatorRequest, FindCoordinatorResponse};

use super::cluster_harness::{Cluster, call, metadata, wait_for};

const TOPIC: &str = "coordinated";
const GROUP: &str = "survivor";
const COMMITTED: i64 = 17;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The group's coordinator as `node` answers FindCoordinator (v1: one key).
fn coordinator(cluster: &Cluster, node: i32) -> Option<i32> {
    let request = FindCoordinatorRequest {
        key: GROUP.into(),
        key_type: 0,
        ..Default::default()
    };
    let answer: FindCoordinatorResponse = call(
        cluster.node(node).addr,
        ApiKey::FindCoordinator,
        1,
        &request,
    )
    .ok()?;
    (answer.error_code == 0).then_some(answer.node_id)
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

#[test]
fn committed_offsets_survive_kill_9_of_the_groups_coordinator() {
    let mut cluster = Cluster::start(&[]);
    let all: Vec<String> = (1..=3)
        .map(|id| cluster.node(id).addr.to_string())
        .collect();
    let admin: AdminClient<DefaultClientContext> =
        cluster.node(1).client_config().create().expect("admin");
    let rt = runtime();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: FutureProducer = cluster
        .node(1)
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    for n in 0..30 {
        let sent = rt.block_on(producer.send(
            FutureRecord::<(), str>::to(TOPIC).payload(&format!("r{n}")),
            Duration::from_secs(30),
        ));
        assert!(sent.is_ok(), "produce {n}: {sent:?}");
    }

    // Commit through the group's coordinator.
    let first = consumer(&all.join(","));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(COMMITTED))
        .unwrap();
    wait_for("the first commit", Duration::from_secs(30), || {
        first.commit(&tpl, CommitMode::Sync).ok()
    });
    drop(first);
    // The offsets topic is replicated to all three, each replica in sync.
    wait_for(
        "__consumer_offsets to be in sync on three replicas",
        Duration::from_secs(30),
        || {
            let m = metadata(cluster.node(1).addr, Some(&["__consumer_offsets"])).ok()?;
            let t = m.topics.first()?;
            (t.error_code == 0
                && !t.partitions.is_empty()
                && t.partitions
                    .iter()
                    .all(|p| p.replica_nodes.len() == 3 && p.isr_nodes.len() == 3))
            .then_some(())
        },
    );
    let victim = wait_for("the group's coordinator", Duration::from_secs(20), || {
        coordinator(&cluster, 1)
    });
    cluster.node_mut(victim).kill9();

    // Another broker takes the group over, with the offset the dead one acknowledged.
    let survivors: Vec<i32> = (1..=3).filter(|id| *id != victim).collect();
    let new_coordinator = wait_for(
        "another broker to coordinate the group",
        Duration::from_secs(30),
        || coordinator(&cluster, survivors[0]).filter(|id| *id != victim),
    );
    assert!(survivors.contains(&new_coordinator));
    let bootstrap: Vec<String> = survivors
        .iter()
        .map(|id| cluster.node(*id).addr.to_string())
        .collect();
    let second = consumer(&bootstrap.join(","));
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(TOPIC, 0);
    let committed = wait_for(
        "the committed offset from the new coordinator",
        Duration::from_secs(30),
        || {
            let got = second
                .committed_offsets(wanted.clone(), Duration::from_secs(5))
                .ok()?;
            match got.find_partition(TOPIC, 0)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }
        },
    );
    assert_eq!(
        committed, COMMITTED,
        "the offset committed before the coordinator died"
    );
}
