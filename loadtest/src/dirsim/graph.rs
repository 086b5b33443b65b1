//! The Graph dialect the simulator serves under `/{tenant}/v1.0/`: routing, query options
//! (`$select`, `$top`, `$filter`, `$skiptoken`), absolute next links, rendering of objects,
//! grants and assignments, and the read and write handlers. One request in, one [`Reply`] out,
//! so that `$batch` runs its inner requests through the very same path.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use rewind_common::graph_json::{format_time, from_graph_json, to_graph_json};
use rewind_common::properties;
use rewind_common::{
    DirectoryObject, Link, LinkKind, ObjectId, ObjectType, SourceOfAuthority, Value,
};
use serde_json::{Map, Value as Json};

use super::error::{random_guid, GraphError};
use super::settings::Settings;
use super::state::{lock, read, write, App, Tenant};
use super::store::TenantData;
use super::throttle::{Class, Scope};

/// One Graph request, relative to `/v1.0/`.
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
    pub body: Option<Json>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Json) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
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
            body: Some(e.body(&format_time(now))),
        }
    }
}

/// Where a request runs: the server, the tenant, and the tenant's absolute Graph base URL.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub app: &'a App,
    pub tenant: &'a Tenant,
    /// `http://host:port/{tenant}/v1.0`
    pub base: &'a str,
}

/// Splits a path into percent-decoded segments.
pub fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

fn percent_decode(s: &str) -> String {
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
    let mut label = format!("{method} ");
    for s in segs {
        label.push('/');
        if s.parse::<ObjectId>().is_ok() {
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

    let reply = (|| {
        if settings.error_503_rate > 0.0 && rand::random::<f64>() < settings.error_503_rate {
            ctx.app.metrics.unavailable();
            return Err(GraphError::unavailable(settings.retry_after_503_secs));
        }
        let class = classify(&req.method, &segs, &req.query);
        let is_write = matches!(
            class,
            Class::Write | Class::ConditionalAccess { write: true }
        );
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
        let admitted = lock(&ctx.tenant.throttle).admit(&settings, class, Instant::now());
        if let Err(t) = admitted {
            ctx.app.metrics.throttled(t.scope);
            return Err(GraphError::throttled(
                "Application request limit has been reached for the tenant.",
                t.retry_after,
            ));
        }
        if matches!(
            class,
            Class::Write | Class::ConditionalAccess { write: true }
        ) {
            ctx.app.metrics.write();
        }
        purge_if_due(ctx.tenant, now, &settings);
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let q = Query::parse(&req.query)?;
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
                r.headers
                    .push(("x-ms-throttle-scope", "Tenant/ReadWrite/All".to_owned()));
            }
            r
        }
    };
    ctx.app.metrics.request(&label);
    ctx.app.metrics.response(reply.status.as_u16());
    reply
}

fn purge_if_due(tenant: &Tenant, now: i64, settings: &Settings) {
    let after = settings.purge_after_secs();
    if read(&tenant.data).purge_due(now, after) {
        write(&tenant.data).purge_expired(now, after);
    }
}

// ---------------------------------------------------------------------------------------------
// Query options

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Ids(Vec<ObjectId>),
    Eq(String, Json),
}

#[derive(Debug, Clone, Default)]
struct Query {
    top: Option<usize>,
    select: Option<Vec<String>>,
    filter: Option<Filter>,
    after: Option<ObjectId>,
    /// A delta query's own skip token (`f.` full-sync or `c.` changes pages).
    delta_skip: Option<String>,
    deltatoken: Option<String>,
    raw_select: Option<String>,
    raw_filter: Option<String>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

impl Query {
    fn parse(pairs: &[(String, String)]) -> Result<Self, GraphError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.trim_start_matches('$') {
                "top" => {
                    let top: usize = v.trim().parse().map_err(|_| {
                        GraphError::bad_request(format!("Invalid page size specified: '{v}'."))
                    })?;
                    if top == 0 || top > MAX_PAGE {
                        return Err(GraphError::bad_request(format!(
                            "Invalid page size specified: '{top}'. Must be between 1 and {MAX_PAGE} inclusive."
                        )));
                    }
                    q.top = Some(top);
                }
                "select" => {
                    q.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    );
                    q.raw_select = Some(v.clone());
                }
                "filter" => {
                    q.filter = Some(parse_filter(v)?);
                    q.raw_filter = Some(v.clone());
                }
                "skiptoken" if v.starts_with("f.") || v.starts_with("c.") => {
                    q.delta_skip = Some(v.clone());
                }
                "skiptoken" => {
                    let n = u128::from_str_radix(v.trim(), 16)
                        .map_err(|_| GraphError::bad_request("Invalid skip token."))?;
                    q.after = Some(ObjectId(n));
                }
                "deltatoken" => q.deltatoken = Some(v.clone()),
                _ => {}
            }
        }
        Ok(q)
    }

    fn page_size(&self) -> usize {
        self.top.unwrap_or(DEFAULT_PAGE)
    }

    /// The absolute link to the page after `last`.
    fn next_link(&self, ctx: &Ctx<'_>, path: &str, last: ObjectId) -> String {
        let mut link = format!("{}/{path}?", ctx.base);
        if let Some(top) = self.top {
            link.push_str(&format!("$top={top}&"));
        }
        if let Some(s) = &self.raw_select {
            link.push_str(&format!("$select={}&", encode_query_value(s)));
        }
        if let Some(f) = &self.raw_filter {
            link.push_str(&format!("$filter={}&", encode_query_value(f)));
        }
        link.push_str(&format!("$skiptoken={:032x}", last.0));
        link
    }
}

