//! Integration tests of the load-test crate, against real servers on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod connector;
mod dirsim;
mod gen;
mod hostile;
mod incident;
