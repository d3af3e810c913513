//! What a job calls to hand over what it found: items in, acknowledgement
//! out. Raw payloads are archived first (their keys go into the documents),
//! then the documents are indexed; rejected documents become dead letters.
//! `deliver` returns only when all of that is durable, so the job may then
//! advance its checkpoint; on error nothing is acknowledged and the job
//! delivers the same items again later (same ids, same keys: no duplicates).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::objects::{content_key, dead_letter_key, gzip, sha256_hex};
use crate::retry::Backoff;
use crate::{Document, DocumentSink, IndexSpec, MAX_ID_BYTES, Object, ObjectSink, Rejection, SinkError};

/// Objects stored at once by one delivery.
const OBJECT_CONCURRENCY: usize = 8;

/// The sinks of a worker, shared by all its jobs.
pub struct Sinks {
    documents: Arc<dyn DocumentSink>,
    objects: Arc<dyn ObjectSink>,
    /// How long one delivery may wait for the sinks before the run fails
    /// (and is retried later).
    timeout: Duration,
}

/// One upstream item, mapped by its job type.
#[derive(Clone, Debug, Default)]
pub struct Item {
    /// Stable id of the upstream item (tweet id, feed GUID, ...): the
    /// document's `_id`.
    pub id: String,
    pub doc: Map<String, Value>,
    /// The upstream payload as received, archived gzipped; its key is put
    /// into the document as `raw_key`.
    pub raw: Option<Bytes>,
}

/// What a delivery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub written: u64,
    /// Refused by the index and kept as dead letters.
    pub rejected: u64,
    pub first_rejection: Option<String>,
    pub objects: u64,
}

impl Sinks {
    pub fn new(documents: Arc<dyn DocumentSink>, objects: Arc<dyn ObjectSink>, timeout: Duration) -> Self {
        Self { documents, objects, timeout }
    }

    /// Files only: `<dir>/documents/<index>.jsonl` and `<dir>/objects/<key>`.
    pub fn local(dir: &std::path::Path, timeout: Duration) -> Self {
        Self::new(
            Arc::new(crate::local::LocalDocuments::new(dir.join("documents"))),
            Arc::new(crate::local::LocalObjects::new(dir.join("objects"))),
            timeout,
        )
    }

    /// For logs.
    pub fn describe(&self) -> String {
        format!("documents: {}; objects: {}", self.documents.describe(), self.objects.describe())
    }

    /// Checks the document sink at start: logs what answers, and fails only
    /// when it can never work (e.g. a server version too old). A sink that
    /// does not answer (yet) or refuses the credentials is logged: jobs wait
    /// for it and report it as their error.
    pub async fn check_at_start(&self, timeout: Duration) -> Result<(), SinkError> {
        match tokio::time::timeout(timeout, self.documents.check()).await {
            Ok(Ok(what)) => {
                tracing::info!(documents = %what, "document sink ready");
                Ok(())
            }
            Ok(Err(error)) if !error.transient => Err(error),
            Ok(Err(error)) => {
                tracing::error!(%error, "document sink not usable yet; jobs will retry");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(documents = %self.documents.describe(), ?timeout, "document sink did not answer at start; jobs will retry");
                Ok(())
            }
        }
    }

    /// The output of one job.
    pub fn output(self: &Arc<Self>, job_type: &str, job_id: &str, index: IndexSpec) -> JobOutput {
        JobOutput {
            sinks: self.clone(),
            job_type: job_type.to_string(),
            job_id: job_id.to_string(),
            index_name: index.name.as_str().into(),
            index,
            prepared: false,
            preparing: None,
            letters: Vec::new(),
        }
    }
}

/// A document the index refused, kept as a dead letter: where the whole
/// letter is (`key`, in the object store) and enough to show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The document's id in the index.
    pub id: String,
    pub index: String,
    pub status: u16,
    pub reason: String,
    pub key: String,
    pub time: DateTime<Utc>,
    /// The document's start (at most [`LETTER_PREVIEW_BYTES`]), for display.
    pub preview: String,
    /// The document's size in bytes.
    pub bytes: usize,
}

/// How much of a refused document a dead letter's record shows.
pub const LETTER_PREVIEW_BYTES: usize = 16 * 1024;

/// What sending a dead letter again did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// The index took it.
    Written,
    /// Refused again: the new letter (its reason may differ).
    Refused(DeadLetter),
    /// The letter is no longer in the object store.
    Missing,
}

/// An index's mapping: the job type's properties and the fields every
/// document carries. `dynamic: false` keeps unexpected fields in `_source`
/// without letting them change the mapping (no mapping explosions).
pub fn index_mapping(properties: &Value) -> Value {
    let mut all = properties.as_object().cloned().unwrap_or_default();
    for field in ["job_id", "job_type", "raw_key"] {
        all.insert(field.to_string(), json!({"type": "keyword"}));
    }
    json!({"dynamic": false, "properties": all})
}

