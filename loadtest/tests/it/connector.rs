//! The Graph connector of `rewind-common` against the tenant simulator over real HTTP: full
//! capture equals the loaded ground truth, every write kind singly and in batches, idempotent
//! answers, authentication and token refresh, throttling and fault storms, empty pages and
//! hard-deleted objects.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rewind_common::connector::write::StepResult;
use rewind_common::connector::{
    capture_snapshot, ConnectorError, ErrorClass, GraphConnector, GraphSettings,
};
use rewind_common::graph_json::to_graph_json;
use rewind_common::plan::{action_id, plan_with, CurrentValues, PlanScope, PlannedStep, Step};
use rewind_common::properties::{self, PER_USER_MFA_STATE};
use rewind_common::snapshot::{
    load_snapshot, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
};
use rewind_common::{
    DirectoryObject, Lifecycle, Link, LinkKind, ObjectId, ObjectType, Scope, SourceOfAuthority,
    Value,
};
use rewind_loadtest::dirsim::DirsimConfig;
use serde_json::{json, Value as Json};

use crate::dirsim::support::{id, service_principal, user, Sim};

const ORG: &str = "0f0f0f0f-0000-4000-8000-000000000001";

/// A started simulator with tenant `name` (client `app-{name}`, secret `secret-{name}`, the
/// organization id [`ORG`]).
fn sim_with(config: DirsimConfig, name: &str) -> Sim {
    let sim = Sim::with(config);
    let r = sim.post(
        "/_admin/tenants",
        &json!({"tenant": name, "clientId": format!("app-{name}"),
                "clientSecret": format!("secret-{name}"), "organizationId": ORG}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    sim
}

pub(crate) fn settings(sim: &Sim, tenant: &str, secret: &str) -> GraphSettings {
    let mut s = GraphSettings::new(
        sim.base.clone(),
        format!("{}/{tenant}/v1.0", sim.base),
        tenant,
        format!("app-{tenant}"),
        secret,
    );
    s.min_backoff = Duration::from_millis(50);
    s.max_backoff = Duration::from_secs(2);
    s.max_attempts = 12;
    s
}

pub(crate) fn connector(sim: &Sim, tenant: &str) -> GraphConnector {
    GraphConnector::new(settings(sim, tenant, &format!("secret-{tenant}"))).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The bulk-load line of an object.
fn line(o: &DirectoryObject) -> Json {
    let mut j = to_graph_json(o);
    j["type"] = Json::String(o.object_type.as_str().into());
    j
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|i| Value::from(*i)).collect())
}

fn map(items: &[(&str, Value)]) -> Value {
    Value::Map(
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// How many objects of each collection type a generated tenant has.
struct Counts {
    users: usize,
    groups: usize,
    apps: usize,
    sps: usize,
    policies: usize,
    locations: usize,
}

/// A seeded tenant: the counted objects with links (between active objects only, as Graph
/// lists them), soft-deleted and synced objects, and the three singletons, in canonical form
/// and id order.
fn generate(seed: u64, c: &Counts) -> Vec<DirectoryObject> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let now = now();
    let mut out = Vec::new();
    let new_id = |rng: &mut ChaCha8Rng| ObjectId(rng.gen::<u128>());
    let deleted = |rng: &mut ChaCha8Rng, share: f64| -> Lifecycle {
        if rng.gen_bool(share) {
            Lifecycle::SoftDeleted {
                deleted_at: now - rng.gen_range(3600..20 * 86_400),
            }
        } else {
            Lifecycle::Active
        }
    };
    let mut active_users = Vec::new();
    for n in 0..c.users {
        let mut u = DirectoryObject::new(new_id(&mut rng), ObjectType::User);
        u.set("displayName", Value::from(format!("User {n}")));
        u.set(
            "userPrincipalName",
            Value::from(format!("user{n}@contoso.example")),
        );
        u.set("accountEnabled", Value::Bool(rng.gen_bool(0.9)));
        u.set("department", s(["Sales", "IT", "Ops", "Legal"][n % 4]));
        u.set(
            "businessPhones",
            if rng.gen_bool(0.5) {
                list(&["+1 555 0100"])
            } else {
                Value::List(Vec::new())
            },
        );
        if rng.gen_bool(0.3) {
            u.set("jobTitle", Value::from(format!("Title {}", n % 17)));
        }
        if rng.gen_bool(0.1) {
            u.set("otherMails", list(&["a@example.org", "b@example.org"]));
            u.set(
                "employeeOrgData",
                map(&[
                    ("division", s("East")),
                    ("costCenter", Value::Int(n as i64)),
                ]),
            );
        }
        if rng.gen_bool(0.2) {
            u.set("perUserMfaState", s("enforced"));
        }
        if rng.gen_bool(0.05) {
            u.source = SourceOfAuthority::OnPremises;
        }
        u.lifecycle = deleted(&mut rng, 0.03);
        if u.lifecycle.is_active() {
            active_users.push(u.id);
        }
        out.push(u);
    }
    let mut group_ids = Vec::new();
    for n in 0..c.groups {
        let mut g = DirectoryObject::new(new_id(&mut rng), ObjectType::Group);
        g.set("displayName", Value::from(format!("Group {n}")));
        g.set("securityEnabled", Value::Bool(true));
        g.set("mailEnabled", Value::Bool(false));
        g.set(
            "groupTypes",
            if n % 3 == 0 {
                list(&["Unified"])
            } else {
                Value::List(Vec::new())
            },
        );
        if rng.gen_bool(0.5) {
            g.set("description", Value::from(format!("Team {n}")));
            g.set("visibility", s("Private"));
        }
        g.lifecycle = deleted(&mut rng, 0.05);
        if g.lifecycle.is_active() {
            group_ids.push(g.id);
        }
        out.push(g);
    }
    // Links only between active objects (Graph does not list soft-deleted ones).
    let pick = |rng: &mut ChaCha8Rng, from: &[ObjectId], n: usize| -> Vec<Link> {
        (0..n)
            .map(|_| Link::to(from[rng.gen_range(0..from.len())]))
            .collect()
    };
    for g in out
        .iter_mut()
        .filter(|o| o.object_type == ObjectType::Group && o.lifecycle.is_active())
    {
        let n = rng.gen_range(0..20);
        let mut members = pick(&mut rng, &active_users, n);
        if rng.gen_bool(0.2) {
            members.extend(
                pick(&mut rng, &group_ids, 2)
                    .into_iter()
                    .filter(|l| l.target != g.id),
            );
        }
        g.set_links(LinkKind::Members, members);
        let n = rng.gen_range(0..3);
        g.set_links(LinkKind::Owners, pick(&mut rng, &active_users, n));
    }
    for n in 0..c.apps {
        let mut a = DirectoryObject::new(new_id(&mut rng), ObjectType::Application);
        a.set("displayName", Value::from(format!("App {n}")));
        a.set("appId", Value::from(ObjectId(rng.gen()).to_string()));
        a.set("signInAudience", s("AzureADMyOrg"));
        a.set("tags", list(&["hr", "internal"]));
        a.set("createdDateTime", s("2025-01-02T03:04:05Z"));
        a.lifecycle = deleted(&mut rng, 0.05);
        if a.lifecycle.is_active() {
            let k = rng.gen_range(0..3);
            a.set_links(LinkKind::Owners, pick(&mut rng, &active_users, k));
        }
        out.push(a);
    }
    let sp_ids: Vec<ObjectId> = (0..c.sps).map(|_| new_id(&mut rng)).collect();
    let active_sps: Vec<ObjectId> = sp_ids
        .iter()
        .copied()
        // About one in twenty is in the recycle bin.
        .filter(|i| i.0 % 20 != 0)
        .collect();
    for (n, sp_id) in sp_ids.iter().enumerate() {
        let mut sp = DirectoryObject::new(*sp_id, ObjectType::ServicePrincipal);
        sp.set("displayName", Value::from(format!("SP {n}")));
        sp.set("appId", Value::from(ObjectId(rng.gen()).to_string()));
        sp.set("accountEnabled", Value::Bool(true));
        sp.set("servicePrincipalNames", list(&["api://example"]));
        if !active_sps.contains(sp_id) {
            sp.lifecycle = Lifecycle::SoftDeleted {
                deleted_at: now - 86_400,
            };
        } else {
            let k = rng.gen_range(0..2);
            sp.set_links(LinkKind::Owners, pick(&mut rng, &active_users, k));
            let mut grants = Vec::new();
            for r in 0..rng.gen_range(0..3usize) {
                let resource = active_sps[(n + r + 1) % active_sps.len()];
                grants.push(Link {
                    target: new_id(&mut rng),
                    data: Some(map(&[
                        ("consentType", s("AllPrincipals")),
                        ("resourceId", Value::from(resource.to_string())),
                        ("scope", Value::from(format!("User.Read Scope{r}"))),
                    ])),
                });
            }
            sp.set_links(LinkKind::OAuth2PermissionGrants, grants);
            let mut assignments = Vec::new();
            for _ in 0..rng.gen_range(0..4) {
                let principal = active_users[rng.gen_range(0..active_users.len())];
                assignments.push(Link {
                    target: new_id(&mut rng),
                    data: Some(map(&[
                        ("principalId", Value::from(principal.to_string())),
                        ("appRoleId", Value::from(ObjectId(rng.gen()).to_string())),
                        ("principalType", s("User")),
                    ])),
                });
            }
            sp.set_links(LinkKind::AppRoleAssignedTo, assignments);
        }
        out.push(sp);
    }
    for n in 0..c.policies {
        let mut p = DirectoryObject::new(new_id(&mut rng), ObjectType::ConditionalAccessPolicy);
        p.set("displayName", Value::from(format!("Policy {n}")));
        p.set("state", s(if n % 2 == 0 { "enabled" } else { "disabled" }));
        p.set(
            "conditions",
            map(&[("users", map(&[("includeUsers", list(&["All"]))]))]),
        );
        p.set(
            "grantControls",
            map(&[("operator", s("OR")), ("builtInControls", list(&["mfa"]))]),
        );
        p.lifecycle = deleted(&mut rng, 0.12);
        out.push(p);
    }
    for n in 0..c.locations {
        let mut l = DirectoryObject::new(new_id(&mut rng), ObjectType::NamedLocation);
        l.set("displayName", Value::from(format!("Location {n}")));
        if n % 2 == 0 {
            l.set("@odata.type", s("#microsoft.graph.ipNamedLocation"));
            l.set("isTrusted", Value::Bool(true));
            l.set(
                "ipRanges",
                Value::List(vec![map(&[
                    ("@odata.type", s("#microsoft.graph.iPv4CidrRange")),
                    ("cidrAddress", Value::from(format!("10.{n}.0.0/16"))),
                ])]),
            );
        } else {
            l.set("@odata.type", s("#microsoft.graph.countryNamedLocation"));
            l.set("countriesAndRegions", list(&["NO", "SE"]));
            l.set("includeUnknownCountriesAndRegions", Value::Bool(false));
        }
        l.lifecycle = deleted(&mut rng, 0.1);
        out.push(l);
    }
    let mut methods = DirectoryObject::new(
        ObjectId::for_singleton("authenticationMethodsPolicy"),
        ObjectType::AuthenticationMethodsPolicy,
    );
    methods.set("displayName", s("Authentication Methods Policy"));
    methods.set("email", map(&[("state", s("enabled"))]));
    methods.set(
        "fido2",
        map(&[
            ("state", s("disabled")),
            ("isAttestationEnforced", Value::Bool(true)),
        ]),
    );
    methods.set("sms", map(&[("state", s("enabled"))]));
    out.push(methods);
    let mut authz = DirectoryObject::new(
        ObjectId::for_singleton("authorizationPolicy"),
        ObjectType::AuthorizationPolicy,
    );
    authz.set("displayName", s("Authorization Policy"));
    authz.set("blockMsolPowerShell", Value::Bool(false));
    authz.set("guestUserRoleId", s("10dae51f-b6af-4016-8d66-8c2a99b929b3"));
    out.push(authz);
    let mut org = DirectoryObject::new(ORG.parse().unwrap(), ObjectType::Organization);
    org.set("displayName", s("Contoso"));
    org.set("mfaEnabled", Value::Bool(false));
    org.set("mfaAvailableMethods", list(&["sms", "app"]));
    out.push(org);
    for o in &mut out {
        o.normalize();
    }
    out.sort_by_key(|o| o.id);
    out
}

fn load(sim: &Sim, tenant: &str, objects: &[DirectoryObject]) {
    let lines: Vec<Json> = objects.iter().map(line).collect();
    for chunk in lines.chunks(5000) {
        sim.load(tenant, chunk);
    }
}

/// Captures the tenant as a sealed snapshot and reads every object back.
fn capture_all(conn: &GraphConnector, tenant: &str) -> Vec<DirectoryObject> {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalShardStore::open(dir.path()).unwrap();
    let info = SnapshotInfo {
        tenant: tenant.into(),
        snapshot_id: "s1".into(),
        kind: SnapshotKind::Backup,
        created_at: now(),
        not_captured: Vec::new(),
    };
    let manifest = capture_snapshot(conn, &store, &info, ShardLayout::new(4)).unwrap();
    let loaded = load_snapshot(&store, tenant, "s1").unwrap();
    assert_eq!(loaded.manifest, manifest);
    loaded.decode_all().unwrap()
}

/// An object as a capture from Graph holds it: an active user has a per-user MFA state
/// (`disabled` unless set), a soft-deleted one none (Graph serves it only for active users);
/// the organization has no legacy MFA settings (no Graph API has them).
fn as_graph_holds(o: &DirectoryObject) -> DirectoryObject {
    let mut o = o.clone();
    match o.object_type {
        ObjectType::User if o.lifecycle.is_active() && o.get(PER_USER_MFA_STATE).is_none() => {
            o.set(PER_USER_MFA_STATE, s("disabled"));
        }
        ObjectType::User if o.lifecycle.is_active() => {}
        ObjectType::User => {
            o.set(PER_USER_MFA_STATE, Value::Null);
        }
        ObjectType::Organization => {
            for def in properties::properties(ObjectType::Organization) {
                if def.graph == properties::GraphHome::Nowhere {
                    o.set(def.name, Value::Null);
                }
            }
        }
        _ => {}
    }
    o
}

fn assert_same(captured: &[DirectoryObject], truth: &[DirectoryObject]) {
    let by_id: BTreeMap<ObjectId, &DirectoryObject> = captured.iter().map(|o| (o.id, o)).collect();
    for t in truth {
        let c = by_id
            .get(&t.id)
            .unwrap_or_else(|| panic!("{} {} not captured", t.object_type, t.id));
        assert_eq!(**c, as_graph_holds(t), "{} {} differs", t.object_type, t.id);
    }
    assert_eq!(captured.len(), truth.len());
}

const TEN_THOUSAND: Counts = Counts {
    users: 8_000,
    groups: 1_200,
    apps: 350,
    sps: 400,
    policies: 25,
    locations: 22,
};

#[test]
fn full_capture_of_10000_objects_equals_the_ground_truth() {
    let sim = sim_with(DirsimConfig::default(), "contoso");
    let truth = generate(7, &TEN_THOUSAND);
    assert_eq!(truth.len(), 10_000);
    load(&sim, "contoso", &truth);
    let conn = connector(&sim, "contoso");
    let started = std::time::Instant::now();
    let (writers, stats) = conn.capture(ShardLayout::new(3)).unwrap();
    // For the reader of the test output only (a debug build; never asserted).
    eprintln!(
        "capture: {} objects, {} links, {} requests, {} bytes in {:?}",
        stats.total_objects(),
        stats.links,
        stats.requests,
        stats.bytes,
        started.elapsed()
    );
    assert_eq!(writers.len(), 8);
    assert_eq!(stats.total_objects(), 10_000);
    let users = truth
        .iter()
        .filter(|o| o.object_type == ObjectType::User)
        .count() as u64;
    assert_eq!(stats.objects[&ObjectType::User], users);
    let links: usize = truth
        .iter()
        .flat_map(|o| o.links.iter())
        .map(|s| s.links.len())
        .sum();
    assert_eq!(stats.links, links as u64);
    assert!(stats.requests > 0 && stats.bytes > 0);
    let captured = capture_all(&conn, "contoso");
    assert_same(&captured, &truth);
    assert!(truth.iter().any(|o| !o.lifecycle.is_active()));
    assert!(truth
        .iter()
        .any(|o| o.source == SourceOfAuthority::OnPremises));
    assert!(truth
        .iter()
        .any(|o| !o.links_of(LinkKind::OAuth2PermissionGrants).is_empty()));
}

#[test]
fn empty_pages_with_next_links_are_followed() {
    let sim = sim_with(DirsimConfig::default(), "contoso");
    sim.settings(json!({"max_scan_per_page": 5}));
    let mut truth = generate(
        11,
        &Counts {
            users: 150,
            groups: 10,
            apps: 3,
            sps: 4,
            policies: 2,
            locations: 2,
        },
    );
    // A long run of soft-deleted users in id order: the active listing gets empty pages.
    let mut seen = 0;
    for o in truth
        .iter_mut()
        .filter(|o| o.object_type == ObjectType::User)
    {
        seen += 1;
        if (40..100).contains(&seen) {
            o.lifecycle = Lifecycle::SoftDeleted {
                deleted_at: now() - 7200,
            };
        }
    }
    // Soft-deleted users are listed by nobody: drop links to them.
    let deleted: Vec<ObjectId> = truth
        .iter()
        .filter(|o| !o.lifecycle.is_active())
        .map(|o| o.id)
        .collect();
    for o in &mut truth {
        for kind in [LinkKind::Members, LinkKind::Owners] {
            let keep: Vec<Link> = o
                .links_of(kind)
                .iter()
                .filter(|l| !deleted.contains(&l.target))
                .cloned()
                .collect();
            o.set_links(kind, keep);
        }
        let keep: Vec<Link> = o
            .links_of(LinkKind::AppRoleAssignedTo)
            .iter()
            .filter(|l| match &l.data {
                Some(Value::Map(m)) => !deleted
                    .iter()
                    .any(|d| m.get("principalId") == Some(&Value::from(d.to_string()))),
                _ => true,
            })
            .cloned()
            .collect();
        o.set_links(LinkKind::AppRoleAssignedTo, keep);
    }
    load(&sim, "contoso", &truth);
    // The scenario really has an empty page that carries a next link.
    let c = sim.client("contoso");
    let mut next = Some(format!("{}/users?$top=999&$select=id", c.graph));
    let mut empty_with_next = 0;
    while let Some(url) = next {
        let r = c.get(&url);
        assert_eq!(r.status, 200);
        next = r.next_link();
        if r.values().is_empty() && next.is_some() {
            empty_with_next += 1;
        }
    }
    assert!(empty_with_next > 0);
    let conn = connector(&sim, "contoso");
    let captured = capture_all(&conn, "contoso");
    assert_same(&captured, &truth);
    // Small pages: member lists read in a batch continue through their next links.
    assert!(truth
        .iter()
        .any(|o| o.links_of(LinkKind::Members).len() > 4));
    let mut small = settings(&sim, "contoso", "secret-contoso");
    small.page_size = 4;
    let conn = GraphConnector::new(small).unwrap();
    let captured = capture_all(&conn, "contoso");
    assert_same(&captured, &truth);
}

/// The tenant and job of the steps these tests apply.
pub(crate) const SCOPE: PlanScope<'static> = PlanScope {
    tenant: "contoso",
    job: "test",
};

pub(crate) fn step(s: Step) -> PlannedStep {
    PlannedStep {
        action_id: action_id(SCOPE, &s),
        step: s,
        note: None,
    }
}

pub(crate) fn uid(n: u64) -> ObjectId {
    id(n).parse().unwrap()
}

/// A small tenant for writes: users 1..=40, group 100 (members 1, 2), service principals 300
/// (client, grant 900 on 301) and 301 (resource, assignment 950 for user 1), policy 500,
/// named location 600, the authorization policy and the organization.
pub(crate) fn write_scene() -> Sim {
    let sim = sim_with(DirsimConfig::default(), "contoso");
    let mut objects: Vec<Json> = (1..=40).map(|n| user(n, "Sales")).collect();
    objects.push(
        json!({"type": "group", "id": id(100), "displayName": "G", "securityEnabled": true,
        "mailEnabled": false, "groupTypes": [], "members": [id(1), id(2)]}),
    );
    let mut client = service_principal(300);
    client["oauth2PermissionGrants"] = json!([{"id": id(900), "consentType": "AllPrincipals", "resourceId": id(301), "scope": "User.Read"}]);
    objects.push(client);
    let mut resource = service_principal(301);
    resource["appRoleAssignedTo"] = json!([{"id": id(950), "principalId": id(1), "appRoleId": id(77), "principalType": "User"}]);
    objects.push(resource);
    objects.push(
        json!({"type": "conditionalAccessPolicy", "id": id(500), "displayName": "P",
        "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}}}),
    );
    objects.push(
        json!({"type": "namedLocation", "id": id(600), "displayName": "L",
        "@odata.type": "#microsoft.graph.ipNamedLocation", "isTrusted": true}),
    );
    objects.push(
        json!({"type": "authorizationPolicy", "id": "authorizationPolicy",
        "displayName": "Authorization Policy", "blockMsolPowerShell": false}),
    );
    objects.push(
        json!({"type": "organization", "id": ORG, "displayName": "Contoso", "mfaEnabled": false}),
    );
    sim.load("contoso", &objects);
    sim
}

fn grant_data() -> Value {
    map(&[
        ("consentType", s("AllPrincipals")),
        ("resourceId", Value::from(id(301))),
        ("scope", s("User.Read")),
    ])
}

fn assignment_data() -> Value {
    map(&[
        ("principalId", Value::from(id(1))),
        ("appRoleId", Value::from(id(77))),
        ("principalType", s("User")),
    ])
}

fn members(c: &crate::dirsim::support::Client<'_>, group: u64) -> Vec<String> {
    c.get_all(&format!("/groups/{}/members?$select=id", id(group)))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn apply_one(conn: &GraphConnector, s: Step) -> StepResult {
    let outcomes = conn.apply_steps(&[step(s.clone())]);
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].action_id, action_id(SCOPE, &s));
    outcomes[0].result.clone()
}

#[test]
fn every_write_kind_applies_singly() {
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    let user_t = ObjectType::User;
    let sp_t = ObjectType::ServicePrincipal;

    assert_eq!(c.delete(&format!("/users/{}", id(2))).status, 204);
    assert_eq!(
        apply_one(
            &conn,
            Step::Restore {
                id: uid(2),
                object_type: user_t
            }
        ),
        StepResult::Applied
    );
    assert_eq!(c.get(&format!("/users/{}", id(2))).status, 200);

    c.patch(&format!("/users/{}", id(1)), &json!({"jobTitle": "Boss"}));
    let r = apply_one(
        &conn,
        Step::Update {
            id: uid(1),
            object_type: user_t,
            properties: vec![
                ("department".into(), s("Ops")),
                ("jobTitle".into(), Value::Null),
            ],
        },
    );
    assert_eq!(r, StepResult::Applied);
    let u = c
        .get(&format!("/users/{}?$select=department,jobTitle", id(1)))
        .body;
    assert_eq!(u["department"], "Ops");
    assert!(u["jobTitle"].is_null(), "null clears: {u}");

    let g = ObjectType::Group;
    let add = Step::AddLink {
        id: uid(100),
        object_type: g,
        kind: LinkKind::Members,
        target: uid(3),
        data: None,
    };
    assert_eq!(apply_one(&conn, add), StepResult::Applied);
    let remove = Step::RemoveLink {
        id: uid(100),
        object_type: g,
        kind: LinkKind::Members,
        target: uid(1),
    };
    assert_eq!(apply_one(&conn, remove), StepResult::Applied);
    let mut m = members(&c, 100);
    m.sort();
    assert_eq!(m, vec![id(2), id(3)]);

    let remove_grant = Step::RemoveLink {
        id: uid(300),
        object_type: sp_t,
        kind: LinkKind::OAuth2PermissionGrants,
        target: uid(900),
    };
    assert_eq!(apply_one(&conn, remove_grant), StepResult::Applied);
    assert_eq!(
        c.get(&format!("/oauth2PermissionGrants/{}", id(900)))
            .status,
        404
    );
    let add_grant = Step::AddLink {
        id: uid(300),
        object_type: sp_t,
        kind: LinkKind::OAuth2PermissionGrants,
        target: uid(900),
        data: Some(grant_data()),
    };
    assert_eq!(apply_one(&conn, add_grant), StepResult::Applied);
    let grants = c.get_all("/oauth2PermissionGrants");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["clientId"], id(300));
    assert_eq!(grants[0]["resourceId"], id(301));
    assert_eq!(grants[0]["scope"], "User.Read");
    assert_eq!(grants[0]["consentType"], "AllPrincipals");

    let assigned = format!("/servicePrincipals/{}/appRoleAssignedTo", id(301));
    let remove_assignment = Step::RemoveLink {
        id: uid(301),
        object_type: sp_t,
        kind: LinkKind::AppRoleAssignedTo,
        target: uid(950),
    };
    assert_eq!(apply_one(&conn, remove_assignment), StepResult::Applied);
    assert!(c.get_all(&assigned).is_empty());
    let add_assignment = Step::AddLink {
        id: uid(301),
        object_type: sp_t,
        kind: LinkKind::AppRoleAssignedTo,
        target: uid(950),
        data: Some(assignment_data()),
    };
    assert_eq!(apply_one(&conn, add_assignment), StepResult::Applied);
    let a = c.get_all(&assigned);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["principalId"], id(1));
    assert_eq!(a[0]["appRoleId"], id(77));

    let authz = Step::Update {
        id: ObjectId::for_singleton("authorizationPolicy"),
        object_type: ObjectType::AuthorizationPolicy,
        properties: vec![("blockMsolPowerShell".into(), Value::Bool(true))],
    };
    assert_eq!(apply_one(&conn, authz), StepResult::Applied);
    assert_eq!(
        c.get("/policies/authorizationPolicy").body["blockMsolPowerShell"],
        true
    );
    let org = Step::Update {
        id: ORG.parse().unwrap(),
        object_type: ObjectType::Organization,
        properties: vec![("mfaEnabled".into(), Value::Bool(true))],
    };
    // No Graph API holds the legacy MFA settings: such a step fails for good, unsent.
    assert!(matches!(
        apply_one(&conn, org),
        StepResult::Failed { permanent: true, code, .. } if code == "noGraphApi"
    ));

    // A method configuration is written on its own URL, whole, as the backup holds it.
    let fido = Step::Update {
        id: ObjectId::for_singleton("authenticationMethodsPolicy"),
        object_type: ObjectType::AuthenticationMethodsPolicy,
        properties: vec![(
            "fido2".into(),
            Value::Map(
                [
                    (
                        "@odata.type".to_owned(),
                        Value::from("#microsoft.graph.fido2AuthenticationMethodConfiguration"),
                    ),
                    ("state".to_owned(), Value::from("enabled")),
                    ("isAttestationEnforced".to_owned(), Value::Bool(false)),
                ]
                .into(),
            ),
        )],
    };
    assert_eq!(apply_one(&conn, fido), StepResult::Applied);
    let config =
        c.get("/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2");
    assert_eq!(config.status, 200);
    assert_eq!(
        (
            &config.body["id"],
            &config.body["state"],
            &config.body["isAttestationEnforced"]
        ),
        (&json!("fido2"), &json!("enabled"), &json!(false))
    );
    let routes = sim.counters()["requests"].to_string();
    assert!(
        routes.contains("authenticationMethodConfigurations"),
        "patched on its own URL: {routes}"
    );
    let two = Step::Update {
        id: ObjectId::for_singleton("authenticationMethodsPolicy"),
        object_type: ObjectType::AuthenticationMethodsPolicy,
        properties: vec![
            ("sms".into(), Value::Map(Default::default())),
            ("email".into(), Value::Map(Default::default())),
        ],
    };
    assert!(
        matches!(apply_one(&conn, two), StepResult::Failed { .. }),
        "the planner never puts two configurations in one step"
    );

    assert_eq!(
        apply_one(
            &conn,
            Step::SoftDelete {
                id: uid(4),
                object_type: user_t
            }
        ),
        StepResult::Applied
    );
    assert_eq!(c.get(&format!("/users/{}", id(4))).status, 404);
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(4))).status,
        200
    );
    assert_eq!(
        apply_one(
            &conn,
            Step::SoftDelete {
                id: uid(301),
                object_type: sp_t
            }
        ),
        StepResult::Applied
    );
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(301)))
            .status,
        200
    );

    let ca = ObjectType::ConditionalAccessPolicy;
    let policy = format!("/identity/conditionalAccess/policies/{}", id(500));
    assert_eq!(
        apply_one(
            &conn,
            Step::SoftDelete {
                id: uid(500),
                object_type: ca
            }
        ),
        StepResult::Applied
    );
    assert_eq!(c.get(&policy).status, 404);
    assert_eq!(
        apply_one(
            &conn,
            Step::Restore {
                id: uid(500),
                object_type: ca
            }
        ),
        StepResult::Applied
    );
    let update = Step::Update {
        id: uid(500),
        object_type: ca,
        properties: vec![("state".into(), s("disabled"))],
    };
    assert_eq!(apply_one(&conn, update), StepResult::Applied);
    assert_eq!(c.get(&policy).body["state"], "disabled");

    let nl = ObjectType::NamedLocation;
    assert_eq!(
        apply_one(
            &conn,
            Step::SoftDelete {
                id: uid(600),
                object_type: nl
            }
        ),
        StepResult::Applied
    );
    assert_eq!(
        c.get(&format!(
            "/identity/conditionalAccess/deletedItems/namedLocations/{}",
            id(600)
        ))
        .status,
        200
    );
    assert_eq!(
        apply_one(
            &conn,
            Step::Restore {
                id: uid(600),
                object_type: nl
            }
        ),
        StepResult::Applied
    );
    assert_eq!(
        c.get(&format!(
            "/identity/conditionalAccess/namedLocations/{}",
            id(600)
        ))
        .status,
        200
    );
}

