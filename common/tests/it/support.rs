//! Helpers shared by the tests: writing objects as a snapshot and diffing two of them through
//! the real store, blob format and engine.

use rewind_common::diff::{diff_decoded, diff_shards, DiffOptions};
use rewind_common::snapshot::{
    load_snapshot, write_objects, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
};
use rewind_common::{DirectoryObject, ReportEntry, Scope};

pub fn store() -> (tempfile::TempDir, LocalShardStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalShardStore::open(dir.path()).expect("store");
    (dir, store)
}

pub fn info(snapshot_id: &str) -> SnapshotInfo {
    SnapshotInfo {
        tenant: "contoso".into(),
        snapshot_id: snapshot_id.into(),
        kind: SnapshotKind::Backup,
        created_at: 1_795_000_000,
        not_captured: Vec::new(),
    }
}

/// Writes both states with the given layouts, loads them back and diffs them with the given
/// split. Also checks that the plain decode-everything diff gives the same entries.
pub fn diff_via_store(
    backup: &[DirectoryObject],
    current: &[DirectoryObject],
    scope: &Scope,
    bits: (u8, u8),
    split_bits: Option<u8>,
) -> Vec<ReportEntry> {
    let (_dir, store) = store();
    write_objects(
        &store,
        &info("b"),
        ShardLayout::new(bits.0),
        backup.iter().cloned(),
    )
    .expect("write backup");
    write_objects(
        &store,
        &info("c"),
        ShardLayout::new(bits.1),
        current.iter().cloned(),
    )
    .expect("write current");
    let b = load_snapshot(&store, "contoso", "b").expect("load backup");
    let c = load_snapshot(&store, "contoso", "c").expect("load current");
    let entries =
        diff_shards(&b.shards, &c.shards, scope, DiffOptions { split_bits }).expect("diff");
    let plain = diff_decoded(
        &b.decode_all().expect("decode"),
        &c.decode_all().expect("decode"),
        scope,
    )
    .expect("plain diff");
    assert_eq!(entries, plain, "engine and plain diff disagree");
    entries
}
