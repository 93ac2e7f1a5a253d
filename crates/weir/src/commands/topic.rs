//! `weir topic ...`: create, list, describe, alter, add partitions, trim, delete.

use anyhow::Context as _;
use serde::Serialize;
use weir_client::{AlterConfigOp, Client, ConfigResource, NewTopic, OffsetSpec};

use super::{ConnectArgs, OutputFormat, parse_key_value, print_json};

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create one or more topics.
    Create(CreateArgs),
    /// List topic names, one per line.
    List(ListArgs),
    /// Show a topic's partitions, leaders and configs (and, with --offsets,
    /// each partition's log start, high watermark, last stable offset and size).
    Describe(DescribeArgs),
    /// Delete one or more topics and all their data.
    Delete(DeleteArgs),
    /// Set or remove topic configs (IncrementalAlterConfigs).
    Alter(AlterArgs),
    /// Add partitions to a topic: -n/--num says how many to add (as rpk's
    /// -n), --total the new partition count.
    AddPartitions(AddPartitionsArgs),
    /// Delete the records before an offset (DeleteRecords); a dry run unless --execute.
    Trim(TrimArgs),
    /// Run a compaction pass now on every replica of a compacted topic, whatever its dirty
    /// ratio, and print each partition's state after it (Weir's own WeirCompaction API).
    Compact(CompactArgs),
}

#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Topic name(s).
    #[arg(required = true, num_args = 1..)]
    pub names: Vec<String>,
    /// Number of partitions (default: the broker's default).
    #[arg(short = 'p', long)]
    pub partitions: Option<i32>,
    /// Replicas per partition (default: the broker's default).
    #[arg(short = 'r', long)]
    pub replication_factor: Option<i16>,
    /// Topic config, e.g. --config retention.ms=60000 (repeatable).
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Also list internal topics (e.g. __consumer_offsets).
    #[arg(long)]
    pub internal: bool,
    /// text: one name per line; json: [{"name", "partitions", "internal"}].
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    pub name: String,
    /// Also show each partition's log start, high watermark, last stable
    /// offset and size on disk.
    #[arg(long)]
    pub offsets: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Topic name(s).
    #[arg(required = true, num_args = 1..)]
    pub names: Vec<String>,
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
#[command(group(clap::ArgGroup::new("how_many").required(true).args(["num", "total"])))]
pub struct AddPartitionsArgs {
    pub name: String,
    /// How many partitions to add (rpk's -n).
    #[arg(short = 'n', long)]
    pub num: Option<i32>,
    /// The new total number of partitions.
    #[arg(long)]
    pub total: Option<i32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct TrimArgs {
    pub name: String,
    /// Delete every record before this offset; `end` empties the partition.
    #[arg(short = 'o', long, value_name = "OFFSET|end")]
    pub offset: String,
    /// Only this partition (default: every partition).
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
    /// Apply the change; without it the plan is only printed.
    #[arg(long)]
    pub execute: bool,
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
        TopicCommand::Trim(args) => trim(args).await,
        TopicCommand::Compact(args) => compact(args).await,
    }
}

/// Prints each topic's outcome; fails if any failed.
fn report_each(
    verb: &str,
    results: Vec<(String, Result<(), weir_client::ClientError>)>,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for (name, result) in results {
        match result {
            Ok(()) => println!("{verb} topic {name}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} topic(s) failed");
    }
    Ok(())
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let topics: Vec<NewTopic> = args
        .names
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            num_partitions: args.partitions.unwrap_or(-1),
            replication_factor: args.replication_factor.unwrap_or(-1),
            configs: args.configs.clone(),
        })
        .collect();
    let results = client.create_topics(&topics, false).await?;
    report_each("created", results)
}

/// `topic list --format json`: one entry per topic.
#[derive(Serialize)]
struct TopicListing<'a> {
    name: &'a str,
    partitions: usize,
    internal: bool,
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let metadata = client.metadata(None, false).await?;
    let mut topics: Vec<TopicListing> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none() && (args.internal || !t.is_internal))
        .map(|t| TopicListing {
            name: &t.name,
            partitions: t.partitions.len(),
            internal: t.is_internal,
        })
        .collect();
    topics.sort_unstable_by(|a, b| a.name.cmp(b.name));
    match args.format {
        OutputFormat::Json => print_json(&topics)?,
        OutputFormat::Text => {
            for t in topics {
                println!("{}", t.name);
            }
        }
    }
    Ok(())
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `topic describe --format json`. Fields are only ever added.
#[derive(Serialize)]
struct TopicDescription {
    name: String,
    /// Hex; absent when the broker has no topic ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    internal: bool,
    partitions: Vec<PartitionDescription>,
    producers: Vec<ProducerDescription>,
    configs: Vec<ConfigDescription>,
}

