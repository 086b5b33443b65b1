//! The cluster's blob store: one async trait (`BlobStore`, write-once by key) with a local
//! implementation over `LocalShardStore` ([`LocalBlobs`]) and the JetStream object store
//! ([`JetStreamBlobs`]), plus [`BlockingBlobs`], the synchronous `ShardStore` over either for
//! the blocking code (capture, snapshot loading).

pub mod jetstream;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
pub use rewind_common::snapshot::store::{BlobInfo, StoreError};
use rewind_common::snapshot::{LocalShardStore, ShardStore};

pub use jetstream::JetStreamBlobs;

/// A write-once blob store: putting the same bytes again under a key succeeds (a retried task
/// is harmless), putting different bytes fails with [`StoreError::AlreadyExists`].
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// The blob; [`StoreError::NotFound`] when there is none.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Size and blake3 digest of what the store holds under the key, without handing out
    /// the bytes; `None` when there is no blob.
    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError>;
    /// Removes the blob; `false` when there was none.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Keys that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// [`LocalShardStore`] behind the async trait; every call runs on a blocking thread.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    store: Arc<LocalShardStore>,
}

impl LocalBlobs {
    pub fn new(store: LocalShardStore) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(&LocalShardStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Backend {
                key: key.to_owned(),
                op: "blocking task",
                message: e.to_string(),
            })?
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let k = key.to_owned();
        self.run(key, move |s| s.put(&k, &bytes)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let k = key.to_owned();
        self.run(key, move |s| s.get(&k).map(Bytes::from)).await
    }

    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError> {
        let k = key.to_owned();
        self.run(key, move |s| s.head(&k)).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let k = key.to_owned();
        self.run(key, move |s| s.delete(&k)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = prefix.to_owned();
        self.run(prefix, move |s| s.list(&p)).await
    }
}

/// The synchronous [`ShardStore`] over an async [`BlobStore`], for code that runs on blocking
/// threads (the connector's capture, the snapshot loader).
///
/// Only use it from threads that are not a runtime's workers (`spawn_blocking` threads,
/// rayon, plain threads): each call is `Handle::block_on`, which panics on a runtime thread.
#[derive(Clone)]
pub struct BlockingBlobs {
    pub handle: tokio::runtime::Handle,
    pub store: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for BlockingBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingBlobs").finish_non_exhaustive()
    }
}

impl BlockingBlobs {
    pub fn new(handle: tokio::runtime::Handle, store: Arc<dyn BlobStore>) -> Self {
        Self { handle, store }
    }
}

impl ShardStore for BlockingBlobs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.handle
            .block_on(self.store.put(key, Bytes::copy_from_slice(bytes)))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.handle.block_on(self.store.get(key)).map(Vec::from)
    }

    fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError> {
        self.handle.block_on(self.store.head(key))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.handle.block_on(self.store.delete(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.handle.block_on(self.store.list(prefix))
    }
}
