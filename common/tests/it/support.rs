//! Helpers shared by the tests: writing objects as a snapshot and diffing two of them through
//! the real store, blob format and engine.

use rewind_common::diff::{
    diff_decoded, diff_sets, diff_shards, DiffOptions, ShardSet, Uncompared,
};
use rewind_common::snapshot::standing::Standings;
use rewind_common::snapshot::{
    load_snapshot, seal_manifest_with, store_part, write_objects, LoadedSnapshot, LocalShardStore,
    Manifest, ShardLayout, ShardStore, SnapshotInfo, SnapshotKind,
};

/// The set a diff task of `range` builds: the range's shards and the standing lists.
fn partial<'a>(
    s: &'a LoadedSnapshot,
    lists: &'a [Standings],
    range: (rewind_common::ObjectId, rewind_common::ObjectId),
) -> ShardSet<'a> {
    let layout = s.manifest.layout();
    let (first, last) = (layout.shard_of(range.0), layout.shard_of(range.1));
    let shards = s
        .shards
        .iter()
        .filter(move |x| x.shard() >= first && x.shard() <= last);
    ShardSet::partial(layout, (first, last), shards, lists.iter().collect()).expect("a partial set")
}

/// A manifest's standing lists, read and verified.
pub fn standing_lists(store: &LocalShardStore, manifest: &Manifest) -> Vec<Standings> {
    manifest
        .standing
        .iter()
        .map(|s| {
            let bytes = store.get(&s.key).expect("a standing list");
            Standings::open(&bytes, &s.digest, &s.key).expect("a valid standing list")
        })
        .collect()
}
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

/// Writes `objects` as a snapshot whose shards have up to `parts` parts, an object's part
/// following its type (as capture tasks split a snapshot by collection), empty parts left out.
pub fn write_in_parts(
    store: &LocalShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    objects: &[DirectoryObject],
    parts: u16,
) {
    let mut refs = Vec::new();
    let mut lists = Vec::new();
    for part in 0..parts {
        let mut writers = layout.writers();
        for o in objects
            .iter()
            .filter(|o| o.object_type as u16 % parts == part)
        {
            writers[layout.shard_of(o.id) as usize].add(o.clone());
        }
        let (shards, standing) =
            store_part(store, info, layout, writers, part, None).expect("store part");
        refs.extend(shards);
        lists.push(standing);
    }
    seal_manifest_with(store, info, layout, refs, lists).expect("seal");
}

/// Diffs two snapshots written in parts (`(bits, parts)` each), whole and then range by range
/// (2^`range_bits` ranges, no finer than either layout) as a diff task does (each range from
/// the sets of its own shards and the standing lists alone), checking that the ranges
/// concatenated give the whole report.
pub fn diff_parts_via_store(
    backup: &[DirectoryObject],
    current: &[DirectoryObject],
    scope: &Scope,
    (b_bits, b_parts): (u8, u16),
    (c_bits, c_parts): (u8, u16),
    range_bits: u8,
) -> Vec<ReportEntry> {
    let (_dir, store) = store();
    write_in_parts(
        &store,
        &info("b"),
        ShardLayout::new(b_bits),
        backup,
        b_parts,
    );
    write_in_parts(
        &store,
        &info("c"),
        ShardLayout::new(c_bits),
        current,
        c_parts,
    );
    let b = load_snapshot(&store, "contoso", "b").expect("load backup");
    let c = load_snapshot(&store, "contoso", "c").expect("load current");
    let (bs, cs) = (
        ShardSet::of_snapshot(&b).expect("backup set"),
        ShardSet::of_snapshot(&c).expect("current set"),
    );
    let none = Uncompared::default();
    let options = DiffOptions::default();
    let whole = diff_sets(&bs, &cs, scope, options, &none, None).expect("diff");
    let ranges = ShardLayout::new(range_bits.min(b_bits).min(c_bits));
    let b_lists = standing_lists(&store, &b.manifest);
    let c_lists = standing_lists(&store, &c.manifest);
    let mut by_range = Vec::new();
    for r in 0..ranges.count() {
        let range = ranges.range(r);
        let (pb, pc) = (partial(&b, &b_lists, range), partial(&c, &c_lists, range));
        by_range
            .extend(diff_sets(&pb, &pc, scope, options, &none, Some(range)).expect("range diff"));
        assert!(
            diff_sets(&pb, &pc, scope, options, &none, None).is_err(),
            "a partial set diffed whole"
        );
    }
    assert_eq!(whole, by_range, "ranges concatenated differ from the whole");
    whole
}
