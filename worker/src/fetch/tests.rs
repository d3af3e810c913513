//! The fetcher against a local fixture server on 127.0.0.1.

use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;

use super::*;

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bomb: Bytes = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 64 << 20]).unwrap();
        e.finish().unwrap().into()
    };
    let app = Router::new()
        .route(
            "/feed",
            get(|headers: AxumHeaders| async move {
                if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                    return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")], "").into_response();
                }
                ([("etag", "\"v1\""), ("cache-control", "public, max-age=600")], "<rss/>").into_response()
            }),
        )
        .route("/limited", get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }))
        .route(
            "/bomb",
            get(|State(bomb): State<Bytes>| async move { ([("content-encoding", "gzip")], bomb).into_response() }),
        )
        .route("/big", get(|| async { vec![b'x'; 2 << 20] }))
        .route(
            "/trickle",
            get(|| async {
                let stream = futures::stream::unfold(0, |n| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    (n < 100).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
                });
                AxumResponse::new(Body::from_stream(stream))
            }),
        )
        .route(
            "/to-metadata",
            get(|| async { (StatusCode::FOUND, [("location", "http://169.254.169.254/latest/meta-data/")]) }),
        )
        .route(
            "/to-localhost",
            get(move || async move {
                (StatusCode::FOUND, [("location", format!("http://localhost:{}/auth", addr.port()))])
            }),
        )
        .route(
            "/to-port/{port}",
            get(|axum::extract::Path(port): axum::extract::Path<u16>| async move {
                (StatusCode::FOUND, [("location", format!("http://127.0.0.1:{port}/auth"))])
            }),
        )
        .route(
            "/auth",
            get(|headers: AxumHeaders| async move {
                headers.get("authorization").map_or("none".to_string(), |v| v.to_str().unwrap_or("?").to_string())
            }),
        )
        .with_state(bomb);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn fetcher(allow: &str) -> FencedFetcher {
    let fetcher = Fetcher::new(&FetchArgs {
        fetch_allow: allow.parse().unwrap(),
        fetch_timeout: Duration::from_secs(2),
        fetch_max_bytes: 1 << 20,
        fetch_per_host: 4,
        ..FetchArgs::default()
    })
    .unwrap();
    FencedFetcher::new(std::sync::Arc::new(fetcher), crate::fence::Fence::unbounded())
}

fn request(addr: SocketAddr, path: &str) -> Request {
    Request::get(format!("http://{addr}{path}").parse().unwrap(), "*/*")
}

#[tokio::test]
async fn local_addresses_are_refused_unless_allowlisted() {
    let addr = serve().await;
    let error = fetcher("").get(&request(addr, "/feed")).await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Refused(m) if m.contains("loopback") && m.contains("--fetch-allow")),
        "{error}"
    );
    // A host name is checked on the addresses it resolves to.
    let by_name = Request::get(format!("http://localhost:{}/feed", addr.port()).parse().unwrap(), "*/*");
    let error = fetcher("").get(&by_name).await.unwrap_err();
    assert!(matches!(&error, FetchError::Refused(m) if m.contains("loopback")), "{error}");
    let ok = fetcher("127.0.0.1").get(&request(addr, "/feed")).await.unwrap();
    assert_eq!((ok.status, &ok.body[..]), (200, &b"<rss/>"[..]));
    assert_eq!(ok.max_age(), Some(Duration::from_secs(600)));
    let ftp = Request::get("ftp://example.com/feed".parse().unwrap(), "*/*");
    assert!(matches!(fetcher("").get(&ftp).await, Err(FetchError::Refused(_))));
}

#[tokio::test]
async fn every_redirect_hop_is_checked_and_credentials_stay_home() {
    let addr = serve().await;
    let error = fetcher("127.0.0.1").get(&request(addr, "/to-metadata")).await.unwrap_err();
    assert!(matches!(&error, FetchError::Refused(m) if m.contains("169.254.169.254")), "{error}");
    let mut with_token = request(addr, "/to-localhost");
    with_token.headers.push((header::AUTHORIZATION, HeaderValue::from_static("Bearer secret")));
    let followed = fetcher("127.0.0.1").get(&with_token).await.unwrap();
    assert_eq!(&followed.body[..], b"none", "the token was not sent to another host");
    assert_eq!(followed.url.host_str(), Some("localhost"));
    // The same host on another port is another origin: no token there either.
    let other = serve().await;
    let mut to_port = request(addr, &format!("/to-port/{}", other.port()));
    to_port.headers.push((header::AUTHORIZATION, HeaderValue::from_static("Bearer secret")));
    let followed = fetcher("127.0.0.1").get(&to_port).await.unwrap();
    assert_eq!(followed.url.port(), Some(other.port()));
    assert_eq!(&followed.body[..], b"none", "the token was not sent to another port");
    // And on the first origin it is sent.
    let mut direct = request(addr, "/auth");
    direct.headers.push((header::AUTHORIZATION, HeaderValue::from_static("Bearer secret")));
    assert_eq!(&fetcher("127.0.0.1").get(&direct).await.unwrap().body[..], b"Bearer secret");
}

