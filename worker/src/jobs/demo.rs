//! `demo`: emits synthetic items with deterministic ids, through the real
//! sinks. Exercises the scheduler and the delivery path end to end without
//! touching the outside world; `total_items` makes its upstream finite, so a
//! test can count exactly what must land.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ingest_model::{JobTypeSpec, ParamKind, ParamSpec};
use ingest_sinks::Item;
use serde_json::{Map, Value, json};

use super::{Job, JobError, NextRun, Params, RunContext, RunOutcome, RunReport};

pub const NAME: &str = "demo";

pub fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: NAME.to_string(),
        description: "Emits synthetic items; for trying the system out and for tests.".to_string(),
        params: vec![
            ParamSpec::new("items_per_run", ParamKind::Integer, "Items emitted per run.")
                .default_value(10)
                .bounds(Some(1.0), Some(10_000.0)),
            ParamSpec::new(
                "total_items",
                ParamKind::Integer,
                "Items in all (0: no end); runs emit nothing after that.",
            )
            .default_value(0)
            .bounds(Some(0.0), Some(1_000_000_000.0)),
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
            ParamSpec::new("archive_raw", ParamKind::Boolean, "Archive each item's raw payload to the object store.")
                .default_value(false),
            ParamSpec::new("topic", ParamKind::String, "A label copied into every item.").max_length(200),
            ParamSpec::new(
                "mode",
                ParamKind::Enum,
                "How item ids are made: sequential (stable), or random (a new id at every delivery, as the \
                 service this one replaces did: redelivery then duplicates documents).",
            )
            .allowed(&["sequential", "random"])
            .default_value("sequential"),
            ParamSpec::new("token", ParamKind::Secret, "An example secret: stored apart, never returned."),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: Vec::new(),
    }
}

/// Mapping of demo documents.
pub fn properties() -> Value {
    json!({
        "seq": {"type": "long"},
        "item_key": {"type": "keyword"},
        "topic": {"type": "keyword"},
        "payload": {"type": "keyword", "index": false, "doc_values": false},
    })
}

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

pub fn build(params: &Params<'_>) -> Result<Box<dyn Job>, String> {
    let get = |name: &str| params.integer(name).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok(Box::new(Demo {
        job_id: params.job_id().to_string(),
        items_per_run: get("items_per_run"),
        total_items: get("total_items"),
        item_bytes: get("item_bytes"),
        fail_every: get("fail_every"),
        archive_raw: params.boolean("archive_raw").unwrap_or(false),
        random_ids: params.string("mode") == Some("random"),
        topic: params.string("topic").map(String::from),
        runs: 0,
    }))
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
