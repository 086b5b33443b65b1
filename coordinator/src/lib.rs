//! The coordinator as a library: its durable state, the job engine that turns jobs into tasks
//! and results into progress, the node that runs it (with workers, in single-node mode), and
//! its HTTP API.

pub mod api;
pub mod bench_api;
pub mod bench_report;
pub mod cli;
pub mod engine;
pub mod node;
pub mod scheduler;
pub mod state;
pub mod token_cli;
