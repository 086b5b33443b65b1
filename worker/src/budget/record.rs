//! The shared record of one tenant's write budget and the pure functions that reserve against
//! it and cut it: both implementations of [`super::WriteBudgets`] run these, one under a lock,
//! the other as a compare-and-set on the record's revision.

use std::collections::BTreeMap;
use std::time::Duration;

use rewind_common::connector::WriteClass;
use serde::{Deserialize, Serialize};

use super::{BudgetKey, BudgetPolicy, Reservation, DEFAULT_RETRY_AFTER};

/// The sliding window a lane's reservations are held to, in milliseconds: a second, and a
/// guard for the delay between a reservation and its request's arrival, which varies by some
/// milliseconds from one batch to the next (a thread woken late, a slow connection): without
/// it, a batch reserved for the start of a second can arrive after the next second's first
/// one, and the directory's own one-second window then holds one batch too many.
const WINDOW_MS: u64 = 1030;

/// One rate limit: its current rate and its schedule (GCRA's theoretical arrival time, plus
/// the reservations of the last second for the sliding window). Times are Unix milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    /// Writes per second now (0: never used, it starts at the policy's fraction).
    pub rate: f64,
    /// The earliest time of the next reservation (GCRA's theoretical arrival time).
    pub next_free_at: u64,
    /// Up to when the rate has climbed.
    pub last_increase_at: u64,
    /// Nothing is reserved before this (a 429's `Retry-After`).
    pub blocked_until: u64,
    /// Reservations of the last second of the schedule: (time, writes), in time order.
    pub recent: Vec<(u64, u32)>,
}

impl Lane {
    /// The earliest time at or after which `writes` more fit in the sliding window under
    /// `limit` writes per second (a reservation larger than the limit needs an empty window),
    /// and after every reservation made so far.
    fn earliest(&self, writes: u32, limit: f64) -> u64 {
        let limit = limit.max(f64::from(writes));
        let mut sum: f64 = self.recent.iter().map(|(_, n)| f64::from(*n)).sum();
        let mut at = self
            .next_free_at
            .max(self.blocked_until)
            .max(self.recent.last().map_or(0, |(t, _)| *t));
        for (t, n) in &self.recent {
            if sum + f64::from(writes) <= limit + 1e-9 {
                break;
            }
            sum -= f64::from(*n);
            at = at.max(t + WINDOW_MS);
        }
        at
    }

    /// Books `writes` at `at` under `rate`.
    fn book(&mut self, at: u64, writes: u32, rate: f64) {
        let spacing = (f64::from(writes) * 1000.0 / rate).ceil();
        self.next_free_at = at.saturating_add(spacing as u64);
        self.recent.retain(|(t, _)| t + WINDOW_MS > at);
        self.recent.push((at, writes));
    }

    /// The earliest time at or after `from` at which `writes` more fit under `limit` in every
    /// sliding window that holds it, whatever the order the reservations were booked in: the
    /// tenant's cap, which apps booking ahead on schedules of their own share (a reservation
    /// of one app never waits behind a later one of another while the cap has room).
    fn earliest_in_window(&self, writes: u32, limit: f64, from: u64) -> u64 {
        let limit = limit.max(f64::from(writes));
        // `recent` is in time order. Prefix sums: `sums[i]` is the writes of `recent[..i]`.
        let mut sums = Vec::with_capacity(self.recent.len() + 1);
        sums.push(0u64);
        for (_, n) in &self.recent {
            sums.push(sums[sums.len() - 1] + u64::from(*n));
        }
        let index = |t: u64| self.recent.partition_point(|(r, _)| *r < t);
        // Writes booked in [s, s + WINDOW_MS).
        let held = |s: u64| sums[index(s.saturating_add(WINDOW_MS))] - sums[index(s)];
        let fits = |t: u64| {
            // The windows holding `t` start in (t - WINDOW_MS, t]; the most they hold is at
            // their first start, or where a later reservation comes into them.
            let first = t.saturating_add(1).saturating_sub(WINDOW_MS);
            let later = self.recent[index(t.saturating_add(1))..]
                .iter()
                .take_while(|(r, _)| *r < t.saturating_add(WINDOW_MS))
                .map(|(r, _)| r.saturating_add(1).saturating_sub(WINDOW_MS));
            std::iter::once(first)
                .chain(later)
                .all(|s| (held(s) + u64::from(writes)) as f64 <= limit + 1e-9)
        };
        if fits(from) {
            return from;
        }
        // Room is made only where a reservation leaves the windows: the earliest such time
        // that fits. A window past the last reservation's holds none, so the last one's exit
        // always fits (`limit` is at least `writes`).
        let last_exit = self
            .recent
            .last()
            .map_or(from, |(r, _)| r.saturating_add(WINDOW_MS).max(from));
        self.recent
            .iter()
            .map(|(r, _)| r.saturating_add(WINDOW_MS))
            .filter(|t| *t > from)
            .find(|t| fits(*t))
            .unwrap_or(last_exit)
    }

