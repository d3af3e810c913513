//! Conversions between the wire types of `ingest.v1` and the domain types.
//! The only place that knows both.

use std::time::Duration;

use ingest_model::schedule::Window;
use ingest_model::{
    ClaimProgress, ErrorRecord, FieldViolation, JobRecord, JobState, JobTypeSpec, MAX_RUNS, ParamKind, ParamRule,
    ParamSpec, RunOutcome, RunRecord, Schedule, UnixMillis, WorkerState, validate_job_id,
};
use ingest_proto::v1 as pb;
use pbjson_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::error::ControlError;
use crate::letters::Letter;
use crate::preview::PreviewAnswer;
use crate::service::{JobOutcome, JobTypeView, WorkerView};
use crate::transfer::{FeedOutcome, ImportedFeed};
use crate::views::JobView;
use crate::watch::{JobEvent, WatchUpdate};

/// A job's params from the wire. NaN and infinities have no JSON form: they
/// are refused with a field violation each, never turned into a missing
/// value (which would let a default take their place unseen).
pub fn params_from_pb(params: pbjson_types::Struct) -> Result<Map<String, Value>, ControlError> {
    fn non_finite(value: &pbjson_types::Value, field: String, found: &mut Vec<FieldViolation>) {
        match &value.kind {
            Some(Kind::NumberValue(n)) if !n.is_finite() => found
                .push(FieldViolation::new(field, format!("{n} is not a number JSON can carry; give a finite number"))),
            Some(Kind::ListValue(list)) => {
                for (i, item) in list.values.iter().enumerate() {
                    non_finite(item, format!("{field}[{i}]"), found);
                }
            }
            Some(Kind::StructValue(inner)) => {
                for (key, item) in &inner.fields {
                    non_finite(item, format!("{field}.{key}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (key, value) in &params.fields {
        non_finite(value, format!("job.params.{key}"), &mut found);
    }
    if found.is_empty() { Ok(struct_to_json(params)) } else { Err(ControlError::Invalid(found)) }
}

pub fn struct_to_json(s: pbjson_types::Struct) -> Map<String, Value> {
    s.fields.into_iter().map(|(k, v)| (k, value_to_json(v))).collect()
}

pub fn value_to_json(v: pbjson_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        // NaN and infinities have no JSON form (`params_from_pb` refuses them).
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

pub fn json_to_struct(map: &Map<String, Value>) -> pbjson_types::Struct {
    pbjson_types::Struct { fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

pub fn json_to_value(v: &Value) -> pbjson_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => {
            Kind::ListValue(pbjson_types::ListValue { values: items.iter().map(json_to_value).collect() })
        }
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

pub use ingest_proto::convert::{counters_from_pb, counters_to_pb, timestamp};

/// Latest time a timestamp may hold (9999-12-31T23:59:59Z, as in
/// `google/protobuf/timestamp.proto`); earlier bound is 0001-01-01.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;

/// A wire timestamp in Unix milliseconds; out of range is a violation on
/// `field`.
pub fn timestamp_from_pb(ts: &pbjson_types::Timestamp, field: &str) -> Result<UnixMillis, FieldViolation> {
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(FieldViolation::new(field, "not a valid timestamp"));
    }
    Ok(ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000)
}

pub fn duration_to_pb(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A wire duration as a domain one; negative or malformed is a violation on
/// `field`.
pub fn duration_from_pb(d: pbjson_types::Duration, field: &str) -> Result<Duration, ControlError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ControlError::invalid(field, "must be a positive duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn job_to_pb(view: JobView) -> pb::Job {
    let JobView { record, revision, status } = view;
    pb::Job {
        id: record.id,
        name: record.name,
        r#type: record.job_type,
        params: Some(json_to_struct(&record.params)),
        secret_params_set: record.secret_names,
        interval: Some(duration_to_pb(record.interval)),
        paused: record.paused,
        revision,
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        labels: record.labels.into_iter().collect(),
        schedule: (!record.schedule.is_empty()).then(|| schedule_to_pb(record.schedule)),
        status: Some(pb::JobStatus {
            state: state_to_pb(status.state) as i32,
            state_reason: status.reason,
            owner: status.owner.unwrap_or_default(),
            epoch: status.epoch,
            counters: Some(counters_to_pb(&status.stats.counters)),
            last_success_time: status.stats.last_success.map(timestamp),
            last_error: status
                .stats
                .last_error
                .as_ref()
                .map(|e| pb::JobError { time: Some(timestamp(e.time)), message: e.message.clone() }),
            next_run_time: status.next_run.map(timestamp),
            checkpoint: status
                .checkpoint
                .map(|c| pb::Checkpoint { cursor_bytes: c.cursor_bytes, cursor_preview: c.cursor_preview }),
            consecutive_failures: status.stats.consecutive_failures,
        }),
    }
}

/// A job's spec alone (ExportJobs): no status, no output-only fields.
pub fn job_spec_to_pb(record: JobRecord) -> pb::Job {
    pb::Job {
        id: record.id,
        name: record.name,
        r#type: record.job_type,
        params: Some(json_to_struct(&record.params)),
        secret_params_set: record.secret_names,
        interval: Some(duration_to_pb(record.interval)),
        paused: record.paused,
        labels: record.labels.into_iter().collect(),
        schedule: (!record.schedule.is_empty()).then(|| schedule_to_pb(record.schedule)),
        ..Default::default()
    }
}

/// What ImportOpml did with one feed.
pub fn imported_feed_to_pb(feed: ImportedFeed) -> pb::ImportedFeed {
    let (outcome, job_id, message) = match feed.outcome {
        FeedOutcome::Created(id) => (pb::FeedImport::Created, id, String::new()),
        FeedOutcome::WouldCreate => (pb::FeedImport::WouldCreate, String::new(), String::new()),
        FeedOutcome::Duplicate(id) => (pb::FeedImport::Duplicate, id, String::new()),
        FeedOutcome::Invalid(message) => (pb::FeedImport::Invalid, String::new(), message),
    };
    pb::ImportedFeed { url: feed.url, title: feed.title, outcome: outcome as i32, job_id, message }
}

/// A dead letter; `preview` with the document's start (GetDeadLetter).
pub fn letter_to_pb(letter: Letter, preview: bool) -> pb::DeadLetter {
    let Letter { name, record } = letter;
    pb::DeadLetter {
        letter_id: name,
        document_id: record.id,
        index: record.index,
        status: u32::from(record.status),
        reason: record.reason,
        time: Some(timestamp(record.time)),
        object_key: record.key,
        bytes: record.bytes,
        replay_pending: record.replay,
        preview: if preview { record.preview } else { String::new() },
    }
}

/// A dry run's answer.
pub fn preview_to_pb(answer: PreviewAnswer) -> pb::PreviewJobResponse {
    let PreviewAnswer { worker, result, .. } = answer;
    pb::PreviewJobResponse {
        documents: result
            .documents
            .into_iter()
            .map(|d| pb::PreviewDocument { id: d.id, index: d.index, document: Some(json_to_struct(&d.document)) })
            .collect(),
        documents_total: result.documents_total,
        objects: result.objects,
        object_bytes: result.object_bytes,
        counters: Some(counters_to_pb(&ingest_model::Counters {
            items_fetched: result.items_fetched,
            items_filtered: result.items_filtered,
            bytes_fetched: result.bytes_fetched,
            ..Default::default()
        })),
        warnings: result.warnings,
        error: result.error.unwrap_or_default(),
        cursor: Some(json_to_value(&result.cursor)),
        duration: Some(duration_to_pb(Duration::from_millis(result.duration_ms))),
        worker,
        truncated: result.truncated,
    }
}

pub fn schedule_to_pb(schedule: Schedule) -> pb::Schedule {
    pb::Schedule {
        cron: schedule.cron,
        time_zone: schedule.time_zone,
        windows: schedule.windows.into_iter().map(|w| pb::TimeWindow { start: w.start, end: w.end }).collect(),
    }
}

/// A schedule from the wire (checked by the service); unset is empty.
pub fn schedule_from_pb(schedule: Option<pb::Schedule>) -> Schedule {
    let Some(schedule) = schedule else { return Schedule::default() };
    Schedule {
        cron: schedule.cron,
        time_zone: schedule.time_zone,
        windows: schedule.windows.into_iter().map(|w| Window { start: w.start, end: w.end }).collect(),
    }
}

/// The proto of a bulk call's outcomes; a failure's code and message are
/// the ones its own call would have answered.
pub fn outcomes_to_pb(outcomes: Vec<JobOutcome>) -> Vec<pb::JobResult> {
    outcomes
        .into_iter()
        .map(|JobOutcome { id, result }| match result {
            Ok(revision) => pb::JobResult { id, code: 0, message: String::new(), revision },
            Err(error) => {
                let status = tonic::Status::from(error);
                pb::JobResult { id, code: status.code() as i32, message: status.message().to_string(), revision: 0 }
            }
        })
        .collect()
}

/// Longest worker name (a DNS name, as host names usually are).
pub const MAX_WORKER_NAME: usize = 253;
/// Longest error message kept; longer ones are cut (an upstream's error page
/// is no reason to refuse a report).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1024;
/// Violations reported per refused message, so the status stays small.
const MAX_VIOLATIONS: usize = 20;

/// One worker message as the reporting worker and its (job id, report)
/// pairs. Any bad field refuses the whole message.
pub fn progress_from_pb(
    request: pb::ReportProgressRequest,
) -> Result<(String, Vec<(String, ClaimProgress)>), ControlError> {
    let mut violations = Vec::new();
    if request.worker.is_empty() {
        violations.push(FieldViolation::new("worker", "required: the reporting worker's name"));
    } else if request.worker.chars().count() > MAX_WORKER_NAME {
        violations.push(FieldViolation::new("worker", format!("at most {MAX_WORKER_NAME} characters allowed")));
    }
    let reports: Vec<(String, ClaimProgress)> = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| claim_progress_from_pb(job, &format!("jobs[{i}]."), &request.worker, &mut violations))
        .collect();
    if !violations.is_empty() {
        violations.truncate(MAX_VIOLATIONS);
        return Err(ControlError::Invalid(violations));
    }
    Ok((request.worker, reports))
}

fn claim_progress_from_pb(
    job: pb::JobProgress,
    path: &str,
    worker: &str,
    violations: &mut Vec<FieldViolation>,
) -> (String, ClaimProgress) {
    if let Err(e) = validate_job_id(&job.job_id) {
        violations.push(FieldViolation::new(format!("{path}job_id"), e));
    }
    if job.epoch <= 0 {
        violations.push(FieldViolation::new(format!("{path}epoch"), "must be positive: the claim's revision"));
    }
    let mut time = |ts: &pbjson_types::Timestamp, field: &str| {
        timestamp_from_pb(ts, &format!("{path}{field}")).map_err(|v| violations.push(v)).ok()
    };
    let last_success = job.last_success_time.and_then(|ts| time(&ts, "last_success_time"));
    let last_error = match job.last_error {
        Some(pb::JobError { time: Some(ts), message }) => time(&ts, "last_error.time")
            .map(|at| ErrorRecord { time: at, message: message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect() }),
        Some(pb::JobError { time: None, .. }) => {
            violations.push(FieldViolation::new(format!("{path}last_error.time"), "required"));
            None
        }
        None => None,
    };
    let totals = job.counters.as_ref().map(counters_from_pb).unwrap_or_default();
    if job.runs.len() > MAX_RUNS {
        violations.push(FieldViolation::new(format!("{path}runs"), format!("at most {MAX_RUNS} runs per report")));
    }
    let runs = job
        .runs
        .into_iter()
        .take(MAX_RUNS)
        .enumerate()
        .filter_map(|(i, run)| run_from_pb(run, job.epoch, worker, &format!("{path}runs[{i}]."), violations))
        .collect();
    (job.job_id, ClaimProgress { epoch: job.epoch, totals, last_success, last_error, runs })
}

/// A run a worker reports, under the claim `epoch` of its report.
fn run_from_pb(
    run: pb::JobRun,
    epoch: i64,
    worker: &str,
    path: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<RunRecord> {
    let before = violations.len();
    let start = match &run.start_time {
        Some(ts) => timestamp_from_pb(ts, &format!("{path}start_time")).map_err(|v| violations.push(v)).ok(),
        None => {
            violations.push(FieldViolation::new(format!("{path}start_time"), "required"));
            None
        }
    };
    let duration_ms = match run.duration {
        Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => {
            (d.seconds as u64).saturating_mul(1000).saturating_add(d.nanos as u64 / 1_000_000)
        }
        _ => {
            violations.push(FieldViolation::new(format!("{path}duration"), "required, not negative"));
            0
        }
    };
    let outcome = match pb::RunOutcome::try_from(run.outcome) {
        Ok(pb::RunOutcome::Succeeded) => RunOutcome::Succeeded,
        Ok(pb::RunOutcome::Warning) => RunOutcome::Warning,
        Ok(pb::RunOutcome::Failed) => RunOutcome::Failed,
        _ => {
            violations.push(FieldViolation::new(format!("{path}outcome"), "required: succeeded, warning or failed"));
            RunOutcome::Failed
        }
    };
    if run.epoch != 0 && run.epoch != epoch {
        violations.push(FieldViolation::new(format!("{path}epoch"), "must be the report's epoch"));
    }
    if run.seq == 0 {
        violations
            .push(FieldViolation::new(format!("{path}seq"), "must be positive: the run's number under its claim"));
    }
    if violations.len() > before {
        return None;
    }
    let message =
        Some(run.message).filter(|m| !m.is_empty()).map(|m| m.chars().take(MAX_ERROR_MESSAGE_CHARS).collect());
    Some(RunRecord {
        epoch,
        seq: run.seq,
        worker: worker.to_string(),
        start: start?,
        duration_ms,
        outcome,
        counters: run.counters.as_ref().map(counters_from_pb).unwrap_or_default(),
        message,
    })
}

pub fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Paused => pb::JobState::Paused,
        JobState::Unschedulable => pb::JobState::Unschedulable,
        JobState::Failing => pb::JobState::Failing,
    }
}

/// A wire state filter; `UNSPECIFIED` means no filter.
pub fn state_filter_from_pb(state: i32) -> Result<Option<JobState>, ControlError> {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Unspecified) => Ok(None),
        Ok(pb::JobState::Pending) => Ok(Some(JobState::Pending)),
        Ok(pb::JobState::Running) => Ok(Some(JobState::Running)),
        Ok(pb::JobState::Paused) => Ok(Some(JobState::Paused)),
        Ok(pb::JobState::Unschedulable) => Ok(Some(JobState::Unschedulable)),
        Ok(pb::JobState::Failing) => Ok(Some(JobState::Failing)),
        Err(_) => Err(ControlError::invalid("state", format!("unknown job state {state}"))),
    }
}

pub fn job_type_to_pb(view: JobTypeView) -> pb::JobType {
    let JobTypeView { spec, workers } = view;
    let JobTypeSpec { name, description, params, default_interval, min_interval, rules } = spec;
    pb::JobType {
        name,
        description,
        params: params.into_iter().map(param_to_pb).collect(),
        default_interval: Some(duration_to_pb(default_interval)),
        min_interval: Some(duration_to_pb(min_interval)),
        workers,
        rules: rules.into_iter().map(rule_to_pb).collect(),
    }
}

fn rule_to_pb(rule: ParamRule) -> pb::ParamRule {
    use pb::param_rule::Rule;
    let rule = match rule {
        ParamRule::RequiredIf { param, when, equals } => Rule::RequiredIf(pb::ParamRequiredIf { param, when, equals }),
        ParamRule::OneOf { sets, required } => Rule::OneOf(pb::ParamOneOf {
            sets: sets.into_iter().map(|params| pb::ParamSet { params }).collect(),
            required,
        }),
        ParamRule::AnyOf { params } => Rule::AnyOf(pb::ParamAnyOf { params }),
    };
    pb::ParamRule { rule: Some(rule) }
}

fn param_to_pb(p: ParamSpec) -> pb::ParamSpec {
    pb::ParamSpec {
        name: p.name,
        kind: kind_to_pb(p.kind) as i32,
        required: p.required,
        default_value: p.default.as_ref().map(json_to_value),
        description: p.description,
        allowed_values: p.allowed_values,
        minimum: p.minimum,
        maximum: p.maximum,
        max_length: p.max_length,
        pattern: p.pattern,
    }
}

fn kind_to_pb(kind: ParamKind) -> pb::ParamKind {
    match kind {
        ParamKind::String => pb::ParamKind::String,
        ParamKind::Integer => pb::ParamKind::Integer,
        ParamKind::Number => pb::ParamKind::Number,
        ParamKind::Boolean => pb::ParamKind::Boolean,
        ParamKind::Enum => pb::ParamKind::Enum,
        ParamKind::Url => pb::ParamKind::Url,
        ParamKind::Duration => pb::ParamKind::Duration,
        ParamKind::List => pb::ParamKind::List,
        ParamKind::Secret => pb::ParamKind::Secret,
        ParamKind::Json => pb::ParamKind::Json,
    }
}

pub fn worker_to_pb(view: WorkerView) -> pb::Worker {
    let WorkerView { record, jobs_owned, counters, load } = view;
    let load = load.unwrap_or_default();
    pb::Worker {
        cpu_percent: load.cpu_percent,
        rss_bytes: load.rss_bytes,
        heartbeat_time: (load.time > 0).then(|| timestamp(load.time)),
        jobs_by_type: load.jobs_by_type.into_iter().collect(),
        name: record.name,
        state: match record.state {
            WorkerState::Active => pb::WorkerState::Active,
            WorkerState::Draining => pb::WorkerState::Draining,
        } as i32,
        weight: record.weight,
        job_types: record.types,
        version: record.version,
        start_time: Some(timestamp(record.start_time)),
        jobs_owned,
        counters: Some(counters_to_pb(&counters)),
    }
}

pub fn watch_update_to_pb(update: WatchUpdate) -> pb::WatchJobsResponse {
    pb::WatchJobsResponse {
        revision: update.revision,
        snapshot: update.snapshot,
        synced: update.synced,
        events: update
            .events
            .into_iter()
            .map(|event| match event {
                JobEvent::Upserted(view) => {
                    pb::JobEvent { r#type: pb::JobEventType::Upserted as i32, job: Some(job_to_pb(*view)) }
                }
                JobEvent::Deleted(id) => pb::JobEvent {
                    r#type: pb::JobEventType::Deleted as i32,
                    job: Some(pb::Job { id, ..Default::default() }),
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn struct_round_trips_through_json() {
        let json = json!({"a": "x", "b": 2.5, "c": true, "d": ["p", "q"], "e": null, "f": {"g": 1.0}});
        let map = json.as_object().cloned().unwrap_or_default();
        assert_eq!(struct_to_json(json_to_struct(&map)), map);
    }

    #[test]
    fn negative_durations_are_refused() {
        let err = duration_from_pb(pbjson_types::Duration { seconds: -5, nanos: 0 }, "job.interval").unwrap_err();
        assert!(matches!(err, ControlError::Invalid(v) if v[0].field == "job.interval"));
    }

    fn job_progress(job_id: &str, epoch: i64) -> pb::JobProgress {
        pb::JobProgress { job_id: job_id.into(), epoch, ..Default::default() }
    }

    #[test]
    fn progress_reports_convert_with_their_times_and_a_cut_error_message() {
        let mut job = job_progress("a-1", 7);
        job.counters = Some(pb::JobCounters { items_fetched: 3, runs: 1, ..Default::default() });
        job.last_success_time = Some(timestamp(1_500));
        job.last_error = Some(pb::JobError { time: Some(timestamp(2_000)), message: "x".repeat(5000) });
        let request = pb::ReportProgressRequest { worker: "w1".into(), jobs: vec![job, job_progress("b", 1)] };
        let (worker, reports) = progress_from_pb(request).expect("valid");
        assert_eq!(worker, "w1");
        let (id, report) = &reports[0];
        assert_eq!((id.as_str(), report.epoch, report.totals.items_fetched), ("a-1", 7, 3));
        assert_eq!(report.last_success, Some(1_500));
        let error = report.last_error.as_ref().expect("error kept");
        assert_eq!((error.time, error.message.len()), (2_000, MAX_ERROR_MESSAGE_CHARS));
        assert_eq!(reports[1].1.totals, ingest_model::Counters::default(), "counters may be left out");
    }

    #[test]
    fn bad_progress_reports_get_one_violation_per_bad_field() {
        let mut bad_times = job_progress("ok", 1);
        bad_times.last_success_time = Some(pbjson_types::Timestamp { seconds: 0, nanos: -1 });
        bad_times.last_error = Some(pb::JobError { time: None, message: "boom".into() });
        let request = pb::ReportProgressRequest {
            worker: "w".repeat(MAX_WORKER_NAME + 1),
            jobs: vec![job_progress("Bad_Id", 0), bad_times],
        };
        let Err(ControlError::Invalid(violations)) = progress_from_pb(request) else { panic!("must be refused") };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["worker", "jobs[0].job_id", "jobs[0].epoch", "jobs[1].last_success_time", "jobs[1].last_error.time"]
        );
        let empty = pb::ReportProgressRequest::default();
        assert!(matches!(progress_from_pb(empty), Err(ControlError::Invalid(v)) if v[0].field == "worker"));
    }
}
