//! Telemetry of a Rewind process (worker or coordinator): the Prometheus recorder behind the
//! `metrics` facade ([`install_metrics`]), the `/metrics` endpoint ([`serve_metrics`]) and the
//! `tracing` subscriber ([`init_tracing`]). Metric names are those of
//! [`rewind_common::metrics`].
//!
//! # Span fields
//!
//! Spans and events name the work they belong to with these fields, always spelled so (the
//! JSON lines carry them in `span` / `spans`, so one query finds a job's lines in every
//! process):
//!
//! - `tenant` — the tenant's name as configured;
//! - `job` — the job id;
//! - `task` — the task's message id;
//! - `shard` — the shard index within its snapshot's layout.
//!
//! For example `tracing::info_span!("diff", tenant = %t, job = %job, shard = i)`. No secret, no
//! token and no attribute value of a directory object is ever a field.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How often the recorder's upkeep runs (drains histogram samples into their buckets).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Upper bounds of the buckets of every `_seconds` histogram: a millisecond to ten minutes
/// (a Graph request, a shard load or diff, a task, a job phase).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Upper bounds of the buckets of every `_bytes` histogram: 1 KiB to 1 GiB, by fours.
pub const BYTES_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(std::io::Error),
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The handle of the process's recorder, once installed.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the process's `metrics` recorder, describes every metric
/// of [`rewind_common::metrics::ALL`], and starts its upkeep. Once per process: a later call
/// returns the same handle. Fails when another recorder was installed first.
///
/// Upkeep runs on a thread of its own, every [`UPKEEP_INTERVAL`], rather than on a tokio task:
/// the recorder belongs to the process, and a task would end with the runtime that spawned it
/// (each `#[tokio::test]` has its own), leaving histograms to grow without bound.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let mut installed = HANDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder_error =
        |e: metrics_exporter_prometheus::BuildError| TelemetryError::Recorder(e.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS))
        .map_err(recorder_error)?
        .install_recorder()
        .map_err(recorder_error)?;
    rewind_common::metrics::describe_all();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })
        .map_err(TelemetryError::Upkeep)?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Serves `GET /metrics` (the Prometheus text format of `handle`) on `addr` (port 0 picks a
/// free one). Returns the address bound and the server's task, which runs until the runtime
/// stops or the task is aborted. Must be called within a tokio runtime.
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { render(handle).await }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(addr = %bound, "serving /metrics");
    Ok((bound, server))
}

/// Renders the metrics off the async workers (rendering walks every series).
async fn render(handle: PrometheusHandle) -> Response {
    match tokio::task::spawn_blocking(move || handle.render()).await {
        Ok(text) => ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed",
            )
                .into_response()
        }
    }
}

/// Installs the process's `tracing` subscriber, writing to stderr: JSON lines when `json` (for
/// production: one object per event with its fields and spans), else human-readable lines
/// (coloured only on a terminal). Events are filtered by `filter` when given, else by
/// `RUST_LOG`, else at `info`; a filter that does not parse is replaced by `info` with a
/// warning. A second call (or a subscriber installed by someone else) leaves the first in
/// place.
pub fn init_tracing(json: bool, filter: Option<&str>) {
    let wanted = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|f| !f.trim().is_empty());
    let (env_filter, refused) = match wanted.as_deref().map(EnvFilter::try_new) {
        None => (EnvFilter::new("info"), None),
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if installed.is_ok() {
        if let Some(error) = refused {
            tracing::warn!(%error, filter = wanted.as_deref().unwrap_or(""), "log filter refused, logging at info");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_can_be_initialised_twice_and_a_bad_filter_falls_back() {
        init_tracing(false, Some("[[[not a filter"));
        init_tracing(true, None);
        tracing::info!(tenant = "contoso", "still logging");
    }

    #[test]
    fn the_recorder_is_installed_once() {
        let a = install_metrics().unwrap();
        let b = install_metrics().unwrap();
        // A counter only this test records: both handles render it with its value. (Whole
        // renders are not compared: other tests of this process record meanwhile, and the
        // families come in no fixed order.)
        metrics::counter!("rewind_telemetry_test_installed_once_total").increment(7);
        for handle in [&a, &b] {
            let text = handle.render();
            assert!(
                text.lines()
                    .any(|l| l == "rewind_telemetry_test_installed_once_total 7"),
                "{text}"
            );
        }
    }
}
