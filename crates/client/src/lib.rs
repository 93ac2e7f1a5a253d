//! `weir-client`: a small async Kafka client, used by the `weir` CLI, the
//! replica fetchers and `weir bench`.
//!
//! Layout:
//! - [`connection`]: one TCP connection to one broker. ApiVersions negotiation,
//!   correlation ids, pipelining, bounded response frames. [`Request`] ties
//!   each generated request type to its response type.
//! - [`client`]: [`Client`], bootstrap plus a metadata cache; admin calls go
//!   to any broker, partition calls (ListOffsets, Fetch, DeleteRecords) to the
//!   partition leader. Fetched batches are CRC-checked and decompressed with a cap.
//! - [`producer`]: [`Producer`], a background task that batches records per
//!   partition (linger, size), compresses, and resolves one
//!   [`DeliveryFuture`] per record.
//! - [`groups`]: consumer-group administration (list, describe, offsets,
//!   delete, reset) through the group's coordinator.
//! - [`retry`]: [`RetryPolicy`], exponential backoff with jitter for every
//!   retry loop (producer batches, CLI fetch loops).
//! - [`membership`]: joining a consumer group (classic protocol, range
//!   assignor) for `weir consume --group`.
//! - [`error`]: [`ClientError`], carrying the Kafka [`ErrorCode`] when the
//!   broker returned one.
//!
//! The client never panics on broker input: every frame length is bounded
//! before allocation and every decode failure is a [`ClientError`].
//!
//! [`ErrorCode`]: weir_protocol::error_code::ErrorCode

pub mod client;
pub mod connection;
pub mod error;
pub mod groups;
pub mod membership;
pub mod producer;
pub mod quorum;
pub mod retry;
pub mod transactions;

pub use client::{
    AlterConfigOp, BrokerInfo, Client, ClientConfig, ClusterDescription, ClusterMetadata,
    ConfigEntry, ConfigOpType, ConfigResource, ConfigSource, FetchPosition, FetchedPartition,
    FetchedRecord, ListedOffset, LogDirDescription, LogDirPartition, NewTopic, OffsetSpec,
    PartitionInfo, ResourceType, TopicInfo,
};
pub use connection::{Connection, ConnectionOptions, PendingResponse, Request};
pub use error::ClientError;
pub use groups::{CommittedOffset, GroupDescription, GroupListing, MemberDescription};
pub use membership::{Membership, MembershipTimeouts, needs_rejoin};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use quorum::{QuorumDescription, QuorumListener, QuorumReplica};
pub use retry::{Backoff, RetryPolicy};
pub use transactions::{TransactionDescription, TransactionListing};
pub use weir_protocol::compression::Compression;
pub use weir_protocol::error_code::ErrorCode;
pub use weir_protocol::record::RecordHeader;
