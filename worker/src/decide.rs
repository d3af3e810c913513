//! The scheduler's decision, apart from its effects: from the cluster view,
//! the jobs this worker runs, its lease and the clock, which jobs to claim,
//! resume, hand over or release. No I/O; `scheduler.rs` carries the plan
//! out (transactions, runners). The timers that make decisions stable
//! (how long a job has waited unowned, how long a peer has ranked first,
//! the hand-over budget) live here, between calls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ingest_model::JobRecord;

use crate::spec::RunSpec;
use ingest_store::{LeaseId, Revision};
use tokio::time::Instant;

use crate::assign;
use crate::claims::ClaimRequest;
use crate::view::{Changes, ClusterView};

/// Share of its jobs a worker hands over per second when rebalancing.
const RELEASE_SHARE_PER_SECOND: f64 = 0.10;
/// Jobs a worker has handed over to one taker that it has not claimed yet,
/// at most: a hand-over goes at the pace the taker claims, not all at once
/// (at 100 000 jobs, ten workers released 9 000 jobs to a newcomer within a
/// second and the last waited 4 s unowned for its claim; with 50 each, ten
/// givers kept 500 waiting and the gap's p99 was 0.9 s; with 20, 0.13-0.25 s
/// and the join no slower: the taker claims as fast either way).
const MAX_HANDED_OVER: usize = 20;
/// A first-ranked peer still claiming holds its unowned jobs from the
/// fallback this long at most (see `Decider::first_settled_at`).
const CLAIMING_WAIT: Duration = Duration::from_secs(30);
/// A job handed over and not claimed within this long no longer holds back
/// the next (the taker may have gone).
const HANDED_OVER_WAIT: Duration = Duration::from_secs(5);

/// A job this worker runs, as the decision sees it.
pub trait Running {
    /// The spec revision the runner was built from.
    fn spec_revision(&self) -> Revision;
    /// The spec it runs.
    fn record(&self) -> &RunSpec;
}

/// A claim this worker still holds validly but runs nothing for (after a
/// lease scare or a spec change): restart it from its checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub id: String,
    pub epoch: Revision,
    pub record: Arc<RunSpec>,
    pub spec_revision: Revision,
}

/// What one reconcile does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Unowned jobs to claim.
    pub claim: Vec<ClaimRequest>,
    pub resume: Vec<Resume>,
    /// Runners to stop and claims to release with their checkpoints: paused,
    /// changed or deleted jobs, and hand-overs (paced).
    pub release: Vec<String>,
    /// Claims of mine on deleted jobs that no runner holds: (id, epoch).
    pub stray: Vec<(String, Revision)>,
    /// Runners whose spec changed only in its requests (run now, reset
    /// cursor): told, not rebuilt; (id, new spec revision).
    pub requests: Vec<(String, Revision)>,
    /// How many jobs this decision looked at.
    pub looked_at: usize,
}

/// An unowned job this worker waits to claim.
#[derive(Clone, Copy, Debug)]
struct Unowned {
    since: Instant,
    /// When the next decision looks at it again.
    due: Instant,
}

/// The decision and the timers it keeps between reconciles.
pub struct Decider {
    /// A job moves to a peer only after the peer has ranked first for it
    /// this long.
    stabilization: Duration,
    /// Rank k may claim a job unowned for k × this.
    fallback_step: Duration,
    /// Unowned jobs this worker may claim: when each was first seen
    /// unowned, and when to look at it again — at once for one it ranks
    /// first (claimed at every decision until the claim shows), else when
    /// its fallback step has passed. Not every unowned job at every
    /// decision: in a cold start of 100 000 jobs on ten workers, 90 000 are
    /// others' to claim, and ranking them again at each watch batch kept
    /// every worker busy while etcd needed the cores.
    unowned: HashMap<String, Unowned>,
    /// When this worker stopped ranking first for a job it runs.
    not_first_since: HashMap<String, Instant>,
    release_budget: f64,
    /// Jobs handed over and not yet claimed: when, and to whom.
    handed_over: HashMap<String, (Instant, String)>,
    /// When `release_budget` last grew.
    release_budget_at: Instant,
    /// Jobs changed since the last decision (spec, claim, runner): the next
    /// one looks at these and at the jobs a timer holds, not at every job.
    touched: HashSet<String>,
    /// Look at every job: at the start, after a re-list, when a worker came
    /// or went (every ranking may change), when every runner stopped.
    touched_all: bool,
}

impl Decider {
    pub fn new(stabilization: Duration, fallback_step: Duration) -> Self {
        Self {
            stabilization,
            fallback_step,
            unowned: HashMap::new(),
            not_first_since: HashMap::new(),
            release_budget: 0.0,
            handed_over: HashMap::new(),
            release_budget_at: Instant::now(),
            touched: HashSet::new(),
            touched_all: true,
        }
    }

