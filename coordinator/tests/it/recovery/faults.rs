//! Recoveries under faults: workers killed after applying and before acknowledging, and in
//! the middle of a task's batches, with a NATS restart (S9); a directory answering 10% of
//! writes with 429 and 1% with 503 (S10); a cancel in the middle of the writes. The simulator's
//! write log is the witness: no write had a different effect twice, the budget was never
//! exceeded, nothing was written after `abandoned`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rewind_common::report::Scope;
use rewind_coordinator::node::Transport;
use rewind_coordinator::state::{JobStatus, Outcome};
use rewind_loadtest::dirsim::WriteRecord;
use rewind_loadtest::incident::{Phase, Scenario};
use serde_json::json;

use super::*;

async fn last_write(base: &str, tenant: &str) -> u64 {
    writes_after(base, tenant, 0)
        .await
        .last()
        .map_or(0, |r| r.seq)
}

/// No write (method, path, body) changed the directory more than once.
fn changed_once(log: &[WriteRecord]) -> (usize, usize) {
    let mut by_write: BTreeMap<(&str, &str, Option<&str>), (usize, usize)> = BTreeMap::new();
    for r in log {
        let e = by_write
            .entry((&r.method, &r.path, r.body_digest.as_deref()))
            .or_default();
        e.0 += 1;
        e.1 += usize::from(r.changed);
    }
    let twice: Vec<_> = by_write.iter().filter(|(_, (_, c))| *c > 1).collect();
    assert!(
        twice.is_empty(),
        "writes that changed the directory twice: {twice:?}"
    );
    let repeated = by_write.values().filter(|(n, _)| *n > 1).count();
    (by_write.len(), repeated)
}

/// A cluster (a coordinator over a real nats-server, workers as processes) with a backed-up
/// tenant that then met S1: what the cluster fault tests start from (no worker running).
struct ClusterIncident {
    sim: rewind_loadtest::dirsim::Running,
    base: String,
    nats: rewind_worker::testing::NatsServer,
    dir: tempfile::TempDir,
    key_path: std::path::PathBuf,
    /// The failpoints' folder.
    fp: std::path::PathBuf,
    c: Coordinator,
    name: &'static str,
    backup: String,
    expected: rewind_loadtest::incident::ExpectedReport,
    scope: Scope,
    /// The last write before the recovery.
    start: u64,
}

/// The tenant's size for S9: [`OBJECTS`], or `REWIND_S9_OBJECTS` (the scenario's 100,000, run
/// by hand in release mode: `REWIND_S9_OBJECTS=100000 cargo test --release -p
/// rewind-coordinator --test it s9_`).
fn s9_objects() -> u64 {
    match std::env::var("REWIND_S9_OBJECTS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("REWIND_S9_OBJECTS={v:?} is not a number of objects")),
        Err(_) => OBJECTS,
    }
}

impl ClusterIncident {
    async fn s1(name: &'static str, objects: u64) -> Self {
        let sim = simulator().await;
        let base = sim.base_url().to_owned();
        let nats = nats();
        let dir = tempfile::tempdir().unwrap();
        let (key_path, key) = key_file(dir.path());
        let fp = dir.path().join("failpoints");
        std::fs::create_dir_all(&fp).unwrap();
        let c = Coordinator::start(
            &dir.path().join("coord"),
            Transport::Nats(Box::new(rewind_worker::nats::NatsSettings::url(nats.url()))),
            key,
        )
        .await;
        generate(&base, name, objects).await;
        c.add(no_approval(tenant(&base, name, 3))).await;
        let mut b = WorkerProcess::start(&nats.url(), &key_path, "b", &[], &fp);
        let backup = c.backup(name).await.snapshot.unwrap();
        assert!(b.terminate(), "worker b stops cleanly");
        let expected = incident(&base, name, Scenario::S1, Phase::AfterBackup).await;
        let scope = scenario_scope(Scenario::S1, &expected);
        let start = last_write(&base, name).await;
        Self {
            sim,
            base,
            nats,
            dir,
            key_path,
            fp,
            c,
            name,
            backup,
            expected,
            scope,
            start,
        }
    }
}

