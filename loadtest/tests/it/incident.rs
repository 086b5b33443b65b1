//! `rewind loadtest incident` against a real simulator: each scenario is applied to a small
//! generated tenant, and the simulator's state, read back through Graph, must agree with the
//! report the generator expects.

use std::collections::{BTreeMap, BTreeSet};

use rewind_common::report::{Change, LinkState, NotRecoverableReason, RecoveryAction};
use rewind_common::{LinkKind, ObjectId, ObjectType};
use rewind_loadtest::gen::{self, GenConfig};
use rewind_loadtest::incident::{
    self, ExpectedReport, IncidentConfig, IncidentError, Phase, Scenario,
};
use serde_json::Value as Json;

use crate::dirsim::support::{Client, Sim};

const OBJECTS: u64 = 3_000;
const SEED: u64 = 11;

/// A simulator with tenant `name` generated into it (credentials `app-{name}`/`secret-{name}`).
fn tenant(name: &str) -> Sim {
    let sim = Sim::start();
    gen::run(&GenConfig {
        dirsim: sim.base.clone(),
        tenant: name.into(),
        objects: OBJECTS,
        seed: SEED,
        client_id: Some(format!("app-{name}")),
        client_secret: Some(format!("secret-{name}")),
    })
    .unwrap();
    sim
}

fn config(sim: &Sim, name: &str, scenario: Scenario) -> IncidentConfig {
    IncidentConfig {
        dirsim: sim.base.clone(),
        tenant: name.into(),
        scenario,
        seed: SEED,
        phase: Phase::AfterBackup,
        client_id: Some(format!("app-{name}")),
        client_secret: Some(format!("secret-{name}")),
    }
}

fn apply(sim: &Sim, name: &str, scenario: Scenario) -> ExpectedReport {
    let report = incident::run(&config(sim, name, scenario)).unwrap();
    // The report is what the command prints: it must serialize, with the report's names.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scenario"], scenario.name());
    assert_eq!(
        json["entries"].as_array().unwrap().len(),
        report.entries.len()
    );
    report
}

fn ids(report: &ExpectedReport, pred: impl Fn(&incident::ExpectedEntry) -> bool) -> Vec<ObjectId> {
    report
        .entries
        .iter()
        .filter(|e| pred(e))
        .map(|e| e.id)
        .collect()
}

fn user(c: &Client<'_>, id: ObjectId) -> (u16, Json) {
    let r = c.get(&format!(
        "/users/{id}?$select=id,accountEnabled,department,officeLocation,onPremisesSyncEnabled"
    ));
    (r.status, r.body)
}

