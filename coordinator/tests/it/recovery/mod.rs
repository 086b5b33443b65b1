//! Recoveries end to end: a simulator tenant over HTTP is backed up, an incident is applied,
//! and a recovery (planned against the present, applied through the workers) must leave the
//! tenant verified: a report against the backup afterwards shows only what the scenario keeps
//! (its legitimate changes, and what cannot be recovered: hard-deleted, synced, dynamic).

mod apps;
mod faults;
mod flows;
pub mod verify;

use std::time::Duration;

use rewind_common::report::{RecoveryAction, Scope};
use rewind_common::ObjectType;
use rewind_coordinator::state::{Actor, Job, JobStatus, Outcome, RecoverySettings};
use rewind_loadtest::incident::{ExpectedReport, Phase, Scenario};

use crate::cluster::support::*;

/// The scope each scenario recovers with (shared with the demo).
pub fn scenario_scope(scenario: Scenario, expected: &ExpectedReport) -> Scope {
    rewind_loadtest::incident::verify::recovery_scope(scenario, expected)
}

pub fn admin(name: &str) -> Actor {
    Actor::Token {
        id: format!("id-{name}"),
        name: name.to_owned(),
    }
}

/// A tenant whose recoveries never wait for approval (the approval test sets its own).
pub fn no_approval(
    mut t: rewind_coordinator::state::NewTenant,
) -> rewind_coordinator::state::NewTenant {
    t.recovery = RecoverySettings {
        approval_threshold: u64::MAX,
        write_budget: 1_000,
        ..RecoverySettings::default()
    };
    t
}

/// Starts a recovery and waits for it to finish.
pub async fn recover(c: &Coordinator, tenant: &str, backup: &str, scope: Scope) -> Job {
    let job = start_recovery(c, tenant, backup, scope).await;
    wait_finished(c.engine(), &job.id, Duration::from_secs(240)).await
}

/// Starts a recovery of `tenant` to `backup` within `scope` as administrator alice (no report,
/// not a dry run), without waiting for it.
pub async fn start_recovery(c: &Coordinator, tenant: &str, backup: &str, scope: Scope) -> Job {
    c.engine()
        .start_recovery_by(&admin("alice"), tenant, backup, scope, None, false, None)
        .await
        .expect("the recovery starts")
}

/// A single-node coordinator (two embedded workers) whose configuration `edit` changes.
pub async fn embedded_with(
    dir: &std::path::Path,
    key: rewind_common::secret_box::SecretKey,
    edit: impl FnOnce(&mut rewind_coordinator::node::NodeConfig),
) -> Coordinator {
    let transport = Coordinator::embedded(dir, 2);
    let mut config = node_config(dir, transport.clone());
    edit(&mut config);
    let node = rewind_coordinator::node::Node::start(config, key.clone())
        .await
        .expect("the coordinator starts");
    Coordinator {
        node: Some(node),
        key,
        dir: dir.to_owned(),
        transport,
    }
}

/// The simulator's `/_admin/counters`, off the runtime.
pub async fn sim_counters(base: &str) -> serde_json::Value {
    let url = format!("{base}/_admin/counters");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("counters answer")
            .into_body()
            .read_json()
            .expect("counters are JSON")
    })
    .await
    .unwrap()
}

/// The tenant's write log after `after`, off the runtime.
pub async fn writes_after(
    base: &str,
    tenant: &str,
    after: u64,
) -> Vec<rewind_loadtest::dirsim::WriteRecord> {
    let (base, tenant) = (base.to_owned(), tenant.to_owned());
    tokio::task::spawn_blocking(move || rewind_loadtest::dirsim::write_log(&base, &tenant, after))
        .await
        .unwrap()
        .expect("the write log reads")
}

/// Every action of a recovery.
pub fn actions(c: &Coordinator, job: &str) -> Vec<rewind_coordinator::state::ActionRecord> {
    let mut out = Vec::new();
    c.engine()
        .state()
        .for_each_action(job, |a| {
            out.push(a);
            Ok(())
        })
        .expect("the actions read");
    out
}

