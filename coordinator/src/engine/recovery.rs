//! Recovery jobs: planned against the present, applied wave by wave, in two rounds when there
//! is anything to restore.
//!
//! - **Round 1**: the scope is captured (the *pre-recovery snapshot*, kept so that the recovery
//!   can be undone) and diffed against the backup; the diff tasks also return the unique
//!   values of the objects the plan restores or soft-deletes as newcomers. The planner of
//!   `common` makes the plan, which is persisted (every step, and every change it skips with
//!   the reason) before anything is applied. A dry run ends here.
//! - If the plan restores anything, round 1 applies only the restores (and the newcomers they
//!   need out of the way, soft-deleted first). Graph hides the links of an object in the
//!   recycle bin, so what a restored object holds is known only once it is back: **round 2**
//!   captures and diffs again and plans the rest (updates, links, soft deletes) against the
//!   backup.
//! - A plan's steps run in **waves** ([`wave_of`]): the newcomers in the way, then restores by
//!   type where Graph needs an order (groups, applications, service principals, users, named
//!   locations, conditional access policies), then everything else. A wave's steps are cut by
//!   object id into apply tasks ([`chunks`]), which workers apply side by side; the next wave
//!   starts once every task of this one has reported.
//! - A plan that modifies more objects than the tenant's approval threshold waits in
//!   `awaitingApproval` until an administrator other than its starter approves it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use rewind_common::metrics as m;
use rewind_common::model::LinkKind;
use rewind_common::plan::{plan_with, restore_rank, CurrentValues, PlanScope, PlannedStep, Step};
use rewind_common::report::{RecoveryAction, ReportEntry, Scope};
use rewind_common::snapshot::{blake3_hex, SnapshotKind};
use rewind_common::wire::{
    self, ApplyResult, ApplyStep, ApplyTask, BlobRef, DirectoryRef, RangeEntries, RangeValues,
    StepReport, TaskKind, TaskOutcome, TaskSpec, WriteBudget,
};
use rewind_common::SnapshotError;

use super::{count_status, Engine, EngineError};
use crate::state::{
    ActionRecord, Actor, Approval, AuditEntry, Job, JobKind, JobStatus, Outcome, Phase, StateError,
    Subject, TenantRecord, Wave,
};

/// The wave of the steps after the restores (updates, links, soft deletes).
pub const LAST_WAVE: u16 = 100;

/// Steps in one apply task at most (fewer when their encoding is large).
pub const TASK_STEPS: usize = 400;

/// The encoded steps of one apply task stay under this (a message is at most 1 MiB).
const TASK_BYTES: usize = 512 * 1024;

/// The wave a step runs in: a newcomer soft-deleted because a restore needs its unique value
/// (its steps carry the planner's note) first, then the restores by [`restore_rank`], then
/// everything else.
pub fn wave_of(step: &PlannedStep) -> u16 {
    match &step.step {
        _ if step.note.is_some() => 0,
        Step::Restore { object_type, .. } => 1 + u16::from(restore_rank(*object_type)),
        _ => LAST_WAVE,
    }
}

fn link_target(step: &Step) -> Option<(LinkKind, rewind_common::ObjectId)> {
    match step {
        Step::AddLink { kind, target, .. } | Step::RemoveLink { kind, target, .. } => {
            Some((*kind, *target))
        }
        _ => None,
    }
}

