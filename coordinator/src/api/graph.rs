//! Microsoft's `/directory/recovery` routes for one tenant: snapshots (backups), recovery
//! preview jobs (difference reports) and their `getChanges` pages, jobs and cancel; recovery
//! jobs answer 501 until recoveries exist.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rewind_common::snapshot::SnapshotKind;
use rewind_common::ReportEntry;
use serde_json::{json, Value as Json};

use super::auth::{Caller, Right};
use super::change::{change_json, criteria_of, scope_from_criteria};
use super::error::ApiError;
use super::odata::{Clause, Op, Query};
use super::{blocking, json_response, ApiState, JsonBody};
use crate::state::{Actor, EntryCursor, Job, JobKind, JobStatus, SnapshotRecord, State as Store};

pub const PREVIEW_JOB_TYPE: &str = "#microsoft.graph.entraRecoveryServices.recoveryPreviewJob";

/// Whether the request asked for the newer enum members (`loadingData`, `calculating`, grants
/// and assignments).
pub fn wants_newer(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.to_ascii_lowercase()
                .contains("include-unknown-enum-members")
        })
    })
}

/// A status as Microsoft sends it.
pub fn status_name(status: JobStatus, newer: bool) -> &'static str {
    match status {
        JobStatus::LoadingData | JobStatus::Calculating | JobStatus::AwaitingApproval if !newer => {
            "unknownFutureValue"
        }
        s => s.as_str(),
    }
}

fn base(tenant: &str) -> String {
    format!("/tenants/{tenant}/v1.0")
}

fn context(tenant: &str, what: &str) -> String {
    format!("{}/$metadata#{what}", base(tenant))
}

/// The tenant checks of every route: in the token's list (else 404), the right (else 403),
/// and a tenant that exists (else 404).
pub(crate) fn tenant_check(
    api: &ApiState,
    caller: &Caller,
    tenant: &str,
    right: Right,
) -> Result<(), ApiError> {
    caller.on_tenant(tenant, right)?;
    api.engine.state().get_tenant(tenant)?;
    Ok(())
}

fn snapshot_json(s: &SnapshotRecord) -> Json {
    json!({
        "id": s.id,
        "createdDateTime": rewind_common::graph_json::format_time(s.created_at),
        "totalChangedObjects": s.object_count,
    })
}

