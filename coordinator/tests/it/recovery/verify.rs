//! "Verified" (`scenarios.md`): after a recovery, a report of the tenant against the backup
//! shows nothing recoverable in the recovery's scope; every change the scenario calls
//! legitimate, and every change outside the scope, is still there as it was; what cannot be
//! recovered (hard-deleted, synced, dynamic memberships) is still reported so.

use rewind_common::report::{RecoveryAction, Scope};
use rewind_common::ReportEntry;
use rewind_loadtest::incident::compare::differences;
use rewind_loadtest::incident::{ExpectedReport, Scenario};

use crate::cluster::support::Coordinator;

/// What is wrong with the tenant after a recovery of `scope` (empty: verified), from a report
/// `after` of it against the backup.
pub fn problems(expected: &ExpectedReport, scope: &Scope, after: &[ReportEntry]) -> Vec<String> {
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
                // Kept as the incident left it.
                let d = differences(x, e);
                if !d.is_empty() {
                    out.push(format!(
                        "{} ({}) kept, but changed: {d:?}",
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
    // Legitimate changes, and changes out of scope, survive; hard-deleted objects stay gone.
    for x in &expected.entries {
        let kept = x.legitimate || !scope.contains(x.id, x.object_type);
        let gone = x.reason == Some(rewind_common::report::NotRecoverableReason::HardDeleted)
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

/// Requires the tenant to verify after a recovery of `scope` from `backup`.
pub async fn verified(
    c: &Coordinator,
    tenant: &str,
    backup: &str,
    scenario: Scenario,
    expected: &ExpectedReport,
    scope: &Scope,
) {
    let job = c
        .engine()
        .start_report(tenant, backup, Scope::All)
        .await
        .expect("the check's report starts");
    let job = c
        .wait(&job.id, rewind_coordinator::state::JobStatus::Successful)
        .await;
    let after = crate::cluster::support::entries(c.engine(), &job.id);
    let p = problems(expected, scope, &after);
    assert!(
        p.is_empty(),
        "{scenario}: the tenant does not verify ({} problems): {:#?}",
        p.len(),
        &p[..p.len().min(8)]
    );
}
