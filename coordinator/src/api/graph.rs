//! Microsoft's `/directory/recovery` routes for one tenant: snapshots (backups), recovery
//! preview jobs (difference reports) and their `getChanges` pages, recovery jobs and their
//! `getFailedChanges` pages, jobs and cancel.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rewind_common::snapshot::SnapshotKind;
use rewind_common::ReportEntry;
use serde_json::{json, Value as Json};

use super::auth::{Caller, Right};
use super::change::{change_json, criteria_of, failed_change_json, scope_from_criteria};
use super::error::ApiError;
use super::odata::{Clause, Op, Query};
use super::{blocking, json_response, ApiState, JsonBody};
use crate::state::{
    ActionRecord, Actor, EntryCursor, Job, JobKind, JobStatus, Outcome, SnapshotRecord,
    State as Store,
};
use rewind_common::report::Scope;

pub const PREVIEW_JOB_TYPE: &str = "#microsoft.graph.entraRecoveryServices.recoveryPreviewJob";
pub const RECOVERY_JOB_TYPE: &str = "#microsoft.graph.entraRecoveryServices.recoveryJob";

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

/// The `@odata.context` of a snapshot's job collection (`recoveryPreviewJobs`,
/// `recoveryJobs`), or of one of its entities.
fn jobs_context(tenant: &str, snapshot: &str, jobs: &str, entity: bool) -> String {
    let what = format!("directory/recovery/snapshots('{snapshot}')/{jobs}");
    context(
        tenant,
        &if entity {
            format!("{what}/$entity")
        } else {
            what
        },
    )
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

/// The snapshot a recovery goes back to: a backup, or a recovery's pre-recovery snapshot (an
/// undo's); Microsoft's 404 for any other.
fn recovery_target(store: &Store, tenant: &str, id: &str) -> Result<SnapshotRecord, ApiError> {
    match store.get_snapshot(tenant, id) {
        Ok(s) if matches!(s.kind, SnapshotKind::Backup | SnapshotKind::PreRecovery) => Ok(s),
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

/// A recovery's approval (ext): whether its plan needed one, the objects it modifies, who
/// started it, and the decision once made.
pub fn approval_json(job: &Job) -> Json {
    let Some(r) = &job.recovery else {
        return Json::Null;
    };
    json!({
        "required": r.needs_approval,
        "objects": r.objects,
        "startedBy": r.starter.as_ref().map(ToString::to_string),
        "decision": r.approval.as_ref().map(|a| json!({
            "approved": a.approved,
            "byId": a.by_id,
            "byName": a.by_name,
            "dateTime": rewind_common::graph_json::format_time(a.at),
        })),
    })
}

/// The `recoveryJob` of a recovery job: `recoveryJobBase`'s fields, the modified counts
/// (null until the job ends), and (ext) `dryRun`, `reportId`, `undoOf`, `approval`.
pub fn recovery_job_json(store: &Store, job: &Job, newer: bool) -> Json {
    let JobKind::Recovery {
        backup,
        scope,
        from_report,
        dry_run,
        undo_of,
    } = &job.kind
    else {
        return Json::Null;
    };
    let target = store
        .get_snapshot(&job.tenant, backup)
        .ok()
        .map(|s| s.created_at);
    let count = |key: &str, when: bool| {
        if when {
            json!(job.counts.get(key).copied().unwrap_or(0))
        } else {
            Json::Null
        }
    };
    let planned = job.counts.contains_key("objectsToModify");
    let ended = job.status.is_terminal();
    json!({
        "@odata.type": RECOVERY_JOB_TYPE,
        "id": job.id,
        "status": status_name(job.status, newer),
        "targetStateDateTime": time(target),
        "jobStartDateTime": time(Some(job.created_at)),
        "jobCompletionDateTime": time(job.finished_at),
        "filteringCriteria": criteria_of(scope),
        "totalChangedObjectsCalculated": count("objectsToModify", planned),
        "totalChangedLinksCalculated": count("linksToModify", planned),
        "totalObjectsModified": count("objectsModified", ended),
        "totalLinksModified": count("linksModified", ended),
        "totalFailedChanges": count("failedChanges", ended),
        "dryRun": dry_run,
        "reportId": from_report,
        "undoOf": undo_of,
        "approval": approval_json(job),
    })
}

/// A job of Microsoft's `jobs` (a preview or a recovery), with its `@odata.type`.
pub fn ms_job_json(store: &Store, job: &Job, newer: bool) -> Json {
    match job.kind {
        JobKind::Recovery { .. } => recovery_job_json(store, job, newer),
        _ => preview_job_json(store, job, newer),
    }
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

pub(crate) fn accepted(location: &str, body: &Json) -> Response {
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
        jobs_context(&tenant, &snapshot, "recoveryPreviewJobs", true),
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
        "@odata.context": jobs_context(&tenant, &snapshot, "recoveryPreviewJobs", false),
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
        jobs_context(&tenant, &snapshot, "recoveryPreviewJobs", true),
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

/// What a `POST recoveryJobs` asks for.
#[derive(Debug)]
pub(crate) struct RecoveryRequest {
    pub scope: Scope,
    pub from_report: Option<String>,
    pub dry_run: bool,
}

/// The ids of `objectIds` (Rewind's listed scope): GUIDs, at most [`Scope::MAX_LISTED_IDS`].
fn listed_ids(value: &Json) -> Result<Scope, ApiError> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::bad_request("objectIds must be an array of GUID strings"))?;
    if items.len() > Scope::MAX_LISTED_IDS {
        return Err(ApiError::bad_request(format!(
            "objectIds names {} ids; at most {} in all",
            items.len(),
            Scope::MAX_LISTED_IDS
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let id = v
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ApiError::bad_request(format!("objectIds[{i}] {v} is not a GUID")))?;
        ids.push(id);
    }
    Scope::ids_up_to(ids, Scope::MAX_LISTED_IDS)
        .map_err(|e| ApiError::bad_request(format!("objectIds: {e}")))
}

/// Reads a `POST recoveryJobs` body: `{}`, `filteringCriteria`, or (ext) `reportId` (the
/// report's scope: a report of this tenant on this snapshot) or `objectIds`; and `dryRun`.
pub(crate) fn recovery_request(
    store: &Store,
    tenant: &str,
    snapshot: &str,
    body: &Json,
) -> Result<RecoveryRequest, ApiError> {
    let map = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    if let Some(k) = map.keys().find(|k| {
        !matches!(
            k.as_str(),
            "filteringCriteria" | "@odata.type" | "reportId" | "objectIds" | "dryRun"
        )
    }) {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} in the body (expected filteringCriteria, reportId, objectIds, dryRun)"
        )));
    }
    let given = |k: &str| map.get(k).filter(|v| !v.is_null());
    let (criteria, report, ids) = (
        given("filteringCriteria"),
        given("reportId"),
        given("objectIds"),
    );
    let named: Vec<&str> = [
        ("filteringCriteria", criteria.is_some()),
        ("reportId", report.is_some()),
        ("objectIds", ids.is_some()),
    ]
    .iter()
    .filter(|(_, g)| *g)
    .map(|(k, _)| *k)
    .collect();
    if named.len() > 1 {
        return Err(ApiError::bad_request(format!(
            "{} cannot be given together: a recovery takes one scope (from a report, a \
             filteringCriteria, or a list of objectIds)",
            named.join(" and ")
        )));
    }
    let dry_run = match given("dryRun") {
        None => false,
        Some(Json::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "dryRun must be true or false, not {v}"
            )))
        }
    };
    let mut from_report = None;
    let scope = if let Some(r) = report {
        let id = r
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("reportId must be a string, not {r}")))?;
        let job = match store.get_job(id) {
            Ok(j) if j.tenant == tenant => j,
            Ok(_) | Err(crate::state::StateError::NotFound { .. }) => {
                return Err(ApiError::not_found(format!(
                    "reportId: tenant {tenant} has no report {id}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let JobKind::Report { backup, scope } = &job.kind else {
            return Err(ApiError::bad_request(format!(
                "reportId: job {id} is a {} job, not a report",
                job.kind.name()
            )));
        };
        if backup != snapshot {
            return Err(ApiError::bad_request(format!(
                "reportId: report {id} compares with backup {backup}, not with {snapshot}"
            )));
        }
        from_report = Some(id.to_owned());
        scope.clone()
    } else if let Some(ids) = ids {
        listed_ids(ids)?
    } else {
        scope_from_criteria(criteria)?
    };
    Ok(RecoveryRequest {
        scope,
        from_report,
        dry_run,
    })
}

fn recovery_location(tenant: &str, snapshot: &str, id: &str) -> String {
    format!(
        "{}/directory/recovery/snapshots/{snapshot}/recoveryJobs/{id}",
        base(tenant)
    )
}

/// `POST snapshots/{id}/recoveryJobs`: 202 + `Location` of the new recovery job.
pub async fn start_recovery_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Write)?;
    let store = api.engine.state();
    recovery_target(store, &tenant, &snapshot)?;
    let req = recovery_request(store, &tenant, &snapshot, &body)?;
    let job = api
        .engine
        .start_recovery_by(
            &Actor::token(&caller.0),
            &tenant,
            &snapshot,
            req.scope,
            req.from_report,
            req.dry_run,
            None,
        )
        .await?;
    let body = with_context(
        recovery_job_json(store, &job, wants_newer(&headers)),
        jobs_context(&tenant, &snapshot, "recoveryJobs", true),
    );
    Ok(accepted(
        &recovery_location(&tenant, &snapshot, &job.id),
        &body,
    ))
}

