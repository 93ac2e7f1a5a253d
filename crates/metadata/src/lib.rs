//! Weir's cluster metadata.
//!
//! - [`records`]: the metadata log's records (KRaft-like).
//! - [`image`]: the image, a deterministic state machine over the records.
//! - [`names`]: Kafka's topic-name rules, as pure functions.
//! - [`controller`]: the active controller's decisions, sans I/O.

pub mod controller;
pub mod image;
pub mod names;
pub mod records;
