//! Replication across three `weir serve` processes, spoken to by librdkafka:
//! the proof that an acks=all record survives the failures a cluster is for.
//!
//! - `leader_kills_lose_no_acked_record`: the leader of a partition is killed
//!   with kill -9 and restarted, again and again, under a steady idempotent
//!   acks=all stream; every acked record is read back where its ack said.
//! - `paused_leader_acks_nothing_and_rejoins`: a leader stopped with SIGSTOP
//!   past the session timeout acks nothing while it is stopped, and rejoins
//!   the ISR once resumed.
//! - `rolling_restart_with_sigterm`: each broker in turn is stopped with
//!   SIGTERM and restarted while a producer and a consumer group run.
//! - `leaders_replaced_before_appending_rejoin_as_followers`: leaders killed
//!   before they append anything come back and rejoin the ISR.
//! - `min_insync_replicas_refuses_acks_all`: with two of three replicas gone,
//!   acks=all is refused with NOT_ENOUGH_REPLICAS and acks=1 still works.
//!
//! After each run the brokers are stopped and their segment files compared:
//! every replica must hold the same batches (base offset, epoch, length,
//! CRC) up to the partition's high watermark. The reader of those files is
//! this file's own (a test must not trust the code it checks), and
//! `replica_checker_reports_damage_and_divergence` shows it can fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use weir_protocol::api::ApiKey;
use weir_protocol::messages::produce::{
    PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
    TopicProduceData,
};
use weir_protocol::record::{Compression, Record, RecordBatchBuilder, compute_crc};

use super::cluster_harness::{Cluster, SESSION_TIMEOUT_MS, call, metadata};

/// Bound for anything that converges: an election, a replica catching up
/// and rejoining the ISR, a restarted node registering.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Records per second of the steady producers: a stream that every kill and
/// pause lands in, light enough for three brokers on two cores.
const RATE_PER_S: u64 = 2_000;
/// Value bytes of each record.
const PAYLOAD_BYTES: usize = 100;
const MIN_INSYNC_REPLICAS: &str = "2";
const NOT_ENOUGH_REPLICAS: i16 = 19;

// ---- cluster views ------------------------------------------------------------

/// Every node's listener, so a client survives any one of them being down.
pub(super) fn bootstrap_all(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .map(|n| n.bootstrap())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    config
}

/// CreateTopics with replication factor 3 through librdkafka's admin API.
pub(super) fn create_replicated_topic(
    cluster: &Cluster,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap_all(cluster))
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(3));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime
        .block_on(admin.create_topics([&topic], &options))
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating {t} with replication factor 3: {e}"));
    }
}

/// One partition as a node's Metadata answer describes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PartitionView {
    pub(super) error_code: i16,
    pub(super) leader: i32,
    pub(super) leader_epoch: i32,
    pub(super) replicas: Vec<i32>,
    pub(super) isr: Vec<i32>,
}

/// Node `id`'s view of every partition of `topics` (None: all topics), by
/// topic name and partition index; Err when it does not answer.
pub(super) fn views_at(
    cluster: &Cluster,
    id: i32,
    topics: Option<&[&str]>,
) -> Result<BTreeMap<(String, i32), PartitionView>, String> {
    let m = metadata(cluster.node(id).addr, topics).map_err(|e| format!("node {id}: {e}"))?;
    let mut out = BTreeMap::new();
    for t in m.topics {
        let name = t.name.clone().unwrap_or_default();
        if t.error_code != 0 {
            return Err(format!(
                "node {id}: topic {name} has error {}",
                t.error_code
            ));
        }
        for p in t.partitions {
            let mut replicas = p.replica_nodes.clone();
            replicas.sort_unstable();
            let mut isr = p.isr_nodes.clone();
            isr.sort_unstable();
            out.insert(
                (name.clone(), p.partition_index),
                PartitionView {
                    error_code: p.error_code,
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas,
                    isr,
                },
            );
        }
    }
    Ok(out)
}

/// Every running node's view of `topic`, one line per node and partition,
/// for failure messages.
pub(super) fn describe(cluster: &Cluster, topic: &str, ids: &[i32]) -> String {
    let mut lines = Vec::new();
    for &id in ids {
        match views_at(cluster, id, Some(&[topic])) {
            Ok(views) => lines.extend(
                views
                    .iter()
                    .map(|((t, p), v)| format!("node {id} sees {t}-{p}: {v:?}")),
            ),
            Err(e) => lines.push(e),
        }
    }
    lines.join("\n")
}

