//! `weir group list|describe|delete|reset-offsets`: consumer groups from the
//! operator's side. `describe` shows members, their assignments, and per
//! partition the committed offset, the log end offset and the lag.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use weir_client::{Client, OffsetSpec};

use super::ConnectArgs;

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Members, assignments, committed offsets and lag of one group.
    Describe(DescribeArgs),
    /// Delete a group (it must have no active members).
    Delete(DeleteArgs),
    /// Move a group's committed offsets (the group must have no active members).
    ResetOffsets(ResetArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only groups in this state (Empty, Stable, PreparingRebalance, ...); repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
    /// The topic whose offsets move (every partition of it).
    #[arg(long)]
    topic: String,
    /// earliest | latest | offset:N | timestamp:MS
    #[arg(long)]
    to: String,
    /// Apply the change; without it the plan is only printed.
    #[arg(long)]
    execute: bool,
}

pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List(args) => list(args).await,
        GroupCommand::Describe(args) => describe(args).await,
        GroupCommand::Delete(args) => {
            let mut client = args.connect.connect().await?;
            client.delete_group(&args.group).await?;
            eprintln!("deleted group {}", args.group);
            Ok(())
        }
        GroupCommand::ResetOffsets(args) => reset(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let groups = client.list_groups(&args.states).await?;
    for g in groups {
        println!("{}\t{}\t{}", g.group_id, g.state, g.protocol_type);
    }
    Ok(())
}

/// The lag table for one group: (topic, partition) -> (committed, log end).
async fn offsets_and_ends(
    client: &mut Client,
    group: &str,
    also: &[(String, i32)],
) -> anyhow::Result<BTreeMap<(String, i32), (Option<i64>, i64)>> {
    let mut table: BTreeMap<(String, i32), (Option<i64>, i64)> = BTreeMap::new();
    for c in client.committed_offsets(group).await? {
        table.insert((c.topic, c.partition), (Some(c.offset), -1));
    }
    for key in also {
        table.entry(key.clone()).or_insert((None, -1));
    }
    for ((topic, partition), (_, end)) in table.iter_mut() {
        *end = client
            .list_offsets(topic, *partition, OffsetSpec::Latest)
            .await?
            .offset;
    }
    Ok(table)
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let group = client.describe_group(&args.group).await?;
    println!(
        "group: {}  state: {}  protocol: {} {}",
        group.group_id, group.state, group.protocol_type, group.protocol
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    println!("members: {}", group.members.len());
    for m in &group.members {
        let instance = m
            .instance_id
            .as_deref()
            .map(|i| format!(" instance={i}"))
            .unwrap_or_default();
        let assigned: Vec<String> = m
            .assignment
            .iter()
            .map(|(t, ps)| {
                format!(
                    "{t}:{}",
                    ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        println!(
            "  {}  client={} host={}{}  [{}]",
            m.member_id,
            m.client_id,
            m.host,
            instance,
            assigned.join(" ")
        );
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m.member_id.clone());
            }
        }
    }
    let assigned: Vec<(String, i32)> = owner.keys().cloned().collect();
    let table = offsets_and_ends(&mut client, &args.group, &assigned).await?;
    println!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER");
    for ((topic, partition), (committed, end)) in &table {
        let (committed_text, lag_text) = match committed {
            Some(c) => (c.to_string(), (end - c).max(0).to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let member = owner
            .get(&(topic.clone(), *partition))
            .map_or("-", String::as_str);
        println!("{topic}\t{partition}\t{committed_text}\t{end}\t{lag_text}\t{member}");
    }
    Ok(())
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let topic = client
        .topic(&args.topic, false)
        .await
        .with_context(|| format!("looking up topic '{}'", args.topic))?;
    let spec = match args.to.as_str() {
        "earliest" => OffsetSpec::Earliest,
        "latest" => OffsetSpec::Latest,
        other => match other.split_once(':') {
            Some(("timestamp", ms)) => {
                OffsetSpec::Timestamp(ms.parse().context("--to timestamp:MS needs a number")?)
            }
            Some(("offset", _)) => OffsetSpec::Latest, // resolved below
            _ => bail!("--to must be earliest, latest, offset:N or timestamp:MS, got '{other}'"),
        },
    };
    let fixed: Option<i64> = match args.to.split_once(':') {
        Some(("offset", n)) => Some(n.parse().context("--to offset:N needs a number")?),
        _ => None,
    };
    let mut plan = Vec::new();
    for partition in topic.partitions.iter().map(|p| p.partition) {
        let target = match fixed {
            Some(n) => {
                let end = client
                    .list_offsets(&args.topic, partition, OffsetSpec::Latest)
                    .await?
                    .offset;
                let start = client
                    .list_offsets(&args.topic, partition, OffsetSpec::Earliest)
                    .await?
                    .offset;
                n.clamp(start, end)
            }
            None => {
                let found = client
                    .list_offsets(&args.topic, partition, spec)
                    .await?
                    .offset;
                if found < 0 {
                    client
                        .list_offsets(&args.topic, partition, OffsetSpec::Latest)
                        .await?
                        .offset
                } else {
                    found
                }
            }
        };
        println!("{}\t{partition}\t{target}", args.topic);
        plan.push((args.topic.clone(), partition, target));
    }
    if args.execute {
        client.commit_offsets(&args.group, &plan).await.context(
            "committing new offsets (is the group still active? stop its consumers first)",
        )?;
        eprintln!(
            "reset {} partition(s) of {} for group {}",
            plan.len(),
            args.topic,
            args.group
        );
    } else {
        eprintln!("dry run: add --execute to commit these offsets");
    }
    Ok(())
}
