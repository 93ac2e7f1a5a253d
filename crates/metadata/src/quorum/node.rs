//! [`QuorumNode`]: the tokio shell around openraft.
//!
//! - Bootstrap: a voter with an empty log calls `initialize` with the voter
//!   set (every voter may; openraft accepts the same set from several). A node
//!   not among the voters is a learner: it asks the voters until the leader
//!   adds it with `add_learner`, then follows the log.
//! - Membership: `--controller-voters` is the bootstrap set and the way to
//!   find the quorum; once the log holds a membership, the committed
//!   membership is the voter set (KIP-853's rule). `add_voter` turns a
//!   caught-up learner into a voter and `remove_voter` turns a voter back into
//!   a learner, one change at a time, each through openraft's joint consensus.
//! - The bootstrap set is stored at first start (`voters.json`). A restart with
//!   a different configured set is refused with both sets named while the
//!   committed voters are still that bootstrap set (a typo, most likely);
//!   after a membership change the configured list may be stale and is
//!   accepted. A voter still to bootstrap stamps its configured set on every
//!   RPC; a peer whose committed voters (or own bootstrap set) differ refuses
//!   it, and a node that finds a peer disagreeing at start fails to start.
//! - The controller loop: one task owns the [`ControllerLogic`] and handles
//!   requests one at a time from a bounded queue, so every decision sees the
//!   image its predecessors produced. On the leader it decides, commits the
//!   decision's records as one entry, and answers once they are applied. On
//!   becoming leader it first commits a `NoOp` so that everything earlier is
//!   applied before it decides, and builds a fresh controller.
//! - `submit` on a follower forwards to the leader (KIP-590), retrying while
//!   there is no leader or the leader is unreachable, up to
//!   `no_leader_wait_ms`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Membership, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::log_store::{LogStore, read_state, write_state};
use super::network::{Contacts, NetworkFactory, Peers, ReplicaContact, wall_clock_ms};
use super::rpc::{Envelope, ForwardError, Reply, Request, VoterChangeError};
use super::state_machine::StateMachineStore;
use super::{
    BoxFuture, ControllerFactory, ControllerLogic, ImageState, Listening, NodeId, QuorumError,
    Raft, RpcHandler, Transport, TransportError, format_voters,
};
use crate::controller::{ControllerRequest, ControllerResponse};
use crate::records::MetadataRecord;

const VOTERS_FILE: &str = "voters.json";

/// Configuration of one quorum node.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// The node's data directory; the quorum keeps its files in `metadata/` under it.
    pub data_dir: PathBuf,
    /// Where to accept other nodes' RPCs. Only a quorum of one may go without.
    pub controller_listen: Option<SocketAddr>,
    /// How the voters reach this node when it is a learner (`host:port`);
    /// defaults to the listener's bound address. A voter's address is its
    /// entry in `voters`.
    pub controller_advertised: Option<String>,
    /// Voter id -> its controller address (`host:port`), as `--controller-voters`.
    pub voters: BTreeMap<NodeId, String>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on one Raft RPC.
    pub rpc_timeout_ms: u64,
    /// Bound on a forwarded controller request (commit included).
    pub forward_timeout_ms: u64,
    /// How long `submit` waits for a leader before answering `NoLeader`.
    pub no_leader_wait_ms: u64,
    /// A snapshot is built every this many entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the latest snapshot, so a follower a
    /// little behind catches up from the log rather than a whole snapshot.
    pub snapshot_logs_kept: u64,
    pub controller_tick_ms: u64,
    /// Controller requests waiting for the controller loop.
    pub submit_queue_len: usize,
}

impl QuorumConfig {
    /// Defaults suited to a LAN or loopback.
    pub fn new(
        node_id: NodeId,
        data_dir: PathBuf,
        voters: BTreeMap<NodeId, String>,
    ) -> QuorumConfig {
        QuorumConfig {
            node_id,
            data_dir,
            controller_listen: None,
            controller_advertised: None,
            voters,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            rpc_timeout_ms: 1_000,
            forward_timeout_ms: 10_000,
            no_leader_wait_ms: 5_000,
            snapshot_every_entries: 10_000,
            snapshot_logs_kept: 1_000,
            controller_tick_ms: 250,
            submit_queue_len: 64,
        }
    }

    fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.node_id)
    }
}

/// One voter's or learner's replication state, as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDescription {
    pub node_id: NodeId,
    pub addr: String,
    /// The highest index known to be on this replica's disk.
    pub matched_index: Option<u64>,
    /// The leader's last index minus `matched_index`.
    pub lag: Option<u64>,
    /// Leader wall clock (ms since the epoch) of this replica's last answer to
    /// an AppendEntries; `None` for the leader itself or if never heard.
    pub last_fetch_timestamp_ms: Option<i64>,
    /// Leader wall clock when this replica was last seen holding everything
    /// the leader had; now for the leader itself.
    pub last_caught_up_timestamp_ms: Option<i64>,
}

