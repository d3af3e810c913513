//! The gRPC faces of the service layer: `ingest.v1.JobService` and
//! `ingest.v1.WorkerService`. Thin: decode the request, call
//! [`ControlService`] or the [`ProgressRecorder`], encode the answer; errors
//! become a `Status` only through `From<ControlError>`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use ingest_proto::v1 as pb;
use ingest_proto::v1::job_service_server::JobService;
use ingest_proto::v1::worker_service_server::WorkerService;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{
    duration_from_pb, imported_feed_to_pb, job_spec_to_pb, job_to_pb, job_type_to_pb, letter_to_pb, outcomes_to_pb,
    params_from_pb, preview_to_pb, schedule_from_pb, state_filter_from_pb, watch_update_to_pb, worker_to_pb,
};
use crate::error::{ControlError, code_name};
use crate::preview::PreviewAsk;
use crate::progress::ProgressRecorder;
use crate::service::{BulkAction, ControlService, JobChange, JobFilter, JobPick, NewJob};
use crate::transfer::{JobImport, OpmlImport};
use crate::watch::watch_jobs;
use ingest_model::Selector;
use ingest_proto::convert::run_to_pb;
use ingest_runtime::metrics as m;

/// Update mask paths UpdateJob accepts.
const UPDATABLE: [&str; 6] = ["name", "params", "interval", "paused", "labels", "schedule"];

pub struct GrpcJobService {
    service: ControlService,
    shutdown: CancellationToken,
}

impl GrpcJobService {
    pub fn new(service: ControlService, shutdown: CancellationToken) -> Self {
        Self { service, shutdown }
    }
}

