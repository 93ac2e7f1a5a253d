//! What a leader answers to fetches that claim to be replicas, and what a follower answers to
//! clients (issue 14 item 8), on three real `weir serve` processes. Raw requests: no client
//! sends a replica fetch, and the error codes are the point.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use weir_protocol::api::ApiKey;
use weir_protocol::messages::create_topics::{
    CreatableReplicaAssignment, CreatableTopic, CreateTopicsRequest, CreateTopicsResponse,
};
use weir_protocol::messages::fetch::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, ReplicaState,
};
use weir_protocol::messages::metadata::MetadataResponsePartition;

use super::cluster_harness::{Cluster, call, metadata, wait_for};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const FENCED_LEADER_EPOCH: i16 = 74;
const TOPIC: &str = "replica-fetch";

/// Creates TOPIC with one partition on replicas [1, 2] (node 3 holds none) and waits until
/// its ISR is both.
fn topic_on_one_and_two(cluster: &Cluster) -> ([u8; 16], MetadataResponsePartition) {
    // A raw CreateTopics: the assignment is the point, and Kafka's rule (no partition count
    // or replication factor beside an assignment) is what clients differ on.
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: TOPIC.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![CreatableReplicaAssignment {
                partition_index: 0,
                broker_ids: vec![1, 2],
            }],
            configs: Vec::new(),
        }],
        timeout_ms: 30_000,
        validate_only: false,
    };
    let created: CreateTopicsResponse =
        call(cluster.node(1).addr, ApiKey::CreateTopics, 5, &request).expect("create topics");
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    wait_for("the ISR to be [1, 2]", Duration::from_secs(30), || {
        let m = metadata(cluster.node(1).addr, Some(&[TOPIC])).ok()?;
        let t = m.topics.first()?;
        let p = t.partitions.first()?;
        let mut isr = p.isr_nodes.clone();
        isr.sort_unstable();
        (p.leader_id == 1 && isr == [1, 2]).then(|| (t.topic_id, p.clone()))
    })
}

