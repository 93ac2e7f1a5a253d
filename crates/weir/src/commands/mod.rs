//! The client-side subcommands. Each talks to a broker through `weir-client`.
//!
//! Data goes to stdout (one line per record for `consume`); progress, rates
//! and summaries go to stderr, so pipelines stay clean.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;
pub mod txn;

use weir_client::{Client, ClientConfig};

/// Runs a client command on a small current-thread runtime.
pub fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Where to find the cluster; flattened into every client subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker address(es) to bootstrap from, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "WEIR_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
}

impl ConnectArgs {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(&self.bootstrap);
        config.connection.client_id = "weir-cli".to_owned();
        config
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        // The client's error already names the address and what to check.
        Ok(Client::connect(self.client_config()).await?)
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
