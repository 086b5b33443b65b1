//! The Graph dialect the simulator serves under `/{tenant}/v1.0/` and `/{tenant}/beta/`:
//! routing (every spelling Graph accepts of a type cast or an operation), query options
//! (`$select`, `$top`, `$filter`, `$skiptoken`), absolute next links, rendering of objects,
//! grants and assignments, and the read and write handlers. A `$select` or a `PATCH` body that
//! names a property the resource does not have in the request's version is refused as Graph
//! refuses it (400), by the names of `rewind_common::graph_names`. One request in, one
//! [`Reply`] out, so that `$batch` runs its inner requests through the very same path.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use rewind_common::graph_json::{format_time, from_graph_json, to_graph_json};
use rewind_common::graph_names::{self, Resource};
use rewind_common::properties::{self, Api};
use rewind_common::{
    DirectoryObject, Link, LinkKind, ObjectId, ObjectType, SourceOfAuthority, Value,
};
use serde_json::{Map, Value as Json};

use super::error::{random_guid, GraphError};
use super::settings::Settings;
use super::state::{lock, read, write, App, AppIndex, Tenant};
use super::store::{changes_on_this_thread, TenantData};
use super::throttle::{Class, Scope};
use super::writelog::LoggedWrite;

mod delta;
mod directory;
mod links;
mod policies;
mod query;
mod render;

use delta::*;
pub use directory::apply_patch;
use directory::*;
use links::*;
use policies::*;
use query::*;
use render::*;

/// One Graph request, relative to its version's root (`/v1.0/`, `/beta/`).
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub method: Method,
    /// Percent-decoded path without the leading slash (`users/{id}`).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Json>,
}

/// One answer: status, headers and an optional JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Payload>,
}

/// A JSON body: a value, or text already serialized (large collection pages are written
/// straight from the objects, never built as a value first).
#[derive(Debug, Clone)]
pub enum Payload {
    Json(Json),
    /// JSON text this simulator wrote (so known to be valid).
    Raw(Vec<u8>),
}

impl Payload {
    /// The body as a JSON object to amend (only a value can be amended).
    pub fn as_object_mut(&mut self) -> Option<&mut Map<String, Json>> {
        match self {
            Payload::Json(j) => j.as_object_mut(),
            Payload::Raw(_) => None,
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Payload::Json(j) => serde_json::to_vec(&j).unwrap_or_default(),
            Payload::Raw(r) => r,
        }
    }

    /// Appends the JSON text of the body to `out`.
    pub fn write_into(&self, out: &mut Vec<u8>) {
        match self {
            // Writing a JSON value into memory cannot fail.
            Payload::Json(j) => {
                let _ = serde_json::to_writer(&mut *out, j);
            }
            Payload::Raw(r) => out.extend_from_slice(r),
        }
    }
}

impl Reply {
    pub fn json(status: StatusCode, body: Json) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(Payload::Json(body)),
        }
    }

    /// A 200 answer whose body is JSON text this simulator wrote.
    pub fn raw(text: Vec<u8>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(Payload::Raw(text)),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn error(e: &GraphError, now: i64) -> Self {
        let mut headers = Vec::new();
        if let Some(secs) = e.retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        Self {
            status: e.status,
            headers,
            body: Some(Payload::Json(e.body(&format_time(now)))),
        }
    }
}

/// Where a request runs: the server, the tenant, and the tenant's absolute Graph base URL.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub app: &'a App,
    pub tenant: &'a Tenant,
    /// `http://host:port/{tenant}/v1.0` (or `.../beta`)
    pub base: &'a str,
    /// The Graph version of the request.
    pub api: Api,
    /// The tenant's app whose token made the request (a `$batch`'s inner requests: the batch's).
    pub client: AppIndex,
}

/// Splits a path into percent-decoded segments, each in its canonical spelling (see
/// [`canonical_segment`]).
pub fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| canonical_segment(percent_decode(s)))
        .collect()
}

/// The functions the simulator routes (callable as `delta` or `delta()`).
const FUNCTIONS: &[&str] = &["delta"];
/// The actions the simulator routes (never with parentheses).
const ACTIONS: &[&str] = &["getByIds", "restore"];
/// The types a segment may cast to.
const CASTS: &[&str] = &["user", "group", "application", "servicePrincipal"];

