//! The metadata quorum over real TCP on 127.0.0.1: several in-process nodes,
//! each with its own controller listener on an ephemeral port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_metadata::controller::ControllerResponse;
use weir_metadata::quorum::testing::{
    TOPIC_ALREADY_EXISTS, TestImage, create_topic, test_controller,
};
use weir_metadata::quorum::{QuorumConfig, QuorumError, QuorumNode, Transport, TransportError};
use weir_server::controller_net::{TcpTransport, TcpTransportConfig};

type Node = QuorumNode<TestImage>;

/// Ports the OS considers free right now (bound, then released).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn voters_of(addrs: &[SocketAddr]) -> BTreeMap<u64, String> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect()
}

fn config(id: u64, dir: &Path, listen: SocketAddr, voters: &BTreeMap<u64, String>) -> QuorumConfig {
    let mut config = QuorumConfig::new(id, dir.join(format!("node-{id}")), voters.clone());
    config.controller_listen = Some(listen);
    config
}

fn transport() -> Arc<dyn Transport> {
    Arc::new(TcpTransport::new(TcpTransportConfig::default()))
}

async fn start(config: QuorumConfig) -> Result<Node, QuorumError> {
    // A restarted node may find its port still held for a moment by the old
    // listener's task; retry the bind briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match QuorumNode::start(config.clone(), transport(), test_controller()).await {
            Err(QuorumError::Transport(TransportError::Listen { .. }))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    voters: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Node>,
    /// Applied to every node's configuration.
    tweak: fn(&mut QuorumConfig),
}

impl Cluster {
    async fn start(voter_count: usize) -> Cluster {
        Cluster::start_with(voter_count, |_| {}).await
    }

