//! The write budgets of one process (single-node mode's embedded workers share it): the
//! tenants' records and the stopped jobs under a lock, never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rewind_common::connector::WriteClass;

use super::{
    now_unix_ms, BudgetError, BudgetKey, BudgetPolicy, Reservation, TenantRecord, WriteBudgets,
};

/// In-process write budgets.
#[derive(Debug, Default)]
pub struct MemoryBudgets {
    tenants: Mutex<HashMap<String, TenantRecord>>,
    stopped: Mutex<HashSet<String>>,
    /// (job, task) -> lease end, Unix ms.
    leases: Mutex<HashMap<(String, String), u64>>,
}

impl MemoryBudgets {
    pub fn new() -> Self {
        Self::default()
    }

    fn tenants(&self) -> MutexGuard<'_, HashMap<String, TenantRecord>> {
        // A panic while holding the lock left a record whole (every change is one assignment).
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopped(&self) -> MutexGuard<'_, HashSet<String>> {
        self.stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl WriteBudgets for MemoryBudgets {
    async fn reserve(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        writes: u32,
    ) -> Result<Reservation, BudgetError> {
        policy.validate()?;
        let now = now_unix_ms();
        let mut tenants = self.tenants();
        let record = tenants.entry(key.tenant.clone()).or_default();
        Ok(record.reserve(key, policy, class, writes, now))
    }

    async fn throttled(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        retry_after: Option<Duration>,
    ) -> Result<f64, BudgetError> {
        policy.validate()?;
        let now = now_unix_ms();
        let mut tenants = self.tenants();
        let record = tenants.entry(key.tenant.clone()).or_default();
        Ok(record.throttled(key, policy, class, retry_after, now))
    }

    async fn stop(&self, job: &str) -> Result<(), BudgetError> {
        self.stopped().insert(job.to_owned());
        Ok(())
    }

    async fn is_stopped(&self, job: &str) -> Result<bool, BudgetError> {
        Ok(self.stopped().contains(job))
    }

    async fn lease(
        &self,
        job: &str,
        task: &str,
        until_unix_ms: Option<u64>,
    ) -> Result<(), BudgetError> {
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (job.to_owned(), task.to_owned());
        match until_unix_ms {
            Some(until) => {
                leases.insert(key, until);
            }
            None => {
                leases.remove(&key);
            }
        }
        Ok(())
    }

    async fn in_flight(&self, job: &str) -> Result<usize, BudgetError> {
        let now = now_unix_ms();
        let leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(leases
            .iter()
            .filter(|((j, _), until)| j == job && **until > now)
            .count())
    }
}
