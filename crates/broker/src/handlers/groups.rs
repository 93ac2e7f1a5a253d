//! Group coordinator APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, ListGroups,
//! DescribeGroups, DeleteGroups, and the consumer protocol's (KIP-848)
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe.
//!
//! These only translate between wire types and [`crate::groups`]; the rules
//! live in the coordinator's state machine. JoinGroup and SyncGroup replies
//! are futures that resolve when the group's round completes; OffsetCommit,
//! OffsetDelete and DeleteGroups resolve once their records are fsynced.

use std::sync::Arc;
use std::time::Duration;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::consumer_group_describe::{
    self as cgd, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
};
use weir_protocol::messages::consumer_group_heartbeat::{
    self as cgh, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use weir_protocol::messages::delete_groups::{
    DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse,
};
use weir_protocol::messages::describe_groups::{
    DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use weir_protocol::messages::find_coordinator::{
    Coordinator, FindCoordinatorRequest, FindCoordinatorResponse,
};
use weir_protocol::messages::heartbeat::{HeartbeatRequest, HeartbeatResponse};
use weir_protocol::messages::join_group::{
    JoinGroupRequest, JoinGroupResponse, JoinGroupResponseMember,
};
use weir_protocol::messages::leave_group::{LeaveGroupRequest, LeaveGroupResponse, MemberResponse};
use weir_protocol::messages::list_groups::{ListGroupsRequest, ListGroupsResponse, ListedGroup};
use weir_protocol::messages::offset_commit::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
};
use weir_protocol::messages::offset_delete::{
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
};
use weir_protocol::messages::offset_fetch::{
    OffsetFetchRequest, OffsetFetchResponse, OffsetFetchResponseGroup,
    OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use weir_protocol::messages::sync_group::{SyncGroupRequest, SyncGroupResponse};

use super::acl;
use crate::groups::consumer::{self, Assignment};
use crate::groups::group::{JoinReply, JoinRequest, OffsetEntry, Reply, SyncReply, SyncRequest};
use crate::groups::{Durable, GroupState};
use crate::{Broker, PendingReply, encode_frame, now_ms, ready};

/// How long an acknowledgement may wait for fsync before answering with a timeout.
const DURABILITY_WAIT_MS: u64 = 30_000;
/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
/// KIP-98 transaction coordinators.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Why a transactional client is refused when transactions are off
/// (FindCoordinator's error message).
const TRANSACTIONS_DISABLED: &str =
    "transactions are disabled on this broker (transactions_enabled=false)";

/// Waits for a group record to be durable; the error to report if it isn't.
pub(super) async fn wait_durable(durable: Option<Durable>) -> ErrorCode {
    let Some(durable) = durable else {
        return ErrorCode::None;
    };
    match tokio::time::timeout(Duration::from_millis(DURABILITY_WAIT_MS), durable).await {
        Ok(Ok(Ok(()))) => ErrorCode::None,
        Ok(Ok(Err(_))) | Ok(Err(_)) => ErrorCode::KafkaStorageError,
        Err(_) => ErrorCode::RequestTimedOut,
    }
}

/// Why this broker won't serve a request about `group_id`: an empty id is
/// INVALID_GROUP_ID; a group whose `__consumer_offsets` partition another
/// broker leads is NOT_COORDINATOR (the client looks the coordinator up again).
pub(super) fn group_refused(broker: &Broker, group_id: &str) -> Option<ErrorCode> {
    if invalid_group_id(group_id) {
        return Some(ErrorCode::InvalidGroupId);
    }
    (!broker.coordinates_group(group_id)).then_some(ErrorCode::NotCoordinator)
}

pub(super) fn invalid_group_id(group_id: &str) -> bool {
    group_id.is_empty()
}

pub async fn find_coordinator(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // The coordinator of a key is the leader of its partition of the
    // internal topic, which is created (through the controller) on first use.
    let internal = match request.key_type {
        KEY_TYPE_TRANSACTION if broker.txn.enabled => Some((
            crate::txn::TRANSACTION_STATE_TOPIC,
            broker.config.transaction_state_partitions,
        )),
        KEY_TYPE_GROUP => Some((
            crate::groups::OFFSETS_TOPIC,
            broker.config.offsets_topic_partitions,
        )),
        _ => None,
    };
    if let Some((topic, partitions)) = internal {
        broker.create_internal_topic(topic, partitions).await;
    }
    type Found = Result<(i32, String, i32), (ErrorCode, Option<String>)>;
    let answer = |key: &str| -> Found {
        if request.key_type == KEY_TYPE_TRANSACTION {
            // With transactions off, COORDINATOR_NOT_AVAILABLE would be retried
            // forever (aiokafka: ten lookups a second).
            // TRANSACTIONAL_ID_AUTHORIZATION_FAILED is the one error every
            // client treats as fatal here (librdkafka retries any other, even
            // UNSUPPORTED_VERSION); the message says what is really missing.
            if !broker.txn.enabled {
                return Err((
                    ErrorCode::TransactionalIdAuthorizationFailed,
                    Some(TRANSACTIONS_DISABLED.into()),
                ));
            }
            if key.is_empty() {
                return Err((
                    ErrorCode::InvalidRequest,
                    Some("empty transactional id".into()),
                ));
            }
        } else if request.key_type != KEY_TYPE_GROUP {
            return Err((
                ErrorCode::InvalidRequest,
                Some(format!("unknown coordinator key type {}", request.key_type)),
            ));
        } else if key.is_empty() {
            return Err((ErrorCode::InvalidRequest, Some("empty group id".into())));
        }
        let (topic, _) = internal.expect("a known key type has an internal topic");
        let unavailable =
            |what: &str| Err((ErrorCode::CoordinatorNotAvailable, Some(what.to_string())));
        let count = match broker.cluster().image().topic_by_name(topic) {
            Some(t) => i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
            None => return unavailable(&format!("{topic} is not created yet")),
        };
        let index = crate::groups::partition_for(key, count);
        match broker.partition_leader(topic, index) {
            Some((node, host, port)) => Ok((node, host, i32::from(port))),
            None => unavailable(&format!("{topic}-{index} has no live leader")),
        }
    };
    if header.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| match answer(key) {
                Ok((node_id, host, port)) => Coordinator {
                    key: key.clone(),
                    node_id,
                    host,
                    port,
                    error_code: ErrorCode::None.code(),
                    error_message: None,
                },
                Err((code, message)) => Coordinator {
                    key: key.clone(),
                    node_id: -1,
                    host: String::new(),
                    port: -1,
                    error_code: code.code(),
                    error_message: message,
                },
            })
            .collect();
        return FindCoordinatorResponse {
            coordinators,
            ..Default::default()
        };
    }
    match answer(&request.key) {
        Ok((node_id, host, port)) => FindCoordinatorResponse {
            node_id,
            host,
            port,
            ..Default::default()
        },
        Err((code, message)) => FindCoordinatorResponse {
            error_code: code.code(),
            error_message: message,
            node_id: -1,
            host: String::new(),
            port: -1,
            ..Default::default()
        },
    }
}

