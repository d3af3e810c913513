//! What is stored under the keys other than the job spec: secrets, worker
//! registrations, claims, counters and checkpoints (all JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Secret parameters of one job, under `secrets/<id>`. `Debug` shows names
/// only: secret values never reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsRecord {
    pub values: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsRecord").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[default]
    Active,
    Draining,
}

/// A worker's registration under `workers/<name>`, attached to its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub name: String,
    pub state: WorkerState,
    pub weight: f64,
    /// Job types this worker can run.
    pub types: Vec<String>,
    pub version: String,
    pub start_time: UnixMillis,
}

/// A claim under `owners/<id>`, attached to the owner's lease. Its create
/// revision is the claim's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub worker: String,
}

/// Ingestion counters of one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub items_fetched: u64,
    #[serde(default)]
    pub items_written: u64,
    #[serde(default)]
    pub items_failed: u64,
    #[serde(default)]
    pub bytes_fetched: u64,
    #[serde(default)]
    pub runs: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.items_fetched += other.items_fetched;
        self.items_written += other.items_written;
        self.items_failed += other.items_failed;
        self.bytes_fetched += other.bytes_fetched;
        self.runs += other.runs;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub time: UnixMillis,
    pub message: String,
}

/// Counters and outcomes of one job under `stats/<id>` (written by control,
/// in batches).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    #[serde(default)]
    pub counters: Counters,
    #[serde(default)]
    pub last_success: Option<UnixMillis>,
    #[serde(default)]
    pub last_error: Option<ErrorRecord>,
}

impl StatsRecord {
    /// The last run failed: there is an error newer than the last success.
    pub fn is_failing(&self) -> bool {
        match (&self.last_error, self.last_success) {
            (Some(err), Some(ok)) => err.time > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A job's checkpoint under `state/<id>` (written by the owner, fenced by its
/// epoch). `cursor` is the job type's own business.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    #[serde(default)]
    pub next_run: Option<UnixMillis>,
    /// The last `JobRecord::run_now_seq` served, so a run-now request is
    /// served once even across a handoff.
    #[serde(default)]
    pub run_now_seen: u64,
    #[serde(default)]
    pub cursor: serde_json::Value,
}
