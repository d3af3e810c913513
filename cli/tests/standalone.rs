//! `ingest standalone` as a user runs it: the real binary, its embedded store
//! on disk, gRPC and HTTP on 127.0.0.1, SIGTERM, and a restart that finds the
//! jobs again.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingest_proto::v1 as pb;
use ingest_proto::v1::job_service_client::JobServiceClient;
use ingest_testkit::free_port;

struct Standalone {
    child: Child,
    grpc: String,
    http: String,
}

impl Standalone {
    /// Its log goes to `log`, as it would to a file or a container's log.
    fn start(data_dir: &Path, log: &Path) -> Standalone {
        Self::start_with(data_dir, log, &[])
    }

    fn start_with(data_dir: &Path, log: &Path, flags: &[&str]) -> Standalone {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
            .arg("standalone")
            .args(["--data-dir", data_dir.to_str().expect("utf8")])
            .args(["--grpc-addr", &grpc, "--http-addr", &http])
            .args(flags)
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ingest standalone");
        Standalone { child, grpc, http }
    }

    async fn client(&mut self) -> JobServiceClient<tonic::transport::Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = JobServiceClient::connect(format!("http://{}", self.grpc)).await {
                return client;
            }
            assert!(self.child.try_wait().expect("try_wait").is_none(), "ingest standalone exited early");
            assert!(Instant::now() < deadline, "ingest standalone not serving");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (started.elapsed(), status);
            }
            assert!(started.elapsed() < Duration::from_secs(15), "ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

async fn wait_for_worker(client: &mut JobServiceClient<tonic::transport::Channel>) -> Vec<pb::Worker> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let workers = client.list_workers(pb::ListWorkersRequest {}).await.expect("workers").into_inner().workers;
        if !workers.is_empty() {
            return workers;
        }
        assert!(Instant::now() < deadline, "no worker registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn standalone_serves_persists_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("standalone.log");
    let mut first = Standalone::start(&data, &log);
    let mut client = first.client().await;
    let workers = wait_for_worker(&mut client).await;
    assert_eq!(workers.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["standalone"]);
    let types = client.list_job_types(pb::ListJobTypesRequest {}).await.expect("types").into_inner();
    let demo = types.job_types.iter().find(|t| t.name == "demo").expect("demo type");
    assert_eq!(demo.workers, ["standalone"]);

    let job = pb::Job {
        name: "kept across restarts".into(),
        r#type: "demo".into(),
        interval: Some(pbjson_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    let created =
        client.create_job(pb::CreateJobRequest { job: Some(job), ..Default::default() }).await.expect("create");
    let id = created.into_inner().job.expect("job").id;

    // The in-process worker claims and runs it; its counters rise in GetJob.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 {
        let job =
            client.get_job(pb::GetJobRequest { id: id.clone() }).await.expect("get").into_inner().job.expect("job");
        let status = job.status.expect("status");
        let fetched = status.counters.map_or(0, |c| c.items_fetched);
        if status.owner == "standalone" && fetched > 0 && seen.last().is_none_or(|last| fetched > *last) {
            assert_eq!(status.state, pb::JobState::Running as i32);
            assert!(status.epoch > 0 && status.last_success_time.is_some() && status.next_run_time.is_some());
            seen.push(fetched);
        }
        assert!(Instant::now() < deadline, "counters did not rise: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its documents land in the local sink: JSON Lines under <data-dir>/out.
    let lines = std::fs::read_to_string(data.join("out/documents/ingest-demo.jsonl")).expect("documents file");
    let ours = lines.lines().filter(|l| l.contains(&format!(r#""job_id":"{id}""#))).count() as u64;
    assert!(ours >= seen[0], "{ours} documents in the file, {} items counted", seen[0]);
    // The same through grpcurl, as a user would look.
    let grpcurl = std::env::var("INGEST_GRPCURL").unwrap_or_else(|_| "grpcurl".to_string());
    let out = Command::new(grpcurl)
        .args(["-plaintext", "-d", &format!(r#"{{"id": "{id}"}}"#), &first.grpc, "ingest.v1.JobService/GetJob"])
        .output()
        .expect("run grpcurl (bash scripts/deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(r#""owner": "standalone""#) && text.contains(r#""itemsFetched": ""#), "{text}");
    assert!(text.contains(r#""itemsWritten": ""#), "documents are counted as written: {text}");
    let health = http_get(&first.http, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200") && health.contains("ok revision="), "{health}");

    let (took, status) = first.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    // The job is still there after a restart, and the worker registers again
    // at once: its old leased registration died with the old process.
    let mut second = Standalone::start(&data, &log);
    let mut client = second.client().await;
    let job = client.get_job(pb::GetJobRequest { id }).await.expect("job survives restart").into_inner();
    assert_eq!(job.job.expect("job").name, "kept across restarts");
    let started = Instant::now();
    wait_for_worker(&mut client).await;
    assert!(started.elapsed() < Duration::from_secs(5), "worker re-registration took {:?}", started.elapsed());
    let (_, status) = second.terminate();
    assert!(status.success());

    // The store holds secrets: the directory it made and its file are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory mode");
    assert_eq!(mode(&data.join("store.redb")), 0o600, "store file mode");
    // A log that is not a terminal carries no colour codes.
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(text.contains("standalone starting"), "the log file has the process's lines: {text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a log file: {text}");
}

#[test]
fn unusable_data_dir_exits_non_zero_with_the_path_in_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["standalone", "--data-dir", file.to_str().expect("utf8")])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("run ingest");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("a-file"), "{text}");
}

/// Runs `ingest standalone` with extra flags and expects it to exit non-zero
/// within 20 s; its stderr.
fn refused(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["standalone", "--data-dir", dir.path().join("data").to_str().expect("utf8")])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ingest");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ingest standalone {flags:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    assert!(!status.success(), "{flags:?} exited 0: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// An HTTP server that answers every request with `body` (JSON, 200).
fn answering(body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn unusable_elasticsearch_settings_name_their_flag_and_exit_non_zero() {
    // A server too old for composable index templates.
    let old = answering(r#"{"version": {"number": "7.7.1"}, "tagline": "You Know, for Search"}"#);
    let stderr = refused(&["--elasticsearch-url", &old]);
    assert!(stderr.contains("Elasticsearch 7.7.1 is not supported"), "{stderr}");
    assert!(stderr.contains("--elasticsearch-url"), "{stderr}");
    // Something that is not a search server at all.
    let other = answering(r#"{"hello": "world"}"#);
    let stderr = refused(&["--elasticsearch-url", &other]);
    assert!(stderr.contains("is not Elasticsearch or OpenSearch"), "{stderr}");
    // A CA file that does not exist, or is not a certificate.
    let stderr = refused(&["--elasticsearch-url", "https://127.0.0.1:9", "--elasticsearch-ca", "/nonexistent/ca.pem"]);
    assert!(stderr.contains("--elasticsearch-ca") && stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    // Two ways to authenticate at once.
    let stderr = refused(&[
        "--elasticsearch-url",
        "http://127.0.0.1:9",
        "--elasticsearch-api-key",
        "a2V5",
        "--elasticsearch-username",
        "elastic",
        "--elasticsearch-password",
        "pw",
    ]);
    assert!(stderr.contains("--elasticsearch-api-key") && stderr.contains("one or the other"), "{stderr}");
    assert!(!stderr.contains("a2V5") && !stderr.contains("pw\n"), "no secret in the message: {stderr}");
    // Not an http(s) URL.
    let stderr = refused(&["--elasticsearch-url", "ftp://127.0.0.1:21"]);
    assert!(stderr.contains("--elasticsearch-url"), "{stderr}");
}

/// Pages built to be slow to parse, linked from a feed whose job extracts
/// articles: the process keeps answering health checks and the API within
/// a second throughout, each page costs at most its own article, and
/// SIGTERM still drains in its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_only_fail_their_own_article() {
    use axum::routing::get;

    let pages: Vec<(&str, String)> = vec![
        ("deep", "<html><body>".to_string() + &"<div>".repeat(40_000) + &"<p>x</p>".repeat(40_000)),
        ("formatting", "<html><body><p>".to_string() + &"<b><i><u>".repeat(20_000) + "text"),
        ("wide", "<html><body><article>".to_string() + &"<p><b>word</b> <i>word</i></p>".repeat(60_000)),
        ("big", "<html><body><p>".to_string() + &"text ".repeat(2_500_000)),
        ("nested-lists", "<html><body>".to_string() + &"<ul><li>".repeat(200) + "deep item"),
        ("fine", "<html><body><article><p>A fine article.</p></article></body></html>".to_string()),
    ];
    let names: Vec<&'static str> = pages.iter().map(|(n, _)| *n).collect();
    let pages: std::collections::HashMap<String, String> =
        pages.into_iter().map(|(name, html)| (name.to_string(), html)).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut feed = String::from(r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Hostile</title>"#);
    for name in &names {
        feed.push_str(&format!("<item><title>{name}</title><link>{base}/page/{name}</link><guid>{name}</guid></item>"));
    }
    feed.push_str("</channel></rss>");
    let app = axum::Router::new()
        .route("/feed.xml", get(move || async move { ([("content-type", "application/rss+xml")], feed) }))
        .route(
            "/page/{name}",
            get(move |axum::extract::Path(name): axum::extract::Path<String>| {
                let html = pages.get(&name).cloned().unwrap_or_default();
                async move { ([("content-type", "text/html")], html) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("standalone.log");
    let mut node = Standalone::start_with(&data, &log, &["--fetch-allow", "127.0.0.1"]);
    let mut client = node.client().await;
    wait_for_worker(&mut client).await;
    let params = serde_json::json!({"url": format!("{base}/feed.xml"), "extract_articles": true});
    let job = pb::Job {
        name: "hostile".into(),
        r#type: "rss".into(),
        params: Some(serde_json::from_value(params).expect("params")),
        ..Default::default()
    };
    client.create_job(pb::CreateJobRequest { job: Some(job), ..Default::default() }).await.expect("create");

    // Until every page's document is written: health and the API answer
    // within a second every time they are asked.
    let documents = data.join("out/documents/ingest-rss.jsonl");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let health = tokio::task::block_in_place(|| http_get(&node.http, "/healthz"));
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        slowest = slowest.max(asked.elapsed());
        let asked = Instant::now();
        let list = tokio::time::timeout(
            Duration::from_secs(1),
            client.list_jobs(pb::ListJobsRequest { page_size: 10, ..Default::default() }),
        )
        .await;
        assert!(matches!(list, Ok(Ok(_))), "ListJobs did not answer within 1 s: {list:?}");
        slowest = slowest.max(asked.elapsed());
        assert!(slowest < Duration::from_secs(1), "an answer took {slowest:?}");
        let written = std::fs::read_to_string(&documents).unwrap_or_default();
        if names.iter().all(|n| written.contains(&format!(r#""guid":"{n}""#))) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "articles not written within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("every page handled in {:?}; slowest health or API answer {slowest:?}", started.elapsed());
    let written = std::fs::read_to_string(&documents).expect("documents");
    let doc = |name: &str| -> serde_json::Value {
        let line = written.lines().find(|l| l.contains(&format!(r#""guid":"{name}""#))).expect("the page's document");
        serde_json::from_str::<serde_json::Value>(line).expect("JSON")["_source"].clone()
    };
    let deep = doc("deep");
    assert!(deep["article_error"].as_str().is_some_and(|e| e.contains("nests elements")), "{deep}");
    assert!(doc("formatting")["article_error"].as_str().is_some(), "refused too");
    assert_eq!(doc("fine")["article_text"], "A fine article.");
    assert_eq!(doc("nested-lists")["article_text"], "deep item");

    let (took, status) = node.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(8), "drained in {took:?}");
}

/// With --secrets-key-file, job secrets are sealed in the store file: the
/// value is nowhere in it, the job runs; started without the key, the job
/// says which flag it needs instead of running without its secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_with_a_key_file() {
    const SECRET: &str = "super-secret-token-value";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("standalone.log");
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "# ingest test key\nAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n").expect("write the key");
    let key_flag = ["--secrets-key-file", key.to_str().expect("utf8")];

    let mut first = Standalone::start_with(&data, &log, &key_flag);
    let mut client = first.client().await;
    wait_for_worker(&mut client).await;
    let params = serde_json::json!({"items_per_run": 1, "token": SECRET});
    let job = pb::Job {
        name: "sealed".into(),
        r#type: "demo".into(),
        interval: Some(pbjson_types::Duration { seconds: 1, nanos: 0 }),
        params: Some(serde_json::from_value(params).expect("params")),
        ..Default::default()
    };
    let created =
        client.create_job(pb::CreateJobRequest { job: Some(job), ..Default::default() }).await.expect("create");
    let id = created.into_inner().job.expect("job").id;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = client.get_job(pb::GetJobRequest { id: id.clone() }).await.expect("get").into_inner();
        let status = job.job.and_then(|j| j.status).expect("status");
        if status.counters.is_some_and(|c| c.items_fetched > 1) {
            assert!(status.last_error.is_none(), "{:?}", status.last_error);
            break;
        }
        assert!(Instant::now() < deadline, "the job with sealed secrets did not run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, status) = first.terminate();
    assert!(status.success());
    let stored = std::fs::read(data.join("store.redb")).expect("the store file");
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret is in the store file in clear");

    // Without the key: the job fails visibly, naming the flag.
    let mut second = Standalone::start(&data, &log);
    let mut client = second.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let job = client.get_job(pb::GetJobRequest { id: id.clone() }).await.expect("get").into_inner();
        let error = job.job.and_then(|j| j.status).and_then(|s| s.last_error).map(|e| e.message).unwrap_or_default();
        if error.contains("encrypted") {
            break error;
        }
        assert!(Instant::now() < deadline, "no error about the missing key: {error:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(error.contains("--secrets-key-file"), "{error}");
    let (_, status) = second.terminate();
    assert!(status.success());
}

/// Standalone behind TLS, mTLS and role tokens on both ports: its own
/// worker still reports counters (in process, needing no token or
/// certificate), and a read token sees them but cannot change anything.
#[tokio::test]
async fn standalone_with_tls_mtls_and_tokens_still_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    ingest_testkit::make_test_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().expect("utf8").to_string();
    std::fs::write(dir.path().join("tokens"), "admin adm-token\nread read-token\n").expect("tokens");
    let (ca, cert, key, ccert, ckey) =
        (file("ca.crt"), file("server.crt"), file("server.key"), file("client.crt"), file("client.key"));
    let flags = ["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca, "--token-file", &file("tokens")];
    let mut standalone = Standalone::start_with(&dir.path().join("data"), &dir.path().join("log"), &flags);
    let http = standalone.http.clone();
    let api = move |token: &str, method: &str, body: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "--cacert", &ca, "--cert", &ccert, "--key", &ckey])
            .args(["-H", &format!("authorization: Bearer {token}"), "--data", body])
            .arg(format!("https://{http}/api/ingest.v1.JobService/{method}"))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|_| serde_json::json!({"raw": text}))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while api("read-token", "ListWorkers", "{}")["workers"].as_array().is_none_or(Vec::is_empty) {
        assert!(standalone.child.try_wait().expect("try_wait").is_none(), "standalone exited");
        assert!(Instant::now() < deadline, "no worker: {}", api("read-token", "ListWorkers", "{}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = r#"{"job": {"name": "behind tls", "type": "demo", "interval": "1s"}}"#;
    let refused = api("read-token", "CreateJob", job);
    assert_eq!(refused["code"], "PERMISSION_DENIED", "{refused}");
    let created = api("adm-token", "CreateJob", job);
    let id = created["job"]["id"].as_str().unwrap_or_else(|| panic!("created: {created}")).to_string();
    loop {
        let got = api("read-token", "GetJob", &format!(r#"{{"id": "{id}"}}"#));
        let fetched = got["job"]["status"]["counters"]["itemsFetched"].as_str().and_then(|n| n.parse::<u64>().ok());
        if fetched.is_some_and(|n| n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no counters behind TLS: {got}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, status) = standalone.terminate();
    assert!(status.success(), "{status}");
}
