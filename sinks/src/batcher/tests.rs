//! The queue's logic against a scripted transport; the real `_bulk` adapter
//! is tested against OpenSearch in tests/opensearch.rs.

use std::sync::Mutex as StdMutex;

use super::*;

/// Records every request; answers with a script, then with success.
#[derive(Default)]
struct Scripted {
    requests: StdMutex<Vec<Vec<String>>>,
    script: StdMutex<VecDeque<Answer>>,
    /// Requests wait for this before answering, when set.
    gate: Option<Arc<tokio::sync::Notify>>,
}

enum Answer {
    Fail(TransportError),
    Items(Box<dyn Fn(&str) -> ItemResult + Send>),
}

#[async_trait]
impl BulkTransport for Scripted {
    async fn send(&self, body: Bytes, count: usize) -> Result<Vec<ItemResult>, TransportError> {
        let text = String::from_utf8(body.to_vec()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .step_by(2)
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["index"]["_id"].as_str().unwrap().into()
            })
            .collect();
        assert_eq!(ids.len(), count);
        self.requests.lock().unwrap().push(ids.clone());
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        match self.script.lock().unwrap().pop_front() {
            Some(Answer::Fail(error)) => Err(error),
            Some(Answer::Items(f)) => Ok(ids.iter().map(|id| f(id)).collect()),
            None => Ok(vec![ItemResult::Written; count]),
        }
    }
}

fn docs(prefix: &str, n: usize) -> Vec<Document> {
    (0..n)
        .map(|i| Document {
            index: "ingest-test".into(),
            id: format!("{prefix}{i}"),
            source: Bytes::from_static(b"{}"),
        })
        .collect()
}

fn fast() -> BulkConfig {
    BulkConfig { linger: Duration::from_millis(20), ..BulkConfig::default() }
}

#[tokio::test]
async fn writes_from_many_writers_share_requests_within_the_bounds() {
    let transport = Arc::new(Scripted::default());
    let batcher = Arc::new(Batcher::spawn(transport.clone(), BulkConfig { max_docs: 25, concurrency: 1, ..fast() }));
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.write(docs(&format!("w{w}-"), 10)).await.unwrap() })
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.await.unwrap(), WriteOutcome { written: 10, rejected: vec![] });
    }
    let requests = transport.requests.lock().unwrap();
    let sent: usize = requests.iter().map(Vec::len).sum();
    assert_eq!(sent, 100);
    assert!(
        requests.iter().all(|r| r.len() <= 25),
        "max_docs holds: {:?}",
        requests.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(requests.len() <= 8, "writers were batched together: {} requests", requests.len());
}

#[tokio::test]
async fn failed_requests_and_refused_items_are_retried_and_rejections_reported() {
    let transport = Arc::new(Scripted::default());
    transport.script.lock().unwrap().extend([
        Answer::Fail(TransportError::Retry { message: "connection refused".into(), retry_after: None }),
        Answer::Items(Box::new(|id| match id {
            "a1" => ItemResult::Retry("429 es_rejected_execution_exception".into()),
            "a2" => ItemResult::Rejected { status: 400, reason: "400 mapper_parsing_exception".into() },
            _ => ItemResult::Written,
        })),
    ]);
    let batcher = Batcher::spawn(transport.clone(), fast());
    let outcome = batcher.write(docs("a", 4)).await.unwrap();
    assert_eq!(outcome.written, 3);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!((outcome.rejected[0].id.as_str(), outcome.rejected[0].status), ("a2", 400));
    let requests = transport.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[2], vec!["a1".to_string()], "only the refused item is sent again");
    assert_eq!(batcher.trouble(), None, "cleared by the success");
}

#[tokio::test]
async fn trouble_is_visible_while_requests_fail() {
    let transport = Arc::new(Scripted::default());
    let failures =
        (0..3).map(|_| Answer::Fail(TransportError::Retry { message: "503 unavailable".into(), retry_after: None }));
    transport.script.lock().unwrap().extend(failures);
    let batcher = Batcher::spawn(transport.clone(), fast());
    let write = batcher.write(docs("t", 1));
    tokio::pin!(write);
    let early = tokio::time::timeout(Duration::from_millis(120), &mut write).await;
    assert!(early.is_err(), "still retrying");
    assert_eq!(batcher.trouble().as_deref(), Some("503 unavailable"));
    assert_eq!(write.await.unwrap().written, 1);
}

#[tokio::test]
async fn abandoned_writes_are_not_sent() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let transport = Arc::new(Scripted { gate: Some(gate.clone()), ..Scripted::default() });
    let batcher = Arc::new(Batcher::spawn(transport.clone(), BulkConfig { concurrency: 1, ..fast() }));
    // The first write holds the only request slot.
    let first = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.write(docs("first", 1)).await }
    });
    assert!(ingest_wait(|| transport.requests.lock().unwrap().len() == 1).await);
    // The second is queued behind it, then given up.
    let second = tokio::time::timeout(Duration::from_millis(100), batcher.write(docs("second", 3))).await;
    assert!(second.is_err());
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().written, 1);
    // A third write goes through; the abandoned documents never reached the index.
    let third = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.write(docs("third", 1)).await }
    });
    assert!(ingest_wait(|| transport.requests.lock().unwrap().len() == 2).await);
    gate.notify_one();
    assert_eq!(third.await.unwrap().unwrap().written, 1);
    let requests = transport.requests.lock().unwrap().clone();
    assert!(requests.iter().flatten().all(|id| !id.starts_with("second")), "{requests:?}");
}

#[tokio::test]
async fn a_full_buffer_makes_writers_wait() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let transport = Arc::new(Scripted { gate: Some(gate.clone()), ..Scripted::default() });
    // Room for two writes of 40 small documents (≈ 2 KiB, so 3 KiB of room each).
    let config = BulkConfig { concurrency: 1, buffer_bytes: 6 * 1024, ..fast() };
    let batcher = Arc::new(Batcher::spawn(transport.clone(), config));
    let spawn_write = |prefix: &'static str| {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.write(docs(prefix, 40)).await })
    };
    let (a, b) = (spawn_write("a"), spawn_write("b"));
    assert!(ingest_wait(|| transport.requests.lock().unwrap().len() == 1).await);
    let c = spawn_write("c");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!c.is_finished());
    assert_eq!(batcher.buffer.available_permits(), 0, "the first two writes fill the buffer");
    assert_eq!(transport.requests.lock().unwrap().len(), 1, "the third writer waits outside the queue");
    for _ in 0..6 {
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for write in [a, b, c] {
        assert_eq!(write.await.unwrap().unwrap().written, 40);
    }
}

#[tokio::test]
async fn too_large_requests_are_split_and_a_single_document_rejected() {
    let transport = Arc::new(Scripted::default());
    transport.script.lock().unwrap().extend([
        Answer::Fail(TransportError::TooLarge),
        Answer::Fail(TransportError::TooLarge),
        Answer::Fail(TransportError::TooLarge),
    ]);
    let batcher = Batcher::spawn(transport.clone(), fast());
    let outcome = batcher.write(docs("s", 4)).await.unwrap();
    // 4 → 413; [s0, s1] → 413; [s0] → 413 (rejected); [s1], [s2, s3] written.
    assert_eq!(outcome.written, 3, "{outcome:?}");
    assert_eq!(outcome.rejected.iter().map(|r| (r.id.as_str(), r.status)).collect::<Vec<_>>(), vec![("s0", 413)]);
}

async fn ingest_wait(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
