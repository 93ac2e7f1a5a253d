//! weir-chaos: proves a Weir cluster keeps its promises under faults. Test-only, not
//! published.
//!
//! Layout:
//! - [`net`]: one network namespace per broker on a bridge, and iptables rules inside them
//!   for partitions (why this and not a proxy is explained there);
//! - [`cluster`]: the `weir serve` processes in those namespaces, one data directory on a
//!   small tmpfs (disk full), one on weir-crashfs (power loss); kill -9, SIGSTOP/SIGCONT;
//! - [`load`]: librdkafka clients (idempotent acks=all producers, a consumer group
//!   committing offsets, a transactional producer) and the final full reads, all writing
//!   what they were told into the [`history`];
//! - [`checker`]: a pure function from a history to a verdict (lost acks, phantoms,
//!   duplicates, divergence, order, dense offsets, commits moving back, aborted reads);
//! - [`soak`]: the run itself: cluster, load, a seeded schedule of faults, the check.
//!
//! The binary `weir-chaos soak` runs a soak; `crates/chaos/tests/` run a short one and one
//! against a planted bug to show the checker can fail.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod load;
pub mod net;
pub mod soak;

/// Why the harness could not do what it was asked (a broken rule is not an error: it is a
/// violation in the checker's report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("setup: {0}")]
    Setup(String),
    #[error("broker {id}: {detail}; log tail:\n{log_tail}")]
    BrokerDied {
        id: usize,
        detail: String,
        log_tail: String,
    },
    #[error("kafka client: {0}")]
    Kafka(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The weir binary to run: `WEIR_BIN`, else `target/release/weir` of this workspace.
pub fn weir_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("release/weir")
}
