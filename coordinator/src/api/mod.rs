//! The coordinator's HTTP API (axum): Microsoft's `/directory/recovery` routes per tenant
//! (`graph`), Rewind's extensions (`rewind`: job views, report exports, a recovery's actions,
//! planned calls, approval and undo; `admin`: tenants and tokens), and operations (`ops`: health, readiness, metrics). The contract is
//! `docs/api.md`. Every error is Graph's shape (`error`), every route but the operations'
//! needs a bearer token (`auth`).

pub mod admin;
pub mod auth;
pub mod change;
pub mod error;
pub mod graph;
pub mod odata;
pub mod ops;
pub mod rewind;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use rewind_common::metrics as m;
use rewind_common::secret_box::SecretKey;
use serde::de::DeserializeOwned;

use crate::engine::Engine;
use error::ApiError;

/// Where `rewind coordinator` serves the API unless told otherwise.
pub const DEFAULT_API_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The largest request body taken (1 MiB); a larger one is a 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// Reports whose range counts are remembered (a finished report's never change).
const RANGE_COUNT_CACHE: usize = 256;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) engine: Engine,
    pub(crate) key: Arc<SecretKey>,
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    range_counts: Arc<Mutex<HashMap<String, RangeCounts>>>,
}

/// The entries of each range of a finished report, by range number.
pub type RangeCounts = Arc<BTreeMap<u32, u64>>;

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API of a running node's engine; `key` seals the secrets of tenants added through
    /// it. Installs the process's Prometheus recorder if none is (for `/metrics`).
    pub fn new(engine: Engine, key: SecretKey) -> ApiState {
        let metrics = match rewind_worker::telemetry::install_metrics() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "the API serves no /metrics");
                None
            }
        };
        ApiState {
            engine,
            key: Arc::new(key),
            metrics,
            range_counts: Arc::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The entries of each range of a finished report (remembered: they never change).
    pub(crate) async fn range_counts(&self, job: &str) -> Result<RangeCounts, ApiError> {
        if let Some(hit) = self
            .range_counts
            .lock()
            .ok()
            .and_then(|c| c.get(job).cloned())
        {
            return Ok(hit);
        }
        let engine = self.engine.clone();
        let id = job.to_owned();
        let counts =
            Arc::new(tokio::task::spawn_blocking(move || engine.report_range_counts(&id)).await??);
        if let Ok(mut cache) = self.range_counts.lock() {
            if cache.len() >= RANGE_COUNT_CACHE {
                cache.clear();
            }
            cache.insert(job.to_owned(), counts.clone());
        }
        Ok(counts)
    }
}

/// Runs blocking work (sled scans, rendering) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await?
}

/// A JSON request body: over [`BODY_LIMIT`] a 413, not JSON a 415, malformed a 400 naming the
/// problem (serde's message: the field, the line and column). An empty body reads as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.contains("+json")
            });
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(BODY_LIMIT)
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {e}"))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            if json_type == Some(false) {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupportedMediaType",
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// The outermost layer: a request id for the request (in errors and the `request-id` header),
/// and the request's count and seconds by route and status.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = uuid::Uuid::new_v4().to_string();
    let mut response = error::REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if response.status().as_u16() >= 400 && !is_json(&response) {
        // A rejection of the framework (a path that does not decode, ...): in Graph's shape
        // too, with its text as the message.
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&bytes).trim().to_owned();
        response = error::REQUEST_ID.sync_scope(id.clone(), || {
            ApiError::from_status(status, message).into_response()
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    let code = response.status().as_u16().to_string();
    metrics::counter!(m::API_REQUESTS_TOTAL, m::label::ROUTE => route.clone(), m::label::CODE => code)
        .increment(1);
    metrics::histogram!(m::API_REQUEST_SECONDS, m::label::ROUTE => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no resource at {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "methodNotAllowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Every route of the API.
pub fn router(state: ApiState) -> Router {
    const MS: &str = "/tenants/{tenant}/v1.0/directory/recovery";
    const EXT: &str = "/tenants/{tenant}/rewind";
    let p = |s: &str| format!("{MS}{s}");
    let e = |s: &str| format!("{EXT}{s}");
    let protected = Router::new()
        .route(
            &p("/snapshots"),
            get(graph::list_snapshots).post(graph::backup_now),
        )
        .route(&p("/snapshots/{snapshot}"), get(graph::get_snapshot))
        .route(
            &p("/snapshots/{snapshot}/recoveryPreviewJobs"),
            get(graph::list_preview_jobs).post(graph::start_preview_job),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryPreviewJobs/{job}"),
            get(graph::get_preview_job),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryPreviewJobs/{job}/getChanges"),
            get(graph::get_changes),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryPreviewJobs/{job}/microsoft.graph.entraRecoveryServices.getChanges"),
            get(graph::get_changes),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryJobs"),
            get(graph::list_recovery_jobs).post(graph::start_recovery_job),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryJobs/{job}"),
            get(graph::get_recovery_job),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryJobs/{job}/getFailedChanges"),
            get(graph::get_failed_changes),
        )
        .route(
            &p("/snapshots/{snapshot}/recoveryJobs/{job}/microsoft.graph.entraRecoveryServices.getFailedChanges"),
            get(graph::get_failed_changes),
        )
        .route(&p("/jobs"), get(graph::list_jobs))
        .route(&p("/jobs/{job}"), get(graph::get_job))
        .route(&p("/jobs/{job}/cancel"), post(graph::cancel_job))
        .route(
            &p("/jobs/{job}/microsoft.graph.entraRecoveryServices.cancel"),
            post(graph::cancel_job),
        )
        .route(&e("/jobs"), get(rewind::list_jobs))
        .route(&e("/jobs/{job}"), get(rewind::get_job))
        .route(&e("/reports/{job}/export"), get(rewind::export))
        .route(&e("/recoveries/{job}/actions"), get(rewind::list_actions))
        .route(
            &e("/recoveries/{job}/actions/export"),
            get(rewind::export_actions),
        )
        .route(&e("/recoveries/{job}/calls"), get(rewind::planned_calls))
        .route(&e("/recoveries/{job}/approve"), post(rewind::approve))
        .route(&e("/recoveries/{job}/reject"), post(rewind::reject))
        .route(&e("/recoveries/{job}/undo"), post(rewind::undo))
        .route(
            "/admin/tenants",
            get(admin::list_tenants).post(admin::add_tenant),
        )
        .route(
            "/admin/tenants/{tenant}",
            get(admin::get_tenant)
                .patch(admin::update_tenant)
                .delete(admin::remove_tenant),
        )
        .route(
            "/admin/tenants/{tenant}/credentials",
            put(admin::set_credentials),
        )
        .route("/admin/tenants/{tenant}/apps", post(admin::add_app))
        .route(
            "/admin/tenants/{tenant}/apps/{client_id}",
            axum::routing::delete(admin::remove_app),
        )
        .route(
            "/admin/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route("/admin/audit", get(admin::list_audit))
        .route(
            "/admin/tokens/{id}",
            axum::routing::delete(admin::revoke_token),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(protected)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes (requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the API");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A response with a JSON body and a status.
pub(crate) fn json_response(status: axum::http::StatusCode, body: &serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
