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
use crate::model::{DirectoryObject, Link, LinkKind, ObjectType, SourceOfAuthority};
use crate::properties::{self, PropertyDef};
use crate::report::{
    Change, ChangedAttribute, ChangedLink, LinkState, NotRecoverableReason, RecoveryAction,
    ReportEntry, Scope, ScopeMatcher,
};
use crate::snapshot::raw;
use crate::snapshot::shard::{BlockCache, IndexEntry, LoadedShard, FLAG_DYNAMIC, FLAG_ON_PREMISES};
use crate::snapshot::standing::Standings;
use crate::snapshot::{LoadedSnapshot, Manifest, ShardLayout};
use crate::value::Value;

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

/// Kept properties a report does not compare: those that one of its two snapshots did not
/// read ([`crate::snapshot::Manifest::not_captured`]), so that a capture made without them
/// shows no change of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uncompared(Vec<(ObjectType, u8)>);

impl Uncompared {
    /// What the snapshots of these manifests did not all read.
    pub fn of(manifests: &[&Manifest]) -> Result<Self, SnapshotError> {
        let mut out = Vec::new();
        for m in manifests {
            for name in &m.not_captured {
                let bad = || {
                    SnapshotError::Invalid(format!(
                        "snapshot {}/{} lists {name:?} as not captured, which is no kept \
                         property (expected type.property, e.g. user.perUserMfaState)",
                        m.tenant, m.snapshot_id
                    ))
                };
                let (t, p) = name.split_once('.').ok_or_else(bad)?;
                let t: ObjectType = t.parse().map_err(|_| bad())?;
                let id = properties::property_id(t, p).ok_or_else(bad)?;
                out.push((t, id));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(Self(out))
    }

    fn skips(&self, t: ObjectType, id: u8) -> bool {
        !self.0.is_empty() && self.0.contains(&(t, id))
    }
}

/// Diffs two loaded snapshots of the same tenant within `scope`. Entries come in id order. A
/// property that either snapshot did not read is not compared.
pub fn diff_snapshots(
    backup: &LoadedSnapshot,
    current: &LoadedSnapshot,
    scope: &Scope,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let uncompared = Uncompared::of(&[&backup.manifest, &current.manifest])?;
    diff_sets(
        &ShardSet::of_snapshot(backup)?,
        &ShardSet::of_snapshot(current)?,
        scope,
        DiffOptions::default(),
        &uncompared,
        None,
    )
}

/// Diffs two complete shard sets (each in shard order, any power-of-two layouts; a shard may
/// have several parts, in any order among themselves).
pub fn diff_shards(
    backup: &[LoadedShard],
    current: &[LoadedShard],
    scope: &Scope,
    options: DiffOptions,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    diff_shards_except(backup, current, scope, options, &Uncompared::default())
}

/// [`diff_shards`], leaving out the `uncompared` properties.
pub fn diff_shards_except(
    backup: &[LoadedShard],
    current: &[LoadedShard],
    scope: &Scope,
    options: DiffOptions,
    uncompared: &Uncompared,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    diff_sets(
        &ShardSet::of_shards(backup)?,
        &ShardSet::of_shards(current)?,
        scope,
        options,
        uncompared,
        None,
    )
}

/// The shards of one snapshot, grouped by shard index: every shard of its layout has zero or
/// more parts (blobs whose ids are disjoint), which the diff merges in id order.
#[derive(Debug)]
pub struct ShardSet<'a> {
    layout: ShardLayout,
    /// The parts of shard `i` are `parts[starts[i]..starts[i + 1]]`.
    parts: Vec<&'a LoadedShard>,
    starts: Vec<usize>,
    /// The snapshot's standing lists, when far ends are looked up in them rather than in the
    /// shards (a set holding only some shards).
    standing: Vec<&'a Standings>,
    /// The shards the set holds (`first..=last`); `None`: all of them.
    holds: Option<(u32, u32)>,
}

impl<'a> ShardSet<'a> {
    /// Groups `shards` (all of `layout`, any order) by shard index.
    pub fn new(
        layout: ShardLayout,
        shards: impl IntoIterator<Item = &'a LoadedShard>,
    ) -> Result<Self, SnapshotError> {
        let mut parts: Vec<&LoadedShard> = shards.into_iter().collect();
        if let Some(odd) = parts.iter().find(|s| s.layout() != layout) {
            return Err(SnapshotError::Invalid(format!(
                "shard {} has {} shards to its snapshot, the others {}",
                odd.shard(),
                odd.layout().count(),
                layout.count()
            )));
        }
        parts.sort_by_key(|s| s.shard());
        let mut starts = Vec::with_capacity(layout.count() as usize + 1);
        let mut at = 0;
        for i in 0..layout.count() {
            starts.push(at);
            while at < parts.len() && parts[at].shard() == i {
                at += 1;
            }
        }
        starts.push(at);
        Ok(Self {
            layout,
            parts,
            starts,
            standing: Vec::new(),
            holds: None,
        })
    }

