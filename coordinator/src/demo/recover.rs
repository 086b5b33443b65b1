//! The demo's recovery phase, through the API: each scenario's tenant is recovered as
//! `scenarios.md` says (S1 its disabled users by id, S2 its policies and named locations, S5
//! its groups, the others whole), a recovery waiting for approval is approved by a second
//! administrator, and every tenant is then verified: a new report against the backup must
//! show nothing recoverable left in the scope, the legitimate and out-of-scope changes kept,
//! and what cannot be recovered still reported so (`incident::verify`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rewind_common::report::Scope;
use rewind_loadtest::dirsim::write_log;
use rewind_loadtest::incident::verify::{recovery_problems, recovery_scope};
use serde_json::{json, Value as Json};

use super::{job_id, wait_jobs, DemoTenant, Services, JOB_LIMIT};
use crate::api::change::criteria_of;

/// What one scenario's recovery did.
#[derive(Debug)]
pub struct RecoveryRun {
    pub tenant: String,
    pub scenario: String,
    pub status: String,
    pub approved_by: Option<String>,
    pub applied: u64,
    pub already: u64,
    pub skipped: u64,
    pub failed: u64,
    /// From the request to the job's end.
    pub seconds: f64,
    /// Writes the directory received, and the seconds from its first to its last.
    pub writes: u64,
    pub write_seconds: f64,
    /// The most writes the directory received in any sliding second (what the budget bounds).
    pub peak_per_second: u64,
    pub problems: Vec<String>,
}

impl RecoveryRun {
    /// Writes per second while it wrote: over at least one second, so that one batch
    /// answered in a millisecond is not read as thousands per second.
    pub fn rate(&self) -> f64 {
        if self.writes == 0 {
            return 0.0;
        }
        self.writes as f64 / self.write_seconds.max(1.0)
    }
}

