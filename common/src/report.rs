//! Difference-report entries and scopes: what changed since a backup and what a recovery
//! would do about it, in the words of the spec.

use serde::{Deserialize, Serialize};

use crate::error::ScopeError;
use crate::id::ObjectId;
use crate::model::{LinkKind, ObjectType};
use crate::value::Value;

/// Which objects a report or a recovery covers (fixed at creation). A deserialized scope goes
/// through the checks of [`Scope::ids`] and [`Scope::types`] too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    tag = "kind",
    content = "values",
    try_from = "RawScope"
)]
pub enum Scope {
    All,
    /// Objects of these types.
    Types(Vec<ObjectType>),
    /// Up to [`Scope::MAX_IDS`] objects by id (sorted, unique).
    Ids(Vec<ObjectId>),
}

/// A [`Scope`] as written, before its checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "values")]
enum RawScope {
    All,
    Types(Vec<ObjectType>),
    Ids(Vec<ObjectId>),
}

impl TryFrom<RawScope> for Scope {
    type Error = ScopeError;

    fn try_from(raw: RawScope) -> Result<Self, ScopeError> {
        match raw {
            RawScope::All => Ok(Scope::All),
            RawScope::Types(types) => Scope::types(types),
            RawScope::Ids(ids) => Scope::ids_up_to(ids, Scope::MAX_LISTED_IDS),
        }
    }
}

impl Scope {
    pub const MAX_IDS: usize = 100;

    /// The most ids a recovery's listed scope (Rewind's extension beyond Microsoft's 100) may
    /// name: 20,000 ids are 320 KB in every task message that carries the scope.
    pub const MAX_LISTED_IDS: usize = 20_000;

    /// A scope by ids: at least one, at most [`Scope::MAX_IDS`] after removing duplicates.
    pub fn ids(ids: impl IntoIterator<Item = ObjectId>) -> Result<Self, ScopeError> {
        Self::ids_up_to(ids, Self::MAX_IDS)
    }

    /// A scope by ids: at least one, at most `max` (itself at most [`Scope::MAX_LISTED_IDS`])
    /// after removing duplicates.
    pub fn ids_up_to(
        ids: impl IntoIterator<Item = ObjectId>,
        max: usize,
    ) -> Result<Self, ScopeError> {
        let max = max.min(Self::MAX_LISTED_IDS);
        let mut ids: Vec<ObjectId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        match ids.len() {
            0 => Err(ScopeError::NoIds),
            n if n > max => Err(ScopeError::TooManyIds { max, given: n }),
            _ => Ok(Scope::Ids(ids)),
        }
    }

    /// A scope by types (at least one).
    pub fn types(types: impl IntoIterator<Item = ObjectType>) -> Result<Self, ScopeError> {
        let mut types: Vec<ObjectType> = types.into_iter().collect();
        types.sort_unstable();
        types.dedup();
        if types.is_empty() {
            return Err(ScopeError::NoTypes);
        }
        Ok(Scope::Types(types))
    }

    /// The object type a scope's type name stands for. Besides the type names, Microsoft's
    /// `appRoleAssignment` and `oAuth2PermissionGrant` are accepted: they are recovered with
    /// their service principal, never alone, so they stand for `servicePrincipal`.
    pub fn type_from_name(name: &str) -> Result<ObjectType, crate::model::ParseObjectTypeError> {
        match name {
            "appRoleAssignment" | "oAuth2PermissionGrant" => Ok(ObjectType::ServicePrincipal),
            other => other.parse(),
        }
    }

