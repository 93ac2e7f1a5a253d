//! `weir bench WORKLOAD`: throughput and latency of any Kafka-compatible
//! broker, in the style of kafka-producer-perf-test and the OpenMessaging
//! benchmark.
//!
//! Workloads:
//! - `produce`: send records as fast as allowed (or at `--target-rate`);
//!   latency is send → acknowledgement.
//! - `consume`: read a topic from its start up to the high watermarks seen
//!   when the run starts (so it measures reading what is already stored).
//! - `e2e`: produce at a rate while a consumer reads the same partitions;
//!   latency is produce call → consumer receipt. Each value carries its send
//!   time (nanoseconds since the run started) in its first 8 bytes, so the
//!   clock is one process's monotonic clock.
//!
//! Three drivers do the Kafka I/O: `rdkafka` (librdkafka, the reference for
//! "what a real client gets"), `weir` (our own `weir-client`) and `pipelined`
//! (produce only: pre-encoded batches with several requests in flight, also
//! when idempotent, which librdkafka does not do). The topic is created
//! through `weir-client` either way (admin is not on the hot path).
//!
//! Every run ends with one [`BenchReport`]: text by default, one JSON object
//! on stdout with `--json` (what `bench/run` collects). Throughput counts
//! key + value bytes, not protocol or batch overhead. MiB = 1,048,576 bytes.
//!
//! The rdkafka driver is compiled only with the `rdkafka-driver` cargo feature
//! (the bench scripts turn it on): librdkafka is a C build of minutes that the
//! broker itself never needs.

mod pipelined_driver;
#[cfg(feature = "rdkafka-driver")]
mod plot;
#[cfg(feature = "rdkafka-driver")]
mod rdkafka_driver;
mod weir_driver;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use weir_client::{Acks, Client, Compression, ErrorCode, NewTopic};

use super::{ConnectArgs, parse_key_value};

/// Used when neither `--records` nor `--duration-s` is given.
const DEFAULT_RECORDS: u64 = 1_000_000;
/// Latencies are recorded in microseconds up to an hour; beyond saturates.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// How long to wait for a new topic's partitions to get leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// After the producer finishes, how long `e2e` waits for the stragglers.
const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the send timestamp at the start of each `e2e` value.
const E2E_STAMP_BYTES: usize = 8;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Produce,
    Consume,
    E2e,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// librdkafka through the `rdkafka` crate.
    Rdkafka,
    /// Weir's own `weir-client`.
    Weir,
    /// Weir's wire codec with no client library: pre-encoded batches, up to `--max-in-flight`
    /// (default 5) Produce requests outstanding per leader whether or not `--idempotent`, as
    /// Kafka's Java producer does (librdkafka's idempotent producer sends one at a time).
    /// produce only.
    Pipelined,
}

