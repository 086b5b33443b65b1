//! `BlobStore` semantics, each test a function over `Arc<dyn BlobStore>` run against the
//! local store and the JetStream object store; then what only one of them has.

use std::sync::Arc;

use bytes::Bytes;
use rewind_common::snapshot::{LocalShardStore, ShardStore};
use rewind_worker::blobs::{BlobStore, BlockingBlobs, JetStreamBlobs, LocalBlobs, StoreError};
use rewind_worker::nats::{connect, NatsSettings};
use rewind_worker::testing::NatsServer;

type Blobs = Arc<dyn BlobStore>;

enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Server(
        #[allow(dead_code)] Box<NatsServer>,
        async_nats::jetstream::Context,
    ),
}

fn local() -> (Keep, Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobs::new(LocalShardStore::open(dir.path()).unwrap());
    (Keep::Dir(dir), Arc::new(store))
}

async fn jetstream() -> (Keep, Blobs) {
    let server = NatsServer::start();
    let (_client, js) = connect(&NatsSettings::url(server.url())).await.unwrap();
    let store = JetStreamBlobs::new(js.clone());
    (Keep::Server(Box::new(server), js), Arc::new(store))
}

macro_rules! both {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                let (_keep, store) = super::local();
                super::$test(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jetstream() {
                let (_keep, store) = super::jetstream().await;
                super::$test(store).await;
            }
        }
    };
}

const KEY: &str = "tenants/acme/snapshots/s1/shard-0001.bin";

fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn write_once(store: Blobs) {
    let one = Bytes::from(vec![7u8; 300_000]);
    store.put(KEY, one.clone()).await.unwrap();
    store.put(KEY, one.clone()).await.unwrap();
    let err = store
        .put(KEY, Bytes::from_static(b"other"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert_eq!(store.get(KEY).await.unwrap(), one);
    let err = store.get("tenants/acme/missing").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.get("tenants/nobody/missing").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store
        .put("tenants/acme/../x", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey(_)), "{err}");
}
both!(write_once);

async fn head_tells_size_and_digest(store: Blobs) {
    assert_eq!(store.head(KEY).await.unwrap(), None);
    let bytes = Bytes::from_static(b"shard bytes");
    store.put(KEY, bytes.clone()).await.unwrap();
    let info = store.head(KEY).await.unwrap().unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.blake3_hex, digest(&bytes));
    // An empty blob is a blob.
    store.put("tenants/acme/empty", Bytes::new()).await.unwrap();
    assert_eq!(
        store
            .head("tenants/acme/empty")
            .await
            .unwrap()
            .unwrap()
            .size,
        0
    );
    assert_eq!(store.get("tenants/acme/empty").await.unwrap().len(), 0);
}
both!(head_tells_size_and_digest);

