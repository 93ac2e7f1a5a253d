//! Transaction APIs (KIP-98): AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn, WriteTxnMarkers, DescribeTransactions and
//! ListTransactions. The rules are in `crate::txn::state`; this module maps
//! requests to the coordinator and its answers to each version's wire form.
//!
//! KIP-588: PRODUCER_FENCED (90) is new in InitProducerId v4, AddPartitionsToTxn
//! v2, AddOffsetsToTxn v2, EndTxn v2 and TxnOffsetCommit v3; older versions get
//! INVALID_PRODUCER_EPOCH instead, as Kafka answers them.

use std::sync::Arc;
use std::time::Duration;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::add_offsets_to_txn::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
};
use weir_protocol::messages::add_partitions_to_txn::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    AddPartitionsToTxnResult, AddPartitionsToTxnTopic, AddPartitionsToTxnTopicResult,
};
use weir_protocol::messages::describe_transactions::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, TopicData, TransactionState,
};
use weir_protocol::messages::end_txn::{EndTxnRequest, EndTxnResponse};
use weir_protocol::messages::list_transactions::{
    ListTransactionsRequest, ListTransactionsResponse, TransactionState as ListedTransaction,
};
use weir_protocol::messages::txn_offset_commit::{
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition,
    TxnOffsetCommitResponseTopic,
};
use weir_protocol::messages::write_txn_markers::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

use crate::groups::group::OffsetEntry;
use crate::groups::{OFFSETS_TOPIC, partition_for};
use crate::txn::state::{TopicPartition, TxnState};
use crate::{Broker, PendingReply, encode_frame, now_ms, ready};

/// The longest a reply waits for its record to be durable.
const DURABILITY_WAIT_MS: u64 = 30_000;

/// PRODUCER_FENCED as the client's version knows it (KIP-588).
pub fn fenced_for(code: ErrorCode, fenced_since_version: i16, version: i16) -> ErrorCode {
    if code == ErrorCode::ProducerFenced && version < fenced_since_version {
        ErrorCode::InvalidProducerEpoch
    } else {
        code
    }
}

async fn wait<T>(pending: crate::txn::Pending<T>) -> Result<T, ErrorCode> {
    match tokio::time::timeout(Duration::from_millis(DURABILITY_WAIT_MS), pending.wait()).await {
        Ok(result) => result,
        Err(_) => Err(ErrorCode::RequestTimedOut),
    }
}

/// Per-partition codes for a list of topics: unknown partitions get
/// UNKNOWN_TOPIC_OR_PARTITION and, if there are any, every other partition
/// OPERATION_NOT_ATTEMPTED (Kafka's KafkaApis); otherwise `None`.
fn unknown_partitions(
    broker: &Broker,
    topics: &[AddPartitionsToTxnTopic],
) -> Option<Vec<AddPartitionsToTxnTopicResult>> {
    // The coordinator need not hold a replica of the partitions a transaction writes (in a
    // cluster they are led by any broker): a partition is known if the topic has it anywhere.
    let known = |t: &str, p: i32| {
        t != crate::txn::TRANSACTION_STATE_TOPIC
            && broker
                .topic(t)
                .is_some_and(|topic| (0..topic.partition_count).contains(&p))
    };
    let any_unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| !known(&t.name, *p)));
    any_unknown.then(|| {
        topics
            .iter()
            .map(|t| AddPartitionsToTxnTopicResult {
                name: t.name.clone(),
                results_by_partition: t
                    .partitions
                    .iter()
                    .map(|p| AddPartitionsToTxnPartitionResult {
                        partition_index: *p,
                        partition_error_code: if known(&t.name, *p) {
                            ErrorCode::OperationNotAttempted.code()
                        } else {
                            ErrorCode::UnknownTopicOrPartition.code()
                        },
                    })
                    .collect(),
            })
            .collect()
    })
}

fn same_code_for_all(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&str, i32) -> ErrorCode,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| AddPartitionsToTxnTopicResult {
            name: t.name.clone(),
            results_by_partition: t
                .partitions
                .iter()
                .map(|p| AddPartitionsToTxnPartitionResult {
                    partition_index: *p,
                    partition_error_code: code(&t.name, *p).code(),
                })
                .collect(),
        })
        .collect()
}

