//! A checker over the ownership events that workers log under the target
//! `ingest::ownership` (see `ingest_worker::ownership`), one JSON object per
//! line (tracing-subscriber's JSON format with flattened fields).
//!
//! A cluster test collects every worker's log, notes when it killed a worker
//! with SIGKILL (take [`mono_now_ns`] after the child was reaped: the dead
//! worker then counts as running until the latest instant it could have run),
//! builds a [`History`] and asserts on it:
//!
//! ```no_run
//! # use ingest_testkit::ownership::*;
//! # let (logs, killed_at, from, to) = (vec!["w1.log"], 0u64, 0u64, 0u64);
//! let history = History::new(parse_files(&logs), &[("w2", killed_at)]);
//! history.check_single_owner().unwrap();
//! history.check_epochs_monotonic().unwrap();
//! history.gaps(from, to, true).check_max_gap(std::time::Duration::from_secs(5)).unwrap();
//! ```
//!
//! Times are CLOCK_MONOTONIC nanoseconds, comparable across the processes of
//! one machine. Failures print times in ms after the first logged event.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

/// The tracing target of ownership events.
pub const TARGET: &str = "ingest::ownership";

/// CLOCK_MONOTONIC in nanoseconds: the clock of the workers' `mono_ns`.
pub fn mono_now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// The `own` field of an ownership event: the kinds the workers log.
pub use ingest_model::ownership::Ownership as EventKind;

/// One ownership event of one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipEvent {
    pub kind: EventKind,
    pub job: String,
    pub worker: String,
    /// The claim's etcd create revision.
    pub epoch: i64,
    pub mono_ns: u64,
}

/// Parses one log line; `None` for anything that is not a complete ownership
/// event (other targets, garbage, a line cut short by SIGKILL). Fields are
/// read at the top level (flattened) or, failing that, under `"fields"`.
pub fn parse_line(line: &str) -> Option<OwnershipEvent> {
    let Ok(Value::Object(top)) = serde_json::from_str::<Value>(line.trim()) else {
        return None;
    };
    if top.get("target").and_then(Value::as_str) != Some(TARGET) {
        return None;
    }
    let nested = top.get("fields").and_then(Value::as_object);
    let get = |key: &str| top.get(key).or_else(|| nested.and_then(|f| f.get(key)));
    Some(OwnershipEvent {
        kind: EventKind::parse(get("own")?.as_str()?)?,
        job: text(get("job")?)?,
        worker: text(get("worker")?)?,
        epoch: number(get("epoch")?)?,
        mono_ns: number(get("mono_ns")?)?,
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number<T: FromStr>(value: &Value) -> Option<T> {
    match value {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The ownership events in `text`, in line order; every other line is skipped.
pub fn parse_lines(text: &str) -> Vec<OwnershipEvent> {
    text.lines().filter_map(parse_line).collect()
}

/// The ownership events in a log file (invalid UTF-8 is tolerated). Panics
/// when the file cannot be read.
pub fn parse_file(path: impl AsRef<Path>) -> Vec<OwnershipEvent> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read ownership log {}: {e}", path.display()));
    parse_lines(&String::from_utf8_lossy(&bytes))
}

/// The ownership events of several log files, concatenated.
pub fn parse_files<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Vec<OwnershipEvent> {
    paths.into_iter().flat_map(parse_file).collect()
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The worker logged `stop`.
    Stopped,
    /// The worker process died (a death passed to [`History::new`]).
    Died,
    /// The worker logged another `start` without a `stop` (an anomaly).
    Restarted,
    /// Still running when the logs end.
    Running,
}

/// A running interval: one worker running one job, from `start` until its
/// `stop`, its death, or (`end_ns == None`) the end of the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub job: String,
    pub worker: String,
    pub epoch: i64,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub end: RunEnd,
    /// Whether the worker logged `lost` during the run.
    pub lost: bool,
}

impl Run {
    fn end_or_max(&self) -> u64 {
        self.end_ns.unwrap_or(u64::MAX)
    }

    /// Whether the worker was running the job at `t` (start inclusive, end
    /// exclusive: at a handover instant the new owner owns the job).
    pub fn contains(&self, t: u64) -> bool {
        self.start_ns <= t && t < self.end_or_max()
    }
}

/// A check's failure: every problem found, one line each.
pub struct CheckError {
    pub check: &'static str,
    pub problems: Vec<String>,
    origin_ns: u64,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} failed: {} problem(s) (times: ms after the first event, mono_ns {})",
            self.check,
            self.problems.len(),
            self.origin_ns
        )?;
        for problem in self.problems.iter().take(50) {
            writeln!(f, "  - {problem}")?;
        }
        if self.problems.len() > 50 {
            writeln!(f, "  ... and {} more", self.problems.len() - 50)?;
        }
        Ok(())
    }
}

