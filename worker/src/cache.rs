//! The worker's cache of loaded snapshots: verified and indexed once, shared by every diff
//! that reads them, bounded in bytes and evicting the least recently used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rewind_common::snapshot::{self, LoadedSnapshot, ShardStore};
use rewind_common::SnapshotError;

type Key = (String, String);

/// Loaded snapshots by (tenant, snapshot id).
#[derive(Debug)]
pub struct SnapshotCache {
    entries: DashMap<Key, (Arc<LoadedSnapshot>, u64)>,
    /// Serializes loads so that one snapshot is never loaded twice at once.
    loading: Mutex<()>,
    clock: AtomicU64,
    budget_bytes: u64,
    loads: AtomicU64,
}

impl SnapshotCache {
    /// A cache holding at most `budget_bytes` of shard blobs (one snapshot is always kept, even
    /// when larger than the budget).
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            entries: DashMap::new(),
            loading: Mutex::new(()),
            clock: AtomicU64::new(0),
            budget_bytes,
            loads: AtomicU64::new(0),
        }
    }

    /// How many snapshots were read from the store so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn touch(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The snapshot, from the cache or loaded (read, verified, indexed) from `store`.
    pub fn get_or_load(
        &self,
        store: &dyn ShardStore,
        tenant: &str,
        snapshot_id: &str,
    ) -> Result<Arc<LoadedSnapshot>, SnapshotError> {
        let key = (tenant.to_owned(), snapshot_id.to_owned());
        if let Some(mut hit) = self.entries.get_mut(&key) {
            hit.1 = self.touch();
            return Ok(hit.0.clone());
        }
        let _guard = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = self.entries.get(&key) {
            return Ok(hit.0.clone());
        }
        let loaded = Arc::new(snapshot::load_snapshot(store, tenant, snapshot_id)?);
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(key, (loaded.clone(), self.touch()));
        self.evict();
        Ok(loaded)
    }

    fn evict(&self) {
        loop {
            let total: u64 = self
                .entries
                .iter()
                .map(|e| e.value().0.manifest.total_bytes())
                .sum();
            if total <= self.budget_bytes || self.entries.len() <= 1 {
                return;
            }
            let oldest = self
                .entries
                .iter()
                .min_by_key(|e| e.value().1)
                .map(|e| e.key().clone());
            match oldest {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_common::snapshot::{
        write_objects, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
    };
    use rewind_common::{DirectoryObject, ObjectId, ObjectType};

    fn write(store: &LocalShardStore, id: &str, n: u128) {
        let info = SnapshotInfo {
            tenant: "t".into(),
            snapshot_id: id.into(),
            kind: SnapshotKind::Backup,
            created_at: 0,
            not_captured: Vec::new(),
        };
        let objects = (0..n).map(|i| DirectoryObject::new(ObjectId(i << 100), ObjectType::User));
        write_objects(store, &info, ShardLayout::new(2), objects).unwrap();
    }

    #[test]
    fn loads_once_and_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        write(&store, "a", 10);
        write(&store, "b", 10);
        let cache = SnapshotCache::new(1);
        let a1 = cache.get_or_load(&store, "t", "a").unwrap();
        let a2 = cache.get_or_load(&store, "t", "a").unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert_eq!(cache.loads(), 1);
        assert_eq!(a1.object_count(), 10);
        cache.get_or_load(&store, "t", "b").unwrap();
        assert_eq!(
            cache.entries.len(),
            1,
            "budget of 1 byte keeps one snapshot"
        );
        cache.get_or_load(&store, "t", "a").unwrap();
        assert_eq!(cache.loads(), 3);
        assert!(cache.get_or_load(&store, "t", "missing").is_err());
    }
}
