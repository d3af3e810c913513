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
use ingest_model::{JobTypeSpec, ParamKind, ParamRule, ParamSpec};
use ingest_sinks::Item;
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, NextRun, Params, RunContext, RunOutcome, RunReport};
use crate::fetch::{FetchError, Request};

pub const NAME: &str = "http_json";

/// A JSON Pointer ("" or "/a/0/b").
const POINTER: &str = "(/([^/~]|~[01])*)*";

pub fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: NAME.to_string(),
        description: "Polls any JSON API and indexes the items of its answers, page by page.".to_string(),
        params: vec![
            ParamSpec::new("url", ParamKind::Url, "The API's URL, with any fixed query parameters.").required(),
            ParamSpec::new("method", ParamKind::Enum, "HTTP method.").allowed(&["GET", "POST"]).default_value("GET"),
            ParamSpec::new("body", ParamKind::Json, "JSON body sent with POST.").max_length(65_536),
            ParamSpec::new("headers", ParamKind::List, "Extra headers, each \"Name: value\" (not secret).")
                .max_length(20)
                .pattern(HEADER_LINE),
            ParamSpec::new("auth_header", ParamKind::String, "Name of the header that carries auth_value.")
                .default_value("Authorization")
                .max_length(100)
                .pattern("[A-Za-z0-9-]+"),
            ParamSpec::new(
                "auth_value",
                ParamKind::Secret,
                "Secret value of auth_header, e.g. \"Bearer …\" (optional).",
            ),
            ParamSpec::new(
                "items_pointer",
                ParamKind::String,
                "JSON Pointer to the items array (\"\": the answer is the array).",
            )
            .default_value("")
            .max_length(500)
            .pattern(POINTER),
            ParamSpec::new("id_pointer", ParamKind::String, "JSON Pointer to each item's id, e.g. /id.")
                .required()
                .max_length(500)
                .pattern(POINTER),
            ParamSpec::new("time_pointer", ParamKind::String, "JSON Pointer to each item's RFC 3339 time (optional).")
                .max_length(500)
                .pattern(POINTER),
            ParamSpec::new("cursor_param", ParamKind::String, "Query parameter that takes the cursor (optional).")
                .max_length(100),
            ParamSpec::new(
                "cursor_pointer",
                ParamKind::String,
                "JSON Pointer to the next cursor in an answer (optional).",
            )
            .max_length(500)
            .pattern(POINTER),
            ParamSpec::new("max_pages", ParamKind::Integer, "Pages followed per run.")
                .default_value(10)
                .bounds(Some(1.0), Some(100.0)),
        ],
        default_interval: Duration::from_secs(10 * 60),
        min_interval: Duration::from_secs(10),
        rules: vec![ParamRule::one_of(&[&["cursor_param", "cursor_pointer"]], false)],
    }
}

pub fn properties() -> Value {
    json!({"source_url": {"type": "keyword"}, "item_time": {"type": "date"}, "data": {"type": "object", "enabled": false}})
}

pub struct HttpJson {
    url: Url,
    body: Option<String>,
    headers: Vec<(HeaderName, String)>,
    items_pointer: String,
    id_pointer: String,
    time_pointer: Option<String>,
    cursor: Option<(String, String)>,
    max_pages: usize,
}

pub fn build(params: &Params<'_>) -> Result<Box<dyn Job>, String> {
    let url = Url::parse(params.string("url").ok_or("url is required")?).map_err(|e| format!("url: {e}"))?;
    let body = match params.string("method") {
        Some("POST") => {
            let body = params.string("body").unwrap_or("{}");
            serde_json::from_str::<Value>(body).map_err(|e| format!("body: not JSON ({e})"))?;
            Some(body.to_string())
        }
        _ => None,
    };
    let mut headers = Vec::new();
    for line in params.list("headers") {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("headers: '{line}' is not \"Name: value\""))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("headers: bad name in '{line}'"))?;
        headers.push((name, value.trim().to_string()));
    }
    if let Some(secret) = params.secret("auth_value") {
        let name = params.string("auth_header").unwrap_or("Authorization");
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "auth_header: not a header name".to_string())?;
        headers.push((name, secret.to_string()));
    }
    let given = |name: &str| params.string(name).filter(|s| !s.is_empty());
    let cursor = match (given("cursor_param"), given("cursor_pointer")) {
        (Some(param), Some(pointer)) => Some((param.to_string(), pointer.to_string())),
        (None, None) => None,
        _ => return Err("cursor_param and cursor_pointer go together".into()),
    };
    Ok(Box::new(HttpJson {
        url,
        body,
        headers,
        items_pointer: params.string("items_pointer").unwrap_or_default().to_string(),
        id_pointer: params.string("id_pointer").ok_or("id_pointer is required")?.to_string(),
        time_pointer: params.string("time_pointer").map(String::from),
        cursor,
        max_pages: params.integer("max_pages").unwrap_or(10).max(1) as usize,
    }))
}

impl HttpJson {
    fn request(&self, cursor: Option<&str>) -> Result<Request, JobError> {
        let mut url = self.url.clone();
        if let (Some((param, _)), Some(value)) = (&self.cursor, cursor) {
            let kept: Vec<(String, String)> =
                url.query_pairs().filter(|(k, _)| k != param).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            url.query_pairs_mut().clear().extend_pairs(kept).append_pair(param, value);
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
        doc.insert("source_url".into(), json!(crate::fetch::shown(&self.url)));
        if let Some(time) = time {
            doc.insert("item_time".into(), json!(time.to_rfc3339()));
        }
        doc.insert("data".into(), value.clone());
        Ok(Item { id, doc, raw: Some(raw) })
    }
}

/// The page to continue from (the API's own cursor value).
#[derive(Debug, Default, serde::Deserialize)]
struct HttpJsonCursor {
    #[serde(default)]
    cursor: Option<String>,
}

/// A header line `build` can send: a token name, a colon, then a value
/// without control characters (tab allowed).
const HEADER_LINE: &str = r"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*:[^\x00-\x08\x0A-\x1F\x7F]*";

#[async_trait]
impl Job for HttpJson {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let mut report = RunReport::default();
        let mut warning = None;
        for _page in 0..self.max_pages {
            let HttpJsonCursor { cursor } = super::read_cursor(ctx.cursor)?;
            let request = self.request(cursor.as_deref())?;
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
            report.items_fetched += items.len() as u64;
            warning = ctx.deliver(items, &mut report).await?.or(warning);
            let next = self.cursor.as_ref().and_then(|(_, pointer)| match answer.pointer(pointer) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
            match next {
                Some(next) if Some(&next) != cursor.as_ref() => *ctx.cursor = json!({"cursor": next}),
                _ => break,
            }
        }
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}

#[cfg(test)]
mod tests;
