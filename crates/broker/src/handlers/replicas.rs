//! Replica placement: AlterReplicaLogDirs, ElectLeaders,
//! AlterPartitionReassignments and ListPartitionReassignments.
//!
//! ElectLeaders goes to the controller, which elects. Reassignment is not
//! built yet (issue 15): those APIs answer what Kafka's controller answers
//! when nothing moves, and a broker has one data directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::alter_partition_reassignments::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use weir_protocol::messages::alter_replica_log_dirs::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult, AlterReplicaLogDirsRequest,
    AlterReplicaLogDirsResponse,
};
use weir_protocol::messages::elect_leaders::{
    ElectLeadersRequest, ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use weir_protocol::messages::list_partition_reassignments::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use weir_metadata::controller::{
    ControllerRequest, ControllerResponse, TopicPartitions as ControllerTopicPartitions,
};

use crate::Broker;

/// Kafka's ElectionType: 0 elects the preferred replica, 1 any live replica.
const ELECTION_TYPE_PREFERRED: i8 = 0;
const ELECTION_TYPE_UNCLEAN: i8 = 1;

/// Whether `path` names this broker's data directory, as Kafka compares a
/// requested log dir with the absolute paths of its configured `log.dirs`.
/// DescribeLogDirs reports the canonical path, so that form is accepted too.
fn is_our_log_dir(broker: &Broker, path: &str) -> bool {
    let data_dir = &broker.config.data_dir;
    let wanted = Path::new(path);
    std::path::absolute(data_dir).is_ok_and(|p| p == wanted)
        || std::fs::canonicalize(data_dir).is_ok_and(|p| p == wanted)
}

/// AlterReplicaLogDirs: a replica can only "move" to the directory it is
/// already in. Kafka checks the directory before the partition: a directory
/// that is not configured is LOG_DIR_NOT_FOUND; a partition this broker does
/// not host is REPLICA_NOT_AVAILABLE; a replica already in the target
/// directory needs no move and succeeds.
pub fn alter_replica_log_dirs(
    broker: &Arc<Broker>,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in request.dirs {
        let dir_ok = is_our_log_dir(broker, &dir.path);
        for topic in dir.topics {
            let hosted = broker.topic(&topic.name);
            let partitions = topic.partitions.iter().map(|&index| {
                let error = if !dir_ok {
                    ErrorCode::LogDirNotFound
                } else if hosted.as_ref().and_then(|t| t.partition(index)).is_none() {
                    ErrorCode::ReplicaNotAvailable
                } else {
                    ErrorCode::None
                };
                AlterReplicaLogDirPartitionResult {
                    partition_index: index,
                    error_code: error.code(),
                }
            });
            // Kafka answers one entry per topic, whatever the directories.
            match results.iter_mut().find(|r| r.topic_name == topic.name) {
                Some(entry) => entry.partitions.extend(partitions),
                None => {
                    let partitions = partitions.collect();
                    results.push(AlterReplicaLogDirTopicResult {
                        topic_name: topic.name,
                        partitions,
                    });
                }
            }
        }
    }
    AlterReplicaLogDirsResponse {
        throttle_time_ms: 0,
        results,
    }
}

/// ElectLeaders (KIP-460): checked here, decided by the controller, which elects the
/// preferred replica (if live and in sync) or, for an unclean election, any live replica of a
/// partition without a leader.
pub async fn elect_leaders(
    broker: &Arc<Broker>,
    version: i16,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // v0 carries no type and means a preferred election.
    let election_type = if version >= 1 {
        request.election_type
    } else {
        ELECTION_TYPE_PREFERRED
    };
    let refuse_all = |code: ErrorCode, message: String, topics: Option<Vec<_>>| {
        let results = topics
            .unwrap_or_default()
            .into_iter()
            .map(
                |t: weir_protocol::messages::elect_leaders::TopicPartitions| {
                    ReplicaElectionResult {
                        topic: t.topic,
                        partition_result: t
                            .partitions
                            .into_iter()
                            .map(|index| PartitionResult {
                                partition_id: index,
                                error_code: code.code(),
                                error_message: Some(message.clone()),
                            })
                            .collect(),
                    }
                },
            )
            .collect();
        ElectLeadersResponse {
            throttle_time_ms: 0,
            error_code: code.code(),
            replica_election_results: results,
        }
    };
    if !matches!(
        election_type,
        ELECTION_TYPE_PREFERRED | ELECTION_TYPE_UNCLEAN
    ) {
        // Kafka fails the whole request (InvalidRequestException): every
        // requested partition carries the error, and so does the top level.
        return refuse_all(
            ErrorCode::InvalidRequest,
            format!("Unknown election type {election_type}"),
            request.topic_partitions,
        );
    }
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| ControllerTopicPartitions {
                topic: t.topic.clone(),
                partitions: t.partitions.clone(),
            })
            .collect()
    });
    let asked = ControllerRequest::ElectLeaders {
        election_type,
        partitions,
    };
    match broker.run_on_controller(asked).await {
        Ok(ControllerResponse::ElectLeaders {
            error_code,
            results,
        }) => ElectLeadersResponse {
            throttle_time_ms: 0,
            error_code,
            replica_election_results: results
                .into_iter()
                .map(|t| ReplicaElectionResult {
                    topic: t.topic,
                    partition_result: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionResult {
                            partition_id: p.partition,
                            error_code: p.error_code,
                            error_message: p.message,
                        })
                        .collect(),
                })
                .collect(),
        },
        Ok(other) => {
            tracing::error!(?other, "unexpected controller answer to ElectLeaders");
            refuse_all(
                ErrorCode::UnknownServerError,
                "unexpected controller answer".into(),
                request.topic_partitions,
            )
        }
        Err(e) => refuse_all(e.code(), e.to_string(), request.topic_partitions),
    }
}

