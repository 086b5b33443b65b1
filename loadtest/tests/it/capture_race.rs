//! A capture while the directory changes under it: users are soft-deleted and restored through
//! Graph all the while a capture pages through them, and every user, since each exists
//! throughout, must be in the snapshot exactly once, in one of its states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rewind_common::connector::{capture_snapshot, GraphConnector, GraphSettings};
use rewind_common::snapshot::{
    load_snapshot, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
};
use rewind_common::{ObjectId, ObjectType};
use rewind_loadtest::gen::{self, GenConfig};
use serde_json::json;

use crate::dirsim::support::Sim;

const TENANT: &str = "race";

#[test]
fn users_moving_in_and_out_of_the_recycle_bin_during_a_capture_are_captured_once() {
    let sim = Sim::start();
    gen::run(&GenConfig {
        dirsim: sim.base.clone(),
        tenant: TENANT.into(),
        objects: 2_500,
        seed: 5,
        client_id: Some(format!("app-{TENANT}")),
        client_secret: Some(format!("secret-{TENANT}")),
    })
    .unwrap();
    let c = sim.client(TENANT);
    let all = c.get_all("/users?$top=999&$select=id,onPremisesSyncEnabled");
    let id_of = |u: &serde_json::Value| -> ObjectId { u["id"].as_str().unwrap().parse().unwrap() };
    // Synced users are soft-deleted by the sync, not through Graph: they stay put.
    let users: Vec<ObjectId> = all
        .iter()
        .filter(|u| u["onPremisesSyncEnabled"] != true)
        .map(id_of)
        .collect();
    assert!(users.len() > 1_000);
    // A slow directory and small pages, so that the capture takes long enough for many moves.
    sim.settings(json!({"latency_ms": 2}));
    let mut deleted = BTreeSet::new();
    for id in users.iter().step_by(10) {
        assert_eq!(c.delete(&format!("/users/{id}")).status, 204);
        deleted.insert(*id);
    }
    let mut settings = GraphSettings::new(
        sim.base.clone(),
        format!("{}/{TENANT}/v1.0", sim.base),
        TENANT,
        format!("app-{TENANT}"),
        format!("secret-{TENANT}"),
    );
    settings.page_size = 25;
    let connector = GraphConnector::new(settings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalShardStore::open(dir.path()).unwrap();
    let info = SnapshotInfo {
        tenant: TENANT.into(),
        snapshot_id: "moving".into(),
        kind: SnapshotKind::Backup,
        created_at: 1_795_000_000,
        not_captured: Vec::new(),
    };
    let done = AtomicBool::new(false);
    let (moves_deleting, moves_restoring) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            while !done.load(Ordering::Relaxed) {
                // Half the moves restore one of the soft-deleted users, half soft-delete one.
                let id = if rng.gen_bool(0.5) && !deleted.is_empty() {
                    let nth = rng.gen_range(0..deleted.len());
                    deleted.iter().nth(nth).copied().unwrap()
                } else {
                    users[rng.gen_range(0..users.len())]
                };
                if deleted.contains(&id) {
                    let r = c.post_empty(&format!("/directory/deletedItems/{id}/restore"));
                    assert_eq!(r.status, 200, "{:?}", r.body);
                    deleted.remove(&id);
                    moves_restoring.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_eq!(c.delete(&format!("/users/{id}")).status, 204);
                    deleted.insert(id);
                    moves_deleting.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let result = capture_snapshot(&connector, &store, &info, ShardLayout::new(3));
        done.store(true, Ordering::Relaxed);
        result.unwrap();
    });
    let (d, r) = (
        moves_deleting.load(Ordering::Relaxed),
        moves_restoring.load(Ordering::Relaxed),
    );
    assert!(
        d >= 20 && r >= 20,
        "too few moves during the capture to test it ({d} soft deletes, {r} restores)"
    );
    let loaded = load_snapshot(&store, TENANT, "moving").unwrap();
    let mut times: BTreeMap<ObjectId, usize> = BTreeMap::new();
    for o in loaded.decode_all().unwrap() {
        if o.object_type == ObjectType::User {
            *times.entry(o.id).or_default() += 1;
        }
    }
    let every: Vec<ObjectId> = all.iter().map(id_of).collect();
    let missing: Vec<_> = every.iter().filter(|id| !times.contains_key(id)).collect();
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {} users missing after {d} soft deletes and {r} restores, e.g. {:?}",
        missing.len(),
        every.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(twice.is_empty(), "captured twice: {twice:?}");
    assert_eq!(times.len(), every.len());
}
