//! Dry runs (`PreviewJob`): a worker asked under `previews/<id>` runs the
//! job once, exactly as a run would (same build, fetcher, mapping and
//! delivery code), but into sinks that only look: nothing is indexed,
//! archived, checkpointed or counted. The answer goes back into the record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ingest_model::{CheckpointRecord, PreviewDocument, PreviewRecord, PreviewResult, SecretsRecord, now_millis};
use ingest_sinks::{Document, DocumentSink, IndexSpec, Object, ObjectSink, SinkError, Sinks, WriteOutcome};
use ingest_store::{Compare, CompareOp, KeyValue, Txn, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::fence::Fence;
use crate::fetch::FencedFetcher;
use crate::jobs::RunContext;
use crate::redact::Redactor;
use crate::runner::{RunnerContext, build_job};

/// The most a dry run may take, whatever its deadline says.
const MAX_PREVIEW: Duration = Duration::from_secs(60);
/// Documents kept in the answer are cut past this many bytes of JSON (the
/// record must stay well under etcd's request limit).
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Whether `kv` is a dry run this worker should answer now.
pub fn is_mine(kv: &KeyValue, worker: &str) -> Option<PreviewRecord> {
    let record: PreviewRecord = serde_json::from_slice(&kv.value).ok()?;
    (record.worker == worker && record.result.is_none()).then_some(record)
}

/// Runs the dry run `record` (read from `kv`) and writes the answer back,
/// if the record is still the one read.
pub async fn answer(ctx: Arc<RunnerContext>, kv: KeyValue, mut record: PreviewRecord) {
    let preview_id = ctx.keys.parse(&kv.key).map(|(_, id)| id.to_string()).unwrap_or_default();
    tracing::info!(preview = %preview_id, job = %record.job_id, job_type = %record.job_type, "dry run");
    let result = run(&ctx, &preview_id, &record).await;
    record.result = Some(result);
    let Ok(value) = serde_json::to_vec(&record) else { return };
    let txn = Txn::new()
        .when([Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision)])
        .and_then([TxnOp::put_with_lease(kv.key.clone(), value, kv.lease)]);
    match ctx.store.txn(txn).await {
        Ok(response) if response.succeeded => {}
        Ok(_) => tracing::info!(preview = %preview_id, "dry run no longer wanted"),
        Err(error) => tracing::warn!(preview = %preview_id, %error, "dry run answer not written"),
    }
}

async fn run(ctx: &RunnerContext, preview_id: &str, record: &PreviewRecord) -> PreviewResult {
    let started = now_millis();
    let failed =
        |error: String| PreviewResult { error: Some(error), duration_ms: elapsed(started), ..Default::default() };
    let Some((spec, entry)) = ctx.types.get(&record.job_type) else {
        return failed(format!("this worker does not run job type '{}'", record.job_type));
    };
    let secrets = match secrets(ctx, preview_id, record).await {
        Ok(secrets) => secrets,
        Err(error) => return failed(error),
    };
    let redactor = Redactor::new(secrets.values.values().map(String::as_str));
    let (mut job, index) = match build_job((spec, entry), &record.job_id, &record.params, &secrets) {
        Ok(built) => built,
        Err(error) => return failed(redactor.apply(&error)),
    };
    // The cursor it would continue from: the job's checkpoint, if it has one.
    let mut cursor = serde_json::Value::Null;
    if record.existing {
        match ctx.store.get(&ctx.keys.state(&record.job_id)).await {
            Ok(Some(kv)) => match CheckpointRecord::decode(&kv.value) {
                Ok(checkpoint) => match entry.cursor.read(&checkpoint.cursor, checkpoint.cursor_version) {
                    Ok(read) => cursor = read,
                    Err(error) => return failed(error.message),
                },
                Err(error) => return failed(error),
            },
            Ok(None) => {}
            Err(error) => return failed(format!("reading the job's checkpoint: {error}")),
        }
    }
    let capture = Arc::new(Capture::new(record.max_documents as usize));
    let sinks = Arc::new(Sinks::new(capture.clone(), capture.clone(), Duration::from_secs(30)));
    let mut output = sinks.output(&record.job_type, &record.job_id, index);
    let Some(lease) = *ctx.lease_rx.borrow() else { return failed("this worker has no lease".to_string()) };
    let fetcher = FencedFetcher::new(ctx.fetcher.clone(), Fence::new(lease.lease, ctx.lease_rx.clone()));
    let cancel = CancellationToken::new();
    let limit = Duration::from_millis(record.deadline.saturating_sub(now_millis()).max(0) as u64).min(MAX_PREVIEW);
    let mut run_ctx = RunContext { cursor: &mut cursor, cancel: &cancel, output: &mut output, fetch: &fetcher };
    let outcome = tokio::time::timeout(limit, job.run(&mut run_ctx)).await;
    cancel.cancel();
    let mut result = capture.result();
    result.duration_ms = elapsed(started);
    match outcome {
        Ok(Ok(outcome)) => {
            result.items_fetched = outcome.report.items_fetched;
            result.items_filtered = outcome.report.items_filtered;
            result.bytes_fetched = outcome.report.bytes_fetched;
            result.warnings.extend(outcome.warning.map(|w| redactor.apply(&w)));
            result.cursor = cursor;
        }
        Ok(Err(error)) => {
            result.items_fetched = error.report.items_fetched;
            result.bytes_fetched = error.report.bytes_fetched;
            result.error = Some(redactor.apply(&error.message));
        }
        Err(_) => result.error = Some(format!("the dry run took longer than {} s and was stopped", limit.as_secs())),
    }
    result
}

