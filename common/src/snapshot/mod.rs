//! Snapshots: a manifest plus one blob per ID-range shard, kept in a write-once shard store.
//!
//! - [`layout`]: how the 128-bit id space is cut into a power-of-two number of shards;
//! - [`shard`]: the shard blob format (sorted index of id, type, lifecycle, content hash, and
//!   zstd-compressed blocks of rmp-serde encoded objects), its writer and its verified reader;
//! - [`store`]: the [`ShardStore`] trait and the local-directory store;
//! - this module: the [`Manifest`], and writing / loading whole snapshots.
//!
//! A snapshot's manifest and its shard blobs carry one [`FORMAT_VERSION`]. A reader refuses a
//! newer version (naming both), never guesses at it. `common/tests/golden/` holds a snapshot of
//! every format version this build reads, and a test reads each to its expected objects.

pub mod layout;
pub mod raw;
pub mod shard;
pub mod standing;
pub mod store;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::fan_out::fan_out;
use crate::model::DirectoryObject;
pub use layout::ShardLayout;
pub use shard::{IndexEntry, LoadedShard, ShardWriter};
pub use store::{BlobInfo, LocalShardStore, ShardStore, StoreError};

/// The snapshot format (manifest and shard blobs) this build writes, and the newest it reads.
/// Version 2 gave the manifest a digest of its own; version 3 lets a shard have several parts
/// (one per capture task) or none; version 1 was never deployed.
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version this build reads. Deployed backups must stay readable: raise it
/// only for versions that were never deployed.
pub const OLDEST_FORMAT_VERSION: u16 = 2;

/// Checks that a manifest or blob of format `found` (`what` names it) is one this build reads.
pub(crate) fn check_format_version(
    what: impl FnOnce() -> String,
    found: u16,
) -> Result<(), SnapshotError> {
    if (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(SnapshotError::UnsupportedVersion {
            what: what(),
            found,
        })
    }
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotKind {
    /// A retained backup.
    Backup,
    /// The current state, taken for a report or a recovery.
    Live,
    /// Taken just before a recovery, so that the recovery can be undone.
    PreRecovery,
}

/// One shard of a snapshot as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardRef {
    pub index: u32,
    /// Which part of the shard this blob is (a snapshot captured by several tasks has one part
    /// per task and shard; parts hold disjoint ids). Absent for part 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u16,
    /// The store key of the blob.
    pub key: String,
    /// blake3 of the whole blob, lowercase hex; verified on every read.
    pub digest: String,
    pub objects: u64,
    pub bytes: u64,
}

/// A part's standing list ([`standing`]) as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandingRef {
    pub part: u16,
    pub key: String,
    /// blake3 of the list, lowercase hex; verified on every read.
    pub digest: String,
    pub objects: u64,
}

/// What a snapshot holds: its identity, its layout and a verified reference to every shard.
///
/// Stored as JSON with its own [`Manifest::digest`]; fields unknown to this build are refused
/// (they could only come from a newer format or from tampering).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u16,
    pub tenant: String,
    pub snapshot_id: String,
    pub kind: SnapshotKind,
    /// Unix seconds.
    pub created_at: i64,
    pub shard_bits: u8,
    pub object_count: u64,
    pub shards: Vec<ShardRef>,
    /// Kept properties this snapshot did not read (`"user.perUserMfaState"`: type name, a dot,
    /// property name), by the capture's settings; a report compares them only between two
    /// snapshots that both read them. Absent when it read everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_captured: Vec<String>,
    /// One standing list per part (format 3; absent in snapshots written without them, whose
    /// diffs then read every shard for the far ends of links).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standing: Vec<StandingRef>,
    /// blake3 of the manifest's canonical bytes ([`Manifest::canonical_bytes`]), lowercase
    /// hex; verified when the manifest is read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

impl Manifest {
    /// What the digest covers: the manifest as compact JSON, fields in their declared order,
    /// without the digest itself.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut body = self.clone();
        body.digest.clear();
        serde_json::to_vec(&body)
            .map_err(|e| SnapshotError::Invalid(format!("manifest does not serialize: {e}")))
    }

    /// The digest of the manifest's current content.
    pub fn compute_digest(&self) -> Result<String, SnapshotError> {
        Ok(blake3_hex(&self.canonical_bytes()?))
    }

    pub fn layout(&self) -> ShardLayout {
        ShardLayout::new(self.shard_bits)
    }

    /// Total bytes of all shard blobs.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }
}

fn is_zero(part: &u16) -> bool {
    *part == 0
}

/// The store key of a snapshot's folder.
pub fn snapshot_prefix(tenant: &str, snapshot_id: &str) -> String {
    format!("tenants/{tenant}/snapshots/{snapshot_id}")
}

