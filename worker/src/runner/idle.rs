//! Owned jobs between runs hold no task: a job's state waits in its
//! [`JobCell`], and one [`Alarms`] clock per worker wakes it when its next
//! run is due (or a run-now request wakes it sooner). A due job waits for a
//! run slot in the clock's queue, still without a task. A task exists only
//! while a job runs, waits for its host's turn, or writes its checkpoint:
//! 10 000 idle jobs cost their state, not 10 000 tasks, and a cold start
//! that finds them all due holds one task per run slot, not one per job.
//!
//! Locks: a cell's lock may be held while taking the alarm clock's, never
//! the other way round (the clock wakes cells after letting go of its own).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ingest_model::{UnixMillis, now_millis};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ingest_store::LeaseId;

use super::{Runner, RunnerExit, Step};

/// Where one owned job is: parked between runs, or run by a task.
pub(super) struct JobCell {
    state: Mutex<State>,
}

enum State {
    /// Between runs: the job's state, and its alarm.
    Parked { runner: Box<Runner>, alarm: AlarmKey },
    /// Due, in the clock's queue for a run slot.
    Ready { runner: Box<Runner> },
    /// A task runs it (or has ended on its own: a lost claim).
    Live { cancel: CancellationToken, join: JoinHandle<Option<RunnerExit>> },
    /// Ended without a task: its lease's deadline passed while it was
    /// parked or queued (said in the ownership log then, not when the
    /// scheduler gets to it).
    Ended(RunnerExit),
    /// Taken by [`JobCell::stop`].
    Stopping,
}

/// What became of a job that asked to park.
pub(super) enum Park {
    Parked,
    /// A run-now request came meanwhile: it runs on.
    Due(Box<Runner>),
    /// It is being stopped: the task ends it.
    Stopping(Box<Runner>),
    /// Its lease's deadline passed: the claim is lost.
    Expired(Box<Runner>),
}

impl JobCell {
    /// A cell for a job just claimed: parked when its next run is not due
    /// yet, else run at once.
    pub(super) fn start(runner: Box<Runner>) -> Arc<Self> {
        let cell = Arc::new(Self { state: Mutex::new(State::Stopping) });
        {
            let mut state = cell.lock();
            *state = match runner.idle_until() {
                Some(at) => cell.parked(runner, at),
                None => cell.due(runner),
            };
        }
        cell
    }

    /// Runs a parked job now (a run-now request).
    pub(super) fn wake(self: &Arc<Self>) {
        self.wake_if(|_| true);
    }

    fn wake_by_alarm(self: &Arc<Self>, key: AlarmKey) {
        self.wake_if(|alarm| alarm == key);
    }

    fn wake_if(self: &Arc<Self>, alarm_matches: impl FnOnce(AlarmKey) -> bool) {
        let mut state = self.lock();
        let State::Parked { alarm, .. } = &*state else { return };
        if !alarm_matches(*alarm) {
            return; // an alarm of an earlier parking
        }
        let State::Parked { runner, alarm } = std::mem::replace(&mut *state, State::Stopping) else { return };
        runner.ctx.alarms.cancel(alarm);
        *state = self.due(runner);
    }

    /// Runs a job that waited in the queue, in `slot`.
    fn run_in(self: &Arc<Self>, slot: OwnedSemaphorePermit) {
        let mut state = self.lock();
        if !matches!(*state, State::Ready { .. }) {
            return; // stopped meanwhile
        }
        let State::Ready { mut runner } = std::mem::replace(&mut *state, State::Stopping) else { return };
        runner.slot = Some(slot);
        *state = self.live(runner);
    }

    /// Parks a job whose task has nothing to do until `at`.
    pub(super) fn park(self: &Arc<Self>, runner: Box<Runner>, at: UnixMillis) -> Park {
        let mut state = self.lock();
        if !matches!(*state, State::Live { .. }) {
            return Park::Stopping(runner);
        }
        if runner.lease_token.is_cancelled() {
            return Park::Expired(runner);
        }
        if runner.run_now_asked() {
            return Park::Due(runner);
        }
        *state = self.parked(runner, at);
        Park::Parked
    }

