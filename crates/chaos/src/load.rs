//! Client load through librdkafka (the `rdkafka` crate), recording everything in the history:
//! idempotent acks=all producers, a consumer group committing offsets, a transactional
//! producer, and the final full reads.
//!
//! Each client runs on its own thread until `stop` is set; nothing here decides what a history
//! means (that is the checker's job), it only writes down what the clients were told.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::Error;
use crate::history::{Event, History, Isolation, TxnOutcome};

/// The consumer group whose commits are checked.
pub const GROUP: &str = "chaos-group";
/// Records per transaction.
const TXN_RECORDS: usize = 5;
/// Records a producer may have handed to librdkafka and not yet heard back about: bounds the
/// client's queue (and the history's open sends).
const QUEUE_MESSAGES_MAX: &str = "10000";

/// What load to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub bootstrap: String,
    /// Idempotent producers writing to `topic`.
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    /// Records per second per producer.
    pub rate_per_producer: u32,
    pub consumers: usize,
    /// A transactional producer writing to this topic, if any.
    pub txn_topic: Option<String>,
    pub seed: u64,
}

/// The running clients.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(config: &LoadConfig, history: Arc<History>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for k in 0..config.producers {
            let (c, h, s) = (config.clone(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || producer_loop(k, &c, &h, &s)));
        }
        for k in 0..config.consumers {
            let (c, h, s) = (config.clone(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || consumer_loop(k, &c, &h, &s)));
        }
        if config.txn_topic.is_some() {
            let (c, h, s) = (config.clone(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || txn_loop(&c, &h, &s)));
        }
        Load { stop, threads }
    }

    /// Stops every client: producers flush what they hold (bounded), consumers commit once more.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Records every delivery report.
struct Recorder {
    history: Arc<History>,
    producer: String,
}

impl ClientContext for Recorder {
    /// librdkafka's idempotent producer may bump its epoch (KIP-360 drain-and-bump, e.g. after
    /// an OUT_OF_ORDER_SEQUENCE_NUMBER on a later in-flight request or a message timeout) and
    /// then re-send what it had in flight, which the broker can no longer recognise as a
    /// retry (confluentinc/librdkafka#4953). Those bumps go into the history, so a duplicate
    /// can be told apart from one the broker caused. Needs `debug=eos`.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        let bump = log_message.contains("bump") || log_message.contains("Bump");
        if bump && (fac == "DRAIN" || fac == "IDEMPSTATE" || fac == "IDEMPBUMP" || fac == "EOS") {
            self.history.record(Event::ClientError {
                t_ms: self.history.now_ms(),
                error: format!("{}: librdkafka {fac}: {log_message}", self.producer),
            });
        } else if (level as i32) <= (rdkafka::config::RDKafkaLogLevel::Warning as i32) {
            self.history.record(Event::ClientError {
                t_ms: self.history.now_ms(),
                error: format!("{}: librdkafka {fac}: {log_message}", self.producer),
            });
        }
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let t_ms = self.history.now_ms();
        let producer = self.producer.clone();
        let event = match result {
            Ok(m) => Event::Ack {
                t_ms,
                producer,
                topic: m.topic().into(),
                partition: m.partition(),
                offset: m.offset(),
                value: payload(m),
            },
            Err((e, m)) => Event::SendFailed {
                t_ms,
                producer,
                topic: m.topic().into(),
                partition: m.partition(),
                value: payload(m),
                error: e.to_string(),
            },
        };
        self.history.record(event);
    }
}

fn payload<M: Message>(m: &M) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // A cut-off broker drops packets: find out in seconds, not librdkafka's minute.
        .set("socket.timeout.ms", "10000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("reconnect.backoff.max.ms", "1000");
    c
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("request.timeout.ms", "10000")
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", QUEUE_MESSAGES_MAX)
        // The idempotence state machine's log: epoch bumps are recorded (see `Recorder::log`).
        .set("debug", "eos");
    c
}

fn make_producer(
    config: &ClientConfig,
    history: &Arc<History>,
    name: &str,
) -> Option<ThreadedProducer<Recorder>> {
    match config.create_with_context(Recorder {
        history: history.clone(),
        producer: name.into(),
    }) {
        Ok(producer) => Some(producer),
        Err(e) => {
            history.record(Event::ClientError {
                t_ms: history.now_ms(),
                error: format!("{name}: create: {e}"),
            });
            None
        }
    }
}

/// Sends one record, waiting while the client's queue is full. Returns false if the record
/// was refused for another reason (recorded as failed).
fn send(
    producer: &ThreadedProducer<Recorder>,
    history: &History,
    name: &str,
    topic: &str,
    partition: i32,
    value: &str,
    stop: &AtomicBool,
) -> bool {
    loop {
        let record = BaseRecord::to(topic)
            .partition(partition)
            .key(value)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return true,
            Err((KafkaError::MessageProduction(code), _))
                if code == rdkafka::types::RDKafkaErrorCode::QueueFull
                    && !stop.load(Ordering::SeqCst) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((e, _)) => {
                history.record(Event::SendFailed {
                    t_ms: history.now_ms(),
                    producer: name.into(),
                    topic: topic.into(),
                    partition,
                    value: value.into(),
                    error: format!("refused by the client: {e}"),
                });
                return false;
            }
        }
    }
}

