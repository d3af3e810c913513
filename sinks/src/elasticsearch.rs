//! The Elasticsearch / OpenSearch adapter, on the `elasticsearch` crate:
//! `_bulk` through the shared [`Batcher`], index templates and indices with
//! explicit mappings created before the first write. Several node URLs form a
//! static pool with failover (`nodes`); the server's product and version are
//! detected before the first write and refused when too old (`server`).

mod nodes;
mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::response::Response;
use elasticsearch::http::{Method, StatusCode};
use elasticsearch::indices::{IndicesCreateParts, IndicesPutIndexTemplateParts};
use elasticsearch::{BulkParts, Elasticsearch};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub use nodes::{Auth, redacted};
pub use server::{Product, Server};

use crate::batcher::{Batcher, BulkConfig, BulkTransport, TransportError};
use crate::bulk::{self, ItemResult};
use crate::retry::parse_retry_after;
use crate::{Document, DocumentSink, IndexSpec, SinkError, WriteOutcome};
use nodes::{NoAnswer, Nodes};

const SINK: &str = "elasticsearch";

/// Where and how to reach the cluster.
#[derive(Clone, Debug)]
pub struct ElasticsearchConfig {
    /// One or more nodes of one cluster.
    pub urls: Vec<url::Url>,
    pub auth: Option<Auth>,
    /// CA certificates (PEM) that sign the nodes' certificates, for HTTPS
    /// with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    pub bulk: BulkConfig,
}

/// Documents into Elasticsearch 8/9 or OpenSearch 2.
pub struct ElasticsearchSink {
    nodes: Arc<Nodes>,
    batcher: Batcher,
    describe: String,
    /// Which flags to name when the cluster refuses the credentials.
    auth_flags: &'static str,
    server: OnceCell<Server>,
    /// Templates and indices made ready, one initialisation per name:
    /// callers for the same name wait for the one call, others do not wait.
    prepared: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

impl ElasticsearchSink {
    pub fn connect(config: ElasticsearchConfig) -> Result<Self, SinkError> {
        let nodes = Nodes::new(&config.urls, config.auth.as_ref(), config.ca_pem.as_deref(), config.request_timeout)
            .map_err(|message| SinkError::permanent(SINK, message))?;
        let nodes = Arc::new(nodes);
        let auth_flags =
            config.auth.as_ref().map_or("--elasticsearch-api-key or --elasticsearch-username", Auth::flags);
        let transport = Arc::new(BulkClient { nodes: nodes.clone(), timeout: config.request_timeout, auth_flags });
        let batcher = Batcher::spawn(transport, config.bulk.clone());
        let describe = format!("Elasticsearch/OpenSearch at {}", nodes.urls().join(","));
        Ok(Self { nodes, batcher, describe, auth_flags, server: OnceCell::new(), prepared: Mutex::new(HashMap::new()) })
    }

    /// The server, detected once: `GET /`, or the local node's info where
    /// `GET /` is not served.
    pub async fn server(&self) -> Result<&Server, SinkError> {
        self.server.get_or_try_init(|| self.detect()).await
    }

    async fn detect(&self) -> Result<Server, SinkError> {
        let mut answer = self.get_json("/").await?;
        if answer.0 == StatusCode::METHOD_NOT_ALLOWED || answer.0 == StatusCode::NOT_FOUND {
            answer = self.get_json("/_nodes/_local?filter_path=nodes.*.version").await?;
        }
        let (status, body, product, url) = answer;
        if !status.is_success() {
            return Err(self.refusal(status, &url, "asked which server it is", &body.to_string()));
        }
        let server = Server::from_answer(&body, product.as_deref())
            .map_err(|e| SinkError::permanent(SINK, format!("{url} is not Elasticsearch or OpenSearch: {e}")))?;
        server.check_supported().map_err(|e| SinkError::permanent(SINK, format!("{url}: {e}")))?;
        tracing::info!(server = %server, urls = %self.nodes.urls().join(","), "search server detected");
        Ok(server)
    }

