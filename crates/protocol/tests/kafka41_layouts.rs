//! The wire layouts that Kafka 4.1's message specs add, written out byte by
//! byte from the specs (not produced by our encoder), so that a schema typo
//! that round-trips with itself is still caught.

use bytes::{Bytes, BytesMut};
use weir_protocol::api::{ApiKey, SUPPORTED_APIS};
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::messages::alter_replica_log_dirs::AlterReplicaLogDirsRequest;
use weir_protocol::messages::describe_topic_partitions::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use weir_protocol::messages::fetch::FetchRequest;
use weir_protocol::messages::list_config_resources::{
    ConfigResource, ListConfigResourcesRequest, ListConfigResourcesResponse,
};
use weir_protocol::messages::produce::{ProduceRequest, ProduceResponse};

fn encode<T: Encode>(value: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    value.encode(&mut buf, version).expect("encode");
    assert_eq!(buf.len(), value.encoded_len(version));
    buf.freeze()
}

fn decode_all<T: Decode>(wire: &[u8], version: i16) -> T {
    let mut bytes = Bytes::copy_from_slice(wire);
    let value = T::decode(&mut bytes, version).expect("decode");
    assert!(bytes.is_empty(), "{} bytes left over", bytes.len());
    value
}

const ID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

#[test]
fn kafka_4_1_maxima_are_served() {
    // Kafka 4.1's maxima for the APIs this change raised or added.
    let expected = [
        (ApiKey::Produce, 13),
        (ApiKey::Fetch, 18),
        (ApiKey::AlterReplicaLogDirs, 2),
        (ApiKey::ElectLeaders, 2),
        (ApiKey::AlterPartitionReassignments, 1),
        (ApiKey::ListPartitionReassignments, 0),
        (ApiKey::ListConfigResources, 1),
        (ApiKey::DescribeTopicPartitions, 0),
        (ApiKey::DescribeQuorum, 2),
    ];
    for (key, max) in expected {
        let served = SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .map(|&(_, _, max)| max);
        assert_eq!(served, Some(max), "{key:?}");
    }
}

#[test]
fn produce_v13_names_the_topic_by_id_not_by_name() {
    let wire: Vec<u8> = [
        &[0][..],            // transactional_id: null compact string
        &[0xff, 0xff],       // acks -1
        &[0, 0, 0x75, 0x30], // timeout_ms 30000
        &[2],                // 1 topic
        &ID,                 // topic_id (no name at v13)
        &[2],                // 1 partition
        &[0, 0, 0, 3],       // index 3
        &[4, 9, 9, 9],       // records: 3 bytes
        &[0],                // partition tags
        &[0],                // topic tags
        &[0],                // request tags
    ]
    .concat();
    let request: ProduceRequest = decode_all(&wire, 13);
    let topic = &request.topic_data[0];
    assert_eq!(topic.topic_id, ID);
    assert_eq!(topic.name, "", "no name on the wire at v13");
    assert_eq!(topic.partition_data[0].index, 3);
    assert_eq!(&encode(&request, 13)[..], &wire[..]);
    // v12 still carries the name and no id.
    let mut v12 = request.clone();
    v12.topic_data[0].name = "t".into();
    let back: ProduceRequest = decode_all(&encode(&v12, 12), 12);
    assert_eq!(back.topic_data[0].name, "t");
    assert_eq!(back.topic_data[0].topic_id, [0; 16]);
}

#[test]
fn produce_v13_response_echoes_the_topic_id() {
    let response = ProduceResponse {
        responses: vec![weir_protocol::messages::produce::TopicProduceResponse {
            name: "ignored at v13".into(),
            topic_id: ID,
            ..Default::default()
        }],
        ..Default::default()
    };
    let wire = encode(&response, 13);
    // 1 topic, then the 16-byte id straight away.
    assert_eq!(wire[0], 2);
    assert_eq!(&wire[1..17], &ID);
}

