//! The built-in web console: HTML pages on the operations HTTP listener
//! (`/`, `/topics`, `/messages`, `/groups`, `/reassignments`), for people who
//! would rather look than read JSON.
//!
//! Layout:
//! - [`html`]: escaping, URL encoding, the page frame, number and time formats.
//! - [`params`]: query strings checked up front (bad ones get a 400 page).
//! - [`charts`]: inline SVG line charts.
//! - [`history`]: the bounded rings behind the charts (sans I/O).
//! - this file: routes, handlers and the sampler task that feeds [`history`].
//! - `assets/`: the stylesheet and the script, compiled into the binary.
//!
//! Owns: the pages and what they show. It reads the broker only through
//! `weir_broker::admin_view` (the same views the JSON API serves, plus a few
//! the console alone needs), off the async threads. It must never write: every
//! route is a GET that changes nothing. Everything shown is escaped; the pages
//! carry no inline script, and the Content-Security-Policy header forbids any,
//! so a record value holding `<script>` is text and can't run.

pub mod charts;
pub mod history;
pub mod html;
pub mod params;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use weir_broker::Broker;
use weir_broker::admin_view::{
    BrowseError, BrowseLimits, BrowseStart, BrowsedBytes, BrowsedRecord, RecordPage,
};

use crate::http::HttpState;
use history::{LagHistory, THROUGHPUT_SAMPLE_MS, ThroughputHistory};
use html::{Section, encode_query, encode_segment, escape, page, pagination, thousands};
use params::{BadParam, Query};

/// Topics and groups per list page.
const LIST_PAGE_ROWS: usize = 50;
/// Partitions per topic page: a topic of 1,000 partitions fits on one.
const PARTITION_PAGE_ROWS: usize = 1000;
/// Records per message-browser page: the default and the most one may ask for.
const RECORDS_PER_PAGE_DEFAULT: i64 = 20;
const RECORDS_PER_PAGE_MAX: i64 = 100;
/// Bytes of each key, value and header value shown in a page of records.
const VALUE_BYTES_SHOWN: usize = 1024;
/// Bytes of batches a page of records may read from the log.
const PAGE_READ_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of a key or value shown when one record is expanded: larger values
/// stay cut there too (the page says how long they are).
const EXPANDED_VALUE_BYTES_MAX: usize = 256 * 1024;
/// How long the overview waits for the quorum leader's description.
const QUORUM_WAIT: Duration = Duration::from_millis(1500);

/// The script may only come from this server, and nothing may be framed,
/// posted or fetched elsewhere: an injected `<script>` or `onerror=` would not
/// run even if escaping failed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's memory between requests, filled by [`run_sampler`].
#[derive(Clone, Default)]
pub struct Console {
    history: Arc<Mutex<History>>,
}

#[derive(Default)]
struct History {
    throughput: ThroughputHistory,
    lag: LagHistory,
}

impl Console {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        // A panic while holding this lock leaves rings that are still valid.
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn now_ms() -> i64 {
    weir_broker::now_ms()
}

/// Reads the traffic counters every [`THROUGHPUT_SAMPLE_MS`] and the groups'
/// lag every [`history::LAG_SAMPLE_MS`] until `stop` turns true.
pub async fn run_sampler(broker: Arc<Broker>, console: Console, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(THROUGHPUT_SAMPLE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lag_every = (history::LAG_SAMPLE_MS / THROUGHPUT_SAMPLE_MS).max(1);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let with_lag = ticks % lag_every == 0;
        ticks += 1;
        let broker = broker.clone();
        let console = console.clone();
        // Walks every partition (and group): off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            let stats = broker.topic_local_stats();
            let total = stats.values().fold(
                Default::default(),
                |mut t: weir_broker::admin_view::TrafficCounters, s| {
                    t.bytes_in += s.traffic.bytes_in;
                    t.records_in += s.traffic.records_in;
                    t.bytes_out += s.traffic.bytes_out;
                    t
                },
            );
            let topics = stats
                .into_iter()
                .map(|(name, s)| (name, s.traffic))
                .collect();
            let lags = with_lag.then(|| broker.group_lags());
            let t = now_ms();
            let mut history = console.history();
            history.throughput.record(t, total, topics);
            if let Some(lags) = lags {
                history.lag.record(t, &lags);
            }
        })
        .await;
    }
}

/// The console's routes, merged into the HTTP listener's router.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(overview))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/api/throughput", get(throughput_json))
        .route("/topics", get(topics))
        .route("/topics/{name}", get(topic))
        .route("/messages", get(messages))
        .route("/messages/record", get(record))
        .route("/groups", get(groups))
        .route("/groups/{group_id}", get(group))
        .route("/reassignments", get(reassignments))
}

/// Why a page could not be shown.
enum PageError {
    /// The request was malformed: 400, with what was wrong.
    Bad(String),
    /// The topic, group or partition does not exist (here): 404.
    NotFound(String),
    Internal,
}

impl From<BadParam> for PageError {
    fn from(e: BadParam) -> Self {
        PageError::Bad(e.0)
    }
}

/// Headers every console answer carries.
fn secured(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const HTML: &str = "text/html; charset=utf-8";

fn html_response(status: StatusCode, body: String) -> Response {
    secured((status, body).into_response(), HTML)
}

fn error_page(error: PageError) -> Response {
    let (status, title, detail) = match error {
        PageError::Bad(detail) => (StatusCode::BAD_REQUEST, "Bad request", detail),
        PageError::NotFound(detail) => (StatusCode::NOT_FOUND, "Not found", detail),
        PageError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the page could not be built; see the broker's log".to_string(),
        ),
    };
    let body = format!(
        "<h1>{title}</h1><p class=\"error\" role=\"alert\">{}</p>\
         <p><a href=\"/\">Back to the overview</a></p>",
        escape(&detail)
    );
    html_response(status, page(title, Section::None, &body))
}

