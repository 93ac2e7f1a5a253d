//! The simulated cluster: nodes, the network between them, the metadata quorum, a producer,
//! the fault schedule and the invariants. One [`World`] is one seed's run.
//!
//! Time moves in fixed steps of [`STEP_MS`]. In each step: messages due are delivered, every
//! node does its periodic work, the producer may send, a fault may be injected, and every
//! invariant is checked. All choices come from one seeded [`Rng`], and every collection is
//! ordered, so a seed replays exactly.

use std::collections::BTreeMap;

use weir_broker::follower::{self, DivergenceCheck, FetchAnswer};
use weir_broker::replica::LeaderState;
use weir_metadata::controller::{
    AlterPartitionItem, AlterPartitionResult, Controller, ControllerConfig, ControllerRequest,
    ControllerResponse, NewTopic,
};
use weir_metadata::image::MetadataImage;
use weir_metadata::records::{BrokerId, Endpoint, MetadataRecord, NO_LEADER, TopicId};
use weir_protocol::error_code::ErrorCode;

use crate::log::{Rec, SimLog};
use crate::rng::Rng;

/// One simulated step.
pub const STEP_MS: u64 = 10;
/// The client's node id on the network (brokers are 1..=N).
const CLIENT: BrokerId = 0;
const TOPIC: &str = "sim";
const HEARTBEAT_MS: u64 = 250;
const METADATA_FETCH_MS: u64 = 50;
const ISR_CHECK_MS: u64 = 250;
const CONTROLLER_TICK_MS: u64 = 250;
/// A request unanswered this long is given up (the real shells' request timeouts, shortened).
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// `replica.fetch.backoff.ms`.
const BACKOFF_MS: u64 = 200;
/// Records per fetch answer at most (the leader's byte limit, in records).
const FETCH_RECORDS_MAX: usize = 8;
/// Entries per metadata answer at most.
const METADATA_ENTRIES_MAX: usize = 16;
/// Messages in flight at most: the network is a bounded queue; past this, sends are dropped.
const IN_FLIGHT_MAX: usize = 100_000;

/// A bug planted on purpose, to show the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The leader's high watermark is its own durable end, whatever the ISR holds.
    HwWithoutIsr,
    /// A follower of a new leader cuts its log to its own high watermark instead of asking
    /// the leader where its epoch ends (the pre-KIP-101 rule).
    TruncateToHighWatermark,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub brokers: i32,
    pub partitions: i32,
    /// Simulated time with faults, then time healed (every node up, every link whole, no
    /// message lost) before the final checks.
    pub fault_ms: u64,
    pub heal_ms: u64,
    /// Per step: the chance of a new fault (crash, isolation, cut link, controller failover).
    pub fault_chance: f64,
    /// Per message.
    pub drop_chance: f64,
    pub duplicate_chance: f64,
    pub delay_ms_max: u64,
    pub planted: Option<Planted>,
    /// Keep a readable trace of every event (slow; for replays).
    pub trace: bool,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            brokers: 3,
            partitions: 2,
            fault_ms: 30_000,
            heal_ms: 15_000,
            fault_chance: 0.01,
            drop_chance: 0.02,
            duplicate_chance: 0.02,
            delay_ms_max: 40,
            planted: None,
            trace: false,
        }
    }
}

/// A finished run's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub crashes: u64,
    pub isolations: u64,
    pub cut_links: u64,
    pub failovers: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub produced: u64,
    pub acked: u64,
    pub leader_elections: u64,
    pub truncations: u64,
    pub metadata_entries: u64,
    /// A hash over every event in order: two runs of a seed are the same run iff equal.
    pub trace_hash: u64,
}

impl Stats {
    /// Injected faults: crashes, isolations, cut links, controller failovers, and each
    /// message dropped or duplicated.
    pub fn faults(&self) -> u64 {
        self.crashes
            + self.isolations
            + self.cut_links
            + self.failovers
            + self.dropped
            + self.duplicated
    }
}

/// An invariant broke.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub now_ms: u64,
    pub what: String,
    /// The last events before it (only with `Options::trace`).
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at {} ms: {}",
            self.seed, self.now_ms, self.what
        )?;
        writeln!(
            f,
            "replay: cargo run --release -p weir-sim -- --seed {} --trace",
            self.seed
        )?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Payload {
    Register {
        incarnation: u64,
    },
    Registered {
        incarnation: u64,
        broker_epoch: i64,
    },
    Heartbeat {
        broker_epoch: i64,
        applied_index: u64,
    },
    /// The controller refused a heartbeat's broker epoch: register again.
    StaleEpoch {
        broker_epoch: i64,
    },
    AlterPartition {
        req: u64,
        broker_epoch: i64,
        items: Vec<AlterPartitionItem>,
    },
    AlterPartitionAnswer {
        req: u64,
        results: Vec<AlterPartitionResult>,
    },
    MetadataFetch {
        from: u64,
    },
    MetadataEntries {
        from: u64,
        entries: Vec<Vec<MetadataRecord>>,
    },
    Fetch {
        req: u64,
        partition: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        current_leader_epoch: i32,
        broker_epoch: i64,
    },
    FetchAnswer {
        req: u64,
        partition: i32,
        error: ErrorCode,
        diverging: (i32, i64),
        high_watermark: i64,
        log_start: i64,
        base_offset: i64,
        records: Vec<Rec>,
    },
    EpochQuery {
        req: u64,
        partition: i32,
        current_leader_epoch: i32,
        epoch: i32,
    },
    EpochAnswer {
        req: u64,
        partition: i32,
        error: ErrorCode,
        leader_epoch: i32,
        end_offset: i64,
    },
    Produce {
        partition: i32,
        value: u64,
    },
    ProduceAck {
        partition: i32,
        offset: i64,
        value: u64,
    },
}

impl Payload {
    fn kind(&self) -> u64 {
        match self {
            Payload::Register { .. } => 1,
            Payload::Registered { .. } => 2,
            Payload::Heartbeat { .. } => 3,
            Payload::StaleEpoch { .. } => 4,
            Payload::AlterPartition { .. } => 5,
            Payload::AlterPartitionAnswer { .. } => 6,
            Payload::MetadataFetch { .. } => 7,
            Payload::MetadataEntries { .. } => 8,
            Payload::Fetch { .. } => 9,
            Payload::FetchAnswer { .. } => 10,
            Payload::EpochQuery { .. } => 11,
            Payload::EpochAnswer { .. } => 12,
            Payload::Produce { .. } => 13,
            Payload::ProduceAck { .. } => 14,
        }
    }
}

#[derive(Debug, Clone)]
struct Message {
    from: BrokerId,
    to: BrokerId,
    /// Both ends' process incarnations when sent: a message outlives neither process, as a
    /// TCP connection does not.
    from_incarnation: u64,
    to_incarnation: u64,
    payload: Payload,
}

