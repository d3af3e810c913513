//! http_json against a fixture API with paging, a bearer token and faults.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use super::*;
use crate::jobs::testing::{Harness, build};

async fn serve() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/api/items",
            get(|headers: AxumHeaders, Query(query): Query<std::collections::HashMap<String, String>>| async move {
                if headers.get("authorization").is_none_or(|v| v != "Bearer good-token") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"})))
                        .into_response();
                }
                let page = match query.get("after").map(String::as_str) {
                    None => json!({"data": {"items": [
                        {"id": 1, "name": "one", "created": "2026-11-01T10:00:00Z"},
                        {"id": 2, "name": "two"}]}, "next": "p2"}),
                    Some("p2") => json!({"data": {"items": [{"id": "x3", "name": "three"}]}, "next": null}),
                    Some(_) => json!({"data": {"items": [{"name": "no id"}]}, "next": null}),
                };
                axum::Json(page).into_response()
            }),
        )
        .route("/api/html", get(|| async { "<html>not json</html>" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn job(addr: std::net::SocketAddr, token: &str) -> HttpJson {
    HttpJson {
        url: format!("http://{addr}/api/items?fixed=1").parse().unwrap(),
        body: None,
        headers: vec![(HeaderName::from_static("authorization"), format!("Bearer {token}"))],
        items_pointer: "/data/items".into(),
        id_pointer: "/id".into(),
        time_pointer: Some("/created".into()),
        cursor: Some(("after".into(), "/next".into())),
        paging: Paging::Cursor,
        page_param: "page".into(),
        page_start: 1,
        start: Start::Resume,
        max_pages: 10,
        id_scope: None,
    }
}

#[tokio::test]
async fn follows_the_cursor_and_indexes_each_item_by_its_id() {
    let addr = serve().await;
    let mut harness = Harness::new(NAME);
    let outcome = harness.run(&mut job(addr, "good-token")).await.unwrap();
    assert_eq!(outcome.report.items_written, 3);
    assert_eq!(harness.cursor, json!({"cursor": "p2"}), "kept past the delivered pages");
    let docs = harness.documents();
    let ids: Vec<&str> = docs.iter().filter_map(|d| d["_id"].as_str()).collect();
    assert_eq!(ids, ["1", "2", "x3"]);
    assert_eq!(docs[0]["_source"]["data"]["name"], "one");
    assert_eq!(docs[0]["_source"]["item_time"], "2026-11-01T10:00:00+00:00");
    assert_eq!(docs[0]["_source"]["source_url"], format!("http://{addr}/api/items?…"));
    assert_eq!(docs[2]["_source"]["item_id"], "x3");
    // The next run resumes at the cursor: the last page again, no duplicates.
    harness.run(&mut job(addr, "good-token")).await.unwrap();
    assert_eq!(harness.documents().len(), 3);
}

/// By default an item's id is scoped by the API's URL: two jobs on two APIs
/// whose items share ids keep their documents apart (in a shared index the
/// raw ids would overwrite each other); `ids = raw` keeps the raw id.
#[test]
fn document_ids_are_scoped_by_the_source_unless_raw_is_asked() {
    let scoped = |url: &str, ids: &str| {
        let params = json!({"url": url, "id_pointer": "/id", "ids": ids});
        let spec = crate::catalogue::entry::<HttpJson>().full_spec();
        let parsed: HttpJsonParams =
            ingest_model::parse_params(&spec, params.as_object().unwrap(), &Default::default()).expect("valid");
        let job = <HttpJson as crate::jobs::JobType>::build("job-1", parsed).expect("builds");
        job.item(0, &json!({"id": 1}), Bytes::from_static(b"{}")).expect("item").id
    };
    let a = scoped("https://a.example/items", "source");
    let b = scoped("https://b.example/items", "source");
    assert_ne!(a, b, "two APIs, two documents");
    assert!(a.ends_with(":1") && a.len() == 18, "{a}");
    assert_eq!(a, scoped("https://a.example/items", "source"), "stable");
    assert_eq!(scoped("https://a.example/items", "raw"), "1");
}

#[tokio::test]
async fn bad_credentials_and_bad_answers_are_readable_errors_and_write_nothing() {
    let addr = serve().await;
    let mut harness = Harness::new(NAME);
    let error = harness.run(&mut job(addr, "wrong-token")).await.unwrap_err();
    assert!(error.message.contains("401") && error.message.contains("check auth_value"), "{}", error.message);
    assert!(error.message.contains("Bad credentials") && !error.message.contains("wrong-token"), "{}", error.message);
    let mut no_id = job(addr, "good-token");
    harness.cursor = json!({"cursor": "elsewhere"});
    let error = harness.run(&mut no_id).await.unwrap_err();
    assert!(error.message.contains("item 0 has no id at /id"), "{}", error.message);
    let mut html = job(addr, "good-token");
    html.url = format!("http://{addr}/api/html").parse().unwrap();
    let error = harness.run(&mut html).await.unwrap_err();
    assert!(error.message.contains("something else than JSON"), "{}", error.message);
    assert!(harness.documents().is_empty());
}

#[test]
fn parameters_are_checked_when_built() {
    let build_with = |values: Value| build::<HttpJson>(values, &Default::default()).err().map(|e| e.to_string());
    let refused = build_with(json!({"url": "http://h/", "id_pointer": "/id", "cursor_param": "after"})).unwrap();
    assert!(refused.contains("params.cursor_pointer: cursor_param, cursor_pointer go together"), "{refused}");
    let refused = build_with(json!({"url": "http://h/", "id_pointer": "/id", "method": "POST", "body": "{oops"}));
    assert!(refused.unwrap().contains("params.body: must be a JSON document"));
    let refused = build_with(json!({"url": "http://h/", "id_pointer": "/id", "headers": ["no colon"]})).unwrap();
    assert!(refused.contains("params.headers"), "{refused}");
    assert!(build_with(json!({"url": "http://h/", "id_pointer": "/id"})).is_none());
    assert!(build_with(json!({"url": "http://h/", "id_pointer": "id"})).unwrap().contains("params.id_pointer"));
}

/// Header lines that `build` cannot send are refused by the spec, so
/// control refuses them at CreateJob instead of the job failing forever;
/// every line the spec accepts, `build` accepts too.
#[test]
fn header_lines_are_checked_by_the_spec_as_build_reads_them() {
    let spec = crate::catalogue::entry::<HttpJson>().full_spec();
    let check = |line: &str| {
        let values = json!({"url": "http://h/", "id_pointer": "/id", "headers": [line]});
        let accepted = ingest_model::validate_params(&spec, values.as_object().unwrap(), &[], "params");
        let built = build::<HttpJson>(values.clone(), &Default::default());
        (accepted.map(drop).map_err(|v| v[0].field.clone()), built.is_ok())
    };
    for good in ["X-Api-Version: 2", "accept:application/json", " X-Empty :", "X-Tab:\ta\tb", "X-Utf8: café"] {
        assert_eq!(check(good), (Ok(()), true), "{good:?}");
    }
    for bad in ["no colon here", "Bad Name: x", ": no name", "X-Nl: a\nb", "X-Bell: \u{7}", "X-Del: \u{7f}"] {
        let (accepted, _) = check(bad);
        assert_eq!(accepted, Err("params.headers".to_string()), "{bad:?}");
    }
}

/// An API of 5 items, 2 per page, paged three ways: `?page=N` (from 1),
/// `?offset=K`, and `Link: <…>; rel="next"` headers. Requests are counted.
async fn serve_pages() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let page_of = |from: usize| -> Value {
        let items: Vec<Value> =
            (from..(from + 2).min(5)).map(|i| json!({"id": i, "name": format!("item {i}")})).collect();
        json!({"items": items})
    };
    let app = Router::new()
        .route(
            "/paged",
            get(move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                axum::Json(page_of((page - 1) * 2))
            }),
        )
        .route(
            "/offset",
            get(move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                axum::Json(page_of(q.get("offset").and_then(|p| p.parse().ok()).unwrap_or(0)))
            }),
        )
        .route(
            "/linked",
            get(move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let page: usize = q.get("p").and_then(|p| p.parse().ok()).unwrap_or(1);
                let mut response = axum::Json(page_of((page - 1) * 2)).into_response();
                if page < 3 {
                    let link = format!("</linked?p={}>; rel=\"next\", </linked?p=1>; rel=\"first\"", page + 1);
                    response.headers_mut().insert("link", link.parse().unwrap());
                }
                response
            }),
        )
        .layer(axum::middleware::from_fn_with_state(requests.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, requests)
}

