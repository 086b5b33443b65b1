//! The coordinator's durable state in sled: tenants, the snapshot catalog, jobs, task results,
//! report entries, API tokens and the hash-chained audit log. Every write that must survive a crash is flushed before the method
//! returns, so a caller acts only on what is on disk.

pub mod actions;
pub mod audit;
pub mod catalog;
pub mod jobs;
pub mod schedule;
pub mod tenants;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use actions::{ActionRecord, Outcome};
pub use audit::{Actor, AuditEntry, AuditRecord, AuditVerdict, BrokenRecord, Subject};
pub use catalog::{BlobSweep, Removal, SnapshotRecord, SweepOwner, SweepState};
pub use jobs::{
    Approval, EntryCursor, Job, JobKind, JobStatus, Phase, RecordOutcome, RecoveryProgress,
    TaskCounts, Wave,
};
pub use rewind_common::secret_box::{EncryptedSecret, SecretError, SecretKey, SECRET_KEY_ENV};
pub use schedule::{next_after, Schedule};
pub use tenants::{
    AppRegistration, NewTenant, RecoveryPatch, RecoverySettings, TenantRecord, TenantSettings,
    MAX_APPS,
};
pub use tokens::{AuthError, NewToken, Role, TenantScope, TokenRecord};

/// The version every record is written with; a record of another version is refused.
pub const RECORD_VERSION: u32 = 1;

/// The class of a [`StateError`]: what a caller (the API, the scheduler) does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Nothing under that name or id (404).
    NotFound,
    /// The request contradicts the current state (409).
    Conflict,
    /// The request itself is wrong: a field and its value are named (400).
    Invalid,
    /// The disk or a stored record failed (500).
    Storage,
}

/// Every error of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A tenant has an open job already: a recovery job is currently in progress.
    #[error("tenant {tenant} has a job in progress ({running_job}): one job at a time per tenant")]
    Conflict { tenant: String, running_job: String },
    #[error("{what} {id} already exists")]
    Exists { what: &'static str, id: String },
    #[error("job {job} cannot go from {from} to {to}")]
    Transition {
        job: String,
        from: jobs::JobStatus,
        to: jobs::JobStatus,
    },
    #[error("{what} {id} is refused: {reason}")]
    Refused {
        what: &'static str,
        id: String,
        reason: String,
    },
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The secret key given is not the one that encrypted a tenant's secret.
    #[error("the secret key does not match the key that encrypted the secret of tenant {tenant}")]
    KeyMismatch { tenant: String },
    #[error("secret key: {reason}")]
    SecretKey { reason: String },
    #[error("cannot open the state in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("cannot decode the record {key} of tree {tree}: {reason}")]
    Decode {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("cannot encode the record {key} of tree {tree}: {reason}")]
    Encode {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<SecretError> for StateError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::KeyMismatch { tenant } => StateError::KeyMismatch { tenant },
            SecretError::SecretKey { reason } => StateError::SecretKey { reason },
            SecretError::Io { what, source } => StateError::Io { what, source },
        }
    }
}

impl StateError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StateError::NotFound { .. } => ErrorClass::NotFound,
            StateError::Conflict { .. }
            | StateError::Exists { .. }
            | StateError::Transition { .. }
            | StateError::Refused { .. } => ErrorClass::Conflict,
            StateError::Invalid { .. }
            | StateError::KeyMismatch { .. }
            | StateError::SecretKey { .. } => ErrorClass::Invalid,
            StateError::Open { .. }
            | StateError::Storage(_)
            | StateError::Decode { .. }
            | StateError::Encode { .. }
            | StateError::Io { .. } => ErrorClass::Storage,
        }
    }

    pub(crate) fn invalid(
        field: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        StateError::Invalid {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StateError::NotFound {
            what,
            id: id.into(),
        }
    }
}

