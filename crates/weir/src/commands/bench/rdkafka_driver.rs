//! The librdkafka driver: a `ThreadedProducer` whose delivery callback
//! records send → ack latency, and an assign()-only `BaseConsumer` (no
//! consumer group is needed, so this works on brokers without groups).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{
    BenchArgs, E2E_DRAIN_TIMEOUT, Latencies, Measured, Pacer, StopAt, Workload, acks_name,
    after_warmup, payload, read_stamp, stamp,
};

/// How long `flush` may take at the end of a produce run.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
/// A consumer that receives nothing for this long has stalled.
const CONSUME_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);

pub fn run(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    match args.workload {
        Workload::Produce => {
            let start = Instant::now();
            let acked = produce(args, stop, start, false)?;
            Ok(acked.into_measured())
        }
        Workload::Consume => consume(args, partitions, stop),
        Workload::E2e => e2e(args, partitions, stop),
    }
}

fn base_config(args: &BenchArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.connect.bootstrap)
        .set("client.id", "weir-bench")
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    config
}

fn apply_overrides(config: &mut ClientConfig, args: &BenchArgs) {
    for (k, v) in &args.rdkafka_overrides {
        config.set(k, v);
    }
}

fn producer_config(args: &BenchArgs) -> ClientConfig {
    let mut config = base_config(args);
    config
        .set("acks", acks_name(args.acks))
        .set("compression.codec", args.compression.name())
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        // A request carries one batch per partition; let it hold several.
        .set(
            "message.max.bytes",
            (args.batch_size.saturating_mul(4))
                .clamp(1_000_000, 100_000_000)
                .to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            args.queue_records_max.to_string(),
        )
        .set("queue.buffering.max.kbytes", "2097151")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "120000");
    let max_in_flight = args.max_in_flight;
    if let Some(n) = max_in_flight {
        config.set("max.in.flight.requests.per.connection", n.to_string());
    }
    apply_overrides(&mut config, args);
    config
}

fn consumer_config(args: &BenchArgs) -> ClientConfig {
    let mut config = base_config(args);
    config
        // librdkafka wants a group.id for its consumer queue; nothing is
        // joined or committed (assign() only).
        .set("group.id", format!("weir-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set(
            "max.partition.fetch.bytes",
            args.fetch_partition_bytes_max.to_string(),
        )
        .set("fetch.max.bytes", "67108864")
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "262144");
    apply_overrides(&mut config, args);
    config
}

/// What the delivery callback has seen.
#[derive(Default)]
struct Acked {
    latencies: Option<Latencies>,
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    /// When the last ack arrived, since the run's start.
    last_ack: Duration,
}

impl Acked {
    fn into_measured(self) -> Measured {
        Measured {
            records: self.records,
            bytes: self.bytes,
            elapsed: self.last_ack,
            latency: self.latencies.and_then(|l| l.summary()),
            ack_latency: None,
            errors: self.errors,
            first_error: self.first_error,
        }
    }
}

struct DeliveryContext {
    start: Instant,
    warmup_s: f64,
    acked: Mutex<Acked>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// The send time, in ns since the run's start.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.start.elapsed();
        let sent = Duration::from_nanos(sent_ns as u64);
        let mut acked = self.acked.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(message) => {
                acked.records += 1;
                acked.bytes += (message.payload_len() + message.key_len()) as u64;
                acked.last_ack = now;
                if sent.as_secs_f64() >= self.warmup_s {
                    acked
                        .latencies
                        .get_or_insert_with(Latencies::new)
                        .record(now.saturating_sub(sent));
                }
            }
            Err((e, _)) => {
                acked.errors += 1;
                if acked.first_error.is_none() {
                    acked.first_error = Some(e.to_string());
                }
            }
        }
    }
}

