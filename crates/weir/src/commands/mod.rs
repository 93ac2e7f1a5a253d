//! The client-side subcommands. Each talks to a broker through `weir-client`.
//!
//! Data goes to stdout (one line per record for `consume`); progress, rates
//! and summaries go to stderr, so pipelines stay clean.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod offsets;
pub mod plan;
pub mod produce;
pub mod rebalance;
pub mod throttle;
pub mod topic;
pub mod txn;

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context as _;
use weir_client::{Client, ClientConfig, RetryPolicy};

/// Runs a client command on a small current-thread runtime.
pub fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// A command that ran to the end but must report failure through its exit
/// status (e.g. `cluster health` finding offline partitions). `main` exits
/// with `code` and prints `message` to stderr when it is not empty.
#[derive(Debug)]
pub struct ExitStatus {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitStatus {}

/// Where the cluster is and how long to wait for it: global flags, accepted
/// before or after the subcommand (`weir -b host:9092 topic list` and
/// `weir topic list -b host:9092` are the same).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Broker address(es) to bootstrap from, HOST:PORT[,HOST:PORT...]
    /// (default: the profile's, else 127.0.0.1:9092).
    #[arg(
        short = 'b',
        long,
        global = true,
        env = "WEIR_BOOTSTRAP",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: Option<String>,
    /// A profile from the client config file (default: its `default_profile`).
    #[arg(long, global = true, env = "WEIR_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// The client config file (TOML with [profiles.NAME] tables;
    /// default: ~/.config/weir/client.toml if it exists).
    #[arg(long, global = true, env = "WEIR_CLIENT_CONFIG", value_name = "PATH")]
    pub client_config: Option<PathBuf>,
    /// Give up on one request (or one TCP connect) after this long; retries
    /// are bounded too, so no command waits forever for a dead broker.
    #[arg(long, global = true, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
}

/// Defaults when neither a flag nor a profile says otherwise.
const BOOTSTRAP_DEFAULT: &str = "127.0.0.1:9092";
const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 15_000;
const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// The client config file: named profiles, as rpk's profiles. Unknown keys
/// are rejected so that a typo is not silently ignored; `tls` and `sasl`
/// tables are reserved for when the client grows them.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ClientConfigFile {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, Profile>,
}

#[derive(serde::Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Profile {
    bootstrap: Option<String>,
    request_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
}

/// What every client subcommand connects with, resolved once in `main`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bootstrap: String,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Resolves the global flags and the profile. Call once, before any command.
pub fn init(global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = resolve(global)?;
    let _ = SETTINGS.set(settings);
    Ok(())
}

fn resolve(global: &GlobalArgs) -> anyhow::Result<Settings> {
    let default_path = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".config/weir/client.toml"))
        .filter(|p| p.exists());
    let path = global.client_config.clone().or(default_path);
    let file = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read client config {}", path.display()))?;
            toml::from_str::<ClientConfigFile>(&text)
                .with_context(|| format!("client config {} is not valid", path.display()))?
        }
        None => ClientConfigFile::default(),
    };
    let profile = match global.profile.as_ref().or(file.default_profile.as_ref()) {
        Some(name) => file.profiles.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            anyhow::anyhow!(
                "no profile '{name}' in {} (profiles: {})",
                path.as_ref()
                    .map_or("the client config".to_owned(), |p| p.display().to_string()),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })?,
        None => Profile::default(),
    };
    Ok(Settings {
        bootstrap: global
            .bootstrap
            .clone()
            .or(profile.bootstrap)
            .unwrap_or_else(|| BOOTSTRAP_DEFAULT.to_owned()),
        request_timeout_ms: global
            .request_timeout_ms
            .or(profile.request_timeout_ms)
            .unwrap_or(REQUEST_TIMEOUT_MS_DEFAULT),
        connect_timeout_ms: profile
            .connect_timeout_ms
            .unwrap_or(CONNECT_TIMEOUT_MS_DEFAULT),
    })
}

/// The resolved settings (defaults if `init` was not called, as in unit tests).
pub fn settings() -> Settings {
    SETTINGS.get().cloned().unwrap_or_else(|| {
        resolve(&GlobalArgs::default()).unwrap_or(Settings {
            bootstrap: BOOTSTRAP_DEFAULT.to_owned(),
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
        })
    })
}

/// The connection handle a subcommand flattens into its arguments. It holds
/// no flags of its own (the bootstrap is global, see [`GlobalArgs`]); a new
/// subcommand adds `#[command(flatten)] connect: ConnectArgs` and calls
/// `args.connect.connect().await?`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {}

impl ConnectArgs {
    /// The bootstrap list, HOST:PORT[,HOST:PORT...].
    pub fn bootstrap(&self) -> String {
        settings().bootstrap
    }

    pub fn client_config(&self) -> ClientConfig {
        let settings = settings();
        let mut config = ClientConfig::new(&settings.bootstrap);
        config.connection.client_id = "weir-cli".to_owned();
        config.connection.request_timeout_ms = settings.request_timeout_ms;
        config.connection.connect_timeout_ms = settings.connect_timeout_ms;
        config
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        // The client's error already names the address and what to check.
        Ok(Client::connect(self.client_config()).await?)
    }
}

/// How CLI loops pace their retries (fetch, reconnect).
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::default()
}

/// `--format text|json` for the read commands. The JSON of each command is
/// one document (consume: one object per line) with a stable schema: fields
/// are only ever added.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Prints one JSON document and a newline.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Whether an error is stdout's reader going away (`| head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Makes a closed stdout end the process quietly, as it ends `cat` or kcat,
/// instead of `println!` panicking with "failed printing to stdout". Only for
/// the client commands: the broker must never die of a signal. Sockets are
/// unaffected: std's `TcpStream::write` (under tokio's) sends with
/// MSG_NOSIGNAL, and weir-client writes with `write_all`, never `writev`.
pub fn exit_quietly_on_closed_stdout() {
    // SAFETY: restoring the default disposition of SIGPIPE is
    // async-signal-safe and done before any thread is spawned.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses `key=value` (the value may contain '=').
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// A rate for humans: "12345 records/s".
pub fn per_second(count: u64, elapsed: std::time::Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        count as f64
    } else {
        count as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_keeps_equals_in_value() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
