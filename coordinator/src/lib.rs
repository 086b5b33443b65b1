//! The coordinator as a library: its durable state, the job engine that turns jobs into tasks
//! and results into progress, the node that runs it (with workers, in single-node mode), its
//! HTTP API, and the client commands that drive a running coordinator over that API.

pub mod api;
pub mod audit_cli;
pub mod bench_api;
pub mod bench_recovery;
pub mod bench_report;
pub mod cli;
pub mod client;
pub mod demo;
pub mod engine;
pub mod node;
pub mod scheduler;
pub mod state;
pub mod token_cli;
