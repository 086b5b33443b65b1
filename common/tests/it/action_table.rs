//! The spec's change → recovery action table, one data-driven case per row (and the edge cases
//! around them), run through the real snapshot store, blob format, diff engine and planner.

use rewind_common::plan::{plan, Step};
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
    expect: Option<Expect>,
}

use LinkState::{Absent, Present};

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "object created after the backup → soft delete",
            backup: None,
            current: Some(user()),
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
            name: "object restored after the backup → soft delete again",
            backup: Some(deleted(user())),
            current: Some(user()),
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
            expect: Some(Expect {
                change: Change::Modified,
                action: RecoveryAction::Update,
                reason: None,
                attributes: &["blockMsolPowerShell"],
                links: &[],
                steps: &["update"],
            }),
        },
        Case {
            name: "only a non-recoverable property changed → no entry",
            backup: Some(service_principal()),
            current: Some(with(service_principal(), |o| {
                o.set("displayName", "Renamed".into());
            })),
            expect: None,
        },
        Case {
            name: "only owners changed → no entry (owners are never recovered)",
            backup: Some(group(false)),
            current: Some(with(group(false), |o| {
                o.add_link(LinkKind::Owners, Link::to(ObjectId(99)));
            })),
            expect: None,
        },
        Case {
            name: "unchanged → no entry",
            backup: Some(user()),
            current: Some(user()),
            expect: None,
        },
        Case {
            name: "created and soft-deleted since the backup → no entry",
            backup: None,
            current: Some(deleted(user())),
            expect: None,
        },
        Case {
            name: "soft-deleted in both → no entry",
            backup: Some(deleted(user())),
            current: Some(deleted(user())),
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
        let backup: Vec<_> = case.backup.into_iter().collect();
        let current: Vec<_> = case.current.into_iter().collect();
        let entries = diff_via_store(&backup, &current, &Scope::All, (2, 2), None);
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
                let steps: Vec<&str> = plan(&entries).iter().map(|s| step_name(&s.step)).collect();
                entries.len() == 1
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
