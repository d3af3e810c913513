//! [`Store`] on a real etcd cluster (v3 API, via `etcd-client`).
//!
//! Every unary call is bounded by [`EtcdOptions::request_timeout`] (applied
//! here with `tokio::time::timeout`, not as a channel-wide timeout, so that
//! long-lived watch streams are not cut). Requests go to one member at a
//! time and move on when it gives no answer (`members`). Transport failures
//! and timeouts become [`StoreError::Unavailable`]; callers retry. With
//! [`EtcdOptions::tls`], endpoints are `https://` and the client may present
//! a certificate (etcd's `--client-cert-auth`).

mod members;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as etcd;
use tokio::sync::mpsc;

use self::members::Retry;
use crate::{
    CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, RangeRequest, RangeResponse, Revision, Store, StoreError,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchBatch, WatchEvent, WatchStream,
};

/// Largest response accepted from etcd. Ranges are read in chunks of at most
/// 1 001 keys (a ListJobs page) and a job spec is at most ~70 KiB, so 128 MiB
/// leaves room; tonic's default of 4 MiB does not.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// User name and password when etcd auth is on.
    pub user: Option<(String, String)>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each unary request (range, txn, lease calls, compaction).
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval and ping timeout, so a silently dead
    /// connection (and the watches on it) is noticed. etcd refuses pings
    /// more often than every 5 s by default.
    pub keep_alive: Option<(Duration, Duration)>,
    /// Capacity of each watch's channel (in batches) before the forwarding
    /// task waits for the consumer.
    pub watch_buffer: usize,
    /// TLS to the members (`https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// Certificates for TLS to etcd, PEM.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA that signs the members' certificates (else the system's roots).
    pub ca: Option<Vec<u8>>,
    /// Certificate and private key presented to etcd (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdOptions {
    // The password must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("watch_buffer", &self.watch_buffer)
            .field("tls", &self.tls.as_ref().map(|t| (t.ca.is_some(), t.identity.is_some())))
            .finish()
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            user: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
            watch_buffer: 64,
            tls: None,
        }
    }
}

impl EtcdOptions {
    /// Default options for the given endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { endpoints: endpoints.into_iter().map(Into::into).collect(), ..Self::default() }
    }
}

/// A connection to etcd. Cheap to clone; clones share one client per member
/// and may be used concurrently.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<members::Members>,
    watch_buffer: usize,
}

impl EtcdStore {
    /// Sets up a client per member (each connects on first use and
    /// reconnects on its own after failures). Fails with
    /// [`StoreError::Invalid`] when the endpoints or certificates are
    /// unusable.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        // A member cut off from the quorum answers "no leader" at once
        // instead of serving stale reads or holding watches that see nothing.
        let mut connect =
            etcd::ConnectOptions::new().with_connect_timeout(options.connect_timeout).with_require_leader(true);
        if let Some((name, password)) = &options.user {
            connect = connect.with_user(name.clone(), password.clone()).with_auto_token_refresh(true);
        }
        if let Some((interval, timeout)) = options.keep_alive {
            connect = connect.with_keep_alive(interval, timeout).with_keep_alive_while_idle(false);
        }
        let https = options.endpoints.iter().filter(|e| e.starts_with("https://")).count();
        match &options.tls {
            Some(tls) => {
                if https != options.endpoints.len() {
                    return Err(StoreError::Invalid(
                        "with etcd TLS (--etcd-ca, --etcd-cert) every --etcd endpoint must be https://".into(),
                    ));
                }
                let mut config = etcd::TlsOptions::new();
                if let Some(ca) = &tls.ca {
                    config = config.ca_certificate(etcd::Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(etcd::Identity::from_pem(cert, key));
                }
                connect = connect.with_tls(config);
            }
            None if https > 0 => {
                return Err(StoreError::Invalid(
                    "an https:// etcd endpoint needs TLS settings: give --etcd-ca (and --etcd-cert/--etcd-key for client certificates)".into(),
                ));
            }
            None => {}
        }
        // Creating a member's client authenticates when a user is set, a round trip.
        let budget = options.connect_timeout + options.request_timeout;
        let members = members::Members::new(&options.endpoints, connect, budget, options.request_timeout)?;
        tracing::debug!(endpoints = ?options.endpoints, "etcd clients set up");
        Ok(Self { members: Arc::new(members), watch_buffer: options.watch_buffer.max(1) })
    }
}

