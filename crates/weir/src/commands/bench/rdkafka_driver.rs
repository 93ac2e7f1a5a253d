//! The librdkafka driver: a `ThreadedProducer` fed through librdkafka's
//! batch produce API, whose delivery callback counts acks and times a sample
//! of them, and an assign()-only `BaseConsumer` (no consumer group is
//! needed, so this works on brokers without groups).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList, bindings as rdsys};

use super::{
    BenchArgs, E2E_DRAIN_TIMEOUT, Latencies, Measured, Pacer, StopAt, Workload, acks_name,
    after_warmup, payload, read_stamp, stamp,
};

/// How long a transactional call (init, commit) may take.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `flush` may take at the end of a produce run.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
/// A consumer that receives nothing for this long has stalled.
const CONSUME_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// librdkafka's queue staying full this long means the broker stopped
/// acknowledging (it died or hangs): the run fails instead of waiting for
/// message.timeout.ms to drain the queue record by record.
const PRODUCE_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Back-off when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);

pub fn run(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    match args.workload {
        Workload::Produce => {
            let start = Instant::now();
            let acked = produce_with(args, partitions, stop, start, false, None)?;
            Ok(acked.into_measured())
        }
        Workload::Consume => consume(args, partitions, stop),
        Workload::E2e => e2e(args, partitions, stop),
    }
}

fn base_config(args: &BenchArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", args.connect.bootstrap())
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
        .set(
            "enable.idempotence",
            // librdkafka requires idempotence for a transactional producer.
            if args.idempotent || args.transaction_records.is_some() {
                "true"
            } else {
                "false"
            },
        )
        // Bounded so a dead broker fails the run in seconds, not minutes.
        .set("message.timeout.ms", "30000");
    if args.transaction_records.is_some() {
        // One id per run, so a rerun never fences (or waits on) an old one.
        config.set(
            "transactional.id",
            format!("weir-bench-{}-{}", std::process::id(), args.topic),
        );
        // librdkafka wants message.timeout.ms (set above) within it.
        config.set("transaction.timeout.ms", "120000");
    }
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
    if let Some(isolation) = args.isolation {
        config.set("isolation.level", isolation.name());
    }
    if args.isolation.is_some() {
        // Transactional topics end with a marker, which no reader receives
        // as a record; the end-of-partition event (the fetch position at the
        // high watermark, or the last stable offset for read_committed) says
        // where the data ends instead.
        config.set("enable.partition.eof", "true");
    }
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
            ..Measured::default()
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

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        // Only timed records read the clock (see LATENCY_SAMPLE_EVERY).
        let timed = opaque
            .checked_sub(1)
            .map(|sent_ns| (Duration::from_nanos(sent_ns as u64), self.start.elapsed()));
        let mut acked = self.acked.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(message) => {
                acked.records += 1;
                acked.bytes += (message.payload_len() + message.key_len()) as u64;
                if let Some((sent, now)) = timed {
                    acked.last_ack = acked.last_ack.max(now);
                    if sent.as_secs_f64() >= self.warmup_s {
                        acked
                            .latencies
                            .get_or_insert_with(Latencies::new)
                            .record(now.saturating_sub(sent));
                    }
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

/// Records handed to librdkafka per `rd_kafka_produce_batch` call.
const PRODUCE_CHUNK_RECORDS: u64 = 512;
/// A throughput run times send → ack on one record in this many, as
/// kafka-producer-perf-test samples its latencies, so the sender does not
/// pay a clock read per record. e2e (stamped) runs time every record.
const LATENCY_SAMPLE_EVERY: u64 = 64;
/// librdkafka's `RD_KAFKA_PARTITION_UA`: the configured partitioner chooses.
const PARTITION_UNASSIGNED: i32 = -1;

/// A librdkafka topic handle for the batch produce API, the one librdkafka's
/// own rdkafka_performance tool uses. `BaseProducer::send` looks the topic up
/// by name (and builds a C string) per record and takes the partition lock
/// per record; the batch API does that, and its clock reads, once per chunk.
/// That client work, not the broker's, bounded the small-record cases.
struct TopicHandle(*mut rdsys::rd_kafka_topic_t);

impl TopicHandle {
    /// Must be dropped before `producer`, which owns the client it points into.
    fn new(
        producer: &ThreadedProducer<DeliveryContext>,
        topic: &str,
    ) -> anyhow::Result<TopicHandle> {
        let name = CString::new(topic).context("topic name has a NUL byte")?;
        // SAFETY: the client is alive for this call (borrowed from `producer`);
        // a null topic conf means librdkafka's defaults, and the name is copied.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        if rkt.is_null() {
            bail!("librdkafka refused a handle for topic {topic}");
        }
        Ok(TopicHandle(rkt))
    }

    /// Queues every message in `chunk` to `partition` (or to the partitioner's
    /// choice with `PARTITION_UNASSIGNED`), waiting while librdkafka's queue
    /// is full. `flags` 0 means librdkafka keeps the payload pointers (which
    /// must outlive delivery); `RD_KAFKA_MSG_F_COPY` copies them now.
    fn produce(
        &self,
        partition: i32,
        flags: i32,
        chunk: &mut [rdsys::rd_kafka_message_t],
    ) -> anyhow::Result<()> {
        let mut pending = chunk.len();
        let stalled_after = Instant::now() + PRODUCE_STALL_TIMEOUT;
        while pending > 0 {
            if Instant::now() > stalled_after {
                bail!(
                    "librdkafka's queue stayed full for {PRODUCE_STALL_TIMEOUT:?}: the broker stopped acknowledging records (is it down?)"
                );
            }
            let count = i32::try_from(pending).context("chunk too large")?;
            // SAFETY: the handle is live, and `chunk[..pending]` is a valid,
            // exclusively borrowed array that librdkafka only reads and
            // writes `err` in during the call.
            let queued = unsafe {
                rdsys::rd_kafka_produce_batch(self.0, partition, flags, chunk.as_mut_ptr(), count)
            };
            if usize::try_from(queued).ok() == Some(pending) {
                return Ok(());
            }
            // Keep the refused messages, in order, at the front for a retry.
            let mut kept = 0;
            for i in 0..pending {
                let err = chunk[i].err;
                if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    continue;
                }
                if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    bail!(
                        "librdkafka refused a record: {}",
                        RDKafkaErrorCode::from(err)
                    );
                }
                chunk[i].err = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
                chunk.swap(kept, i);
                kept += 1;
            }
            pending = kept;
            std::thread::sleep(QUEUE_FULL_BACKOFF);
        }
        Ok(())
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new and released exactly once,
        // before the producer (declared earlier) is dropped.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0) }
    }
}