fn join_response(version: i16, reply: JoinReply) -> JoinGroupResponse {
    // Before v7 the protocol name can't be null on the wire.
    let protocol_name = match reply.protocol_name {
        None if version < 7 => Some(String::new()),
        other => other,
    };
    JoinGroupResponse {
        error_code: reply.error.code(),
        generation_id: reply.generation,
        protocol_type: reply.protocol_type,
        protocol_name,
        leader: reply.leader,
        skip_assignment: reply.skip_assignment,
        member_id: reply.member_id,
        members: reply
            .members
            .into_iter()
            .map(|m| JoinGroupResponseMember {
                member_id: m.member_id,
                group_instance_id: m.instance_id,
                metadata: m.metadata,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn join_group(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: JoinGroupRequest,
) -> PendingReply {
    let version = header.api_version;
    if let Some(refused) = group_refused(broker, &request.group_id) {
        let reply = JoinReply::error(refused, &request.member_id);
        return ready(encode_frame(&header, &join_response(version, reply)));
    }
    let rebalance_timeout_ms = if request.rebalance_timeout_ms < 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let req = JoinRequest {
        member_id: request.member_id.clone(),
        instance_id: request.group_instance_id,
        protocol_type: request.protocol_type,
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        client_id: header.client_id.clone().unwrap_or_default(),
        // The connection's peer address isn't passed to handlers.
        client_host: String::from("unknown"),
        require_known_member_id: version >= 4,
        fresh_member_id: String::new(),
    };
    let rx = broker.groups.join(broker, &request.group_id, req);
    let member_id = request.member_id;
    Box::pin(async move {
        let reply = match rx.await {
            Ok(Reply::Join(reply)) => reply,
            // The round was abandoned (shutdown, or a newer join from the same member).
            _ => JoinReply::error(ErrorCode::NotCoordinator, &member_id),
        };
        encode_frame(&header, &join_response(version, reply))
    })
}

fn sync_response(reply: SyncReply) -> SyncGroupResponse {
    SyncGroupResponse {
        error_code: reply.error.code(),
        protocol_type: reply.protocol_type,
        protocol_name: reply.protocol_name,
        assignment: reply.assignment,
        ..Default::default()
    }
}

pub fn sync_group(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: SyncGroupRequest,
) -> PendingReply {
    if let Some(refused) = group_refused(broker, &request.group_id) {
        return ready(encode_frame(
            &header,
            &sync_response(SyncReply::error(refused)),
        ));
    }
    let req = SyncRequest {
        member_id: request.member_id,
        instance_id: request.group_instance_id,
        generation: request.generation_id,
        protocol_type: request.protocol_type,
        protocol_name: request.protocol_name,
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id, a.assignment))
            .collect(),
    };
    let rx = broker.groups.sync(broker, &request.group_id, req);
    Box::pin(async move {
        let reply = match rx.await {
            Ok(Reply::Sync(reply)) => reply,
            _ => SyncReply::error(ErrorCode::NotCoordinator),
        };
        encode_frame(&header, &sync_response(reply))
    })
}

pub fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let code = if let Some(refused) = group_refused(broker, &request.group_id) {
        refused
    } else {
        broker.groups.heartbeat(
            broker,
            &request.group_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        )
    };
    HeartbeatResponse {
        error_code: code.code(),
        ..Default::default()
    }
}

pub fn leave_group(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if let Some(refused) = group_refused(broker, &request.group_id) {
        return LeaveGroupResponse {
            error_code: refused.code(),
            ..Default::default()
        };
    }
    if header.api_version < 3 {
        let codes = broker
            .groups
            .leave(broker, &request.group_id, &[(request.member_id, None)]);
        let code = codes.first().copied().unwrap_or(ErrorCode::UnknownMemberId);
        return LeaveGroupResponse {
            error_code: code.code(),
            ..Default::default()
        };
    }
    let wanted: Vec<(String, Option<String>)> = request
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
        .collect();
    let codes = broker.groups.leave(broker, &request.group_id, &wanted);
    let members = request
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| MemberResponse {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            error_code: code.code(),
        })
        .collect();
    LeaveGroupResponse {
        error_code: ErrorCode::None.code(),
        members,
        ..Default::default()
    }
}

