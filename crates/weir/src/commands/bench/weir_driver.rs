//! The `weir-client` driver: its batching `Producer` (one delivery future per
//! record, awaited in send order by a collector task) and `Client::fetch_many`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use tokio::sync::mpsc;
use weir_client::{
    Client, ClientConfig, DeliveryFuture, FetchPosition, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord,
};

use super::{
    BenchArgs, E2E_DRAIN_TIMEOUT, Latencies, Measured, Pacer, StopAt, Workload, after_warmup,
    payload, read_stamp, stamp,
};

/// Delivery futures waiting for the collector; bounds memory when the
/// broker is slower than the sender.
const PENDING_DELIVERIES_MAX: usize = 100_000;
/// How long a fetch may wait at the broker for data.
const FETCH_WAIT_MS: i32 = 100;
/// A consumer that receives nothing for this long has stalled.
const CONSUME_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    match args.workload {
        Workload::Produce => Ok(produce(args.clone(), stop, Instant::now(), false, None)
            .await?
            .into_measured()),
        Workload::Consume => consume(args, partitions, stop).await,
        Workload::E2e => e2e(args, partitions, stop).await,
    }
}

fn client_config(args: &BenchArgs) -> ClientConfig {
    let mut config = args.connect.client_config();
    config.connection.client_id = "weir-bench".to_owned();
    config
}

#[derive(Default)]
struct Acked {
    latencies: Option<Latencies>,
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
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

async fn produce(
    args: BenchArgs,
    stop: StopAt,
    start: Instant,
    stamped: bool,
    sent_total: Option<Arc<AtomicU64>>,
) -> anyhow::Result<Acked> {
    let client = Client::connect(client_config(&args)).await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks,
            compression: args.compression,
            linger_ms: args.linger_ms,
            batch_bytes_max: args.batch_size,
            queue_records_max: args.queue_records_max,
            ..ProducerConfig::default()
        },
    );
    let (tx, mut rx) = mpsc::channel::<(DeliveryFuture, Duration)>(PENDING_DELIVERIES_MAX);
    let warmup_s = args.warmup_s;
    let record_bytes = args.record_size as u64;
    // Futures resolve batch by batch, so awaiting them in send order sees
    // each one within a scheduling delay of its ack.
    let collector = tokio::spawn(async move {
        let mut acked = Acked::default();
        while let Some((delivery, sent)) = rx.recv().await {
            let result = delivery.await;
            let now = start.elapsed();
            match result {
                Ok(_) => {
                    acked.records += 1;
                    acked.bytes += record_bytes;
                    acked.last_ack = now;
                    if sent.as_secs_f64() >= warmup_s {
                        acked
                            .latencies
                            .get_or_insert_with(Latencies::new)
                            .record(now.saturating_sub(sent));
                    }
                }
                Err(e) => {
                    acked.errors += 1;
                    if acked.first_error.is_none() {
                        acked.first_error = Some(e.to_string());
                    }
                }
            }
        }
        acked
    });
    let template = payload(args.record_size);
    let shared = Bytes::from(template.clone());
    let pacer = Pacer::new(start, args.target_rate);
    let mut sent: u64 = 0;
    while !stop.reached(sent, start.elapsed()) {
        if let Some(wait) = pacer.wait_before(sent) {
            tokio::time::sleep(wait).await;
        }
        let since_start = start.elapsed();
        let value = if stamped {
            let mut value = template.clone();
            stamp(&mut value, since_start);
            Bytes::from(value)
        } else {
            shared.clone()
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            value: Some(value),
            ..ProducerRecord::default()
        };
        let delivery = producer.send(record).await.context("queueing a record")?;
        if tx.send((delivery, since_start)).await.is_err() {
            bail!("the delivery collector stopped");
        }
        sent += 1;
    }
    if let Some(total) = &sent_total {
        total.store(sent, Ordering::Release);
    }
    drop(tx);
    producer.close().await.context("closing the producer")?;
    collector.await.context("delivery collector")
}

/// Each partition's (position, end), for partitions that have anything
/// between `from` and their high watermark.
async fn positions(
    client: &mut Client,
    args: &BenchArgs,
    partitions: usize,
    from: OffsetSpec,
) -> anyhow::Result<(Vec<FetchPosition>, Vec<i64>)> {
    let mut positions = Vec::new();
    let mut ends = Vec::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let start = client.list_offsets(&args.topic, p, from).await?.offset;
        let end = client
            .list_offsets(&args.topic, p, OffsetSpec::Latest)
            .await?
            .offset;
        positions.push(FetchPosition {
            topic: args.topic.clone(),
            partition: p,
            offset: start,
        });
        ends.push(end);
    }
    Ok((positions, ends))
}

