//! One owned job's task: a fresh instance of its type, run on its interval
//! (with jitter), run-now on request, bounded backoff on errors that never
//! gives up, and a checkpoint written after each run, fenced on the claim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ingest_model::schedule;
use ingest_model::{CheckpointRecord, JobRecord, JobTypeSpec, SecretsRecord, UnixMillis, now_millis};
use ingest_sinks::{IndexSpec, JobOutput, Sinks};
use ingest_store::keys::Keys;
use ingest_store::{LeaseId, Revision, Store};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalogue::{self, BuildInput, JobTypeEntry};
use crate::checkpoints::CheckpointWriter;
use crate::fence::Fence;
use crate::fetch::{FencedFetcher, Fetcher};
use crate::jobs::{CursorFormat, ErrorKind, Job, JobError, NextRun, RunContext, RunReport};
use crate::letters;
use crate::membership::LeaseState;
use crate::ownership::{self, Ownership};
use crate::progress::{Outcome, ProgressTable};
use crate::redact::Redactor;

/// Longest wait between two attempts of a failing job.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How late a paced job's first request may go on its host's turn.
const TURN_LATENESS: Duration = Duration::from_millis(20);

/// What every runner of this worker shares (one per worker, behind an
/// `Arc`: a runner costs a pointer, not copies of it).
pub struct RunnerContext {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub worker: String,
    pub progress: ProgressTable,
    pub checkpoints: CheckpointWriter,
    pub types: Arc<BTreeMap<String, (JobTypeSpec, JobTypeEntry)>>,
    pub sinks: Arc<Sinks>,
    pub fetcher: Arc<Fetcher>,
    pub secrets_keys: Option<Arc<ingest_runtime::secrets_key::SecretsKeys>>,
    /// The worker's lease: a runner stops by itself when its deadline passes.
    pub lease_rx: watch::Receiver<Option<LeaseState>>,
    /// Slots for runs at once (`--max-running-jobs`), taken in turn.
    pub running: Arc<tokio::sync::Semaphore>,
    /// Jobs whose runner ended on its own (claim lost), for the scheduler
    /// to reap without looking at every runner.
    pub ended: std::sync::Mutex<Vec<String>>,
}

impl RunnerContext {
    /// The jobs whose runners ended on their own since the last call.
    pub fn take_ended(&self) -> Vec<String> {
        self.ended.lock().map(|mut ended| std::mem::take(&mut *ended)).unwrap_or_default()
    }
}

/// How a runner ended.
#[derive(Debug)]
pub enum RunnerExit {
    /// Stopped on request; the checkpoint to release with (`None`: the
    /// stored one could not be read and stays as it is).
    Stopped(Option<CheckpointRecord>),
    /// A fenced write failed: the claim is gone.
    Lost,
}

/// A running job, owned by the scheduler.
pub struct RunnerHandle {
    pub epoch: Revision,
    /// The lease the claim was made under.
    pub lease: LeaseId,
    /// Revision of the spec the runner was built from.
    pub spec_revision: Revision,
    cancel: CancellationToken,
    /// Operator requests from the spec (one channel: each costs ~0.5 KB a job).
    requests: watch::Sender<Requests>,
    join: tokio::task::JoinHandle<RunnerExit>,
}

impl RunnerHandle {
    pub fn spawn(
        ctx: Arc<RunnerContext>,
        lease: LeaseId,
        record: Arc<JobRecord>,
        spec_revision: Revision,
        epoch: Revision,
        checkpoint: Result<CheckpointRecord, String>,
        cancel: CancellationToken,
    ) -> Self {
        let (requests, requests_rx) =
            watch::channel(Requests { run_now: record.run_now_seq, cursor_reset: record.cursor_reset_seq });
        let (checkpoint, unreadable) = match checkpoint {
            Ok(checkpoint) => (checkpoint, None),
            Err(why) => (CheckpointRecord::default(), Some(why)),
        };
        let ctx_lease_rx = ctx.lease_rx.clone();
        // Control checked it; one stored by an older control that does not
        // compile is ignored (interval, any time) and said once.
        let schedule = match &record.schedule {
            s if s.is_empty() => None,
            s => match schedule::compile(s, "schedule") {
                Ok(compiled) => Some(Box::new(compiled)),
                Err(violations) => {
                    tracing::warn!(job = %record.id, ?violations, "schedule ignored: it does not compile");
                    None
                }
            },
        };
        let runner = Runner {
            ctx,
            lease,
            epoch,
            checkpoint,
            cancel: cancel.clone(),
            requests: requests_rx,
            reset_baseline: requests.borrow().cursor_reset,
            unreadable,
            redactor: Redactor::default(),
            fence: Fence::new(lease, ctx_lease_rx),
            run_started: 0,
            schedule,
            paced_host: crate::catalogue::paced_host(&record.job_type, &record.params).map(String::into_boxed_str),
            record,
        };
        let join = tokio::spawn(runner.run());
        Self { epoch, lease, spec_revision, cancel, requests, join }
    }

