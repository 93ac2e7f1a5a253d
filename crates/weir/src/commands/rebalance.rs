//! `weir cluster reassign|reassignments|rebalance|decommission|recommission`:
//! partition reassignment (KIP-455) from the command line. The plans come
//! from [`super::plan`]; they are carried out with AlterPartitionReassignments
//! and followed with ListPartitionReassignments and DescribeLogDirs until
//! every move is done, then leaders go back to the (new) preferred replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use weir_client::{AlterConfigOp, Client, ConfigResource, ErrorCode};
use weir_protocol::messages::alter_partition_reassignments::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use weir_protocol::messages::elect_leaders::{ElectLeadersRequest, TopicPartitions};
use weir_protocol::messages::list_partition_reassignments::ListPartitionReassignmentsRequest;

use super::plan::{Move, PartitionLoad, Plan, plan};
use super::{ConnectArgs, OutputFormat, print_json};

/// Partitions per AlterPartitionReassignments request (the controller takes
/// at most 10,000 changes per decision).
const PARTITIONS_PER_REQUEST_MAX: usize = 5_000;
/// How often `--execute` looks at the moves.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct ReassignArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub partition: i32,
    /// The new replicas, comma-separated (the first is the preferred leader).
    #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
    pub replicas: Vec<i32>,
    /// Cancel the partition's running reassignment instead.
    #[arg(long, conflicts_with = "replicas")]
    pub cancel: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ReassignmentsArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct RebalanceArgs {
    /// Carry the plan out (default: print it only, a dry run).
    #[arg(long)]
    pub execute: bool,
    /// Cap replication catch-up at this many bytes per second on every
    /// broker while the moves run (Kafka's `leader.replication.throttled.rate`
    /// and `follower.replication.throttled.rate`, with every replica of the
    /// moved topics throttled); removed when done.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub throttle: Option<u64>,
    /// Give up waiting for the moves after this long (they go on).
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct DecommissionArgs {
    /// The broker to drain.
    pub node: i32,
    /// Print the plan only.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub throttle: Option<u64>,
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The cluster as the planner needs it.
struct Snapshot {
    brokers: BTreeMap<i32, Option<String>>,
    partitions: Vec<PartitionLoad>,
}

async fn snapshot(client: &mut Client) -> anyhow::Result<Snapshot> {
    let metadata = client.metadata(None, false).await?;
    let brokers = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id, b.rack.clone()))
        .collect();
    let sizes = partition_sizes(client).await?;
    let mut partitions = Vec::new();
    for topic in &metadata.topics {
        for p in &topic.partitions {
            partitions.push(PartitionLoad {
                topic: topic.name.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
                size_bytes: sizes
                    .get(&(topic.name.clone(), p.partition))
                    .map_or(0, |by_broker| {
                        by_broker.values().copied().max().unwrap_or(0)
                    }),
            });
        }
    }
    Ok(Snapshot {
        brokers,
        partitions,
    })
}

/// Every replica's size: (topic, partition) -> broker -> bytes.
async fn partition_sizes(
    client: &mut Client,
) -> anyhow::Result<BTreeMap<(String, i32), BTreeMap<i32, u64>>> {
    let mut sizes: BTreeMap<(String, i32), BTreeMap<i32, u64>> = BTreeMap::new();
    for dir in client.describe_log_dirs(None).await? {
        for p in dir.partitions {
            sizes
                .entry((p.topic, p.partition))
                .or_default()
                .insert(dir.broker_id, p.size_bytes.max(0) as u64);
        }
    }
    Ok(sizes)
}

#[derive(Serialize)]
struct PlanJson<'a> {
    moves: Vec<MoveJson<'a>>,
    bytes_to_move: u64,
    replicas_per_broker: &'a BTreeMap<i32, usize>,
    leaders_per_broker: &'a BTreeMap<i32, usize>,
}

#[derive(Serialize)]
struct MoveJson<'a> {
    topic: &'a str,
    partition: i32,
    from: &'a [i32],
    to: &'a [i32],
    bytes: u64,
}

