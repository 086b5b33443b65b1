//! The cluster under faults: workers killed (SIGKILL) mid-capture and mid-diff, a poison task
//! and tasks that always fail, NATS and the coordinator restarted during a report, a damaged
//! blob, bad credentials, unknown ids, one job per tenant, scheduled backups and retention.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rewind_common::report::Scope;
use rewind_coordinator::node::Transport;
use rewind_coordinator::state::{JobStatus, Phase, Schedule};
use rewind_loadtest::incident::{Phase as IncidentPhase, Scenario};
use rewind_worker::nats::NatsSettings;
use rewind_worker::queue::{JetStreamQueue, Lane, WorkQueue};

use super::assert_exact;
use super::support::*;

fn nats_transport(url: &str) -> Transport {
    Transport::Nats(Box::new(NatsSettings::url(url)))
}

/// What most tests here start with: a simulator, a nats-server, a key file and a
/// coordinator in cluster mode (no worker yet).
struct OverNats {
    _sim: rewind_loadtest::dirsim::Running,
    base: String,
    nats: rewind_worker::testing::NatsServer,
    dir: tempfile::TempDir,
    key_path: std::path::PathBuf,
    key: rewind_common::secret_box::SecretKey,
    coordinator: Coordinator,
}

impl OverNats {
    async fn start() -> Self {
        let sim = simulator().await;
        let nats = nats();
        let dir = tempfile::tempdir().unwrap();
        let (key_path, key) = key_file(dir.path());
        let coordinator = Coordinator::start(
            &dir.path().join("coord"),
            nats_transport(&nats.url()),
            key.clone(),
        )
        .await;
        Self {
            base: sim.base_url().to_owned(),
            _sim: sim,
            nats,
            dir,
            key_path,
            key,
            coordinator,
        }
    }
}

/// Scans every file under `dir` for `needle`, returning the first file that holds it.
fn holder_of(dir: &Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return Some(path);
                }
            }
        }
    }
    None
}

/// Workers are killed with SIGKILL while they hold a capture task and a diff task: the work
/// is delivered again to the other worker and the report is still exactly the expected one.
/// The directory secret is nowhere in the workers' debug logs, the NATS store or the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_mid_capture_and_mid_diff_lose_nothing() {
    let OverNats {
        _sim,
        base,
        nats,
        dir,
        key_path,
        key: _key,
        coordinator,
    } = OverNats::start().await;
    let fp = dir.path().join("failpoints");
    std::fs::create_dir_all(&fp).unwrap();
    let name = "killed";
    generate(&base, name, OBJECTS).await;
    coordinator.add(tenant(&base, name, 3)).await;

    // Only A runs when the backup starts, so A holds a capture task when it is killed.
    let mut a = WorkerProcess::start(&nats.url(), &key_path, "a", &[("capture", 60_000)], &fp);
    let job = coordinator.engine().start_backup(name).await.unwrap();
    wait_hit(&fp, "capture", Duration::from_secs(60)).await;
    let b = WorkerProcess::start(&nats.url(), &key_path, "b", &[], &fp);
    a.kill();
    let backup = coordinator.wait(&job.id, JobStatus::Successful).await;

    let expected = incident(&base, name, Scenario::S4, IncidentPhase::AfterBackup).await;
    let mut c = WorkerProcess::start(&nats.url(), &key_path, "c", &[("diff", 60_000)], &fp);
    let job = coordinator
        .engine()
        .start_report(name, backup.snapshot.as_deref().unwrap(), Scope::All)
        .await
        .unwrap();
    wait_hit(&fp, "diff", Duration::from_secs(60)).await;
    c.kill();
    let report = coordinator.wait(&job.id, JobStatus::Successful).await;
    assert_eq!(report.tasks.done, report.tasks.total);
    let entries = entries(coordinator.engine(), &report.id);
    assert_exact("after kills", Scenario::S4, &expected, &entries);

    // The secret of the tenant is in no log, message store or state file.
    let secret = format!("secret-{name}");
    let b_log = b.log.clone();
    drop(b);
    for log in [&a.log, &b_log, &c.log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("task done") || log == &a.log || log == &c.log,
            "{text}"
        );
        assert!(
            !text.contains(&secret),
            "{} holds the secret",
            log.display()
        );
    }
    assert_eq!(holder_of(dir.path(), secret.as_bytes()), None);
    assert_eq!(holder_of(nats.store_dir(), secret.as_bytes()), None);
    coordinator.node.unwrap().shutdown().await;
}

