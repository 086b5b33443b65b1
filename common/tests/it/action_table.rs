//! The spec's change → recovery action table, one data-driven case per row (and the edge cases
//! around them), run through the real snapshot store, blob format, diff engine and planner.

use rewind_common::plan::{plan, PlanScope, Step};
use rewind_common::{
    Change, DirectoryObject, Lifecycle, Link, LinkKind, LinkState, NotRecoverableReason, ObjectId,
    ObjectType, RecoveryAction, Scope, SourceOfAuthority, Value,
};

use crate::support::diff_via_store;

const ID: ObjectId = ObjectId(0x4a00_0000_0000_4000_8000_0000_0000_0001);

fn user() -> DirectoryObject {
    let mut u = DirectoryObject::new(ID, ObjectType::User);
    u.set("displayName", "Ada Lopez".into());
    u.set("department", "Sales".into());
    u.set("jobTitle", "Analyst".into());
    u.set("accountEnabled", true.into());
    u
}

fn group(dynamic: bool) -> DirectoryObject {
    let mut g = DirectoryObject::new(ID, ObjectType::Group);
    g.set("displayName", "Sales team".into());
    g.dynamic_membership = dynamic;
    g.set_links(
        LinkKind::Members,
        vec![Link::to(ObjectId(11)), Link::to(ObjectId(12))],
    );
    g
}

fn service_principal() -> DirectoryObject {
    let mut sp = DirectoryObject::new(ID, ObjectType::ServicePrincipal);
    sp.set("displayName", "Rogue app".into());
    sp.set("notes", "original".into());
    sp
}

fn grant(target: u128) -> Link {
    Link {
        target: ObjectId(target),
        data: Some(Value::Map(
            [
                ("consentType".to_owned(), Value::from("AllPrincipals")),
                ("scope".to_owned(), Value::from("Directory.ReadWrite.All")),
            ]
            .into(),
        )),
    }
}

/// A user at the far end of a link (ids 11, 12, ... as `group` names its members).
fn member(id: u128) -> DirectoryObject {
    with(user(), |o| o.id = ObjectId(id))
}

/// An app role assignment of principal `principal`, held by its resource service principal.
fn assignment(target: u128, principal: u128) -> Link {
    Link {
        target: ObjectId(target),
        data: Some(Value::Map(
            [
                (
                    "principalId".to_owned(),
                    Value::from(ObjectId(principal).to_string().as_str()),
                ),
                (
                    "appRoleId".to_owned(),
                    Value::from(ObjectId(0).to_string().as_str()),
                ),
            ]
            .into(),
        )),
    }
}

fn deleted(mut o: DirectoryObject) -> DirectoryObject {
    o.lifecycle = Lifecycle::SoftDeleted {
        deleted_at: 1_795_100_000,
    };
    o
}

fn with(mut o: DirectoryObject, f: impl FnOnce(&mut DirectoryObject)) -> DirectoryObject {
    f(&mut o);
    o
}

/// What a case must produce; `None` for "no report entry".
struct Expect {
    change: Change,
    action: RecoveryAction,
    reason: Option<NotRecoverableReason>,
    attributes: &'static [&'static str],
    /// (current, backup, recoverable) of each changed link, in target order.
    links: &'static [(LinkState, LinkState, bool)],
    /// The planned steps' kinds, in order.
    steps: &'static [&'static str],
}

struct Case {
    name: &'static str,
    backup: Option<DirectoryObject>,
    current: Option<DirectoryObject>,
    /// Objects at the far ends of the case's links, as they are in the backup and now (their
    /// own entries are not the case's).
    ends: Vec<(Option<DirectoryObject>, Option<DirectoryObject>)>,
    expect: Option<Expect>,
}

use LinkState::{Absent, Present};