#[tokio::test]
async fn conditional_gets_and_retry_after() {
    let addr = serve().await;
    let fetcher = fetcher("127.0.0.1");
    let mut again = request(addr, "/feed");
    again.etag = Some("\"v1\"".into());
    let response = fetcher.get(&again).await.unwrap();
    assert!(response.not_modified() && response.body.is_empty());
    let error = fetcher.get(&request(addr, "/limited")).await.unwrap_err();
    assert!(
        matches!(error, FetchError::Status { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(7))
    );
    let job_error = crate::jobs::JobError::from(error);
    assert_eq!(job_error.retry_after, Some(Duration::from_secs(7)));
    assert!(job_error.message.contains("429") && job_error.message.contains("slow down"), "{}", job_error.message);
    // A key in the query never shows in an error.
    let keyed = fetcher.get(&request(addr, "/limited?apikey=SECRET-KEY")).await.unwrap_err().to_string();
    assert!(keyed.contains("/limited?…") && !keyed.contains("SECRET-KEY"), "{keyed}");
    let unreachable = Request::get("http://127.0.0.1:1/x?apikey=SECRET-KEY".parse().unwrap(), "*/*");
    let down = fetcher.get(&unreachable).await.unwrap_err().to_string();
    assert!(!down.contains("SECRET-KEY"), "{down}");
}

#[tokio::test]
async fn bombs_big_bodies_and_tricklers_are_contained() {
    let addr = serve().await;
    let fetcher = fetcher("127.0.0.1");
    let bomb = fetcher.get(&request(addr, "/bomb")).await.unwrap_err();
    assert!(matches!(&bomb, FetchError::TooLarge(m) if m.contains("decompressed")), "{bomb}");
    let big = fetcher.get(&request(addr, "/big")).await.unwrap_err();
    assert!(matches!(big, FetchError::TooLarge(_)), "{big}");
    let started = std::time::Instant::now();
    let slow = fetcher.get(&request(addr, "/trickle")).await.unwrap_err();
    assert!(matches!(slow, FetchError::Timeout(_)), "{slow}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Past its lease deadline a claim's fetches are not sent at all: the
/// server sees no connection.
#[tokio::test]
async fn nothing_is_sent_once_the_fence_is_broken() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while listener.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let now = tokio::time::Instant::now();
    let (_tx, rx) = tokio::sync::watch::channel(Some(crate::membership::LeaseState::until(1, now)));
    let fetcher =
        Fetcher::new(&FetchArgs { fetch_allow: "127.0.0.1".parse().unwrap(), ..FetchArgs::default() }).unwrap();
    let fenced = FencedFetcher::new(std::sync::Arc::new(fetcher), crate::fence::Fence::new(1, rx));
    let error = fenced.get(&request(addr, "/feed")).await.unwrap_err();
    assert_eq!(error, FetchError::LeaseExpired);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection made");
}

/// A request that got past the per-request check just before the process
/// froze is still not written once the worker's lease deadline has passed:
/// the connection refuses the write, on a pooled connection as on a new one.
#[tokio::test]
async fn connections_refuse_writes_past_the_lease_deadline() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/feed",
        get({
            let served = served.clone();
            move || async move {
                served.fetch_add(1, Ordering::SeqCst);
                "<rss/>"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let (_tx, rx) = tokio::sync::watch::channel(Some(crate::membership::LeaseState::until(1, deadline)));
    let fetcher =
        Fetcher::new(&FetchArgs { fetch_allow: "127.0.0.1".parse().unwrap(), ..FetchArgs::default() }).unwrap();
    fetcher.fence_writes(rx);
    // The per-request fence always holds here: only the connections check.
    let unfenced = crate::fence::Fence::unbounded();
    fetcher.get(&request(addr, "/feed"), &unfenced).await.expect("within the lease");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    tokio::time::sleep_until(deadline + Duration::from_millis(50)).await;
    let error = fetcher.get(&request(addr, "/feed"), &unfenced).await.expect_err("past the deadline");
    assert_eq!(error, FetchError::LeaseExpired, "{error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served.load(Ordering::SeqCst), 1, "nothing reached the server past the deadline");
}

/// https through the fetcher's own TLS: a server whose certificate a
/// private CA signed is fetched once `--fetch-ca` names that CA (over h2
/// and HTTP/1.1, as the server offers), and refused with a readable error
/// without it.
#[tokio::test]
async fn https_with_an_extra_ca_and_a_readable_refusal_without_it() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tempfile::tempdir().unwrap();
    ingest_testkit::make_test_certificates(dir.path());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.path().join("server.crt")).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    for alpn in [vec![b"h2".to_vec(), b"http/1.1".to_vec()], vec![b"http/1.1".to_vec()]] {
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .unwrap();
        config.alpn_protocols = alpn.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/feed", get(|| async { "<rss>over tls</rss>" }));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let url = Url::parse(&format!("https://127.0.0.1:{}/feed", addr.port())).unwrap();
        let args = |ca: Option<std::path::PathBuf>| FetchArgs {
            fetch_allow: "127.0.0.1".parse().unwrap(),
            fetch_ca: ca,
            ..FetchArgs::default()
        };
        let unfenced = crate::fence::Fence::unbounded();
        let trusting = Fetcher::new(&args(Some(dir.path().join("ca.crt")))).unwrap();
        let response = trusting.get(&Request::get(url.clone(), "*/*"), &unfenced).await.unwrap();
        assert_eq!((response.status, &response.body[..]), (200, &b"<rss>over tls</rss>"[..]), "alpn {alpn:?}");
        let strict = Fetcher::new(&args(None)).unwrap();
        let error = strict.get(&Request::get(url, "*/*"), &unfenced).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, FetchError::Network(_)), "{text}");
        assert!(text.contains("certificate") && text.contains("127.0.0.1"), "{text}");
    }
    let missing = FetchArgs { fetch_ca: Some(dir.path().join("nope.pem")), ..FetchArgs::default() };
    assert!(Fetcher::new(&missing).err().unwrap_or_default().contains("--fetch-ca"));
}
