//! [`Producer`]: batches records per partition, compresses each batch, and
//! sends one Produce request per leader.
//!
//! A background task owns the [`Client`] and the open batches. Callers hand it
//! records through a bounded channel (so a fast caller is slowed down rather
//! than buffering without limit) and get a [`DeliveryFuture`] per record that
//! resolves to its offset or its error. A batch is sent when it reaches
//! `batch_bytes_max`, when its oldest record is `linger_ms` old, on
//! [`Producer::flush`], or on [`Producer::close`]. When one batch is due, every
//! open batch goes out with it: one request per leader carries them all.
//!
//! Retriable errors (leader moves, a topic still being created) are retried
//! after a metadata refresh, at most `retries` times. Without an idempotent
//! producer id a retry after a lost response can duplicate a batch, as with
//! Kafka's non-idempotent producer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_protocol::compression::Compression;
use weir_protocol::messages::produce;
use weir_protocol::record::{Record, RecordBatchBuilder, RecordHeader};

use crate::client::Client;
use crate::error::ClientError;
use crate::retry::RetryPolicy;

/// How many replicas must have a batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: the broker sends no response; offsets are unknown (-1).
    None,
    /// The leader has written it (and, in Weir, fsynced it).
    Leader,
    /// Every in-sync replica has it.
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses "0", "1", "-1" or "all".
    pub fn parse(s: &str) -> Option<Acks> {
        match s {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "-1" | "all" => Some(Acks::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    pub compression: Compression,
    /// How long a batch may wait for more records before it is sent.
    pub linger_ms: u64,
    /// A batch is sent once its estimated size reaches this.
    pub batch_bytes_max: usize,
    /// Broker-side timeout for acks=all.
    pub request_timeout_ms: i32,
    /// Retries of a failed batch (retriable errors only).
    pub retries: u32,
    /// The first pause before a retry; later pauses double, with jitter.
    pub retry_backoff_ms: u64,
    /// Cap on one pause (Kafka's retry.backoff.max.ms).
    pub retry_backoff_max_ms: u64,
    /// Records that may wait in the channel to the background task.
    pub queue_records_max: usize,
    /// Whether sending to a missing topic may auto-create it.
    pub allow_auto_topic_creation: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            compression: Compression::None,
            linger_ms: 5,
            batch_bytes_max: 1024 * 1024,
            request_timeout_ms: 30_000,
            retries: 6,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            queue_records_max: 10_000,
            allow_auto_topic_creation: true,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: by key hash (murmur2, as Kafka's default partitioner), or a
    /// sticky partition per batch for keyless records.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
    /// `None`: now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    /// -1 with acks=0.
    pub offset: i64,
    pub timestamp_ms: i64,
}

type DeliveryResult = Result<RecordMetadata, ClientError>;

/// Resolves when the record's batch has been acknowledged (or has failed).
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<DeliveryResult>);

impl DeliveryFuture {
    /// The outcome if it is already known, without waiting.
    pub fn try_take(&mut self) -> Option<DeliveryResult> {
        match self.0.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(ClientError::ProducerClosed)),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = DeliveryResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DeliveryResult> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::ProducerClosed)))
    }
}

enum Command {
    Send(ProducerRecord, oneshot::Sender<DeliveryResult>),
    Flush(oneshot::Sender<()>),
}

/// A batching producer. Create it inside a tokio runtime.
#[derive(Debug)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<Client>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.queue_records_max.max(1));
        let worker = Worker {
            client,
            config,
            batches: HashMap::new(),
            sticky: HashMap::new(),
            sticky_seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        };
        Producer {
            tx,
            task: tokio::spawn(worker.run(rx)),
        }
    }

    /// Queues a record; waits only if the queue is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Send(record, tx))
            .await
            .map_err(|_| ClientError::ProducerClosed)?;
        Ok(DeliveryFuture(rx))
    }

    /// Sends every queued record and waits until all have been answered.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| ClientError::ProducerClosed)?;
        rx.await.map_err(|_| ClientError::ProducerClosed)
    }

    /// Flushes, stops the background task and returns the client.
    pub async fn close(self) -> Result<Client, ClientError> {
        drop(self.tx);
        self.task.await.map_err(|_| ClientError::ProducerClosed)
    }
}

