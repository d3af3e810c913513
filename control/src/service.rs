//! The control plane's service layer: job CRUD, pause/resume/run-now, type
//! discovery and the worker list, on the shared store. Protocol-free: the
//! gRPC adapter (`grpc.rs`) converts at the edge. Every read-modify-write is
//! one store transaction guarded by the revision it read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ingest_model::job::{MAX_INTERVAL, MAX_PARAMS_BYTES};
use ingest_model::{
    FieldViolation, JobRecord, JobState, JobTypeSpec, Labels, RunRecord, RunsRecord, Schedule, SecretsRecord, Selector,
    SplitParams, WorkerRecord, moved_origins, now_millis, validate_job_id, validate_labels, validate_name,
    validate_params,
};
use ingest_runtime::secrets_key::{self, SecretsKeys};
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{
    Compare, CompareOp, KeyRange, RangeRequest, Revision, Store, Txn, TxnOp, TxnOpResponse, prefix_end,
};
use serde_json::{Map, Value};

use crate::error::ControlError;
use crate::views::{Cluster, JobPieces, JobView, attach_pieces, decode, read_types, worker_loads};

/// Jobs per ListJobs page unless asked otherwise, and the most allowed.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Jobs read per range when a filter may drop many of them.
const FILTER_CHUNK: usize = 500;

/// What a user gives to create a job. No `Debug`: params may hold secrets.
#[derive(Clone, Default)]
pub struct NewJob {
    /// Optional id; generated when `None`.
    pub id: Option<String>,
    pub name: String,
    pub job_type: String,
    /// Parameters including secrets.
    pub params: Map<String, Value>,
    /// `None`: the type's default interval.
    pub interval: Option<Duration>,
    pub paused: bool,
    pub labels: Labels,
    pub schedule: Schedule,
}

/// A change to a job; `None` fields are left as they are. No `Debug`: params
/// may hold secrets.
#[derive(Clone, Default)]
pub struct JobChange {
    pub id: String,
    /// The revision the caller read; the update fails if the job moved on.
    pub revision: Revision,
    /// When non-empty, must equal the job's type (types cannot change).
    pub job_type: String,
    pub name: Option<String>,
    /// New parameters; secrets absent here keep their value.
    pub params: Option<Map<String, Value>>,
    /// `Some(None)`: back to the type's default.
    pub interval: Option<Option<Duration>>,
    pub paused: Option<bool>,
    pub labels: Option<Labels>,
    pub schedule: Option<Schedule>,
}

/// A published job type and the live workers that run it.
#[derive(Clone, Debug)]
pub struct JobTypeView {
    pub spec: JobTypeSpec,
    pub workers: Vec<String>,
}

/// A live worker and its load.
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub record: WorkerRecord,
    pub jobs_owned: u32,
    pub counters: ingest_model::Counters,
    /// Its last load sample, once written.
    pub load: Option<ingest_model::LoadRecord>,
}

/// One page of jobs.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// The id to continue after, `None` on the last page.
    pub next_after: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub job_type: Option<String>,
    pub state: Option<JobState>,
    pub selector: Option<Selector>,
}

impl JobFilter {
    /// Whether the spec passes the filters that do not need the job's status.
    pub fn admits(&self, record: &JobRecord) -> bool {
        self.job_type.as_ref().is_none_or(|t| *t == record.job_type)
            && self.selector.as_ref().is_none_or(|s| s.matches(&record.labels))
    }
}

/// The most jobs one bulk call acts on.
pub const MAX_BULK: usize = 10_000;
/// Jobs a bulk call changes at once.
const BULK_CONCURRENCY: usize = 32;

/// Which jobs a bulk call acts on: exactly one of the two.
#[derive(Clone, Debug, Default)]
pub struct JobPick {
    pub ids: Vec<String>,
    pub label_selector: String,
}

/// What a bulk call does to each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    Pause,
    Resume,
    RunNow,
    Delete,
}

/// What a bulk call did to one job: its new revision (0 when deleted).
#[derive(Debug)]
pub struct JobOutcome {
    pub id: String,
    pub result: Result<Revision, ControlError>,
}

