//! The worker's integration tests (one binary): transport semantics written once and run
//! against both implementations (in-process and JetStream on a real nats-server).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod blobs;
mod queue;
