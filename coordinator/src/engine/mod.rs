//! The job engine: turns jobs into tasks on the work queue, takes the workers' results and
//! dead letters, and moves each job through its statuses with [`State::transition`] (written
//! and flushed before anything is acted on).
//!
//! A job is driven by [`Engine::advance`], which looks at the job's record and its recorded
//! task results and does the next step. It is idempotent, so it runs after every result, and
//! for every open job after a restart (with `republish`, so that tasks lost with the queue are
//! sent again under their deterministic message ids):
//!
//! - `pending` → a snapshot id is chosen and recorded, capture tasks published (one per
//!   collection group, each writing its part of every shard);
//! - `capturing` → once every part has reported: `sealing`, the manifest is sealed from the
//!   parts' shard lists (same bytes however often), the snapshot enters the catalog; a backup
//!   is then `successful` (and retention runs), a report goes on to `calculating`/`diffing`;
//! - `diffing` → one task per range of shards; each result's entries are stored in the state
//!   before the result counts; once every range has reported exactly once, the counts are
//!   aggregated and the report is `successful`.
//!
//! A task that fails for good (its dead letter) fails its job with the reason, and the job's
//! queued tasks are purged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rewind_common::metrics as m;
use rewind_common::model::ObjectType;
use rewind_common::report::Scope;
use rewind_common::snapshot::{
    blake3_hex, manifest_key, seal_manifest_with, ShardLayout, ShardRef, SnapshotInfo, SnapshotKind,
};
use rewind_common::wire::{
    self, CaptureMode, CaptureResult, CaptureTask, DiffResult, DiffTask, DirectoryRef, PartShards,
    RangeEntries, SnapshotTarget, Task, TaskId, TaskKind, TaskOutcome, TaskResult, TaskSpec,
    WireError, WIRE_VERSION,
};
use rewind_common::SnapshotError;
use rewind_worker::blobs::{BlobStore, BlockingBlobs};
use rewind_worker::budget::{MemoryBudgets, WriteBudgets};
use rewind_worker::queue::{DeadLetter, Delivery, Lane, QueueError, WorkQueue};
use tokio::sync::watch;

mod recovery;
pub use recovery::{apply_window, MAX_APPLY_WINDOW, TASK_STEPS};

use crate::state::{
    Actor, Job, JobKind, JobStatus, Phase, SnapshotRecord, State, StateError, TenantRecord,
};

/// How the engine cuts jobs into tasks.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The capture tasks of a snapshot: each group of collections is one task, writing part
    /// `i` (its position here) of every shard. Every type must be in exactly one group.
    pub capture_groups: Vec<Vec<ObjectType>>,
    /// A report's diff is cut into 2^`diff_range_bits` ranges of shards (fewer when the
    /// tenant has fewer shards).
    pub diff_range_bits: u8,
    /// Whether captures read the per-user MFA states.
    pub per_user_mfa_state: bool,
    /// The most steps of a recovery's apply task (1 to [`recovery::TASK_STEPS`]).
    pub apply_task_steps: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            // Users are the bulk of a tenant and groups carry most links: one task each, so
            // that two workers capture them side by side; everything else in a third.
            capture_groups: vec![
                vec![ObjectType::User],
                vec![ObjectType::Group],
                ObjectType::ALL
                    .into_iter()
                    .filter(|t| !matches!(t, ObjectType::User | ObjectType::Group))
                    .collect(),
            ],
            diff_range_bits: 4,
            per_user_mfa_state: true,
            apply_task_steps: recovery::TASK_STEPS,
        }
    }
}

impl EngineSettings {
    /// Checks that every type is captured by exactly one group.
    pub fn validate(&self) -> Result<(), EngineError> {
        for t in ObjectType::ALL {
            let n = self
                .capture_groups
                .iter()
                .filter(|g| g.contains(&t))
                .count();
            if n != 1 {
                return Err(EngineError::Invalid(format!(
                    "capture groups must hold every object type exactly once; {t} is in {n}"
                )));
            }
        }
        if self.capture_groups.len() > usize::from(rewind_common::snapshot::MAX_PARTS) {
            return Err(EngineError::Invalid(format!(
                "at most {} capture groups",
                rewind_common::snapshot::MAX_PARTS
            )));
        }
        Ok(())
    }
}

/// What can stop the engine from moving a job on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0}")]
    Invalid(String),
    #[error("blocking work panicked: {0}")]
    Join(String),
    #[error(transparent)]
    Budget(#[from] rewind_worker::budget::BudgetError),
}

/// How long after a job fails or is canceled the blobs of the snapshots it never sealed are
/// kept: a capture task in flight at that moment may still write (a capture of a million
/// objects takes well under a minute here).
pub const UNSEALED_SWEEP_DELAY: Duration = Duration::from_secs(15 * 60);

/// Attempts of one step of a job that fails transiently, before the job fails (about half a
/// minute in all).
const ADVANCE_ATTEMPTS: u32 = 6;

impl EngineError {
    /// Whether trying the step again may help: the queue, the store or the state's disk away
    /// for a moment. Invalid data, a refused transition or a damaged blob never heal.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Queue(e) => matches!(e, QueueError::JetStream { .. }),
            EngineError::Snapshot(SnapshotError::Store(e)) => !matches!(
                e,
                rewind_common::snapshot::store::StoreError::NotFound(_)
                    | rewind_common::snapshot::store::StoreError::AlreadyExists(_)
                    | rewind_common::snapshot::store::StoreError::InvalidKey(_)
            ),
            EngineError::State(e) => e.class() == crate::state::ErrorClass::Storage,
            EngineError::Budget(e) => matches!(
                e,
                rewind_worker::budget::BudgetError::Backend { .. }
                    | rewind_worker::budget::BudgetError::Contention { .. }
            ),
            _ => false,
        }
    }
}

