//! Fetch: read whole batches up to the high watermark (read_uncommitted) or
//! the last stable offset (read_committed, which also gets the aborted
//! transactions of the range), long-polling on min_bytes / max_wait_ms.
//!
//! The long-poll waits on the watermark notifications of the partitions it
//! reads (an append elsewhere does not wake it), registered before each check
//! so a raise between check and wait is never missed; it never busy-polls. Record bytes are
//! not copied: each partition's records are encoded as a placeholder that [`splice`] swaps
//! for segment file ranges, which the server sends with sendfile.
//!
//! Fetch sessions (KIP-227, v7+): the rules live in [`crate::fetch_session`]. A request first
//! asks the session cache what to read (its own partitions, or, incremental, every partition
//! of its session with the cached parameters for those it does not list); the read and the
//! long poll are the same either way; the answer then goes back to the cache, which creates
//! the session (full request, epoch 0) or leaves out of an incremental answer the partitions
//! with nothing new. A follower's position is noted for every partition read, listed or
//! not: an unlisted partition's fetch offset is the cached one, which is the follower's
//! durable end because a follower lists a partition again whenever that end moves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::fetch::{
    AbortedTransaction, FetchRequest, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch,
    NodeEndpoint, PartitionData,
};

use weir_protocol::api::ApiKey;

use crate::error::log_error_code;
use crate::fetch_session::{Context, FetchParams, Outcome, Owner, PartitionKey};
use crate::follower::DivergenceCheck;
use crate::frame::{Placeholders, splice};
use crate::{Broker, Frame, PendingReply, encode_frame, encode_response, log_encode_failure};

/// Test-only planted bug: read_committed answers leave out the aborted
/// transactions, so consumers keep aborted records. The exactly-once test
/// (`tests/compat/test_eos_kill9.py`) must catch it. Read once.
pub const LEAK_ABORTED_TXNS_ENV: &str = "WEIR_TEST_LEAK_ABORTED_TXNS";
static LEAK_ABORTED_TXNS: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os(LEAK_ABORTED_TXNS_ENV).is_some_and(|v| v == "1"));

/// Kafka's `fetch.max.wait.ms` ceiling: a client can't park a request forever.
const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// read_committed (isolation level 1) reads up to the last stable offset.
const READ_COMMITTED: i8 = 1;

struct Wanted {
    topic_name: String,
    topic_id: [u8; 16],
    partitions: Vec<WantedPartition>,
}

#[derive(Clone, Copy)]
struct WantedPartition {
    index: i32,
    fetch_offset: i64,
    max_bytes: i32,
    /// KIP-320: the leader epoch the fetcher believes current; -1 skips the check.
    current_leader_epoch: i32,
    /// The epoch of the last batch the fetcher holds (v12+), for divergence; -1 if none.
    last_fetched_epoch: i32,
}

/// A follower broker fetching as a replica (Kafka's replica id >= 0).
#[derive(Clone, Copy)]
struct Follower {
    broker_id: i32,
    /// Its broker epoch (v15+ ReplicaState); -1 when the version can't carry one, and
    /// such a fetch is refused.
    broker_epoch: i64,
}

/// KIP-320's check of the fetcher's view of the leader epoch.
fn check_leader_epoch(current: i32, requested: i32) -> Result<(), ErrorCode> {
    if requested < 0 || requested == current {
        Ok(())
    } else if requested < current {
        Err(ErrorCode::FencedLeaderEpoch)
    } else {
        Err(ErrorCode::UnknownLeaderEpoch)
    }
}

