//! One tenant's directory as the simulator keeps it: `DirectoryObject`s in per-type maps ordered
//! by id (the paging order), with side indexes for the recycle bins, OAuth2 grants and dynamic
//! groups, and the lifecycle operations (soft delete, restore, purge) Entra applies.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use rewind_common::plan::{unique_values, UniqueKey};
use rewind_common::{DirectoryObject, Lifecycle, Link, LinkKind, ObjectId, ObjectType, Value};

use super::dynamic::DynamicGroups;
use super::error::GraphError;
use super::rule::Rule;

thread_local! {
    /// The changes this thread made to any tenant (see [`changes_on_this_thread`]).
    static CHANGES: Cell<u64> = const { Cell::new(0) };
}

/// How many changes (the change log's entries: an object written, a link added or removed,
/// a dynamic group's members recomputed, an object purged) this thread has made so far. A
/// Graph request runs on one thread from start to end, so the difference across its handler
/// says whether the request changed its tenant, whatever other requests do meanwhile.
pub fn changes_on_this_thread() -> u64 {
    CHANGES.with(Cell::get)
}

/// The soft-deletable directory types served under `/directory/deletedItems`.
pub const DIRECTORY_TYPES: [ObjectType; 4] = [
    ObjectType::User,
    ObjectType::Group,
    ObjectType::Application,
    ObjectType::ServicePrincipal,
];

fn slot(t: ObjectType) -> usize {
    usize::from(t.code().saturating_sub(1))
}

/// The objects of one type: found by id in one hash lookup (a member listing looks up every
/// member), listed in id order (the paging order).
#[derive(Debug, Default, Clone)]
pub struct ObjectMap {
    by_id: HashMap<ObjectId, DirectoryObject, IdHash>,
    order: BTreeSet<ObjectId>,
}

/// Hashes an id by folding and mixing its 128 bits: ids are GUIDs, already spread, and a
/// member listing hashes millions of them.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let folded = (v as u64) ^ ((v >> 64) as u64) ^ self.0;
        let mixed = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = mixed ^ (mixed >> 29);
    }
}

impl ObjectMap {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &ObjectId) -> Option<&DirectoryObject> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &ObjectId) -> Option<&mut DirectoryObject> {
        self.by_id.get_mut(id)
    }

    pub fn insert(&mut self, id: ObjectId, object: DirectoryObject) -> Option<DirectoryObject> {
        self.order.insert(id);
        self.by_id.insert(id, object)
    }

    pub fn remove(&mut self, id: &ObjectId) -> Option<DirectoryObject> {
        self.order.remove(id);
        self.by_id.remove(id)
    }

    /// The objects in id order.
    pub fn values(&self) -> impl Iterator<Item = &DirectoryObject> + '_ {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// The objects with ids in `range`, in id order.
    pub fn range(
        &self,
        range: (Bound<ObjectId>, Bound<ObjectId>),
    ) -> impl Iterator<Item = (&ObjectId, &DirectoryObject)> + '_ {
        self.order
            .range(range)
            .filter_map(|id| self.by_id.get(id).map(|o| (id, o)))
    }

    /// Every object, mutably, in id order.
    pub fn values_mut(&mut self) -> Vec<&mut DirectoryObject> {
        let mut all: Vec<&mut DirectoryObject> = self.by_id.values_mut().collect();
        all.sort_unstable_by_key(|o| o.id);
        all
    }
}

/// A tenant's objects and indexes.
#[derive(Debug)]
pub struct TenantData {
    maps: Vec<ObjectMap>,
    /// Soft-deleted objects by deletion time (for purging).
    deleted_by_time: BTreeSet<(i64, ObjectId, u8)>,
    /// Soft-deleted ids per type (for the recycle-bin listings).
    deleted: Vec<BTreeSet<ObjectId>>,
    /// OAuth2 grant id → the client service principal holding it as a link.
    grants: BTreeMap<ObjectId, ObjectId>,
    /// Dynamic groups whose rule the simulator understands, indexed by the values they need.
    dynamic: DynamicGroups,
    /// The unique values (`rewind_common::plan::unique_values`) of active objects: a restore
    /// that would duplicate one is refused, as Graph refuses it.
    unique: HashMap<(UniqueKey, String), BTreeSet<ObjectId>>,
    /// The change counter: every change of an object takes the next number (for delta queries).
    seq: u64,
    /// The last change of each object (purged ones included), by change number.
    changes: BTreeMap<u64, (ObjectId, u8)>,
    last_change: HashMap<ObjectId, u64>,
}

