//! Persisting the progress workers report over `WorkerService.ReportProgress`.
//!
//! Reports are totals per claim, so they are merged in memory (per job and
//! claim: per-field maximum, newest outcomes) and folded into `stats/<id>` in
//! batches every flush interval and once more on shutdown: never one store
//! write per report or per item. The runs a report carries join the job's
//! history under `runs/<id>` (the last 50, each run once) in the same
//! transactions. Each batch is one read and one guarded write
//! transaction; a failed guard re-reads (the failure branch returns the fresh
//! keys) and refolds, and a store error keeps the reports for the next flush.
//! Folding is idempotent, so a write whose outcome was lost is simply folded
//! again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ingest_model::{ClaimProgress, RunsRecord, StatsLedger};
use ingest_runtime::metrics as m;
use ingest_runtime::write_window::{WriteWindow, in_window};
use ingest_store::keys::Keys;
use ingest_store::{
    Compare, CompareOp, KeyRange, RangeRequest, Revision, Store, StoreError, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio_util::sync::CancellationToken;

use crate::convert::progress_from_pb;
use crate::error::ControlError;
use crate::views::decode;

/// Reads per job in a batch (see [`ProgressRecorder::read_ops`]).
const READS_PER_JOB: usize = 3;

/// Jobs per transaction: three compares and, in the failure branch, three
/// reads per job stay under etcd's default `--max-txn-ops` (128 per branch).
const BATCH_JOBS: usize = 40;
/// Guarded writes of one batch before its reports wait for the next flush.
const MAX_ATTEMPTS: usize = 4;
/// Claims kept per pending job: a job changes owner rarely, and only claims
/// newer than the stored one count anyway.
const MAX_CLAIMS_PER_JOB: usize = 4;

#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub flush_interval: Duration,
    /// Jobs with unflushed reports kept while the store is unreachable; past
    /// it the oldest are dropped (their owners report totals again anyway).
    pub max_pending_jobs: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self { flush_interval: Duration::from_secs(1), max_pending_jobs: 100_000 }
    }
}

/// Accumulates progress reports and folds them into the stored stats.
pub struct ProgressRecorder {
    store: Arc<dyn Store>,
    keys: Keys,
    config: RecorderConfig,
    pending: Mutex<Pending>,
    /// One flush at a time: the periodic one, the final one, a caller's.
    flushing: tokio::sync::Mutex<()>,
    /// Batches in flight, fewer while the store answers slowly.
    window: WriteWindow,
}

/// Reports of one job: its claims, oldest first.
type Claims = Vec<ClaimProgress>;

impl ProgressRecorder {
    pub fn new(store: Arc<dyn Store>, keys: Keys, config: RecorderConfig) -> Self {
        Self {
            store,
            keys,
            config,
            pending: Mutex::new(Pending::default()),
            flushing: Default::default(),
            window: WriteWindow::new(m::PROGRESS_WRITE_WINDOW),
        }
    }

    /// Takes in one worker message's reports (already validated).
    pub fn record(&self, reports: impl IntoIterator<Item = (String, ClaimProgress)>) {
        let mut pending = self.lock();
        for (job, report) in reports {
            pending.add(job, std::slice::from_ref(&report), self.config.max_pending_jobs, false);
        }
    }

    /// Takes in one worker message as it came off the wire (or from a
    /// worker in this process): validated, counted, recorded.
    pub fn receive(&self, message: ingest_proto::v1::ReportProgressRequest) -> Result<(), ControlError> {
        let (worker, reports) = progress_from_pb(message)?;
        metrics::counter!(m::PROGRESS_REPORTS).increment(1);
        tracing::trace!(%worker, jobs = reports.len(), "progress received");
        self.record(reports);
        Ok(())
    }

