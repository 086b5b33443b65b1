//! What a worker does with one task, as blocking code (it runs on a blocking thread, and the
//! diff on the rayon pool): a capture task reads its collections through the Graph connector
//! and stores its part of every shard; a diff task loads the two snapshots' shards (through
//! the cache) and diffs its range. Each stores its output in the blob store and returns the
//! result message's body. A task is a pure request, so running it again is harmless: a diff
//! writes the same bytes under the same key, a capture writes under keys of its own attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rewind_common::connector::{
    ConnectorError, ErrorClass, GateClosed, GraphConnector, GraphSettings, Secret, StepResult,
    WriteClass, WriteGate,
};
use rewind_common::diff::{diff_sets, DiffOptions, ShardSet, Uncompared};
use rewind_common::plan::{unique_values, PlannedStep};
use rewind_common::report::{Change, RecoveryAction};
use rewind_common::snapshot::standing::Standings;
use rewind_common::snapshot::store::StoreError;
use rewind_common::snapshot::{
    blake3_hex, store_part, LoadedShard, Manifest, ShardLayout, ShardStore, SnapshotInfo,
};
use rewind_common::wire::{
    self, part_shards_key, range_entries_key, range_values_key, ApplyResult, ApplyTask, BlobRef,
    CaptureMode, CaptureResult, CaptureTask, DiffResult, DiffTask, DirectoryRef, RangeValues,
    StepReport, WireError,
};
use rewind_common::SnapshotError;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cache::ShardCache;

/// Why a task failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The task itself is wrong (a bad range, a token URL that is none): never retried.
    #[error("{0}")]
    Invalid(String),
}

impl TaskError {
    /// Transient failures are given back to the queue (redelivered with backoff, bounded);
    /// permanent ones end the task on the dead-letter lane with this error as the reason.
    pub fn is_transient(&self) -> bool {
        match self {
            TaskError::Connector(e) => e.class() == ErrorClass::Transient,
            TaskError::Snapshot(SnapshotError::Store(StoreError::Io { .. })) => true,
            TaskError::Snapshot(_) | TaskError::Wire(_) | TaskError::Invalid(_) => false,
        }
    }
}

/// Splits a token URL (`{authority}/{tenant}/oauth2/v2.0/token`) into the connector's
/// authority and tenant.
pub fn split_token_url(url: &str) -> Result<(String, String), TaskError> {
    let bad = || {
        TaskError::Invalid(format!(
            "token URL {url:?} is not of the form {{authority}}/{{tenant}}/oauth2/v2.0/token"
        ))
    };
    let rest = url.strip_suffix("/oauth2/v2.0/token").ok_or_else(bad)?;
    let (authority, tenant) = rest.rsplit_once('/').ok_or_else(bad)?;
    if tenant.is_empty() || !(authority.starts_with("http://") || authority.starts_with("https://"))
    {
        return Err(bad());
    }
    Ok((authority.to_owned(), tenant.to_owned()))
}

/// A snapshot's blobs for one diff task: shards, standing lists, and which shards it holds
/// (`None`: all).
type Loaded = (
    Vec<Arc<LoadedShard>>,
    Vec<Arc<Standings>>,
    Option<(u32, u32)>,
);