/// Builds a page off the async threads (views walk partitions and groups
/// under their locks).
async fn render<F>(state: HttpState, build: F) -> Response
where
    F: FnOnce(&Broker, &Console) -> Result<String, PageError> + Send + 'static,
{
    let broker = state.broker.clone();
    let console = state.console.clone();
    match tokio::task::spawn_blocking(move || build(&broker, &console)).await {
        Ok(Ok(html)) => html_response(StatusCode::OK, html),
        Ok(Err(e)) => error_page(e),
        Err(_) => error_page(PageError::Internal),
    }
}

async fn css() -> Response {
    secured(CSS.into_response(), "text/css; charset=utf-8")
}

async fn js() -> Response {
    secured(JS.into_response(), "text/javascript; charset=utf-8")
}

/// The live chart's data: `{"points": [{t_ms, bytes_in_per_s, ...}]}`.
async fn throughput_json(State(state): State<HttpState>) -> Response {
    let points = state.console.history().throughput.points();
    let body = serde_json::json!({ "points": points }).to_string();
    secured(body.into_response(), "application/json")
}

fn pages_for(rows: usize, per_page: usize) -> usize {
    rows.div_ceil(per_page).max(1)
}

/// The page asked for, checked against how many there are.
fn checked_page(page: usize, pages: usize) -> Result<usize, PageError> {
    if page > pages {
        return Err(PageError::Bad(format!(
            "page {page} does not exist; there are {pages}"
        )));
    }
    Ok(page)
}

fn list_ids(ids: &[i32]) -> String {
    let parts: Vec<String> = ids.iter().map(i32::to_string).collect();
    if parts.is_empty() {
        "–".to_string()
    } else {
        parts.join(", ")
    }
}

fn topic_href(name: &str) -> String {
    format!("/topics/{}", encode_segment(name))
}

fn group_href(id: &str) -> String {
    format!("/groups/{}", encode_segment(id))
}

fn messages_href(topic: &str, partition: i32) -> String {
    format!(
        "/messages?topic={}&partition={partition}",
        encode_query(topic)
    )
}

// ---------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------

async fn overview(State(state): State<HttpState>) -> Response {
    let quorum = state.broker.quorum_view(QUORUM_WAIT).await;
    render(state, move |broker, console| {
        let cluster = broker.cluster_view();
        let topics = broker.topics_view();
        let mut body = String::from("<h1>Overview</h1>");
        let offline: i32 = topics.topics.iter().map(|t| t.offline_partitions).sum();
        let under: i32 = topics
            .topics
            .iter()
            .map(|t| t.under_replicated_partitions)
            .sum();
        let partitions: i32 = topics.topics.iter().map(|t| t.partitions).sum();
        let fenced = cluster.brokers.iter().filter(|b| b.state != "unfenced").count();
        let health = |ok: bool| if ok { "ok" } else { "bad" };
        let _ = write!(
            body,
            "<section aria-labelledby=\"health\"><h2 id=\"health\">Health</h2><dl class=\"tiles\">\
             <div class=\"tile {}\"><dt>Controller</dt><dd id=\"controller\">{}</dd></div>\
             <div class=\"tile {}\"><dt>Brokers unfenced</dt><dd id=\"brokers-unfenced\">{} of {}</dd></div>\
             <div class=\"tile\"><dt>Topics</dt><dd id=\"topic-count\">{}</dd></div>\
             <div class=\"tile\"><dt>Partitions</dt><dd>{}</dd></div>\
             <div class=\"tile {}\"><dt>Offline partitions</dt><dd id=\"offline\">{}</dd></div>\
             <div class=\"tile {}\"><dt>Under-replicated</dt><dd id=\"under-replicated\">{}</dd></div>\
             </dl></section>",
            health(cluster.controller_id.is_some()),
            cluster
                .controller_id
                .map_or("none (no quorum leader)".to_string(), |id| format!("node {id}")),
            health(fenced == 0),
            cluster.brokers.len() - fenced,
            cluster.brokers.len(),
            thousands(topics.topics.len() as i64),
            thousands(i64::from(partitions)),
            health(offline == 0),
            thousands(i64::from(offline)),
            health(under == 0),
            thousands(i64::from(under)),
        );
        // Throughput: drawn here, then redrawn by console.js from the JSON endpoint.
        let points = console.history().throughput.points();
        let ins: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.bytes_in_per_s)).collect();
        let outs: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.bytes_out_per_s)).collect();
        let _ = write!(
            body,
            "<section aria-labelledby=\"throughput\"><h2 id=\"throughput\">Throughput \
             <small>(this broker, last 5 minutes, live)</small></h2>\
             <div id=\"throughput-chart\" data-poll=\"/console/api/throughput\">{}</div></section>",
            charts::line_chart(
                "Bytes per second produced (in) and fetched by consumers (out)",
                &[
                    charts::Series { name: "in", points: &ins },
                    charts::Series { name: "out", points: &outs },
                ],
                html::rate
            )
        );
        let _ = write!(
            body,
            "<section aria-labelledby=\"brokers\"><h2 id=\"brokers\">Brokers</h2>\
             <p>Cluster <code>{}</code>; this page is served by node {}; metadata applied up to \
             index {}.</p><div class=\"scroll\"><table><thead><tr><th scope=\"col\">Node</th>\
             <th scope=\"col\">Address</th><th scope=\"col\">Rack</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Epoch</th></tr></thead><tbody>",
            escape(&cluster.cluster_id),
            cluster.node_id,
            cluster
                .metadata_applied_index
                .map_or("–".to_string(), |i| i.to_string()),
        );
        for b in &cluster.brokers {
            let _ = write!(
                body,
                "<tr><td>{}{}</td><td>{}:{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td></tr>",
                b.node_id,
                if Some(b.node_id) == cluster.controller_id { " (controller)" } else { "" },
                escape(&b.host),
                b.port,
                escape(b.rack.as_deref().unwrap_or("–")),
                health(b.state == "unfenced"),
                b.state,
                b.broker_epoch
            );
        }
        body.push_str("</tbody></table></div></section>");
        body.push_str("<section aria-labelledby=\"quorum\"><h2 id=\"quorum\">Metadata quorum</h2>");
        match &quorum {
            None => body.push_str("<p>This broker has not joined the cluster yet.</p>"),
            Some(Err(reason)) => {
                let _ = write!(
                    body,
                    "<p class=\"error\" role=\"alert\">Unavailable: {}</p>",
                    escape(reason)
                );
            }
            Some(Ok(q)) => {
                let _ = write!(
                    body,
                    "<p>Leader {} in epoch {}; committed index {}.</p><div class=\"scroll\"><table>\
                     <thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Role</th>\
                     <th scope=\"col\">Log end</th><th scope=\"col\">Behind</th>\
                     <th scope=\"col\">Last caught up</th></tr></thead><tbody>",
                    q.leader_id.map_or("none".to_string(), |l| format!("node {l}")),
                    q.leader_epoch,
                    q.high_watermark
                );
                let now = now_ms();
                let rows = q
                    .voters
                    .iter()
                    .map(|v| (v, "voter"))
                    .chain(q.learners.iter().map(|v| (v, "observer")));
                for (v, role) in rows {
                    let behind = (q.high_watermark - v.log_end_index).max(0);
                    let caught_up = if Some(v.node_id) == q.leader_id {
                        "leader".to_string()
                    } else {
                        v.last_caught_up_timestamp_ms
                            .map_or("never".to_string(), |t| {
                                format!("{} ms ago", thousands((now - t).max(0)))
                            })
                    };
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{role}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td></tr>",
                        v.node_id,
                        v.log_end_index,
                        health(behind == 0),
                        thousands(behind),
                        escape(&caught_up)
                    );
                }
                body.push_str("</tbody></table></div>");
            }
        }
        body.push_str("</section>");
        Ok(page("Overview", Section::Overview, &body))
    })
    .await
}

