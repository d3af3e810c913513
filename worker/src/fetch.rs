//! The one HTTP fetcher every source uses (DESIGN.md §7): http and https
//! only; no connection to loopback, private, link-local, CGNAT, unique-local,
//! unspecified or IPv4-mapped addresses unless allowlisted, checked on the
//! addresses actually connected to (the resolver filters them) and on every
//! redirect hop; a total timeout; capped body sizes before and after
//! decompression; conditional GET; `Retry-After`; a per-host concurrency
//! limit shared by every job of the worker.

pub mod address;
pub mod body;
pub mod connector;
pub mod pace;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use url::Url;

use self::connector::{FencedConnector, WriteFence};
use crate::membership::LeaseState;

use crate::fence::Fence;
pub use address::{AddressPolicy, AllowEntry, OwnEndpoint, parse_allowlist};

/// Sent with every request.
pub const USER_AGENT: &str = concat!("ingest/", env!("CARGO_PKG_VERSION"), " (feed and API ingestion; polite polling)");

/// Fetcher settings; every flag also reads an `INGEST_*` variable.
#[derive(Clone, Debug, clap::Args)]
pub struct FetchArgs {
    /// What fetches may reach although private or local: networks or
    /// addresses (every port), address:port or host:port (that port only),
    /// e.g. 10.1.0.0/16,127.0.0.1:8080,fixtures.internal:80 (default: none).
    /// The worker's own etcd, control and metrics endpoints are never fetched.
    #[arg(long, env = "INGEST_FETCH_ALLOW", default_value = "")]
    pub fetch_allow: Allowlist,
    /// Longest a fetch may take, redirects included.
    #[arg(long, env = "INGEST_FETCH_TIMEOUT", default_value = "30s", value_parser = ingest_model::params::parse_duration)]
    pub fetch_timeout: Duration,
    /// Largest body accepted, compressed and decompressed.
    #[arg(long, env = "INGEST_FETCH_MAX_BYTES", default_value_t = 15 * 1024 * 1024)]
    pub fetch_max_bytes: usize,
    /// Requests in flight to one host, across all jobs of this worker.
    #[arg(long, env = "INGEST_FETCH_PER_HOST", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub fetch_per_host: u32,
    /// PEM CA certificates trusted for https fetches besides the web's
    /// public roots (e.g. an internal CA).
    #[arg(long, env = "INGEST_FETCH_CA")]
    pub fetch_ca: Option<std::path::PathBuf>,
    /// Requests per second to one host by jobs that fetch given URLs (rss,
    /// http_json). Their jobs are placed by host, so this holds cluster-wide.
    #[arg(long, env = "INGEST_FETCH_HOST_RATE", default_value_t = 1.0, value_parser = pace::parse_rate)]
    pub fetch_host_rate: f64,
    /// Other rates for some hosts, e.g. feeds.example.org=5,slow.example=0.2
    /// (the same on every worker).
    #[arg(long, env = "INGEST_FETCH_HOST_RATES", default_value = "")]
    pub fetch_host_rates: pace::HostRates,
}

/// Networks allowed although private or local.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist(pub Vec<AllowEntry>);

impl std::str::FromStr for Allowlist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_allowlist(s).map(Self)
    }
}

impl Default for FetchArgs {
    fn default() -> Self {
        Self {
            fetch_allow: Allowlist::default(),
            fetch_timeout: Duration::from_secs(30),
            fetch_max_bytes: 15 * 1024 * 1024,
            fetch_per_host: 4,
            fetch_ca: None,
            fetch_host_rate: 1.0,
            fetch_host_rates: pace::HostRates::default(),
        }
    }
}