/// How a worker's connector behaves beyond what a task says (retries, timeouts).
#[derive(Clone, Debug)]
pub struct ConnectorTuning {
    pub max_attempts: u32,
    pub request_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ConnectorTuning {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            request_timeout: Duration::from_secs(120),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A connector to the task's directory, tuned as the worker is.
fn connector_for(
    directory: &DirectoryRef,
    secret: Secret,
    tuning: &ConnectorTuning,
) -> Result<GraphConnector, TaskError> {
    let (authority, directory_tenant) = split_token_url(&directory.token_url)?;
    let mut settings = GraphSettings::new(
        authority,
        directory.graph_base_url.clone(),
        directory_tenant,
        directory.client_id.clone(),
        secret,
    );
    settings.per_user_mfa_state = directory.per_user_mfa_state;
    settings.max_attempts = tuning.max_attempts;
    settings.request_timeout = tuning.request_timeout;
    settings.min_backoff = tuning.min_backoff;
    settings.max_backoff = tuning.max_backoff;
    Ok(GraphConnector::new(settings)?)
}

/// Runs an apply task: the steps in order through the connector, every write passing `gate`
/// (the tenant's shared budget and the job's stop signal); one report per step. Running it
/// again is harmless: the connector reads "already in that state" answers as success.
pub fn run_apply(
    task: &ApplyTask,
    secret: Secret,
    tuning: &ConnectorTuning,
    gate: &dyn WriteGate,
) -> Result<ApplyResult, TaskError> {
    let connector = connector_for(&task.directory, secret, tuning)?;
    let steps: Vec<PlannedStep> = task.steps.iter().map(|s| s.planned.clone()).collect();
    let gate = FailpointGate {
        inner: gate,
        admitted: AtomicU32::new(0),
    };
    // The gate's write lease stays until the coordinator has recorded these outcomes.
    let outcomes = connector.apply_steps_gated(&steps, &gate);
    crate::failpoint::hit("apply");
    let steps = task
        .steps
        .iter()
        .zip(outcomes)
        .map(|(s, o)| (s.seq, step_report(o.result)))
        .collect();
    Ok(ApplyResult { steps })
}

fn step_report(r: StepResult) -> StepReport {
    match r {
        StepResult::Applied => StepReport::Applied,
        StepResult::AlreadyInState => StepReport::AlreadyInState,
        StepResult::Failed {
            permanent,
            status,
            code,
            message,
        } => StepReport::Failed {
            permanent,
            status,
            code,
            message,
        },
        StepResult::NotSent { reason } => StepReport::NotSent { reason },
    }
}

/// The task's gate, with the failpoint `apply-batch` after its first admitted batch (so that
/// a fault test can kill a worker in the middle of a task's batches).
struct FailpointGate<'a> {
    inner: &'a dyn WriteGate,
    admitted: AtomicU32,
}

impl WriteGate for FailpointGate<'_> {
    fn max_batch(&self, class: WriteClass) -> usize {
        self.inner.max_batch(class)
    }

    fn check(&self) -> Result<(), GateClosed> {
        self.inner.check()
    }

    fn admit(&self, class: WriteClass, writes: u32) -> Result<(), GateClosed> {
        if self.admitted.fetch_add(1, Ordering::Relaxed) == 1 {
            crate::failpoint::hit("apply-batch");
        }
        self.inner.admit(class, writes)
    }

    fn feedback(
        &self,
        class: WriteClass,
        sent: u32,
        throttled: u32,
        retry_after: Option<Duration>,
    ) {
        self.inner.feedback(class, sent, throttled, retry_after);
    }
}

/// Runs a capture task: reads its collections and stores them as part `task.part` of every
/// shard, under keys tagged with `attempt_tag`, then the part's shard list.
pub fn run_capture(
    store: &dyn ShardStore,
    tenant: &str,
    task: &CaptureTask,
    secret: Secret,
    tuning: &ConnectorTuning,
    attempt_tag: &str,
) -> Result<CaptureResult, TaskError> {
    match task.mode {
        CaptureMode::Full => {}
    }
    let connector = connector_for(&task.directory, secret, tuning)?;
    let layout = ShardLayout::new(task.snapshot.shard_bits);
    let (writers, stats) = connector.capture_collections(layout, &task.collections)?;
    crate::failpoint::hit("capture");
    let mut not_captured = Vec::new();
    if !task.directory.per_user_mfa_state
        && task.collections.contains(&rewind_common::ObjectType::User)
    {
        not_captured.push(format!(
            "user.{}",
            rewind_common::properties::PER_USER_MFA_STATE
        ));
    }
    let info = SnapshotInfo {
        tenant: tenant.to_owned(),
        snapshot_id: task.snapshot.id.clone(),
        kind: task.snapshot.kind,
        created_at: task.snapshot.created_at,
        not_captured: not_captured.clone(),
    };
    let (shards, standing) =
        store_part(store, &info, layout, writers, task.part, Some(attempt_tag))?;
    let list = wire::encode_blob(&shards)?;
    let shards_key = part_shards_key(tenant, &task.snapshot.id, task.part);
    let shards_key = format!("{shards_key}.{attempt_tag}");
    store.put(&shards_key, &list).map_err(SnapshotError::from)?;
    Ok(CaptureResult {
        part: task.part,
        shards_key,
        shards_digest: blake3_hex(&list),
        objects: stats.total_objects(),
        by_type: stats
            .objects
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect(),
        not_captured,
        standing,
        requests: stats.requests,
        bytes: stats.bytes,
    })
}

/// The shard set a diff task diffs: all of a snapshot's shards, or those it holds with the
/// snapshot's standing lists.
fn shard_set<'a>(
    manifest: &Manifest,
    shards: &'a [Arc<LoadedShard>],
    standing: &'a [Arc<Standings>],
    held: Option<(u32, u32)>,
) -> Result<ShardSet<'a>, SnapshotError> {
    let parts = shards.iter().map(|s| &**s);
    match held {
        None => ShardSet::new(manifest.layout(), parts),
        Some(held) => ShardSet::partial(
            manifest.layout(),
            held,
            parts,
            standing.iter().map(|s| &**s).collect(),
        ),
    }
}

