//! Codec throughput: encode and decode of a ~1 MiB Produce request spread over
//! several partitions, and of a Fetch response of the same size. Record bytes
//! are opaque to the codec, so these measure framing overhead plus the
//! zero-copy slicing, not record parsing.

use bytes::{Bytes, BytesMut};
use divan::counter::BytesCount;
use weir_protocol::codec::{Decode, Encode};
use weir_protocol::messages::fetch::{FetchResponse, FetchableTopicResponse, PartitionData};
use weir_protocol::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};

const PARTITIONS: usize = 8;
const RECORDS_BYTES_TOTAL: usize = 1 << 20;
const PRODUCE_VERSION: i16 = 12;
const FETCH_VERSION: i16 = 17;

fn main() {
    divan::main();
}

fn records_chunk(seed: u8) -> Bytes {
    Bytes::from(vec![seed; RECORDS_BYTES_TOTAL / PARTITIONS])
}

fn produce_request() -> ProduceRequest {
    ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench".into(),
            topic_id: [0; 16],
            partition_data: (0..PARTITIONS)
                .map(|p| PartitionProduceData {
                    index: p as i32,
                    records: Some(records_chunk(p as u8)),
                })
                .collect(),
        }],
    }
}

fn fetch_response() -> FetchResponse {
    FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic_id: [1; 16],
            partitions: (0..PARTITIONS)
                .map(|p| PartitionData {
                    partition_index: p as i32,
                    high_watermark: 1_000_000,
                    records: Some(records_chunk(p as u8)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn encoded<T: Encode>(value: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(value.encoded_len(version));
    value.encode(&mut buf, version).expect("encode");
    buf.freeze()
}

#[divan::bench]
fn produce_request_encode(bencher: divan::Bencher) {
    let req = produce_request();
    bencher
        .counter(BytesCount::new(req.encoded_len(PRODUCE_VERSION)))
        .bench(|| encoded(divan::black_box(&req), PRODUCE_VERSION));
}

#[divan::bench]
fn produce_request_decode(bencher: divan::Bencher) {
    let wire = encoded(&produce_request(), PRODUCE_VERSION);
    bencher.counter(BytesCount::new(wire.len())).bench(|| {
        let mut cursor = divan::black_box(wire.clone());
        ProduceRequest::decode(&mut cursor, PRODUCE_VERSION).expect("decode")
    });
}

#[divan::bench]
fn fetch_response_encode(bencher: divan::Bencher) {
    let resp = fetch_response();
    bencher
        .counter(BytesCount::new(resp.encoded_len(FETCH_VERSION)))
        .bench(|| encoded(divan::black_box(&resp), FETCH_VERSION));
}

#[divan::bench]
fn fetch_response_decode(bencher: divan::Bencher) {
    let wire = encoded(&fetch_response(), FETCH_VERSION);
    bencher.counter(BytesCount::new(wire.len())).bench(|| {
        let mut cursor = divan::black_box(wire.clone());
        FetchResponse::decode(&mut cursor, FETCH_VERSION).expect("decode")
    });
}
