//! Bearer-token authentication with roles, for gRPC (a tower layer over
//! every service) and the HTTP/JSON API (the same check by method name).
//!
//! Which role a call needs is decided here, once, from its gRPC path:
//! health and reflection are open; reading JobService calls need `read`;
//! WorkerService needs `worker`; everything else — including any method
//! added later and not listed — needs `admin`. The tokens come from
//! `--token` or `--token-file`; the file is re-read when it changes, so
//! tokens rotate without a restart (see `ingest_runtime::tokens`).

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{self, HeaderMap};
use ingest_runtime::tokens::{Role, TokenSource, Tokens};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How often a `--token-file` is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// JobService calls a `read` token may make.
const READ_METHODS: [&str; 11] = [
    "GetJob",
    "ListJobs",
    "WatchJobs",
    "ListJobTypes",
    "ListWorkers",
    "ListJobRuns",
    "PreviewSchedule",
    "ExportOpml",
    "ExportJobs",
    "ListDeadLetters",
    "GetDeadLetter",
];

/// What a call needs: nothing, or a token granting this role.
pub fn needed_role(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => None,
        "ingest.v1.JobService" if READ_METHODS.contains(&method) => Some(Role::Read),
        "ingest.v1.WorkerService" => Some(Role::Worker),
        _ => Some(Role::Admin),
    }
}

/// The tokens in force (none: auth is off). Cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    source: TokenSource,
    tokens: Arc<RwLock<Option<Arc<Tokens>>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("enabled", &self.enabled()).finish()
    }
}

impl Auth {
    /// Loads the tokens; a missing or bad file is an error at start.
    pub fn load(source: TokenSource) -> anyhow::Result<Self> {
        let tokens = source.load()?.map(Arc::new);
        Ok(Self { source, tokens: Arc::new(RwLock::new(tokens)) })
    }

    pub fn enabled(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How many tokens of each role, for the start-up log.
    pub fn summary(&self) -> String {
        self.current().map_or_else(|| "off".to_string(), |t| t.summary())
    }

    /// The role of the caller (`None` when auth is off), or why the call
    /// is refused: no or an unknown token (UNAUTHENTICATED), a token whose
    /// role does not grant `path` (PERMISSION_DENIED).
    pub fn authorize(&self, headers: &HeaderMap, path: &str) -> Result<Option<Role>, Status> {
        let Some(needed) = needed_role(path) else { return Ok(None) };
        let Some(role) = self.caller(headers)? else { return Ok(None) };
        if !role.grants(needed) {
            let method = path.rsplit('/').next().unwrap_or(path);
            return Err(Status::permission_denied(format!(
                "this token has the role {role}; {method} needs a token with the role {needed}"
            )));
        }
        Ok(Some(role))
    }

    /// The role of the caller's token (`None` when auth is off), or
    /// UNAUTHENTICATED when it sends none or an unknown one.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Option<Role>, Status> {
        let Some(tokens) = self.current() else { return Ok(None) };
        let given = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
        let Some(given) = given else {
            return Err(Status::unauthenticated(
                "missing bearer token: send the header 'authorization: Bearer <token>'",
            ));
        };
        tokens.role_of(given).map(Some).ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }

    /// Re-reads `--token-file` every [`RELOAD_INTERVAL`] until `stop`; a
    /// changed file replaces the tokens, a bad one is logged and ignored
    /// (the tokens in force stay).
    pub async fn reload_until(self, stop: CancellationToken) {
        let Some(path) = self.source.file.clone() else { return };
        let mut ticker = tokio::time::interval(RELOAD_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let source = self.source.clone();
            let loaded = tokio::task::spawn_blocking(move || source.load()).await;
            match loaded {
                Ok(Ok(Some(tokens))) => {
                    last_error = None;
                    if self.current().as_deref() != Some(&tokens) {
                        tracing::info!(file = %path.display(), tokens = %tokens.summary(), "tokens reloaded");
                        *self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(Arc::new(tokens));
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    let error = ingest_runtime::error_chain(error.as_ref());
                    if last_error.as_ref() != Some(&error) {
                        tracing::error!(%error, "cannot reload the tokens; the previous ones stay in force");
                        last_error = Some(error);
                    }
                }
                Err(join) => tracing::error!(error = %join, "token reload failed"),
            }
        }
    }
}

/// The token of an `authorization` value: the scheme is case-insensitive
/// (RFC 7235), then one or more spaces.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

/// Checks every gRPC call against [`Auth`] before it reaches its service.
#[derive(Clone, Debug)]
pub struct AuthLayer(pub Auth);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized { inner, auth: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Authorized<S> {
    inner: S,
    auth: Auth,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<futures::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.auth.authorize(request.headers(), request.uri().path()) {
            Ok(_) => futures::future::Either::Right(self.inner.call(request)),
            Err(status) => futures::future::Either::Left(futures::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR  tok"] {
            assert_eq!(bearer_credentials(value), Some("tok"), "{value}");
        }
        for value in ["Basic tok", "Bearertok", "tok", ""] {
            assert_eq!(bearer_credentials(value), None, "{value}");
        }
    }