pub fn offset_commit(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: OffsetCommitRequest,
) -> PendingReply {
    let now = now_ms();
    let metadata_max = broker.groups.offset_metadata_bytes_max;
    // Per-partition checks first; only partitions that pass are committed.
    let mut codes: Vec<(String, Vec<(i32, ErrorCode)>)> = Vec::with_capacity(request.topics.len());
    let mut accepted = Vec::new();
    for topic in &request.topics {
        let known = broker.topic(&topic.name);
        let mut list = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let code = if known
                .as_ref()
                .and_then(|t| t.partition(p.partition_index))
                .is_none()
            {
                ErrorCode::UnknownTopicOrPartition
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > metadata_max)
            {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                accepted.push((
                    topic.name.clone(),
                    p.partition_index,
                    OffsetEntry {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.clone().unwrap_or_default(),
                        commit_ts_ms: now,
                    },
                ));
                ErrorCode::None
            };
            list.push((p.partition_index, code));
        }
        codes.push((topic.name.clone(), list));
    }
    let outcome = if let Some(refused) = group_refused(broker, &request.group_id) {
        Err(refused)
    } else {
        broker.groups.commit(
            broker,
            &request.group_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id_or_member_epoch,
            header.api_version,
            accepted,
        )
    };
    Box::pin(async move {
        let group_code = match outcome {
            Ok(durable) => wait_durable(durable).await,
            Err(code) => code,
        };
        let topics = codes
            .into_iter()
            .map(|(name, list)| OffsetCommitResponseTopic {
                name,
                partitions: list
                    .into_iter()
                    .map(|(partition_index, code)| OffsetCommitResponsePartition {
                        partition_index,
                        error_code: if code == ErrorCode::None {
                            group_code.code()
                        } else {
                            code.code()
                        },
                    })
                    .collect(),
            })
            .collect();
        let response = OffsetCommitResponse {
            topics,
            ..Default::default()
        };
        encode_frame(&header, &response)
    })
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let fetch = |group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>| {
        broker.groups.fetch_offsets(group_id, topics.as_deref())
    };
    // KIP-447: a consumer asking for stable offsets is told to retry while a
    // transaction holds an uncommitted offset for the partition.
    let require_stable = request.require_stable;
    let unstable = |group_id: &str, topic: &str, partition: i32| {
        require_stable
            && broker
                .groups
                .has_pending_txn_offset(group_id, topic, partition)
    };
    let leader_epoch = |e: &Option<OffsetEntry>| e.as_ref().map_or(-1, |e| e.leader_epoch);
    if header.api_version < 8 {
        if !broker.coordinates_group(&request.group_id) {
            return OffsetFetchResponse {
                error_code: ErrorCode::NotCoordinator.code(),
                ..Default::default()
            };
        }
        let wanted = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect::<Vec<_>>()
        });
        let group_id = request.group_id.clone();
        let topics = fetch(&request.group_id, wanted)
            .into_iter()
            .map(|(name, parts)| OffsetFetchResponseTopic {
                partitions: parts
                    .into_iter()
                    .map(|(partition_index, entry)| {
                        if unstable(&group_id, &name, partition_index) {
                            return OffsetFetchResponsePartition {
                                partition_index,
                                committed_offset: -1,
                                committed_leader_epoch: -1,
                                metadata: Some(String::new()),
                                error_code: ErrorCode::UnstableOffsetCommit.code(),
                            };
                        }
                        OffsetFetchResponsePartition {
                            partition_index,
                            committed_offset: entry.as_ref().map_or(-1, |e| e.offset),
                            committed_leader_epoch: leader_epoch(&entry),
                            metadata: Some(entry.map(|e| e.metadata).unwrap_or_default()),
                            error_code: ErrorCode::None.code(),
                        }
                    })
                    .collect(),
                name,
            })
            .collect();
        return OffsetFetchResponse {
            topics,
            ..Default::default()
        };
    }
    let groups = request
        .groups
        .into_iter()
        .map(|g| {
            if !broker.coordinates_group(&g.group_id) {
                return OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    topics: Vec::new(),
                    error_code: ErrorCode::NotCoordinator.code(),
                };
            }
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let topics = fetch(&g.group_id, wanted)
                .into_iter()
                .map(|(name, parts)| OffsetFetchResponseTopics {
                    partitions: parts
                        .into_iter()
                        .map(|(partition_index, entry)| {
                            if unstable(&g.group_id, &name, partition_index) {
                                return OffsetFetchResponsePartitions {
                                    partition_index,
                                    committed_offset: -1,
                                    committed_leader_epoch: -1,
                                    metadata: Some(String::new()),
                                    error_code: ErrorCode::UnstableOffsetCommit.code(),
                                };
                            }
                            OffsetFetchResponsePartitions {
                                partition_index,
                                committed_offset: entry.as_ref().map_or(-1, |e| e.offset),
                                committed_leader_epoch: leader_epoch(&entry),
                                metadata: Some(entry.map(|e| e.metadata).unwrap_or_default()),
                                error_code: ErrorCode::None.code(),
                            }
                        })
                        .collect(),
                    name,
                })
                .collect();
            OffsetFetchResponseGroup {
                group_id: g.group_id,
                topics,
                error_code: ErrorCode::None.code(),
            }
        })
        .collect();
    OffsetFetchResponse {
        groups,
        ..Default::default()
    }
}