/// 45 steps of every kind in three batches, a restore and the update of the same object among
/// them (the update depends on the restore).
fn batch_steps() -> Vec<PlannedStep> {
    let user_t = ObjectType::User;
    let mut steps = vec![
        Step::Restore {
            id: uid(5),
            object_type: user_t,
        },
        Step::Update {
            id: uid(5),
            object_type: user_t,
            properties: vec![("city".into(), s("Bergen"))],
        },
        Step::Restore {
            id: uid(6),
            object_type: user_t,
        },
        Step::AddLink {
            id: uid(100),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: uid(6),
            data: None,
        },
        Step::RemoveLink {
            id: uid(100),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: uid(2),
        },
        Step::RemoveLink {
            id: uid(300),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::OAuth2PermissionGrants,
            target: uid(900),
        },
        Step::RemoveLink {
            id: uid(301),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::AppRoleAssignedTo,
            target: uid(950),
        },
        Step::SoftDelete {
            id: uid(40),
            object_type: user_t,
        },
    ];
    for n in 10..=39u64 {
        steps.push(Step::Update {
            id: uid(n),
            object_type: user_t,
            properties: vec![("jobTitle".into(), Value::from(format!("T{n}")))],
        });
    }
    for n in 10..=16u64 {
        steps.push(Step::AddLink {
            id: uid(100),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: uid(n),
            data: None,
        });
    }
    steps.into_iter().map(step).collect()
}

