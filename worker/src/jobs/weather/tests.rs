//! weather against a fixture server shaped like Open-Meteo's /v1/forecast.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::*;
use crate::jobs::testing::Harness;

fn answer() -> Value {
    json!({
        "latitude": 52.52, "longitude": 13.419998, "generationtime_ms": 0.05, "utc_offset_seconds": 0,
        "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 38.0,
        "current_units": {"time": "unixtime", "interval": "seconds", "temperature_2m": "°C", "wind_speed_10m": "km/h"},
        "current": {"time": 1764324000, "interval": 900, "temperature_2m": 4.1, "wind_speed_10m": 11.3},
        "hourly_units": {"time": "unixtime", "temperature_2m": "°C"},
        "hourly": {"time": [1764320400, 1764324000, 1764327600], "temperature_2m": [3.9, 4.1, 4.4]}
    })
}

#[derive(Clone, Default)]
struct Fixture {
    queries: Arc<Mutex<Vec<String>>>,
    reply: Arc<Mutex<Option<(StatusCode, String)>>>,
}

async fn serve(fixture: Fixture) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/v1/forecast",
            get(|State(f): State<Fixture>, RawQuery(query): RawQuery| async move {
                f.queries.lock().unwrap().push(query.unwrap_or_default());
                match f.reply.lock().unwrap().clone() {
                    Some((status, body)) => (status, body).into_response(),
                    None => axum::Json(answer()).into_response(),
                }
            }),
        )
        .with_state(fixture);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1/").parse().unwrap()
}

fn job(base: Url) -> Weather {
    Weather {
        latitude: 52.52,
        longitude: 13.41,
        place: Some("Berlin".into()),
        current: vec!["temperature_2m".into(), "wind_speed_10m".into()],
        hourly: vec!["temperature_2m".into()],
        forecast_days: 1,
        base,
    }
}

#[tokio::test]
async fn one_document_per_place_kind_and_time() {
    let fixture = Fixture::default();
    let base = serve(fixture.clone()).await;
    let mut harness = Harness::new(NAME);
    let mut job = job(base);
    let outcome = harness.run(&mut job).await.unwrap();
    assert_eq!(outcome.report.items_written, 4);
    let query = fixture.queries.lock().unwrap()[0].clone();
    assert!(
        query.contains("current=temperature_2m%2Cwind_speed_10m") && query.contains("timeformat=unixtime"),
        "{query}"
    );
    let docs = harness.documents();
    assert_eq!(docs[0]["_id"], "weather:52.5200,13.4100:current:1764324000");
    let current = &docs[0]["_source"];
    assert_eq!(current["values"], json!({"temperature_2m": 4.1, "wind_speed_10m": 11.3}));
    assert_eq!(current["time"], "2025-11-28T10:00:00+00:00");
    assert_eq!(current["place"], "Berlin");
    assert_eq!(docs[3]["_source"]["values"]["temperature_2m"], 4.4);
    // The same hours again replace, never add.
    harness.run(&mut job).await.unwrap();
    assert_eq!(harness.documents().len(), 4);
}

#[tokio::test]
async fn refusals_and_malformed_answers_are_readable_errors() {
    let fixture = Fixture::default();
    let base = serve(fixture.clone()).await;
    let mut harness = Harness::new(NAME);
    *fixture.reply.lock().unwrap() = Some((
        StatusCode::BAD_REQUEST,
        r#"{"error":true,"reason":"Latitude must be in range of -90 to 90°. Given: 91.0."}"#.into(),
    ));
    let error = harness.run(&mut job(base.clone())).await.unwrap_err();
    assert!(
        error.message.contains("Open-Meteo refused the request") && error.message.contains("Latitude must be"),
        "{}",
        error.message
    );
    *fixture.reply.lock().unwrap() = Some((StatusCode::OK, r#"{"latitude": 52.5}"#.into()));
    let error = harness.run(&mut job(base)).await.unwrap_err();
    assert!(error.message.contains("has no current block"), "{}", error.message);
    assert!(harness.documents().is_empty());
}
