//! The per-tenant write budget that recovery writes share across every worker of a cluster
//! (AIMD): a recovery starts at a fraction of the budget, climbs additively while no 429
//! arrives, is cut multiplicatively on a 429 and sends nothing before its `Retry-After`; and
//! the job's stop signal (a canceled job sends nothing more).
//!
//! One async trait, [`WriteBudgets`], with an in-process implementation ([`MemoryBudgets`],
//! for single-node mode's embedded workers) and one over a JetStream key-value bucket
//! ([`JetStreamBudgets`], every process of a cluster), both over the same pure record logic
//! ([`TenantRecord`]); [`BudgetGate`] is the connector's blocking [`WriteGate`] over either.
//!
//! A reservation is GCRA (virtual scheduling) with a one-second sliding window: the writes
//! reserved by all processes together never exceed the current rate in any one-second window
//! (a batch larger than the rate goes alone in its window: no burst beyond one batch), and
//! their average never exceeds it either. Times are Unix milliseconds, so the clocks of the
//! processes sharing a budget must agree to a few milliseconds (NTP).
//!
//! [`WriteGate`]: rewind_common::connector::WriteGate

mod gate;
pub mod jetstream;
mod memory;
mod record;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rewind_common::connector::WriteClass;
use serde::Deserialize;

pub use gate::{BudgetGate, BudgetGates, ClosedGate};
pub use jetstream::JetStreamBudgets;
pub use memory::MemoryBudgets;
pub use record::TenantRecord;

/// How much a tenant's recovery may write, and how its rate moves (AIMD).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetPolicy {
    /// Directory writes per second of one app registration (Graph: 20 by default).
    pub writes_per_second: f64,
    /// Conditional access policy and named location writes per second of the tenant (all
    /// apps together; Graph: 1).
    pub conditional_access_per_second: f64,
    /// Directory writes per second of all app registrations of the tenant together.
    pub tenant_writes_per_second: f64,
    /// The share of the budget a rate starts at, in (0, 1].
    pub start_fraction: f64,
    /// Directory writes per second gained per second of writes without a 429 (additive
    /// increase); the conditional access rate gains in proportion to its budget.
    pub increase_per_second: f64,
    /// What a 429 multiplies the rate by, in (0, 1) (multiplicative decrease).
    pub decrease_factor: f64,
    /// The rate never goes below this (nor above the budget), in writes per second.
    pub min_rate: f64,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self::with_budget(20.0)
    }
}

impl BudgetPolicy {
    /// The default policy for an app budget of `writes_per_second`: it starts at half of it
    /// and climbs by half of it per second (to the budget in a second unless a 429 cuts it).
    pub fn with_budget(writes_per_second: f64) -> Self {
        Self {
            writes_per_second,
            conditional_access_per_second: 1.0,
            tenant_writes_per_second: 60.0,
            start_fraction: 0.5,
            increase_per_second: writes_per_second / 2.0,
            decrease_factor: 0.5,
            min_rate: 0.5,
        }
    }

    /// Refuses a policy that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), BudgetError> {
        let bad = |field: &str, want: &str, got: f64| {
            Err(BudgetError::Policy(format!(
                "{field} must be {want}, not {got}"
            )))
        };
        let positive = [
            ("writes_per_second", self.writes_per_second),
            (
                "conditional_access_per_second",
                self.conditional_access_per_second,
            ),
            ("tenant_writes_per_second", self.tenant_writes_per_second),
            ("min_rate", self.min_rate),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, "a positive number of writes per second", v);
            }
        }
        if !(self.start_fraction > 0.0 && self.start_fraction <= 1.0) {
            return bad("start_fraction", "in (0, 1]", self.start_fraction);
        }
        if !(self.increase_per_second.is_finite() && self.increase_per_second >= 0.0) {
            return bad(
                "increase_per_second",
                "zero or more writes per second",
                self.increase_per_second,
            );
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return bad("decrease_factor", "in (0, 1)", self.decrease_factor);
        }
        Ok(())
    }

    /// The budget of a class: an app's directory writes, or the tenant's conditional access.
    pub fn budget(&self, class: WriteClass) -> f64 {
        match class {
            WriteClass::Directory => self.writes_per_second,
            WriteClass::ConditionalAccess => self.conditional_access_per_second,
        }
    }

    /// The additive increase of a class, in writes per second per second.
    pub fn increase(&self, class: WriteClass) -> f64 {
        self.increase_per_second * self.budget(class) / self.writes_per_second
    }

    /// The lowest rate of a class.
    pub fn floor(&self, class: WriteClass) -> f64 {
        self.min_rate.min(self.budget(class))
    }
}

/// Whose budget: a tenant and one of its app registrations (client id); each app has its
/// own directory budget, all apps of a tenant share its cap and its conditional access budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    pub tenant: String,
    pub app: String,
}

