//! `twitter`: posts from X API v2, by recent search (`/2/tweets/search/recent`)
//! or a user's timeline (`/2/users/:id/tweets`). Authentication by an app
//! bearer token or OAuth 1.0a user context (four secrets, HMAC-SHA1 signed
//! with oauth1-request). The `_id` is the tweet id; the author and media
//! expansions are stored with the tweet; media may be archived.
//!
//! Cursor: `since_id` (the newest tweet delivered) and, while a pass pages
//! back through `next_token`, the page to continue from and the newest id
//! of that pass. The first run reads the newest `max_pages` pages (no
//! backfill of the whole week); later runs read everything newer than
//! `since_id`, `max_pages` pages per run, continuing on the next run.
//! `x-rate-limit-remaining` / `x-rate-limit-reset` (Unix time) are honoured:
//! an exhausted budget or a 429 waits for the reset.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap};
use ingest_model::{JobParams, ParamEnum, ParamRule, Secret};
use ingest_sinks::Item;
use oauth1_request as oauth;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, JobType, NextRun, ONE_LINE, RunContext, RunOutcome, RunReport, base_url};
use crate::fetch::{FencedFetcher, FetchError, Request, Response};

pub const NAME: &str = "twitter";

const TWEET_FIELDS: &str = "attachments,author_id,conversation_id,created_at,entities,lang,possibly_sensitive,public_metrics,referenced_tweets";
const EXPANSIONS: &str = "attachments.media_keys,author_id";
const USER_FIELDS: &str = "created_at,description,name,profile_image_url,public_metrics,username,verified";
const MEDIA_FIELDS: &str = "alt_text,duration_ms,height,media_key,preview_image_url,type,url,width";

/// The longest wait for a rate-limit reset (X's windows are 15 minutes).
const MAX_RESET_WAIT: Duration = Duration::from_secs(3600);

enum Auth {
    Bearer(String),
    OAuth1(oauth::Token<String, String>),
}

enum Source {
    Search(String),
    Timeline(String),
}

pub struct Twitter {
    source: Source,
    auth: Auth,
    max_results: i64,
    max_pages: i64,
    archive_media: bool,
    base_url: Url,
}

/// Where the posts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Search,
    Timeline,
}

#[derive(Debug, Deserialize, JobParams)]
#[params(rule = ParamRule::required_if("query", "mode", "search"))]
#[params(rule = ParamRule::required_if("user_id", "mode", "timeline"))]
#[params(rule = ParamRule::one_of(
    &[&["bearer_token"], &["consumer_key", "consumer_secret", "access_token", "access_token_secret"]],
    true,
))]
pub struct TwitterParams {
    /// Recent search (needs query) or a user's timeline (needs user_id).
    #[param(default = "search")]
    mode: Mode,
    /// Search query, e.g. "from:rustlang -is:retweet" (one line, not blank).
    #[param(max_length = 4096, pattern = ONE_LINE)]
    query: Option<String>,
    /// Numeric id of the user whose timeline is read.
    #[param(max_length = 19, pattern = "[0-9]{1,19}")]
    user_id: Option<String>,
    /// Posts per request.
    #[param(default = 100, min = 10, max = 100)]
    max_results: i64,
    /// Requests per run at most; the rest follows next run.
    #[param(default = 5, min = 1, max = 50)]
    max_pages: i64,
    /// App bearer token (or the four OAuth 1.0a secrets).
    bearer_token: Option<Secret>,
    /// OAuth 1.0a consumer (API) key.
    consumer_key: Option<Secret>,
    /// OAuth 1.0a consumer (API) secret.
    consumer_secret: Option<Secret>,
    /// OAuth 1.0a access token.
    access_token: Option<Secret>,
    /// OAuth 1.0a access token secret.
    access_token_secret: Option<Secret>,
    /// Archive photos and video previews to object storage.
    #[param(default = false)]
    archive_media: bool,
    /// X API base URL.
    #[param(default = "https://api.x.com/")]
    base_url: Url,
}

impl JobType for Twitter {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "Indexes posts from X (Twitter) API v2: a recent search or a user's timeline, once each.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(30);
    type Params = TwitterParams;

