//! The cluster end to end: coordinators and workers over a real nats-server (JetStream on,
//! random port, temporary store) and in single-node mode, against the simulator over HTTP.

mod faults;
pub mod support;

use std::collections::BTreeMap;

use rewind_common::ReportEntry;
use rewind_loadtest::incident::compare::tally;
use rewind_loadtest::incident::{Phase, Scenario};

use support::*;

/// Requires `report` to be exactly the expected report of `scenario`.
fn assert_exact(
    what: &str,
    scenario: Scenario,
    expected: &rewind_loadtest::incident::ExpectedReport,
    report: &[ReportEntry],
) {
    let t = tally(expected, report);
    assert!(
        t.exact(),
        "{what} {scenario}: expected {}, matched {}, missing {:?}, extra {:?}, repeated {:?}, differing {:?}",
        t.expected,
        t.matched,
        &t.missing[..t.missing.len().min(5)],
        &t.extra[..t.extra.len().min(5)],
        &t.repeated[..t.repeated.len().min(5)],
        &t.differing[..t.differing.len().min(5)],
    );
    assert!(t.expected > 0, "{scenario} expected no change at all");
}

/// Every scenario S1–S7, each on a tenant of its own, all at once: a coordinator with two
/// workers over NATS, and a single-node coordinator with two embedded workers, back up the
/// same directory, then (after the incident) report on it. Both reports are exactly the
/// incident generator's expected report, and identical to each other, entry for entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_through_the_cluster_and_single_node_mode() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    let cluster_dir = dir.path().join("cluster");
    let single_dir = dir.path().join("single");
    let cluster = Coordinator::start(
        &cluster_dir,
        rewind_coordinator::node::Transport::Nats(Box::new(
            rewind_worker::nats::NatsSettings::url(nats.url()),
        )),
        key.clone(),
    )
    .await;
    let (stop_workers, workers) = nats_workers(&nats.url(), &key, 2);
    let single = Coordinator::start(&single_dir, Coordinator::embedded(&single_dir, 2), key).await;

    let runs = Scenario::ALL.map(|scenario| {
        let base = base.clone();
        let (cluster, single) = (&cluster, &single);
        async move {
            let name = format!("e2e-{}", scenario.name().to_lowercase());
            generate(&base, &name, OBJECTS).await;
            cluster.add(tenant(&base, &name, 3)).await;
            single.add(tenant(&base, &name, 3)).await;
            if scenario == Scenario::S7 {
                incident(&base, &name, scenario, Phase::BeforeBackup).await;
            }
            let b1 = cluster.backup(&name).await;
            let b2 = single.backup(&name).await;
            let expected = incident(&base, &name, scenario, Phase::AfterBackup).await;
            let (r1, in_cluster) = cluster.report(&name, b1.snapshot.as_deref().unwrap()).await;
            let (r2, in_single) = single.report(&name, b2.snapshot.as_deref().unwrap()).await;
            assert_exact("cluster", scenario, &expected, &in_cluster);
            assert_exact("single-node", scenario, &expected, &in_single);
            assert_eq!(in_cluster, in_single, "{scenario}: the two modes differ");
            // Every range reported exactly once, and the counts add up.
            assert_eq!(r1.tasks.done, r1.tasks.total);
            assert_eq!(r1.counts.get("entries"), Some(&(in_cluster.len() as u64)));
            assert_eq!(r2.counts.get("entries"), Some(&(in_single.len() as u64)));
            let by_action = |entries: &[ReportEntry]| {
                let mut m: BTreeMap<String, u64> = BTreeMap::new();
                for e in entries {
                    *m.entry(e.action.as_str().to_owned()).or_default() += 1;
                }
                m
            };
            for (action, n) in by_action(&in_cluster) {
                assert_eq!(r1.counts.get(&action), Some(&n), "{scenario} {action}");
            }
            in_cluster.len()
        }
    });
    let sizes = futures_util::future::join_all(runs).await;
    assert!(sizes.iter().all(|n| *n > 0));
    let _ = stop_workers.send(true);
    for w in workers {
        w.await.unwrap();
    }
    cluster.node.unwrap().shutdown().await;
    single.node.unwrap().shutdown().await;
}