/// Polls `probe` every 50 ms until it returns Ok, or panics with `what` and
/// the last reason it gave after `timeout`.
pub(super) fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) => assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ok once every running node says that every partition of `topics` (None:
/// every topic, internal ones too) has a leader and all its replicas in the
/// ISR, and, for named topics, three replicas.
pub(super) fn full_isr(cluster: &Cluster, topics: Option<&[&str]>) -> Result<(), String> {
    for id in cluster.running() {
        let views = views_at(cluster, id, topics)?;
        if let Some(names) = topics {
            for name in names {
                if !views.keys().any(|(t, _)| t == name) {
                    return Err(format!("node {id} does not list {name}"));
                }
            }
        }
        for ((topic, p), v) in &views {
            let want_replicas = if topics.is_some() {
                3
            } else {
                v.replicas.len()
            };
            if v.error_code != 0
                || v.leader <= 0
                || v.isr != v.replicas
                || v.replicas.len() != want_replicas
            {
                return Err(format!("node {id}: {topic}-{p} is {v:?}"));
            }
        }
    }
    Ok(())
}

pub(super) fn wait_full_isr(cluster: &Cluster, topics: Option<&[&str]>, why: &str) {
    wait_until(
        &format!("a full ISR on every partition ({why})"),
        CONVERGE_TIMEOUT,
        || full_isr(cluster, topics),
    );
}

/// The leader of `topic`-`partition` once the running nodes agree on one
/// that is running.
pub(super) fn leader_of(cluster: &Cluster, topic: &str, partition: i32) -> i32 {
    wait_until(
        &format!("an agreed, running leader of {topic}-{partition}"),
        CONVERGE_TIMEOUT,
        || {
            let mut leaders = BTreeSet::new();
            for id in cluster.running() {
                let views = views_at(cluster, id, Some(&[topic]))?;
                let v = views
                    .get(&(topic.to_string(), partition))
                    .ok_or(format!("node {id} lacks {topic}-{partition}"))?;
                leaders.insert(v.leader);
            }
            match leaders.iter().collect::<Vec<_>>()[..] {
                [leader] if cluster.running().contains(leader) => Ok(*leader),
                _ => Err(format!("leaders named: {leaders:?}")),
            }
        },
    )
}

fn signal(pid: u32, name: &str) {
    // The command line tool keeps the tests off libc and unsafe, as the harness does.
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A process stopped with SIGSTOP; resumed on drop too, so that a failing
/// test does not leave a stopped broker behind (its SIGTERM would wait).
struct Paused(u32);

impl Paused {
    fn pause(pid: u32) -> Paused {
        signal(pid, "STOP");
        Paused(pid)
    }

    fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

// ---- the producer's ledger -------------------------------------------------------

/// Record `seq` of `partition`: its number in the partition, then padding.
pub(super) fn payload(partition: i32, seq: u64) -> Vec<u8> {
    let mut v = format!("p{partition}-s{seq:010}-").into_bytes();
    v.resize(PAYLOAD_BYTES, b'x');
    v
}

pub(super) fn parse_payload(bytes: &[u8]) -> Option<(i32, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (p, rest) = text.strip_prefix('p')?.split_once("-s")?;
    let (seq, _) = rest.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// A successful delivery report.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) seq: u64,
    /// When the report reached the callback: after its answer arrived.
    pub(super) at: Instant,
}

/// What the producer heard back.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) acked: Mutex<Vec<Delivery>>,
    /// (partition, seq, error) of every failed delivery.
    failed: Mutex<Vec<(i32, u64, KafkaError)>>,
}

impl Ledger {
    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn acked_since(&self, partition: i32, since: Instant) -> usize {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.partition == partition && d.at > since)
            .count()
    }
}

struct LedgerContext(Arc<Ledger>);

impl ClientContext for LedgerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("producer client error (librdkafka retries): {error}: {reason}");
    }

    /// librdkafka's own log lines, printed only when debugging was asked
    /// for (see [`with_debug`]); its errors come through `error` anyway.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if std::env::var_os("WEIR_E2E_RDKAFKA_DEBUG").is_some() {
            eprintln!("librdkafka {level:?} {fac}: {message}");
        }
    }
}

/// librdkafka debug contexts (its `debug` setting) for the tests' producers,
/// from WEIR_E2E_RDKAFKA_DEBUG, e.g. "eos,msg,protocol" when a run stalls.
fn with_debug(config: &mut ClientConfig) -> &mut ClientConfig {
    if let Ok(contexts) = std::env::var("WEIR_E2E_RDKAFKA_DEBUG") {
        config
            .set("debug", contexts)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
}

impl ProducerContext for LedgerContext {
    type DeliveryOpaque = Box<(i32, u64)>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<(i32, u64)>) {
        let (partition, seq) = *sent;
        match result {
            Ok(m) => {
                assert_eq!(m.partition(), partition, "acked in another partition");
                self.0.acked.lock().unwrap().push(Delivery {
                    partition,
                    offset: m.offset(),
                    seq,
                    at: Instant::now(),
                });
            }
            Err((e, _)) => {
                eprintln!("delivery of {partition}/{seq} failed: {e}");
                self.0
                    .failed
                    .lock()
                    .unwrap()
                    .push((partition, seq, e.clone()));
            }
        }
    }
}

/// An idempotent acks=all producer on its own thread, sending RATE_PER_S
/// records round-robin over the partitions, each partition's records
/// numbered 0, 1, 2, ...
pub(super) struct SteadyProducer {
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    /// Returns the records sent per partition, and whether every one was
    /// acked or failed within the flush timeout.
    thread: JoinHandle<(Vec<u64>, Result<(), String>)>,
}

