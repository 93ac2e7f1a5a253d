//! Kafka wire protocol for Weir: frames, headers, every request and response
//! Weir serves, record batches v2 and compression.
//!
//! This crate is sans-I/O: it never touches tokio, sockets or the filesystem.
//! Every length or count read off the wire is checked against the bytes that
//! remain before anything is allocated, and every decode failure is a typed
//! error, never a panic.
//!
//! Layout:
//! - [`codec`]: primitive readers and writers, the `Encode`/`Decode` traits, errors.
//! - [`messages`]: request and response types generated from `schemas/*.wire`.
//! - [`api`]: the API key table, supported version ranges, header versions,
//!   and request/response dispatch enums.
//! - [`header`]: request/response headers and the 4-byte frame length prefix.
//! - [`record`]: record batch v2 header view, CRC32C, in-place rewrites, records.
//! - [`control`]: transaction marker (control) batches.
//! - [`compression`]: gzip, snappy (raw and xerial), lz4 frame, zstd, all capped.
//! - [`error_code`]: Kafka's error codes.

pub mod api;
pub mod codec;
pub mod compression;
pub mod control;
pub mod error_code;
pub mod header;
pub mod messages;
pub mod record;
