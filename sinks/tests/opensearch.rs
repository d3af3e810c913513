//! The Elasticsearch adapter against a real OpenSearch node (started by
//! scripts/opensearch.sh on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ingest_sinks::batcher::BulkConfig;
use ingest_sinks::delivery::index_mapping;
use ingest_sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use ingest_sinks::local::LocalObjects;
use ingest_sinks::{Document, DocumentSink, IndexSpec, Item, Sinks};
use ingest_testkit::OpenSearchServer;
use serde_json::json;

fn sink(url: &str, bulk: BulkConfig) -> ElasticsearchSink {
    ElasticsearchSink::connect(ElasticsearchConfig {
        url: url.parse().expect("a URL"),
        basic_auth: None,
        request_timeout: Duration::from_secs(30),
        bulk,
    })
    .expect("a client")
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
async fn bulk_indexing_against_opensearch() {
    let server = tokio::task::spawn_blocking(OpenSearchServer::start).await.unwrap();
    let small = BulkConfig { max_docs: 300, ..BulkConfig::default() };
    let es = sink(&server.url(), small);

    // The template and the index exist, with the explicit mapping.
    es.prepare(&spec("ingest-demo")).await.unwrap();
    es.prepare(&spec("ingest-demo")).await.unwrap();
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
            async move { es.write(docs).await.unwrap() }
        })
        .collect();
    let outcomes = futures::future::join_all(writers).await;
    assert!(outcomes.iter().all(|o| o.written == 250 && o.rejected.is_empty()), "{outcomes:?}");
    let srv = &server;
    assert_eq!(srv.count("ingest-demo"), 1000);

    // Writing the same ids again replaces, never duplicates.
    let again = (0..250).map(|i| doc("ingest-demo", &format!("w0-{i}"), json!({"n": i, "title": "again"}))).collect();
    assert_eq!(es.write(again).await.unwrap().written, 250);
    assert_eq!(srv.count("ingest-demo"), 1000);
    let one = server.json("GET", "/ingest-demo/_doc/w0-7", None);
    assert_eq!(one["_source"]["title"], "again");

    // A value the mapping refuses is rejected with its reason; the rest land.
    let mixed = vec![
        doc("ingest-demo", "good-1", json!({"n": 1})),
        doc("ingest-demo", "bad-1", json!({"n": "not a number"})),
        doc("ingest-demo", "good-2", json!({"n": 2, "unmapped": {"deep": true}})),
    ];
    let outcome = es.write(mixed).await.unwrap();
    assert_eq!(outcome.written, 2);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!((outcome.rejected[0].id.as_str(), outcome.rejected[0].status), ("bad-1", 400));
    assert!(outcome.rejected[0].reason.contains("mapper_parsing_exception"), "{}", outcome.rejected[0].reason);
    assert_eq!(srv.count("ingest-demo"), 1002);

    // A per-job index outside the template's pattern gets the mapping too.
    es.prepare(&spec("news-custom")).await.unwrap();
    let mapping = server.json("GET", "/news-custom/_mapping", None);
    assert_eq!(mapping["news-custom"]["mappings"]["properties"]["n"]["type"], "long");

    // Through a delivery: the documents carry the job's fields.
    let sinks = Arc::new(Sinks::new(
        Arc::new(es),
        Arc::new(LocalObjects::new(tempfile::tempdir().unwrap().keep())),
        Duration::from_secs(30),
    ));
    let mut output = sinks.output("demo", "job-9", spec("ingest-demo"));
    let items = (0..10)
        .map(|i| Item {
            id: format!("job-9:{i}"),
            doc: json!({"n": i}).as_object().unwrap().clone(),
            ..Item::default()
        })
        .collect();
    assert_eq!(output.deliver(items).await.unwrap().written, 10);
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
    assert!(trouble.contains("_bulk failed"), "{trouble}");
    assert!(es.prepare(&spec("ingest-demo")).await.unwrap_err().transient);
}
