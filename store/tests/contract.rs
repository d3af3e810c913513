//! The store contract: every test body runs against the embedded store and
//! against a real etcd (one fresh `etcd` process per test, so revisions and
//! compaction of one test never leak into another).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, collect_events, expect_compacted, next_batch};
use ingest_store::{
    Compare, CompareOp, EventKind, KeyRange, RangeRequest, Store, StoreError, Txn, TxnOp, TxnOpResponse,
};

/// Generates `mod embedded` and `mod etcd`, one `#[tokio::test]` per body
/// and store.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::Fixture::embedded();
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::Fixture::etcd().await;
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }
    };
}

contract!(
    put_get_revisions_and_versions,
    delete_of_absent_key_writes_nothing,
    range_limit_more_count_keys_only,
    range_prefix_end_and_between,
    txn_claim_on_create_revision,
    concurrent_claims_have_one_winner,
    txn_optimistic_concurrency_on_mod_revision,
    txn_compares_on_absent_keys,
    txn_is_atomic_with_one_revision,
    txn_rejects_duplicate_keys_and_too_many_ops,
    delete_range_uses_one_revision,
    watch_from_now_sees_only_its_prefix,
    watch_from_past_replays_then_goes_live,
    watch_survives_a_burst_without_gaps,
    watch_of_compacted_history_fails,
    lease_keepalive_keeps_keys_alive,
    lease_expiry_deletes_keys_with_an_event,
    lease_revoke_deletes_keys_in_one_revision,
    unknown_leases_are_not_found,
    txn_compare_on_lease,
);

async fn put_get_revisions_and_versions(s: Arc<dyn Store>) {
    let start = s.current_revision().await.expect("revision");
    let r1 = s.put("/t/a", b"one".to_vec(), 0).await.expect("put");
    assert_eq!(r1, start + 1, "a put bumps the revision by one");
    let kv = s.get("/t/a").await.expect("get").expect("present");
    assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("/t/a", &b"one"[..]));
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (r1, r1, 1, 0));

    let r2 = s.put("/t/a", b"two".to_vec(), 0).await.expect("put");
    assert_eq!(r2, r1 + 1);
    let kv = s.get("/t/a").await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));
    assert_eq!(kv.value, b"two");
    assert_eq!(s.current_revision().await.expect("revision"), r2);

    let r3 = s.put("/t/b", Vec::new(), 0).await.expect("put");
    assert!(s.delete("/t/a").await.expect("delete"), "the key existed");
    let r4 = s.current_revision().await.expect("revision");
    assert_eq!(r4, r3 + 1);
    assert_eq!(s.get("/t/a").await.expect("get"), None);

    // Re-created: a new create revision, version back to 1.
    let r5 = s.put("/t/a", b"three".to_vec(), 0).await.expect("put");
    let kv = s.get("/t/a").await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r5, r5, 1));
    let empty = s.get("/t/b").await.expect("get").expect("present");
    assert!(empty.value.is_empty());
}

async fn delete_of_absent_key_writes_nothing(s: Arc<dyn Store>) {
    let r1 = s.put("/t/x", b"x".to_vec(), 0).await.expect("put");
    assert!(!s.delete("/t/missing").await.expect("delete"));
    assert_eq!(s.current_revision().await.expect("revision"), r1, "no revision for a no-op delete");
    let response = s.txn(Txn::new().and_then([TxnOp::get("/t/x")])).await.expect("txn");
    assert_eq!(response.revision, r1, "a read-only txn does not bump the revision");
    assert_eq!(s.current_revision().await.expect("revision"), r1);
}

async fn put_keys(s: &Arc<dyn Store>, keys: &[&str]) {
    for key in keys {
        s.put(key, format!("value of {key}").into_bytes(), 0).await.expect("put");
    }
}