    #[test]
    fn every_call_needs_its_role_and_unknown_calls_need_admin() {
        assert_eq!(needed_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(needed_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
        for method in READ_METHODS {
            assert_eq!(needed_role(&format!("/ingest.v1.JobService/{method}")), Some(Role::Read));
        }
        for method in
            ["CreateJob", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob", "RunJobNow", "ResetJobCursor", "NewMethod"]
                .into_iter()
                .chain(["PauseJobs", "ResumeJobs", "RunJobsNow", "DeleteJobs"])
        {
            assert_eq!(needed_role(&format!("/ingest.v1.JobService/{method}")), Some(Role::Admin), "{method}");
        }
        assert_eq!(needed_role("/ingest.v1.WorkerService/ReportProgress"), Some(Role::Worker));
        assert_eq!(needed_role("/other.Service/Get"), Some(Role::Admin));
        assert_eq!(needed_role("garbage"), Some(Role::Admin));
    }

    fn headers(header: Option<&str>) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Some(h) = header {
            m.insert(http::header::AUTHORIZATION, h.parse().expect("ascii header"));
        }
        m
    }

    fn auth(text: &str) -> Auth {
        Auth {
            source: TokenSource::default(),
            tokens: Arc::new(RwLock::new(Some(Arc::new(Tokens::parse(text).expect("valid"))))),
        }
    }

    #[test]
    fn tokens_pass_by_role() {
        let auth = auth("admin a\nread r\nworker w");
        let create = "/ingest.v1.JobService/CreateJob";
        let list = "/ingest.v1.JobService/ListJobs";
        let report = "/ingest.v1.WorkerService/ReportProgress";
        assert_eq!(auth.authorize(&headers(Some("Bearer a")), create).expect("admin"), Some(Role::Admin));
        assert_eq!(auth.authorize(&headers(Some("Bearer a")), report).expect("admin"), Some(Role::Admin));
        assert_eq!(auth.authorize(&headers(Some("Bearer r")), list).expect("read"), Some(Role::Read));
        assert_eq!(auth.authorize(&headers(Some("Bearer w")), report).expect("worker"), Some(Role::Worker));
        for (header, path, code) in [
            (Some("Bearer r"), create, tonic::Code::PermissionDenied),
            (Some("Bearer r"), report, tonic::Code::PermissionDenied),
            (Some("Bearer w"), list, tonic::Code::PermissionDenied),
            (Some("Bearer x"), list, tonic::Code::Unauthenticated),
            (Some("Bearer a "), list, tonic::Code::Unauthenticated),
            (Some("Basic a"), list, tonic::Code::Unauthenticated),
            (None, list, tonic::Code::Unauthenticated),
        ] {
            let err = auth.authorize(&headers(header), path).expect_err("must be refused");
            assert_eq!(err.code(), code, "{header:?} {path}");
        }
        let denied = auth.authorize(&headers(Some("Bearer r")), create).expect_err("read");
        assert_eq!(denied.message(), "this token has the role read; CreateJob needs a token with the role admin");
        // Health and reflection stay open, whatever the caller sends.
        for header in [None, Some("Bearer x")] {
            assert!(auth.authorize(&headers(header), "/grpc.health.v1.Health/Check").is_ok());
        }
    }

    #[test]
    fn no_token_configured_means_open() {
        let open = Auth::load(TokenSource::default()).expect("no auth");
        assert!(!open.enabled());
        assert_eq!(open.authorize(&headers(None), "/ingest.v1.JobService/CreateJob").expect("open"), None);
    }
}
