//! One bulk queue per worker, shared by all its jobs: documents from many
//! jobs are sent together in `_bulk` requests bounded by bytes, count and
//! time, with a few requests in flight. Failed requests and refused items
//! are retried with backoff until they succeed or their writer gives up;
//! the queue is bounded in bytes, so writers wait (and their jobs stop
//! fetching) while the index is away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bulk::{self, ItemResult};
use crate::retry::Backoff;
use crate::{Document, Rejection, SinkError, WriteOutcome};

/// Sends one `_bulk` request.
#[async_trait]
pub trait BulkTransport: Send + Sync + 'static {
    /// Sends `body` (NDJSON for `count` documents); the result of each
    /// document, in order.
    async fn send(&self, body: Bytes, count: usize) -> Result<Vec<ItemResult>, TransportError>;
}

/// Why a whole `_bulk` request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// Try again later: no connection, 429, 5xx, timeouts.
    Retry { message: String, retry_after: Option<Duration> },
    /// 413: the request is too large; it is split in two.
    TooLarge,
    /// Refused for good (e.g. 400): its documents are rejected.
    Rejected { status: u16, message: String },
}

/// Bounds of the bulk queue and its requests.
#[derive(Clone, Debug)]
pub struct BulkConfig {
    /// Most bytes in one request.
    pub max_bytes: usize,
    /// Most documents in one request.
    pub max_docs: usize,
    /// How long a document may wait for others to fill its request while a
    /// request slot is free.
    pub linger: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Most bytes waiting in the queue; writers wait beyond it.
    pub buffer_bytes: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024,
            max_docs: 5_000,
            linger: Duration::from_millis(5),
            concurrency: 2,
            buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The queue's handle; the task stops when every handle is dropped and the
/// queue has drained.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Vec<Pending>>,
    buffer: Arc<Semaphore>,
    buffer_kib: u32,
    trouble: Arc<Mutex<Option<String>>>,
}

impl Batcher {
    pub fn spawn(transport: Arc<dyn BulkTransport>, config: BulkConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let trouble = Arc::new(Mutex::new(None));
        let buffer_kib = u32::try_from(config.buffer_bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        tokio::spawn(run(rx, transport, config, trouble.clone()));
        Self { tx, buffer: Arc::new(Semaphore::new(buffer_kib as usize)), buffer_kib, trouble }
    }

    /// Queues the documents and waits until each is written or rejected.
    /// Dropping the future abandons those not sent yet.
    pub async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        if docs.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let bytes: usize = docs.iter().map(bulk::encoded_len).sum();
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.buffer_kib);
        let _room = self.buffer.acquire_many(kib).await.map_err(|_| closed())?;
        let (done, outcome) = oneshot::channel();
        let ticket = Arc::new(Ticket::new(docs.len(), done));
        let pending = docs.into_iter().map(|doc| Pending { doc, ticket: ticket.clone() }).collect();
        self.tx.send(pending).map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())
    }

    /// The last failure while requests keep failing; `None` once one succeeds.
    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().ok().and_then(|t| t.clone())
    }
}

fn closed() -> SinkError {
    SinkError::permanent("bulk", "the bulk queue has stopped")
}

/// A document on its way, and the write it belongs to.
struct Pending {
    doc: Document,
    ticket: Arc<Ticket>,
}

/// One `write` call: resolved when its last document is settled.
struct Ticket {
    remaining: AtomicUsize,
    state: Mutex<TicketState>,
}

struct TicketState {
    outcome: WriteOutcome,
    done: Option<oneshot::Sender<WriteOutcome>>,
}

impl Ticket {
    fn new(count: usize, done: oneshot::Sender<WriteOutcome>) -> Self {
        Self {
            remaining: AtomicUsize::new(count),
            state: Mutex::new(TicketState { outcome: WriteOutcome::default(), done: Some(done) }),
        }
    }

    /// Whether the writer has stopped waiting.
    fn abandoned(&self) -> bool {
        self.state.lock().map_or(true, |s| s.done.as_ref().is_none_or(|d| d.is_closed()))
    }