fn parse_filter(text: &str) -> Result<Filter, GraphError> {
    let unsupported = || {
        GraphError::unsupported_query(format!(
            "Unsupported or invalid query filter clause specified: '{text}'."
        ))
    };
    let t = text.trim();
    let (lhs, rest) = t.split_once(char::is_whitespace).ok_or_else(unsupported)?;
    let (op, value) = rest
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    let value = value.trim();
    match op.to_ascii_lowercase().as_str() {
        "eq" => {
            let v = parse_literal(value).ok_or_else(unsupported)?;
            if lhs == "id" {
                let id = v
                    .as_str()
                    .and_then(|s| s.parse::<ObjectId>().ok())
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("Invalid object identifier '{value}'."))
                    })?;
                Ok(Filter::Ids(vec![id]))
            } else {
                Ok(Filter::Eq(lhs.to_owned(), v))
            }
        }
        "in" if lhs == "id" => {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(unsupported)?;
            let mut ids = Vec::new();
            for item in inner.split(',') {
                let item = item.trim();
                let id = parse_literal(item)
                    .and_then(|v| v.as_str().and_then(|s| s.parse::<ObjectId>().ok()))
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("Invalid object identifier '{item}'."))
                    })?;
                ids.push(id);
            }
            if ids.len() > 15 {
                return Err(GraphError::unsupported_query(format!(
                    "Too many child clauses specified in search filter expression containing 'OR' operators: {}. Max allowed: 15.",
                    ids.len()
                )));
            }
            Ok(Filter::Ids(ids))
        }
        _ => Err(unsupported()),
    }
}

fn parse_literal(s: &str) -> Option<Json> {
    if let Some(inner) = s.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return Some(Json::String(inner.replace("''", "'")));
    }
    match s {
        "true" => Some(Json::Bool(true)),
        "false" => Some(Json::Bool(false)),
        "null" => Some(Json::Null),
        _ => s.parse::<i64>().ok().map(Json::from),
    }
}

