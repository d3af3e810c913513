//! Process plumbing shared by `ingest-control`, `ingest-worker` and `ingest`:
//! flags for reaching the store, logging setup and shutdown on signals.

pub mod metrics;
pub mod secrets_key;
pub mod tokens;
pub mod write_window;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ingest_store::keys::{DEFAULT_ROOT, Keys};
use ingest_store::{EtcdOptions, EtcdStore, EtcdTls, Store, StoreError};
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
    pub etcd_password: Option<Secret>,
    /// CA certificate (PEM) that signs the etcd members' certificates; turns
    /// on TLS (the --etcd endpoints must then be https://).
    #[arg(long, env = "INGEST_ETCD_CA")]
    pub etcd_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, env = "INGEST_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, env = "INGEST_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

impl EtcdArgs {
    /// Connects to etcd and checks that it answers, retrying for a few
    /// seconds so a cluster can start in any order.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Store>> {
        let options = EtcdOptions {
            endpoints: self.endpoints.clone(),
            user: self.etcd_user.clone().zip(self.etcd_password.as_ref().map(|p| p.expose().to_string())),
            tls: self.tls()?,
            ..EtcdOptions::default()
        };
        let hint =
            || format!("cannot reach etcd at {}; is it running? (--etcd / INGEST_ETCD)", self.endpoints.join(","));
        let store = match EtcdStore::connect(options).await {
            Ok(store) => store,
            // Flags that cannot work: say so, not "cannot reach".
            Err(StoreError::Invalid(message)) => anyhow::bail!("{message}"),
            Err(error) => return Err(error).with_context(hint),
        };
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

impl EtcdArgs {
    /// The certificates of --etcd-ca, --etcd-cert and --etcd-key, read and
    /// checked to be PEM; `None` without any of them.
    fn tls(&self) -> anyhow::Result<Option<EtcdTls>> {
        fn pem(flag: &str, path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
            let bytes = std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
            if !String::from_utf8_lossy(&bytes).contains(&format!("-----BEGIN {what}")) {
                anyhow::bail!("{flag}: {} is not a PEM {} file", path.display(), what.to_lowercase());
            }
            Ok(bytes)
        }
        if self.etcd_ca.is_none() && self.etcd_cert.is_none() {
            return Ok(None);
        }
        let ca = self.etcd_ca.as_deref().map(|p| pem("--etcd-ca", p, "CERTIFICATE")).transpose()?;
        let identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => Some((pem("--etcd-cert", cert, "CERTIFICATE")?, pem("--etcd-key", key, "")?)),
            _ => None,
        };
        Ok(Some(EtcdTls { ca, identity }))
    }
}

/// `--secrets-key-file`: job secrets encrypted at rest (see `secrets_key`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SecretsArgs {
    /// File of the key that encrypts job secrets in the store, one base64
    /// key of 32 bytes per line (the first encrypts; older ones below still
    /// decrypt, for rotation). Control and workers need the same file. Make
    /// one with: head -c 32 /dev/urandom | base64 > secrets.key
    #[arg(long, env = "INGEST_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<std::path::PathBuf>,
}

impl SecretsArgs {
    /// The keys, or `None` (with a warning: secrets are then stored in clear).
    pub fn keys(&self) -> anyhow::Result<Option<Arc<secrets_key::SecretsKeys>>> {
        match &self.secrets_key_file {
            Some(path) => Ok(Some(Arc::new(secrets_key::SecretsKeys::from_file(path).map_err(anyhow::Error::msg)?))),
            None => {
                tracing::warn!(
                    "no --secrets-key-file: job secrets are stored unencrypted (anyone who reads the store reads them)"
                );
                Ok(None)
            }
        }
    }
}

/// An error and its causes on one line ("error sending request: … : invalid
/// peer certificate"), each cause once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long a starting process waits for etcd to answer.
const ETCD_STARTUP_WAIT: Duration = Duration::from_secs(10);

/// A secret given on the command line or in the environment: `Debug` never
/// shows it (the same type as a job's secret parameters).
pub use ingest_model::Secret;

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
    #[arg(long, global = true, env = "INGEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `ingest_control=debug`.
    #[arg(long, global = true, env = "INGEST_LOG", default_value = "info")]
    pub log: String,
}

impl LogArgs {
    /// Installs the global subscriber: structured fields, to stderr.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)
            .with_context(|| format!("bad --log filter '{}'", self.log))?;
        // Colours only for a person at a terminal: never escape codes in a
        // file, a pipe or a container log; NO_COLOR (no-color.org) turns them off.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn flags_parse_and_secrets_stay_out_of_debug() {
        let args = Args::try_parse_from([
            "x",
            "--etcd",
            "http://a:1,http://b:2",
            "--etcd-user",
            "u",
            "--etcd-password",
            "pw-123",
        ])
        .expect("valid flags");
        assert_eq!(args.etcd.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(args.etcd.etcd_password.as_ref().map(Secret::expose), Some("pw-123"));
        assert!(!format!("{args:?}").contains("pw-123"));
    }

    #[test]
    fn a_user_without_a_password_is_refused() {
        let err = Args::try_parse_from(["x", "--etcd-user", "u"]).expect_err("password required");
        assert!(err.to_string().contains("--etcd-password"), "{err}");
    }
}
