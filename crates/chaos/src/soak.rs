//! A soak: start a cluster, run the load, inject faults from a seeded schedule, heal, read
//! everything back and check the history.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Error;
use crate::checker::{self, Report};
use crate::cluster::{Cluster, ClusterConfig};
use crate::history::{Event, History, Isolation};
use crate::load::{self, Load, LoadConfig};

pub const TOPIC: &str = "chaos";
pub const TXN_TOPIC: &str = "chaos-txn";

/// The faults the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9, then restart after the hold.
    Kill,
    /// SIGSTOP, then SIGCONT after the hold.
    Pause,
    /// The leader of partition 0 cut off from every other broker (clients still reach it).
    PartitionLeader,
    /// A minority of brokers cut off from the rest.
    PartitionMinority,
    /// Two halves that cannot reach each other, and one broker that reaches both.
    PartitionBridge,
    /// One broker cut off from the clients (the brokers still reach it).
    PartitionClients,
    /// The small-disk broker's disk filled to the last byte, then freed.
    DiskFull,
    /// The crashfs broker killed and everything it had not fsynced forgotten.
    PowerLoss,
    /// The crashfs broker's disk slow to fsync (every fsync waits 100-1,000 ms).
    SlowFsync,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PartitionLeader,
        FaultKind::PartitionMinority,
        FaultKind::PartitionBridge,
        FaultKind::PartitionClients,
        FaultKind::DiskFull,
        FaultKind::PowerLoss,
        FaultKind::SlowFsync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionMinority => "partition-minority",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionClients => "partition-clients",
            FaultKind::DiskFull => "disk-full",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::SlowFsync => "slow-fsync",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub brokers: usize,
    pub faults: usize,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub weir_bin: PathBuf,
    pub work_dir: PathBuf,
    pub history_path: Option<PathBuf>,
    /// How long a fault lasts, drawn uniformly from this range.
    pub hold_ms: (u64, u64),
    /// Quiet time after a fault is healed, before the next.
    pub settle_ms: u64,
    pub producers: usize,
    pub rate_per_producer: u32,
    pub consumers: usize,
    pub transactions: bool,
    pub partitions: i32,
    /// Extra environment for the brokers (test-only switches).
    pub broker_env: Vec<(String, String)>,
    /// Print a line per fault.
    pub verbose: bool,
}

impl SoakConfig {
    pub fn new(weir_bin: PathBuf, work_dir: PathBuf) -> SoakConfig {
        SoakConfig {
            brokers: 3,
            faults: 30,
            seed: 1,
            kinds: FaultKind::ALL.to_vec(),
            weir_bin,
            work_dir,
            history_path: None,
            hold_ms: (500, 3_000),
            settle_ms: 500,
            producers: 2,
            rate_per_producer: 200,
            consumers: 2,
            transactions: true,
            partitions: 3,
            broker_env: Vec::new(),
            verbose: false,
        }
    }
}

/// What a soak found.
pub struct SoakOutcome {
    pub report: Report,
    /// Brokers that exited without being killed: (fault number, broker, status, log tail).
    pub unplanned_exits: Vec<(usize, usize, String, String)>,
    /// Partitions a final read could not finish.
    pub unfinished_reads: Vec<String>,
    pub faults_injected: usize,
    pub duration: Duration,
    pub history_file_error: Option<String>,
    /// Halts of the small-disk broker on a full disk (expected, see `Exits`).
    pub metadata_log_halts: usize,
    /// Why the harness stopped early or could not finish a final step; the checker still
    /// ran on everything recorded.
    pub harness_errors: Vec<String>,
}

impl SoakOutcome {
    /// Valid when the checker found nothing, nothing was left unread and the run finished.
    pub fn is_valid(&self) -> bool {
        self.report.is_valid() && self.unfinished_reads.is_empty() && self.harness_errors.is_empty()
    }

