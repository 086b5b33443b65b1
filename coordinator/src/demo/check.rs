//! How the demo checks a difference report read through the API against the incident
//! generator's expected report. The API writes Microsoft's change objects, which say less than
//! a `ReportEntry` (no kind of change, one `recoveryAction` for two of Rewind's actions, no
//! reason per link), so both sides are reduced to what a change object shows — id, entity
//! type, display name, recovery action, reason, the names of the changed attributes, and each
//! changed link with its direction — and compared entry by entry. The rest of an entry is
//! compared on the report the engine stored (`incident::compare::tally`), which the API pages.

use std::collections::BTreeMap;
use std::fmt;

use rewind_common::report::LinkState;
use rewind_common::ObjectId;
use rewind_loadtest::incident::{ExpectedEntry, ExpectedReport};
use serde_json::Value as Json;

use crate::api::change::{action_name, reason_name};

/// A changed link as a change object shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkView {
    /// The link kind's name (`members`, ...), as in `<kind>@delta`.
    pub kind: String,
    pub target: ObjectId,
    /// Whether the backup holds the link (a recovery adds it back), else the current state
    /// holds it (`@removed`: a recovery removes it).
    pub in_backup: bool,
    /// Why the link is not recoverable (`notRecoverableReason` of the item).
    pub reason: Option<String>,
}

/// A report entry as a change object shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    pub id: ObjectId,
    /// Microsoft's `entityTypeName`.
    pub entity_type: String,
    pub display_name: String,
    /// `recoveryAction` as the API writes it.
    pub action: String,
    /// `notRecoverableReason` (Rewind's extension).
    pub reason: Option<String>,
    /// Sorted names of the changed attributes.
    pub attributes: Vec<String>,
    /// Sorted.
    pub links: Vec<LinkView>,
}

impl fmt::Display for LinkView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.in_backup {
            "in the backup"
        } else {
            "added since"
        };
        write!(f, "{} {} ({how}", self.kind, self.target)?;
        match &self.reason {
            Some(r) => write!(f, ", not recoverable: {r})"),
            None => f.write_str(")"),
        }
    }
}

impl fmt::Display for EntryView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:?}",
            self.entity_type, self.id, self.display_name
        )
    }
}

/// What the API should show of an expected entry.
pub fn expected_view(e: &ExpectedEntry) -> EntryView {
    let mut attributes = e.changed_attributes.clone();
    attributes.sort();
    let mut links: Vec<LinkView> = e
        .changed_links
        .iter()
        .map(|l| LinkView {
            kind: l.kind.as_str().to_owned(),
            target: l.target,
            in_backup: l.backup == LinkState::Present,
            reason: l.reason.map(|r| reason_name(r).to_owned()),
        })
        .collect();
    links.sort();
    EntryView {
        id: e.id,
        entity_type: e.object_type.entity_type_name().to_owned(),
        display_name: e.display_name.clone(),
        action: action_name(e.action).to_owned(),
        reason: e.reason.map(|r| reason_name(r).to_owned()),
        attributes,
        links,
    }
}

/// Reads a change object of `getChanges`; an error names what is missing.
pub fn change_view(change: &Json) -> Result<EntryView, String> {
    let text = |key: &str| {
        change[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("a change object without {key:?}: {change}"))
    };
    let id: ObjectId = text("id")?
        .parse()
        .map_err(|_| format!("a change object whose id is not a GUID: {change}"))?;
    let delta = &change["deltaFromCurrent"];
    let mut attributes = Vec::new();
    let mut links = Vec::new();
    if let Some(members) = delta.as_object() {
        for (key, value) in members {
            if let Some(kind) = key.strip_suffix("@delta") {
                for item in value.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    let target = item["id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("{id}: a {key} item without a GUID id: {item}"))?;
                    links.push(LinkView {
                        kind: kind.to_owned(),
                        target,
                        in_backup: item.get("@removed").is_none(),
                        reason: item["notRecoverableReason"].as_str().map(str::to_owned),
                    });
                }
            } else if !key.contains('@') {
                attributes.push(key.clone());
            }
        }
    }
    attributes.sort();
    links.sort();
    Ok(EntryView {
        id,
        entity_type: text("entityTypeName")?,
        display_name: change["displayName"].as_str().unwrap_or("").to_owned(),
        action: text("recoveryAction")?,
        reason: change["notRecoverableReason"].as_str().map(str::to_owned),
        attributes,
        links,
    })
}

