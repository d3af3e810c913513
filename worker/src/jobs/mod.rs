//! Job types, one module each, and what every job type implements.

pub mod demo;
pub mod hackernews;
pub mod http_json;
pub mod reddit;
pub mod rss;
pub mod stocks;
#[cfg(test)]
pub mod testing;
pub mod twitter;
pub mod weather;

use std::time::Duration;

use async_trait::async_trait;
use ingest_model::JobParams;
use ingest_sinks::{Item, JobOutput, SinkError};

use crate::fetch::{FencedFetcher, FetchError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What one run produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub items_fetched: u64,
    pub items_written: u64,
    pub items_failed: u64,
    pub bytes_fetched: u64,
    /// Items the job's own rules left out (fetched, not written).
    pub items_filtered: u64,
}

/// When to run next, as a reconciler would say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextRun {
    /// After the job's interval (with jitter).
    Interval,
    /// After this long (e.g. a source asked to wait).
    After(Duration),
    /// After the interval, or this long if longer (e.g. a feed's ttl).
    AtLeast(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub report: RunReport,
    pub next: NextRun,
    /// Something the user should see although the run succeeded (e.g.
    /// documents the index refused).
    pub warning: Option<String>,
}

/// What kind of failure a run ended in; the runner maps each kind to what
/// the job does next (`runner.rs`, one place), never by reading messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The upstream, or what it answered, failed the run: retried with
    /// backoff.
    Upstream,
    /// The request failed or was refused (address policy, network, timeout,
    /// an HTTP status): retried with backoff, or after `retry_after`.
    Fetch,
    /// The index or the object store did not take the items: retried.
    Sink,
    /// The job's cursor does not decode: the job waits for a cursor reset.
    CursorUnreadable,
    /// Not sent: the claim's lease ran out, the job is another worker's now.
    LeaseExpired,
}

/// A failed run: the message is shown on the job; what happens next
/// depends on the kind. `retry_after` overrides backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// What the run managed before failing (counted, not checkpointed).
    pub report: RunReport,
}

impl JobError {
    /// The upstream or its answer failed the run.
    pub fn new(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Upstream, message: message.into(), retry_after: None, report: RunReport::default() }
    }

    /// The same error, with what the run managed before it.
    pub fn with_report(self, report: RunReport) -> Self {
        Self { report, ..self }
    }
}

impl From<FetchError> for JobError {
    fn from(error: FetchError) -> Self {
        let kind = if error == FetchError::LeaseExpired { ErrorKind::LeaseExpired } else { ErrorKind::Fetch };
        JobError { kind, retry_after: error.retry_after(), ..JobError::new(error.to_string()) }
    }
}

impl From<SinkError> for JobError {
    fn from(error: SinkError) -> Self {
        JobError { kind: ErrorKind::Sink, ..JobError::new(error.to_string()) }
    }
}

/// What a run works with.
pub struct RunContext<'a> {
    /// The job's checkpoint: advance it only past items `deliver` has
    /// acknowledged; it is persisted (fenced) only after `run` returns `Ok`.
    pub cursor: &'a mut Value,
    /// Fires when the job must stop; the runner also drops the run then.
    pub cancel: &'a CancellationToken,
    /// Where the job's items go.
    pub output: &'a mut JobOutput,
    /// The worker's HTTP fetcher (address policy, limits, per-host caps).
    pub fetch: &'a FencedFetcher,
}

/// A job's cursor as its type: none yet (null) is the default; one that
/// does not decode is an error on the job, never a silent fresh start
/// (which would re-read or skip data).
pub fn read_cursor<T: serde::de::DeserializeOwned + Default>(cursor: &Value) -> Result<T, JobError> {
    if cursor.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(cursor.clone())
        .map_err(|e| JobError { kind: ErrorKind::CursorUnreadable, ..JobError::new(format!("cursor unreadable: {e}")) })
}