    /// Number of jobs with unflushed reports.
    pub fn pending_jobs(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Flushes every `flush_interval` until `stop`, then once more.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    // Errors are logged by flush; the reports wait for the next tick.
                    let _ = self.flush().await;
                }
            }
        }
        let _ = self.flush().await;
    }

    /// Folds every pending report into the store. On a store error the
    /// reports not yet written are kept for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().await;
        let (jobs, dropped) = self.lock().take();
        if dropped > 0 {
            let max_pending_jobs = self.config.max_pending_jobs;
            tracing::warn!(dropped, max_pending_jobs, "too many jobs with unflushed progress; dropped the oldest");
        }
        let total = jobs.len();
        let mut written = 0;
        // Batches are of distinct jobs: a few go at once (100 000 jobs' first
        // counters took 55 s one batch after the other), fewer while etcd
        // answers slowly (its apply lagging: 100 000 jobs' first counters,
        // four batches at a time, with the workers' checkpoints, kept etcd
        // refusing lease renewals until every worker's lease expired). After
        // a store error no more are sent; what was not written waits for the
        // next flush.
        let stop = CancellationToken::new();
        let batches = jobs.chunks(BATCH_JOBS).collect();
        let (mut kept, mut failed) = (Vec::new(), None);
        let send = |batch| self.try_batch(batch, &stop);
        let Ok(()) = in_window(&self.window, batches, send, |batch, outcome, _| {
            match outcome {
                Some(Ok(outcome)) => {
                    written += outcome.written;
                    if !outcome.unflushed.is_empty() {
                        tracing::warn!(
                            jobs = outcome.unflushed.len(),
                            "progress writes kept conflicting; retrying later"
                        );
                        self.requeue(outcome.unflushed);
                    }
                }
                Some(Err(error)) => {
                    kept.extend_from_slice(batch);
                    failed.get_or_insert(error);
                }
                None => kept.extend_from_slice(batch),
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .await;
        if let Some(error) = failed {
            tracing::warn!(%error, jobs = kept.len(), "cannot write progress; keeping it for the next flush");
            self.requeue(kept);
            return Err(error);
        }
        if total > 0 {
            tracing::debug!(jobs = total, written, "progress flushed");
        }
        Ok(())
    }

    /// One batch, unless an earlier one failed (`None`); a failure stops
    /// the batches not sent yet.
    async fn try_batch<'b>(
        &self,
        batch: &'b [(String, Claims)],
        stop: &CancellationToken,
    ) -> (&'b [(String, Claims)], Option<Result<BatchOutcome, StoreError>>) {
        if stop.is_cancelled() {
            return (batch, None);
        }
        let outcome = self.flush_batch(batch).await;
        if outcome.is_err() {
            stop.cancel();
        }
        (batch, Some(outcome))
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // No code panics while holding the lock; a poisoned one is still
        // consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn requeue(&self, jobs: Vec<(String, Claims)>) {
        self.lock().put_back(jobs, self.config.max_pending_jobs);
    }

    /// Reads, folds and writes one batch of jobs.
    async fn flush_batch(&self, batch: &[(String, Claims)]) -> Result<BatchOutcome, StoreError> {
        let reads = batch.iter().flat_map(|(job, _)| self.read_ops(job));
        let response = self.store.txn(Txn::new().and_then(reads)).await?;
        let mut current = self.parse_reads(batch.iter().map(|(job, _)| job.as_str()), &response);
        let mut todo: Vec<&(String, Claims)> = batch.iter().collect();
        for _ in 0..MAX_ATTEMPTS {
            let writes: Vec<Write> = todo.iter().filter_map(|(job, claims)| fold(job, claims, &current)).collect();
            if writes.is_empty() {
                return Ok(BatchOutcome { written: 0, unflushed: Vec::new() });
            }
            let response = self.store.txn(self.write_txn(&writes)?).await?;
            if response.succeeded {
                return Ok(BatchOutcome { written: writes.len(), unflushed: Vec::new() });
            }
            // The failure branch read the jobs again: refold on that.
            current = self.parse_reads(writes.iter().map(|w| w.job), &response);
            todo.retain(|(job, _)| current.contains_key(job.as_str()));
        }
        Ok(BatchOutcome { written: 0, unflushed: todo.into_iter().cloned().collect() })
    }

    /// Reads of one job: its stats, whether (since when) it exists, its runs.
    fn read_ops(&self, job: &str) -> [TxnOp; READS_PER_JOB] {
        [
            TxnOp::get(self.keys.stats(job)),
            TxnOp::Range(RangeRequest::new(KeyRange::key(self.keys.job(job))).keys_only()),
            TxnOp::get(self.keys.runs(job)),
        ]
    }

    fn parse_reads<'a>(
        &self,
        jobs: impl Iterator<Item = &'a str>,
        response: &TxnResponse,
    ) -> HashMap<&'a str, Current> {
        let first_kv = |op: Option<&TxnOpResponse>| match op {
            Some(TxnOpResponse::Range(r)) => r.kvs.first().cloned(),
            _ => None,
        };
        jobs.enumerate()
            .map(|(i, job)| {
                let at = |k: usize| first_kv(response.responses.get(READS_PER_JOB * i + k));
                // A record that does not decode is replaced rather than
                // blocking the job's progress for ever.
                let ledger = at(0).map(|kv| (decode::<StatsLedger>(&kv).unwrap_or_default(), kv.mod_revision));
                let runs = at(2).map(|kv| (decode::<RunsRecord>(&kv).unwrap_or_default(), kv.mod_revision));
                (job, Current { job_created: at(1).map_or(0, |kv| kv.create_revision), stats: ledger, runs })
            })
            .collect()
    }

    /// Every write guarded by the stats key's revision as read and by the
    /// job still being the one read (never recreate stats for a deleted job).
    fn write_txn(&self, writes: &[Write]) -> Result<Txn, StoreError> {
        let mut txn = Txn::new();
        for w in writes {
            txn = txn
                .when([
                    Compare::mod_revision(self.keys.stats(w.job), CompareOp::Equal, w.stats_revision),
                    Compare::create_revision(self.keys.job(w.job), CompareOp::Equal, w.job_created),
                ])
                .and_then([TxnOp::put(self.keys.stats(w.job), encode("stats", &w.ledger)?)])
                .or_else(self.read_ops(w.job));
            if let Some((runs, revision)) = &w.runs {
                txn = txn
                    .when([Compare::mod_revision(self.keys.runs(w.job), CompareOp::Equal, *revision)])
                    .and_then([TxnOp::put(self.keys.runs(w.job), encode("runs", runs)?)]);
            }
        }
        Ok(txn)
    }
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Other(format!("encoding {what}: {e}")))
}

