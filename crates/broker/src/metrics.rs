//! Broker metrics: the counters the request path bumps, and the Prometheus
//! exposition built from them and from existing state when `/metrics` is scraped.
//!
//! Owns: per-API request counters and latency histograms (one series per supported
//! (api key, version), created at start), connection counts, and rendering.
//! It must never put a lock, an allocation or a map lookup on the request path:
//! a request costs a table index and a few relaxed atomic adds. Everything that
//! already lives in the broker's state (log sizes, offsets, ISR, groups) is read
//! at scrape time instead of being counted as it changes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use weir_protocol::api::{self, ApiKey};
use weir_protocol::error_code::ErrorCode;

use crate::Broker;

/// Upper bounds of the request latency buckets, in seconds (from 100 µs, where an
/// answer from memory lands, to 30 s, the longest long-poll a client asks for).
const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// A latency histogram of relaxed atomics: observing is a bucket search over a
/// short constant array and two adds, with no lock (prometheus-client's own
/// histogram takes a mutex per observation).
struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS.partition_point(|bound| *bound < seconds);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// (sum in seconds, count, per-bucket (upper bound, count)).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = LATENCY_BUCKETS_SECONDS.iter().copied().chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Distinct error codes one response's tally keeps; a response with more kinds of
/// error than this (none of Weir's do in practice) counts the rest as uncounted.
const TALLY_CODES_MAX: usize = 4;

/// Error codes Kafka defines run from -1 to 133 (see `ErrorCode`); the table
/// keeps one column per code in that range plus one for any code outside it.
const ERROR_CODE_MIN: i16 = -1;
const ERROR_COLUMNS: usize = 136;

fn error_column(code: i16) -> usize {
    usize::try_from(i32::from(code) - i32::from(ERROR_CODE_MIN))
        .ok()
        .filter(|c| *c < ERROR_COLUMNS - 1)
        .unwrap_or(ERROR_COLUMNS - 1)
}

/// The error codes (all but NONE) one response carries, with how often each
/// occurs (once per partition, topic or group that has it, as Kafka's
/// `ErrorsPerSec` counts them). Fixed size, so building one never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorTally {
    codes: [(i16, u32); TALLY_CODES_MAX],
    len: u8,
    /// Occurrences of codes beyond the first `TALLY_CODES_MAX` distinct ones.
    uncounted: u32,
}

impl ErrorTally {
    pub fn of<T: weir_protocol::codec::ErrorCodes>(body: &T) -> ErrorTally {
        let mut tally = ErrorTally::default();
        body.for_each_error_code(&mut |code| tally.add(code));
        tally
    }

    fn add(&mut self, code: i16) {
        if code == 0 {
            return;
        }
        let len = usize::from(self.len);
        if let Some(entry) = self.codes.iter_mut().take(len).find(|(c, _)| *c == code) {
            entry.1 = entry.1.saturating_add(1);
        } else if let Some(entry) = self.codes.get_mut(len) {
            *entry = (code, 1);
            self.len += 1;
        } else {
            self.uncounted = self.uncounted.saturating_add(1);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (i16, u32)> + '_ {
        self.codes.iter().take(usize::from(self.len)).copied()
    }
}

/// One (api, version) pair's series.
struct ApiSeries {
    api: &'static str,
    version: i16,
    /// Row of this api in `RequestMetrics::errors`.
    api_row: usize,
    requests: AtomicU64,
    latency: LatencyHistogram,
}

/// Counters bumped on the request path. Shared by the server (connections,
/// requests) and the broker (their outcome).
pub struct RequestMetrics {
    /// One entry per supported (api key, version), in key then version order.
    series: Box<[ApiSeries]>,
    /// Per api key (as index): the slot of its lowest supported version and that version.
    first_slot: Box<[Option<(usize, i16, i16)>]>,
    pub connections_open: AtomicI64,
    pub connections_accepted: AtomicU64,
    /// Connections closed at accept because `connections_max` were open.
    pub connections_refused: AtomicU64,
    /// Where produce requests' time goes, step by step (`produce_trace`).
    pub produce_steps: crate::produce_trace::ProduceStepStats,
    requests_in_flight: AtomicI64,
    /// Error occurrences in responses: one row per supported api (in
    /// `api_names` order), one column per error code (`error_column`).
    errors: Box<[AtomicU64]>,
    api_names: Box<[&'static str]>,
    /// Error occurrences a response's tally had no room for.
    errors_uncounted: AtomicU64,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics::new()
    }
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("series", &self.series.len())
            .finish()
    }
}

