//! How a difference report compares with the incident generator's expected report: entry by
//! entry (type, change, action, reason, display name, changed attribute names, and every
//! changed link with its states, recoverability and reason). Used by the end-to-end tests,
//! the cluster tests and the demo.

use std::collections::BTreeMap;

use rewind_common::{ObjectId, ReportEntry};

use super::{ExpectedEntry, ExpectedLink, ExpectedReport};

/// How the engine's report compares with the expected one.
#[derive(Debug, Default)]
pub struct Tally {
    pub expected: usize,
    pub matched: usize,
    /// Expected ids the report lacks.
    pub missing: Vec<ObjectId>,
    /// Report ids the expected report lacks.
    pub extra: Vec<ObjectId>,
    /// Entries that differ, in words.
    pub differing: Vec<String>,
    /// Ids the report holds more than once.
    pub repeated: Vec<ObjectId>,
}

impl Tally {
    /// Whether the report is exactly the expected one.
    pub fn exact(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.differing.is_empty()
            && self.repeated.is_empty()
            && self.matched == self.expected
    }
}

fn link_key(kind: rewind_common::LinkKind, target: ObjectId) -> (String, ObjectId) {
    (kind.as_str().to_owned(), target)
}

/// The differences between an expected entry and the engine's, in words (none when equal).
pub fn differences(x: &ExpectedEntry, e: &ReportEntry) -> Vec<String> {
    let mut out = Vec::new();
    let mut same = |what: &str, want: String, got: String| {
        if want != got {
            out.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    same(
        "type",
        format!("{:?}", x.object_type),
        format!("{:?}", e.object_type),
    );
    same(
        "change",
        format!("{:?}", x.change),
        format!("{:?}", e.change),
    );
    same(
        "action",
        format!("{:?}", x.action),
        format!("{:?}", e.action),
    );
    same(
        "reason",
        format!("{:?}", x.reason),
        format!("{:?}", e.reason),
    );
    if !x.display_name.is_empty() {
        same(
            "display name",
            x.display_name.clone(),
            e.display_name.clone(),
        );
    }
    let mut want_attrs = x.changed_attributes.clone();
    want_attrs.sort();
    let mut got_attrs: Vec<String> = e
        .changed_attributes
        .iter()
        .map(|a| a.name.clone())
        .collect();
    got_attrs.sort();
    same(
        "attributes",
        format!("{want_attrs:?}"),
        format!("{got_attrs:?}"),
    );
    let want_links: BTreeMap<_, &ExpectedLink> = x
        .changed_links
        .iter()
        .map(|l| (link_key(l.kind, l.target), l))
        .collect();
    let got_links: BTreeMap<_, _> = e
        .changed_links
        .iter()
        .map(|l| (link_key(l.kind, l.target), l))
        .collect();
    for (k, w) in &want_links {
        match got_links.get(k) {
            None => out.push(format!("link {} {} missing", k.0, k.1)),
            Some(g) => {
                let want = (w.current, w.backup, w.recoverable, w.reason);
                let got = (g.current, g.backup, g.recoverable, g.reason);
                if want != got {
                    out.push(format!(
                        "link {} {}: expected {want:?}, got {got:?}",
                        k.0, k.1
                    ));
                }
            }
        }
    }
    for k in got_links.keys().filter(|k| !want_links.contains_key(*k)) {
        out.push(format!("link {} {} not expected", k.0, k.1));
    }
    out
}

/// Compares `report` with `expected`.
pub fn tally(expected: &ExpectedReport, report: &[ReportEntry]) -> Tally {
    let mut got: BTreeMap<ObjectId, &ReportEntry> = BTreeMap::new();
    let mut repeated = Vec::new();
    for e in report {
        if got.insert(e.id, e).is_some() {
            repeated.push(e.id);
        }
    }
    let mut t = Tally {
        expected: expected.entries.len(),
        repeated,
        ..Tally::default()
    };
    for x in &expected.entries {
        match got.get(&x.id) {
            None => t.missing.push(x.id),
            Some(e) => {
                let d = differences(x, e);
                if d.is_empty() {
                    t.matched += 1;
                } else {
                    t.differing
                        .push(format!("{} {}: {}", x.object_type, x.id, d.join("; ")));
                }
            }
        }
    }
    t.extra = report
        .iter()
        .filter(|e| expected.entry(e.id).is_none())
        .map(|e| e.id)
        .collect();
    t
}
