//! The worker's integration tests (one binary), against real servers on 127.0.0.1:0:
//! transport semantics written once and run against both implementations (in-process and
//! JetStream on a real nats-server), the shared write budgets, the connector's writes through
//! the write gate against the tenant simulator, and the metrics endpoint.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod blobs;
mod budget;
mod gated_writes;
mod queue;
mod telemetry;