// gRPC status codes (tonic::Code discriminants), compared as integers so this
// crate needs no direct tonic dependency.
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_OUT_OF_RANGE: i32 = 11;
const GRPC_UNAVAILABLE: i32 = 14;

/// Maps an etcd client error onto the store's error kinds.
fn map_error(error: etcd::Error) -> StoreError {
    match error {
        etcd::Error::GRpcStatus(status) => {
            let message = status.message().to_string();
            let code = status.code() as i32;
            if message.contains("lease not found") {
                StoreError::LeaseNotFound(0)
            } else if message.contains("required revision has been compacted") {
                StoreError::Compacted { requested: 0, compact_revision: 0 }
            } else if message.contains("required revision is a future revision") {
                StoreError::FutureRevision { requested: 0, current: 0 }
            } else {
                match code {
                    GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED | GRPC_CANCELLED | GRPC_RESOURCE_EXHAUSTED => {
                        StoreError::Unavailable(message)
                    }
                    // "leader changed", "timed out", "no leader", or the connection
                    // broke ("transport error"): the request may be retried.
                    GRPC_UNKNOWN
                        if message.contains("leader")
                            || message.contains("timed out")
                            || message.contains("transport error") =>
                    {
                        StoreError::Unavailable(message)
                    }
                    GRPC_INVALID_ARGUMENT | GRPC_NOT_FOUND | GRPC_OUT_OF_RANGE => StoreError::Invalid(message),
                    _ => StoreError::Other(format!("etcd: {status}")),
                }
            }
        }
        etcd::Error::TransportError(e) => StoreError::Unavailable(format!("etcd transport: {e}")),
        etcd::Error::IoError(e) => StoreError::Unavailable(format!("etcd io: {e}")),
        etcd::Error::WatchError(e) => StoreError::Unavailable(format!("etcd watch: {e}")),
        etcd::Error::LeaseKeepAliveError(e) if e.contains("not found") => StoreError::LeaseNotFound(0),
        etcd::Error::LeaseKeepAliveError(e) => StoreError::Unavailable(format!("etcd lease keepalive: {e}")),
        etcd::Error::InvalidArgs(e) => StoreError::Invalid(e),
        etcd::Error::InvalidUri(e) => StoreError::Invalid(format!("etcd endpoint: {e}")),
        other => StoreError::Other(format!("etcd: {other}")),
    }
}

/// Fills in the lease id etcd's message does not carry.
fn with_lease(error: StoreError, lease: LeaseId) -> StoreError {
    match error {
        StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
        other => other,
    }
}

fn convert_kv(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn header_revision(header: Option<&etcd::ResponseHeader>) -> Revision {
    header.map(|h| h.revision()).unwrap_or_default()
}

fn get_options(request: &RangeRequest) -> etcd::GetOptions {
    let mut options = etcd::GetOptions::new();
    if !request.range.end.is_empty() {
        options = options.with_range(request.range.end.as_bytes());
    }
    if request.limit > 0 {
        options = options.with_limit(request.limit);
    }
    if request.keys_only {
        options = options.with_keys_only();
    }
    if request.count_only {
        options = options.with_count_only();
    }
    options
}

fn convert_get(response: &etcd::GetResponse) -> RangeResponse {
    RangeResponse {
        kvs: response.kvs().iter().map(convert_kv).collect(),
        more: response.more(),
        count: response.count(),
        revision: header_revision(response.header()),
    }
}

fn convert_op(op: TxnOp) -> etcd::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = (lease != 0).then(|| etcd::PutOptions::new().with_lease(lease));
            etcd::TxnOp::put(key, value, options)
        }
        TxnOp::Delete { range } => {
            let options = (!range.end.is_empty()).then(|| etcd::DeleteOptions::new().with_range(range.end.as_bytes()));
            etcd::TxnOp::delete(range.start, options)
        }
        TxnOp::Range(request) => {
            let options = get_options(&request);
            etcd::TxnOp::get(request.range.start, Some(options))
        }
    }
}

