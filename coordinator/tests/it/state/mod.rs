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
