//! The recoverable-property table: for each object type, the properties a snapshot keeps and
//! which of them a recovery may write, and which link kinds are recoverable. The diff engine, the
//! recovery planner and the Graph connector's `$select` all read this one table.

use crate::model::{LinkKind, ObjectType};

/// One property a snapshot keeps for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyDef {
    /// The Graph property name.
    pub name: &'static str,
    /// Whether a recovery writes it back (and so whether a report shows its changes).
    pub recoverable: bool,
}

const fn r(name: &'static str) -> PropertyDef {
    PropertyDef {
        name,
        recoverable: true,
    }
}

/// Kept for display or identity, never written back and never shown as a change.
const fn keep(name: &'static str) -> PropertyDef {
    PropertyDef {
        name,
        recoverable: false,
    }
}

/// The per-user MFA state is not a Graph property of `user`; it is held under this name.
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
    r(PER_USER_MFA_STATE),
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
    r("publisherName"),
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

const AUTHENTICATION_METHODS_POLICY: &[PropertyDef] = &[
    r("email"),
    r("fido2"),
    r("microsoftAuthenticator"),
    r("sms"),
    r("softwareOath"),
    r("temporaryAccessPass"),
    r("voice"),
    r("x509Certificate"),
    keep("displayName"),
];

const AUTHORIZATION_POLICY: &[PropertyDef] = &[
    r("blockMsolPowerShell"),
    r("guestUserRoleId"),
    keep("displayName"),
];

/// The tenant-wide legacy MFA settings, held on the organization object under these names.
const ORGANIZATION: &[PropertyDef] = &[
    r("mfaAppPasswordsBlocked"),
    r("mfaAvailableMethods"),
    r("mfaEnabled"),
    r("mfaIpAllowList"),
    r("mfaRememberDevicesDays"),
    r("mfaRememberDevicesEnabled"),
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
