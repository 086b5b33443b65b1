//! The scenarios: each reads what it needs through Graph, picks its objects with the seed,
//! writes the incident (Graph `$batch`, single requests, or the admin sync route for
//! on-premises changes) and lists the entries a difference report should show.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rewind_common::graph_json::from_graph_json;
use rewind_common::report::{Change, LinkState, NotRecoverableReason, RecoveryAction};
use rewind_common::{DirectoryObject, LinkKind, ObjectId, ObjectType};
use serde_json::{json, Value as Json};

use super::graph::{GraphClient, Write};
use super::{ExpectedEntry, ExpectedLink, IncidentConfig, IncidentError, Phase, Scenario};
use crate::dirsim::{DynamicGroups, ObjectMap, Rule};

/// What a scenario did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub entries: Vec<ExpectedEntry>,
    pub prepared: Vec<ObjectId>,
    pub notes: Vec<String>,
}

/// A department the generator never uses, so the change is always a change.
const NEW_DEPARTMENT: &str = "Facilities";
const OTHER_NEW_DEPARTMENT: &str = "Logistics";

#[derive(Clone, Debug)]
struct User {
    id: ObjectId,
    name: String,
    department: Option<String>,
    synced: bool,
    enabled: bool,
}

#[derive(Clone, Debug)]
struct Group {
    id: ObjectId,
    name: String,
    dynamic: bool,
    rule: Option<String>,
    synced: bool,
}

fn progress(scenario: Scenario, message: &str) {
    tracing::info!(%scenario, "{message}");
}

fn rng(config: &IncidentConfig, salt: &str) -> ChaCha8Rng {
    let h = blake3::hash(
        format!(
            "rewind-incident:{}:{}:{}:{salt}",
            config.scenario, config.tenant, config.seed
        )
        .as_bytes(),
    );
    ChaCha8Rng::from_seed(*h.as_bytes())
}

fn id_of(j: &Json) -> Option<ObjectId> {
    j["id"].as_str()?.parse().ok()
}

fn name_of(j: &Json) -> String {
    j["displayName"].as_str().unwrap_or("").to_owned()
}

fn users(c: &mut GraphClient) -> Result<Vec<User>, IncidentError> {
    let items = c.get_all(
        "listing users",
        "/users?$top=999&$select=id,displayName,department,accountEnabled,onPremisesSyncEnabled",
    )?;
    Ok(items
        .iter()
        .filter_map(|j| {
            Some(User {
                id: id_of(j)?,
                name: name_of(j),
                department: j["department"].as_str().map(str::to_owned),
                synced: j["onPremisesSyncEnabled"].as_bool() == Some(true),
                enabled: j["accountEnabled"].as_bool() != Some(false),
            })
        })
        .collect())
}

