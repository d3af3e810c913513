//! Sink flags (each also read from an `INGEST_*` variable) and building the
//! sinks from them. Without an Elasticsearch URL documents go to JSON Lines
//! files; without an S3 bucket objects go to a directory tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ingest_runtime::Secret;

use crate::batcher::BulkConfig;
use crate::elasticsearch::{Auth, ElasticsearchConfig, ElasticsearchSink};
use crate::local::{LocalDocuments, LocalObjects};
use crate::s3::{S3Config, S3Sink};
use crate::{DocumentSink, ObjectSink, Sinks};

#[derive(Clone, Debug, clap::Args)]
pub struct SinkArgs {
    /// Elasticsearch or OpenSearch URL, e.g. http://127.0.0.1:9200; several
    /// nodes of one cluster comma-separated (requests go round them and skip
    /// a node that does not answer). Without it, documents go to JSON Lines
    /// files under --sink-dir.
    #[arg(long, env = "INGEST_ELASTICSEARCH_URL", value_delimiter = ',')]
    pub elasticsearch_url: Vec<url::Url>,
    /// User for basic auth to Elasticsearch.
    #[arg(long, env = "INGEST_ELASTICSEARCH_USERNAME")]
    pub elasticsearch_username: Option<String>,
    /// Elasticsearch API key: the encoded key as Elasticsearch returns it
    /// (base64 of id:key), or id:key.
    #[arg(long, env = "INGEST_ELASTICSEARCH_API_KEY", hide_env_values = true)]
    pub elasticsearch_api_key: Option<Secret>,
    /// Read the Elasticsearch API key from this file (e.g. a Docker secret).
    #[arg(long, env = "INGEST_ELASTICSEARCH_API_KEY_FILE", conflicts_with = "elasticsearch_api_key")]
    pub elasticsearch_api_key_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that sign the Elasticsearch nodes'
    /// certificates (HTTPS with a private CA, as Elasticsearch's own setup makes).
    #[arg(long, env = "INGEST_ELASTICSEARCH_CA")]
    pub elasticsearch_ca: Option<PathBuf>,
    /// Password for basic auth to Elasticsearch.
    #[arg(long, env = "INGEST_ELASTICSEARCH_PASSWORD", hide_env_values = true)]
    pub elasticsearch_password: Option<Secret>,
    /// Read the Elasticsearch password from this file (e.g. a Docker secret).
    #[arg(long, env = "INGEST_ELASTICSEARCH_PASSWORD_FILE", conflicts_with = "elasticsearch_password")]
    pub elasticsearch_password_file: Option<PathBuf>,
    /// Most bytes in one _bulk request.
    #[arg(long, env = "INGEST_BULK_MAX_BYTES", default_value_t = 5 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1_073_741_824))]
    pub bulk_max_bytes: u32,
    /// Most documents in one _bulk request.
    #[arg(long, env = "INGEST_BULK_MAX_DOCS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub bulk_max_docs: u32,
    /// How long a document may wait for others to fill its _bulk request.
    #[arg(long, env = "INGEST_BULK_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub bulk_linger: Duration,
    /// _bulk requests in flight at once.
    #[arg(long, env = "INGEST_BULK_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub bulk_concurrency: u32,
    /// Most bytes of documents waiting to be indexed; jobs wait (and stop
    /// fetching) beyond it.
    #[arg(long, env = "INGEST_SINK_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(65_536..))]
    pub sink_buffer_bytes: u32,
    /// How long a run waits for the sinks before it fails (and delivers the
    /// same items again later).
    #[arg(long, env = "INGEST_SINK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub sink_timeout: Duration,
    /// S3 bucket for raw payloads, media and dead letters (created if
    /// missing). Without it, objects go to files under --sink-dir.
    #[arg(long, env = "INGEST_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint for MinIO and other S3-compatible stores, e.g.
    /// http://127.0.0.1:9000 (default: AWS).
    #[arg(long, env = "INGEST_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "INGEST_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "INGEST_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    /// Read the S3 access key from this file (e.g. a Docker secret).
    #[arg(long, env = "INGEST_S3_ACCESS_KEY_FILE", conflicts_with = "s3_access_key")]
    pub s3_access_key_file: Option<PathBuf>,
    #[arg(long, env = "INGEST_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<Secret>,
    /// Read the S3 secret key from this file (e.g. a Docker secret).
    #[arg(long, env = "INGEST_S3_SECRET_KEY_FILE", conflicts_with = "s3_secret_key")]
    pub s3_secret_key_file: Option<PathBuf>,
    /// Virtual-hosted addressing (bucket.host) instead of path-style.
    #[arg(long, env = "INGEST_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
    /// Directory of the local sinks (documents/<index>.jsonl, objects/...).
    #[arg(long, env = "INGEST_SINK_DIR")]
    pub sink_dir: Option<PathBuf>,
}

