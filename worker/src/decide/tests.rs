use std::time::Duration;

use ingest_model::{WorkerRecord, WorkerState};

use super::*;
use crate::spec::RunSpec;
use crate::view::{Claim, JobSpec};

const ME: &str = "me";
const PEER: &str = "peer";
const LEASE: LeaseId = 7;
const STABLE: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_secs(2);

/// A runner as the decision sees it: the spec revision and record it runs.
struct Runs(Revision, RunSpec);

impl Running for Runs {
    fn spec_revision(&self) -> Revision {
        self.0
    }

    fn record(&self) -> &RunSpec {
        &self.1
    }
}

fn record(id: &str) -> JobRecord {
    ingest_testkit::job_record(id, "demo")
}

/// A view with `workers` (all running demo, first seen at `seen`) and jobs
/// `job-0` … `job-<n-1>`, none claimed.
fn view(workers: &[&str], jobs: usize, seen: Instant) -> ClusterView {
    let mut view = ClusterView::default();
    for name in workers {
        view.workers.insert(name.to_string(), (demo_worker(name), 1));
        view.first_seen.insert(name.to_string(), seen);
    }
    for i in 0..jobs {
        let id = format!("job-{i}");
        view.jobs.insert(id.clone(), (JobSpec::stored(&record(&id)), 10));
    }
    view
}

/// An active worker running demo.
fn demo_worker(name: &str) -> WorkerRecord {
    WorkerRecord {
        name: name.to_string(),
        state: WorkerState::Active,
        weight: 1.0,
        types: vec!["demo".into()],
        version: "test".into(),
        start_time: 0,
    }
}

fn claim(view: &mut ClusterView, id: &str, worker: &str) {
    view.claims.insert(id.into(), (Claim { worker: worker.into(), epoch: 20, lease: LEASE }, 20));
}

/// The jobs of `view` that rank `worker` first.
fn first_for(view: &ClusterView, worker: &str) -> Vec<String> {
    let candidates = view.candidates("demo");
    let mut ids: Vec<String> =
        view.jobs.keys().filter(|id| crate::assign::position(id, worker, &candidates) == Some(0)).cloned().collect();
    ids.sort();
    ids
}

fn claimed(plan: &Plan) -> Vec<String> {
    let mut ids: Vec<String> = plan.claim.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids
}

/// Every job of `view` claimed by me, with a runner of its spec.
fn run_every_job(view: &mut ClusterView) -> HashMap<String, Runs> {
    let mut runners = HashMap::new();
    for id in view.jobs.keys().cloned().collect::<Vec<_>>() {
        claim(view, &id, ME);
        runners.insert(id.clone(), Runs(10, record(&id).into()));
    }
    runners
}

fn no_runners() -> HashMap<String, Runs> {
    HashMap::new()
}

#[test]
fn a_worker_claims_what_ranks_it_first_and_steps_in_for_a_silent_peer() {
    let t0 = Instant::now();
    let view = view(&[ME, PEER], 40, t0);
    let mine = first_for(&view, ME);
    assert!(!mine.is_empty() && mine.len() < 40, "both workers rank first somewhere");
    let mut decider = Decider::new(STABLE, STEP);
    let plan = decider.decide(&view, ME, LEASE, |t| t == "demo", &no_runners(), t0);
    assert_eq!(claimed(&plan), mine, "first-ranked jobs at once, nothing of the peer's");
    // Until the peer's jobs are due, a decision looks only at the jobs still
    // to claim here (the claims above were not carried out): 100 000 jobs
    // of ten workers cost each worker its own tenth per decision.
    let plan = decider.decide(&view, ME, LEASE, |t| t == "demo", &no_runners(), t0 + STEP);
    assert_eq!((plan.looked_at, claimed(&plan)), (mine.len(), mine.clone()));
    // The peer has been known long enough and has not claimed its jobs: rank
    // 1 steps in after one fallback step.
    let later = t0 + STABLE.max(STEP);
    let plan = decider.decide(&view, ME, LEASE, |t| t == "demo", &no_runners(), later);
    assert_eq!(plan.claim.len(), 40, "every unowned job once the peer stayed silent");
    // A type this worker does not run is never claimed.
    let mut other = Decider::new(STABLE, STEP);
    assert!(other.decide(&view, ME, LEASE, |_| false, &no_runners(), later).claim.is_empty());
}