fn fetch(
    addr: SocketAddr,
    topic_id: [u8; 16],
    replica: Option<(i32, i64)>,
    current_leader_epoch: i32,
) -> i16 {
    let version = 15;
    let (replica_id, replica_epoch) = replica.unwrap_or((-1, -1));
    let request = FetchRequest {
        replica_id,
        replica_state: ReplicaState {
            replica_id,
            replica_epoch,
        },
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: TOPIC.into(),
            topic_id,
            partitions: vec![FetchPartition {
                partition: 0,
                current_leader_epoch,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    let response: FetchResponse = call(addr, ApiKey::Fetch, version, &request).expect("fetch");
    assert_eq!(response.error_code, 0, "{response:?}");
    response.responses[0].partitions[0].error_code
}

#[test]
fn replica_fetches_must_come_from_a_registered_replica_with_its_epoch() {
    let cluster = Cluster::start(&[]);
    let (topic_id, p) = topic_on_one_and_two(&cluster);
    let leader = cluster.node(1).addr;
    let epoch = p.leader_epoch;
    // Node 3 is registered but holds no replica.
    let codes: BTreeMap<&str, i16> = [
        (
            "not a replica",
            fetch(leader, topic_id, Some((3, -1)), epoch),
        ),
        // A real replica's id with an epoch that is not its registration's: someone else.
        (
            "forged epoch",
            fetch(leader, topic_id, Some((2, 999_999)), epoch),
        ),
        // No epoch at all (what a version below 15 would send): refused too.
        ("no epoch", fetch(leader, topic_id, Some((2, -1)), epoch)),
        (
            "unknown broker",
            fetch(leader, topic_id, Some((42, 7)), epoch),
        ),
    ]
    .into_iter()
    .collect();
    for (case, code) in &codes {
        assert_eq!(
            *code, NOT_LEADER_OR_FOLLOWER,
            "{case}: a replica fetch that is not from replica 2 must be refused"
        );
    }
    // KIP-320: the fetcher's view of the leader epoch is checked, newer or older.
    assert_eq!(
        fetch(leader, topic_id, None, epoch + 5),
        UNKNOWN_LEADER_EPOCH
    );
    if epoch > 0 {
        assert_eq!(
            fetch(leader, topic_id, None, epoch - 1),
            FENCED_LEADER_EPOCH
        );
    }
    // A consumer at the follower is sent to the leader.
    assert_eq!(
        fetch(cluster.node(2).addr, topic_id, None, epoch),
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        fetch(cluster.node(3).addr, topic_id, None, epoch),
        NOT_LEADER_OR_FOLLOWER,
        "a broker without a replica does not serve it either"
    );
    // The real follower still replicates: the ISR stays [1, 2] and a produce is acknowledged
    // with acks=all.
    let producer: rdkafka::producer::FutureProducer = cluster
        .node(1)
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let delivered = runtime.block_on(producer.send(
        rdkafka::producer::FutureRecord::<(), str>::to(TOPIC).payload("x"),
        Duration::from_secs(30),
    ));
    assert!(delivered.is_ok(), "acks=all produce failed: {delivered:?}");
}

const SESSION_TOPIC: &str = "replica-session";
/// Short, so that a follower whose position on an idle partition stopped being noted would
/// leave that partition's ISR within the test.
const SESSION_TEST_LAG_MS: u64 = 2_000;

/// Follower 2 fetches both partitions of SESSION_TOPIC from leader 1 in one KIP-227 session.
/// The session must go incremental (the leader logs it), and the incremental fetches must
/// keep feeding the leader's view of the follower: with records going only to partition 0,
/// partition 1 is never listed again, yet its ISR keeps the follower (its cached fetch offset
/// is noted on every fetch), and partition 0's acks=all produces keep being acknowledged.
#[test]
fn follower_fetch_session_goes_incremental_and_keeps_idle_partitions_in_sync() {
    let lag = SESSION_TEST_LAG_MS.to_string();
    let cluster = Cluster::start(&["--replica-lag-time-max-ms", &lag]);
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: SESSION_TOPIC.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: (0..2)
                .map(|partition_index| CreatableReplicaAssignment {
                    partition_index,
                    broker_ids: vec![1, 2],
                })
                .collect(),
            configs: Vec::new(),
        }],
        timeout_ms: 30_000,
        validate_only: false,
    };
    let created: CreateTopicsResponse =
        call(cluster.node(1).addr, ApiKey::CreateTopics, 5, &request).expect("create topics");
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let full_isr = || {
        let m = metadata(cluster.node(1).addr, Some(&[SESSION_TOPIC])).ok()?;
        let t = m.topics.first()?;
        let all = t.partitions.len() == 2
            && t.partitions.iter().all(|p| {
                let mut isr = p.isr_nodes.clone();
                isr.sort_unstable();
                p.leader_id == 1 && isr == [1, 2]
            });
        all.then_some(())
    };
    wait_for(
        "the ISR of both partitions to be [1, 2]",
        Duration::from_secs(30),
        full_isr,
    );
    wait_for(
        "follower 2's fetch session with leader 1 to go incremental",
        Duration::from_secs(20),
        || {
            let log = cluster.node(1).log();
            log.lines()
                .any(|l| {
                    l.contains("replica fetch session went incremental") && l.contains("Replica(2)")
                })
                .then_some(())
        },
    );
    let producer: rdkafka::producer::FutureProducer = cluster
        .node(1)
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Three lag times of produce to partition 0 only.
    let until = std::time::Instant::now() + Duration::from_millis(3 * SESSION_TEST_LAG_MS);
    let mut acked = 0;
    while std::time::Instant::now() < until {
        let delivered = runtime.block_on(
            producer.send(
                rdkafka::producer::FutureRecord::<(), str>::to(SESSION_TOPIC)
                    .partition(0)
                    .payload("x"),
                Duration::from_secs(10),
            ),
        );
        assert!(delivered.is_ok(), "acks=all produce failed: {delivered:?}");
        acked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        acked > 10,
        "only {acked} acks=all produces in {SESSION_TEST_LAG_MS} ms x 3"
    );
    assert!(
        full_isr().is_some(),
        "an idle partition's follower left the ISR while its session was incremental: {:?}",
        metadata(cluster.node(1).addr, Some(&[SESSION_TOPIC]))
    );
}
