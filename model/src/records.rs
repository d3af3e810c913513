//! What is stored under the keys other than the job spec: secrets, worker
//! registrations, claims, counters and checkpoints (all JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Secret parameters of one job, under `secrets/<id>`. `Debug` shows names
/// only: secret values never reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsRecord {
    pub values: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsRecord").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[default]
    Active,
    Draining,
}

/// A worker's registration under `workers/<name>`, attached to its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub name: String,
    pub state: WorkerState,
    pub weight: f64,
    /// Job types this worker can run.
    pub types: Vec<String>,
    pub version: String,
    pub start_time: UnixMillis,
}

/// A worker's load under `load/<name>`, attached to its lease, rewritten
/// every few seconds (apart from the registration, so that peers watching
/// registrations see no churn).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// When it was sampled: its age is the worker's heartbeat age.
    pub time: UnixMillis,
    /// CPU used since the previous sample, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Jobs owned, by type.
    #[serde(default)]
    pub jobs_by_type: BTreeMap<String, u32>,
}

/// A document the index refused, under `dead/<job>/<letter>` (written by
/// the job's owner; control lists, flags for replay and purges). The whole
/// letter is in the object store under `key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// The document's id in the index.
    pub id: String,
    pub index: String,
    pub status: u16,
    pub reason: String,
    pub key: String,
    pub time: UnixMillis,
    /// The document's start, for display.
    #[serde(default)]
    pub preview: String,
    pub bytes: u64,
    /// Asked to be sent again; the owner does it and removes the record
    /// (or records the new refusal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

/// Dead letters listed per job; refusals past it are in the object store
/// only (and counted on the job).
pub const MAX_DEAD_LETTERS_PER_JOB: usize = 1000;

/// A dry run of a job, asked of one worker under `previews/<id>` (attached
/// to the asking control server's lease, so an abandoned one vanishes); the
/// worker writes its answer into the same record. Nothing of the run is
/// delivered, checkpointed or counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreviewRecord {
    /// The worker asked to run it.
    pub worker: String,
    /// The job's id: an existing job's (its checkpoint's cursor and its
    /// stored secrets are used), or a fresh one.
    pub job_id: String,
    pub existing: bool,
    pub job_type: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Secret values given with the request, stored like a secrets record
    /// (sealed, bound to the preview's id, when control has a key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<u8>,
    pub max_documents: u32,
    /// The run is cut at this time.
    pub deadline: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<PreviewResult>,
}

/// What a dry run found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreviewResult {
    /// The first documents it would write, as the index would get them.
    pub documents: Vec<PreviewDocument>,
    /// Documents it would write in all.
    pub documents_total: u64,
    /// Raw payloads and media it would archive, and their bytes (gzipped).
    pub objects: u64,
    pub object_bytes: u64,
    pub items_fetched: u64,
    pub items_filtered: u64,
    pub bytes_fetched: u64,
    pub warnings: Vec<String>,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cursor the job would store after this run.
    pub cursor: serde_json::Value,
    pub duration_ms: u64,
    /// Documents left out of `documents` to keep the answer small.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreviewDocument {
    pub id: String,
    pub index: String,
    pub document: serde_json::Map<String, serde_json::Value>,
}

/// The owner shown for a claim whose record does not decode: the claim (its
/// key, lease and revision) still holds the job. No worker bears this name
/// (names are DNS labels).
pub const UNREADABLE_OWNER: &str = "(unreadable claim record)";

/// A claim under `owners/<id>`, attached to the owner's lease. Its create
/// revision is the claim's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub worker: String,
}

/// Ingestion counters of one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub items_fetched: u64,
    #[serde(default)]
    pub items_written: u64,
    #[serde(default)]
    pub items_failed: u64,
    #[serde(default)]
    pub bytes_fetched: u64,
    #[serde(default)]
    pub runs: u64,
    /// Runs that failed (failures to build the job included): the job's
    /// errors, as opposed to items refused by the index.
    #[serde(default)]
    pub runs_failed: u64,
    /// Items the job's own rules left out (e.g. an rss job's keep/drop
    /// filters): fetched, not written, on purpose.
    #[serde(default)]
    pub items_filtered: u64,
}

