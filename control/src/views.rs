//! Reading the pieces of a job (spec, claim, counters, checkpoint) and the
//! cluster (workers, types) from the store, and composing them into the job
//! view the API returns.

use std::collections::{BTreeMap, HashMap, HashSet};

use ingest_model::{
    CheckpointRecord, JobRecord, JobState, JobTypeSpec, OwnerRecord, StatsRecord, UNREADABLE_OWNER, UnixMillis,
    WorkerRecord, WorkerState, derive_state,
};
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{KeyValue, Revision, Store};
use serde::de::DeserializeOwned;

use crate::error::ControlError;

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub record: JobRecord,
    /// Mod revision of the spec: what UpdateJob must carry.
    pub revision: Revision,
    pub status: JobStatusView,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobStatusView {
    pub state: JobState,
    pub reason: String,
    pub owner: Option<String>,
    pub epoch: Revision,
    pub stats: StatsRecord,
    pub next_run: Option<UnixMillis>,
    pub checkpoint: Option<CheckpointSummary>,
}

/// A job's cursor for display: its size and its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub cursor_bytes: u64,
    pub cursor_preview: String,
}

/// How much of a cursor is shown.
const CURSOR_PREVIEW_BYTES: usize = 1024;

impl CheckpointSummary {
    pub fn of(checkpoint: &CheckpointRecord) -> Self {
        let text = checkpoint.cursor.to_string();
        let mut end = text.len().min(CURSOR_PREVIEW_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self { cursor_bytes: text.len() as u64, cursor_preview: text[..end].to_string() }
    }
}

/// The parts of a job other than its spec, with the revisions they were
/// written at (watches use them to ignore stale events).
#[derive(Clone, Debug, Default)]
pub struct JobPieces {
    pub job: Option<(JobRecord, Revision)>,
    /// Owner record, its create revision (epoch) and mod revision.
    pub owner: Option<(OwnerRecord, Revision, Revision)>,
    pub stats: Option<(StatsRecord, Revision)>,
    pub state: Option<(CheckpointRecord, Revision)>,
}

impl JobPieces {
    /// Nothing of the job is left.
    pub fn is_empty(&self) -> bool {
        self.job.is_none() && self.owner.is_none() && self.stats.is_none() && self.state.is_none()
    }

    /// The composed view, if the spec is known.
    pub fn view(&self, live_types: &HashSet<String>) -> Option<JobView> {
        let (record, revision) = self.job.as_ref()?;
        let owner = self.owner.as_ref().map(|(o, _, _)| o.worker.as_str());
        let stats = self.stats.as_ref().map(|(s, _)| s);
        let (state, reason) =
            derive_state(&record.job_type, record.paused, owner, stats, live_types.contains(&record.job_type));
        Some(JobView {
            record: record.clone(),
            revision: *revision,
            status: JobStatusView {
                state,
                reason,
                owner: owner.map(str::to_string),
                epoch: self.owner.as_ref().map_or(0, |(_, epoch, _)| *epoch),
                stats: stats.cloned().unwrap_or_default(),
                next_run: self.state.as_ref().and_then(|(s, _)| s.next_run),
                checkpoint: self
                    .state
                    .as_ref()
                    .filter(|(s, _)| !s.cursor.is_null())
                    .map(|(s, _)| CheckpointSummary::of(s)),
            },
        })
    }

    /// Applies one stored key of `kind` (or its deletion when `kv.value` is
    /// `None`) if it is newer than what is held. Returns whether it changed
    /// anything.
    pub fn apply(&mut self, kind: KeyKind, kv: &KeyValue, deleted: bool) -> bool {
        fn newer<T>(slot: &Option<T>, rev_of: impl Fn(&T) -> Revision, rev: Revision) -> bool {
            slot.as_ref().is_none_or(|held| rev > rev_of(held))
        }
        let rev = kv.mod_revision;
        match kind {
            KeyKind::Job => {
                if !newer(&self.job, |(_, r)| *r, rev) {
                    return false;
                }
                if deleted {
                    return self.job.take().is_some();
                }
                decode(kv).map(|r| self.job = Some((r, rev))).is_some()
            }
            KeyKind::Owner => {
                if !newer(&self.owner, |(_, _, r)| *r, rev) {
                    return false;
                }
                if deleted {
                    return self.owner.take().is_some();
                }
                // Undecodable, the claim still holds the job: show it as such
                // rather than as unowned.
                let owner = decode(kv).unwrap_or_else(|| OwnerRecord { worker: UNREADABLE_OWNER.to_string() });
                self.owner = Some((owner, kv.create_revision, rev));
                true
            }
            KeyKind::Stats => {
                if !newer(&self.stats, |(_, r)| *r, rev) {
                    return false;
                }
                if deleted {
                    return self.stats.take().is_some();
                }
                decode(kv).map(|s| self.stats = Some((s, rev))).is_some()
            }
            KeyKind::State => {
                if !newer(&self.state, |(_, r)| *r, rev) {
                    return false;
                }
                if deleted {
                    return self.state.take().is_some();
                }
                decode(kv).map(|s| self.state = Some((s, rev))).is_some()
            }
            KeyKind::Secret
            | KeyKind::Type
            | KeyKind::Worker
            | KeyKind::Runs
            | KeyKind::Alert
            | KeyKind::Load
            | KeyKind::Preview
            | KeyKind::DeadLetter => false,
        }
    }
}

/// Decodes a stored JSON record; a record that does not decode is logged and
/// skipped (it never takes the server down).
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "skipping undecodable record");
            None
        }
    }
}