async fn range_limit_more_count_keys_only(s: Arc<dyn Store>) {
    let keys: Vec<String> = (0..10).map(|i| format!("/r/{i}")).collect();
    // Insert out of order; ranges come back in key order.
    for key in keys.iter().rev() {
        s.put(key, format!("v{key}").into_bytes(), 0).await.expect("put");
    }
    put_keys(&s, &["/r", "/r0", "/q/9", "/s"]).await;

    let all = s.range(RangeRequest::new(KeyRange::prefix("/r/"))).await.expect("range");
    assert_eq!(all.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), keys);
    assert_eq!((all.count, all.more), (10, false));
    assert_eq!(all.kvs[3].value, b"v/r/3");
    assert_eq!(all.revision, s.current_revision().await.expect("revision"));

    let limited = s.range(RangeRequest::new(KeyRange::prefix("/r/")).limit(3)).await.expect("range");
    assert_eq!(limited.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/r/0", "/r/1", "/r/2"]);
    assert_eq!((limited.count, limited.more), (10, true));

    let exact = s.range(RangeRequest::new(KeyRange::prefix("/r/")).limit(10)).await.expect("range");
    assert_eq!((exact.kvs.len(), exact.more), (10, false));

    let keys_only = s.range(RangeRequest::new(KeyRange::prefix("/r/")).keys_only()).await.expect("range");
    assert_eq!(keys_only.kvs.len(), 10);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1 && kv.mod_revision > 0));

    let count = s.range(RangeRequest::new(KeyRange::prefix("/r/")).count_only()).await.expect("range");
    assert_eq!((count.count, count.kvs.len(), count.more), (10, 0, false));

    let missing = s.range(RangeRequest::new(KeyRange::key("/r/missing"))).await.expect("range");
    assert_eq!((missing.kvs.len(), missing.count), (0, 0));
}

async fn range_prefix_end_and_between(s: Arc<dyn Store>) {
    put_keys(&s, &["/p/a", "/p/b", "/p/c", "/p/d", "/p0", "/q"]).await;
    let keys = |r: ingest_store::RangeResponse| r.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();

    let between = s.range(RangeRequest::new(KeyRange::between("/p/b", "/p/d"))).await.expect("range");
    assert_eq!(keys(between), ["/p/b", "/p/c"], "end is exclusive");

    // "/p" as a prefix covers "/p/..." and "/p0" but not "/q".
    let prefix = s.range(RangeRequest::new(KeyRange::prefix("/p"))).await.expect("range");
    assert_eq!(keys(prefix), ["/p/a", "/p/b", "/p/c", "/p/d", "/p0"]);

    // An end of "\0" means "to the end of the keyspace".
    let from = s.range(RangeRequest::new(KeyRange::between("/p/d", "\0"))).await.expect("range");
    assert_eq!(keys(from), ["/p/d", "/p0", "/q"]);

    let single = s.range(RangeRequest::new(KeyRange::key("/p/c"))).await.expect("range");
    assert_eq!(keys(single), ["/p/c"]);
}

async fn txn_claim_on_create_revision(s: Arc<dyn Store>) {
    let claim = |worker: &'static str| {
        Txn::new()
            .when([Compare::absent("/o/job1")])
            .and_then([TxnOp::put("/o/job1", worker)])
            .or_else([TxnOp::get("/o/job1")])
    };
    let first = s.txn(claim("worker-a")).await.expect("txn");
    assert!(first.succeeded);
    assert_eq!(first.responses, [TxnOpResponse::Put]);
    let owner = s.get("/o/job1").await.expect("get").expect("claimed");
    assert_eq!(owner.create_revision, first.revision, "the claim's revision is the epoch");

    let second = s.txn(claim("worker-b")).await.expect("txn");
    assert!(!second.succeeded, "a second claim must lose");
    assert_eq!(second.revision, first.revision, "a losing claim writes nothing");
    match &second.responses[..] {
        [TxnOpResponse::Range(r)] => {
            assert_eq!(r.kvs.len(), 1);
            assert_eq!(r.kvs[0].value, b"worker-a");
            assert_eq!(r.kvs[0].create_revision, first.revision);
        }
        other => panic!("expected the owner in the failure branch, got {other:?}"),
    }

    // Fencing: a checkpoint guarded by the epoch passes, a stale epoch fails.
    let fenced = |epoch| {
        Txn::new()
            .when([Compare::create_revision("/o/job1", CompareOp::Equal, epoch)])
            .and_then([TxnOp::put("/st/job1", "cursor")])
    };
    assert!(s.txn(fenced(first.revision)).await.expect("txn").succeeded);
    assert!(!s.txn(fenced(first.revision - 1)).await.expect("txn").succeeded);
}