/// Where one job's items go.
pub struct JobOutput {
    sinks: Arc<Sinks>,
    job_type: String,
    job_id: String,
    index: IndexSpec,
    index_name: Arc<str>,
    prepared: bool,
    /// A preparation still under way when the last call's time ran out.
    preparing: Option<tokio::task::JoinHandle<Result<(), SinkError>>>,
    /// Dead letters of the deliveries since `take_letters` (in memory only
    /// until the job's runner lists them).
    letters: Vec<DeadLetter>,
}

impl JobOutput {
    pub fn index(&self) -> &str {
        &self.index.name
    }

    /// Archives, indexes and acknowledges the items. Errors mean nothing
    /// may be considered delivered.
    pub async fn deliver(&mut self, items: Vec<Item>) -> Result<Delivered, SinkError> {
        let deadline = Instant::now() + self.sinks.timeout;
        self.prepare(deadline).await?;
        let now = Utc::now();
        let mut delivered = Delivered::default();
        let mut objects = Vec::new();
        let mut docs = Vec::with_capacity(items.len());
        for item in items {
            let mut doc = item.doc;
            if let Some(raw) = item.raw {
                let key = content_key(&self.job_type, &self.job_id, &raw, "json.gz");
                doc.insert("raw_key".to_string(), Value::String(key.clone()));
                objects.push(Object { key, body: gzip(&raw).into(), content_type: "application/gzip" });
            }
            doc.insert("job_id".to_string(), Value::String(self.job_id.clone()));
            doc.insert("job_type".to_string(), Value::String(self.job_type.clone()));
            let source = serde_json::to_vec(&doc).map_err(|e| SinkError::permanent("delivery", e.to_string()))?;
            let id = document_id(&item.id, &source);
            docs.push(Document { index: self.index_name.clone(), id, source: source.into() });
        }
        delivered.objects = objects.len() as u64;
        self.put_all(objects, deadline).await?;
        let documents = self.sinks.documents.write(docs);
        let outcome = match tokio::time::timeout_at(deadline, documents).await {
            Ok(outcome) => outcome?,
            Err(_) => return Err(self.timed_out()),
        };
        delivered.written = outcome.written;
        delivered.rejected = outcome.rejected.len() as u64;
        delivered.first_rejection = outcome.rejected.first().map(|r| format!("document {}: {}", r.id, r.reason));
        let letters: Vec<(Object, DeadLetter)> = outcome.rejected.iter().map(|r| self.dead_letter(r, now)).collect();
        let (objects, kept): (Vec<Object>, Vec<DeadLetter>) = letters.into_iter().unzip();
        self.put_all(objects, deadline).await?;
        self.letters.extend(kept);
        if delivered.rejected > 0 {
            tracing::warn!(
                job = %self.job_id, index = %self.index.name, rejected = delivered.rejected,
                first = delivered.first_rejection.as_deref().unwrap_or_default(),
                "documents refused by the index; kept as dead letters"
            );
        }
        Ok(delivered)
    }

    /// Stores a media object (an image, a page) and returns its key.
    pub async fn put_media(&mut self, body: Bytes, ext: &str, content_type: &'static str) -> Result<String, SinkError> {
        let key = content_key(&self.job_type, &self.job_id, &body, ext);
        self.put_object(Object { key, body, content_type }).await
    }

    /// Archives a raw payload shared by several items (e.g. a whole feed)
    /// gzipped, keyed by the SHA-256 of the payload; returns its key.
    pub async fn put_raw(&mut self, payload: &[u8], ext: &str) -> Result<String, SinkError> {
        let key = content_key(&self.job_type, &self.job_id, payload, &format!("{ext}.gz"));
        self.put_object(Object { key, body: gzip(payload).into(), content_type: "application/gzip" }).await
    }

    async fn put_object(&mut self, object: Object) -> Result<String, SinkError> {
        let deadline = Instant::now() + self.sinks.timeout;
        self.prepare(deadline).await?;
        put_with_retry(self.sinks.objects.as_ref(), &object, deadline).await?;
        Ok(object.key)
    }

    /// Makes sure the bucket and the index (with its mapping) exist, within
    /// `deadline`: a sink that does not answer cannot hold the run past
    /// --sink-timeout. An attempt still under way then goes on in the
    /// background and the next call takes its answer up (a slow first answer,
    /// e.g. a 401 from a cold Elasticsearch, is reported, not lost behind
    /// "no answer"); when an earlier attempt failed, its error is reported
    /// rather than the silence.
    async fn prepare(&mut self, deadline: Instant) -> Result<(), SinkError> {
        if self.prepared {
            return Ok(());
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut last = None;
        loop {
            let mut attempt = self.preparing.take().unwrap_or_else(|| {
                let (sinks, index) = (self.sinks.clone(), self.index.clone());
                tokio::spawn(async move {
                    sinks.objects.prepare().await?;
                    sinks.documents.prepare(&index).await
                })
            });
            let outcome = match tokio::time::timeout_at(deadline, &mut attempt).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(ended)) => Err(SinkError::transient("delivery", format!("preparing the sinks ended: {ended}"))),
                Err(_) => {
                    self.preparing = Some(attempt);
                    return Err(last.unwrap_or_else(|| self.timed_out()));
                }
            };
            match outcome {
                Ok(()) => break,
                Err(e) if e.transient && Instant::now() + Duration::from_millis(200) < deadline => {
                    let wait = backoff.next(None).min(deadline.saturating_duration_since(Instant::now()));
                    tracing::debug!(job = %self.job_id, error = %e, retry_in = ?wait, "sinks not ready");
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.prepared = true;
        Ok(())
    }

    async fn put_all(&self, objects: Vec<Object>, deadline: Instant) -> Result<(), SinkError> {
        let puts = objects.into_iter().map(|object| {
            let sink = self.sinks.objects.clone();
            async move { put_with_retry(sink.as_ref(), &object, deadline).await }
        });
        futures::stream::iter(puts).buffer_unordered(OBJECT_CONCURRENCY).try_collect::<Vec<()>>().await.map(drop)
    }

    /// The dead letters of the deliveries since the last call, for the
    /// job's own list of them.
    pub fn take_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.letters)
    }

