//! `weir cluster info`: cluster id, controller, brokers and topic count.

use super::ConnectArgs;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, controller, brokers and topic count.
    Info(InfoArgs),
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Info(args) => info(args).await,
    }
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let cluster = client.describe_cluster().await?;
    let metadata = client.metadata(None, false).await?;
    let internal = metadata.topics.iter().filter(|t| t.is_internal).count();
    println!("cluster id: {}", cluster.cluster_id);
    println!("controller: {}", cluster.controller_id);
    println!("brokers: {}", cluster.brokers.len());
    for b in &cluster.brokers {
        let rack = b
            .rack
            .as_deref()
            .map(|r| format!("  rack {r}"))
            .unwrap_or_default();
        println!("  {}  {}{}", b.node_id, b.addr(), rack);
    }
    println!("topics: {} ({} internal)", metadata.topics.len(), internal);
    Ok(())
}
