//! Rewind's load-test harness: the tenant simulator (`dirsim`), the seeded tenant generator,
//! the benchmark drivers, the incident generator and the `rewind loadtest` command line.

pub mod bench_capture;
pub mod bench_diff;
pub mod cli;
pub mod dirsim;
pub mod gen;
pub mod incident;
pub mod rss;
pub mod tenant;
