//! A seeded generator of realistic tenants and of their changed state: object `i` of a tenant
//! is a pure function of (seed, i), so a million-object tenant is generated shard by shard, in
//! parallel, without ever holding it whole, and two runs with one seed give the same tenant.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rewind_common::model::{
    DirectoryObject, Lifecycle, Link, LinkKind, ObjectType, SourceOfAuthority,
};
use rewind_common::{ObjectId, Value};

/// The version of what the generator makes. Bump it with any change that makes a seed give other
/// objects: stores of generated snapshots (`bench-diff --store`) record it and are refused when
/// it differs.
pub const GENERATOR_VERSION: u32 = 1;

/// The shape of a generated tenant and of its incident.
#[derive(Clone, Copy, Debug)]
pub struct TenantSpec {
    /// Objects in the backup state.
    pub objects: u64,
    pub seed: u64,
    /// Share of objects changed in the current state (properties or memberships).
    pub changed: f64,
    /// Share of objects soft-deleted in the current state.
    pub soft_deleted: f64,
    /// Objects created in the current state, as a share of `objects`.
    pub created: f64,
    /// Share of users synced from on-premises.
    pub on_premises: f64,
}

impl TenantSpec {
    pub fn new(objects: u64, seed: u64) -> Self {
        Self {
            objects,
            seed,
            changed: 0.01,
            soft_deleted: 0.005,
            created: 0.005,
            on_premises: 0.1,
        }
    }

    /// How many objects of each kind: 85% users, 10% groups, the rest apps, service
    /// principals, policies and named locations, and the three singletons.
    pub fn layout(&self) -> TypeLayout {
        let n = self.objects.max(8);
        let singletons = 3;
        let rest = n - singletons;
        let users = rest * 85 / 100;
        let groups = rest / 10;
        let apps = (rest - users - groups) * 2 / 5;
        let sps = apps;
        let policies = (rest - users - groups - apps - sps) / 2;
        let locations = rest - users - groups - apps - sps - policies;
        TypeLayout {
            users,
            groups,
            apps,
            sps,
            policies,
            locations,
        }
    }

    /// Objects created after the backup.
    pub fn created_count(&self) -> u64 {
        (self.objects as f64 * self.created).round() as u64
    }
}

/// Index ranges of each type: users first, then groups, applications, service principals,
/// policies, named locations and the three singletons.
#[derive(Clone, Copy, Debug)]
pub struct TypeLayout {
    pub users: u64,
    pub groups: u64,
    pub apps: u64,
    pub sps: u64,
    pub policies: u64,
    pub locations: u64,
}

impl TypeLayout {
    pub fn type_of(&self, i: u64) -> ObjectType {
        let mut edge = self.users;
        for (count, t) in [
            (0, ObjectType::User),
            (self.groups, ObjectType::Group),
            (self.apps, ObjectType::Application),
            (self.sps, ObjectType::ServicePrincipal),
            (self.policies, ObjectType::ConditionalAccessPolicy),
            (self.locations, ObjectType::NamedLocation),
        ] {
            edge += count;
            if i < edge {
                return t;
            }
        }
        match i - edge {
            0 => ObjectType::AuthenticationMethodsPolicy,
            1 => ObjectType::AuthorizationPolicy,
            _ => ObjectType::Organization,
        }
    }

    /// The first index of type `t`'s range.
    pub fn start_of(&self, t: ObjectType) -> u64 {
        match t {
            ObjectType::User => 0,
            ObjectType::Group => self.users,
            ObjectType::Application => self.users + self.groups,
            ObjectType::ServicePrincipal => self.users + self.groups + self.apps,
            ObjectType::ConditionalAccessPolicy => self.users + self.groups + self.apps + self.sps,
            ObjectType::NamedLocation => {
                self.users + self.groups + self.apps + self.sps + self.policies
            }
            ObjectType::AuthenticationMethodsPolicy => {
                self.users + self.groups + self.apps + self.sps + self.policies + self.locations
            }
            ObjectType::AuthorizationPolicy => {
                self.start_of(ObjectType::AuthenticationMethodsPolicy) + 1
            }
            ObjectType::Organization => self.start_of(ObjectType::AuthenticationMethodsPolicy) + 2,
        }
    }
}