/// One entry of the change log: the object, its type, and the change number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeEntry {
    pub seq: u64,
    pub id: ObjectId,
    pub object_type: ObjectType,
}

impl Default for TenantData {
    fn default() -> Self {
        Self {
            maps: vec![ObjectMap::default(); ObjectType::ALL.len()],
            deleted_by_time: BTreeSet::new(),
            deleted: vec![BTreeSet::new(); ObjectType::ALL.len()],
            grants: BTreeMap::new(),
            dynamic: DynamicGroups::default(),
            unique: HashMap::new(),
            seq: 0,
            changes: BTreeMap::new(),
            last_change: HashMap::new(),
        }
    }
}

impl TenantData {
    pub fn map(&self, t: ObjectType) -> &ObjectMap {
        &self.maps[slot(t)]
    }

    pub fn object_count(&self) -> usize {
        self.maps.iter().map(ObjectMap::len).sum()
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        ObjectType::ALL
            .into_iter()
            .map(|t| (t.as_str(), self.map(t).len()))
            .collect()
    }

    pub fn all_objects(&self) -> impl Iterator<Item = &DirectoryObject> {
        self.maps.iter().flat_map(ObjectMap::values)
    }

    pub fn get(&self, t: ObjectType, id: ObjectId) -> Option<&DirectoryObject> {
        self.map(t).get(&id)
    }

    /// The object if it exists and is not soft-deleted.
    pub fn active(&self, t: ObjectType, id: ObjectId) -> Option<&DirectoryObject> {
        self.get(t, id).filter(|o| o.lifecycle.is_active())
    }

    /// The object of any type with this id.
    pub fn find(&self, id: ObjectId) -> Option<&DirectoryObject> {
        ObjectType::ALL.into_iter().find_map(|t| self.get(t, id))
    }

    /// The active directory object (user, group, application, service principal) with this id.
    pub fn find_directory_object(&self, id: ObjectId) -> Option<&DirectoryObject> {
        DIRECTORY_TYPES.into_iter().find_map(|t| self.active(t, id))
    }

    pub fn deleted_ids(&self, t: ObjectType) -> &BTreeSet<ObjectId> {
        &self.deleted[slot(t)]
    }

    pub fn grants(&self) -> &BTreeMap<ObjectId, ObjectId> {
        &self.grants
    }

