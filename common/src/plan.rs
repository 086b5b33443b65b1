//! The recovery planner (pure): turns report entries into ordered recovery steps, each with a
//! deterministic action id, and nothing for what is not recoverable. Also the reference
//! semantics of every step on in-memory objects ([`apply_to_objects`]), which the tests and the
//! dry-run use.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;
use crate::model::{DirectoryObject, Lifecycle, Link, LinkKind, ObjectType};
use crate::properties;
use crate::report::{Change, ChangedLink, LinkState, RecoveryAction, ReportEntry};
use crate::value::Value;

/// The phases of a recovery, in the order they run: objects come back before they are
/// updated, links are written once both ends exist, and soft deletes come last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Restore = 1,
    Update = 2,
    Links = 3,
    SoftDelete = 4,
}

/// One directory write of a recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Adjacently tagged, the tag first: an internally tagged or flattened enum is read through
// serde's buffered `Content`, which loses rmp-serde's compact forms of ids and types.
#[serde(rename_all = "camelCase", tag = "op", content = "args")]
pub enum Step {
    /// Restore a soft-deleted object from its recycle bin.
    Restore {
        id: ObjectId,
        object_type: ObjectType,
    },
    /// Write properties back (a `Value::Null` clears one).
    Update {
        id: ObjectId,
        object_type: ObjectType,
        properties: Vec<(String, Value)>,
    },
    /// Add a link (a static member, or re-create a grant or assignment from its data).
    AddLink {
        id: ObjectId,
        object_type: ObjectType,
        kind: LinkKind,
        target: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
    /// Remove a link (a static member, a grant or an assignment).
    RemoveLink {
        id: ObjectId,
        object_type: ObjectType,
        kind: LinkKind,
        target: ObjectId,
    },
    /// Soft delete an object (into its recycle bin).
    SoftDelete {
        id: ObjectId,
        object_type: ObjectType,
    },
}

impl Step {
    pub fn phase(&self) -> Phase {
        match self {
            Step::Restore { .. } => Phase::Restore,
            Step::Update { .. } => Phase::Update,
            Step::AddLink { .. } | Step::RemoveLink { .. } => Phase::Links,
            Step::SoftDelete { .. } => Phase::SoftDelete,
        }
    }

    /// The object the step writes.
    pub fn object_id(&self) -> ObjectId {
        match self {
            Step::Restore { id, .. }
            | Step::Update { id, .. }
            | Step::AddLink { id, .. }
            | Step::RemoveLink { id, .. }
            | Step::SoftDelete { id, .. } => *id,
        }
    }

    fn sort_key(&self) -> (Phase, u8, ObjectId, u8, ObjectId) {
        let (phase, id, kind, target) = self.object_key();
        let rank = match self {
            Step::Restore { object_type, .. } => restore_rank(*object_type),
            _ => 0,
        };
        (phase, rank, id, kind, target)
    }

    fn object_key(&self) -> (Phase, ObjectId, u8, ObjectId) {
        match self {
            // Removes before adds: a grant whose data changed is removed, then re-added.
            Step::RemoveLink {
                id, kind, target, ..
            } => (self.phase(), *id, *kind as u8 * 2, *target),
            Step::AddLink {
                id, kind, target, ..
            } => (self.phase(), *id, *kind as u8 * 2 + 1, *target),
            _ => (self.phase(), self.object_id(), 0, ObjectId(0)),
        }
    }
}

/// Where a restore of a type runs among the restores, where Graph needs an order: groups first
/// (a restored member's memberships name them), then applications (Graph refuses to restore a
/// service principal whose application is in the recycle bin), then service principals, users,
/// and named locations before the conditional access policies that name them.
pub fn restore_rank(t: ObjectType) -> u8 {
    match t {
        ObjectType::Group => 0,
        ObjectType::Application => 1,
        ObjectType::ServicePrincipal => 2,
        ObjectType::User => 3,
        ObjectType::NamedLocation => 4,
        ObjectType::ConditionalAccessPolicy => 5,
        ObjectType::AuthenticationMethodsPolicy
        | ObjectType::AuthorizationPolicy
        | ObjectType::Organization => 6,
    }
}

/// Whose steps these are: the tenant and the recovery job. Action ids are derived from it and
/// the step, so identical steps of two tenants (singletons have the same id everywhere) or of
/// two jobs never share an id under message-id dedupe or outcome upserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanScope<'a> {
    pub tenant: &'a str,
    pub job: &'a str,
}

