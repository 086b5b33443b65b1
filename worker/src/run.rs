//! The worker's loop: pulls one task at a time from the tasks lane, runs it off the async
//! threads (capture on a blocking thread, the diff on the rayon pool) while telling the queue
//! it is in progress, publishes its result, and only then acknowledges it. A transient
//! failure is given back with a delay (bounded by the queue's delivery limit); a permanent one,
//! or an undecodable task, goes to the dead-letter lane with its reason. On shutdown the
//! worker stops pulling, lets the task in hand finish within a grace period or gives it back,
//! then returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rewind_common::connector::{OpenGate, WriteGate};
use rewind_common::metrics as m;
use rewind_common::secret_box::SecretKey;
use rewind_common::wire::{
    self, ApplyTask, Task, TaskId, TaskKind, TaskOutcome, TaskResult, TaskSpec, WIRE_VERSION,
};
use tokio::sync::watch;

use crate::blobs::{BlobStore, BlockingBlobs};
use crate::cache::ShardCache;
use crate::queue::{Delivery, Lane, QueuePolicy, WorkQueue};
use crate::tasks::{self, ConnectorTuning, TaskError};

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The worker's name in results and logs.
    pub name: String,
    /// The queue's redelivery rules (for the heartbeat interval and the delivery limit).
    pub policy: QueuePolicy,
    /// The first delay before a task that failed transiently is delivered again (doubled per
    /// delivery, at most a minute).
    pub retry_delay: Duration,
    /// How long a task in hand may go on after shutdown is asked before it is given back.
    pub shutdown_grace: Duration,
    pub connector: ConnectorTuning,
    /// Apply tasks the worker runs side by side (they mostly wait on the write budget, and
    /// each may write through another app registration); a capture or diff task runs alone.
    pub apply_slots: usize,
}

/// The default of [`WorkerSettings::apply_slots`].
pub const DEFAULT_APPLY_SLOTS: usize = 4;

impl WorkerSettings {
    pub fn new(name: impl Into<String>, policy: QueuePolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            retry_delay: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            connector: ConnectorTuning::default(),
            apply_slots: DEFAULT_APPLY_SLOTS,
        }
    }
}

/// One worker: the queue, the blob store, the shard cache and the key that opens the
/// directory secrets of capture tasks.
#[derive(Clone)]
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    blobs: Arc<dyn BlobStore>,
    cache: Arc<ShardCache>,
    key: Arc<SecretKey>,
    settings: Arc<WorkerSettings>,
    gates: Arc<dyn GateMaker>,
}

/// Makes the write gate of an apply task: the tenant's shared budget and the job's stop
/// signal, as the cluster shares them.
pub trait GateMaker: Send + Sync {
    fn gate(
        &self,
        task: &TaskId,
        apply: &ApplyTask,
        handle: tokio::runtime::Handle,
    ) -> Arc<dyn WriteGate>;
}

impl GateMaker for crate::budget::BudgetGates {
    /// The tenant's budget for the task's app registration, and a write lease for the task.
    fn gate(
        &self,
        task: &TaskId,
        apply: &ApplyTask,
        handle: tokio::runtime::Handle,
    ) -> Arc<dyn WriteGate> {
        let key = crate::budget::BudgetKey::new(&task.tenant, &apply.directory.client_id);
        match self.budget_gate(
            handle,
            key,
            &task.job,
            f64::from(apply.budget.writes_per_second),
            f64::from(apply.budget.conditional_access_per_second),
            Some(apply.budget.tenant_writes_per_second)
                .filter(|&w| w > 0)
                .map(f64::from),
        ) {
            Ok(gate) => Arc::new(gate.with_lease(task.task_msg_id())),
            Err(e) => Arc::new(crate::budget::ClosedGate(e.to_string())),
        }
    }
}

/// No budget and no stop signal: every write goes through at once.
#[derive(Debug, Default)]
pub struct OpenGates;