pub fn offset_delete(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: OffsetDeleteRequest,
) -> PendingReply {
    let wanted: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let outcome = if let Some(refused) = group_refused(broker, &request.group_id) {
        Err(refused)
    } else {
        broker
            .groups
            .delete_offsets(broker, &request.group_id, &wanted)
    };
    Box::pin(async move {
        let response = match outcome {
            Err(code) => OffsetDeleteResponse {
                error_code: code.code(),
                ..Default::default()
            },
            Ok((results, durable)) => {
                let stored = wait_durable(durable).await;
                OffsetDeleteResponse {
                    error_code: stored.code(),
                    topics: results
                        .into_iter()
                        .map(|(name, parts)| OffsetDeleteResponseTopic {
                            name,
                            partitions: parts
                                .into_iter()
                                .map(|(partition_index, code)| OffsetDeleteResponsePartition {
                                    partition_index,
                                    error_code: code.code(),
                                })
                                .collect(),
                        })
                        .collect(),
                    ..Default::default()
                }
            }
        };
        encode_frame(&header, &response)
    })
}

pub fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest) -> ListGroupsResponse {
    let state_ok = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state))
    };
    let type_ok = |group_type: &str| {
        request.types_filter.is_empty()
            || request
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(group_type))
    };
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| state_ok(g.state_name) && type_ok(g.group_type))
        .map(|g| ListedGroup {
            group_id: g.group_id,
            protocol_type: g.protocol_type,
            group_state: g.state_name.to_string(),
            group_type: g.group_type.to_string(),
        })
        .collect();
    ListGroupsResponse {
        error_code: ErrorCode::None.code(),
        groups,
        ..Default::default()
    }
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let authorized_operations =
        acl::authorized_operations(request.include_authorized_operations, acl::GROUP_OPERATIONS);
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| match broker.groups.describe(&group_id) {
            _ if !broker.coordinates_group(&group_id) => DescribedGroup {
                error_code: ErrorCode::NotCoordinator.code(),
                group_id,
                ..Default::default()
            },
            Some(d) => DescribedGroup {
                error_code: ErrorCode::None.code(),
                group_id,
                group_state: d.state_name.to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol_name,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.metadata,
                        member_assignment: m.assignment,
                    })
                    .collect(),
                authorized_operations,
                ..Default::default()
            },
            None => {
                // v6 (KIP-1043) reports unknown groups as errors; older versions as Dead.
                let v6 = header.api_version >= 6;
                DescribedGroup {
                    error_code: if v6 {
                        ErrorCode::GroupIdNotFound.code()
                    } else {
                        ErrorCode::None.code()
                    },
                    error_message: v6.then(|| format!("group {group_id} not found")),
                    // Kafka reports them for every group answered without an error.
                    authorized_operations: if v6 { i32::MIN } else { authorized_operations },
                    group_id,
                    group_state: GroupState::Dead.name().to_string(),
                    ..Default::default()
                }
            }
        })
        .collect();
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub fn delete_groups(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: DeleteGroupsRequest,
) -> PendingReply {
    let outcomes: Vec<(String, Result<Option<Durable>, ErrorCode>)> = request
        .groups_names
        .into_iter()
        .map(|g| {
            let outcome = if let Some(refused) = group_refused(broker, &g) {
                Err(refused)
            } else {
                broker.groups.delete_group(broker, &g)
            };
            (g, outcome)
        })
        .collect();
    Box::pin(async move {
        let mut results = Vec::with_capacity(outcomes.len());
        for (group_id, outcome) in outcomes {
            let code = match outcome {
                Ok(durable) => wait_durable(durable).await,
                Err(code) => code,
            };
            results.push(DeletableGroupResult {
                group_id,
                error_code: code.code(),
            });
        }
        encode_frame(
            &header,
            &DeleteGroupsResponse {
                results,
                ..Default::default()
            },
        )
    })
}

