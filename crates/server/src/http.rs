//! The operations HTTP listener: `/metrics` (Prometheus, OpenMetrics text format),
//! `/health/live`, `/health/ready`, and the read-only JSON admin API under `/v1/`
//! (described by `/v1/openapi.json`, the file `openapi.json` beside this one).
//!
//! Owns: the HTTP routes and their answers. It must never sit on the Kafka
//! request path: it reads the broker's counters and state only when scraped or
//! probed, and runs apart from the Kafka listener (its own port and tasks), so
//! a slow scrape can't delay a produce.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_broker::Broker;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Set once the logs are recovered; absent before (not ready).
    pub broker: Arc<Broker>,
    /// True once shutdown began: ready answers 503 from then on, even before the
    /// broker has told the controller it is leaving.
    pub shutting_down: watch::Receiver<bool>,
    /// The console's charts' history, fed by its sampler while the listener runs.
    pub console: crate::console::Console,
}

/// prometheus-client writes the OpenMetrics text format (counters' `# TYPE` without
/// `_total`, a closing `# EOF`), which Prometheus reads when told so by this type.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes, apart from any socket, so tests can drive them directly.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cluster", get(cluster))
        .route("/v1/topics", get(topics))
        .route("/v1/topics/{name}", get(topic))
        .route("/v1/groups", get(groups))
        .route("/v1/groups/{group_id}", get(group))
        .route("/v1/config", get(config))
        .merge(crate::console::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `stop` turns true, then finishes the requests in progress.
pub async fn serve_http(
    listener: TcpListener,
    state: HttpState,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let sampler = tokio::spawn(crate::console::run_sampler(
        state.broker.clone(),
        state.console.clone(),
        stop.clone(),
    ));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    sampler.abort();
    served
}

/// 200 while the process answers at all (a liveness probe restarts it otherwise).
async fn live() -> Response {
    json(StatusCode::OK, "live", None)
}

/// 200 when the broker should get traffic; 503 with the reason otherwise.
async fn ready(State(state): State<HttpState>) -> Response {
    if *state.shutting_down.borrow() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready",
            Some("shutting down"),
        );
    }
    match state.broker.readiness() {
        Ok(()) => json(StatusCode::OK, "ready", None),
        Err(reason) => json(StatusCode::SERVICE_UNAVAILABLE, "not ready", Some(reason)),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    // Reading logs' sizes and the groups walks every partition: off the async threads.
    let broker = state.broker.clone();
    match tokio::task::spawn_blocking(move || weir_broker::metrics::render(&broker)).await {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The admin API's description. Hand-written rather than generated: it is the
/// contract a console builds on, reviewed as a document; the tests check every
/// endpoint's answers against it, so it can't drift from the code unnoticed.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Builds a view off the async threads (views walk partitions and groups under
/// their locks) and answers it as JSON; `None` is a 404 naming what was missing.
async fn view<T, F>(state: HttpState, what: String, build: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&weir_broker::Broker) -> Option<T> + Send + 'static,
{
    let broker = state.broker.clone();
    match tokio::task::spawn_blocking(move || {
        build(broker.as_ref()).map(|v| serde_json::to_string(&v))
    })
    .await
    {
        Ok(Some(Ok(body))) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("{what} not found")),
        Ok(Some(Err(_))) | Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn cluster(State(state): State<HttpState>) -> Response {
    view(state, "cluster".into(), |b| Some(b.cluster_view())).await
}

async fn topics(State(state): State<HttpState>) -> Response {
    view(state, "topics".into(), |b| Some(b.topics_view())).await
}

async fn topic(State(state): State<HttpState>, Path(name): Path<String>) -> Response {
    let what = format!("topic {name:?}");
    view(state, what, move |b| b.topic_view(&name)).await
}

async fn groups(State(state): State<HttpState>) -> Response {
    view(state, "groups".into(), |b| Some(b.groups_view())).await
}

async fn group(State(state): State<HttpState>, Path(group_id): Path<String>) -> Response {
    let what = format!("group {group_id:?}");
    view(state, what, move |b| b.group_view(&group_id)).await
}

async fn config(State(state): State<HttpState>) -> Response {
    view(state, "config".into(), |b| Some(b.config_view())).await
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/openapi.json)",
    )
}

/// The admin API's error body: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn json(status: StatusCode, state: &str, reason: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "status": state });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
