//! `rss`: RSS 0.9x/1.0/2.0, Atom and JSON Feed, parsed by feed-rs (no DTD
//! or entity expansion). Conditional GET through the cursor; the feed's
//! `ttl` and `Cache-Control: max-age` stretch the interval; every entry is
//! a document whose `_id` is the hash of the feed URL and the entry's id, so
//! an entry is indexed once however often the feed is read; entries seen
//! in the last read are skipped. The fetched feed is archived as the raw
//! payload of its documents.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use ingest_model::JobParams;
use ingest_sinks::Item;
use ingest_sinks::objects::sha256_hex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::{HEADER_LINE, Job, JobError, JobType, NextRun, ONE_LINE, RunContext, RunOutcome, RunReport, header_lines};
use crate::cpu;
use crate::fetch::{FetchError, Request};

pub mod article;
pub mod dates;
pub mod feed;
pub mod filters;
pub mod html;
pub mod nesting;

use feed::{Entry, Feed};
use filters::Filters;

pub const NAME: &str = "rss";

/// How long parsing one feed or extracting one page may take.
const PARSE_BUDGET: Duration = Duration::from_secs(10);
const EXTRACT_BUDGET: Duration = Duration::from_secs(10);
/// Entries taken from one feed, at most.
const MAX_ENTRIES: usize = 5_000;
/// Longest interval the feed itself may ask for.
const MAX_FEED_DELAY: Duration = Duration::from_secs(24 * 3600);
const ACCEPT: &str = "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, \
                      application/json;q=0.8, text/xml;q=0.8, */*;q=0.5";

pub struct Rss {
    url: Url,
    /// Pages to extract per run (0: none).
    articles: usize,
    /// Headers of the feed's request (User-Agent included).
    headers: Vec<(http::HeaderName, String)>,
    filters: Filters,
}

#[derive(Debug, Deserialize, JobParams)]
pub struct RssParams {
    /// The feed's URL (http or https).
    url: Url,
    /// Also fetch each new entry's page: index its main text and top image, archive the page and the image.
    #[param(default = false)]
    extract_articles: bool,
    /// Pages fetched per run at most, when extracting.
    #[param(default = 20, min = 1, max = 200)]
    max_articles: usize,
    /// User-Agent sent to the feed's site (some sites want their own); default: the worker's.
    #[param(max_length = 200, pattern = ONE_LINE)]
    user_agent: Option<String>,
    /// Extra headers sent with the feed's request, each "Name: value" (not secret).
    #[param(max_length = 20, pattern = HEADER_LINE)]
    headers: Option<Vec<String>>,
    /// Keep only entries matching one of these rules: "text" (anywhere) or "title:", "content:", "author:" or
    /// "category:" then text; case-insensitive contains. Entries left out count as filtered.
    #[param(max_length = 50)]
    keep: Option<Vec<String>>,
    /// Leave out entries matching any of these rules (same form as keep).
    #[param(max_length = 50)]
    drop: Option<Vec<String>>,
}

impl JobType for Rss {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Polls an RSS, Atom or JSON Feed and indexes its entries once each.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(60);
    const PACED_BY: Option<&'static str> = Some("url");
    type Params = RssParams;

    fn properties() -> Value {
        let text = json!({"type": "text"});
        let keyword = json!({"type": "keyword", "ignore_above": 2048});
        json!({
            "title": text, "summary": text, "content": text, "summary_text": text, "content_text": text,
            "summary_safe": {"type": "text", "index": false}, "content_safe": {"type": "text", "index": false},
            "link": keyword, "guid": keyword, "authors": keyword, "author_emails": keyword,
            "categories": keyword, "category_labels": keyword,
            "enclosures": {"properties": {"url": keyword, "type": keyword, "length": {"type": "long"}}},
            "thumbnails": keyword, "image": keyword, "duration": keyword, "base": keyword,
            "feed_link": keyword, "feed_language": keyword,
            "published": {"type": "date"}, "updated": {"type": "date"},
            "feed_title": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
            "feed_url": keyword,
            "article_text": text, "article_title": text, "article_image": keyword,
            "article_byline": text, "article_excerpt": text, "article_language": keyword,
            "article_published": {"type": "date"},
            "article_html_key": keyword, "article_image_key": keyword,
        })
    }