/// A recovery job of the tenant on that snapshot, else 404.
fn recovery_job(store: &Store, tenant: &str, snapshot: &str, id: &str) -> Result<Job, ApiError> {
    let job = store.get_job(id)?;
    match &job.kind {
        JobKind::Recovery { backup, .. } if job.tenant == tenant && backup == snapshot => Ok(job),
        _ => Err(ApiError::not_found(format!(
            "recovery job {id} not found on snapshot {snapshot}"
        ))),
    }
}

/// `GET snapshots/{id}/recoveryJobs`: the recoveries back to that snapshot, newest first;
/// `$filter` and `$top` as `jobs`.
pub async fn list_recovery_jobs(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(raw.as_deref(), &["$top", "$filter"], JOBS_FILTER)?;
    let store = api.engine.state().clone();
    recovery_target(&store, &tenant, &snapshot)?;
    let newer = wants_newer(&headers);
    let (name, backup) = (tenant.clone(), snapshot.clone());
    let value = blocking(move || {
        matching_jobs(&store, &name, &query, |j| {
            matches!(j.kind, JobKind::Recovery { .. }) && j.kind.backup() == Some(backup.as_str())
        })
        .map(|jobs| {
            jobs.iter()
                .map(|j| recovery_job_json(&store, j, newer))
                .collect::<Vec<_>>()
        })
    })
    .await?;
    Ok(axum::Json(json!({
        "@odata.context": jobs_context(&tenant, &snapshot, "recoveryJobs", false),
        "value": value,
    })))
}