fn members(c: &Client<'_>, group: ObjectId) -> BTreeSet<ObjectId> {
    c.get_all(&format!("/groups/{group}/members?$top=999&$select=id"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Every expected membership link is in the state the report says it is in now.
fn assert_links_current(c: &Client<'_>, report: &ExpectedReport) {
    for e in report
        .entries
        .iter()
        .filter(|e| e.object_type == ObjectType::Group && !e.changed_links.is_empty())
    {
        if e.change == Change::SoftDeleted {
            // In the recycle bin: its links can only have been lost with a purged member.
            assert_eq!(e.action, RecoveryAction::Restore);
            assert!(e.changed_links.iter().all(|l| l.kind == LinkKind::Members
                && l.current == LinkState::Absent
                && l.backup == LinkState::Present));
            continue;
        }
        let now = members(c, e.id);
        for l in &e.changed_links {
            assert_eq!(l.kind, LinkKind::Members);
            assert_eq!(
                now.contains(&l.target),
                l.current == LinkState::Present,
                "group {} member {}",
                e.id,
                l.target
            );
            assert_ne!(l.current, l.backup);
        }
        let dynamic = e.reason == Some(NotRecoverableReason::DynamicMembership);
        let synced = e.reason == Some(NotRecoverableReason::SyncedFromOnPremises);
        let lost = e.reason == Some(NotRecoverableReason::HardDeleted);
        assert!(e
            .changed_links
            .iter()
            .all(|l| l.recoverable == l.reason.is_none()));
        if dynamic || lost {
            assert!(e.changed_links.iter().all(|l| !l.recoverable));
        }
        assert_eq!(
            e.action,
            if dynamic || synced || lost {
                RecoveryAction::NotRecoverable
            } else {
                RecoveryAction::Update
            }
        );
    }
}

#[test]
fn s1_disables_users_and_keeps_legitimate_changes_apart() {
    let sim = tenant("s1");
    let report = apply(&sim, "s1", Scenario::S1);
    let c = sim.client("s1");
    let disabled = ids(&report, |e| {
        e.changed_attributes == ["accountEnabled"] && !e.legitimate
    });
    let moved = ids(&report, |e| e.legitimate);
    assert!(disabled.len() >= 100, "{} disabled", disabled.len());
    assert_eq!(moved.len(), 50);
    assert_eq!(report.counts.legitimate, 50);
    for id in &disabled {
        let (status, u) = user(&c, *id);
        assert_eq!(status, 200);
        assert_eq!(u["accountEnabled"], false, "{id}");
    }
    for id in &moved {
        let (_, u) = user(&c, *id);
        assert_eq!(u["department"], "Facilities");
        assert_eq!(u["accountEnabled"], true);
        let e = report.entry(*id).unwrap();
        assert_eq!(
            (e.change, e.action),
            (Change::Modified, RecoveryAction::Update)
        );
    }
    // Nobody else was disabled: the generator enables every user.
    let all = c.get_all("/users?$top=999&$select=id,accountEnabled");
    let now_disabled = all.iter().filter(|u| u["accountEnabled"] == false).count();
    assert_eq!(now_disabled, disabled.len());
    assert_eq!(report.counts.updates as usize, disabled.len() + moved.len());
    // The generator's dynamic groups select by office, which S1 does not touch.
    assert_eq!(report.counts.by_reason.get("dynamicMembership"), None);
    assert_eq!(report.entries.len(), disabled.len() + moved.len());
    assert_links_current(&c, &report);
}

#[test]
fn s2_tampers_with_a_policy_and_deletes_a_named_location() {
    let sim = tenant("s2");
    let report = apply(&sim, "s2", Scenario::S2);
    assert_eq!(report.entries.len(), 2);
    assert_eq!((report.counts.updates, report.counts.restores), (1, 1));
    let c = sim.client("s2");
    let policy = report
        .entries
        .iter()
        .find(|e| e.object_type == ObjectType::ConditionalAccessPolicy)
        .unwrap();
    let p = c.get(&format!(
        "/identity/conditionalAccess/policies/{}",
        policy.id
    ));
    assert_eq!(p.status, 200);
    assert_eq!(p.body["state"], "disabled");
    assert_eq!(
        p.body["conditions"]["users"]["excludeUsers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let location = report
        .entries
        .iter()
        .find(|e| e.object_type == ObjectType::NamedLocation)
        .unwrap();
    assert_eq!(location.change, Change::SoftDeleted);
    assert_eq!(
        c.get(&format!(
            "/identity/conditionalAccess/namedLocations/{}",
            location.id
        ))
        .status,
        404
    );
    assert_eq!(
        c.get(&format!(
            "/identity/conditionalAccess/deletedItems/namedLocations/{}",
            location.id
        ))
        .status,
        200
    );
}

#[test]
fn s3_creates_a_rogue_service_principal_with_grant_and_assignment() {
    let sim = tenant("s3");
    let report = apply(&sim, "s3", Scenario::S3);
    assert_eq!(report.entries.len(), 1);
    let e = &report.entries[0];
    assert_eq!(
        (e.object_type, e.change, e.action),
        (
            ObjectType::ServicePrincipal,
            Change::Created,
            RecoveryAction::SoftDelete
        )
    );
    let c = sim.client("s3");
    assert_eq!(c.get(&format!("/servicePrincipals/{}", e.id)).status, 200);
    let grant = e
        .changed_links
        .iter()
        .find(|l| l.kind == LinkKind::OAuth2PermissionGrants)
        .unwrap();
    let g = c.get(&format!("/oauth2PermissionGrants/{}", grant.target));
    assert_eq!(g.status, 200);
    assert_eq!(g.body["clientId"], e.id.to_string());
    assert_eq!(g.body["consentType"], "AllPrincipals");
    let assignment = e
        .changed_links
        .iter()
        .find(|l| l.kind == LinkKind::AppRoleAssignedTo)
        .unwrap();
    let a = c.get_all(&format!("/servicePrincipals/{}/appRoleAssignedTo", e.id));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["id"], assignment.target.to_string());
}

/// Members of every static group, and app role assignments of every service principal.
fn static_links(c: &Client<'_>) -> BTreeMap<ObjectId, BTreeSet<ObjectId>> {
    let mut links = BTreeMap::new();
    for g in c.get_all("/groups?$top=999&$select=id,groupTypes") {
        let dynamic = g["groupTypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|v| v == "DynamicMembership"));
        let id: ObjectId = g["id"].as_str().unwrap().parse().unwrap();
        if !dynamic {
            links.insert(id, members(c, id));
        }
    }
    for sp in c.get_all("/servicePrincipals?$top=999&$select=id") {
        let id: ObjectId = sp["id"].as_str().unwrap().parse().unwrap();
        let assignments = c
            .get_all(&format!(
                "/servicePrincipals/{id}/appRoleAssignedTo?$top=999"
            ))
            .iter()
            .map(|a| a["id"].as_str().unwrap().parse().unwrap())
            .collect();
        links.insert(id, assignments);
    }
    links
}

#[test]
fn s4_soft_deletes_and_purges() {
    let sim = tenant("s4");
    let before = static_links(&sim.client("s4"));
    let report = apply(&sim, "s4", Scenario::S4);
    let c = sim.client("s4");
    let deleted_users = ids(&report, |e| {
        e.object_type == ObjectType::User && e.change == Change::SoftDeleted
    });
    let deleted_groups = ids(&report, |e| {
        e.object_type == ObjectType::Group && e.change == Change::SoftDeleted
    });
    let purged = ids(&report, |e| e.change == Change::HardDeleted);
    assert!(deleted_users.len() >= 100 && !deleted_groups.is_empty() && !purged.is_empty());
    assert_eq!(
        report.counts.restores as usize,
        deleted_users.len() + deleted_groups.len()
    );
    // Not recoverable as hard-deleted: the purged users, and the holders of links lost with
    // them (and only those links).
    let holders_of_lost = report
        .entries
        .iter()
        .filter(|e| e.change == Change::Modified)
        .filter(|e| e.reason == Some(NotRecoverableReason::HardDeleted))
        .inspect(|e| {
            assert!(e
                .changed_links
                .iter()
                .all(|l| purged.contains(&l.target) || l.kind == LinkKind::AppRoleAssignedTo));
            assert!(e
                .changed_links
                .iter()
                .all(|l| l.reason == Some(NotRecoverableReason::HardDeleted)));
        })
        .count();
    assert!(holders_of_lost > 0);
    assert_eq!(
        report.counts.by_reason["hardDeleted"] as usize,
        purged.len() + holders_of_lost
    );
    let bin_users: BTreeSet<String> = c
        .get_all("/directory/deletedItems/microsoft.graph.user?$top=999")
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bin_users.len(), deleted_users.len());
    for id in &deleted_users {
        assert!(bin_users.contains(&id.to_string()));
        assert_eq!(user(&c, *id).0, 404);
    }
    for id in &deleted_groups {
        assert_eq!(c.get(&format!("/groups/{id}")).status, 404);
        assert_eq!(c.get(&format!("/directory/deletedItems/{id}")).status, 200);
    }
    for id in &purged {
        assert_eq!(user(&c, *id).0, 404);
        assert_eq!(c.get(&format!("/directory/deletedItems/{id}")).status, 404);
        let e = report.entry(*id).unwrap();
        assert_eq!(e.action, RecoveryAction::NotRecoverable);
    }
    assert_links_current(&c, &report);
    // Every static link the purge took is in the report, on its holder, and nothing else is.
    let after = static_links(&c);
    let mut lost_somewhere = 0;
    for (holder, was) in &before {
        let Some(now) = after.get(holder) else {
            // Soft-deleted by the scenario: its entry lists only links to purged users.
            let e = report.entry(*holder).unwrap();
            assert_eq!(e.change, Change::SoftDeleted);
            assert!(e
                .changed_links
                .iter()
                .all(|l| was.contains(&l.target) && purged.contains(&l.target)));
            lost_somewhere += e.changed_links.len();
            continue;
        };
        // A soft-deleted member is hidden from listings, not lost: restoring it brings the
        // membership back.
        let lost: BTreeSet<ObjectId> = was
            .difference(now)
            .filter(|m| !deleted_users.contains(m))
            .copied()
            .collect();
        let listed: BTreeSet<ObjectId> = report
            .entry(*holder)
            .map(|e| e.changed_links.iter().map(|l| l.target).collect())
            .unwrap_or_default();
        assert_eq!(lost, listed, "links lost by {holder}");
        lost_somewhere += lost.len();
    }
    assert!(lost_somewhere > 0, "the purged users held no static links");
}

#[test]
fn s5_changes_static_links_and_makes_dynamic_groups_recompute() {
    let sim = tenant("s5");
    let report = apply(&sim, "s5", Scenario::S5);
    let c = sim.client("s5");
    let static_links: usize = report
        .entries
        .iter()
        .filter(|e| e.action == RecoveryAction::Update && e.object_type == ObjectType::Group)
        .map(|e| e.changed_links.len())
        .sum();
    assert!(static_links >= 1_000, "{static_links} static links");
    let dynamic = ids(&report, |e| {
        e.reason == Some(NotRecoverableReason::DynamicMembership)
    });
    assert!(!dynamic.is_empty());
    let changed_users = ids(&report, |e| e.object_type == ObjectType::User);
    assert!(!changed_users.is_empty());
    for id in &changed_users {
        let e = report.entry(*id).unwrap();
        let (_, u) = user(&c, *id);
        assert_eq!(e.changed_attributes.len(), 1);
        assert!(!u[&e.changed_attributes[0]].is_null());
    }
    // Every changed user joined at least one dynamic group.
    let joined: BTreeSet<ObjectId> = report
        .entries
        .iter()
        .filter(|e| e.reason == Some(NotRecoverableReason::DynamicMembership))
        .flat_map(|e| e.changed_links.iter())
        .filter(|l| l.current == LinkState::Present)
        .map(|l| l.target)
        .collect();
    assert!(changed_users.iter().all(|u| joined.contains(u)));
    assert_links_current(&c, &report);
}

#[test]
fn s6_changes_synced_users_through_on_premises_sync() {
    let sim = tenant("s6");
    let report = apply(&sim, "s6", Scenario::S6);
    let c = sim.client("s6");
    let synced = ids(&report, |e| {
        e.reason == Some(NotRecoverableReason::SyncedFromOnPremises)
    });
    assert!(synced.len() >= 50, "{}", synced.len());
    for id in &synced {
        let (status, u) = user(&c, *id);
        assert_eq!(status, 200);
        assert_eq!(u["onPremisesSyncEnabled"], true);
        assert_eq!(u["department"], "Facilities");
    }
    assert_eq!(report.counts.updates, 0);
    assert_links_current(&c, &report);
}

#[test]
fn s7_restores_users_that_were_deleted_at_backup_time() {
    let sim = tenant("s7");
    let mut before = config(&sim, "s7", Scenario::S7);
    before.phase = Phase::BeforeBackup;
    let prepared = incident::run(&before).unwrap();
    assert_eq!(prepared.prepared.len(), 20);
    assert!(prepared.entries.is_empty());
    let c = sim.client("s7");
    for id in &prepared.prepared {
        assert_eq!(user(&c, *id).0, 404);
    }
    let report = apply(&sim, "s7", Scenario::S7);
    let restored = ids(&report, |e| e.change == Change::Restored);
    assert_eq!(restored, prepared.prepared);
    assert_eq!(report.counts.soft_deletes_again, 20);
    for id in &restored {
        assert_eq!(user(&c, *id).0, 200);
    }
    assert!(c
        .get_all("/directory/deletedItems/microsoft.graph.user")
        .is_empty());
    assert_links_current(&c, &report);
}

#[test]
fn default_credentials_and_clear_errors() {
    let sim = Sim::start();
    // `gen` and `incident` derive the same credentials from tenant and seed.
    gen::run(&GenConfig {
        dirsim: sim.base.clone(),
        tenant: "derived".into(),
        objects: 500,
        seed: 3,
        client_id: None,
        client_secret: None,
    })
    .unwrap();
    let mut config = config(&sim, "derived", Scenario::S3);
    config.seed = 3;
    config.client_id = None;
    config.client_secret = None;
    assert_eq!(incident::run(&config).unwrap().entries.len(), 1);

    let wrong_seed = incident::run(&IncidentConfig {
        seed: 4,
        ..config.clone()
    });
    assert!(matches!(wrong_seed, Err(IncidentError::Auth { .. })));

    let missing = incident::run(&IncidentConfig {
        tenant: "nobody".into(),
        ..config.clone()
    })
    .unwrap_err();
    assert!(matches!(missing, IncidentError::NoTenant(_)));
    assert!(missing.to_string().contains("no tenant \"nobody\""));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = incident::run(&IncidentConfig {
        dirsim: format!("http://127.0.0.1:{port}"),
        ..config.clone()
    })
    .unwrap_err();
    assert!(unreachable.to_string().contains("cannot be reached"));

    let unknown = "S9".parse::<Scenario>().unwrap_err();
    assert!(unknown.to_string().contains("unknown scenario \"S9\""));
    assert_eq!("s4".parse::<Scenario>().unwrap(), Scenario::S4);

    let no_before = incident::run(&IncidentConfig {
        phase: Phase::BeforeBackup,
        ..config
    })
    .unwrap_err();
    assert!(matches!(
        no_before,
        IncidentError::NoBeforePhase(Scenario::S3)
    ));
}