impl SteadyProducer {
    pub(super) fn start(cluster: &Cluster, topic: &str, partitions: i32) -> SteadyProducer {
        let ledger = Arc::new(Ledger::default());
        let producer: ThreadedProducer<LedgerContext> =
            with_debug(&mut client_config(&bootstrap_all(cluster)))
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                // Records wait out every failover instead of failing.
                .set("message.timeout.ms", "300000")
                // A stopped (SIGSTOP) leader answers nothing: give up on a
                // request soon, so the producer asks Metadata for the new one.
                // request.timeout.ms is only the broker-side ack timeout in
                // librdkafka; the client gives up on a produce request after
                // socket.timeout.ms (60 s by default), and an idempotent
                // producer drains a partition's outstanding requests before it
                // sends to a new leader.
                .set("request.timeout.ms", "3000")
                .set("socket.timeout.ms", "5000")
                .set("retry.backoff.ms", "50")
                .set("reconnect.backoff.ms", "20")
                .set("reconnect.backoff.max.ms", "200")
                .create_with_context(LedgerContext(Arc::clone(&ledger)))
                .expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_string();
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut sent = vec![0u64; partitions as usize];
            let started = Instant::now();
            let mut total = 0u64;
            while !stop_flag.load(Ordering::SeqCst) {
                // Catch up with the schedule, then sleep a tick.
                let due = started.elapsed().as_millis() as u64 * RATE_PER_S / 1000;
                while total < due && !stop_flag.load(Ordering::SeqCst) {
                    let partition = (total % partitions as u64) as i32;
                    let seq = sent[partition as usize];
                    let value = payload(partition, seq);
                    let record: BaseRecord<'_, (), Vec<u8>, Box<(i32, u64)>> =
                        BaseRecord::with_opaque_to(&topic, Box::new((partition, seq)))
                            .partition(partition)
                            .payload(&value);
                    match producer.send(record) {
                        Ok(()) => {
                            sent[partition as usize] += 1;
                            total += 1;
                        }
                        // Queue full while a leader is away: try again shortly.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let flushed = producer
                .flush(Duration::from_secs(60))
                .map_err(|e| e.to_string());
            (sent, flushed)
        });
        SteadyProducer {
            ledger,
            stop,
            thread,
        }
    }

    /// Waits until every partition got `count` acks after `since`: no
    /// partition is stuck (the total alone would hide one).
    pub(super) fn wait_acks_everywhere(
        &self,
        partitions: i32,
        since: Instant,
        count: usize,
        why: &str,
    ) {
        wait_until(
            &format!("{count} acks on every partition ({why})"),
            CONVERGE_TIMEOUT,
            || {
                let per_partition: Vec<usize> = (0..partitions)
                    .map(|p| self.ledger.acked_since(p, since))
                    .collect();
                per_partition
                    .iter()
                    .all(|n| *n >= count)
                    .then_some(())
                    .ok_or(format!("acks per partition so far: {per_partition:?}"))
            },
        );
    }

    /// Stops sending, flushes, and returns the records sent per partition.
    /// Records that got no delivery report within a minute fail the test,
    /// with where each partition stands.
    pub(super) fn finish(self, cluster: &Cluster, topic: &str) -> (Vec<u64>, Arc<Ledger>) {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, flushed) = self.thread.join().expect("producer thread");
        if let Err(e) = flushed {
            let acked = self.ledger.acked.lock().unwrap();
            let per_partition: Vec<String> = sent
                .iter()
                .enumerate()
                .map(|(p, n)| {
                    let mine = acked.iter().filter(|d| d.partition == p as i32);
                    let last = mine.clone().map(|d| d.offset).max();
                    format!(
                        "partition {p}: {n} sent, {} acked, last acked offset {last:?}",
                        mine.count()
                    )
                })
                .collect();
            panic!(
                "records still unacknowledged a minute after the producer stopped ({e}):\n{}\n{}",
                per_partition.join("\n"),
                describe(cluster, topic, &cluster.running())
            );
        }
        (sent, self.ledger)
    }
}

// ---- reading back --------------------------------------------------------------

/// Each partition's high watermark, by ListOffsets through librdkafka.
pub(super) fn high_watermarks(cluster: &Cluster, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = client_config(&bootstrap_all(cluster))
        .set("group.id", "replication-watermarks")
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            wait_until(
                &format!("the high watermark of {topic}-{p}"),
                CONVERGE_TIMEOUT,
                || {
                    consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(5))
                        .map(|(_, high)| high)
                        .map_err(|e| e.to_string())
                },
            )
        })
        .collect()
}

