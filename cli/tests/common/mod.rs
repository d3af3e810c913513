//! A cluster for tests: a real etcd, control in-process on real gRPC, and
//! worker processes (`ingest worker`) logging JSON to files, so their
//! ownership events can be checked with `ingest_testkit::ownership`.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_control::service::NewJob;
use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_model::OwnerRecord;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EtcdOptions, EtcdStore, Store, scan_prefix};
use ingest_testkit::ownership::{History, mono_now_ns, parse_files};
use ingest_testkit::{EtcdCluster, EtcdServer};
use tokio_util::sync::CancellationToken;

pub const ROOT: &str = "/cluster-test/";

/// The etcd a test cluster runs on: one member, or several.
pub enum Etcd {
    One(EtcdServer),
    Members(EtcdCluster),
}

impl Etcd {
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Etcd::One(server) => vec![server.endpoint()],
            Etcd::Members(cluster) => cluster.endpoints(),
        }
    }

    /// The single member (panics on a multi-member etcd).
    pub fn one(&mut self) -> &mut EtcdServer {
        match self {
            Etcd::One(server) => server,
            Etcd::Members(_) => panic!("this cluster runs on several etcd members"),
        }
    }

    /// The members (panics on a single-member etcd).
    pub fn members(&mut self) -> &mut EtcdCluster {
        match self {
            Etcd::Members(cluster) => cluster,
            Etcd::One(_) => panic!("this cluster runs on one etcd member"),
        }
    }
}

pub struct Cluster {
    pub etcd: Etcd,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub control: ControlService,
    pub control_url: String,
    /// Base URL of control's HTTP server (web UI, JSON API).
    pub control_http: String,
    pub dir: tempfile::TempDir,
    pub workers: HashMap<String, Child>,
    /// Workers killed with -9, with the monotonic time of their death.
    pub deaths: Vec<(String, u64)>,
    pub lease_ttl: Duration,
    /// Extra environment of worker processes (e.g. sink settings).
    pub worker_env: Vec<(String, String)>,
    shutdown: CancellationToken,
}

impl Cluster {
    pub async fn start(lease_ttl: Duration) -> Cluster {
        Self::start_with(lease_ttl, ServeArgs::loopback()).await
    }

    /// A cluster whose control server runs with these arguments (e.g. a token).
    pub async fn start_with(lease_ttl: Duration, args: ServeArgs) -> Cluster {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("start etcd");
        Self::start_on(Etcd::One(etcd), lease_ttl, args).await
    }

    /// A cluster on `members` etcd members; control and workers get every endpoint.
    pub async fn start_on_members(members: usize, lease_ttl: Duration) -> Cluster {
        let etcd = tokio::task::spawn_blocking(move || EtcdCluster::start(members)).await.expect("start etcd");
        Self::start_on(Etcd::Members(etcd), lease_ttl, ServeArgs::loopback()).await
    }

