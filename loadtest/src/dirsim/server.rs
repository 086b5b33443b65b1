//! The HTTP face of the simulator: the token endpoint, bearer-token checks, the Graph entry
//! point (with latency and dropped-connection faults) and `$batch`, `/metrics`, and the admin
//! routes under `/_admin/` (tenants and their apps, bulk load, settings, clock, counters, save).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post};
use axum::Router;
use rewind_common::graph_json::{format_time, from_graph_json, odata_type, parse_time};
use rewind_common::properties::Api;
use rewind_common::{ObjectId, ObjectType, SourceOfAuthority};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value as Json};

use super::error::GraphError;
use super::graph::{self, Ctx, GraphRequest, Reply};
use super::persist;
use super::state::{lock, read, write, App, AppCredentials, AppError, AppIndex, Tenant};
use super::writelog::{DEFAULT_TOP, MAX_TOP};

/// The simulator's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/_admin/tenants", get(list_tenants).post(create_tenant))
        .route("/_admin/tenants/{tenant}/apps", post(add_app))
        .route(
            "/_admin/tenants/{tenant}/objects",
            post(bulk_load).layer(DefaultBodyLimit::disable()),
        )
        .route("/_admin/tenants/{tenant}/objects/{id}", patch(sync_patch))
        .route(
            "/_admin/tenants/{tenant}/writes",
            get(write_log_page).delete(clear_write_log),
        )
        .route("/_admin/settings", get(get_settings).patch(patch_settings))
        .route("/_admin/clock", get(get_clock).post(set_clock))
        .route("/_admin/counters", get(counters))
        .route("/_admin/save", post(save))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/{version}/{*rest}", any(graph_entry))
        .fallback(fallback)
        .with_state(app)
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    bytes_response(status, body.to_string().into_bytes())
}

fn bytes_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn reply_response(reply: Reply) -> Response {
    let mut r = match reply.body {
        Some(b) => bytes_response(reply.status, b.into_bytes()),
        None => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = reply.status;
            r
        }
    };
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

fn error_response(app: &App, e: &GraphError) -> Response {
    reply_response(Reply::error(e, app.now()))
}

fn admin_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(
        status,
        &json!({"error": {"code": status.canonical_reason().unwrap_or("error"), "message": message.to_string()}}),
    )
}

async fn fallback(State(app): State<Arc<App>>) -> Response {
    let e = GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        "No such route on the simulator.",
    );
    error_response(&app, &e)
}

/// A response whose body fails at once, so the connection is cut without a complete answer.
fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped (injected fault)"))
    });
    Response::new(Body::from_stream(stream))
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

fn oauth_error(app: &App, status: StatusCode, code: &'static str, message: String) -> Response {
    let e = GraphError::new(status, code, message.clone());
    let mut body = e.body(&format_time(app.now()));
    if let Some(m) = body.as_object_mut() {
        m.insert("error_description".into(), Json::String(message));
    }
    json_response(status, &body)
}