    /// A set holding only shards `first..=last` of `layout` (the blobs given must be all of
    /// theirs), with the snapshot's standing lists for the far ends of links: what a diff task
    /// of one range loads. It can only be diffed within that range.
    pub fn partial(
        layout: ShardLayout,
        (first, last): (u32, u32),
        shards: impl IntoIterator<Item = &'a LoadedShard>,
        standing: Vec<&'a Standings>,
    ) -> Result<Self, SnapshotError> {
        let mut set = Self::new(layout, shards)?;
        if let Some(s) = set
            .parts
            .iter()
            .find(|s| s.shard() < first || s.shard() > last)
        {
            return Err(SnapshotError::Invalid(format!(
                "shard {} is outside the set's shards {first}..={last}",
                s.shard()
            )));
        }
        if standing.is_empty() {
            return Err(SnapshotError::Invalid(
                "a set of some shards needs the snapshot's standing lists".into(),
            ));
        }
        set.standing = standing;
        set.holds = Some((first, last));
        Ok(set)
    }

    /// A loaded snapshot's shards, by its manifest's layout.
    pub fn of_snapshot(snapshot: &'a LoadedSnapshot) -> Result<Self, SnapshotError> {
        Self::new(snapshot.manifest.layout(), &snapshot.shards)
    }

    /// Shards that must all share one layout and cover it (every shard at least once).
    fn of_shards(shards: &'a [LoadedShard]) -> Result<Self, SnapshotError> {
        let layout = shards
            .first()
            .map_or(ShardLayout::new(0), LoadedShard::layout);
        let set = Self::new(layout, shards)?;
        if (0..layout.count()).any(|i| set.parts_of(i).is_empty()) {
            return Err(SnapshotError::Invalid(format!(
                "a diff needs every shard of a snapshot ({} blobs given for {} shards)",
                shards.len(),
                layout.count()
            )));
        }
        Ok(set)
    }

    pub fn layout(&self) -> ShardLayout {
        self.layout
    }

    /// The parts of shard `shard` (none for an empty shard).
    pub fn parts_of(&self, shard: u32) -> &[&'a LoadedShard] {
        let i = shard as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.parts[a..b],
            _ => &[],
        }
    }

    /// The object `id` as this set holds it (decoded), when its shard is in the set.
    pub fn object(&self, id: ObjectId) -> Result<Option<DirectoryObject>, SnapshotError> {
        for part in self.parts_of(self.layout.shard_of(id)) {
            if let Ok(i) = part.index().binary_search_by_key(&id, |e| e.id) {
                let mut cache = BlockCache::default();
                return part.object(i, &mut cache).map(Some);
            }
        }
        Ok(None)
    }

    /// Where `id` stands in this snapshot.
    fn standing(&self, id: ObjectId) -> Standing {
        if !self.standing.is_empty() {
            return match self.standing.iter().find_map(|s| s.lookup(id)) {
                Some(true) => Standing::Active,
                Some(false) => Standing::SoftDeleted,
                None => Standing::Absent,
            };
        }
        for part in self.parts_of(self.layout.shard_of(id)) {
            let index = part.index();
            if let Ok(i) = index.binary_search_by_key(&id, |e| e.id) {
                return if index[i].is_active() {
                    Standing::Active
                } else {
                    Standing::SoftDeleted
                };
            }
        }
        Standing::Absent
    }
}

/// An inclusive range of ids (`lo..=hi`), e.g. the shards of one diff task.
pub type IdRange = (ObjectId, ObjectId);