#[test]
fn fetch_v18_carries_a_followers_high_watermark_in_tag_1() {
    // From v15 there is no replica_id field; the cluster id and replica
    // state are top-level tags, absent here.
    let body: Vec<u8> = [
        &[0, 0, 1, 0xf4][..],       // max_wait_ms 500
        &[0, 0, 0, 1],              // min_bytes 1
        &[0, 0x10, 0, 0],           // max_bytes
        &[0],                       // isolation_level
        &[0, 0, 0, 0],              // session_id
        &[0xff, 0xff, 0xff, 0xff],  // session_epoch -1
        &[2],                       // 1 topic
        &ID,                        // topic_id
        &[2],                       // 1 partition
        &[0, 0, 0, 0],              // partition 0
        &[0xff, 0xff, 0xff, 0xff],  // current_leader_epoch
        &[0, 0, 0, 0, 0, 0, 0, 7],  // fetch_offset 7
        &[0xff, 0xff, 0xff, 0xff],  // last_fetched_epoch
        &[0xff; 8],                 // log_start_offset -1
        &[0, 0x10, 0, 0],           // partition_max_bytes
        &[1, 1, 8],                 // 1 tag: tag 1, 8 bytes
        &[0, 0, 0, 0, 0, 0, 0, 42], // high_watermark 42
        &[0],                       // topic tags
        &[1],                       // forgotten topics: none
        &[1],                       // rack_id ""
        &[0],                       // request tags
    ]
    .concat();
    let request: FetchRequest = decode_all(&body, 18);
    let partition = &request.topics[0].partitions[0];
    assert_eq!(partition.high_watermark, 42);
    assert_eq!(partition.fetch_offset, 7);
    assert_eq!(&encode(&request, 18)[..], &body[..]);
    // A consumer leaves it at the default, which is not written at all.
    let mut consumer = request.clone();
    consumer.topics[0].partitions[0].high_watermark = i64::MAX;
    let v18 = encode(&consumer, 18);
    assert_eq!(v18.len(), body.len() - 10);
    // v17 has no such field.
    let v17: FetchRequest = decode_all(&encode(&request, 17), 17);
    assert_eq!(v17.topics[0].partitions[0].high_watermark, i64::MAX);
}

#[test]
fn describe_topic_partitions_v0_request_with_cursor() {
    let wire: Vec<u8> = [
        &[2][..],      // 1 topic
        &[2, b'a'],    // name "a"
        &[0],          // topic tags
        &[0, 0, 0, 5], // response_partition_limit 5
        &[1],          // cursor present
        &[2, b'a'],    // cursor topic "a"
        &[0, 0, 0, 3], // cursor partition 3
        &[0],          // cursor tags
        &[0],          // request tags
    ]
    .concat();
    let request: DescribeTopicPartitionsRequest = decode_all(&wire, 0);
    assert_eq!(request.topics[0].name, "a");
    assert_eq!(request.response_partition_limit, 5);
    let cursor = request.cursor.as_ref().expect("cursor");
    assert_eq!(
        (cursor.topic_name.as_str(), cursor.partition_index),
        ("a", 3)
    );
    assert_eq!(&encode(&request, 0)[..], &wire[..]);
    // Without a cursor: the marker is -1 and the limit defaults to 2000.
    assert_eq!(
        DescribeTopicPartitionsRequest::default().response_partition_limit,
        2000
    );
    let response = DescribeTopicPartitionsResponse::default();
    // throttle, no topics, null next cursor, tags.
    assert_eq!(&encode(&response, 0)[..], &[0, 0, 0, 0, 1, 0xff, 0]);
}

#[test]
fn list_config_resources_v1_filters_by_type_and_reports_it() {
    let wire: Vec<u8> = vec![3, 2, 4, 0]; // types [2, 4], tags
    let request: ListConfigResourcesRequest = decode_all(&wire, 1);
    assert_eq!(request.resource_types, vec![2, 4]);
    // v0 has no filter: just the tag section.
    assert_eq!(&encode(&request, 0)[..], &[0]);
    let response = ListConfigResourcesResponse {
        config_resources: vec![ConfigResource {
            resource_name: "t".into(),
            resource_type: 2,
        }],
        ..Default::default()
    };
    let v1 = encode(&response, 1);
    assert_eq!(&v1[..], &[0, 0, 0, 0, 0, 0, 2, 2, b't', 2, 0, 0]);
    let v0 = encode(&response, 0);
    assert_eq!(&v0[..], &[0, 0, 0, 0, 0, 0, 2, 2, b't', 0, 0]);
    // Decoding v0 yields Kafka's default type, CLIENT_METRICS (16).
    let back: ListConfigResourcesResponse = decode_all(&v0, 0);
    assert_eq!(back.config_resources[0].resource_type, 16);
}