impl Counters {
    /// Adds `other`, saturating: counters come from workers over the wire and
    /// must never panic a process by overflowing.
    pub fn add(&mut self, other: &Counters) {
        *self = self.zip(other, u64::saturating_add);
    }

    /// Per-field maximum.
    pub fn max(&self, other: &Counters) -> Counters {
        self.zip(other, u64::max)
    }

    /// Per-field `self - other`, saturating at zero.
    pub fn saturating_sub(&self, other: &Counters) -> Counters {
        self.zip(other, u64::saturating_sub)
    }

    fn zip(&self, other: &Counters, f: impl Fn(u64, u64) -> u64) -> Counters {
        Counters {
            items_fetched: f(self.items_fetched, other.items_fetched),
            items_written: f(self.items_written, other.items_written),
            items_failed: f(self.items_failed, other.items_failed),
            bytes_fetched: f(self.bytes_fetched, other.bytes_fetched),
            runs: f(self.runs, other.runs),
            runs_failed: f(self.runs_failed, other.runs_failed),
            items_filtered: f(self.items_filtered, other.items_filtered),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub time: UnixMillis,
    pub message: String,
}

/// Counters and outcomes of one job under `stats/<id>` (written by control,
/// in batches), as readers see it. The stored JSON also holds the claim
/// bookkeeping of [`StatsLedger`], which readers ignore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    /// Lifetime totals of the job, over all its claims.
    #[serde(default)]
    pub counters: Counters,
    #[serde(default)]
    pub last_success: Option<UnixMillis>,
    #[serde(default)]
    pub last_error: Option<ErrorRecord>,
    /// Failed runs in a row up to the latest run, counted over the run
    /// history (so at most [`MAX_RUNS`]); 0 after a success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StatsRecord {
    /// The last run failed: there is an error newer than the last success.
    pub fn is_failing(&self) -> bool {
        match (&self.last_error, self.last_success) {
            (Some(err), Some(ok)) => err.time > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The whole record under `stats/<id>` as control writes it: the
/// [`StatsRecord`] readers decode, plus what makes folding reports
/// idempotent. `stats.counters` is always `base` plus the totals of the
/// current claim `epoch`. Records without `epoch` and `base` (written before
/// they existed) read as epoch 0, base 0. A separate type rather than two
/// more `StatsRecord` fields so that readers and code building a
/// `StatsRecord` stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsLedger {
    #[serde(flatten)]
    pub stats: StatsRecord,
    /// The claim whose totals `stats.counters - base` are; 0 when none yet.
    #[serde(default)]
    pub epoch: i64,
    /// Lifetime totals of every claim before `epoch`.
    #[serde(default)]
    pub base: Counters,
}

/// What a job's owner reports: totals since its claim `epoch` (not deltas),
/// so a repeated, lost or reordered report is harmless.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimProgress {
    pub epoch: i64,
    pub totals: Counters,
    pub last_success: Option<UnixMillis>,
    pub last_error: Option<ErrorRecord>,
    /// Runs finished under this claim that control has not acknowledged
    /// yet, oldest first (at most [`MAX_RUNS`]).
    pub runs: Vec<RunRecord>,
}

impl ClaimProgress {
    /// Merges another report of the same claim: totals only grow within a
    /// claim, so the per-field maximum is the latest whatever the arrival
    /// order; outcomes keep the newest. Reports of other claims are not
    /// merged (returns false).
    pub fn merge(&mut self, other: &ClaimProgress) -> bool {
        if other.epoch != self.epoch {
            return false;
        }
        self.totals = self.totals.max(&other.totals);
        self.last_success = newest_success(self.last_success, other.last_success);
        self.last_error = newest_error(self.last_error.take(), other.last_error.as_ref());
        merge_runs(&mut self.runs, &other.runs);
        true
    }
}

/// Runs kept per job: its history (`runs/<id>`) and the unacknowledged runs
/// a report carries.
pub const MAX_RUNS: usize = 50;

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    #[default]
    Succeeded,
    /// Succeeded, with something the user should see (`message`).
    Warning,
    Failed,
}

/// One run of a job, for its history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The claim it ran under, and its number under that claim (1, 2, …):
    /// together they name the run, so a run reported twice is kept once.
    pub epoch: i64,
    pub seq: u64,
    /// The worker that ran it (set by control from the report).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    pub start: UnixMillis,
    pub duration_ms: u64,
    pub outcome: RunOutcome,
    /// This run's counters (`runs` is 1).
    pub counters: Counters,
    /// The error of a failed run, the warning of a run that succeeded with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The last [`MAX_RUNS`] runs of a job under `runs/<id>` (written by
/// control, in batches with the job's stats), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsRecord {
    #[serde(default)]
    pub runs: Vec<RunRecord>,
}

