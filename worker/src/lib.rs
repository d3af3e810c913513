//! ingest worker: a peer that registers under a lease, publishes the job
//! types it runs (`catalogue`), and runs the jobs it ranks first for
//! (`scheduler`), reporting their counters to control (`progress`).
//!
//! Code map: `membership` (lease, registration, keepalive, deadline), `view`
//! (the cluster as seen through one watch), `assign` (weighted rendezvous
//! hashing), `claims` (claim, fenced checkpoint and release transactions),
//! `runner` (one owned job: a task while it runs, parked between runs),
//! `scheduler` (the control loop), `ownership` (ownership event log),
//! `jobs/` (one module per job type).

pub mod assign;
pub mod catalogue;
pub mod checkpoints;
pub mod claims;
pub mod command;
pub mod cpu;
pub mod decide;
pub mod fence;
pub mod fetch;
pub mod http;
pub mod jobs;
pub mod letters;
pub mod load;
pub mod membership;
pub mod ownership;
pub mod preview;
pub mod progress;
pub mod redact;
pub mod runner;
pub mod scheduler;
pub mod spec;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use ingest_sinks::Sinks;
use ingest_store::Store;
use ingest_store::keys::Keys;
use tokio_util::sync::CancellationToken;

pub use membership::{LeaseState, Membership, WorkerConfig};
pub use progress::{ControlEndpoint, ProgressReceiver, ReportTo};
pub use scheduler::SchedulerConfig;

/// Flags of a worker; every flag also reads an `INGEST_*` variable.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// Unique worker name (defaults to the host name).
    #[arg(long, env = "INGEST_WORKER_NAME")]
    pub name: Option<String>,
    /// Relative share of jobs this worker takes.
    #[arg(long, env = "INGEST_WORKER_WEIGHT", default_value_t = 1.0, value_parser = parse_weight)]
    pub weight: f64,
    /// Lease time to live, e.g. "10s": how long a dead worker keeps its jobs.
    #[arg(long, env = "INGEST_LEASE_TTL", default_value = "10s", value_parser = parse_ttl)]
    pub lease_ttl: Duration,
    /// Job types this worker runs, comma-separated (default: all); jobs of
    /// other types never land on it.
    #[arg(long, env = "INGEST_JOB_TYPES", value_delimiter = ',')]
    pub job_types: Vec<String>,
    /// Runs at once on this worker; a job whose turn comes waits for a free
    /// slot. Bounds the memory of a burst (a cold start runs every job).
    #[arg(long, env = "INGEST_MAX_RUNNING_JOBS", default_value_t = scheduler::DEFAULT_MAX_RUNNING,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_running_jobs: u32,
}

impl WorkerArgs {
    pub fn config(&self) -> WorkerConfig {
        let name = self.name.clone().unwrap_or_else(default_name);
        let job_types = self.job_types.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        WorkerConfig { name, weight: self.weight, lease_ttl: self.lease_ttl, job_types }
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig { max_running: self.max_running_jobs as usize, ..SchedulerConfig::default() }
    }
}

/// What jobs use besides the store: where their items go, and how they
/// fetch. Shared by every job of the worker.
#[derive(Clone)]
pub struct JobServices {
    pub sinks: Arc<Sinks>,
    pub fetcher: Arc<fetch::Fetcher>,
    /// Opens the jobs' sealed secrets (`--secrets-key-file`).
    pub secrets_keys: Option<Arc<ingest_runtime::secrets_key::SecretsKeys>>,
}

impl JobServices {
    /// From the sink and fetch flags; `default_dir` for local sinks.
    /// `own`: this process's etcd, control and metrics endpoints, which
    /// fetches never reach.
    pub fn from_args(
        sinks: &ingest_sinks::SinkArgs,
        fetch: &fetch::FetchArgs,
        default_dir: &std::path::Path,
        own: &[fetch::OwnEndpoint],
    ) -> anyhow::Result<Self> {
        Ok(Self {
            sinks: Arc::new(sinks.build(default_dir).map_err(anyhow::Error::msg)?),
            fetcher: Arc::new(fetch::Fetcher::guarding(fetch, own).map_err(anyhow::Error::msg)?),
            secrets_keys: None,
        })
    }
}

/// Runs a worker until `shutdown`: registers, schedules and runs jobs,
/// reports counters, serves `/metrics` and `/healthz` on `metrics` when
/// given; on shutdown drains (hands every job back with its checkpoint),
/// then revokes its lease.
#[expect(clippy::too_many_arguments, reason = "the one place a worker is wired up; each part is distinct")]
pub async fn run_worker(
    store: Arc<dyn Store>,
    keys: Keys,
    config: WorkerConfig,
    scheduler_config: SchedulerConfig,
    report_to: ReportTo,
    services: JobServices,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(worker = %config.name, sinks = %services.sinks.describe(), "sinks");
    services.sinks.check_at_start(Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
    let types = Arc::new(scheduler::type_table(catalogue::runs(&config.job_types).map_err(anyhow::Error::msg)?));
    let specs = types.values().map(|(spec, _)| spec.clone()).collect();
    let membership = Arc::new(Membership::new(store.clone(), keys.clone(), config.clone(), specs));
    membership.publish_types().await?;
    let (lease_tx, lease_rx) = tokio::sync::watch::channel(None);
    // Past the lease deadline, nothing more is written to an upstream.
    services.fetcher.fence_writes(lease_rx.clone());
    let stop_membership = CancellationToken::new();
    let member = tokio::spawn({
        let membership = membership.clone();
        let stop = stop_membership.clone();
        async move { membership.run(stop, lease_tx).await }
    });
    let stop_http = CancellationToken::new();
    let http = metrics.map(|listener| tokio::spawn(http::serve(listener, lease_rx.clone(), stop_http.clone())));
    let progress = progress::ProgressTable::default();
    let stop_reports = CancellationToken::new();
    let reports =
        tokio::spawn(progress::report_loop(progress.clone(), config.name.clone(), report_to, stop_reports.clone()));
    let load_store = store.clone();
    let load_keys = keys.clone();
    let scheduler = scheduler::Scheduler::new(
        store,
        keys,
        membership,
        types,
        progress,
        services,
        scheduler_config,
        lease_rx.clone(),
    );
    let stop_load = CancellationToken::new();
    let load = tokio::spawn(load::publish_loop(
        load_store,
        load_keys,
        config.name.clone(),
        scheduler.owned_by_type(),
        lease_rx,
        stop_load.clone(),
    ));
    scheduler.run(shutdown).await;
    stop_load.cancel();
    let _ = load.await;
    // Drained: send the last counters, then leave the cluster.
    stop_reports.cancel();
    let _ = reports.await;
    stop_membership.cancel();
    let left = member.await.map_err(|e| anyhow::anyhow!("membership task failed: {e}"))?;
    stop_http.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    left
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()))
}

fn parse_weight(s: &str) -> Result<f64, String> {
    let w: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(w.is_finite() && w > 0.0 && w <= 1000.0) {
        return Err("must be greater than 0 and at most 1000".to_string());
    }
    Ok(w)
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = ingest_model::params::parse_duration(s)?;
    if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(300) {
        return Err("must be between 2s and 300s".to_string());
    }
    Ok(ttl)
}