const SCOPE: PlanScope<'static> = PlanScope {
    tenant: "contoso",
    job: "test",
};

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "object created after the backup → soft delete",
            backup: None,
            current: Some(user()),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Created,
                action: RecoveryAction::SoftDelete,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["softDelete"],
            }),
        },
        Case {
            name: "recoverable properties changed → update, reverting those only",
            backup: Some(with(service_principal(), |o| {
                o.set("displayName", "Old name".into());
            })),
            current: Some(with(service_principal(), |o| {
                o.set("notes", "tampered".into());
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["notes"],
                links: &[],
                steps: &["update"],
            }),
        },
        Case {
            name: "a property cleared since the backup → update writes it back",
            backup: Some(user()),
            current: Some(with(user(), |o| {
                o.set("jobTitle", Value::Null);
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["jobTitle"],
                links: &[],
                steps: &["update"],
            }),
        },
        Case {
            name: "static links changed → update (remove the added, add the removed)",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.remove_link(LinkKind::Members, ObjectId(11));
                o.add_link(LinkKind::Members, Link::to(ObjectId(13)));
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &[],
                links: &[(Absent, Present, true), (Present, Absent, true)],
                steps: &["removeLink", "addLink"],
            }),
        },
        Case {
            name: "object soft-deleted after the backup → restore",
            backup: Some(user()),
            current: Some(deleted(user())),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["restore"],
            }),
        },
        Case {
            name: "soft-deleted and also changed → restore, then update",
            backup: Some(user()),
            current: Some(deleted(with(user(), |o| {
                o.set("department", "Legal".into());
            }))),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &["department"],
                links: &[],
                steps: &["restore", "update"],
            }),
        },
        Case {
            name: "user soft-deleted → restore; the MFA state the recycle bin does not show is no change",
            backup: Some(with(user(), |o| {
                o.set("perUserMfaState", "enforced".into());
            })),
            current: Some(deleted(user())),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["restore"],
            }),
        },
        Case {
            name: "object restored after the backup → soft delete again",
            backup: Some(deleted(user())),
            current: Some(user()),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Restored,
                action: RecoveryAction::SoftDeleteAgain,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["softDelete"],
            }),
        },
        Case {
            name: "object hard-deleted → not recoverable, never re-created",
            backup: Some(user()),
            current: None,
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::HardDeleted,
                action: RecoveryAction::NotRecoverable,
                reason: Some(NotRecoverableReason::HardDeleted),
                attributes: &[],
                links: &[],
                steps: &[],
            }),
        },
        Case {
            name: "object synced from on-premises → shown, never recovered",
            backup: Some(with(user(), |o| o.source = SourceOfAuthority::OnPremises)),
            current: Some(with(user(), |o| {
                o.source = SourceOfAuthority::OnPremises;
                o.set("department", "Finance".into());
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::NotRecoverable,
                reason: Some(NotRecoverableReason::SyncedFromOnPremises),
                attributes: &["department"],
                links: &[],
                steps: &[],
            }),
        },
        Case {
            name: "source of authority moved to cloud → not moved back, other properties recovered",
            backup: Some(with(user(), |o| o.source = SourceOfAuthority::OnPremises)),
            current: Some(with(user(), |o| {
                o.set("department", "Finance".into());
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["department"],
                links: &[],
                steps: &["update"],
            }),
        },
        Case {
            name: "dynamic membership changed → shown, not recoverable",
            backup: Some(group(true)),
            current: Some(with(group(true), |o| {
                o.add_link(LinkKind::Members, Link::to(ObjectId(13)));
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::NotRecoverable,
                reason: Some(NotRecoverableReason::DynamicMembership),
                attributes: &[],
                links: &[(Present, Absent, false)],
                steps: &[],
            }),
        },
        Case {
            name: "dynamic group changed and re-computed → properties updated, memberships left",
            backup: Some(group(true)),
            current: Some(with(group(true), |o| {
                o.set("description", "tampered".into());
                o.add_link(LinkKind::Members, Link::to(ObjectId(13)));
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["description"],
                links: &[(Present, Absent, false)],
                steps: &["update"],
            }),
        },
        Case {
            name: "dynamic group soft-deleted → restore",
            backup: Some(group(true)),
            current: Some(deleted(group(true))),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["restore"],
            }),
        },
        Case {
            name:
                "service principal created with a grant and an assignment → soft delete with them",
            backup: None,
            current: Some(with(service_principal(), |o| {
                o.add_link(LinkKind::OAuth2PermissionGrants, grant(21));
                o.add_link(
                    LinkKind::AppRoleAssignedTo,
                    Link {
                        target: ObjectId(22),
                        data: Some(Value::Map(
                            [("principalId".to_owned(), Value::from("x"))].into(),
                        )),
                    },
                );
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Created,
                action: RecoveryAction::SoftDelete,
                reason: None,
                attributes: &[],
                links: &[(Present, Absent, true), (Present, Absent, true)],
                steps: &["removeLink", "removeLink", "softDelete"],
            }),
        },
        Case {
            name: "admin-consent grant removed from an existing service principal → re-added",
            backup: Some(with(service_principal(), |o| {
                o.add_link(LinkKind::OAuth2PermissionGrants, grant(21));
            })),
            current: Some(service_principal()),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &[],
                links: &[(Absent, Present, true)],
                steps: &["addLink"],
            }),
        },
        Case {
            name: "grant's scope changed → removed, then re-added with the backup's data",
            backup: Some(with(service_principal(), |o| {
                o.add_link(LinkKind::OAuth2PermissionGrants, grant(21));
            })),
            current: Some(with(service_principal(), |o| {
                let mut widened = grant(21);
                widened.data = Some(Value::Map(
                    [("scope".to_owned(), Value::from("Everything.All"))].into(),
                ));
                o.add_link(LinkKind::OAuth2PermissionGrants, widened);
            })),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &[],
                links: &[(Present, Present, true)],
                steps: &["removeLink", "addLink"],
            }),
        },
        Case {
            name: "conditional access policy switched off → update",
            backup: Some(with(
                DirectoryObject::new(ID, ObjectType::ConditionalAccessPolicy),
                |o| {
                    o.set("state", "enabled".into());
                },
            )),
            current: Some(with(
                DirectoryObject::new(ID, ObjectType::ConditionalAccessPolicy),
                |o| {
                    o.set("state", "disabled".into());
                },
            )),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["state"],
                links: &[],
                steps: &["update"],
            }),
        },
        Case {
            name: "singleton policy changed → update",
            backup: Some(with(
                DirectoryObject::new(ID, ObjectType::AuthorizationPolicy),
                |o| {
                    o.set("blockMsolPowerShell", true.into());
                },
            )),
            current: Some(with(
                DirectoryObject::new(ID, ObjectType::AuthorizationPolicy),
                |o| {
                    o.set("blockMsolPowerShell", false.into());
                },
            )),
            ends: Vec::new(),
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["blockMsolPowerShell"],
                links: &[],
                steps: &["update"],
            }),
        },
        // Links of objects in the recycle bin: Graph hides them and brings them back with the
        // object, so a link is compared only where both ends are active in both snapshots.
        Case {
            name: "member soft-deleted since the backup → no link change (hidden, comes back with it)",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.remove_link(LinkKind::Members, ObjectId(11));
            })),
            ends: vec![(Some(member(11)), Some(deleted(member(11))))],
            expect: None,
        },
        Case {
            name: "member restored since the backup → no link change (it was hidden in the backup)",
            backup: Some(with(group(false), |o| {
                o.remove_link(LinkKind::Members, ObjectId(12));
            })),
            current: Some(group(false)),
            ends: vec![(Some(deleted(member(12))), Some(member(12)))],
            expect: None,
        },
        Case {
            name: "group soft-deleted since the backup → restore, no link steps (members come back with it)",
            backup: Some(group(false)),
            current: Some(with(deleted(group(false)), |o| o.set_links(LinkKind::Members, vec![]))),
            ends: vec![
                (Some(member(11)), Some(member(11))),
                (Some(member(12)), Some(member(12))),
            ],
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["restore"],
            }),
        },
        Case {
            name: "group restored since the backup → soft delete again, no link steps",
            backup: Some(with(deleted(group(false)), |o| o.set_links(LinkKind::Members, vec![]))),
            current: Some(group(false)),
            ends: vec![
                (Some(member(11)), Some(member(11))),
                (Some(member(12)), Some(member(12))),
            ],
            expect: Some(Expect {
                change: Change::Restored,
                action: RecoveryAction::SoftDeleteAgain,
                reason: None,
                attributes: &[],
                links: &[],
                steps: &["softDelete"],
            }),
        },
        Case {
            name: "member hard-deleted since the backup → link lost, shown on its holder, not recoverable",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.remove_link(LinkKind::Members, ObjectId(11));
            })),
            ends: vec![(Some(member(11)), None), (Some(member(12)), Some(member(12)))],
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::NotRecoverable,
                reason: Some(NotRecoverableReason::HardDeleted),
                attributes: &[],
                links: &[(Absent, Present, false)],
                steps: &[],
            }),
        },
        Case {
            name: "member hard-deleted and another removed → update re-adds only the one that exists",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| o.set_links(LinkKind::Members, vec![]))),
            ends: vec![(Some(member(11)), None), (Some(member(12)), Some(member(12)))],
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &[],
                links: &[(Absent, Present, false), (Absent, Present, true)],
                steps: &["addLink"],
            }),
        },
        Case {
            name: "group soft-deleted and a member hard-deleted → restore, the lost link shown",
            backup: Some(group(false)),
            current: Some(with(deleted(group(false)), |o| o.set_links(LinkKind::Members, vec![]))),
            ends: vec![(Some(member(11)), None), (Some(member(12)), Some(member(12)))],
            expect: Some(Expect {
                change: Change::SoftDeleted,
                action: RecoveryAction::Restore,
                reason: None,
                attributes: &[],
                links: &[(Absent, Present, false)],
                steps: &["restore"],
            }),
        },
        Case {
            name: "dynamic group's member soft-deleted → no entry (hidden, not recomputed)",
            backup: Some(group(true)),
            current: Some(with(group(true), |o| {
                o.remove_link(LinkKind::Members, ObjectId(12));
            })),
            ends: vec![(Some(member(12)), Some(deleted(member(12))))],
            expect: None,
        },
        Case {
            name: "assignment's principal soft-deleted → no link change",
            backup: Some(with(service_principal(), |o| {
                o.add_link(LinkKind::AppRoleAssignedTo, assignment(22, 31));
            })),
            current: Some(service_principal()),
            ends: vec![(Some(member(31)), Some(deleted(member(31))))],
            expect: None,
        },
        Case {
            name: "assignment's principal hard-deleted → assignment lost, not recoverable",
            backup: Some(with(service_principal(), |o| {
                o.add_link(LinkKind::AppRoleAssignedTo, assignment(22, 31));
            })),
            current: Some(service_principal()),
            ends: vec![(Some(member(31)), None)],
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::NotRecoverable,
                reason: Some(NotRecoverableReason::HardDeleted),
                attributes: &[],
                links: &[(Absent, Present, false)],
                steps: &[],
            }),
        },
        Case {
            name: "member created since the backup added → update removes it (a newcomer is not hidden)",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.add_link(LinkKind::Members, Link::to(ObjectId(13)));
            })),
            ends: vec![(None, Some(member(13)))],
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &[],
                links: &[(Present, Absent, true)],
                steps: &["removeLink"],
            }),
        },
        Case {
            name: "only a non-recoverable property changed → no entry",
            backup: Some(service_principal()),
            current: Some(with(service_principal(), |o| {
                o.set("displayName", "Renamed".into());
            })),
            ends: Vec::new(),
            expect: None,
        },
        Case {
            name: "only owners changed → no entry (owners are never recovered)",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.add_link(LinkKind::Owners, Link::to(ObjectId(99)));
            })),
            ends: Vec::new(),
            expect: None,
        },
        Case {
            name: "unchanged → no entry",
            backup: Some(user()),
            current: Some(user()),
            ends: Vec::new(),
            expect: None,
        },
        Case {
            name: "created and soft-deleted since the backup → no entry",
            backup: None,
            current: Some(deleted(user())),
            ends: Vec::new(),
            expect: None,
        },
        Case {
            name: "soft-deleted in both → no entry",
            backup: Some(deleted(user())),
            current: Some(deleted(user())),
            ends: Vec::new(),
            expect: None,
        },
    ]
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Restore { .. } => "restore",
        Step::Update { .. } => "update",
        Step::AddLink { .. } => "addLink",
        Step::RemoveLink { .. } => "removeLink",
        Step::SoftDelete { .. } => "softDelete",
    }
}

