//! The real `ingest-control` binary on a real etcd, driven by the real
//! grpcurl with no .proto file at hand (server reflection only): list,
//! describe, ListJobTypes, CreateJob, GetJob, WatchJobs, DeleteJob, a bad
//! CreateJob with its field violations, bearer-token auth, TLS and mTLS, a
//! graceful exit on SIGTERM; and every grpcurl and curl recipe of the README,
//! run as written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_store::keys::Keys;
use ingest_store::{EtcdOptions, EtcdStore, Store};
use ingest_testkit::{EtcdServer, free_port};
use ingest_worker::{Membership, catalogue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn grpcurl_bin() -> String {
    std::env::var("INGEST_GRPCURL").unwrap_or_else(|_| "grpcurl".to_string())
}

/// A running `ingest-control` process, killed on drop.
struct Control {
    child: Child,
    addr: String,
    http: String,
    log: PathBuf,
}

impl Control {
    fn start(etcd: &EtcdServer, dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Control {
        let addr = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("control-{}.log", free_port()));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ingest-control"))
            .args(["--etcd", &etcd.endpoint(), "--grpc-addr", &addr])
            .args(["--http-addr", &http])
            .args(["--key-root", "/grpcurl-test/", "--log-format", "json"])
            .args(extra_args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ingest-control");
        Control { child, addr, http, log }
    }

    /// Waits until the gRPC health check answers SERVING (over `flags`).
    fn wait_serving(&mut self, flags: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = grpcurl(flags, &self.addr, &["grpc.health.v1.Health/Check"], None);
            if out.status.success() && stdout(&out).contains("SERVING") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ingest-control exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "control not serving: {}", stderr(&out));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and returns how long the process took to exit, and its
    /// exit status.
    fn terminate(mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(killed.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (started.elapsed(), status);
            }
            assert!(started.elapsed() < Duration::from_secs(15), "control ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpcurl(flags: &[&str], addr: &str, args: &[&str], data: Option<&str>) -> Output {
    let mut cmd = Command::new(grpcurl_bin());
    cmd.args(flags);
    if let Some(data) = data {
        cmd.args(["-d", data]);
    }
    cmd.arg(addr).args(args);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run grpcurl ({e}); run `bash scripts/deps.sh` or set INGEST_GRPCURL"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "grpcurl failed: {}{}", stdout(&out), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
}

/// Registers a worker with the built-in catalogue on the etcd, as
/// `ingest-worker` would, until the returned token is cancelled.
async fn start_worker(etcd: &EtcdServer) -> CancellationToken {
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await.expect("connect to etcd"));
    let keys = Keys::new("/grpcurl-test/");
    let membership = Membership::new(store.clone(), keys.clone(), common::worker_config("w1"), catalogue::job_types());
    membership.publish_types().await.expect("publish types");
    let token = CancellationToken::new();
    let (lease_tx, mut lease_rx) = tokio::sync::watch::channel(None);
    tokio::spawn({
        let token = token.clone();
        async move { membership.run(token, lease_tx).await }
    });
    // Registered once it holds a lease.
    tokio::time::timeout(std::time::Duration::from_secs(10), lease_rx.wait_for(Option::is_some))
        .await
        .expect("worker registers")
        .expect("membership running");
    token
}

/// A whole worker (runs jobs and dry runs) on `etcd`, reporting to the
/// control server at `control`, its documents in files under `dir`.
async fn start_running_worker(etcd: &EtcdServer, control: &str, dir: &Path) -> CancellationToken {
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await.expect("connect to etcd"));
    let token = CancellationToken::new();
    let config = ingest_worker::WorkerConfig { lease_ttl: Duration::from_secs(5), ..common::worker_config("w1") };
    let services = ingest_worker::JobServices {
        sinks: Arc::new(ingest_sinks::Sinks::local(&dir.join("out"), Duration::from_secs(30))),
        fetcher: Arc::new(ingest_worker::fetch::Fetcher::new(&Default::default()).expect("fetcher")),
        secrets_keys: None,
    };
    let report_to = ingest_worker::ReportTo::Control(ingest_worker::ControlEndpoint {
        url: format!("http://{control}"),
        token: Default::default(),
        tls: None,
    });
    tokio::spawn(ingest_worker::run_worker(
        store,
        Keys::new("/grpcurl-test/"),
        config,
        Default::default(),
        report_to,
        services,
        None,
        token.clone(),
    ));
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_control_on_etcd_through_reflection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let worker = start_worker(&etcd).await;
    let mut control = Control::start(&etcd, dir.path(), &[], &[]);
    tokio::task::block_in_place(|| {
        let plain = ["-plaintext"];
        control.wait_serving(&plain);
        let addr = control.addr.clone();

        let list = grpcurl(&plain, &addr, &["list"], None);
        for service in [
            "ingest.v1.JobService",
            "ingest.v1.WorkerService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(stdout(&list).lines().any(|l| l == service), "{service} missing from: {}", stdout(&list));
        }
        let describe = stdout(&grpcurl(&plain, &addr, &["describe", "ingest.v1.JobService"], None));
        assert!(describe.contains("rpc CreateJob ( .ingest.v1.CreateJobRequest )"), "{describe}");
        assert!(describe.contains("rpc WatchJobs ( .ingest.v1.WatchJobsRequest ) returns ( stream"), "{describe}");
        let describe = stdout(&grpcurl(&plain, &addr, &["describe", "ingest.v1.WorkerService"], None));
        assert!(describe.contains("rpc ReportProgress ( stream .ingest.v1.ReportProgressRequest )"), "{describe}");

        let types = ok_json(grpcurl(&plain, &addr, &["ingest.v1.JobService/ListJobTypes"], None));
        let demo = types["jobTypes"].as_array().and_then(|t| t.iter().find(|t| t["name"] == "demo")).cloned();
        let demo = demo.unwrap_or_else(|| panic!("demo type missing: {types}"));
        assert_eq!(demo["workers"], serde_json::json!(["w1"]));
        assert!(demo["params"].as_array().is_some_and(|p| p.iter().any(|p| p["kind"] == "PARAM_KIND_SECRET")));

        let create = r#"{"job": {"name": "from grpcurl", "type": "demo", "interval": "30s",
            "params": {"items_per_run": 3, "mode": "random", "token": "grpcurl-secret"}}}"#;
        let created = ok_json(grpcurl(&plain, &addr, &["ingest.v1.JobService/CreateJob"], Some(create)));
        let id = created["job"]["id"].as_str().expect("id").to_string();
        assert_eq!(created["job"]["secretParamsSet"], serde_json::json!(["token"]));

        let got = grpcurl(&plain, &addr, &["ingest.v1.JobService/GetJob"], Some(&format!(r#"{{"id": "{id}"}}"#)));
        assert!(!stdout(&got).contains("grpcurl-secret"), "secret returned: {}", stdout(&got));
        let got = ok_json(got);
        assert_eq!(got["job"]["name"], "from grpcurl");
        assert_eq!(got["job"]["interval"], "30s");
        assert_eq!(got["job"]["params"]["items_per_run"], 3.0);
        assert_eq!(got["job"]["status"]["state"], "JOB_STATE_PENDING");

        // A watch streams until grpcurl's own deadline ends it.
        let watch = grpcurl(&["-plaintext", "-max-time", "3"], &addr, &["ingest.v1.JobService/WatchJobs"], Some("{}"));
        let text = stdout(&watch);
        assert!(text.contains(&id) && text.contains("\"synced\": true"), "watch output: {text}{}", stderr(&watch));
        assert!(!text.contains("grpcurl-secret"));

        let bad = r#"{"job": {"name": "bad", "type": "demo", "params": {"items_per_run": 0, "colour": "red"}}}"#;
        let refused = grpcurl(&plain, &addr, &["ingest.v1.JobService/CreateJob"], Some(bad));
        assert!(!refused.status.success());
        let text = format!("{}{}", stdout(&refused), stderr(&refused));
        assert!(text.contains("Code: InvalidArgument"), "{text}");
        assert!(
            text.contains("google.rpc.BadRequest") && text.contains("\"field\": \"job.params.items_per_run\""),
            "{text}"
        );
        assert!(text.contains("\"field\": \"job.params.colour\""), "{text}");

        let deleted =
            ok_json(grpcurl(&plain, &addr, &["ingest.v1.JobService/DeleteJob"], Some(&format!(r#"{{"id": "{id}"}}"#))));
        assert_eq!(deleted, serde_json::json!({}));
        let gone = grpcurl(&plain, &addr, &["ingest.v1.JobService/GetJob"], Some(&format!(r#"{{"id": "{id}"}}"#)));
        assert!(stderr(&gone).contains("Code: NotFound"), "{}", stderr(&gone));
        let listed = ok_json(grpcurl(&plain, &addr, &["ingest.v1.JobService/ListJobs"], Some("{}")));
        assert_eq!(listed, serde_json::json!({}), "no jobs left");
    });
    let (took, status) = control.terminate();
    assert!(status.success(), "control exited with {status} after SIGTERM");
    assert!(took < Duration::from_secs(5), "graceful shutdown took {took:?}");
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_the_job_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken-from-file\n").expect("write token");
    let mut control = Control::start(&etcd, dir.path(), &["--token-file", token_file.to_str().expect("utf8")], &[]);
    tokio::task::block_in_place(|| {
        control.wait_serving(&["-plaintext"]);
        let addr = control.addr.clone();
        let anonymous = grpcurl(&["-plaintext"], &addr, &["ingest.v1.JobService/ListJobs"], Some("{}"));
        assert!(stderr(&anonymous).contains("Unauthenticated"), "{}", stderr(&anonymous));
        assert!(stderr(&anonymous).contains("authorization: Bearer"), "says what to send");
        // Reflection stays open: the schema is public, the data is not.
        let listing = grpcurl(&["-plaintext"], &addr, &["list"], None);
        assert!(stdout(&listing).contains("ingest.v1.JobService"), "{}", stderr(&listing));
        let wrong = grpcurl(
            &["-plaintext", "-H", "authorization: Bearer nope"],
            &addr,
            &["ingest.v1.JobService/ListJobs"],
            Some("{}"),
        );
        assert!(stderr(&wrong).contains("Unauthenticated"), "{}", stderr(&wrong));
        let authed = ["-plaintext", "-H", "authorization: Bearer t0ken-from-file"];
        ok_json(grpcurl(&authed, &addr, &["ingest.v1.JobService/ListJobs"], Some("{}")));
    });
}

/// A call as grpcurl makes it with `token`: its output and whether it passed.
fn call_as(addr: &str, token: &str, method: &str, data: &str) -> (bool, String) {
    let header = format!("authorization: Bearer {token}");
    let out = grpcurl(&["-plaintext", "-H", &header], addr, &[method], Some(data));
    (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
}

/// Tokens with roles from a file control re-reads: each role may make its
/// own calls and no other (PERMISSION_DENIED, naming the role needed), and
/// a token is rotated by editing the file, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_roles_and_rotate_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "# roles\nadmin adm-1\nread rd-1\nworker wk-1\n").expect("write tokens");
    let mut control = Control::start(&etcd, dir.path(), &["--token-file", token_file.to_str().expect("utf8")], &[]);
    let create = r#"{"job": {"name": "roles", "type": "demo", "params": {"items_per_run": 1}}}"#;
    let report = r#"{"worker": "w1", "jobs": []}"#;
    tokio::task::block_in_place(|| {
        control.wait_serving(&["-plaintext"]);
        let addr = control.addr.clone();
        let (ok, text) = call_as(&addr, "adm-1", "ingest.v1.JobService/CreateJob", create);
        // No worker has published the demo type here: refused for that
        // reason, past the token check.
        assert!(!text.contains("PermissionDenied") && !text.contains("Unauthenticated"), "{ok} {text}");
        for method in ["ListJobs", "ListJobTypes", "ListWorkers"] {
            let (ok, text) = call_as(&addr, "rd-1", &format!("ingest.v1.JobService/{method}"), "{}");
            assert!(ok, "read token, {method}: {text}");
            let (ok, text) = call_as(&addr, "wk-1", &format!("ingest.v1.JobService/{method}"), "{}");
            assert!(!ok && text.contains("PermissionDenied"), "worker token, {method}: {text}");
            assert!(text.contains("needs a token with the role read"), "{text}");
        }
        for method in ["CreateJob", "DeleteJob", "PauseJob", "ResumeJob", "RunJobNow", "UpdateJob"] {
            let (ok, text) = call_as(&addr, "rd-1", &format!("ingest.v1.JobService/{method}"), "{}");
            assert!(!ok && text.contains("PermissionDenied"), "read token, {method}: {text}");
            assert!(text.contains(&format!("{method} needs a token with the role admin")), "{text}");
        }
        let (ok, text) = call_as(&addr, "wk-1", "ingest.v1.WorkerService/ReportProgress", report);
        assert!(ok, "worker token reports: {text}");
        let (ok, text) = call_as(&addr, "rd-1", "ingest.v1.WorkerService/ReportProgress", report);
        assert!(!ok && text.contains("PermissionDenied"), "read token reports: {text}");
        let (ok, text) = call_as(&addr, "adm-1", "ingest.v1.WorkerService/ReportProgress", report);
        assert!(ok, "admin token reports: {text}");

        // Rotation: the new read token is added, then the old one removed.
        std::fs::write(&token_file, "admin adm-1\nread rd-1\nread rd-2\nworker wk-1\n").expect("rotate");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !call_as(&addr, "rd-2", "ingest.v1.JobService/ListJobs", "{}").0 {
            assert!(Instant::now() < deadline, "the new token is still refused 10 s after the file changed");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(call_as(&addr, "rd-1", "ingest.v1.JobService/ListJobs", "{}").0, "both while rotating");
        std::fs::write(&token_file, "admin adm-1\nread rd-2\nworker wk-1\n").expect("rotate");
        while call_as(&addr, "rd-1", "ingest.v1.JobService/ListJobs", "{}").0 {
            assert!(Instant::now() < deadline, "the old token still works 10 s after its removal");
            std::thread::sleep(Duration::from_millis(200));
        }
        let (_, text) = call_as(&addr, "rd-1", "ingest.v1.JobService/ListJobs", "{}");
        assert!(text.contains("Unauthenticated"), "{text}");
        // A broken file keeps the tokens in force.
        std::fs::write(&token_file, "superuser x\n").expect("break");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(call_as(&addr, "rd-2", "ingest.v1.JobService/ListJobs", "{}").0, "a bad file changes nothing");
        let log = std::fs::read_to_string(&control.log).expect("log");
        assert!(log.contains("tokens reloaded") && log.contains("read=2"), "{log}");
        assert!(log.contains("cannot reload the tokens") && log.contains("unknown role 'superuser'"), "{log}");
        assert!(!log.contains("rd-2") && !log.contains("adm-1"), "tokens never logged: {log}");
    });
    let (_, status) = control.terminate();
    assert!(status.success(), "{status}");
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names for the CA and the leaves (OpenSSL takes a leaf whose
    // issuer name is its own for a self-signed one).
    ca_params.distinguished_name.push(DnType::CommonName, "ingest test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    };
    let (server_cert, server_key) =
        leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    let (client_cert, client_key) = leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth, "client");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.as_ref().pem()).expect("write ca");
    Pki { ca: ca_path, server_cert, server_key, client_cert, client_key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let s = |p: &PathBuf| p.to_str().expect("utf8").to_string();
    let (ca, cert, key, ccert, ckey) =
        (s(&pki.ca), s(&pki.server_cert), s(&pki.server_key), s(&pki.client_cert), s(&pki.client_key));

    // TLS through environment variables.
    let mut tls = Control::start(&etcd, dir.path(), &[], &[("INGEST_TLS_CERT", &cert), ("INGEST_TLS_KEY", &key)]);
    tokio::task::block_in_place(|| {
        tls.wait_serving(&["-cacert", &ca]);
        let plaintext = grpcurl(&["-plaintext"], &tls.addr, &["list"], None);
        assert!(!plaintext.status.success(), "plaintext must be refused on a TLS port");
        let listing = grpcurl(&["-cacert", &ca], &tls.addr, &["list"], None);
        assert!(stdout(&listing).contains("ingest.v1.JobService"), "{}", stderr(&listing));
        // The HTTP face (web UI, JSON API, /metrics) serves HTTPS with the same certificate.
        let curl = |args: &[&str]| Command::new("curl").args(["-sS", "-m", "5"]).args(args).output().expect("run curl");
        let https = curl(&["--cacert", &ca, &format!("https://{}/healthz", tls.http)]);
        assert!(stdout(&https).starts_with("ok revision="), "{}{}", stdout(&https), stderr(&https));
        let api = curl(&[
            "--cacert",
            &ca,
            "-X",
            "POST",
            &format!("https://{}/api/ingest.v1.JobService/ListJobTypes", tls.http),
        ]);
        assert!(stdout(&api).contains("jobTypes"), "{}{}", stdout(&api), stderr(&api));
        let plain = curl(&[&format!("http://{}/healthz", tls.http)]);
        assert!(!stdout(&plain).contains("ok revision"), "plaintext must not be answered on the HTTPS port");
    });
    drop(tls);

    // mTLS through flags: a client without a certificate is turned away.
    let args = ["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca];
    let mut mtls = Control::start(&etcd, dir.path(), &args, &[]);
    tokio::task::block_in_place(|| {
        let with_cert = ["-cacert", ca.as_str(), "-cert", ccert.as_str(), "-key", ckey.as_str()];
        mtls.wait_serving(&with_cert);
        let anonymous = grpcurl(&["-cacert", &ca], &mtls.addr, &["list"], None);
        assert!(!anonymous.status.success(), "a client without a certificate must be refused");
        let listing = grpcurl(&with_cert, &mtls.addr, &["list"], None);
        assert!(stdout(&listing).contains("ingest.v1.JobService"), "{}", stderr(&listing));
        // The HTTP face requires the client certificate too: no way around mTLS.
        let curl = |args: &[&str]| Command::new("curl").args(["-sS", "-m", "5"]).args(args).output().expect("run curl");
        let url = format!("https://{}/api/ingest.v1.JobService/ListJobTypes", mtls.http);
        let anonymous = curl(&["--cacert", &ca, "-X", "POST", &url]);
        assert!(!anonymous.status.success() && !stdout(&anonymous).contains("jobTypes"), "{}", stdout(&anonymous));
        let with_cert = curl(&["--cacert", &ca, "--cert", &ccert, "--key", &ckey, "-X", "POST", &url]);
        assert!(stdout(&with_cert).contains("jobTypes"), "{}{}", stdout(&with_cert), stderr(&with_cert));
    });
}

#[test]
fn bad_flags_exit_non_zero_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingest-control"))
        .args(["--grpc-addr", "not-an-address"])
        .output()
        .expect("run ingest-control");
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("--grpc-addr") && text.contains("not-an-address"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_ingest-control"))
        .args(["--etcd", &format!("http://127.0.0.1:{}", free_port()), "--log-format", "json"])
        .output()
        .expect("run ingest-control");
    assert!(!out.status.success(), "no etcd: must fail, not hang");
    assert!(stderr(&out).contains("cannot reach etcd"), "{}", stderr(&out));
}

/// A command of a README code block.
#[derive(Debug)]
struct Recipe {
    command: String,
    /// Runs until stopped ("Ctrl-C to stop" in the comment above it).
    streams: bool,
    /// It fails, with this in its output (a "# Code: ..." line under it).
    fails_with: Option<String>,
}

/// The commands in the ```sh blocks of the README section `heading`.
fn recipes(readme: &str, heading: &str) -> Vec<Recipe> {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut recipes: Vec<Recipe> = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = &block[..block.find("```").expect("closed code block")];
        let mut streams = false;
        let mut continued = false;
        for line in block.lines() {
            if continued {
                let last = recipes.last_mut().expect("a command");
                last.command.push('\n');
                last.command.push_str(line);
            } else if let Some(comment) = line.strip_prefix('#') {
                if let Some(code) = comment.trim().strip_prefix("Code:") {
                    recipes.last_mut().expect("a command before").fails_with = Some(format!("Code:{code}"));
                }
                streams = comment.contains("Ctrl-C to stop");
            } else if !line.trim().is_empty() {
                recipes.push(Recipe { command: line.to_string(), streams, fails_with: None });
                streams = false;
            }
            // Continued after a backslash or inside a quoted JSON argument.
            let open_quote = recipes.last().is_some_and(|r| r.command.matches('\'').count() % 2 == 1);
            continued = line.ends_with('\\') || open_quote;
        }
    }
    recipes
}

fn run_recipe(recipe: &Recipe, grpc: &str, http: &str) {
    let command = recipe.command.replace("127.0.0.1:50051", grpc).replace("127.0.0.1:8080", http);
    let mut child = Command::new("bash")
        .args(["-c", &command])
        .env("PATH", format!("{}:{}", grpcurl_dir(), std::env::var("PATH").unwrap_or_default()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    if recipe.streams {
        std::thread::sleep(Duration::from_secs(3));
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("recipe output");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    match &recipe.fails_with {
        Some(expected) => {
            assert!(!out.status.success(), "expected to fail: {command}\n{text}");
            assert!(text.contains(expected.as_str()), "{command}: no {expected:?} in\n{text}");
        }
        None if recipe.streams => assert!(stdout(&out).contains("synced"), "{command}: no snapshot in\n{text}"),
        None => assert!(out.status.success() && !out.stdout.is_empty(), "{command} failed:\n{text}"),
    }
}

/// Where the grpcurl the tests use lives (`grpcurl` on PATH otherwise).
fn grpcurl_dir() -> String {
    Path::new(&grpcurl_bin()).parent().map(|p| p.display().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_recipes_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let grpc_recipes = recipes(&readme, "## Try it with grpcurl");
    let http_recipes = recipes(&readme, "## The HTTP/JSON API");
    let methods = [
        "list",
        "describe",
        "CreateJob",
        "ListJobs",
        "WatchJobs",
        "PauseJob",
        "DeleteJob",
        "PauseJobs",
        "Health/Check",
    ];
    for method in methods {
        assert!(grpc_recipes.iter().any(|r| r.command.contains(method)), "no grpcurl recipe for {method}");
    }
    assert!(grpc_recipes.iter().any(|r| r.fails_with.is_some()) && grpc_recipes.iter().any(|r| r.streams));
    assert!(http_recipes.len() >= 4, "{http_recipes:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let mut control = Control::start(&etcd, dir.path(), &[], &[]);
    // A worker that runs jobs (the dry-run recipe needs one), its sinks files.
    let worker = start_running_worker(&etcd, &control.addr, dir.path()).await;
    tokio::task::block_in_place(|| {
        control.wait_serving(&["-plaintext"]);
        for recipe in grpc_recipes.iter().chain(&http_recipes) {
            run_recipe(recipe, &control.addr, &control.http);
        }
    });
    worker.cancel();
}
