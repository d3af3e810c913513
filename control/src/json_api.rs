//! `ingest.v1.JobService` over HTTP/JSON, for the web UI and for curl:
//! `POST /api/ingest.v1.JobService/<Method>` with the request message in the
//! proto3 JSON mapping (an empty body is the empty message) answers the
//! response message likewise. `WatchJobs` answers a stream of
//! `WatchJobsResponse` messages, one JSON document per line
//! (`application/x-ndjson`). One departure from the canonical mapping:
//! a `FieldMask` is written `{"paths": ["name", "params"]}` (pbjson-types
//! does not read the string form).
//!
//! Every call goes through the same [`GrpcJobService`] as gRPC, so
//! validation and the error mapping are the gRPC ones; a `Status` becomes an
//! HTTP status by [`crate::error::http_status`] and a JSON body
//! `{"code", "message", "fieldViolations"}`. The bearer token, when control
//! has one, is checked as for gRPC; a request from a browser page of another
//! origin is refused.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ingest_proto::v1 as pb;
use ingest_proto::v1::job_service_server::JobService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic_types::StatusExt;

use crate::auth::Auth;
use crate::error::{code_name, http_status};
use crate::grpc::GrpcJobService;

/// What the API handlers share.
pub struct JsonApi {
    pub jobs: GrpcJobService,
    pub auth: Auth,
    pub hosts: crate::http::AllowedHosts,
}

/// `POST /api/ingest.v1.JobService/{method}`.
pub async fn call(
    State(api): State<std::sync::Arc<JsonApi>>,
    Path(method): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = check_origin(&headers).and_then(|()| check_site(&headers, &uri, &api.hosts)) {
        return error_response(&refused);
    }
    if let Err(status) = api.auth.authorize(&headers, &format!("/ingest.v1.JobService/{method}")) {
        return error_response(&status);
    }
    let metadata = MetadataMap::from_headers(headers);
    let jobs = &api.jobs;
    match method.as_str() {
        "CreateJob" => unary(&body, metadata, |r| jobs.create_job(r)).await,
        "GetJob" => unary(&body, metadata, |r| jobs.get_job(r)).await,
        "ListJobs" => unary(&body, metadata, |r| jobs.list_jobs(r)).await,
        "UpdateJob" => unary(&body, metadata, |r| jobs.update_job(r)).await,
        "DeleteJob" => unary(&body, metadata, |r| jobs.delete_job(r)).await,
        "PauseJob" => unary(&body, metadata, |r| jobs.pause_job(r)).await,
        "ResumeJob" => unary(&body, metadata, |r| jobs.resume_job(r)).await,
        "RunJobNow" => unary(&body, metadata, |r| jobs.run_job_now(r)).await,
        "ResetJobCursor" => unary(&body, metadata, |r| jobs.reset_job_cursor(r)).await,
        "ListJobTypes" => unary(&body, metadata, |r| jobs.list_job_types(r)).await,
        "ListWorkers" => unary(&body, metadata, |r| jobs.list_workers(r)).await,
        "PreviewSchedule" => unary(&body, metadata, |r| jobs.preview_schedule(r)).await,
        "ListDeadLetters" => unary(&body, metadata, |r| jobs.list_dead_letters(r)).await,
        "GetDeadLetter" => unary(&body, metadata, |r| jobs.get_dead_letter(r)).await,
        "ReplayDeadLetters" => unary(&body, metadata, |r| jobs.replay_dead_letters(r)).await,
        "PurgeDeadLetters" => unary(&body, metadata, |r| jobs.purge_dead_letters(r)).await,
        "PreviewJob" => unary(&body, metadata, |r| jobs.preview_job(r)).await,
        "ImportOpml" => unary(&body, metadata, |r| jobs.import_opml(r)).await,
        "ExportOpml" => unary(&body, metadata, |r| jobs.export_opml(r)).await,
        "ExportJobs" => unary(&body, metadata, |r| jobs.export_jobs(r)).await,
        "ImportJobs" => unary(&body, metadata, |r| jobs.import_jobs(r)).await,
        "ListJobRuns" => unary(&body, metadata, |r| jobs.list_job_runs(r)).await,
        "PauseJobs" => unary(&body, metadata, |r| jobs.pause_jobs(r)).await,
        "ResumeJobs" => unary(&body, metadata, |r| jobs.resume_jobs(r)).await,
        "RunJobsNow" => unary(&body, metadata, |r| jobs.run_jobs_now(r)).await,
        "DeleteJobs" => unary(&body, metadata, |r| jobs.delete_jobs(r)).await,
        "WatchJobs" => watch(jobs, &body, metadata).await,
        other => error_response(&Status::unimplemented(format!("ingest.v1.JobService has no method '{other}'"))),
    }
}