/// What DescribeQuorum reports, from the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumDescription {
    pub leader_id: NodeId,
    /// The Raft term (KRaft's leader epoch).
    pub leader_epoch: u64,
    /// The highest index stored on a majority of voters.
    pub high_watermark: u64,
    pub voters: Vec<ReplicaDescription>,
    pub learners: Vec<ReplicaDescription>,
    /// Since a majority last acknowledged the leader (openraft's measure).
    pub millis_since_quorum_ack: Option<u64>,
}

type SubmitReply = oneshot::Sender<Result<ControllerResponse, ForwardError>>;

struct Inner<I: ImageState> {
    config: QuorumConfig,
    raft: Raft,
    peers: Peers,
    image: Arc<RwLock<I>>,
    applied: watch::Receiver<u64>,
    submit_tx: mpsc::Sender<(ControllerRequest, SubmitReply)>,
    listening: Mutex<Option<Listening>>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The controller's clock: monotonic, from this node's start.
    started: Instant,
    /// Held by the voter change in flight on this (leader) node: KRaft takes
    /// one change at a time, and so does openraft's joint consensus.
    voter_change: tokio::sync::Mutex<()>,
}

/// A running quorum node. Cheap to clone.
pub struct QuorumNode<I: ImageState> {
    inner: Arc<Inner<I>>,
}

impl<I: ImageState> Clone for QuorumNode<I> {
    fn clone(&self) -> Self {
        QuorumNode {
            inner: self.inner.clone(),
        }
    }
}

fn validate(config: &QuorumConfig) -> Result<(), QuorumError> {
    if config.voters.is_empty() {
        return Err(QuorumError::Config("the voter set is empty".into()));
    }
    let alone = config.voters.len() == 1 && config.is_voter();
    if config.controller_listen.is_none() && !alone {
        return Err(QuorumError::Config(format!(
            "node {} needs a controller listener: it is {} of {}",
            config.node_id,
            if config.is_voter() {
                "a voter"
            } else {
                "a learner"
            },
            format_voters(&config.voters)
        )));
    }
    if !(config.heartbeat_interval_ms < config.election_timeout_min_ms
        && config.election_timeout_min_ms < config.election_timeout_max_ms)
    {
        return Err(QuorumError::Config(
            "need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
        ));
    }
    if config.submit_queue_len == 0 {
        return Err(QuorumError::Config(
            "submit_queue_len must be at least 1".into(),
        ));
    }
    Ok(())
}

impl<I: ImageState> QuorumNode<I> {
    /// Opens the node's metadata storage, starts Raft and (if configured) the
    /// controller listener, bootstraps or joins, and starts the controller loop.
    pub async fn start(
        config: QuorumConfig,
        transport: Arc<dyn Transport>,
        make_controller: ControllerFactory<I>,
    ) -> Result<QuorumNode<I>, QuorumError> {
        validate(&config)?;
        let dir = config.data_dir.join("metadata");
        std::fs::create_dir_all(&dir)?;
        let bootstrap_set = match read_state::<BTreeMap<NodeId, String>>(&dir, VOTERS_FILE)? {
            Some(stored) => stored,
            None => {
                write_state(&dir, VOTERS_FILE, &config.voters)?;
                config.voters.clone()
            }
        };
        let (log, recovery) = LogStore::open(&dir)?;
        tracing::info!(
            node_id = config.node_id,
            entries = recovery.entries,
            torn_tail_bytes = recovery.torn_tail_bytes,
            "metadata log opened"
        );
        let sm = StateMachineStore::<I>::open(&dir)?;
        let image = sm.image();
        let applied = sm.applied_index_watch();

        let raft_config = openraft::Config {
            cluster_name: "weir-metadata".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            install_snapshot_timeout: config.rpc_timeout_ms.max(1_000) * 5,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            // Each chunk is one RPC; JSON roughly triples raw bytes, keeping
            // it far below the transport's frame cap.
            snapshot_max_chunk_size: 1 << 20,
            max_in_snapshot_log_to_keep: config.snapshot_logs_kept,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))?;

