//! The product path, end to end, for scenarios S1–S7: a generated tenant in a real simulator,
//! a backup captured over HTTP by the Graph connector, the incident applied through Graph, the
//! current state captured the same way, and the engine's difference report, which must be
//! exactly the incident generator's expected report (ids, changes, actions, reasons, changed
//! attributes and links). This proves the engine, where the incident tests prove the generator.

use std::time::Duration;

use rewind_common::connector::{capture_snapshot, GraphConnector, GraphSettings};
use rewind_common::diff::diff_snapshots;
use rewind_common::snapshot::{
    load_snapshot, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
};
use rewind_common::{ObjectId, ReportEntry, Scope};
use rewind_loadtest::gen::{self, GenConfig};
use rewind_loadtest::incident::compare::tally;
use rewind_loadtest::incident::{self, IncidentConfig, Phase, Scenario};

use crate::dirsim::support::Sim;

const SEED: u64 = 23;

/// The tenant's size: 4,000 objects, or `REWIND_E2E_OBJECTS` (the note's larger runs).
fn objects() -> u64 {
    match std::env::var("REWIND_E2E_OBJECTS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("REWIND_E2E_OBJECTS={v:?} is not a number of objects")),
        Err(_) => 4_000,
    }
}

/// One scenario's tenant, with the store its snapshots go to.
struct Run {
    sim: Sim,
    tenant: String,
    _dir: tempfile::TempDir,
    store: LocalShardStore,
}

impl Run {
    fn new(scenario: Scenario) -> Self {
        let sim = Sim::start();
        let tenant = format!("e2e-{}", scenario.name().to_lowercase());
        gen::run(&GenConfig {
            dirsim: sim.base.clone(),
            tenant: tenant.clone(),
            objects: objects(),
            seed: SEED,
            client_id: Some(format!("app-{tenant}")),
            client_secret: Some(format!("secret-{tenant}")),
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        Run {
            sim,
            tenant,
            _dir: dir,
            store,
        }
    }

    fn incident(&self, scenario: Scenario, phase: Phase) -> incident::ExpectedReport {
        incident::run(&IncidentConfig {
            dirsim: self.sim.base.clone(),
            tenant: self.tenant.clone(),
            scenario,
            seed: SEED,
            phase,
            client_id: Some(format!("app-{}", self.tenant)),
            client_secret: Some(format!("secret-{}", self.tenant)),
        })
        .unwrap()
    }

    fn connector(&self) -> GraphConnector {
        let mut s = GraphSettings::new(
            self.sim.base.clone(),
            format!("{}/{}/v1.0", self.sim.base, self.tenant),
            &self.tenant,
            format!("app-{}", self.tenant),
            format!("secret-{}", self.tenant),
        );
        s.min_backoff = Duration::from_millis(50);
        s.max_attempts = 8;
        GraphConnector::new(s).unwrap()
    }

    /// Captures the tenant over HTTP as snapshot `id`.
    fn capture(&self, id: &str, kind: SnapshotKind) {
        let info = SnapshotInfo {
            tenant: self.tenant.clone(),
            snapshot_id: id.into(),
            kind,
            created_at: 1_795_000_000,
            not_captured: Vec::new(),
        };
        capture_snapshot(&self.connector(), &self.store, &info, ShardLayout::new(3)).unwrap();
    }

    fn report(&self) -> Vec<ReportEntry> {
        let backup = load_snapshot(&self.store, &self.tenant, "backup").unwrap();
        let current = load_snapshot(&self.store, &self.tenant, "current").unwrap();
        diff_snapshots(&backup, &current, &Scope::All).unwrap()
    }
}

/// Runs the whole path for one scenario and requires the report to be the expected one.
fn end_to_end(scenario: Scenario) {
    let run = Run::new(scenario);
    if scenario == Scenario::S7 {
        let prepared = run.incident(scenario, Phase::BeforeBackup);
        assert!(!prepared.prepared.is_empty());
    }
    run.capture("backup", SnapshotKind::Backup);
    let expected = run.incident(scenario, Phase::AfterBackup);
    run.capture("current", SnapshotKind::Backup);
    let report = run.report();
    let t = tally(&expected, &report);
    assert!(
        t.repeated.is_empty(),
        "{scenario}: ids twice: {:?}",
        t.repeated
    );
    eprintln!(
        "{scenario} at {} objects: expected {}, matched {}, missing {}, extra {}, differing {} ({} links expected)",
        objects(),
        t.expected,
        t.matched,
        t.missing.len(),
        t.extra.len(),
        t.differing.len(),
        expected.counts.links,
    );
    let show = |ids: &[ObjectId]| {
        ids.iter()
            .take(5)
            .map(|id| {
                report
                    .iter()
                    .find(|e| e.id == *id)
                    .map_or_else(|| id.to_string(), |e| format!("{e:?}"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        t.missing.is_empty(),
        "{scenario}: missing {:?}",
        &t.missing[..t.missing.len().min(5)]
    );
    assert!(
        t.extra.is_empty(),
        "{scenario}: {} extra, e.g.\n{}",
        t.extra.len(),
        show(&t.extra)
    );
    assert!(
        t.differing.is_empty(),
        "{scenario}: {} differ, e.g.\n{}",
        t.differing.len(),
        t.differing[..t.differing.len().min(5)].join("\n")
    );
    assert_eq!(t.matched, t.expected);
    assert!(t.expected > 0, "{scenario} expected no change at all");
}

#[test]
fn s1_bulk_disable() {
    end_to_end(Scenario::S1);
}

#[test]
fn s2_policy_tamper() {
    end_to_end(Scenario::S2);
}

#[test]
fn s3_rogue_app() {
    end_to_end(Scenario::S3);
}

#[test]
fn s4_mass_delete() {
    end_to_end(Scenario::S4);
}

#[test]
fn s5_membership_tamper() {
    end_to_end(Scenario::S5);
}

#[test]
fn s6_synced() {
    end_to_end(Scenario::S6);
}

#[test]
fn s7_undo_restore() {
    end_to_end(Scenario::S7);
}