/// What a follower does for one partition (the real `FollowState`, plus the in-flight
/// request the real fetcher holds on its connection).
#[derive(Debug, Clone)]
struct FollowRole {
    leader: BrokerId,
    leader_epoch: i32,
    truncated: bool,
    backoff_until_ms: u64,
    /// The request out, its id and when it was sent.
    in_flight: Option<(u64, u64)>,
    /// The fetcher waits for its own sync before fetching again (its fetch offset is its
    /// durable end).
    awaiting_sync: bool,
}

#[derive(Debug, Clone)]
struct LeaderRole {
    state: LeaderState,
    /// Produce requests waiting for the high watermark: (offset, value).
    waiting: Vec<(i64, u64)>,
    /// The highest watermark seen in this leadership, to check it never goes back.
    high_watermark_seen: i64,
}

#[derive(Debug, Clone, Default)]
struct Replica {
    log: SimLog,
    leader: Option<LeaderRole>,
    follow: Option<FollowRole>,
    /// Records below this offset were checked against the committed log and have not been
    /// touched since (truncation and crashes lower it).
    verified: i64,
}

#[derive(Debug)]
struct Node {
    id: BrokerId,
    up: bool,
    incarnation: u64,
    image: MetadataImage,
    /// Committed metadata entries applied (the image is the reference image at this count).
    applied: u64,
    /// Entries persisted: a crash keeps these.
    persisted: u64,
    broker_epoch: i64,
    replicas: BTreeMap<i32, Replica>,
    /// Request ids are never reused, across restarts too.
    next_req: u64,
    /// An AlterPartition out, its id and when it was sent.
    alter_in_flight: Option<(u64, u64)>,
    next_heartbeat_ms: u64,
    next_metadata_fetch_ms: u64,
    next_isr_check_ms: u64,
    /// When a crashed node comes back.
    restart_at_ms: Option<u64>,
}

impl Node {
    /// Registered, and caught up to its registration: only then does the real broker follow
    /// the image (`join_cluster` starts `follow_image` after `register` returns).
    fn joined(&self) -> bool {
        self.broker_epoch >= 0 && self.applied as i64 >= self.broker_epoch
    }
}

/// The metadata quorum, modelled: the committed log and which node leads it.
///
/// openraft itself is not simulated: it runs its own tokio tasks, timers and randomised
/// election timeouts, none of which a seeded single-threaded loop controls, so a seed would
/// not replay. What the rest of the cluster relies on is Raft's guarantee, and that is what
/// is modelled: one committed log, entries committed only while the leader reaches a
/// majority, applied in order by every node, and a new leader holding every committed entry.
/// The controller on top is the real one, fresh on every failover (its memory is lost then,
/// as in the real shell).
struct Quorum {
    log: Vec<Vec<MetadataRecord>>,
    /// The image after each committed count of entries: index i is the image after i.
    reference: Vec<MetadataImage>,
    leader: Option<BrokerId>,
    controller: Controller,
    next_tick_ms: u64,
    topic_created: bool,
}

pub struct World {
    opts: Options,
    rng: Rng,
    now_ms: u64,
    nodes: BTreeMap<BrokerId, Node>,
    quorum: Quorum,
    /// Messages by (delivery time, sequence).
    network: BTreeMap<(u64, u64), Message>,
    next_seq: u64,
    /// Links cut, (low id, high id), until a time.
    cut: BTreeMap<(BrokerId, BrokerId), u64>,
    /// Per partition: the committed records, as leaders' high watermarks revealed them.
    committed: BTreeMap<i32, Vec<Rec>>,
    /// Per partition: acknowledged (offset, value).
    acked: BTreeMap<i32, BTreeMap<i64, u64>>,
    /// (partition, leader epoch) -> the broker that led it.
    leaders_seen: BTreeMap<(i32, i32), BrokerId>,
    next_value: u64,
    stats: Stats,
    trace: Vec<String>,
    topic_id: TopicId,
    /// A violation found where no error can be returned; reported at the step's end.
    deferred: Option<String>,
}

fn topic_id() -> TopicId {
    let mut id = [0u8; 16];
    id[0] = 0x51;
    id[15] = 1;
    id
}

fn link(a: BrokerId, b: BrokerId) -> (BrokerId, BrokerId) {
    (a.min(b), a.max(b))
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
}

impl World {
    pub fn new(opts: Options) -> World {
        let mut rng = Rng::new(opts.seed);
        let config = ControllerConfig {
            broker_session_timeout_ms: 2_000,
            producer_id_block_size: 1000,
            default_partitions: 1,
            default_replication_factor: 1,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 10_000,
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=opts.brokers {
            nodes.insert(
                id,
                Node {
                    id,
                    up: true,
                    incarnation: rng.next_u64(),
                    image: MetadataImage::new(),
                    applied: 0,
                    persisted: 0,
                    broker_epoch: -1,
                    replicas: BTreeMap::new(),
                    next_req: 1,
                    alter_in_flight: None,
                    next_heartbeat_ms: 0,
                    next_metadata_fetch_ms: 0,
                    next_isr_check_ms: 0,
                    restart_at_ms: None,
                },
            );
        }
        let tid = topic_id();
        World {
            quorum: Quorum {
                log: Vec::new(),
                reference: vec![MetadataImage::new()],
                leader: Some(1),
                controller: Controller::new(config).with_id_source(move || tid),
                next_tick_ms: 0,
                topic_created: false,
            },
            rng,
            now_ms: 0,
            nodes,
            network: BTreeMap::new(),
            next_seq: 0,
            cut: BTreeMap::new(),
            committed: BTreeMap::new(),
            acked: BTreeMap::new(),
            leaders_seen: BTreeMap::new(),
            next_value: 1,
            stats: Stats::default(),
            trace: Vec::new(),
            topic_id: tid,
            deferred: None,
            opts,
        }
    }

    fn note(&mut self, kind: u64, a: i64, b: i64, text: impl FnOnce() -> String) {
        let mut h = mix(self.stats.trace_hash, self.now_ms);
        h = mix(h, kind);
        h = mix(h, a as u64);
        h = mix(h, b as u64);
        self.stats.trace_hash = h;
        if self.opts.trace {
            let line = format!("{:>7} ms  {}", self.now_ms, text());
            self.trace.push(line);
        }
    }

    fn violation(&self, what: String) -> Violation {
        let keep = 80;
        let from = self.trace.len().saturating_sub(keep);
        Violation {
            seed: self.opts.seed,
            now_ms: self.now_ms,
            what,
            trace: self.trace[from..].to_vec(),
        }
    }

    /// Runs the whole schedule. `Err` names the first invariant that broke.
    pub fn run(mut self) -> Result<Stats, Violation> {
        let end_ms = self.opts.fault_ms + self.opts.heal_ms;
        while self.now_ms < end_ms {
            self.step().map_err(|what| self.violation(what))?;
            self.now_ms += STEP_MS;
        }
        self.final_checks().map_err(|what| self.violation(what))?;
        Ok(self.stats)
    }

    /// The full trace so far (with `Options::trace`).
    pub fn run_traced(mut self) -> (Result<Stats, Violation>, Vec<String>) {
        self.opts.trace = true;
        let end_ms = self.opts.fault_ms + self.opts.heal_ms;
        while self.now_ms < end_ms {
            if let Err(what) = self.step() {
                let v = self.violation(what);
                return (Err(v), self.trace);
            }
            self.now_ms += STEP_MS;
        }
        let result = match self.final_checks() {
            Ok(()) => Ok(self.stats.clone()),
            Err(what) => Err(self.violation(what)),
        };
        (result, self.trace)
    }

    fn healing(&self) -> bool {
        self.now_ms >= self.opts.fault_ms
    }

    fn step(&mut self) -> Result<(), String> {
        self.stats.steps += 1;
        if self.healing() {
            self.heal();
        } else if self.rng.chance(self.opts.fault_chance) {
            self.inject_fault();
        }
        self.restarts();
        self.cut.retain(|_, until| *until > self.now_ms);
        self.quorum_leadership();
        self.deliver()?;
        self.controller_work()?;
        let ids: Vec<BrokerId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.node_work(id)?;
        }
        if !self.healing() || self.now_ms < self.opts.fault_ms + self.opts.heal_ms / 2 {
            self.produce();
        }
        if let Some(what) = self.deferred.take() {
            return Err(what);
        }
        self.check()
    }