    fn properties() -> Value {
        let keyword = json!({"type": "keyword", "ignore_above": 2048});
        let long = json!({"type": "long"});
        json!({
            "tweet_id": keyword, "text": {"type": "text"}, "lang": keyword, "published": {"type": "date"},
            "author_id": keyword, "conversation_id": keyword, "link": keyword, "possibly_sensitive": {"type": "boolean"},
            "hashtags": keyword, "mentions": keyword, "urls": keyword, "source": keyword,
            "referenced_tweets": {"properties": {"type": keyword, "id": keyword}},
            "metrics": {"properties": {"retweet_count": long, "reply_count": long, "like_count": long,
                "quote_count": long, "bookmark_count": long, "impression_count": long}},
            "author": {"properties": {"id": keyword, "username": keyword, "name": {"type": "text"},
                "verified": {"type": "boolean"}, "profile_image_url": keyword}},
            "media": {"properties": {"media_key": keyword, "type": keyword, "url": keyword, "alt_text": {"type": "text"},
                "object_key": keyword}},
        })
    }

    fn build(_job_id: &str, params: TwitterParams) -> Result<Self, String> {
        let source = match params.mode {
            Mode::Timeline => {
                Source::Timeline(params.user_id.clone().ok_or("user_id is required when mode is timeline")?)
            }
            Mode::Search => Source::Search(params.query.clone().ok_or("query is required when mode is search")?),
        };
        Ok(Twitter {
            source,
            auth: auth(&params)?,
            max_results: params.max_results,
            max_pages: params.max_pages,
            archive_media: params.archive_media,
            base_url: base_url(params.base_url),
        })
    }
}

/// Whether an X API error document (`{"errors": [{"parameters": {name: …}}]}`)
/// refuses the request parameter `name`.
fn refuses_parameter(body: &[u8], name: &str) -> bool {
    let Ok(document) = serde_json::from_slice::<Value>(body) else { return false };
    let errors = document.get("errors").and_then(Value::as_array);
    errors.into_iter().flatten().any(|error| error.pointer(&format!("/parameters/{name}")).is_some())
}