pub async fn get_recovery_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state();
    recovery_target(store, &tenant, &snapshot)?;
    let job = recovery_job(store, &tenant, &snapshot, &id)?;
    Ok(axum::Json(with_context(
        recovery_job_json(store, &job, wants_newer(&headers)),
        jobs_context(&tenant, &snapshot, "recoveryJobs", true),
    )))
}

/// A `$skiptoken` of the action routes: the sequence number of the last action returned.
pub(crate) fn seq_token(token: Option<&str>) -> Result<Option<u32>, ApiError> {
    token
        .map(|t| {
            t.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "$skiptoken {t:?} is not a cursor of this collection (an action's sequence number)"
                ))
            })
        })
        .transpose()
}

/// Up to `top` actions of a recovery after `after` that `keep` keeps, and the sequence number
/// to continue after when more may follow.
pub(crate) fn actions_page(
    store: &Store,
    job: &str,
    mut after: Option<u32>,
    top: usize,
    keep: impl Fn(&ActionRecord) -> bool,
) -> Result<(Vec<ActionRecord>, Option<u32>), ApiError> {
    let chunk = top.max(256);
    let mut out = Vec::with_capacity(top.min(1024));
    loop {
        let (actions, more) = store.actions_after(job, after, chunk)?;
        let n = actions.len();
        for (i, a) in actions.into_iter().enumerate() {
            after = Some(a.seq);
            if !keep(&a) {
                continue;
            }
            let seq = a.seq;
            out.push(a);
            if out.len() == top {
                let rest = more || i + 1 < n;
                return Ok((out, rest.then_some(seq)));
            }
        }
        if !more {
            return Ok((out, None));
        }
    }
}

