//! Fixtures and watch helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use ingest_store::{EmbeddedStore, EtcdOptions, EtcdStore, Store, StoreError, WatchBatch, WatchEvent, WatchStream};
use ingest_testkit::EtcdServer;

/// How long a test waits for an event that must come.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store under test and what keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub dir: Option<tempfile::TempDir>,
    pub etcd: Option<EtcdServer>,
}

impl Fixture {
    /// An embedded store persisted in a fresh temporary directory (the
    /// configuration `ingest standalone` runs).
    pub fn embedded() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        Fixture { store: Arc::new(store), dir: Some(dir), etcd: None }
    }

    /// A fresh etcd process and a client connected to it.
    pub async fn etcd() -> Fixture {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("start etcd");
        let store = connect(&etcd).await;
        Fixture { store: Arc::new(store), dir: None, etcd: Some(etcd) }
    }
}

pub async fn connect(etcd: &EtcdServer) -> EtcdStore {
    let mut options = EtcdOptions::new([etcd.endpoint()]);
    options.request_timeout = Duration::from_secs(3);
    EtcdStore::connect(options).await.expect("connect to etcd")
}

/// The next batch; panics on an error, the end of the stream, or a timeout.
pub async fn next_batch(watch: &mut WatchStream) -> WatchBatch {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(batch))) => {
            assert!(!batch.events.is_empty(), "batches carry events");
            batch
        }
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Exactly `n` events (from as many batches as it takes), checking that
/// batches are in revision order and each batch's revision covers its events.
pub async fn collect_events(watch: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut events: Vec<WatchEvent> = Vec::new();
    while events.len() < n {
        let batch = next_batch(watch).await;
        for event in &batch.events {
            assert!(event.kv.mod_revision <= batch.revision, "event beyond its batch's revision");
            if let Some(last) = events.last() {
                assert!(event.kv.mod_revision >= last.kv.mod_revision, "events out of order");
            }
        }
        events.extend(batch.events);
    }
    assert_eq!(events.len(), n, "more events than expected: {events:?}");
    events
}

/// No further event arrives for a while.
pub async fn expect_quiet(watch: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// A watch that must fail with `Compacted`, either at once or as the
/// stream's first item (etcd reports it after creating the watcher).
pub async fn expect_compacted(result: Result<WatchStream, StoreError>) {
    match result {
        Err(StoreError::Compacted { .. }) => {}
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(mut watch) => match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
            Ok(Some(Err(StoreError::Compacted { compact_revision, .. }))) => {
                assert!(compact_revision > 0);
                // Nothing follows the error.
                assert!(matches!(tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await, Ok(None)));
            }
            other => panic!("expected Compacted as the first item, got {other:?}"),
        },
    }
}