    /// Asks for a run now when `seq` is a new request.
    pub fn run_now(&self, seq: u64) {
        self.requests.send_if_modified(|r| newer(&mut r.run_now, seq));
    }

    /// Asks to start over from an empty cursor when `seq` is a new request.
    pub fn reset_cursor(&self, seq: u64) {
        self.requests.send_if_modified(|r| newer(&mut r.cursor_reset, seq));
    }

    /// Whether the task has ended on its own (a lost claim).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops the runner and waits until it has stopped.
    pub async fn stop(self) -> RunnerExit {
        self.cancel.cancel();
        match self.join.await {
            Ok(exit) => exit,
            Err(error) => {
                tracing::error!(%error, "job runner panicked");
                RunnerExit::Lost
            }
        }
    }
}

struct Runner {
    ctx: Arc<RunnerContext>,
    /// The lease the claim was made under.
    lease: LeaseId,
    record: Arc<JobRecord>,
    epoch: Revision,
    checkpoint: CheckpointRecord,
    cancel: CancellationToken,
    /// Run-now and cursor-reset requests.
    requests: watch::Receiver<Requests>,
    /// The cursor-reset request known when the runner started.
    reset_baseline: u64,
    /// Why the stored checkpoint could not be read: nothing runs until the
    /// cursor is reset.
    unreadable: Option<String>,
    /// The job's secret values, blanked out of its errors and warnings.
    redactor: Redactor,
    /// Whether the claim's lease still holds.
    fence: Fence,
    /// When the current run (or attempt to build the job) started.
    run_started: UnixMillis,
    /// The job's cron expression and windows, when it has them (boxed: most
    /// jobs have none).
    schedule: Option<Box<schedule::Compiled>>,
    /// The host a paced job's requests go to (`JobType::PACED_BY`).
    paced_host: Option<Box<str>>,
}

impl Runner {
    async fn run(mut self) -> RunnerExit {
        let (id, worker) = (self.record.id.clone(), self.ctx.worker.clone());
        ownership::log(Ownership::Start, &id, &worker, self.epoch);
        // No work past the lease deadline, whatever the job is doing: the
        // fence is polled first and reads the clock itself. A stop (or the
        // deadline's guard cancelling every runner) ends the job wherever it
        // waits, even on a store call that does not answer.
        let deadline = self.fence.broken();
        let cancel = self.cancel.clone();
        let exit = tokio::select! {
            biased;
            () = deadline => {
                tracing::warn!(job = %id, worker = %worker, "lease deadline passed; job stopped");
                Some(RunnerExit::Lost)
            }
            () = cancel.cancelled() => None,
            exit = self.run_loop() => Some(exit),
        };
        // Stopped where it waited: its checkpoint is the last one it had
        // (a run cut short keeps the cursor from before it), none while the
        // stored one is unreadable.
        let exit =
            exit.unwrap_or_else(|| RunnerExit::Stopped(self.unreadable.is_none().then(|| self.checkpoint.clone())));
        if matches!(exit, RunnerExit::Lost) {
            ownership::log(Ownership::Lost, &id, &worker, self.epoch);
            if let Ok(mut ended) = self.ctx.ended.lock() {
                ended.push(id.clone());
            }
        }
        ownership::log(Ownership::Stop, &id, &worker, self.epoch);
        exit
    }

