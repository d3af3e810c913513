//! The key-value store everything shared lives in: etcd in a cluster, an
//! embedded store for `ingest standalone`. Both implement [`Store`] with etcd's
//! semantics (one global revision, MVCC create/mod revisions, leases, prefix
//! watches resumable from a revision) and pass one contract test suite
//! (`tests/contract.rs`).

mod embedded;
mod etcd;
pub mod keys;
mod watch_set;
mod wrap;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use embedded::{EmbeddedOptions, EmbeddedStore, create_private_dir};
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use watch_set::WatchSet;
pub use wrap::StoreWrapper;

/// A store revision. Every write transaction increments the global revision by
/// one; revision 0 means "does not exist" in compares.
pub type Revision = i64;

/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// One key with its value and MVCC metadata, as etcd reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to, 0 if none.
    pub lease: LeaseId,
}

impl std::fmt::Debug for KeyValue {
    // Values may hold secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A key range: `[start, end)`, where an empty `end` means the single key
/// `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: String,
    pub end: String,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<String>) -> Self {
        Self { start: key.into(), end: String::new() }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        Self { start, end }
    }

    /// Keys in `[start, end)`.
    pub fn between(start: impl Into<String>, end: impl Into<String>) -> Self {
        Self { start: start.into(), end: end.into() }
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &str) -> bool {
        if self.end.is_empty() { key == self.start } else { key >= self.start.as_str() && key < self.end.as_str() }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// "prefix end"). Keys in this project are ASCII.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    // An all-0x7f prefix has no end: "\0" is etcd's "to the end of the keyspace".
    "\0".to_string()
}

/// A range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// At most this many keys; 0 means no limit.
    pub limit: i64,
    /// Return keys only (values empty).
    pub keys_only: bool,
    /// Return only the count of keys in range (no kvs).
    pub count_only: bool,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        Self { range, limit: 0, keys_only: false, count_only: false }
    }

    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// The result of a range read, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Number of keys in range (ignoring `limit`).
    pub count: i64,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's create revision (0 when absent).
    CreateRevision(Revision),
    /// The key's mod revision (0 when absent).
    ModRevision(Revision),
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's lease (0 when absent or unleased).
    Lease(LeaseId),
    /// The key's value.
    Value(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction, on a single key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn create_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Self { key: key.into(), op, target: CompareTarget::CreateRevision(revision) }
    }

    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Self { key: key.into(), op, target: CompareTarget::ModRevision(revision) }
    }

    pub fn version(key: impl Into<String>, op: CompareOp, version: i64) -> Self {
        Self { key: key.into(), op, target: CompareTarget::Version(version) }
    }

    pub fn lease(key: impl Into<String>, op: CompareOp, lease: LeaseId) -> Self {
        Self { key: key.into(), op, target: CompareTarget::Lease(lease) }
    }

    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), op, target: CompareTarget::Value(value.into()) }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::create_revision(key, CompareOp::Equal, 0)
    }
}

/// One operation of a transaction.
#[derive(Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    Delete { range: KeyRange },
    Range(RangeRequest),
}

impl std::fmt::Debug for TxnOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put { key, value, lease } => {
                f.debug_struct("Put").field("key", key).field("value_len", &value.len()).field("lease", lease).finish()
            }
            Self::Delete { range } => f.debug_struct("Delete").field("range", range).finish(),
            Self::Range(r) => f.debug_tuple("Range").field(r).finish(),
        }
    }
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put { key: key.into(), value: value.into(), lease: 0 }
    }

    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        Self::Put { key: key.into(), value: value.into(), lease }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { range: KeyRange::key(key) }
    }

    pub fn delete_range(range: KeyRange) -> Self {
        Self::Delete { range }
    }

    pub fn get(key: impl Into<String>) -> Self {
        Self::Range(RangeRequest::new(KeyRange::key(key)))
    }
}

