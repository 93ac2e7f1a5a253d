//! The messages nodes exchange over the controller listener, as serde_json.
//!
//! Every request carries the sender's configured voter set, so a node started
//! with a different `--controller-voters` is found on its first contact and
//! refused (KRaft keeps the voter set in the log; with a static list the next
//! best thing is to compare it on every RPC).

use std::collections::BTreeMap;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::node::QuorumDescription;
use super::{NodeId, TypeConfig};
use crate::controller::{ControllerError, ControllerRequest, ControllerResponse};

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    /// The sender's configured voter set.
    pub voters: BTreeMap<NodeId, String>,
    pub body: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A controller request from a node that is not the leader (KIP-590).
    Forward(ControllerRequest),
    /// A non-voter asks to follow the log.
    AddLearner {
        node_id: NodeId,
        addr: String,
    },
    DescribeQuorum,
    /// Start-up check: "do we agree on the voters?"
    Hello,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Forward(Result<ControllerResponse, ForwardError>),
    AddLearner(Result<(), ForwardError>),
    DescribeQuorum(Result<QuorumDescription, ForwardError>),
    Hello,
    /// The receiver's voter set differs from the one in the request.
    VoterMismatch {
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
    },
    /// The request could not be decoded.
    Malformed(String),
}

/// Why the receiver did not carry out a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader; the sender retries at the right one.
    #[error("node is not the controller (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error(transparent)]
    Controller(ControllerError),
    #[error("{0}")]
    Other(String),
}