/// How the entries read through the API compare with the expected report.
#[derive(Debug, Default)]
pub struct Comparison {
    pub expected: usize,
    pub read: usize,
    pub matched: usize,
    /// Each difference in words, naming the entry.
    pub differences: Vec<String>,
}

impl Comparison {
    pub fn exact(&self) -> bool {
        self.differences.is_empty() && self.matched == self.expected && self.read == self.expected
    }
}

/// The differences between two views of one entry, in words.
fn differences(want: &EntryView, got: &EntryView) -> Vec<String> {
    let mut out = Vec::new();
    let mut same = |what: &str, w: String, g: String| {
        if w != g {
            out.push(format!("{what}: expected {w}, got {g}"));
        }
    };
    same("type", want.entity_type.clone(), got.entity_type.clone());
    if !want.display_name.is_empty() {
        same(
            "display name",
            format!("{:?}", want.display_name),
            format!("{:?}", got.display_name),
        );
    }
    same("action", want.action.clone(), got.action.clone());
    same(
        "reason",
        format!("{:?}", want.reason),
        format!("{:?}", got.reason),
    );
    same(
        "attributes",
        format!("{:?}", want.attributes),
        format!("{:?}", got.attributes),
    );
    for l in want.links.iter().filter(|l| !got.links.contains(l)) {
        out.push(format!("link {l} missing"));
    }
    for l in got.links.iter().filter(|l| !want.links.contains(l)) {
        out.push(format!("link {l} not expected"));
    }
    out
}

/// Compares the change objects read through the API with the expected report.
pub fn compare(expected: &ExpectedReport, changes: &[Json]) -> Comparison {
    let mut c = Comparison {
        expected: expected.entries.len(),
        read: changes.len(),
        ..Comparison::default()
    };
    let mut got: BTreeMap<ObjectId, EntryView> = BTreeMap::new();
    for change in changes {
        match change_view(change) {
            Ok(view) => {
                if let Some(before) = got.insert(view.id, view) {
                    c.differences
                        .push(format!("{before}: listed more than once"));
                }
            }
            Err(e) => c.differences.push(e),
        }
    }
    for x in &expected.entries {
        let want = expected_view(x);
        match got.remove(&x.id) {
            None => c
                .differences
                .push(format!("{want}: missing from the report")),
            Some(view) => {
                let d = differences(&want, &view);
                if d.is_empty() {
                    c.matched += 1;
                } else {
                    c.differences.push(format!("{want}: {}", d.join("; ")));
                }
            }
        }
    }
    for view in got.values() {
        c.differences.push(format!("{view}: not expected"));
    }
    c
}

#[cfg(test)]
mod tests {
    use rewind_common::report::{
        Change, ChangedAttribute, ChangedLink, NotRecoverableReason, RecoveryAction,
    };
    use rewind_common::{LinkKind, ObjectType, ReportEntry, Value};
    use rewind_loadtest::incident::{ExpectedCounts, ExpectedLink, Phase, Scenario};
    use serde_json::json;

    use super::*;
    use crate::api::change::change_json;

    const USER: ObjectId = ObjectId(1);
    const GROUP: ObjectId = ObjectId(2);
    const APP: ObjectId = ObjectId(3);
    const GONE: ObjectId = ObjectId(10);
    const GRANT: ObjectId = ObjectId(11);

    fn link(kind: LinkKind, target: ObjectId, added: bool) -> ChangedLink {
        let (current, backup) = if added {
            (LinkState::Present, LinkState::Absent)
        } else {
            (LinkState::Absent, LinkState::Present)
        };
        ChangedLink {
            kind,
            target,
            current,
            backup,
            recoverable: true,
            reason: None,
            current_data: None,
            backup_data: None,
        }
    }