/// Cuts a wave's actions (in sequence order, which is object id order) into apply tasks: at
/// most `max_steps` steps (at most [`TASK_STEPS`]) and [`TASK_BYTES`] of encoding each, cut
/// between objects, so that the steps of one object run in order in one task. An object with
/// more steps than four full tasks hold is cut too, but never between two steps on the same
/// link (a grant removed, then re-added). Deterministic: the same actions and limit always
/// give the same tasks.
pub fn chunks(records: &[ActionRecord], max_steps: usize) -> Vec<Range<usize>> {
    let max_steps = max_steps.clamp(1, TASK_STEPS);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for i in 0..records.len() {
        let size = records[i]
            .step
            .as_ref()
            .and_then(|s| rmp_serde::to_vec_named(s).ok())
            .map_or(64, |b| b.len() + 64);
        if i > start {
            let prev = &records[i - 1];
            let here = &records[i];
            let n = i - start;
            let new_object = here.object_id != prev.object_id;
            let new_link = here.step.as_ref().and_then(link_target)
                != prev.step.as_ref().and_then(link_target);
            let full = n >= max_steps || bytes + size > TASK_BYTES;
            if full
                && (new_object || (new_link && (n >= 4 * TASK_STEPS || bytes + size > TASK_BYTES)))
            {
                out.push(start..i);
                start = i;
                bytes = 0;
            }
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(start..records.len());
    }
    out
}

/// The most steps a task of a wave of `steps` takes when the tenant writes through `apps` app
/// registrations: the wave is cut into a multiple of `apps` tasks of even size, at most
/// [`TASK_STEPS`] each, so that every app (each has its own budget) gets as many steps.
pub fn task_steps(steps: usize, apps: usize, max: usize) -> usize {
    let (apps, max) = (apps.max(1), max.clamp(1, TASK_STEPS));
    let rounds = steps.div_ceil(apps * max).max(1);
    steps.div_ceil(apps * rounds).clamp(1, max)
}

/// A planned wave's step limit (jobs of builds before it: [`TASK_STEPS`]).
fn wave_task_steps(w: &Wave) -> usize {
    match w.task_steps {
        0 => TASK_STEPS,
        n => n as usize,
    }
}

/// Fixes each wave's step limit and task count for a tenant of `apps` app registrations.
fn cut_waves(
    records: &[ActionRecord],
    first_seq: u32,
    waves: &mut [Wave],
    apps: usize,
    max_steps: usize,
) {
    for w in waves {
        let slice = &records[(w.first - first_seq) as usize..(w.end - first_seq) as usize];
        let limit = task_steps(slice.len(), apps, max_steps);
        w.task_steps = limit as u32;
        w.tasks = chunks(slice, limit).len() as u32;
        w.published = Some(0);
    }
}

/// How many of a job's apply tasks may be queued or running at once: two per app
/// registration, and one more per app for each 1,000 writes per second of its budget (one
/// task keeps up with about that), at most [`MAX_APPLY_WINDOW`]. A job holds no more of the
/// workers' apply slots than its budget can use, and another tenant's recovery is not queued
/// behind thousands of its tasks.
pub fn apply_window(apps: usize, writes_per_second: u32) -> usize {
    let per_app = 2 + writes_per_second as usize / 1_000;
    (apps.max(1) * per_app).min(MAX_APPLY_WINDOW)
}

/// The most apply tasks of one job queued or running at once.
pub const MAX_APPLY_WINDOW: usize = 32;

/// The cut of each running recovery's current wave (see `Engine::wave_cuts`).
pub(super) type WaveCuts = std::sync::Arc<
    std::sync::Mutex<BTreeMap<String, (u8, u32, std::sync::Arc<Vec<Range<usize>>>)>>,
>;

/// The number of an apply task: round, wave index and chunk, each in its own bits.
fn apply_number(round: u8, wave: u32, chunk: u32) -> u32 {
    (u32::from(round) << 24) | ((wave & 0xff) << 16) | (chunk & 0xffff)
}

/// What the planner returns for one round: the actions to persist, and its counts.
struct RoundPlan {
    records: Vec<ActionRecord>,
    waves: Vec<Wave>,
    /// Distinct objects the whole plan modifies (the approval threshold's measure).
    objects: u64,
    /// Whether round 1 applies only the restores, and a round 2 plans the rest.
    two_rounds: bool,
    skipped: u64,
}

/// Plans one round (pure: no I/O).
fn plan_round_records(
    tenant: &str,
    job: &str,
    round: u8,
    dry_run: bool,
    first_seq: u32,
    entries: &[ReportEntry],
    current: &CurrentValues,
) -> RoundPlan {
    let plan = plan_with(PlanScope { tenant, job }, entries, current);
    let by_id: BTreeMap<_, &ReportEntry> = entries.iter().map(|e| (e.id, e)).collect();
    let objects = plan
        .iter()
        .map(|s| s.step.object_id())
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let two_rounds = round == 1 && !dry_run && plan.iter().any(|s| wave_of(s) < LAST_WAVE);
    let mut skipped: Vec<ActionRecord> = Vec::new();
    let skip = |e: &ReportEntry, reason: String| ActionRecord {
        seq: 0,
        action_id: String::new(),
        round,
        wave: None,
        object_id: e.id,
        object_type: e.object_type,
        display_name: e.display_name.clone(),
        step: None,
        note: None,
        values: Vec::new(),
        outcome: Outcome::Skipped { reason },
        at: None,
    };
    if round == 1 {
        for e in entries {
            if let Some(r) = e
                .reason
                .filter(|_| e.action == RecoveryAction::NotRecoverable)
            {
                skipped.push(skip(e, format!("not recoverable: {}", r.as_str())));
                continue;
            }
            for l in e.changed_links.iter().filter(|l| !l.recoverable) {
                let why = l.reason.map_or("not recoverable", |r| r.as_str());
                skipped.push(skip(
                    e,
                    format!("{} link to {} not recoverable: {why}", l.kind, l.target),
                ));
            }
        }
    }
    let mut chosen: Vec<PlannedStep> = Vec::new();
    for s in plan {
        let keep = match round {
            1 if two_rounds => wave_of(&s) < LAST_WAVE,
            1 => true,
            _ => !matches!(s.step, Step::Restore { .. }),
        };
        if keep {
            chosen.push(s);
        } else if round > 1 {
            if let Some(e) = by_id.get(&s.step.object_id()) {
                skipped.push(skip(
                    e,
                    "still in the recycle bin: its restore in the first round did not succeed"
                        .into(),
                ));
            }
        }
    }
    // Waves in order; within a wave, by object id (stable: an object's steps keep the plan's
    // order), so that each task covers one range of ids.
    chosen.sort_by_key(|s| (wave_of(s), s.step.object_id()));
    let mut records: Vec<ActionRecord> = Vec::with_capacity(chosen.len() + skipped.len());
    let mut waves: Vec<Wave> = Vec::new();
    let mut seq = first_seq;
    for s in chosen {
        let key = wave_of(&s);
        let entry = by_id.get(&s.step.object_id());
        let values = match (&s.step, entry) {
            (Step::Update { properties, .. }, Some(e)) => e
                .changed_attributes
                .iter()
                .filter(|a| properties.iter().any(|(n, _)| *n == a.name))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        records.push(ActionRecord {
            seq,
            action_id: s.action_id.clone(),
            round,
            wave: Some(key),
            object_id: s.step.object_id(),
            object_type: step_type(&s.step),
            display_name: entry.map(|e| e.display_name.clone()).unwrap_or_default(),
            note: s.note.clone(),
            step: Some(s.step),
            values,
            outcome: Outcome::Planned,
            at: None,
        });
        match waves.last_mut() {
            Some(w) if w.key == key => w.end = seq + 1,
            _ => waves.push(Wave {
                key,
                tasks: 0,
                first: seq,
                end: seq + 1,
                task_steps: 0,
                published: None,
            }),
        }
        seq += 1;
    }
    let n_skipped = skipped.len() as u64;
    for mut r in skipped {
        r.seq = seq;
        seq += 1;
        records.push(r);
    }
    RoundPlan {
        records,
        waves,
        objects,
        two_rounds,
        skipped: n_skipped,
    }
}

fn step_type(step: &Step) -> rewind_common::model::ObjectType {
    match step {
        Step::Restore { object_type, .. }
        | Step::Update { object_type, .. }
        | Step::AddLink { object_type, .. }
        | Step::RemoveLink { object_type, .. }
        | Step::SoftDelete { object_type, .. } => *object_type,
    }
}

fn outcome_of(report: StepReport) -> Outcome {
    match report {
        StepReport::Applied => Outcome::Applied,
        StepReport::AlreadyInState => Outcome::AlreadyInState,
        StepReport::Failed {
            permanent,
            status,
            code,
            message,
        } => Outcome::Failed {
            status,
            code,
            message,
            permanent,
        },
        StepReport::NotSent { reason } => Outcome::NotSent { reason },
    }
}

/// A recovery's counts, from its actions.
#[derive(Debug, Default)]
struct Tally {
    planned: u64,
    applied: u64,
    already: u64,
    skipped: u64,
    failed: u64,
    not_sent: u64,
    objects_modified: u64,
    links_modified: u64,
}

impl Tally {
    /// The counts into the job record.
    fn put(&self, j: &mut Job) {
        for (k, v) in [
            ("planned", self.planned),
            ("applied", self.applied),
            ("alreadyInState", self.already),
            ("skipped", self.skipped),
            ("failedChanges", self.failed),
            ("notSent", self.not_sent),
            ("objectsModified", self.objects_modified),
            ("linksModified", self.links_modified),
        ] {
            j.counts.insert(k.into(), v);
        }
    }
}

impl Engine {
    /// Opens a recovery of `tenant` back to `snapshot` (a backup, or a pre-recovery snapshot to
    /// undo a recovery) within `scope`, on behalf of `actor`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_recovery_by(
        &self,
        actor: &Actor,
        tenant: &str,
        snapshot: &str,
        scope: Scope,
        from_report: Option<String>,
        dry_run: bool,
        undo_of: Option<String>,
    ) -> Result<Job, EngineError> {
        let record = self.state.get_snapshot(tenant, snapshot)?;
        if !matches!(
            record.kind,
            SnapshotKind::Backup | SnapshotKind::PreRecovery
        ) {
            return Err(EngineError::Invalid(format!(
                "snapshot {snapshot} of tenant {tenant} is a live snapshot: a recovery goes back \
                 to a backup or to a recovery's pre-recovery snapshot"
            )));
        }
        let kind = JobKind::Recovery {
            backup: snapshot.to_owned(),
            scope,
            from_report,
            dry_run,
            undo_of,
        };
        self.open_job_by(actor, tenant, kind).await
    }

    /// Approves (or rejects) a recovery waiting for approval, on behalf of `actor`, who must
    /// not be its starter. A rejected recovery is abandoned, with nothing applied.
    pub async fn decide_recovery_by(
        &self,
        actor: &Actor,
        job_id: &str,
        approve: bool,
    ) -> Result<Job, EngineError> {
        let job = self.state.get_job(job_id)?;
        if job.status != JobStatus::AwaitingApproval {
            return Err(EngineError::State(StateError::Refused {
                what: "approval of job",
                id: job_id.to_owned(),
                reason: format!("it is {}, not awaiting approval", job.status),
            }));
        }
        let Actor::Token { id, name } = actor else {
            return Err(EngineError::Invalid(
                "only an API token can approve a recovery".into(),
            ));
        };
        let starter = job.recovery.as_ref().and_then(|r| r.starter.as_ref());
        if let Some(Actor::Token { id: started, .. }) = starter {
            if started == id {
                return Err(EngineError::State(StateError::Refused {
                    what: "approval of job",
                    id: job_id.to_owned(),
                    reason: "the token that started a recovery cannot approve or reject it: a \
                             second administrator must"
                        .into(),
                }));
            }
        }
        let decision = Approval {
            approved: approve,
            by_id: id.clone(),
            by_name: name.clone(),
            at: crate::state::unix_now(),
        };
        self.state
            .audit(
                AuditEntry::new(
                    actor,
                    if approve {
                        "recovery.approved"
                    } else {
                        "recovery.rejected"
                    },
                    Subject::job(&job.tenant, &job.id),
                )
                .with("objects", job.recovery.as_ref().map_or(0, |r| r.objects)),
            )
            .await?;
        let to = if approve {
            JobStatus::Running
        } else {
            JobStatus::Abandoned
        };
        let job = self
            .state
            .transition_by(actor, job_id, to, |j| {
                // Two decisions racing: the first one written stands.
                if let Some(r) = j.recovery.as_mut().filter(|r| r.approval.is_none()) {
                    r.approval = Some(decision);
                }
                if !approve {
                    j.error = Some(format!("rejected by {name}"));
                }
            })
            .await?;
        count_status(&job);
        if approve {
            self.advance_logged(&job.id, true).await;
        }
        Ok(self.state.get_job(&job.id)?)
    }

    /// A diff result's blob, checked against its digest.
    async fn checked_blob(&self, blob: &BlobRef, what: &str) -> Result<Vec<u8>, EngineError> {
        let bytes = self
            .blobs
            .get(&blob.key)
            .await
            .map_err(SnapshotError::from)?;
        if blake3_hex(&bytes) != blob.digest {
            return Err(EngineError::Invalid(format!(
                "{what} ({}) does not match its digest",
                blob.key
            )));
        }
        Ok(bytes.to_vec())
    }

    /// Plans the job's current round from its diff results, persists the plan, and moves on:
    /// a dry run or an empty plan finishes; a plan above the approval threshold waits; any
    /// other starts its first wave.
    pub(super) async fn plan_round(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        done: BTreeMap<u32, TaskOutcome>,
    ) -> Result<(), EngineError> {
        let JobKind::Recovery { dry_run, .. } = job.kind else {
            return Err(EngineError::Invalid(format!(
                "job {} is not a recovery",
                job.id
            )));
        };
        let progress = job.recovery.clone().unwrap_or_default();
        if job.phase != Phase::Planning {
            self.state
                .transition(&job.id, job.status, |j| j.phase = Phase::Planning)
                .await?;
        }
        let mut entries: Vec<ReportEntry> = Vec::new();
        let mut values: RangeValues = Vec::new();
        for outcome in done.values() {
            let TaskOutcome::Diffed(d) = outcome else {
                continue;
            };
            let blob = BlobRef {
                key: d.entries_key.clone(),
                digest: d.entries_digest.clone(),
            };
            let bytes = self
                .checked_blob(&blob, &format!("the entries of range {}", d.range))
                .await?;
            let range: RangeEntries = wire::decode_blob(&bytes)?;
            entries.extend(range);
            if let Some(v) = &d.values {
                let bytes = self
                    .checked_blob(v, &format!("the values of range {}", d.range))
                    .await?;
                let range: RangeValues = wire::decode_blob(&bytes)?;
                values.extend(range);
            }
        }
        let (tenant_name, job_id, round, first) = (
            job.tenant.clone(),
            job.id.clone(),
            progress.round,
            progress.next_seq,
        );
        let (apps, max_steps) = (tenant.write_apps().len(), self.settings.apply_task_steps);
        let planned = tokio::task::spawn_blocking(move || {
            let current = CurrentValues::from_pairs(values);
            let mut planned = plan_round_records(
                &tenant_name,
                &job_id,
                round,
                dry_run,
                first,
                &entries,
                &current,
            );
            cut_waves(&planned.records, first, &mut planned.waves, apps, max_steps);
            planned
        })
        .await
        .map_err(|e| EngineError::Join(e.to_string()))?;
        self.state.put_actions(&job.id, &planned.records).await?;
        let next_seq = first + planned.records.len() as u32;
        let tasks: u64 = planned.waves.iter().map(|w| u64::from(w.tasks)).sum();
        let steps = planned.records.len() as u64 - planned.skipped;
        let links = planned
            .records
            .iter()
            .filter(|r| r.step.as_ref().is_some_and(|s| link_target(s).is_some()))
            .count() as u64;
        tracing::info!(tenant = %job.tenant, job = %job.id, round, steps, skipped = planned.skipped, waves = planned.waves.len(), "recovery planned");
        let nothing = planned.waves.is_empty();
        let needs_approval = round == 1
            && !dry_run
            && !nothing
            && planned.objects > tenant.recovery.approval_threshold
            && progress.approval.is_none();
        let finished = dry_run || nothing;
        let to = if finished {
            // Counted and made successful by `finish_recovery`.
            job.status
        } else if needs_approval {
            JobStatus::AwaitingApproval
        } else {
            JobStatus::Running
        };
        let waves = planned.waves.clone();
        let edit = |j: &mut Job| {
            j.phase = Phase::Applying;
            j.tasks.total += tasks;
            if let Some(r) = &mut j.recovery {
                r.waves = waves;
                r.wave = 0;
                r.next_seq = next_seq;
                if round == 1 {
                    r.objects = planned.objects;
                    r.two_rounds = planned.two_rounds;
                    r.needs_approval = needs_approval;
                }
            }
            *j.counts.entry(format!("plannedRound{round}")).or_default() = steps;
            // Link changes of every round (a restored object's links are planned in round 2).
            *j.counts.entry("linksToModify".into()).or_default() += links;
            if round == 1 {
                j.counts.insert("skipped".into(), planned.skipped);
                j.counts.insert("objectsToModify".into(), planned.objects);
            }
        };
        let job = self.state.transition(&job.id, to, edit).await?;
        if finished {
            // A dry run, or nothing (more) to do.
            return self.finish_recovery(&job.id).await;
        }
        count_status(&job);
        if job.status == JobStatus::Running {
            let done = self.wave_results(&job)?;
            self.publish_wave(&job, tenant, false, &done).await?;
        }
        Ok(())
    }

    /// Publishes the current wave's apply tasks that the window admits (see
    /// [`apply_window`]) and that were not published yet, or, with `republish` (a resumed
    /// job), every admitted one without a result; `done` holds the wave's tasks that have a
    /// result ([`Engine::wave_results`]). The window's end is stored before its tasks are
    /// published, so that a crash between the two is made good by the republish; a job that
    /// left `applying` meanwhile (canceled) gets nothing more.
    async fn publish_wave(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        republish: bool,
        done: &BTreeSet<u32>,
    ) -> Result<(), EngineError> {
        let Some(progress) = &job.recovery else {
            return Ok(());
        };
        let index = progress.wave as usize;
        let Some(wave) = progress.waves.get(index).copied() else {
            return Ok(());
        };
        let (from, to) = match wave.published {
            // Planned by a build before the window: everything without a result, as then.
            None => (0, wave.tasks),
            Some(published) => {
                let window = apply_window(tenant.write_apps().len(), tenant.recovery.write_budget);
                let to = (done.len() as u32 + window as u32)
                    .min(wave.tasks)
                    .max(published);
                if to > published {
                    let stored = self
                        .state
                        .transition(&job.id, job.status, |j| {
                            if j.phase != Phase::Applying {
                                return;
                            }
                            if let Some(w) =
                                j.recovery.as_mut().and_then(|r| r.waves.get_mut(index))
                            {
                                w.published = Some(w.published.unwrap_or(0).max(to));
                            }
                        })
                        .await?;
                    if stored.phase != Phase::Applying {
                        return Ok(());
                    }
                }
                (if republish { 0 } else { published }, to)
            }
        };
        if from >= to {
            return Ok(());
        }
        let cut = self.wave_cut(job, progress.round, progress.wave, &wave)?;
        // The tasks take the tenant's app registrations in turn, each under its own budget.
        let apps: Vec<DirectoryRef> = tenant
            .write_apps()
            .into_iter()
            .map(|(client_id, secret)| DirectoryRef {
                graph_base_url: tenant.graph_base_url.clone(),
                token_url: tenant.token_url.clone(),
                client_id: client_id.to_owned(),
                secret: secret.clone(),
                per_user_mfa_state: self.settings.per_user_mfa_state,
            })
            .collect();
        let budget = WriteBudget {
            writes_per_second: tenant.recovery.write_budget,
            conditional_access_per_second: tenant.recovery.conditional_access_budget,
            tenant_writes_per_second: tenant.tenant_write_budget(),
        };
        for (chunk, range) in cut.iter().enumerate().take(to as usize).skip(from as usize) {
            let number = apply_number(progress.round, progress.wave, chunk as u32);
            if done.contains(&number) {
                continue;
            }
            let records = self.state.actions_range(
                &job.id,
                wave.first + range.start as u32,
                wave.first + range.end as u32,
            )?;
            let steps = records
                .iter()
                .filter_map(|r| {
                    r.step.clone().map(|step| ApplyStep {
                        seq: r.seq,
                        planned: PlannedStep {
                            action_id: r.action_id.clone(),
                            step,
                            note: r.note.clone(),
                        },
                    })
                })
                .collect();
            let spec = TaskSpec::Apply(ApplyTask {
                directory: apps[(progress.wave as usize + chunk) % apps.len()].clone(),
                steps,
                budget,
            });
            self.publish(Self::task_id(job, TaskKind::Apply, number), spec)
                .await?;
        }
        Ok(())
    }

    /// The wave's tasks as ranges of its actions: cut once per process and wave (reading and
    /// cutting a wave of 100,000 actions takes a good part of a second), then kept until the
    /// job moves on.
    fn wave_cut(
        &self,
        job: &Job,
        round: u8,
        index: u32,
        wave: &Wave,
    ) -> Result<std::sync::Arc<Vec<Range<usize>>>, EngineError> {
        if let Ok(cuts) = self.wave_cuts.lock() {
            if let Some((r, w, cut)) = cuts.get(&job.id) {
                if (*r, *w) == (round, index) {
                    return Ok(cut.clone());
                }
            }
        }
        let records = self.state.actions_range(&job.id, wave.first, wave.end)?;
        let cut = std::sync::Arc::new(chunks(&records, wave_task_steps(wave)));
        if let Ok(mut cuts) = self.wave_cuts.lock() {
            cuts.insert(job.id.clone(), (round, index, cut.clone()));
        }
        Ok(cut)
    }

    /// Forgets a finished recovery's cut.
    pub(super) fn forget_cut(&self, job_id: &str) {
        if let Ok(mut cuts) = self.wave_cuts.lock() {
            cuts.remove(job_id);
        }
    }

    /// The task numbers of the current wave's apply tasks that have a result, read from the
    /// results' keys (`apply.<number>`), so that no result is decoded: this runs after every
    /// result of a wave.
    fn wave_results(&self, job: &Job) -> Result<BTreeSet<u32>, EngineError> {
        let Some(p) = &job.recovery else {
            return Ok(BTreeSet::new());
        };
        let base = apply_number(p.round, p.wave, 0);
        let prefix = format!("{}.", TaskKind::Apply.as_str());
        Ok(self
            .state
            .task_result_keys(&job.id)?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.parse::<u32>().ok())
            .filter(|n| n & !0xffff == base)
            .collect())
    }

    /// A running recovery: waits for its wave, then starts the next wave, the second round,
    /// or finishes.
    pub(super) async fn advance_applying(
        &self,
        job: &Job,
        tenant: &TenantRecord,
        republish: bool,
    ) -> Result<(), EngineError> {
        match job.status {
            JobStatus::Running => {}
            // A dry run, or a plan with nothing to do, whose finish a crash interrupted (its
            // plan is persisted): it finishes now.
            JobStatus::Calculating => return self.finish_recovery(&job.id).await,
            // Awaiting approval: nothing moves until a decision.
            _ => return Ok(()),
        }
        let Some(progress) = job.recovery.clone() else {
            return Err(EngineError::Invalid(format!(
                "job {} has no recovery progress",
                job.id
            )));
        };
        let Some(wave) = progress.waves.get(progress.wave as usize).copied() else {
            return self.finish_recovery(&job.id).await;
        };
        let done = self.wave_results(job)?;
        if (done.len() as u32) < wave.tasks {
            // The window moves on as tasks report (and everything admitted goes again after
            // a restart).
            return self.publish_wave(job, tenant, republish, &done).await;
        }
        if progress.waves.len() > progress.wave as usize + 1 {
            let job = self
                .state
                .transition(&job.id, JobStatus::Running, |j| {
                    if let Some(r) = &mut j.recovery {
                        r.wave += 1;
                    }
                })
                .await?;
            let done = self.wave_results(&job)?;
            return self.publish_wave(&job, tenant, false, &done).await;
        }
        if progress.round == 1 && progress.two_rounds {
            let groups = self.settings.capture_groups.len() as u64;
            let snapshot = uuid::Uuid::new_v4().to_string();
            let job = self
                .state
                .transition(&job.id, JobStatus::Running, |j| {
                    j.phase = Phase::Capturing;
                    j.snapshot = Some(snapshot.clone());
                    j.tasks.total += groups;
                    if let Some(r) = &mut j.recovery {
                        r.round = 2;
                        r.snapshots.push(snapshot);
                        r.waves.clear();
                        r.wave = 0;
                    }
                })
                .await?;
            tracing::info!(tenant = %job.tenant, job = %job.id, "restores applied; capturing the restored objects for the second round");
            return self.publish_captures(&job, tenant, &BTreeMap::new()).await;
        }
        self.finish_recovery(&job.id).await
    }

    /// Stores the outcomes of an apply task's steps (before its result is recorded).
    pub(super) async fn record_applied(
        &self,
        job: &Job,
        result: &ApplyResult,
    ) -> Result<(), EngineError> {
        let outcomes: Vec<(u32, Outcome)> = result
            .steps
            .iter()
            .map(|(seq, r)| (*seq, outcome_of(r.clone())))
            .collect();
        for (_, o) in &outcomes {
            let label = match o {
                Outcome::Applied => m::action_outcome::APPLIED,
                Outcome::AlreadyInState => m::action_outcome::ALREADY_IN_STATE,
                Outcome::NotSent { .. } => m::action_outcome::NOT_SENT,
                _ => m::action_outcome::FAILED,
            };
            metrics::counter!(m::RECOVERY_ACTIONS_TOTAL, m::label::OUTCOME => label).increment(1);
        }
        let starter = job
            .recovery
            .as_ref()
            .and_then(|r| r.starter.clone())
            .unwrap_or(Actor::Coordinator);
        self.state
            .record_outcomes_by(&starter, &job.tenant, &job.id, outcomes)
            .await?;
        Ok(())
    }

    fn tally(&self, job_id: &str) -> Result<Tally, EngineError> {
        let mut t = Tally::default();
        let mut modified = BTreeSet::new();
        self.state.for_each_action(job_id, |a| {
            match &a.outcome {
                Outcome::Planned => t.planned += 1,
                Outcome::Applied => {
                    t.applied += 1;
                    modified.insert(a.object_id);
                    if a.step.as_ref().is_some_and(|s| link_target(s).is_some()) {
                        t.links_modified += 1;
                    }
                }
                Outcome::AlreadyInState => t.already += 1,
                Outcome::Skipped { .. } => t.skipped += 1,
                Outcome::Failed { .. } => t.failed += 1,
                Outcome::NotSent { .. } => t.not_sent += 1,
            }
            Ok(())
        })?;
        t.objects_modified = modified.len() as u64;
        Ok(t)
    }

    /// Counts a recovery's actions into its record and makes it successful ("completed with
    /// warnings" when some changes failed).
    async fn finish_recovery(&self, job_id: &str) -> Result<(), EngineError> {
        self.forget_cut(job_id);
        if self.state.get_job(job_id)?.status.is_terminal() {
            return Ok(());
        }
        let t = self.tally(job_id)?;
        let job = self
            .state
            .transition(job_id, JobStatus::Successful, |j| {
                j.phase = Phase::Done;
                t.put(j);
            })
            .await?;
        count_status(&job);
        tracing::info!(tenant = %job.tenant, job = %job.id, applied = t.applied, already = t.already, failed = t.failed, skipped = t.skipped, "recovery finished");
        Ok(())
    }

    /// Cancels a running recovery: it is marked stopping (durably, naming `actor`), its stop
    /// signal is set for every worker's gate, its queued batches are purged, and it is
    /// abandoned once no batch of it can still be in flight ([`Engine::advance_stopping`],
    /// also run every quarter second by [`Engine::run`]). Nothing is written after it
    /// reports `abandoned`.
    pub(super) async fn stop_recovery(&self, actor: &Actor, job: &Job) -> Result<Job, EngineError> {
        let job = self
            .state
            .transition_by(actor, &job.id, JobStatus::Running, |j| {
                j.phase = Phase::Stopping;
                j.error = Some(format!("canceled by {actor}"));
            })
            .await?;
        self.advance_stopping(&job).await?;
        Ok(self.state.get_job(&job.id)?)
    }

    /// Every recovery that is stopping, moved on (see [`Engine::advance_stopping`]).
    pub(super) async fn advance_stopping_jobs(&self) {
        let Ok(open) = self.state.open_jobs() else {
            return;
        };
        for job in open.iter().filter(|j| j.phase == Phase::Stopping) {
            if let Err(e) = self.advance_stopping(job).await {
                tracing::warn!(job = %job.id, error = %e, "a canceled recovery cannot stop yet");
            }
        }
    }

    /// A stopping recovery: its stop signal set (again: idempotent, and needed after a
    /// restart), its queued batches purged; abandoned once no task of it holds a write lease.
    pub(super) async fn advance_stopping(&self, job: &Job) -> Result<(), EngineError> {
        self.budgets.stop(&job.id).await?;
        self.purge_tasks(job).await;
        let in_flight = self.budgets.in_flight(&job.id).await?;
        if in_flight > 0 {
            tracing::info!(job = %job.id, in_flight, "canceled recovery: waiting for batches in flight");
            return Ok(());
        }
        self.advance_stopping_by(&Actor::Coordinator, job).await
    }

    /// Once no batch of a canceled recovery can still be in flight, it is abandoned with its
    /// counts (what was applied stays, and is listed; what was never sent stays planned).
    async fn advance_stopping_by(&self, actor: &Actor, job: &Job) -> Result<(), EngineError> {
        self.forget_cut(&job.id);
        let t = self.tally(&job.id)?;
        let job = self
            .state
            .transition_by(actor, &job.id, JobStatus::Abandoned, |j| t.put(j))
            .await?;
        count_status(&job);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_common::model::ObjectType;
    use rewind_common::ObjectId;

    fn record(seq: u32, object: u128, step: Step) -> ActionRecord {
        ActionRecord {
            seq,
            action_id: format!("a{seq}"),
            round: 1,
            wave: Some(LAST_WAVE),
            object_id: ObjectId(object),
            object_type: ObjectType::Group,
            display_name: String::new(),
            step: Some(step),
            note: None,
            values: Vec::new(),
            outcome: Outcome::Planned,
            at: None,
        }
    }

    fn member(object: u128, target: u128, add: bool) -> Step {
        let (id, target) = (ObjectId(object), ObjectId(target));
        if add {
            Step::AddLink {
                id,
                object_type: ObjectType::Group,
                kind: LinkKind::Members,
                target,
                data: None,
            }
        } else {
            Step::RemoveLink {
                id,
                object_type: ObjectType::Group,
                kind: LinkKind::Members,
                target,
            }
        }
    }

    #[test]
    fn tasks_are_cut_between_objects_and_never_inside_one_link() {
        // 300 groups of 3 steps: cut between groups, never inside one.
        let mut records = Vec::new();
        for g in 0..300u128 {
            for t in 0..3u128 {
                records.push(record(
                    records.len() as u32,
                    g + 1,
                    member(g + 1, 1000 + t, true),
                ));
            }
        }
        let cut = chunks(&records, TASK_STEPS);
        assert!(cut.len() >= 2, "{cut:?}");
        for r in &cut {
            assert!(r.len() <= TASK_STEPS + 2);
            if r.start > 0 {
                assert_ne!(records[r.start].object_id, records[r.start - 1].object_id);
            }
        }
        assert_eq!(cut.iter().map(|r| r.len()).sum::<usize>(), records.len());
        // One giant group: cut at link boundaries past four tasks' worth, a remove and an add
        // of the same member staying together.
        let mut big = Vec::new();
        for t in 0..(5 * TASK_STEPS as u128) {
            big.push(record(big.len() as u32, 7, member(7, t, false)));
            big.push(record(big.len() as u32, 7, member(7, t, true)));
        }
        let cut = chunks(&big, TASK_STEPS);
        assert!(cut.len() >= 2, "{cut:?}");
        for r in &cut[1..] {
            let (a, b) = (&big[r.start - 1], &big[r.start]);
            assert_ne!(
                a.step.as_ref().and_then(link_target),
                b.step.as_ref().and_then(link_target)
            );
        }
        assert_eq!(chunks(&big, TASK_STEPS), cut, "deterministic");
    }

    /// A wave is cut so that each of the tenant's app registrations gets a task, and never
    /// beyond the task limit.
    #[test]
    fn every_app_gets_a_task_of_a_wave() {
        let records: Vec<ActionRecord> = (0..500u32)
            .map(|i| record(i, u128::from(i) + 1, member(u128::from(i) + 1, 9, true)))
            .collect();
        for (apps, tasks) in [(1, 2), (3, 3), (4, 4), (16, 16)] {
            let cut = chunks(&records, task_steps(records.len(), apps, TASK_STEPS));
            assert_eq!(cut.len(), tasks, "{apps} apps: {cut:?}");
            assert_eq!(cut.iter().map(|r| r.len()).sum::<usize>(), records.len());
        }
        // 27 tasks of 371 (the apps even), not 25 of 400 (one app with a task more).
        assert_eq!(task_steps(10_000, 3, TASK_STEPS), 371);
        assert_eq!(task_steps(10_000, 1, TASK_STEPS), TASK_STEPS);
        assert_eq!(task_steps(1_200, 3, TASK_STEPS), TASK_STEPS);
        assert_eq!(task_steps(2, 3, TASK_STEPS), 1);
        assert_eq!(task_steps(0, 3, TASK_STEPS), 1);
        // A smaller limit (the engine's setting): 757 steps of 1 app in 38 tasks of 20.
        assert_eq!(task_steps(757, 1, 20), 20);
        assert_eq!(task_steps(757, 1, 0), 1);
        let mut waves = vec![Wave {
            key: LAST_WAVE,
            tasks: 0,
            first: 0,
            end: 500,
            task_steps: 0,
            published: None,
        }];
        cut_waves(&records, 0, &mut waves, 3, TASK_STEPS);
        assert_eq!((waves[0].tasks, waves[0].task_steps), (3, 167));
        assert_eq!(waves[0].published, Some(0), "published a few at a time");
        // Two tasks per app, more for a budget one task cannot keep up with, at most 32.
        assert_eq!(apply_window(1, 20), 2);
        assert_eq!(apply_window(3, 200), 6);
        assert_eq!(apply_window(1, 5_000), 7);
        assert_eq!(apply_window(1, 100_000), MAX_APPLY_WINDOW);
        let old = Wave {
            task_steps: 0,
            ..waves[0]
        };
        assert_eq!(wave_task_steps(&old), TASK_STEPS, "jobs planned before");
    }

    #[test]
    fn waves_put_newcomers_first_then_restores_by_type_then_the_rest() {
        let restore = |t| PlannedStep {
            action_id: String::new(),
            step: Step::Restore {
                id: ObjectId(1),
                object_type: t,
            },
            note: None,
        };
        assert!(wave_of(&restore(ObjectType::Group)) < wave_of(&restore(ObjectType::Application)));
        assert!(
            wave_of(&restore(ObjectType::Application))
                < wave_of(&restore(ObjectType::ServicePrincipal))
        );
        let mut early = PlannedStep {
            action_id: String::new(),
            step: Step::SoftDelete {
                id: ObjectId(2),
                object_type: ObjectType::User,
            },
            note: None,
        };
        assert_eq!(wave_of(&early), LAST_WAVE);
        early.note = Some("in the way".into());
        assert_eq!(wave_of(&early), 0);
        assert_eq!(apply_number(2, 3, 4) >> 24, 2);
        assert_eq!((apply_number(2, 3, 4) >> 16) & 0xff, 3);
    }
}