async fn delete_removes(store: Blobs) {
    store.put(KEY, Bytes::from_static(b"a")).await.unwrap();
    assert!(store.delete(KEY).await.unwrap());
    assert!(!store.delete(KEY).await.unwrap());
    assert_eq!(store.head(KEY).await.unwrap(), None);
    assert!(matches!(store.get(KEY).await, Err(StoreError::NotFound(_))));
    assert!(store.list("tenants/acme/").await.unwrap().is_empty());
    assert!(!store.delete("tenants/nobody/x").await.unwrap());
    // Deleted, the key takes other bytes.
    store.put(KEY, Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(&store.get(KEY).await.unwrap()[..], b"b");
}
both!(delete_removes);

async fn list_is_sorted_and_by_prefix(store: Blobs) {
    for key in [
        "tenants/acme/snapshots/s2/b",
        "tenants/acme/snapshots/s1/b",
        "tenants/acme/snapshots/s1/a",
        "tenants/acme/manifests/s1.json",
        "tenants/other/snapshots/s1/a",
    ] {
        store.put(key, Bytes::from(key.to_owned())).await.unwrap();
    }
    assert_eq!(
        store.list("tenants/acme/snapshots/").await.unwrap(),
        [
            "tenants/acme/snapshots/s1/a",
            "tenants/acme/snapshots/s1/b",
            "tenants/acme/snapshots/s2/b"
        ]
    );
    assert_eq!(
        store.list("tenants/acme/snapshots/s1/").await.unwrap(),
        ["tenants/acme/snapshots/s1/a", "tenants/acme/snapshots/s1/b"]
    );
    assert_eq!(store.list("tenants/other/").await.unwrap().len(), 1);
    assert!(store.list("tenants/nobody/").await.unwrap().is_empty());
}
both!(list_is_sorted_and_by_prefix);

async fn blocking_blobs_serve_blocking_threads(store: Blobs) {
    let sync = BlockingBlobs::new(tokio::runtime::Handle::current(), store.clone());
    let got = tokio::task::spawn_blocking(move || {
        sync.put(KEY, b"from a blocking thread").unwrap();
        assert!(matches!(
            sync.put(KEY, b"different"),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(
            sync.head(KEY).unwrap().unwrap().blake3_hex,
            digest(b"from a blocking thread")
        );
        assert_eq!(sync.list("tenants/acme/").unwrap(), [KEY]);
        sync.get(KEY).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(got, b"from a blocking thread");
    assert_eq!(
        &store.get(KEY).await.unwrap()[..],
        b"from a blocking thread"
    );
}
both!(blocking_blobs_serve_blocking_threads);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_refuses_keys_outside_a_tenant() {
    let (_keep, store) = jetstream().await;
    for key in [
        "snapshots/s1",
        "tenants/Acme/x",
        "tenants/acme",
        "tenants/ac_me/x",
        "tenants//x",
    ] {
        let err = store.put(key, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey(_)), "{key}: {err}");
    }
    assert!(matches!(
        store.list("tenants/").await,
        Err(StoreError::InvalidKey(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_overwritten_blob_shows_in_heads_digest() {
    let (keep, store) = jetstream().await;
    let Keep::Server(_, js) = &keep else {
        unreachable!()
    };
    let original = Bytes::from_static(b"the original shard");
    store.put(KEY, original.clone()).await.unwrap();
    // Overwritten behind the store's back, even keeping the recorded digest.
    let raw = js.get_object_store("rewind-acme").await.unwrap();
    let name = KEY.strip_prefix("tenants/acme/").unwrap();
    let forged = raw.info(name).await.unwrap().metadata;
    raw.put(
        async_nats::jetstream::object_store::ObjectMetadata {
            name: name.to_owned(),
            metadata: forged,
            ..Default::default()
        },
        &mut &b"a tampered shard!!"[..],
    )
    .await
    .unwrap();
    let info = store.head(KEY).await.unwrap().unwrap();
    assert_ne!(info.blake3_hex, digest(&original));
    assert_eq!(info.blake3_hex, digest(b"a tampered shard!!"));
    // And write-once still holds against the original bytes.
    assert!(matches!(
        store.put(KEY, original).await,
        Err(StoreError::AlreadyExists(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_damaged_blob_shows_in_heads_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobs::new(LocalShardStore::open(dir.path()).unwrap());
    store
        .put(KEY, Bytes::from_static(b"original"))
        .await
        .unwrap();
    std::fs::write(dir.path().join(KEY), b"damaged!").unwrap();
    let info = store.head(KEY).await.unwrap().unwrap();
    assert_eq!(info.blake3_hex, digest(b"damaged!"));
    assert_ne!(info.blake3_hex, digest(b"original"));
}

both!(large_and_many_blobs_read_back_whole);
/// Blobs of several chunks (over 512 KiB) read back byte for byte, and a burst of reads at
/// once (more than a stream's default limit of consumers) all succeed.
async fn large_and_many_blobs_read_back_whole(store: Blobs) {
    let big: Vec<u8> = (0..1_300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let key = "tenants/acme/snapshots/s1/big.bin";
    store.put(key, Bytes::from(big.clone())).await.unwrap();
    assert_eq!(store.get(key).await.unwrap().as_ref(), big.as_slice());
    let keys: Vec<String> = (0..1_200)
        .map(|i| format!("tenants/acme/snapshots/s2/blob-{i:05}.bin"))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        store
            .put(k, Bytes::from(format!("blob {i}").into_bytes()))
            .await
            .unwrap();
    }
    let reads = keys.iter().map(|k| {
        let store = store.clone();
        async move { store.get(k).await }
    });
    let got = futures_util::future::join_all(reads).await;
    for (i, g) in got.into_iter().enumerate() {
        assert_eq!(g.unwrap().as_ref(), format!("blob {i}").as_bytes());
    }
}
