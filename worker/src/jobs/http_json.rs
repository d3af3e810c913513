//! `http_json`: any JSON API without code. A URL and method, headers (one of
//! them may carry a secret, e.g. `Authorization`), a JSON Pointer to the
//! items array, a pointer to each item's id, and an optional cursor: a
//! query parameter filled from a field of the previous response, followed
//! page by page. Each item is a document with that id; the cursor is kept
//! only past delivered pages.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderName;
use ingest_model::{JobParams, JsonText, ParamEnum, ParamRule, Secret};
use ingest_sinks::Item;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::{HEADER_LINE, Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport, header_lines};
use crate::fetch::{FetchError, Request};

pub const NAME: &str = "http_json";

/// A JSON Pointer ("" or "/a/0/b").
const POINTER: &str = "(/([^/~]|~[01])*)*";

pub struct HttpJson {
    url: Url,
    body: Option<String>,
    headers: Vec<(HeaderName, String)>,
    items_pointer: String,
    id_pointer: String,
    time_pointer: Option<String>,
    cursor: Option<(String, String)>,
    paging: Paging,
    page_param: String,
    page_start: u64,
    start: Start,
    max_pages: usize,
    /// Prefix of document ids (`<scope>:<item id>`); `None`: raw ids.
    id_scope: Option<String>,
}

/// The request's HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// How the next page is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum Paging {
    /// A value from the answer (`cursor_pointer`) in a query parameter
    /// (`cursor_param`); one page when they are not given.
    Cursor,
    /// A page number in `page_param`, from `page_start`, until a page is empty.
    Page,
    /// An item offset in `page_param`, from 0, until a page is empty.
    Offset,
    /// The `Link: <…>; rel="next"` header of each answer (RFC 8288).
    Link,
}

/// Where a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Where the last run stopped (the last page is read again, for what
    /// was added to it).
    Resume,
    /// At the first page, every run: for APIs that list the newest first.
    Head,
}

/// How a document's `_id` comes from its item's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum Ids {
    /// Scoped by the API's URL: two jobs on different APIs whose items are
    /// both "1" keep two documents.
    Source,
    /// The item's id as it is (to update documents by the API's own ids).
    Raw,
}

#[derive(Debug, Deserialize, JobParams)]
#[params(rule = ParamRule::one_of(&[&["cursor_param", "cursor_pointer"]], false))]
pub struct HttpJsonParams {
    /// The API's URL, with any fixed query parameters.
    url: Url,
    /// HTTP method.
    #[param(default = "GET")]
    method: Method,
    /// JSON body sent with POST.
    #[param(max_length = 65_536)]
    body: Option<JsonText>,
    /// Extra headers, each "Name: value" (not secret).
    #[param(max_length = 20, pattern = HEADER_LINE)]
    headers: Option<Vec<String>>,
    /// Name of the header that carries auth_value.
    #[param(default = "Authorization", max_length = 100, pattern = "[A-Za-z0-9-]+")]
    auth_header: String,
    /// Secret value of auth_header, e.g. "Bearer …" (optional).
    auth_value: Option<Secret>,
    /// JSON Pointer to the items array ("": the answer is the array).
    #[param(default = "", max_length = 500, pattern = POINTER)]
    items_pointer: String,
    /// JSON Pointer to each item's id, e.g. /id.
    #[param(max_length = 500, pattern = POINTER)]
    id_pointer: String,
    /// JSON Pointer to each item's RFC 3339 time (optional).
    #[param(max_length = 500, pattern = POINTER)]
    time_pointer: Option<String>,
    /// Query parameter that takes the cursor (optional).
    #[param(max_length = 100)]
    cursor_param: Option<String>,
    /// JSON Pointer to the next cursor in an answer (optional).
    #[param(max_length = 500, pattern = POINTER)]
    cursor_pointer: Option<String>,
    /// How the next page is asked for: cursor (cursor_param and cursor_pointer), page (a page number), offset
    /// (an item offset) or link (the Link rel="next" header).
    #[param(default = "cursor")]
    paging: Paging,
    /// Query parameter of the page number or offset (paging page or offset).
    #[param(default = "page", max_length = 100, pattern = "[A-Za-z0-9_.~-]+")]
    page_param: String,
    /// The first page's number (paging page).
    #[param(default = 1, min = 0, max = 1_000_000)]
    page_start: u64,
    /// Where each run starts: resume (where the last one stopped) or head (the first page: APIs that list the
    /// newest first).
    #[param(default = "resume")]
    start: Start,
    /// Pages followed per run.
    #[param(default = 10, min = 1, max = 100)]
    max_pages: usize,
    /// Document ids: "source" (the item's id scoped by the API's URL, so jobs on different APIs never overwrite
    /// each other's documents) or "raw" (the item's id as is).
    #[param(default = "source")]
    ids: Ids,
}