/// Graph's other spellings of a segment, in the one form the routes match: an operation
/// qualified with its namespace or the namespace alias (`microsoft.graph.delta`,
/// `graph.restore`) is its bare name; a function called with parentheses (`delta()`) is its
/// name; a type cast with the alias (`graph.user`) is the full cast (`microsoft.graph.user`).
fn canonical_segment(segment: String) -> String {
    let unqualified = segment
        .strip_prefix("microsoft.graph.")
        .or_else(|| segment.strip_prefix("graph."));
    let name = unqualified.unwrap_or(&segment);
    if let Some(function) = name.strip_suffix("()") {
        if FUNCTIONS.contains(&function) {
            return function.to_owned();
        }
    }
    if FUNCTIONS.contains(&name) || (unqualified.is_some() && ACTIONS.contains(&name)) {
        return name.to_owned();
    }
    match unqualified {
        Some(cast) if CASTS.contains(&cast) => format!("microsoft.graph.{cast}"),
        _ => segment,
    }
}

/// The resource whose properties a request's `$select` names (`None` for collections of
/// directory objects of any type, and routes that take no `$select`).
fn selected_resource(segs: &[&str]) -> Option<Resource> {
    let cast = |s: &str| match s {
        "microsoft.graph.user" => Some(ObjectType::User),
        "microsoft.graph.group" => Some(ObjectType::Group),
        "microsoft.graph.application" => Some(ObjectType::Application),
        "microsoft.graph.servicePrincipal" => Some(ObjectType::ServicePrincipal),
        _ => None,
    };
    let ca = |s: &str| match s {
        "policies" => Some(ObjectType::ConditionalAccessPolicy),
        "namedLocations" => Some(ObjectType::NamedLocation),
        _ => None,
    };
    match segs {
        [coll, rest @ ..] if directory_type(coll).is_some() => match rest {
            [] | [_] => directory_type(coll).map(Resource::Object),
            [_, "appRoleAssignedTo", ..] | [_, "appRoleAssignments"] => {
                Some(Resource::AppRoleAssignment)
            }
            [_, "authentication", "requirements"] => Some(Resource::AuthenticationRequirements),
            _ => None,
        },
        ["directory", "deletedItems", segment] => cast(segment).map(Resource::Object),
        ["identity", "conditionalAccess", "deletedItems", kind, ..]
        | ["identity", "conditionalAccess", kind, ..] => ca(kind).map(Resource::Object),
        ["policies", "authorizationPolicy"] => {
            Some(Resource::Object(ObjectType::AuthorizationPolicy))
        }
        ["policies", "authenticationMethodsPolicy"] => {
            Some(Resource::Object(ObjectType::AuthenticationMethodsPolicy))
        }
        ["organization", ..] => Some(Resource::Object(ObjectType::Organization)),
        ["oauth2PermissionGrants", ..] => Some(Resource::OAuth2PermissionGrant),
        _ => None,
    }
}