impl RunContext<'_> {
    /// Hands items to the sinks and waits for their acknowledgement; counts
    /// them in `report`. An error (carrying `report`) means nothing was
    /// acknowledged: leave the cursor alone and fail the run (the items
    /// come again next run). A
    /// warning tells of documents refused by the index (kept as dead letters).
    pub async fn deliver(&mut self, items: Vec<Item>, report: &mut RunReport) -> Result<Option<String>, JobError> {
        let delivered = self.output.deliver(items).await.map_err(|e| JobError::from(e).with_report(*report))?;
        report.items_written += delivered.written;
        report.items_failed += delivered.rejected;
        Ok(delivered.first_rejection.map(|first| {
            format!(
                "{} document(s) refused by index {} and kept as dead letters; first: {first}",
                delivered.rejected,
                self.output.index()
            )
        }))
    }
}

/// A running job: one fresh instance per job, built from its validated
/// parameters (never shared between jobs).
#[async_trait]
pub trait Job: Send {
    /// One run: fetch, map to items, deliver, advance the cursor.
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError>;
}

/// A job type: one struct that is both the type (its name, parameters,
/// document mapping) and, built from a job's parameters, the running job.
/// The catalogue takes it as `catalogue::entry::<T>()`.
pub trait JobType: Job + Sized + 'static {
    const NAME: &'static str;
    /// One sentence for the UI's type list.
    const DESCRIPTION: &'static str;
    const DEFAULT_INTERVAL: Duration;
    /// The shortest interval a job of this type may ask for.
    const MIN_INTERVAL: Duration;
    /// The parameters, declared once (see `ingest_model::typed`).
    type Params: JobParams;
    /// The version of this type's cursor format. Bump it when the cursor
    /// changes, and teach `migrate_cursor` the step from the previous one:
    /// checkpoints written before are migrated when a job runs, never
    /// misread or dropped.
    const CURSOR_VERSION: u32 = 1;
    /// A cursor written in an older format `version`, in the current one.
    fn migrate_cursor(version: u32, _cursor: Value) -> Result<Value, String> {
        Err(format!("no migration from cursor version {version} to {}", Self::CURSOR_VERSION))
    }
    /// The URL parameter whose host this type's jobs fetch, when it is
    /// user-given (feeds, any JSON API): such jobs are placed by that host
    /// (all of a host's jobs on one worker) and every request they make waits
    /// for its host's slot (`fetch/pace.rs`), so a host's rate holds across
    /// the cluster. `None` (API types with their own rate limits): placed by
    /// job id, not paced.
    const PACED_BY: Option<&'static str> = None;
    /// Index mapping properties of its documents (the common fields are added).
    fn properties() -> Value;
    /// A fresh instance for one job from its parsed parameters (never shared
    /// between jobs). Control has checked everything the spec can say; an
    /// error here names the parameter.
    fn build(job_id: &str, params: Self::Params) -> Result<Self, String>;
}

/// A job type's cursor format: its version and how older versions migrate.
#[derive(Clone, Copy)]
pub struct CursorFormat {
    pub version: u32,
    pub migrate: fn(u32, Value) -> Result<Value, String>,
}

impl CursorFormat {
    /// A stored cursor of format `stored` (absent: 1) in the current format:
    /// migrated step by step from an older one; one from a newer worker (a
    /// rolling upgrade moved the job back) or that does not migrate is
    /// unreadable, so the job waits instead of misreading it.
    pub fn read(&self, cursor: &Value, stored: Option<u32>) -> Result<Value, JobError> {
        let unreadable = |message: String| JobError { kind: ErrorKind::CursorUnreadable, ..JobError::new(message) };
        let stored = stored.unwrap_or(1);
        if cursor.is_null() || stored == self.version {
            return Ok(cursor.clone());
        }
        if stored > self.version {
            return Err(unreadable(format!(
                "cursor unreadable: written in format {stored} by a newer worker, this one reads format {}; \
                 upgrade this worker",
                self.version
            )));
        }
        let mut cursor = cursor.clone();
        for version in stored..self.version {
            cursor = (self.migrate)(version, cursor)
                .map_err(|e| unreadable(format!("cursor unreadable: format {version} does not migrate: {e}")))?;
        }
        Ok(cursor)
    }
}