#[test]
fn a_newly_seen_first_ranked_peer_is_not_robbed_of_its_jobs() {
    let t0 = Instant::now();
    let mut view = view(&[ME, PEER], 40, t0);
    let mut decider = Decider::new(STABLE, STEP);
    decider.decide(&view, ME, LEASE, |_| true, &no_runners(), t0);
    // The peer just appeared: its jobs wait for it through the stabilization.
    let just_now = t0 + STEP * 2;
    view.first_seen.insert(PEER.into(), just_now);
    let plan = decider.decide(&view, ME, LEASE, |_| true, &no_runners(), just_now);
    assert_eq!(claimed(&plan), first_for(&view, ME));
}

/// A first-ranked peer whose claims still come in is working through its
/// share (slowly, in a cold start on a loaded etcd): its unowned jobs wait
/// for it, until it has claimed nothing for the stabilization period (plus
/// a fallback step per rank after the first), or at most `CLAIMING_WAIT`.
#[test]
fn a_peer_still_claiming_is_not_stepped_in_for() {
    let t0 = Instant::now();
    let mut view = view(&[ME, PEER], 40, t0);
    let theirs = first_for(&view, PEER);
    let mut decider = Decider::new(STABLE, STEP);
    decider.decide(&view, ME, LEASE, |_| true, &no_runners(), t0);
    // Past the stabilization and the fallback step, the peer's claims keep
    // coming: none of its jobs is claimed here.
    let mut now = t0 + STABLE;
    for _ in 0..5 {
        view.last_claim.insert(PEER.into(), now);
        now += STABLE - Duration::from_millis(1);
        let plan = decider.decide(&view, ME, LEASE, |_| true, &no_runners(), now);
        assert!(claimed(&plan).iter().all(|id| !theirs.contains(id)), "the peer is still claiming");
    }
    // It went quiet: the stabilization period later (rank 1), its jobs are
    // claimed.
    let quiet = now + Duration::from_millis(1);
    let plan = decider.decide(&view, ME, LEASE, |_| true, &no_runners(), quiet);
    assert!(theirs.iter().all(|id| claimed(&plan).contains(id)), "the quiet peer's jobs are stepped in for");
    // A peer that claims without end holds them no longer than CLAIMING_WAIT.
    let mut decider = Decider::new(STABLE, STEP);
    decider.decide(&view, ME, LEASE, |_| true, &no_runners(), t0);
    let late = t0 + CLAIMING_WAIT;
    view.last_claim.insert(PEER.into(), late);
    let plan = decider.decide(&view, ME, LEASE, |_| true, &no_runners(), late);
    assert!(theirs.iter().all(|id| claimed(&plan).contains(id)));
}

