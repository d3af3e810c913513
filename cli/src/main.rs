//! `ingest`: the all-in-one command. `ingest standalone` runs control and a
//! worker in one process on the embedded store: nothing else to install.

mod health;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ingest_control::progress::{ProgressRecorder, RecorderConfig};
use ingest_control::{ControlService, Listeners, ServeArgs, serve_with_recorder};
use ingest_runtime::{KeyArgs, LogArgs, shutdown_on_signal};
use ingest_sinks::SinkArgs;
use ingest_store::{EmbeddedStore, Store};
use ingest_worker::fetch::{FetchArgs, OwnEndpoint};
use ingest_worker::{JobServices, ProgressReceiver, ReportTo, WorkerArgs, run_worker};
use tokio_util::sync::CancellationToken;

/// jemalloc, built to hand freed pages back within a second (.cargo/config.toml):
/// glibc's per-thread arenas kept about twice a worker's live heap resident
/// after its cold start (BENCHMARKS.md, "Issue 18, the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "ingest", version, about = "Long-lived ingestion jobs at scale")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control server on etcd (as `ingest-control`).
    Control(ingest_control::ControlCommand),
    /// Run a worker on etcd (as `ingest-worker`).
    Worker(ingest_worker::command::WorkerCommand),
    /// Run control and a worker in one process, on an embedded store kept
    /// under --data-dir. No etcd needed.
    Standalone(StandaloneArgs),
    /// Check a control server (--grpc) or a worker (--http) is healthy:
    /// exit 0 if so, 1 otherwise. For container health checks.
    Health(health::HealthArgs),
}

#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    /// Where the embedded store keeps its data.
    #[arg(long, env = "INGEST_DATA_DIR", default_value = "ingest-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    sinks: SinkArgs,
    #[command(flatten)]
    fetch: FetchArgs,
    #[command(flatten)]
    secrets: ingest_runtime::SecretsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init()?;
    ingest_runtime::metrics::init();
    match cli.command {
        Command::Control(command) => command.run().await,
        Command::Worker(command) => command.run().await,
        Command::Standalone(args) => standalone(args).await,
        Command::Health(args) => args.run().await,
    }
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    ingest_store::create_private_dir(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&args.data_dir)
            .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?,
    );
    let listeners = Listeners::bind(&args.serve).await?;
    // Jobs never fetch this process's own API.
    let mut own = OwnEndpoint::from_addr(listeners.grpc.local_addr()?, "control gRPC");
    own.extend(OwnEndpoint::from_addr(listeners.http.local_addr()?, "control HTTP"));
    // Without Elasticsearch or S3 flags, documents and objects go to files
    // under <data-dir>/out.
    let mut services = JobServices::from_args(&args.sinks, &args.fetch, &args.data_dir.join("out"), &own)?;
    let secrets_keys = args.secrets.keys()?;
    services.secrets_keys = secrets_keys.clone();
    let keys = args.keys.keys();
    let mut worker_config = args.worker.config();
    if args.worker.name.is_none() {
        worker_config.name = "standalone".to_string();
    }
    tracing::info!(
        data_dir = %args.data_dir.display(),
        grpc_addr = %listeners.grpc.local_addr()?,
        web_ui = %format!("http://{}/", listeners.http.local_addr()?),
        "standalone starting"
    );
    // Control stops after the worker has drained, so the worker's last
    // counters still reach it; they go to its recorder directly, whatever
    // token or TLS the gRPC port requires.
    let stop_control = CancellationToken::new();
    let service = ControlService::new(store.clone(), keys.clone()).with_secrets_keys(secrets_keys);
    let recorder = Arc::new(ProgressRecorder::new(store.clone(), keys.clone(), RecorderConfig::default()));
    let report_to = ReportTo::InProcess(Arc::new(LocalControl(recorder.clone())));
    let control = serve_with_recorder(service, &args.serve, listeners, recorder, stop_control.clone());
    let worker = async {
        let result = run_worker(
            store,
            keys,
            worker_config,
            args.worker.scheduler_config(),
            report_to,
            services,
            None, // control's HTTP server serves this process's /metrics
            shutdown.clone(),
        )
        .await;
        stop_control.cancel();
        result
    };
    let (worker, control) = tokio::join!(worker, control);
    worker.context("worker failed")?;
    control
}

/// Standalone's worker reports to its own control without a connection.
struct LocalControl(Arc<ProgressRecorder>);

impl ProgressReceiver for LocalControl {
    fn receive(&self, report: ingest_proto::v1::ReportProgressRequest) -> Result<(), String> {
        self.0.receive(report).map_err(|e| e.to_string())
    }
}
