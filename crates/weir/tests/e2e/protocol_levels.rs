//! Kafka 4.1's API level, spoken with raw weir-protocol requests where no
//! client library exposes the wire detail: topic ids in Metadata and Produce,
//! Fetch v18, DescribeTopicPartitions paging, the single-node answers of the
//! replica-placement APIs, ListConfigResources, and what happens to requests
//! below the version floor.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use weir_protocol::api::{self, ApiKey};
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::compression::Compression;
use weir_protocol::header::{RequestHeader, ResponseHeader};
use weir_protocol::messages::alter_partition_reassignments::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ReassignablePartition,
    ReassignableTopic,
};
use weir_protocol::messages::alter_replica_log_dirs::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic, AlterReplicaLogDirsRequest,
    AlterReplicaLogDirsResponse,
};
use weir_protocol::messages::describe_topic_partitions::{
    Cursor, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicRequest,
};
use weir_protocol::messages::elect_leaders::{
    ElectLeadersRequest, ElectLeadersResponse, TopicPartitions,
};
use weir_protocol::messages::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use weir_protocol::messages::list_config_resources::{
    ListConfigResourcesRequest, ListConfigResourcesResponse,
};
use weir_protocol::messages::list_partition_reassignments::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use weir_protocol::messages::metadata::{MetadataRequest, MetadataRequestTopic, MetadataResponse};
use weir_protocol::messages::produce::{
    PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
};
use weir_protocol::record::{Record, RecordBatchBuilder};

use super::harness::{Broker, create_topic};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const REPLICA_NOT_AVAILABLE: i16 = 9;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REQUEST: i16 = 42;
const LOG_DIR_NOT_FOUND: i16 = 57;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const UNKNOWN_TOPIC_ID: i16 = 100;
/// The harness starts brokers with the default node id.
const NODE_ID: i32 = 1;

/// One raw connection speaking weir-protocol messages.
struct Raw {
    stream: TcpStream,
    correlation_id: i32,
}

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            correlation_id: 0,
        }
    }

    fn send<Req: Encode>(&mut self, key: ApiKey, version: i16, request: &Req) {
        let mut body = BytesMut::new();
        request.encode(&mut body, version).expect("body");
        self.send_raw(key, version, &body);
    }

    /// A request whose body is given as bytes (for versions our encoder
    /// doesn't know).
    fn send_raw(&mut self, key: ApiKey, version: i16, body: &[u8]) {
        self.correlation_id += 1;
        let header = RequestHeader {
            api_key: key as i16,
            api_version: version,
            correlation_id: self.correlation_id,
            client_id: Some("weir-e2e-levels".into()),
        };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf).expect("header");
        buf.extend_from_slice(body);
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).expect("write");
    }

    /// The response body, or None if the broker closed the connection.
    /// Panics if it does neither within the read timeout.
    fn receive<Resp: Decode>(&mut self, key: ApiKey, version: i16) -> Option<Resp> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{key:?} v{version}: broker neither answered nor closed the connection")
            }
            Err(_) => return None,
        }
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        let mut frame = Bytes::from(frame);
        let header_version = api::response_header_version(key as i16, version);
        let header = ResponseHeader::decode(&mut frame, header_version).expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = Resp::decode(&mut frame, version).expect("response body");
        assert!(frame.is_empty(), "{} bytes after the response", frame.len());
        Some(response)
    }

    fn call<Req: Encode, Resp: Decode>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.send(key, version, request);
        self.receive(key, version)
            .unwrap_or_else(|| panic!("{key:?} v{version}: connection closed"))
    }
}

fn topic_id(raw: &mut Raw, name: &str) -> [u8; 16] {
    let response: MetadataResponse = raw.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some(name.into()),
                ..Default::default()
            }]),
            allow_auto_topic_creation: false,
            ..Default::default()
        },
    );
    let topic = &response.topics[0];
    assert_eq!(topic.error_code, 0, "{name}");
    assert_ne!(topic.topic_id, [0; 16]);
    topic.topic_id
}

fn metadata_by_id(id: [u8; 16]) -> MetadataRequest {
    MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            topic_id: id,
            name: None,
        }]),
        allow_auto_topic_creation: false,
        ..Default::default()
    }
}