impl GateMaker for OpenGates {
    fn gate(&self, _: &TaskId, _: &ApplyTask, _: tokio::runtime::Handle) -> Arc<dyn WriteGate> {
        Arc::new(OpenGate)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

fn kind_label(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Capture => m::task_kind::CAPTURE,
        TaskKind::Diff => m::task_kind::DIFF,
        TaskKind::Apply => m::task_kind::APPLY,
    }
}

impl Worker {
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        blobs: Arc<dyn BlobStore>,
        cache: Arc<ShardCache>,
        key: Arc<SecretKey>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            queue,
            blobs,
            cache,
            key,
            settings: Arc::new(settings),
            gates: Arc::new(OpenGates),
        }
    }

    /// The same worker, its apply tasks' writes passing the gates `gates` makes.
    pub fn with_gates(mut self, gates: Arc<dyn GateMaker>) -> Self {
        self.gates = gates;
        self
    }

    /// Runs until `shutdown` turns true: captures and diffs from the tasks lane one at a time,
    /// and beside them apply tasks from the apply lane, up to `apply_slots` side by side (a
    /// task is pulled only once a slot is free). Then it waits for the tasks in hand, each
    /// given back after the grace period.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        tracing::info!(worker = %self.settings.name, apply_slots = self.settings.apply_slots, "worker pulling tasks");
        tokio::join!(self.run_tasks(shutdown.clone()), self.run_applies(shutdown));
        tracing::info!(worker = %self.settings.name, "worker stopped");
    }

    /// The tasks lane: one task at a time, run here.
    async fn run_tasks(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pulled = tokio::select! {
                _ = shutdown.changed() => continue,
                pulled = self.queue.pull(Lane::Tasks, 1, Duration::from_secs(1)) => pulled,
            };
            match pulled {
                Ok(deliveries) => {
                    for d in deliveries {
                        if let Some((d, task)) = self.decode(d).await {
                            self.handle(d, task, &mut shutdown).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.settings.name, lane = %Lane::Tasks, error = %e, "cannot pull tasks");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The apply lane: each task pulled once one of the apply slots is free, and run beside
    /// the others (they mostly wait on the write budget).
    async fn run_applies(&self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.settings.apply_slots.max(1),
        ));
        let mut applying = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while applying.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = shutdown.changed() => continue,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let pulled = tokio::select! {
                _ = shutdown.changed() => continue,
                pulled = self.queue.pull(Lane::Apply, 1, Duration::from_secs(1)) => pulled,
            };
            match pulled {
                Ok(deliveries) => {
                    // One delivery at most (pulled one at a time): it takes the slot along.
                    let mut slot = Some(slot);
                    for d in deliveries {
                        let Some((d, task)) = self.decode(d).await else {
                            continue;
                        };
                        let (worker, mut shutdown, slot) =
                            (self.clone(), shutdown.clone(), slot.take());
                        applying.spawn(async move {
                            worker.handle(d, task, &mut shutdown).await;
                            drop(slot);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.settings.name, lane = %Lane::Apply, error = %e, "cannot pull tasks");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        while applying.join_next().await.is_some() {}
    }

    /// A delivery with its task, or none when it does not decode (then it is terminated).
    async fn decode(&self, delivery: Delivery) -> Option<(Delivery, Task)> {
        match wire::decode(&delivery.payload) {
            Ok(t) => Some((delivery, t)),
            Err(e) => {
                let reason = format!("undecodable task on {}: {e}", delivery.subject);
                tracing::warn!(worker = %self.settings.name, reason, "poison task");
                metrics::counter!(m::TASKS_TOTAL, m::label::KIND => "unknown", m::label::OUTCOME => m::task_outcome::DEAD_LETTERED).increment(1);
                let _ = delivery.term(&reason).await;
                None
            }
        }
    }

    /// Runs one task to its delivery's ack, nak or term.
    async fn handle(&self, delivery: Delivery, task: Task, shutdown: &mut watch::Receiver<bool>) {
        let kind = kind_label(task.id.kind);
        if delivery.attempt > 1 {
            metrics::counter!(m::TASK_REDELIVERIES_TOTAL, m::label::KIND => kind).increment(1);
        }
        // `shard`: a diff task's range of shards, or the part a capture task writes in every
        // shard.
        let shard = match &task.spec {
            TaskSpec::Diff(d) => format!("range {} of {}", d.range, 1u32 << d.range_bits),
            TaskSpec::Capture(c) => format!("part {}", c.part),
            TaskSpec::Apply(a) => format!("{} steps", a.steps.len()),
        };
        let span = tracing::info_span!("task", tenant = %task.id.tenant, job = %task.id.job, task = %task.id.task_msg_id(), shard = %shard, attempt = delivery.attempt);
        let started = Instant::now();
        let work = {
            let worker = self.clone();
            let task = task.clone();
            let handle = tokio::runtime::Handle::current();
            let span = span.clone();
            tokio::task::spawn_blocking(move || span.in_scope(|| worker.execute(handle, &task)))
        };
        tokio::pin!(work);
        let beat = self.settings.policy.ack_wait_for(delivery.attempt) / 3;
        let mut grace: Option<tokio::time::Instant> = None;
        let outcome = loop {
            // Progress goes on during the grace period too, so that the task is not delivered
            // elsewhere while it finishes here.
            let next_beat = tokio::time::Instant::now() + beat;
            let deadline = grace.map_or(next_beat, |g| g.min(next_beat));
            tokio::select! {
                joined = &mut work => break Some(joined),
                _ = shutdown.changed(), if grace.is_none() => {
                    if *shutdown.borrow() {
                        grace = Some(tokio::time::Instant::now() + self.settings.shutdown_grace);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if grace.is_some_and(|g| tokio::time::Instant::now() >= g) {
                        break None;
                    }
                    if let Err(e) = delivery.in_progress().await {
                        tracing::warn!(parent: &span, error = %e, "cannot send progress");
                    }
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(m::TASK_SECONDS, m::label::KIND => kind).record(seconds);
        let outcome = match outcome {
            None => {
                tracing::info!(parent: &span, "shutting down: task given back");
                let _ = delivery.nak(Duration::ZERO).await;
                return;
            }
            Some(Err(join)) => Err(TaskError::Invalid(format!("the task panicked: {join}"))),
            Some(Ok(result)) => result,
        };
        match outcome {
            Ok(outcome) => {
                let result = TaskResult {
                    version: WIRE_VERSION,
                    id: task.id.clone(),
                    outcome,
                    seconds,
                    worker: self.settings.name.clone(),
                };
                let published = match wire::encode(&result) {
                    Ok(bytes) => {
                        self.queue
                            .publish(
                                Lane::Results,
                                &task.id.result_subject(),
                                &task.id.result_msg_id(),
                                Bytes::from(bytes),
                            )
                            .await
                    }
                    Err(e) => {
                        let _ = delivery.term(&format!("result does not encode: {e}")).await;
                        return;
                    }
                };
                match published {
                    Ok(_) => {
                        metrics::counter!(m::TASKS_TOTAL, m::label::KIND => kind, m::label::OUTCOME => m::task_outcome::OK).increment(1);
                        tracing::info!(parent: &span, seconds, "task done");
                        if let Err(e) = delivery.ack().await {
                            tracing::warn!(parent: &span, error = %e, "cannot ack (the task will run again; its result is counted once)");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(parent: &span, error = %e, "cannot publish the result; giving the task back");
                        let _ = delivery.nak(self.settings.retry_delay).await;
                    }
                }
            }
            Err(e) => {
                let last = delivery
                    .max_deliver
                    .is_some_and(|max| delivery.attempt >= max);
                if e.is_transient() && !last {
                    let delay = self
                        .settings
                        .retry_delay
                        .saturating_mul(1 << delivery.attempt.min(5))
                        .min(Duration::from_secs(60));
                    tracing::warn!(parent: &span, error = %e, ?delay, "task failed; it will be tried again");
                    metrics::counter!(m::TASKS_TOTAL, m::label::KIND => kind, m::label::OUTCOME => m::task_outcome::RETRIED).increment(1);
                    let _ = delivery.nak(delay).await;
                } else {
                    let reason = e.to_string();
                    tracing::warn!(parent: &span, reason, "task failed for good");
                    metrics::counter!(m::TASKS_TOTAL, m::label::KIND => kind, m::label::OUTCOME => m::task_outcome::FAILED).increment(1);
                    let _ = delivery.term(&reason).await;
                }
            }
        }
    }

    /// Runs a task on this (blocking) thread.
    fn execute(
        &self,
        handle: tokio::runtime::Handle,
        task: &Task,
    ) -> Result<TaskOutcome, TaskError> {
        let store = BlockingBlobs::new(handle.clone(), self.blobs.clone());
        match &task.spec {
            TaskSpec::Capture(c) => {
                let secret = c
                    .directory
                    .secret
                    .open(&self.key, &task.id.tenant)
                    .map_err(|e| TaskError::Invalid(e.to_string()))?;
                let tag = uuid::Uuid::new_v4().simple().to_string();
                let result = tasks::run_capture(
                    &store,
                    &task.id.tenant,
                    c,
                    secret,
                    &self.settings.connector,
                    &tag[..12],
                )?;
                for (t, n) in &result.by_type {
                    metrics::counter!(m::OBJECTS_CAPTURED_TOTAL, m::label::TYPE => t.clone())
                        .increment(*n);
                }
                Ok(TaskOutcome::Captured(result))
            }
            TaskSpec::Diff(d) => {
                let result = tasks::run_diff(
                    &store,
                    &self.cache,
                    &task.id.tenant,
                    &task.id.job,
                    task.id.number,
                    d,
                )?;
                Ok(TaskOutcome::Diffed(result))
            }
            TaskSpec::Apply(a) => {
                let secret = a
                    .directory
                    .secret
                    .open(&self.key, &task.id.tenant)
                    .map_err(|e| TaskError::Invalid(e.to_string()))?;
                let gate = self.gates.gate(&task.id, a, handle);
                let result = tasks::run_apply(a, secret, &self.settings.connector, &*gate)?;
                Ok(TaskOutcome::Applied(result))
            }
        }
    }
}
