//! DescribeQuorum (KIP-595, KIP-836, KIP-853): the metadata quorum's leader,
//! epoch, high watermark and the progress of each voter and observer
//! (learner), as Kafka's KafkaRaftClient reports them for the one partition of
//! `__cluster_metadata`.
//!
//! Any broker answers: the quorum view comes from the Raft leader, asked over
//! the controller transport when this node is not the leader (Kafka forwards
//! the request to the controller instead; the answer is the same). The
//! mapping from that view to the response is [`respond`], a pure function so
//! the error rules are tested without a quorum.

use std::sync::Arc;
use std::time::Duration;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::describe_quorum::{
    DescribeQuorumListener, DescribeQuorumNode, DescribeQuorumRequest, DescribeQuorumResponse,
    DescribeQuorumResponsePartition, DescribeQuorumResponseTopic, ReplicaState,
};

use crate::Broker;
use crate::cluster::{QuorumError, QuorumView, ReplicaView};

/// The metadata log's topic in KRaft; its only partition is 0.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
pub const METADATA_PARTITION: i32 = 0;

/// Kafka's name for the controller listener in combined mode.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

/// Longest wait for the leader's view before answering with a retriable
/// error, so a quorum without a leader never holds the connection.
const DESCRIBE_WAIT: Duration = Duration::from_secs(5);

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    if !asks_for_metadata_partition(&request) {
        return respond(header.api_version, &request, None);
    }
    let view = match tokio::time::timeout(DESCRIBE_WAIT, broker.cluster().quorum.describe()).await {
        Ok(view) => view,
        Err(_) => Err(QuorumError::NotAvailable(format!(
            "no quorum leader answered within {} ms",
            DESCRIBE_WAIT.as_millis()
        ))),
    };
    respond(header.api_version, &request, Some(view))
}

/// Kafka answers only a request naming exactly `__cluster_metadata`
/// partition 0 (KafkaRaftClient's `hasValidTopicPartition`).
fn asks_for_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name == METADATA_TOPIC
                && matches!(topic.partitions.as_slice(), [p] if p.partition_index == METADATA_PARTITION)
        }
        _ => false,
    }
}

/// Builds the response. `view` is `None` when the request does not name the
/// metadata partition (then every partition asked about gets
/// UNKNOWN_TOPIC_OR_PARTITION, as in Kafka), else the quorum's answer.
pub fn respond(
    version: i16,
    request: &DescribeQuorumRequest,
    view: Option<Result<QuorumView, QuorumError>>,
) -> DescribeQuorumResponse {
    let Some(view) = view else {
        let topics = request
            .topics
            .iter()
            .map(|t| DescribeQuorumResponseTopic {
                topic_name: t.topic_name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        error_partition(
                            p.partition_index,
                            ErrorCode::UnknownTopicOrPartition,
                            format!(
                                "only {METADATA_TOPIC}-{METADATA_PARTITION} has a quorum, not {}-{}",
                                t.topic_name, p.partition_index
                            ),
                        )
                    })
                    .collect(),
            })
            .collect();
        return DescribeQuorumResponse {
            topics,
            ..Default::default()
        };
    };
    let (partition, nodes) = match view {
        // Kafka's non-leader controller answers NOT_LEADER_OR_FOLLOWER
        // (retriable); a broker that cannot reach a leader is in the same
        // position, so the client retries after a metadata refresh.
        Err(e) => (
            error_partition(
                METADATA_PARTITION,
                ErrorCode::NotLeaderOrFollower,
                e.to_string(),
            ),
            Vec::new(),
        ),
        Ok(QuorumView {
            leader_id: None, ..
        }) => (
            error_partition(
                METADATA_PARTITION,
                ErrorCode::NotLeaderOrFollower,
                "the metadata quorum has no leader".to_owned(),
            ),
            Vec::new(),
        ),
        Ok(view) => {
            let leader_id = view.leader_id.unwrap_or(-1);
            let partition = DescribeQuorumResponsePartition {
                partition_index: METADATA_PARTITION,
                error_code: ErrorCode::None.code(),
                error_message: None,
                leader_id,
                leader_epoch: i32::try_from(view.leader_epoch).unwrap_or(i32::MAX),
                high_watermark: view.high_watermark,
                current_voters: view.voters.iter().map(replica_state).collect(),
                observers: view.learners.iter().map(replica_state).collect(),
            };
            // Nodes (v2+): each voter's controller listener, which is what
            // KIP-853 puts there; observers are not listed, as in Kafka.
            let nodes = if version >= 2 {
                view.voters.iter().map(voter_node).collect()
            } else {
                Vec::new()
            };
            (partition, nodes)
        }
    };
    DescribeQuorumResponse {
        error_code: ErrorCode::None.code(),
        error_message: None,
        topics: vec![DescribeQuorumResponseTopic {
            topic_name: METADATA_TOPIC.to_owned(),
            partitions: vec![partition],
        }],
        nodes,
    }
}

