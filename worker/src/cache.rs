//! The worker's cache of loaded shards: each blob (a shard of a snapshot, or a part of one)
//! verified and indexed once, shared by every diff that reads it, bounded in the bytes it
//! really holds and evicting the least recently used. Manifests are cached beside them, so a
//! second report on the same backup reads nothing from the store that the cache holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rayon::prelude::*;
use rewind_common::metrics as m;
use rewind_common::snapshot::standing::Standings;
use rewind_common::snapshot::{self, LoadedShard, Manifest, ShardRef, ShardStore, StandingRef};
use rewind_common::SnapshotError;

/// One blob of one snapshot of one tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShardKey {
    pub tenant: String,
    pub snapshot: String,
    pub shard: u32,
    pub part: u16,
}

/// A cache entry. Its mutex is held while the blob loads, so that one key is loaded once while
/// loads of other keys go on.
type Slot = Arc<Mutex<Option<Cached>>>;

/// A standing list's cache entry, locked while it loads.
type StandingSlot = Arc<Mutex<Option<Arc<Standings>>>>;

#[derive(Debug)]
struct Cached {
    shard: Arc<LoadedShard>,
    bytes: u64,
    last_used: u64,
}

/// What the cache did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes of the shards the cache holds now.
    pub bytes: u64,
    pub evictions: u64,
}

/// Loaded shards by (tenant, snapshot, shard, part), and manifests by (tenant, snapshot).
#[derive(Debug)]
pub struct ShardCache {
    shards: DashMap<ShardKey, Slot>,
    /// Standing lists by (tenant, snapshot, part); small (17 bytes an object), kept with
    /// their manifest.
    standings: DashMap<(String, String, u16), StandingSlot>,
    manifests: DashMap<(String, String), Arc<Manifest>>,
    clock: AtomicU64,
    budget_bytes: u64,
    bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// One evicting thread at a time: two loads finishing together would otherwise both see
    /// the cache over its budget and each evict for the same overshoot.
    evicting: std::sync::Mutex<()>,
}