/// A backup of the tenant, or Microsoft's 404 for a snapshot it does not know.
fn backup_of(store: &Store, tenant: &str, id: &str) -> Result<SnapshotRecord, ApiError> {
    match store.get_snapshot(tenant, id) {
        Ok(s) if s.kind == SnapshotKind::Backup => Ok(s),
        Ok(_) | Err(crate::state::StateError::NotFound { .. }) => {
            Err(ApiError::not_found(format!(
                "This isn't a valid timestamp for recovery: tenant {tenant} has no backup {id}"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn time(t: Option<i64>) -> Json {
    t.map_or(Json::Null, |t| {
        json!(rewind_common::graph_json::format_time(t))
    })
}

/// The `recoveryPreviewJob` of a report job.
pub fn preview_job_json(store: &Store, job: &Job, newer: bool) -> Json {
    let JobKind::Report { backup, scope } = &job.kind else {
        return Json::Null;
    };
    let target = store
        .get_snapshot(&job.tenant, backup)
        .ok()
        .map(|s| s.created_at);
    let calculated = |key: &str| {
        if job.status == JobStatus::Successful {
            json!(job.counts.get(key).copied().unwrap_or(0))
        } else {
            Json::Null
        }
    };
    json!({
        "@odata.type": PREVIEW_JOB_TYPE,
        "id": job.id,
        "status": status_name(job.status, newer),
        "targetStateDateTime": time(target),
        "jobStartDateTime": time(Some(job.created_at)),
        "jobCompletionDateTime": time(job.finished_at),
        "filteringCriteria": criteria_of(scope),
        "totalChangedObjectsCalculated": calculated("entries"),
        "totalChangedLinksCalculated": calculated("links"),
    })
}

fn with_context(mut value: Json, context: String) -> Json {
    if let Json::Object(map) = &mut value {
        map.insert("@odata.context".into(), json!(context));
    }
    value
}

pub async fn list_snapshots(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state().clone();
    let name = tenant.clone();
    let list =
        blocking(move || Ok(store.list_snapshots(&name, Some(SnapshotKind::Backup))?)).await?;
    Ok(axum::Json(json!({
        "@odata.context": context(&tenant, "directory/recovery/snapshots"),
        "value": list.iter().map(snapshot_json).collect::<Vec<_>>(),
    })))
}

pub async fn get_snapshot(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot)): Path<(String, String)>,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let s = backup_of(api.engine.state(), &tenant, &snapshot)?;
    Ok(axum::Json(with_context(
        snapshot_json(&s),
        context(&tenant, "directory/recovery/snapshots/$entity"),
    )))
}

/// `POST snapshots` (ext): a backup now.
pub async fn backup_now(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Write)?;
    let job = api
        .engine
        .start_backup_by(&Actor::token(&caller.0), &tenant)
        .await?;
    let location = format!("/tenants/{tenant}/rewind/jobs/{}", job.id);
    Ok(accepted(&location, &super::rewind::job_view(&job)))
}

fn accepted(location: &str, body: &Json) -> Response {
    let mut response = json_response(StatusCode::ACCEPTED, body);
    if let Ok(value) = header::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub async fn start_preview_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Write)?;
    let map = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "filteringCriteria" | "@odata.type"))
    {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} in the body (expected filteringCriteria)"
        )));
    }
    let scope = scope_from_criteria(map.get("filteringCriteria"))?;
    backup_of(api.engine.state(), &tenant, &snapshot)?;
    let job = api
        .engine
        .start_report_by(&Actor::token(&caller.0), &tenant, &snapshot, scope)
        .await?;
    let location = format!(
        "{}/directory/recovery/snapshots/{snapshot}/recoveryPreviewJobs/{}",
        base(&tenant),
        job.id
    );
    let body = with_context(
        preview_job_json(api.engine.state(), &job, wants_newer(&headers)),
        context(
            &tenant,
            &format!("directory/recovery/snapshots('{snapshot}')/recoveryPreviewJobs/$entity"),
        ),
    );
    Ok(accepted(&location, &body))
}

/// A report job of the tenant on that backup, else 404.
fn preview_job(store: &Store, tenant: &str, snapshot: &str, id: &str) -> Result<Job, ApiError> {
    let job = store.get_job(id)?;
    match &job.kind {
        JobKind::Report { backup, .. } if job.tenant == tenant && backup == snapshot => Ok(job),
        _ => Err(ApiError::not_found(format!(
            "job {id} not found on snapshot {snapshot}"
        ))),
    }
}

pub async fn list_preview_jobs(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state().clone();
    backup_of(&store, &tenant, &snapshot)?;
    let newer = wants_newer(&headers);
    let (name, backup) = (tenant.clone(), snapshot.clone());
    let value: Vec<Json> = blocking(move || {
        Ok(store
            .list_jobs(&name)?
            .iter()
            .filter(|j| j.kind.backup() == Some(backup.as_str()))
            .map(|j| preview_job_json(&store, j, newer))
            .collect())
    })
    .await?;
    Ok(axum::Json(json!({
        "@odata.context": context(&tenant, &format!("directory/recovery/snapshots('{snapshot}')/recoveryPreviewJobs")),
        "value": value,
    })))
}

pub async fn get_preview_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state();
    backup_of(store, &tenant, &snapshot)?;
    let job = preview_job(store, &tenant, &snapshot, &id)?;
    Ok(axum::Json(with_context(
        preview_job_json(store, &job, wants_newer(&headers)),
        context(
            &tenant,
            &format!("directory/recovery/snapshots('{snapshot}')/recoveryPreviewJobs/$entity"),
        ),
    )))
}

/// Where a page starts.
enum Start {
    After(Option<EntryCursor>),
    /// Skip this many entries that pass the filter, from the start.
    SkipMatching(u64),
}

