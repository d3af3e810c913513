//! Peer workers as separate processes on a real etcd, 1 000 jobs: a join
//! moves only what must move, a kill -9 fails over within the lease TTL, a
//! SIGTERM drains with short gaps, and the ownership logs of every process
//! prove at most one owner per job at any instant with epochs that never go
//! backwards.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Cluster;
use ingest_testkit::ownership::mono_now_ns;

const JOBS: usize = 1000;
const TTL: Duration = Duration::from_secs(4);

fn count_by_worker(owners: &HashMap<String, String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for worker in owners.values() {
        *counts.entry(worker.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_kill_and_drain_move_jobs_safely() {
    let mut cluster = Cluster::start(TTL).await;
    for name in ["w1", "w2", "w3"] {
        cluster.start_worker(name);
    }
    let jobs = cluster.create_jobs(JOBS, Duration::from_secs(10)).await;
    cluster.wait_all_owned(&jobs, &["w1", "w2", "w3"], Duration::from_secs(30)).await;
    let before = cluster.wait_stable(Duration::from_secs(1), Duration::from_secs(30)).await;
    let counts = count_by_worker(&before);
    assert!(counts.values().all(|n| (200..=470).contains(n)), "uneven spread over 3 workers: {counts:?}");

    // Join: a fourth worker takes about a quarter, from everyone, and
    // nothing moves between the first three.
    let joined_at = mono_now_ns();
    cluster.start_worker("w4");
    // Nothing moves before the newcomer has ranked first for the
    // stabilization period; then moves are paced.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.owners().await.values().any(|w| w == "w4") {
        assert!(std::time::Instant::now() < deadline, "w4 never got a job\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = cluster.wait_stable(Duration::from_secs(3), Duration::from_secs(60)).await;
    assert_eq!(after.len(), JOBS);
    let moved: Vec<(&String, &String, &String)> =
        jobs.iter().filter(|j| before[*j] != after[*j]).map(|j| (j, &before[j], &after[j])).collect();
    assert!(moved.iter().all(|(_, _, to)| to.as_str() == "w4"), "jobs moved between old workers: {moved:?}");
    let sigma = (JOBS as f64 * 0.25 * 0.75).sqrt();
    let expected = JOBS as f64 / 4.0;
    assert!(
        (moved.len() as f64 - expected).abs() <= 3.0 * sigma,
        "{} jobs moved on join; expected {expected} ± {:.0}",
        moved.len(),
        3.0 * sigma
    );
    let history = cluster.history(&["w1", "w2", "w3", "w4"]);
    let moves = history.moves_between(joined_at, mono_now_ns());
    assert!(moves.iter().all(|m| m.to == "w4"), "a move went elsewhere than the newcomer: {moves:?}");

    // kill -9: the dead worker's jobs run elsewhere within TTL + 1 s.
    let victims: Vec<String> = jobs.iter().filter(|j| after[*j] == "w2").cloned().collect();
    let killed_at = cluster.kill("w2");
    cluster.wait_all_owned(&jobs, &["w1", "w3", "w4"], TTL + Duration::from_secs(10)).await;
    let history = cluster.history(&["w1", "w2", "w3", "w4"]);
    let bound = TTL + Duration::from_secs(1);
    history
        .check_all_running_at(killed_at + bound.as_nanos() as u64, &victims)
        .unwrap_or_else(|e| panic!("failover slower than TTL + 1 s: {e}"));

    // SIGTERM: drained within 8 s, each job's gap short.
    let settled = cluster.wait_stable(Duration::from_secs(3), Duration::from_secs(60)).await;
    let drained_jobs: Vec<String> = jobs.iter().filter(|j| settled[*j] == "w3").cloned().collect();
    assert!(!drained_jobs.is_empty());
    let (sent, took, ok) = cluster.terminate("w3");
    assert!(ok, "w3 must exit cleanly after SIGTERM");
    assert!(took <= Duration::from_secs(8), "drain took {took:?}");
    let owners = cluster.wait_all_owned(&jobs, &["w1", "w4"], Duration::from_secs(10)).await;
    assert!(drained_jobs.iter().all(|j| owners[j] != "w3"));
    let history = cluster.history(&["w1", "w2", "w3", "w4"]);
    let end = mono_now_ns();
    let gaps = history.gaps(sent, end, false);
    let drain_gaps: Vec<Duration> =
        gaps.gaps.iter().filter(|g| drained_jobs.contains(&g.job)).map(|g| g.duration()).collect();
    let mut sorted = drain_gaps.clone();
    sorted.sort();
    let p99 = sorted.get((sorted.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default();
    println!(
        "drain: {} jobs handed over, exit after {took:?}, gap p99 {p99:?}, max {:?}",
        drained_jobs.len(),
        sorted.last()
    );
    assert!(p99 <= Duration::from_millis(500), "drain gap p99 {p99:?}: {gaps}");

    // The whole history: one owner at a time, epochs only forward.
    history.check_well_formed().unwrap_or_else(|e| panic!("{e}"));
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}"));
    history.check_epochs_monotonic().unwrap_or_else(|e| panic!("{e}"));
    cluster.stop();
}