/// S9: S1 recovered through the cluster while one worker is killed after applying a task and
/// before acknowledging it, another in the middle of a task's batches, and NATS restarts.
/// The tenant verifies, every action has an outcome, and the write log shows that the
/// redelivered batches were sent again without any write changing the directory twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s9_workers_killed_mid_recovery_and_a_nats_restart_change_nothing_twice() {
    let ClusterIncident {
        sim: _sim,
        base,
        mut nats,
        dir: _dir,
        key_path,
        fp,
        c,
        name,
        backup,
        expected,
        scope,
        start,
    } = ClusterIncident::s1("s9", s9_objects()).await;

    // A alone: it captures, diffs and applies the first task, then pauses before its result
    // (one apply task at a time, so that the next one is left for C).
    let one = ["--apply-tasks", "1"];
    let mut a = WorkerProcess::start_with(
        &nats.url(),
        &key_path,
        "a",
        &[("apply", 120_000)],
        &fp,
        &one,
    );
    let job = start_recovery(&c, name, &backup, scope.clone()).await;
    wait_hit(&fp, "apply", Duration::from_secs(120)).await;
    // C takes the second task and pauses after its first batch.
    let mut cw = WorkerProcess::start_with(
        &nats.url(),
        &key_path,
        "c",
        &[("apply-batch", 120_000)],
        &fp,
        &one,
    );
    wait_hit(&fp, "apply-batch", Duration::from_secs(120)).await;
    a.kill();
    cw.kill();
    nats.restart();
    let _b2 = WorkerProcess::start(&nats.url(), &key_path, "b2", &[], &fp);
    let done = wait_finished(c.engine(), &job.id, Duration::from_secs(240)).await;
    assert_eq!(done.status, JobStatus::Successful, "{:?}", done.error);
    let acts = actions(&c, &job.id);
    assert!(
        acts.iter()
            .all(|a| a.step.is_none()
                || matches!(a.outcome, Outcome::Applied | Outcome::AlreadyInState)),
        "{acts:?}"
    );
    verify::verified(&c, name, &backup, Scenario::S1, &expected, &scope).await;

    let log = writes_after(&base, name, start).await;
    let (distinct, repeated) = changed_once(&log);
    let planned = acts.iter().filter(|a| a.step.is_some()).count();
    assert_eq!(distinct, planned, "one distinct write per action");
    assert!(
        repeated > 0,
        "the killed workers' batches were sent again: {repeated}"
    );
    eprintln!("S9: {planned} actions, {distinct} distinct writes, {repeated} sent again");
    assert_eq!(log.iter().filter(|r| r.changed).count(), planned);
    c.node.unwrap().shutdown().await;
}

/// A coordinator whose workers' connector retries as in production (8 attempts).
async fn patient(dir: &std::path::Path, key: rewind_common::secret_box::SecretKey) -> Coordinator {
    embedded_with(dir, key, |config| {
        config.worker.connector.max_attempts = 8;
        config.worker.connector.max_backoff = Duration::from_secs(2);
    })
    .await
}

/// S10: S4 recovered while the directory answers 10% of writes with 429 (Retry-After 1–3 s)
/// and 1% with 503: the tenant verifies, and the simulator admitted no more writes in any
/// sliding second than the budget. The simulator itself limits nothing, so its maximum is
/// Rewind's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s10_a_throttling_directory_gets_an_exact_recovery_within_its_budget() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = patient(dir.path(), key).await;
    let name = "s10";
    generate(&base, name, OBJECTS).await;
    let budget = 100;
    let mut t = no_approval(tenant(&base, name, 3));
    t.recovery.write_budget = budget;
    c.add(t).await;
    let backup = c.backup(name).await.snapshot.unwrap();
    let expected = incident(&base, name, Scenario::S4, Phase::AfterBackup).await;
    let start = last_write(&base, name).await;
    let url = format!("{base}/_admin/tenants/{name}/writes");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent.delete(&url).call().expect("the counters reset");
    })
    .await
    .unwrap();
    let _ = start;
    admin_patch(
        &base,
        "/_admin/settings",
        json!({
            "write_429_rate": 0.10,
            "retry_after_429_min_secs": 1,
            "retry_after_429_max_secs": 3,
            "write_503_rate": 0.01,
        }),
    )
    .await;
    let job = recover(&c, name, &backup, Scope::All).await;
    admin_patch(
        &base,
        "/_admin/settings",
        json!({"write_429_rate": 0.0, "write_503_rate": 0.0}),
    )
    .await;
    assert_eq!(job.status, JobStatus::Successful, "{:?}", job.error);
    assert_eq!(job.counts["failedChanges"], 0, "{:?}", job.counts);
    verify::verified(&c, name, &backup, Scenario::S4, &expected, &Scope::All).await;

    let log = writes_after(&base, name, 0).await;
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let unavailable = log.iter().filter(|r| r.status == 503).count();
    assert!(
        throttled > 0 && unavailable > 0,
        "the faults were injected: {throttled} 429, {unavailable} 503"
    );
    changed_once(&log);
    let counters = sim_counters(&base).await;
    let max = counters["tenants"][name]["maxWritesPerSecond"]
        .as_u64()
        .expect("a maximum");
    assert!(
        max <= u64::from(budget),
        "{max} writes admitted in one second, budget {budget}"
    );
    println!(
        "S10: {throttled} 429s, {unavailable} 503s, at most {max} writes/s; {:?}",
        job.counts
    );
}

