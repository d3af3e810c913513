//! OpenSearch and an S3 server as real processes on 127.0.0.1, started by
//! the project's own scripts (scripts/opensearch.sh, scripts/s3.sh) with a
//! private run directory and a free port each, and stopped on drop. The
//! scripts install the servers into $INGEST_CACHE on first use.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::free_port;

/// One script run at a time: installs take a lock, but the scripts also
/// share $INGEST_CACHE/s3.env.
static SCRIPTS: Mutex<()> = Mutex::new(());

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name)
}

fn run_script(name: &str, command: &str, envs: &[(&str, String)]) -> String {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new("bash")
        .arg(script(name))
        .arg(command)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    if !output.status.success() {
        panic!(
            "scripts/{name} {command} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A single-node OpenSearch (scripts/opensearch.sh), stopped on drop.
pub struct OpenSearchServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl OpenSearchServer {
    /// Starts a node with its own data and port; waits for yellow.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("ingest-opensearch-").tempdir().expect("create a run directory");
        let server = Self { port: free_port(), dir };
        server.run("start", false);
        server
    }

    fn envs(&self, keep_data: bool) -> Vec<(&'static str, String)> {
        vec![
            ("OPENSEARCH_RUN_DIR", self.dir.path().display().to_string()),
            ("OPENSEARCH_PORT", self.port.to_string()),
            ("OPENSEARCH_HEAP", std::env::var("INGEST_TEST_OPENSEARCH_HEAP").unwrap_or_else(|_| "512m".into())),
            ("OPENSEARCH_KEEP_DATA", if keep_data { "1" } else { "0" }.to_string()),
        ]
    }

    fn run(&self, command: &str, keep_data: bool) {
        run_script("opensearch.sh", command, &self.envs(keep_data));
    }

    /// e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the node (SIGTERM, waits); data and port are kept.
    pub fn stop(&self) {
        self.run("stop", true);
    }

    /// Starts the node again on the same port and data.
    pub fn start_again(&self) {
        self.run("start", true);
    }

    /// Number of documents in `index` after a refresh.
    pub fn count(&self, index: &str) -> u64 {
        let (status, body) = http(&self.url(), "POST", &format!("/{index}/_refresh"), None);
        assert!(status == 200, "refresh {index}: {status} {body}");
        let (status, body) = http(&self.url(), "GET", &format!("/{index}/_count"), None);
        assert!(status == 200, "count {index}: {status} {body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("a JSON _count answer");
        value["count"].as_u64().expect("a count")
    }

    /// A JSON request to the node; panics unless it answers 2xx.
    pub fn json(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let text = body.map(|b| b.to_string());
        let (status, answer) = http(&self.url(), method, path, text.as_deref());
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for OpenSearchServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("opensearch.sh")).arg("stop").envs(self.envs(true)).output();
    }
}

/// An S3-compatible server (scripts/s3.sh: MinIO, else Garage), stopped on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    credentials: BTreeMap<String, String>,
}

impl S3Server {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("ingest-s3-").tempdir().expect("create a run directory");
        let mut server = Self { port: free_port(), dir, credentials: BTreeMap::new() };
        server.run("start", false);
        let cache = std::env::var("INGEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ingest"));
        let env = std::fs::read_to_string(cache.join("s3.env")).expect("scripts/s3.sh writes s3.env");
        server.credentials = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        server
    }

    fn envs(&self, keep_data: bool) -> Vec<(&'static str, String)> {
        vec![
            ("S3_RUN_DIR", self.dir.path().display().to_string()),
            ("S3_PORT", self.port.to_string()),
            ("S3_KEEP_DATA", if keep_data { "1" } else { "0" }.to_string()),
        ]
    }

    fn run(&self, command: &str, keep_data: bool) {
        run_script("s3.sh", command, &self.envs(keep_data));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        self.credentials.get("INGEST_S3_ACCESS_KEY").map_or("", String::as_str)
    }

    pub fn secret_key(&self) -> &str {
        self.credentials.get("INGEST_S3_SECRET_KEY").map_or("", String::as_str)
    }

    pub fn region(&self) -> &str {
        self.credentials.get("INGEST_S3_REGION").map_or("us-east-1", String::as_str)
    }

    /// Environment for an `ingest` process to use this server.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        vec![
            ("INGEST_S3_BUCKET".into(), bucket.into()),
            ("INGEST_S3_ENDPOINT".into(), self.endpoint()),
            ("INGEST_S3_REGION".into(), self.region().into()),
            ("INGEST_S3_ACCESS_KEY".into(), self.access_key().into()),
            ("INGEST_S3_SECRET_KEY".into(), self.secret_key().into()),
        ]
    }

    pub fn stop(&self) {
        self.run("stop", true);
    }

    pub fn start_again(&self) {
        self.run("start", true);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("s3.sh")).arg("stop").envs(self.envs(true)).output();
    }
}

/// A plain HTTP/1.0 request; (status, body). Status 0 when unreachable.
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let Ok(addr) = authority.parse::<SocketAddr>() else { return (0, format!("not an address: {authority}")) };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, "connection refused".into());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
