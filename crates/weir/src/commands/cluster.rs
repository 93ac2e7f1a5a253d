//! `weir cluster info|health|config|logdirs|elect-leaders` (and the moves of
//! `rebalance.rs`): cluster id,
//! controller, brokers (live and fenced), the metadata quorum and topic count;
//! partitions without a leader and under-replicated ones; broker configs; log
//! directories and partition sizes; preferred or unclean leader elections.

use anyhow::Context as _;
use serde::Serialize;
use weir_client::{
    AlterConfigOp, BrokerInfo, Client, ClusterDescription, ConfigResource, QuorumDescription,
    QuorumReplica,
};

use super::{ConnectArgs, ExitStatus, OutputFormat, parse_key_value, print_json};

/// `cluster health`'s exit status when a partition has no live leader or
/// the metadata quorum has none (1 stays "could not ask": an error).
pub const UNHEALTHY_EXIT_CODE: u8 = 2;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, controller, brokers (live and fenced), the
    /// metadata quorum (leader, epoch, high watermark, each voter's and
    /// observer's lag) and topic count.
    Info(InfoArgs),
    /// List partitions without a live leader and fenced brokers. Exits 0 when
    /// every partition has a leader and the metadata quorum has a leader,
    /// 2 when not, 1 when the cluster could not be asked.
    Health(HealthArgs),
    /// Read and change broker configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Each broker's log directories and the size of each partition in them.
    Logdirs(LogdirsArgs),
    /// Move leadership back to preferred replicas (the first of each
    /// partition's replicas, when live and in sync), or with `--unclean`
    /// elect any live replica of a partition that has no leader: that may
    /// lose acknowledged records. Kafka's kafka-leader-election.sh.
    ElectLeaders(ElectLeadersArgs),
    /// Move one partition's replicas (AlterPartitionReassignments, KIP-455),
    /// or cancel its running move with --cancel.
    Reassign(super::rebalance::ReassignArgs),
    /// List the partitions being reassigned: replicas, adding, removing.
    Reassignments(super::rebalance::ReassignmentsArgs),
    /// Plan moves that even out replicas and preferred leaders per broker,
    /// rack-aware: a dry run prints the moves, bytes to copy and resulting
    /// balance; --execute carries them out with live progress.
    Rebalance(super::rebalance::RebalanceArgs),
    /// Mark a broker decommissioned (new replicas stay off it, across
    /// controller failover and restarts) and move every replica off it
    /// (refused if that would leave a partition short of replicas), then
    /// say it is safe to stop.
    Decommission(super::rebalance::DecommissionArgs),
    /// Clear a broker's decommission mark and even replicas and leaders
    /// out onto it again (it must be running).
    Recommission(super::rebalance::DecommissionArgs),
    /// Make a node that follows the metadata quorum as a learner (an observer
    /// in `cluster info`) a voter (AddRaftVoter, KIP-853; Kafka's
    /// kafka-metadata-quorum add-controller). One voter change at a time.
    AddVoter(VoterArgs),
    /// Make a voter of the metadata quorum a learner again (RemoveRaftVoter;
    /// kafka-metadata-quorum remove-controller). The last voter cannot be removed.
    RemoveVoter(VoterArgs),
}

