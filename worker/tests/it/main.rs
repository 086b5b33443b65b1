//! Integration tests of the worker crate, against real servers on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod telemetry;
