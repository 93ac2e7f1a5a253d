//! Request and response types for every API Weir serves, generated at build
//! time by `build.rs` from `schemas/*.wire` (format: `schemas/FORMAT.md`).
//!
//! Each schema file becomes one module, e.g. [`produce`] holds
//! `ProduceRequest`, `ProduceResponse` and their nested structs. Every type
//! implements [`crate::codec::Encode`] and [`crate::codec::Decode`] at any
//! version of its message; the top-level request and response also implement
//! [`crate::codec::Message`].
//!
//! Why a build script rather than a committed generator output: the schemas
//! and the generator live together in this crate, so the Rust types are always
//! exactly what the schemas say, and there is no generated code in the tree to
//! drift, review or merge.

include!(concat!(env!("OUT_DIR"), "/messages.rs"));

#[cfg(test)]
mod tests {
    use crate::codec::ErrorCodes;

    #[test]
    fn error_codes_are_found_at_every_level() {
        use super::produce::*;
        let response = ProduceResponse {
            responses: vec![TopicProduceResponse {
                partition_responses: vec![
                    PartitionProduceResponse {
                        error_code: 6,
                        ..Default::default()
                    },
                    PartitionProduceResponse::default(),
                    PartitionProduceResponse {
                        error_code: 87,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut seen = Vec::new();
        response.for_each_error_code(&mut |c| seen.push(c));
        assert_eq!(seen, vec![6, 0, 87]);

        // A top-level code and a nested one in the same response.
        use super::offset_fetch::*;
        let response = OffsetFetchResponse {
            error_code: 16,
            topics: vec![OffsetFetchResponseTopic {
                partitions: vec![OffsetFetchResponsePartition {
                    error_code: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut seen = Vec::new();
        response.for_each_error_code(&mut |c| seen.push(c));
        seen.sort();
        assert_eq!(seen, vec![3, 16]);
    }
}