/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// One request: a GET (redirects followed, each checked) or a POST
/// (redirects refused).
#[derive(Clone, Debug)]
pub struct Request {
    pub url: Url,
    /// A body and its content type: makes this a POST.
    pub body: Option<(&'static str, String)>,
    /// From the last response, for a conditional GET.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub accept: &'static str,
    /// Sent only to the first URL's host (credentials stay with their API).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Request {
    pub fn get(url: Url, accept: &'static str) -> Self {
        Self { url, body: None, etag: None, last_modified: None, accept, headers: Vec::new() }
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self, FetchError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| FetchError::Refused(format!("header {name}: not a valid header value")))?;
        self.headers.push((name, value));
        Ok(self)
    }
}

/// A response whose body was read within the limits.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The URL after redirects.
    pub url: Url,
    pub headers: HeaderMap,
    /// Decompressed; empty for 304.
    pub body: Bytes,
}

impl Response {
    pub fn not_modified(&self) -> bool {
        self.status == 304
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// File extension and content type of an image, from its Content-Type
    /// (`bin` and `application/octet-stream` for anything else).
    pub fn image_type(&self) -> (&'static str, &'static str) {
        let content_type = self.header("content-type").unwrap_or_default();
        match content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
            "image/jpeg" => ("jpg", "image/jpeg"),
            "image/png" => ("png", "image/png"),
            "image/gif" => ("gif", "image/gif"),
            "image/webp" => ("webp", "image/webp"),
            "image/avif" => ("avif", "image/avif"),
            _ => ("bin", "application/octet-stream"),
        }
    }

    /// `Cache-Control: max-age`, if any.
    pub fn max_age(&self) -> Option<Duration> {
        let value = self.header("cache-control")?;
        value.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok().map(Duration::from_secs))
    }
}

impl FetchError {
    /// How long the server asked to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why a fetch failed, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("cannot fetch: {0}")]
    Network(String),
    /// Not sent: the claim's lease expired (the job belongs to another
    /// worker by now).
    #[error("not sent: this worker's lease on the job has expired")]
    LeaseExpired,
    #[error(
        "{url} answered {status}{}{}",
        retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default(),
        if detail.is_empty() { String::new() } else { format!(": {detail}") }
    )]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        headers: Box<HeaderMap>,
        /// The start of the body on one line, for people.
        detail: String,
        /// The body's first 2 KiB, for job types that read the upstream's
        /// error document.
        body: Bytes,
    },
}

/// What a job fetches with: the worker's fetcher behind its claim's fence.
pub struct FencedFetcher {
    fetcher: Arc<Fetcher>,
    fence: Fence,
    /// Requests wait for their host's slot (jobs of paced types).
    paced: bool,
    /// A host whose slot the run already waited for (before taking a run
    /// slot): its first request there goes at once.
    turn: std::sync::Mutex<Option<String>>,
}

impl FencedFetcher {
    pub fn new(fetcher: Arc<Fetcher>, fence: Fence) -> Self {
        Self { fetcher, fence, paced: false, turn: Default::default() }
    }

    /// Each request waits for its host's next slot (`pace.rs`); `turn`: a
    /// host whose slot was already taken for the first request there.
    pub fn paced(mut self, turn: Option<String>) -> Self {
        self.paced = true;
        self.turn = std::sync::Mutex::new(turn);
        self
    }

    /// [`Fetcher::get`] behind this fence (after the host's slot, when paced:
    /// the wait is not part of the fetch's timeout).
    pub async fn get(&self, request: &Request) -> Result<Response, FetchError> {
        if self.paced
            && let Some(host) = pace::host_of(request.url.as_str())
        {
            let had_turn = self.turn.lock().is_ok_and(|mut turn| turn.take_if(|t| *t == host).is_some());
            if !had_turn {
                self.fetcher.pacer.wait(&host).await;
            }
        }
        self.fetcher.get(request, &self.fence).await
    }
}

/// Per-host limits are forgotten for hosts not being fetched once this
/// many are remembered, so the table does not grow with every host ever seen.
const MAX_IDLE_HOSTS: usize = 1024;

