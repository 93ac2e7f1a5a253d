//! The operator's views of the cluster: DescribeQuorum on the wire (raw
//! requests at every version, and through weir-client), and `weir cluster
//! health` on a 3-process cluster whose broker is killed and restarted.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::messages::describe_quorum::{
    DescribeQuorumRequest, DescribeQuorumRequestPartition, DescribeQuorumRequestTopic,
    DescribeQuorumResponse,
};

use super::harness::Broker;

const DESCRIBE_QUORUM: i16 = 55;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Sends one flexible-version request (header v2, response header v1) and
/// returns the response body.
fn call_flexible<T: Encode>(addr: &str, api_key: i16, version: i16, body: &T) -> Bytes {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(11);
    frame.put_i16(6);
    frame.put_slice(b"e2eops");
    frame.put_u8(0); // no tagged fields in the header
    body.encode(&mut frame, version).expect("encode request");
    let size = i32::try_from(frame.len() - 4).expect("frame size");
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    stream.write_all(&frame).expect("send");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("response length");
    let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(len)).expect("length")];
    stream.read_exact(&mut response).expect("response body");
    let body = Bytes::from(response);
    assert_eq!(&body[0..4], &11i32.to_be_bytes(), "correlation id");
    // Correlation id, then an empty tagged-field section.
    body.slice(5..)
}

