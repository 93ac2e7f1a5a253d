//! `weir group list|describe|delete|reset-offsets|offset-delete`: consumer
//! groups from the operator's side. `describe` shows members, their
//! assignments, and per partition the committed offset, the log end offset
//! and the lag.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Serialize;
use weir_client::{Client, OffsetSpec};

use super::{ConnectArgs, OutputFormat, print_json};

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Members, assignments, committed offsets and lag of one group.
    Describe(DescribeArgs),
    /// Delete a group (it must have no active members).
    Delete(DeleteArgs),
    /// Move a group's committed offsets (the group must have no active
    /// members); a dry run unless --execute. `seek` is the rpk name.
    #[command(visible_alias = "seek")]
    ResetOffsets(ResetArgs),
    /// Delete a group's committed offsets of some topics or partitions.
    OffsetDelete(OffsetDeleteArgs),
}

/// Kafka's group states (org.apache.kafka.common.GroupState), as ListGroups
/// spells them.
const GROUP_STATES: [&str; 9] = [
    "Unknown",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
    "Empty",
    "Assigning",
    "Reconciling",
    "NotReady",
];

/// Accepts a state in any case and returns Kafka's spelling.
fn parse_state(s: &str) -> Result<String, String> {
    GROUP_STATES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(s))
        .map(|known| (*known).to_owned())
        .ok_or_else(|| {
            format!(
                "unknown group state '{s}'; expected one of {}",
                GROUP_STATES.join(", ")
            )
        })
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only groups in this state (Empty, Stable, PreparingRebalance, ...); repeatable.
    #[arg(long = "state", value_parser = parse_state)]
    states: Vec<String>,
    /// text: GROUP STATE PROTOCOL-TYPE per line; json: [{"group", "state", "protocol_type"}].
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
}

/// Topics or single partitions: `orders` (every partition) or `orders:0,2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    topic: String,
    /// None: every partition.
    partitions: Option<Vec<i32>>,
}

fn parse_topic_partitions(s: &str) -> Result<TopicPartitions, String> {
    let (topic, partitions) = match s.rsplit_once(':') {
        None => (s, None),
        Some((topic, list)) => {
            let parsed: Result<Vec<i32>, _> = list.split(',').map(str::parse::<i32>).collect();
            match parsed {
                Ok(ps) if !ps.is_empty() && ps.iter().all(|p| *p >= 0) => (topic, Some(ps)),
                _ => {
                    return Err(format!(
                        "expected TOPIC or TOPIC:PARTITION[,PARTITION...], got '{s}'"
                    ));
                }
            }
        }
    };
    if topic.is_empty() {
        return Err(format!("no topic name in '{s}'"));
    }
    Ok(TopicPartitions {
        topic: topic.to_owned(),
        partitions,
    })
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "shift_by", "to_file"])))]
pub struct ResetArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
    /// TOPIC or TOPIC:P[,P...] whose offsets move (repeatable). Default with
    /// --to/--shift-by: every topic the group has committed offsets for.
    #[arg(long = "topic", value_name = "TOPIC[:P,...]", value_parser = parse_topic_partitions)]
    topics: Vec<TopicPartitions>,
    /// earliest | latest | offset:N | timestamp:MS (rpk: start | end too).
    #[arg(long)]
    to: Option<String>,
    /// Move each committed offset by N (negative: back), within the log.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Offsets from a file: one `TOPIC PARTITION OFFSET` per line (spaces,
    /// tabs or commas), as rpk's `group seek --to-file`.
    #[arg(long, value_name = "PATH")]
    to_file: Option<std::path::PathBuf>,
    /// Apply the change; without it the plan is only printed.
    #[arg(long)]
    execute: bool,
}

#[derive(clap::Args, Debug)]
pub struct OffsetDeleteArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    group: String,
    /// TOPIC or TOPIC:P[,P...] (repeatable, at least one).
    #[arg(long = "topic", required = true, value_name = "TOPIC[:P,...]", value_parser = parse_topic_partitions)]
    topics: Vec<TopicPartitions>,
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
        GroupCommand::OffsetDelete(args) => offset_delete(args).await,
    }
}

