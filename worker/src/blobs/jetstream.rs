//! The blob store over the JetStream object store: one bucket per tenant (`rewind-{tenant}`),
//! keys `tenants/{tenant}/{object name}`. The object store overwrites, so write-once is kept
//! here: a put first asks `head`, and every object records its blake3 digest (and the
//! object store's own SHA-256 digest of the put) in its metadata, so `head` answers without
//! reading the blob and an object overwritten behind the store's back is detected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::object_store::{
    self, InfoErrorKind, ObjectInfo, ObjectMetadata, ObjectStore, UpdateMetadata,
};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::{context::GetStreamErrorKind, Context, ErrorCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rewind_common::snapshot::store::check_key;

use super::{BlobInfo, BlobStore, StoreError};

const BLAKE3: &str = "blake3";
const PUT_DIGEST: &str = "put-digest";

/// Chunks of 512 KiB (the object store's default is 128 KiB): a shard blob of a
/// million-object tenant (about 250 KB) is one chunk, read with one request; a message stays
/// under the server's default 1 MiB payload limit.
const CHUNK_BYTES: usize = 512 << 10;

/// Reads of objects at once, per process: a worker loading a snapshot's shards asks for
/// thousands at once, and each is one or more requests to the server.
const CONCURRENT_READS: usize = 32;

/// The JetStream object store, one bucket per tenant. Cloning shares the bucket cache.
#[derive(Clone)]
pub struct JetStreamBlobs {
    js: Context,
    buckets: Arc<Mutex<HashMap<String, ObjectStore>>>,
    reads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for JetStreamBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBlobs").finish_non_exhaustive()
    }
}

fn backend<'a>(
    key: &'a str,
    op: &'static str,
) -> impl Fn(&dyn std::fmt::Display) -> StoreError + 'a {
    move |e| StoreError::Backend {
        key: key.to_owned(),
        op,
        message: e.to_string(),
    }
}

/// The bucket name of a tenant (`[a-z0-9-]+`).
pub fn bucket_of(tenant: &str) -> Option<String> {
    let ok = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then(|| format!("rewind-{tenant}"))
}

/// `tenants/{tenant}/{name}` → (tenant, name).
fn split_key(key: &str) -> Result<(&str, &str), StoreError> {
    let invalid = || StoreError::InvalidKey(key.to_owned());
    check_key(key)?;
    let rest = key.strip_prefix("tenants/").ok_or_else(invalid)?;
    let (tenant, name) = rest.split_once('/').ok_or_else(invalid)?;
    bucket_of(tenant).ok_or_else(invalid)?;
    Ok((tenant, name))
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

impl JetStreamBlobs {
    pub fn new(js: Context) -> Self {
        Self {
            js,
            buckets: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
        }
    }

    /// The tenant's bucket; created when `create`, else `None` when it does not exist.
    async fn bucket(
        &self,
        key: &str,
        tenant: &str,
        create: bool,
    ) -> Result<Option<ObjectStore>, StoreError> {
        let bucket = bucket_of(tenant).ok_or_else(|| StoreError::InvalidKey(key.to_owned()))?;
        let cached = self
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&bucket)
            .cloned();
        if let Some(store) = cached {
            return Ok(Some(store));
        }
        let exists = match self.js.get_stream(format!("OBJ_{bucket}")).await {
            Ok(_) => true,
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    false
                }
                _ => return Err(backend(key, "open bucket")(&e)),
            },
        };
        let store = if exists {
            self.js
                .get_object_store(&bucket)
                .await
                .map_err(|e| backend(key, "open bucket")(&e))?
        } else if create {
            self.js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some(format!("rewind blobs of tenant {tenant}")),
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| backend(key, "create bucket")(&e))?
        } else {
            return Ok(None);
        };
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket, store.clone());
        Ok(Some(store))
    }

    /// Reads an object whole. Its chunks are fetched by direct gets on its chunk subject (one
    /// request each, no consumer: the object store's own reader makes an ordered consumer per
    /// object, which costs the server far more and which nats-server 2.15 limits per stream),
    /// and the size is checked; the callers check the bytes against the blake3 digest they
    /// hold (a manifest, a result).
    async fn read(&self, key: &str, store: &ObjectStore, name: &str) -> Result<Bytes, StoreError> {
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|e| backend(key, "get")(&e))?;
        let Some(info) = Self::info(key, store, name).await? else {
            return Err(StoreError::NotFound(key.to_owned()));
        };
        let stream = self
            .js
            .get_stream_no_info(format!("OBJ_{}", info.bucket))
            .await
            .map_err(|e| backend(key, "open bucket")(&e))?;
        let subject = format!("$O.{}.C.{}", info.bucket, info.nuid);
        let mut out = Vec::with_capacity(info.size);
        let mut next = 1;
        for _ in 0..info.chunks {
            let chunk = stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
                .map_err(|e| backend(key, "get")(&e))?;
            out.extend_from_slice(&chunk.payload);
            next = chunk.sequence + 1;
        }
        if out.len() != info.size {
            return Err(StoreError::Backend {
                key: key.to_owned(),
                op: "get",
                message: format!(
                    "read {} bytes of an object of {} in {} chunks",
                    out.len(),
                    info.size,
                    info.chunks
                ),
            });
        }
        Ok(Bytes::from(out))
    }

    async fn info(
        key: &str,
        store: &ObjectStore,
        name: &str,
    ) -> Result<Option<ObjectInfo>, StoreError> {
        match store.info(name).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(key, "head")(&e)),
        }
    }

    async fn head_in(
        &self,
        key: &str,
        store: &ObjectStore,
        name: &str,
    ) -> Result<Option<BlobInfo>, StoreError> {
        let Some(info) = Self::info(key, store, name).await? else {
            return Ok(None);
        };
        let recorded = info.metadata.get(BLAKE3);
        let consistent =
            info.digest.is_some() && info.metadata.get(PUT_DIGEST) == info.digest.as_ref();
        if let (Some(blake3), true) = (recorded, consistent) {
            return Ok(Some(BlobInfo {
                size: info.size as u64,
                blake3_hex: blake3.clone(),
            }));
        }
        // Not written by this store (or its put did not finish recording): the digest of
        // what is there, the slow way.
        tracing::warn!(
            key,
            "blob without a consistent recorded digest; hashing its bytes"
        );
        let bytes = self.read(key, store, name).await?;
        Ok(Some(BlobInfo {
            size: bytes.len() as u64,
            blake3_hex: blake3_hex(&bytes),
        }))
    }
}

