//! Produce decoding must hand out the record bytes as a slice of the input
//! frame, not a copy: the broker appends exactly those bytes to the log.

use bytes::{Bytes, BytesMut};
use weir_protocol::api::RequestBody;
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};

fn request_with_records(records_bytes: usize, version: i16) -> Bytes {
    let records = Bytes::from((0..records_bytes).map(|i| i as u8).collect::<Vec<u8>>());
    let req = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "orders".into(),
            topic_id: [0; 16],
            partition_data: vec![PartitionProduceData {
                index: 3,
                records: Some(records),
            }],
        }],
    };
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).expect("encode");
    buf.freeze()
}

fn assert_inside(outer: &Bytes, inner: &Bytes) {
    let outer_start = outer.as_ptr() as usize;
    let inner_start = inner.as_ptr() as usize;
    assert!(
        inner_start >= outer_start && inner_start + inner.len() <= outer_start + outer.len(),
        "records were copied out of the request buffer"
    );
}

#[test]
fn produce_records_are_a_slice_of_the_request_buffer() {
    for version in [3i16, 8, 9, 12] {
        let wire = request_with_records(1 << 20, version);
        let mut cursor = wire.clone();
        let req = ProduceRequest::decode(&mut cursor, version).expect("decode");
        let records = req.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .expect("records");
        assert_eq!(records.len(), 1 << 20);
        assert_inside(&wire, records);
    }
}

#[test]
fn dispatch_decode_keeps_records_zero_copy() {
    let wire = request_with_records(1 << 20, 12);
    let mut cursor = wire.clone();
    let RequestBody::Produce(req) = RequestBody::decode(0, 12, &mut cursor).expect("decode") else {
        panic!("not a produce request");
    };
    assert_inside(
        &wire,
        req.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .expect("records"),
    );
}