/// A bearer token, or all four OAuth 1.0a secrets; not both.
fn auth(params: &TwitterParams) -> Result<Auth, String> {
    let oauth = [
        ("consumer_key", &params.consumer_key),
        ("consumer_secret", &params.consumer_secret),
        ("access_token", &params.access_token),
        ("access_token_secret", &params.access_token_secret),
    ];
    let missing: Vec<&str> = oauth.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
    match (&params.bearer_token, missing.len()) {
        (Some(token), 4) => Ok(Auth::Bearer(token.expose().to_string())),
        (None, 0) => {
            let [Some(ck), Some(cs), Some(at), Some(ats)] = oauth.map(|(_, v)| v.as_ref().map(Secret::expose)) else {
                return Err("OAuth 1.0a secrets missing".into());
            };
            Ok(Auth::OAuth1(oauth::Token::from_parts(ck.into(), cs.into(), at.into(), ats.into())))
        }
        (Some(_), _) => Err("give bearer_token or the OAuth 1.0a secrets, not both".into()),
        (None, 4) => Err("credentials required: bearer_token, or consumer_key, consumer_secret, access_token \
                          and access_token_secret"
            .into()),
        (None, _) => Err(format!("OAuth 1.0a needs all four secrets; missing: {}", missing.join(", "))),
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The newest tweet delivered by a finished pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since_id: Option<String>,
    /// The page to continue from, while a pass is unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    /// The newest tweet of the unfinished pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest_id: Option<String>,
}

/// One page of an answer.
struct Page {
    tweets: Vec<Value>,
    users: HashMap<String, Value>,
    media: HashMap<String, Value>,
    newest_id: Option<String>,
    next_token: Option<String>,
    bytes: u64,
    headers: HeaderMap,
}

impl Twitter {
    fn endpoint(&self) -> Result<Url, JobError> {
        let path = match &self.source {
            Source::Search(_) => "2/tweets/search/recent".to_string(),
            Source::Timeline(user) => format!("2/users/{user}/tweets"),
        };
        self.base_url.join(&path).map_err(|e| JobError::new(format!("X API URL: {e}")))
    }

    fn query(&self, since_id: Option<&str>, next_token: Option<&str>) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("max_results", self.max_results.to_string()),
            ("tweet.fields", TWEET_FIELDS.to_string()),
            ("expansions", EXPANSIONS.to_string()),
            ("user.fields", USER_FIELDS.to_string()),
            ("media.fields", MEDIA_FIELDS.to_string()),
        ];
        if let Source::Search(q) = &self.source {
            query.push(("query", q.clone()));
        }
        if let Some(id) = since_id {
            query.push(("since_id", id.to_string()));
        }
        if let Some(token) = next_token {
            // Search pages with `next_token`, timelines with `pagination_token`.
            let name = if matches!(self.source, Source::Search(_)) { "next_token" } else { "pagination_token" };
            query.push((name, token.to_string()));
        }
        query
    }

    /// The request for one page, signed or with the bearer token.
    fn request(&self, since_id: Option<&str>, next_token: Option<&str>) -> Result<Request, JobError> {
        let endpoint = self.endpoint()?;
        let params = oauth::ParameterList::new(self.query(since_id, next_token));
        let authorization = match &self.auth {
            Auth::Bearer(token) => format!("Bearer {token}"),
            // The URI signed is the endpoint without its query; the query
            // parameters are signed as parameters.
            Auth::OAuth1(token) => oauth::get(endpoint.as_str(), &params, token, oauth::HMAC_SHA1),
        };
        let url = Url::parse(&oauth::to_query(endpoint.to_string(), &params))
            .map_err(|e| JobError::new(format!("X API URL: {e}")))?;
        Ok(Request::get(url, "application/json").header(AUTHORIZATION, &authorization)?)
    }

    async fn fetch(
        &self,
        fetch: &FencedFetcher,
        since_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Response, FetchError> {
        let request = self.request(since_id, token).map_err(|e| FetchError::Refused(e.message))?;
        fetch.get(&request).await
    }
}

/// One page of an answer, with its expansions indexed.
fn page(response: Response) -> Result<Page, String> {
    let answer: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("X answered something that is not JSON ({e}); is base_url the X API?"))?;
    let Some(meta) = answer.get("meta") else {
        // 200 with only `errors`: e.g. the timeline of a user that does not exist.
        let problem = answer.get("errors").map_or_else(|| "no data and no meta".to_string(), problems);
        return Err(format!("X API: {problem}"));
    };
    let index = |list: &str, key: &str| -> HashMap<String, Value> {
        let entries = answer.pointer(&format!("/includes/{list}")).and_then(Value::as_array);
        entries.into_iter().flatten().filter_map(|e| Some((e.get(key)?.as_str()?.to_string(), e.clone()))).collect()
    };
    let string = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(String::from);
    Ok(Page {
        tweets: answer.get("data").and_then(Value::as_array).cloned().unwrap_or_default(),
        users: index("users", "id"),
        media: index("media", "media_key"),
        newest_id: string(meta, "newest_id"),
        next_token: string(meta, "next_token"),
        bytes: response.body.len() as u64,
        headers: response.headers,
    })
}

