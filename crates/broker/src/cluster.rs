//! The broker's side of the cluster: how it reaches the metadata quorum,
//! registers and heartbeats to the active controller, and makes its local
//! state (topic registry, partition leadership) follow the metadata image.
//!
//! The quorum itself (Raft, the controller's decisions) is `weir-metadata`;
//! the broker sees it through [`MetadataQuorum`], so a single node and a
//! cluster run the same code here.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;
use weir_metadata::controller::{ControllerRequest, ControllerResponse};
use weir_metadata::image::MetadataImage;
use weir_metadata::image::PartitionState;
use weir_metadata::records::{BrokerId, ConfigResource, Endpoint, NO_LEADER};

use crate::Broker;
use crate::error::BrokerError;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A controller request's outcome once committed: the answer and the index
/// of the log entry that carried its records (0 when it wrote none).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub response: ControllerResponse,
    pub index: u64,
}

/// Why a controller request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuorumError {
    /// No controller is elected (or reachable) right now: retriable.
    #[error("no active controller: {0}")]
    NotAvailable(String),
    /// The controller refused the request.
    #[error("{0}")]
    Refused(weir_metadata::controller::ControllerError),
}

/// One voter or learner of the quorum, for DescribeQuorum and `weir cluster info`.
#[derive(Debug, Clone, Default)]
pub struct ReplicaView {
    pub node_id: i32,
    /// The last metadata log index it is known to have.
    pub log_end_index: i64,
    /// Leader wall clock (ms since the epoch) of its last fetch (append
    /// answer); `None` for the leader itself or when never heard.
    pub last_fetch_timestamp_ms: Option<i64>,
    /// Leader wall clock when it last held everything the leader had.
    pub last_caught_up_timestamp_ms: Option<i64>,
    /// Its controller (Raft) listener, HOST:PORT, as the quorum knows it.
    pub controller_addr: String,
}

#[derive(Debug, Clone, Default)]
pub struct QuorumView {
    pub leader_id: Option<i32>,
    /// The Raft term: KRaft's leader epoch of the metadata log.
    pub leader_epoch: i64,
    /// The committed index: the metadata log's high watermark.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaView>,
    pub learners: Vec<ReplicaView>,
}

/// What the broker needs of the metadata quorum.
pub trait MetadataQuorum: Send + Sync + 'static {
    /// The image this node has applied. Readers hold the lock briefly and never across an await.
    fn image(&self) -> Arc<RwLock<MetadataImage>>;
    /// The index this node has applied up to; changes whenever it grows.
    fn applied_index(&self) -> watch::Receiver<u64>;
    /// Runs a request on the active controller (forwarded if it is elsewhere).
    fn submit(&self, request: ControllerRequest) -> BoxFuture<Result<Submitted, QuorumError>>;
    /// The active controller, if one is known.
    fn leader_id(&self) -> Option<i32>;
    /// DescribeQuorum's view, from the leader.
    fn describe(&self) -> BoxFuture<Result<QuorumView, QuorumError>>;
    /// KIP-853's AddRaftVoter: makes learner `node_id` a voter, at the leader.
    fn add_voter(&self, node_id: u64) -> BoxFuture<Result<(), VoterChangeRefused>>;
    /// KIP-853's RemoveRaftVoter: makes voter `node_id` a learner, at the leader.
    fn remove_voter(&self, node_id: u64) -> BoxFuture<Result<(), VoterChangeRefused>>;
}

/// Why a voter change was not made: the Kafka error code and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (error code {error_code})")]
pub struct VoterChangeRefused {
    pub error_code: i16,
    pub message: String,
}

fn voter_change_refused(e: weir_metadata::quorum::QuorumError) -> VoterChangeRefused {
    use weir_metadata::controller::codes;
    use weir_metadata::quorum::QuorumError as Q;
    let error_code = match &e {
        Q::VoterChange(v) => v.kafka_error_code(),
        // No leader, or it could not be reached: retriable, as KRaft's
        // answer when the change cannot be started in time.
        Q::NoLeader { .. } | Q::Transport(_) | Q::Shutdown => codes::REQUEST_TIMED_OUT,
        _ => codes::UNKNOWN_SERVER_ERROR,
    };
    VoterChangeRefused {
        error_code,
        message: e.to_string(),
    }
}

/// The real quorum: openraft through `weir_metadata::quorum`.
impl MetadataQuorum for weir_metadata::quorum::node::QuorumNode<MetadataImage> {
    fn image(&self) -> Arc<RwLock<MetadataImage>> {
        weir_metadata::quorum::node::QuorumNode::image(self)
    }

    fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_index_watch()
    }

    fn submit(&self, request: ControllerRequest) -> BoxFuture<Result<Submitted, QuorumError>> {
        let node = self.clone();
        Box::pin(async move {
            let before = *node.applied_index_watch().borrow();
            match weir_metadata::quorum::node::QuorumNode::submit(&node, request).await {
                Ok(response) => {
                    // On the leader the records are applied when submit
                    // returns. A follower learns how far to catch up from
                    // the leader's high watermark, which covers the entry
                    // (it was committed before the answer came back).
                    let index = if node.is_leader() {
                        *node.applied_index_watch().borrow()
                    } else {
                        match node.describe_quorum().await {
                            Ok(d) => d.high_watermark,
                            Err(_) => before + 1,
                        }
                    };
                    Ok(Submitted { response, index })
                }
                Err(weir_metadata::quorum::QuorumError::Controller(e)) => {
                    Err(QuorumError::Refused(e))
                }
                Err(e) => Err(QuorumError::NotAvailable(e.to_string())),
            }
        })
    }

    fn leader_id(&self) -> Option<i32> {
        weir_metadata::quorum::node::QuorumNode::leader_id(self)
            .and_then(|id| i32::try_from(id).ok())
    }

    fn describe(&self) -> BoxFuture<Result<QuorumView, QuorumError>> {
        let node = self.clone();
        Box::pin(async move {
            let d = node
                .describe_quorum()
                .await
                .map_err(|e| QuorumError::NotAvailable(e.to_string()))?;
            let replica = |r: &weir_metadata::quorum::node::ReplicaDescription| ReplicaView {
                node_id: i32::try_from(r.node_id).unwrap_or(-1),
                log_end_index: r
                    .matched_index
                    .map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX)),
                last_fetch_timestamp_ms: r.last_fetch_timestamp_ms,
                last_caught_up_timestamp_ms: r.last_caught_up_timestamp_ms,
                controller_addr: r.addr.clone(),
            };
            Ok(QuorumView {
                leader_id: i32::try_from(d.leader_id).ok(),
                leader_epoch: i64::try_from(d.leader_epoch).unwrap_or(i64::MAX),
                high_watermark: i64::try_from(d.high_watermark).unwrap_or(i64::MAX),
                voters: d.voters.iter().map(replica).collect(),
                learners: d.learners.iter().map(replica).collect(),
            })
        })
    }

    fn add_voter(&self, node_id: u64) -> BoxFuture<Result<(), VoterChangeRefused>> {
        let node = self.clone();
        Box::pin(async move { node.add_voter(node_id).await.map_err(voter_change_refused) })
    }

    fn remove_voter(&self, node_id: u64) -> BoxFuture<Result<(), VoterChangeRefused>> {
        let node = self.clone();
        Box::pin(async move {
            node.remove_voter(node_id)
                .await
                .map_err(voter_change_refused)
        })
    }
}

/// The broker's membership in the cluster.
pub struct ClusterLink {
    pub quorum: Arc<dyn MetadataQuorum>,
    image: Arc<RwLock<MetadataImage>>,
    /// The broker epoch of this process's registration; -1 before it.
    broker_epoch: Arc<AtomicI64>,
    incarnation_id: [u8; 16],
    /// The metadata index the local state (registry, leadership) matches.
    reconciled: watch::Sender<u64>,
    /// Set by a controlled shutdown: heartbeats keep asking to stay fenced (a
    /// plain heartbeat from a caught-up broker would unfence it again).
    leaving: std::sync::atomic::AtomicBool,
    /// Set when [`Broker::join_cluster`] returns: registered, unfenced and
    /// caught up with the metadata log as of joining.
    joined: std::sync::atomic::AtomicBool,
}

/// How often a refused registration is logged again.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often a fenced broker heartbeats, to be unfenced as soon as it caught up.
const FENCED_HEARTBEAT: Duration = Duration::from_millis(50);

/// How long a broker waits for the quorum before each retry of its registration.
const REGISTER_RETRY: Duration = Duration::from_millis(200);

