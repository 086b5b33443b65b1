//! Rewind's pure core: the domain model, the recoverable-property table, the snapshot shard
//! format and store trait, the diff engine and the recovery planner. Nothing here does async
//! I/O or depends on tokio or NATS (CI checks it).

pub mod connector;
pub mod diff;
pub mod error;
pub mod fan_out;
pub mod graph_json;
pub mod graph_names;
pub mod id;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod properties;
pub mod report;
pub mod secret_box;
pub mod snapshot;
pub mod value;
pub mod wire;

pub use error::{ScopeError, SnapshotError};
pub use id::ObjectId;
pub use model::{
    DirectoryObject, Lifecycle, Link, LinkKind, LinkSet, ObjectType, SourceOfAuthority,
};
pub use report::{
    Change, ChangedAttribute, ChangedLink, LinkState, NotRecoverableReason, RecoveryAction,
    ReportEntry, ReportSummary, Scope,
};
pub use value::Value;