/// The cursor just before entry number `skip` of a report whose ranges hold `counts`: a
/// position in O(ranges). Past the end: a cursor after every entry.
fn cursor_at(counts: &BTreeMap<u32, u64>, skip: u64) -> Option<EntryCursor> {
    let mut before = 0u64;
    let mut previous: Option<u32> = None;
    for (&range, &n) in counts {
        if skip < before + n {
            let seq = skip - before;
            return if seq > 0 {
                Some(EntryCursor {
                    range,
                    seq: u32::try_from(seq - 1).unwrap_or(u32::MAX),
                })
            } else {
                previous.map(|r| EntryCursor {
                    range: r,
                    seq: u32::MAX,
                })
            };
        }
        before += n;
        previous = Some(range);
    }
    if skip == 0 {
        return None;
    }
    Some(EntryCursor {
        range: u32::MAX,
        seq: u32::MAX,
    })
}

fn passes(entry: &ReportEntry, filter: &[Clause]) -> bool {
    filter
        .iter()
        .all(|c| c.op.test(&entry.display_name, &c.value))
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<ReportEntry, ApiError> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("a stored report entry does not decode: {e}")))
}

/// One page: up to `top` change objects from `start`, and the cursor of the next page.
fn read_page(
    store: &Store,
    job: &str,
    start: Start,
    top: usize,
    filter: &[Clause],
    newer: bool,
) -> Result<(Vec<Json>, Option<EntryCursor>), ApiError> {
    let (mut after, mut to_skip) = match start {
        Start::After(c) => (c, 0),
        Start::SkipMatching(n) => (None, n),
    };
    let chunk = top.max(256);
    let mut out = Vec::with_capacity(top);
    loop {
        let (entries, more) = store.report_entries_after(job, after, chunk)?;
        let n = entries.len();
        for (i, (cursor, bytes)) in entries.into_iter().enumerate() {
            after = Some(cursor);
            let entry = decode_entry(&bytes)?;
            if !passes(&entry, filter) {
                continue;
            }
            if to_skip > 0 {
                to_skip -= 1;
                continue;
            }
            out.push(change_json(&entry, newer));
            if out.len() == top {
                let rest = more || i + 1 < n;
                return Ok((out, if rest { Some(cursor) } else { None }));
            }
        }
        if !more {
            return Ok((out, None));
        }
    }
}

const CHANGES_FILTER: &[(&str, &[Op])] = &[("displayName", &[Op::Eq, Op::Ne, Op::StartsWith])];

pub async fn get_changes(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot, id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(
        raw.as_deref(),
        &["$top", "$skip", "$skiptoken", "$filter"],
        CHANGES_FILTER,
    )?;
    let store = api.engine.state().clone();
    backup_of(&store, &tenant, &snapshot)?;
    let job = preview_job(&store, &tenant, &snapshot, &id)?;
    if job.status != JobStatus::Successful {
        return Err(ApiError::bad_request(format!(
            "Job with identifier {id} must have completed successfully prior to enumerating changes."
        )));
    }
    let top = query.top.unwrap_or(100) as usize;
    let start = match (&query.skiptoken, query.skip) {
        (Some(token), _) => Start::After(Some(EntryCursor::from_token(token)?)),
        (None, None | Some(0)) => Start::After(None),
        (None, Some(skip)) if query.filter.is_empty() => {
            Start::After(cursor_at(&*api.range_counts(&id).await?, skip))
        }
        (None, Some(skip)) => Start::SkipMatching(skip),
    };
    let newer = wants_newer(&headers);
    let filter = query.filter.clone();
    let job_id = job.id.clone();
    let (value, next) =
        blocking(move || read_page(&store, &job_id, start, top, &filter, newer)).await?;
    let mut body = json!({
        "@odata.context": context(&tenant, "Collection(microsoft.graph.entraRecoveryServices.recoveryChangeObjectBase)"),
        "value": value,
    });
    if let Some(next) = next {
        let mut params = vec![("$top", top.to_string()), ("$skiptoken", next.to_token())];
        if let Some(f) = &query.filter_text {
            params.push(("$filter", f.clone()));
        }
        let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
        body["@odata.nextLink"] = json!(format!("{}?{qs}", uri.path()));
    }
    Ok(axum::Json(body))
}