/// Every record of each partition below its high watermark, as (offset,
/// value), read from the beginning with a fresh assign()-only consumer.
fn read_partitions(cluster: &Cluster, topic: &str, hw: &[i64]) -> Vec<Vec<(i64, Vec<u8>)>> {
    let consumer: BaseConsumer = client_config(&bootstrap_all(cluster))
        .set("group.id", "replication-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..hw.len() as i32 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut logs: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); hw.len()];
    let done = |logs: &Vec<Vec<(i64, Vec<u8>)>>| {
        logs.iter()
            .zip(hw)
            .all(|(log, hw)| *hw == 0 || log.last().is_some_and(|(o, _)| o + 1 >= *hw))
    };
    let started = Instant::now();
    while !done(&logs) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "read {:?} records of {topic}, high watermarks {hw:?}",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => logs[m.partition() as usize]
                .push((m.offset(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(e)) => eprintln!("reader error (retried): {e}"),
            None => {}
        }
    }
    logs
}

/// The read-back check: every acked record is in its partition at the
/// offset its ack named, with its value; each partition's records keep the
/// order they were sent in; none is there twice; nothing else is there.
fn check_acked_records(
    logs: &[Vec<(i64, Vec<u8>)>],
    acked: &[Delivery],
    sent: &[u64],
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (p, log) in logs.iter().enumerate() {
        let p = p as i32;
        let at: HashMap<i64, &[u8]> = log.iter().map(|(o, v)| (*o, v.as_slice())).collect();
        let held: BTreeSet<&[u8]> = log.iter().map(|(_, v)| v.as_slice()).collect();
        for d in acked.iter().filter(|d| d.partition == p) {
            let want = payload(p, d.seq);
            if d.offset < 0 {
                // librdkafka's idempotent producer acks without an offset
                // the records of a request whose outcome it did not hear,
                // once a later request of the same producer succeeded
                // (rd_kafka_dr_implicit_ack in librdkafka src/rdkafka_broker.c):
                // the broker took them, but
                // where is unknown. They must be there all the same.
                if !held.contains(want.as_slice()) {
                    problems.push(format!(
                        "acked record {p}/{} (acked without an offset) is lost",
                        d.seq
                    ));
                }
                continue;
            }
            match at.get(&d.offset) {
                Some(v) if *v == want.as_slice() => {}
                Some(v) => problems.push(format!(
                    "acked record {p}/{} at offset {} is lost: the offset holds {:?}",
                    d.seq,
                    d.offset,
                    String::from_utf8_lossy(&v[..v.len().min(24)])
                )),
                None => problems.push(format!(
                    "acked record {p}/{} at offset {} is lost: no such offset",
                    d.seq, d.offset
                )),
            }
        }
        let mut last: Option<u64> = None;
        let mut seen = BTreeSet::new();
        for (offset, v) in log {
            match parse_payload(v) {
                Some((vp, seq)) if vp == p => {
                    if !seen.insert(seq) {
                        problems.push(format!("record {p}/{seq} is there twice (at {offset})"));
                    } else if last.is_some_and(|l| seq < l) {
                        problems.push(format!(
                            "partition {p}: record {seq} at {offset} after record {}",
                            last.unwrap_or_default()
                        ));
                    }
                    last = Some(seq);
                }
                other => problems.push(format!("{p}/{offset} holds a foreign record {other:?}")),
            }
        }
        if log.len() as u64 != sent[p as usize] {
            problems.push(format!(
                "partition {p} holds {} records, {} were sent (and all acked)",
                log.len(),
                sent[p as usize]
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let n = problems.len();
        problems.truncate(20);
        Err(format!(
            "{n} problems, first ones:\n{}",
            problems.join("\n")
        ))
    }
}

/// Fails the test if any delivery failed (all runs use a long message
/// timeout, so every failure is final), then reads the topic back and
/// checks it against the acks.
pub(super) fn assert_no_acked_record_lost(
    cluster: &Cluster,
    topic: &str,
    sent: &[u64],
    ledger: &Ledger,
) {
    let failed = ledger.failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} deliveries failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let acked = ledger.acked.lock().unwrap().clone();
    assert_eq!(
        acked.len() as u64,
        sent.iter().sum::<u64>(),
        "every record sent was acked"
    );
    let hw = high_watermarks(cluster, topic, sent.len() as i32);
    let logs = read_partitions(cluster, topic, &hw);
    if let Err(e) = check_acked_records(&logs, &acked, sent) {
        panic!("{topic} after the run (high watermarks {hw:?}): {e}");
    }
    eprintln!(
        "{topic}: {} acked records ({} of them acked without an offset) all read back in order, once each",
        acked.len(),
        acked.iter().filter(|d| d.offset < 0).count()
    );
}

// ---- comparing replicas on disk -------------------------------------------------------

/// A record batch's identity in a segment file. The CRC covers everything
/// from the attributes to the end; with base offset, epoch and length this
/// names the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BatchId {
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    length: i32,
    crc: u32,
}

/// One replica's log as its segment files hold it.
#[derive(Debug)]
struct ReplicaLog {
    batches: Vec<BatchId>,
    /// Why the reading stopped before the end of the last segment, if it
    /// did (a torn tail after kill -9 is normal; anything before the high
    /// watermark is not).
    stopped: Option<String>,
}

/// Size of the v2 batch header up to and including lastOffsetDelta.
const HEADER_PREFIX_BYTES: usize = 27;
/// A v2 batch's header is 61 bytes, 49 of them after the length field.
const BATCH_LENGTH_MIN: i32 = 49;
/// Far above any batch the tests write; a length past it is damage.
const BATCH_LENGTH_MAX: i32 = 16 << 20;
/// No test writes a segment this large; a bigger file is not read whole.
const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Reads every `*.log` segment of a partition directory in offset order
/// and lists its batches, checking each one's length, magic and CRC. It
/// stops at the first batch that fails a check.
fn read_replica_log(partition_dir: &Path) -> Result<ReplicaLog, String> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .map_err(|e| format!("{}: {e}", partition_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    // Segment names are zero-padded base offsets: name order is offset order.
    segments.sort();
    let mut batches = Vec::new();
    for segment in &segments {
        let size = std::fs::metadata(segment)
            .map_err(|e| format!("{}: {e}", segment.display()))?
            .len();
        if size > SEGMENT_BYTES_MAX {
            return Err(format!("{}: {size} bytes", segment.display()));
        }
        let bytes = std::fs::read(segment).map_err(|e| format!("{}: {e}", segment.display()))?;
        let mut pos = 0usize;
        while pos < bytes.len() {
            let stop = |why: String| format!("{} at byte {pos}: {why}", segment.display());
            let Some(prefix) = bytes.get(pos..pos + HEADER_PREFIX_BYTES) else {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop("a header cut short".into())),
                });
            };
            let base_offset = i64::from_be_bytes(prefix[0..8].try_into().unwrap());
            let length = i32::from_be_bytes(prefix[8..12].try_into().unwrap());
            let leader_epoch = i32::from_be_bytes(prefix[12..16].try_into().unwrap());
            let magic = prefix[16];
            let crc = u32::from_be_bytes(prefix[17..21].try_into().unwrap());
            let last_offset_delta = i32::from_be_bytes(prefix[23..27].try_into().unwrap());
            if !(BATCH_LENGTH_MIN..=BATCH_LENGTH_MAX).contains(&length) {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop(format!("batch length {length}"))),
                });
            }
            if magic != 2 {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop(format!("magic {magic}"))),
                });
            }
            let end = pos + 12 + length as usize;
            let Some(batch) = bytes.get(pos..end) else {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop(format!(
                        "a batch of {length} bytes cut short at {}",
                        bytes.len()
                    ))),
                });
            };
            let computed = compute_crc(batch);
            if computed != crc {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop(format!(
                        "batch at offset {base_offset}: stored CRC {crc:#010x}, computed {computed:#010x}"
                    ))),
                });
            }
            if last_offset_delta < 0 {
                return Ok(ReplicaLog {
                    batches,
                    stopped: Some(stop(format!("last offset delta {last_offset_delta}"))),
                });
            }
            batches.push(BatchId {
                base_offset,
                last_offset: base_offset + i64::from(last_offset_delta),
                leader_epoch,
                length,
                crc,
            });
            pos = end;
        }
    }
    Ok(ReplicaLog {
        batches,
        stopped: None,
    })
}