    /// Whether the parked job keeps its built instance (`None`: not parked).
    #[cfg(test)]
    pub(super) fn parked_with_instance(&self) -> Option<bool> {
        match &mut *self.lock() {
            State::Parked { runner, .. } => Some(runner.built().is_some()),
            _ => None,
        }
    }

    /// Whether it ended on its own (a lost claim, a panic).
    pub(super) fn is_finished(&self) -> bool {
        match &*self.lock() {
            State::Live { join, .. } => join.is_finished(),
            State::Ended(_) => true,
            _ => false,
        }
    }

    /// Ends a job without a task whose claim was made under `lease`, whose
    /// deadline passed: its claim is lost.
    fn expire(&self, lease: LeaseId) {
        let mut state = self.lock();
        let held = match &*state {
            State::Parked { runner, .. } | State::Ready { runner } => runner.lease == lease,
            _ => false,
        };
        if !held {
            return;
        }
        let runner = match std::mem::replace(&mut *state, State::Stopping) {
            State::Parked { runner, alarm } => {
                runner.ctx.alarms.cancel(alarm);
                runner
            }
            State::Ready { runner } => runner,
            other => {
                *state = other;
                return;
            }
        };
        *state = State::Ended(runner.finish(Some(RunnerExit::Lost)));
    }

    /// The handle is gone without a stop: the job ends where it is.
    pub(super) fn abandon(&self) {
        let state = std::mem::replace(&mut *self.lock(), State::Stopping);
        match state {
            State::Parked { runner, alarm } => {
                runner.ctx.alarms.cancel(alarm);
                runner.finish(None);
            }
            State::Ready { runner } => {
                runner.finish(None);
            }
            State::Live { cancel, .. } => cancel.cancel(),
            State::Ended(_) | State::Stopping => {}
        }
    }

    /// Stops the job wherever it is and says how it ended.
    pub(super) async fn stop(&self) -> RunnerExit {
        let state = std::mem::replace(&mut *self.lock(), State::Stopping);
        match state {
            State::Parked { runner, alarm } => {
                runner.ctx.alarms.cancel(alarm);
                runner.finish(None)
            }
            // Its place in the queue is skipped.
            State::Ready { runner } => runner.finish(None),
            State::Ended(exit) => exit,
            State::Live { cancel, join } => {
                cancel.cancel();
                match join.await {
                    Ok(Some(exit)) => exit,
                    // It cannot park once its state is taken: a bug if so.
                    Ok(None) => {
                        tracing::error!("a stopped job's task parked; its claim is left to expire");
                        RunnerExit::Lost
                    }
                    Err(error) => {
                        tracing::error!(%error, "job runner panicked");
                        RunnerExit::Lost
                    }
                }
            }
            State::Stopping => RunnerExit::Lost,
        }
    }

    fn parked(self: &Arc<Self>, mut runner: Box<Runner>, at: UnixMillis) -> State {
        // A parked job holds no cancellation of its own (each costs a node
        // in the lease token's tree); its next task gets a fresh one.
        runner.cancel = runner.lease_token.clone();
        runner.slot = None;
        let wait = Duration::from_millis(at.saturating_sub(now_millis()).max(0) as u64);
        let alarm = runner.ctx.alarms.set(Instant::now() + wait, self.clone());
        State::Parked { runner, alarm }
    }

    /// A due job: run at once when a slot is free, else queued for one
    /// (a paced job waits for its host's turn first, in its task).
    fn due(self: &Arc<Self>, mut runner: Box<Runner>) -> State {
        // One waiting for a cursor reset runs nothing and takes no slot.
        if runner.paced_host.is_none() && runner.unreadable.is_none() {
            let running = runner.ctx.running.clone();
            match running.clone().try_acquire_owned() {
                Ok(slot) => runner.slot = Some(slot),
                Err(_) => {
                    runner.ctx.alarms.queue_for_slot(self.clone(), running);
                    return State::Ready { runner };
                }
            }
        }
        self.live(runner)
    }

