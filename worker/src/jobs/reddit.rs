//! `reddit`: a subreddit listing (new, hot, top, rising) as JSON, with the
//! descriptive User-Agent Reddit's rules require, optionally through OAuth2
//! application credentials (client credentials grant; both secret). The
//! `_id` is the post's fullname (`t3_…`); the cursor keeps the fullnames of
//! the last listing so a post is delivered once while it stays listed.
//! `X-Ratelimit-Remaining` / `X-Ratelimit-Reset` (seconds) are honoured: an
//! exhausted budget waits for the reset, and so does a 429.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, USER_AGENT};
use ingest_model::typed::variant_name;
use ingest_model::{JobParams, ParamEnum, ParamRule, Secret};
use ingest_sinks::Item;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport};
use crate::fetch::{FencedFetcher, FetchError, Request};

pub const NAME: &str = "reddit";

struct Credentials {
    client_id: String,
    client_secret: String,
}

pub struct Reddit {
    subreddit: String,
    listing: String,
    limit: i64,
    user_agent: String,
    credentials: Option<Credentials>,
    base_url: Url,
    oauth_url: Url,
    token_url: Url,
    /// Access token and when it expires.
    token: Option<(String, tokio::time::Instant)>,
}

/// A subreddit listing.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ParamEnum)]
#[serde(rename_all = "lowercase")]
pub enum Listing {
    New,
    Hot,
    Top,
    Rising,
}

#[derive(Debug, Deserialize, JobParams)]
#[params(rule = ParamRule::one_of(&[&["client_id", "client_secret"]], false))]
pub struct RedditParams {
    /// The subreddit's name, without r/.
    #[param(max_length = 21, pattern = "[A-Za-z0-9_]{2,21}")]
    subreddit: String,
    /// Which listing.
    #[param(default = "new")]
    listing: Listing,
    /// Posts per request.
    #[param(default = 100, min = 1, max = 100)]
    limit: i64,
    /// A descriptive User-Agent, as Reddit requires, e.g. "linux:ingest-news:1.0 (by /u/yourname)".
    #[param(max_length = 200)]
    user_agent: String,
    /// OAuth2 application id (optional; with client_secret).
    client_id: Option<Secret>,
    /// OAuth2 application secret (optional).
    client_secret: Option<Secret>,
    /// Listings without OAuth.
    #[param(default = "https://www.reddit.com/")]
    base_url: Url,
    /// Listings with OAuth.
    #[param(default = "https://oauth.reddit.com/")]
    oauth_url: Url,
    /// OAuth2 token endpoint.
    #[param(default = "https://www.reddit.com/api/v1/access_token")]
    token_url: Url,
}

impl JobType for Reddit {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Indexes the posts of a subreddit listing, once each.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(30);
    type Params = RedditParams;

    fn properties() -> Value {
        let keyword = json!({"type": "keyword", "ignore_above": 2048});
        json!({
            "fullname": keyword, "subreddit": keyword, "author": keyword, "title": {"type": "text"},
            "selftext": {"type": "text"}, "url": keyword, "permalink": keyword, "domain": keyword,
            "score": {"type": "long"}, "num_comments": {"type": "long"}, "over_18": {"type": "boolean"},
            "flair": keyword, "published": {"type": "date"}, "listing": keyword,
        })
    }