/// The engine of one coordinator.
#[derive(Clone)]
pub struct Engine {
    state: State,
    queue: Arc<dyn WorkQueue>,
    blobs: Arc<dyn BlobStore>,
    settings: Arc<EngineSettings>,
    /// The tenants' write budgets and the jobs' stop signals (the workers' gates read them).
    budgets: Arc<dyn WriteBudgets>,
    /// When each open job entered its current phase (for the phase-seconds histogram; a job
    /// resumed after a restart starts its phase's clock again).
    phase_clock: Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
    /// Each running recovery's current wave cut into tasks: (round, wave, the tasks' ranges of
    /// the wave's actions), so that the window's next task is published without reading and
    /// cutting the whole wave again after every result. Recomputed after a restart.
    wave_cuts: recovery::WaveCuts,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn status_label(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Initialized | JobStatus::AwaitingApproval => m::job_status::QUEUED,
        JobStatus::LoadingData => m::job_status::LOADING_DATA,
        JobStatus::Calculating | JobStatus::Running => m::job_status::IN_PROGRESS,
        JobStatus::Successful => m::job_status::COMPLETED,
        JobStatus::Failed => m::job_status::FAILED,
        JobStatus::Abandoned => m::job_status::CANCELED,
    }
}

fn count_status(job: &Job) {
    metrics::counter!(m::JOBS_TOTAL, m::label::KIND => job.kind.name(), m::label::STATUS => status_label(job.status))
        .increment(1);
}

impl Engine {
    pub fn new(
        state: State,
        queue: Arc<dyn WorkQueue>,
        blobs: Arc<dyn BlobStore>,
        settings: EngineSettings,
    ) -> Result<Self, EngineError> {
        settings.validate()?;
        Ok(Self {
            state,
            queue,
            blobs,
            settings: Arc::new(settings),
            budgets: Arc::new(MemoryBudgets::new()),
            phase_clock: Arc::default(),
            wave_cuts: recovery::WaveCuts::default(),
        })
    }

    /// The same engine, stopping canceled recoveries through `budgets` (those its workers'
    /// gates read).
    pub fn with_budgets(mut self, budgets: Arc<dyn WriteBudgets>) -> Self {
        self.budgets = budgets;
        self
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Starts the clock of a job's phase.
    fn phase_started(&self, job: &str) {
        if let Ok(mut clock) = self.phase_clock.lock() {
            clock.insert(job.to_owned(), Instant::now());
        }
    }

    /// Records the seconds of the phase a job leaves (`phase`: a `metrics::phase` value).
    fn phase_ended(&self, job: &Job, phase: &'static str) {
        let started = self
            .phase_clock
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&job.id));
        if let Some(started) = started {
            metrics::histogram!(m::JOB_PHASE_SECONDS, m::label::KIND => job.kind.name(), m::label::PHASE => phase)
                .record(started.elapsed().as_secs_f64());
        }
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Opens a backup of `tenant` and dispatches it. A tenant with an open job gets the
    /// state's conflict error naming that job.
    pub async fn start_backup(&self, tenant: &str) -> Result<Job, EngineError> {
        self.start_backup_by(&Actor::Coordinator, tenant).await
    }

    /// [`Engine::start_backup`] on behalf of `actor` (an API token, the scheduler), named in
    /// the job's audit record.
    pub async fn start_backup_by(&self, actor: &Actor, tenant: &str) -> Result<Job, EngineError> {
        self.open_job_by(actor, tenant, JobKind::Backup).await
    }

    /// Creates a job on behalf of `actor` and takes its first step.
    async fn open_job_by(
        &self,
        actor: &Actor,
        tenant: &str,
        kind: JobKind,
    ) -> Result<Job, EngineError> {
        let job = self.state.create_job_by(actor, tenant, kind).await?;
        count_status(&job);
        self.advance_logged(&job.id, false).await;
        Ok(self.state.get_job(&job.id)?)
    }

    /// Opens a difference report of `tenant` against its backup `backup`, within `scope`.
    pub async fn start_report(
        &self,
        tenant: &str,
        backup: &str,
        scope: Scope,
    ) -> Result<Job, EngineError> {
        self.start_report_by(&Actor::Coordinator, tenant, backup, scope)
            .await
    }

    /// [`Engine::start_report`] on behalf of `actor`, named in the job's audit record.
    pub async fn start_report_by(
        &self,
        actor: &Actor,
        tenant: &str,
        backup: &str,
        scope: Scope,
    ) -> Result<Job, EngineError> {
        let record = self.state.get_snapshot(tenant, backup)?;
        // A report against a recovery's pre-recovery snapshot shows what the recovery changed.
        if !matches!(
            record.kind,
            SnapshotKind::Backup | SnapshotKind::PreRecovery
        ) {
            return Err(EngineError::Invalid(format!(
                "snapshot {backup} of tenant {tenant} is a live snapshot, not a backup or a \
                 pre-recovery snapshot"
            )));
        }
        let kind = JobKind::Report {
            backup: backup.to_owned(),
            scope,
        };
        self.open_job_by(actor, tenant, kind).await
    }

