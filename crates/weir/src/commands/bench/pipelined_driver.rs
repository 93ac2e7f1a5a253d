//! The `pipelined` driver: produce with Weir's wire codec and no client library, keeping up to
//! `--max-in-flight` Produce requests outstanding per connection whether or not the producer is
//! idempotent.
//!
//! Why it exists: librdkafka's idempotent producer keeps one request per partition in flight
//! once a batch holds five or more records (its cap, `RD_KAFKA_IDEMP_MAX_INFLIGHT`, counts
//! messages, not requests; librdkafka PR #4989 is open to change it), while Kafka's Java
//! producer pipelines up to five idempotent requests per partition. Against a broker that
//! syncs before it acknowledges, one request at a time is slower whatever the broker does, so
//! librdkafka cannot show what idempotence costs the broker. This driver sends the same
//! requests in both modes and differs only in the producer id and sequence numbers.
//!
//! Each partition gets one batch of `--batch-size` bytes of records, encoded once; every
//! request carries one batch (the partitions in turn) with its sequence number rewritten
//! (and its CRC recomputed). Record timestamps are the run's start. One task per partition
//! leader owns one connection to it. Any error in a response ends the run with that error:
//! after one, an idempotent producer's later sequence numbers would be refused anyway.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use weir_client::{Acks, Client, Connection, ConnectionOptions, ErrorCode, PendingResponse};
use weir_protocol::messages::init_producer_id::InitProducerIdRequest;
use weir_protocol::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};
use weir_protocol::record::{Record, RecordBatchBuilder, set_base_sequence};

use super::{BenchArgs, Latencies, Measured, StopAt, payload};

/// Kafka's Java producer default (`max.in.flight.requests.per.connection`), also the most an
/// idempotent producer may have outstanding per partition.
const IN_FLIGHT_DEFAULT: u32 = 5;
/// Bytes of one record's framing in a batch beside its value (length, attributes, deltas,
/// key and header counts), an upper estimate for sizing a batch.
const RECORD_OVERHEAD_BYTES: usize = 16;
/// The Produce timeout asked of the broker for acks=all.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Sequence numbers wrap to 0 after `i32::MAX`, as Kafka's do.
fn next_sequence(sequence: i32, records: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(records);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

/// One partition's encoded batch and where its producer's sequence stands.
struct PartitionLoad {
    partition: i32,
    batch: Bytes,
    records: i32,
    next_sequence: i32,
}

/// The producer id and epoch every batch carries (-1/-1 for a plain producer).
#[derive(Clone, Copy)]
struct ProducerIdentity {
    id: i64,
    epoch: i16,
}

pub async fn run(args: &BenchArgs, stop: StopAt) -> anyhow::Result<Measured> {
    if args.acks == Acks::None {
        bail!("--driver pipelined needs --acks 1 or all (it counts acknowledged records)");
    }
    let in_flight = args.max_in_flight.unwrap_or(IN_FLIGHT_DEFAULT).max(1) as usize;
    if args.idempotent && in_flight > IN_FLIGHT_DEFAULT as usize {
        bail!("an idempotent producer may have at most {IN_FLIGHT_DEFAULT} requests in flight");
    }
    let mut client = args.connect.connect().await?;
    let identity = if args.idempotent {
        init_producer_id(&mut client).await?
    } else {
        ProducerIdentity { id: -1, epoch: -1 }
    };
    let info = client
        .topic(&args.topic, false)
        .await
        .with_context(|| format!("looking up topic '{}'", args.topic))?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &info.partitions {
        by_leader.entry(p.leader_id).or_default().push(p.partition);
    }
    let records_per_batch =
        (args.batch_size / (args.record_size + RECORD_OVERHEAD_BYTES)).clamp(1, 100_000);
    let template = batch_template(args.record_size, records_per_batch, identity)?;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (leader, partitions) in by_leader {
        let addr = client
            .brokers()
            .find(|b| b.node_id == leader)
            .map(|b| b.addr())
            .with_context(|| format!("no address for leader {leader} of '{}'", args.topic))?;
        let loads = partitions
            .into_iter()
            .map(|partition| PartitionLoad {
                partition,
                batch: template.clone(),
                records: records_per_batch as i32,
                next_sequence: 0,
            })
            .collect();
        let job = LeaderJob {
            addr,
            topic: args.topic.clone(),
            acks: args.acks,
            identity,
            in_flight,
            record_bytes: args.record_size as u64,
            warmup_s: args.warmup_s,
            stop,
            start,
            loads,
        };
        tasks.push(tokio::spawn(job.run()));
    }
    let mut total = Measured::default();
    let mut latencies = Latencies::new();
    for task in tasks {
        let (m, l) = task.await.context("a produce task panicked")??;
        total.records += m.records;
        total.bytes += m.bytes;
        total.elapsed = total.elapsed.max(m.elapsed);
        latencies.add(&l);
    }
    total.latency = latencies.summary();
    Ok(total)
}

async fn init_producer_id(client: &mut Client) -> anyhow::Result<ProducerIdentity> {
    let response = client
        .send_any(&InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            producer_id: -1,
            producer_epoch: -1,
        })
        .await
        .context("InitProducerId")?;
    if response.error_code != 0 {
        bail!(
            "InitProducerId failed: {:?}",
            ErrorCode::from_code_or_unknown(response.error_code)
        );
    }
    Ok(ProducerIdentity {
        id: response.producer_id,
        epoch: response.producer_epoch,
    })
}