/// Diffs two shard sets within `scope`, and within `range` when given (whose bounds must fall
/// on shard bounds of both layouts), for a task that diffs one range of the id space. Entries
/// come in id order; the far ends of links are looked up in the whole of both sets.
pub fn diff_sets(
    backup: &ShardSet<'_>,
    current: &ShardSet<'_>,
    scope: &Scope,
    options: DiffOptions,
    uncompared: &Uncompared,
    range: Option<IdRange>,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let (b_layout, c_layout) = (backup.layout, current.layout);
    let base_bits = b_layout.bits().max(c_layout.bits());
    let split_bits = options.split_bits.unwrap_or_else(|| {
        let largest = backup
            .parts
            .iter()
            .chain(&current.parts)
            .map(|s| s.len())
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
    for set in [backup, current] {
        if let Some((first, last)) = set.holds {
            let (lo, hi) = (set.layout.range(first).0, set.layout.range(last).1);
            let within = range.is_some_and(|(a, b)| a >= lo && b <= hi);
            if !within {
                return Err(SnapshotError::Invalid(format!(
                    "a set holding shards {first}..={last} is diffed only within them"
                )));
            }
        }
    }
    let (first, last) = match range {
        None => (0, segments.count() - 1),
        Some((lo, hi)) => {
            let (first, last) = (segments.shard_of(lo), segments.shard_of(hi));
            let aligned = |layout: ShardLayout| {
                layout.range(layout.shard_of(lo)).0 == lo
                    && layout.range(layout.shard_of(hi)).1 == hi
            };
            if lo > hi || !aligned(b_layout) || !aligned(c_layout) {
                return Err(SnapshotError::Invalid(format!(
                    "the range {lo}..={hi} does not fall on shard bounds of both snapshots"
                )));
            }
            (first, last)
        }
    };
    let matcher = scope.matcher();
    let ends = |id: ObjectId| (backup.standing(id), current.standing(id));
    let parts = (first..=last)
        .into_par_iter()
        .map(|segment| {
            let (lo, hi) = segments.range(segment);
            let b = Side::of(backup, lo, hi);
            let c = Side::of(current, lo, hi);
            diff_segment(b, c, matcher, &ends, uncompared)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.into_iter().flatten().collect())
}

/// The part of a shard whose ids lie in `lo..=hi`.
#[derive(Clone, Copy)]
struct Slice<'a> {
    shard: &'a LoadedShard,
    start: usize,
    end: usize,
}

impl<'a> Slice<'a> {
    fn of(shard: &'a LoadedShard, lo: ObjectId, hi: ObjectId) -> Self {
        let index = shard.index();
        let start = index.partition_point(|e| e.id < lo);
        let end = start + index[start..].partition_point(|e| e.id <= hi);
        Slice { shard, start, end }
    }
}

/// One snapshot's side of a segment: a slice of each part of its shard, read in id order
/// (merged when the shard has several parts), keeping decompressed blocks for the span of the
/// segment.
struct Side<'a> {
    parts: Vec<Reader<'a>>,
}

/// Reads one part's slice in order.
struct Reader<'a> {
    slice: Slice<'a>,
    next: usize,
    cache: BlockCache,
}

impl<'a> Side<'a> {
    fn of(set: &ShardSet<'a>, lo: ObjectId, hi: ObjectId) -> Self {
        let parts = set
            .parts_of(set.layout.shard_of(lo))
            .iter()
            .map(|shard| {
                let slice = Slice::of(shard, lo, hi);
                Reader {
                    slice,
                    next: slice.start,
                    cache: BlockCache::default(),
                }
            })
            .filter(|r| r.slice.start < r.slice.end)
            .collect();
        Side { parts }
    }

    /// The part holding the next id, and its index entry. Two parts holding one id is an
    /// error naming it.
    fn peek(&self) -> Result<Option<(usize, &'a IndexEntry)>, SnapshotError> {
        let mut best: Option<(usize, &'a IndexEntry)> = None;
        for (p, r) in self.parts.iter().enumerate() {
            if r.next >= r.slice.end {
                continue;
            }
            let e = &r.slice.shard.index()[r.next];
            match best {
                Some((_, b)) if b.id == e.id => {
                    return Err(SnapshotError::corrupt(
                        r.slice.shard.shard(),
                        format!("object {} is in two parts of the shard", e.id),
                    ))
                }
                Some((_, b)) if b.id < e.id => {}
                _ => best = Some((p, e)),
            }
        }
        Ok(best)
    }

    fn advance(&mut self, part: usize) {
        self.parts[part].next += 1;
    }

    /// The current object of `part`, decoded.
    fn object(&mut self, part: usize) -> Result<DirectoryObject, SnapshotError> {
        let r = &mut self.parts[part];
        r.slice.shard.object(r.next, &mut r.cache)
    }

    /// The current object of `part`, encoded, and its shard.
    fn encoding(&mut self, part: usize) -> Result<(&[u8], u32), SnapshotError> {
        let r = &mut self.parts[part];
        let shard = r.slice.shard.shard();
        Ok((r.slice.shard.encoding(r.next, &mut r.cache)?, shard))
    }
}

/// Where an object stands in one snapshot, looked up for the far end of a changed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Absent,
    Active,
    SoftDeleted,
}

/// Where an id stands in the backup and in the current snapshot.
type Ends<'a> = &'a (dyn Fn(ObjectId) -> (Standing, Standing) + Sync);

/// What the far end of a link makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FarEnd {
    /// Active in both snapshots, or in neither (an object Rewind does not capture), or created
    /// since the backup: the link is compared as it is.
    Compared,
    /// In the recycle bin in either snapshot: Graph hides the link, which follows that
    /// object's restore or soft delete and is no change of its own.
    Hidden,
    /// Active in the backup and gone now: the link is lost with it.
    Lost,
}