#[test]
fn metadata_naming_a_topic_by_id_is_always_answered() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "by-id", 2, &[]);
    let mut raw = Raw::connect(&broker);
    let id = topic_id(&mut raw, "by-id");

    // v12 and v13 resolve the id to the topic.
    for version in [12, 13] {
        let response: MetadataResponse = raw.call(ApiKey::Metadata, version, &metadata_by_id(id));
        let topic = &response.topics[0];
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.name.as_deref(), Some("by-id"));
        assert_eq!(topic.topic_id, id);
        assert_eq!(topic.partitions.len(), 2);
    }
    // An unknown id is UNKNOWN_TOPIC_ID with the id echoed and no name.
    let unknown = [7u8; 16];
    let response: MetadataResponse = raw.call(ApiKey::Metadata, 12, &metadata_by_id(unknown));
    let topic = &response.topics[0];
    assert_eq!(topic.error_code, UNKNOWN_TOPIC_ID);
    assert_eq!(topic.topic_id, unknown);
    assert_eq!(topic.name, None);

    // v10 and v11 carry ids but can't answer by id (their responses have no
    // null name): Kafka refuses with INVALID_REQUEST, and so must Weir,
    // instead of leaving the request unanswered.
    // (An unknown id there used to leave the request unanswered.)
    for version in [10, 11] {
        for asked in [id, unknown] {
            let response: MetadataResponse =
                raw.call(ApiKey::Metadata, version, &metadata_by_id(asked));
            let topic = &response.topics[0];
            assert_eq!(topic.error_code, INVALID_REQUEST, "v{version}");
            assert_eq!(topic.name.as_deref(), Some(""));
            assert_eq!(topic.topic_id, asked);
        }
    }
    // The connection is still in step afterwards.
    assert_eq!(topic_id(&mut raw, "by-id"), id);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn one_record_batch(value: &[u8]) -> Bytes {
    RecordBatchBuilder::new(Compression::None)
        .base_timestamp(now_ms())
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Vec::new(),
        })
        .build()
        .expect("batch")
}

fn produce_by_id(id: [u8; 16], value: &[u8]) -> ProduceRequest {
    ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![TopicProduceData {
            topic_id: id,
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(one_record_batch(value)),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn produce_v13_by_topic_id_and_fetch_v18_read_it_back() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "p13", 1, &[]);
    let mut raw = Raw::connect(&broker);
    let id = topic_id(&mut raw, "p13");

    let response: ProduceResponse = raw.call(ApiKey::Produce, 13, &produce_by_id(id, b"hello"));
    let topic = &response.responses[0];
    assert_eq!(topic.topic_id, id, "the response names the topic by id");
    assert_eq!(topic.partition_responses[0].error_code, 0);
    assert_eq!(topic.partition_responses[0].base_offset, 0);

    let response: ProduceResponse = raw.call(ApiKey::Produce, 13, &produce_by_id([9; 16], b"lost"));
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        UNKNOWN_TOPIC_ID
    );
    let mut no_such_partition = produce_by_id(id, b"lost");
    no_such_partition.topic_data[0].partition_data[0].index = 5;
    let response: ProduceResponse = raw.call(ApiKey::Produce, 13, &no_such_partition);
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    let fetch = FetchRequest {
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            topic_id: id,
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let response: FetchResponse = raw.call(ApiKey::Fetch, 18, &fetch);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 1);
    let records = partition.records.clone().expect("records");
    assert!(
        records.windows(5).any(|w| w == b"hello"),
        "the record produced by id comes back"
    );
}

fn describe(
    raw: &mut Raw,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    raw.call(
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest {
            topics: topics
                .iter()
                .map(|t| TopicRequest {
                    name: t.to_string(),
                })
                .collect(),
            response_partition_limit: limit,
            cursor: cursor.map(|(t, p)| Cursor {
                topic_name: t.into(),
                partition_index: p,
            }),
        },
    )
}

/// (topic, error, partition indexes) of each topic in a page, and the cursor.
type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

fn page(response: &DescribeTopicPartitionsResponse) -> Page {
    (
        response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.clone().unwrap_or_default(),
                    t.error_code,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect(),
        response
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.clone(), c.partition_index)),
    )
}

