//! The snapshot catalog: immutable records, retention keeping exactly N and picking the oldest,
//! removals recorded.

use rewind_common::report::Scope;
use rewind_common::snapshot::SnapshotKind;
use rewind_coordinator::state::{
    Actor, ErrorClass, JobKind, JobStatus, SweepState, TenantSettings,
};

use super::{snapshot, with_tenants};

#[tokio::test]
async fn sealed_snapshots_are_immutable_and_listed_newest_first() {
    let (_dir, state, _key) = with_tenants(&["acme", "globex"]).await;
    let b1 = snapshot("acme", "b1", SnapshotKind::Backup, 100);
    state.add_sealed(b1.clone()).await.unwrap();
    state.add_sealed(b1.clone()).await.unwrap();
    let mut changed = b1.clone();
    changed.object_count += 1;
    let err = state.add_sealed(changed).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert!(err.to_string().contains("immutable"), "{err}");
    assert_eq!(state.get_snapshot("acme", "b1").unwrap(), b1);

    state
        .add_sealed(snapshot("acme", "l1", SnapshotKind::Live, 300))
        .await
        .unwrap();
    state
        .add_sealed(snapshot("acme", "b2", SnapshotKind::Backup, 200))
        .await
        .unwrap();
    state
        .add_sealed(snapshot("globex", "b1", SnapshotKind::Backup, 50))
        .await
        .unwrap();
    let ids = |kind| -> Vec<String> {
        state
            .list_snapshots("acme", kind)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(ids(None), ["l1", "b2", "b1"]);
    assert_eq!(ids(Some(SnapshotKind::Backup)), ["b2", "b1"]);
    assert_eq!(state.list_snapshots("globex", None).unwrap().len(), 1);
    assert!(state
        .add_sealed(snapshot("nobody", "b1", SnapshotKind::Backup, 1))
        .await
        .is_err());
    assert!(state
        .add_sealed(snapshot("acme", "a/b", SnapshotKind::Backup, 1))
        .await
        .is_err());
}

#[tokio::test]
async fn retention_keeps_exactly_n_and_removes_the_oldest() {
    let (_dir, state, _key) = with_tenants(&["acme"]).await;
    // Added out of order; b1 is the oldest.
    for i in [5, 1, 9, 3, 10, 2, 8, 4, 7, 6] {
        state
            .add_sealed(snapshot(
                "acme",
                &format!("b{i}"),
                SnapshotKind::Backup,
                i * 100,
            ))
            .await
            .unwrap();
    }
    for (id, kind) in [
        ("l0", SnapshotKind::Live),
        ("p0", SnapshotKind::PreRecovery),
    ] {
        state
            .add_sealed(snapshot("acme", id, kind, 1))
            .await
            .unwrap();
    }
    let victims = |keep| -> Vec<String> {
        state
            .retention_victims("acme", keep)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(victims(7), ["b1", "b2", "b3"]);
    assert_eq!(victims(10), Vec::<String>::new());
    assert_eq!(victims(9), ["b1"]);

    // A backup an open report reads is kept.
    let report = state
        .create_job(
            "acme",
            JobKind::Report {
                backup: "b2".into(),
                scope: Scope::All,
            },
        )
        .await
        .unwrap();
    assert_eq!(victims(7), ["b1", "b3"]);
    let err = state
        .remove_snapshot("acme", "b2", "retention")
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&report.id), "{err}");
    state
        .transition(&report.id, JobStatus::Abandoned, |_| {})
        .await
        .unwrap();

    // A kept backup cannot be removed; a victim can, and the removal is recorded.
    let err = state
        .remove_snapshot("acme", "b4", "retention")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("7 newest"), "{err}");
    for victim in state.retention_victims("acme", 7).unwrap() {
        state
            .remove_snapshot("acme", &victim.id, "retention: 7 backups kept")
            .await
            .unwrap();
    }
    let left = state
        .list_snapshots("acme", Some(SnapshotKind::Backup))
        .unwrap();
    assert_eq!(left.len(), 7);
    assert_eq!(left.last().unwrap().id, "b4");
    assert!(victims(7).is_empty());
    let removals = state.removals().unwrap();
    let removed: Vec<&str> = removals.iter().map(|r| r.snapshot.id.as_str()).collect();
    assert_eq!(removed, ["b1", "b2", "b3"]);
    assert!(removals
        .iter()
        .all(|r| r.reason == "retention: 7 backups kept"));

    // Lowering the retention makes more victims; live snapshots go with their reports.
    state
        .update_tenant(
            "acme",
            TenantSettings {
                retention: Some(5),
                ..TenantSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(victims(5), ["b4", "b5"]);
    state
        .remove_snapshot("acme", "l0", "report expired")
        .await
        .unwrap();
    assert!(state.get_snapshot("acme", "l0").is_err());
    assert_eq!(state.removals().unwrap().len(), 4);
    assert_eq!(
        state
            .remove_snapshot("acme", "l0", "again")
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
    // Each removal left one audit record, the coordinator's; the refused ones left none.
    let audited: Vec<(String, String)> = state
        .audit_page(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "snapshot.removed")
        .inspect(|r| assert_eq!(r.actor, Actor::Coordinator, "{r:?}"))
        .map(|r| (r.subject.snapshot.unwrap(), r.details["reason"].clone()))
        .collect();
    let removals: Vec<(String, String)> = state
        .removals()
        .unwrap()
        .into_iter()
        .map(|r| (r.snapshot.id, r.reason))
        .collect();
    assert_eq!(audited, removals);
    assert_eq!(state.verify_audit().unwrap().broken, None);

    // Each removal left a sweep of its snapshot's blobs, due once the snapshot is gone.
    let sweeps = state.blob_sweeps().unwrap();
    let prefixes: Vec<&str> = sweeps.iter().map(|s| s.prefix.as_str()).collect();
    assert_eq!(
        prefixes,
        [
            "tenants/acme/snapshots/b1/",
            "tenants/acme/snapshots/b2/",
            "tenants/acme/snapshots/b3/",
            "tenants/acme/snapshots/l0/"
        ]
    );
    assert_eq!(
        state.sweep_state(&sweeps[1], 0).await.unwrap(),
        SweepState::Due
    );
    state.sweep_done(&sweeps[1].prefix).await.unwrap();
    // A sweep never deletes blobs the catalog names: with b1 back, its sweep is dropped.
    state
        .add_sealed(snapshot("acme", "b1", SnapshotKind::Backup, 100))
        .await
        .unwrap();
    assert_eq!(
        state.sweep_state(&sweeps[0], 0).await.unwrap(),
        SweepState::Stale
    );
    let prefixes: Vec<String> = state
        .blob_sweeps()
        .unwrap()
        .into_iter()
        .map(|s| s.prefix)
        .collect();
    assert_eq!(
        prefixes,
        ["tenants/acme/snapshots/b3/", "tenants/acme/snapshots/l0/"]
    );

    // An unsealed snapshot's sweep waits for its time; a sealed one gets none.
    assert!(!state.sweep_unsealed("acme", "b1", 500).await.unwrap());
    assert!(state.sweep_unsealed("acme", "u1", 500).await.unwrap());
    let unsealed = state
        .blob_sweeps()
        .unwrap()
        .into_iter()
        .find(|s| s.prefix == "tenants/acme/snapshots/u1/")
        .unwrap();
    assert_eq!(
        state.sweep_state(&unsealed, 499).await.unwrap(),
        SweepState::Later
    );
    assert_eq!(
        state.sweep_state(&unsealed, 500).await.unwrap(),
        SweepState::Due
    );
    assert!(state.sweep_unsealed("acme", "a/b", 0).await.is_err());
}
