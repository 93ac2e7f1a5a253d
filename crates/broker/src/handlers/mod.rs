//! Kafka API handlers. Each module owns one API or a family of them.
//!
//! Decoding failures close the connection (Kafka does the same: a body that
//! doesn't parse leaves no way to know where the next request starts).

pub mod acl;
pub(crate) mod admin;
pub mod api_versions;
mod config_resources;
pub(crate) mod configs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
mod raft_voters;
mod replicas;
mod txn;
mod weir_compaction;

use std::sync::Arc;

use bytes::Bytes;
use weir_protocol::api::ApiKey;
use weir_protocol::codec::Decode;
use weir_protocol::header::RequestHeader;

use crate::{Broker, PendingReply, encode_frame, ready};

/// The APIs this broker answers, advertised in ApiVersions. An API with a
/// schema but no handler is left out so clients never try it.
pub const HANDLED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::DescribeLogDirs,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::OffsetDelete,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::AlterReplicaLogDirs,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::ListConfigResources,
    ApiKey::DescribeTopicPartitions,
    ApiKey::DescribeQuorum,
    ApiKey::AddRaftVoter,
    ApiKey::RemoveRaftVoter,
    ApiKey::InitProducerId,
    ApiKey::DescribeProducers,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::WriteTxnMarkers,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::WeirCompaction,
];

/// Whether this broker answers `key` (it is advertised in ApiVersions).
pub fn is_handled(key: ApiKey) -> bool {
    HANDLED_APIS.contains(&key)
}

fn decode<T: Decode>(header: &RequestHeader, mut body: Bytes) -> Option<T> {
    match T::decode(&mut body, header.api_version) {
        Ok(request) => Some(request),
        Err(e) => {
            tracing::debug!(api_key = header.api_key, version = header.api_version, error = %e,
                "undecodable request body; closing connection");
            None
        }
    }
}

/// Routes a request whose key and version are known to be supported.
pub async fn dispatch(
    broker: &Arc<Broker>,
    key: ApiKey,
    header: RequestHeader,
    body: Bytes,
) -> Option<PendingReply> {
    match key {
        ApiKey::ApiVersions => {
            let request = decode(&header, body)?;
            Some(ready(encode_frame(
                &header,
                &api_versions::handle(&header, request),
            )))
        }
        ApiKey::Metadata => {
            let request = decode(&header, body)?;
            let response = metadata::handle(broker, &header, request).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::Produce => {
            let request = decode(&header, body)?;
            produce::handle(broker, header, request)
        }
        ApiKey::Fetch => {
            let request = decode(&header, body)?;
            fetch::handle(broker, header, request)
        }
        ApiKey::ListOffsets => {
            let response = list_offsets::handle(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::OffsetForLeaderEpoch => {
            let response = list_offsets::offset_for_leader_epoch(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::CreateTopics => {
            let response = admin::create_topics(broker, &header, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DeleteTopics => {
            let response = admin::delete_topics(broker, &header, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::CreatePartitions => {
            let response = admin::create_partitions(broker, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DeleteRecords => {
            let response = admin::delete_records(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeCluster => {
            let response = admin::describe_cluster(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeLogDirs => {
            let response = admin::describe_log_dirs(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeConfigs => {
            let response = configs::describe(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::AlterConfigs => {
            let response = configs::alter(broker, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::IncrementalAlterConfigs => {
            let response = configs::incremental_alter(broker, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::FindCoordinator => {
            let response = groups::find_coordinator(broker, &header, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::JoinGroup => Some(groups::join_group(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::SyncGroup => Some(groups::sync_group(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::Heartbeat => {
            let response = groups::heartbeat(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::LeaveGroup => {
            let response = groups::leave_group(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::OffsetCommit => Some(groups::offset_commit(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::OffsetFetch => {
            let response = groups::offset_fetch(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::OffsetDelete => Some(groups::offset_delete(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::ListGroups => {
            let response = groups::list_groups(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeGroups => {
            let response = groups::describe_groups(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DeleteGroups => Some(groups::delete_groups(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::ConsumerGroupHeartbeat => {
            let response =
                groups::consumer_group_heartbeat(broker, &header, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::ConsumerGroupDescribe => {
            let response = groups::consumer_group_describe(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::AlterReplicaLogDirs => {
            let response = replicas::alter_replica_log_dirs(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::ElectLeaders => {
            let response =
                replicas::elect_leaders(broker, header.api_version, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::AlterPartitionReassignments => {
            let response = replicas::alter_partition_reassignments(
                broker,
                header.api_version,
                decode(&header, body)?,
            )
            .await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::ListPartitionReassignments => {
            let response = replicas::list_partition_reassignments(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::ListConfigResources => {
            let response =
                config_resources::handle(broker, header.api_version, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeTopicPartitions => {
            let response = describe_topic_partitions::handle(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::InitProducerId => Some(init_producer_id::handle(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::AddPartitionsToTxn => Some(txn::add_partitions_to_txn(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::AddOffsetsToTxn => Some(txn::add_offsets_to_txn(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::TxnOffsetCommit => Some(txn::txn_offset_commit(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::EndTxn => Some(txn::end_txn(broker, header.clone(), decode(&header, body)?)),
        ApiKey::WriteTxnMarkers => Some(txn::write_txn_markers(
            broker,
            header.clone(),
            decode(&header, body)?,
        )),
        ApiKey::DescribeTransactions => {
            let response = txn::describe_transactions(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::ListTransactions => {
            let response = txn::list_transactions(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::WeirCompaction => {
            let request = decode(&header, body)?;
            Some(weir_compaction::handle(broker, header, request))
        }
        ApiKey::DescribeProducers => {
            let response = describe_producers::handle(broker, decode(&header, body)?);
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::DescribeQuorum => {
            let response = describe_quorum::handle(broker, &header, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::AddRaftVoter => {
            let response = raft_voters::add(broker, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        ApiKey::RemoveRaftVoter => {
            let response = raft_voters::remove(broker, decode(&header, body)?).await;
            Some(ready(encode_frame(&header, &response)))
        }
        _ => {
            tracing::debug!(?key, "API not handled by this broker; closing connection");
            None
        }
    }
}