fn check_batch_state(c: &crate::dirsim::support::Client<'_>) {
    assert_eq!(
        c.get(&format!("/users/{}?$select=city", id(5))).body["city"],
        "Bergen"
    );
    assert_eq!(c.get(&format!("/users/{}", id(6))).status, 200);
    assert_eq!(c.get(&format!("/users/{}", id(40))).status, 404);
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(40))).status,
        200
    );
    for n in 10..=39u64 {
        assert_eq!(
            c.get(&format!("/users/{}?$select=jobTitle", id(n))).body["jobTitle"],
            format!("T{n}")
        );
    }
    let mut m = members(c, 100);
    m.sort();
    let mut expected: Vec<String> = [1u64, 6]
        .iter()
        .chain((10..=16).collect::<Vec<_>>().iter())
        .map(|n| id(*n))
        .collect();
    expected.sort();
    assert_eq!(m, expected);
    assert!(c.get_all("/oauth2PermissionGrants").is_empty());
    assert!(c
        .get_all(&format!("/servicePrincipals/{}/appRoleAssignedTo", id(301)))
        .is_empty());
}

fn prepare_batch_scene(c: &crate::dirsim::support::Client<'_>) {
    assert_eq!(c.delete(&format!("/users/{}", id(5))).status, 204);
    assert_eq!(c.delete(&format!("/users/{}", id(6))).status, 204);
}