impl RequestMetrics {
    /// Creates every series up front, so that counting never allocates.
    pub fn new() -> RequestMetrics {
        let mut series = Vec::new();
        let key_max = api::SUPPORTED_APIS
            .iter()
            .map(|(key, _, _)| *key)
            .max()
            .unwrap_or(0);
        let mut first_slot = vec![None; usize::try_from(key_max).unwrap_or(0) + 1];
        let mut api_names = Vec::new();
        for &(key, min, max) in api::SUPPORTED_APIS {
            let Some(name) = ApiKey::from_i16(key).map(ApiKey::name) else {
                continue;
            };
            let api_row = api_names.len();
            api_names.push(name);
            if let Some(slot) = usize::try_from(key)
                .ok()
                .and_then(|k| first_slot.get_mut(k))
            {
                *slot = Some((series.len(), min, max));
            }
            for version in min..=max {
                series.push(ApiSeries {
                    api: name,
                    version,
                    api_row,
                    requests: AtomicU64::new(0),
                    latency: LatencyHistogram::new(),
                });
            }
        }
        RequestMetrics {
            series: series.into_boxed_slice(),
            first_slot: first_slot.into_boxed_slice(),
            connections_open: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            produce_steps: Default::default(),
            requests_in_flight: AtomicI64::new(0),
            errors: (0..api_names.len() * ERROR_COLUMNS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            api_names: api_names.into_boxed_slice(),
            errors_uncounted: AtomicU64::new(0),
        }
    }

    /// Counts a request as it is read. `None` for an api or version Weir does
    /// not serve (the broker refuses those; they are not worth a series).
    pub fn request_started(
        self: &Arc<Self>,
        api_key: i16,
        api_version: i16,
    ) -> Option<RequestTimer> {
        let (first, min, max) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.first_slot.get(k).copied().flatten())?;
        if api_version < min || api_version > max {
            return None;
        }
        let slot = first + usize::try_from(api_version - min).ok()?;
        self.series.get(slot)?.requests.fetch_add(1, Relaxed);
        self.requests_in_flight.fetch_add(1, Relaxed);
        Some(RequestTimer {
            metrics: Arc::clone(self),
            slot,
            started: Instant::now(),
        })
    }
}

/// A request being answered: records its latency when finished; counts it out
/// of the in-flight gauge when dropped (also when its answer never comes, as
/// on a connection closed mid-request).
pub struct RequestTimer {
    metrics: Arc<RequestMetrics>,
    slot: usize,
    started: Instant,
}

