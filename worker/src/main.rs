//! `ingest-worker`: a peer worker on etcd.

use clap::Parser;
use ingest_runtime::LogArgs;
use ingest_worker::command::WorkerCommand;

/// Peer worker: registers in etcd under a lease, claims the jobs it ranks
/// first for, runs them, and reports their counters to control. Start as many
/// as you like, each with a unique --name.
#[derive(Debug, Parser)]
#[command(name = "ingest-worker", version)]
struct Args {
    #[command(flatten)]
    command: WorkerCommand,
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