#[test]
fn steps_apply_in_batches_and_a_second_run_finds_them_in_state() {
    let sim = write_scene();
    let c = sim.client("contoso");
    prepare_batch_scene(&c);
    let conn = connector(&sim, "contoso");
    let steps = batch_steps();
    let before = conn.traffic().requests;
    let outcomes = conn.apply_steps(&steps);
    assert_eq!(outcomes.len(), steps.len());
    for (o, s) in outcomes.iter().zip(&steps) {
        assert_eq!(o.action_id, s.action_id);
        assert_eq!(o.result, StepResult::Applied, "{:?}", s.step);
    }
    assert_eq!(
        conn.traffic().requests - before,
        3,
        "45 steps go in three batches"
    );
    check_batch_state(&c);

    // Everything again: every step finds the directory already in its state (updates are
    // simply applied again).
    let outcomes = conn.apply_steps(&steps);
    for (o, s) in outcomes.iter().zip(&steps) {
        let expected = match s.step {
            Step::Update { .. } => StepResult::Applied,
            _ => StepResult::AlreadyInState,
        };
        assert_eq!(o.result, expected, "{:?}", s.step);
    }
    check_batch_state(&c);
}

/// A 409 on re-adding a grant is "already in state" only when the existing grant holds the
/// scope being added (as a set of permissions); any other scope is a permanent failure that
/// names both, and the grant is left as it is.
#[test]
fn a_grant_conflict_is_in_state_only_with_the_same_scope() {
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    let grant = format!("/oauth2PermissionGrants/{}", id(900));
    // (scope the directory holds, scope the step adds, in state?)
    for (held, wanted, in_state) in [
        ("User.Read", "User.Read", true),
        ("Mail.Read User.Read", "User.Read  Mail.Read", true),
        ("User.Read Mail.ReadWrite", "User.Read", false),
        ("User.Read", "User.Read Mail.Read", false),
        ("", "User.Read", false),
    ] {
        assert_eq!(c.patch(&grant, &json!({ "scope": held })).status, 204);
        let mut data = grant_data();
        if let Value::Map(m) = &mut data {
            m.insert("scope".into(), s(wanted));
        }
        let r = apply_one(
            &conn,
            Step::AddLink {
                id: uid(300),
                object_type: ObjectType::ServicePrincipal,
                kind: LinkKind::OAuth2PermissionGrants,
                target: uid(901),
                data: Some(data),
            },
        );
        if in_state {
            assert_eq!(r, StepResult::AlreadyInState, "{held:?} / {wanted:?}");
        } else {
            let StepResult::Failed {
                permanent,
                status,
                code,
                message,
            } = &r
            else {
                panic!("{held:?} / {wanted:?}: {r:?}");
            };
            assert!(*permanent);
            assert_eq!((*status, code.as_str()), (409, "grantScopeDiffers"));
            assert!(
                message.contains(&format!("{held:?}")) && message.contains(&format!("{wanted:?}")),
                "{message}"
            );
        }
        // Either way the grant is the one the directory held.
        let grants = c.get_all("/oauth2PermissionGrants");
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0]["scope"], held);
    }
}