/// What the store holds for one job.
struct Current {
    /// Create revision of the job's spec; 0 when it does not exist.
    job_created: Revision,
    stats: Option<(StatsLedger, Revision)>,
    runs: Option<(RunsRecord, Revision)>,
}

struct Write<'a> {
    job: &'a str,
    ledger: StatsLedger,
    /// Mod revision of the stats as read; 0 when absent.
    stats_revision: Revision,
    job_created: Revision,
    /// The job's run history with the new runs, and its mod revision as
    /// read (0 when absent); `None` when no run is new.
    runs: Option<(RunsRecord, Revision)>,
}

struct BatchOutcome {
    written: usize,
    unflushed: Vec<(String, Claims)>,
}

/// The write folding `claims` into what is stored needs, if any. Reports for
/// jobs that do not exist are dropped: the job was deleted meanwhile, or the
/// report is wrong; either way there are no stats to keep.
fn fold<'a>(job: &'a str, claims: &Claims, current: &HashMap<&str, Current>) -> Option<Write<'a>> {
    let current = current.get(job)?;
    if current.job_created == 0 {
        tracing::debug!(job, "progress for a job that does not exist; dropped");
        return None;
    }
    let (mut ledger, stats_revision) = current.stats.clone().unwrap_or_default();
    let (mut history, runs_revision) = current.runs.clone().unwrap_or_default();
    let mut changed = false;
    let mut new_runs = false;
    for claim in claims {
        // A claim older than the job's spec belongs to an earlier job with
        // the same id (claims come after the job is created).
        if claim.epoch > current.job_created {
            changed |= ledger.fold(claim);
            // A late run of an earlier claim is still a run of the job.
            new_runs |= history.add(&claim.runs);
        }
    }
    if new_runs {
        let failures = history.consecutive_failures();
        changed |= std::mem::replace(&mut ledger.stats.consecutive_failures, failures) != failures;
    }
    let runs = new_runs.then_some((history, runs_revision));
    (changed || runs.is_some()).then_some(Write { job, ledger, stats_revision, job_created: current.job_created, runs })
}

/// Unflushed reports, merged per job and claim, in arrival order of the jobs.
#[derive(Default)]
struct Pending {
    jobs: HashMap<String, (i64, Claims)>,
    /// Jobs by arrival sequence, to drop the oldest first.
    arrival: BTreeMap<i64, String>,
    /// Next sequence at the back (new arrivals) and at the front (reports
    /// put back after a failed flush are older than anything newer).
    next_back: i64,
    next_front: i64,
    dropped: u64,
}

