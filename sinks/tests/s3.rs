//! The S3 adapter against a real S3-compatible server (MinIO, else Garage,
//! started by scripts/s3.sh on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ingest_runtime::Secret;
use ingest_sinks::local::LocalDocuments;
use ingest_sinks::s3::{S3Config, S3Sink};
use ingest_sinks::{IndexSpec, Item, Object, ObjectSink, Sinks};
use ingest_testkit::S3Server;
use serde_json::json;

fn config(server: &S3Server, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(server.endpoint()),
        region: server.region().to_string(),
        bucket: bucket.to_string(),
        access_key: server.access_key().to_string(),
        secret_key: Secret::new(server.secret_key()),
        path_style: true,
        request_timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_against_a_real_s3_server() {
    let server = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let s3 = S3Sink::new(&config(&server, "ingest-archive"));

    // The bucket is created when missing; preparing again is harmless.
    s3.prepare().await.unwrap();
    s3.prepare().await.unwrap();
    s3.client().head_bucket().bucket("ingest-archive").send().await.unwrap();

    let object = Object {
        key: "demo/j1/2026/11/28/abc.json.gz".into(),
        body: Bytes::from_static(b"payload"),
        content_type: "application/gzip",
    };
    s3.put(&object).await.unwrap();
    s3.put(&object).await.unwrap();
    let got = s3.client().get_object().bucket("ingest-archive").key(&object.key).send().await.unwrap();
    assert_eq!(got.content_type(), Some("application/gzip"));
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), Bytes::from_static(b"payload"));

    // Nothing is public: an anonymous read is refused.
    let endpoint = server.endpoint();
    let (status, _) = tokio::task::spawn_blocking(move || {
        ingest_testkit::services::http(&endpoint, "GET", "/ingest-archive/demo/j1/2026/11/28/abc.json.gz", None)
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "anonymous GET must be refused");

    // Wrong credentials: a permanent error that says so.
    let mut wrong = config(&server, "ingest-archive");
    wrong.secret_key = Secret::new("not-the-secret");
    let error = S3Sink::new(&wrong).put(&object).await.unwrap_err();
    assert!(!error.transient, "{error}");
    assert!(error.message.contains("SignatureDoesNotMatch") || error.message.contains("403"), "{error}");

    // Through a delivery: raw payloads land in S3 under the key in the document.
    let dir = tempfile::tempdir().unwrap();
    let sinks = Arc::new(Sinks::new(
        Arc::new(LocalDocuments::new(dir.path())),
        Arc::new(S3Sink::new(&config(&server, "ingest-raw"))),
        Duration::from_secs(30),
    ));
    let index = IndexSpec { name: "ingest-demo".into(), job_type: "demo".into(), mapping: Arc::new(json!({})) };
    let mut output = sinks.output("demo", "j2", index);
    let items: Vec<Item> = (0..20)
        .map(|i| Item {
            id: format!("j2:{i}"),
            raw: Some(Bytes::from(format!("{{\"upstream\":{i}}}"))),
            ..Item::default()
        })
        .collect();
    assert_eq!(output.deliver(items).await.unwrap().objects, 20);
    let listed = s3.client().list_objects_v2().bucket("ingest-raw").prefix("demo/j2/").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(20));
    let media = output.put_media(Bytes::from_static(b"\x89PNG..."), "png", "image/png").await.unwrap();
    assert!(media.starts_with("demo/j2/") && media.ends_with(".png"), "{media}");
    s3.client().head_object().bucket("ingest-raw").key(&media).send().await.unwrap();
}
