//! Rewind's per-tenant extensions: the job view (every kind; what the CLI polls), the report
//! export (CSV or JSON Lines, streamed from the state a page at a time), and a recovery's
//! actions (paged, exported), its planned directory calls, approval, rejection and undo.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rewind_common::plan::PlannedStep;
use serde_json::{json, Value as Json};

use super::auth::{Caller, Right};
use super::change::{
    action_csv_row, action_json, change_json, csv_rows, ACTIONS_CSV_HEADER, CSV_HEADER,
};
use super::error::ApiError;
use super::graph::{
    accepted, actions_page, approval_json, decode_entry, next_link, seq_token, tenant_check,
    tenant_job,
};
use super::odata::Query;
use super::{blocking, ApiState};
use crate::state::{Actor, EntryCursor, Job, JobKind, JobStatus, Phase, State as Store};

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "pending",
        Phase::Capturing => "capturing",
        Phase::Sealing => "sealing",
        Phase::Loading => "loading",
        Phase::Diffing => "diffing",
        Phase::Planning => "planning",
        Phase::Applying => "applying",
        Phase::Stopping => "stopping",
        Phase::Done => "done",
    }
}

/// The job view of the contract.
pub fn job_view(job: &Job) -> Json {
    let t = rewind_common::graph_json::format_time;
    json!({
        "id": job.id,
        "tenant": job.tenant,
        "kind": job.kind.name(),
        "status": job.status.as_str(),
        "phase": phase_name(job.phase),
        "tasks": {"total": job.tasks.total, "done": job.tasks.done},
        "createdDateTime": t(job.created_at),
        "updatedDateTime": t(job.updated_at),
        "completedDateTime": job.finished_at.map(t),
        "error": job.error,
        "backup": job.backup,
        "snapshot": job.snapshot,
        "counts": job.counts,
        "recovery": recovery_view(job),
    })
}

/// A recovery's part of the job view: its round, wave, snapshots, origin and approval (null
/// for other kinds).
fn recovery_view(job: &Job) -> Json {
    let (
        JobKind::Recovery {
            from_report,
            dry_run,
            undo_of,
            ..
        },
        Some(r),
    ) = (&job.kind, &job.recovery)
    else {
        return Json::Null;
    };
    json!({
        "round": r.round,
        "wave": r.wave,
        "waves": r.waves.len(),
        "twoRounds": r.two_rounds,
        "preRecoverySnapshot": r.snapshots.first(),
        "dryRun": dry_run,
        "reportId": from_report,
        "undoOf": undo_of,
        "approval": approval_json(job),
    })
}

