//! The sources end to end: rss, hackernews, reddit, weather, stocks, http_json
//! and twitter jobs run by a worker process against local fixture servers
//! shaped like the real services, through the real sinks (Elasticsearch 9 or
//! OpenSearch 2, and an S3 server).
//! Hostile or broken sources fail their own job with a readable error while
//! the others carry on.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::Cluster;
use ingest_testkit::oauth1::{self, OAuth1Keys};
use ingest_testkit::{Engine, S3Server, SearchServer};
use serde_json::{Value, json};

const TTL: Duration = Duration::from_secs(4);

fn rss(items: usize) -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Fixture news</title><link>https://example.org/</link>"#,
    );
    for i in 0..items {
        xml.push_str(&format!(
            "<item><title>Story {i}</title><link>https://example.org/s/{i}</link><guid>story-{i}</guid>\
             <pubDate>Sat, 28 Nov 2026 10:{i:02}:00 GMT</pubDate><description>Text {i}</description></item>"
        ));
    }
    xml.push_str("</channel></rss>");
    xml
}

fn hn_item(id: u64) -> Value {
    json!({"by": "pg", "id": id, "score": id, "time": 1_700_000_000 + id, "title": format!("HN {id}"), "type": "story",
           "url": format!("https://example.org/hn/{id}")})
}

fn reddit_listing() -> Value {
    let children: Vec<Value> = (0..5)
        .map(|i| {
            json!({"kind": "t3", "data": {"name": format!("t3_p{i}"), "subreddit": "rust", "author": "ferris",
            "title": format!("Post {i}"), "permalink": format!("/r/rust/comments/p{i}/"), "score": i,
            "num_comments": 0, "over_18": false, "created_utc": 1_700_000_000.0 + i as f64}})
        })
        .collect();
    json!({"kind": "Listing", "data": {"after": null, "before": null, "children": children}})
}

fn x_keys() -> OAuth1Keys {
    OAuth1Keys {
        consumer_key: "ck".into(),
        consumer_secret: "cs".into(),
        token: "at".into(),
        token_secret: "ats".into(),
    }
}

/// X API v2 recent search: two posts, their author and a photo, for an
/// OAuth 1.0a signature that verifies.
async fn x_search(headers: axum::http::HeaderMap, uri: axum::http::Uri) -> axum::response::Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let base_uri = format!("http://{}{}", header("host"), uri.path());
    let query = uri.query().unwrap_or_default();
    if oauth1::verify(&x_keys(), "GET", &base_uri, query, &header("authorization"), now).is_err() {
        let problem = json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"});
        return (StatusCode::UNAUTHORIZED, axum::Json(problem)).into_response();
    }
    let photo = format!("http://{}/media/photo.png", header("host"));
    let answer = json!({
        "data": [
            {"id": "1860000000000000002", "text": "second", "author_id": "42", "created_at": "2026-11-28T10:02:00.000Z",
             "attachments": {"media_keys": ["3_2"]}},
            {"id": "1860000000000000001", "text": "first", "author_id": "42", "created_at": "2026-11-28T10:01:00.000Z"}],
        "includes": {"users": [{"id": "42", "name": "Ferris", "username": "ferris"}],
                     "media": [{"media_key": "3_2", "type": "photo", "url": photo}]},
        "meta": {"newest_id": "1860000000000000002", "oldest_id": "1860000000000000001", "result_count": 2}});
    let limits =
        [("x-rate-limit-limit", "450"), ("x-rate-limit-remaining", "449"), ("x-rate-limit-reset", "4102444800")];
    (limits, axum::Json(answer)).into_response()
}