    fn build(_job_id: &str, params: RssParams) -> Result<Self, String> {
        let mut headers = header_lines(&params.headers.unwrap_or_default())?;
        if let Some(agent) = params.user_agent {
            headers.push((http::header::USER_AGENT, agent.trim().to_string()));
        }
        Ok(Rss {
            url: params.url,
            articles: if params.extract_articles { params.max_articles } else { 0 },
            headers,
            filters: Filters::new(&params.keep.unwrap_or_default(), &params.drop.unwrap_or_default()),
        })
    }
}

/// What the cursor keeps between runs.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// Short hashes of the entries (id and update time) of the last read.
    #[serde(default)]
    seen: Vec<String>,
    /// Entries indexed without their page yet (more than `max_articles`
    /// came at once, or the page failed): extracted in later runs while the
    /// feed still lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    articles: Vec<PendingArticle>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct PendingArticle {
    /// The entry's `_id`.
    id: String,
    /// Failed attempts so far.
    #[serde(default)]
    tries: u32,
}

/// Attempts at an entry's page before it is left without one.
const ARTICLE_TRIES: u32 = 3;
/// Entries waiting for their page, at most.
const MAX_PENDING_ARTICLES: usize = 500;

#[async_trait]
impl Job for Rss {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let cursor: Cursor = super::read_cursor(ctx.cursor)?;
        let mut request = Request::get(self.url.clone(), ACCEPT);
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value)?;
        }
        // Conditional only when no page waits: a 304 holds no entries to
        // extract.
        if cursor.articles.is_empty() {
            request.etag = cursor.etag.clone();
            request.last_modified = cursor.last_modified.clone();
        }
        let response = ctx.fetch.get(&request).await?;
        let mut report = RunReport { bytes_fetched: response.body.len() as u64, ..RunReport::default() };
        let max_age = response.max_age();
        if response.not_modified() {
            return Ok(RunOutcome { report, next: next_run(None, max_age), warning: None });
        }
        let (body, base) = (response.body.clone(), response.url.clone());
        let feed = cpu::run("parsing the feed", PARSE_BUDGET, move || parse(&body, &base))
            .await
            .map_err(|e| JobError::new(format!("{}: {e}", response.url)))??;
        let mut problems = Vec::new();
        if feed.entries.is_empty() {
            problems.push(("no_entries", "the feed holds no entries".to_string()));
        }
        if let Some(trouble) = &feed.trouble {
            problems.push((
                "not_well_formed",
                format!("{trouble}; the {} entries before it were read", feed.entries.len()),
            ));
        }
        if feed.entries.len() > MAX_ENTRIES {
            let dropped = feed.entries.len() - MAX_ENTRIES;
            problems.push(("entries_dropped", format!("{dropped} entries past the first {MAX_ENTRIES} were left out")));
        }
        for (problem, _) in &problems {
            metrics::counter!(ingest_runtime::metrics::FEED_PROBLEMS, "problem" => *problem).increment(1);
        }
        let seen: HashSet<&str> = cursor.seen.iter().map(String::as_str).collect();
        let waiting: HashMap<&str, u32> = cursor.articles.iter().map(|p| (p.id.as_str(), p.tries)).collect();
        let mut now_seen = Vec::new();
        let mut items = Vec::new();
        // Entries indexed before whose page is still to be had: first in line.
        let mut retries = Vec::new();
        for entry in feed.entries.iter().take(MAX_ENTRIES) {
            let id = entry_id(&self.url, entry);
            let mark = seen_mark(&id, entry);
            if !seen.contains(mark.as_str()) {
                report.items_fetched += 1;
                if self.filters.admits(entry) {
                    items.push((item(&feed, entry, &self.url, id), 0));
                } else {
                    report.items_filtered += 1;
                }
            } else if let Some(tries) = waiting.get(id.as_str()).filter(|_| self.articles > 0) {
                retries.push((item(&feed, entry, &self.url, id), *tries));
            }
            now_seen.push(mark);
        }
        // Pages, within this run's budget: waiting entries first, then new
        // ones; an entry past the budget is indexed now and waits for its page.
        let mut pending = Vec::new();
        let mut budget = self.articles;
        let mut redone = Vec::new();
        for (mut item, tries) in retries {
            if budget == 0 {
                pending.push(PendingArticle { id: item.id, tries });
                continue;
            }
            budget -= 1;
            match add_article(ctx, &mut item, &mut report).await.map_err(|e| e.with_report(report))? {
                Page::Failed if tries + 1 < ARTICLE_TRIES => {
                    pending.push(PendingArticle { id: item.id, tries: tries + 1 })
                }
                _ => redone.push(item),
            }
        }
        if self.articles > 0 {
            for (item, _) in &mut items {
                if budget == 0 {
                    pending.push(PendingArticle { id: item.id.clone(), tries: 0 });
                    continue;
                }
                budget -= 1;
                if add_article(ctx, item, &mut report).await.map_err(|e| e.with_report(report))? == Page::Failed {
                    pending.push(PendingArticle { id: item.id.clone(), tries: 1 });
                }
            }
        }
        pending.truncate(MAX_PENDING_ARTICLES);
        let mut items: Vec<Item> = items.into_iter().map(|(item, _)| item).chain(redone).collect();
        let mut warning = None;
        let mut notes: Vec<String> = problems.into_iter().map(|(_, note)| note).collect();
        if !items.is_empty() {
            let extension = if response.body.first() == Some(&b'{') { "json" } else { "xml" };
            let raw_key = ctx
                .output
                .put_raw(&response.body, extension)
                .await
                .map_err(|e| JobError::from(e).with_report(report))?;
            for item in &mut items {
                item.doc.insert("raw_key".into(), Value::String(raw_key.clone()));
            }
            warning = ctx.deliver(items, &mut report).await?;
        }
        notes.extend(warning);
        let warning = (!notes.is_empty()).then(|| notes.join("; "));
        let next = Cursor {
            etag: response.header("etag").map(String::from),
            last_modified: response.header("last-modified").map(String::from),
            seen: now_seen,
            articles: pending,
        };
        *ctx.cursor = serde_json::to_value(next).unwrap_or(Value::Null);
        Ok(RunOutcome { report, next: next_run(feed.ttl, max_age), warning })
    }
}

