//! `WriteBudgets` semantics, each test a function over two budgets of one cluster (two
//! "processes": the same in-process budgets twice, or two `JetStreamBudgets` on two
//! connections to one real nats-server), run against both implementations. Reservation times
//! are computed, not measured: the tests check the recorded times against the rate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rewind_common::connector::{WriteClass, WriteGate};
use rewind_worker::budget::{
    BudgetError, BudgetGate, BudgetGates, BudgetKey, BudgetPolicy, JetStreamBudgets, MemoryBudgets,
    Reservation, WriteBudgets,
};
use rewind_worker::nats::{connect, NatsSettings};
use rewind_worker::testing::NatsServer;

type Budgets = Arc<dyn WriteBudgets>;

/// What keeps a test's backend alive.
pub(crate) enum Keep {
    Memory,
    Server(#[allow(dead_code)] Box<NatsServer>),
}

pub(crate) fn memory() -> (Keep, Budgets, Budgets) {
    let one: Budgets = Arc::new(MemoryBudgets::new());
    (Keep::Memory, one.clone(), one)
}

pub(crate) async fn jetstream() -> (Keep, Budgets, Budgets) {
    let server = NatsServer::start();
    let settings = NatsSettings::url(server.url());
    let (_a, js_a) = connect(&settings).await.unwrap();
    let (_b, js_b) = connect(&settings).await.unwrap();
    let a: Budgets = Arc::new(JetStreamBudgets::new(&js_a).await.unwrap());
    let b: Budgets = Arc::new(JetStreamBudgets::new(&js_b).await.unwrap());
    (Keep::Server(Box::new(server)), a, b)
}

macro_rules! both {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                let (_keep, a, b) = super::memory();
                super::$test(a, b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn jetstream() {
                let (_keep, a, b) = super::jetstream().await;
                super::$test(a, b).await;
            }
        }
    };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A policy whose rate is the budget from the start and stays there.
fn steady(writes_per_second: f64, tenant_cap: f64) -> BudgetPolicy {
    BudgetPolicy {
        writes_per_second,
        tenant_writes_per_second: tenant_cap,
        start_fraction: 1.0,
        increase_per_second: 0.0,
        ..BudgetPolicy::default()
    }
}

/// The most writes any one-second window holds: for each reservation, those in the second up
/// to it (every window [a, a + 1 s) that holds reservations ends with one of them).
fn busiest_second(reservations: &[(u64, u32)]) -> u32 {
    reservations
        .iter()
        .map(|(end, _)| {
            reservations
                .iter()
                .filter(|(t, _)| *t <= *end && *t + 1000 > *end)
                .map(|(_, n)| *n)
                .sum::<u32>()
        })
        .max()
        .unwrap_or(0)
}

/// Reserves from `tasks` concurrent tasks spread over the two budgets: `rounds` each, batches
/// of 1 to 4 writes; returns (time, writes, app) of every reservation.
async fn reserve_concurrently(
    budgets: [&Budgets; 2],
    keys: &[BudgetKey],
    policy: &BudgetPolicy,
    tasks: usize,
    rounds: u32,
) -> Vec<(u64, u32, String)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let budget = budgets[t % 2].clone();
        // Each app is reserved for from both processes.
        let key = keys[(t / 2) % keys.len()].clone();
        let policy = policy.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for round in 0..rounds {
                let n = (round + t as u32) % 4 + 1;
                let r = budget
                    .reserve(&key, &policy, WriteClass::Directory, n)
                    .await
                    .unwrap();
                assert!(r.rate <= policy.writes_per_second, "{r:?}");
                out.push((r.at_unix_ms, n, key.app.clone()));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

async fn concurrent_reservations_never_exceed_the_rate(a: Budgets, b: Budgets) {
    let policy = steady(40.0, 1000.0);
    let keys = [BudgetKey::new("contoso", "app-1")];
    let start = now_ms();
    let all = reserve_concurrently([&a, &b], &keys, &policy, 6, 15).await;
    let times: Vec<(u64, u32)> = all.iter().map(|(t, n, _)| (*t, *n)).collect();
    let total: u32 = times.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 225);
    assert!(busiest_second(&times) <= 40, "{times:?}");
    // And the budget is used: the schedule is about as long as the writes at 40/s.
    let last = times.iter().map(|(t, _)| *t).max().unwrap();
    let span = last - start;
    assert!(
        span <= u64::from(total) * 1000 / 40 + 1000,
        "{span} ms for {total} writes"
    );
}
both!(concurrent_reservations_never_exceed_the_rate);

async fn the_rate_starts_at_the_fraction_and_climbs_to_the_budget(a: Budgets, b: Budgets) {
    let policy = BudgetPolicy::default();
    let key = BudgetKey::new("contoso", "app-1");
    let mut seen: Vec<Reservation> = Vec::new();
    for i in 0..120 {
        let budget = if i % 2 == 0 { &a } else { &b };
        seen.push(
            budget
                .reserve(&key, &policy, WriteClass::Directory, 1)
                .await
                .unwrap(),
        );
    }
    assert_eq!(seen[0].rate, 10.0, "half of the budget");
    assert_eq!(seen[0].budget, 20.0);
    for pair in seen.windows(2) {
        assert!(pair[0].rate <= pair[1].rate, "{pair:?}");
        assert!(pair[0].at_unix_ms <= pair[1].at_unix_ms, "{pair:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last.rate, 20.0, "the budget is reached");
    assert!(seen.iter().all(|r| r.rate <= 20.0));
    // The climb takes its time: 10 writes/s per second from 10 to 20 is 1 s of the schedule.
    let reached = seen.iter().find(|r| r.rate == 20.0).unwrap();
    assert!(
        reached.at_unix_ms - seen[0].at_unix_ms >= 1000,
        "{} ms",
        reached.at_unix_ms - seen[0].at_unix_ms
    );
    // No second holds more than the rate of its last reservation.
    for (j, end) in seen.iter().enumerate() {
        let in_second = seen[..=j]
            .iter()
            .filter(|r| r.at_unix_ms + 1000 > end.at_unix_ms)
            .count();
        assert!(in_second as f64 <= end.rate, "{in_second} by {end:?}");
    }
}
both!(the_rate_starts_at_the_fraction_and_climbs_to_the_budget);

async fn a_429_halves_the_rate_and_nothing_is_reserved_before_retry_after(a: Budgets, b: Budgets) {
    let policy = steady(20.0, 60.0);
    let key = BudgetKey::new("contoso", "app-1");
    let first = a
        .reserve(&key, &policy, WriteClass::Directory, 5)
        .await
        .unwrap();
    assert_eq!(first.rate, 20.0);
    let before = now_ms();
    let cut = b
        .throttled(
            &key,
            &policy,
            WriteClass::Directory,
            Some(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(cut, 10.0);
    // The same storm reported again (another worker) does not cut it twice.
    a.throttled(
        &key,
        &policy,
        WriteClass::Directory,
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let after = a
        .reserve(&key, &policy, WriteClass::Directory, 5)
        .await
        .unwrap();
    assert_eq!(after.rate, 10.0);
    assert!(
        after.at_unix_ms >= before + 2000,
        "reserved {} ms after the 429",
        after.at_unix_ms as i64 - before as i64
    );
    let next = b
        .reserve(&key, &policy, WriteClass::Directory, 5)
        .await
        .unwrap();
    assert!(
        next.at_unix_ms >= after.at_unix_ms + 500,
        "5 writes at 10/s"
    );
    // Another app of the tenant is not held up by this app's 429.
    let other = b
        .reserve(
            &BudgetKey::new("contoso", "app-2"),
            &policy,
            WriteClass::Directory,
            1,
        )
        .await
        .unwrap();
    assert_eq!(other.rate, 20.0);
    // The rate never falls below min_rate.
    let floor = BudgetPolicy {
        min_rate: 8.0,
        ..policy.clone()
    };
    let third = BudgetKey::new("contoso", "app-3");
    for _ in 0..3 {
        let now = Some(Duration::ZERO);
        b.throttled(&third, &floor, WriteClass::Directory, now)
            .await
            .unwrap();
    }
    let low = a
        .reserve(&third, &floor, WriteClass::Directory, 1)
        .await
        .unwrap();
    assert_eq!(low.rate, 8.0);
}
both!(a_429_halves_the_rate_and_nothing_is_reserved_before_retry_after);

async fn stop_is_seen_by_the_other_process(a: Budgets, b: Budgets) {
    assert!(!a.is_stopped("job-1").await.unwrap());
    b.stop("job-1").await.unwrap();
    assert!(a.is_stopped("job-1").await.unwrap());
    assert!(b.is_stopped("job-1").await.unwrap());
    assert!(!a.is_stopped("job-2").await.unwrap());
    assert!(
        !a.is_stopped("job.1").await.unwrap(),
        "names are not mixed up"
    );
    b.stop("job-1").await.unwrap();
    assert!(
        a.is_stopped("job-1").await.unwrap(),
        "stopping twice is fine"
    );
}
both!(stop_is_seen_by_the_other_process);

async fn write_leases_are_seen_by_the_other_process_until_they_end_or_run_out(
    a: Budgets,
    b: Budgets,
) {
    assert_eq!(b.in_flight("job-9").await.unwrap(), 0);
    let soon = now_ms() + 60_000;
    a.lease("job-9", "job-9.apply.1", Some(soon)).await.unwrap();
    a.lease("job-9", "job-9.apply.2", Some(soon)).await.unwrap();
    a.lease("job-10", "job-10.apply.1", Some(soon))
        .await
        .unwrap();
    assert_eq!(b.in_flight("job-9").await.unwrap(), 2);
    // Renewing is taking it again; ending it drops it.
    a.lease("job-9", "job-9.apply.1", Some(soon + 1))
        .await
        .unwrap();
    b.lease("job-9", "job-9.apply.2", None).await.unwrap();
    assert_eq!(a.in_flight("job-9").await.unwrap(), 1);
    // A lease that has run out (its worker died) no longer counts.
    a.lease("job-9", "job-9.apply.1", Some(now_ms().saturating_sub(1)))
        .await
        .unwrap();
    assert_eq!(b.in_flight("job-9").await.unwrap(), 0);
    assert_eq!(
        b.in_flight("job-10").await.unwrap(),
        1,
        "other jobs are apart"
    );
    b.lease("job-9", "never-taken", None).await.unwrap();
}
both!(write_leases_are_seen_by_the_other_process_until_they_end_or_run_out);

async fn conditional_access_is_one_write_per_second(a: Budgets, b: Budgets) {
    let policy = BudgetPolicy::default();
    let mut times = Vec::new();
    for i in 0..8 {
        // Every app of the tenant shares it.
        let key = BudgetKey::new("contoso", format!("app-{}", i % 2));
        let budget = if i % 3 == 0 { &a } else { &b };
        let r = budget
            .reserve(&key, &policy, WriteClass::ConditionalAccess, 1)
            .await
            .unwrap();
        assert!(r.rate <= 1.0 && r.budget == 1.0, "{r:?}");
        times.push((r.at_unix_ms, 1));
        // Directory writes meanwhile do not use it up.
        let d = a
            .reserve(&key, &policy, WriteClass::Directory, 5)
            .await
            .unwrap();
        assert!(d.rate >= 10.0);
    }
    assert!(busiest_second(&times) <= 1, "{times:?}");
    let span = times.last().unwrap().0 - times[0].0;
    assert!(span >= 7000, "8 writes at 1/s or less: {span} ms");
}
both!(conditional_access_is_one_write_per_second);

async fn two_apps_each_get_their_budget_within_the_tenant_cap(a: Budgets, b: Budgets) {
    let policy = steady(20.0, 30.0);
    let keys = [
        BudgetKey::new("contoso", "app-1"),
        BudgetKey::new("contoso", "app-2"),
    ];
    let all = reserve_concurrently([&a, &b], &keys, &policy, 4, 20).await;
    let of = |app: &str| -> Vec<(u64, u32)> {
        all.iter()
            .filter(|(_, _, a)| a == app)
            .map(|(t, n, _)| (*t, *n))
            .collect()
    };
    for app in ["app-1", "app-2"] {
        assert!(busiest_second(&of(app)) <= 20, "{app}");
    }
    let together: Vec<(u64, u32)> = all.iter().map(|(t, n, _)| (*t, *n)).collect();
    assert!(busiest_second(&together) <= 30, "{together:?}");
    // One app alone gets its whole budget (the cap leaves room for it).
    let solo = BudgetKey::new("fabrikam", "app-1");
    let mut times = Vec::new();
    for _ in 0..10 {
        let r = b
            .reserve(&solo, &policy, WriteClass::Directory, 4)
            .await
            .unwrap();
        times.push((r.at_unix_ms, 4));
    }
    assert_eq!(busiest_second(&times), 20, "{times:?}");
}
both!(two_apps_each_get_their_budget_within_the_tenant_cap);

async fn a_bad_policy_is_refused_naming_the_field(a: Budgets, _b: Budgets) {
    let policy = BudgetPolicy {
        decrease_factor: 2.0,
        ..BudgetPolicy::default()
    };
    let key = BudgetKey::new("contoso", "app-1");
    let e = a
        .reserve(&key, &policy, WriteClass::Directory, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BudgetError::Policy(m) if m.contains("decrease_factor")),
        "{e}"
    );
}
both!(a_bad_policy_is_refused_naming_the_field);

async fn the_gate_stops_and_feeds_429s_back(a: Budgets, b: Budgets) {
    let policy = steady(20.0, 60.0);
    let key = BudgetKey::new("contoso", "app-1");
    let handle = tokio::runtime::Handle::current();
    let gate = BudgetGate::new(handle, a.clone(), key.clone(), policy.clone(), "job-9").unwrap();
    let before = now_ms();
    let gate = tokio::task::spawn_blocking(move || {
        gate.admit(WriteClass::Directory, 20).unwrap();
        assert_eq!(gate.max_batch(WriteClass::Directory), 20);
        gate.feedback(
            WriteClass::Directory,
            20,
            3,
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(
            gate.max_batch(WriteClass::Directory),
            10,
            "the next batch is formed within the cut rate"
        );
        gate
    })
    .await
    .unwrap();
    let r = b
        .reserve(&key, &policy, WriteClass::Directory, 1)
        .await
        .unwrap();
    assert_eq!(r.rate, 10.0, "the 429 was fed back");
    assert!(r.at_unix_ms >= before + 1500);
    b.stop("job-9").await.unwrap();
    let refused = tokio::task::spawn_blocking(move || gate.admit(WriteClass::Directory, 1))
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err().0, "the job was canceled");
    let bad = BudgetGate::new(
        tokio::runtime::Handle::current(),
        a,
        key,
        BudgetPolicy {
            start_fraction: 0.0,
            ..policy
        },
        "job-9",
    );
    assert!(bad.unwrap_err().to_string().contains("start_fraction"));
}
both!(the_gate_stops_and_feeds_429s_back);

async fn gates_are_made_from_a_tasks_budget(a: Budgets, b: Budgets) {
    let gates = BudgetGates::new(a);
    let handle = tokio::runtime::Handle::current();
    let key = BudgetKey::new("contoso", "app-1");
    let good = gates.gate(handle.clone(), key.clone(), "job-3", 30.0, 1.0, None);
    let bad = gates.gate(handle, key.clone(), "job-3", 0.0, 1.0, None);
    let (good, bad) = tokio::task::spawn_blocking(move || {
        (
            good.admit(WriteClass::Directory, 2),
            bad.admit(WriteClass::Directory, 2),
        )
    })
    .await
    .unwrap();
    assert!(good.is_ok());
    assert!(bad.unwrap_err().0.contains("writes_per_second"));
    // The gate's reservation started at half of the task's budget (15/s); this one, at least
    // 2 writes later in the schedule (134 ms at 15/s), has climbed since (7.5/s per second).
    let r = b
        .reserve(
            &key,
            &BudgetPolicy::with_budget(30.0),
            WriteClass::Directory,
            1,
        )
        .await
        .unwrap();
    assert_eq!(r.budget, 30.0);
    assert!(r.rate >= 16.0 && r.rate <= 30.0, "{r:?}");
}
both!(gates_are_made_from_a_tasks_budget);

/// The gate records the budget, the rate, admitted writes, 429s and the seconds waited, by
/// class (values are shared with the other tests of this process: only the series are checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_records_the_budget_metrics() {
    use rewind_worker::telemetry::{install_metrics, serve_metrics};
    let handle = install_metrics().unwrap();
    let (addr, server) = serve_metrics("127.0.0.1:0".parse().unwrap(), handle)
        .await
        .unwrap();
    let budgets: Budgets = Arc::new(MemoryBudgets::new());
    let gate = BudgetGates::new(budgets).gate(
        tokio::runtime::Handle::current(),
        BudgetKey::new("contoso", "app-1"),
        "job-4",
        20.0,
        1.0,
        None,
    );
    let body = tokio::task::spawn_blocking(move || {
        gate.admit(WriteClass::ConditionalAccess, 1).unwrap();
        gate.feedback(WriteClass::ConditionalAccess, 1, 1, None);
        let mut response = ureq::get(&format!("http://{addr}/metrics")).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    })
    .await
    .unwrap();
    for series in [
        "rewind_recovery_write_budget{class=\"conditional_access\"} 1",
        "rewind_recovery_write_rate{class=\"conditional_access\"} ",
        "rewind_recovery_writes_admitted_total{class=\"conditional_access\"} ",
        "rewind_recovery_throttled_total{class=\"conditional_access\"} ",
        "rewind_recovery_budget_wait_seconds_bucket{class=\"conditional_access\",",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(series)),
            "{series} in\n{body}"
        );
    }
    server.abort();
}
