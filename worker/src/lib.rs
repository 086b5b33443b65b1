//! Rewind worker: loads snapshot shards into memory (cached, so a second report on the same
//! backup does not reload it), diffs them with rayon, and (in later stages) applies recovery
//! actions through the directory connector. [`telemetry`] is shared with the coordinator, which
//! depends on this crate: metrics, `/metrics` and logging.

pub mod cache;
pub mod tasks;
pub mod telemetry;

pub use cache::{CacheStats, ShardCache, ShardKey};
