//! Tests of the coordinator's durable state (`rewind_coordinator::state`) on real sled files in
//! temporary directories.

mod catalog;
mod jobs;
mod tenants;

use rewind_common::snapshot::SnapshotKind;
use rewind_coordinator::state::{NewTenant, SecretKey, SnapshotRecord, State};

/// A fresh state in its own temporary directory (kept alive by the returned guard).
pub fn open() -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = State::open(dir.path().join("state")).expect("the state opens");
    (dir, state)
}

/// Reopens the state in `dir` after the last handle was dropped (sled's flusher thread may hold
/// the directory's lock a moment longer).
pub fn reopen(dir: &tempfile::TempDir) -> State {
    let path = dir.path().join("state");
    let mut last = None;
    for _ in 0..100 {
        match State::open(&path) {
            Ok(state) => return state,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot reopen the state: {last:?}");
}

pub fn new_tenant(name: &str) -> NewTenant {
    NewTenant::new(
        name,
        "http://127.0.0.1:9/acme/v1.0",
        "http://127.0.0.1:9/acme/oauth2/v2.0/token",
        "client-1",
        "s3cret-value",
    )
}

/// Opens a state with tenants `names` added under a new key.
pub async fn with_tenants(names: &[&str]) -> (tempfile::TempDir, State, SecretKey) {
    let (dir, state) = open();
    let key = SecretKey::generate();
    for name in names {
        state
            .add_tenant(&key, new_tenant(name))
            .await
            .expect("the tenant is added");
    }
    (dir, state, key)
}

pub fn snapshot(tenant: &str, id: &str, kind: SnapshotKind, created_at: i64) -> SnapshotRecord {
    SnapshotRecord {
        tenant: tenant.into(),
        id: id.into(),
        kind,
        created_at,
        object_count: 42,
        manifest_key: format!("{tenant}/{id}/manifest"),
        manifest_digest: "00".repeat(32),
        job: "job-1".into(),
    }
}

/// Many writers flushing at once, in several states of one process (as the coordinator's API
/// handlers, its engine and its scheduler do), all finish. sled's own `flush_async` runs each
/// flush on sled's thread pool, where a flush waits for a log write that is a task of the same
/// pool: enough of them at once took every thread and hung every flush of the process. The
/// time limit only turns such a hang into a failure; nothing here measures speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flushes_in_several_states_all_finish() {
    let states: Vec<(tempfile::TempDir, State)> = (0..4).map(|_| open()).collect();
    let mut writers = Vec::new();
    for (i, (_, state)) in states.iter().enumerate() {
        for w in 0..16 {
            let state = state.clone();
            writers.push(tokio::spawn(async move {
                for round in 0..8 {
                    let name = format!("t{i}-{w}-{round}");
                    state
                        .add_tenant(&SecretKey::generate(), new_tenant(&name))
                        .await
                        .unwrap();
                    state.flush().await.unwrap();
                }
            }));
        }
    }
    let all = futures_util::future::join_all(writers);
    let done = tokio::time::timeout(std::time::Duration::from_secs(120), all)
        .await
        .expect("every flush finishes (sled's thread pool is not exhausted by flushes)");
    for r in done {
        r.unwrap();
    }
    for (_, state) in &states {
        assert_eq!(state.list_tenants().unwrap().len(), 16 * 8);
    }
}
