//! `weir`: the single binary. `weir serve` runs a broker; the other
//! subcommands are a small Kafka CLI built on `weir-client`.

mod commands;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a Kafka-compatible streaming platform"
)]
struct Cli {
    #[command(flatten)]
    global: commands::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (single node, embedded defaults: 127.0.0.1:9092, ./weir-data).
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(commands::topic::TopicCommand),
    /// Produce records from stdin to a topic (lines, any delimiter, or a format).
    Produce(commands::produce::ProduceArgs),
    /// Consume records from topics and print them (text, a format string, or JSON).
    Consume(commands::consume::ConsumeArgs),
    /// Per-partition log start, high watermark, last stable offset, and the
    /// offset at a timestamp (kcat -Q).
    Offsets(commands::offsets::OffsetsArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(commands::group::GroupCommand),
    /// List and describe transactions (transactional ids and their state).
    #[command(subcommand)]
    Txn(commands::txn::TxnCommand),
    /// Cluster information.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Measure produce/consume throughput and latency against any broker.
    Bench(commands::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        commands::exit_quietly_on_closed_stdout();
    }
    if let Err(e) = commands::init(&cli.global) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(cmd) => commands::run(commands::topic::run(cmd)),
        Command::Produce(args) => commands::run(commands::produce::run(args)),
        Command::Consume(args) => commands::run(commands::consume::run(args)),
        Command::Offsets(args) => commands::run(commands::offsets::run(args)),
        Command::Cluster(cmd) => commands::run(commands::cluster::run(cmd)),
        Command::Bench(args) => commands::bench::run(args),
        Command::Group(cmd) => commands::run(commands::group::run(cmd)),
        Command::Txn(cmd) => commands::run(commands::txn::run(cmd)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if commands::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<commands::ExitStatus>().is_some() => {
            let status = e.downcast_ref::<commands::ExitStatus>().expect("checked");
            if !status.message.is_empty() {
                eprintln!("{}", status.message);
            }
            std::process::ExitCode::from(status.code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