/// The worker's fetcher, shared by its jobs.
pub struct Fetcher {
    client: Client<FencedConnector, Full<Bytes>>,
    policy: Arc<AddressPolicy>,
    writes: WriteFence,
    timeout: Duration,
    max_bytes: usize,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Requests per second per host, for paced jobs.
    pub pacer: pace::HostPacer,
}

impl Fetcher {
    pub fn new(args: &FetchArgs) -> Result<Self, String> {
        Self::guarding(args, &[])
    }

    /// A fetcher that never reaches `own` (this process's etcd, control and
    /// metrics endpoints), whatever `--fetch-allow` opens.
    pub fn guarding(args: &FetchArgs, own: &[OwnEndpoint]) -> Result<Self, String> {
        let policy = Arc::new(AddressPolicy::new(args.fetch_allow.0.clone()).with_own(own));
        let writes = WriteFence::default();
        let extra_roots = match &args.fetch_ca {
            Some(path) => std::fs::read(path).map_err(|e| format!("--fetch-ca {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        let connect_timeout = Duration::from_secs(10).min(args.fetch_timeout);
        let connector = FencedConnector::new(policy.clone(), connect_timeout, &extra_roots, writes.clone())?;
        // Bodies are decompressed by `body::decode`, under a cap; redirects
        // are followed by `get`, each hop checked.
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            policy,
            writes,
            timeout: args.fetch_timeout,
            max_bytes: args.fetch_max_bytes,
            per_host: args.fetch_per_host as usize,
            hosts: Mutex::new(HashMap::new()),
            pacer: pace::HostPacer::new(args.fetch_host_rate, &args.fetch_host_rates),
        })
    }

    /// From now on, nothing is written to a connection once the worker's
    /// lease deadline has passed (see `connector`).
    pub fn fence_writes(&self, lease_rx: watch::Receiver<Option<LeaseState>>) {
        self.writes.set(lease_rx);
    }

    /// GETs `request.url`, following up to 5 redirects, each checked;
    /// nothing is sent once `fence` no longer holds.
    pub async fn get(&self, request: &Request, fence: &Fence) -> Result<Response, FetchError> {
        match tokio::time::timeout(self.timeout, self.get_inner(request, fence)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(format!("{} took longer than {:?}", shown(&request.url), self.timeout))),
        }
    }