/// Checks that every replica holds the same batches from offset 0 up to
/// `hw` (exclusive), without gaps, ending exactly at `hw`. `replicas` are
/// (node id, partition directory).
fn compare_replicas(hw: i64, replicas: &[(i32, PathBuf)]) -> Result<(), String> {
    let mut prefixes: Vec<(i32, Vec<BatchId>)> = Vec::new();
    for (id, dir) in replicas {
        let log = read_replica_log(dir).map_err(|e| format!("replica on node {id}: {e}"))?;
        let prefix: Vec<BatchId> = log
            .batches
            .iter()
            .take_while(|b| b.base_offset < hw)
            .cloned()
            .collect();
        let mut next = prefix.first().map_or(0, |b| b.base_offset);
        for b in &prefix {
            if b.base_offset != next {
                return Err(format!(
                    "replica on node {id}: batch at {} where {next} was due",
                    b.base_offset
                ));
            }
            next = b.last_offset + 1;
        }
        if next != hw && hw > 0 {
            return Err(format!(
                "replica on node {id} holds offsets up to {next}, below the high watermark {hw}; \
                 reading stopped: {:?}",
                log.stopped
            ));
        }
        prefixes.push((*id, prefix));
    }
    let (first_id, first) = &prefixes[0];
    for (id, other) in &prefixes[1..] {
        if let Some(i) = (0..first.len().max(other.len())).find(|i| first.get(*i) != other.get(*i))
        {
            return Err(format!(
                "replicas on nodes {first_id} and {id} differ below the high watermark {hw} at batch {i}: \
                 {:?} vs {:?}",
                first.get(i),
                other.get(i)
            ));
        }
    }
    Ok(())
}

/// Takes each partition's high watermark, stops every broker (kill -9: the
/// files are what they are at that moment; page cache survives) and
/// compares the three replicas of each partition on disk.
fn stop_and_compare_replicas(cluster: &mut Cluster, topic: &str, partitions: i32) {
    wait_full_isr(cluster, Some(&[topic]), "before comparing replicas");
    let hw = high_watermarks(cluster, topic, partitions);
    for id in 1..=3 {
        cluster.node_mut(id).kill9();
    }
    for (p, hw) in hw.iter().enumerate() {
        let replicas: Vec<(i32, PathBuf)> = (1..=3)
            .map(|id| (id, cluster.node(id).data_dir.join(format!("{topic}-{p}"))))
            .collect();
        if let Err(e) = compare_replicas(*hw, &replicas) {
            panic!("{topic}-{p}: {e}");
        }
    }
    eprintln!("{topic}: the three replicas are identical up to the high watermarks {hw:?}");
}

// ---- the scenarios ------------------------------------------------------------

const KILLS: usize = 10;

#[test]
fn leader_kills_lose_no_acked_record() {
    let mut cluster = Cluster::start(&[]);
    let topic = "replicated-kills";
    let partitions = 3;
    create_replicated_topic(
        &cluster,
        topic,
        partitions,
        &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
    );
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    let producing_since = Instant::now();
    let producer = SteadyProducer::start(&cluster, topic, partitions);
    producer.wait_acks_everywhere(partitions, producing_since, 100, "before the first kill");

    for kill in 0..KILLS {
        let started = Instant::now();
        let leader = leader_of(&cluster, topic, 0);
        cluster.node_mut(leader).kill9();
        // Down for 1 to 2 s, a different time each round.
        std::thread::sleep(Duration::from_millis(1_000 + (kill as u64 * 337) % 1_000));
        cluster.node_mut(leader).restart();
        wait_full_isr(
            &cluster,
            Some(&[topic]),
            &format!("node {leader} back after kill {kill}"),
        );
        producer.wait_acks_everywhere(partitions, started, 100, &format!("after kill {kill}"));
        eprintln!(
            "kill {kill}: leader {leader} of partition 0 killed and back in the ISR in {:?}; {} acks",
            started.elapsed(),
            producer.ledger.acked_count()
        );
    }

    let (sent, ledger) = producer.finish(&cluster, topic);
    assert_no_acked_record_lost(&cluster, topic, &sent, &ledger);
    stop_and_compare_replicas(&mut cluster, topic, partitions);
}

/// A broker that becomes leader records its epoch at its log end. If it is killed before it
/// appends anything and comes back as a follower, that epoch holds none of its records: it
/// must drop it when it truncates, or the leader finds it divergent on every fetch and it never
/// rejoins the ISR. Only leaderships with no produce in between show this, so no client
/// produces after the first record.
#[test]
fn leaders_replaced_before_appending_rejoin_as_followers() {
    let mut cluster = Cluster::start(&[]);
    let topic = "replicated-idle-kills";
    create_replicated_topic(&cluster, topic, 1, &[]);
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    let leader = leader_of(&cluster, topic, 0);
    produce_rdkafka(&cluster, leader, topic, 0, "all").expect("the first record");
    for kill in 0..3 {
        let leader = leader_of(&cluster, topic, 0);
        cluster.node_mut(leader).kill9();
        let next = leader_of(&cluster, topic, 0);
        assert_ne!(next, leader);
        cluster.node_mut(leader).restart();
        wait_full_isr(
            &cluster,
            Some(&[topic]),
            &format!("node {leader} back after idle kill {kill} (leader now {next})"),
        );
    }
    let leader = leader_of(&cluster, topic, 0);
    produce_rdkafka(&cluster, leader, topic, 0, "all").expect("a record after the kills");
    stop_and_compare_replicas(&mut cluster, topic, 1);
}

/// How long after SIGSTOP an ack may still arrive from the stopped leader:
/// answers it wrote before it stopped, and the callback's own delay.
const ACK_GRACE: Duration = Duration::from_millis(500);