pub async fn list_jobs(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let store = api.engine.state().clone();
    let value = blocking(move || {
        Ok(store
            .list_jobs(&tenant)?
            .iter()
            .map(job_view)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(json!({ "value": value })))
}

pub async fn get_job(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    Ok(axum::Json(job_view(&tenant_job(
        api.engine.state(),
        &tenant,
        &id,
    )?)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
}

/// The `format` of an export's query: `csv` or `jsonl`, else a 400 naming it.
fn export_format(raw: Option<&str>) -> Result<Format, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    match pairs
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl") => Ok(Format::Jsonl),
        other => Err(ApiError::bad_request(format!(
            "format must be csv or jsonl, not {}",
            other.map_or("missing".to_owned(), |v| format!("{v:?}"))
        ))),
    }
}

/// A recovery of the tenant, else 404 (400 for a job of another kind).
fn recovery_of(store: &Store, tenant: &str, id: &str) -> Result<Job, ApiError> {
    let job = tenant_job(store, tenant, id)?;
    if !matches!(job.kind, JobKind::Recovery { .. }) {
        return Err(ApiError::bad_request(format!(
            "job {id} is a {} job, not a recovery",
            job.kind.name()
        )));
    }
    Ok(job)
}

/// The outcomes `actions?outcome=` may name.
pub const OUTCOMES: [&str; 6] = [
    "planned",
    "applied",
    "alreadyInState",
    "skipped",
    "notSent",
    "failed",
];

/// `GET recoveries/{id}/actions`: a page of the recovery's actions in sequence order;
/// `$top` (default 100, at most 999), `$skiptoken` (the last sequence number of the page
/// before) and `outcome` (one of [`OUTCOMES`]).
pub async fn list_actions(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    uri: axum::http::Uri,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(raw.as_deref(), &["$top", "$skiptoken"], &[])?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let outcome = pairs
        .iter()
        .find(|(k, _)| k == "outcome")
        .map(|(_, v)| v.clone());
    if let Some(o) = &outcome {
        if !OUTCOMES.contains(&o.as_str()) {
            return Err(ApiError::bad_request(format!(
                "outcome {o:?} is not one of {}",
                OUTCOMES.join(", ")
            )));
        }
    }
    let store = api.engine.state().clone();
    let job = recovery_of(&store, &tenant, &id)?;
    let top = query.top.unwrap_or(100) as usize;
    let after = seq_token(query.skiptoken.as_deref())?;
    let wanted = outcome.clone();
    let (value, next) = blocking(move || {
        actions_page(&store, &job.id, after, top, |a| {
            wanted.as_deref().is_none_or(|o| a.outcome.name() == o)
        })
    })
    .await?;
    let mut body = json!({"value": value.iter().map(action_json).collect::<Vec<_>>()});
    if let Some(next) = next {
        let extra: Vec<(&str, String)> = outcome.into_iter().map(|o| ("outcome", o)).collect();
        body["@odata.nextLink"] = json!(next_link(uri.path(), top, next, &extra));
    }
    Ok(axum::Json(body))
}

/// `GET recoveries/{id}/calls`: the directory calls the recovery's planned steps make (a dry
/// run's: exactly what it would send), in action order. Paged by action: `$top` actions with a
/// step (default 100, at most 999) and their calls, `$skiptoken` the last action's sequence
/// number, `@odata.nextLink` while more follow. The first page (no `$skiptoken`) also holds the
/// whole plan's `total` calls, `countsByMethod` and `steps`.
pub async fn planned_calls(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    uri: axum::http::Uri,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let query = Query::parse(raw.as_deref(), &["$top", "$skiptoken"], &[])?;
    let store = api.engine.state().clone();
    let job = recovery_of(&store, &tenant, &id)?;
    let graph_base = store.get_tenant(&tenant)?.graph_base_url;
    let top = query.top.unwrap_or(100) as usize;
    let after = seq_token(query.skiptoken.as_deref())?;
    let path = uri.path().to_owned();
    let body = blocking(move || {
        let planned = |a: crate::state::ActionRecord| {
            a.step.map(|step| {
                (
                    a.seq,
                    PlannedStep {
                        action_id: a.action_id,
                        step,
                        note: a.note,
                    },
                )
            })
        };
        let (page, next) = actions_page(&store, &job.id, after, top, |a| a.step.is_some())?;
        let (seqs, steps): (Vec<u32>, Vec<PlannedStep>) =
            page.into_iter().filter_map(planned).unzip();
        let seq_of: std::collections::HashMap<&str, u32> = steps
            .iter()
            .zip(&seqs)
            .map(|(s, q)| (s.action_id.as_str(), *q))
            .collect();
        let calls = rewind_common::connector::planned_calls(&graph_base, &steps);
        let mut value = Vec::with_capacity(calls.len());
        for c in &calls {
            let mut v = serde_json::to_value(c)
                .map_err(|e| ApiError::internal(format!("a planned call does not encode: {e}")))?;
            v["seq"] = json!(seq_of.get(c.action_id.as_str()));
            value.push(v);
        }
        let mut body = json!({ "value": value });
        if after.is_none() {
            // The whole plan's counts, once.
            let mut all = Vec::new();
            store.for_each_action(&job.id, |a| {
                all.extend(planned(a).map(|(_, s)| s));
                Ok(())
            })?;
            let mut by_method: std::collections::BTreeMap<String, u64> = Default::default();
            let calls = rewind_common::connector::planned_calls(&graph_base, &all);
            for c in &calls {
                *by_method.entry(c.method.clone()).or_default() += 1;
            }
            body["total"] = json!(calls.len());
            body["countsByMethod"] = json!(by_method);
            body["steps"] = json!(all.len());
        }
        if let Some(next) = next {
            body["@odata.nextLink"] = json!(next_link(&path, top, next, &[]));
        }
        Ok(body)
    })
    .await?;
    Ok(axum::Json(body))
}

/// `POST recoveries/{id}/approve`: a second administrator lets a recovery waiting for
/// approval run; the job view.
pub async fn approve(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<axum::Json<Json>, ApiError> {
    decide(&api, &caller, &tenant, &id, true).await
}

/// `POST recoveries/{id}/reject`: a recovery waiting for approval is abandoned; the job view.
pub async fn reject(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<axum::Json<Json>, ApiError> {
    decide(&api, &caller, &tenant, &id, false).await
}

async fn decide(
    api: &ApiState,
    caller: &Caller,
    tenant: &str,
    id: &str,
    approve: bool,
) -> Result<axum::Json<Json>, ApiError> {
    tenant_check(api, caller, tenant, Right::Write)?;
    recovery_of(api.engine.state(), tenant, id)?;
    let job = api
        .engine
        .decide_recovery_by(&Actor::token(&caller.0), id, approve)
        .await?;
    Ok(axum::Json(job_view(&job)))
}

/// `POST recoveries/{id}/undo`: a recovery of the same scope back to the job's pre-recovery
/// snapshot; 202 + `Location` of its job view.
pub async fn undo(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Write)?;
    let job = recovery_of(api.engine.state(), &tenant, &id)?;
    let JobKind::Recovery { scope, dry_run, .. } = &job.kind else {
        return Err(ApiError::bad_request(format!("job {id} is not a recovery")));
    };
    if !job.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "recovery {id} is {}: only a finished recovery can be undone",
            job.status
        )));
    }
    if *dry_run {
        return Err(ApiError::conflict(format!(
            "recovery {id} is a dry run: it applied nothing to undo"
        )));
    }
    let Some(pre) = job.recovery.as_ref().and_then(|r| r.snapshots.first()) else {
        return Err(ApiError::conflict(format!(
            "recovery {id} has no pre-recovery snapshot (it ended before capturing one)"
        )));
    };
    let undo = api
        .engine
        .start_recovery_by(
            &Actor::token(&caller.0),
            &tenant,
            pre,
            scope.clone(),
            None,
            false,
            Some(job.id.clone()),
        )
        .await?;
    let location = format!("/tenants/{tenant}/rewind/jobs/{}", undo.id);
    Ok(accepted(&location, &job_view(&undo)))
}

