//! `weir-chaos soak`: a long fault-injection run against a real cluster, ending with the
//! checker's verdict; `weir-chaos check FILE`: checks a recorded history again.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use weir_chaos::soak::{self, FaultKind, SoakConfig};

#[derive(Parser)]
#[command(
    name = "weir-chaos",
    about = "Fault injection and a Jepsen-style checker for Weir"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a cluster under load and faults, then checks what the clients saw.
    Soak {
        #[arg(long, default_value_t = 1000)]
        faults: usize,
        #[arg(long, default_value_t = 3)]
        brokers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the history (JSON lines).
        #[arg(long)]
        history: Option<PathBuf>,
        /// Comma-separated fault kinds (default: all): kill, pause, partition-leader,
        /// partition-minority, partition-bridge, partition-clients, disk-full, power-loss,
        /// slow-fsync.
        #[arg(long)]
        kinds: Option<String>,
        /// Directory for data directories and logs (default: a temporary one, removed).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 500)]
        hold_ms_min: u64,
        #[arg(long, default_value_t = 3000)]
        hold_ms_max: u64,
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        #[arg(long, default_value_t = 200)]
        rate_per_producer: u32,
        /// No transactional producer.
        #[arg(long)]
        no_transactions: bool,
        #[arg(long, short)]
        verbose: bool,
    },
    /// Checks a history file again and prints the verdict.
    Check { history: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Soak {
            faults,
            brokers,
            seed,
            history,
            kinds,
            work_dir,
            hold_ms_min,
            hold_ms_max,
            settle_ms,
            rate_per_producer,
            no_transactions,
            verbose,
        } => {
            let tmp = tempfile::tempdir().context("work dir")?;
            let work_dir = work_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let mut config = SoakConfig::new(weir_chaos::weir_bin(), work_dir);
            config.faults = faults;
            config.brokers = brokers;
            config.seed = seed;
            config.history_path = history;
            config.hold_ms = (hold_ms_min, hold_ms_max.max(hold_ms_min));
            config.settle_ms = settle_ms;
            config.rate_per_producer = rate_per_producer;
            config.transactions = !no_transactions;
            config.verbose = verbose;
            if let Some(list) = kinds {
                config.kinds = list
                    .split(',')
                    .map(|k| {
                        FaultKind::parse(k.trim())
                            .with_context(|| format!("unknown fault kind {k}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            println!(
                "soak: {faults} faults on {brokers} brokers, seed {seed}, weir {}",
                config.weir_bin.display()
            );
            let outcome = soak::run(&config)?;
            print!("{}", outcome.summary());
            if !outcome.is_valid() {
                bail!("the checker found violations");
            }
        }
        Command::Check { history } => {
            let events = weir_chaos::history::read_file(&history)
                .with_context(|| format!("read {}", history.display()))?;
            let report = weir_chaos::checker::check(&events);
            println!(
                "acked {}, checked {}, violations {:?}",
                report.acked,
                report.acked_checked,
                report.violations_by_kind()
            );
            for v in report.violations.iter().take(20) {
                println!("  {v:?}");
            }
            if !report.is_valid() {
                bail!("INVALID");
            }
            println!("VALID");
        }
    }
    Ok(())
}