/// What became of an entry's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// Extracted (or there is no page to extract).
    Done,
    /// The page could not be had or read: noted in the document, tried again
    /// in a later run (a bounded number of times).
    Failed,
}

/// Fetches the entry's page and adds its main text and top image to the
/// document, archiving both. A page that cannot be had is noted in the
/// document (`article_error`), not a failure of the run; only the sinks
/// failing fails it.
async fn add_article(ctx: &mut RunContext<'_>, item: &mut Item, report: &mut RunReport) -> Result<Page, JobError> {
    let Some(link) = item.doc.get("link").and_then(Value::as_str).and_then(|l| Url::parse(l).ok()) else {
        return Ok(Page::Done);
    };
    let page = match ctx.fetch.get(&Request::get(link.clone(), "text/html, application/xhtml+xml;q=0.9")).await {
        Ok(page) => page,
        Err(FetchError::LeaseExpired) => return Err(FetchError::LeaseExpired.into()),
        Err(error) => {
            item.doc.insert("article_error".into(), json!(error.to_string()));
            return Ok(Page::Failed);
        }
    };
    report.bytes_fetched += page.body.len() as u64;
    let (body, page_url) = (page.body.clone(), page.url.clone());
    let found = match cpu::run("article extraction", EXTRACT_BUDGET, move || article::extract(&body, &page_url)).await {
        Ok(Ok(found)) => found,
        Ok(Err(refused)) => {
            item.doc.insert("article_error".into(), json!(refused));
            return Ok(Page::Failed);
        }
        Err(error) => {
            item.doc.insert("article_error".into(), json!(error.to_string()));
            return Ok(Page::Failed);
        }
    };
    let html_key = ctx.output.put_raw(&page.body, "html").await?;
    item.doc.insert("article_html_key".into(), json!(html_key));
    item.doc.insert("article_text".into(), json!(found.text));
    let published = found.published.as_deref().and_then(dates::parse_date).map(|t| t.to_rfc3339());
    for (field, value) in [
        ("article_title", found.title),
        ("article_byline", found.byline),
        ("article_excerpt", found.excerpt),
        ("article_language", found.language),
        ("article_published", published),
    ] {
        if let Some(value) = value {
            item.doc.insert(field.into(), json!(value));
        }
    }
    let Some(image_url) = found.image else { return Ok(Page::Done) };
    item.doc.insert("article_image".into(), json!(image_url.as_str()));
    match ctx.fetch.get(&Request::get(image_url, "image/*")).await {
        Ok(image) => {
            report.bytes_fetched += image.body.len() as u64;
            let (ext, content_type) = image.image_type();
            let key = ctx.output.put_media(image.body, ext, content_type).await?;
            item.doc.insert("article_image_key".into(), json!(key));
        }
        Err(error) => {
            item.doc.insert("article_error".into(), json!(format!("top image: {error}")));
        }
    }
    Ok(Page::Done)
}