async fn concurrent_claims_have_one_winner(s: Arc<dyn Store>) {
    let claims = (0..16).map(|worker| {
        let s = s.clone();
        tokio::spawn(async move {
            let txn = Txn::new()
                .when([Compare::absent("/o/contested")])
                .and_then([TxnOp::put("/o/contested", format!("worker-{worker}"))]);
            s.txn(txn).await.expect("txn")
        })
    });
    let mut winners = Vec::new();
    for (worker, claim) in claims.enumerate() {
        let response = claim.await.expect("task");
        if response.succeeded {
            winners.push((worker, response.revision));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let owner = s.get("/o/contested").await.expect("get").expect("claimed");
    assert_eq!(owner.value, format!("worker-{}", winners[0].0).into_bytes());
    assert_eq!((owner.create_revision, owner.version), (winners[0].1, 1));
}

async fn txn_optimistic_concurrency_on_mod_revision(s: Arc<dyn Store>) {
    s.put("/j/1", b"v1".to_vec(), 0).await.expect("put");
    let read = s.get("/j/1").await.expect("get").expect("present");
    let update = |value: &'static str, seen| {
        Txn::new().when([Compare::mod_revision("/j/1", CompareOp::Equal, seen)]).and_then([TxnOp::put("/j/1", value)])
    };
    let ok = s.txn(update("v2", read.mod_revision)).await.expect("txn");
    assert!(ok.succeeded);
    let stale = s.txn(update("v3", read.mod_revision)).await.expect("txn");
    assert!(!stale.succeeded, "a write based on a stale read must fail");
    assert_eq!(stale.revision, ok.revision);
    let now = s.get("/j/1").await.expect("get").expect("present");
    assert_eq!((now.value.as_slice(), now.version, now.mod_revision), (&b"v2"[..], 2, ok.revision));

    // Greater / Less on mod revision and version.
    let txn = Txn::new().when([
        Compare::mod_revision("/j/1", CompareOp::Greater, read.mod_revision),
        Compare::mod_revision("/j/1", CompareOp::Less, ok.revision + 1),
        Compare::version("/j/1", CompareOp::Equal, 2),
        Compare::version("/j/1", CompareOp::NotEqual, 1),
        Compare::value("/j/1", CompareOp::Equal, "v2"),
        Compare::value("/j/1", CompareOp::Greater, "v1"),
        Compare::value("/j/1", CompareOp::Less, "v3"),
    ]);
    assert!(s.txn(txn).await.expect("txn").succeeded);
}

async fn txn_compares_on_absent_keys(s: Arc<dyn Store>) {
    let holds = |compare: Compare| {
        let s = s.clone();
        async move { s.txn(Txn::new().when([compare])).await.expect("txn").succeeded }
    };
    assert!(holds(Compare::create_revision("/none", CompareOp::Equal, 0)).await);
    assert!(holds(Compare::mod_revision("/none", CompareOp::Equal, 0)).await);
    assert!(holds(Compare::version("/none", CompareOp::Equal, 0)).await);
    assert!(holds(Compare::lease("/none", CompareOp::Equal, 0)).await);
    assert!(holds(Compare::version("/none", CompareOp::Less, 1)).await);
    assert!(!holds(Compare::create_revision("/none", CompareOp::Greater, 0)).await);
    // A value compare on an absent key always fails, whatever the operator.
    assert!(!holds(Compare::value("/none", CompareOp::Equal, "")).await);
    assert!(!holds(Compare::value("/none", CompareOp::NotEqual, "x")).await);
    // An empty compare list holds.
    assert!(s.txn(Txn::new()).await.expect("txn").succeeded);
}

async fn txn_is_atomic_with_one_revision(s: Arc<dyn Store>) {
    s.put("/a/old", b"old".to_vec(), 0).await.expect("put");
    let mut watch = s.watch_prefix("/a/", 0).await.expect("watch");
    let response = s
        .txn(Txn::new().when([Compare::absent("/a/x")]).and_then([
            TxnOp::put("/a/x", "x"),
            TxnOp::put("/a/y", "y"),
            TxnOp::delete("/a/old"),
            TxnOp::get("/a/x"),
        ]))
        .await
        .expect("txn");
    assert!(response.succeeded);
    for key in ["/a/x", "/a/y"] {
        let kv = s.get(key).await.expect("get").expect("present");
        assert_eq!((kv.create_revision, kv.mod_revision), (response.revision, response.revision));
    }
    assert_eq!(response.responses[2], TxnOpResponse::Delete(1));
    match &response.responses[3] {
        TxnOpResponse::Range(r) => {
            assert_eq!(r.kvs[0].value, b"x", "a range sees earlier ops of its txn")
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    // One batch, one revision, every event of the txn.
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, response.revision);
    let seen: Vec<_> = batch.events.iter().map(|e| (e.kind, e.kv.key.as_str(), e.kv.mod_revision)).collect();
    let r = response.revision;
    assert_eq!(seen.len(), 3);
    for expected in [(EventKind::Put, "/a/x", r), (EventKind::Put, "/a/y", r), (EventKind::Delete, "/a/old", r)] {
        assert!(seen.contains(&expected), "missing {expected:?} in {seen:?}");
    }
}

async fn txn_rejects_duplicate_keys_and_too_many_ops(s: Arc<dyn Store>) {
    let before = s.current_revision().await.expect("revision");
    let twice = Txn::new().and_then([TxnOp::put("/d/k", "1"), TxnOp::put("/d/k", "2")]);
    assert!(matches!(s.txn(twice).await, Err(StoreError::Invalid(_))));
    let put_and_delete = Txn::new().and_then([TxnOp::put("/d/k", "1"), TxnOp::delete_range(KeyRange::prefix("/d/"))]);
    assert!(matches!(s.txn(put_and_delete).await, Err(StoreError::Invalid(_))));
    let too_many = Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("/d/{i}"), "v")));
    assert!(matches!(s.txn(too_many).await, Err(StoreError::Invalid(_))));
    assert_eq!(s.current_revision().await.expect("revision"), before, "rejected txns write nothing");
    // 128 ops is fine.
    let full = Txn::new().and_then((0..128).map(|i| TxnOp::put(format!("/d/{i}"), "v")));
    let response = s.txn(full).await.expect("txn");
    assert_eq!(response.revision, before + 1);
    let count = s.range(RangeRequest::new(KeyRange::prefix("/d/")).count_only()).await.expect("range");
    assert_eq!(count.count, 128);
}

