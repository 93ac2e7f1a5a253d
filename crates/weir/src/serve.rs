//! `weir serve`: configuration loading and the broker's process lifecycle.
//!
//! Configuration precedence, lowest first: built-in defaults, the TOML file
//! (`--config`), `WEIR_*` environment variables, then flags. The effective
//! configuration is printed at start so what runs is never a guess.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;
use weir_broker::config::{HostPort, Voters};
use weir_broker::{Broker, BrokerConfig};
use weir_metadata::controller::ControllerConfig;
use weir_metadata::image::MetadataImage;
use weir_metadata::quorum::{QuorumConfig, QuorumNode, metadata_controller};
use weir_server::ConnectionLimits;
use weir_server::controller_net::{TcpTransport, TcpTransportConfig};

/// How the broker writes its log lines (to stderr).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (for journald, Loki, Elasticsearch ...).
    Json,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (keys as in the printed effective config).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format. The log filter is `WEIR_LOG` (tracing's EnvFilter syntax, for
    /// example `info,weir_broker::replication=debug`); default `info,openraft=warn`.
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Directory for partition logs and broker metadata.
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the Kafka listener binds, HOST:PORT (a hostname, IPv4, or [IPv6]).
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<HostPort>,
    /// Address the operations HTTP listener binds, HOST:PORT: /metrics (Prometheus),
    /// /health/live and /health/ready.
    #[arg(long, env = "WEIR_HTTP_LISTEN")]
    http_listen: Option<HostPort>,
    /// Most partitions given per-partition metric series; the rest are only counted.
    #[arg(long, env = "WEIR_METRICS_PARTITION_SERIES_MAX")]
    metrics_partition_series_max: Option<usize>,
    /// Address advertised to clients in Metadata, HOST:PORT (defaults to --listen).
    #[arg(long, env = "WEIR_ADVERTISED_LISTEN")]
    advertised_listen: Option<HostPort>,
    /// Address the metadata quorum's (Raft) listener binds, HOST:PORT
    /// (defaults to this node's entry in --controller-voters).
    #[arg(long, env = "WEIR_CONTROLLER_LISTEN")]
    controller_listen: Option<HostPort>,
    /// The metadata quorum's voters, ID@HOST:PORT,... (KRaft's
    /// controller.quorum.voters); the same list on every voter. Unset: this
    /// node alone. A node not in the list joins as a non-voting learner.
    #[arg(long, env = "WEIR_CONTROLLER_VOTERS")]
    controller_voters: Option<Voters>,
    /// This broker's rack (Kafka's broker.rack), for rack-aware placement.
    #[arg(long, env = "WEIR_RACK")]
    rack: Option<String>,
    /// This broker's node id.
    #[arg(long, env = "WEIR_NODE_ID")]
    node_id: Option<i32>,
    /// The controller fences a broker it has not heard from for this long,
    /// in ms (Kafka's broker.session.timeout.ms).
    #[arg(long, env = "WEIR_BROKER_SESSION_TIMEOUT_MS")]
    broker_session_timeout_ms: Option<u64>,
    /// How often this broker heartbeats to the controller, in ms (Kafka's
    /// broker.heartbeat.interval.ms); below the session timeout.
    #[arg(long, env = "WEIR_BROKER_HEARTBEAT_INTERVAL_MS")]
    broker_heartbeat_interval_ms: Option<u64>,
    /// A follower that has not caught up with its leader for this long leaves the ISR, in ms
    /// (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// How many KIP-227 fetch sessions this broker caches (Kafka's
    /// max.incremental.fetch.session.cache.slots); 0 answers every fetch in full.
    #[arg(long, env = "WEIR_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS")]
    max_incremental_fetch_session_cache_slots: Option<usize>,
    /// Partitions for auto-created topics (Kafka's num.partitions).
    #[arg(long, env = "WEIR_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Create topics on first use (Kafka's auto.create.topics.enable).
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// How often retention runs, in milliseconds (Kafka's log.retention.check.interval.ms).
    #[arg(long, env = "WEIR_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Log cleaner threads compacting `compact` topics (Kafka's log.cleaner.threads).
    #[arg(long, env = "WEIR_LOG_CLEANER_THREADS")]
    log_cleaner_threads: Option<usize>,
    /// Read plus write rate cap of each cleaner thread, bytes/s, 0 = none
    /// (Kafka's log.cleaner.io.max.bytes.per.second).
    #[arg(long, env = "WEIR_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND")]
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Key map memory of all cleaner threads together, bytes (Kafka's
    /// log.cleaner.dedupe.buffer.size).
    #[arg(long, env = "WEIR_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    log_cleaner_dedupe_buffer_size: Option<usize>,
    /// How long an idle cleaner thread sleeps, ms (Kafka's log.cleaner.backoff.ms).
    #[arg(long, env = "WEIR_LOG_CLEANER_BACKOFF_MS")]
    log_cleaner_backoff_ms: Option<u64>,
    /// How long the first JoinGroup round of an empty consumer group waits for
    /// more members, in ms (Kafka's group.initial.rebalance.delay.ms).
    #[arg(long, env = "WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// Heartbeat interval of consumer-protocol (KIP-848) group members, in ms
    /// (Kafka's group.consumer.heartbeat.interval.ms).
    #[arg(long, env = "WEIR_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Session timeout of consumer-protocol group members, in ms
    /// (Kafka's group.consumer.session.timeout.ms).
    #[arg(long, env = "WEIR_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    group_consumer_session_timeout_ms: Option<i32>,
    /// Partitions of __consumer_offsets when it is created (Kafka's offsets.topic.num.partitions).
    #[arg(long, env = "WEIR_OFFSETS_TOPIC_PARTITIONS")]
    offsets_topic_partitions: Option<i32>,
    /// segment.bytes of __consumer_offsets when it is created (Kafka's
    /// offsets.topic.segment.bytes).
    #[arg(long, env = "WEIR_OFFSETS_TOPIC_SEGMENT_BYTES")]
    offsets_topic_segment_bytes: Option<i64>,
    /// Serve transactions (true) or refuse transactional clients with a fatal error (false).
    #[arg(long, env = "WEIR_TRANSACTIONS_ENABLED")]
    transactions_enabled: Option<bool>,
    /// Longest transaction.timeout.ms a producer may ask for (Kafka's transaction.max.timeout.ms).
    #[arg(long, env = "WEIR_TRANSACTION_MAX_TIMEOUT_MS")]
    transaction_max_timeout_ms: Option<i32>,
    /// Partitions of __transaction_state when it is created (Kafka's transaction.state.log.num.partitions).
    #[arg(long, env = "WEIR_TRANSACTION_STATE_PARTITIONS")]
    transaction_state_partitions: Option<i32>,
    /// How often transactions past their timeout are aborted, in ms (Kafka's
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms).
    #[arg(
        long,
        env = "WEIR_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS"
    )]
    transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    /// Default topic config, Kafka names, repeatable: --topic-config retention.ms=60000
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_config: Vec<String>,
}

