//! The HTTP face of control: the web UI (embedded, no build step, nothing
//! from elsewhere), the HTTP/JSON API it uses (`json_api`), Prometheus
//! `/metrics`, and a readiness probe for load balancers and orchestrators.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::grpc::GrpcJobService;
use crate::json_api::{self, JsonApi};
use crate::service::ControlService;

/// The UI's files, compiled into the binary: `/` and `/ui/<name>`.
const INDEX_HTML: &str = include_str!("../ui/index.html");
const UI_FILES: [(&str, &str, &str); 10] = [
    ("app.js", include_str!("../ui/app.js"), JAVASCRIPT),
    ("api.js", include_str!("../ui/api.js"), JAVASCRIPT),
    ("dom.js", include_str!("../ui/dom.js"), JAVASCRIPT),
    ("form.js", include_str!("../ui/form.js"), JAVASCRIPT),
    ("jobs.js", include_str!("../ui/jobs.js"), JAVASCRIPT),
    ("letters.js", include_str!("../ui/letters.js"), JAVASCRIPT),
    ("runs.js", include_str!("../ui/runs.js"), JAVASCRIPT),
    ("transfer.js", include_str!("../ui/transfer.js"), JAVASCRIPT),
    ("workers.js", include_str!("../ui/workers.js"), JAVASCRIPT),
    ("style.css", include_str!("../ui/style.css"), "text/css; charset=utf-8"),
];
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Only this server's own files and API; no inline code, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub async fn serve(
    service: ControlService,
    auth: Auth,
    hosts: AllowedHosts,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    ingest_runtime::metrics::init();
    let api = Arc::new(JsonApi { jobs: GrpcJobService::new(service.clone(), shutdown.clone()), auth, hosts });
    let app = Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/ui/{file}", get(ui_file))
        .route("/api/ingest.v1.JobService/{method}", post(json_api::call).with_state(api.clone()))
        .route("/api/session", post(json_api::session).with_state(api))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(service);
    serve_connections(listener, app, tls, shutdown).await
}

/// TLS for the HTTP face from the same PEM files as gRPC's `--tls-cert` and
/// `--tls-key`; with `--tls-client-ca` it requires client certificates like
/// gRPC does, so the HTTP port is no way around mTLS.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?
            {
                let ca = ca.map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
                roots.add(ca).map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key do not make a certificate and its key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client has this long to send a request's headers, and an idle
/// keep-alive connection is closed after it (hyper counts the wait for the
/// next request's head): a client that trickles bytes or sits idle cannot
/// hold a connection open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connections are pinged this often and closed when a ping goes
/// unanswered for `HTTP2_PING_TIMEOUT`.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown`, then lets the open ones finish
/// (bounded by the caller's grace period).
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "HTTP connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task, under the
                // header-read budget, so a silent client cannot stall accepts.
                let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%error, "HTTPS connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn ui_file(Path(name): Path<String>) -> Response {
    match UI_FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, body, content_type)) => asset(body, content_type),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Prometheus metrics of this process.
async fn metrics() -> Response {
    let mut response = ingest_runtime::metrics::render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ingest_runtime::metrics::CONTENT_TYPE));
    response
}

/// 200 when the store answers, 503 otherwise.
async fn healthz(State(service): State<ControlService>) -> (StatusCode, String) {
    match service.store().current_revision().await {
        Ok(revision) => (StatusCode::OK, format!("ok revision={revision}\n")),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {error}\n")),
    }
}

/// The host names the HTTP API answers to (the `Host` header's name part).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// Empty: any host (listening on all addresses with no names given).
    names: Vec<String>,
}

impl AllowedHosts {
    /// The listening address, localhost for a loopback one, and `extra`.
    pub fn new(listening: std::net::SocketAddr, extra: &[String]) -> Self {
        let ip = listening.ip();
        if ip.is_unspecified() && extra.is_empty() {
            return Self::default();
        }
        let mut names: Vec<String> =
            extra.iter().map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
        if !ip.is_unspecified() {
            names.push(match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            });
        }
        if ip.is_loopback() {
            names.extend(["localhost".to_string(), "127.0.0.1".to_string(), "[::1]".to_string()]);
        }
        Self { names }
    }

    /// Whether a request with this `Host` header may be answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.names.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        let name = match host.rsplit_once(':') {
            // "[::1]:8080", "name:8080"; a bare "[::1]" has its colons inside brackets.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
            _ => host,
        };
        self.names.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_those_served_and_those_named() {
        let loopback = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.1"] {
            assert!(loopback.allows(Some(ok)), "{ok}");
        }
        for refused in ["evil.example:8080", "evil.example", "127.0.0.2:8080", "localhost.evil.example"] {
            assert!(!loopback.allows(Some(refused)), "{refused}");
        }
        assert!(!loopback.allows(None), "HTTP/1.1 requires Host");
        let named = AllowedHosts::new("10.0.0.5:8080".parse().unwrap(), &["ingest.example.org".into()]);
        assert!(named.allows(Some("ingest.example.org")) && named.allows(Some("10.0.0.5:8080")));
        assert!(!named.allows(Some("localhost:8080")));
        let anywhere = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(anywhere.allows(Some("anything.example")), "no names to check against");
    }
}
