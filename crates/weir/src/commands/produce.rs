//! `weir produce TOPIC`: one record per stdin line.

use std::collections::VecDeque;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::AsyncBufReadExt as _;
use weir_client::{
    Acks, ClientError, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
    RecordHeader,
};

use super::{ConnectArgs, parse_key_value, per_second};

/// Deliveries awaited before more lines are read, bounding memory.
const PENDING_DELIVERIES_MAX: usize = 50_000;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP: the part before is the key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(long)]
    pub partition: Option<i32>,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Largest batch per partition, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    Acks::parse(s).ok_or_else(|| format!("acks must be 0, 1, -1 or all, got '{s}'"))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::ALL
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("compression must be none, gzip, snappy, lz4 or zstd, got '{s}'"))
}

/// Turns one input line into a record.
fn record_for_line(args: &ProduceArgs, line: &str, headers: &[RecordHeader]) -> ProducerRecord {
    let (key, value) = match args
        .key_separator
        .as_deref()
        .and_then(|sep| line.split_once(sep))
    {
        Some((k, v)) => (Some(Bytes::copy_from_slice(k.as_bytes())), v),
        None => (None, line),
    };
    ProducerRecord {
        topic: args.topic.clone(),
        partition: args.partition,
        key,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: headers.to_vec(),
        timestamp_ms: None,
    }
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

impl Tally {
    fn settle(&mut self, result: Result<weir_client::RecordMetadata, ClientError>) {
        match result {
            Ok(_) => self.delivered += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        linger_ms: args.linger_ms,
        batch_bytes_max: args.batch_bytes.max(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let headers: Vec<RecordHeader> = args
        .headers
        .iter()
        .map(|(k, v)| RecordHeader {
            key: k.clone(),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
        })
        .collect();
    let show_progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_progress = started;
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut tally = Tally::default();
    let mut sent: u64 = 0;
    let mut bytes: u64 = 0;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("could not read stdin")? {
        bytes += line.len() as u64;
        pending.push_back(
            producer
                .send(record_for_line(&args, &line, &headers))
                .await?,
        );
        sent += 1;
        while pending.len() > PENDING_DELIVERIES_MAX {
            if let Some(delivery) = pending.pop_front() {
                tally.settle(delivery.await);
            }
        }
        if show_progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\r{sent} records sent, {:.0} records/s   ",
                per_second(sent, started.elapsed())
            );
        }
    }
    producer.flush().await?;
    for delivery in pending {
        tally.settle(delivery.await);
    }
    producer.close().await?;
    let elapsed = started.elapsed();
    if show_progress && sent > 0 {
        eprintln!();
    }
    eprintln!(
        "produced {} records ({} bytes) to {} in {:.2} s: {:.0} records/s, {:.2} MB/s",
        tally.delivered,
        bytes,
        args.topic,
        elapsed.as_secs_f64(),
        per_second(tally.delivered, elapsed),
        per_second(bytes, elapsed) / 1e6,
    );
    if let Some(e) = tally.first_error {
        anyhow::bail!(
            "{} of {} records failed; first error: {e}",
            tally.failed,
            sent
        );
    }
    Ok(())
}