#[async_trait]
impl BlobStore for JetStreamBlobs {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let (tenant, name) = split_key(key)?;
        let Some(store) = self.bucket(key, tenant, true).await? else {
            return Err(StoreError::NotFound(key.to_owned()));
        };
        let digest = blake3_hex(&bytes);
        if let Some(existing) = self.head_in(key, &store, name).await? {
            return if existing.blake3_hex == digest && existing.size == bytes.len() as u64 {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists(key.to_owned()))
            };
        }
        let mut metadata = HashMap::from([(BLAKE3.to_owned(), digest.clone())]);
        let description = Some(format!("blake3 {digest}"));
        let put = store
            .put(
                ObjectMetadata {
                    name: name.to_owned(),
                    description: description.clone(),
                    metadata: metadata.clone(),
                    chunk_size: Some(CHUNK_BYTES),
                    ..Default::default()
                },
                &mut bytes.as_ref(),
            )
            .await;
        let info = match put {
            Ok(info) => info,
            Err(e) => {
                // Chunks of a failed put stay in the bucket until the object is deleted.
                if let Err(del) = store.delete(name).await {
                    tracing::warn!(key, error = %del, "cleaning up a failed put failed");
                }
                return Err(backend(key, "put")(&e));
            }
        };
        if let Some(put_digest) = info.digest {
            metadata.insert(PUT_DIGEST.to_owned(), put_digest);
            let update = UpdateMetadata {
                name: name.to_owned(),
                description,
                metadata,
                headers: None,
            };
            if let Err(e) = store.update_metadata(name, update).await {
                // The blob is whole; head will hash it instead of trusting the metadata.
                tracing::warn!(key, error = %e, "recording the put's digest failed");
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let (tenant, name) = split_key(key)?;
        match self.bucket(key, tenant, false).await? {
            Some(store) => self.read(key, &store, name).await,
            None => Err(StoreError::NotFound(key.to_owned())),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, StoreError> {
        let (tenant, name) = split_key(key)?;
        match self.bucket(key, tenant, false).await? {
            Some(store) => self.head_in(key, &store, name).await,
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let (tenant, name) = split_key(key)?;
        let Some(store) = self.bucket(key, tenant, false).await? else {
            return Ok(false);
        };
        if Self::info(key, &store, name).await?.is_none() {
            return Ok(false);
        }
        match store.delete(name).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(false),
            Err(e) => Err(backend(key, "delete")(&e)),
        }
    }

    /// `prefix` must name its tenant in full (`tenants/{tenant}/...`): listing across tenants
    /// is refused with [`StoreError::InvalidKey`].
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let invalid = || StoreError::InvalidKey(prefix.to_owned());
        let rest = prefix.strip_prefix("tenants/").ok_or_else(invalid)?;
        let (tenant, name_prefix) = rest.split_once('/').ok_or_else(invalid)?;
        let Some(store) = self.bucket(prefix, tenant, false).await? else {
            return Ok(Vec::new());
        };
        let mut objects = store
            .list()
            .await
            .map_err(|e| backend(prefix, "list")(&e))?;
        let mut out = Vec::new();
        while let Some(info) = objects.next().await {
            let info = info.map_err(|e| backend(prefix, "list")(&e))?;
            if !info.deleted && info.name.starts_with(name_prefix) {
                out.push(format!("tenants/{tenant}/{}", info.name));
            }
        }
        out.sort();
        Ok(out)
    }
}