    /// What a batch of watch events changed.
    pub fn touched(&mut self, changes: Changes) {
        if changes.workers {
            self.touched_all = true;
        } else if !self.touched_all {
            self.touched.extend(changes.jobs);
        }
    }

    /// One job changed (e.g. its runner ended).
    pub fn touch(&mut self, id: &str) {
        if !self.touched_all {
            self.touched.insert(id.to_string());
        }
    }

    /// Every job may have changed (a re-list, a new lease).
    pub fn touch_all(&mut self) {
        self.touched_all = true;
        self.touched.clear();
    }

    /// The jobs the next decision looks at: those touched, and those a
    /// timer holds that is due (waiting unowned), or ranked first by a peer.
    fn jobs_to_look_at<R>(
        &mut self,
        view: &ClusterView,
        worker: &str,
        runners: &HashMap<String, R>,
        now: Instant,
    ) -> Vec<String> {
        if std::mem::take(&mut self.touched_all) {
            self.touched.clear();
            let mine = view.claims.iter().filter(|(_, (c, _))| &*c.worker == worker).map(|(id, _)| id);
            let all: HashSet<&String> = view.jobs.keys().chain(runners.keys()).chain(mine).collect();
            return all.into_iter().cloned().collect();
        }
        let mut ids = std::mem::take(&mut self.touched);
        ids.extend(self.unowned.iter().filter(|(_, u)| u.due <= now).map(|(id, _)| id.clone()));
        ids.extend(self.not_first_since.keys().cloned());
        ids.into_iter().collect()
    }

    /// The plan for `worker` holding `lease` at `now`; `runs` says which job
    /// types it runs.
    pub fn decide<R: Running>(
        &mut self,
        view: &ClusterView,
        worker: &str,
        lease: LeaseId,
        runs: impl Fn(&str) -> bool,
        runners: &HashMap<String, R>,
        now: Instant,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut rebalance = Vec::new();
        let mut candidates: HashMap<&str, Vec<assign::Candidate<'_>>> = HashMap::new();
        let ids = self.jobs_to_look_at(view, worker, runners, now);
        plan.looked_at = ids.len();
        for id in ids {
            let Some((spec, spec_revision)) = view.jobs.get(&id) else {
                // Deleted: stop its runner, or drop my claim no runner holds.
                self.unowned.remove(&id);
                if runners.contains_key(&id) {
                    plan.release.push(id);
                } else if let Some((c, _)) =
                    view.claims.get(&id).filter(|(c, _)| &*c.worker == worker && c.lease == lease)
                {
                    plan.stray.push((id, c.epoch));
                }
                continue;
            };
            let candidates = candidates.entry(&spec.job_type).or_insert_with(|| view.candidates(&spec.job_type));
            let position = assign::position(view.rank_key(&id), worker, candidates);
            match view.claims.get(&id).map(|(c, _)| c) {
                None if spec.paused || position.is_none() => {
                    // A paused job waits for no one; one this worker may not
                    // run is not its to watch (a worker that may will come
                    // with a change of workers).
                    self.unowned.remove(&id);
                }
                None => {
                    let since = self.unowned.get(&id).map_or(now, |u| u.since);
                    // Rank k steps in for a first-ranked peer that has had the
                    // stabilization period to claim and has not.
                    let may_claim_at = match position {
                        Some(p) if p > 0 => {
                            let fallback = since + self.fallback_step * p as u32;
                            let settled = self.first_settled_at(view, &id, candidates, p, since);
                            settled.map_or(fallback, |settled| settled.max(fallback))
                        }
                        _ => since,
                    };
                    let due = if may_claim_at > now {
                        may_claim_at
                    } else if runs(&spec.job_type) {
                        plan.claim.push(ClaimRequest { id: id.clone(), spec_revision: *spec_revision });
                        now
                    } else {
                        // Ranked here for a type this worker does not run
                        // (its record says otherwise): look again now and then.
                        now + self.stabilization
                    };
                    self.unowned.insert(id.clone(), Unowned { since, due });
                }
                Some(claim) if &*claim.worker == worker && claim.lease == lease => {
                    self.unowned.remove(&id);
                    if spec.paused {
                        plan.release.push(id.clone());
                        continue;
                    }
                    match runners.get(&id) {
                        None => {
                            if let Some(record) = spec.record() {
                                let (epoch, spec_revision) = (claim.epoch, *spec_revision);
                                plan.resume.push(Resume { id: id.clone(), epoch, record, spec_revision });
                            }
                        }
                        // Same spec revision: nothing to compare.
                        Some(runner) if runner.spec_revision() == *spec_revision => {}
                        Some(runner) => match spec.record() {
                            Some(record) if only_requests_changed(runner.record(), &record) => {
                                plan.requests.push((id.clone(), *spec_revision));
                            }
                            Some(record) if runner.record() != record.as_ref() => {
                                plan.release.push(id.clone()); // rebuilt from the new spec once released
                            }
                            _ => {}
                        },
                    }
                    if position == Some(0) {
                        self.not_first_since.remove(&id);
                    } else {
                        let since = *self.not_first_since.entry(id.clone()).or_insert(now);
                        if now.duration_since(since) >= self.stabilization
                            && let Some(taker) = assign::first(view.rank_key(&id), candidates)
                        {
                            rebalance.push((id, taker.to_string()));
                        }
                    }
                }
                Some(_) => {
                    self.unowned.remove(&id);
                }
            }
        }
        // No sweep of `unowned`: a job claimed, deleted or paused is touched
        // by the change and leaves above; one that is not leaves when due.
        self.not_first_since.retain(|id, _| runners.contains_key(id));

        // Hand over at a bounded pace, so a join does not stop everything at
        // once: the budget grows with the time elapsed (not with how often
        // this runs) and holds at most one second's worth, so a join after
        // a quiet period moves 10 % per second too.
        let per_second = (runners.len().max(10) as f64) * RELEASE_SHARE_PER_SECOND;
        let elapsed = now.duration_since(self.release_budget_at).as_secs_f64();
        self.release_budget = (self.release_budget + per_second * elapsed).min(per_second);
        self.release_budget_at = now;
        // And no faster than each taker claims.
        self.handed_over.retain(|id, (at, _)| {
            now.duration_since(*at) < HANDED_OVER_WAIT && view.jobs.contains_key(id) && !view.claims.contains_key(id)
        });
        let mut waiting: HashMap<String, usize> = HashMap::new();
        for (_, taker) in self.handed_over.values() {
            *waiting.entry(taker.clone()).or_default() += 1;
        }
        for (id, taker) in rebalance {
            if self.release_budget < 1.0 {
                break;
            }
            let waits = waiting.entry(taker.clone()).or_default();
            if *waits >= MAX_HANDED_OVER {
                continue;
            }
            *waits += 1;
            self.release_budget -= 1.0;
            self.handed_over.insert(id.clone(), (now, taker));
            plan.release.push(id);
        }
        plan
    }

