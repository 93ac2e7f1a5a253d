//! Replication throttles for moves (Kafka's `kafka-reassign-partitions.sh
//! --throttle`): the cluster-wide dynamic broker configs
//! `leader.replication.throttled.rate` and `follower.replication.throttled.rate`
//! cap catch-up bytes per second on each broker, and the moved topics'
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`
//! (`*`: every replica) say which replicas the caps apply to.

use std::collections::BTreeSet;

use weir_client::{AlterConfigOp, Client, ConfigResource};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// Sets (`Some(rate)`) or removes (`None`) the throttles for `topics`.
pub async fn set(
    client: &mut Client,
    topics: &BTreeSet<String>,
    rate_bytes_per_s: Option<u64>,
) -> anyhow::Result<()> {
    let op = |name: &str, value: Option<String>| match value {
        Some(v) => AlterConfigOp::set(name, v),
        None => AlterConfigOp::delete(name),
    };
    let cluster_default = ConfigResource {
        resource_type: weir_client::ResourceType::Broker,
        name: String::new(),
    };
    let rate = rate_bytes_per_s.map(|r| r.to_string());
    client
        .incremental_alter_configs(
            &cluster_default,
            &[
                op(LEADER_RATE, rate.clone()),
                op(FOLLOWER_RATE, rate.clone()),
            ],
        )
        .await?;
    let replicas = rate.as_ref().map(|_| "*".to_string());
    for topic in topics {
        client
            .incremental_alter_configs(
                &ConfigResource::topic(topic.clone()),
                &[
                    op(LEADER_REPLICAS, replicas.clone()),
                    op(FOLLOWER_REPLICAS, replicas.clone()),
                ],
            )
            .await?;
    }
    Ok(())
}
