//! A recovery's actions: every planned step (and every change the plan skips, with the reason)
//! is one record, persisted before anything is applied, and each gets its outcome once a
//! worker has applied it. Keyed (job, seq u32 BE), so the history pages by sequence.

use rewind_common::id::ObjectId;
use rewind_common::model::ObjectType;
use rewind_common::plan::Step;
use rewind_common::report::ChangedAttribute;
use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditEntry, Subject};
use super::{decode, encode, now, pair_key, prefix, tree, State, StateError};

/// A step's kind, as the audit log and the exports name it.
pub fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Restore { .. } => "restore",
        Step::Update { .. } => "update",
        Step::AddLink { .. } => "addLink",
        Step::RemoveLink { .. } => "removeLink",
        Step::SoftDelete { .. } => "softDelete",
    }
}

/// What became of an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Persisted, not applied yet (a dry run's actions stay so).
    Planned,
    /// The directory accepted the write.
    Applied,
    /// The directory was already in the wanted state.
    AlreadyInState,
    /// Never planned: not recoverable (hard-deleted, synced, dynamic membership, no Graph
    /// property), or superseded.
    Skipped { reason: String },
    /// Never sent: the job was canceled first.
    NotSent { reason: String },
    /// The write failed (after its retries, for a transient failure).
    Failed {
        status: u16,
        code: String,
        message: String,
        permanent: bool,
    },
}

impl Outcome {
    /// The outcome's name in the API and the exports.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Planned => "planned",
            Outcome::Applied => "applied",
            Outcome::AlreadyInState => "alreadyInState",
            Outcome::Skipped { .. } => "skipped",
            Outcome::NotSent { .. } => "notSent",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// Planned actions are the only ones a worker's outcome may replace.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Outcome::Planned)
    }
}

/// One action of a recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub seq: u32,
    /// The step's deterministic id (empty for a skipped change, which has no step).
    pub action_id: String,
    /// The round that planned it (1, or 2 after the restores).
    pub round: u8,
    /// Its wave's key ([`super::jobs::Wave`]); none for a skipped change.
    pub wave: Option<u16>,
    pub object_id: ObjectId,
    pub object_type: ObjectType,
    pub display_name: String,
    pub step: Option<Step>,
    /// Why the planner put it where it is (a newcomer soft-deleted before the restores).
    pub note: Option<String>,
    /// For an update: each property's value now (at planning) and in the backup.
    pub values: Vec<ChangedAttribute>,
    pub outcome: Outcome,
    /// When the outcome was recorded (Unix seconds).
    pub at: Option<i64>,
}

fn action_key(job: &str, seq: u32) -> Vec<u8> {
    pair_key(job, &seq.to_be_bytes())
}

impl State {
    /// Persists a recovery's actions (its plan); putting the same records again (a planning
    /// step repeated after a crash) leaves the same records, and never overwrites an outcome
    /// already recorded.
    pub async fn put_actions(&self, job: &str, records: &[ActionRecord]) -> Result<(), StateError> {
        {
            let _guard = self.lock();
            for r in records {
                let key = action_key(job, r.seq);
                if let Some(old) = self.recovery_actions.get(&key)? {
                    let old: ActionRecord = decode(tree::RECOVERY_ACTIONS, &key, &old)?;
                    if old.outcome.is_settled() && old.action_id == r.action_id {
                        continue;
                    }
                }
                let bytes = encode(tree::RECOVERY_ACTIONS, &key, r)?;
                self.recovery_actions.insert(key, bytes)?;
            }
        }
        self.flush().await
    }

    /// Records the outcomes of applied actions, each newly settled one with its audit record
    /// (on behalf of `actor`, the recovery's starter). An action keeps its first settled
    /// outcome: a redelivered batch's second answer ("already in state") does not replace
    /// "applied". Unknown sequence numbers are an error naming them.
    pub async fn record_outcomes_by(
        &self,
        actor: &Actor,
        tenant: &str,
        job: &str,
        outcomes: Vec<(u32, Outcome)>,
    ) -> Result<(), StateError> {
        {
            let guard = self.lock();
            let at = now();
            for (seq, outcome) in outcomes {
                let key = action_key(job, seq);
                let Some(old) = self.recovery_actions.get(&key)? else {
                    return Err(StateError::not_found(
                        "recovery action",
                        format!("{job}/{seq}"),
                    ));
                };
                let mut record: ActionRecord = decode(tree::RECOVERY_ACTIONS, &key, &old)?;
                if record.outcome.is_settled() {
                    continue;
                }
                let mut entry =
                    AuditEntry::new(actor, "recovery.action", Subject::job(tenant, job))
                        .with("seq", seq)
                        .with("actionId", &record.action_id)
                        .with("object", record.object_id)
                        .with("outcome", outcome.name());
                if let Some(step) = &record.step {
                    entry = entry.with("step", step_name(step));
                }
                if let Outcome::Failed { code, .. } = &outcome {
                    entry = entry.with("code", code);
                }
                self.append_audit(&guard, entry)?;
                record.outcome = outcome;
                record.at = Some(at);
                let bytes = encode(tree::RECOVERY_ACTIONS, &key, &record)?;
                self.recovery_actions.insert(key, bytes)?;
            }
        }
        self.flush().await
    }

    /// Up to `limit` actions of a recovery after sequence `after` (from the start when
    /// `None`), in order, and whether more follow.
    pub fn actions_after(
        &self,
        job: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<(Vec<ActionRecord>, bool), StateError> {
        let start = match after {
            Some(seq) => match seq.checked_add(1) {
                Some(next) => action_key(job, next),
                None => return Ok((Vec::new(), false)),
            },
            None => prefix(job),
        };
        let job_prefix = prefix(job);
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.recovery_actions.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&job_prefix) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(decode(tree::RECOVERY_ACTIONS, &key, &value)?);
        }
        Ok((out, false))
    }

    /// The actions with sequence numbers `first..end` (a wave's).
    pub fn actions_range(
        &self,
        job: &str,
        first: u32,
        end: u32,
    ) -> Result<Vec<ActionRecord>, StateError> {
        let mut out = Vec::new();
        for item in self
            .recovery_actions
            .range(action_key(job, first)..action_key(job, end))
        {
            let (key, value) = item?;
            out.push(decode(tree::RECOVERY_ACTIONS, &key, &value)?);
        }
        Ok(out)
    }

    /// Every action of a recovery, visited in order (for tallies and exports).
    pub fn for_each_action(
        &self,
        job: &str,
        mut visit: impl FnMut(ActionRecord) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        for item in self.recovery_actions.scan_prefix(prefix(job)) {
            let (key, value) = item?;
            visit(decode(tree::RECOVERY_ACTIONS, &key, &value)?)?;
        }
        Ok(())
    }
}