/// ConsumerGroupHeartbeat: topic ids on the wire, names inside the coordinator.
pub fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let fail = |code: ErrorCode, message: &str| ConsumerGroupHeartbeatResponse {
        error_code: code.code(),
        error_message: Some(message.to_string()),
        ..Default::default()
    };
    if invalid_group_id(&request.group_id) {
        return fail(ErrorCode::InvalidRequest, "GroupId can't be empty.");
    }
    if !broker.coordinates_group(&request.group_id) {
        return fail(
            ErrorCode::NotCoordinator,
            "this broker is not the group's coordinator",
        );
    }
    let owned = request.topic_partitions.map(|list| {
        let registry = broker.registry();
        let mut owned = Assignment::new();
        for tp in list {
            // Partitions of topics deleted meanwhile are simply no longer owned.
            if let Some(topic) = registry.by_id(&tp.topic_id) {
                owned
                    .entry(topic.name.clone())
                    .or_default()
                    .extend(tp.partitions);
            }
        }
        owned
    });
    let req = consumer::HeartbeatRequest {
        member_id: request.member_id,
        member_epoch: request.member_epoch,
        instance_id: request.instance_id,
        rack_id: request.rack_id,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request.subscribed_topic_names,
        subscribed_topic_regex: request.subscribed_topic_regex,
        server_assignor: request.server_assignor,
        owned,
        client_id: header.client_id.clone().unwrap_or_default(),
        // The connection's peer address isn't passed to handlers.
        client_host: String::from("unknown"),
        client_generates_member_id: header.api_version >= 1,
        fresh_member_id: String::new(),
    };
    let reply = broker
        .groups
        .consumer_heartbeat(broker, &request.group_id, req);
    let assignment = reply.assignment.map(|a| cgh::Assignment {
        topic_partitions: topic_partitions(broker, &a)
            .into_iter()
            .map(|(topic_id, _, partitions)| cgh::TopicPartitions {
                topic_id,
                partitions,
            })
            .collect(),
    });
    ConsumerGroupHeartbeatResponse {
        error_code: reply.error.code(),
        error_message: reply.error_message,
        member_id: reply.member_id,
        member_epoch: reply.member_epoch,
        heartbeat_interval_ms: reply.heartbeat_interval_ms,
        assignment,
        ..Default::default()
    }
}