/// Parses a feed (`feed.rs`); relative links resolve against `base`.
/// Linear in the body's size; CPU-heavy for big feeds, so runs call it
/// through `crate::cpu`.
pub fn parse(body: &[u8], base: &Url) -> Result<Feed, JobError> {
    feed::parse(body, base).map_err(|e| JobError::new(format!("{base} is not a feed that can be read: {e}")))
}

/// The interval, unless the feed asks for longer (`ttl` in minutes,
/// `Cache-Control: max-age`).
fn next_run(ttl_minutes: Option<u32>, max_age: Option<Duration>) -> NextRun {
    let ttl = ttl_minutes.map(|m| Duration::from_secs(u64::from(m) * 60));
    match ttl.max(max_age) {
        Some(wait) if !wait.is_zero() => NextRun::AtLeast(wait.min(MAX_FEED_DELAY)),
        _ => NextRun::Interval,
    }
}

/// An entry's `_id`: the SHA-256 of the feed URL and what identifies the
/// entry — its own id, else its link, else its content (title, dates,
/// summary, content, enclosures) — so reading the same entry again,
/// however often, lands on the same document.
pub fn entry_id(feed_url: &Url, entry: &Entry) -> String {
    let key = match (&entry.id, &entry.link) {
        (Some(id), _) => id.clone(),
        (None, Some(link)) => link.clone(),
        (None, None) => {
            let time =
                |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp().to_string()).unwrap_or_default();
            let enclosures: Vec<&str> = entry.enclosures.iter().map(|e| e.url.as_str()).collect();
            let fields = [
                entry.title.clone().unwrap_or_default(),
                time(entry.published),
                time(entry.updated),
                entry.summary.clone().unwrap_or_default(),
                entry.content.clone().unwrap_or_default(),
                enclosures.join(" "),
            ];
            format!("content:{}", sha256_hex(fields.join("\n").as_bytes()))
        }
    };
    sha256_hex(format!("{feed_url}\n{key}").as_bytes())
}

/// 12 hex digits of the entry's id and update time: a changed entry is
/// delivered again (same `_id`: it replaces the old document).
fn seen_mark(id: &str, entry: &Entry) -> String {
    let updated = entry.updated.map(|t| t.timestamp()).unwrap_or_default();
    sha256_hex(format!("{id}/{updated}").as_bytes())[..12].to_string()
}

/// The document of one entry; `id` is its `_id`.
pub fn item(feed: &Feed, entry: &Entry, feed_url: &Url, id: String) -> Item {
    let mut doc = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() && value != json!([]) {
            doc.insert(key.to_string(), value);
        }
    };
    put("guid", json!(entry.id));
    put("title", json!(entry.title));
    put("link", json!(entry.link));
    put("authors", json!(entry.authors.iter().filter_map(|p| p.name.as_deref()).collect::<Vec<_>>()));
    put("author_emails", json!(entry.authors.iter().filter_map(|p| p.email.as_deref()).collect::<Vec<_>>()));
    put("categories", json!(entry.categories.iter().map(|c| c.term.as_str()).collect::<Vec<_>>()));
    put("category_labels", json!(entry.categories.iter().filter_map(|c| c.label.as_deref()).collect::<Vec<_>>()));
    for (field, html) in [("summary", &entry.summary), ("content", &entry.content)] {
        if let Some(html) = html {
            put(field, json!(html));
            put(&format!("{field}_safe"), json!(self::html::safe(html)));
            put(&format!("{field}_text"), json!(self::html::text(html)));
        }
    }
    put("published", json!(entry.published.map(|t| t.to_rfc3339())));
    put("updated", json!(entry.updated.map(|t| t.to_rfc3339())));
    let enclosures: Vec<Value> = entry
        .enclosures
        .iter()
        .map(|e| {
            let mut enclosure = json!({"url": e.url});
            if let Some(mime_type) = &e.mime_type {
                enclosure["type"] = json!(mime_type);
            }
            if let Some(length) = e.length {
                enclosure["length"] = json!(length);
            }
            enclosure
        })
        .collect();
    put("enclosures", json!(enclosures));
    put("thumbnails", json!(entry.thumbnails));
    put("image", json!(entry.image));
    put("duration", json!(entry.duration));
    put("base", json!(entry.base));
    put("feed_title", json!(feed.title));
    put("feed_link", json!(feed.link));
    put("feed_language", json!(feed.language));
    put("feed_url", json!(feed_url.as_str()));
    Item { id, doc, raw: None }
}

#[cfg(test)]
mod tests;
