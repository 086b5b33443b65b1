//! `rewind loadtest incident`: applies one incident scenario of `spec/scenarios.md` (S1–S7) to
//! a tenant that `rewind loadtest gen` built in a running simulator, through the simulator's
//! Graph API (and its admin sync route for on-premises changes), and describes the difference
//! report a backup taken before the incident should give: the ids touched, each with its
//! expected change, recovery action and reason, which changes are legitimate, and counts.

mod graph;
mod scenarios;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use rewind_common::report::{Change, LinkState, NotRecoverableReason, RecoveryAction};
use rewind_common::{LinkKind, ObjectId, ObjectType};
use serde::Serialize;
use serde_json::Value as Json;

pub use graph::GraphClient;

pub mod compare;
pub mod verify;

/// One scenario of `spec/scenarios.md` that the generator applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Scenario {
    /// Bulk disable (plus legitimate department changes).
    S1,
    /// Conditional access policy tampered with, named location deleted.
    S2,
    /// Rogue service principal with an admin-consent grant and an app role assignment.
    S3,
    /// Mass soft delete of users and groups, some users purged.
    S4,
    /// Static membership links added and removed; users changed so dynamic groups recompute.
    S5,
    /// Synced users changed on-premises.
    S6,
    /// Users soft-deleted at backup time restored afterwards.
    S7,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S4,
        Scenario::S5,
        Scenario::S6,
        Scenario::S7,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
            Scenario::S5 => "S5",
            Scenario::S6 => "S6",
            Scenario::S7 => "S7",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario name that is not one of S1..S7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {0:?}: expected one of S1, S2, S3, S4, S5, S6, S7")]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// When the scenario's changes happen relative to the backup (only S7 has a "before" part:
/// the users that are soft-deleted at backup time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    BeforeBackup,
    AfterBackup,
}

/// How to run the incident generator.
#[derive(Clone, Debug)]
pub struct IncidentConfig {
    /// The simulator's root URL (`http://host:port`).
    pub dirsim: String,
    pub tenant: String,
    pub scenario: Scenario,
    /// Picks the objects the scenario touches; also the seed `gen` derived credentials from.
    pub seed: u64,
    pub phase: Phase,
    /// Credentials of the tenant's app; by default those `gen` derives for tenant and seed.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// Why the incident could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("invalid --dirsim URL {0:?}: it must start with http:// or https://")]
    BadUrl(String),
    #[error("the simulator at {url} cannot be reached: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("the simulator has no tenant {0:?} (create it with `rewind loadtest gen`)")]
    NoTenant(String),
    #[error("authenticating to tenant {tenant:?} failed ({status}): {message}")]
    Auth {
        tenant: String,
        status: u16,
        message: String,
    },
    #[error("{what}: the simulator answered {status} {code}: {message}")]
    Graph {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("scenario {scenario} needs {what} in the tenant, and it has none")]
    Missing { scenario: Scenario, what: String },
    #[error("scenario {0} has no before-backup part (only S7 has)")]
    NoBeforePhase(Scenario),
}

impl IncidentError {
    fn graph(what: &str, status: u16, body: &Json) -> Self {
        IncidentError::Graph {
            what: what.to_owned(),
            status,
            code: body["error"]["code"].as_str().unwrap_or("").to_owned(),
            message: body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string()),
        }
    }
}

/// A link an entry is expected to show as changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedLink {
    pub kind: LinkKind,
    pub target: ObjectId,
    pub current: LinkState,
    pub backup: LinkState,
    /// False for memberships a dynamic group's rule computes, and for links lost with a
    /// hard-deleted far end; `reason` says which.
    pub recoverable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotRecoverableReason>,
}

/// One object the incident touched, as a difference report should show it (field names and
/// values as in `rewind_common::report::ReportEntry`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedEntry {
    pub id: ObjectId,
    pub object_type: ObjectType,
    pub display_name: String,
    pub change: Change,
    pub action: RecoveryAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotRecoverableReason>,
    /// A change the scenario calls legitimate: a recovery scoped to the incident keeps it.
    pub legitimate: bool,
    /// Names of the recoverable properties expected to differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_attributes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_links: Vec<ExpectedLink>,
}