#[derive(Serialize)]
struct PartitionDescription {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// The Kafka error name, when the partition has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// With --offsets only.
    #[serde(skip_serializing_if = "Option::is_none")]
    offsets: Option<PartitionOffsets>,
    /// Why the partition's producers could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    producers_error: Option<String>,
    /// Compacted topics only: the leader's cleaner state for the partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    compaction: Option<CompactionDescription>,
}

/// A partition's cleaner state on one broker (WeirCompaction).
#[derive(Serialize, Clone, Copy)]
struct CompactionDescription {
    /// The offset the log is cleaned up to (the next pass starts there).
    last_cleaned_offset: i64,
    /// Dirty bytes / cleanable bytes (sealed segments below the last stable offset).
    dirty_ratio: f64,
    clean_bytes: i64,
    dirty_bytes: i64,
}

/// A producer a partition's log knows (DescribeProducers).
#[derive(Serialize)]
struct ProducerDescription {
    partition: i32,
    producer_id: i64,
    producer_epoch: i32,
    last_sequence: i32,
    last_timestamp: i64,
    coordinator_epoch: i32,
    /// -1 unless the producer has an open transaction here.
    current_txn_start_offset: i64,
}

/// Where a partition's log starts and ends.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct PartitionOffsets {
    pub log_start: i64,
    pub high_watermark: i64,
    /// The end a read_committed consumer sees (below the high watermark
    /// while a transaction is open).
    pub last_stable: i64,
    /// Bytes on disk (DescribeLogDirs); -1 if unknown.
    pub size_bytes: i64,
}

#[derive(Serialize)]
struct ConfigDescription {
    name: String,
    /// null for a sensitive or unset value.
    value: Option<String>,
    source: &'static str,
    sensitive: bool,
}