impl BudgetKey {
    pub fn new(tenant: impl Into<String>, app: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            app: app.into(),
        }
    }
}

/// A reservation: when the writes may be sent, and the rate they were reserved at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reservation {
    /// When the writes may be sent, Unix milliseconds.
    pub at_unix_ms: u64,
    /// How long from now that is.
    pub wait: Duration,
    /// The rate (writes per second) of the key and class after this reservation.
    pub rate: f64,
    /// The budget of the key and class.
    pub budget: f64,
}

/// Why a budget could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("budget policy: {0}")]
    Policy(String),
    #[error("budget key: {0}")]
    InvalidKey(String),
    #[error("write budget store: {op}: {message}")]
    Backend { op: &'static str, message: String },
    #[error("write budget of tenant {tenant}: {attempts} updates in a row lost to other writers")]
    Contention { tenant: String, attempts: u32 },
    #[error("write budget of tenant {tenant}: the stored record is unreadable: {message}")]
    Corrupt { tenant: String, message: String },
}

/// The write budgets of a cluster, shared by all its workers.
#[async_trait]
pub trait WriteBudgets: Send + Sync {
    /// Reserves `writes` writes of `class` under the key's budget (and, for directory writes,
    /// the tenant's cap): when they may be sent. Reservations of all callers together never
    /// put more than the current rate in any one-second window.
    async fn reserve(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        writes: u32,
    ) -> Result<Reservation, BudgetError>;

    /// A 429 was answered to writes of `class`: the rate is cut (once per throttled period:
    /// several workers reporting the same storm cut it once) and nothing is reserved before
    /// `retry_after` (1 s when Graph gave none) from now. Returns the rate after the cut.
    async fn throttled(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        retry_after: Option<Duration>,
    ) -> Result<f64, BudgetError>;

    /// Marks the job stopped (canceled), for every process.
    async fn stop(&self, job: &str) -> Result<(), BudgetError>;

    /// Whether the job was stopped.
    async fn is_stopped(&self, job: &str) -> Result<bool, BudgetError>;

    /// Records that `task` of `job` may be sending writes until `until_unix_ms` (a lease its
    /// worker takes before its first write and renews while it writes), or that it is done
    /// (`None`).
    async fn lease(
        &self,
        job: &str,
        task: &str,
        until_unix_ms: Option<u64>,
    ) -> Result<(), BudgetError>;

    /// How many tasks of `job` hold a lease that has not run out: a stopped job is over only
    /// once none does (a worker that died lets its lease run out).
    async fn in_flight(&self, job: &str) -> Result<usize, BudgetError>;
}

/// How long a write lease lasts; the gate renews it while it writes.
pub const LEASE: Duration = Duration::from_secs(30);

/// The wait after a 429 that gave no `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Now, in Unix milliseconds.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_validated_naming_the_field() {
        assert!(BudgetPolicy::default().validate().is_ok());
        type Spoil = fn(&mut BudgetPolicy);
        let cases: [(&str, Spoil); 8] = [
            ("writes_per_second", |p| p.writes_per_second = 0.0),
            ("conditional_access_per_second", |p| {
                p.conditional_access_per_second = f64::NAN
            }),
            ("tenant_writes_per_second", |p| {
                p.tenant_writes_per_second = -1.0
            }),
            ("start_fraction", |p| p.start_fraction = 1.5),
            ("start_fraction", |p| p.start_fraction = 0.0),
            ("increase_per_second", |p| p.increase_per_second = -0.1),
            ("decrease_factor", |p| p.decrease_factor = 1.0),
            ("min_rate", |p| p.min_rate = f64::INFINITY),
        ];
        for (field, spoil) in cases {
            let mut p = BudgetPolicy::default();
            spoil(&mut p);
            let e = p.validate().map(|_| ()).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|m| m.contains(field)),
                "{field}: {e:?}"
            );
        }
    }

    #[test]
    fn the_defaults_are_graphs_limits() {
        let p = BudgetPolicy::default();
        assert_eq!(p.budget(WriteClass::Directory), 20.0);
        assert_eq!(p.budget(WriteClass::ConditionalAccess), 1.0);
        assert_eq!(p.tenant_writes_per_second, 60.0);
        assert_eq!(p.increase(WriteClass::Directory), 10.0);
        assert_eq!(p.increase(WriteClass::ConditionalAccess), 0.5);
        let parsed: BudgetPolicy =
            serde_json::from_str(r#"{"writes_per_second": 20.0}"#).unwrap_or_default();
        assert_eq!(parsed, p);
        assert!(serde_json::from_str::<BudgetPolicy>(r#"{"rate": 1}"#).is_err());
    }
}
