//! Microsoft's documented models of the recovery API (`recovery-api.md`) as test-only serde
//! types, closed (`deny_unknown_fields`) where Microsoft's are: the API's JSON must
//! deserialize into them.

// The fields are there to be deserialized (that is the check), not all to be read.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::{Map, Value as Json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection<T> {
    #[serde(rename = "@odata.context")]
    pub context: String,
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(rename = "@odata.context")]
    pub context: Option<String>,
    pub id: String,
    pub created_date_time: String,
    pub total_changed_objects: u64,
}

/// `recoveryStatus`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryStatus {
    Initialized,
    Running,
    Successful,
    Failed,
    Abandoned,
    UnknownFutureValue,
    Calculating,
    LoadingData,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EntityType {
    User,
    Group,
    ConditionalAccessPolicy,
    NamedLocationPolicy,
    AuthenticationMethodPolicy,
    AuthorizationPolicy,
    AuthenticationStrengthPolicy,
    Application,
    ServicePrincipal,
    AppRoleAssignment,
    #[serde(rename = "oAuth2PermissionGrant")]
    OAuth2PermissionGrant,
    Organization,
    UnknownFutureValue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterValue {
    pub entity_type: EntityType,
    pub entity_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "@odata.type", deny_unknown_fields)]
pub enum FilteringCriteria {
    #[serde(
        rename = "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter",
        rename_all = "camelCase"
    )]
    Names { entity_types: Vec<EntityType> },
    #[serde(
        rename = "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter",
        rename_all = "camelCase"
    )]
    NameAndIds { filter_values: Vec<FilterValue> },
}

/// `recoveryPreviewJob` (a `recoveryJobBase`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecoveryPreviewJob {
    #[serde(rename = "@odata.context")]
    pub context: Option<String>,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: String,
    pub status: RecoveryStatus,
    pub target_state_date_time: Option<String>,
    pub job_start_date_time: Option<String>,
    pub job_completion_date_time: Option<String>,
    pub filtering_criteria: Option<FilteringCriteria>,
    pub total_changed_objects_calculated: Option<u64>,
    pub total_changed_links_calculated: Option<u64>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryAction {
    Update,
    Restore,
    SoftDelete,
    UnknownFutureValue,
}

/// A change object (`recoveryChangeObjectBase`); `currentState` and `deltaFromCurrent` are
/// open types (the entity's), and `notRecoverableReason` is Rewind's extension.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangeObject {
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: String,
    pub entity_type_name: EntityType,
    pub display_name: String,
    pub recovery_action: RecoveryAction,
    pub failure_message: Option<String>,
    pub current_state: Map<String, Json>,
    pub delta_from_current: Map<String, Json>,
    pub not_recoverable_reason: Option<String>,
}

/// One item of a `<link kind>@delta` array.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDelta {
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: String,
    #[serde(rename = "@removed")]
    pub removed: Option<Removed>,
    pub data: Option<Json>,
    #[serde(rename = "notRecoverableReason")]
    pub not_recoverable_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    pub reason: String,
}

/// Checks a change object against the models: its own fields, its entity states typed as the
/// entity, and every `@delta` array.
pub fn check_change(json: &Json) -> ChangeObject {
    let change: ChangeObject = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("not a change object ({e}): {json}"));
    assert_eq!(
        change.odata_type,
        "#microsoft.graph.entraRecoveryServices.recoveryChangeObjectBase"
    );
    for state in [&change.current_state, &change.delta_from_current] {
        let t = state["@odata.type"].as_str().unwrap();
        assert!(t.starts_with("#microsoft.graph."), "{json}");
        for (key, value) in state {
            if key.ends_with("@delta") {
                for item in value.as_array().unwrap() {
                    let link: LinkDelta = serde_json::from_value(item.clone())
                        .unwrap_or_else(|e| panic!("not a link delta ({e}): {item}"));
                    assert!(link.odata_type.starts_with("#microsoft.graph."));
                    if let Some(r) = link.removed {
                        assert_eq!(r.reason, "changed");
                    }
                }
            }
        }
    }
    change
}

pub fn check_job(json: &Json) -> RecoveryPreviewJob {
    let job: RecoveryPreviewJob = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("not a recoveryPreviewJob ({e}): {json}"));
    assert_eq!(
        job.odata_type,
        "#microsoft.graph.entraRecoveryServices.recoveryPreviewJob"
    );
    job
}

pub fn check_snapshot(json: &Json) -> Snapshot {
    serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("not a snapshot ({e}): {json}"))
}
