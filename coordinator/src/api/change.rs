//! A report entry as Microsoft's change object (`getChanges`, the JSON Lines export) and as
//! CSV rows; a recovery's action as Rewind's action object, as a failed change
//! (`getFailedChanges`) and as CSV rows; `filteringCriteria` to and from a [`Scope`].

use rewind_common::graph_json::odata_type;
use rewind_common::model::{LinkKind, ObjectType};
use rewind_common::plan::Step;
use rewind_common::report::{LinkState, NotRecoverableReason, RecoveryAction, ReportEntry, Scope};
use rewind_common::ObjectId;
use serde_json::{json, Map, Value as Json};

use super::error::ApiError;
use crate::state::actions::step_name;
use crate::state::{ActionRecord, Outcome};

pub const CHANGE_TYPE: &str = "#microsoft.graph.entraRecoveryServices.recoveryChangeObjectBase";
pub const NAMES_FILTER: &str =
    "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter";
pub const IDS_FILTER: &str =
    "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter";

/// Microsoft's `recoveryAction` of a Rewind action (a soft delete again is a soft delete; a
/// change that is not recovered is `unknownFutureValue`, with `notRecoverableReason` saying why).
pub fn action_name(action: RecoveryAction) -> &'static str {
    match action {
        RecoveryAction::Update => "update",
        RecoveryAction::Restore => "restore",
        RecoveryAction::SoftDelete | RecoveryAction::SoftDeleteAgain => "softDelete",
        RecoveryAction::NotRecoverable => "unknownFutureValue",
    }
}

pub fn reason_name(reason: NotRecoverableReason) -> &'static str {
    reason.as_str()
}

/// Whether links of this kind are Microsoft's `oAuth2PermissionGrant` / `appRoleAssignment`
/// entries, shown only to clients that send `Prefer: include-unknown-enum-members`.
pub fn is_newer_member(kind: LinkKind) -> bool {
    matches!(
        kind,
        LinkKind::OAuth2PermissionGrants | LinkKind::AppRoleAssignedTo
    )
}

fn link_type(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::Members | LinkKind::Owners => "#microsoft.graph.directoryObject",
        LinkKind::OAuth2PermissionGrants => "#microsoft.graph.oAuth2PermissionGrant",
        LinkKind::AppRoleAssignedTo => "#microsoft.graph.appRoleAssignment",
    }
}

/// The change object of an entry. `currentState` holds the current values of the changed
/// attributes, `deltaFromCurrent` their backup values and, per link kind, `<kind>@delta`: the
/// links a recovery adds back, and (with `"@removed"`) those it removes. Without `newer`,
/// grants and assignments are left out.
pub fn change_json(entry: &ReportEntry, newer: bool) -> Json {
    let entity = odata_type(entry.object_type);
    let mut current = Map::new();
    let mut delta = Map::new();
    current.insert("@odata.type".into(), json!(entity));
    delta.insert("@odata.type".into(), json!(entity));
    for a in &entry.changed_attributes {
        let value = |v: &Option<rewind_common::value::Value>| {
            v.as_ref().map_or(Json::Null, |v| v.to_json())
        };
        current.insert(a.name.clone(), value(&a.current));
        delta.insert(a.name.clone(), value(&a.backup));
    }
    for link in &entry.changed_links {
        if !newer && is_newer_member(link.kind) {
            continue;
        }
        let mut item = Map::new();
        item.insert("@odata.type".into(), json!(link_type(link.kind)));
        item.insert("id".into(), json!(link.target.to_string()));
        if link.current == LinkState::Present && link.backup == LinkState::Absent {
            item.insert("@removed".into(), json!({"reason": "changed"}));
        } else if let Some(data) = &link.backup_data {
            item.insert("data".into(), data.to_json());
        }
        if let Some(reason) = link.reason {
            item.insert("notRecoverableReason".into(), json!(reason_name(reason)));
        }
        let key = format!("{}@delta", link.kind.as_str());
        if let Json::Array(items) = delta.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
            items.push(Json::Object(item));
        }
    }
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(CHANGE_TYPE));
    out.insert("id".into(), json!(entry.id.to_string()));
    out.insert(
        "entityTypeName".into(),
        json!(entry.object_type.entity_type_name()),
    );
    out.insert("displayName".into(), json!(entry.display_name));
    out.insert("recoveryAction".into(), json!(action_name(entry.action)));
    out.insert("failureMessage".into(), Json::Null);
    out.insert("currentState".into(), Json::Object(current));
    out.insert("deltaFromCurrent".into(), Json::Object(delta));
    if let Some(reason) = entry.reason {
        out.insert("notRecoverableReason".into(), json!(reason_name(reason)));
    }
    Json::Object(out)
}