fn producer_loop(k: usize, config: &LoadConfig, history: &Arc<History>, stop: &AtomicBool) {
    let client_config = producer_config(&config.bootstrap);
    let interval = Duration::from_secs(1) / config.rate_per_producer.max(1);
    let mut generation = 0;
    while !stop.load(Ordering::SeqCst) {
        generation += 1;
        let name = format!("p{k}.{generation}");
        let Some(producer) = make_producer(&client_config, history, &name) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let mut seq = 0u64;
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // A fatal error (e.g. the broker answered a sequence out of order) ends this
            // producer instance; a new one gets a new producer id.
            if let Some((code, reason)) = producer.client().fatal_error() {
                history.record(Event::ClientError {
                    t_ms: history.now_ms(),
                    error: format!("{name}: {code:?} {reason}"),
                });
                break;
            }
            let partition = (seq % config.partitions as u64) as i32;
            let value = format!("{name}-{seq}");
            seq += 1;
            history.record(Event::Send {
                t_ms: history.now_ms(),
                producer: name.clone(),
                topic: config.topic.clone(),
                partition,
                value: value.clone(),
                transactional: false,
            });
            send(
                &producer,
                history,
                &name,
                &config.topic,
                partition,
                &value,
                stop,
            );
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        // Bounded: what is still queued after this is reported as failed by the drop.
        let _ = producer.flush(Duration::from_secs(60));
    }
}

fn consumer_loop(k: usize, config: &LoadConfig, history: &Arc<History>, stop: &AtomicBool) {
    let name = format!("c{k}");
    let mut c = base_config(&config.bootstrap);
    c.set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    let consumer: BaseConsumer = match c.create() {
        Ok(consumer) => consumer,
        Err(_) => return,
    };
    let mut topics = vec![config.topic.as_str()];
    if let Some(t) = &config.txn_topic {
        topics.push(t.as_str());
    }
    if consumer.subscribe(&topics).is_err() {
        return;
    }
    let mut last_commit = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            history.record(Event::Read {
                t_ms: history.now_ms(),
                reader: name.clone(),
                isolation: Isolation::ReadCommitted,
                final_read: false,
                topic: m.topic().into(),
                partition: m.partition(),
                offset: m.offset(),
                value: payload(&m),
            });
        }
        if stopping || last_commit.elapsed() > Duration::from_secs(1) {
            last_commit = Instant::now();
            commit_positions(&consumer, history);
        }
        if stopping {
            break;
        }
    }
}

