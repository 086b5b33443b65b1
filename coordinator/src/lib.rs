//! The coordinator as a library: its durable state, the job engine that turns jobs into tasks
//! and results into progress, and the node that runs it (with workers, in single-node mode).

pub mod bench_api;
pub mod bench_report;
pub mod cli;
pub mod engine;
pub mod node;
pub mod scheduler;
pub mod state;
