//! Tests of the tenant simulator over real HTTP with a blocking client.

mod apps;
mod auth;
mod batch;
mod delta;
mod dynamic;
mod grammar;
mod lifecycle;
mod persistence;
mod reads;
pub(crate) mod support;
mod throttling;
mod versions;
mod writelog;
mod writes;
