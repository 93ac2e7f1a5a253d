//! Three `weir serve` processes on 127.0.0.1 forming one cluster, and a raw
//! Metadata call for what rdkafka does not expose (controller id, leader
//! epochs, per-partition error codes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use weir_protocol::api::{self, ApiKey};
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::header::{RequestHeader, ResponseHeader};
use weir_protocol::messages::metadata::{MetadataRequest, MetadataRequestTopic, MetadataResponse};

use super::harness::{Broker, free_port};

/// The controller fences a silent broker after this long; short so the
/// offline-partition checks don't wait Kafka's 9 s default.
pub const SESSION_TIMEOUT_MS: u64 = 3_000;
const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// How long the three nodes may take to elect a controller and all listen.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Three nodes, ids 1, 2, 3, each a broker and a metadata quorum voter.
pub struct Cluster {
    /// `nodes[i]` has node id `i + 1`.
    pub nodes: Vec<Broker>,
    /// The `--controller-voters` every node was started with, and the shared
    /// config file: what a node added later needs to join.
    voters: String,
    config: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts three nodes and waits until all of them listen (each listens
    /// only once registered with the controller and unfenced).
    pub fn start(extra_args: &[&str]) -> Cluster {
        Cluster::start_with_voters(3, extra_args)
    }

    /// Three nodes of which only ids `1..=voter_count` vote in the metadata
    /// quorum; the others join as learners (brokers only). With one voter,
    /// nodes 2 and 3 can both be down while the quorum still commits, which
    /// a test of two lost replicas needs (three voters would lose it).
    pub fn start_with_voters(voter_count: i32, extra_args: &[&str]) -> Cluster {
        Cluster::start_with_env(voter_count, extra_args, &[])
    }

    /// As [`Cluster::start_with_voters`], with extra environment for every node (test-only
    /// switches).
    pub fn start_with_env(voter_count: i32, extra_args: &[&str], env: &[(&str, &str)]) -> Cluster {
        assert!((1..=3).contains(&voter_count), "1 to 3 voters");
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("weir.toml");
        std::fs::write(
            &config,
            format!(
                "broker_session_timeout_ms = {SESSION_TIMEOUT_MS}\n\
                 broker_heartbeat_interval_ms = {HEARTBEAT_INTERVAL_MS}\n"
            ),
        )
        .expect("config file");
        let controller_addrs: Vec<String> = (1..=3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let voters = (1..=voter_count)
            .map(|id| format!("{id}@{}", controller_addrs[(id - 1) as usize]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let dir = tmp.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let id_arg = id.to_string();
            let mut args = vec![
                "--node-id",
                id_arg.as_str(),
                "--controller-voters",
                voters.as_str(),
                "--config",
                config.to_str().expect("utf-8 path"),
            ];
            // A learner is not in the voter list, so it names its own
            // quorum listener for the leader to reach it.
            if id > voter_count {
                args.extend_from_slice(&[
                    "--controller-listen",
                    controller_addrs[(id - 1) as usize].as_str(),
                ]);
            }
            args.extend_from_slice(extra_args);
            nodes.push(Broker::launch_in(
                dir.join("data"),
                dir.join("broker.log"),
                &args,
                env,
            ));
        }
        let mut cluster = Cluster {
            nodes,
            voters,
            config,
            _tmp: tmp,
        };
        let started = Instant::now();
        for node in &mut cluster.nodes {
            node.wait_until_listening();
        }
        assert!(
            started.elapsed() < FORM_TIMEOUT,
            "cluster formed too slowly"
        );
        cluster
    }

    pub fn node(&self, id: i32) -> &Broker {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: i32) -> &mut Broker {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<i32> {
        (1..=self.nodes.len() as i32)
            .filter(|id| self.node(*id).is_running())
            .collect()
    }

    /// Starts one more node with the next id and the cluster's voter list,
    /// as an operator adds a broker: it joins the quorum as a learner,
    /// registers, and listens once unfenced. Nothing else restarts.
    /// Returns its id once it listens.
    pub fn add_node(&mut self, extra_args: &[&str]) -> i32 {
        let id = self.nodes.len() as i32 + 1;
        let dir = self._tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let id_arg = id.to_string();
        let controller_listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--node-id",
            id_arg.as_str(),
            "--controller-voters",
            self.voters.as_str(),
            "--config",
            self.config.to_str().expect("utf-8 path"),
            "--controller-listen",
            controller_listen.as_str(),
        ];
        args.extend_from_slice(extra_args);
        let mut node = Broker::launch_in(dir.join("data"), dir.join("broker.log"), &args, &[]);
        node.wait_until_listening();
        self.nodes.push(node);
        id
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Each Broker prints its own log as it drops; say which is which.
            for (i, node) in self.nodes.iter().enumerate() {
                eprintln!("--- node {} was at {} ---", i + 1, node.addr);
            }
        }
    }
}

/// The Metadata version used for raw calls: it carries topic ids, leader
/// epochs and the controller id.
const METADATA_VERSION: i16 = 12;

/// One Metadata request over a fresh connection; `topics` None means all.
/// Errors (refused connection, closed socket) are returned, not panicked
/// on, since callers poll nodes that may be down.
pub fn metadata(addr: SocketAddr, topics: Option<&[&str]>) -> std::io::Result<MetadataResponse> {
    let request = MetadataRequest {
        topics: topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic {
                    name: Some((*n).into()),
                    ..Default::default()
                })
                .collect()
        }),
        allow_auto_topic_creation: false,
        ..Default::default()
    };
    call(addr, ApiKey::Metadata, METADATA_VERSION, &request)
}

/// One request and its answer over a fresh connection.
pub fn call<Req: Encode, Resp: Decode>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    request: &Req,
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let header = RequestHeader {
        api_key: key as i16,
        api_version: version,
        correlation_id: 7,
        client_id: Some("weir-e2e-cluster".into()),
    };
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header.encode(&mut buf).expect("header");
    request.encode(&mut buf, version).expect("request body");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&buf)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    assert!(
        (0..64 << 20).contains(&len),
        "implausible frame length {len}"
    );
    let mut frame = vec![0u8; len as usize];
    stream.read_exact(&mut frame)?;
    let mut frame = Bytes::from(frame);
    let header_version = api::response_header_version(key as i16, version);
    let header = ResponseHeader::decode(&mut frame, header_version).expect("response header");
    assert_eq!(header.correlation_id, 7);
    Ok(Resp::decode(&mut frame, version).expect("response body"))
}

/// A Metadata answer with its lists in a canonical order, so that two
/// brokers' answers compare equal when they say the same thing in a
/// different order. The cluster id is left out: it is compared on its own
/// (see cluster.rs), so that its disagreement does not hide the rest.
pub fn canonical(mut response: MetadataResponse) -> MetadataResponse {
    response.throttle_time_ms = 0;
    response.cluster_id = None;
    response.brokers.sort_by_key(|b| b.node_id);
    response.topics.sort_by(|a, b| a.name.cmp(&b.name));
    for topic in &mut response.topics {
        topic.partitions.sort_by_key(|p| p.partition_index);
        for p in &mut topic.partitions {
            p.replica_nodes.sort();
            p.isr_nodes.sort();
            p.offline_replicas.sort();
        }
    }
    response
}

/// Polls `probe` every 50 ms until it returns Some, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