// ---------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------

async fn topics(State(state): State<HttpState>, RawQuery(raw): RawQuery) -> Response {
    render(state, move |broker, console| {
        let query = Query::parse(raw.as_deref())?;
        let filter = query.get("q").map(str::to_string);
        let page_asked = query.page()?;
        let all = broker.topics_view().topics;
        let shown: Vec<_> = all
            .iter()
            .filter(|t| filter.as_deref().is_none_or(|f| t.name.contains(f)))
            .collect();
        let pages = pages_for(shown.len(), LIST_PAGE_ROWS);
        let page_no = checked_page(page_asked, pages)?;
        let stats = broker.topic_local_stats();
        let history = console.history();
        let mut body = format!(
            "<h1>Topics</h1><form class=\"inline\" method=\"get\" action=\"/topics\" role=\"search\">\
             <label for=\"q\">Filter by name</label><input id=\"q\" name=\"q\" value=\"{}\">\
             <button type=\"submit\">Filter</button></form>\
             <p>{} topics{}.</p>",
            escape(filter.as_deref().unwrap_or("")),
            thousands(shown.len() as i64),
            if filter.is_some() { " match" } else { "" },
        );
        body.push_str(
            "<div class=\"scroll\"><table id=\"topics\"><thead><tr><th scope=\"col\">Topic</th>\
             <th scope=\"col\" class=\"num\">Partitions</th><th scope=\"col\" class=\"num\">RF</th>\
             <th scope=\"col\" class=\"num\">Size</th><th scope=\"col\" class=\"num\">Records</th>\
             <th scope=\"col\" class=\"num\">In</th><th scope=\"col\" class=\"num\">Out</th>\
             <th scope=\"col\">Health</th></tr></thead><tbody>",
        );
        for t in shown
            .iter()
            .skip((page_no - 1) * LIST_PAGE_ROWS)
            .take(LIST_PAGE_ROWS)
        {
            let s = stats.get(&t.name).copied().unwrap_or_default();
            let (rate_in, rate_out) = history.throughput.topic_rates(&t.name).unwrap_or((0.0, 0.0));
            let health = if t.offline_partitions > 0 {
                format!("<span class=\"badge bad\">{} offline</span>", t.offline_partitions)
            } else if t.under_replicated_partitions > 0 {
                format!(
                    "<span class=\"badge warn\">{} under-replicated</span>",
                    t.under_replicated_partitions
                )
            } else {
                "<span class=\"badge ok\">ok</span>".to_string()
            };
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><a href=\"{}\">{}</a>{}</th><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{health}</td></tr>",
                escape(&topic_href(&t.name)),
                escape(&t.name),
                if t.internal { " <span class=\"badge\">internal</span>" } else { "" },
                t.partitions,
                t.replication_factor,
                html::bytes(s.size_bytes),
                thousands(s.records),
                html::rate(rate_in),
                html::rate(rate_out),
            );
        }
        body.push_str("</tbody></table></div>");
        let filter_param = filter
            .as_deref()
            .map_or(String::new(), |f| format!("q={}&", encode_query(f)));
        body.push_str(&pagination(page_no, pages, |n| {
            format!("/topics?{filter_param}page={n}")
        }));
        Ok(page("Topics", Section::Topics, &body))
    })
    .await
}

