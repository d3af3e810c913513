//! twitter against a fixture server shaped like X API v2: the documented
//! answer (`data`, `includes.users`, `includes.media`, `meta` with
//! `newest_id` / `next_token`), problem objects for errors, the
//! `x-rate-limit-*` headers, and an OAuth 1.0a signature checked for real by
//! the test kit's verifier.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap as AxumHeaders, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ingest_testkit::oauth1::{self, OAuth1Keys};

use super::*;
use crate::jobs::testing::{Harness, build};

const USER: &str = "2244994945";
const BEARER: &str = "AAAA-app-bearer";

fn keys() -> OAuth1Keys {
    OAuth1Keys {
        consumer_key: "ck-123".into(),
        consumer_secret: "cs-secret".into(),
        token: "2244994945-at".into(),
        token_secret: "ats-secret".into(),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// How the fixture limits requests.
#[derive(Clone, Copy, Default, PartialEq)]
enum Limit {
    #[default]
    None,
    /// Answers, saying the budget is spent (reset in 120 s).
    Exhausted,
    /// 429 after this many answered requests (reset in 42 s).
    After(usize),
}

#[derive(Default)]
struct Api {
    /// Newest first; ids grow.
    tweets: Vec<Value>,
    /// Query parameters of every request answered or refused.
    requests: Vec<BTreeMap<String, String>>,
    nonces: HashSet<String>,
    answered: usize,
    limit: Limit,
    /// Answer with this body instead (status 200).
    broken: Option<&'static str>,
}

#[derive(Clone, Default)]
struct Fixture(Arc<Mutex<Api>>);

impl Fixture {
    /// Adds `n` tweets newer than those there.
    fn post(&self, n: u64) {
        let mut state = self.0.lock().unwrap();
        let first = state.tweets.first().map_or(0, |t| t["id"].as_str().unwrap().parse::<u64>().unwrap() - BASE + 1);
        for i in first..first + n {
            let id = (BASE + i).to_string();
            let mut tweet = json!({"id": id, "text": format!("post {i} #rust @ferris"), "author_id": USER,
                "edit_history_tweet_ids": [id], "lang": "en", "conversation_id": id,
                "created_at": format!("2026-11-28T10:{:02}:00.000Z", i % 60),
                "public_metrics": {"retweet_count": i, "reply_count": 1, "like_count": 2, "quote_count": 0,
                    "bookmark_count": 0, "impression_count": 10},
                "entities": {"hashtags": [{"start": 7, "end": 12, "tag": "rust"}],
                    "mentions": [{"start": 13, "end": 20, "username": "ferris", "id": "1"}],
                    "urls": [{"start": 0, "end": 5, "url": "https://t.co/x", "expanded_url": "https://example.org/a"}]}});
            if i % 5 == 0 {
                tweet["attachments"] = json!({"media_keys": [format!("3_{id}")]});
            }
            state.tweets.insert(0, tweet);
        }
    }

    fn requests(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().requests.clone()
    }
}

const BASE: u64 = 1_860_000_000_000_000_000;

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"title": title, "detail": detail, "type": "about:blank", "status": status.as_u16()});
    (status, [("content-type", "application/problem+json")], body.to_string()).into_response()
}

