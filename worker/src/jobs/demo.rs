//! `demo`: emits synthetic items with deterministic ids. Exercises the
//! scheduler end to end without touching the outside world.

use std::time::Duration;

use async_trait::async_trait;
use ingest_model::{JobTypeSpec, ParamKind, ParamSpec};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Job, JobError, NextRun, Params, RunOutcome, RunReport};

pub const NAME: &str = "demo";

pub fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: NAME.to_string(),
        description: "Emits synthetic items; for trying the system out and for tests.".to_string(),
        params: vec![
            ParamSpec::new("items_per_run", ParamKind::Integer, "Items emitted per run.")
                .default_value(10)
                .bounds(Some(1.0), Some(10_000.0)),
            ParamSpec::new("item_bytes", ParamKind::Integer, "Size of each item's payload, in bytes.")
                .default_value(256)
                .bounds(Some(0.0), Some(1_048_576.0)),
            ParamSpec::new(
                "fail_every",
                ParamKind::Integer,
                "Fail every n-th run (0: never), to exercise error handling.",
            )
            .default_value(0)
            .bounds(Some(0.0), Some(1_000_000.0)),
            ParamSpec::new("topic", ParamKind::String, "A label copied into every item.").max_length(200),
            ParamSpec::new("mode", ParamKind::Enum, "How item ids are made.")
                .allowed(&["sequential", "random"])
                .default_value("sequential"),
            ParamSpec::new("token", ParamKind::Secret, "An example secret: stored apart, never returned."),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
    }
}

/// One demo job's settings.
pub struct Demo {
    items_per_run: u64,
    item_bytes: u64,
    fail_every: u64,
    /// Runs of this instance, for `fail_every`.
    runs: u64,
}

pub fn build(params: &Params<'_>) -> Result<Box<dyn Job>, String> {
    let get = |name: &str| params.integer(name).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok(Box::new(Demo {
        items_per_run: get("items_per_run"),
        item_bytes: get("item_bytes"),
        fail_every: get("fail_every"),
        runs: 0,
    }))
}

#[async_trait]
impl Job for Demo {
    async fn run(&mut self, cursor: &mut Value, _cancel: &CancellationToken) -> Result<RunOutcome, JobError> {
        self.runs += 1;
        let next_seq = cursor.get("next_seq").and_then(Value::as_u64).unwrap_or(0);
        if self.fail_every > 0 && self.runs.is_multiple_of(self.fail_every) {
            return Err(JobError::new(format!("demo failure on run {} (fail_every = {})", self.runs, self.fail_every)));
        }
        // Items `next_seq .. next_seq + n` are emitted; no sink exists yet, so
        // they are counted as fetched and not written.
        let report = RunReport {
            items_fetched: self.items_per_run,
            items_written: 0,
            items_failed: 0,
            bytes_fetched: self.items_per_run * self.item_bytes,
        };
        *cursor = json!({"next_seq": next_seq + self.items_per_run});
        Ok(RunOutcome { report, next: NextRun::Interval })
    }
}