/// A topic name from the path: decoded by axum, then checked like Kafka does.
fn topic_from_path(path: Result<Path<String>, PathRejection>) -> Result<String, PageError> {
    let Path(name) =
        path.map_err(|_| PageError::Bad("the topic name in the URL is not valid UTF-8".into()))?;
    params::topic_name(&name)?;
    Ok(name)
}

async fn topic(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    render(state, move |broker, _| {
        let name = topic_from_path(path)?;
        let query = Query::parse(raw.as_deref())?;
        let page_asked = query.page()?;
        let view = broker
            .topic_view(&name)
            .ok_or_else(|| PageError::NotFound(format!("topic {name:?} does not exist")))?;
        let pages = pages_for(view.partitions.len(), PARTITION_PAGE_ROWS);
        let page_no = checked_page(page_asked, pages)?;
        let mut body = format!(
            "<h1>Topic <span class=\"name\">{}</span></h1><p>Id <code>{}</code>{}; {} partitions. \
             <a href=\"{}\">Browse messages</a></p>",
            escape(&name),
            escape(&view.topic_id),
            if view.internal { " (internal)" } else { "" },
            view.partitions.len(),
            escape(&messages_href(&name, 0)),
        );
        body.push_str(
            "<section aria-labelledby=\"partitions\"><h2 id=\"partitions\">Partitions</h2>\
             <div class=\"scroll\"><table id=\"partition-table\"><thead><tr>\
             <th scope=\"col\" class=\"num\">Partition</th><th scope=\"col\" class=\"num\">Log start</th>\
             <th scope=\"col\" class=\"num\">High watermark</th><th scope=\"col\" class=\"num\">LSO</th>\
             <th scope=\"col\" class=\"num\">Size</th><th scope=\"col\">Leader</th>\
             <th scope=\"col\">Replicas</th><th scope=\"col\">ISR</th></tr></thead><tbody>",
        );
        for p in view
            .partitions
            .iter()
            .skip((page_no - 1) * PARTITION_PAGE_ROWS)
            .take(PARTITION_PAGE_ROWS)
        {
            let (start, hw, lso, size) = match &p.log {
                Some(l) => (
                    l.log_start_offset.to_string(),
                    l.high_watermark.to_string(),
                    l.last_stable_offset.to_string(),
                    html::bytes(l.size_bytes),
                ),
                None => ("–".into(), "–".into(), "–".into(), "not here".into()),
            };
            let isr_class = if p.isr.len() < p.replicas.len() { " class=\"warn\"" } else { "" };
            let _ = write!(
                body,
                "<tr><th scope=\"row\" class=\"num\"><a href=\"{}\">{}</a></th><td class=\"num\">{start}</td>\
                 <td class=\"num\">{hw}</td><td class=\"num\">{lso}</td><td class=\"num\">{size}</td>\
                 <td>{}</td><td>{}</td><td{isr_class}>{}</td></tr>",
                escape(&messages_href(&name, p.partition)),
                p.partition,
                if p.leader < 0 { "<span class=\"badge bad\">none</span>".to_string() } else { p.leader.to_string() },
                list_ids(&p.replicas),
                list_ids(&p.isr),
            );
        }
        body.push_str("</tbody></table></div>");
        let href = topic_href(&name);
        body.push_str(&pagination(page_no, pages, |n| format!("{href}?page={n}")));
        body.push_str("</section>");
        body.push_str(
            "<section aria-labelledby=\"configs\"><h2 id=\"configs\">Configs</h2>",
        );
        match broker.topic_configs_view(&name) {
            None => body.push_str("<p>This broker holds no replica of the topic; ask one that does.</p>"),
            Some(configs) => {
                body.push_str(
                    "<div class=\"scroll\"><table id=\"config-table\"><thead><tr><th scope=\"col\">Name</th>\
                     <th scope=\"col\">Value</th><th scope=\"col\">Source</th></tr></thead><tbody>",
                );
                for c in configs {
                    let class = if c.source == "DEFAULT_CONFIG" { "" } else { " class=\"set\"" };
                    let _ = write!(
                        body,
                        "<tr{class}><th scope=\"row\"><code>{}</code></th><td><code>{}</code></td><td>{}</td></tr>",
                        escape(&c.name),
                        escape(c.value.as_deref().unwrap_or("(null)")),
                        c.source
                    );
                }
                body.push_str("</tbody></table></div>");
            }
        }
        body.push_str("</section>");
        Ok(page(&format!("Topic {name}"), Section::Topics, &body))
    })
    .await
}

// ---------------------------------------------------------------------------
// Message browser
// ---------------------------------------------------------------------------

/// How keys and values are shown.
const FORMATS: [&str; 3] = ["text", "json", "hex"];