/// Refuses a `$select` naming a property the resource does not have in `api`, as Graph does.
fn check_select(segs: &[&str], q: &Query, api: Api) -> Result<(), GraphError> {
    let (Some(resource), Some(select)) = (selected_resource(segs), q.select.as_deref()) else {
        return Ok(());
    };
    match select
        .iter()
        .find(|name| !graph_names::exists(resource, name, api))
    {
        Some(name) => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "Parsing OData Select and Expand failed: Could not find a property named '{name}' on type '{}'.",
                resource.type_name()
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses a write body naming a property the resource does not have in `api` (annotations
/// such as `@odata.type` aside), as Graph does.
pub(super) fn check_body(
    resource: Resource,
    body: &Map<String, Json>,
    api: Api,
) -> Result<(), GraphError> {
    match body
        .keys()
        .find(|k| !k.contains('@') && !graph_names::exists(resource, k, api))
    {
        Some(name) => Err(GraphError::bad_request(format!(
            "Invalid property '{name}': '{}' has no such property.",
            resource.type_name()
        ))),
        None => Ok(()),
    }
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value, keeping the characters OData links show literally.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$'(),".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The route label of a request for the counters (ids replaced by `{id}`).
pub fn route_label(method: &Method, segs: &[String]) -> String {
    let mut label = String::with_capacity(64);
    label.push_str(method.as_str());
    label.push(' ');
    for s in segs {
        label.push('/');
        // Parsed as a GUID without making an error (and its text) for every other segment.
        if uuid::Uuid::try_parse(s).is_ok() {
            label.push_str("{id}");
        } else {
            label.push_str(s);
        }
    }
    if segs.is_empty() {
        label.push('/');
    }
    label
}

/// How a request is throttled (see the throttling section of the Graph dialect spec).
pub fn classify(method: &Method, segs: &[String], query: &[(String, String)]) -> Class {
    let first = segs.first().map(String::as_str);
    if first == Some("identity") {
        return Class::ConditionalAccess {
            write: *method != Method::GET,
        };
    }
    if first == Some("$batch") {
        return Class::Free;
    }
    let is_get_by_ids =
        first == Some("directoryObjects") && segs.get(1).map(String::as_str) == Some("getByIds");
    if *method == Method::GET || is_get_by_ids {
        let base: u32 = if first == Some("users") { 2 } else { 1 };
        let selected = query.iter().any(|(k, _)| k == "$select" || k == "select");
        let cost = if selected {
            base.saturating_sub(1).max(1)
        } else {
            base
        };
        return Class::Read { cost };
    }
    Class::Write
}

/// Runs one Graph request: injected faults, throttling, purging of expired soft deletes, then
/// the handler. Counts it by route.
pub fn handle(ctx: &Ctx<'_>, req: &GraphRequest) -> Reply {
    let segs = segments(&req.path);
    let now = ctx.app.now();
    let settings = ctx.app.settings();
    let mut label = route_label(&req.method, &segs);
    let class = classify(&req.method, &segs, &req.query);
    let is_write = is_write(class);
    // This thread's change count when the handler starts (see `changes_on_this_thread`).
    let mut changes_before = None;
    // The scope of a 429, for its `x-ms-throttle-scope` header.
    let mut throttled_by = Scope::Injected;

    let reply = (|| {
        if settings.error_503_rate > 0.0 && rand::random::<f64>() < settings.error_503_rate {
            ctx.app.metrics.unavailable();
            return Err(GraphError::unavailable(settings.retry_after_503_secs));
        }
        if is_write
            && settings.write_503_rate > 0.0
            && rand::random::<f64>() < settings.write_503_rate
        {
            ctx.app.metrics.unavailable();
            return Err(GraphError::unavailable(settings.retry_after_503_secs));
        }
        if is_write
            && settings.write_429_rate > 0.0
            && rand::random::<f64>() < settings.write_429_rate
        {
            ctx.app.metrics.throttled(Scope::Injected);
            let low = settings.retry_after_429_min_secs;
            let high = settings.retry_after_429_max_secs.max(low);
            let retry = low + rand::random::<u64>() % (high - low + 1);
            return Err(GraphError::throttled(
                "Application request limit has been reached for the tenant.",
                Some(retry),
            ));
        }
        let at = Instant::now();
        let admitted = lock(&ctx.tenant.throttle).admit(&settings, class, ctx.client, at);
        if let Err(t) = admitted {
            ctx.app.metrics.throttled(t.scope);
            throttled_by = t.scope;
            return Err(GraphError::throttled(
                "Application request limit has been reached for the tenant.",
                t.retry_after,
            ));
        }
        if is_write {
            ctx.app.metrics.write();
            let ca = matches!(class, Class::ConditionalAccess { .. });
            // The throttle's own instant, so that the maxima see what it admitted.
            lock(&ctx.tenant.writes).admitted(ca, ctx.client, at);
        }
        purge_if_due(ctx.tenant, now, &settings);
        changes_before = Some(changes_on_this_thread());
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let q = Query::parse(&req.query)?;
        check_select(&segs, &q, ctx.api)?;
        let mut reply = dispatch(ctx, req, &segs, &q, now, &settings)?;
        if let Class::Read { cost } = class {
            reply.headers.push(("x-ms-resource-unit", cost.to_string()));
        }
        Ok(reply)
    })();
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            if e.code == "BadRequest" && e.status == StatusCode::BAD_REQUEST {
                label = "unmatched".to_owned();
            }
            let mut r = Reply::error(&e, now);
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                let client = ctx
                    .tenant
                    .client_ids()
                    .get(usize::from(ctx.client))
                    .cloned()
                    .unwrap_or_default();
                r.headers.push((
                    "x-ms-throttle-scope",
                    format!(
                        "{}/{client}/{}",
                        throttled_by.header_prefix(),
                        ctx.tenant.name
                    ),
                ));
            }
            r
        }
    };
    if is_write {
        let changed = reply.status.is_success()
            && changes_before.is_some_and(|before| changes_on_this_thread() != before);
        log_write(ctx, req, &segs, reply.status, changed);
    }
    ctx.app.metrics.request(&label);
    ctx.app.metrics.response(reply.status.as_u16());
    reply
}

/// Whether a request of this class writes to the directory (and is logged).
fn is_write(class: Class) -> bool {
    matches!(
        class,
        Class::Write | Class::ConditionalAccess { write: true }
    )
}

fn log_write(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    segs: &[String],
    status: StatusCode,
    changed: bool,
) {
    lock(&ctx.tenant.writes).append(LoggedWrite {
        method: &req.method,
        segments: segs,
        api: ctx.api,
        body: req.body.as_ref(),
        status: status.as_u16(),
        changed,
        app: ctx.client,
    });
}

/// Logs a batch's inner request answered without being run (`status`: 424 for a failed
/// dependency), when it is a write.
pub fn log_unrun(ctx: &Ctx<'_>, req: &GraphRequest, status: StatusCode) {
    let segs = segments(&req.path);
    if is_write(classify(&req.method, &segs, &req.query)) {
        log_write(ctx, req, &segs, status, false);
    }
}

fn purge_if_due(tenant: &Tenant, now: i64, settings: &Settings) {
    let after = settings.purge_after_secs();
    if read(&tenant.data).purge_due(now, after) {
        write(&tenant.data).purge_expired(now, after);
    }
}

fn directory_type(segment: &str) -> Option<ObjectType> {
    match segment {
        "users" => Some(ObjectType::User),
        "groups" => Some(ObjectType::Group),
        "applications" => Some(ObjectType::Application),
        "servicePrincipals" => Some(ObjectType::ServicePrincipal),
        _ => None,
    }
}

fn parse_id(s: &str) -> Result<ObjectId, GraphError> {
    s.parse::<ObjectId>().map_err(|_| GraphError::not_found(s))
}

fn body_object(req: &GraphRequest) -> Result<&Map<String, Json>, GraphError> {
    req.body
        .as_ref()
        .and_then(Json::as_object)
        .ok_or_else(|| GraphError::bad_request("A JSON object was expected in the request body."))
}

fn dispatch(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    segs: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let m = &req.method;
    match segs {
        [coll, rest @ ..] if directory_type(coll).is_some() => {
            let t = directory_type(coll).ok_or_else(GraphError::no_route)?;
            directory(ctx, req, t, coll, rest, q, now, settings)
        }
        ["directory", "deletedItems", rest @ ..] => deleted_items(ctx, req, rest, q, settings),
        ["directoryObjects", "getByIds"] if *m == Method::POST => get_by_ids(ctx, req),
        ["directoryObjects", id] if *m == Method::GET => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let o = data
                .find_directory_object(id)
                .ok_or_else(|| GraphError::not_found(id))?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        ["oauth2PermissionGrants", rest @ ..] => grants(ctx, req, rest, q, settings),
        ["identity", "conditionalAccess", rest @ ..] => {
            conditional_access(ctx, req, rest, q, now, settings)
        }
        ["policies", "authenticationMethodsPolicy"] => {
            singleton(ctx, req, ObjectType::AuthenticationMethodsPolicy, q)
        }
        ["policies", "authenticationMethodsPolicy", "authenticationMethodConfigurations", cid] => {
            method_configuration(ctx, req, cid)
        }
        ["policies", "authorizationPolicy"] => {
            singleton(ctx, req, ObjectType::AuthorizationPolicy, q)
        }
        ["organization"] if *m == Method::GET => {
            let data = read(&ctx.tenant.data);
            let values = data
                .map(ObjectType::Organization)
                .values()
                .map(|o| render(o, q.select.as_deref()))
                .collect();
            Ok(collection(ctx, "organization", values, None))
        }
        ["organization", id] => {
            let id = parse_id(id)?;
            if id != ctx.tenant.org_id {
                return Err(GraphError::not_found(id));
            }
            singleton(ctx, req, ObjectType::Organization, q)
        }
        _ => Err(GraphError::no_route()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_encoding() {
        assert_eq!(
            parse_filter("id eq '00000000-0000-0000-0000-000000000001'").unwrap(),
            Filter::Ids(vec![ObjectId(1)])
        );
        assert!(
            matches!(parse_filter("displayName eq 'A b'").unwrap(), Filter::Eq(p, _) if p == "displayName")
        );
        assert!(parse_filter("startswith(displayName,'a')").is_err());
        assert_eq!(encode_query_value("id eq 'x'"), "id%20eq%20'x'");
        assert_eq!(percent_decode("%24ref"), "$ref");
        assert_eq!(
            route_label(
                &Method::GET,
                &segments("users/00000000-0000-0000-0000-000000000001")
            ),
            "GET /users/{id}"
        );
    }
}
