//! Jobs as data: the job record, its one transition function, at most one open job per tenant,
//! task results counted exactly once, and a report's entries paged by cursor.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use rewind_common::report::Scope;
use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditEntry, Subject};
use super::{decode, encode, now, pair_key, prefix, tree, State, StateError};

/// What a job does. Externally tagged on purpose: an internally tagged enum is buffered by
/// serde, which loses rmp-serde's compact (not human-readable) form of the scope's ids and types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// Capture the tenant into a new backup snapshot.
    Backup,
    /// A difference report: a live snapshot of `scope` compared with the backup `backup`.
    Report { backup: String, scope: Scope },
    /// A recovery of `scope` back to the snapshot `backup` (a backup, or the pre-recovery
    /// snapshot of the recovery it undoes), planned against the present.
    Recovery {
        backup: String,
        scope: Scope,
        /// The report whose scope it took (for the history; the plan never reads the report).
        #[serde(default)]
        from_report: Option<String>,
        /// Plan only: nothing is applied and no approval is needed.
        #[serde(default)]
        dry_run: bool,
        /// The recovery this one undoes (from its pre-recovery snapshot).
        #[serde(default)]
        undo_of: Option<String>,
    },
}

impl JobKind {
    /// The backup snapshot the job reads, if any.
    pub fn backup(&self) -> Option<&str> {
        match self {
            JobKind::Backup => None,
            JobKind::Report { backup, .. } | JobKind::Recovery { backup, .. } => Some(backup),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Report { .. } => "report",
            JobKind::Recovery { .. } => "recovery",
        }
    }

    /// The scope of a report or a recovery.
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            JobKind::Backup => None,
            JobKind::Report { scope, .. } | JobKind::Recovery { scope, .. } => Some(scope),
        }
    }
}

/// A job's status, in Microsoft's `recoveryStatus` values. `unknownFutureValue` is only an
/// answer of the API (to clients that do not ask for the newer members), never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    Initialized,
    LoadingData,
    Calculating,
    Running,
    Successful,
    Failed,
    Abandoned,
    /// A recovery planned above its tenant's approval threshold waits for a second
    /// administrator (Rewind's extension; an `unknownFutureValue` to clients that do not ask
    /// for the newer members).
    AwaitingApproval,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Initialized,
        JobStatus::LoadingData,
        JobStatus::Calculating,
        JobStatus::Running,
        JobStatus::Successful,
        JobStatus::Failed,
        JobStatus::Abandoned,
        JobStatus::AwaitingApproval,
    ];

    /// Successful, failed and abandoned jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Successful | JobStatus::Failed | JobStatus::Abandoned
        )
    }

    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Initialized => "initialized",
            JobStatus::LoadingData => "loadingData",
            JobStatus::Calculating => "calculating",
            JobStatus::Running => "running",
            JobStatus::Successful => "successful",
            JobStatus::Failed => "failed",
            JobStatus::Abandoned => "abandoned",
            JobStatus::AwaitingApproval => "awaitingApproval",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rewind's finer step within a status (not validated against the status: it is for people
/// and for resuming).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Created, nothing dispatched yet.
    Pending,
    /// Capture tasks (a backup's, or a report's live snapshot) are out.
    Capturing,
    /// The manifest is being sealed.
    Sealing,
    /// A report's backup shards are being loaded.
    Loading,
    /// A report's diff tasks are out.
    Diffing,
    /// A recovery's plan is being made and persisted.
    Planning,
    /// A recovery's action batches are out (wave by wave).
    Applying,
    /// A canceled recovery waits for the batches in flight to stop before it is abandoned.
    Stopping,
    /// Finished successfully.
    Done,
}

/// One wave of a recovery's actions: its tasks run side by side, and the next wave starts once
/// every task of this one has reported (restores of groups before applications before service
/// principals ...; the updates and links last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// The wave's place in the plan ([`crate::recovery::wave_of`]).
    pub key: u16,
    pub tasks: u32,
    /// The action sequence numbers of the wave: `first..end`.
    pub first: u32,
    pub end: u32,
    /// The most steps one of its tasks takes, fixed when planned (0 in jobs of builds before
    /// it: the engine's default).
    #[serde(default)]
    pub task_steps: u32,
    /// How many of its tasks (in order) were published: a wave's tasks are published a few
    /// at a time, as the earlier ones report (absent in jobs of builds before it: all at
    /// once).
    #[serde(default)]
    pub published: Option<u32>,
}