fn far_end(ends: Ends<'_>, id: ObjectId) -> FarEnd {
    match ends(id) {
        (Standing::SoftDeleted, _) | (_, Standing::SoftDeleted) => FarEnd::Hidden,
        (Standing::Active, Standing::Absent) => FarEnd::Lost,
        _ => FarEnd::Compared,
    }
}

fn diff_segment(
    mut b: Side<'_>,
    mut c: Side<'_>,
    scope: ScopeMatcher<'_>,
    ends: Ends<'_>,
    uncompared: &Uncompared,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let mut out = Vec::new();
    loop {
        let step = match (b.peek()?, c.peek()?) {
            (None, None) => break,
            (Some(x), None) => Step::Backup(x),
            (None, Some(y)) => Step::Current(y),
            (Some(x), Some(y)) => match x.1.id.cmp(&y.1.id) {
                Ordering::Less => Step::Backup(x),
                Ordering::Greater => Step::Current(y),
                Ordering::Equal => Step::Both(x, y),
            },
        };
        match step {
            Step::Backup((p, e)) => {
                if scope.contains(e.id, e.type_code) && e.is_active() {
                    out.push(gone(b.object(p)?));
                }
                b.advance(p);
            }
            Step::Current((q, e)) => {
                if scope.contains(e.id, e.type_code) && e.is_active() {
                    out.push(created(c.object(q)?));
                }
                c.advance(q);
            }
            Step::Both((p, x), (q, y)) => {
                if x.hash != y.hash && in_scope(scope, x, y) {
                    if x.type_code == y.type_code {
                        let (xb, b_shard) = b.encoding(p)?;
                        let (yc, c_shard) = c.encoding(q)?;
                        let sides = (x, y, xb, yc);
                        out.extend(compare_raw(sides, (b_shard, c_shard), ends, uncompared)?);
                    } else {
                        // An id never changes type; if it seems to, report both sides as they are.
                        if x.is_active() {
                            out.push(gone(b.object(p)?));
                        }
                        if y.is_active() {
                            out.push(created(c.object(q)?));
                        }
                    }
                }
                b.advance(p);
                c.advance(q);
            }
        }
    }
    Ok(out)
}

/// The next id of a segment: in the backup only, in the current snapshot only, or in both
/// (each with the part that holds it and its index entry).
enum Step<'a> {
    Backup((usize, &'a IndexEntry)),
    Current((usize, &'a IndexEntry)),
    Both((usize, &'a IndexEntry), (usize, &'a IndexEntry)),
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
                    reason: None,
                    current_data: l.data.clone(),
                    backup_data: None,
                }));
        }
    }
    e
}

/// What the rules need to know about two versions of an object whose hashes differ.
struct Pair {
    id: ObjectId,
    object_type: ObjectType,
    display_name: String,
    backup_active: bool,
    current_active: bool,
    on_premises: bool,
}

/// The change → action rules of the spec for an object present on both sides. `diffs` fills
/// in the changed recoverable attributes and links; it is only called when they matter.
fn classify(
    pair: Pair,
    diffs: impl FnOnce(&mut Vec<ChangedAttribute>, &mut Vec<ChangedLink>) -> Result<(), SnapshotError>,
) -> Result<Option<ReportEntry>, SnapshotError> {
    let (change, action) = match (pair.backup_active, pair.current_active) {
        (false, false) => return Ok(None),
        (false, true) => (Change::Restored, RecoveryAction::SoftDeleteAgain),
        (true, false) => (Change::SoftDeleted, RecoveryAction::Restore),
        (true, true) => (Change::Modified, RecoveryAction::Update),
    };
    let mut e = ReportEntry {
        id: pair.id,
        object_type: pair.object_type,
        display_name: pair.display_name,
        change,
        action,
        reason: None,
        changed_attributes: Vec::new(),
        changed_links: Vec::new(),
    };
    if pair.backup_active {
        diffs(&mut e.changed_attributes, &mut e.changed_links)?;
    }
    if change == Change::Modified {
        if e.changed_attributes.is_empty() && e.changed_links.is_empty() {
            return Ok(None);
        }
        if e.changed_attributes.is_empty() && e.changed_links.iter().all(|l| !l.recoverable) {
            // Only links nothing can write back: lost with a hard-deleted object, or computed
            // by a dynamic rule.
            let lost = e
                .changed_links
                .iter()
                .any(|l| l.reason == Some(NotRecoverableReason::HardDeleted));
            let reason = if lost {
                NotRecoverableReason::HardDeleted
            } else {
                NotRecoverableReason::DynamicMembership
            };
            return Ok(Some(not_recoverable(e, reason)));
        }
    }
    if pair.on_premises {
        e = not_recoverable(e, NotRecoverableReason::SyncedFromOnPremises);
    }
    Ok(Some(e))
}

