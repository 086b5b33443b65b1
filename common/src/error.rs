//! Errors of the pure core, each naming what it concerns (a shard, a key, an input).

use crate::snapshot::store::StoreError;

/// A snapshot or shard blob that cannot be used. A corrupt blob is always an error that names
/// the shard; it is never a panic and never read as partial data.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("shard {shard}: digest mismatch (manifest has {expected}, blob hashes to {actual}); the blob is corrupt")]
    DigestMismatch {
        shard: u32,
        expected: String,
        actual: String,
    },
    /// A manifest or shard blob of a format version this build does not read; `what` names
    /// it (the snapshot, or the shard and its snapshot).
    #[error("{what} was written by format version {found}; {}", reads_versions(*found))]
    UnsupportedVersion { what: String, found: u16 },
    #[error("{snapshot}: manifest digest mismatch (the manifest says {expected:?}, its content hashes to {actual}); the manifest is corrupt or was altered")]
    ManifestDigestMismatch {
        snapshot: String,
        expected: String,
        actual: String,
    },
    #[error("shard {shard}: truncated blob ({actual} bytes, the header describes {expected})")]
    Truncated {
        shard: u32,
        expected: u64,
        actual: u64,
    },
    #[error("shard {shard}: corrupt blob: {reason}")]
    Corrupt { shard: u32, reason: String },
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which format versions this build reads, said to someone holding version `found`.
fn reads_versions(found: u16) -> String {
    use crate::snapshot::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
    if found > FORMAT_VERSION {
        format!("this build reads versions up to {FORMAT_VERSION}")
    } else {
        format!("this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}")
    }
}

impl SnapshotError {
    pub(crate) fn corrupt(shard: u32, reason: impl Into<String>) -> Self {
        SnapshotError::Corrupt {
            shard,
            reason: reason.into(),
        }
    }
}

/// A scope that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a scope by ids takes at most {max} ids, {given} were given")]
    TooManyIds { max: usize, given: usize },
    #[error("a scope by ids needs at least one id")]
    NoIds,
    #[error("a scope by types needs at least one type")]
    NoTypes,
}
