//! Rewind worker.