    async fn run_loop(&mut self) -> RunnerExit {
        if self.unreadable.is_some() && !Box::pin(self.wait_for_reset()).await {
            return RunnerExit::Stopped(None);
        }
        let mut job = None;
        let mut failures = 0u32;
        if self.checkpoint.next_run.is_none() && self.schedule.is_some() {
            // A new job with a schedule waits for its first cron time or window.
            self.checkpoint.next_run = Some(self.next_run_at(Wait::regular(Duration::ZERO)));
        }
        loop {
            if !self.wait_until_due().await {
                return RunnerExit::Stopped(Some(self.checkpoint.clone()));
            }
            // A paced job waits for its host's turn before it takes a run
            // slot: jobs queued for a busy host never hold the run slots
            // that jobs of other hosts need.
            let Some(turn) = self.host_turn().await else {
                return RunnerExit::Stopped(Some(self.checkpoint.clone()));
            };
            let Some(slot) = self.run_slot().await else {
                return RunnerExit::Stopped(Some(self.checkpoint.clone()));
            };
            // A turn that passed while waiting for the run slot is given up:
            // the request then takes a fresh one (never two requests closer
            // than the host's spacing).
            let turn = turn.filter(|at| at.elapsed() <= TURN_LATENESS);
            self.apply_cursor_reset();
            if job.is_none() {
                self.run_started = now_millis();
                job = match Box::pin(self.build()).await {
                    Ok(built) => Some(built),
                    Err(message) => {
                        let message = self.redactor.apply(&message);
                        self.ctx.progress.record(
                            &self.record.id,
                            self.epoch,
                            self.run_started,
                            &Default::default(),
                            Outcome::Failure(&message),
                        );
                        tracing::warn!(job = %self.record.id, error = %message, "cannot build job");
                        None
                    }
                };
            }
            let next = match job.as_mut() {
                Some((job, output, format)) => {
                    Box::pin(self.run_once(job.as_mut(), output, *format, &mut failures, turn.is_some())).await
                }
                None => Wait::at_least(backoff(&mut failures, self.record.interval, None)),
            };
            drop(slot);
            if self.unreadable.is_some() && !Box::pin(self.wait_for_reset()).await {
                return RunnerExit::Stopped(Some(self.checkpoint.clone()));
            }
            // A reset asked for during the run wins over the run's cursor.
            self.apply_cursor_reset();
            if self.cancel.is_cancelled() {
                // The release writes the checkpoint, in one transaction with it.
                return RunnerExit::Stopped(Some(self.checkpoint.clone()));
            }
            self.checkpoint.next_run = Some(self.next_run_at(next));
            if !Box::pin(self.write_checkpoint()).await {
                return RunnerExit::Lost;
            }
        }
    }

