//! Local sinks for `ingest standalone`: documents as JSON Lines, one file
//! per index (`<dir>/<index>.jsonl`, lines `{"_id": ..., "_source": {...}}`),
//! and objects as files under the same keys as in S3.
//!
//! Writing a document again with the same source is a no-op, so redelivery
//! adds no line; a changed source adds a line (the last one for an `_id` is
//! the current version).
//!
//! Lines are handed to the OS before a write is acknowledged (safe when the
//! process dies), not fsynced (a machine crash may lose the last ones): this
//! is the sink of a first run on one machine; clusters index into
//! Elasticsearch.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use xxhash_rust::xxh3::xxh3_64;

use crate::objects::check_key;
use crate::{Document, DocumentSink, IndexSpec, Object, ObjectSink, SinkError, WriteOutcome};

/// JSON Lines per index.
pub struct LocalDocuments {
    dir: PathBuf,
    files: Arc<Mutex<HashMap<String, IndexFile>>>,
    /// One writer: the files' lock serializes writes anyway.
    writers: Arc<Semaphore>,
}

struct IndexFile {
    file: File,
    /// Hash of the current source of each `_id` in the file.
    ids: HashMap<String, u64>,
}

impl LocalDocuments {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), files: Arc::default(), writers: Arc::new(Semaphore::new(1)) }
    }

    /// The file of an index.
    pub fn path(&self, index: &str) -> PathBuf {
        self.dir.join(format!("{index}.jsonl"))
    }
}

#[async_trait]
impl DocumentSink for LocalDocuments {
    async fn prepare(&self, index: &IndexSpec) -> Result<(), SinkError> {
        check_index(&index.name)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, &e))
    }

    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        let (dir, files) = (self.dir.clone(), self.files.clone());
        blocking(&self.writers, "document writer", move || {
            let mut files = files.lock().map_err(|_| SinkError::permanent("local", "document files poisoned"))?;
            let mut outcome = WriteOutcome::default();
            for doc in docs {
                check_index(&doc.index)?;
                let path = dir.join(format!("{}.jsonl", doc.index));
                let entry = match files.entry(doc.index.to_string()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(IndexFile::open(&path)?),
                };
                let hash = xxh3_64(&doc.source);
                if entry.ids.get(&doc.id) != Some(&hash) {
                    let mut line = Vec::with_capacity(doc.source.len() + doc.id.len() + 24);
                    line.extend_from_slice(b"{\"_id\":");
                    serde_json::to_writer(&mut line, &doc.id)
                        .map_err(|e| SinkError::permanent("local", e.to_string()))?;
                    line.extend_from_slice(b",\"_source\":");
                    line.extend_from_slice(&doc.source);
                    line.extend_from_slice(b"}\n");
                    entry.file.write_all(&line).map_err(|e| io_error(&path, &e))?;
                    entry.ids.insert(doc.id, hash);
                }
                outcome.written += 1;
            }
            Ok(outcome)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("JSON Lines files in {}", self.dir.display())
    }
}

impl IndexFile {
    /// Opens (creating) an index file and reads the ids already in it.
    fn open(path: &Path) -> Result<Self, SinkError> {
        #[derive(Deserialize)]
        struct Line<'a> {
            #[serde(borrow)]
            _id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            _source: &'a RawValue,
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
        }
        let file =
            OpenOptions::new().create(true).append(true).read(true).open(path).map_err(|e| io_error(path, &e))?;
        let mut ids = HashMap::new();
        for line in BufReader::new(&file).lines() {
            let line = line.map_err(|e| io_error(path, &e))?;
            // A line cut short by a crash is ignored (and written again).
            if let Ok(parsed) = serde_json::from_str::<Line<'_>>(&line) {
                ids.insert(parsed._id.into_owned(), xxh3_64(parsed._source.get().as_bytes()));
            }
        }
        Ok(Self { file, ids })
    }
}