/// A user created after the backup holds the userPrincipalName of a soft-deleted user: the
/// simulator refuses the restore as Graph does, and the plan that knows the current values
/// soft-deletes the newcomer first (saying so), so the restore succeeds.
#[test]
fn a_newcomer_holding_a_restored_users_name_is_deleted_first() {
    use rewind_common::report::{Change, RecoveryAction, ReportEntry};
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    let user_t = ObjectType::User;
    assert_eq!(c.delete(&format!("/users/{}", id(5))).status, 204);
    let mut newcomer = user(41, "Sales");
    newcomer["userPrincipalName"] = json!("USER5@contoso.example");
    sim.load("contoso", &[newcomer]);
    assert_eq!(c.get(&format!("/users/{}", id(1))).status, 200, "load adds");

    let restore = Step::Restore {
        id: uid(5),
        object_type: user_t,
    };
    let refused = apply_one(&conn, restore.clone());
    assert!(
        matches!(&refused, StepResult::Failed { permanent: true, status: 400, message, .. }
            if message.contains("userPrincipalName")),
        "{refused:?}"
    );

    let entry = |n: u64, change, action| ReportEntry {
        id: uid(n),
        object_type: user_t,
        display_name: format!("User {n}"),
        change,
        action,
        reason: None,
        changed_attributes: Vec::new(),
        changed_links: Vec::new(),
    };
    let entries = [
        entry(5, Change::SoftDeleted, RecoveryAction::Restore),
        entry(41, Change::Created, RecoveryAction::SoftDelete),
    ];
    let held = |n: u64, upn: &str| {
        let mut o = DirectoryObject::new(uid(n), user_t);
        assert!(o.set("userPrincipalName", Value::from(upn)));
        o
    };
    let current = CurrentValues::of_objects(&[
        held(5, "user5@contoso.example"),
        held(41, "USER5@contoso.example"),
    ]);
    let steps = plan_with(SCOPE, &entries, &current);
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[0].step,
        Step::SoftDelete {
            id: uid(41),
            object_type: user_t
        }
    );
    let note = steps[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("userPrincipalName"), "{note}");
    assert_eq!(steps[1].step, restore);
    // Applied together (one batch): the restore waits for the delete.
    let outcomes = conn.apply_steps(&steps);
    for o in &outcomes {
        assert_eq!(o.result, StepResult::Applied, "{o:?}");
    }
    assert_eq!(c.get(&format!("/users/{}", id(5))).status, 200);
    assert_eq!(c.get(&format!("/users/{}", id(41))).status, 404);
}