/// One line of text that is not blank, without control characters.
pub const ONE_LINE: &str = r"[^\x00-\x1F\x7F]*[^\s\x00-\x1F\x7F][^\x00-\x1F\x7F]*";

/// A header line a job can send: a token name, a colon, then a value
/// without control characters (tab allowed). The spec checks it, so
/// control refuses a line `header_lines` could not send.
pub const HEADER_LINE: &str = r"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*:[^\x00-\x08\x0A-\x1F\x7F]*";

/// `Name: value` lines as headers.
pub fn header_lines(lines: &[String]) -> Result<Vec<(http::HeaderName, String)>, String> {
    lines
        .iter()
        .map(|line| {
            let (name, value) =
                line.split_once(':').ok_or_else(|| format!("headers: '{line}' is not \"Name: value\""))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("headers: bad name in '{line}'"))?;
            Ok((name, value.trim().to_string()))
        })
        .collect()
}

/// A URL parameter used as a base for relative paths: it ends in `/`.
pub fn base_url(mut base: url::Url) -> url::Url {
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Cursor {
        #[serde(default)]
        since_id: Option<String>,
    }

    /// Format 1 kept `{"last": n}`; 2 keeps `{"since": n}`; 3 adds `"seen": []`.
    fn migrate(version: u32, cursor: Value) -> Result<Value, String> {
        match version {
            1 => Ok(json!({"since": cursor.get("last").cloned().ok_or("no last")?})),
            2 => {
                let mut cursor = cursor;
                cursor["seen"] = json!([]);
                Ok(cursor)
            }
            _ => Err(format!("unknown format {version}")),
        }
    }

    #[test]
    fn older_cursors_migrate_step_by_step_newer_or_broken_ones_wait() {
        let format = CursorFormat { version: 3, migrate };
        let current = json!({"since": 7, "seen": ["a"]});
        assert_eq!(format.read(&current, Some(3)).expect("current"), current);
        assert_eq!(format.read(&Value::Null, Some(1)).expect("none yet"), Value::Null);
        assert_eq!(format.read(&json!({"last": 7}), None).expect("from 1"), json!({"since": 7, "seen": []}));
        assert_eq!(format.read(&json!({"since": 7}), Some(2)).expect("from 2"), json!({"since": 7, "seen": []}));
        let newer = format.read(&current, Some(4)).expect_err("from a newer worker");
        assert_eq!(newer.kind, ErrorKind::CursorUnreadable);
        assert!(newer.message.contains("newer worker"), "{}", newer.message);
        let broken = format.read(&json!({"other": 1}), Some(1)).expect_err("does not migrate");
        assert_eq!(broken.kind, ErrorKind::CursorUnreadable);
        assert!(broken.message.contains("format 1 does not migrate: no last"), "{}", broken.message);
    }

    #[test]
    fn a_cursor_is_read_or_refused_never_reset_in_silence() {
        assert_eq!(read_cursor::<Cursor>(&Value::Null).expect("none yet"), Cursor::default());
        let read: Cursor = read_cursor(&json!({"since_id": "42"})).expect("readable");
        assert_eq!(read.since_id.as_deref(), Some("42"));
        for bad in [json!({"since_id": 42}), json!("a string"), json!([1, 2])] {
            let error = read_cursor::<Cursor>(&bad).expect_err("unreadable");
            assert!(error.message.starts_with("cursor unreadable: "), "{}", error.message);
            assert_eq!(error.kind, ErrorKind::CursorUnreadable, "the runner waits for a reset on it");
        }
    }
}