    async fn start_with(voter_count: usize, tweak: fn(&mut QuorumConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs = free_addrs(voter_count);
        let voters = voters_of(&addrs);
        let mut cluster = Cluster {
            dir,
            addrs,
            voters,
            nodes: BTreeMap::new(),
            tweak,
        };
        for id in 1..=voter_count as u64 {
            cluster.start_node(id).await;
        }
        cluster
    }

    async fn start_node(&mut self, id: u64) {
        let listen = self.addrs[id as usize - 1];
        let mut config = config(id, self.dir.path(), listen, &self.voters);
        (self.tweak)(&mut config);
        let node = start(config).await.unwrap();
        self.nodes.insert(id, node);
    }

    async fn stop_node(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await;
    }

    /// Waits until every running node names the same running leader.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen: Vec<Option<u64>> = self.nodes.values().map(|n| n.leader_id()).collect();
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|s| *s == Some(*leader))
                && self.nodes.get(leader).is_some_and(|n| n.is_leader())
            {
                return *leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied what the leader has.
    async fn converge(&self) {
        let leader = self.leader().await;
        let target = *self.nodes[&leader].applied_index_watch().borrow();
        for node in self.nodes.values() {
            node.wait_applied(target, Duration::from_secs(10))
                .await
                .unwrap();
        }
    }

    fn topics(&self, id: u64) -> Vec<String> {
        self.nodes[&id]
            .image()
            .read()
            .unwrap()
            .topics
            .keys()
            .cloned()
            .collect()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn error_codes(response: &ControllerResponse) -> Vec<i16> {
    match response {
        ControllerResponse::Items(items) => items.iter().map(|i| i.error_code).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_elect_commit_from_a_follower_and_converge() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();

    // Forwarded to the leader, answered once committed.
    let response = cluster.nodes[&follower]
        .submit(create_topic("orders"))
        .await
        .unwrap();
    assert_eq!(error_codes(&response), vec![0]);
    let again = cluster.nodes[&follower]
        .submit(create_topic("orders"))
        .await
        .unwrap();
    assert_eq!(error_codes(&again), vec![TOPIC_ALREADY_EXISTS]);
    cluster.converge().await;
    for &id in cluster.nodes.keys() {
        assert_eq!(cluster.topics(id), ["orders"], "node {id}");
    }

    // DescribeQuorum from a follower is answered by the leader.
    let quorum = cluster.nodes[&follower].describe_quorum().await.unwrap();
    assert_eq!(quorum.leader_id, leader);
    assert_eq!(
        quorum.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(quorum.learners.is_empty());
    for voter in &quorum.voters {
        if voter.node_id == leader {
            assert_eq!(
                voter.last_fetch_timestamp_ms, None,
                "Kafka reports -1 for the leader"
            );
        } else {
            assert!(voter.last_fetch_timestamp_ms.is_some(), "{voter:?}");
            assert!(voter.last_caught_up_timestamp_ms.is_some(), "{voter:?}");
        }
    }
    assert!(
        quorum.high_watermark >= cluster.nodes[&leader].image().read().unwrap().topics["orders"]
    );
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_another_and_submit_works_from_every_node() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.leader().await;
    cluster.nodes[&first]
        .submit(create_topic("before"))
        .await
        .unwrap();

    let killed_at = Instant::now();
    cluster.stop_node(first).await;
    let second = cluster.leader().await;
    assert_ne!(second, first);
    let survivors: Vec<u64> = cluster.nodes.keys().copied().collect();
    for (i, id) in survivors.iter().enumerate() {
        let response = cluster.nodes[id]
            .submit(create_topic(&format!("after-{i}")))
            .await
            .unwrap();
        assert_eq!(error_codes(&response), vec![0], "submit at node {id}");
    }
    eprintln!(
        "leader {first} killed; admin request committed again after {:?}",
        killed_at.elapsed()
    );

    // The old leader comes back from its disk and catches up.
    cluster.start_node(first).await;
    cluster.converge().await;
    for id in 1..=3 {
        assert_eq!(
            cluster.topics(id),
            ["after-0", "after-1", "before"],
            "node {id}"
        );
    }
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_restart_from_disk_keeps_everything() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    for name in ["a", "b", "c"] {
        cluster.nodes[&leader]
            .submit(create_topic(name))
            .await
            .unwrap();
    }
    cluster.converge().await;
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.start_node(id).await;
    }
    let leader = cluster.leader().await;
    cluster.nodes[&leader]
        .submit(create_topic("d"))
        .await
        .unwrap();
    cluster.converge().await;
    for id in 1..=3 {
        assert_eq!(cluster.topics(id), ["a", "b", "c", "d"], "node {id}");
    }
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_outside_the_voters_follows_as_a_learner() {
    let mut cluster = Cluster::start(1).await;
    let learner_addr = free_addrs(1)[0];
    let learner = start(config(
        7,
        &cluster.data_dir(),
        learner_addr,
        &cluster.voters,
    ))
    .await
    .unwrap();

    // Forwarded by the learner to the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        match learner.submit(create_topic("seen-by-learner")).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => eprintln!("learner submit: {e}"),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(error_codes(&response), vec![0]);
    let target = *cluster.nodes[&1].applied_index_watch().borrow();
    learner
        .wait_applied(target, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        learner
            .image()
            .read()
            .unwrap()
            .topics
            .keys()
            .collect::<Vec<_>>(),
        ["seen-by-learner"]
    );

    let quorum = cluster.nodes[&1].describe_quorum().await.unwrap();
    assert_eq!(
        quorum.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        quorum
            .learners
            .iter()
            .map(|v| v.node_id)
            .collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(quorum.learners[0].addr, learner_addr.to_string());
    // The learner never votes: the voters alone stay the quorum.
    assert!(!learner.is_leader());
    learner.shutdown().await;
    cluster.stop_node(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_with_a_different_voter_list_is_refused_with_both_lists() {
    let mut cluster = Cluster::start(2).await;
    let third = free_addrs(1)[0];
    // Nodes 1 and 2 list only themselves; node 3 lists all three.
    let mut theirs = cluster.voters.clone();
    theirs.insert(3, third.to_string());
    let err = start(config(3, &cluster.data_dir(), third, &theirs))
        .await
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, QuorumError::VoterMismatch { .. }),
        "{message}"
    );
    let ours = format!("[1@{},2@{}]", cluster.addrs[0], cluster.addrs[1]);
    let mine = format!(
        "[1@{},2@{},3@{}]",
        cluster.addrs[0], cluster.addrs[1], third
    );
    assert!(
        message.contains(&format!("has voters {ours}, we have {mine}")),
        "{message}"
    );
    assert!(
        message.contains("all voters must list the same --controller-voters"),
        "{message}"
    );
    // The running voters are unharmed.
    let leader = cluster.leader().await;
    cluster.nodes[&leader]
        .submit(create_topic("still-fine"))
        .await
        .unwrap();
    for id in 1..=2 {
        cluster.stop_node(id).await;
    }
}

#[tokio::test]
async fn a_controller_address_nobody_listens_on_is_named_in_the_error() {
    let nobody = free_addrs(1)[0].to_string();
    let err = transport()
        .call(&nobody, b"hello".to_vec(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&nobody), "{err}");
    let err = transport()
        .call(
            "no-such-host.invalid:9093",
            b"x".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-host.invalid:9093"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_that_connection_and_the_listener_keeps_serving() {
    let cluster = Cluster::start(1).await;
    let addr = cluster.addrs[0];
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection closed, got {read:?}"
    );
    // Garbage inside a well-formed frame gets an answer, not a closed connection.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&5u32.to_be_bytes()).await.unwrap();
    raw.write_all(b"junk!").await.unwrap();
    let len = raw.read_u32().await.unwrap();
    let mut reply = vec![0; len as usize];
    raw.read_exact(&mut reply).await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert!(reply.get("Malformed").is_some(), "{reply}");
    cluster.nodes[&1].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.snapshot_every_entries = 5;
        c.snapshot_logs_kept = 0;
    })
    .await;
    let leader = cluster.leader().await;
    let behind = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    cluster.stop_node(behind).await;
    let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        cluster.nodes[&leader]
            .submit(create_topic(name))
            .await
            .unwrap();
    }
    let mut metrics = cluster.nodes[&leader].raft_metrics();
    tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index >= 15)),
    )
    .await
    .expect("the leader purges its log behind a snapshot")
    .unwrap();

