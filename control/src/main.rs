//! `ingest-control`: the control server on etcd.

use clap::Parser;
use ingest_control::ControlCommand;
use ingest_runtime::LogArgs;

/// Stateless control server: gRPC JobService (with reflection and health) on
/// etcd. Run as many replicas as you like.
#[derive(Debug, Parser)]
#[command(name = "ingest-control", version)]
struct Args {
    #[command(flatten)]
    command: ControlCommand,
    #[command(flatten)]
    log: LogArgs,
}

/// jemalloc, configured in .cargo/config.toml (see the `ingest` binary).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    args.command.run().await
}
