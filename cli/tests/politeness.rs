//! Politeness across the cluster: ten `ingest worker` processes on a real
//! etcd poll 500 feeds on one fixture host, and 20 feeds on four other
//! hosts (other loopback addresses of the same fixture). The fixture
//! timestamps every request by the host it was sent to.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;

/// Request times by host (`Host` header, without the port).
type Arrivals = Arc<Mutex<HashMap<String, Vec<(Instant, String)>>>>;

const WORKERS: usize = 10;
const BUSY_FEEDS: usize = 500;
const OTHER_HOSTS: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
const FEEDS_PER_OTHER_HOST: usize = 5;
/// How long the busy host is watched.
const WINDOW: Duration = Duration::from_secs(20);

/// A feed server on every loopback address asked for (one port each, the
/// same router): `/feed/<n>` is a one-entry RSS feed.
async fn feed_fixture(arrivals: Arrivals, addresses: &[&str]) -> u16 {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, header};

    async fn feed(
        State(arrivals): State<Arrivals>,
        headers: HeaderMap,
        Path(n): Path<String>,
    ) -> impl axum::response::IntoResponse {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
        arrivals.lock().expect("lock").entry(host).or_default().push((Instant::now(), n.clone()));
        let body = format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>feed {n}</title>\
             <item><guid>entry-{n}</guid><title>entry of feed {n}</title></item></channel></rss>"
        );
        ([(header::CONTENT_TYPE, "application/rss+xml")], body)
    }

    let app = axum::Router::new().route("/feed/{n}", axum::routing::get(feed)).with_state(arrivals);
    let first = tokio::net::TcpListener::bind(format!("{}:0", addresses[0])).await.expect("bind");
    let port = first.local_addr().expect("addr").port();
    let mut listeners = vec![first];
    for address in &addresses[1..] {
        let addr: SocketAddr = format!("{address}:{port}").parse().expect("address");
        listeners.push(tokio::net::TcpListener::bind(addr).await.expect("bind another loopback address"));
    }
    for listener in listeners {
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    port
}

/// Every job of a host runs on the one worker that ranks first for that
/// host, which paces it: ten workers polling 500 feeds of one host send it
/// one request a second (`--fetch-host-rate`, default 1), never two closer
/// than the spacing, while the feeds of other hosts are read at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_workers_never_exceed_a_hosts_rate_and_other_hosts_are_not_slowed() {
    let arrivals = Arrivals::default();
    let mut addresses = vec!["127.0.0.1"];
    addresses.extend(OTHER_HOSTS);
    let port = feed_fixture(arrivals.clone(), &addresses).await;
    let mut cluster = Cluster::start(Duration::from_secs(10)).await;
    cluster.worker_env.push(("INGEST_FETCH_ALLOW".into(), "127.0.0.0/8".into()));
    let names: Vec<String> = (1..=WORKERS).map(|i| format!("w{i:02}")).collect();
    for name in &names {
        cluster.start_worker(name);
    }
    // Every worker registered before the jobs exist: claims go straight to
    // the worker that ranks first, nothing moves afterwards.
    let workers_prefix = cluster.keys.prefix(ingest_store::keys::KeyKind::Worker);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let registered = ingest_store::scan_prefix(cluster.store.as_ref(), &workers_prefix).await.map(|k| k.len());
        if registered.is_ok_and(|n| n == WORKERS) {
            break;
        }
        assert!(Instant::now() < deadline, "workers did not register\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let feed = |host: &str, n: usize| serde_json::json!({"url": format!("http://{host}:{port}/feed/{n}")});
    let created_at = Instant::now();
    let mut busy = Vec::new();
    for n in 0..BUSY_FEEDS {
        let id = format!("busy-{n:03}");
        cluster.create_job(&id, "rss", Duration::from_secs(60), feed("127.0.0.1", n)).await.expect("create");
        busy.push(id);
    }
    let mut others = Vec::new();
    for (h, host) in OTHER_HOSTS.iter().enumerate() {
        for i in 0..FEEDS_PER_OTHER_HOST {
            let n = 1000 + h * 100 + i;
            let id = format!("other-{n}");
            cluster.create_job(&id, "rss", Duration::from_secs(60), feed(host, n)).await.expect("create");
            others.push((host.to_string(), n.to_string()));
        }
    }
    tokio::time::sleep(WINDOW).await;

    let owners = cluster.owners().await;
    let busy_owners: std::collections::BTreeSet<&String> = busy.iter().filter_map(|id| owners.get(id)).collect();
    let arrivals = arrivals.lock().expect("lock").clone();
    let busy_host = arrivals.get("127.0.0.1").cloned().unwrap_or_default();
    let log = || format!("owners of the busy host's jobs: {busy_owners:?}\n{}", cluster.log_tails());
    assert_eq!(busy_owners.len(), 1, "every job of one host on one worker; {}", log());
    assert!(
        busy_host.len() >= WINDOW.as_secs() as usize - 5,
        "the busy host is read at its rate: {} requests",
        busy_host.len()
    );
    let span = busy_host.last().map(|l| l.0.duration_since(busy_host[0].0)).unwrap_or_default();
    assert!(
        // n requests at least 1 s apart span (n - 1) s; 5 % for the
        // scheduling of the two processes.
        busy_host.len() as f64 <= span.as_secs_f64() / 0.95 + 1.0,
        "{} requests in {span:?} from the first to the last",
        busy_host.len()
    );
    // Never two requests closer than the host's spacing (1 s; 50 ms for
    // the two processes' scheduling).
    let gaps: Vec<Duration> = busy_host.windows(2).map(|w| w[1].0.duration_since(w[0].0)).collect();
    let closest = gaps.iter().min().copied().unwrap_or(Duration::MAX);
    assert!(closest >= Duration::from_millis(950), "two requests {closest:?} apart: {gaps:?}");

    // The other hosts' feeds were each read, within their own host's pace
    // (5 feeds at 1/s), not after the busy host's queue of 500.
    for (host, n) in &others {
        let first = arrivals.get(host).and_then(|a| a.iter().find(|(_, f)| f == n).map(|(at, _)| *at));
        let after = first.map(|at| at.duration_since(created_at));
        assert!(
            after.is_some_and(|a| a <= Duration::from_secs(12)),
            "feed {n} on {host} read {after:?} after the jobs were created; {}",
            log()
        );
    }
    cluster.stop();
}