const DRIVER_DEFAULT: &str = if cfg!(feature = "rdkafka-driver") {
    "rdkafka"
} else {
    "weir"
};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// produce, consume or e2e.
    #[arg(value_enum)]
    pub workload: Workload,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, default_value = "weir-bench")]
    pub topic: String,
    /// Partitions of the topic if it has to be created (an existing topic
    /// keeps its count; all of its partitions are used).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Topic configs used when creating the topic, Kafka names
    /// (e.g. flush.messages=9223372036854775807 for no fsync before ack).
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub topic_configs: Vec<(String, String)>,
    /// Value bytes per record (no key). e2e needs at least 8.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// produce (rdkafka driver): give records keys cycling through this many distinct
    /// ones (a compacted topic refuses keyless records); 0 = no keys.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Records to produce (or at most to consume). produce/e2e default to
    /// 1,000,000 unless --duration-s is given; consume reads everything.
    #[arg(long)]
    pub records: Option<u64>,
    /// Run for this long (produce/e2e: sending time; consume: reading time).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Bytes per partition batch (librdkafka batch.size).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    /// Records per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub target_rate: u64,
    /// Records the producer may hold unsent (librdkafka
    /// queue.buffering.max.messages; weir-client queue_records_max).
    #[arg(long, default_value_t = 1_000_000)]
    pub queue_records_max: usize,
    /// Produce requests librdkafka may have outstanding per connection
    /// (max.in.flight.requests.per.connection). Default: librdkafka's own; the pipelined
    /// driver's is 5, per leader connection.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Records sent during the first N seconds count for throughput but not
    /// for latency (connection set-up and metadata would dominate the tail).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Bytes per partition per fetch (librdkafka max.partition.fetch.bytes).
    /// librdkafka's default, 1 MiB, also reads fastest here: a response that
    /// fits in cache is parsed while hot (4 MiB read 2 GiB ~30% slower).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub fetch_partition_bytes_max: i32,
    /// Extra librdkafka properties for the rdkafka driver (repeatable;
    /// applied last, so they override the bench's own settings).
    #[arg(long = "rdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub rdkafka_overrides: Vec<(String, String)>,
    /// Default: rdkafka when this build has it (feature `rdkafka-driver`), weir otherwise.
    #[arg(long, value_enum, default_value = DRIVER_DEFAULT)]
    pub driver: Driver,
    /// Produce as an idempotent producer (librdkafka enable.idempotence=true;
    /// needs --acks all and at most 5 requests in flight). rdkafka and pipelined drivers.
    #[arg(long)]
    pub idempotent: bool,
    /// Produce in transactions of this many records each (librdkafka
    /// transactional.id; commit_transaction after every N records sent).
    /// rdkafka driver, produce only.
    #[arg(long, value_name = "RECORDS")]
    pub transaction_records: Option<u64>,
    /// Consumer isolation level (librdkafka isolation.level). Default: the
    /// client's own (read_committed for librdkafka).
    #[arg(long, value_enum)]
    pub isolation: Option<Isolation>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// e2e: write an SVG of the end-to-end latency over the run (p50, p99 and max per 100 ms
    /// of send time) above a histogram of all samples, and the same per-100 ms figures as CSV
    /// beside it (FILE with the extension .csv; wall-clock Unix ms, to line up with other probes).
    #[cfg(feature = "rdkafka-driver")]
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
}

/// Which records a consumer may read (Kafka's isolation.level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    #[value(name = "read_committed")]
    ReadCommitted,
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

impl Isolation {
    // Only the rdkafka driver names the level.
    #[cfg_attr(not(feature = "rdkafka-driver"), allow(dead_code))]
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    Acks::parse(s).ok_or_else(|| format!("--acks must be 0, 1 or all, got '{s}'"))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::ALL
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("--compression must be none, gzip, snappy, lz4 or zstd, got '{s}'"))
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

/// When a produce (or consume) loop stops.
#[derive(Debug, Clone, Copy)]
pub struct StopAt {
    pub records: Option<u64>,
    pub duration: Option<Duration>,
}

impl StopAt {
    fn from_args(args: &BenchArgs) -> StopAt {
        let duration = args.duration_s.map(Duration::from_secs_f64);
        // A consume run reads everything stored unless told otherwise.
        let records = match (args.records, duration, args.workload) {
            (None, None, Workload::Produce | Workload::E2e) => Some(DEFAULT_RECORDS),
            (records, _, _) => records,
        };
        StopAt { records, duration }
    }

    pub fn reached(&self, records: u64, elapsed: Duration) -> bool {
        self.records.is_some_and(|n| records >= n) || self.duration.is_some_and(|d| elapsed >= d)
    }
}

/// Spaces sends `1/rate` apart on an absolute schedule, so an oversleep is
/// caught up rather than lowering the rate.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: Instant,
    rate_per_s: u64,
}

impl Pacer {
    pub fn new(start: Instant, rate_per_s: u64) -> Pacer {
        Pacer { start, rate_per_s }
    }

    /// How long to wait before sending record number `sent` (0-based).
    pub fn wait_before(&self, sent: u64) -> Option<Duration> {
        if self.rate_per_s == 0 {
            return None;
        }
        let due = self.start + Duration::from_secs_f64(sent as f64 / self.rate_per_s as f64);
        due.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// Most (send time, latency) samples kept for a plot: 16 bytes each, so 160 MB at most
/// (over four hours at 10,000 records/s). Later samples still count in the histogram.
const SERIES_SAMPLES_MAX: usize = 10_000_000;

/// One sample of a latency series: when the record was sent (µs since the run started) and
/// how long it took (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "rdkafka-driver"), allow(dead_code))]
pub struct Sample {
    pub sent_us: u64,
    pub latency_us: u64,
}

/// A latency histogram in microseconds, and optionally every sample in send order (for a plot).
pub struct Latencies {
    histogram: Histogram<u64>,
    series: Option<Vec<Sample>>,
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            // Bounds and precision are constants that hdrhistogram accepts.
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            series: None,
        }
    }

