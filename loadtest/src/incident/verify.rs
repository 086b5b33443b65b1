//! What "verified" means after a recovery (`scenarios.md`): a report of the tenant against the
//! backup shows nothing recoverable left in the recovery's scope; every change the scenario
//! calls legitimate, and every change outside the scope, is still there as the incident left
//! it; what cannot be recovered (hard-deleted, synced, dynamic memberships) is still reported
//! so. Used by the recovery tests, the demo and the recovery benchmark.

use rewind_common::model::ObjectType;
use rewind_common::report::{NotRecoverableReason, RecoveryAction, Scope};
use rewind_common::ReportEntry;

use super::compare::differences;
use super::{ExpectedReport, Scenario};

/// The scope each scenario recovers with (`scenarios.md`, "expected recovery"): S1 its
/// disabled users by id (Rewind's listed scope, beyond Microsoft's 100 ids: the 50 legitimate
/// department changes stay), S2 conditional access policies and named locations, S5 groups,
/// the others the whole tenant.
pub fn recovery_scope(scenario: Scenario, expected: &ExpectedReport) -> Scope {
    let by_type = |types: &[ObjectType]| Scope::types(types.iter().copied()).unwrap_or(Scope::All);
    match scenario {
        Scenario::S1 => Scope::ids_up_to(
            expected
                .entries
                .iter()
                .filter(|e| !e.legitimate && e.action == RecoveryAction::Update)
                .map(|e| e.id),
            Scope::MAX_LISTED_IDS,
        )
        .unwrap_or(Scope::All),
        Scenario::S2 => by_type(&[ObjectType::ConditionalAccessPolicy, ObjectType::NamedLocation]),
        Scenario::S5 => by_type(&[ObjectType::Group]),
        _ => Scope::All,
    }
}

/// What is wrong with a tenant after a recovery of `scope` (empty: verified), from a report
/// `after` of it against the backup, in words.
pub fn recovery_problems(
    expected: &ExpectedReport,
    scope: &Scope,
    after: &[ReportEntry],
) -> Vec<String> {
    let mut out = Vec::new();
    for e in after {
        let x = expected.entry(e.id);
        let in_scope = scope.contains(e.id, e.object_type);
        let recoverable_left = e.is_recoverable()
            && (e.action != RecoveryAction::Update
                || !e.changed_attributes.is_empty()
                || e.changed_links.iter().any(|l| l.recoverable));
        match x {
            Some(x) if x.legitimate || !in_scope => {
                let d = differences(x, e);
                if !d.is_empty() {
                    out.push(format!(
                        "{} ({}) is kept, but changed: {d:?}",
                        e.id, e.display_name
                    ));
                }
            }
            _ if recoverable_left && in_scope => out.push(format!(
                "{} {} ({}) still differs from the backup: {:?}, attributes {:?}, links {:?}",
                e.object_type,
                e.id,
                e.display_name,
                e.action,
                e.changed_attributes
                    .iter()
                    .map(|a| &a.name)
                    .collect::<Vec<_>>(),
                e.changed_links
                    .iter()
                    .filter(|l| l.recoverable)
                    .map(|l| (l.kind, l.target))
                    .collect::<Vec<_>>()
            )),
            None if !in_scope => out.push(format!(
                "{} ({}) outside the scope changed: {:?}",
                e.id, e.display_name, e.change
            )),
            _ => {}
        }
    }
    for x in &expected.entries {
        let kept = x.legitimate || !scope.contains(x.id, x.object_type);
        let gone = x.reason == Some(NotRecoverableReason::HardDeleted)
            && x.action == RecoveryAction::NotRecoverable;
        if (kept || gone) && !after.iter().any(|e| e.id == x.id) {
            out.push(format!(
                "{} ({}) should still show its change ({:?}), but the report has none",
                x.id, x.display_name, x.change
            ));
        }
    }
    out
}