/// A follower must be the broker it says (its epoch is its current registration's), hold
/// a replica of the partition and fetch within the leader's log; its fetch offset is its
/// durable log end, which feeds the leader's high watermark. Returns the error to answer.
fn note_follower_fetch(
    broker: &Broker,
    partition: &crate::partition::Partition,
    follower: Follower,
    fetch_offset: i64,
) -> Result<(), ErrorCode> {
    // Only a fetch carrying the broker's current epoch (v15+, KIP-903) counts: anyone can
    // put a replica id in a request, and a forged position would raise the high watermark
    // past records the real follower does not have.
    let registered = broker
        .cluster()
        .image()
        .broker(follower.broker_id)
        .map(|b| b.broker_epoch);
    if registered.is_none() || registered != Some(follower.broker_epoch) {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    let leader_end = partition.log.log_end_offset();
    if fetch_offset > leader_end || fetch_offset < 0 {
        // Kafka answers before recording the position: the follower holds more than the
        // leader, so it must truncate first.
        return Err(ErrorCode::OffsetOutOfRange);
    }
    let decided = match partition.replication().as_mut() {
        Some(state) => state
            .follower_fetched(
                follower.broker_id,
                fetch_offset,
                leader_end,
                crate::now_ms().max(0) as u64,
            )
            .map_err(|_| ErrorCode::NotLeaderOrFollower)?,
        None => return Err(ErrorCode::NotLeaderOrFollower),
    };
    if let Some(hw) = decided {
        partition.raise_high_watermark(hw);
    }
    Ok(())
}

/// KIP-951: each NOT_LEADER_OR_FOLLOWER partition names the leader and
/// epoch this broker knows, and the response carries those leaders'
/// endpoints (v16+), so the client re-routes without a Metadata round trip.
fn add_leader_hints(
    broker: &Broker,
    responses: &mut [FetchableTopicResponse],
) -> Vec<NodeEndpoint> {
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for topic in responses.iter_mut() {
        let name = if topic.topic.is_empty() {
            match broker.registry().by_id(&topic.topic_id) {
                Some(t) => t.name.clone(),
                None => continue,
            }
        } else {
            topic.topic.clone()
        };
        for p in topic
            .partitions
            .iter_mut()
            .filter(|p| p.error_code == ErrorCode::NotLeaderOrFollower.code())
        {
            let ((leader_id, leader_epoch), endpoint) =
                broker.leader_hint(&name, p.partition_index);
            p.current_leader = LeaderIdAndEpoch {
                leader_id,
                leader_epoch,
            };
            if let Some((node_id, host, port, rack)) = endpoint
                && !endpoints.iter().any(|e| e.node_id == node_id)
            {
                endpoints.push(NodeEndpoint {
                    node_id,
                    host,
                    port: i32::from(port),
                    rack,
                });
            }
        }
    }
    endpoints
}

/// The broker's `leader.replication.throttled.rate`, if set.
fn leader_rate(broker: &Broker) -> Option<u64> {
    broker
        .dynamic_configs()
        .broker_value(crate::throttle::LEADER_RATE)
        .and_then(|(v, _)| v.trim().parse().ok())
}

/// One pass over every requested partition. Returns the response (records
/// as placeholders for the file ranges in `placeholders`) and the record bytes in it.
fn read_once(
    broker: &Broker,
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
    follower: Option<Follower>,
    placeholders: &mut Placeholders,
) -> (Vec<FetchableTopicResponse>, usize) {
    let mut total_bytes = 0usize;
    let mut responses = Vec::with_capacity(wanted.len());
    // The leader-side replication throttle (see `throttle`), for follower fetches.
    let leader_rate = follower.and_then(|_| leader_rate(broker));
    for want in wanted {
        let topic = if want.topic_name.is_empty() {
            broker.registry().by_id(&want.topic_id).cloned()
        } else {
            broker.topic(&want.topic_name)
        };
        let mut partitions = Vec::with_capacity(want.partitions.len());
        for w in &want.partitions {
            let (index, fetch_offset, partition_max_bytes) = (w.index, w.fetch_offset, w.max_bytes);
            let mut data = PartitionData {
                partition_index: index,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Some(Bytes::new()),
                ..Default::default()
            };
            let found =
                crate::topics::led_partition_of(topic.as_ref(), index, want.topic_name.is_empty());
            let partition = match found {
                Ok((_, partition)) => partition,
                Err(error) => {
                    data.error_code = error.code();
                    partitions.push(data);
                    continue;
                }
            };
            if let Err(error) = check_leader_epoch(partition.leader_epoch(), w.current_leader_epoch)
            {
                data.error_code = error.code();
                partitions.push(data);
                continue;
            }
            let log = &partition.log;
            if let Some(f) = follower {
                // KIP-320 divergence: the follower's last epoch ends earlier here (or is
                // unknown) than where it fetches from, so its tail is not the leader's.
                let end_for_last_fetched = if w.last_fetched_epoch >= 0 {
                    log.end_offset_for_epoch(w.last_fetched_epoch)
                } else {
                    None
                };
                match crate::follower::check_divergence(
                    w.last_fetched_epoch,
                    fetch_offset,
                    end_for_last_fetched,
                ) {
                    DivergenceCheck::Serve => {}
                    DivergenceCheck::OutOfRange => {
                        // The follower's epoch predates everything this leader knows:
                        // no end to name, so Kafka answers OFFSET_OUT_OF_RANGE and the
                        // follower checks its log with OffsetForLeaderEpoch.
                        data.error_code = ErrorCode::OffsetOutOfRange.code();
                        partitions.push(data);
                        continue;
                    }
                    DivergenceCheck::Diverging { epoch, end_offset } => {
                        data.diverging_epoch.epoch = epoch;
                        data.diverging_epoch.end_offset = end_offset;
                        data.high_watermark = log.high_watermark();
                        data.last_stable_offset = log.last_stable_offset();
                        data.log_start_offset = log.log_start_offset();
                        partitions.push(data);
                        continue;
                    }
                }
                if let Err(error) = note_follower_fetch(broker, partition, f, fetch_offset) {
                    data.error_code = error.code();
                    partitions.push(data);
                    continue;
                }
            }
            let high_watermark = log.high_watermark();
            let stable = log.last_stable_offset();
            data.high_watermark = high_watermark;
            data.last_stable_offset = stable;
            data.log_start_offset = log.log_start_offset();
            // Throttled: a listed replica of ours, read by a follower outside the ISR.
            let leader_throttled = match (follower, leader_rate) {
                (Some(f), Some(_)) => {
                    topic.as_ref().is_some_and(|t| {
                        crate::topic_config::TopicConfig::is_throttled(
                            &t.config.leader_replication_throttled_replicas,
                            index,
                            broker.config.node_id,
                        )
                    }) && !partition
                        .replication()
                        .as_ref()
                        .is_some_and(|r| r.isr().contains(&f.broker_id))
                }
                _ => false,
            };
            if leader_throttled {
                let now_ms = crate::now_ms().max(0) as u64;
                let ahead = broker
                    .leader_pacer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_ahead(now_ms);
                if crate::throttle::leader_withholds(leader_rate, true, false, ahead) {
                    partitions.push(data);
                    continue;
                }
            }
            // Followers copy everything the leader has; consumers see only what the ISR has.
            let limit = if follower.is_some() {
                log.log_end_offset()
            } else if read_committed {
                stable
            } else {
                high_watermark
            };
            let budget = max_bytes.saturating_sub(total_bytes);
            let partition_budget = usize::try_from(partition_max_bytes)
                .unwrap_or(0)
                .min(budget);
            // KIP-74: the first partition with data may exceed the limits by one
            // whole batch so a big batch can never wedge a consumer; later ones may not.
            let first_with_data = total_bytes == 0;
            if partition_budget == 0 && !first_with_data {
                partitions.push(data);
                continue;
            }
            // read_committed answers always carry the list (maybe empty), read_uncommitted ones
            // null, as Kafka's.
            if read_committed {
                data.aborted_transactions = Some(Vec::new());
            }
            match log.read(fetch_offset, partition_budget.max(1), limit) {
                Ok(result) => {
                    if result.bytes > 0 && (first_with_data || result.bytes <= partition_budget) {
                        total_bytes += result.bytes;
                        if let (true, Some(rate)) = (leader_throttled, leader_rate) {
                            broker
                                .leader_pacer
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .record(result.bytes as u64, rate, crate::now_ms().max(0) as u64);
                        }
                        if follower.is_none() {
                            let traffic = &partition.traffic;
                            traffic
                                .bytes_out
                                .fetch_add(result.bytes as u64, Ordering::Relaxed);
                            let offsets = u64::try_from(result.end_offset - fetch_offset);
                            traffic
                                .offsets_out
                                .fetch_add(offsets.unwrap_or(0), Ordering::Relaxed);
                        }
                        if read_committed && !*LEAK_ABORTED_TXNS {
                            // The transactions aborted in the returned range: the consumer drops
                            // their records (control batches themselves it always skips).
                            data.aborted_transactions = Some(
                                log.aborted_transactions(fetch_offset, result.end_offset)
                                    .into_iter()
                                    .map(|a| AbortedTransaction {
                                        producer_id: a.producer_id,
                                        first_offset: a.first_offset,
                                    })
                                    .collect(),
                            );
                        }
                        data.records = Some(placeholders.add(result));
                    }
                }
                Err(e) => data.error_code = log_error_code(&e).code(),
            }
            partitions.push(data);
        }
        responses.push(FetchableTopicResponse {
            topic: want.topic_name.clone(),
            topic_id: want.topic_id,
            partitions,
        });
    }
    (responses, total_bytes)
}

/// The notifications a long poll waits on: the watermark of each requested partition that
/// exists, and for a follower also its appends. A missing partition answers with an error at
/// once, so it needs no waiting.
fn watermark_notifies(broker: &Broker, wanted: &[Wanted], follower: bool) -> Vec<Arc<Notify>> {
    let mut notifies = Vec::new();
    for want in wanted {
        let topic = if want.topic_name.is_empty() {
            broker.registry().by_id(&want.topic_id).cloned()
        } else {
            broker.topic(&want.topic_name)
        };
        let Some(topic) = topic else { continue };
        for w in &want.partitions {
            if let Some(partition) = topic.partition(w.index) {
                notifies.push(partition.watermark_raised.clone());
                if follower {
                    notifies.push(partition.appended.clone());
                }
            }
        }
    }
    notifies
}

/// The partitions a request reads, grouped by topic as consecutive partitions of one topic.
fn group_by_topic(partitions: &[(PartitionKey, FetchParams)]) -> Vec<Wanted> {
    let mut wanted: Vec<Wanted> = Vec::new();
    for (key, params) in partitions {
        let partition = WantedPartition {
            index: key.index,
            fetch_offset: params.fetch_offset,
            max_bytes: params.max_bytes,
            current_leader_epoch: params.current_leader_epoch,
            last_fetched_epoch: params.last_fetched_epoch,
        };
        match wanted.last_mut() {
            Some(w) if w.topic_name == key.topic && w.topic_id == key.topic_id => {
                w.partitions.push(partition)
            }
            _ => wanted.push(Wanted {
                topic_name: key.topic.clone(),
                topic_id: key.topic_id,
                partitions: vec![partition],
            }),
        }
    }
    wanted
}

/// What the session cache needs to know of one partition's answer.
fn outcome_of(data: &PartitionData) -> Outcome {
    Outcome {
        // A placeholder (or nothing): only whether there are records matters.
        records_bytes: data.records.as_ref().map_or(0, |r| r.len()),
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        log_start_offset: data.log_start_offset,
        error_code: data.error_code,
        must_answer: data.diverging_epoch.epoch >= 0
            || data.diverging_epoch.end_offset >= 0
            || data.current_leader.leader_id >= 0
            || data.preferred_read_replica >= 0,
    }
}

fn session_error(header: &RequestHeader, error: ErrorCode, session_id: i32) -> PendingReply {
    let response = FetchResponse {
        error_code: error.code(),
        session_id,
        ..Default::default()
    };
    crate::ready(encode_frame(header, &response))
}

pub fn handle(
    broker: &Arc<Broker>,
    header: RequestHeader,
    request: FetchRequest,
) -> Option<PendingReply> {
    // v15 moved the replica id into ReplicaState, with the broker epoch (KIP-903).
    let follower = if header.api_version >= 15 {
        (request.replica_state.replica_id >= 0).then_some(Follower {
            broker_id: request.replica_state.replica_id,
            broker_epoch: request.replica_state.replica_epoch,
        })
    } else {
        (request.replica_id >= 0).then_some(Follower {
            broker_id: request.replica_id,
            broker_epoch: -1,
        })
    };
    let owner = follower.map_or(Owner::Consumer, |f| Owner::Replica(f.broker_id));
    // v13+ names topics by id only (the name field is absent, so empty), older by name only.
    let uses_topic_ids = header.api_version >= 13;
    let listed: Vec<(PartitionKey, FetchParams)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    PartitionKey {
                        topic: t.topic.clone(),
                        topic_id: t.topic_id,
                        index: p.partition,
                    },
                    FetchParams {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                        log_start_offset: p.log_start_offset,
                    },
                )
            })
        })
        .collect();
    let context = if header.api_version < 7 {
        // No session fields before v7.
        Context::Sessionless(listed)
    } else {
        let forgotten: Vec<PartitionKey> = request
            .forgotten_topics_data
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|&index| PartitionKey {
                    topic: t.topic.clone(),
                    topic_id: t.topic_id,
                    index,
                })
            })
            .collect();
        let now_ms = crate::now_ms().max(0) as u64;
        broker
            .fetch_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin(
                now_ms,
                owner,
                uses_topic_ids,
                request.session_id,
                request.session_epoch,
                listed,
                &forgotten,
            )
    };
    let (session_partitions, create, incremental) = match context {
        Context::Error(error) => {
            tracing::debug!(
                session_id = request.session_id,
                epoch = request.session_epoch,
                ?owner,
                ?error,
                "fetch session refused"
            );
            return Some(session_error(&header, error, 0));
        }
        Context::Sessionless(partitions) => (partitions, false, None),
        Context::Full(partitions) => (partitions, true, None),
        Context::Incremental {
            session_id,
            epoch,
            partitions,
        } => {
            if epoch == 1 && follower.is_some() {
                tracing::info!(
                    session_id,
                    ?owner,
                    partitions = partitions.len(),
                    "replica fetch session went incremental"
                );
            }
            (partitions, false, Some((session_id, epoch)))
        }
    };
    let wanted = group_by_topic(&session_partitions);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(FETCH_WAIT_MS_MAX),
    );
    let read_committed = request.isolation_level == READ_COMMITTED;
    let broker = broker.clone();
    Some(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + wait;
        let watched = watermark_notifies(&broker, &wanted, follower.is_some());
        let mut placeholders;
        let responses = loop {
            // Registered before the read, so a raise during it still wakes us.
            let mut raised: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                watched.iter().map(|n| Box::pin(n.notified())).collect();
            for notified in &mut raised {
                notified.as_mut().enable();
            }
            placeholders = Placeholders::new();
            let (responses, bytes) = read_once(
                &broker,
                &wanted,
                max_bytes,
                read_committed,
                follower,
                &mut placeholders,
            );
            let has_error = responses
                .iter()
                .any(|t| t.partitions.iter().any(|p| p.error_code != 0));
            if bytes >= min_bytes || has_error || tokio::time::Instant::now() >= deadline {
                break responses;
            }
            let any_raised = std::future::poll_fn(|cx| {
                if raised.iter_mut().any(|n| n.as_mut().poll(cx).is_ready()) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            if tokio::time::timeout_at(deadline, any_raised).await.is_err() {
                // Timed out: answer with whatever is there now.
                placeholders = Placeholders::new();
                break read_once(
                    &broker,
                    &wanted,
                    max_bytes,
                    read_committed,
                    follower,
                    &mut placeholders,
                )
                .0;
            }
        };
        let mut responses = responses;
        let node_endpoints = add_leader_hints(&broker, &mut responses);
        // `responses` holds one entry per session partition, in `session_partitions` order.
        let outcomes = responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(outcome_of));
        let mut session_id = crate::fetch_session::NO_SESSION;
        if create {
            let partitions: Vec<(PartitionKey, FetchParams, Outcome)> = session_partitions
                .into_iter()
                .zip(outcomes)
                .map(|((key, params), outcome)| (key, params, outcome))
                .collect();
            let count = partitions.len();
            let now_ms = crate::now_ms().max(0) as u64;
            session_id = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .create(now_ms, owner, uses_topic_ids, partitions);
            if follower.is_some() {
                tracing::info!(
                    session_id,
                    ?owner,
                    partitions = count,
                    "replica fetch session created (0: the cache had no room)"
                );
            }
        } else if let Some((id, epoch)) = incremental {
            let outcomes: Vec<(PartitionKey, Outcome)> = session_partitions
                .into_iter()
                .map(|(key, _)| key)
                .zip(outcomes)
                .collect();
            let answered = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answer(id, epoch, &outcomes);
            match answered {
                Ok(keep) => {
                    let mut keep = keep.into_iter();
                    for topic in &mut responses {
                        topic.partitions.retain(|_| keep.next().unwrap_or(true));
                    }
                    responses.retain(|t| !t.partitions.is_empty());
                    session_id = id;
                }
                Err(error) => {
                    // Another request of this session came in meanwhile (or the session is
                    // gone): what this one read is not what the session now expects.
                    let id = if error == ErrorCode::InvalidFetchSessionEpoch {
                        id
                    } else {
                        0
                    };
                    return encode_frame(
                        &header,
                        &FetchResponse {
                            error_code: error.code(),
                            session_id: id,
                            ..Default::default()
                        },
                    );
                }
            }
        }
        let response = FetchResponse {
            throttle_time_ms: 0,
            error_code: 0,
            session_id,
            responses,
            node_endpoints,
        };
        let encoded = match encode_response(&header, &response) {
            Ok(encoded) => encoded,
            Err(e) => {
                log_encode_failure(&header, &e);
                return Some(Frame::close_connection());
            }
        };
        let compact = header.api_version >= ApiKey::Fetch.response_flexible_min_version();
        match splice(encoded, placeholders, compact) {
            Some(mut frame) => {
                frame.errors = crate::metrics::ErrorTally::of(&response);
                Some(frame)
            }
            None => {
                tracing::error!(
                    "could not splice record ranges into a fetch response; closing connection"
                );
                Some(Frame::close_connection())
            }
        }
    }))
}
