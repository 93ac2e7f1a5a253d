//! A group's committed offsets survive the loss of the broker that coordinates it (issue 14
//! item 6): `__consumer_offsets` is replicated, and the coordinator moves with the leadership
//! of the group's partition and reloads the group from the replicated log.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
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

/// The coordinator of `key` (key type 0: a group, 1: a transactional id) as `node` answers
/// FindCoordinator (v1: one key).
fn coordinator_of(cluster: &Cluster, node: i32, key: &str, key_type: i8) -> Option<i32> {
    let request = FindCoordinatorRequest {
        key: key.into(),
        key_type,
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

/// The group's coordinator as `node` answers it.
fn coordinator(cluster: &Cluster, node: i32) -> Option<i32> {
    coordinator_of(cluster, node, GROUP, 0)
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

/// A transaction whose coordinator dies right after its PrepareCommit record is replicated
/// is completed by the broker that takes `__transaction_state` over: the markers are written,
/// read_committed consumers get the records, and the transactional id works again.
///
/// The new coordinator used to load the Prepare state and leave it there (only a restart
/// completed prepared transactions), so every InitProducerId of the id got
/// CONCURRENT_TRANSACTIONS for good: the 1,000-fault soak's transactional producer made 40
/// transactions in 45 minutes.
#[test]
fn a_transaction_prepared_when_its_coordinator_dies_is_completed_by_the_next_one() {
    const TXN_TOPIC: &str = "txn-failover";
    const TXN_ID: &str = "failover-tx";
    // Every node aborts right after a Prepare record is durable: only the first coordinator
    // meets one (the next completes the transaction from its log, without preparing).
    let mut cluster = Cluster::start_with_env(
        3,
        &["--transaction-state-partitions", "1"],
        &[("WEIR_TEST_CRASH_AFTER_PREPARE", "1")],
    );
    let all: Vec<String> = (1..=3)
        .map(|id| cluster.node(id).addr.to_string())
        .collect();
    let admin: AdminClient<DefaultClientContext> =
        cluster.node(1).client_config().create().expect("admin");
    let rt = runtime();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(TXN_TOPIC, 1, TopicReplication::Fixed(3))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    drop(admin);

    let transactional = |bootstrap: &str| -> FutureProducer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("transactional.id", TXN_ID)
            .set("transaction.timeout.ms", "60000")
            .create()
            .expect("transactional producer")
    };
    let producer = transactional(&all.join(","));
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    let victim = wait_for(
        "the transaction coordinator",
        Duration::from_secs(20),
        || coordinator_of(&cluster, 1, TXN_ID, 1),
    );
    producer.begin_transaction().expect("begin");
    for n in 0..3 {
        let sent = rt.block_on(producer.send(
            FutureRecord::<(), str>::to(TXN_TOPIC).payload(&format!("t{n}")),
            Duration::from_secs(30),
        ));
        assert!(sent.is_ok(), "produce {n}: {sent:?}");
    }
    // The coordinator aborts once PrepareCommit is on the in-sync replicas; the client's
    // commit may or may not hear of the outcome.
    let _ = producer.commit_transaction(Duration::from_secs(10));
    assert!(
        cluster
            .node_mut(victim)
            .wait_for_exit(Duration::from_secs(20))
            .is_some(),
        "the coordinator should stop after its prepare record"
    );
    drop(producer);

    let survivors: Vec<String> = (1..=3)
        .filter(|id| *id != victim)
        .map(|id| cluster.node(id).addr.to_string())
        .collect();
    let survivors = survivors.join(",");
    // A new producer of the same id: its InitProducerId gets CONCURRENT_TRANSACTIONS until
    // the prepared transaction is complete.
    wait_for(
        "the transactional id to be usable again",
        Duration::from_secs(60),
        || {
            transactional(&survivors)
                .init_transactions(Duration::from_secs(10))
                .ok()
        },
    );
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &survivors)
        .set("broker.address.family", "v4")
        .set("group.id", "failover-reader")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TXN_TOPIC, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).expect("assign");
    let mut seen: Vec<String> = Vec::new();
    wait_for(
        "the committed records for read_committed",
        Duration::from_secs(30),
        || {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) {
                use rdkafka::Message;
                seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            (seen.len() >= 3).then_some(())
        },
    );
    assert_eq!(seen, ["t0", "t1", "t2"]);
}