/// Runs `write` on the blocking pool once one of `writers` is free (held
/// until it returns, even if the caller stops waiting).
async fn blocking<T: Send + 'static>(
    writers: &Arc<Semaphore>,
    what: &str,
    write: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    let permit = writers.clone().acquire_owned().await.map_err(|e| SinkError::permanent("local", e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        write()
    })
    .await
    .map_err(|e| SinkError::permanent("local", format!("{what} failed: {e}")))?
}

/// Objects as files under `dir`, at their keys.
pub struct LocalObjects {
    dir: PathBuf,
    writers: Arc<Semaphore>,
}

/// Objects written at once: each waits on the disk (its fsync), so more
/// threads only cost memory (a first burst of 10 000 runs, unbounded, held
/// ~200 threads of the blocking pool).
const OBJECT_WRITERS: usize = 4;

impl LocalObjects {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), writers: Arc::new(Semaphore::new(OBJECT_WRITERS)) }
    }

    /// The file of a key.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

#[async_trait]
impl ObjectSink for LocalObjects {
    async fn prepare(&self) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, &e))
    }

    async fn put(&self, object: &Object) -> Result<(), SinkError> {
        check_key(&object.key).map_err(|e| SinkError::permanent("local", e))?;
        let path = self.path(&object.key);
        let body = object.body.clone();
        blocking(&self.writers, "object writer", move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
            }
            // Write then rename: a reader never sees half an object.
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, &e))?;
            file.write_all(&body).and_then(|()| file.sync_data()).map_err(|e| io_error(&tmp, &e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, &e))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        check_key(key).map_err(|e| SinkError::permanent("local", e))?;
        let path = self.path(key);
        match tokio::fs::read(&path).await {
            Ok(body) => Ok(Some(body.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}

fn check_index(index: &str) -> Result<(), SinkError> {
    if index.is_empty() || index.contains(['/', '\\']) || index.starts_with('.') {
        return Err(SinkError::permanent("local", format!("'{index}' is not a valid index name")));
    }
    Ok(())
}

fn io_error(path: &Path, error: &std::io::Error) -> SinkError {
    SinkError::transient("local", format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn doc(id: &str, source: &str) -> Document {
        Document { index: "ingest-demo".into(), id: id.into(), source: Bytes::from(source.to_string()) }
    }

    #[tokio::test]
    async fn documents_are_lines_and_redelivery_adds_none() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDocuments::new(dir.path());
        let outcome = sink.write(vec![doc("a", r#"{"n":1}"#), doc("b", r#"{"n":2}"#)]).await.unwrap();
        assert_eq!(outcome.written, 2);
        sink.write(vec![doc("a", r#"{"n":1}"#)]).await.unwrap();
        sink.write(vec![doc("b", r#"{"n":3}"#)]).await.unwrap();
        // A new sink on the same files knows what they hold.
        let again = LocalDocuments::new(dir.path());
        again.write(vec![doc("a", r#"{"n":1}"#), doc("b", r#"{"n":3}"#)]).await.unwrap();
        let text = std::fs::read_to_string(sink.path("ingest-demo")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            lines,
            vec![
                serde_json::json!({"_id": "a", "_source": {"n": 1}}),
                serde_json::json!({"_id": "b", "_source": {"n": 2}}),
                serde_json::json!({"_id": "b", "_source": {"n": 3}}),
            ]
        );
    }

    #[tokio::test]
    async fn objects_are_files_at_their_keys_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalObjects::new(dir.path());
        let object = Object {
            key: "rss/j/2026/01/02/ab.json.gz".into(),
            body: Bytes::from_static(b"xyz"),
            content_type: "application/gzip",
        };
        sink.put(&object).await.unwrap();
        sink.put(&object).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("rss/j/2026/01/02/ab.json.gz")).unwrap(), b"xyz");
        let escape = Object { key: "../outside".into(), ..object };
        assert!(sink.put(&escape).await.is_err());
        assert!(!dir.path().parent().unwrap().join("outside").exists());
    }
}