/// The CSV header of the export.
pub const CSV_HEADER: &str = "id,entityType,displayName,recoveryAction,notRecoverableReason,changeKind,name,currentValue,backupValue\r\n";

/// One CSV field (RFC 4180: quoted when it holds a comma, a quote or a line break).
fn field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// One CSV record (RFC 4180), ended by CRLF.
fn record(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push_str("\r\n");
}

/// The CSV rows of an entry: one per changed attribute or link, one for an entry with neither.
pub fn csv_rows(entry: &ReportEntry, out: &mut String) {
    let id = entry.id.to_string();
    let reason = entry.reason.map_or("", reason_name);
    let mut row = |kind: &str, name: &str, current: &str, backup: &str| {
        record(
            out,
            &[
                id.as_str(),
                entry.object_type.entity_type_name(),
                entry.display_name.as_str(),
                action_name(entry.action),
                reason,
                kind,
                name,
                current,
                backup,
            ],
        );
    };
    let json_text = |v: &Option<rewind_common::value::Value>| {
        v.as_ref()
            .map_or(String::new(), |v| v.to_json().to_string())
    };
    for a in &entry.changed_attributes {
        row(
            "attribute",
            &a.name,
            &json_text(&a.current),
            &json_text(&a.backup),
        );
    }
    for l in &entry.changed_links {
        let target = l.target.to_string();
        let at = |s: LinkState| {
            if s == LinkState::Present {
                target.as_str()
            } else {
                ""
            }
        };
        row("link", l.kind.as_str(), at(l.current), at(l.backup));
    }
    if entry.changed_attributes.is_empty() && entry.changed_links.is_empty() {
        row("object", "", "", "");
    }
}

/// A step as the action object writes it: its kind and its fields.
pub fn step_json(step: &Step) -> Json {
    let mut out = Map::new();
    out.insert("kind".into(), json!(step_name(step)));
    match step {
        Step::Update { properties, .. } => {
            let props: Map<String, Json> = properties
                .iter()
                .map(|(n, v)| (n.clone(), v.to_json()))
                .collect();
            out.insert("properties".into(), Json::Object(props));
        }
        Step::AddLink {
            kind, target, data, ..
        } => {
            out.insert("link".into(), json!(kind.as_str()));
            out.insert("target".into(), json!(target.to_string()));
            if let Some(d) = data {
                out.insert("data".into(), d.to_json());
            }
        }
        Step::RemoveLink { kind, target, .. } => {
            out.insert("link".into(), json!(kind.as_str()));
            out.insert("target".into(), json!(target.to_string()));
        }
        Step::Restore { .. } | Step::SoftDelete { .. } => {}
    }
    Json::Object(out)
}

/// Why an action was skipped or not sent (`None` for the other outcomes).
pub fn outcome_reason(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Skipped { reason } | Outcome::NotSent { reason } => Some(reason),
        _ => None,
    }
}

/// The error of a failed action: `{status, code, message, permanent}` (null otherwise).
fn outcome_error(outcome: &Outcome) -> Json {
    match outcome {
        Outcome::Failed {
            status,
            code,
            message,
            permanent,
        } => json!({"status": status, "code": code, "message": message, "permanent": permanent}),
        _ => Json::Null,
    }
}

fn opt_value(v: &Option<rewind_common::value::Value>) -> Json {
    v.as_ref().map_or(Json::Null, |v| v.to_json())
}

/// A recovery's action as the `actions` route and the JSON Lines export write it.
pub fn action_json(a: &ActionRecord) -> Json {
    json!({
        "seq": a.seq,
        "actionId": a.action_id,
        "round": a.round,
        "wave": a.wave,
        "objectId": a.object_id.to_string(),
        "entityType": a.object_type.entity_type_name(),
        "displayName": a.display_name,
        "step": a.step.as_ref().map_or(Json::Null, step_json),
        "note": a.note,
        "values": a.values.iter().map(|v| json!({
            "name": v.name,
            "currentValue": opt_value(&v.current),
            "backupValue": opt_value(&v.backup),
        })).collect::<Vec<_>>(),
        "outcome": a.outcome.name(),
        "reason": outcome_reason(&a.outcome),
        "error": outcome_error(&a.outcome),
        "dateTime": a.at.map(rewind_common::graph_json::format_time),
    })
}

/// Microsoft's `recoveryAction` of a step (a link is an update of its holder).
fn step_action(step: Option<&Step>) -> &'static str {
    match step {
        Some(Step::Restore { .. }) => "restore",
        Some(Step::SoftDelete { .. }) => "softDelete",
        Some(Step::Update { .. } | Step::AddLink { .. } | Step::RemoveLink { .. }) => "update",
        None => "unknownFutureValue",
    }
}