/// Bytes as `format` shows them, escaped.
fn show_bytes(bytes: &[u8], format: &str) -> String {
    match format {
        "hex" => {
            let mut out = String::new();
            for (i, chunk) in bytes.chunks(16).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let ascii: String = chunk
                    .iter()
                    .map(|b| {
                        if b.is_ascii_graphic() || *b == b' ' {
                            char::from(*b)
                        } else {
                            '.'
                        }
                    })
                    .collect();
                let _ = writeln!(out, "{:08x}  {:<47}  {}", i * 16, hex.join(" "), ascii);
            }
            escape(&out)
        }
        "json" => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => escape(&serde_json::to_string_pretty(&v).unwrap_or_default()),
            // Not JSON (or cut short): shown as text, marked so.
            Err(_) => format!(
                "<span class=\"note\">(not JSON)</span> {}",
                escape(&String::from_utf8_lossy(bytes))
            ),
        },
        _ => escape(&String::from_utf8_lossy(bytes)),
    }
}

/// A key or value cell: the (cut) bytes, their length, and when cut, a link to
/// the expanded record.
fn bytes_cell(b: Option<&BrowsedBytes>, format: &str, expand_href: &str) -> String {
    match b {
        None => "<span class=\"note\">null</span>".to_string(),
        Some(b) => {
            let mut out = format!("<pre class=\"data\">{}</pre>", show_bytes(&b.bytes, format));
            if b.is_truncated() {
                let _ = write!(
                    out,
                    "<p class=\"note\">Showing {} of {}. <a href=\"{}\">Expand</a></p>",
                    html::bytes(b.bytes.len() as u64),
                    html::bytes(b.full_bytes as u64),
                    escape(expand_href)
                );
            }
            out
        }
    }
}

fn record_rows(topic: &str, partition: i32, records: &[BrowsedRecord], format: &str) -> String {
    let mut out = String::new();
    for r in records {
        let expand = format!(
            "/messages/record?topic={}&partition={partition}&offset={}&format={format}",
            encode_query(topic),
            r.offset
        );
        let mut headers = String::new();
        for (k, v) in &r.headers {
            let _ = write!(
                headers,
                "<li><code>{}</code>: {}</li>",
                escape(k),
                v.as_ref()
                    .map_or("<span class=\"note\">null</span>".to_string(), |v| {
                        let mut s = escape(&String::from_utf8_lossy(&v.bytes));
                        if v.is_truncated() {
                            s.push('…');
                        }
                        s
                    })
            );
        }
        if r.headers_omitted > 0 {
            let _ = write!(
                headers,
                "<li class=\"note\">and {} more</li>",
                r.headers_omitted
            );
        }
        let _ = write!(
            out,
            "<tr class=\"record\" id=\"offset-{}\"><th scope=\"row\" class=\"num\">{}</th><td>{}<br><span class=\"note\">{}{}</span></td>\
             <td class=\"key\">{}</td><td class=\"value\">{}</td><td><ul class=\"headers\">{}</ul></td></tr>",
            r.offset,
            r.offset,
            html::timestamp(r.timestamp_ms),
            r.timestamp_type,
            if r.transactional {
                ", transactional"
            } else {
                ""
            },
            bytes_cell(r.key.as_ref(), format, &expand),
            bytes_cell(r.value.as_ref(), format, &expand),
            headers
        );
    }
    out
}

fn browse_error(e: BrowseError) -> PageError {
    match e {
        BrowseError::UnknownTopic(_) => PageError::NotFound(e.to_string()),
        BrowseError::UnknownPartition { .. } | BrowseError::OffsetOutOfRange { .. } => {
            PageError::Bad(e.to_string())
        }
        BrowseError::NotHeldHere { .. } | BrowseError::BatchTooLarge { .. } => {
            PageError::NotFound(e.to_string())
        }
        BrowseError::Log(_) => PageError::Internal,
    }
}

/// The message browser's form, filled with what was asked.
fn browse_form(
    topic: &str,
    partition: i64,
    offset: &str,
    timestamp: &str,
    limit: i64,
    format: &str,
) -> String {
    let mut formats = String::new();
    for f in FORMATS {
        let _ = write!(
            formats,
            "<option value=\"{f}\"{}>{f}</option>",
            if f == format { " selected" } else { "" }
        );
    }
    format!(
        "<form class=\"browse\" method=\"get\" action=\"/messages\">\
         <div><label for=\"topic\">Topic</label><input id=\"topic\" name=\"topic\" required value=\"{}\"></div>\
         <div><label for=\"partition\">Partition</label><input id=\"partition\" name=\"partition\" inputmode=\"numeric\" value=\"{partition}\"></div>\
         <div><label for=\"offset\">Start offset</label><input id=\"offset\" name=\"offset\" inputmode=\"numeric\" placeholder=\"log start\" value=\"{}\"></div>\
         <div><label for=\"timestamp\">or start time (UTC)</label><input id=\"timestamp\" name=\"timestamp\" placeholder=\"2026-01-31T12:00 or ms\" value=\"{}\"></div>\
         <div><label for=\"limit\">Per page</label><input id=\"limit\" name=\"limit\" inputmode=\"numeric\" value=\"{limit}\"></div>\
         <div><label for=\"format\">Show as</label><select id=\"format\" name=\"format\">{formats}</select></div>\
         <div><button type=\"submit\">Show</button></div></form>",
        escape(topic),
        escape(offset),
        escape(timestamp),
    )
}