/// Builds the effective config from file, environment and flags.
fn load_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut explicit = std::collections::BTreeSet::new();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let config = toml::from_str::<BrokerConfig>(&text)
                .with_context(|| format!("config file {} is not valid", path.display()))?;
            // The typed parse succeeded, so the file is a table of known keys;
            // read it again untyped only to learn which keys it sets.
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid", path.display()))?;
            for (key, value) in &table {
                match (key.as_str(), value.as_table()) {
                    ("topic_defaults", Some(defaults)) => explicit
                        .extend(defaults.keys().map(|name| format!("topic_defaults.{name}"))),
                    _ => {
                        explicit.insert(key.clone());
                    }
                }
            }
            config
        }
        None => BrokerConfig::default(),
    };
    // Flags and their WEIR_* variables: a given one counts as set explicitly.
    let given = [
        ("data_dir", args.data_dir.is_some()),
        ("listen", args.listen.is_some()),
        ("advertised_listen", args.advertised_listen.is_some()),
        ("http_listen", args.http_listen.is_some()),
        (
            "metrics_partition_series_max",
            args.metrics_partition_series_max.is_some(),
        ),
        ("controller_listen", args.controller_listen.is_some()),
        ("controller_voters", args.controller_voters.is_some()),
        ("rack", args.rack.is_some()),
        ("node_id", args.node_id.is_some()),
        (
            "broker_session_timeout_ms",
            args.broker_session_timeout_ms.is_some(),
        ),
        (
            "broker_heartbeat_interval_ms",
            args.broker_heartbeat_interval_ms.is_some(),
        ),
        (
            "replica_lag_time_max_ms",
            args.replica_lag_time_max_ms.is_some(),
        ),
        (
            "max_incremental_fetch_session_cache_slots",
            args.max_incremental_fetch_session_cache_slots.is_some(),
        ),
        ("default_partitions", args.default_partitions.is_some()),
        ("auto_create_topics", args.auto_create_topics.is_some()),
        (
            "retention_check_interval_ms",
            args.retention_check_interval_ms.is_some(),
        ),
        ("log_cleaner_threads", args.log_cleaner_threads.is_some()),
        (
            "log_cleaner_io_max_bytes_per_second",
            args.log_cleaner_io_max_bytes_per_second.is_some(),
        ),
        (
            "log_cleaner_dedupe_buffer_size",
            args.log_cleaner_dedupe_buffer_size.is_some(),
        ),
        (
            "log_cleaner_backoff_ms",
            args.log_cleaner_backoff_ms.is_some(),
        ),
        (
            "group_initial_rebalance_delay_ms",
            args.group_initial_rebalance_delay_ms.is_some(),
        ),
        (
            "group_consumer_heartbeat_interval_ms",
            args.group_consumer_heartbeat_interval_ms.is_some(),
        ),
        (
            "group_consumer_session_timeout_ms",
            args.group_consumer_session_timeout_ms.is_some(),
        ),
        (
            "offsets_topic_partitions",
            args.offsets_topic_partitions.is_some(),
        ),
        (
            "offsets_topic_segment_bytes",
            args.offsets_topic_segment_bytes.is_some(),
        ),
        ("transactions_enabled", args.transactions_enabled.is_some()),
        (
            "transaction_max_timeout_ms",
            args.transaction_max_timeout_ms.is_some(),
        ),
        (
            "transaction_state_partitions",
            args.transaction_state_partitions.is_some(),
        ),
        (
            "transaction_abort_timed_out_transaction_cleanup_interval_ms",
            args.transaction_abort_timed_out_transaction_cleanup_interval_ms
                .is_some(),
        ),
    ];
    explicit.extend(
        given
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| (*key).to_string()),
    );
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(addr) = &args.http_listen {
        config.http_listen = addr.clone();
    }
    if let Some(n) = args.metrics_partition_series_max {
        config.metrics_partition_series_max = n;
    }
    if let Some(addr) = &args.advertised_listen {
        config.advertised_listen = Some(addr.clone());
    }
    if let Some(addr) = &args.controller_listen {
        config.controller_listen = Some(addr.clone());
    }
    if let Some(voters) = &args.controller_voters {
        config.controller_voters = Some(voters.clone());
    }
    if let Some(rack) = &args.rack {
        config.rack = Some(rack.clone());
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(ms) = args.broker_session_timeout_ms {
        config.broker_session_timeout_ms = ms;
    }
    if let Some(ms) = args.broker_heartbeat_interval_ms {
        config.broker_heartbeat_interval_ms = ms;
    }
    if let Some(ms) = args.replica_lag_time_max_ms {
        config.replica_lag_time_max_ms = ms;
    }
    if let Some(slots) = args.max_incremental_fetch_session_cache_slots {
        config.max_incremental_fetch_session_cache_slots = slots;
    }
    if let Some(n) = args.default_partitions {
        config.default_partitions = n;
    }
    if let Some(enabled) = args.auto_create_topics {
        config.auto_create_topics = enabled;
    }
    if let Some(ms) = args.retention_check_interval_ms {
        config.retention_check_interval_ms = ms;
    }
    if let Some(n) = args.offsets_topic_segment_bytes {
        config.offsets_topic_segment_bytes = n;
    }
    if let Some(n) = args.log_cleaner_threads {
        config.log_cleaner_threads = n;
    }
    if let Some(n) = args.log_cleaner_io_max_bytes_per_second {
        config.log_cleaner_io_max_bytes_per_second = n;
    }
    if let Some(n) = args.log_cleaner_dedupe_buffer_size {
        config.log_cleaner_dedupe_buffer_size = n;
    }
    if let Some(ms) = args.log_cleaner_backoff_ms {
        config.log_cleaner_backoff_ms = ms;
    }
    if let Some(ms) = args.group_initial_rebalance_delay_ms {
        config.group_initial_rebalance_delay_ms = ms;
    }
    if let Some(ms) = args.group_consumer_heartbeat_interval_ms {
        config.group_consumer_heartbeat_interval_ms = ms;
    }
    if let Some(ms) = args.group_consumer_session_timeout_ms {
        config.group_consumer_session_timeout_ms = ms;
    }
    if let Some(n) = args.offsets_topic_partitions {
        config.offsets_topic_partitions = n;
    }
    if let Some(enabled) = args.transactions_enabled {
        config.transactions_enabled = enabled;
    }
    if let Some(ms) = args.transaction_max_timeout_ms {
        config.transaction_max_timeout_ms = ms;
    }
    if let Some(n) = args.transaction_state_partitions {
        config.transaction_state_partitions = n;
    }
    if let Some(ms) = args.transaction_abort_timed_out_transaction_cleanup_interval_ms {
        config.transaction_abort_timed_out_transaction_cleanup_interval_ms = ms;
    }
    for pair in &args.topic_config {
        let Some((key, value)) = pair.split_once('=') else {
            bail!(
                "--topic-config expects KEY=VALUE (for example retention.ms=60000), got '{pair}'"
            );
        };
        config
            .topic_defaults
            .set(key.trim(), value.trim())
            .with_context(|| format!("--topic-config {pair}"))?;
        explicit.insert(format!("topic_defaults.{}", key.trim()));
    }
    config.explicit = explicit;
    if let Err(reason) = config.validate() {
        bail!("invalid configuration: {reason}");
    }
    Ok(config)
}

