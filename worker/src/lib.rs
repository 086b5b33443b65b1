//! Rewind worker: loads snapshot shards into memory (cached, so a second report on the same
//! backup does not reload it), diffs them with rayon, and (in later stages) applies recovery
//! actions through the directory connector.

pub mod cache;
pub mod tasks;

pub use cache::{CacheStats, ShardCache, ShardKey};
