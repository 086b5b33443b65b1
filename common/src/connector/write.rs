//! Recovery writes: each [`PlannedStep`] becomes one Graph request, sent in `$batch` of up to
//! 20 (`dependsOn` only between steps on the same object), every inner answer read
//! idempotently (already a member, already restored, already deleted, link already gone are
//! success), inner 429/503 retried after their `Retry-After` without re-sending what already
//! succeeded. One [`StepOutcome`] per step, in the order of the steps.
//!
//! An update whose properties Graph holds in different places is sent as one request per
//! place (each of its own version): the user's own properties by `PATCH /users/{id}` (v1.0),
//! its MFA state by `PATCH /users/{id}/authentication/requirements` (beta), beta-only
//! properties by a beta `PATCH` of the object; a `$batch` goes to one version. Properties no
//! Graph API holds fail permanently.
//!
//! Every `$batch` passes a [`WriteGate`] first (the tenant's write budget and the job's stop
//! signal), retries of a whole batch included, and its answers are fed back to it; a batch
//! holds writes of one [`WriteClass`]. When the gate refuses, nothing more is sent and the
//! unsettled steps are [`StepResult::NotSent`]. [`planned_calls`] lists the requests the
//! steps would make, without sending anything (a recovery's dry run).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use backon::ExponentialBackoff;

use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use super::capture::{collection_path, deleted_path};
use super::error::{status_class, ErrorClass};
use super::gate::{GateClosed, OpenGate, WriteClass, WriteGate};
use super::http::{parse_retry_after, Method};
use super::{ConnectorError, GraphConnector};
use crate::graph_names;
use crate::id::ObjectId;
use crate::model::{LinkKind, ObjectType};
use crate::plan::{PlannedStep, Step};
use crate::properties::{Api, GraphHome, Versions, AUTHENTICATION_METHOD_CONFIGURATIONS};
use crate::value::Value;

/// Requests in one `$batch` (Graph's limit).
pub const MAX_BATCH: usize = 20;

/// How far past the first unsettled step a batch may take steps from.
const WINDOW: usize = 10 * MAX_BATCH;

/// What became of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    /// The directory accepted the write.
    Applied,
    /// The directory was already in the state the step asks for.
    AlreadyInState,
    /// The write could not be done.
    Failed {
        /// True when retrying cannot help (hard-deleted object, refused write).
        permanent: bool,
        /// The HTTP status (0 when there was no answer).
        status: u16,
        code: String,
        message: String,
    },
    /// The step was not carried out because the write gate refused (the job was canceled)
    /// before it was sent, or before it was sent again after a 429 or a missing answer.
    /// Neither a success nor a failure.
    NotSent { reason: String },
}

impl StepResult {
    pub fn is_success(&self) -> bool {
        matches!(self, StepResult::Applied | StepResult::AlreadyInState)
    }

    fn from_error(e: &ConnectorError) -> Self {
        StepResult::Failed {
            permanent: e.class() == ErrorClass::Permanent,
            status: e.status().unwrap_or(0),
            code: e.code().unwrap_or("transport").to_owned(),
            message: e.to_string(),
        }
    }

    fn permanent(status: u16, code: &str, message: impl Into<String>) -> Self {
        StepResult::Failed {
            permanent: true,
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The outcome of one planned step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    pub action_id: String,
    pub result: StepResult,
}

/// One request a step makes, as [`planned_calls`] lists it (a recovery's dry run).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedCall {
    /// The action (step) it carries out; an update split over places makes several calls.
    pub action_id: String,
    /// `GET`, `POST`, `PATCH` or `DELETE`.
    pub method: String,
    /// `v1.0` or `beta`.
    pub version: String,
    /// Relative to the Graph base of `version` (`/users/{id}`).
    pub path: String,
    pub body: Option<Json>,
}

/// Exactly the requests [`GraphConnector::apply_steps`] would send for `steps` against the
/// Graph at `graph_base` (the v1.0 base, as in [`super::GraphSettings::graph_base`]), one per
/// request, in the order of the steps; nothing is sent. A step that needs no request (a
/// singleton's restore) or that is never written yields none.
pub fn planned_calls(graph_base: &str, steps: &[PlannedStep]) -> Vec<PlannedCall> {
    let base = graph_base.trim_end_matches('/');
    let (parts, owners) = split_updates(steps);
    parts
        .iter()
        .zip(owners)
        .filter_map(|(part, owner)| {
            let inner = request_of(base, &part.step).ok().flatten()?;
            Some(PlannedCall {
                action_id: steps.get(owner)?.action_id.clone(),
                method: inner.method.as_str().to_owned(),
                version: inner.api.segment().to_owned(),
                path: inner.url,
                body: inner.body,
            })
        })
        .collect()
}

/// The write limit a step counts against: conditional access policies and named locations
/// have their own.
pub fn write_class(step: &Step) -> WriteClass {
    let t = match step {
        Step::Restore { object_type, .. }
        | Step::Update { object_type, .. }
        | Step::AddLink { object_type, .. }
        | Step::RemoveLink { object_type, .. }
        | Step::SoftDelete { object_type, .. } => *object_type,
    };
    match t {
        ObjectType::ConditionalAccessPolicy | ObjectType::NamedLocation => {
            WriteClass::ConditionalAccess
        }
        _ => WriteClass::Directory,
    }
}

/// Sleeps `pause` in steps of at most a second, asking the gate after each whether writes
/// may still go.
fn pause_under(gate: &dyn WriteGate, pause: Duration) -> Result<(), GateClosed> {
    let mut left = pause;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        std::thread::sleep(step);
        left -= step;
        gate.check()?;
    }
    Ok(())
}

/// Every unsettled step is not sent, for the gate's reason.
fn close_unsettled(outcomes: &mut [Option<StepResult>], closed: &GateClosed) {
    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
        *o = Some(StepResult::NotSent {
            reason: closed.0.clone(),
        });
    }
}

/// One inner request of a batch.
#[derive(Clone, Debug)]
struct Inner {
    method: Method,
    /// The Graph version it goes to (its `$batch` too).
    api: Api,
    /// Relative to the Graph base of `api` (`/users/{id}`).
    url: String,
    body: Option<Json>,
}

/// An inner answer.
struct Answer {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<Duration>,
}