/// The control plane's operations. Cheap to clone.
#[derive(Clone)]
pub struct ControlService {
    store: Arc<dyn Store>,
    keys: Keys,
    /// Seals job secrets at rest (`--secrets-key-file`); `None`: in clear.
    secrets_keys: Option<Arc<SecretsKeys>>,
    /// Job type specs CreateJob validated against, with the revision each
    /// was read at: the create is guarded on that revision, so a spec a
    /// worker has republished since is read again, never trusted stale.
    type_specs: Arc<Mutex<HashMap<String, CachedSpec>>>,
    /// The follower of the jobs WatchJobs streams share, while any is open.
    jobs_feed: crate::watch::FeedSlot,
}

/// A job type's spec and the revision of `types/<name>` it was read at.
type CachedSpec = (Arc<JobTypeSpec>, Revision);

impl ControlService {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys, secrets_keys: None, type_specs: Arc::default(), jobs_feed: Arc::default() }
    }

    /// Seals every secrets record written from now on with these keys.
    pub fn with_secrets_keys(mut self, keys: Option<Arc<SecretsKeys>>) -> Self {
        self.secrets_keys = keys;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn jobs_feed_slot(&self) -> crate::watch::FeedSlot {
        self.jobs_feed.clone()
    }

    pub(crate) fn secrets_keys(&self) -> Option<&SecretsKeys> {
        self.secrets_keys.as_deref()
    }

    /// One transaction when the type's spec is known: the spec comes from
    /// this server's cache, guarded in the transaction by its revision, and
    /// the workers (for the job's state) are read in the same transaction.
    pub async fn create_job(&self, new: NewJob, validate_only: bool) -> Result<JobView, ControlError> {
        let id = new
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), String::from);
        match self.create_once(&id, &new, validate_only).await? {
            Some(view) => Ok(view),
            // The type's spec changed since it was cached: validate again
            // against the one stored now.
            None => {
                self.forget_type_spec(&new.job_type);
                self.create_once(&id, &new, validate_only).await?.ok_or_else(|| {
                    ControlError::Unavailable(format!("job type '{}' is being republished; try again", new.job_type))
                })
            }
        }
    }

    /// A create against the cached spec; `None` when the spec's revision
    /// moved meanwhile (nothing written).
    async fn create_once(&self, id: &str, new: &NewJob, validate_only: bool) -> Result<Option<JobView>, ControlError> {
        let mut violations = Vec::new();
        if new.id.as_deref().is_some_and(|id| !id.is_empty())
            && let Err(e) = validate_job_id(id)
        {
            violations.push(FieldViolation::new("job_id", e));
        }
        if let Err(e) = validate_name(&new.name) {
            violations.push(FieldViolation::new("job.name", e));
        }
        violations.extend(validate_labels(&new.labels, "job.labels"));
        check_schedule(&new.schedule, &mut violations);
        let Some((spec, spec_revision)) = self.cached_type_spec(&new.job_type, &mut violations).await? else {
            return Err(ControlError::Invalid(violations));
        };
        let interval = check_interval(new.interval, &spec, &mut violations);
        check_params_size(&new.params, &mut violations);
        let split = match validate_params(&spec, &new.params, &[], "job.params") {
            Ok(split) => Some(split),
            Err(mut v) => {
                violations.append(&mut v);
                None
            }
        };
        let Some(split) = split.filter(|_| violations.is_empty()) else {
            return Err(ControlError::Invalid(violations));
        };
        let now = now_millis();
        let record = JobRecord {
            id: id.to_string(),
            name: new.name.clone(),
            job_type: new.job_type.clone(),
            params: split.params,
            secret_names: split.secrets.keys().cloned().collect(),
            interval,
            paused: new.paused,
            run_now_seq: 0,
            cursor_reset_seq: 0,
            labels: new.labels.clone(),
            schedule: new.schedule.clone(),
            create_time: now,
            update_time: now,
        };
        if validate_only {
            return self.view_of(record, 0).await.map(Some);
        }
        let job_key = self.keys.job(id);
        let type_key = self.keys.job_type(&new.job_type);
        let mut ops = vec![TxnOp::put(job_key.clone(), encode(&record)?)];
        if !split.secrets.is_empty() {
            let record = SecretsRecord { values: split.secrets };
            let stored =
                secrets_key::store(self.secrets_keys.as_deref(), id, &record).map_err(ControlError::Internal)?;
            ops.push(TxnOp::put(self.keys.secret(id), stored));
        }
        // A new job has no claim, counters or checkpoint yet: only the
        // workers are needed to tell its state.
        ops.push(TxnOp::Range(RangeRequest::new(KeyRange::prefix(self.keys.prefix(KeyKind::Worker)))));
        let txn = Txn::new()
            .when([Compare::absent(job_key.clone()), Compare::mod_revision(type_key, CompareOp::Equal, spec_revision)])
            .and_then(ops)
            .or_else([TxnOp::get(job_key)]);
        let response = self.store.txn(txn).await?;
        if !response.succeeded {
            return match response.responses.first() {
                Some(TxnOpResponse::Range(r)) if !r.kvs.is_empty() => Err(ControlError::AlreadyExists(id.to_string())),
                _ => Ok(None),
            };
        }
        tracing::info!(job = %id, job_type = %record.job_type, revision = response.revision, "job created");
        let workers = match response.responses.last() {
            Some(TxnOpResponse::Range(r)) => Cluster::from_kvs(&r.kvs),
            _ => Cluster::default(),
        };
        let pieces = JobPieces { job: Some((record, response.revision)), ..Default::default() };
        pieces
            .view(&workers.live_types())
            .map(Some)
            .ok_or_else(|| ControlError::Internal("job view vanished".to_string()))
    }

    pub async fn get_job(&self, id: &str) -> Result<JobView, ControlError> {
        check_id_field("id", id)?;
        let kv = self.store.get(&self.keys.job(id)).await?.ok_or_else(|| not_found(id))?;
        let record: JobRecord =
            decode(&kv).ok_or_else(|| ControlError::Internal(format!("job '{id}' is unreadable")))?;
        self.view_of(record, kv.mod_revision).await
    }

    pub async fn list_jobs(
        &self,
        filter: &JobFilter,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<JobPage, ControlError> {
        let page_size = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size.min(MAX_PAGE_SIZE) };
        let jobs_prefix = self.keys.prefix(KeyKind::Job);
        let end = prefix_end(&jobs_prefix);
        let mut from = match after {
            Some(after) => format!("{}\0", self.keys.job(after)),
            None => jobs_prefix.clone(),
        };
        let mut jobs: Vec<JobView> = Vec::with_capacity(page_size);
        // Read one job beyond the page to know whether a next page exists;
        // with filters, read in larger chunks until the page is full.
        let filtered = filter.job_type.is_some() || filter.state.is_some() || filter.selector.is_some();
        let chunk = if filtered { FILTER_CHUNK } else { page_size + 1 };
        let range = |from: String| RangeRequest::new(KeyRange::between(from, end.clone())).limit(chunk as i64);
        // The workers are read once, alongside the first chunk.
        let (first, cluster) = futures::try_join!(
            async { Ok(self.store.range(range(from.clone())).await?) },
            Cluster::read(self.store.as_ref(), &self.keys)
        )?;
        let live_types = cluster.live_types();
        let mut next_chunk = Some(first);
        loop {
            let page = match next_chunk.take() {
                Some(page) => page,
                None => self.store.range(range(from.clone())).await?,
            };
            let mut pieces = BTreeMap::new();
            for kv in &page.kvs {
                let Some(record) = decode::<JobRecord>(kv) else { continue };
                if filter.admits(&record) {
                    pieces.insert(
                        record.id.clone(),
                        JobPieces { job: Some((record, kv.mod_revision)), ..Default::default() },
                    );
                }
            }
            attach_pieces(self.store.as_ref(), &self.keys, &mut pieces).await?;
            for view in pieces.values().filter_map(|p| p.view(&live_types)) {
                if filter.state.is_some_and(|s| s != view.status.state) {
                    continue;
                }
                if jobs.len() == page_size {
                    let next_after = jobs.last().map(|j| j.record.id.clone());
                    return Ok(JobPage { jobs, next_after });
                }
                jobs.push(view);
            }
            match page.kvs.last() {
                Some(last) if page.more => from = format!("{}\0", last.key),
                _ => return Ok(JobPage { jobs, next_after: None }),
            }
        }
    }

    pub async fn update_job(&self, change: JobChange) -> Result<JobView, ControlError> {
        check_id_field("job.id", &change.id)?;
        if change.revision <= 0 {
            return Err(ControlError::invalid("job.revision", "required: pass the revision of the job as you read it"));
        }
        let job_key = self.keys.job(&change.id);
        let kv = self.store.get(&job_key).await?.ok_or_else(|| not_found(&change.id))?;
        if kv.mod_revision != change.revision {
            return Err(ControlError::Conflict { id: change.id, expected: change.revision, actual: kv.mod_revision });
        }
        let mut record: JobRecord =
            decode(&kv).ok_or_else(|| ControlError::Internal(format!("job '{}' is unreadable", change.id)))?;
        let mut violations = Vec::new();
        if !change.job_type.is_empty() && change.job_type != record.job_type {
            violations.push(FieldViolation::new(
                "job.type",
                format!("cannot change the type of a job (it is '{}')", record.job_type),
            ));
        }
        if let Some(name) = &change.name
            && let Err(e) = validate_name(name)
        {
            violations.push(FieldViolation::new("job.name", e));
        }
        if let Some(labels) = &change.labels {
            violations.extend(validate_labels(labels, "job.labels"));
        }
        if let Some(schedule) = &change.schedule {
            check_schedule(schedule, &mut violations);
        }
        let spec = self.type_spec_or_violation(&record.job_type, &mut violations).await?;
        let Some(spec) = spec else {
            return Err(ControlError::Invalid(violations));
        };
        let interval = change.interval.map(|i| check_interval(i, &spec, &mut violations));
        let mut new_secrets = None;
        if let Some(params) = &change.params {
            check_params_size(params, &mut violations);
            match validate_params(&spec, params, &record.secret_names, "job.params") {
                Ok(split) => {
                    check_secrets_stay_home(&spec, &record, &split, &mut violations);
                    record.params = split.params;
                    new_secrets = Some(split.secrets);
                }
                Err(mut v) => violations.append(&mut v),
            }
        }
        if !violations.is_empty() {
            return Err(ControlError::Invalid(violations));
        }
        if let Some(name) = change.name {
            record.name = name;
        }
        if let Some(interval) = interval {
            record.interval = interval;
        }
        if let Some(paused) = change.paused {
            record.paused = paused;
        }
        if let Some(labels) = change.labels {
            record.labels = labels;
        }
        if let Some(schedule) = change.schedule {
            record.schedule = schedule;
        }
        let mut ops = Vec::new();
        if let Some(new_secrets) = new_secrets.filter(|s| !s.is_empty()) {
            // Merge with the kept secrets; the job key's revision guard also
            // covers the secrets key, which is only written together with it.
            // A record that does not open is an error, never an empty default
            // (which would drop the kept secrets without a word).
            let mut secrets = match self.store.get(&self.keys.secret(&change.id)).await? {
                Some(kv) => secrets_key::open(self.secrets_keys.as_deref(), &change.id, &kv.value)
                    .map_err(|e| ControlError::Internal(format!("the job's stored secrets cannot be read: {e}")))?,
                None => SecretsRecord::default(),
            };
            secrets.values.extend(new_secrets);
            record.secret_names = secrets.values.keys().cloned().collect();
            let stored = secrets_key::store(self.secrets_keys.as_deref(), &change.id, &secrets)
                .map_err(ControlError::Internal)?;
            ops.push(TxnOp::put(self.keys.secret(&change.id), stored));
        }
        self.write_guarded(record, change.revision, ops).await
    }

    pub async fn delete_job(&self, id: &str, revision: Revision) -> Result<(), ControlError> {
        check_id_field("id", id)?;
        if revision < 0 {
            return Err(ControlError::invalid(
                "revision",
                "give the revision you read, or 0 to delete whatever the job is now",
            ));
        }
        let job_key = self.keys.job(id);
        let guard = if revision > 0 {
            Compare::mod_revision(job_key.clone(), CompareOp::Equal, revision)
        } else {
            Compare::create_revision(job_key.clone(), CompareOp::Greater, 0)
        };
        // The claim under owners/<id> belongs to its worker, which sees the
        // spec disappear, stops the job and releases it.
        let ops = [KeyKind::Job, KeyKind::Secret, KeyKind::State, KeyKind::Stats, KeyKind::Runs, KeyKind::Alert]
            .map(|kind| TxnOp::delete(self.keys.key(kind, id)))
            .into_iter()
            .chain([TxnOp::delete_range(KeyRange::prefix(self.keys.dead_letters(id)))]);
        let response = self.store.txn(Txn::new().when([guard]).and_then(ops).or_else([TxnOp::get(job_key)])).await?;
        if response.succeeded {
            tracing::info!(job = %id, revision = response.revision, "job deleted");
            return Ok(());
        }
        match response.responses.first() {
            Some(TxnOpResponse::Range(r)) if !r.kvs.is_empty() => {
                Err(ControlError::Conflict { id: id.to_string(), expected: revision, actual: r.kvs[0].mod_revision })
            }
            _ => Err(not_found(id)),
        }
    }

    /// Pauses or resumes a job; idempotent.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<JobView, ControlError> {
        self.modify(id, |record| {
            let changed = record.paused != paused;
            record.paused = paused;
            changed
        })
        .await
    }

    /// Asks the owner to run the job once now.
    pub async fn run_now(&self, id: &str) -> Result<JobView, ControlError> {
        self.modify(id, |record| {
            record.run_now_seq += 1;
            true
        })
        .await
    }

    /// Asks the owner to start the job over from an empty cursor.
    pub async fn reset_cursor(&self, id: &str) -> Result<JobView, ControlError> {
        self.modify(id, |record| {
            record.cursor_reset_seq += 1;
            true
        })
        .await
    }

    /// The next `count` run times of a schedule and interval, from now.
    pub fn preview_schedule(
        &self,
        schedule: &Schedule,
        interval: Option<Duration>,
        count: usize,
    ) -> Result<Vec<ingest_model::UnixMillis>, ControlError> {
        let interval = interval.unwrap_or(Duration::from_secs(3600));
        if interval < Duration::from_secs(1) || interval > MAX_INTERVAL {
            return Err(ControlError::invalid("interval", "must be between 1s and 366 days"));
        }
        let compiled = ingest_model::schedule::compile(schedule, "schedule").map_err(ControlError::Invalid)?;
        Ok(ingest_model::schedule::preview(&compiled, interval, now_millis(), count.clamp(1, 50)))
    }

    /// The job's last runs, newest first.
    pub async fn list_job_runs(&self, id: &str) -> Result<Vec<RunRecord>, ControlError> {
        check_id_field("id", id)?;
        let response = self
            .store
            .txn(Txn::new().and_then([
                TxnOp::Range(RangeRequest::new(KeyRange::key(self.keys.job(id))).keys_only()),
                TxnOp::get(self.keys.runs(id)),
            ]))
            .await?;
        let kv = |i: usize| match response.responses.get(i) {
            Some(TxnOpResponse::Range(r)) => r.kvs.first(),
            _ => None,
        };
        if kv(0).is_none() {
            return Err(not_found(id));
        }
        let mut runs = kv(1).and_then(decode::<RunsRecord>).unwrap_or_default().runs;
        runs.reverse();
        Ok(runs)
    }

    pub async fn list_job_types(&self) -> Result<Vec<JobTypeView>, ControlError> {
        let (types, cluster) = futures::try_join!(
            read_types(self.store.as_ref(), &self.keys),
            Cluster::read(self.store.as_ref(), &self.keys)
        )?;
        Ok(types.into_values().map(|spec| JobTypeView { workers: cluster.workers_for(&spec.name), spec }).collect())
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerView>, ControlError> {
        let (cluster, loads, samples) = futures::try_join!(
            Cluster::read(self.store.as_ref(), &self.keys),
            worker_loads(self.store.as_ref(), &self.keys),
            crate::views::scan_prefix(self.store.as_ref(), self.keys.prefix(KeyKind::Load)),
        )?;
        let mut samples: std::collections::HashMap<String, ingest_model::LoadRecord> =
            samples.iter().filter_map(|kv| Some((self.keys.parse(&kv.key)?.1.to_string(), decode(kv)?))).collect();
        Ok(cluster
            .workers
            .into_values()
            .map(|record| {
                let (jobs_owned, counters) = loads.get(&record.name).copied().unwrap_or_default();
                let load = samples.remove(&record.name);
                WorkerView { record, jobs_owned, counters, load }
            })
            .collect())
    }

    /// Read-modify-write of a job spec with a revision guard, retried when a
    /// concurrent write got in between. `f` returns whether it changed
    /// anything.
    async fn modify(&self, id: &str, f: impl Fn(&mut JobRecord) -> bool) -> Result<JobView, ControlError> {
        check_id_field("id", id)?;
        let (record, revision) = self.modify_record(id, f).await?;
        self.view_of(record, revision).await
    }

    /// [`Self::modify`] without the view: the record and its revision.
    async fn modify_record(
        &self,
        id: &str,
        f: impl Fn(&mut JobRecord) -> bool,
    ) -> Result<(JobRecord, Revision), ControlError> {
        for _ in 0..5 {
            let kv = self.store.get(&self.keys.job(id)).await?.ok_or_else(|| not_found(id))?;
            let mut record: JobRecord =
                decode(&kv).ok_or_else(|| ControlError::Internal(format!("job '{id}' is unreadable")))?;
            if !f(&mut record) {
                return Ok((record, kv.mod_revision));
            }
            match self.write_record(record, kv.mod_revision, Vec::new()).await {
                Err(ControlError::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(ControlError::Unavailable(format!("job '{id}' is being changed concurrently; retry")))
    }

    /// Pauses, resumes, runs now or deletes every job `pick` names, each in
    /// its own guarded transaction (a few at a time); one outcome per job,
    /// in id order. Bad picks write nothing.
    pub async fn bulk(&self, pick: JobPick, action: BulkAction) -> Result<Vec<JobOutcome>, ControlError> {
        let ids = self.picked(pick).await?;
        let mut outcomes: Vec<JobOutcome> = futures::stream::iter(ids)
            .map(|id| async move {
                let result = match action {
                    BulkAction::Delete => self.delete_job(&id, 0).await.map(|()| 0),
                    BulkAction::Pause | BulkAction::Resume => {
                        let paused = action == BulkAction::Pause;
                        self.modify_record(&id, |record| std::mem::replace(&mut record.paused, paused) != paused)
                            .await
                            .map(|(_, revision)| revision)
                    }
                    BulkAction::RunNow => self
                        .modify_record(&id, |record| {
                            record.run_now_seq += 1;
                            true
                        })
                        .await
                        .map(|(_, revision)| revision),
                };
                JobOutcome { id, result }
            })
            .buffer_unordered(BULK_CONCURRENCY)
            .collect()
            .await;
        outcomes.sort_by(|a, b| a.id.cmp(&b.id));
        tracing::info!(
            ?action,
            jobs = outcomes.len(),
            failed = outcomes.iter().filter(|o| o.result.is_err()).count(),
            "bulk change"
        );
        Ok(outcomes)
    }

    /// The ids a bulk call acts on, deduplicated and sorted.
    async fn picked(&self, pick: JobPick) -> Result<Vec<String>, ControlError> {
        let selector = pick.label_selector.trim();
        match (pick.ids.is_empty(), selector.is_empty()) {
            (true, true) => {
                return Err(ControlError::invalid("ids", "give the jobs' ids, or a label_selector"));
            }
            (false, false) => {
                return Err(ControlError::invalid("label_selector", "give either ids or a label_selector, not both"));
            }
            _ => {}
        }
        if !pick.ids.is_empty() {
            if pick.ids.len() > MAX_BULK {
                return Err(ControlError::invalid(
                    "ids",
                    format!("at most {MAX_BULK} ids per call, got {}", pick.ids.len()),
                ));
            }
            let violations: Vec<FieldViolation> = pick
                .ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| validate_job_id(id).err().map(|e| FieldViolation::new(format!("ids[{i}]"), e)))
                .collect();
            if !violations.is_empty() {
                return Err(ControlError::Invalid(violations));
            }
            let mut ids = pick.ids;
            ids.sort();
            ids.dedup();
            return Ok(ids);
        }
        let selector = Selector::parse(selector).map_err(|e| ControlError::invalid("label_selector", e))?;
        let jobs_prefix = self.keys.prefix(KeyKind::Job);
        let end = prefix_end(&jobs_prefix);
        let mut from = jobs_prefix;
        let mut ids = Vec::new();
        loop {
            let request = RangeRequest::new(KeyRange::between(from.clone(), end.clone())).limit(FILTER_CHUNK as i64);
            let page = self.store.range(request).await?;
            for record in page.kvs.iter().filter_map(decode::<JobRecord>) {
                if selector.matches(&record.labels) {
                    if ids.len() == MAX_BULK {
                        return Err(ControlError::invalid(
                            "label_selector",
                            format!("matches more than {MAX_BULK} jobs; narrow it (or act in several calls)"),
                        ));
                    }
                    ids.push(record.id);
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => from = format!("{}\0", last.key),
                _ => return Ok(ids),
            }
        }
    }

    /// Writes `record` (and `extra` ops) if the job is still at `revision`.
    async fn write_guarded(
        &self,
        record: JobRecord,
        revision: Revision,
        extra: Vec<TxnOp>,
    ) -> Result<JobView, ControlError> {
        let (record, revision) = self.write_record(record, revision, extra).await?;
        self.view_of(record, revision).await
    }

    /// [`Self::write_guarded`] without the view: the record and its new revision.
    async fn write_record(
        &self,
        mut record: JobRecord,
        revision: Revision,
        extra: Vec<TxnOp>,
    ) -> Result<(JobRecord, Revision), ControlError> {
        record.update_time = now_millis();
        let job_key = self.keys.job(&record.id);
        let mut ops = vec![TxnOp::put(job_key.clone(), encode(&record)?)];
        ops.extend(extra);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(job_key.clone(), CompareOp::Equal, revision)])
                    .and_then(ops)
                    .or_else([TxnOp::get(job_key)]),
            )
            .await?;
        if !response.succeeded {
            return match response.responses.first() {
                Some(TxnOpResponse::Range(r)) if !r.kvs.is_empty() => {
                    Err(ControlError::Conflict { id: record.id, expected: revision, actual: r.kvs[0].mod_revision })
                }
                _ => Err(not_found(&record.id)),
            };
        }
        tracing::info!(job = %record.id, revision = response.revision, paused = record.paused, "job updated");
        Ok((record, response.revision))
    }

    /// The view of one job: its spec plus claim, counters and checkpoint.
    async fn view_of(&self, record: JobRecord, revision: Revision) -> Result<JobView, ControlError> {
        let id = record.id.clone();
        let mut pieces =
            BTreeMap::from([(id.clone(), JobPieces { job: Some((record, revision)), ..Default::default() })]);
        let (cluster, ()) = futures::try_join!(
            Cluster::read(self.store.as_ref(), &self.keys),
            attach_pieces(self.store.as_ref(), &self.keys, &mut pieces)
        )?;
        pieces
            .get(&id)
            .and_then(|p| p.view(&cluster.live_types()))
            .ok_or_else(|| ControlError::Internal("job view vanished".to_string()))
    }

    /// The spec of `job_type` and the revision it was read at, from this
    /// server's cache or else the store; a violation on `job.type` when unknown.
    async fn cached_type_spec(
        &self,
        job_type: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Option<CachedSpec>, ControlError> {
        if let Some(cached) = self.type_specs.lock().ok().and_then(|specs| specs.get(job_type).cloned()) {
            return Ok(Some(cached));
        }
        let Some((spec, revision)) = self.read_type_spec(job_type, violations).await? else { return Ok(None) };
        let cached = (Arc::new(spec), revision);
        if let Ok(mut specs) = self.type_specs.lock() {
            specs.insert(job_type.to_string(), cached.clone());
        }
        Ok(Some(cached))
    }

    fn forget_type_spec(&self, job_type: &str) {
        if let Ok(mut specs) = self.type_specs.lock() {
            specs.remove(job_type);
        }
    }

    /// The spec of `job_type`, or a violation on `job.type` when unknown.
    pub(crate) async fn type_spec_or_violation(
        &self,
        job_type: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Option<JobTypeSpec>, ControlError> {
        Ok(self.read_type_spec(job_type, violations).await?.map(|(spec, _)| spec))
    }

    /// The stored spec of `job_type` and its revision, or a violation.
    async fn read_type_spec(
        &self,
        job_type: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Option<(JobTypeSpec, Revision)>, ControlError> {
        if job_type.is_empty() {
            violations.push(FieldViolation::new("job.type", "required: one of the types listed by ListJobTypes"));
            return Ok(None);
        }
        if job_type.len() > 63 || !job_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            violations.push(FieldViolation::new("job.type", "not a job type name"));
            return Ok(None);
        }
        match self.store.get(&self.keys.job_type(job_type)).await? {
            Some(kv) => Ok(decode(&kv).map(|spec| (spec, kv.mod_revision))),
            None => {
                let known = read_types(self.store.as_ref(), &self.keys).await?;
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                violations.push(FieldViolation::new(
                    "job.type",
                    format!(
                        "unknown job type '{job_type}'; known types: {}",
                        if names.is_empty() { "none yet (start a worker)".to_string() } else { names.join(", ") }
                    ),
                ));
                Ok(None)
            }
        }
    }
}

pub(crate) fn check_id_field(field: &str, id: &str) -> Result<(), ControlError> {
    validate_job_id(id).map_err(|e| ControlError::invalid(field, e))
}

fn check_interval(interval: Option<Duration>, spec: &JobTypeSpec, violations: &mut Vec<FieldViolation>) -> Duration {
    let Some(interval) = interval else {
        return spec.default_interval;
    };
    if interval < spec.min_interval {
        violations.push(FieldViolation::new(
            "job.interval",
            format!("must be at least {} for job type '{}'", humanize(spec.min_interval), spec.name),
        ));
    } else if interval > MAX_INTERVAL {
        violations.push(FieldViolation::new("job.interval", format!("must be at most {}", humanize(MAX_INTERVAL))));
    }
    interval
}

fn check_schedule(schedule: &Schedule, violations: &mut Vec<FieldViolation>) {
    if !schedule.is_empty()
        && let Err(mut v) = ingest_model::schedule::compile(schedule, "job.schedule")
    {
        violations.append(&mut v);
    }
}

pub(crate) fn check_params_size(params: &Map<String, Value>, violations: &mut Vec<FieldViolation>) {
    let size = serde_json::to_vec(params).map_or(usize::MAX, |v| v.len());
    if size > MAX_PARAMS_BYTES {
        violations.push(FieldViolation::new(
            "job.params",
            format!("parameters take {size} bytes; at most {MAX_PARAMS_BYTES} allowed"),
        ));
    }
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn not_found(id: &str) -> ControlError {
    ControlError::NotFound { what: "job", id: id.to_string() }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(value).map_err(|e| ControlError::Internal(format!("encoding a record: {e}")))
}

/// Secrets are sent only to the origin they were entered for: a change that
/// moves a URL parameter to another scheme, host or port must enter every
/// kept secret again (else anyone allowed to edit the job could point it at
/// their own server and receive the secrets on the next run).
pub(crate) fn check_secrets_stay_home(
    spec: &JobTypeSpec,
    record: &JobRecord,
    split: &SplitParams,
    violations: &mut Vec<FieldViolation>,
) {
    let kept: Vec<&String> = record.secret_names.iter().filter(|name| !split.secrets.contains_key(*name)).collect();
    if kept.is_empty() {
        return;
    }
    let moved = moved_origins(spec, &record.params, &split.params);
    let Some(first) = moved.first() else { return };
    for name in kept {
        violations.push(FieldViolation::new(
            format!("job.params.{name}"),
            format!(
                "enter {name} again: {} now points at {} and {name} was entered for {}; \
                 secrets are only sent to the origin they were entered for",
                first.param, first.to, first.from
            ),
        ));
    }
}
