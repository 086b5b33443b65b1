//! The recoverable-property table: for each object type, the properties a snapshot keeps and
//! which of them a recovery may write, and which link kinds are recoverable. The diff engine, the
//! recovery planner and the Graph connector's `$select` all read this one table; its `graph`
//! column says where Graph holds each property and in which API versions (see
//! [`crate::graph_names`], which adds the Graph names a snapshot does not keep).
//!
//! **Property ids are append-only.** A snapshot stores a property by its id, so an id keeps its
//! meaning forever: every backup ever written is read through these tables. The first entries
//! of each table happen to be in alphabetical order; that order is history, not a rule. A new
//! property is appended at the end of its type's table with the next id, whatever its name; an
//! entry is never inserted, reordered, renamed or removed (one no longer captured stays, unused).
//! Each entry spells its id out, a compile-time check holds every id equal to its position, and
//! `common/tests/golden/property-ids.tsv` (checked by the golden test) pins every (type, id,
//! name) that has ever been written.

use crate::model::{LinkKind, ObjectType};

/// One property a snapshot keeps for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyDef {
    /// The property id: what a snapshot stores instead of the name, fixed forever.
    pub id: u8,
    /// The Graph property name.
    pub name: &'static str,
    /// Whether a recovery writes it back (and so whether a report shows its changes).
    pub recoverable: bool,
    /// Where Graph holds it.
    pub graph: GraphHome,
}

impl PropertyDef {
    /// Whether a capture can read it of an object in the recycle bin: Graph serves a
    /// soft-deleted user's own properties from `deletedItems`, but not its
    /// `authentication/requirements` (the per-user MFA state), which comes back with the
    /// restore. The diff does not compare what the recycle bin hides.
    pub fn read_in_recycle_bin(&self) -> bool {
        !matches!(self.graph, GraphHome::AuthenticationRequirements)
    }
}

/// A Graph API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    V1,
    Beta,
}

impl Api {
    pub const ALL: [Api; 2] = [Api::V1, Api::Beta];

    /// The version's path segment (`v1.0`, `beta`).
    pub fn segment(self) -> &'static str {
        match self {
            Api::V1 => "v1.0",
            Api::Beta => "beta",
        }
    }
}

/// The Graph API versions a name exists in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub v1: bool,
    pub beta: bool,
}

impl Versions {
    pub const BOTH: Versions = Versions {
        v1: true,
        beta: true,
    };
    pub const BETA: Versions = Versions {
        v1: false,
        beta: true,
    };
    pub const NONE: Versions = Versions {
        v1: false,
        beta: false,
    };

    pub fn has(self, api: Api) -> bool {
        match api {
            Api::V1 => self.v1,
            Api::Beta => self.beta,
        }
    }
}

/// Where Graph holds a kept property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphHome {
    /// A property of the type's own resource, under the same name, in these versions.
    Own(Versions),
    /// `perUserMfaState` of the user's `strongAuthenticationRequirements`
    /// (`/users/{id}/authentication/requirements`, beta only).
    AuthenticationRequirements,
    /// One of the policy's `authenticationMethodConfigurations`, read inside the policy and
    /// written on its own URL (`.../authenticationMethodConfigurations/{id}`), both versions.
    MethodConfiguration,
    /// No Graph API holds it: it is never read from nor written to Graph.
    Nowhere,
}

const fn r(id: u8, name: &'static str) -> PropertyDef {
    r_at(id, name, GraphHome::Own(Versions::BOTH))
}

/// A recoverable property that Graph holds elsewhere than on the type in both versions.
const fn r_at(id: u8, name: &'static str, graph: GraphHome) -> PropertyDef {
    PropertyDef {
        id,
        name,
        recoverable: true,
        graph,
    }
}

/// Kept for display or identity, never written back and never shown as a change.
const fn keep(id: u8, name: &'static str) -> PropertyDef {
    PropertyDef {
        id,
        name,
        recoverable: false,
        graph: GraphHome::Own(Versions::BOTH),
    }
}

/// The per-user MFA state is not a Graph property of `user`: it is the property of the same
/// name of the user's `strongAuthenticationRequirements` (beta), held under this name.
pub const PER_USER_MFA_STATE: &str = "perUserMfaState";

