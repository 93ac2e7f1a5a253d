//! End-to-end tests: a real `weir serve` process spoken to by real Kafka
//! clients (librdkafka through the rdkafka crate) and by raw sockets.
//! All scenarios build into this one test binary to keep link time down.

mod e2e {
    mod admin;
    mod cluster;
    mod cluster_harness;
    mod cluster_ops;
    mod compaction;
    #[allow(dead_code)]
    mod compaction_support;
    mod configs;
    mod console;
    mod coordinator_failover;
    mod crash;
    mod data_dir;
    mod expand;
    mod fetch_sessions;
    mod groups;
    pub mod harness;
    mod hostile;
    mod idempotent;
    mod logs;
    mod long_poll;
    mod ops;
    mod protocol_levels;
    mod quorum_membership;
    mod rdkafka_roundtrip;
    mod replica_fetch;
    mod replication;
    mod restart;
    mod retention;
    mod timestamps;
    mod transactions;
    mod transactions_read;
    mod upgrade;
}
