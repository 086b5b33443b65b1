//! Recovery writes: each [`PlannedStep`] becomes one Graph request, sent in `$batch` of up to
//! 20 (`dependsOn` only between steps on the same object), every inner answer read
//! idempotently (already a member, already restored, already deleted, link already gone are
//! success), inner 429/503 retried after their `Retry-After` without re-sending what already
//! succeeded. One [`StepOutcome`] per step, in the order of the steps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};

use super::capture::{collection_path, deleted_path};
use super::error::{status_class, ErrorClass};
use super::http::{parse_retry_after, Method};
use super::{ConnectorError, GraphConnector};
use crate::id::ObjectId;
use crate::model::{LinkKind, ObjectType};
use crate::plan::{PlannedStep, Step};
use crate::value::Value;

/// Requests in one `$batch` (Graph's limit).
pub const MAX_BATCH: usize = 20;

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

/// One inner request of a batch.
#[derive(Clone, Debug)]
struct Inner {
    method: Method,
    /// Relative to the Graph base (`/users/{id}`).
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
                    url,
                    body: None,
                }
            }
            Step::Update {
                id,
                object_type,
                properties,
            } => {
                let body: Map<String, Json> = properties
                    .iter()
                    .map(|(name, value)| (name.clone(), value.to_json()))
                    .collect();
                Inner {
                    method: Method::Patch,
                    url: object_url(*object_type, *id),
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
                    url: format!("{}/members/$ref", object_url(*object_type, *id)),
                    body: Some(json!({
                        "@odata.id": format!("{}/directoryObjects/{target}", self.settings.base())
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
                    url: format!("{}/members/{target}/$ref", object_url(*object_type, *id)),
                    body: None,
                },
                LinkKind::OAuth2PermissionGrants => Inner {
                    method: Method::Delete,
                    url: format!("/oauth2PermissionGrants/{target}"),
                    body: None,
                },
                LinkKind::AppRoleAssignedTo => Inner {
                    method: Method::Delete,
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
                    url: object_url(*object_type, *id),
                    body: None,
                }
            }
        }))
    }

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
                    kind: LinkKind::OAuth2PermissionGrants,
                    ..
                },
                409,
            ) => StepResult::AlreadyInState,
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

    /// Applies the steps in order, in batches of up to 20; one outcome per step, in order.
    pub fn apply_steps(&self, steps: &[PlannedStep]) -> Vec<StepOutcome> {
        let mut outcomes: Vec<Option<StepResult>> = vec![None; steps.len()];
        for chunk_start in (0..steps.len()).step_by(MAX_BATCH) {
            let end = (chunk_start + MAX_BATCH).min(steps.len());
            self.apply_chunk(steps, chunk_start..end, &mut outcomes);
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

    fn apply_chunk(
        &self,
        steps: &[PlannedStep],
        range: std::ops::Range<usize>,
        outcomes: &mut [Option<StepResult>],
    ) {
        let mut pending: Vec<(usize, Inner)> = Vec::new();
        for i in range {
            match self.inner_request(&steps[i].step) {
                Ok(Some(inner)) => pending.push((i, inner)),
                Ok(None) => outcomes[i] = Some(StepResult::AlreadyInState),
                Err(r) => outcomes[i] = Some(r),
            }
        }
        let max = self.settings.max_attempts;
        let mut attempts: BTreeMap<usize, u32> = BTreeMap::new();
        let mut backoff = self.backoff();
        // Rounds are bounded: each one either settles a step or spends one of its attempts
        // (a 424 waits for a dependency that the same round settles).
        let mut rounds = 0u32;
        while !pending.is_empty() {
            rounds += 1;
            let answers = match self.send_batch(steps, &pending) {
                Ok(a) => a,
                Err(e) => {
                    for (i, _) in &pending {
                        outcomes[*i] = Some(StepResult::from_error(&e));
                    }
                    return;
                }
            };
            let mut retry = Vec::new();
            let mut wait: Option<Duration> = None;
            for (i, inner) in pending {
                let Some(answer) = answers.get(&i) else {
                    // No answer for it in the batch: spend an attempt and send it again.
                    let n = attempts.entry(i).or_insert(1);
                    *n += 1;
                    if *n > max {
                        outcomes[i] = Some(StepResult::Failed {
                            permanent: false,
                            status: 0,
                            code: "noAnswer".into(),
                            message: "the batch never answered this request".into(),
                        });
                    } else {
                        retry.push((i, inner));
                    }
                    continue;
                };
                let step = &steps[i].step;
                match answer.status {
                    200..=299 => outcomes[i] = Some(StepResult::Applied),
                    424 if rounds <= max.saturating_mul(2) => retry.push((i, inner)),
                    s if status_class(s) == ErrorClass::Transient => {
                        let n = attempts.entry(i).or_insert(1);
                        *n += 1;
                        if *n > max {
                            outcomes[i] = Some(answer.failed());
                        } else {
                            if let Some(ra) = answer.retry_after {
                                wait = Some(wait.map_or(ra, |w| w.max(ra)));
                            } else if wait.is_none() {
                                wait = Some(Duration::ZERO);
                            }
                            retry.push((i, inner));
                        }
                    }
                    _ => outcomes[i] = Some(self.interpret(step, answer)),
                }
            }
            pending = retry;
            if !pending.is_empty() {
                let fallback = backoff.next().unwrap_or(self.settings.max_backoff);
                let pause = match wait {
                    Some(d) if !d.is_zero() => self.wait_for(Some(d), fallback),
                    Some(_) => fallback,
                    None => Duration::ZERO,
                };
                std::thread::sleep(pause);
            }
        }
    }

    /// Sends one `$batch` of the pending steps (with retries of the whole batch), returning
    /// the answers by step index.
    fn send_batch(
        &self,
        steps: &[PlannedStep],
        pending: &[(usize, Inner)],
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
            // The last earlier step in this batch on the same object (or on the object this
            // step links to) must run first.
            let depends = pending[..pos].iter().rev().find(|(j, _)| {
                let other = steps[*j].step.object_id();
                other == step.object_id() || Some(other) == link_target(step)
            });
            if let Some((j, _)) = depends {
                r.insert("dependsOn".into(), json!([j.to_string()]));
            }
            requests.push(Json::Object(r));
        }
        let body = json!({ "requests": requests });
        let url = self.url("/$batch");
        let answer = self.call_json(Method::Post, &url, Some(&body))?;
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
            let retry_after = headers.and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| match v {
                        Json::String(s) => parse_retry_after(Some(s)),
                        Json::Number(n) => n
                            .as_f64()
                            .and_then(|f| parse_retry_after(Some(&f.to_string()))),
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

fn link_target(step: &Step) -> Option<ObjectId> {
    match step {
        Step::AddLink {
            kind: LinkKind::Members,
            target,
            ..
        } => Some(*target),
        _ => None,
    }
}