/// The names of the trees; one per kind of record.
pub(crate) mod tree {
    pub const TENANTS: &str = "tenants";
    pub const JOBS: &str = "jobs";
    /// tenant NUL sequence (u64 big-endian) -> job id: a tenant's jobs in creation order.
    pub const JOBS_BY_TENANT: &str = "jobs_by_tenant";
    /// tenant -> id of its one open job.
    pub const ACTIVE_BY_TENANT: &str = "active_by_tenant";
    /// job NUL task key -> the task's result bytes.
    pub const TASK_RESULTS: &str = "task_results";
    /// job NUL range (u32 BE) seq (u32 BE) -> one encoded report entry.
    pub const REPORT_ENTRIES: &str = "report_entries";
    /// tenant NUL snapshot id -> snapshot record.
    pub const CATALOG: &str = "catalog";
    /// sequence (u64 BE) -> removal record; append-only.
    pub const REMOVALS: &str = "removals";
    /// store prefix -> the blobs a removal left to delete (its owner already gone).
    pub const BLOB_SWEEPS: &str = "blob_sweeps";
    /// token id -> token record (with the token's hash, never the token).
    pub const TOKENS: &str = "tokens";
    /// blake3 hex of a token -> its id.
    pub const TOKENS_BY_HASH: &str = "tokens_by_hash";
    /// sequence (u64 BE, dense from 1) -> audit record; append-only, hash-chained.
    pub const AUDIT: &str = "audit";
    /// `head` -> the audit log's last record: its sequence number and hash (so that records
    /// deleted from the end are seen).
    pub const AUDIT_HEAD: &str = "audit_head";
    /// job NUL seq (u32 BE) -> a recovery's action record.
    pub const RECOVERY_ACTIONS: &str = "recovery_actions";
}

