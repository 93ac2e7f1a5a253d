//! The metadata quorum from the operator's side: DescribeQuorum (KIP-595,
//! KIP-836, KIP-853), as `weir cluster info` and `weir cluster health` use it,
//! and the voter changes AddRaftVoter / RemoveRaftVoter (KIP-853), as
//! `weir cluster add-voter` / `remove-voter` use them.

use weir_protocol::messages::{add_raft_voter, describe_quorum, remove_raft_voter};

use crate::client::Client;
use crate::error::ClientError;

/// KRaft's metadata log; DescribeQuorum answers for its partition 0 only.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// One voter or observer of the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    pub node_id: i32,
    /// The last metadata log offset the leader knows it has; -1 if unknown.
    pub log_end_offset: i64,
    /// Leader wall clock time of its last fetch, ms since the epoch; -1 if unknown.
    pub last_fetch_timestamp_ms: i64,
    /// Leader wall clock time it was last caught up, ms since the epoch; -1 if unknown.
    pub last_caught_up_timestamp_ms: i64,
}

impl QuorumReplica {
    /// How far its log end is behind the high watermark (0 when ahead or
    /// equal: the leader's own log runs ahead of the HW); `None` when its log
    /// end is unknown.
    pub fn lag(&self, high_watermark: i64) -> Option<i64> {
        (self.log_end_offset >= 0)
            .then(|| high_watermark.saturating_sub(self.log_end_offset).max(0))
    }
}

/// A listener of a quorum voter (v2+ responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumListener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What DescribeQuorum reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
    /// Voters' listeners by node id; empty when the broker answered below v2.
    pub nodes: Vec<(i32, Vec<QuorumListener>)>,
}

impl Client {
    /// Describes the metadata quorum through any broker (which asks the
    /// quorum's leader). A quorum with no leader is a retriable
    /// NOT_LEADER_OR_FOLLOWER error.
    pub async fn describe_quorum(&mut self) -> Result<QuorumDescription, ClientError> {
        let request = describe_quorum::DescribeQuorumRequest {
            topics: vec![describe_quorum::DescribeQuorumRequestTopic {
                topic_name: METADATA_TOPIC.to_owned(),
                partitions: vec![describe_quorum::DescribeQuorumRequestPartition {
                    partition_index: 0,
                }],
            }],
        };
        let response = self.send_any(&request).await?;
        ClientError::check(
            response.error_code,
            response.error_message.as_deref(),
            || "describe quorum".to_owned(),
        )?;
        let Some(partition) = response
            .topics
            .into_iter()
            .filter(|t| t.topic_name == METADATA_TOPIC)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == 0)
        else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap().to_owned(),
                detail: format!("DescribeQuorum answer has no {METADATA_TOPIC}-0"),
            });
        };
        ClientError::check(
            partition.error_code,
            partition.error_message.as_deref(),
            || "describe quorum".to_owned(),
        )?;
        let replica = |r: describe_quorum::ReplicaState| QuorumReplica {
            node_id: r.replica_id,
            log_end_offset: r.log_end_offset,
            last_fetch_timestamp_ms: r.last_fetch_timestamp,
            last_caught_up_timestamp_ms: r.last_caught_up_timestamp,
        };
        Ok(QuorumDescription {
            leader_id: partition.leader_id,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: partition.current_voters.into_iter().map(replica).collect(),
            observers: partition.observers.into_iter().map(replica).collect(),
            nodes: response
                .nodes
                .into_iter()
                .map(|n| {
                    let listeners = n
                        .listeners
                        .into_iter()
                        .map(|l| QuorumListener {
                            name: l.name,
                            host: l.host,
                            port: l.port,
                        })
                        .collect();
                    (n.node_id, listeners)
                })
                .collect(),
        })
    }
}

impl Client {
    /// Makes node `voter_id`, a learner of the metadata quorum, a voter
    /// (AddRaftVoter through any broker, which asks the quorum's leader).
    /// Not retried: a change whose answer was lost may have been made.
    pub async fn add_raft_voter(&mut self, voter_id: i32) -> Result<(), ClientError> {
        let request = add_raft_voter::AddRaftVoterRequest {
            cluster_id: None,
            timeout_ms: 30_000,
            voter_id,
            voter_directory_id: [0; 16],
            listeners: Vec::new(),
            ack_when_committed: true,
        };
        let response = self.send_any(&request).await?;
        ClientError::check(
            response.error_code,
            response.error_message.as_deref(),
            || format!("add voter {voter_id}"),
        )
    }

    /// Makes voter `voter_id` a learner of the metadata quorum (RemoveRaftVoter).
    pub async fn remove_raft_voter(&mut self, voter_id: i32) -> Result<(), ClientError> {
        let request = remove_raft_voter::RemoveRaftVoterRequest {
            cluster_id: None,
            voter_id,
            voter_directory_id: [0; 16],
        };
        let response = self.send_any(&request).await?;
        ClientError::check(
            response.error_code,
            response.error_message.as_deref(),
            || format!("remove voter {voter_id}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_high_watermark_minus_log_end_and_never_negative() {
        let r = |log_end_offset| QuorumReplica {
            node_id: 1,
            log_end_offset,
            last_fetch_timestamp_ms: -1,
            last_caught_up_timestamp_ms: -1,
        };
        assert_eq!(r(7).lag(10), Some(3));
        assert_eq!(r(12).lag(10), Some(0));
        assert_eq!(r(-1).lag(10), None);
    }
}
