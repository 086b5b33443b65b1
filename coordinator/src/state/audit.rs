//! The audit log: append-only and hash-chained, in its own sled tree. Each record holds its
//! sequence number (dense, from 1), time, actor, action, subject and details, the blake3 hash
//! of the record before it (all zeros for the first) and its own hash. A record is appended by
//! the state method that makes the change, under [`State::lock`] and before the change itself,
//! and the method flushes both before it returns. Nothing edits or deletes a record;
//! [`State::verify_audit`] names the first record that was changed, deleted or moved.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};

use super::{decode, encode, now, tree, State, StateError, TokenRecord};

/// The hash the first record names as its predecessor's.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an audited change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Actor {
    /// An API caller: its token's id and name.
    Token { id: String, name: String },
    /// The schedule of backups.
    Scheduler,
    /// The coordinator's own work: job transitions, retention.
    Coordinator,
    /// `rewind token` run on the coordinator's state directly.
    Console,
}

impl Actor {
    /// The actor of a request authenticated with `token`.
    pub fn token(token: &TokenRecord) -> Actor {
        Actor::Token {
            id: token.id.clone(),
            name: token.name.clone(),
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Token { id, name } => write!(f, "token {name} ({id})"),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::Coordinator => f.write_str("coordinator"),
            Actor::Console => f.write_str("console"),
        }
    }
}

/// What an audited change is about; every field that applies is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Subject {
    pub fn tenant(tenant: &str) -> Subject {
        Subject {
            tenant: Some(tenant.to_owned()),
            ..Subject::default()
        }
    }

    pub fn job(tenant: &str, job: &str) -> Subject {
        Subject {
            job: Some(job.to_owned()),
            ..Subject::tenant(tenant)
        }
    }

    pub fn snapshot(tenant: &str, snapshot: &str) -> Subject {
        Subject {
            snapshot: Some(snapshot.to_owned()),
            ..Subject::tenant(tenant)
        }
    }

    pub fn token(token: &str) -> Subject {
        Subject {
            token: Some(token.to_owned()),
            ..Subject::default()
        }
    }
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix seconds (UTC).
    pub at: i64,
    pub actor: Actor,
    /// `job.created`, `job.status`, `tenant.added`, ...
    pub action: String,
    pub subject: Subject,
    pub details: BTreeMap<String, String>,
    /// blake3 of the record before, lowercase hex ([`GENESIS_HASH`] for the first).
    pub prev: String,
    /// blake3 of this record's other fields, lowercase hex.
    pub hash: String,
}

/// The fields a record's hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at: i64,
    actor: &'a Actor,
    action: &'a str,
    subject: &'a Subject,
    details: &'a BTreeMap<String, String>,
    prev: &'a str,
}

impl AuditRecord {
    /// The hash this record's content gives.
    pub fn compute_hash(&self) -> Result<String, StateError> {
        let hashed = Hashed {
            seq: self.seq,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            details: &self.details,
            prev: &self.prev,
        };
        let bytes = serde_json::to_vec(&hashed).map_err(|e| StateError::Encode {
            tree: tree::AUDIT,
            key: self.seq.to_string(),
            reason: e.to_string(),
        })?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    }
}

/// What an audited change appends (the log adds the sequence, time and hashes).
#[derive(Clone, Debug)]
pub struct AuditEntry<'a> {
    pub actor: &'a Actor,
    pub action: &'static str,
    pub subject: Subject,
    pub details: BTreeMap<String, String>,
}

impl<'a> AuditEntry<'a> {
    pub fn new(actor: &'a Actor, action: &'static str, subject: Subject) -> Self {
        AuditEntry {
            actor,
            action,
            subject,
            details: BTreeMap::new(),
        }
    }

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }
}

/// The first record that breaks the chain, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenRecord {
    /// The sequence number the record at that place should have.
    pub seq: u64,
    pub problem: String,
}

/// What [`State::verify_audit`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerdict {
    /// Records checked up to (not including) the broken one.
    pub intact: u64,
    pub broken: Option<BrokenRecord>,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The audit log's last record, kept apart from the log (tree `audit_head`), so that records
/// deleted from the end break the log as those deleted inside it do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

const HEAD_KEY: &[u8] = b"head";