async fn token(State(app): State<Arc<App>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return oauth_error(
                &app,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("AADSTS900144: malformed form body: {e}"),
            )
        }
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return oauth_error(
            &app,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type; only client_credentials is served.".into(),
        );
    }
    let Some(t) = app.tenant(&tenant) else {
        return oauth_error(
            &app,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    };
    // Any of the tenant's apps, each with its own secret only.
    let Some((client, secret_matches)) = t.find_app(field("client_id"), field("client_secret"))
    else {
        return oauth_error(
            &app,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{tenant}'.", field("client_id")),
        );
    };
    if !secret_matches {
        return oauth_error(
            &app,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.".into(),
        );
    }
    if !field("scope").ends_with("/.default") {
        return oauth_error(
            &app,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid; client credentials flows must use a scope ending in /.default.".into(),
        );
    }
    let lifetime = app.settings().token_lifetime_secs;
    let access_token = app.issue_token(&t.name, client, lifetime);
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime.saturating_sub(1),
            "ext_expires_in": lifetime.saturating_sub(1),
            "access_token": access_token,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Graph entry point and $batch

/// A Graph request of either version (`/{tenant}/v1.0/...` or `/{tenant}/beta/...`).
async fn graph_entry(
    State(app): State<Arc<App>>,
    Path((tenant_name, version, _rest)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body_bytes: Bytes,
) -> Response {
    let Some(api) = Api::ALL.into_iter().find(|a| a.segment() == version) else {
        return fallback(State(app)).await;
    };
    let settings = app.settings();
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    if app.drop_next(settings.drop_rate) {
        app.metrics.dropped();
        return dropped_connection();
    }
    let Some(tenant) = app.tenant(&tenant_name) else {
        return error_response(
            &app,
            &GraphError::unauthorized(format!("Tenant '{tenant_name}' is not served here.")),
        );
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(bearer) = bearer else {
        return error_response(&app, &GraphError::unauthorized("Access token is empty."));
    };
    let client = match app.token_grant(bearer) {
        Some((granted, client)) if granted == tenant.name => client,
        _ => {
            return error_response(
                &app,
                &GraphError::unauthorized("Access token has expired or is not yet valid."),
            )
        }
    };
    let path = uri.path().splitn(4, '/').nth(3).unwrap_or("").to_owned();
    let query: Vec<(String, String)> = match serde_urlencoded::from_str(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => {
            return error_response(
                &app,
                &GraphError::bad_request(format!("Invalid query string: {e}")),
            )
        }
    };
    // A `$batch` body is read typed, in place, by `batch` (its inner requests are many).
    let is_batch = path == "$batch";
    let body = if is_batch || body_bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Json>(&body_bytes) {
            Ok(b) => Some(b),
            Err(e) => {
                return error_response(
                    &app,
                    &GraphError::bad_request(format!("Invalid JSON body: {e}")),
                )
            }
        }
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let base = format!("http://{host}/{tenant_name}/{}", api.segment());
    let req = GraphRequest {
        method,
        path,
        query,
        body,
    };
    let raw = if is_batch { body_bytes } else { Bytes::new() };
    let app2 = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let ctx = Ctx {
            app: &app2,
            tenant: &tenant,
            base: &base,
            api,
            client,
        };
        let reply = if is_batch {
            if req.method == Method::POST {
                batch(&ctx, &raw)
            } else {
                Reply::error(&GraphError::method_not_allowed(), app2.now())
            }
        } else {
            graph::handle(&ctx, &req)
        };
        // Serialized here, off the async workers: a page of objects is a megabyte of JSON.
        reply_response(reply)
    })
    .await;
    match result {
        Ok(response) => response,
        Err(e) => error_response(
            &app,
            &GraphError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generalException",
                format!("request failed: {e}"),
            ),
        ),
    }
}

/// One inner request of a batch.
struct BatchItem {
    id: String,
    depends_on: Vec<String>,
    request: Result<GraphRequest, GraphError>,
}

/// A `$batch` body as sent, its inner requests read in place (their bodies as values).
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    requests: Vec<RawBatchItem<'a>>,
}

#[derive(Deserialize)]
struct RawBatchItem<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "dependsOn")]
    depends_on: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    body: Option<Json>,
}

/// A request id as the batch gives it: a string, or a number (as its text).
fn request_id(raw: &RawValue) -> Option<String> {
    match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str(raw.get()).ok(),
        Some(b'-' | b'0'..=b'9') => Some(raw.get().to_owned()),
        _ => None,
    }
}

fn parse_batch_item(item: RawBatchItem<'_>, api: Api) -> Result<BatchItem, GraphError> {
    let id = item
        .id
        .and_then(request_id)
        .ok_or_else(|| GraphError::bad_request("Every batch request needs an id."))?;
    let depends_on = item
        .depends_on
        .unwrap_or_default()
        .into_iter()
        .filter_map(request_id)
        .collect();
    let request = (|| {
        let method = item
            .method
            .as_deref()
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| GraphError::bad_request("A batch request needs a method."))?;
        let url = item
            .url
            .as_deref()
            .ok_or_else(|| GraphError::bad_request("A batch request needs a url."))?;
        // Inner URLs are relative to the batch's own version.
        let url = match url.starts_with("http") {
            true => {
                let version = format!("/{}/", api.segment());
                url.find(&version)
                    .map_or(url, |i| &url[i + version.len()..])
            }
            false => url.trim_start_matches('/'),
        };
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let query = match query {
            "" => Vec::new(),
            q => serde_urlencoded::from_str(q)
                .map_err(|e| GraphError::bad_request(format!("Invalid query string: {e}")))?,
        };
        Ok(GraphRequest {
            method,
            path: path.to_owned(),
            query,
            body: item.body.filter(|b| !b.is_null()),
        })
    })();
    Ok(BatchItem {
        id,
        depends_on,
        request,
    })
}