fn describe_quorum_raw(
    addr: &str,
    version: i16,
    topics: &[(&str, &[i32])],
) -> DescribeQuorumResponse {
    let request = DescribeQuorumRequest {
        topics: topics
            .iter()
            .map(|(name, partitions)| DescribeQuorumRequestTopic {
                topic_name: (*name).to_owned(),
                partitions: partitions
                    .iter()
                    .map(|p| DescribeQuorumRequestPartition {
                        partition_index: *p,
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut body = call_flexible(addr, DESCRIBE_QUORUM, version, &request);
    let response = DescribeQuorumResponse::decode(&mut body, version).expect("decode response");
    assert!(
        body.is_empty(),
        "trailing bytes in DescribeQuorum v{version}"
    );
    response
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn describe_quorum_of_a_single_node_at_every_version() {
    let broker = Broker::start(&[]);
    let addr = broker.bootstrap();
    for version in 0..=2 {
        let response = describe_quorum_raw(&addr, version, &[(METADATA_TOPIC, &[0])]);
        assert_eq!(response.error_code, 0, "v{version}");
        assert_eq!(response.topics.len(), 1, "v{version}");
        assert_eq!(response.topics[0].topic_name, METADATA_TOPIC);
        let p = &response.topics[0].partitions[0];
        assert_eq!(
            (p.partition_index, p.error_code, p.leader_id),
            (0, 0, 1),
            "v{version}: {p:?}"
        );
        assert!(p.leader_epoch >= 1, "v{version}: {p:?}");
        // The broker's registration and unfencing are committed records.
        assert!(p.high_watermark >= 1, "v{version}: {p:?}");
        assert_eq!(p.current_voters.len(), 1, "v{version}: {p:?}");
        let voter = &p.current_voters[0];
        assert_eq!(voter.replica_id, 1);
        assert!(voter.log_end_offset >= p.high_watermark, "{p:?}");
        if version >= 1 {
            // As Kafka: the leader does not fetch (-1) and is caught up now.
            assert_eq!(voter.last_fetch_timestamp, -1);
            assert!(voter.last_caught_up_timestamp > 0, "{voter:?}");
        } else {
            assert_eq!(voter.last_caught_up_timestamp, -1, "not on the wire at v0");
        }
        assert!(p.observers.is_empty(), "v{version}: {p:?}");
        if version >= 2 {
            // A quorum of one opens no controller listener: the node is
            // listed with none.
            assert_eq!(response.nodes.len(), 1, "{response:?}");
            assert_eq!(response.nodes[0].node_id, 1);
            assert!(response.nodes[0].listeners.is_empty(), "{response:?}");
        } else {
            assert!(response.nodes.is_empty());
        }
    }
}

#[test]
fn describe_quorum_for_another_partition_is_unknown_topic_or_partition() {
    let broker = Broker::start(&[]);
    let addr = broker.bootstrap();
    let response = describe_quorum_raw(&addr, 2, &[("orders", &[0]), (METADATA_TOPIC, &[0])]);
    assert_eq!(response.error_code, 0);
    let codes: Vec<(String, i32, i16)> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_name.clone(), p.partition_index, p.error_code))
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("orders".to_owned(), 0, UNKNOWN_TOPIC_OR_PARTITION),
            (METADATA_TOPIC.to_owned(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    let response = describe_quorum_raw(&addr, 1, &[(METADATA_TOPIC, &[1])]);
    assert_eq!(
        response.topics[0].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // The connection stays usable after an error answer.
    let ok = describe_quorum_raw(&addr, 1, &[(METADATA_TOPIC, &[0])]);
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
}

#[test]
fn weir_client_describes_the_quorum() {
    let broker = Broker::start(&[]);
    let quorum = runtime().block_on(async {
        let mut client =
            weir_client::Client::connect(weir_client::ClientConfig::new(&broker.bootstrap()))
                .await
                .expect("connect");
        client.describe_quorum().await.expect("describe quorum")
    });
    assert_eq!(quorum.leader_id, 1);
    assert_eq!(quorum.voters.len(), 1);
    assert_eq!(quorum.voters[0].lag(quorum.high_watermark), Some(0));
    assert!(quorum.observers.is_empty());
}

// ---- a 3-process cluster ------------------------------------------------------

/// How long the cluster may take to form, a node to start, or health to change.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Short enough that a killed broker is fenced quickly in the test.
const SESSION_TIMEOUT_MS: &str = "3000";
const HEARTBEAT_INTERVAL_MS: &str = "500";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One `weir serve` of a [`Cluster`].
struct Node {
    id: i32,
    kafka_addr: String,
    controller_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// Three `weir serve` processes on 127.0.0.1, each a voter of the
/// metadata quorum and a broker. They listen for Kafka only once the
/// quorum formed, so all three are spawned before any is waited for.
struct Cluster {
    nodes: Vec<Node>,
    voters: String,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                kafka_addr: format!("127.0.0.1:{}", free_port()),
                controller_port: free_port(),
                data_dir: tmp.path().join(format!("node{id}")),
                log_path: tmp.path().join(format!("node{id}.log")),
                child: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes,
            voters,
            _tmp: tmp,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_listening(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let voters = self.voters.clone();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .args(["--node-id", &node.id.to_string()])
            .args(["--listen", &node.kafka_addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--controller-voters", &voters])
            .args(["--broker-session-timeout-ms", SESSION_TIMEOUT_MS])
            .args(["--broker-heartbeat-interval-ms", HEARTBEAT_INTERVAL_MS])
            .env("WEIR_LOG", "info")
            .env("WEIR_HTTP_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weir serve");
        node.child = Some(child);
    }

    fn wait_listening(&mut self, i: usize) {
        let started = Instant::now();
        while TcpStream::connect(&self.nodes[i].kafka_addr).is_err() {
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {} exited with {status}; logs:\n{}",
                    i + 1,
                    self.logs()
                );
            }
            assert!(
                started.elapsed() < CLUSTER_TIMEOUT,
                "node {} did not listen; logs:\n{}",
                i + 1,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "kill the node first");
        self.spawn(i);
        self.wait_listening(i);
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log_path).unwrap_or_default()
                )
            })
            .collect()
    }

    /// `weir cluster health --format json` through node `i`: exit code and document.
    fn health(&self, i: usize) -> (i32, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["cluster", "health", "--format", "json"])
            .args(["--bootstrap", &self.nodes[i].kafka_addr])
            .env_remove("WEIR_BOOTSTRAP")
            .output()
            .expect("run weir cluster health");
        let code = out.status.code().unwrap_or(-1);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (code, json)
    }

    /// Polls health through node `i` until `done` holds; fails with the
    /// last answer and the logs after [`CLUSTER_TIMEOUT`].
    fn wait_health(
        &self,
        i: usize,
        what: &str,
        done: impl Fn(i32, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let (code, json) = self.health(i);
            if done(code, &json) {
                return json;
            }
            assert!(
                started.elapsed() < CLUSTER_TIMEOUT,
                "{what}: last health exit {code}: {json}\nlogs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

fn offline_set(json: &serde_json::Value) -> Vec<(String, i64, Vec<i64>)> {
    let mut set: Vec<(String, i64, Vec<i64>)> = json["offline_partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["topic"].as_str().unwrap_or_default().to_owned(),
                        p["partition"].as_i64().unwrap_or(-1),
                        p["replicas"]
                            .as_array()
                            .map(|r| r.iter().filter_map(serde_json::Value::as_i64).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    set.sort();
    set
}

#[test]
fn health_lists_a_killed_brokers_partitions_until_it_returns() {
    let mut cluster = Cluster::start();
    let bootstrap = cluster.nodes[0].kafka_addr.clone();

    // Every node sees the others in the quorum, with their controller listeners.
    let (quorum, led_by) = runtime().block_on(async {
        let mut client = weir_client::Client::connect(weir_client::ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        let created = client
            .create_topics(
                &[weir_client::NewTopic {
                    name: "ops".to_owned(),
                    num_partitions: 6,
                    replication_factor: 1,
                    configs: Vec::new(),
                }],
                false,
            )
            .await
            .expect("create topics");
        assert!(created.iter().all(|(_, r)| r.is_ok()), "{created:?}");
        let quorum = client.describe_quorum().await.expect("describe quorum");
        let topic = client
            .metadata(Some(&["ops"]), false)
            .await
            .expect("metadata");
        let led_by: Vec<(i32, i32)> = topic.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.leader_id))
            .collect();
        (quorum, led_by)
    });
    let mut voter_ids: Vec<i32> = quorum.voters.iter().map(|r| r.node_id).collect();
    voter_ids.sort_unstable();
    assert_eq!(voter_ids, vec![1, 2, 3], "{quorum:?}");
    for node in &cluster.nodes {
        let listeners = quorum
            .nodes
            .iter()
            .find(|(id, _)| *id == node.id)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        assert_eq!(listeners.len(), 1, "{quorum:?}");
        assert_eq!(
            (listeners[0].name.as_str(), listeners[0].port),
            ("CONTROLLER", node.controller_port)
        );
    }

    let healthy = cluster.wait_health(0, "healthy at start", |code, _| code == 0);
    assert_eq!(healthy["healthy"], true);

    // The victim: a broker that is neither the quorum leader nor the node
    // we ask, and leads some of the topic's partitions (placement is even).
    let victim = (2..=3)
        .find(|id| *id != quorum.leader_id)
        .expect("a non-leader among nodes 2 and 3");
    let mut expected: Vec<(String, i64, Vec<i64>)> = led_by
        .iter()
        .filter(|(_, leader)| *leader == victim)
        .map(|(p, _)| ("ops".to_owned(), i64::from(*p), vec![i64::from(victim)]))
        .collect();
    expected.sort();
    assert!(
        !expected.is_empty(),
        "node {victim} leads none of {led_by:?}"
    );

    let victim_index = usize::try_from(victim - 1).expect("index");
    cluster.kill9(victim_index);
    let unhealthy = cluster.wait_health(0, "victim's partitions offline", |code, json| {
        code == 2
            && offline_set(json)
                .iter()
                .filter(|(topic, _, _)| topic == "ops")
                .cloned()
                .collect::<Vec<_>>()
                == expected
    });
    assert_eq!(unhealthy["healthy"], false);
    // Every offline partition (internal topics too) had the victim as its only replica.
    assert!(
        offline_set(&unhealthy)
            .iter()
            .all(|(_, _, replicas)| replicas == &vec![i64::from(victim)]),
        "{unhealthy}"
    );
    let fenced: Vec<i64> = unhealthy["fenced_brokers"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["id"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(fenced, vec![i64::from(victim)], "{unhealthy}");

    cluster.restart(victim_index);
    let recovered = cluster.wait_health(0, "healthy after restart", |code, _| code == 0);
    assert_eq!(recovered["healthy"], true);
    assert_eq!(
        recovered["fenced_brokers"].as_array().map(Vec::len),
        Some(0)
    );
}
