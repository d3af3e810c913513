//! The worker's small HTTP server (`--metrics-addr`): Prometheus `/metrics`
//! and `/healthz` (200 while the worker holds its lease, 503 otherwise).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::membership::LeaseState;

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, lease: watch::Receiver<Option<LeaseState>>, shutdown: CancellationToken) {
    let app = Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(lease);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(error) = served {
        tracing::warn!(%error, "metrics server stopped");
    }
}

async fn metrics() -> Response {
    let mut response = ingest_runtime::metrics::render().into_response();
    let content_type = HeaderValue::from_static(ingest_runtime::metrics::CONTENT_TYPE);
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

async fn healthz(State(lease): State<watch::Receiver<Option<LeaseState>>>) -> (StatusCode, &'static str) {
    let held = lease.borrow().is_some_and(|l| l.deadline > tokio::time::Instant::now());
    if held { (StatusCode::OK, "ok: lease held\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "no lease\n") }
}
