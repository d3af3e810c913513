//! Delivery under faults, with worker processes on a real etcd, a real
//! Elasticsearch 9 or OpenSearch 2 and a real S3 server: Elasticsearch away
//! for 30 s, the S3 server away for 30 s, a worker killed with -9 in the
//! middle of its batches, workers given a wrong API key for a secure
//! Elasticsearch. Each time, the index ends up holding every upstream item
//! exactly once.
//!
//! The upstream is the `demo` type with `total_items`: each job has a known,
//! finite set of items with stable ids, so "exactly once" is a count.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Cluster;
use ingest_model::CheckpointRecord;
use ingest_store::keys::KeyKind;
use ingest_store::scan_prefix;
use ingest_testkit::{Engine, S3Server, SearchServer};
use serde_json::json;

const TTL: Duration = Duration::from_secs(4);
/// How long each server stays away.
fn outage() -> Duration {
    Duration::from_secs(std::env::var("INGEST_TEST_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30))
}

/// One fault test at a time: each runs its own servers and worker processes.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn demo_params(total: u64, per_run: u64, archive_raw: bool) -> serde_json::Map<String, serde_json::Value> {
    let params = json!({"total_items": total, "items_per_run": per_run, "item_bytes": 512, "archive_raw": archive_raw});
    params.as_object().cloned().unwrap_or_default()
}

fn sink_env(index: &SearchServer) -> Vec<(String, String)> {
    let mut env = index.env();
    // Runs give up on an absent sink quickly, so the outage shows on the jobs.
    env.push(("INGEST_SINK_TIMEOUT".into(), "4s".into()));
    env
}

async fn start_index(engine: Engine) -> SearchServer {
    tokio::task::spawn_blocking(move || SearchServer::start(engine)).await.expect("start the search server")
}

/// Items delivered so far per job (the checkpoints' cursors).
async fn delivered(cluster: &Cluster) -> HashMap<String, u64> {
    let kvs = scan_prefix(cluster.store.as_ref(), &cluster.keys.prefix(KeyKind::State)).await.unwrap_or_default();
    kvs.iter()
        .filter_map(|kv| {
            let (_, id) = cluster.keys.parse(&kv.key)?;
            let checkpoint: CheckpointRecord = serde_json::from_slice(&kv.value).ok()?;
            Some((id.to_string(), checkpoint.cursor.get("next_seq")?.as_u64()?))
        })
        .collect()
}

async fn wait_delivered(cluster: &Cluster, jobs: &[String], at_least: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = delivered(cluster).await;
        let total: u64 = jobs.iter().map(|j| done.get(j).copied().unwrap_or(0)).sum();
        if total >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {at_least} items delivered within {timeout:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Some job shows an error that names the sink while it is away.
async fn wait_for_job_error(cluster: &Cluster, jobs: &[String], needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for id in jobs {
            let view = cluster.control.get_job(id).await.expect("get job");
            if let Some(error) = view.status.stats.last_error.filter(|e| e.message.contains(needle)) {
                return error.message;
            }
        }
        assert!(Instant::now() < deadline, "no job reported an error containing '{needle}'\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn count(search: &SearchServer, index: &str) -> u64 {
    tokio::task::block_in_place(|| search.count(index))
}

/// Asserts the index holds every item of every job once; otherwise says
/// which jobs are short and what the workers logged about refusals.
fn assert_exactly_once(cluster: &Cluster, index: &SearchServer, jobs: &[String], total: u64) {
    let expected = jobs.len() as u64 * total;
    let found = count(index, "ingest-demo");
    if found != expected {
        let body = json!({"size": 0, "aggs": {"jobs": {"terms": {"field": "job_id", "size": 1000}}}});
        let answer = tokio::task::block_in_place(|| index.json("POST", "/ingest-demo/_search", Some(&body)));
        let short: Vec<String> = answer["aggregations"]["jobs"]["buckets"]
            .as_array()
            .map(|b| b.iter().filter(|b| b["doc_count"] != total).map(|b| b.to_string()).collect())
            .unwrap_or_default();
        let mut refusals = String::new();
        for name in cluster.workers.keys().chain(cluster.deaths.iter().map(|(n, _)| n)) {
            let log = std::fs::read_to_string(cluster.log_path(name)).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("refused") || l.contains("dead letter")).take(5) {
                refusals.push_str(&format!("{name}: {line}\n"));
            }
        }
        panic!("{found} documents for {expected} items; short jobs: {short:?}\n{refusals}");
    }
    assert_eq!(items_twice(index, "ingest-demo"), Vec::<serde_json::Value>::new(), "no item twice");
}

/// Upstream items with more than one document (exact: the index has one
/// shard, so a terms aggregation's counts are exact).
fn items_twice(search: &SearchServer, index: &str) -> Vec<serde_json::Value> {
    let body = json!({"size": 0, "aggs": {"twice": {"terms": {"field": "item_key", "min_doc_count": 2, "size": 10}}}});
    let answer = tokio::task::block_in_place(|| search.json("POST", &format!("/{index}/_search"), Some(&body)));
    answer["aggregations"]["twice"]["buckets"].as_array().cloned().expect("buckets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_9_outage_loses_and_duplicates_nothing() {
    let _serial = serial().await;
    let index = start_index(Engine::Elasticsearch9).await;
    let mut cluster = Cluster::start(TTL).await;
    cluster.worker_env = sink_env(&index);
    for name in ["w1", "w2"] {
        cluster.start_worker(name);
    }
    let (jobs_n, total) = (20u64, 1500u64);
    let jobs = cluster.create_jobs_with(jobs_n as usize, Duration::from_secs(1), demo_params(total, 100, false)).await;
    let expected = jobs_n * total;
    wait_delivered(&cluster, &jobs, expected / 5, Duration::from_secs(60)).await;

    tokio::task::block_in_place(|| index.stop());
    let during = delivered(&cluster).await.values().sum::<u64>();
    let error = wait_for_job_error(&cluster, &jobs, "did not acknowledge").await;
    assert!(error.contains("delivered again"), "{error}");
    tokio::time::sleep(outage().saturating_sub(Duration::from_secs(5))).await;
    // Nothing was acknowledged while the index was away.
    let after = delivered(&cluster).await.values().sum::<u64>();
    assert!(after <= during + jobs_n * 100, "checkpoints moved on without the index: {during} -> {after}");
    tokio::task::block_in_place(|| index.start_again());

    wait_delivered(&cluster, &jobs, expected, Duration::from_secs(120)).await;
    assert_exactly_once(&cluster, &index, &jobs, total);
    let history = cluster.history(&["w1", "w2"]);
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}"));
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_loses_and_duplicates_nothing() {
    let _serial = serial().await;
    let index = start_index(Engine::OpenSearch).await;
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.expect("start S3");
    let mut cluster = Cluster::start(TTL).await;
    cluster.worker_env = sink_env(&index);
    cluster.worker_env.extend(s3.env("ingest-raw"));
    for name in ["w1", "w2"] {
        cluster.start_worker(name);
    }
    let (jobs_n, total) = (10u64, 1000u64);
    let jobs = cluster.create_jobs_with(jobs_n as usize, Duration::from_secs(1), demo_params(total, 50, true)).await;
    let expected = jobs_n * total;
    wait_delivered(&cluster, &jobs, expected / 5, Duration::from_secs(60)).await;

    tokio::task::block_in_place(|| s3.stop());
    let error = wait_for_job_error(&cluster, &jobs, "s3:").await;
    assert!(error.contains("delivered again"), "{error}");
    tokio::time::sleep(outage().saturating_sub(Duration::from_secs(5))).await;
    tokio::task::block_in_place(|| s3.start_again());

    wait_delivered(&cluster, &jobs, expected, Duration::from_secs(120)).await;
    assert_exactly_once(&cluster, &index, &jobs, total);
    // Every document's raw payload is in the bucket, under the key it names.
    let sinks = common::s3_sink(&s3, "ingest-raw");
    let mut keys = std::collections::HashSet::new();
    let mut pages = sinks.client().list_objects_v2().bucket("ingest-raw").prefix("demo/").into_paginator().send();
    while let Some(page) = pages.next().await {
        keys.extend(page.expect("list objects").contents().iter().filter_map(|o| o.key().map(String::from)));
    }
    assert_eq!(keys.len() as u64, expected, "one archived payload per item");
    let sample = tokio::task::block_in_place(|| {
        index.json("POST", "/ingest-demo/_search", Some(&json!({"size": 50, "_source": ["raw_key"]})))
    });
    let hits = sample["hits"]["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 50);
    for hit in hits {
        let key = hit["_source"]["raw_key"].as_str().expect("raw_key in the document");
        assert!(keys.contains(key), "{key} not in the bucket");
    }
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    let _serial = serial().await;
    let index = start_index(Engine::OpenSearch).await;
    let mut cluster = Cluster::start(TTL).await;
    cluster.worker_env = sink_env(&index);
    for name in ["w1", "w2", "w3"] {
        cluster.start_worker(name);
    }
    // Large runs (1 000 items, ≈ 0.6 MB of bulk each): a kill lands inside one.
    let (jobs_n, total) = (12u64, 6000u64);
    let jobs = cluster.create_jobs_with(jobs_n as usize, Duration::from_secs(1), demo_params(total, 1000, false)).await;
    let expected = jobs_n * total;
    wait_delivered(&cluster, &jobs, expected / 4, Duration::from_secs(60)).await;
    cluster.kill("w2");
    wait_delivered(&cluster, &jobs, expected, Duration::from_secs(120)).await;
    assert_exactly_once(&cluster, &index, &jobs, total);
    let history = cluster.history(&["w1", "w2", "w3"]);
    history.check_single_owner().unwrap_or_else(|e| panic!("{e}"));
    history.check_epochs_monotonic().unwrap_or_else(|e| panic!("{e}"));
    cluster.stop();
}

/// A secure Elasticsearch and workers holding a wrong API key: each job says
/// which flag to fix, nothing is acknowledged; workers restarted with a good
/// key deliver every item exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_reported_on_the_jobs_and_loses_nothing() {
    let _serial = serial().await;
    let index =
        tokio::task::spawn_blocking(|| SearchServer::start_secure(Engine::Elasticsearch9)).await.expect("start");
    let key = tokio::task::block_in_place(|| {
        index.json("POST", "/_security/api_key", Some(&json!({"name": "ingest-workers"})))
    });
    let good = key["encoded"].as_str().expect("an encoded key").to_string();
    let with_key = |key: &str| {
        let mut env: Vec<(String, String)> = sink_env(&index)
            .into_iter()
            .filter(|(k, _)| {
                !k.starts_with("INGEST_ELASTICSEARCH_USERNAME") && !k.starts_with("INGEST_ELASTICSEARCH_PASSWORD")
            })
            .collect();
        env.push(("INGEST_ELASTICSEARCH_API_KEY".into(), key.to_string()));
        env
    };
    let mut cluster = Cluster::start(TTL).await;
    cluster.worker_env = with_key("d3Jvbmc6a2V5");
    for name in ["w1", "w2"] {
        cluster.start_worker(name);
    }
    let (jobs_n, total) = (6u64, 300u64);
    let jobs = cluster.create_jobs_with(jobs_n as usize, Duration::from_secs(1), demo_params(total, 100, false)).await;
    let error = wait_for_job_error(&cluster, &jobs, "--elasticsearch-api-key").await;
    assert!(error.contains("401"), "{error}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(delivered(&cluster).await.values().sum::<u64>(), 0, "nothing acknowledged without the index");

    for name in ["w1", "w2"] {
        let (_, _, clean) = cluster.terminate(name);
        assert!(clean, "{name} drained on SIGTERM");
    }
    cluster.worker_env = with_key(&good);
    for name in ["w3", "w4"] {
        cluster.start_worker(name);
    }
    wait_delivered(&cluster, &jobs, jobs_n * total, Duration::from_secs(90)).await;
    assert_exactly_once(&cluster, &index, &jobs, total);
    cluster.stop();
}

/// Documents the index refuses are listed on their job with the reason
/// (the whole letter in the bucket); once the mapping is fixed, a replay
/// sends them again: each lands once, under its own id, and leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_on_the_job_and_replayed_after_a_mapping_fix() {
    let _serial = serial().await;
    let index = start_index(Engine::Elasticsearch9).await;
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.expect("start S3");
    // A mapping that refuses the demo's numeric `seq`.
    let strict = json!({"mappings": {"dynamic": false, "properties": {"seq": {"type": "boolean"}}}});
    tokio::task::block_in_place(|| index.json("PUT", "/ingest-demo-letters", Some(&strict)));
    let mut cluster = Cluster::start(TTL).await;
    cluster.worker_env = sink_env(&index);
    cluster.worker_env.extend(s3.env("ingest-raw"));
    cluster.start_worker("w1");
    let params = json!({"total_items": 5, "items_per_run": 5, "index": "ingest-demo-letters"});
    let job = cluster.create_job("letters", "demo", Duration::from_secs(1), params).await.expect("create");

    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = cluster.control.list_dead_letters(&job, 0, None).await.expect("list dead letters");
        if page.total == 5 {
            break page;
        }
        assert!(Instant::now() < deadline, "{} dead letters listed, want 5\n{}", page.total, cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = &page.letters[0];
    assert_eq!(first.record.status, 400, "{:?}", first.record);
    assert!(first.record.reason.contains("seq"), "{}", first.record.reason);
    let shown = cluster.control.get_dead_letter(&job, &first.name).await.expect("get");
    assert!(shown.record.preview.contains("\"seq\""), "{}", shown.record.preview);
    let sinks = common::s3_sink(&s3, "ingest-raw");
    let letter = sinks.client().get_object().bucket("ingest-raw").key(&first.record.key).send().await;
    assert!(letter.is_ok(), "the whole letter is in the bucket under {}", first.record.key);
    assert_eq!(tokio::task::block_in_place(|| index.count("ingest-demo-letters")), 0);

    // The mapping fixed (the index made again), the letters sent again.
    let fixed = json!({"mappings": {"dynamic": false, "properties": {"seq": {"type": "long"}}}});
    tokio::task::block_in_place(|| {
        index.json("DELETE", "/ingest-demo-letters", None);
        index.json("PUT", "/ingest-demo-letters", Some(&fixed))
    });
    assert_eq!(cluster.control.replay_dead_letters(&job, &[]).await.expect("replay"), 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = cluster.control.list_dead_letters(&job, 0, None).await.expect("list").total;
        let landed = tokio::task::block_in_place(|| index.count("ingest-demo-letters"));
        if left == 0 && landed == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} letters left, {landed} documents landed\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Purging a job's (now empty) list forgets nothing else; deleting the
    // job removes whatever is listed.
    assert_eq!(cluster.control.purge_dead_letters(&job, &[]).await.expect("purge"), 0);
    cluster.stop();
}