/// A message for `rd_kafka_produce_batch`; `opaque` comes back to `delivery`.
fn batch_message(value: &[u8], key: &[u8], opaque: usize) -> rdsys::rd_kafka_message_t {
    rdsys::rd_kafka_message_t {
        err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        rkt: std::ptr::null_mut(),
        // Ignored: the partition is per call (no RD_KAFKA_MSG_F_PARTITION).
        partition: PARTITION_UNASSIGNED,
        // librdkafka never writes through the payload pointer.
        payload: value.as_ptr().cast_mut().cast(),
        len: value.len(),
        // Null for an empty key (keyless records); librdkafka never writes through it.
        key: if key.is_empty() {
            std::ptr::null_mut()
        } else {
            key.as_ptr().cast_mut().cast()
        },
        key_len: key.len(),
        offset: 0,
        _private: opaque as *mut std::ffi::c_void,
    }
}

/// The delivery opaque of a timed record: its send time + 1 ns (0 = untimed).
fn timed_opaque(since_start: Duration) -> usize {
    usize::try_from(since_start.as_nanos())
        .unwrap_or(usize::MAX - 1)
        .saturating_add(1)
}

/// Sends until `stop`, then flushes. With `stamped`, each value carries its
/// send time; `sent_total` is set when the last record has been queued.
fn produce_with(
    args: &BenchArgs,
    partitions: usize,
    stop: StopAt,
    start: Instant,
    stamped: bool,
    sent_total: Option<&AtomicU64>,
) -> anyhow::Result<Acked> {
    // Unstamped records point into `value` without a copy, so it is declared
    // before `producer` and outlives it, even when an error return drops the
    // producer with records still queued. `topic` is declared after it, so
    // it is released first.
    let mut value = payload(args.record_size);
    // Keys (--keys), like `value`, outlive the producer: librdkafka keeps pointers to them.
    let keys: Vec<Vec<u8>> = (0..args.keys)
        .map(|k| format!("key-{k:010}").into_bytes())
        .collect();
    let context = DeliveryContext {
        start,
        warmup_s: args.warmup_s,
        acked: Mutex::new(Acked::default()),
    };
    let producer: ThreadedProducer<DeliveryContext> = producer_config(args)
        .create_with_context(context)
        .context("creating the librdkafka producer")?;
    let topic = TopicHandle::new(&producer, &args.topic)?;
    let transaction_records = args.transaction_records;
    if transaction_records.is_some() {
        producer
            .init_transactions(TRANSACTION_CALL_TIMEOUT)
            .context("init_transactions")?;
        producer.begin_transaction().context("begin_transaction")?;
    }
    let mut in_transaction: u64 = 0;
    let pacer = Pacer::new(start, args.target_rate);
    // A stamped value changes per record, so librdkafka must copy it, one
    // record per call; otherwise every record points at the same `value`.
    let (flags, chunk_max) = if stamped || args.target_rate > 0 {
        (rdsys::RD_KAFKA_MSG_F_COPY, 1)
    } else {
        (0, PRODUCE_CHUNK_RECORDS)
    };
    let mut chunk = Vec::with_capacity(chunk_max as usize);
    // Sticky partitioning as KIP-480 does it: one partition gets a batch's
    // worth of records (batch.size), then the next in turn. Doing it here per
    // chunk spares librdkafka's per-record partitioner (and its clock read).
    // Paced and stamped runs leave the choice to librdkafka.
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    let batch_records = (args.batch_size / args.record_size.max(1)) as u64;
    let chunks_per_partition = (batch_records / chunk_max).max(1);
    let mut chunks: u64 = 0;
    let mut sent: u64 = 0;
    while !stop.reached(sent, start.elapsed()) {
        let mut count = stop
            .records
            .map_or(chunk_max, |n| chunk_max.min(n.saturating_sub(sent)));
        if let Some(n) = transaction_records {
            count = count.min(n - in_transaction);
        }
        if let Some(wait) = pacer.wait_before(sent) {
            std::thread::sleep(wait);
        }
        chunk.clear();
        for i in 0..count {
            let opaque = if stamped {
                let since_start = start.elapsed();
                stamp(&mut value, since_start);
                timed_opaque(since_start)
            } else if (sent + i) % LATENCY_SAMPLE_EVERY == 0 {
                timed_opaque(start.elapsed())
            } else {
                0
            };
            let key = match u64::try_from(keys.len()) {
                Ok(n) if n > 0 => keys
                    .get(usize::try_from((sent + i) % n).unwrap_or(0))
                    .map_or(&[][..], Vec::as_slice),
                _ => &[][..],
            };
            chunk.push(batch_message(&value, key, opaque));
        }
        let partition = if chunk_max == 1 {
            PARTITION_UNASSIGNED
        } else {
            i32::try_from((chunks / chunks_per_partition) % partitions).unwrap_or(0)
        };
        topic.produce(partition, flags, &mut chunk)?;
        chunks += 1;
        sent += count;
        if let Some(n) = transaction_records {
            in_transaction += count;
            if in_transaction == n {
                commit_transaction(&producer)?;
                producer.begin_transaction().context("begin_transaction")?;
                in_transaction = 0;
            }
        }
    }
    if transaction_records.is_some() {
        commit_transaction(&producer)?;
    }
    if let Some(total) = sent_total {
        total.store(sent, Ordering::Release);
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the librdkafka producer")?;
    let flushed = start.elapsed();
    drop(topic);
    let context = producer.context();
    let mut acked =
        std::mem::take(&mut *context.acked.lock().unwrap_or_else(PoisonError::into_inner));
    // Untimed acks leave no timestamp; every ack had arrived by `flushed`.
    acked.last_ack = acked.last_ack.max(flushed);
    Ok(acked)
}

/// Commits the open transaction through librdkafka's own call, which flushes
/// the transaction's records first, serving delivery reports as it waits.
/// rdkafka's `commit_transaction` flushes by polling for one event at a time
/// with the whole timeout, and this producer's polling thread takes those
/// events: each commit then waited ~120 ms, capping 100-record transactions
/// at ~800 records/s where confluent-kafka does ~34,000 against the same
/// broker.
fn commit_transaction(producer: &ThreadedProducer<DeliveryContext>) -> anyhow::Result<()> {
    let timeout_ms = i32::try_from(TRANSACTION_CALL_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the client is alive (borrowed from `producer`); a returned
    // error object is ours to read and destroy, exactly once.
    unsafe {
        let error = rdsys::rd_kafka_commit_transaction(producer.client().native_ptr(), timeout_ms);
        if !error.is_null() {
            let text = CStr::from_ptr(rdsys::rd_kafka_error_string(error))
                .to_string_lossy()
                .into_owned();
            rdsys::rd_kafka_error_destroy(error);
            bail!("commit_transaction: {text}");
        }
    }
    Ok(())
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
    let queue = ConsumerQueue::new(&consumer)?;
    let mut batch = vec![std::ptr::null_mut(); CONSUME_BATCH_RECORDS];
    let start = Instant::now();
    let mut measured = Measured::default();
    let mut idle_since: Option<Instant> = None;
    while !ends.is_empty() && !stop.reached(measured.records, start.elapsed()) {
        let received = queue.consume(&mut batch)?;
        let mut failure = None;
        for &ptr in received {
            // SAFETY: librdkafka filled `received` with valid messages that
            // we own until rd_kafka_message_destroy below.
            let message = unsafe { &*ptr };
            if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                // Only enabled with --isolation (see consumer_config).
                let p = message.partition;
                if ends.get(&p).is_some_and(|end| message.offset >= *end) {
                    ends.remove(&p);
                }
            } else if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                measured.records += 1;
                measured.bytes += (message.len + message.key_len) as u64;
                let p = message.partition;
                if ends.get(&p).is_some_and(|end| message.offset + 1 >= *end) {
                    ends.remove(&p);
                }
            } else if failure.is_none() {
                // SAFETY: errstr returns a NUL-terminated string owned by
                // the message, read before the message is destroyed.
                let text = unsafe { CStr::from_ptr(rdsys::rd_kafka_message_errstr(message)) };
                let text = text.to_string_lossy();
                if !text.contains("oordinator") {
                    failure = Some(format!("{} ({text})", RDKafkaErrorCode::from(message.err)));
                }
            }
            // SAFETY: each message is destroyed once, and not used after.
            unsafe { rdsys::rd_kafka_message_destroy(ptr) };
        }
        if let Some(failure) = failure {
            bail!("consumer error: {failure}");
        }
        if received.is_empty() {
            let now = Instant::now();
            if now.duration_since(*idle_since.get_or_insert(now)) > CONSUME_IDLE_TIMEOUT {
                bail!(
                    "consumer stalled: nothing received for {CONSUME_IDLE_TIMEOUT:?} ({} records so far)",
                    measured.records
                )
            }
        } else {
            idle_since = None;
        }
    }
    measured.elapsed = start.elapsed();
    Ok(measured)
}

