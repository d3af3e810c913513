//! One owned job: a fresh instance of its type, run on its interval (with
//! jitter), run-now on request, bounded backoff on errors that never gives
//! up, and a checkpoint written after each run, fenced on the claim. Between
//! runs the job holds no task (`idle`).

mod idle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ingest_model::schedule;
use ingest_model::{CheckpointRecord, JobTypeSpec, SecretsRecord, UnixMillis, now_millis};
use ingest_sinks::{IndexSpec, JobOutput, Sinks};
use ingest_store::keys::Keys;
use ingest_store::{LeaseId, Revision, Store};
use rand::Rng;
use tokio::sync::{Notify, watch};
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
use crate::spec::RunSpec;

pub use idle::Alarms;
use idle::JobCell;

/// Longest wait between two attempts of a failing job.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How late a paced job's first request may go on its host's turn.
const TURN_LATENESS: Duration = Duration::from_millis(20);

/// A job that parks for at least this long keeps no built instance between
/// runs (0.2 KB for a demo job, more with compiled filters): it is built
/// again from its params, and its secrets read again, at its next run.
const KEEP_BUILT_WHILE_IDLE: Duration = Duration::from_secs(300);

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
    /// The clock that wakes parked jobs.
    pub alarms: Arc<Alarms>,
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
    /// stored one stays as it is — it is the job's state, or it could not
    /// be read).
    Stopped(Option<CheckpointRecord>),
    /// A fenced write failed: the claim is gone.
    Lost,
}

/// An owned job, held by the scheduler.
pub struct RunnerHandle {
    pub epoch: Revision,
    /// The lease the claim was made under.
    pub lease: LeaseId,
    /// Revision of the spec the runner was built from.
    pub spec_revision: Revision,
    cell: Arc<JobCell>,
    requests: Arc<Requests>,
}

impl RunnerHandle {
    /// Starts running a claimed job: at once when a run is due, else at its
    /// next run. `lease_token` is cancelled when the lease's deadline passes.
    pub fn spawn(
        ctx: Arc<RunnerContext>,
        lease: LeaseId,
        record: Arc<RunSpec>,
        spec_revision: Revision,
        epoch: Revision,
        checkpoint: Result<CheckpointRecord, String>,
        lease_token: CancellationToken,
    ) -> Self {
        let requests = Arc::new(Requests::new(record.run_now_seq, record.cursor_reset_seq));
        let (mut checkpoint, unreadable) = match checkpoint {
            Ok(checkpoint) => (checkpoint, None),
            Err(why) => (CheckpointRecord::default(), Some(why)),
        };
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
        let cursor = CursorText::from(&std::mem::take(&mut checkpoint.cursor));
        ownership::log(Ownership::Start, &record.id, &ctx.worker, epoch);
        let runner = Box::new(Runner {
            fence: Fence::new(lease, ctx.lease_rx.clone()),
            ctx,
            lease,
            epoch,
            checkpoint,
            cursor,
            cancel: lease_token.clone(),
            lease_token,
            reset_baseline: requests.cursor_reset(),
            requests: requests.clone(),
            stored: unreadable.is_none(),
            unreadable,
            redactor: Redactor::default(),
            run_started: 0,
            schedule,
            paced_host: crate::catalogue::paced_host(&record.job_type, &record.params()).map(String::into_boxed_str),
            built: Default::default(),
            failures: 0,
            slot: None,
            record,
        });
        let mut runner = runner;
        runner.schedule_first_run();
        Self { epoch, lease, spec_revision, cell: JobCell::start(runner), requests }
    }

    /// Asks for a run now when `seq` is a new request.
    pub fn run_now(&self, seq: u64) {
        if self.requests.raise(&self.requests.run_now, seq) {
            self.cell.wake();
        }
    }

    /// Asks to start over from an empty cursor when `seq` is a new request
    /// (at the job's next run).
    pub fn reset_cursor(&self, seq: u64) {
        self.requests.raise(&self.requests.cursor_reset, seq);
    }

    /// Whether the job's task has ended on its own (a lost claim).
    pub fn is_finished(&self) -> bool {
        self.cell.is_finished()
    }

