//! `ingest-bench`: benchmark commands. Each one measures a baseline in the
//! same run and prints a ratio against it, because absolute times drift on a
//! shared machine (DESIGN.md §9).

mod cluster;
mod control;
mod counting;
mod feeds;
mod parse;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ingest-bench", about = "Benchmarks of ingest, each against a baseline measured in the same run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The control plane over a real etcd: CreateJob throughput against raw
    /// etcd transactions, ListJobs latency against raw range reads, and one
    /// full WatchJobs snapshot.
    Control(control::ControlArgs),
    /// Real `ingest worker` processes over a real etcd: cold-start claim
    /// time against the bench claiming alone, steady-state etcd writes with
    /// idle jobs, worker RSS against an idle worker, and SIGTERM exit times.
    /// Needs `cargo build --release --bin ingest` first.
    Cluster(cluster::ClusterArgs),
    /// Local fixture feeds into a real OpenSearch through rss jobs, against
    /// OpenSearch's own `_bulk` ceiling on the same documents and a plain
    /// Python pipeline (feedparser + opensearch-py) on the same feeds.
    Feeds(feeds::FeedsArgs),
    /// Feed parsing on one core over one corpus, against Go's gofeed and
    /// Python's feedparser on the same files.
    Parse(parse::ParseArgs),
}

/// The allocator of the shipped binaries (see the `ingest` binary): the control
/// benchmarks run control in this process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The in-process control's and store's logs, when asked for
    // (`INGEST_LOG=warn`, `INGEST_LOG=ingest_control=debug`): off by default,
    // the figures are the output.
    if let Ok(filter) = std::env::var("INGEST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter)?)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    match cli.command {
        Command::Control(args) => control::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Feeds(args) => feeds::run(args).await,
        Command::Parse(args) => parse::run(args).await,
    }
}
