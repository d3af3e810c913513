//! OpenSearch, Elasticsearch and an S3 server as real processes on 127.0.0.1,
//! started by the project's own scripts (scripts/opensearch.sh,
//! scripts/elasticsearch.sh, scripts/s3.sh) with a
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

/// Which search server a [`SearchServer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// OpenSearch 2.19 (scripts/opensearch.sh).
    OpenSearch,
    /// Elasticsearch 9.1 (scripts/elasticsearch.sh).
    Elasticsearch9,
    /// Elasticsearch 8.19 (scripts/elasticsearch.sh).
    Elasticsearch8,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::OpenSearch => "OpenSearch 2.19.6",
            Engine::Elasticsearch9 => "Elasticsearch 9.1.0",
            Engine::Elasticsearch8 => "Elasticsearch 8.19.0",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Engine::OpenSearch => "opensearch.sh",
            _ => "elasticsearch.sh",
        }
    }

    fn dir_prefix(self) -> &'static str {
        match self {
            Engine::OpenSearch => "ingest-opensearch-",
            _ => "ingest-elasticsearch-",
        }
    }
}

/// A single-node OpenSearch or Elasticsearch with its own run directory and
/// port, stopped on drop. Secure nodes (Elasticsearch only) serve HTTPS with
/// a test CA and require the `elastic` user's password or an API key.
pub struct SearchServer {
    engine: Engine,
    dir: tempfile::TempDir,
    port: u16,
    secure: bool,
}

/// The `elastic` user's password on secure test nodes.
pub const ELASTIC_PASSWORD: &str = "ingest-test-password";

impl SearchServer {
    /// Starts a node with its own data and port; waits for yellow.
    pub fn start(engine: Engine) -> Self {
        Self::launch(engine, false)
    }

    /// An Elasticsearch node with security on: HTTPS (see [`Self::ca_path`]),
    /// basic auth as `elastic` / [`ELASTIC_PASSWORD`], API keys.
    pub fn start_secure(engine: Engine) -> Self {
        assert!(engine != Engine::OpenSearch, "secure test nodes are Elasticsearch nodes");
        Self::launch(engine, true)
    }

    fn launch(engine: Engine, secure: bool) -> Self {
        let dir = tempfile::Builder::new().prefix(engine.dir_prefix()).tempdir().expect("create a run directory");
        let server = Self { engine, port: free_port(), dir, secure };
        server.run("start", false);
        server
    }

    fn envs(&self, keep_data: bool) -> Vec<(&'static str, String)> {
        let heap = std::env::var("INGEST_TEST_SEARCH_HEAP").unwrap_or_else(|_| "512m".into());
        let keep = if keep_data { "1" } else { "0" }.to_string();
        let dir = self.dir.path().display().to_string();
        match self.engine {
            Engine::OpenSearch => vec![
                ("OPENSEARCH_RUN_DIR", dir),
                ("OPENSEARCH_PORT", self.port.to_string()),
                ("OPENSEARCH_HEAP", heap),
                ("OPENSEARCH_KEEP_DATA", keep),
            ],
            Engine::Elasticsearch9 | Engine::Elasticsearch8 => vec![
                ("ES_VERSION", if self.engine == Engine::Elasticsearch9 { "9.1.0" } else { "8.19.0" }.to_string()),
                ("ES_RUN_DIR", dir),
                ("ES_PORT", self.port.to_string()),
                ("ES_HEAP", heap),
                ("ES_KEEP_DATA", keep),
                ("ES_SECURITY", if self.secure { "1" } else { "0" }.to_string()),
                ("ES_PASSWORD", ELASTIC_PASSWORD.to_string()),
            ],
        }
    }

    fn run(&self, command: &str, keep_data: bool) {
        run_script(self.engine.script(), command, &self.envs(keep_data));
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// e.g. `http://127.0.0.1:40123` (`https://` on a secure node).
    pub fn url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) of a secure node's HTTPS certificate.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.secure.then(|| self.dir.path().join("certs/ca.crt"))
    }

    /// Environment for an `ingest` process to write to this node (as
    /// `elastic` with the CA on a secure node).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("INGEST_ELASTICSEARCH_URL".to_string(), self.url())];
        if let Some(ca) = self.ca_path() {
            env.push(("INGEST_ELASTICSEARCH_USERNAME".into(), "elastic".into()));
            env.push(("INGEST_ELASTICSEARCH_PASSWORD".into(), ELASTIC_PASSWORD.into()));
            env.push(("INGEST_ELASTICSEARCH_CA".into(), ca.display().to_string()));
        }
        env
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
        let (status, body) = self.request("POST", &format!("/{index}/_refresh"), None);
        assert!(status == 200, "refresh {index}: {status} {body}");
        let (status, body) = self.request("GET", &format!("/{index}/_count"), None);
        assert!(status == 200, "count {index}: {status} {body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("a JSON _count answer");
        value["count"].as_u64().expect("a count")
    }

    /// A JSON request to the node (as `elastic` on a secure node); panics
    /// unless it answers 2xx.
    pub fn json(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let text = body.map(|b| b.to_string());
        let (status, answer) = self.request(method, path, text.as_deref());
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null)
    }

    /// (status, body) of a request; status 0 when the node does not answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        match self.ca_path() {
            None => http(&self.url(), method, path, body),
            Some(ca) => curl(&format!("{}{path}", self.url()), method, body, &ca),
        }
    }
}

impl Drop for SearchServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script(self.engine.script())).arg("stop").envs(self.envs(true)).output();
    }
}

/// An HTTPS request as `elastic` through curl, trusting `ca`.
fn curl(url: &str, method: &str, body: Option<&str>, ca: &std::path::Path) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-m", "30", "-X", method, "--cacert"])
        .arg(ca)
        .args(["-u", &format!("elastic:{ELASTIC_PASSWORD}"), "-H", "Content-Type: application/json"])
        .args(["-w", "\n%{http_code}"]);
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let Ok(output) = command.arg(url).output() else { return (0, "cannot run curl".into()) };
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    match text.rsplit_once('\n') {
        Some((body, code)) => (code.trim().parse().unwrap_or(0), body.to_string()),
        None => (text.trim().parse().unwrap_or(0), String::new()),
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
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    // Elasticsearch answers even HTTP/1.0 requests in chunks.
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (status, body)
}

/// The content of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(dechunk("0\r\n\r\n"), "");
        assert_eq!(dechunk("zz\r\nbad"), "");
    }
}
