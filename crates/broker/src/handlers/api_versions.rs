//! ApiVersions: what this broker speaks.

use bytes::{BufMut, Bytes, BytesMut};
use weir_protocol::api::{self, ApiKey};
use weir_protocol::error_code::ErrorCode;
use weir_protocol::header::RequestHeader;
use weir_protocol::messages::api_versions::{ApiVersion, ApiVersionsRequest, ApiVersionsResponse};

use super::HANDLED_APIS;

/// Produce is advertised from v0 although v0-v2 are refused, as Kafka 4 does
/// (KAFKA-18659): librdkafka before 2.11.1 enables gzip, snappy and lz4 only if
/// the broker lists Produce v0, and otherwise produces uncompressed without a
/// word (Debian's kcat, librdkafka 2.0.2, does). Clients pick the highest
/// version both sides know, so none is led to send v0-v2 by this.
const PRODUCE_ADVERTISED_MIN_VERSION: i16 = 0;

fn supported() -> Vec<ApiVersion> {
    api::SUPPORTED_APIS
        .iter()
        .filter(|(key, _, _)| ApiKey::from_i16(*key).is_some_and(|k| HANDLED_APIS.contains(&k)))
        .map(|&(key, min, max)| ApiVersion {
            api_key: key,
            min_version: if key == ApiKey::Produce as i16 {
                PRODUCE_ADVERTISED_MIN_VERSION
            } else {
                min
            },
            max_version: max,
        })
        .collect()
}

pub fn handle(_header: &RequestHeader, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: ErrorCode::None.code(),
        api_keys: supported(),
        throttle_time_ms: 0,
        ..Default::default()
    }
}

/// The reply to an ApiVersions request at a version we don't know: a v0 body
/// (whatever version was asked) with UNSUPPORTED_VERSION and our ranges, per KIP-511.
pub fn unsupported(header: &RequestHeader) -> Option<Bytes> {
    let response = ApiVersionsResponse {
        error_code: ErrorCode::UnsupportedVersion.code(),
        api_keys: supported(),
        ..Default::default()
    };
    use weir_protocol::codec::Encode;
    let mut buf = BytesMut::with_capacity(16 + response.encoded_len(0));
    buf.put_i32(0);
    buf.put_i32(header.correlation_id);
    response.encode(&mut buf, 0).ok()?;
    let size = i32::try_from(buf.len() - 4).ok()?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Some(buf.freeze())
}