#[test]
fn claims_without_runners_resume_paused_or_changed_jobs_are_released_requests_are_told() {
    let t0 = Instant::now();
    let mut view = view(&[ME], 4, t0);
    for i in 0..4 {
        claim(&mut view, &format!("job-{i}"), ME);
    }
    // job-0: claimed, no runner → resume. job-1: paused → release.
    // job-2: only a run-now request and its labels changed → told (no
    // restart). job-3: params changed → release.
    let mut paused = record("job-1");
    paused.paused = true;
    view.jobs.insert("job-1".into(), (JobSpec::stored(&paused), 11));
    let mut runners = HashMap::new();
    let mut asked = record("job-2");
    asked.run_now_seq = 1;
    asked.update_time = 5;
    asked.labels.insert("team".into(), "news".into());
    view.jobs.insert("job-2".into(), (JobSpec::stored(&asked), 11));
    runners.insert("job-2".to_string(), Runs(10, record("job-2").into()));
    let mut changed = record("job-3");
    changed.params.insert("items_per_run".into(), 5.into());
    view.jobs.insert("job-3".into(), (JobSpec::stored(&changed), 11));
    runners.insert("job-3".to_string(), Runs(10, record("job-3").into()));
    // A runner of a deleted job, and a claim of mine on another deleted one.
    runners.insert("gone".to_string(), Runs(10, record("gone").into()));
    claim(&mut view, "gone-too", ME);

    let plan = Decider::new(STABLE, STEP).decide(&view, ME, LEASE, |_| true, &runners, t0);
    assert_eq!(plan.resume.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["job-0"]);
    assert_eq!(plan.resume[0].epoch, 20);
    let mut released = plan.release.clone();
    released.sort();
    assert_eq!(released, ["gone", "job-1", "job-3"]);
    assert_eq!(plan.requests, [("job-2".to_string(), 11)]);
    assert_eq!(plan.stray, [("gone-too".to_string(), 20)]);
    assert!(plan.claim.is_empty());
    // A claim under another lease of mine (an old one) is not mine to run.
    let plan = Decider::new(STABLE, STEP).decide(&view, ME, LEASE + 1, |_| true, &runners, t0);
    assert!(plan.resume.is_empty() && plan.requests.is_empty(), "{plan:?}");
}

#[test]
fn hand_overs_wait_for_the_stabilization_and_go_at_a_tenth_per_second() {
    let t0 = Instant::now();
    // 150 jobs: a second's budget (15) stays under the hand-over bound.
    let mut view = view(&[ME, PEER], 150, t0);
    let theirs = first_for(&view, PEER);
    let mut runners = run_every_job(&mut view);
    let mut decider = Decider::new(STABLE, STEP);
    let runs = |_: &str| true;
    assert!(decider.decide(&view, ME, LEASE, runs, &runners, t0).release.is_empty(), "not before stabilization");
    // Past the stabilization: the budget holds one second's worth, 10 % of 150.
    let mut at = t0 + STABLE;
    let first = decider.decide(&view, ME, LEASE, runs, &runners, at).release;
    const { assert!(MAX_HANDED_OVER > 15) };
    assert_eq!(first.len(), 15, "one second's worth, however long it was quiet");
    assert!(first.iter().all(|id| theirs.contains(id)), "only jobs that rank the peer first move");
    // Half a second later: half of that.
    at += Duration::from_millis(500);
    let moved: std::collections::HashSet<String> = first.into_iter().collect();
    for id in &moved {
        runners.remove(id);
        decider.released(id);
        claim(&mut view, id, PEER); // the taker claimed it
    }
    let next = decider.decide(&view, ME, LEASE, runs, &runners, at).release;
    let expected = (runners.len() as f64 * 0.1 * 0.5) as usize;
    assert_eq!(next.len(), expected.min(theirs.len() - moved.len()));
    assert!(next.iter().all(|id| !moved.contains(id)));
}

/// A hand-over goes at the pace the taker claims: at most `MAX_HANDED_OVER`
/// jobs handed over to it and not yet claimed, whatever the budget; each claim makes
/// room, and a taker that claims nothing for 5 s holds nothing back.
#[test]
fn hand_overs_wait_for_the_taker_to_claim() {
    let t0 = Instant::now();
    let mut view = view(&[ME, PEER], 4000, t0);
    let mut runners = run_every_job(&mut view);
    let mut decider = Decider::new(STABLE, STEP);
    let runs = |_: &str| true;
    assert!(decider.decide(&view, ME, LEASE, runs, &runners, t0).release.is_empty());
    let mut hand_over = |view: &mut ClusterView, runners: &mut HashMap<String, Runs>, at| {
        let released = decider.decide(view, ME, LEASE, runs, runners, at).release;
        for id in &released {
            runners.remove(id);
            view.claims.remove(id);
            decider.released(id);
        }
        released
    };
    let first = hand_over(&mut view, &mut runners, t0 + STABLE);
    assert_eq!(first.len(), MAX_HANDED_OVER, "the budget (400) is capped by what the peer has not claimed");
    let at = t0 + STABLE + Duration::from_secs(1);
    assert!(hand_over(&mut view, &mut runners, at).is_empty(), "none claimed: none more");
    let claimed = MAX_HANDED_OVER / 2;
    for id in &first[..claimed] {
        claim(&mut view, id, PEER);
    }
    let next = hand_over(&mut view, &mut runners, at + Duration::from_millis(250));
    assert_eq!(next.len(), claimed, "each claim makes room for one more");
    assert!(next.iter().all(|id| !first.contains(id)));
    let later = hand_over(&mut view, &mut runners, t0 + STABLE * 2 + Duration::from_millis(1));
    assert_eq!(
        later.len(),
        MAX_HANDED_OVER - claimed,
        "the first ones waited 5 s: they hold nothing back, the {claimed} newer do"
    );
}