fn convert_compare(compare: crate::Compare) -> etcd::Compare {
    let op = match compare.op {
        CompareOp::Equal => etcd::CompareOp::Equal,
        CompareOp::NotEqual => etcd::CompareOp::NotEqual,
        CompareOp::Greater => etcd::CompareOp::Greater,
        CompareOp::Less => etcd::CompareOp::Less,
    };
    match compare.target {
        CompareTarget::CreateRevision(rev) => etcd::Compare::create_revision(compare.key, op, rev),
        CompareTarget::ModRevision(rev) => etcd::Compare::mod_revision(compare.key, op, rev),
        CompareTarget::Version(version) => etcd::Compare::version(compare.key, op, version),
        CompareTarget::Lease(lease) => etcd::Compare::lease(compare.key, op, lease),
        CompareTarget::Value(value) => etcd::Compare::value(compare.key, op, value),
    }
}

/// The lease a txn puts keys under, for a precise `LeaseNotFound`.
fn first_lease(txn: &Txn) -> LeaseId {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            TxnOp::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .unwrap_or_default()
}

/// etcd wants whole seconds; round up so a lease never lives shorter than asked.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let options = get_options(&request);
        let key = request.range.start;
        let response = self
            .members
            .call("range", Retry::Idempotent, |client| {
                let (key, options) = (key.clone(), options.clone());
                async move {
                    let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                    kv.get(key, Some(options)).await
                }
            })
            .await?;
        Ok(convert_get(&response))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let lease = first_lease(&txn);
        let request = etcd::Txn::new()
            .when(txn.compares.into_iter().map(convert_compare).collect::<Vec<_>>())
            .and_then(txn.success.into_iter().map(convert_op).collect::<Vec<_>>())
            .or_else(txn.failure.into_iter().map(convert_op).collect::<Vec<_>>());
        let response = self
            .members
            .call("txn", Retry::IfNotSent, |client| {
                let request = request.clone();
                async move {
                    let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                    kv.txn(request).await
                }
            })
            .await
            .map_err(|e| with_lease(e, lease))?;
        let responses = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd::TxnOpResponse::Put(_) => TxnOpResponse::Put,
                etcd::TxnOpResponse::Delete(delete) => TxnOpResponse::Delete(delete.deleted()),
                etcd::TxnOpResponse::Get(get) => TxnOpResponse::Range(convert_get(&get)),
                // Nested txns are never sent.
                etcd::TxnOpResponse::Txn(_) => TxnOpResponse::Put,
            })
            .collect();
        Ok(TxnResponse { succeeded: response.succeeded(), revision: header_revision(response.header()), responses })
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, StoreError> {
        // Progress reports (every 10 min by etcd's default) move a quiet
        // watch's revision on, so a re-watch after a break starts near the
        // present instead of from a revision compacted since.
        let mut options = etcd::WatchOptions::new().with_prefix().with_progress_notify();
        if start_revision > 0 {
            options = options.with_start_revision(start_revision);
        }
        let (stream, created) = self
            .members
            .call("watch", Retry::Idempotent, |client| {
                let options = options.clone();
                async move {
                    let mut watch = client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                    let mut stream = watch.watch(prefix, Some(options)).await?;
                    // Wait for the "created" response so that a watch from the next
                    // change (start 0) sees every write made after this call returns.
                    let created = stream.message().await?;
                    Ok((stream, created))
                }
            })
            .await?;
        let watch_id = created_id(created)?;
        let (tx, rx) = mpsc::channel(self.watch_buffer);
        let prefix = prefix.to_string();
        tokio::spawn(forward_watch(stream, watch_id, tx, prefix, start_revision));
        Ok(WatchStream::new(rx))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let response = self
            .members
            // Granting twice only leaves an unused lease to expire.
            .call("lease grant", Retry::Idempotent, |client| async move {
                client.lease_client().grant(ttl_seconds(ttl), None).await
            })
            .await?;
        if !response.error().is_empty() {
            return Err(StoreError::Other(format!("etcd lease grant: {}", response.error())));
        }
        Ok(response.id())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Duration, StoreError> {
        let response = self
            .members
            .call("lease keepalive", Retry::Idempotent, |client| async move {
                // `keep_alive` sends one keepalive and reads its answer (failing
                // when the TTL is 0, i.e. the lease is gone) but hides the TTL;
                // one more round trip on the same stream reports it.
                let (mut keeper, mut responses) = client.lease_client().keep_alive(id).await?;
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await
            .map_err(|e| with_lease(e, id))?;
        match response {
            Some(response) if response.ttl() > 0 => Ok(Duration::from_secs(response.ttl().unsigned_abs())),
            Some(_) => Err(StoreError::LeaseNotFound(id)),
            None => Err(StoreError::Unavailable("etcd closed the lease keepalive stream".into())),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        self.members
            .call("lease revoke", Retry::Idempotent, |client| async move { client.lease_client().revoke(id).await })
            .await
            .map_err(|e| with_lease(e, id))?;
        Ok(())
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<Option<Duration>, StoreError> {
        let response =
            self.members
                .call("lease ttl", Retry::Idempotent, |client| async move {
                    client.lease_client().time_to_live(id, None).await
                })
                .await
                .map_err(|e| with_lease(e, id))?;
        // etcd answers TTL -1 for an expired or unknown lease.
        Ok((response.ttl() >= 0).then(|| Duration::from_secs(response.ttl().unsigned_abs())))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let compacted = self
            .members
            .call("compact", Retry::IfNotSent, |client| async move {
                let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                kv.compact(revision, None).await
            })
            .await;
        match compacted {
            Ok(_) => Ok(()),
            Err(StoreError::Compacted { .. }) => {
                Err(StoreError::Compacted { requested: revision, compact_revision: revision })
            }
            Err(StoreError::FutureRevision { .. }) => {
                let current = self.current_revision().await.unwrap_or_default();
                Err(StoreError::FutureRevision { requested: revision, current })
            }
            Err(other) => Err(other),
        }
    }
}

/// The watch id from the first answer of a new watch, which must say `created`.
fn created_id(created: Option<etcd::WatchResponse>) -> Result<i64, StoreError> {
    match created {
        Some(response) if response.created() => Ok(response.watch_id()),
        Some(_) => Err(StoreError::Other("etcd watch: first response was not `created`".into())),
        None => Err(StoreError::Unavailable("etcd closed the watch stream".into())),
    }
}

/// Forwards one etcd watch into the consumer's channel until the consumer
/// goes away (then cancels the etcd watcher), the history is compacted, or
/// the stream breaks (then the consumer re-watches from its last revision).
async fn forward_watch(
    mut stream: etcd::WatchStream,
    watch_id: i64,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
    prefix: String,
    start_revision: Revision,
) {
    loop {
        let message = tokio::select! {
            _ = tx.closed() => {
                // Best effort: dropping the stream also ends it server-side.
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.cancel(watch_id)).await;
                tracing::debug!(prefix = %prefix, watch_id, "etcd watch dropped by its consumer");
                return;
            }
            message = stream.message() => message,
        };
        let item = match message {
            Ok(Some(response)) if response.compact_revision() != 0 => {
                Err(StoreError::Compacted { requested: start_revision, compact_revision: response.compact_revision() })
            }
            Ok(Some(response)) if response.canceled() => {
                // Not a compaction (etcd 3.4 also cancels on e.g. "no leader"
                // or permission errors): a re-watch with backoff is the cure.
                Err(StoreError::Unavailable(format!("etcd canceled the watch: {}", response.cancel_reason())))
            }
            Ok(Some(response)) => {
                if response.events().is_empty() {
                    if response.created() || header_revision(response.header()) == 0 {
                        continue;
                    }
                    // A progress report: every change up to its revision was sent.
                    Ok(WatchBatch { events: Vec::new(), revision: header_revision(response.header()) })
                } else {
                    let events = response
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kind = match event.event_type() {
                                etcd::EventType::Put => EventKind::Put,
                                etcd::EventType::Delete => EventKind::Delete,
                            };
                            event.kv().map(|kv| WatchEvent { kind, kv: convert_kv(kv) })
                        })
                        .collect();
                    Ok(WatchBatch { events, revision: header_revision(response.header()) })
                }
            }
            Ok(None) => Err(StoreError::Unavailable("etcd ended the watch stream".into())),
            Err(error) => Err(StoreError::Unavailable(format!("etcd watch stream broke: {error}"))),
        };
        let last = item.is_err();
        if let Err(error) = &item {
            tracing::info!(prefix = %prefix, watch_id, error = %error, "etcd watch ended");
        }
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}
