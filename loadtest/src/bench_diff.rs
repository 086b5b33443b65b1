//! `rewind loadtest bench-diff`: generates a tenant and its changed state, stores both as
//! snapshots, and measures the diff cold (load, verify, index and diff), warm (diff alone) and
//! against a plain baseline that decodes every object and compares field by field.
//!
//! With `--store`, the snapshots are kept and reused by later runs. A store records what its
//! snapshots were generated with ([`StoreParams`]); a run with other parameters, or one whose
//! generator makes other objects than the store holds, is refused rather than measuring stale
//! data.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use rewind_common::diff::{diff_decoded, diff_decoded_part, diff_snapshots};
use rewind_common::graph_json::to_graph_json;
use rewind_common::snapshot::store::StoreError;
use rewind_common::snapshot::{
    self, manifest_key, seal_manifest, store_shard, LoadedSnapshot, LocalShardStore, Manifest,
    ShardLayout, ShardStore, ShardWriter, SnapshotInfo, SnapshotKind, FORMAT_VERSION,
};
use rewind_common::{DirectoryObject, ObjectId, ReportEntry, ReportSummary, Scope, SnapshotError};
use serde::{Deserialize, Serialize};

use crate::rss;
use crate::tenant::{Fate, TenantGenerator, TenantSpec, GENERATOR_VERSION};

const TENANT: &str = "bench";
/// The store key of the [`StoreParams`] record.
pub const PARAMS_KEY: &str = "bench-diff.json";
/// Objects of each reused snapshot regenerated and compared with what the store holds.
const SPOT_CHECKS: u64 = 256;

/// What the snapshots in a store were generated with; a store is reused only by a run with the
/// same parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreParams {
    pub seed: u64,
    pub objects: u64,
    pub block_bytes: usize,
    pub generator_version: u32,
    pub format_version: u16,
}

impl StoreParams {
    pub fn of(config: &BenchDiffConfig) -> Self {
        Self {
            seed: config.seed,
            objects: config.objects,
            block_bytes: config.block_bytes,
            generator_version: GENERATOR_VERSION,
            format_version: FORMAT_VERSION,
        }
    }

    /// The parameters that differ, each as `name store-value (this run: value)`.
    fn differences(&self, found: &Self) -> Vec<String> {
        let pairs = [
            ("seed", found.seed, self.seed),
            ("objects", found.objects, self.objects),
            (
                "block bytes",
                found.block_bytes as u64,
                self.block_bytes as u64,
            ),
            (
                "generator version",
                u64::from(found.generator_version),
                u64::from(self.generator_version),
            ),
            (
                "format version",
                u64::from(found.format_version),
                u64::from(self.format_version),
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, found, wanted)| found != wanted)
            .map(|(name, found, wanted)| format!("{name} {found} (this run: {wanted})"))
            .collect()
    }
}

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchDiffConfig {
    pub objects: u64,
    pub seed: u64,
    /// Timed repetitions of each measurement (the median is reported).
    pub runs: usize,
    /// Where the snapshots go (a temporary folder when `None`).
    pub store: Option<PathBuf>,
    /// Also write both states as Graph-shaped JSON Lines here.
    pub export_jsonl: Option<PathBuf>,
    /// Raw bytes per compressed block of the shard blobs.
    pub block_bytes: usize,
}

/// The results, printed as one JSON object.
#[derive(Clone, Debug, Serialize)]
pub struct BenchDiffResult {
    pub objects: u64,
    pub changed: u64,
    pub created: u64,
    pub soft_deleted: u64,
    pub report_entries: u64,
    pub shards: u32,
    pub cold_seconds: f64,
    pub warm_seconds: f64,
    pub baseline_seconds: f64,
    pub speedup: f64,
    pub cold_runs: Vec<f64>,
    pub warm_runs: Vec<f64>,
    pub baseline_runs: Vec<f64>,
    /// Peak resident memory over the cold and warm phases.
    pub peak_rss_bytes: u64,
    /// Peak resident memory over the baseline phase.
    pub baseline_peak_rss_bytes: u64,
    /// Stored bytes (compressed blobs, index included) per object.
    pub bytes_per_object: f64,
    /// Encoded (rmp-serde) bytes per object before compression.
    pub encoded_bytes_per_object: f64,
    /// Encoded object bytes over stored bytes.
    pub compression_ratio: f64,
    pub generate_seconds: f64,
    pub block_bytes: usize,
    pub threads: usize,
}

