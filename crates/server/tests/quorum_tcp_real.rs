//! The metadata quorum with the real image and controller, over TCP on
//! 127.0.0.1: brokers register through any node, topics are placed and every
//! node's image converges, the leader's ticker fences a silent broker, and a
//! new controller takes over after the leader is killed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_metadata::controller::{
    ControllerConfig, ControllerRequest, ControllerResponse, NewTopic,
};
use weir_metadata::image::MetadataImage;
use weir_metadata::quorum::{MetadataQuorum, QuorumConfig, QuorumNode, metadata_controller};
use weir_metadata::records::Endpoint;
use weir_server::controller_net::{TcpTransport, TcpTransportConfig};

const SESSION_TIMEOUT_MS: u64 = 1_500;

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn controller_config() -> ControllerConfig {
    ControllerConfig {
        broker_session_timeout_ms: SESSION_TIMEOUT_MS,
        producer_id_block_size: 1000,
        default_partitions: 1,
        default_replication_factor: 1,
        ..ControllerConfig::default()
    }
}

async fn start_node(
    id: u64,
    dir: &std::path::Path,
    listen: SocketAddr,
    voters: &BTreeMap<u64, String>,
) -> MetadataQuorum {
    let mut config = QuorumConfig::new(id, dir.join(format!("node-{id}")), voters.clone());
    config.controller_listen = Some(listen);
    let transport = Arc::new(TcpTransport::new(TcpTransportConfig::default()));
    QuorumNode::start(config, transport, metadata_controller(controller_config()))
        .await
        .unwrap()
}

async fn wait_leader(nodes: &BTreeMap<u64, MetadataQuorum>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((&id, _)) = nodes.iter().find(|(_, n)| n.is_leader()) {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn converge(nodes: &BTreeMap<u64, MetadataQuorum>) -> MetadataImage {
    let leader = wait_leader(nodes).await;
    let target = *nodes[&leader].applied_index_watch().borrow();
    for node in nodes.values() {
        node.wait_applied(target, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let image = nodes[&leader].image().read().unwrap().clone();
    for (id, node) in nodes {
        let theirs = node.image().read().unwrap().clone();
        // Followers may have applied a little more (a tick); compare at equal index.
        if theirs.last_applied_index == image.last_applied_index {
            assert_eq!(theirs, image, "node {id}'s image differs from the leader's");
        }
    }
    image
}

async fn register(node: &MetadataQuorum, broker_id: i32) -> i64 {
    let request = ControllerRequest::RegisterBroker {
        broker_id,
        incarnation_id: [broker_id as u8; 16],
        endpoints: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9000 + broker_id as u16,
        }],
        rack: None,
    };
    match node.submit(request).await.unwrap() {
        ControllerResponse::RegisterBroker { broker_epoch } => broker_epoch,
        other => panic!("unexpected {other:?}"),
    }
}

async fn heartbeat(node: &MetadataQuorum, broker_id: i32, broker_epoch: i64) -> bool {
    let applied_index = *node.applied_index_watch().borrow();
    let request = ControllerRequest::BrokerHeartbeat {
        broker_id,
        broker_epoch,
        applied_index,
        want_shutdown: false,
    };
    match node.submit(request).await.unwrap() {
        ControllerResponse::BrokerHeartbeat { fenced, .. } => fenced,
        other => panic!("unexpected {other:?}"),
    }
}

fn create_topic(name: &str, partitions: i32) -> ControllerRequest {
    ControllerRequest::CreateTopics {
        topics: vec![NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            assignments: None,
            configs: BTreeMap::new(),
        }],
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_register_topics_are_placed_and_every_image_converges() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let voters: BTreeMap<u64, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        nodes.insert(
            id,
            start_node(id, dir.path(), addrs[id as usize - 1], &voters).await,
        );
    }
    wait_leader(&nodes).await;

    // Each broker registers and heartbeats through its own node (forwarded
    // to the controller unless it leads), with its epoch from the log index.
    let mut epochs = BTreeMap::new();
    for id in 1..=3u64 {
        let epoch = register(&nodes[&id], id as i32).await;
        assert!(epoch > 0);
        epochs.insert(id as i32, epoch);
    }
    for id in 1..=3u64 {
        nodes[&id]
            .wait_applied(epochs[&(id as i32)] as u64, Duration::from_secs(5))
            .await
            .unwrap();
        let fenced = heartbeat(&nodes[&id], id as i32, epochs[&(id as i32)]).await;
        assert!(!fenced, "broker {id} caught up and unfenced");
    }
    let follower = *nodes.keys().find(|&&id| !nodes[&id].is_leader()).unwrap();
    match nodes[&follower]
        .submit(create_topic("spread", 12))
        .await
        .unwrap()
    {
        ControllerResponse::Items(items) => assert_eq!(items[0].error_code, 0, "{items:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let image = converge(&nodes).await;
    let topic = image.topic_by_name("spread").expect("topic in the image");
    assert_eq!(topic.partitions.len(), 12);
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for state in topic.partitions.values() {
        *leaders.entry(state.leader).or_default() += 1;
    }
    assert_eq!(
        leaders,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
        "placed evenly across live brokers"
    );

    // Brokers 1 and 2 keep heartbeating; 3 goes silent and the leader's ticker fences it.
    let deadline = Instant::now() + Duration::from_millis(SESSION_TIMEOUT_MS * 4);
    loop {
        for id in 1..=2 {
            heartbeat(&nodes[&(id as u64)], id, epochs[&id]).await;
        }
        let fenced = nodes
            .values()
            .all(|n| n.image().read().unwrap().brokers[&3].fenced);
        if fenced {
            break;
        }
        assert!(Instant::now() < deadline, "broker 3 never fenced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let image = converge(&nodes).await;
    assert!(!image.brokers[&1].fenced && !image.brokers[&2].fenced);
    assert!(
        image.partitions_led_by(3).next().is_none(),
        "no partition led by the fenced broker"
    );

    // Kill the controller: another takes over and decides against the same image.
    let first = wait_leader(&nodes).await;
    nodes.remove(&first).unwrap().shutdown().await;
    let second = wait_leader(&nodes).await;
    assert_ne!(first, second);
    for node in nodes.values() {
        match node.submit(create_topic("spread", 3)).await.unwrap() {
            ControllerResponse::Items(items) => {
                assert_eq!(items[0].error_code, 36, "TOPIC_ALREADY_EXISTS: {items:?}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for node in nodes.values() {
        node.shutdown().await;
    }
}