/// The log filter when `WEIR_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// The log filter from `WEIR_LOG`: an invalid one is an error, not a silent fallback (a
/// typo would otherwise hide the very lines the operator asked for).
fn log_filter(from_env: Option<String>) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let text = from_env.unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| {
            anyhow::anyhow!(
                "WEIR_LOG={text:?} is not a valid log filter ({e}); use levels and targets such \
                 as `info` or `info,weir_broker::replication=debug`"
            )
        })
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = log_filter(std::env::var("WEIR_LOG").ok())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, never into a file or journald.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        build = if cfg!(debug_assertions) { "debug" } else { "release" },
        config_file = %args.config.as_deref().map_or("(none)".into(), |p| p.display().to_string()),
        "weir starting"
    );
    let config = load_config(&args)?;
    let mut rendered = toml::to_string(&config).context("rendering effective config")?;
    if config.cluster_id.is_empty() {
        // Not configured: the id is the data directory's (or the cluster's, once joined),
        // logged when the broker opens; an empty string here would read as the id in use.
        rendered = rendered.replacen(
            "cluster_id = \"\"\n",
            "# cluster_id: not set; the data directory's or the cluster's (logged below)\n",
            1,
        );
    }
    match args.log_format {
        LogFormat::Text => eprintln!("weir: effective configuration\n{rendered}"),
        // One event, so that every line of a JSON log stays a JSON object.
        LogFormat::Json => tracing::info!(config = %rendered, "effective configuration"),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Recovery first, then the port: a client that can connect is answered by a broker
        // whose logs are recovered (as Kafka enables request processing only after log
        // recovery). Until then connections are refused, which clients retry.
        let broker = Broker::open(config.clone())
            .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
        // The operations listener opens once the logs are recovered, so that /health/ready
        // can say what the broker waits for while it joins the cluster; it closes last.
        let http_listener =
            TcpListener::bind((config.http_listen.host.as_str(), config.http_listen.port))
                .await
                .with_context(|| format!("binding the HTTP listener {}", config.http_listen))?;
        let http_addr = http_listener.local_addr().context("HTTP listener address")?;
        let (draining_tx, draining_rx) = tokio::sync::watch::channel(false);
        let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
        let http = tokio::spawn(weir_server::http::serve_http(
            http_listener,
            weir_server::http::HttpState {
                broker: broker.clone(),
                shutting_down: draining_rx,
            },
            http_stop_rx,
        ));
        // The bound address, since port 0 (tests) picks one.
        tracing::info!(http_listen = %http_addr, "HTTP listener open (/metrics, /health/live, /health/ready)");
        // The metadata quorum (a quorum of one without --controller-voters),
        // then membership: registered, unfenced and following the image
        // before any client is served.
        let (quorum, fresh_metadata) = start_quorum(&config).await?;
        broker
            .join_cluster(Arc::new(quorum.clone()), fresh_metadata)
            .await
            .context("joining the cluster")?;
        // Completes transactions a crash left prepared, and starts the timeout scan.
        broker.txn.start(&broker);
        let listener = TcpListener::bind((config.listen.host.as_str(), config.listen.port))
            .await
            .with_context(|| {
                format!(
                    "binding {} (is another broker running there?)",
                    config.listen
                )
            })?;
        let limits = ConnectionLimits {
            request_frame_bytes_max: config.request_frame_bytes_max,
            queued_request_bytes_max: config.queued_request_bytes_max,
            in_flight_requests_max: config.in_flight_requests_max,
            idle_ms_max: config.connection_idle_ms_max,
        };
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let retention = spawn_retention(broker.clone(), shutdown_rx.clone());
        broker.start_cleaners();
        let signalled = broker.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = draining_tx.send(true);
            tracing::info!("shutdown requested; moving leadership away");
            // Leadership moves off this broker first, while it still serves,
            // so clients see only retriable errors (Kafka's controlled shutdown).
            signalled.leave_cluster().await;
            tracing::info!("finishing in-flight requests");
            // Parked JoinGroup/SyncGroup requests would otherwise hold their
            // connections open until the rebalance timeout.
            signalled.groups.abandon_waiters();
            let _ = shutdown_tx.send(true);
        });
        tracing::info!(listen = %config.listen, advertised = %config.advertised(),
            cluster_id = %broker.cluster_id(), "weir is serving");
        weir_server::serve(
            listener,
            broker.clone(),
            config.connections_max,
            limits,
            shutdown_rx,
        )
        .await
        .context("serving")?;
        retention.abort();
        quorum.shutdown().await;
        broker.shutdown();
        let _ = http_stop_tx.send(true);
        match http.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP listener failed"),
            Err(e) => tracing::warn!(error = %e, "HTTP listener task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("clean shutdown complete");
        Ok(())
    })
}