#[test]
fn idempotent_answers_are_success() {
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    let sp_t = ObjectType::ServicePrincipal;
    let g = ObjectType::Group;
    let steps = vec![
        // User 3 is active: restoring it is already done.
        Step::Restore {
            id: uid(3),
            object_type: ObjectType::User,
        },
        // User 1 is already a member of group 100 (400 Request_BadRequest on the $ref add).
        Step::AddLink {
            id: uid(100),
            object_type: g,
            kind: LinkKind::Members,
            target: uid(1),
            data: None,
        },
        // User 7 is not a member: removing the link finds it missing.
        Step::RemoveLink {
            id: uid(100),
            object_type: g,
            kind: LinkKind::Members,
            target: uid(7),
        },
        // The grant on resource 301 exists (409 on re-add).
        Step::AddLink {
            id: uid(300),
            object_type: sp_t,
            kind: LinkKind::OAuth2PermissionGrants,
            target: uid(901),
            data: Some(grant_data()),
        },
        // The assignment exists (400 on re-add).
        Step::AddLink {
            id: uid(301),
            object_type: sp_t,
            kind: LinkKind::AppRoleAssignedTo,
            target: uid(951),
            data: Some(assignment_data()),
        },
        // Unknown grant and assignment ids: already removed.
        Step::RemoveLink {
            id: uid(300),
            object_type: sp_t,
            kind: LinkKind::OAuth2PermissionGrants,
            target: uid(999),
        },
        Step::RemoveLink {
            id: uid(301),
            object_type: sp_t,
            kind: LinkKind::AppRoleAssignedTo,
            target: uid(998),
        },
        // Restore of an active policy; delete of a deleted named location.
        Step::Restore {
            id: uid(500),
            object_type: ObjectType::ConditionalAccessPolicy,
        },
    ];
    let outcomes = conn.apply_steps(&steps.iter().cloned().map(step).collect::<Vec<_>>());
    for (o, s) in outcomes.iter().zip(&steps) {
        assert_eq!(o.result, StepResult::AlreadyInState, "{s:?}");
    }
    assert_eq!(
        c.delete(&format!(
            "/identity/conditionalAccess/namedLocations/{}",
            id(600)
        ))
        .status,
        204
    );
    assert_eq!(c.delete(&format!("/users/{}", id(8))).status, 204);
    for s in [
        Step::SoftDelete {
            id: uid(600),
            object_type: ObjectType::NamedLocation,
        },
        Step::SoftDelete {
            id: uid(8),
            object_type: ObjectType::User,
        },
    ] {
        assert_eq!(apply_one(&conn, s), StepResult::AlreadyInState);
    }
    // Nothing changed.
    let mut m = members(&c, 100);
    m.sort();
    assert_eq!(m, vec![id(1), id(2)]);
    assert_eq!(c.get_all("/oauth2PermissionGrants").len(), 1);
    assert_eq!(
        c.get_all(&format!("/servicePrincipals/{}/appRoleAssignedTo", id(301)))
            .len(),
        1
    );
}

