//! Runs control: the gRPC server (JobService, WorkerService, reflection,
//! health), the HTTP server and the progress recorder's flushes, until the
//! shutdown token is cancelled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ingest_proto::v1::FILE_DESCRIPTOR_SET;
use ingest_proto::v1::job_service_server::JobServiceServer;
use ingest_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use ingest_runtime::Secret;
use ingest_runtime::tokens::TokenSource;

use crate::alerts::{self, Notifier, NotifyConfig};
use crate::auth::{Auth, AuthLayer};
use crate::grpc::{GrpcJobService, GrpcWorkerService};
use crate::http;
use crate::progress::{ProgressRecorder, RecorderConfig};
use crate::service::ControlService;

/// Largest gRPC request accepted; jobs themselves are far smaller (their
/// parameters are capped at 64 KiB and refused field by field beyond that).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// How long in-flight calls get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long the last flush of worker progress may take on shutdown (the
/// store may be the reason we are stopping).
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Flags of the control server; every flag also reads an `INGEST_*` variable.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the gRPC server.
    #[arg(long, env = "INGEST_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP server: the web UI, the HTTP/JSON API and /healthz.
    #[arg(long, env = "INGEST_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Require `authorization: Bearer <token>` on every JobService and
    /// WorkerService call (health checks and reflection stay open); this
    /// token may do everything. Prefer INGEST_TOKEN or --token-file.
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// Read the tokens from this file (e.g. a Docker secret), re-read when it
    /// changes: one token per line, a bare token or `<role> <token>` with the
    /// role read (Get/List/Watch calls, the UI read-only), worker
    /// (progress reports only) or admin (everything). List several to
    /// rotate without downtime.
    #[arg(long, env = "INGEST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC over TLS.
    #[arg(long, env = "INGEST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "INGEST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mTLS), on
    /// the gRPC and the HTTP port.
    #[arg(long, env = "INGEST_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Host names the HTTP API answers to besides the address it listens on
    /// (and localhost when that is a loopback address), comma-separated,
    /// e.g. ingest.example.org. A request naming another host is refused (a
    /// DNS-rebinding page cannot reach the API). Not checked when listening
    /// on all addresses (0.0.0.0) and none is given.
    #[arg(long, env = "INGEST_HTTP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub http_allowed_hosts: Vec<String>,
    /// Post a webhook (JSON) to this URL when a job becomes failing or
    /// unschedulable and when it recovers: once per change across all
    /// control servers, retried with backoff.
    #[arg(long, env = "INGEST_NOTIFY_URL")]
    pub notify_url: Option<url::Url>,
    /// Sign each webhook with the key in this file: the header
    /// `x-ingest-signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[arg(long, env = "INGEST_NOTIFY_SECRET_FILE", requires = "notify_url")]
    pub notify_secret_file: Option<PathBuf>,
}

impl ServeArgs {
    /// gRPC and HTTP on free ports of 127.0.0.1, no auth, no TLS: for tests,
    /// benchmarks and embedding.
    pub fn loopback() -> Self {
        Self {
            grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            http_allowed_hosts: Vec::new(),
            notify_url: None,
            notify_secret_file: None,
        }
    }

    fn notify(&self) -> anyhow::Result<Option<NotifyConfig>> {
        let Some(url) = &self.notify_url else { return Ok(None) };
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--notify-url must be an http or https URL, got {url}");
        }
        let secret = match &self.notify_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --notify-secret-file {}", path.display()))?;
                let key = text.trim();
                if key.is_empty() {
                    anyhow::bail!("--notify-secret-file {} is empty", path.display());
                }
                Some(Secret::new(key.to_string()))
            }
            None => None,
        };
        Ok(Some(NotifyConfig::new(url.clone(), secret)))
    }

    fn auth(&self) -> anyhow::Result<Auth> {
        Auth::load(TokenSource::new(self.token.as_ref(), self.token_file.as_deref()))
    }

    fn tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }
}

/// The bound listeners of a control server, so callers (tests, standalone)
/// can learn the real ports when they asked for port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    pub async fn bind(args: &ServeArgs) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(args.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on --grpc-addr {}", args.grpc_addr))?;
        let http = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
        Ok(Self { grpc, http })
    }
}

/// Reflection knows the job and worker services (one descriptor set for
/// both files), health checks and the error details
/// (google.rpc.BadRequest), so grpcurl needs no .proto file at all.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Serves until `shutdown` is cancelled, then drains in-flight calls.
pub async fn serve(
    service: ControlService,
    args: &ServeArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let recorder =
        Arc::new(ProgressRecorder::new(service.store().clone(), service.keys().clone(), RecorderConfig::default()));
    serve_with_recorder(service, args, listeners, recorder, shutdown).await
}

/// [`serve`] with the recorder of workers' progress given by the caller,
/// so a worker in the same process (standalone) can report to it directly.
pub async fn serve_with_recorder(
    service: ControlService,
    args: &ServeArgs,
    listeners: Listeners,
    recorder: Arc<ProgressRecorder>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = args.auth()?;
    let tls = args.tls()?;
    let notify = args.notify()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_addr = listeners.http.local_addr()?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<JobServiceServer<GrpcJobService>>().await;
    health_reporter.set_serving::<WorkerServiceServer<GrpcWorkerService>>().await;
    let reflection_v1 = reflection().build_v1().context("building gRPC reflection")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("building gRPC reflection")?;
    let jobs = JobServiceServer::new(GrpcJobService::new(service.clone(), shutdown.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let workers = WorkerServiceServer::new(GrpcWorkerService::new(recorder.clone(), shutdown.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // Stopped only after the gRPC server has drained, so that its last flush
    // holds every report received.
    let stop_flushing = CancellationToken::new();
    let flusher = tokio::spawn(recorder.run(stop_flushing.clone()));

    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("bad TLS configuration")?;
    }
    let router = builder
        .layer(AuthLayer(auth.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jobs)
        .add_service(workers);
    tokio::spawn(auth.clone().reload_until(shutdown.clone()));
    let notifier = notify.map(|config| Notifier::start(&service, config, shutdown.clone()));
    tokio::spawn(alerts::run(service.clone(), notifier, shutdown.clone()));

    tracing::info!(
        %grpc_addr,
        %http_addr,
        tokens = %auth.summary(),
        tls = args.tls_cert.is_some(),
        mtls = args.tls_client_ca.is_some(),
        "control serving"
    );
    let grpc_shutdown = shutdown.clone();
    // Small responses must not wait for Nagle's algorithm and the peer's
    // delayed ACK (40 ms per unary call, measured by ingest-bench).
    let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
    let grpc = router.serve_with_incoming_shutdown(incoming, async move {
        grpc_shutdown.cancelled().await;
    });
    let hosts = http::AllowedHosts::new(listeners.http.local_addr()?, &args.http_allowed_hosts);
    let http_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(http::tls_acceptor(cert, key, args.tls_client_ca.as_deref()).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let http = http::serve(service, auth.clone(), hosts, http_tls, listeners.http, shutdown.clone());
    let drained = async { tokio::join!(grpc, http) };
    // Graceful, but bounded: clients that keep connections open do not hold
    // the process past the grace period.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        (grpc, http) = drained => grpc.context("gRPC server failed").and(http.context("HTTP server failed")),
        () = deadline => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
            Ok(())
        }
    };
    stop_flushing.cancel();
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, flusher).await.is_err() {
        tracing::warn!(timeout = ?FINAL_FLUSH_TIMEOUT, "last progress flush unfinished; its reports are lost");
    }
    served?;
    tracing::info!("control stopped");
    Ok(())
}