/// One inner answer of a `$batch`.
struct BatchResponse<'a> {
    id: &'a str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<graph::Payload>,
}

/// The text of a `$batch` answer, inner bodies embedded as they were rendered.
fn batch_answer(responses: &[BatchResponse<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + responses
            .iter()
            .map(|r| match &r.body {
                Some(graph::Payload::Raw(t)) => t.len() + 128,
                _ => 256,
            })
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"responses\":[");
    for (i, r) in responses.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing strings and maps into memory cannot fail.
        out.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut out, r.id);
        out.extend_from_slice(format!(",\"status\":{},\"headers\":{{", r.status).as_bytes());
        for (k, (name, value)) in r.headers.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, name);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, value);
        }
        out.push(b'}');
        if let Some(body) = &r.body {
            out.extend_from_slice(b",\"body\":");
            body.write_into(&mut out);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Runs a JSON batch: at most 20 requests, `dependsOn` honoured (a failed dependency yields
/// 424), each inner request throttled and faulted on its own.
fn batch(ctx: &Ctx<'_>, raw: &[u8]) -> Reply {
    let now = ctx.app.now();
    let run = || -> Result<Reply, GraphError> {
        let requests = serde_json::from_slice::<BatchBody<'_>>(raw)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    GraphError::bad_request("A batch needs a requests array.")
                }
                _ => GraphError::bad_request(format!("Invalid JSON body: {e}")),
            })?
            .requests;
        if requests.len() > 20 {
            return Err(GraphError::bad_request(format!(
                "The number of requests in the batch ({}) exceeds the limit of 20.",
                requests.len()
            )));
        }
        let items = requests
            .into_iter()
            .map(|item| parse_batch_item(item, ctx.api))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        if ids.len() != items.len() {
            return Err(GraphError::bad_request("Batch request ids must be unique."));
        }
        for item in &items {
            if let Some(d) = item.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
                return Err(GraphError::bad_request(format!(
                    "Request '{}' depends on '{d}', which is not in the batch.",
                    item.id
                )));
            }
        }
        // Order by dependencies (a cycle is a bad request).
        let mut order = Vec::with_capacity(items.len());
        let mut placed: HashSet<&str> = HashSet::new();
        while order.len() < items.len() {
            let before = order.len();
            for (i, item) in items.iter().enumerate() {
                if !placed.contains(item.id.as_str())
                    && item.depends_on.iter().all(|d| placed.contains(d.as_str()))
                {
                    placed.insert(item.id.as_str());
                    order.push(i);
                }
            }
            if order.len() == before {
                return Err(GraphError::bad_request(
                    "The dependsOn of the batch requests form a cycle.",
                ));
            }
        }
        let mut statuses: HashMap<&str, StatusCode> = HashMap::new();
        let mut responses = Vec::with_capacity(items.len());
        for i in order {
            let item = &items[i];
            let failed_dep = item
                .depends_on
                .iter()
                .any(|d| statuses.get(d.as_str()).is_none_or(|s| !s.is_success()));
            let reply = if failed_dep {
                if let Ok(r) = &item.request {
                    graph::log_unrun(ctx, r, StatusCode::FAILED_DEPENDENCY);
                }
                Reply::error(
                    &GraphError::new(
                        StatusCode::FAILED_DEPENDENCY,
                        "FailedDependency",
                        "A request this one depends on failed.",
                    ),
                    now,
                )
            } else {
                match &item.request {
                    Ok(r) => graph::handle(ctx, r),
                    Err(e) => Reply::error(e, now),
                }
            };
            statuses.insert(item.id.as_str(), reply.status);
            let mut headers: Vec<(&'static str, String)> = reply
                .headers
                .into_iter()
                .map(|(k, v)| match k {
                    "retry-after" => ("Retry-After", v),
                    other => (other, v),
                })
                .collect();
            if reply.body.is_some() {
                headers.push(("Content-Type", "application/json".into()));
            }
            responses.push(BatchResponse {
                id: &item.id,
                status: reply.status.as_u16(),
                headers,
                body: reply.body,
            });
        }
        Ok(Reply::raw(batch_answer(&responses)))
    };
    ctx.app.metrics.request("POST /$batch");
    run().unwrap_or_else(|e| Reply::error(&e, now))
}

