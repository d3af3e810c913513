//! Delivery over the local sinks (real files) and over scripted sinks for
//! rejections and outages.

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::WriteOutcome;
use crate::local::{LocalDocuments, LocalObjects};

fn spec() -> IndexSpec {
    IndexSpec {
        name: "ingest-demo".into(),
        job_type: "demo".into(),
        mapping: Arc::new(index_mapping(&json!({"n": {"type": "long"}}))),
    }
}

fn item(n: u64, raw: bool) -> Item {
    let mut doc = Map::new();
    doc.insert("n".into(), json!(n));
    Item { id: format!("job-1:{n}"), doc, raw: raw.then(|| Bytes::from(format!("{{\"upstream\":{n}}}"))) }
}

fn local(dir: &std::path::Path) -> Arc<Sinks> {
    Arc::new(Sinks::new(
        Arc::new(LocalDocuments::new(dir.join("documents"))),
        Arc::new(LocalObjects::new(dir.join("objects"))),
        Duration::from_secs(5),
    ))
}

#[tokio::test]
async fn documents_carry_the_key_of_their_archived_payload() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = local(dir.path());
    let mut output = sinks.output("demo", "job-1", spec());
    let delivered = output.deliver(vec![item(1, true), item(2, false)]).await.unwrap();
    assert_eq!(delivered, Delivered { written: 2, rejected: 0, first_rejection: None, objects: 1 });
    // Again: same ids, same keys, nothing added.
    output.deliver(vec![item(1, true), item(2, false)]).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("documents/ingest-demo.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["_id"], "job-1:1");
    assert_eq!(lines[0]["_source"]["job_id"], "job-1");
    let key = lines[0]["_source"]["raw_key"].as_str().unwrap();
    assert!(key.starts_with("demo/job-1/") && key.ends_with(".json.gz"), "{key}");
    let gz = std::fs::read(dir.path().join("objects").join(key)).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    assert_eq!(raw, r#"{"upstream":1}"#);
    assert_eq!(key.rsplit('/').next().unwrap(), format!("{}.json.gz", sha256_hex(raw.as_bytes())));
    assert!(lines[1]["_source"].get("raw_key").is_none());
}

#[test]
fn long_and_missing_ids_are_hashed() {
    assert_eq!(document_id("abc", b"{}"), "abc");
    assert_eq!(document_id(&"x".repeat(600), b"{}").len(), 64);
    assert_eq!(document_id("", b"{\"a\":1}"), sha256_hex(b"{\"a\":1}"));
}

/// Rejects documents whose id ends in "bad".
struct Picky;

#[async_trait]
impl DocumentSink for Picky {
    async fn prepare(&self, _: &IndexSpec) -> Result<(), SinkError> {
        Ok(())
    }
    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome::default();
        for doc in docs {
            if doc.id.ends_with("bad") {
                outcome.rejected.push(Rejection {
                    index: doc.index.to_string(),
                    id: doc.id.clone(),
                    status: 400,
                    reason: "400 mapper_parsing_exception: failed to parse field [n]".into(),
                    source: doc.source.clone(),
                });
            } else {
                outcome.written += 1;
            }
        }
        Ok(outcome)
    }
    fn describe(&self) -> String {
        "picky".into()
    }
}

#[tokio::test]
async fn rejected_documents_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = Arc::new(Sinks::new(Arc::new(Picky), Arc::new(LocalObjects::new(dir.path())), Duration::from_secs(5)));
    let mut output = sinks.output("demo", "job-1", spec());
    let mut bad = item(3, false);
    bad.id = "job-1:bad".into();
    let delivered = output.deliver(vec![item(1, false), bad]).await.unwrap();
    assert_eq!((delivered.written, delivered.rejected), (1, 1));
    assert!(delivered.first_rejection.unwrap().contains("mapper_parsing_exception"));
    let key = dead_letter_key("ingest-demo", "job-1:bad", Utc::now());
    let letter: Value = serde_json::from_slice(&std::fs::read(dir.path().join(key)).unwrap()).unwrap();
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["source"]["n"], 3);
    assert_eq!(letter["job_id"], "job-1");
}