impl Answer {
    fn failed(&self) -> StepResult {
        StepResult::Failed {
            permanent: status_class(self.status) == ErrorClass::Permanent,
            status: self.status,
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }
}

fn singleton_url(t: ObjectType, id: ObjectId) -> String {
    match t {
        ObjectType::Organization => format!("/organization/{id}"),
        _ => collection_path(t).to_owned(),
    }
}

/// The URL of an object while it is active.
fn object_url(t: ObjectType, id: ObjectId) -> String {
    if t.is_singleton() {
        singleton_url(t, id)
    } else {
        format!("{}/{id}", collection_path(t))
    }
}

/// The URL of an object while it is in its recycle bin.
fn deleted_object_url(t: ObjectType, id: ObjectId) -> Option<String> {
    match t {
        ObjectType::ConditionalAccessPolicy | ObjectType::NamedLocation => {
            deleted_path(t).map(|p| format!("{p}/{id}"))
        }
        t if t.soft_deletable() => Some(format!("/directory/deletedItems/{id}")),
        _ => None,
    }
}

fn data_map(data: &Option<Value>) -> BTreeMap<String, Value> {
    match data {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    }
}

fn data_str(data: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl GraphConnector {
    /// The request that carries out `step`, or why there is none.
    fn inner_request(&self, step: &Step) -> Result<Option<Inner>, StepResult> {
        request_of(self.settings.base(), step)
    }
}

/// The request that carries out `step` against the Graph v1.0 base `base` (no trailing
/// slash), or why there is none. The one code path of [`GraphConnector::apply_steps`] and
/// [`planned_calls`].
fn request_of(base: &str, step: &Step) -> Result<Option<Inner>, StepResult> {
    let unsupported = |what: &str| {
        StepResult::permanent(0, "unsupportedStep", format!("{what} is never written"))
    };
    Ok(Some(match step {
        Step::Restore { id, object_type } => {
            if object_type.is_singleton() {
                return Ok(None);
            }
            let url = match object_type {
                ObjectType::ConditionalAccessPolicy | ObjectType::NamedLocation => {
                    deleted_object_url(*object_type, *id)
                        .map(|u| format!("{u}/restore"))
                        .ok_or_else(|| unsupported("a restore of this type"))?
                }
                _ => format!("/directory/deletedItems/{id}/restore"),
            };
            Inner {
                method: Method::Post,
                api: Api::V1,
                url,
                body: None,
            }
        }
        Step::Update {
            id: _,
            object_type: ObjectType::AuthenticationMethodsPolicy,
            properties,
        } => {
            // One method configuration, on its own URL (the planner splits the policy's
            // updates so); the stored configuration carries its `@odata.type`.
            let [(name, value)] = properties.as_slice() else {
                return Err(unsupported(
                    "an update of several authentication method configurations in one step",
                ));
            };
            if !AUTHENTICATION_METHOD_CONFIGURATIONS.contains(&name.as_str()) {
                return Err(unsupported(
                    "an update of this authentication methods policy property",
                ));
            }
            Inner {
                    method: Method::Patch,
                    api: Api::V1,
                    url: format!(
                        "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{name}"
                    ),
                    body: Some(value.to_json()),
                }
        }
        Step::Update {
            id,
            object_type,
            properties,
        } => {
            // [`split_updates`] left only properties of one place in the step.
            let place = properties.first().map_or(Place::Own(Api::V1), |(name, _)| {
                place_of(*object_type, name)
            });
            let (api, url) = match place {
                Place::Own(api) => (api, object_url(*object_type, *id)),
                Place::Requirements => (Api::Beta, super::capture::requirements_path(*id)),
                Place::Nowhere => {
                    return Err(StepResult::permanent(
                        0,
                        "noGraphApi",
                        format!(
                            "no Graph API holds {}: it is never written",
                            properties
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            };
            let body: Map<String, Json> = properties
                .iter()
                .map(|(name, value)| (name.clone(), value.to_json()))
                .collect();
            Inner {
                method: Method::Patch,
                api,
                url,
                body: Some(Json::Object(body)),
            }
        }
        Step::AddLink {
            id,
            object_type,
            kind,
            target,
            data,
        } => match kind {
            LinkKind::Members => Inner {
                method: Method::Post,
                api: Api::V1,
                url: format!("{}/members/$ref", object_url(*object_type, *id)),
                body: Some(json!({
                    "@odata.id": format!("{base}/directoryObjects/{target}")
                })),
            },
            LinkKind::OAuth2PermissionGrants => {
                let d = data_map(data);
                let resource = data_str(&d, "resourceId").ok_or_else(|| {
                    StepResult::permanent(
                        0,
                        "missingLinkData",
                        "the grant's resourceId is not in the backup",
                    )
                })?;
                let mut body = Map::new();
                body.insert("clientId".into(), Json::String(id.to_string()));
                body.insert(
                    "consentType".into(),
                    Json::String(
                        data_str(&d, "consentType").unwrap_or_else(|| "AllPrincipals".into()),
                    ),
                );
                body.insert("resourceId".into(), Json::String(resource));
                body.insert(
                    "scope".into(),
                    Json::String(data_str(&d, "scope").unwrap_or_default()),
                );
                if let Some(p) = data_str(&d, "principalId") {
                    body.insert("principalId".into(), Json::String(p));
                }
                Inner {
                    method: Method::Post,
                    api: Api::V1,
                    url: "/oauth2PermissionGrants".into(),
                    body: Some(Json::Object(body)),
                }
            }
            LinkKind::AppRoleAssignedTo => {
                let d = data_map(data);
                let principal = data_str(&d, "principalId").ok_or_else(|| {
                    StepResult::permanent(
                        0,
                        "missingLinkData",
                        "the assignment's principalId is not in the backup",
                    )
                })?;
                let mut body = Map::new();
                body.insert("principalId".into(), Json::String(principal));
                body.insert("resourceId".into(), Json::String(id.to_string()));
                body.insert(
                    "appRoleId".into(),
                    Json::String(
                        data_str(&d, "appRoleId").unwrap_or_else(|| ObjectId(0).to_string()),
                    ),
                );
                Inner {
                    method: Method::Post,
                    api: Api::V1,
                    url: format!("/servicePrincipals/{id}/appRoleAssignedTo"),
                    body: Some(Json::Object(body)),
                }
            }
            LinkKind::Owners => return Err(unsupported("an owner link")),
        },
        Step::RemoveLink {
            id,
            object_type,
            kind,
            target,
        } => match kind {
            LinkKind::Members => Inner {
                method: Method::Delete,
                api: Api::V1,
                url: format!("{}/members/{target}/$ref", object_url(*object_type, *id)),
                body: None,
            },
            LinkKind::OAuth2PermissionGrants => Inner {
                method: Method::Delete,
                api: Api::V1,
                url: format!("/oauth2PermissionGrants/{target}"),
                body: None,
            },
            LinkKind::AppRoleAssignedTo => Inner {
                method: Method::Delete,
                api: Api::V1,
                url: format!("/servicePrincipals/{id}/appRoleAssignedTo/{target}"),
                body: None,
            },
            LinkKind::Owners => return Err(unsupported("an owner link")),
        },
        Step::SoftDelete { id, object_type } => {
            if object_type.is_singleton() {
                return Err(unsupported("a delete of a singleton"));
            }
            Inner {
                method: Method::Delete,
                api: Api::V1,
                url: object_url(*object_type, *id),
                body: None,
            }
        }
    }))
}

impl GraphConnector {
    /// Whether `url` (relative) answers 200 now: `Ok(false)` on 404.
    fn exists(&self, url: &str) -> Result<bool, ConnectorError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let full = self.url(&format!("{url}{sep}$select=id"));
        match self.call_json(Method::Get, &full, None) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads an error answer the idempotent way: is the directory already in the state the
    /// step asks for?
    fn interpret(&self, step: &Step, answer: &Answer) -> StepResult {
        match self.interpret_inner(step, answer) {
            Ok(r) => r,
            Err(e) => StepResult::from_error(&e),
        }
    }

    fn interpret_inner(&self, step: &Step, a: &Answer) -> Result<StepResult, ConnectorError> {
        let gone = |id: ObjectId, what: &str| {
            StepResult::permanent(
                a.status,
                &a.code,
                format!(
                    "{what} {id} no longer exists (hard-deleted): not recoverable ({})",
                    a.message
                ),
            )
        };
        Ok(match (step, a.status) {
            (Step::Restore { id, object_type }, 404) => {
                if self.exists(&object_url(*object_type, *id))? {
                    StepResult::AlreadyInState
                } else {
                    gone(*id, "object")
                }
            }
            (Step::SoftDelete { id, object_type }, 404) => {
                match deleted_object_url(*object_type, *id) {
                    Some(u) if self.exists(&u)? => StepResult::AlreadyInState,
                    _ => gone(*id, "object"),
                }
            }
            (
                Step::Update {
                    id, object_type, ..
                },
                404,
            ) => match deleted_object_url(*object_type, *id) {
                Some(u) if self.exists(&u)? => StepResult::permanent(
                    a.status,
                    &a.code,
                    format!("object {id} is in the recycle bin: restore it before updating it"),
                ),
                _ => gone(*id, "object"),
            },
            (
                Step::AddLink {
                    id,
                    object_type,
                    kind: LinkKind::Members,
                    target,
                    ..
                },
                400,
            ) if a.code == "Request_BadRequest" => {
                let url = format!(
                    "{}/members?$filter=id%20eq%20'{target}'",
                    object_url(*object_type, *id)
                );
                let found =
                    self.call_json(Method::Get, &self.url(&format!("{url}&$select=id")), None)?;
                if found["value"].as_array().is_some_and(|v| !v.is_empty()) {
                    StepResult::AlreadyInState
                } else {
                    a.failed()
                }
            }
            (
                Step::AddLink {
                    id,
                    kind: LinkKind::OAuth2PermissionGrants,
                    data,
                    ..
                },
                409,
            ) => self.existing_grant(*id, data, a)?,
            (
                Step::AddLink {
                    id,
                    kind: LinkKind::AppRoleAssignedTo,
                    data,
                    ..
                },
                400 | 409,
            ) if a.code == "Request_BadRequest"
                || a.code == "Request_MultipleObjectsWithSameKeyValue" =>
            {
                let d = data_map(data);
                let principal = data_str(&d, "principalId").unwrap_or_default();
                let role = data_str(&d, "appRoleId").unwrap_or_else(|| ObjectId(0).to_string());
                let url = self.url(&format!(
                    "/servicePrincipals/{id}/appRoleAssignedTo?$filter=principalId%20eq%20'{principal}'"
                ));
                let found = self.call_json(Method::Get, &url, None)?;
                let present = found["value"].as_array().is_some_and(|v| {
                    v.iter().any(|x| {
                        x["appRoleId"]
                            .as_str()
                            .is_some_and(|r| r.eq_ignore_ascii_case(&role))
                    })
                });
                if present {
                    StepResult::AlreadyInState
                } else {
                    a.failed()
                }
            }
            (
                Step::RemoveLink {
                    id, object_type, ..
                },
                404,
            ) => {
                if self.exists(&object_url(*object_type, *id))? {
                    StepResult::AlreadyInState
                } else {
                    gone(*id, "link holder")
                }
            }
            _ => a.failed(),
        })
    }

    /// A grant add answered 409: a grant of the same client and resource exists. It is
    /// already in state only if its scope is the one the step adds (as a set of permissions:
    /// Graph keeps a space-separated list, order and spacing carry no meaning). Any other
    /// scope fails permanently, naming both: a widened grant whose removal failed is not
    /// recovered, and it is not silently patched either, because every write a recovery makes
    /// must be one the plan lists (the dry run shows the plan's calls, and a re-planned
    /// recovery sees the grant as it is and plans its removal again).
    fn existing_grant(
        &self,
        client: ObjectId,
        data: &Option<Value>,
        a: &Answer,
    ) -> Result<StepResult, ConnectorError> {
        let d = data_map(data);
        let resource = data_str(&d, "resourceId").unwrap_or_default();
        let consent = data_str(&d, "consentType").unwrap_or_else(|| "AllPrincipals".into());
        let principal = data_str(&d, "principalId");
        let wanted = data_str(&d, "scope").unwrap_or_default();
        let path = "/oauth2PermissionGrants";
        let first = format!(
            "{path}?$filter=clientId%20eq%20'{client}'&$select={}",
            super::capture::GRANT_SELECT
        );
        let mut found: Vec<(String, String)> = Vec::new();
        self.for_each_page(&first, |text| {
            let page: Json =
                serde_json::from_slice(&text).map_err(|e| super::http::json_error(path, e))?;
            let text_of = |v: &Json, k: &str| v[k].as_str().map(str::to_owned);
            for v in page["value"].as_array().into_iter().flatten() {
                let same = |k: &str, want: Option<&str>| {
                    text_of(v, k).as_deref().map(str::to_ascii_lowercase)
                        == want.map(str::to_ascii_lowercase)
                };
                if same("resourceId", Some(&resource))
                    && same("consentType", Some(&consent))
                    && (consent == "AllPrincipals" || same("principalId", principal.as_deref()))
                {
                    found.push((
                        text_of(v, "id").unwrap_or_default(),
                        text_of(v, "scope").unwrap_or_default(),
                    ));
                }
            }
            Ok(())
        })?;
        let Some((grant, scope)) = found.into_iter().next() else {
            // The conflict is gone by now (or was not about this grant): not in state.
            return Ok(a.failed());
        };
        Ok(if same_scope(&scope, &wanted) {
            StepResult::AlreadyInState
        } else {
            StepResult::permanent(
                a.status,
                "grantScopeDiffers",
                format!(
                    "grant {grant} of client {client} to resource {resource} already exists \
                     with scope {scope:?}, not the backup's {wanted:?}: it was not re-added"
                ),
            )
        })
    }

    /// Applies the steps, in batches of up to 20, keeping their order where it matters (see
    /// [`needs`]); one outcome per step, in the order of the steps.
    ///
    /// Steps are taken in order into each batch. A step answered with 429 or 503 waits its
    /// `Retry-After` (or its own backoff) and goes into a later batch, while the steps after it
    /// that do not need it fill the batches meanwhile; a step that succeeded is never sent again.
    pub fn apply_steps(&self, steps: &[PlannedStep]) -> Vec<StepOutcome> {
        self.apply_steps_gated(steps, &OpenGate)
    }

    /// [`Self::apply_steps`] through `gate`: every `$batch` (a retry of a whole batch too) is
    /// admitted by it first, for the [`WriteClass`] of its steps (a batch holds one class),
    /// and what the directory answered is fed back to it (inner and outer 429s alike, with
    /// the longest `Retry-After`). Once the gate refuses, nothing more is sent and every
    /// unsettled step is [`StepResult::NotSent`].
    pub fn apply_steps_gated(
        &self,
        steps: &[PlannedStep],
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        let (parts, owners) = split_updates(steps);
        let mut results: Vec<Vec<StepResult>> = vec![Vec::new(); steps.len()];
        for (outcome, owner) in self.apply_parts(&parts, gate).into_iter().zip(owners) {
            if let Some(r) = results.get_mut(owner) {
                r.push(outcome.result);
            }
        }
        steps
            .iter()
            .zip(results)
            .map(|(s, parts)| StepOutcome {
                action_id: s.action_id.clone(),
                result: merge_results(parts),
            })
            .collect()
    }

    /// [`Self::apply_steps_gated`] of steps each carried out by one request.
    fn apply_parts(&self, steps: &[PlannedStep], gate: &dyn WriteGate) -> Vec<StepOutcome> {
        let n = steps.len();
        let mut outcomes: Vec<Option<StepResult>> = vec![None; n];
        let mut inners: Vec<Option<Inner>> = vec![None; n];
        for (i, planned) in steps.iter().enumerate() {
            match self.inner_request(&planned.step) {
                Ok(Some(inner)) => inners[i] = Some(inner),
                Ok(None) => outcomes[i] = Some(StepResult::AlreadyInState),
                Err(r) => outcomes[i] = Some(r),
            }
        }
        let max = self.settings.max_attempts;
        let mut ready_at: Vec<Option<Instant>> = vec![None; n];
        let mut attempts: HashMap<usize, u32> = HashMap::new();
        let mut backoffs: HashMap<usize, ExponentialBackoff> = HashMap::new();
        let mut failed_dependency: HashMap<usize, u32> = HashMap::new();
        // Consecutive failures of a whole `$batch` (429, 503, no answer), and their backoff.
        let mut batch_failures = 0u32;
        let mut batch_backoff = self.backoff();
        let classes: Vec<WriteClass> = steps.iter().map(|s| write_class(&s.step)).collect();
        let mut first = 0usize;
        loop {
            while first < n && outcomes[first].is_some() {
                first += 1;
            }
            if first == n {
                break;
            }
            let now = Instant::now();
            let window = first..(first + WINDOW).min(n);
            let mut batch: Vec<usize> = Vec::with_capacity(MAX_BATCH);
            // A batch goes to one Graph version and counts against one write limit: those
            // of the first step taken.
            let mut batch_api: Option<Api> = None;
            let mut batch_class: Option<WriteClass> = None;
            let mut wake: Option<Instant> = None;
            for i in window.clone() {
                let limit =
                    batch_class.map_or(MAX_BATCH, |c| gate.max_batch(c).clamp(1, MAX_BATCH));
                if batch.len() >= limit {
                    break;
                }
                if outcomes[i].is_some() {
                    continue;
                }
                let api = inners[i].as_ref().map_or(Api::V1, |r| r.api);
                if batch_api.is_some_and(|b| b != api)
                    || batch_class.is_some_and(|c| c != classes[i])
                {
                    continue;
                }
                if let Some(t) = ready_at[i].filter(|t| *t > now) {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                    continue;
                }
                // Every unsettled earlier step this one needs must go in the same batch.
                let blocked = (first..i).any(|j| {
                    outcomes[j].is_none()
                        && needs(&steps[j].step, &steps[i].step)
                        && !batch.contains(&j)
                });
                if !blocked {
                    batch.push(i);
                    batch_api = Some(api);
                    batch_class = Some(classes[i]);
                }
            }
            if batch.is_empty() {
                let pause = wake.map_or(self.settings.min_backoff, |w| {
                    w.saturating_duration_since(now)
                });
                if let Err(closed) = pause_under(gate, pause) {
                    close_unsettled(&mut outcomes, &closed);
                    break;
                }
                continue;
            }
            let pending: Vec<(usize, &Inner)> = batch
                .iter()
                .filter_map(|i| inners[*i].as_ref().map(|r| (*i, r)))
                .collect();
            let api = batch_api.unwrap_or(Api::V1);
            let class = batch_class.unwrap_or(WriteClass::Directory);
            let sent = u32::try_from(pending.len()).unwrap_or(u32::MAX);
            if let Err(closed) = gate.admit(class, sent) {
                close_unsettled(&mut outcomes, &closed);
                break;
            }
            let answers = match self.send_batch(steps, &pending, api) {
                Ok(a) => {
                    batch_failures = 0;
                    let throttled: Vec<&Answer> = a.values().filter(|a| a.status == 429).collect();
                    let longest = throttled.iter().filter_map(|a| a.retry_after).max();
                    let n_throttled = u32::try_from(throttled.len()).unwrap_or(u32::MAX);
                    gate.feedback(class, sent, n_throttled, longest);
                    a
                }
                Err(e) if e.is_transient() && batch_failures + 1 < max => {
                    // The whole batch was throttled or not answered: it is formed, admitted
                    // and sent again after the wait (nothing of it was carried out).
                    batch_failures += 1;
                    let throttled = if e.status() == Some(429) { sent } else { 0 };
                    gate.feedback(class, sent, throttled, e.retry_after());
                    metrics::counter!(crate::metrics::GRAPH_RETRIES_TOTAL).increment(1);
                    let fallback = batch_backoff.next().unwrap_or(self.settings.max_backoff);
                    if let Err(closed) = pause_under(gate, self.wait_for(e.retry_after(), fallback))
                    {
                        close_unsettled(&mut outcomes, &closed);
                        break;
                    }
                    continue;
                }
                Err(e) if e.is_transient() || matches!(e.status(), Some(401 | 403)) => {
                    let throttled = if e.status() == Some(429) { sent } else { 0 };
                    gate.feedback(class, sent, throttled, e.retry_after());
                    // The batch itself failed after its retries (the service is unreachable,
                    // or refuses the credentials): every step not yet settled fails with it.
                    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                        *o = Some(StepResult::from_error(&e));
                    }
                    break;
                }
                Err(e) => {
                    // This batch was refused as a whole: its steps fail, the others go on.
                    batch_failures = 0;
                    gate.feedback(class, sent, 0, None);
                    for i in &batch {
                        outcomes[*i] = Some(StepResult::from_error(&e));
                    }
                    continue;
                }
            };
            for &i in &batch {
                let step = &steps[i].step;
                let answer = answers.get(&i);
                let status = answer.map_or(0, |a| a.status);
                let mut retry = |retry_after: Option<Duration>| -> bool {
                    let n_tries = attempts.entry(i).or_insert(1);
                    *n_tries += 1;
                    if *n_tries > max {
                        return false;
                    }
                    let fallback = backoffs
                        .entry(i)
                        .or_insert_with(|| self.backoff())
                        .next()
                        .unwrap_or(self.settings.max_backoff);
                    ready_at[i] = Some(Instant::now() + self.wait_for(retry_after, fallback));
                    true
                };
                match (answer, status) {
                    (Some(_), 200..=299) => outcomes[i] = Some(StepResult::Applied),
                    // What it depends on failed in this batch (and spent an attempt of its
                    // own): it goes again with it, or alone once that has settled.
                    (Some(a), 424) => {
                        let n_424 = failed_dependency.entry(i).or_insert(0);
                        *n_424 += 1;
                        if *n_424 > max.saturating_mul(4) {
                            outcomes[i] = Some(a.failed());
                        }
                    }
                    (Some(a), s) if status_class(s) == ErrorClass::Transient => {
                        super::http::count_inner_answer(s);
                        if !retry(a.retry_after) {
                            outcomes[i] = Some(a.failed());
                        }
                    }
                    (Some(a), _) => outcomes[i] = Some(self.interpret(step, a)),
                    (None, _) => {
                        if !retry(None) {
                            outcomes[i] = Some(StepResult::Failed {
                                permanent: false,
                                status: 0,
                                code: "noAnswer".into(),
                                message: "the batch never answered this request".into(),
                            });
                        }
                    }
                }
            }
        }
        steps
            .iter()
            .zip(outcomes)
            .map(|(s, r)| StepOutcome {
                action_id: s.action_id.clone(),
                result: r
                    .unwrap_or_else(|| StepResult::permanent(0, "notRun", "the step was not run")),
            })
            .collect()
    }

    /// Sends one `$batch` of the pending steps, once (a whole-batch retry is the apply loop's,
    /// through the gate), returning the answers by step index.
    fn send_batch(
        &self,
        steps: &[PlannedStep],
        pending: &[(usize, &Inner)],
        api: Api,
    ) -> Result<BTreeMap<usize, Answer>, ConnectorError> {
        let mut requests = Vec::with_capacity(pending.len());
        for (pos, (i, inner)) in pending.iter().enumerate() {
            let step = &steps[*i].step;
            let mut r = Map::new();
            r.insert("id".into(), Json::String(i.to_string()));
            r.insert("method".into(), Json::String(inner.method.as_str().into()));
            r.insert("url".into(), Json::String(inner.url.clone()));
            if let Some(b) = &inner.body {
                r.insert("body".into(), b.clone());
                r.insert(
                    "headers".into(),
                    json!({"Content-Type": "application/json"}),
                );
            }
            // The earlier steps of this batch that this one needs run first.
            let depends: Vec<Json> = pending[..pos]
                .iter()
                .filter(|(j, _)| needs(&steps[*j].step, step))
                .map(|(j, _)| Json::String(j.to_string()))
                .collect();
            if !depends.is_empty() {
                r.insert("dependsOn".into(), Json::Array(depends));
            }
            requests.push(Json::Object(r));
        }
        let body = json!({ "requests": requests });
        let url = self.url_at(api, "/$batch");
        let answer = self.call_json_once(Method::Post, &url, &body)?;
        let mut out = BTreeMap::new();
        let responses =
            answer["responses"]
                .as_array()
                .ok_or_else(|| ConnectorError::Malformed {
                    url: url.clone(),
                    reason: "no responses array".into(),
                })?;
        for r in responses {
            let Some(i) = r["id"].as_str().and_then(|s| s.parse::<usize>().ok()) else {
                continue;
            };
            let status = r["status"].as_u64().unwrap_or(0) as u16;
            let headers = r["headers"].as_object();
            let max = self.settings.max_retry_after;
            let retry_after = headers.and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| match v {
                        Json::String(s) => parse_retry_after(Some(s), max),
                        Json::Number(n) => n
                            .as_f64()
                            .and_then(|f| parse_retry_after(Some(&f.to_string()), max)),
                        _ => None,
                    })
            });
            let error = &r["body"]["error"];
            out.insert(
                i,
                Answer {
                    status,
                    code: error["code"].as_str().unwrap_or("").to_owned(),
                    message: error["message"].as_str().unwrap_or("").to_owned(),
                    retry_after,
                },
            );
        }
        Ok(out)
    }
}

/// Where Graph writes a property of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The object itself, in this version (v1.0 when it has the property there).
    Own(Api),
    /// The user's `authentication/requirements` (beta).
    Requirements,
    /// No Graph API.
    Nowhere,
}

fn place_of(t: ObjectType, name: &str) -> Place {
    match graph_names::home(t, name) {
        Some(GraphHome::Own(Versions {
            v1: false,
            beta: true,
        })) => Place::Own(Api::Beta),
        Some(GraphHome::AuthenticationRequirements) => Place::Requirements,
        Some(GraphHome::Nowhere) => Place::Nowhere,
        // Method configurations are split by the planner and written on their own URL.
        _ => Place::Own(Api::V1),
    }
}

/// Splits every update whose properties Graph holds in more than one place into one step per
/// place (in a fixed order: v1.0, beta, requirements, nowhere); returns the steps and, for
/// each, the index of the step it came from.
fn split_updates(steps: &[PlannedStep]) -> (Vec<PlannedStep>, Vec<usize>) {
    let mut parts = Vec::with_capacity(steps.len());
    let mut owners = Vec::with_capacity(steps.len());
    for (i, planned) in steps.iter().enumerate() {
        let Step::Update {
            id,
            object_type,
            properties,
        } = &planned.step
        else {
            parts.push(planned.clone());
            owners.push(i);
            continue;
        };
        let mut places: Vec<(Place, Vec<(String, Value)>)> = Vec::new();
        for (name, value) in properties {
            let place = place_of(*object_type, name);
            match places.iter_mut().find(|(p, _)| *p == place) {
                Some((_, props)) => props.push((name.clone(), value.clone())),
                None => places.push((place, vec![(name.clone(), value.clone())])),
            }
        }
        if places.len() <= 1 {
            parts.push(planned.clone());
            owners.push(i);
            continue;
        }
        let rank = |p: &Place| match p {
            Place::Own(Api::V1) => 0,
            Place::Own(Api::Beta) => 1,
            Place::Requirements => 2,
            Place::Nowhere => 3,
        };
        places.sort_by_key(|(p, _)| rank(p));
        for (_, props) in places {
            let mut part = planned.clone();
            part.step = Step::Update {
                id: *id,
                object_type: *object_type,
                properties: props,
            };
            parts.push(part);
            owners.push(i);
        }
    }
    (parts, owners)
}

/// The outcome of a step from those of its parts: the first failure, else applied if any part
/// changed something, else already in state.
fn merge_results(parts: Vec<StepResult>) -> StepResult {
    if let Some(failed) = parts.iter().find(|r| !r.is_success()) {
        return failed.clone();
    }
    if parts.is_empty() {
        return StepResult::permanent(0, "notRun", "the step was not run");
    }
    if parts.contains(&StepResult::Applied) {
        StepResult::Applied
    } else {
        StepResult::AlreadyInState
    }
}

/// Whether two grant scopes hold the same permissions (space-separated, in any order).
fn same_scope(a: &str, b: &str) -> bool {
    crate::model::Link::grant_permissions(a) == crate::model::Link::grant_permissions(b)
}

/// The objects a step needs to exist: its own, and the one it links to (a member, a grant's
/// resource, an assignment's principal).
fn touches(step: &Step) -> [Option<ObjectId>; 2] {
    let other = match step {
        Step::AddLink {
            kind: LinkKind::Members,
            target,
            ..
        } => Some(*target),
        Step::AddLink {
            kind: LinkKind::OAuth2PermissionGrants,
            data,
            ..
        } => data_str(&data_map(data), "resourceId").and_then(|s| s.parse().ok()),
        Step::AddLink {
            kind: LinkKind::AppRoleAssignedTo,
            data,
            ..
        } => data_str(&data_map(data), "principalId").and_then(|s| s.parse().ok()),
        _ => None,
    };
    [Some(step.object_id()), other]
}

/// Whether `later` must not run before `earlier` (given in plan order): it needs an object
/// that `earlier` restores (a service principal's restore needs every application restore);
/// it restores an object after `earlier` soft-deletes one (a newcomer moved first); it deletes the object `earlier` writes; both update the same
/// object; or it adds a link of the kind `earlier` removes from the same object (a grant or
/// assignment whose data changed is removed, then re-added: the other way round, the add
/// would find it present and the remove would then take it away). Other steps run in any
/// order (two member adds to one group need no ordering).
pub fn needs(earlier: &Step, later: &Step) -> bool {
    let id = earlier.object_id();
    match (earlier, later) {
        // Graph refuses to restore a service principal whose application is in the recycle
        // bin; the step does not name its application, so every application restore goes first.
        (
            Step::Restore {
                object_type: ObjectType::Application,
                ..
            },
            Step::Restore {
                object_type: ObjectType::ServicePrincipal,
                ..
            },
        ) => true,
        (Step::Restore { .. }, _) => touches(later).contains(&Some(id)),
        // Soft deletes come before restores only when a newcomer holds a value a restored
        // object needs (see `plan::plan_with`): the restore waits for it.
        (Step::SoftDelete { .. }, Step::Restore { .. }) => true,
        (_, Step::SoftDelete { .. }) => later.object_id() == id,
        (Step::Update { .. }, Step::Update { .. }) => later.object_id() == id,
        (Step::RemoveLink { kind: k1, .. }, Step::AddLink { kind: k2, .. }) => {
            later.object_id() == id && k1 == k2
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::GraphSettings;

    fn connector() -> GraphConnector {
        let settings = GraphSettings::new(
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/t/v1.0",
            "t",
            "app",
            "secret",
        );
        match GraphConnector::new(settings) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn request(step: &Step) -> Inner {
        match connector().inner_request(step) {
            Ok(Some(r)) => r,
            other => panic!("{step:?}: {other:?}"),
        }
    }

    #[test]
    fn every_step_becomes_its_request() {
        let (u, g, sp) = (
            ObjectType::User,
            ObjectType::Group,
            ObjectType::ServicePrincipal,
        );
        let restore = request(&Step::Restore {
            id: ObjectId(1),
            object_type: u,
        });
        assert_eq!(restore.method, Method::Post);
        assert_eq!(
            restore.url,
            format!("/directory/deletedItems/{}/restore", ObjectId(1))
        );
        let ca = request(&Step::Restore {
            id: ObjectId(2),
            object_type: ObjectType::NamedLocation,
        });
        assert_eq!(
            ca.url,
            format!(
                "/identity/conditionalAccess/deletedItems/namedLocations/{}/restore",
                ObjectId(2)
            )
        );
        let update = request(&Step::Update {
            id: ObjectId(1),
            object_type: u,
            properties: vec![("city".into(), Value::Null)],
        });
        assert_eq!(update.method, Method::Patch);
        assert_eq!(update.body, Some(json!({"city": null})));
        let authz = request(&Step::Update {
            id: ObjectId(3),
            object_type: ObjectType::AuthorizationPolicy,
            properties: vec![],
        });
        assert_eq!(authz.url, "/policies/authorizationPolicy");
        let add = request(&Step::AddLink {
            id: ObjectId(4),
            object_type: g,
            kind: LinkKind::Members,
            target: ObjectId(5),
            data: None,
        });
        assert_eq!(add.url, format!("/groups/{}/members/$ref", ObjectId(4)));
        assert_eq!(
            add.body,
            Some(
                json!({"@odata.id": format!("http://127.0.0.1:9/t/v1.0/directoryObjects/{}", ObjectId(5))})
            )
        );
        let remove_grant = request(&Step::RemoveLink {
            id: ObjectId(6),
            object_type: sp,
            kind: LinkKind::OAuth2PermissionGrants,
            target: ObjectId(7),
        });
        assert_eq!(remove_grant.method, Method::Delete);
        assert_eq!(
            remove_grant.url,
            format!("/oauth2PermissionGrants/{}", ObjectId(7))
        );
        let delete = request(&Step::SoftDelete {
            id: ObjectId(8),
            object_type: sp,
        });
        assert_eq!(delete.url, format!("/servicePrincipals/{}", ObjectId(8)));
        let owners = connector().inner_request(&Step::AddLink {
            id: ObjectId(4),
            object_type: g,
            kind: LinkKind::Owners,
            target: ObjectId(5),
            data: None,
        });
        assert!(matches!(
            owners,
            Err(StepResult::Failed {
                permanent: true,
                ..
            })
        ));
        let no_data = connector().inner_request(&Step::AddLink {
            id: ObjectId(6),
            object_type: sp,
            kind: LinkKind::AppRoleAssignedTo,
            target: ObjectId(9),
            data: None,
        });
        assert!(matches!(
            no_data,
            Err(StepResult::Failed {
                permanent: true,
                ..
            })
        ));
    }

    /// Every name the connector can put in a `$select` or a write body is a property of the
    /// resource in the Graph version the request goes to (method configurations aside: their
    /// bodies are the configurations as Graph gave them).
    #[test]
    fn every_name_sent_exists_in_its_version() {
        use crate::connector::capture::{link_select, select_list_at, GRANT_SELECT};
        use crate::graph_names::{beta_only, exists, Resource};
        use crate::properties::{link_kinds, properties};
        let check = |resource: Resource, names: &mut dyn Iterator<Item = &str>, api: Api| {
            for name in names.filter(|n| !n.starts_with('@')) {
                assert!(
                    exists(resource, name, api),
                    "{resource:?} {name} in {api:?}"
                );
            }
        };
        for t in ObjectType::ALL {
            for api in Api::ALL {
                check(
                    Resource::Object(t),
                    &mut select_list_at(t, api).split(','),
                    api,
                );
            }
            let beta: Vec<&str> = beta_only(t).collect();
            check(Resource::Object(t), &mut beta.into_iter(), Api::Beta);
            for kind in link_kinds(t) {
                let resource = match kind {
                    LinkKind::AppRoleAssignedTo => Resource::AppRoleAssignment,
                    LinkKind::OAuth2PermissionGrants => Resource::OAuth2PermissionGrant,
                    // A directoryObject: only its id is selected.
                    _ => Resource::Object(ObjectType::User),
                };
                check(resource, &mut link_select(*kind).split(','), Api::V1);
            }
        }
        check(
            Resource::OAuth2PermissionGrant,
            &mut GRANT_SELECT.split(','),
            Api::V1,
        );

        // Bodies: an update of every recoverable property of every type, split as it is sent.
        let c = connector();
        let mut sent = 0;
        for t in ObjectType::ALL {
            let props: Vec<(String, Value)> = properties(t)
                .iter()
                .filter(|d| d.recoverable && d.graph != GraphHome::MethodConfiguration)
                .map(|d| (d.name.to_owned(), Value::from("x")))
                .collect();
            let planned = PlannedStep {
                action_id: "a".into(),
                step: Step::Update {
                    id: ObjectId(1),
                    object_type: t,
                    properties: props,
                },
                note: None,
            };
            for part in split_updates(&[planned]).0 {
                let Ok(Some(inner)) = c.inner_request(&part.step) else {
                    continue;
                };
                let resource = if inner.url.ends_with("/authentication/requirements") {
                    Resource::AuthenticationRequirements
                } else {
                    Resource::Object(t)
                };
                let Some(Json::Object(body)) = &inner.body else {
                    continue;
                };
                sent += body.len();
                check(resource, &mut body.keys().map(String::as_str), inner.api);
            }
        }
        let writable = ObjectType::ALL
            .into_iter()
            .flat_map(|t| properties(t).iter())
            .filter(|d| {
                d.recoverable
                    && !matches!(d.graph, GraphHome::MethodConfiguration | GraphHome::Nowhere)
            })
            .count();
        assert_eq!(sent, writable, "every writable property is sent once");
        let sp = ObjectType::ServicePrincipal;
        let full = |fields: &[&str]| {
            Some(Value::Map(
                fields
                    .iter()
                    .map(|f| ((*f).to_owned(), Value::from(ObjectId(2).to_string())))
                    .collect(),
            ))
        };
        for (kind, resource, data) in [
            (
                LinkKind::OAuth2PermissionGrants,
                Resource::OAuth2PermissionGrant,
                full(&["consentType", "resourceId", "scope", "principalId"]),
            ),
            (
                LinkKind::AppRoleAssignedTo,
                Resource::AppRoleAssignment,
                full(&["principalId", "appRoleId"]),
            ),
        ] {
            let inner = request(&Step::AddLink {
                id: ObjectId(1),
                object_type: sp,
                kind,
                target: ObjectId(3),
                data,
            });
            let Some(Json::Object(body)) = &inner.body else {
                panic!("{kind:?} has no body");
            };
            check(resource, &mut body.keys().map(String::as_str), inner.api);
        }
    }

    #[test]
    fn updates_are_split_by_where_graph_holds_each_property() {
        let user = Step::Update {
            id: ObjectId(1),
            object_type: ObjectType::User,
            properties: vec![
                ("city".into(), Value::Null),
                (
                    crate::properties::PER_USER_MFA_STATE.into(),
                    Value::from("enforced"),
                ),
            ],
        };
        let (parts, owners) = split_updates(&[PlannedStep {
            action_id: "u".into(),
            step: user,
            note: None,
        }]);
        assert_eq!(owners, vec![0, 0]);
        let requests: Vec<Inner> = parts.iter().map(|p| request(&p.step)).collect();
        assert_eq!(
            (requests[0].api, requests[0].url.as_str()),
            (Api::V1, format!("/users/{}", ObjectId(1)).as_str())
        );
        assert_eq!(requests[0].body, Some(json!({"city": null})));
        assert_eq!(
            (requests[1].api, requests[1].url.as_str()),
            (
                Api::Beta,
                format!("/users/{}/authentication/requirements", ObjectId(1)).as_str()
            )
        );
        assert_eq!(
            requests[1].body,
            Some(json!({"perUserMfaState": "enforced"}))
        );
        let publisher = request(&Step::Update {
            id: ObjectId(2),
            object_type: ObjectType::ServicePrincipal,
            properties: vec![("publisherName".into(), Value::from("Contoso"))],
        });
        assert_eq!(publisher.api, Api::Beta);
        let legacy = connector().inner_request(&Step::Update {
            id: ObjectId(3),
            object_type: ObjectType::Organization,
            properties: vec![("mfaEnabled".into(), Value::Bool(true))],
        });
        assert!(matches!(
            legacy,
            Err(StepResult::Failed { permanent: true, ref code, .. }) if code == "noGraphApi"
        ));
        assert_eq!(
            merge_results(vec![StepResult::AlreadyInState, StepResult::Applied]),
            StepResult::Applied
        );
        assert!(!merge_results(vec![
            StepResult::Applied,
            StepResult::permanent(400, "x", "y")
        ])
        .is_success());
    }

    #[test]
    fn conditional_access_writes_have_their_own_class_and_calls_need_no_connector() {
        for (t, class) in [
            (ObjectType::User, WriteClass::Directory),
            (ObjectType::ServicePrincipal, WriteClass::Directory),
            (
                ObjectType::ConditionalAccessPolicy,
                WriteClass::ConditionalAccess,
            ),
            (ObjectType::NamedLocation, WriteClass::ConditionalAccess),
        ] {
            let step = Step::SoftDelete {
                id: ObjectId(1),
                object_type: t,
            };
            assert_eq!(write_class(&step), class, "{t:?}");
        }
        let steps = [
            Step::Restore {
                id: ObjectId(2),
                object_type: ObjectType::Organization,
            },
            Step::AddLink {
                id: ObjectId(3),
                object_type: ObjectType::Group,
                kind: LinkKind::Members,
                target: ObjectId(4),
                data: None,
            },
        ]
        .map(|step| PlannedStep {
            action_id: "a".into(),
            step,
            note: None,
        });
        let calls = planned_calls("http://127.0.0.1:9/t/v1.0/", &steps);
        assert_eq!(calls.len(), 1, "a singleton's restore makes no request");
        assert_eq!(
            calls[0].body,
            request(&steps[1].step).body,
            "the same request as the connector's"
        );
    }

    #[test]
    fn grant_scopes_compare_as_sets() {
        for (a, b, same) in [
            ("User.Read", "User.Read", true),
            ("User.Read Mail.Read", "Mail.Read  User.Read", true),
            ("", " ", true),
            ("User.Read", "User.Read Mail.Read", false),
            ("User.Read", "", false),
            ("user.read", "User.Read", false),
        ] {
            assert_eq!(same_scope(a, b), same, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn only_real_dependencies_order_steps() {
        let u = ObjectType::User;
        let g = ObjectType::Group;
        let restore = Step::Restore {
            id: ObjectId(1),
            object_type: u,
        };
        let update = Step::Update {
            id: ObjectId(1),
            object_type: u,
            properties: vec![],
        };
        let member = |group: u128, target: u128| Step::AddLink {
            id: ObjectId(group),
            object_type: g,
            kind: LinkKind::Members,
            target: ObjectId(target),
            data: None,
        };
        assert!(needs(&restore, &update));
        assert!(
            needs(&restore, &member(9, 1)),
            "a member must exist before it is added"
        );
        assert!(
            !needs(&member(9, 2), &member(9, 3)),
            "two adds to a group are independent"
        );
        assert!(needs(
            &member(9, 2),
            &Step::SoftDelete {
                id: ObjectId(9),
                object_type: g
            }
        ));
        assert!(!needs(
            &update,
            &Step::Update {
                id: ObjectId(2),
                object_type: u,
                properties: vec![]
            }
        ));
        let grant = Step::AddLink {
            id: ObjectId(3),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::OAuth2PermissionGrants,
            target: ObjectId(4),
            data: Some(Value::Map(
                [(
                    "resourceId".to_owned(),
                    Value::from(ObjectId(5).to_string()),
                )]
                .into(),
            )),
        };
        let restore_resource = Step::Restore {
            id: ObjectId(5),
            object_type: ObjectType::ServicePrincipal,
        };
        assert!(
            needs(&restore_resource, &grant),
            "a grant's resource must exist first"
        );
        let remove_grant = Step::RemoveLink {
            id: ObjectId(3),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::OAuth2PermissionGrants,
            target: ObjectId(4),
        };
        assert!(
            needs(&remove_grant, &grant),
            "a changed grant is removed, then re-added"
        );
        assert!(!needs(&member(9, 2), &remove_grant));
        let restore_of = |n, object_type| Step::Restore {
            id: ObjectId(n),
            object_type,
        };
        assert!(
            needs(
                &restore_of(10, ObjectType::Application),
                &restore_of(11, ObjectType::ServicePrincipal)
            ),
            "an application is restored before a service principal"
        );
        assert!(!needs(
            &restore_of(11, ObjectType::ServicePrincipal),
            &restore_of(10, ObjectType::Application)
        ));
        assert!(!needs(
            &restore_of(10, ObjectType::Application),
            &restore_of(12, ObjectType::User)
        ));
        assert!(
            needs(
                &Step::SoftDelete {
                    id: ObjectId(13),
                    object_type: ObjectType::User
                },
                &restore_of(12, ObjectType::User)
            ),
            "a newcomer moved before the restores is deleted first"
        );
    }
}
