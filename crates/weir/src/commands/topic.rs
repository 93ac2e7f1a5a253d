//! `weir topic ...`: create, list, describe, alter, add partitions, delete.

use anyhow::Context as _;
use weir_client::{AlterConfigOp, ConfigResource, NewTopic};

use super::{ConnectArgs, parse_key_value};

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names, one per line.
    List(ListArgs),
    /// Show a topic's partitions, leaders and configs.
    Describe(NameArgs),
    /// Delete a topic and all its data.
    Delete(NameArgs),
    /// Set or remove topic configs (IncrementalAlterConfigs).
    Alter(AlterArgs),
    /// Grow a topic to a larger number of partitions.
    AddPartitions(AddPartitionsArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// Number of partitions (default: the broker's default).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replicas per partition (default: the broker's default).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Topic config, e.g. --config retention.ms=60000 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Also list internal topics (e.g. __consumer_offsets).
    #[arg(long)]
    pub internal: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    pub name: String,
    /// Config to set (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Config to reset to its default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_configs: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct AddPartitionsArgs {
    pub name: String,
    /// The new total number of partitions.
    #[arg(long)]
    pub count: i32,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(args) => create(args).await,
        TopicCommand::List(args) => list(args).await,
        TopicCommand::Describe(args) => describe(args).await,
        TopicCommand::Delete(args) => delete(args).await,
        TopicCommand::Alter(args) => alter(args).await,
        TopicCommand::AddPartitions(args) => add_partitions(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let topic = NewTopic {
        name: args.name.clone(),
        num_partitions: args.partitions.unwrap_or(-1),
        replication_factor: args.replication_factor.unwrap_or(-1),
        configs: args.configs,
    };
    client.create_topic(&topic).await?;
    println!("created topic {}", args.name);
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let metadata = client.metadata(None, false).await?;
    let mut names: Vec<&str> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none() && (args.internal || !t.is_internal))
        .map(|t| t.name.as_str())
        .collect();
    names.sort_unstable();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

async fn describe(args: NameArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    client.invalidate_topic(&args.name);
    let info = client.topic(&args.name, false).await?;
    println!("topic: {}", info.name);
    if info.topic_id != [0; 16] {
        println!("id: {}", hex(&info.topic_id));
    }
    if info.is_internal {
        println!("internal: true");
    }
    println!("partitions: {}", info.partitions.len());
    for p in &info.partitions {
        let error = p
            .error
            .map(|e| format!("  error {}", e.name()))
            .unwrap_or_default();
        println!(
            "  partition {}  leader {}  epoch {}  replicas {:?}  isr {:?}{}",
            p.partition, p.leader_id, p.leader_epoch, p.replicas, p.isr, error
        );
    }
    // The producers each partition's log knows (DescribeProducers): idempotent ones, and
    // transactional ones with the start of their open transaction.
    let mut producers_header_printed = false;
    for p in &info.partitions {
        let producers = match client.describe_producers(&info.name, p.partition).await {
            Ok(producers) => producers,
            Err(e) => {
                println!("  partition {}  producers: unavailable ({e})", p.partition);
                continue;
            }
        };
        if producers.is_empty() {
            continue;
        }
        if !producers_header_printed {
            println!("producers:");
            producers_header_printed = true;
        }
        for pr in producers {
            let txn = if pr.current_txn_start_offset >= 0 {
                format!(
                    "  open transaction from offset {}",
                    pr.current_txn_start_offset
                )
            } else {
                String::new()
            };
            println!(
                "  partition {}  producer {}  epoch {}  last sequence {}  last timestamp {}  \
                 coordinator epoch {}{}",
                p.partition,
                pr.producer_id,
                pr.producer_epoch,
                pr.last_sequence,
                pr.last_timestamp,
                pr.coordinator_epoch,
                txn
            );
        }
    }
    let configs = client
        .describe_configs(&ConfigResource::topic(&args.name), None)
        .await
        .context("could not read the topic's configs")?;
    println!("configs:");
    let mut configs = configs;
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    for c in configs {
        let value = if c.is_sensitive {
            "(sensitive)".to_owned()
        } else {
            c.value.unwrap_or_else(|| "null".to_owned())
        };
        println!("  {}={}  ({})", c.name, value, c.source.name());
    }
    Ok(())
}

async fn delete(args: NameArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    client.delete_topic(&args.name).await?;
    println!("deleted topic {}", args.name);
    Ok(())
}

async fn alter(args: AlterArgs) -> anyhow::Result<()> {
    if args.configs.is_empty() && args.delete_configs.is_empty() {
        anyhow::bail!("nothing to change: pass --config KEY=VALUE and/or --delete-config KEY");
    }
    let mut client = args.connect.connect().await?;
    let ops: Vec<AlterConfigOp> = args
        .configs
        .iter()
        .map(|(k, v)| AlterConfigOp::set(k, v))
        .chain(args.delete_configs.iter().map(AlterConfigOp::delete))
        .collect();
    client
        .incremental_alter_configs(&ConfigResource::topic(&args.name), &ops)
        .await?;
    println!("altered {} config(s) of topic {}", ops.len(), args.name);
    Ok(())
}

async fn add_partitions(args: AddPartitionsArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    client.create_partitions(&args.name, args.count).await?;
    println!("topic {} now has {} partitions", args.name, args.count);
    Ok(())
}