/// Records of one partition waiting to be sent.
struct OpenBatch {
    records: Vec<Record>,
    waiters: Vec<(oneshot::Sender<DeliveryResult>, i64)>,
    base_timestamp_ms: i64,
    bytes_estimate: usize,
    opened_at: Instant,
    /// Built once, so a retry does not compress again.
    encoded: Option<Bytes>,
}

/// An open batch with the partition it belongs to.
type PartitionBatch = ((String, i32), OpenBatch);

struct Worker {
    client: Client,
    config: ProducerConfig,
    batches: HashMap<(String, i32), OpenBatch>,
    /// Partition keyless records of a topic go to until the next send.
    sticky: HashMap<String, i32>,
    sticky_seed: u32,
}

/// Encoded-size guess for batching decisions: fields plus varint overhead.
fn record_bytes_estimate(r: &ProducerRecord) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + len(&h.value) + 4)
        .sum();
    len(&r.key) + len(&r.value) + headers + 20
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Client {
        loop {
            let deadline = self
                .batches
                .values()
                .map(|b| b.opened_at + Duration::from_millis(self.config.linger_ms))
                .min();
            tokio::select! {
                // Queued records first, so that everything already waiting
                // joins the current batches before a linger deadline fires.
                biased;
                command = rx.recv() => match command {
                    Some(Command::Send(record, tx)) => self.append(record, tx).await,
                    Some(Command::Flush(ack)) => {
                        self.send_all().await;
                        let _ = ack.send(());
                    }
                    None => {
                        self.send_all().await;
                        return self.client;
                    }
                },
                () = sleep_until_opt(deadline) => self.send_all().await,
            }
        }
    }

    async fn choose_partition(&mut self, record: &ProducerRecord) -> Result<i32, ClientError> {
        let info = self
            .client
            .topic(&record.topic, self.config.allow_auto_topic_creation)
            .await?;
        let count = i32::try_from(info.partitions.len()).unwrap_or(i32::MAX);
        if count == 0 {
            return Err(ClientError::NoLeader {
                topic: record.topic.clone(),
                partition: -1,
            });
        }
        if let Some(p) = record.partition {
            if p < 0 || p >= count {
                return Err(ClientError::UnknownPartition {
                    topic: record.topic.clone(),
                    partition: p,
                    partition_count: info.partitions.len(),
                });
            }
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok((murmur2(key) & 0x7fff_ffff) % count);
        }
        let seed = self.sticky_seed;
        let p = *self
            .sticky
            .entry(record.topic.clone())
            .or_insert_with(|| (seed % count.unsigned_abs()) as i32);
        Ok(p.rem_euclid(count))
    }

    async fn append(&mut self, record: ProducerRecord, tx: oneshot::Sender<DeliveryResult>) {
        let partition = match self.choose_partition(&record).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let size = record_bytes_estimate(&record);
        let key = (record.topic.clone(), partition);
        if self.batches.get(&key).is_some_and(|b| {
            !b.records.is_empty() && b.bytes_estimate + size > self.config.batch_bytes_max
        }) {
            self.send_all().await;
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let batch = self.batches.entry(key).or_insert_with(|| OpenBatch {
            records: Vec::new(),
            waiters: Vec::new(),
            base_timestamp_ms: timestamp_ms,
            bytes_estimate: 0,
            opened_at: Instant::now(),
            encoded: None,
        });
        let offset_delta = i32::try_from(batch.records.len()).unwrap_or(i32::MAX);
        batch.records.push(Record {
            offset_delta,
            timestamp_delta: timestamp_ms.saturating_sub(batch.base_timestamp_ms),
            key: record.key,
            value: record.value,
            headers: record.headers,
        });
        batch.waiters.push((tx, timestamp_ms));
        batch.bytes_estimate += size;
        if batch.bytes_estimate >= self.config.batch_bytes_max {
            self.send_all().await;
        }
    }

    /// Sends every open batch, retrying retriable failures, and resolves
    /// every waiter.
    async fn send_all(&mut self) {
        if self.batches.is_empty() {
            return;
        }
        // Keyless records move to another partition for the next batch.
        self.sticky_seed = self.sticky_seed.wrapping_add(1);
        let sticky_topics: Vec<String> = self.sticky.keys().cloned().collect();
        for topic in sticky_topics {
            if let Some(p) = self.sticky.get_mut(&topic) {
                *p = p.wrapping_add(1);
            }
        }
        let mut pending: Vec<PartitionBatch> = self.batches.drain().collect();
        let mut backoff = RetryPolicy {
            initial_backoff_ms: self.config.retry_backoff_ms,
            max_backoff_ms: self.config.retry_backoff_max_ms,
            retries_max: self.config.retries as usize,
            total_backoff_ms_max: u64::try_from(self.config.request_timeout_ms).unwrap_or(30_000),
        }
        .backoff();
        let mut next_delay = backoff.next_delay();
        while !pending.is_empty() {
            let may_retry = next_delay.is_some();
            let mut retry = Vec::new();
            let mut by_leader: BTreeMap<i32, Vec<PartitionBatch>> = BTreeMap::new();
            for (key, batch) in pending {
                match self
                    .client
                    .leader_for(&key.0, key.1, self.config.allow_auto_topic_creation)
                    .await
                {
                    Ok(leader) => by_leader.entry(leader).or_default().push((key, batch)),
                    Err(e) if may_retry && e.is_retriable() => {
                        self.client.invalidate_topic(&key.0);
                        retry.push((key, batch));
                    }
                    Err(e) => fail(batch, &e),
                }
            }
            for (leader, items) in by_leader {
                retry.extend(self.send_to_leader(leader, items, may_retry).await);
            }
            pending = retry;
            if let (false, Some(delay)) = (pending.is_empty(), next_delay) {
                tokio::time::sleep(delay).await;
                next_delay = backoff.next_delay();
            }
        }
    }

    /// Sends one request; returns the batches to retry.
    async fn send_to_leader(
        &mut self,
        leader: i32,
        items: Vec<PartitionBatch>,
        may_retry: bool,
    ) -> Vec<PartitionBatch> {
        let mut items = items;
        let mut ready = Vec::with_capacity(items.len());
        for (key, mut batch) in items.drain(..) {
            if batch.encoded.is_none() {
                let mut builder = RecordBatchBuilder::new(self.config.compression)
                    .base_timestamp(batch.base_timestamp_ms);
                for r in batch.records.drain(..) {
                    builder.push(r);
                }
                match builder.build() {
                    Ok(bytes) => batch.encoded = Some(bytes),
                    Err(e) => {
                        fail(batch, &e.into());
                        continue;
                    }
                }
            }
            ready.push((key, batch));
        }
        if ready.is_empty() {
            return Vec::new();
        }
        let mut topic_data: Vec<produce::TopicProduceData> = Vec::new();
        for ((topic, partition), batch) in &ready {
            let data = produce::PartitionProduceData {
                index: *partition,
                records: batch.encoded.clone(),
            };
            match topic_data.iter_mut().find(|t| &t.name == topic) {
                Some(t) => t.partition_data.push(data),
                None => topic_data.push(produce::TopicProduceData {
                    name: topic.clone(),
                    partition_data: vec![data],
                    ..Default::default()
                }),
            }
        }
        let request = produce::ProduceRequest {
            transactional_id: None,
            acks: self.config.acks.wire(),
            timeout_ms: self.config.request_timeout_ms,
            topic_data,
        };
        if self.config.acks == Acks::None {
            let result = self
                .client
                .send_to_node_without_response(leader, &request)
                .await;
            for ((_, partition), batch) in ready {
                match &result {
                    Ok(()) => succeed(batch, partition, -1),
                    Err(e) => fail(batch, e),
                }
            }
            return Vec::new();
        }
        let extra_wait_ms = u64::try_from(self.config.request_timeout_ms).unwrap_or(0);
        let response = match self
            .client
            .send_to_node(leader, &request, extra_wait_ms)
            .await
        {
            Ok(r) => r,
            Err(e) if may_retry && e.is_retriable() => {
                for ((topic, _), _) in &ready {
                    self.client.invalidate_topic(topic);
                }
                return ready;
            }
            Err(e) => {
                for (_, batch) in ready {
                    fail(batch, &e);
                }
                return Vec::new();
            }
        };
        let mut retry = Vec::new();
        for ((topic, partition), batch) in ready {
            let found = response
                .responses
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition);
            let Some(p) = found else {
                fail(
                    batch,
                    &ClientError::Protocol {
                        addr: String::new(),
                        detail: format!("Produce response lacks {topic}-{partition}"),
                    },
                );
                continue;
            };
            match ClientError::check(p.error_code, p.error_message.as_deref(), || {
                format!("produce to {topic}-{partition}")
            }) {
                Ok(()) => {
                    let log_append_time_ms = p.log_append_time_ms;
                    let base_offset = p.base_offset;
                    succeed_with_time(batch, partition, base_offset, log_append_time_ms);
                }
                Err(e) if may_retry && e.is_retriable() => {
                    self.client.invalidate_topic(&topic);
                    retry.push(((topic, partition), batch));
                }
                Err(e) => fail(batch, &e),
            }
        }
        retry
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn fail(batch: OpenBatch, error: &ClientError) {
    for (tx, _) in batch.waiters {
        let _ = tx.send(Err(error.clone()));
    }
}

fn succeed(batch: OpenBatch, partition: i32, base_offset: i64) {
    succeed_with_time(batch, partition, base_offset, -1);
}

/// `log_append_time_ms` is -1 unless the topic uses LogAppendTime.
fn succeed_with_time(batch: OpenBatch, partition: i32, base_offset: i64, log_append_time_ms: i64) {
    for (i, (tx, timestamp_ms)) in batch.waiters.into_iter().enumerate() {
        let offset = if base_offset < 0 {
            -1
        } else {
            base_offset.saturating_add(i as i64)
        };
        let timestamp_ms = if log_append_time_ms >= 0 {
            log_append_time_ms
        } else {
            timestamp_ms
        };
        let _ = tx.send(Ok(RecordMetadata {
            partition,
            offset,
            timestamp_ms,
        }));
    }
}

/// Kafka's murmur2 (the default partitioner's key hash), so that keyed
/// records land on the same partition as with Kafka's Java client.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap_or([0; 4]));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Values from Kafka's own partitioner tests.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn acks_parse_accepts_kafka_spellings() {
        assert_eq!(Acks::parse("all"), Some(Acks::All));
        assert_eq!(Acks::parse("-1"), Some(Acks::All));
        assert_eq!(Acks::parse("0"), Some(Acks::None));
        assert_eq!(Acks::parse("2"), None);
    }

    #[test]
    fn offsets_are_assigned_per_record_from_the_base_offset() {
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let batch = OpenBatch {
            records: vec![],
            waiters: vec![(tx1, 10), (tx2, 11)],
            base_timestamp_ms: 10,
            bytes_estimate: 0,
            opened_at: Instant::now(),
            encoded: None,
        };
        succeed(batch, 3, 100);
        assert_eq!(
            rx1.try_recv().unwrap().unwrap(),
            RecordMetadata {
                partition: 3,
                offset: 100,
                timestamp_ms: 10
            }
        );
        assert_eq!(rx2.try_recv().unwrap().unwrap().offset, 101);
    }
}