/// The most of `times_ms` (ascending) within any window of one second.
fn peak_per_second(times_ms: &[i64]) -> u64 {
    let mut start = 0;
    let mut peak = 0;
    for (end, t) in times_ms.iter().enumerate() {
        while times_ms[start] <= t - 1000 {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    peak as u64
}

/// The body of `POST snapshots/{id}/recoveryJobs` for a scope.
fn body_of(scope: &Scope) -> Json {
    match scope {
        Scope::All => json!({}),
        Scope::Ids(ids) if ids.len() > Scope::MAX_IDS => {
            json!({"objectIds": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()})
        }
        s => json!({"filteringCriteria": criteria_of(s)}),
    }
}

/// The newest write of a tenant's log, as a position to read after.
fn last_write(sim: &str, tenant: &str) -> anyhow::Result<u64> {
    Ok(write_log(sim, tenant, 0)
        .with_context(|| format!("reading the write log of {tenant}"))?
        .last()
        .map_or(0, |r| r.seq))
}

/// Recovers every tenant, then verifies it; the runs in scenario order.
pub fn recover_and_verify(
    services: &Services,
    approver: &str,
    tenants: &mut [DemoTenant],
) -> anyhow::Result<Vec<RecoveryRun>> {
    let api = &services.api;
    let sim = services.sim.base_url().to_owned();
    super::each(tenants, |t| {
        let expected = t
            .expected
            .as_ref()
            .context("a tenant without its expected report")?;
        let scope = recovery_scope(t.scenario, expected);
        let before = last_write(&sim, &t.name)?;
        let started = Instant::now();
        let answer = api.post(
            &format!(
                "/tenants/{}/v1.0/directory/recovery/snapshots/{}/recoveryJobs",
                t.name, t.snapshot
            ),
            &services.admin,
            &body_of(&scope),
            &[202],
        )?;
        let job = job_id(&answer)?;
        let mut approved_by = None;
        let view = loop {
            let view = api
                .get(
                    &format!("/tenants/{}/rewind/jobs/{job}", t.name),
                    &services.reader,
                    &[200],
                )?
                .body;
            match view["status"].as_str() {
                Some("successful") => break view,
                Some("failed" | "abandoned") => bail!(
                    "the recovery of {} (job {job}) ended {}: {}",
                    t.name,
                    view["status"],
                    view["error"]
                ),
                Some("awaitingApproval") if approved_by.is_none() => {
                    tracing::info!(tenant = %t.name, job, objects = %view["recovery"]["approval"]["objects"], "recovery awaits approval; a second administrator approves it");
                    api.post(
                        &format!("/tenants/{}/rewind/recoveries/{job}/approve", t.name),
                        approver,
                        &json!({}),
                        &[200],
                    )?;
                    approved_by = Some("demo-approver".to_owned());
                }
                _ => {}
            }
            if started.elapsed() > JOB_LIMIT {
                bail!("the recovery of {} did not finish within {} s", t.name, JOB_LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let seconds = started.elapsed().as_secs_f64();
        let log = write_log(&sim, &t.name, before)
            .with_context(|| format!("reading the write log of {}", t.name))?;
        let write_seconds = match (log.first(), log.last()) {
            (Some(a), Some(b)) => (b.at_ms - a.at_ms) as f64 / 1000.0,
            _ => 0.0,
        };
        let mut times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
        times.sort_unstable();
        let count = |k: &str| view["counts"][k].as_u64().unwrap_or(0);
        let run = RecoveryRun {
            tenant: t.name.clone(),
            scenario: t.scenario.name().to_owned(),
            status: if count("failedChanges") > 0 {
                "completed with warnings".into()
            } else {
                "completed".into()
            },
            approved_by,
            applied: count("applied"),
            already: count("alreadyInState"),
            skipped: count("skipped"),
            failed: count("failedChanges"),
            seconds,
            writes: log.len() as u64,
            write_seconds,
            peak_per_second: peak_per_second(&times),
            problems: Vec::new(),
        };
        Ok((run, scope))
    })
    .and_then(|runs| verify(services, tenants, runs))
}

/// A report of every tenant against its backup after the recoveries, checked.
fn verify(
    services: &Services,
    tenants: &mut [DemoTenant],
    runs: Vec<(RecoveryRun, Scope)>,
) -> anyhow::Result<Vec<RecoveryRun>> {
    let api = &services.api;
    let mut jobs = Vec::new();
    for t in tenants.iter() {
        let answer = api.post(
            &format!(
                "/tenants/{}/v1.0/directory/recovery/snapshots/{}/recoveryPreviewJobs",
                t.name, t.snapshot
            ),
            &services.admin,
            &json!({}),
            &[202],
        )?;
        jobs.push((t.name.clone(), job_id(&answer)?));
    }
    wait_jobs(api, &services.reader, "verification report", &jobs)?;
    let engine = services.node.engine();
    let mut out = Vec::new();
    for ((t, (_, job)), (mut run, scope)) in tenants.iter().zip(&jobs).zip(runs) {
        let expected = t
            .expected
            .as_ref()
            .context("a tenant without its expected report")?;
        let after = crate::engine::report_entries(engine, job)?;
        run.problems = recovery_problems(expected, &scope, &after);
        out.push(run);
    }
    Ok(out)
}

/// The recovery part of the summary.
pub fn print_recoveries(runs: &[RecoveryRun], budget: u32) {
    println!();
    println!(
        "{:<9}{:<40}{:>9}{:>9}{:>9}{:>8}{:>9}{:>10}{:>8}  verified",
        "recovery",
        "status",
        "applied",
        "already",
        "skipped",
        "failed",
        "seconds",
        "writes/s",
        "peak/s"
    );
    for r in runs {
        let status = match &r.approved_by {
            Some(by) => format!("{} (approved by {by})", r.status),
            None => r.status.clone(),
        };
        println!(
            "{:<9}{:<40}{:>9}{:>9}{:>9}{:>8}{:>9.1}{:>10.0}{:>8}  {}",
            r.scenario,
            status,
            r.applied,
            r.already,
            r.skipped,
            r.failed,
            r.seconds,
            r.rate(),
            r.peak_per_second,
            if r.problems.is_empty() { "yes" } else { "NO" }
        );
    }
    let writes: u64 = runs.iter().map(|r| r.writes).sum();
    let busiest = runs.iter().map(|r| r.peak_per_second).max().unwrap_or(0);
    println!(
        "writes: {writes} in all; the busiest tenant wrote at most {busiest} in a second against its budget of {budget}/s"
    );
    for r in runs.iter().filter(|r| !r.problems.is_empty()) {
        println!();
        println!("{} ({}) does not verify:", r.scenario, r.tenant);
        for p in r.problems.iter().take(10) {
            println!("  {p}");
        }
        if r.problems.len() > 10 {
            println!("  ... {} problems in all", r.problems.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_most_writes_in_any_second() {
        assert_eq!(peak_per_second(&[]), 0);
        assert_eq!(peak_per_second(&[5]), 1);
        // 999 ms apart share a second; 1000 ms apart do not.
        assert_eq!(peak_per_second(&[0, 999]), 2);
        assert_eq!(peak_per_second(&[0, 1000]), 1);
        assert_eq!(peak_per_second(&[0, 10, 20, 990, 995, 999, 1018]), 6);
        assert_eq!(peak_per_second(&[0, 10, 20, 1005, 1010, 1015, 1018]), 5);
        let run = |writes, write_seconds| RecoveryRun {
            tenant: String::new(),
            scenario: String::new(),
            status: String::new(),
            approved_by: None,
            applied: 0,
            already: 0,
            skipped: 0,
            failed: 0,
            seconds: 0.0,
            writes,
            write_seconds,
            peak_per_second: 0,
            problems: Vec::new(),
        };
        assert_eq!(run(20, 0.001).rate(), 20.0, "one batch: over a second");
        assert_eq!(run(1000, 4.0).rate(), 250.0);
        assert_eq!(run(0, 0.0).rate(), 0.0);
    }
}