/// A step with its deterministic id: the same (tenant, job, step) always gets the same id, so
/// a redelivered or re-planned step of a job is recognised and applied once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub action_id: String,
    pub step: Step,
    /// Why the step is where it is, when the plan moved it (a newcomer soft-deleted before the
    /// restores because it holds a value a restored object needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A property Graph keeps unique among directory objects: a restore of an object whose value
/// another active object now holds is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UniqueKey {
    UserPrincipalName,
    MailNickname,
    IdentifierUri,
}

impl UniqueKey {
    /// The Graph property that holds it.
    pub fn property(self) -> &'static str {
        match self {
            UniqueKey::UserPrincipalName => "userPrincipalName",
            UniqueKey::MailNickname => "mailNickname",
            UniqueKey::IdentifierUri => "identifierUris",
        }
    }
}

/// The unique values an object holds (compared without case, as Graph does): a user's
/// `userPrincipalName` and `mailNickname`, a group's `mailNickname`, an application's
/// identifier URIs.
pub fn unique_values(object: &DirectoryObject) -> Vec<(UniqueKey, String)> {
    let keys: &[UniqueKey] = match object.object_type {
        ObjectType::User => &[UniqueKey::UserPrincipalName, UniqueKey::MailNickname],
        ObjectType::Group => &[UniqueKey::MailNickname],
        ObjectType::Application => &[UniqueKey::IdentifierUri],
        _ => &[],
    };
    let mut out = Vec::new();
    for key in keys {
        match object.get(key.property()) {
            Some(Value::String(v)) if !v.is_empty() => out.push((*key, v.as_str().to_lowercase())),
            Some(Value::List(vs)) => out.extend(
                vs.iter()
                    .filter_map(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*key, v.to_lowercase())),
            ),
            _ => {}
        }
    }
    out
}

/// The planner's view of the current state beyond the report: the unique values of the
/// current objects (active and in the recycle bin), by id. Empty, the planner sees no conflict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrentValues {
    by_object: BTreeMap<ObjectId, Vec<(UniqueKey, String)>>,
}

impl CurrentValues {
    /// The unique values of `objects` (the current snapshot's).
    pub fn of_objects<'a>(objects: impl IntoIterator<Item = &'a DirectoryObject>) -> Self {
        let by_object = objects
            .into_iter()
            .map(|o| (o.id, unique_values(o)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Self { by_object }
    }

    /// Values already computed, by object (a diff task's [`crate::wire::RangeValues`]).
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (ObjectId, Vec<(UniqueKey, String)>)>,
    ) -> Self {
        Self {
            by_object: pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        }
    }

    fn of(&self, id: ObjectId) -> &[(UniqueKey, String)] {
        self.by_object.get(&id).map_or(&[], Vec::as_slice)
    }
}

