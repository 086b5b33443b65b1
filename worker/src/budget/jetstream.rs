//! The write budgets of a cluster in a JetStream key-value bucket ([`BUCKET`]): one record per
//! tenant (`budget.{tenant}`, JSON), changed by compare-and-set on its revision and retried on
//! conflict, so that the reservations of every process are serialised; one key per stopped job
//! (`stop.{job}`). Times in the records are Unix milliseconds: the processes' clocks must
//! agree to a few milliseconds. Keys live 7 days after their last change (a budget unused
//! that long starts again at its fraction).

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rewind_common::connector::WriteClass;

use super::{
    now_unix_ms, BudgetError, BudgetKey, BudgetPolicy, Reservation, TenantRecord, WriteBudgets,
};

/// The key-value bucket of the write budgets.
pub const BUCKET: &str = "rewind-budgets";

/// Compare-and-set attempts of one change before it is given up on.
const MAX_ATTEMPTS: u32 = 200;

/// Write budgets in a JetStream key-value bucket. Cloning shares the bucket.
#[derive(Clone)]
pub struct JetStreamBudgets {
    store: Store,
}

impl std::fmt::Debug for JetStreamBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBudgets").finish_non_exhaustive()
    }
}

fn backend<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> BudgetError {
    move |e| BudgetError::Backend {
        op,
        message: e.to_string(),
    }
}

/// A key-value key segment for any text: letters, digits, `-` and `_` as they are, every
/// other byte as `=` and two hex digits (so distinct names never share a key).
fn key_segment(name: &str) -> Result<String, BudgetError> {
    if name.is_empty() {
        return Err(BudgetError::InvalidKey(
            "an empty tenant or job name".into(),
        ));
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    Ok(out)
}

impl JetStreamBudgets {
    /// Opens the bucket, creating it when it is missing.
    pub async fn new(js: &Context) -> Result<Self, BudgetError> {
        let store = js
            .create_or_update_key_value(kv::Config {
                bucket: BUCKET.to_owned(),
                description: "rewind: tenants' shared recovery write budgets and stopped jobs"
                    .to_owned(),
                history: 1,
                max_age: Duration::from_secs(7 * 24 * 3600),
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(backend("opening the budget bucket"))?;
        Ok(Self { store })
    }

    /// Reads the tenant's record, applies `change` at the current time, and writes it back if
    /// nobody changed it meanwhile (else again, from the new record).
    async fn change<T>(
        &self,
        tenant: &str,
        mut change: impl FnMut(&mut TenantRecord, u64) -> T,
    ) -> Result<T, BudgetError> {
        let key = format!("budget.{}", key_segment(tenant)?);
        for attempt in 0..MAX_ATTEMPTS {
            let entry = self
                .store
                .entry(key.clone())
                .await
                .map_err(backend("reading a budget"))?;
            let (mut record, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let record: TenantRecord =
                        serde_json::from_slice(&e.value).map_err(|err| BudgetError::Corrupt {
                            tenant: tenant.to_owned(),
                            message: err.to_string(),
                        })?;
                    (record, Some(e.revision))
                }
                Some(e) => (TenantRecord::default(), Some(e.revision)),
                None => (TenantRecord::default(), None),
            };
            let out = change(&mut record, now_unix_ms());
            let bytes =
                Bytes::from(serde_json::to_vec(&record).map_err(backend("encoding a budget"))?);
            let written = match revision {
                Some(r) => match self.store.update(&key, bytes, r).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(backend("updating a budget")(e)),
                },
                None => match self.store.create(&key, bytes).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(backend("creating a budget")(e)),
                },
            };
            if written {
                return Ok(out);
            }
            // Lost to another writer: a short pause that grows, then from the new record.
            tokio::time::sleep(Duration::from_micros(100 * u64::from(attempt.min(50)))).await;
        }
        Err(BudgetError::Contention {
            tenant: tenant.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

#[async_trait]
impl WriteBudgets for JetStreamBudgets {
    async fn reserve(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        writes: u32,
    ) -> Result<Reservation, BudgetError> {
        policy.validate()?;
        // The reservation is computed again from each fresh record; the time it waits is
        // from when it was written.
        let r = self
            .change(&key.tenant, |record, now| {
                record.reserve(key, policy, class, writes, now)
            })
            .await?;
        let wait = Duration::from_millis(r.at_unix_ms.saturating_sub(now_unix_ms()));
        Ok(Reservation { wait, ..r })
    }

    async fn throttled(
        &self,
        key: &BudgetKey,
        policy: &BudgetPolicy,
        class: WriteClass,
        retry_after: Option<Duration>,
    ) -> Result<f64, BudgetError> {
        policy.validate()?;
        self.change(&key.tenant, |record, now| {
            record.throttled(key, policy, class, retry_after, now)
        })
        .await
    }

    async fn stop(&self, job: &str) -> Result<(), BudgetError> {
        let key = format!("stop.{}", key_segment(job)?);
        self.store
            .put(key, Bytes::from_static(b"stopped"))
            .await
            .map_err(backend("storing a stop signal"))?;
        Ok(())
    }

    async fn is_stopped(&self, job: &str) -> Result<bool, BudgetError> {
        let key = format!("stop.{}", key_segment(job)?);
        let value = self
            .store
            .get(key)
            .await
            .map_err(backend("reading a stop signal"))?;
        Ok(value.is_some())
    }

    async fn lease(
        &self,
        job: &str,
        task: &str,
        until_unix_ms: Option<u64>,
    ) -> Result<(), BudgetError> {
        let key = format!("run.{}.{}", key_segment(job)?, key_segment(task)?);
        match until_unix_ms {
            Some(until) => {
                self.store
                    .put(key, Bytes::from(until.to_string()))
                    .await
                    .map_err(backend("storing a write lease"))?;
            }
            None => {
                self.store
                    .delete(key)
                    .await
                    .map_err(backend("ending a write lease"))?;
            }
        }
        Ok(())
    }

    async fn in_flight(&self, job: &str) -> Result<usize, BudgetError> {
        use futures_util::StreamExt;
        let prefix = format!("run.{}.", key_segment(job)?);
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(backend("listing write leases"))?;
        let now = now_unix_ms();
        let mut n = 0;
        while let Some(key) = keys.next().await {
            let key = key.map_err(backend("listing write leases"))?;
            if !key.starts_with(&prefix) {
                continue;
            }
            let value = self
                .store
                .get(key)
                .await
                .map_err(backend("reading a write lease"))?;
            let until = value
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            if until > now {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segments_are_valid_and_distinct() {
        assert_eq!(key_segment("contoso").ok().as_deref(), Some("contoso"));
        assert_eq!(
            key_segment("a.b/c").ok().as_deref(),
            Some("a=2eb=2fc"),
            "dots and slashes never reach the key"
        );
        assert_ne!(key_segment("a=2e").ok(), key_segment("a.").ok());
        assert!(key_segment("").is_err());
    }
}