/// Log start, high watermark and last stable offset of one partition.
pub async fn partition_offsets(
    client: &mut Client,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64, i64)> {
    let what = || format!("listing the offsets of {topic}-{partition}");
    let log_start = client
        .list_offsets(topic, partition, OffsetSpec::Earliest)
        .await
        .with_context(what)?
        .offset;
    let high_watermark = client
        .list_offsets(topic, partition, OffsetSpec::Latest)
        .await
        .with_context(what)?
        .offset;
    let last_stable = client
        .list_offsets_isolated(topic, partition, OffsetSpec::Latest, true)
        .await
        .with_context(what)?
        .offset;
    Ok((log_start, high_watermark, last_stable))
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    client.invalidate_topic(&args.name);
    let info = client.topic(&args.name, false).await?;
    let sizes: std::collections::HashMap<i32, i64> = if args.offsets {
        client
            .describe_log_dirs(Some(std::slice::from_ref(&args.name)))
            .await
            .context("could not read partition sizes (DescribeLogDirs)")?
            .into_iter()
            .flat_map(|dir| dir.partitions)
            .filter(|p| p.topic == args.name)
            .map(|p| (p.partition, p.size_bytes))
            .collect()
    } else {
        Default::default()
    };
    let mut partitions = Vec::with_capacity(info.partitions.len());
    for p in &info.partitions {
        let offsets = if args.offsets {
            let (log_start, high_watermark, last_stable) =
                partition_offsets(&mut client, &args.name, p.partition).await?;
            Some(PartitionOffsets {
                log_start,
                high_watermark,
                last_stable,
                size_bytes: sizes.get(&p.partition).copied().unwrap_or(-1),
            })
        } else {
            None
        };
        partitions.push(PartitionDescription {
            partition: p.partition,
            leader: p.leader_id,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            error: p.error.map(|e| e.name().to_owned()),
            offsets,
            producers_error: None,
            compaction: None,
        });
    }
    // The producers each partition's log knows (DescribeProducers): idempotent
    // ones, and transactional ones with the start of their open transaction.
    let mut producers = Vec::new();
    for p in partitions.iter_mut() {
        match client.describe_producers(&info.name, p.partition).await {
            Ok(list) => producers.extend(list.into_iter().map(|pr| ProducerDescription {
                partition: p.partition,
                producer_id: pr.producer_id,
                producer_epoch: pr.producer_epoch,
                last_sequence: pr.last_sequence,
                last_timestamp: pr.last_timestamp,
                coordinator_epoch: pr.coordinator_epoch,
                current_txn_start_offset: pr.current_txn_start_offset,
            })),
            Err(e) => p.producers_error = Some(e.to_string()),
        }
    }
    let mut configs = client
        .describe_configs(&ConfigResource::topic(&args.name), None)
        .await
        .context("could not read the topic's configs")?;
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let compacted = configs.iter().any(|c| {
        c.name == "cleanup.policy"
            && c.value
                .as_deref()
                .is_some_and(|v| v.split(',').any(|p| p == "compact"))
    });
    if compacted {
        // Each partition's state as its leader's log has it.
        let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
        for p in &partitions {
            by_leader.entry(p.leader).or_default().push(p.partition);
        }
        for (leader, indexes) in by_leader {
            if leader < 0 {
                continue;
            }
            let states = client
                .weir_compaction(leader, &info.name, indexes, false)
                .await
                .context("could not read the partitions' compaction state (WeirCompaction)")?;
            for st in states.into_iter().filter(|st| st.error_code == 0) {
                if let Some(p) = partitions
                    .iter_mut()
                    .find(|p| p.partition == st.partition_index)
                {
                    p.compaction = Some(CompactionDescription {
                        last_cleaned_offset: st.last_cleaned_offset,
                        dirty_ratio: st.dirty_ratio,
                        clean_bytes: st.clean_bytes,
                        dirty_bytes: st.dirty_bytes,
                    });
                }
            }
        }
    }
    let description = TopicDescription {
        name: info.name.clone(),
        id: (info.topic_id != [0; 16]).then(|| hex(&info.topic_id)),
        internal: info.is_internal,
        partitions,
        producers,
        configs: configs
            .into_iter()
            .map(|c| ConfigDescription {
                value: if c.is_sensitive { None } else { c.value },
                name: c.name,
                source: c.source.name(),
                sensitive: c.is_sensitive,
            })
            .collect(),
    };
    match args.format {
        OutputFormat::Json => print_json(&description),
        OutputFormat::Text => {
            print_description(&description);
            Ok(())
        }
    }
}

