//! Jobs: the transition table, one open job per tenant, exactly-once task results, paged
//! report entries, and jobs surviving a restart.

use rewind_common::report::Scope;
use rewind_common::snapshot::SnapshotKind;
use rewind_coordinator::state::jobs::allowed;
use rewind_coordinator::state::{
    EntryCursor, ErrorClass, JobKind, JobStatus, Phase, RecordOutcome, State, StateError,
};

use super::{reopen, snapshot, with_tenants};

fn report_kind() -> JobKind {
    JobKind::Report {
        backup: "b1".into(),
        scope: Scope::All,
    }
}

async fn with_backup(state: &State, tenant: &str) {
    state
        .add_sealed(snapshot(tenant, "b1", SnapshotKind::Backup, 100))
        .await
        .expect("the backup is added");
}

/// Every edge each kind may take besides staying put and failing or being abandoned from a
/// non-terminal status.
const FORWARD: &[(&str, JobStatus, JobStatus)] = &[
    ("backup", JobStatus::Initialized, JobStatus::Running),
    ("backup", JobStatus::Running, JobStatus::Successful),
    ("report", JobStatus::Initialized, JobStatus::LoadingData),
    ("report", JobStatus::LoadingData, JobStatus::Calculating),
    ("report", JobStatus::Calculating, JobStatus::Successful),
];

#[test]
fn the_transition_table_of_every_kind() {
    for kind in [JobKind::Backup, report_kind()] {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = !from.is_terminal()
                    && (from == to
                        || matches!(to, JobStatus::Failed | JobStatus::Abandoned)
                        || FORWARD.contains(&(kind.name(), from, to)));
                assert_eq!(
                    allowed(&kind, from, to),
                    expected,
                    "{} {from} -> {to}",
                    kind.name()
                );
            }
        }
    }
}

/// Paths a job is driven through: every one must be accepted, in order.
const PATHS: &[(&str, &[JobStatus])] = &[
    ("backup", &[JobStatus::Running, JobStatus::Successful]),
    (
        "backup",
        &[JobStatus::Running, JobStatus::Running, JobStatus::Failed],
    ),
    ("backup", &[JobStatus::Abandoned]),
    (
        "report",
        &[
            JobStatus::LoadingData,
            JobStatus::Calculating,
            JobStatus::Calculating,
            JobStatus::Successful,
        ],
    ),
    ("report", &[JobStatus::LoadingData, JobStatus::Abandoned]),
    ("report", &[JobStatus::Initialized, JobStatus::Failed]),
];

/// Edges refused after a path (kind, path, refused target).
const REFUSED: &[(&str, &[JobStatus], JobStatus)] = &[
    ("backup", &[], JobStatus::Successful),
    ("backup", &[], JobStatus::LoadingData),
    ("backup", &[JobStatus::Running], JobStatus::Initialized),
    (
        "backup",
        &[JobStatus::Running, JobStatus::Successful],
        JobStatus::Failed,
    ),
    ("backup", &[JobStatus::Abandoned], JobStatus::Running),
    ("report", &[], JobStatus::Running),
    ("report", &[JobStatus::LoadingData], JobStatus::Successful),
    ("report", &[JobStatus::Failed], JobStatus::Failed),
];

fn kind_named(name: &str) -> JobKind {
    match name {
        "backup" => JobKind::Backup,
        _ => report_kind(),
    }
}

