//! What only the embedded store has: persistence across reopen, bounded
//! history for slow watchers, shutdown, and its speed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collect_events, expect_compacted};
use ingest_store::{EmbeddedOptions, EmbeddedStore, EventKind, KeyRange, RangeRequest, Store, StoreError, Txn, TxnOp};

fn open(dir: &Path, fsync: bool) -> EmbeddedStore {
    EmbeddedStore::open_with(dir, EmbeddedOptions { fsync, ..EmbeddedOptions::default() }).expect("open")
}

async fn persists_across_reopen(fsync: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, revision) = {
        let s = open(dir.path(), fsync);
        s.put("/k/a", b"alpha".to_vec(), 0).await.expect("put");
        // Later writes rely on the clean shutdown alone.
        s.flush().await.expect("flush");
        s.put("/k/a", b"alpha2".to_vec(), 0).await.expect("put");
        s.put("/k/b", b"beta".to_vec(), 0).await.expect("put");
        s.txn(Txn::new().and_then([TxnOp::put("/k/c", "gamma"), TxnOp::delete("/k/b")])).await.expect("txn");
        let lease = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
        s.put("/k/leased", b"owner".to_vec(), lease).await.expect("put");
        let a = s.get("/k/a").await.expect("get").expect("present");
        (a, s.current_revision().await.expect("revision"))
    }; // dropped: a clean shutdown

    let s = open(dir.path(), fsync);
    assert_eq!(s.get("/k/a").await.expect("get"), Some(a), "value, revisions and version survive");
    assert_eq!(s.get("/k/c").await.expect("get").expect("present").value, b"gamma");
    assert_eq!(s.get("/k/b").await.expect("get"), None);
    assert_eq!(s.get("/k/leased").await.expect("get"), None, "leased keys die with their process");
    let reopened = s.current_revision().await.expect("revision");
    assert_eq!(reopened, revision + 1, "deleting the leased keys is one write");

    // History is not persisted: only the next revision can be watched.
    expect_compacted(s.watch_prefix("/k/", revision).await).await;
    expect_compacted(s.watch_prefix("/k/", reopened).await).await;
    let mut watch = s.watch_prefix("/k/", reopened + 1).await.expect("watch");
    let next = s.put("/k/d", b"delta".to_vec(), 0).await.expect("put");
    assert_eq!(next, reopened + 1);
    let events = collect_events(&mut watch, 1).await;
    assert_eq!((events[0].kv.key.as_str(), events[0].kv.create_revision), ("/k/d", next));
    drop(watch);
    drop(s);

    // Without leased keys a reopen writes nothing.
    let s = open(dir.path(), fsync);
    assert_eq!(s.current_revision().await.expect("revision"), next);
    assert_eq!(s.range(RangeRequest::new(KeyRange::prefix("/k/"))).await.expect("range").count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_across_reopen_with_fsync() {
    persists_across_reopen(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_across_clean_reopen_without_fsync() {
    persists_across_reopen(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_gets_compacted_not_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions { max_history_events: 50, watch_buffer: 1, ..EmbeddedOptions::default() };
    let s = EmbeddedStore::open_with(dir.path(), options).expect("open");
    let mut watch = s.watch_prefix("/s/", 0).await.expect("watch");
    let first = s.current_revision().await.expect("revision") + 1;
    for i in 0..200 {
        s.put(&format!("/s/{}", i % 3), vec![1], 0).await.expect("put");
    }
    // Whatever was delivered is gap-free from the first write; then Compacted; then the end.
    let mut expected = first;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("item in time") {
            Some(Ok(batch)) => {
                for event in batch.events {
                    assert_eq!(event.kv.mod_revision, expected, "no gap, no duplicate");
                    expected += 1;
                }
            }
            Some(Err(StoreError::Compacted { requested, compact_revision })) => {
                assert_eq!(requested, expected, "the error names the first missing revision");
                assert!(compact_revision > expected);
                break;
            }
            other => panic!("expected events then Compacted, got {other:?}"),
        }
    }
    assert!(expected < first + 200, "the watcher must have fallen behind the bounded history");
    assert!(watch.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn watches_end_when_the_store_is_dropped() {
    let s = EmbeddedStore::in_memory().expect("open");
    let mut watch = s.watch_prefix("/", 0).await.expect("watch");
    s.put("/x", b"1".to_vec(), 0).await.expect("put");
    assert_eq!(collect_events(&mut watch, 1).await[0].kind, EventKind::Put);
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(2), watch.next()).await.expect("ends in time");
    assert!(end.is_none());
}

#[tokio::test]
async fn dropping_a_watch_does_not_disturb_writers() {
    let s = EmbeddedStore::in_memory().expect("open");
    let watch = s.watch_prefix("/", 0).await.expect("watch");
    drop(watch);
    for i in 0..100u8 {
        s.put("/k", vec![i], 0).await.expect("put");
    }
    assert_eq!(s.get("/k").await.expect("get").expect("present").version, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_100_keys_among_10_000_are_fast() {
    let s: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("open"));
    for chunk in 0..100 {
        let ops = (0..100).map(|i| TxnOp::put(format!("/jobs/{:05}", chunk * 100 + i), vec![b'x'; 200]));
        s.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
    let rounds = 1000;
    let started = Instant::now();
    for round in 0..rounds {
        let prefix = format!("/jobs/{:03}", round % 100);
        let response = s.range(RangeRequest::new(KeyRange::prefix(prefix))).await.expect("range");
        assert_eq!(response.kvs.len(), 100);
    }
    let per_range = started.elapsed() / rounds;
    let started = Instant::now();
    let page = s.range(RangeRequest::new(KeyRange::prefix("/jobs/")).limit(100)).await.expect("range");
    let first_page = started.elapsed();
    assert_eq!((page.kvs.len(), page.count, page.more), (100, 10_000, true));
    println!("range of 100 keys among 10 000: {per_range:?}; first page of 10 000 with count: {first_page:?}");
    // Generous for unoptimised test builds on a loaded machine; optimised it is a few µs.
    assert!(per_range < Duration::from_millis(1), "a range of 100 keys took {per_range:?}");
}

#[tokio::test]
async fn opening_outside_a_runtime_fails_cleanly() {
    let result = std::thread::spawn(EmbeddedStore::in_memory).join().expect("thread");
    assert!(matches!(result, Err(StoreError::Invalid(_))));
}
