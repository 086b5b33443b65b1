//! The Graph names Rewind sends and the simulator serves, per resource and API version: the
//! property table's `graph` column for the properties a snapshot keeps, and [`UNKEPT`] for the
//! Graph names it does not keep (ids, lifecycle fields, the fields of grants, assignments and
//! the per-user MFA requirements). Graph refuses a `$select` or a body that names a property
//! its resource does not have in that version (400), so the connector builds every `$select`
//! and body from [`versions`], and the simulator refuses what [`versions`] does not list.

use crate::model::ObjectType;
use crate::properties::{self, Api, GraphHome, Versions};

/// A Graph resource type whose names Rewind reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An object type of the snapshot (`microsoft.graph.user`, ...).
    Object(ObjectType),
    /// A user's `strongAuthenticationRequirements` (`/users/{id}/authentication/requirements`).
    AuthenticationRequirements,
    /// `microsoft.graph.oAuth2PermissionGrant`.
    OAuth2PermissionGrant,
    /// `microsoft.graph.appRoleAssignment`.
    AppRoleAssignment,
}

impl Resource {
    /// Graph's qualified type name (as its error messages name it).
    pub fn type_name(self) -> &'static str {
        match self {
            Resource::Object(t) => crate::graph_json::odata_type(t).trim_start_matches('#'),
            Resource::AuthenticationRequirements => {
                "microsoft.graph.strongAuthenticationRequirements"
            }
            Resource::OAuth2PermissionGrant => "microsoft.graph.oAuth2PermissionGrant",
            Resource::AppRoleAssignment => "microsoft.graph.appRoleAssignment",
        }
    }
}

use ObjectType as T;
use Resource::{AppRoleAssignment, AuthenticationRequirements, OAuth2PermissionGrant, Object};

/// The Graph names that are not properties a snapshot keeps, with their versions. Every type
/// has `id` (see [`versions`]).
pub const UNKEPT: &[(Resource, &str, Versions)] = &[
    (Object(T::User), "deletedDateTime", Versions::BOTH),
    (Object(T::User), "onPremisesSyncEnabled", Versions::BOTH),
    (Object(T::Group), "deletedDateTime", Versions::BOTH),
    (Object(T::Group), "onPremisesSyncEnabled", Versions::BOTH),
    (Object(T::Application), "deletedDateTime", Versions::BOTH),
    (
        Object(T::ServicePrincipal),
        "deletedDateTime",
        Versions::BOTH,
    ),
    // Both inherit `deletedDateTime` from policyDeletableItem.
    (
        Object(T::ConditionalAccessPolicy),
        "deletedDateTime",
        Versions::BOTH,
    ),
    (Object(T::NamedLocation), "deletedDateTime", Versions::BOTH),
    // The policy's configurations, patched through the policy itself.
    (
        Object(T::AuthenticationMethodsPolicy),
        "authenticationMethodConfigurations",
        Versions::BOTH,
    ),
    (
        AuthenticationRequirements,
        properties::PER_USER_MFA_STATE,
        Versions::BETA,
    ),
    (OAuth2PermissionGrant, "clientId", Versions::BOTH),
    (OAuth2PermissionGrant, "consentType", Versions::BOTH),
    (OAuth2PermissionGrant, "principalId", Versions::BOTH),
    (OAuth2PermissionGrant, "resourceId", Versions::BOTH),
    (OAuth2PermissionGrant, "scope", Versions::BOTH),
    (AppRoleAssignment, "appRoleId", Versions::BOTH),
    (AppRoleAssignment, "principalId", Versions::BOTH),
    (AppRoleAssignment, "principalType", Versions::BOTH),
    (AppRoleAssignment, "principalDisplayName", Versions::BOTH),
    (AppRoleAssignment, "resourceId", Versions::BOTH),
    (AppRoleAssignment, "resourceDisplayName", Versions::BOTH),
    (AppRoleAssignment, "deletedDateTime", Versions::BOTH),
];

/// The versions in which `resource` has the property `name` (`Versions::NONE` if it has not).
pub fn versions(resource: Resource, name: &str) -> Versions {
    // An annotation (`@odata.type`) is no property: it is never selected nor written.
    if name.starts_with('@') {
        return Versions::NONE;
    }
    if name == "id" && resource != AuthenticationRequirements {
        return Versions::BOTH;
    }
    if let Object(t) = resource {
        if let Some(def) = properties::properties(t).iter().find(|d| d.name == name) {
            return match def.graph {
                GraphHome::Own(v) => v,
                _ => Versions::NONE,
            };
        }
    }
    UNKEPT
        .iter()
        .find(|(r, n, _)| *r == resource && *n == name)
        .map_or(Versions::NONE, |(_, _, v)| *v)
}

/// Whether `resource` has the property `name` in `api`.
pub fn exists(resource: Resource, name: &str, api: Api) -> bool {
    versions(resource, name).has(api)
}

/// Where Graph holds the kept property `name` of type `t` (`None` if the snapshot does not
/// keep it).
pub fn home(t: ObjectType, name: &str) -> Option<GraphHome> {
    properties::properties(t)
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.graph)
}

/// The kept properties of `t` that only Graph's beta has on the type itself.
pub fn beta_only(t: ObjectType) -> impl Iterator<Item = &'static str> {
    properties::properties(t)
        .iter()
        .filter(|d| d.graph == GraphHome::Own(Versions::BETA))
        .map(|d| d.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_graph_lacks_are_known_per_version() {
        let user = Object(T::User);
        assert!(!exists(user, properties::PER_USER_MFA_STATE, Api::V1));
        assert!(!exists(user, properties::PER_USER_MFA_STATE, Api::Beta));
        assert!(exists(
            AuthenticationRequirements,
            properties::PER_USER_MFA_STATE,
            Api::Beta
        ));
        assert!(!exists(
            AuthenticationRequirements,
            properties::PER_USER_MFA_STATE,
            Api::V1
        ));
        let sp = Object(T::ServicePrincipal);
        assert!(!exists(sp, "publisherName", Api::V1));
        assert!(exists(sp, "publisherName", Api::Beta));
        assert!(!exists(Object(T::Organization), "mfaEnabled", Api::Beta));
        assert!(exists(user, "onPremisesSyncEnabled", Api::V1));
        assert!(!exists(sp, "onPremisesSyncEnabled", Api::V1));
        assert!(exists(user, "city", Api::V1));
        assert!(!exists(user, "noSuchThing", Api::Beta));
    }

    #[test]
    fn unkept_names_are_not_kept_properties() {
        for (r, name, _) in UNKEPT {
            if let Object(t) = r {
                assert!(home(*t, name).is_none(), "{t}: {name} is in both tables");
            }
        }
    }
}
