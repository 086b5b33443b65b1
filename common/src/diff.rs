//! The diff engine (pure: no I/O, no async). It merges the sorted indexes of a backup and a
//! current snapshot, skips every object whose content hash is equal without decoding it, and
//! for the rest computes the changed recoverable attributes and links and the recovery action.
//!
//! Work is cut into segments: contiguous id ranges at least as fine as both snapshots' shards
//! (and finer still for large shards), diffed in parallel with rayon and concatenated in id
//! order, so the report is the same whatever the sharding and the split.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::SnapshotError;
use crate::id::ObjectId;
use crate::model::{DirectoryObject, Link, LinkKind, SourceOfAuthority};
use crate::properties;
use crate::report::{
    Change, ChangedAttribute, ChangedLink, LinkState, NotRecoverableReason, RecoveryAction,
    ReportEntry, Scope, ScopeMatcher,
};
use crate::snapshot::shard::{BlockCache, IndexEntry, LoadedShard};
use crate::snapshot::{LoadedSnapshot, ShardLayout};

/// How the diff cuts its work.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Extra bits of split below the finer of the two shard layouts; `None` picks them so that
    /// a segment holds about [`DiffOptions::TARGET_SEGMENT_OBJECTS`] objects.
    pub split_bits: Option<u8>,
}

impl DiffOptions {
    pub const TARGET_SEGMENT_OBJECTS: usize = 2048;
}

/// Diffs two loaded snapshots of the same tenant within `scope`. Entries come in id order.
pub fn diff_snapshots(
    backup: &LoadedSnapshot,
    current: &LoadedSnapshot,
    scope: &Scope,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    diff_shards(
        &backup.shards,
        &current.shards,
        scope,
        DiffOptions::default(),
    )
}

/// Diffs two complete shard sets (each in shard order, any power-of-two layouts).
pub fn diff_shards(
    backup: &[LoadedShard],
    current: &[LoadedShard],
    scope: &Scope,
    options: DiffOptions,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let b_layout = shard_set_layout(backup)?;
    let c_layout = shard_set_layout(current)?;
    let base_bits = b_layout.bits().max(c_layout.bits());
    let split_bits = options.split_bits.unwrap_or_else(|| {
        let largest = backup
            .iter()
            .chain(current)
            .map(LoadedShard::len)
            .max()
            .unwrap_or(0);
        let finer = 1usize << (base_bits - b_layout.bits().min(c_layout.bits()));
        let per_segment = largest / finer.max(1);
        let mut bits = 0u8;
        while (per_segment >> bits) > DiffOptions::TARGET_SEGMENT_OBJECTS && bits < 8 {
            bits += 1;
        }
        bits
    });
    let segments = ShardLayout::new(base_bits.saturating_add(split_bits));
    let matcher = scope.matcher();
    let parts = (0..segments.count())
        .into_par_iter()
        .map(|segment| {
            let (lo, hi) = segments.range(segment);
            let b = slice_of(backup, b_layout, lo, hi);
            let c = slice_of(current, c_layout, lo, hi);
            diff_segment(b, c, matcher)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.into_iter().flatten().collect())
}

fn shard_set_layout(shards: &[LoadedShard]) -> Result<ShardLayout, SnapshotError> {
    let layout = shards
        .first()
        .map_or(ShardLayout::new(0), LoadedShard::layout);
    let complete = shards.len() == layout.count() as usize
        && shards
            .iter()
            .enumerate()
            .all(|(i, s)| s.shard() as usize == i && s.layout() == layout);
    if complete {
        Ok(layout)
    } else {
        Err(SnapshotError::Invalid(format!(
            "a diff needs every shard of a snapshot in order ({} of {} given)",
            shards.len(),
            layout.count()
        )))
    }
}

/// The part of a shard whose ids lie in `lo..=hi`.
#[derive(Clone, Copy)]
struct Slice<'a> {
    shard: &'a LoadedShard,
    start: usize,
    end: usize,
}

fn slice_of(shards: &[LoadedShard], layout: ShardLayout, lo: ObjectId, hi: ObjectId) -> Slice<'_> {
    let shard = &shards[layout.shard_of(lo) as usize];
    let index = shard.index();
    let start = index.partition_point(|e| e.id < lo);
    let end = start + index[start..].partition_point(|e| e.id <= hi);
    Slice { shard, start, end }
}

/// Reads objects of one slice, keeping decompressed blocks for the span of a segment.
struct Reader<'a> {
    shard: &'a LoadedShard,
    cache: BlockCache,
}

impl Reader<'_> {
    fn object(&mut self, i: usize) -> Result<DirectoryObject, SnapshotError> {
        self.shard.object(i, &mut self.cache)
    }
}