/// An etcd-style transaction: if every compare holds, run `success`, else
/// `failure`. Atomic; all writes of one transaction share one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one transaction operation, in the order of the ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    Put,
    /// Number of keys deleted.
    Delete(i64),
    Range(RangeResponse),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    pub responses: Vec<TxnOpResponse>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.mod_revision` is the revision
/// of the delete and `kv.value` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// The events of one or more revisions, in revision order. Events of one
/// revision are never split across batches. A batch without events is a
/// progress report (etcd sends one now and then to a quiet watch): every
/// change under the prefix up to `revision` was delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<WatchEvent>,
    /// The store revision this batch brings the watcher up to.
    pub revision: Revision,
}

impl WatchBatch {
    /// The revision a watch continues from after this batch: past its last
    /// event (a batch's header revision may run ahead of events still to
    /// come while etcd catches a watcher up), or past the revision of a
    /// progress report.
    pub fn resume_from(&self) -> Revision {
        self.events.last().map_or(self.revision, |e| e.kv.mod_revision) + 1
    }
}

/// A running prefix watch. Ends (yields `None`) when the store shuts down;
/// yields `Err(StoreError::Compacted)` if the requested history is gone.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchBatch, StoreError>>,
}

impl WatchStream {
    pub fn new(rx: mpsc::Receiver<Result<WatchBatch, StoreError>>) -> Self {
        Self { rx }
    }

    /// The next batch of events.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        self.rx.recv().await
    }

    /// Polls for the next batch (for reading several watches at once).
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<WatchBatch, StoreError>>> {
        self.rx.poll_recv(cx)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The requested revision is older than the oldest history kept.
    #[error("revision {requested} has been compacted (compact revision {compact_revision})")]
    Compacted { requested: Revision, compact_revision: Revision },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    /// The store could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request was malformed (a bug in the caller).
    #[error("invalid store request: {0}")]
    Invalid(String),
    #[error("store error: {0}")]
    Other(String),
}

/// The store used by control and workers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a range of keys at the current revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError>;

    /// Runs a transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Watches every key under `prefix`, starting with the changes of revision
    /// `start_revision` (inclusive). `start_revision == 0` means "from the
    /// next change". Fails with [`StoreError::Compacted`] (immediately or as
    /// the stream's first item) when that history is gone.
    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, StoreError>;

    /// Grants a lease that expires `ttl` after the last keepalive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; returns its TTL. Fails with
    /// [`StoreError::LeaseNotFound`] when it has expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Revokes a lease, deleting every key attached to it.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// The remaining time to live of a lease, `None` if it has expired.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError>;

    /// Discards history older than `revision`; watches from before it fail
    /// with [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self.range(RangeRequest::new(KeyRange::key(key))).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Writes one key unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        let response = self.txn(Txn::new().and_then([TxnOp::put_with_lease(key, value, lease)])).await?;
        Ok(response.revision)
    }

    /// Deletes one key unconditionally; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let response = self.txn(Txn::new().and_then([TxnOp::delete(key)])).await?;
        Ok(matches!(response.responses.first(), Some(TxnOpResponse::Delete(n)) if *n > 0))
    }

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let response = self.range(RangeRequest::new(KeyRange::key("\0")).count_only()).await?;
        Ok(response.revision)
    }
}

/// Keys read by the first request of [`scan_range`].
const SCAN_CHUNK: i64 = 500;
/// Most keys read per request by [`scan_range`].
const SCAN_CHUNK_MAX: i64 = 10_000;
/// Bytes a [`scan_range`] page aims at: later pages are sized from the
/// first ones' keys and values, well under the client's 128 MiB limit.
const SCAN_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Every key under `prefix`, read in pages.
pub async fn scan_prefix(store: &dyn Store, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
    scan_range(store, prefix.to_string(), prefix_end(prefix)).await
}

/// Every key in `[start, end)`, read in pages of [`SCAN_CHUNK`] keys, then
/// of as many as fit [`SCAN_PAGE_BYTES`] by the sizes seen (at most
/// [`SCAN_CHUNK_MAX`]). Few large pages matter: etcd 3.4 walks every key to
/// the end of a range to count it, whatever the limit, so each page costs the
/// whole rest of the range (100 000 job specs in pages of 500 cost 200 such
/// walks; in pages sized by bytes, 10).
pub async fn scan_range(store: &dyn Store, start: String, end: String) -> Result<Vec<KeyValue>, StoreError> {
    let mut out = Vec::new();
    let mut from = start;
    let mut limit = SCAN_CHUNK;
    loop {
        let page = store.range(RangeRequest::new(KeyRange::between(from.clone(), end.clone())).limit(limit)).await?;
        let more = page.more;
        if let Some(last) = page.kvs.last() {
            from = format!("{}\0", last.key);
        }
        let bytes: usize = page.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        if !page.kvs.is_empty() {
            let per_key = (bytes / page.kvs.len()).max(1);
            limit = ((SCAN_PAGE_BYTES / per_key) as i64).clamp(SCAN_CHUNK, SCAN_CHUNK_MAX);
        }
        out.extend(page.kvs);
        if !more {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The embedded store, recording each range's limit.
    struct Recording {
        inner: EmbeddedStore,
        limits: Mutex<Vec<i64>>,
    }

    #[async_trait::async_trait]
    impl StoreWrapper for Recording {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }

        async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
            self.limits.lock().expect("lock").push(request.limit);
            self.inner.range(request).await
        }
    }

    /// Every key of the range, in order, none outside it; the first page is
    /// small, the next ones sized by the bytes the first one had.
    #[tokio::test]
    async fn a_scan_reads_every_key_in_pages_sized_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Recording { inner: EmbeddedStore::open(dir.path()).expect("store"), limits: Mutex::default() };
        let keys: Vec<String> = (0..3000).map(|i| format!("/t/jobs/{i:05}")).collect();
        for chunk in keys.chunks(100) {
            let ops = chunk.iter().map(|k| TxnOp::put(k.clone(), vec![b'x'; 100]));
            store.inner.txn(Txn::new().and_then(ops)).await.expect("write");
        }
        store.inner.put("/t/jobt", b"outside".to_vec(), 0).await.expect("write");
        store.inner.put("/t/job", b"outside".to_vec(), 0).await.expect("write");
        let scanned = scan_prefix(&store, "/t/jobs/").await.expect("scan");
        let scanned: Vec<&str> = scanned.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(scanned, keys.iter().map(String::as_str).collect::<Vec<_>>());
        let limits = store.limits.lock().expect("lock").clone();
        assert_eq!(limits, [500, 10_000], "a small first page, then as many as fit 4 MiB (at most 10 000)");
    }
}
