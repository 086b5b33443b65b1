//! Integration tests of the pure core: the change → action table, the diff/plan properties
//! and the rejection of damaged shard blobs. One test binary, modules per topic.

mod action_table;
mod blobs;
mod properties;
mod support;