/// Both sides decoded (the plain path).
fn compare(
    backup: &DirectoryObject,
    current: &DirectoryObject,
    ends: Ends<'_>,
) -> Result<Option<ReportEntry>, SnapshotError> {
    let pair = Pair {
        id: current.id,
        object_type: current.object_type,
        display_name: current
            .display_name()
            .or(backup.display_name())
            .unwrap_or_default()
            .to_owned(),
        backup_active: backup.lifecycle.is_active(),
        current_active: current.lifecycle.is_active(),
        on_premises: current.source == SourceOfAuthority::OnPremises,
    };
    let dynamic = backup.dynamic_membership || current.dynamic_membership;
    let t = current.object_type;
    let holder_hidden = !pair.current_active;
    let diffs = |attrs: &mut Vec<ChangedAttribute>, links: &mut Vec<ChangedLink>| {
        let both = (backup.attributes.as_slice(), current.attributes.as_slice());
        changed_attributes(t, both, holder_hidden, attrs)?;
        for &kind in properties::link_kinds(t) {
            if properties::link_recoverable(t, kind) {
                let sets = LinkSets {
                    kind,
                    dynamic: kind == LinkKind::Members && dynamic,
                    holder_hidden,
                    ends,
                };
                sets.changed(backup.links_of(kind), current.links_of(kind), links);
            }
        }
        Ok(())
    };
    classify(pair, diffs)
}

/// Both sides as raw encodings (the engine's path): attributes and link sets are compared as
/// bytes, and only those that differ are decoded.
fn compare_raw(
    (x, y, backup, current): (&IndexEntry, &IndexEntry, &[u8], &[u8]),
    (b_shard, c_shard): (u32, u32),
    ends: Ends<'_>,
    uncompared: &Uncompared,
) -> Result<Option<ReportEntry>, SnapshotError> {
    let t = y.object_type();
    let corrupt =
        |shard: u32, what: &str| SnapshotError::corrupt(shard, format!("object {}: {what}", y.id));
    let ob = raw::parse(backup).map_err(|e| corrupt(b_shard, e.0))?;
    let oc = raw::parse(current).map_err(|e| corrupt(c_shard, e.0))?;
    let name_id = properties::property_id(t, "displayName");
    let name_of = |o: &raw::RawObject<'_>| -> Option<String> {
        let (_, v) = o.attributes.iter().find(|(p, _)| Some(*p) == name_id)?;
        match rmp_serde::from_slice::<Value>(v).ok()? {
            Value::String(s) => Some(s.into_string()),
            _ => None,
        }
    };
    let pair = Pair {
        id: y.id,
        object_type: t,
        display_name: name_of(&oc).or_else(|| name_of(&ob)).unwrap_or_default(),
        backup_active: x.is_active(),
        current_active: y.is_active(),
        on_premises: y.flags & FLAG_ON_PREMISES != 0,
    };
    let dynamic = (x.flags | y.flags) & FLAG_DYNAMIC != 0;
    let holder_hidden = !pair.current_active;
    classify(pair, |attrs, links| {
        let value = |shard: u32, bytes: &[u8]| {
            rmp_serde::from_slice::<Value>(bytes).map_err(|e| corrupt(shard, &e.to_string()))
        };
        for_each_difference(&ob.attributes, &oc.attributes, |pid, bv, cv| {
            let compared = |d: &&PropertyDef| {
                d.recoverable
                    && (!holder_hidden || d.read_in_recycle_bin())
                    && !uncompared.skips(t, d.id)
            };
            if let Some(def) = properties::property(t, pid).filter(compared) {
                attrs.push(ChangedAttribute {
                    name: def.name.to_owned(),
                    current: cv.map(|v| value(c_shard, v)).transpose()?,
                    backup: bv.map(|v| value(b_shard, v)).transpose()?,
                });
            }
            Ok(())
        })?;
        fn set_of<'a>(
            o: &raw::RawObject<'a>,
            kind: LinkKind,
        ) -> Result<Option<&'a [u8]>, rmp_serde::decode::Error> {
            for (k, set) in &o.link_sets {
                if rmp_serde::from_slice::<LinkKind>(k)? == kind {
                    return Ok(Some(*set));
                }
            }
            Ok(None)
        }
        for &kind in properties::link_kinds(t) {
            if !properties::link_recoverable(t, kind) {
                continue;
            }
            let bs = set_of(&ob, kind).map_err(|e| corrupt(b_shard, &e.to_string()))?;
            let cs = set_of(&oc, kind).map_err(|e| corrupt(c_shard, &e.to_string()))?;
            if bs == cs {
                continue;
            }
            let decode = |shard: u32, set: Option<&[u8]>| match set {
                None => Ok(Vec::new()),
                Some(bytes) => rmp_serde::from_slice::<Vec<Link>>(bytes)
                    .map_err(|e| corrupt(shard, &e.to_string())),
            };
            let sets = LinkSets {
                kind,
                dynamic: kind == LinkKind::Members && dynamic,
                holder_hidden,
                ends,
            };
            let (bl, cl) = (decode(b_shard, bs)?, decode(c_shard, cs)?);
            sets.changed(&bl, &cl, links);
        }
        Ok(())
    })
}

