//! openraft's network traits over a [`Transport`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};

use super::rpc::{Envelope, Reply, Request};
use super::{NodeId, QuorumError, Transport, TypeConfig, format_voters};

/// Shared by the Raft network and the node's own calls (forwarding, AddLearner).
#[derive(Clone)]
pub struct Peers {
    pub self_id: NodeId,
    /// The configured `--controller-voters`: the bootstrap set, and where to
    /// look for the quorum.
    pub voters: BTreeMap<NodeId, String>,
    /// The configured set while this node is a voter still to bootstrap (no
    /// membership in its log yet), stamped on every request so peers can
    /// refuse a conflicting bootstrap; cleared once a membership is known.
    pub bootstrap: Arc<std::sync::Mutex<Option<BTreeMap<NodeId, String>>>>,
    pub transport: Arc<dyn Transport>,
    pub contacts: Contacts,
}

/// When the leader last heard from a replica and last saw it caught up, in
/// wall-clock ms, as Kafka's DescribeQuorum v1 reports (KIP-836). openraft
/// 0.9 does not report these, so the network layer and a metrics watcher
/// record them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaContact {
    pub last_fetch_ms: Option<i64>,
    pub last_caught_up_ms: Option<i64>,
}

pub type Contacts = Arc<std::sync::Mutex<BTreeMap<NodeId, ReplicaContact>>>;

pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Peers {
    /// Sends one request and decodes the reply; a voter-set mismatch becomes
    /// [`QuorumError::VoterMismatch`] and is logged loudly.
    pub async fn call(
        &self,
        addr: &str,
        body: Request,
        timeout: Duration,
    ) -> Result<Reply, QuorumError> {
        let envelope = Envelope {
            from: self.self_id,
            bootstrap_voters: self.bootstrap.lock().expect("bootstrap lock").clone(),
            body,
        };
        let bytes = serde_json::to_vec(&envelope)
            .map_err(|e| QuorumError::Raft(format!("encoding a request: {e}")))?;
        let reply = self.transport.call(addr, bytes, timeout).await?;
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| {
            QuorumError::Raft(format!(
                "controller at {addr} sent an unreadable reply: {e}"
            ))
        })?;
        match reply {
            Reply::VoterMismatch { node_id, voters } => {
                let err = QuorumError::VoterMismatch {
                    node_id,
                    theirs: format_voters(&voters),
                    ours: format_voters(&self.voters),
                };
                tracing::error!("{err}");
                Err(err)
            }
            Reply::Malformed(reason) => Err(QuorumError::Raft(format!(
                "controller at {addr} could not read our request: {reason}"
            ))),
            other => Ok(other),
        }
    }
}

pub struct NetworkFactory {
    pub peers: Peers,
}

pub struct PeerClient {
    peers: Peers,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn send(
        &self,
        body: Request,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
        match self.peers.call(&self.addr, body, option.hard_ttl()).await {
            Ok(reply) => Ok(reply),
            Err(QuorumError::Transport(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: &Reply,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "controller at {} answered with the wrong message kind: {reply:?}",
            self.addr
        ))))
    }
}

/// Narrows the error type of a failed send (it never carries a remote error).
fn narrow<E: std::error::Error>(
    e: RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        RPCError::Unreachable(u) => RPCError::Unreachable(u),
        RPCError::Network(n) => RPCError::Network(n),
        other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self
            .send(Request::AppendEntries(rpc), &option)
            .await
            .map_err(narrow)?
        {
            Reply::AppendEntries(Ok(r)) => {
                let mut contacts = self.peers.contacts.lock().expect("contacts lock");
                contacts.entry(self.target).or_default().last_fetch_ms = Some(wall_clock_ms());
                Ok(r)
            }
            Reply::AppendEntries(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(Ok(r)) => Ok(r),
            Reply::InstallSnapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .send(Request::Vote(rpc), &option)
            .await
            .map_err(narrow)?
        {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(&other)),
        }
    }
}