    /// Writes the checkpoint, fenced on the claim; retries while the store is
    /// away (the lease deadline bounds how long). False: the claim is lost.
    async fn write_checkpoint(&mut self) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            let (id, lease) = (&self.record.id, self.lease);
            match self.ctx.checkpoints.write(id, self.epoch, lease, self.checkpoint.clone()).await {
                Ok(true) => {
                    ownership::log(Ownership::Write, id, &self.ctx.worker, self.epoch);
                    return true;
                }
                Ok(false) => return false,
                Err(error) => tracing::warn!(job = %id, %error, retry_in = ?wait, "checkpoint not written"),
            }
            tokio::select! {
                () = self.cancel.cancelled() => return true, // the release writes it
                () = tokio::time::sleep(wait) => wait = (wait * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// The stored checkpoint could not be read: shows why on the job (a
    /// failure, so it counts and alerts) and waits for a cursor reset; the
    /// record stays as it is for the operator to inspect. False when
    /// cancelled.
    async fn wait_for_reset(&mut self) -> bool {
        let why = self.unreadable.clone().unwrap_or_default();
        let message = format!(
            "{why}; the job waits: reset its cursor (ResetJobCursor, or Reset cursor in the UI) to start it over \
             from an empty cursor"
        );
        tracing::error!(job = %self.record.id, error = %why, "checkpoint unreadable; waiting for a cursor reset");
        let now = now_millis();
        self.ctx.progress.record(&self.record.id, self.epoch, now, &Default::default(), Outcome::Failure(&message));
        // Any reset request newer than the one known at the start.
        while self.requests.borrow().cursor_reset <= self.reset_baseline {
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                changed = self.requests.changed() => if changed.is_err() { return false },
            }
        }
        self.unreadable = None;
        self.checkpoint = CheckpointRecord::default();
        self.apply_cursor_reset();
        tracing::info!(job = %self.record.id, "cursor reset; the unreadable checkpoint is replaced");
        true
    }

    /// Starts over from an empty cursor when a reset was asked for since
    /// the checkpoint's last one.
    fn apply_cursor_reset(&mut self) {
        let seq = self.requests.borrow().cursor_reset;
        if seq > self.checkpoint.cursor_reset_seen {
            self.checkpoint.cursor_reset_seen = seq;
            self.checkpoint.cursor = serde_json::Value::Null;
            tracing::info!(job = %self.record.id, seq, "cursor reset");
        }
    }

    /// Sleeps until the next run is due or a run-now request comes. False
    /// when cancelled.
    async fn wait_until_due(&mut self) -> bool {
        loop {
            let run_now = self.requests.borrow().run_now;
            if run_now > self.checkpoint.run_now_seen {
                self.checkpoint.run_now_seen = run_now;
                return true;
            }
            let due_in = self
                .checkpoint
                .next_run
                .map_or(Duration::ZERO, |at| Duration::from_millis(at.saturating_sub(now_millis()).max(0) as u64));
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep(due_in) => return true,
                changed = self.requests.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// Waits for the paced job's host's turn, when it is paced (its first
    /// request there then goes at once): `Some(when the turn began)`,
    /// `Some(None)` for a job that is not paced, `None` when cancelled
    /// meanwhile.
    async fn host_turn(&self) -> Option<Option<tokio::time::Instant>> {
        let Some(host) = &self.paced_host else { return Some(None) };
        tokio::select! {
            () = self.cancel.cancelled() => None,
            turn = self.ctx.fetcher.pacer.wait(host) => Some(Some(turn)),
        }
    }

    /// A slot to run in, in turn with the worker's other due jobs. None
    /// when cancelled meanwhile.
    async fn run_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            () = self.cancel.cancelled() => None,
            permit = self.ctx.running.clone().acquire_owned() => permit.ok(),
        }
    }

    /// When the next run starts: after `wait`, moved to the schedule's next
    /// cron time (which replaces the interval) and into its windows.
    fn next_run_at(&self, wait: Wait) -> UnixMillis {
        let now = now_millis();
        let after = |d: Duration| now.saturating_add(d.as_millis() as i64);
        let earliest = after(wait.regular.unwrap_or_default().max(wait.at_least));
        let Some(schedule) = &self.schedule else { return earliest };
        let from = match wait.regular {
            Some(_) if schedule.has_cron() => after(wait.at_least),
            _ => earliest,
        };
        schedule.next(from, true).unwrap_or(earliest)
    }

    async fn run_once(
        &mut self,
        job: &mut dyn Job,
        output: &mut JobOutput,
        format: CursorFormat,
        failures: &mut u32,
        has_turn: bool,
    ) -> Wait {
        self.run_started = now_millis();
        let mut cursor = match format.read(&self.checkpoint.cursor, self.checkpoint.cursor_version) {
            Ok(cursor) => cursor,
            Err(error) => return Wait::at_least(self.failed(error, failures)),
        };
        let cancel = self.cancel.clone();
        let mut fetcher = FencedFetcher::new(self.ctx.fetcher.clone(), self.fence.clone());
        if let Some(host) = &self.paced_host {
            fetcher = fetcher.paced(has_turn.then(|| host.to_string()));
        }
        let mut ctx = RunContext { cursor: &mut cursor, cancel: &cancel, output, fetch: &fetcher };
        // A cancelled run is dropped where it stands: what it had not
        // delivered is abandoned, and its cursor is not kept.
        let result = tokio::select! {
            result = job.run(&mut ctx) => result,
            () = cancel.cancelled() => return Wait::at_least(Duration::ZERO),
        };
        // Documents the index refused in this run join the job's list.
        let letters = output.take_letters();
        if let Err(error) = letters::keep(self.ctx.store.as_ref(), &self.ctx.keys, &self.record.id, letters).await {
            tracing::warn!(job = %self.record.id, %error, "dead letters not listed (they are in the object store)");
        }
        match result {
            Ok(outcome) => {
                *failures = 0;
                self.checkpoint.cursor = cursor;
                self.checkpoint.cursor_version = (format.version != 1).then_some(format.version);
                let kind = if outcome.warning.is_some() { "warning" } else { "success" };
                count_run(&self.record.job_type, &outcome.report, kind);
                let warning = outcome.warning.as_deref().map(|w| self.redactor.apply(w));
                self.ctx.progress.record(
                    &self.record.id,
                    self.epoch,
                    self.run_started,
                    &outcome.report,
                    Outcome::success_or_warning(warning.as_deref()),
                );
                match outcome.next {
                    NextRun::Interval => Wait::regular(jitter(self.record.interval)),
                    NextRun::After(after) => Wait::at_least(after),
                    NextRun::AtLeast(wait) => Wait { regular: Some(jitter(self.record.interval)), at_least: wait },
                }
            }
            Err(error) => Wait::at_least(self.failed(error, failures)),
        }
    }

    /// What a failed run leads to, by the kind of failure: the one place
    /// errors become the job's state and message.
    fn failed(&mut self, error: JobError, failures: &mut u32) -> Duration {
        // What upstream said may echo the job's own secrets back.
        let message = self.redactor.apply(&error.message);
        match error.kind {
            // The job is another worker's by now: nothing to report, the
            // fence stops this runner.
            ErrorKind::LeaseExpired => {
                tracing::info!(job = %self.record.id, error = %message, "run stopped: lease expired");
                Duration::ZERO
            }
            // Waits for an operator's cursor reset (`run_loop`), which
            // reports it: never a silent fresh start, never a retry loop.
            ErrorKind::CursorUnreadable => {
                count_run(&self.record.job_type, &error.report, "failure");
                self.reset_baseline = self.requests.borrow().cursor_reset;
                self.unreadable = Some(message);
                Duration::ZERO
            }
            ErrorKind::Upstream | ErrorKind::Fetch | ErrorKind::Sink => {
                tracing::warn!(job = %self.record.id, error = %message, failures = *failures + 1, "run failed");
                count_run(&self.record.job_type, &error.report, "failure");
                let started = self.run_started;
                self.ctx.progress.record(
                    &self.record.id,
                    self.epoch,
                    started,
                    &error.report,
                    Outcome::Failure(&message),
                );
                backoff(failures, self.record.interval, error.retry_after)
            }
        }
    }

    /// A fresh instance of the job's type from its params and secrets, and
    /// its output.
    async fn build(&mut self) -> Result<(Box<dyn Job>, JobOutput, CursorFormat), String> {
        let Some((spec, entry)) = self.ctx.types.get(&self.record.job_type) else {
            return Err(format!("this worker does not run job type '{}'", self.record.job_type));
        };
        let secrets = if self.record.secret_names.is_empty() {
            SecretsRecord::default()
        } else {
            let kv = self.ctx.store.get(&self.ctx.keys.secret(&self.record.id)).await.map_err(|e| e.to_string())?;
            // A record that does not open fails the job visibly, never runs it without its secrets.
            match kv {
                Some(kv) => {
                    ingest_runtime::secrets_key::open(self.ctx.secrets_keys.as_deref(), &self.record.id, &kv.value)?
                }
                None => SecretsRecord::default(),
            }
        };
        self.redactor = Redactor::new(secrets.values.values().map(String::as_str));
        let (job, index) = build_job((spec, entry), &self.record.id, &self.record.params, &secrets)?;
        Ok((job, self.ctx.sinks.output(&self.record.job_type, &self.record.id, index), entry.cursor))
    }
}

/// A job built from its parameters and secrets, and the index its
/// documents go to: what a runner runs, and what a dry run runs.
pub(crate) fn build_job(
    (spec, entry): (&JobTypeSpec, &JobTypeEntry),
    job_id: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    secrets: &SecretsRecord,
) -> Result<(Box<dyn Job>, IndexSpec), String> {
    let input = BuildInput { job_id, spec, params, secrets: &secrets.values };
    let job = (entry.build)(&input).map_err(|e| e.to_string())?;
    Ok((job, index_spec((spec, entry), params)))
}

/// The index a job's documents go to, with its type's mapping.
pub(crate) fn index_spec(
    (spec, entry): (&JobTypeSpec, &JobTypeEntry),
    params: &serde_json::Map<String, serde_json::Value>,
) -> IndexSpec {
    IndexSpec {
        name: params
            .get(catalogue::INDEX_PARAM)
            .and_then(|v| v.as_str())
            .filter(|name| !name.is_empty())
            .map_or_else(|| catalogue::default_index(&spec.name), String::from),
        job_type: spec.name.clone(),
        mapping: entry.mapping.clone(),
    }
}

/// Counts a run and what it did in the process's metrics.
fn count_run(job_type: &str, report: &RunReport, outcome: &'static str) {
    use ingest_runtime::metrics as m;
    let job_type = job_type.to_string();
    metrics::counter!(m::RUNS, "job_type" => job_type.clone(), "outcome" => outcome).increment(1);
    metrics::counter!(m::ITEMS_FETCHED, "job_type" => job_type.clone()).increment(report.items_fetched);
    metrics::counter!(m::ITEMS_WRITTEN, "job_type" => job_type.clone()).increment(report.items_written);
    metrics::counter!(m::ITEMS_FAILED, "job_type" => job_type.clone()).increment(report.items_failed);
    metrics::counter!(m::BYTES_FETCHED, "job_type" => job_type).increment(report.bytes_fetched);
}

/// The operator's requests, as sequence numbers from the job's spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    run_now: u64,
    cursor_reset: u64,
}

