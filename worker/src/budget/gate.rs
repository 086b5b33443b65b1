//! [`BudgetGate`]: the connector's blocking [`WriteGate`] over the shared write budgets, for
//! one tenant, app, policy and job. It refuses once the job is stopped, reserves, and sleeps
//! until the reservation (in steps of at most a second, looking at the stop signal between
//! them); `check` is the stop signal alone (the connector asks while it waits out a
//! `Retry-After`); it reports 429s back to the budget and records the budget metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rewind_common::connector::{GateClosed, WriteClass, WriteGate};
use rewind_common::metrics as names;
use tokio::runtime::Handle;

use super::{BudgetError, BudgetKey, BudgetPolicy, WriteBudgets};

/// The longest sleep between two looks at the stop signal while waiting for a reservation.
const STOP_CHECK: Duration = Duration::from_secs(1);

/// Attempts of a budget call before the gate gives up (the store may be restarting).
const BUDGET_ATTEMPTS: u32 = 5;

/// The write gate of one recovery: its tenant's budget for one app, and its job's stop signal.
///
/// Blocking: only call it from threads that are not a runtime's workers (`spawn_blocking`
/// threads, plain threads): each call is `Handle::block_on`.
pub struct BudgetGate {
    handle: Handle,
    budgets: Arc<dyn WriteBudgets>,
    key: BudgetKey,
    policy: BudgetPolicy,
    job: String,
    /// The rate last reserved at, per class (for [`WriteGate::max_batch`], without a call).
    rates: Mutex<[f64; 2]>,
    /// The task whose writes this gate passes, and when its lease was last renewed: a lease
    /// is taken before the first write and renewed while writing, so that a canceled job is
    /// abandoned only once no task of it may still be sending. The gate never ends it: the
    /// coordinator does once it has recorded the task's outcomes (or it runs out), so that
    /// nothing a task wrote is missing from the list of an abandoned job.
    lease: Option<(String, Mutex<Option<std::time::Instant>>)>,
}

impl std::fmt::Debug for BudgetGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetGate")
            .field("key", &self.key)
            .field("policy", &self.policy)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

fn slot(class: WriteClass) -> usize {
    match class {
        WriteClass::Directory => 0,
        WriteClass::ConditionalAccess => 1,
    }
}

impl BudgetGate {
    /// A gate for `job`'s writes under `key`'s budget; refuses a policy that cannot work.
    pub fn new(
        handle: Handle,
        budgets: Arc<dyn WriteBudgets>,
        key: BudgetKey,
        policy: BudgetPolicy,
        job: impl Into<String>,
    ) -> Result<Self, BudgetError> {
        policy.validate()?;
        let start = |c| (policy.budget(c) * policy.start_fraction).max(policy.floor(c));
        let rates = Mutex::new([
            start(WriteClass::Directory),
            start(WriteClass::ConditionalAccess),
        ]);
        Ok(Self {
            handle,
            budgets,
            key,
            policy,
            job: job.into(),
            rates,
            lease: None,
        })
    }

    /// The same gate, holding a write lease for `task` ([`WriteBudgets::lease`]) while it
    /// lets writes through.
    pub fn with_lease(mut self, task: impl Into<String>) -> Self {
        self.lease = Some((task.into(), Mutex::new(None)));
        self
    }