#[tokio::test]
async fn jobs_take_exactly_the_allowed_edges() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    with_backup(&state, "acme").await;
    for (kind, path) in PATHS {
        let job = state.create_job("acme", kind_named(kind)).await.unwrap();
        for (i, to) in path.iter().enumerate() {
            let after = state
                .transition(&job.id, *to, |j| {
                    j.counts.insert("step".into(), i as u64);
                })
                .await
                .unwrap_or_else(|e| panic!("{kind} {path:?} step {i}: {e}"));
            assert_eq!(after.status, *to);
            assert_eq!(after.counts["step"], i as u64);
            assert_eq!(after.finished_at.is_some(), to.is_terminal());
        }
        assert_eq!(
            state.get_job(&job.id).unwrap().status,
            *path.last().unwrap()
        );
    }
    for (kind, path, to) in REFUSED {
        let job = state.create_job("acme", kind_named(kind)).await.unwrap();
        for step in path.iter() {
            state.transition(&job.id, *step, |_| {}).await.unwrap();
        }
        let before = state.get_job(&job.id).unwrap();
        let err = state.transition(&job.id, *to, |_| {}).await.unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.class(), ErrorClass::Conflict);
        assert!(
            msg.contains(&job.id)
                && msg.contains(before.status.as_str())
                && msg.contains(to.as_str()),
            "{msg}"
        );
        assert_eq!(
            state.get_job(&job.id).unwrap(),
            before,
            "a refused edge changed the job"
        );
        if !before.status.is_terminal() {
            state
                .transition(&job.id, JobStatus::Abandoned, |_| {})
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_successful_job_is_done_and_an_edit_cannot_change_its_identity() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    let job = state.create_job("acme", JobKind::Backup).await.unwrap();
    assert_eq!(job.status, JobStatus::Initialized);
    assert_eq!(job.phase, Phase::Pending);
    assert!(uuid::Uuid::parse_str(&job.id).is_ok());
    let err = state
        .transition(&job.id, JobStatus::Running, |j| j.tenant = "other".into())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid);
    let running = state
        .transition(&job.id, JobStatus::Running, |j| {
            j.phase = Phase::Capturing;
            j.tasks.total = 64;
        })
        .await
        .unwrap();
    assert_eq!((running.phase, running.tasks.total), (Phase::Capturing, 64));
    let done = state
        .transition(&job.id, JobStatus::Successful, |j| {
            j.snapshot = Some("b9".into())
        })
        .await
        .unwrap();
    assert_eq!(done.phase, Phase::Done);
    assert_eq!(done.snapshot.as_deref(), Some("b9"));
    assert!(done.finished_at.is_some());
    assert!(matches!(
        state.get_job("nope"),
        Err(StateError::NotFound { .. })
    ));
}

