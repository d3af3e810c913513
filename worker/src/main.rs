//! `ingest-worker`: a peer worker on etcd.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ingest_runtime::{EtcdArgs, LogArgs, Secret, shutdown_on_signal};
use ingest_worker::{ControlEndpoint, SchedulerConfig, WorkerArgs, run_worker};

/// Peer worker: registers in etcd under a lease, claims the jobs it ranks
/// first for, runs them, and reports their counters to control. Start as many
/// as you like, each with a unique --name.
#[derive(Debug, Parser)]
#[command(name = "ingest-worker", version)]
struct Args {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// URL of a control server (any replica), for reporting counters.
    #[arg(long, env = "INGEST_CONTROL", default_value = "http://127.0.0.1:50051")]
    control: String,
    /// Bearer token control requires, if any. Prefer INGEST_TOKEN or
    /// --token-file to the flag.
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<Secret>,
    /// Read the bearer token from this file (e.g. a Docker secret).
    #[arg(long, env = "INGEST_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => args.token.as_ref().map(|t| t.expose().to_string()),
    };
    let shutdown = shutdown_on_signal();
    let store = args.etcd.connect().await?;
    let config = args.worker.config();
    tracing::info!(worker = %config.name, control = %args.control, "worker starting");
    let control = ControlEndpoint { url: args.control.clone(), token };
    run_worker(store, args.etcd.keys.keys(), config, SchedulerConfig::default(), control, shutdown).await
}