/// Every key under `prefix`.
pub async fn scan_prefix(store: &dyn Store, prefix: String) -> Result<Vec<KeyValue>, ControlError> {
    Ok(ingest_store::scan_prefix(store, &prefix).await?)
}

/// Every key in `[start, end)`.
pub async fn scan_range(store: &dyn Store, start: String, end: String) -> Result<Vec<KeyValue>, ControlError> {
    Ok(ingest_store::scan_range(store, start, end).await?)
}

/// The live workers and the job types they support.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub workers: BTreeMap<String, WorkerRecord>,
}

/// The job types some active worker of `workers` runs.
/// Applies a change of `workers/<id>` to the workers known.
pub fn apply_worker(workers: &mut BTreeMap<String, WorkerRecord>, id: &str, kv: &KeyValue, deleted: bool) {
    if deleted {
        workers.remove(id);
    } else if let Some(worker) = decode::<WorkerRecord>(kv) {
        workers.insert(id.to_string(), worker);
    }
}

pub fn live_types(workers: &BTreeMap<String, WorkerRecord>) -> HashSet<String> {
    workers.values().filter(|w| w.state == WorkerState::Active).flat_map(|w| w.types.iter().cloned()).collect()
}

impl Cluster {
    pub async fn read(store: &dyn Store, keys: &Keys) -> Result<Self, ControlError> {
        Ok(Self::from_kvs(&scan_prefix(store, keys.prefix(KeyKind::Worker)).await?))
    }

    /// From the records under `workers/` (those that decode).
    pub fn from_kvs(kvs: &[KeyValue]) -> Self {
        let workers = kvs.iter().filter_map(decode::<WorkerRecord>).map(|w| (w.name.clone(), w)).collect();
        Self { workers }
    }

    /// Job types at least one active worker runs.
    pub fn live_types(&self) -> HashSet<String> {
        live_types(&self.workers)
    }

    /// Active workers that run `job_type`.
    pub fn workers_for(&self, job_type: &str) -> Vec<String> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Active && w.types.iter().any(|t| t == job_type))
            .map(|w| w.name.clone())
            .collect()
    }
}

/// Every published job type, by name.
pub async fn read_types(store: &dyn Store, keys: &Keys) -> Result<BTreeMap<String, JobTypeSpec>, ControlError> {
    let mut types = BTreeMap::new();
    for kv in scan_prefix(store, keys.prefix(KeyKind::Type)).await? {
        if let Some(spec) = decode::<JobTypeSpec>(&kv) {
            types.insert(spec.name.clone(), spec);
        }
    }
    Ok(types)
}

/// Reads the claims, counters and checkpoints of the jobs with ids in
/// `[first, last]` (three range reads, run concurrently) and attaches them.
pub async fn attach_pieces(
    store: &dyn Store,
    keys: &Keys,
    pieces: &mut BTreeMap<String, JobPieces>,
) -> Result<(), ControlError> {
    let (Some(first), Some(last)) = (pieces.keys().next().cloned(), pieces.keys().next_back().cloned()) else {
        return Ok(());
    };
    let span = |kind: KeyKind| scan_range(store, keys.key(kind, &first), format!("{}\0", keys.key(kind, &last)));
    let (owners, stats, states) = futures::try_join!(span(KeyKind::Owner), span(KeyKind::Stats), span(KeyKind::State))?;
    for kv in owners.iter().chain(&stats).chain(&states) {
        if let Some((kind, id)) = keys.parse(&kv.key)
            && let Some(entry) = pieces.get_mut(id)
        {
            entry.apply(kind, kv, false);
        }
    }
    Ok(())
}

/// Counts jobs owned per worker and sums their counters.
pub async fn worker_loads(
    store: &dyn Store,
    keys: &Keys,
) -> Result<HashMap<String, (u32, ingest_model::Counters)>, ControlError> {
    let (owners, stats) = futures::try_join!(
        scan_prefix(store, keys.prefix(KeyKind::Owner)),
        scan_prefix(store, keys.prefix(KeyKind::Stats))
    )?;
    let stats: HashMap<&str, StatsRecord> =
        stats.iter().filter_map(|kv| Some((keys.parse(&kv.key)?.1, decode::<StatsRecord>(kv)?))).collect();
    let mut loads: HashMap<String, (u32, ingest_model::Counters)> = HashMap::new();
    for kv in &owners {
        let (Some((_, id)), Some(owner)) = (keys.parse(&kv.key), decode::<OwnerRecord>(kv)) else {
            continue;
        };
        let load = loads.entry(owner.worker).or_default();
        load.0 += 1;
        if let Some(s) = stats.get(id) {
            load.1.add(&s.counters);
        }
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_summary_is_the_cursor_cut_on_a_character_boundary() {
        let small = CheckpointRecord { cursor: serde_json::json!({"since_id": "42"}), ..Default::default() };
        let summary = CheckpointSummary::of(&small);
        assert_eq!(summary.cursor_preview, r#"{"since_id":"42"}"#);
        assert_eq!(summary.cursor_bytes, 17);

        // 2-byte characters from byte 13 on: byte 1024 falls inside one of them.
        let long = format!("{}{}", "a".repeat(4), "é".repeat(1000));
        let big = CheckpointRecord { cursor: serde_json::json!({"etag": long}), ..Default::default() };
        let summary = CheckpointSummary::of(&big);
        assert_eq!(summary.cursor_bytes, 2015);
        assert_eq!(summary.cursor_preview.len(), 1023);
        assert!(summary.cursor_preview.starts_with(r#"{"etag":"aaaaé"#));
    }
}
