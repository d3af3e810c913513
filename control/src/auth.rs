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
        let given = metadata.get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
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

/// The token of an `authorization` value: the scheme is case-insensitive
/// (RFC 7235), then one or more spaces.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
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

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR  tok"] {
            assert_eq!(bearer_credentials(value), Some("tok"), "{value}");
        }
        for value in ["Basic tok", "Bearertok", "tok", ""] {
            assert_eq!(bearer_credentials(value), None, "{value}");
        }
    }

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