/// A failed action as Microsoft's change object of `getFailedChanges`: `failureMessage`
/// filled, `currentState` / `deltaFromCurrent` the values at planning and in the backup, and
/// (ext) `errorCode`, `errorStatus`, `actionId`, `seq`.
pub fn failed_change_json(a: &ActionRecord) -> Json {
    let entity = odata_type(a.object_type);
    let mut current = Map::new();
    let mut delta = Map::new();
    current.insert("@odata.type".into(), json!(entity));
    delta.insert("@odata.type".into(), json!(entity));
    for v in &a.values {
        current.insert(v.name.clone(), opt_value(&v.current));
        delta.insert(v.name.clone(), opt_value(&v.backup));
    }
    match &a.step {
        Some(Step::AddLink { kind, target, .. }) => {
            delta.insert(
                format!("{}@delta", kind.as_str()),
                json!([{"@odata.type": link_type(*kind), "id": target.to_string()}]),
            );
        }
        Some(Step::RemoveLink { kind, target, .. }) => {
            delta.insert(
                format!("{}@delta", kind.as_str()),
                json!([{"@odata.type": link_type(*kind), "id": target.to_string(),
                        "@removed": {"reason": "changed"}}]),
            );
        }
        _ => {}
    }
    let (message, code, status) = match &a.outcome {
        Outcome::Failed {
            status,
            code,
            message,
            ..
        } => (json!(message), json!(code), json!(status)),
        _ => (Json::Null, Json::Null, Json::Null),
    };
    json!({
        "@odata.type": CHANGE_TYPE,
        "id": a.object_id.to_string(),
        "entityTypeName": a.object_type.entity_type_name(),
        "displayName": a.display_name,
        "recoveryAction": step_action(a.step.as_ref()),
        "failureMessage": message,
        "currentState": Json::Object(current),
        "deltaFromCurrent": Json::Object(delta),
        "errorCode": code,
        "errorStatus": status,
        "actionId": a.action_id,
        "seq": a.seq,
    })
}

/// The CSV header of a recovery's actions export.
pub const ACTIONS_CSV_HEADER: &str = "seq,actionId,round,wave,objectId,entityType,displayName,step,detail,outcome,reason,errorCode,errorMessage,dateTime\r\n";

/// One action as a CSV row; `detail` is the step's fields as JSON (without its kind).
pub fn action_csv_row(a: &ActionRecord, out: &mut String) {
    let step = a.step.as_ref();
    let detail = step.map_or(String::new(), |s| {
        let mut j = step_json(s);
        if let Json::Object(m) = &mut j {
            m.remove("kind");
        }
        j.to_string()
    });
    let (code, message) = match &a.outcome {
        Outcome::Failed { code, message, .. } => (code.as_str(), message.as_str()),
        _ => ("", ""),
    };
    let at = a.at.map(rewind_common::graph_json::format_time);
    record(
        out,
        &[
            &a.seq.to_string(),
            &a.action_id,
            &a.round.to_string(),
            &a.wave.map_or(String::new(), |w| w.to_string()),
            &a.object_id.to_string(),
            a.object_type.entity_type_name(),
            &a.display_name,
            step.map_or("", step_name),
            &detail,
            a.outcome.name(),
            outcome_reason(&a.outcome).unwrap_or(""),
            code,
            message,
            at.as_deref().unwrap_or(""),
        ],
    );
}

/// The `entityType` names a filter may use.
const ENTITY_TYPES: &str = "user, group, conditionalAccessPolicy, namedLocationPolicy, authenticationMethodPolicy, authorizationPolicy, authenticationStrengthPolicy, application, servicePrincipal, appRoleAssignment, oAuth2PermissionGrant, organization";

fn entity_type(name: &str, field: &str) -> Result<ObjectType, ApiError> {
    Scope::type_from_name(name).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown entity type {name:?} in filteringCriteria.{field} (one of {ENTITY_TYPES})"
        ))
    })
}

fn strings<'a>(value: &'a Json, field: &str) -> Result<Vec<&'a str>, ApiError> {
    let items = value.as_array().ok_or_else(|| {
        ApiError::bad_request(format!(
            "filteringCriteria.{field} must be an array of strings"
        ))
    })?;
    items
        .iter()
        .map(|v| {
            v.as_str().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "filteringCriteria.{field} must be an array of strings, not {v}"
                ))
            })
        })
        .collect()
}

