//! `/admin/...` (role `operator`): tenants (add, update, remove, list, credentials, more app
//! registrations) and API tokens (create, list, revoke), the audit log (read). Secrets and
//! tokens are write-only: never written back.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::auth::{Caller, Right};
use super::error::ApiError;
use super::{json_response, ApiState, JsonBody};
use crate::state::{
    Actor, AuditRecord, NewTenant, NewToken, RecoveryPatch, Role, Schedule, TenantRecord,
    TenantScope, TenantSettings, TokenRecord,
};
use rewind_common::graph_json::{format_time, parse_time};

/// A schedule as the API writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
enum ScheduleBody {
    #[serde(rename_all = "camelCase")]
    Daily {
        at_utc: String,
    },
    Interval {
        seconds: u64,
    },
    Off,
}

impl ScheduleBody {
    fn into_schedule(self) -> Result<Schedule, ApiError> {
        Ok(match self {
            ScheduleBody::Daily { at_utc } => {
                let bad = || {
                    ApiError::bad_request(format!(
                        "schedule.atUtc {at_utc:?} is not a time HH:MM (00:00 to 23:59)"
                    ))
                };
                let (h, m) = at_utc.split_once(':').ok_or_else(bad)?;
                let hour: u8 = h.parse().map_err(|_| bad())?;
                let minute: u8 = m.parse().map_err(|_| bad())?;
                let s = Schedule::Daily {
                    at_utc: (hour, minute),
                };
                s.validate().map_err(|_| bad())?;
                s
            }
            ScheduleBody::Interval { seconds } => Schedule::Interval { seconds },
            ScheduleBody::Off => Schedule::Off,
        })
    }
}

fn schedule_json(s: &Schedule) -> Json {
    match s {
        Schedule::Daily { at_utc: (h, m) } => {
            json!({"kind": "daily", "atUtc": format!("{h:02}:{m:02}")})
        }
        Schedule::Interval { seconds } => json!({"kind": "interval", "seconds": seconds}),
        Schedule::Off => json!({"kind": "off"}),
    }
}