    // The entries it missed are gone from every log: only a snapshot carries them.
    cluster.start_node(behind).await;
    cluster.converge().await;
    assert_eq!(cluster.topics(behind), names);
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

/// Not a check but a measurement: run with
/// `cargo test --release -p weir-server --test quorum_tcp -- --ignored --nocapture measure_controller_failover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn measure_controller_failover() {
    const KILLS: usize = 12;
    let mut cluster = Cluster::start(3).await;
    let mut took = Vec::new();
    for round in 0..KILLS {
        let leader = cluster.leader().await;
        cluster.nodes[&leader]
            .submit(create_topic(&format!("warm-{round}")))
            .await
            .unwrap();
        let killed_at = Instant::now();
        cluster.stop_node(leader).await;
        let survivor = *cluster.nodes.keys().next().unwrap();
        let response = cluster.nodes[&survivor]
            .submit(create_topic(&format!("after-{round}")))
            .await
            .unwrap();
        assert_eq!(error_codes(&response), vec![0]);
        took.push(killed_at.elapsed());
        cluster.start_node(leader).await;
        cluster.converge().await;
    }
    took.sort();
    eprintln!(
        "controller failover over {KILLS} leader kills (shutdown to the next committed admin request): median {:?}, max {:?}, min {:?}",
        took[KILLS / 2],
        took[KILLS - 1],
        took[0]
    );
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
}

/// Waits until learner `id` is known to the leader as caught up.
async fn wait_learner_caught_up(leader: &Node, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = leader.describe_quorum().await.unwrap();
        if q.learners
            .iter()
            .any(|l| l.node_id == id && l.lag == Some(0))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "learner {id} not caught up: {q:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voter_changes_go_one_at_a_time_and_a_stale_voter_list_restarts() {
    use weir_metadata::quorum::rpc::VoterChangeError;
    let mut cluster = Cluster::start(1).await;
    cluster.leader().await;
    let learner_addrs = free_addrs(2);
    let mut learners = BTreeMap::new();
    for (i, id) in [7u64, 8].into_iter().enumerate() {
        let node = start(config(
            id,
            &cluster.data_dir(),
            learner_addrs[i],
            &cluster.voters,
        ))
        .await
        .unwrap();
        learners.insert(id, node);
    }
    let leader = cluster.nodes[&1].clone();
    for id in [7, 8] {
        wait_learner_caught_up(&leader, id).await;
    }
    // The first change holds the leader's one slot while it commits twice
    // (joint, then uniform); the second is refused, not queued.
    let (first, second) = tokio::join!(leader.add_voter(7), leader.add_voter(8));
    first.unwrap();
    let err = second.expect_err("a second change while one runs");
    assert!(
        matches!(
            err,
            QuorumError::VoterChange(VoterChangeError::InProgress(_))
        ),
        "{err}"
    );
    if let QuorumError::VoterChange(e) = &err {
        assert_eq!(e.kafka_error_code(), 7, "REQUEST_TIMED_OUT, as KRaft");
    }
    learners[&8].add_voter(8).await.unwrap();
    let q = leader.describe_quorum().await.unwrap();
    assert_eq!(
        q.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        vec![1, 7, 8]
    );
    learners[&7]
        .submit(create_topic("after-growth"))
        .await
        .unwrap();

    // Node 7 restarts with its stale configured list (voter 1 only): the
    // committed membership wins and it votes again.
    let node7 = learners.remove(&7).unwrap();
    node7.shutdown().await;
    drop(node7);
    let node7 = start(config(
        7,
        &cluster.data_dir(),
        learner_addrs[0],
        &cluster.voters,
    ))
    .await
    .unwrap();
    // Node 8 restarts with the list updated to the committed voters, which
    // differs from the set its data directory was bootstrapped with: accepted.
    let node8 = learners.remove(&8).unwrap();
    node8.shutdown().await;
    drop(node8);
    let mut updated = cluster.voters.clone();
    updated.insert(7, learner_addrs[0].to_string());
    updated.insert(8, learner_addrs[1].to_string());
    let node8 = start(config(8, &cluster.data_dir(), learner_addrs[1], &updated))
        .await
        .unwrap();
    learners.insert(8, node8);
    // The leader removes itself: it stays a learner, and a voter leads.
    leader.remove_voter(1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let q = loop {
        match node7.describe_quorum().await {
            Ok(q) if q.leader_id != 1 => break q,
            other if Instant::now() < deadline => {
                eprintln!("waiting for a new leader: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("no leader took over from the removed one: {other:?}"),
        }
    };
    assert_eq!(
        q.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        vec![7, 8]
    );
    assert_eq!(
        q.learners.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(!leader.is_leader());
    // Without node 1 the two others are the whole quorum.
    cluster.stop_node(1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match node7.submit(create_topic("without-node-1")).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => eprintln!("submit: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
    node7.shutdown().await;
    learners[&8].shutdown().await;
}
