//! Approval, dry run and undo of recoveries, through the engine against the simulator.

use std::time::Duration;

use rewind_common::report::Scope;
use rewind_coordinator::state::{JobStatus, Outcome, RecoverySettings};
use rewind_loadtest::incident::{Phase, Scenario};

use super::*;

/// The simulator's write count (all tenants).
async fn writes(base: &str) -> u64 {
    sim_counters(base).await["writes"]
        .as_u64()
        .expect("a write count")
}

/// A tenant of `scenario` after its incident, with its backup and expected report.
async fn incident_tenant(
    c: &Coordinator,
    base: &str,
    name: &str,
    scenario: Scenario,
    threshold: u64,
) -> (String, ExpectedReport) {
    generate(base, name, OBJECTS).await;
    let mut t = no_approval(tenant(base, name, 3));
    t.recovery.approval_threshold = threshold;
    c.add(t).await;
    let backup = c.backup(name).await.snapshot.unwrap();
    let expected = incident(base, name, scenario, Phase::AfterBackup).await;
    (backup, expected)
}

async fn wait_status(c: &Coordinator, job: &str, want: JobStatus) -> Job {
    let started = std::time::Instant::now();
    loop {
        let j = c.engine().state().get_job(job).unwrap();
        if j.status == want {
            return j;
        }
        assert!(
            !j.status.is_terminal(),
            "{job} ended {:?}: {:?}",
            j.status,
            j.error
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{job} stays {:?}",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dry run whose finish a crash interrupted (its plan persisted, the job still
/// `calculating`) finishes when the coordinator resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_interrupted_after_its_plan_finishes_on_resume() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(dir.path(), Coordinator::embedded(dir.path(), 2), key).await;
    let (backup, _) = incident_tenant(&c, &base, "resume", Scenario::S3, u64::MAX).await;
    let state = c.engine().state();
    // A recovery as the planner leaves it just before its finish: planned, still calculating.
    let job = state
        .create_job(
            "resume",
            rewind_coordinator::state::JobKind::Recovery {
                backup: backup.clone(),
                scope: Scope::All,
                from_report: None,
                dry_run: true,
                undo_of: None,
            },
        )
        .await
        .unwrap();
    state
        .transition(&job.id, JobStatus::LoadingData, |_| {})
        .await
        .unwrap();
    state
        .transition(&job.id, JobStatus::Calculating, |j| {
            j.phase = rewind_coordinator::state::Phase::Applying;
        })
        .await
        .unwrap();
    c.engine().advance(&job.id, true).await.unwrap();
    let done = state.get_job(&job.id).unwrap();
    assert_eq!(done.status, JobStatus::Successful, "{done:?}");
    assert_eq!(done.phase, rewind_coordinator::state::Phase::Done);
}

/// Above the tenant's threshold a recovery waits, with nothing written; its starter cannot
/// approve it, another administrator can, and it then completes verified. A rejected one is
/// abandoned with nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_above_the_threshold_waits_for_a_second_administrator() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(dir.path(), Coordinator::embedded(dir.path(), 2), key).await;
    let (backup, expected) = incident_tenant(&c, &base, "appr", Scenario::S1, 25).await;
    let scope = scenario_scope(Scenario::S1, &expected);
    let alice = admin("alice");
    let before = writes(&base).await;
    let job = c
        .engine()
        .start_recovery_by(&alice, "appr", &backup, scope.clone(), None, false, None)
        .await
        .unwrap();
    let waiting = wait_status(&c, &job.id, JobStatus::AwaitingApproval).await;
    let progress = waiting.recovery.clone().unwrap();
    assert!(
        progress.needs_approval && progress.objects > 25,
        "{progress:?}"
    );
    // The plan is persisted before the approval, and nothing is applied.
    let planned = actions(&c, &job.id);
    assert!(!planned.is_empty() && planned.iter().all(|a| a.outcome == Outcome::Planned));
    assert_eq!(writes(&base).await, before, "nothing written while waiting");
    let own = c.engine().decide_recovery_by(&alice, &job.id, true).await;
    let err = own.expect_err("the starter cannot approve").to_string();
    assert!(err.contains("second administrator"), "{err}");
    assert_eq!(
        c.engine().state().get_job(&job.id).unwrap().status,
        JobStatus::AwaitingApproval
    );
    let done = c
        .engine()
        .decide_recovery_by(&admin("bob"), &job.id, true)
        .await
        .unwrap();
    assert_eq!(done.recovery.unwrap().approval.unwrap().by_name, "bob");
    let done = c.wait(&job.id, JobStatus::Successful).await;
    assert!(done.counts["applied"] > 25);
    verify::verified(&c, "appr", &backup, Scenario::S1, &expected, &scope).await;
    // The log names both decisions' actors.
    let records: Vec<_> = c
        .engine()
        .state()
        .audit_records()
        .map(|r| r.unwrap())
        .filter(|r| r.subject.job.as_deref() == Some(job.id.as_str()))
        .collect();
    assert!(records.iter().any(|r| r.action == "recovery.approved"
        && matches!(&r.actor, rewind_coordinator::state::Actor::Token { name, .. } if name == "bob")));
    let applied = records
        .iter()
        .filter(|r| r.action == "recovery.action")
        .count() as u64;
    assert_eq!(
        applied, done.counts["applied"],
        "one audit record per applied action"
    );

    // A second one, rejected: abandoned, nothing applied.
    let (backup2, expected2) = incident_tenant(&c, &base, "appr-no", Scenario::S1, 25).await;
    let before = writes(&base).await;
    let job = c
        .engine()
        .start_recovery_by(
            &alice,
            "appr-no",
            &backup2,
            scenario_scope(Scenario::S1, &expected2),
            None,
            false,
            None,
        )
        .await
        .unwrap();
    wait_status(&c, &job.id, JobStatus::AwaitingApproval).await;
    let rejected = c
        .engine()
        .decide_recovery_by(&admin("bob"), &job.id, false)
        .await
        .unwrap();
    assert_eq!(rejected.status, JobStatus::Abandoned);
    assert_eq!(writes(&base).await, before);
    let again = c
        .engine()
        .decide_recovery_by(&admin("carol"), &job.id, true)
        .await;
    assert!(
        again.is_err(),
        "a decided recovery takes no second decision"
    );
}

/// A dry run plans and writes nothing; the real run then makes exactly its steps. The real
/// run is then undone from its pre-recovery snapshot, which re-creates the grant and the
/// assignment it removed (with new ids): the tenant is back as it was before the recovery,
/// and a second undo plans nothing, re-created links included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_writes_nothing_and_an_undo_puts_back_the_state_before_the_recovery() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(dir.path(), Coordinator::embedded(dir.path(), 2), key).await;
    let (backup, expected) = incident_tenant(&c, &base, "dry", Scenario::S3, u64::MAX).await;
    let alice = admin("alice");
    let before = writes(&base).await;
    let dry = c
        .engine()
        .start_recovery_by(&alice, "dry", &backup, Scope::All, None, true, None)
        .await
        .unwrap();
    let dry = c.wait(&dry.id, JobStatus::Successful).await;
    assert_eq!(writes(&base).await, before, "a dry run writes nothing");
    let dry_steps: Vec<_> = actions(&c, &dry.id)
        .into_iter()
        .filter_map(|a| {
            assert!(matches!(
                a.outcome,
                Outcome::Planned | Outcome::Skipped { .. }
            ));
            a.step
        })
        .collect();
    assert_eq!(dry.counts["planned"], dry_steps.len() as u64);
    assert!(
        dry_steps.len() >= 3,
        "S3: the grant, the assignment and the delete: {dry_steps:?}"
    );

    // The directory calls the dry run lists, as the connector would send them.
    let planned: Vec<rewind_common::plan::PlannedStep> = actions(&c, &dry.id)
        .into_iter()
        .filter_map(|a| {
            a.step.map(|step| rewind_common::plan::PlannedStep {
                action_id: a.action_id,
                step,
                note: a.note,
            })
        })
        .collect();
    let graph_base = format!("{base}/dry/v1.0");
    let mut calls: Vec<(String, String, String)> =
        rewind_common::connector::planned_calls(&graph_base, &planned)
            .into_iter()
            .map(|c| (c.method, c.version, c.path))
            .collect();
    let log_start = {
        let (b, t) = (base.clone(), "dry".to_owned());
        tokio::task::spawn_blocking(move || rewind_loadtest::dirsim::write_log(&b, &t, 0))
            .await
            .unwrap()
            .unwrap()
            .last()
            .map_or(0, |r| r.seq)
    };
    let real = recover(&c, "dry", &backup, Scope::All).await;
    assert_eq!(real.status, JobStatus::Successful, "{:?}", real.error);
    let mut sent: Vec<(String, String, String)> = {
        let (b, t) = (base.clone(), "dry".to_owned());
        tokio::task::spawn_blocking(move || rewind_loadtest::dirsim::write_log(&b, &t, log_start))
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|r| (r.method, r.version, r.path))
            .collect()
    };
    calls.sort();
    sent.sort();
    assert_eq!(
        sent, calls,
        "the real run sends exactly the dry run's calls"
    );
    let real_steps: Vec<_> = actions(&c, &real.id)
        .into_iter()
        .filter_map(|a| a.step)
        .collect();
    assert_eq!(
        real_steps, dry_steps,
        "the real run makes the dry run's steps"
    );
    assert_eq!(writes(&base).await - before, dry_steps.len() as u64);
    verify::verified(&c, "dry", &backup, Scenario::S3, &expected, &Scope::All).await;

    // Undo: from the recovery's pre-recovery snapshot, the same scope.
    let pre = real.recovery.as_ref().unwrap().snapshots[0].clone();
    let record = c.engine().state().get_snapshot("dry", &pre).unwrap();
    assert_eq!(
        record.kind,
        rewind_common::snapshot::SnapshotKind::PreRecovery
    );
    let undo = c
        .engine()
        .start_recovery_by(
            &alice,
            "dry",
            &pre,
            Scope::All,
            None,
            false,
            Some(real.id.clone()),
        )
        .await
        .unwrap();
    let undo = wait_finished(c.engine(), &undo.id, Duration::from_secs(120)).await;
    assert_eq!(undo.status, JobStatus::Successful, "{:?}", undo.error);
    assert!(undo.counts["applied"] >= 3, "{:?}", undo.counts);
    // Against the pre-recovery snapshot, nothing differs any more.
    let check = c
        .engine()
        .start_report("dry", &pre, Scope::All)
        .await
        .unwrap();
    let check = c.wait(&check.id, JobStatus::Successful).await;
    let left = entries(c.engine(), &check.id);
    assert!(left.is_empty(), "after the undo: {left:#?}");
    // A second undo plans nothing: the re-created grant and assignment match by their data.
    let again = recover(&c, "dry", &pre, Scope::All).await;
    let redo: Vec<_> = actions(&c, &again.id)
        .into_iter()
        .filter_map(|a| a.step)
        .collect();
    assert!(redo.is_empty(), "{redo:?}");

    // History is kept `history_days` (7 by default), then the recovery goes with its actions
    // and its snapshots.
    let days = RecoverySettings::default().history_days as i64;
    let now = rewind_coordinator::state::unix_now();
    let state = c.engine().state();
    assert!(state
        .expired_recoveries("dry", now + (days - 1) * 86_400)
        .unwrap()
        .is_empty());
    let expired = state
        .expired_recoveries("dry", now + (days + 1) * 86_400)
        .unwrap();
    assert_eq!(
        expired.len(),
        4,
        "the dry run, the recovery, the undo and the second undo"
    );
    let undo_job = expired.iter().find(|j| j.id == undo.id).unwrap();
    c.engine().expire_report(undo_job).await;
    assert!(actions(&c, &undo.id).is_empty());
    assert!(state.get_job(&undo.id).is_err());
    let undo_pre = &undo.recovery.as_ref().unwrap().snapshots[0];
    assert!(
        state.get_snapshot("dry", undo_pre).is_err(),
        "its pre-recovery snapshot is removed"
    );
    assert!(
        state.get_snapshot("dry", &pre).is_ok(),
        "another recovery's is kept"
    );
}

