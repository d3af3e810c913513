//! The worker's control loop: keeps a view of the cluster, decides which jobs
//! this worker should run (it ranks first by weighted rendezvous hashing),
//! claims them in batches, hands jobs over when a peer ranks first
//! (stop, then release with the checkpoint, then the peer claims), stops
//! everything when its lease deadline passes, and drains on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ingest_model::{CheckpointRecord, JobTypeSpec};
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EventKind, Revision, Store, StoreError, Txn, TxnOp, WatchBatch, WatchSet};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::JobServices;
use crate::catalogue::JobTypeEntry;
use crate::checkpoints::CheckpointWriter;
use crate::claims::{ClaimRequest, ClaimTxns, Release};
use crate::decide::{Decider, Resume, Running};
use crate::load::OwnedByType;
use crate::membership::{LeaseState, Membership};
use crate::ownership::{self, Ownership};
use crate::progress::ProgressTable;
use crate::runner::{RunnerContext, RunnerExit, RunnerHandle};
use crate::spec::RunSpec;
use crate::view::ClusterView;
use crate::{letters, preview};
use ingest_runtime::write_window::WriteWindow;

/// Timings of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A job moves to a peer only after the peer has ranked first for it
    /// this long (a flapping peer moves nothing).
    pub stabilization: Duration,
    /// Rank k may claim a job unowned for k × this (liveness fallback).
    pub fallback_step: Duration,
    /// Time left to drain on shutdown before giving up (the lease revoke
    /// frees what is left).
    pub drain_budget: Duration,
    /// Runs at once (`--max-running-jobs`).
    pub max_running: usize,
}

/// Runs at once by default: enough for slow upstreams (10 000 feeds of 2 s
/// fetches every 10 min keep ~35 busy), few enough that a cold start's burst
/// of first runs does not hold every job's items at the same time.
pub const DEFAULT_MAX_RUNNING: u32 = 256;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            stabilization: Duration::from_secs(5),
            fallback_step: Duration::from_secs(2),
            drain_budget: Duration::from_secs(6),
            max_running: DEFAULT_MAX_RUNNING as usize,
        }
    }
}

/// How often timers (stabilization, fallback, pacing) are looked at.
const TICK: Duration = Duration::from_millis(250);

pub struct Scheduler {
    store: Arc<dyn Store>,
    keys: Keys,
    worker: String,
    membership: Arc<Membership>,
    types: Arc<BTreeMap<String, (JobTypeSpec, JobTypeEntry)>>,
    progress: ProgressTable,
    /// What the runners share.
    runner_ctx: Arc<RunnerContext>,
    config: SchedulerConfig,
    lease_rx: watch::Receiver<Option<LeaseState>>,
    view: ClusterView,
    runners: HashMap<String, (RunnerHandle, Arc<RunSpec>)>,
    /// What to do, decided from the view (pure; this module does it).
    decider: Decider,
    /// Claim and release transactions in flight, adapted to their latency.
    window: WriteWindow,
    /// Jobs owned by type, for the load the worker publishes; counted
    /// again at most every [`OWNED_COUNT_EVERY`].
    owned: OwnedByType,
    owned_counted: Option<Instant>,
    /// The lease every runner was started under.
    runners_lease: Option<ingest_store::LeaseId>,
    /// Cancelled when that lease's deadline passes (`guard_deadline`): every
    /// runner holds a child of it.
    lease_token: Option<(ingest_store::LeaseId, CancellationToken)>,
    /// When the runners were last checked for a task that ended without
    /// saying so (a panic): a backstop, see `reap_lost`.
    reaped_all: Instant,
    /// Cancelled at shutdown: no more claims (a worker draining while its
    /// peers drain too would otherwise take their jobs for seconds first).
    stopping: CancellationToken,
}