/// The secrets the job runs with: the existing job's, and those given with
/// the request over them.
async fn secrets(ctx: &RunnerContext, preview_id: &str, record: &PreviewRecord) -> Result<SecretsRecord, String> {
    let keys = ctx.secrets_keys.as_deref();
    let mut secrets = SecretsRecord::default();
    if record.existing {
        let kv = ctx.store.get(&ctx.keys.secret(&record.job_id)).await.map_err(|e| e.to_string())?;
        if let Some(kv) = kv {
            secrets = ingest_runtime::secrets_key::open(keys, &record.job_id, &kv.value)?;
        }
    }
    if !record.secrets.is_empty() {
        let given = ingest_runtime::secrets_key::open(keys, preview_id, &record.secrets)?;
        secrets.values.extend(given.values);
    }
    Ok(secrets)
}

fn elapsed(started: i64) -> u64 {
    now_millis().saturating_sub(started).max(0) as u64
}

/// Sinks that keep the first documents and count the rest, and count
/// objects without storing them.
struct Capture {
    max_documents: usize,
    seen: Mutex<PreviewResult>,
    bytes: Mutex<usize>,
}

impl Capture {
    fn new(max_documents: usize) -> Self {
        Self { max_documents, seen: Mutex::default(), bytes: Mutex::default() }
    }

    fn result(&self) -> PreviewResult {
        self.seen.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl DocumentSink for Capture {
    async fn prepare(&self, _index: &IndexSpec) -> Result<(), SinkError> {
        Ok(())
    }

    async fn write(&self, docs: Vec<Document>) -> Result<ingest_sinks::WriteOutcome, SinkError> {
        let written = docs.len() as u64;
        if let (Ok(mut seen), Ok(mut bytes)) = (self.seen.lock(), self.bytes.lock()) {
            seen.documents_total += written;
            for doc in docs {
                if seen.documents.len() >= self.max_documents {
                    break;
                }
                if *bytes + doc.source.len() > MAX_DOCUMENT_BYTES {
                    seen.truncated = true;
                    break;
                }
                *bytes += doc.source.len();
                let document = serde_json::from_slice(&doc.source).unwrap_or_default();
                seen.documents.push(PreviewDocument { id: doc.id, index: doc.index.to_string(), document });
            }
        }
        Ok(WriteOutcome { written, rejected: Vec::new() })
    }

    fn describe(&self) -> String {
        "dry run (nothing written)".to_string()
    }
}

#[async_trait]
impl ObjectSink for Capture {
    async fn prepare(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn put(&self, object: &Object) -> Result<(), SinkError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.objects += 1;
            seen.object_bytes += object.body.len() as u64;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "dry run (nothing stored)".to_string()
    }
}