impl RunsRecord {
    /// Adds runs not held yet; returns whether anything changed.
    pub fn add(&mut self, runs: &[RunRecord]) -> bool {
        merge_runs(&mut self.runs, runs)
    }

    /// Failed runs in a row at the end of the history.
    pub fn consecutive_failures(&self) -> u32 {
        self.runs.iter().rev().take_while(|r| r.outcome == RunOutcome::Failed).count() as u32
    }
}

/// Adds the runs of `more` not in `runs` (by epoch and number), keeping the
/// newest [`MAX_RUNS`] in start order. Returns whether any was added.
fn merge_runs(runs: &mut Vec<RunRecord>, more: &[RunRecord]) -> bool {
    let mut added = false;
    for run in more {
        if !runs.iter().any(|r| r.epoch == run.epoch && r.seq == run.seq) {
            runs.push(run.clone());
            added = true;
        }
    }
    if added {
        runs.sort_by_key(|r| (r.start, r.epoch, r.seq));
        let excess = runs.len().saturating_sub(MAX_RUNS);
        runs.drain(..excess);
    }
    added
}

fn newest_success(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    a.max(b)
}

fn newest_error(held: Option<ErrorRecord>, other: Option<&ErrorRecord>) -> Option<ErrorRecord> {
    match (held, other) {
        (Some(held), Some(other)) if other.time > held.time => Some(other.clone()),
        (None, Some(other)) => Some(other.clone()),
        (held, _) => held,
    }
}

impl StatsLedger {
    /// Totals of the current claim.
    pub fn claim_totals(&self) -> Counters {
        self.stats.counters.saturating_sub(&self.base)
    }

    /// Folds one report in; returns whether anything changed. Idempotent:
    /// folding a report twice, or an older report of the same claim after a
    /// newer one, changes nothing. A newer claim starts from the lifetime
    /// totals so far; a report of an older claim is stale and ignored.
    pub fn fold(&mut self, report: &ClaimProgress) -> bool {
        if report.epoch < self.epoch {
            return false;
        }
        let before = self.clone();
        if report.epoch > self.epoch {
            self.base = self.stats.counters;
            self.epoch = report.epoch;
        }
        let mut counters = self.base;
        counters.add(&self.claim_totals().max(&report.totals));
        let stats = &mut self.stats;
        stats.counters = counters;
        stats.last_success = newest_success(stats.last_success, report.last_success);
        stats.last_error = newest_error(stats.last_error.take(), report.last_error.as_ref());
        *self != before
    }
}

