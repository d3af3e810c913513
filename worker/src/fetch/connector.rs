//! The fetcher's connections: names resolved through the address policy,
//! TLS with the web's roots, and every write on a connection checked
//! against the worker's lease. The per-request fence (`fence.rs`) stops new
//! requests once the deadline has passed; this stops the bytes of one that
//! was handed to a connection just before the process froze (SIGSTOP, a
//! frozen VM) from going out when it wakes — the write is refused instead.
//! Refusals travel inside `io::Error`s as `FetchError`s, which `fetch.rs`
//! takes back out of hyper's error chain by type.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::address::AddressPolicy;
use super::{FetchError, refused_address};
use crate::membership::LeaseState;

/// Whether this worker may still write to its connections: set once the
/// worker runs (`Fetcher::fence_writes`); unset (tests, tools), writes pass.
#[derive(Clone, Default)]
pub struct WriteFence(Arc<OnceLock<watch::Receiver<Option<LeaseState>>>>);

impl WriteFence {
    pub fn set(&self, lease_rx: watch::Receiver<Option<LeaseState>>) {
        let _ = self.0.set(lease_rx);
    }

    /// Reads the clock now: a process woken past its deadline writes
    /// nothing, whatever its timers have seen.
    fn allows(&self) -> bool {
        self.0.get().is_none_or(|rx| rx.borrow().is_some_and(|s| Instant::now() < s.deadline))
    }
}

/// HTTP and HTTPS connections whose writes are fenced.
#[derive(Clone)]
pub struct FencedConnector {
    inner: HttpsConnector<HttpConnector<GuardedResolver>>,
    fence: WriteFence,
}

impl FencedConnector {
    /// `extra_roots`: PEM CA certificates trusted besides the web's roots.
    pub fn new(
        policy: Arc<AddressPolicy>,
        connect_timeout: std::time::Duration,
        extra_roots: &[u8],
        fence: WriteFence,
    ) -> Result<Self, String> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy });
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !extra_roots.is_empty() {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(extra_roots) {
                let cert = cert.map_err(|e| format!("--fetch-ca: {e}"))?;
                roots.add(cert).map_err(|e| format!("--fetch-ca: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err("--fetch-ca: no PEM certificate in the file".to_string());
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self { inner, fence })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for FencedConnector {
    type Response = FencedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<FencedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let fence = self.fence.clone();
        Box::pin(async move {
            if !fence.allows() {
                return Err(io::Error::other(FetchError::LeaseExpired).into());
            }
            Ok(FencedIo { inner: connecting.await?, fence })
        })
    }
}

/// A connection whose writes check the lease first.
pub struct FencedIo {
    inner: MaybeHttpsStream<TokioIo<TcpStream>>,
    fence: WriteFence,
}

impl FencedIo {
    fn refuse(&self) -> Option<io::Error> {
        (!self.fence.allows()).then(|| io::Error::other(FetchError::LeaseExpired))
    }
}

impl Connection for FencedIo {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl Read for FencedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for FencedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refuse() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refuse() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves names and drops addresses the policy refuses, so a connection
/// can only go to an allowed address (no window between check and use).
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refusal.get_or_insert_with(|| refused_address(&host, addr.ip(), reason));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match refusal {
                    Some(refusal) => io::Error::other(refusal),
                    None => io::Error::other(format!("{host} has no address")),
                });
            }
            Ok(allowed.into_iter())
        })
    }
}
