//! `weir serve`: configuration loading and the broker's process lifecycle.
//!
//! Configuration precedence, lowest first: built-in defaults, the TOML file
//! (`--config`), `WEIR_*` environment variables, then flags. Every key of
//! [`BrokerConfig`] can be set all three ways; the flags and variables are made
//! from its fields ([`SettingArgs`]). The effective configuration is printed
//! at start, each value with its source, so what runs is never a guess.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;
use weir_broker::config::{ConfigLayers, ConfigSource};
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
    /// Default topic config, Kafka names, repeatable: --topic-config retention.ms=60000
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_config: Vec<String>,
    /// Every broker setting, one flag each.
    #[command(flatten)]
    settings: SettingArgs,
}

/// One `--<key>` flag, with its `WEIR_<KEY>` variable, for every key of
/// [`BrokerConfig`] (`_` in the key becomes `-` in the flag). Generated from
/// the config's own fields at start, so there is no second list of settings to
/// keep in step: a field added to `BrokerConfig` is a flag and a variable too.
#[derive(Debug, Default)]
struct SettingArgs {
    /// (key, value as text, flag or env), in key order.
    given: Vec<(String, String, ConfigSource)>,
}

fn flag_of(key: &str) -> String {
    key.replace('_', "-")
}

fn env_of(key: &str) -> String {
    format!("WEIR_{}", key.to_ascii_uppercase())
}

impl clap::FromArgMatches for SettingArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for key in BrokerConfig::scalar_keys() {
            let Ok(Some(value)) = matches.try_get_one::<String>(&key) else {
                continue;
            };
            let source = match matches.value_source(&key) {
                Some(clap::parser::ValueSource::EnvVariable) => ConfigSource::Env,
                _ => ConfigSource::Flag,
            };
            given.push((key, value.clone(), source));
        }
        Ok(SettingArgs { given })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for SettingArgs {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        let defaults = serde_json::to_value(BrokerConfig::default()).unwrap_or_default();
        for key in BrokerConfig::scalar_keys() {
            let default = match defaults.get(&key) {
                Some(serde_json::Value::Null) | None => "unset".to_string(),
                Some(serde_json::Value::String(s)) => format!("{s:?}"),
                Some(v) => v.to_string(),
            };
            cmd = cmd.arg(
                clap::Arg::new(key.clone())
                    .long(flag_of(&key))
                    .env(env_of(&key))
                    .value_name("VALUE")
                    .help(format!(
                        "{} [default: {default}]",
                        BrokerConfig::key_help(&key).unwrap_or_default()
                    ))
                    .help_heading("Settings (flag > WEIR_* variable > --config file > default)"),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Builds the effective config from defaults, file, environment and flags.
fn load_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut layers = ConfigLayers::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        layers
            .add_file(&text)
            .map_err(|e| anyhow::anyhow!("config file {} is not valid: {e}", path.display()))?;
    }
    // Variables first, then flags: a flag beats the variable of another key's
    // layer only through precedence, never through order of appearance.
    for wanted in [ConfigSource::Env, ConfigSource::Flag] {
        for (key, value, source) in &args.settings.given {
            if *source != wanted {
                continue;
            }
            let origin = match source {
                ConfigSource::Env => format!("{}={value}", env_of(key)),
                _ => format!("--{} {value}", flag_of(key)),
            };
            layers
                .set_text(key, value, *source)
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        }
    }
    for pair in &args.topic_config {
        let Some((key, value)) = pair.split_once('=') else {
            bail!(
                "--topic-config expects KEY=VALUE (for example retention.ms=60000), got '{pair}'"
            );
        };
        layers
            .set_topic_default(key.trim(), value.trim(), ConfigSource::Flag)
            .map_err(|e| anyhow::anyhow!("--topic-config {pair}: {e}"))?;
    }
    let config = layers
        .build()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if let Err(reason) = config.validate() {
        bail!("invalid configuration: {reason}");
    }
    Ok(config)
}

/// The effective config as TOML, each value followed by where it came from
/// (`# default`, `# file`, `# env`, `# flag`); unset optional keys as comments.
fn render_config(config: &BrokerConfig) -> anyhow::Result<String> {
    let toml = toml::to_string(config).context("rendering effective config")?;
    let mut out = String::new();
    let mut table: Option<String> = None;
    for line in toml.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = Some(name.to_string());
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = line
            .split(" = ")
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if key.is_empty() || !line.contains(" = ") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let full = match &table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_string(),
        };
        if full == "cluster_id" && config.cluster_id.is_empty() {
            // Not configured: the id is the data directory's (or the cluster's, once joined),
            // logged when the broker opens; an empty string here would read as the id in use.
            out.push_str(
                "# cluster_id: not set; the data directory's or the cluster's (logged below)  # default\n",
            );
            continue;
        }
        out.push_str(&format!("{line}  # {}\n", config.source_of(&full).name()));
    }
    // TOML has no null: optional keys that are unset would otherwise be missing.
    let values = serde_json::to_value(config)?;
    let unset: Vec<String> = BrokerConfig::scalar_keys()
        .into_iter()
        .filter(|k| values.get(k).is_some_and(|v| v.is_null()))
        .collect();
    if !unset.is_empty() {
        let lines: Vec<String> = unset
            .iter()
            .map(|k| format!("# {k}: not set  # default"))
            .collect();
        // Before any [table], so they read as top-level keys.
        let at = out.find("\n[").map_or(out.len(), |i| i + 1);
        out.insert_str(at, &format!("{}\n", lines.join("\n")));
    }
    Ok(out)
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
    let rendered = render_config(&config)?;
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
                console: Default::default(),
            },
            http_stop_rx,
        ));
        // The bound address, since port 0 (tests) picks one.
        tracing::info!(http_listen = %http_addr, "HTTP listener open (console at /, /metrics, /health/live, /health/ready, /v1/)");
        // The metadata quorum (a quorum of one without --controller-voters),
        // then membership: registered, unfenced and following the image
        // before any client is served.
        let (quorum, fresh_metadata) = start_quorum(&config).await?;
        halt_on_metadata_log_failure(quorum.clone());
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

/// The exit status of a node whose metadata log could not be written (sysexits' EX_IOERR).
pub const METADATA_LOG_FAILED_EXIT_CODE: i32 = 74;

/// Stops the process once Raft on this node has failed for good (a metadata log write
/// that failed: a full or broken disk). Kafka does the same when its metadata log
/// directory fails: the node halts instead of staying up as a member that can neither
/// vote nor follow the image, and a supervisor restarts it once the disk works. Without
/// this, a node whose disk filled once kept refusing votes after the space came back,
/// and a quorum that needed it never formed again (weir-chaos soak, disk-full then kill).
fn halt_on_metadata_log_failure(quorum: QuorumNode<MetadataImage>) {
    tokio::spawn(async move {
        let reason = quorum.fatal().await;
        tracing::error!(
            %reason,
            exit_code = METADATA_LOG_FAILED_EXIT_CODE,
            "the metadata log cannot be written; halting so that the node restarts on a working disk"
        );
        // No clean shutdown: it would try to write the very log that failed. What the
        // partitions acknowledged is already durable by their own rules.
        std::process::exit(METADATA_LOG_FAILED_EXIT_CODE);
    });
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