#[test]
fn hard_deleted_objects_fail_permanently_with_the_reason() {
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    assert_eq!(c.delete(&format!("/users/{}", id(7))).status, 204);
    assert_eq!(
        c.delete(&format!("/directory/deletedItems/{}", id(7)))
            .status,
        204
    );
    for s in [
        Step::Restore {
            id: uid(7),
            object_type: ObjectType::User,
        },
        Step::Update {
            id: uid(7),
            object_type: ObjectType::User,
            properties: vec![("city".into(), s("Oslo"))],
        },
        Step::SoftDelete {
            id: uid(7),
            object_type: ObjectType::User,
        },
        Step::AddLink {
            id: uid(100),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: uid(7),
            data: None,
        },
    ] {
        match apply_one(&conn, s.clone()) {
            StepResult::Failed {
                permanent,
                status,
                code,
                message,
            } => {
                assert!(permanent, "{s:?}");
                assert_eq!(status, 404, "{s:?}");
                assert_eq!(code, "Request_ResourceNotFound");
                assert!(!message.is_empty());
            }
            other => panic!("{s:?}: {other:?}"),
        }
    }
    // A user purged after its 30 days in the recycle bin is gone the same way.
    assert_eq!(c.delete(&format!("/users/{}", id(9))).status, 204);
    sim.advance_days(31);
    let r = apply_one(
        &conn,
        Step::Restore {
            id: uid(9),
            object_type: ObjectType::User,
        },
    );
    assert!(
        matches!(
            r,
            StepResult::Failed {
                permanent: true,
                status: 404,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn a_bad_secret_is_a_permanent_authentication_error() {
    let sim = write_scene();
    let settings = settings(&sim, "contoso", "not-the-secret");
    assert!(!format!("{settings:?}").contains("not-the-secret"));
    let conn = GraphConnector::new(settings).unwrap();
    assert!(!format!("{conn:?}").contains("not-the-secret"));
    let err = conn.authenticate().unwrap_err();
    match &err {
        ConnectorError::Auth { status, code, .. } => {
            assert_eq!(*status, 401);
            assert_eq!(code, "invalid_client");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(
        conn.traffic().token_requests,
        1,
        "a permanent error is not retried"
    );
    assert!(matches!(
        conn.capture(ShardLayout::new(0)),
        Err(ConnectorError::Auth { .. })
    ));
    let outcomes = conn.apply_steps(&[step(Step::SoftDelete {
        id: uid(3),
        object_type: ObjectType::User,
    })]);
    assert!(matches!(
        outcomes[0].result,
        StepResult::Failed {
            permanent: true,
            status: 401,
            ..
        }
    ));
    assert_eq!(c_status(&sim, 3), 200, "nothing was written");
}

fn c_status(sim: &Sim, n: u64) -> u16 {
    sim.client("contoso")
        .get(&format!("/users/{}", id(n)))
        .status
}

#[test]
fn tokens_are_renewed_before_they_expire() {
    let sim = write_scene();
    sim.settings(json!({"token_lifetime_secs": 2}));
    let conn = connector(&sim, "contoso");
    for n in 0..4u64 {
        let r = apply_one(
            &conn,
            Step::Update {
                id: uid(10 + n),
                object_type: ObjectType::User,
                properties: vec![("city".into(), Value::from(format!("C{n}")))],
            },
        );
        assert_eq!(r, StepResult::Applied);
        std::thread::sleep(Duration::from_millis(1200));
    }
    let t = conn.traffic();
    assert!(t.token_requests >= 3, "{t:?}");
    let c = sim.client("contoso");
    assert_eq!(
        c.get(&format!("/users/{}?$select=city", id(13))).body["city"],
        "C3"
    );
}

#[test]
fn a_401_refreshes_the_token_once_and_retries() {
    // A restarted simulator no longer knows the cached token: the next call gets a 401.
    let dir = tempfile::tempdir().unwrap();
    let config = DirsimConfig {
        state: Some(dir.path().join("state")),
        ..DirsimConfig::default()
    };
    let sim = sim_with(config.clone(), "contoso");
    sim.load("contoso", &[user(1, "Sales"), user(2, "IT")]);
    let conn = connector(&sim, "contoso");
    let update = |city: &str| Step::Update {
        id: uid(1),
        object_type: ObjectType::User,
        properties: vec![("city".into(), s(city))],
    };
    assert_eq!(apply_one(&conn, update("Oslo")), StepResult::Applied);
    assert_eq!(conn.traffic().token_requests, 1);
    let addr: std::net::SocketAddr = sim.base.trim_start_matches("http://").parse().unwrap();
    assert_eq!(sim.post("/_admin/save", &json!({})).status, 200);
    sim.stop();
    let sim = Sim::with(DirsimConfig {
        listen: addr,
        ..config
    });
    assert_eq!(apply_one(&conn, update("Rome")), StepResult::Applied);
    assert_eq!(conn.traffic().token_requests, 2);
    let c = sim.client("contoso");
    assert_eq!(
        c.get(&format!("/users/{}?$select=city", id(1))).body["city"],
        "Rome"
    );
}

#[test]
fn storms_of_429_are_survived() {
    let sim = write_scene();
    let c = sim.client("contoso");
    prepare_batch_scene(&c);
    // Writes: 10 per 2 s window; conditional access: 1 request per second, 429 without
    // Retry-After; reads: a small bucket.
    sim.settings(
        json!({"write_requests_per_window": 10, "write_window_secs": 2,
        "conditional_access_throttle": true, "read_units_per_10s": 40}),
    );
    let conn = connector(&sim, "contoso");
    let steps = batch_steps();
    let outcomes = conn.apply_steps(&steps);
    for (o, s) in outcomes.iter().zip(&steps) {
        assert!(o.result.is_success(), "{:?}: {:?}", s.step, o.result);
    }
    let counters = sim.counters();
    assert!(
        counters["throttled"]["write"].as_u64().unwrap() > 0,
        "{counters}"
    );
    // Every write went through exactly once (2 deletes setting the scene, 45 steps): an inner
    // request that succeeded was never sent again.
    assert_eq!(counters["writes"], 47, "{counters}");
    sim.settings(
        json!({"write_requests_per_window": null, "read_units_per_10s": null,
        "conditional_access_throttle": false}),
    );
    check_batch_state(&c);

    // A capture through the read bucket and the conditional-access limit.
    let truth = {
        let conn = connector(&sim, "contoso");
        capture_all(&conn, "contoso")
    };
    sim.settings(json!({"read_units_per_10s": 15, "conditional_access_throttle": true}));
    let mut conn_settings = settings(&sim, "contoso", "secret-contoso");
    conn_settings.page_size = 10;
    conn_settings.max_attempts = 30;
    let conn = GraphConnector::new(conn_settings).unwrap();
    let captured = capture_all(&conn, "contoso");
    assert_same(&captured, &truth);
    let counters = sim.counters();
    assert!(
        counters["throttled"]["read"].as_u64().unwrap() > 0,
        "{counters}"
    );
    assert!(
        counters["throttled"]["conditional_access"]
            .as_u64()
            .unwrap()
            > 0,
        "{counters}"
    );
}

#[test]
fn storms_of_503_and_dropped_connections_are_survived() {
    let sim = write_scene();
    let c = sim.client("contoso");
    prepare_batch_scene(&c);
    let truth_before = capture_all(&connector(&sim, "contoso"), "contoso");
    sim.settings(json!({"error_503_rate": 0.3, "retry_after_503_secs": 1, "drop_rate": 0.05}));
    let mut conn_settings = settings(&sim, "contoso", "secret-contoso");
    conn_settings.page_size = 10;
    conn_settings.max_attempts = 20;
    let conn = GraphConnector::new(conn_settings).unwrap();
    let captured = capture_all(&conn, "contoso");
    assert_same(&captured, &truth_before);
    let steps = batch_steps();
    let outcomes = conn.apply_steps(&steps);
    for (o, s) in outcomes.iter().zip(&steps) {
        assert!(o.result.is_success(), "{:?}: {:?}", s.step, o.result);
    }
    let counters = sim.counters();
    sim.settings(json!({"error_503_rate": 0.0, "drop_rate": 0.0}));
    assert!(counters["unavailable"].as_u64().unwrap() > 0, "{counters}");
    assert!(counters["dropped"].as_u64().unwrap() > 0, "{counters}");
    check_batch_state(&c);
}

#[test]
fn an_unreachable_directory_is_a_transient_failure() {
    // A port that nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut s = GraphSettings::new(
        base.clone(),
        format!("{base}/contoso/v1.0"),
        "contoso",
        "app-contoso",
        "secret-contoso",
    );
    s.max_attempts = 3;
    s.min_backoff = Duration::from_millis(10);
    let conn = GraphConnector::new(s).unwrap();
    let err = conn.capture(ShardLayout::new(0)).unwrap_err();
    assert!(matches!(err, ConnectorError::Transport(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        conn.traffic().token_requests,
        3,
        "retried up to max_attempts"
    );
    let steps: Vec<PlannedStep> = (1..=30)
        .map(|n| {
            step(Step::SoftDelete {
                id: uid(n),
                object_type: ObjectType::User,
            })
        })
        .collect();
    let outcomes = conn.apply_steps(&steps);
    assert_eq!(outcomes.len(), 30);
    for o in outcomes {
        assert!(
            matches!(
                o.result,
                StepResult::Failed {
                    permanent: false,
                    status: 0,
                    ..
                }
            ),
            "{o:?}"
        );
    }
}

#[test]
fn a_changed_grant_is_removed_then_re_added_in_one_batch() {
    let sim = write_scene();
    let c = sim.client("contoso");
    let conn = connector(&sim, "contoso");
    let sp_t = ObjectType::ServicePrincipal;
    let backup = map(&[
        ("consentType", s("AllPrincipals")),
        ("resourceId", Value::from(id(301))),
        ("scope", s("User.Read Mail.Read")),
    ]);
    let steps = vec![
        step(Step::RemoveLink {
            id: uid(300),
            object_type: sp_t,
            kind: LinkKind::OAuth2PermissionGrants,
            target: uid(900),
        }),
        step(Step::AddLink {
            id: uid(300),
            object_type: sp_t,
            kind: LinkKind::OAuth2PermissionGrants,
            target: uid(900),
            data: Some(backup),
        }),
    ];
    let before = conn.traffic().requests;
    let outcomes = conn.apply_steps(&steps);
    assert_eq!(conn.traffic().requests - before, 1, "one batch");
    for o in &outcomes {
        assert_eq!(o.result, StepResult::Applied);
    }
    let grants = c.get_all("/oauth2PermissionGrants");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["scope"], "User.Read Mail.Read");
    assert_eq!(grants[0]["clientId"], id(300));
}

/// The per-user MFA state is captured from beta (every active user, more than one `$batch`'s
/// worth) and written back by its own beta request, beside the user's v1.0 `PATCH`.
#[test]
fn per_user_mfa_state_round_trips_through_beta() {
    let sim = sim_with(DirsimConfig::default(), "contoso");
    let mut objects: Vec<Json> = (1..=45).map(|n| user(n, "Sales")).collect();
    objects[0]["perUserMfaState"] = json!("enforced");
    objects[1]["perUserMfaState"] = json!("enabled");
    objects[2]["onPremisesSyncEnabled"] = json!(true);
    objects[2]["perUserMfaState"] = json!("enforced");
    sim.load("contoso", &objects);
    let c = sim.client("contoso");
    assert_eq!(c.delete(&format!("/users/{}", id(45))).status, 204);
    let conn = connector(&sim, "contoso");

    let state = |objects: &[DirectoryObject], n: u64| {
        objects
            .iter()
            .find(|o| o.id == uid(n))
            .and_then(|o| o.get(PER_USER_MFA_STATE).cloned())
    };
    let backup = capture_all(&conn, "contoso");
    assert_eq!(state(&backup, 1), Some(s("enforced")));
    assert_eq!(state(&backup, 2), Some(s("enabled")));
    assert_eq!(
        state(&backup, 3),
        Some(s("enforced")),
        "a synced user has one too"
    );
    assert_eq!(state(&backup, 4), Some(s("disabled")), "Graph's default");
    assert_eq!(state(&backup, 45), None, "a soft-deleted user has none");
    let users = backup
        .iter()
        .filter(|o| o.object_type == ObjectType::User)
        .count();
    assert_eq!(users, 45);

    // The incident: MFA switched off for two users, a city changed.
    let beta = c.beta();
    let req = |n: u64| format!("/users/{}/authentication/requirements", id(n));
    for n in [1, 3] {
        let r = beta.patch(&req(n), &json!({"perUserMfaState": "disabled"}));
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        c.patch(&format!("/users/{}", id(1)), &json!({"city": "Oslo"}))
            .status,
        204
    );

    // Recovery: one update step per user; the connector splits it by where Graph holds each
    // property (v1.0 PATCH of the user, beta PATCH of its requirements).
    let steps: Vec<PlannedStep> = [
        Step::Update {
            id: uid(1),
            object_type: ObjectType::User,
            properties: vec![
                ("city".into(), Value::Null),
                (PER_USER_MFA_STATE.into(), s("enforced")),
            ],
        },
        Step::Update {
            id: uid(3),
            object_type: ObjectType::User,
            properties: vec![(PER_USER_MFA_STATE.into(), s("enforced"))],
        },
    ]
    .into_iter()
    .map(step)
    .collect();
    let outcomes = conn.apply_steps(&steps);
    assert_eq!(outcomes.len(), 2);
    for (o, planned) in outcomes.iter().zip(&steps) {
        assert_eq!(o.action_id, planned.action_id);
        assert_eq!(o.result, StepResult::Applied, "{}", o.action_id);
    }
    assert_eq!(beta.get(&req(1)).body["perUserMfaState"], "enforced");
    assert_eq!(beta.get(&req(3)).body["perUserMfaState"], "enforced");
    assert!(c.get(&format!("/users/{}?$select=city", id(1))).body["city"].is_null());

    let after = capture_all(&conn, "contoso");
    for n in 1..=45 {
        assert_eq!(state(&after, n), state(&backup, n), "user {n}");
    }
    // The same steps again: the state is already there, nothing fails.
    let again = conn.apply_steps(&steps);
    assert!(again.iter().all(|o| o.result.is_success()), "{again:?}");
}

#[test]
fn a_capture_without_mfa_states_says_so_and_reports_compare_none() {
    let sim = sim_with(DirsimConfig::default(), "contoso");
    let mut objects: Vec<Json> = (1..=30).map(|n| user(n, "Sales")).collect();
    objects[0]["perUserMfaState"] = json!("enforced");
    sim.load("contoso", &objects);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalShardStore::open(dir.path()).unwrap();
    let capture = |id: &str, read_mfa: bool| {
        let mut s = settings(&sim, "contoso", "secret-contoso");
        s.per_user_mfa_state = read_mfa;
        let info = SnapshotInfo {
            tenant: "contoso".into(),
            snapshot_id: id.into(),
            kind: SnapshotKind::Backup,
            created_at: now(),
            not_captured: Vec::new(),
        };
        let conn = GraphConnector::new(s).unwrap();
        capture_snapshot(&conn, &store, &info, ShardLayout::new(2)).unwrap()
    };
    let with = capture("with", true);
    assert!(with.not_captured.is_empty());
    let c = sim.client("contoso");
    assert_eq!(
        c.patch(&format!("/users/{}", id(2)), &json!({"city": "Oslo"}))
            .status,
        204
    );
    let without = capture("without", false);
    assert_eq!(without.not_captured, ["user.perUserMfaState"]);
    let backup = load_snapshot(&store, "contoso", "with").unwrap();
    let current = load_snapshot(&store, "contoso", "without").unwrap();
    assert!(current
        .decode_all()
        .unwrap()
        .iter()
        .all(|o| o.get(PER_USER_MFA_STATE).is_none()));
    // Every user's state is missing from the second snapshot, and no report says it changed:
    // only the city does.
    let report = rewind_common::diff::diff_snapshots(&backup, &current, &Scope::All).unwrap();
    let changed: Vec<(ObjectId, Vec<&str>)> = report
        .iter()
        .map(|e| {
            let names = e.changed_attributes.iter().map(|a| a.name.as_str());
            (e.id, names.collect())
        })
        .collect();
    assert_eq!(changed, [(uid(2), vec!["city"])]);
    // Without the record, the same two snapshots would show every user's state as removed.
    let plain = rewind_common::diff::diff_shards(
        &backup.shards,
        &current.shards,
        &Scope::All,
        Default::default(),
    )
    .unwrap();
    assert_eq!(plain.len(), 30);
}
