//! Every metric name of Rewind, in one place: the names a process records through the `metrics`
//! facade (and the exporter of `rewind-worker` serves at `/metrics`), the bounded values of their
//! labels, and [`describe_all`], which gives each its help text and unit.
//!
//! Names follow Vector's instrumentation spec: `rewind_<name>_<unit>_total` for counters,
//! `_seconds` (or `_bytes`) for histograms, a plain noun for gauges; labels take only the values
//! listed here (or another closed set named in the doc line, such as [`ObjectType::as_str`]),
//! never an id, a tenant name or a message. A new metric is added to the table below, which
//! defines its constant, its place in [`ALL`] and its description at once.
//!
//! [`ObjectType::as_str`]: crate::ObjectType::as_str

use metrics::Unit;

/// What kind of metric a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic count; its name ends in `_total`.
    Counter,
    /// A value that goes up and down; its name does not end in `_total`.
    Gauge,
    /// A distribution; its name ends in `_seconds` or `_bytes`.
    Histogram,
}

macro_rules! metric_names {
    ($( $(#[doc = $more:literal])* $konst:ident = $name:literal, $kind:ident, $unit:ident,
        $help:literal; )*) => {
        $(
            #[doc = $help]
            $(#[doc = $more])*
            pub const $konst: &str = $name;
        )*

        /// Every metric a Rewind process records, with its kind.
        pub const ALL: &[(&str, Kind)] = &[$(($name, Kind::$kind)),*];

        /// Gives every metric of [`ALL`] its help text and unit in the installed recorder (call
        /// it once after installing one; without a recorder it does nothing).
        pub fn describe_all() {
            $( describe(Kind::$kind, $konst, Unit::$unit, $help); )*
        }
    };
}

fn describe(kind: Kind, name: &'static str, unit: Unit, help: &'static str) {
    match kind {
        Kind::Counter => metrics::describe_counter!(name, unit, help),
        Kind::Gauge => metrics::describe_gauge!(name, unit, help),
        Kind::Histogram => metrics::describe_histogram!(name, unit, help),
    }
}

metric_names! {
    // Jobs (coordinator).
    JOBS_TOTAL = "rewind_jobs_total", Counter, Count,
        "Jobs that reached a status, by `kind` (job_kind) and `status` (job_status).";
    JOBS_OPEN = "rewind_jobs_open", Gauge, Count,
        "Jobs not yet finished (queued or running), by `kind` (job_kind).";
    JOB_PHASE_SECONDS = "rewind_job_phase_seconds", Histogram, Seconds,
        "Seconds a job spent in one phase, by `kind` (job_kind) and `phase` (phase).";

    // Recoveries (coordinator).
    RECOVERY_ACTIONS_TOTAL = "rewind_recovery_actions_total", Counter, Count,
        "Recovery actions whose outcome a worker reported, by `outcome` (action_outcome).";

    // Tasks (workers, and the coordinator's view of their results).
    TASKS_TOTAL = "rewind_tasks_total", Counter, Count,
        "Tasks finished by a worker, by `kind` (task_kind) and `outcome` (task_outcome).";
    TASK_SECONDS = "rewind_task_seconds", Histogram, Seconds,
        "Seconds from a worker taking a task to its ack, nak or term, by `kind` (task_kind).";
    TASK_REDELIVERIES_TOTAL = "rewind_task_redeliveries_total", Counter, Count,
        "Tasks received again after an earlier delivery (ack wait expired or nak), by `kind` (task_kind).";
    TASK_DEAD_LETTERS_TOTAL = "rewind_task_dead_letters_total", Counter, Count,
        "Tasks given up on (terminated with a reason, or past their delivery limit), by `kind` (task_kind).";
    QUEUE_PENDING_TASKS = "rewind_queue_pending_tasks", Gauge, Count,
        "Messages waiting in a work queue, not yet delivered, by `lane` (lane).";

    // Capture, shards, diff.
    OBJECTS_CAPTURED_TOTAL = "rewind_objects_captured_total", Counter, Count,
        "Directory objects read by captures that completed (into their shard writers), by `type` (`ObjectType::as_str`).";
    SHARD_LOAD_SECONDS = "rewind_shard_load_seconds", Histogram, Seconds,
        "Seconds to read, verify and index one shard blob.";
    SHARD_DIFF_SECONDS = "rewind_shard_diff_seconds", Histogram, Seconds,
        "Seconds to diff one shard (or segment) of a backup against the current snapshot.";

    // The worker's snapshot cache.
    SNAPSHOT_CACHE_HITS_TOTAL = "rewind_snapshot_cache_hits_total", Counter, Count,
        "Snapshot lookups answered from the worker's cache.";
    SNAPSHOT_CACHE_MISSES_TOTAL = "rewind_snapshot_cache_misses_total", Counter, Count,
        "Snapshot lookups that had to load the snapshot.";
    SNAPSHOT_CACHE_EVICTIONS_TOTAL = "rewind_snapshot_cache_evictions_total", Counter, Count,
        "Snapshots evicted from the worker's cache to stay within its byte budget.";
    SNAPSHOT_CACHE_BYTES = "rewind_snapshot_cache_bytes", Gauge, Bytes,
        "Bytes of loaded snapshots the worker's cache holds now.";

    // The blob store.
    BLOB_STORE_READ_BYTES_TOTAL = "rewind_blob_store_read_bytes_total", Counter, Bytes,
        "Bytes of blobs read from the shard store.";
    BLOB_STORE_WRITTEN_BYTES_TOTAL = "rewind_blob_store_written_bytes_total", Counter, Bytes,
        "Bytes of blobs written to the shard store.";
    BLOB_SWEEPS_PENDING = "rewind_blob_sweeps_pending", Gauge, Count,
        "Store prefixes of removed snapshots and reports whose blobs are not all deleted yet (coordinator; retried every scheduler tick).";

    // Microsoft Graph (the connector).
    GRAPH_REQUESTS_TOTAL = "rewind_graph_requests_total", Counter, Count,
        "Graph requests sent (a `$batch` counts once, every attempt counts), by `class` (status_class).";
    GRAPH_THROTTLED_TOTAL = "rewind_graph_throttled_total", Counter, Count,
        "Graph requests answered 429 Too Many Requests (an inner request of a `$batch` too).";
    GRAPH_REQUEST_SECONDS = "rewind_graph_request_seconds", Histogram, Seconds,
        "Seconds from sending a Graph request to its status and headers (the body is read after).";
    GRAPH_RETRIES_TOTAL = "rewind_graph_retries_total", Counter, Count,
        "Graph requests (and token requests) sent again after a transient failure.";
    GRAPH_TOKEN_REQUESTS_TOTAL = "rewind_graph_token_requests_total", Counter, Count,
        "Client-credentials token requests sent, by `class` (status_class).";

    // Recovery writes: the tenant's shared write budget (workers).
    RECOVERY_WRITE_BUDGET = "rewind_recovery_write_budget", Gauge, CountPerSecond,
        "Writes per second a recovery may send at most (the budget of the tenant and app last used), by `class` (write_class).";
    RECOVERY_WRITE_RATE = "rewind_recovery_write_rate", Gauge, CountPerSecond,
        "Writes per second a recovery sends at now (the shared AIMD rate last reserved against), by `class` (write_class).";
    RECOVERY_THROTTLED_TOTAL = "rewind_recovery_throttled_total", Counter, Count,
        "Recovery writes answered 429 Too Many Requests (inner requests of a `$batch` and whole batches), by `class` (write_class).";
    RECOVERY_WRITES_ADMITTED_TOTAL = "rewind_recovery_writes_admitted_total", Counter, Count,
        "Recovery writes let through by the write budget, by `class` (write_class).";
    RECOVERY_BUDGET_WAIT_SECONDS = "rewind_recovery_budget_wait_seconds", Histogram, Seconds,
        "Seconds a batch of recovery writes waited for the write budget, by `class` (write_class).";

    // The coordinator's HTTP API.
    API_REQUESTS_TOTAL = "rewind_api_requests_total", Counter, Count,
        "API requests answered, by `route` (the route's path template) and `code` (HTTP status).";
    API_REQUEST_SECONDS = "rewind_api_request_seconds", Histogram, Seconds,
        "Seconds from an API request's arrival to its answer's headers, by `route`.";
}

/// Label names.
pub mod label {
    /// A job's kind: one of [`super::job_kind`].
    pub const KIND: &str = "kind";
    /// A job's status: one of [`super::job_status`].
    pub const STATUS: &str = "status";
    /// A job's phase: one of [`super::phase`].
    pub const PHASE: &str = "phase";
    /// A task's outcome: one of [`super::task_outcome`].
    pub const OUTCOME: &str = "outcome";
    /// An object type: `ObjectType::as_str`.
    pub const TYPE: &str = "type";
    /// A work-queue lane: one of [`super::lane`].
    pub const LANE: &str = "lane";
    /// An HTTP status class: one of [`super::status_class`].
    pub const CLASS: &str = "class";
    /// An API route: its path template (`/tenants/{tenant}/rewind/jobs`), or `unmatched`.
    pub const ROUTE: &str = "route";
    /// An HTTP status code, as digits.
    pub const CODE: &str = "code";
    /// Which write limit a recovery write counts against: one of [`super::write_class`] (on
    /// the recovery metrics; the same label name as `class` of the Graph request metrics,
    /// with its own values).
    pub const WRITE_CLASS: &str = "class";
}

/// Values of the `class` label of the recovery write metrics ([`super::RECOVERY_WRITE_RATE`]
/// and its neighbours): the [`WriteClass`] of the writes.
///
/// [`WriteClass`]: crate::connector::WriteClass
pub mod write_class {
    use crate::connector::WriteClass;

    pub const DIRECTORY: &str = "directory";
    pub const CONDITIONAL_ACCESS: &str = "conditional_access";
    pub const ALL: &[&str] = &[DIRECTORY, CONDITIONAL_ACCESS];

    /// The label value of a write class.
    pub fn of(class: WriteClass) -> &'static str {
        match class {
            WriteClass::Directory => DIRECTORY,
            WriteClass::ConditionalAccess => CONDITIONAL_ACCESS,
        }
    }
}

/// Values of the `kind` label of job metrics.
pub mod job_kind {
    pub const BACKUP: &str = "backup";
    pub const REPORT: &str = "report";
    pub const RECOVERY: &str = "recovery";
    pub const ALL: &[&str] = &[BACKUP, REPORT, RECOVERY];
}

/// Values of the `status` label of [`super::JOBS_TOTAL`] (the statuses of the product surface).
pub mod job_status {
    pub const QUEUED: &str = "queued";
    pub const LOADING_DATA: &str = "loading_data";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const COMPLETED: &str = "completed";
    pub const COMPLETED_WITH_WARNINGS: &str = "completed_with_warnings";
    pub const FAILED: &str = "failed";
    pub const CANCELED: &str = "canceled";
    pub const ALL: &[&str] = &[
        QUEUED,
        LOADING_DATA,
        IN_PROGRESS,
        COMPLETED,
        COMPLETED_WITH_WARNINGS,
        FAILED,
        CANCELED,
    ];
}

/// Values of the `phase` label of [`super::JOB_PHASE_SECONDS`].
pub mod phase {
    pub const CAPTURE: &str = "capture";
    pub const LOAD: &str = "load";
    pub const DIFF: &str = "diff";
    pub const PLAN: &str = "plan";
    pub const APPLY: &str = "apply";
    pub const SEAL: &str = "seal";
    pub const ALL: &[&str] = &[CAPTURE, LOAD, DIFF, PLAN, APPLY, SEAL];
}

/// Values of the `kind` label of task metrics.
pub mod task_kind {
    pub const CAPTURE: &str = "capture";
    pub const DIFF: &str = "diff";
    pub const APPLY: &str = "apply";
    pub const ALL: &[&str] = &[CAPTURE, DIFF, APPLY];
}

/// Values of the `outcome` label of [`super::RECOVERY_ACTIONS_TOTAL`].
pub mod action_outcome {
    /// The directory accepted the write.
    pub const APPLIED: &str = "applied";
    /// The directory was already in the wanted state.
    pub const ALREADY_IN_STATE: &str = "already_in_state";
    /// The write failed after its retries.
    pub const FAILED: &str = "failed";
    /// Never sent: the job was canceled first.
    pub const NOT_SENT: &str = "not_sent";
    pub const ALL: &[&str] = &[APPLIED, ALREADY_IN_STATE, FAILED, NOT_SENT];
}

/// Values of the `outcome` label of [`super::TASKS_TOTAL`].
pub mod task_outcome {
    /// Done and acked.
    pub const OK: &str = "ok";
    /// Failed transiently and handed back (nak with delay) to be tried again.
    pub const RETRIED: &str = "retried";
    /// Failed permanently, terminated with the reason recorded.
    pub const FAILED: &str = "failed";
    /// Given up on after its delivery limit, or as malformed (poison).
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const ALL: &[&str] = &[OK, RETRIED, FAILED, DEAD_LETTERED];
}

/// Values of the `lane` label of [`super::QUEUE_PENDING_TASKS`].
/// (the queue's lanes: `Lane::name` in the worker's queue).
pub mod lane {
    pub const TASKS: &str = "tasks";
    pub const RESULTS: &str = "results";
    pub const DEAD: &str = "dead";
    pub const APPLY: &str = "apply";
    pub const ALL: &[&str] = &[TASKS, RESULTS, DEAD, APPLY];
}

/// Values of the `class` label of [`super::GRAPH_REQUESTS_TOTAL`] and
/// [`super::GRAPH_TOKEN_REQUESTS_TOTAL`].
pub mod status_class {
    pub const C2XX: &str = "2xx";
    pub const C3XX: &str = "3xx";
    pub const C4XX: &str = "4xx";
    pub const C5XX: &str = "5xx";
    /// No answer: the connection failed, timed out or the request could not be made.
    pub const ERROR: &str = "error";
    pub const ALL: &[&str] = &[C2XX, C3XX, C4XX, C5XX, ERROR];

    /// The class of an HTTP status (a status outside 200..=599 counts as `error`).
    pub fn of(status: u16) -> &'static str {
        match status {
            200..=299 => C2XX,
            300..=399 => C3XX,
            400..=499 => C4XX,
            500..=599 => C5XX,
            _ => ERROR,
        }
    }
}

