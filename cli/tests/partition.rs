//! A network partition, made with a network namespace of the test's own:
//! one worker runs inside it and reaches etcd (and control) over one veth
//! pair, the fixture API over another. Taking the first link down cuts the
//! worker from etcd but not from the API: it must stop every runner before
//! its lease can expire in etcd (the fixture sees no request from it after
//! the expiry), and rejoin cleanly when the link comes back.
//!
//! Needs root and `ip` (iproute2), as on the CI machines; without them the
//! test fails saying so.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, ROOT};
use ingest_worker::assign::{self, Candidate};

const LEASE_TTL: Duration = Duration::from_secs(4);
const JOBS: usize = 20;

/// A namespace with two veth pairs to the test's namespace: `store` (etcd
/// and control, through forwarders of the test) and `api` (the fixture).
struct Netns {
    name: String,
    /// Root-side interfaces: (store, api).
    links: (String, String),
    /// Root-side addresses: (store, api); the namespace's side is `.2`.
    addrs: (IpAddr, IpAddr),
}

/// iproute2's `ip`, wherever this machine keeps it.
fn ip_bin() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("ip")
}

fn ip(args: &[&str]) {
    let out = Command::new(ip_bin()).args(args).stdin(Stdio::null()).output();
    let out = out.unwrap_or_else(|e| panic!("cannot run `ip {}` (iproute2 needed): {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed (this test needs root to make a network namespace): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        let id = std::process::id() % 250 + 1;
        let name = format!("ingest-part-{}", std::process::id());
        let links = (format!("ips{id}"), format!("ipa{id}"));
        let addrs: (IpAddr, IpAddr) =
            (format!("10.201.{id}.1").parse().expect("ip"), format!("10.202.{id}.1").parse().expect("ip"));
        let _ = Command::new(ip_bin()).args(["netns", "del", &name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &name]);
        let ns = Netns { name, links, addrs };
        ns.exec(&[ip_bin(), "link", "set", "lo", "up"]);
        for (link, addr) in [(&ns.links.0, ns.addrs.0), (&ns.links.1, ns.addrs.1)] {
            let peer = format!("{link}n");
            let _ = Command::new(ip_bin()).args(["link", "del", link]).stderr(Stdio::null()).status();
            ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &ns.name]);
            ip(&["addr", "add", &format!("{addr}/30"), "dev", link]);
            ip(&["link", "set", link, "up"]);
            let inside = format!("{}/30", ns.inside(addr));
            ns.exec(&[ip_bin(), "addr", "add", &inside, "dev", &peer]);
            ns.exec(&[ip_bin(), "link", "set", &peer, "up"]);
        }
        ns
    }

    /// The namespace's address on the link of `root`.
    fn inside(&self, root: IpAddr) -> IpAddr {
        match root {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                IpAddr::from([a, b, c, 2])
            }
            IpAddr::V6(_) => root,
        }
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Cuts (`false`) or heals (`true`) the link to etcd and control.
    fn store_link(&self, up: bool) {
        ip(&["link", "set", &self.links.0, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in [&self.links.0, &self.links.1] {
            let _ = Command::new(ip_bin()).args(["link", "del", link]).stderr(Stdio::null()).status();
        }
        let _ = Command::new(ip_bin()).args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Forwards TCP connections from `listen` to `to` (how the namespace
/// reaches etcd and control, which listen on 127.0.0.1).
async fn forwarder(listen: SocketAddr, to: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind a forwarder");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Request times by the address they came from.
type Requests = Arc<Mutex<Vec<(Instant, IpAddr)>>>;

/// A JSON API answering `[{"id": ...}]` on `/api/<n>`.
async fn api_fixture(listen: SocketAddr, requests: Requests) -> SocketAddr {
    use axum::extract::{ConnectInfo, Path, State};

    async fn api(
        State(requests): State<Requests>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        Path(n): Path<String>,
    ) -> axum::Json<serde_json::Value> {
        requests.lock().expect("lock").push((Instant::now(), peer.ip()));
        axum::Json(serde_json::json!([{"id": format!("item-{n}")}]))
    }
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind the fixture");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/api/{n}", axum::routing::get(api)).with_state(requests);
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    addr
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string()
}

async fn wait_for<F, Fut>(timeout: Duration, what: &str, cluster: &Cluster, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_from_etcd_stops_before_its_lease_expires_and_rejoins() {
    let ns = Netns::create();
    let requests = Requests::default();
    let api = api_fixture(SocketAddr::new(ns.addrs.1, 0), requests.clone()).await;
    let mut cluster = Cluster::start(LEASE_TTL).await;
    let etcd = host_port(&cluster.etcd.endpoints()[0]);
    let etcd_fwd = forwarder(SocketAddr::new(ns.addrs.0, 0), etcd).await;
    let control_fwd = forwarder(SocketAddr::new(ns.addrs.0, 0), host_port(&cluster.control_url)).await;

    // The worker in the namespace must rank first for the API's host (jobs
    // of a host go to one worker): pick its name so.
    let host = api.ip().to_string();
    let inside = (1..100)
        .map(|i| format!("cut-{i}"))
        .find(|name| {
            let candidates = [Candidate { name, weight: 1.0 }, Candidate { name: "root", weight: 1.0 }];
            assign::rank(&host, &candidates)[0] == name.as_str()
        })
        .expect("a name that ranks first");
    cluster.worker_env.push(("INGEST_FETCH_ALLOW".into(), "10.202.0.0/16".into()));
    cluster.worker_env.push(("INGEST_FETCH_HOST_RATE".into(), "50".into()));
    cluster.start_worker("root");
    let log = std::fs::File::create(cluster.log_path(&inside)).expect("log file");
    let ttl = format!("{}s", LEASE_TTL.as_secs());
    let child = Command::new(ip_bin())
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_ingest"), "--log-format", "json", "worker"])
        .args(["--name", &inside, "--lease-ttl", &ttl, "--key-root", ROOT])
        .args(["--etcd", &format!("http://{etcd_fwd}"), "--control", &format!("http://{control_fwd}")])
        .args(["--fetch-allow", "10.202.0.0/16", "--fetch-host-rate", "50"])
        .arg("--sink-dir")
        .arg(cluster.dir.path().join(format!("out-{inside}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn a worker in the namespace");
    cluster.workers.insert(inside.clone(), child);
    let worker_key = cluster.keys.worker(&inside);
    wait_for(Duration::from_secs(20), "both workers registered", &cluster, || async {
        let root = cluster.store.get(&cluster.keys.worker("root")).await.ok().flatten().is_some();
        root && cluster.store.get(&worker_key).await.ok().flatten().is_some()
    })
    .await;

    let mut jobs = Vec::new();
    for n in 0..JOBS {
        let params = serde_json::json!({"url": format!("http://{api}/api/{n}"), "id_pointer": "/id"});
        let id = format!("api-{n:02}");
        cluster.create_job(&id, "http_json", Duration::from_secs(10), params).await.expect("create");
        jobs.push(id);
    }
    let from_inside = ns.inside(ns.addrs.1);
    let owned_by = |owners: &std::collections::HashMap<String, String>, name: &str| {
        jobs.iter().all(|id| owners.get(id).map(String::as_str) == Some(name))
    };
    wait_for(Duration::from_secs(20), "the worker in the namespace runs every job", &cluster, || async {
        let fetched = requests.lock().expect("lock").iter().any(|(_, from)| *from == from_inside);
        fetched && owned_by(&cluster.owners().await, &inside)
    })
    .await;

    // The partition: etcd and control are gone for the worker inside; the
    // API is not.
    let cut_at = Instant::now();
    ns.store_link(false);
    // When etcd deletes its registration: the lease's expiry.
    let deadline = Instant::now() + LEASE_TTL * 3;
    let expired_at = loop {
        if cluster.store.get(&worker_key).await.is_ok_and(|kv| kv.is_none()) {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "its lease never expired in etcd\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_for(Duration::from_secs(15), "the other worker takes every job over", &cluster, || async {
        owned_by(&cluster.owners().await, "root")
    })
    .await;
    let last_inside =
        requests.lock().expect("lock").iter().filter(|(_, from)| *from == from_inside).map(|(at, _)| *at).max();
    let last_inside = last_inside.expect("requests from inside");
    assert!(
        last_inside < expired_at,
        "the cut worker fetched {:?} after its lease expired in etcd ({:?} after the cut)\n{}",
        last_inside.duration_since(expired_at),
        expired_at.duration_since(cut_at),
        cluster.log_tails()
    );
    let inside_log = std::fs::read_to_string(cluster.log_path(&inside)).unwrap_or_default();
    assert!(inside_log.contains("lease deadline passed"), "the cut worker stopped its jobs at its deadline");

    // Healed: it registers again under a new lease and, ranking first for
    // the host again, gets the jobs back (handed over by the other worker).
    ns.store_link(true);
    let healed_at = Instant::now();
    wait_for(Duration::from_secs(60), "the worker inside runs every job again", &cluster, || async {
        let fetched = requests.lock().expect("lock").iter().any(|(at, from)| *from == from_inside && *at > healed_at);
        fetched && owned_by(&cluster.owners().await, &inside)
    })
    .await;
    let history = cluster.history(&[&inside, "root"]);
    let cut_log = || std::fs::read_to_string(cluster.log_path(&inside)).unwrap_or_default();
    history.check_well_formed().unwrap_or_else(|e| panic!("{e}\n{}", cut_log()));
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}\n{}", cut_log()));
    history.check_epochs_monotonic().unwrap_or_else(|e| panic!("{e}\n{}", cut_log()));
    cluster.stop();
}
