//! The snapshot catalog: sealed snapshots by tenant, immutable once added; retention picks the
//! oldest backups beyond N, and `remove_snapshot` (audited in `removals`) is the only delete.

use std::collections::BTreeSet;

use rewind_common::snapshot::SnapshotKind;
use serde::{Deserialize, Serialize};

use super::audit::{Actor, AuditEntry, Subject};
use super::{decode, encode, now, pair_key, prefix, tree, State, StateError};

/// A sealed snapshot as the catalog holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub tenant: String,
    pub id: String,
    pub kind: SnapshotKind,
    pub created_at: i64,
    pub object_count: u64,
    /// The store key of the manifest.
    pub manifest_key: String,
    /// blake3 of the manifest, lowercase hex.
    pub manifest_digest: String,
    /// The job that produced it.
    pub job: String,
}

/// Why and when a snapshot was removed (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    pub snapshot: SnapshotRecord,
    pub reason: String,
    pub removed_at: i64,
}

/// The blobs a removal left to delete: the store prefix of a removed snapshot or of a deleted
/// report or recovery. It is recorded before its owner leaves the state and dropped once the
/// store holds nothing under the prefix, so a crash (or a failed delete) in between leaves it
/// for the next sweep rather than blobs that nothing names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobSweep {
    /// With its trailing `/`.
    pub prefix: String,
    pub owner: SweepOwner,
    pub recorded_at: i64,
    /// Not deleted before this time (unix seconds): the blobs of a snapshot a failed or
    /// canceled job was capturing, which a capture still in flight may yet write.
    #[serde(default)]
    pub not_before: i64,
}

/// Whether a sweep's blobs may be deleted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepState {
    /// Its owner is gone: delete.
    Due,
    /// Its owner is gone, but not before its `not_before`.
    Later,
    /// Its owner is still here (a crash before the owner's removal): the sweep was dropped.
    Stale,
}

/// What held a sweep's blobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum SweepOwner {
    Snapshot { tenant: String, id: String },
    Job { id: String },
}

fn validate_snapshot_id(id: &str) -> Result<(), StateError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(StateError::invalid(
            "snapshot id",
            format!("{id:?}"),
            "must be 1 to 128 characters without '/' or control characters",
        ));
    }
    Ok(())
}

/// Newest first; equal times by id, so the order is total.
fn newest_first(records: &mut [SnapshotRecord]) {
    records.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
}

impl State {
    /// Adds a sealed snapshot. Adding the same record again is a no-op; a different record
    /// under an id already taken is refused (snapshots are immutable).
    pub async fn add_sealed(&self, record: SnapshotRecord) -> Result<(), StateError> {
        validate_snapshot_id(&record.id)?;
        self.get_tenant(&record.tenant)?;
        let key = pair_key(&record.tenant, record.id.as_bytes());
        let bytes = encode(tree::CATALOG, &key, &record)?;
        match self
            .catalog
            .compare_and_swap(&key, None as Option<&[u8]>, Some(bytes))?
        {
            Ok(()) => {}
            Err(existing) => {
                let current: Option<SnapshotRecord> = existing
                    .current
                    .map(|b| decode(tree::CATALOG, &key, &b))
                    .transpose()?;
                if current.as_ref() != Some(&record) {
                    return Err(StateError::Refused {
                        what: "snapshot",
                        id: record.id,
                        reason: format!(
                            "tenant {} has a different snapshot under that id, and snapshots are immutable",
                            record.tenant
                        ),
                    });
                }
            }
        }
        self.flush().await
    }

    pub fn get_snapshot(&self, tenant: &str, id: &str) -> Result<SnapshotRecord, StateError> {
        let key = pair_key(tenant, id.as_bytes());
        match self.catalog.get(&key)? {
            Some(bytes) => decode(tree::CATALOG, &key, &bytes),
            None => Err(StateError::not_found(
                "snapshot",
                format!("{id} of tenant {tenant}"),
            )),
        }
    }