impl ExpectedEntry {
    fn new(
        id: ObjectId,
        object_type: ObjectType,
        display_name: &str,
        change: Change,
        action: RecoveryAction,
    ) -> Self {
        Self {
            id,
            object_type,
            display_name: display_name.to_owned(),
            change,
            action,
            reason: None,
            legitimate: false,
            changed_attributes: Vec::new(),
            changed_links: Vec::new(),
        }
    }

    fn reason(mut self, reason: NotRecoverableReason) -> Self {
        self.reason = Some(reason);
        self
    }

    fn attributes(mut self, names: &[&str]) -> Self {
        self.changed_attributes = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    fn legitimate(mut self) -> Self {
        self.legitimate = true;
        self
    }
}

/// Counts over the expected entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedCounts {
    pub objects: u64,
    pub links: u64,
    pub updates: u64,
    pub restores: u64,
    pub soft_deletes: u64,
    pub soft_deletes_again: u64,
    pub not_recoverable: u64,
    /// Entries of legitimate changes (included in the counts above).
    pub legitimate: u64,
    /// Not-recoverable entries by reason.
    pub by_reason: BTreeMap<String, u64>,
}

impl ExpectedCounts {
    pub fn of(entries: &[ExpectedEntry]) -> Self {
        let mut c = ExpectedCounts::default();
        for e in entries {
            c.objects += 1;
            c.links += e.changed_links.len() as u64;
            c.legitimate += u64::from(e.legitimate);
            match e.action {
                RecoveryAction::Update => c.updates += 1,
                RecoveryAction::Restore => c.restores += 1,
                RecoveryAction::SoftDelete => c.soft_deletes += 1,
                RecoveryAction::SoftDeleteAgain => c.soft_deletes_again += 1,
                RecoveryAction::NotRecoverable => c.not_recoverable += 1,
            }
            if let Some(r) = e.reason {
                let name = serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *c.by_reason.entry(name).or_default() += 1;
            }
        }
        c
    }
}

/// What the generator did, and the report it expects (printed as JSON on the last line).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedReport {
    pub scenario: Scenario,
    pub tenant: String,
    pub seed: u64,
    pub phase: Phase,
    /// Objects changed before the backup (S7's before part): not report entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prepared: Vec<ObjectId>,
    /// Sorted by id.
    pub entries: Vec<ExpectedEntry>,
    pub counts: ExpectedCounts,
    /// Things the report will also show that the generator does not list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl ExpectedReport {
    /// The entry for an id.
    pub fn entry(&self, id: ObjectId) -> Option<&ExpectedEntry> {
        self.entries
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Applies the scenario and returns the report it expects.
pub fn run(config: &IncidentConfig) -> Result<ExpectedReport, IncidentError> {
    let root = config.dirsim.trim_end_matches('/').to_owned();
    if !(root.starts_with("http://") || root.starts_with("https://")) {
        return Err(IncidentError::BadUrl(config.dirsim.clone()));
    }
    if config.phase == Phase::BeforeBackup && config.scenario != Scenario::S7 {
        return Err(IncidentError::NoBeforePhase(config.scenario));
    }
    let (default_id, default_secret) = crate::gen::tenant_credentials(&config.tenant, config.seed);
    let client_id = config.client_id.clone().unwrap_or(default_id);
    let client_secret = config.client_secret.clone().unwrap_or(default_secret);
    let started = Instant::now();
    let mut client = GraphClient::connect(&root, &config.tenant, &client_id, &client_secret)?;
    let outcome = scenarios::apply(&mut client, config)?;
    let mut entries = outcome.entries;
    entries.sort_by_key(|e| e.id);
    Ok(ExpectedReport {
        scenario: config.scenario,
        tenant: config.tenant.clone(),
        seed: config.seed,
        phase: config.phase,
        prepared: outcome.prepared,
        counts: ExpectedCounts::of(&entries),
        entries,
        notes: outcome.notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