/// (topic id, name, partitions) for the topics of `assignment` that exist.
fn topic_partitions(broker: &Broker, assignment: &Assignment) -> Vec<([u8; 16], String, Vec<i32>)> {
    assignment
        .iter()
        .filter_map(|(name, parts)| {
            let topic = broker.topic(name)?;
            Some((topic.id, name.clone(), parts.iter().copied().collect()))
        })
        .collect()
}

pub fn consumer_group_describe(
    broker: &Arc<Broker>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let authorized_operations =
        acl::authorized_operations(request.include_authorized_operations, acl::GROUP_OPERATIONS);
    let assignment = |a: &Assignment| cgd::Assignment {
        topic_partitions: topic_partitions(broker, a)
            .into_iter()
            .map(|(topic_id, topic_name, partitions)| cgd::TopicPartitions {
                topic_id,
                topic_name,
                partitions,
            })
            .collect(),
    };
    let groups = request
        .group_ids
        .into_iter()
        .map(
            |group_id| match broker.groups.consumer_describe(&group_id) {
                Ok(d) => cgd::DescribedGroup {
                    error_code: ErrorCode::None.code(),
                    group_id,
                    group_state: d.state_name.to_string(),
                    group_epoch: d.group_epoch,
                    assignment_epoch: d.assignment_epoch,
                    assignor_name: d.assignor,
                    members: d
                        .members
                        .iter()
                        .map(|(m, target)| cgd::Member {
                            member_id: m.member_id.clone(),
                            instance_id: m.instance_id.clone(),
                            rack_id: m.rack_id.clone(),
                            member_epoch: m.member_epoch,
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            subscribed_topic_names: m.subscribed_topic_names.clone(),
                            subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                            assignment: assignment(&m.assigned),
                            target_assignment: assignment(target),
                            // v1+: 0 a classic-protocol member, 1 a consumer-protocol one.
                            member_type: if m.classic.is_some() { 0 } else { 1 },
                        })
                        .collect(),
                    authorized_operations,
                    ..Default::default()
                },
                Err(code) => {
                    let message = if broker.groups.describe(&group_id).is_some() {
                        format!("group {group_id} is not a consumer group")
                    } else {
                        format!("group {group_id} not found")
                    };
                    cgd::DescribedGroup {
                        error_code: code.code(),
                        error_message: Some(message),
                        group_id,
                        group_state: "Dead".to_string(),
                        group_epoch: -1,
                        assignment_epoch: -1,
                        ..Default::default()
                    }
                }
            },
        )
        .collect();
    ConsumerGroupDescribeResponse {
        groups,
        ..Default::default()
    }
}