/// A backup canceled mid-capture leaves the blobs of the part already written, in no
/// snapshot: they are swept once the grace for captures in flight has passed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canceled_backups_blobs_are_swept_after_the_grace() {
    let OverNats {
        _sim,
        base,
        nats,
        dir,
        key_path,
        key: _key,
        coordinator,
    } = OverNats::start().await;
    let fp = dir.path().join("failpoints");
    std::fs::create_dir_all(&fp).unwrap();
    let name = "canceled";
    generate(&base, name, OBJECTS).await;
    coordinator.add(tenant(&base, name, 3)).await;
    // One worker pausing in every capture task: one part is written while the next waits.
    let mut a = WorkerProcess::start(&nats.url(), &key_path, "a", &[("capture", 2_000)], &fp);
    let engine = coordinator.engine().clone();
    let job = engine.start_backup(name).await.unwrap();
    let started = std::time::Instant::now();
    let prefix = loop {
        let snapshot = engine.state().get_job(&job.id).unwrap().snapshot;
        if let Some(id) = snapshot {
            let prefix = format!("tenants/{name}/snapshots/{id}/");
            if !engine.blobs().list(&prefix).await.unwrap().is_empty() {
                break prefix;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no capture part written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let canceled = engine.cancel(&job.id).await.unwrap();
    assert_eq!(canceled.status, JobStatus::Abandoned);
    a.kill();
    let written = engine.blobs().list(&prefix).await.unwrap();
    assert!(!written.is_empty());
    let sweeps = engine.state().blob_sweeps().unwrap();
    assert_eq!(
        sweeps.iter().map(|s| s.prefix.as_str()).collect::<Vec<_>>(),
        [prefix.as_str()]
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    rewind_coordinator::scheduler::tick(&engine, now)
        .await
        .unwrap();
    assert_eq!(
        engine.blobs().list(&prefix).await.unwrap(),
        written,
        "swept before the grace"
    );
    let after_grace = now + rewind_coordinator::engine::UNSEALED_SWEEP_DELAY.as_secs() as i64;
    rewind_coordinator::scheduler::tick(&engine, after_grace)
        .await
        .unwrap();
    let left = engine.blobs().list(&prefix).await.unwrap();
    assert!(
        left.is_empty(),
        "blobs of the canceled backup remain: {left:?}"
    );
    assert!(engine.state().blob_sweeps().unwrap().is_empty());
    coordinator.node.unwrap().shutdown().await;
}

/// A poison task (undecodable) ends on the dead-letter lane and fails its job with the
/// reason; so does a task that always fails (an unreachable directory: bounded deliveries),
/// and one that fails for good (a wrong secret), each with the connector's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_and_failing_tasks_fail_their_jobs_with_the_reason() {
    let OverNats {
        _sim,
        base,
        nats,
        dir: _dir,
        key_path: _key_path,
        key,
        coordinator,
    } = OverNats::start().await;
    generate(&base, "poisoned", 500).await;
    coordinator.add(tenant(&base, "poisoned", 2)).await;

    // No worker yet: the job's tasks wait. Replace them with a poison task.
    let job = coordinator.engine().start_backup("poisoned").await.unwrap();
    let (client, js) = rewind_worker::nats::connect(&NatsSettings::url(nats.url()))
        .await
        .unwrap();
    let queue = JetStreamQueue::start(client, js, policy()).await.unwrap();
    let filter = rewind_common::wire::job_task_filter(
        "poisoned",
        &job.id,
        rewind_common::wire::TaskKind::Capture,
    );
    assert_eq!(queue.purge(Lane::Tasks, &filter).await.unwrap(), 3);
    let subject = format!("rewind.tasks.poisoned.{}.capture.0", job.id);
    queue
        .publish(
            Lane::Tasks,
            &subject,
            "poison-1",
            Bytes::from_static(b"\x92garbage"),
        )
        .await
        .unwrap();
    let (stop, workers) = nats_workers(&nats.url(), &key, 1);
    let failed = coordinator.wait(&job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert!(error.contains("undecodable task"), "{error}");
    assert!(error.contains(&subject), "{error}");

    // An unreachable directory: every delivery fails transiently, the last one for good.
    let mut unreachable = tenant("http://127.0.0.1:9", "unreachable", 2);
    unreachable.token_url = "http://127.0.0.1:9/unreachable/oauth2/v2.0/token".into();
    coordinator.add(unreachable).await;
    let job = coordinator
        .engine()
        .start_backup("unreachable")
        .await
        .unwrap();
    let failed = coordinator.wait(&job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert!(error.contains("after 3 deliveries"), "{error}");
    assert!(error.contains("127.0.0.1:9"), "{error}");

    // A wrong secret: the directory refuses the token at once; no retry helps.
    let mut wrong = tenant(&base, "poisoned", 2);
    wrong.name = "wrong-secret".into();
    wrong.graph_base_url = format!("{base}/poisoned/v1.0");
    wrong.token_url = format!("{base}/poisoned/oauth2/v2.0/token");
    wrong.secret = rewind_common::connector::Secret::new("not-the-secret");
    coordinator.add(wrong).await;
    let job = coordinator
        .engine()
        .start_backup("wrong-secret")
        .await
        .unwrap();
    let failed = coordinator.wait(&job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert!(error.contains("after 1 deliveries"), "{error}");
    assert!(error.contains("token") || error.contains("401"), "{error}");
    assert!(!error.contains("not-the-secret"), "{error}");

    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    coordinator.node.unwrap().shutdown().await;
}

/// NATS restarted while a report captures: the report completes. The coordinator dies (its
/// tasks aborted, nothing flushed beyond what each step flushed) during the next report:
/// started again on its state, it resumes the report, which completes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_survives_restarts_of_nats_and_of_the_coordinator() {
    let OverNats {
        _sim,
        base,
        mut nats,
        dir: _dir,
        key_path: _key_path,
        key,
        mut coordinator,
    } = OverNats::start().await;
    let name = "restarts";
    generate(&base, name, OBJECTS).await;
    coordinator.add(tenant(&base, name, 3)).await;
    let (stop, workers) = nats_workers(&nats.url(), &key, 2);
    let backup = coordinator.backup(name).await;
    let backup_id = backup.snapshot.clone().unwrap();
    let expected = incident(&base, name, Scenario::S5, IncidentPhase::AfterBackup).await;
    // Slow the directory so that the restarts land inside the captures.
    set_latency(&base, 15).await;

    let job = coordinator
        .engine()
        .start_report(name, &backup_id, Scope::All)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::LoadingData);
    nats.restart();
    let report = coordinator.wait(&job.id, JobStatus::Successful).await;
    assert_exact(
        "after a NATS restart",
        Scenario::S5,
        &expected,
        &entries(coordinator.engine(), &report.id),
    );

    let job = coordinator
        .engine()
        .start_report(name, &backup_id, Scope::All)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    coordinator.node.take().unwrap().abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    coordinator.restart().await;
    let report = coordinator.wait(&job.id, JobStatus::Successful).await;
    assert!(report.resumes >= 1, "{report:?}");
    assert_eq!(report.tasks.done, report.tasks.total);
    assert_exact(
        "after a coordinator crash",
        Scenario::S5,
        &expected,
        &entries(coordinator.engine(), &report.id),
    );

    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    coordinator.node.unwrap().shutdown().await;
}

/// Sets the simulator's latency per Graph request.
async fn set_latency(base: &str, ms: u64) {
    admin_patch(
        base,
        "/_admin/settings",
        serde_json::json!({ "latency_ms": ms }),
    )
    .await;
}

/// A shard blob damaged in the object store fails the report with an error that names the
/// shard; the blob is never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_blob_fails_the_report_naming_the_shard() {
    let OverNats {
        _sim,
        base,
        nats,
        dir: _dir,
        key_path: _key_path,
        key,
        coordinator,
    } = OverNats::start().await;
    generate(&base, "damaged", 1_000).await;
    coordinator.add(tenant(&base, "damaged", 2)).await;
    let (stop, workers) = nats_workers(&nats.url(), &key, 1);
    let backup = coordinator.backup("damaged").await;
    let id = backup.snapshot.unwrap();
    let prefix = format!("tenants/damaged/snapshots/{id}/");
    let keys = coordinator.engine().blobs().list(&prefix).await.unwrap();
    let victim = keys
        .iter()
        .find(|k| k.contains("/shard-00002.p0."))
        .unwrap_or_else(|| panic!("no part 0 of shard 2 in {keys:?}"))
        .clone();
    // Overwrite it behind the store's back, as a fault of the storage would.
    let (_, js) = rewind_worker::nats::connect(&NatsSettings::url(nats.url()))
        .await
        .unwrap();
    let bucket = js.get_object_store("rewind-damaged").await.unwrap();
    let name = victim.trim_start_matches("tenants/damaged/");
    let mut bytes = coordinator
        .engine()
        .blobs()
        .get(&victim)
        .await
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    bucket.put(name, &mut bytes.as_slice()).await.unwrap();

    let job = coordinator
        .engine()
        .start_report("damaged", &id, Scope::All)
        .await
        .unwrap();
    let failed = coordinator.wait(&job.id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert!(
        error.contains("shard 2") && error.contains("digest mismatch"),
        "{error}"
    );
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    coordinator.node.unwrap().shutdown().await;
}

/// One open job per tenant (a second is refused naming the first), while jobs of two tenants
/// run side by side; unknown tenants and snapshots are named in their errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_job_per_tenant_and_tenants_in_parallel() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let single_dir = dir.path().join("single");
    let coordinator =
        Coordinator::start(&single_dir, Coordinator::embedded(&single_dir, 2), key).await;
    for name in ["one", "two"] {
        generate(&base, name, 1_000).await;
        coordinator.add(tenant(&base, name, 2)).await;
    }
    set_latency(&base, 5).await;
    let first = coordinator.engine().start_backup("one").await.unwrap();
    let err = coordinator
        .engine()
        .start_backup("one")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&first.id), "{err}");
    let other = coordinator.engine().start_backup("two").await.unwrap();
    let open = coordinator.engine().state().open_jobs().unwrap();
    assert_eq!(open.len(), 2, "both tenants' jobs run at once: {open:?}");
    coordinator.wait(&first.id, JobStatus::Successful).await;
    coordinator.wait(&other.id, JobStatus::Successful).await;

    let err = coordinator
        .engine()
        .start_backup("nobody")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody"), "{err}");
    let err = coordinator
        .engine()
        .start_report("one", "no-such-snapshot", Scope::All)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-snapshot"), "{err}");
    coordinator.node.unwrap().shutdown().await;
}

