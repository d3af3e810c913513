//! The Elasticsearch adapter against real nodes on 127.0.0.1: OpenSearch
//! 2.19, Elasticsearch 9.1 and 8.19 (scripts/opensearch.sh,
//! scripts/elasticsearch.sh), and Elasticsearch 9 with security on (HTTPS
//! with a private CA, basic auth, API keys).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ingest_runtime::Secret;
use ingest_sinks::batcher::BulkConfig;
use ingest_sinks::delivery::index_mapping;
use ingest_sinks::elasticsearch::{Auth, ElasticsearchConfig, ElasticsearchSink};
use ingest_sinks::local::LocalObjects;
use ingest_sinks::{Document, DocumentSink, IndexSpec, Item, Sinks};
use ingest_testkit::{ELASTIC_PASSWORD, Engine, SearchServer};
use serde_json::json;

fn sink(url: &str, bulk: BulkConfig) -> ElasticsearchSink {
    ElasticsearchSink::connect(config(&[url], None, None, bulk)).expect("a client")
}

fn config(urls: &[&str], auth: Option<Auth>, ca: Option<&std::path::Path>, bulk: BulkConfig) -> ElasticsearchConfig {
    ElasticsearchConfig {
        urls: urls.iter().map(|u| u.parse().expect("a URL")).collect(),
        auth,
        ca_pem: ca.map(|path| std::fs::read(path).expect("read the CA")),
        request_timeout: Duration::from_secs(30),
        bulk,
    }
}

fn spec(name: &str) -> IndexSpec {
    IndexSpec {
        name: name.into(),
        job_type: "demo".into(),
        mapping: Arc::new(index_mapping(&json!({"n": {"type": "long"}, "title": {"type": "text"}}))),
    }
}

