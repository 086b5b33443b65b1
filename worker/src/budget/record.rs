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
}

/// Everything of one tenant's budget, stored as one record so that one update reserves
/// against an app's budget and the tenant's cap at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Directory writes of each app registration (by client id): AIMD up to its budget.
    pub apps: BTreeMap<String, Lane>,
    /// Conditional access writes of the tenant: AIMD up to its budget.
    pub conditional_access: Lane,
    /// Directory writes of all apps together: the tenant's cap (a fixed rate).
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
        let tenant_at = match class {
            WriteClass::Directory => self.tenant.earliest(writes, cap),
            WriteClass::ConditionalAccess => 0,
        };
        let lane = self.lane(key, class);
        if lane.rate <= 0.0 || !lane.rate.is_finite() {
            lane.rate = (budget * policy.start_fraction).max(floor);
            lane.last_increase_at = now;
        }
        // A budget lowered since: the rate follows at once.
        lane.rate = lane.rate.clamp(floor, budget);
        let at = now.max(lane.earliest(writes, lane.rate)).max(tenant_at);
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
            self.tenant.book(at, writes, cap);
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
}
