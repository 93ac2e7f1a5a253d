//! Request frames captured from real clients (Debian's kcat with librdkafka
//! 2.0.2, and kafka-python) by `tests/golden/capture.py`, and kafka-python
//! 3's admin requests for the Kafka 4.1 APIs by `tests/golden/capture_admin.py`.
//! Each must decode completely (header and body) and re-encode to the
//! identical bytes: every captured request uses a canonical encoding (no
//! unknown tagged fields).

use bytes::{Bytes, BytesMut};
use weir_protocol::api::RequestBody;
use weir_protocol::header::RequestHeader;

fn golden_frames() -> Vec<(String, Bytes)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (
                name,
                Bytes::from(std::fs::read(&p).expect("read golden frame")),
            )
        })
        .collect();
    out.sort();
    out
}

fn decode(frame: &Bytes) -> (RequestHeader, RequestBody) {
    let mut cursor = frame.clone();
    let header = RequestHeader::decode(&mut cursor).expect("header decodes");
    assert!(
        header.is_supported(),
        "api {} v{} unsupported",
        header.api_key,
        header.api_version
    );
    let body = header.decode_body(&mut cursor).expect("body decodes");
    assert!(cursor.is_empty(), "{} trailing bytes", cursor.len());
    (header, body)
}

#[test]
fn captured_client_requests_decode_and_reencode_identically() {
    let frames = golden_frames();
    assert!(
        frames.len() >= 6,
        "expected captured frames, found {}",
        frames.len()
    );
    for (name, frame) in frames {
        let (header, body) = decode(&frame);
        let mut again = BytesMut::new();
        header.encode(&mut again).unwrap();
        body.encode(header.api_version, &mut again).unwrap();
        assert_eq!(
            again.len(),
            header.encoded_len() + body.encoded_len(header.api_version),
            "{name}"
        );
        assert_eq!(&again[..], &frame[..], "{name} re-encodes differently");
    }
}

#[test]
fn kcat_api_versions_v3_carries_client_software_name() {
    let frame = golden_frames()
        .into_iter()
        .find(|(n, _)| n == "kcat_api_versions_v3.bin")
        .expect("captured")
        .1;
    let (header, body) = decode(&frame);
    assert_eq!(header.client_id.as_deref(), Some("kcat-golden"));
    let RequestBody::ApiVersions(req) = body else {
        panic!("not ApiVersions")
    };
    assert_eq!(req.client_software_name, "librdkafka");
}

#[test]
fn captured_produce_requests_carry_record_batch_v2() {
    for (name, frame) in golden_frames()
        .into_iter()
        .filter(|(n, _)| n.contains("produce"))
    {
        let (_, body) = decode(&frame);
        let RequestBody::Produce(req) = body else {
            panic!("{name}: not Produce")
        };
        let records = req.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .expect("records present");
        // Record batch v2: magic byte at offset 16.
        assert_eq!(records.get(16), Some(&2), "{name}: magic");
        assert_eq!(req.topic_data[0].name, "golden", "{name}");
    }
}

#[test]
fn kafka_python_admin_requests_for_the_4_1_apis_carry_what_was_asked() {
    let frame = |name: &str| {
        golden_frames()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} captured"))
            .1
    };
    let (_, body) = decode(&frame("kafka_python_describe_topic_partitions_v0.bin"));
    let RequestBody::DescribeTopicPartitions(req) = body else {
        panic!("not DescribeTopicPartitions")
    };
    assert_eq!(req.topics[0].name, "golden");
    assert_eq!(req.response_partition_limit, 1);
    let cursor = req.cursor.expect("cursor");
    assert_eq!(
        (cursor.topic_name.as_str(), cursor.partition_index),
        ("golden", 1)
    );

    let (_, body) = decode(&frame("kafka_python_list_config_resources_v1.bin"));
    let RequestBody::ListConfigResources(req) = body else {
        panic!("not ListConfigResources")
    };
    assert_eq!(req.resource_types, vec![2, 4], "TOPIC and BROKER");

    let (_, body) = decode(&frame("kafka_python_alter_partition_reassignments_v1.bin"));
    let RequestBody::AlterPartitionReassignments(req) = body else {
        panic!("not AlterPartitionReassignments")
    };
    let replicas: Vec<_> = req.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.replicas.clone()))
        .collect();
    assert_eq!(replicas, vec![(0, Some(vec![1])), (1, None)]);
}