/// A voter and its controller listener; a voter whose address does not
/// parse as HOST:PORT is listed with no listeners rather than a made-up one.
fn voter_node(voter: &ReplicaView) -> DescribeQuorumNode {
    DescribeQuorumNode {
        node_id: voter.node_id,
        listeners: split_host_port(&voter.controller_addr)
            .map(|(host, port)| DescribeQuorumListener {
                name: CONTROLLER_LISTENER.to_owned(),
                host,
                port,
            })
            .into_iter()
            .collect(),
    }
}

/// "host:port" or "[v6]:port" into its parts. Port 0 is a quorum of one,
/// which opens no controller listener: nothing to list.
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn error_partition(
    index: i32,
    code: ErrorCode,
    message: String,
) -> DescribeQuorumResponsePartition {
    DescribeQuorumResponsePartition {
        partition_index: index,
        error_code: code.code(),
        error_message: Some(message),
        leader_id: -1,
        leader_epoch: -1,
        high_watermark: -1,
        current_voters: Vec::new(),
        observers: Vec::new(),
    }
}

/// One replica's progress. Times are the leader's wall clock, -1 when
/// unknown (Kafka's convention; the leader's own last fetch is always -1).
/// The directory id is the zero uuid: Weir has no KIP-853 directory ids.
fn replica_state(replica: &ReplicaView) -> ReplicaState {
    ReplicaState {
        replica_id: replica.node_id,
        replica_directory_id: [0; 16],
        log_end_offset: replica.log_end_index,
        last_fetch_timestamp: replica.last_fetch_timestamp_ms.unwrap_or(-1),
        last_caught_up_timestamp: replica.last_caught_up_timestamp_ms.unwrap_or(-1),
    }
}

#[cfg(test)]
mod tests {
    use weir_protocol::messages::describe_quorum::{
        DescribeQuorumRequestPartition, DescribeQuorumRequestTopic,
    };

    use super::*;