/// Takes `seq` when it is a newer request than `current`.
fn newer(current: &mut u64, seq: u64) -> bool {
    let newer = seq > *current;
    if newer {
        *current = seq;
    }
    newer
}

/// The interval, ±10 %, so jobs created together spread out.
/// How long until the next run, as a run left it.
#[derive(Clone, Copy, Debug)]
struct Wait {
    /// The job's own rhythm (its interval, jittered), which a cron
    /// expression replaces; `None` after a failure or when the source named
    /// its own wait.
    regular: Option<Duration>,
    /// At least this long in any case (a backoff, a wait the source asked
    /// for).
    at_least: Duration,
}

impl Wait {
    fn regular(interval: Duration) -> Self {
        Self { regular: Some(interval), at_least: Duration::ZERO }
    }

    fn at_least(wait: Duration) -> Self {
        Self { regular: None, at_least: wait }
    }
}

fn jitter(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..1.1))
}

/// Exponential backoff from 1 s, capped by the job's interval and 5 min,
/// with jitter; never gives up. A source's `retry_after` wins when longer.
fn backoff(failures: &mut u32, interval: Duration, retry_after: Option<Duration>) -> Duration {
    *failures = failures.saturating_add(1);
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << (*failures - 1).min(16));
    let capped = exp.min(MAX_BACKOFF).min(interval.max(FIRST_BACKOFF));
    jitter(capped).max(retry_after.unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<Fut>(_: impl FnOnce(Runner) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// A task per owned job: what an idle one holds is its future (its
    /// runs, builds and checkpoint writes are boxed while they last, the
    /// fence sets no timer), so 10 000 idle jobs stay small. It was 1 920
    /// bytes before; 1 144 after, 1 304 with the stop raced at the top
    /// (rustc 1.95).
    #[test]
    fn an_idle_runner_task_is_small() {
        let size = future_size(Runner::run);
        assert!(size <= 1400, "a runner's future is {size} bytes");
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let mut failures = 0;
        let interval = Duration::from_secs(60);
        let waits: Vec<Duration> = (0..10).map(|_| backoff(&mut failures, interval, None)).collect();
        assert!(waits[0] >= Duration::from_millis(900) && waits[0] <= Duration::from_millis(1100));
        assert!(waits[3] >= Duration::from_millis(7200), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(66)), "capped by the interval: {waits:?}");
        let long = backoff(&mut failures, interval, Some(Duration::from_secs(600)));
        assert_eq!(long, Duration::from_secs(600));
        let mut many = u32::MAX - 1;
        assert!(backoff(&mut many, interval, None) <= Duration::from_secs(66), "no overflow");
    }
}