impl ShardCache {
    /// A cache holding at most about `budget_bytes` of loaded shards. Shards in use by a diff
    /// stay alive with it even when evicted; the budget bounds what the cache itself keeps.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            shards: DashMap::new(),
            standings: DashMap::new(),
            manifests: DashMap::new(),
            clock: AtomicU64::new(0),
            budget_bytes,
            bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            evicting: std::sync::Mutex::new(()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn touch(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The snapshot's manifest, from the cache or read (and verified) from `store`. A sealed
    /// manifest never changes, so it is kept until [`ShardCache::forget_snapshot`].
    pub fn manifest(
        &self,
        store: &dyn ShardStore,
        tenant: &str,
        snapshot_id: &str,
    ) -> Result<Arc<Manifest>, SnapshotError> {
        let key = (tenant.to_owned(), snapshot_id.to_owned());
        if let Some(hit) = self.manifests.get(&key) {
            return Ok(hit.clone());
        }
        let manifest = Arc::new(snapshot::read_manifest(store, tenant, snapshot_id)?);
        self.manifests.insert(key, manifest.clone());
        Ok(manifest)
    }

    /// One blob of `manifest`, from the cache or loaded (read, verified, indexed).
    pub fn shard(
        &self,
        store: &dyn ShardStore,
        manifest: &Manifest,
        shard_ref: &ShardRef,
    ) -> Result<Arc<LoadedShard>, SnapshotError> {
        let key = ShardKey {
            tenant: manifest.tenant.clone(),
            snapshot: manifest.snapshot_id.clone(),
            shard: shard_ref.index,
            part: shard_ref.part,
        };
        let slot = self.shards.entry(key).or_default().clone();
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = guard.as_mut() {
            cached.last_used = self.touch();
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::SNAPSHOT_CACHE_HITS_TOTAL).increment(1);
            return Ok(cached.shard.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SNAPSHOT_CACHE_MISSES_TOTAL).increment(1);
        let started = std::time::Instant::now();
        let loaded = Arc::new(snapshot::load_shard_ref(store, manifest, shard_ref)?);
        metrics::histogram!(m::SHARD_LOAD_SECONDS).record(started.elapsed().as_secs_f64());
        let bytes = loaded.held_bytes() as u64;
        *guard = Some(Cached {
            shard: loaded.clone(),
            bytes,
            last_used: self.touch(),
        });
        drop(guard);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.evict();
        metrics::gauge!(m::SNAPSHOT_CACHE_BYTES).set(self.bytes.load(Ordering::Relaxed) as f64);
        Ok(loaded)
    }

    /// A part's standing list, from the cache or read and verified.
    pub fn standing(
        &self,
        store: &dyn ShardStore,
        manifest: &Manifest,
        standing: &StandingRef,
    ) -> Result<Arc<Standings>, SnapshotError> {
        let key = (
            manifest.tenant.clone(),
            manifest.snapshot_id.clone(),
            standing.part,
        );
        let slot = self.standings.entry(key).or_default().clone();
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = guard.as_ref() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::SNAPSHOT_CACHE_HITS_TOTAL).increment(1);
            return Ok(hit.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SNAPSHOT_CACHE_MISSES_TOTAL).increment(1);
        let bytes = store.get(&standing.key)?;
        let what = format!(
            "standing list of part {} of snapshot {}/{}",
            standing.part, manifest.tenant, manifest.snapshot_id
        );
        let loaded = Arc::new(Standings::open(&bytes, &standing.digest, &what)?);
        self.bytes
            .fetch_add(loaded.held_bytes() as u64, Ordering::Relaxed);
        *guard = Some(loaded.clone());
        Ok(loaded)
    }

    /// The blobs of shards `first..=last` of a snapshot, loading what the cache lacks on the
    /// rayon pool.
    pub fn shards_in(
        &self,
        store: &dyn ShardStore,
        manifest: &Manifest,
        (first, last): (u32, u32),
    ) -> Result<Vec<Arc<LoadedShard>>, SnapshotError> {
        manifest
            .shards
            .par_iter()
            .filter(|r| r.index >= first && r.index <= last)
            .map(|r| self.shard(store, manifest, r))
            .collect()
    }

    /// Every blob of a snapshot (in its manifest's order), loading what the cache lacks on the
    /// rayon pool.
    pub fn snapshot(
        &self,
        store: &dyn ShardStore,
        tenant: &str,
        snapshot_id: &str,
    ) -> Result<(Arc<Manifest>, Vec<Arc<LoadedShard>>), SnapshotError> {
        let manifest = self.manifest(store, tenant, snapshot_id)?;
        let shards = manifest
            .shards
            .par_iter()
            .map(|r| self.shard(store, &manifest, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((manifest, shards))
    }

    /// Drops everything held of a snapshot (after retention removed it).
    pub fn forget_snapshot(&self, tenant: &str, snapshot_id: &str) {
        self.manifests
            .remove(&(tenant.to_owned(), snapshot_id.to_owned()));
        let lists: Vec<_> = self
            .standings
            .iter()
            .filter(|e| e.key().0 == tenant && e.key().1 == snapshot_id)
            .map(|e| e.key().clone())
            .collect();
        for k in lists {
            if let Some((_, slot)) = self.standings.remove(&k) {
                if let Some(s) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    self.bytes
                        .fetch_sub(s.held_bytes() as u64, Ordering::Relaxed);
                }
            }
        }
        let keys: Vec<ShardKey> = self
            .shards
            .iter()
            .filter(|e| e.key().tenant == tenant && e.key().snapshot == snapshot_id)
            .map(|e| e.key().clone())
            .collect();
        for k in keys {
            if let Some((_, slot)) = self.shards.remove(&k) {
                self.release(&slot);
            }
        }
    }

    /// Takes a slot's shard out, uncounting its bytes.
    fn release(&self, slot: &Slot) {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = guard.take() {
            self.bytes.fetch_sub(cached.bytes, Ordering::Relaxed);
        }
    }

    /// Evicts least recently used shards until the cache is within its budget. Slots being
    /// loaded (locked) are skipped.
    fn evict(&self) {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        while self.bytes.load(Ordering::Relaxed) > self.budget_bytes {
            let mut oldest: Option<(u64, ShardKey)> = None;
            for e in self.shards.iter() {
                let Ok(guard) = e.value().try_lock() else {
                    continue;
                };
                if let Some(cached) = guard.as_ref() {
                    if oldest.as_ref().is_none_or(|(t, _)| cached.last_used < *t) {
                        oldest = Some((cached.last_used, e.key().clone()));
                    }
                }
            }
            let Some((_, key)) = oldest else {
                return;
            };
            if let Some((_, slot)) = self.shards.remove(&key) {
                self.release(&slot);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::SNAPSHOT_CACHE_EVICTIONS_TOTAL).increment(1);
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
        let objects =
            (0..n).map(|i| DirectoryObject::new(ObjectId(i * (u128::MAX / n)), ObjectType::User));
        write_objects(store, &info, ShardLayout::new(2), objects).unwrap();
    }

    #[test]
    fn loads_each_shard_once_and_counts_hits() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        write(&store, "a", 10);
        let cache = ShardCache::new(u64::MAX);
        let (m, first) = cache.snapshot(&store, "t", "a").unwrap();
        let (_, second) = cache.snapshot(&store, "t", "a").unwrap();
        assert_eq!(first.len(), 4);
        assert!(first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)));
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (4, 4));
        let held: u64 = first.iter().map(|s| s.held_bytes() as u64).sum();
        assert_eq!(stats.bytes, held);
        assert_eq!(m.object_count, 10);
        assert!(cache.snapshot(&store, "t", "missing").is_err());
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        write(&store, "a", 10);
        write(&store, "b", 10);
        // Room for one snapshot: loading b (the same size as a) evicts all of a.
        let one: u64 = {
            let probe = ShardCache::new(u64::MAX);
            let (_, s) = probe.snapshot(&store, "t", "a").unwrap();
            s.iter().map(|s| s.held_bytes() as u64).sum()
        };
        let cache = ShardCache::new(one);
        cache.snapshot(&store, "t", "a").unwrap();
        assert_eq!(cache.stats().evictions, 0);
        cache.snapshot(&store, "t", "b").unwrap();
        let stats = cache.stats();
        assert_eq!(stats.bytes, one, "{stats:?}");
        assert_eq!(stats.evictions, 4, "{stats:?}");
        // b is held: reading it again loads nothing.
        cache.snapshot(&store, "t", "b").unwrap();
        assert_eq!(cache.stats().misses, stats.misses);
        cache.forget_snapshot("t", "b");
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn unrelated_loads_run_at_once() {
        // Two threads load different shards while a third waits on a shard being loaded: no
        // global lock, so the count of loads is exactly one per shard.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        write(&store, "a", 100);
        let cache = ShardCache::new(u64::MAX);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.snapshot(&store, "t", "a").unwrap());
            }
        });
        assert_eq!(cache.stats().misses, 4);
        assert_eq!(cache.stats().hits, 12);
    }
}