impl Pending {
    fn add(&mut self, job: String, claims: &[ClaimProgress], max_jobs: usize, at_front: bool) {
        if let Some((_, held)) = self.jobs.get_mut(&job) {
            for claim in claims {
                merge_claim(held, claim);
            }
            return;
        }
        if self.jobs.len() >= max_jobs.max(1) {
            self.dropped += 1;
            if at_front {
                // It is the oldest itself.
                return;
            }
            if let Some((_, oldest)) = self.arrival.pop_first() {
                self.jobs.remove(&oldest);
            }
        }
        let seq = if at_front {
            self.next_front -= 1;
            self.next_front
        } else {
            self.next_back += 1;
            self.next_back
        };
        let mut held = Claims::new();
        for claim in claims {
            merge_claim(&mut held, claim);
        }
        self.arrival.insert(seq, job.clone());
        self.jobs.insert(job, (seq, held));
    }

    /// Puts taken reports back (oldest first in `jobs`) ahead of everything
    /// that arrived since: they are older.
    fn put_back(&mut self, jobs: Vec<(String, Claims)>, max_jobs: usize) {
        for (job, claims) in jobs.into_iter().rev() {
            self.add(job, &claims, max_jobs, true);
        }
    }

    /// Everything pending, and how many jobs were dropped since the last
    /// take.
    fn take(&mut self) -> (Vec<(String, Claims)>, u64) {
        let mut jobs = std::mem::take(&mut self.jobs);
        let order = std::mem::take(&mut self.arrival);
        let taken = order.into_values().filter_map(|job| jobs.remove(&job).map(|(_, claims)| (job, claims))).collect();
        (taken, std::mem::take(&mut self.dropped))
    }
}

/// Merges a report into a job's claims (sorted by epoch), keeping the newest
/// few claims.
fn merge_claim(claims: &mut Claims, report: &ClaimProgress) {
    match claims.binary_search_by_key(&report.epoch, |c| c.epoch) {
        Ok(i) => {
            claims[i].merge(report);
        }
        Err(i) => {
            claims.insert(i, report.clone());
            if claims.len() > MAX_CLAIMS_PER_JOB {
                claims.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ingest_model::Counters;

    use super::*;

    fn report(epoch: i64, runs: u64) -> ClaimProgress {
        ClaimProgress { epoch, totals: Counters { runs, ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn reports_merge_per_job_and_claim() {
        let mut pending = Pending::default();
        for (job, r) in [("a", report(5, 3)), ("a", report(5, 2)), ("b", report(1, 1)), ("a", report(9, 1))] {
            pending.add(job.into(), &[r], 10, false);
        }
        let (jobs, dropped) = pending.take();
        assert_eq!(dropped, 0);
        assert_eq!(jobs, [("a".to_string(), vec![report(5, 3), report(9, 1)]), ("b".to_string(), vec![report(1, 1)])]);
        assert!(pending.take().0.is_empty());
    }

    #[test]
    fn past_the_cap_the_oldest_jobs_are_dropped_and_put_back_reports_count_as_oldest() {
        let mut pending = Pending::default();
        for job in ["a", "b", "c"] {
            pending.add(job.into(), &[report(1, 1)], 2, false);
        }
        let (jobs, dropped) = pending.take();
        let names: Vec<&str> = jobs.iter().map(|(j, _)| j.as_str()).collect();
        assert_eq!((names, dropped), (vec!["b", "c"], 1));

        pending.add("new".into(), &[report(1, 1)], 3, false);
        pending.put_back(jobs, 3);
        pending.add("newer".into(), &[report(1, 1)], 3, false);
        let names: Vec<String> = pending.take().0.into_iter().map(|(j, _)| j).collect();
        assert_eq!(names, ["c", "new", "newer"], "the put-back reports were the oldest");
    }

    #[test]
    fn a_job_keeps_its_newest_few_claims() {
        let mut claims = Claims::new();
        for epoch in [3, 1, 7, 5, 9, 2] {
            merge_claim(&mut claims, &report(epoch, 1));
        }
        let epochs: Vec<i64> = claims.iter().map(|c| c.epoch).collect();
        assert_eq!(epochs, [3, 5, 7, 9]);
    }
}