fn groups(c: &mut GraphClient) -> Result<Vec<Group>, IncidentError> {
    let items = c.get_all(
        "listing groups",
        "/groups?$top=999&$select=id,displayName,groupTypes,membershipRule,onPremisesSyncEnabled",
    )?;
    Ok(items
        .iter()
        .filter_map(|j| {
            let dynamic = j["groupTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|v| v == "DynamicMembership"));
            Some(Group {
                id: id_of(j)?,
                name: name_of(j),
                dynamic,
                rule: j["membershipRule"].as_str().map(str::to_owned),
                synced: j["onPremisesSyncEnabled"].as_bool() == Some(true),
            })
        })
        .collect())
}

fn member_ids(c: &mut GraphClient, group: ObjectId) -> Result<BTreeSet<ObjectId>, IncidentError> {
    Ok(c.get_all(
        "listing members",
        &format!("/groups/{group}/members?$top=999&$select=id"),
    )?
    .iter()
    .filter_map(id_of)
    .collect())
}

/// An active dynamic group whose rule the simulator understands.
struct Ruled {
    id: ObjectId,
    name: String,
    rule: Rule,
}

fn dynamic_rules(groups: &[Group]) -> Vec<Ruled> {
    groups
        .iter()
        .filter(|g| g.dynamic)
        .filter_map(|g| {
            Some(Ruled {
                id: g.id,
                name: g.name.clone(),
                rule: Rule::parse(g.rule.as_deref()?).ok()?,
            })
        })
        .collect()
}

/// The active users among `ids`, read in full (getByIds, 1,000 at a time); none when no
/// dynamic rule could need them.
fn full_users(
    c: &mut GraphClient,
    rules: &[Ruled],
    ids: &[ObjectId],
) -> Result<BTreeMap<ObjectId, DirectoryObject>, IncidentError> {
    let mut out = BTreeMap::new();
    if rules.is_empty() {
        return Ok(out);
    }
    for chunk in ids.chunks(1_000) {
        let body = json!({
            "ids": chunk.iter().map(ObjectId::to_string).collect::<Vec<_>>(),
            "types": ["user"],
        });
        let answer = c.expect(
            "reading users by id",
            "POST",
            "/directoryObjects/getByIds",
            Some(&body),
        )?;
        for j in answer["value"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Ok(o) = from_graph_json(ObjectType::User, j) {
                out.insert(o.id, o);
            }
        }
    }
    Ok(out)
}

/// No ids (no user purged).
static NO_IDS: BTreeSet<ObjectId> = BTreeSet::new();

/// Entries for the dynamic groups whose computed members change when the `touched` users go
/// from `before` to `after` (a user absent from a map is not active there; one in `purged`
/// is gone, and its memberships are lost with it). The simulator keeps every dynamic group's
/// members equal to its rule's verdicts, so only the touched users' verdicts can change; the
/// simulator's own rule index finds each user's groups.
fn dynamic_entries(
    rules: &[Ruled],
    before: &BTreeMap<ObjectId, DirectoryObject>,
    after: &BTreeMap<ObjectId, DirectoryObject>,
    touched: &[ObjectId],
    purged: &BTreeSet<ObjectId>,
) -> Vec<ExpectedEntry> {
    let mut index = DynamicGroups::default();
    let no_users = ObjectMap::default();
    for r in rules {
        index.insert(r.id, r.rule.clone(), &no_users);
    }
    let mut touched = touched.to_vec();
    touched.sort_unstable();
    touched.dedup();
    let groups_of = |map: &BTreeMap<ObjectId, DirectoryObject>, id: &ObjectId| {
        map.get(id).map(|u| index.groups_of(u)).unwrap_or_default()
    };
    let mut links: BTreeMap<ObjectId, Vec<ExpectedLink>> = BTreeMap::new();
    for u in &touched {
        let (b, a) = (groups_of(before, u), groups_of(after, u));
        for g in b.iter().filter(|g| a.binary_search(g).is_err()) {
            let removed = if purged.contains(u) {
                lost(LinkKind::Members, *u)
            } else {
                link(LinkKind::Members, *u, false, false)
            };
            links.entry(*g).or_default().push(removed);
        }
        for g in a.iter().filter(|g| b.binary_search(g).is_err()) {
            links
                .entry(*g)
                .or_default()
                .push(link(LinkKind::Members, *u, true, false));
        }
    }
    let names: BTreeMap<ObjectId, &str> = rules.iter().map(|r| (r.id, r.name.as_str())).collect();
    links
        .into_iter()
        .map(|(g, changed_links)| {
            let mut e = ExpectedEntry::new(
                g,
                ObjectType::Group,
                names.get(&g).copied().unwrap_or(""),
                Change::Modified,
                RecoveryAction::NotRecoverable,
            )
            .reason(links_reason(&changed_links));
            e.changed_links = changed_links;
            e
        })
        .collect()
}

/// A static group whose links changed (an update reverts them).
fn modified_group(g: &Group, links: Vec<ExpectedLink>) -> ExpectedEntry {
    let mut e = ExpectedEntry::new(
        g.id,
        ObjectType::Group,
        &g.name,
        Change::Modified,
        RecoveryAction::Update,
    );
    e.changed_links = links;
    e
}

/// A link added or removed; one that is not recoverable is a dynamic rule's.
fn link(kind: LinkKind, target: ObjectId, added: bool, recoverable: bool) -> ExpectedLink {
    let (current, backup) = if added {
        (LinkState::Present, LinkState::Absent)
    } else {
        (LinkState::Absent, LinkState::Present)
    };
    ExpectedLink {
        kind,
        target,
        current,
        backup,
        recoverable,
        reason: (!recoverable).then_some(NotRecoverableReason::DynamicMembership),
    }
}

/// A link lost with the hard-deleted object at its far end: shown on its holder, never
/// recoverable.
fn lost(kind: LinkKind, target: ObjectId) -> ExpectedLink {
    ExpectedLink {
        reason: Some(NotRecoverableReason::HardDeleted),
        ..link(kind, target, false, false)
    }
}

/// Why an entry whose only changes are unrecoverable links is not recoverable: a lost link
/// makes it `hardDeleted`, otherwise they are a dynamic rule's.
fn links_reason(links: &[ExpectedLink]) -> NotRecoverableReason {
    if links
        .iter()
        .any(|l| l.reason == Some(NotRecoverableReason::HardDeleted))
    {
        NotRecoverableReason::HardDeleted
    } else {
        NotRecoverableReason::DynamicMembership
    }
}

fn other_department(current: Option<&str>) -> &'static str {
    if current == Some(NEW_DEPARTMENT) {
        OTHER_NEW_DEPARTMENT
    } else {
        NEW_DEPARTMENT
    }
}

