//! Dry runs (`PreviewJob`): control asks one live worker that runs the
//! job's type, through the store (`previews/<id>`, under a lease of its own
//! so an abandoned request vanishes), and waits for its answer there.
//! Checked like a create or an update first; secrets follow the same rules
//! (sealed at rest, only to the origin they were entered for).

use std::time::Duration;

use ingest_model::{JobRecord, PreviewRecord, PreviewResult, SecretsRecord, SplitParams, now_millis, validate_params};
use ingest_runtime::secrets_key;
use serde_json::{Map, Value};

use crate::error::ControlError;
use crate::service::{ControlService, check_id_field, check_params_size, check_secrets_stay_home};
use crate::views::{Cluster, decode};

pub const DEFAULT_DOCUMENTS: usize = 10;
pub const MAX_DOCUMENTS: usize = 50;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the answer is looked for.
const POLL: Duration = Duration::from_millis(100);
/// Time for the worker to see the request and write its answer, beyond the
/// run's own time.
const SLACK: Duration = Duration::from_secs(5);

/// A dry run as asked for. No `Debug`: params may hold secrets.
#[derive(Clone, Default)]
pub struct PreviewAsk {
    /// An existing job to try (with `params` instead of its own, when given).
    pub id: Option<String>,
    /// A new job's type (or, with `id`, the job's type if given).
    pub job_type: String,
    pub params: Option<Map<String, Value>>,
    pub max_documents: usize,
    pub timeout: Duration,
}

/// What the worker found.
#[derive(Clone, Debug)]
pub struct PreviewAnswer {
    pub worker: String,
    pub job_id: String,
    pub result: PreviewResult,
}

impl ControlService {
    pub async fn preview_job(&self, ask: PreviewAsk) -> Result<PreviewAnswer, ControlError> {
        let mut violations = Vec::new();
        let existing: Option<JobRecord> = match ask.id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => {
                check_id_field("job.id", id)?;
                let kv = self.store().get(&self.keys().job(id)).await?;
                let kv = kv.ok_or_else(|| ControlError::NotFound { what: "job", id: id.to_string() })?;
                Some(decode(&kv).ok_or_else(|| ControlError::Internal(format!("job '{id}' is unreadable")))?)
            }
            None => None,
        };
        let job_type = existing.as_ref().map_or(ask.job_type.clone(), |r| r.job_type.clone());
        if let Some(record) = &existing
            && !ask.job_type.is_empty()
            && ask.job_type != record.job_type
        {
            violations.push(ingest_model::FieldViolation::new(
                "job.type",
                format!("the job's type is '{}'", record.job_type),
            ));
        }
        let Some(spec) = self.type_spec_or_violation(&job_type, &mut violations).await? else {
            return Err(ControlError::Invalid(violations));
        };
        let split = match (&existing, &ask.params) {
            (Some(record), None) => SplitParams { params: record.params.clone(), secrets: Default::default() },
            (existing, Some(params)) => {
                check_params_size(params, &mut violations);
                let kept = existing.as_ref().map_or(&[][..], |r| r.secret_names.as_slice());
                match validate_params(&spec, params, kept, "job.params") {
                    Ok(split) => {
                        if let Some(record) = existing {
                            check_secrets_stay_home(&spec, record, &split, &mut violations);
                        }
                        split
                    }
                    Err(mut v) => {
                        violations.append(&mut v);
                        SplitParams::default()
                    }
                }
            }
            (None, None) => {
                violations.push(ingest_model::FieldViolation::new("job.params", "required for a new job"));
                SplitParams::default()
            }
        };
        if ask.timeout > MAX_TIMEOUT {
            violations.push(ingest_model::FieldViolation::new("timeout", "at most 60 s"));
        }
        if ask.max_documents > MAX_DOCUMENTS {
            violations.push(ingest_model::FieldViolation::new("max_documents", format!("at most {MAX_DOCUMENTS}")));
        }
        if !violations.is_empty() {
            return Err(ControlError::Invalid(violations));
        }
        let cluster = Cluster::read(self.store().as_ref(), self.keys()).await?;
        let workers = cluster.workers_for(&job_type);
        if workers.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "no live worker runs job type '{job_type}': start one that does, then try again"
            )));
        }
        let preview_id = uuid::Uuid::now_v7().simple().to_string();
        // Spread over the workers that can: the id is random enough.
        let worker = workers[preview_id.bytes().map(usize::from).sum::<usize>() % workers.len()].clone();
        let timeout = if ask.timeout.is_zero() { DEFAULT_TIMEOUT } else { ask.timeout };
        let secrets = if split.secrets.is_empty() {
            Vec::new()
        } else {
            let record = SecretsRecord { values: split.secrets };
            secrets_key::store(self.secrets_keys(), &preview_id, &record).map_err(ControlError::Internal)?
        };
        let job_id = existing.as_ref().map_or_else(|| format!("preview-{preview_id}"), |r| r.id.clone());
        let request = PreviewRecord {
            worker: worker.clone(),
            job_id: job_id.clone(),
            existing: existing.is_some(),
            job_type,
            params: split.params,
            secrets,
            max_documents: if ask.max_documents == 0 { DEFAULT_DOCUMENTS } else { ask.max_documents } as u32,
            deadline: now_millis() + timeout.as_millis() as i64,
            result: None,
        };
        let value = serde_json::to_vec(&request).map_err(|e| ControlError::Internal(e.to_string()))?;
        let key = self.keys().preview(&preview_id);
        let lease = self.store().lease_grant(timeout + SLACK * 2).await?;
        let answer = async {
            self.store().put(&key, value, lease).await?;
            let give_up = tokio::time::Instant::now() + timeout + SLACK;
            loop {
                tokio::time::sleep(POLL).await;
                if let Some(kv) = self.store().get(&key).await?
                    && let Some(result) = decode::<PreviewRecord>(&kv).and_then(|r| r.result)
                {
                    return Ok(result);
                }
                if tokio::time::Instant::now() > give_up {
                    return Err(ControlError::DeadlineExceeded(format!(
                        "worker {worker} did not answer the dry run within {} s; try again",
                        (timeout + SLACK).as_secs()
                    )));
                }
            }
        }
        .await;
        // The request (and its secrets) go with the lease, answered or not.
        if let Err(error) = self.store().lease_revoke(lease).await {
            tracing::warn!(%error, preview = %preview_id, "dry run lease not revoked; it expires on its own");
        }
        let result = answer?;
        tracing::info!(preview = %preview_id, job = %job_id, %worker, documents = result.documents_total, "dry run answered");
        Ok(PreviewAnswer { worker, job_id, result })
    }
}
