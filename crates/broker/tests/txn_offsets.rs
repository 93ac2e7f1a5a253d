//! Transactional offset commits through the coordinators in-process, across
//! reopenings of the data directory: pending offsets are invisible until the
//! commit marker, dropped by an abort marker, and replay of
//! `__consumer_offsets` applies the markers it finds (and keeps offsets
//! without a marker pending).

use std::sync::Arc;
use std::time::Duration;

use weir_broker::groups::group::OffsetEntry;
use weir_broker::groups::{OFFSETS_TOPIC, partition_for};
use weir_broker::txn::state::TxnState;
use weir_broker::{Broker, BrokerConfig};
use weir_metadata::controller::ControllerConfig;
use weir_metadata::image::MetadataImage;
use weir_metadata::quorum::{NoTransport, QuorumConfig, QuorumNode, metadata_controller};

/// Opens the data directory as `weir serve` does: the broker, a metadata
/// quorum of one, membership. Drop the broker and shut the quorum down
/// before opening the directory again.
async fn open(dir: &std::path::Path) -> (Arc<Broker>, QuorumNode<MetadataImage>) {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        offsets_topic_partitions: 3,
        transaction_state_partitions: 2,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config).expect("open broker");
    let quorum_config = QuorumConfig::new(
        1,
        dir.to_path_buf(),
        [(1, "127.0.0.1:0".to_string())].into(),
    );
    let factory = metadata_controller(ControllerConfig {
        broker_session_timeout_ms: 9_000,
        producer_id_block_size: 1000,
        default_partitions: 1,
        default_replication_factor: 1,
        ..ControllerConfig::default()
    });
    let quorum = QuorumNode::start(quorum_config, Arc::new(NoTransport), factory)
        .await
        .expect("quorum of one");
    broker
        .join_cluster(Arc::new(quorum.clone()), false)
        .await
        .expect("join");
    broker.txn.start(&broker);
    (broker, quorum)
}

/// Creates topic `t` through the controller and waits for it here.
async fn create_t(broker: &Broker) {
    broker.auto_create_topics(vec!["t".into()]).await;
    assert!(broker.topic("t").is_some(), "topic t created");
}

/// Looks the internal topics up as clients do first (FindCoordinator creates them).
async fn create_internal_topics(broker: &Arc<Broker>) {
    for _ in 0..200 {
        let offsets = broker.groups.ensure_offsets_topic(broker).is_ok();
        let txn = broker.txn.ensure_topic(broker).is_ok();
        if offsets && txn {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("internal topics never created");
}

fn entry(offset: i64) -> OffsetEntry {
    OffsetEntry {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_ts_ms: 0,
    }
}

fn committed(broker: &Broker, group: &str) -> Option<i64> {
    let wanted = [("t".to_string(), vec![0])];
    broker.groups.fetch_offsets(group, Some(&wanted))[0].1[0]
        .1
        .as_ref()
        .map(|e| e.offset)
}

async fn wait_for(broker: &Broker, id: &str, state: TxnState) {
    for _ in 0..200 {
        if broker.txn.describe(id).map(|d| d.state) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{id} never reached {state:?}: {:?}",
        broker.txn.describe(id)
    );
}

/// Begins a transaction on `t-0` and the group's offsets partition and
/// commits `offset` for the group inside it.
async fn txn_commit_offset(broker: &Arc<Broker>, id: &str, group: &str, offset: i64) -> (i64, i16) {
    let (pid, epoch) = broker
        .txn
        .init_producer_id(broker, id, 60_000, None)
        .wait()
        .await
        .unwrap()
        .unwrap();
    let offsets = partition_for(group, 3);
    broker
        .txn
        .add_partitions(
            broker,
            id,
            pid,
            epoch,
            &[("t".into(), 0), (OFFSETS_TOPIC.into(), offsets)],
        )
        .unwrap()
        .wait()
        .await
        .unwrap();
    let durable = broker
        .groups
        .txn_commit(
            broker,
            id,
            group,
            pid,
            epoch,
            "",
            None,
            -1,
            vec![("t".into(), 0, entry(offset))],
        )
        .unwrap()
        .expect("a write");
    durable.await.unwrap().unwrap();
    (pid, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_offsets_are_published_by_commit_dropped_by_abort_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, quorum) = open(dir.path()).await;
    create_t(&broker).await;
    create_internal_topics(&broker).await;

    let (pid, epoch) = txn_commit_offset(&broker, "tx", "g", 5).await;
    assert_eq!(committed(&broker, "g"), None, "pending until the marker");
    assert!(broker.groups.has_pending_txn_offset("g", "t", 0));

    // A restart with the transaction open: the offset is still pending.
    broker.shutdown();
    drop(broker);
    quorum.shutdown().await;
    let (broker, quorum) = open(dir.path()).await;
    assert_eq!(committed(&broker, "g"), None);
    assert!(broker.groups.has_pending_txn_offset("g", "t", 0));
    assert_eq!(broker.txn.describe("tx").unwrap().state, TxnState::Ongoing);

    broker
        .txn
        .end_txn(&broker, "tx", pid, epoch, true, false)
        .unwrap()
        .wait()
        .await
        .unwrap();
    wait_for(&broker, "tx", TxnState::CompleteCommit).await;
    assert_eq!(committed(&broker, "g"), Some(5));
    assert!(!broker.groups.has_pending_txn_offset("g", "t", 0));

    // The next transaction commits 9 and aborts.
    let (pid, epoch) = txn_commit_offset(&broker, "tx", "g", 9).await;
    broker
        .txn
        .end_txn(&broker, "tx", pid, epoch, false, false)
        .unwrap()
        .wait()
        .await
        .unwrap();
    wait_for(&broker, "tx", TxnState::CompleteAbort).await;
    assert_eq!(
        committed(&broker, "g"),
        Some(5),
        "an abort drops the offset"
    );

    // Replay sees both markers.
    broker.shutdown();
    drop(broker);
    quorum.shutdown().await;
    let (broker, quorum) = open(dir.path()).await;
    assert_eq!(committed(&broker, "g"), Some(5));
    assert!(!broker.groups.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        broker.txn.describe("tx").unwrap().state,
        TxnState::CompleteAbort
    );
    broker.shutdown();
    quorum.shutdown().await;
}
