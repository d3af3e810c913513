//! ingest worker: a peer that registers itself under a lease and publishes
//! the job types it can run (`catalogue`). Claiming and running jobs arrive
//! with the peer-worker issue; until then workers only announce themselves.

pub mod catalogue;
pub mod jobs;
pub mod membership;

use std::time::Duration;

pub use membership::{Membership, WorkerConfig};

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
}

impl WorkerArgs {
    pub fn config(&self) -> WorkerConfig {
        let name = self.name.clone().unwrap_or_else(default_name);
        WorkerConfig { name, weight: self.weight, lease_ttl: self.lease_ttl }
    }
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