#[test]
fn alter_replica_log_dirs_v1_is_not_flexible() {
    let wire: Vec<u8> = [
        &[0, 0, 0, 1][..],         // 1 dir
        &[0, 2, b'/', b'd'],       // path "/d"
        &[0, 0, 0, 1],             // 1 topic
        &[0, 1, b't'],             // name "t"
        &[0, 0, 0, 1, 0, 0, 0, 0], // partitions [0]
    ]
    .concat();
    let request: AlterReplicaLogDirsRequest = decode_all(&wire, 1);
    assert_eq!(request.dirs[0].path, "/d");
    assert_eq!(request.dirs[0].topics[0].partitions, vec![0]);
    assert_eq!(&encode(&request, 1)[..], &wire[..]);
}

#[test]
fn describe_quorum_v2_response_layout_from_the_spec() {
    use weir_protocol::messages::describe_quorum::{
        DescribeQuorumListener, DescribeQuorumNode, DescribeQuorumResponse,
        DescribeQuorumResponsePartition, DescribeQuorumResponseTopic, ReplicaState,
    };
    let name = b"__cluster_metadata";
    let wire: Vec<u8> = [
        &[0, 0][..],                // error_code
        &[0],                       // error_message: null (v2+)
        &[2],                       // 1 topic
        &[19],                      // topic_name length + 1
        &name[..],                  //
        &[2],                       // 1 partition
        &[0, 0, 0, 0],              // partition_index
        &[0, 0],                    // error_code
        &[0],                       // error_message: null (v2+)
        &[0, 0, 0, 1],              // leader_id
        &[0, 0, 0, 3],              // leader_epoch
        &[0, 0, 0, 0, 0, 0, 0, 9],  // high_watermark
        &[2],                       // 1 current voter
        &[0, 0, 0, 1],              //   replica_id
        &ID,                        //   replica_directory_id (v2+)
        &[0, 0, 0, 0, 0, 0, 0, 10], //   log_end_offset
        &[0xff; 8],                 //   last_fetch_timestamp -1 (v1+)
        &[0xff; 8],                 //   last_caught_up_timestamp -1 (v1+)
        &[0],                       //   replica tags
        &[1],                       // no observers
        &[0],                       // partition tags
        &[0],                       // topic tags
        &[2],                       // 1 node (v2+)
        &[0, 0, 0, 1],              //   node_id
        &[2],                       //   1 listener
        &[11],                      //     name length + 1
        b"CONTROLLER",              //
        &[2, b'h'],                 //     host
        &[0x23, 0x85],              //     port 9093 (uint16)
        &[0],                       //     listener tags
        &[0],                       //   node tags
        &[0],                       // response tags
    ]
    .concat();
    let response: DescribeQuorumResponse = decode_all(&wire, 2);
    assert_eq!(
        response,
        DescribeQuorumResponse {
            error_code: 0,
            error_message: None,
            topics: vec![DescribeQuorumResponseTopic {
                topic_name: "__cluster_metadata".into(),
                partitions: vec![DescribeQuorumResponsePartition {
                    partition_index: 0,
                    error_code: 0,
                    error_message: None,
                    leader_id: 1,
                    leader_epoch: 3,
                    high_watermark: 9,
                    current_voters: vec![ReplicaState {
                        replica_id: 1,
                        replica_directory_id: ID,
                        log_end_offset: 10,
                        last_fetch_timestamp: -1,
                        last_caught_up_timestamp: -1,
                    }],
                    observers: Vec::new(),
                }],
            }],
            nodes: vec![DescribeQuorumNode {
                node_id: 1,
                listeners: vec![DescribeQuorumListener {
                    name: "CONTROLLER".into(),
                    host: "h".into(),
                    port: 9093,
                }],
            }],
        }
    );
    assert_eq!(&encode(&response, 2)[..], &wire[..]);
    // v0 has none of the v1/v2 fields: the replica is 12 bytes plus tags.
    let v0 = encode(&response, 0);
    let v0_back: DescribeQuorumResponse = decode_all(&v0, 0);
    assert_eq!(v0_back.nodes, Vec::new());
    assert_eq!(
        v0_back.topics[0].partitions[0].current_voters[0].replica_directory_id,
        [0; 16]
    );
    assert_eq!(
        v0_back.topics[0].partitions[0].current_voters[0].last_fetch_timestamp,
        -1
    );
    assert_eq!(
        v0.len(),
        wire.len() - 1 - 16 - 16 - 1 - (1 + 4 + 1 + 11 + 2 + 2 + 1 + 1)
    );
}