/// Recovery jobs: checked like the routes they will be, then 501 until recoveries exist.
pub async fn recovery_read(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    recovery(&api, &caller, &params, Right::Read)
}

pub async fn recovery_write(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    recovery(&api, &caller, &params, Right::Write)
}

fn recovery(
    api: &ApiState,
    caller: &Caller,
    params: &[(String, String)],
    right: Right,
) -> Result<Response, ApiError> {
    let tenant = params
        .iter()
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    tenant_check(api, caller, tenant, right)?;
    Err(ApiError::not_implemented(
        "recovery jobs are not implemented yet in Rewind",
    ))
}

const JOBS_FILTER: &[(&str, &[Op])] = &[
    ("id", &[Op::Eq, Op::Ne]),
    ("status", &[Op::Eq, Op::Ne]),
    ("targetStateDateTime", &[Op::Eq, Op::Ne]),
];

fn job_passes(store: &Store, job: &Job, filter: &[Clause]) -> Result<bool, ApiError> {
    for c in filter {
        let ok = match c.field.as_str() {
            "id" => c.op.test(&job.id, &c.value),
            "status" => c.op.test(job.status.as_str(), &c.value),
            _ => {
                let want = rewind_common::graph_json::parse_time(&c.value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "$filter: targetStateDateTime {:?} is not an RFC 3339 time",
                        c.value
                    ))
                })?;
                let at = job
                    .kind
                    .backup()
                    .and_then(|b| store.get_snapshot(&job.tenant, b).ok())
                    .map(|s| s.created_at);
                match c.op {
                    Op::Ne => at != Some(want),
                    _ => at == Some(want),
                }
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Microsoft's jobs: the tenant's previews (and, later, recoveries), newest first.
pub async fn list_jobs(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(raw.as_deref(), &["$top", "$filter"], JOBS_FILTER)?;
    let store = api.engine.state().clone();
    let newer = wants_newer(&headers);
    let top = query.top.unwrap_or(u64::MAX) as usize;
    let name = tenant.clone();
    let value = blocking(move || {
        let mut value = Vec::new();
        for job in store.list_jobs(&name)? {
            if value.len() == top {
                break;
            }
            if matches!(job.kind, JobKind::Report { .. })
                && job_passes(&store, &job, &query.filter)?
            {
                value.push(preview_job_json(&store, &job, newer));
            }
        }
        Ok(value)
    })
    .await?;
    Ok(axum::Json(json!({
        "@odata.context": context(&tenant, "directory/recovery/jobs"),
        "value": value,
    })))
}

/// A job of the tenant (any kind), else 404.
pub(crate) fn tenant_job(store: &Store, tenant: &str, id: &str) -> Result<Job, ApiError> {
    match store.get_job(id) {
        Ok(job) if job.tenant == tenant => Ok(job),
        Ok(_) => Err(ApiError::not_found(format!("job {id} not found"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state();
    let job = tenant_job(store, &tenant, &id)?;
    if !matches!(job.kind, JobKind::Report { .. }) {
        return Err(ApiError::not_found(format!(
            "job {id} not found (a {} job is under /tenants/{tenant}/rewind/jobs)",
            job.kind.name()
        )));
    }
    Ok(axum::Json(with_context(
        preview_job_json(store, &job, wants_newer(&headers)),
        context(&tenant, "directory/recovery/jobs/$entity"),
    )))
}

/// Cancels any open job of the tenant (backups too): 202, the job becomes `abandoned`.
pub async fn cancel_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Write)?;
    tenant_job(api.engine.state(), &tenant, &id)?;
    api.engine.cancel_by(&Actor::token(&caller.0), &id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_becomes_the_cursor_before_it() {
        let counts = BTreeMap::from([(0, 3), (1, 0), (2, 2)]);
        let c = |range, seq| Some(EntryCursor { range, seq });
        assert_eq!(cursor_at(&counts, 0), None);
        assert_eq!(cursor_at(&counts, 2), c(0, 1));
        assert_eq!(cursor_at(&counts, 3), c(1, u32::MAX));
        assert_eq!(cursor_at(&counts, 4), c(2, 0));
        assert_eq!(cursor_at(&counts, 5), c(u32::MAX, u32::MAX));
    }
}
