//! reddit against a fixture server shaped like Reddit's listing and OAuth2
//! token endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::*;
use crate::jobs::testing::{Harness, build};

const UA: &str = "linux:ingest-tests:1.0 (by /u/ingest)";

fn listing() -> Value {
    json!({"kind": "Listing", "data": {"after": "t3_abc2", "dist": 2, "before": null, "children": [
        {"kind": "t3", "data": {"name": "t3_abc1", "id": "abc1", "subreddit": "rust", "author": "ferris",
            "title": "Rust 2.0 &amp; you", "selftext": "", "url": "https://example.org/post", "domain": "example.org",
            "permalink": "/r/rust/comments/abc1/rust_20/", "score": 1234, "num_comments": 56, "over_18": false,
            "link_flair_text": "news", "created_utc": 1700000000.0}},
        {"kind": "t3", "data": {"name": "t3_abc2", "id": "abc2", "subreddit": "rust", "author": "crab",
            "title": "Self post", "selftext": "Body text", "url": "https://www.reddit.com/r/rust/comments/abc2/",
            "permalink": "/r/rust/comments/abc2/self_post/", "score": 3, "num_comments": 0, "over_18": false,
            "created_utc": 1700000100.0}},
        {"kind": "t1", "data": {"name": "t1_zzz", "body": "a comment is not a post"}}
    ]}})
}

#[derive(Clone, Default)]
struct Fixture {
    agents: Arc<Mutex<Vec<String>>>,
    limited: Arc<Mutex<bool>>,
}

fn agent(headers: &AxumHeaders) -> String {
    headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn serve(fixture: Fixture) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/r/rust/new.json",
            get(|State(f): State<Fixture>, headers: AxumHeaders| async move {
                f.agents.lock().unwrap().push(agent(&headers));
                if *f.limited.lock().unwrap() {
                    let limits =
                        [("x-ratelimit-remaining", "0"), ("x-ratelimit-used", "100"), ("x-ratelimit-reset", "42")];
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        limits,
                        "{\"message\": \"Too Many Requests\", \"error\": 429}",
                    )
                        .into_response();
                }
                ([("x-ratelimit-remaining", "99.0"), ("x-ratelimit-reset", "300")], axum::Json(listing()))
                    .into_response()
            }),
        )
        .route(
            "/api/v1/access_token",
            post(|headers: AxumHeaders, body: String| async move {
                // "app-id:app-secret" in base64.
                let good = headers.get("authorization").is_some_and(|v| v == "Basic YXBwLWlkOmFwcC1zZWNyZXQ=");
                if !good || body != "grant_type=client_credentials" {
                    return (StatusCode::UNAUTHORIZED, "{\"message\": \"Unauthorized\", \"error\": 401}")
                        .into_response();
                }
                axum::Json(json!({"access_token": "tok-1", "token_type": "bearer", "expires_in": 86400, "scope": "*"}))
                    .into_response()
            }),
        )
        .route(
            "/oauth/r/rust/new",
            get(|headers: AxumHeaders| async move {
                if headers.get("authorization").is_none_or(|v| v != "Bearer tok-1") {
                    return (StatusCode::UNAUTHORIZED, "{}").into_response();
                }
                axum::Json(listing()).into_response()
            }),
        )
        .with_state(fixture);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn job(addr: std::net::SocketAddr, credentials: Option<(&str, &str)>) -> Reddit {
    Reddit {
        subreddit: "rust".into(),
        listing: "new".into(),
        limit: 100,
        user_agent: UA.into(),
        credentials: credentials.map(|(id, secret)| Credentials { client_id: id.into(), client_secret: secret.into() }),
        base_url: format!("http://{addr}/").parse().unwrap(),
        oauth_url: format!("http://{addr}/oauth/").parse().unwrap(),
        token_url: format!("http://{addr}/api/v1/access_token").parse().unwrap(),
        token: None,
    }
}

#[tokio::test]
async fn indexes_posts_once_with_a_descriptive_user_agent() {
    let fixture = Fixture::default();
    let addr = serve(fixture.clone()).await;
    let mut harness = Harness::new(NAME);
    let mut job = job(addr, None);
    let first = harness.run(&mut job).await.unwrap();
    assert_eq!(first.report.items_written, 2);
    let docs = harness.documents();
    assert_eq!(docs[0]["_id"], "t3_abc1");
    let post = &docs[0]["_source"];
    assert_eq!(post["title"], "Rust 2.0 &amp; you", "raw_json=1 text is kept as sent");
    assert_eq!(post["permalink"], "https://www.reddit.com/r/rust/comments/abc1/rust_20/");
    assert_eq!(post["published"], "2023-11-14T22:13:20+00:00");
    assert_eq!(post["flair"], "news");
    assert_eq!(*fixture.agents.lock().unwrap(), [UA]);
    let second = harness.run(&mut job).await.unwrap();
    assert_eq!(second.report.items_written, 0);
    assert_eq!(harness.documents().len(), 2);
}

#[tokio::test]
async fn oauth_credentials_are_used_and_a_wrong_secret_is_a_readable_error() {
    let addr = serve(Fixture::default()).await;
    let mut harness = Harness::new(NAME);
    let ok = harness.run(&mut job(addr, Some(("app-id", "app-secret")))).await.unwrap();
    assert_eq!(ok.report.items_written, 2);

    let mut harness = Harness::new(NAME);
    let error = harness.run(&mut job(addr, Some(("app-id", "wrong")))).await.unwrap_err();
    assert!(error.message.contains("refused the application credentials"), "{}", error.message);
    assert!(!error.message.contains("wrong"), "the secret never appears in the error");
    assert!(harness.documents().is_empty());
}

#[tokio::test]
async fn a_429_waits_for_the_rate_limit_reset() {
    let fixture = Fixture::default();
    *fixture.limited.lock().unwrap() = true;
    let addr = serve(fixture).await;
    let mut harness = Harness::new(NAME);
    let error = harness.run(&mut job(addr, None)).await.unwrap_err();
    assert_eq!(error.retry_after, Some(Duration::from_secs(42)));
    assert!(error.message.contains("rate limit"), "{}", error.message);
}

#[test]
fn credentials_come_in_pairs() {
    let secrets = BTreeMap::from([("client_id".to_string(), "only-id".to_string())]);
    let error = build::<Reddit>(json!({"subreddit": "rust", "user_agent": UA}), &secrets).err().unwrap();
    assert!(error.to_string().contains("params.client_secret: client_id, client_secret go together"), "{error}");
}