/// A cancel in the middle of a recovery's writes: the job is abandoned once no batch is in
/// flight; what was applied stays and is listed (as many actions applied as the write log
/// shows changes); nothing is written after `abandoned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canceled_recovery_keeps_what_it_applied_and_writes_nothing_after_abandoned() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(dir.path(), Coordinator::embedded(dir.path(), 2), key).await;
    let name = "cancel";
    generate(&base, name, OBJECTS).await;
    let mut t = no_approval(tenant(&base, name, 3));
    t.recovery.write_budget = 40;
    c.add(t).await;
    let backup = c.backup(name).await.snapshot.unwrap();
    let expected = incident(&base, name, Scenario::S1, Phase::AfterBackup).await;
    let start = last_write(&base, name).await;
    let scope = scenario_scope(Scenario::S1, &expected);
    let job = start_recovery(&c, name, &backup, scope).await;
    let began = Instant::now();
    loop {
        let n = writes_after(&base, name, start).await.len();
        if n >= 60 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "only {n} writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.engine().cancel_by(&admin("bob"), &job.id).await.unwrap();
    let ended = wait_finished(c.engine(), &job.id, Duration::from_secs(60)).await;
    let abandoned_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(ended.status, JobStatus::Abandoned);
    let log = writes_after(&base, name, start).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = writes_after(&base, name, start).await;
    assert_eq!(later.len(), log.len(), "writes after the job was abandoned");
    assert!(log.iter().all(|r| r.at_ms <= abandoned_at));
    let acts = actions(&c, &job.id);
    let applied = acts
        .iter()
        .filter(|a| a.outcome == Outcome::Applied)
        .count();
    let changed = log.iter().filter(|r| r.changed).count();
    assert_eq!(
        applied, changed,
        "every change the directory saw is listed as applied"
    );
    assert!(
        applied >= 60 && applied < acts.len(),
        "applied {applied} of {}",
        acts.len()
    );
    assert_eq!(ended.counts["applied"], applied as u64);
    // The rest was never sent.
    assert!(acts
        .iter()
        .filter(|a| a.outcome != Outcome::Applied)
        .all(|a| matches!(a.outcome, Outcome::Planned | Outcome::NotSent { .. })));
    let record = c
        .engine()
        .state()
        .audit_records()
        .map(|r| r.unwrap())
        .find(|r| {
            r.subject.job.as_deref() == Some(job.id.as_str())
                && r.action == "job.status"
                && r.details.get("to").map(String::as_str) == Some("abandoned")
        })
        .expect("the abandonment is audited");
    let _ = record;
}

/// A cancel while a worker has made a task's writes and not yet sent its result (paused at
/// the failpoint `apply`): the job stays stopping until that result is recorded, so the
/// abandoned job lists every write the directory took. (When the worker's gate ended its own
/// lease, the job was abandoned at once and the late result was dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_waits_for_the_outcomes_of_writes_already_made() {
    let ClusterIncident {
        sim: _sim,
        base,
        nats,
        dir: _dir,
        key_path,
        fp,
        c,
        name,
        backup,
        scope,
        start,
        ..
    } = ClusterIncident::s1("late", OBJECTS).await;
    let mut a = WorkerProcess::start(&nats.url(), &key_path, "a", &[("apply", 6_000)], &fp);
    let job = start_recovery(&c, name, &backup, scope).await;
    wait_hit(&fp, "apply", Duration::from_secs(120)).await;
    let before = writes_after(&base, name, start).await;
    assert!(
        before.iter().any(|r| r.changed),
        "the paused task made its writes"
    );
    c.engine().cancel_by(&admin("bob"), &job.id).await.unwrap();
    let ended = wait_finished(c.engine(), &job.id, Duration::from_secs(90)).await;
    assert_eq!(ended.status, JobStatus::Abandoned);
    let log = writes_after(&base, name, start).await;
    let changed = log.iter().filter(|r| r.changed).count();
    let acts = actions(&c, &job.id);
    let applied = acts
        .iter()
        .filter(|a| a.outcome == Outcome::Applied)
        .count();
    assert_eq!(
        applied, changed,
        "the paused task's writes are listed as applied"
    );
    assert_eq!(ended.counts["applied"], applied as u64);
    assert!(a.terminate(), "worker a stops cleanly");
    c.node.unwrap().shutdown().await;
}