fn print_description(d: &TopicDescription) {
    println!("topic: {}", d.name);
    if let Some(id) = &d.id {
        println!("id: {id}");
    }
    if d.internal {
        println!("internal: true");
    }
    println!("partitions: {}", d.partitions.len());
    for p in &d.partitions {
        let error = p
            .error
            .as_deref()
            .map(|e| format!("  error {e}"))
            .unwrap_or_default();
        println!(
            "  partition {}  leader {}  epoch {}  replicas {:?}  isr {:?}{}",
            p.partition, p.leader, p.leader_epoch, p.replicas, p.isr, error
        );
    }
    if d.partitions.iter().any(|p| p.offsets.is_some()) {
        println!("offsets:");
        println!("  PARTITION\tLOG-START\tHIGH-WATERMARK\tLAST-STABLE\tSIZE-BYTES");
        for p in &d.partitions {
            if let Some(o) = p.offsets {
                println!(
                    "  {}\t{}\t{}\t{}\t{}",
                    p.partition, o.log_start, o.high_watermark, o.last_stable, o.size_bytes
                );
            }
        }
    }
    if d.partitions.iter().any(|p| p.compaction.is_some()) {
        println!("compaction:");
        println!("  PARTITION\tLAST-CLEANED-OFFSET\tDIRTY-RATIO\tCLEAN-BYTES\tDIRTY-BYTES");
        for p in &d.partitions {
            if let Some(c) = p.compaction {
                println!(
                    "  {}\t{}\t{:.3}\t{}\t{}",
                    p.partition, c.last_cleaned_offset, c.dirty_ratio, c.clean_bytes, c.dirty_bytes
                );
            }
        }
    }
    for p in &d.partitions {
        if let Some(e) = &p.producers_error {
            println!("  partition {}  producers: unavailable ({e})", p.partition);
        }
    }
    if !d.producers.is_empty() {
        println!("producers:");
    }
    for pr in &d.producers {
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
            pr.partition,
            pr.producer_id,
            pr.producer_epoch,
            pr.last_sequence,
            pr.last_timestamp,
            pr.coordinator_epoch,
            txn
        );
    }
    println!("configs:");
    for c in &d.configs {
        let value = if c.sensitive {
            "(sensitive)"
        } else {
            c.value.as_deref().unwrap_or("null")
        };
        println!("  {}={}  ({})", c.name, value, c.source);
    }
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    client.invalidate_topic(&args.name);
    let info = client.topic(&args.name, false).await?;
    let indexes: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    // Every replica cleans its own log, so every broker is asked; each answers for the
    // partitions it hosts.
    let nodes: Vec<i32> = client.brokers().map(|b| b.node_id).collect();
    println!("NODE\tPARTITION\tLAST-CLEANED-OFFSET\tDIRTY-RATIO\tCLEAN-BYTES\tDIRTY-BYTES");
    for node in nodes {
        let states = client
            .weir_compaction(node, &args.name, indexes.clone(), true)
            .await
            .with_context(|| format!("compacting {} on node {node}", args.name))?;
        for st in states.into_iter().filter(|st| st.error_code == 0) {
            println!(
                "{node}\t{}\t{}\t{:.3}\t{}\t{}",
                st.partition_index,
                st.last_cleaned_offset,
                st.dirty_ratio,
                st.clean_bytes,
                st.dirty_bytes
            );
        }
    }
    Ok(())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let results = client.delete_topics(&names).await?;
    report_each("deleted", results)
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
    client.invalidate_topic(&args.name);
    let current =
        i32::try_from(client.topic(&args.name, false).await?.partitions.len()).unwrap_or(i32::MAX);
    let total = match (args.num, args.total) {
        (Some(n), _) if n < 1 => {
            anyhow::bail!("-n/--num is how many partitions to add; it must be at least 1")
        }
        (Some(n), _) => current.saturating_add(n),
        (None, Some(t)) if t <= current => anyhow::bail!(
            "topic {} already has {current} partitions; --total must be larger (partitions can only be added)",
            args.name
        ),
        (None, Some(t)) => t,
        (None, None) => anyhow::bail!("pass -n/--num (how many to add) or --total"),
    };
    client.create_partitions(&args.name, total).await?;
    println!(
        "topic {} now has {total} partitions ({} added)",
        args.name,
        total - current
    );
    Ok(())
}

async fn trim(args: TrimArgs) -> anyhow::Result<()> {
    let to_end = args.offset == "end";
    let before: i64 = if to_end {
        -1
    } else {
        args.offset
            .parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--offset must be a number >= 0 or `end`, got '{}'",
                    args.offset
                )
            })?
    };
    let mut client = args.connect.connect().await?;
    let info = client.topic(&args.name, false).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if info.partitions.iter().any(|i| i.partition == p) => vec![p],
        Some(p) => anyhow::bail!(
            "topic '{}' has no partition {p} (it has {})",
            args.name,
            info.partitions.len()
        ),
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    println!("PARTITION\tLOG-START\tNEW-LOG-START\tHIGH-WATERMARK");
    let mut plan = Vec::new();
    for partition in partitions {
        let (log_start, high_watermark, _) =
            partition_offsets(&mut client, &args.name, partition).await?;
        let target = if to_end {
            high_watermark
        } else {
            before.clamp(log_start, high_watermark)
        };
        println!("{partition}\t{log_start}\t{target}\t{high_watermark}");
        plan.push((partition, target));
    }
    if !args.execute {
        eprintln!("dry run: add --execute to delete the records before these offsets");
        return Ok(());
    }
    for (partition, target) in plan {
        let low_watermark = client
            .delete_records(&args.name, partition, target)
            .await
            .with_context(|| format!("trimming {}-{partition}", args.name))?;
        eprintln!(
            "{}-{partition}: log now starts at {low_watermark}",
            args.name
        );
    }
    Ok(())
}