        let peers = Peers {
            self_id: config.node_id,
            voters: config.voters.clone(),
            bootstrap: Arc::default(),
            transport: transport.clone(),
            contacts: Contacts::default(),
        };
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory {
                peers: peers.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;

        // The membership in the log (empty before bootstrap or joining)
        // decides whether the configured list must match the stored one.
        let membership = raft
            .with_raft_state(|st| st.membership_state.effective().membership().clone())
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let logged_voters = voter_map(&membership);
        if bootstrap_set != config.voters
            && (logged_voters.is_empty() || logged_voters == bootstrap_set)
        {
            let _ = raft.shutdown().await;
            return Err(QuorumError::VoterSetChanged {
                stored: format_voters(&bootstrap_set),
                configured: format_voters(&config.voters),
            });
        }
        if !logged_voters.is_empty() && logged_voters != config.voters {
            tracing::info!(
                configured = %format_voters(&config.voters),
                committed = %format_voters(&logged_voters),
                "the quorum's voters changed since bootstrap: the membership in the log wins; --controller-voters is only used to find the quorum"
            );
        }
        if config.is_voter() && logged_voters.is_empty() {
            *peers.bootstrap.lock().expect("bootstrap lock") = Some(config.voters.clone());
        }
        let in_membership = membership.get_node(&config.node_id).is_some();

        let (submit_tx, submit_rx) = mpsc::channel(config.submit_queue_len);
        let (shutdown_tx, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            raft,
            peers,
            image,
            applied,
            submit_tx,
            listening: Mutex::new(None),
            shutdown_tx,
            tasks: Mutex::new(Vec::new()),
            started: Instant::now(),
            voter_change: tokio::sync::Mutex::new(()),
        });
        let node = QuorumNode {
            inner: inner.clone(),
        };
        if let Err(e) = node
            .start_inner(submit_rx, make_controller, in_membership)
            .await
        {
            node.shutdown().await;
            return Err(e);
        }
        Ok(node)
    }

    async fn start_inner(
        &self,
        submit_rx: mpsc::Receiver<(ControllerRequest, SubmitReply)>,
        make_controller: ControllerFactory<I>,
        in_membership: bool,
    ) -> Result<(), QuorumError> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut advertised = config.controller_advertised.clone();
        if let Some(listen) = config.controller_listen {
            let handler: Arc<dyn RpcHandler> = Arc::new(Handler {
                inner: Arc::downgrade(inner),
            });
            let listening = inner.peers.transport.serve(listen, handler).await?;
            advertised.get_or_insert_with(|| listening.local_addr.to_string());
            *inner.listening.lock().expect("lock") = Some(listening);
        }

        // A voter about to bootstrap refuses to start next to a voter that
        // disagrees about the voters.
        let bootstrapping = inner
            .peers
            .bootstrap
            .lock()
            .expect("bootstrap lock")
            .is_some();
        let hello_timeout = Duration::from_millis(config.rpc_timeout_ms);
        for (&id, addr) in &config.voters {
            if id == config.node_id || !bootstrapping {
                continue;
            }
            match inner.peers.call(addr, Request::Hello, hello_timeout).await {
                Err(e @ QuorumError::VoterMismatch { .. }) => return Err(e),
                Err(e) => {
                    tracing::info!(node_id = id, error = %e, "voter not reachable at start; it may not be up yet")
                }
                Ok(_) => {}
            }
        }

        if in_membership {
            // A member already (a voter, or a learner that was added):
            // the leader replicates to it; nothing to ask for.
        } else if config.is_voter() {
            let initialized = inner
                .raft
                .is_initialized()
                .await
                .map_err(|e| QuorumError::Raft(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<NodeId, BasicNode> = config
                    .voters
                    .iter()
                    .map(|(&id, addr)| (id, BasicNode { addr: addr.clone() }))
                    .collect();
                match inner.raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => return Err(QuorumError::Raft(e.to_string())),
                }
            }
        } else {
            let addr = advertised.expect("a learner has a listener (validated)");
            let join = tokio::spawn(join_as_learner(inner.clone(), addr));
            inner.tasks.lock().expect("lock").push(join);
        }

        let watcher = tokio::spawn(track_caught_up(inner.clone()));
        inner.tasks.lock().expect("lock").push(watcher);
        let controller = tokio::spawn(controller_loop(inner.clone(), submit_rx, make_controller));
        inner.tasks.lock().expect("lock").push(controller);
        Ok(())
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The image, for readers. Never hold the lock across an await.
    pub fn image(&self) -> Arc<RwLock<I>> {
        self.inner.image.clone()
    }

    /// The index of the last applied entry (0 before any).
    pub fn applied_index_watch(&self) -> watch::Receiver<u64> {
        self.inner.applied.clone()
    }

    /// Waits until entries up to `index` are applied here.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), QuorumError> {
        let mut rx = self.inner.applied.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&applied| applied >= index))
            .await
            .map_err(|_| {
                QuorumError::Raft(format!(
                    "entry {index} not applied within {} ms",
                    timeout.as_millis()
                ))
            })?
            .map_err(|_| QuorumError::Shutdown)?;
        Ok(())
    }

    /// openraft's metrics, for tests and operator views.
    pub fn raft_metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.inner.raft.metrics()
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Resolves, with the reason, once Raft on this node has stopped for good
    /// without being asked to: a write to the metadata log that failed (the
    /// store then refuses every later write, see `log_store`), or a panic in
    /// openraft's core. From then on the node neither votes nor applies, but
    /// its process would still look alive; the caller is expected to stop the
    /// process, as Kafka halts a node whose metadata log directory failed, so
    /// that a supervisor restarts it on a working disk. A clean
    /// [`QuorumNode::shutdown`] never resolves this.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            match &metrics.borrow_and_update().running_state {
                Ok(()) | Err(openraft::error::Fatal::Stopped) => {}
                Err(fatal) => return fatal.to_string(),
            }
            if metrics.changed().await.is_err() {
                // Raft dropped: only a shutdown does that, and it is not a fault.
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        is_leader(&self.inner)
    }

    /// Decides and commits one controller request: here if this node is the
    /// leader, else at the leader. Answers once the records are applied on
    /// the leader.
    ///
    /// A request is retried only when it surely did not reach a controller
    /// (no leader, leader unreachable, or "not the leader"); a request whose
    /// reply was lost is not repeated, so it is applied at most once.
    pub async fn submit(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, QuorumError> {
        let inner = &self.inner;
        let started = Instant::now();
        let wait = Duration::from_millis(inner.config.no_leader_wait_ms);
        let mut metrics = inner.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            let outcome = match leader {
                Some(id) if id == inner.config.node_id => submit_here(inner, request.clone()).await,
                Some(id) => match leader_addr(inner, id) {
                    None => Err(ForwardError::NotLeader { leader: None }),
                    Some(addr) => {
                        let timeout = Duration::from_millis(inner.config.forward_timeout_ms);
                        match inner
                            .peers
                            .call(&addr, Request::Forward(request.clone()), timeout)
                            .await
                        {
                            Ok(Reply::Forward(result)) => result,
                            Ok(other) => {
                                Err(ForwardError::Other(format!("unexpected reply {other:?}")))
                            }
                            Err(QuorumError::Transport(e @ TransportError::Connect { .. })) => {
                                Err(ForwardError::Other(e.to_string()))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                },
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match outcome {
                Ok(response) => return Ok(response),
                Err(ForwardError::Controller(e)) => return Err(QuorumError::Controller(e)),
                Err(e) => {
                    let waited = started.elapsed();
                    if waited >= wait {
                        tracing::warn!(error = %e, "no controller to take the request");
                        return Err(QuorumError::NoLeader {
                            waited_ms: waited.as_millis() as u64,
                        });
                    }
                    if *inner.shutdown_tx.borrow() {
                        return Err(QuorumError::Shutdown);
                    }
                    // Retry when the leadership changes, or after a short pause.
                    let pause = Duration::from_millis(50).min(wait - waited);
                    let _ = tokio::time::timeout(pause, metrics.changed()).await;
                }
            }
        }
    }

    /// DescribeQuorum, answered by the leader (forwarded there if needed).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription, QuorumError> {
        let inner = &self.inner;
        if let Some(description) = describe_here(inner) {
            return Ok(description);
        }
        let leader = self
            .leader_id()
            .ok_or(QuorumError::NoLeader { waited_ms: 0 })?;
        let addr = leader_addr(inner, leader).ok_or(QuorumError::NoLeader { waited_ms: 0 })?;
        let timeout = Duration::from_millis(inner.config.rpc_timeout_ms);
        match inner
            .peers
            .call(&addr, Request::DescribeQuorum, timeout)
            .await?
        {
            Reply::DescribeQuorum(Ok(d)) => Ok(d),
            Reply::DescribeQuorum(Err(_)) => Err(QuorumError::NoLeader { waited_ms: 0 }),
            other => Err(QuorumError::Raft(format!("unexpected reply {other:?}"))),
        }
    }

    /// Makes learner `node_id` a voter (KIP-853's AddRaftVoter), at the leader.
    pub async fn add_voter(&self, node_id: NodeId) -> Result<(), QuorumError> {
        self.change_voters(VoterChange::Add(node_id)).await
    }

    /// Makes voter `node_id` a learner (KIP-853's RemoveRaftVoter), at the leader.
    pub async fn remove_voter(&self, node_id: NodeId) -> Result<(), QuorumError> {
        self.change_voters(VoterChange::Remove(node_id)).await
    }

    async fn change_voters(&self, change: VoterChange) -> Result<(), QuorumError> {
        let inner = &self.inner;
        let outcome = if is_leader(inner) {
            change_voters_here(inner, change).await
        } else {
            let leader = self
                .leader_id()
                .ok_or(QuorumError::NoLeader { waited_ms: 0 })?;
            let addr = leader_addr(inner, leader).ok_or(QuorumError::NoLeader { waited_ms: 0 })?;
            let request = match change {
                VoterChange::Add(node_id) => Request::AddVoter { node_id },
                VoterChange::Remove(node_id) => Request::RemoveVoter { node_id },
            };
            let timeout = Duration::from_millis(inner.config.forward_timeout_ms);
            match inner.peers.call(&addr, request, timeout).await? {
                Reply::ChangeVoters(result) => result,
                other => return Err(QuorumError::Raft(format!("unexpected reply {other:?}"))),
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(ForwardError::VoterChange(e)) => Err(QuorumError::VoterChange(e)),
            Err(ForwardError::NotLeader { .. }) => Err(QuorumError::NoLeader { waited_ms: 0 }),
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    /// Stops the controller loop, the listener and Raft.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown_tx.send_replace(true);
        drop(inner.listening.lock().expect("lock").take());
        if let Err(e) = inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *inner.tasks.lock().expect("lock"));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Whether this node leads and may act as the controller. openraft lets a
/// leader that removed itself from the voters (kept as a learner) go on
/// leading; it is no controller then (see [`step_down`]).
fn is_leader<I: ImageState>(inner: &Inner<I>) -> bool {
    let m = inner.raft.metrics();
    let m = m.borrow();
    let me = inner.config.node_id;
    m.current_leader == Some(me)
        && m.state == ServerState::Leader
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me)
}

/// A leader that removed itself stays leader in openraft 0.9 (a leader need
/// not be a voter there) and its heartbeats keep the voters from electing
/// another. KRaft's leader resigns once the removal commits; here the leader
/// stops heartbeating until a voter's election replaces it (bounded).
async fn step_down<I: ImageState>(inner: &Inner<I>) {
    let me = inner.config.node_id;
    let runtime = inner.raft.runtime_config();
    runtime.heartbeat(false);
    let wait = Duration::from_millis(inner.config.election_timeout_max_ms * 10);
    let mut metrics = inner.raft.metrics();
    let replaced = tokio::time::timeout(
        wait,
        metrics.wait_for(|m| m.current_leader != Some(me) || m.state != ServerState::Leader),
    )
    .await;
    runtime.heartbeat(true);
    match replaced {
        Ok(_) => tracing::info!(node_id = me, "removed from the voters; another voter leads"),
        Err(_) => tracing::warn!(
            node_id = me,
            waited_ms = wait.as_millis() as u64,
            "removed from the voters but still leading: no voter took over yet"
        ),
    }
}

fn leader_addr<I: ImageState>(inner: &Inner<I>, leader: NodeId) -> Option<String> {
    let m = inner.raft.metrics();
    let from_membership = m
        .borrow()
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone());
    from_membership.or_else(|| inner.config.voters.get(&leader).cloned())
}

async fn submit_here<I: ImageState>(
    inner: &Inner<I>,
    request: ControllerRequest,
) -> Result<ControllerResponse, ForwardError> {
    if !is_leader(inner) {
        return Err(ForwardError::NotLeader {
            leader: inner.raft.metrics().borrow().current_leader,
        });
    }
    let (tx, rx) = oneshot::channel();
    let timeout = Duration::from_millis(inner.config.forward_timeout_ms);
    tokio::time::timeout(timeout, inner.submit_tx.send((request, tx)))
        .await
        .map_err(|_| {
            ForwardError::Other(format!(
                "controller queue full for {} ms",
                timeout.as_millis()
            ))
        })?
        .map_err(|_| ForwardError::Other("controller loop stopped".into()))?;
    rx.await
        .map_err(|_| ForwardError::Other("controller loop stopped".into()))?
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id,
        },
        other => ForwardError::Other(other.to_string()),
    }
}

/// The controller this node runs while it leads, with the term it was made for.
struct ActiveController<I> {
    term: u64,
    logic: Box<dyn ControllerLogic<I>>,
}

/// Makes sure a controller exists for the current term, committing a `NoOp`
/// first when the term is new, so the image holds everything committed before.
async fn ensure_controller<'a, I: ImageState>(
    inner: &Inner<I>,
    active: &'a mut Option<ActiveController<I>>,
    make_controller: &ControllerFactory<I>,
) -> Result<&'a mut Box<dyn ControllerLogic<I>>, ForwardError> {
    let (leader, term) = {
        let m = inner.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    };
    if !is_leader(inner) {
        *active = None;
        return Err(ForwardError::NotLeader { leader });
    }
    if active.as_ref().is_none_or(|a| a.term != term) {
        *active = None;
        inner
            .raft
            .client_write(vec![MetadataRecord::NoOp])
            .await
            .map_err(write_error)?;
        *active = Some(ActiveController {
            term,
            logic: make_controller(),
        });
    }
    Ok(&mut active.as_mut().expect("just set").logic)
}