fn print_plan(plan: &Plan, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return print_json(&PlanJson {
            moves: plan
                .moves
                .iter()
                .map(|m| MoveJson {
                    topic: &m.topic,
                    partition: m.partition,
                    from: &m.from,
                    to: &m.to,
                    bytes: m.bytes,
                })
                .collect(),
            bytes_to_move: plan.bytes_to_move(),
            replicas_per_broker: &plan.replicas_per_broker,
            leaders_per_broker: &plan.leaders_per_broker,
        });
    }
    if plan.moves.is_empty() {
        println!("balanced: nothing to move");
    } else {
        println!("TOPIC\tPARTITION\tFROM\tTO\tBYTES");
        for m in &plan.moves {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                m.topic,
                m.partition,
                list(&m.from),
                list(&m.to),
                m.bytes
            );
        }
    }
    println!(
        "{} partition(s) change, {} to copy",
        plan.moves.len(),
        human_bytes(plan.bytes_to_move())
    );
    println!("BROKER\tREPLICAS\tPREFERRED-LEADERS (after)");
    for (b, r) in &plan.replicas_per_broker {
        println!(
            "{b}\t{r}\t{}",
            plan.leaders_per_broker.get(b).copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn list(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{bytes} B")
    }
}

pub async fn reassign(args: ReassignArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let replicas = (!args.cancel).then(|| args.replicas.clone());
    submit(
        &mut client,
        &[(args.topic.clone(), args.partition, replicas)],
    )
    .await?;
    if args.cancel {
        println!(
            "cancelled the reassignment of {}-{}",
            args.topic, args.partition
        );
    } else {
        println!(
            "reassigning {}-{} to {}",
            args.topic,
            args.partition,
            list(&args.replicas)
        );
    }
    Ok(())
}

/// Sends the reassignments; any partition refused fails the command with
/// Kafka's error name and message.
async fn submit(
    client: &mut Client,
    items: &[(String, i32, Option<Vec<i32>>)],
) -> anyhow::Result<()> {
    for chunk in items.chunks(PARTITIONS_PER_REQUEST_MAX) {
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for (topic, partition, replicas) in chunk {
            let entry = ReassignablePartition {
                partition_index: *partition,
                replicas: replicas.clone(),
            };
            match topics.iter_mut().find(|t| t.name == *topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(ReassignableTopic {
                    name: topic.clone(),
                    partitions: vec![entry],
                }),
            }
        }
        let request = AlterPartitionReassignmentsRequest {
            timeout_ms: 60_000,
            allow_replication_factor_change: true,
            topics,
        };
        let response = client.send_any(&request).await?;
        if response.error_code != 0 {
            anyhow::bail!(
                "the controller refused the reassignment: {}{}",
                ErrorCode::from_code_or_unknown(response.error_code).name(),
                response
                    .error_message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        let refused: Vec<String> = response
            .responses
            .iter()
            .flat_map(|t| {
                t.partitions.iter().filter(|p| p.error_code != 0).map(|p| {
                    format!(
                        "{}-{}: {}{}",
                        t.name,
                        p.partition_index,
                        ErrorCode::from_code_or_unknown(p.error_code).name(),
                        p.error_message
                            .as_ref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    )
                })
            })
            .collect();
        if !refused.is_empty() {
            anyhow::bail!("refused: {}", refused.join("; "));
        }
    }
    Ok(())
}

/// Ongoing reassignments: (topic, partition) -> (replicas, adding, removing).
type Ongoing = BTreeMap<(String, i32), (Vec<i32>, Vec<i32>, Vec<i32>)>;

async fn ongoing(client: &mut Client) -> anyhow::Result<Ongoing> {
    let response = client
        .send_any(&ListPartitionReassignmentsRequest {
            timeout_ms: 30_000,
            topics: None,
        })
        .await?;
    if response.error_code != 0 {
        anyhow::bail!(
            "ListPartitionReassignments: {}",
            ErrorCode::from_code_or_unknown(response.error_code).name()
        );
    }
    Ok(response
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name;
            t.partitions.into_iter().map(move |p| {
                (
                    (name.clone(), p.partition_index),
                    (p.replicas, p.adding_replicas, p.removing_replicas),
                )
            })
        })
        .collect())
}

pub async fn reassignments(args: ReassignmentsArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let running = ongoing(&mut client).await?;
    if args.format == OutputFormat::Json {
        #[derive(Serialize)]
        struct Row<'a> {
            topic: &'a str,
            partition: i32,
            replicas: &'a [i32],
            adding: &'a [i32],
            removing: &'a [i32],
        }
        let rows: Vec<Row> = running
            .iter()
            .map(|((t, p), (r, a, d))| Row {
                topic: t,
                partition: *p,
                replicas: r,
                adding: a,
                removing: d,
            })
            .collect();
        return print_json(&rows);
    }
    if running.is_empty() {
        println!("no reassignment is running");
        return Ok(());
    }
    println!("TOPIC\tPARTITION\tREPLICAS\tADDING\tREMOVING");
    for ((t, p), (r, a, d)) in &running {
        println!("{t}\t{p}\t{}\t{}\t{}", list(r), list(a), list(d));
    }
    Ok(())
}