/// Entries read per step of an export.
const EXPORT_PAGE: usize = 500;

/// One record of an export in its format: a JSON line, or its CSV rows.
fn export_record(
    text: &mut String,
    format: Format,
    json: impl FnOnce() -> Json,
    csv: impl FnOnce(&mut String),
) {
    match format {
        Format::Jsonl => {
            text.push_str(&json().to_string());
            text.push('\n');
        }
        Format::Csv => csv(text),
    }
}

/// One step of an export: the text of the next page of entries and the cursor after it.
fn export_page(
    store: &Store,
    job: &str,
    after: Option<EntryCursor>,
    format: Format,
) -> Result<(String, Option<EntryCursor>, bool), ApiError> {
    let (entries, more) = store.report_entries_after(job, after, EXPORT_PAGE)?;
    let mut text = String::new();
    let mut last = after;
    for (cursor, bytes) in entries {
        let entry = decode_entry(&bytes)?;
        export_record(
            &mut text,
            format,
            || change_json(&entry, true),
            |t| csv_rows(&entry, t),
        );
        last = Some(cursor);
    }
    Ok((text, last, more))
}

/// Where an export stream is: the cursor after the last record written.
struct Cursor<K> {
    after: Option<K>,
    done: bool,
}

/// A streamed export: `header` (CSV), then the text of each step of `page` (run on the
/// blocking pool, from the cursor the step before returned) until it says no more follow.
fn streamed<K, F>(format: Format, header: &'static str, page: F) -> Response
where
    K: Copy + Send + 'static,
    F: Fn(Option<K>) -> Result<(String, Option<K>, bool), ApiError> + Clone + Send + Sync + 'static,
{
    let header_line = match format {
        Format::Csv => Some(Ok::<Bytes, std::io::Error>(Bytes::from_static(
            header.as_bytes(),
        ))),
        Format::Jsonl => None,
    };
    let start = Cursor::<K> {
        after: None,
        done: false,
    };
    let pages = futures_util::stream::unfold(start, move |mut c| {
        let page = page.clone();
        async move {
            if c.done {
                return None;
            }
            let after = c.after;
            let step = tokio::task::spawn_blocking(move || page(after)).await;
            match step {
                Ok(Ok((text, last, more))) => {
                    c.after = last;
                    c.done = !more;
                    Some((Ok(Bytes::from(text)), c))
                }
                Ok(Err(e)) => {
                    c.done = true;
                    Some((Err(std::io::Error::other(e.message)), c))
                }
                Err(e) => {
                    c.done = true;
                    Some((Err(std::io::Error::other(e.to_string())), c))
                }
            }
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(header_line), pages);
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One step of an actions export: the text of the next page of actions and the last one's
/// sequence number.
fn actions_export_page(
    store: &Store,
    job: &str,
    after: Option<u32>,
    format: Format,
) -> Result<(String, Option<u32>, bool), ApiError> {
    let (actions, more) = store.actions_after(job, after, EXPORT_PAGE)?;
    let mut text = String::new();
    for a in &actions {
        export_record(
            &mut text,
            format,
            || action_json(a),
            |t| action_csv_row(a, t),
        );
    }
    Ok((text, actions.last().map(|a| a.seq).or(after), more))
}

/// `GET recoveries/{id}/actions/export?format=csv|jsonl`: every action, streamed.
pub async fn export_actions(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let format = export_format(raw.as_deref())?;
    let store = api.engine.state().clone();
    let job = recovery_of(&store, &tenant, &id)?.id;
    Ok(streamed(format, ACTIONS_CSV_HEADER, move |after| {
        actions_export_page(&store, &job, after, format)
    }))
}

pub async fn export(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let format = export_format(raw.as_deref())?;
    let job = tenant_job(api.engine.state(), &tenant, &id)?;
    if !matches!(job.kind, crate::state::JobKind::Report { .. }) {
        return Err(ApiError::bad_request(format!(
            "job {id} is a {} job, not a report",
            job.kind.name()
        )));
    }
    if job.status != JobStatus::Successful {
        return Err(ApiError::bad_request(format!(
            "Job with identifier {id} must have completed successfully prior to enumerating changes."
        )));
    }
    let store = api.engine.state().clone();
    let job = job.id;
    Ok(streamed(format, CSV_HEADER, move |after| {
        export_page(&store, &job, after, format)
    }))
}