async fn decide<I: ImageState>(
    inner: &Inner<I>,
    active: &mut Option<ActiveController<I>>,
    make_controller: &ControllerFactory<I>,
    request: ControllerRequest,
) -> Result<ControllerResponse, ForwardError> {
    let now_ms = inner.started.elapsed().as_millis() as u64;
    let logic = ensure_controller(inner, active, make_controller).await?;
    let decision = {
        let image = inner.image.read().expect("image lock poisoned");
        logic
            .handle(&image, now_ms, &request)
            .map_err(ForwardError::Controller)?
    };
    let mut response = decision.response;
    if decision.records.is_empty() {
        return Ok(response);
    }
    let written = inner
        .raft
        .client_write(decision.records)
        .await
        .map_err(|e| {
            *active = None;
            write_error(e)
        })?;
    if let ControllerResponse::RegisterBroker { broker_epoch } = &mut response {
        *broker_epoch = written.log_id.index as i64;
    }
    Ok(response)
}

async fn tick<I: ImageState>(
    inner: &Inner<I>,
    active: &mut Option<ActiveController<I>>,
    make_controller: &ControllerFactory<I>,
) -> Result<(), ForwardError> {
    let now_ms = inner.started.elapsed().as_millis() as u64;
    let logic = ensure_controller(inner, active, make_controller).await?;
    let records = {
        let image = inner.image.read().expect("image lock poisoned");
        logic.tick(&image, now_ms)
    };
    if !records.is_empty() {
        inner
            .raft
            .client_write(records)
            .await
            .map_err(write_error)?;
    }
    Ok(())
}

