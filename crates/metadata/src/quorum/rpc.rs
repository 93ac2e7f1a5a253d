//! The messages nodes exchange over the controller listener, as serde_json.
//!
//! A voter that has not bootstrapped yet (configured as a voter, empty log)
//! stamps every request with its configured `--controller-voters`, so that a
//! node about to found a quorum with a different voter set is found on its
//! first contact and refused. Once a node's log holds a membership, the
//! committed membership is the voter set and the configured list is only a
//! way to find the quorum: such nodes send no set and are not compared.

use std::collections::BTreeMap;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::node::QuorumDescription;
use super::{NodeId, TypeConfig};
use crate::controller::{ControllerError, ControllerRequest, ControllerResponse, codes};

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    /// The sender's configured voter set while it is a voter still to
    /// bootstrap (its log holds no membership); `None` afterwards and for
    /// learners.
    pub bootstrap_voters: Option<BTreeMap<NodeId, String>>,
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
    /// KIP-853's AddRaftVoter, at the leader: turn a learner into a voter.
    AddVoter {
        node_id: NodeId,
    },
    /// KIP-853's RemoveRaftVoter, at the leader: the voter stays a learner.
    RemoveVoter {
        node_id: NodeId,
    },
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
    ChangeVoters(Result<(), ForwardError>),
    Hello,
    /// The receiver's voter set (its committed membership, or its own
    /// bootstrap set) differs from the bootstrap set in the request.
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
    #[error(transparent)]
    VoterChange(VoterChangeError),
    #[error("{0}")]
    Other(String),
}

/// Why a voter change (AddRaftVoter, RemoveRaftVoter) was refused. Each maps
/// to the Kafka error code KRaft answers with (see `error_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VoterChangeError {
    /// The node is already a voter (DUPLICATE_VOTER).
    #[error("node {node_id} is already a voter of {voters:?}")]
    DuplicateVoter {
        node_id: NodeId,
        voters: Vec<NodeId>,
    },
    /// The node does not follow the log yet, so it cannot vote (KRaft answers
    /// REQUEST_TIMED_OUT: "new voter is not ready").
    #[error(
        "node {node_id} is not a learner of the metadata quorum (learners: {learners:?}); start it with --controller-voters naming the quorum and --controller-listen, wait for it to join, then add it"
    )]
    NotALearner {
        node_id: NodeId,
        learners: Vec<NodeId>,
    },
    /// The learner is not caught up with the leader's log, or has not been
    /// heard from lately (REQUEST_TIMED_OUT, as KRaft: a lagging voter would
    /// hold back every commit while it catches up, a dead one forever).
    #[error("node {node_id} is not caught up: {reason}")]
    NotCaughtUp { node_id: NodeId, reason: String },
    /// The node is not a voter, or it is the last one (VOTER_NOT_FOUND, as
    /// KRaft's VoterSet refuses to remove its only voter).
    #[error("cannot remove node {node_id} from the voters {voters:?}: {reason}")]
    VoterNotFound {
        node_id: NodeId,
        voters: Vec<NodeId>,
        reason: String,
    },
    /// Another voter change has not committed yet (REQUEST_TIMED_OUT, as KRaft).
    #[error("a previous voter change has not committed yet: {0}")]
    InProgress(String),
    /// The change did not commit in time (REQUEST_TIMED_OUT); it may still.
    #[error("the voter change did not commit within {timeout_ms} ms; it may still complete")]
    Timeout { timeout_ms: u64 },
}

impl VoterChangeError {
    /// The Kafka error code for the wire (AddRaftVoter, RemoveRaftVoter).
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            VoterChangeError::DuplicateVoter { .. } => codes::DUPLICATE_VOTER,
            VoterChangeError::VoterNotFound { .. } => codes::VOTER_NOT_FOUND,
            VoterChangeError::NotALearner { .. }
            | VoterChangeError::NotCaughtUp { .. }
            | VoterChangeError::InProgress(_)
            | VoterChangeError::Timeout { .. } => codes::REQUEST_TIMED_OUT,
        }
    }
}
