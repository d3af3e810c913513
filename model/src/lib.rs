//! The job model shared by control and workers: what is stored under each key
//! (as JSON), job types and their parameter specs, validation, and how a job's
//! status is derived. Architecture invariant: this crate does no I/O.

pub mod job;
pub mod labels;
pub mod ownership;
pub mod params;
pub mod records;
pub mod schedule;
pub mod status;
pub mod typed;

// The derive's output names `::ingest_model`, in this crate too.
extern crate self as ingest_model;

pub use job::{JobRecord, validate_job_id, validate_name};
pub use labels::{Labels, Selector, validate_labels};
pub use params::{
    JobTypeSpec, MovedOrigin, ParamKind, ParamRule, ParamSpec, SplitParams, moved_origins, validate_params,
};
pub use records::{
    CheckpointRecord, ClaimProgress, Counters, DeadLetterRecord, ErrorRecord, LoadRecord, MAX_DEAD_LETTERS_PER_JOB,
    MAX_RUNS, OwnerRecord, PreviewDocument, PreviewRecord, PreviewResult, RunOutcome, RunRecord, RunsRecord,
    SecretsRecord, StatsLedger, StatsRecord, UNREADABLE_OWNER, WorkerRecord, WorkerState,
};
pub use schedule::Schedule;
pub use status::{JobState, derive_state};
pub use typed::{JobParams, JsonText, ParamEnum, ParamType, Secret, parse_params, spec_of};

/// One bad field of a request: `field` is a path such as `job.params.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Milliseconds since the Unix epoch, the time unit of every stored record.
pub type UnixMillis = i64;

/// The current time in Unix milliseconds.
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Serde for `Duration` as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