    /// A report of three entries: a disabled user, a group that lost a member with a purged
    /// user, a created service principal with a grant.
    fn report() -> Vec<ReportEntry> {
        let entry = |id, object_type, name: &str, change, action| ReportEntry {
            id,
            object_type,
            display_name: name.into(),
            change,
            action,
            reason: None,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        };
        let mut user = entry(
            USER,
            ObjectType::User,
            "Ada",
            Change::Modified,
            RecoveryAction::Update,
        );
        user.changed_attributes = vec![ChangedAttribute {
            name: "accountEnabled".into(),
            current: Some(Value::Bool(false)),
            backup: Some(Value::Bool(true)),
        }];
        let mut group = entry(
            GROUP,
            ObjectType::Group,
            "Team",
            Change::Modified,
            RecoveryAction::NotRecoverable,
        );
        group.reason = Some(NotRecoverableReason::HardDeleted);
        group.changed_links = vec![ChangedLink {
            recoverable: false,
            reason: Some(NotRecoverableReason::HardDeleted),
            ..link(LinkKind::Members, GONE, false)
        }];
        let mut app = entry(
            APP,
            ObjectType::ServicePrincipal,
            "Rogue",
            Change::Created,
            RecoveryAction::SoftDelete,
        );
        app.changed_links = vec![link(LinkKind::OAuth2PermissionGrants, GRANT, true)];
        vec![user, group, app]
    }

    /// The expected report that the report above is exactly.
    fn expected() -> ExpectedReport {
        let entries: Vec<ExpectedEntry> = report()
            .into_iter()
            .map(|e| ExpectedEntry {
                id: e.id,
                object_type: e.object_type,
                display_name: e.display_name,
                change: e.change,
                action: e.action,
                reason: e.reason,
                legitimate: false,
                changed_attributes: e.changed_attributes.into_iter().map(|a| a.name).collect(),
                changed_links: e
                    .changed_links
                    .into_iter()
                    .map(|l| ExpectedLink {
                        kind: l.kind,
                        target: l.target,
                        current: l.current,
                        backup: l.backup,
                        recoverable: l.recoverable,
                        reason: l.reason,
                    })
                    .collect(),
            })
            .collect();
        ExpectedReport {
            scenario: Scenario::S4,
            tenant: "t".into(),
            seed: 1,
            phase: Phase::AfterBackup,
            prepared: Vec::new(),
            counts: ExpectedCounts::of(&entries),
            entries,
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    fn changes() -> Vec<Json> {
        report().iter().map(|e| change_json(e, true)).collect()
    }

    #[test]
    fn the_change_objects_of_the_expected_report_match_it() {
        let c = compare(&expected(), &changes());
        assert!(c.exact(), "{:?}", c.differences);
        assert_eq!((c.expected, c.read, c.matched), (3, 3, 3));
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        type Tamper = fn(&mut Vec<Json>);
        let cases: [(&str, Tamper, &str); 9] = [
            (
                "another action",
                |c| c[0]["recoveryAction"] = json!("restore"),
                "action: expected update, got restore",
            ),
            (
                "an entry missing",
                |c| {
                    c.remove(1);
                },
                "\"Team\": missing from the report",
            ),
            (
                "an entry too many",
                |c| {
                    let mut extra = c[0].clone();
                    extra["id"] = json!(ObjectId(99).to_string());
                    c.push(extra);
                },
                "not expected",
            ),
            (
                "an entry twice",
                |c| c.push(c[0].clone()),
                "listed more than once",
            ),
            (
                "another attribute",
                |c| {
                    let delta = &mut c[0]["deltaFromCurrent"];
                    delta["department"] = delta["accountEnabled"].take();
                    if let Some(m) = delta.as_object_mut() {
                        m.remove("accountEnabled");
                    }
                },
                "attributes: expected [\"accountEnabled\"], got [\"department\"]",
            ),
            (
                "a link the other way",
                |c| {
                    if let Some(m) =
                        c[2]["deltaFromCurrent"]["oauth2PermissionGrants@delta"][0].as_object_mut()
                    {
                        m.remove("@removed");
                    }
                },
                "(added since) missing",
            ),
            (
                "a link's reason lost",
                |c| {
                    if let Some(m) = c[1]["deltaFromCurrent"]["members@delta"][0].as_object_mut() {
                        m.remove("notRecoverableReason");
                    }
                },
                "not recoverable: hardDeleted) missing",
            ),
            (
                "another display name",
                |c| c[2]["displayName"] = json!("Friendly"),
                "display name: expected \"Rogue\", got \"Friendly\"",
            ),
            (
                "an id that is no GUID",
                |c| c[0]["id"] = json!("nope"),
                "not a GUID",
            ),
        ];
        for (what, tamper, needle) in cases {
            let mut c = changes();
            tamper(&mut c);
            let got = compare(&expected(), &c);
            assert!(!got.exact(), "{what}: not noticed");
            assert!(
                got.differences.iter().any(|d| d.contains(needle)),
                "{what}: no difference says {needle:?}: {:?}",
                got.differences
            );
        }
    }
}