    /// The summary printed at the end of a soak.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "faults injected: {} in {:.0} s",
            self.faults_injected,
            self.duration.as_secs_f64()
        );
        for (kind, n) in &r.faults_by_kind {
            let worst = r.unavailable_ms_max_by_kind.get(kind).copied().unwrap_or(0);
            let _ = writeln!(s, "  {kind:<20} {n:>6}   longest unavailability {worst} ms");
        }
        let _ = writeln!(
            s,
            "unplanned broker exits: {}; halts on a full metadata disk: {}",
            self.unplanned_exits.len(),
            self.metadata_log_halts
        );
        for e in &self.harness_errors {
            let _ = writeln!(s, "harness error: {e}");
        }
        for (fault, broker, status, tail) in self.unplanned_exits.iter().take(5) {
            let _ = writeln!(
                s,
                "  after fault {fault}: broker {broker} {status}; log tail:\n{tail}"
            );
        }
        let _ = writeln!(
            s,
            "records sent {}, acked {}, indeterminate {}, acked records checked in final reads {}, records read {}",
            r.sends, r.acked, r.indeterminate, r.acked_checked, r.reads
        );
        let _ = writeln!(
            s,
            "group commits acked {}; transactions {:?}; client errors {}",
            r.commits_acked, r.txns_by_outcome, r.client_errors
        );
        if !self.unfinished_reads.is_empty() {
            let _ = writeln!(s, "final reads unfinished: {:?}", self.unfinished_reads);
        }
        if let Some(e) = &self.history_file_error {
            let _ = writeln!(s, "history file incomplete: {e}");
        }
        let _ = writeln!(s, "violations: {:?}", r.violations_by_kind());
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &r.violations {
            let n = shown.entry(v.kind()).or_insert(0);
            *n += 1;
            if *n <= 5 {
                let _ = writeln!(s, "  {v:?}");
            }
        }
        let _ = writeln!(
            s,
            "checker: {}",
            if self.report.is_valid() {
                "no violations"
            } else {
                "violations found"
            }
        );
        let _ = writeln!(
            s,
            "VERDICT: {}{}",
            if self.is_valid() { "VALID" } else { "INVALID" },
            if self.harness_errors.is_empty() {
                ""
            } else {
                " (the run did not finish)"
            }
        );
        s
    }
}