// Debug prints the readable message, so `.unwrap()` in a test shows it as is.
impl fmt::Debug for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CheckError {}

fn outcome(check: &'static str, origin_ns: u64, problems: Vec<String>) -> Result<(), CheckError> {
    if problems.is_empty() { Ok(()) } else { Err(CheckError { check, problems, origin_ns }) }
}

fn ms(t: u64, origin_ns: u64) -> String {
    format!("t={:.3}ms", (i128::from(t) - i128::from(origin_ns)) as f64 / 1e6)
}

fn describe(run: &Run, origin_ns: u64) -> String {
    let end = match (run.end, run.end_ns) {
        (RunEnd::Running, _) | (_, None) => "still running".to_string(),
        (RunEnd::Stopped, Some(t)) => format!("stopped {}", ms(t, origin_ns)),
        (RunEnd::Died, Some(t)) => format!("died {}", ms(t, origin_ns)),
        (RunEnd::Restarted, Some(t)) => format!("restarted without stop {}", ms(t, origin_ns)),
    };
    let lost = if run.lost { ", had logged lost" } else { "" };
    format!("{} (epoch {}, started {}, {end}{lost})", run.worker, run.epoch, ms(run.start_ns, origin_ns))
}

/// A job changing owner: a run of `to` starting when the job's previous run
/// (by start time) was another worker's, or the job's first run (`from: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub job: String,
    pub from: Option<String>,
    pub to: String,
    pub at_ns: u64,
    pub epoch: i64,
}

/// An interval during which no worker ran a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub job: String,
    pub from_ns: u64,
    pub to_ns: u64,
    /// The run that ended the latest before the gap, if any.
    pub before: Option<Run>,
    /// The run that ended the gap (`None` for a gap at the end of the window).
    pub after: Option<Run>,
}

impl Gap {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.to_ns - self.from_ns)
    }

    fn describe(&self, origin_ns: u64) -> String {
        let before = self.before.as_ref().map_or("never ran before".to_string(), |r| describe(r, origin_ns));
        let after =
            self.after.as_ref().map_or("not running at the window's end".to_string(), |r| describe(r, origin_ns));
        format!(
            "job {}: unowned {:.3}ms from {} to {}; before: {before}; after: {after}",
            self.job,
            self.duration().as_secs_f64() * 1e3,
            ms(self.from_ns, origin_ns),
            ms(self.to_ns, origin_ns)
        )
    }
}

/// The unowned gaps of all jobs within a window (see [`History::gaps`]).
#[derive(Clone, Debug)]
pub struct GapReport {
    pub max: Duration,
    /// Nearest-rank 99th percentile of the gap lengths.
    pub p99: Duration,
    pub count: usize,
    /// The 10 longest gaps, longest first.
    pub worst: Vec<(String, Duration)>,
    /// Every gap, by job then time.
    pub gaps: Vec<Gap>,
    origin_ns: u64,
}

impl GapReport {
    /// Fails listing every gap longer than `bound`.
    pub fn check_max_gap(&self, bound: Duration) -> Result<(), CheckError> {
        let mut long: Vec<&Gap> = self.gaps.iter().filter(|g| g.duration() > bound).collect();
        long.sort_by_key(|g| std::cmp::Reverse(g.duration()));
        let problems = long.iter().map(|g| format!("{} (bound {bound:?})", g.describe(self.origin_ns))).collect();
        outcome("check_max_gap", self.origin_ns, problems)
    }
}

impl fmt::Display for GapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} gaps, max {:?}, p99 {:?}", self.count, self.max, self.p99)?;
        let mut gaps: Vec<&Gap> = self.gaps.iter().collect();
        gaps.sort_by_key(|g| std::cmp::Reverse(g.duration()));
        for gap in gaps.iter().take(10) {
            writeln!(f, "  {}", gap.describe(self.origin_ns))?;
        }
        Ok(())
    }
}

