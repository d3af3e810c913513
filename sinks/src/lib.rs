//! Where ingested items go (DESIGN.md §5): documents to Elasticsearch or
//! OpenSearch through `_bulk` (or to JSON Lines files), raw payloads and media
//! to S3-compatible storage (or to a directory tree).
//!
//! Code map: `delivery` (what a job calls: items in, acknowledgement out),
//! `batcher` (one bulk queue per worker: batching, retries, backpressure),
//! `bulk` (NDJSON and `_bulk` responses), `elasticsearch` and `s3` (the
//! adapters), `local` (files for `ingest standalone`), `objects` (keys,
//! gzip), `retry` (backoff), `config` (flags).
//!
//! Delivery is at least once and idempotent: every document has a
//! deterministic `_id` and every object a content address, so writing twice
//! leaves one copy. A job's checkpoint advances only after `deliver` returns.

pub mod batcher;
pub mod bulk;
pub mod config;
pub mod delivery;
pub mod elasticsearch;
pub mod local;
pub mod objects;
pub mod retry;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

pub use config::SinkArgs;
pub use delivery::{Delivered, Item, JobOutput, Sinks};

/// Longest `_id` Elasticsearch accepts, in bytes; longer ids are hashed.
pub const MAX_ID_BYTES: usize = 512;

/// One document to index: its index, deterministic id and JSON source.
#[derive(Clone, Debug)]
pub struct Document {
    pub index: Arc<str>,
    pub id: String,
    /// The document as compact JSON (one line).
    pub source: Bytes,
}

/// An index and the mapping of the job type that writes to it.
#[derive(Clone, Debug)]
pub struct IndexSpec {
    pub name: String,
    pub job_type: String,
    /// `{"properties": {...}, ...}`: an explicit mapping.
    pub mapping: Arc<Value>,
}

/// A document the index refused for good (e.g. a mapping conflict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub index: String,
    pub id: String,
    pub status: u16,
    pub reason: String,
    pub source: Bytes,
}

/// What became of a `write`: every document is either written or rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: u64,
    pub rejected: Vec<Rejection>,
}

/// An object to store under a key (see `objects` for how keys are made).
#[derive(Clone, Debug)]
pub struct Object {
    pub key: String,
    pub body: Bytes,
    pub content_type: &'static str,
}

/// A sink failed; `transient` errors are retried.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
    pub transient: bool,
}

impl SinkError {
    pub fn transient(sink: &'static str, message: impl Into<String>) -> Self {
        Self { sink, message: message.into(), transient: true }
    }

    pub fn permanent(sink: &'static str, message: impl Into<String>) -> Self {
        Self { sink, message: message.into(), transient: false }
    }
}

/// Where documents go.
#[async_trait]
pub trait DocumentSink: Send + Sync {
    /// Reaches the server and says what it is ("Elasticsearch 9.1.0 at …");
    /// a permanent error when it cannot work (e.g. a version too old).
    async fn check(&self) -> Result<String, SinkError> {
        Ok(self.describe())
    }

    /// Makes sure the index exists with the job type's mapping (idempotent).
    async fn prepare(&self, index: &IndexSpec) -> Result<(), SinkError>;

    /// Writes the documents and resolves once each one is written or
    /// rejected. Transient failures are retried inside; dropping the future
    /// abandons the documents not yet sent.
    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError>;

    /// The last transient failure, while failures go on (for job errors).
    fn trouble(&self) -> Option<String> {
        None
    }

    /// For logs: what this sink writes to.
    fn describe(&self) -> String;
}

/// Where raw payloads, media and dead letters go.
#[async_trait]
pub trait ObjectSink: Send + Sync {
    /// Makes sure the bucket (or directory) exists.
    async fn prepare(&self) -> Result<(), SinkError>;

    /// Stores the object (overwriting: keys are content addresses).
    async fn put(&self, object: &Object) -> Result<(), SinkError>;

    /// Reads an object back (a dead letter, to send it again); `None` when
    /// there is no such key.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        Err(SinkError::permanent("objects", format!("{} cannot read {key} back", self.describe())))
    }

    /// For logs: what this sink writes to.
    fn describe(&self) -> String;
}