    async fn get_inner(&self, request: &Request, fence: &Fence) -> Result<Response, FetchError> {
        // The request's own headers (credentials among them) go only to the
        // origin it was made for: same scheme, host and port.
        let first_origin = request.url.origin();
        let mut url = request.url.clone();
        for _hop in 0..=MAX_REDIRECTS {
            self.check_url(&url)?;
            let host = url.host_str().unwrap_or_default().to_string();
            let _permit = self.host_permit(&host).await;
            let method = if request.body.is_some() { http::Method::POST } else { http::Method::GET };
            let mut builder = http::Request::builder()
                .method(method)
                .uri(url.as_str())
                .header(header::USER_AGENT, USER_AGENT)
                .header(header::ACCEPT, request.accept)
                .header(header::ACCEPT_ENCODING, "gzip, deflate, br");
            if let Some((content_type, _)) = &request.body {
                builder = builder.header(header::CONTENT_TYPE, *content_type);
            }
            if let Some(etag) = &request.etag {
                builder = builder.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(last_modified) = &request.last_modified {
                builder = builder.header(header::IF_MODIFIED_SINCE, last_modified);
            }
            let body = request.body.as_ref().map(|(_, body)| Bytes::from(body.clone())).unwrap_or_default();
            let mut http_request = builder
                .body(Full::new(body))
                .map_err(|e| FetchError::Refused(format!("{}: cannot build the request: {e}", shown(&url))))?;
            if url.origin() == first_origin {
                // The request's own headers replace the defaults they name.
                let headers = http_request.headers_mut();
                for (name, _) in &request.headers {
                    headers.remove(name);
                }
                for (name, value) in &request.headers {
                    headers.append(name.clone(), value.clone());
                }
            }
            // Checked last, after every wait (the host permit above): a
            // process woken past its lease starts nothing (and its
            // connections refuse the writes of what it had started).
            if !fence.holds() {
                return Err(FetchError::LeaseExpired);
            }
            let response = self.client.request(http_request).await.map_err(|e| classify(&url, &e))?;
            let status = response.status().as_u16();
            if (300..400).contains(&status) && status != 304 && request.body.is_none() {
                let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok());
                let Some(next) = location.and_then(|l| url.join(l).ok()) else {
                    return Err(FetchError::Network(format!(
                        "{} redirected ({status}) without a usable Location",
                        shown(&url)
                    )));
                };
                url = next;
                continue;
            }
            if status == 304 {
                return Ok(Response { status, url, headers: response.headers().clone(), body: Bytes::new() });
            }
            if !(200..300).contains(&status) {
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ingest_sinks::retry::parse_retry_after);
                let headers = Box::new(response.headers().clone());
                // What the server says is wrong, for the job's error.
                let body = body::read_capped(response, 2048).await.unwrap_or_default();
                let detail = snippet(&body);
                return Err(FetchError::Status { url: shown(&url), status, retry_after, headers, detail, body });
            }
            let headers = response.headers().clone();
            let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_string);
            let raw = body::read_capped(response, self.max_bytes).await.map_err(|e| body_error(&url, e))?;
            let body = body::decode(encoding.as_deref(), raw, self.max_bytes).map_err(|e| body_error(&url, e))?;
            return Ok(Response { status, url, headers, body });
        }
        Err(FetchError::Refused(format!("more than {MAX_REDIRECTS} redirects from {}", request.url)))
    }

    /// http(s) only; an IP-literal host must pass the address policy
    /// (host names are checked by the resolver when connecting).
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused(format!("{}: only http and https URLs are fetched", shown(url))));
        }
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Err(FetchError::Refused(format!("{} names no host", shown(url))));
        };
        self.policy.check_target(&host, port).map_err(FetchError::Refused)
    }

    async fn host_permit(&self, host: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut hosts = self.hosts.lock().ok()?;
            if hosts.len() >= MAX_IDLE_HOSTS && !hosts.contains_key(host) {
                // Hosts nobody is fetching from hold nothing worth keeping.
                hosts.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
            }
            hosts.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_host))).clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

fn refused_address(host: &str, ip: IpAddr, reason: &str) -> FetchError {
    FetchError::Refused(format!(
        "{host} is {reason} ({ip}); fetching it needs the worker's --fetch-allow (INGEST_FETCH_ALLOW)"
    ))
}

fn body_error(url: &Url, error: body::BodyError) -> FetchError {
    match error {
        body::BodyError::TooLarge { .. } => FetchError::TooLarge(format!("{}: {error}", shown(url))),
        body::BodyError::Timeout(_) => FetchError::Timeout(format!("{}: {error}", shown(url))),
        other => FetchError::Network(format!("{}: {other}", shown(url))),
    }
}

/// A URL as shown in errors: no query, credentials or fragment (they may
/// hold secrets, e.g. an API key parameter).
pub fn shown(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if shown.query().is_some() {
        shown.set_query(None);
        return format!("{shown}?…");
    }
    shown.to_string()
}

/// The start of an error body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A failed request as a `FetchError`: our own refusals (address policy,
/// lease) are found by type in hyper's error chain, a timeout by its kind.
fn classify(url: &Url, error: &hyper_util::client::legacy::Error) -> FetchError {
    // Error texts may name the whole URL; its query may hold an API key.
    let text = || ingest_runtime::error_chain(error).replace(url.as_str(), &shown(url));
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(ours) = error.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(ours) = io.get_ref().and_then(|inner| inner.downcast_ref::<FetchError>()) {
                return ours.clone();
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return FetchError::Timeout(text());
            }
        }
        cause = error.source();
    }
    FetchError::Network(format!("{}: {}", shown(url), text()))
}

#[cfg(test)]
mod tests;