#[derive(clap::Args, Debug)]
pub struct VoterArgs {
    /// The node id (`--node-id` of its `weir serve`).
    #[arg(long, value_name = "N")]
    pub node_id: i32,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ElectLeadersArgs {
    /// Only this topic's partitions (repeatable; default: every partition).
    #[arg(long = "topic", value_name = "NAME")]
    pub topics: Vec<String>,
    /// Only these partitions of the (single) --topic (repeatable).
    #[arg(long = "partition", value_name = "N", requires = "topics")]
    pub partitions: Vec<i32>,
    /// An unclean election: any live replica may lead a leaderless
    /// partition, and records only the old ISR had are lost.
    #[arg(long)]
    pub unclean: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print broker configs (all, or the KEYs given) as KEY=VALUE lines.
    Get(ConfigGetArgs),
    /// Set or reset broker configs (IncrementalAlterConfigs).
    Set(ConfigSetArgs),
    /// Print every non-sensitive broker config as KEY=VALUE, one per line:
    /// input for `cluster config set --from-file`.
    Export(ConfigExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConfigGetArgs {
    /// Config names (default: all).
    pub keys: Vec<String>,
    /// The broker to ask (default: the one the client reached first).
    #[arg(long, value_name = "ID")]
    pub broker: Option<i32>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ConfigSetArgs {
    /// KEY=VALUE pairs to set.
    #[arg(value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Reset this config to its default (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// Read KEY=VALUE lines from this file ('#' starts a comment).
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<std::path::PathBuf>,
    #[arg(long, value_name = "ID")]
    pub broker: Option<i32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct ConfigExportArgs {
    #[arg(long, value_name = "ID")]
    pub broker: Option<i32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogdirsArgs {
    /// Only these topics (default: all).
    #[arg(long = "topic", value_name = "NAME")]
    pub topics: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Info(args) => info(args).await,
        ClusterCommand::Health(args) => health(args).await,
        ClusterCommand::Config(ConfigCommand::Get(args)) => config_get(args).await,
        ClusterCommand::Config(ConfigCommand::Set(args)) => config_set(args).await,
        ClusterCommand::Config(ConfigCommand::Export(args)) => config_export(args).await,
        ClusterCommand::Logdirs(args) => logdirs(args).await,
        ClusterCommand::ElectLeaders(args) => elect_leaders(args).await,
        ClusterCommand::Reassign(args) => super::rebalance::reassign(args).await,
        ClusterCommand::Reassignments(args) => super::rebalance::reassignments(args).await,
        ClusterCommand::Rebalance(args) => super::rebalance::rebalance(args).await,
        ClusterCommand::Decommission(args) => super::rebalance::decommission(args).await,
        ClusterCommand::Recommission(args) => super::rebalance::recommission(args).await,
        ClusterCommand::AddVoter(args) => change_voter(args, true).await,
        ClusterCommand::RemoveVoter(args) => change_voter(args, false).await,
    }
}

async fn change_voter(args: VoterArgs, add: bool) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    if add {
        client.add_raft_voter(args.node_id).await?;
    } else {
        client.remove_raft_voter(args.node_id).await?;
    }
    let what = if add { "added voter" } else { "removed voter" };
    // A leader that removed itself steps down: the view may take an election.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let quorum = loop {
        match client.describe_quorum().await {
            Ok(q) => break Ok(q),
            Err(e) if std::time::Instant::now() >= deadline => break Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    match quorum {
        Ok(q) => {
            let ids = |rs: &[QuorumReplica]| rs.iter().map(|r| r.node_id).collect::<Vec<_>>();
            println!(
                "{what} node {}: voters {:?}, observers {:?}, leader {}",
                args.node_id,
                ids(&q.voters),
                ids(&q.observers),
                q.leader_id
            );
        }
        Err(e) => println!(
            "{what} node {} (the quorum's view is not available yet: {e})",
            args.node_id
        ),
    }
    Ok(())
}

#[derive(Serialize)]
struct ElectionJson {
    topic: String,
    partition: i32,
    /// Kafka's error name, `NONE` when a new leader was elected.
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

async fn elect_leaders(args: ElectLeadersArgs) -> anyhow::Result<()> {
    use weir_client::ErrorCode;
    use weir_protocol::messages::elect_leaders::{ElectLeadersRequest, TopicPartitions};
    if !args.partitions.is_empty() && args.topics.len() != 1 {
        anyhow::bail!("--partition needs exactly one --topic");
    }
    let mut client = args.connect.connect().await?;
    let topic_partitions = if args.topics.is_empty() {
        None
    } else {
        let mut wanted = Vec::new();
        for topic in &args.topics {
            let partitions = if args.partitions.is_empty() {
                let info = client.topic(topic, false).await?;
                info.partitions.iter().map(|p| p.partition).collect()
            } else {
                args.partitions.clone()
            };
            wanted.push(TopicPartitions {
                topic: topic.clone(),
                partitions,
            });
        }
        Some(wanted)
    };
    let request = ElectLeadersRequest {
        election_type: i8::from(args.unclean),
        topic_partitions,
        timeout_ms: 30_000,
    };
    let response = client.send_any(&request).await?;
    if response.error_code != 0 {
        anyhow::bail!(
            "the controller refused the election: {}",
            ErrorCode::from_code_or_unknown(response.error_code).name()
        );
    }
    let mut results: Vec<ElectionJson> = response
        .replica_election_results
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic;
            t.partition_result.into_iter().map(move |p| ElectionJson {
                topic: topic.clone(),
                partition: p.partition_id,
                result: ErrorCode::from_code_or_unknown(p.error_code)
                    .name()
                    .to_string(),
                message: p.error_message,
            })
        })
        .collect();
    results.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let failed = results
        .iter()
        .filter(|r| r.result != "NONE" && r.result != "ELECTION_NOT_NEEDED")
        .count();
    if args.format == OutputFormat::Json {
        print_json(&results)?;
    } else if results.is_empty() {
        println!("no partition needed an election");
    } else {
        println!("TOPIC\tPARTITION\tRESULT");
        for r in &results {
            let result = match r.result.as_str() {
                "NONE" => "elected",
                "ELECTION_NOT_NEEDED" => "already led by the preferred replica",
                other => other,
            };
            match &r.message {
                Some(m) if r.result != "NONE" && r.result != "ELECTION_NOT_NEEDED" => {
                    println!("{}\t{}\t{result}: {m}", r.topic, r.partition)
                }
                _ => println!("{}\t{}\t{result}", r.topic, r.partition),
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} partition(s) could not get the leader asked for");
    }
    Ok(())
}

/// `cluster info --format json`. Fields are only ever added.
#[derive(Serialize)]
struct ClusterInfo {
    cluster_id: String,
    controller: i32,
    brokers: Vec<BrokerJson>,
    /// Registered but fenced: not heartbeating, or not caught up yet.
    fenced_brokers: Vec<BrokerJson>,
    /// Voters and observers of the metadata quorum with no broker
    /// registration at all.
    unregistered_nodes: Vec<i32>,
    /// Brokers `weir cluster decommission` marked (until `recommission`).
    decommissioned: Vec<DecommissionedJson>,
    /// `None` when the quorum could not be described (see `quorum_error`).
    quorum: Option<QuorumJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum_error: Option<String>,
    topics: usize,
    internal_topics: usize,
}

#[derive(Serialize)]
struct DecommissionedJson {
    id: i32,
    /// Partitions that still name it as a replica; 0 means safe to stop.
    replicas_left: usize,
}

#[derive(Serialize)]
struct BrokerJson {
    id: i32,
    host: String,
    port: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    rack: Option<String>,
}

impl From<&BrokerInfo> for BrokerJson {
    fn from(b: &BrokerInfo) -> Self {
        BrokerJson {
            id: b.node_id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        }
    }
}

#[derive(Serialize)]
struct QuorumJson {
    leader: i32,
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<ReplicaJson>,
    observers: Vec<ReplicaJson>,
}

#[derive(Serialize)]
struct ReplicaJson {
    id: i32,
    /// -1 when the leader does not know it.
    log_end_offset: i64,
    /// high_watermark - log_end_offset (0 when ahead); null when unknown.
    lag: Option<i64>,
}

impl QuorumJson {
    fn new(q: &QuorumDescription) -> QuorumJson {
        let replica = |r: &QuorumReplica| ReplicaJson {
            id: r.node_id,
            log_end_offset: r.log_end_offset,
            lag: r.lag(q.high_watermark),
        };
        QuorumJson {
            leader: q.leader_id,
            leader_epoch: q.leader_epoch,
            high_watermark: q.high_watermark,
            voters: q.voters.iter().map(replica).collect(),
            observers: q.observers.iter().map(replica).collect(),
        }
    }
}

/// Quorum members that no broker registration (live or fenced) names: a
/// node whose broker never registered, e.g. one that cannot start.
fn unregistered_nodes(
    cluster: &ClusterDescription,
    quorum: Option<&QuorumDescription>,
) -> Vec<i32> {
    let Some(quorum) = quorum else {
        return Vec::new();
    };
    let registered = |id: i32| {
        cluster
            .brokers
            .iter()
            .chain(&cluster.fenced_brokers)
            .any(|b| b.node_id == id)
    };
    let mut ids: Vec<i32> = quorum
        .voters
        .iter()
        .chain(&quorum.observers)
        .map(|r| r.node_id)
        .filter(|id| !registered(*id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn print_broker_line(b: &BrokerInfo) {
    let rack = b
        .rack
        .as_deref()
        .map(|r| format!("  rack {r}"))
        .unwrap_or_default();
    println!("  {}  {}{}", b.node_id, b.addr(), rack);
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = client.describe_cluster().await?;
    let metadata = client.metadata(None, false).await?;
    // A broker without DescribeQuorum, or a quorum without a leader, still
    // gets the rest of the overview.
    let quorum = client.describe_quorum().await;
    let internal = metadata.topics.iter().filter(|t| t.is_internal).count();
    let unregistered = unregistered_nodes(&cluster, quorum.as_ref().ok());
    // Decommissioned brokers, each with the replicas it still holds (0: safe to stop).
    let registered = cluster
        .brokers
        .iter()
        .chain(&cluster.fenced_brokers)
        .map(|b| b.node_id);
    let marked = super::rebalance::decommissioned(&mut client, registered).await?;
    let decommissioned: Vec<DecommissionedJson> = marked
        .iter()
        .map(|&id| DecommissionedJson {
            id,
            replicas_left: metadata
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.replicas.contains(&id))
                .count(),
        })
        .collect();
    if args.format == OutputFormat::Json {
        return print_json(&ClusterInfo {
            cluster_id: cluster.cluster_id.clone(),
            controller: cluster.controller_id,
            brokers: cluster.brokers.iter().map(BrokerJson::from).collect(),
            fenced_brokers: cluster
                .fenced_brokers
                .iter()
                .map(BrokerJson::from)
                .collect(),
            unregistered_nodes: unregistered,
            decommissioned,
            quorum: quorum.as_ref().ok().map(QuorumJson::new),
            quorum_error: quorum.as_ref().err().map(ToString::to_string),
            topics: metadata.topics.len(),
            internal_topics: internal,
        });
    }
    println!("cluster id: {}", cluster.cluster_id);
    println!("controller: {}", cluster.controller_id);
    println!("brokers: {}", cluster.brokers.len());
    for b in &cluster.brokers {
        print_broker_line(b);
    }
    if !cluster.fenced_brokers.is_empty() {
        println!("fenced brokers: {}", cluster.fenced_brokers.len());
        for b in &cluster.fenced_brokers {
            print_broker_line(b);
        }
    }
    if !unregistered.is_empty() {
        println!("quorum members not registered as brokers: {unregistered:?}");
    }
    for d in &decommissioned {
        match d.replicas_left {
            0 => println!("decommissioned: {} (no replicas: safe to stop)", d.id),
            n => println!("decommissioned: {} ({n} replica(s) still to move)", d.id),
        }
    }
    match &quorum {
        Ok(q) => {
            println!(
                "quorum: leader {}, epoch {}, high watermark {}",
                q.leader_id, q.leader_epoch, q.high_watermark
            );
            println!("  ROLE\tNODE\tLOG-END\tLAG");
            let roles = q
                .voters
                .iter()
                .map(|r| {
                    (
                        if r.node_id == q.leader_id {
                            "leader"
                        } else {
                            "voter"
                        },
                        r,
                    )
                })
                .chain(q.observers.iter().map(|r| ("observer", r)));
            for (role, r) in roles {
                let lag = r
                    .lag(q.high_watermark)
                    .map_or_else(|| "-".to_owned(), |l| l.to_string());
                println!("  {role}\t{}\t{}\t{lag}", r.node_id, r.log_end_offset);
            }
        }
        Err(e) => println!("quorum: unavailable ({e})"),
    }
    println!("topics: {} ({} internal)", metadata.topics.len(), internal);
    Ok(())
}

/// `cluster health --format json`. Fields are only ever added.
#[derive(Serialize)]
struct HealthJson {
    healthy: bool,
    offline_partitions: Vec<OfflinePartitionJson>,
    /// Partitions with fewer in-sync replicas than replicas (a replica is
    /// down or behind); they still serve, so they don't make the cluster unhealthy.
    under_replicated_partitions: Vec<UnderReplicatedJson>,
    fenced_brokers: Vec<BrokerJson>,
    unregistered_nodes: Vec<i32>,
    /// The metadata quorum's leader; `None` when it has none (or could not
    /// be asked: see `quorum_error`).
    quorum_leader: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum_error: Option<String>,
}

#[derive(Serialize)]
struct OfflinePartitionJson {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
}

#[derive(Serialize)]
struct UnderReplicatedJson {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = client.describe_cluster().await?;
    let metadata = client.metadata(None, false).await?;
    let quorum = client.describe_quorum().await;
    let live = |id: i32| metadata.brokers.iter().any(|b| b.node_id == id);
    // Metadata says LEADER_NOT_AVAILABLE with leader -1 for a partition whose
    // leader is gone; a leader missing from the broker list is as offline.
    let mut offline: Vec<OfflinePartitionJson> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader_id < 0 || !live(p.leader_id))
                .map(move |p| OfflinePartitionJson {
                    topic: t.name.clone(),
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                })
        })
        .collect();
    offline.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut under_replicated: Vec<UnderReplicatedJson> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.isr.len() < p.replicas.len())
                .map(move |p| UnderReplicatedJson {
                    topic: t.name.clone(),
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                })
        })
        .collect();
    under_replicated.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let unregistered = unregistered_nodes(&cluster, quorum.as_ref().ok());
    let quorum_leader = quorum
        .as_ref()
        .ok()
        .map(|q| q.leader_id)
        .filter(|id| *id >= 0);
    let healthy = offline.is_empty() && quorum_leader.is_some();
    if args.format == OutputFormat::Json {
        print_json(&HealthJson {
            healthy,
            offline_partitions: offline,
            under_replicated_partitions: under_replicated,
            fenced_brokers: cluster
                .fenced_brokers
                .iter()
                .map(BrokerJson::from)
                .collect(),
            unregistered_nodes: unregistered,
            quorum_leader,
            quorum_error: quorum.as_ref().err().map(ToString::to_string),
        })?;
    } else {
        if offline.is_empty() {
            println!("every partition has a leader");
        } else {
            println!("partitions without a live leader: {}", offline.len());
            println!("TOPIC\tPARTITION\tREPLICAS");
            for p in &offline {
                let replicas: Vec<String> = p.replicas.iter().map(i32::to_string).collect();
                println!("{}\t{}\t{}", p.topic, p.partition, replicas.join(","));
            }
        }
        if !under_replicated.is_empty() {
            println!("under-replicated partitions: {}", under_replicated.len());
            println!("TOPIC\tPARTITION\tREPLICAS\tISR");
            let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            for p in &under_replicated {
                println!(
                    "{}\t{}\t{}\t{}",
                    p.topic,
                    p.partition,
                    list(&p.replicas),
                    list(&p.isr)
                );
            }
        }
        if !cluster.fenced_brokers.is_empty() {
            println!("fenced brokers: {}", cluster.fenced_brokers.len());
            for b in &cluster.fenced_brokers {
                print_broker_line(b);
            }
        }
        if !unregistered.is_empty() {
            println!("quorum members not registered as brokers: {unregistered:?}");
        }
        match (&quorum, quorum_leader) {
            (Ok(_), Some(leader)) => println!("metadata quorum leader: {leader}"),
            (Ok(_), None) => println!("metadata quorum: no leader"),
            (Err(e), _) => println!("metadata quorum: unavailable ({e})"),
        }
    }
    if healthy {
        return Ok(());
    }
    Err(ExitStatus {
        code: UNHEALTHY_EXIT_CODE,
        message: String::new(),
    }
    .into())
}

/// The broker a config command talks about: the one named, else the first.
fn broker_id(client: &Client, wanted: Option<i32>) -> anyhow::Result<i32> {
    let known: Vec<i32> = client.brokers().map(|b| b.node_id).collect();
    match wanted {
        Some(id) if known.contains(&id) => Ok(id),
        Some(id) => anyhow::bail!("no broker {id} in the cluster (brokers: {known:?})"),
        None => known
            .first()
            .copied()
            .context("the cluster reported no brokers"),
    }
}

#[derive(Serialize)]
struct ConfigJson {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

async fn config_get(args: ConfigGetArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let id = broker_id(&client, args.broker)?;
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let mut configs = client
        .describe_configs(
            &ConfigResource::broker(id),
            (!keys.is_empty()).then_some(keys.as_slice()),
        )
        .await?;
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(missing) = args
        .keys
        .iter()
        .find(|k| !configs.iter().any(|c| &c.name == *k))
    {
        anyhow::bail!("broker {id} has no config '{missing}'");
    }
    if args.format == OutputFormat::Json {
        let out: Vec<ConfigJson> = configs
            .into_iter()
            .map(|c| ConfigJson {
                value: if c.is_sensitive { None } else { c.value },
                name: c.name,
                source: c.source.name(),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect();
        return print_json(&out);
    }
    for c in configs {
        let value = if c.is_sensitive {
            "(sensitive)".to_owned()
        } else {
            c.value.unwrap_or_else(|| "null".to_owned())
        };
        println!("{}={}", c.name, value);
    }
    Ok(())
}

async fn config_set(args: ConfigSetArgs) -> anyhow::Result<()> {
    let mut pairs = args.configs.clone();
    if let Some(path) = &args.from_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            pairs.push(
                parse_key_value(line)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?,
            );
        }
    }
    if pairs.is_empty() && args.delete.is_empty() {
        anyhow::bail!("nothing to change: pass KEY=VALUE, --delete KEY or --from-file PATH");
    }
    let mut client = args.connect.connect().await?;
    let id = broker_id(&client, args.broker)?;
    let ops: Vec<AlterConfigOp> = pairs
        .iter()
        .map(|(k, v)| AlterConfigOp::set(k, v))
        .chain(args.delete.iter().map(AlterConfigOp::delete))
        .collect();
    client
        .incremental_alter_configs(&ConfigResource::broker(id), &ops)
        .await?;
    println!("altered {} config(s) of broker {id}", ops.len());
    Ok(())
}

async fn config_export(args: ConfigExportArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let id = broker_id(&client, args.broker)?;
    let mut configs = client
        .describe_configs(&ConfigResource::broker(id), None)
        .await?;
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    println!("# broker {id} configs, exported by weir; sensitive values omitted");
    for c in configs {
        if c.is_sensitive {
            continue;
        }
        if let Some(value) = c.value {
            println!("{}={}", c.name, value);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct LogDirJson {
    broker: i32,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    total_bytes: i64,
    usable_bytes: i64,
    partitions: Vec<LogDirPartitionJson>,
}

#[derive(Serialize)]
struct LogDirPartitionJson {
    topic: String,
    partition: i32,
    size_bytes: i64,
}

async fn logdirs(args: LogdirsArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    for topic in &args.topics {
        // Loads the partition list that DescribeLogDirs asks about.
        client.topic(topic, false).await?;
    }
    let dirs = client
        .describe_log_dirs((!args.topics.is_empty()).then_some(args.topics.as_slice()))
        .await?;
    let mut out: Vec<LogDirJson> = dirs
        .into_iter()
        .map(|d| {
            let mut partitions: Vec<LogDirPartitionJson> = d
                .partitions
                .into_iter()
                .map(|p| LogDirPartitionJson {
                    topic: p.topic,
                    partition: p.partition,
                    size_bytes: p.size_bytes,
                })
                .collect();
            partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            LogDirJson {
                broker: d.broker_id,
                path: d.path,
                error: d.error.map(|e| e.name().to_owned()),
                total_bytes: d.total_bytes,
                usable_bytes: d.usable_bytes,
                partitions,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.broker, &a.path).cmp(&(b.broker, &b.path)));
    if args.format == OutputFormat::Json {
        return print_json(&out);
    }
    for d in &out {
        let error = d
            .error
            .as_deref()
            .map(|e| format!("  error {e}"))
            .unwrap_or_default();
        println!(
            "broker {}  {}  total {} bytes  usable {} bytes{error}",
            d.broker, d.path, d.total_bytes, d.usable_bytes
        );
        println!("  TOPIC\tPARTITION\tSIZE-BYTES");
        for p in &d.partitions {
            println!("  {}\t{}\t{}", p.topic, p.partition, p.size_bytes);
        }
    }
    Ok(())
}
