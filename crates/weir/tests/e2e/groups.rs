//! Consumer groups through librdkafka's subscribe(): partitions are split
//! across members, rebalances follow joins, leaves and members that stop
//! polling, static members come back without a rebalance, and committed
//! offsets survive a broker restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::harness::{Broker, create_topic};

/// Generous bound for a group to settle; rebalances here take a few seconds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn start_broker(extra: &[&str]) -> Broker {
    let mut args = vec!["--group-initial-rebalance-delay-ms", "100"];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// Produces records numbered `from..to` round-robin over `partitions`, waiting for every ack.
fn produce(broker: &Broker, topic: &str, partitions: i32, from: usize, to: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = broker
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in from..to {
        let payload = i.to_string();
        let partition = i32::try_from(i).unwrap() % partitions;
        let record = BaseRecord::<(), str>::to(topic)
            .payload(&payload)
            .partition(partition);
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Counts rebalance callbacks so a test can tell whether a group moved, and
/// keeps the client errors and the group-related complaints librdkafka logs.
#[derive(Default)]
struct Counting {
    assigns: AtomicUsize,
    /// Error callbacks, and log lines naming errors a healthy group never
    /// sees (kept only when the consumer logs at debug level, see `watched`).
    complaints: Arc<Mutex<Vec<String>>>,
}

/// Error names (librdkafka's wording) that a group forming on a healthy
/// broker must never produce.
const GROUP_COMPLAINTS: &[&str] = &[
    "Unknown member",
    "UNKNOWN_MEMBER_ID",
    "Group id not found",
    "GROUP_ID_NOT_FOUND",
    "Inconsistent group protocol",
];

impl ClientContext for Counting {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if GROUP_COMPLAINTS.iter().any(|c| log_message.contains(c)) {
            self.complaints
                .lock()
                .unwrap()
                .push(format!("{fac}: {log_message}"));
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.complaints
            .lock()
            .unwrap()
            .push(format!("error: {error}: {reason}"));
    }
}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.assigns.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Settings that make librdkafka log every group request and response, so a
/// test can look for errors the client recovers from silently.
const WATCH_GROUP: &[(&str, &str)] = &[("debug", "cgrp")];

type Complaints = Arc<Mutex<Vec<String>>>;

fn consumer(broker: &Broker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Counting> {
    consumer_reporting(broker, group, extra, Complaints::default())
}

/// A classic-protocol consumer whose complaints go to `complaints`.
fn consumer_reporting(
    broker: &Broker,
    group: &str,
    extra: &[(&str, &str)],
    complaints: Complaints,
) -> BaseConsumer<Counting> {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "7000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    if extra.iter().any(|(k, _)| *k == "debug") {
        // rust-rdkafka otherwise caps librdkafka's log level at the `log` crate's.
        config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
        .create_with_context(Counting {
            complaints,
            ..Default::default()
        })
        .expect("consumer")
}

/// One consumer on its own thread: polls, records every record it gets, and
/// commits it synchronously before taking the next one.
struct Member {
    /// Partitions currently assigned, as seen by the member's own thread.
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    /// Set to stop polling without leaving (the thread keeps the consumer alive).
    stall: Arc<AtomicBool>,
    /// Set to close the consumer cleanly and end the thread.
    stop: Arc<AtomicBool>,
    assigns: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

type Seen = Arc<Mutex<Vec<(usize, usize)>>>; // (record number, member index)

impl Member {
    fn spawn(consumer: BaseConsumer<Counting>, topic: &str, index: usize, seen: Seen) -> Member {
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let stall = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let assigns = Arc::new(AtomicUsize::new(0));
        consumer.subscribe(&[topic]).expect("subscribe");
        let thread = {
            let (assignment, stall, stop, assigns) = (
                assignment.clone(),
                stall.clone(),
                stop.clone(),
                assigns.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if stall.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    if let Some(result) = consumer.poll(Duration::from_millis(100)) {
                        let message = result.expect("consume");
                        let number: usize =
                            std::str::from_utf8(message.payload().expect("payload"))
                                .expect("utf8")
                                .parse()
                                .expect("number");
                        seen.lock().unwrap().push((number, index));
                        consumer
                            .commit_message(&message, CommitMode::Sync)
                            .expect("commit");
                    }
                    let current: BTreeSet<i32> = consumer
                        .assignment()
                        .expect("assignment")
                        .elements()
                        .iter()
                        .map(|e| e.partition())
                        .collect();
                    *assignment.lock().unwrap() = current;
                    assigns.store(
                        consumer.context().assigns.load(Ordering::SeqCst),
                        Ordering::SeqCst,
                    );
                }
                // Dropping closes the consumer: it commits nothing more and leaves the group.
                drop(consumer);
            })
        };
        Member {
            assignment,
            stall,
            stop,
            assigns,
            thread: Some(thread),
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("member thread");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits until the given members' assignments are non-empty, disjoint and cover `0..partitions`.
fn wait_for_split(members: &[&Member], partitions: i32, what: &str) {
    let started = Instant::now();
    loop {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assigned()).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sets.iter().all(|s| !s.is_empty())
            && total == union.len()
            && union == (0..partitions).collect()
        {
            return;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "{what}: group did not settle; assignments {sets:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_count(seen: &Seen, count: usize, what: &str) {
    let started = Instant::now();
    loop {
        let distinct: BTreeSet<usize> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
        if distinct.len() >= count {
            return;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "{what}: consumed {} distinct records of {count}",
            distinct.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record number in `0..count` seen exactly once.
fn assert_exactly_once(seen: &Seen, count: usize) {
    let mut times: BTreeMap<usize, usize> = BTreeMap::new();
    for (n, _) in seen.lock().unwrap().iter() {
        *times.entry(*n).or_default() += 1;
    }
    let missing: Vec<usize> = (0..count).filter(|n| !times.contains_key(n)).collect();
    let twice: Vec<(usize, usize)> = times
        .iter()
        .filter(|(_, t)| **t > 1)
        .map(|(n, t)| (*n, *t))
        .collect();
    assert!(
        missing.is_empty(),
        "records never consumed: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        twice.is_empty(),
        "records consumed more than once: {:?}",
        &twice[..twice.len().min(20)]
    );
    assert_eq!(times.len(), count);
}

/// Three members split 12 partitions, a fourth joins, one stops polling (and
/// is pushed out by max.poll.interval.ms); every record is consumed exactly once.
fn members_share_partitions_through_rebalances(strategy: &str) {
    const PARTITIONS: i32 = 12;
    const BATCH: usize = 600;
    let broker = start_broker(&["--offsets-topic-partitions", "4"]);
    let topic = format!("groups-{strategy}");
    let group = format!("group-{strategy}");
    create_topic(&broker, &topic, PARTITIONS, &[]);
    let seen: Seen = Arc::default();
    let settings = [("partition.assignment.strategy", strategy)];

    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            Member::spawn(
                consumer(&broker, &group, &settings),
                &topic,
                i,
                seen.clone(),
            )
        })
        .collect();
    wait_for_split(
        &members.iter().collect::<Vec<_>>(),
        PARTITIONS,
        "three members",
    );
    produce(&broker, &topic, PARTITIONS, 0, BATCH);
    wait_for_count(&seen, BATCH, "three members");

    members.push(Member::spawn(
        consumer(&broker, &group, &settings),
        &topic,
        3,
        seen.clone(),
    ));
    wait_for_split(
        &members.iter().collect::<Vec<_>>(),
        PARTITIONS,
        "four members",
    );
    produce(&broker, &topic, PARTITIONS, BATCH, 2 * BATCH);
    wait_for_count(&seen, 2 * BATCH, "four members");

    // Member 0 stops polling but stays alive: it must lose its partitions.
    members[0].stall.store(true, Ordering::SeqCst);
    let survivors: Vec<&Member> = members.iter().skip(1).collect();
    let started = Instant::now();
    loop {
        let sets: Vec<BTreeSet<i32>> = survivors.iter().map(|m| m.assigned()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if union.len() == PARTITIONS as usize
            && sets.iter().map(BTreeSet::len).sum::<usize>() == union.len()
        {
            break;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "stalled member's partitions never moved: {sets:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    produce(&broker, &topic, PARTITIONS, 2 * BATCH, 3 * BATCH);
    wait_for_count(&seen, 3 * BATCH, "after a member stalled");

    for m in members.iter_mut().rev() {
        m.close();
    }
    assert_exactly_once(&seen, 3 * BATCH);
    let consumers_used: BTreeSet<usize> = seen.lock().unwrap().iter().map(|(_, i)| *i).collect();
    assert_eq!(consumers_used.len(), 4, "every member consumed something");
}

#[test]
fn eager_group_rebalances_on_join_and_stalled_member() {
    members_share_partitions_through_rebalances("range");
}

#[test]
fn cooperative_sticky_group_rebalances_on_join_and_stalled_member() {
    members_share_partitions_through_rebalances("cooperative-sticky");
}

#[test]
fn static_member_restart_within_session_timeout_causes_no_rebalance() {
    const PARTITIONS: i32 = 4;
    let broker = start_broker(&["--offsets-topic-partitions", "2"]);
    let topic = "static-members";
    create_topic(&broker, topic, PARTITIONS, &[]);
    let seen: Seen = Arc::default();
    let static_config = |id: &'static str| {
        [
            ("group.instance.id", id),
            ("session.timeout.ms", "10000"),
            ("max.poll.interval.ms", "15000"),
        ]
    };
    let a = Member::spawn(
        consumer(&broker, "static", &static_config("inst-a")),
        topic,
        0,
        seen.clone(),
    );
    let mut b = Member::spawn(
        consumer(&broker, "static", &static_config("inst-b")),
        topic,
        1,
        seen.clone(),
    );
    wait_for_split(&[&a, &b], PARTITIONS, "two static members");
    // Let the group settle fully before counting.
    std::thread::sleep(Duration::from_secs(1));
    let a_assigns = a.assigns.load(Ordering::SeqCst);
    let a_partitions = a.assigned();
    let b_partitions = b.assigned();

    // A static member's close sends no LeaveGroup; its replacement takes over its place.
    b.close();
    let b2 = Member::spawn(
        consumer(&broker, "static", &static_config("inst-b")),
        topic,
        2,
        seen.clone(),
    );
    let started = Instant::now();
    while b2.assigned().is_empty() {
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "restarted static member got no assignment"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        b2.assigned(),
        b_partitions,
        "the restarted member gets its old partitions back"
    );
    // Give a rebalance, if one had been triggered, time to reach member a.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        a.assigns.load(Ordering::SeqCst),
        a_assigns,
        "member a saw a rebalance"
    );
    assert_eq!(a.assigned(), a_partitions);

    produce(&broker, topic, PARTITIONS, 0, 100);
    wait_for_count(&seen, 100, "static members");
}

#[test]
fn independent_groups_each_receive_every_record() {
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 300;
    let broker = start_broker(&["--offsets-topic-partitions", "3"]);
    let topic = "two-groups";
    create_topic(&broker, topic, PARTITIONS, &[]);
    produce(&broker, topic, PARTITIONS, 0, RECORDS);
    let seen_one: Seen = Arc::default();
    let seen_two: Seen = Arc::default();
    let one = [
        Member::spawn(
            consumer(&broker, "group-one", &[]),
            topic,
            0,
            seen_one.clone(),
        ),
        Member::spawn(
            consumer(&broker, "group-one", &[]),
            topic,
            1,
            seen_one.clone(),
        ),
    ];
    let two = Member::spawn(
        consumer(&broker, "group-two", &[]),
        topic,
        0,
        seen_two.clone(),
    );
    wait_for_count(&seen_one, RECORDS, "group-one");
    wait_for_count(&seen_two, RECORDS, "group-two");
    drop(one);
    drop(two);
    assert_exactly_once(&seen_one, RECORDS);
    assert_exactly_once(&seen_two, RECORDS);
}

#[test]
fn committed_offsets_survive_broker_restart() {
    const PARTITIONS: i32 = 2;
    // The default offsets.topic.num.partitions (50) on purpose.
    let mut broker = start_broker(&[]);
    let topic = "restart-offsets";
    create_topic(&broker, topic, PARTITIONS, &[]);
    produce(&broker, topic, PARTITIONS, 0, 200);
    let seen: Seen = Arc::default();
    let mut first = Member::spawn(consumer(&broker, "durable", &[]), topic, 0, seen.clone());
    wait_for_count(&seen, 200, "before restart");
    first.close();

    assert!(broker.stop(), "clean stop");
    broker.restart();
    produce(&broker, topic, PARTITIONS, 200, 300);
    let mut second = Member::spawn(consumer(&broker, "durable", &[]), topic, 1, seen.clone());
    wait_for_count(&seen, 300, "after restart");
    // Give a consumer that wrongly started from the beginning time to show it.
    std::thread::sleep(Duration::from_millis(500));
    second.close();
    assert_exactly_once(&seen, 300);
    let after: Vec<usize> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, i)| *i == 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        after.iter().all(|n| *n >= 200),
        "the restarted consumer resumed at the committed offsets"
    );
}

// ---- the consumer rebalance protocol (KIP-848, group.protocol=consumer) ----

/// Heartbeats every 500 ms so rebalances take a few hundred ms, not seconds.
fn start_consumer_protocol_broker() -> Broker {
    start_broker(&[
        "--offsets-topic-partitions",
        "4",
        "--group-consumer-heartbeat-interval-ms",
        "500",
        "--group-consumer-session-timeout-ms",
        "6000",
    ])
}

/// A librdkafka consumer using the consumer protocol: the broker assigns
/// partitions; session and heartbeat timing come from the broker.
fn protocol_consumer(
    broker: &Broker,
    group: &str,
    extra: &[(&str, &str)],
) -> BaseConsumer<Counting> {
    protocol_consumer_reporting(broker, group, extra, Complaints::default())
}

/// A consumer-protocol consumer whose complaints go to `complaints`.
fn protocol_consumer_reporting(
    broker: &Broker,
    group: &str,
    extra: &[(&str, &str)],
    complaints: Complaints,
) -> BaseConsumer<Counting> {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("max.poll.interval.ms", "7000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    if extra.iter().any(|(k, _)| *k == "debug") {
        // rust-rdkafka otherwise caps librdkafka's log level at the `log` crate's.
        config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
        .create_with_context(Counting {
            complaints,
            ..Default::default()
        })
        .expect("consumer")
}

/// The classic churn scenario with server-side assignment: three members
/// split 12 partitions, a fourth joins, one stops polling (and leaves when
/// max.poll.interval.ms passes); every record is consumed exactly once.
fn consumer_protocol_members_share_partitions(assignor: &str) {
    const PARTITIONS: i32 = 12;
    const BATCH: usize = 600;
    let broker = start_consumer_protocol_broker();
    let topic = format!("kip848-{assignor}");
    let group = format!("kip848-group-{assignor}");
    create_topic(&broker, &topic, PARTITIONS, &[]);
    let seen: Seen = Arc::default();
    let settings = [("group.remote.assignor", assignor)];

    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            Member::spawn(
                protocol_consumer(&broker, &group, &settings),
                &topic,
                i,
                seen.clone(),
            )
        })
        .collect();
    wait_for_split(
        &members.iter().collect::<Vec<_>>(),
        PARTITIONS,
        "three members",
    );
    produce(&broker, &topic, PARTITIONS, 0, BATCH);
    wait_for_count(&seen, BATCH, "three members");

    // ListGroups/DescribeGroups show the group with its type and members.
    let probe: BaseConsumer = broker.client_config().create().expect("probe");
    let list = probe
        .fetch_group_list(Some(&group), Duration::from_secs(10))
        .expect("group list");
    let described = list.groups().first().expect("the group is listed");
    assert_eq!(described.protocol_type(), "consumer");
    assert_eq!(described.members().len(), 3);
    // The protocol is the server-side assignor: proof the consumer protocol ran.
    assert_eq!(described.protocol(), assignor);

    members.push(Member::spawn(
        protocol_consumer(&broker, &group, &settings),
        &topic,
        3,
        seen.clone(),
    ));
    wait_for_split(
        &members.iter().collect::<Vec<_>>(),
        PARTITIONS,
        "four members",
    );
    produce(&broker, &topic, PARTITIONS, BATCH, 2 * BATCH);
    wait_for_count(&seen, 2 * BATCH, "four members");

    // Member 0 stops polling but stays alive: it must lose its partitions.
    members[0].stall.store(true, Ordering::SeqCst);
    let survivors: Vec<&Member> = members.iter().skip(1).collect();
    wait_for_split(&survivors, PARTITIONS, "after a member stalled");
    produce(&broker, &topic, PARTITIONS, 2 * BATCH, 3 * BATCH);
    wait_for_count(&seen, 3 * BATCH, "after a member stalled");

    for m in members.iter_mut().rev() {
        m.close();
    }
    assert_exactly_once(&seen, 3 * BATCH);
    let consumers_used: BTreeSet<usize> = seen.lock().unwrap().iter().map(|(_, i)| *i).collect();
    assert_eq!(consumers_used.len(), 4, "every member consumed something");
}

#[test]
fn consumer_protocol_uniform_group_rebalances_on_join_and_stalled_member() {
    consumer_protocol_members_share_partitions("uniform");
}

#[test]
fn consumer_protocol_range_group_rebalances_on_join_and_stalled_member() {
    consumer_protocol_members_share_partitions("range");
}

#[test]
fn consumer_protocol_regex_subscription_reads_only_matching_topics() {
    const RECORDS: usize = 50;
    let broker = start_consumer_protocol_broker();
    for topic in ["rx-orders", "rx-returns", "other"] {
        create_topic(&broker, topic, 2, &[]);
        produce(&broker, topic, 2, 0, RECORDS);
    }
    let consumer = protocol_consumer(&broker, "regex-group", &[]);
    consumer.subscribe(&["^rx-.*"]).expect("subscribe");
    let mut topics_seen: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    while topics_seen.values().sum::<usize>() < 2 * RECORDS {
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "consumed only {topics_seen:?}"
        );
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            *topics_seen
                .entry(result.expect("consume").topic().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(topics_seen.get("rx-orders"), Some(&RECORDS));
    assert_eq!(topics_seen.get("rx-returns"), Some(&RECORDS));
    assert!(
        !topics_seen.contains_key("other"),
        "a topic the pattern doesn't match was read"
    );
}

// ---- regressions from real-client probes (issue 11, item 12) ----

/// On a fresh broker the offset-expiry pass used to run at once and remove
/// the first group while its first member was between its two JoinGroups
/// (KIP-394), so that member's second JoinGroup got UNKNOWN_MEMBER_ID.
#[test]
fn first_group_on_a_fresh_broker_forms_without_unknown_member_id() {
    let broker = start_broker(&[]);
    create_topic(&broker, "fresh-topic", 4, &[]);
    let complaints = Complaints::default();
    let seen: Seen = Arc::default();
    let members: Vec<Member> = (0..2)
        .map(|i| {
            let c = consumer_reporting(&broker, "fresh-group", WATCH_GROUP, complaints.clone());
            Member::spawn(c, "fresh-topic", i, seen.clone())
        })
        .collect();
    wait_for_split(&members.iter().collect::<Vec<_>>(), 4, "two members");
    drop(members);
    let complaints = complaints.lock().unwrap();
    assert!(
        complaints.is_empty(),
        "the group's members saw errors: {complaints:#?}"
    );
}

/// librdkafka with group.protocol=consumer that only assign()s commits with
/// the member id it generated and epoch -1; Kafka stores that for a group
/// nobody is a member of (Weir answered UNKNOWN_MEMBER_ID).
#[test]
fn consumer_protocol_client_using_assign_commits_offsets() {
    use rdkafka::{Offset, TopicPartitionList};
    let broker = start_consumer_protocol_broker();
    create_topic(&broker, "assign-topic", 2, &[]);
    let assigner = protocol_consumer(&broker, "assign-group", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("assign-topic", 0, Offset::Offset(3))
        .expect("tpl");
    tpl.add_partition_offset("assign-topic", 1, Offset::Offset(5))
        .expect("tpl");
    assigner.assign(&tpl).expect("assign");
    assigner
        .commit(&tpl, CommitMode::Sync)
        .expect("commit from an assign() consumer");
    drop(assigner);

    // A separate, classic client reads them back.
    let reader = consumer(&broker, "assign-group", &[]);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("assign-topic", 0);
    wanted.add_partition("assign-topic", 1);
    let committed = reader
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    let offsets: Vec<(i32, Offset)> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    assert_eq!(
        offsets,
        vec![(0, Offset::Offset(3)), (1, Offset::Offset(5))]
    );
}

/// KIP-848 online migration: a classic group in use, then a consumer-protocol
/// member joins the same group (it used to get GROUP_ID_NOT_FOUND, fatal in
/// librdkafka). The group is converted and both split the partitions; when
/// the consumer-protocol member leaves, the group turns classic again and
/// the classic member takes everything back. Every record is consumed.
#[test]
fn classic_and_consumer_protocol_members_share_one_group_through_migration() {
    migrate_and_back("range,roundrobin", "range");
}

/// The same with a cooperative classic member: it gives up only what moves.
#[test]
fn cooperative_classic_and_consumer_protocol_members_share_one_group_through_migration() {
    migrate_and_back("cooperative-sticky", "cooperative-sticky");
}

/// `strategy`: the classic member's partition.assignment.strategy;
/// `protocol`: the classic protocol its group then settles on.
fn migrate_and_back(strategy: &str, protocol: &str) {
    const PARTITIONS: i32 = 4;
    const BATCH: usize = 200;
    let broker = start_consumer_protocol_broker();
    let topic = "migrate-topic";
    let group = "migrate-group";
    create_topic(&broker, topic, PARTITIONS, &[]);
    let complaints = Complaints::default();
    let seen: Seen = Arc::default();

    let mut classic_settings = WATCH_GROUP.to_vec();
    classic_settings.push(("partition.assignment.strategy", strategy));
    let mut classic = Member::spawn(
        consumer_reporting(&broker, group, &classic_settings, complaints.clone()),
        topic,
        0,
        seen.clone(),
    );
    wait_for_split(&[&classic], PARTITIONS, "classic member alone");
    produce(&broker, topic, PARTITIONS, 0, BATCH);
    wait_for_count(&seen, BATCH, "classic member alone");

    let mut modern = Member::spawn(
        protocol_consumer_reporting(&broker, group, WATCH_GROUP, complaints.clone()),
        topic,
        1,
        seen.clone(),
    );
    wait_for_split(
        &[&classic, &modern],
        PARTITIONS,
        "classic + consumer protocol",
    );
    produce(&broker, topic, PARTITIONS, BATCH, 2 * BATCH);
    wait_for_count(&seen, 2 * BATCH, "classic + consumer protocol");
    let by_modern = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, i)| *i == 1 && *n >= BATCH)
        .count();
    assert!(
        by_modern > 0,
        "the consumer-protocol member consumed nothing"
    );

    // The ListGroups/DescribeGroups view while both are in: a consumer group.
    let probe: BaseConsumer = broker.client_config().create().expect("probe");
    let list = probe
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list");
    let described = list.groups().first().expect("the group is listed");
    assert_eq!(described.members().len(), 2);
    // A consumer group reports its server-side assignor as the protocol.
    assert_eq!(described.protocol(), "uniform", "the group was converted");

    modern.close();
    wait_for_split(&[&classic], PARTITIONS, "classic member alone again");
    let list = probe
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list");
    let described = list.groups().first().expect("the group is listed");
    assert_eq!(described.members().len(), 1);
    // Classic again: the protocol is the one the classic member chose.
    assert_eq!(
        described.protocol(),
        protocol,
        "the group was converted back"
    );
    produce(&broker, topic, PARTITIONS, 2 * BATCH, 3 * BATCH);
    wait_for_count(&seen, 3 * BATCH, "classic member alone again");
    classic.close();

    let distinct: BTreeSet<usize> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(distinct, (0..3 * BATCH).collect(), "every record consumed");
    let complaints = complaints.lock().unwrap();
    assert!(complaints.is_empty(), "client errors: {complaints:#?}");
}

/// One OffsetCommit of partition 0 straight from the wire; the partition's error code.
fn raw_offset_commit(
    broker: &Broker,
    version: i16,
    group: &str,
    member_id: &str,
    generation_or_epoch: i32,
    topic: &str,
) -> i16 {
    use bytes::{Bytes, BytesMut};
    use weir_protocol::codec::{Decode, Encode};
    use weir_protocol::header::{RequestHeader, ResponseHeader};
    use weir_protocol::messages::offset_commit::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        OffsetCommitResponse,
    };
    const OFFSET_COMMIT: i16 = 8;
    let header = RequestHeader {
        api_key: OFFSET_COMMIT,
        api_version: version,
        correlation_id: 7,
        client_id: Some("raw-commit".into()),
    };
    let request = OffsetCommitRequest {
        group_id: group.into(),
        generation_id_or_member_epoch: generation_or_epoch,
        member_id: member_id.into(),
        topics: vec![OffsetCommitRequestTopic {
            name: topic.into(),
            partitions: vec![OffsetCommitRequestPartition {
                partition_index: 0,
                committed_offset: 1,
                committed_leader_epoch: -1,
                ..Default::default()
            }],
        }],
        ..Default::default()
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
        weir_protocol::api::response_header_version(OFFSET_COMMIT, version),
    )
    .expect("response header");
    let decoded = OffsetCommitResponse::decode(&mut response, version).expect("response");
    decoded.topics[0].partitions[0].error_code
}

/// Kafka's rules for a commit to a group that doesn't exist: a negative
/// generation (member epoch) creates a simple group whatever the member id;
/// anything else is GROUP_ID_NOT_FOUND from v9, ILLEGAL_GENERATION before.
#[test]
fn offset_commit_to_an_unknown_group_follows_kafkas_rules() {
    const NONE: i16 = 0;
    const ILLEGAL_GENERATION: i16 = 22;
    const GROUP_ID_NOT_FOUND: i16 = 69;
    let broker = start_broker(&[]);
    create_topic(&broker, "raw-commit-topic", 1, &[]);
    let topic = "raw-commit-topic";
    // As a client would: the first lookup creates __consumer_offsets.
    super::harness::wait_for_coordinator(&broker, "raw-a", 0);
    assert_eq!(
        raw_offset_commit(&broker, 9, "raw-a", "id-from-client", -1, topic),
        NONE
    );
    assert_eq!(
        raw_offset_commit(&broker, 8, "raw-b", "id-from-client", -1, topic),
        NONE
    );
    assert_eq!(
        raw_offset_commit(&broker, 9, "raw-c", "id-from-client", 3, topic),
        GROUP_ID_NOT_FOUND
    );
    assert_eq!(
        raw_offset_commit(&broker, 8, "raw-d", "id-from-client", 3, topic),
        ILLEGAL_GENERATION
    );
}
