//! The Raft quorum that orders the metadata records, on openraft 0.9.
//!
//! Layout:
//! - [`log_store`]: the Raft log, vote and committed index on local disk (fsynced).
//! - [`state_machine`]: applies entries to the image; snapshots on disk.
//! - [`rpc`]: the messages nodes exchange (Raft RPCs, forwarded controller
//!   requests, AddLearner, voter changes); a voter still to bootstrap stamps
//!   its configured voter set on each.
//! - [`network`]: openraft's network traits over a [`Transport`].
//! - [`node`]: [`QuorumNode`], the tokio shell: bootstrap, the serialised
//!   controller loop, forwarding, DescribeQuorum.
//!
//! This module never opens a socket: the [`Transport`] is given to it (the
//! server crate implements it over TCP), so the quorum can be tested with any
//! transport and the dependency points downward.
//!
//! One entry of the Raft log is one controller decision: a `Vec` of records
//! applied atomically, in order, under the entry's index.

pub mod log_store;
pub mod network;
pub mod node;
pub mod rpc;
pub mod state_machine;
pub mod testing;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::controller::{
    Controller, ControllerConfig, ControllerError, ControllerRequest, Decision,
};
use crate::image::MetadataImage;
use crate::records::{MetadataRecord, TopicId};

pub use node::{QuorumConfig, QuorumDescription, QuorumNode, ReplicaDescription};

/// A node id: Kafka's `node.id`, the same number as the broker id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata quorum.
    pub TypeConfig:
        D = Vec<MetadataRecord>,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

/// What the state machine needs from an image. [`MetadataImage`] is the real
/// one; tests may use a smaller one.
pub trait ImageState: Default + Send + Sync + 'static {
    fn apply_metadata_record(&mut self, index: u64, record: &MetadataRecord) -> Result<(), String>;
    /// An entry without records (Raft's blank or membership entries) was applied.
    fn note_applied(&mut self, _index: u64) {}
    fn to_snapshot_bytes(&self) -> Vec<u8>;
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String>;
}

impl ImageState for MetadataImage {
    fn apply_metadata_record(&mut self, index: u64, record: &MetadataRecord) -> Result<(), String> {
        self.apply(index, record).map_err(|e| e.to_string())
    }
    fn note_applied(&mut self, index: u64) {
        MetadataImage::note_applied(self, index)
    }
    fn to_snapshot_bytes(&self) -> Vec<u8> {
        self.to_snapshot()
    }
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        MetadataImage::from_snapshot(bytes).map_err(|e| e.to_string())
    }
}

/// What the controller loop needs from the controller. [`Controller`] is the
/// real one; tests may use a smaller one.
pub trait ControllerLogic<I>: Send + 'static {
    fn handle(
        &mut self,
        image: &I,
        now_ms: u64,
        request: &ControllerRequest,
    ) -> Result<Decision, ControllerError>;
    fn tick(&mut self, image: &I, now_ms: u64) -> Vec<MetadataRecord>;
}

impl ControllerLogic<MetadataImage> for Controller {
    fn handle(
        &mut self,
        image: &MetadataImage,
        now_ms: u64,
        request: &ControllerRequest,
    ) -> Result<Decision, ControllerError> {
        Controller::handle(self, image, now_ms, request)
    }
    fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataRecord> {
        Controller::tick(self, image, now_ms)
    }
}

/// Makes a fresh controller each time this node becomes the leader (its
/// heartbeat memory does not survive a failover, as in KRaft).
pub type ControllerFactory<I> = Arc<dyn Fn() -> Box<dyn ControllerLogic<I>> + Send + Sync>;

/// The quorum of the real image.
pub type MetadataQuorum = QuorumNode<MetadataImage>;

/// The real controller, made afresh at each leadership, with random topic ids
/// (KIP-516 ids are random UUIDs).
pub fn metadata_controller(config: ControllerConfig) -> ControllerFactory<MetadataImage> {
    Arc::new(move || {
        Box::new(Controller::new(config.clone()).with_id_source(random_topic_id))
            as Box<dyn ControllerLogic<MetadataImage>>
    })
}

fn random_topic_id() -> TopicId {
    let mut id = [0u8; 16];
    fastrand::fill(&mut id);
    id
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a transport call failed. The messages name the address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error(
        "controller at {addr}: cannot connect: {reason} (is a weir node listening there with --controller-listen?)"
    )]
    Connect { addr: String, reason: String },
    #[error("controller at {addr}: no answer within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("controller at {addr}: {reason}")]
    Io { addr: String, reason: String },
    #[error("controller listener on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// Handles one incoming request's bytes and returns the reply's bytes.
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

/// A running listener; dropping it stops accepting.
pub struct Listening {
    pub local_addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Listening {
    pub fn new(local_addr: SocketAddr, stop: impl FnOnce() + Send + 'static) -> Listening {
        Listening {
            local_addr,
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// How nodes reach each other: request/reply byte messages to an address.
/// Implementations bound every wait and the number of calls in flight.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to the node at `addr` (`host:port`) and returns its reply.
    fn call(
        &self,
        addr: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
    /// Accepts requests on `listen` and answers each through `handler`.
    fn serve(
        &self,
        listen: SocketAddr,
        handler: Arc<dyn RpcHandler>,
    ) -> BoxFuture<'_, Result<Listening, TransportError>>;
}

/// A transport for a quorum of one: nobody to call, nothing to serve.
pub struct NoTransport;

impl Transport for NoTransport {
    fn call(
        &self,
        addr: &str,
        _request: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_string();
        Box::pin(async move {
            Err(TransportError::Connect {
                addr,
                reason: "this node has no controller transport".into(),
            })
        })
    }
    fn serve(
        &self,
        listen: SocketAddr,
        _handler: Arc<dyn RpcHandler>,
    ) -> BoxFuture<'_, Result<Listening, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Listen {
                addr: listen.to_string(),
                reason: "this node has no controller transport".into(),
            })
        })
    }
}

/// The quorum's errors.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    #[error(
        "the controller voters changed: this data directory was bootstrapped with {stored}, the configuration now says {configured}, and the quorum's committed voters are still the bootstrap set; all voters must keep the same --controller-voters until the voters are changed with `weir cluster add-voter` / `remove-voter`"
    )]
    VoterSetChanged { stored: String, configured: String },
    #[error(
        "node {node_id} has voters {theirs}, we have {ours}: all voters must list the same --controller-voters (a running quorum's voters change with `weir cluster add-voter` / `remove-voter`)"
    )]
    VoterMismatch {
        node_id: NodeId,
        theirs: String,
        ours: String,
    },
    #[error(transparent)]
    VoterChange(#[from] rpc::VoterChangeError),
    #[error("the metadata quorum has no leader (waited {waited_ms} ms)")]
    NoLeader { waited_ms: u64 },
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the metadata quorum is shutting down")]
    Shutdown,
}

/// Formats a voter set the way `--controller-voters` spells it.
pub fn format_voters(voters: &BTreeMap<NodeId, String>) -> String {
    let parts: Vec<String> = voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect();
    format!("[{}]", parts.join(","))
}