/// What the current state did to an object of the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Unchanged,
    Changed,
    SoftDeleted,
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera",
    "Wei", "Ximena", "Yusuf", "Zoe",
];
const LAST: &[&str] = &[
    "Anders", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Huang", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Meyer", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
    "Tanaka", "Umarov", "Varga", "Weber", "Yilmaz", "Zhang",
];
const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Engineering",
    "Finance",
    "Marketing",
    "Support",
    "Legal",
    "Operations",
    "HR",
    "Research",
    "Procurement",
];
const TITLES: &[&str] = &[
    "Analyst",
    "Engineer",
    "Manager",
    "Director",
    "Consultant",
    "Specialist",
    "Associate",
    "Lead",
    "Architect",
    "Coordinator",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Seattle", "WA", "US"),
    ("Austin", "TX", "US"),
    ("London", "England", "GB"),
    ("Berlin", "Berlin", "DE"),
    ("Paris", "Ile-de-France", "FR"),
    ("Madrid", "Madrid", "ES"),
    ("Tokyo", "Tokyo", "JP"),
    ("Sydney", "NSW", "AU"),
    ("Toronto", "ON", "CA"),
    ("Lagos", "Lagos", "NG"),
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Pine Rd",
    "Cedar Ln",
    "Harbor Way",
    "Elm St",
];

const DOMAIN: &str = "contoso.example";

/// A tenant and its incident, generated from a seed.
#[derive(Clone, Debug)]
pub struct TenantGenerator {
    spec: TenantSpec,
    layout: TypeLayout,
}

impl TenantGenerator {
    pub fn new(spec: TenantSpec) -> Self {
        Self {
            spec,
            layout: spec.layout(),
        }
    }

    pub fn spec(&self) -> &TenantSpec {
        &self.spec
    }

    pub fn type_layout(&self) -> &TypeLayout {
        &self.layout
    }

    /// Object indexes `0..backup_count()` exist in the backup; created ones follow.
    pub fn backup_count(&self) -> u64 {
        self.spec.objects.max(8)
    }

    /// All indexes of the current state (backup objects, then created ones).
    pub fn current_count(&self) -> u64 {
        self.backup_count() + self.spec.created_count()
    }

