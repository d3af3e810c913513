//! Running a job in unit tests: local sinks in a temporary directory and a
//! fetcher that may reach fixture servers on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use ingest_sinks::{IndexSpec, JobOutput, Sinks};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Job, JobError, RunContext, RunOutcome};
use crate::fence::Fence;
use crate::fetch::{FencedFetcher, FetchArgs, Fetcher};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub output: JobOutput,
    pub fetcher: FencedFetcher,
    pub cursor: Value,
    index: String,
}

impl Harness {
    pub fn new(job_type: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sinks = Arc::new(Sinks::local(dir.path(), Duration::from_secs(5)));
        let index = format!("ingest-{job_type}");
        let spec = IndexSpec { name: index.clone(), job_type: job_type.into(), mapping: Arc::new(Value::Null) };
        let output = sinks.output(job_type, "job-1", spec);
        let fetcher =
            Fetcher::new(&FetchArgs { fetch_allow: "127.0.0.1".parse().expect("allowlist"), ..FetchArgs::default() })
                .expect("fetcher");
        let fetcher = FencedFetcher::new(Arc::new(fetcher), Fence::unbounded());
        Self { dir, output, fetcher, cursor: Value::Null, index }
    }

    /// One run; the cursor is kept only when it succeeds (as the runner does).
    pub async fn run(&mut self, job: &mut dyn Job) -> Result<RunOutcome, JobError> {
        let cancel = CancellationToken::new();
        let mut cursor = self.cursor.clone();
        let mut ctx =
            RunContext { cursor: &mut cursor, cancel: &cancel, output: &mut self.output, fetch: &self.fetcher };
        let outcome = job.run(&mut ctx).await?;
        self.cursor = cursor;
        Ok(outcome)
    }

    /// The documents written so far: `{"_id": ..., "_source": ...}`.
    pub fn documents(&self) -> Vec<Value> {
        let path = self.dir.path().join(format!("documents/{}.jsonl", self.index));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// A job of type `T` built as the runner builds it: stored parameters and
/// secrets checked against the type's full spec, then parsed.
pub fn build<T: super::JobType>(
    params: Value,
    secrets: &std::collections::BTreeMap<String, String>,
) -> Result<Box<dyn Job>, crate::catalogue::BuildError> {
    let entry = crate::catalogue::entry::<T>();
    let spec = entry.full_spec();
    let params = params.as_object().cloned().unwrap_or_default();
    (entry.build)(&crate::catalogue::BuildInput { job_id: "job-1", spec: &spec, params: &params, secrets })
}