fn only_keys(map: &Map<String, Json>, keys: &[&str], what: &str) -> Result<(), ApiError> {
    match map.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown field {k:?} in {what} (expected {})",
            keys.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The scope of `filteringCriteria` (absent or null: everything).
pub fn scope_from_criteria(criteria: Option<&Json>) -> Result<Scope, ApiError> {
    let Some(criteria) = criteria.filter(|c| !c.is_null()) else {
        return Ok(Scope::All);
    };
    let map = criteria
        .as_object()
        .ok_or_else(|| ApiError::bad_request("filteringCriteria must be an object"))?;
    let kind = map
        .get("@odata.type")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "filteringCriteria needs an @odata.type: {NAMES_FILTER} or {IDS_FILTER}"
            ))
        })?;
    let bad_scope = |e: rewind_common::error::ScopeError| {
        ApiError::bad_request(format!("filteringCriteria: {e}"))
    };
    match kind {
        NAMES_FILTER => {
            only_keys(map, &["@odata.type", "entityTypes"], "filteringCriteria")?;
            let names = strings(
                map.get("entityTypes").unwrap_or(&Json::Null),
                "entityTypes",
            )?;
            let types = names
                .iter()
                .map(|n| entity_type(n, "entityTypes"))
                .collect::<Result<Vec<_>, _>>()?;
            Scope::types(types).map_err(bad_scope)
        }
        IDS_FILTER => {
            only_keys(map, &["@odata.type", "filterValues"], "filteringCriteria")?;
            let values = map
                .get("filterValues")
                .and_then(Json::as_array)
                .ok_or_else(|| {
                    ApiError::bad_request("filteringCriteria.filterValues must be an array")
                })?;
            let mut ids = Vec::new();
            for value in values {
                let v = value.as_object().ok_or_else(|| {
                    ApiError::bad_request(
                        "each of filteringCriteria.filterValues is {\"entityType\", \"entityIds\"}",
                    )
                })?;
                only_keys(v, &["entityType", "entityIds"], "filteringCriteria.filterValues")?;
                let name = v.get("entityType").and_then(Json::as_str).ok_or_else(|| {
                    ApiError::bad_request("filteringCriteria.filterValues[].entityType is missing")
                })?;
                if name != "unknownFutureValue" {
                    entity_type(name, "filterValues[].entityType")?;
                }
                for id in strings(
                    v.get("entityIds").unwrap_or(&Json::Null),
                    "filterValues[].entityIds",
                )? {
                    let parsed: ObjectId = id.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "{id:?} in filteringCriteria.filterValues[].entityIds is not a GUID"
                        ))
                    })?;
                    ids.push(parsed);
                }
            }
            if ids.len() > Scope::MAX_IDS {
                return Err(ApiError::bad_request(format!(
                    "filteringCriteria names {} ids; at most {} in all",
                    ids.len(),
                    Scope::MAX_IDS
                )));
            }
            Scope::ids(ids).map_err(bad_scope)
        }
        other => Err(ApiError::bad_request(format!(
            "unknown filteringCriteria @odata.type {other:?} (expected {NAMES_FILTER} or {IDS_FILTER})"
        ))),
    }
}

/// The `filteringCriteria` of a scope (null for everything). A scope by ids keeps no types:
/// its ids are under `entityType` `unknownFutureValue`.
pub fn criteria_of(scope: &Scope) -> Json {
    match scope {
        Scope::All => Json::Null,
        Scope::Types(types) => json!({
            "@odata.type": NAMES_FILTER,
            "entityTypes": types.iter().map(|t| t.entity_type_name()).collect::<Vec<_>>(),
        }),
        Scope::Ids(ids) => json!({
            "@odata.type": IDS_FILTER,
            "filterValues": [{
                "entityType": "unknownFutureValue",
                "entityIds": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_round_trip_and_bad_ones_are_named() {
        for scope in [
            Scope::All,
            Scope::types([ObjectType::User, ObjectType::NamedLocation]).unwrap(),
            Scope::ids([ObjectId(5), ObjectId(9)]).unwrap(),
        ] {
            let json = criteria_of(&scope);
            assert_eq!(scope_from_criteria(Some(&json)).unwrap(), scope, "{json}");
        }
        let bad = |json: Json, needle: &str| {
            let e = scope_from_criteria(Some(&json)).unwrap_err();
            assert!(e.message.contains(needle), "{}", e.message);
        };
        bad(json!({"@odata.type": "#x.y"}), "#x.y");
        bad(
            json!({"@odata.type": NAMES_FILTER, "entityTypes": ["device"]}),
            "device",
        );
        bad(
            json!({"@odata.type": IDS_FILTER, "filterValues": [{"entityType": "user", "entityIds": ["nope"]}]}),
            "not a GUID",
        );
        let many: Vec<String> = (0..101u128).map(|i| ObjectId(i + 1).to_string()).collect();
        bad(
            json!({"@odata.type": IDS_FILTER, "filterValues": [{"entityType": "user", "entityIds": many}]}),
            "101",
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = String::new();
        field(&mut out, "a \"b\", c\nd");
        assert_eq!(out, "\"a \"\"b\"\", c\nd\"");
    }
}