/// The simulator's own counters (`rewind dirsim`), rendered by `loadtest/src/dirsim/metrics.rs`
/// at the simulator's `/metrics` without the `metrics` facade; listed here so that every
/// `rewind_` name is in one place and none is used twice.
pub const DIRSIM: &[(&str, Kind)] = &[
    // Graph requests served, by `route`.
    ("rewind_dirsim_requests_total", Kind::Counter),
    // Graph answers sent, by `status` (HTTP status).
    ("rewind_dirsim_responses_total", Kind::Counter),
    // Directory writes admitted.
    ("rewind_dirsim_writes_total", Kind::Counter),
    // Writes admitted in the current write window, by `tenant`.
    ("rewind_dirsim_writes_in_window", Kind::Gauge),
    // 429 answers sent, by `scope` (read, write, conditional access, injected).
    ("rewind_dirsim_throttled_total", Kind::Counter),
    // Injected 503 answers sent.
    ("rewind_dirsim_unavailable_total", Kind::Counter),
    // Connections dropped on purpose.
    ("rewind_dirsim_dropped_connections_total", Kind::Counter),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn all_names() -> impl Iterator<Item = (&'static str, Kind)> {
        ALL.iter().chain(DIRSIM).copied()
    }

    #[test]
    fn names_have_the_prefix_the_suffix_of_their_kind_and_no_odd_characters() {
        for (name, kind) in all_names() {
            assert!(name.starts_with("rewind_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(!name.contains("__") && !name.ends_with('_'), "{name}");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Histogram => assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{name}"
                ),
                Kind::Gauge => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }

    #[test]
    fn names_are_unique_and_only_the_simulator_uses_its_prefix() {
        let mut seen = BTreeSet::new();
        for (name, _) in all_names() {
            assert!(seen.insert(name), "{name} is listed twice");
        }
        for (name, _) in ALL {
            assert!(!name.starts_with("rewind_dirsim_"), "{name}");
        }
        for (name, _) in DIRSIM {
            assert!(name.starts_with("rewind_dirsim_"), "{name}");
        }
    }

    #[test]
    fn the_constants_are_the_listed_names() {
        for name in [
            JOBS_TOTAL,
            JOBS_OPEN,
            TASKS_TOTAL,
            GRAPH_REQUESTS_TOTAL,
            GRAPH_THROTTLED_TOTAL,
            GRAPH_REQUEST_SECONDS,
            SNAPSHOT_CACHE_BYTES,
            RECOVERY_WRITE_BUDGET,
            RECOVERY_WRITE_RATE,
            RECOVERY_THROTTLED_TOTAL,
            RECOVERY_WRITES_ADMITTED_TOTAL,
            RECOVERY_BUDGET_WAIT_SECONDS,
        ] {
            assert!(ALL.iter().any(|(n, _)| *n == name), "{name}");
        }
    }

    #[test]
    fn label_values_are_bounded_snake_case_and_unique() {
        let sets: [&[&str]; 7] = [
            job_kind::ALL,
            job_status::ALL,
            phase::ALL,
            task_kind::ALL,
            task_outcome::ALL,
            lane::ALL,
            write_class::ALL,
        ];
        for set in sets {
            let unique: BTreeSet<_> = set.iter().collect();
            assert_eq!(unique.len(), set.len(), "{set:?}");
            for v in set {
                assert!(
                    v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{v}"
                );
            }
        }
    }

    #[test]
    fn status_classes_cover_every_status() {
        assert_eq!(status_class::of(200), "2xx");
        assert_eq!(status_class::of(204), "2xx");
        assert_eq!(status_class::of(302), "3xx");
        assert_eq!(status_class::of(429), "4xx");
        assert_eq!(status_class::of(503), "5xx");
        assert_eq!(status_class::of(0), "error");
        assert_eq!(status_class::of(600), "error");
        for s in 0..=u16::MAX {
            assert!(status_class::ALL.contains(&status_class::of(s)));
        }
    }

    #[test]
    fn every_write_class_has_its_label_value() {
        use crate::connector::WriteClass;
        let values: BTreeSet<_> = [WriteClass::Directory, WriteClass::ConditionalAccess]
            .into_iter()
            .map(write_class::of)
            .collect();
        assert_eq!(values, write_class::ALL.iter().copied().collect());
    }

    #[test]
    fn describing_without_a_recorder_does_nothing() {
        describe_all();
    }
}