/// The per-broker dynamic config `weir cluster decommission` sets: placement
/// (the controller) and the planner keep new replicas off a marked broker
/// until `recommission` clears it. In the metadata log, so it survives
/// controller failover and restarts.
pub const DECOMMISSIONED: &str = "weir.decommissioned";

/// Which of `ids` carry the decommission mark (any broker answers for any
/// id, from its image).
pub async fn decommissioned(
    client: &mut Client,
    ids: impl IntoIterator<Item = i32>,
) -> anyhow::Result<BTreeSet<i32>> {
    let mut marked = BTreeSet::new();
    for id in ids {
        let configs = client
            .describe_configs(&ConfigResource::broker(id), Some(&[DECOMMISSIONED]))
            .await
            .with_context(|| format!("reading the decommission mark of broker {id}"))?;
        if configs
            .iter()
            .any(|c| c.name == DECOMMISSIONED && c.value.as_deref() == Some("true"))
        {
            marked.insert(id);
        }
    }
    Ok(marked)
}

async fn set_mark(client: &mut Client, node: i32, marked: bool) -> anyhow::Result<()> {
    let op = if marked {
        AlterConfigOp::set(DECOMMISSIONED, "true")
    } else {
        AlterConfigOp::delete(DECOMMISSIONED)
    };
    client
        .incremental_alter_configs(&ConfigResource::broker(node), &[op])
        .await
        .with_context(|| {
            format!(
                "{} the decommission mark of broker {node}",
                if marked { "setting" } else { "clearing" }
            )
        })
}

pub async fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = snapshot(&mut client).await?;
    // Decommissioned brokers take no replicas in a rebalance either.
    let excluded = decommissioned(&mut client, cluster.brokers.keys().copied()).await?;
    let plan = plan(&cluster.brokers, &cluster.partitions, &excluded)?;
    print_plan(&plan, args.format)?;
    if !args.execute {
        return Ok(());
    }
    execute(&mut client, &plan, args.throttle, args.timeout_s).await
}

pub async fn decommission(args: DecommissionArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = snapshot(&mut client).await?;
    if !cluster.brokers.contains_key(&args.node) {
        anyhow::bail!(
            "broker {} is not a live broker of this cluster (live: {})",
            args.node,
            list(&cluster.brokers.keys().copied().collect::<Vec<_>>())
        );
    }
    let mut excluded = decommissioned(&mut client, cluster.brokers.keys().copied()).await?;
    excluded.insert(args.node);
    let plan = plan(&cluster.brokers, &cluster.partitions, &excluded)
        .with_context(|| format!("refusing to decommission broker {}", args.node))?;
    print_plan(&plan, args.format)?;
    if args.dry_run {
        return Ok(());
    }
    // The mark first, so no partition created meanwhile lands on the broker.
    set_mark(&mut client, args.node, true).await?;
    execute(&mut client, &plan, args.throttle, args.timeout_s).await?;
    // Safe to stop only when no partition names it any more.
    let metadata = client.metadata(None, false).await?;
    let left: Vec<String> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.replicas.contains(&args.node))
                .map(move |p| format!("{}-{}", t.name, p.partition))
        })
        .collect();
    if !left.is_empty() {
        anyhow::bail!(
            "broker {} still holds {} replica(s) (new partitions placed meanwhile?): {}",
            args.node,
            left.len(),
            left.join(", ")
        );
    }
    println!(
        "broker {} holds no replicas: safe to stop (weir cluster recommission {} moves replicas back while it runs)",
        args.node, args.node
    );
    Ok(())
}

/// Recommission: a rebalance that counts the broker in again. It must be
/// running (live); replicas and leaders even out onto it.
pub async fn recommission(args: DecommissionArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = snapshot(&mut client).await?;
    if !cluster.brokers.contains_key(&args.node) {
        anyhow::bail!("broker {} is not live: start it first", args.node);
    }
    let mut excluded = decommissioned(&mut client, cluster.brokers.keys().copied()).await?;
    excluded.remove(&args.node);
    let plan = plan(&cluster.brokers, &cluster.partitions, &excluded)?;
    print_plan(&plan, args.format)?;
    if args.dry_run {
        return Ok(());
    }
    set_mark(&mut client, args.node, false).await?;
    execute(&mut client, &plan, args.throttle, args.timeout_s).await
}