fn doc(index: &str, id: &str, source: serde_json::Value) -> Document {
    Document { index: index.into(), id: id.into(), source: Bytes::from(source.to_string()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_indexing_against_opensearch_2() {
    bulk_indexing(Engine::OpenSearch, "OpenSearch 2.19.6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_indexing_against_elasticsearch_9() {
    bulk_indexing(Engine::Elasticsearch9, "Elasticsearch 9.1.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_indexing_against_elasticsearch_8() {
    bulk_indexing(Engine::Elasticsearch8, "Elasticsearch 8.19.0").await;
}

async fn bulk_indexing(engine: Engine, detected: &str) {
    let server = tokio::task::spawn_blocking(move || SearchServer::start(engine)).await.expect("start the server");
    let small = BulkConfig { max_docs: 300, ..BulkConfig::default() };
    let es = sink(&server.url(), small);
    let found = es.check().await.expect("a supported server");
    assert!(found.starts_with(&format!("{detected} at http://127.0.0.1:")), "{found}");

    // The template and the index exist, with the explicit mapping.
    es.prepare(&spec("ingest-demo")).await.expect("prepare");
    es.prepare(&spec("ingest-demo")).await.expect("prepare");
    let template = server.json("GET", "/_index_template/ingest-demo", None);
    let patterns = &template["index_templates"][0]["index_template"]["index_patterns"];
    assert_eq!(patterns, &json!(["ingest-demo", "ingest-demo-*"]));
    let mapping = server.json("GET", "/ingest-demo/_mapping", None);
    let mapping = &mapping["ingest-demo"]["mappings"];
    assert_eq!(mapping["dynamic"], "false");
    assert_eq!(mapping["properties"]["n"]["type"], "long");
    assert_eq!(mapping["properties"]["job_id"]["type"], "keyword");

    // 1 000 documents from several writers, in requests of at most 300.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let docs =
                (0..250).map(|i| doc("ingest-demo", &format!("w{w}-{i}"), json!({"n": i, "title": "t"}))).collect();
            let es = &es;
            async move { es.write(docs).await.expect("write") }
        })
        .collect();
    let outcomes = futures::future::join_all(writers).await;
    assert!(outcomes.iter().all(|o| o.written == 250 && o.rejected.is_empty()), "{outcomes:?}");
    let srv = &server;
    assert_eq!(srv.count("ingest-demo"), 1000);

    // Writing the same ids again replaces, never duplicates.
    let again = (0..250).map(|i| doc("ingest-demo", &format!("w0-{i}"), json!({"n": i, "title": "again"}))).collect();
    assert_eq!(es.write(again).await.expect("write again").written, 250);
    assert_eq!(srv.count("ingest-demo"), 1000);
    let one = server.json("GET", "/ingest-demo/_doc/w0-7", None);
    assert_eq!(one["_source"]["title"], "again");

    // A value the mapping refuses is rejected with its reason; the rest land.
    let mixed = vec![
        doc("ingest-demo", "good-1", json!({"n": 1})),
        doc("ingest-demo", "bad-1", json!({"n": "not a number"})),
        doc("ingest-demo", "good-2", json!({"n": 2, "unmapped": {"deep": true}})),
    ];
    let outcome = es.write(mixed).await.expect("write");
    assert_eq!(outcome.written, 2);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!((outcome.rejected[0].id.as_str(), outcome.rejected[0].status), ("bad-1", 400));
    // OpenSearch says mapper_parsing_exception, Elasticsearch 8+ document_parsing_exception.
    let reason = &outcome.rejected[0].reason;
    assert!(reason.contains("_parsing_exception") && reason.contains("not a number"), "{reason}");
    assert_eq!(srv.count("ingest-demo"), 1002);

    // A per-job index outside the template's pattern gets the mapping too.
    es.prepare(&spec("news-custom")).await.expect("prepare");
    let mapping = server.json("GET", "/news-custom/_mapping", None);
    assert_eq!(mapping["news-custom"]["mappings"]["properties"]["n"]["type"], "long");

    // Through a delivery: the documents carry the job's fields.
    let sinks = Arc::new(Sinks::new(
        Arc::new(es),
        Arc::new(LocalObjects::new(tempfile::tempdir().expect("tempdir").keep())),
        Duration::from_secs(30),
    ));
    let mut output = sinks.output("demo", "job-9", spec("ingest-demo"));
    let items = (0..10)
        .map(|i| Item {
            id: format!("job-9:{i}"),
            doc: json!({"n": i}).as_object().cloned().unwrap_or_default(),
            ..Item::default()
        })
        .collect();
    assert_eq!(output.deliver(items).await.expect("deliver").written, 10);
    server.json("POST", "/ingest-demo/_refresh", None);
    let found = server.json("POST", "/ingest-demo/_search", Some(&json!({"query": {"term": {"job_id": "job-9"}}})));
    assert_eq!(found["hits"]["total"]["value"], 10);
}

#[tokio::test]
async fn an_unreachable_index_is_reported_and_the_writer_can_give_up() {
    let port = ingest_testkit::free_port();
    let es = sink(&format!("http://127.0.0.1:{port}"), BulkConfig::default());
    let write =
        tokio::time::timeout(Duration::from_millis(800), es.write(vec![doc("ingest-demo", "x", json!({}))])).await;
    assert!(write.is_err(), "still retrying");
    let trouble = es.trouble().expect("the failure is visible");
    assert!(trouble.contains(&format!("_bulk to http://127.0.0.1:{port} failed")), "{trouble}");
    assert!(es.prepare(&spec("ingest-demo")).await.unwrap_err().transient);
}

/// Two node URLs, the first dead: every request lands at once on the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_in_the_pool_costs_one_attempt() {
    let server = tokio::task::spawn_blocking(|| SearchServer::start(Engine::Elasticsearch9)).await.unwrap();
    let dead = format!("http://127.0.0.1:{}", ingest_testkit::free_port());
    let live = server.url();
    let es = ElasticsearchSink::connect(config(&[&dead, &live], None, None, BulkConfig::default())).unwrap();
    assert!(es.describe().contains(&dead) && es.describe().contains(&live), "{}", es.describe());
    es.prepare(&spec("ingest-demo")).await.unwrap();
    let started = std::time::Instant::now();
    for round in 0..20 {
        let docs = (0..50).map(|i| doc("ingest-demo", &format!("r{round}-{i}"), json!({"n": i}))).collect();
        let outcome = es.write(docs).await.unwrap();
        assert_eq!(outcome.written, 50);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "20 writes took {:?}", started.elapsed());
    assert_eq!(server.count("ingest-demo"), 1000);
    assert!(es.trouble().is_none(), "no failure surfaced: {:?}", es.trouble());
}

/// Production Elasticsearch: security on, HTTPS with a private CA, basic
/// auth or an API key; wrong credentials or a missing CA are readable errors
/// naming the flag to fix, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_elasticsearch_9_with_basic_auth_api_keys_and_a_private_ca() {
    let server = tokio::task::spawn_blocking(|| SearchServer::start_secure(Engine::Elasticsearch9)).await.unwrap();
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");
    let ca = server.ca_path().unwrap();
    let basic = Auth::Basic { user: "elastic".into(), password: Secret::new(ELASTIC_PASSWORD) };

    // Basic auth over HTTPS, trusting the test CA.
    let es =
        ElasticsearchSink::connect(config(&[&url], Some(basic.clone()), Some(&ca), BulkConfig::default())).unwrap();
    assert!(es.check().await.unwrap().starts_with("Elasticsearch 9.1.0"));
    es.prepare(&spec("ingest-demo")).await.unwrap();
    let docs = (0..100).map(|i| doc("ingest-demo", &format!("basic-{i}"), json!({"n": i}))).collect();
    assert_eq!(es.write(docs).await.unwrap().written, 100);

    // An API key made for ingest, encoded as Elasticsearch returns it, and as id:key.
    let key = server.json("POST", "/_security/api_key", Some(&json!({"name": "ingest-test"})));
    let encoded = key["encoded"].as_str().unwrap().to_string();
    let id_key = format!("{}:{}", key["id"].as_str().unwrap(), key["api_key"].as_str().unwrap());
    for (n, key) in [encoded.clone(), id_key].into_iter().enumerate() {
        let auth = Auth::ApiKey(Secret::new(key));
        let es = ElasticsearchSink::connect(config(&[&url], Some(auth), Some(&ca), BulkConfig::default())).unwrap();
        es.prepare(&spec("ingest-demo")).await.unwrap();
        let docs = (0..100).map(|i| doc("ingest-demo", &format!("key{n}-{i}"), json!({"n": i}))).collect();
        assert_eq!(es.write(docs).await.unwrap().written, 100);
    }
    assert_eq!(server.count("ingest-demo"), 300);

    // A wrong key: the error names the flag; the documents wait, nothing is written.
    let wrong = Auth::ApiKey(Secret::new(format!("{}x", &encoded[..encoded.len() - 1])));
    let es = ElasticsearchSink::connect(config(&[&url], Some(wrong), Some(&ca), BulkConfig::default())).unwrap();
    let error = es.prepare(&spec("ingest-demo")).await.unwrap_err();
    assert!(error.transient, "fixable, so retried: {error}");
    assert!(error.to_string().contains("refused the credentials (401)"), "{error}");
    assert!(error.to_string().contains("--elasticsearch-api-key"), "{error}");
    let write =
        tokio::time::timeout(Duration::from_secs(2), es.write(vec![doc("ingest-demo", "never", json!({"n": 0}))]))
            .await;
    assert!(write.is_err(), "the write keeps waiting for usable credentials");
    let trouble = es.trouble().expect("the refusal is visible");
    assert!(trouble.contains("401") && trouble.contains("--elasticsearch-api-key"), "{trouble}");
    drop(es);
    assert_eq!(server.count("ingest-demo"), 300);

    // A wrong password names the basic-auth flags.
    let bad = Auth::Basic { user: "elastic".into(), password: Secret::new("not-the-password") };
    let es = ElasticsearchSink::connect(config(&[&url], Some(bad), Some(&ca), BulkConfig::default())).unwrap();
    let error = es.check().await.unwrap_err().to_string();
    assert!(error.contains("--elasticsearch-username/--elasticsearch-password"), "{error}");

    // Without the CA the certificate is not trusted, and the error says which flag helps.
    let es = ElasticsearchSink::connect(config(&[&url], Some(basic), None, BulkConfig::default())).unwrap();
    let error = es.check().await.unwrap_err().to_string();
    assert!(error.contains("--elasticsearch-ca"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // A file that is not a certificate is refused when the sink is set up.
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate").unwrap();
    let error = ElasticsearchSink::connect(config(&[&url], None, Some(not_pem.path()), BulkConfig::default()))
        .err()
        .expect("refused");
    assert!(error.to_string().contains("--elasticsearch-ca"), "{error}");
}

/// Jobs starting together prepare their index at once: one template update
/// per job type and one index creation per index reach the server, however
/// many ask (a cluster-state update each; OpenSearch slowed from ~80 % to
/// ~62 % of its ceiling when 300 jobs each sent theirs). A stand-in server
/// counts the calls; the calls themselves are tested on real servers above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_preparations_send_one_call_per_template_and_index() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::{get, put};

    #[derive(Default)]
    struct Calls {
        templates: AtomicUsize,
        indices: AtomicUsize,
    }
    let calls = Arc::new(Calls::default());
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async { axum::Json(json!({"version": {"number": "2.19.6", "distribution": "opensearch"}})) }),
        )
        .route(
            "/_index_template/{name}",
            put(|axum::extract::State(calls): axum::extract::State<Arc<Calls>>| async move {
                calls.templates.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                axum::Json(json!({"acknowledged": true}))
            }),
        )
        .route(
            "/{index}",
            put(|axum::extract::State(calls): axum::extract::State<Arc<Calls>>| async move {
                calls.indices.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                axum::Json(json!({"acknowledged": true}))
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let es = Arc::new(sink(&url, BulkConfig::default()));
    let prepares = (0..50).map(|i| {
        let es = es.clone();
        async move { es.prepare(&spec(if i % 2 == 0 { "ingest-demo" } else { "ingest-demo-other" })).await }
    });
    for result in futures::future::join_all(prepares).await {
        result.expect("prepared");
    }
    assert_eq!(calls.templates.load(Ordering::SeqCst), 1, "one template update for the job type");
    assert_eq!(calls.indices.load(Ordering::SeqCst), 2, "one creation per index");
}