#[test]
fn paused_leader_acks_nothing_and_rejoins() {
    let mut cluster = Cluster::start(&[]);
    let topic = "replicated-pause";
    let partitions = 3;
    create_replicated_topic(
        &cluster,
        topic,
        partitions,
        &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
    );
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    let producing_since = Instant::now();
    let producer = SteadyProducer::start(&cluster, topic, partitions);
    producer.wait_acks_everywhere(partitions, producing_since, 200, "before the pause");

    let paused_id = leader_of(&cluster, topic, 0);
    let others: Vec<i32> = (1..=3).filter(|id| *id != paused_id).collect();
    let controller = metadata(cluster.node(others[0]).addr, Some(&[]))
        .map(|m| m.controller_id)
        .unwrap_or(-1);
    eprintln!(
        "stopping node {paused_id}, the leader of partition 0 (the controller is {controller})"
    );
    let paused_at = Instant::now();
    let paused = Paused::pause(cluster.node(paused_id).pid());

    // Watch the other two nodes. For each, the send time of its last
    // answer that did not name itself leader of partition 0: the node
    // became leader after that, so it acked nothing before it.
    let mut not_leader_until: HashMap<i32, Instant> = HashMap::new();
    let new_leader = wait_until(
        "a new leader of partition 0 while the old one is stopped",
        Duration::from_millis(SESSION_TIMEOUT_MS) + CONVERGE_TIMEOUT,
        || {
            for id in &others {
                let asked_at = Instant::now();
                let views = views_at(&cluster, *id, Some(&[topic]))?;
                let v = &views[&(topic.to_string(), 0)];
                if v.leader == *id {
                    return Ok(*id);
                }
                not_leader_until.insert(*id, asked_at);
            }
            Err("no new leader yet".into())
        },
    );
    let leader_since = not_leader_until
        .get(&new_leader)
        .copied()
        .unwrap_or(paused_at);
    eprintln!(
        "node {paused_id} stopped; node {new_leader} leads partition 0 from {:?} after the stop",
        leader_since - paused_at
    );
    // Acks of partition 0 resume, through the new leader: the stopped one can send nothing.
    wait_until(
        "acks of partition 0 through the new leader",
        CONVERGE_TIMEOUT,
        || {
            let n = producer.ledger.acked_since(0, leader_since);
            (n >= 100)
                .then_some(())
                .ok_or_else(|| format!("{n} so far\n{}", describe(&cluster, topic, &others)))
        },
    );
    // Stay stopped past the session timeout, whatever the election took.
    let stopped_min = Duration::from_millis(SESSION_TIMEOUT_MS * 3 / 2);
    if let Some(rest) = stopped_min.checked_sub(paused_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let window_start = paused_at + ACK_GRACE;
    let from_stopped: Vec<Delivery> = producer
        .ledger
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.partition == 0 && d.at > window_start && d.at < leader_since)
        .cloned()
        .collect();
    assert!(
        from_stopped.is_empty(),
        "{} acks of partition 0 arrived while its leader {paused_id} was stopped and before \
         {new_leader} led it ({:?} after the stop), first {:?}",
        from_stopped.len(),
        leader_since - paused_at,
        from_stopped.first()
    );

    let resumed_at = Instant::now();
    paused.resume();
    wait_until(
        &format!("node {paused_id} back in the ISR of partition 0"),
        CONVERGE_TIMEOUT,
        || {
            let views = views_at(&cluster, new_leader, Some(&[topic]))?;
            let v = &views[&(topic.to_string(), 0)];
            v.isr
                .contains(&paused_id)
                .then_some(())
                .ok_or(format!("{v:?}"))
        },
    );
    eprintln!(
        "node {paused_id} rejoined the ISR {:?} after SIGCONT",
        resumed_at.elapsed()
    );
    wait_full_isr(&cluster, Some(&[topic]), "after the pause");
    producer.wait_acks_everywhere(partitions, Instant::now(), 100, "after the resume");

    let (sent, ledger) = producer.finish(&cluster, topic);
    assert_no_acked_record_lost(&cluster, topic, &sent, &ledger);
    stop_and_compare_replicas(&mut cluster, topic, partitions);
}

/// Errors librdkafka's consumer may surface while a broker restarts, all
/// retriable in Kafka's protocol or local connection failures it retries.
pub(super) fn retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::UnknownTopicOrPartition
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::RequestTimedOut
                | C::NetworkException
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::KafkaStorageError
                | C::FencedLeaderEpoch
                | C::UnknownLeaderEpoch
        )
    )
}

/// A consumer-group member on its own thread, subscribed to one topic,
/// keeping every (partition, seq) it is handed and every error.
pub(super) struct GroupReader {
    pub(super) seen: Arc<Mutex<BTreeSet<(i32, u64)>>>,
    errors: Arc<Mutex<Vec<KafkaError>>>,
    /// The longest time between two records handed to the member.
    longest_gap: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl GroupReader {
    pub(super) fn start(cluster: &Cluster, topic: &str, group: &str) -> GroupReader {
        let consumer: BaseConsumer = client_config(&bootstrap_all(cluster))
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            .create()
            .expect("group consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let thread = {
            let (seen, errors, stop) = (Arc::clone(&seen), Arc::clone(&errors), Arc::clone(&stop));
            let longest_gap = Arc::clone(&longest_gap);
            std::thread::spawn(move || {
                let mut last: Option<Instant> = None;
                while !stop.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            let now = Instant::now();
                            if let Some(last) = last {
                                let mut longest = longest_gap.lock().unwrap();
                                *longest = (*longest).max(now - last);
                            }
                            last = Some(now);
                            let record = m.payload().and_then(parse_payload);
                            match record {
                                Some(r) => {
                                    seen.lock().unwrap().insert(r);
                                }
                                None => {
                                    panic!("a foreign record at {}/{}", m.partition(), m.offset())
                                }
                            }
                        }
                        Some(Err(e)) => {
                            eprintln!("group consumer error: {e}");
                            errors.lock().unwrap().push(e);
                        }
                        None => {}
                    }
                }
            })
        };
        GroupReader {
            seen,
            errors,
            longest_gap,
            stop,
            thread,
        }
    }

    /// The longest wait between two records so far (from the first record on).
    pub(super) fn longest_gap(&self) -> Duration {
        *self.longest_gap.lock().unwrap()
    }

    pub(super) fn seen_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(super) fn finish(self) -> (BTreeSet<(i32, u64)>, Vec<KafkaError>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("group consumer thread");
        let seen = self.seen.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (seen, errors)
    }
}