/// The `@odata.nextLink` of an action page.
pub(crate) fn next_link(path: &str, top: usize, next: u32, extra: &[(&str, String)]) -> String {
    let mut params = vec![("$top", top.to_string()), ("$skiptoken", next.to_string())];
    params.extend(extra.iter().cloned());
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!("{path}?{qs}")
}

/// `GET .../recoveryJobs/{id}/getFailedChanges`: the failed actions as change objects, paged
/// like `getChanges` (`$top`, `$skiptoken`).
pub async fn get_failed_changes(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, snapshot, id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    uri: axum::http::Uri,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(raw.as_deref(), &["$top", "$skiptoken"], &[])?;
    let store = api.engine.state().clone();
    recovery_target(&store, &tenant, &snapshot)?;
    let job = recovery_job(&store, &tenant, &snapshot, &id)?;
    let top = query.top.unwrap_or(100) as usize;
    let after = seq_token(query.skiptoken.as_deref())?;
    let (value, next) = blocking(move || {
        actions_page(&store, &job.id, after, top, |a| {
            matches!(a.outcome, Outcome::Failed { .. })
        })
    })
    .await?;
    let mut body = json!({
        "@odata.context": context(&tenant, "Collection(microsoft.graph.entraRecoveryServices.recoveryChangeObjectBase)"),
        "value": value.iter().map(failed_change_json).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next_link(uri.path(), top, next, &[]));
    }
    Ok(axum::Json(body))
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

/// The tenant's jobs that `keep` keeps and pass the query's `$filter`, newest first, at most
/// `$top`.
fn matching_jobs(
    store: &Store,
    tenant: &str,
    query: &Query,
    keep: impl Fn(&Job) -> bool,
) -> Result<Vec<Job>, ApiError> {
    let top = query.top.unwrap_or(u64::MAX) as usize;
    let mut out = Vec::new();
    for job in store.list_jobs(tenant)? {
        if out.len() == top {
            break;
        }
        if keep(&job) && job_passes(store, &job, &query.filter)? {
            out.push(job);
        }
    }
    Ok(out)
}

/// Microsoft's jobs: the tenant's previews and recoveries, newest first.
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
    let name = tenant.clone();
    let value = blocking(move || {
        matching_jobs(&store, &name, &query, |j| {
            !matches!(j.kind, JobKind::Backup)
        })
        .map(|jobs| {
            jobs.iter()
                .map(|j| ms_job_json(&store, j, newer))
                .collect::<Vec<_>>()
        })
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
    if matches!(job.kind, JobKind::Backup) {
        return Err(ApiError::not_found(format!(
            "job {id} not found (a {} job is under /tenants/{tenant}/rewind/jobs)",
            job.kind.name()
        )));
    }
    Ok(axum::Json(with_context(
        ms_job_json(store, &job, wants_newer(&headers)),
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
