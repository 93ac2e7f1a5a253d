//! Three `weir serve` processes on 127.0.0.1 as one cluster, spoken to by
//! librdkafka: a topic's partitions spread over the brokers, clients
//! bootstrapped anywhere reach every leader, a consumer group spans brokers,
//! and every broker tells the same Metadata. Then failures: kill -9 of the
//! active controller (a new one is elected, admin requests work again, no
//! topic is lost) and of a partition leader (its RF=1 partitions go offline
//! after the session timeout and come back with their data).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use weir_protocol::messages::metadata::MetadataResponse;

use super::cluster_harness::{Cluster, SESSION_TIMEOUT_MS, canonical, metadata, wait_for};
use super::harness::{Broker, create_topic};

const PARTITIONS: i32 = 12;
const LEADER_NOT_AVAILABLE: i16 = 5;
/// Generous bound for anything that converges (elections, rebalances,
/// metadata propagation); tests wait for conditions, never for time.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until every node in `ids` answers Metadata (all topics) with the
/// same content, and returns it. On timeout, panics showing the answers.
fn agreed_metadata(cluster: &Cluster, ids: &[i32]) -> MetadataResponse {
    let started = Instant::now();
    loop {
        let answers: Vec<_> = ids
            .iter()
            .map(|id| metadata(cluster.node(*id).addr, None).map(canonical))
            .collect();
        if let Ok(first) = &answers[0]
            && answers.iter().all(|a| a.as_ref().ok() == Some(first))
        {
            return first.clone();
        }
        if started.elapsed() > CONVERGE_TIMEOUT {
            let shown: Vec<String> = ids
                .iter()
                .zip(&answers)
                .map(|(id, a)| format!("node {id}: {a:#?}"))
                .collect();
            panic!(
                "brokers {ids:?} never agreed on Metadata:\n{}",
                shown.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn producer(broker: &Broker) -> ThreadedProducer<DefaultProducerContext> {
    broker
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Sends (key, value, partition) records and waits for every ack; panics on
/// any delivery error.
fn produce_all(broker: &Broker, topic: &str, records: &[(String, String, i32)]) {
    let producer = producer(broker);
    for (key, value, partition) in records {
        let record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str())
            .partition(*partition);
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Reads `partitions` of `topic` from the beginning through `broker` until
/// `want` records arrived; returns (partition, key, value) per record.
fn read_back(
    broker: &Broker,
    topic: &str,
    partitions: &[i32],
    want: usize,
) -> Vec<(i32, String, String)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", format!("reader-{}", broker.addr.port()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < want {
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "read {} of {want} records of {topic} through {}",
            got.len(),
            broker.addr
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(text_of(&m)),
            Some(Err(e)) => eprintln!("consumer error (retried): {e}"),
            None => {}
        }
    }
    got
}

fn text_of(m: &rdkafka::message::BorrowedMessage<'_>) -> (i32, String, String) {
    let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
    let value = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8 value");
    (m.partition(), key, value)
}

/// CreateTopics through `broker`, retried while it fails (no controller
/// yet). A retry that finds the topic already there counts: an earlier
/// attempt may have been committed after the client gave up on it.
fn create_topic_retrying(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let started = Instant::now();
    let mut failures = Vec::new();
    loop {
        let outcome = runtime.block_on(admin.create_topics([&topic], &options));
        match outcome.as_deref() {
            Ok([Ok(_)]) => return,
            Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) if !failures.is_empty() => return,
            other => failures.push(format!("{other:?}")),
        }
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "CreateTopics {name} never succeeded: {failures:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition index -> leader id for `topic` in `m`.
fn leaders(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, i32> {
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .unwrap_or_else(|| panic!("{topic} missing from {m:#?}"));
    assert_eq!(t.error_code, 0, "{topic}: {t:?}");
    t.partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id))
        .collect()
}

fn topic_names(m: &MetadataResponse) -> BTreeSet<String> {
    m.topics.iter().filter_map(|t| t.name.clone()).collect()
}

/// KIP-951: a produce or fetch sent to a broker that does not lead the
/// partition is NOT_LEADER_OR_FOLLOWER with the leader, its epoch and its
/// endpoint in the answer, so a client re-routes without asking Metadata.
fn not_leader_answers_name_the_leader(cluster: &Cluster, m: &MetadataResponse, topic: &str) {
    use weir_protocol::api::ApiKey;
    use weir_protocol::messages::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
    use weir_protocol::messages::produce::{
        PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
    };
    use weir_protocol::record::{Compression, Record, RecordBatchBuilder};
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .unwrap();
    let p = t
        .partitions
        .iter()
        .find(|p| p.leader_id == 1)
        .expect("a partition led by 1");
    let batch = RecordBatchBuilder::new(Compression::None)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(bytes::Bytes::from_static(b"misrouted")),
            headers: Vec::new(),
        })
        .build()
        .unwrap();
    let produce = ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: topic.to_string(),
            partition_data: vec![PartitionProduceData {
                index: p.partition_index,
                records: Some(batch),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer: ProduceResponse =
        super::cluster_harness::call(cluster.node(2).addr, ApiKey::Produce, 11, &produce).unwrap();
    let part = &answer.responses[0].partition_responses[0];
    assert_eq!(part.error_code, 6, "NOT_LEADER_OR_FOLLOWER: {part:?}");
    assert_eq!(
        (
            part.current_leader.leader_id,
            part.current_leader.leader_epoch
        ),
        (1, p.leader_epoch)
    );
    let port = i32::from(cluster.node(1).addr.port());
    assert!(
        answer
            .node_endpoints
            .iter()
            .any(|n| n.node_id == 1 && n.port == port),
        "{:?}",
        answer.node_endpoints
    );
    let fetch = FetchRequest {
        replica_id: -1,
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            topic: String::new(),
            topic_id: t.topic_id,
            partitions: vec![FetchPartition {
                partition: p.partition_index,
                current_leader_epoch: -1,
                fetch_offset: 0,
                log_start_offset: -1,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    let answer: FetchResponse =
        super::cluster_harness::call(cluster.node(3).addr, ApiKey::Fetch, 16, &fetch).unwrap();
    let part = &answer.responses[0].partitions[0];
    assert_eq!(part.error_code, 6, "NOT_LEADER_OR_FOLLOWER: {part:?}");
    assert_eq!(
        (
            part.current_leader.leader_id,
            part.current_leader.leader_epoch
        ),
        (1, p.leader_epoch)
    );
    assert!(
        answer
            .node_endpoints
            .iter()
            .any(|n| n.node_id == 1 && n.port == port),
        "{:?}",
        answer.node_endpoints
    );
}

#[test]
fn clients_use_all_three_brokers_and_every_broker_tells_the_same_metadata() {
    let cluster = Cluster::start(&["--group-initial-rebalance-delay-ms", "100"]);
    let topic = "spread";
    create_topic(cluster.node(1), topic, PARTITIONS, &[]);

    // Placement: every broker leads a third of the partitions, each an RF=1
    // partition whose only replica (and ISR member) is its leader.
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    assert_eq!(
        m.brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for b in &m.brokers {
        assert_eq!(
            (b.host.as_str(), b.port),
            ("127.0.0.1", i32::from(cluster.node(b.node_id).addr.port())),
            "broker {} advertises its own listener",
            b.node_id
        );
    }
    assert!((1..=3).contains(&m.controller_id), "{m:#?}");
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .expect("topic in metadata");
    assert_eq!(t.partitions.len(), PARTITIONS as usize);
    let mut led = BTreeMap::<i32, usize>::new();
    for p in &t.partitions {
        assert_eq!(p.error_code, 0, "{p:?}");
        assert_eq!(p.replica_nodes, vec![p.leader_id], "{p:?}");
        assert_eq!(p.isr_nodes, vec![p.leader_id], "{p:?}");
        assert!(p.leader_epoch >= 0, "{p:?}");
        *led.entry(p.leader_id).or_default() += 1;
    }
    assert_eq!(
        led,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
        "partitions per leader"
    );
    not_leader_answers_name_the_leader(&cluster, &m, topic);

    // A consumer group of two members bootstrapped at brokers 1 and 3;
    // records are produced only once the group has settled, so each record
    // must reach exactly one member exactly once.
    let members: Vec<BaseConsumer> = [1, 3]
        .iter()
        .map(|id| {
            let c: BaseConsumer = cluster
                .node(*id)
                .client_config()
                .set("group.id", "spread-group")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "10000")
                .create()
                .expect("group member");
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let assigned = |c: &BaseConsumer| -> BTreeSet<i32> {
        c.assignment()
            .map(|l| l.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    };
    let started = Instant::now();
    loop {
        for c in &members {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                panic!("a record before any was produced: {:?}", text_of(&m));
            }
        }
        let (a, b) = (assigned(&members[0]), assigned(&members[1]));
        if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 12 {
            break;
        }
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "group never settled: {a:?} / {b:?}"
        );
    }
    let split: Vec<BTreeSet<i32>> = members.iter().map(assigned).collect();

    // Keyed records to every partition, through a producer bootstrapped at
    // broker 1: two thirds of them go to leaders it was not bootstrapped at.
    let records: Vec<(String, String, i32)> = (0..240)
        .map(|i| (format!("key-{i}"), format!("value-{i}"), i % PARTITIONS))
        .collect();
    produce_all(cluster.node(1), topic, &records);

    let mut seen = BTreeMap::<String, usize>::new();
    let started = Instant::now();
    let mut per_member = [0usize; 2];
    while seen.len() < records.len() {
        for (i, c) in members.iter().enumerate() {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (partition, key, _) = text_of(&m);
                    assert!(
                        split[i].contains(&partition),
                        "member {i} got partition {partition}, assigned {:?}",
                        split[i]
                    );
                    *seen.entry(key).or_default() += 1;
                    per_member[i] += 1;
                }
                Some(Err(e)) => eprintln!("group member error (retried): {e}"),
                None => {}
            }
        }
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "group read {} of {} records",
            seen.len(),
            records.len()
        );
    }
    // A little longer, so a duplicate delivery would show.
    for _ in 0..5 {
        for c in &members {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                *seen.entry(text_of(&m).1).or_default() += 1;
            }
        }
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    assert!(per_member.iter().all(|n| *n > 0), "{per_member:?}");
    drop(members);

    // Everything again through a consumer bootstrapped at broker 2.
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let got = read_back(cluster.node(2), topic, &all, records.len());
    let got: BTreeSet<_> = got.into_iter().collect();
    let want: BTreeSet<_> = records
        .iter()
        .map(|(k, v, p)| (*p, k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);

    // With the group's __consumer_offsets in place too, the three answers
    // (brokers, controller, every topic and partition with leader, replicas,
    // ISR and epochs) are still the same everywhere.
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    assert!(
        topic_names(&m).contains("__consumer_offsets"),
        "{:?}",
        topic_names(&m)
    );
    // One cluster, one cluster id (clients such as librdkafka and the Java
    // client compare it across brokers).
    let ids: BTreeSet<Option<String>> = (1..=3)
        .map(|id| {
            metadata(cluster.node(id).addr, Some(&[]))
                .expect("metadata")
                .cluster_id
        })
        .collect();
    assert_eq!(ids.len(), 1, "each broker names another cluster: {ids:?}");
}

#[test]
fn a_killed_controller_is_replaced_and_a_dead_leaders_partitions_go_offline_until_it_returns() {
    let mut cluster = Cluster::start(&[]);
    let topic = "before";
    create_topic(cluster.node(1), topic, PARTITIONS, &[]);
    let records: Vec<(String, String, i32)> = (0..PARTITIONS)
        .map(|p| (format!("k{p}"), format!("record of partition {p}"), p))
        .collect();
    produce_all(cluster.node(1), topic, &records);

    // kill -9 the active controller: the other two elect a new one, and
    // CreateTopics works again through a surviving broker.
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    let old_controller = m.controller_id;
    assert!((1..=3).contains(&old_controller), "{m:#?}");
    cluster.node_mut(old_controller).kill9();
    let survivors = cluster.running();
    let new_controller = wait_for("a new controller", CONVERGE_TIMEOUT, || {
        let m = metadata(cluster.node(survivors[0]).addr, None).ok()?;
        (m.controller_id != old_controller && survivors.contains(&m.controller_id))
            .then_some(m.controller_id)
    });
    eprintln!("controller {old_controller} killed; {new_controller} took over");
    create_topic_retrying(cluster.node(survivors[0]), "after-controller-kill", 3);

    // Brought back, the old controller catches up: every broker has every topic.
    cluster.node_mut(old_controller).restart();
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    let names = topic_names(&m);
    assert!(
        names.contains(topic) && names.contains("after-controller-kill"),
        "{names:?}"
    );

    // kill -9 a broker that leads partitions (not the controller, so only
    // leadership is at stake): after the session timeout its partitions
    // show no leader and LEADER_NOT_AVAILABLE on the others.
    let victim = (1..=3)
        .find(|id| *id != m.controller_id)
        .expect("a non-controller");
    let orphaned: Vec<i32> = leaders(&m, topic)
        .into_iter()
        .filter(|(_, leader)| *leader == victim)
        .map(|(p, _)| p)
        .collect();
    assert!(!orphaned.is_empty(), "broker {victim} leads nothing");
    cluster.node_mut(victim).kill9();
    let others: Vec<i32> = cluster.running();
    let fenced_wait = Duration::from_millis(SESSION_TIMEOUT_MS) + CONVERGE_TIMEOUT;
    for id in &others {
        wait_for(
            &format!("node {id} to show broker {victim}'s partitions offline"),
            fenced_wait,
            || {
                let m = metadata(cluster.node(*id).addr, Some(&[topic])).ok()?;
                let t = m.topics.first()?;
                let offline = t.partitions.iter().all(|p| {
                    let orphan = orphaned.contains(&p.partition_index);
                    if orphan {
                        p.leader_id == -1 && p.error_code == LEADER_NOT_AVAILABLE
                    } else {
                        p.leader_id != victim && p.leader_id > 0 && p.error_code == 0
                    }
                });
                offline.then_some(())
            },
        );
    }

    // Back: it leads its partitions again, with their records.
    cluster.node_mut(victim).restart();
    let m = wait_for("the victim's partitions back", CONVERGE_TIMEOUT, || {
        let m = agreed_metadata(&cluster, &[1, 2, 3]);
        let back = orphaned
            .iter()
            .all(|p| leaders(&m, topic).get(p) == Some(&victim));
        back.then_some(m)
    });
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .expect("topic");
    assert!(t.partitions.iter().all(|p| p.error_code == 0), "{t:?}");
    let reader = others[0];
    let got: BTreeSet<_> = read_back(cluster.node(reader), topic, &orphaned, orphaned.len())
        .into_iter()
        .collect();
    let want: BTreeSet<_> = orphaned
        .iter()
        .map(|p| (*p, format!("k{p}"), format!("record of partition {p}")))
        .collect();
    assert_eq!(got, want);
}

/// Nodes outside `--controller-voters` join as learners: they follow the metadata log and
/// serve as brokers (admin requests through them are forwarded), DescribeQuorum lists them
/// as observers, and the quorum commits without them.
#[test]
fn learners_follow_the_metadata_log_without_voting() {
    let mut cluster = Cluster::start_with_voters(1, &[]);
    let quorum = |id: i32| {
        let broker = cluster.node(id);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let mut client = weir_client::Client::connect(weir_client::ClientConfig::new(
                    &broker.bootstrap(),
                ))
                .await
                .expect("connect");
                client.describe_quorum().await.expect("describe quorum")
            })
    };
    let seen = wait_for(
        "learners 2 and 3 in DescribeQuorum",
        CONVERGE_TIMEOUT,
        || {
            let q = quorum(3);
            let mut observers: Vec<i32> = q.observers.iter().map(|o| o.node_id).collect();
            observers.sort_unstable();
            (observers == [2, 3]).then_some(q)
        },
    );
    let voters: Vec<i32> = seen.voters.iter().map(|v| v.node_id).collect();
    assert_eq!(voters, [1], "only node 1 votes");
    assert_eq!(seen.leader_id, 1);

    // A topic created through a learner (forwarded to the controller) reaches everyone.
    create_topic_retrying(cluster.node(3), "via-learner", 3);
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    assert!(topic_names(&m).contains("via-learner"));

    // Without both learners the one voter still commits; a learner back catches up.
    cluster.node_mut(2).kill9();
    cluster.node_mut(3).kill9();
    create_topic_retrying(cluster.node(1), "while-learners-down", 1);
    cluster.node_mut(3).restart();
    wait_for(
        "node 3 caught up after its restart",
        CONVERGE_TIMEOUT,
        || {
            let names = topic_names(&metadata(cluster.node(3).addr, None).ok()?);
            (names.contains("via-learner") && names.contains("while-learners-down")).then_some(())
        },
    );
}

/// A transaction spanning partitions led by every broker commits, and a read_committed
/// consumer sees all of it. Found by the fault harness (weir-chaos): a partition leader that
/// was not the transactional id's coordinator looked the id up in its own (empty) coordinator
/// state and refused every transactional batch with INVALID_PRODUCER_ID_MAPPING, so no
/// transaction touching another broker's partition could ever commit.
#[test]
fn a_transaction_spanning_partitions_led_by_other_brokers_commits() {
    let cluster = Cluster::start(&[]);
    let topic = "txn-across-brokers";
    // RF=1 and 6 partitions: leaders are spread over the three brokers, so whichever broker
    // coordinates the transactional id, most partitions are led by the others.
    create_topic_retrying(cluster.node(1), topic, 6);
    let m = agreed_metadata(&cluster, &[1, 2, 3]);
    let by_leader: BTreeSet<i32> = leaders(&m, topic).values().copied().collect();
    assert_eq!(by_leader.len(), 3, "leaders on every broker: {by_leader:?}");

    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .node(1)
        .client_config()
        .set("transactional.id", "across-brokers")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for p in 0..6 {
        let value = format!("v{p}");
        let record = BaseRecord::to(topic)
            .key(value.as_str())
            .payload(value.as_str())
            .partition(p);
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("a transaction over every broker's partitions commits");

    let consumer: BaseConsumer = cluster
        .node(2)
        .client_config()
        .set("group.id", "txn-across-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..6 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got = BTreeSet::new();
    let started = Instant::now();
    while got.len() < 6 {
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "read_committed saw only {got:?}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.insert(text_of(&m).2);
        }
    }
    assert_eq!(got, (0..6).map(|p| format!("v{p}")).collect());
}
