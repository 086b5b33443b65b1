//! The scheduler: on every tick, starts the backup of each tenant whose schedule is due (a
//! tenant with an open job is skipped until the next tick), and removes reports (with their
//! live snapshots and entries) older than the tenant's report retention; then it deletes the
//! blobs of removals a crash or a failed delete left behind.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{Engine, EngineError};
use crate::state::{next_after, JobKind, StateError};

/// How often the scheduler looks.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    pub tick: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            tick: crate::node::DEFAULT_SCHEDULER_TICK,
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Runs until `shutdown` turns true.
pub async fn run(engine: Engine, settings: SchedulerSettings, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&engine, now()).await {
            tracing::warn!(error = %e, "scheduler tick failed");
        }
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { return },
            _ = tokio::time::sleep(settings.tick) => {}
        }
    }
}

/// One look at every tenant at time `now`.
pub async fn tick(engine: &Engine, now: i64) -> Result<(), EngineError> {
    let state = engine.state();
    for tenant in state.list_tenants()? {
        let last = state
            .list_jobs(&tenant.name)?
            .into_iter()
            .find(|j| j.kind == JobKind::Backup)
            .map(|j| j.created_at);
        let due = next_after(&tenant.name, &tenant.schedule, last, now).is_some_and(|t| t <= now);
        if due {
            match engine
                .start_backup_by(&crate::state::Actor::Scheduler, &tenant.name)
                .await
            {
                Ok(job) => {
                    tracing::info!(tenant = %tenant.name, job = %job.id, "scheduled backup started")
                }
                Err(EngineError::State(StateError::Conflict { running_job, .. })) => {
                    tracing::debug!(tenant = %tenant.name, running_job, "scheduled backup waits for the open job")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, error = %e, "scheduled backup not started")
                }
            }
        }
        for report in state.expired_reports(&tenant.name, now)? {
            engine.expire_report(&report).await;
        }
        for recovery in state.expired_recoveries(&tenant.name, now)? {
            engine.expire_report(&recovery).await;
        }
    }
    engine.sweep_blobs(now).await;
    Ok(())
}