// ---------------------------------------------------------------------------------------------
// Metrics and admin routes

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.to_prometheus(&app.write_windows());
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn maxima_json((writes, ca): (u64, u64)) -> Json {
    json!({
        "maxWritesPerSecond": writes,
        "maxConditionalAccessWritesPerSecond": ca,
    })
}

/// The counters, with each tenant's per-second write maxima under `tenants`, all its apps
/// together and (under `apps`, by client id) each app alone.
async fn counters(State(app): State<Arc<App>>) -> Response {
    let mut j = app.metrics.to_json(&app.write_windows());
    let tenants: Map<String, Json> = app
        .all_tenants()
        .iter()
        .map(|t| {
            let client_ids = t.client_ids();
            let (tenant, apps) = {
                let log = lock(&t.writes);
                let apps: Vec<(u64, u64)> = (0..client_ids.len())
                    .map(|i| log.app_max_per_second(i.try_into().unwrap_or(AppIndex::MAX)))
                    .collect();
                (log.max_per_second(), apps)
            };
            let mut summary = maxima_json(tenant);
            let apps: Map<String, Json> = client_ids
                .into_iter()
                .zip(apps)
                .map(|(id, maxima)| (id, maxima_json(maxima)))
                .collect();
            if let Some(m) = summary.as_object_mut() {
                m.insert("apps".into(), Json::Object(apps));
            }
            (t.name.clone(), summary)
        })
        .collect();
    if let Some(m) = j.as_object_mut() {
        m.insert("tenants".into(), Json::Object(tenants));
    }
    json_response(StatusCode::OK, &j)
}

/// Reads a non-negative integer query parameter; the message names it when it is not one.
fn query_number(query: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, String> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("{name} must be a non-negative integer, not {v:?}")),
    }
}

