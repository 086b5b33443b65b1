//! The recoverable-property table: for each object type, the properties a snapshot keeps and
//! which of them a recovery may write, and which link kinds are recoverable. The diff engine, the
//! recovery planner and the Graph connector's `$select` all read this one table; its `graph`
//! column says where Graph holds each property and in which API versions (see
//! [`crate::graph_names`], which adds the Graph names a snapshot does not keep).

use crate::model::{LinkKind, ObjectType};

/// One property a snapshot keeps for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyDef {
    /// The Graph property name.
    pub name: &'static str,
    /// Whether a recovery writes it back (and so whether a report shows its changes).
    pub recoverable: bool,
    /// Where Graph holds it.
    pub graph: GraphHome,
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

const fn r(name: &'static str) -> PropertyDef {
    r_at(name, GraphHome::Own(Versions::BOTH))
}

/// A recoverable property that Graph holds elsewhere than on the type in both versions.
const fn r_at(name: &'static str, graph: GraphHome) -> PropertyDef {
    PropertyDef {
        name,
        recoverable: true,
        graph,
    }
}

/// Kept for display or identity, never written back and never shown as a change.
const fn keep(name: &'static str) -> PropertyDef {
    PropertyDef {
        name,
        recoverable: false,
        graph: GraphHome::Own(Versions::BOTH),
    }
}

/// The per-user MFA state is not a Graph property of `user`: it is the property of the same
/// name of the user's `strongAuthenticationRequirements` (beta), held under this name.
pub const PER_USER_MFA_STATE: &str = "perUserMfaState";

const USER: &[PropertyDef] = &[
    r("accountEnabled"),
    r("ageGroup"),
    r("businessPhones"),
    r("city"),
    r("companyName"),
    r("consentProvidedForMinor"),
    r("country"),
    r("department"),
    r("displayName"),
    r("employeeHireDate"),
    r("employeeId"),
    r("employeeLeaveDateTime"),
    r("employeeOrgData"),
    r("employeeType"),
    r("faxNumber"),
    r("givenName"),
    r("jobTitle"),
    r("mail"),
    r("mailNickname"),
    r("mobilePhone"),
    r("officeLocation"),
    r("otherMails"),
    r("passwordPolicies"),
    r_at(PER_USER_MFA_STATE, GraphHome::AuthenticationRequirements),
    r("postalCode"),
    r("preferredDataLocation"),
    r("preferredLanguage"),
    r("state"),
    r("streetAddress"),
    r("surname"),
    r("usageLocation"),
    r("userPrincipalName"),
    r("userType"),
];

const GROUP: &[PropertyDef] = &[
    r("classification"),
    r("description"),
    r("displayName"),
    r("groupTypes"),
    r("mail"),
    r("mailEnabled"),
    r("mailNickname"),
    r("preferredDataLocation"),
    r("preferredLanguage"),
    r("securityEnabled"),
    r("theme"),
    r("visibility"),
    keep("membershipRule"),
];

const APPLICATION: &[PropertyDef] = &[
    r("addIns"),
    r("createdDateTime"),
    r("description"),
    r("displayName"),
    r("groupMembershipClaims"),
    r("identifierUris"),
    r("info"),
    r("isDeviceOnlyAuthSupported"),
    r("isDisabled"),
    r("nativeAuthenticationApisEnabled"),
    r("notes"),
    r("optionalClaims"),
    r("publicClient"),
    r("publisherDomain"),
    r("requiredResourceAccess"),
    r("serviceManagementReference"),
    r("servicePrincipalLockConfiguration"),
    r("signInAudience"),
    r("tags"),
    keep("appId"),
];

const SERVICE_PRINCIPAL: &[PropertyDef] = &[
    r("accountEnabled"),
    r("alternativeNames"),
    r("appRoleAssignmentRequired"),
    r("description"),
    r("loginUrl"),
    r("notes"),
    r("notificationEmailAddresses"),
    r("preferredSingleSignOnMode"),
    r("preferredTokenSigningKeyThumbprint"),
    // Graph v1.0 has no `publisherName` on service principals; beta has.
    r_at("publisherName", GraphHome::Own(Versions::BETA)),
    r("samlSingleSignOnSettings"),
    r("servicePrincipalNames"),
    r("servicePrincipalType"),
    r("tags"),
    keep("appId"),
    keep("displayName"),
];

const CONDITIONAL_ACCESS_POLICY: &[PropertyDef] = &[
    r("conditions"),
    r("displayName"),
    r("grantControls"),
    r("sessionControls"),
    r("state"),
];

/// `@odata.type` tells an ip named location from a country one; it never changes.
pub const NAMED_LOCATION_KIND: &str = "@odata.type";

const NAMED_LOCATION: &[PropertyDef] = &[
    r("countriesAndRegions"),
    r("countryLookupMethod"),
    r("displayName"),
    r("includeUnknownCountriesAndRegions"),
    r("ipRanges"),
    r("isTrusted"),
    keep(NAMED_LOCATION_KIND),
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
const fn config(name: &'static str) -> PropertyDef {
    r_at(name, GraphHome::MethodConfiguration)
}

const AUTHENTICATION_METHODS_POLICY: &[PropertyDef] = &[
    config("email"),
    config("fido2"),
    config("microsoftAuthenticator"),
    config("sms"),
    config("softwareOath"),
    config("temporaryAccessPass"),
    config("voice"),
    config("x509Certificate"),
    keep("displayName"),
];

const AUTHORIZATION_POLICY: &[PropertyDef] = &[
    r("blockMsolPowerShell"),
    r("guestUserRoleId"),
    keep("displayName"),
];

/// The tenant-wide legacy MFA settings, held on the organization object under these names. No
/// Graph API has them, so a capture from Graph never holds them.
const ORGANIZATION: &[PropertyDef] = &[
    r_at("mfaAppPasswordsBlocked", GraphHome::Nowhere),
    r_at("mfaAvailableMethods", GraphHome::Nowhere),
    r_at("mfaEnabled", GraphHome::Nowhere),
    r_at("mfaIpAllowList", GraphHome::Nowhere),
    r_at("mfaRememberDevicesDays", GraphHome::Nowhere),
    r_at("mfaRememberDevicesEnabled", GraphHome::Nowhere),
    keep("displayName"),
];

/// The properties a snapshot keeps for `t`, in their fixed order (the index is the property id
/// in the snapshot encoding, so entries are only ever appended).
pub fn properties(t: ObjectType) -> &'static [PropertyDef] {
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
    properties(t)
        .iter()
        .position(|p| p.name == name)
        .and_then(|i| u8::try_from(i).ok())
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
                assert_eq!(property_id(t, p.name), Some(i as u8), "{t}: {}", p.name);
            }
        }
    }
}
