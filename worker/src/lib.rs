//! Rewind worker: loads snapshot shards into memory (cached, so a second report on the same
//! backup does not reload it), diffs them with rayon, and (in later stages) applies recovery
//! actions through the directory connector. [`telemetry`] is shared with the coordinator, which
//! depends on this crate: metrics, `/metrics` and logging. Also the cluster's transport: the
//! work queue, the blob store and the recovery write budget ([`budget`]), each with a JetStream
//! and an in-process implementation.

pub mod blobs;
pub mod budget;
pub mod cache;
pub mod failpoint;
pub mod nats;
pub mod queue;
pub mod run;
pub mod tasks;
pub mod telemetry;
pub mod testing;

pub use cache::{CacheStats, ShardCache, ShardKey};