fn eq_matches(full: &Map<String, Json>, prop: &str, value: &Json) -> bool {
    match (full.get(prop).unwrap_or(&Json::Null), value) {
        (Json::String(a), Json::String(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// The eleven properties `/users` returns without `$select`.
const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// The Graph JSON of an object as Graph serves it (links are separate resources).
fn full_json(o: &DirectoryObject) -> Map<String, Json> {
    let mut m = match to_graph_json(o) {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    for kind in [
        LinkKind::Members,
        LinkKind::Owners,
        LinkKind::OAuth2PermissionGrants,
        LinkKind::AppRoleAssignedTo,
    ] {
        m.remove(kind.as_str());
    }
    match o.object_type {
        ObjectType::AuthorizationPolicy => {
            m.insert("id".into(), Json::String("authorizationPolicy".into()));
        }
        ObjectType::AuthenticationMethodsPolicy => {
            m.insert(
                "id".into(),
                Json::String("authenticationMethodsPolicy".into()),
            );
            let configs: Vec<Json> = properties::AUTHENTICATION_METHOD_CONFIGURATIONS
                .iter()
                .filter_map(|name| {
                    let mut c = match o.get(name)?.to_json() {
                        Json::Object(c) => c,
                        _ => Map::new(),
                    };
                    c.insert("id".into(), Json::String((*name).into()));
                    Some(Json::Object(c))
                })
                .collect();
            m.insert(
                "authenticationMethodConfigurations".into(),
                Json::Array(configs),
            );
        }
        _ => {}
    }
    m
}

fn select_fields(full: Map<String, Json>, fields: &[impl AsRef<str>]) -> Json {
    let mut out = Map::new();
    if let Some(t) = full.get("@odata.type") {
        out.insert("@odata.type".into(), t.clone());
    }
    out.insert("id".into(), full.get("id").cloned().unwrap_or(Json::Null));
    for f in fields {
        let f = f.as_ref();
        if f == "id" {
            continue;
        }
        let v = match (f, full.get(f)) {
            (_, Some(v)) => v.clone(),
            ("businessPhones", None) => Json::Array(Vec::new()),
            _ => Json::Null,
        };
        out.insert(f.to_owned(), v);
    }
    Json::Object(out)
}

/// An object under `$select` (or, for users without it, the default set).
fn render(o: &DirectoryObject, select: Option<&[String]>) -> Json {
    let full = full_json(o);
    match select {
        Some(fields) => select_fields(full, fields),
        None if o.object_type == ObjectType::User => select_fields(full, USER_DEFAULT),
        None => Json::Object(full),
    }
}

fn apply_select(full: Map<String, Json>, select: Option<&[String]>) -> Json {
    match select {
        Some(fields) => select_fields(full, fields),
        None => Json::Object(full),
    }
}

fn link_data(link: &Link) -> Map<String, Json> {
    match link.data.as_ref().map(Value::to_json) {
        Some(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

fn render_grant(client: &DirectoryObject, link: &Link) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(link.target.to_string()));
    m.insert("clientId".into(), Json::String(client.id.to_string()));
    m.insert("consentType".into(), Json::String("AllPrincipals".into()));
    m.insert("principalId".into(), Json::Null);
    m.insert("resourceId".into(), Json::Null);
    m.insert("scope".into(), Json::String(String::new()));
    for (k, v) in link_data(link) {
        m.insert(k, v);
    }
    m
}

fn principal_type(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "User",
        ObjectType::Group => "Group",
        _ => "ServicePrincipal",
    }
}

fn render_assignment(
    data: &TenantData,
    resource: &DirectoryObject,
    link: &Link,
) -> Map<String, Json> {
    let extra = link_data(link);
    let principal = extra
        .get("principalId")
        .and_then(Json::as_str)
        .and_then(|s| s.parse::<ObjectId>().ok())
        .and_then(|id| data.find(id));
    let mut m = Map::new();
    m.insert("id".into(), Json::String(link.target.to_string()));
    m.insert("deletedDateTime".into(), Json::Null);
    m.insert(
        "appRoleId".into(),
        Json::String("00000000-0000-0000-0000-000000000000".into()),
    );
    m.insert(
        "principalType".into(),
        principal.map_or(Json::Null, |p| {
            Json::String(principal_type(p.object_type).into())
        }),
    );
    m.insert(
        "principalDisplayName".into(),
        principal
            .and_then(DirectoryObject::display_name)
            .map_or(Json::Null, |s| Json::String(s.into())),
    );
    m.insert("resourceId".into(), Json::String(resource.id.to_string()));
    m.insert(
        "resourceDisplayName".into(),
        resource
            .display_name()
            .map_or(Json::Null, |s| Json::String(s.into())),
    );
    for (k, v) in extra {
        m.insert(k, v);
    }
    m
}

fn collection(ctx: &Ctx<'_>, context: &str, values: Vec<Json>, next: Option<String>) -> Reply {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Json::String(format!("{}/$metadata#{context}", ctx.base)),
    );
    body.insert("value".into(), Json::Array(values));
    if let Some(next) = next {
        body.insert("@odata.nextLink".into(), Json::String(next));
    }
    Reply::json(StatusCode::OK, Json::Object(body))
}

/// Takes up to `top` present items, looking at no more than `scan` entries; returns the items
/// and, when entries remain, the last id looked at (the next page starts after it).
fn collect_page<T>(
    iter: impl Iterator<Item = (ObjectId, Option<T>)>,
    top: usize,
    scan: usize,
) -> (Vec<T>, Option<ObjectId>) {
    let mut iter = iter.peekable();
    let mut out = Vec::new();
    let mut scanned = 0usize;
    let mut last = None;
    for (id, item) in iter.by_ref() {
        scanned += 1;
        last = Some(id);
        if let Some(item) = item {
            out.push(item);
        }
        if out.len() >= top || scanned >= scan.max(1) {
            break;
        }
    }
    let more = iter.peek().is_some();
    (out, if more { last } else { None })
}

fn after_bound(q: &Query) -> (Bound<ObjectId>, Bound<ObjectId>) {
    match q.after {
        Some(a) => (Bound::Excluded(a), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

/// A page of objects of one type, active ones or the recycle bin's.
#[allow(clippy::too_many_arguments)]
fn list_objects(
    ctx: &Ctx<'_>,
    data: &TenantData,
    t: ObjectType,
    deleted: bool,
    q: &Query,
    path: &str,
    context: &str,
    settings: &Settings,
) -> Reply {
    let keep = |o: &DirectoryObject| -> bool {
        if o.lifecycle.is_active() == deleted {
            return false;
        }
        match &q.filter {
            Some(Filter::Eq(p, v)) => eq_matches(&full_json(o), p, v),
            _ => true,
        }
    };
    let (page, next) = match (&q.filter, deleted) {
        (Some(Filter::Ids(ids)), _) => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let iter = ids
                .into_iter()
                .filter(|id| q.after.is_none_or(|a| *id > a))
                .map(|id| (id, data.get(t, id).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
        (_, true) => {
            let iter = data
                .deleted_ids(t)
                .range(after_bound(q))
                .map(|id| (*id, data.get(t, *id).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
        (_, false) => {
            let iter = data
                .map(t)
                .range(after_bound(q))
                .map(|(id, o)| (*id, Some(o).filter(|o| keep(o))));
            collect_page(iter, q.page_size(), settings.max_scan_per_page)
        }
    };
    let values = page
        .into_iter()
        .map(|o| render(o, q.select.as_deref()))
        .collect();
    let next = next.map(|last| q.next_link(ctx, path, last));
    collection(ctx, context, values, next)
}

// ---------------------------------------------------------------------------------------------
// Routing

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

#[allow(clippy::too_many_arguments)]
fn directory(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    t: ObjectType,
    coll: &str,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let m = &req.method;
    match rest {
        [] if *m == Method::GET => {
            let data = read(&ctx.tenant.data);
            Ok(list_objects(ctx, &data, t, false, q, coll, coll, settings))
        }
        [] if *m == Method::POST => create(ctx, req, t),
        ["delta"] if *m == Method::GET => delta(ctx, t, coll, q, now, settings),
        [id] if *m == Method::GET => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let o = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            let mut body = render(o, q.select.as_deref());
            if let Some(b) = body.as_object_mut() {
                b.insert(
                    "@odata.context".into(),
                    Json::String(format!("{}/$metadata#{coll}/$entity", ctx.base)),
                );
            }
            Ok(Reply::json(StatusCode::OK, body))
        }
        [id] if *m == Method::PATCH => {
            let id = parse_id(id)?;
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            data.update(t, id, |o| {
                if !o.lifecycle.is_active() {
                    return Err(GraphError::not_found(id));
                }
                apply_patch(o, body, false)
            })?;
            Ok(Reply::no_content())
        }
        [id] if *m == Method::DELETE => {
            let id = parse_id(id)?;
            let mut data = write(&ctx.tenant.data);
            let o = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            if o.source == SourceOfAuthority::OnPremises {
                return Err(GraphError::synced_object());
            }
            data.soft_delete(t, id, now)?;
            Ok(Reply::no_content())
        }
        [id, kind] if *m == Method::GET && matches!(*kind, "members" | "owners") => {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let holder = data
                .active(t, id)
                .ok_or_else(|| GraphError::not_found(id))?;
            let links = holder.links_of(kind);
            let start = q
                .after
                .map_or(0, |a| links.partition_point(|l| l.target <= a));
            let ids: Vec<ObjectId> = match &q.filter {
                Some(Filter::Ids(ids)) => links[start..]
                    .iter()
                    .map(|l| l.target)
                    .filter(|t| ids.contains(t))
                    .collect(),
                _ => links[start..].iter().map(|l| l.target).collect(),
            };
            let iter = ids
                .into_iter()
                .map(|target| (target, data.find_directory_object(target)));
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|o| render(o, q.select.as_deref()))
                .collect();
            let path = format!("{coll}/{id}/{}", kind.as_str());
            let next = next.map(|last| q.next_link(ctx, &path, last));
            Ok(collection(ctx, "directoryObjects", values, next))
        }
        [id, kind, "$ref"] if *m == Method::POST && matches!(*kind, "members" | "owners") => {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let body = body_object(req)?;
            let reference = body
                .get("@odata.id")
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    GraphError::bad_request("The @odata.id of the reference is missing.")
                })?;
            let member: ObjectId = reference
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    GraphError::bad_request(format!("Invalid object identifier '{reference}'."))
                })?;
            let mut data = write(&ctx.tenant.data);
            check_link_write(&data, t, id, kind)?;
            if data.find_directory_object(member).is_none() {
                return Err(GraphError::not_found(member));
            }
            data.modify_links(t, id, |o| {
                if o.links_of(kind).binary_search_by_key(&member, |l| l.target).is_ok() {
                    return Err(GraphError::bad_request(format!(
                        "One or more added object references already exist for the following modified properties: '{}'.",
                        kind.as_str()
                    )));
                }
                o.add_link(kind, Link::to(member));
                Ok(())
            })?;
            Ok(Reply::no_content())
        }
        [id, kind, member, "$ref"]
            if *m == Method::DELETE && matches!(*kind, "members" | "owners") =>
        {
            let kind = if *kind == "members" {
                LinkKind::Members
            } else {
                LinkKind::Owners
            };
            if !properties::link_kinds(t).contains(&kind) {
                return Err(GraphError::no_route());
            }
            let id = parse_id(id)?;
            let member = parse_id(member)?;
            let mut data = write(&ctx.tenant.data);
            check_link_write(&data, t, id, kind)?;
            data.modify_links(t, id, |o| {
                if o.remove_link(kind, member) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(member))
                }
            })?;
            Ok(Reply::no_content())
        }
        [id, "appRoleAssignedTo", rest @ ..] if t == ObjectType::ServicePrincipal => {
            let id = parse_id(id)?;
            app_role_assigned_to(ctx, req, id, rest, q, now, settings)
        }
        _ => Err(GraphError::no_route()),
    }
}

/// How long a delta token stays valid, in simulated seconds.
const DELTA_TOKEN_LIFETIME: i64 = 7 * 86_400;

fn delta_link(ctx: &Ctx<'_>, path: &str, q: &Query, key: &str, token: &str) -> String {
    let mut link = format!("{}/{path}?", ctx.base);
    if let Some(s) = &q.raw_select {
        link.push_str(&format!("$select={}&", encode_query_value(s)));
    }
    if let Some(top) = q.top {
        link.push_str(&format!("$top={top}&"));
    }
    link.push_str(&format!("{key}={token}"));
    link
}

fn hex_u128(s: &str) -> Result<u128, GraphError> {
    u128::from_str_radix(s, 16).map_err(|_| GraphError::bad_request("Invalid delta or skip token."))
}

fn hex_i64(s: &str) -> Result<i64, GraphError> {
    i64::from_str_radix(s, 16).map_err(|_| GraphError::bad_request("Invalid delta or skip token."))
}

/// `GET /{collection}/delta`: a full sync paged with next links and closed by a delta link,
/// then the objects changed since (soft-deleted ones as `@removed` "changed", purged ones as
/// "deleted"). Tokens expire after 7 simulated days (410).
fn delta(
    ctx: &Ctx<'_>,
    t: ObjectType,
    coll: &str,
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let data = read(&ctx.tenant.data);
    let path = format!("{coll}/delta");
    let token_for = |seq: u64| format!("d.{seq:x}.{now:x}");
    if let Some(token) = &q.deltatoken {
        if token == "latest" {
            let link = delta_link(ctx, &path, q, "$deltatoken", &token_for(data.seq()));
            let mut reply = collection(ctx, coll, Vec::new(), None);
            if let Some(b) = reply.body.as_mut().and_then(Json::as_object_mut) {
                b.insert("@odata.deltaLink".into(), Json::String(link));
            }
            return Ok(reply);
        }
        let mut parts = token.split('.');
        let (Some("d"), Some(seq), Some(issued), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GraphError::bad_request("Invalid delta token."));
        };
        let (seq, issued) = (hex_u128(seq)? as u64, hex_i64(issued)?);
        if now.saturating_sub(issued) > DELTA_TOKEN_LIFETIME {
            return Err(GraphError::new(
                StatusCode::GONE,
                "resyncRequired",
                "The delta token has expired; start over with a full synchronization.",
            ));
        }
        return Ok(delta_changes(
            ctx, &data, t, coll, &path, seq, q, now, settings,
        ));
    }
    match q.delta_skip.as_deref() {
        Some(s) if s.starts_with("c.") => {
            let after = hex_u128(&s[2..])? as u64;
            Ok(delta_changes(
                ctx, &data, t, coll, &path, after, q, now, settings,
            ))
        }
        skip => {
            let (after, start) = match skip {
                Some(s) => {
                    let mut parts = s[2..].split('.');
                    let (Some(id), Some(start), None) = (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(GraphError::bad_request("Invalid skip token."));
                    };
                    (Some(ObjectId(hex_u128(id)?)), hex_u128(start)? as u64)
                }
                None => (None, data.seq()),
            };
            let bounds = match after {
                Some(a) => (Bound::Excluded(a), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            let iter = data
                .map(t)
                .range(bounds)
                .map(|(id, o)| (*id, Some(o).filter(|o| o.lifecycle.is_active())));
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|o| render(o, q.select.as_deref()))
                .collect();
            let reply = match next {
                Some(last) => {
                    let link = delta_link(
                        ctx,
                        &path,
                        q,
                        "$skiptoken",
                        &format!("f.{:x}.{start:x}", last.0),
                    );
                    collection(ctx, coll, values, Some(link))
                }
                None => {
                    let mut r = collection(ctx, coll, values, None);
                    let link = delta_link(ctx, &path, q, "$deltatoken", &token_for(start));
                    if let Some(b) = r.body.as_mut().and_then(Json::as_object_mut) {
                        b.insert("@odata.deltaLink".into(), Json::String(link));
                    }
                    r
                }
            };
            Ok(reply)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn delta_changes(
    ctx: &Ctx<'_>,
    data: &TenantData,
    t: ObjectType,
    coll: &str,
    path: &str,
    after: u64,
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Reply {
    let mut values = Vec::new();
    let mut last = after;
    let mut scanned = 0usize;
    let mut iter = data.changes_after(after).peekable();
    for change in iter.by_ref() {
        scanned += 1;
        last = change.seq;
        if change.object_type == t {
            let item = match data.get(t, change.id) {
                Some(o) if o.lifecycle.is_active() => render(o, q.select.as_deref()),
                Some(_) => json_removed(change.id, "changed"),
                None => json_removed(change.id, "deleted"),
            };
            values.push(item);
        }
        if values.len() >= q.page_size() || scanned >= settings.max_scan_per_page.max(1) {
            break;
        }
    }
    if iter.peek().is_some() {
        let link = delta_link(ctx, path, q, "$skiptoken", &format!("c.{last:x}"));
        collection(ctx, coll, values, Some(link))
    } else {
        let mut r = collection(ctx, coll, values, None);
        let link = delta_link(ctx, path, q, "$deltatoken", &format!("d.{last:x}.{now:x}"));
        if let Some(b) = r.body.as_mut().and_then(Json::as_object_mut) {
            b.insert("@odata.deltaLink".into(), Json::String(link));
        }
        r
    }
}

fn json_removed(id: ObjectId, reason: &str) -> Json {
    let mut m = Map::new();
    m.insert("id".into(), Json::String(id.to_string()));
    let mut removed = Map::new();
    removed.insert("reason".into(), Json::String(reason.into()));
    m.insert("@removed".into(), Json::Object(removed));
    Json::Object(m)
}

/// A write of `kind` links on the object is allowed (it exists, is cloud-mastered and, for
/// members, not dynamic).
fn check_link_write(
    data: &TenantData,
    t: ObjectType,
    id: ObjectId,
    kind: LinkKind,
) -> Result<(), GraphError> {
    let holder = data
        .active(t, id)
        .ok_or_else(|| GraphError::not_found(id))?;
    if holder.source == SourceOfAuthority::OnPremises {
        return Err(GraphError::synced_object());
    }
    if kind == LinkKind::Members && holder.dynamic_membership {
        return Err(GraphError::bad_request(
            "Insufficient privileges: the members of a group with dynamic membership cannot be changed.",
        ));
    }
    Ok(())
}

/// User properties a cloud write may change on an object synced from on-premises.
const CLOUD_WRITABLE_ON_SYNCED_USER: &[&str] = &[
    "usageLocation",
    "passwordPolicies",
    properties::PER_USER_MFA_STATE,
    "ageGroup",
    "consentProvidedForMinor",
    "preferredDataLocation",
];

/// Applies a partial update. Properties the snapshot does not keep are ignored (as are
/// annotations and `id`); on a synced object, synced properties are refused unless
/// `allow_synced` (the admin route that plays on-premises sync).
pub fn apply_patch(
    o: &mut DirectoryObject,
    body: &Map<String, Json>,
    allow_synced: bool,
) -> Result<(), GraphError> {
    let t = o.object_type;
    if o.source == SourceOfAuthority::OnPremises && !allow_synced {
        let synced = body.keys().any(|k| {
            properties::property_id(t, k).is_some()
                && !(t == ObjectType::User && CLOUD_WRITABLE_ON_SYNCED_USER.contains(&k.as_str()))
        });
        if synced {
            return Err(GraphError::synced_object());
        }
    }
    for (k, v) in body {
        if k == "id" || k.contains('@') {
            continue;
        }
        if t == ObjectType::AuthenticationMethodsPolicy && k == "authenticationMethodConfigurations"
        {
            for item in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(cid) = item.get("id").and_then(Json::as_str) else {
                    return Err(GraphError::bad_request(
                        "Each method configuration needs an id.",
                    ));
                };
                let Some(pid) = properties::property_id(t, cid) else {
                    return Err(GraphError::bad_request(format!(
                        "Unknown method configuration '{cid}'."
                    )));
                };
                let mut merged = match o.get(cid) {
                    Some(Value::Map(m)) => m.clone(),
                    _ => BTreeMap::new(),
                };
                if let Some(fields) = item.as_object() {
                    for (fk, fv) in fields {
                        if fk != "id" {
                            merged.insert(fk.clone(), Value::from_json(fv));
                        }
                    }
                }
                o.set_by_id(pid, Value::Map(merged));
            }
            continue;
        }
        if let Some(pid) = properties::property_id(t, k) {
            o.set_by_id(pid, Value::from_json(v));
        }
    }
    if t == ObjectType::Group {
        o.dynamic_membership = o.get("groupTypes").is_some_and(|g| match g {
            Value::List(items) => items
                .iter()
                .any(|i| i.as_str() == Some("DynamicMembership")),
            _ => false,
        });
    }
    Ok(())
}

/// Creates an object from its Graph JSON with a fresh id (201 with the object).
fn create(ctx: &Ctx<'_>, req: &GraphRequest, t: ObjectType) -> Result<Reply, GraphError> {
    let mut body = body_object(req)?.clone();
    if t == ObjectType::NamedLocation {
        let kind = body.get("@odata.type").and_then(Json::as_str).unwrap_or("");
        if !matches!(
            kind,
            "#microsoft.graph.ipNamedLocation" | "#microsoft.graph.countryNamedLocation"
        ) {
            return Err(GraphError::bad_request(
                "A named location needs an @odata.type of #microsoft.graph.ipNamedLocation or #microsoft.graph.countryNamedLocation.",
            ));
        }
    } else {
        body.remove("@odata.type");
    }
    let id = ObjectId(random_guid());
    body.insert("id".into(), Json::String(id.to_string()));
    for k in [
        "deletedDateTime",
        "onPremisesSyncEnabled",
        "members",
        "owners",
        "oauth2PermissionGrants",
        "appRoleAssignedTo",
    ] {
        body.remove(k);
    }
    let object = from_graph_json(t, &Json::Object(body))
        .map_err(|e| GraphError::bad_request(e.to_string()))?;
    let mut data = write(&ctx.tenant.data);
    data.upsert(object);
    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
    let mut full = full_json(o);
    full.insert(
        "@odata.context".into(),
        Json::String(format!(
            "{}/$metadata#{}/$entity",
            ctx.base,
            collection_name(t)
        )),
    );
    Ok(Reply::json(StatusCode::CREATED, Json::Object(full)))
}

fn collection_name(t: ObjectType) -> &'static str {
    match t {
        ObjectType::User => "users",
        ObjectType::Group => "groups",
        ObjectType::Application => "applications",
        ObjectType::ServicePrincipal => "servicePrincipals",
        ObjectType::ConditionalAccessPolicy => "identity/conditionalAccess/policies",
        ObjectType::NamedLocation => "identity/conditionalAccess/namedLocations",
        ObjectType::AuthenticationMethodsPolicy => "policies/authenticationMethodsPolicy",
        ObjectType::AuthorizationPolicy => "policies/authorizationPolicy",
        ObjectType::Organization => "organization",
    }
}

fn app_role_assigned_to(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    sp_id: ObjectId,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let t = ObjectType::ServicePrincipal;
    let kind = LinkKind::AppRoleAssignedTo;
    match (&req.method, rest) {
        (&Method::GET, []) => {
            let data = read(&ctx.tenant.data);
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let links = sp.links_of(kind);
            let start = q
                .after
                .map_or(0, |a| links.partition_point(|l| l.target <= a));
            let iter = links[start..].iter().map(|l| {
                let full = render_assignment(&data, sp, l);
                let keep = match &q.filter {
                    Some(Filter::Eq(p, v)) => eq_matches(&full, p, v),
                    Some(Filter::Ids(ids)) => ids.contains(&l.target),
                    None => true,
                };
                (l.target, keep.then_some(full))
            });
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|m| apply_select(m, q.select.as_deref()))
                .collect();
            let path = format!("servicePrincipals/{sp_id}/appRoleAssignedTo");
            let next = next.map(|last| q.next_link(ctx, &path, last));
            Ok(collection(ctx, "appRoleAssignments", values, next))
        }
        (&Method::POST, []) => {
            let body = body_object(req)?;
            let principal: ObjectId = body
                .get("principalId")
                .and_then(Json::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| GraphError::bad_request("principalId is missing or not a GUID."))?;
            let app_role: ObjectId = match body.get("appRoleId").and_then(Json::as_str) {
                Some(s) => s
                    .parse()
                    .map_err(|_| GraphError::bad_request("appRoleId is not a GUID."))?,
                None => ObjectId(0),
            };
            if let Some(r) = body.get("resourceId").and_then(Json::as_str) {
                if r.parse::<ObjectId>().ok() != Some(sp_id) {
                    return Err(GraphError::bad_request(
                        "resourceId must be the service principal the assignment is posted to.",
                    ));
                }
            }
            let mut data = write(&ctx.tenant.data);
            if data.active(t, sp_id).is_none() {
                return Err(GraphError::not_found(sp_id));
            }
            if data.find_directory_object(principal).is_none() {
                return Err(GraphError::not_found(principal));
            }
            let assignment = ObjectId(random_guid());
            let mut link_data = BTreeMap::new();
            link_data.insert("principalId".to_owned(), Value::from(principal.to_string()));
            link_data.insert("appRoleId".to_owned(), Value::from(app_role.to_string()));
            link_data.insert("createdDateTime".to_owned(), Value::from(format_time(now)));
            data.modify_links(t, sp_id, |sp| {
                let exists = sp.links_of(kind).iter().any(|l| {
                    let d = link_data_of(l);
                    d.get("principalId").and_then(Value::as_str) == Some(&principal.to_string())
                        && d.get("appRoleId").and_then(Value::as_str) == Some(&app_role.to_string())
                });
                if exists {
                    return Err(GraphError::bad_request(
                        "Permission being assigned already exists on the object",
                    ));
                }
                sp.add_link(
                    kind,
                    Link {
                        target: assignment,
                        data: Some(Value::Map(link_data)),
                    },
                );
                Ok(())
            })?;
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let link = sp
                .links_of(kind)
                .iter()
                .find(|l| l.target == assignment)
                .ok_or_else(|| GraphError::not_found(assignment))?;
            Ok(Reply::json(
                StatusCode::CREATED,
                Json::Object(render_assignment(&data, sp, link)),
            ))
        }
        (&Method::GET, [aid]) => {
            let aid = parse_id(aid)?;
            let data = read(&ctx.tenant.data);
            let sp = data
                .active(t, sp_id)
                .ok_or_else(|| GraphError::not_found(sp_id))?;
            let link = sp
                .links_of(kind)
                .iter()
                .find(|l| l.target == aid)
                .ok_or_else(|| GraphError::not_found(aid))?;
            Ok(Reply::json(
                StatusCode::OK,
                apply_select(render_assignment(&data, sp, link), q.select.as_deref()),
            ))
        }
        (&Method::DELETE, [aid]) => {
            let aid = parse_id(aid)?;
            let mut data = write(&ctx.tenant.data);
            if data.active(t, sp_id).is_none() {
                return Err(GraphError::not_found(sp_id));
            }
            data.modify_links(t, sp_id, |sp| {
                if sp.remove_link(kind, aid) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(aid))
                }
            })?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::no_route()),
    }
}

fn link_data_of(l: &Link) -> BTreeMap<String, Value> {
    match &l.data {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    }
}

fn grants(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let sp_t = ObjectType::ServicePrincipal;
    let kind = LinkKind::OAuth2PermissionGrants;
    let find = |data: &TenantData, gid: ObjectId| -> Option<Map<String, Json>> {
        let client = data.active(sp_t, *data.grants().get(&gid)?)?;
        let link = client.links_of(kind).iter().find(|l| l.target == gid)?;
        Some(render_grant(client, link))
    };
    match (&req.method, rest) {
        (&Method::GET, []) => {
            let data = read(&ctx.tenant.data);
            let bounds = after_bound(q);
            let iter = data.grants().range(bounds).map(|(gid, _)| {
                let item = find(&data, *gid).filter(|full| match &q.filter {
                    Some(Filter::Eq(p, v)) => eq_matches(full, p, v),
                    Some(Filter::Ids(ids)) => ids.contains(gid),
                    None => true,
                });
                (*gid, item)
            });
            let (page, next) = collect_page(iter, q.page_size(), settings.max_scan_per_page);
            let values = page
                .into_iter()
                .map(|m| apply_select(m, q.select.as_deref()))
                .collect();
            let next = next.map(|last| q.next_link(ctx, "oauth2PermissionGrants", last));
            Ok(collection(ctx, "oauth2PermissionGrants", values, next))
        }
        (&Method::GET, [gid]) => {
            let gid = parse_id(gid)?;
            let data = read(&ctx.tenant.data);
            let full = find(&data, gid).ok_or_else(|| GraphError::not_found(gid))?;
            Ok(Reply::json(
                StatusCode::OK,
                apply_select(full, q.select.as_deref()),
            ))
        }
        (&Method::POST, []) => {
            let body = body_object(req)?;
            let consent = body.get("consentType").and_then(Json::as_str).unwrap_or("");
            if consent != "AllPrincipals" {
                return Err(GraphError::bad_request(
                    "Only admin-consent grants (consentType AllPrincipals) are simulated.",
                ));
            }
            let guid = |name: &str| -> Result<ObjectId, GraphError> {
                body.get(name)
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        GraphError::bad_request(format!("{name} is missing or not a GUID."))
                    })
            };
            let client = guid("clientId")?;
            let resource = guid("resourceId")?;
            let scope = body
                .get("scope")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned();
            let mut data = write(&ctx.tenant.data);
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(client));
            }
            if data.active(sp_t, resource).is_none() {
                return Err(GraphError::not_found(resource));
            }
            let gid = ObjectId(random_guid());
            data.update(sp_t, client, |sp| {
                let exists = sp.links_of(kind).iter().any(|l| {
                    link_data_of(l).get("resourceId").and_then(Value::as_str)
                        == Some(&resource.to_string())
                });
                if exists {
                    return Err(GraphError::new(
                        StatusCode::CONFLICT,
                        "Request_MultipleObjectsWithSameKeyValue",
                        "Permission entry already exists.",
                    ));
                }
                let mut d = BTreeMap::new();
                d.insert("resourceId".to_owned(), Value::from(resource.to_string()));
                d.insert("scope".to_owned(), Value::from(scope.clone()));
                sp.add_link(
                    kind,
                    Link {
                        target: gid,
                        data: Some(Value::Map(d)),
                    },
                );
                Ok(())
            })?;
            let full = find(&data, gid).ok_or_else(|| GraphError::not_found(gid))?;
            Ok(Reply::json(StatusCode::CREATED, Json::Object(full)))
        }
        (&Method::PATCH, [gid]) => {
            let gid = parse_id(gid)?;
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            let client = *data
                .grants()
                .get(&gid)
                .ok_or_else(|| GraphError::not_found(gid))?;
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(gid));
            }
            data.update(sp_t, client, |sp| {
                let link = sp
                    .links_of(kind)
                    .iter()
                    .find(|l| l.target == gid)
                    .cloned()
                    .ok_or_else(|| GraphError::not_found(gid))?;
                let mut d = link_data_of(&link);
                if let Some(scope) = body.get("scope").and_then(Json::as_str) {
                    d.insert("scope".to_owned(), Value::from(scope));
                }
                sp.add_link(
                    kind,
                    Link {
                        target: gid,
                        data: Some(Value::Map(d)),
                    },
                );
                Ok(())
            })?;
            Ok(Reply::no_content())
        }
        (&Method::DELETE, [gid]) => {
            let gid = parse_id(gid)?;
            let mut data = write(&ctx.tenant.data);
            let client = *data
                .grants()
                .get(&gid)
                .ok_or_else(|| GraphError::not_found(gid))?;
            if data.active(sp_t, client).is_none() {
                return Err(GraphError::not_found(gid));
            }
            data.update(sp_t, client, |sp| {
                if sp.remove_link(kind, gid) {
                    Ok(())
                } else {
                    Err(GraphError::not_found(gid))
                }
            })?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::no_route()),
    }
}

