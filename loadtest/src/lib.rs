//! Rewind load-test harness.