/// Runs a diff task: the range's entries, stored under the job's range key.
pub fn run_diff(
    store: &dyn ShardStore,
    cache: &ShardCache,
    tenant: &str,
    job: &str,
    number: u32,
    task: &DiffTask,
) -> Result<DiffResult, TaskError> {
    let backup_manifest = cache.manifest(store, tenant, &task.backup)?;
    let live_manifest = cache.manifest(store, tenant, &task.live)?;
    let finest = backup_manifest.shard_bits.min(live_manifest.shard_bits);
    if task.range_bits > finest || task.range >= 1u32 << task.range_bits {
        return Err(TaskError::Invalid(format!(
            "diff range {} of 2^{} does not fit snapshots of 2^{} and 2^{} shards",
            task.range, task.range_bits, backup_manifest.shard_bits, live_manifest.shard_bits
        )));
    }
    let range = ShardLayout::new(task.range_bits).range(task.range);
    // With standing lists, the range's shards and the lists suffice; without (snapshots
    // written before them), every shard is needed for the far ends of links.
    let load = |manifest: &Manifest| -> Result<Loaded, TaskError> {
        let layout = manifest.layout();
        if manifest.standing.is_empty() {
            let (_, shards) = cache.snapshot(store, tenant, &manifest.snapshot_id)?;
            return Ok((shards, Vec::new(), None));
        }
        let held = (layout.shard_of(range.0), layout.shard_of(range.1));
        let shards = cache.shards_in(store, manifest, held)?;
        let standing = manifest
            .standing
            .iter()
            .map(|s| cache.standing(store, manifest, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((shards, standing, Some(held)))
    };
    let (backup, backup_standing, backup_held) = load(&backup_manifest)?;
    let (live, live_standing, live_held) = load(&live_manifest)?;
    let backup_set = shard_set(&backup_manifest, &backup, &backup_standing, backup_held)?;
    let live_set = shard_set(&live_manifest, &live, &live_standing, live_held)?;
    let uncompared = Uncompared::of(&[&backup_manifest, &live_manifest])?;
    let started = std::time::Instant::now();
    let entries = diff_sets(
        &backup_set,
        &live_set,
        &task.scope,
        DiffOptions::default(),
        &uncompared,
        Some(range),
    )?;
    metrics::histogram!(rewind_common::metrics::SHARD_DIFF_SECONDS)
        .record(started.elapsed().as_secs_f64());
    crate::failpoint::hit("diff");
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    for e in &entries {
        *by_action.entry(e.action.as_str().to_owned()).or_default() += 1;
    }
    let blob = wire::encode_blob(&entries)?;
    // Keyed by the task's number: a recovery diffs each range once per round.
    let entries_key = range_entries_key(tenant, job, number);
    store
        .put(&entries_key, &blob)
        .map_err(SnapshotError::from)?;
    let values = if task.current_values {
        // The live objects a recovery restores or soft-deletes as newcomers: the planner
        // needs their unique values to find a newcomer holding one a restore needs.
        let mut values: RangeValues = Vec::new();
        for e in entries.iter().filter(|e| {
            e.action == RecoveryAction::Restore
                || (e.change == Change::Created && e.action == RecoveryAction::SoftDelete)
        }) {
            if let Some(object) = live_set.object(e.id)? {
                let v = unique_values(&object);
                if !v.is_empty() {
                    values.push((e.id, v));
                }
            }
        }
        let blob = wire::encode_blob(&values)?;
        let key = range_values_key(tenant, job, number);
        store.put(&key, &blob).map_err(SnapshotError::from)?;
        Some(BlobRef {
            key,
            digest: blake3_hex(&blob),
        })
    } else {
        None
    };
    Ok(DiffResult {
        range: task.range,
        entries_key,
        entries_digest: blake3_hex(&blob),
        entries: entries.len() as u64,
        by_action,
        links: entries.iter().map(|e| e.changed_links.len() as u64).sum(),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_split_into_authority_and_tenant() {
        let (a, t) = split_token_url("http://127.0.0.1:9/contoso/oauth2/v2.0/token").unwrap();
        assert_eq!((a.as_str(), t.as_str()), ("http://127.0.0.1:9", "contoso"));
        for bad in [
            "http://127.0.0.1:9/contoso/token",
            "contoso/oauth2/v2.0/token",
            "http://h//oauth2/v2.0/token",
        ] {
            let err = split_token_url(bad).unwrap_err();
            assert!(err.to_string().contains("token URL"), "{err}");
            assert!(!err.is_transient());
        }
    }
}