/// Merges two attribute lists sorted by property id and calls `f(id, backup, current)` for
/// every property whose value differs (absent on one side, or unequal).
fn for_each_difference<T: PartialEq>(
    b: &[(u8, T)],
    c: &[(u8, T)],
    mut f: impl FnMut(u8, Option<&T>, Option<&T>) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let (mut i, mut j) = (0, 0);
    loop {
        match (b.get(i), c.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    f(x.0, Some(&x.1), Some(&y.1))?;
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                f(x.0, Some(&x.1), None)?;
                i += 1;
            }
            (Some(x), None) => {
                f(x.0, Some(&x.1), None)?;
                i += 1;
            }
            (_, Some(y)) => {
                f(y.0, None, Some(&y.1))?;
                j += 1;
            }
            (None, None) => return Ok(()),
        }
    }
}

/// An object's attributes: (property id, value), sorted by id.
type Attributes = [(u8, Value)];

/// The recoverable properties whose values differ, with both values (of an object in the
/// recycle bin now, only those the recycle bin shows).
fn changed_attributes(
    t: ObjectType,
    (b, c): (&Attributes, &Attributes),
    holder_hidden: bool,
    out: &mut Vec<ChangedAttribute>,
) -> Result<(), SnapshotError> {
    for_each_difference(b, c, |pid, bv, cv| {
        let compared =
            |d: &&PropertyDef| d.recoverable && (!holder_hidden || d.read_in_recycle_bin());
        if let Some(def) = properties::property(t, pid).filter(compared) {
            out.push(ChangedAttribute {
                name: def.name.to_owned(),
                current: cv.cloned(),
                backup: bv.cloned(),
            });
        }
        Ok(())
    })
}

/// How to compare an object's links of one kind.
struct LinkSets<'a> {
    kind: LinkKind,
    /// Memberships a dynamic rule computes: shown, never recoverable.
    dynamic: bool,
    /// The holder is in the recycle bin now, so Graph lists none of its links: only links lost
    /// with their far end can be told.
    holder_hidden: bool,
    ends: Ends<'a>,
}