/// Checks a target replica list as Kafka's controller does for a manual
/// assignment: not empty, no broker twice, every broker registered (here:
/// only this node is).
fn check_target_replicas(node_id: i32, replicas: &[i32]) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("The manual partition assignment includes an empty replica list.".into());
    }
    let mut seen = BTreeSet::new();
    for &replica in replicas {
        if !seen.insert(replica) {
            return Err(format!(
                "The manual partition assignment includes the broker {replica} more than once."
            ));
        }
        if replica != node_id {
            return Err(format!(
                "The manual partition assignment includes broker {replica}, but no such broker is registered."
            ));
        }
    }
    Ok(())
}

/// AlterPartitionReassignments for one broker. A partition can only be
/// "reassigned" to the replica it already has, which completes at once
/// (Kafka's no-op reassignment); cancelling finds nothing in progress.
pub fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    version: i16,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node_id = broker.config.node_id;
    // v0 has no such option and always allowed a change.
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let responses = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let index = p.partition_index;
                    let outcome = match (&topic, p.replicas) {
                        (None, _) => Err((
                            ErrorCode::UnknownTopicOrPartition,
                            format!("Unable to find a topic named {}.", t.name),
                        )),
                        (Some(topic), _) if topic.partition(index).is_none() => Err((
                            ErrorCode::UnknownTopicOrPartition,
                            format!("Unable to find partition {}:{index}.", t.name),
                        )),
                        (Some(_), None) => Err((
                            ErrorCode::NoReassignmentInProgress,
                            "No partition reassignment is in progress.".into(),
                        )),
                        (Some(_), Some(replicas)) => {
                            check_target_replicas(node_id, &replicas)
                                .map_err(|m| (ErrorCode::InvalidReplicaAssignment, m))
                                .and_then(|()| {
                                    // Every partition has one replica today.
                                    if !allow_rf_change && replicas.len() != 1 {
                                        Err((
                                            ErrorCode::InvalidReplicationFactor,
                                            format!(
                                                "The replication factor would change from 1 to {} but allowReplicationFactorChange is false.",
                                                replicas.len()
                                            ),
                                        ))
                                    } else {
                                        Ok(())
                                    }
                                })
                        }
                    };
                    let (error, message) = match outcome {
                        Ok(()) => (ErrorCode::None, None),
                        Err((error, message)) => (error, Some(message)),
                    };
                    ReassignablePartitionResponse {
                        partition_index: index,
                        error_code: error.code(),
                        error_message: message,
                    }
                })
                .collect();
            ReassignableTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    AlterPartitionReassignmentsResponse {
        throttle_time_ms: 0,
        allow_replication_factor_change: allow_rf_change,
        error_code: ErrorCode::None.code(),
        error_message: None,
        responses,
    }
}

/// ListPartitionReassignments: a reassignment on one node completes the
/// moment it is accepted, so none is ever ongoing. Kafka lists only the
/// partitions being reassigned, so the answer is empty whatever was asked.
pub fn list_partition_reassignments(
    _request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse {
        throttle_time_ms: 0,
        error_code: ErrorCode::None.code(),
        error_message: None,
        topics: Vec::new(),
    }
}
