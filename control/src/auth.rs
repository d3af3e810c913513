//! Optional bearer-token authentication for gRPC calls.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` when a token is configured;
/// lets everything through otherwise.
#[derive(Clone, Default)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth").field("enabled", &self.token.is_some()).finish()
    }
}

impl BearerAuth {
    pub fn new(token: Option<String>) -> Self {
        Self { token: token.filter(|t| !t.is_empty()).map(Arc::from) }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `metadata` carries the right token (always true when auth is
    /// off).
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.token else { return Ok(()) };
        let given = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => {
                Err(Status::unauthenticated("missing bearer token: send the header 'authorization: Bearer <token>'"))
            }
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// Compares without an early exit, so response time does not reveal how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(header: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = header {
            m.insert("authorization", h.parse().expect("ascii header"));
        }
        m
    }

    #[test]
    fn only_the_configured_token_passes() {
        let auth = BearerAuth::new(Some("s3cret".into()));
        assert!(auth.check(&metadata(Some("Bearer s3cret"))).is_ok());
        for bad in [None, Some("Bearer wrong"), Some("Bearer s3cre"), Some("Basic s3cret")] {
            let err = auth.check(&metadata(bad)).expect_err("must be refused");
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn no_token_configured_means_open() {
        assert!(BearerAuth::new(None).check(&metadata(None)).is_ok());
        assert!(!BearerAuth::new(Some(String::new())).enabled());
    }
}