    /// Stops the job and waits until it has stopped.
    pub async fn stop(self) -> RunnerExit {
        self.cell.stop().await
    }
}

impl Drop for RunnerHandle {
    /// A handle dropped without a stop (replaced, or the scheduler gone)
    /// ends its job: nothing runs that the scheduler does not hold.
    fn drop(&mut self) {
        self.cell.abandon();
    }
}

/// What a job's task came to.
enum Step {
    /// Nothing to do until then: the job parks.
    Idle(UnixMillis),
    /// Ended (`None`: stopped where it waited).
    Exit(Option<RunnerExit>),
}

/// A built job: its instance, its output and its cursor's format.
type Built = (Box<dyn Job>, JobOutput, CursorFormat);

struct Runner {
    ctx: Arc<RunnerContext>,
    /// The lease the claim was made under.
    lease: LeaseId,
    record: Arc<RunSpec>,
    epoch: Revision,
    /// The checkpoint, but its cursor (always null here: see `cursor`).
    checkpoint: CheckpointRecord,
    cursor: CursorText,
    /// This task's cancellation (a child of `lease_token`; the lease token
    /// itself while parked).
    cancel: CancellationToken,
    /// Cancelled when the lease's deadline passes.
    lease_token: CancellationToken,
    /// Run-now and cursor-reset requests.
    requests: Arc<Requests>,
    /// The cursor-reset request known when the runner started.
    reset_baseline: u64,
    /// Why the stored checkpoint could not be read: nothing runs until the
    /// cursor is reset.
    unreadable: Option<String>,
    /// The stored checkpoint is this job's state (read at the claim and not
    /// changed since, or written after its last run): a release need not
    /// write it again, and a drain leaves the claim to the lease's revoke.
    stored: bool,
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
    /// The job's instance, kept from run to run once built (boxed: small
    /// while it has none). Only ever used through `&mut self`; the mutex
    /// makes the runner `Sync` (a job instance need not be).
    built: std::sync::Mutex<Option<Box<Built>>>,
    /// Failed runs in a row.
    failures: u32,
    /// A run slot taken for it before its task started.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Runner {
    /// Runs the job until it has nothing to do for a while or stops. No
    /// work past the lease deadline, whatever the job is doing: the fence
    /// is polled first and reads the clock itself. A stop (or the
    /// deadline's guard cancelling every runner) ends the job wherever it
    /// waits, even on a store call that does not answer.
    async fn session(&mut self) -> Step {
        let deadline = self.fence.broken();
        let cancel = self.cancel.clone();
        tokio::select! {
            biased;
            () = deadline => {
                tracing::warn!(job = %self.record.id, worker = %self.ctx.worker, "lease deadline passed; job stopped");
                Step::Exit(Some(RunnerExit::Lost))
            }
            // Cancelled with the lease's token: the deadline passed (the
            // lease may be renewed since, the claim is lost all the same).
            () = cancel.cancelled() => Step::Exit(self.lease_token.is_cancelled().then_some(RunnerExit::Lost)),
            step = self.run_loop() => step,
        }
    }

    /// How the job ended (`None`: stopped where it waited), said in the
    /// ownership log.
    fn finish(&self, exit: Option<RunnerExit>) -> RunnerExit {
        let (id, worker) = (&self.record.id, &self.ctx.worker);
        // Stopped where it waited: its checkpoint is the last one it had
        // (a run cut short keeps the cursor from before it), none while the
        // stored one is its state or unreadable.
        let exit = exit.unwrap_or_else(|| RunnerExit::Stopped(self.checkpoint_to_release()));
        if matches!(exit, RunnerExit::Lost) {
            ownership::log(Ownership::Lost, id, worker, self.epoch);
            if let Ok(mut ended) = self.ctx.ended.lock() {
                ended.push(id.clone());
            }
        }
        ownership::log(Ownership::Stop, id, worker, self.epoch);
        exit
    }