async fn messages(State(state): State<HttpState>, RawQuery(raw): RawQuery) -> Response {
    render(state, move |broker, _| {
        let query = Query::parse(raw.as_deref())?;
        let format = query.choice("format", &FORMATS)?;
        let limit = query
            .int("limit", 1, RECORDS_PER_PAGE_MAX)?
            .unwrap_or(RECORDS_PER_PAGE_DEFAULT);
        let partition = query.int("partition", 0, i64::from(i32::MAX))?.unwrap_or(0);
        let offset = query.int("offset", 0, i64::MAX)?;
        let timestamp = match query.get("timestamp") {
            None => None,
            Some(text) => Some(match text.parse::<i64>() {
                Ok(ms) if ms >= 0 => ms,
                _ => html::parse_utc_datetime(text).ok_or_else(|| {
                    PageError::Bad(format!(
                        "parameter \"timestamp\" must be a time like 2026-01-31T12:00:00 (UTC) or \
                         milliseconds since the epoch, not {text:?}"
                    ))
                })?,
            }),
        };
        if offset.is_some() && timestamp.is_some() {
            return Err(PageError::Bad(
                "give a start offset or a start time, not both".into(),
            ));
        }
        let Some(topic) = query.get("topic").map(str::to_string) else {
            let body = format!(
                "<h1>Messages</h1><p>Pick a topic and partition (or open one from a \
                 <a href=\"/topics\">topic's page</a>).</p>{}",
                browse_form("", 0, "", "", limit, format)
            );
            return Ok(page("Messages", Section::Messages, &body));
        };
        params::topic_name(&topic)?;
        let partition = i32::try_from(partition).map_err(|_| PageError::Internal)?;
        let log_start = broker
            .topic(&topic)
            .and_then(|t| t.partition(partition).map(|p| p.log.log_start_offset()));
        let start = match (offset, timestamp) {
            (Some(o), _) => BrowseStart::Offset(o),
            (None, Some(ts)) => BrowseStart::Timestamp(ts),
            (None, None) => BrowseStart::Offset(log_start.unwrap_or(0)),
        };
        let limits = BrowseLimits {
            records_max: limit as usize,
            value_bytes_max: VALUE_BYTES_SHOWN,
            read_bytes_max: PAGE_READ_BYTES_MAX,
        };
        let page_data: RecordPage = broker
            .browse_records(&topic, partition, start, limits)
            .map_err(browse_error)?;
        let mut body = format!(
            "<h1>Messages in <a class=\"name\" href=\"{}\">{}</a> partition {partition}</h1>{}",
            escape(&topic_href(&topic)),
            escape(&topic),
            browse_form(
                &topic,
                i64::from(partition),
                &offset.map_or(String::new(), |o| o.to_string()),
                query.get("timestamp").unwrap_or(""),
                limit,
                format
            )
        );
        let _ = write!(
            body,
            "<p id=\"range\">Offsets {}–{} readable (log start to high watermark). Showing {} records from offset {}.</p>",
            page_data.log_start_offset,
            page_data.high_watermark,
            page_data.records.len(),
            page_data.start_offset
        );
        let base = format!(
            "/messages?topic={}&partition={partition}&limit={limit}&format={format}",
            encode_query(&topic)
        );
        let mut pager = String::from("<nav class=\"pager\" aria-label=\"Record pages\"><ul>");
        if page_data.start_offset > page_data.log_start_offset {
            let prev = (page_data.start_offset - limit).max(page_data.log_start_offset);
            let _ = write!(
                pager,
                "<li><a href=\"{}\">First</a></li><li><a rel=\"prev\" href=\"{}\">Previous</a></li>",
                escape(&format!("{base}&offset={}", page_data.log_start_offset)),
                escape(&format!("{base}&offset={prev}"))
            );
        }
        if let Some(next) = page_data.next_offset {
            let _ = write!(
                pager,
                "<li><a rel=\"next\" href=\"{}\">Next</a></li>",
                escape(&format!("{base}&offset={next}"))
            );
        }
        pager.push_str("</ul></nav>");
        body.push_str(
            "<div class=\"search\"><label for=\"find\">Search this page</label>\
             <input id=\"find\" type=\"search\" data-filter=\"#records tbody tr\" \
             placeholder=\"text in keys, values or headers\">\
             <span id=\"find-count\" aria-live=\"polite\"></span></div>",
        );
        if page_data.records.is_empty() {
            body.push_str("<p>No records here.</p>");
        } else {
            let _ = write!(
                body,
                "<div class=\"scroll\"><table id=\"records\"><thead><tr><th scope=\"col\" class=\"num\">Offset</th>\
                 <th scope=\"col\">Timestamp</th><th scope=\"col\">Key</th><th scope=\"col\">Value</th>\
                 <th scope=\"col\">Headers</th></tr></thead><tbody>{}</tbody></table></div>",
                record_rows(&topic, partition, &page_data.records, format)
            );
        }
        body.push_str(&pager);
        Ok(page(&format!("Messages in {topic}"), Section::Messages, &body))
    })
    .await
}