impl SinkArgs {
    /// The sinks these flags describe; `default_dir` for the local ones
    /// when --sink-dir is not given. Must run inside a Tokio runtime.
    pub fn build(&self, default_dir: &Path) -> Result<Sinks, String> {
        let dir = self.sink_dir.clone().unwrap_or_else(|| default_dir.to_path_buf());
        let documents: Arc<dyn DocumentSink> = if self.elasticsearch_url.is_empty() {
            Arc::new(LocalDocuments::new(dir.join("documents")))
        } else {
            Arc::new(
                ElasticsearchSink::connect(ElasticsearchConfig {
                    urls: self.elasticsearch_url.clone(),
                    auth: self.elasticsearch_auth()?,
                    ca_pem: match &self.elasticsearch_ca {
                        Some(path) => Some(
                            std::fs::read(path)
                                .map_err(|e| format!("--elasticsearch-ca: cannot read {}: {e}", path.display()))?,
                        ),
                        None => None,
                    },
                    request_timeout: Duration::from_secs(60),
                    bulk: BulkConfig {
                        max_bytes: self.bulk_max_bytes as usize,
                        max_docs: self.bulk_max_docs as usize,
                        linger: self.bulk_linger,
                        concurrency: self.bulk_concurrency as usize,
                        buffer_bytes: self.sink_buffer_bytes as usize,
                    },
                })
                .map_err(|e| e.message)?,
            )
        };
        let objects: Arc<dyn ObjectSink> = match &self.s3_bucket {
            Some(bucket) => {
                check_bucket(bucket)?;
                let access_key = match &self.s3_access_key_file {
                    Some(path) => Some(read_secret_file(path)?),
                    None => self.s3_access_key.clone(),
                };
                let secret_key = secret(self.s3_secret_key.as_ref(), self.s3_secret_key_file.as_deref())?;
                let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
                    return Err("--s3-bucket needs --s3-access-key(-file) and --s3-secret-key(-file) \
                                (or INGEST_S3_ACCESS_KEY and INGEST_S3_SECRET_KEY)"
                        .to_string());
                };
                Arc::new(S3Sink::new(&S3Config {
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    bucket: bucket.clone(),
                    access_key,
                    secret_key,
                    path_style: !self.s3_virtual_hosted,
                    request_timeout: Duration::from_secs(30),
                }))
            }
            None => Arc::new(LocalObjects::new(dir.join("objects"))),
        };
        Ok(Sinks::new(documents, objects, self.sink_timeout))
    }
}

impl SinkArgs {
    /// Basic auth or an API key, not both.
    fn elasticsearch_auth(&self) -> Result<Option<Auth>, String> {
        let password = secret(self.elasticsearch_password.as_ref(), self.elasticsearch_password_file.as_deref())?;
        let api_key = secret(self.elasticsearch_api_key.as_ref(), self.elasticsearch_api_key_file.as_deref())?;
        match (&self.elasticsearch_username, password, api_key) {
            (Some(user), Some(password), None) => Ok(Some(Auth::Basic { user: user.clone(), password })),
            (None, None, Some(key)) => Ok(Some(Auth::ApiKey(key))),
            (None, None, None) => Ok(None),
            (_, _, Some(_)) => {
                Err("--elasticsearch-api-key(-file) replaces --elasticsearch-username/--elasticsearch-password: give one or the other".to_string())
            }
            _ => Err("--elasticsearch-username and --elasticsearch-password(-file) go together".to_string()),
        }
    }
}

/// A secret from its flag or from the file its `-file` flag names.
fn secret(value: Option<&Secret>, file: Option<&Path>) -> Result<Option<Secret>, String> {
    match file {
        Some(path) => read_secret_file(path).map(|s| Some(Secret::new(s))),
        None => Ok(value.cloned()),
    }
}

/// A file's content without surrounding whitespace; never empty.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_string())
}

