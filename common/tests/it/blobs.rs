//! Damaged shard blobs are rejected with an error that names the shard: a flipped byte, a
//! truncation, a wrong format version, a blob put under the wrong shard — never a panic, never
//! partial data. Tampered manifests and those of a newer format are refused naming the snapshot.

use proptest::prelude::*;
use rewind_common::diff::{diff_sets, DiffOptions, IdRange, ShardSet, Uncompared};
use rewind_common::snapshot::shard::{LoadedShard, ShardWriter};
use rewind_common::snapshot::{
    blake3_hex, load_snapshot, manifest_key, read_manifest, seal_manifest, store_part,
    write_objects, LocalShardStore, ShardLayout, ShardStore, FORMAT_VERSION, OLDEST_FORMAT_VERSION,
};
use rewind_common::{
    DirectoryObject, ObjectId, ObjectType, ReportEntry, Scope, SnapshotError, Value,
};

use crate::support::{info, store};

fn objects(n: u128) -> Vec<DirectoryObject> {
    (0..n)
        .map(|i| {
            let mut u =
                DirectoryObject::new(ObjectId(i * (u128::MAX / n.max(1))), ObjectType::User);
            u.set("displayName", Value::from(format!("User {i}")));
            u.set(
                "department",
                Value::from(["Sales", "Legal"][i as usize % 2]),
            );
            u.set("city", Value::from("Berlin"));
            u
        })
        .collect()
}

/// One shard blob of 300 objects (large enough to carry a compression dictionary).
fn blob() -> Vec<u8> {
    let layout = ShardLayout::new(0);
    let mut w = ShardWriter::new(layout, 0);
    for o in objects(300) {
        w.add(o);
    }
    w.finish().expect("blob")
}

fn open(bytes: Vec<u8>, digest: Option<&str>) -> Result<LoadedShard, SnapshotError> {
    LoadedShard::open(bytes, ShardLayout::new(0), 0, digest)
}

#[test]
fn an_intact_blob_reads_back_every_object() {
    let bytes = blob();
    let digest = blake3_hex(&bytes);
    let shard = open(bytes, Some(&digest)).expect("intact blob");
    let mut expected = objects(300);
    expected.iter_mut().for_each(DirectoryObject::normalize);
    assert_eq!(shard.decode_all().expect("decode"), expected);
}

