//! Test support shared by the crates' tests: a real `etcd` process on
//! 127.0.0.1 (DESIGN.md §8: adapters are tested against real servers), free
//! ports, and a small polling helper.
//!
//! Dependencies are kept small on purpose (this crate is built by every
//! crate's tests): tempfile, and the hashing crates of the OAuth verifier.

pub mod oauth1;
pub mod ownership;
pub mod processes;
pub mod services;

pub use services::{ELASTIC_PASSWORD, Engine, S3Server, SearchServer};

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the etcd binary is unless `INGEST_ETCD_BIN` says otherwise
/// (Debian's etcd-server package).
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a starting etcd may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port on 127.0.0.1 that was free a moment ago. Another process may take
/// it before the caller binds it; callers that spawn servers retry on a bind
/// failure (as [`EtcdServer::start`] does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local address of a bound listener").port()
}

/// A job spec of `job_type` named by its id, every minute, no parameters:
/// the plain job unit tests build views and decisions from.
pub fn job_record(id: &str, job_type: &str) -> ingest_model::JobRecord {
    ingest_model::JobRecord {
        id: id.into(),
        name: id.into(),
        job_type: job_type.into(),
        params: Default::default(),
        secret_names: Vec::new(),
        interval: Duration::from_secs(60),
        paused: false,
        run_now_seq: 0,
        cursor_reset_seq: 0,
        labels: Default::default(),
        schedule: Default::default(),
        create_time: 0,
        update_time: 0,
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A single-member etcd cluster running as a child process, with its data in
/// a temporary directory. Killed (and its data removed) on drop.
pub struct EtcdServer {
    bin: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP /health and /metrics, whatever the client URLs serve.
    metrics_port: u16,
    /// `--initial-cluster`; this member alone unless part of an [`EtcdCluster`].
    initial_cluster: String,
    /// Client URLs over TLS with client-certificate auth (certs under `certs/`).
    tls: bool,
    // Held for its Drop: removes the data directory and the log.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until it answers `/health`.
    ///
    /// Panics with a clear message when the binary is missing or etcd does
    /// not come up (the message includes the tail of its log).
    pub fn start() -> EtcdServer {
        let bin = etcd_bin();
        let mut last_error = String::new();
        // Free ports can be taken by a concurrent test between `free_port`
        // and etcd's bind: retry with fresh ports.
        for _attempt in 0..3 {
            let mut server = EtcdServer::new(&bin, "ingest-test", false);
            server.initial_cluster = format!("{}=http://127.0.0.1:{}", server.name, server.peer_port);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// A single member serving its clients over TLS and requiring a client
    /// certificate (`--client-cert-auth`); see [`Self::tls_files`].
    pub fn start_tls() -> EtcdServer {
        let bin = etcd_bin();
        let mut last_error = String::new();
        // As in `start`: fresh ports when a concurrent test took one.
        for _attempt in 0..3 {
            let mut server = EtcdServer::new(&bin, "ingest-tls", true);
            server.initial_cluster = format!("{}=http://127.0.0.1:{}", server.name, server.peer_port);
            make_test_certificates(&server.dir.path().join("certs"));
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd with TLS did not start: {last_error}");
    }

    fn new(bin: &Path, name: &str, tls: bool) -> EtcdServer {
        EtcdServer {
            bin: bin.to_path_buf(),
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            initial_cluster: String::new(),
            tls,
            dir: data_parent()
                .map(|parent| tempfile::Builder::new().prefix("ingest-etcd-").tempdir_in(parent))
                .unwrap_or_else(|| tempfile::Builder::new().prefix("ingest-etcd-").tempdir())
                .expect("create a temporary directory for etcd"),
            child: None,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// With TLS: the CA, and a client certificate and key it signed (PEM files).
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        let certs = self.dir.path().join("certs");
        self.tls.then(|| (certs.join("ca.crt"), certs.join("client.crt"), certs.join("client.key")))
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// etcd's data directory (kept across [`stop`](Self::stop) /
    /// [`start_again`](Self::start_again)).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// etcd's combined stdout/stderr, appended across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd with SIGKILL (a crash, not a clean shutdown) and waits for
    /// it to exit. Data and ports are kept for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kill fails only if the process already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts etcd on the same ports and data directory after
    /// [`stop`](Self::stop), and waits until it answers.
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(error) = self.spawn_and_wait() {
            panic!("etcd did not restart: {error}");
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = self.spawn()?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status} while starting\n{}", self.log_tail()));
            }
            if health_ok(self.metrics_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("etcd did not answer /health within {START_TIMEOUT:?}\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&self) -> Result<Child, String> {
        let log_path = self.log_path();
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("clone log handle: {e}"))?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.bin);
        if self.tls {
            let certs = self.dir.path().join("certs");
            command
                .arg(format!("--cert-file={}", certs.join("server.crt").display()))
                .arg(format!("--key-file={}", certs.join("server.key").display()))
                .arg(format!("--trusted-ca-file={}", certs.join("ca.crt").display()))
                .arg("--client-cert-auth");
        }
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{}", self.metrics_port))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            // One token per cluster (its member list), so members of different tests never mix.
            .arg(format!(
                "--initial-cluster-token=ingest-{:x}",
                self.initial_cluster.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            ))
            .arg("--initial-cluster-state=new")
            // Faster leader election on (re)start of the single member.
            // etcd 3.4 has no --unsafe-no-fsync; the data directory is put on
            // tmpfs instead when one is big enough (see `data_parent`).
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        format!("--- tail of {} ---\n{}", self.log_path().display(), &text[start..])
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Several etcd members forming one cluster on loopback, each a process
/// that can be killed (-9) and restarted; stopped on drop.
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each answers `/health` (which
    /// needs an elected leader).
    pub fn start(size: usize) -> EtcdCluster {
        let bin = etcd_bin();
        let mut last_error = String::new();
        // As for one member: fresh ports when a concurrent test took one.
        for _attempt in 0..3 {
            match Self::try_start(&bin, size) {
                Ok(cluster) => return cluster,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd cluster did not start: {last_error}");
    }

    fn try_start(bin: &Path, size: usize) -> Result<EtcdCluster, String> {
        let mut members: Vec<EtcdServer> = (0..size).map(|i| EtcdServer::new(bin, &format!("m{i}"), false)).collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.initial_cluster = initial.clone();
            member.child = Some(member.spawn()?);
        }
        for member in &mut members {
            member.wait_healthy().map_err(|e| format!("member {}: {e}", member.name))?;
        }
        Ok(EtcdCluster { members })
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The index of the current leader, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            let status = post_json(m.client_port, "/v3/maintenance/status", "{}");
            let member = status.as_ref().and_then(|s| s["header"]["member_id"].as_str().map(str::to_string));
            let leader = status.as_ref().and_then(|s| s["leader"].as_str().map(str::to_string));
            member.is_some() && member == leader
        })
    }

    /// Kills member `index` with SIGKILL (data kept).
    pub fn kill(&mut self, index: usize) {
        self.members[index].stop();
    }

    /// Starts member `index` again with its data; it rejoins the cluster.
    /// Does not wait for health (which needs a quorum).
    pub fn restart(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.stop();
        let child = member.spawn().unwrap_or_else(|e| panic!("etcd member did not restart: {e}"));
        member.child = Some(child);
    }

    /// Whether member `index` answers `/health` (alive with a leader).
    pub fn healthy(&self, index: usize) -> bool {
        health_ok(self.members[index].metrics_port)
    }
}

/// A JSON POST to etcd's gRPC gateway; `None` when it does not answer.
fn post_json(port: u16, path: &str, body: &str) -> Option<serde_json::Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// A test CA, a server certificate for 127.0.0.1 and localhost (server and
/// client use, as etcd's gateway needs), and a client certificate, made with
/// openssl into `dir`: ca.crt, server.crt/key, client.crt/key.
pub fn make_test_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the certificate directory");
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=ingest-test-ca"]);
    run(&ca);
    let leaf = |name: &str, extensions: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write extensions");
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=ingest"]);
        run(&req);
        run(&["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30"]
            .into_iter()
            .chain(["-out", crt.as_str(), "-extfile", ext.as_str()])
            .collect::<Vec<_>>());
    };
    let usage = "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n";
    leaf(
        "server",
        &format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n{usage}"),
    );
    leaf("client", &format!("extendedKeyUsage=clientAuth\n{usage}"));
}

/// The etcd binary: `INGEST_ETCD_BIN` or [`DEFAULT_ETCD_BIN`]; panics with
/// instructions when it is missing.
pub fn etcd_bin() -> PathBuf {
    let bin = std::env::var_os("INGEST_ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN));
    if !bin.is_file() {
        panic!("etcd not found at {}: run `bash scripts/deps.sh` or set INGEST_ETCD_BIN", bin.display());
    }
    bin
}

/// Where to put etcd data directories: `INGEST_ETCD_DATA_PARENT`, else
/// /dev/shm when it is a tmpfs of at least 1 GiB (etcd fsyncs every write and
/// preallocates 64 MB WAL files; tmpfs makes both free), else the system temp
/// directory.
fn data_parent() -> Option<PathBuf> {
    if let Some(parent) = std::env::var_os("INGEST_ETCD_DATA_PARENT") {
        return Some(PathBuf::from(parent));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let line = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/dev/shm"))?;
    let options = line.split_whitespace().nth(3)?;
    let size = options.split(',').find_map(|o| o.strip_prefix("size="))?;
    let bytes = parse_size(size)?;
    (bytes >= 1 << 30 && Path::new("/dev/shm").is_dir()).then(|| PathBuf::from("/dev/shm"))
}

/// Parses a tmpfs `size=` option such as `24684096k` or `64m`.
fn parse_size(size: &str) -> Option<u64> {
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    Some(n * mult)
}

/// Whether `GET /health` on the client port says `"health":"true"`.
fn health_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains("\"health\":\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tmpfs_sizes() {
        assert_eq!(parse_size("24684096k"), Some(24684096 * 1024));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1x"), None);
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn etcd_starts_stops_and_restarts() {
        let mut etcd = EtcdServer::start();
        assert!(health_ok(etcd.metrics_port));
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(wait_until(Duration::from_secs(5), || !health_ok(etcd.metrics_port)));
        etcd.start_again();
        assert!(etcd.is_running());
        assert!(health_ok(etcd.metrics_port));
        assert!(etcd.data_dir().join("member").is_dir());
    }
}