/// S3 bucket naming rules (the common subset of AWS and MinIO).
fn check_bucket(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok { Ok(()) } else { Err(format!("--s3-bucket '{name}': use 3 to 63 lowercase letters, digits, '-' and '.'")) }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (e.g. 5ms, 30s)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sinks: SinkArgs,
    }

    #[tokio::test]
    async fn defaults_are_local_sinks() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let sinks = cli.sinks.build(Path::new("/tmp/ingest-out")).unwrap();
        assert!(sinks.describe().contains("/tmp/ingest-out/documents"), "{}", sinks.describe());
        assert!(sinks.describe().contains("/tmp/ingest-out/objects"), "{}", sinks.describe());
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let bucket =
            Cli::try_parse_from(["x", "--s3-bucket", "Bad_Bucket", "--s3-access-key", "a", "--s3-secret-key", "b"])
                .unwrap()
                .sinks
                .build(Path::new("/tmp"));
        assert!(bucket.err().unwrap().contains("lowercase"));
        let no_keys = Cli::try_parse_from(["x", "--s3-bucket", "ingest"]).unwrap().sinks.build(Path::new("/tmp"));
        assert!(no_keys.err().unwrap().contains("--s3-access-key"));
        assert!(Cli::try_parse_from(["x", "--elasticsearch-url", "not a url"]).is_err());
        assert!(Cli::try_parse_from(["x", "--bulk-max-docs", "0"]).is_err());
        let user_only =
            Cli::try_parse_from(["x", "--elasticsearch-url", "http://127.0.0.1:9200", "--elasticsearch-username", "u"]);
        let error = user_only.unwrap().sinks.build(Path::new("/tmp")).err().unwrap();
        assert!(error.contains("go together"), "a user needs a password: {error}");
    }

    #[tokio::test]
    async fn elasticsearch_nodes_api_keys_and_a_ca_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("api-key");
        std::fs::write(&key, "aWQ6a2V5\n").unwrap();
        let urls = "http://127.0.0.1:9200,http://127.0.0.1:9201";
        let args = ["x", "--elasticsearch-url", urls, "--elasticsearch-api-key-file", key.to_str().unwrap()];
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.sinks.elasticsearch_url.len(), 2);
        assert!(matches!(cli.sinks.elasticsearch_auth(), Ok(Some(Auth::ApiKey(k))) if k.expose() == "aWQ6a2V5"));
        let sinks = cli.sinks.build(Path::new("/tmp")).unwrap();
        assert!(sinks.describe().contains("http://127.0.0.1:9200,http://127.0.0.1:9201"), "{}", sinks.describe());
        let flag =
            Cli::try_parse_from(["x", "--elasticsearch-url", urls, "--elasticsearch-api-key", "aWQ6a2V5"]).unwrap();
        assert!(!format!("{:?}", flag.sinks).contains("aWQ6a2V5"), "the key never shows in Debug");

        let both = ["x", "--elasticsearch-api-key", "k", "--elasticsearch-api-key-file", "/f"];
        assert!(Cli::try_parse_from(both).is_err(), "a key and its file conflict");
        let ca = ["x", "--elasticsearch-url", "https://127.0.0.1:9200", "--elasticsearch-ca", key.to_str().unwrap()];
        let error = Cli::try_parse_from(ca).unwrap().sinks.build(Path::new("/tmp")).err().unwrap();
        assert!(error.contains("--elasticsearch-ca") && error.contains("not a PEM certificate"), "{error}");
    }

    #[tokio::test]
    async fn keys_and_passwords_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access");
        let secret = dir.path().join("secret");
        let empty = dir.path().join("empty");
        std::fs::write(&access, "ingest\n").unwrap();
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let args = |secret_file: &Path| {
            Cli::try_parse_from([
                "x".to_string(),
                "--s3-bucket".into(),
                "ingest".into(),
                "--s3-endpoint".into(),
                "http://127.0.0.1:9".into(),
                "--s3-access-key-file".into(),
                path(&access),
                "--s3-secret-key-file".into(),
                path(secret_file),
            ])
            .unwrap()
            .sinks
        };
        let sinks = args(&secret).build(Path::new("/tmp")).unwrap();
        assert!(sinks.describe().contains("ingest"), "{}", sinks.describe());
        let error = args(&empty).build(Path::new("/tmp")).err().unwrap();
        assert!(error.ends_with("is empty"), "{error}");
        let error = args(&dir.path().join("missing")).build(Path::new("/tmp")).err().unwrap();
        assert!(error.starts_with("cannot read"), "{error}");
        let both = ["x", "--s3-secret-key", "a", "--s3-secret-key-file", "/f"];
        assert!(Cli::try_parse_from(both).is_err(), "a key and its file conflict");
    }
}
