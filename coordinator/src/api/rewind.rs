//! Rewind's per-tenant extensions: the job view (every kind; what the CLI polls) and the
//! report export (CSV or JSON Lines), streamed from the state a page at a time.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value as Json};

use super::auth::{Caller, Right};
use super::change::{change_json, csv_rows, CSV_HEADER};
use super::error::ApiError;
use super::graph::{decode_entry, tenant_check, tenant_job};
use super::{blocking, ApiState};
use crate::state::{EntryCursor, Job, JobStatus, Phase, State as Store};

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

/// Entries read per step of an export.
const EXPORT_PAGE: usize = 500;

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
        match format {
            Format::Jsonl => {
                text.push_str(&change_json(&entry, true).to_string());
                text.push('\n');
            }
            Format::Csv => csv_rows(&entry, &mut text),
        }
        last = Some(cursor);
    }
    Ok((text, last, more))
}

/// Where an export stream is.
struct Cursor {
    store: Store,
    job: String,
    after: Option<EntryCursor>,
    format: Format,
    done: bool,
}

pub async fn export(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    tenant_check(&api, &caller, &tenant, Right::Read)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let format = match pairs
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        Some("csv") => Format::Csv,
        Some("jsonl") => Format::Jsonl,
        other => {
            return Err(ApiError::bad_request(format!(
                "format must be csv or jsonl, not {}",
                other.map_or("missing".to_owned(), |v| format!("{v:?}"))
            )))
        }
    };
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
    let start = Cursor {
        store: api.engine.state().clone(),
        job: job.id,
        after: None,
        format,
        done: false,
    };
    let header_line = match format {
        Format::Csv => Some(Ok::<Bytes, std::io::Error>(Bytes::from_static(
            CSV_HEADER.as_bytes(),
        ))),
        Format::Jsonl => None,
    };
    let pages = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let (store, job, after, format) = (c.store.clone(), c.job.clone(), c.after, c.format);
        let step =
            tokio::task::spawn_blocking(move || export_page(&store, &job, after, format)).await;
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
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(header_line), pages);
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}
