//! The API table: which Kafka APIs and versions Weir serves, which header
//! version each request and response uses, and the dispatch enums that decode
//! a request body (or encode a response body) given only its api key.
//!
//! `ApiKey`, `SUPPORTED_APIS`, `RequestBody` and `ResponseBody` are generated
//! from `schemas/*.wire` by `build.rs`, so an API added as a schema file is
//! picked up here without editing this file.

use bytes::{Bytes, BytesMut};

use crate::codec::{self, Decode, DecodeError, Encode, EncodeError};
use crate::messages;

include!(concat!(env!("OUT_DIR"), "/api_table.rs"));

/// Api key of ApiVersions, whose responses always use header v0 so that a
/// client can parse the reply before it knows what the broker supports.
pub const API_VERSIONS_KEY: i16 = 18;

/// Whether `version` of `api_key` is one this crate decodes.
pub fn is_supported(api_key: i16, version: i16) -> bool {
    ApiKey::from_i16(api_key).is_some_and(|k| {
        let (min, max) = k.versions();
        version >= min && version <= max
    })
}

/// Request header version for a request: v2 for flexible versions, else v1.
/// An unknown api key gets v1. Versions beyond the supported range keep the
/// flexibility of the nearest supported one (Kafka never un-flexes an API).
pub fn request_header_version(api_key: i16, version: i16) -> i16 {
    match ApiKey::from_i16(api_key) {
        Some(k) if version >= k.request_flexible_min_version() => 2,
        _ => 1,
    }
}

/// Response header version: ApiVersions always v0; flexible responses v1, else v0.
pub fn response_header_version(api_key: i16, version: i16) -> i16 {
    if api_key == API_VERSIONS_KEY {
        return 0;
    }
    match ApiKey::from_i16(api_key) {
        Some(k) if version >= k.response_flexible_min_version() => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_response_header_is_always_v0() {
        assert_eq!(response_header_version(API_VERSIONS_KEY, 3), 0);
        assert_eq!(request_header_version(API_VERSIONS_KEY, 3), 2);
        assert_eq!(request_header_version(API_VERSIONS_KEY, 2), 1);
    }

    #[test]
    fn supported_apis_is_sorted_and_matches_api_key() {
        for w in SUPPORTED_APIS.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
        for &(key, min, max) in SUPPORTED_APIS {
            let k = ApiKey::from_i16(key).expect("known key");
            assert_eq!(k.versions(), (min, max));
            assert_eq!(k.as_i16(), key);
        }
        assert!(ApiKey::from_i16(-1).is_none());
    }
}