#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "dtp-a", 3, &[]);
    create_topic(&broker, "dtp-b", 2, &[]);
    let mut raw = Raw::connect(&broker);
    let names = ["dtp-zz", "dtp-b", "dtp-a"]; // answered in name order
    let s = |x: &str| x.to_string();

    let first = describe(&mut raw, &names, 2, None);
    assert_eq!(
        page(&first),
        (vec![(s("dtp-a"), 0, vec![0, 1])], Some((s("dtp-a"), 2)))
    );
    let topic = &first.topics[0];
    assert_eq!(topic.partitions[1].leader_id, NODE_ID);
    assert_eq!(topic.partitions[1].replica_nodes, vec![NODE_ID]);
    assert_ne!(topic.topic_id, [0; 16]);

    let second = describe(&mut raw, &names, 2, Some(("dtp-a", 2)));
    assert_eq!(
        page(&second),
        (
            vec![(s("dtp-a"), 0, vec![2]), (s("dtp-b"), 0, vec![0])],
            Some((s("dtp-b"), 1))
        )
    );
    let third = describe(&mut raw, &names, 2, Some(("dtp-b", 1)));
    assert_eq!(
        page(&third),
        (
            vec![
                (s("dtp-b"), 0, vec![1]),
                (s("dtp-zz"), UNKNOWN_TOPIC_OR_PARTITION, vec![])
            ],
            None
        )
    );
    // A page that ends exactly at a topic's end points at the next topic.
    let exact = describe(&mut raw, &["dtp-a", "dtp-b"], 3, None);
    assert_eq!(
        page(&exact),
        (vec![(s("dtp-a"), 0, vec![0, 1, 2])], Some((s("dtp-b"), 0)))
    );
    // A cursor naming a topic outside the list is an invalid request.
    let bad = describe(&mut raw, &["dtp-a"], 2, Some(("dtp-b", 0)));
    assert_eq!(
        page(&bad),
        (vec![(s("dtp-a"), INVALID_REQUEST, vec![])], None)
    );
    // An empty list describes every topic.
    let all = describe(&mut raw, &[], 100, None);
    let listed: Vec<String> = all.topics.iter().filter_map(|t| t.name.clone()).collect();
    assert!(listed.contains(&s("dtp-a")) && listed.contains(&s("dtp-b")));
    assert!(all.next_cursor.is_none());
}

#[test]
fn replica_placement_apis_give_single_node_answers() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "place", 1, &[]);
    let mut raw = Raw::connect(&broker);

    // ElectLeaders: the only replica already leads.
    let response: ElectLeadersResponse = raw.call(
        ApiKey::ElectLeaders,
        2,
        &ElectLeadersRequest {
            election_type: 0,
            topic_partitions: Some(vec![
                TopicPartitions {
                    topic: "place".into(),
                    partitions: vec![0, 7],
                },
                TopicPartitions {
                    topic: "nowhere".into(),
                    partitions: vec![0],
                },
            ]),
            timeout_ms: 10_000,
        },
    );
    assert_eq!(response.error_code, 0);
    let codes: Vec<(String, i32, i16)> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.clone(), p.partition_id, p.error_code))
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("place".into(), 0, ELECTION_NOT_NEEDED),
            ("place".into(), 7, UNKNOWN_TOPIC_OR_PARTITION),
            ("nowhere".into(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    let bad_type: ElectLeadersResponse = raw.call(
        ApiKey::ElectLeaders,
        1,
        &ElectLeadersRequest {
            election_type: 9,
            topic_partitions: Some(vec![TopicPartitions {
                topic: "place".into(),
                partitions: vec![0],
            }]),
            timeout_ms: 10_000,
        },
    );
    assert_eq!(bad_type.error_code, INVALID_REQUEST);

    // AlterPartitionReassignments: only this node can hold a replica.
    let reassign = |replicas: Option<Vec<i32>>| AlterPartitionReassignmentsRequest {
        timeout_ms: 10_000,
        allow_replication_factor_change: false,
        topics: vec![ReassignableTopic {
            name: "place".into(),
            partitions: vec![ReassignablePartition {
                partition_index: 0,
                replicas,
            }],
        }],
    };
    for (replicas, expected) in [
        (Some(vec![NODE_ID]), 0),
        (Some(vec![NODE_ID, 2]), INVALID_REPLICA_ASSIGNMENT),
        (Some(vec![2]), INVALID_REPLICA_ASSIGNMENT),
        (Some(vec![]), INVALID_REPLICA_ASSIGNMENT),
        (None, NO_REASSIGNMENT_IN_PROGRESS),
    ] {
        let response: AlterPartitionReassignmentsResponse = raw.call(
            ApiKey::AlterPartitionReassignments,
            1,
            &reassign(replicas.clone()),
        );
        assert_eq!(response.error_code, 0);
        assert!(!response.allow_replication_factor_change);
        assert_eq!(
            response.responses[0].partitions[0].error_code, expected,
            "{replicas:?}"
        );
    }
    let listed: ListPartitionReassignmentsResponse = raw.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest {
            timeout_ms: 10_000,
            topics: None,
        },
    );
    assert_eq!(listed.error_code, 0);
    assert!(listed.topics.is_empty(), "nothing is ever being reassigned");

    // AlterReplicaLogDirs: the data directory is the only log dir.
    let data_dir = std::fs::canonicalize(&broker.data_dir).unwrap();
    let move_to = |path: &str| AlterReplicaLogDirsRequest {
        dirs: vec![AlterReplicaLogDir {
            path: path.into(),
            topics: vec![AlterReplicaLogDirTopic {
                name: "place".into(),
                partitions: vec![0, 5],
            }],
        }],
    };
    let response: AlterReplicaLogDirsResponse = raw.call(
        ApiKey::AlterReplicaLogDirs,
        2,
        &move_to(&data_dir.display().to_string()),
    );
    let codes: Vec<i16> = response.results[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, REPLICA_NOT_AVAILABLE]);
    let response: AlterReplicaLogDirsResponse =
        raw.call(ApiKey::AlterReplicaLogDirs, 1, &move_to("/no/such/dir"));
    assert!(
        response.results[0]
            .partitions
            .iter()
            .all(|p| p.error_code == LOG_DIR_NOT_FOUND)
    );
}