/// One record with its key and value shown up to [`EXPANDED_VALUE_BYTES_MAX`].
async fn record(State(state): State<HttpState>, RawQuery(raw): RawQuery) -> Response {
    render(state, move |broker, _| {
        let query = Query::parse(raw.as_deref())?;
        let format = query.choice("format", &FORMATS)?;
        let topic = query
            .get("topic")
            .ok_or_else(|| PageError::Bad("parameter \"topic\" is required".into()))?
            .to_string();
        params::topic_name(&topic)?;
        let partition = query
            .int("partition", 0, i64::from(i32::MAX))?
            .ok_or_else(|| PageError::Bad("parameter \"partition\" is required".into()))?;
        let offset = query
            .int("offset", 0, i64::MAX)?
            .ok_or_else(|| PageError::Bad("parameter \"offset\" is required".into()))?;
        let partition = i32::try_from(partition).map_err(|_| PageError::Internal)?;
        let limits = BrowseLimits {
            records_max: 1,
            value_bytes_max: EXPANDED_VALUE_BYTES_MAX,
            read_bytes_max: PAGE_READ_BYTES_MAX,
        };
        let found = broker
            .browse_records(&topic, partition, BrowseStart::Offset(offset), limits)
            .map_err(browse_error)?;
        let record = found
            .records
            .into_iter()
            .find(|r| r.offset == offset)
            .ok_or_else(|| {
                PageError::NotFound(format!(
                    "no record at offset {offset} (compacted away, or a transaction marker)"
                ))
            })?;
        let mut body = format!(
            "<h1>Record {offset} of <a class=\"name\" href=\"{}\">{}</a> partition {partition}</h1>\
             <p><a href=\"{}\">Back to the messages</a>. Shown up to {} per key and value.</p>",
            escape(&topic_href(&topic)),
            escape(&topic),
            escape(&format!("{}&offset={offset}", messages_href(&topic, partition))),
            html::bytes(EXPANDED_VALUE_BYTES_MAX as u64),
        );
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"records\"><thead><tr><th scope=\"col\" class=\"num\">Offset</th>\
             <th scope=\"col\">Timestamp</th><th scope=\"col\">Key</th><th scope=\"col\">Value</th>\
             <th scope=\"col\">Headers</th></tr></thead><tbody>{}</tbody></table></div>",
            record_rows(&topic, partition, std::slice::from_ref(&record), format)
        );
        Ok(page(&format!("Record {offset}"), Section::Messages, &body))
    })
    .await
}

// ---------------------------------------------------------------------------
// Consumer groups
// ---------------------------------------------------------------------------

async fn groups(State(state): State<HttpState>, RawQuery(raw): RawQuery) -> Response {
    render(state, move |broker, _| {
        let query = Query::parse(raw.as_deref())?;
        let page_asked = query.page()?;
        let all = broker.groups_view().groups;
        let lags: std::collections::BTreeMap<String, i64> = broker.group_lags().into_iter().collect();
        let pages = pages_for(all.len(), LIST_PAGE_ROWS);
        let page_no = checked_page(page_asked, pages)?;
        let mut body = format!(
            "<h1>Consumer groups</h1><p>{} groups coordinated by this broker.</p>\
             <div class=\"scroll\"><table id=\"groups\"><thead><tr><th scope=\"col\">Group</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Type</th><th scope=\"col\" class=\"num\">Members</th>\
             <th scope=\"col\" class=\"num\">Lag</th></tr></thead><tbody>",
            thousands(all.len() as i64)
        );
        for g in all.iter().skip((page_no - 1) * LIST_PAGE_ROWS).take(LIST_PAGE_ROWS) {
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th><td>{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&group_href(&g.group_id)),
                escape(&g.group_id),
                g.state,
                g.group_type,
                g.members,
                lags.get(&g.group_id).map_or("–".to_string(), |l| thousands(*l))
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&pagination(page_no, pages, |n| format!("/groups?page={n}")));
        Ok(page("Consumer groups", Section::Groups, &body))
    })
    .await
}

async fn group(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    render(state, move |broker, console| {
        let Path(group_id) = path
            .map_err(|_| PageError::Bad("the group id in the URL is not valid UTF-8".into()))?;
        let view = broker.group_view(&group_id).ok_or_else(|| {
            PageError::NotFound(format!(
                "group {group_id:?} is not coordinated by this broker (or does not exist)"
            ))
        })?;
        let mut body = format!(
            "<h1>Group <span class=\"name\">{}</span></h1><dl class=\"tiles\">\
             <div class=\"tile\"><dt>State</dt><dd id=\"group-state\">{}</dd></div>\
             <div class=\"tile\"><dt>Protocol</dt><dd>{} {}</dd></div>\
             <div class=\"tile\"><dt>Members</dt><dd>{}</dd></div>\
             <div class=\"tile\"><dt>Total lag</dt><dd id=\"total-lag\">{}</dd></div></dl>",
            escape(&group_id),
            view.state,
            escape(&view.protocol_type),
            escape(&view.protocol_name),
            view.members.len(),
            thousands(view.total_lag)
        );
        // The ring's points, then the lag as it is now, so a group seen for the
        // first time still has a point to show.
        let tracked = console.history().lag.points(&group_id);
        let mut points: Vec<(i64, f64)> = tracked
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|(t, l)| (*t, *l as f64))
            .collect();
        points.push((now_ms(), view.total_lag as f64));
        let _ = write!(
            body,
            "<section aria-labelledby=\"lag\"><h2 id=\"lag\">Lag over the last hour</h2>{}{}</section>",
            charts::line_chart(
                "Total lag of the group over the last hour",
                &[charts::Series { name: "total lag", points: &points }],
                |v| thousands(v.round() as i64)
            ),
            if tracked.is_none() {
                format!(
                    "<p class=\"note\">Not sampled yet, or over the {} groups whose history is kept.</p>",
                    history::LAG_SERIES_MAX
                )
            } else {
                String::new()
            }
        );
        body.push_str(
            "<section aria-labelledby=\"members\"><h2 id=\"members\">Members</h2>\
             <div class=\"scroll\"><table id=\"member-table\"><thead><tr><th scope=\"col\">Member</th>\
             <th scope=\"col\">Client</th><th scope=\"col\">Host</th><th scope=\"col\">Assigned</th></tr>\
             </thead><tbody>",
        );
        for m in &view.members {
            let assigned: Vec<String> = m
                .assignments
                .iter()
                .map(|a| {
                    let parts: Vec<String> = a.partitions.iter().map(i32::to_string).collect();
                    format!("{} [{}]", escape(&a.topic), parts.join(", "))
                })
                .collect();
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><code>{}</code>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&m.member_id),
                m.group_instance_id
                    .as_deref()
                    .map_or(String::new(), |i| format!(" (static: {})", escape(i))),
                escape(&m.client_id),
                escape(&m.client_host),
                if assigned.is_empty() { "–".to_string() } else { assigned.join("; ") }
            );
        }
        if view.members.is_empty() {
            body.push_str("<tr><td colspan=\"4\">No members.</td></tr>");
        }
        body.push_str("</tbody></table></div></section>");
        body.push_str(
            "<section aria-labelledby=\"offsets\"><h2 id=\"offsets\">Committed offsets</h2>\
             <div class=\"scroll\"><table id=\"offset-table\"><thead><tr><th scope=\"col\">Topic</th>\
             <th scope=\"col\" class=\"num\">Partition</th><th scope=\"col\" class=\"num\">Committed</th>\
             <th scope=\"col\" class=\"num\">High watermark</th><th scope=\"col\" class=\"num\">Lag</th></tr>\
             </thead><tbody>",
        );
        for o in &view.offsets {
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&topic_href(&o.topic)),
                escape(&o.topic),
                o.partition,
                o.committed_offset,
                o.high_watermark.map_or("–".to_string(), |h| h.to_string()),
                o.lag.map_or("–".to_string(), |l| l.to_string())
            );
        }
        body.push_str("</tbody></table></div></section>");
        Ok(page(&format!("Group {group_id}"), Section::Groups, &body))
    })
    .await
}