const OWNED_COUNT_EVERY: Duration = Duration::from_secs(5);
/// A worker just registered claims nothing this long: workers started
/// together (a cold start, a stack deployed) hear of each other first. Its
/// first decision otherwise ranked jobs among the few peers its view held,
/// and the first three of ten workers claimed every job between them (10 000
/// jobs: 5.6 s until the others had theirs, through hand-overs).
const FIRST_CLAIM_AFTER: Duration = Duration::from_millis(500);
/// How often every runner is checked for a task that ended unannounced.
const REAP_ALL_EVERY: Duration = Duration::from_secs(10);

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        membership: Arc<Membership>,
        types: Arc<BTreeMap<String, (JobTypeSpec, JobTypeEntry)>>,
        progress: ProgressTable,
        services: JobServices,
        config: SchedulerConfig,
        lease_rx: watch::Receiver<Option<LeaseState>>,
    ) -> Self {
        let worker = membership.name().to_string();
        let runner_ctx = Arc::new(RunnerContext {
            store: store.clone(),
            keys: keys.clone(),
            worker: worker.clone(),
            progress: progress.clone(),
            checkpoints: CheckpointWriter::spawn(store.clone(), keys.clone(), worker.clone()),
            types: types.clone(),
            sinks: services.sinks,
            fetcher: services.fetcher,
            secrets_keys: services.secrets_keys,
            lease_rx: lease_rx.clone(),
            running: Arc::new(tokio::sync::Semaphore::new(config.max_running.max(1))),
            ended: Default::default(),
            alarms: Default::default(),
        });
        Self {
            store,
            keys,
            worker,
            membership,
            types,
            progress,
            runner_ctx,
            decider: Decider::new(config.stabilization, config.fallback_step),
            window: WriteWindow::new(ingest_runtime::metrics::WRITE_WINDOW),
            config,
            lease_rx,
            view: ClusterView::default(),
            runners: HashMap::new(),
            owned: OwnedByType::default(),
            owned_counted: None,
            runners_lease: None,
            lease_token: None,
            reaped_all: Instant::now(),
            stopping: CancellationToken::new(),
        }
    }

    /// The jobs this worker owns by type, kept current while it runs.
    pub fn owned_by_type(&self) -> OwnedByType {
        self.owned.clone()
    }

    fn count_owned(&mut self) {
        if self.owned_counted.is_some_and(|at| at.elapsed() < OWNED_COUNT_EVERY) {
            return;
        }
        self.owned_counted = Some(Instant::now());
        let mut counts = BTreeMap::new();
        for (_, record) in self.runners.values() {
            *counts.entry(record.job_type.clone()).or_insert(0u32) += 1;
        }
        if let Ok(mut owned) = self.owned.lock() {
            *owned = counts;
        }
    }

    /// Runs until `shutdown`, then drains: every job is handed back with its
    /// checkpoint before this returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.stopping = shutdown.clone();
        let mut watch = tokio::select! {
            () = shutdown.cancelled() => return,
            watch = self.sync(&shutdown) => watch,
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The watch is the view's only source after the load: no periodic
        // re-list (100 000 keys per worker every 30 s); a re-list only when
        // the watch cannot continue from its revision (compacted).
        loop {
            let deadline = self.lease().map_or_else(|| Instant::now() + Duration::from_secs(3600), |l| l.deadline);
            // A watch batch that only carried checkpoints or counters changes
            // no decision: it waits for the next tick instead of costing a
            // full reconcile (they arrive many times a second).
            let mut relevant = true;
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = self.lease_rx.changed() => if changed.is_err() {
                    // Membership ended (it could not register): nothing may run.
                    tracing::error!(worker = %self.worker, "membership ended; stopping the scheduler");
                    self.stop_all_lost().await;
                    return;
                },
                () = tokio::time::sleep_until(deadline), if !self.runners.is_empty() => {}
                item = watch.next() => match item {
                    Some(Ok(batch)) => {
                        self.answer_previews(&batch);
                        self.replay_letters(&batch);
                        let mut changed = self.apply(&batch);
                        // Fold in whatever else already arrived: one
                        // reconcile for a burst of changes.
                        while let Some(Some(Ok(batch))) = watch.next().now_or_never() {
                            self.answer_previews(&batch);
                            self.replay_letters(&batch);
                            changed |= self.apply(&batch);
                        }
                        relevant = changed;
                    }
                    Some(Err(StoreError::Compacted { .. })) => {
                        tracing::warn!(worker = %self.worker, "watch compacted; re-listing");
                        watch = self.sync(&shutdown).await;
                    }
                    _ => {
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = tokio::time::sleep(Duration::from_millis(500)) => {
                                if let Err(StoreError::Compacted { .. }) = self.rewatch(&mut watch).await {
                                    tracing::warn!(worker = %self.worker, "watch revision compacted; re-listing");
                                    watch = self.sync(&shutdown).await;
                                }
                            }
                        }
                    }
                },
                _ = tick.tick() => {}
            }
            if relevant {
                self.reconcile().await;
            }
        }
        self.drain().await;
    }

    /// Applies a batch of watch events to the view; true when something
    /// scheduling looks at changed (the jobs it touched are looked at next).
    fn apply(&mut self, batch: &WatchBatch) -> bool {
        let changes = self.view.apply(&self.keys, batch);
        let relevant = !changes.is_empty();
        self.decider.touched(changes);
        relevant
    }

    /// Starts the dry runs asked of this worker in `batch`.
    fn answer_previews(&self, batch: &WatchBatch) {
        for event in &batch.events {
            if event.kind != EventKind::Put || !matches!(self.keys.parse(&event.kv.key), Some((KeyKind::Preview, _))) {
                continue;
            }
            if let Some(record) = preview::is_mine(&event.kv, &self.worker) {
                tokio::spawn(preview::answer(self.runner_ctx.clone(), event.kv.clone(), record));
            }
        }
    }

    /// Sends again the dead letters an operator flagged, of jobs this
    /// worker runs.
    fn replay_letters(&self, batch: &WatchBatch) {
        for event in &batch.events {
            let Some((KeyKind::DeadLetter, name)) = self.keys.parse(&event.kv.key) else { continue };
            if event.kind != EventKind::Put {
                continue;
            }
            let Some((job_id, _)) = name.split_once('/') else { continue };
            let Some((_, record)) = self.runners.get(job_id) else { continue };
            let Ok(letter) = serde_json::from_slice::<ingest_model::DeadLetterRecord>(&event.kv.value) else {
                continue;
            };
            if letter.replay {
                tokio::spawn(letters::replay(self.runner_ctx.clone(), record.clone(), event.kv.clone(), letter));
            }
        }
    }

    fn lease(&self) -> Option<LeaseState> {
        *self.lease_rx.borrow()
    }

    /// Loads the view and starts the watch after it (retrying until both
    /// work or shutdown).
    async fn sync(&mut self, shutdown: &CancellationToken) -> WatchSet {
        loop {
            let started = Instant::now();
            match ClusterView::load(self.store.as_ref(), &self.keys).await {
                Ok(mut view) => {
                    tracing::info!(
                        worker = %self.worker,
                        jobs = view.jobs.len(),
                        claims = view.claims.len(),
                        workers = view.workers.len(),
                        revision = view.loaded_at,
                        took_ms = started.elapsed().as_millis() as u64,
                        "cluster view loaded"
                    );
                    // Keep when peers were first seen across re-lists.
                    for (name, seen) in &self.view.first_seen {
                        if let Some(slot) = view.first_seen.get_mut(name) {
                            *slot = *seen;
                        }
                    }
                    self.view = view;
                    self.decider.touch_all();
                    let mut watch = WatchSet::new(self.watched_prefixes(), self.view.loaded_at + 1);
                    match self.rewatch(&mut watch).await {
                        // Compacted between the load and the watch: load again.
                        Err(StoreError::Compacted { .. }) => continue,
                        // Re-made by the loop when it failed otherwise.
                        _ => return watch,
                    }
                }
                Err(error) => tracing::warn!(worker = %self.worker, %error, "cannot load the cluster view; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return WatchSet::new([], 0),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// What the worker watches: what it decides from (specs, claims,
    /// workers) and what is asked of it (previews, dead-letter replays) —
    /// not the checkpoints, counters and run records every job writes.
    fn watched_prefixes(&self) -> Vec<String> {
        [KeyKind::Job, KeyKind::Owner, KeyKind::Worker, KeyKind::Preview, KeyKind::DeadLetter]
            .map(|kind| self.keys.prefix(kind))
            .to_vec()
    }

    /// Re-makes the watches that are not running, each from where it stopped.
    async fn rewatch(&self, watch: &mut WatchSet) -> Result<(), StoreError> {
        watch.open(self.store.as_ref()).await.inspect_err(|error| {
            tracing::warn!(worker = %self.worker, %error, "cannot watch; retrying");
        })
    }

    /// Brings the running jobs in line with the view.
    async fn reconcile(&mut self) {
        self.reap_lost().await;
        let Some(lease) = self.lease().filter(|l| l.deadline > Instant::now()) else {
            // Past the deadline (or no lease): no work may continue.
            self.stop_all_lost().await;
            return;
        };
        if self.runners_lease != Some(lease.lease) {
            // Claims of another lease are not mine to run any more.
            self.stop_all_lost().await;
            self.runners_lease = Some(lease.lease);
            self.decider.touch_all();
        }
        let types = &self.types;
        let plan = self.decider.decide(
            &self.view,
            &self.worker,
            lease.lease,
            |job_type| types.contains_key(job_type),
            &self.runners,
            Instant::now(),
        );
        for (id, spec_revision) in plan.requests {
            let (Some((runner, running)), Some(record)) =
                (self.runners.get_mut(&id), self.view.jobs.get(&id).and_then(|(spec, _)| spec.record()))
            else {
                continue;
            };
            runner.run_now(record.run_now_seq);
            runner.reset_cursor(record.cursor_reset_seq);
            runner.spec_revision = spec_revision;
            self.view.hold_decoded(&id, spec_revision, &record);
            *running = record;
        }
        self.release(plan.release, lease.lease).await;
        self.release_stray(plan.stray, lease.lease).await;
        self.resume(plan.resume, lease.lease).await;
        // Counted from the registration itself, not from when this loop
        // first saw the lease: the wait overlaps the view's load. After every
        // registration, not only the first: when every worker's lease expired
        // at once (etcd overloaded), the first to register again knew no peer
        // and claimed every job (100 000 jobs: it then handed 90 000 over).
        if lease.registered.elapsed() >= FIRST_CLAIM_AFTER {
            self.claim(plan.claim, lease.lease).await;
        }
        metrics::gauge!(ingest_runtime::metrics::JOBS_OWNED).set(self.runners.len() as f64);
        self.count_owned();
    }

    /// Removes runners that ended on their own (their claim was lost): those
    /// that said so, and every 10 s any task found finished (a panic).
    async fn reap_lost(&mut self) {
        let mut lost = self.runner_ctx.take_ended();
        if self.reaped_all.elapsed() >= REAP_ALL_EVERY {
            self.reaped_all = Instant::now();
            lost.extend(self.runners.iter().filter(|(_, (r, _))| r.is_finished()).map(|(id, _)| id.clone()));
        }
        for id in lost {
            if let Some((runner, _)) = self.runners.remove(&id) {
                runner.stop().await;
                self.progress.finish(&id);
                self.decider.touch(&id);
            }
        }
    }

    /// Stops every runner at once: the lease deadline passed or the lease
    /// changed, so none of them may go on.
    async fn stop_all_lost(&mut self) {
        if self.runners.is_empty() {
            return;
        }
        tracing::warn!(worker = %self.worker, jobs = self.runners.len(), "lease deadline passed; stopping every job");
        let runners: Vec<(String, (RunnerHandle, Arc<RunSpec>))> = self.runners.drain().collect();
        futures::future::join_all(runners.into_iter().map(|(id, (runner, _))| {
            let progress = self.progress.clone();
            let worker = self.worker.clone();
            async move {
                let epoch = runner.epoch;
                runner.stop().await;
                ownership::log(Ownership::Lost, &id, &worker, epoch);
                progress.finish(&id);
            }
        }))
        .await;
        // Those that ended on their own are stopped too: none is left to reap.
        self.runner_ctx.take_ended();
        self.decider.lost_all();
    }

    /// Stops the runners of `ids`, then releases their claims with their
    /// checkpoints (none for deleted jobs, nor where the stored one is the
    /// job's state).
    async fn release(&mut self, ids: Vec<String>, lease: ingest_store::LeaseId) {
        let releases = self.stop_runners(ids).await;
        self.commit_releases(&releases, lease).await;
    }

    /// Stops the runners of `ids`: the claims to release (not those already
    /// lost), each with the checkpoint to write, if any.
    async fn stop_runners(&mut self, ids: Vec<String>) -> Vec<Release> {
        let stopping: Vec<(String, RunnerHandle)> =
            ids.into_iter().filter_map(|id| self.runners.remove(&id).map(|(r, _)| (id, r))).collect();
        if stopping.is_empty() {
            return Vec::new();
        }
        let stopped = futures::future::join_all(stopping.into_iter().map(|(id, runner)| async move {
            let epoch = runner.epoch;
            (id, epoch, runner.stop().await)
        }))
        .await;
        stopped
            .into_iter()
            .filter_map(|(id, epoch, exit)| match exit {
                RunnerExit::Stopped(checkpoint) => {
                    let checkpoint = checkpoint.filter(|_| self.view.jobs.contains_key(&id));
                    Some(Release { id, epoch, checkpoint })
                }
                RunnerExit::Lost => None,
            })
            .collect()
    }

    /// Deletes claims of mine whose jobs are gone (no runner to stop).
    async fn release_stray(&mut self, stray: Vec<(String, Revision)>, lease: ingest_store::LeaseId) {
        let releases: Vec<Release> =
            stray.into_iter().map(|(id, epoch)| Release { id, epoch, checkpoint: None }).collect();
        self.commit_releases(&releases, lease).await;
    }

    /// The claim and release transactions under `lease`.
    fn txns(&self, lease: ingest_store::LeaseId) -> ClaimTxns<'_> {
        ClaimTxns { store: self.store.as_ref(), keys: &self.keys, worker: &self.worker, lease, window: &self.window }
    }

    async fn commit_releases(&mut self, releases: &[Release], lease: ingest_store::LeaseId) {
        if releases.is_empty() {
            return;
        }
        let txns = self.txns(lease);
        match txns.release(releases).await {
            Ok(released) => {
                let epochs: HashMap<&str, Revision> = releases.iter().map(|r| (r.id.as_str(), r.epoch)).collect();
                for (id, revision) in &released {
                    ownership::log(Ownership::Release, id, &self.worker, epochs.get(id.as_str()).copied().unwrap_or(0));
                    self.view.record_release(id, *revision);
                    self.progress.finish(id);
                    self.decider.released(id);
                }
                tracing::debug!(worker = %self.worker, released = released.len(), "claims released");
            }
            // The claims stay; once the lease expires they are freed anyway.
            Err(error) => tracing::warn!(worker = %self.worker, %error, jobs = releases.len(), "cannot release claims"),
        }
    }

    /// Restarts runners for claims this worker still validly holds (after a
    /// lease scare or a spec change), resuming from their checkpoints.
    async fn resume(&mut self, resume: Vec<Resume>, lease: ingest_store::LeaseId) {
        for chunk in resume.chunks(100) {
            let gets = chunk.iter().map(|r| TxnOp::get(self.keys.state(&r.id)));
            let checkpoints = match self.store.txn(Txn::new().and_then(gets)).await {
                Ok(response) => response.responses,
                Err(error) => {
                    tracing::warn!(worker = %self.worker, %error, "cannot read checkpoints to resume jobs");
                    return;
                }
            };
            for (resume, read) in chunk.iter().zip(checkpoints) {
                let checkpoint = crate::claims::stored_checkpoint(&read);
                let Resume { id, epoch, record, spec_revision } = resume.clone();
                self.start(id, record, spec_revision, epoch, checkpoint, lease);
            }
        }
    }

    async fn claim(&mut self, claims: Vec<ClaimRequest>, lease: ingest_store::LeaseId) {
        if claims.is_empty() {
            return;
        }
        let txns = self.txns(lease);
        let claimed = match txns.claim(&claims, &self.stopping).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(worker = %self.worker, %error, jobs = claims.len(), "cannot claim jobs");
                return;
            }
        };
        // Taken or changed meanwhile: the view learns it now, not when its
        // watch gets there, and the decision does not ask again.
        let changes = self.view.apply_read(&self.keys, &claimed.seen);
        self.decider.touched(changes);
        let won = claimed.won;
        let revisions: HashMap<&str, Revision> = claims.iter().map(|c| (c.id.as_str(), c.spec_revision)).collect();
        for w in won {
            ownership::log(Ownership::Claim, &w.id, &self.worker, w.epoch);
            self.decider.claimed(&w.id);
            self.view.record_claim(&w.id, &self.worker, w.epoch, lease);
            let Some(record) = self.view.jobs.get(&w.id).and_then(|(spec, _)| spec.record()) else { continue };
            let spec_revision = revisions.get(w.id.as_str()).copied().unwrap_or(0);
            self.start(w.id, record, spec_revision, w.epoch, w.checkpoint, lease);
        }
    }

    fn start(
        &mut self,
        id: String,
        record: Arc<RunSpec>,
        spec_revision: Revision,
        epoch: Revision,
        checkpoint: Result<CheckpointRecord, String>,
        lease: ingest_store::LeaseId,
    ) {
        let lease_token = self.lease_token(lease);
        let runner = RunnerHandle::spawn(
            self.runner_ctx.clone(),
            lease,
            record.clone(),
            spec_revision,
            epoch,
            checkpoint,
            lease_token,
        );
        // Looked at again by the next decision: a job claimed by the liveness
        // fallback (another worker ranks first) starts its hand-over timer
        // there. The watch will not say so: the view already holds the
        // claim at its revision.
        self.decider.touch(&id);
        self.view.hold_decoded(&id, spec_revision, &record);
        self.runners.insert(id, (runner, record));
    }

    /// The token `guard_deadline` cancels at `lease`'s deadline (a new one
    /// after a deadline passed): each job's task holds a child of it.
    fn lease_token(&mut self, lease: ingest_store::LeaseId) -> CancellationToken {
        match &self.lease_token {
            Some((held, token)) if *held == lease && !token.is_cancelled() => token.clone(),
            _ => {
                let token = CancellationToken::new();
                let alarms = self.runner_ctx.alarms.clone();
                tokio::spawn(guard_deadline(lease, self.lease_rx.clone(), token.clone(), alarms));
                if let Some((_, old)) = self.lease_token.replace((lease, token.clone())) {
                    old.cancel();
                }
                token
            }
        }
    }

    /// Shutdown: mark draining, stop everything, release the jobs whose
    /// checkpoints have to be written with them, within the drain budget.
    /// The others' stored checkpoints are their state: the lease's revoke,
    /// once the worker leaves, frees all of them in one request (at 100 000
    /// jobs, releasing every job kept ten workers' exits waiting on etcd).
    async fn drain(mut self) {
        let Some(lease) = self.lease() else { return };
        let started = Instant::now();
        let types: Vec<String> = self.types.keys().cloned().collect();
        if let Err(error) = self.membership.set_draining(lease.lease, &types).await {
            tracing::warn!(worker = %self.worker, error = %format!("{error:#}"), "cannot mark draining");
        }
        let ids: Vec<String> = self.runners.keys().cloned().collect();
        let jobs = ids.len();
        let budget = self.config.drain_budget;
        let drain = async {
            let releases = self.stop_runners(ids).await;
            let (written, as_stored): (Vec<Release>, Vec<Release>) =
                releases.into_iter().partition(|r| r.checkpoint.is_some());
            self.commit_releases(&written, lease.lease).await;
            (written.len(), as_stored.len())
        };
        match tokio::time::timeout(budget, drain).await {
            Ok((written, left_to_revoke)) => {
                tracing::info!(worker = %self.worker, jobs, written, left_to_revoke, took = ?started.elapsed(), "drained")
            }
            Err(_) => {
                tracing::warn!(worker = %self.worker, jobs, "drain budget exceeded; the lease revoke frees the rest")
            }
        }
    }
}

