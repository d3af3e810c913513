//! ingest control: a stateless server exposing `ingest.v1.JobService` (and
//! `ingest.v1.WorkerService` for workers) over gRPC, plus reflection and
//! health, on the shared store.
//!
//! Code map: `service` holds the operations, `views` reads and composes a
//! job's pieces, `watch` streams changes, `progress` persists the workers'
//! progress reports in batches, `grpc` and `http` are the thin protocol
//! faces (`http` serves the web UI under `ui/` and `json_api`, the gRPC
//! service over HTTP/JSON), `convert` maps wire <-> domain types, `error` maps errors
//! to status codes in one place, `server` wires it all up.

pub mod alerts;
pub mod auth;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod http;
pub mod json_api;
pub mod letters;
pub mod opml;
pub mod preview;
pub mod progress;
pub mod server;
pub mod service;
pub mod transfer;
pub mod views;
pub mod watch;

pub use server::{Listeners, ServeArgs, serve, serve_with_recorder};
pub use service::ControlService;

use ingest_runtime::{EtcdArgs, shutdown_on_signal};

/// `ingest-control` / `ingest control`: the control server on etcd.
#[derive(Debug, clap::Args)]
pub struct ControlCommand {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub secrets: ingest_runtime::SecretsArgs,
}

impl ControlCommand {
    /// Serves until SIGTERM or SIGINT.
    pub async fn run(self) -> anyhow::Result<()> {
        let shutdown = shutdown_on_signal();
        let secrets_keys = self.secrets.keys()?;
        let store = self.etcd.connect().await?;
        let listeners = Listeners::bind(&self.serve).await?;
        let service = ControlService::new(store, self.etcd.keys.keys()).with_secrets_keys(secrets_keys);
        serve(service, &self.serve, listeners, shutdown).await
    }
}