    fn rng(&self, i: u64, salt: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.spec.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&i.to_le_bytes());
        seed[16..24].copy_from_slice(&salt.to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// The id of object `i` (created objects included).
    pub fn id(&self, i: u64) -> ObjectId {
        let t = if i < self.backup_count() {
            self.layout.type_of(i)
        } else {
            ObjectType::User
        };
        if t.is_singleton() && t != ObjectType::Organization {
            return ObjectId::for_singleton(t.as_str());
        }
        let mut h = blake3::Hasher::new();
        h.update(b"rewind-tenant-object");
        h.update(&self.spec.seed.to_le_bytes());
        h.update(&i.to_le_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.finalize().as_bytes()[..16]);
        // Version-4 GUID bits, as Entra's ids have.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        ObjectId::from_bytes(b)
    }

    /// What the incident does to backup object `i`.
    pub fn fate(&self, i: u64) -> Fate {
        if i >= self.backup_count() {
            return Fate::Unchanged;
        }
        let t = self.layout.type_of(i);
        let r: f64 = self.rng(i, 1).gen();
        if r < self.spec.changed {
            Fate::Changed
        } else if r < self.spec.changed + self.spec.soft_deleted && t.soft_deletable() {
            Fate::SoftDeleted
        } else {
            Fate::Unchanged
        }
    }

    /// Backup object `i`, or created object `i` (for `i >= backup_count()`).
    pub fn backup_object(&self, i: u64) -> DirectoryObject {
        let t = if i < self.backup_count() {
            self.layout.type_of(i)
        } else {
            ObjectType::User
        };
        let mut rng = self.rng(i, 0);
        let mut o = DirectoryObject::new(self.id(i), t);
        match t {
            ObjectType::User => self.fill_user(&mut o, i, &mut rng),
            ObjectType::Group => self.fill_group(&mut o, i, &mut rng),
            ObjectType::Application => fill_application(&mut o, i, &mut rng),
            ObjectType::ServicePrincipal => self.fill_service_principal(&mut o, i, &mut rng),
            ObjectType::ConditionalAccessPolicy => fill_policy(&mut o, i, &mut rng),
            ObjectType::NamedLocation => fill_location(&mut o, i, &mut rng),
            ObjectType::AuthenticationMethodsPolicy => fill_methods_policy(&mut o),
            ObjectType::AuthorizationPolicy => {
                o.set("displayName", "Authorization Policy".into());
                o.set("blockMsolPowerShell", false.into());
                o.set(
                    "guestUserRoleId",
                    "10dae51f-b6af-4016-8d66-8c2a99b929b3".into(),
                );
            }
            ObjectType::Organization => {
                o.set("displayName", "Contoso".into());
                o.set("mfaEnabled", true.into());
                o.set("mfaRememberDevicesEnabled", true.into());
                o.set("mfaRememberDevicesDays", Value::Int(14));
                o.set("mfaAppPasswordsBlocked", true.into());
                o.set(
                    "mfaAvailableMethods",
                    Value::List(vec!["authenticatorApp".into(), "sms".into()]),
                );
            }
        }
        o.normalize();
        o
    }

    /// Object `i` in the current state, or `None` when it does not exist there.
    pub fn current_object(&self, i: u64) -> Option<DirectoryObject> {
        if i >= self.current_count() {
            return None;
        }
        let mut o = self.backup_object(i);
        match self.fate(i) {
            Fate::Unchanged => {}
            Fate::SoftDeleted => {
                o.lifecycle = Lifecycle::SoftDeleted {
                    deleted_at: 1_795_000_000,
                }
            }
            Fate::Changed => self.change(&mut o, i),
        }
        Some(o)
    }

    fn change(&self, o: &mut DirectoryObject, i: u64) {
        let mut rng = self.rng(i, 2);
        match o.object_type {
            ObjectType::User => {
                o.set(
                    "department",
                    (*DEPARTMENTS.choose(&mut rng).unwrap_or(&"Sales")).into(),
                );
                o.set(
                    "jobTitle",
                    format!("Senior {}", TITLES.choose(&mut rng).unwrap_or(&"Lead")).into(),
                );
                if rng.gen_bool(0.5) {
                    o.set("accountEnabled", false.into());
                }
            }
            ObjectType::Group if !o.dynamic_membership => {
                o.set("description", format!("changed by incident {i}").into());
                let users = self.layout.users.max(1);
                let mut members = o.links_of(LinkKind::Members).to_vec();
                if !members.is_empty() {
                    members.remove(rng.gen_range(0..members.len()));
                }
                members.push(Link::to(self.id(rng.gen_range(0..users))));
                o.set_links(LinkKind::Members, members);
            }
            ObjectType::ServicePrincipal => {
                o.set("notes", format!("changed by incident {i}").into());
            }
            ObjectType::AuthenticationMethodsPolicy => {
                o.set(
                    "email",
                    Value::from_json(&serde_json::json!({"id": "email", "state": "disabled"})),
                );
            }
            ObjectType::AuthorizationPolicy => {
                o.set("blockMsolPowerShell", true.into());
            }
            ObjectType::Organization => {
                o.set("mfaRememberDevicesDays", Value::Int(90));
            }
            _ => {
                o.set("displayName", format!("Changed object {i}").into());
            }
        }
        o.normalize();
    }

    fn fill_user(&self, o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
        let first = *FIRST.choose(rng).unwrap_or(&"Ada");
        let last = *LAST.choose(rng).unwrap_or(&"Brown");
        let nick = format!("{}.{}{}", first.to_lowercase(), last.to_lowercase(), i);
        let (city, state, country) = *CITIES.choose(rng).unwrap_or(&CITIES[0]);
        let dept = *DEPARTMENTS.choose(rng).unwrap_or(&"Sales");
        let title = *TITLES.choose(rng).unwrap_or(&"Analyst");
        let s = |v: String| Value::from(v);
        o.set("accountEnabled", true.into());
        o.set("ageGroup", "Adult".into());
        o.set(
            "businessPhones",
            Value::List(vec![s(format!("+1 555 {:04}", rng.gen_range(0..10_000)))]),
        );
        o.set("city", city.into());
        o.set("companyName", "Contoso Ltd".into());
        o.set("consentProvidedForMinor", "NotRequired".into());
        o.set("country", country.into());
        o.set("department", dept.into());
        o.set("displayName", s(format!("{first} {last}")));
        o.set(
            "employeeHireDate",
            s(format!(
                "20{:02}-{:02}-{:02}T00:00:00Z",
                rng.gen_range(5..26),
                rng.gen_range(1..13),
                rng.gen_range(1..29)
            )),
        );
        o.set("employeeId", s(format!("E{:07}", i)));
        o.set(
            "employeeOrgData",
            Value::Map(
                [
                    (
                        "costCenter".to_owned(),
                        s(format!("CC{}", rng.gen_range(100..999))),
                    ),
                    ("division".to_owned(), dept.into()),
                ]
                .into(),
            ),
        );
        o.set(
            "employeeType",
            (if rng.gen_bool(0.9) {
                "Employee"
            } else {
                "Contractor"
            })
            .into(),
        );
        o.set(
            "faxNumber",
            s(format!("+1 555 {:04}", rng.gen_range(0..10_000))),
        );
        o.set("givenName", first.into());
        o.set("jobTitle", title.into());
        o.set("mail", s(format!("{nick}@{DOMAIN}")));
        o.set("mailNickname", s(nick.clone()));
        o.set(
            "mobilePhone",
            s(format!(
                "+1 555 {:04} {:03}",
                rng.gen_range(0..10_000),
                rng.gen_range(0..1000)
            )),
        );
        o.set(
            "officeLocation",
            s(format!("{city} {}", rng.gen_range(1..40))),
        );
        o.set(
            "otherMails",
            Value::List(vec![s(format!("{nick}@mail.example"))]),
        );
        o.set("passwordPolicies", "DisablePasswordExpiration".into());
        o.set(
            "perUserMfaState",
            (if rng.gen_bool(0.7) {
                "enforced"
            } else {
                "disabled"
            })
            .into(),
        );
        o.set(
            "postalCode",
            s(format!("{:05}", rng.gen_range(10_000..99_999))),
        );
        o.set("preferredDataLocation", country.into());
        o.set("preferredLanguage", "en-US".into());
        o.set("state", state.into());
        o.set(
            "streetAddress",
            s(format!(
                "{} {}",
                rng.gen_range(1..999),
                STREETS.choose(rng).unwrap_or(&"Main St")
            )),
        );
        o.set("surname", last.into());
        o.set("usageLocation", country.into());
        o.set("userPrincipalName", s(format!("{nick}@{DOMAIN}")));
        o.set(
            "userType",
            (if rng.gen_bool(0.95) {
                "Member"
            } else {
                "Guest"
            })
            .into(),
        );
        if rng.gen_bool(self.spec.on_premises) {
            o.source = SourceOfAuthority::OnPremises;
        }
    }

    fn fill_group(&self, o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
        let dept = *DEPARTMENTS.choose(rng).unwrap_or(&"Sales");
        // 1% of groups are dynamic (their rule is below).
        let dynamic = rng.gen_bool(0.01);
        let name = format!("{dept} team {i}");
        o.set("displayName", name.clone().into());
        o.set(
            "description",
            format!("Members of the {dept} team {i}").into(),
        );
        o.set("mailEnabled", false.into());
        o.set("mailNickname", format!("team{i}").into());
        o.set("securityEnabled", true.into());
        o.set("visibility", "Private".into());
        let users = self.layout.users.max(1);
        let size = rng.gen_range(5..50);
        let members = (0..size)
            .map(|_| Link::to(self.id(rng.gen_range(0..users))))
            .collect();
        if dynamic {
            // One office (as users' officeLocation reads): about 1 user in 390 matches, so a
            // million-object tenant's dynamic groups hold millions of links, not hundreds of
            // millions. Drawn apart, so that the other objects do not depend on it.
            let mut office = self.rng(i, 3);
            let (city, _, _) = *CITIES.choose(&mut office).unwrap_or(&CITIES[0]);
            let number = office.gen_range(1..40);
            o.set("groupTypes", Value::List(vec!["DynamicMembership".into()]));
            o.set(
                "membershipRule",
                format!("user.officeLocation -eq \"{city} {number}\"").into(),
            );
            o.dynamic_membership = true;
        } else {
            o.set("groupTypes", Value::List(vec![]));
        }
        o.set_links(LinkKind::Members, members);
        o.set_links(
            LinkKind::Owners,
            vec![Link::to(self.id(rng.gen_range(0..users)))],
        );
    }

    fn fill_service_principal(&self, o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
        let app = i - self.layout.start_of(ObjectType::ServicePrincipal);
        o.set("displayName", format!("App {app}").into());
        o.set(
            "appId",
            self.id(self.layout.start_of(ObjectType::Application) + app)
                .to_string()
                .into(),
        );
        o.set("accountEnabled", true.into());
        o.set("appRoleAssignmentRequired", rng.gen_bool(0.3).into());
        o.set("servicePrincipalType", "Application".into());
        o.set(
            "servicePrincipalNames",
            Value::List(vec![format!("api://app-{app}").into()]),
        );
        o.set(
            "tags",
            Value::List(vec!["WindowsAzureActiveDirectoryIntegratedApp".into()]),
        );
        o.set("publisherName", "Contoso".into());
        if rng.gen_bool(0.5) {
            let grant_id = ObjectId(self.id(i).0 ^ 0x5151);
            o.add_link(
                LinkKind::OAuth2PermissionGrants,
                Link {
                    target: grant_id,
                    data: Some(Value::Map(
                        [
                            ("consentType".to_owned(), "AllPrincipals".into()),
                            ("scope".to_owned(), "User.Read".into()),
                        ]
                        .into(),
                    )),
                },
            );
        }
    }
}

fn fill_application(o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
    o.set("displayName", format!("App {i}").into());
    o.set(
        "appId",
        format!("{:08x}-0000-4000-8000-{:012x}", rng.gen::<u32>(), i).into(),
    );
    o.set("signInAudience", "AzureADMyOrg".into());
    o.set(
        "identifierUris",
        Value::List(vec![format!("api://app-{i}").into()]),
    );
    o.set("createdDateTime", "2024-01-01T00:00:00Z".into());
    o.set("publisherDomain", DOMAIN.into());
    o.set("isDeviceOnlyAuthSupported", false.into());
    o.set("tags", Value::List(vec![]));
}

fn fill_policy(o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
    o.set("displayName", format!("Require MFA {i}").into());
    o.set(
        "state",
        (if rng.gen_bool(0.8) {
            "enabled"
        } else {
            "enabledForReportingButNotEnforced"
        })
        .into(),
    );
    o.set(
        "conditions",
        Value::from_json(&serde_json::json!({
            "users": {"includeUsers": ["All"], "excludeUsers": []},
            "applications": {"includeApplications": ["All"]},
            "clientAppTypes": ["all"]
        })),
    );
    o.set(
        "grantControls",
        Value::from_json(&serde_json::json!({"operator": "OR", "builtInControls": ["mfa"]})),
    );
}

fn fill_location(o: &mut DirectoryObject, i: u64, rng: &mut ChaCha8Rng) {
    o.set("displayName", format!("Office network {i}").into());
    o.set("@odata.type", "#microsoft.graph.ipNamedLocation".into());
    o.set("isTrusted", rng.gen_bool(0.5).into());
    o.set(
        "ipRanges",
        Value::from_json(&serde_json::json!([{
            "@odata.type": "#microsoft.graph.iPv4CidrRange",
            "cidrAddress": format!("10.{}.{}.0/24", i % 250, rng.gen_range(0..250))
        }])),
    );
}

fn fill_methods_policy(o: &mut DirectoryObject) {
    o.set("displayName", "Authentication Methods Policy".into());
    for (k, m) in rewind_common::properties::AUTHENTICATION_METHOD_CONFIGURATIONS
        .iter()
        .enumerate()
    {
        o.set(
            m,
            Value::from_json(
                &serde_json::json!({"id": m, "state": if k % 2 == 0 {"enabled"} else {"disabled"}}),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tenant_and_mix() {
        let g = TenantGenerator::new(TenantSpec::new(2_000, 7));
        assert_eq!(g.backup_object(5), g.backup_object(5));
        let users = (0..g.backup_count())
            .filter(|&i| g.type_layout().type_of(i) == ObjectType::User)
            .count();
        assert!(users * 100 / g.backup_count() as usize >= 84);
        let u = g.backup_object(0);
        assert!(
            u.attributes.len() >= 30,
            "a user has {} properties",
            u.attributes.len()
        );
        let fates: Vec<Fate> = (0..g.backup_count()).map(|i| g.fate(i)).collect();
        assert!(fates.contains(&Fate::Changed) && fates.contains(&Fate::SoftDeleted));
        assert_eq!(
            g.type_layout().type_of(g.backup_count() - 1),
            ObjectType::Organization
        );
        assert!(g.current_object(g.current_count()).is_none());
    }
}