    /// Cancels an open job: it becomes `abandoned` (results that arrive later are dropped) and
    /// its queued tasks are purged.
    pub async fn cancel(&self, job_id: &str) -> Result<Job, EngineError> {
        self.cancel_by(&Actor::Coordinator, job_id).await
    }

    /// [`Engine::cancel`] on behalf of `actor`, named in the audit record of the status change.
    pub async fn cancel_by(&self, actor: &Actor, job_id: &str) -> Result<Job, EngineError> {
        let open = self.state.get_job(job_id)?;
        if matches!(open.kind, JobKind::Recovery { .. })
            && open.status == JobStatus::Running
            && matches!(open.phase, Phase::Applying | Phase::Stopping)
        {
            return self.stop_recovery(actor, &open).await;
        }
        let job = self
            .state
            .transition_by(actor, job_id, JobStatus::Abandoned, |j| {
                j.error = Some("canceled".into());
            })
            .await?;
        count_status(&job);
        self.purge_tasks(&job).await;
        self.sweep_unsealed_of(&job).await;
        Ok(job)
    }

    /// Resumes every open job after a start: each is advanced with its missing tasks
    /// published again, or failed with the reason it cannot go on.
    pub async fn resume_open_jobs(&self) -> Result<usize, EngineError> {
        let open = self.state.open_jobs()?;
        for job in &open {
            tracing::info!(tenant = %job.tenant, job = %job.id, status = %job.status, "resuming job after a restart");
            self.state
                .transition(&job.id, job.status, |j| j.resumes += 1)
                .await?;
            self.advance_logged(&job.id, true).await;
        }
        Ok(open.len())
    }