    /// (status, JSON body, X-Elastic-Product, node URL) of a GET.
    async fn get_json(&self, path: &str) -> Result<(StatusCode, Value, Option<String>, String), SinkError> {
        let (response, url) = self
            .nodes
            .send(|client: Elasticsearch| async move {
                client.send(Method::Get, path, HeaderMap::new(), None::<&()>, None::<&[u8]>, None).await
            })
            .await
            .map_err(unreachable_error)?;
        let status = response.status_code();
        let product = response.headers().get("x-elastic-product").and_then(|v| v.to_str().ok()).map(str::to_string);
        let url = url.to_string();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body, product, url))
    }

    fn refusal(&self, status: StatusCode, url: &str, what: &str, body: &str) -> SinkError {
        let body = bulk::snippet(body.as_bytes());
        match status.as_u16() {
            401 => SinkError::transient(
                SINK,
                format!("{url} refused the credentials (401) when {what}: check {}: {body}", self.auth_flags),
            ),
            403 => SinkError::transient(
                SINK,
                format!(
                    "{url} denied the request (403) when {what}: the credentials of {} lack a privilege: {body}",
                    self.auth_flags
                ),
            ),
            429 | 500..=599 => SinkError::transient(SINK, format!("{url} answered {status} when {what}: {body}")),
            _ => SinkError::permanent(SINK, format!("{url} answered {status} when {what}: {body}")),
        }
    }

    async fn put_template(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        let name = format!("ingest-{}", spec.job_type);
        let mappings = self.server().await?.mapping(&spec.mapping);
        let body = json!({
            "index_patterns": [name.clone(), format!("{name}-*")],
            "priority": 200,
            "template": { "mappings": mappings },
            "_meta": { "managed_by": "ingest", "job_type": spec.job_type },
        });
        let (response, url) = self
            .nodes
            .send(|client: Elasticsearch| {
                let body = body.clone();
                let name = name.clone();
                async move {
                    client
                        .indices()
                        .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                        .body(body)
                        .send()
                        .await
                }
            })
            .await
            .map_err(unreachable_error)?;
        let url = url.to_string();
        self.expect_success(response, &url, &format!("creating index template {name}")).await
    }

    async fn create_index(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        let body = json!({ "mappings": self.server().await?.mapping(&spec.mapping) });
        let (response, url) = self
            .nodes
            .send(|client: Elasticsearch| {
                let body = body.clone();
                async move { client.indices().create(IndicesCreateParts::Index(&spec.name)).body(body).send().await }
            })
            .await
            .map_err(unreachable_error)?;
        let url = url.to_string();
        if response.status_code() == StatusCode::BAD_REQUEST {
            let body = response.bytes().await.unwrap_or_default();
            // Another writer created it first (the error's type, as the API documents it).
            let error: Value = serde_json::from_slice(&body).unwrap_or_default();
            if error.pointer("/error/type").and_then(Value::as_str) == Some("resource_already_exists_exception") {
                return Ok(());
            }
            return Err(SinkError::permanent(
                SINK,
                format!("cannot create index {}: {}", spec.name, bulk::snippet(&body)),
            ));
        }
        self.expect_success(response, &url, &format!("creating index {}", spec.name)).await
    }

    async fn expect_success(&self, response: Response, url: &str, what: &str) -> Result<(), SinkError> {
        let status = response.status_code();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(self.refusal(status, url, what, &String::from_utf8_lossy(&body)))
    }
}

#[async_trait]
impl DocumentSink for ElasticsearchSink {
    async fn check(&self) -> Result<String, SinkError> {
        let server = self.server().await?;
        Ok(format!("{server} at {}", self.nodes.urls().join(",")))
    }

    async fn prepare(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        self.server().await?;
        // One call per template and per index, whoever asks first; the
        // others for the same name wait for it (300 jobs starting together
        // must not send 300 template updates), other names do not wait.
        let once = |name: String| {
            let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
            prepared.entry(name).or_default().clone()
        };
        once(format!("template:{}", spec.job_type)).get_or_try_init(|| self.put_template(spec)).await?;
        once(format!("index:{}", spec.name))
            .get_or_try_init(|| async {
                self.create_index(spec).await?;
                tracing::info!(index = %spec.name, job_type = %spec.job_type, "index ready");
                Ok::<(), SinkError>(())
            })
            .await?;
        Ok(())
    }

    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        self.batcher.write(docs).await
    }

    fn trouble(&self) -> Option<String> {
        self.batcher.trouble()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Sends `_bulk` requests for the batcher.
struct BulkClient {
    nodes: Arc<Nodes>,
    timeout: Duration,
    auth_flags: &'static str,
}

#[async_trait]
impl BulkTransport for BulkClient {
    async fn send(&self, body: Bytes, count: usize) -> Result<Vec<ItemResult>, TransportError> {
        let (response, url) = self
            .nodes
            .send(|client: Elasticsearch| {
                let body = body.clone();
                async move {
                    client
                        .bulk(BulkParts::None)
                        .filter_path(bulk::FILTER_PATH)
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))
                        .request_timeout(self.timeout)
                        .body(vec![body])
                        .send()
                        .await
                }
            })
            .await
            .map_err(|NoAnswer { url, error }| TransportError::Retry {
                message: format!("_bulk to {url} failed: {error}"),
                retry_after: None,
            })?;
        let status = response.status_code().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = response.bytes().await.map_err(|e| TransportError::Retry {
            message: format!("_bulk response from {url} cut short: {e}"),
            retry_after: None,
        })?;
        match status {
            200..=299 => bulk::parse_response(&body, count)
                .map_err(|message| TransportError::Retry { message, retry_after: None }),
            413 => Err(TransportError::TooLarge),
            401 | 403 => Err(TransportError::Retry {
                message: format!(
                    "{url} refused _bulk with {status}: check {} and the privileges of those credentials: {}",
                    self.auth_flags,
                    bulk::snippet(&body)
                ),
                retry_after,
            }),
            400 => Err(TransportError::Rejected {
                status,
                message: format!("_bulk refused by {url}: {}", bulk::snippet(&body)),
            }),
            _ => Err(TransportError::Retry {
                message: format!("_bulk to {url} answered {status}: {}", bulk::snippet(&body)),
                retry_after,
            }),
        }
    }
}

fn unreachable_error(NoAnswer { url, error }: NoAnswer) -> SinkError {
    let hint = if url.starts_with("https:") {
        " (for a private CA, give its certificate with --elasticsearch-ca)"
    } else {
        ""
    };
    SinkError::transient(SINK, format!("cannot reach {url}: {}{hint}", ingest_runtime::error_chain(&error)))
}
