//! `demo`: emits synthetic items with deterministic ids, through the real
//! sinks. Exercises the scheduler and the delivery path end to end without
//! touching the outside world; `total_items` makes its upstream finite, so a
//! test can count exactly what must land.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ingest_model::{JobParams, ParamEnum, Secret};
use ingest_sinks::Item;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport};

pub const NAME: &str = "demo";

/// Where the next run starts.
#[derive(Debug, Default, serde::Deserialize)]
struct DemoCursor {
    #[serde(default)]
    next_seq: u64,
}

/// One demo job's settings.
pub struct Demo {
    job_id: String,
    items_per_run: u64,
    total_items: u64,
    item_bytes: u64,
    fail_every: u64,
    archive_raw: bool,
    random_ids: bool,
    topic: Option<String>,
    /// Runs of this instance, for `fail_every`.
    runs: u64,
}

/// How item ids are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum IdMode {
    Sequential,
    Random,
}

#[derive(Debug, Deserialize, JobParams)]
pub struct DemoParams {
    /// Items emitted per run.
    #[param(default = 10, min = 1, max = 10_000)]
    items_per_run: u64,
    /// Items in all (0: no end); runs emit nothing after that.
    #[param(default = 0, min = 0, max = 1_000_000_000)]
    total_items: u64,
    /// Size of each item's payload, in bytes.
    #[param(default = 256, min = 0, max = 1_048_576)]
    item_bytes: u64,
    /// Fail every n-th run (0: never), to exercise error handling.
    #[param(default = 0, min = 0, max = 1_000_000)]
    fail_every: u64,
    /// Archive each item's raw payload to the object store.
    #[param(default = false)]
    archive_raw: bool,
    /// A label copied into every item.
    #[param(max_length = 200)]
    topic: Option<String>,
    /// How item ids are made: sequential (stable), or random (a new id at every delivery, as the
    /// service this one replaces did: redelivery then duplicates documents).
    #[param(default = "sequential")]
    mode: IdMode,
    /// An example secret: stored apart, never returned.
    #[expect(dead_code, reason = "an example: shown in the form and stored apart, used by nothing")]
    token: Option<Secret>,
}

impl JobType for Demo {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Emits synthetic items; for trying the system out and for tests.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    const MIN_INTERVAL: Duration = Duration::from_secs(1);
    type Params = DemoParams;

    fn properties() -> Value {
        json!({
            "seq": {"type": "long"},
            "item_key": {"type": "keyword"},
            "topic": {"type": "keyword"},
            "payload": {"type": "keyword", "index": false, "doc_values": false},
        })
    }

    fn build(job_id: &str, params: DemoParams) -> Result<Self, String> {
        Ok(Demo {
            job_id: job_id.to_string(),
            items_per_run: params.items_per_run,
            total_items: params.total_items,
            item_bytes: params.item_bytes,
            fail_every: params.fail_every,
            archive_raw: params.archive_raw,
            random_ids: params.mode == IdMode::Random,
            topic: params.topic,
            runs: 0,
        })
    }
}

impl Demo {
    fn item(&self, seq: u64) -> Item {
        let key = format!("{}:{seq}", self.job_id);
        let payload: String = "demo ".chars().cycle().take(self.item_bytes as usize).collect();
        let mut doc = Map::new();
        doc.insert("seq".into(), json!(seq));
        doc.insert("item_key".into(), json!(key));
        doc.insert("payload".into(), json!(payload));
        if let Some(topic) = &self.topic {
            doc.insert("topic".into(), json!(topic));
        }
        let raw = self.archive_raw.then(|| Bytes::from(json!({"id": key, "seq": seq, "payload": payload}).to_string()));
        let id = if self.random_ids { uuid::Uuid::new_v4().to_string() } else { key };
        Item { id, doc, raw }
    }
}

#[async_trait]
impl Job for Demo {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        self.runs += 1;
        let DemoCursor { next_seq } = super::read_cursor(ctx.cursor)?;
        if self.fail_every > 0 && self.runs.is_multiple_of(self.fail_every) {
            return Err(JobError::new(format!("demo failure on run {} (fail_every = {})", self.runs, self.fail_every)));
        }
        let mut end = next_seq + self.items_per_run;
        if self.total_items > 0 {
            end = end.min(self.total_items).max(next_seq);
        }
        let items: Vec<Item> = (next_seq..end).map(|seq| self.item(seq)).collect();
        let mut report = RunReport {
            items_fetched: items.len() as u64,
            bytes_fetched: items.len() as u64 * self.item_bytes,
            ..RunReport::default()
        };
        let warning = ctx.deliver(items, &mut report).await?;
        *ctx.cursor = json!({"next_seq": end});
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}