    /// [`Engine::advance`], failing the job with the error if it cannot go on.
    /// A transient failure (the queue or the store away for a moment, as during a NATS
    /// restart) is tried again a few times first: nothing else would advance the job, since
    /// its last result is already recorded.
    async fn advance_logged(&self, job_id: &str, republish: bool) {
        let mut delay = Duration::from_millis(500);
        let mut republish = republish;
        for attempt in 1..=ADVANCE_ATTEMPTS {
            match self.advance(job_id, republish).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && attempt < ADVANCE_ATTEMPTS => {
                    // What the failed attempt stored may be ahead of what it published (a
                    // recovery's window): the next attempt publishes everything admitted.
                    republish = true;
                    tracing::warn!(job = %job_id, error = %e, attempt, "job cannot go on yet; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
                Err(e) => {
                    tracing::warn!(job = %job_id, error = %e, "job cannot go on");
                    self.fail(job_id, &e.to_string()).await;
                    return;
                }
            }
        }
    }

    /// Fails an open job with `reason` (a job already finished stays as it is) and purges its
    /// queued tasks.
    pub async fn fail(&self, job_id: &str, reason: &str) {
        match self
            .state
            .transition(job_id, JobStatus::Failed, |j| {
                j.error = Some(reason.to_owned());
            })
            .await
        {
            Ok(job) => {
                count_status(&job);
                tracing::warn!(tenant = %job.tenant, job = %job.id, reason, "job failed");
                self.forget_cut(&job.id);
                self.purge_tasks(&job).await;
                self.sweep_unsealed_of(&job).await;
            }
            Err(StateError::Transition { .. }) => {}
            Err(e) => {
                tracing::error!(job = %job_id, error = %e, "cannot record the failure of a job")
            }
        }
    }

    async fn purge_tasks(&self, job: &Job) {
        let lanes: &[TaskKind] = match job.kind {
            JobKind::Recovery { .. } => &[TaskKind::Capture, TaskKind::Apply],
            _ => &[TaskKind::Capture],
        };
        for kind in lanes {
            let filter = wire::job_task_filter(&job.tenant, &job.id, *kind);
            if let Err(e) = self.queue.purge(Lane::of_task(*kind), &filter).await {
                tracing::warn!(job = %job.id, error = %e, "cannot purge the job's queued tasks");
            }
        }
    }

    /// Does the next step of a job (see the module's description).
    pub async fn advance(&self, job_id: &str, republish: bool) -> Result<(), EngineError> {
        let job = self.state.get_job(job_id)?;
        if job.status.is_terminal() {
            return Ok(());
        }
        let tenant = self.state.get_tenant(&job.tenant)?;
        match job.phase {
            Phase::Pending => {
                let to = match job.kind {
                    JobKind::Backup => JobStatus::Running,
                    JobKind::Report { .. } | JobKind::Recovery { .. } => JobStatus::LoadingData,
                };
                let groups = self.settings.capture_groups.len() as u64;
                let snapshot = uuid::Uuid::new_v4().to_string();
                let job = self
                    .state
                    .transition(job_id, to, |j| {
                        j.phase = Phase::Capturing;
                        j.snapshot = Some(snapshot.clone());
                        j.tasks.total = groups;
                        if let Some(r) = &mut j.recovery {
                            r.round = 1;
                            r.snapshots = vec![snapshot];
                        }
                    })
                    .await?;
                count_status(&job);
                self.phase_started(&job.id);
                self.publish_captures(&job, &tenant, &BTreeMap::new()).await
            }
            Phase::Capturing | Phase::Sealing => {
                let done = self.results_of(&job, TaskKind::Capture)?;
                if done.len() < self.settings.capture_groups.len() {
                    if republish {
                        self.phase_started(&job.id);
                        self.publish_captures(&job, &tenant, &done).await?;
                    }
                    return Ok(());
                }
                self.phase_ended(&job, m::phase::CAPTURE);
                self.seal(&job, &tenant, done).await
            }
            Phase::Loading | Phase::Diffing => {
                let done = self.results_of(&job, TaskKind::Diff)?;
                let ranges = self.ranges(&tenant);
                if (done.len() as u64) < (1u64 << ranges) {
                    if republish {
                        self.phase_started(&job.id);
                        self.publish_diffs(&job, &tenant, &done).await?;
                    }
                    return Ok(());
                }
                self.phase_ended(&job, m::phase::DIFF);
                match job.kind {
                    JobKind::Recovery { .. } => self.plan_round(&job, &tenant, done).await,
                    _ => self.finish_report(&job, done).await,
                }
            }
            Phase::Planning => {
                let done = self.results_of(&job, TaskKind::Diff)?;
                self.plan_round(&job, &tenant, done).await
            }
            Phase::Applying => self.advance_applying(&job, &tenant, republish).await,
            Phase::Stopping => self.advance_stopping(&job).await,
            Phase::Done => Ok(()),
        }
    }

    /// The decoded results of one kind of a job's tasks, by task number.
    fn results_of(
        &self,
        job: &Job,
        kind: TaskKind,
    ) -> Result<BTreeMap<u32, TaskOutcome>, EngineError> {
        let base = round_base(job);
        let kind_prefix = format!("{}.", kind.as_str());
        let mut out = BTreeMap::new();
        for (key, bytes) in self.state.task_results(&job.id)? {
            // A recovery holds hundreds of apply results: only this kind's are decoded.
            if !key.starts_with(&kind_prefix) {
                continue;
            }
            let r: TaskResult = wire::decode(&bytes)?;
            if r.id.kind == kind && r.id.number & !0xffff == base {
                out.insert(r.id.number & 0xffff, r.outcome);
            }
        }
        Ok(out)
    }

    fn ranges(&self, tenant: &TenantRecord) -> u8 {
        self.settings.diff_range_bits.min(tenant.shard_bits)
    }

    fn task_id(job: &Job, kind: TaskKind, number: u32) -> TaskId {
        TaskId {
            tenant: job.tenant.clone(),
            job: job.id.clone(),
            kind,
            number,
        }
    }

    async fn publish(&self, id: TaskId, spec: TaskSpec) -> Result<(), EngineError> {
        let task = Task {
            version: WIRE_VERSION,
            id,
            spec,
        };
        let bytes = wire::encode(&task)?;
        self.queue
            .publish(
                Lane::of_task(task.id.kind),
                &task.id.task_subject(),
                &task.id.task_msg_id(),
                Bytes::from(bytes),
            )
            .await?;
        Ok(())
    }

    fn snapshot_kind(job: &Job) -> SnapshotKind {
        match job.kind {
            JobKind::Backup => SnapshotKind::Backup,
            JobKind::Report { .. } => SnapshotKind::Live,
            // The first round's capture is the state just before anything is applied: the
            // pre-recovery snapshot an undo recovers from.
            JobKind::Recovery { .. } => match job.recovery.as_ref().map_or(1, |r| r.round) {
                1 => SnapshotKind::PreRecovery,
                _ => SnapshotKind::Live,
            },
        }
    }

    fn snapshot_id(job: &Job) -> Result<&str, EngineError> {
        job.snapshot
            .as_deref()
            .ok_or_else(|| EngineError::Invalid(format!("job {} has no snapshot id", job.id)))
    }

    /// Publishes the capture tasks that have no result yet.
    async fn publish_captures(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        done: &BTreeMap<u32, TaskOutcome>,
    ) -> Result<(), EngineError> {
        let target = SnapshotTarget {
            id: Self::snapshot_id(job)?.to_owned(),
            kind: Self::snapshot_kind(job),
            created_at: job.created_at,
            shard_bits: tenant.shard_bits,
        };
        let directory = DirectoryRef {
            graph_base_url: tenant.graph_base_url.clone(),
            token_url: tenant.token_url.clone(),
            client_id: tenant.client_id.clone(),
            secret: tenant.secret.clone(),
            per_user_mfa_state: self.settings.per_user_mfa_state,
        };
        for (part, group) in self.settings.capture_groups.iter().enumerate() {
            let number = part as u32;
            if done.contains_key(&number) {
                continue;
            }
            let spec = TaskSpec::Capture(CaptureTask {
                snapshot: target.clone(),
                part: part as u16,
                collections: group.clone(),
                mode: CaptureMode::Full,
                directory: directory.clone(),
            });
            self.publish(
                Self::task_id(job, TaskKind::Capture, round_base(job) | number),
                spec,
            )
            .await?;
        }
        Ok(())
    }

    /// Publishes the diff tasks that have no result yet.
    async fn publish_diffs(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        done: &BTreeMap<u32, TaskOutcome>,
    ) -> Result<(), EngineError> {
        let (backup, scope, current_values) = match &job.kind {
            JobKind::Report { backup, scope } => (backup, scope, false),
            JobKind::Recovery { backup, scope, .. } => (backup, scope, true),
            JobKind::Backup => {
                return Err(EngineError::Invalid(format!(
                    "job {} is a backup: it has no diff",
                    job.id
                )))
            }
        };
        let range_bits = self.ranges(tenant);
        for range in 0..(1u32 << range_bits) {
            if done.contains_key(&range) {
                continue;
            }
            let spec = TaskSpec::Diff(DiffTask {
                backup: backup.clone(),
                live: Self::snapshot_id(job)?.to_owned(),
                range_bits,
                range,
                scope: scope.clone(),
                current_values,
            });
            self.publish(
                Self::task_id(job, TaskKind::Diff, round_base(job) | range),
                spec,
            )
            .await?;
        }
        Ok(())
    }

    /// Seals the job's snapshot from its parts, adds it to the catalog, and moves the job on.
    async fn seal(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        done: BTreeMap<u32, TaskOutcome>,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        if job.phase != Phase::Sealing {
            self.state
                .transition(&job.id, job.status, |j| j.phase = Phase::Sealing)
                .await?;
        }
        let snapshot = Self::snapshot_id(job)?.to_owned();
        let mut shards: Vec<ShardRef> = Vec::new();
        let mut standing = Vec::new();
        let mut not_captured: Vec<String> = Vec::new();
        for outcome in done.values() {
            let TaskOutcome::Captured(c) = outcome else {
                continue;
            };
            shards.extend(self.part_shards(c).await?);
            standing.push(c.standing.clone());
            not_captured.extend(c.not_captured.iter().cloned());
        }
        not_captured.sort();
        not_captured.dedup();
        let info = SnapshotInfo {
            tenant: job.tenant.clone(),
            snapshot_id: snapshot.clone(),
            kind: Self::snapshot_kind(job),
            created_at: job.created_at,
            not_captured,
        };
        let layout = ShardLayout::new(tenant.shard_bits);
        let store = BlockingBlobs::new(tokio::runtime::Handle::current(), self.blobs.clone());
        let manifest = tokio::task::spawn_blocking(move || {
            seal_manifest_with(&store, &info, layout, shards, standing)
        })
        .await
        .map_err(|e| EngineError::Join(e.to_string()))??;
        let manifest_bytes = self
            .blobs
            .get(&manifest_key(&job.tenant, &snapshot))
            .await
            .map_err(SnapshotError::from)?;
        self.state
            .add_sealed(SnapshotRecord {
                tenant: job.tenant.clone(),
                id: snapshot.clone(),
                kind: manifest.kind,
                created_at: manifest.created_at,
                object_count: manifest.object_count,
                manifest_key: manifest_key(&job.tenant, &snapshot),
                manifest_digest: blake3_hex(&manifest_bytes),
                job: job.id.clone(),
            })
            .await?;
        metrics::histogram!(m::JOB_PHASE_SECONDS, m::label::KIND => job.kind.name(), m::label::PHASE => m::phase::SEAL)
            .record(started.elapsed().as_secs_f64());
        let objects = manifest.object_count;
        match job.kind {
            JobKind::Backup => {
                let job = self
                    .state
                    .transition(&job.id, JobStatus::Successful, |j| {
                        j.phase = Phase::Done;
                        j.counts.insert("objects".into(), objects);
                    })
                    .await?;
                count_status(&job);
                tracing::info!(tenant = %job.tenant, job = %job.id, snapshot = %snapshot, objects, "backup sealed");
                self.apply_retention(tenant).await;
                Ok(())
            }
            JobKind::Report { .. } | JobKind::Recovery { .. } => {
                let ranges = 1u64 << self.ranges(tenant);
                // A recovery's second round captures while it is already running.
                let to = match job.status {
                    JobStatus::Running => JobStatus::Running,
                    _ => JobStatus::Calculating,
                };
                let job = self
                    .state
                    .transition(&job.id, to, |j| {
                        j.phase = Phase::Diffing;
                        j.tasks.total += ranges;
                        j.counts.insert("liveObjects".into(), objects);
                    })
                    .await?;
                count_status(&job);
                self.phase_started(&job.id);
                self.publish_diffs(&job, tenant, &BTreeMap::new()).await
            }
        }
    }

    /// A capture part's shard list, read and checked against its digest.
    async fn part_shards(&self, c: &CaptureResult) -> Result<PartShards, EngineError> {
        let bytes = self
            .blobs
            .get(&c.shards_key)
            .await
            .map_err(SnapshotError::from)?;
        if blake3_hex(&bytes) != c.shards_digest {
            return Err(EngineError::Invalid(format!(
                "the shard list of capture part {} ({}) does not match its digest",
                c.part, c.shards_key
            )));
        }
        let list: PartShards = wire::decode_blob(&bytes)?;
        if list.iter().any(|s| s.part != c.part) {
            return Err(EngineError::Invalid(format!(
                "the shard list of capture part {} names other parts",
                c.part
            )));
        }
        Ok(list)
    }

    /// Aggregates a report's range counts and makes it successful.
    async fn finish_report(
        &self,
        job: &Job,
        done: BTreeMap<u32, TaskOutcome>,
    ) -> Result<(), EngineError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut entries = 0;
        let mut links = 0;
        for outcome in done.values() {
            let TaskOutcome::Diffed(d) = outcome else {
                continue;
            };
            entries += d.entries;
            links += d.links;
            for (action, n) in &d.by_action {
                *counts.entry(action.clone()).or_default() += n;
            }
        }
        let stored = self.state.report_entry_count(&job.id)?;
        if stored != entries {
            return Err(EngineError::Invalid(format!(
                "report {} holds {stored} entries, its ranges reported {entries}",
                job.id
            )));
        }
        let job = self
            .state
            .transition(&job.id, JobStatus::Successful, |j| {
                j.phase = Phase::Done;
                j.counts.extend(counts);
                j.counts.insert("entries".into(), entries);
                j.counts.insert("links".into(), links);
            })
            .await?;
        count_status(&job);
        tracing::info!(tenant = %job.tenant, job = %job.id, entries, "report complete");
        Ok(())
    }