#[tokio::test]
async fn one_open_job_per_tenant() {
    let (_dir, state, _key) = with_tenants(&["acme", "globex"]).await;
    with_backup(&state, "acme").await;
    let first = state.create_job("acme", JobKind::Backup).await.unwrap();
    let err = state.create_job("acme", report_kind()).await.unwrap_err();
    assert!(
        matches!(&err, StateError::Conflict { tenant, running_job } if tenant == "acme" && *running_job == first.id),
        "{err:?}"
    );
    assert!(err.to_string().contains(&first.id), "{err}");
    assert_eq!(err.class(), ErrorClass::Conflict);

    // Another tenant is independent.
    let other = state.create_job("globex", JobKind::Backup).await.unwrap();
    assert_eq!(state.open_jobs().unwrap().len(), 2);

    // Free again after a terminal transition.
    state
        .transition(&first.id, JobStatus::Failed, |j| {
            j.error = Some("the directory refused the token".into())
        })
        .await
        .unwrap();
    let second = state.create_job("acme", report_kind()).await.unwrap();
    assert_eq!(second.backup.as_deref(), Some("b1"));
    let open: Vec<String> = state
        .open_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(open.contains(&second.id) && open.contains(&other.id) && open.len() == 2);

    // Newest first.
    let listed: Vec<String> = state
        .list_jobs("acme")
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![second.id.clone(), first.id.clone()]);

    // Unknown tenant or backup.
    assert_eq!(
        state
            .create_job("nobody", JobKind::Backup)
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
    let missing = JobKind::Report {
        backup: "b404".into(),
        scope: Scope::All,
    };
    assert_eq!(
        state
            .create_job("globex", missing)
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_open_one_job_and_tenants_run_in_parallel() {
    let (_dir, state, _key) = with_tenants(&["acme", "globex", "initech"]).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let state = state.clone();
        let tenant = ["acme", "globex", "initech"][i % 3];
        tasks.push(tokio::spawn(async move {
            (tenant, state.create_job(tenant, JobKind::Backup).await)
        }));
    }
    let mut created = std::collections::BTreeMap::new();
    for task in tasks {
        let (tenant, result) = task.await.unwrap();
        match result {
            Ok(_) => *created.entry(tenant).or_insert(0) += 1,
            Err(StateError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        created,
        [("acme", 1), ("globex", 1), ("initech", 1)]
            .into_iter()
            .collect()
    );
    assert_eq!(state.open_jobs().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_results_count_exactly_once() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    let job = state.create_job("acme", JobKind::Backup).await.unwrap();
    state
        .transition(&job.id, JobStatus::Running, |j| j.tasks.total = 3)
        .await
        .unwrap();
    assert_eq!(
        state
            .record_task_result(&job.id, "shard-0", b"r0")
            .await
            .unwrap(),
        RecordOutcome::First
    );
    assert_eq!(
        state
            .record_task_result(&job.id, "shard-0", b"other")
            .await
            .unwrap(),
        RecordOutcome::Duplicate
    );
    // Redeliveries racing each other: one counts.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let state = state.clone();
        let id = job.id.clone();
        tasks.push(tokio::spawn(async move {
            state
                .record_task_result(&id, "shard-1", b"r1")
                .await
                .unwrap()
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        if task.await.unwrap() == RecordOutcome::First {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    let now = state.get_job(&job.id).unwrap();
    assert_eq!(now.tasks.done, 2);
    assert_eq!(now.tasks.total, 3);
    assert_eq!(
        state.task_results(&job.id).unwrap(),
        vec![
            ("shard-0".to_string(), b"r0".to_vec()),
            ("shard-1".to_string(), b"r1".to_vec())
        ]
    );
    // A finished job takes no new result, and a duplicate still changes nothing.
    state
        .transition(&job.id, JobStatus::Abandoned, |_| {})
        .await
        .unwrap();
    assert_eq!(
        state
            .record_task_result(&job.id, "shard-0", b"r0")
            .await
            .unwrap(),
        RecordOutcome::Duplicate
    );
    let err = state
        .record_task_result(&job.id, "shard-2", b"r2")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("abandoned"), "{err}");
    assert_eq!(state.get_job(&job.id).unwrap().tasks.done, 2);
    assert!(state.record_task_result("nope", "k", b"").await.is_err());
}

#[tokio::test]
async fn report_entries_page_by_cursor() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    with_backup(&state, "acme").await;
    let job = state.create_job("acme", report_kind()).await.unwrap();
    // Ranges out of order, one empty, one past 255 (big-endian order matters).
    let sizes = [(3u32, 5usize), (0, 3), (1, 0), (300, 4), (2, 1)];
    for (range, n) in sizes {
        let entries = (0..n)
            .map(|i| format!("{range}:{i}").into_bytes())
            .collect();
        state
            .put_report_entries(&job.id, range, entries)
            .await
            .unwrap();
    }
    let mut expected = Vec::new();
    for range in [0u32, 1, 2, 3, 300] {
        let n = sizes.iter().find(|(r, _)| *r == range).unwrap().1;
        expected.extend((0..n).map(|i| format!("{range}:{i}").into_bytes()));
    }
    for limit in [1, 2, 4, 13, 100] {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = state.report_entries_page(&job.id, cursor, limit).unwrap();
            assert!(page.len() <= limit);
            all.extend(page);
            match next {
                // A cursor survives its text form.
                Some(c) => cursor = Some(EntryCursor::from_token(&c.to_token()).unwrap()),
                None => break,
            }
        }
        assert_eq!(all, expected, "limit {limit}");
    }
    // Re-putting a range is idempotent; a shorter put replaces it.
    let again = (0..5).map(|i| format!("3:{i}").into_bytes()).collect();
    state.put_report_entries(&job.id, 3, again).await.unwrap();
    assert_eq!(state.report_entry_count(&job.id).unwrap(), 13);
    state
        .put_report_entries(&job.id, 3, vec![b"3:0".to_vec()])
        .await
        .unwrap();
    assert_eq!(state.report_entry_count(&job.id).unwrap(), 9);
    // A cursor in the middle starts right after it.
    let (page, _) = state
        .report_entries_page(&job.id, Some(EntryCursor { range: 0, seq: 2 }), 2)
        .unwrap();
    assert_eq!(page, vec![b"2:0".to_vec(), b"3:0".to_vec()]);

    // Deleting needs a finished report.
    assert!(state.delete_report(&job.id).await.is_err());
    state
        .transition(&job.id, JobStatus::Failed, |_| {})
        .await
        .unwrap();
    assert!(state
        .put_report_entries(&job.id, 9, vec![vec![1]])
        .await
        .is_err());
    state.delete_report(&job.id).await.unwrap();
    assert_eq!(state.report_entry_count(&job.id).unwrap(), 0);
    assert!(state.get_job(&job.id).is_err());
    assert!(state.list_jobs("acme").unwrap().is_empty());
}

#[tokio::test]
async fn expired_reports_are_the_finished_ones_past_the_tenants_days() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    with_backup(&state, "acme").await;
    let job = state.create_job("acme", report_kind()).await.unwrap();
    let now = job.created_at;
    assert!(state
        .expired_reports("acme", now + 30 * 86_400)
        .unwrap()
        .is_empty());
    state
        .transition(&job.id, JobStatus::Abandoned, |_| {})
        .await
        .unwrap();
    let backup = state.create_job("acme", JobKind::Backup).await.unwrap();
    state
        .transition(&backup.id, JobStatus::Failed, |_| {})
        .await
        .unwrap();
    assert!(state
        .expired_reports("acme", now + 86_400)
        .unwrap()
        .is_empty());
    let expired = state.expired_reports("acme", now + 8 * 86_400).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, job.id);
}

#[tokio::test]
async fn every_flushed_job_survives_a_restart() {
    let (dir, state, _key) = with_tenants(&["acme", "globex"]).await;
    let open = state.create_job("acme", JobKind::Backup).await.unwrap();
    let open = state
        .transition(&open.id, JobStatus::Running, |j| {
            j.phase = Phase::Capturing;
            j.tasks.total = 2;
            j.counts.insert("objects".into(), 1234);
        })
        .await
        .unwrap();
    state
        .record_task_result(&open.id, "shard-0", b"done")
        .await
        .unwrap();
    let finished = state.create_job("globex", JobKind::Backup).await.unwrap();
    let finished = state
        .transition(&finished.id, JobStatus::Failed, |j| {
            j.error = Some("boom".into())
        })
        .await
        .unwrap();
    let open = state.get_job(&open.id).unwrap();
    drop(state);

    let state = reopen(&dir);
    assert_eq!(state.get_job(&open.id).unwrap(), open);
    assert_eq!(state.get_job(&finished.id).unwrap(), finished);
    assert_eq!(state.open_jobs().unwrap(), vec![open.clone()]);
    assert_eq!(state.get_job(&open.id).unwrap().tasks.done, 1);
    assert_eq!(state.task_results(&open.id).unwrap().len(), 1);
    // Still one job at a time after the restart; resuming is a transition like any other.
    assert!(matches!(
        state.create_job("acme", JobKind::Backup).await,
        Err(StateError::Conflict { .. })
    ));
    let resumed = state
        .transition(&open.id, JobStatus::Running, |j| j.resumes += 1)
        .await
        .unwrap();
    assert_eq!(resumed.resumes, 1);
    assert!(state.create_job("globex", JobKind::Backup).await.is_ok());
}