    /// A compiled form for the diff's inner loop.
    pub(crate) fn matcher(&self) -> ScopeMatcher<'_> {
        match self {
            Scope::All => ScopeMatcher::All,
            Scope::Types(types) => {
                ScopeMatcher::Types(types.iter().fold(0u32, |m, t| m | 1 << t.code()))
            }
            Scope::Ids(ids) => ScopeMatcher::Ids(ids),
        }
    }

    pub fn contains(&self, id: ObjectId, object_type: ObjectType) -> bool {
        self.matcher().contains(id, object_type.code())
    }

    /// One line for people and the audit log: `all`, `types user,group`, `3 ids`.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all".to_owned(),
            Scope::Types(types) => format!(
                "types {}",
                types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Scope::Ids(ids) => format!("{} ids", ids.len()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum ScopeMatcher<'a> {
    All,
    Types(u32),
    Ids(&'a [ObjectId]),
}

impl ScopeMatcher<'_> {
    #[inline]
    pub(crate) fn contains(self, id: ObjectId, type_code: u8) -> bool {
        match self {
            ScopeMatcher::All => true,
            ScopeMatcher::Types(mask) => mask & (1 << type_code) != 0,
            ScopeMatcher::Ids(ids) => ids.binary_search(&id).is_ok(),
        }
    }
}

/// What happened to an object since the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Created after the backup.
    Created,
    /// Recoverable properties or links differ.
    Modified,
    /// Soft-deleted after the backup.
    SoftDeleted,
    /// Restored after the backup (it was soft-deleted in the backup).
    Restored,
    /// Gone from the directory (hard-deleted, or purged from the recycle bin).
    HardDeleted,
}

/// What a recovery does about a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryAction {
    /// Revert the changed recoverable properties and static links.
    Update,
    /// Restore from soft delete, then revert what else changed.
    Restore,
    /// Soft delete an object created after the backup.
    SoftDelete,
    /// Soft delete again an object restored after the backup.
    SoftDeleteAgain,
    /// Shown, never touched; the reason says why.
    NotRecoverable,
}

impl RecoveryAction {
    pub const ALL: [RecoveryAction; 5] = [
        RecoveryAction::Update,
        RecoveryAction::Restore,
        RecoveryAction::SoftDelete,
        RecoveryAction::SoftDeleteAgain,
        RecoveryAction::NotRecoverable,
    ];

    /// The action's name on the wire and in the API (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Update => "update",
            RecoveryAction::Restore => "restore",
            RecoveryAction::SoftDelete => "softDelete",
            RecoveryAction::SoftDeleteAgain => "softDeleteAgain",
            RecoveryAction::NotRecoverable => "notRecoverable",
        }
    }
}

/// Why a change is shown but never recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotRecoverableReason {
    /// The object is gone; Rewind never re-creates objects. On a link: the object at its far
    /// end is gone, so the link is lost with it.
    HardDeleted,
    /// The object is mastered on-premises.
    SyncedFromOnPremises,
    /// The only changes are memberships that a dynamic group's rule computes.
    DynamicMembership,
}

impl NotRecoverableReason {
    /// The reason's name on the wire and in the API (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            NotRecoverableReason::HardDeleted => "hardDeleted",
            NotRecoverableReason::SyncedFromOnPremises => "syncedFromOnPremises",
            NotRecoverableReason::DynamicMembership => "dynamicMembership",
        }
    }
}

/// A recoverable property whose value differs (absent values are `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedAttribute {
    pub name: String,
    pub current: Option<Value>,
    pub backup: Option<Value>,
}

/// Whether a link exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkState {
    Present,
    Absent,
}

/// A link that differs: added, removed, or (grants and assignments) with other data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedLink {
    pub kind: LinkKind,
    pub target: ObjectId,
    pub current: LinkState,
    pub backup: LinkState,
    /// False for memberships computed by a dynamic group's rule, and for links lost with the
    /// object at their far end; `reason` says which.
    pub recoverable: bool,
    /// Why a link is not recoverable (`None` when it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotRecoverableReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_data: Option<Value>,
}

/// One entry of a difference report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportEntry {
    pub id: ObjectId,
    pub object_type: ObjectType,
    pub display_name: String,
    pub change: Change,
    pub action: RecoveryAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotRecoverableReason>,
    pub changed_attributes: Vec<ChangedAttribute>,
    pub changed_links: Vec<ChangedLink>,
}

impl ReportEntry {
    pub fn is_recoverable(&self) -> bool {
        self.action != RecoveryAction::NotRecoverable
    }
}

/// Counts over a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportSummary {
    pub objects: u64,
    pub links: u64,
    pub updates: u64,
    pub restores: u64,
    pub soft_deletes: u64,
    pub soft_deletes_again: u64,
    pub not_recoverable: u64,
}