    /// Sends the document of the dead letter under `key` to the index again
    /// (e.g. after its mapping was fixed), with its id: a document written
    /// since under that id is replaced, never duplicated.
    pub async fn replay(&mut self, key: &str) -> Result<Replayed, SinkError> {
        let deadline = Instant::now() + self.sinks.timeout;
        self.prepare(deadline).await?;
        let Some(body) = self.sinks.objects.get(key).await? else { return Ok(Replayed::Missing) };
        let letter: Value = serde_json::from_slice(&body)
            .map_err(|e| SinkError::permanent("delivery", format!("dead letter {key} is not JSON: {e}")))?;
        let (Some(id), Some(source)) = (letter["id"].as_str(), letter.get("source").filter(|s| s.is_object())) else {
            return Err(SinkError::permanent("delivery", format!("dead letter {key} holds no document")));
        };
        let source = serde_json::to_vec(source).map_err(|e| SinkError::permanent("delivery", e.to_string()))?;
        let doc = Document { index: self.index_name.clone(), id: id.to_string(), source: source.into() };
        let outcome = match tokio::time::timeout_at(deadline, self.sinks.documents.write(vec![doc])).await {
            Ok(outcome) => outcome?,
            Err(_) => return Err(self.timed_out()),
        };
        match outcome.rejected.first() {
            None => Ok(Replayed::Written),
            Some(rejection) => {
                let (object, letter) = self.dead_letter(rejection, Utc::now());
                self.put_all(vec![object], deadline).await?;
                Ok(Replayed::Refused(letter))
            }
        }
    }

    fn dead_letter(&self, rejection: &Rejection, now: DateTime<Utc>) -> (Object, DeadLetter) {
        let source: Value = serde_json::from_slice(&rejection.source).unwrap_or(Value::Null);
        let letter = json!({
            "index": rejection.index,
            "id": rejection.id,
            "status": rejection.status,
            "reason": rejection.reason,
            "job_id": self.job_id,
            "job_type": self.job_type,
            "rejected_at": now.to_rfc3339(),
            "source": source,
        });
        let key = dead_letter_key(&rejection.index, &rejection.id, now);
        let mut cut = LETTER_PREVIEW_BYTES.min(rejection.source.len());
        while cut > 0 && std::str::from_utf8(&rejection.source[..cut]).is_err() {
            cut -= 1;
        }
        let kept = DeadLetter {
            id: rejection.id.clone(),
            index: rejection.index.clone(),
            status: rejection.status,
            reason: rejection.reason.clone(),
            key: key.clone(),
            time: now,
            preview: String::from_utf8_lossy(&rejection.source[..cut]).into_owned(),
            bytes: rejection.source.len(),
        };
        (Object { key, body: letter.to_string().into(), content_type: "application/json" }, kept)
    }

    fn timed_out(&self) -> SinkError {
        let why = self.sinks.documents.trouble().unwrap_or_else(|| "no answer".to_string());
        SinkError::transient(
            "delivery",
            format!(
                "{} did not acknowledge within {:?} ({why}); the items will be delivered again",
                self.sinks.documents.describe(),
                self.sinks.timeout
            ),
        )
    }
}

/// Puts an object, retrying transient failures until `deadline`.
async fn put_with_retry(sink: &dyn ObjectSink, object: &Object, deadline: Instant) -> Result<(), SinkError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match sink.put(object).await {
            Ok(()) => return Ok(()),
            Err(e) if !e.transient => return Err(e),
            Err(e) => {
                let wait = backoff.next(None);
                if Instant::now() + wait >= deadline {
                    return Err(SinkError::transient(
                        e.sink,
                        format!(
                            "{} (gave up after {} attempts; the items will be delivered again)",
                            e.message,
                            backoff.attempts()
                        ),
                    ));
                }
                if backoff.attempts() == 1 {
                    tracing::warn!(sink = %sink.describe(), error = %e.message, "object not stored; retrying");
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The `_id`: the upstream id, or its SHA-256 when too long for an `_id`
/// (or the source's when there is none).
fn document_id(id: &str, source: &[u8]) -> String {
    match id.len() {
        0 => sha256_hex(source),
        n if n > MAX_ID_BYTES => sha256_hex(id.as_bytes()),
        _ => id.to_string(),
    }
}

#[cfg(test)]
mod tests;