    // ---- faults ---------------------------------------------------------------------------

    fn inject_fault(&mut self) {
        let ids: Vec<BrokerId> = self.nodes.keys().copied().collect();
        let Some(&victim) = self.rng.pick(&ids) else {
            return;
        };
        match self.rng.range(0, 10) {
            0..=3 => {
                if self.nodes.values().filter(|n| n.up).count() <= 1 {
                    return;
                }
                let down_ms = self.rng.range(100, 4_000);
                self.crash(victim, down_ms);
            }
            4..=5 => {
                let until = self.now_ms + self.rng.range(200, 5_000);
                for &other in ids.iter().chain([&CLIENT]) {
                    if other != victim {
                        self.cut.insert(link(victim, other), until);
                    }
                }
                self.stats.isolations += 1;
                self.note(20, victim as i64, until as i64, || {
                    format!("isolate {victim} until {until}")
                });
            }
            6..=7 => {
                let others: Vec<BrokerId> = ids.iter().copied().filter(|&o| o != victim).collect();
                let Some(&other) = self.rng.pick(&others) else {
                    return;
                };
                let until = self.now_ms + self.rng.range(200, 5_000);
                self.cut.insert(link(victim, other), until);
                self.stats.cut_links += 1;
                self.note(21, victim as i64, other as i64, || {
                    format!("cut link {victim}-{other} until {until}")
                });
            }
            _ => {
                // The quorum elects another leader (a Raft election timeout somewhere).
                self.quorum.leader = None;
                self.stats.failovers += 1;
                self.note(22, 0, 0, || "controller failover".to_string());
            }
        }
    }

    /// Power loss on one node: its unsynced tail goes, and every piece of process memory.
    fn crash(&mut self, id: BrokerId, down_ms: u64) {
        let now = self.now_ms;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.up {
            return;
        }
        node.up = false;
        node.restart_at_ms = Some(now + down_ms);
        for r in node.replicas.values_mut() {
            r.log.crash();
            r.leader = None;
            r.follow = None;
            r.verified = r.verified.min(r.log.end());
        }
        node.applied = node.persisted;
        node.broker_epoch = -1;
        node.alter_in_flight = None;
        self.stats.crashes += 1;
        if self.quorum.leader == Some(id) {
            self.quorum.leader = None;
        }
        self.note(23, id as i64, down_ms as i64, || {
            format!("crash {id} for {down_ms} ms")
        });
    }

    fn restarts(&mut self) {
        let now = self.now_ms;
        let due: Vec<BrokerId> = self
            .nodes
            .values()
            .filter(|n| !n.up && n.restart_at_ms.is_some_and(|t| t <= now))
            .map(|n| n.id)
            .collect();
        for id in due {
            let incarnation = self.rng.next_u64();
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            node.up = true;
            node.restart_at_ms = None;
            node.incarnation = incarnation;
            node.image = self.quorum.reference[node.applied as usize].clone();
            node.next_heartbeat_ms = now;
            node.next_metadata_fetch_ms = now;
            self.note(24, id as i64, 0, || format!("restart {id}"));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        let now = self.now_ms;
        for n in self.nodes.values_mut() {
            if !n.up {
                n.restart_at_ms = Some(now);
            }
        }
    }

    /// The quorum keeps a leader that is up and reaches a majority; otherwise one such node
    /// is elected, if any. A new leader holds every committed entry (Raft's leader
    /// completeness), so its node applies them all before its controller decides anything.
    fn quorum_leadership(&mut self) {
        if let Some(l) = self.quorum.leader
            && self.reaches_majority(l)
        {
            return;
        }
        let candidates: Vec<BrokerId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&id| self.reaches_majority(id))
            .collect();
        let Some(&leader) = self.rng.pick(&candidates) else {
            self.quorum.leader = None;
            return;
        };
        let config = self.quorum.controller.config.clone();
        let tid = self.topic_id;
        self.quorum.controller = Controller::new(config).with_id_source(move || tid);
        self.quorum.leader = Some(leader);
        self.quorum.next_tick_ms = self.now_ms;
        let count = self.quorum.log.len() as u64;
        if let Some(node) = self.nodes.get_mut(&leader) {
            node.applied = count;
            node.persisted = count;
            node.image = self.quorum.reference[count as usize].clone();
        }
        self.note(25, leader as i64, 0, || {
            format!("quorum leader is now {leader}")
        });
        // Its image moved: the broker on that node follows it, as on any applied record.
        if let Err(what) = self.reconcile(leader) {
            self.deferred = Some(what);
        }
    }

    fn reachable(&self, a: BrokerId, b: BrokerId) -> bool {
        let up = |id: BrokerId| id == CLIENT || self.nodes.get(&id).is_some_and(|n| n.up);
        up(a) && up(b) && (a == b || !self.cut.contains_key(&link(a, b)))
    }

    fn reaches_majority(&self, id: BrokerId) -> bool {
        let reached = self
            .nodes
            .keys()
            .filter(|&&other| self.reachable(id, other))
            .count();
        reached * 2 > self.nodes.len()
    }

    // ---- the network ----------------------------------------------------------------------

    fn incarnation(&self, id: BrokerId) -> u64 {
        self.nodes.get(&id).map_or(0, |n| n.incarnation)
    }