/// Starts this node's member of the metadata quorum: the Raft log under
/// `<data_dir>/metadata`, the controller listener when there are peers.
/// Also says whether the data directory had no metadata log before: its
/// topics (if any) then predate the quorum and are imported into it.
async fn start_quorum(config: &BrokerConfig) -> anyhow::Result<(QuorumNode<MetadataImage>, bool)> {
    let metadata_dir = config.data_dir.join("metadata");
    let fresh = std::fs::read_dir(&metadata_dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    let node_id = u64::try_from(config.node_id).context("node id")?;
    let voters = config
        .voters()
        .0
        .iter()
        .map(|(id, addr)| (*id as u64, addr.to_string()))
        .collect();
    let mut qc = QuorumConfig::new(node_id, config.data_dir.clone(), voters);
    if let Some(bind) = config.controller_bind() {
        let addr = bind
            .resolve()
            .with_context(|| format!("resolving --controller-listen {bind}"))?;
        qc.controller_listen = Some(addr);
        qc.controller_advertised = Some(bind.to_string());
    }
    let controller_config = ControllerConfig {
        broker_session_timeout_ms: config.broker_session_timeout_ms,
        producer_id_block_size: weir_broker::producer_ids::PRODUCER_ID_BLOCK_SIZE,
        default_partitions: config.default_partitions,
        default_replication_factor: 1,
        auto_leader_rebalance: config.auto_leader_rebalance_enable,
        leader_imbalance_check_interval_ms: config.leader_imbalance_check_interval_ms,
    };
    let factory = metadata_controller(controller_config);
    let transport = Arc::new(TcpTransport::new(TcpTransportConfig::default()));
    let started = std::time::Instant::now();
    let quorum = QuorumNode::start(qc, transport, factory)
        .await
        .context("starting the metadata quorum")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        voters = %config.voters(),
        voter = config.is_voter(),
        "metadata quorum started"
    );
    Ok((quorum, fresh))
}

fn spawn_retention(
    broker: Arc<Broker>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(broker.retention_interval());
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let broker = broker.clone();
                    let _ = tokio::task::spawn_blocking(move || broker.apply_retention()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the broker still runs; it just can't stop cleanly.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_log_filter_is_refused_with_what_to_write() {
        let e = log_filter(Some("info,weir_broker=loud".into())).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("WEIR_LOG"), "{text}");
        assert!(text.contains("weir_broker=loud"), "{text}");
        assert!(log_filter(Some("info,weir_broker::replication=debug".into())).is_ok());
        assert!(log_filter(None).is_ok());
    }
}