#[test]
fn every_row_of_the_change_to_action_table() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut backup: Vec<_> = case.backup.into_iter().collect();
        let mut current: Vec<_> = case.current.into_iter().collect();
        for (b, c) in case.ends {
            backup.extend(b);
            current.extend(c);
        }
        backup.sort_by_key(|o| o.id);
        current.sort_by_key(|o| o.id);
        let all = diff_via_store(&backup, &current, &Scope::All, (2, 2), None);
        let steps: Vec<&str> = plan(SCOPE, &all)
            .iter()
            .filter(|s| s.step.object_id() == ID)
            .map(|s| step_name(&s.step))
            .collect();
        let entries: Vec<_> = all.into_iter().filter(|e| e.id == ID).collect();
        let got = entries.first();
        let ok = match (&case.expect, got) {
            (None, None) => true,
            (Some(x), Some(e)) => {
                let attrs: Vec<&str> = e
                    .changed_attributes
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                let links: Vec<_> = e
                    .changed_links
                    .iter()
                    .map(|l| (l.current, l.backup, l.recoverable))
                    .collect();
                let reasons_agree = e
                    .changed_links
                    .iter()
                    .all(|l| l.recoverable == l.reason.is_none());
                entries.len() == 1
                    && reasons_agree
                    && e.change == x.change
                    && e.action == x.action
                    && e.reason == x.reason
                    && attrs == x.attributes
                    && links == x.links
                    && steps == x.steps
                    && e.id == ID
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{}: got {entries:#?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_changed_attribute_carries_both_values() {
    let entries = diff_via_store(
        &[user()],
        &[with(user(), |o| {
            o.set("department", "Legal".into());
        })],
        &Scope::All,
        (0, 0),
        None,
    );
    let a = &entries[0].changed_attributes[0];
    assert_eq!(a.current, Some(Value::from("Legal")));
    assert_eq!(a.backup, Some(Value::from("Sales")));
    assert_eq!(entries[0].display_name, "Ada Lopez");
}

#[test]
fn scope_by_type_and_by_id() {
    let u = with(user(), |o| o.id = ObjectId(1 << 120));
    let mut g = group(false);
    g.id = ObjectId(2 << 120);
    let backup = vec![u.clone(), g.clone()];
    let current = vec![
        with(u.clone(), |o| {
            o.set("department", "Legal".into());
        }),
        with(g.clone(), |o| {
            o.set("description", "x".into());
        }),
    ];
    let all = diff_via_store(&backup, &current, &Scope::All, (1, 1), None);
    assert_eq!(all.len(), 2);
    let types = Scope::types([ObjectType::Group]).expect("scope");
    let only_groups = diff_via_store(&backup, &current, &types, (1, 1), None);
    assert_eq!(only_groups.len(), 1);
    assert_eq!(only_groups[0].object_type, ObjectType::Group);
    let ids = Scope::ids([u.id]).expect("scope");
    let only_user = diff_via_store(&backup, &current, &ids, (1, 1), None);
    assert_eq!(only_user.len(), 1);
    assert_eq!(only_user[0].id, u.id);
}

#[test]
fn no_link_step_for_a_link_that_follows_its_far_end() {
    // An entry that lists links to objects the same recovery restores, soft-deletes again or
    // cannot bring back: none of those links gets a step of its own.
    let (restored, again, gone, kept) = (ObjectId(11), ObjectId(12), ObjectId(13), ObjectId(14));
    let link = |target, current, backup| rewind_common::ChangedLink {
        kind: LinkKind::Members,
        target,
        current,
        backup,
        recoverable: true,
        reason: None,
        current_data: None,
        backup_data: None,
    };
    let entry = |id, change, action| rewind_common::ReportEntry {
        id,
        object_type: ObjectType::User,
        display_name: String::new(),
        change,
        action,
        reason: None,
        changed_attributes: Vec::new(),
        changed_links: Vec::new(),
    };
    let mut holder = entry(ID, Change::Modified, RecoveryAction::Update);
    holder.object_type = ObjectType::Group;
    holder.changed_links = vec![
        link(restored, Absent, Present),
        link(again, Present, Absent),
        link(gone, Absent, Present),
        link(kept, Absent, Present),
    ];
    let mut entries = vec![
        holder,
        entry(restored, Change::SoftDeleted, RecoveryAction::Restore),
        entry(again, Change::Restored, RecoveryAction::SoftDeleteAgain),
        entry(gone, Change::HardDeleted, RecoveryAction::NotRecoverable),
    ];
    entries.sort_by_key(|e| e.id);
    let link_steps: Vec<_> = plan(SCOPE, &entries)
        .into_iter()
        .filter_map(|s| match s.step {
            Step::AddLink { target, .. } => Some(("add", target)),
            Step::RemoveLink { target, .. } => Some(("remove", target)),
            _ => None,
        })
        .collect();
    assert_eq!(link_steps, [("add", kept)]);
}
