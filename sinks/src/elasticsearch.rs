//! The Elasticsearch / OpenSearch adapter, on the `elasticsearch` crate:
//! `_bulk` through the shared [`Batcher`], index templates and indices with
//! explicit mappings created before the first write.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderValue};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesCreateParts, IndicesPutIndexTemplateParts};
use elasticsearch::{BulkParts, Elasticsearch};
use serde_json::json;
use tokio::sync::Mutex;

use crate::batcher::{Batcher, BulkConfig, BulkTransport, TransportError};
use crate::bulk::{self, ItemResult};
use crate::retry::parse_retry_after;
use crate::{Document, DocumentSink, IndexSpec, SinkError, WriteOutcome};

const SINK: &str = "elasticsearch";

/// Where and how to reach the cluster.
#[derive(Clone, Debug)]
pub struct ElasticsearchConfig {
    pub url: url::Url,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, ingest_runtime::Secret)>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    pub bulk: BulkConfig,
}

/// Documents into Elasticsearch 8/9 or OpenSearch 2.
pub struct ElasticsearchSink {
    client: Elasticsearch,
    batcher: Batcher,
    url: String,
    /// Indices and templates known to exist.
    prepared: Mutex<HashSet<String>>,
}

impl ElasticsearchSink {
    pub fn connect(config: ElasticsearchConfig) -> Result<Self, SinkError> {
        let client = client(&config)?;
        let transport = Arc::new(BulkClient { client: client.clone(), timeout: config.request_timeout });
        let batcher = Batcher::spawn(transport, config.bulk.clone());
        let url = redacted(&config.url);
        Ok(Self { client, batcher, url, prepared: Mutex::new(HashSet::new()) })
    }

    async fn put_template(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        let name = format!("ingest-{}", spec.job_type);
        let body = json!({
            "index_patterns": [name.clone(), format!("{name}-*")],
            "priority": 200,
            "template": { "mappings": *spec.mapping },
            "_meta": { "managed_by": "ingest", "job_type": spec.job_type },
        });
        let response = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable_error(&self.url, &e))?;
        expect_success(response, &format!("index template {name}")).await
    }

    async fn create_index(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&spec.name))
            .body(json!({ "mappings": *spec.mapping }))
            .send()
            .await
            .map_err(|e| unreachable_error(&self.url, &e))?;
        let status = response.status_code().as_u16();
        if status == 400 {
            let body = response.bytes().await.unwrap_or_default();
            if String::from_utf8_lossy(&body).contains("resource_already_exists_exception") {
                return Ok(());
            }
            return Err(SinkError::permanent(
                SINK,
                format!("cannot create index {}: {}", spec.name, bulk::snippet(&body)),
            ));
        }
        expect_success(response, &format!("index {}", spec.name)).await
    }
}

#[async_trait]
impl DocumentSink for ElasticsearchSink {
    async fn prepare(&self, spec: &IndexSpec) -> Result<(), SinkError> {
        let mut prepared = self.prepared.lock().await;
        let template = format!("template:{}", spec.job_type);
        if !prepared.contains(&template) {
            self.put_template(spec).await?;
            prepared.insert(template);
        }
        if !prepared.contains(&spec.name) {
            self.create_index(spec).await?;
            tracing::info!(index = %spec.name, job_type = %spec.job_type, url = %self.url, "index ready");
            prepared.insert(spec.name.clone());
        }
        Ok(())
    }

    async fn write(&self, docs: Vec<Document>) -> Result<WriteOutcome, SinkError> {
        self.batcher.write(docs).await
    }

    fn trouble(&self) -> Option<String> {
        self.batcher.trouble()
    }

    fn describe(&self) -> String {
        format!("Elasticsearch/OpenSearch at {}", self.url)
    }
}

/// Sends `_bulk` requests for the batcher.
struct BulkClient {
    client: Elasticsearch,
    timeout: Duration,
}

#[async_trait]
impl BulkTransport for BulkClient {
    async fn send(&self, body: Bytes, count: usize) -> Result<Vec<ItemResult>, TransportError> {
        let response = self
            .client
            .bulk(BulkParts::None)
            .filter_path(bulk::FILTER_PATH)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))
            .request_timeout(self.timeout)
            .body(vec![body])
            .send()
            .await
            .map_err(|e| TransportError::Retry { message: format!("_bulk failed: {e}"), retry_after: None })?;
        let status = response.status_code().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = response.bytes().await.map_err(|e| TransportError::Retry {
            message: format!("_bulk response cut short: {e}"),
            retry_after: None,
        })?;
        match status {
            200..=299 => bulk::parse_response(&body, count)
                .map_err(|message| TransportError::Retry { message, retry_after: None }),
            413 => Err(TransportError::TooLarge),
            401 | 403 => Err(TransportError::Retry {
                message: format!(
                    "_bulk refused with {status} (check the Elasticsearch credentials and their privileges): {}",
                    bulk::snippet(&body)
                ),
                retry_after,
            }),
            400 => {
                Err(TransportError::Rejected { status, message: format!("_bulk refused: {}", bulk::snippet(&body)) })
            }
            _ => Err(TransportError::Retry {
                message: format!("_bulk answered {status}: {}", bulk::snippet(&body)),
                retry_after,
            }),
        }
    }
}

fn client(config: &ElasticsearchConfig) -> Result<Elasticsearch, SinkError> {
    let mut url = config.url.clone();
    let credentials = match &config.basic_auth {
        Some((user, password)) => Some(Credentials::Basic(user.clone(), password.expose().to_string())),
        None if !url.username().is_empty() => {
            Some(Credentials::Basic(url.username().to_string(), url.password().unwrap_or_default().to_string()))
        }
        None => None,
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut builder =
        TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(config.request_timeout).disable_proxy();
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
    let transport = builder
        .build()
        .map_err(|e| SinkError::permanent(SINK, format!("cannot set up the Elasticsearch client: {e}")))?;
    Ok(Elasticsearch::new(transport))
}

/// The URL without credentials, for logs and messages.
fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn unreachable_error(url: &str, error: &elasticsearch::Error) -> SinkError {
    SinkError::transient(SINK, format!("cannot reach {url}: {error}"))
}

async fn expect_success(response: Response, what: &str) -> Result<(), SinkError> {
    let status = response.status_code();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    let message = format!("cannot create {what}: {status}: {}", bulk::snippet(&body));
    if status.is_server_error() || status.as_u16() == 429 {
        Err(SinkError::transient(SINK, message))
    } else {
        Err(SinkError::permanent(SINK, message))
    }
}