async fn controller_loop<I: ImageState>(
    inner: Arc<Inner<I>>,
    mut requests: mpsc::Receiver<(ControllerRequest, SubmitReply)>,
    make_controller: ControllerFactory<I>,
) {
    let mut shutdown = inner.shutdown_tx.subscribe();
    let mut ticker = tokio::time::interval(Duration::from_millis(inner.config.controller_tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active: Option<ActiveController<I>> = None;
    loop {
        tokio::select! {
            // The watch's guard is not Send: drop it inside the branch's own future.
            _ = async { shutdown.wait_for(|&stop| stop).await.is_ok() } => return,
            request = requests.recv() => {
                let Some((request, reply)) = request else { return };
                let result = decide(&inner, &mut active, &make_controller, request).await;
                let _ = reply.send(result);
            }
            _ = ticker.tick() => {
                if is_leader(&inner)
                    && let Err(e) = tick(&inner, &mut active, &make_controller).await
                {
                    tracing::debug!(error = %e, "controller tick not committed");
                }
            }
        }
    }
}

/// On the leader, notes when each replica holds everything the leader has
/// (DescribeQuorum's LastCaughtUpTimestamp). Runs on every metrics change,
/// which openraft publishes as replication progresses.
async fn track_caught_up<I: ImageState>(inner: Arc<Inner<I>>) {
    let mut metrics = inner.raft.metrics();
    let mut shutdown = inner.shutdown_tx.subscribe();
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some()
            {
                let mut bootstrap = inner.peers.bootstrap.lock().expect("bootstrap lock");
                if bootstrap.is_some() {
                    *bootstrap = None;
                }
            }
            if let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) {
                let now_ms = wall_clock_ms();
                let mut contacts = inner.peers.contacts.lock().expect("contacts lock");
                for (id, matched) in replication {
                    if matched.is_some_and(|l| l.index >= last) {
                        contacts.entry(*id).or_default().last_caught_up_ms = Some(now_ms);
                    }
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = async { shutdown.wait_for(|&stop| stop).await.is_ok() } => return,
        }
    }
}

/// A learner asks the voters, in turn, until the leader adds it.
async fn join_as_learner<I: ImageState>(inner: Arc<Inner<I>>, addr: String) {
    let config = &inner.config;
    let timeout = Duration::from_millis(config.forward_timeout_ms);
    let mut shutdown = inner.shutdown_tx.subscribe();
    loop {
        for voter_addr in config.voters.values() {
            let request = Request::AddLearner {
                node_id: config.node_id,
                addr: addr.clone(),
            };
            match inner.peers.call(voter_addr, request, timeout).await {
                Ok(Reply::AddLearner(Ok(()))) => {
                    tracing::info!(
                        node_id = config.node_id,
                        "joined the metadata quorum as a learner"
                    );
                    return;
                }
                Ok(Reply::AddLearner(Err(ForwardError::NotLeader { .. }))) => {}
                Ok(other) => tracing::warn!(reply = ?other, "AddLearner refused"),
                // Already logged as an error by `call`; keep trying loudly.
                Err(QuorumError::VoterMismatch { .. }) => {}
                Err(e) => tracing::debug!(error = %e, "AddLearner not delivered"),
            }
        }
        let stop = async { shutdown.wait_for(|&stop| stop).await.is_ok() };
        if tokio::time::timeout(Duration::from_millis(500), stop)
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// A joining node knows only the addresses in its `--controller-voters`,
/// which may no longer hold the leader (after a failover, or once voters were
/// replaced): a member that is not the leader passes its request on to the
/// leader it knows, once (a passed-on request is not passed on again).
async fn add_learner_or_forward<I: ImageState>(
    inner: &Inner<I>,
    node_id: NodeId,
    addr: String,
    from_itself: bool,
) -> Result<(), ForwardError> {
    let leader = inner.raft.metrics().borrow().current_leader;
    let elsewhere = leader.filter(|&l| l != inner.config.node_id);
    let Some(leader) = elsewhere.filter(|_| from_itself) else {
        return add_learner_here(inner, node_id, addr).await;
    };
    let Some(leader_addr) = leader_addr(inner, leader) else {
        return Err(ForwardError::NotLeader {
            leader: Some(leader),
        });
    };
    let timeout = Duration::from_millis(inner.config.forward_timeout_ms);
    match inner
        .peers
        .call(&leader_addr, Request::AddLearner { node_id, addr }, timeout)
        .await
    {
        Ok(Reply::AddLearner(result)) => result,
        Ok(other) => Err(ForwardError::Other(format!("unexpected reply {other:?}"))),
        Err(e) => Err(ForwardError::Other(e.to_string())),
    }
}

async fn add_learner_here<I: ImageState>(
    inner: &Inner<I>,
    node_id: NodeId,
    addr: String,
) -> Result<(), ForwardError> {
    if !is_leader(inner) {
        return Err(ForwardError::NotLeader {
            leader: inner.raft.metrics().borrow().current_leader,
        });
    }
    let (known, is_voter) = {
        let m = inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        (
            membership.get_node(&node_id).map(|n| n.addr.clone()),
            membership.voter_ids().any(|id| id == node_id),
        )
    };
    if known.as_deref() == Some(addr.as_str()) {
        return Ok(());
    }
    if is_voter {
        // Re-adding would change a voter's address under the quorum's feet.
        return Err(ForwardError::Other(format!(
            "node id {node_id} is a voter at {}, not a learner at {addr}",
            known.unwrap_or_default()
        )));
    }
    inner
        .raft
        .add_learner(node_id, BasicNode { addr }, false)
        .await
        .map(|_| ())
        .map_err(write_error)
}

/// A membership's voters with their addresses.
fn voter_map(membership: &Membership<NodeId, BasicNode>) -> BTreeMap<NodeId, String> {
    membership
        .voter_ids()
        .map(|id| {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, addr)
        })
        .collect()
}

/// The voter set a bootstrapping peer's must equal: our committed
/// membership's, or, while we too are still to bootstrap, our configured one.
/// `None` (no check) for a learner that has not joined yet.
fn voters_to_compare<I: ImageState>(inner: &Inner<I>) -> Option<BTreeMap<NodeId, String>> {
    let logged = voter_map(inner.raft.metrics().borrow().membership_config.membership());
    if !logged.is_empty() {
        return Some(logged);
    }
    inner
        .peers
        .bootstrap
        .lock()
        .expect("bootstrap lock")
        .clone()
}

#[derive(Debug, Clone, Copy)]
enum VoterChange {
    Add(NodeId),
    Remove(NodeId),
}

/// How far behind the leader's log a learner may be and still be made a
/// voter: it must ack the joint configuration before anything commits.
const VOTER_CATCH_UP_ENTRIES_MAX: u64 = 100;

/// Carries out one voter change on the leader, refusing what KRaft refuses
/// (see [`VoterChangeError`]). Bounded by half the forward timeout, so the
/// answer reaches a forwarding node before its own wait ends.
async fn change_voters_here<I: ImageState>(
    inner: &Inner<I>,
    change: VoterChange,
) -> Result<(), ForwardError> {
    if !is_leader(inner) {
        return Err(ForwardError::NotLeader {
            leader: inner.raft.metrics().borrow().current_leader,
        });
    }
    let refuse = |e: VoterChangeError| Err(ForwardError::VoterChange(e));
    let Ok(_guard) = inner.voter_change.try_lock() else {
        return refuse(VoterChangeError::InProgress(
            "another voter change is being carried out by this controller".into(),
        ));
    };
    let m = inner.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return refuse(VoterChangeError::InProgress(format!(
            "the quorum is in a joint configuration {:?}",
            membership.get_joint_config()
        )));
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let changes = match change {
        VoterChange::Add(node_id) => {
            if voters.contains(&node_id) {
                return refuse(VoterChangeError::DuplicateVoter { node_id, voters });
            }
            if !learners.contains(&node_id) {
                return refuse(VoterChangeError::NotALearner { node_id, learners });
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).cloned().flatten())
                .map(|l| l.index);
            let heard_ms = inner
                .peers
                .contacts
                .lock()
                .expect("contacts lock")
                .get(&node_id)
                .and_then(|c| c.last_fetch_ms);
            let recent_ms = (inner.config.election_timeout_max_ms * 2) as i64;
            match (matched, heard_ms) {
                (Some(matched), Some(heard))
                    if matched + VOTER_CATCH_UP_ENTRIES_MAX >= last
                        && wall_clock_ms() - heard <= recent_ms => {}
                (matched, heard) => {
                    return refuse(VoterChangeError::NotCaughtUp {
                        node_id,
                        reason: format!(
                            "it holds the log up to {matched:?} of {last}, last heard {} ms ago",
                            heard
                                .map_or("never".to_string(), |h| (wall_clock_ms() - h).to_string())
                        ),
                    });
                }
            }
            ChangeMembers::AddVoterIds([node_id].into())
        }
        VoterChange::Remove(node_id) => {
            if !voters.contains(&node_id) {
                return refuse(VoterChangeError::VoterNotFound {
                    node_id,
                    voters,
                    reason: "it is not a voter".into(),
                });
            }
            if voters.len() == 1 {
                return refuse(VoterChangeError::VoterNotFound {
                    node_id,
                    voters,
                    reason: "it is the only voter; add another first".into(),
                });
            }
            ChangeMembers::RemoveVoters([node_id].into())
        }
    };
    let timeout_ms = (inner.config.forward_timeout_ms / 2).max(1);
    tracing::info!(?change, "changing the metadata quorum's voters");
    // `retain`: a removed voter stays a learner and keeps following the log.
    match tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        inner.raft.change_membership(changes, true),
    )
    .await
    {
        Err(_) => refuse(VoterChangeError::Timeout { timeout_ms }),
        Ok(Ok(_)) => {
            if matches!(change, VoterChange::Remove(id) if id == inner.config.node_id) {
                step_down(inner).await;
            }
            Ok(())
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(p),
        )))) => refuse(VoterChangeError::InProgress(p.to_string())),
        Ok(Err(e)) => Err(write_error(e)),
    }
}

