//! Damaged shard blobs are rejected with an error that names the shard: a flipped byte, a
//! truncation, a wrong format version, a blob put under the wrong shard — never a panic, never
//! partial data.

use proptest::prelude::*;
use rewind_common::snapshot::shard::{LoadedShard, ShardWriter};
use rewind_common::snapshot::{
    blake3_hex, load_snapshot, manifest_key, read_manifest, write_objects, ShardLayout, ShardStore,
};
use rewind_common::{DirectoryObject, ObjectId, ObjectType, SnapshotError, Value};

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
    let mut bytes = blob();
    bytes[8..10].copy_from_slice(&9u16.to_le_bytes());
    let digest = blake3_hex(&bytes);
    let err = open(bytes, Some(&digest)).expect_err("wrong version accepted");
    assert!(
        matches!(
            err,
            SnapshotError::UnsupportedVersion {
                shard: 0,
                found: 9,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("unsupported shard format version 9"),
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
