//! Ownership events (`ingest_model::ownership`), logged by every worker for
//! the checkers over a cluster's logs (`ingest_testkit::ownership`). Times are CLOCK_MONOTONIC nanoseconds,
//! comparable across the processes of one machine.

pub use ingest_model::ownership::Ownership;

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Logs one ownership event under the target `ingest::ownership`.
pub fn log(kind: Ownership, job: &str, worker: &str, epoch: i64) {
    tracing::info!(target: "ingest::ownership", own = kind.as_str(), job, worker, epoch, mono_ns = mono_ns(), "ownership");
}