impl JobType for HttpJson {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Polls any JSON API and indexes the items of its answers, page by page.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(10);
    const PACED_BY: Option<&'static str> = Some("url");
    type Params = HttpJsonParams;

    fn properties() -> Value {
        json!({
            "item_id": {"type": "keyword"}, "source_url": {"type": "keyword"}, "item_time": {"type": "date"},
            // Searchable by path (`data.name: one`), every leaf a keyword.
            "data": {"type": "flattened", "ignore_above": 8191},
        })
    }

    fn build(_job_id: &str, params: HttpJsonParams) -> Result<Self, String> {
        let body = (params.method == Method::Post).then(|| params.body.map_or_else(|| "{}".to_string(), |body| body.0));
        let mut headers = header_lines(&params.headers.unwrap_or_default())?;
        if let Some(secret) = params.auth_value {
            let name = HeaderName::from_bytes(params.auth_header.as_bytes())
                .map_err(|_| "auth_header: not a header name".to_string())?;
            headers.push((name, secret.expose().to_string()));
        }
        let cursor = match (params.cursor_param, params.cursor_pointer) {
            (Some(param), Some(pointer)) => Some((param, pointer)),
            (None, None) => None,
            _ => return Err("cursor_param and cursor_pointer go together".into()),
        };
        // The scope: a hash of the API's URL as configured (it may hold a key).
        let id_scope = (params.ids == Ids::Source)
            .then(|| ingest_sinks::objects::sha256_hex(params.url.as_str().as_bytes())[..16].to_string());
        Ok(HttpJson {
            url: params.url,
            body,
            headers,
            items_pointer: params.items_pointer,
            id_pointer: params.id_pointer,
            time_pointer: params.time_pointer,
            id_scope,
            cursor,
            paging: params.paging,
            page_param: params.page_param,
            page_start: params.page_start,
            start: params.start,
            max_pages: params.max_pages,
        })
    }
}

impl HttpJson {
    /// The request for the page at `at`.
    fn request(&self, at: &HttpJsonCursor) -> Result<Request, JobError> {
        let mut url = self.url.clone();
        let param = match self.paging {
            Paging::Cursor => self.cursor.as_ref().zip(at.cursor.clone()).map(|((param, _), value)| (param, value)),
            Paging::Page => Some((&self.page_param, at.page.unwrap_or(self.page_start).to_string())),
            Paging::Offset => Some((&self.page_param, at.offset.unwrap_or(0).to_string())),
            Paging::Link => {
                if let Some(next) = &at.next {
                    url = Url::parse(next).map_err(|e| JobError::new(format!("the stored next link {next}: {e}")))?;
                }
                None
            }
        };
        if let Some((param, value)) = param {
            let kept: Vec<(String, String)> =
                url.query_pairs().filter(|(k, _)| k != param).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            url.query_pairs_mut().clear().extend_pairs(kept).append_pair(param, &value);
        }
        let mut request = Request::get(url, "application/json");
        request.body = self.body.clone().map(|b| ("application/json", b));
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value)?;
        }
        Ok(request)
    }

    fn item(&self, index: usize, value: &Value, raw: Bytes) -> Result<Item, JobError> {
        let id = match value.pointer(&self.id_pointer) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(JobError::new(format!("item {index} has no id at {}", self.id_pointer))),
        };
        let time = self
            .time_pointer
            .as_deref()
            .and_then(|p| value.pointer(p))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let mut doc = Map::new();
        doc.insert("item_id".into(), json!(id));
        doc.insert("source_url".into(), json!(crate::fetch::shown(&self.url)));
        if let Some(time) = time {
            doc.insert("item_time".into(), json!(time.to_rfc3339()));
        }
        // An object as it is; another value (an API listing plain ids or
        // strings) under `value`, so `data` is always an object.
        let data = if value.is_object() { value.clone() } else { json!({"value": value}) };
        doc.insert("data".into(), data);
        let id = match &self.id_scope {
            Some(scope) => format!("{scope}:{id}"),
            None => id,
        };
        Ok(Item { id, doc, raw: Some(raw) })
    }
}