    fn send(&mut self, from: BrokerId, to: BrokerId, payload: Payload) {
        if !self.reachable(from, to) || self.network.len() >= IN_FLIGHT_MAX {
            return;
        }
        let lossy = !self.healing();
        if lossy && self.rng.chance(self.opts.drop_chance) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if lossy && self.rng.chance(self.opts.duplicate_chance) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Random delays reorder messages.
            let at = self.now_ms + self.rng.range(1, self.opts.delay_ms_max.max(2));
            let message = Message {
                from,
                to,
                from_incarnation: self.incarnation(from),
                to_incarnation: self.incarnation(to),
                payload: payload.clone(),
            };
            self.network.insert((at, self.next_seq), message);
            self.next_seq += 1;
        }
    }

    fn deliver(&mut self) -> Result<(), String> {
        loop {
            let Some((&key, _)) = self.network.first_key_value() else {
                return Ok(());
            };
            if key.0 > self.now_ms {
                return Ok(());
            }
            let Some(m) = self.network.remove(&key) else {
                return Ok(());
            };
            if !self.reachable(m.from, m.to)
                || self.incarnation(m.from) != m.from_incarnation
                || self.incarnation(m.to) != m.to_incarnation
            {
                continue;
            }
            let (from, to, kind) = (m.from, m.to, m.payload.kind());
            self.note(kind, from as i64, to as i64, || {
                format!("{from} -> {to}: {:?}", m.payload)
            });
            if to == CLIENT {
                self.client_receive(m.payload)?;
            } else if Some(to) == self.quorum.leader && is_for_controller(&m.payload) {
                self.controller_receive(from, m.payload)?;
            } else {
                self.node_receive(to, from, m.payload)?;
            }
        }
    }

    // ---- the controller -------------------------------------------------------------------

    /// Commits one decision's records as one entry, if the leader reaches a majority.
    /// Returns the entry's index (the count of entries with it).
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<Option<u64>, String> {
        let Some(leader) = self.quorum.leader else {
            return Ok(None);
        };
        if records.is_empty() || !self.reaches_majority(leader) {
            return Ok(None);
        }
        let index = self.quorum.log.len() as u64 + 1;
        let mut image = self.quorum.reference[self.quorum.log.len()].clone();
        for r in &records {
            image
                .apply(index, r)
                .map_err(|e| format!("a controller record does not apply: {r:?}: {e}"))?;
        }
        image
            .check_consistent()
            .map_err(|e| format!("the image is inconsistent after entry {index}: {e}"))?;
        image.note_applied(index);
        self.note(26, index as i64, records.len() as i64, || {
            format!("commit {index}: {records:?}")
        });
        self.quorum.log.push(records);
        self.quorum.reference.push(image.clone());
        self.stats.metadata_entries += 1;
        if let Some(node) = self.nodes.get_mut(&leader) {
            node.image = image;
            node.applied = index;
            node.persisted = index;
        }
        self.reconcile(leader)?;
        Ok(Some(index))
    }

    fn controller_image(&self) -> MetadataImage {
        self.quorum.reference[self.quorum.log.len()].clone()
    }

    fn controller_work(&mut self) -> Result<(), String> {
        if self.quorum.leader.is_none() || self.now_ms < self.quorum.next_tick_ms {
            return Ok(());
        }
        self.quorum.next_tick_ms = self.now_ms + CONTROLLER_TICK_MS;
        let image = self.controller_image();
        let now = self.now_ms;
        if !self.quorum.topic_created && image.live_brokers().count() == self.opts.brokers as usize
        {
            let assignments = (0..self.opts.partitions)
                .map(|p| {
                    let replicas = (0..self.opts.brokers)
                        .map(|i| (p + i) % self.opts.brokers + 1)
                        .collect();
                    (p, replicas)
                })
                .collect();
            let request = ControllerRequest::CreateTopics {
                topics: vec![NewTopic {
                    name: TOPIC.into(),
                    partitions: -1,
                    replication_factor: -1,
                    assignments: Some(assignments),
                    configs: BTreeMap::new(),
                }],
                validate_only: false,
            };
            match self.quorum.controller.handle(&image, now, &request) {
                Ok(decision) => {
                    self.note(29, 0, 0, || {
                        format!("create topic: {:?}", decision.response)
                    });
                    if self.commit(decision.records)?.is_some() {
                        self.quorum.topic_created = true;
                    }
                }
                Err(e) => self.note(29, 1, 0, || format!("create topic refused: {e}")),
            }
            return Ok(());
        }
        let image = self.controller_image();
        let records = self.quorum.controller.tick(&image, now);
        self.commit(records)?;
        Ok(())
    }

    fn controller_receive(&mut self, from: BrokerId, payload: Payload) -> Result<(), String> {
        let now = self.now_ms;
        let Some(leader) = self.quorum.leader else {
            return Ok(());
        };
        let request = match &payload {
            Payload::Register { incarnation } => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&incarnation.to_be_bytes());
                ControllerRequest::RegisterBroker {
                    broker_id: from,
                    incarnation_id: id,
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: "sim".into(),
                        port: 9000 + from as u16,
                    }],
                    rack: None,
                }
            }
            Payload::Heartbeat {
                broker_epoch,
                applied_index,
            } => ControllerRequest::BrokerHeartbeat {
                broker_id: from,
                broker_epoch: *broker_epoch,
                applied_index: *applied_index,
                want_shutdown: false,
            },
            Payload::AlterPartition {
                broker_epoch,
                items,
                ..
            } => ControllerRequest::AlterPartition {
                broker_id: from,
                broker_epoch: *broker_epoch,
                topics: items.clone(),
            },
            Payload::MetadataFetch { from: at } => {
                let start = (*at as usize).min(self.quorum.log.len());
                let end = (start + METADATA_ENTRIES_MAX).min(self.quorum.log.len());
                let entries = self.quorum.log[start..end].to_vec();
                if !entries.is_empty() {
                    self.send(
                        leader,
                        from,
                        Payload::MetadataEntries {
                            from: start as u64,
                            entries,
                        },
                    );
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let image = self.controller_image();
        let decision = match self.quorum.controller.handle(&image, now, &request) {
            Ok(d) => d,
            Err(e) => {
                if let Payload::Heartbeat { broker_epoch, .. } = payload
                    && e.error_code() == weir_metadata::controller::codes::STALE_BROKER_EPOCH
                {
                    self.send(leader, from, Payload::StaleEpoch { broker_epoch });
                }
                return Ok(());
            }
        };
        let index = if decision.records.is_empty() {
            Some(self.quorum.log.len() as u64)
        } else {
            self.commit(decision.records)?
        };
        // Not committed (no majority): no answer, as a request the quorum never decided.
        let Some(index) = index else {
            return Ok(());
        };
        match (payload, decision.response) {
            (Payload::Register { incarnation }, ControllerResponse::RegisterBroker { .. }) => {
                self.send(
                    leader,
                    from,
                    Payload::Registered {
                        incarnation,
                        broker_epoch: index as i64,
                    },
                );
            }
            (Payload::AlterPartition { req, .. }, ControllerResponse::AlterPartition(results)) => {
                self.send(leader, from, Payload::AlterPartitionAnswer { req, results });
            }
            _ => {}
        }
        Ok(())
    }

    // ---- brokers --------------------------------------------------------------------------

    fn node_work(&mut self, id: BrokerId) -> Result<(), String> {
        let now = self.now_ms;
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        if !node.up {
            return Ok(());
        }
        let controller = self.quorum.leader;
        // Metadata: pull committed entries from the quorum leader.
        if now >= node.next_metadata_fetch_ms
            && let Some(c) = controller
            && c != id
        {
            let from = node.applied;
            if let Some(n) = self.nodes.get_mut(&id) {
                n.next_metadata_fetch_ms = now + METADATA_FETCH_MS;
            }
            self.send(id, c, Payload::MetadataFetch { from });
        }
        // Registration and heartbeats.
        let node = &self.nodes[&id];
        if now >= node.next_heartbeat_ms
            && let Some(c) = controller
        {
            let payload = if node.broker_epoch < 0 {
                Payload::Register {
                    incarnation: node.incarnation,
                }
            } else {
                Payload::Heartbeat {
                    broker_epoch: node.broker_epoch,
                    applied_index: node.applied,
                }
            };
            if let Some(n) = self.nodes.get_mut(&id) {
                n.next_heartbeat_ms = now + HEARTBEAT_MS;
            }
            if c == id {
                self.controller_receive(id, payload)?;
            } else {
                self.send(id, c, payload);
            }
        }
        // Syncs: the flusher runs now and then; a leader's durable end feeds its watermark.
        if self.rng.chance(0.4) {
            self.sync(id)?;
        }
        self.followers(id);
        self.isr_check(id)?;
        Ok(())
    }

    fn sync(&mut self, id: BrokerId) -> Result<(), String> {
        let planted = self.opts.planted;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        node.persisted = node.applied;
        let mut raised = Vec::new();
        for (&p, r) in node.replicas.iter_mut() {
            r.log.sync();
            if let Some(f) = r.follow.as_mut() {
                f.awaiting_sync = false;
            }
            if let Some(l) = r.leader.as_mut() {
                let hw = if planted == Some(Planted::HwWithoutIsr) {
                    Some(r.log.durable_end).filter(|&e| e > r.log.high_watermark)
                } else {
                    l.state.leader_durable(r.log.durable_end)
                };
                if let Some(hw) = hw {
                    raised.push((p, hw));
                }
            }
        }
        for (p, hw) in raised {
            self.raise_leader_hw(id, p, hw)?;
        }
        Ok(())
    }

    /// A leader's watermark rose: the records below it are committed. They must agree with
    /// what earlier leaders committed, and produce requests waiting for them are answered.
    fn raise_leader_hw(&mut self, id: BrokerId, p: i32, hw: i64) -> Result<(), String> {
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replicas.get_mut(&p)) else {
            return Ok(());
        };
        if hw <= r.log.high_watermark {
            return Ok(());
        }
        if hw > r.log.end() {
            return Err(format!(
                "leader {id} of partition {p} raised its watermark to {hw} past its log end {}",
                r.log.end()
            ));
        }
        // Below the old watermark the records were checked when it rose there, and a leader
        // never cuts its log.
        let old_hw = r.log.high_watermark.max(0);
        if self.opts.trace {
            let ends = r
                .leader
                .as_ref()
                .map(|l| (l.state.isr().to_vec(), l.state.follower_log_ends()));
            self.trace.push(format!(
                "{:>7} ms  leader {id} raises partition {p}'s watermark {old_hw} -> {hw} \
                 (isr, follower ends: {ends:?})",
                self.now_ms
            ));
        }
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replicas.get_mut(&p)) else {
            return Ok(());
        };
        r.log.high_watermark = hw;
        let committed = self.committed.entry(p).or_default();
        for offset in old_hw..hw {
            let rec = r.log.records[offset as usize];
            match committed.get(offset as usize) {
                Some(c) if *c != rec => {
                    return Err(format!(
                        "partition {p}: leader {id} commits {rec:?} at offset {offset}, \
                         where {c:?} was committed before (an acknowledged write would be lost)"
                    ));
                }
                Some(_) => {}
                None => committed.push(rec),
            }
        }
        let mut acks = Vec::new();
        if let Some(l) = r.leader.as_mut() {
            l.waiting.retain(|&(offset, value)| {
                if offset < hw {
                    acks.push((offset, value));
                    false
                } else {
                    true
                }
            });
        }
        for (offset, value) in acks {
            self.send(
                id,
                CLIENT,
                Payload::ProduceAck {
                    partition: p,
                    offset,
                    value,
                },
            );
        }
        Ok(())
    }

    fn followers(&mut self, id: BrokerId) {
        let now = self.now_ms;
        let mut sends = Vec::new();
        {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let broker_epoch = node.broker_epoch;
            for (&p, r) in node.replicas.iter_mut() {
                let Some(f) = r.follow.as_mut() else {
                    continue;
                };
                if let Some((_, sent)) = f.in_flight {
                    if now.saturating_sub(sent) < REQUEST_TIMEOUT_MS {
                        continue;
                    }
                    // The connection is given up on: back off and ask again.
                    f.in_flight = None;
                    f.backoff_until_ms = now + BACKOFF_MS;
                }
                if now < f.backoff_until_ms {
                    continue;
                }
                let req = node.next_req;
                if !f.truncated {
                    let Some(epoch) = follower::epoch_to_ask(&r.log.view()) else {
                        f.truncated = true;
                        continue;
                    };
                    node.next_req += 1;
                    f.in_flight = Some((req, now));
                    sends.push((
                        f.leader,
                        Payload::EpochQuery {
                            req,
                            partition: p,
                            current_leader_epoch: f.leader_epoch,
                            epoch,
                        },
                    ));
                    continue;
                }
                if f.awaiting_sync {
                    continue;
                }
                node.next_req += 1;
                f.in_flight = Some((req, now));
                sends.push((
                    f.leader,
                    Payload::Fetch {
                        req,
                        partition: p,
                        fetch_offset: r.log.end(),
                        last_fetched_epoch: follower::last_fetched_epoch(&r.log.view()),
                        current_leader_epoch: f.leader_epoch,
                        broker_epoch,
                    },
                ));
            }
        }
        for (to, payload) in sends {
            self.send(id, to, payload);
        }
    }

    fn isr_check(&mut self, id: BrokerId) -> Result<(), String> {
        let now = self.now_ms;
        let Some(c) = self.quorum.leader else {
            return Ok(());
        };
        let topic_id = self.topic_id;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if now < node.next_isr_check_ms {
            return Ok(());
        }
        node.next_isr_check_ms = now + ISR_CHECK_MS;
        if let Some((_, sent)) = node.alter_in_flight {
            if now.saturating_sub(sent) < REQUEST_TIMEOUT_MS * 5 {
                return Ok(());
            }
            // Timed out (the real shell waits 5 s): the proposals stay pending, and
            // `LeaderState::tick` sends them again.
            node.alter_in_flight = None;
        }
        let mut items = Vec::new();
        for (&p, r) in node.replicas.iter_mut() {
            if let Some(l) = r.leader.as_mut()
                && let Some(proposal) = l.state.tick(now)
            {
                items.push(AlterPartitionItem {
                    topic_id,
                    partition: p,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: proposal.new_isr,
                });
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let req = node.next_req;
        node.next_req += 1;
        node.alter_in_flight = Some((req, now));
        let payload = Payload::AlterPartition {
            req,
            broker_epoch: node.broker_epoch,
            items,
        };
        if c == id {
            self.controller_receive(id, payload)
        } else {
            self.send(id, c, payload);
            Ok(())
        }
    }

    fn node_receive(
        &mut self,
        id: BrokerId,
        from: BrokerId,
        payload: Payload,
    ) -> Result<(), String> {
        match payload {
            Payload::Registered {
                incarnation,
                broker_epoch,
            } => {
                if let Some(n) = self.nodes.get_mut(&id)
                    && n.incarnation == incarnation
                    && n.broker_epoch < 0
                {
                    n.broker_epoch = broker_epoch;
                    n.next_heartbeat_ms = self.now_ms;
                }
                self.reconcile(id)
            }
            Payload::StaleEpoch { broker_epoch } => {
                if let Some(n) = self.nodes.get_mut(&id)
                    && n.broker_epoch == broker_epoch
                {
                    n.broker_epoch = -1;
                }
                Ok(())
            }
            Payload::AlterPartitionAnswer { req, results } => {
                let Some(n) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                if n.alter_in_flight.map(|(r, _)| r) != Some(req) {
                    return Ok(());
                }
                n.alter_in_flight = None;
                let mut raised = Vec::new();
                for result in results
                    .iter()
                    .filter(|r| weir_broker::replica::refusal_means_not_applied(r.error_code))
                {
                    if let Some(r) = n.replicas.get_mut(&result.partition)
                        && let Some(l) = r.leader.as_mut()
                        && let Some(hw) = l.state.proposal_failed()
                    {
                        raised.push((result.partition, hw));
                    }
                }
                for (p, hw) in raised {
                    self.raise_leader_hw(id, p, hw)?;
                }
                Ok(())
            }
            Payload::MetadataEntries { from: at, entries } => {
                let Some(n) = self.nodes.get_mut(&id) else {
                    return Ok(());
                };
                if at != n.applied || entries.is_empty() {
                    return Ok(());
                }
                for (i, records) in entries.iter().enumerate() {
                    let index = at + i as u64 + 1;
                    for r in records {
                        // A record that does not apply leaves the image unchanged on every
                        // node alike (the shell logs and skips it).
                        let _ = n.image.apply(index, r);
                    }
                    n.image.note_applied(index);
                }
                n.applied = at + entries.len() as u64;
                let expected = &self.quorum.reference[n.applied as usize];
                if n.image != *expected {
                    return Err(format!(
                        "node {id}'s metadata image after {} entries differs from the \
                         committed log's",
                        n.applied
                    ));
                }
                self.reconcile(id)
            }
            Payload::Fetch {
                req,
                partition,
                fetch_offset,
                last_fetched_epoch,
                current_leader_epoch,
                broker_epoch,
            } => self.leader_fetch(
                id,
                from,
                req,
                partition,
                fetch_offset,
                last_fetched_epoch,
                current_leader_epoch,
                broker_epoch,
            ),
            Payload::FetchAnswer {
                req,
                partition,
                error,
                diverging,
                high_watermark,
                log_start,
                base_offset,
                records,
            } => {
                self.follower_fetched(
                    id,
                    req,
                    partition,
                    error,
                    diverging,
                    high_watermark,
                    log_start,
                    base_offset,
                    records,
                );
                Ok(())
            }
            Payload::EpochQuery {
                req,
                partition,
                current_leader_epoch,
                epoch,
            } => {
                let answer = {
                    let r = self.led(id, partition);
                    match r {
                        None => (ErrorCode::NotLeaderOrFollower, -1, -1),
                        Some((leader_epoch, log)) => {
                            if current_leader_epoch >= 0 && current_leader_epoch < leader_epoch {
                                (ErrorCode::FencedLeaderEpoch, -1, -1)
                            } else if current_leader_epoch > leader_epoch {
                                (ErrorCode::UnknownLeaderEpoch, -1, -1)
                            } else if epoch >= 0
                                && let Some((e, end)) = log.end_offset_for_epoch(epoch)
                            {
                                (ErrorCode::None, e, end)
                            } else {
                                (ErrorCode::None, -1, -1)
                            }
                        }
                    }
                };
                self.send(
                    id,
                    from,
                    Payload::EpochAnswer {
                        req,
                        partition,
                        error: answer.0,
                        leader_epoch: answer.1,
                        end_offset: answer.2,
                    },
                );
                Ok(())
            }
            Payload::EpochAnswer {
                req,
                partition,
                error,
                leader_epoch,
                end_offset,
            } => {
                self.follower_truncate(id, req, partition, error, leader_epoch, end_offset);
                Ok(())
            }
            Payload::Produce { partition, value } => self.leader_produce(id, partition, value),
            _ => Ok(()),
        }
    }

    /// The partition's leader epoch and log, if `id` leads it (and has joined).
    fn led(&self, id: BrokerId, p: i32) -> Option<(i32, &SimLog)> {
        let n = self.nodes.get(&id)?;
        let r = n.replicas.get(&p)?;
        let l = r.leader.as_ref()?;
        Some((l.state.leader_epoch, &r.log))
    }

    #[allow(clippy::too_many_arguments)]
    fn leader_fetch(
        &mut self,
        id: BrokerId,
        from: BrokerId,
        req: u64,
        p: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        current_leader_epoch: i32,
        broker_epoch: i64,
    ) -> Result<(), String> {
        let now = self.now_ms;
        let mut answer = Payload::FetchAnswer {
            req,
            partition: p,
            error: ErrorCode::None,
            diverging: (-1, -1),
            high_watermark: -1,
            log_start: -1,
            base_offset: fetch_offset,
            records: Vec::new(),
        };
        let mut raised = None;
        if let Payload::FetchAnswer {
            error,
            diverging,
            high_watermark,
            log_start,
            records,
            ..
        } = &mut answer
        {
            let Some(node) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let registered = node.image.broker(from).map(|b| b.broker_epoch);
            match node.replicas.get_mut(&p) {
                Some(r) if r.leader.is_some() => {
                    let Some(l) = r.leader.as_mut() else {
                        return Ok(());
                    };
                    let epoch = l.state.leader_epoch;
                    if current_leader_epoch >= 0 && current_leader_epoch < epoch {
                        *error = ErrorCode::FencedLeaderEpoch;
                    } else if current_leader_epoch > epoch {
                        *error = ErrorCode::UnknownLeaderEpoch;
                    } else {
                        let end_for = if last_fetched_epoch >= 0 {
                            r.log.end_offset_for_epoch(last_fetched_epoch)
                        } else {
                            None
                        };
                        match follower::check_divergence(last_fetched_epoch, fetch_offset, end_for)
                        {
                            DivergenceCheck::OutOfRange => *error = ErrorCode::OffsetOutOfRange,
                            DivergenceCheck::Diverging { epoch, end_offset } => {
                                *diverging = (epoch, end_offset);
                                *high_watermark = r.log.high_watermark;
                                *log_start = 0;
                            }
                            DivergenceCheck::Serve => {
                                let leader_end = r.log.end();
                                if registered.is_none() || registered != Some(broker_epoch) {
                                    *error = ErrorCode::NotLeaderOrFollower;
                                } else if fetch_offset > leader_end || fetch_offset < 0 {
                                    *error = ErrorCode::OffsetOutOfRange;
                                } else {
                                    match l.state.follower_fetched(
                                        from,
                                        fetch_offset,
                                        leader_end,
                                        now,
                                    ) {
                                        Err(_) => *error = ErrorCode::NotLeaderOrFollower,
                                        Ok(hw) => {
                                            if self.opts.planted != Some(Planted::HwWithoutIsr) {
                                                raised = hw;
                                            }
                                            let to = (fetch_offset as usize + FETCH_RECORDS_MAX)
                                                .min(r.log.records.len());
                                            *records =
                                                r.log.records[fetch_offset as usize..to].to_vec();
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ => *error = ErrorCode::NotLeaderOrFollower,
            }
        }
        if let Some(hw) = raised {
            self.raise_leader_hw(id, p, hw)?;
        }
        if let Payload::FetchAnswer {
            error,
            diverging,
            high_watermark,
            log_start,
            ..
        } = &mut answer
            && *error == ErrorCode::None
            && diverging.0 < 0
            && let Some(r) = self.nodes.get(&id).and_then(|n| n.replicas.get(&p))
        {
            *high_watermark = r.log.high_watermark;
            *log_start = 0;
        }
        self.send(id, from, answer);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn follower_fetched(
        &mut self,
        id: BrokerId,
        req: u64,
        p: i32,
        error: ErrorCode,
        diverging: (i32, i64),
        leader_hw: i64,
        leader_log_start: i64,
        base_offset: i64,
        records: Vec<Rec>,
    ) {
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replicas.get_mut(&p)) else {
            return;
        };
        if r.leader.is_some() {
            return; // took over meanwhile
        }
        let Some(f) = r.follow.as_mut() else {
            return;
        };
        if f.in_flight.map(|(q, _)| q) != Some(req) {
            return; // an old or duplicated answer
        }
        f.in_flight = None;
        match follower::classify_fetch_answer(error, diverging, leader_log_start, &r.log.view()) {
            FetchAnswer::Append => {}
            FetchAnswer::OutOfRange { restart_at } => {
                if let Some(at) = restart_at {
                    // Unreachable with log start 0; modelled for completeness.
                    r.log.truncate_to(0);
                    r.log.records.clear();
                    r.verified = 0;
                    let _ = at;
                }
                f.truncated = false;
                return;
            }
            FetchAnswer::BackOff => {
                f.backoff_until_ms = self.now_ms + BACKOFF_MS;
                return;
            }
            FetchAnswer::Diverged => {
                f.truncated = false;
                return;
            }
        }
        if !records.is_empty() {
            if base_offset != r.log.end() {
                // The real log refuses a non-contiguous append: check truncation again.
                f.truncated = false;
                return;
            }
            r.log.append_as_follower(&records);
            f.awaiting_sync = true;
        }
        if let Some(hw) = follower::follower_high_watermark(leader_hw, &r.log.view()) {
            r.log.high_watermark = hw;
        }
    }

    fn follower_truncate(
        &mut self,
        id: BrokerId,
        req: u64,
        p: i32,
        error: ErrorCode,
        leader_epoch: i32,
        end_offset: i64,
    ) {
        let planted = self.opts.planted;
        let now = self.now_ms;
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replicas.get_mut(&p)) else {
            return;
        };
        let Some(f) = r.follow.as_mut() else {
            return;
        };
        if f.in_flight.map(|(q, _)| q) != Some(req) {
            return;
        }
        f.in_flight = None;
        if error != ErrorCode::None {
            f.backoff_until_ms = now + BACKOFF_MS;
            return;
        }
        let view = r.log.view();
        let Some(our_epoch) = follower::epoch_to_ask(&view) else {
            f.truncated = true;
            return;
        };
        let cut = if planted == Some(Planted::TruncateToHighWatermark) {
            view.high_watermark.min(view.log_end_offset)
        } else {
            follower::truncation_point(&view, our_epoch, leader_epoch, end_offset, |e| {
                r.log.end_offset_for_epoch(e)
            })
        };
        let before = r.log.end();
        r.log.truncate_to(cut);
        r.verified = r.verified.min(r.log.end());
        f.truncated = true;
        if cut < before {
            self.stats.truncations += 1;
            self.note(27, id as i64, cut, || {
                format!("{id} truncates partition {p} from {before} to {cut}")
            });
        }
    }

    fn leader_produce(&mut self, id: BrokerId, p: i32, value: u64) -> Result<(), String> {
        let planted = self.opts.planted;
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replicas.get_mut(&p)) else {
            return Ok(());
        };
        let Some(l) = r.leader.as_mut() else {
            return Ok(());
        };
        let offset = r.log.append_as_leader(l.state.leader_epoch, value);
        l.waiting.push((offset, value));
        let _ = planted;
        Ok(())
    }

    /// Makes a node's roles follow its image, as `Broker::apply_partition_state` and
    /// `ReplicaFetchers::sync` do.
    fn reconcile(&mut self, id: BrokerId) -> Result<(), String> {
        let now = self.now_ms;
        let topic_id = self.topic_id;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if !node.up || !node.joined() {
            return Ok(());
        }
        let Some(topic) = node.image.topic(&topic_id) else {
            return Ok(());
        };
        let states: Vec<(i32, weir_metadata::image::PartitionState)> = topic
            .partitions
            .iter()
            .filter(|(_, s)| s.replicas.contains(&id))
            .map(|(&p, s)| (p, s.clone()))
            .collect();
        let mut new_leaders = Vec::new();
        let mut raised = Vec::new();
        for (p, state) in states {
            let r = node.replicas.entry(p).or_default();
            if state.leader != id {
                r.leader = None;
                if state.leader == NO_LEADER {
                    r.follow = None;
                    continue;
                }
                let same = r.follow.as_ref().is_some_and(|f| {
                    f.leader == state.leader && f.leader_epoch == state.leader_epoch
                });
                if !same {
                    r.follow = Some(FollowRole {
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        truncated: false,
                        backoff_until_ms: 0,
                        in_flight: None,
                        awaiting_sync: false,
                    });
                }
                continue;
            }
            r.follow = None;
            if let Some(l) = r.leader.as_mut()
                && l.state.leader_epoch == state.leader_epoch
            {
                if let Some(hw) =
                    l.state
                        .image_changed(state.partition_epoch, state.replicas, state.isr, now)
                {
                    raised.push((p, hw));
                }
                continue;
            }
            if r.log.last_epoch().is_none_or(|e| state.leader_epoch > e) {
                let end = r.log.end();
                r.log.assign_leader_epoch(state.leader_epoch, end);
            }
            let mut leader = LeaderState::new(
                id,
                state.leader_epoch,
                state.partition_epoch,
                state.replicas,
                state.isr,
                r.log.high_watermark,
                r.log.end(),
                2_000,
                now,
            );
            let hw = leader.leader_durable(r.log.durable_end);
            r.leader = Some(LeaderRole {
                state: leader,
                waiting: Vec::new(),
                high_watermark_seen: r.log.high_watermark,
            });
            if let Some(hw) = hw {
                raised.push((p, hw));
            }
            new_leaders.push((p, state.leader_epoch));
        }
        for (p, epoch) in new_leaders {
            self.stats.leader_elections += 1;
            self.note(28, id as i64, epoch as i64, || {
                format!("{id} leads partition {p} in epoch {epoch}")
            });
            match self.leaders_seen.insert((p, epoch), id) {
                Some(other) if other != id => {
                    return Err(format!(
                        "partition {p} has two leaders in epoch {epoch}: {other} and {id}"
                    ));
                }
                _ => {}
            }
            // A broker acting on stale metadata may start leading an epoch the controller has
            // already replaced. It cannot acknowledge anything (its ISR's other members follow
            // the newer epoch, and a single-member ISR would have left no one to elect), and
            // whatever it would commit is checked against the committed prefix in
            // `raise_leader_hw`; so it owes only what was committed before newer epochs.
            let newest = self
                .leaders_seen
                .range((p, i32::MIN)..=(p, i32::MAX))
                .map(|(&(_, e), _)| e)
                .max()
                .unwrap_or(epoch);
            if epoch >= newest {
                self.check_leader_holds_committed(id, p)?;
            }
        }
        for (p, hw) in raised {
            self.raise_leader_hw(id, p, hw)?;
        }
        Ok(())
    }

    // ---- the producer ---------------------------------------------------------------------

    fn produce(&mut self) {
        if !self.rng.chance(0.3) {
            return;
        }
        let p = self.rng.range(0, self.opts.partitions as u64) as i32;
        // The client's metadata: some live node's image, maybe stale.
        let up: Vec<BrokerId> = self.nodes.values().filter(|n| n.up).map(|n| n.id).collect();
        let Some(&asked) = self.rng.pick(&up) else {
            return;
        };
        let leader = self.nodes[&asked]
            .image
            .partition(&self.topic_id, p)
            .map_or(NO_LEADER, |s| s.leader);
        if leader == NO_LEADER {
            return;
        }
        let value = self.next_value;
        self.next_value += 1;
        self.stats.produced += 1;
        self.send(
            CLIENT,
            leader,
            Payload::Produce {
                partition: p,
                value,
            },
        );
    }

    fn client_receive(&mut self, payload: Payload) -> Result<(), String> {
        if let Payload::ProduceAck {
            partition,
            offset,
            value,
        } = payload
        {
            let acked = self.acked.entry(partition).or_default();
            match acked.insert(offset, value) {
                Some(old) if old != value => {
                    return Err(format!(
                        "partition {partition}: offset {offset} acknowledged for two values, \
                         {old} and {value}"
                    ));
                }
                Some(_) => {}
                None => self.stats.acked += 1,
            }
            let committed = self.committed.get(&partition);
            if committed
                .and_then(|c| c.get(offset as usize))
                .map(|r| r.value)
                != Some(value)
            {
                return Err(format!(
                    "partition {partition}: value {value} acknowledged at offset {offset} is not \
                     the committed record there"
                ));
            }
        }
        Ok(())
    }

    // ---- invariants -----------------------------------------------------------------------

    /// A new leader must hold every committed record: anything less loses acknowledged
    /// writes.
    fn check_leader_holds_committed(&self, id: BrokerId, p: i32) -> Result<(), String> {
        let committed = self.committed.get(&p).map_or(&[][..], |c| &c[..]);
        let Some(r) = self.nodes.get(&id).and_then(|n| n.replicas.get(&p)) else {
            return Ok(());
        };
        if (r.log.end() as usize) < committed.len() {
            return Err(format!(
                "partition {p}: new leader {id} holds {} records but {} are committed \
                 (acknowledged writes lost)",
                r.log.end(),
                committed.len()
            ));
        }
        if let Some(o) = (0..committed.len()).find(|&o| r.log.records[o] != committed[o]) {
            return Err(format!(
                "partition {p}: new leader {id} holds {:?} at committed offset {o}, not {:?}",
                r.log.records[o], committed[o]
            ));
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        for node in self.nodes.values_mut() {
            if !node.up {
                continue;
            }
            for (&p, r) in node.replicas.iter_mut() {
                let committed = self.committed.get(&p).map_or(&[][..], |c| &c[..]);
                let hw = r.log.high_watermark;
                if hw > committed.len() as i64 {
                    return Err(format!(
                        "partition {p}: broker {} has watermark {hw} past the committed {}",
                        node.id,
                        committed.len()
                    ));
                }
                // Committed prefixes are identical on all replicas.
                let upto = hw.min(r.log.end());
                for o in r.verified.max(0)..upto {
                    if r.log.records[o as usize] != committed[o as usize] {
                        return Err(format!(
                            "partition {p}: broker {} holds {:?} at offset {o} below its \
                             watermark, but {:?} is committed there",
                            node.id, r.log.records[o as usize], committed[o as usize]
                        ));
                    }
                }
                r.verified = r.verified.max(upto);
                if let Some(l) = r.leader.as_mut() {
                    if hw < l.high_watermark_seen {
                        return Err(format!(
                            "partition {p}: leader {}'s watermark went back from {} to {hw} in \
                             epoch {}",
                            node.id, l.high_watermark_seen, l.state.leader_epoch
                        ));
                    }
                    l.high_watermark_seen = hw;
                }
            }
        }
        Ok(())
    }

    /// After healing: every partition has a leader that is up and holds every acknowledged
    /// record.
    fn final_checks(&mut self) -> Result<(), String> {
        let image = self.controller_image();
        for p in 0..self.opts.partitions {
            let Some(state) = image.partition(&self.topic_id, p) else {
                return Err(format!("partition {p} was never created"));
            };
            if state.leader == NO_LEADER {
                return Err(format!(
                    "partition {p} has no leader after healing: {state:?}"
                ));
            }
            let Some((_, log)) = self.led(state.leader, p) else {
                return Err(format!(
                    "partition {p}: broker {} does not act as the leader the image names after \
                     healing",
                    state.leader
                ));
            };
            for (&offset, &value) in self.acked.get(&p).into_iter().flatten() {
                if log.records.get(offset as usize).map(|r| r.value) != Some(value) {
                    return Err(format!(
                        "partition {p}: acknowledged value {value} at offset {offset} is not in \
                         leader {}'s log",
                        state.leader
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_for_controller(p: &Payload) -> bool {
    matches!(
        p,
        Payload::Register { .. }
            | Payload::Heartbeat { .. }
            | Payload::AlterPartition { .. }
            | Payload::MetadataFetch { .. }
    )
}