/// Every scenario S1–S7, each on a tenant of its own named after `prefix`, recovered by `c`:
/// each tenant verifies afterwards, every action has an outcome, none failed, and a second
/// recovery plans nothing.
async fn every_scenario(c: &Coordinator, base: &str, prefix: &str) {
    let runs = Scenario::ALL.map(|scenario| async move {
        let name = format!("{prefix}-{}", scenario.name().to_lowercase());
        generate(base, &name, OBJECTS).await;
        c.add(no_approval(tenant(base, &name, 3))).await;
        if scenario == Scenario::S7 {
            incident(base, &name, scenario, Phase::BeforeBackup).await;
        }
        let backup = c.backup(&name).await.snapshot.unwrap();
        let expected = incident(base, &name, scenario, Phase::AfterBackup).await;
        let scope = scenario_scope(scenario, &expected);
        let job = recover(c, &name, &backup, scope.clone()).await;
        assert_eq!(
            job.status,
            JobStatus::Successful,
            "{scenario}: the recovery ended {:?}: {:?}",
            job.status,
            job.error
        );
        let acts = actions(c, &job.id);
        let unsettled: Vec<_> = acts
            .iter()
            .filter(|a| a.outcome == Outcome::Planned)
            .collect();
        assert!(unsettled.is_empty(), "{scenario}: actions left planned: {unsettled:?}");
        let failed: Vec<_> = acts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Failed { .. }))
            .collect();
        assert!(failed.is_empty(), "{scenario}: failed actions: {failed:?}");
        match scenario {
            // The hard-deleted users are listed, skipped, with the reason.
            Scenario::S4 => {
                let gone = acts
                    .iter()
                    .filter(|a| {
                        matches!(&a.outcome, Outcome::Skipped { reason } if reason.contains("hardDeleted"))
                            && a.step.is_none()
                            && a.object_type == ObjectType::User
                    })
                    .count();
                let purged = expected
                    .entries
                    .iter()
                    .filter(|e| e.action == RecoveryAction::NotRecoverable && e.object_type == ObjectType::User)
                    .count();
                assert!(purged > 0 && gone >= purged, "S4: {gone} listed of {purged} purged");
            }
            // The synced users are listed, and nothing is written.
            Scenario::S6 => {
                assert!(acts.iter().all(|a| a.step.is_none()), "S6 plans a write");
                assert!(acts.iter().any(|a| matches!(&a.outcome, Outcome::Skipped { reason } if reason.contains("syncedFromOnPremises"))));
            }
            _ => {}
        }
        verify::verified(c, &name, &backup, scenario, &expected, &scope).await;
        // Planned against the present: a second recovery finds nothing left to do.
        let again = recover(c, &name, &backup, scope).await;
        assert_eq!(again.status, JobStatus::Successful);
        let redo: Vec<_> = actions(c, &again.id)
            .into_iter()
            .filter(|a| a.step.is_some())
            .collect();
        assert!(redo.is_empty(), "{scenario}: a second recovery plans {redo:?}");
        (scenario, job)
    });
    for (scenario, job) in futures_util::future::join_all(runs).await {
        println!("{prefix} {scenario}: {:?}", job.counts);
    }
}

/// Every scenario through a single-node coordinator with two embedded workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_recovers_to_its_verified_state_in_single_node_mode() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(dir.path(), Coordinator::embedded(dir.path(), 2), key).await;
    every_scenario(&c, sim.base_url(), "single").await;
    c.node.unwrap().shutdown().await;
}

/// Every scenario through a coordinator and two workers over a real nats-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_recovers_to_its_verified_state_through_the_cluster() {
    let sim = simulator().await;
    let nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let c = Coordinator::start(
        dir.path(),
        rewind_coordinator::node::Transport::Nats(Box::new(
            rewind_worker::nats::NatsSettings::url(nats.url()),
        )),
        key.clone(),
    )
    .await;
    let (stop, workers) = nats_workers(&nats.url(), &key, 2);
    every_scenario(&c, sim.base_url(), "cluster").await;
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    c.node.unwrap().shutdown().await;
}
