//! The HTTP face of control: a readiness probe for load balancers and
//! orchestrators (the web UI lands here later).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::ControlService;

pub async fn serve(service: ControlService, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route("/", get(index)).route("/healthz", get(healthz)).with_state(service);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn index() -> &'static str {
    "ingest control\n\ngRPC: ingest.v1.JobService (reflection on; try `grpcurl -plaintext <grpc-addr> list`)\nHTTP: /healthz\n"
}

/// 200 when the store answers, 503 otherwise.
async fn healthz(State(service): State<ControlService>) -> (StatusCode, String) {
    match service.store().current_revision().await {
        Ok(revision) => (StatusCode::OK, format!("ok revision={revision}\n")),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {error}\n")),
    }
}