pub fn manifest_key(tenant: &str, snapshot_id: &str) -> String {
    format!("{}/manifest.json", snapshot_prefix(tenant, snapshot_id))
}

pub fn shard_key(tenant: &str, snapshot_id: &str, shard: u32) -> String {
    shard_part_key(tenant, snapshot_id, shard, 0, None)
}

/// The store key of part `part` of a shard (part 0 has the plain shard key). A capture task
/// tags its keys (`tag`): a retried capture reads a directory that may have changed, so its
/// blobs differ from those of an attempt that failed midway, and the store is write-once.
pub fn shard_part_key(
    tenant: &str,
    snapshot_id: &str,
    shard: u32,
    part: u16,
    tag: Option<&str>,
) -> String {
    let prefix = snapshot_prefix(tenant, snapshot_id);
    match (part, tag) {
        (0, None) => format!("{prefix}/shard-{shard:05}.rws"),
        (_, None) => format!("{prefix}/shard-{shard:05}.p{part}.rws"),
        (_, Some(tag)) => format!("{prefix}/shard-{shard:05}.p{part}.{tag}.rws"),
    }
}

/// The identity of a snapshot being written.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub tenant: String,
    pub snapshot_id: String,
    pub kind: SnapshotKind,
    pub created_at: i64,
    /// Kept properties the snapshot does not hold ([`Manifest::not_captured`]).
    pub not_captured: Vec<String>,
}

/// Finishes one shard writer and stores its blob; the returned reference goes in the manifest.
pub fn store_shard(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    writer: ShardWriter,
) -> Result<ShardRef, SnapshotError> {
    let (shard, blob) = pack_shard(info, writer, 0, None)?;
    store.put(&shard.key, &blob)?;
    Ok(shard)
}

/// Packs a shard writer into its blob and the reference the manifest will hold.
pub fn pack_shard(
    info: &SnapshotInfo,
    writer: ShardWriter,
    part: u16,
    tag: Option<&str>,
) -> Result<(ShardRef, Vec<u8>), SnapshotError> {
    let index = writer.shard_index();
    let objects = writer.len() as u64;
    let blob = writer.finish()?;
    let shard = ShardRef {
        index,
        part,
        key: shard_part_key(&info.tenant, &info.snapshot_id, index, part, tag),
        digest: blake3_hex(&blob),
        objects,
        bytes: blob.len() as u64,
    };
    Ok((shard, blob))
}

/// Threads that store packed blobs: a put waits on the disk (it syncs), so several are in
/// flight while the rayon pool packs the next ones.
const STORE_THREADS: usize = 8;

/// Stores the manifest of a snapshot whose shards are all stored. Called last, so that a
/// manifest only ever names blobs that are already in the store.
pub fn seal_manifest(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    shards: Vec<ShardRef>,
) -> Result<Manifest, SnapshotError> {
    seal_manifest_with(store, info, layout, shards, Vec::new())
}

/// [`seal_manifest`] with the parts' standing lists (one per part, or none at all).
pub fn seal_manifest_with(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    mut shards: Vec<ShardRef>,
    mut standing: Vec<StandingRef>,
) -> Result<Manifest, SnapshotError> {
    standing.sort_by_key(|s| s.part);
    if standing.windows(2).any(|w| w[0].part == w[1].part) {
        return Err(SnapshotError::Invalid(
            "cannot seal the snapshot: a part has two standing lists".into(),
        ));
    }
    shards.sort_by_key(|s| (s.index, s.part));
    check_shard_list(&shards, layout)
        .map_err(|e| SnapshotError::Invalid(format!("cannot seal the snapshot: {e}")))?;
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        tenant: info.tenant.clone(),
        snapshot_id: info.snapshot_id.clone(),
        kind: info.kind,
        created_at: info.created_at,
        shard_bits: layout.bits(),
        object_count: shards.iter().map(|s| s.objects).sum(),
        shards,
        not_captured: info.not_captured.clone(),
        standing,
        digest: String::new(),
    };
    manifest.digest = manifest.compute_digest()?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| SnapshotError::Invalid(format!("manifest does not serialize: {e}")))?;
    store.put(&manifest_key(&info.tenant, &info.snapshot_id), &json)?;
    Ok(manifest)
}

/// Finishes every shard writer (in parallel), stores the blobs, then the manifest.
pub fn write_snapshot(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    writers: Vec<ShardWriter>,
) -> Result<Manifest, SnapshotError> {
    let (shards, standing) = store_writers(store, info, layout, writers, (0, None), false)?;
    seal_manifest_with(store, info, layout, shards, vec![standing])
}

/// What [`store_part`] stored: the part's shard blobs and its standing list.
pub type StoredPart = (Vec<ShardRef>, StandingRef);