    /// Removes the tenant's backups beyond its retention: catalog first (recorded with the
    /// reason, and with a sweep of its blobs), then the blobs.
    async fn apply_retention(&self, tenant: &TenantRecord) {
        let victims = match self.state.retention_victims(&tenant.name, tenant.retention) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(tenant = %tenant.name, error = %e, "retention cannot list backups");
                return;
            }
        };
        for victim in &victims {
            let reason = format!("retention keeps the newest {} backups", tenant.retention);
            if let Err(e) = self
                .state
                .remove_snapshot(&tenant.name, &victim.id, &reason)
                .await
            {
                tracing::warn!(tenant = %tenant.name, snapshot = %victim.id, error = %e, "retention cannot remove a backup");
                continue;
            }
            tracing::info!(tenant = %tenant.name, snapshot = %victim.id, reason, "backup removed by retention");
        }
        if !victims.is_empty() {
            self.sweep_blobs(crate::state::unix_now()).await;
        }
    }

    /// Removes a finished report past its retention: its live snapshot (from the catalog), its
    /// record, then the blobs of both.
    /// A recovery's history goes the same way: its pre-recovery and live snapshots, its
    /// actions, its record and its entries' blobs.
    pub async fn expire_report(&self, report: &Job) {
        let reason = match report.kind {
            JobKind::Recovery { .. } => "recovery history retention",
            _ => "report retention",
        };
        for live in report.snapshots() {
            match self
                .state
                .remove_snapshot(&report.tenant, live, reason)
                .await
            {
                Ok(_) => {}
                // Never sealed (the job failed or was canceled while capturing), or removed
                // before a crash: its blobs, if any, are swept.
                Err(StateError::NotFound { .. }) => {
                    if let Err(e) = self.state.sweep_unsealed(&report.tenant, live, 0).await {
                        tracing::warn!(job = %report.id, error = %e, "cannot record the sweep of an expired job's snapshot");
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %report.id, error = %e, "cannot remove an expired job's snapshot");
                    return;
                }
            }
        }
        match self.state.delete_report(&report.id).await {
            Ok(()) => {
                tracing::info!(tenant = %report.tenant, job = %report.id, "expired report removed")
            }
            Err(e) => {
                tracing::warn!(job = %report.id, error = %e, "cannot remove an expired report")
            }
        }
        self.sweep_blobs(crate::state::unix_now()).await;
    }

    /// Records sweeps of the snapshots a job that failed or was canceled was capturing and
    /// never sealed, due after [`UNSEALED_SWEEP_DELAY`] (a capture still in flight may write
    /// a little longer). Sealed snapshots are kept: retention and expiry remove them.
    async fn sweep_unsealed_of(&self, job: &Job) {
        let not_before = crate::state::unix_now() + UNSEALED_SWEEP_DELAY.as_secs() as i64;
        for id in job.snapshots() {
            if let Err(e) = self.state.sweep_unsealed(&job.tenant, id, not_before).await {
                tracing::warn!(job = %job.id, snapshot = %id, error = %e, "cannot record the sweep of an unsealed snapshot");
            }
        }
    }

    /// Deletes the blobs of every recorded sweep whose owner is gone and whose time has come
    /// at `at` (unix seconds). A sweep is dropped only once its prefix lists empty; one that
    /// fails stays for the next pass (the scheduler's tick runs one). The sweeps that remain
    /// are the gauge `rewind_blob_sweeps_pending`.
    pub async fn sweep_blobs(&self, at: i64) {
        let sweeps = match self.state.blob_sweeps() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the blob sweeps");
                return;
            }
        };
        let mut left = 0;
        for sweep in sweeps {
            match self.sweep(&sweep, at).await {
                Ok(true) => {}
                Ok(false) => left += 1,
                Err(e) => {
                    left += 1;
                    tracing::warn!(prefix = %sweep.prefix, error = %e, "cannot delete a removed prefix's blobs");
                }
            }
        }
        metrics::gauge!(m::BLOB_SWEEPS_PENDING).set(left as f64);
    }

    /// One sweep: `true` when it is done (or was stale), `false` when it stays (blobs remain,
    /// or its time has not come).
    async fn sweep(&self, sweep: &crate::state::BlobSweep, at: i64) -> Result<bool, EngineError> {
        use crate::state::SweepState;
        match self.state.sweep_state(sweep, at).await? {
            SweepState::Due => {}
            SweepState::Later => return Ok(false),
            SweepState::Stale => {
                tracing::warn!(prefix = %sweep.prefix, "a sweep whose owner is still here was dropped");
                return Ok(true);
            }
        }
        let keys = self
            .blobs
            .list(&sweep.prefix)
            .await
            .map_err(SnapshotError::from)?;
        let mut failed = 0usize;
        for key in &keys {
            if let Err(e) = self.blobs.delete(key).await {
                failed += 1;
                tracing::warn!(key, error = %e, "cannot delete a removed blob");
            }
        }
        let left = self
            .blobs
            .list(&sweep.prefix)
            .await
            .map_err(SnapshotError::from)?;
        if failed > 0 || !left.is_empty() {
            return Ok(false);
        }
        self.state.sweep_done(&sweep.prefix).await?;
        tracing::debug!(prefix = %sweep.prefix, blobs = keys.len(), "removed blobs deleted");
        Ok(true)
    }

    /// Takes one result: a diff's entries are stored first, then the result is recorded
    /// exactly once, then acknowledged, and the job advanced.
    pub async fn on_result(&self, delivery: Delivery) {
        let result: TaskResult = match wire::decode(&delivery.payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("undecodable result on {}: {e}", delivery.subject);
                let _ = delivery.term(&reason).await;
                return;
            }
        };
        let job = match self.state.get_job(&result.id.job) {
            Ok(job) => job,
            Err(e) => {
                let _ = delivery
                    .term(&format!("result of job {}: {e}", result.id.job))
                    .await;
                return;
            }
        };
        if job.status.is_terminal() {
            self.end_write_lease(&result.id).await;
            let _ = delivery.ack().await;
            return;
        }
        if let TaskOutcome::Applied(a) = &result.outcome {
            if let Err(e) = self.record_applied(&job, a).await {
                tracing::warn!(job = %job.id, error = %e, "cannot record applied actions");
                if e.is_transient() {
                    let _ = delivery.nak(Duration::from_secs(1)).await;
                } else {
                    // Outcomes of actions the job does not hold: trying again cannot help.
                    let _ = delivery.ack().await;
                    self.fail(&job.id, &format!("recording applied actions: {e}"))
                        .await;
                }
                return;
            }
        }
        // Only now that its outcomes are recorded may a canceled job count the task as over.
        self.end_write_lease(&result.id).await;
        let report = matches!(job.kind, JobKind::Report { .. });
        if let (true, TaskOutcome::Diffed(d)) = (report, &result.outcome) {
            if let Err(e) = self.ingest_entries(&job, d).await {
                tracing::warn!(job = %job.id, range = d.range, error = %e, "cannot store a range's entries");
                if e.is_transient() {
                    let _ = delivery.nak(Duration::from_secs(1)).await;
                } else {
                    let _ = delivery.ack().await;
                    self.fail(&job.id, &e.to_string()).await;
                }
                return;
            }
        }
        match self
            .state
            .record_task_result(&job.id, &result.id.result_key(), &delivery.payload)
            .await
        {
            Ok(outcome) => {
                let _ = delivery.ack().await;
                if outcome == crate::state::RecordOutcome::First {
                    self.advance_logged(&job.id, false).await;
                }
            }
            Err(StateError::Refused { .. }) => {
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "cannot record a result");
                let _ = delivery.nak(Duration::from_secs(1)).await;
            }
        }
    }

    /// Ends the write lease an apply task's worker took (its gate keeps it after its last
    /// write): a canceled recovery is abandoned only once no task holds one, so a task's
    /// writes are listed before its job can be. A lease not ended runs out by itself.
    async fn end_write_lease(&self, task: &TaskId) {
        if task.kind != TaskKind::Apply {
            return;
        }
        if let Err(e) = self
            .budgets
            .lease(&task.job, &task.task_msg_id(), None)
            .await
        {
            tracing::warn!(job = %task.job, task = %task.task_msg_id(), error = %e, "a write lease was not ended; it runs out by itself");
        }
    }

    /// Reads a range's entries blob (checked against its digest) into the state.
    async fn ingest_entries(&self, job: &Job, d: &DiffResult) -> Result<(), IngestError> {
        let bytes = self
            .blobs
            .get(&d.entries_key)
            .await
            .map_err(|e| IngestError::Transient(e.to_string()))?;
        if blake3_hex(&bytes) != d.entries_digest {
            return Err(IngestError::Permanent(format!(
                "the entries of report range {} ({}) do not match their digest",
                d.range, d.entries_key
            )));
        }
        let entries: RangeEntries =
            wire::decode_blob(&bytes).map_err(|e| IngestError::Permanent(e.to_string()))?;
        if entries.len() as u64 != d.entries {
            return Err(IngestError::Permanent(format!(
                "report range {} holds {} entries, its result says {}",
                d.range,
                entries.len(),
                d.entries
            )));
        }
        let encoded = entries
            .iter()
            .map(rmp_serde::to_vec_named)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IngestError::Permanent(e.to_string()))?;
        self.state
            .put_report_entries(&job.id, d.range, encoded)
            .await
            .map_err(|e| IngestError::Transient(e.to_string()))
    }

    /// Takes one dead letter: the task's job fails with its reason.
    pub async fn on_dead_letter(&self, delivery: Delivery) {
        let dead = match DeadLetter::decode(&delivery.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(subject = %delivery.subject, error = %e, "undecodable dead letter dropped");
                let _ = delivery.term("undecodable dead letter").await;
                return;
            }
        };
        let job = job_of_subject(&dead.subject);
        let kind = task_kind_of_subject(&dead.subject);
        metrics::counter!(m::TASK_DEAD_LETTERS_TOTAL, m::label::KIND => kind).increment(1);
        match job {
            Some(job) => {
                let reason = format!(
                    "{kind} task {} failed after {} deliveries: {}",
                    dead.subject, dead.attempts, dead.reason
                );
                self.fail(&job, &reason).await;
            }
            None => {
                tracing::error!(subject = %dead.subject, reason = %dead.reason, "dead letter of no job");
            }
        }
        let _ = delivery.ack().await;
    }

    /// Pulls results and dead letters, and samples the queue's pending counts, until
    /// `shutdown` turns true. One future, no detached task: aborting it stops everything.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();
        let dead = async {
            let mut rx = shutdown.clone();
            while !stopped(&rx) {
                tokio::select! {
                    _ = rx.changed() => {}
                    pulled = self.queue.pull(Lane::DeadLetters, 16, Duration::from_secs(1)) => {
                        match pulled {
                            Ok(ds) => for d in ds { self.on_dead_letter(d).await },
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot pull dead letters");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
        };
        let stopping = async {
            let mut rx = shutdown.clone();
            while !stopped(&rx) {
                self.advance_stopping_jobs().await;
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        };
        let gauges = async {
            let mut rx = shutdown.clone();
            while !stopped(&rx) {
                for lane in Lane::ALL {
                    if let Ok(n) = self.queue.pending(lane).await {
                        metrics::gauge!(m::QUEUE_PENDING_TASKS, m::label::LANE => lane.name())
                            .set(n as f64);
                    }
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        };
        let results = async {
            let mut rx = shutdown.clone();
            while !stopped(&rx) {
                tokio::select! {
                    _ = rx.changed() => {}
                    pulled = self.queue.pull(Lane::Results, 64, Duration::from_secs(1)) => {
                        match pulled {
                            Ok(ds) => for d in ds { self.on_result(d).await },
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot pull results");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
        };
        tokio::join!(dead, gauges, results, stopping);
    }
}

impl Engine {
    /// The entries of each range of a finished report, by range number (from the ranges'
    /// results): what turns a position in the report into a (range, seq) cursor.
    pub fn report_range_counts(&self, job: &str) -> Result<BTreeMap<u32, u64>, EngineError> {
        let mut out = BTreeMap::new();
        for (_, bytes) in self.state.task_results(job)? {
            let r: TaskResult = wire::decode(&bytes)?;
            if let TaskOutcome::Diffed(d) = r.outcome {
                out.insert(d.range, d.entries);
            }
        }
        Ok(out)
    }

    /// Whether the state answers and the queue answers (the API's `/readyz`).
    pub async fn ready(&self) -> Result<(), EngineError> {
        self.state.list_tenants()?;
        self.queue.pending(Lane::Tasks).await?;
        self.queue.pending(Lane::Apply).await?;
        Ok(())
    }
}

/// Every entry of a report, in order, read from the state.
pub fn report_entries(
    engine: &Engine,
    job: &str,
) -> Result<Vec<rewind_common::ReportEntry>, EngineError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = engine.state().report_entries_page(job, cursor, 1000)?;
        for bytes in page {
            out.push(
                rmp_serde::from_slice(&bytes)
                    .map_err(|e| EngineError::Invalid(format!("a report entry of {job}: {e}")))?,
            );
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Why a range's entries could not be stored.
#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl IngestError {
    fn is_transient(&self) -> bool {
        matches!(self, IngestError::Transient(_))
    }
}

/// The job id of a task subject (`rewind.tasks.<tenant>.<job>.<kind>.<n>`).
fn job_of_subject(subject: &str) -> Option<String> {
    let parts: Vec<&str> = subject.split('.').collect();
    (parts.len() == 6 && parts[0] == "rewind").then(|| parts[3].to_owned())
}

fn task_kind_of_subject(subject: &str) -> &'static str {
    match subject.split('.').nth(4) {
        Some("capture") => m::task_kind::CAPTURE,
        Some("diff") => m::task_kind::DIFF,
        Some("apply") => m::task_kind::APPLY,
        _ => "other",
    }
}

/// The task numbers of a job's current round start here: a recovery captures and diffs once
/// per round, and each round's tasks are told apart by the bits above the low 16 (backups
/// and reports have no round: 0).
fn round_base(job: &Job) -> u32 {
    u32::from(job.recovery.as_ref().map_or(0, |r| r.round)) << 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_job() {
        let id = TaskId {
            tenant: "t".into(),
            job: "j-1".into(),
            kind: TaskKind::Diff,
            number: 3,
        };
        assert_eq!(job_of_subject(&id.task_subject()).as_deref(), Some("j-1"));
        assert_eq!(task_kind_of_subject(&id.task_subject()), "diff");
        assert_eq!(job_of_subject("rewind.tasks.bad"), None);
    }

    #[test]
    fn only_passing_failures_are_tried_again() {
        let away = EngineError::Queue(QueueError::JetStream {
            lane: Lane::Tasks,
            op: "publish",
            message: "connection lost".into(),
        });
        assert!(away.is_transient());
        let gone = rewind_common::snapshot::store::StoreError::NotFound("k".into());
        assert!(!EngineError::Snapshot(SnapshotError::Store(gone)).is_transient());
        assert!(!EngineError::Invalid("bad".into()).is_transient());
        assert!(!EngineError::Queue(QueueError::InvalidMsgId(String::new())).is_transient());
    }

    #[test]
    fn default_groups_hold_every_type_once() {
        EngineSettings::default().validate().unwrap();
        let mut bad = EngineSettings::default();
        bad.capture_groups.pop();
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("exactly once"), "{err}");
    }
}
