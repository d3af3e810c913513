//! `hackernews`: a Hacker News list (top, new, best, ask, show, job) through
//! the Firebase API (`/v0/<list>stories.json`, `/v0/item/<id>.json`), items
//! fetched with bounded concurrency, optionally their comments to a depth.
//! The `_id` is `hn:<item id>`; the cursor keeps the ids of the last list, so
//! a story is fetched and indexed once while it stays on the list.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use ingest_model::typed::variant_name;
use ingest_model::{JobParams, ParamEnum};
use ingest_sinks::Item;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport, base_url};
use crate::fetch::{FencedFetcher, Request};

pub const NAME: &str = "hackernews";
/// Most comments fetched per story.
const MAX_COMMENTS: usize = 200;

/// A Hacker News list.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum List {
    Top,
    New,
    Best,
    Ask,
    Show,
    Job,
}

#[derive(Debug, Deserialize, JobParams)]
pub struct HackerNewsParams {
    /// Which list.
    #[param(default = "new")]
    list: List,
    /// Stories taken from the head of the list per run.
    #[param(default = 100, min = 1, max = 500)]
    max_items: usize,
    /// Levels of comments indexed with each new story (0: none).
    #[param(default = 0, min = 0, max = 5)]
    comment_depth: u32,
    /// Items fetched at once.
    #[param(default = 8, min = 1, max = 32)]
    concurrency: usize,
    /// The API's base URL.
    #[param(default = "https://hacker-news.firebaseio.com/v0/")]
    base_url: Url,
}

pub struct HackerNews {
    base: Url,
    list: String,
    max_items: usize,
    comment_depth: u32,
    concurrency: usize,
}

impl JobType for HackerNews {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "Indexes the stories of a Hacker News list, once each, optionally with their comments.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(30);
    type Params = HackerNewsParams;

    fn properties() -> Value {
        json!({
            "hn_id": {"type": "long"}, "kind": {"type": "keyword"}, "by": {"type": "keyword"},
            "published": {"type": "date"}, "title": {"type": "text"}, "url": {"type": "keyword", "ignore_above": 2048},
            "text": {"type": "text"}, "score": {"type": "long"}, "descendants": {"type": "long"},
            "parent": {"type": "long"}, "story": {"type": "long"}, "list": {"type": "keyword"},
            "hn_url": {"type": "keyword"},
        })
    }

    fn build(_job_id: &str, params: HackerNewsParams) -> Result<Self, String> {
        Ok(HackerNews {
            base: base_url(params.base_url),
            list: variant_name(&params.list),
            max_items: params.max_items,
            comment_depth: params.comment_depth,
            concurrency: params.concurrency,
        })
    }
}

impl HackerNews {
    fn url(&self, path: &str) -> Result<Url, JobError> {
        self.base.join(path).map_err(|e| JobError::new(format!("base_url {}: {e}", self.base)))
    }

    /// One item as JSON (`None` for a null, deleted or dead item).
    async fn fetch_item(
        &self,
        fetch: &FencedFetcher,
        id: u64,
        report: &mut RunReport,
    ) -> Result<Option<(Value, Bytes)>, JobError> {
        let response = fetch.get(&Request::get(self.url(&format!("item/{id}.json"))?, "application/json")).await?;
        report.bytes_fetched += response.body.len() as u64;
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| JobError::new(format!("item {id}: not the JSON an item should be: {e}")))?;
        if value.is_null() || value.get("deleted") == Some(&json!(true)) || value.get("dead") == Some(&json!(true)) {
            return Ok(None);
        }
        if !value.is_object() || value.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(JobError::new(format!("item {id}: the answer is not that item")));
        }
        Ok(Some((value, response.body)))
    }

    fn item(&self, value: &Value, raw: Bytes, story: u64) -> Item {
        let id = value["id"].as_u64().unwrap_or_default();
        let time = value.get("time").and_then(Value::as_i64).and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        let mut doc = Map::new();
        doc.insert("hn_id".into(), json!(id));
        doc.insert("kind".into(), value.get("type").cloned().unwrap_or(json!("story")));
        doc.insert("list".into(), json!(self.list));
        doc.insert("story".into(), json!(story));
        doc.insert("hn_url".into(), json!(format!("https://news.ycombinator.com/item?id={id}")));
        for field in ["by", "title", "url", "text", "score", "descendants", "parent"] {
            if let Some(v) = value.get(field).filter(|v| !v.is_null()) {
                doc.insert(field.into(), v.clone());
            }
        }
        if let Some(time) = time {
            doc.insert("published".into(), json!(time.to_rfc3339()));
        }
        Item { id: format!("hn:{id}"), doc, raw: Some(raw) }
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// Story ids of the last list read (and delivered).
    #[serde(default)]
    seen: Vec<u64>,
}

#[async_trait]
impl Job for HackerNews {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let cursor: Cursor = super::read_cursor(ctx.cursor)?;
        let list_url = self.url(&format!("{}stories.json", self.list))?;
        let response = ctx.fetch.get(&Request::get(list_url.clone(), "application/json")).await?;
        let mut report = RunReport { bytes_fetched: response.body.len() as u64, ..RunReport::default() };
        let ids: Vec<u64> = serde_json::from_slice(&response.body)
            .map_err(|e| JobError::new(format!("{list_url}: not a list of item ids: {e}")))?;
        let head: Vec<u64> = ids.into_iter().take(self.max_items).collect();
        let seen: HashSet<u64> = cursor.seen.iter().copied().collect();
        let new: Vec<u64> = head.iter().copied().filter(|id| !seen.contains(id)).collect();

        let fetch = ctx.fetch;
        let mut items = Vec::new();
        let this = &*self;
        let mut stories = futures::stream::iter(new.into_iter().map(move |id| async move {
            let mut report = RunReport::default();
            let result = this.fetch_item(fetch, id, &mut report).await;
            (id, result, report)
        }))
        .buffered(self.concurrency);
        let mut kids_of = Vec::new();
        while let Some((id, result, got)) = stories.next().await {
            report.bytes_fetched += got.bytes_fetched;
            if let Some((value, raw)) = result.map_err(|e| JobError { report, ..e })? {
                if self.comment_depth > 0 {
                    kids_of.push((id, value.get("kids").cloned().unwrap_or(Value::Null)));
                }
                items.push(self.item(&value, raw, id));
            }
        }
        drop(stories);
        for (story, kids) in kids_of {
            self.comments(fetch, story, kids, &mut items, &mut report).await?;
        }
        report.items_fetched = items.len() as u64;
        let warning = ctx.deliver(items, &mut report).await?;
        *ctx.cursor = json!({"seen": head});
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}

impl HackerNews {
    /// Comments of `story`, breadth first, to `comment_depth` levels.
    async fn comments(
        &self,
        fetch: &FencedFetcher,
        story: u64,
        kids: Value,
        items: &mut Vec<Item>,
        report: &mut RunReport,
    ) -> Result<(), JobError> {
        let mut level: Vec<u64> = ids(&kids);
        let mut taken = 0;
        for _depth in 0..self.comment_depth {
            let mut next = Vec::new();
            for id in level {
                if taken >= MAX_COMMENTS {
                    return Ok(());
                }
                taken += 1;
                if let Some((value, raw)) = self.fetch_item(fetch, id, report).await? {
                    next.extend(ids(value.get("kids").unwrap_or(&Value::Null)));
                    items.push(self.item(&value, raw, story));
                }
            }
            level = next;
        }
        Ok(())
    }
}

fn ids(kids: &Value) -> Vec<u64> {
    kids.as_array().map(|k| k.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