/// The store key of a part's standing list.
pub fn standing_key(tenant: &str, snapshot_id: &str, part: u16, tag: Option<&str>) -> String {
    let prefix = snapshot_prefix(tenant, snapshot_id);
    match tag {
        None => format!("{prefix}/standing.p{part}.rwst"),
        Some(tag) => format!("{prefix}/standing.p{part}.{tag}.rwst"),
    }
}

/// Finishes shard writers (in parallel) and stores their blobs as part `part` of their shards
/// (keys tagged with `tag`, see [`shard_part_key`]), without sealing: a capture task stores
/// its part, and the snapshot is sealed once every part is stored. Empty writers store
/// nothing (an absent part is an empty one).
pub fn store_part(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    writers: Vec<ShardWriter>,
    part: u16,
    tag: Option<&str>,
) -> Result<StoredPart, SnapshotError> {
    store_writers(store, info, layout, writers, (part, tag), true)
}

fn store_writers(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    writers: Vec<ShardWriter>,
    (part, tag): (u16, Option<&str>),
    skip_empty: bool,
) -> Result<StoredPart, SnapshotError> {
    if writers.iter().any(|w| w.layout() != layout) {
        return Err(SnapshotError::Invalid(
            "every shard writer must use the snapshot's layout".into(),
        ));
    }
    if part >= MAX_PARTS {
        return Err(SnapshotError::Invalid(format!(
            "part {part} is past the {MAX_PARTS} parts a shard may have"
        )));
    }
    let writers: Vec<ShardWriter> = writers
        .into_iter()
        .filter(|w| !(skip_empty && w.is_empty()))
        .collect();
    let list = standing::encode_standing(writers.iter().flat_map(ShardWriter::standing).collect())?;
    let standing = StandingRef {
        part,
        key: standing_key(&info.tenant, &info.snapshot_id, part, tag),
        digest: blake3_hex(&list),
        objects: writers.iter().map(|w| w.len() as u64).sum(),
    };
    store.put(&standing.key, &list)?;
    let stored = std::sync::Mutex::new(Vec::with_capacity(writers.len()));
    fan_out(
        STORE_THREADS,
        STORE_THREADS,
        |send| {
            writers.into_par_iter().try_for_each(|writer| {
                let packed = pack_shard(info, writer, part, tag)?;
                // Stopped: a put failed, and that error is the result (not this one).
                send(packed).map_err(|_| SnapshotError::Invalid("storing stopped".into()))
            })
        },
        |(shard, blob): (ShardRef, Vec<u8>)| {
            store.put(&shard.key, &blob)?;
            stored
                .lock()
                .map_err(|_| SnapshotError::Invalid("a shard store thread panicked".into()))?
                .push(shard);
            Ok(())
        },
        || SnapshotError::Invalid("a shard store thread panicked".into()),
    )?;
    let mut shards = stored
        .into_inner()
        .map_err(|_| SnapshotError::Invalid("a shard store thread panicked".into()))?;
    shards.sort_by_key(|s| s.index);
    Ok((shards, standing))
}

/// Writes a snapshot of `objects` (any order) with the given layout.
pub fn write_objects(
    store: &dyn ShardStore,
    info: &SnapshotInfo,
    layout: ShardLayout,
    objects: impl IntoIterator<Item = DirectoryObject>,
) -> Result<Manifest, SnapshotError> {
    let mut writers = layout.writers();
    for object in objects {
        writers[layout.shard_of(object.id) as usize].add(object);
    }
    write_snapshot(store, info, layout, writers)
}

/// Just the version of a manifest, read before anything else so that a newer format is
/// refused as such rather than as a manifest that does not parse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestVersion {
    format_version: u16,
}

/// Reads and checks a snapshot's manifest: its format version, its digest, that it is the
/// manifest of this snapshot, and that it lists every shard in order.
pub fn read_manifest(
    store: &dyn ShardStore,
    tenant: &str,
    snapshot_id: &str,
) -> Result<Manifest, SnapshotError> {
    let key = manifest_key(tenant, snapshot_id);
    let snapshot = || format!("snapshot {tenant}/{snapshot_id}");
    let bytes = store.get(&key)?;
    let parse_error = |e: serde_json::Error| {
        SnapshotError::Invalid(format!("manifest {key} does not parse: {e}"))
    };
    let version: ManifestVersion = serde_json::from_slice(&bytes).map_err(parse_error)?;
    check_format_version(snapshot, version.format_version)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(parse_error)?;
    let actual = manifest.compute_digest()?;
    if manifest.digest != actual {
        return Err(SnapshotError::ManifestDigestMismatch {
            snapshot: snapshot(),
            expected: manifest.digest,
            actual,
        });
    }
    if manifest.tenant != tenant || manifest.snapshot_id != snapshot_id {
        return Err(SnapshotError::Invalid(format!(
            "manifest {key} is the manifest of snapshot {}/{}",
            manifest.tenant, manifest.snapshot_id
        )));
    }
    check_shard_list(&manifest.shards, manifest.layout())
        .map_err(|e| SnapshotError::Invalid(format!("manifest {key}: {e}")))?;
    Ok(manifest)
}