fn describe_here<I: ImageState>(inner: &Inner<I>) -> Option<QuorumDescription> {
    if !is_leader(inner) {
        return None;
    }
    let m = inner.raft.metrics().borrow().clone();
    let last_index = m.last_log_index.unwrap_or(0);
    let replication = m.replication.clone().unwrap_or_default();
    let membership = m.membership_config.membership();
    let now_ms = wall_clock_ms();
    let contacts = inner.peers.contacts.lock().expect("contacts lock").clone();
    let describe = |id: NodeId| {
        let matched = if id == inner.config.node_id {
            Some(last_index)
        } else {
            replication
                .get(&id)
                .map(|l| l.map(|l| l.index).unwrap_or(0))
        };
        let contact = if id == inner.config.node_id {
            ReplicaContact {
                last_fetch_ms: None,
                last_caught_up_ms: Some(now_ms),
            }
        } else {
            contacts.get(&id).copied().unwrap_or_default()
        };
        ReplicaDescription {
            last_fetch_timestamp_ms: contact.last_fetch_ms,
            last_caught_up_timestamp_ms: contact.last_caught_up_ms,
            node_id: id,
            addr: membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default(),
            matched_index: matched,
            lag: matched.map(|i| last_index.saturating_sub(i)),
        }
    };
    let voters: Vec<ReplicaDescription> = membership.voter_ids().map(describe).collect();
    let learners: Vec<ReplicaDescription> = membership.learner_ids().map(describe).collect();
    // The majority's matched index: the (n/2)-th highest of the voters'.
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|v| v.matched_index.unwrap_or(0))
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    let high_watermark = matched.get(matched.len() / 2).copied().unwrap_or(0);
    Some(QuorumDescription {
        leader_id: inner.config.node_id,
        leader_epoch: m.current_term,
        high_watermark,
        voters,
        learners,
        millis_since_quorum_ack: m.millis_since_quorum_ack,
    })
}