async fn delete_range_uses_one_revision(s: Arc<dyn Store>) {
    put_keys(&s, &["/del/1", "/del/2", "/del/3", "/del0", "/dem"]).await;
    let mut watch = s.watch_prefix("/del", 0).await.expect("watch");
    let response = s.txn(Txn::new().and_then([TxnOp::delete_range(KeyRange::prefix("/del/"))])).await.expect("txn");
    assert_eq!(response.responses, [TxnOpResponse::Delete(3)]);
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.events.len(), 3);
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == response.revision));
    assert!(batch.events.iter().all(|e| e.kv.value.is_empty()));
    let left = s.range(RangeRequest::new(KeyRange::prefix("/de"))).await.expect("range");
    assert_eq!(left.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/del0", "/dem"]);

    let nothing = s.txn(Txn::new().and_then([TxnOp::delete_range(KeyRange::prefix("/del/"))])).await.expect("txn");
    assert_eq!(nothing.responses, [TxnOpResponse::Delete(0)]);
    assert_eq!(nothing.revision, response.revision, "deleting nothing writes nothing");
}

async fn watch_from_now_sees_only_its_prefix(s: Arc<dyn Store>) {
    s.put("/w/before", b"b".to_vec(), 0).await.expect("put");
    let mut watch = s.watch_prefix("/w/", 0).await.expect("watch");
    let r1 = s.put("/w/a", b"1".to_vec(), 0).await.expect("put");
    s.put("/x/other", b"o".to_vec(), 0).await.expect("put");
    s.put("/w", b"not under /w/".to_vec(), 0).await.expect("put");
    s.delete("/w/a").await.expect("delete");
    let r4 = s.current_revision().await.expect("revision");

    let events = collect_events(&mut watch, 2).await;
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!((events[0].kv.key.as_str(), events[0].kv.value.as_slice()), ("/w/a", &b"1"[..]));
    assert_eq!((events[0].kv.mod_revision, events[0].kv.create_revision, events[0].kv.version), (r1, r1, 1));
    assert_eq!((events[1].kind, events[1].kv.key.as_str(), events[1].kv.mod_revision), (EventKind::Delete, "/w/a", r4));
    common::expect_quiet(&mut watch).await;
}