impl RequestTimer {
    /// The response is complete (or known to be none, for acks=0), carrying `errors`.
    pub fn finish(self, errors: &ErrorTally) {
        let Some(series) = self.metrics.series.get(self.slot) else {
            return;
        };
        series.latency.observe(self.started.elapsed());
        let row = series.api_row * ERROR_COLUMNS;
        for (code, n) in errors.iter() {
            if let Some(cell) = self.metrics.errors.get(row + error_column(code)) {
                cell.fetch_add(u64::from(n), Relaxed);
            }
        }
        if errors.uncounted > 0 {
            self.metrics
                .errors_uncounted
                .fetch_add(u64::from(errors.uncounted), Relaxed);
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.metrics.requests_in_flight.fetch_sub(1, Relaxed);
    }
}

/// Records and bytes a partition took in (produce) and gave out (consumer
/// fetches), bumped by the handlers and summed per topic at scrape time.
#[derive(Debug, Default)]
pub struct PartitionTraffic {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Offsets handed to consumers: records, plus control records and
    /// compaction gaps, which can't be told apart without decoding batches.
    pub offsets_out: AtomicU64,
}

type Labels = Vec<(&'static str, String)>;

/// One histogram series as read at scrape time: labels, sum, count, per-bucket counts.
type HistogramSnapshot = (Labels, f64, u64, Vec<(f64, u64)>);

/// Histograms encoded from snapshots taken at scrape time.
#[derive(Debug, Default)]
struct HistogramSnapshots(Vec<HistogramSnapshot>);

impl EncodeMetric for HistogramSnapshots {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (labels, sum, count, buckets) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One histogram without labels, encoded from a snapshot taken at scrape time.
#[derive(Debug)]
struct HistogramSnapshotUnlabelled(f64, u64, Vec<(f64, u64)>);

impl EncodeMetric for HistogramSnapshotUnlabelled {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.0, self.1, &self.2, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauge_family() -> Family<Labels, Gauge> {
    Family::default()
}

fn counter_family() -> Family<Labels, Counter> {
    Family::default()
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The Prometheus text exposition of everything the broker measures.
pub fn render(broker: &Broker) -> String {
    let mut registry = Registry::with_prefix("weir");
    render_requests(&broker.metrics, &mut registry);
    render_log_syncs(broker.env.sync_stats(), &mut registry);
    render_produce_steps(&broker.metrics.produce_steps, &mut registry);
    render_partitions(broker, &mut registry);
    render_cluster(broker, &mut registry);
    render_groups(broker, &mut registry);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        // Encoding into a String fails only on a formatting bug; say so in the scrape.
        return "# encoding failed\n".into();
    }
    out
}

fn render_requests(metrics: &RequestMetrics, registry: &mut Registry) {
    let requests = counter_family();
    let mut latency = HistogramSnapshots::default();
    for s in metrics.series.iter() {
        let labels = vec![
            ("api", s.api.to_string()),
            ("version", s.version.to_string()),
        ];
        let count = s.requests.load(Relaxed);
        // Versions no client used stay out of the scrape: most of the table is never asked for.
        if count == 0 {
            continue;
        }
        requests.get_or_create(&labels).inc_by(count);
        let (sum, n, buckets) = s.latency.snapshot();
        latency.0.push((labels, sum, n, buckets));
    }
    registry.register(
        "requests",
        "Kafka requests read, by API and version",
        requests,
    );
    registry.register(
        "request_duration_seconds",
        "Time from reading a request to its response being complete (durability and long-poll waits included)",
        latency,
    );
    let errors = counter_family();
    for (row, api) in metrics.api_names.iter().enumerate() {
        for column in 0..ERROR_COLUMNS {
            let n = metrics
                .errors
                .get(row * ERROR_COLUMNS + column)
                .map_or(0, |c| c.load(Relaxed));
            if n == 0 {
                continue;
            }
            let name = i16::try_from(column)
                .ok()
                .filter(|c| usize::try_from(*c).is_ok_and(|c| c < ERROR_COLUMNS - 1))
                .and_then(|c| ErrorCode::from_code(c + ERROR_CODE_MIN))
                .map_or("OTHER", ErrorCode::name);
            errors
                .get_or_create(&vec![("api", api.to_string()), ("error", name.to_string())])
                .inc_by(n);
        }
    }
    registry.register(
        "response_errors",
        "Error codes in responses, by API and Kafka error name (once per partition, topic or group carrying one; NONE not counted)",
        errors,
    );
    registry.register(
        "response_errors_uncounted",
        "Error occurrences left out of weir_response_errors (a response with more than 4 distinct codes)",
        counter(metrics.errors_uncounted.load(Relaxed)),
    );
    registry.register(
        "requests_in_flight",
        "Requests read and not yet answered",
        gauge(metrics.requests_in_flight.load(Relaxed)),
    );
    registry.register(
        "connections_open",
        "Kafka connections open",
        gauge(metrics.connections_open.load(Relaxed)),
    );
    registry.register(
        "connections_accepted",
        "Kafka connections accepted",
        counter(metrics.connections_accepted.load(Relaxed)),
    );
    registry.register(
        "connections_refused",
        "Kafka connections closed at accept because connections_max were open",
        counter(metrics.connections_refused.load(Relaxed)),
    );
}

/// A log-crate histogram snapshot as (sum, count, buckets), +Inf spelled as `f64::MAX`.
fn histogram_parts(h: weir_log::HistogramSnapshot) -> (f64, u64, Vec<(f64, u64)>) {
    let buckets = h
        .buckets
        .into_iter()
        .map(|(bound, n)| (if bound.is_finite() { bound } else { f64::MAX }, n))
        .collect();
    (h.sum, h.count, buckets)
}

fn render_produce_steps(stats: &crate::produce_trace::ProduceStepStats, registry: &mut Registry) {
    use crate::produce_trace::ProduceStep;
    let mut steps = HistogramSnapshots::default();
    for step in ProduceStep::ALL {
        let (sum, count, buckets) = histogram_parts(stats.snapshot(step));
        steps
            .0
            .push((vec![("step", step.name().to_string())], sum, count, buckets));
    }
    registry.register(
        "produce_step_duration_seconds",
        "Where answered produce requests' time went, by step: read, decode, handle (validate and append included), validate, append, sync_wait (appended to durable, the sync included), sync (the fdatasync itself), replicate, respond (acknowledged to written), total = read + decode + handle + sync_wait + replicate + respond",
        steps,
    );
    registry.register(
        "produce_slow",
        "Produce requests whose total exceeded slow_produce_warn_ms",
        counter(stats.slow.load(Relaxed)),
    );
}

fn render_log_syncs(stats: &weir_log::SyncStats, registry: &mut Registry) {
    let as_histogram = |h: weir_log::HistogramSnapshot| {
        let (sum, count, buckets) = histogram_parts(h);
        HistogramSnapshotUnlabelled(sum, count, buckets)
    };
    let mut events = HistogramSnapshots::default();
    for event in weir_log::LogEvent::ALL {
        let (sum, count, buckets) = histogram_parts(stats.event_seconds(event));
        events.0.push((
            vec![("event", event.name().to_string())],
            sum,
            count,
            buckets,
        ));
    }
    registry.register(
        "log_event_duration_seconds",
        "Disk work besides appends and syncs, by event: roll (under the append lock), index_write, checkpoint, recovery_point, retention_delete",
        events,
    );
    registry.register(
        "log_sync_duration_seconds",
        "Time one group-commit flush spent in fdatasync (and directory fsync), all partitions",
        as_histogram(stats.sync_seconds.snapshot()),
    );
    registry.register(
        "log_sync_batch_appends",
        "Appends acknowledged by one group-commit flush",
        as_histogram(stats.batch_appends.snapshot()),
    );
    registry.register(
        "log_sync_failures",
        "Flushes whose fdatasync failed (each poisons its partition's log)",
        counter(stats.sync_failures.load(Relaxed)),
    );
}

fn render_partitions(broker: &Broker, registry: &mut Registry) {
    let series_max = broker.config.metrics_partition_series_max;
    let mut topics: Vec<Arc<crate::topics::Topic>> = broker.registry().iter().cloned().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes_in = counter_family();
    let records_in = counter_family();
    let bytes_out = counter_family();
    let offsets_out = counter_family();
    let size = gauge_family();
    let segments = gauge_family();
    let log_start = gauge_family();
    let high_watermark = gauge_family();
    let log_end = gauge_family();
    let mut shown = 0usize;
    let mut dropped = 0usize;
    for (topic_index, topic) in topics.iter().enumerate() {
        // Per-topic traffic is as bounded as the partitions: one series per topic shown.
        if topic_index < series_max {
            let traffic = topic.partitions.iter().map(|p| &p.traffic);
            let sum = |f: fn(&PartitionTraffic) -> u64| traffic.clone().map(f).sum::<u64>();
            let labels = vec![("topic", topic.name.clone())];
            bytes_in
                .get_or_create(&labels)
                .inc_by(sum(|t| t.bytes_in.load(Relaxed)));
            records_in
                .get_or_create(&labels)
                .inc_by(sum(|t| t.records_in.load(Relaxed)));
            bytes_out
                .get_or_create(&labels)
                .inc_by(sum(|t| t.bytes_out.load(Relaxed)));
            offsets_out
                .get_or_create(&labels)
                .inc_by(sum(|t| t.offsets_out.load(Relaxed)));
        }
        for p in &topic.partitions {
            if shown >= series_max {
                dropped += 1;
                continue;
            }
            shown += 1;
            let labels = vec![
                ("topic", topic.name.clone()),
                ("partition", p.index.to_string()),
            ];
            size.get_or_create(&labels).set(to_i64(p.log.size_bytes()));
            segments
                .get_or_create(&labels)
                .set(i64::try_from(p.log.segment_count()).unwrap_or(i64::MAX));
            log_start
                .get_or_create(&labels)
                .set(p.log.log_start_offset());
            high_watermark
                .get_or_create(&labels)
                .set(p.log.high_watermark());
            log_end.get_or_create(&labels).set(p.log.log_end_offset());
        }
    }
    registry.register(
        "topic_bytes_in",
        "Record batch bytes produced to the topic (this broker's partitions)",
        bytes_in,
    );
    registry.register(
        "topic_records_in",
        "Records produced to the topic (this broker's partitions)",
        records_in,
    );
    registry.register(
        "topic_bytes_out",
        "Record bytes sent to consumers (replica fetches excluded)",
        bytes_out,
    );
    registry.register(
        "topic_offsets_out",
        "Offsets sent to consumers: records plus control records and compaction gaps",
        offsets_out,
    );
    registry.register(
        "partition_log_size_bytes",
        "Bytes of the partition's log segments",
        size,
    );
    registry.register(
        "partition_segments",
        "Segments in the partition's log",
        segments,
    );
    registry.register(
        "partition_log_start_offset",
        "The partition's log start offset",
        log_start,
    );
    registry.register(
        "partition_high_watermark",
        "The partition's high watermark",
        high_watermark,
    );
    registry.register(
        "partition_log_end_offset",
        "The partition's log end offset",
        log_end,
    );
    registry.register(
        "metrics_partition_series_dropped",
        "Partitions left without per-partition series by metrics_partition_series_max",
        gauge(i64::try_from(dropped).unwrap_or(i64::MAX)),
    );
}

fn render_cluster(broker: &Broker, registry: &mut Registry) {
    let Some(link) = broker.cluster.get() else {
        return;
    };
    let me = broker.config.node_id;
    let leader = link.quorum.leader_id();
    registry.register(
        "controller_active",
        "1 when this node is the metadata quorum's leader (the active controller)",
        gauge(i64::from(leader == Some(me))),
    );
    registry.register(
        "quorum_leader_id",
        "Node id of the metadata quorum's leader; -1 while there is none",
        gauge(i64::from(leader.unwrap_or(-1))),
    );
    registry.register(
        "metadata_applied_index",
        "Index of the last metadata record this broker applied",
        gauge(to_i64(*link.quorum.applied_index().borrow())),
    );
    let (offline, led) = {
        let image = link.image();
        (
            image.offline_partitions().count(),
            image.partitions_led_by(me).count(),
        )
    };
    registry.register(
        "partitions_offline",
        "Partitions without a leader, cluster-wide (from the metadata image)",
        gauge(i64::try_from(offline).unwrap_or(i64::MAX)),
    );
    registry.register(
        "partitions_led",
        "Partitions this broker leads",
        gauge(i64::try_from(led).unwrap_or(i64::MAX)),
    );
    let series_max = broker.config.metrics_partition_series_max;
    let mut under_replicated = 0i64;
    let follower_lag = gauge_family();
    let mut shown = 0usize;
    for topic in broker.registry().iter() {
        for p in &topic.partitions {
            let lags = {
                let state = p.replication();
                let Some(state) = state.as_ref() else {
                    continue;
                };
                if state.isr().len() < state.replicas().len() {
                    under_replicated += 1;
                }
                state.follower_log_ends()
            };
            let leader_end = p.log.log_end_offset();
            for (follower, end) in lags {
                if shown >= series_max {
                    break;
                }
                shown += 1;
                let labels = vec![
                    ("topic", topic.name.clone()),
                    ("partition", p.index.to_string()),
                    ("follower", follower.to_string()),
                ];
                // A follower that has not fetched in this leadership yet is behind by everything.
                let lag = if end < 0 {
                    leader_end
                } else {
                    leader_end - end
                };
                follower_lag.get_or_create(&labels).set(lag.max(0));
            }
        }
    }
    registry.register(
        "partitions_under_replicated",
        "Partitions this broker leads whose ISR is smaller than their replica set",
        gauge(under_replicated),
    );
    registry.register(
        "replica_follower_lag_offsets",
        "Offsets a follower is behind this leader's log end",
        follower_lag,
    );
    registry.register(
        "isr_shrinks",
        "ISR removals this broker proposed as leader",
        counter(broker.isr_shrinks.load(Relaxed)),
    );
    registry.register(
        "isr_expands",
        "ISR additions this broker proposed as leader",
        counter(broker.isr_expands.load(Relaxed)),
    );
}

fn render_groups(broker: &Broker, registry: &mut Registry) {
    let series_max = broker.config.metrics_partition_series_max;
    let members = gauge_family();
    let state = gauge_family();
    let lag = gauge_family();
    let mut lag_series = 0usize;
    for group in broker
        .groups
        .metrics_snapshot()
        .into_iter()
        .take(series_max)
    {
        members
            .get_or_create(&vec![("group", group.group_id.clone())])
            .set(i64::try_from(group.members).unwrap_or(i64::MAX));
        state
            .get_or_create(&vec![
                ("group", group.group_id.clone()),
                ("state", group.state_name.to_string()),
            ])
            .set(1);
        for (topic, partition, committed) in group.offsets {
            if lag_series >= series_max {
                break;
            }
            // Lag against the high watermark, as kafka-consumer-groups shows it; only for
            // partitions whose log is on this broker.
            let Some(p) = broker
                .topic(&topic)
                .and_then(|t| t.partition(partition).cloned())
            else {
                continue;
            };
            lag_series += 1;
            lag.get_or_create(&vec![
                ("group", group.group_id.clone()),
                ("topic", topic),
                ("partition", partition.to_string()),
            ])
            .set((p.log.high_watermark() - committed).max(0));
        }
    }
    registry.register("group_members", "Members of the consumer group", members);
    registry.register(
        "group_state",
        "1 for the consumer group's current state",
        state,
    );
    registry.register(
        "group_lag_offsets",
        "High watermark minus the group's committed offset, per partition",
        lag,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_its_api_and_version_series() {
        let metrics = Arc::new(RequestMetrics::new());
        let produce = ApiKey::Produce.as_i16();
        let (_, min, max) = *api::SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == produce)
            .unwrap();
        let timer = metrics.request_started(produce, max).unwrap();
        assert_eq!(metrics.requests_in_flight.load(Relaxed), 1);
        timer.finish(&ErrorTally::default());
        assert_eq!(metrics.requests_in_flight.load(Relaxed), 0);
        assert!(metrics.request_started(produce, max + 1).is_none());
        assert!(metrics.request_started(produce, min - 1).is_none());
        assert!(metrics.request_started(-1, 0).is_none());
        assert!(metrics.request_started(i16::MAX, 0).is_none());
        let hit: Vec<_> = metrics
            .series
            .iter()
            .filter(|s| s.requests.load(Relaxed) > 0)
            .map(|s| (s.api, s.version, s.latency.snapshot().1))
            .collect();
        assert_eq!(hit, vec![("Produce", max, 1)]);
    }

    #[test]
    fn response_errors_are_counted_by_api_and_code() {
        use weir_protocol::messages::produce::*;
        let partition = |code: ErrorCode| PartitionProduceResponse {
            error_code: code.code(),
            ..Default::default()
        };
        let response = ProduceResponse {
            responses: vec![TopicProduceResponse {
                partition_responses: vec![
                    partition(ErrorCode::NotLeaderOrFollower),
                    partition(ErrorCode::None),
                    partition(ErrorCode::NotLeaderOrFollower),
                    partition(ErrorCode::UnknownTopicOrPartition),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let tally = ErrorTally::of(&response);
        assert_eq!(
            tally.iter().collect::<Vec<_>>(),
            vec![(6, 2), (3, 1)],
            "NONE is not an error"
        );
        let metrics = Arc::new(RequestMetrics::new());
        let produce = ApiKey::Produce.as_i16();
        let (_, _, max) = *api::SUPPORTED_APIS
            .iter()
            .find(|(k, _, _)| *k == produce)
            .unwrap();
        metrics
            .request_started(produce, max)
            .unwrap()
            .finish(&tally);
        metrics
            .request_started(produce, max)
            .unwrap()
            .finish(&tally);
        let mut registry = Registry::default();
        render_requests(&metrics, &mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "response_errors_total{api=\"Produce\",error=\"NOT_LEADER_OR_FOLLOWER\"} 4"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "response_errors_total{api=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("error=\"NONE\""), "{text}");

        // More distinct codes than a tally holds: the rest are counted as uncounted.
        let mut tally = ErrorTally::default();
        for code in [1, 2, 3, 4, 5, 5, -1, 0] {
            tally.add(code);
        }
        assert_eq!(tally.iter().count(), TALLY_CODES_MAX);
        assert_eq!(tally.uncounted, 3);
        assert_eq!(error_column(-1), 0);
        assert_eq!(error_column(133), 134);
        assert_eq!(error_column(999), ERROR_COLUMNS - 1);
        assert_eq!(error_column(-7), ERROR_COLUMNS - 1);
    }

    #[test]
    fn latency_buckets_hold_each_observation_once() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 100.00305).abs() < 1e-6, "{sum}");
        assert_eq!(buckets.first(), Some(&(0.0001, 1)));
        assert_eq!(buckets.iter().find(|(b, _)| *b == 0.005), Some(&(0.005, 1)));
        assert_eq!(buckets.last(), Some(&(f64::MAX, 1)));
    }
}