fn conditional_access(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    now: i64,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let ca_type = |s: &str| match s {
        "policies" => Some(ObjectType::ConditionalAccessPolicy),
        "namedLocations" => Some(ObjectType::NamedLocation),
        _ => None,
    };
    let m = &req.method;
    match rest {
        ["deletedItems", kind, tail @ ..] => {
            let t = ca_type(kind).ok_or_else(GraphError::no_route)?;
            match tail {
                [] if *m == Method::GET => {
                    let data = read(&ctx.tenant.data);
                    let path = format!("identity/conditionalAccess/deletedItems/{kind}");
                    Ok(list_objects(ctx, &data, t, true, q, &path, &path, settings))
                }
                [id] if *m == Method::GET => {
                    let id = parse_id(id)?;
                    let data = read(&ctx.tenant.data);
                    if !data.deleted_ids(t).contains(&id) {
                        return Err(GraphError::not_found(id));
                    }
                    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
                }
                [id] if *m == Method::DELETE => {
                    let id = parse_id(id)?;
                    let mut data = write(&ctx.tenant.data);
                    if !data.deleted_ids(t).contains(&id) {
                        return Err(GraphError::not_found(id));
                    }
                    data.purge(&[(t, id)]);
                    Ok(Reply::no_content())
                }
                [id, "restore"] if *m == Method::POST => {
                    let id = parse_id(id)?;
                    let mut data = write(&ctx.tenant.data);
                    data.restore(t, id)?;
                    let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, None)))
                }
                _ => Err(GraphError::no_route()),
            }
        }
        [kind, tail @ ..] => {
            let t = ca_type(kind).ok_or_else(GraphError::no_route)?;
            let path = format!("identity/conditionalAccess/{kind}");
            match tail {
                [] if *m == Method::GET => {
                    let data = read(&ctx.tenant.data);
                    Ok(list_objects(
                        ctx, &data, t, false, q, &path, &path, settings,
                    ))
                }
                [] if *m == Method::POST => create(ctx, req, t),
                [id] if *m == Method::GET => {
                    let id = parse_id(id)?;
                    let data = read(&ctx.tenant.data);
                    let o = data
                        .active(t, id)
                        .ok_or_else(|| GraphError::not_found(id))?;
                    Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
                }
                [id] if *m == Method::PATCH => {
                    let id = parse_id(id)?;
                    let body = body_object(req)?;
                    let mut data = write(&ctx.tenant.data);
                    data.update(t, id, |o| {
                        if !o.lifecycle.is_active() {
                            return Err(GraphError::not_found(id));
                        }
                        apply_patch(o, body, false)
                    })?;
                    Ok(Reply::no_content())
                }
                [id] if *m == Method::DELETE => {
                    let id = parse_id(id)?;
                    write(&ctx.tenant.data).soft_delete(t, id, now)?;
                    Ok(Reply::no_content())
                }
                _ => Err(GraphError::no_route()),
            }
        }
        _ => Err(GraphError::no_route()),
    }
}

