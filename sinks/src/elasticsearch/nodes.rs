//! A static pool of Elasticsearch nodes (`--elasticsearch-url a,b,c`) with
//! failover: requests go round the nodes; a node that gave no answer
//! (refused, reset, timed out, TLS failure) is skipped for a while and the
//! request goes to the next one at once, so a dead node costs one attempt,
//! not a failed request. Documents carry stable ids, so sending a `_bulk`
//! again to another node never duplicates.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use ingest_runtime::Secret;

/// How long a node that gave no answer is passed over.
const DOWN_FOR: Duration = Duration::from_secs(5);

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `--elasticsearch-username` and `--elasticsearch-password`.
    Basic { user: String, password: Secret },
    /// `--elasticsearch-api-key`: the encoded key (base64 of `id:key`, as
    /// Elasticsearch returns it), or `id:key`.
    ApiKey(Secret),
}

impl Auth {
    fn credentials(&self) -> Credentials {
        match self {
            Auth::Basic { user, password } => Credentials::Basic(user.clone(), password.expose().to_string()),
            Auth::ApiKey(key) => match key.expose().split_once(':') {
                Some((id, key)) => Credentials::ApiKey(id.to_string(), key.to_string()),
                None => Credentials::EncodedApiKey(key.expose().to_string()),
            },
        }
    }

    /// The flags that set these credentials, for error messages.
    pub fn flags(&self) -> &'static str {
        match self {
            Auth::Basic { .. } => "--elasticsearch-username/--elasticsearch-password",
            Auth::ApiKey(_) => "--elasticsearch-api-key",
        }
    }
}

struct Node {
    client: Elasticsearch,
    /// The URL without credentials, for logs and messages.
    url: String,
    down_until: Mutex<Option<Instant>>,
}

/// The nodes and which one is next.
pub struct Nodes {
    nodes: Vec<Node>,
    next: AtomicUsize,
}

/// No node answered; the error of the last one tried.
pub struct NoAnswer {
    pub url: String,
    pub error: elasticsearch::Error,
}

impl Nodes {
    /// One client per URL. `ca_pem`: the CA certificates (PEM) that sign the
    /// nodes' certificates, instead of the system's roots.
    pub fn new(
        urls: &[url::Url],
        auth: Option<&Auth>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("--elasticsearch-url: give at least one URL".to_string());
        }
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
                return Err(format!("--elasticsearch-url {}: use http(s)://host:port", redacted(url)));
            }
            let mut bare = url.clone();
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            // Credentials written into the URL, when no flag gives them.
            let from_url = (!url.username().is_empty()).then(|| Auth::Basic {
                user: url.username().to_string(),
                password: Secret::new(url.password().unwrap_or_default()),
            });
            let mut builder =
                TransportBuilder::new(SingleNodeConnectionPool::new(bare.clone())).timeout(timeout).disable_proxy();
            if let Some(auth) = auth.or(from_url.as_ref()) {
                builder = builder.auth(auth.credentials());
            }
            if let Some(pem) = ca_pem {
                let certificate = Certificate::from_pem(pem)
                    .map_err(|e| format!("--elasticsearch-ca: not a PEM certificate: {e}"))?;
                builder = builder.cert_validation(CertificateValidation::Full(certificate));
            }
            let transport = builder
                .build()
                .map_err(|e| format!("cannot set up the Elasticsearch client for {}: {e}", redacted(url)))?;
            nodes.push(Node {
                client: Elasticsearch::new(transport),
                url: redacted(&bare),
                down_until: Mutex::new(None),
            });
        }
        Ok(Self { nodes, next: AtomicUsize::new(0) })
    }

    /// Every node's URL, for logs.
    pub fn urls(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.url.as_str()).collect()
    }

    /// Sends `request` to one node after the other, starting with the next
    /// in turn that is not passed over, until one answers (any HTTP status).
    /// Each node is tried at most once.
    pub async fn send<F, Fut>(&self, request: F) -> Result<(Response, &str), NoAnswer>
    where
        F: Fn(Elasticsearch) -> Fut,
        Fut: Future<Output = Result<Response, elasticsearch::Error>>,
    {
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.nodes.len();
        // Nodes in turn order, those passed over last (still tried: they may be back).
        let mut order: Vec<usize> = (0..count).map(|i| (start + i) % count).collect();
        order.sort_by_key(|&i| self.nodes[i].is_down(now));
        let mut last = None;
        for i in order {
            let node = &self.nodes[i];
            match request(node.client.clone()).await {
                Ok(response) => {
                    node.mark_up();
                    return Ok((response, node.url.as_str()));
                }
                Err(error) => {
                    if count > 1 {
                        tracing::warn!(url = %node.url, %error, "elasticsearch node gave no answer; trying the next");
                    }
                    node.mark_down();
                    last = Some(NoAnswer { url: node.url.clone(), error });
                }
            }
        }
        Err(last.expect("at least one node"))
    }
}

impl Node {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| until > now)
    }

    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The URL without credentials, for logs and messages.
pub fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string().trim_end_matches('/').to_string()
}