impl ClusterLink {
    pub fn image(&self) -> RwLockReadGuard<'_, MetadataImage> {
        // Appliers swap whole values under the lock; a poisoned lock still
        // holds a consistent image.
        self.image.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Waits until the local state reflects metadata index `index`, so an
    /// admin request answered afterwards is visible in this broker's own
    /// Metadata answers. Bounded by `timeout`.
    pub async fn wait_reconciled(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.reconciled.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Broker {
    /// The cluster link; set by [`Broker::join_cluster`] before the Kafka
    /// listener opens, so handlers may rely on it.
    pub fn cluster(&self) -> &ClusterLink {
        self.cluster
            .get()
            .expect("join_cluster runs before any request is served")
    }

    /// Joins the cluster through `quorum`: imports a data directory written
    /// before the quorum existed (when `import_local_topics`), registers
    /// this broker, starts the heartbeat and the image follower, and returns
    /// once the controller has unfenced this broker and the local state
    /// matches the image.
    pub async fn join_cluster(
        self: &Arc<Self>,
        quorum: Arc<dyn MetadataQuorum>,
        import_local_topics: bool,
    ) -> Result<(), BrokerError> {
        let link = ClusterLink {
            image: quorum.image(),
            quorum,
            broker_epoch: Arc::new(AtomicI64::new(-1)),
            incarnation_id: crate::topics::random_id(),
            reconciled: watch::channel(0).0,
            leaving: std::sync::atomic::AtomicBool::new(false),
            joined: std::sync::atomic::AtomicBool::new(false),
        };
        if self.cluster.set(link).is_err() {
            return Err(BrokerError::Internal("joined the cluster twice".into()));
        }
        if import_local_topics {
            self.import_local_topics().await?;
        }
        let epoch = self.register().await?;
        tracing::info!(broker_epoch = epoch, "registered with the controller");
        self.settle_cluster_id(import_local_topics).await?;
        self.import_dynamic_configs().await?;
        self.producer_ids.set_source(Box::new(QuorumProducerIds {
            quorum: self.cluster().quorum.clone(),
            broker_id: self.config.node_id,
            broker_epoch: self.cluster().broker_epoch.clone(),
        }));
        // The loops hold the broker weakly, so they end when it is dropped
        // (tests reopen a data directory in one process).
        tokio::spawn(follow_image(Arc::downgrade(self)));
        tokio::spawn(heartbeat_loop(Arc::downgrade(self)));
        tokio::spawn(crate::replication::isr_loop(Arc::downgrade(self)));
        // Serve only once unfenced and reconciled: before that, Metadata
        // would not list this broker or its partitions.
        let mut applied = self.cluster().quorum.applied_index();
        loop {
            let unfenced = self
                .cluster()
                .image()
                .broker(self.config.node_id)
                .is_some_and(|b| !b.fenced && b.broker_epoch == self.cluster().broker_epoch());
            if unfenced {
                break;
            }
            if applied.changed().await.is_err() {
                return Err(BrokerError::Internal("the metadata quorum stopped".into()));
            }
        }
        let index = *applied.borrow();
        self.cluster()
            .wait_reconciled(index, Duration::from_secs(60))
            .await;
        self.cluster().joined.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether this broker should receive traffic (`/health/ready`): `Err`
    /// carries a short reason. Ready means the logs are recovered (true of any
    /// `Broker`, since [`Broker::open`] recovers them), and the broker is
    /// registered, unfenced with its current registration, caught up on
    /// metadata, and not shutting down.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let Some(link) = self.cluster.get() else {
            return Err("starting the metadata quorum");
        };
        if link.leaving.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        let epoch = link.broker_epoch();
        if epoch < 0 {
            return Err("not registered with the controller");
        }
        let unfenced = link
            .image()
            .broker(self.config.node_id)
            .is_some_and(|b| !b.fenced && b.broker_epoch == epoch);
        if !unfenced {
            return Err("fenced by the controller");
        }
        if !link.joined.load(Ordering::Acquire) {
            return Err("catching up on metadata");
        }
        Ok(())
    }

    /// The cluster id: the metadata log's, once claimed (the first broker
    /// to register claims its own); this data directory's before that.
    pub fn cluster_id(&self) -> String {
        self.cluster
            .get()
            .and_then(|link| link.image().cluster_id.clone())
            .unwrap_or_else(|| self.cluster_id.clone())
    }

    /// Claims this directory's cluster id for the cluster, or learns the
    /// cluster's. A directory whose metadata log is new takes the cluster's
    /// id into its `meta.properties`; one that already followed another
    /// cluster's log is refused, as KRaft refuses a mismatched `cluster.id`.
    async fn settle_cluster_id(&self, metadata_log_is_new: bool) -> Result<(), BrokerError> {
        let request = ControllerRequest::ClaimClusterId {
            cluster_id: self.cluster_id.clone(),
        };
        let effective = loop {
            match self.cluster().quorum.submit(request.clone()).await {
                Ok(Submitted {
                    response: ControllerResponse::Items(items),
                    ..
                }) if !items.is_empty() => break items[0].name.clone(),
                Ok(other) => {
                    return Err(BrokerError::Internal(format!(
                        "unexpected answer to ClaimClusterId: {:?}",
                        other.response
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the controller to settle the cluster id");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        };
        if effective == self.cluster_id {
            return Ok(());
        }
        if metadata_log_is_new {
            return self._data_dir.adopt_cluster_id(&effective);
        }
        Err(BrokerError::DataDir(format!(
            "this data directory belongs to cluster {} but the metadata quorum's cluster is \
             {effective}; point the node at its own cluster's voters, or give it an empty \
             --data-dir to join this one",
            self.cluster_id
        )))
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        let advertised = self.config.advertised();
        vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: advertised.host,
            port: advertised.port,
        }]
    }

    /// Registers until the controller accepts; returns the broker epoch.
    /// A refusal (another live process holds this node id) is final.
    async fn register(&self) -> Result<i64, BrokerError> {
        let link = self.cluster();
        let mut logged = false;
        let mut last_refusal_log: Option<std::time::Instant> = None;
        loop {
            let request = ControllerRequest::RegisterBroker {
                broker_id: self.config.node_id,
                incarnation_id: link.incarnation_id,
                endpoints: self.endpoints(),
                rack: self.config.rack.clone(),
            };
            match link.quorum.submit(request).await {
                Ok(Submitted {
                    response: ControllerResponse::RegisterBroker { broker_epoch },
                    ..
                }) => {
                    link.broker_epoch.store(broker_epoch, Ordering::Release);
                    return Ok(broker_epoch);
                }
                Ok(other) => {
                    tracing::error!(response = ?other.response, "unexpected answer to RegisterBroker");
                }
                Err(QuorumError::Refused(e)) => {
                    // As Kafka's broker: a restart within the old process's
                    // session is refused until that session expires, so keep
                    // trying; a second live process with this id never gets in.
                    let now = std::time::Instant::now();
                    if last_refusal_log.is_none_or(|t| now.duration_since(t) > REFUSAL_LOG_EVERY) {
                        tracing::error!(error = %e, node_id = self.config.node_id,
                            "the controller refuses this node's registration: if another \
                             process runs with this --node-id, stop it or give this one \
                             another id; after a restart this clears when the old \
                             session expires (broker_session_timeout_ms)");
                        last_refusal_log = Some(now);
                    }
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, node_id = self.config.node_id,
                            voters = %self.config.voters(),
                            "cannot register with the controller yet (is a majority of the \
                             voters running and reachable at their controller addresses?); retrying");
                        logged = true;
                    }
                }
            }
            tokio::time::sleep(REGISTER_RETRY).await;
        }
    }

    /// Heartbeats every `broker_heartbeat_interval_ms`; registers again
    /// when the controller no longer knows this registration.
    /// Tells the controller this broker is going away, so it moves leadership
    /// off it now rather than after the session timeout. Best effort, bounded.
    pub async fn leave_cluster(&self) {
        let Some(link) = self.cluster.get() else {
            return;
        };
        link.leaving.store(true, Ordering::Release);
        let request = ControllerRequest::BrokerHeartbeat {
            broker_id: self.config.node_id,
            broker_epoch: link.broker_epoch(),
            applied_index: *link.quorum.applied_index().borrow(),
            want_shutdown: true,
        };
        // Kafka's controlled shutdown: the controller moves every leadership away (and this
        // broker out of every ISR) at once. Waiting until this broker's own state shows it
        // means in-flight acks=all writes here end with NOT_LEADER_OR_FOLLOWER, which
        // clients retry at the new leaders, rather than with a closed connection.
        match tokio::time::timeout(Duration::from_secs(5), link.quorum.submit(request)).await {
            Ok(Ok(submitted)) => {
                if !link
                    .wait_reconciled(submitted.index, Duration::from_secs(5))
                    .await
                {
                    tracing::warn!("leadership moves not applied here before shutting down");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown refused"),
            Err(_) => tracing::warn!("controlled shutdown timed out; leaving anyway"),
        }
        self.fetchers.stop_all();
    }

    /// Makes the topic registry and partition leadership match the image.
    /// Opening or deleting logs is blocking I/O: runs off the async threads.
    fn reconcile(self: &Arc<Self>, allow_deletes: bool) -> Result<(), BrokerError> {
        let me = self.config.node_id;
        self.apply_dynamic_configs();
        // Copy what is needed and let the image go before any disk work.
        struct Wanted {
            name: String,
            id: [u8; 16],
            count: i32,
            hosted: Vec<i32>,
            states: Vec<(i32, PartitionState)>,
            overrides: BTreeMap<String, String>,
        }
        let wanted: Vec<Wanted> = {
            let image = self.cluster().image();
            image
                .topics
                .values()
                .map(|t| {
                    let states: Vec<(i32, PartitionState)> = t
                        .partitions
                        .iter()
                        .filter(|(_, p)| p.replicas.contains(&me))
                        .map(|(i, p)| (*i, p.clone()))
                        .collect();
                    Wanted {
                        name: t.name.clone(),
                        id: t.topic_id,
                        count: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                        hosted: states.iter().map(|(i, _)| *i).collect(),
                        states,
                        overrides: image
                            .configs_of(&ConfigResource::Topic(t.name.clone()))
                            .cloned()
                            .unwrap_or_default(),
                    }
                })
                .collect()
        };
        let mut followed = Vec::new();
        {
            let mut registry = self.registry_mut();
            let gone: Vec<String> = registry
                .iter()
                .filter(|t| !wanted.iter().any(|w| w.name == t.name && w.id == t.id))
                .map(|t| t.name.clone())
                .collect();
            if allow_deletes {
                for name in &gone {
                    tracing::info!(topic = %name, "topic deleted in the metadata log; deleting its logs");
                    registry.delete(name)?;
                }
            }
            for w in &wanted {
                if !allow_deletes && gone.contains(&w.name) {
                    continue; // another topic of this name: its fate waits for catching up
                }
                if let Some(t) = registry.get(&w.name) {
                    // A reassignment moved these off this broker: a leader of one
                    // steps down (and unloads a coordinator) before its log closes.
                    for p in t.partitions.iter().filter(|p| !w.hosted.contains(&p.index)) {
                        if p.is_leader() {
                            p.set_leadership(false, p.leader_epoch());
                            self.coordinators_unload(t, p.index);
                        }
                    }
                }
                let hosted: Vec<i32> = match registry.get(&w.name) {
                    // Keep partitions no longer assigned here until caught up.
                    Some(t) if !allow_deletes => {
                        let mut all = w.hosted.clone();
                        all.extend(t.partitions.iter().map(|p| p.index));
                        all.sort_unstable();
                        all.dedup();
                        all
                    }
                    _ => w.hosted.clone(),
                };
                let topic = registry.sync_topic(&w.name, w.id, w.count, &hosted, &w.overrides)?;
                for (index, state) in &w.states {
                    let Some(p) = topic.partition(*index) else {
                        continue;
                    };
                    let leads = self.apply_partition_state(&topic, p, state);
                    if !leads && state.leader != NO_LEADER {
                        followed.push(crate::replication::Followed {
                            topic: w.name.clone(),
                            topic_id: w.id,
                            index: *index,
                            leader_id: state.leader,
                            leader_epoch: state.leader_epoch,
                        });
                    }
                }
            }
        }
        self.fetchers.sync(self, followed);
        Ok(())
    }

    /// Makes the dynamic broker and group configs those of the image: the topic defaults of
    /// every topic follow, and the local copy is rewritten. A set the image holds that this
    /// broker can't apply (a value it does not accept) is logged and left out.
    fn apply_dynamic_configs(&self) {
        let next = {
            let image = self.cluster().image();
            crate::dynamic_config::DynamicConfigs::from_image(&image, self.config.node_id)
        };
        let mut dynamic = self.dynamic_configs();
        if dynamic.same_values(&next) && dynamic.from_metadata_log {
            return;
        }
        let defaults = match next.topic_defaults(&self.config.topic_defaults) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "dynamic broker configs in the metadata log not applied");
                return;
            }
        };
        if let Err(e) = self.registry_mut().set_defaults(defaults) {
            tracing::error!(error = %e, "dynamic broker configs in the metadata log not applied");
            return;
        }
        // The copy only speeds up the next start; the metadata log is what counts.
        if let Err(e) = next.persist(&self.config.data_dir) {
            tracing::warn!(error = %e, "could not keep a local copy of the dynamic configs");
        }
        if !dynamic.same_values(&next) {
            tracing::info!(
                cluster_default = next.broker_default.len(),
                broker = next.broker.len(),
                groups = next.groups.len(),
                "dynamic configs applied from the metadata log"
            );
        }
        *dynamic = next;
    }

    /// Brings the dynamic broker and group configs a broker kept on its own (before they
    /// moved into the metadata log) into the log, once: keys the log already sets keep its
    /// value. Until this is done the local file stays as it was.
    async fn import_dynamic_configs(&self) -> Result<(), BrokerError> {
        let stored = self.dynamic_configs().clone();
        if stored.from_metadata_log {
            return Ok(());
        }
        let image_view = {
            let image = self.cluster().image();
            crate::dynamic_config::DynamicConfigs::from_image(&image, self.config.node_id)
        };
        let changes = stored.import_changes(&image_view, self.config.node_id);
        if changes.is_empty() {
            return Ok(());
        }
        let count = changes.len();
        let request = ControllerRequest::AlterConfigs {
            changes,
            validate_only: false,
        };
        // Straight to the quorum: this runs before the image follower starts, and that first
        // reconcile applies what this commits.
        let items = loop {
            match self.cluster().quorum.submit(request.clone()).await {
                Ok(Submitted {
                    response: ControllerResponse::Items(items),
                    ..
                }) => break items,
                Ok(other) => {
                    return Err(BrokerError::Internal(format!(
                        "unexpected answer to the dynamic configs import: {:?}",
                        other.response
                    )));
                }
                Err(QuorumError::Refused(e)) => {
                    return Err(BrokerError::Internal(format!(
                        "could not import this data directory's dynamic configs into the \
                         metadata log: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the controller to import dynamic configs");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        };
        if let Some(bad) = items.iter().find(|i| i.error_code != 0) {
            return Err(BrokerError::Internal(format!(
                "could not import this data directory's dynamic configs into the metadata log: {}",
                bad.message
                    .clone()
                    .unwrap_or_else(|| format!("error {}", bad.error_code))
            )));
        }
        tracing::info!(
            configs = count,
            "dynamic configs kept in the data directory imported into the metadata log"
        );
        Ok(())
    }

    /// Brings topics from a data directory written before the quorum into
    /// the metadata log, with their ids, partition counts and overrides, as
    /// hosted (and led) by this broker. Topics the log already has are left alone.
    async fn import_local_topics(&self) -> Result<(), BrokerError> {
        let topics: Vec<_> = self.registry().iter().cloned().collect();
        if topics.is_empty() {
            return Ok(());
        }
        let me: BrokerId = self.config.node_id;
        let imports: Vec<weir_metadata::controller::ImportedTopic> = topics
            .iter()
            .map(|t| weir_metadata::controller::ImportedTopic {
                name: t.name.clone(),
                topic_id: t.id,
                partitions: t.partition_count,
                replicas: vec![me],
                configs: t.overrides.clone(),
            })
            .collect();
        let next_producer_id =
            crate::producer_ids::LocalProducerIdSource::open(&self.config.data_dir.join("meta"))?
                .next_unreserved();
        loop {
            let request = ControllerRequest::ImportTopics {
                topics: imports.clone(),
                next_producer_id,
            };
            match self.cluster().quorum.submit(request).await {
                Ok(_) => {
                    tracing::info!(
                        topics = imports.len(),
                        "data directory from before the metadata quorum imported into the metadata log"
                    );
                    return Ok(());
                }
                Err(QuorumError::Refused(e)) => {
                    return Err(BrokerError::Internal(format!(
                        "could not import this data directory's topics into the metadata log: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the controller to import local topics");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        }
    }
}

/// Heartbeats every `broker_heartbeat_interval_ms`; registers again when the
/// controller no longer knows this registration. Ends with the broker.
async fn heartbeat_loop(broker: std::sync::Weak<Broker>) {
    let mut warned = false;
    loop {
        let Some(this) = broker.upgrade() else {
            return;
        };
        let link = this.cluster();
        let applied_index = *link.quorum.applied_index().borrow();
        let request = ControllerRequest::BrokerHeartbeat {
            broker_id: this.config.node_id,
            broker_epoch: link.broker_epoch(),
            applied_index,
            want_shutdown: link.leaving.load(Ordering::Acquire),
        };
        // A heartbeat that hangs (forwarded to a controller that stopped answering: paused,
        // cut off) must not hold the next one back: a new controller fences a broker it has
        // not heard from within the session, so each try is bounded well inside it.
        let bound = Duration::from_millis((this.config.broker_session_timeout_ms / 3).max(100));
        let answer = match tokio::time::timeout(bound, link.quorum.submit(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(QuorumError::NotAvailable(format!(
                "no answer from the controller within {} ms",
                bound.as_millis()
            ))),
        };
        match answer {
            Ok(_) => warned = false,
            Err(QuorumError::Refused(e)) => {
                tracing::warn!(error = %e, "heartbeat refused; registering again");
                if let Err(e) = this.register().await {
                    tracing::error!(error = %e, "could not register again");
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "heartbeat not delivered; serving from the last metadata image");
                    warned = true;
                }
            }
        }
        // A fenced broker asks again soon: it is unfenced by the first
        // heartbeat that shows it caught up (KRaft does the same).
        let fenced = {
            let image = link.image();
            image.broker(this.config.node_id).is_none_or(|b| b.fenced)
        };
        let pause = if fenced {
            FENCED_HEARTBEAT
        } else {
            Duration::from_millis(this.config.broker_heartbeat_interval_ms)
        };
        drop(this);
        tokio::time::sleep(pause).await;
    }
}

/// Applies every new image to the local state. Ends with the broker or the quorum.
async fn follow_image(broker: std::sync::Weak<Broker>) {
    let Some(mut applied) = broker.upgrade().map(|b| b.cluster().quorum.applied_index()) else {
        return;
    };
    loop {
        let Some(this) = broker.upgrade() else {
            return;
        };
        let index = *applied.borrow_and_update();
        let worker = this.clone();
        let done = tokio::task::spawn_blocking(move || {
            // Until the controller has unfenced this registration, the
            // local image may lag the log (a restart applies only what
            // it knew was committed): a topic missing from it may just
            // be newer. Nothing is deleted until the broker caught up.
            let caught_up = {
                let link = worker.cluster();
                let image = link.image();
                image
                    .broker(worker.config.node_id)
                    .is_some_and(|b| !b.fenced && b.broker_epoch == link.broker_epoch())
            };
            worker.reconcile(caught_up)
        })
        .await;
        match done {
            Ok(Ok(())) => {
                this.cluster().reconciled.send_replace(index);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "could not apply the metadata image"),
            Err(e) => tracing::error!(error = %e, "metadata image follower failed"),
        }
        drop(this);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// How long an admin request waits for its change to reach this broker's
/// own state after the controller committed it.
const RECONCILE_WAIT: Duration = Duration::from_secs(30);

impl Broker {
    /// Runs `request` on the active controller and waits until this broker
    /// has applied its records, so the client that asked sees the change in
    /// this broker's next answers.
    pub(crate) async fn run_on_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, BrokerError> {
        let link = self.cluster();
        let submitted = link.quorum.submit(request).await.map_err(|e| match e {
            QuorumError::NotAvailable(m) => BrokerError::NoController(m),
            QuorumError::Refused(e) => BrokerError::InvalidRequest(e.to_string()),
        })?;
        if !link.wait_reconciled(submitted.index, RECONCILE_WAIT).await {
            tracing::warn!(
                index = submitted.index,
                "committed change not applied here in time"
            );
        }
        Ok(submitted.response)
    }

    /// A live broker's Kafka address (HOST:PORT) from the image.
    pub(crate) fn broker_address(&self, broker_id: BrokerId) -> Option<String> {
        let image = self.cluster().image();
        let b = image.broker(broker_id).filter(|b| !b.fenced)?;
        let e = b.endpoints.first()?;
        Some(format!("{}:{}", e.host, e.port))
    }

    /// The node that leads `topic`'s partition `index`, with its advertised
    /// address; `None` when the partition has no live leader.
    pub(crate) fn partition_leader(&self, topic: &str, index: i32) -> Option<(i32, String, u16)> {
        let image = self.cluster().image();
        let t = image.topic_by_name(topic)?;
        let leader = t.partitions.get(&index)?.leader;
        let b = image.broker(leader).filter(|b| !b.fenced)?;
        let e = b.endpoints.first()?;
        Some((leader, e.host.clone(), e.port))
    }

    /// KIP-951: what a client told NOT_LEADER_OR_FOLLOWER needs to go
    /// straight to the leader: the leader and its epoch from this broker's
    /// image ((-1, -1) when unknown), and that leader's endpoint.
    pub(crate) fn leader_hint(
        &self,
        topic: &str,
        index: i32,
    ) -> ((i32, i32), Option<(i32, String, u16, Option<String>)>) {
        let image = self.cluster().image();
        let Some(p) = image
            .topic_by_name(topic)
            .and_then(|t| t.partitions.get(&index))
        else {
            return ((-1, -1), None);
        };
        let endpoint = image.broker(p.leader).filter(|b| !b.fenced).and_then(|b| {
            let e = b.endpoints.first()?;
            Some((b.broker_id, e.host.clone(), e.port, b.rack.clone()))
        });
        ((p.leader, p.leader_epoch), endpoint)
    }

    /// Whether this broker is the coordinator of `group_id`: it leads the
    /// group's `__consumer_offsets` partition (or the topic is not created
    /// yet, and whoever is asked first creates it).
    pub(crate) fn coordinates_group(&self, group_id: &str) -> bool {
        self.coordinates(crate::groups::OFFSETS_TOPIC, group_id)
    }

    /// Whether this broker is the transaction coordinator of `transactional_id`.
    pub(crate) fn coordinates_transaction(&self, transactional_id: &str) -> bool {
        self.coordinates(crate::txn::TRANSACTION_STATE_TOPIC, transactional_id)
    }

    /// Whether this broker leads the partition of internal `topic` that
    /// holds `key` (Kafka's placement: abs(hashCode) modulo the count).
    fn coordinates(&self, topic: &str, key: &str) -> bool {
        let Some(count) = self
            .cluster()
            .image()
            .topic_by_name(topic)
            .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
        else {
            return true;
        };
        self.leads(topic, crate::groups::partition_for(key, count))
    }

    /// Whether this broker leads `topic`'s partition `index` right now.
    pub(crate) fn leads(&self, topic: &str, index: i32) -> bool {
        self.topic(topic)
            .and_then(|t| t.partition(index).map(|p| p.is_leader()))
            .unwrap_or(false)
    }

    /// Kafka's auto.create.topics.enable: creates `names` with the broker
    /// defaults through the controller. Failures leave the topics unknown.
    pub async fn auto_create_topics(&self, names: Vec<String>) {
        let request = ControllerRequest::CreateTopics {
            topics: names
                .iter()
                .map(|name| weir_metadata::controller::NewTopic {
                    name: name.clone(),
                    partitions: self.config.default_partitions,
                    replication_factor: 1,
                    assignments: None,
                    configs: BTreeMap::new(),
                })
                .collect(),
            validate_only: false,
        };
        match self.run_on_controller(request).await {
            Ok(ControllerResponse::Items(items)) => {
                for item in &items {
                    if item.error_code == 0 {
                        tracing::info!(topic = %item.name, "auto-created topic");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not auto-create topics"),
        }
    }

    /// Creates an internal topic through the controller if the image lacks
    /// it (compacted, no retention, replicated to min(3, live brokers) as
    /// Kafka's `offsets.topic.replication.factor` default of 3 asks, so that
    /// committed offsets survive the loss of a broker), and waits for it here. Failures are logged; callers answer COORDINATOR_NOT_AVAILABLE.
    pub(crate) async fn create_internal_topic(&self, name: &str, partitions: i32) {
        if self.cluster().image().topic_by_name(name).is_some() {
            return;
        }
        let live_brokers = self.cluster().image().live_brokers().count();
        let replication_factor = i16::try_from(live_brokers.clamp(1, 3)).unwrap_or(1);
        let segment_bytes = if name == crate::txn::TRANSACTION_STATE_TOPIC {
            self.config.transaction_state_segment_bytes
        } else {
            self.config.offsets_topic_segment_bytes
        }
        .to_string();
        let configs = [
            ("cleanup.policy", "compact"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("segment.bytes", segment_bytes.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let request = ControllerRequest::CreateTopics {
            topics: vec![weir_metadata::controller::NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                assignments: None,
                configs,
            }],
            validate_only: false,
        };
        match self.run_on_controller(request).await {
            Ok(ControllerResponse::Items(items)) => {
                for item in items
                    .iter()
                    .filter(|i| i.error_code != 0 && i.error_code != 36)
                {
                    tracing::error!(topic = name, code = item.error_code, message = ?item.message,
                        "could not create internal topic");
                }
            }
            Ok(other) => tracing::error!(?other, "unexpected answer creating {name}"),
            Err(e) => tracing::warn!(error = %e, "could not create {name} yet"),
        }
    }
}

/// Producer-id blocks from the controller (`ProducerIds` records), so that
/// no two brokers hand out the same id.
struct QuorumProducerIds {
    quorum: Arc<dyn MetadataQuorum>,
    broker_id: BrokerId,
    broker_epoch: Arc<AtomicI64>,
}

/// How long InitProducerId may wait for a block from the controller.
const PRODUCER_ID_BLOCK_WAIT: Duration = Duration::from_secs(10);

impl crate::producer_ids::ProducerIdSource for QuorumProducerIds {
    fn next_block(&self) -> Result<crate::producer_ids::ProducerIdBlock, BrokerError> {
        let request = ControllerRequest::AllocateProducerIds {
            broker_id: self.broker_id,
            broker_epoch: self.broker_epoch.load(Ordering::Acquire),
        };
        let submit = self.quorum.submit(request);
        // Callers are synchronous handlers on the multi-threaded runtime:
        // block_in_place lets this worker wait while the others run the quorum.
        let outcome = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(tokio::time::timeout(PRODUCER_ID_BLOCK_WAIT, submit))
        });
        match outcome {
            Ok(Ok(Submitted {
                response:
                    ControllerResponse::ProducerIds {
                        first_producer_id,
                        size,
                    },
                ..
            })) => Ok(crate::producer_ids::ProducerIdBlock {
                first: first_producer_id,
                size,
            }),
            Ok(Ok(other)) => Err(BrokerError::Internal(format!(
                "unexpected answer to AllocateProducerIds: {:?}",
                other.response
            ))),
            Ok(Err(e)) => Err(BrokerError::CoordinatorNotAvailable(format!(
                "no producer id block from the controller: {e}"
            ))),
            Err(_) => Err(BrokerError::CoordinatorNotAvailable(
                "no producer id block from the controller in time".into(),
            )),
        }
    }
}
