//! `weir txn list|describe`: transactions from the operator's side.

use super::ConnectArgs;

#[derive(clap::Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactional ids: id, producer id, state (tab-separated).
    List(ListArgs),
    /// State, producer id and epoch, timeout and partitions of one transactional id.
    Describe(DescribeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only ids in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
    /// CompleteCommit, CompleteAbort, ...); repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
    /// Only ids with this producer id; repeatable.
    #[arg(long = "producer-id")]
    producer_ids: Vec<i64>,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    transactional_id: String,
}

pub async fn run(cmd: TxnCommand) -> anyhow::Result<()> {
    match cmd {
        TxnCommand::List(args) => {
            let mut client = args.connect.connect().await?;
            for t in client
                .list_transactions(&args.states, &args.producer_ids)
                .await?
            {
                println!("{}\t{}\t{}", t.transactional_id, t.producer_id, t.state);
            }
            Ok(())
        }
        TxnCommand::Describe(args) => {
            let mut client = args.connect.connect().await?;
            let t = client.describe_transaction(&args.transactional_id).await?;
            println!("transactional id: {}", t.transactional_id);
            println!("state: {}", t.state);
            println!(
                "producer id: {}  epoch: {}",
                t.producer_id, t.producer_epoch
            );
            println!("timeout ms: {}", t.timeout_ms);
            println!("start ms: {}", t.start_ms);
            println!("partitions:");
            for (topic, partitions) in &t.partitions {
                for p in partitions {
                    println!("  {topic}-{p}");
                }
            }
            Ok(())
        }
    }
}