/// A decision looks at what changed and at what a timer holds, not at every
/// job: 100 000 settled jobs cost nothing per tick.
#[test]
fn a_decision_looks_only_at_what_changed_or_waits() {
    let t0 = Instant::now();
    let mut view = view(&[ME], 100, t0);
    let runners = run_every_job(&mut view);
    let mut decider = Decider::new(STABLE, STEP);
    let runs = |_: &str| true;
    let first = decider.decide(&view, ME, LEASE, runs, &runners, t0);
    assert_eq!((first.looked_at, first.release.len(), first.claim.len()), (100, 0, 0), "{first:?}");
    let settled = decider.decide(&view, ME, LEASE, runs, &runners, t0);
    assert_eq!(settled, Plan::default(), "nothing changed, nothing looked at");

    // One spec changes, one job is deleted: those two are looked at.
    let mut changed = record("job-5");
    changed.params.insert("items_per_run".into(), 5.into());
    view.jobs.insert("job-5".into(), (JobSpec::stored(&changed), 11));
    view.jobs.remove("job-7");
    decider.touched(Changes { workers: false, jobs: vec!["job-5".into(), "job-7".into()] });
    let plan = decider.decide(&view, ME, LEASE, runs, &runners, t0);
    let mut released = plan.release.clone();
    released.sort();
    assert_eq!((plan.looked_at, released), (2, vec!["job-5".to_string(), "job-7".to_string()]));

    // A peer joins: every job is looked at once, then only those waiting to
    // move (their hand-over timers) until they have moved.
    view.workers.insert(PEER.into(), (demo_worker(PEER), 30));
    decider.touched(Changes { workers: true, jobs: Vec::new() });
    assert_eq!(decider.decide(&view, ME, LEASE, runs, &runners, t0).looked_at, 100, "job-7's runner is still here");
    let theirs = first_for(&view, PEER).len();
    assert!(theirs > 0);
    let waiting = decider.decide(&view, ME, LEASE, runs, &runners, t0 + Duration::from_secs(1));
    assert_eq!(waiting.looked_at, theirs, "only the jobs waiting to move");
}

/// The bound is per taker: a worker hands over to each peer at that peer's
/// pace (a worker that held every job feeds all the others at once).
#[test]
fn hand_overs_are_bounded_per_taker() {
    let t0 = Instant::now();
    let mut view = view(&[ME, PEER, "peer-2"], 4000, t0);
    let runners = run_every_job(&mut view);
    let mut decider = Decider::new(STABLE, STEP);
    assert!(decider.decide(&view, ME, LEASE, |_| true, &runners, t0).release.is_empty());
    let released = decider.decide(&view, ME, LEASE, |_| true, &runners, t0 + STABLE).release;
    let (to_peer, to_other): (Vec<&String>, Vec<&String>) =
        released.iter().partition(|id| first_for(&view, PEER).contains(*id));
    assert_eq!((to_peer.len(), to_other.len()), (MAX_HANDED_OVER, MAX_HANDED_OVER), "{released:?}");
    assert!(to_other.iter().all(|id| first_for(&view, "peer-2").contains(*id)));
}