/// Never answers; reports what is wrong.
struct Down;

#[async_trait]
impl DocumentSink for Down {
    async fn prepare(&self, _: &IndexSpec) -> Result<(), SinkError> {
        Ok(())
    }
    async fn write(&self, _: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        std::future::pending().await
    }
    fn trouble(&self) -> Option<String> {
        Some("connection refused".into())
    }
    fn describe(&self) -> String {
        "the index".into()
    }
}

/// Fails `failures` times with a transient error, then stores in memory.
struct Flaky {
    failures: Mutex<u32>,
    stored: Mutex<Vec<String>>,
}

#[async_trait]
impl ObjectSink for Flaky {
    async fn prepare(&self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn put(&self, object: &Object) -> Result<(), SinkError> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(SinkError::transient("s3", "connection reset"));
        }
        self.stored.lock().unwrap().push(object.key.clone());
        Ok(())
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[tokio::test]
async fn a_silent_index_fails_the_delivery_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sinks =
        Arc::new(Sinks::new(Arc::new(Down), Arc::new(LocalObjects::new(dir.path())), Duration::from_millis(300)));
    let mut output = sinks.output("demo", "job-1", spec());
    let error = output.deliver(vec![item(1, false)]).await.unwrap_err();
    assert!(error.transient);
    assert!(error.message.contains("connection refused") && error.message.contains("delivered again"), "{error}");
}

#[tokio::test]
async fn object_failures_are_retried_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(Flaky { failures: Mutex::new(2), stored: Mutex::default() });
    let sinks = Arc::new(Sinks::new(Arc::new(LocalDocuments::new(dir.path())), flaky.clone(), Duration::from_secs(5)));
    let mut output = sinks.output("demo", "job-1", spec());
    output.deliver(vec![item(1, true)]).await.unwrap();
    assert_eq!(flaky.stored.lock().unwrap().len(), 1);
    // Failing for longer than the timeout fails the delivery.
    *flaky.failures.lock().unwrap() = 1000;
    let sinks =
        Arc::new(Sinks::new(Arc::new(LocalDocuments::new(dir.path())), flaky.clone(), Duration::from_millis(400)));
    let mut output = sinks.output("demo", "job-1", spec());
    let error = output.deliver(vec![item(2, true)]).await.unwrap_err();
    assert!(error.message.contains("connection reset") && error.message.contains("gave up"), "{error}");
}

/// Preparing takes `delay`, then refuses the credentials (a transient
/// error, as a 401 is) or hangs for ever when `silent`; counts attempts.
struct SlowToRefuse {
    delay: Duration,
    silent: bool,
    attempts: Mutex<u32>,
}

#[async_trait]
impl DocumentSink for SlowToRefuse {
    async fn prepare(&self, _: &IndexSpec) -> Result<(), SinkError> {
        *self.attempts.lock().unwrap() += 1;
        tokio::time::sleep(self.delay).await;
        if self.silent {
            std::future::pending::<()>().await;
        }
        Err(SinkError::transient("elasticsearch", "401 Unauthorized: check --elasticsearch-api-key"))
    }
    async fn write(&self, _: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        Ok(WriteOutcome::default())
    }
    fn describe(&self) -> String {
        "the index".into()
    }
}

