//! A part's standing list: every id the part holds, sorted, each with whether the object is
//! active or in the recycle bin. The diff looks up the far ends of changed links in it, so a
//! diff task of one range of shards loads its range's shards and the snapshot's standing
//! lists (17 bytes an object) instead of every shard of both snapshots.
//!
//! Layout: `RWST`, format version (u16 LE), count (u64 LE), then per object its 16-byte id
//! (big-endian, so the byte order is the id order) and one byte (1: active, 0: soft-deleted).
//! Verified (digest, magic, version, length, strict order) before use.

use crate::error::SnapshotError;
use crate::id::ObjectId;
use crate::snapshot::{blake3_hex, check_format_version, FORMAT_VERSION};

const MAGIC: &[u8; 4] = b"RWST";
const HEADER: usize = 4 + 2 + 8;
const ENTRY: usize = 17;

/// Encodes the standing of `objects` (any order; an id twice is refused).
pub fn encode_standing(mut objects: Vec<(ObjectId, bool)>) -> Result<Vec<u8>, SnapshotError> {
    objects.sort_unstable_by_key(|(id, _)| *id);
    if let Some(w) = objects.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SnapshotError::Invalid(format!(
            "object {} is twice in a standing list",
            w[0].0
        )));
    }
    let mut out = Vec::with_capacity(HEADER + objects.len() * ENTRY);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(objects.len() as u64).to_le_bytes());
    for (id, active) in objects {
        out.extend_from_slice(&id.0.to_be_bytes());
        out.push(u8::from(active));
    }
    Ok(out)
}

/// A verified standing list.
#[derive(Debug)]
pub struct Standings {
    ids: Vec<u128>,
    active: Vec<bool>,
}

impl Standings {
    /// Verifies `bytes` against `digest` (and its structure); `what` names the list in errors.
    pub fn open(bytes: &[u8], digest: &str, what: &str) -> Result<Self, SnapshotError> {
        let bad = |reason: String| SnapshotError::Invalid(format!("{what}: {reason}"));
        let actual = blake3_hex(bytes);
        if !actual.eq_ignore_ascii_case(digest) {
            return Err(bad(format!(
                "digest mismatch (the manifest has {digest}, the list hashes to {actual}); the list is corrupt"
            )));
        }
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(bad("not a standing list".into()));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        check_format_version(|| what.to_owned(), version)?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[6..14]);
        let count = u64::from_le_bytes(count);
        let expected = count
            .checked_mul(ENTRY as u64)
            .and_then(|n| n.checked_add(HEADER as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(bad(format!("{} bytes for {count} objects", bytes.len())));
        }
        let mut ids = Vec::with_capacity(count as usize);
        let mut active = Vec::with_capacity(count as usize);
        for entry in bytes[HEADER..].chunks_exact(ENTRY) {
            let mut id = [0u8; 16];
            id.copy_from_slice(&entry[..16]);
            let id = u128::from_be_bytes(id);
            if ids.last().is_some_and(|last| *last >= id) {
                return Err(bad("ids out of order".into()));
            }
            if entry[16] > 1 {
                return Err(bad(format!(
                    "standing byte {} of object {}",
                    entry[16],
                    ObjectId(id)
                )));
            }
            ids.push(id);
            active.push(entry[16] == 1);
        }
        Ok(Self { ids, active })
    }

    /// Whether `id` is active (`Some(true)`), soft-deleted (`Some(false)`) or absent.
    pub fn lookup(&self, id: ObjectId) -> Option<bool> {
        self.ids.binary_search(&id.0).ok().map(|i| self.active[i])
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held in memory.
    pub fn held_bytes(&self) -> usize {
        self.ids.capacity() * 16 + self.active.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let list = encode_standing(vec![
            (ObjectId(9), false),
            (ObjectId(3), true),
            (ObjectId(u128::MAX), true),
        ])
        .unwrap();
        let digest = blake3_hex(&list);
        let s = Standings::open(&list, &digest, "list").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.lookup(ObjectId(3)), Some(true));
        assert_eq!(s.lookup(ObjectId(9)), Some(false));
        assert_eq!(s.lookup(ObjectId(4)), None);
        let mut damaged = list.clone();
        damaged[HEADER + 16] = 7;
        let err = Standings::open(&damaged, &digest, "list p1").unwrap_err();
        assert!(
            err.to_string().contains("list p1: digest mismatch"),
            "{err}"
        );
        let err = Standings::open(&damaged, &blake3_hex(&damaged), "list").unwrap_err();
        assert!(err.to_string().contains("standing byte"), "{err}");
        assert!(encode_standing(vec![(ObjectId(1), true), (ObjectId(1), false)]).is_err());
    }
}