/// Answers RPCs from other nodes. Holds the node weakly so a dropped node is
/// not kept alive by its own listener.
struct Handler<I: ImageState> {
    inner: Weak<Inner<I>>,
}

impl<I: ImageState> RpcHandler for Handler<I> {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let inner = self.inner.upgrade();
        Box::pin(async move {
            let reply = match inner {
                None => Reply::Malformed("node is shutting down".into()),
                Some(inner) => handle_request(&inner, &request).await,
            };
            serde_json::to_vec(&reply).unwrap_or_else(|e| {
                serde_json::to_vec(&Reply::Malformed(format!("encoding the reply: {e}")))
                    .expect("plain enum encodes")
            })
        })
    }
}

async fn handle_request<I: ImageState>(inner: &Inner<I>, request: &[u8]) -> Reply {
    let envelope: Envelope = match serde_json::from_slice(request) {
        Ok(e) => e,
        Err(e) => return Reply::Malformed(e.to_string()),
    };
    if let Some(theirs) = &envelope.bootstrap_voters
        && let Some(ours) = voters_to_compare(inner)
        && theirs != &ours
    {
        tracing::error!(
            "node {} would bootstrap with voters {}, we have {}: all voters must list the same --controller-voters",
            envelope.from,
            format_voters(theirs),
            format_voters(&ours)
        );
        return Reply::VoterMismatch {
            node_id: inner.config.node_id,
            voters: ours,
        };
    }
    match envelope.body {
        Request::AppendEntries(rpc) => Reply::AppendEntries(inner.raft.append_entries(rpc).await),
        Request::Vote(rpc) => Reply::Vote(inner.raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => {
            Reply::InstallSnapshot(inner.raft.install_snapshot(rpc).await)
        }
        Request::Forward(request) => Reply::Forward(submit_here(inner, request).await),
        Request::AddLearner { node_id, addr } => {
            let from_itself = envelope.from == node_id;
            Reply::AddLearner(add_learner_or_forward(inner, node_id, addr, from_itself).await)
        }
        Request::AddVoter { node_id } => {
            Reply::ChangeVoters(change_voters_here(inner, VoterChange::Add(node_id)).await)
        }
        Request::RemoveVoter { node_id } => {
            Reply::ChangeVoters(change_voters_here(inner, VoterChange::Remove(node_id)).await)
        }
        Request::DescribeQuorum => {
            Reply::DescribeQuorum(describe_here(inner).ok_or(ForwardError::NotLeader {
                leader: inner.raft.metrics().borrow().current_leader,
            }))
        }
        Request::Hello => Reply::Hello,
    }
}