    /// Books `writes` at `at` in time order among the others (see
    /// [`Lane::earliest_in_window`]), forgetting those no window from `now` on holds.
    fn book_in_window(&mut self, at: u64, writes: u32, now: u64) {
        self.recent
            .retain(|(t, _)| t.saturating_add(WINDOW_MS) > now);
        let i = self.recent.partition_point(|(t, _)| *t <= at);
        self.recent.insert(i, (at, writes));
    }
}

/// Everything of one tenant's budget, stored as one record so that one update reserves
/// against an app's budget and the tenant's cap at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Directory writes of each app registration (by client id): AIMD up to its budget.
    pub apps: BTreeMap<String, Lane>,
    /// Conditional access writes of the tenant: AIMD up to its budget.
    pub conditional_access: Lane,
    /// Directory writes of all apps together: the tenant's cap (a sliding window only, its
    /// reservations in time order whatever the order they were booked in).
    pub tenant: Lane,
}

impl TenantRecord {
    fn lane(&mut self, key: &BudgetKey, class: WriteClass) -> &mut Lane {
        match class {
            WriteClass::Directory => self.apps.entry(key.app.clone()).or_default(),
            WriteClass::ConditionalAccess => &mut self.conditional_access,
        }
    }

    /// Reserves `writes` of `class` for `key` at the earliest time from `now` (Unix ms).
    pub fn reserve(
        &mut self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        writes: u32,
        now: u64,
    ) -> Reservation {
        let budget = policy.budget(class);
        let floor = policy.floor(class);
        let increase = policy.increase(class);
        let cap = policy.tenant_writes_per_second;
        let lane = self.lane(key, class);
        if lane.rate <= 0.0 || !lane.rate.is_finite() {
            lane.rate = (budget * policy.start_fraction).max(floor);
            lane.last_increase_at = now;
        }
        // A budget lowered since: the rate follows at once.
        lane.rate = lane.rate.clamp(floor, budget);
        let lane_at = now.max(lane.earliest(writes, lane.rate));
        // The tenant's cap: the earliest time from the app's own that it has room for. (Its
        // booking may fall before another app's reservations: the windows are checked both
        // ways.)
        let at = match class {
            WriteClass::Directory => self.tenant.earliest_in_window(writes, cap, lane_at),
            WriteClass::ConditionalAccess => lane_at,
        };
        let lane = self.lane(key, class);
        // Additive increase for the time the schedule ran since the last one (a blocked
        // period does not count: `last_increase_at` was moved past it).
        if at > lane.last_increase_at {
            let seconds = (at - lane.last_increase_at) as f64 / 1000.0;
            lane.rate = (lane.rate + increase * seconds).min(budget);
            lane.last_increase_at = at;
        }
        let rate = lane.rate;
        lane.book(at, writes, rate);
        if class == WriteClass::Directory {
            self.tenant.book_in_window(at, writes, now);
        }
        Reservation {
            at_unix_ms: at,
            wait: Duration::from_millis(at.saturating_sub(now)),
            rate,
            budget,
        }
    }

    /// A 429 at `now`: the rate is cut once per throttled period, and nothing of the lane is
    /// reserved before `now + retry_after`. Returns the rate after the cut.
    pub fn throttled(
        &mut self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        retry_after: Option<Duration>,
        now: u64,
    ) -> f64 {
        let budget = policy.budget(class);
        let floor = policy.floor(class);
        let wait = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        let until = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        let lane = self.lane(key, class);
        if lane.rate <= 0.0 || !lane.rate.is_finite() {
            lane.rate = (budget * policy.start_fraction).max(floor);
        }
        if now >= lane.blocked_until {
            lane.rate = (lane.rate * policy.decrease_factor).clamp(floor, budget);
        }
        lane.blocked_until = lane.blocked_until.max(until);
        lane.last_increase_at = lane.last_increase_at.max(lane.blocked_until);
        lane.rate
    }