fn flatten(topics: &[AddPartitionsToTxnTopic]) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect()
}

/// One transaction of an AddPartitionsToTxn request: its per-partition
/// results, once the new state is durable.
fn add_one(
    broker: &Arc<Broker>,
    version: i16,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<AddPartitionsToTxnTopicResult>> + Send>>
{
    if !broker.txn.enabled {
        let results = same_code_for_all(&topics, |_, _| {
            ErrorCode::TransactionalIdAuthorizationFailed
        });
        return Box::pin(std::future::ready(results));
    }
    if transactional_id.is_empty() {
        let results = same_code_for_all(&topics, |_, _| ErrorCode::InvalidRequest);
        return Box::pin(std::future::ready(results));
    }
    if !broker.coordinates_transaction(&transactional_id) {
        let results = same_code_for_all(&topics, |_, _| ErrorCode::NotCoordinator);
        return Box::pin(std::future::ready(results));
    }
    if verify_only {
        // KIP-890 part 1: a partition leader asks whether each partition is
        // in the producer's open transaction; nothing changes.
        let results = same_code_for_all(&topics, |t, p| {
            broker.txn.verify(
                &transactional_id,
                producer_id,
                producer_epoch,
                &(t.to_string(), p),
            )
        });
        return Box::pin(std::future::ready(results));
    }
    if let Some(results) = unknown_partitions(broker, &topics) {
        return Box::pin(std::future::ready(results));
    }
    let pending = broker.txn.add_partitions(
        broker,
        &transactional_id,
        producer_id,
        producer_epoch,
        &flatten(&topics),
    );
    Box::pin(async move {
        let code = match pending {
            Ok(pending) => wait(pending).await.err().unwrap_or(ErrorCode::None),
            Err(code) => code,
        };
        let code = fenced_for(code, 2, version);
        same_code_for_all(&topics, |_, _| code)
    })
}

pub fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: AddPartitionsToTxnRequest,
) -> PendingReply {
    let version = header.api_version;
    if version <= 3 {
        let reply = add_one(
            broker,
            version,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            false,
            request.v3_and_below_topics,
        );
        return Box::pin(async move {
            let response = AddPartitionsToTxnResponse {
                results_by_topic_v3_and_below: reply.await,
                ..Default::default()
            };
            encode_frame(&header, &response)
        });
    }
    // v4+: the broker-to-broker batched form, one result per transaction.
    let replies: Vec<_> = request
        .transactions
        .into_iter()
        .map(|t| {
            let id = t.transactional_id.clone();
            (
                id,
                add_one(
                    broker,
                    version,
                    t.transactional_id,
                    t.producer_id,
                    t.producer_epoch,
                    t.verify_only,
                    t.topics,
                ),
            )
        })
        .collect();
    Box::pin(async move {
        let mut results = Vec::with_capacity(replies.len());
        for (transactional_id, reply) in replies {
            results.push(AddPartitionsToTxnResult {
                transactional_id,
                topic_results: reply.await,
            });
        }
        let response = AddPartitionsToTxnResponse {
            error_code: ErrorCode::None.code(),
            results_by_transaction: results,
            ..Default::default()
        };
        encode_frame(&header, &response)
    })
}

pub fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: AddOffsetsToTxnRequest,
) -> PendingReply {
    let version = header.api_version;
    let respond = move |code: ErrorCode| {
        let response = AddOffsetsToTxnResponse {
            error_code: fenced_for(code, 2, version).code(),
            ..Default::default()
        };
        encode_frame(&header, &response)
    };
    if request.transactional_id.is_empty() {
        return ready(respond(ErrorCode::InvalidRequest));
    }
    if !broker.coordinates_transaction(&request.transactional_id) {
        return ready(respond(ErrorCode::NotCoordinator));
    }
    if super::groups::invalid_group_id(&request.group_id) {
        return ready(respond(ErrorCode::InvalidGroupId));
    }
    // The transaction gains the group's __consumer_offsets partition, where
    // TxnOffsetCommit writes and the marker must go.
    let topic = match broker.groups.ensure_offsets_topic(broker) {
        Ok(topic) => topic,
        Err(code) => return ready(respond(code)),
    };
    let count = topic.partition_count;
    let partition = (
        OFFSETS_TOPIC.to_string(),
        partition_for(&request.group_id, count),
    );
    let pending = broker.txn.add_partitions(
        broker,
        &request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        &[partition],
    );
    Box::pin(async move {
        let code = match pending {
            Ok(pending) => wait(pending).await.err().unwrap_or(ErrorCode::None),
            Err(code) => code,
        };
        respond(code)
    })
}

