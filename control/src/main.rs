//! `ingest-control`: the control server on etcd.

use clap::Parser;
use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_runtime::{EtcdArgs, LogArgs, shutdown_on_signal};

/// Stateless control server: gRPC JobService (with reflection and health) on
/// etcd. Run as many replicas as you like.
#[derive(Debug, Parser)]
#[command(name = "ingest-control", version)]
struct Args {
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let shutdown = shutdown_on_signal();
    let store = args.etcd.connect().await?;
    let listeners = Listeners::bind(&args.serve).await?;
    let service = ControlService::new(store, args.etcd.keys.keys());
    serve(service, &args.serve, listeners, shutdown).await
}