#[test]
fn list_config_resources_lists_requested_types() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "cfg-listed", 1, &[]);
    let mut raw = Raw::connect(&broker);
    let list = |raw: &mut Raw, version: i16, types: Vec<i8>| -> ListConfigResourcesResponse {
        raw.call(
            ApiKey::ListConfigResources,
            version,
            &ListConfigResourcesRequest {
                resource_types: types,
            },
        )
    };
    let topics = list(&mut raw, 1, vec![2]);
    assert_eq!(topics.error_code, 0);
    assert!(
        topics
            .config_resources
            .iter()
            .any(|r| r.resource_name == "cfg-listed" && r.resource_type == 2)
    );
    assert!(topics.config_resources.iter().all(|r| r.resource_type == 2));
    let every = list(&mut raw, 1, vec![]);
    assert!(
        every
            .config_resources
            .iter()
            .any(|r| r.resource_type == 4 && r.resource_name == NODE_ID.to_string())
    );
    assert!(every.config_resources.iter().any(|r| r.resource_type == 2));
    assert_eq!(list(&mut raw, 1, vec![99]).error_code, UNSUPPORTED_VERSION);
    // v0 lists client-metrics resources only, and Weir has none.
    let v0 = list(&mut raw, 0, vec![]);
    assert_eq!(v0.error_code, 0);
    assert!(v0.config_resources.is_empty());
}

fn without_ansi_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn requests_below_the_version_floor_close_the_connection_and_are_logged() {
    let broker = Broker::start(&[]);
    let floor_warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("version not supported"))
            .filter(|l| l.contains("Produce") && l.contains("version=2"))
            .count()
    };
    // Produce v2 (old Sarama and kafka-go defaults): Weir serves v3 and up.
    for _ in 0..2 {
        let mut raw = Raw::connect(&broker);
        // acks 1, timeout 1000 ms, no topics
        raw.send_raw(ApiKey::Produce, 2, &[0, 1, 0, 0, 0x03, 0xe8, 0, 0, 0, 0]);
        let answer: Option<ProduceResponse> = raw.receive(ApiKey::Produce, 2);
        assert!(answer.is_none(), "the connection closes");
    }
    // An api key nobody has defined.
    let mut unknown = Raw::connect(&broker);
    // Size 10: api key 999, version 0, correlation id 1, null client id.
    let frame = [0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    unknown.stream.write_all(&frame).unwrap();
    let gone: Option<ProduceResponse> = unknown.receive(ApiKey::Produce, 3);
    assert!(gone.is_none());

    // The log is written asynchronously; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = without_ansi_colours(&broker.log());
        if (floor_warnings(&log) >= 1 && log.contains("api_key=999"))
            || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        floor_warnings(&log),
        1,
        "one warning for Produce v2 (rate-limited); log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("version not supported"))
        .unwrap();
    assert!(
        line.contains("weir-e2e-levels"),
        "names the client id: {line}"
    );
    assert!(line.contains("127.0.0.1"), "names the peer: {line}");
    assert!(line.contains("3-13"), "names the supported range: {line}");
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("api not supported")
            && l.contains("api_key=999")),
        "unknown api logged; log:\n{log}"
    );
}