#[test]
fn rolling_restart_with_sigterm() {
    let mut cluster = Cluster::start(&["--group-initial-rebalance-delay-ms", "100"]);
    let topic = "replicated-rolling";
    let partitions = 3;
    create_replicated_topic(
        &cluster,
        topic,
        partitions,
        &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
    );
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    let producer = SteadyProducer::start(&cluster, topic, partitions);
    let reader = GroupReader::start(&cluster, topic, "rolling-group");
    wait_until(
        "the group consumer's first records",
        CONVERGE_TIMEOUT,
        || {
            let n = reader.seen_count();
            (n >= 200).then_some(()).ok_or(format!("{n} so far"))
        },
    );
    wait_full_isr(&cluster, None, "with the group's offsets topic");

    for id in 1..=3 {
        let started = Instant::now();
        let seen_before = reader.seen_count();
        let clean = cluster.node_mut(id).stop();
        assert!(clean, "node {id} did not exit 0 within 30 s of SIGTERM");
        let stopped_in = started.elapsed();
        cluster.node_mut(id).restart();
        wait_full_isr(&cluster, None, &format!("node {id} back after SIGTERM"));
        producer.wait_acks_everywhere(
            partitions,
            started,
            100,
            &format!("after restarting node {id}"),
        );
        wait_until(
            &format!("the group consumer reading after restarting node {id}"),
            CONVERGE_TIMEOUT,
            || {
                let n = reader.seen_count();
                (n >= seen_before + 100)
                    .then_some(())
                    .ok_or(format!("{} new", n - seen_before))
            },
        );
        eprintln!(
            "node {id}: stopped in {stopped_in:?}, back with a full ISR in {:?}",
            started.elapsed()
        );
    }

    let (sent, ledger) = producer.finish(&cluster, topic);
    let acked: BTreeSet<(i32, u64)> = ledger
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.partition, d.seq))
        .collect();
    wait_until(
        "the group consumer to have read every acked record",
        CONVERGE_TIMEOUT,
        || {
            let seen = reader.seen.lock().unwrap();
            let missing = acked.difference(&seen).count();
            (missing == 0)
                .then_some(())
                .ok_or(format!("{missing} of {} missing", acked.len()))
        },
    );
    let (_, errors) = reader.finish();
    let fatal: Vec<&KafkaError> = errors.iter().filter(|e| !retriable(e)).collect();
    assert!(
        fatal.is_empty(),
        "the group consumer saw {} non-retriable errors: {fatal:?}",
        fatal.len()
    );
    assert_no_acked_record_lost(&cluster, topic, &sent, &ledger);
    stop_and_compare_replicas(&mut cluster, topic, partitions);
}

