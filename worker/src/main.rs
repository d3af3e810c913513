//! `ingest-worker`: a peer worker on etcd.

use clap::Parser;
use ingest_runtime::{EtcdArgs, LogArgs, shutdown_on_signal};
use ingest_worker::{Membership, WorkerArgs, catalogue};

/// Peer worker: registers in etcd under a lease and publishes the job types it
/// runs. Start as many as you like, each with a unique --name.
#[derive(Debug, Parser)]
#[command(name = "ingest-worker", version)]
struct Args {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Address of a control server, for streaming counters (used once job
    /// execution lands; accepted now so deployments need no change later).
    #[arg(long, env = "INGEST_CONTROL", default_value = "http://127.0.0.1:50051")]
    control: String,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let shutdown = shutdown_on_signal();
    let store = args.etcd.connect().await?;
    let config = args.worker.config();
    tracing::info!(worker = %config.name, control = %args.control, "worker starting");
    Membership::new(store, args.etcd.keys.keys(), config, catalogue::job_types()).run(shutdown).await
}
