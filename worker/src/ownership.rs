//! Ownership events, logged by every worker so a checker over the logs of a
//! whole cluster can prove at most one owner per job at any instant, bounded
//! unowned gaps, and epochs that never go backwards
//! (`ingest_testkit::ownership`). Times are CLOCK_MONOTONIC nanoseconds,
//! comparable across the processes of one machine.

/// What happened to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// The claim transaction succeeded.
    Claim,
    /// The job's runner starts doing work.
    Start,
    /// The runner has fully stopped: no more work from this worker.
    Stop,
    /// The owner deleted its claim.
    Release,
    /// The owner learned it lost the claim (fenced write failed, lease
    /// deadline passed); a `Stop` follows.
    Lost,
    /// A fenced checkpoint write succeeded.
    Write,
}

impl Ownership {
    fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Release => "release",
            Self::Lost => "lost",
            Self::Write => "write",
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Logs one ownership event under the target `ingest::ownership`.
pub fn log(kind: Ownership, job: &str, worker: &str, epoch: i64) {
    tracing::info!(target: "ingest::ownership", own = kind.as_str(), job, worker, epoch, mono_ns = mono_ns(), "ownership");
}