pub fn txn_offset_commit(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: TxnOffsetCommitRequest,
) -> PendingReply {
    let version = header.api_version;
    let now = now_ms();
    let metadata_max = broker.groups.offset_metadata_bytes_max;
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
    let outcome = if request.transactional_id.is_empty() {
        Err(ErrorCode::InvalidRequest)
    } else if let Some(refused) = super::groups::group_refused(broker, &request.group_id) {
        Err(refused)
    } else {
        broker.groups.txn_commit(
            broker,
            &request.transactional_id,
            &request.group_id,
            request.producer_id,
            request.producer_epoch,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            accepted,
        )
    };
    Box::pin(async move {
        let group_code = match outcome {
            Ok(durable) => super::groups::wait_durable(durable).await,
            Err(code) => code,
        };
        let group_code = fenced_for(group_code, 3, version);
        let topics = codes
            .into_iter()
            .map(|(name, list)| TxnOffsetCommitResponseTopic {
                name,
                partitions: list
                    .into_iter()
                    .map(|(partition_index, code)| TxnOffsetCommitResponsePartition {
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
        let response = TxnOffsetCommitResponse {
            topics,
            ..Default::default()
        };
        encode_frame(&header, &response)
    })
}

pub fn end_txn(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: EndTxnRequest,
) -> PendingReply {
    let version = header.api_version;
    let respond = move |result: Result<(i64, i16), ErrorCode>| {
        let response = match result {
            Ok((producer_id, producer_epoch)) => EndTxnResponse {
                error_code: ErrorCode::None.code(),
                producer_id,
                producer_epoch,
                ..Default::default()
            },
            Err(code) => EndTxnResponse {
                error_code: fenced_for(code, 2, version).code(),
                producer_id: -1,
                producer_epoch: -1,
                ..Default::default()
            },
        };
        encode_frame(&header, &response)
    };
    if request.transactional_id.is_empty() {
        return ready(respond(Err(ErrorCode::InvalidRequest)));
    }
    if !broker.coordinates_transaction(&request.transactional_id) {
        return ready(respond(Err(ErrorCode::NotCoordinator)));
    }
    // EndTxn v5 is KIP-890 part 2: the epoch moves on with every transaction.
    let pending = broker.txn.end_txn(
        broker,
        &request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        request.committed,
        version >= 5,
    );
    Box::pin(async move {
        let result = match pending {
            Ok(pending) => wait(pending).await,
            Err(code) => Err(code),
        };
        respond(result)
    })
}

/// WriteTxnMarkers (API 27): a transaction coordinator asks this broker, the
/// leader of some of a transaction's partitions, to write their markers. Each
/// named partition gets the marker, or its error.
pub fn write_txn_markers(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: WriteTxnMarkersRequest,
) -> PendingReply {
    use weir_protocol::control::{ControlType, Marker};
    let mut results = Vec::with_capacity(request.markers.len());
    let mut waits = Vec::new();
    for marker in request.markers {
        let control_type = if marker.transaction_result {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let found = broker.topic(&topic.name);
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                let code = match found.as_ref().and_then(|t| t.partition(index)) {
                    None => ErrorCode::UnknownTopicOrPartition,
                    // Only the leader writes: a marker on a follower would fork its log.
                    Some(partition) if !partition.is_leader() => ErrorCode::NotLeaderOrFollower,
                    Some(partition) => {
                        let options = weir_log::AppendOptions {
                            leader_epoch: partition.leader_epoch(),
                            log_append_time_ms: None,
                        };
                        let m = Marker {
                            control_type,
                            coordinator_epoch: marker.coordinator_epoch,
                        };
                        match partition.log.append_marker(
                            marker.producer_id,
                            marker.producer_epoch,
                            m,
                            now_ms(),
                            &options,
                        ) {
                            Ok(info) => {
                                if topic.name == OFFSETS_TOPIC {
                                    let count = found.as_ref().map_or(1, |t| t.partition_count);
                                    broker.groups.complete_txn_offsets(
                                        marker.producer_id,
                                        index,
                                        count,
                                        marker.transaction_result,
                                    );
                                }
                                waits.push((
                                    results.len(),
                                    topics.len(),
                                    partitions.len(),
                                    broker.raise_watermark_when_durable(
                                        partition,
                                        info.last_offset + 1,
                                    ),
                                ));
                                ErrorCode::None
                            }
                            Err(e) => crate::error::log_error_code(&e),
                        }
                    }
                };
                partitions.push(WritableTxnMarkerPartitionResult {
                    partition_index: index,
                    error_code: code.code(),
                });
            }
            topics.push(WritableTxnMarkerTopicResult {
                name: topic.name,
                partitions,
            });
        }
        results.push(WritableTxnMarkerResult {
            producer_id: marker.producer_id,
            topics,
        });
    }
    Box::pin(async move {
        for (m, t, p, durable) in waits {
            let code = match tokio::time::timeout(
                Duration::from_millis(DURABILITY_WAIT_MS),
                durable,
            )
            .await
            {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(e))) => crate::error::log_error_code(&e),
                Ok(Err(_)) => ErrorCode::KafkaStorageError,
                Err(_) => ErrorCode::RequestTimedOut,
            };
            if let Some(slot) = results
                .get_mut(m)
                .and_then(|r| r.topics.get_mut(t))
                .and_then(|t| t.partitions.get_mut(p))
            {
                slot.error_code = code.code();
            }
        }
        let response = WriteTxnMarkersResponse { markers: results };
        encode_frame(&header, &response)
    })
}

pub fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let transaction_states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let found = if broker.txn.enabled {
                broker.txn.describe(&id)
            } else {
                None
            };
            match found {
                Some(d) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (topic, partition) in d.partitions {
                        match topics.last_mut() {
                            Some(t) if t.topic == topic => t.partitions.push(partition),
                            _ => topics.push(TopicData {
                                topic,
                                partitions: vec![partition],
                            }),
                        }
                    }
                    TransactionState {
                        error_code: ErrorCode::None.code(),
                        transactional_id: id,
                        transaction_state: d.state.name().to_string(),
                        transaction_timeout_ms: d.timeout_ms,
                        transaction_start_time_ms: d.start_ms,
                        producer_id: d.producer_id,
                        producer_epoch: d.producer_epoch,
                        topics,
                    }
                }
                None => TransactionState {
                    error_code: ErrorCode::TransactionalIdNotFound.code(),
                    transactional_id: id,
                    transaction_state: String::new(),
                    transaction_timeout_ms: 0,
                    transaction_start_time_ms: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    topics: Vec::new(),
                },
            }
        })
        .collect();
    DescribeTransactionsResponse {
        transaction_states,
        ..Default::default()
    }
}

pub fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut states = Vec::new();
    let mut unknown_state_filters = Vec::new();
    for name in request.state_filters {
        match TxnState::from_name(&name) {
            Some(s) => states.push(s),
            None => unknown_state_filters.push(name),
        }
    }
    let pattern = match request.transactional_id_pattern.as_deref() {
        None | Some("") => None,
        Some(p) => match regex_lite::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some(re),
            Err(_) => {
                return ListTransactionsResponse {
                    error_code: ErrorCode::InvalidRegularExpression.code(),
                    unknown_state_filters,
                    ..Default::default()
                };
            }
        },
    };
    let duration = (request.duration_filter >= 0).then_some(request.duration_filter);
    let listed = if broker.txn.enabled {
        broker.txn.list(
            &states,
            &request.producer_id_filters,
            duration,
            pattern.as_ref(),
        )
    } else {
        Vec::new()
    };
    ListTransactionsResponse {
        error_code: ErrorCode::None.code(),
        unknown_state_filters,
        transaction_states: listed
            .into_iter()
            .map(|(transactional_id, producer_id, state)| ListedTransaction {
                transactional_id,
                producer_id,
                transaction_state: state.name().to_string(),
            })
            .collect(),
        ..Default::default()
    }
}