/// The runs of every job, reconstructed from the events of all workers.
#[derive(Clone, Debug)]
pub struct History {
    events: Vec<OwnershipEvent>,
    runs: BTreeMap<String, Vec<Run>>,
    anomalies: Vec<String>,
    origin_ns: u64,
}

impl History {
    /// Builds the runs from the events of all workers (any order) and the
    /// instants worker processes died without logging `stop` (`(worker,
    /// mono_ns)`). A death ends the runs of that worker open at that time; a
    /// worker restarted under the same name starts new runs after it.
    pub fn new(mut events: Vec<OwnershipEvent>, deaths: &[(&str, u64)]) -> History {
        events.sort_by_key(|e| e.mono_ns);
        let origin_ns = events.first().map_or(0, |e| e.mono_ns);
        let mut death_times: HashMap<&str, Vec<u64>> = HashMap::new();
        for &(worker, t) in deaths {
            death_times.entry(worker).or_default().push(t);
        }
        death_times.values_mut().for_each(|times| times.sort_unstable());
        // The first death of `worker` in [from, before).
        let death_in = |worker: &str, from: u64, before: u64| {
            death_times.get(worker).and_then(|times| times.iter().copied().find(|&d| from <= d && d < before))
        };

        let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        let mut open: BTreeMap<(String, String), Run> = BTreeMap::new();
        let mut anomalies = Vec::new();
        let finish = |runs: &mut BTreeMap<String, Vec<Run>>, mut run: Run, end_ns: Option<u64>, end: RunEnd| {
            run.end_ns = end_ns;
            run.end = end;
            runs.entry(run.job.clone()).or_default().push(run);
        };
        for e in &events {
            runs.entry(e.job.clone()).or_default();
            let key = (e.job.clone(), e.worker.clone());
            let t = e.mono_ns;
            if let Some(run) = open.remove(&key) {
                match death_in(&e.worker, run.start_ns, t) {
                    Some(d) => finish(&mut runs, run, Some(d), RunEnd::Died),
                    None => {
                        open.insert(key.clone(), run);
                    }
                }
            }
            match e.kind {
                EventKind::Start => {
                    if let Some(run) = open.remove(&key) {
                        anomalies.push(format!(
                            "job {}: {} started again with epoch {} at {} without a stop",
                            e.job,
                            describe(&run, origin_ns),
                            e.epoch,
                            ms(t, origin_ns)
                        ));
                        finish(&mut runs, run, Some(t), RunEnd::Restarted);
                    }
                    let run = Run {
                        job: e.job.clone(),
                        worker: e.worker.clone(),
                        epoch: e.epoch,
                        start_ns: t,
                        end_ns: None,
                        end: RunEnd::Running,
                        lost: false,
                    };
                    open.insert(key, run);
                }
                EventKind::Stop => match open.remove(&key) {
                    Some(run) => finish(&mut runs, run, Some(t), RunEnd::Stopped),
                    None => anomalies.push(format!(
                        "job {}: {} logged stop (epoch {}) at {} while not running",
                        e.job,
                        e.worker,
                        e.epoch,
                        ms(t, origin_ns)
                    )),
                },
                EventKind::Lost => {
                    if let Some(run) = open.get_mut(&key) {
                        run.lost = true;
                    }
                }
                EventKind::Claim | EventKind::Release | EventKind::Write => {}
            }
        }
        for ((_, worker), run) in open {
            match death_in(&worker, run.start_ns, u64::MAX) {
                Some(d) => finish(&mut runs, run, Some(d), RunEnd::Died),
                None => finish(&mut runs, run, None, RunEnd::Running),
            }
        }
        for job_runs in runs.values_mut() {
            job_runs.sort_by(|a, b| (a.start_ns, &a.worker).cmp(&(b.start_ns, &b.worker)));
        }
        History { events, runs, anomalies, origin_ns }
    }

    /// All events, by time.
    pub fn events(&self) -> &[OwnershipEvent] {
        &self.events
    }