/// Carries a plan out: throttles on (if asked), the reassignments sent,
/// progress printed every second until none of the plan's partitions is
/// moving, throttles off, then preferred-leader elections for the moved
/// partitions so leadership follows the new first replicas.
async fn execute(
    client: &mut Client,
    plan: &Plan,
    throttle: Option<u64>,
    timeout_s: u64,
) -> anyhow::Result<()> {
    if plan.moves.is_empty() {
        return Ok(());
    }
    let topics: BTreeSet<String> = plan.moves.iter().map(|m| m.topic.clone()).collect();
    if let Some(rate) = throttle {
        super::throttle::set(client, &topics, Some(rate)).await?;
    }
    let result = run_moves(client, plan, timeout_s).await;
    if throttle.is_some()
        && let Err(e) = super::throttle::set(client, &topics, None).await
    {
        eprintln!("could not remove the replication throttles: {e:#}");
    }
    result?;
    elect_preferred(client, &plan.moves).await;
    println!("done: {} partition(s) moved", plan.moves.len());
    Ok(())
}

async fn run_moves(client: &mut Client, plan: &Plan, timeout_s: u64) -> anyhow::Result<()> {
    let items: Vec<(String, i32, Option<Vec<i32>>)> = plan
        .moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition, Some(m.to.clone())))
        .collect();
    submit(client, &items).await?;
    let total = plan.bytes_to_move();
    let started = Instant::now();
    let wanted: BTreeSet<(String, i32)> = plan
        .moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition))
        .collect();
    let tty = std::io::stderr().is_terminal();
    loop {
        let running: Ongoing = ongoing(client)
            .await?
            .into_iter()
            .filter(|(k, _)| wanted.contains(k))
            .collect();
        let remaining = if running.is_empty() {
            0
        } else {
            remaining_bytes(client, &running).await.unwrap_or(total)
        };
        let moved = total.saturating_sub(remaining);
        let elapsed_s = started.elapsed().as_secs_f64().max(0.001);
        let rate = moved as f64 / elapsed_s;
        let eta = if rate > 0.0 {
            format!("{:.0} s", remaining as f64 / rate)
        } else {
            "?".into()
        };
        let line = format!(
            "{}/{} partitions moving, moved {} of {}, remaining {}, {}/s, ETA {eta}",
            running.len(),
            wanted.len(),
            human_bytes(moved),
            human_bytes(total),
            human_bytes(remaining),
            human_bytes(rate as u64),
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        if running.is_empty() {
            if tty {
                eprintln!();
            }
            eprintln!(
                "moved {} in {:.1} s",
                human_bytes(total),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(timeout_s) {
            anyhow::bail!(
                "{} partition(s) still moving after {timeout_s} s; they go on (see `weir cluster reassignments`)",
                running.len()
            );
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

/// Bytes the adding replicas of the running moves still lack: for each, the
/// largest replica's size minus its own.
async fn remaining_bytes(client: &mut Client, running: &Ongoing) -> anyhow::Result<u64> {
    let sizes = partition_sizes(client).await?;
    let mut remaining = 0;
    for (key, (_, adding, _)) in running {
        let by_broker = sizes.get(key).cloned().unwrap_or_default();
        let full = by_broker.values().copied().max().unwrap_or(0);
        for a in adding {
            remaining += full.saturating_sub(by_broker.get(a).copied().unwrap_or(0));
        }
    }
    Ok(remaining)
}

/// Leadership follows the new first replicas. Failures are reported, not
/// fatal: the moves are done, and the periodic preferred-leader rebalance
/// catches up later.
async fn elect_preferred(client: &mut Client, moves: &[Move]) {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for m in moves {
        by_topic
            .entry(m.topic.clone())
            .or_default()
            .push(m.partition);
    }
    let request = ElectLeadersRequest {
        election_type: 0,
        topic_partitions: Some(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect(),
        ),
        timeout_ms: 30_000,
    };
    if let Err(e) = client.send_any(&request).await {
        eprintln!("preferred-leader election after the moves failed: {e}");
    }
}