/// Messages taken per `rd_kafka_consume_batch_queue` call.
const CONSUME_BATCH_RECORDS: usize = 1024;
/// How long one batch call waits for the first message.
const CONSUME_POLL_MS: i32 = 100;

/// The consumer's queue, read through librdkafka's batch API (as its own
/// rdkafka_performance tool reads). `BaseConsumer::poll` returns one message
/// per call through the event API, with an allocation and clock reads each;
/// at ~2M records/s of 1 KiB that per-call work starved the fetch thread.
struct ConsumerQueue(*mut rdsys::rd_kafka_queue_t);

impl ConsumerQueue {
    /// Must be dropped before `consumer`, which owns the client it refers to.
    fn new(consumer: &BaseConsumer) -> anyhow::Result<ConsumerQueue> {
        // SAFETY: the client is alive for this call; the returned reference
        // is released in Drop.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if queue.is_null() {
            bail!("librdkafka has no consumer queue (no group.id?)");
        }
        Ok(ConsumerQueue(queue))
    }

    /// Waits up to CONSUME_POLL_MS for messages; the caller must destroy
    /// every message in the returned prefix of `batch`.
    fn consume<'b>(
        &self,
        batch: &'b mut [*mut rdsys::rd_kafka_message_t],
    ) -> anyhow::Result<&'b [*mut rdsys::rd_kafka_message_t]> {
        // SAFETY: the queue is live and `batch` has room for `batch.len()`
        // pointers, which is all librdkafka writes.
        let count = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.0,
                CONSUME_POLL_MS,
                batch.as_mut_ptr(),
                batch.len(),
            )
        };
        let count = usize::try_from(count).map_err(|_| {
            anyhow::anyhow!(
                "rd_kafka_consume_batch_queue failed: {}",
                std::io::Error::last_os_error()
            )
        })?;
        Ok(&batch[..count.min(batch.len())])
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: the reference from rd_kafka_queue_get_consumer, released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

fn e2e(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    // Assign at the current ends before producing, so every record sent is
    // one this consumer will see.
    let (consumer, _) = assigned_consumer(args, partitions, |_, high| Offset::Offset(high))?;
    let sent_total = Arc::new(AtomicU64::new(u64::MAX));
    let started_unix_ms = super::unix_ms_now();
    let start = Instant::now();
    let producer = {
        let args = args.clone();
        let sent_total = Arc::clone(&sent_total);
        std::thread::spawn(move || {
            produce_with(&args, partitions, stop, start, true, Some(&sent_total))
        })
    };
    let mut latencies = Latencies::keeping_series(args.plot.is_some());
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
                    latencies.record_sent(sent, now.saturating_sub(sent));
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
    measured.series = latencies.take_series();
    measured.started_unix_ms = started_unix_ms;
    measured.ack_latency = acked.latencies.and_then(|l| l.summary());
    measured.errors = acked.errors;
    measured.first_error = acked.first_error;
    Ok(measured)
}
