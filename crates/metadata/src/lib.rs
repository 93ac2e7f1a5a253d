//! Weir's cluster metadata.
//!
//! - [`records`]: the metadata log's records (KRaft-like).
//! - [`image`]: the image, a deterministic state machine over the records.
//! - [`controller`]: the active controller's decisions, sans I/O.

pub mod controller;
pub mod image;
pub mod records;