/// What a manifest's shard list must be: ordered by shard and part, each (shard, part) once,
/// every shard of the layout, each with at most [`MAX_PARTS`] parts. A shard may have no part
/// (it is empty).
fn check_shard_list(shards: &[ShardRef], layout: ShardLayout) -> Result<(), String> {
    for pair in shards.windows(2) {
        if (pair[0].index, pair[0].part) >= (pair[1].index, pair[1].part) {
            return Err(format!(
                "shard {} part {} is listed out of order or twice",
                pair[1].index, pair[1].part
            ));
        }
    }
    if let Some(s) = shards.iter().find(|s| s.index >= layout.count()) {
        return Err(format!(
            "shard {} is outside its {} shards",
            s.index,
            layout.count()
        ));
    }
    if let Some(s) = shards.iter().find(|s| s.part >= MAX_PARTS) {
        return Err(format!(
            "shard {} has part {}, past the {MAX_PARTS} parts a shard may have",
            s.index, s.part
        ));
    }
    Ok(())
}

/// Parts a shard may have (one per capture task of a snapshot).
pub const MAX_PARTS: u16 = 64;

/// A snapshot loaded into memory: every blob read, verified against its digest and indexed.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub manifest: Manifest,
    /// One per blob of the manifest, in its order (by shard, then part); a shard may have
    /// several parts or none.
    pub shards: Vec<LoadedShard>,
}

impl LoadedSnapshot {
    pub fn object_count(&self) -> usize {
        self.shards.iter().map(LoadedShard::len).sum()
    }

    /// Every object of the snapshot, decoded, in id order.
    pub fn decode_all(&self) -> Result<Vec<DirectoryObject>, SnapshotError> {
        let mut out = Vec::with_capacity(self.object_count());
        for shard in &self.shards {
            out.extend(shard.decode_all()?);
        }
        // Parts of one shard hold disjoint ids, each in order: merge them.
        out.sort_by_key(|o| o.id);
        Ok(out)
    }
}

/// Loads the blob at `position` of a manifest's shard list: read, verify the digest, check and
/// index the blob.
pub fn load_shard(
    store: &dyn ShardStore,
    manifest: &Manifest,
    position: usize,
) -> Result<LoadedShard, SnapshotError> {
    let shard_ref = manifest.shards.get(position).ok_or_else(|| {
        SnapshotError::Invalid(format!("no blob {position} in the manifest's shard list"))
    })?;
    load_shard_ref(store, manifest, shard_ref)
}

/// Loads one blob (a shard, or a part of one) that `manifest` lists.
pub fn load_shard_ref(
    store: &dyn ShardStore,
    manifest: &Manifest,
    shard_ref: &ShardRef,
) -> Result<LoadedShard, SnapshotError> {
    let bytes = store.get(&shard_ref.key)?;
    open_shard(bytes, manifest, shard_ref)
}

/// Verifies and indexes the blob `bytes` that `shard_ref` of `manifest` names.
pub fn open_shard(
    bytes: Vec<u8>,
    manifest: &Manifest,
    shard_ref: &ShardRef,
) -> Result<LoadedShard, SnapshotError> {
    LoadedShard::open(
        bytes,
        manifest.layout(),
        shard_ref.index,
        Some(&shard_ref.digest),
    )
    .map_err(|e| match e {
        SnapshotError::UnsupportedVersion { what, found } => SnapshotError::UnsupportedVersion {
            what: format!(
                "{what} of snapshot {}/{}",
                manifest.tenant, manifest.snapshot_id
            ),
            found,
        },
        other => other,
    })
}

/// Loads a whole snapshot, blobs in parallel (in the manifest's order: by shard, then part).
pub fn load_snapshot(
    store: &dyn ShardStore,
    tenant: &str,
    snapshot_id: &str,
) -> Result<LoadedSnapshot, SnapshotError> {
    let manifest = read_manifest(store, tenant, snapshot_id)?;
    let shards = manifest
        .shards
        .par_iter()
        .map(|r| load_shard_ref(store, &manifest, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LoadedSnapshot { manifest, shards })
}

/// blake3 of `bytes` as lowercase hex (multithreaded for large inputs).
pub fn blake3_hex(bytes: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    if bytes.len() >= 1 << 20 {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
    hasher.finalize().to_hex().to_string()
}