/// `GET /_admin/tenants/{tenant}/writes?after=N&top=M`: the write log's records with a seq
/// above `after` (default 0), at most `top` (default 1000, at most 10000), oldest first.
async fn write_log_page(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    uri: Uri,
) -> Response {
    let Some(t) = app.tenant(&tenant) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    let query: HashMap<String, String> = match serde_urlencoded::from_str(uri.query().unwrap_or(""))
    {
        Ok(q) => q,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, format!("bad query string: {e}")),
    };
    let paging = query_number(&query, "after", 0).and_then(|after| {
        match query_number(&query, "top", DEFAULT_TOP as u64)? {
            n if (1..=MAX_TOP as u64).contains(&n) => Ok((after, n as usize)),
            n => Err(format!("top must be between 1 and {MAX_TOP}, not {n}")),
        }
    });
    let (after, top) = match paging {
        Ok(p) => p,
        Err(message) => return admin_error(StatusCode::BAD_REQUEST, message),
    };
    let page = tokio::task::spawn_blocking(move || {
        let client_ids = t.client_ids();
        let page = lock(&t.writes).page(after, top, &client_ids);
        serde_json::to_vec(&page)
    })
    .await;
    match page {
        Ok(Ok(body)) => bytes_response(StatusCode::OK, body),
        Ok(Err(e)) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `DELETE /_admin/tenants/{tenant}/writes`: empties the write log (seqs start again from 1)
/// and resets the tenant's per-second write maxima.
async fn clear_write_log(State(app): State<Arc<App>>, Path(tenant): Path<String>) -> Response {
    let Some(t) = app.tenant(&tenant) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    // Dropping up to the capacity's records frees many paths: off the async workers, and
    // after the lock is released.
    let cleared = tokio::task::spawn_blocking(move || {
        let old = lock(&t.writes).clear();
        drop(old);
    });
    match cleared.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn tenant_summary(t: &Tenant) -> Json {
    json!({
        "tenant": t.name,
        "clientId": t.primary_client_id(),
        "apps": t.client_ids(),
        "organizationId": t.org_id.to_string(),
        "objects": read(&t.data).counts(),
    })
}

async fn list_tenants(State(app): State<Arc<App>>) -> Response {
    let list: Vec<Json> = app
        .all_tenants()
        .iter()
        .map(|t| tenant_summary(t))
        .collect();
    json_response(StatusCode::OK, &Json::Array(list))
}

async fn create_tenant(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Json>(&body) else {
        return admin_error(StatusCode::BAD_REQUEST, "a JSON object was expected");
    };
    let s = |k: &str| body.get(k).and_then(Json::as_str);
    let (Some(name), Some(client_id), Some(secret)) =
        (s("tenant"), s("clientId"), s("clientSecret"))
    else {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "tenant, clientId and clientSecret are required",
        );
    };
    let org_id = match s("organizationId").map(str::parse::<ObjectId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    match app.create_tenant(name, client_id, secret, org_id) {
        Ok(t) => json_response(StatusCode::CREATED, &tenant_summary(&t)),
        Err(e @ super::state::TenantError::Exists(_)) => admin_error(StatusCode::CONFLICT, e),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

/// `POST /_admin/tenants/{tenant}/apps` `{"clientId","clientSecret"}`: adds an app
/// registration to the tenant; answers 201 with the tenant's summary.
async fn add_app(State(app): State<Arc<App>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let Some(t) = app.tenant(&tenant) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    let Some(body) = serde_json::from_slice::<Json>(&body)
        .ok()
        .and_then(|b| b.as_object().cloned())
    else {
        return admin_error(StatusCode::BAD_REQUEST, "a JSON object was expected");
    };
    let field = |name: &str| match body.get(name).and_then(Json::as_str) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(format!("{name} is required (a non-empty string)")),
    };
    let credentials = field("clientId").and_then(|client_id| {
        Ok(AppCredentials {
            client_id,
            client_secret: field("clientSecret")?,
        })
    });
    let credentials = match credentials {
        Ok(c) => c,
        Err(message) => return admin_error(StatusCode::BAD_REQUEST, message),
    };
    match t.add_app(credentials) {
        Ok(()) => json_response(StatusCode::CREATED, &tenant_summary(&t)),
        Err(e @ AppError::Exists(_)) => admin_error(StatusCode::CONFLICT, e),
        Err(e @ AppError::TooMany) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn get_settings(State(app): State<Arc<App>>) -> Response {
    match serde_json::to_value(app.settings()) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn patch_settings(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(patch) = serde_json::from_slice::<Json>(&body) else {
        return admin_error(StatusCode::BAD_REQUEST, "a JSON object was expected");
    };
    let merged = match app.settings().merged(&patch) {
        Ok(s) => s,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    for rate in [
        merged.error_503_rate,
        merged.drop_rate,
        merged.write_429_rate,
        merged.write_503_rate,
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return admin_error(StatusCode::BAD_REQUEST, "rates must be between 0 and 1");
        }
    }
    *write(&app.settings) = merged;
    get_settings(State(app)).await
}

fn clock_json(app: &App) -> Json {
    let now = app.now();
    json!({"now": now, "time": format_time(now), "offsetSecs": app.clock_offset()})
}

async fn get_clock(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, &clock_json(&app))
}

/// `{"set": unix}`, `{"setTime": "2026-...Z"}`, `{"advanceSecs": n}` or `{"advanceDays": n}`;
/// objects whose recycle-bin time is over are purged at once.
async fn set_clock(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Json>(&body) else {
        return admin_error(StatusCode::BAD_REQUEST, "a JSON object was expected");
    };
    if let Some(t) = body.get("set").and_then(Json::as_i64) {
        app.set_now(t);
    } else if let Some(t) = body.get("setTime").and_then(Json::as_str) {
        match parse_time(t) {
            Some(t) => app.set_now(t),
            None => return admin_error(StatusCode::BAD_REQUEST, "setTime is not an RFC 3339 time"),
        }
    } else if let Some(s) = body.get("advanceSecs").and_then(Json::as_i64) {
        app.advance(s);
    } else if let Some(d) = body.get("advanceDays").and_then(Json::as_i64) {
        app.advance(d.saturating_mul(86_400));
    } else {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "one of set, setTime, advanceSecs, advanceDays is required",
        );
    }
    let app2 = app.clone();
    let purged = tokio::task::spawn_blocking(move || {
        let now = app2.now();
        let after = app2.settings().purge_after_secs();
        app2.all_tenants()
            .iter()
            .map(|t| write(&t.data).purge_expired(now, after))
            .sum::<usize>()
    })
    .await
    .unwrap_or(0);
    let mut j = clock_json(&app);
    if let Some(m) = j.as_object_mut() {
        m.insert("purged".into(), Json::from(purged));
    }
    json_response(StatusCode::OK, &j)
}

/// The object type a bulk-load line names (`type`, else `@odata.type`).
fn line_type(line: &Map<String, Json>) -> Option<ObjectType> {
    if let Some(t) = line.get("type").and_then(Json::as_str) {
        return t.parse().ok();
    }
    let odata = line.get("@odata.type").and_then(Json::as_str)?;
    if matches!(
        odata,
        "#microsoft.graph.ipNamedLocation" | "#microsoft.graph.countryNamedLocation"
    ) {
        return Some(ObjectType::NamedLocation);
    }
    ObjectType::ALL
        .into_iter()
        .find(|t| odata_type(*t) == odata)
}

/// Loads JSON Lines of Graph-shaped objects (each with a `type`) into a tenant, replacing
/// objects with the same id. Parsing runs off the async workers and the tenant is locked one
/// chunk at a time, so other requests keep being served.
async fn bulk_load(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let Some(t) = app.tenant(&tenant) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    let result = tokio::task::spawn_blocking(move || {
        let text = String::from_utf8_lossy(&body);
        let mut loaded = 0usize;
        let mut errors = Vec::new();
        let mut error_count = 0usize;
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        for chunk in lines.chunks(2000) {
            let mut parsed = Vec::with_capacity(chunk.len());
            for (n, line) in chunk {
                let object = serde_json::from_str::<Json>(line)
                    .map_err(|e| e.to_string())
                    .and_then(|j| {
                        let map = j.as_object().ok_or("not a JSON object")?;
                        let ty = line_type(map).ok_or("no known type (set \"type\")")?;
                        let mut o = from_graph_json(ty, &j).map_err(|e| e.to_string())?;
                        if ty == ObjectType::Organization {
                            o.id = t.org_id;
                        }
                        Ok(o)
                    });
                match object {
                    Ok(o) => parsed.push(o),
                    Err(e) => {
                        error_count += 1;
                        if errors.len() < 20 {
                            errors.push(json!({"line": n + 1, "error": e}));
                        }
                    }
                }
            }
            loaded += parsed.len();
            // `upsert_many` finds each loaded user's dynamic groups through the rule index,
            // computes each loaded dynamic group's members from the user index, and rewrites
            // every other affected group's members once per chunk.
            write(&t.data).upsert_many(parsed);
        }
        drop(lines);
        drop(text);
        drop(body);
        // Parsing left free memory behind in every arena the load ran on.
        crate::rss::release_free_heap();
        json!({"loaded": loaded, "errorCount": error_count, "errors": errors})
    })
    .await;
    match result {
        Ok(j) => json_response(StatusCode::OK, &j),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Plays on-premises sync (or an admin's change outside Graph): a partial update that may
/// change synced properties; `onPremisesSyncEnabled` moves the source of authority.
async fn sync_patch(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(t) = app.tenant(&tenant) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no tenant {tenant:?}"));
    };
    let Ok(id) = id.parse::<ObjectId>() else {
        return admin_error(StatusCode::BAD_REQUEST, "not an object id");
    };
    let Some(body) = serde_json::from_slice::<Json>(&body)
        .ok()
        .and_then(|b| b.as_object().cloned())
    else {
        return admin_error(StatusCode::BAD_REQUEST, "a JSON object was expected");
    };
    let result = tokio::task::spawn_blocking(move || {
        let mut data = write(&t.data);
        let ty = data
            .find(id)
            .map(|o| o.object_type)
            .ok_or_else(|| GraphError::not_found(id))?;
        data.update(ty, id, |o| {
            graph::apply_patch(o, &body, true, None)?;
            if let Some(synced) = body.get("onPremisesSyncEnabled").and_then(Json::as_bool) {
                o.source = if synced {
                    SourceOfAuthority::OnPremises
                } else {
                    SourceOfAuthority::Cloud
                };
            }
            Ok(())
        })
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error_response(&app, &e),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn save(State(app): State<Arc<App>>) -> Response {
    let Some(path) = app.state_path.clone() else {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "the simulator was started without a state file",
        );
    };
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || persist::save(&app2, &path)).await {
        Ok(Ok(objects)) => json_response(StatusCode::OK, &json!({"saved": objects})),
        Ok(Err(e)) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