/// Commits the consumer's positions synchronously and records the acked commit.
fn commit_positions(consumer: &BaseConsumer, history: &History) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for e in positions.elements() {
        if let Offset::Offset(o) = e.offset() {
            let _ = tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if consumer.commit(&tpl, CommitMode::Sync).is_ok() {
        let t_ms = history.now_ms();
        for e in tpl.elements() {
            if let Offset::Offset(offset) = e.offset() {
                history.record(Event::CommitAcked {
                    t_ms,
                    group: GROUP.into(),
                    topic: e.topic().into(),
                    partition: e.partition(),
                    offset,
                });
            }
        }
    }
}

fn txn_loop(config: &LoadConfig, history: &Arc<History>, stop: &AtomicBool) {
    let topic = config.txn_topic.clone().expect("a transactional topic");
    let mut rng = fastrand::Rng::with_seed(config.seed ^ 0x7478);
    let mut client_config = producer_config(&config.bootstrap);
    client_config
        .set("transactional.id", "chaos-tx")
        .set("transaction.timeout.ms", "10000")
        // librdkafka requires a record's delivery timeout to fit in the transaction's.
        .set("message.timeout.ms", "10000");
    let timeout = Duration::from_secs(20);
    let mut generation = 0;
    while !stop.load(Ordering::SeqCst) {
        generation += 1;
        let name = format!("tx.{generation}");
        let Some(producer) = make_producer(&client_config, history, &name) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        if let Err(e) = producer.init_transactions(timeout) {
            history.record(Event::ClientError {
                t_ms: history.now_ms(),
                error: format!("{name}: init_transactions: {e}"),
            });
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = producer.begin_transaction() {
                history.record(Event::ClientError {
                    t_ms: history.now_ms(),
                    error: format!("{name}: begin_transaction: {e}"),
                });
                break;
            }
            let mut values = Vec::new();
            for _ in 0..TXN_RECORDS {
                let partition = rng.i32(0..config.partitions);
                let value = format!("{name}-{seq}");
                seq += 1;
                history.record(Event::Send {
                    t_ms: history.now_ms(),
                    producer: name.clone(),
                    topic: topic.clone(),
                    partition,
                    value: value.clone(),
                    transactional: true,
                });
                values.push(value.clone());
                send(&producer, history, &name, &topic, partition, &value, stop);
            }
            let abort = rng.u8(0..4) == 0;
            let (outcome, usable) = if abort {
                match producer.abort_transaction(timeout) {
                    Ok(()) => (TxnOutcome::Aborted, true),
                    Err(_) => (TxnOutcome::Unknown, false),
                }
            } else {
                match producer.commit_transaction(timeout) {
                    Ok(()) => (TxnOutcome::Committed, true),
                    Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                        history.record(Event::ClientError {
                            t_ms: history.now_ms(),
                            error: format!("{name}: commit_transaction (abortable): {e}"),
                        });
                        match producer.abort_transaction(timeout) {
                            Ok(()) => (TxnOutcome::Aborted, true),
                            Err(_) => (TxnOutcome::Unknown, false),
                        }
                    }
                    Err(_) => (TxnOutcome::Unknown, false),
                }
            };
            history.record(Event::TxnEnd {
                t_ms: history.now_ms(),
                producer: name.clone(),
                outcome,
                values,
            });
            if !usable {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Creates the topics (replication factor = brokers, `min.insync.replicas` = majority),
/// retrying while the cluster settles.
pub fn create_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
    brokers: usize,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
        .create()
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let min_isr = (brokers / 2 + 1).to_string();
    let started = Instant::now();
    for topic in topics {
        loop {
            let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(brokers as i32))
                .set("min.insync.replicas", &min_isr);
            let result = runtime.block_on(admin.create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ));
            match result {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(_)) => break,
                    Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => break,
                    other if started.elapsed() > Duration::from_secs(60) => {
                        return Err(Error::Kafka(format!("create {topic}: {other:?}")));
                    }
                    _ => {}
                },
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    return Err(Error::Kafka(format!("create {topic}: {e}")));
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// Partition -> (leader, ISR size) of `topic`, as the metadata says now.
pub fn partition_state(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, (i32, usize)>, Error> {
    let consumer: BaseConsumer = base_config(bootstrap)
        .create()
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let mut state = BTreeMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            if p.error().is_none() {
                state.insert(p.id(), (p.leader(), p.isr().len()));
            }
        }
    }
    Ok(state)
}

/// Reads `topics` whole, from offset 0 to the high watermark, recording every record as
/// part of the final read. Returns the partitions it could not finish before `deadline`.
pub fn final_read(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
    isolation: Isolation,
    history: &History,
    deadline: Duration,
) -> Result<Vec<(String, i32)>, Error> {
    let reader = match isolation {
        Isolation::ReadCommitted => "final-read-committed",
        Isolation::ReadUncommitted => "final-read-uncommitted",
    };
    let mut c = base_config(bootstrap);
    c.set("group.id", reader)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        );
    let consumer: BaseConsumer = c.create().map_err(|e| Error::Kafka(e.to_string()))?;
    let started = Instant::now();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in topics {
        for p in 0..partitions {
            let high = loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                    Ok((_, high)) => break high,
                    Err(e) if started.elapsed() > deadline => {
                        return Err(Error::Kafka(format!("watermarks of {topic}/{p}: {e}")));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(500)),
                }
            };
            ends.insert((topic.to_string(), p), high);
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let mut open: BTreeMap<(String, i32), i64> = ends
        .iter()
        .filter(|(_, high)| **high > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    while !open.is_empty() && started.elapsed() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                history.record(Event::Read {
                    t_ms: history.now_ms(),
                    reader: reader.into(),
                    isolation,
                    final_read: true,
                    topic: key.0.clone(),
                    partition: key.1,
                    offset: m.offset(),
                    value: payload(&m),
                });
                if open.get(&key).is_some_and(|high| m.offset() + 1 >= *high) {
                    open.remove(&key);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // End of what this isolation level can read: for read_committed that is the
                // last stable offset, which the finished load has brought to the end.
                let done: Vec<_> = open.keys().filter(|(_, q)| *q == p).cloned().collect();
                if let Ok(positions) = consumer.position() {
                    for key in done {
                        let reached = positions
                            .find_partition(&key.0, key.1)
                            .and_then(|e| e.offset().to_raw())
                            .is_some_and(|pos| pos >= ends[&key]);
                        if reached {
                            open.remove(&key);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for ((topic, partition), end_offset) in &ends {
        history.record(Event::FinalReadEnd {
            t_ms: history.now_ms(),
            reader: reader.into(),
            isolation,
            topic: topic.clone(),
            partition: *partition,
            end_offset: *end_offset,
        });
    }
    Ok(open.into_keys().collect())
}

/// Reads back the group's committed offsets and records them.
pub fn fetch_committed(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
    history: &History,
) -> Result<(), Error> {
    let mut c = base_config(bootstrap);
    c.set("group.id", GROUP).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(|e| Error::Kafka(e.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(20))
        .map_err(|e| Error::Kafka(e.to_string()))?;
    for e in committed.elements() {
        if let Offset::Offset(offset) = e.offset() {
            history.record(Event::CommittedFetched {
                t_ms: history.now_ms(),
                group: GROUP.into(),
                topic: e.topic().into(),
                partition: e.partition(),
                offset,
            });
        }
    }
    Ok(())
}