    /// The current rate of the key's class (the start rate when it was never used).
    pub fn rate(&self, key: &BudgetKey, policy: &BudgetPolicy, class: WriteClass) -> f64 {
        let lane = match class {
            WriteClass::Directory => self.apps.get(&key.app),
            WriteClass::ConditionalAccess => Some(&self.conditional_access),
        };
        match lane {
            Some(l) if l.rate > 0.0 => l.rate,
            _ => (policy.budget(class) * policy.start_fraction).max(policy.floor(class)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_larger_than_the_rate_goes_alone_in_its_second() {
        let key = BudgetKey::new("t", "a");
        let policy = BudgetPolicy {
            start_fraction: 1.0,
            increase_per_second: 0.0,
            writes_per_second: 10.0,
            ..BudgetPolicy::default()
        };
        let mut r = TenantRecord::default();
        let first = r.reserve(&key, &policy, WriteClass::Directory, 20, 1_000);
        let second = r.reserve(&key, &policy, WriteClass::Directory, 1, 1_000);
        assert_eq!(first.at_unix_ms, 1_000);
        // 20 writes at 10/s take 2 s of the schedule.
        assert_eq!(second.at_unix_ms, 3_000);
    }

    fn full_speed(budget: f64, cap: f64) -> BudgetPolicy {
        BudgetPolicy {
            start_fraction: 1.0,
            increase_per_second: 0.0,
            writes_per_second: budget,
            tenant_writes_per_second: cap,
            ..BudgetPolicy::default()
        }
    }

    /// An app that booked ahead does not hold another back while the tenant's cap has room
    /// (a single schedule for the cap made every app wait behind the latest reservation of
    /// any: three apps of 200/s reached 1.24x the least time instead of about 1x).
    #[test]
    fn an_app_is_not_held_behind_another_apps_later_reservations() {
        let policy = full_speed(200.0, 600.0);
        let (a, b) = (BudgetKey::new("t", "a"), BudgetKey::new("t", "b"));
        let mut r = TenantRecord::default();
        let ahead: Vec<u64> = (0..5)
            .map(|_| {
                r.reserve(&a, &policy, WriteClass::Directory, 20, 10_000)
                    .at_unix_ms
            })
            .collect();
        assert_eq!(ahead, [10_000, 10_100, 10_200, 10_300, 10_400]);
        let first_b = r.reserve(&b, &policy, WriteClass::Directory, 20, 10_000);
        assert_eq!(first_b.at_unix_ms, 10_000);
        assert!(first_b.wait.is_zero());
    }

    /// Whatever the order of the reservations of several apps, no sliding window holds more
    /// than an app's budget of its writes, nor more than the cap of all of them.
    #[test]
    fn no_window_holds_more_than_the_cap_or_an_apps_budget() {
        let (budget, cap) = (200.0, 450.0);
        let policy = full_speed(budget, cap);
        let keys: Vec<BudgetKey> = (0..3)
            .map(|i| BudgetKey::new("t", format!("app-{i}")))
            .collect();
        let mut r = TenantRecord::default();
        let mut booked: Vec<(u64, usize, u32)> = Vec::new();
        let mut now = 50_000u64;
        let mut seed = 7u64;
        for _ in 0..600 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let app = (seed >> 33) as usize % 3;
            let writes = 1 + ((seed >> 40) % 20) as u32;
            now += (seed >> 50) % 15;
            let res = r.reserve(&keys[app], &policy, WriteClass::Directory, writes, now);
            assert!(res.at_unix_ms >= now);
            booked.push((res.at_unix_ms, app, writes));
        }
        booked.sort_unstable();
        for (i, (start, _, _)) in booked.iter().enumerate() {
            let window: Vec<_> = booked[i..]
                .iter()
                .take_while(|(t, _, _)| *t < start + WINDOW_MS)
                .collect();
            let all: u32 = window.iter().map(|(_, _, n)| n).sum();
            assert!(f64::from(all) <= cap, "{all} writes from {start}");
            for app in 0..3 {
                let of_app: u32 = window
                    .iter()
                    .filter(|(_, a, _)| *a == app)
                    .map(|(_, _, n)| n)
                    .sum();
                assert!(
                    f64::from(of_app) <= budget,
                    "app {app}: {of_app} from {start}"
                );
            }
        }
        // The cap was what bound: the schedule ran past the requests.
        assert!(booked.last().is_some_and(|(t, _, _)| *t > now + 1_000));
    }
}
