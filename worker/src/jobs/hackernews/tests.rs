//! hackernews against a fixture server shaped like the Firebase API.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;

use super::*;
use crate::jobs::testing::Harness;

#[derive(Clone, Default)]
struct Api {
    list: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<String>>>,
}

fn item_json(id: u64) -> Option<Value> {
    match id {
        1 => Some(json!({"by": "pg", "descendants": 3, "id": 1, "kids": [11, 12], "score": 57, "time": 1160418111,
                         "title": "Y Combinator", "type": "story", "url": "http://ycombinator.com"})),
        2 => Some(json!({"id": 2, "deleted": true, "type": "story", "time": 1160418628})),
        4 => Some(json!({"by": "tel", "id": 4, "score": 3, "time": 1175714200, "title": "Ask HN: A question?",
                         "text": "<i>or</i> not", "type": "story"})),
        11 => Some(
            json!({"by": "norvig", "id": 11, "kids": [111], "parent": 1, "text": "Aw shucks", "time": 1160418200, "type": "comment"}),
        ),
        12 => {
            Some(json!({"by": "sama", "id": 12, "parent": 1, "text": "Agreed", "time": 1160418300, "type": "comment"}))
        }
        111 => {
            Some(json!({"by": "pg", "id": 111, "parent": 11, "text": "Deeper", "time": 1160418400, "type": "comment"}))
        }
        _ => None, // the API answers `null` for unknown items
    }
}

async fn serve(api: Api) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v0/newstories.json", get(|State(api): State<Api>| async move { api.list.lock().unwrap().clone() }))
        .route(
            "/v0/item/{file}",
            get(|State(api): State<Api>, Path(file): Path<String>| async move {
                api.requests.lock().unwrap().push(file.clone());
                let id: u64 = file.trim_end_matches(".json").parse().unwrap_or(0);
                axum::Json(item_json(id).unwrap_or(Value::Null)).into_response()
            }),
        )
        .with_state(api);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v0").parse().unwrap()
}

fn job(base: Url, depth: u32) -> HackerNews {
    let mut base = base;
    base.set_path("/v0/");
    HackerNews { base, list: "new".into(), max_items: 10, comment_depth: depth, concurrency: 4 }
}

#[tokio::test]
async fn indexes_new_stories_once_with_their_comments() {
    let api = Api::default();
    *api.list.lock().unwrap() = "[4, 3, 2, 1]".into();
    let base = serve(api.clone()).await;
    let mut harness = Harness::new(NAME);
    let mut job = job(base, 2);

    let first = harness.run(&mut job).await.unwrap();
    // Stories 4 and 1, comments 11, 12 and 111; 2 is deleted and 3 is null.
    assert_eq!(first.report.items_written, 5, "{first:?}");
    let docs = harness.documents();
    let ids: Vec<&str> = docs.iter().filter_map(|d| d["_id"].as_str()).collect();
    assert_eq!(ids, ["hn:4", "hn:1", "hn:11", "hn:12", "hn:111"]);
    let story = &docs[1]["_source"];
    assert_eq!((story["title"].as_str(), story["score"].as_u64()), (Some("Y Combinator"), Some(57)));
    assert_eq!(story["published"], "2006-10-09T18:21:51+00:00", "the item's time");
    assert_eq!(docs[4]["_source"]["story"], 1, "a comment knows its story");
    assert!(story["raw_key"].as_str().unwrap().ends_with(".json.gz"));

    // Again, with one new story on top: only it is fetched.
    api.requests.lock().unwrap().clear();
    *api.list.lock().unwrap() = "[5, 4, 3, 2, 1]".into();
    let second = harness.run(&mut job).await.unwrap();
    assert_eq!(second.report.items_written, 0);
    assert_eq!(*api.requests.lock().unwrap(), ["5.json"]);
    assert_eq!(harness.documents().len(), 5);
}

#[tokio::test]
async fn a_malformed_list_is_a_readable_error_and_keeps_the_cursor() {
    let api = Api::default();
    *api.list.lock().unwrap() = "{\"error\": \"Permission denied\"}".into();
    let base = serve(api).await;
    let mut harness = Harness::new(NAME);
    let error = harness.run(&mut job(base, 0)).await.unwrap_err();
    assert!(error.message.contains("not a list of item ids"), "{}", error.message);
    assert!(harness.cursor.is_null());
    assert!(harness.documents().is_empty());
}