    fn ask(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
        DescribeQuorumRequest {
            topics: topics
                .iter()
                .map(|(name, partitions)| DescribeQuorumRequestTopic {
                    topic_name: (*name).to_owned(),
                    partitions: partitions
                        .iter()
                        .map(|p| DescribeQuorumRequestPartition {
                            partition_index: *p,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn replica(node_id: i32, log_end_index: i64, addr: &str) -> ReplicaView {
        ReplicaView {
            node_id,
            log_end_index,
            last_fetch_timestamp_ms: None,
            last_caught_up_timestamp_ms: None,
            controller_addr: addr.to_owned(),
        }
    }

    fn three_voters_one_learner() -> QuorumView {
        QuorumView {
            leader_id: Some(2),
            leader_epoch: 7,
            high_watermark: 40,
            voters: vec![
                replica(1, 40, "127.0.0.1:9101"),
                replica(2, 41, "[::1]:9102"),
                replica(3, 12, "ctl-3.example:9103"),
            ],
            learners: vec![replica(4, 39, "127.0.0.1:9104")],
        }
    }

    #[test]
    fn another_topic_gets_unknown_topic_or_partition_per_partition() {
        let request = ask(&[("orders", &[0, 1]), (METADATA_TOPIC, &[1])]);
        assert!(!asks_for_metadata_partition(&request));
        let response = respond(2, &request, None);
        assert_eq!(response.error_code, 0);
        let errors: Vec<(String, i32, i16)> = response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic_name.clone(), p.partition_index, p.error_code))
            })
            .collect();
        let unknown = ErrorCode::UnknownTopicOrPartition.code();
        assert_eq!(
            errors,
            vec![
                ("orders".to_owned(), 0, unknown),
                ("orders".to_owned(), 1, unknown),
                (METADATA_TOPIC.to_owned(), 1, unknown),
            ]
        );
        assert!(response.nodes.is_empty());
    }

    #[test]
    fn only_the_single_metadata_partition_is_answered() {
        assert!(asks_for_metadata_partition(&ask(&[(METADATA_TOPIC, &[0])])));
        assert!(!asks_for_metadata_partition(&ask(&[(
            METADATA_TOPIC,
            &[0, 0]
        )])));
        assert!(!asks_for_metadata_partition(&ask(&[])));
        assert!(!asks_for_metadata_partition(&ask(&[
            (METADATA_TOPIC, &[0]),
            (METADATA_TOPIC, &[0])
        ])));
    }

    #[test]
    fn no_reachable_leader_is_retriable_not_leader_or_follower() {
        let request = ask(&[(METADATA_TOPIC, &[0])]);
        for view in [
            Err(QuorumError::NotAvailable("no leader".to_owned())),
            Ok(QuorumView::default()),
        ] {
            let response = respond(2, &request, Some(view));
            let p = &response.topics[0].partitions[0];
            assert_eq!(p.error_code, ErrorCode::NotLeaderOrFollower.code());
            assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
            assert_eq!(p.leader_id, -1);
            assert!(response.nodes.is_empty());
        }
    }

    #[test]
    fn leader_view_lists_voters_observers_and_their_log_ends() {
        let request = ask(&[(METADATA_TOPIC, &[0])]);
        let response = respond(1, &request, Some(Ok(three_voters_one_learner())));
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].topic_name, METADATA_TOPIC);
        let p = &response.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_id, p.leader_epoch, p.high_watermark),
            (0, 2, 7, 40)
        );
        let voters: Vec<(i32, i64)> = p
            .current_voters
            .iter()
            .map(|r| (r.replica_id, r.log_end_offset))
            .collect();
        assert_eq!(voters, vec![(1, 40), (2, 41), (3, 12)]);
        assert_eq!(p.observers.len(), 1);
        assert_eq!(
            (p.observers[0].replica_id, p.observers[0].log_end_offset),
            (4, 39)
        );
        // Unknown times are -1, as Kafka reports them.
        assert!(
            p.current_voters
                .iter()
                .all(|r| r.last_fetch_timestamp == -1 && r.last_caught_up_timestamp == -1)
        );
        // Nodes exist from v2 only.
        assert!(response.nodes.is_empty());
    }

    #[test]
    fn v2_lists_each_voters_controller_listener() {
        let request = ask(&[(METADATA_TOPIC, &[0])]);
        let response = respond(2, &request, Some(Ok(three_voters_one_learner())));
        let ctl = |node_id, host: &str, port| DescribeQuorumNode {
            node_id,
            listeners: vec![DescribeQuorumListener {
                name: CONTROLLER_LISTENER.to_owned(),
                host: host.to_owned(),
                port,
            }],
        };
        assert_eq!(
            response.nodes,
            vec![
                ctl(1, "127.0.0.1", 9101),
                ctl(2, "::1", 9102),
                ctl(3, "ctl-3.example", 9103),
            ]
        );
    }

    #[test]
    fn known_fetch_and_caught_up_times_are_passed_on_unknown_ones_are_minus_one() {
        let mut view = three_voters_one_learner();
        view.voters[0].last_fetch_timestamp_ms = Some(9_750);
        view.voters[0].last_caught_up_timestamp_ms = Some(9_700);
        view.voters[1].last_caught_up_timestamp_ms = Some(10_000);
        let request = ask(&[(METADATA_TOPIC, &[0])]);
        let response = respond(1, &request, Some(Ok(view)));
        let p = &response.topics[0].partitions[0];
        let times = |i: usize| {
            (
                p.current_voters[i].last_fetch_timestamp,
                p.current_voters[i].last_caught_up_timestamp,
            )
        };
        assert_eq!(times(0), (9_750, 9_700));
        assert_eq!(times(1), (-1, 10_000));
        assert_eq!(times(2), (-1, -1));
    }

    #[test]
    fn unparsable_controller_address_gives_no_listener() {
        assert_eq!(split_host_port("no-port"), None);
        assert_eq!(split_host_port(":9000"), None);
        assert_eq!(split_host_port("h:99999"), None);
        assert_eq!(split_host_port("127.0.0.1:0"), None);
        assert_eq!(split_host_port("h:9000"), Some(("h".to_owned(), 9000)));
    }
}
