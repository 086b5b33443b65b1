//! Rewind load-test harness.

pub mod dirsim;