impl LinkSets<'_> {
    /// Merges two sorted link lists into the links that differ (added, removed, or with other
    /// data), leaving out those Graph hides (a far end in the recycle bin in either snapshot,
    /// or a holder in it now) and marking those lost with a hard-deleted far end.
    ///
    /// Grants and app role assignments that Graph re-created with a new id are the same link:
    /// a backup link and a current one of other ids but the same [`link_identity`] are paired
    /// off first and show no change.
    fn changed(&self, b: &[Link], c: &[Link], out: &mut Vec<ChangedLink>) {
        if matches!(
            self.kind,
            LinkKind::OAuth2PermissionGrants | LinkKind::AppRoleAssignedTo
        ) {
            // Only links whose far end both sides compare pair off (a hidden or lost far end
            // is reported as it is).
            let compared = |l: &Link| {
                l.far_end(self.kind)
                    .is_some_and(|id| far_end(self.ends, id) == FarEnd::Compared)
            };
            let (b, c) = unmatched_by_identity(self.kind, b, c, compared);
            return self.merge(&b, &c, out);
        }
        self.merge(b, c, out)
    }

    fn merge(&self, b: &[Link], c: &[Link], out: &mut Vec<ChangedLink>) {
        let (mut i, mut j) = (0, 0);
        while i < b.len() || j < c.len() {
            match (b.get(i), c.get(j)) {
                (Some(x), Some(y)) if x.target == y.target => {
                    if x.data != y.data {
                        self.push(out, x.target, Some(y), Some(x));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.target < y.target => {
                    self.push(out, x.target, None, Some(x));
                    i += 1;
                }
                (Some(x), None) => {
                    self.push(out, x.target, None, Some(x));
                    i += 1;
                }
                (_, Some(y)) => {
                    self.push(out, y.target, Some(y), None);
                    j += 1;
                }
                (None, None) => break,
            }
        }
    }

    fn push(
        &self,
        out: &mut Vec<ChangedLink>,
        target: ObjectId,
        cur: Option<&Link>,
        bak: Option<&Link>,
    ) {
        let end = cur
            .or(bak)
            .and_then(|l| l.far_end(self.kind))
            .map_or(FarEnd::Compared, |id| far_end(self.ends, id));
        let reason = match end {
            FarEnd::Hidden => return,
            FarEnd::Lost if cur.is_none() => Some(NotRecoverableReason::HardDeleted),
            _ if self.holder_hidden => return,
            _ if self.dynamic => Some(NotRecoverableReason::DynamicMembership),
            _ => None,
        };
        let state = |l: Option<&Link>| {
            if l.is_some() {
                LinkState::Present
            } else {
                LinkState::Absent
            }
        };
        out.push(ChangedLink {
            kind: self.kind,
            target,
            current: state(cur),
            backup: state(bak),
            recoverable: reason.is_none(),
            reason,
            current_data: cur.and_then(|l| l.data.clone()),
            backup_data: bak.and_then(|l| l.data.clone()),
        })
    }
}

/// What makes a grant or an app role assignment the same link whatever its id (Graph gives a
/// re-created one a new id): a grant's resource, consent type, principal and scope (as a set of
/// permissions; the client is the holder); an assignment's principal and app role (the resource
/// is the holder). Ids compare without case.
fn link_identity(kind: LinkKind, l: &Link) -> Option<Vec<String>> {
    let Some(Value::Map(d)) = &l.data else {
        return None;
    };
    let text = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    match kind {
        LinkKind::OAuth2PermissionGrants => {
            let scope = d.get("scope").and_then(Value::as_str).unwrap_or_default();
            let perms: Vec<&str> = Link::grant_permissions(scope).into_iter().collect();
            Some(vec![
                text("resourceId"),
                text("consentType"),
                text("principalId"),
                perms.join(" "),
            ])
        }
        LinkKind::AppRoleAssignedTo => Some(vec![text("principalId"), text("appRoleId")]),
        LinkKind::Members | LinkKind::Owners => None,
    }
}

/// The links of two sorted lists left once each backup link whose id is not current is paired
/// with a current link of the same [`link_identity`] whose id is not in the backup (both
/// dropped); only `pairable` links pair. Links of one id on both sides are left for the merge
/// to compare.
fn unmatched_by_identity(
    kind: LinkKind,
    b: &[Link],
    c: &[Link],
    pairable: impl Fn(&Link) -> bool,
) -> (Vec<Link>, Vec<Link>) {
    let has = |list: &[Link], t: ObjectId| list.binary_search_by_key(&t, |l| l.target).is_ok();
    let mut waiting: std::collections::HashMap<Vec<String>, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, l) in b.iter().enumerate().rev() {
        if !has(c, l.target) && pairable(l) {
            if let Some(key) = link_identity(kind, l) {
                waiting.entry(key).or_default().push(i);
            }
        }
    }
    let mut paired_b = vec![false; b.len()];
    let mut cur = Vec::with_capacity(c.len());
    for l in c {
        let partner = if has(b, l.target) || !pairable(l) {
            None
        } else {
            link_identity(kind, l)
                .and_then(|key| waiting.get_mut(&key))
                .and_then(Vec::pop)
        };
        match partner {
            Some(i) => paired_b[i] = true,
            None => cur.push(l.clone()),
        }
    }
    let bak = b
        .iter()
        .zip(paired_b)
        .filter(|(_, paired)| !paired)
        .map(|(l, _)| l.clone())
        .collect();
    (bak, cur)
}

/// The plain way, for comparison: decode every object of both sides and compare them field by
/// field. Same entries as [`diff_shards`]; used by the benchmark as its baseline and by tests.
pub fn diff_decoded(
    backup: &[DirectoryObject],
    current: &[DirectoryObject],
    scope: &Scope,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let lifecycles = |objects: &[DirectoryObject]| -> Vec<(ObjectId, bool)> {
        objects
            .iter()
            .map(|o| (o.id, o.lifecycle.is_active()))
            .collect()
    };
    let all = (lifecycles(backup), lifecycles(current));
    diff_decoded_part((backup, current), (&all.0, &all.1), scope)
}

/// Every object of a snapshot as (id, active), id-sorted.
pub type Lifecycles = [(ObjectId, bool)];