#[derive(Serialize)]
struct GroupListingJson {
    group: String,
    state: String,
    protocol_type: String,
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let groups = client.list_groups(&args.states).await?;
    if args.format == OutputFormat::Json {
        let out: Vec<GroupListingJson> = groups
            .into_iter()
            .map(|g| GroupListingJson {
                group: g.group_id,
                state: g.state,
                protocol_type: g.protocol_type,
            })
            .collect();
        return print_json(&out);
    }
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

/// `group describe --format json`. Fields are only ever added.
#[derive(Serialize)]
struct GroupJson {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberJson>,
    offsets: Vec<OffsetJson>,
}

#[derive(Serialize)]
struct MemberJson {
    member_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    client_id: String,
    host: String,
    /// topic -> partitions
    assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(Serialize)]
struct OffsetJson {
    topic: String,
    partition: i32,
    /// null when the group has no committed offset there.
    committed: Option<i64>,
    log_end: i64,
    lag: Option<i64>,
    member_id: Option<String>,
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let group = client.describe_group(&args.group).await?;
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &group.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m.member_id.clone());
            }
        }
    }
    let assigned: Vec<(String, i32)> = owner.keys().cloned().collect();
    let table = offsets_and_ends(&mut client, &args.group, &assigned).await?;
    let out = GroupJson {
        group: group.group_id,
        state: group.state,
        protocol_type: group.protocol_type,
        protocol: group.protocol,
        members: group
            .members
            .into_iter()
            .map(|m| MemberJson {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                host: m.host,
                assignment: m.assignment.into_iter().collect(),
            })
            .collect(),
        offsets: table
            .into_iter()
            .map(|((topic, partition), (committed, end))| OffsetJson {
                member_id: owner.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed,
                log_end: end,
                lag: committed.map(|c| (end - c).max(0)),
            })
            .collect(),
    };
    if args.format == OutputFormat::Json {
        return print_json(&out);
    }
    println!(
        "group: {}  state: {}  protocol: {} {}",
        out.group, out.state, out.protocol_type, out.protocol
    );
    println!("members: {}", out.members.len());
    for m in &out.members {
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
    }
    println!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER");
    for o in &out.offsets {
        let committed = o.committed.map_or("-".to_owned(), |c| c.to_string());
        let lag = o.lag.map_or("-".to_owned(), |l| l.to_string());
        let member = o.member_id.as_deref().unwrap_or("-");
        println!(
            "{}\t{}\t{committed}\t{}\t{lag}\t{member}",
            o.topic, o.partition, o.log_end
        );
    }
    Ok(())
}

/// Where `--to` moves an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Spec(OffsetSpec),
    Offset(i64),
}

fn parse_reset_to(s: &str) -> anyhow::Result<ResetTo> {
    Ok(match s {
        "earliest" | "start" | "beginning" => ResetTo::Spec(OffsetSpec::Earliest),
        "latest" | "end" => ResetTo::Spec(OffsetSpec::Latest),
        other => match other.split_once(':') {
            Some(("timestamp", ms)) => ResetTo::Spec(OffsetSpec::Timestamp(
                ms.parse().context("--to timestamp:MS needs a number")?,
            )),
            Some(("offset", n)) => {
                ResetTo::Offset(n.parse().context("--to offset:N needs a number")?)
            }
            _ => bail!("--to must be earliest, latest, offset:N or timestamp:MS, got '{other}'"),
        },
    })
}

/// Reads `TOPIC PARTITION OFFSET` lines ('#' comments, blank lines skipped).
fn parse_offsets_file(text: &str, path: &str) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let bad = || {
            anyhow::anyhow!(
                "{path}:{}: expected TOPIC PARTITION OFFSET, got '{line}'",
                n + 1
            )
        };
        let [topic, partition, offset] = fields.as_slice() else {
            return Err(bad());
        };
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        if partition < 0 || offset < 0 {
            return Err(bad());
        }
        out.push(((*topic).to_owned(), partition, offset));
    }
    if out.is_empty() {
        bail!("{path} lists no offsets");
    }
    Ok(out)
}

