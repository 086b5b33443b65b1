//! Integration tests of the pure core: the change → action table, the diff/plan properties,
//! the rejection of damaged shard blobs and manifests, and the golden snapshots of every format
//! version. One test binary, modules per topic.

mod action_table;
mod blobs;
mod golden;
mod properties;
mod support;
