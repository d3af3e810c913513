//! Job types, one module each, and what every job type implements.

pub mod demo;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use ingest_model::JobTypeSpec;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// What one run produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub items_fetched: u64,
    pub items_written: u64,
    pub items_failed: u64,
    pub bytes_fetched: u64,
}

/// When to run next, as a reconciler would say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextRun {
    /// After the job's interval (with jitter).
    Interval,
    /// After this long (e.g. a source asked to wait).
    After(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub report: RunReport,
    pub next: NextRun,
}

/// A failed run: the message is shown on the job; the runner backs off and
/// tries again (never giving up for good). `retry_after` overrides backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    pub retry_after: Option<Duration>,
    /// What the run managed before failing (counted, not checkpointed).
    pub report: RunReport,
}

impl JobError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), retry_after: None, report: RunReport::default() }
    }
}

/// A running job: one fresh instance per job, built from its validated
/// parameters (never shared between jobs).
#[async_trait]
pub trait Job: Send {
    /// One run. `cursor` is the job's checkpoint: advance it as items are
    /// acknowledged; it is persisted (fenced) only after `run` returns `Ok`.
    /// Return promptly once `cancel` fires.
    async fn run(&mut self, cursor: &mut Value, cancel: &CancellationToken) -> Result<RunOutcome, JobError>;
}

/// A job's parameters with the type's defaults applied, and its secrets.
pub struct Params<'a> {
    spec: &'a JobTypeSpec,
    values: &'a Map<String, Value>,
    secrets: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    pub fn new(spec: &'a JobTypeSpec, values: &'a Map<String, Value>, secrets: &'a BTreeMap<String, String>) -> Self {
        Self { spec, values, secrets }
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.values.get(name).or_else(|| self.spec.param(name).and_then(|p| p.default.as_ref()))
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        self.value(name).and_then(Value::as_i64)
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        self.value(name).and_then(Value::as_str)
    }

    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }
}
