//! The control plane's errors and their one mapping to gRPC status codes.
//! Domain code returns [`ControlError`]; only [`From<ControlError> for Status`]
//! builds a `tonic::Status`; the HTTP/JSON API turns a status code into an
//! HTTP status with [`http_status`] (the table of `google.rpc.Code`).

use ingest_model::FieldViolation;
use ingest_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed; one violation per bad field.
    #[error("invalid request: {}", summarize(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },
    #[error("job '{0}' already exists")]
    AlreadyExists(String),
    /// Optimistic concurrency: the object changed since the caller read it.
    #[error("job '{id}' changed since revision {expected} (now {actual}); read it again and retry")]
    Conflict { id: String, expected: i64, actual: i64 },
    /// A watch asked for history that has been compacted.
    #[error("revision {requested} has been compacted; watch again without start_revision to get a fresh snapshot")]
    Compacted { requested: i64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The cluster is not in a state to do it (e.g. no live worker runs
    /// the job's type); the message says what to do.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A worker did not answer in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The server is stopping; clients reconnect (to another replica).
    #[error("control is shutting down; reconnect")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

fn summarize(violations: &[FieldViolation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl From<StoreError> for ControlError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(msg) => Self::Unavailable(msg),
            StoreError::Compacted { requested, .. } => Self::Compacted { requested },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ControlError> for Status {
    fn from(err: ControlError) -> Self {
        let message = err.to_string();
        match err {
            ControlError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ControlError::NotFound { .. } => Status::not_found(message),
            ControlError::AlreadyExists(_) => Status::already_exists(message),
            ControlError::Conflict { .. } => Status::aborted(message),
            ControlError::Compacted { .. } => Status::out_of_range(message),
            ControlError::Unavailable(_) | ControlError::ShuttingDown => Status::unavailable(message),
            ControlError::FailedPrecondition(_) => Status::failed_precondition(message),
            ControlError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            ControlError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                Status::internal(message)
            }
        }
    }
}

/// The HTTP status of a gRPC code, as `google.rpc.Code` documents it.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_carries_one_bad_request_violation_per_field() {
        let err = ControlError::Invalid(vec![
            FieldViolation::new("job.name", "must not be empty"),
            FieldViolation::new("job.params.url", "required url parameter is missing"),
        ]);
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest details");
        let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["job.name", "job.params.url"]);
    }

    #[test]
    fn conflicts_abort_and_compactions_are_out_of_range() {
        let conflict = ControlError::Conflict { id: "a".into(), expected: 3, actual: 4 };
        assert_eq!(Status::from(conflict).code(), Code::Aborted);
        assert_eq!(Status::from(ControlError::Compacted { requested: 2 }).code(), Code::OutOfRange);
        let unavailable = ControlError::from(StoreError::Unavailable("down".into()));
        assert_eq!(Status::from(unavailable).code(), Code::Unavailable);
        assert_eq!(Status::from(ControlError::ShuttingDown).code(), Code::Unavailable);
    }
}
