//! What only the etcd store has: a server that goes away and comes back.

mod common;

use std::time::{Duration, Instant};

use common::{collect_events, connect};
use ingest_store::{EtcdOptions, EtcdStore, Store, StoreError};
use ingest_testkit::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_an_etcd_restart() {
    let mut etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("start etcd");
    let s = connect(&etcd).await;
    let lease = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    let r1 = s.put("/r/owner", b"me".to_vec(), lease).await.expect("put");
    let mut watch = s.watch_prefix("/r/", 0).await.expect("watch");

    let mut etcd = tokio::task::spawn_blocking(move || {
        etcd.stop();
        etcd
    })
    .await
    .expect("stop etcd");

    // The watch reports the break (the caller re-watches from its last revision).
    match tokio::time::timeout(Duration::from_secs(15), watch.next()).await.expect("watch notices in time") {
        Some(Err(StoreError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(watch.next().await.is_none(), "the stream ends after the error");

    // Requests fail fast with Unavailable while etcd is down.
    let started = Instant::now();
    match s.get("/r/owner").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(8), "bounded by the request timeout");

    let etcd = tokio::task::spawn_blocking(move || {
        etcd.start_again();
        etcd
    })
    .await
    .expect("restart etcd");

    // The same client recovers; data, revision and the lease survived.
    let kv = retry(|| s.get("/r/owner")).await.expect("present after restart");
    assert_eq!((kv.mod_revision, kv.lease), (r1, lease));
    assert!(s.lease_keep_alive(lease).await.expect("keepalive after restart") > Duration::ZERO);
    let mut watch = s.watch_prefix("/r/", r1 + 1).await.expect("re-watch");
    let r2 = s.put("/r/next", b"n".to_vec(), 0).await.expect("put");
    let events = collect_events(&mut watch, 1).await;
    assert_eq!(events[0].kv.mod_revision, r2);
    drop(etcd);
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable() {
    let port = ingest_testkit::free_port();
    let mut options = EtcdOptions::new([format!("http://127.0.0.1:{port}")]);
    options.connect_timeout = Duration::from_millis(500);
    options.request_timeout = Duration::from_secs(1);
    // Without auth, connecting is lazy; the first request fails.
    let s = EtcdStore::connect(options).await.expect("lazy connect");
    match s.put("/k", b"v".to_vec(), 0).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Retries a read for up to 10 s while etcd comes back.
async fn retry<T, F>(mut call: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Result<Option<T>, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(error = %error, "retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("etcd did not come back: {error}"),
        }
    }
}

/// Three members, a follower listed first (where requests start) killed:
/// every call still succeeds, reads, writes, leases and watches alike, each
/// at the cost of at most one retry on a live member. The first call after
/// the kill is a read: a transaction caught on the dying connection may have
/// been applied, so it is not sent again (its caller re-reads); a read is.
/// (Killing the leader adds an election: cli/tests/etcd_cluster.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_costs_a_retry_not_a_failed_call() {
    let cluster = tokio::task::spawn_blocking(|| ingest_testkit::EtcdCluster::start(3)).await.expect("start");
    let leader = cluster.leader().expect("a leader");
    let follower = (leader + 1) % 3;
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, follower);
    let s = EtcdStore::connect(EtcdOptions::new(endpoints)).await.expect("connect");
    s.put("/m/k", b"v0".to_vec(), 0).await.expect("put");
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.kill(follower);
        cluster
    })
    .await
    .expect("kill a member");
    let mut failures = Vec::new();
    for i in 0..100u32 {
        let calls = async {
            let kv = s.get("/m/k").await?.expect("present");
            let expected = if i == 0 { b"v0".to_vec() } else { (i - 1).to_be_bytes().to_vec() };
            assert_eq!(kv.value, expected);
            s.put("/m/k", i.to_be_bytes().to_vec(), 0).await?;
            let lease = s.lease_grant(Duration::from_secs(30)).await?;
            s.lease_keep_alive(lease).await?;
            s.lease_revoke(lease).await?;
            Ok::<(), StoreError>(())
        };
        if let Err(error) = calls.await {
            failures.push((i, error));
        }
    }
    assert!(failures.is_empty(), "calls failed with one member of three down: {failures:?}");
    let mut watch = s.watch_prefix("/m/", 0).await.expect("a watch on a live member");
    s.put("/m/w", b"x".to_vec(), 0).await.expect("put");
    let events = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("in time");
    assert!(events.expect("an event").is_ok());
    tokio::task::spawn_blocking(move || drop(cluster)).await.expect("stop");
}