/// A preparation is bounded by the sink timeout, and a slow answer is not
/// lost: the attempt goes on, and the next delivery reports what it said
/// (instead of "no answer" again, or a fresh attempt that is as slow).
#[tokio::test]
async fn a_slow_first_answer_is_reported_by_the_next_delivery_and_a_silent_sink_costs_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(300);
    let slow = Arc::new(SlowToRefuse { delay: Duration::from_millis(500), silent: false, attempts: Mutex::default() });
    let sinks = Arc::new(Sinks::new(slow.clone(), Arc::new(LocalObjects::new(dir.path())), timeout));
    let mut output = sinks.output("demo", "job-1", spec());
    let started = Instant::now();
    let first = output.deliver(vec![item(1, false)]).await.unwrap_err();
    assert!(started.elapsed() < timeout + Duration::from_millis(200), "bounded: {:?}", started.elapsed());
    assert!(first.message.contains("did not acknowledge within"), "{first}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = output.deliver(vec![item(1, false)]).await.unwrap_err();
    assert!(second.message.contains("--elasticsearch-api-key"), "the slow answer, reported: {second}");
    assert!(*slow.attempts.lock().unwrap() >= 1);

    let silent = Arc::new(SlowToRefuse { delay: Duration::ZERO, silent: true, attempts: Mutex::default() });
    let sinks = Arc::new(Sinks::new(silent.clone(), Arc::new(LocalObjects::new(dir.path())), timeout));
    let mut output = sinks.output("demo", "job-2", spec());
    for _ in 0..3 {
        let started = Instant::now();
        let error = output.deliver(vec![item(1, false)]).await.unwrap_err();
        assert!(started.elapsed() < timeout + Duration::from_millis(200), "bounded: {:?}", started.elapsed());
        assert!(error.message.contains("did not acknowledge within"), "{error}");
    }
    assert_eq!(*silent.attempts.lock().unwrap(), 1, "the one attempt under way is waited for, not repeated");
}

/// Refuses documents whose id ends in "bad" until its mapping is "fixed".
#[derive(Default)]
struct Fixable {
    fixed: std::sync::atomic::AtomicBool,
    written: std::sync::Mutex<Vec<(String, Value)>>,
}

#[async_trait]
impl DocumentSink for Fixable {
    async fn prepare(&self, _: &IndexSpec) -> Result<(), SinkError> {
        Ok(())
    }
    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        let fixed = self.fixed.load(std::sync::atomic::Ordering::SeqCst);
        let mut outcome = WriteOutcome::default();
        for doc in docs {
            if doc.id.ends_with("bad") && !fixed {
                outcome.rejected.push(Rejection {
                    index: doc.index.to_string(),
                    id: doc.id.clone(),
                    status: 400,
                    reason: "mapper_parsing_exception".into(),
                    source: doc.source.clone(),
                });
            } else {
                outcome.written += 1;
                let source = serde_json::from_slice(&doc.source).unwrap();
                self.written.lock().unwrap().push((doc.id.clone(), source));
            }
        }
        Ok(outcome)
    }
    fn describe(&self) -> String {
        "fixable".into()
    }
}

#[tokio::test]
async fn dead_letters_are_listed_once_and_sent_again_once_the_index_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(Fixable::default());
    let sinks = Arc::new(Sinks::new(index.clone(), Arc::new(LocalObjects::new(dir.path())), Duration::from_secs(5)));
    let mut output = sinks.output("demo", "job-1", spec());
    let mut bad = item(3, false);
    bad.id = "job-1:bad".into();
    output.deliver(vec![item(1, false), bad]).await.unwrap();
    let letters = output.take_letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!((letter.id.as_str(), letter.status, letter.index.as_str()), ("job-1:bad", 400, "ingest-demo"));
    assert!(letter.preview.contains("\"n\":3"), "{}", letter.preview);
    assert!(dir.path().join(&letter.key).is_file(), "the whole letter is in the object store");
    assert!(output.take_letters().is_empty(), "taken once");

    // Still refused: a new letter; once the mapping is fixed: written, with
    // the same id and document.
    assert!(matches!(output.replay(&letter.key).await.unwrap(), Replayed::Refused(again) if again.id == "job-1:bad"));
    index.fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(output.replay(&letter.key).await.unwrap(), Replayed::Written);
    let written = index.written.lock().unwrap().clone();
    let (id, doc) = written.last().unwrap();
    assert_eq!((id.as_str(), &doc["n"], &doc["job_id"]), ("job-1:bad", &Value::from(3), &Value::from("job-1")));
    assert_eq!(output.replay("dead-letters/none/x.json").await.unwrap(), Replayed::Missing);
}