/// Sends until `stop`, then flushes. With `stamped`, each value carries its
/// send time; `sent_total` is set when the last record has been queued.
fn produce_with(
    args: &BenchArgs,
    stop: StopAt,
    start: Instant,
    stamped: bool,
    sent_total: Option<&AtomicU64>,
) -> anyhow::Result<Acked> {
    let context = DeliveryContext {
        start,
        warmup_s: args.warmup_s,
        acked: Mutex::new(Acked::default()),
    };
    let producer: ThreadedProducer<DeliveryContext> = producer_config(args)
        .create_with_context(context)
        .context("creating the librdkafka producer")?;
    let mut value = payload(args.record_size);
    let pacer = Pacer::new(start, args.target_rate);
    let mut sent: u64 = 0;
    while !stop.reached(sent, start.elapsed()) {
        if let Some(wait) = pacer.wait_before(sent) {
            std::thread::sleep(wait);
        }
        let since_start = start.elapsed();
        if stamped {
            stamp(&mut value, since_start);
        }
        let sent_ns = usize::try_from(since_start.as_nanos()).unwrap_or(usize::MAX);
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, sent_ns).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                }
                Err((e, _)) => bail!("librdkafka refused a record: {e}"),
            }
        }
        sent += 1;
    }
    if let Some(total) = sent_total {
        total.store(sent, Ordering::Release);
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the librdkafka producer")?;
    let context = producer.context();
    let acked = std::mem::take(&mut *context.acked.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(acked)
}

fn produce(args: &BenchArgs, stop: StopAt, start: Instant, stamped: bool) -> anyhow::Result<Acked> {
    produce_with(args, stop, start, stamped, None)
}

/// librdkafka reports the missing group coordinator as an error on a broker
/// without consumer groups; assign() does not need one.
fn is_coordinator_noise(e: &KafkaError) -> bool {
    e.to_string().contains("oordinator")
}

/// Creates a consumer assigned to every partition at `start(low, high)`;
/// returns it with each partition's (low, high) watermarks.
fn assigned_consumer(
    args: &BenchArgs,
    partitions: usize,
    start: impl Fn(i64, i64) -> Offset,
) -> anyhow::Result<(BaseConsumer, HashMap<i32, (i64, i64)>)> {
    let consumer: BaseConsumer = consumer_config(args)
        .create()
        .context("creating the librdkafka consumer")?;
    let mut watermarks = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, p, WATERMARK_TIMEOUT)
            .with_context(|| format!("watermarks of {}-{p}", args.topic))?;
        assignment.add_partition_offset(&args.topic, p, start(low, high))?;
        watermarks.insert(p, (low, high));
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    Ok((consumer, watermarks))
}

fn consume(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    let (consumer, watermarks) = assigned_consumer(args, partitions, |low, _| Offset::Offset(low))?;
    // The end is fixed now: read what is stored, not what arrives later.
    let mut ends: HashMap<i32, i64> = watermarks
        .into_iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (_, h))| (p, h))
        .collect();
    let start = Instant::now();
    let mut measured = Measured::default();
    let mut last_receipt = Instant::now();
    while !ends.is_empty() && !stop.reached(measured.records, start.elapsed()) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_receipt = Instant::now();
                measured.records += 1;
                measured.bytes += (message.payload_len() + message.key_len()) as u64;
                let p = message.partition();
                if ends.get(&p).is_some_and(|end| message.offset() + 1 >= *end) {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) if is_coordinator_noise(&e) => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            None if last_receipt.elapsed() > CONSUME_IDLE_TIMEOUT => {
                bail!(
                    "consumer stalled: nothing received for {CONSUME_IDLE_TIMEOUT:?} ({} records so far)",
                    measured.records
                )
            }
            None => {}
        }
    }
    measured.elapsed = start.elapsed();
    Ok(measured)
}

fn e2e(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    // Assign at the current ends before producing, so every record sent is
    // one this consumer will see.
    let (consumer, _) = assigned_consumer(args, partitions, |_, high| Offset::Offset(high))?;
    let sent_total = Arc::new(AtomicU64::new(u64::MAX));
    let start = Instant::now();
    let producer = {
        let args = args.clone();
        let sent_total = Arc::clone(&sent_total);
        std::thread::spawn(move || produce_with(&args, stop, start, true, Some(&sent_total)))
    };
    let mut latencies = Latencies::new();
    let mut measured = Measured::default();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let expected = sent_total.load(Ordering::Acquire);
        if measured.records >= expected {
            break;
        }
        if expected != u64::MAX {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + E2E_DRAIN_TIMEOUT);
            if Instant::now() > deadline {
                eprintln!(
                    "e2e: gave up waiting: received {} of {expected} records",
                    measured.records
                );
                break;
            }
        }
        if producer.is_finished() && expected == u64::MAX {
            break; // the producer failed; its error is reported below
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let now = start.elapsed();
                let Some(sent) = message.payload().and_then(read_stamp) else {
                    continue;
                };
                measured.records += 1;
                measured.bytes += (message.payload_len() + message.key_len()) as u64;
                measured.elapsed = now;
                if after_warmup(args, sent) {
                    latencies.record(now.saturating_sub(sent));
                }
            }
            Some(Err(e)) if is_coordinator_noise(&e) => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            None => {}
        }
    }
    let acked = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    measured.latency = latencies.summary();
    measured.ack_latency = acked.latencies.and_then(|l| l.summary());
    measured.errors = acked.errors;
    measured.first_error = acked.first_error;
    Ok(measured)
}
