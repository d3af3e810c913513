//! etcd as a real 3-member cluster (3 processes on loopback), with control
//! and 3 worker processes given every endpoint:
//! - the leader killed with -9 mid-run and restarted: no job ever has two
//!   runners, every job keeps running, control keeps answering (a dead
//!   member costs a retry, not a failed call);
//! - a majority stopped for 20 s: runners stop at their lease deadline and
//!   every job runs again once the quorum is back;
//! - a member serving TLS with client-certificate auth, reached with
//!   `--etcd-ca`, `--etcd-cert` and `--etcd-key`.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use ingest_control::service::JobFilter;
use ingest_store::{EtcdOptions, EtcdStore, EtcdTls, Store};
use ingest_testkit::EtcdServer;
use ingest_testkit::ownership::mono_now_ns;

const TTL: Duration = Duration::from_secs(4);
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// One test at a time: each runs 3 etcd members and 3 workers.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Calls ListJobs every 100 ms for `span`; when (since `from`) the calls
/// that failed were made, with their errors.
async fn list_jobs_failures(cluster: &Cluster, span: Duration, from: Instant) -> Vec<(Duration, String)> {
    let mut failures = Vec::new();
    let until = Instant::now() + span;
    while Instant::now() < until {
        // When the call was made: one in flight as the leader dies may wait for its timeout.
        let sent = from.elapsed();
        if let Err(error) = cluster.control.list_jobs(&JobFilter::default(), 50, None).await {
            failures.push((sent, error.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_killed_and_restarted_costs_no_call_and_no_second_runner() {
    let _serial = serial().await;
    let mut cluster = Cluster::start_on_members(3, TTL).await;
    for name in WORKERS {
        cluster.start_worker(name);
    }
    let jobs = cluster.create_jobs(150, Duration::from_secs(1)).await;
    cluster.wait_all_owned(&jobs, &WORKERS, Duration::from_secs(30)).await;

    let leader = cluster.etcd.members().leader().expect("a leader");
    let killed = Instant::now();
    let killed_ns = mono_now_ns();
    tokio::task::block_in_place(|| cluster.etcd.members().kill(leader));
    // Control answers throughout; a new leader is elected within about a
    // second, and only calls in that window may fail.
    let failures = list_jobs_failures(&cluster, Duration::from_secs(15), killed).await;
    let late: Vec<_> = failures.iter().filter(|(at, _)| *at > Duration::from_secs(3)).collect();
    assert!(late.is_empty(), "ListJobs failed after the election: {late:?}");
    assert!(failures.len() <= 10, "{} of 150 ListJobs calls failed: {failures:?}", failures.len());

    // Every job kept running on the two members left.
    let history = cluster.history(&WORKERS);
    history
        .check_all_running_at(killed_ns + Duration::from_secs(12).as_nanos() as u64, &jobs)
        .unwrap_or_else(|e| panic!("jobs stopped after the leader died: {e}\n{}", cluster.log_tails()));

    tokio::task::block_in_place(|| cluster.etcd.members().restart(leader));
    assert!(
        ingest_testkit::wait_until(Duration::from_secs(20), || cluster.etcd.members().healthy(leader)),
        "the old leader did not rejoin"
    );
    let rejoined_ns = mono_now_ns();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = list_jobs_failures(&cluster, Duration::from_secs(2), Instant::now()).await;
    assert!(failures.is_empty(), "{failures:?}");
    let history = cluster.history(&WORKERS);
    history
        .check_all_running_at(rejoined_ns + Duration::from_secs(2).as_nanos() as u64, &jobs)
        .unwrap_or_else(|e| panic!("jobs not running after the member rejoined: {e}\n{}", cluster.log_tails()));
    history.check_well_formed().unwrap_or_else(|e| panic!("{e}"));
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}"));
    history.check_epochs_monotonic().unwrap_or_else(|e| panic!("{e}"));
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_stops_runners_at_their_deadline_and_they_resume() {
    let _serial = serial().await;
    let mut cluster = Cluster::start_on_members(3, TTL).await;
    for name in WORKERS {
        cluster.start_worker(name);
    }
    let jobs = cluster.create_jobs(90, Duration::from_secs(1)).await;
    cluster.wait_all_owned(&jobs, &WORKERS, Duration::from_secs(30)).await;

    // Two of three members stopped for 20 s: the one left has no quorum.
    let stopped_ns = mono_now_ns();
    tokio::task::block_in_place(|| {
        cluster.etcd.members().kill(0);
        cluster.etcd.members().kill(1);
    });
    tokio::time::sleep(Duration::from_secs(20)).await;
    let history = cluster.history(&WORKERS);
    let past_deadline = stopped_ns + (TTL + Duration::from_secs(1)).as_nanos() as u64;
    let running = history.owners_at(past_deadline);
    let still: Vec<&String> = jobs.iter().filter(|j| running.contains_key(*j)).collect();
    assert!(still.is_empty(), "runners went on past their lease deadline without a quorum: {still:?}");

    tokio::task::block_in_place(|| {
        cluster.etcd.members().restart(0);
        cluster.etcd.members().restart(1);
    });
    assert!(
        ingest_testkit::wait_until(Duration::from_secs(30), || (0..3).all(|i| cluster.etcd.members().healthy(i))),
        "the quorum did not come back"
    );
    let back_ns = mono_now_ns();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let history = cluster.history(&WORKERS);
    // Workers rebalance once the quorum is back: a job may be between two
    // workers at that instant, for at most the cluster's hand-over gap.
    let handover = Duration::from_millis(500).as_nanos() as u64;
    history
        .check_all_running_or_handed_over_at(back_ns + Duration::from_secs(7).as_nanos() as u64, &jobs, handover)
        .unwrap_or_else(|e| panic!("jobs not back after the quorum returned: {e}\n{}", cluster.log_tails()));
    history.check_well_formed().unwrap_or_else(|e| panic!("{e}"));
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}"));
    history.check_epochs_monotonic().unwrap_or_else(|e| panic!("{e}"));
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start_tls).await.expect("start etcd with TLS");
    let (ca, cert, key) = etcd.tls_files().expect("TLS files");
    let read = |p: &std::path::Path| std::fs::read(p).expect("read a PEM file");

    // The store with the CA and the client certificate: reads and writes work.
    let tls = EtcdTls { ca: Some(read(&ca)), identity: Some((read(&cert), read(&key))) };
    let options = EtcdOptions { tls: Some(tls), ..EtcdOptions::new([etcd.endpoint()]) };
    let store = EtcdStore::connect(options).await.expect("connect over TLS");
    store.put("/tls/k", b"v".to_vec(), 0).await.expect("put over TLS");
    assert_eq!(store.get("/tls/k").await.expect("get").expect("present").value, b"v");

    // Without a client certificate etcd refuses the connection.
    let options = EtcdOptions {
        tls: Some(EtcdTls { ca: Some(read(&ca)), identity: None }),
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::new([etcd.endpoint()])
    };
    let store = EtcdStore::connect(options).await.expect("set up");
    assert!(store.get("/tls/k").await.is_err(), "no client certificate, no answer");

    // An https endpoint without TLS flags, and TLS flags with an http endpoint, are refused clearly.
    let error = EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await.err().expect("refused").to_string();
    assert!(error.contains("--etcd-ca"), "{error}");

    // The binary with the flags: a worker on TLS etcd registers and answers health.
    let ingest = env!("CARGO_BIN_EXE_ingest");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = format!("127.0.0.1:{}", ingest_testkit::free_port());
    let mut worker = std::process::Command::new(ingest)
        .args(["worker", "--name", "tls-worker", "--etcd", &etcd.endpoint()])
        .arg("--etcd-ca")
        .arg(&ca)
        .arg("--etcd-cert")
        .arg(&cert)
        .arg("--etcd-key")
        .arg(&key)
        .args(["--metrics-addr", &metrics, "--control", "http://127.0.0.1:9"])
        .arg("--sink-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ingest worker");
    let healthy = ingest_testkit::wait_until(Duration::from_secs(20), || {
        std::process::Command::new(ingest)
            .args(["health", "--http", &metrics])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(healthy, "the worker on TLS etcd never became healthy");

    // A CA file that is not PEM: one clear line naming the flag, non-zero exit.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let out = std::process::Command::new(ingest)
        .args(["worker", "--name", "x", "--etcd", &etcd.endpoint(), "--etcd-ca"])
        .arg(&bad)
        .output()
        .expect("run ingest worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--etcd-ca") && stderr.contains("not a PEM"), "{stderr}");
}