/// A decision on a recovery waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub approved: bool,
    /// The deciding token's id and name.
    pub by_id: String,
    pub by_name: String,
    pub at: i64,
}

/// Where a recovery is: its round (1: planned from the first capture; 2: re-planned after the
/// restores, from a capture that sees the restored objects' links), its waves, its snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryProgress {
    pub round: u8,
    /// The wave being applied (an index into `waves`).
    pub wave: u32,
    pub waves: Vec<Wave>,
    /// The live snapshot of each round; the first is the pre-recovery snapshot.
    pub snapshots: Vec<String>,
    /// The next free action sequence number.
    pub next_seq: u32,
    /// Distinct objects the first plan modifies (what the approval threshold counts).
    pub objects: u64,
    /// Who started it (named in the audit records of its actions; a token that started a
    /// recovery may not approve it).
    pub starter: Option<Actor>,
    pub needs_approval: bool,
    pub approval: Option<Approval>,
    /// Whether the first round holds only the restores (and the newcomers they need
    /// soft-deleted first): a second round then plans the rest.
    pub two_rounds: bool,
}

/// How many tasks the job dispatched and how many have a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub total: u64,
    pub done: u64,
}

/// One job as stored. Changed only by [`State::transition`] (and, for `tasks.done`,
/// [`State::record_task_result`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// A uuid v4, as text.
    pub id: String,
    pub tenant: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub phase: Phase,
    pub tasks: TaskCounts,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    /// The snapshot id the job reads (a report's backup).
    pub backup: Option<String>,
    /// The snapshot id the job produced: the backup, or a report's live snapshot.
    pub snapshot: Option<String>,
    /// Aggregated result counts (e.g. report entries by recovery action).
    pub counts: BTreeMap<String, u64>,
    /// How many times the coordinator resumed it after a restart.
    pub resumes: u32,
    /// A recovery's progress (absent for backups and reports).
    #[serde(default)]
    pub recovery: Option<RecoveryProgress>,
}

impl Job {
    /// Every snapshot the job produced or was producing, each once: its current one, then a
    /// recovery's others (pre-recovery, and each round's live one).
    pub fn snapshots(&self) -> Vec<&String> {
        let mut ids: Vec<&String> = self.snapshot.iter().collect();
        if let Some(r) = &self.recovery {
            ids.extend(
                r.snapshots
                    .iter()
                    .filter(|s| Some(*s) != self.snapshot.as_ref()),
            );
        }
        ids
    }
}

/// Whether `kind` may go from `from` to `to`. Staying in a non-terminal status (to update the
/// phase or counts) is allowed; a terminal status never changes.
pub fn allowed(kind: &JobKind, from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    if from.is_terminal() {
        return false;
    }
    if from == to || matches!(to, Failed | Abandoned) {
        return true;
    }
    match kind {
        JobKind::Backup => matches!((from, to), (Initialized, Running) | (Running, Successful)),
        JobKind::Report { .. } => matches!(
            (from, to),
            (Initialized, LoadingData) | (LoadingData, Calculating) | (Calculating, Successful)
        ),
        // A dry run, or a plan with nothing to do, ends at `calculating`.
        JobKind::Recovery { .. } => matches!(
            (from, to),
            (Initialized, LoadingData)
                | (LoadingData, Calculating)
                | (Calculating, AwaitingApproval | Running | Successful)
                | (AwaitingApproval, Running)
                | (Running, Successful)
        ),
    }
}

/// Whether a task result was new or had been recorded already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Stored now, and counted in `tasks.done`.
    First,
    /// Already stored: nothing changed.
    Duplicate,
}

/// Entries of a report, each with its cursor, and whether more follow.
pub type EntriesAfter = (Vec<(EntryCursor, Vec<u8>)>, bool);

/// A position in a report's entries: the last entry of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryCursor {
    pub range: u32,
    pub seq: u32,
}

impl EntryCursor {
    /// 16 hex characters, for a `$skiptoken`.
    pub fn to_token(self) -> String {
        format!("{:08x}{:08x}", self.range, self.seq)
    }