    /// Takes or renews the task's lease when a third of it has run.
    fn renew_lease(&self) -> Result<(), GateClosed> {
        let Some((task, renewed)) = &self.lease else {
            return Ok(());
        };
        let due = renewed
            .lock()
            .map(|r| r.is_none_or(|t| t.elapsed() > super::LEASE / 3))
            .unwrap_or(true);
        if !due {
            return Ok(());
        }
        let until = super::now_unix_ms() + super::LEASE.as_millis() as u64;
        self.call("taking a write lease", || {
            self.budgets.lease(&self.job, task, Some(until))
        })?;
        if let Ok(mut r) = renewed.lock() {
            *r = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// A budget call, tried again a few times when the store fails (it may be restarting).
    fn call<T, F>(&self, what: &str, mut f: impl FnMut() -> F) -> Result<T, GateClosed>
    where
        F: std::future::Future<Output = Result<T, BudgetError>>,
    {
        let mut pause = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.handle.block_on(f()) {
                Ok(v) => return Ok(v),
                Err(e @ (BudgetError::Policy(_) | BudgetError::InvalidKey(_))) => {
                    return Err(GateClosed(format!("{what}: {e}")))
                }
                Err(e) if attempt >= BUDGET_ATTEMPTS => {
                    tracing::warn!(tenant = %self.key.tenant, job = %self.job, error = %e, "the write budget is unavailable");
                    return Err(GateClosed(format!("{what}: {e}")));
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    fn check_stopped(&self) -> Result<(), GateClosed> {
        let stopped = self.call("reading the job's stop signal", || {
            self.budgets.is_stopped(&self.job)
        })?;
        if stopped {
            Err(GateClosed("the job was canceled".into()))
        } else {
            Ok(())
        }
    }

    /// The key, policy and job of the gate.
    pub fn key(&self) -> &BudgetKey {
        &self.key
    }
}

impl WriteGate for BudgetGate {
    fn admit(&self, class: WriteClass, writes: u32) -> Result<(), GateClosed> {
        // The lease first, then the stop signal: a coordinator that stops the job and then
        // sees no lease knows that any later writer sees the stop.
        self.renew_lease()?;
        self.check_stopped()?;
        let r = self.call("reserving writes", || {
            self.budgets.reserve(&self.key, &self.policy, class, writes)
        })?;
        let label = names::write_class::of(class);
        metrics::gauge!(names::RECOVERY_WRITE_RATE, names::label::WRITE_CLASS => label).set(r.rate);
        metrics::gauge!(names::RECOVERY_WRITE_BUDGET, names::label::WRITE_CLASS => label)
            .set(r.budget);
        metrics::histogram!(names::RECOVERY_BUDGET_WAIT_SECONDS, names::label::WRITE_CLASS => label)
            .record(r.wait.as_secs_f64());
        if let Ok(mut rates) = self.rates.lock() {
            rates[slot(class)] = r.rate;
        }
        let mut left = r.wait;
        while !left.is_zero() {
            let pause = left.min(STOP_CHECK);
            std::thread::sleep(pause);
            left -= pause;
            if !left.is_zero() {
                self.check_stopped()?;
            }
        }
        // Canceled while waiting: the reservation goes unused.
        if !r.wait.is_zero() {
            self.check_stopped()?;
        }
        metrics::counter!(names::RECOVERY_WRITES_ADMITTED_TOTAL, names::label::WRITE_CLASS => label)
            .increment(u64::from(writes));
        Ok(())
    }

    fn feedback(
        &self,
        class: WriteClass,
        _sent: u32,
        throttled: u32,
        retry_after: Option<Duration>,
    ) {
        if throttled == 0 {
            return;
        }
        let label = names::write_class::of(class);
        metrics::counter!(names::RECOVERY_THROTTLED_TOTAL, names::label::WRITE_CLASS => label)
            .increment(u64::from(throttled));
        // A failure to record the cut only loses the cut: the next 429 records it again.
        match self.call("recording a 429", || {
            self.budgets
                .throttled(&self.key, &self.policy, class, retry_after)
        }) {
            // The next batch is formed within the cut rate.
            Ok(rate) => {
                if let Ok(mut rates) = self.rates.lock() {
                    rates[slot(class)] = rate;
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %self.key.tenant, job = %self.job, error = %e, "a 429 was not recorded in the write budget");
            }
        }
    }

    fn check(&self) -> Result<(), GateClosed> {
        self.check_stopped()
    }

    fn max_batch(&self, class: WriteClass) -> usize {
        let rate = self.rates.lock().map_or(1.0, |r| r[slot(class)]);
        (rate.floor() as usize).max(1)
    }
}

/// A gate that refuses every write, saying why (a budget that cannot be used).
#[derive(Clone, Debug)]
pub struct ClosedGate(pub String);

impl WriteGate for ClosedGate {
    fn admit(&self, _class: WriteClass, _writes: u32) -> Result<(), GateClosed> {
        Err(GateClosed(self.0.clone()))
    }

    fn feedback(&self, _: WriteClass, _: u32, _: u32, _: Option<Duration>) {}
}

/// Makes the [`BudgetGate`] of each apply task over one process's budgets (in-process, or
/// the cluster's JetStream bucket): what a worker's gate maker hands out.
#[derive(Clone)]
pub struct BudgetGates {
    budgets: Arc<dyn WriteBudgets>,
}

impl std::fmt::Debug for BudgetGates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetGates").finish_non_exhaustive()
    }
}

impl BudgetGates {
    pub fn new(budgets: Arc<dyn WriteBudgets>) -> Self {
        Self { budgets }
    }

    /// The budgets the gates share (the coordinator stops a job through the same ones).
    pub fn budgets(&self) -> &Arc<dyn WriteBudgets> {
        &self.budgets
    }

    /// The gate of `job`'s writes to `tenant` through app registration `app`, under the
    /// default policy with these budgets (the tenant's cap, Graph's 60 when `None`, is
    /// raised to the app's budget when that is larger); a budget that cannot work gives a
    /// gate that refuses, naming it.
    pub fn gate(
        &self,
        handle: Handle,
        key: BudgetKey,
        job: &str,
        writes_per_second: f64,
        conditional_access_per_second: f64,
        tenant_writes_per_second: Option<f64>,
    ) -> Arc<dyn WriteGate> {
        match self.budget_gate(
            handle,
            key,
            job,
            writes_per_second,
            conditional_access_per_second,
            tenant_writes_per_second,
        ) {
            Ok(gate) => Arc::new(gate),
            Err(e) => Arc::new(ClosedGate(e.to_string())),
        }
    }

    /// [`BudgetGates::gate`] as the gate itself (to give it a lease), or why none works.
    pub fn budget_gate(
        &self,
        handle: Handle,
        key: BudgetKey,
        job: &str,
        writes_per_second: f64,
        conditional_access_per_second: f64,
        tenant_writes_per_second: Option<f64>,
    ) -> Result<BudgetGate, BudgetError> {
        let mut policy = BudgetPolicy::with_budget(writes_per_second);
        policy.conditional_access_per_second = conditional_access_per_second;
        // Never below one app's budget: a tenant of one app writes at its app's budget.
        policy.tenant_writes_per_second = tenant_writes_per_second
            .unwrap_or(policy.tenant_writes_per_second)
            .max(writes_per_second);
        BudgetGate::new(handle, self.budgets.clone(), key, policy, job)
    }
}
