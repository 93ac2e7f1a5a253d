//! Weir's cluster metadata.
//!
//! - [`records`]: the metadata log's records (KRaft-like).
//! - [`image`]: the image, a deterministic state machine over the records.
//! - [`names`]: Kafka's topic-name rules, as pure functions.
//! - [`placement`]: where new replicas go (even, striped, rack-aware).
//! - [`controller`]: the active controller's decisions, sans I/O.
//! - [`election`]: leader election and ISR upkeep, as pure functions of the image.
//! - [`reassignment`]: partition reassignment (KIP-455) as pure functions of a partition's state.
//! - [`import`]: a single-node data directory from before the quorum, as records.
//! - [`quorum`]: the Raft quorum (openraft) that orders the records, with its on-disk log.

pub mod controller;
pub mod election;
pub mod image;
pub mod import;
pub mod names;
pub mod placement;
#[cfg(test)]
mod planted;
#[cfg(test)]
mod proptests;
pub mod quorum;
pub mod reassignment;
pub mod records;
#[cfg(test)]
mod testkit;
