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
use weir_metadata::records::{BrokerId, ConfigResource, Endpoint};

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
    /// Milliseconds since the leader last heard from it, when known.
    pub last_contact_ms: Option<i64>,
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
    fn describe(&self) -> QuorumView;
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
}

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
        };
        if self.cluster.set(link).is_err() {
            return Err(BrokerError::Internal("joined the cluster twice".into()));
        }
        if import_local_topics {
            self.import_local_topics().await?;
        }
        let epoch = self.register().await;
        tracing::info!(broker_epoch = epoch, "registered with the controller");
        self.producer_ids.set_source(Box::new(QuorumProducerIds {
            quorum: self.cluster().quorum.clone(),
            broker_id: self.config.node_id,
            broker_epoch: self.cluster().broker_epoch.clone(),
        }));
        let follower = self.clone();
        tokio::spawn(async move { follower.follow_image().await });
        let beater = self.clone();
        tokio::spawn(async move { beater.heartbeat_loop().await });
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
        Ok(())
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
    async fn register(&self) -> i64 {
        let link = self.cluster();
        let mut logged = false;
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
                    return broker_epoch;
                }
                Ok(other) => {
                    tracing::error!(response = ?other.response, "unexpected answer to RegisterBroker");
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, node_id = self.config.node_id,
                            "cannot register with the controller yet; retrying");
                        logged = true;
                    }
                }
            }
            tokio::time::sleep(REGISTER_RETRY).await;
        }
    }

    /// Heartbeats every `broker_heartbeat_interval_ms`; registers again
    /// when the controller no longer knows this registration.
    async fn heartbeat_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        let mut warned = false;
        loop {
            tokio::time::sleep(interval).await;
            let link = self.cluster();
            let applied_index = *link.quorum.applied_index().borrow();
            let request = ControllerRequest::BrokerHeartbeat {
                broker_id: self.config.node_id,
                broker_epoch: link.broker_epoch(),
                applied_index,
                want_shutdown: false,
            };
            match link.quorum.submit(request).await {
                Ok(_) => warned = false,
                Err(QuorumError::Refused(e)) => {
                    tracing::warn!(error = %e, "heartbeat refused; registering again");
                    self.register().await;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "heartbeat not delivered; serving from the last metadata image");
                        warned = true;
                    }
                }
            }
        }
    }

    /// Tells the controller this broker is going away, so it moves leadership
    /// off it now rather than after the session timeout. Best effort, bounded.
    pub async fn leave_cluster(&self) {
        let Some(link) = self.cluster.get() else {
            return;
        };
        let request = ControllerRequest::BrokerHeartbeat {
            broker_id: self.config.node_id,
            broker_epoch: link.broker_epoch(),
            applied_index: *link.quorum.applied_index().borrow(),
            want_shutdown: true,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), link.quorum.submit(request)).await;
    }

    /// Applies every new image to the local state.
    async fn follow_image(self: Arc<Self>) {
        let mut applied = self.cluster().quorum.applied_index();
        loop {
            let index = *applied.borrow_and_update();
            let broker = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                // Until the controller has unfenced this registration, the
                // local image may lag the log (a restart applies only what
                // it knew was committed): a topic missing from it may just
                // be newer. Nothing is deleted until the broker caught up.
                let caught_up = {
                    let link = broker.cluster();
                    let image = link.image();
                    image
                        .broker(broker.config.node_id)
                        .is_some_and(|b| !b.fenced && b.broker_epoch == link.broker_epoch())
                };
                broker.reconcile(caught_up)
            })
            .await;
            match done {
                Ok(Ok(())) => {
                    self.cluster().reconciled.send_replace(index);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "could not apply the metadata image"),
                Err(e) => tracing::error!(error = %e, "metadata image follower failed"),
            }
            if applied.changed().await.is_err() {
                return;
            }
        }
    }

    /// Makes the topic registry and partition leadership match the image.
    /// Opening or deleting logs is blocking I/O: runs off the async threads.
    fn reconcile(&self, allow_deletes: bool) -> Result<(), BrokerError> {
        let me = self.config.node_id;
        // Copy what is needed and let the image go before any disk work.
        struct Wanted {
            name: String,
            id: [u8; 16],
            count: i32,
            hosted: Vec<i32>,
            leadership: Vec<(i32, bool, i32)>,
            overrides: BTreeMap<String, String>,
        }
        let wanted: Vec<Wanted> = {
            let image = self.cluster().image();
            image
                .topics
                .values()
                .map(|t| {
                    let hosted: Vec<i32> = t
                        .partitions
                        .iter()
                        .filter(|(_, p)| p.replicas.contains(&me))
                        .map(|(i, _)| *i)
                        .collect();
                    let leadership = t
                        .partitions
                        .iter()
                        .filter(|(_, p)| p.replicas.contains(&me))
                        .map(|(i, p)| (*i, p.leader == me, p.leader_epoch))
                        .collect();
                    Wanted {
                        name: t.name.clone(),
                        id: t.topic_id,
                        count: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                        hosted,
                        leadership,
                        overrides: image
                            .configs_of(&ConfigResource::Topic(t.name.clone()))
                            .cloned()
                            .unwrap_or_default(),
                    }
                })
                .collect()
        };
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
            for &(index, leads, epoch) in &w.leadership {
                if let Some(p) = topic.partition(index) {
                    if leads && (!p.is_leader() || p.leader_epoch() != epoch) {
                        // Leader epochs mark where each leadership began (KIP-101).
                        if let Err(e) = p.log.assign_leader_epoch(epoch, p.log.log_end_offset()) {
                            tracing::error!(topic = %w.name, partition = index, error = %e,
                                "could not record the leader epoch");
                        }
                    }
                    p.set_leadership(leads, epoch);
                }
            }
        }
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