impl Twitter {
    /// A tweet with its author and media: the document and the raw payload.
    fn item(&self, tweet: &Value, page: &Page) -> Option<Item> {
        let id = tweet.get("id")?.as_str()?.to_string();
        let time = tweet
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        let author = tweet.get("author_id").and_then(Value::as_str).and_then(|a| page.users.get(a));
        let media: Vec<&Value> = tweet
            .pointer("/attachments/media_keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|k| page.media.get(k.as_str()?))
            .collect();
        let mut doc = Map::new();
        doc.insert("tweet_id".into(), json!(id));
        for name in ["text", "lang", "author_id", "conversation_id", "possibly_sensitive", "referenced_tweets"] {
            if let Some(v) = tweet.get(name).filter(|v| !v.is_null()) {
                doc.insert(name.into(), v.clone());
            }
        }
        if let Some(metrics) = tweet.get("public_metrics") {
            doc.insert("metrics".into(), metrics.clone());
        }
        if let Some(time) = time {
            doc.insert("published".into(), json!(time.to_rfc3339()));
        }
        for (field, list, key) in [("hashtags", "hashtags", "tag"), ("mentions", "mentions", "username")] {
            let values = entity_values(tweet, list, key);
            if !values.is_empty() {
                doc.insert(field.into(), json!(values));
            }
        }
        let urls = entity_values(tweet, "urls", "expanded_url");
        if !urls.is_empty() {
            doc.insert("urls".into(), json!(urls));
        }
        if let Some(author) = author {
            if let Some(username) = author.get("username").and_then(Value::as_str) {
                doc.insert("link".into(), json!(format!("https://x.com/{username}/status/{id}")));
            }
            doc.insert("author".into(), author.clone());
        }
        if !media.is_empty() {
            doc.insert("media".into(), json!(media));
        }
        doc.insert(
            "source".into(),
            json!(match &self.source {
                Source::Search(q) => format!("search:{q}"),
                Source::Timeline(u) => format!("timeline:{u}"),
            }),
        );
        let raw = json!({"data": tweet, "includes": {"users": author.into_iter().collect::<Vec<_>>(), "media": media}});
        Some(Item { id, doc, raw: Some(Bytes::from(raw.to_string())) })
    }

    /// What a refused request means for the user.
    fn failure(&self, error: FetchError, report: RunReport) -> JobError {
        let message = match &error {
            FetchError::Status { status: 401, detail, .. } => format!(
                "X refused the credentials (401 {}): check {}",
                problem_text(detail),
                match self.auth {
                    Auth::Bearer(_) => "bearer_token",
                    Auth::OAuth1(_) => "consumer_key, consumer_secret, access_token and access_token_secret",
                }
            ),
            FetchError::Status { status: 403, detail, .. } => {
                format!(
                    "X refused access (403 {}): the app's access level may not include this endpoint",
                    problem_text(detail)
                )
            }
            FetchError::Status { status: 400, detail, .. } => {
                format!("X refused the request (400 {}): check query, user_id and max_results", problem_text(detail))
            }
            _ => return JobError { report, ..error.into() },
        };
        JobError { report, ..JobError::new(message) }
    }
}

/// Media to archive: photos, and the preview image of videos and GIFs.
async fn archive_media(ctx: &mut RunContext<'_>, item: &mut Item, report: &mut RunReport) -> Result<(), JobError> {
    let Some(Value::Array(media)) = item.doc.get_mut("media") else { return Ok(()) };
    for entry in media.iter_mut() {
        let url = entry.get("url").or_else(|| entry.get("preview_image_url")).and_then(Value::as_str);
        let Some(url) = url.and_then(|u| Url::parse(u).ok()) else { continue };
        match ctx.fetch.get(&Request::get(url, "image/*")).await {
            Ok(image) => {
                report.bytes_fetched += image.body.len() as u64;
                let (ext, content_type) = image.image_type();
                let key = ctx
                    .output
                    .put_media(image.body, ext, content_type)
                    .await
                    .map_err(|e| JobError::from(e).with_report(*report))?;
                entry["object_key"] = json!(key);
            }
            // Media that cannot be had is noted, not a failure of the run.
            Err(error) => entry["archive_error"] = json!(error.to_string()),
        }
    }
    Ok(())
}

#[async_trait]
impl Job for Twitter {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let mut cursor: Cursor = super::read_cursor(ctx.cursor)?;
        let mut report = RunReport::default();
        let mut pages = 0;
        let mut warning = None;
        let next = loop {
            let response = match self.fetch(ctx.fetch, cursor.since_id.as_deref(), cursor.next_token.as_deref()).await {
                Ok(response) => response,
                Err(FetchError::Status { status: 429, headers, .. }) => {
                    let wait = reset_in(&headers).unwrap_or(Duration::from_secs(15 * 60));
                    let message = format!("X rate limit reached; waiting {}s for the reset", wait.as_secs());
                    if pages == 0 {
                        return Err(JobError { retry_after: Some(wait), report, ..JobError::new(message) });
                    }
                    // What was delivered stays delivered; the pass continues after the reset.
                    warning = Some(message);
                    break NextRun::After(wait);
                }
                Err(FetchError::Status { status: 400, detail, body, .. })
                    if pages == 0 && cursor.since_id.is_some() && refuses_parameter(&body, "since_id") =>
                {
                    // Recent search keeps 7 days: a since_id older than that is refused.
                    tracing::info!(detail = %detail, "X refused since_id; reading the newest posts instead");
                    cursor = Cursor::default();
                    continue;
                }
                Err(error) => return Err(self.failure(error, report)),
            };
            let page = page(response).map_err(|message| JobError { report, ..JobError::new(message) })?;
            pages += 1;
            report.bytes_fetched += page.bytes;
            if cursor.next_token.is_none() {
                cursor.newest_id = page.newest_id.clone();
            }
            let mut items: Vec<Item> = page.tweets.iter().filter_map(|t| self.item(t, &page)).collect();
            if self.archive_media {
                for item in &mut items {
                    archive_media(ctx, item, &mut report).await?;
                }
            }
            report.items_fetched += items.len() as u64;
            if let Some(refused) = ctx.deliver(items, &mut report).await? {
                warning = Some(refused);
            }
            let first_pass = cursor.since_id.is_none();
            cursor.next_token = page.next_token;
            let exhausted = remaining(&page.headers) == Some(0);
            let finished = cursor.next_token.is_none() || (first_pass && pages >= self.max_pages);
            if finished {
                cursor = Cursor { since_id: cursor.newest_id.take().or(cursor.since_id), ..Cursor::default() };
            }
            if exhausted {
                break NextRun::AtLeast(reset_in(&page.headers).unwrap_or(Duration::from_secs(15 * 60)));
            }
            if finished {
                break NextRun::Interval;
            }
            if pages >= self.max_pages {
                // A backlog: continue soon, within the rate limit.
                break NextRun::After(Duration::from_secs(1));
            }
        };
        *ctx.cursor = serde_json::to_value(&cursor).unwrap_or(Value::Null);
        Ok(RunOutcome { report, next, warning })
    }
}