    pub fn from_token(token: &str) -> Result<EntryCursor, StateError> {
        let bad = || StateError::invalid("cursor", format!("{token:?}"), "not a page token");
        if token.len() != 16 || !token.is_ascii() {
            return Err(bad());
        }
        let range = u32::from_str_radix(&token[..8], 16).map_err(|_| bad())?;
        let seq = u32::from_str_radix(&token[8..], 16).map_err(|_| bad())?;
        Ok(EntryCursor { range, seq })
    }
}

fn entry_key(job: &str, range: u32, seq: u32) -> Vec<u8> {
    let mut pos = [0u8; 8];
    pos[..4].copy_from_slice(&range.to_be_bytes());
    pos[4..].copy_from_slice(&seq.to_be_bytes());
    pair_key(job, &pos)
}

/// The cursor of an entry key under `job`'s prefix.
fn entry_cursor(prefix_len: usize, key: &[u8]) -> Option<EntryCursor> {
    let pos = key.get(prefix_len..)?;
    let range = u32::from_be_bytes(pos.get(..4)?.try_into().ok()?);
    let seq = u32::from_be_bytes(pos.get(4..8)?.try_into().ok()?);
    Some(EntryCursor { range, seq })
}

/// The key just past every key that starts with `prefix` (which ends in NUL).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn validate_task_key(task_key: &str) -> Result<(), StateError> {
    if task_key.is_empty() || task_key.len() > 512 {
        return Err(StateError::invalid(
            "taskKey",
            format!("{task_key:?}"),
            "must be 1 to 512 bytes",
        ));
    }
    Ok(())
}

impl State {
    /// Opens a job for `tenant`; refused with [`StateError::Conflict`] naming the open job when
    /// the tenant has one. A report's backup must be a snapshot of the tenant.
    pub async fn create_job(&self, tenant: &str, kind: JobKind) -> Result<Job, StateError> {
        self.create_job_by(&Actor::Coordinator, tenant, kind).await
    }