const USER: &[PropertyDef] = &[
    r(0, "accountEnabled"),
    r(1, "ageGroup"),
    r(2, "businessPhones"),
    r(3, "city"),
    r(4, "companyName"),
    r(5, "consentProvidedForMinor"),
    r(6, "country"),
    r(7, "department"),
    r(8, "displayName"),
    r(9, "employeeHireDate"),
    r(10, "employeeId"),
    r(11, "employeeLeaveDateTime"),
    r(12, "employeeOrgData"),
    r(13, "employeeType"),
    r(14, "faxNumber"),
    r(15, "givenName"),
    r(16, "jobTitle"),
    r(17, "mail"),
    r(18, "mailNickname"),
    r(19, "mobilePhone"),
    r(20, "officeLocation"),
    r(21, "otherMails"),
    r(22, "passwordPolicies"),
    r_at(
        23,
        PER_USER_MFA_STATE,
        GraphHome::AuthenticationRequirements,
    ),
    r(24, "postalCode"),
    r(25, "preferredDataLocation"),
    r(26, "preferredLanguage"),
    r(27, "state"),
    r(28, "streetAddress"),
    r(29, "surname"),
    r(30, "usageLocation"),
    r(31, "userPrincipalName"),
    r(32, "userType"),
];

const GROUP: &[PropertyDef] = &[
    r(0, "classification"),
    r(1, "description"),
    r(2, "displayName"),
    r(3, "groupTypes"),
    r(4, "mail"),
    r(5, "mailEnabled"),
    r(6, "mailNickname"),
    r(7, "preferredDataLocation"),
    r(8, "preferredLanguage"),
    r(9, "securityEnabled"),
    r(10, "theme"),
    r(11, "visibility"),
    keep(12, "membershipRule"),
];

const APPLICATION: &[PropertyDef] = &[
    r(0, "addIns"),
    r(1, "createdDateTime"),
    r(2, "description"),
    r(3, "displayName"),
    r(4, "groupMembershipClaims"),
    r(5, "identifierUris"),
    r(6, "info"),
    r(7, "isDeviceOnlyAuthSupported"),
    r(8, "isDisabled"),
    r(9, "nativeAuthenticationApisEnabled"),
    r(10, "notes"),
    r(11, "optionalClaims"),
    r(12, "publicClient"),
    r(13, "publisherDomain"),
    r(14, "requiredResourceAccess"),
    r(15, "serviceManagementReference"),
    r(16, "servicePrincipalLockConfiguration"),
    r(17, "signInAudience"),
    r(18, "tags"),
    keep(19, "appId"),
];

const SERVICE_PRINCIPAL: &[PropertyDef] = &[
    r(0, "accountEnabled"),
    r(1, "alternativeNames"),
    r(2, "appRoleAssignmentRequired"),
    r(3, "description"),
    r(4, "loginUrl"),
    r(5, "notes"),
    r(6, "notificationEmailAddresses"),
    r(7, "preferredSingleSignOnMode"),
    r(8, "preferredTokenSigningKeyThumbprint"),
    // Graph v1.0 has no `publisherName` on service principals; beta has.
    r_at(9, "publisherName", GraphHome::Own(Versions::BETA)),
    r(10, "samlSingleSignOnSettings"),
    r(11, "servicePrincipalNames"),
    r(12, "servicePrincipalType"),
    r(13, "tags"),
    keep(14, "appId"),
    keep(15, "displayName"),
];

const CONDITIONAL_ACCESS_POLICY: &[PropertyDef] = &[
    r(0, "conditions"),
    r(1, "displayName"),
    r(2, "grantControls"),
    r(3, "sessionControls"),
    r(4, "state"),
];

/// `@odata.type` tells an ip named location from a country one; it never changes.
pub const NAMED_LOCATION_KIND: &str = "@odata.type";

const NAMED_LOCATION: &[PropertyDef] = &[
    r(0, "countriesAndRegions"),
    r(1, "countryLookupMethod"),
    r(2, "displayName"),
    r(3, "includeUnknownCountriesAndRegions"),
    r(4, "ipRanges"),
    r(5, "isTrusted"),
    keep(6, NAMED_LOCATION_KIND),
];

/// The eight method configurations of the authentication methods policy, by their Graph ids.
pub const AUTHENTICATION_METHOD_CONFIGURATIONS: &[&str] = &[
    "email",
    "fido2",
    "microsoftAuthenticator",
    "sms",
    "softwareOath",
    "temporaryAccessPass",
    "voice",
    "x509Certificate",
];

/// A method configuration of the authentication methods policy.
const fn config(id: u8, name: &'static str) -> PropertyDef {
    r_at(id, name, GraphHome::MethodConfiguration)
}

const AUTHENTICATION_METHODS_POLICY: &[PropertyDef] = &[
    config(0, "email"),
    config(1, "fido2"),
    config(2, "microsoftAuthenticator"),
    config(3, "sms"),
    config(4, "softwareOath"),
    config(5, "temporaryAccessPass"),
    config(6, "voice"),
    config(7, "x509Certificate"),
    keep(8, "displayName"),
];