/// Expands topic selections to (topic, partition) pairs, checking that each exists.
async fn expand(
    client: &mut Client,
    selections: &[TopicPartitions],
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for sel in selections {
        let info = client
            .topic(&sel.topic, false)
            .await
            .with_context(|| format!("looking up topic '{}'", sel.topic))?;
        let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
        match &sel.partitions {
            None => out.extend(all.iter().map(|p| (sel.topic.clone(), *p))),
            Some(ps) => {
                for p in ps {
                    if !all.contains(p) {
                        bail!(
                            "topic '{}' has no partition {p} (it has {})",
                            sel.topic,
                            all.len()
                        );
                    }
                    out.push((sel.topic.clone(), *p));
                }
            }
        }
    }
    Ok(out)
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let committed: BTreeMap<(String, i32), i64> = client
        .committed_offsets(&args.group)
        .await?
        .into_iter()
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect();
    // (topic, partition, wanted offset before clamping to the log)
    let mut wanted: Vec<(String, i32, Option<i64>)> = Vec::new();
    let to = args.to.as_deref().map(parse_reset_to).transpose()?;
    if let Some(path) = &args.to_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        for (topic, partition, offset) in parse_offsets_file(&text, &path.display().to_string())? {
            expand(
                &mut client,
                &[TopicPartitions {
                    topic: topic.clone(),
                    partitions: Some(vec![partition]),
                }],
            )
            .await?;
            wanted.push((topic, partition, Some(offset)));
        }
    } else {
        let pairs = if args.topics.is_empty() {
            if committed.is_empty() {
                bail!(
                    "group '{}' has no committed offsets; name the topics with --topic",
                    args.group
                );
            }
            committed.keys().cloned().collect()
        } else {
            expand(&mut client, &args.topics).await?
        };
        for (topic, partition) in pairs {
            let target = match (to, args.shift_by) {
                (Some(ResetTo::Offset(n)), _) => Some(n),
                (Some(ResetTo::Spec(spec)), _) => {
                    let found = client.list_offsets(&topic, partition, spec).await?.offset;
                    // No record at or after the timestamp: the end.
                    (found >= 0).then_some(found)
                }
                (None, Some(shift)) => match committed.get(&(topic.clone(), partition)) {
                    Some(c) => Some(c.saturating_add(shift)),
                    None => bail!(
                        "group '{}' has no committed offset for {topic}-{partition} to shift; use --to",
                        args.group
                    ),
                },
                (None, None) => bail!("pass --to, --shift-by or --to-file"),
            };
            wanted.push((topic, partition, target));
        }
    }
    println!("TOPIC\tPARTITION\tCURRENT\tNEW");
    let mut plan = Vec::with_capacity(wanted.len());
    for (topic, partition, target) in wanted {
        let (start, end, _) =
            super::topic::partition_offsets(&mut client, &topic, partition).await?;
        let new = target.map_or(end, |t| t.clamp(start, end));
        let current = committed
            .get(&(topic.clone(), partition))
            .map_or("-".to_owned(), i64::to_string);
        println!("{topic}\t{partition}\t{current}\t{new}");
        plan.push((topic, partition, new));
    }
    if args.execute {
        client.commit_offsets(&args.group, &plan).await.context(
            "committing new offsets (is the group still active? stop its consumers first)",
        )?;
        eprintln!("reset {} partition(s) for group {}", plan.len(), args.group);
    } else {
        eprintln!("dry run: add --execute to commit these offsets");
    }
    Ok(())
}

async fn offset_delete(args: OffsetDeleteArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let pairs = expand(&mut client, &args.topics).await?;
    client
        .delete_committed_offsets(&args.group, &pairs)
        .await
        .context("deleting committed offsets (Kafka refuses while the group consumes the topic)")?;
    eprintln!(
        "deleted the committed offsets of {} partition(s) for group {}",
        pairs.len(),
        args.group
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_kafkas_in_any_case() {
        assert_eq!(parse_state("stable").unwrap(), "Stable");
        assert_eq!(
            parse_state("PREPARINGREBALANCE").unwrap(),
            "PreparingRebalance"
        );
        let e = parse_state("Sleepy").unwrap_err();
        assert!(e.contains("Sleepy") && e.contains("Empty"), "{e}");
    }

    #[test]
    fn topic_selections_name_partitions_or_all() {
        assert_eq!(
            parse_topic_partitions("t").unwrap(),
            TopicPartitions {
                topic: "t".into(),
                partitions: None
            }
        );
        assert_eq!(
            parse_topic_partitions("t:0,2").unwrap().partitions,
            Some(vec![0, 2])
        );
        assert!(parse_topic_partitions("t:x").is_err());
        assert!(parse_topic_partitions(":1").is_err());
    }

    #[test]
    fn offsets_file_accepts_spaces_tabs_commas_and_comments() {
        let parsed = parse_offsets_file("# plan\na 0 5\nb\t1\t7\nc,2,9\n\n", "f").unwrap();
        assert_eq!(
            parsed,
            vec![("a".into(), 0, 5), ("b".into(), 1, 7), ("c".into(), 2, 9)]
        );
        assert!(
            parse_offsets_file("a 0\n", "f")
                .unwrap_err()
                .to_string()
                .contains("f:1")
        );
        assert!(parse_offsets_file("a 0 -1\n", "f").is_err());
    }
}
