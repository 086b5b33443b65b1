//! The index of dynamic groups: which groups a user can belong to, found by (property,
//! lowercased value) lookups instead of evaluating every rule, and which active users carry
//! each such value, so that a group's members are computed without a pass over every user.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rewind_common::{DirectoryObject, Link, ObjectId};

use super::rule::{with_property_text, Rule};
use super::store::ObjectMap;

/// A dynamic group's rule and how it is indexed.
#[derive(Debug)]
struct Entry {
    rule: Rule,
    /// One required `(property, lowercased value)` per alternative; empty when some
    /// alternative requires none (the rule is then evaluated for every user).
    keys: Vec<(u8, String)>,
}

/// Dynamic groups whose rule the simulator understands, indexed.
#[derive(Debug, Default)]
pub struct DynamicGroups {
    entries: BTreeMap<ObjectId, Entry>,
    /// property → lowercased value → the indexed groups that require it.
    groups_by_value: HashMap<u8, HashMap<String, Vec<ObjectId>>>,
    /// Groups whose rule has an alternative without an `-eq` clause.
    evaluated: BTreeSet<ObjectId>,
    /// property → lowercased value → the active users carrying it, for every property some
    /// indexed rule requires.
    users_by_value: HashMap<u8, HashMap<String, BTreeSet<ObjectId>>>,
}

impl DynamicGroups {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, group: ObjectId) -> bool {
        self.entries.contains_key(&group)
    }

    /// Adds (or replaces) a group's rule; `users` are all the tenant's users, read once when
    /// the rule needs a property no rule needed before.
    pub fn insert(&mut self, group: ObjectId, rule: Rule, users: &ObjectMap) {
        self.remove(group);
        let keys = rule.required_values().unwrap_or_default();
        if keys.is_empty() {
            self.evaluated.insert(group);
        }
        for (property, value) in &keys {
            let by_value = self.groups_by_value.entry(*property).or_default();
            let groups = by_value.entry(value.clone()).or_default();
            if !groups.contains(&group) {
                groups.push(group);
            }
            if !self.users_by_value.contains_key(property) {
                let mut index: HashMap<String, BTreeSet<ObjectId>> = HashMap::new();
                for u in users.values().filter(|u| u.lifecycle.is_active()) {
                    if let Some(text) = with_property_text(u, *property, |t| t.map(str::to_owned)) {
                        index.entry(text).or_default().insert(u.id);
                    }
                }
                self.users_by_value.insert(*property, index);
            }
        }
        self.entries.insert(group, Entry { rule, keys });
    }

    pub fn remove(&mut self, group: ObjectId) {
        let Some(entry) = self.entries.remove(&group) else {
            return;
        };
        self.evaluated.remove(&group);
        for (property, value) in &entry.keys {
            if let Some(by_value) = self.groups_by_value.get_mut(property) {
                if let Some(groups) = by_value.get_mut(value) {
                    groups.retain(|g| *g != group);
                    if groups.is_empty() {
                        by_value.remove(value);
                    }
                }
            }
        }
    }

    /// Records an active user's values of the indexed properties.
    pub fn index_user(&mut self, user: &DirectoryObject) {
        if !user.lifecycle.is_active() {
            return;
        }
        for (property, index) in &mut self.users_by_value {
            with_property_text(user, *property, |t| {
                if let Some(t) = t {
                    match index.get_mut(t) {
                        Some(ids) => {
                            ids.insert(user.id);
                        }
                        None => {
                            index.insert(t.to_owned(), BTreeSet::from([user.id]));
                        }
                    }
                }
            });
        }
    }

    /// Forgets what [`Self::index_user`] recorded.
    pub fn unindex_user(&mut self, user: &DirectoryObject) {
        if !user.lifecycle.is_active() {
            return;
        }
        for (property, index) in &mut self.users_by_value {
            with_property_text(user, *property, |t| {
                if let Some(t) = t {
                    if let Some(ids) = index.get_mut(t) {
                        ids.remove(&user.id);
                        if ids.is_empty() {
                            index.remove(t);
                        }
                    }
                }
            });
        }
    }

    /// The dynamic groups whose rule the user matches (none for an inactive user), sorted.
    pub fn groups_of(&self, user: &DirectoryObject) -> Vec<ObjectId> {
        let mut groups = Vec::new();
        if !user.lifecycle.is_active() || self.entries.is_empty() {
            return groups;
        }
        for (property, by_value) in &self.groups_by_value {
            with_property_text(user, *property, |t| {
                if let Some(candidates) = t.and_then(|t| by_value.get(t)) {
                    groups.extend(candidates.iter().copied());
                }
            });
        }
        groups.extend(self.evaluated.iter().copied());
        groups.sort_unstable();
        groups.dedup();
        groups.retain(|g| self.entries.get(g).is_some_and(|e| e.rule.matches(user)));
        groups
    }

    /// The members a dynamic group's rule gives it now, sorted (`None` if it has no rule).
    pub fn members(&self, group: ObjectId, users: &ObjectMap) -> Option<Vec<Link>> {
        let entry = self.entries.get(&group)?;
        if entry.keys.is_empty() {
            return Some(
                users
                    .values()
                    .filter(|u| u.lifecycle.is_active() && entry.rule.matches(u))
                    .map(|u| Link::to(u.id))
                    .collect(),
            );
        }
        let mut candidates: Vec<ObjectId> = Vec::new();
        for (property, value) in &entry.keys {
            if let Some(ids) = self
                .users_by_value
                .get(property)
                .and_then(|index| index.get(value))
            {
                candidates.extend(ids.iter().copied());
            }
        }
        if entry.keys.len() > 1 {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let exact = entry.rule.is_any_of_equalities();
        Some(
            candidates
                .into_iter()
                .filter(|id| {
                    exact
                        || users
                            .get(id)
                            .is_some_and(|u| u.lifecycle.is_active() && entry.rule.matches(u))
                })
                .map(Link::to)
                .collect(),
        )
    }
}