const AUTHORIZATION_POLICY: &[PropertyDef] = &[
    r(0, "blockMsolPowerShell"),
    r(1, "guestUserRoleId"),
    keep(2, "displayName"),
];

/// The tenant-wide legacy MFA settings, held on the organization object under these names. No
/// Graph API has them, so a capture from Graph never holds them.
const ORGANIZATION: &[PropertyDef] = &[
    r_at(0, "mfaAppPasswordsBlocked", GraphHome::Nowhere),
    r_at(1, "mfaAvailableMethods", GraphHome::Nowhere),
    r_at(2, "mfaEnabled", GraphHome::Nowhere),
    r_at(3, "mfaIpAllowList", GraphHome::Nowhere),
    r_at(4, "mfaRememberDevicesDays", GraphHome::Nowhere),
    r_at(5, "mfaRememberDevicesEnabled", GraphHome::Nowhere),
    keep(6, "displayName"),
];

/// Holds each entry's id equal to its position, at compile time: an entry inserted anywhere but
/// at the end breaks the build instead of silently renumbering the ones after it.
const fn ids_are_positions(table: &[PropertyDef]) -> bool {
    let mut i = 0;
    while i < table.len() {
        if table[i].id as usize != i {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = {
    let mut t = 0;
    while t < ObjectType::ALL.len() {
        assert!(
            ids_are_positions(properties(ObjectType::ALL[t])),
            "property ids are append-only: each entry's id must equal its position"
        );
        t += 1;
    }
};

/// The properties a snapshot keeps for `t`, by id (an entry's position is its id; new entries
/// are only ever appended, see the module documentation).
pub const fn properties(t: ObjectType) -> &'static [PropertyDef] {
    match t {
        ObjectType::User => USER,
        ObjectType::Group => GROUP,
        ObjectType::Application => APPLICATION,
        ObjectType::ServicePrincipal => SERVICE_PRINCIPAL,
        ObjectType::ConditionalAccessPolicy => CONDITIONAL_ACCESS_POLICY,
        ObjectType::NamedLocation => NAMED_LOCATION,
        ObjectType::AuthenticationMethodsPolicy => AUTHENTICATION_METHODS_POLICY,
        ObjectType::AuthorizationPolicy => AUTHORIZATION_POLICY,
        ObjectType::Organization => ORGANIZATION,
    }
}

/// The property id of `name` for type `t`, if the snapshot keeps it.
pub fn property_id(t: ObjectType, name: &str) -> Option<u8> {
    properties(t).iter().find(|p| p.name == name).map(|p| p.id)
}

/// The property definition of id `id` for type `t`.
pub fn property(t: ObjectType, id: u8) -> Option<&'static PropertyDef> {
    properties(t).get(usize::from(id))
}

/// The link kinds a snapshot keeps for `t`.
pub fn link_kinds(t: ObjectType) -> &'static [LinkKind] {
    match t {
        ObjectType::Group => &[LinkKind::Members, LinkKind::Owners],
        ObjectType::Application => &[LinkKind::Owners],
        ObjectType::ServicePrincipal => &[
            LinkKind::Owners,
            LinkKind::OAuth2PermissionGrants,
            LinkKind::AppRoleAssignedTo,
        ],
        _ => &[],
    }
}

/// Whether a recovery writes links of `kind` on an object of type `t`. Owners are never
/// recovered; memberships of dynamic groups are never written (the caller checks that flag).
pub fn link_recoverable(t: ObjectType, kind: LinkKind) -> bool {
    matches!(
        (t, kind),
        (ObjectType::Group, LinkKind::Members)
            | (
                ObjectType::ServicePrincipal,
                LinkKind::OAuth2PermissionGrants
            )
            | (ObjectType::ServicePrincipal, LinkKind::AppRoleAssignedTo)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recoverable_counts_match_the_spec() {
        let count = |t| properties(t).iter().filter(|p| p.recoverable).count();
        assert_eq!(count(ObjectType::User), 33);
        assert_eq!(count(ObjectType::Group), 12);
        assert_eq!(count(ObjectType::Application), 19);
        assert_eq!(count(ObjectType::ServicePrincipal), 14);
        assert_eq!(count(ObjectType::AuthenticationMethodsPolicy), 8);
        assert_eq!(count(ObjectType::AuthorizationPolicy), 2);
    }

    #[test]
    fn names_are_unique_per_type() {
        for t in ObjectType::ALL {
            let props = properties(t);
            for (i, p) in props.iter().enumerate() {
                assert_eq!(usize::from(p.id), i, "{t}: {}", p.name);
                assert_eq!(property_id(t, p.name), Some(p.id), "{t}: {}", p.name);
            }
        }
    }
}