impl ReportSummary {
    pub fn of(entries: &[ReportEntry]) -> Self {
        let mut s = ReportSummary::default();
        for e in entries {
            s.objects += 1;
            s.links += e.changed_links.len() as u64;
            match e.action {
                RecoveryAction::Update => s.updates += 1,
                RecoveryAction::Restore => s.restores += 1,
                RecoveryAction::SoftDelete => s.soft_deletes += 1,
                RecoveryAction::SoftDeleteAgain => s.soft_deletes_again += 1,
                RecoveryAction::NotRecoverable => s.not_recoverable += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_limits() {
        assert_eq!(Scope::ids([]), Err(ScopeError::NoIds));
        assert_eq!(
            Scope::ids((0..101).map(ObjectId)),
            Err(ScopeError::TooManyIds {
                max: 100,
                given: 101
            })
        );
        assert!(Scope::ids((0..100).map(ObjectId)).is_ok());
        assert_eq!(Scope::types([]), Err(ScopeError::NoTypes));
        assert_eq!(
            Scope::type_from_name("oAuth2PermissionGrant"),
            Ok(ObjectType::ServicePrincipal)
        );
        assert_eq!(
            Scope::type_from_name("namedLocationPolicy"),
            Ok(ObjectType::NamedLocation)
        );
        assert!(Scope::type_from_name("device").is_err());
    }

    fn scope_json(n: u128) -> String {
        format!("\"{}\"", ObjectId(n))
    }

    #[test]
    fn deserialized_scopes_are_checked_like_built_ones() {
        let ids = [7u128, 3, 7, 5].map(scope_json).join(",");
        let scope: Scope =
            serde_json::from_str(&format!(r#"{{"kind":"ids","values":[{ids}]}}"#)).unwrap();
        assert_eq!(
            scope,
            Scope::Ids(vec![ObjectId(3), ObjectId(5), ObjectId(7)])
        );
        for n in [3, 5, 7] {
            assert!(scope.contains(ObjectId(n), ObjectType::User), "{n}");
        }
        assert!(!scope.contains(ObjectId(4), ObjectType::User));

        let refused = |json: &str, error: ScopeError| {
            let e = serde_json::from_str::<Scope>(json).unwrap_err().to_string();
            assert!(e.contains(&error.to_string()), "{json}: {e}");
        };
        // Stored scopes may list up to the extension's limit (a recovery's listed ids), not
        // beyond; Microsoft's 100 is checked where its `filteringCriteria` is read.
        let listed = Scope::MAX_LISTED_IDS as u128;
        let many = (0..=listed).map(scope_json).collect::<Vec<_>>().join(",");
        refused(
            &format!(r#"{{"kind":"ids","values":[{many}]}}"#),
            ScopeError::TooManyIds {
                max: Scope::MAX_LISTED_IDS,
                given: Scope::MAX_LISTED_IDS + 1,
            },
        );
        let hundred_one = (0..101).map(scope_json).collect::<Vec<_>>().join(",");
        let ok: Scope =
            serde_json::from_str(&format!(r#"{{"kind":"ids","values":[{hundred_one}]}}"#)).unwrap();
        assert!(Scope::ids(match ok {
            Scope::Ids(ids) => ids,
            _ => unreachable!(),
        })
        .is_err());
        refused(r#"{"kind":"ids","values":[]}"#, ScopeError::NoIds);
        refused(r#"{"kind":"types","values":[]}"#, ScopeError::NoTypes);

        let types: Scope =
            serde_json::from_str(r#"{"kind":"types","values":["group","user","group"]}"#).unwrap();
        assert_eq!(
            types,
            Scope::types([ObjectType::User, ObjectType::Group]).unwrap()
        );
        let all: Scope = serde_json::from_str(r#"{"kind":"all"}"#).unwrap();
        assert_eq!(all, Scope::All);
        let back = serde_json::to_string(&scope).unwrap();
        assert_eq!(serde_json::from_str::<Scope>(&back).unwrap(), scope);
    }
}

#[cfg(test)]
mod action_name_tests {
    use super::RecoveryAction;

    #[test]
    fn action_names_are_their_serialized_form() {
        for a in RecoveryAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }
}