/// A job's checkpoint under `state/<id>` (written by the owner, fenced by its
/// epoch). `cursor` is the job type's own business.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    #[serde(default)]
    pub next_run: Option<UnixMillis>,
    /// The last `JobRecord::run_now_seq` served, so a run-now request is
    /// served once even across a handoff.
    #[serde(default)]
    pub run_now_seen: u64,
    /// The last `JobRecord::cursor_reset_seq` served.
    #[serde(default)]
    pub cursor_reset_seen: u64,
    #[serde(default)]
    pub cursor: serde_json::Value,
    /// The format version of `cursor`: its type's cursor version when it
    /// was written (absent: 1, the first format of every type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_version: Option<u32>,
}

impl CheckpointRecord {
    /// A stored checkpoint; one that does not decode is an error to show,
    /// never a silent fresh start (that would re-read or skip data).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("checkpoint unreadable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(items_fetched: u64, runs: u64) -> Counters {
        Counters { items_fetched, runs, ..Default::default() }
    }

    fn report(epoch: i64, items_fetched: u64, runs: u64) -> ClaimProgress {
        ClaimProgress { epoch, totals: totals(items_fetched, runs), ..Default::default() }
    }

    fn run(epoch: i64, seq: u64, start: UnixMillis) -> RunRecord {
        RunRecord { epoch, seq, start, ..Default::default() }
    }

    #[test]
    fn a_run_reported_twice_is_kept_once_and_only_the_newest_are_kept() {
        let mut history = RunsRecord::default();
        assert!(history.add(&[run(5, 1, 100), run(5, 2, 200)]));
        assert!(!history.add(&[run(5, 2, 200)]), "the same run again changes nothing");
        assert!(history.add(&[run(9, 1, 150)]), "another claim's first run is another run");
        let order: Vec<(i64, u64)> = history.runs.iter().map(|r| (r.epoch, r.seq)).collect();
        assert_eq!(order, [(5, 1), (9, 1), (5, 2)], "in start order");
        let many: Vec<RunRecord> = (1..=70).map(|seq| run(9, seq + 1, 1_000 + seq as i64)).collect();
        assert!(history.add(&many));
        assert_eq!(history.runs.len(), MAX_RUNS);
        assert_eq!(history.runs.first().map(|r| r.seq), Some(22), "the oldest went first");
        assert_eq!(history.runs.last().map(|r| r.seq), Some(71));
        // Merging reports unions their runs the same way.
        let mut held = ClaimProgress { epoch: 3, runs: vec![run(3, 1, 10)], ..Default::default() };
        let later = ClaimProgress { epoch: 3, runs: vec![run(3, 1, 10), run(3, 2, 20)], ..Default::default() };
        assert!(held.merge(&later));
        assert_eq!(held.runs.len(), 2);
        // Failures in a row, counted from the newest run back.
        let outcome = |seq: u64, outcome: RunOutcome| RunRecord { outcome, ..run(1, seq, seq as i64) };
        let mut history = RunsRecord::default();
        assert_eq!(history.consecutive_failures(), 0);
        history.add(&[outcome(1, RunOutcome::Failed), outcome(2, RunOutcome::Succeeded)]);
        assert_eq!(history.consecutive_failures(), 0);
        history.add(&[outcome(3, RunOutcome::Failed), outcome(4, RunOutcome::Failed)]);
        assert_eq!(history.consecutive_failures(), 2);
        history.add(&[outcome(5, RunOutcome::Warning)]);
        assert_eq!(history.consecutive_failures(), 0, "a warning is a success");
    }

    #[test]
    fn latest_totals_of_a_claim_win_and_repeats_change_nothing() {
        let mut ledger = StatsLedger::default();
        assert!(ledger.fold(&report(7, 10, 1)));
        assert!(ledger.fold(&report(7, 25, 2)));
        assert_eq!((ledger.epoch, ledger.stats.counters), (7, totals(25, 2)));
        assert!(!ledger.fold(&report(7, 25, 2)), "a repeated report must change nothing");
        assert_eq!(ledger.stats.counters, totals(25, 2));
    }

    #[test]
    fn an_older_report_of_the_same_claim_never_decreases_a_counter() {
        let mut ledger = StatsLedger::default();
        ledger.fold(&report(7, 25, 1));
        // Reordered: fewer items but one more run (fields grow independently).
        ledger.fold(&report(7, 10, 2));
        assert_eq!(ledger.stats.counters, totals(25, 2));
    }

    #[test]
    fn a_new_claim_adds_to_the_lifetime_totals_and_old_claims_are_stale() {
        let mut ledger = StatsLedger::default();
        ledger.fold(&report(7, 25, 2));
        assert!(ledger.fold(&report(12, 5, 1)));
        assert_eq!((ledger.epoch, ledger.base, ledger.stats.counters), (12, totals(25, 2), totals(30, 3)));
        assert_eq!(ledger.claim_totals(), totals(5, 1));
        assert!(!ledger.fold(&report(7, 99, 9)), "a report of an older claim is stale");
        ledger.fold(&report(12, 8, 1));
        assert_eq!(ledger.stats.counters, totals(33, 3));
    }

    #[test]
    fn outcomes_keep_the_newest_whatever_the_order() {
        let err = |time, message: &str| Some(ErrorRecord { time, message: message.into() });
        let mut ledger = StatsLedger::default();
        let newer =
            ClaimProgress { epoch: 3, last_success: Some(200), last_error: err(150, "new"), ..Default::default() };
        let older =
            ClaimProgress { epoch: 3, last_success: Some(100), last_error: err(50, "old"), ..Default::default() };
        ledger.fold(&newer);
        assert!(!ledger.fold(&older));
        assert_eq!((ledger.stats.last_success, ledger.stats.last_error.clone()), (Some(200), err(150, "new")));
        // Outcomes carry over to a new claim unless it has newer ones.
        ledger.fold(&ClaimProgress { epoch: 4, last_error: err(300, "newest"), ..Default::default() });
        assert_eq!((ledger.stats.last_success, ledger.stats.last_error), (Some(200), err(300, "newest")));
    }

    #[test]
    fn merging_reports_of_one_claim_is_order_independent() {
        let a = ClaimProgress { epoch: 3, totals: totals(10, 2), last_success: Some(5), ..Default::default() };
        let b = ClaimProgress { epoch: 3, totals: totals(20, 1), last_success: Some(9), ..Default::default() };
        let (mut ab, mut ba) = (a.clone(), b.clone());
        assert!(ab.merge(&b) && ba.merge(&a));
        assert_eq!(ab, ba);
        assert_eq!((ab.totals, ab.last_success), (totals(20, 2), Some(9)));
        assert!(!ab.merge(&report(4, 1, 1)), "reports of another claim do not merge");
    }

    #[test]
    fn huge_counters_saturate_instead_of_overflowing() {
        let mut ledger = StatsLedger::default();
        ledger.fold(&report(1, u64::MAX, 0));
        ledger.fold(&report(2, u64::MAX, 0));
        assert_eq!(ledger.stats.counters.items_fetched, u64::MAX);
    }

    #[test]
    fn records_without_epoch_and_base_still_decode_and_fold() {
        let old: StatsLedger = serde_json::from_str(r#"{"counters":{"items_fetched":40,"runs":4}}"#).expect("decode");
        assert_eq!((old.epoch, old.base, old.stats.counters), (0, Counters::default(), totals(40, 4)));
        let mut ledger = old;
        ledger.fold(&report(9, 2, 1));
        assert_eq!((ledger.base, ledger.stats.counters), (totals(40, 4), totals(42, 5)));
        // One flat JSON object, which readers decode as a plain StatsRecord.
        let json = serde_json::to_value(&ledger).expect("encode");
        assert_eq!(json["epoch"], 9);
        assert_eq!(json["base"]["items_fetched"], 40);
        assert_eq!(json["counters"]["items_fetched"], 42);
        let read: StatsRecord = serde_json::from_value(json).expect("decode as a reader");
        assert_eq!(read, ledger.stats);
    }
}