    /// A tenant's snapshots, newest first, of one kind or all.
    pub fn list_snapshots(
        &self,
        tenant: &str,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<SnapshotRecord>, StateError> {
        let mut records = Vec::new();
        for item in self.catalog.scan_prefix(prefix(tenant)) {
            let (key, bytes) = item?;
            let record: SnapshotRecord = decode(tree::CATALOG, &key, &bytes)?;
            if kind.is_none_or(|k| k == record.kind) {
                records.push(record);
            }
        }
        newest_first(&mut records);
        Ok(records)
    }

    /// The snapshot ids open jobs of `tenant` read or are producing: never removed.
    fn snapshots_in_use(&self, tenant: &str) -> Result<BTreeSet<String>, StateError> {
        let mut used = BTreeSet::new();
        if let Some(job) = self.open_job(tenant)? {
            used.extend(job.backup);
            used.extend(job.snapshot);
        }
        Ok(used)
    }

    /// The backups retention removes with `keep` kept: the oldest `Backup` snapshots beyond
    /// the newest `keep`, oldest first, less any an open job reads. Live and pre-recovery
    /// snapshots are never among them.
    pub fn retention_victims(
        &self,
        tenant: &str,
        keep: u32,
    ) -> Result<Vec<SnapshotRecord>, StateError> {
        let used = self.snapshots_in_use(tenant)?;
        let backups = self.list_snapshots(tenant, Some(SnapshotKind::Backup))?;
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let mut victims: Vec<SnapshotRecord> = backups
            .into_iter()
            .skip(keep)
            .filter(|r| !used.contains(&r.id))
            .collect();
        victims.reverse();
        Ok(victims)
    }

    /// The only way a snapshot leaves the catalog, recorded with `reason` in `removals`. A
    /// backup must be a retention victim under the tenant's retention; no snapshot an open job
    /// uses is removed. The caller deletes the blobs after this returns.
    pub async fn remove_snapshot(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
    ) -> Result<Removal, StateError> {
        if reason.trim().is_empty() {
            return Err(StateError::invalid("reason", "\"\"", "a removal says why"));
        }
        let removal = {
            let guard = self.lock();
            let record = self.get_snapshot(tenant, id)?;
            if self.snapshots_in_use(tenant)?.contains(id) {
                let running_job = self.open_job(tenant)?.map(|j| j.id).unwrap_or_default();
                return Err(StateError::Conflict {
                    tenant: tenant.to_owned(),
                    running_job,
                });
            }
            if record.kind == SnapshotKind::Backup {
                let retention = self.get_tenant(tenant).map(|t| t.retention);
                // A removed tenant's backups are kept: nothing expires them.
                let retention = retention?;
                let victim = self
                    .retention_victims(tenant, retention)?
                    .iter()
                    .any(|v| v.id == id);
                if !victim {
                    return Err(StateError::Refused {
                        what: "removing backup",
                        id: id.to_owned(),
                        reason: format!(
                            "it is among the {retention} newest backups of tenant {tenant}, which are kept"
                        ),
                    });
                }
            }
            let removal = Removal {
                snapshot: record,
                reason: reason.to_owned(),
                removed_at: now(),
            };
            let seq = self.next_seq()?.to_be_bytes();
            let removal_bytes = encode(tree::REMOVALS, &seq, &removal)?;
            let key = pair_key(tenant, id.as_bytes());
            // The removal is recorded first, then the record goes: a crash between the two
            // leaves the snapshot in the catalog, to be removed again (and recorded again) by
            // the next retention pass.
            if self.removals.get(seq)?.is_some() {
                return Err(StateError::Exists {
                    what: "removal",
                    id: super::key_text(&seq),
                });
            }
            let entry = AuditEntry::new(
                &Actor::Coordinator,
                "snapshot.removed",
                Subject::snapshot(tenant, id),
            )
            .with("kind", format!("{:?}", removal.snapshot.kind))
            .with("reason", reason);
            self.append_audit(&guard, entry)?;
            self.removals.insert(seq, removal_bytes)?;
            // The sweep before the record goes: the blobs then always have a name.
            self.record_snapshot_sweep(&guard, tenant, id, 0)?;
            self.catalog.remove(key.as_slice())?;
            removal
        };
        self.flush().await?;
        Ok(removal)
    }

    /// Records that the blobs under `prefix` are to be deleted once `owner` is gone. Called
    /// under the write lock, before the owner's record goes.
    pub(crate) fn record_sweep(
        &self,
        _guard: &std::sync::MutexGuard<'_, ()>,
        prefix: String,
        owner: SweepOwner,
        not_before: i64,
    ) -> Result<(), StateError> {
        let sweep = BlobSweep {
            prefix,
            owner,
            recorded_at: now(),
            not_before,
        };
        let bytes = encode(tree::BLOB_SWEEPS, sweep.prefix.as_bytes(), &sweep)?;
        self.blob_sweeps.insert(sweep.prefix.as_bytes(), bytes)?;
        Ok(())
    }

    /// [`State::record_sweep`] of a snapshot's blobs.
    fn record_snapshot_sweep(
        &self,
        guard: &std::sync::MutexGuard<'_, ()>,
        tenant: &str,
        id: &str,
        not_before: i64,
    ) -> Result<(), StateError> {
        self.record_sweep(
            guard,
            format!("{}/", rewind_common::snapshot::snapshot_prefix(tenant, id)),
            SweepOwner::Snapshot {
                tenant: tenant.to_owned(),
                id: id.to_owned(),
            },
            not_before,
        )
    }

    /// The blob prefixes still to delete, by prefix.
    pub fn blob_sweeps(&self) -> Result<Vec<BlobSweep>, StateError> {
        self.blob_sweeps
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(tree::BLOB_SWEEPS, &key, &bytes)
            })
            .collect()
    }

    /// Whether the sweep's blobs may be deleted at `at` (unix seconds). A sweep whose owner is
    /// still here was left by a crash before the owner's removal: it is dropped (a later
    /// removal records it again), and never run.
    pub async fn sweep_state(&self, sweep: &BlobSweep, at: i64) -> Result<SweepState, StateError> {
        let state = {
            let _guard = self.lock();
            let present = match &sweep.owner {
                SweepOwner::Snapshot { tenant, id } => {
                    self.catalog.contains_key(pair_key(tenant, id.as_bytes()))?
                }
                SweepOwner::Job { id } => self.jobs.contains_key(id.as_bytes())?,
            };
            if present {
                self.blob_sweeps.remove(sweep.prefix.as_bytes())?;
                SweepState::Stale
            } else if at < sweep.not_before {
                SweepState::Later
            } else {
                SweepState::Due
            }
        };
        if state == SweepState::Stale {
            self.flush().await?;
        }
        Ok(state)
    }

    /// Records a sweep of the blobs of a snapshot the catalog does not hold (one a failed or
    /// canceled job was capturing, never sealed), not to run before `not_before`. Nothing is
    /// recorded for a sealed snapshot: its blobs go with its removal. `true` when recorded.
    pub async fn sweep_unsealed(
        &self,
        tenant: &str,
        id: &str,
        not_before: i64,
    ) -> Result<bool, StateError> {
        validate_snapshot_id(id)?;
        let recorded = {
            let guard = self.lock();
            if self.catalog.contains_key(pair_key(tenant, id.as_bytes()))? {
                false
            } else {
                self.record_snapshot_sweep(&guard, tenant, id, not_before)?;
                true
            }
        };
        if recorded {
            self.flush().await?;
        }
        Ok(recorded)
    }

    /// Drops a sweep whose prefix the store no longer holds anything under.
    pub async fn sweep_done(&self, prefix: &str) -> Result<(), StateError> {
        self.blob_sweeps.remove(prefix.as_bytes())?;
        self.flush().await
    }

    /// Every removal, oldest first.
    pub fn removals(&self) -> Result<Vec<Removal>, StateError> {
        self.removals
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(tree::REMOVALS, &key, &bytes)
            })
            .collect()
    }
}