/// The newcomers (created after the backup, to be soft-deleted) that hold a unique value an
/// object restored by the same plan needs, with the note that says so.
fn conflicting_newcomers(
    entries: &[ReportEntry],
    current: &CurrentValues,
) -> BTreeMap<ObjectId, String> {
    let newcomers: BTreeMap<(UniqueKey, &str), ObjectId> = entries
        .iter()
        .filter(|e| e.change == Change::Created && e.action == RecoveryAction::SoftDelete)
        .flat_map(|e| {
            current
                .of(e.id)
                .iter()
                .map(|(k, v)| ((*k, v.as_str()), e.id))
        })
        .collect();
    let mut out: BTreeMap<ObjectId, String> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.action == RecoveryAction::Restore)
    {
        for (key, value) in current.of(e.id) {
            if let Some(newcomer) = newcomers.get(&(*key, value.as_str())) {
                if *newcomer != e.id && !out.contains_key(newcomer) {
                    out.insert(
                        *newcomer,
                        format!(
                            "soft-deleted before the restores: it holds {} {value:?}, which \
                             restoring {} {} needs",
                            key.property(),
                            e.object_type.as_str(),
                            e.id
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Plans the recovery of `entries`: recoverable entries only, in phase order; restores by type
/// where Graph needs it ([`restore_rank`]), then by object id; everything else by object id (and
/// within an object's links, removes before adds). Links come after every restore, so a group
/// is back before any link that names it.
///
/// Links are written only where both ends stay put. A link whose far end the report shows as
/// hard-deleted is lost (it cannot exist again), and one whose far end is restored or soft
/// deleted by the same recovery follows that object (Graph hides the links of an object in the
/// recycle bin and brings them back with it): no link step is planned for either, even if an
/// entry lists it.
pub fn plan(scope: PlanScope<'_>, entries: &[ReportEntry]) -> Vec<PlannedStep> {
    plan_with(scope, entries, &CurrentValues::default())
}

/// [`plan`] that also knows the current objects' unique values: a newcomer (created after the
/// backup) holding a `userPrincipalName`, `mailNickname` or identifier URI that an object the
/// plan restores needs is soft-deleted (its link removals, then its delete) before every
/// restore, with a note saying why; Graph would refuse the restore otherwise.
pub fn plan_with(
    scope: PlanScope<'_>,
    entries: &[ReportEntry],
    current: &CurrentValues,
) -> Vec<PlannedStep> {
    let early = conflicting_newcomers(entries, current);
    let gone: BTreeSet<ObjectId> = entries
        .iter()
        .filter(|e| e.change == Change::HardDeleted)
        .map(|e| e.id)
        .collect();
    let moving: BTreeSet<ObjectId> = entries
        .iter()
        .filter(|e| matches!(e.change, Change::SoftDeleted | Change::Restored))
        .map(|e| e.id)
        .collect();
    let follows_its_end = |l: &ChangedLink| {
        let data = l.current_data.as_ref().or(l.backup_data.as_ref());
        l.kind
            .far_end(l.target, data)
            .is_some_and(|id| moving.contains(&id) || gone.contains(&id))
    };
    let mut steps = Vec::new();
    for e in entries.iter().filter(|e| e.is_recoverable()) {
        let (id, object_type) = (e.id, e.object_type);
        match e.action {
            RecoveryAction::Restore | RecoveryAction::Update => {
                if e.action == RecoveryAction::Restore {
                    steps.push(Step::Restore { id, object_type });
                }
                let props: Vec<(String, Value)> = e
                    .changed_attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.backup.clone().unwrap_or(Value::Null)))
                    .collect();
                if object_type == ObjectType::AuthenticationMethodsPolicy {
                    // Graph patches each method configuration on its own URL: one step each.
                    for p in props {
                        steps.push(Step::Update {
                            id,
                            object_type,
                            properties: vec![p],
                        });
                    }
                } else if !props.is_empty() {
                    steps.push(Step::Update {
                        id,
                        object_type,
                        properties: props,
                    });
                }
                for l in e
                    .changed_links
                    .iter()
                    .filter(|l| l.recoverable && !follows_its_end(l))
                {
                    if l.current == LinkState::Present {
                        steps.push(Step::RemoveLink {
                            id,
                            object_type,
                            kind: l.kind,
                            target: l.target,
                        });
                    }
                    if l.backup == LinkState::Present {
                        steps.push(Step::AddLink {
                            id,
                            object_type,
                            kind: l.kind,
                            target: l.target,
                            data: l.backup_data.clone(),
                        });
                    }
                }
            }
            RecoveryAction::SoftDelete | RecoveryAction::SoftDeleteAgain => {
                for l in e.changed_links.iter().filter(|l| l.recoverable) {
                    if l.current == LinkState::Present {
                        steps.push(Step::RemoveLink {
                            id,
                            object_type,
                            kind: l.kind,
                            target: l.target,
                        });
                    }
                }
                steps.push(Step::SoftDelete { id, object_type });
            }
            RecoveryAction::NotRecoverable => {}
        }
    }
    // The early newcomers' removals and deletes go first (0), all else after (1).
    let moved = |s: &Step| {
        matches!(s, Step::SoftDelete { .. } | Step::RemoveLink { .. })
            && early.contains_key(&s.object_id())
    };
    steps.sort_by_key(|s| (u8::from(!moved(s)), s.sort_key()));
    steps
        .into_iter()
        .map(|step| PlannedStep {
            action_id: action_id(scope, &step),
            note: early
                .get(&step.object_id())
                .filter(|_| moved(&step))
                .cloned(),
            step,
        })
        .collect()
}

/// The deterministic id of a step of a job: blake3 of the tenant, the job (each
/// length-prefixed, so no two pairs run together into the same bytes) and the step's canonical
/// encoding, 128 bits in hex.
pub fn action_id(scope: PlanScope<'_>, step: &Step) -> String {
    #[allow(clippy::expect_used)]
    let bytes = rmp_serde::to_vec(step).expect("encoding a step into memory");
    let mut h = blake3::Hasher::new();
    for part in [scope.tenant.as_bytes(), scope.job.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&bytes);
    h.finalize().to_hex()[..32].to_owned()
}

/// Why a step could not be applied to the in-memory objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("object {0} does not exist")]
    NotFound(ObjectId),
    #[error("object {0} has no property {1:?}")]
    UnknownProperty(ObjectId, String),
}

/// Applies steps to objects held in memory, with the directory's semantics and idempotently
/// (restoring an active object, adding an existing link or removing a missing one succeed).
/// `now` is the soft-delete time.
pub fn apply_to_objects(
    objects: &mut BTreeMap<ObjectId, DirectoryObject>,
    steps: &[PlannedStep],
    now: i64,
) -> Result<(), ApplyError> {
    for planned in steps {
        let id = planned.step.object_id();
        let object = objects.get_mut(&id).ok_or(ApplyError::NotFound(id))?;
        match &planned.step {
            Step::Restore { .. } => object.lifecycle = Lifecycle::Active,
            Step::Update { properties, .. } => {
                for (name, value) in properties {
                    if !object.set(name, value.clone()) {
                        return Err(ApplyError::UnknownProperty(id, name.clone()));
                    }
                }
            }
            Step::AddLink {
                kind, target, data, ..
            } => object.add_link(
                *kind,
                Link {
                    target: *target,
                    data: data.clone(),
                },
            ),
            Step::RemoveLink { kind, target, .. } => {
                object.remove_link(*kind, *target);
            }
            Step::SoftDelete { .. } => {
                if object.lifecycle.is_active() {
                    object.lifecycle = Lifecycle::SoftDeleted { deleted_at: now };
                }
            }
        }
    }
    Ok(())
}

/// The part of an object a recovery must make equal to the backup: its recoverable properties
/// and its recoverable (static) links.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoverableView {
    pub attributes: Vec<(u8, Value)>,
    pub links: Vec<(LinkKind, Vec<Link>)>,
}

/// The recoverable view of an object.
pub fn recoverable_view(object: &DirectoryObject) -> RecoverableView {
    let t = object.object_type;
    let attrs = object
        .attributes
        .iter()
        .filter(|(pid, _)| properties::property(t, *pid).is_some_and(|d| d.recoverable))
        .cloned()
        .collect();
    let links = object
        .links
        .iter()
        .filter(|s| properties::link_recoverable(t, s.kind))
        .filter(|s| !(s.kind == LinkKind::Members && object.dynamic_membership))
        .map(|s| (s.kind, s.links.clone()))
        .collect();
    RecoverableView {
        attributes: attrs,
        links,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::ChangedAttribute;

    const SCOPE: PlanScope<'static> = PlanScope {
        tenant: "contoso",
        job: "job-1",
    };

    #[test]
    fn action_ids_are_per_tenant_and_job() {
        let singleton = Step::Update {
            id: ObjectId::for_singleton("authorizationPolicy"),
            object_type: ObjectType::AuthorizationPolicy,
            properties: vec![("allowInvitesFrom".into(), Value::from("everyone"))],
        };
        let user = Step::Restore {
            id: ObjectId(7),
            object_type: ObjectType::User,
        };
        let scope = |tenant, job| PlanScope { tenant, job };
        // (tenant, job) pairs that differ, including two that concatenate to the same text.
        let scopes = [
            scope("contoso", "job-1"),
            scope("fabrikam", "job-1"),
            scope("contoso", "job-2"),
            scope("contosoj", "ob-1"),
        ];
        for step in [&singleton, &user] {
            let ids: BTreeSet<String> = scopes.iter().map(|s| action_id(*s, step)).collect();
            assert_eq!(ids.len(), scopes.len(), "{step:?}: {ids:?}");
            for s in scopes {
                assert_eq!(action_id(s, step), action_id(s, &step.clone()));
            }
        }
        assert_ne!(action_id(SCOPE, &singleton), action_id(SCOPE, &user));
        // plan() uses the same ids.
        let entry = ReportEntry {
            id: ObjectId(7),
            object_type: ObjectType::User,
            display_name: "u".into(),
            change: Change::SoftDeleted,
            action: RecoveryAction::Restore,
            reason: None,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        };
        let a = plan(scope("contoso", "job-1"), std::slice::from_ref(&entry));
        let b = plan(scope("fabrikam", "job-1"), std::slice::from_ref(&entry));
        assert_eq!(a[0].action_id, action_id(scope("contoso", "job-1"), &user));
        assert_ne!(a[0].action_id, b[0].action_id);
        assert_eq!(a, plan(scope("contoso", "job-1"), &[entry]));
    }

    #[test]
    fn newcomers_holding_a_restored_value_are_deleted_first() {
        let entry = |n: u128, object_type, change, action| ReportEntry {
            id: ObjectId(n),
            object_type,
            display_name: format!("o{n}"),
            change,
            action,
            reason: None,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        };
        let object = |n: u128, t: ObjectType, name: &str, value: Value| {
            let mut o = DirectoryObject::new(ObjectId(n), t);
            assert!(o.set(name, value));
            o
        };
        let (u, g, app) = (ObjectType::User, ObjectType::Group, ObjectType::Application);
        let created = |n, t| entry(n, t, Change::Created, RecoveryAction::SoftDelete);
        let restored = |n, t| entry(n, t, Change::SoftDeleted, RecoveryAction::Restore);
        let mut group_newcomer = created(12, g);
        group_newcomer.changed_links = vec![ChangedLink {
            kind: LinkKind::Members,
            target: ObjectId(99),
            current: LinkState::Present,
            backup: LinkState::Absent,
            recoverable: true,
            reason: None,
            current_data: None,
            backup_data: None,
        }];
        let entries = vec![
            restored(1, u),
            restored(2, g),
            restored(3, app),
            restored(4, u),
            created(11, u),
            group_newcomer,
            created(13, app),
            created(14, u),
        ];
        let uris = |v: &[&str]| Value::List(v.iter().map(|s| Value::from(*s)).collect());
        let current = CurrentValues::of_objects(&[
            object(
                1,
                u,
                "userPrincipalName",
                Value::from("ann@contoso.example"),
            ),
            object(
                11,
                u,
                "userPrincipalName",
                Value::from("Ann@Contoso.example"),
            ),
            object(2, g, "mailNickname", Value::from("sales")),
            object(12, g, "mailNickname", Value::from("SALES")),
            object(3, app, "identifierUris", uris(&["api://a", "api://b"])),
            object(13, app, "identifierUris", uris(&["api://c", "API://b"])),
            // No conflict: another value, and a user without one.
            object(
                4,
                u,
                "userPrincipalName",
                Value::from("bob@contoso.example"),
            ),
            object(
                14,
                u,
                "userPrincipalName",
                Value::from("carl@contoso.example"),
            ),
        ]);
        let steps = plan_with(SCOPE, &entries, &current);
        let order: Vec<(&str, u128, bool)> = steps
            .iter()
            .map(|s| {
                let name = match s.step {
                    Step::Restore { .. } => "restore",
                    Step::SoftDelete { .. } => "delete",
                    Step::RemoveLink { .. } => "remove",
                    _ => "other",
                };
                (name, s.step.object_id().0, s.note.is_some())
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("remove", 12, true),
                ("delete", 11, true),
                ("delete", 12, true),
                ("delete", 13, true),
                ("restore", 2, false),
                ("restore", 3, false),
                ("restore", 1, false),
                ("restore", 4, false),
                ("delete", 14, false),
            ]
        );
        let notes: Vec<&str> = steps.iter().filter_map(|s| s.note.as_deref()).collect();
        assert!(notes[0].contains("mailNickname") && notes[0].contains("group"));
        assert!(notes[1].contains("userPrincipalName") && notes[1].contains("user"));
        assert!(notes[3].contains("identifierUris") && notes[3].contains("api://b"));
        // Without the current values nothing moves.
        let plain = plan(SCOPE, &entries);
        assert_eq!(plain.last().map(|s| s.step.object_id()), Some(ObjectId(14)));
        assert!(plain.iter().all(|s| s.note.is_none()));
        assert_eq!(plain[0].step.object_id(), ObjectId(2));
    }

    #[test]
    fn restores_run_by_type_where_graph_needs_it() {
        let entry = |n: u128, object_type, change, action| ReportEntry {
            id: ObjectId(n),
            object_type,
            display_name: format!("o{n}"),
            change,
            action,
            reason: None,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        };
        let restore = |n, t| entry(n, t, Change::SoftDeleted, RecoveryAction::Restore);
        // Ids chosen against the type order: by id alone the service principal, the user and
        // the policy would come first.
        let member = ChangedLink {
            kind: LinkKind::Members,
            target: ObjectId(9),
            current: LinkState::Absent,
            backup: LinkState::Present,
            recoverable: true,
            reason: None,
            current_data: None,
            backup_data: None,
        };
        let mut linked = entry(
            8,
            ObjectType::Group,
            Change::Modified,
            RecoveryAction::Update,
        );
        linked.changed_links = vec![member];
        let entries = vec![
            restore(1, ObjectType::ServicePrincipal),
            restore(2, ObjectType::User),
            restore(3, ObjectType::ConditionalAccessPolicy),
            restore(4, ObjectType::NamedLocation),
            restore(5, ObjectType::Application),
            restore(6, ObjectType::Group),
            linked,
        ];
        let order: Vec<(u128, &str)> = plan(SCOPE, &entries)
            .iter()
            .map(|s| {
                let name = match s.step {
                    Step::Restore { .. } => "restore",
                    Step::AddLink { .. } => "add",
                    _ => "other",
                };
                (s.step.object_id().0, name)
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (6, "restore"),
                (5, "restore"),
                (1, "restore"),
                (2, "restore"),
                (4, "restore"),
                (3, "restore"),
                (8, "add"),
            ]
        );
        // Two restores of one type keep id order.
        let two = plan(
            SCOPE,
            &[
                restore(2, ObjectType::Application),
                restore(1, ObjectType::Application),
            ],
        );
        assert_eq!(two[0].step.object_id(), ObjectId(1));
    }

    #[test]
    fn each_method_configuration_is_its_own_update() {
        let config = |state: &str| Value::Map([("state".to_owned(), Value::from(state))].into());
        let changed = |name: &str| ChangedAttribute {
            name: name.into(),
            current: Some(config("disabled")),
            backup: Some(config("enabled")),
        };
        let entry = ReportEntry {
            id: ObjectId::for_singleton("authenticationMethodsPolicy"),
            object_type: ObjectType::AuthenticationMethodsPolicy,
            display_name: "Authentication Methods Policy".into(),
            change: Change::Modified,
            action: RecoveryAction::Update,
            reason: None,
            changed_attributes: vec![changed("fido2"), changed("sms")],
            changed_links: Vec::new(),
        };
        let steps = plan(SCOPE, std::slice::from_ref(&entry));
        let names: Vec<&str> = steps
            .iter()
            .map(|s| match &s.step {
                Step::Update { properties, .. } => {
                    assert_eq!(properties.len(), 1);
                    properties[0].0.as_str()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(names, vec!["fido2", "sms"]);
        assert_ne!(steps[0].action_id, steps[1].action_id);
        // Any other type keeps one update for all its properties.
        let user = ReportEntry {
            object_type: ObjectType::User,
            changed_attributes: vec![
                ChangedAttribute {
                    name: "city".into(),
                    current: Some("Oslo".into()),
                    backup: Some("Bergen".into()),
                },
                ChangedAttribute {
                    name: "department".into(),
                    current: None,
                    backup: Some("Sales".into()),
                },
            ],
            ..entry
        };
        assert_eq!(plan(SCOPE, &[user]).len(), 1);
    }
}