    /// A claim was won: the job no longer waits.
    pub fn claimed(&mut self, id: &str) {
        self.unowned.remove(id);
    }

    /// A claim was released (or every job lost): its hand-over timer ends.
    pub fn released(&mut self, id: &str) {
        self.not_first_since.remove(id);
        self.touch(id);
    }

    /// Every runner stopped at once: every claim of mine is looked at again
    /// (resumed if still valid).
    pub fn lost_all(&mut self) {
        self.not_first_since.clear();
        self.touch_all();
    }

    /// When rank `position` may step in for the worker ranked first for
    /// `job`, unowned since `since`: once that worker has been known for the
    /// stabilization period (a slow starter is not robbed of its jobs), and
    /// has claimed nothing for that long plus a fallback step per rank after
    /// the first (a peer whose claims still come is working through its
    /// share: in a cold start of 100 000 jobs each of ten workers claims its
    /// 10 000 over 5-20 s, and peers stepping in after 2 s took thousands
    /// and handed them back for minutes; on a loaded etcd a claim can take
    /// 2 s) — but no later than [`CLAIMING_WAIT`] after `since`, for a peer
    /// that claims everything but this job. `None` when it is not known.
    fn first_settled_at(
        &self,
        view: &ClusterView,
        job: &str,
        candidates: &[assign::Candidate<'_>],
        position: usize,
        since: Instant,
    ) -> Option<Instant> {
        let first = assign::first(view.rank_key(job), candidates)?;
        let settled = *view.first_seen.get(first)? + self.stabilization;
        let claiming = view.last_claim.get(first).map(|at| {
            (*at + self.stabilization + self.fallback_step * (position as u32 - 1)).min(since + CLAIMING_WAIT)
        });
        Some(claiming.map_or(settled, |claiming| claiming.max(settled)))
    }
}

/// Whether the only change is a run-now or cursor-reset request, or the
/// job's labels (which the work does not use): the runner is told, no
/// rebuild needed (relabelling 10 000 jobs restarts none of them).
fn only_requests_changed(running: &RunSpec, now: &RunSpec) -> bool {
    let requests = JobRecord {
        run_now_seq: now.run_now_seq,
        labels: now.labels.clone(),
        cursor_reset_seq: now.cursor_reset_seq,
        update_time: now.update_time,
        ..(**running).clone()
    };
    requests == **now && running.params() == now.params()
}

#[cfg(test)]
mod tests;
