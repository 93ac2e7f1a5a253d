//! Growing and shrinking a running cluster (issue 15), through librdkafka and
//! the `weir` CLI:
//!
//! - `a_new_broker_joins_a_running_cluster_and_serves_at_once`: a 4th node
//!   started with the cluster's voter list registers and takes a partition.
//! - `a_reassignment_completes_after_the_controller_is_killed`: a move waits
//!   on a stopped new replica; the controller is killed with kill -9; once
//!   the new replica is back the next controller completes the move, and the
//!   removed replica's data is deleted.
//! - `grow_rebalance_and_decommission_under_load_lose_nothing`: 3 brokers
//!   under acks=all produce and a consumer group, a 4th added,
//!   `weir cluster rebalance --execute`, broker 1 decommissioned and
//!   stopped: no acked record lost, only retriable errors, the longest
//!   consumer gap reported, replicas per broker within 1 of each other.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::cluster_harness::{Cluster, metadata};
use super::replication::{
    GroupReader, SteadyProducer, assert_no_acked_record_lost, bootstrap_all, client_config,
    create_replicated_topic, retriable, views_at, wait_full_isr, wait_until,
};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the `weir` CLI against `bootstrap`; panics with its output if it fails.
fn weir(bootstrap: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--bootstrap", bootstrap])
        .env_remove("WEIR_BOOTSTRAP")
        .output()
        .expect("run weir");
    assert!(
        out.status.success(),
        "weir {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn create_topic_on(cluster: &Cluster, name: &str, assignment: &[&[i32]]) {
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap_all(cluster))
        .create()
        .expect("admin client");
    let topic = NewTopic::new(
        name,
        assignment.len() as i32,
        TopicReplication::Variable(assignment),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in runtime
        .block_on(admin.create_topics([&topic], &options))
        .expect("create_topics request")
    {
        result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Produces `count` records "r0".."r{count-1}" to partition 0, acks=all.
fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer: BaseProducer = client_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    for i in 0..count {
        let value = format!("r{i}");
        loop {
            match producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every record acked");
}

/// Reads partition 0 from the start until `count` records came back.
fn read_back(bootstrap: &str, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "expand-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while values.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => values.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).into()),
            Some(Err(e)) => eprintln!("reader: {e}"),
            None => {}
        }
    }
    values
}

/// Replicas per broker over every partition, as node `id` reports them.
fn replicas_per_broker(cluster: &Cluster, id: i32) -> Result<BTreeMap<i32, usize>, String> {
    let mut count = BTreeMap::new();
    for view in views_at(cluster, id, None)?.values() {
        for r in &view.replicas {
            *count.entry(*r).or_insert(0) += 1;
        }
    }
    Ok(count)
}

fn controller_id(cluster: &Cluster, via: i32) -> i32 {
    wait_until("a controller", CONVERGE_TIMEOUT, || {
        let m = metadata(cluster.node(via).addr, Some(&[])).map_err(|e| e.to_string())?;
        (m.controller_id > 0)
            .then_some(m.controller_id)
            .ok_or("none yet".to_string())
    })
}

#[test]
fn a_new_broker_joins_a_running_cluster_and_serves_at_once() {
    let mut cluster = Cluster::start(&[]);
    let started = Instant::now();
    let id = cluster.add_node(&[]);
    assert_eq!(id, 4);
    eprintln!(
        "node 4 listening {:?} after it was started",
        started.elapsed()
    );
    // Every old node lists it, without any restart.
    for via in 1..=3 {
        wait_until("node 4 in Metadata", CONVERGE_TIMEOUT, || {
            let m = metadata(cluster.node(via).addr, Some(&[])).map_err(|e| e.to_string())?;
            m.brokers
                .iter()
                .any(|b| b.node_id == 4)
                .then_some(())
                .ok_or(format!("node {via} lists {:?}", m.brokers))
        });
    }
    // A partition placed on it alone works end to end through node 1.
    create_topic_on(&cluster, "on-the-new-broker", &[&[4]]);
    let bootstrap = cluster.node(1).bootstrap();
    produce(&bootstrap, "on-the-new-broker", 100);
    let values = read_back(&bootstrap, "on-the-new-broker", 100);
    let expected: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(values, expected);
    assert!(
        cluster
            .node(4)
            .data_dir
            .join("on-the-new-broker-0")
            .is_dir(),
        "the partition's log is on node 4"
    );
}

#[test]
fn a_reassignment_completes_after_the_controller_is_killed() {
    let mut cluster = Cluster::start(&[]);
    let new = cluster.add_node(&[]);
    let topic = "moving";
    create_topic_on(&cluster, topic, &[&[1, 2, 3]]);
    let bootstrap = bootstrap_all(&cluster);
    produce(&bootstrap, topic, 2_000);
    // The new replica is stopped: the move cannot complete until it is back.
    assert!(cluster.node_mut(new).stop(), "node {new} stops cleanly");
    let controller = controller_id(&cluster, 1);
    let keep: Vec<i32> = (1..=3).filter(|id| *id != controller).collect();
    let target = format!("{new},{},{}", keep[0], keep[1]);
    let via = cluster.node(keep[0]).bootstrap();
    weir(
        &via,
        &[
            "cluster",
            "reassign",
            "--topic",
            topic,
            "--partition",
            "0",
            "--replicas",
            &target,
        ],
    );
    let listed = weir(&via, &["cluster", "reassignments", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed[0]["adding"], serde_json::json!([new]), "{listed}");
    assert_eq!(
        listed[0]["removing"],
        serde_json::json!([controller]),
        "{listed}"
    );
    // kill -9 the controller while the move is pending, then bring the new
    // replica back: the next controller finds the move in the image.
    cluster.node_mut(controller).kill9();
    cluster.node_mut(new).restart();
    let want: BTreeSet<i32> = [new, keep[0], keep[1]].into();
    wait_until("the move to complete", CONVERGE_TIMEOUT, || {
        let views = views_at(&cluster, keep[0], Some(&[topic]))?;
        let v = &views[&(topic.to_string(), 0)];
        let replicas: BTreeSet<i32> = v.replicas.iter().copied().collect();
        (replicas == want && v.isr.len() == 3)
            .then_some(())
            .ok_or(format!("{v:?}"))
    });
    let controller_now = controller_id(&cluster, keep[0]);
    assert_ne!(controller_now, controller, "another node controls now");
    let listed = weir(&via, &["cluster", "reassignments", "--format", "json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap(),
        serde_json::json!([])
    );
    // Every record is there, read from the moved replicas.
    let values = read_back(&bootstrap_all(&cluster), topic, 2_000);
    assert_eq!(values.len(), 2_000);
    assert!(
        values
            .iter()
            .enumerate()
            .all(|(i, v)| *v == format!("r{i}"))
    );
    // The removed replica's data goes once its broker is back.
    cluster.node_mut(controller).restart();
    let dir = cluster.node(controller).data_dir.join(format!("{topic}-0"));
    wait_until(
        "the removed replica's log deleted",
        CONVERGE_TIMEOUT,
        || {
            (!dir.exists())
                .then_some(())
                .ok_or(format!("{} still exists", dir.display()))
        },
    );
    assert!(
        cluster
            .node(new)
            .data_dir
            .join(format!("{topic}-0"))
            .is_dir()
    );
}

#[test]
fn grow_rebalance_and_decommission_under_load_lose_nothing() {
    let mut cluster = Cluster::start(&["--group-initial-rebalance-delay-ms", "100"]);
    let topic = "growing";
    let partitions = 6;
    create_replicated_topic(&cluster, topic, partitions, &[("min.insync.replicas", "2")]);
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    let producer = SteadyProducer::start(&cluster, topic, partitions);
    let reader = GroupReader::start(&cluster, topic, "growing-group");
    wait_until("the group's first records", CONVERGE_TIMEOUT, || {
        let n = reader.seen_count();
        (n >= 500).then_some(()).ok_or(format!("{n} so far"))
    });
    wait_full_isr(&cluster, None, "with the group's offsets topic");

    let grown = Instant::now();
    let new = cluster.add_node(&["--group-initial-rebalance-delay-ms", "100"]);
    let via = cluster.node(2).bootstrap();
    let out = weir(&via, &["cluster", "rebalance", "--execute"]);
    eprintln!(
        "rebalance onto node {new} ({:?}):\n{}{}",
        grown.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after_rebalance = replicas_per_broker(&cluster, 2).expect("metadata");
    let spread = |counts: &BTreeMap<i32, usize>| {
        counts.values().max().unwrap() - counts.values().min().unwrap()
    };
    assert!(
        after_rebalance.contains_key(&new) && spread(&after_rebalance) <= 1,
        "after the rebalance: {after_rebalance:?}"
    );
    producer.wait_acks_everywhere(partitions, grown, 100, "after the rebalance");

    let drained = Instant::now();
    let out = weir(&via, &["cluster", "decommission", "1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("safe to stop"), "{said}");
    eprintln!("decommission of node 1 took {:?}", drained.elapsed());
    assert!(cluster.node_mut(1).stop(), "node 1 stops cleanly");
    producer.wait_acks_everywhere(partitions, drained, 100, "after node 1 stopped");
    let seen_before = reader.seen_count();
    wait_until(
        "the group reading after node 1 stopped",
        CONVERGE_TIMEOUT,
        || {
            let n = reader.seen_count();
            (n >= seen_before + 500)
                .then_some(())
                .ok_or(format!("{} new", n - seen_before))
        },
    );

    let (sent, ledger) = producer.finish(&cluster, topic);
    let acked: BTreeSet<(i32, u64)> = ledger
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.partition, d.seq))
        .collect();
    wait_until(
        "the group to have read every acked record",
        CONVERGE_TIMEOUT,
        || {
            let seen = reader.seen.lock().unwrap();
            let missing = acked.difference(&seen).count();
            (missing == 0)
                .then_some(())
                .ok_or(format!("{missing} of {} missing", acked.len()))
        },
    );
    let longest_gap = reader.longest_gap();
    let (_, errors) = reader.finish();
    let fatal: Vec<&KafkaError> = errors.iter().filter(|e| !retriable(e)).collect();
    assert!(fatal.is_empty(), "non-retriable consumer errors: {fatal:?}");
    assert_no_acked_record_lost(&cluster, topic, &sent, &ledger);
    let last = replicas_per_broker(&cluster, 2).expect("metadata");
    assert!(
        !last.contains_key(&1),
        "node 1 still holds replicas: {last:?}"
    );
    assert!(
        spread(&last) <= 1,
        "replicas per broker at the end: {last:?}"
    );
    eprintln!(
        "grow + rebalance + decommission: {} acked records, none lost; longest consumer gap {longest_gap:?}; replicas per broker {last:?}",
        acked.len()
    );
}

/// Produces `count` records of `size` bytes to partition 0 (acks=all).
fn produce_bytes(bootstrap: &str, topic: &str, count: usize, size: usize) {
    let producer: BaseProducer = client_config(bootstrap)
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .expect("producer");
    let value = vec![b'x'; size];
    for _ in 0..count {
        while producer
            .send(BaseRecord::<(), _>::to(topic).partition(0).payload(&value))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every record acked");
}

/// `weir cluster decommission NODE [args]` and how long it took.
fn timed_decommission(bootstrap: &str, node: i32, extra: &[&str]) -> Duration {
    let node = node.to_string();
    let mut args = vec!["cluster", "decommission", node.as_str()];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = weir(bootstrap, &args);
    let took = started.elapsed();
    eprintln!(
        "decommission {node} {extra:?} took {took:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[test]
fn a_follower_throttle_caps_the_move_rate() {
    const RECORDS: usize = 8 * 1024;
    const RECORD_BYTES: usize = 1024;
    const RATE_BYTES_PER_S: u64 = 2 << 20;
    let cluster = Cluster::start(&[]);
    let bootstrap = bootstrap_all(&cluster);
    let via = cluster.node(2).bootstrap();
    create_topic_on(&cluster, "unthrottled", &[&[1]]);
    produce_bytes(&bootstrap, "unthrottled", RECORDS, RECORD_BYTES);
    let fast = timed_decommission(&via, 1, &[]);
    create_topic_on(&cluster, "throttled", &[&[1]]);
    produce_bytes(&bootstrap, "throttled", RECORDS, RECORD_BYTES);
    let rate = RATE_BYTES_PER_S.to_string();
    let slow = timed_decommission(&via, 1, &["--throttle", rate.as_str()]);
    let bytes = (RECORDS * RECORD_BYTES) as f64;
    eprintln!(
        "moving {:.1} MiB: {:.1} MiB/s without a throttle, {:.1} MiB/s with {} MiB/s",
        bytes / f64::from(1 << 20),
        bytes / f64::from(1 << 20) / fast.as_secs_f64(),
        bytes / f64::from(1 << 20) / slow.as_secs_f64(),
        RATE_BYTES_PER_S >> 20
    );
    // The pacer lets one second of bytes through at once; the rest waits.
    let floor = Duration::from_secs_f64((bytes / RATE_BYTES_PER_S as f64 - 1.0) * 0.9);
    assert!(
        slow >= floor,
        "throttled move took {slow:?}, under {floor:?}"
    );
    assert!(
        slow > fast * 2,
        "throttled {slow:?} vs unthrottled {fast:?}"
    );
}

/// The leader-side throttle alone (no follower rate): broker 1, the only
/// replica of the moved partition, serves the new replica no faster than its
/// `leader.replication.throttled.rate`.
#[test]
fn a_leader_throttle_alone_caps_the_move_rate() {
    const RECORDS: usize = 8 * 1024;
    const RECORD_BYTES: usize = 1024;
    const RATE_BYTES_PER_S: u64 = 2 << 20;
    let cluster = Cluster::start(&[]);
    let bootstrap = bootstrap_all(&cluster);
    let via = cluster.node(2).bootstrap();
    create_topic_on(&cluster, "unthrottled", &[&[1]]);
    produce_bytes(&bootstrap, "unthrottled", RECORDS, RECORD_BYTES);
    let fast = timed_decommission(&via, 1, &[]);
    create_topic_on(&cluster, "leader-throttled", &[&[1]]);
    produce_bytes(&bootstrap, "leader-throttled", RECORDS, RECORD_BYTES);
    let rate = format!("leader.replication.throttled.rate={RATE_BYTES_PER_S}");
    weir(
        &via,
        &["cluster", "config", "set", rate.as_str(), "--broker", "1"],
    );
    weir(
        &via,
        &[
            "topic",
            "alter",
            "leader-throttled",
            "--config",
            "leader.replication.throttled.replicas=*",
        ],
    );
    let slow = timed_decommission(&via, 1, &[]);
    let bytes = (RECORDS * RECORD_BYTES) as f64;
    eprintln!(
        "moving {:.1} MiB: {:.1} MiB/s without a throttle, {:.1} MiB/s with a {} MiB/s leader throttle",
        bytes / f64::from(1 << 20),
        bytes / f64::from(1 << 20) / fast.as_secs_f64(),
        bytes / f64::from(1 << 20) / slow.as_secs_f64(),
        RATE_BYTES_PER_S >> 20
    );
    // One second of bytes passes at once (the burst), then the rate holds.
    let floor = Duration::from_secs_f64((bytes / RATE_BYTES_PER_S as f64 - 1.0) * 0.9);
    assert!(
        slow >= floor,
        "leader-throttled move took {slow:?}, under {floor:?}"
    );
    assert!(
        slow > fast * 2,
        "leader-throttled {slow:?} vs unthrottled {fast:?}"
    );
}

/// Brokers holding a replica of `topic`, as node `via` reports them.
fn brokers_of(cluster: &Cluster, via: i32, topic: &str) -> BTreeSet<i32> {
    let views = wait_until("the topic's partitions", CONVERGE_TIMEOUT, || {
        views_at(cluster, via, Some(&[topic]))
    });
    views.values().flat_map(|v| v.replicas.clone()).collect()
}

fn create_spread_topic(bootstrap: &str, name: &str) {
    weir(
        bootstrap,
        &[
            "topic",
            "create",
            name,
            "--partitions",
            "6",
            "--replication-factor",
            "2",
        ],
    );
}

#[test]
fn a_decommission_mark_keeps_new_replicas_off_across_failover_and_restarts() {
    let mut cluster = Cluster::start(&[]);
    let via = cluster.node(1).bootstrap();
    let out = weir(&via, &["cluster", "decommission", "3"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("safe to stop"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let info = String::from_utf8_lossy(&weir(&via, &["cluster", "info"]).stdout).into_owned();
    assert!(
        info.contains("decommissioned: 3 (no replicas: safe to stop)"),
        "{info}"
    );
    create_spread_topic(&via, "after-mark");
    assert_eq!(
        brokers_of(&cluster, 1, "after-mark"),
        BTreeSet::from([1, 2])
    );

    // The controller changes (kill -9): the mark is in the metadata log.
    let controller = controller_id(&cluster, 1);
    cluster.node_mut(controller).kill9();
    let other = if controller == 1 { 2 } else { 1 };
    let via_other = cluster.node(other).bootstrap();
    wait_until("a new controller", CONVERGE_TIMEOUT, || {
        let m = metadata(cluster.node(other).addr, Some(&[])).map_err(|e| e.to_string())?;
        (m.controller_id > 0 && m.controller_id != controller)
            .then_some(())
            .ok_or(format!("controller {}", m.controller_id))
    });
    cluster.node_mut(controller).restart();
    create_spread_topic(&via_other, "after-failover");
    assert_eq!(
        brokers_of(&cluster, other, "after-failover"),
        BTreeSet::from([1, 2])
    );

    // Everything restarts.
    for id in 1..=3 {
        cluster.node_mut(id).kill9();
    }
    for id in 1..=3 {
        cluster.node_mut(id).restart_without_waiting();
    }
    for id in 1..=3 {
        cluster.node_mut(id).wait_until_listening();
    }
    create_spread_topic(&via, "after-restart");
    assert_eq!(
        brokers_of(&cluster, 2, "after-restart"),
        BTreeSet::from([1, 2])
    );
    let info = String::from_utf8_lossy(&weir(&via, &["cluster", "info"]).stdout).into_owned();
    assert!(info.contains("decommissioned: 3"), "{info}");

    // Recommission clears the mark: new partitions may use broker 3 again.
    weir(&via, &["cluster", "recommission", "3"]);
    let info = String::from_utf8_lossy(&weir(&via, &["cluster", "info"]).stdout).into_owned();
    assert!(!info.contains("decommissioned"), "{info}");
    create_spread_topic(&via, "after-recommission");
    assert!(
        brokers_of(&cluster, 1, "after-recommission").contains(&3),
        "broker 3 takes new replicas again"
    );
}