/// `n` of `items` (all of them when fewer), picked with `rng`; the order of `items` must not
/// depend on anything but the tenant (listings are in id order).
fn pick<T: Clone>(items: &[T], n: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    let mut all = items.to_vec();
    all.shuffle(rng);
    all.truncate(n);
    all
}

fn need<T>(scenario: Scenario, items: &[T], what: &str) -> Result<(), IncidentError> {
    if items.is_empty() {
        return Err(IncidentError::Missing {
            scenario,
            what: what.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn apply(
    c: &mut GraphClient,
    config: &IncidentConfig,
) -> Result<Outcome, IncidentError> {
    match config.scenario {
        Scenario::S1 => bulk_disable(c, config),
        Scenario::S2 => policy_tamper(c, config),
        Scenario::S3 => rogue_app(c, config),
        Scenario::S4 => mass_delete(c, config),
        Scenario::S5 => membership_tamper(c, config),
        Scenario::S6 => synced(c, config),
        Scenario::S7 => undo_restore(c, config),
    }
}

/// S1: accountEnabled=false on up to 4,800 cloud users (a quarter of them in a small tenant),
/// and a legitimate department change on up to 50 others.
fn bulk_disable(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let all = users(c)?;
    let groups = groups(c)?;
    let cloud: Vec<User> = all.into_iter().filter(|u| !u.synced && u.enabled).collect();
    need(sc, &cloud, "enabled cloud users")?;
    let n = 4_800.min(cloud.len() / 4).max(1);
    let legit = 50.min(cloud.len() / 20);
    let chosen = pick(&cloud, n + legit, &mut rng(config, "users"));
    let (disabled, moved) = chosen.split_at(n.min(chosen.len()));
    let rules = dynamic_rules(&groups);
    let touched: Vec<ObjectId> = chosen.iter().map(|u| u.id).collect();
    let before = full_users(c, &rules, &touched)?;
    let mut writes: Vec<Write> = disabled
        .iter()
        .map(|u| {
            Write::new(
                "PATCH",
                format!("/users/{}", u.id),
                Some(json!({"accountEnabled": false})),
            )
        })
        .collect();
    writes.extend(moved.iter().map(|u| {
        Write::new(
            "PATCH",
            format!("/users/{}", u.id),
            Some(json!({"department": other_department(u.department.as_deref())})),
        )
    }));
    progress(
        sc,
        &format!(
            "disabling {} users, moving {} to another department",
            disabled.len(),
            moved.len()
        ),
    );
    c.batch("disabling users", &writes)?;
    let after = full_users(c, &rules, &touched)?;
    let mut out = Outcome::default();
    for u in disabled {
        out.entries.push(
            ExpectedEntry::new(
                u.id,
                ObjectType::User,
                &u.name,
                Change::Modified,
                RecoveryAction::Update,
            )
            .attributes(&["accountEnabled"]),
        );
    }
    for u in moved {
        out.entries.push(
            ExpectedEntry::new(
                u.id,
                ObjectType::User,
                &u.name,
                Change::Modified,
                RecoveryAction::Update,
            )
            .attributes(&["department"])
            .legitimate(),
        );
    }
    out.entries
        .extend(dynamic_entries(&rules, &before, &after, &touched, &NO_IDS));
    Ok(out)
}

/// S2: a conditional access policy switched off with a user excluded, a named location deleted.
fn policy_tamper(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let mut rng = rng(config, "policies");
    let policies = c.get_all(
        "listing conditional access policies",
        "/identity/conditionalAccess/policies",
    )?;
    let enabled: Vec<Json> = policies
        .iter()
        .filter(|p| p["state"] == "enabled")
        .cloned()
        .collect();
    let candidates = if enabled.is_empty() {
        policies
    } else {
        enabled
    };
    need(sc, &candidates, "conditional access policies")?;
    let policy = pick(&candidates, 1, &mut rng).remove(0);
    let policy_id = id_of(&policy).ok_or_else(|| {
        IncidentError::BadRequest("a conditional access policy without an id".into())
    })?;
    let locations = c.get_all(
        "listing named locations",
        "/identity/conditionalAccess/namedLocations",
    )?;
    need(sc, &locations, "named locations")?;
    let location = pick(&locations, 1, &mut rng).remove(0);
    let location_id = id_of(&location)
        .ok_or_else(|| IncidentError::BadRequest("a named location without an id".into()))?;
    let some_users = c.expect("reading a user", "GET", "/users?$top=20&$select=id", None)?;
    let excluded = some_users["value"]
        .as_array()
        .and_then(|v| v.choose(&mut rng))
        .and_then(id_of)
        .ok_or_else(|| IncidentError::Missing {
            scenario: sc,
            what: "users".into(),
        })?;

    let mut conditions = policy["conditions"].clone();
    if !conditions.is_object() {
        conditions = json!({});
    }
    if !conditions["users"].is_object() {
        conditions["users"] = json!({});
    }
    let mut exclude = conditions["users"]["excludeUsers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    exclude.push(Json::String(excluded.to_string()));
    conditions["users"]["excludeUsers"] = Json::Array(exclude);
    progress(
        sc,
        &format!("switching policy {policy_id} off, deleting named location {location_id}"),
    );
    c.expect(
        "tampering with the policy",
        "PATCH",
        &format!("/identity/conditionalAccess/policies/{policy_id}"),
        Some(&json!({"state": "disabled", "conditions": conditions})),
    )?;
    c.expect(
        "deleting the named location",
        "DELETE",
        &format!("/identity/conditionalAccess/namedLocations/{location_id}"),
        None,
    )?;
    let mut out = Outcome::default();
    out.entries.push(
        ExpectedEntry::new(
            policy_id,
            ObjectType::ConditionalAccessPolicy,
            &name_of(&policy),
            Change::Modified,
            RecoveryAction::Update,
        )
        .attributes(&["conditions", "state"]),
    );
    out.entries.push(ExpectedEntry::new(
        location_id,
        ObjectType::NamedLocation,
        &name_of(&location),
        Change::SoftDeleted,
        RecoveryAction::Restore,
    ));
    Ok(out)
}

/// S3: a new service principal with an admin-consent grant on an existing resource and an
/// app role assignment to a user.
fn rogue_app(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let mut rng = rng(config, "app");
    let resources = c.expect(
        "listing service principals",
        "GET",
        "/servicePrincipals?$top=50&$select=id",
        None,
    )?;
    let resource = resources["value"]
        .as_array()
        .and_then(|v| v.choose(&mut rng))
        .and_then(id_of)
        .ok_or_else(|| IncidentError::Missing {
            scenario: sc,
            what: "service principals".into(),
        })?;
    let some_users = c.expect("reading a user", "GET", "/users?$top=20&$select=id", None)?;
    let principal = some_users["value"]
        .as_array()
        .and_then(|v| v.choose(&mut rng))
        .and_then(id_of)
        .ok_or_else(|| IncidentError::Missing {
            scenario: sc,
            what: "users".into(),
        })?;
    let name = format!("Rogue app {}", config.seed);
    let app_id = ObjectId(rng.gen::<u128>());
    progress(sc, &format!("creating service principal {name:?}"));
    let sp = c.expect(
        "creating the service principal",
        "POST",
        "/servicePrincipals",
        Some(&json!({
            "displayName": name,
            "appId": app_id.to_string(),
            "accountEnabled": true,
            "servicePrincipalType": "Application",
        })),
    )?;
    let sp_id = id_of(&sp).ok_or_else(|| {
        IncidentError::BadRequest("the created service principal has no id".into())
    })?;
    let grant = c.expect(
        "granting admin consent",
        "POST",
        "/oauth2PermissionGrants",
        Some(&json!({
            "clientId": sp_id.to_string(),
            "consentType": "AllPrincipals",
            "resourceId": resource.to_string(),
            "scope": "Directory.ReadWrite.All",
        })),
    )?;
    let grant_id = id_of(&grant)
        .ok_or_else(|| IncidentError::BadRequest("the created grant has no id".into()))?;
    let assignment = c.expect(
        "assigning an app role",
        "POST",
        &format!("/servicePrincipals/{sp_id}/appRoleAssignedTo"),
        Some(&json!({
            "principalId": principal.to_string(),
            "resourceId": sp_id.to_string(),
            "appRoleId": ObjectId(0).to_string(),
        })),
    )?;
    let assignment_id = id_of(&assignment)
        .ok_or_else(|| IncidentError::BadRequest("the created assignment has no id".into()))?;
    let mut e = ExpectedEntry::new(
        sp_id,
        ObjectType::ServicePrincipal,
        &name,
        Change::Created,
        RecoveryAction::SoftDelete,
    );
    e.changed_links = vec![
        link(LinkKind::OAuth2PermissionGrants, grant_id, true, true),
        link(LinkKind::AppRoleAssignedTo, assignment_id, true, true),
    ];
    Ok(Outcome {
        entries: vec![e],
        ..Outcome::default()
    })
}

/// S4: up to 2,000 cloud users and 300 static cloud groups soft-deleted (a fifth of them in a
/// small tenant), and up to 100 more users purged (soft delete, then hard delete).
fn mass_delete(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let all = users(c)?;
    let groups = groups(c)?;
    let cloud: Vec<User> = all.into_iter().filter(|u| !u.synced).collect();
    let static_groups: Vec<Group> = groups
        .iter()
        .filter(|g| !g.synced && !g.dynamic)
        .cloned()
        .collect();
    need(sc, &cloud, "cloud users")?;
    need(sc, &static_groups, "static cloud groups")?;
    let n_users = 2_000.min(cloud.len() / 5).max(1);
    let n_purged = 100.min(cloud.len() / 20);
    let n_groups = 300.min(static_groups.len() / 5).max(1);
    let chosen = pick(&cloud, n_users + n_purged, &mut rng(config, "users"));
    let (deleted, purged) = chosen.split_at(n_users.min(chosen.len()));
    let deleted_groups = pick(&static_groups, n_groups, &mut rng(config, "groups"));
    let rules = dynamic_rules(&groups);
    let touched: Vec<ObjectId> = chosen.iter().map(|u| u.id).collect();
    let before = full_users(c, &rules, &touched)?;
    // A purge takes the user's static memberships and app role assignments with it: the
    // groups and service principals that held them show those links removed.
    let mut lost_members: BTreeMap<ObjectId, Vec<ObjectId>> = BTreeMap::new();
    let mut lost_assignments: BTreeMap<ObjectId, Vec<ObjectId>> = BTreeMap::new();
    for u in purged {
        for g in c.get_all(
            "listing memberships",
            &format!("/users/{}/memberOf?$top=999&$select=id", u.id),
        )? {
            if let Some(gid) = id_of(&g) {
                lost_members.entry(gid).or_default().push(u.id);
            }
        }
        for a in c.get_all(
            "listing app role assignments",
            &format!(
                "/users/{}/appRoleAssignments?$top=999&$select=id,resourceId",
                u.id
            ),
        )? {
            let resource = a["resourceId"].as_str().and_then(|s| s.parse().ok());
            if let (Some(aid), Some(sp)) = (id_of(&a), resource) {
                lost_assignments.entry(sp).or_default().push(aid);
            }
        }
    }
    let holders: BTreeMap<ObjectId, String> = if lost_assignments.is_empty() {
        BTreeMap::new()
    } else {
        c.get_all(
            "listing service principals",
            "/servicePrincipals?$top=999&$select=id,displayName",
        )?
        .iter()
        .filter_map(|j| Some((id_of(j)?, name_of(j))))
        .collect()
    };
    let mut writes: Vec<Write> = chosen
        .iter()
        .map(|u| Write::new("DELETE", format!("/users/{}", u.id), None))
        .collect();
    writes.extend(
        deleted_groups
            .iter()
            .map(|g| Write::new("DELETE", format!("/groups/{}", g.id), None)),
    );
    progress(
        sc,
        &format!(
            "soft-deleting {} users and {} groups, purging {} users",
            deleted.len(),
            deleted_groups.len(),
            purged.len()
        ),
    );
    c.batch("soft-deleting", &writes)?;
    let purges: Vec<Write> = purged
        .iter()
        .map(|u| Write::new("DELETE", format!("/directory/deletedItems/{}", u.id), None))
        .collect();
    c.batch("purging", &purges)?;
    // A soft-deleted user's memberships are hidden, not changed: restoring the user brings
    // them back, so its rule verdicts count as they were. Only the purged users' are lost.
    let purged_ids: BTreeSet<ObjectId> = purged.iter().map(|u| u.id).collect();
    let after: BTreeMap<ObjectId, DirectoryObject> = before
        .iter()
        .filter(|(id, _)| !purged_ids.contains(id))
        .map(|(id, u)| (*id, u.clone()))
        .collect();
    let mut out = Outcome::default();
    for u in deleted {
        out.entries.push(ExpectedEntry::new(
            u.id,
            ObjectType::User,
            &u.name,
            Change::SoftDeleted,
            RecoveryAction::Restore,
        ));
    }
    let lost_links = |holder: ObjectId| -> Vec<ExpectedLink> {
        lost_members
            .get(&holder)
            .into_iter()
            .flatten()
            .map(|u| (*u, lost(LinkKind::Members, *u)))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect()
    };
    for g in &deleted_groups {
        let mut e = ExpectedEntry::new(
            g.id,
            ObjectType::Group,
            &g.name,
            Change::SoftDeleted,
            RecoveryAction::Restore,
        );
        e.changed_links = lost_links(g.id);
        out.entries.push(e);
    }
    let soft_deleted: BTreeSet<ObjectId> = deleted_groups.iter().map(|g| g.id).collect();
    for g in &groups {
        // Dynamic groups' memberships are listed with the rules' verdicts below.
        if g.dynamic || soft_deleted.contains(&g.id) || !lost_members.contains_key(&g.id) {
            continue;
        }
        let mut e = modified_group(g, lost_links(g.id));
        e.action = RecoveryAction::NotRecoverable;
        e = e.reason(if g.synced {
            NotRecoverableReason::SyncedFromOnPremises
        } else {
            NotRecoverableReason::HardDeleted
        });
        out.entries.push(e);
    }
    for (sp, assignments) in &lost_assignments {
        let mut e = ExpectedEntry::new(
            *sp,
            ObjectType::ServicePrincipal,
            holders.get(sp).map_or("", String::as_str),
            Change::Modified,
            RecoveryAction::NotRecoverable,
        )
        .reason(NotRecoverableReason::HardDeleted);
        let mut assignments = assignments.clone();
        assignments.sort();
        assignments.dedup();
        e.changed_links = assignments
            .iter()
            .map(|a| lost(LinkKind::AppRoleAssignedTo, *a))
            .collect();
        out.entries.push(e);
    }
    for u in purged {
        out.entries.push(
            ExpectedEntry::new(
                u.id,
                ObjectType::User,
                &u.name,
                Change::HardDeleted,
                RecoveryAction::NotRecoverable,
            )
            .reason(NotRecoverableReason::HardDeleted),
        );
    }
    out.entries.extend(dynamic_entries(
        &rules,
        &before,
        &after,
        &touched,
        &purged_ids,
    ));
    Ok(out)
}

/// The property and value of a rule's first `user.<property> -eq "<value>"` clause.
fn first_equality(rule: &str) -> Option<(String, String)> {
    let start = rule.find("user.")? + "user.".len();
    let rest = &rule[start..];
    let (property, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let rest = rest
        .get(..3)
        .filter(|op| op.eq_ignore_ascii_case("-eq"))
        .map(|_| rest[3..].trim_start())?;
    let value = rest.strip_prefix('"')?;
    let (value, _) = value.split_once('"')?;
    Some((property.to_owned(), value.to_owned()))
}

/// S5: up to 10,000 static membership links added or removed across up to 500 static cloud
/// groups (half of them in a small tenant), and up to 100 cloud users given the value a dynamic
/// group's rule asks for, so that dynamic groups recompute.
fn membership_tamper(
    c: &mut GraphClient,
    config: &IncidentConfig,
) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let all = users(c)?;
    let groups = groups(c)?;
    let static_groups: Vec<Group> = groups
        .iter()
        .filter(|g| !g.synced && !g.dynamic)
        .cloned()
        .collect();
    need(sc, &static_groups, "static cloud groups")?;
    need(sc, &all, "users")?;
    let mut rng = rng(config, "links");
    let n_groups = 500.min(static_groups.len() / 2).max(1);
    let chosen = pick(&static_groups, n_groups, &mut rng);
    let per_group = (10_000 / n_groups).clamp(1, 20);
    let user_ids: Vec<ObjectId> = all.iter().map(|u| u.id).collect();

    let mut writes = Vec::new();
    let mut out = Outcome::default();
    for g in &chosen {
        let members = member_ids(c, g.id)?;
        let removable: Vec<ObjectId> = members.iter().copied().collect();
        let removed = pick(&removable, (per_group / 2).min(removable.len()), &mut rng);
        let mut added = BTreeSet::new();
        let wanted = per_group - removed.len();
        let mut tries = 0;
        while added.len() < wanted && tries < wanted * 20 {
            tries += 1;
            if let Some(u) = user_ids.choose(&mut rng) {
                if !members.contains(u) {
                    added.insert(*u);
                }
            }
        }
        for u in &removed {
            writes.push(Write::new(
                "DELETE",
                format!("/groups/{}/members/{u}/$ref", g.id),
                None,
            ));
        }
        for u in &added {
            writes.push(Write::new(
                "POST",
                format!("/groups/{}/members/$ref", g.id),
                Some(json!({
                    "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{u}")
                })),
            ));
        }
        let mut links: Vec<ExpectedLink> = added
            .iter()
            .map(|u| link(LinkKind::Members, *u, true, true))
            .chain(
                removed
                    .iter()
                    .map(|u| link(LinkKind::Members, *u, false, true)),
            )
            .collect();
        links.sort_by_key(|l| l.target);
        if !links.is_empty() {
            out.entries.push(modified_group(g, links));
        }
    }
    progress(
        sc,
        &format!(
            "changing {} static membership links across {} groups",
            writes.len(),
            chosen.len()
        ),
    );
    c.batch("changing memberships", &writes)?;

    // Users given the value a dynamic group's rule asks for.
    let ruled: Vec<(ObjectId, String, String)> = groups
        .iter()
        .filter(|g| g.dynamic)
        .filter_map(|g| {
            let (p, v) = first_equality(g.rule.as_deref()?)?;
            Some((g.id, p, v))
        })
        .collect();
    if let Some((gid, property, value)) = ruled.choose(&mut rng).cloned() {
        let members = member_ids(c, gid)?;
        let cloud: Vec<&User> = all
            .iter()
            .filter(|u| !u.synced && !members.contains(&u.id))
            .collect();
        let moved = pick(&cloud, 100.min(cloud.len() / 20).max(1), &mut rng);
        let writes: Vec<Write> = moved
            .iter()
            .map(|u| {
                Write::new(
                    "PATCH",
                    format!("/users/{}", u.id),
                    Some(json!({ property.as_str(): value })),
                )
            })
            .collect();
        progress(
            sc,
            &format!(
                "setting {property} = {value:?} on {} users (dynamic group {gid})",
                moved.len()
            ),
        );
        let rules = dynamic_rules(&groups);
        let touched: Vec<ObjectId> = moved.iter().map(|u| u.id).collect();
        let before = full_users(c, &rules, &touched)?;
        c.batch("changing users of dynamic groups", &writes)?;
        let after = full_users(c, &rules, &touched)?;
        out.entries
            .extend(dynamic_entries(&rules, &before, &after, &touched, &NO_IDS));
        for u in moved {
            out.entries.push(
                ExpectedEntry::new(
                    u.id,
                    ObjectType::User,
                    &u.name,
                    Change::Modified,
                    RecoveryAction::Update,
                )
                .attributes(&[property.as_str()]),
            );
        }
    } else {
        out.notes
            .push("the tenant has no dynamic group with an -eq rule: no user was changed".into());
    }
    Ok(out)
}

/// S6: up to 1,000 synced users (half of them in a small tenant) change department
/// on-premises (through the simulator's sync route).
fn synced(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let all = users(c)?;
    let groups = groups(c)?;
    let synced: Vec<User> = all.into_iter().filter(|u| u.synced).collect();
    need(sc, &synced, "users synced from on-premises")?;
    let n = 1_000.min(synced.len() / 2).max(1);
    let chosen = pick(&synced, n, &mut rng(config, "users"));
    let rules = dynamic_rules(&groups);
    let touched: Vec<ObjectId> = chosen.iter().map(|u| u.id).collect();
    let before = full_users(c, &rules, &touched)?;
    progress(
        sc,
        &format!(
            "changing department on {} synced users on-premises",
            chosen.len()
        ),
    );
    for u in &chosen {
        c.sync_patch(
            &u.id.to_string(),
            &json!({"department": other_department(u.department.as_deref())}),
        )?;
    }
    let after = full_users(c, &rules, &touched)?;
    let mut out = Outcome::default();
    for u in &chosen {
        out.entries.push(
            ExpectedEntry::new(
                u.id,
                ObjectType::User,
                &u.name,
                Change::Modified,
                RecoveryAction::NotRecoverable,
            )
            .reason(NotRecoverableReason::SyncedFromOnPremises)
            .attributes(&["department"]),
        );
    }
    out.entries
        .extend(dynamic_entries(&rules, &before, &after, &touched, &NO_IDS));
    Ok(out)
}

/// S7's order of users: the before part soft-deletes the first ones among cloud users, the
/// after part restores the first ones among soft-deleted users: the same ones, when nothing
/// else deleted users in between.
fn s7_rank(config: &IncidentConfig, id: ObjectId) -> [u8; 32] {
    *blake3::hash(format!("rewind-incident:S7:{}:{}:{id}", config.tenant, config.seed).as_bytes())
        .as_bytes()
}

/// S7: before the backup, up to 20 cloud users (a tenth in a small tenant) are soft-deleted;
/// after it, they are restored.
fn undo_restore(c: &mut GraphClient, config: &IncidentConfig) -> Result<Outcome, IncidentError> {
    let sc = config.scenario;
    let mut out = Outcome::default();
    match config.phase {
        Phase::BeforeBackup => {
            let mut cloud: Vec<User> = users(c)?.into_iter().filter(|u| !u.synced).collect();
            need(sc, &cloud, "cloud users")?;
            let n = 20.min(cloud.len() / 10).max(1);
            cloud.sort_by_key(|u| s7_rank(config, u.id));
            cloud.truncate(n);
            progress(
                sc,
                &format!("soft-deleting {} users before the backup", cloud.len()),
            );
            let writes: Vec<Write> = cloud
                .iter()
                .map(|u| Write::new("DELETE", format!("/users/{}", u.id), None))
                .collect();
            c.batch("soft-deleting", &writes)?;
            out.prepared = cloud.iter().map(|u| u.id).collect();
            out.prepared.sort();
        }
        Phase::AfterBackup => {
            let deleted = c.get_all(
                "listing deleted users",
                "/directory/deletedItems/microsoft.graph.user?$top=999&$select=id,displayName",
            )?;
            let mut deleted: Vec<(ObjectId, String)> = deleted
                .iter()
                .filter_map(|j| Some((id_of(j)?, name_of(j))))
                .collect();
            need(
                sc,
                &deleted,
                "soft-deleted users (run --phase before-backup first)",
            )?;
            deleted.sort_by_key(|(id, _)| s7_rank(config, *id));
            deleted.truncate(20);
            progress(sc, &format!("restoring {} users", deleted.len()));
            let writes: Vec<Write> = deleted
                .iter()
                .map(|(id, _)| {
                    Write::new(
                        "POST",
                        format!("/directory/deletedItems/{id}/restore"),
                        None,
                    )
                })
                .collect();
            c.batch("restoring", &writes)?;
            // The users' memberships, static and dynamic, were hidden from the backup (they were
            // in the recycle bin) and came back with the restore: no group entry, and soft
            // deleting the users again hides them again.
            for (id, name) in &deleted {
                out.entries.push(ExpectedEntry::new(
                    *id,
                    ObjectType::User,
                    name,
                    Change::Restored,
                    RecoveryAction::SoftDeleteAgain,
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_equality_of_a_rule() {
        assert_eq!(
            first_equality(r#"user.department -eq "Sales""#),
            Some(("department".into(), "Sales".into()))
        );
        assert_eq!(
            first_equality(r#"(user.officeLocation -EQ "Berlin 3") -or user.city -eq "x""#),
            Some(("officeLocation".into(), "Berlin 3".into()))
        );
        assert_eq!(first_equality(r#"user.department -ne "Sales""#), None);
    }
}