/// Backups fire on schedule (every second here); retention keeps exactly the newest N and
/// deletes the blobs of the others; an expired report goes with its live snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_backups_fire_and_retention_keeps_exactly_n() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let single_dir = dir.path().join("single");
    let coordinator =
        Coordinator::start(&single_dir, Coordinator::embedded(&single_dir, 2), key).await;
    generate(&base, "scheduled", 300).await;
    let mut t = tenant(&base, "scheduled", 1);
    t.schedule = Schedule::Interval { seconds: 1 };
    t.retention = 2;
    coordinator.add(t).await;
    let state = coordinator.engine().state().clone();
    let started = std::time::Instant::now();
    loop {
        let done = state
            .list_jobs("scheduled")
            .unwrap()
            .iter()
            .filter(|j| j.status == JobStatus::Successful)
            .count();
        if done >= 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {done} scheduled backups"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop the schedule, let the open backup end, then count.
    state
        .update_tenant(
            "scheduled",
            rewind_coordinator::state::TenantSettings {
                schedule: Some(Schedule::Off),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    if let Some(open) = state.open_job("scheduled").unwrap() {
        coordinator.wait(&open.id, JobStatus::Successful).await;
    }
    let backups = state
        .list_snapshots(
            "scheduled",
            Some(rewind_common::snapshot::SnapshotKind::Backup),
        )
        .unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let jobs = state.list_jobs("scheduled").unwrap();
    let newest: Vec<_> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Successful)
        .take(2)
        .map(|j| j.snapshot.clone().unwrap())
        .collect();
    let kept: Vec<_> = backups.iter().map(|b| b.id.clone()).collect();
    assert_eq!(kept, newest, "retention keeps the newest two");
    let removals = state.removals().unwrap();
    assert!(removals.len() >= 2, "{removals:?}");
    // The blobs go after the backup's job is over (its retention runs then): wait for the
    // sweeps the removals recorded, then none of their blobs may remain.
    let blobs = coordinator.engine().blobs().clone();
    let removed_blobs = |removals: Vec<rewind_coordinator::state::Removal>| {
        let blobs = blobs.clone();
        async move {
            let mut left = Vec::new();
            for r in &removals {
                let prefix = format!("tenants/scheduled/snapshots/{}/", r.snapshot.id);
                left.extend(blobs.list(&prefix).await.unwrap());
            }
            left
        }
    };
    let started = std::time::Instant::now();
    while !state.blob_sweeps().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sweeps still pending: {:?}",
            state.blob_sweeps().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in &removals {
        assert!(r.reason.contains("retention"), "{r:?}");
    }
    let left = removed_blobs(removals.clone()).await;
    assert!(
        left.is_empty(),
        "blobs of a removed backup remain: {left:?}"
    );

    // A crash between a removal and its blobs' deletion (the removal alone, as the state
    // records it) leaves a sweep, which the scheduler's next tick completes.
    state
        .update_tenant(
            "scheduled",
            rewind_coordinator::state::TenantSettings {
                retention: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let crashed = state
        .remove_snapshot(
            "scheduled",
            &kept[1],
            "retention keeps the newest 1 backups",
        )
        .await
        .unwrap();
    assert!(!removed_blobs(vec![crashed.clone()]).await.is_empty());
    assert_eq!(state.blob_sweeps().unwrap().len(), 1);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    rewind_coordinator::scheduler::tick(coordinator.engine(), now)
        .await
        .unwrap();
    assert!(state.blob_sweeps().unwrap().is_empty());
    let left = removed_blobs(vec![crashed]).await;
    assert!(
        left.is_empty(),
        "blobs of a crashed removal remain: {left:?}"
    );

    // A report, then two days later (past a report retention of one day) it is gone.
    state
        .update_tenant(
            "scheduled",
            rewind_coordinator::state::TenantSettings {
                report_retention_days: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (report, _) = coordinator.report("scheduled", &kept[0]).await;
    let live = report.snapshot.clone().unwrap();
    assert_eq!(report.phase, Phase::Done);
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 2 * 86_400;
    rewind_coordinator::scheduler::tick(coordinator.engine(), later)
        .await
        .unwrap();
    assert!(
        state.get_job(&report.id).is_err(),
        "the expired report remains"
    );
    assert!(state.get_snapshot("scheduled", &live).is_err());
    let prefix = format!("tenants/scheduled/snapshots/{live}/");
    assert!(coordinator
        .engine()
        .blobs()
        .list(&prefix)
        .await
        .unwrap()
        .is_empty());
    // The audit log holds it all: every backup created by the scheduler, every removal by
    // the coordinator (retention and the expired report's live snapshot), in an intact chain.
    use rewind_coordinator::state::Actor;
    let audit = state.audit_page(0, 100_000).unwrap();
    for job in jobs
        .iter()
        .filter(|j| j.kind == rewind_coordinator::state::JobKind::Backup)
    {
        let created = audit
            .iter()
            .find(|r| r.action == "job.created" && r.subject.job.as_deref() == Some(&job.id))
            .unwrap_or_else(|| panic!("no job.created for {}", job.id));
        assert_eq!(created.actor, Actor::Scheduler, "{created:?}");
    }
    let removed: Vec<&str> = audit
        .iter()
        .filter(|r| r.action == "snapshot.removed")
        .inspect(|r| assert_eq!(r.actor, Actor::Coordinator, "{r:?}"))
        .filter_map(|r| r.subject.snapshot.as_deref())
        .collect();
    assert!(removed.contains(&live.as_str()), "{removed:?}");
    let removed_backups = state
        .removals()
        .unwrap()
        .into_iter()
        .filter(|r| r.snapshot.kind == rewind_common::snapshot::SnapshotKind::Backup)
        .count();
    assert!(removed_backups >= 2, "{removed_backups}");
    assert_eq!(removed.len(), state.removals().unwrap().len());
    let verdict = state.verify_audit().unwrap();
    assert_eq!((verdict.intact, verdict.broken), (audit.len() as u64, None));
    coordinator.node.unwrap().shutdown().await;
}

/// SIGTERM to a worker holding a diff task: it finishes the task (its result counts), then
/// exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_worker_finishes_its_task_then_exits() {
    let OverNats {
        _sim,
        base,
        nats,
        dir,
        key_path,
        key: _key,
        coordinator,
    } = OverNats::start().await;
    let fp = dir.path().join("failpoints");
    std::fs::create_dir_all(&fp).unwrap();
    generate(&base, "graceful", 500).await;
    coordinator.add(tenant(&base, "graceful", 0)).await;
    let mut w = WorkerProcess::start(&nats.url(), &key_path, "graceful", &[("diff", 1_500)], &fp);
    let backup = coordinator.backup("graceful").await;
    let job = coordinator
        .engine()
        .start_report("graceful", backup.snapshot.as_deref().unwrap(), Scope::All)
        .await
        .unwrap();
    wait_hit(&fp, "diff", Duration::from_secs(60)).await;
    assert!(w.terminate(), "the worker did not exit cleanly");
    let log = std::fs::read_to_string(&w.log).unwrap();
    let reached = log
        .find("failpoint reached")
        .expect("the failpoint in the log");
    let done = log.rfind("task done").expect("the task finished");
    assert!(done > reached, "{log}");
    assert!(log.contains("worker stopped"), "{log}");
    // One range (a single shard): the job completes from that result alone, no other worker.
    let report = coordinator.wait(&job.id, JobStatus::Successful).await;
    assert_eq!(report.tasks.done, report.tasks.total);
    coordinator.node.unwrap().shutdown().await;
}

/// `rewind token create` on a stopped coordinator's state: a token of `role` for every tenant.
fn token_create(state_dir: &Path, name: &str, role: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["token", "create", "--state-dir"])
        .arg(state_dir)
        .args(["--name", name, "--role", role, "--all-tenants", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    created["token"].as_str().unwrap().to_owned()
}

/// Polls `url` (a job view) until `done` holds for it; panics naming the last answer after
/// about two minutes.
fn poll_job_view(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..6000 {
        if let Ok(mut r) = agent
            .get(url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
        {
            last = r.body_mut().read_to_string().unwrap_or_default();
            if let Ok(view) = serde_json::from_str::<serde_json::Value>(&last) {
                if done(&view) {
                    return view;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{url} never got there: {last}");
}

/// `rewind coordinator` as an operator runs it (its own process, single-node mode, the API on
/// a port of its own), SIGKILLed while a report is loading data, then started again on the
/// same state: the report resumes and ends exactly as the incident generator expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_process_killed_mid_report_resumes_it_after_a_restart() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let name = "crash-process";
    generate(&base, name, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let (key_path, _) = key_file(dir.path());
    let state_dir = dir.path().join("coordinator");
    std::fs::create_dir_all(&state_dir).unwrap();
    let token = token_create(&state_dir, "ops", "administrator");
    let operator = token_create(&state_dir, "op", "operator");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(["coordinator", "--embedded", "--workers", "2", "--state-dir"])
            .arg(&state_dir)
            .arg("--secret-key-file")
            .arg(&key_path)
            .args(["--api-listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("REWIND_SECRET_KEY")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let api = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, token: &str, body: serde_json::Value| {
        let mut r = agent
            .post(format!("{api}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert!((200..300).contains(&status), "POST {path}: {status} {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or(serde_json::Value::Null)
    };

    let mut coordinator = start();
    let ready_url = format!("{api}/readyz");
    let up = move |agent: &ureq::Agent| {
        (0..600).any(|_| {
            let ok = agent
                .get(&ready_url)
                .call()
                .is_ok_and(|r| r.status() == 200);
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        })
    };
    let (agent_c, up_c) = (agent.clone(), up);
    let ready = tokio::task::spawn_blocking(move || up_c(&agent_c))
        .await
        .unwrap();
    assert!(ready, "the coordinator's API never became ready");
    let t = tenant(&base, name, 4);
    post(
        "/admin/tenants",
        &operator,
        serde_json::json!({
            "name": name, "graphBaseUrl": t.graph_base_url, "tokenUrl": t.token_url,
            "clientId": t.client_id, "clientSecret": t.secret.expose(),
            "schedule": {"kind": "off"}, "shardBits": 4,
        }),
    );
    let backup = post(
        &format!("/tenants/{name}/v1.0/directory/recovery/snapshots"),
        &token,
        serde_json::json!({}),
    );
    let backup_url = format!(
        "{api}/tenants/{name}/rewind/jobs/{}",
        backup["id"].as_str().unwrap()
    );
    let (a, tok, u) = (agent.clone(), token.clone(), backup_url.clone());
    let backup = tokio::task::spawn_blocking(move || {
        poll_job_view(&a, &u, &tok, |v| {
            v["status"] == "successful" || v["status"] == "failed"
        })
    })
    .await
    .unwrap();
    assert_eq!(backup["status"], "successful", "{backup}");
    let snapshot = backup["snapshot"].as_str().unwrap().to_owned();
    let expected = incident(&base, name, Scenario::S1, IncidentPhase::AfterBackup).await;

    let report = post(
        &format!(
            "/tenants/{name}/v1.0/directory/recovery/snapshots/{snapshot}/recoveryPreviewJobs"
        ),
        &token,
        serde_json::json!({}),
    );
    let report_id = report["id"].as_str().unwrap().to_owned();
    let report_url = format!("{api}/tenants/{name}/rewind/jobs/{report_id}");
    let (a, tok, u) = (agent.clone(), token.clone(), report_url.clone());
    let seen = tokio::task::spawn_blocking(move || {
        poll_job_view(&a, &u, &tok, |v| v["status"] != "initialized")
    })
    .await
    .unwrap();
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    assert_eq!(
        seen["status"], "loadingData",
        "killed too late to test: {seen}"
    );

    let mut coordinator = start();
    let (a, tok, u) = (agent.clone(), token.clone(), report_url.clone());
    let done = tokio::task::spawn_blocking(move || {
        poll_job_view(&a, &u, &tok, |v| {
            matches!(
                v["status"].as_str(),
                Some("successful" | "failed" | "abandoned")
            )
        })
    })
    .await
    .unwrap();
    let pid = coordinator.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(coordinator.wait().unwrap().success());
    assert_eq!(done["status"], "successful", "{done}");

    // The stored report is exact, and the job says it was resumed.
    let state = rewind_coordinator::state::State::open(state_dir.join("state")).unwrap();
    let job = state.get_job(&report_id).unwrap();
    assert!(job.resumes >= 1, "{job:?}");
    let mut entries = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = state.report_entries_page(&report_id, cursor, 500).unwrap();
        for bytes in page {
            entries.push(rmp_serde::from_slice(&bytes).unwrap());
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_exact("after a restart", Scenario::S1, &expected, &entries);
}