/// One batch of `records` values of `record_size` bytes, sequence 0.
fn batch_template(
    record_size: usize,
    records: usize,
    identity: ProducerIdentity,
) -> anyhow::Result<Bytes> {
    let value = Bytes::from(payload(record_size));
    let now_ms = i64::try_from(super::unix_ms_now()).unwrap_or(0);
    let sequence = if identity.id >= 0 { 0 } else { -1 };
    let mut builder = RecordBatchBuilder::new(weir_protocol::record::Compression::None)
        .producer(identity.id, identity.epoch, sequence)
        .base_timestamp(now_ms);
    for i in 0..records {
        builder.push(Record {
            offset_delta: i32::try_from(i).unwrap_or(i32::MAX),
            timestamp_delta: 0,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        });
    }
    Ok(builder.build()?)
}

struct LeaderJob {
    addr: String,
    topic: String,
    acks: Acks,
    identity: ProducerIdentity,
    in_flight: usize,
    record_bytes: u64,
    warmup_s: f64,
    stop: StopAt,
    start: Instant,
    loads: Vec<PartitionLoad>,
}

/// A request written and not yet answered: when, and how many records it carries.
struct Sent {
    pending: PendingResponse<ProduceRequest>,
    at: Duration,
    records: u64,
}

impl LeaderJob {
    async fn run(mut self) -> anyhow::Result<(Measured, Latencies)> {
        let mut loads = std::mem::take(&mut self.loads);
        if loads.is_empty() {
            return Ok((Measured::default(), Latencies::new()));
        }
        let mut conn = Connection::connect(
            &self.addr,
            ConnectionOptions {
                client_id: "weir-bench-pipelined".to_owned(),
                ..ConnectionOptions::default()
            },
        )
        .await?;
        let mut measured = Measured::default();
        let mut latencies = Latencies::new();
        let mut outstanding: VecDeque<Sent> = VecDeque::with_capacity(self.in_flight);
        let mut sent_records = 0u64;
        let mut turn = 0usize;
        loop {
            let elapsed = self.start.elapsed();
            let stopping = self.stop.reached(sent_records, elapsed);
            if !stopping && outstanding.len() < self.in_flight {
                let slot = turn % loads.len();
                let load = &mut loads[slot];
                turn += 1;
                let request = self.request_for(load)?;
                let records = load.records as u64;
                let pending = conn.write_request(&request).await?;
                outstanding.push_back(Sent {
                    pending,
                    at: self.start.elapsed(),
                    records,
                });
                sent_records += records;
                continue;
            }
            let Some(sent) = outstanding.pop_front() else {
                break;
            };
            let response = conn
                .read_response_with_extra_wait(sent.pending, PRODUCE_TIMEOUT_MS as u64)
                .await?;
            let acked_at = self.start.elapsed();
            for partition in response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
            {
                if partition.error_code != 0 {
                    bail!(
                        "partition {} of '{}' answered {:?}{}",
                        partition.index,
                        self.topic,
                        ErrorCode::from_code_or_unknown(partition.error_code),
                        partition
                            .error_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                }
            }
            measured.records += sent.records;
            measured.bytes += sent.records * self.record_bytes;
            measured.elapsed = acked_at;
            if sent.at.as_secs_f64() >= self.warmup_s {
                latencies.record(acked_at.saturating_sub(sent.at));
            }
        }
        Ok((measured, latencies))
    }

    /// The next Produce request of `load`'s partition, its sequence advanced.
    fn request_for(&self, load: &mut PartitionLoad) -> anyhow::Result<ProduceRequest> {
        let batch = if self.identity.id >= 0 {
            let mut b = BytesMut::from(&load.batch[..]);
            set_base_sequence(&mut b, load.next_sequence)?;
            load.next_sequence = next_sequence(load.next_sequence, load.records);
            b.freeze()
        } else {
            load.batch.clone()
        };
        Ok(ProduceRequest {
            transactional_id: None,
            acks: self.acks.wire(),
            timeout_ms: PRODUCE_TIMEOUT_MS,
            topic_data: vec![TopicProduceData {
                name: self.topic.clone(),
                partition_data: vec![PartitionProduceData {
                    index: load.partition,
                    records: Some(batch),
                }],
                ..Default::default()
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::next_sequence;

    #[test]
    fn sequences_wrap_to_zero_past_i32_max() {
        assert_eq!(next_sequence(0, 930), 930);
        assert_eq!(next_sequence(i32::MAX - 9, 10), 0);
        assert_eq!(next_sequence(i32::MAX - 9, 15), 5);
    }
}