/// Runs a soak to the end.
pub fn run(config: &SoakConfig) -> Result<SoakOutcome, Error> {
    crate::net::available().map_err(Error::Setup)?;
    assert!(
        config.brokers >= 3,
        "the fault shapes need 3 brokers or more"
    );
    let started = Instant::now();
    let history = Arc::new(History::new(config.history_path.as_deref())?);
    let kinds = &config.kinds;
    let mut cluster = Cluster::start(ClusterConfig {
        brokers: config.brokers,
        weir_bin: config.weir_bin.clone(),
        work_dir: config.work_dir.clone(),
        env: config.broker_env.clone(),
        small_disk_broker: kinds.contains(&FaultKind::DiskFull).then_some(2),
        small_disk_mib: 512,
        crashfs_broker: (kinds.contains(&FaultKind::PowerLoss)
            || kinds.contains(&FaultKind::SlowFsync))
        .then_some(3),
    })?;
    let bootstrap = cluster.bootstrap();
    let mut topics = vec![TOPIC];
    if config.transactions {
        topics.push(TXN_TOPIC);
    }
    load::create_topics(&bootstrap, &topics, config.partitions, config.brokers)?;
    let load = Load::start(
        &LoadConfig {
            bootstrap: bootstrap.clone(),
            topic: TOPIC.into(),
            partitions: config.partitions,
            producers: config.producers,
            rate_per_producer: config.rate_per_producer,
            consumers: config.consumers,
            txn_topic: config.transactions.then(|| TXN_TOPIC.to_string()),
            seed: config.seed,
        },
        history.clone(),
    );
    // Let the clients connect and the group form before the first fault.
    std::thread::sleep(Duration::from_secs(3));

    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut exits = Exits::default();
    let mut injected = 0;
    let mut harness_errors = Vec::new();
    // The first faults go through every kind once, in a seeded order, so that any run of at
    // least that many faults exercises every mechanism; the rest are drawn at random.
    let mut first_round = kinds.clone();
    rng.shuffle(&mut first_round);
    for n in 1..=config.faults {
        let kind = match first_round.get(n - 1) {
            Some(kind) => *kind,
            None => kinds[rng.usize(0..kinds.len())],
        };
        let hold = Duration::from_millis(rng.u64(config.hold_ms.0..=config.hold_ms.1));
        let injected_fault = inject(&mut cluster, &mut rng, kind, &bootstrap, &history, hold);
        injected += 1;
        if config.verbose {
            eprintln!(
                "[{:>7.1}s] fault {n}/{}: {} {} for {} ms",
                started.elapsed().as_secs_f64(),
                config.faults,
                kind.name(),
                injected_fault.as_deref().unwrap_or("(failed)"),
                hold.as_millis()
            );
        }
        let crashed = cluster.reap_crashed();
        exits.note(&cluster, &history, config.verbose, n, kind, crashed);
        let healed = cluster.heal_all();
        let step = injected_fault.and_then(|_| healed);
        match step {
            Ok(crashed) => exits.note(&cluster, &history, config.verbose, n, kind, crashed),
            Err(e) => {
                // The run stops injecting, but still heals, reads and checks what it has:
                // a harness failure must never cost the verdict on what the clients saw.
                let error = format!("fault {n} ({}): {e}", kind.name());
                eprintln!("harness error, stopping the faults: {error}");
                history.record(Event::Fault {
                    t_ms: history.now_ms(),
                    kind: "harness-error".into(),
                    target: error.clone(),
                });
                harness_errors.push(error);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(config.settle_ms));
    }

    // Everything healed: wait for every partition to have its full ISR again, so the final
    // read sees what the cluster holds once whole, then stop the clients.
    match cluster.heal_all() {
        Ok(crashed) => exits.note(
            &cluster,
            &history,
            config.verbose,
            0,
            FaultKind::Kill,
            crashed,
        ),
        Err(e) => harness_errors.push(format!("final heal: {e}")),
    }
    wait_for_full_isr(&bootstrap, &topics, config.brokers, Duration::from_secs(60));
    load.stop();
    // A transaction left open by a client that gave up ends by its timeout (10 s) on the
    // broker; until then read_committed cannot pass it.
    if config.transactions {
        std::thread::sleep(Duration::from_secs(12));
    }
    let mut unfinished = Vec::new();
    for isolation in [Isolation::ReadUncommitted, Isolation::ReadCommitted] {
        match load::final_read(
            &bootstrap,
            &topics,
            config.partitions,
            isolation,
            &history,
            Duration::from_secs(120),
        ) {
            Ok(open) => unfinished.extend(
                open.into_iter()
                    .map(|(t, p)| format!("{t}/{p} ({isolation:?})")),
            ),
            Err(e) => harness_errors.push(format!("final read ({isolation:?}): {e}")),
        }
    }
    if let Err(e) = load::fetch_committed(&bootstrap, &topics, config.partitions, &history) {
        harness_errors.push(format!("fetching committed offsets: {e}"));
    }
    let events = history.snapshot();
    let report = checker::check(&events);
    drop(cluster);
    Ok(SoakOutcome {
        report,
        unplanned_exits: exits.unplanned,
        metadata_log_halts: exits.halts,
        unfinished_reads: unfinished,
        faults_injected: injected,
        duration: started.elapsed(),
        history_file_error: history.file_error(),
        harness_errors,
    })
}

/// Brokers that exited without being killed.
#[derive(Default)]
struct Exits {
    /// (fault number, broker, status, log tail): crashes, each a finding.
    unplanned: Vec<(usize, usize, String, String)>,
    /// Halts of the small-disk broker during a disk-full fault because its metadata log
    /// could not be written: what Weir is meant to do (Kafka halts too), counted apart.
    halts: usize,
}

impl Exits {
    fn note(
        &mut self,
        cluster: &Cluster,
        history: &History,
        verbose: bool,
        fault: usize,
        kind: FaultKind,
        crashed: Vec<(usize, String)>,
    ) {
        for (broker, status) in crashed {
            let tail = cluster.log_tail(broker);
            let halted = kind == FaultKind::DiskFull
                && cluster.small_disk_broker() == Some(broker)
                && tail.contains("the metadata log cannot be written");
            history.record(Event::Fault {
                t_ms: history.now_ms(),
                kind: if halted {
                    "halt-metadata-log-failed".into()
                } else {
                    "unplanned-exit".into()
                },
                target: format!("broker {broker}: {status}"),
            });
            if halted {
                self.halts += 1;
                continue;
            }
            if verbose {
                eprintln!("broker {broker} exited on its own ({status}); log tail:\n{tail}");
            }
            self.unplanned.push((fault, broker, status, tail));
        }
    }
}

fn wait_for_full_isr(bootstrap: &str, topics: &[&str], brokers: usize, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let full = topics.iter().all(|t| {
            load::partition_state(bootstrap, t)
                .is_ok_and(|s| !s.is_empty() && s.values().all(|(_, isr)| *isr == brokers))
        });
        if full {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Injects one fault, holds it, and heals what a heal-all would not (a killed broker is
/// restarted by the caller's heal). Returns a description of the target.
fn inject(
    cluster: &mut Cluster,
    rng: &mut fastrand::Rng,
    kind: FaultKind,
    bootstrap: &str,
    history: &History,
    hold: Duration,
) -> Result<String, Error> {
    let n = cluster.nodes.len();
    let random = rng.usize(1..=n);
    let target = match kind {
        FaultKind::Kill | FaultKind::Pause | FaultKind::PartitionClients => {
            format!("broker {random}")
        }
        FaultKind::PartitionLeader => {
            let leader = load::partition_state(bootstrap, TOPIC)
                .ok()
                .and_then(|s| s.get(&0).map(|(l, _)| *l))
                .and_then(|l| usize::try_from(l).ok())
                .filter(|l| (1..=n).contains(l))
                .unwrap_or(random);
            format!("broker {leader}")
        }
        FaultKind::PartitionMinority => {
            let mut ids: Vec<usize> = (1..=n).collect();
            rng.shuffle(&mut ids);
            ids.truncate((n - 1) / 2);
            format!("brokers {ids:?}")
        }
        FaultKind::PartitionBridge => format!("bridge broker {random}"),
        FaultKind::DiskFull => format!(
            "broker {}",
            cluster
                .small_disk_broker()
                .expect("disk-full needs a small disk")
        ),
        FaultKind::PowerLoss => format!(
            "broker {}",
            cluster.crashfs_broker().expect("power-loss needs crashfs")
        ),
        FaultKind::SlowFsync => format!(
            "broker {} fsync +{} ms",
            cluster.crashfs_broker().expect("slow-fsync needs crashfs"),
            rng.u64(100..=1_000)
        ),
    };
    history.record(Event::Fault {
        t_ms: history.now_ms(),
        kind: kind.name().into(),
        target: target.clone(),
    });
    let id_of = |t: &str| -> usize {
        t.rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(random)
    };
    match kind {
        FaultKind::Kill => {
            cluster.kill9(random)?;
            std::thread::sleep(hold);
            // Not waited for here: the heal that follows starts whatever else is down first.
            cluster.start_again(random)?;
        }
        FaultKind::Pause => {
            cluster.pause(random)?;
            std::thread::sleep(hold);
            cluster.resume(random)?;
        }
        FaultKind::PartitionLeader => {
            let leader = id_of(&target);
            for other in (1..=n).filter(|o| *o != leader) {
                cluster.net.cut_brokers(leader, other)?;
            }
            std::thread::sleep(hold);
            cluster.net.heal()?;
        }
        FaultKind::PartitionMinority => {
            let ids: Vec<usize> = target
                .trim_start_matches("brokers [")
                .trim_end_matches(']')
                .split(", ")
                .filter_map(|s| s.parse().ok())
                .collect();
            for a in &ids {
                for b in (1..=n).filter(|b| !ids.contains(b)) {
                    cluster.net.cut_brokers(*a, b)?;
                }
            }
            std::thread::sleep(hold);
            cluster.net.heal()?;
        }
        FaultKind::PartitionBridge => {
            let others: Vec<usize> = (1..=n).filter(|o| *o != random).collect();
            let (left, right) = others.split_at(others.len() / 2);
            for a in left {
                for b in right {
                    cluster.net.cut_brokers(*a, *b)?;
                }
            }
            std::thread::sleep(hold);
            cluster.net.heal()?;
        }
        FaultKind::PartitionClients => {
            cluster.net.cut_clients(random)?;
            std::thread::sleep(hold);
            cluster.net.heal()?;
        }
        FaultKind::DiskFull => {
            cluster.fill_disk()?;
            std::thread::sleep(hold);
            cluster.free_disk()?;
        }
        FaultKind::PowerLoss => {
            cluster.power_cut(rng.u64(..))?;
        }
        FaultKind::SlowFsync => {
            let delay_ms = target
                .rsplit('+')
                .next()
                .and_then(|s| s.trim_end_matches(" ms").parse().ok())
                .unwrap_or(500);
            cluster.set_fsync_delay(Duration::from_millis(delay_ms))?;
            std::thread::sleep(hold);
            cluster.set_fsync_delay(Duration::ZERO)?;
        }
    }
    history.record(Event::Healed {
        t_ms: history.now_ms(),
        kind: kind.name().into(),
    });
    Ok(target)
}