async fn record(
    axum::extract::State(requests): axum::extract::State<Arc<Mutex<Vec<String>>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    requests.lock().unwrap().push(request.uri().to_string());
    next.run(request).await
}

fn paged(addr: std::net::SocketAddr, path: &str, paging: &str, start: &str) -> Box<dyn Job> {
    let params = json!({"url": format!("http://{addr}{path}"), "items_pointer": "/items", "id_pointer": "/id",
        "paging": paging, "page_param": if paging == "offset" { "offset" } else { "page" }, "start": start});
    build::<HttpJson>(params, &Default::default()).unwrap()
}

/// Page numbers, offsets and next links are followed until the API has no
/// more; every item lands once; a resumed run asks for the page after the
/// last full one again (new items show up there), not for page one.
#[tokio::test]
async fn pages_offsets_and_next_links_are_followed_to_the_end() {
    let (addr, requests) = serve_pages().await;
    for (path, paging, resume_asks) in [
        ("/paged", "page", "/paged?page=4"),
        ("/offset", "offset", "/offset?offset=5"),
        ("/linked", "link", "/linked?p=3"),
    ] {
        let mut harness = Harness::new(NAME);
        let mut job = paged(addr, path, paging, "resume");
        let first = harness.run(job.as_mut()).await.unwrap();
        assert_eq!(first.report.items_written, 5, "{paging}");
        let ids: std::collections::BTreeSet<String> =
            harness.documents().iter().map(|d| d["_source"]["item_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), 5, "{paging}: every item once");
        requests.lock().unwrap().clear();
        harness.run(job.as_mut()).await.unwrap();
        let asked = requests.lock().unwrap().clone();
        assert_eq!(asked.first().map(String::as_str), Some(resume_asks), "{paging}: {asked:?}");
    }
}

/// Head: each run starts at the first page again (newest-first APIs), and
/// nothing is kept between runs.
#[tokio::test]
async fn head_start_reads_from_the_first_page_every_run() {
    let (addr, requests) = serve_pages().await;
    let mut harness = Harness::new(NAME);
    let mut job = paged(addr, "/paged", "page", "head");
    harness.run(job.as_mut()).await.unwrap();
    requests.lock().unwrap().clear();
    harness.run(job.as_mut()).await.unwrap();
    assert_eq!(requests.lock().unwrap().first().map(String::as_str), Some("/paged?page=1"));
    assert_eq!(harness.cursor, Value::Null, "nothing kept");
}