async fn watch_from_past_replays_then_goes_live(s: Arc<dyn Store>) {
    let mut revisions = Vec::new();
    for i in 0..4 {
        revisions.push(s.put(&format!("/h/{i}"), vec![i], 0).await.expect("put"));
        s.put("/elsewhere", vec![i], 0).await.expect("put");
    }
    let mut watch = s.watch_prefix("/h/", revisions[1]).await.expect("watch");
    revisions.push(s.put("/h/4", vec![4], 0).await.expect("put"));
    revisions.push(s.put("/h/1", vec![5], 0).await.expect("put"));

    let events = collect_events(&mut watch, 5).await;
    let seen: Vec<_> = events.iter().map(|e| (e.kv.key.as_str(), e.kv.mod_revision)).collect();
    let expected = [
        ("/h/1", revisions[1]),
        ("/h/2", revisions[2]),
        ("/h/3", revisions[3]),
        ("/h/4", revisions[4]),
        ("/h/1", revisions[5]),
    ];
    assert_eq!(seen, expected, "replay then live, no gap, no duplicate");
    assert_eq!(events[4].kv.version, 2);
    common::expect_quiet(&mut watch).await;
}

async fn watch_survives_a_burst_without_gaps(s: Arc<dyn Store>) {
    let mut watch = s.watch_prefix("/burst/", 0).await.expect("watch");
    // Write without reading, so the watcher falls behind its channel.
    let mut revisions = Vec::new();
    for i in 0..300 {
        revisions.push(s.put(&format!("/burst/{}", i % 7), i.to_string().into_bytes(), 0).await.expect("put"));
    }
    let events = collect_events(&mut watch, 300).await;
    let seen: Vec<_> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen, revisions);
    common::expect_quiet(&mut watch).await;
}

async fn watch_of_compacted_history_fails(s: Arc<dyn Store>) {
    let r1 = s.put("/c/1", b"1".to_vec(), 0).await.expect("put");
    let r2 = s.put("/c/2", b"2".to_vec(), 0).await.expect("put");
    let r3 = s.put("/c/3", b"3".to_vec(), 0).await.expect("put");
    s.compact(r2).await.expect("compact");

    expect_compacted(s.watch_prefix("/c/", r1).await).await;
    // The compaction revision itself is still watchable.
    let mut watch = s.watch_prefix("/c/", r2).await.expect("watch");
    let events = collect_events(&mut watch, 2).await;
    assert_eq!(events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), [r2, r3]);

    assert!(matches!(s.compact(r2).await, Err(StoreError::Compacted { .. })), "compacting twice");
    assert!(matches!(s.compact(r3 + 10).await, Err(StoreError::FutureRevision { .. })));
    // Compaction keeps the keys.
    assert_eq!(s.range(RangeRequest::new(KeyRange::prefix("/c/"))).await.expect("range").count, 3);
}

async fn lease_keepalive_keeps_keys_alive(s: Arc<dyn Store>) {
    let lease = s.lease_grant(Duration::from_secs(2)).await.expect("grant");
    assert!(lease > 0, "lease ids are positive");
    s.put("/l/worker", b"me".to_vec(), lease).await.expect("put");
    assert_eq!(s.get("/l/worker").await.expect("get").expect("present").lease, lease);
    let ttl = s.lease_time_to_live(lease).await.expect("ttl").expect("alive");
    assert!(ttl <= Duration::from_secs(2), "ttl {ttl:?}");

    // Twice the TTL, kept alive.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let granted = s.lease_keep_alive(lease).await.expect("keepalive");
        assert!(granted >= Duration::from_secs(1) && granted <= Duration::from_secs(2), "granted {granted:?}");
    }
    assert!(s.get("/l/worker").await.expect("get").is_some(), "kept alive past its TTL");
    s.lease_revoke(lease).await.expect("revoke");
    assert_eq!(s.get("/l/worker").await.expect("get"), None);
}

