//! `ingest-worker` / `ingest worker`: a peer worker on etcd.

use std::path::{Path, PathBuf};

use anyhow::Context;

use ingest_runtime::{EtcdArgs, Secret, shutdown_on_signal};
use ingest_sinks::SinkArgs;

use crate::fetch::{FetchArgs, OwnEndpoint};
use ingest_runtime::tokens::{Role, TokenSource};

use crate::{ControlEndpoint, JobServices, ReportTo, WorkerArgs, run_worker};

/// Flags of a worker process; every flag also reads an `INGEST_*` variable.
#[derive(Debug, clap::Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// URL of a control server (any replica), for reporting counters.
    #[arg(long, env = "INGEST_CONTROL", default_value = "http://127.0.0.1:50051")]
    pub control: String,
    /// Bearer token control requires, if any. Prefer INGEST_TOKEN or
    /// --token-file to the flag.
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// Read the bearer token from this file (e.g. a Docker secret), again at
    /// each connection to control. A file of `<role> <token>` lines (as
    /// control reads) gives its first worker token, else its first admin one.
    #[arg(long, env = "INGEST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve Prometheus /metrics and /healthz on this address, e.g.
    /// 0.0.0.0:9464 (off by default).
    #[arg(long, env = "INGEST_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub sinks: SinkArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub secrets: ingest_runtime::SecretsArgs,
    /// CA certificate (PEM) of control's TLS certificate; turns on TLS to
    /// control (--control must then be https://).
    #[arg(long, env = "INGEST_CONTROL_CA")]
    pub control_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a control that requires one (mTLS).
    #[arg(long, env = "INGEST_CONTROL_CERT", requires = "control_key")]
    pub control_cert: Option<PathBuf>,
    /// Private key (PEM) of --control-cert.
    #[arg(long, env = "INGEST_CONTROL_KEY", requires = "control_cert")]
    pub control_key: Option<PathBuf>,
}

impl WorkerCommand {
    /// Runs until SIGTERM or SIGINT, then drains and leaves.
    pub async fn run(self) -> anyhow::Result<()> {
        let token = TokenSource::new(self.token.as_ref(), self.token_file.as_deref());
        // A missing or bad token file is an error at start, not at the first report.
        token.token_for(Role::Worker)?;
        let shutdown = shutdown_on_signal();
        // Local sinks (no Elasticsearch URL or S3 bucket) write under ./ingest-out.
        // Jobs never fetch this worker's own etcd, control or metrics endpoints.
        let mut own: Vec<OwnEndpoint> =
            self.etcd.endpoints.iter().filter_map(|e| OwnEndpoint::from_url(e, "etcd")).collect();
        own.extend(OwnEndpoint::from_url(&self.control, "control"));
        if let Some(addr) = self.metrics_addr {
            own.extend(OwnEndpoint::from_addr(addr, "metrics"));
        }
        let mut services = JobServices::from_args(&self.sinks, &self.fetch, Path::new("ingest-out"), &own)?;
        services.secrets_keys = self.secrets.keys()?;
        let metrics = match self.metrics_addr {
            Some(addr) => {
                ingest_runtime::metrics::init();
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
                tracing::info!(metrics_addr = %listener.local_addr()?, "serving /metrics and /healthz");
                Some(listener)
            }
            None => None,
        };
        let store = self.etcd.connect().await?;
        let config = self.worker.config();
        tracing::info!(worker = %config.name, control = %self.control, "worker starting");
        let control = ReportTo::Control(ControlEndpoint { url: self.control.clone(), token, tls: self.control_tls()? });
        let keys = self.etcd.keys.keys();
        let scheduler = self.worker.scheduler_config();
        run_worker(store, keys, config, scheduler, control, services, metrics, shutdown).await
    }
}

impl WorkerCommand {
    /// TLS to control from --control-ca / --control-cert / --control-key.
    fn control_tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
        };
        if self.control_ca.is_none() && self.control_cert.is_none() {
            return Ok(None);
        }
        if !self.control.starts_with("https://") {
            anyhow::bail!("--control {} must be https:// with --control-ca or --control-cert", self.control);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.control_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("--control-ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.control_cert, &self.control_key) {
            tls = tls.identity(Identity::from_pem(read("--control-cert", cert)?, read("--control-key", key)?));
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerCommand,
    }

    #[test]
    fn every_flag_parses_into_its_field() {
        let cli = Cli::try_parse_from([
            "ingest-worker",
            "--fetch-allow",
            "127.0.0.1,10.0.0.0/8",
            "--elasticsearch-url",
            "http://127.0.0.1:9200",
            "--s3-bucket",
            "archive",
            "--sink-timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(cli.worker.fetch.fetch_allow.0.len(), 2);
        assert_eq!(cli.worker.sinks.s3_bucket.as_deref(), Some("archive"));
        let defaults = Cli::try_parse_from(["ingest-worker"]).unwrap();
        assert!(defaults.worker.fetch.fetch_allow.0.is_empty(), "nothing private is allowed by default");
        assert!(Cli::try_parse_from(["ingest-worker", "--fetch-allow", "intranet"]).is_err());
    }
}