impl State {
    /// Appends `entry` to the log. The caller holds the write lock (`_locked` proves it) and
    /// flushes after its own write.
    pub(crate) fn append_audit(
        &self,
        _locked: &MutexGuard<'_, ()>,
        entry: AuditEntry<'_>,
    ) -> Result<AuditRecord, StateError> {
        let (seq, prev) = match self.audit.last()? {
            Some((key, bytes)) => {
                let last: AuditRecord = decode(tree::AUDIT, &key, &bytes)?;
                (last.seq + 1, last.hash)
            }
            None => (1, GENESIS_HASH.to_owned()),
        };
        let mut record = AuditRecord {
            seq,
            at: now(),
            actor: entry.actor.clone(),
            action: entry.action.to_owned(),
            subject: entry.subject,
            details: entry.details,
            prev,
            hash: String::new(),
        };
        record.hash = record.compute_hash()?;
        let key = seq_key(seq);
        let bytes = encode(tree::AUDIT, &key, &record)?;
        self.audit.insert(key, bytes)?;
        // Then the head (no sled batch: see `State`): a crash between the two leaves the head
        // one record behind, which `repair_audit_head` completes.
        self.put_audit_head(&AuditHead {
            seq,
            hash: record.hash.clone(),
        })?;
        Ok(record)
    }

    fn put_audit_head(&self, head: &AuditHead) -> Result<(), StateError> {
        let bytes = encode(tree::AUDIT_HEAD, HEAD_KEY, head)?;
        self.audit_head.insert(HEAD_KEY, bytes)?;
        Ok(())
    }