/// Cancels `token` once `lease`'s local deadline passes (or another lease
/// replaces it): runners stop at the deadline by themselves, even while the
/// scheduler waits on a store without quorum. One timer for all of them,
/// re-armed at each renewal; a runner's own fence is checked whenever it
/// wakes (`fence.rs`).
async fn guard_deadline(
    lease: ingest_store::LeaseId,
    mut lease_rx: watch::Receiver<Option<LeaseState>>,
    token: CancellationToken,
    alarms: Arc<crate::runner::Alarms>,
) {
    loop {
        let state = *lease_rx.borrow_and_update();
        let Some(state) = state.filter(|s| s.lease == lease && s.deadline > Instant::now()) else { break };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep_until(state.deadline) => {}
            changed = lease_rx.changed() => if changed.is_err() { break },
        }
    }
    token.cancel();
    // Jobs without a task end now too: their claims are lost at the
    // deadline, not when the scheduler gets to them.
    alarms.expire(lease);
}

impl Running for (RunnerHandle, Arc<RunSpec>) {
    fn spec_revision(&self) -> Revision {
        self.0.spec_revision
    }

    fn record(&self) -> &RunSpec {
        &self.1
    }
}

/// The types this worker runs, by name.
pub fn type_table(entries: Vec<JobTypeEntry>) -> BTreeMap<String, (JobTypeSpec, JobTypeEntry)> {
    entries.into_iter().map(|e| (e.full_spec(), e)).map(|(spec, e)| (spec.name.clone(), (spec, e))).collect()
}
