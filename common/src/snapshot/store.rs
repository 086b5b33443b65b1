//! The shard store: write-once blobs by key. The local-directory store lives here; the NATS
//! object store (cluster mode) implements the same trait in the worker.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A store failure, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no blob under key {0:?}")]
    NotFound(String),
    #[error("key {0:?} already holds a different blob (the store is write-once)")]
    AlreadyExists(String),
    #[error("invalid store key {0:?}: keys are relative paths of letters, digits, '.', '_', '-' and '/'")]
    InvalidKey(String),
    #[error("store i/o on {key:?}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// A remote store (the NATS object store) failed; `message` says how.
    #[error("blob store backend failed on {key:?} ({op}): {message}")]
    Backend {
        key: String,
        op: &'static str,
        message: String,
    },
}

/// What a store knows of a blob without handing out its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// The blake3 digest of the blob's bytes, lowercase hex (as in the manifest).
    pub blake3_hex: String,
}

/// A write-once blob store. Putting the same bytes again under a key succeeds (so a retried
/// task is harmless); putting different bytes fails with [`StoreError::AlreadyExists`].
pub trait ShardStore: Send + Sync {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// The blob's size and digest, `None` when no blob is under the key.
    fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError>;
    /// Removes the blob; `false` when there was none. (Write-once means a key is never
    /// overwritten, not that it is kept forever: retention deletes whole snapshots.)
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Keys that start with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// Blobs as files under a root folder. A put writes a temporary file, syncs it, and links it
/// into place, so a crash never leaves a partial blob under its key.
#[derive(Debug)]
pub struct LocalShardStore {
    root: PathBuf,
    counter: AtomicU64,
}

/// Checks that a key is a relative path of letters, digits, '.', '_', '-' and '/', without empty,
/// `.` or `..` parts.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

impl LocalShardStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            key: String::new(),
            source,
        })?;
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

impl ShardStore for LocalShardStore {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let io = |source| StoreError::Io {
            key: key.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::File::create(&tmp).map_err(io)?;
            file.write_all(bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if fs::read(&path).map_err(io)? != bytes {
                        return Err(StoreError::AlreadyExists(key.to_owned()));
                    }
                }
                Err(e) => return Err(io(e)),
            }
            if let Ok(d) = fs::File::open(dir) {
                // Make the new name durable; not every platform can sync a folder.
                let _ = d.sync_all();
            }
            Ok(())
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(key.to_owned())
            } else {
                StoreError::Io {
                    key: key.to_owned(),
                    source,
                }
            }
        })
    }

    fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError> {
        match self.get(key) {
            Ok(bytes) => Ok(Some(BlobInfo {
                size: bytes.len() as u64,
                blake3_hex: blake3::hash(&bytes).to_hex().to_string(),
            })),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io {
                key: key.to_owned(),
                source,
            }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        key: prefix.to_owned(),
                        source,
                    })
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix)
                        && !key.rsplit('/').next().unwrap_or("").starts_with(".tmp-")
                    {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_once_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        store.put("a/b/c.bin", b"one").unwrap();
        store.put("a/b/c.bin", b"one").unwrap();
        assert!(matches!(
            store.put("a/b/c.bin", b"two"),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(store.get("a/b/c.bin").unwrap(), b"one");
        assert!(matches!(store.get("a/x"), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.put("../x", b""),
            Err(StoreError::InvalidKey(_))
        ));
        assert_eq!(store.list("a/").unwrap(), vec!["a/b/c.bin".to_owned()]);
    }

    #[test]
    fn head_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalShardStore::open(dir.path()).unwrap();
        assert_eq!(store.head("a/b").unwrap(), None);
        store.put("a/b", b"bytes").unwrap();
        let info = store.head("a/b").unwrap().unwrap();
        assert_eq!(info.size, 5);
        assert_eq!(info.blake3_hex, blake3::hash(b"bytes").to_hex().to_string());
        assert!(store.delete("a/b").unwrap());
        assert!(!store.delete("a/b").unwrap());
        assert_eq!(store.head("a/b").unwrap(), None);
        assert!(store.list("a/").unwrap().is_empty());
        // A deleted key can be written again (with other bytes: it no longer holds any).
        store.put("a/b", b"other").unwrap();
        assert_eq!(store.get("a/b").unwrap(), b"other");
        assert!(matches!(
            store.delete("../x"),
            Err(StoreError::InvalidKey(_))
        ));
    }
}