    /// [`State::create_job`] on behalf of `actor`, who is named in the job's audit record.
    pub async fn create_job_by(
        &self,
        actor: &Actor,
        tenant: &str,
        kind: JobKind,
    ) -> Result<Job, StateError> {
        let created_at = now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: tenant.to_owned(),
            backup: kind.backup().map(str::to_owned),
            kind,
            status: JobStatus::Initialized,
            phase: Phase::Pending,
            tasks: TaskCounts::default(),
            created_at,
            updated_at: created_at,
            finished_at: None,
            error: None,
            snapshot: None,
            counts: BTreeMap::new(),
            resumes: 0,
            recovery: None,
        };
        let mut job = job;
        if matches!(job.kind, JobKind::Recovery { .. }) {
            job.recovery = Some(RecoveryProgress {
                starter: Some(actor.clone()),
                ..RecoveryProgress::default()
            });
        }
        let bytes = encode(tree::JOBS, job.id.as_bytes(), &job)?;
        let index_key = pair_key(tenant, &self.next_seq()?.to_be_bytes());
        {
            // Under the write lock, so that retention cannot remove the backup meanwhile.
            let guard = self.lock();
            if let Some(backup) = job.kind.backup() {
                self.get_snapshot(tenant, backup)?;
            }
            // Under the write lock, no other writer can come between the checks and the
            // writes. The job and its index go first: a crash before the tenant's mark leaves
            // an open job that [`State::repair`] marks at the next open.
            if self.tenants.get(tenant.as_bytes())?.is_none() {
                return Err(StateError::not_found("tenant", tenant));
            }
            if let Some(running) = self.active_by_tenant.get(tenant.as_bytes())? {
                return Err(StateError::Conflict {
                    tenant: tenant.to_owned(),
                    running_job: String::from_utf8_lossy(&running).into_owned(),
                });
            }
            let mut entry = AuditEntry::new(actor, "job.created", Subject::job(tenant, &job.id))
                .with("kind", job.kind.name());
            if let Some(backup) = job.kind.backup() {
                entry = entry.with("backup", backup);
            }
            if let JobKind::Recovery {
                scope,
                from_report,
                dry_run,
                undo_of,
                ..
            } = &job.kind
            {
                entry = entry
                    .with("scope", scope.describe())
                    .with("dryRun", dry_run);
                if let Some(r) = from_report {
                    entry = entry.with("fromReport", r);
                }
                if let Some(u) = undo_of {
                    entry = entry.with("undoOf", u);
                }
            }
            self.append_audit(&guard, entry)?;
            self.jobs.insert(job.id.as_bytes(), bytes)?;
            self.jobs_by_tenant
                .insert(index_key.as_slice(), job.id.as_bytes())?;
            self.active_by_tenant
                .insert(tenant.as_bytes(), job.id.as_bytes())?;
        }
        self.flush().await?;
        Ok(job)
    }

    /// THE way a job changes: checks the edge `job.status → to` for the job's kind, applies
    /// `edit` (which may change anything but the id, tenant, kind, status and creation time),
    /// writes, frees the tenant on a terminal status, flushes, and returns the new record.
    /// `edit` runs under the store's write lock: it must not call the state's write methods.
    pub async fn transition(
        &self,
        job_id: &str,
        to: JobStatus,
        edit: impl FnOnce(&mut Job),
    ) -> Result<Job, StateError> {
        self.transition_by(&Actor::Coordinator, job_id, to, edit)
            .await
    }

    /// [`State::transition`] on behalf of `actor` (a cancel through the API names its token).
    pub async fn transition_by(
        &self,
        actor: &Actor,
        job_id: &str,
        to: JobStatus,
        edit: impl FnOnce(&mut Job),
    ) -> Result<Job, StateError> {
        let job = {
            let guard = self.lock();
            let old = self.get_job(job_id)?;
            if !allowed(&old.kind, old.status, to) {
                return Err(StateError::Transition {
                    job: job_id.to_owned(),
                    from: old.status,
                    to,
                });
            }
            let mut job = old.clone();
            edit(&mut job);
            if job.id != old.id
                || job.tenant != old.tenant
                || job.kind != old.kind
                || job.created_at != old.created_at
                || job.status != old.status
            {
                return Err(StateError::invalid(
                    "job",
                    job_id,
                    "a transition's edit cannot change the id, tenant, kind, status or creation time",
                ));
            }
            job.status = to;
            job.updated_at = now().max(old.updated_at);
            if to.is_terminal() {
                job.finished_at = Some(job.updated_at);
                if to == JobStatus::Successful {
                    job.phase = Phase::Done;
                }
            }
            // Only a change of status is audited, not a progress edit within one.
            if old.status != to {
                let mut entry =
                    AuditEntry::new(actor, "job.status", Subject::job(&job.tenant, &job.id))
                        .with("from", old.status)
                        .with("to", to);
                if let Some(error) = &job.error {
                    entry = entry.with("error", error);
                }
                self.append_audit(&guard, entry)?;
            }
            self.write_job(&job)?;
            job
        };
        self.flush().await?;
        Ok(job)
    }

    /// Writes a job, then frees its tenant when it is terminal. Called under the write lock.
    /// The job first: a crash between the two leaves a terminal job marked active, which
    /// [`State::repair`] clears at the next open.
    fn write_job(&self, job: &Job) -> Result<(), StateError> {
        let bytes = encode(tree::JOBS, job.id.as_bytes(), job)?;
        self.jobs.insert(job.id.as_bytes(), bytes)?;
        if job.status.is_terminal() {
            let _ = self.active_by_tenant.compare_and_swap(
                job.tenant.as_bytes(),
                Some(job.id.as_bytes()),
                None as Option<&[u8]>,
            )?;
        }
        Ok(())
    }

    pub fn get_job(&self, job_id: &str) -> Result<Job, StateError> {
        match self.jobs.get(job_id.as_bytes())? {
            Some(bytes) => decode(tree::JOBS, job_id.as_bytes(), &bytes),
            None => Err(StateError::not_found("job", job_id)),
        }
    }

    /// Every job that is not terminal (at most one per tenant), for resuming after a restart.
    pub fn open_jobs(&self) -> Result<Vec<Job>, StateError> {
        let mut open = Vec::new();
        for item in self.active_by_tenant.iter() {
            let (_, job_id) = item?;
            let job_id = String::from_utf8_lossy(&job_id).into_owned();
            open.push(self.get_job(&job_id)?);
        }
        Ok(open)
    }

    /// The open job of `tenant`, if any.
    pub fn open_job(&self, tenant: &str) -> Result<Option<Job>, StateError> {
        match self.active_by_tenant.get(tenant.as_bytes())? {
            Some(job_id) => Ok(Some(self.get_job(&String::from_utf8_lossy(&job_id))?)),
            None => Ok(None),
        }
    }

    /// A tenant's jobs, newest first.
    pub fn list_jobs(&self, tenant: &str) -> Result<Vec<Job>, StateError> {
        self.jobs_by_tenant
            .scan_prefix(prefix(tenant))
            .rev()
            .map(|item| {
                let (_, job_id) = item?;
                self.get_job(&String::from_utf8_lossy(&job_id))
            })
            .collect()
    }

    /// Stores the result of one task of a job exactly once: a second result under the same
    /// task key changes nothing and is [`RecordOutcome::Duplicate`]. A first result also counts
    /// in the job's `tasks.done`, in the same transaction and flush. A job that is finished
    /// takes no new results.
    pub async fn record_task_result(
        &self,
        job_id: &str,
        task_key: &str,
        result_bytes: &[u8],
    ) -> Result<RecordOutcome, StateError> {
        validate_task_key(task_key)?;
        let key = pair_key(job_id, task_key.as_bytes());
        let outcome = {
            let _guard = self.lock();
            let stamp = now();
            // The result first, then the count: a crash between the two leaves a count one
            // short, which [`State::repair`] recounts at the next open.
            if self.task_results.get(key.as_slice())?.is_some() {
                RecordOutcome::Duplicate
            } else {
                let mut job = self.get_job(job_id)?;
                if job.status.is_terminal() {
                    return Err(StateError::Refused {
                        what: "task result of job",
                        id: job_id.to_owned(),
                        reason: format!("the job is {}", job.status),
                    });
                }
                job.tasks.done += 1;
                job.updated_at = stamp.max(job.updated_at);
                let bytes = encode(tree::JOBS, job_id.as_bytes(), &job)?;
                self.task_results.insert(key.as_slice(), result_bytes)?;
                self.jobs.insert(job_id.as_bytes(), bytes)?;
                RecordOutcome::First
            }
        };
        // A duplicate flushes too: the first copy may not be on disk yet, and the caller acks
        // the message once this returns.
        self.flush().await?;
        Ok(outcome)
    }

    /// A job's task results, by task key.
    pub fn task_results(&self, job_id: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let prefix = prefix(job_id);
        self.task_results
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                let task = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                Ok((task, value.to_vec()))
            })
            .collect()
    }

    /// The task keys of a job's results, without reading the results.
    pub fn task_result_keys(&self, job_id: &str) -> Result<Vec<String>, StateError> {
        let prefix = prefix(job_id);
        self.task_results
            .scan_prefix(&prefix)
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Stores the encoded entries of one range of a report (a shard's diff result), in order.
    /// Putting a range again replaces it, so a redelivered result leaves the same entries.
    pub async fn put_report_entries(
        &self,
        job_id: &str,
        range: u32,
        entries: Vec<Vec<u8>>,
    ) -> Result<(), StateError> {
        let seqs = u32::try_from(entries.len()).map_err(|_| {
            StateError::invalid("entries", entries.len(), "at most 2^32-1 entries per range")
        })?;
        let mut range_prefix = prefix(job_id);
        range_prefix.extend_from_slice(&range.to_be_bytes());
        {
            let _guard = self.lock();
            let job = self.get_job(job_id)?;
            if !matches!(job.kind, JobKind::Report { .. }) || job.status.is_terminal() {
                return Err(StateError::Refused {
                    what: "report entries of job",
                    id: job_id.to_owned(),
                    reason: format!("it is a {} job, {}", job.kind.name(), job.status),
                });
            }
            // Plain writes, no batch (see [`State`]): a crash midway leaves the range partly
            // put, and the result that put it is not recorded yet, so its redelivery puts it
            // again whole.
            let stale: Vec<sled::IVec> = self
                .report_entries
                .scan_prefix(&range_prefix)
                .keys()
                .filter(|k| {
                    k.as_ref().is_ok_and(|key| {
                        entry_cursor(range_prefix.len() - 4, key).is_some_and(|c| c.seq >= seqs)
                    })
                })
                .collect::<Result<_, _>>()?;
            for key in stale {
                self.report_entries.remove(key)?;
            }
            for (seq, entry) in (0..seqs).zip(entries) {
                self.report_entries
                    .insert(entry_key(job_id, range, seq), entry)?;
            }
        }
        self.flush().await
    }

    /// One page of a report's entries after `after` (from the start when `None`), in (range,
    /// seq) order, and the cursor of the next page when there are more. Its cost is that of the
    /// page: a range scan from the cursor's key.
    pub fn report_entries_page(
        &self,
        job_id: &str,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<EntryCursor>), StateError> {
        let (entries, more) = self.report_entries_after(job_id, after, limit.max(1))?;
        let next = if more {
            entries.last().map(|(c, _)| *c)
        } else {
            None
        };
        Ok((entries.into_iter().map(|(_, e)| e).collect(), next))
    }

    /// Up to `limit` entries of a report after `after` (from the start when `None`), each with
    /// its cursor, and whether more follow. One range scan from the cursor's key.
    pub fn report_entries_after(
        &self,
        job_id: &str,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<EntriesAfter, StateError> {
        let prefix = prefix(job_id);
        let end = Bound::Excluded(prefix_end(&prefix));
        let start = match after {
            Some(c) => Bound::Excluded(entry_key(job_id, c.range, c.seq)),
            None => Bound::Included(prefix.clone()),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for item in self.report_entries.range::<Vec<u8>, _>((start, end)) {
            let (key, value) = item?;
            if page.len() == limit {
                return Ok((page, true));
            }
            let cursor = entry_cursor(prefix.len(), &key).ok_or_else(|| StateError::Decode {
                tree: tree::REPORT_ENTRIES,
                key: super::key_text(&key),
                reason: "not an entry key".into(),
            })?;
            page.push((cursor, value.to_vec()));
        }
        Ok((page, false))
    }

    /// How many entries a report holds (a scan: for tests and exports, not for paging).
    pub fn report_entry_count(&self, job_id: &str) -> Result<u64, StateError> {
        let mut n = 0;
        for item in self.report_entries.scan_prefix(prefix(job_id)) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes a finished report or recovery: its entries, its task results, its actions and
    /// its job record. Refused while the job is open. Its live snapshot goes through [`State::remove_snapshot`].
    pub async fn delete_report(&self, job_id: &str) -> Result<(), StateError> {
        {
            let guard = self.lock();
            let job = self.get_job(job_id)?;
            if matches!(job.kind, JobKind::Backup) {
                return Err(StateError::Refused {
                    what: "deleting job",
                    id: job_id.to_owned(),
                    reason: "it is a backup job, not a report or a recovery".into(),
                });
            }
            if !job.status.is_terminal() {
                return Err(StateError::Conflict {
                    tenant: job.tenant,
                    running_job: job.id,
                });
            }
            let prefix = prefix(job_id);
            let entries: Vec<sled::IVec> = self
                .report_entries
                .scan_prefix(&prefix)
                .keys()
                .collect::<Result<_, _>>()?;
            let results: Vec<sled::IVec> = self
                .task_results
                .scan_prefix(&prefix)
                .keys()
                .collect::<Result<_, _>>()?;
            let actions: Vec<sled::IVec> = self
                .recovery_actions
                .scan_prefix(&prefix)
                .keys()
                .collect::<Result<_, _>>()?;
            let mut index = None;
            for item in self.jobs_by_tenant.scan_prefix(super::prefix(&job.tenant)) {
                let (key, value) = item?;
                if value.as_ref() == job_id.as_bytes() {
                    index = Some(key);
                    break;
                }
            }
            // The sweep of its blobs, then the index and the job record go first: a crash
            // after them leaves only unreachable entries and results (keyed by the job id,
            // never reused), and blobs the next sweep deletes.
            self.record_sweep(
                &guard,
                rewind_common::wire::report_prefix(&job.tenant, job_id),
                super::SweepOwner::Job {
                    id: job_id.to_owned(),
                },
                0,
            )?;
            if let Some(key) = &index {
                self.jobs_by_tenant.remove(key)?;
            }
            self.jobs.remove(job_id.as_bytes())?;
            for key in entries {
                self.report_entries.remove(key)?;
            }
            for key in results {
                self.task_results.remove(key)?;
            }
            for key in actions {
                self.recovery_actions.remove(key)?;
            }
        }
        self.flush().await
    }

    /// A tenant's finished recoveries older than its recovery `history_days` at `now`: each
    /// is deleted with [`State::delete_report`] (its actions with it) and its snapshots
    /// removed.
    pub fn expired_recoveries(&self, tenant: &str, now: i64) -> Result<Vec<Job>, StateError> {
        let record = self.get_tenant(tenant)?;
        let cutoff = now.saturating_sub(i64::from(record.recovery.history_days) * 86_400);
        Ok(self
            .list_jobs(tenant)?
            .into_iter()
            .filter(|job| {
                matches!(job.kind, JobKind::Recovery { .. })
                    && job.status.is_terminal()
                    && job.finished_at.unwrap_or(job.updated_at) < cutoff
            })
            .collect())
    }

    /// A tenant's finished reports older than its `report_retention_days` at `now`: each is
    /// deleted with [`State::delete_report`] and its live snapshot removed.
    pub fn expired_reports(&self, tenant: &str, now: i64) -> Result<Vec<Job>, StateError> {
        let record = self.get_tenant(tenant)?;
        let cutoff = now.saturating_sub(i64::from(record.report_retention_days) * 86_400);
        Ok(self
            .list_jobs(tenant)?
            .into_iter()
            .filter(|job| {
                matches!(job.kind, JobKind::Report { .. })
                    && job.status.is_terminal()
                    && job.finished_at.unwrap_or(job.updated_at) < cutoff
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_microsoft_spells_them() {
        let names: Vec<String> = JobStatus::ALL
            .iter()
            .map(|s| {
                let json = rmp_serde::to_vec_named(s).unwrap();
                let back: String = rmp_serde::from_slice(&json).unwrap();
                assert_eq!(back, s.as_str());
                back
            })
            .collect();
        assert_eq!(
            names,
            [
                "initialized",
                "loadingData",
                "calculating",
                "running",
                "successful",
                "failed",
                "abandoned",
                "awaitingApproval"
            ]
        );
    }

    #[test]
    fn every_kind_and_scope_round_trips_as_stored() {
        use rewind_common::model::ObjectType;
        let id: rewind_common::ObjectId = "00000000-0000-0000-0000-0000000000ff".parse().unwrap();
        for kind in [
            JobKind::Backup,
            JobKind::Report {
                backup: "b1".into(),
                scope: Scope::All,
            },
            JobKind::Report {
                backup: "b1".into(),
                scope: Scope::types([ObjectType::User, ObjectType::Group]).unwrap(),
            },
            JobKind::Report {
                backup: "b1".into(),
                scope: Scope::ids([id]).unwrap(),
            },
        ] {
            let job = Job {
                id: "j".into(),
                tenant: "acme".into(),
                backup: kind.backup().map(str::to_owned),
                kind,
                status: JobStatus::LoadingData,
                phase: Phase::Loading,
                tasks: TaskCounts { total: 3, done: 1 },
                created_at: 1,
                updated_at: 2,
                finished_at: None,
                error: Some("e".into()),
                snapshot: Some("l1".into()),
                counts: [("update".to_string(), 4)].into_iter().collect(),
                resumes: 1,
                recovery: None,
            };
            let bytes = encode(tree::JOBS, b"j", &job).unwrap();
            let back: Job = decode(tree::JOBS, b"j", &bytes).unwrap();
            assert_eq!(back, job);
        }
    }

    #[test]
    fn cursor_tokens_round_trip() {
        let c = EntryCursor {
            range: 7,
            seq: 0xdead_beef,
        };
        assert_eq!(EntryCursor::from_token(&c.to_token()).unwrap(), c);
        assert!(EntryCursor::from_token("nope").is_err());
        assert!(EntryCursor::from_token("zzzzzzzzzzzzzzzz").is_err());
    }

    #[test]
    fn entry_keys_sort_by_range_then_seq() {
        let a = entry_key("j", 1, 500);
        let b = entry_key("j", 2, 0);
        let c = entry_key("j", 2, 1);
        assert!(a < b && b < c);
        assert!(prefix_end(&prefix("j")) > entry_key("j", u32::MAX, u32::MAX));
    }
}