fn diff_segment(
    b: Slice<'_>,
    c: Slice<'_>,
    scope: ScopeMatcher<'_>,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let bi = &b.shard.index()[b.start..b.end];
    let ci = &c.shard.index()[c.start..c.end];
    let mut rb = Reader {
        shard: b.shard,
        cache: BlockCache::default(),
    };
    let mut rc = Reader {
        shard: c.shard,
        cache: BlockCache::default(),
    };
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < bi.len() || j < ci.len() {
        let order = match (bi.get(i), ci.get(j)) {
            (Some(x), Some(y)) => x.id.cmp(&y.id),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let e = &bi[i];
                if scope.contains(e.id, e.type_code) && e.is_active() {
                    out.push(gone(rb.object(b.start + i)?));
                }
                i += 1;
            }
            Ordering::Greater => {
                let e = &ci[j];
                if scope.contains(e.id, e.type_code) && e.is_active() {
                    out.push(created(rc.object(c.start + j)?));
                }
                j += 1;
            }
            Ordering::Equal => {
                let (x, y) = (&bi[i], &ci[j]);
                if x.hash != y.hash && in_scope(scope, x, y) {
                    let backup = rb.object(b.start + i)?;
                    let current = rc.object(c.start + j)?;
                    if x.type_code == y.type_code {
                        out.extend(compare(backup, current));
                    } else {
                        // An id never changes type; if it seems to, report both sides as they are.
                        if x.is_active() {
                            out.push(gone(backup));
                        }
                        if y.is_active() {
                            out.push(created(current));
                        }
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(out)
}

fn in_scope(scope: ScopeMatcher<'_>, x: &IndexEntry, y: &IndexEntry) -> bool {
    scope.contains(x.id, x.type_code) || scope.contains(y.id, y.type_code)
}

fn entry(object: &DirectoryObject, change: Change, action: RecoveryAction) -> ReportEntry {
    ReportEntry {
        id: object.id,
        object_type: object.object_type,
        display_name: object.display_name().unwrap_or_default().to_owned(),
        change,
        action,
        reason: None,
        changed_attributes: Vec::new(),
        changed_links: Vec::new(),
    }
}

fn not_recoverable(mut e: ReportEntry, reason: NotRecoverableReason) -> ReportEntry {
    e.action = RecoveryAction::NotRecoverable;
    e.reason = Some(reason);
    e
}

/// An object active in the backup and gone now: hard-deleted, never re-created.
fn gone(backup: DirectoryObject) -> ReportEntry {
    not_recoverable(
        entry(&backup, Change::HardDeleted, RecoveryAction::NotRecoverable),
        NotRecoverableReason::HardDeleted,
    )
}

/// An object that did not exist at backup time and is active now: soft delete it, and remove
/// the grants and assignments that would otherwise outlive it.
fn created(current: DirectoryObject) -> ReportEntry {
    let mut e = entry(&current, Change::Created, RecoveryAction::SoftDelete);
    if current.source == SourceOfAuthority::OnPremises {
        return not_recoverable(e, NotRecoverableReason::SyncedFromOnPremises);
    }
    for kind in [
        LinkKind::OAuth2PermissionGrants,
        LinkKind::AppRoleAssignedTo,
    ] {
        if properties::link_recoverable(current.object_type, kind) {
            e.changed_links
                .extend(current.links_of(kind).iter().map(|l| ChangedLink {
                    kind,
                    target: l.target,
                    current: LinkState::Present,
                    backup: LinkState::Absent,
                    recoverable: true,
                    current_data: l.data.clone(),
                    backup_data: None,
                }));
        }
    }
    e
}

/// Both sides exist and their hashes differ.
fn compare(backup: DirectoryObject, current: DirectoryObject) -> Option<ReportEntry> {
    let (b_active, c_active) = (backup.lifecycle.is_active(), current.lifecycle.is_active());
    let on_premises = current.source == SourceOfAuthority::OnPremises;
    let mut e = match (b_active, c_active) {
        (false, false) => return None,
        (false, true) => entry(&current, Change::Restored, RecoveryAction::SoftDeleteAgain),
        (true, false) => {
            let mut e = entry(&current, Change::SoftDeleted, RecoveryAction::Restore);
            changed_attributes(&backup, &current, &mut e.changed_attributes);
            changed_links(&backup, &current, &mut e.changed_links);
            e
        }
        (true, true) => {
            let mut e = entry(&current, Change::Modified, RecoveryAction::Update);
            changed_attributes(&backup, &current, &mut e.changed_attributes);
            changed_links(&backup, &current, &mut e.changed_links);
            if e.changed_attributes.is_empty() && e.changed_links.is_empty() {
                return None;
            }
            if e.changed_attributes.is_empty() && e.changed_links.iter().all(|l| !l.recoverable) {
                return Some(not_recoverable(e, NotRecoverableReason::DynamicMembership));
            }
            e
        }
    };
    if e.display_name.is_empty() {
        e.display_name = backup.display_name().unwrap_or_default().to_owned();
    }
    if on_premises {
        e = not_recoverable(e, NotRecoverableReason::SyncedFromOnPremises);
    }
    Some(e)
}

/// Merges the two sorted attribute lists, keeping recoverable properties that differ.
fn changed_attributes(
    backup: &DirectoryObject,
    current: &DirectoryObject,
    out: &mut Vec<ChangedAttribute>,
) {
    let t = current.object_type;
    let (b, c) = (&backup.attributes, &current.attributes);
    let (mut i, mut j) = (0, 0);
    while i < b.len() || j < c.len() {
        let (pid, bv, cv) = match (b.get(i), c.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                j += 1;
                if x.1 == y.1 {
                    continue;
                }
                (x.0, Some(&x.1), Some(&y.1))
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                i += 1;
                (x.0, Some(&x.1), None)
            }
            (Some(x), None) => {
                i += 1;
                (x.0, Some(&x.1), None)
            }
            (_, Some(y)) => {
                j += 1;
                (y.0, None, Some(&y.1))
            }
            (None, None) => break,
        };
        if let Some(def) = properties::property(t, pid).filter(|d| d.recoverable) {
            out.push(ChangedAttribute {
                name: def.name.to_owned(),
                current: cv.cloned(),
                backup: bv.cloned(),
            });
        }
    }
}

/// Merges the link sets of every recoverable link kind; dynamic memberships are shown but
/// marked not recoverable.
fn changed_links(backup: &DirectoryObject, current: &DirectoryObject, out: &mut Vec<ChangedLink>) {
    let t = current.object_type;
    let dynamic = backup.dynamic_membership || current.dynamic_membership;
    for &kind in properties::link_kinds(t) {
        if !properties::link_recoverable(t, kind) {
            continue;
        }
        let recoverable = !(kind == LinkKind::Members && dynamic);
        let (b, c) = (backup.links_of(kind), current.links_of(kind));
        let (mut i, mut j) = (0, 0);
        let push = |out: &mut Vec<ChangedLink>, target, cur: Option<&Link>, bak: Option<&Link>| {
            out.push(ChangedLink {
                kind,
                target,
                current: if cur.is_some() {
                    LinkState::Present
                } else {
                    LinkState::Absent
                },
                backup: if bak.is_some() {
                    LinkState::Present
                } else {
                    LinkState::Absent
                },
                recoverable,
                current_data: cur.and_then(|l| l.data.clone()),
                backup_data: bak.and_then(|l| l.data.clone()),
            })
        };
        while i < b.len() || j < c.len() {
            match (b.get(i), c.get(j)) {
                (Some(x), Some(y)) if x.target == y.target => {
                    if x.data != y.data {
                        push(out, x.target, Some(y), Some(x));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.target < y.target => {
                    push(out, x.target, None, Some(x));
                    i += 1;
                }
                (Some(x), None) => {
                    push(out, x.target, None, Some(x));
                    i += 1;
                }
                (_, Some(y)) => {
                    push(out, y.target, Some(y), None);
                    j += 1;
                }
                (None, None) => break,
            }
        }
    }
}

/// The plain way, for comparison: decode every object of both sides and compare them field by
/// field. Same entries as [`diff_shards`]; used by the benchmark as its baseline and by tests.
pub fn diff_decoded(
    backup: &[DirectoryObject],
    current: &[DirectoryObject],
    scope: &Scope,
) -> Vec<ReportEntry> {
    let matcher = scope.matcher();
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let in_scope = |o: &DirectoryObject| matcher.contains(o.id, o.object_type.code());
    while i < backup.len() || j < current.len() {
        match (backup.get(i), current.get(j)) {
            (Some(b), Some(c)) if b.id == c.id => {
                if b != c && (in_scope(b) || in_scope(c)) {
                    if b.object_type == c.object_type {
                        out.extend(compare(b.clone(), c.clone()));
                    } else {
                        if b.lifecycle.is_active() {
                            out.push(gone(b.clone()));
                        }
                        if c.lifecycle.is_active() {
                            out.push(created(c.clone()));
                        }
                    }
                }
                i += 1;
                j += 1;
            }
            (Some(b), Some(c)) if b.id < c.id => {
                if in_scope(b) && b.lifecycle.is_active() {
                    out.push(gone(b.clone()));
                }
                i += 1;
            }
            (Some(b), None) => {
                if in_scope(b) && b.lifecycle.is_active() {
                    out.push(gone(b.clone()));
                }
                i += 1;
            }
            (_, Some(c)) => {
                if in_scope(c) && c.lifecycle.is_active() {
                    out.push(created(c.clone()));
                }
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}