/// [`diff_decoded`] of a part of two snapshots: `part` holds the objects of one id range of
/// each (so that parts can be diffed in parallel), `lifecycles` every object of each as (id,
/// active), where the far ends of links are looked up. All id-sorted.
pub fn diff_decoded_part(
    (backup, current): (&[DirectoryObject], &[DirectoryObject]),
    (backup_all, current_all): (&Lifecycles, &Lifecycles),
    scope: &Scope,
) -> Result<Vec<ReportEntry>, SnapshotError> {
    let matcher = scope.matcher();
    let standing_in = |all: &[(ObjectId, bool)], id: ObjectId| match all
        .binary_search_by_key(&id, |(id, _)| *id)
    {
        Ok(i) if all[i].1 => Standing::Active,
        Ok(_) => Standing::SoftDeleted,
        Err(_) => Standing::Absent,
    };
    let ends = |id: ObjectId| (standing_in(backup_all, id), standing_in(current_all, id));
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let in_scope = |o: &DirectoryObject| matcher.contains(o.id, o.object_type.code());
    while i < backup.len() || j < current.len() {
        match (backup.get(i), current.get(j)) {
            (Some(b), Some(c)) if b.id == c.id => {
                if b != c && (in_scope(b) || in_scope(c)) {
                    if b.object_type == c.object_type {
                        out.extend(compare(b, c, &ends)?);
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
            (b, Some(c)) if b.is_none_or(|b| c.id < b.id) => {
                if in_scope(c) && c.lifecycle.is_active() {
                    out.push(created(c.clone()));
                }
                j += 1;
            }
            (Some(b), _) => {
                if in_scope(b) && b.lifecycle.is_active() {
                    out.push(gone(b.clone()));
                }
                i += 1;
            }
            (None, _) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{SnapshotKind, FORMAT_VERSION};

    fn manifest(not_captured: &[&str]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tenant: "contoso".into(),
            snapshot_id: "s".into(),
            kind: SnapshotKind::Backup,
            created_at: 0,
            shard_bits: 0,
            object_count: 0,
            shards: Vec::new(),
            not_captured: not_captured.iter().map(|s| (*s).to_owned()).collect(),
            standing: Vec::new(),
            digest: String::new(),
        }
    }

    /// Grants and assignments Graph re-created with new ids match their backup links by data:
    /// no change; a different scope, role or principal is still a change.
    #[test]
    fn re_created_grants_and_assignments_match_by_data() {
        let data = |pairs: &[(&str, &str)]| {
            Some(Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect(),
            ))
        };
        let grant = |id: u128, scope: &str| Link {
            target: ObjectId(id),
            data: data(&[
                ("consentType", "AllPrincipals"),
                ("resourceId", &ObjectId(50).to_string()),
                ("scope", scope),
            ]),
        };
        let assignment = |id: u128, role: u128| Link {
            target: ObjectId(id),
            data: data(&[
                ("principalId", &ObjectId(60).to_string()),
                ("appRoleId", &ObjectId(role).to_string()),
            ]),
        };
        let sp = |grants: Vec<Link>, assignments: Vec<Link>| {
            let mut o = DirectoryObject::new(ObjectId(1), ObjectType::ServicePrincipal);
            o.set_links(LinkKind::OAuth2PermissionGrants, grants);
            o.set_links(LinkKind::AppRoleAssignedTo, assignments);
            o
        };
        let changes =
            |backup: DirectoryObject, current: DirectoryObject| -> Vec<(LinkKind, u128)> {
                diff_decoded(&[backup], &[current], &Scope::All)
                    .expect("diff")
                    .iter()
                    .flat_map(|e| e.changed_links.iter().map(|l| (l.kind, l.target.0)))
                    .collect()
            };
        let backup = || {
            sp(
                vec![grant(10, "User.Read Mail.Read")],
                vec![assignment(20, 7)],
            )
        };
        // Re-created: new ids, same data (scope in another order).
        assert_eq!(
            changes(
                backup(),
                sp(
                    vec![grant(90, "Mail.Read User.Read")],
                    vec![assignment(80, 7)]
                )
            ),
            vec![]
        );
        // Another scope or role: a change (removed, added).
        let (g, a) = (
            LinkKind::OAuth2PermissionGrants,
            LinkKind::AppRoleAssignedTo,
        );
        let mut got = changes(
            backup(),
            sp(vec![grant(90, "User.Read")], vec![assignment(80, 8)]),
        );
        got.sort_by_key(|(k, t)| (*k as u8, *t));
        let mut want = vec![(g, 10), (g, 90), (a, 20), (a, 80)];
        want.sort_by_key(|(k, t)| (*k as u8, *t));
        assert_eq!(got, want);
        // Two identical re-created grants for one backup grant: one pairs off, one is new.
        assert_eq!(
            changes(
                backup(),
                sp(
                    vec![
                        grant(90, "User.Read Mail.Read"),
                        grant(91, "User.Read Mail.Read")
                    ],
                    vec![assignment(20, 7)]
                )
            ),
            vec![(g, 91)]
        );
    }

    #[test]
    fn uncompared_properties_are_those_either_snapshot_lacks() {
        let (a, b) = (manifest(&["user.perUserMfaState"]), manifest(&[]));
        let u = Uncompared::of(&[&a, &b]).expect("known names");
        let mfa = properties::property_id(ObjectType::User, "perUserMfaState").expect("kept");
        assert!(u.skips(ObjectType::User, mfa));
        let city = properties::property_id(ObjectType::User, "city").expect("kept");
        assert!(!u.skips(ObjectType::User, city));
        assert!(!u.skips(ObjectType::Group, mfa));
        assert_eq!(
            Uncompared::of(&[&b, &b]).expect("none"),
            Uncompared::default()
        );
        for bad in ["perUserMfaState", "device.x", "user.nonsense"] {
            let err = Uncompared::of(&[&manifest(&[bad])]).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