    fn live(self: &Arc<Self>, mut runner: Box<Runner>) -> State {
        let cancel = runner.lease_token.child_token();
        runner.cancel = cancel.clone();
        let join = tokio::spawn(run_live(runner, self.clone()));
        State::Live { cancel, join }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A job's task: runs it until it has nothing to do for a while (then it
/// parks and the task ends) or it stops. `None`: parked.
async fn run_live(mut runner: Box<Runner>, cell: Arc<JobCell>) -> Option<RunnerExit> {
    loop {
        let exit = match runner.session().await {
            Step::Idle(at) => match cell.park(runner, at) {
                Park::Parked => return None,
                Park::Due(back) => {
                    runner = back;
                    continue;
                }
                Park::Stopping(back) => {
                    runner = back;
                    None
                }
                Park::Expired(back) => {
                    runner = back;
                    Some(RunnerExit::Lost)
                }
            },
            Step::Exit(exit) => exit,
        };
        return Some(runner.finish(exit));
    }
}

/// An alarm's place in the clock: when, and a sequence number that tells
/// alarms of the same instant apart.
type AlarmKey = (Instant, u64);

/// The worker's one clock for its parked jobs, and the queue of due jobs
/// waiting for a run slot. Its tasks run only while an alarm is set or a
/// job waits.
#[derive(Default)]
pub struct Alarms {
    queue: Mutex<Queue>,
    earlier: Notify,
}

#[derive(Default)]
struct Queue {
    alarms: BTreeMap<AlarmKey, Arc<JobCell>>,
    seq: u64,
    ticking: bool,
    /// Due jobs waiting for a run slot, first come first served.
    ready: VecDeque<Arc<JobCell>>,
    dispatching: bool,
}

impl Alarms {
    fn set(self: &Arc<Self>, at: Instant, cell: Arc<JobCell>) -> AlarmKey {
        let mut queue = self.lock();
        queue.seq += 1;
        let key = (at, queue.seq);
        let first = queue.alarms.first_key_value().is_none_or(|(next, _)| key < *next);
        queue.alarms.insert(key, cell);
        if !queue.ticking {
            queue.ticking = true;
            tokio::spawn(self.clone().tick());
        } else if first {
            self.earlier.notify_one();
        }
        key
    }

    fn queue_for_slot(self: &Arc<Self>, cell: Arc<JobCell>, running: Arc<Semaphore>) {
        let mut queue = self.lock();
        queue.ready.push_back(cell);
        if !queue.dispatching {
            queue.dispatching = true;
            tokio::spawn(self.clone().dispatch(running));
        }
    }

    /// Gives each free run slot to the job that waited longest.
    async fn dispatch(self: Arc<Self>, running: Arc<Semaphore>) {
        loop {
            let slot = running.clone().acquire_owned().await;
            let mut queue = self.lock();
            let (Ok(slot), Some(cell)) = (slot, queue.ready.pop_front()) else {
                queue.dispatching = false;
                return;
            };
            drop(queue);
            cell.run_in(slot);
        }
    }

    fn cancel(&self, key: AlarmKey) {
        self.lock().alarms.remove(&key);
    }

    /// Ends every parked or queued job claimed under `lease`, whose deadline
    /// passed (the jobs that have a task end by themselves).
    pub fn expire(&self, lease: LeaseId) {
        let cells: Vec<Arc<JobCell>> = {
            let queue = self.lock();
            queue.alarms.values().chain(queue.ready.iter()).cloned().collect()
        };
        for cell in cells {
            cell.expire(lease);
        }
    }

    /// Alarms set, for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().alarms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn tick(self: Arc<Self>) {
        loop {
            let (due, next) = {
                let mut queue = self.lock();
                let later = queue.alarms.split_off(&(Instant::now(), u64::MAX));
                let due = std::mem::replace(&mut queue.alarms, later);
                let next = queue.alarms.first_key_value().map(|(key, _)| key.0);
                if next.is_none() {
                    // The next alarm set starts a new task.
                    queue.ticking = false;
                }
                (due, next)
            };
            for (key, cell) in due {
                cell.wake_by_alarm(key);
            }
            let Some(next) = next else { return };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.earlier.notified() => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