/// Errors of the benchmark driver.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Snapshot(#[from] rewind_common::SnapshotError),
    #[error(transparent)]
    Store(#[from] rewind_common::snapshot::store::StoreError),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the report is wrong: {0}")]
    Wrong(String),
    #[error("the store {} does not hold what this run would generate: {what}; use another --store or remove that folder", path.display())]
    StaleStore { path: PathBuf, what: String },
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

struct Written {
    manifest: Manifest,
    encoded_bytes: u64,
}

/// Generates one state straight into shard blobs: indexes are bucketed by shard, then every
/// shard is generated, encoded, compressed and stored in parallel.
fn write_state(
    generator: &TenantGenerator,
    store: &dyn ShardStore,
    snapshot_id: &str,
    kind: SnapshotKind,
    current: bool,
    block_bytes: usize,
) -> Result<Written, BenchError> {
    let count = if current {
        generator.current_count()
    } else {
        generator.backup_count()
    };
    let layout = ShardLayout::for_object_count(count);
    let shard_of: Vec<u32> = (0..count)
        .into_par_iter()
        .map(|i| layout.shard_of(generator.id(i)))
        .collect();
    let mut buckets = vec![Vec::new(); layout.count() as usize];
    for (i, s) in shard_of.iter().enumerate() {
        buckets[*s as usize].push(i as u64);
    }
    drop(shard_of);
    let info = SnapshotInfo {
        tenant: TENANT.into(),
        snapshot_id: snapshot_id.into(),
        kind,
        created_at: 1_795_000_000,
        not_captured: Vec::new(),
    };
    let refs = buckets
        .into_par_iter()
        .enumerate()
        .map(|(s, indexes)| {
            let mut writer = ShardWriter::new(layout, s as u32).with_blocks(
                block_bytes,
                rewind_common::snapshot::shard::DEFAULT_ZSTD_LEVEL,
            );
            for i in indexes {
                let object = if current {
                    generator.current_object(i)
                } else {
                    Some(generator.backup_object(i))
                };
                if let Some(o) = object {
                    writer.add(o);
                }
            }
            let encoded = writer.encoded_len() as u64;
            Ok((store_shard(store, &info, writer)?, encoded))
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let encoded_bytes = refs.iter().map(|(_, e)| e).sum();
    let manifest = seal_manifest(
        store,
        &info,
        layout,
        refs.into_iter().map(|(r, _)| r).collect(),
    )?;
    Ok(Written {
        manifest,
        encoded_bytes,
    })
}

fn stale(store: &LocalShardStore, what: String) -> BenchError {
    BenchError::StaleStore {
        path: store.root().to_owned(),
        what,
    }
}

/// Checks that `store` was generated with `params`, recording them in a new, empty store.
fn check_params(store: &LocalShardStore, params: &StoreParams) -> Result<(), BenchError> {
    let stale = |what: String| stale(store, what);
    match store.get(PARAMS_KEY) {
        Ok(bytes) => {
            let found: StoreParams = serde_json::from_slice(&bytes)
                .map_err(|e| stale(format!("its {PARAMS_KEY} does not parse ({e})")))?;
            let differences = params.differences(&found);
            if differences.is_empty() {
                Ok(())
            } else {
                Err(stale(format!(
                    "it was generated with {}",
                    differences.join(", ")
                )))
            }
        }
        Err(StoreError::NotFound(_)) => {
            if let Some(key) = store.list("")?.first() {
                return Err(stale(format!(
                    "it holds {key} but no {PARAMS_KEY} saying what generated it"
                )));
            }
            let json = serde_json::to_vec_pretty(params)
                .map_err(|e| BenchError::Wrong(format!("parameters do not serialize: {e}")))?;
            Ok(store.put(PARAMS_KEY, &json)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Regenerates a sample of the snapshot's objects and requires the store to hold exactly them
/// (content hashes compared), and as many objects as the generator makes.
fn spot_check(
    generator: &TenantGenerator,
    snapshot: &LoadedSnapshot,
    current: bool,
    stale: impl Fn(String) -> BenchError,
) -> Result<(), BenchError> {
    let id = &snapshot.manifest.snapshot_id;
    let count = if current {
        generator.current_count()
    } else {
        generator.backup_count()
    };
    if snapshot.manifest.object_count != count {
        return Err(stale(format!(
            "snapshot {id} has {} objects, the generator makes {count}",
            snapshot.manifest.object_count
        )));
    }
    let layout = snapshot.manifest.layout();
    for i in (0..count).step_by((count / SPOT_CHECKS).max(1) as usize) {
        let object = if current {
            generator.current_object(i)
        } else {
            Some(generator.backup_object(i))
        };
        let Some(mut object) = object else { continue };
        object.normalize();
        let hash = DirectoryObject::hash_encoding(&object.encode());
        let index = snapshot.shards[layout.shard_of(object.id) as usize].index();
        let held = index
            .binary_search_by_key(&object.id, |e| e.id)
            .ok()
            .map(|at| index[at].hash);
        if held != Some(hash) {
            return Err(stale(format!(
                "object {i} ({}) of snapshot {id} is not what this build generates (a generator \
                 change needs a GENERATOR_VERSION bump)",
                object.id
            )));
        }
    }
    Ok(())
}

/// The snapshots a previous run stored, checked against what the generator makes (so they are
/// the same objects; the encoded size is read back from the blobs), or `None` when a run has not
/// finished storing them.
fn reuse(
    store: &LocalShardStore,
    generator: &TenantGenerator,
) -> Result<Option<(Written, Written)>, BenchError> {
    let stale = |what: String| stale(store, what);
    let written = |id: &str, current: bool| -> Result<Option<Written>, BenchError> {
        let loaded = match snapshot::load_snapshot(store, TENANT, id) {
            Ok(loaded) => loaded,
            Err(SnapshotError::Store(StoreError::NotFound(key)))
                if key == manifest_key(TENANT, id) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(stale(e.to_string())),
        };
        spot_check(generator, &loaded, current, stale)?;
        let encoded_bytes = loaded.shards.iter().map(|s| s.encoded_len() as u64).sum();
        Ok(Some(Written {
            manifest: loaded.manifest,
            encoded_bytes,
        }))
    };
    Ok(written("backup", false)?.zip(written("current", true)?))
}

fn load_both(store: &dyn ShardStore) -> Result<(LoadedSnapshot, LoadedSnapshot), BenchError> {
    Ok((
        snapshot::load_snapshot(store, TENANT, "backup")?,
        snapshot::load_snapshot(store, TENANT, "current")?,
    ))
}

/// The baseline: decode every object of both snapshots (shard by shard, in parallel) and
/// compare them field by field.
fn baseline(b: &LoadedSnapshot, c: &LoadedSnapshot) -> Result<Vec<ReportEntry>, BenchError> {
    if b.manifest.shard_bits != c.manifest.shard_bits {
        let (bo, co) = (b.decode_all()?, c.decode_all()?);
        return Ok(diff_decoded(&bo, &co, &Scope::All)?);
    }
    // Shard by shard in parallel, the far ends of links looked up in every object's lifecycle.
    let lifecycles = |s: &LoadedSnapshot| -> Vec<(ObjectId, bool)> {
        let index = s.shards.iter().flat_map(|shard| shard.index());
        index.map(|e| (e.id, e.is_active())).collect()
    };
    let all = (lifecycles(b), lifecycles(c));
    let parts = b
        .shards
        .par_iter()
        .zip(c.shards.par_iter())
        .map(|(bs, cs)| {
            let part = (bs.decode_all()?, cs.decode_all()?);
            Ok(diff_decoded_part(
                (&part.0, &part.1),
                (&all.0, &all.1),
                &Scope::All,
            )?)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    Ok(parts.into_iter().flatten().collect())
}

fn export(snapshot: &LoadedSnapshot, path: &Path) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    for shard in &snapshot.shards {
        for object in shard.decode_all()? {
            serde_json::to_writer(&mut out, &to_graph_json(&object))
                .map_err(|e| io(std::io::Error::other(e)))?;
            out.write_all(b"\n").map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

/// Runs the benchmark, reporting progress as `tracing` events.
pub fn run(config: &BenchDiffConfig) -> Result<BenchDiffResult, BenchError> {
    let runs = config.runs.max(1);
    let generator = TenantGenerator::new(TenantSpec::new(config.objects, config.seed));
    let tmp;
    let root = match &config.store {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(|source| BenchError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
            tmp.path().to_owned()
        }
    };
    let store = LocalShardStore::open(root)?;
    check_params(&store, &StoreParams::of(config))?;

    let (mut changed, mut soft_deleted) = (0u64, 0u64);
    for i in 0..generator.backup_count() {
        match generator.fate(i) {
            Fate::Changed => changed += 1,
            Fate::SoftDeleted => soft_deleted += 1,
            Fate::Unchanged => {}
        }
    }
    let created = generator.current_count() - generator.backup_count();

    let t = Instant::now();
    let (backup, current) = match reuse(&store, &generator)? {
        Some(both) => {
            tracing::info!("reusing the snapshots already in the store");
            both
        }
        None => {
            tracing::info!(
                objects = generator.backup_count(),
                "generating the objects and their changed state"
            );
            let bb = config.block_bytes;
            let backup = write_state(
                &generator,
                &store,
                "backup",
                SnapshotKind::Backup,
                false,
                bb,
            )?;
            let current = write_state(&generator, &store, "current", SnapshotKind::Live, true, bb)?;
            (backup, current)
        }
    };
    let generate_seconds = t.elapsed().as_secs_f64();
    tracing::info!(seconds = generate_seconds, "both snapshots ready");

    rss::reset_peak();
    let mut cold_runs = Vec::new();
    let mut entries = Vec::new();
    for r in 0..runs {
        drop(std::mem::take(&mut entries));
        let t = Instant::now();
        let (b, c) = load_both(&store)?;
        entries = diff_snapshots(&b, &c, &Scope::All)?;
        cold_runs.push(t.elapsed().as_secs_f64());
        tracing::info!(run = r + 1, runs, seconds = cold_runs[r], "cold run");
    }
    let (b, c) = load_both(&store)?;
    let mut warm_runs = Vec::new();
    for r in 0..runs {
        let t = Instant::now();
        let again = diff_snapshots(&b, &c, &Scope::All)?;
        warm_runs.push(t.elapsed().as_secs_f64());
        tracing::info!(run = r + 1, runs, seconds = warm_runs[r], "warm run");
        if again != entries {
            return Err(BenchError::Wrong(
                "two diffs of the same snapshots differ".into(),
            ));
        }
    }
    let peak_rss_bytes = rss::peak_rss_bytes().unwrap_or(0);

    let expected = changed + soft_deleted + created;
    if entries.len() as u64 != expected {
        return Err(BenchError::Wrong(format!(
            "{} entries, the generator changed {expected} objects",
            entries.len()
        )));
    }

    rss::reset_peak();
    let mut baseline_runs = Vec::new();
    for r in 0..runs {
        let t = Instant::now();
        let plain = baseline(&b, &c)?;
        baseline_runs.push(t.elapsed().as_secs_f64());
        tracing::info!(
            run = r + 1,
            runs,
            seconds = baseline_runs[r],
            "baseline run"
        );
        if plain != entries {
            return Err(BenchError::Wrong(
                "the baseline's report differs from the engine's".into(),
            ));
        }
    }
    let baseline_peak_rss_bytes = rss::peak_rss_bytes().unwrap_or(0);

    if let Some(dir) = &config.export_jsonl {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            path: dir.clone(),
            source,
        })?;
        export(&b, &dir.join("backup.jsonl"))?;
        export(&c, &dir.join("current.jsonl"))?;
        tracing::info!(dir = %dir.display(), "exported backup.jsonl and current.jsonl");
    }

    let summary = ReportSummary::of(&entries);
    tracing::info!(
        updates = summary.updates,
        restores = summary.restores,
        soft_deletes = summary.soft_deletes,
        not_recoverable = summary.not_recoverable,
        "report"
    );
    let stored = (backup.manifest.total_bytes() + current.manifest.total_bytes()) as f64;
    let encoded = (backup.encoded_bytes + current.encoded_bytes) as f64;
    let objects_both = (backup.manifest.object_count + current.manifest.object_count) as f64;
    let (cold, warm, base) = (
        median(&cold_runs),
        median(&warm_runs),
        median(&baseline_runs),
    );
    Ok(BenchDiffResult {
        objects: generator.backup_count(),
        changed,
        created,
        soft_deleted,
        report_entries: entries.len() as u64,
        shards: backup.manifest.layout().count(),
        cold_seconds: cold,
        warm_seconds: warm,
        baseline_seconds: base,
        speedup: if warm > 0.0 { base / warm } else { 0.0 },
        cold_runs,
        warm_runs,
        baseline_runs,
        peak_rss_bytes,
        baseline_peak_rss_bytes,
        bytes_per_object: stored / objects_both,
        encoded_bytes_per_object: encoded / objects_both,
        compression_ratio: encoded / stored,
        generate_seconds,
        block_bytes: config.block_bytes,
        threads: rayon::current_num_threads(),
    })
}
