//! A quorum of one: the same code as many nodes, no listener, no transport.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_metadata::controller::ControllerResponse;
use weir_metadata::quorum::testing::{
    TOPIC_ALREADY_EXISTS, TestImage, create_topic, test_controller,
};
use weir_metadata::quorum::{NoTransport, QuorumConfig, QuorumError, QuorumNode};

fn alone(dir: &Path) -> QuorumConfig {
    QuorumConfig::new(
        1,
        dir.to_path_buf(),
        BTreeMap::from([(1, "localhost:9093".to_string())]),
    )
}

async fn start(config: QuorumConfig) -> Result<QuorumNode<TestImage>, QuorumError> {
    QuorumNode::start(config, Arc::new(NoTransport), test_controller()).await
}

async fn wait_leader(node: &QuorumNode<TestImage>) {
    let mut metrics = node.raft_metrics();
    tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| m.current_leader == Some(node.node_id())),
    )
    .await
    .expect("a quorum of one elects itself")
    .unwrap();
}

fn error_codes(response: &ControllerResponse) -> Vec<i16> {
    match response {
        ControllerResponse::Items(items) => items.iter().map(|i| i.error_code).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

fn topics(node: &QuorumNode<TestImage>) -> Vec<String> {
    node.image()
        .read()
        .unwrap()
        .topics
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_without_listener_commits_and_answers_after_apply() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(alone(dir.path())).await.unwrap();
    wait_leader(&node).await;
    assert!(node.is_leader());

    let response = node.submit(create_topic("orders")).await.unwrap();
    assert_eq!(error_codes(&response), vec![0]);
    // Answered after apply: the image already has it, and the watch says so.
    assert_eq!(topics(&node), ["orders"]);
    let created_at = node.image().read().unwrap().topics["orders"];
    assert!(*node.applied_index_watch().borrow() >= created_at);
    // The controller saw the image its predecessor produced.
    let again = node.submit(create_topic("orders")).await.unwrap();
    assert_eq!(error_codes(&again), vec![TOPIC_ALREADY_EXISTS]);
    // A new leader's NoOp was committed before its first decision.
    assert_eq!(node.image().read().unwrap().no_ops, 1);

    let quorum = node.describe_quorum().await.unwrap();
    assert_eq!(quorum.leader_id, 1);
    assert!(quorum.leader_epoch >= 1);
    assert_eq!(quorum.high_watermark, *node.applied_index_watch().borrow());
    assert_eq!(quorum.voters.len(), 1);
    assert_eq!(quorum.voters[0].lag, Some(0));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_disk_keeps_every_committed_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(alone(dir.path())).await.unwrap();
    wait_leader(&node).await;
    for name in ["a", "b", "c"] {
        node.submit(create_topic(name)).await.unwrap();
    }
    node.shutdown().await;
    drop(node);

    let node = start(alone(dir.path())).await.unwrap();
    wait_leader(&node).await;
    // Replayed from the log: the committed index was persisted.
    node.wait_applied(1, Duration::from_secs(5)).await.unwrap();
    let response = node.submit(create_topic("d")).await.unwrap();
    assert_eq!(error_codes(&response), vec![0]);
    assert_eq!(topics(&node), ["a", "b", "c", "d"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_built_and_restore_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = alone(dir.path());
    config.snapshot_every_entries = 5;
    // Nothing kept behind the snapshot: the restart must start from it.
    config.snapshot_logs_kept = 0;
    let node = start(config.clone()).await.unwrap();
    wait_leader(&node).await;
    let names: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        node.submit(create_topic(name)).await.unwrap();
    }
    let mut metrics = node.raft_metrics();
    tokio::time::timeout(
        Duration::from_secs(10),
        // Built, and the log purged up to it: only the snapshot holds the first entries.
        metrics.wait_for(|m| {
            m.snapshot.is_some_and(|s| s.index >= 20) && m.purged.is_some_and(|p| p.index >= 20)
        }),
    )
    .await
    .expect("a snapshot every 5 entries")
    .unwrap();
    node.shutdown().await;
    drop(node);
    let snapshots = std::fs::read_dir(dir.path().join("metadata"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot-")
        })
        .count();
    assert_eq!(snapshots, 1, "older snapshots are removed");

    let node = start(config).await.unwrap();
    wait_leader(&node).await;
    assert_eq!(topics(&node), names);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_different_voter_set_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(alone(dir.path())).await.unwrap();
    wait_leader(&node).await;
    node.shutdown().await;
    drop(node);

    let mut changed = alone(dir.path());
    changed.voters.insert(2, "otherhost:9093".into());
    changed.controller_listen = Some("127.0.0.1:0".parse().unwrap());
    let err = start(changed).await.err().expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, QuorumError::VoterSetChanged { .. }),
        "{message}"
    );
    assert!(message.contains("[1@localhost:9093]"), "{message}");
    assert!(
        message.contains("[1@localhost:9093,2@otherhost:9093]"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_voters_without_a_listener_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = alone(dir.path());
    config.voters.insert(2, "otherhost:9093".into());
    let err = start(config).await.err().expect("refused");
    assert!(matches!(err, QuorumError::Config(_)), "{err}");
}
