//! "Verified" after a recovery: a report of the tenant against the backup, checked by
//! `incident::verify::recovery_problems` (shared with the demo and the benchmark).

use rewind_common::report::Scope;
use rewind_loadtest::incident::verify::recovery_problems;
use rewind_loadtest::incident::{ExpectedReport, Scenario};

use crate::cluster::support::Coordinator;

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
    let p = recovery_problems(expected, scope, &after);
    assert!(
        p.is_empty(),
        "{scenario}: the tenant does not verify ({} problems): {:#?}",
        p.len(),
        &p[..p.len().min(8)]
    );
}
