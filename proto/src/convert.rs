//! The wire forms of the domain values both control and workers send:
//! timestamps, counters and a claim's progress. Everything else is
//! converted (and validated) at control's edge, in its `convert` module.

use ingest_model::{ClaimProgress, Counters, RunOutcome, RunRecord};

use crate::v1 as pb;

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn counters_to_pb(c: &Counters) -> pb::JobCounters {
    pb::JobCounters {
        items_fetched: c.items_fetched,
        items_written: c.items_written,
        items_failed: c.items_failed,
        bytes_fetched: c.bytes_fetched,
        runs: c.runs,
        runs_failed: c.runs_failed,
        items_filtered: c.items_filtered,
    }
}

pub fn counters_from_pb(c: &pb::JobCounters) -> Counters {
    Counters {
        items_fetched: c.items_fetched,
        items_written: c.items_written,
        items_failed: c.items_failed,
        bytes_fetched: c.bytes_fetched,
        runs: c.runs,
        runs_failed: c.runs_failed,
        items_filtered: c.items_filtered,
    }
}

/// One job's progress as a worker reports it.
pub fn claim_progress_to_pb(job_id: &str, progress: &ClaimProgress) -> pb::JobProgress {
    pb::JobProgress {
        job_id: job_id.to_string(),
        epoch: progress.epoch,
        counters: Some(counters_to_pb(&progress.totals)),
        last_success_time: progress.last_success.map(timestamp),
        last_error: progress
            .last_error
            .as_ref()
            .map(|e| pb::JobError { time: Some(timestamp(e.time)), message: e.message.clone() }),
        runs: progress.runs.iter().map(run_to_pb).collect(),
    }
}

/// One run, as a worker reports it and as ListJobRuns answers it.
pub fn run_to_pb(run: &RunRecord) -> pb::JobRun {
    let outcome = match run.outcome {
        RunOutcome::Succeeded => pb::RunOutcome::Succeeded,
        RunOutcome::Warning => pb::RunOutcome::Warning,
        RunOutcome::Failed => pb::RunOutcome::Failed,
    };
    pb::JobRun {
        start_time: Some(timestamp(run.start)),
        duration: Some(pbjson_types::Duration {
            seconds: (run.duration_ms / 1000) as i64,
            nanos: ((run.duration_ms % 1000) * 1_000_000) as i32,
        }),
        outcome: outcome as i32,
        counters: Some(counters_to_pb(&run.counters)),
        message: run.message.clone().unwrap_or_default(),
        worker: run.worker.clone(),
        epoch: run.epoch,
        seq: run.seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_millis_into_seconds_and_nanos() {
        assert_eq!(timestamp(1_500), pbjson_types::Timestamp { seconds: 1, nanos: 500_000_000 });
        assert_eq!(timestamp(-1), pbjson_types::Timestamp { seconds: -1, nanos: 999_000_000 });
    }

    #[test]
    fn counters_round_trip() {
        let c = Counters {
            items_fetched: 1,
            items_written: 2,
            items_failed: 3,
            bytes_fetched: 4,
            runs: 5,
            runs_failed: 6,
            items_filtered: 7,
        };
        assert_eq!(counters_from_pb(&counters_to_pb(&c)), c);
    }
}
