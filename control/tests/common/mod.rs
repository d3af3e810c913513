//! A control server on a real store for the integration tests: either the
//! embedded store or a real etcd process, served over real gRPC on 127.0.0.1.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_model::{JobTypeSpec, OwnerRecord, ParamKind, ParamSpec};
use ingest_proto::v1 as pb;
use ingest_proto::v1::job_service_client::JobServiceClient;
use ingest_proto::v1::worker_service_client::WorkerServiceClient;
use ingest_store::keys::Keys;
use ingest_store::{EmbeddedStore, EtcdOptions, EtcdStore, Store};
use ingest_testkit::EtcdServer;
use ingest_worker::{Membership, WorkerConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Generates `mod embedded` and `mod etcd`: each test body runs once on the
/// embedded store and once on a real etcd.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::embedded().await).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::etcd().await).await;
                }
            )*
        }
    };
}

pub type Client = JobServiceClient<Channel>;
pub type WorkerClient = WorkerServiceClient<Channel>;

/// A test job type with one parameter of every kind.
pub fn probe_type() -> JobTypeSpec {
    JobTypeSpec {
        name: "probe".into(),
        description: "test type".into(),
        params: vec![
            ParamSpec::new("url", ParamKind::Url, "what to fetch").required(),
            ParamSpec::new("limit", ParamKind::Integer, "items").bounds(Some(1.0), Some(100.0)).default_value(10),
            ParamSpec::new("ratio", ParamKind::Number, "r").bounds(Some(0.0), Some(1.0)),
            ParamSpec::new("verbose", ParamKind::Boolean, "b"),
            ParamSpec::new("mode", ParamKind::Enum, "m").allowed(&["new", "top"]),
            ParamSpec::new("timeout", ParamKind::Duration, "d").bounds(Some(1.0), Some(60.0)),
            ParamSpec::new("tags", ParamKind::List, "l").max_length(3),
            ParamSpec::new("label", ParamKind::String, "s").max_length(20),
            ParamSpec::new("api_key", ParamKind::Secret, "k"),
        ],
        default_interval: Duration::from_secs(300),
        min_interval: Duration::from_secs(10),
        rules: Vec::new(),
    }
}

/// A second type, so filters have something to filter.
pub fn other_type() -> JobTypeSpec {
    JobTypeSpec {
        name: "other".into(),
        description: String::new(),
        params: vec![],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: Vec::new(),
    }
}

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub grpc_addr: SocketAddr,
    /// The HTTP server (web UI, JSON API).
    pub http_addr: SocketAddr,
    pub client: Client,
    shutdown: CancellationToken,
    workers: Vec<CancellationToken>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
    pub etcd: Option<EtcdServer>,
}

impl Harness {
    pub async fn embedded() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
        Self::start(store, Some(dir), None, ServeArgs::loopback()).await
    }

    pub async fn etcd() -> Harness {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("start etcd");
        let store: Arc<dyn Store> =
            Arc::new(EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await.expect("connect to etcd"));
        Self::start(store, None, Some(etcd), ServeArgs::loopback()).await
    }

    pub async fn with_token(token: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
        let args = ServeArgs { token: Some(ingest_runtime::Secret::new(token.to_string())), ..ServeArgs::loopback() };
        Self::start(store, Some(dir), None, args).await
    }

    /// Control reading its tokens from `file` (kept with the harness).
    pub async fn with_token_file(contents: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, contents).expect("write tokens");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
        let args = ServeArgs { token_file: Some(file), ..ServeArgs::loopback() };
        Self::start(store, Some(dir), None, args).await
    }

    async fn start(
        store: Arc<dyn Store>,
        dir: Option<tempfile::TempDir>,
        etcd: Option<EtcdServer>,
        args: ServeArgs,
    ) -> Harness {
        let keys = Keys::new("/test/");
        let listeners = Listeners::bind(&args).await.expect("bind");
        let grpc_addr = listeners.grpc.local_addr().expect("local addr");
        let http_addr = listeners.http.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let service = ControlService::new(store.clone(), keys.clone());
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(service, &args, listeners, shutdown).await }
        });
        // Types are published by workers; publish the test types as one would.
        Membership::new(store.clone(), keys.clone(), worker_config("publisher"), vec![probe_type(), other_type()])
            .publish_types()
            .await
            .expect("publish types");
        let client = JobServiceClient::connect(format!("http://{grpc_addr}")).await.expect("connect");
        Harness { store, keys, grpc_addr, http_addr, client, shutdown, workers: Vec::new(), server, _dir: dir, etcd }
    }

    /// Starts a worker (membership only) that supports `types`, publishing
    /// them first as a worker does; stops it when the returned token is
    /// cancelled.
    pub async fn start_worker(&mut self, name: &str, types: Vec<JobTypeSpec>) -> CancellationToken {
        let token = CancellationToken::new();
        let membership = Membership::new(self.store.clone(), self.keys.clone(), worker_config(name), types);
        membership.publish_types().await.expect("publish types");
        tokio::spawn({
            let token = token.clone();
            async move { membership.run(token, tokio::sync::watch::channel(None).0).await }
        });
        self.workers.push(token.clone());
        token
    }

    /// A client of the WorkerService, as workers use it.
    pub async fn worker_client(&self) -> WorkerClient {
        WorkerServiceClient::connect(format!("http://{}", self.grpc_addr)).await.expect("connect")
    }

    /// Claims job `id` for `worker` as a worker does (without a lease: tests
    /// release claims by hand); returns the claim's epoch.
    pub async fn claim(&self, id: &str, worker: &str) -> i64 {
        let record = serde_json::to_vec(&OwnerRecord { worker: worker.to_string() }).expect("encode");
        let key = self.keys.owner(id);
        self.store.delete(&key).await.expect("release any earlier claim");
        self.store.put(&key, record, 0).await.expect("claim")
    }

    pub async fn revision(&self) -> i64 {
        self.store.current_revision().await.expect("current revision")
    }

    /// Every key under the test root with its value, for "nothing written"
    /// and "secret stored apart" checks.
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let range = ingest_store::RangeRequest::new(ingest_store::KeyRange::prefix(self.keys.root()));
        let response = self.store.range(range).await.expect("range");
        response.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
    }

    pub async fn stop(self) {
        for worker in &self.workers {
            worker.cancel();
        }
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "control must stop cleanly: {result:?}");
    }
}

pub fn worker_config(name: &str) -> WorkerConfig {
    WorkerConfig { name: name.to_string(), weight: 1.0, lease_ttl: Duration::from_secs(3), job_types: Vec::new() }
}

/// A JSON object as a protobuf Struct.
pub fn params(value: Value) -> Option<pbjson_types::Struct> {
    let map = value.as_object().cloned().unwrap_or_default();
    Some(ingest_control::convert::json_to_struct(&map))
}

/// A valid probe job.
pub fn probe_job(name: &str) -> pb::Job {
    pb::Job {
        name: name.to_string(),
        r#type: "probe".to_string(),
        params: params(json!({"url": "https://example.org/feed", "limit": 5})),
        ..Default::default()
    }
}

pub async fn create(client: &mut Client, job: pb::Job) -> pb::Job {
    let request = pb::CreateJobRequest { job: Some(job), ..Default::default() };
    client.create_job(request).await.expect("create job").into_inner().job.expect("job in response")
}

/// The field names of an INVALID_ARGUMENT status' BadRequest details,
/// sorted.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    let mut fields: Vec<String> = bad.field_violations.iter().map(|v| v.field.clone()).collect();
    fields.sort();
    fields
}

/// Waits until `check` holds, polling; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