/// The values of one kind of entity (`entities.hashtags[].tag`, ...).
fn entity_values<'a>(tweet: &'a Value, list: &str, key: &str) -> Vec<&'a str> {
    let entries = tweet.pointer(&format!("/entities/{list}")).and_then(Value::as_array);
    entries.into_iter().flatten().filter_map(|e| e.get(key)?.as_str()).collect()
}

/// `x-rate-limit-remaining`.
fn remaining(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-rate-limit-remaining")?.to_str().ok()?.trim().parse().ok()
}

/// Time until `x-rate-limit-reset` (Unix seconds), at least a second.
fn reset_in(headers: &HeaderMap) -> Option<Duration> {
    let reset: u64 = headers.get("x-rate-limit-reset")?.to_str().ok()?.trim().parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)).min(MAX_RESET_WAIT))
}

/// X's problem objects (`{"title", "detail"}`, `errors[]`) in a line.
fn problems(errors: &Value) -> String {
    let list = errors.as_array().map(Vec::as_slice).unwrap_or_default();
    let texts: Vec<String> = list.iter().take(3).map(problem_of).collect();
    if texts.is_empty() { errors.to_string() } else { texts.join("; ") }
}

fn problem_of(problem: &Value) -> String {
    let field = |name: &str| problem.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    match (field("title"), field("detail").or_else(|| field("message"))) {
        (Some(title), Some(detail)) if title != detail => format!("{title}: {detail}"),
        (Some(text), _) | (None, Some(text)) => text.to_string(),
        (None, None) => problem.to_string(),
    }
}

/// The readable part of an error body: X's problem object if it parses.
fn problem_text(detail: &str) -> String {
    match serde_json::from_str::<Value>(detail) {
        Ok(Value::Object(problem)) if problem.contains_key("errors") && !problem.contains_key("title") => {
            problems(&problem["errors"])
        }
        Ok(problem @ Value::Object(_)) => problem_of(&problem),
        _ => detail.to_string(),
    }
}

#[cfg(test)]
mod tests;