/// A tenant as the API writes it (never its secret).
pub fn tenant_json(t: &TenantRecord) -> Json {
    json!({
        "name": t.name,
        "graphBaseUrl": t.graph_base_url,
        "tokenUrl": t.token_url,
        "clientId": t.client_id,
        "schedule": schedule_json(&t.schedule),
        "retention": t.retention,
        "reportRetentionDays": t.report_retention_days,
        "shardBits": t.shard_bits,
        "writeBudget": t.recovery.write_budget,
        "tenantWriteBudget": t.recovery.tenant_write_budget,
        "apps": t.apps.iter().map(|a| json!({"clientId": a.client_id})).collect::<Vec<_>>(),
        "conditionalAccessBudget": t.recovery.conditional_access_budget,
        "approvalThreshold": t.recovery.approval_threshold,
        "historyDays": t.recovery.history_days,
        "createdDateTime": format_time(t.created_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantBody {
    name: String,
    graph_base_url: String,
    token_url: String,
    client_id: String,
    client_secret: String,
    schedule: Option<ScheduleBody>,
    retention: Option<u32>,
    report_retention_days: Option<u32>,
    shard_bits: Option<u8>,
    write_budget: Option<u32>,
    tenant_write_budget: Option<u32>,
    conditional_access_budget: Option<u32>,
    approval_threshold: Option<u64>,
    history_days: Option<u32>,
}

impl TenantBody {
    fn recovery(&self) -> RecoveryPatch {
        RecoveryPatch {
            write_budget: self.write_budget,
            tenant_write_budget: self.tenant_write_budget,
            conditional_access_budget: self.conditional_access_budget,
            approval_threshold: self.approval_threshold,
            history_days: self.history_days,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantPatch {
    graph_base_url: Option<String>,
    token_url: Option<String>,
    schedule: Option<ScheduleBody>,
    retention: Option<u32>,
    report_retention_days: Option<u32>,
    write_budget: Option<u32>,
    tenant_write_budget: Option<u32>,
    conditional_access_budget: Option<u32>,
    approval_threshold: Option<u64>,
    history_days: Option<u32>,
}

impl TenantPatch {
    fn recovery(&self) -> RecoveryPatch {
        RecoveryPatch {
            write_budget: self.write_budget,
            tenant_write_budget: self.tenant_write_budget,
            conditional_access_budget: self.conditional_access_budget,
            approval_threshold: self.approval_threshold,
            history_days: self.history_days,
        }
    }
}

/// `PUT .../credentials` (the primary app) and `POST .../apps` (one more).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsBody {
    client_id: String,
    client_secret: String,
}

fn operator_on(caller: &Caller, tenant: &str) -> Result<(), ApiError> {
    caller.on_tenant(tenant, Right::Operate)
}

pub async fn list_tenants(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<Json>, ApiError> {
    caller.may(Right::Operate)?;
    let value: Vec<Json> = api
        .engine
        .state()
        .list_tenants()?
        .iter()
        .filter(|t| caller.0.tenants.contains(&t.name))
        .map(tenant_json)
        .collect();
    Ok(axum::Json(json!({ "value": value })))
}

pub async fn add_tenant(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<TenantBody>,
) -> Result<Response, ApiError> {
    caller.may(Right::Operate)?;
    if !caller.0.tenants.contains(&body.name) {
        return Err(ApiError::forbidden());
    }
    let recovery = body.recovery();
    let mut new = NewTenant::new(
        body.name,
        body.graph_base_url,
        body.token_url,
        body.client_id,
        body.client_secret,
    );
    if let Some(s) = body.schedule {
        new.schedule = s.into_schedule()?;
    }
    if let Some(r) = body.retention {
        new.retention = r;
    }
    if let Some(d) = body.report_retention_days {
        new.report_retention_days = d;
    }
    if let Some(b) = body.shard_bits {
        new.shard_bits = b;
    }
    new.recovery = recovery.apply(new.recovery);
    let record = api
        .engine
        .state()
        .add_tenant_by(&Actor::token(&caller.0), &api.key, new)
        .await?;
    Ok(json_response(StatusCode::CREATED, &tenant_json(&record)))
}

pub async fn get_tenant(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Json>, ApiError> {
    operator_on(&caller, &tenant)?;
    Ok(axum::Json(tenant_json(
        &api.engine.state().get_tenant(&tenant)?,
    )))
}

pub async fn update_tenant(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<TenantPatch>,
) -> Result<axum::Json<Json>, ApiError> {
    operator_on(&caller, &tenant)?;
    let recovery = body.recovery();
    let settings = TenantSettings {
        graph_base_url: body.graph_base_url,
        token_url: body.token_url,
        schedule: body.schedule.map(ScheduleBody::into_schedule).transpose()?,
        retention: body.retention,
        report_retention_days: body.report_retention_days,
        recovery,
    };
    let record = api
        .engine
        .state()
        .update_tenant_by(&Actor::token(&caller.0), &tenant, settings)
        .await?;
    Ok(axum::Json(tenant_json(&record)))
}

pub async fn set_credentials(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<Response, ApiError> {
    operator_on(&caller, &tenant)?;
    api.engine
        .state()
        .set_credentials_by(
            &Actor::token(&caller.0),
            &api.key,
            &tenant,
            &body.client_id,
            &body.client_secret.into(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Adds an app registration whose writes a recovery spreads over, beside the primary one.
pub async fn add_app(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<Response, ApiError> {
    operator_on(&caller, &tenant)?;
    let record = api
        .engine
        .state()
        .add_app_by(
            &Actor::token(&caller.0),
            &api.key,
            &tenant,
            &body.client_id,
            &body.client_secret.into(),
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &tenant_json(&record)))
}

pub async fn remove_app(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((tenant, client_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    operator_on(&caller, &tenant)?;
    api.engine
        .state()
        .remove_app_by(&Actor::token(&caller.0), &tenant, &client_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn remove_tenant(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    operator_on(&caller, &tenant)?;
    api.engine
        .state()
        .remove_tenant_by(&Actor::token(&caller.0), &tenant)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A token record as the API writes it (never the token, never its hash).
pub fn token_json(t: &TokenRecord) -> Json {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "tenants": t.tenants,
        "createdDateTime": format_time(t.created_at),
        "expiresDateTime": t.expires_at.map(format_time),
        "revokedDateTime": t.revoked_at.map(format_time),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    name: String,
    role: Role,
    tenants: TenantScope,
    expires_date_time: Option<String>,
    expires_in_days: Option<u32>,
}

pub async fn list_tokens(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<Json>, ApiError> {
    caller.may(Right::Operate)?;
    let tokens = api.engine.state().list_tokens()?;
    Ok(axum::Json(
        json!({"value": tokens.iter().map(token_json).collect::<Vec<_>>()}),
    ))
}

pub async fn create_token(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Response, ApiError> {
    caller.may(Right::Operate)?;
    let expires_at = match (body.expires_date_time, body.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give expiresDateTime or expiresInDays, not both",
            ))
        }
        (Some(t), None) => Some(parse_time(&t).ok_or_else(|| {
            ApiError::bad_request(format!("expiresDateTime {t:?} is not an RFC 3339 time"))
        })?),
        (None, Some(days)) => Some(crate::state::unix_now() + i64::from(days) * 86_400),
        (None, None) => None,
    };
    let (record, token) = api
        .engine
        .state()
        .create_token_by(
            &Actor::token(&caller.0),
            NewToken {
                name: body.name,
                role: body.role,
                tenants: body.tenants,
                expires_at,
            },
        )
        .await?;
    let mut out = token_json(&record);
    out["token"] = json!(token);
    Ok(json_response(StatusCode::CREATED, &out))
}

pub async fn revoke_token(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Right::Operate)?;
    api.engine
        .state()
        .revoke_token_by(&Actor::token(&caller.0), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of `GET /admin/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records after this sequence number (default 0: from the first).
    after: Option<u64>,
    /// Records per page (default 100, 1 to 1000).
    top: Option<usize>,
}

/// An audit record as the API writes it: the stored record (what its hash covers) plus its
/// time as RFC 3339.
pub fn audit_json(r: &AuditRecord) -> Json {
    let mut out = serde_json::to_value(r).unwrap_or_else(|_| json!({"seq": r.seq}));
    out["dateTime"] = json!(format_time(r.at));
    out
}

/// `GET /admin/audit`: a page of the audit log, oldest first, for an operator of every tenant
/// (the log spans all tenants).
pub async fn list_audit(
    State(api): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Json>, ApiError> {
    caller.may(Right::Operate)?;
    let query: AuditQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query string (after, top): {e}")))?;
    if caller.0.tenants != TenantScope::All {
        return Err(ApiError::forbidden());
    }
    let top = query.top.unwrap_or(100);
    if !(1..=1000).contains(&top) {
        return Err(ApiError::bad_request(format!(
            "top {top} is out of range: give 1 to 1000"
        )));
    }
    let after = query.after.unwrap_or(0);
    let state = api.engine.state().clone();
    let page = super::blocking(move || Ok(state.audit_page(after, top + 1)?)).await?;
    let more = page.len() > top;
    let page = &page[..page.len().min(top)];
    let mut out = json!({"value": page.iter().map(audit_json).collect::<Vec<_>>()});
    if let (true, Some(last)) = (more, page.last()) {
        out["nextLink"] = json!(format!("/admin/audit?after={}&top={top}", last.seq));
    }
    Ok(axum::Json(out))
}