// ---------------------------------------------------------------------------
// Reassignments
// ---------------------------------------------------------------------------

async fn reassignments(State(state): State<HttpState>) -> Response {
    render(state, move |broker, _| {
        let running = broker.reassignments_view();
        let mut body = String::from("<h1>Reassignments in progress</h1>");
        if running.is_empty() {
            body.push_str("<p id=\"no-reassignments\">None: every partition is on its target replicas.</p>");
            return Ok(page("Reassignments", Section::Reassignments, &body));
        }
        let _ = write!(
            body,
            "<p>{} partitions are moving.</p><div class=\"scroll\"><table id=\"reassignments\"><thead><tr>\
             <th scope=\"col\">Partition</th><th scope=\"col\">Replicas now</th><th scope=\"col\">Target</th>\
             <th scope=\"col\">Adding</th><th scope=\"col\">Removing</th><th scope=\"col\">ISR</th>\
             <th scope=\"col\">Progress</th></tr></thead><tbody>",
            running.len()
        );
        for r in &running {
            let mut progress = String::new();
            for a in &r.adding_progress {
                let detail = match (a.in_isr, a.log_end_offset, a.leader_log_end_offset) {
                    (true, _, _) => "in sync".to_string(),
                    (false, Some(end), Some(leader_end)) if leader_end > 0 => {
                        let percent = (end as f64 / leader_end as f64 * 100.0).clamp(0.0, 100.0);
                        format!(
                            "<progress max=\"100\" value=\"{percent:.0}\"></progress> {percent:.0}% ({end} of {leader_end})"
                        )
                    }
                    _ => "catching up (progress known to the leader)".to_string(),
                };
                let _ = write!(progress, "<div>node {}: {detail}</div>", a.broker);
            }
            if r.adding_progress.is_empty() {
                progress.push_str("removing replicas");
            }
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><a href=\"{}\">{}</a>-{}</th><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{progress}</td></tr>",
                escape(&topic_href(&r.topic)),
                escape(&r.topic),
                r.partition,
                list_ids(&r.replicas),
                list_ids(&r.target_replicas),
                list_ids(&r.adding_replicas),
                list_ids(&r.removing_replicas),
                list_ids(&r.isr),
            );
        }
        body.push_str("</tbody></table></div>");
        Ok(page("Reassignments", Section::Reassignments, &body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_escaped_in_every_format() {
        let evil = b"<script>alert(1)</script>";
        for format in FORMATS {
            let shown = show_bytes(evil, format);
            assert!(!shown.contains("<script"), "{format}: {shown}");
        }
        assert!(show_bytes(evil, "text").contains("&lt;script&gt;"));
    }

    #[test]
    fn json_is_pretty_printed_and_non_json_is_marked() {
        assert_eq!(
            show_bytes(br#"{"a":1}"#, "json"),
            "{\n  &quot;a&quot;: 1\n}"
        );
        assert!(show_bytes(b"not json", "json").contains("(not JSON)"));
    }

    #[test]
    fn hex_shows_offsets_bytes_and_printable_ascii() {
        let shown = show_bytes(b"AB\x00", "hex");
        assert_eq!(shown, format!("00000000  {:<47}  AB.\n", "41 42 00"));
    }

    #[test]
    fn a_cut_value_links_to_its_expansion() {
        let cut = BrowsedBytes {
            bytes: b"abc".to_vec(),
            full_bytes: 5000,
        };
        let cell = bytes_cell(
            Some(&cut),
            "text",
            "/messages/record?topic=t&partition=0&offset=1",
        );
        assert!(cell.contains("Showing 3 B of 4.9 KiB"));
        assert!(cell.contains("href=\"/messages/record?topic=t&amp;partition=0&amp;offset=1\""));
        assert_eq!(
            bytes_cell(None, "text", ""),
            "<span class=\"note\">null</span>"
        );
    }
}