fn singleton(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    t: ObjectType,
    q: &Query,
) -> Result<Reply, GraphError> {
    match req.method {
        Method::GET => {
            let data = read(&ctx.tenant.data);
            let o = data
                .map(t)
                .values()
                .next()
                .ok_or_else(|| GraphError::not_found(t))?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        Method::PATCH => {
            let body = body_object(req)?;
            let mut data = write(&ctx.tenant.data);
            let id = *data
                .map(t)
                .keys()
                .next()
                .ok_or_else(|| GraphError::not_found(t))?;
            data.update(t, id, |o| apply_patch(o, body, false))?;
            Ok(Reply::no_content())
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}

fn deleted_items(
    ctx: &Ctx<'_>,
    req: &GraphRequest,
    rest: &[&str],
    q: &Query,
    settings: &Settings,
) -> Result<Reply, GraphError> {
    let m = &req.method;
    let find_deleted = |data: &TenantData, id: ObjectId| -> Option<ObjectType> {
        super::store::DIRECTORY_TYPES
            .into_iter()
            .find(|t| data.deleted_ids(*t).contains(&id))
    };
    match rest {
        [] => Err(GraphError::bad_request(
            "The type cast is required: use /directory/deletedItems/microsoft.graph.user (or group, application, servicePrincipal).",
        )),
        [segment] if *m == Method::GET && segment.parse::<ObjectId>().is_err() => {
            let t = match *segment {
                "microsoft.graph.user" => ObjectType::User,
                "microsoft.graph.group" => ObjectType::Group,
                "microsoft.graph.application" => ObjectType::Application,
                "microsoft.graph.servicePrincipal" => ObjectType::ServicePrincipal,
                _ => return Err(GraphError::bad_request(format!("Unsupported type cast '{segment}'."))),
            };
            let data = read(&ctx.tenant.data);
            let path = format!("directory/deletedItems/{segment}");
            Ok(list_objects(ctx, &data, t, true, q, &path, &path, settings))
        }
        [id] if *m == Method::GET => {
            let id = parse_id(id)?;
            let data = read(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
            Ok(Reply::json(StatusCode::OK, render(o, q.select.as_deref())))
        }
        [id] if *m == Method::DELETE => {
            let id = parse_id(id)?;
            let mut data = write(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            data.purge(&[(t, id)]);
            Ok(Reply::no_content())
        }
        [id, "restore"] if *m == Method::POST => {
            let id = parse_id(id)?;
            let mut data = write(&ctx.tenant.data);
            let t = find_deleted(&data, id).ok_or_else(|| GraphError::not_found(id))?;
            data.restore(t, id)?;
            let o = data.get(t, id).ok_or_else(|| GraphError::not_found(id))?;
            Ok(Reply::json(StatusCode::OK, Json::Object(full_json(o))))
        }
        _ => Err(GraphError::no_route()),
    }
}

fn get_by_ids(ctx: &Ctx<'_>, req: &GraphRequest) -> Result<Reply, GraphError> {
    let body = body_object(req)?;
    let ids = body
        .get("ids")
        .and_then(Json::as_array)
        .ok_or_else(|| GraphError::bad_request("ids is required."))?;
    if ids.len() > 1000 {
        return Err(GraphError::bad_request(format!(
            "Too many ids: {} (at most 1000).",
            ids.len()
        )));
    }
    let mut types = Vec::new();
    for t in body
        .get("types")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let t = t.as_str().unwrap_or("");
        let t = match t
            .trim_start_matches("microsoft.graph.")
            .to_ascii_lowercase()
            .as_str()
        {
            "user" => ObjectType::User,
            "group" => ObjectType::Group,
            "application" => ObjectType::Application,
            "serviceprincipal" => ObjectType::ServicePrincipal,
            _ => return Err(GraphError::bad_request(format!("Unsupported type '{t}'."))),
        };
        types.push(t);
    }
    let data = read(&ctx.tenant.data);
    let mut values = Vec::new();
    for id in ids {
        let id: ObjectId = id
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GraphError::bad_request(format!("Invalid object identifier '{id}'.")))?;
        if let Some(o) = data.find_directory_object(id) {
            if types.is_empty() || types.contains(&o.object_type) {
                values.push(Json::Object(full_json(o)));
            }
        }
    }
    Ok(collection(ctx, "directoryObjects", values, None))
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