    fn build(_job_id: &str, params: RedditParams) -> Result<Self, String> {
        let credentials = match (params.client_id, params.client_secret) {
            (Some(id), Some(secret)) => {
                Some(Credentials { client_id: id.expose().into(), client_secret: secret.expose().into() })
            }
            (None, None) => None,
            _ => return Err("client_id and client_secret go together: give both or neither".into()),
        };
        Ok(Reddit {
            subreddit: params.subreddit,
            listing: variant_name(&params.listing),
            limit: params.limit,
            user_agent: params.user_agent,
            credentials,
            base_url: params.base_url,
            oauth_url: params.oauth_url,
            token_url: params.token_url,
            token: None,
        })
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// Fullnames of the last listing read.
    #[serde(default)]
    seen: Vec<String>,
}

impl Reddit {
    async fn access_token(&mut self, fetch: &FencedFetcher) -> Result<Option<String>, JobError> {
        let Some(credentials) = &self.credentials else { return Ok(None) };
        if let Some((token, until)) = &self.token
            && tokio::time::Instant::now() < *until
        {
            return Ok(Some(token.clone()));
        }
        let basic = base64_basic(&credentials.client_id, &credentials.client_secret);
        let mut request = Request::get(self.token_url.clone(), "application/json")
            .header(AUTHORIZATION, &basic)?
            .header(USER_AGENT, &self.user_agent)?;
        request.body = Some(("application/x-www-form-urlencoded", "grant_type=client_credentials".into()));
        let response = fetch.get(&request).await.map_err(|e| match e {
            FetchError::Status { status: 401 | 403, .. } => JobError::new(format!(
                "Reddit refused the application credentials ({e}): check client_id and client_secret"
            )),
            other => other.into(),
        })?;
        let answer: Value = serde_json::from_slice(&response.body)
            .map_err(|e| JobError::new(format!("the token endpoint answered something else than JSON: {e}")))?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| {
                JobError::new(format!(
                    "no access_token from the token endpoint: {}",
                    answer.get("error").unwrap_or(&Value::Null)
                ))
            })?
            .to_string();
        let expires = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(3600).saturating_sub(60));
        self.token = Some((token.clone(), tokio::time::Instant::now() + expires));
        Ok(Some(token))
    }

    fn listing_url(&self, oauth: bool) -> Result<Url, JobError> {
        let path = if oauth {
            format!("r/{}/{}", self.subreddit, self.listing)
        } else {
            format!("r/{}/{}.json", self.subreddit, self.listing)
        };
        let base = if oauth { &self.oauth_url } else { &self.base_url };
        let mut url = base.join(&path).map_err(|e| JobError::new(format!("listing URL: {e}")))?;
        url.query_pairs_mut().append_pair("limit", &self.limit.to_string()).append_pair("raw_json", "1");
        Ok(url)
    }

    fn item(&self, data: &Value) -> Option<Item> {
        let fullname = data.get("name").and_then(Value::as_str)?.to_string();
        let time =
            data.get("created_utc").and_then(Value::as_f64).and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0));
        let mut doc = Map::new();
        doc.insert("fullname".into(), json!(fullname));
        doc.insert("listing".into(), json!(self.listing));
        for (to, from) in [
            ("subreddit", "subreddit"),
            ("author", "author"),
            ("title", "title"),
            ("selftext", "selftext"),
            ("url", "url"),
            ("domain", "domain"),
            ("score", "score"),
            ("num_comments", "num_comments"),
            ("over_18", "over_18"),
            ("flair", "link_flair_text"),
        ] {
            if let Some(v) = data.get(from).filter(|v| !v.is_null()) {
                doc.insert(to.into(), v.clone());
            }
        }
        if let Some(permalink) = data.get("permalink").and_then(Value::as_str) {
            doc.insert("permalink".into(), json!(format!("https://www.reddit.com{permalink}")));
        }
        if let Some(time) = time {
            doc.insert("published".into(), json!(time.to_rfc3339()));
        }
        Some(Item { id: fullname, doc, raw: Some(Bytes::from(data.to_string())) })
    }
}

#[async_trait]
impl Job for Reddit {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let cursor: Cursor = super::read_cursor(ctx.cursor)?;
        let token = self.access_token(ctx.fetch).await?;
        let url = self.listing_url(token.is_some())?;
        let mut request = Request::get(url.clone(), "application/json").header(USER_AGENT, &self.user_agent)?;
        if let Some(token) = &token {
            request = request.header(AUTHORIZATION, &format!("Bearer {token}"))?;
        }
        let response = match ctx.fetch.get(&request).await {
            Ok(response) => response,
            Err(FetchError::Status { status: 429, headers, retry_after, .. }) => {
                let wait = retry_after.or_else(|| reset(&headers)).unwrap_or(Duration::from_secs(60));
                return Err(JobError {
                    retry_after: Some(wait),
                    ..JobError::new(format!("Reddit rate limit reached; waiting {}s for the reset", wait.as_secs()))
                });
            }
            Err(FetchError::Status { status: 401 | 403, .. }) if token.is_some() => {
                self.token = None;
                return Err(JobError::new("Reddit refused the access token; a new one is fetched next run"));
            }
            Err(e) => return Err(e.into()),
        };
        let mut report = RunReport { bytes_fetched: response.body.len() as u64, ..RunReport::default() };
        let listing: Value = serde_json::from_slice(&response.body)
            .map_err(|e| JobError::new(format!("{url}: not a Reddit listing: {e}")))?;
        let children = listing
            .pointer("/data/children")
            .and_then(Value::as_array)
            .ok_or_else(|| JobError::new(format!("{url}: not a Reddit listing (no data.children)")))?;
        let seen: HashSet<&str> = cursor.seen.iter().map(String::as_str).collect();
        let mut now_seen = Vec::new();
        let mut items = Vec::new();
        for child in children.iter().filter(|c| c["kind"] == "t3") {
            let Some(item) = self.item(&child["data"]) else { continue };
            if !seen.contains(item.id.as_str()) {
                now_seen.push(item.id.clone());
                items.push(item);
            } else {
                now_seen.push(item.id.clone());
            }
        }
        report.items_fetched = items.len() as u64;
        let warning = ctx.deliver(items, &mut report).await?;
        *ctx.cursor = json!({"seen": now_seen});
        let remaining = response.header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<f64>().ok());
        let next = match remaining {
            Some(left) if left < 1.0 => NextRun::AtLeast(reset(&response.headers).unwrap_or(Duration::from_secs(60))),
            _ => NextRun::Interval,
        };
        Ok(RunOutcome { report, next, warning })
    }
}

/// `X-Ratelimit-Reset`: seconds until the budget resets.
fn reset(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests;
