//! The job runtime through the API, control and a worker in-process on the
//! embedded store: a job runs once claimed, run-now runs it again, pause
//! hands it back with its checkpoint, resume continues from that checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_control::service::NewJob;
use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_model::CheckpointRecord;
use ingest_sinks::Sinks;
use ingest_store::keys::Keys;
use ingest_store::{EmbeddedStore, Store};
use ingest_worker::fetch::{FetchArgs, Fetcher};
use ingest_worker::{ControlEndpoint, JobServices, ReportTo, SchedulerConfig, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

struct Node {
    store: Arc<dyn Store>,
    keys: Keys,
    control: ControlService,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        Self::start_with(FetchArgs::default(), &[]).await
    }

    /// A node whose worker runs only `job_types` (all when empty).
    async fn start_with(fetch: FetchArgs, job_types: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let keys = Keys::default();
        let args = ServeArgs::loopback();
        let listeners = Listeners::bind(&args).await.expect("bind");
        let url = format!("http://{}", listeners.grpc.local_addr().expect("addr"));
        let control = ControlService::new(store.clone(), keys.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (control, shutdown) = (control.clone(), shutdown.clone());
            async move { serve(control, &args, listeners, shutdown).await }
        });
        let job_types = job_types.iter().map(|t| t.to_string()).collect();
        let config = WorkerConfig { name: "solo".into(), weight: 1.0, lease_ttl: Duration::from_secs(3), job_types };
        let worker = tokio::spawn(run_worker(
            store.clone(),
            keys.clone(),
            config,
            SchedulerConfig::default(),
            ReportTo::Control(ControlEndpoint { url, token: Default::default(), tls: None }),
            JobServices {
                sinks: Arc::new(Sinks::local(&dir.path().join("out"), Duration::from_secs(30))),
                fetcher: Arc::new(Fetcher::new(&fetch).expect("fetcher")),
                secrets_keys: None,
            },
            None,
            shutdown.clone(),
        ));
        Node { store, keys, control, shutdown, worker, _dir: dir }
    }

    async fn checkpoint(&self, id: &str) -> Option<CheckpointRecord> {
        let kv = self.store.get(&self.keys.state(id)).await.expect("get")?;
        serde_json::from_slice(&kv.value).ok()
    }

    async fn owner(&self, id: &str) -> Option<String> {
        let kv = self.store.get(&self.keys.owner(id)).await.expect("get")?;
        let owner: ingest_model::OwnerRecord = serde_json::from_slice(&kv.value).ok()?;
        Some(owner.worker)
    }

    /// Creates a demo job once the worker has published the type.
    async fn create_demo(&self, id: &str, items_per_run: u64, interval: Duration, paused: bool) {
        self.create_scheduled(id, items_per_run, interval, paused, Default::default()).await;
    }

    async fn create_scheduled(
        &self,
        id: &str,
        items_per_run: u64,
        interval: Duration,
        paused: bool,
        schedule: ingest_model::Schedule,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.store.get(&self.keys.job_type("demo")).await.expect("get").is_none() {
            assert!(Instant::now() < deadline, "demo type not published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let params = serde_json::json!({"items_per_run": items_per_run}).as_object().cloned().unwrap_or_default();
        let new = NewJob {
            id: Some(id.into()),
            name: id.into(),
            job_type: "demo".into(),
            params,
            interval: Some(interval),
            paused,
            schedule,
            ..Default::default()
        };
        self.control.create_job(new, false).await.expect("create");
    }

    /// The job's history once it holds at least `count` runs, newest first.
    async fn runs(&self, id: &str, count: usize) -> Vec<ingest_model::RunRecord> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let runs = self.control.list_job_runs(id).await.expect("list runs");
            if runs.len() >= count {
                return runs;
            }
            assert!(Instant::now() < deadline, "{id}: {} runs in the history, waiting for {count}", runs.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the job's cursor says `next_seq`.
    async fn wait_next_seq(&self, id: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seq = self.checkpoint(id).await.and_then(|c| c.cursor.get("next_seq").and_then(|v| v.as_u64()));
            if seq == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "next_seq is {seq:?}, want {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_owner(&self, id: &str, want: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.owner(id).await.as_deref() != want {
            assert!(Instant::now() < deadline, "owner of {id} is not {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_pause_and_resume_keep_the_checkpoint() {
    let node = Node::start().await;
    node.create_demo("hourly", 10, Duration::from_secs(3600), false).await;

    // Claimed and run once; the next run is an hour away.
    node.wait_owner("hourly", Some("solo")).await;
    node.wait_next_seq("hourly", 10).await;
    let checkpoint = node.checkpoint("hourly").await.expect("checkpoint");
    let next_run = checkpoint.next_run.expect("next run recorded");
    assert!(next_run > ingest_model::now_millis() + 3_000_000, "next run about an hour away");

    // Run-now runs it again at once, once.
    node.control.run_now("hourly").await.expect("run now");
    node.wait_next_seq("hourly", 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node.checkpoint("hourly").await.and_then(|c| c.cursor["next_seq"].as_u64()), Some(20));

    // Pause: the claim is released, the checkpoint stays.
    node.control.set_paused("hourly", true).await.expect("pause");
    node.wait_owner("hourly", None).await;
    let kept = node.checkpoint("hourly").await.expect("checkpoint kept");
    assert_eq!(kept.cursor["next_seq"].as_u64(), Some(20));
    assert_eq!(kept.run_now_seen, 1);

    // Resume: claimed again, continuing from the checkpoint (not from 0, and
    // the served run-now is not served again).
    node.control.set_paused("hourly", false).await.expect("resume");
    node.wait_owner("hourly", Some("solo")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node.checkpoint("hourly").await.and_then(|c| c.cursor["next_seq"].as_u64()), Some(20));
    node.control.run_now("hourly").await.expect("run now");
    node.wait_next_seq("hourly", 30).await;

    // The job's history: three runs, newest first, under two claims.
    let runs = node.runs("hourly", 3).await;
    let named: Vec<(i64, u64, &str)> = runs.iter().map(|r| (r.epoch, r.seq, r.worker.as_str())).collect();
    assert!(named[0].0 > named[1].0 && named[1].0 == named[2].0, "{named:?}");
    assert_eq!(
        named.iter().map(|(_, seq, worker)| (*seq, *worker)).collect::<Vec<_>>(),
        [(1, "solo"), (2, "solo"), (1, "solo")]
    );
    assert!(runs.iter().all(|r| r.outcome == ingest_model::RunOutcome::Succeeded && r.counters.items_fetched == 10));
    assert!(runs[0].start >= runs[1].start + runs[1].duration_ms as i64, "{runs:?}");

    node.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "worker stops cleanly: {stopped:?}");
}

/// An upstream that echoes the request's headers in its error body: the job's
/// last error (what GetJob, ListJobs and WatchJobs show) and the log name the
/// failure, never the job's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_echoed_by_upstream_never_reaches_the_last_error() {
    use axum::http::{HeaderMap, StatusCode};

    const SECRET: &str = "s3cret/value+123";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/api/items",
        axum::routing::get(|headers: HeaderMap| async move {
            let echoed: Vec<String> =
                headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?"))).collect();
            (StatusCode::UNAUTHORIZED, format!("bad key; you sent {}", echoed.join("; ")))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fetch = FetchArgs { fetch_allow: "127.0.0.1".parse().expect("allowlist"), ..FetchArgs::default() };
    let node = Node::start_with(fetch, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.store.get(&node.keys.job_type("http_json")).await.expect("get").is_none() {
        assert!(Instant::now() < deadline, "http_json type not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let params = serde_json::json!({"url": format!("http://{addr}/api/items"), "items_pointer": "/results",
        "id_pointer": "/id", "auth_header": "X-Api-Key", "auth_value": SECRET});
    let new = NewJob {
        id: Some("echo".into()),
        name: "echo".into(),
        job_type: "http_json".into(),
        params: params.as_object().cloned().unwrap_or_default(),
        interval: Some(Duration::from_secs(3600)),
        paused: false,
        ..Default::default()
    };
    node.control.create_job(new, false).await.expect("create");
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let view = node.control.get_job("echo").await.expect("get job");
        if let Some(error) = view.status.stats.last_error {
            break error.message;
        }
        assert!(Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("x-api-key: [redacted]"), "the echo is there, blanked: {error}");
    assert!(!error.contains("s3cret"), "the secret leaked into the last error: {error}");
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A stored checkpoint that does not decode is never replaced by a fresh
/// start in silence: the job says why and waits, running nothing and
/// keeping the record for inspection, until its cursor is reset
/// (ResetJobCursor); it then starts over from an empty cursor. A reset of a
/// readable checkpoint starts over too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_checkpoint_waits_for_a_cursor_reset() {
    let node = Node::start().await;
    node.create_demo("garbled", 5, Duration::from_secs(3600), true).await;
    let garbage = b"{\"cursor\": {\"next_seq\": 5}, \"next_run\": \"soon\"".to_vec();
    node.store.put(&node.keys.state("garbled"), garbage.clone(), 0).await.expect("write a bad checkpoint");
    node.control.set_paused("garbled", false).await.expect("resume");
    node.wait_owner("garbled", Some("solo")).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let view = node.control.get_job("garbled").await.expect("get job");
        if let Some(error) = view.status.stats.last_error {
            assert_eq!(view.status.stats.counters.items_fetched, 0, "nothing ran");
            break error.message;
        }
        assert!(Instant::now() < deadline, "no error shown for the unreadable checkpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("checkpoint unreadable") && error.contains("ResetJobCursor"), "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = node.store.get(&node.keys.state("garbled")).await.expect("get").expect("record");
    assert_eq!(kept.value, garbage, "the unreadable record is kept as it was");

    // The operator resets the cursor: the job starts over.
    let reset = node.control.reset_cursor("garbled").await.expect("reset");
    assert_eq!(reset.record.cursor_reset_seq, 1);
    node.wait_next_seq("garbled", 5).await;
    assert_eq!(node.checkpoint("garbled").await.expect("checkpoint").cursor_reset_seen, 1);

    // A readable cursor is reset too (and a reset is served once).
    node.control.run_now("garbled").await.expect("run now");
    node.wait_next_seq("garbled", 10).await;
    node.control.reset_cursor("garbled").await.expect("reset");
    node.control.run_now("garbled").await.expect("run now");
    node.wait_next_seq("garbled", 5).await;
    node.control.run_now("garbled").await.expect("run now");
    node.wait_next_seq("garbled", 10).await;
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A checkpoint that reads but whose cursor the job type cannot decode (or
/// one in a cursor format from a newer worker) is the same: one failed run
/// says why, then the job waits for a cursor reset instead of failing (and
/// being counted) again at every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_cursor_fails_once_and_waits_for_a_cursor_reset() {
    let node = Node::start().await;
    let cases = [
        ("odd-cursor", serde_json::json!({"next_seq": "five"}), None, "cursor unreadable: invalid type"),
        ("newer-cursor", serde_json::json!({"next_seq": 5}), Some(2), "written in format 2 by a newer worker"),
    ];
    for (id, cursor, cursor_version, _) in &cases {
        node.create_demo(id, 5, Duration::from_secs(1), true).await;
        let checkpoint =
            CheckpointRecord { cursor: cursor.clone(), cursor_version: *cursor_version, ..Default::default() };
        let bytes = serde_json::to_vec(&checkpoint).expect("encode");
        node.store.put(&node.keys.state(id), bytes, 0).await.expect("write the checkpoint");
        node.control.set_paused(id, false).await.expect("resume");
    }
    for (id, _, _, why) in &cases {
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            let view = node.control.get_job(id).await.expect("get job");
            if view.status.stats.counters.runs_failed >= 1 {
                break view;
            }
            assert!(Instant::now() < deadline, "{id}: no failed run counted: {:?}", view.status.stats);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let error = first.status.stats.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(error.contains(why) && error.contains("ResetJobCursor"), "{id}: {error}");
    }
    // Several intervals later: still one failure each, nothing fetched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (id, ..) in &cases {
        let later = node.control.get_job(id).await.expect("get job");
        let counters = &later.status.stats.counters;
        assert_eq!(counters.runs_failed, 1, "{id} waits, it does not retry: {:?}", later.status.stats);
        assert_eq!(counters.items_fetched, 0, "{id}");
        node.control.reset_cursor(id).await.expect("reset");
        node.wait_next_seq(id, 5).await;
    }
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A job the worker cannot build (here, a stored record missing a required
/// parameter, as one written by an older version could) counts a failed run
/// at each attempt and shows why: its errors never read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_be_built_counts_failed_runs() {
    let node = Node::start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.store.get(&node.keys.job_type("http_json")).await.expect("get").is_none() {
        assert!(Instant::now() < deadline, "http_json type not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let params = serde_json::json!({"url": "http://127.0.0.1:9/items", "id_pointer": "/id"});
    let new = NewJob {
        id: Some("unbuildable".into()),
        name: "unbuildable".into(),
        job_type: "http_json".into(),
        params: params.as_object().cloned().unwrap_or_default(),
        interval: Some(Duration::from_secs(10)),
        paused: true,
        ..Default::default()
    };
    node.control.create_job(new, false).await.expect("create");
    let kv = node.store.get(&node.keys.job("unbuildable")).await.expect("get").expect("record");
    let mut record: ingest_model::JobRecord = serde_json::from_slice(&kv.value).expect("record");
    record.params.remove("url");
    record.paused = false;
    node.store.put(&node.keys.job("unbuildable"), serde_json::to_vec(&record).expect("encode"), 0).await.expect("put");

    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view = node.control.get_job("unbuildable").await.expect("get job");
        if view.status.stats.counters.runs_failed >= 1 {
            break view;
        }
        assert!(Instant::now() < deadline, "no failed run counted: {:?}", view.status.stats);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = view.status.stats.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(error.contains("url"), "{error}");
    assert_eq!(view.status.state, ingest_model::JobState::Failing, "{:?}", view.status);
    let failed = &node.runs("unbuildable", 1).await[0];
    assert_eq!(failed.outcome, ingest_model::RunOutcome::Failed);
    assert!(failed.message.as_deref().is_some_and(|m| m.contains("url")), "{failed:?}");
    assert_eq!((failed.counters.runs, failed.counters.runs_failed), (1, 1));
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A worker started with `--job-types demo` publishes and runs only that
/// type: an rss job (its type published by another worker, long gone)
/// stays unowned and unschedulable while a demo job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_only_the_job_types_it_is_given() {
    let node = Node::start_with(FetchArgs::default(), &["demo"]).await;
    node.create_demo("only-demo", 5, Duration::from_secs(3600), false).await;
    node.wait_next_seq("only-demo", 5).await;
    assert!(node.store.get(&node.keys.job_type("rss")).await.expect("get").is_none(), "rss not published");
    // The rss type as a worker running it publishes it.
    let rss = ingest_worker::catalogue::runs(&["rss".into()]).expect("rss").remove(0).full_spec();
    let spec = serde_json::to_vec(&rss).expect("encode");
    node.store.put(&node.keys.job_type("rss"), spec, 0).await.expect("publish rss");
    let params = serde_json::json!({"url": "http://127.0.0.1:9/feed.xml"}).as_object().cloned().unwrap_or_default();
    let new = NewJob {
        id: Some("a-feed".into()),
        name: "a-feed".into(),
        job_type: "rss".into(),
        params,
        interval: Some(Duration::from_secs(60)),
        paused: false,
        ..Default::default()
    };
    node.control.create_job(new, false).await.expect("create the rss job");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(node.owner("a-feed").await, None, "nothing of another type lands here");
    let view = node.control.get_job("a-feed").await.expect("get job");
    assert_eq!(view.status.state, ingest_model::JobState::Unschedulable, "{:?}", view.status);
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A cron expression replaces the interval and windows hold runs back: a
/// job due once a year and one whose window opens in two hours do not run
/// (run-now still runs them once, and their next run is the cron time or
/// the window's start), while one inside its window runs every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_holds_runs_to_cron_times_and_windows() {
    use ingest_model::schedule::{Schedule, Window, utc_millis};
    let node = Node::start().await;
    let now = ingest_model::now_millis();
    // HH:MM (UTC) `minutes` from now.
    let hh_mm = |minutes: i64| {
        let m = (now / 60_000 + minutes).rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    let window = |from: i64, to: i64| Schedule {
        windows: vec![Window { start: hh_mm(from), end: hh_mm(to) }],
        ..Default::default()
    };
    let yearly = Schedule { cron: "0 0 1 1 *".into(), time_zone: "UTC".into(), ..Default::default() };
    let second = Duration::from_secs(1);
    node.create_scheduled("yearly", 5, second, false, yearly).await;
    node.create_scheduled("closed", 5, second, false, window(120, 180)).await;
    node.create_scheduled("open", 5, second, false, window(-60, 60)).await;
    node.wait_owner("yearly", Some("solo")).await;
    node.wait_owner("closed", Some("solo")).await;
    node.wait_next_seq("open", 10).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ["yearly", "closed"] {
        assert!(node.checkpoint(id).await.is_none(), "{id} ran outside its schedule");
    }

    for id in ["yearly", "closed"] {
        node.control.run_now(id).await.expect("run now");
        node.wait_next_seq(id, 5).await;
    }
    let next_run = |c: Option<CheckpointRecord>| c.and_then(|c| c.next_run).expect("next run");
    let new_year = {
        // This year by the mean Gregorian year's length; the first 1 January after now.
        let year: i64 = 1970 + now / 31_556_952_000;
        let candidates = [year, year + 1, year + 2].map(|y| utc_millis(&format!("{y}-01-01T00:00:00Z")).expect("date"));
        candidates.into_iter().find(|t| *t > now).expect("a coming new year")
    };
    assert_eq!(next_run(node.checkpoint("yearly").await), new_year, "the next cron time, not the interval");
    let opens = next_run(node.checkpoint("closed").await);
    let in_two_hours = (now / 60_000 + 120) * 60_000;
    assert!(
        (in_two_hours..in_two_hours + 60_000).contains(&opens) || opens == in_two_hours,
        "{opens} vs {in_two_hours}"
    );
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// A dry run runs the job once on the worker and answers what it would
/// write; nothing reaches the sinks, the checkpoint or the counters. An
/// existing job's run continues from its checkpoint; a failing run answers
/// its error; bad parameters are refused before any worker is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_answers_what_a_run_would_write_and_writes_nothing() {
    use ingest_control::preview::PreviewAsk;
    let node = Node::start().await;
    // Published types first (create_demo waits for them), on a paused job.
    node.create_demo("kept", 4, Duration::from_secs(3600), true).await;
    let checkpoint = CheckpointRecord { cursor: serde_json::json!({"next_seq": 7}), ..Default::default() };
    node.store.put(&node.keys.state("kept"), serde_json::to_vec(&checkpoint).expect("encode"), 0).await.expect("put");
    let before: Vec<String> = everything(&node).await;

    let params = |v: serde_json::Value| v.as_object().cloned();
    let fresh = PreviewAsk {
        job_type: "demo".into(),
        params: params(serde_json::json!({"items_per_run": 3, "archive_raw": true})),
        max_documents: 2,
        ..Default::default()
    };
    let answer = node.control.preview_job(fresh).await.expect("dry run");
    assert_eq!(answer.worker, "solo");
    let result = &answer.result;
    assert_eq!((result.documents_total, result.documents.len(), result.objects), (3, 2, 3), "{result:?}");
    assert_eq!(result.documents[0].document["seq"], 0);
    assert!(result.documents[0].index.starts_with("ingest-demo"), "{}", result.documents[0].index);
    assert_eq!(result.cursor, serde_json::json!({"next_seq": 3}));
    assert!(result.error.is_none(), "{result:?}");

    // The existing job continues from its checkpoint, with its own params
    // or with others tried in their place.
    let existing = PreviewAsk { id: Some("kept".into()), ..Default::default() };
    let result = node.control.preview_job(existing).await.expect("dry run of kept").result;
    let seqs: Vec<&serde_json::Value> = result.documents.iter().map(|d| &d.document["seq"]).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    let other = PreviewAsk {
        id: Some("kept".into()),
        params: params(serde_json::json!({"items_per_run": 1})),
        ..Default::default()
    };
    let result = node.control.preview_job(other).await.expect("dry run with other params").result;
    assert_eq!((result.documents_total, result.cursor.clone()), (1, serde_json::json!({"next_seq": 8})));

    // A failing run answers its error.
    let failing = PreviewAsk {
        job_type: "demo".into(),
        params: params(serde_json::json!({"fail_every": 1})),
        ..Default::default()
    };
    let result = node.control.preview_job(failing).await.expect("dry run that fails").result;
    assert!(result.error.as_deref().is_some_and(|e| e.contains("demo failure")), "{result:?}");

    // Refused before a worker is asked.
    let bad = PreviewAsk {
        job_type: "demo".into(),
        params: params(serde_json::json!({"items_per_run": 0})),
        ..Default::default()
    };
    let err = node.control.preview_job(bad).await.expect_err("bad params");
    assert!(
        matches!(&err, ingest_control::error::ControlError::Invalid(v) if v[0].field == "job.params.items_per_run"),
        "{err:?}"
    );

    // Nothing was written: no document file, no key (the requests went with their leases).
    assert_eq!(everything(&node).await, before);
    let out = std::fs::read_dir(node._dir.path().join("out/documents")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(out, 0, "a dry run indexed documents");
    node.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node.worker).await;
}

/// Every key but the ones that move on their own (worker load, types and registrations).
async fn everything(node: &Node) -> Vec<String> {
    let range = ingest_store::RangeRequest::new(ingest_store::KeyRange::prefix(node.keys.root()));
    let kvs = node.store.range(range).await.expect("range").kvs;
    kvs.into_iter()
        .filter(|kv| !["load/", "workers/", "types/", "owners/"].iter().any(|p| kv.key.contains(p)))
        .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
        .collect()
}