type Result<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl JobService for GrpcJobService {
    async fn create_job(&self, request: Request<pb::CreateJobRequest>) -> Result<pb::CreateJobResponse> {
        observed("CreateJob", async move {
            let request = request.into_inner();
            let job = request.job.ok_or_else(|| ControlError::invalid("job", "required"))?;
            let interval = job.interval.map(|d| duration_from_pb(d, "job.interval")).transpose()?;
            let new = NewJob {
                id: Some(request.job_id),
                name: job.name,
                job_type: job.r#type,
                params: params_from_pb(job.params.unwrap_or_default())?,
                interval,
                paused: job.paused,
                labels: job.labels.into_iter().collect(),
                schedule: schedule_from_pb(job.schedule),
            };
            let view = self.service.create_job(new, request.validate_only).await?;
            Ok(Response::new(pb::CreateJobResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<pb::GetJobResponse> {
        observed("GetJob", async move {
            let view = self.service.get_job(&request.into_inner().id).await?;
            Ok(Response::new(pb::GetJobResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<pb::ListJobsResponse> {
        observed("ListJobs", async move {
            let request = request.into_inner();
            if request.page_size < 0 {
                return Err(ControlError::invalid("page_size", "must not be negative").into());
            }
            let after = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
            if let Some(token) = after
                && ingest_model::validate_job_id(token).is_err()
            {
                return Err(ControlError::invalid("page_token", "not a token returned by ListJobs").into());
            }
            let filter = JobFilter {
                job_type: Some(request.r#type).filter(|t| !t.is_empty()),
                state: state_filter_from_pb(request.state)?,
                selector: selector_from_pb(&request.label_selector)?,
            };
            let page = self.service.list_jobs(&filter, request.page_size as usize, after).await?;
            Ok(Response::new(pb::ListJobsResponse {
                jobs: page.jobs.into_iter().map(job_to_pb).collect(),
                next_page_token: page.next_after.unwrap_or_default(),
            }))
        })
        .await
    }

    async fn update_job(&self, request: Request<pb::UpdateJobRequest>) -> Result<pb::UpdateJobResponse> {
        observed("UpdateJob", async move {
            let request = request.into_inner();
            let job = request.job.ok_or_else(|| ControlError::invalid("job", "required"))?;
            let paths: Vec<String> = match request.update_mask {
                Some(mask) if !mask.paths.is_empty() => mask.paths,
                _ => UPDATABLE.iter().map(|p| p.to_string()).collect(),
            };
            if let Some(bad) = paths.iter().find(|p| !UPDATABLE.contains(&p.as_str())) {
                let msg = format!("cannot update '{bad}'; updatable fields: {}", UPDATABLE.join(", "));
                return Err(ControlError::invalid("update_mask", msg).into());
            }
            let has = |p: &str| paths.iter().any(|x| x == p);
            let interval = if has("interval") {
                Some(job.interval.map(|d| duration_from_pb(d, "job.interval")).transpose()?)
            } else {
                None
            };
            let change = JobChange {
                id: job.id,
                revision: job.revision,
                job_type: job.r#type,
                name: has("name").then_some(job.name),
                params: has("params").then(|| params_from_pb(job.params.unwrap_or_default())).transpose()?,
                interval,
                paused: has("paused").then_some(job.paused),
                labels: has("labels").then(|| job.labels.into_iter().collect()),
                schedule: has("schedule").then(|| schedule_from_pb(job.schedule)),
            };
            let view = self.service.update_job(change).await?;
            Ok(Response::new(pb::UpdateJobResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn delete_job(&self, request: Request<pb::DeleteJobRequest>) -> Result<pb::DeleteJobResponse> {
        observed("DeleteJob", async move {
            let request = request.into_inner();
            self.service.delete_job(&request.id, request.revision).await?;
            Ok(Response::new(pb::DeleteJobResponse {}))
        })
        .await
    }

    async fn pause_job(&self, request: Request<pb::PauseJobRequest>) -> Result<pb::PauseJobResponse> {
        observed("PauseJob", async move {
            let view = self.service.set_paused(&request.into_inner().id, true).await?;
            Ok(Response::new(pb::PauseJobResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn resume_job(&self, request: Request<pb::ResumeJobRequest>) -> Result<pb::ResumeJobResponse> {
        observed("ResumeJob", async move {
            let view = self.service.set_paused(&request.into_inner().id, false).await?;
            Ok(Response::new(pb::ResumeJobResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn run_job_now(&self, request: Request<pb::RunJobNowRequest>) -> Result<pb::RunJobNowResponse> {
        observed("RunJobNow", async move {
            let view = self.service.run_now(&request.into_inner().id).await?;
            Ok(Response::new(pb::RunJobNowResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn reset_job_cursor(
        &self,
        request: Request<pb::ResetJobCursorRequest>,
    ) -> Result<pb::ResetJobCursorResponse> {
        observed("ResetJobCursor", async move {
            let view = self.service.reset_cursor(&request.into_inner().id).await?;
            Ok(Response::new(pb::ResetJobCursorResponse { job: Some(job_to_pb(view)) }))
        })
        .await
    }

    async fn list_job_types(&self, _request: Request<pb::ListJobTypesRequest>) -> Result<pb::ListJobTypesResponse> {
        observed("ListJobTypes", async move {
            let types = self.service.list_job_types().await?;
            Ok(Response::new(pb::ListJobTypesResponse { job_types: types.into_iter().map(job_type_to_pb).collect() }))
        })
        .await
    }

    type WatchJobsStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::WatchJobsResponse, Status>> + Send>>;

    async fn watch_jobs(&self, request: Request<pb::WatchJobsRequest>) -> Result<Self::WatchJobsStream> {
        observed("WatchJobs", async move {
            let request = request.into_inner();
            let filter = JobFilter {
                job_type: Some(request.r#type).filter(|t| !t.is_empty()),
                state: None,
                selector: selector_from_pb(&request.label_selector)?,
            };
            let rx = watch_jobs(&self.service, filter, request.start_revision, self.shutdown.child_token()).await?;
            let stream = ReceiverStream::new(rx).map(|item| item.map(watch_update_to_pb).map_err(Status::from));
            Ok(Response::new(Box::pin(stream) as Self::WatchJobsStream))
        })
        .await
    }

    async fn list_workers(&self, _request: Request<pb::ListWorkersRequest>) -> Result<pb::ListWorkersResponse> {
        observed("ListWorkers", async move {
            let workers = self.service.list_workers().await?;
            Ok(Response::new(pb::ListWorkersResponse { workers: workers.into_iter().map(worker_to_pb).collect() }))
        })
        .await
    }

    async fn list_job_runs(&self, request: Request<pb::ListJobRunsRequest>) -> Result<pb::ListJobRunsResponse> {
        observed("ListJobRuns", async move {
            let runs = self.service.list_job_runs(&request.into_inner().id).await?;
            Ok(Response::new(pb::ListJobRunsResponse { runs: runs.iter().map(run_to_pb).collect() }))
        })
        .await
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<pb::PreviewScheduleResponse> {
        observed("PreviewSchedule", async move {
            let request = request.into_inner();
            if request.count < 0 {
                return Err(ControlError::invalid("count", "must not be negative").into());
            }
            let interval = request.interval.map(|d| duration_from_pb(d, "interval")).transpose()?;
            let count = if request.count == 0 { 5 } else { request.count as usize };
            let times = self.service.preview_schedule(&schedule_from_pb(request.schedule), interval, count)?;
            Ok(Response::new(pb::PreviewScheduleResponse {
                run_times: times.into_iter().map(ingest_proto::convert::timestamp).collect(),
            }))
        })
        .await
    }

    async fn import_opml(&self, request: Request<pb::ImportOpmlRequest>) -> Result<pb::ImportOpmlResponse> {
        observed("ImportOpml", async move {
            let request = request.into_inner();
            let import = OpmlImport {
                opml: request.opml,
                validate_only: request.validate_only,
                interval: request.interval.map(|d| duration_from_pb(d, "interval")).transpose()?,
                labels: request.labels.into_iter().collect(),
                paused: request.paused,
            };
            let feeds = self.service.import_opml(import).await?;
            Ok(Response::new(pb::ImportOpmlResponse { feeds: feeds.into_iter().map(imported_feed_to_pb).collect() }))
        })
        .await
    }

    async fn export_opml(&self, request: Request<pb::ExportOpmlRequest>) -> Result<pb::ExportOpmlResponse> {
        observed("ExportOpml", async move {
            let selector = selector_from_pb(&request.into_inner().label_selector)?;
            let opml = self.service.export_opml(selector.as_ref()).await?;
            Ok(Response::new(pb::ExportOpmlResponse { opml }))
        })
        .await
    }

    async fn export_jobs(&self, request: Request<pb::ExportJobsRequest>) -> Result<pb::ExportJobsResponse> {
        observed("ExportJobs", async move {
            let selector = selector_from_pb(&request.into_inner().label_selector)?;
            let jobs = self.service.export_jobs(selector.as_ref()).await?;
            Ok(Response::new(pb::ExportJobsResponse { jobs: jobs.into_iter().map(job_spec_to_pb).collect() }))
        })
        .await
    }

    async fn import_jobs(&self, request: Request<pb::ImportJobsRequest>) -> Result<pb::ImportJobsResponse> {
        observed("ImportJobs", async move {
            let request = request.into_inner();
            let mut imports = Vec::with_capacity(request.jobs.len().min(crate::service::MAX_BULK));
            for (i, job) in request.jobs.into_iter().enumerate() {
                let field = format!("jobs[{i}].interval");
                let interval = job.interval.map(|d| duration_from_pb(d, &field)).transpose()?;
                let params = params_from_pb(job.params.unwrap_or_default())?;
                imports.push(JobImport {
                    job: NewJob {
                        id: Some(job.id),
                        name: job.name,
                        job_type: job.r#type,
                        params,
                        interval,
                        paused: job.paused,
                        labels: job.labels.into_iter().collect(),
                        schedule: schedule_from_pb(job.schedule),
                    },
                    secret_names: job.secret_params_set,
                });
            }
            let outcomes = self.service.import_jobs(imports, request.validate_only).await?;
            Ok(Response::new(pb::ImportJobsResponse { results: outcomes_to_pb(outcomes) }))
        })
        .await
    }

    async fn preview_job(&self, request: Request<pb::PreviewJobRequest>) -> Result<pb::PreviewJobResponse> {
        observed("PreviewJob", async move {
            let request = request.into_inner();
            let job = request.job.ok_or_else(|| ControlError::invalid("job", "required"))?;
            if request.max_documents < 0 {
                return Err(ControlError::invalid("max_documents", "must not be negative").into());
            }
            let ask = PreviewAsk {
                id: Some(job.id).filter(|id| !id.is_empty()),
                job_type: job.r#type,
                params: job.params.map(params_from_pb).transpose()?,
                max_documents: request.max_documents as usize,
                timeout: request.timeout.map(|d| duration_from_pb(d, "timeout")).transpose()?.unwrap_or_default(),
            };
            let answer = self.service.preview_job(ask).await?;
            Ok(Response::new(preview_to_pb(answer)))
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<pb::ListDeadLettersResponse> {
        observed("ListDeadLetters", async move {
            let request = request.into_inner();
            if request.page_size < 0 {
                return Err(ControlError::invalid("page_size", "must not be negative").into());
            }
            let after = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
            let page = self.service.list_dead_letters(&request.job_id, request.page_size as usize, after).await?;
            Ok(Response::new(pb::ListDeadLettersResponse {
                dead_letters: page.letters.into_iter().map(|l| letter_to_pb(l, false)).collect(),
                next_page_token: page.next_after.unwrap_or_default(),
                total: page.total,
            }))
        })
        .await
    }

    async fn get_dead_letter(&self, request: Request<pb::GetDeadLetterRequest>) -> Result<pb::GetDeadLetterResponse> {
        observed("GetDeadLetter", async move {
            let request = request.into_inner();
            let letter = self.service.get_dead_letter(&request.job_id, &request.letter_id).await?;
            Ok(Response::new(pb::GetDeadLetterResponse { dead_letter: Some(letter_to_pb(letter, true)) }))
        })
        .await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<pb::ReplayDeadLettersResponse> {
        observed("ReplayDeadLetters", async move {
            let request = request.into_inner();
            let queued = self.service.replay_dead_letters(&request.job_id, &request.letter_ids).await?;
            Ok(Response::new(pb::ReplayDeadLettersResponse { queued }))
        })
        .await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<pb::PurgeDeadLettersResponse> {
        observed("PurgeDeadLetters", async move {
            let request = request.into_inner();
            let purged = self.service.purge_dead_letters(&request.job_id, &request.letter_ids).await?;
            Ok(Response::new(pb::PurgeDeadLettersResponse { purged }))
        })
        .await
    }

    async fn pause_jobs(&self, request: Request<pb::PauseJobsRequest>) -> Result<pb::PauseJobsResponse> {
        observed("PauseJobs", async move {
            let pb::PauseJobsRequest { ids, label_selector } = request.into_inner();
            let outcomes = self.service.bulk(JobPick { ids, label_selector }, BulkAction::Pause).await?;
            Ok(Response::new(pb::PauseJobsResponse { results: outcomes_to_pb(outcomes) }))
        })
        .await
    }

    async fn resume_jobs(&self, request: Request<pb::ResumeJobsRequest>) -> Result<pb::ResumeJobsResponse> {
        observed("ResumeJobs", async move {
            let pb::ResumeJobsRequest { ids, label_selector } = request.into_inner();
            let outcomes = self.service.bulk(JobPick { ids, label_selector }, BulkAction::Resume).await?;
            Ok(Response::new(pb::ResumeJobsResponse { results: outcomes_to_pb(outcomes) }))
        })
        .await
    }

    async fn run_jobs_now(&self, request: Request<pb::RunJobsNowRequest>) -> Result<pb::RunJobsNowResponse> {
        observed("RunJobsNow", async move {
            let pb::RunJobsNowRequest { ids, label_selector } = request.into_inner();
            let outcomes = self.service.bulk(JobPick { ids, label_selector }, BulkAction::RunNow).await?;
            Ok(Response::new(pb::RunJobsNowResponse { results: outcomes_to_pb(outcomes) }))
        })
        .await
    }

    async fn delete_jobs(&self, request: Request<pb::DeleteJobsRequest>) -> Result<pb::DeleteJobsResponse> {
        observed("DeleteJobs", async move {
            let pb::DeleteJobsRequest { ids, label_selector } = request.into_inner();
            let outcomes = self.service.bulk(JobPick { ids, label_selector }, BulkAction::Delete).await?;
            Ok(Response::new(pb::DeleteJobsResponse { results: outcomes_to_pb(outcomes) }))
        })
        .await
    }
}

/// A label selector from a request: `None` when empty.
fn selector_from_pb(text: &str) -> std::result::Result<Option<Selector>, ControlError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Selector::parse(text).map(Some).map_err(|e| ControlError::invalid("label_selector", e))
}

/// Counts and times a JobService call (gRPC or HTTP/JSON) by method and code.
async fn observed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = std::result::Result<T, Status>>,
) -> std::result::Result<T, Status> {
    let started = std::time::Instant::now();
    let result = call.await;
    let code = code_name(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
    metrics::counter!(m::REQUESTS, "method" => method, "code" => code).increment(1);
    metrics::histogram!(m::REQUEST_SECONDS, "method" => method).record(started.elapsed().as_secs_f64());
    result
}

pub struct GrpcWorkerService {
    recorder: Arc<ProgressRecorder>,
    shutdown: CancellationToken,
}

impl GrpcWorkerService {
    pub fn new(recorder: Arc<ProgressRecorder>, shutdown: CancellationToken) -> Self {
        Self { recorder, shutdown }
    }
}

#[tonic::async_trait]
impl WorkerService for GrpcWorkerService {
    /// Records every message until the worker closes the stream. Reports for
    /// jobs that do not exist are accepted and dropped at the flush: a job may
    /// be deleted while its owner still reports, and checking each report
    /// here would cost a store read per message.
    async fn report_progress(
        &self,
        request: Request<Streaming<pb::ReportProgressRequest>>,
    ) -> Result<pb::ReportProgressResponse> {
        let mut stream = request.into_inner();
        loop {
            let message = tokio::select! {
                message = stream.message() => message?,
                // Lets the server drain; the worker reconnects elsewhere and,
                // reporting totals, loses nothing.
                () = self.shutdown.cancelled() => {
                    return Err(ControlError::ShuttingDown.into());
                }
            };
            let Some(message) = message else { break };
            self.recorder.receive(message)?;
        }
        Ok(Response::new(pb::ReportProgressResponse {}))
    }
}