/// One Produce (v11) of a single record, straight to `id`.
fn produce_raw(
    cluster: &Cluster,
    id: i32,
    topic: &str,
    partition: i32,
    acks: i16,
    value: &'static [u8],
) -> PartitionProduceResponse {
    let batch = RecordBatchBuilder::new(Compression::None)
        .record(Record {
            offset_delta: 0,
            timestamp_delta: 0,
            key: None,
            value: Some(bytes::Bytes::from_static(value)),
            headers: Vec::new(),
        })
        .build()
        .expect("batch");
    let request = ProduceRequest {
        acks,
        timeout_ms: 5_000,
        topic_data: vec![TopicProduceData {
            name: topic.to_string(),
            partition_data: vec![PartitionProduceData {
                index: partition,
                records: Some(batch),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer: ProduceResponse =
        call(cluster.node(id).addr, ApiKey::Produce, 11, &request).expect("produce answered");
    answer.responses[0].partition_responses[0].clone()
}

/// One record through librdkafka without retries, with `acks`; the
/// delivery report's outcome.
fn produce_rdkafka(
    cluster: &Cluster,
    id: i32,
    topic: &str,
    partition: i32,
    acks: &str,
) -> Result<i64, KafkaError> {
    let ledger = Arc::new(Ledger::default());
    let producer: ThreadedProducer<LedgerContext> = client_config(&cluster.node(id).bootstrap())
        .set("acks", acks)
        .set("enable.idempotence", "false")
        // The broker's own answer is the delivery report, not a retry's timeout.
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create_with_context(LedgerContext(Arc::clone(&ledger)))
        .expect("producer");
    let value = payload(partition, 0);
    let record: BaseRecord<'_, (), Vec<u8>, Box<(i32, u64)>> =
        BaseRecord::with_opaque_to(topic, Box::new((partition, 0)))
            .partition(partition)
            .payload(&value);
    producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    producer.flush(Duration::from_secs(30)).expect("flush");
    if let Some(d) = ledger.acked.lock().unwrap().first() {
        return Ok(d.offset);
    }
    let failed = ledger.failed.lock().unwrap();
    Err(failed.first().expect("a delivery report").2.clone())
}

#[test]
fn min_insync_replicas_refuses_acks_all() {
    // Node 1 alone is the metadata quorum, so that losing nodes 2 and 3
    // loses two replicas but not the controller that shrinks the ISR.
    let mut cluster = Cluster::start_with_voters(1, &[]);
    let topic = "replicated-min-isr";
    create_replicated_topic(
        &cluster,
        topic,
        3,
        &[("min.insync.replicas", MIN_INSYNC_REPLICAS)],
    );
    wait_full_isr(&cluster, Some(&[topic]), "after creating the topic");
    // A partition node 1 leads; placement spreads leaders over all three.
    let views = views_at(&cluster, 1, Some(&[topic])).expect("metadata");
    let partition = views
        .iter()
        .find(|(_, v)| v.leader == 1)
        .map(|((_, p), _)| *p)
        .unwrap_or_else(|| panic!("node 1 leads no partition of {topic}: {views:?}"));

    let first = produce_raw(&cluster, 1, topic, partition, -1, b"with a full ISR");
    assert_eq!(
        (first.error_code, first.base_offset),
        (0, 0),
        "acks=all with a full ISR: {first:?}"
    );

    cluster.node_mut(2).kill9();
    cluster.node_mut(3).kill9();
    wait_until(
        "the ISR to shrink to the leader alone",
        Duration::from_millis(SESSION_TIMEOUT_MS) + CONVERGE_TIMEOUT,
        || {
            let views = views_at(&cluster, 1, Some(&[topic]))?;
            let v = &views[&(topic.to_string(), partition)];
            (v.leader == 1 && v.isr == vec![1])
                .then_some(())
                .ok_or(format!("{v:?}"))
        },
    );

    let refused = produce_raw(&cluster, 1, topic, partition, -1, b"acks=all, ISR of one");
    assert_eq!(
        refused.error_code, NOT_ENOUGH_REPLICAS,
        "acks=all with |ISR| 1 < min.insync.replicas 2: {refused:?}"
    );
    match produce_rdkafka(&cluster, 1, topic, partition, "all") {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => {}
        other => panic!("librdkafka acks=all with an ISR of one: {other:?}"),
    }
    // Refused before the append, so the next record takes offset 1.
    let one = produce_raw(&cluster, 1, topic, partition, 1, b"acks=1, ISR of one");
    assert_eq!(
        (one.error_code, one.base_offset),
        (0, 1),
        "acks=1 with an ISR of one: {one:?}"
    );
    assert_eq!(
        produce_rdkafka(&cluster, 1, topic, partition, "1").expect("librdkafka acks=1"),
        2
    );

    // Back: the ISR grows again and acks=all is accepted.
    cluster.node_mut(2).restart();
    cluster.node_mut(3).restart();
    wait_full_isr(&cluster, Some(&[topic]), "nodes 2 and 3 back");
    let again = produce_raw(
        &cluster,
        1,
        topic,
        partition,
        -1,
        b"acks=all, full ISR again",
    );
    assert_eq!(
        (again.error_code, again.base_offset),
        (0, 3),
        "acks=all once the ISR is full again: {again:?}"
    );
}

// ---- the replica checker can fail -------------------------------------------------------

/// A batch of `count` records from `base_offset`, as a leader writes it.
fn test_batch(base_offset: i64, count: i32, epoch: i32, tag: &str) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(Compression::None)
        .base_offset(base_offset)
        .partition_leader_epoch(epoch);
    for i in 0..count {
        builder = builder.record(Record {
            offset_delta: i,
            timestamp_delta: 0,
            key: None,
            value: Some(bytes::Bytes::from(format!(
                "{tag}-{}",
                base_offset + i64::from(i)
            ))),
            headers: Vec::new(),
        });
    }
    builder.build().expect("batch").to_vec()
}

/// Writes a partition directory of two segments holding 5 batches of 3
/// records (offsets 0..15).
fn write_test_replica(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut first = Vec::new();
    let mut second = Vec::new();
    for b in 0..5i64 {
        let batch = test_batch(b * 3, 3, 1, tag);
        if b < 3 { &mut first } else { &mut second }.extend_from_slice(&batch);
    }
    std::fs::write(dir.join(format!("{:020}.log", 0)), first).unwrap();
    std::fs::write(dir.join(format!("{:020}.log", 9)), second).unwrap();
}

#[test]
fn replica_checker_reports_damage_and_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    for name in ["a", "b", "c"] {
        write_test_replica(&dir(name), "same");
    }
    let replicas = |names: &[&str]| -> Vec<(i32, PathBuf)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as i32 + 1, dir(n)))
            .collect()
    };
    let all = replicas(&["a", "b", "c"]);
    assert_eq!(read_replica_log(&dir("a")).unwrap().batches.len(), 5);
    compare_replicas(15, &all).expect("identical replicas");
    compare_replicas(9, &all).expect("identical up to a lower high watermark");

    // One flipped byte in a record of the second segment: that replica's
    // log stops there, below the high watermark.
    let segment = dir("b").join(format!("{:020}.log", 9));
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let e = compare_replicas(15, &all).expect_err("a damaged batch");
    assert!(e.contains("node 2") && e.contains("CRC"), "{e}");
    // Below the damage the replicas still agree.
    compare_replicas(12, &all).expect("identical below the damage");

    // A tail beyond the high watermark may differ; below it, not.
    write_test_replica(&dir("b"), "same");
    let tail = dir("c").join(format!("{:020}.log", 9));
    let mut bytes = std::fs::read(&tail).unwrap();
    bytes.extend_from_slice(&test_batch(15, 2, 2, "divergent"));
    std::fs::write(&tail, &bytes).unwrap();
    compare_replicas(15, &all).expect("a longer tail past the high watermark");

    // A batch with the same offsets but other records (a valid CRC of its
    // own): a divergent replica.
    let mut second = Vec::new();
    second.extend_from_slice(&test_batch(9, 3, 1, "same"));
    second.extend_from_slice(&test_batch(12, 3, 2, "divergent"));
    std::fs::write(dir("c").join(format!("{:020}.log", 9)), &second).unwrap();
    let e = compare_replicas(15, &all).expect_err("a divergent batch");
    assert!(e.contains("nodes 1 and 3") && e.contains("batch 4"), "{e}");

    // A missing batch: a gap.
    let mut gapped = Vec::new();
    gapped.extend_from_slice(&test_batch(0, 3, 1, "same"));
    gapped.extend_from_slice(&test_batch(6, 3, 1, "same"));
    std::fs::write(dir("c").join(format!("{:020}.log", 0)), &gapped).unwrap();
    let e = compare_replicas(15, &all).expect_err("a gap");
    assert!(e.contains("node 3") && e.contains("where 3 was due"), "{e}");

    // A replica cut short below the high watermark.
    write_test_replica(&dir("c"), "same");
    std::fs::remove_file(dir("c").join(format!("{:020}.log", 9))).unwrap();
    let e = compare_replicas(15, &all).expect_err("a short replica");
    assert!(e.contains("node 3") && e.contains("up to 9"), "{e}");

    // A length field past the bound is not followed.
    write_test_replica(&dir("c"), "same");
    let segment = dir("c").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    std::fs::write(&segment, &bytes).unwrap();
    let log = read_replica_log(&dir("c")).unwrap();
    assert!(log.batches.is_empty(), "{log:?}");
    assert!(log.stopped.is_some_and(|s| s.contains("batch length")));
}
