//! Version rules the generated code must follow, checked on exact bytes.

use bytes::{Bytes, BytesMut};
use weir_protocol::codec::{Decode, DecodeError, Encode, EncodeError, Message};
use weir_protocol::messages::api_versions::{ApiVersion, ApiVersionsResponse};
use weir_protocol::messages::fetch::{FetchRequest, FetchTopic};
use weir_protocol::messages::metadata::{MetadataRequest, MetadataRequestTopic};
use weir_protocol::messages::produce::ProduceRequest;

fn encode<T: Encode>(value: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    value.encode(&mut buf, version).expect("encode");
    assert_eq!(buf.len(), value.encoded_len(version));
    buf.freeze()
}

#[test]
fn api_versions_response_omits_tagged_fields_holding_defaults() {
    // Debian's kcat (librdkafka 2.0.2) mis-parses ApiVersions responses that
    // carry tagged fields, so defaults must leave the sections empty.
    let resp = ApiVersionsResponse {
        error_code: 0,
        api_keys: vec![ApiVersion {
            api_key: 18,
            min_version: 0,
            max_version: 4,
        }],
        throttle_time_ms: 0,
        ..Default::default()
    };
    assert_eq!(resp.finalized_features_epoch, -1, "schema default honoured");
    let wire = encode(&resp, 3);
    assert_eq!(&wire[..], &[0, 0, 2, 0, 18, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn tagged_field_with_non_default_value_is_written_and_read_back() {
    let resp = ApiVersionsResponse {
        finalized_features_epoch: 5,
        ..Default::default()
    };
    let wire = encode(&resp, 3);
    // error_code, empty compact array, throttle, then 1 tag: tag 1, size 8, value.
    assert_eq!(&wire[..9], &[0, 0, 1, 0, 0, 0, 0, 1, 1]);
    let back = ApiVersionsResponse::decode(&mut wire.clone(), 3).unwrap();
    assert_eq!(back, resp);
    // Not flexible at v2: the tagged field is not on the wire at all.
    let v2 = encode(&resp, 2);
    assert_eq!(
        ApiVersionsResponse::decode(&mut v2.clone(), 2)
            .unwrap()
            .finalized_features_epoch,
        -1
    );
}

#[test]
fn unknown_tagged_fields_are_skipped() {
    // ApiVersions v3 response with an unknown tag 9 holding 3 bytes.
    let wire = Bytes::from_static(&[0, 0, 1, 0, 0, 0, 0, 1, 9, 3, 1, 2, 3]);
    let back = ApiVersionsResponse::decode(&mut wire.clone(), 3).unwrap();
    assert_eq!(back, ApiVersionsResponse::default());
}

#[test]
fn null_in_a_version_where_the_field_is_not_nullable_is_an_encode_error() {
    let req = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: None,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        req.encode(&mut buf, 9),
        Err(EncodeError::NullNotAllowed {
            field: "name",
            version: 9
        })
    ));
    encode(&req, 10);
}

#[test]
fn fields_absent_in_a_version_are_skipped_and_default_on_decode() {
    let req = FetchRequest {
        topics: vec![FetchTopic {
            topic: "t".into(),
            topic_id: [7; 16],
            partitions: vec![],
        }],
        ..Default::default()
    };
    let back = FetchRequest::decode(&mut encode(&req, 4), 4).unwrap();
    assert_eq!(back.topics[0].topic, "t");
    assert_eq!(back.topics[0].topic_id, [0; 16]);
    let back = FetchRequest::decode(&mut encode(&req, 13), 13).unwrap();
    assert_eq!(back.topics[0].topic, "");
    assert_eq!(back.topics[0].topic_id, [7; 16]);
    assert_eq!(back.max_bytes, 0x7fff_ffff, "default honoured");
}

#[test]
fn versions_outside_the_served_range_are_rejected() {
    assert_eq!(ProduceRequest::MIN_VERSION, 3);
    let err = ProduceRequest::decode(&mut Bytes::from_static(&[0; 32]), 2).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            api_key: 0,
            version: 2
        }
    );
    let mut buf = BytesMut::new();
    let err = ProduceRequest::default()
        .encode(&mut buf, ProduceRequest::MAX_VERSION + 1)
        .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::UnsupportedVersion { api_key: 0, .. }
    ));
}