async fn lease_expiry_deletes_keys_with_an_event(s: Arc<dyn Store>) {
    let lease = s.lease_grant(Duration::from_secs(1)).await.expect("grant");
    let put_revision = s.put("/e/owner", b"me".to_vec(), lease).await.expect("put");
    s.put("/e/unleased", b"stays".to_vec(), 0).await.expect("put");
    let mut watch = s.watch_prefix("/e/", 0).await.expect("watch");

    // etcd checks expiry on its own schedule: allow generous time.
    let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the lease expires within 10 s")
        .expect("stream open")
        .expect("no error");
    assert_eq!(batch.events.len(), 1);
    assert_eq!((batch.events[0].kind, batch.events[0].kv.key.as_str()), (EventKind::Delete, "/e/owner"));
    assert!(batch.events[0].kv.mod_revision > put_revision);
    assert_eq!(s.get("/e/owner").await.expect("get"), None);
    assert!(s.get("/e/unleased").await.expect("get").is_some());
    assert_eq!(s.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound(lease)));
    assert_eq!(s.lease_time_to_live(lease).await.expect("ttl"), None);
    assert_eq!(s.put("/e/again", Vec::new(), lease).await, Err(StoreError::LeaseNotFound(lease)));
}

async fn lease_revoke_deletes_keys_in_one_revision(s: Arc<dyn Store>) {
    let lease = s.lease_grant(Duration::from_secs(30)).await.expect("grant");
    let other = s.lease_grant(Duration::from_secs(30)).await.expect("grant");
    assert_ne!(lease, other, "lease ids are unique");
    for key in ["/v/1", "/v/2", "/v/3"] {
        s.put(key, b"x".to_vec(), lease).await.expect("put");
    }
    // Re-put under another lease: no longer attached to the first.
    s.put("/v/3", b"y".to_vec(), other).await.expect("put");
    let mut watch = s.watch_prefix("/v/", 0).await.expect("watch");
    let before = s.current_revision().await.expect("revision");
    s.lease_revoke(lease).await.expect("revoke");
    let batch = next_batch(&mut watch).await;
    let mut deleted: Vec<_> = batch.events.iter().map(|e| (e.kind, e.kv.key.as_str(), e.kv.mod_revision)).collect();
    deleted.sort_by_key(|(_, key, _)| *key);
    assert_eq!(deleted, [(EventKind::Delete, "/v/1", before + 1), (EventKind::Delete, "/v/2", before + 1)]);
    assert_eq!(s.current_revision().await.expect("revision"), before + 1);
    assert_eq!(s.get("/v/3").await.expect("get").expect("present").lease, other);
    assert_eq!(s.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound(lease)));
    assert!(s.lease_time_to_live(other).await.expect("ttl").is_some());
}

async fn unknown_leases_are_not_found(s: Arc<dyn Store>) {
    let unknown = 0x1234_5678;
    assert_eq!(s.put("/u/k", b"v".to_vec(), unknown).await, Err(StoreError::LeaseNotFound(unknown)));
    assert_eq!(s.get("/u/k").await.expect("get"), None);
    assert_eq!(s.lease_keep_alive(unknown).await, Err(StoreError::LeaseNotFound(unknown)));
    assert_eq!(s.lease_revoke(unknown).await, Err(StoreError::LeaseNotFound(unknown)));
    assert_eq!(s.lease_time_to_live(unknown).await.expect("ttl"), None);
}

async fn txn_compare_on_lease(s: Arc<dyn Store>) {
    let lease = s.lease_grant(Duration::from_secs(30)).await.expect("grant");
    s.put("/o/j", b"w".to_vec(), lease).await.expect("put");
    let guarded = |l| {
        Txn::new().when([Compare::lease("/o/j", CompareOp::Equal, l)]).and_then([TxnOp::put("/st/j", "checkpoint")])
    };
    assert!(s.txn(guarded(lease)).await.expect("txn").succeeded);
    assert!(!s.txn(guarded(lease + 1)).await.expect("txn").succeeded);
    assert!(!s.txn(guarded(0)).await.expect("txn").succeeded);
    s.lease_revoke(lease).await.expect("revoke");
}
