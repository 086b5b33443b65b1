//! Integration tests of the load-test crate, against real servers on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod bench_diff;
mod capture_race;
mod connector;
mod dirsim;
mod end_to_end;
mod gen;
mod graph_metrics;
mod hostile;
mod incident;