/// Checks the credentials: a bearer token or a verified OAuth 1.0a signature
/// with a fresh nonce.
fn authorized(state: &mut Api, headers: &AxumHeaders, uri: &Uri) -> bool {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if authorization == format!("Bearer {BEARER}") {
        return true;
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base_uri = format!("http://{host}{}", uri.path());
    match oauth1::verify(&keys(), "GET", &base_uri, uri.query().unwrap_or_default(), authorization, now()) {
        Ok(verified) => state.nonces.insert(verified.nonce),
        Err(_) => false,
    }
}

async fn api(fixture: Fixture, headers: AxumHeaders, uri: Uri, user: Option<String>) -> Response {
    let mut state = fixture.0.lock().unwrap();
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    state.requests.push(query.clone());
    if !authorized(&mut state, &headers, &uri) {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let reset = (now() + if state.limit == Limit::Exhausted { 120 } else { 42 }).to_string();
    if let Limit::After(n) = state.limit
        && state.answered >= n
    {
        let headers = [
            ("x-rate-limit-limit", "450".to_string()),
            ("x-rate-limit-remaining", "0".into()),
            ("x-rate-limit-reset", reset),
        ];
        return (StatusCode::TOO_MANY_REQUESTS, headers, "{\"title\":\"Too Many Requests\",\"detail\":\"Too Many Requests\",\"type\":\"about:blank\",\"status\":429}").into_response();
    }
    state.answered += 1;
    if let Some(body) = state.broken {
        return (StatusCode::OK, body).into_response();
    }
    if let Some(user) = user.filter(|u| u != USER) {
        let missing = json!({"errors": [{"value": user, "detail": format!("Could not find user with id: [{user}]."),
            "title": "Not Found Error", "resource_type": "user", "parameter": "id", "resource_id": user,
            "type": "https://api.twitter.com/2/problems/resource-not-found"}]});
        return axum::Json(missing).into_response();
    }
    if query.get("since_id").is_some_and(|s| s == "1") {
        let invalid = json!({"errors": [{"parameters": {"since_id": ["1"]},
            "message": "Invalid 'since_id':'1'. 'since_id' must be a tweet id created after 2026-11-21T00:00Z."}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request"});
        return (StatusCode::BAD_REQUEST, axum::Json(invalid)).into_response();
    }
    let size: usize = query.get("max_results").and_then(|m| m.parse().ok()).unwrap_or(10);
    let since: u64 = query.get("since_id").and_then(|s| s.parse().ok()).unwrap_or(0);
    let token = query.get("next_token").or_else(|| query.get("pagination_token"));
    let offset: usize = token.and_then(|t| t.strip_prefix("tok-")?.parse().ok()).unwrap_or(0);
    let newer: Vec<&Value> =
        state.tweets.iter().filter(|t| t["id"].as_str().unwrap().parse::<u64>().unwrap() > since).collect();
    let page: Vec<Value> = newer.iter().skip(offset).take(size).map(|t| (*t).clone()).collect();
    let mut meta = json!({"result_count": page.len()});
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        meta["newest_id"] = first["id"].clone();
        meta["oldest_id"] = last["id"].clone();
    }
    if offset + size < newer.len() {
        meta["next_token"] = json!(format!("tok-{}", offset + size));
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let media: Vec<Value> = page
        .iter()
        .filter_map(|t| t.pointer("/attachments/media_keys/0")?.as_str())
        .map(|key| {
            let name = if key.ends_with('5') { "gone.png" } else { "photo.png" };
            json!({"media_key": key, "type": "photo", "url": format!("http://{host}/media/{name}"), "width": 1, "height": 1})
        })
        .collect();
    let mut answer = json!({"meta": meta});
    if !page.is_empty() {
        answer["data"] = json!(page);
        answer["includes"] = json!({"users": [{"id": USER, "name": "X Developers", "username": "XDevelopers",
            "verified": true}], "media": media});
    }
    let remaining = if state.limit == Limit::Exhausted { "0" } else { "449" };
    let headers = [
        ("x-rate-limit-limit", "450".to_string()),
        ("x-rate-limit-remaining", remaining.into()),
        ("x-rate-limit-reset", reset),
    ];
    (headers, axum::Json(answer)).into_response()
}

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8,
    6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0, 1, 0, 0, 5, 0, 1,
    0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

async fn serve(fixture: Fixture) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/2/tweets/search/recent",
            get(|State(f): State<Fixture>, headers: AxumHeaders, uri: Uri| api(f, headers, uri, None)),
        )
        .route(
            "/2/users/{id}/tweets",
            get(|State(f): State<Fixture>, Path(id): Path<String>, headers: AxumHeaders, uri: Uri| {
                api(f, headers, uri, Some(id))
            }),
        )
        .route("/media/photo.png", get(|| async { ([("content-type", "image/png")], PNG) }))
        .route("/media/gone.png", get(|| async { StatusCode::NOT_FOUND }))
        .with_state(fixture);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn params(values: Value) -> Map<String, Value> {
    values.as_object().cloned().unwrap()
}

fn oauth_secrets(consumer_secret: &str) -> BTreeMap<String, String> {
    let k = keys();
    [
        ("consumer_key", k.consumer_key),
        ("consumer_secret", consumer_secret.to_string()),
        ("access_token", k.token),
        ("access_token_secret", k.token_secret),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

fn bearer() -> BTreeMap<String, String> {
    BTreeMap::from([("bearer_token".to_string(), BEARER.to_string())])
}

fn job(values: Value, secrets: &BTreeMap<String, String>) -> Box<dyn Job> {
    build::<Twitter>(Value::Object(params(values)), secrets).unwrap()
}

fn search(addr: std::net::SocketAddr, extra: Value) -> Value {
    let mut values = json!({"query": "from:XDevelopers -is:retweet", "max_results": 10,
        "base_url": format!("http://{addr}/")});
    values.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap());
    values
}

fn ids(harness: &Harness) -> Vec<String> {
    harness.documents().iter().map(|d| d["_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn oauth_signed_search_pages_and_stores_the_expansions() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(25);
    let mut harness = Harness::new(NAME);
    let mut job = job(search(addr, json!({})), &oauth_secrets("cs-secret"));
    let first = harness.run(job.as_mut()).await.unwrap();
    assert_eq!(first.next, NextRun::Interval);
    assert_eq!(first.report.items_written, 25);
    let requests = fixture.requests();
    assert_eq!(requests.len(), 3, "10 + 10 + 5");
    assert_eq!(requests[0]["query"], "from:XDevelopers -is:retweet");
    assert_eq!(requests[0]["expansions"], "attachments.media_keys,author_id");
    assert_eq!(requests[1]["next_token"], "tok-10");
    assert!(!requests[0].contains_key("since_id"));

    let docs = harness.documents();
    let newest = (BASE + 24).to_string();
    assert_eq!(docs[0]["_id"], newest, "the tweet id is the document id");
    let with_media = docs.iter().find(|d| d["_id"].as_str() == Some(&(BASE + 20).to_string())).unwrap();
    let tweet = &with_media["_source"];
    assert_eq!(tweet["tweet_id"], (BASE + 20).to_string());
    assert_eq!(tweet["author"]["username"], "XDevelopers");
    assert_eq!(tweet["link"], format!("https://x.com/XDevelopers/status/{}", BASE + 20));
    assert_eq!(tweet["media"][0]["media_key"], format!("3_{}", BASE + 20));
    assert_eq!(tweet["media"][0]["type"], "photo");
    assert_eq!(tweet["hashtags"], json!(["rust"]));
    assert_eq!(tweet["mentions"], json!(["ferris"]));
    assert_eq!(tweet["urls"], json!(["https://example.org/a"]));
    assert_eq!(tweet["metrics"]["retweet_count"], 20);
    assert_eq!(tweet["published"], "2026-11-28T10:20:00+00:00");
    assert_eq!(tweet["source"], "search:from:XDevelopers -is:retweet");
    assert!(tweet["raw_key"].as_str().unwrap().ends_with(".json.gz"), "the tweet and its expansions are archived");
    assert_eq!(harness.cursor, json!({"since_id": newest}));

    // Later runs ask only for newer posts.
    fixture.post(3);
    let second = harness.run(job.as_mut()).await.unwrap();
    assert_eq!(second.report.items_written, 3);
    assert_eq!(fixture.requests()[3]["since_id"], newest);
    let all = ids(&harness);
    assert_eq!(all.len(), 28);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 28, "each post once");
    let third = harness.run(job.as_mut()).await.unwrap();
    assert_eq!(third.report.items_written, 0);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_readable_error_and_nothing_written() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(3);
    let mut harness = Harness::new(NAME);
    let error = harness.run(job(search(addr, json!({})), &oauth_secrets("not-the-secret")).as_mut()).await.unwrap_err();
    assert_eq!(
        error.message,
        "X refused the credentials (401 Unauthorized): check consumer_key, consumer_secret, access_token and \
         access_token_secret"
    );
    assert!(harness.documents().is_empty());

    let wrong_bearer = BTreeMap::from([("bearer_token".to_string(), "nope".to_string())]);
    let error = harness.run(job(search(addr, json!({})), &wrong_bearer).as_mut()).await.unwrap_err();
    assert!(error.message.ends_with("check bearer_token"), "{}", error.message);
    assert!(!error.message.contains("nope"), "the secret never appears in the error");
    assert!(harness.documents().is_empty());
}

#[tokio::test]
async fn a_timeline_pages_with_pagination_token_and_an_unknown_user_is_an_error() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(15);
    let mut harness = Harness::new(NAME);
    let timeline =
        json!({"mode": "timeline", "user_id": USER, "max_results": 10, "base_url": format!("http://{addr}/")});
    let outcome = harness.run(job(timeline, &bearer()).as_mut()).await.unwrap();
    assert_eq!(outcome.report.items_written, 15);
    let requests = fixture.requests();
    assert_eq!(requests[1]["pagination_token"], "tok-10");
    assert!(!requests[0].contains_key("query"));
    assert_eq!(harness.documents()[0]["_source"]["source"], format!("timeline:{USER}"));

    let mut harness = Harness::new(NAME);
    let nobody = json!({"mode": "timeline", "user_id": "999", "base_url": format!("http://{addr}/")});
    let error = harness.run(job(nobody, &bearer()).as_mut()).await.unwrap_err();
    assert_eq!(error.message, "X API: Not Found Error: Could not find user with id: [999].");
    assert!(harness.documents().is_empty());
}

#[tokio::test]
async fn the_first_run_reads_max_pages_and_a_backlog_continues_on_the_next_runs() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(30);
    let mut harness = Harness::new(NAME);
    let mut job = job(search(addr, json!({"max_pages": 1})), &bearer());
    let first = harness.run(job.as_mut()).await.unwrap();
    assert_eq!((first.report.items_written, first.next), (10, NextRun::Interval), "no backfill of the week");
    let newest = (BASE + 29).to_string();
    assert_eq!(harness.cursor, json!({"since_id": newest}));

    fixture.post(25);
    let mut written = Vec::new();
    let mut nexts = Vec::new();
    for _ in 0..3 {
        let outcome = harness.run(job.as_mut()).await.unwrap();
        written.push(outcome.report.items_written);
        nexts.push(outcome.next);
    }
    assert_eq!(written, [10, 10, 5]);
    assert_eq!(
        nexts,
        [NextRun::After(Duration::from_secs(1)), NextRun::After(Duration::from_secs(1)), NextRun::Interval]
    );
    assert_eq!(harness.cursor, json!({"since_id": (BASE + 54).to_string()}));
    for request in &fixture.requests()[1..] {
        assert_eq!(request["since_id"], newest, "the pass keeps its since_id while it pages");
    }
    let all = ids(&harness);
    assert_eq!(all.len(), 35);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 35);
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    // A spent budget: the run succeeds and the next waits for the reset.
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(5);
    fixture.0.lock().unwrap().limit = Limit::Exhausted;
    let mut harness = Harness::new(NAME);
    let outcome = harness.run(job(search(addr, json!({})), &bearer()).as_mut()).await.unwrap();
    let NextRun::AtLeast(wait) = outcome.next else { panic!("{:?}", outcome.next) };
    assert!((Duration::from_secs(115)..=Duration::from_secs(120)).contains(&wait), "{wait:?}");

    // A 429 on the first request: the run fails and waits for the reset.
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(25);
    fixture.0.lock().unwrap().limit = Limit::After(0);
    let mut harness = Harness::new(NAME);
    let mut limited = job(search(addr, json!({})), &bearer());
    let error = harness.run(limited.as_mut()).await.unwrap_err();
    let wait = error.retry_after.unwrap();
    assert!((Duration::from_secs(37)..=Duration::from_secs(42)).contains(&wait), "{wait:?}");
    assert!(error.message.starts_with("X rate limit reached; waiting"), "{}", error.message);

    // A 429 mid-pass: what was read is kept, the pass continues after the reset.
    fixture.0.lock().unwrap().limit = Limit::After(1);
    let outcome = harness.run(limited.as_mut()).await.unwrap();
    assert_eq!(outcome.report.items_written, 10);
    assert!(matches!(outcome.next, NextRun::After(wait) if wait >= Duration::from_secs(37)), "{:?}", outcome.next);
    assert!(outcome.warning.unwrap().contains("rate limit"));
    assert_eq!(harness.cursor["next_token"], "tok-10");
    fixture.0.lock().unwrap().limit = Limit::None;
    let rest = harness.run(limited.as_mut()).await.unwrap();
    assert_eq!(rest.report.items_written, 15);
    assert_eq!(ids(&harness).len(), 25);
}

#[tokio::test]
async fn malformed_answers_fail_readably() {
    for (body, expected) in [
        ("<html><body>Bad gateway</body></html>", "X answered something that is not JSON"),
        ("{\"unexpected\": true}", "X API: no data and no meta"),
    ] {
        let fixture = Fixture::default();
        let addr = serve(fixture.clone()).await;
        fixture.0.lock().unwrap().broken = Some(body);
        let mut harness = Harness::new(NAME);
        let error = harness.run(job(search(addr, json!({})), &bearer()).as_mut()).await.unwrap_err();
        assert!(error.message.contains(expected), "{}", error.message);
        assert!(harness.documents().is_empty());
    }
}

#[tokio::test]
async fn a_since_id_older_than_the_search_window_falls_back_to_the_newest_posts() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(5);
    let mut harness = Harness::new(NAME);
    harness.cursor = json!({"since_id": "1"});
    let outcome = harness.run(job(search(addr, json!({})), &bearer()).as_mut()).await.unwrap();
    assert_eq!(outcome.report.items_written, 5);
    assert_eq!(harness.cursor, json!({"since_id": (BASE + 4).to_string()}));
}

#[tokio::test]
async fn media_is_archived_and_missing_media_is_noted() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    fixture.post(11);
    let mut harness = Harness::new(NAME);
    let outcome = harness.run(job(search(addr, json!({"archive_media": true})), &bearer()).as_mut()).await.unwrap();
    assert_eq!(outcome.report.items_written, 11);
    let docs = harness.documents();
    let media = |i: u64| {
        docs.iter().find(|d| d["_id"].as_str() == Some(&(BASE + i).to_string())).unwrap()["_source"]["media"][0].clone()
    };
    let key = media(10)["object_key"].as_str().unwrap().to_string();
    assert!(key.ends_with(".png"), "{key}");
    assert_eq!(std::fs::read(harness.dir.path().join("objects").join(&key)).unwrap(), PNG);
    let gone = media(5);
    assert!(gone.get("object_key").is_none());
    assert!(gone["archive_error"].as_str().unwrap().contains("404"), "{gone}");
}

#[test]
fn credentials_and_mode_are_checked_when_the_job_is_built() {
    let build_with = |values: Value, secrets: &BTreeMap<String, String>| {
        build::<Twitter>(Value::Object(params(values)), secrets).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let query = json!({"query": "rust"});
    let none = build_with(query.clone(), &BTreeMap::new());
    assert!(none.contains("params.bearer_token: required: give"), "{none}");
    let mut partial = oauth_secrets("cs");
    partial.remove("access_token_secret");
    let partial = build_with(query.clone(), &partial);
    assert!(partial.contains("go together; missing: access_token_secret"), "{partial}");
    let mut both = oauth_secrets("cs");
    both.extend(bearer());
    assert!(build_with(query.clone(), &both).contains("give only one of"));
    assert!(build_with(json!({}), &bearer()).contains("params.query: required when mode is search"));
    let timeline = build_with(json!({"mode": "timeline"}), &bearer());
    assert!(timeline.contains("params.user_id: required when mode is timeline"), "{timeline}");
    let blank = build_with(json!({"query": "  "}), &bearer());
    assert!(blank.contains("params.query"), "a blank query is refused by the spec: {blank}");
    assert_eq!(build_with(query, &bearer()), "", "a bearer token and a query build");
}
