//! A seeded, deterministic simulation of Weir's cluster logic: the controller, the metadata
//! image, partition replication (leader, followers, ISR, high watermark, truncation) and the
//! quorum's use of them, under a network that drops, delays, duplicates and reorders
//! messages, and nodes that crash and lose what they had not synced. Test-only; not
//! published.
//!
//! Layout:
//! - [`world`]: the simulated cluster, its fault schedule and the invariants checked after
//!   every step.
//! - [`log`]: one replica's partition data in memory (modelled on `weir_log::Log`).
//! - [`rng`]: the seeded random source; one seed, one run.
//!
//! What is real code and what is modelled:
//! - Real: `weir_metadata::controller::Controller` (every decision: registrations,
//!   heartbeats and fencing, AlterPartition, elections through `election.rs`, preferred
//!   leader rebalancing), `weir_metadata::image::MetadataImage` (every node applies the
//!   committed records with it), `weir_broker::replica::LeaderState` (high watermark, ISR
//!   proposals) and `weir_broker::follower` (the follower's truncation point and reading of
//!   fetch answers, the leader's divergence check).
//! - Modelled: the Raft quorum (see [`world`] for why openraft is not simulated), the
//!   partition log and its leader-epoch cache ([`log`]), and the async shells (the replica
//!   fetcher, the fetch and OffsetForLeaderEpoch handlers, the ISR loop, the heartbeat loop,
//!   `apply_partition_state`), reduced to the calls they make into the real cores.
//!
//! A failure names its seed; `weir-sim --seed S --trace` replays it, event by event.

pub mod log;
pub mod rng;
pub mod world;

pub use world::{Options, Planted, Stats, Violation, World};

/// Runs one seed.
pub fn run(opts: Options) -> Result<Stats, Violation> {
    World::new(opts).run()
}

/// Runs one seed keeping the whole trace.
pub fn run_traced(opts: Options) -> (Result<Stats, Violation>, Vec<String>) {
    World::new(opts).run_traced()
}