/// The page to continue from (the API's own cursor value).
/// Where the next run resumes; one field, by the paging in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct HttpJsonCursor {
    /// The API's own cursor value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// The next link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against
/// the answer's URL.
fn next_link(response: &crate::fetch::Response) -> Option<String> {
    for header in response.headers.get_all(http::header::LINK) {
        let Ok(header) = header.to_str() else { continue };
        for link in header.split(',') {
            let (target, params) = link.split_once(';').unwrap_or((link, ""));
            let Some(target) = target.trim().strip_prefix('<').and_then(|t| t.strip_suffix('>')) else { continue };
            let next = params.split(';').any(|p| {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                name.trim().eq_ignore_ascii_case("rel")
                    && value.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if next {
                return response.url.join(target).ok().map(String::from);
            }
        }
    }
    None
}

#[async_trait]
impl Job for HttpJson {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let mut report = RunReport::default();
        let mut warning = None;
        // Head: every run from the first page, nothing kept between runs.
        let mut at: HttpJsonCursor =
            if self.start == Start::Head { HttpJsonCursor::default() } else { super::read_cursor(ctx.cursor)? };
        for _page in 0..self.max_pages {
            let request = self.request(&at)?;
            let response = ctx.fetch.get(&request).await.map_err(|e| match e {
                FetchError::Status { status: 401 | 403, .. } => {
                    JobError { report, ..JobError::new(format!("{e}: check auth_value (and auth_header)")) }
                }
                other => JobError { report, ..other.into() },
            })?;
            report.bytes_fetched += response.body.len() as u64;
            let answer: Value = serde_json::from_slice(&response.body).map_err(|e| JobError {
                report,
                ..JobError::new(format!("the API answered something else than JSON: {e}"))
            })?;
            let Some(list) = answer.pointer(&self.items_pointer).and_then(Value::as_array) else {
                let message = format!("no items array at '{}' in the answer", self.items_pointer);
                return Err(JobError { report, ..JobError::new(message) });
            };
            let items = list
                .iter()
                .enumerate()
                .map(|(i, v)| self.item(i, v, Bytes::from(v.to_string())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| JobError { report, ..e })?;
            let count = items.len() as u64;
            report.items_fetched += count;
            warning = ctx.deliver(items, &mut report).await?.or(warning);
            // The next page, if there is one; the cursor moves only past
            // delivered pages.
            let next = match self.paging {
                Paging::Cursor => {
                    let next = self.cursor.as_ref().and_then(|(_, pointer)| match answer.pointer(pointer) {
                        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        Some(Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    });
                    next.filter(|n| Some(n) != at.cursor.as_ref())
                        .map(|cursor| HttpJsonCursor { cursor: Some(cursor), ..HttpJsonCursor::default() })
                }
                // An empty page ends the pass; the next run asks for it again.
                Paging::Page => (count > 0).then(|| HttpJsonCursor {
                    page: Some(at.page.unwrap_or(self.page_start) + 1),
                    ..HttpJsonCursor::default()
                }),
                Paging::Offset => (count > 0).then(|| HttpJsonCursor {
                    offset: Some(at.offset.unwrap_or(0) + count),
                    ..HttpJsonCursor::default()
                }),
                Paging::Link => next_link(&response)
                    .filter(|n| Some(n) != at.next.as_ref())
                    .map(|next| HttpJsonCursor { next: Some(next), ..HttpJsonCursor::default() }),
            };
            let Some(next) = next else { break };
            at = next;
            if self.start == Start::Resume {
                *ctx.cursor = serde_json::to_value(&at).unwrap_or(Value::Null);
            }
        }
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}

#[cfg(test)]
mod tests;