/// `POST /api/session`: what the caller's token may do, so the UI shows
/// only what it can use: `{"auth": true, "role": "read"}` (`"admin"` when
/// control has no token). Refused like any call when the token is missing
/// or unknown.
pub async fn session(State(api): State<std::sync::Arc<JsonApi>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    if let Err(refused) = check_origin(&headers).and_then(|()| check_site(&headers, &uri, &api.hosts)) {
        return error_response(&refused);
    }
    match api.auth.caller(&headers) {
        Ok(role) => json_response(
            StatusCode::OK,
            &json!({"auth": role.is_some(), "role": role.map_or("admin", |r| r.as_str())}),
        ),
        Err(status) => error_response(&status),
    }
}

/// Decodes the request (empty body: the default message), calls, encodes.
async fn unary<Req, Resp, F, Fut>(body: &[u8], metadata: MetadataMap, method: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match decode::<Req>(body) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    let request = tonic::Request::from_parts(metadata, Default::default(), request);
    match method(request).await {
        Ok(response) => json_response(StatusCode::OK, &response.into_inner()),
        Err(status) => error_response(&status),
    }
}

async fn watch(jobs: &GrpcJobService, body: &[u8], metadata: MetadataMap) -> Response {
    let request = match decode::<pb::WatchJobsRequest>(body) {
        Ok(request) => tonic::Request::from_parts(metadata, Default::default(), request),
        Err(status) => return error_response(&status),
    };
    let stream = match jobs.watch_jobs(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return error_response(&status),
    };
    // An error ends the stream with one last line: {"error": {...}}.
    let lines = stream.scan(false, |ended, item| {
        if *ended {
            return futures::future::ready(None);
        }
        let line = match item {
            Ok(update) => serde_json::to_vec(&update),
            Err(status) => {
                *ended = true;
                serde_json::to_vec(&json!({"error": error_body(&status)}))
            }
        };
        let mut line = line.unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"{e}\"}}}}").into_bytes());
        line.push(b'\n');
        futures::future::ready(Some(Ok::<_, std::convert::Infallible>(Bytes::from(line))))
    });
    let mut response = Body::from_stream(lines).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells proxies such as nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("request body: {e}")))
}

/// Refuses a request made by a page of another origin (its `Origin` header
/// names another host than the one it was sent to). Requests without
/// `Origin` (curl, scripts) pass.
fn check_origin(headers: &HeaderMap) -> Result<(), Status> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    if origin_host.is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host)) {
        return Ok(());
    }
    let shown = origin.to_str().unwrap_or("(not text)");
    Err(Status::permission_denied(format!(
        "cross-origin request from {shown} refused: use the UI served by this control server"
    )))
}

/// Refuses what a browser marks as sent by another site (`Sec-Fetch-Site`,
/// set by the browser, not by page scripts: a cross-site form post without
/// `Origin` is caught here), and requests naming a host this server does not
/// answer to (a DNS-rebinding page sends its own name).
fn check_site(headers: &HeaderMap, uri: &axum::http::Uri, hosts: &crate::http::AllowedHosts) -> Result<(), Status> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("none");
    if !matches!(site, "same-origin" | "none") {
        return Err(Status::permission_denied(format!(
            "request sent by another site ({site}) refused: use the UI served by this control server"
        )));
    }
    // HTTP/2 names the host in the URI's authority instead.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(uri.authority().map(|a| a.as_str()));
    if !hosts.allows(host) {
        return Err(Status::permission_denied(format!(
            "host {} is not one this server answers to: add it to --http-allowed-hosts",
            host.unwrap_or("(none)")
        )));
    }
    Ok(())
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => error_response(&Status::internal(format!("encoding the response: {e}"))),
    }
}

/// `{"code": "INVALID_ARGUMENT", "message": ..., "fieldViolations": [{"field", "description"}]}`.
fn error_body(status: &Status) -> serde_json::Value {
    let violations: Vec<serde_json::Value> = status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations.iter().map(|v| json!({"field": v.field, "description": v.description})).collect()
        })
        .unwrap_or_default();
    json!({"code": code_name(status.code()), "message": status.message(), "fieldViolations": violations})
}

fn error_response(status: &Status) -> Response {
    let code = StatusCode::from_u16(http_status(status.code())).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error_body(status))
}
