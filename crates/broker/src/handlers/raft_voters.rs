//! AddRaftVoter and RemoveRaftVoter (KIP-853): change the metadata quorum's
//! voters online. Any broker answers; the change is made by the quorum leader
//! (forwarded over the controller transport, as Kafka forwards these to the
//! active controller).
//!
//! Weir's quorum knows a node by its id and the controller address it joined
//! with as a learner, so AddRaftVoter's `listeners` and the directory ids are
//! not used: the node to add must already follow the log as a learner (start
//! it with `--controller-voters` naming the quorum). The refusals and their
//! codes are KRaft's (see `weir_metadata::quorum::rpc::VoterChangeError`).

use std::sync::Arc;
use std::time::Duration;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::add_raft_voter::{AddRaftVoterRequest, AddRaftVoterResponse};
use weir_protocol::messages::remove_raft_voter::{RemoveRaftVoterRequest, RemoveRaftVoterResponse};

use crate::Broker;
use crate::cluster::VoterChangeRefused;

/// Longest wait for the quorum's answer; a change takes two commits.
const CHANGE_WAIT: Duration = Duration::from_secs(15);

pub async fn add(broker: &Arc<Broker>, request: AddRaftVoterRequest) -> AddRaftVoterResponse {
    let (error_code, error_message) = match u64::try_from(request.voter_id) {
        Err(_) => refused_id(request.voter_id),
        Ok(id) => {
            outcome(tokio::time::timeout(CHANGE_WAIT, broker.cluster().quorum.add_voter(id)).await)
        }
    };
    AddRaftVoterResponse {
        throttle_time_ms: 0,
        error_code,
        error_message,
    }
}

pub async fn remove(
    broker: &Arc<Broker>,
    request: RemoveRaftVoterRequest,
) -> RemoveRaftVoterResponse {
    let (error_code, error_message) = match u64::try_from(request.voter_id) {
        Err(_) => refused_id(request.voter_id),
        Ok(id) => outcome(
            tokio::time::timeout(CHANGE_WAIT, broker.cluster().quorum.remove_voter(id)).await,
        ),
    };
    RemoveRaftVoterResponse {
        throttle_time_ms: 0,
        error_code,
        error_message,
    }
}

fn refused_id(voter_id: i32) -> (i16, Option<String>) {
    (
        ErrorCode::InvalidRequest.code(),
        Some(format!("voter id {voter_id} is not a node id")),
    )
}

fn outcome(
    result: Result<Result<(), VoterChangeRefused>, tokio::time::error::Elapsed>,
) -> (i16, Option<String>) {
    match result {
        Ok(Ok(())) => (ErrorCode::None.code(), None),
        Ok(Err(refused)) => (refused.error_code, Some(refused.message)),
        Err(_) => (
            ErrorCode::RequestTimedOut.code(),
            Some(format!(
                "the quorum did not answer within {} ms; the change may still complete",
                CHANGE_WAIT.as_millis()
            )),
        ),
    }
}
