//! stocks against a fixture server shaped like Finnhub's /api/v1/quote.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use super::*;
use crate::jobs::testing::Harness;

#[derive(Clone, Default)]
struct Fixture {
    limited: Arc<Mutex<bool>>,
    queries: Arc<Mutex<Vec<String>>>,
}

async fn serve(fixture: Fixture) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/api/v1/quote",
            get(|State(f): State<Fixture>, headers: AxumHeaders, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                f.queries.lock().unwrap().push(format!("{q:?}"));
                if headers.get("x-finnhub-token").is_none_or(|v| v != "key-1") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "Invalid API key."}))).into_response();
                }
                if *f.limited.lock().unwrap() {
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "30")], axum::Json(json!({"error": "API limit reached."})))
                        .into_response();
                }
                let quote = match q.get("symbol").map(String::as_str) {
                    Some("AAPL") => json!({"c": 261.74, "d": 1.5, "dp": 0.58, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 260.24, "t": 1764349200}),
                    Some("MSFT") => json!({"c": 480.1, "d": -2.0, "dp": -0.41, "h": 484.0, "l": 478.2, "o": 482.0, "pc": 482.1, "t": 1764349200}),
                    Some("BROKEN") => json!({"unexpected": true}),
                    _ => json!({"c": 0, "d": null, "dp": null, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}),
                };
                axum::Json(quote).into_response()
            }),
        )
        .with_state(fixture);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/v1/").parse().unwrap()
}

fn job(base: Url, key: &str, symbols: &[&str]) -> Stocks {
    Stocks { symbols: symbols.iter().map(|s| s.to_string()).collect(), api_key: key.into(), base }
}

#[tokio::test]
async fn one_document_per_symbol_and_time() {
    let fixture = Fixture::default();
    let base = serve(fixture.clone()).await;
    let mut harness = Harness::new(NAME);
    let mut job = job(base, "key-1", &["AAPL", "MSFT", "NOPE"]);
    let outcome = harness.run(&mut job).await.unwrap();
    assert_eq!(outcome.report.items_written, 2);
    assert!(outcome.warning.unwrap().contains("no quote for NOPE"));
    let docs = harness.documents();
    assert_eq!(docs[0]["_id"], "AAPL:1764349200");
    assert_eq!(docs[0]["_source"]["price"], 261.74);
    assert_eq!(docs[0]["_source"]["time"], "2025-11-28T17:00:00+00:00");
    assert!(!fixture.queries.lock().unwrap().iter().any(|q| q.contains("key-1")), "the key is sent as a header only");
    harness.run(&mut job).await.unwrap();
    assert_eq!(harness.documents().len(), 2, "the same quote time replaces, never adds");
}

#[tokio::test]
async fn bad_keys_limits_and_malformed_quotes_are_readable_errors() {
    let fixture = Fixture::default();
    let base = serve(fixture.clone()).await;
    let mut harness = Harness::new(NAME);
    let error = harness.run(&mut job(base.clone(), "wrong", &["AAPL"])).await.unwrap_err();
    assert!(error.message.contains("refused the API key") && !error.message.contains("wrong"), "{}", error.message);
    let error = harness.run(&mut job(base.clone(), "key-1", &["BROKEN"])).await.unwrap_err();
    assert!(error.message.contains("not a Finnhub quote"), "{}", error.message);
    *fixture.limited.lock().unwrap() = true;
    let error = harness.run(&mut job(base, "key-1", &["AAPL"])).await.unwrap_err();
    assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    assert!(harness.documents().is_empty());
}
