//! Process plumbing shared by `ingest-control`, `ingest-worker` and `ingest`:
//! flags for reaching the store, logging setup and shutdown on signals.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ingest_store::keys::{DEFAULT_ROOT, Keys};
use ingest_store::{EtcdOptions, EtcdStore, Store};
use tokio_util::sync::CancellationToken;

/// Flags for reaching etcd; every flag also reads an `INGEST_*` variable.
#[derive(Clone, Debug, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long = "etcd", env = "INGEST_ETCD", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// etcd user name, when etcd authentication is on.
    #[arg(long, env = "INGEST_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// etcd password (prefer the environment variable to the flag).
    #[arg(long, env = "INGEST_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

impl EtcdArgs {
    /// Connects to etcd and checks that it answers, retrying for a few
    /// seconds so a cluster can start in any order.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Store>> {
        let options = EtcdOptions {
            endpoints: self.endpoints.clone(),
            user: self.etcd_user.clone().zip(self.etcd_password.clone()),
            ..EtcdOptions::default()
        };
        let hint =
            || format!("cannot reach etcd at {}; is it running? (--etcd / INGEST_ETCD)", self.endpoints.join(","));
        let store = EtcdStore::connect(options).await.with_context(hint)?;
        let give_up = tokio::time::Instant::now() + ETCD_STARTUP_WAIT;
        loop {
            match store.current_revision().await {
                Ok(_) => return Ok(Arc::new(store)),
                Err(error) if tokio::time::Instant::now() >= give_up => return Err(error).with_context(hint),
                Err(error) => {
                    tracing::warn!(%error, "etcd not answering yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// How long a starting process waits for etcd to answer.
const ETCD_STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Where in the store this cluster's keys live.
#[derive(Clone, Debug, clap::Args)]
pub struct KeyArgs {
    /// Prefix of every key this cluster uses, so clusters can share an etcd.
    #[arg(long, env = "INGEST_KEY_ROOT", default_value = DEFAULT_ROOT)]
    pub key_root: String,
}

impl KeyArgs {
    pub fn keys(&self) -> Keys {
        Keys::new(&self.key_root)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "INGEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `ingest_control=debug`.
    #[arg(long, env = "INGEST_LOG", default_value = "info")]
    pub log: String,
}

impl LogArgs {
    /// Installs the global subscriber: structured fields, to stderr.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)
            .with_context(|| format!("bad --log filter '{}'", self.log))?;
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let result = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
    }
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutting down");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