    /// Every job that appears in any event.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.runs.keys().map(String::as_str)
    }

    /// The runs of `job`, by start time.
    pub fn runs(&self, job: &str) -> &[Run] {
        self.runs.get(job).map_or(&[], Vec::as_slice)
    }

    /// The time of the first event: failures print times relative to it.
    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    /// No `start` while the same worker already runs the job, no `stop`
    /// without a run: the events tell a consistent story per worker.
    pub fn check_well_formed(&self) -> Result<(), CheckError> {
        outcome("check_well_formed", self.origin_ns, self.anomalies.clone())
    }

    /// At most one worker runs a job at any instant (a run may start at the
    /// very instant another ends).
    pub fn check_single_owner(&self) -> Result<(), CheckError> {
        let mut problems = Vec::new();
        for (job, runs) in &self.runs {
            for (i, a) in runs.iter().enumerate() {
                // Runs are sorted by start: once one starts after `a` ends, all later ones do.
                for b in runs[i + 1..].iter().take_while(|b| b.start_ns < a.end_or_max()) {
                    if a.worker != b.worker {
                        let until = a.end_or_max().min(b.end_or_max());
                        let until = if until == u64::MAX {
                            "the end of the logs".to_string()
                        } else {
                            ms(until, self.origin_ns)
                        };
                        problems.push(format!(
                            "job {job}: two owners from {} until {until}: {} and {}",
                            ms(b.start_ns, self.origin_ns),
                            describe(a, self.origin_ns),
                            describe(b, self.origin_ns)
                        ));
                    }
                }
            }
        }
        outcome("check_single_owner", self.origin_ns, problems)
    }

    /// Per job: the epochs of successive starts never decrease, two workers
    /// never start with the same epoch, and every `write` happens during a
    /// run of its worker and carries that run's epoch.
    pub fn check_epochs_monotonic(&self) -> Result<(), CheckError> {
        let o = self.origin_ns;
        let mut problems = Vec::new();
        for (job, runs) in &self.runs {
            for pair in runs.windows(2) {
                if pair[1].epoch < pair[0].epoch {
                    problems.push(format!(
                        "job {job}: epoch went backwards: {} after {}",
                        describe(&pair[1], o),
                        describe(&pair[0], o)
                    ));
                }
            }
            let mut first_with_epoch: HashMap<i64, &Run> = HashMap::new();
            for run in runs {
                match first_with_epoch.entry(run.epoch) {
                    Entry::Vacant(slot) => {
                        slot.insert(run);
                    }
                    Entry::Occupied(first) if first.get().worker != run.worker => problems.push(format!(
                        "job {job}: two workers started with epoch {}: {} and {}",
                        run.epoch,
                        describe(first.get(), o),
                        describe(run, o)
                    )),
                    Entry::Occupied(_) => {}
                }
            }
        }
        for e in self.events.iter().filter(|e| e.kind == EventKind::Write) {
            let t = e.mono_ns;
            let current =
                self.runs(&e.job).iter().rfind(|r| r.worker == e.worker && r.start_ns <= t && t <= r.end_or_max());
            match current {
                None => problems.push(format!(
                    "job {}: {} wrote with epoch {} at {} while not running the job",
                    e.job,
                    e.worker,
                    e.epoch,
                    ms(t, o)
                )),
                Some(run) if run.epoch != e.epoch => problems.push(format!(
                    "job {}: {} wrote with epoch {} at {} during its run {}",
                    e.job,
                    e.worker,
                    e.epoch,
                    ms(t, o),
                    describe(run, o)
                )),
                Some(_) => {}
            }
        }
        outcome("check_epochs_monotonic", o, problems)
    }

    /// The unowned gaps of every job within `[from_ns, to_ns]`: between
    /// consecutive runs, from `from_ns` to the first start when the job was
    /// not running at `from_ns`, and, with `include_tail`, from the last
    /// run's end to `to_ns` when the job is not running at `to_ns` (a job
    /// that never runs in the window then has one gap: the whole window).
    /// Zero-length handovers are not gaps.
    pub fn gaps(&self, from_ns: u64, to_ns: u64, include_tail: bool) -> GapReport {
        let mut gaps = Vec::new();
        for (job, runs) in &self.runs {
            let mut cursor = from_ns;
            let mut latest_end: Option<&Run> = None;
            let mut next = None;
            for run in runs {
                if run.start_ns >= to_ns {
                    next = Some(run);
                    break;
                }
                if run.start_ns > cursor {
                    gaps.push(Gap {
                        job: job.clone(),
                        from_ns: cursor,
                        to_ns: run.start_ns,
                        before: latest_end.cloned(),
                        after: Some(run.clone()),
                    });
                }
                if latest_end.is_none_or(|l| run.end_or_max() > l.end_or_max()) {
                    latest_end = Some(run);
                }
                cursor = cursor.max(run.end_or_max());
            }
            if include_tail && cursor < to_ns {
                let (before, after) = (latest_end.cloned(), next.cloned());
                gaps.push(Gap { job: job.clone(), from_ns: cursor, to_ns, before, after });
            }
        }
        let mut lengths: Vec<Duration> = gaps.iter().map(Gap::duration).collect();
        lengths.sort_unstable();
        let p99 = match lengths.len() {
            0 => Duration::ZERO,
            n => lengths[(n * 99).div_ceil(100) - 1],
        };
        let mut worst: Vec<(String, Duration)> = gaps.iter().map(|g| (g.job.clone(), g.duration())).collect();
        worst.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        worst.truncate(10);
        GapReport {
            max: lengths.last().copied().unwrap_or_default(),
            p99,
            count: gaps.len(),
            worst,
            gaps,
            origin_ns: self.origin_ns,
        }
    }

    /// Which worker runs each job at `t` (jobs run by nobody are absent; were
    /// two running, the later-started one).
    pub fn owners_at(&self, t: u64) -> HashMap<String, String> {
        self.runs
            .iter()
            .filter_map(|(job, runs)| runs.iter().rfind(|r| r.contains(t)).map(|r| (job.clone(), r.worker.clone())))
            .collect()
    }

    /// Every owner change with the new run starting in `(t1, t2]`, by time,
    /// including intermediate ones (A→B→C gives two moves); a worker
    /// restarting its own job is not a move. `from` is the worker of the
    /// job's previous run even if that ended earlier (a gap in between).
    pub fn moves_between(&self, t1: u64, t2: u64) -> Vec<Move> {
        let mut moves = Vec::new();
        for (job, runs) in &self.runs {
            let mut owner: Option<&str> = None;
            for run in runs.iter().take_while(|r| r.start_ns <= t2) {
                if run.start_ns > t1 && owner != Some(run.worker.as_str()) {
                    moves.push(Move {
                        job: job.clone(),
                        from: owner.map(str::to_string),
                        to: run.worker.clone(),
                        at_ns: run.start_ns,
                        epoch: run.epoch,
                    });
                }
                owner = Some(&run.worker);
            }
        }
        moves.sort_by_key(|m| m.at_ns);
        moves
    }

    /// Every job in `jobs` is being run by some worker at `t`.
    pub fn check_all_running_at(&self, t: u64, jobs: &[String]) -> Result<(), CheckError> {
        self.check_running_at(t, jobs, 0)
    }

    /// Every job in `jobs` is being run at `t`, or is being handed over
    /// then: its run stopped at most `gap_ns` before `t` and the next started
    /// at most `gap_ns` after (rebalancing goes on while a cluster settles).
    pub fn check_all_running_or_handed_over_at(&self, t: u64, jobs: &[String], gap_ns: u64) -> Result<(), CheckError> {
        self.check_running_at(t, jobs, gap_ns)
    }

    fn check_running_at(&self, t: u64, jobs: &[String], gap_ns: u64) -> Result<(), CheckError> {
        let o = self.origin_ns;
        let owners = self.owners_at(t);
        let mut problems = Vec::new();
        let handed_over = |job: &str| {
            let runs = self.runs(job);
            let stopped = runs
                .iter()
                .rfind(|r| r.start_ns <= t)
                .is_some_and(|r| r.end == RunEnd::Stopped && r.end_ns.is_some_and(|end| end <= t && t - end <= gap_ns));
            let next = runs.iter().find(|r| r.start_ns > t).is_some_and(|r| r.start_ns - t <= gap_ns);
            gap_ns > 0 && stopped && next
        };
        for job in jobs.iter().filter(|job| !owners.contains_key(*job) && !handed_over(job)) {
            let runs = self.runs(job);
            let last =
                runs.iter().rfind(|r| r.start_ns <= t).map_or("never ran before".to_string(), |r| describe(r, o));
            let next = runs.iter().find(|r| r.start_ns > t).map_or("none".to_string(), |r| describe(r, o));
            problems.push(format!("job {job}: not running at {}; last run: {last}; next run: {next}", ms(t, o)));
        }
        outcome("check_all_running_at", o, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log times in the tests: ms after an arbitrary monotonic base.
    const BASE: u64 = 1_000_000_000_000;

    fn at(ms: u64) -> u64 {
        BASE + ms * 1_000_000
    }

    /// A line as tracing-subscriber's flattened JSON writes it.
    fn line(own: &str, job: &str, worker: &str, epoch: i64, ms: u64) -> String {
        format!(
            r#"{{"timestamp":"2025-06-01T10:00:00.000000Z","level":"INFO","message":"ownership","own":"{own}","job":"{job}","worker":"{worker}","epoch":{epoch},"mono_ns":{},"target":"ingest::ownership"}}"#,
            at(ms)
        )
    }

    fn history(lines: &[String], deaths: &[(&str, u64)]) -> History {
        History::new(parse_lines(&lines.join("\n")), deaths)
    }

    #[test]
    fn parses_ownership_lines_and_skips_everything_else() {
        let text = [
            line("claim", "j1", "w1", 7, 1),
            "not json at all".to_string(),
            r#"{"level":"INFO","message":"listening","target":"ingest::worker"}"#.to_string(),
            r#"{"own":"start","job":"j1","worker":"w1","epoch":7,"target":"ingest::ownership"}"#.to_string(), // no mono_ns
            r#"{"own":"bogus","job":"j1","worker":"w1","epoch":7,"mono_ns":5,"target":"ingest::ownership"}"#
                .to_string(),
            r#"[1,2,3]"#.to_string(),
            String::new(),
            // Nested (non-flattened) fields are read too.
            r#"{"fields":{"own":"start","job":"j1","worker":"w1","epoch":7,"mono_ns":9},"target":"ingest::ownership"}"#
                .to_string(),
            line("stop", "j1", "w1", 7, 3)[..60].to_string(), // cut short by SIGKILL
        ]
        .join("\n");
        let events = parse_lines(&text);
        assert_eq!(
            events,
            vec![
                OwnershipEvent {
                    kind: EventKind::Claim,
                    job: "j1".into(),
                    worker: "w1".into(),
                    epoch: 7,
                    mono_ns: at(1)
                },
                OwnershipEvent { kind: EventKind::Start, job: "j1".into(), worker: "w1".into(), epoch: 7, mono_ns: 9 },
            ]
        );
    }

    #[test]
    fn parses_files_with_invalid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w1.log");
        let mut bytes = line("start", "j1", "w1", 3, 0).into_bytes();
        bytes.extend_from_slice(b"\n\xff\xfe garbage\n");
        bytes.extend_from_slice(line("stop", "j1", "w1", 3, 10).as_bytes());
        std::fs::write(&path, bytes).unwrap();
        let events = parse_files([&path]);
        assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Start, EventKind::Stop]);
    }

    #[test]
    fn clean_handover_has_one_owner() {
        let h = history(
            &[
                line("claim", "j1", "w1", 5, 0),
                line("start", "j1", "w1", 5, 1),
                line("write", "j1", "w1", 5, 50),
                line("release", "j1", "w1", 5, 99),
                line("stop", "j1", "w1", 5, 100),
                line("claim", "j1", "w2", 9, 100),
                line("start", "j1", "w2", 9, 100), // touching: fine
                line("write", "j1", "w2", 9, 150),
            ],
            &[],
        );
        h.check_well_formed().unwrap();
        h.check_single_owner().unwrap();
        h.check_epochs_monotonic().unwrap();
        assert_eq!(h.runs("j1").len(), 2);
        assert_eq!(h.runs("j1")[1].end, RunEnd::Running);
    }

    #[test]
    fn overlap_is_reported_with_job_workers_epochs_and_times() {
        let h = history(
            &[
                line("start", "j1", "w1", 5, 0),
                line("start", "j1", "w2", 9, 80),
                line("lost", "j1", "w1", 5, 120),
                line("stop", "j1", "w1", 5, 130),
                line("start", "j2", "w1", 6, 0),
            ],
            &[],
        );
        let error = h.check_single_owner().unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        let message = error.to_string();
        for needle in ["job j1", "w1 (epoch 5", "w2 (epoch 9", "from t=80.000ms until t=130.000ms", "lost"] {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
    }

    #[test]
    fn death_ends_runs_and_restarted_worker_runs_again() {
        let lines = [
            line("start", "j1", "w1", 5, 0),
            line("start", "j2", "w1", 6, 0),
            // w1 killed at 100 ms, no stop; w2 takes j1 at 150 ms.
            line("start", "j1", "w2", 9, 150),
            // w1 restarted under the same name, takes j2 at 300 ms.
            line("start", "j2", "w1", 12, 300),
        ];
        let h = history(&lines, &[("w1", at(100))]);
        h.check_well_formed().unwrap();
        h.check_single_owner().unwrap();
        let j2 = h.runs("j2");
        assert_eq!((j2[0].end, j2[0].end_ns), (RunEnd::Died, Some(at(100))));
        assert_eq!((j2[1].end, j2[1].end_ns), (RunEnd::Running, None));
        // Killed too late: w1 still counts as running j1 when w2 starts it.
        let late = history(&lines, &[("w1", at(200))]);
        let error = late.check_single_owner().unwrap_err();
        assert!(error.to_string().contains("died t=200.000ms"), "{error}");
    }

    #[test]
    fn epoch_regressions_duplicates_and_bad_writes_are_reported() {
        let good = history(&[line("start", "j1", "w1", 5, 0), line("stop", "j1", "w1", 5, 10)], &[]);
        good.check_epochs_monotonic().unwrap();
        let h = history(
            &[
                line("start", "j1", "w1", 9, 0),
                line("write", "j1", "w1", 8, 5), // stale epoch
                line("stop", "j1", "w1", 9, 10),
                line("write", "j1", "w1", 9, 15), // after stop
                line("start", "j1", "w2", 7, 20), // regression
                line("stop", "j1", "w2", 7, 30),
                line("start", "j2", "w1", 4, 0),
                line("stop", "j2", "w1", 4, 10),
                line("start", "j2", "w3", 4, 20), // same epoch, other worker
            ],
            &[],
        );
        let error = h.check_epochs_monotonic().unwrap_err();
        let message = error.to_string();
        assert_eq!(error.problems.len(), 4, "{message}");
        for needle in [
            "job j1: epoch went backwards: w2 (epoch 7",
            "job j2: two workers started with epoch 4",
            "w1 wrote with epoch 8 at t=5.000ms during its run w1 (epoch 9",
            "w1 wrote with epoch 9 at t=15.000ms while not running",
        ] {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
    }

    #[test]
    fn gaps_are_measured_including_death_truncated_runs() {
        let h = history(
            &[
                line("start", "j1", "w1", 1, 0),
                line("stop", "j1", "w1", 1, 100),
                line("start", "j1", "w2", 2, 130), // 30 ms gap
                line("start", "j2", "w2", 3, 50),  // window starts at 10: 40 ms leading gap
                // j3 runs on w3, killed at 200, taken over at 700: 500 ms gap.
                line("start", "j3", "w3", 4, 0),
                line("start", "j3", "w1", 5, 700),
                // j4 stops at 900 and never restarts: 100 ms tail gap.
                line("start", "j4", "w1", 6, 0),
                line("stop", "j4", "w1", 6, 900),
            ],
            &[("w3", at(200))],
        );
        let report = h.gaps(at(10), at(1000), false);
        assert_eq!(report.count, 3, "{report}");
        assert_eq!(report.max, Duration::from_millis(500));
        assert_eq!(report.p99, Duration::from_millis(500));
        assert_eq!(report.worst[0], ("j3".to_string(), Duration::from_millis(500)));
        let j3 = report.gaps.iter().find(|g| g.job == "j3").unwrap();
        assert_eq!((j3.from_ns, j3.to_ns), (at(200), at(700)));
        assert_eq!(j3.before.as_ref().unwrap().end, RunEnd::Died);
        let with_tail = h.gaps(at(10), at(1000), true);
        assert_eq!(with_tail.count, 4);
        assert!(with_tail.gaps.iter().any(|g| g.job == "j4" && g.duration() == Duration::from_millis(100)));

        report.check_max_gap(Duration::from_millis(500)).unwrap();
        let error = report.check_max_gap(Duration::from_millis(35)).unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        let message = error.to_string();
        assert!(message.contains("job j3: unowned 500.000ms from t=200.000ms to t=700.000ms"), "{message}");
        assert!(message.contains("w3 (epoch 4, started t=0.000ms, died t=200.000ms)"), "{message}");
        assert!(message.contains("job j2: unowned 40.000ms"), "{message}");
    }

    #[test]
    fn owners_and_moves_on_join() {
        // w1, w2 own j1..j4; w3 joins at 1000 ms and takes j2 and j4.
        let mut lines = Vec::new();
        for (job, worker, epoch) in [("j1", "w1", 1), ("j2", "w1", 2), ("j3", "w2", 3), ("j4", "w2", 4)] {
            lines.push(line("start", job, worker, epoch, 0));
        }
        lines.extend([
            line("stop", "j2", "w1", 2, 1100),
            line("start", "j2", "w3", 10, 1120),
            line("stop", "j4", "w2", 4, 1200),
            line("start", "j4", "w3", 11, 1250),
            // w1 restarting its own job is not a move.
            line("stop", "j1", "w1", 1, 1300),
            line("start", "j1", "w1", 12, 1310),
        ]);
        let h = history(&lines, &[]);
        let before = h.owners_at(at(999));
        assert_eq!(before["j2"], "w1");
        assert_eq!(before.len(), 4);
        let during = h.owners_at(at(1110));
        assert!(!during.contains_key("j2"));
        let moves = h.moves_between(at(1000), at(2000));
        let summary: Vec<_> = moves.iter().map(|m| (m.job.as_str(), m.from.as_deref(), m.to.as_str())).collect();
        assert_eq!(summary, [("j2", Some("w1"), "w3"), ("j4", Some("w2"), "w3")]);
        assert!(moves.iter().all(|m| m.to == "w3"));
        assert_eq!(h.owners_at(at(1120))["j2"], "w3"); // at the instant of the handover

        let jobs: Vec<String> = ["j1", "j2", "j3", "j4"].map(String::from).to_vec();
        h.check_all_running_at(at(2000), &jobs).unwrap();
        let error = h.check_all_running_at(at(1110), &jobs).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert!(error.to_string().contains("job j2: not running at t=1110.000ms"), "{error}");
        assert!(error.to_string().contains("next run: w3 (epoch 10"), "{error}");
        // A hand-over in progress at t passes when its gap is within bounds.
        h.check_all_running_or_handed_over_at(at(1110), &jobs, 50_000_000).unwrap();
        assert!(h.check_all_running_or_handed_over_at(at(1110), &jobs, 5_000_000).is_err());
    }

    #[test]
    fn moves_count_intermediate_owners_and_first_starts() {
        let h = history(
            &[
                line("start", "j1", "w1", 1, 10),
                line("stop", "j1", "w1", 1, 20),
                line("start", "j1", "w2", 2, 30),
                line("stop", "j1", "w2", 2, 40),
                line("start", "j1", "w1", 3, 50),
            ],
            &[],
        );
        let moves = h.moves_between(at(0), at(100));
        let summary: Vec<_> = moves.iter().map(|m| (m.from.as_deref(), m.to.as_str(), m.epoch)).collect();
        assert_eq!(summary, [(None, "w1", 1), (Some("w1"), "w2", 2), (Some("w2"), "w1", 3)]);
        assert_eq!(h.owners_at(at(100)), h.owners_at(at(10)));
    }

    #[test]
    fn malformed_sequences_are_reported() {
        let h = history(
            &[line("stop", "j1", "w1", 1, 0), line("start", "j1", "w1", 1, 5), line("start", "j1", "w1", 2, 9)],
            &[],
        );
        let error = h.check_well_formed().unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        assert_eq!(h.runs("j1")[0].end, RunEnd::Restarted);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = mono_now_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = mono_now_ns();
        assert!(a > 0 && b >= a + 2_000_000, "{a} {b}");
    }
}
