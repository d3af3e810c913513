//! The S3 adapter, on aws-sdk-s3: any S3-compatible store (MinIO, Garage,
//! AWS) through a custom endpoint and path-style addressing. The bucket is
//! created if missing; objects are written private (no ACL is ever set).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_smithy_http_client::tls;
use bytes::Bytes;

use crate::{Object, ObjectSink, SinkError};

const SINK: &str = "s3";

/// Where and how to reach the store.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: ingest_runtime::Secret,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    pub request_timeout: Duration,
}

pub struct S3Sink {
    client: Client,
    bucket: String,
    region: String,
    endpoint: String,
    /// Set once the bucket is known to exist: every job's output prepares
    /// the sinks, and one check (or creation) serves them all.
    bucket_ready: tokio::sync::OnceCell<()>,
}

impl S3Sink {
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            config.access_key.clone(),
            config.secret_key.expose().to_string(),
            None,
            None,
            "ingest-config",
        );
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(config.request_timeout)
            .build();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            .timeout_config(timeouts);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            region: config.region.clone(),
            endpoint: config.endpoint.clone().unwrap_or_else(|| "AWS".to_string()),
            bucket_ready: tokio::sync::OnceCell::new(),
        }
    }

    /// The client, for callers that read back (tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks the bucket exists, and creates it when it does not.
    async fn ensure_bucket(&self) -> Result<(), SinkError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => {}
            Err(e) => return Err(classify(&format!("cannot check bucket {}", self.bucket), &e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            let constraint = BucketLocationConstraint::from(self.region.as_str());
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(constraint).build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, endpoint = %self.endpoint, "bucket created");
                Ok(())
            }
            Err(SdkError::ServiceError(e))
                if e.err().is_bucket_already_owned_by_you() || e.err().is_bucket_already_exists() =>
            {
                Ok(())
            }
            Err(e) => Err(classify(&format!("cannot create bucket {}", self.bucket), &e)),
        }
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn prepare(&self) -> Result<(), SinkError> {
        self.bucket_ready.get_or_try_init(|| self.ensure_bucket()).await.map(|_| ())
    }

    async fn put(&self, object: &Object) -> Result<(), SinkError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object.key)
            .content_type(object.content_type)
            .body(ByteStream::from(object.body.clone()))
            .send()
            .await
            .map_err(|e| classify(&format!("cannot store {}", object.key), &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        let response = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(response) => response,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(classify(&format!("cannot read {key}"), &e)),
        };
        let body =
            response.body.collect().await.map_err(|e| SinkError::transient(SINK, format!("cannot read {key}: {e}")))?;
        Ok(Some(body.into_bytes()))
    }

    fn describe(&self) -> String {
        format!("S3 bucket {} at {}", self.bucket, self.endpoint)
    }
}

/// Transient unless the store answered with a 4xx other than 408, 429 and
/// 499 (wrong credentials, a refused bucket name: retrying will not help).
/// 499 is MinIO's "ClientDisconnected", which it answers to requests in
/// flight while it shuts down: the request may well succeed again.
fn classify<E>(what: &str, error: &SdkError<E, HttpResponse>) -> SinkError
where
    E: std::error::Error + 'static,
{
    let message = format!("{what}: {}", DisplayErrorContext(error));
    match error.raw_response().map(|raw| raw.status().as_u16()) {
        Some(status) if (400..500).contains(&status) && ![408, 429, 499].contains(&status) => {
            SinkError::permanent(SINK, message)
        }
        _ => SinkError::transient(SINK, message),
    }
}