/// A wave's tasks are published a few at a time: S1's 757 steps cut into tasks of 20 (38
/// tasks) through one app of 1,000 writes/s, a window of 3 tasks. While the recovery runs,
/// no more tasks are published than have reported plus the window; at the end all of them
/// were, and the tenant verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waves_tasks_are_published_a_few_at_a_time() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = embedded_with(dir.path(), key, |config| {
        config.engine.apply_task_steps = 20
    })
    .await;
    let name = "window";
    generate(&base, name, OBJECTS).await;
    c.add(no_approval(tenant(&base, name, 3))).await;
    let window = rewind_coordinator::engine::apply_window(1, 1_000) as u32;
    assert_eq!(window, 3);
    let backup = c.backup(name).await.snapshot.unwrap();
    let expected = incident(&base, name, Scenario::S1, Phase::AfterBackup).await;
    let scope = scenario_scope(Scenario::S1, &expected);
    let job = start_recovery(&c, name, &backup, scope.clone()).await;
    let state = c.engine().state().clone();
    let mut looks = 0;
    let done = loop {
        let now = state.get_job(&job.id).unwrap();
        if now.status.is_terminal() {
            break now;
        }
        if let Some(wave) = now
            .recovery
            .as_ref()
            .and_then(|r| r.waves.get(r.wave as usize))
        {
            let reported = state
                .task_result_keys(&job.id)
                .unwrap()
                .iter()
                .filter(|k| k.starts_with("apply."))
                .count() as u32;
            let published = wave.published.expect("a windowed wave");
            assert!(
                published <= reported + window,
                "{published} published, {reported} reported, a window of {window}"
            );
            looks += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.status, JobStatus::Successful, "{:?}", done.error);
    let waves = &done.recovery.as_ref().unwrap().waves;
    assert!(waves.iter().any(|w| w.tasks >= 30), "{waves:?}");
    assert!(
        waves.iter().all(|w| w.published == Some(w.tasks)),
        "{waves:?}"
    );
    assert!(looks > 0, "the recovery was seen while it applied");
    verify::verified(&c, name, &backup, Scenario::S1, &expected, &scope).await;
}