    async fn start_on(etcd: Etcd, lease_ttl: Duration, args: ServeArgs) -> Cluster {
        let store: Arc<dyn Store> =
            Arc::new(EtcdStore::connect(EtcdOptions::new(etcd.endpoints())).await.expect("connect to etcd"));
        let keys = Keys::new(ROOT);
        let listeners = Listeners::bind(&args).await.expect("bind");
        let control_url = format!("http://{}", listeners.grpc.local_addr().expect("addr"));
        let control_http = format!("http://{}", listeners.http.local_addr().expect("addr"));
        let control = ControlService::new(store.clone(), keys.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (control, shutdown) = (control.clone(), shutdown.clone());
            async move { serve(control, &args, listeners, shutdown).await }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        Cluster {
            etcd,
            store,
            keys,
            control,
            control_url,
            control_http,
            dir,
            workers: HashMap::new(),
            deaths: Vec::new(),
            lease_ttl,
            worker_env: Vec::new(),
            shutdown,
        }
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts `ingest worker --name <name>`, logging JSON to its log file.
    pub fn start_worker(&mut self, name: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name)).expect("log file");
        let ttl = format!("{}s", self.lease_ttl.as_secs());
        let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
            .args(["--log-format", "json", "worker", "--name", name, "--lease-ttl", &ttl])
            .args(["--etcd", &self.etcd.endpoints().join(","), "--key-root", ROOT, "--control", &self.control_url])
            .arg("--sink-dir")
            .arg(self.dir.path().join(format!("out-{name}")))
            .envs(self.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ingest worker");
        self.workers.insert(name.to_string(), child);
    }

    /// kill -9; records the death for the ownership checker.
    pub fn kill(&mut self, name: &str) -> u64 {
        let mut child = self.workers.remove(name).expect("running worker");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let at = mono_now_ns();
        self.deaths.push((name.to_string(), at));
        at
    }

    /// SIGTERM; returns the time sent, how long the process took to exit,
    /// and whether it exited successfully.
    pub fn terminate(&mut self, name: &str) -> (u64, Duration, bool) {
        let mut child = self.workers.remove(name).expect("running worker");
        let sent = mono_now_ns();
        let started = Instant::now();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (sent, started.elapsed(), status.success());
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return (sent, started.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates `n` demo jobs through the service layer, once a worker has
    /// published the type.
    /// Creates `n` light demo jobs (one small item per run): the cluster
    /// tests are about ownership, and their timing bars should not depend on
    /// how fast debug builds write documents.
    pub async fn create_jobs(&self, n: usize, interval: Duration) -> Vec<String> {
        let light = serde_json::json!({"items_per_run": 1, "item_bytes": 16});
        self.create_jobs_with(n, interval, light.as_object().cloned().unwrap_or_default()).await
    }

    /// Creates `n` demo jobs with these parameters.
    pub async fn create_jobs_with(
        &self,
        n: usize,
        interval: Duration,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.store.get(&self.keys.job_type("demo")).await.ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "no worker published the demo type\n{}", self.log_tails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let jobs = futures::future::join_all((0..n).map(|i| {
            let control = self.control.clone();
            let params = params.clone();
            async move {
                let new = NewJob {
                    id: Some(format!("job-{i:05}")),
                    name: format!("job {i}"),
                    job_type: "demo".into(),
                    params,
                    interval: Some(interval),
                    paused: false,
                    ..Default::default()
                };
                control.create_job(new, false).await.expect("create job").record.id
            }
        }));
        // Bounded concurrency would be nicer; join_all of 1000 small writes is fine here.
        jobs.await
    }

    /// Creates one job of any type, once a worker has published the type.
    pub async fn create_job(
        &self,
        id: &str,
        job_type: &str,
        interval: Duration,
        params: serde_json::Value,
    ) -> Result<String, ingest_control::error::ControlError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.store.get(&self.keys.job_type(job_type)).await.ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "no worker published {job_type}\n{}", self.log_tails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let new = NewJob {
            id: Some(id.to_string()),
            name: id.to_string(),
            job_type: job_type.into(),
            params: params.as_object().cloned().unwrap_or_default(),
            interval: Some(interval),
            paused: false,
            ..Default::default()
        };
        Ok(self.control.create_job(new, false).await?.record.id)
    }

    /// Waits until every one of `workers` is registered (so jobs created
    /// next are ranked among all of them from the start).
    pub async fn wait_registered(&self, workers: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let kvs = scan_prefix(self.store.as_ref(), &self.keys.prefix(KeyKind::Worker)).await.unwrap_or_default();
            let names: Vec<&str> = kvs.iter().filter_map(|kv| self.keys.parse(&kv.key).map(|(_, name)| name)).collect();
            if workers.iter().all(|w| names.contains(w)) {
                return;
            }
            assert!(Instant::now() < deadline, "not all of {workers:?} registered: {names:?}\n{}", self.log_tails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Current claims: job id -> worker.
    pub async fn owners(&self) -> HashMap<String, String> {
        let kvs = scan_prefix(self.store.as_ref(), &self.keys.prefix(KeyKind::Owner)).await.unwrap_or_default();
        kvs.iter()
            .filter_map(|kv| {
                let (_, id) = self.keys.parse(&kv.key)?;
                let owner: OwnerRecord = serde_json::from_slice(&kv.value).ok()?;
                Some((id.to_string(), owner.worker))
            })
            .collect()
    }

    /// Waits until every job in `jobs` is claimed by one of `workers`.
    pub async fn wait_all_owned(
        &self,
        jobs: &[String],
        workers: &[&str],
        timeout: Duration,
    ) -> HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let owners = self.owners().await;
            let done = jobs.iter().all(|j| owners.get(j).is_some_and(|w| workers.contains(&w.as_str())));
            if done {
                return owners;
            }
            if Instant::now() > deadline {
                let missing = jobs.iter().filter(|j| !owners.contains_key(*j)).count();
                panic!("not all jobs owned by {workers:?} within {timeout:?}: {missing} unowned\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the claims stop changing for `quiet`.
    pub async fn wait_stable(&self, quiet: Duration, timeout: Duration) -> HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        let mut last = self.owners().await;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.owners().await;
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return last;
            }
            assert!(Instant::now() < deadline, "claims did not settle within {timeout:?}");
        }
    }

    /// The last lines of every worker's log that are not ownership events.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<&String> = self.workers.keys().collect();
        names.sort();
        for name in names {
            let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains("ingest::ownership")).collect();
            out.push_str(&format!("--- {name}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        out
    }

    /// The ownership history of every worker so far.
    pub fn history(&self, names: &[&str]) -> History {
        let paths: Vec<PathBuf> = names.iter().map(|n| self.log_path(n)).collect();
        let deaths: Vec<(&str, u64)> = self.deaths.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        History::new(parse_files(paths.iter().map(PathBuf::as_path)), &deaths)
    }

    /// The history once every job in `jobs` has a run started after
    /// `after_ns` in the logs: the store shows a claim a moment before its
    /// worker logs the run (a history read as soon as the store showed every
    /// job owned once missed 50 runs that started later, all in time).
    pub async fn history_once_restarted(
        &self,
        names: &[&str],
        jobs: &[String],
        after_ns: u64,
        timeout: Duration,
    ) -> History {
        let deadline = Instant::now() + timeout;
        loop {
            let history = self.history(names);
            let waiting = jobs.iter().filter(|j| !history.runs(j).iter().any(|r| r.start_ns > after_ns)).count();
            if waiting == 0 || Instant::now() > deadline {
                return history;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stop(mut self) {
        for (_, mut child) in self.workers.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.shutdown.cancel();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An S3 client on the test server's bucket, for reading back.
pub fn s3_sink(s3: &ingest_testkit::S3Server, bucket: &str) -> ingest_sinks::s3::S3Sink {
    ingest_sinks::s3::S3Sink::new(&ingest_sinks::s3::S3Config {
        endpoint: Some(s3.endpoint()),
        region: s3.region().into(),
        bucket: bucket.into(),
        access_key: s3.access_key().into(),
        secret_key: ingest_runtime::Secret::new(s3.secret_key()),
        path_style: true,
        request_timeout: Duration::from_secs(10),
    })
}

pub async fn connect(etcd: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await.expect("connect to etcd")
}
