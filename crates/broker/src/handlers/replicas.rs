//! Replica placement: AlterReplicaLogDirs, ElectLeaders,
//! AlterPartitionReassignments and ListPartitionReassignments.
//!
//! ElectLeaders and AlterPartitionReassignments go to the controller, which
//! decides; ListPartitionReassignments reads the image. A broker has one
//! data directory, so AlterReplicaLogDirs moves nothing.

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
    OngoingPartitionReassignment, OngoingTopicReassignment,
};

use weir_metadata::controller::{
    ControllerRequest, ControllerResponse, ReassignTopic,
    TopicPartitions as ControllerTopicPartitions,
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

/// AlterPartitionReassignments (KIP-455): decided by the controller
/// (`weir_metadata::reassignment`), which checks each partition as Kafka's
/// does and answers per partition. The answer comes once the decision is
/// committed and applied here; the moves themselves go on in the background
/// (ListPartitionReassignments shows them until they complete).
pub async fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    version: i16,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no such option and always allowed a change.
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let asked = ControllerRequest::AlterPartitionReassignments {
        topics: request
            .topics
            .iter()
            .map(|t| ReassignTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.replicas.clone()))
                    .collect(),
            })
            .collect(),
        allow_replication_factor_change: allow_rf_change,
    };
    let refuse_all = |code: ErrorCode, message: String| AlterPartitionReassignmentsResponse {
        throttle_time_ms: 0,
        allow_replication_factor_change: allow_rf_change,
        error_code: code.code(),
        error_message: Some(message),
        responses: Vec::new(),
    };
    match broker.run_on_controller(asked).await {
        Ok(ControllerResponse::Reassignments(results)) => AlterPartitionReassignmentsResponse {
            throttle_time_ms: 0,
            allow_replication_factor_change: allow_rf_change,
            error_code: ErrorCode::None.code(),
            error_message: None,
            responses: results
                .into_iter()
                .map(|t| ReassignableTopicResponse {
                    name: t.topic,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| ReassignablePartitionResponse {
                            partition_index: p.partition,
                            error_code: p.error_code,
                            error_message: p.message,
                        })
                        .collect(),
                })
                .collect(),
        },
        Ok(other) => {
            tracing::error!(
                ?other,
                "unexpected controller answer to AlterPartitionReassignments"
            );
            refuse_all(
                ErrorCode::UnknownServerError,
                "unexpected controller answer".into(),
            )
        }
        // Kafka answers a request-level failure at the top, with no partitions.
        Err(e) => refuse_all(e.code(), e.to_string()),
    }
}

/// ListPartitionReassignments, from this broker's image (Kafka's controller
/// answers from its own): the partitions being reassigned, all of them or
/// those asked for; topics and partitions that are unknown or not moving
/// are left out, as Kafka does.
pub fn list_partition_reassignments(
    broker: &Arc<Broker>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = broker.cluster().image();
    let ongoing = |topic: &weir_metadata::image::TopicImage,
                   indexes: &mut dyn Iterator<Item = i32>| {
        let partitions: Vec<OngoingPartitionReassignment> = indexes
            .filter_map(|index| {
                let state = topic.partitions.get(&index)?;
                state
                    .is_reassigning()
                    .then(|| OngoingPartitionReassignment {
                        partition_index: index,
                        replicas: state.replicas.clone(),
                        adding_replicas: state.adding_replicas.clone(),
                        removing_replicas: state.removing_replicas.clone(),
                    })
            })
            .collect();
        (!partitions.is_empty()).then(|| OngoingTopicReassignment {
            name: topic.name.clone(),
            partitions,
        })
    };
    let topics = match request.topics {
        None => image
            .topics
            .values()
            .filter_map(|t| ongoing(t, &mut t.partitions.keys().copied()))
            .collect(),
        Some(asked) => asked
            .iter()
            .filter_map(|a| {
                let t = image.topic_by_name(&a.name)?;
                ongoing(t, &mut a.partition_indexes.iter().copied())
            })
            .collect(),
    };
    ListPartitionReassignmentsResponse {
        throttle_time_ms: 0,
        error_code: ErrorCode::None.code(),
        error_message: None,
        topics,
    }
}