    async fn run_loop(&mut self) -> Step {
        if self.unreadable.is_some() && !Box::pin(self.wait_for_reset()).await {
            return Step::Exit(Some(RunnerExit::Stopped(None)));
        }
        let stopped = |runner: &Self| Step::Exit(Some(RunnerExit::Stopped(runner.checkpoint_to_release())));
        loop {
            if let Some(at) = self.take_due() {
                // Parked for long: only its state stays, the instance and
                // its output are built again for the next run.
                if at.saturating_sub(now_millis()) >= KEEP_BUILT_WHILE_IDLE.as_millis() as i64 {
                    *self.built() = None;
                }
                return Step::Idle(at);
            }
            // From here the state moves on from what is stored (a run-now
            // request taken, a cursor reset, the run itself).
            self.stored = false;
            // A paced job waits for its host's turn before it takes a run
            // slot: jobs queued for a busy host never hold the run slots
            // that jobs of other hosts need.
            let Some(turn) = self.host_turn().await else { return stopped(self) };
            let Some(slot) = self.run_slot().await else { return stopped(self) };
            // A turn that passed while waiting for the run slot is given up:
            // the request then takes a fresh one (never two requests closer
            // than the host's spacing).
            let turn = turn.filter(|at| at.elapsed() <= TURN_LATENESS);
            self.apply_cursor_reset();
            if self.built().is_none() {
                self.run_started = now_millis();
                *self.built() = match Box::pin(self.build()).await {
                    Ok(built) => Some(Box::new(built)),
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
            let next = match self.built().take() {
                Some(mut built) => {
                    let (job, output, format) = &mut *built;
                    let next = Box::pin(self.run_once(job.as_mut(), output, *format, turn.is_some())).await;
                    *self.built() = Some(built);
                    next
                }
                None => Wait::at_least(backoff(&mut self.failures, self.record.interval, None)),
            };
            drop(slot);
            if self.unreadable.is_some() && !Box::pin(self.wait_for_reset()).await {
                return stopped(self);
            }
            // A reset asked for during the run wins over the run's cursor.
            self.apply_cursor_reset();
            if self.cancel.is_cancelled() {
                // The release writes the checkpoint, in one transaction with it.
                return stopped(self);
            }
            self.checkpoint.next_run = Some(self.next_run_at(next));
            if !Box::pin(self.write_checkpoint()).await {
                return Step::Exit(Some(RunnerExit::Lost));
            }
        }
    }

    /// A job with a schedule and no next run yet (new, or started over)
    /// waits for its first cron time or window.
    fn schedule_first_run(&mut self) {
        if let Some(schedule) = self.schedule.as_ref().filter(|_| self.checkpoint.next_run.is_none()) {
            let now = now_millis();
            self.checkpoint.next_run = Some(schedule.next(now, true).unwrap_or(now));
            self.stored = false;
        }
    }

    /// Whether a run is due now (its time came, or a run-now request, which
    /// this takes): `None` when it is, else when it will be.
    fn take_due(&mut self) -> Option<UnixMillis> {
        let run_now = self.requests.run_now();
        if run_now > self.checkpoint.run_now_seen {
            self.checkpoint.run_now_seen = run_now;
            return None;
        }
        self.idle_until()
    }

    /// When the next run is due, unless it is due now (or a run-now request
    /// is pending, or the job waits for a cursor reset).
    fn idle_until(&self) -> Option<UnixMillis> {
        if self.unreadable.is_some() || self.run_now_asked() {
            return None;
        }
        self.checkpoint.next_run.filter(|at| *at > now_millis())
    }

    /// The checkpoint to release with: none while the stored one is the
    /// job's state or unreadable (a run cut short keeps the cursor from
    /// before it).
    fn checkpoint_to_release(&self) -> Option<CheckpointRecord> {
        (self.unreadable.is_none() && !self.stored).then(|| self.checkpoint())
    }

    /// The checkpoint to write or release with.
    fn checkpoint(&self) -> CheckpointRecord {
        CheckpointRecord { cursor: self.cursor.value(), ..self.checkpoint.clone() }
    }

    fn built(&mut self) -> &mut Option<Box<Built>> {
        self.built.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run_now_asked(&self) -> bool {
        self.requests.run_now() > self.checkpoint.run_now_seen
    }

    /// Writes the checkpoint, fenced on the claim; retries while the store is
    /// away (the lease deadline bounds how long). False: the claim is lost.
    async fn write_checkpoint(&mut self) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            let (id, lease) = (&self.record.id, self.lease);
            match self.ctx.checkpoints.write(id, self.epoch, lease, self.checkpoint()).await {
                Ok(true) => {
                    ownership::log(Ownership::Write, id, &self.ctx.worker, self.epoch);
                    self.stored = true;
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
        loop {
            let changed = self.requests.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.requests.cursor_reset() > self.reset_baseline {
                break;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = changed => {}
            }
        }
        self.unreadable = None;
        self.checkpoint = CheckpointRecord::default();
        self.cursor = CursorText::default();
        self.schedule_first_run();
        self.apply_cursor_reset();
        tracing::info!(job = %self.record.id, "cursor reset; the unreadable checkpoint is replaced");
        true
    }

    /// Starts over from an empty cursor when a reset was asked for since
    /// the checkpoint's last one.
    fn apply_cursor_reset(&mut self) {
        let seq = self.requests.cursor_reset();
        if seq > self.checkpoint.cursor_reset_seen {
            self.checkpoint.cursor_reset_seen = seq;
            self.cursor = CursorText::default();
            tracing::info!(job = %self.record.id, seq, "cursor reset");
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

    /// A slot to run in, in turn with the worker's other due jobs (taken
    /// already when the job waited for it without a task). None when
    /// cancelled meanwhile.
    async fn run_slot(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Some(slot) = self.slot.take() {
            return Some(slot);
        }
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
        has_turn: bool,
    ) -> Wait {
        self.run_started = now_millis();
        let mut cursor = match format.read(&self.cursor.value(), self.checkpoint.cursor_version) {
            Ok(cursor) => cursor,
            Err(error) => return Wait::at_least(self.failed(error)),
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
                self.failures = 0;
                self.cursor = CursorText::from(&cursor);
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
            Err(error) => Wait::at_least(self.failed(error)),
        }
    }

    /// What a failed run leads to, by the kind of failure: the one place
    /// errors become the job's state and message.
    fn failed(&mut self, error: JobError) -> Duration {
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
                self.reset_baseline = self.requests.cursor_reset();
                self.unreadable = Some(message);
                Duration::ZERO
            }
            ErrorKind::Upstream | ErrorKind::Fetch | ErrorKind::Sink => {
                tracing::warn!(job = %self.record.id, error = %message, failures = self.failures + 1, "run failed");
                count_run(&self.record.job_type, &error.report, "failure");
                let started = self.run_started;
                self.ctx.progress.record(
                    &self.record.id,
                    self.epoch,
                    started,
                    &error.report,
                    Outcome::Failure(&message),
                );
                backoff(&mut self.failures, self.record.interval, error.retry_after)
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
        let (job, index) = build_job((spec, entry), &self.record.id, &self.record.params(), &secrets)?;
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

/// A job's cursor between runs, as JSON text: decoded, the smallest object
/// costs a map node of 632 bytes, and every idle job keeps its cursor.
#[derive(Default)]
enum CursorText {
    #[default]
    Null,
    Text(Box<str>),
    /// One its text would not read back as it is (nested deeper than the
    /// JSON reader's limit, a float off by its last digit): kept as it is.
    Value(Box<serde_json::Value>),
}

impl CursorText {
    fn from(cursor: &serde_json::Value) -> Self {
        if cursor.is_null() {
            return Self::Null;
        }
        let text = cursor.to_string();
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(read) if read == *cursor => Self::Text(text.into_boxed_str()),
            _ => Self::Value(Box::new(cursor.clone())),
        }
    }

    fn value(&self) -> serde_json::Value {
        match self {
            Self::Null => serde_json::Value::Null,
            // Checked to read back when it was written.
            Self::Text(text) => serde_json::from_str(text).unwrap_or_default(),
            Self::Value(value) => (**value).clone(),
        }
    }
}

/// The operator's requests, as the newest sequence numbers from the job's
/// spec, shared by the scheduler's handle and the job.
struct Requests {
    run_now: AtomicU64,
    cursor_reset: AtomicU64,
    /// Told of every new request.
    changed: Notify,
}

impl Requests {
    fn new(run_now: u64, cursor_reset: u64) -> Self {
        Self { run_now: AtomicU64::new(run_now), cursor_reset: AtomicU64::new(cursor_reset), changed: Notify::new() }
    }

    fn run_now(&self) -> u64 {
        self.run_now.load(Ordering::SeqCst)
    }

    fn cursor_reset(&self) -> u64 {
        self.cursor_reset.load(Ordering::SeqCst)
    }

    /// Takes `seq` into `which` when it is a newer request.
    fn raise(&self, which: &AtomicU64, seq: u64) -> bool {
        let newer = which.fetch_max(seq, Ordering::SeqCst) < seq;
        if newer {
            self.changed.notify_waiters();
        }
        newer
    }
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

    use ingest_model::JobRecord;
    use ingest_store::{EmbeddedStore, Store, Txn, TxnOp};
    use ingest_testkit::job_record;

    use crate::claims::{ClaimRequest, ClaimTxns};
    use crate::fetch::FetchArgs;
    use crate::{catalogue, scheduler};
    use ingest_runtime::write_window::WriteWindow;

    /// What an idle job holds besides its cell and its alarm: the runner's
    /// state, boxed (its built job is boxed again).
    #[test]
    fn an_idle_job_is_small() {
        let size = std::mem::size_of::<Runner>();
        assert!(size <= 320, "a runner's state is {size} bytes");
    }

    /// A worker's runner context over an in-memory store, its sinks in
    /// `dir`, holding a lease granted for the whole test.
    async fn context(dir: &std::path::Path) -> (Arc<RunnerContext>, LeaseId) {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
        let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let (lease_tx, lease_rx) = watch::channel(Some(LeaseState::until(lease, far)));
        // The lease holds for the whole test.
        std::mem::forget(lease_tx);
        let keys = Keys::new("/runner-test/");
        let types = scheduler::type_table(catalogue::runs(&["demo".to_string()]).unwrap());
        let ctx = Arc::new(RunnerContext {
            checkpoints: CheckpointWriter::spawn(store.clone(), keys.clone(), "w1".into()),
            store,
            keys,
            worker: "w1".into(),
            progress: ProgressTable::default(),
            types: Arc::new(types),
            sinks: Arc::new(ingest_sinks::Sinks::local(dir, Duration::from_secs(5))),
            fetcher: Arc::new(Fetcher::new(&FetchArgs::default()).unwrap()),
            secrets_keys: None,
            lease_rx,
            // No run slot until the test gives some.
            running: Arc::new(tokio::sync::Semaphore::new(0)),
            ended: Default::default(),
            alarms: Default::default(),
        });
        (ctx, lease)
    }

    async fn stored_checkpoint(ctx: &RunnerContext, id: &str) -> CheckpointRecord {
        let kv = ctx.store.get(&ctx.keys.state(id)).await.unwrap().expect("a checkpoint");
        serde_json::from_slice(&kv.value).unwrap()
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < until, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `n` demo jobs (interval 1 h) stored, claimed under `lease` and
    /// started with `lease_token`.
    async fn start_jobs(
        ctx: &Arc<RunnerContext>,
        lease: LeaseId,
        n: usize,
        lease_token: &CancellationToken,
    ) -> (Vec<Arc<RunSpec>>, Vec<RunnerHandle>) {
        let (mut records, mut handles) = (Vec::new(), Vec::new());
        for i in 0..n {
            let mut record = job_record(&format!("job-{i}"), "demo");
            record.interval = Duration::from_secs(3600);
            let record = store_job(ctx, record).await;
            handles.push(claim_and_start(ctx, lease, &record, lease_token).await);
            records.push(record);
        }
        (records, handles)
    }

    /// Stores `record` as a job spec; the spec a runner runs.
    async fn store_job(ctx: &RunnerContext, record: JobRecord) -> Arc<RunSpec> {
        ctx.store.put(&ctx.keys.job(&record.id), serde_json::to_vec(&record).unwrap(), 0).await.unwrap();
        Arc::new(RunSpec::from(record))
    }

    /// Idle jobs hold no task: due jobs wait for a run slot without one;
    /// each runs once, writes its checkpoint and parks on the worker's one
    /// clock; a run-now request runs a parked job at once, and a parked job
    /// stops with nothing more to write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_between_runs_hold_no_task() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, lease) = context(dir.path()).await;
        let jobs = 40;
        let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let before = tasks();
        let lease_token = CancellationToken::new();
        let (requests, mut handles) = start_jobs(&ctx, lease, jobs, &lease_token).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(tasks() <= before + 2, "due jobs wait for a run slot without a task: {} tasks", tasks() - before);
        assert!(ctx.progress.counters(&requests[0].id).is_none(), "nothing ran without a slot");
        ctx.running.add_permits(8);
        eventually("every job ran once and parked", || ctx.alarms.len() == jobs).await;
        for record in &requests {
            let checkpoint = stored_checkpoint(&ctx, &record.id).await;
            assert!(checkpoint.next_run.unwrap() > now_millis() + 3_000_000, "next run an interval away");
        }
        eventually("no task per idle job", || tasks() <= before + 2).await;

        // A run-now request wakes a parked job: it runs now and parks again.
        let first = &handles[0];
        first.run_now(1);
        eventually("the run-now request ran", || ctx.progress.counters(&requests[0].id).is_some_and(|c| c.runs == 2))
            .await;
        eventually("it parked again", || ctx.alarms.len() == jobs).await;
        assert_eq!(stored_checkpoint(&ctx, &requests[0].id).await.run_now_seen, 1);
        first.run_now(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ctx.progress.counters(&requests[0].id).unwrap().runs, 2, "a request already seen runs nothing");

        // A parked job stops at once; what it wrote after its run is its
        // state, so its release writes nothing.
        let last = handles.pop().unwrap();
        match last.stop().await {
            RunnerExit::Stopped(None) => {}
            other => panic!("a parked job stops with nothing to write, not {other:?}"),
        }
        assert_eq!(ctx.alarms.len(), jobs - 1, "its alarm is gone");
        for handle in handles {
            assert!(matches!(handle.stop().await, RunnerExit::Stopped(None)));
        }
        assert!(ctx.alarms.is_empty());
        assert!(ctx.take_ended().is_empty(), "no claim was lost");
    }

    /// At the lease's deadline the jobs without a task end at once, their
    /// claims lost (said then, not when the scheduler gets to them); a
    /// handle dropped without a stop ends its job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_jobs_end_at_the_deadline_and_with_their_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, lease) = context(dir.path()).await;
        ctx.running.add_permits(4);
        let lease_token = CancellationToken::new();
        let (_, mut handles) = start_jobs(&ctx, lease, 6, &lease_token).await;
        eventually("every job ran once and parked", || ctx.alarms.len() == 6).await;
        drop(handles.pop());
        assert_eq!(ctx.alarms.len(), 5, "a dropped handle's job is gone from the clock");
        // What `guard_deadline` does at the deadline.
        lease_token.cancel();
        ctx.alarms.expire(lease);
        assert!(ctx.alarms.is_empty());
        assert!(handles.iter().all(RunnerHandle::is_finished), "ended without waiting for the scheduler");
        let mut ended = ctx.take_ended();
        ended.sort();
        assert_eq!(ended, (0..5).map(|i| format!("job-{i}")).collect::<Vec<_>>());
        for handle in handles {
            assert!(matches!(handle.stop().await, RunnerExit::Lost));
        }
    }

    #[test]
    fn a_cursor_kept_as_text_reads_back_whatever_it_holds() {
        let nested = (0..200).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
        let cursors = [
            serde_json::Value::Null,
            serde_json::json!({"next_seq": 18_446_744_073_709_551_615u64, "since": -12, "ratio": 0.1}),
            serde_json::json!({"seen": ["a", "b\u{1F600}\"\\"], "etag": null}),
            nested,
        ];
        for cursor in cursors {
            assert_eq!(CursorText::from(&cursor).value(), cursor);
        }
        assert!(matches!(CursorText::from(&serde_json::json!({"a": 1})), CursorText::Text(_)));
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

    /// A release writes the checkpoint only when the job's state moved on
    /// from the stored one: a scheduled job that just took its first cron
    /// time hands it back; a job parked on the checkpoint it wrote after a
    /// run, or on the one read at its claim, hands back none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_writes_the_checkpoint_only_when_the_job_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, lease) = context(dir.path()).await;
        let lease_token = CancellationToken::new();
        let mut scheduled = job_record("scheduled", "demo");
        scheduled.schedule.cron = "@daily".into();
        let handle = claim_and_start(&ctx, lease, &store_job(&ctx, scheduled).await, &lease_token).await;
        eventually("the scheduled job parked", || ctx.alarms.len() == 1).await;
        match handle.stop().await {
            RunnerExit::Stopped(Some(checkpoint)) => assert!(checkpoint.next_run.is_some(), "its first cron time"),
            other => panic!("a job whose first cron time is not stored hands it back, not {other:?}"),
        }

        let (requests, mut handles) = start_jobs(&ctx, lease, 1, &lease_token).await;
        ctx.running.add_permits(1);
        eventually("the job ran and parked", || ctx.alarms.len() == 1).await;
        let written = stored_checkpoint(&ctx, &requests[0].id).await;
        assert!(matches!(handles.pop().unwrap().stop().await, RunnerExit::Stopped(None)));

        // Claimed again: it parks on the stored checkpoint without a run,
        // and hands back nothing.
        ctx.store.txn(Txn::new().and_then([TxnOp::delete(ctx.keys.owner(&requests[0].id))])).await.unwrap();
        let handle = claim_and_start(&ctx, lease, &requests[0], &lease_token).await;
        eventually("it parked again", || ctx.alarms.len() == 1).await;
        assert_eq!(ctx.progress.counters(&requests[0].id).map(|c| c.runs), Some(1), "no second run");
        assert_eq!(stored_checkpoint(&ctx, &requests[0].id).await, written);
        assert!(matches!(handle.stop().await, RunnerExit::Stopped(None)));
    }

    /// A job parked for an hour keeps only its state; one parked for a
    /// minute keeps its built instance for the next run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_parked_for_long_keeps_no_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, lease) = context(dir.path()).await;
        let lease_token = CancellationToken::new();
        let mut handles = Vec::new();
        for (id, interval) in [("hourly", 3600), ("minutely", 60)] {
            let mut record = job_record(id, "demo");
            record.interval = Duration::from_secs(interval);
            handles.push(claim_and_start(&ctx, lease, &store_job(&ctx, record).await, &lease_token).await);
        }
        ctx.running.add_permits(2);
        eventually("both ran and parked", || ctx.alarms.len() == 2).await;
        let kept: Vec<Option<bool>> = handles.iter().map(|h| h.cell.parked_with_instance()).collect();
        assert_eq!(kept, [Some(false), Some(true)], "hourly, minutely");
        for handle in handles {
            assert!(matches!(handle.stop().await, RunnerExit::Stopped(None)));
        }
    }

    /// Claims the stored job `record` and starts it.
    async fn claim_and_start(
        ctx: &Arc<RunnerContext>,
        lease: LeaseId,
        record: &Arc<RunSpec>,
        lease_token: &CancellationToken,
    ) -> RunnerHandle {
        let stored = ctx.store.get(&ctx.keys.job(&record.id)).await.unwrap();
        let spec_revision = stored.expect("the job is stored").mod_revision;
        let claim = [ClaimRequest { id: record.id.clone(), spec_revision }];
        let txns = ClaimTxns {
            store: ctx.store.as_ref(),
            keys: &ctx.keys,
            worker: "w1",
            lease,
            window: &WriteWindow::new(ingest_runtime::metrics::WRITE_WINDOW),
        };
        let won = txns.claim(&claim, &CancellationToken::new()).await.unwrap().won.pop().expect("claimed");
        let (ctx, token) = (ctx.clone(), lease_token.clone());
        RunnerHandle::spawn(ctx, lease, record.clone(), spec_revision, won.epoch, won.checkpoint, token)
    }
}