    /// The audit log's head, as kept apart from it.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StateError> {
        match self.audit_head.get(HEAD_KEY)? {
            Some(bytes) => Ok(Some(decode(tree::AUDIT_HEAD, HEAD_KEY, &bytes)?)),
            None => Ok(None),
        }
    }

    /// At open: a state of a build before the head gets it from its log's last record; a
    /// head one record behind (a crash between the record and the head) moves to that record
    /// when it chains from the head. Nothing else is changed: any other difference is for
    /// [`State::verify_audit`] to name.
    pub(super) fn repair_audit_head(&self, had_head: bool) -> Result<(), StateError> {
        let Some((key, bytes)) = self.audit.last()? else {
            return Ok(());
        };
        let last: AuditRecord = match decode(tree::AUDIT, &key, &bytes) {
            Ok(r) => r,
            Err(_) => return Ok(()),
        };
        let head = self.audit_head()?;
        let behind_by_one = head
            .as_ref()
            .is_some_and(|h| h.seq + 1 == last.seq && h.hash == last.prev);
        if (!had_head && head.is_none()) || behind_by_one {
            self.put_audit_head(&AuditHead {
                seq: last.seq,
                hash: last.hash,
            })?;
            self.audit_head.flush()?;
        }
        Ok(())
    }

    /// Appends one record on its own (locks and flushes), for a change the state does not
    /// make itself.
    pub async fn audit(&self, entry: AuditEntry<'_>) -> Result<AuditRecord, StateError> {
        let record = {
            let guard = self.lock();
            self.append_audit(&guard, entry)?
        };
        self.flush().await?;
        Ok(record)
    }

    /// Up to `limit` records after sequence number `after`, oldest first.
    pub fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StateError> {
        let mut out = Vec::new();
        for item in self.audit.range(seq_key(after.saturating_add(1))..) {
            if out.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            out.push(decode(tree::AUDIT, &key, &bytes)?);
        }
        Ok(out)
    }

    /// The raw records in key order, for export: each is its key's sequence number and the
    /// record, or why it cannot be read.
    pub fn audit_records(&self) -> impl Iterator<Item = Result<AuditRecord, StateError>> + '_ {
        self.audit.iter().map(|item| {
            let (key, bytes) = item?;
            decode(tree::AUDIT, &key, &bytes)
        })
    }

    /// Checks the whole chain: record n is at key n, holds sequence n, names the hash of record
    /// n-1 (zeros for the first), and its hash is its content's. The first record that fails
    /// is named with what is wrong: changed, missing (deleted) or out of order.
    pub fn verify_audit(&self) -> Result<AuditVerdict, StateError> {
        let mut expected: u64 = 1;
        let mut prev = GENESIS_HASH.to_owned();
        let broken = |seq: u64, problem: String, intact: u64| AuditVerdict {
            intact,
            broken: Some(BrokenRecord { seq, problem }),
        };
        for item in self.audit.iter() {
            let (key, bytes) = item?;
            let intact = expected - 1;
            let Ok(at): Result<[u8; 8], _> = key.as_ref().try_into() else {
                return Ok(broken(
                    expected,
                    format!("a key of {} bytes is not a sequence number", key.len()),
                    intact,
                ));
            };
            let key_seq = u64::from_be_bytes(at);
            if key_seq != expected {
                return Ok(broken(
                    expected,
                    if key_seq > expected {
                        format!("record {expected} is missing (deleted): record {key_seq} follows")
                    } else {
                        format!("a record sits at {key_seq}, before {expected}")
                    },
                    intact,
                ));
            }
            let record: AuditRecord = match decode(tree::AUDIT, &key, &bytes) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(broken(
                        expected,
                        format!("record {expected} is changed: it cannot be read ({e})"),
                        intact,
                    ))
                }
            };
            if record.seq != expected {
                return Ok(broken(
                    expected,
                    format!(
                        "out of order: the place of record {expected} holds record {}",
                        record.seq
                    ),
                    intact,
                ));
            }
            if record.prev != prev {
                return Ok(broken(
                    expected,
                    format!(
                        "record {expected} does not follow its predecessor: it names hash {} but record {} hashes to {prev}",
                        record.prev,
                        expected - 1
                    ),
                    intact,
                ));
            }
            let hash = record.compute_hash()?;
            if hash != record.hash {
                return Ok(broken(
                    expected,
                    format!(
                        "record {expected} is changed: its content hashes to {hash}, it says {}",
                        record.hash
                    ),
                    intact,
                ));
            }
            prev = record.hash;
            expected += 1;
        }
        let intact = expected - 1;
        // The end of the log: its head, kept apart, names its last record.
        let head = match self.audit_head() {
            Ok(h) => h,
            Err(e) => {
                return Ok(broken(
                    intact + 1,
                    format!("the log's head cannot be read ({e})"),
                    intact,
                ))
            }
        };
        let problem = match head {
            None if intact > 0 => Some((
                intact + 1,
                "the log's head (its last record's number and hash, kept apart) is missing"
                    .to_owned(),
            )),
            None => None,
            Some(h) if h.seq > intact => Some((
                intact + 1,
                if h.seq == intact + 1 {
                    format!(
                        "record {} is missing (deleted from the end): the log's head names it",
                        h.seq
                    )
                } else {
                    format!(
                        "records {} to {} are missing (deleted from the end): the log's head names record {}",
                        intact + 1,
                        h.seq,
                        h.seq
                    )
                },
            )),
            Some(h) if h.seq < intact => Some((
                h.seq + 1,
                format!(
                    "records {} to {intact} follow the log's head, which names record {}",
                    h.seq + 1,
                    h.seq
                ),
            )),
            Some(h) if h.hash != prev => Some((
                intact,
                format!(
                    "record {intact} is not the one the log's head names: the head says hash {}, the record hashes to {prev}",
                    h.hash
                ),
            )),
            Some(_) => None,
        };
        Ok(match problem {
            Some((seq, problem)) => broken(seq, problem, intact),
            None => AuditVerdict {
                intact,
                broken: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_chain_from_zeros_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path().join("state")).unwrap();
        let actor = Actor::Scheduler;
        let first = state
            .audit(
                AuditEntry::new(&actor, "job.created", Subject::job("acme", "j1"))
                    .with("kind", "backup"),
            )
            .await
            .unwrap();
        let second = state
            .audit(AuditEntry::new(
                &actor,
                "job.status",
                Subject::job("acme", "j1"),
            ))
            .await
            .unwrap();
        assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS_HASH));
        assert_eq!((second.seq, &second.prev), (2, &first.hash));
        assert_eq!(first.hash, first.compute_hash().unwrap());
        let verdict = state.verify_audit().unwrap();
        assert_eq!(
            verdict,
            AuditVerdict {
                intact: 2,
                broken: None
            }
        );
        assert_eq!(state.audit_page(1, 10).unwrap(), vec![second]);
    }

    fn head_at(records: &[AuditRecord], seq: u64) -> AuditHead {
        AuditHead {
            seq,
            hash: records[seq as usize - 1].hash.clone(),
        }
    }

    /// The head one record behind (a crash between the record and its head) is completed at
    /// open; a state from before the head gets it from its log; a head two records behind is
    /// left for `verify_audit` to name.
    #[tokio::test]
    async fn the_head_is_repaired_after_a_crash_and_set_for_an_older_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let actor = Actor::Console;
        let records = {
            let state = State::open(&path).unwrap();
            let mut records = Vec::new();
            for n in 0..3 {
                records.push(
                    state
                        .audit(
                            AuditEntry::new(&actor, "token.created", Subject::token("t"))
                                .with("n", n),
                        )
                        .await
                        .unwrap(),
                );
            }
            assert_eq!(state.audit_head().unwrap(), Some(head_at(&records, 3)));
            // The crash: record 3 written, its head not.
            state.put_audit_head(&head_at(&records, 2)).unwrap();
            state.db.flush().unwrap();
            records
        };
        let state = State::open(&path).unwrap();
        assert_eq!(state.audit_head().unwrap().map(|h| h.seq), Some(3));
        assert_eq!(state.verify_audit().unwrap().broken, None);
        // Older: no head tree at all.
        state.db.drop_tree(tree::AUDIT_HEAD).unwrap();
        state.db.flush().unwrap();
        drop(state);
        let state = State::open(&path).unwrap();
        assert_eq!(state.audit_head().unwrap(), Some(head_at(&records, 3)));
        // Two behind: not a crash's doing.
        state.put_audit_head(&head_at(&records, 1)).unwrap();
        state.db.flush().unwrap();
        drop(state);
        let state = State::open(&path).unwrap();
        let verdict = state.verify_audit().unwrap();
        let broken = verdict.broken.expect("records past the head are named");
        assert_eq!((verdict.intact, broken.seq), (3, 2), "{broken:?}");
        assert!(
            broken.problem.contains("follow the log's head"),
            "{broken:?}"
        );
    }

    /// A record rewritten with a fresh hash of its new content passes its own check; its
    /// successor, which names the old hash, is the one named.
    #[tokio::test]
    async fn a_rewritten_record_with_a_recomputed_hash_is_caught_by_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path().join("state")).unwrap();
        let actor = Actor::Console;
        for n in 0..3 {
            state
                .audit(AuditEntry::new(&actor, "token.created", Subject::token("t")).with("n", n))
                .await
                .unwrap();
        }
        let mut second = state.audit_page(1, 1).unwrap().remove(0);
        second.details.insert("n".into(), "9".into());
        second.hash = second.compute_hash().unwrap();
        let key = seq_key(2);
        state
            .audit
            .insert(key, encode(tree::AUDIT, &key, &second).unwrap())
            .unwrap();
        let verdict = state.verify_audit().unwrap();
        let broken = verdict.broken.unwrap();
        assert_eq!((verdict.intact, broken.seq), (2, 3), "{broken:?}");
        assert!(broken.problem.contains("does not follow"), "{broken:?}");
    }

    /// A job's creation and its status changes name their actors; an edit that keeps the
    /// status is not audited.
    #[tokio::test]
    async fn jobs_are_audited_with_their_actors() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path().join("state")).unwrap();
        let key = super::super::SecretKey::generate();
        let new = super::super::NewTenant::new(
            "acme",
            "http://127.0.0.1:9/acme/v1.0",
            "http://127.0.0.1:9/acme/oauth2/v2.0/token",
            "app",
            "secret",
        );
        state.add_tenant(&key, new).await.unwrap();
        let token = Actor::Token {
            id: "tok_000000000001".into(),
            name: "ci".into(),
        };
        let job = state
            .create_job_by(&token, "acme", super::super::JobKind::Backup)
            .await
            .unwrap();
        use super::super::JobStatus;
        state
            .transition(&job.id, JobStatus::Running, |_| {})
            .await
            .unwrap();
        state
            .transition(&job.id, JobStatus::Running, |j| j.resumes += 1)
            .await
            .unwrap();
        state
            .transition_by(&token, &job.id, JobStatus::Abandoned, |_| {})
            .await
            .unwrap();
        let got: Vec<(String, Actor, Option<String>)> = state
            .audit_page(0, 100)
            .unwrap()
            .into_iter()
            .map(|r| (r.action, r.actor, r.details.get("to").cloned()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("tenant.added".into(), Actor::Coordinator, None),
                ("job.created".into(), token.clone(), None),
                (
                    "job.status".into(),
                    Actor::Coordinator,
                    Some("running".into())
                ),
                ("job.status".into(), token, Some("abandoned".into())),
            ]
        );
    }
}