    /// Settles one document: written, rejected, or (`None`, `false`) dropped
    /// because its writer left.
    fn settle(&self, written: bool, rejection: Option<Rejection>) {
        let Ok(mut state) = self.state.lock() else { return };
        if written {
            state.outcome.written += 1;
        }
        state.outcome.rejected.extend(rejection);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(done) = state.done.take()
        {
            let _ = done.send(std::mem::take(&mut state.outcome));
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Vec<Pending>>,
    transport: Arc<dyn BulkTransport>,
    config: BulkConfig,
    trouble: Arc<Mutex<Option<String>>>,
) {
    let mut queue: VecDeque<(Instant, Pending)> = VecDeque::new();
    let mut queued_bytes = 0usize;
    let mut in_flight = JoinSet::new();
    let mut open = true;
    loop {
        while let Ok(docs) = rx.try_recv() {
            let now = Instant::now();
            for pending in docs {
                queued_bytes += bulk::encoded_len(&pending.doc);
                queue.push_back((now, pending));
            }
        }
        let slot_free = in_flight.len() < config.concurrency.max(1);
        let full = queued_bytes >= config.max_bytes || queue.len() >= config.max_docs;
        let due = queue.front().map(|(at, _)| *at + config.linger);
        if slot_free && (full || due.is_some_and(|due| due <= Instant::now()) || (!open && !queue.is_empty())) {
            let batch = take_batch(&mut queue, &mut queued_bytes, &config);
            in_flight.spawn(send_batch(transport.clone(), batch, trouble.clone()));
            continue;
        }
        if !open && queue.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            docs = rx.recv(), if open => match docs {
                Some(docs) => {
                    let now = Instant::now();
                    for pending in docs {
                        queued_bytes += bulk::encoded_len(&pending.doc);
                        queue.push_back((now, pending));
                    }
                }
                None => open = false,
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = sleep_until(due), if slot_free && due.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// The oldest documents, up to the request bounds (at least one).
fn take_batch(queue: &mut VecDeque<(Instant, Pending)>, queued_bytes: &mut usize, config: &BulkConfig) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some((_, next)) = queue.front() {
        let len = bulk::encoded_len(&next.doc);
        if !batch.is_empty() && (bytes + len > config.max_bytes || batch.len() >= config.max_docs) {
            break;
        }
        bytes += len;
        *queued_bytes -= len;
        if let Some((_, pending)) = queue.pop_front() {
            batch.push(pending);
        }
    }
    batch
}

/// Sends one batch until every document in it is settled.
/// Counts the documents of a `_bulk` answer by result.
fn count_documents(results: &[ItemResult]) {
    let (mut written, mut rejected, mut retried) = (0, 0, 0);
    for result in results {
        match result {
            ItemResult::Written => written += 1,
            ItemResult::Rejected { .. } => rejected += 1,
            ItemResult::Retry(_) => retried += 1,
        }
    }
    for (result, n) in [("written", written), ("rejected", rejected), ("retried", retried)] {
        if n > 0 {
            metrics::counter!(ingest_runtime::metrics::BULK_DOCUMENTS, "result" => result).increment(n);
        }
    }
}

async fn send_batch(transport: Arc<dyn BulkTransport>, batch: Vec<Pending>, trouble: Arc<Mutex<Option<String>>>) {
    let mut work = vec![batch];
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while let Some(mut pending) = work.pop() {
        loop {
            pending.retain(|p| {
                let keep = !p.ticket.abandoned();
                if !keep {
                    p.ticket.settle(false, None);
                }
                keep
            });
            if pending.is_empty() {
                break;
            }
            let mut body = Vec::with_capacity(pending.iter().map(|p| bulk::encoded_len(&p.doc)).sum());
            for p in &pending {
                bulk::encode(&p.doc, &mut body);
            }
            let started = std::time::Instant::now();
            let sent = transport.send(body.into(), pending.len()).await;
            let outcome = match &sent {
                Ok(results) if results.iter().any(|r| matches!(r, ItemResult::Retry(_))) => "retry",
                Ok(_) => "ok",
                Err(TransportError::Retry { .. }) => "retry",
                Err(_) => "error",
            };
            metrics::histogram!(ingest_runtime::metrics::BULK_SECONDS, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            let wait = match sent {
                Ok(results) => {
                    set_trouble(&trouble, None);
                    count_documents(&results);
                    let mut again = Vec::new();
                    let mut last = String::new();
                    for (p, result) in pending.into_iter().zip(results) {
                        match result {
                            ItemResult::Written => p.ticket.settle(true, None),
                            ItemResult::Rejected { status, reason } => {
                                let rejection = rejection(&p.doc, status, reason);
                                p.ticket.settle(false, Some(rejection));
                            }
                            ItemResult::Retry(reason) => {
                                last = reason;
                                again.push(p);
                            }
                        }
                    }
                    if again.is_empty() {
                        backoff.reset();
                        break;
                    }
                    tracing::debug!(documents = again.len(), reason = %last, "bulk items refused for now; retrying");
                    pending = again;
                    backoff.next(None)
                }
                Err(TransportError::Retry { message, retry_after }) => {
                    let wait = backoff.next(retry_after);
                    if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
                        tracing::warn!(
                            error = %message, documents = pending.len(), attempt = backoff.attempts(), retry_in = ?wait,
                            "bulk request failed; retrying"
                        );
                    }
                    set_trouble(&trouble, Some(message));
                    wait
                }
                Err(TransportError::TooLarge) if pending.len() > 1 => {
                    let second = pending.split_off(pending.len() / 2);
                    work.push(second);
                    continue;
                }
                Err(TransportError::TooLarge) => {
                    let p = pending.remove(0);
                    p.ticket.settle(false, Some(rejection(&p.doc, 413, "413: larger than the index accepts".into())));
                    break;
                }
                Err(TransportError::Rejected { status, message }) => {
                    for p in pending.drain(..) {
                        p.ticket.settle(false, Some(rejection(&p.doc, status, message.clone())));
                    }
                    break;
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn rejection(doc: &Document, status: u16, reason: String) -> Rejection {
    Rejection { index: doc.index.to_string(), id: doc.id.clone(), status, reason, source: doc.source.clone() }
}

fn set_trouble(trouble: &Mutex<Option<String>>, value: Option<String>) {
    if let Ok(mut t) = trouble.lock() {
        *t = value;
    }
}

#[cfg(test)]
mod tests;