/// The state store. Cheap to clone; every clone is the same store.
///
/// No sled transaction or batch is used: in sled 0.34 either one switches the process-wide
/// concurrency control to a reader-writer lock that every operation of every database in the
/// process then takes, and a waiting writer blocks new readers while a reader inside a
/// blocking flush waits on the flusher thread, which needs a read lock: a deadlock (seen with
/// several states open in one test process). Every multi-key change is instead a sequence of
/// single-key writes under [`State::lock`], ordered so that a crash midway leaves a state that
/// [`State::repair`] completes at the next open.
#[derive(Clone)]
pub struct State {
    pub(crate) db: sled::Db,
    pub(crate) tenants: sled::Tree,
    pub(crate) jobs: sled::Tree,
    pub(crate) jobs_by_tenant: sled::Tree,
    pub(crate) active_by_tenant: sled::Tree,
    pub(crate) task_results: sled::Tree,
    pub(crate) report_entries: sled::Tree,
    pub(crate) catalog: sled::Tree,
    pub(crate) removals: sled::Tree,
    pub(crate) blob_sweeps: sled::Tree,
    pub(crate) tokens: sled::Tree,
    pub(crate) tokens_by_hash: sled::Tree,
    pub(crate) audit: sled::Tree,
    pub(crate) audit_head: sled::Tree,
    pub(crate) recovery_actions: sled::Tree,
    /// Serializes every read-modify-write (job transitions, task results, tenant edits,
    /// snapshot removals). Held only over synchronous sled calls, never across an `.await`.
    write_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    /// Opens (or creates) the state in `dir`. Only one process may hold it open.
    pub fn open(dir: impl AsRef<Path>) -> Result<State, StateError> {
        let path = dir.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?;
        // A state of a build before the audit log's head: its head is set from the log once.
        let had_head = db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == tree::AUDIT_HEAD.as_bytes());
        let open = |name: &str| db.open_tree(name);
        let state = State {
            tenants: open(tree::TENANTS)?,
            jobs: open(tree::JOBS)?,
            jobs_by_tenant: open(tree::JOBS_BY_TENANT)?,
            active_by_tenant: open(tree::ACTIVE_BY_TENANT)?,
            task_results: open(tree::TASK_RESULTS)?,
            report_entries: open(tree::REPORT_ENTRIES)?,
            catalog: open(tree::CATALOG)?,
            removals: open(tree::REMOVALS)?,
            blob_sweeps: open(tree::BLOB_SWEEPS)?,
            tokens: open(tree::TOKENS)?,
            tokens_by_hash: open(tree::TOKENS_BY_HASH)?,
            audit: open(tree::AUDIT)?,
            audit_head: open(tree::AUDIT_HEAD)?,
            recovery_actions: open(tree::RECOVERY_ACTIONS)?,
            db,
            write_lock: Arc::new(Mutex::new(())),
        };
        state.repair()?;
        state.repair_audit_head(had_head)?;
        Ok(state)
    }

    /// Completes what a crash between two single-key writes left: every open job marks its
    /// tenant as busy, no finished or missing job does, and an open job counts exactly the
    /// results stored for it.
    fn repair(&self) -> Result<(), StateError> {
        let _guard = self.lock();
        let mut marks: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        for item in self.active_by_tenant.iter() {
            marks.push(item?);
        }
        for (tenant, job) in marks {
            let keep = match self.jobs.get(&job)? {
                Some(bytes) => !decode::<jobs::Job>(tree::JOBS, &job, &bytes)?
                    .status
                    .is_terminal(),
                None => false,
            };
            if !keep {
                self.active_by_tenant.remove(&tenant)?;
            }
        }
        let mut open = Vec::new();
        for item in self.jobs.iter() {
            let (key, bytes) = item?;
            let job: jobs::Job = decode(tree::JOBS, &key, &bytes)?;
            if !job.status.is_terminal() {
                open.push(job);
            }
        }
        for mut job in open {
            if self.active_by_tenant.get(job.tenant.as_bytes())?.is_none() {
                self.active_by_tenant
                    .insert(job.tenant.as_bytes(), job.id.as_bytes())?;
            }
            let done = self.task_results.scan_prefix(prefix(&job.id)).count() as u64;
            if job.tasks.done != done {
                job.tasks.done = done;
                let bytes = encode(tree::JOBS, job.id.as_bytes(), &job)?;
                self.jobs.insert(job.id.as_bytes(), bytes)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    /// Makes every write so far durable. The flush runs on tokio's blocking pool, never on
    /// sled's own (`flush_async`): a flush waits for its log buffer's write, and that write is
    /// itself a task of sled's pool, so seven concurrent `flush_async` calls (sled keeps seven
    /// threads waiting for work) can occupy every thread of the pool with flushes that wait for
    /// writes nobody runs — every flush of the process then hangs.
    pub async fn flush(&self) -> Result<(), StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| {
                StateError::Storage(sled::Error::Io(std::io::Error::other(format!(
                    "the flush task: {e}"
                ))))
            })??;
        Ok(())
    }

    /// The write lock; a panic of an earlier holder does not poison the store (what it left
    /// half done is what a crash leaves, and the next open repairs it).
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh, monotonically increasing number (sled's own id generator).
    pub(crate) fn next_seq(&self) -> Result<u64, StateError> {
        Ok(self.db.generate_id()?)
    }
}

/// The current time, in unix seconds (UTC).
pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The current time, in unix seconds (UTC), as the state stamps its records.
pub fn unix_now() -> i64 {
    now()
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    version: u32,
    record: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    version: u32,
    record: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// A record as stored: rmp-serde with named fields, inside `{version, record}`.
pub(crate) fn encode<T: Serialize>(
    tree: &'static str,
    key: &[u8],
    record: &T,
) -> Result<Vec<u8>, StateError> {
    rmp_serde::to_vec_named(&EnvelopeRef {
        version: RECORD_VERSION,
        record,
    })
    .map_err(|e| StateError::Encode {
        tree,
        key: key_text(key),
        reason: e.to_string(),
    })
}

/// Reads a record written by [`encode`]; an error names the tree and the key.
pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StateError> {
    let fail = |reason: String| StateError::Decode {
        tree,
        key: key_text(key),
        reason,
    };
    match rmp_serde::from_slice::<Envelope<T>>(bytes) {
        Ok(envelope) if envelope.version == RECORD_VERSION => Ok(envelope.record),
        Ok(envelope) => Err(fail(format!(
            "record version {} (this build reads {RECORD_VERSION})",
            envelope.version
        ))),
        Err(e) => match rmp_serde::from_slice::<VersionOnly>(bytes) {
            Ok(v) if v.version != RECORD_VERSION => Err(fail(format!(
                "record version {} (this build reads {RECORD_VERSION})",
                v.version
            ))),
            _ => Err(fail(e.to_string())),
        },
    }
}

/// A key as text for messages: itself when it is printable UTF-8 (NUL shown as `/`), else hex.
pub(crate) fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\0') => s.replace('\0', "/"),
        _ => {
            let mut out = String::with_capacity(key.len() * 2);
            for b in key {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

/// `a NUL b`: the keys of records that belong to a tenant or a job. Tenant names and job ids
/// never hold a NUL.
pub(crate) fn pair_key(a: &str, b: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b);
    key
}

/// The prefix of every [`pair_key`] of `a`.
pub(crate) fn prefix(a: &str) -> Vec<u8> {
    pair_key(a, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_bad_one_names_tree_and_key() {
        let bytes = encode("jobs", b"j1", &vec![1u32, 2]).unwrap();
        let back: Vec<u32> = decode("jobs", b"j1", &bytes).unwrap();
        assert_eq!(back, vec![1, 2]);
        let err = decode::<Vec<u32>>("jobs", b"j1", b"\xc1garbage").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("jobs") && msg.contains("j1"), "{msg}");
        assert_eq!(err.class(), ErrorClass::Storage);
    }

    #[test]
    fn another_version_is_refused_naming_it() {
        let bytes = rmp_serde::to_vec_named(&EnvelopeRef {
            version: 9,
            record: &"x",
        })
        .unwrap();
        let msg = decode::<String>("tenants", b"acme", &bytes)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("version 9") && msg.contains("acme"), "{msg}");
    }

    #[test]
    fn binary_keys_are_shown_in_hex() {
        assert_eq!(key_text(b"acme\0j1"), "acme/j1");
        assert_eq!(key_text(&[0xff, 0x01]), "ff01");
    }
}

#[cfg(test)]
mod repair_tests {
    use super::*;

    /// What a crash between two single-key writes can leave is completed at the next open.
    #[tokio::test]
    async fn a_half_written_change_is_completed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let job_id = {
            let state = State::open(&path).unwrap();
            let key = SecretKey::generate();
            state
                .add_tenant(
                    &key,
                    NewTenant::new(
                        "acme",
                        "http://127.0.0.1:9/acme/v1.0",
                        "http://127.0.0.1:9/acme/oauth2/v2.0/token",
                        "app",
                        "secret",
                    ),
                )
                .await
                .unwrap();
            let job = state.create_job("acme", JobKind::Backup).await.unwrap();
            // As if the process died after the job's record but before the tenant's mark,
            // and after a result but before its count.
            state.active_by_tenant.remove("acme").unwrap();
            state
                .task_results
                .insert(pair_key(&job.id, b"capture.0"), b"r".as_slice())
                .unwrap();
            state.db.flush().unwrap();
            job.id
        };
        let mut state = None;
        for _ in 0..100 {
            if let Ok(s) = State::open(&path) {
                state = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let state = state.unwrap();
        assert_eq!(state.get_job(&job_id).unwrap().tasks.done, 1);
        let err = state.create_job("acme", JobKind::Backup).await.unwrap_err();
        assert!(err.to_string().contains(&job_id), "{err}");
    }
}
