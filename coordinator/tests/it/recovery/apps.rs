//! Several app registrations per tenant: Graph limits writes per app and tenant, so a
//! recovery spreads its tasks over the tenant's apps, each under its own budget and all of
//! them within the tenant's. The simulator's write log names the app of every write, and its
//! counters hold each app's and the tenant's most writes admitted in any sliding second.

use std::collections::BTreeMap;

use rewind_common::connector::Secret;
use rewind_coordinator::state::JobStatus;
use rewind_loadtest::incident::{Phase, Scenario};

use super::*;

/// S1 recovered through three apps of 20 writes/s each within a tenant budget of 50 (below
/// the apps' 60, so that the tenant's cap is what binds): every app wrote, no app more than
/// 20 in any second, the tenant no more than 50, and more than one and a half apps' 20 in
/// some second (the apps ran side by side, in one worker). The simulator limits nothing: its maxima are
/// Rewind's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_writes_through_every_app_within_each_budget_and_the_tenants() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = key_file(dir.path());
    // One worker: it runs its apply tasks side by side, each through its own app.
    let c = Coordinator::start(
        dir.path(),
        Coordinator::embedded(dir.path(), 1),
        key.clone(),
    )
    .await;
    let name = "apps";
    generate(&base, name, OBJECTS).await;
    let (app_budget, tenant_budget) = (20, 50);
    let mut t = no_approval(tenant(&base, name, 3));
    t.recovery.write_budget = app_budget;
    t.recovery.tenant_write_budget = tenant_budget;
    let primary = t.client_id.clone();
    c.add(t).await;
    let mut apps = vec![primary];
    for n in 2..=3 {
        let (id, secret) = (format!("{name}-app-{n}"), format!("{name}-secret-{n}"));
        rewind_loadtest::dirsim::add_app(&base, name, &id, &secret)
            .await
            .expect("the simulator takes the app");
        c.engine()
            .state()
            .add_app_by(&admin("olga"), &key, name, &id, &Secret::new(secret))
            .await
            .unwrap();
        apps.push(id);
    }
    let backup = c.backup(name).await.snapshot.unwrap();
    let expected = incident(&base, name, Scenario::S1, Phase::AfterBackup).await;
    let scope = scenario_scope(Scenario::S1, &expected);
    // The maxima count from here.
    let url = format!("{base}/_admin/tenants/{name}/writes");
    tokio::task::spawn_blocking(move || ureq::delete(&url).call().expect("the log clears"))
        .await
        .unwrap();

    let job = recover(&c, name, &backup, scope.clone()).await;
    assert_eq!(job.status, JobStatus::Successful, "{:?}", job.error);
    assert_eq!(job.counts["failedChanges"], 0, "{:?}", job.counts);
    verify::verified(&c, name, &backup, Scenario::S1, &expected, &scope).await;

    let log = writes_after(&base, name, 0).await;
    let mut by_app: BTreeMap<&str, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r.changed) {
        *by_app.entry(r.client_id.as_str()).or_default() += 1;
    }
    for app in &apps {
        assert!(
            by_app.get(app.as_str()).is_some_and(|&n| n > 0),
            "app {app} wrote nothing: {by_app:?}"
        );
    }
    assert_eq!(
        by_app.len(),
        apps.len(),
        "only the tenant's apps: {by_app:?}"
    );
    let counters = sim_counters(&base).await;
    let of_tenant = &counters["tenants"][name];
    for app in &apps {
        let max = of_tenant["apps"][app]["maxWritesPerSecond"]
            .as_u64()
            .unwrap_or_else(|| panic!("a maximum for {app}: {of_tenant}"));
        assert!(
            max <= u64::from(app_budget),
            "app {app}: {max} writes in one second, budget {app_budget}"
        );
    }
    let max = of_tenant["maxWritesPerSecond"].as_u64().expect("a maximum");
    assert!(
        max <= u64::from(tenant_budget),
        "{max} writes in one second, tenant budget {tenant_budget}"
    );
    // One app at a time reaches a little over its budget where one task ends and the next
    // begins within a second (23 when measured with one apply slot); side by side, well over.
    assert!(
        max > u64::from(app_budget) * 3 / 2,
        "the apps never wrote side by side: at most {max} writes in a second"
    );
    println!("apps: {by_app:?}, at most {max} writes/s in all");
    c.node.unwrap().shutdown().await;
}