async fn consume(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    let mut client = Client::connect(client_config(args)).await?;
    let (positions, ends) = positions(&mut client, args, partitions, OffsetSpec::Earliest).await?;
    // The end is fixed now: read what is stored, not what arrives later.
    let (mut positions, mut ends): (Vec<FetchPosition>, Vec<i64>) = positions
        .into_iter()
        .zip(ends)
        .filter(|(pos, end)| pos.offset < *end)
        .unzip();
    let mut measured = Measured::default();
    let start = Instant::now();
    let mut last_receipt = Instant::now();
    'outer: while !positions.is_empty() {
        let results = client
            .fetch_many(&positions, args.fetch_partition_bytes_max, FETCH_WAIT_MS)
            .await?;
        let mut done = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            let fetched = result?;
            let Some(end) = ends.get(i).copied() else {
                continue;
            };
            for record in &fetched.records {
                if record.offset >= end {
                    break;
                }
                measured.records += 1;
                measured.bytes += record_bytes(&record.key, &record.value);
                if stop.reached(measured.records, start.elapsed()) {
                    break 'outer;
                }
            }
            if !fetched.records.is_empty() {
                last_receipt = Instant::now();
            }
            if let Some(pos) = positions.get_mut(i) {
                pos.offset = fetched.next_offset;
                if pos.offset >= end {
                    done.push(i);
                }
            }
        }
        for i in done.into_iter().rev() {
            positions.remove(i);
            ends.remove(i);
        }
        if stop.reached(measured.records, start.elapsed()) {
            break;
        }
        if last_receipt.elapsed() > CONSUME_IDLE_TIMEOUT {
            bail!(
                "consumer stalled: nothing received for {CONSUME_IDLE_TIMEOUT:?} ({} records so far)",
                measured.records
            );
        }
    }
    measured.elapsed = start.elapsed();
    Ok(measured)
}

fn record_bytes(key: &Option<Bytes>, value: &Option<Bytes>) -> u64 {
    (key.as_ref().map_or(0, Bytes::len) + value.as_ref().map_or(0, Bytes::len)) as u64
}

/// Whether the run keeps every e2e sample, for `--plot`.
fn keep_series(args: &BenchArgs) -> bool {
    #[cfg(feature = "rdkafka-driver")]
    return args.plot.is_some();
    #[cfg(not(feature = "rdkafka-driver"))]
    {
        let _ = args;
        false
    }
}

async fn e2e(args: &BenchArgs, partitions: usize, stop: StopAt) -> anyhow::Result<Measured> {
    let mut client = Client::connect(client_config(args)).await?;
    // Start at the current ends before producing, so every record sent is
    // one this consumer will see.
    let (mut positions, _) = positions(&mut client, args, partitions, OffsetSpec::Latest).await?;
    let sent_total = Arc::new(AtomicU64::new(u64::MAX));
    let started_unix_ms = super::unix_ms_now();
    let start = Instant::now();
    let producer = tokio::spawn(produce(
        args.clone(),
        stop,
        start,
        true,
        Some(Arc::clone(&sent_total)),
    ));
    let mut latencies = Latencies::keeping_series(keep_series(args));
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
        let results = client
            .fetch_many(&positions, args.fetch_partition_bytes_max, FETCH_WAIT_MS)
            .await?;
        for (result, pos) in results.into_iter().zip(positions.iter_mut()) {
            let fetched = result?;
            let now = start.elapsed();
            for record in &fetched.records {
                let Some(sent) = record.value.as_deref().and_then(read_stamp) else {
                    continue;
                };
                measured.records += 1;
                measured.bytes += record_bytes(&record.key, &record.value);
                measured.elapsed = now;
                if after_warmup(args, sent) {
                    latencies.record_sent(sent, now.saturating_sub(sent));
                }
            }
            pos.offset = fetched.next_offset;
        }
    }
    let acked = producer.await.context("producer task")??;
    measured.latency = latencies.summary();
    measured.series = latencies.take_series();
    measured.started_unix_ms = started_unix_ms;
    measured.ack_latency = acked.latencies.and_then(|l| l.summary());
    measured.errors = acked.errors;
    measured.first_error = acked.first_error;
    Ok(measured)
}