#[test]
fn a_flipped_byte_is_a_digest_mismatch_naming_the_shard() {
    let (_dir, store) = store();
    write_objects(&store, &info("s"), ShardLayout::new(2), objects(64)).expect("write");
    let manifest = read_manifest(&store, "contoso", "s").expect("manifest");
    let victim = &manifest.shards[3];
    let mut bytes = store.get(&victim.key).expect("blob");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(store.root().join(&victim.key), &bytes).expect("overwrite");
    let err = load_snapshot(&store, "contoso", "s").expect_err("corrupt blob accepted");
    assert!(
        matches!(err, SnapshotError::DigestMismatch { shard: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("shard 3: digest mismatch"),
        "{err}"
    );
}

#[test]
fn a_truncated_blob_is_rejected() {
    let bytes = blob();
    let digest = blake3_hex(&bytes);
    let cut = bytes[..bytes.len() - 7].to_vec();
    let err = open(cut.clone(), Some(&digest)).expect_err("truncated accepted");
    assert!(
        matches!(err, SnapshotError::DigestMismatch { shard: 0, .. }),
        "{err}"
    );
    let err = open(cut, None).expect_err("truncated accepted without digest");
    assert!(
        matches!(err, SnapshotError::Truncated { shard: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = open(bytes[..10].to_vec(), None).expect_err("stub accepted");
    assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
}

#[test]
fn a_wrong_version_is_rejected_even_with_a_matching_digest() {
    for (version, reads) in [
        (
            FORMAT_VERSION + 1,
            format!("this build reads versions up to {FORMAT_VERSION}"),
        ),
        (
            OLDEST_FORMAT_VERSION - 1,
            format!("this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"),
        ),
    ] {
        let mut bytes = blob();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let digest = blake3_hex(&bytes);
        let err = open(bytes, Some(&digest)).expect_err("wrong version accepted");
        assert!(
            matches!(&err, SnapshotError::UnsupportedVersion { what, found } if what == "shard 0" && *found == version),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("shard 0 was written by format version {version}; {reads}")
        );
    }
}

/// The manifest of snapshot `id` as JSON, to be altered by a test.
fn manifest_json(store: &LocalShardStore, id: &str) -> serde_json::Value {
    let bytes = store.get(&manifest_key("contoso", id)).expect("manifest");
    serde_json::from_slice(&bytes).expect("manifest json")
}

fn put_manifest_json(store: &LocalShardStore, id: &str, json: &serde_json::Value) {
    let path = store.root().join(manifest_key("contoso", id));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("snapshot folder");
    }
    std::fs::write(path, serde_json::to_vec_pretty(json).expect("json")).expect("overwrite");
}

#[test]
fn a_manifest_of_a_newer_format_is_refused_naming_both_versions() {
    let (_dir, store) = store();
    write_objects(&store, &info("n"), ShardLayout::new(1), objects(8)).expect("write");
    let mut json = manifest_json(&store, "n");
    let newer = FORMAT_VERSION + 1;
    json["formatVersion"] = newer.into();
    // A newer format may have fields and shapes this build does not know.
    json["shards"] = serde_json::json!({"packedSomehowElse": true});
    put_manifest_json(&store, "n", &json);
    let err = load_snapshot(&store, "contoso", "n").expect_err("newer manifest read");
    assert_eq!(
        err.to_string(),
        format!(
            "snapshot contoso/n was written by format version {newer}; this build reads versions up to {FORMAT_VERSION}"
        )
    );
}

#[test]
fn a_shard_blob_of_a_newer_format_is_refused_naming_its_snapshot() {
    let (_dir, store) = store();
    write_objects(&store, &info("b"), ShardLayout::new(1), objects(8)).expect("write");
    let mut manifest = read_manifest(&store, "contoso", "b").expect("manifest");
    // A blob of a newer format under a manifest whose digests all hold.
    let newer = FORMAT_VERSION + 1;
    let shard = &mut manifest.shards[1];
    let mut bytes = store.get(&shard.key).expect("blob");
    bytes[8..10].copy_from_slice(&newer.to_le_bytes());
    std::fs::write(store.root().join(&shard.key), &bytes).expect("overwrite blob");
    shard.digest = blake3_hex(&bytes);
    manifest.digest = manifest.compute_digest().expect("digest");
    put_manifest_json(&store, "b", &serde_json::to_value(&manifest).expect("json"));
    let err = load_snapshot(&store, "contoso", "b").expect_err("newer blob read");
    assert_eq!(
        err.to_string(),
        format!(
            "shard 1 of snapshot contoso/b was written by format version {newer}; this build reads versions up to {FORMAT_VERSION}"
        )
    );
}

/// Alters a manifest's JSON.
type Tamper = fn(&mut serde_json::Value);

#[test]
fn a_tampered_manifest_is_refused_naming_its_snapshot() {
    let (_dir, store) = store();
    write_objects(&store, &info("t"), ShardLayout::new(1), objects(8)).expect("write");
    let intact = manifest_json(&store, "t");
    let tamperings: [(&str, Tamper); 4] = [
        ("object count", |j| j["objectCount"] = 7.into()),
        ("shard key", |j| j["shards"][0]["key"] = "elsewhere".into()),
        ("digest removed", |j| {
            j.as_object_mut().map(|m| m.remove("digest"));
        }),
        ("unknown field", |j| j["extra"] = true.into()),
    ];
    for (what, tamper) in tamperings {
        let mut json = intact.clone();
        tamper(&mut json);
        put_manifest_json(&store, "t", &json);
        let err = read_manifest(&store, "contoso", "t").expect_err(what);
        let text = err.to_string();
        assert!(
            text.starts_with("snapshot contoso/t: manifest digest mismatch")
                || text.contains("manifest tenants/contoso/snapshots/t/manifest.json does not parse: unknown field"),
            "{what}: {text}"
        );
    }
    // Reformatting is not tampering: the digest covers content, not layout.
    put_manifest_json(&store, "t", &intact);
    let manifest = read_manifest(&store, "contoso", "t").expect("reformatted manifest");
    assert_eq!(manifest.object_count, 8);
}

#[test]
fn a_manifest_under_another_snapshot_is_refused() {
    let (_dir, store) = store();
    write_objects(&store, &info("a"), ShardLayout::new(1), objects(8)).expect("write");
    let json = manifest_json(&store, "a");
    put_manifest_json(&store, "x", &json);
    let err = read_manifest(&store, "contoso", "x").expect_err("moved manifest read");
    assert!(
        err.to_string()
            .contains("is the manifest of snapshot contoso/a"),
        "{err}"
    );
}

#[test]
fn a_blob_under_the_wrong_shard_or_magic_is_rejected() {
    let bytes = blob();
    let err =
        LoadedShard::open(bytes.clone(), ShardLayout::new(1), 1, None).expect_err("wrong shard");
    assert!(
        matches!(err, SnapshotError::Corrupt { shard: 1, .. }),
        "{err}"
    );
    let mut bad = bytes;
    bad[0] = b'X';
    let err = open(bad, None).expect_err("bad magic");
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn damaged_compressed_data_with_a_recomputed_digest_fails_cleanly() {
    let mut bytes = blob();
    let n = bytes.len();
    for b in &mut bytes[n - 200..n - 100] {
        *b = 0xAA;
    }
    let digest = blake3_hex(&bytes);
    let shard = open(bytes, Some(&digest)).expect("structure is intact");
    let err = shard.decode_all().expect_err("garbage decoded");
    assert!(
        matches!(err, SnapshotError::Corrupt { shard: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_missing_or_damaged_manifest_is_a_clear_error() {
    let (_dir, store) = store();
    let err = load_snapshot(&store, "contoso", "nope").expect_err("missing");
    assert!(err.to_string().contains("no blob under key"), "{err}");
    write_objects(&store, &info("m"), ShardLayout::new(1), objects(4)).expect("write");
    let key = manifest_key("contoso", "m");
    std::fs::write(store.root().join(&key), b"{not json").expect("overwrite");
    let err = load_snapshot(&store, "contoso", "m").expect_err("bad manifest");
    assert!(err.to_string().contains("does not parse"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever bytes are damaged (structure checks only, no digest), opening and decoding
    /// returns either the objects or an error; it never panics or reads out of bounds.
    #[test]
    fn random_damage_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<Option<prop::sample::Index>>()) {
        let mut bytes = blob();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(c) = cut {
            let len = c.index(bytes.len());
            bytes.truncate(len);
        }
        if let Ok(shard) = open(bytes, None) {
            let _ = shard.decode_all();
        }
    }
}

#[test]
fn a_part_listed_twice_or_an_object_in_two_parts_is_refused() {
    let (_dir, store) = store();
    let layout = ShardLayout::new(1);
    let snapshot = info("p");
    let part = |n: u16| {
        let mut writers = layout.writers();
        for o in objects(10) {
            writers[layout.shard_of(o.id) as usize].add(o);
        }
        store_part(&store, &snapshot, layout, writers, n, None).expect("part")
    };
    let (zero, one) = (part(0), part(1));
    let (zero, one) = (zero.0, one.0);
    let twice: Vec<_> = zero.iter().chain(&zero).cloned().collect();
    let err = seal_manifest(&store, &snapshot, layout, twice).expect_err("sealed twice");
    assert!(err.to_string().contains("twice"), "{err}");
    // The same objects in parts 0 and 1: the manifest is well formed, but a diff finds an id
    // in two parts of one shard and names it.
    let both: Vec<_> = zero.into_iter().chain(one).collect();
    seal_manifest(&store, &snapshot, layout, both).expect("seal");
    let err = self_diff(&store, "p", None).expect_err("an id in two parts diffed");
    assert!(err.to_string().contains("in two parts"), "{err}");
}

/// Diffs snapshot `id` with itself, within `range`.
fn self_diff(
    store: &LocalShardStore,
    id: &str,
    range: Option<IdRange>,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let loaded = load_snapshot(store, "contoso", id).expect("load");
    let set = ShardSet::of_snapshot(&loaded).expect("set");
    let none = Uncompared::default();
    diff_sets(
        &set,
        &set,
        &Scope::All,
        DiffOptions::default(),
        &none,
        range,
    )
}

#[test]
fn a_range_off_the_shard_bounds_is_refused() {
    let (_dir, store) = store();
    write_objects(&store, &info("r"), ShardLayout::new(2), objects(20)).expect("write");
    let half = ShardLayout::new(3).range(1);
    let err = self_diff(&store, "r", Some(half)).expect_err("range inside a shard accepted");
    assert!(err.to_string().contains("shard bounds"), "{err}");
}