    /// The number of the latest change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Continues numbering changes after `seq` (a loaded state file's counter).
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Objects whose last change came after change `after`, in change order.
    pub fn changes_after(&self, after: u64) -> impl Iterator<Item = ChangeEntry> + '_ {
        self.changes
            .range(after.saturating_add(1)..)
            .filter_map(|(seq, (id, code))| {
                ObjectType::from_code(*code).map(|object_type| ChangeEntry {
                    seq: *seq,
                    id: *id,
                    object_type,
                })
            })
    }

    fn record(&mut self, t: ObjectType, id: ObjectId) {
        CHANGES.with(|c| c.set(c.get().wrapping_add(1)));
        self.seq += 1;
        if let Some(old) = self.last_change.insert(id, self.seq) {
            self.changes.remove(&old);
        }
        self.changes.insert(self.seq, (id, t.code()));
    }

    /// Inserts or replaces an object and recomputes the dynamic groups it affects.
    pub fn upsert(&mut self, object: DirectoryObject) {
        let (t, id) = (object.object_type, object.id);
        let was_in = if t == ObjectType::User && !self.dynamic.is_empty() {
            self.maps[slot(t)]
                .get(&id)
                .map(|old| self.dynamic.groups_of(old))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.upsert_quiet(object);
        if t == ObjectType::User {
            self.refresh_user(id, &was_in);
        }
        if self.dynamic.contains(id) {
            self.recompute_group(id);
        }
    }

    /// Inserts or replaces many objects, with the same result as upserting them one by one,
    /// but each dynamic group's members are rewritten once for the whole batch (in one merge,
    /// or one recomputation when the group itself is in the batch) rather than once per user.
    pub fn upsert_many(&mut self, objects: Vec<DirectoryObject>) {
        if self.dynamic.is_empty()
            && !objects
                .iter()
                .any(|o| o.object_type == ObjectType::Group && o.dynamic_membership)
        {
            for o in objects {
                self.upsert_quiet(o);
            }
            return;
        }
        // Group → (user, whether it is a member now), last verdict per user winning.
        let mut pending: HashMap<ObjectId, Vec<(ObjectId, bool)>> = HashMap::new();
        let mut recompute = Vec::new();
        for object in objects {
            let (t, id) = (object.object_type, object.id);
            if t != ObjectType::User {
                self.upsert_quiet(object);
                // The object's own links replace whatever users did to it before.
                pending.remove(&id);
                if self.dynamic.contains(id) {
                    recompute.push(id);
                }
                continue;
            }
            let was_in = self.maps[slot(t)]
                .get(&id)
                .map(|old| self.dynamic.groups_of(old))
                .unwrap_or_default();
            self.upsert_quiet(object);
            let now_in = self.maps[slot(t)]
                .get(&id)
                .map(|u| self.dynamic.groups_of(u))
                .unwrap_or_default();
            for g in &was_in {
                if now_in.binary_search(g).is_err() {
                    pending.entry(*g).or_default().push((id, false));
                }
            }
            for g in now_in {
                pending.entry(g).or_default().push((id, true));
            }
        }
        for gid in recompute {
            pending.remove(&gid);
            self.recompute_group(gid);
        }
        let mut changed = Vec::new();
        let groups = &mut self.maps[slot(ObjectType::Group)];
        for (gid, mut verdicts) in pending {
            let Some(group) = groups.get_mut(&gid) else {
                continue;
            };
            // Stable sort, then keep each user's last verdict.
            verdicts.sort_by_key(|(u, _)| *u);
            let mut last: Vec<(ObjectId, bool)> = Vec::with_capacity(verdicts.len());
            for v in verdicts {
                match last.last_mut() {
                    Some(l) if l.0 == v.0 => *l = v,
                    _ => last.push(v),
                }
            }
            // Merge into the member list, moving (not cloning) the links kept.
            let current = group
                .links
                .iter_mut()
                .find(|set| set.kind == LinkKind::Members)
                .map(|set| std::mem::take(&mut set.links))
                .unwrap_or_default();
            let mut merged: Vec<Link> = Vec::with_capacity(current.len() + last.len());
            let mut differs = false;
            let mut kept = current.into_iter().peekable();
            for (user, member) in last {
                while let Some(l) = kept.next_if(|l| l.target < user) {
                    merged.push(l);
                }
                let present = kept.next_if(|l| l.target == user);
                differs |= present.is_some() != member;
                match present {
                    Some(l) if member => merged.push(l),
                    None if member => merged.push(Link::to(user)),
                    _ => {}
                }
            }
            merged.extend(kept);
            group.set_links(LinkKind::Members, merged);
            if differs {
                changed.push(gid);
            }
        }
        for gid in changed {
            self.record(ObjectType::Group, gid);
        }
    }

    /// Inserts or replaces an object without recomputing dynamic groups (for loading a saved
    /// state, whose computed memberships are already there).
    pub fn upsert_quiet(&mut self, mut object: DirectoryObject) {
        // Objects are built by pushing; their spare capacity would double the memory held.
        object.attributes.shrink_to_fit();
        for set in &mut object.links {
            set.links.shrink_to_fit();
        }
        object.links.shrink_to_fit();
        if let Some(old) = self.maps[slot(object.object_type)].remove(&object.id) {
            self.unindex(&old);
        }
        self.index(&object);
        self.record(object.object_type, object.id);
        self.maps[slot(object.object_type)].insert(object.id, object);
    }

    /// Applies `f` to a copy of the object and stores the copy when `f` succeeds and the copy
    /// differs (writing the values already there changes nothing, and records no change).
    pub fn update<R>(
        &mut self,
        t: ObjectType,
        id: ObjectId,
        f: impl FnOnce(&mut DirectoryObject) -> Result<R, GraphError>,
    ) -> Result<R, GraphError> {
        let mut copy = self
            .get(t, id)
            .cloned()
            .ok_or_else(|| GraphError::not_found(id))?;
        let r = f(&mut copy)?;
        if self.get(t, id) != Some(&copy) {
            self.upsert(copy);
        }
        Ok(r)
    }

    /// Changes an object's member, owner or app role assignment links in place (no index
    /// depends on them, so large groups are not copied). `f` must check before it mutates.
    pub fn modify_links<R>(
        &mut self,
        t: ObjectType,
        id: ObjectId,
        f: impl FnOnce(&mut DirectoryObject) -> Result<R, GraphError>,
    ) -> Result<R, GraphError> {
        let o = self.maps[slot(t)]
            .get_mut(&id)
            .ok_or_else(|| GraphError::not_found(id))?;
        let r = f(o)?;
        self.record(t, id);
        Ok(r)
    }

    fn index(&mut self, o: &DirectoryObject) {
        if o.lifecycle.is_active() {
            for key in unique_values(o) {
                self.unique.entry(key).or_default().insert(o.id);
            }
        }
        if o.object_type == ObjectType::User {
            self.dynamic.index_user(o);
        }
        if let Lifecycle::SoftDeleted { deleted_at } = o.lifecycle {
            self.deleted_by_time
                .insert((deleted_at, o.id, o.object_type.code()));
            self.deleted[slot(o.object_type)].insert(o.id);
        }
        if o.object_type == ObjectType::ServicePrincipal {
            for l in o.links_of(LinkKind::OAuth2PermissionGrants) {
                self.grants.insert(l.target, o.id);
            }
        }
        if o.object_type == ObjectType::Group && o.dynamic_membership {
            if let Some(rule) = o
                .get("membershipRule")
                .and_then(Value::as_str)
                .and_then(|r| Rule::parse(r).ok())
            {
                self.dynamic
                    .insert(o.id, rule, &self.maps[slot(ObjectType::User)]);
            }
        }
    }

    fn unindex(&mut self, o: &DirectoryObject) {
        if o.lifecycle.is_active() {
            for key in unique_values(o) {
                if let Some(ids) = self.unique.get_mut(&key) {
                    ids.remove(&o.id);
                    if ids.is_empty() {
                        self.unique.remove(&key);
                    }
                }
            }
        }
        if let Lifecycle::SoftDeleted { deleted_at } = o.lifecycle {
            self.deleted_by_time
                .remove(&(deleted_at, o.id, o.object_type.code()));
            self.deleted[slot(o.object_type)].remove(&o.id);
        }
        for l in o.links_of(LinkKind::OAuth2PermissionGrants) {
            self.grants.remove(&l.target);
        }
        if o.object_type == ObjectType::User {
            self.dynamic.unindex_user(o);
        }
        self.dynamic.remove(o.id);
    }

    /// Adds or removes the user in the dynamic groups whose verdict may have changed: those it
    /// matched before the change (`was_in`) and those it matches now (every other group's
    /// verdict was false and stays false).
    fn refresh_user(&mut self, user_id: ObjectId, was_in: &[ObjectId]) {
        if self.dynamic.is_empty() {
            return;
        }
        let Some(user) = self.maps[slot(ObjectType::User)].get(&user_id) else {
            return;
        };
        let now_in = self.dynamic.groups_of(user);
        let mut touched: Vec<ObjectId> = was_in.iter().chain(&now_in).copied().collect();
        touched.sort_unstable();
        touched.dedup();
        let mut changed = Vec::new();
        let groups = &mut self.maps[slot(ObjectType::Group)];
        for gid in touched {
            let member = now_in.binary_search(&gid).is_ok();
            if let Some(group) = groups.get_mut(&gid) {
                let is_member = group
                    .links_of(LinkKind::Members)
                    .binary_search_by_key(&user_id, |l| l.target)
                    .is_ok();
                if member && !is_member {
                    group.add_link(LinkKind::Members, Link::to(user_id));
                    changed.push(gid);
                } else if !member && is_member {
                    group.remove_link(LinkKind::Members, user_id);
                    changed.push(gid);
                }
            }
        }
        for gid in changed {
            self.record(ObjectType::Group, gid);
        }
    }

    /// Recomputes one dynamic group's members (from the users carrying the values its rule
    /// requires, or from all users when the rule requires none).
    pub fn recompute_group(&mut self, group_id: ObjectId) {
        let Some(members) = self
            .dynamic
            .members(group_id, &self.maps[slot(ObjectType::User)])
        else {
            return;
        };
        if let Some(group) = self.maps[slot(ObjectType::Group)].get_mut(&group_id) {
            if group.links_of(LinkKind::Members) != members.as_slice() {
                group.set_links(LinkKind::Members, members);
                self.record(ObjectType::Group, group_id);
            }
        }
    }

    /// Puts an active object in its recycle bin at `now`.
    pub fn soft_delete(&mut self, t: ObjectType, id: ObjectId, now: i64) -> Result<(), GraphError> {
        if self.active(t, id).is_none() {
            return Err(GraphError::not_found(id));
        }
        self.update(t, id, |o| {
            o.lifecycle = Lifecycle::SoftDeleted { deleted_at: now };
            Ok(())
        })
    }

    /// Brings a soft-deleted object back with its id, properties and links.
    pub fn restore(&mut self, t: ObjectType, id: ObjectId) -> Result<(), GraphError> {
        if !self.deleted_ids(t).contains(&id) {
            return Err(GraphError::not_found(id));
        }
        if let Some(o) = self.get(t, id) {
            if t == ObjectType::ServicePrincipal {
                self.check_application_not_deleted(o)?;
            }
            for (key, value) in unique_values(o) {
                let taken = self
                    .unique
                    .get(&(key, value.clone()))
                    .is_some_and(|ids| ids.iter().any(|other| *other != id));
                if taken {
                    return Err(GraphError::bad_request(format!(
                        "Another object with the same value for property {} already exists: \
                         '{value}'.",
                        key.property()
                    )));
                }
            }
        }
        self.update(t, id, |o| {
            o.lifecycle = Lifecycle::Active;
            Ok(())
        })
    }

    /// Refuses to restore a service principal whose application (the one with its `appId`) is
    /// in the recycle bin, as Graph refuses it.
    fn check_application_not_deleted(&self, sp: &DirectoryObject) -> Result<(), GraphError> {
        let Some(app_id) = sp.get("appId").and_then(Value::as_str) else {
            return Ok(());
        };
        let deleted_app = self
            .deleted_ids(ObjectType::Application)
            .iter()
            .filter_map(|id| self.get(ObjectType::Application, *id))
            .find(|a| a.get("appId").and_then(Value::as_str) == Some(app_id));
        match deleted_app {
            None => Ok(()),
            Some(app) => Err(GraphError::bad_request(format!(
                "The service principal cannot be restored while its application '{}' (id {}, \
                 appId {app_id}) is in the recycle bin; restore the application first.",
                app.get("displayName").and_then(Value::as_str).unwrap_or(""),
                app.id
            ))),
        }
    }

    /// The first soft-deleted object due for purging, if any is due at `now`.
    pub fn purge_due(&self, now: i64, after_secs: i64) -> bool {
        self.deleted_by_time
            .first()
            .is_some_and(|(at, _, _)| at.saturating_add(after_secs) <= now)
    }

    /// Hard-deletes every soft-deleted object older than `after_secs`; returns how many.
    pub fn purge_expired(&mut self, now: i64, after_secs: i64) -> usize {
        let due: Vec<(ObjectType, ObjectId)> = self
            .deleted_by_time
            .iter()
            .take_while(|(at, _, _)| at.saturating_add(after_secs) <= now)
            .filter_map(|(_, id, code)| ObjectType::from_code(*code).map(|t| (t, *id)))
            .collect();
        self.purge(&due)
    }

    /// Hard-deletes objects (active or not) and every membership, ownership and app role
    /// assignment pointing at them; returns how many existed.
    pub fn purge(&mut self, objects: &[(ObjectType, ObjectId)]) -> usize {
        let mut gone = HashSet::new();
        for &(t, id) in objects {
            if let Some(old) = self.maps[slot(t)].remove(&id) {
                self.unindex(&old);
                self.record(t, id);
                gone.insert(id);
            }
        }
        if gone.is_empty() {
            return 0;
        }
        let mut touched = Vec::new();
        for t in [
            ObjectType::Group,
            ObjectType::Application,
            ObjectType::ServicePrincipal,
        ] {
            for o in self.maps[slot(t)].values_mut() {
                if o.links.is_empty() {
                    continue;
                }
                let before: usize = o.links.iter().map(|s| s.links.len()).sum();
                for set in &mut o.links {
                    set.links.retain(|l| {
                        if gone.contains(&l.target) {
                            return false;
                        }
                        if set.kind == LinkKind::AppRoleAssignedTo {
                            let principal = match &l.data {
                                Some(Value::Map(m)) => m
                                    .get("principalId")
                                    .and_then(Value::as_str)
                                    .and_then(|s| s.parse::<ObjectId>().ok()),
                                _ => None,
                            };
                            return !principal.is_some_and(|p| gone.contains(&p));
                        }
                        true
                    });
                }
                o.links.retain(|s| !s.links.is_empty());
                let after: usize = o.links.iter().map(|s| s.links.len()).sum();
                if after != before {
                    touched.push((t, o.id));
                }
            }
        }
        for (t, id) in touched {
            self.record(t, id);
        }
        gone.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(n: u128, dept: &str) -> DirectoryObject {
        let mut u = DirectoryObject::new(ObjectId(n), ObjectType::User);
        u.set("department", dept.into());
        u
    }

    #[test]
    fn lifecycle_and_dynamic_groups() {
        let mut d = TenantData::default();
        let mut g = DirectoryObject::new(ObjectId(100), ObjectType::Group);
        g.dynamic_membership = true;
        g.set("membershipRule", r#"user.department -eq "Sales""#.into());
        let mut s = DirectoryObject::new(ObjectId(101), ObjectType::Group);
        s.add_link(LinkKind::Members, Link::to(ObjectId(2)));
        d.upsert(g);
        d.upsert(s);
        d.upsert(user(1, "Sales"));
        d.upsert(user(2, "Support"));
        let members = |d: &TenantData, g| {
            d.get(ObjectType::Group, ObjectId(g))
                .map(|g| g.links_of(LinkKind::Members).len())
        };
        assert_eq!(members(&d, 100), Some(1));
        d.upsert(user(2, "Sales"));
        assert_eq!(members(&d, 100), Some(2));
        d.soft_delete(ObjectType::User, ObjectId(2), 10).unwrap();
        assert_eq!(members(&d, 100), Some(1));
        assert_eq!(
            members(&d, 101),
            Some(1),
            "static link kept while soft-deleted"
        );
        assert!(!d.purge_due(20, 30));
        assert!(d.purge_due(40, 30));
        assert_eq!(d.purge_expired(40, 30), 1);
        assert_eq!(members(&d, 101), Some(0));
        assert!(d.find(ObjectId(2)).is_none());
    }
}