    /// Also keeps each sample (up to `SERIES_SAMPLES_MAX`) when `keep` is set.
    pub fn keeping_series(keep: bool) -> Latencies {
        let mut l = Latencies::new();
        if keep {
            l.series = Some(Vec::new());
        }
        l
    }

    /// Adds every sample of `other` (not its series).
    pub fn add(&mut self, other: &Latencies) {
        // Both have the same bounds, so this cannot fail; a sample out of range would saturate.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histogram.saturating_record(us);
    }

    /// Records a latency with the send time it belongs to (kept if a series is kept).
    pub fn record_sent(&mut self, sent: Duration, latency: Duration) {
        self.record(latency);
        if let Some(series) = self.series.as_mut()
            && series.len() < SERIES_SAMPLES_MAX
        {
            let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            series.push(Sample {
                sent_us: us(sent),
                latency_us: us(latency),
            });
        }
    }

    /// The kept samples (empty unless made with `keeping_series(true)`).
    #[cfg_attr(not(feature = "rdkafka-driver"), allow(dead_code))]
    pub fn take_series(&mut self) -> Vec<Sample> {
        self.series.take().unwrap_or_default()
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        let h = &self.histogram;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Samples (records outside the warm-up).
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What a driver measured.
#[derive(Default)]
pub struct Measured {
    /// Records acknowledged (produce) or received (consume, e2e).
    pub records: u64,
    /// Key + value bytes of those records.
    pub bytes: u64,
    /// From the first send (or fetch) to the last ack (or receipt).
    pub elapsed: Duration,
    /// produce: send → ack; e2e: send → receipt.
    pub latency: Option<LatencySummary>,
    /// e2e only: send → ack.
    pub ack_latency: Option<LatencySummary>,
    /// Records that failed (delivery errors).
    pub errors: u64,
    pub first_error: Option<String>,
    /// e2e with a plot asked for: (send time, end-to-end latency) of each record after warm-up.
    #[cfg_attr(not(feature = "rdkafka-driver"), allow(dead_code))]
    pub series: Vec<Sample>,
    /// Wall clock (Unix ms) at the series' zero, to line it up with other probes.
    #[cfg_attr(not(feature = "rdkafka-driver"), allow(dead_code))]
    pub started_unix_ms: u64,
}

/// Wall clock now, in Unix ms (0 before 1970).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The result of one run; the JSON form is what `bench/run` collects.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub driver: Driver,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: usize,
    pub record_size: usize,
    pub acks: &'static str,
    pub idempotent: bool,
    pub transaction_records: Option<u64>,
    pub isolation: Option<Isolation>,
    pub compression: &'static str,
    pub linger_ms: u64,
    pub batch_size: usize,
    pub target_rate: u64,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
    /// produce: send → ack; e2e: produce call → consumer receipt.
    pub latency: Option<LatencySummary>,
    /// e2e only: send → ack of the same records.
    pub ack_latency: Option<LatencySummary>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl BenchReport {
    fn new(args: &BenchArgs, partitions: usize, m: Measured) -> BenchReport {
        let secs = m.elapsed.as_secs_f64();
        let rate = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        BenchReport {
            workload: args.workload,
            driver: args.driver,
            bootstrap: args.connect.bootstrap(),
            topic: args.topic.clone(),
            partitions,
            record_size: args.record_size,
            acks: acks_name(args.acks),
            idempotent: args.idempotent,
            transaction_records: args.transaction_records,
            isolation: args.isolation,
            compression: args.compression.name(),
            linger_ms: args.linger_ms,
            batch_size: args.batch_size,
            target_rate: args.target_rate,
            records: m.records,
            bytes: m.bytes,
            elapsed_s: secs,
            records_per_s: rate(m.records as f64),
            mib_per_s: rate(m.bytes as f64) / MIB,
            latency: m.latency,
            ack_latency: m.ack_latency,
            errors: m.errors,
            first_error: m.first_error,
        }
    }

    fn text(&self) -> String {
        let workload = match self.workload {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::E2e => "e2e",
        };
        let driver = match self.driver {
            Driver::Rdkafka => "rdkafka",
            Driver::Weir => "weir",
            Driver::Pipelined => "pipelined",
        };
        let mut out = format!(
            "{workload} ({driver}) {} topic={} partitions={} record_size={} acks={}{} compression={}\n  \
             {} records, {:.1} MiB in {:.3} s: {:.0} records/s, {:.1} MiB/s\n",
            self.bootstrap,
            self.topic,
            self.partitions,
            self.record_size,
            self.acks,
            match (self.transaction_records, self.idempotent) {
                (Some(n), _) => format!(" transactions of {n}"),
                (None, true) => " idempotent".to_string(),
                (None, false) => String::new(),
            },
            self.compression,
            self.records,
            self.bytes as f64 / MIB,
            self.elapsed_s,
            self.records_per_s,
            self.mib_per_s,
        );
        let line = |name: &str, l: &LatencySummary| {
            format!(
                "  {name} latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, {} samples)\n",
                l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.count
            )
        };
        match (&self.latency, self.workload) {
            (Some(l), Workload::E2e) => out.push_str(&line("end-to-end", l)),
            (Some(l), _) => out.push_str(&line("send→ack", l)),
            (None, _) => {}
        }
        if let Some(l) = &self.ack_latency {
            out.push_str(&line("send→ack", l));
        }
        if self.errors > 0 {
            out.push_str(&format!(
                "  {} errors; first: {}\n",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out
    }
}

/// Runs `weir bench`. Needs its own multi-threaded runtime: the weir
/// driver's producer and consumer tasks run side by side in `e2e`, and the
/// rdkafka driver blocks threads of its own.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.workload == Workload::E2e && args.record_size < E2E_STAMP_BYTES {
        bail!(
            "e2e needs --record-size of at least {E2E_STAMP_BYTES} (the send timestamp rides in the value)"
        );
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if args.idempotent && (args.driver == Driver::Weir || args.acks != Acks::All) {
        bail!("--idempotent needs --driver rdkafka or pipelined, and --acks all");
    }
    if args.driver == Driver::Pipelined
        && (args.workload != Workload::Produce || args.transaction_records.is_some())
    {
        bail!("--driver pipelined runs the produce workload only, without transactions");
    }
    if let Some(n) = args.transaction_records
        && (n == 0
            || args.driver != Driver::Rdkafka
            || args.acks != Acks::All
            || args.workload != Workload::Produce)
    {
        bail!(
            "--transaction-records needs a positive count, --driver rdkafka, --acks all and the produce workload"
        );
    }
    #[cfg(feature = "rdkafka-driver")]
    if args.plot.is_some() && args.workload != Workload::E2e {
        bail!("--plot applies to the e2e workload");
    }
    if args.isolation.is_some() && args.driver != Driver::Rdkafka {
        bail!("--isolation needs --driver rdkafka");
    }
    if args.duration_s.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration-s must be a positive number of seconds");
    }
    if !(args.warmup_s.is_finite() && args.warmup_s >= 0.0) {
        bail!("--warmup-s must be zero or positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let partitions = runtime.block_on(ensure_topic(&args))?;
    let stop = StopAt::from_args(&args);
    if args.keys > 0 && args.driver != Driver::Rdkafka {
        anyhow::bail!("--keys needs --driver rdkafka");
    }
    let measured = match args.driver {
        #[cfg(feature = "rdkafka-driver")]
        Driver::Rdkafka => {
            // librdkafka does its I/O on its own threads; ours only block.
            drop(runtime);
            rdkafka_driver::run(&args, partitions, stop)?
        }
        #[cfg(not(feature = "rdkafka-driver"))]
        Driver::Rdkafka => {
            drop((runtime, stop));
            bail!(
                "this weir was built without the rdkafka driver: use --driver weir, or build with \
                 `cargo build --release -p weir --features rdkafka-driver`"
            )
        }
        Driver::Weir => runtime.block_on(weir_driver::run(&args, partitions, stop))?,
        Driver::Pipelined => runtime.block_on(pipelined_driver::run(&args, stop))?,
    };
    #[cfg(feature = "rdkafka-driver")]
    let mut measured = measured;
    #[cfg(feature = "rdkafka-driver")]
    if let Some(path) = &args.plot {
        let series = std::mem::take(&mut measured.series);
        if series.is_empty() {
            eprintln!("bench: no e2e samples to plot (--plot applies to e2e after the warm-up)");
        } else {
            let title = format!(
                "{} e2e, {} B, acks={}, {} rec/s target",
                args.connect.bootstrap(),
                args.record_size,
                acks_name(args.acks),
                args.target_rate
            );
            plot::write_svg(path, &title, &series)
                .with_context(|| format!("writing the plot {}", path.display()))?;
            let csv = path.with_extension("csv");
            std::fs::write(&csv, plot::series_csv(measured.started_unix_ms, &series))
                .with_context(|| format!("writing {}", csv.display()))?;
        }
    }
    let report = BenchReport::new(&args, partitions, measured);
    // Written, not printed: `weir bench | head` must not panic when the reader is gone. bench
    // keeps SIGPIPE ignored (librdkafka's sockets), so the closed pipe comes back as EPIPE,
    // which `main` treats as a quiet end.
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        report.text()
    };
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
    if report.records == 0 {
        bail!(
            "no records were {}",
            if args.workload == Workload::Produce {
                "acknowledged"
            } else {
                "received"
            }
        );
    }
    Ok(())
}

/// Creates the topic if it is missing and waits until every partition has
/// a leader. Returns the partition count.
async fn ensure_topic(args: &BenchArgs) -> anyhow::Result<usize> {
    let mut client = args.connect.connect().await?;
    let topic = NewTopic {
        name: args.topic.clone(),
        num_partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: args.topic_configs.clone(),
    };
    match client.create_topic(&topic).await {
        Ok(()) => {}
        Err(e) if e.error_code() == Some(ErrorCode::TopicAlreadyExists) => {}
        Err(e) => return Err(e).with_context(|| format!("creating topic '{}'", args.topic)),
    }
    wait_for_leaders(&mut client, &args.topic).await
}

async fn wait_for_leaders(client: &mut Client, topic: &str) -> anyhow::Result<usize> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        client.invalidate_topic(topic);
        let last = match client.topic(topic, false).await {
            Ok(info)
                if !info.partitions.is_empty()
                    && info.partitions.iter().all(|p| p.leader_id >= 0) =>
            {
                return Ok(info.partitions.len());
            }
            Ok(_) => "some partitions have no leader".to_owned(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("topic '{topic}' not ready after {TOPIC_READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A value of `size` bytes: uppercase letters like kafka-producer-perf-test
/// (compressible about as much as text, unlike random bytes).
pub fn payload(size: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..size)
        .map(|_| {
            // xorshift32: cheap, deterministic filler.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b'A' + (state % 26) as u8
        })
        .collect()
}

/// Writes the send time (ns since `start`) into the first 8 bytes.
pub fn stamp(value: &mut [u8], since_start: Duration) {
    let ns = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX);
    if let Some(head) = value.get_mut(..E2E_STAMP_BYTES) {
        head.copy_from_slice(&ns.to_le_bytes());
    }
}

/// Reads the send time back; `None` for a value that is too short (a record
/// that some other producer wrote to the topic).
pub fn read_stamp(value: &[u8]) -> Option<Duration> {
    let head: [u8; E2E_STAMP_BYTES] = value.get(..E2E_STAMP_BYTES)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(head)))
}

/// Whether a record sent `since_start` into the run is past the warm-up.
pub fn after_warmup(args: &BenchArgs, since_start: Duration) -> bool {
    since_start.as_secs_f64() >= args.warmup_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_short_values_have_none() {
        let mut v = payload(16);
        stamp(&mut v, Duration::from_nanos(123_456_789));
        assert_eq!(read_stamp(&v), Some(Duration::from_nanos(123_456_789)));
        assert_eq!(read_stamp(&v[..7]), None);
    }

    #[test]
    fn pacer_spaces_sends_at_the_target_rate() {
        let start = Instant::now();
        let pacer = Pacer::new(start, 1000);
        assert!(pacer.wait_before(0).is_none());
        // Record 500 is due half a second in.
        let wait = pacer.wait_before(500).expect("must wait");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(Pacer::new(start, 0).wait_before(1_000_000).is_none());
    }

    #[test]
    fn stop_defaults_to_a_record_count_and_honours_either_limit() {
        let stop = StopAt {
            records: None,
            duration: Some(Duration::from_secs(1)),
        };
        assert!(!stop.reached(u64::MAX - 1, Duration::from_millis(10)));
        assert!(stop.reached(0, Duration::from_secs(2)));
        let stop = StopAt {
            records: Some(10),
            duration: None,
        };
        assert!(stop.reached(10, Duration::ZERO));
        assert!(!stop.reached(9, Duration::from_secs(1000)));
    }

    #[test]
    fn latency_summary_reports_percentiles_in_ms() {
        let mut l = Latencies::new();
        assert!(l.summary().is_none());
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary().expect("samples");
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.01, "{s:?}");
    }
}
