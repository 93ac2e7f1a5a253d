//! Weir's cluster metadata.
//!
//! - [`records`]: the metadata log's records (KRaft-like).
//! - [`image`]: the image, a deterministic state machine over the records.
//! - [`controller`]: the active controller's decisions, sans I/O.
//! - [`quorum`]: the Raft quorum (openraft) that orders the records, with its on-disk log.

pub mod controller;
pub mod image;
pub mod quorum;
pub mod records;