async fn fixtures() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/feed.xml", get(|| async { ([("content-type", "application/rss+xml")], rss(12)) }))
        .route("/broken.xml", get(|| async { rss(3)[..200].to_string() }))
        .route(
            "/to-metadata",
            get(|| async { (StatusCode::FOUND, [("location", "http://169.254.169.254/latest/meta-data/")]) }),
        )
        .route("/v0/newstories.json", get(|| async { axum::Json(json!([105, 104, 103, 102, 101])) }))
        .route(
            "/v0/item/{file}",
            get(|axum::extract::Path(file): axum::extract::Path<String>| async move {
                let id: u64 = file.trim_end_matches(".json").parse().unwrap_or(0);
                axum::Json(hn_item(id)).into_response()
            }),
        )
        .route("/r/rust/new.json", get(|| async { axum::Json(reddit_listing()) }))
        .route("/2/tweets/search/recent", get(x_search))
        .route("/media/photo.png", get(|| async { ([("content-type", "image/png")], &b"\x89PNG fixture"[..]) }))
        .route(
            "/api/items",
            get(|headers: axum::http::HeaderMap| async move {
                if headers.get("x-api-key").is_none_or(|v| v != "s3cret") {
                    return (StatusCode::UNAUTHORIZED, "{\"message\": \"Bad credentials\"}").into_response();
                }
                axum::Json(json!({"results": [{"id": 7, "v": "a"}, {"id": 8, "v": "b"}]})).into_response()
            }),
        )
        .route(
            "/api/v1/quote",
            get(|headers: axum::http::HeaderMap| async move {
                if headers.get("x-finnhub-token").is_none_or(|v| v != "fh-key") {
                    return (StatusCode::UNAUTHORIZED, "{\"error\": \"Invalid API key.\"}").into_response();
                }
                axum::Json(json!({"c": 10.5, "d": 0.5, "dp": 5.0, "h": 11.0, "l": 10.0, "o": 10.0, "pc": 10.0, "t": 1764349200}))
                    .into_response()
            }),
        )
        .route(
            "/v1/forecast",
            get(|| async {
                axum::Json(json!({"latitude": 48.86, "longitude": 2.35, "elevation": 43.0,
                    "current_units": {"time": "unixtime", "temperature_2m": "°C"},
                    "current": {"time": 1764324000, "interval": 900, "temperature_2m": 7.5},
                    "hourly_units": {"time": "unixtime", "temperature_2m": "°C"},
                    "hourly": {"time": [1764324000, 1764327600], "temperature_2m": [7.5, 7.9]}}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn wait_count(search: &SearchServer, cluster: &Cluster, index: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = tokio::task::block_in_place(|| search.request("HEAD", &format!("/{index}"), None));
        if status == 200 && tokio::task::block_in_place(|| search.count(index)) >= expected {
            break;
        }
        assert!(Instant::now() < deadline, "{index} did not reach {expected} documents\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(tokio::task::block_in_place(|| search.count(index)), expected, "{index}: each item once");
}

async fn wait_error(cluster: &Cluster, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster.control.get_job(id).await.expect("get job");
        if let Some(error) = view.status.stats.last_error.filter(|e| e.message.contains(needle)) {
            return error.message;
        }
        assert!(Instant::now() < deadline, "{id} shows no error with '{needle}'\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The worker's and control's /metrics after the sources ran, `ingest
/// health` against both, and bounded labels.
async fn check_metrics(cluster: &Cluster, worker: &str) {
    let (status, text) =
        tokio::task::block_in_place(|| ingest_testkit::services::http(worker, "GET", "/metrics", None));
    assert_eq!(status, 200, "{text}");
    // 11 jobs, each owned by the only worker.
    assert_eq!(sample(&text, "ingest_worker_jobs_owned"), Some(11.0), "{text}");
    let rss_written = sample(&text, r#"ingest_worker_items_written_total{job_type="rss"}"#).unwrap_or(0.0);
    assert!(rss_written >= 12.0, "{text}");
    assert!(sample(&text, r#"ingest_worker_runs_total{job_type="rss",outcome="failure"}"#).unwrap_or(0.0) >= 2.0);
    // Claims were sent: the window they went through is shown (1 to 4).
    let window = sample(&text, "ingest_worker_write_window");
    assert!(window.is_some_and(|w| (1.0..=4.0).contains(&w)), "write window {window:?} in\n{text}");
    for histogram in [
        r#"ingest_sink_bulk_seconds_count{outcome="ok"}"#,
        "ingest_worker_claim_seconds_count",
        "ingest_worker_lease_renewal_lag_seconds_count",
    ] {
        assert!(sample(&text, histogram).unwrap_or(0.0) >= 1.0, "{histogram} missing from\n{text}");
    }
    assert!(text.contains("# HELP ingest_worker_items_written_total Items acknowledged by the sinks"), "{text}");
    // Bounded labels: a job type, an outcome, a result, a bucket; never a job id or a URL.
    let types = ["rss", "hackernews", "reddit", "weather", "stocks", "http_json", "twitter"];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else { continue };
        let labels = labels.split_once('}').map_or("", |(l, _)| l);
        for label in labels.split(',') {
            let (key, value) = label.split_once('=').unwrap_or_else(|| panic!("{line}"));
            let value = value.trim_matches('"');
            match key {
                "job_type" => assert!(types.contains(&value), "{line}"),
                "outcome" | "result" | "le" => assert!(!value.contains("://") && value.len() < 20, "{line}"),
                other => panic!("unexpected label {other}: {line}"),
            }
        }
    }

    // Control (in this process): progress reports received, and JobService calls by method and code.
    let (status, _) = tokio::task::block_in_place(|| {
        ingest_testkit::services::http(&cluster.control_http, "POST", "/api/ingest.v1.JobService/GetJob", Some("{}"))
    });
    assert_eq!(status, 400, "GetJob without an id");
    let (status, text) =
        tokio::task::block_in_place(|| ingest_testkit::services::http(&cluster.control_http, "GET", "/metrics", None));
    assert_eq!(status, 200);
    assert!(sample(&text, "ingest_control_progress_reports_total").unwrap_or(0.0) >= 1.0, "{text}");
    let bad_gets = r#"ingest_control_requests_total{method="GetJob",code="INVALID_ARGUMENT"}"#;
    assert!(sample(&text, bad_gets).unwrap_or(0.0) >= 1.0, "{text}");
    // The jobs by type and state, and by failures in a row (cluster-wide;
    // the recorder is the test process's, shared with the other test's
    // cluster, whose series stay: count this cluster's own).
    let jobs = cluster.control.list_jobs(&Default::default(), 1000, None).await.expect("list").jobs.len() as f64;
    let all = sample(&text, r#"ingest_job_consecutive_failures{le="+Inf"}"#).unwrap_or(0.0);
    assert_eq!(all, jobs, "every job counted once by failures in a row:\n{text}");
    let running = r#"ingest_jobs{type="rss",state="running"}"#;
    assert!(sample(&text, running).unwrap_or(0.0) >= 1.0, "{text}");

    // Container health checks: the worker's /healthz, control's gRPC health.
    let grpc = cluster.control_url.trim_start_matches("http://").to_string();
    for args in [["--http", worker], ["--grpc", grpc.as_str()]] {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_ingest")).arg("health").args(args).output().expect("run");
        assert!(out.status.success(), "ingest health {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let nobody = format!("127.0.0.1:{}", ingest_testkit::free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["health", "--http", &nobody])
        .output()
        .expect("run");
    assert!(!out.status.success(), "nothing listens there");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_lands_in_elasticsearch_9_and_s3() {
    every_source_lands_in_the_real_sinks(Engine::Elasticsearch9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_lands_in_opensearch_2_and_s3() {
    every_source_lands_in_the_real_sinks(Engine::OpenSearch).await;
}

async fn every_source_lands_in_the_real_sinks(engine: Engine) {
    let index = tokio::task::spawn_blocking(move || SearchServer::start(engine)).await.expect("start the index");
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.expect("start S3");
    let addr = fixtures().await;
    let mut cluster = Cluster::start(TTL).await;
    let metrics = format!("127.0.0.1:{}", ingest_testkit::free_port());
    cluster.worker_env = vec![
        ("INGEST_ELASTICSEARCH_URL".into(), index.url()),
        ("INGEST_FETCH_ALLOW".into(), "127.0.0.1".into()),
        ("INGEST_METRICS_ADDR".into(), metrics.clone()),
    ];
    cluster.worker_env.extend(s3.env("ingest-sources"));
    cluster.start_worker("w1");
    let every = Duration::from_secs(60);
    let base = format!("http://{addr}");
    cluster.create_job("news", "rss", every, json!({"url": format!("{base}/feed.xml")})).await.expect("rss job");
    cluster
        .create_job("hn", "hackernews", every, json!({"base_url": format!("{base}/v0/"), "list": "new"}))
        .await
        .expect("hackernews job");
    let reddit = json!({"subreddit": "rust", "user_agent": "linux:ingest-test:1.0 (by /u/ingest)", "base_url": format!("{base}/")});
    cluster.create_job("rust-sub", "reddit", every, reddit).await.expect("reddit job");
    let weather = json!({"latitude": 48.86, "longitude": 2.35, "place": "Paris", "current": ["temperature_2m"],
        "hourly": ["temperature_2m"], "base_url": format!("{base}/v1/")});
    cluster.create_job("paris", "weather", every, weather).await.expect("weather job");
    let api = json!({"url": format!("{base}/api/items"), "items_pointer": "/results", "id_pointer": "/id",
        "auth_header": "X-Api-Key", "auth_value": "s3cret"});
    cluster.create_job("api", "http_json", every, api).await.expect("http_json job");
    let quotes = json!({"symbols": ["AAA", "BBB"], "api_key": "fh-key", "base_url": format!("{base}/api/v1/")});
    cluster.create_job("quotes", "stocks", every, quotes).await.expect("stocks job");
    let x = |consumer_secret: &str| {
        json!({"query": "from:ferris", "archive_media": true, "base_url": format!("{base}/"), "consumer_key": "ck",
            "consumer_secret": consumer_secret, "access_token": "at", "access_token_secret": "ats"})
    };
    cluster.create_job("x-search", "twitter", every, x("cs")).await.expect("twitter job");
    cluster.create_job("x-wrong", "twitter", every, x("not-cs")).await.expect("twitter job");
    cluster.create_job("broken", "rss", every, json!({"url": format!("{base}/broken.xml")})).await.expect("job");
    cluster.create_job("sneaky", "rss", every, json!({"url": format!("{base}/to-metadata")})).await.expect("job");
    // 127.0.0.1 is allowlisted, and etcd listens there: a job that asks etcd
    // for every key (secrets included) is refused all the same.
    let etcd = cluster.etcd.endpoints()[0].clone();
    let raid = json!({"url": format!("{etcd}/v3/kv/range"), "method": "POST", "body": r#"{"key": "AA==", "range_end": "AA=="}"#,
        "items_pointer": "/kvs", "id_pointer": "/key"});
    cluster.create_job("raid", "http_json", every, raid).await.expect("job");

    wait_count(&index, &cluster, "ingest-rss", 12).await;
    wait_count(&index, &cluster, "ingest-hackernews", 5).await;
    wait_count(&index, &cluster, "ingest-reddit", 5).await;
    wait_count(&index, &cluster, "ingest-weather", 3).await;
    wait_count(&index, &cluster, "ingest-http_json", 2).await;
    wait_count(&index, &cluster, "ingest-stocks", 2).await;
    wait_count(&index, &cluster, "ingest-twitter", 2).await;

    let broken = wait_error(&cluster, "broken", "is not a feed").await;
    assert!(broken.contains("/broken.xml"), "{broken}");
    let raid = wait_error(&cluster, "raid", "own etcd endpoint").await;
    assert!(raid.contains("never fetched"), "{raid}");
    let sneaky = wait_error(&cluster, "sneaky", "refused").await;
    assert!(sneaky.contains("169.254.169.254"), "{sneaky}");
    let refused = wait_error(&cluster, "x-wrong", "X refused the credentials").await;
    assert!(refused.contains("check consumer_key, consumer_secret"), "{refused}");

    // Documents carry the item's own fields and the key of their raw payload in S3.
    let hit = tokio::task::block_in_place(|| {
        index.json("POST", "/ingest-rss/_search", Some(&json!({"query": {"term": {"guid": "story-3"}}})))
    });
    let doc = &hit["hits"]["hits"][0]["_source"];
    assert_eq!(doc["title"], "Story 3");
    assert_eq!(doc["published"], "2026-11-28T10:03:00+00:00");
    let raw_key = doc["raw_key"].as_str().expect("raw_key").to_string();
    let sink = common::s3_sink(&s3, "ingest-sources");
    sink.client().head_object().bucket("ingest-sources").key(&raw_key).send().await.expect("the feed is archived");

    // A post with its author; its photo archived in S3.
    let hit = tokio::task::block_in_place(|| index.json("GET", "/ingest-twitter/_doc/1860000000000000002", None));
    let post = &hit["_source"];
    assert_eq!(post["author"]["username"], "ferris");
    let photo_key = post["media"][0]["object_key"].as_str().expect("photo archived").to_string();
    let photo = sink.client().get_object().bucket("ingest-sources").key(&photo_key).send().await.expect("photo");
    let body = photo.body.collect().await.expect("photo body").into_bytes();
    assert_eq!(&body[..], b"\x89PNG fixture");

    // An API's items are searchable by their own fields (flattened on
    // Elasticsearch, flat_object on OpenSearch), their raw ids kept beside.
    let hit = tokio::task::block_in_place(|| {
        index.json("POST", "/ingest-http_json/_search", Some(&json!({"query": {"term": {"data.v": "b"}}})))
    });
    assert_eq!(hit["hits"]["hits"].as_array().map(Vec::len), Some(1), "{hit}");
    assert_eq!(hit["hits"]["hits"][0]["_source"]["item_id"], "8", "{hit}");

    check_metrics(&cluster, &metrics).await;
    cluster.stop();
}
