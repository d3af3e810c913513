//! WorkerService.ReportProgress over real gRPC, on the embedded store and on
//! a real etcd: reports stream in, control folds them into `stats/<id>` in
//! batches, and GetJob, ListJobs and ListWorkers show the counters.

mod common;

use std::time::Duration;

use common::{Harness, WorkerClient, create, eventually, probe_job, probe_type, violated_fields};
use ingest_control::convert::timestamp;
use ingest_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    reported_counters_show_in_jobs_and_workers,
    repeats_and_reorders_do_not_double_count_and_new_claims_add_up,
    reports_for_deleted_or_unknown_jobs_write_no_stats,
    bad_messages_are_refused_whole_with_field_violations,
    many_reports_for_many_jobs_take_a_few_transactions,
    runs_join_the_history_once_each_newest_first,
    webhooks_fire_once_per_health_change_across_control_servers,
);

const WAIT: Duration = Duration::from_secs(15);

fn counters(items_fetched: u64, runs: u64) -> pb::JobCounters {
    pb::JobCounters { items_fetched, items_written: items_fetched, runs, ..Default::default() }
}

fn progress(job_id: &str, epoch: i64, counters: pb::JobCounters) -> pb::JobProgress {
    pb::JobProgress { job_id: job_id.to_string(), epoch, counters: Some(counters), ..Default::default() }
}

fn message(jobs: Vec<pb::JobProgress>) -> pb::ReportProgressRequest {
    pb::ReportProgressRequest { worker: "w1".to_string(), jobs }
}

/// Streams `messages` on one call; returns when control has taken them all.
async fn report(client: &mut WorkerClient, messages: Vec<pb::ReportProgressRequest>) -> Result<(), tonic::Status> {
    client.report_progress(tokio_stream::iter(messages)).await.map(|_| ())
}

async fn job_counters(h: &Harness, id: &str) -> Option<pb::JobCounters> {
    let response = h.client.clone().get_job(pb::GetJobRequest { id: id.to_string() }).await.ok()?;
    response.into_inner().job?.status?.counters
}

/// A job whose run count tells how far the flushes got: reports are
/// recorded in order and flushed whole, so once a sentinel value shows,
/// every report sent before it is in the store.
struct Sentinel {
    id: String,
    epoch: i64,
    runs: u64,
}

impl Sentinel {
    async fn new(h: &mut Harness) -> Sentinel {
        let id = create(&mut h.client, probe_job("sentinel")).await.id;
        let epoch = h.claim(&id, "w1").await;
        Sentinel { id, epoch, runs: 0 }
    }

    /// Waits until everything reported before this call is flushed.
    async fn flushed(&mut self, h: &Harness) {
        self.runs += 1;
        let mut client = h.worker_client().await;
        report(&mut client, vec![message(vec![progress(&self.id, self.epoch, counters(0, self.runs))])])
            .await
            .expect("report sentinel");
        let runs = self.runs;
        eventually(WAIT, "sentinel flushed", || async {
            job_counters(h, &self.id).await.is_some_and(|c| c.runs == runs)
        })
        .await;
    }
}

async fn reported_counters_show_in_jobs_and_workers(mut h: Harness) {
    h.start_worker("w1", vec![probe_type()]).await;
    let a = create(&mut h.client, probe_job("a")).await.id;
    let b = create(&mut h.client, probe_job("b")).await.id;
    let (epoch_a, epoch_b) = (h.claim(&a, "w1").await, h.claim(&b, "w1").await);
    let mut ok = progress(
        &a,
        epoch_a,
        pb::JobCounters {
            items_fetched: 10,
            items_written: 9,
            items_failed: 1,
            bytes_fetched: 100,
            runs: 2,
            runs_failed: 1,
            items_filtered: 4,
        },
    );
    ok.last_success_time = Some(timestamp(1_000_000));
    let mut failing = progress(&b, epoch_b, counters(5, 1));
    failing.last_success_time = Some(timestamp(1_000_000));
    failing.last_error = Some(pb::JobError { time: Some(timestamp(2_000_000)), message: "feed gone".into() });
    let mut client = h.worker_client().await;
    report(&mut client, vec![message(vec![ok]), message(vec![failing])]).await.expect("report");

    eventually(WAIT, "counters of b flushed", || async { job_counters(&h, &b).await == Some(counters(5, 1)) }).await;
    let job_a = h.client.get_job(pb::GetJobRequest { id: a.clone() }).await.expect("get a").into_inner().job;
    let status = job_a.and_then(|j| j.status).expect("status of a");
    let expected = pb::JobCounters {
        items_fetched: 10,
        items_written: 9,
        items_failed: 1,
        bytes_fetched: 100,
        runs: 2,
        runs_failed: 1,
        items_filtered: 4,
    };
    assert_eq!(status.counters, Some(expected));
    assert_eq!(status.last_success_time, Some(timestamp(1_000_000)));
    assert_eq!((status.state, status.owner.as_str(), status.epoch), (pb::JobState::Running as i32, "w1", epoch_a));

    let list = h.client.list_jobs(pb::ListJobsRequest::default()).await.expect("list").into_inner();
    let b_listed = list.jobs.iter().find(|j| j.id == b).and_then(|j| j.status.clone()).expect("b listed");
    assert_eq!(b_listed.state, pb::JobState::Failing as i32);
    assert!(b_listed.state_reason.contains("feed gone"), "{}", b_listed.state_reason);
    assert_eq!(b_listed.last_error.map(|e| e.message), Some("feed gone".to_string()));

    let sum = pb::JobCounters {
        items_fetched: 15,
        items_written: 14,
        items_failed: 1,
        bytes_fetched: 100,
        runs: 3,
        runs_failed: 1,
        items_filtered: 4,
    };
    eventually(WAIT, "w1 listed with its jobs' counters", || async {
        let workers = h.client.clone().list_workers(pb::ListWorkersRequest {}).await.expect("workers").into_inner();
        let w1 = workers.workers.into_iter().find(|w| w.name == "w1");
        w1.is_some_and(|w| (w.jobs_owned, w.counters) == (2, Some(sum)))
    })
    .await;
    h.stop().await;
}

async fn repeats_and_reorders_do_not_double_count_and_new_claims_add_up(mut h: Harness) {
    let mut sentinel = Sentinel::new(&mut h).await;
    let id = create(&mut h.client, probe_job("counted")).await.id;
    let first = h.claim(&id, "w1").await;
    let mut client = h.worker_client().await;
    let at = |epoch, fetched, runs| message(vec![progress(&id, epoch, counters(fetched, runs))]);

    report(&mut client, vec![at(first, 10, 1), at(first, 30, 3)]).await.expect("report");
    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(counters(30, 3)));

    // Repeated, reordered (older totals after newer ones), on separate
    // streams and within one message.
    report(&mut client, vec![at(first, 30, 3), at(first, 10, 1)]).await.expect("repeat");
    report(
        &mut client,
        vec![message(vec![progress(&id, first, counters(30, 3)), progress(&id, first, counters(20, 2))])],
    )
    .await
    .expect("repeat in one message");
    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(counters(30, 3)), "repeats must not count twice");

    // The job moves to another claim: its totals start from zero and add to
    // the lifetime totals; the old claim's reports are stale from then on.
    let second = h.claim(&id, "w2").await;
    assert!(second > first);
    report(&mut client, vec![at(second, 5, 1)]).await.expect("new claim");
    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(counters(35, 4)));
    report(&mut client, vec![at(first, 40, 4), at(second, 8, 1)]).await.expect("stale and newer");
    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(counters(38, 4)), "stale claim ignored, new totals folded");
    h.stop().await;
}

async fn reports_for_deleted_or_unknown_jobs_write_no_stats(mut h: Harness) {
    let mut sentinel = Sentinel::new(&mut h).await;
    let id = create(&mut h.client, probe_job("deleted")).await.id;
    let epoch = h.claim(&id, "w1").await;
    let mut client = h.worker_client().await;
    report(&mut client, vec![message(vec![progress(&id, epoch, counters(3, 1))])]).await.expect("report");
    sentinel.flushed(&h).await;
    assert!(h.store.get(&h.keys.stats(&id)).await.expect("get").is_some());

    h.client.delete_job(pb::DeleteJobRequest { id: id.clone(), revision: 0 }).await.expect("delete");
    // The owner has not noticed yet and keeps reporting; other reports name
    // a job that never existed. Both are accepted (not an error: deletion
    // races with reporting) and write nothing.
    let late = message(vec![progress(&id, epoch, counters(9, 2)), progress("never-created", 7, counters(1, 1))]);
    report(&mut client, vec![late]).await.expect("reports for missing jobs are accepted");
    sentinel.flushed(&h).await;
    assert_eq!(h.store.get(&h.keys.stats(&id)).await.expect("get"), None, "stats recreated for a deleted job");
    assert_eq!(h.store.get(&h.keys.stats("never-created")).await.expect("get"), None);

    // A new job with the same id: the old claim's reports are not its own.
    let request = pb::CreateJobRequest { job: Some(probe_job("same id")), job_id: id.clone(), validate_only: false };
    h.client.create_job(request).await.expect("recreate");
    report(&mut client, vec![message(vec![progress(&id, epoch, counters(9, 2))])]).await.expect("report");
    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(pb::JobCounters::default()), "old claim counted for a new job");
    h.stop().await;
}

async fn bad_messages_are_refused_whole_with_field_violations(mut h: Harness) {
    let mut sentinel = Sentinel::new(&mut h).await;
    let id = create(&mut h.client, probe_job("untouched")).await.id;
    let epoch = h.claim(&id, "w1").await;
    let mut client = h.worker_client().await;
    let bad = pb::ReportProgressRequest {
        worker: String::new(),
        jobs: vec![progress(&id, epoch, counters(5, 1)), progress("Not_An_Id", 0, counters(1, 1))],
    };
    let status = report(&mut client, vec![bad]).await.expect_err("refused");
    assert_eq!(violated_fields(&status), ["jobs[1].epoch", "jobs[1].job_id", "worker"]);
    let long_name = pb::ReportProgressRequest { worker: "w".repeat(254), jobs: vec![] };
    let status = report(&mut client, vec![long_name]).await.expect_err("refused");
    assert_eq!(violated_fields(&status), ["worker"]);

    sentinel.flushed(&h).await;
    assert_eq!(job_counters(&h, &id).await, Some(pb::JobCounters::default()), "a refused message wrote counters");
    h.stop().await;
}

async fn many_reports_for_many_jobs_take_a_few_transactions(mut h: Harness) {
    let mut jobs = Vec::new();
    for i in 0..100 {
        let id = create(&mut h.client, probe_job(&format!("job {i}"))).await.id;
        let epoch = h.claim(&id, "w1").await;
        jobs.push((id, epoch));
    }
    let before = h.revision().await;
    let messages: Vec<_> = (1..=50u64)
        .map(|n| message(jobs.iter().map(|(id, epoch)| progress(id, *epoch, counters(10 * n, n))).collect()))
        .collect();
    let mut client = h.worker_client().await;
    report(&mut client, messages).await.expect("report");
    let stats_prefix = h.keys.prefix(ingest_store::keys::KeyKind::Stats);
    eventually(WAIT, "every job's final totals flushed", || async {
        let range = ingest_store::RangeRequest::new(ingest_store::KeyRange::prefix(stats_prefix.clone()));
        let stats = h.store.range(range).await.expect("read stats").kvs;
        stats.len() == 100
            && stats.iter().all(|kv| {
                serde_json::from_slice::<ingest_model::StatsRecord>(&kv.value)
                    .is_ok_and(|s| s.counters.runs == 50 && s.counters.items_fetched == 500)
            })
    })
    .await;
    // 5 000 reports, 100 jobs: one write per 40 jobs per flush, and the
    // stream spans one or two flushes.
    let writes = h.revision().await - before;
    assert!((3..=6).contains(&writes), "{writes} store writes for 5 000 reports");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_service_requires_the_bearer_token_when_one_is_set() {
    let h = Harness::with_token("s3cret").await;
    let mut client = h.worker_client().await;
    let status = report(&mut client, vec![message(vec![])]).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(tokio_stream::iter(vec![message(vec![])]));
    request.metadata_mut().insert("authorization", "Bearer s3cret".parse().expect("header"));
    client.report_progress(request).await.expect("with the token");
    h.stop().await;
}

fn run(seq: u64, start_ms: i64, outcome: pb::RunOutcome, message: &str) -> pb::JobRun {
    pb::JobRun {
        start_time: Some(timestamp(start_ms)),
        duration: Some(pbjson_types::Duration { seconds: 1, nanos: 500_000_000 }),
        outcome: outcome as i32,
        counters: Some(counters(seq, 1)),
        message: message.to_string(),
        seq,
        ..Default::default()
    }
}

async fn job_runs(h: &Harness, id: &str) -> Result<Vec<pb::JobRun>, tonic::Status> {
    let request = pb::ListJobRunsRequest { id: id.to_string() };
    Ok(h.client.clone().list_job_runs(request).await?.into_inner().runs)
}

async fn runs_join_the_history_once_each_newest_first(mut h: Harness) {
    let mut sentinel = Sentinel::new(&mut h).await;
    let id = create(&mut h.client, probe_job("with runs")).await.id;
    let epoch = h.claim(&id, "w1").await;
    assert_eq!(job_runs(&h, &id).await.expect("no runs yet"), Vec::new());
    let t0 = 1_800_000_000_000;
    let with_runs =
        |runs: Vec<pb::JobRun>, total: u64| pb::JobProgress { runs, ..progress(&id, epoch, counters(total, total)) };
    let mut client = h.worker_client().await;
    // The second report repeats run 2 (its first send's answer was lost).
    let first = with_runs(
        vec![run(1, t0, pb::RunOutcome::Succeeded, ""), run(2, t0 + 60_000, pb::RunOutcome::Failed, "HTTP 503")],
        2,
    );
    let second = with_runs(
        vec![
            run(2, t0 + 60_000, pb::RunOutcome::Failed, "HTTP 503"),
            run(3, t0 + 120_000, pb::RunOutcome::Warning, "2 entries dropped"),
        ],
        3,
    );
    report(&mut client, vec![message(vec![first])]).await.expect("first report");
    report(&mut client, vec![message(vec![second])]).await.expect("second report");
    sentinel.flushed(&h).await;
    let runs = job_runs(&h, &id).await.expect("runs");
    let seen: Vec<(u64, i32, &str)> = runs.iter().map(|r| (r.seq, r.outcome, r.message.as_str())).collect();
    assert_eq!(
        seen,
        [
            (3, pb::RunOutcome::Warning as i32, "2 entries dropped"),
            (2, pb::RunOutcome::Failed as i32, "HTTP 503"),
            (1, pb::RunOutcome::Succeeded as i32, ""),
        ],
        "each run once, newest first"
    );
    assert!(runs.iter().all(|r| r.worker == "w1" && r.epoch == epoch), "{runs:?}");
    assert_eq!(runs[0].duration, Some(pbjson_types::Duration { seconds: 1, nanos: 500_000_000 }));
    assert_eq!(runs[0].start_time, Some(timestamp(t0 + 120_000)));
    assert_eq!(runs[0].counters.as_ref().map(|c| c.items_fetched), Some(3));

    // Only the last 50 are kept.
    let many: Vec<pb::JobProgress> = (4..=63u64)
        .map(|seq| with_runs(vec![run(seq, t0 + seq as i64 * 60_000, pb::RunOutcome::Succeeded, "")], seq))
        .collect();
    report(&mut client, vec![message(many)]).await.expect("many runs");
    sentinel.flushed(&h).await;
    let runs = job_runs(&h, &id).await.expect("runs");
    assert_eq!(runs.len(), 50);
    assert_eq!((runs[0].seq, runs[49].seq), (63, 14));

    // Bad runs are refused with the message whole.
    let bad = pb::JobRun { seq: 0, outcome: 0, start_time: None, duration: None, ..Default::default() };
    let status = report(&mut client, vec![message(vec![with_runs(vec![bad], 64)])]).await.expect_err("bad run refused");
    assert_eq!(
        violated_fields(&status),
        ["jobs[0].runs[0].duration", "jobs[0].runs[0].outcome", "jobs[0].runs[0].seq", "jobs[0].runs[0].start_time"]
    );
    assert_eq!(job_runs(&h, "missing-job").await.expect_err("missing").code(), Code::NotFound);
    assert_eq!(violated_fields(&job_runs(&h, "Bad Id").await.expect_err("bad id")), ["id"]);

    // Deleting the job deletes its history.
    h.client.delete_job(pb::DeleteJobRequest { id: id.clone(), revision: 0 }).await.expect("delete");
    let dump = h.dump().await;
    assert!(!dump.iter().any(|(k, _)| *k == h.keys.runs(&id)), "the run history outlived its job");
    h.stop().await;
}

/// What the webhook fixture received: (event header, body, signature header)
/// of each delivery it accepted, and how many it refused.
#[derive(Default)]
struct Hooks {
    accepted: Vec<(String, serde_json::Value, String)>,
    refused: usize,
}

/// A webhook receiver on 127.0.0.1 that refuses the first delivery with a
/// 500 (so the sender must retry) and accepts the rest.
async fn webhook_fixture() -> (url::Url, std::sync::Arc<std::sync::Mutex<Hooks>>) {
    use axum::http::{HeaderMap, StatusCode};
    let hooks = std::sync::Arc::new(std::sync::Mutex::new(Hooks::default()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let hooks = hooks.clone();
            move |headers: HeaderMap, body: bytes::Bytes| {
                let hooks = hooks.clone();
                async move {
                    let mut hooks = hooks.lock().expect("hooks");
                    if hooks.refused == 0 {
                        hooks.refused += 1;
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let header =
                        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let json = serde_json::from_slice(&body).expect("a JSON body");
                    // The signature covers the exact bytes sent.
                    let secret = ingest_runtime::Secret::new("hook-key".to_string());
                    assert_eq!(header("x-ingest-signature"), ingest_control::alerts::signature(&secret, &body));
                    hooks.accepted.push((header("x-ingest-event"), json, header("x-ingest-signature")));
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook").parse().expect("url"), hooks)
}

async fn webhooks_fire_once_per_health_change_across_control_servers(mut h: Harness) {
    use ingest_control::alerts::{self, Notifier, NotifyConfig};
    let (url, hooks) = webhook_fixture().await;
    let stop = tokio_util::sync::CancellationToken::new();
    // Two control servers' trackers on the same store (the harness's own
    // control server has no --notify-url).
    for _ in 0..2 {
        let service = ingest_control::service::ControlService::new(h.store.clone(), h.keys.clone());
        let mut config = NotifyConfig::new(url.clone(), Some(ingest_runtime::Secret::new("hook-key".to_string())));
        config.retry_delay = Duration::from_millis(50);
        let notifier = Notifier::start(&service, config, stop.clone());
        tokio::spawn(alerts::run(service, Some(notifier), stop.clone()));
    }
    let events = |hooks: &Hooks| hooks.accepted.iter().map(|(e, ..)| e.clone()).collect::<Vec<_>>();
    let wait_for = |n: usize| {
        let hooks = hooks.clone();
        async move {
            eventually(WAIT, &format!("{n} webhooks"), || async { hooks.lock().expect("hooks").accepted.len() >= n })
                .await;
            // Long enough for a duplicate from the other server to show.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    };

    // No live worker runs "probe": unschedulable.
    let id = create(&mut h.client, probe_job("watched")).await.id;
    wait_for(1).await;
    // A worker that runs it comes: recovered (pending, then running).
    h.start_worker("w1", vec![probe_type()]).await;
    wait_for(2).await;
    let epoch = h.claim(&id, "w1").await;
    // A failed run: failing, with its error and one failure in a row.
    let t0 = ingest_model::now_millis();
    let failed = pb::JobProgress {
        last_error: Some(pb::JobError { time: Some(timestamp(t0)), message: "HTTP 503 from upstream".into() }),
        runs: vec![run(1, t0 - 1000, pb::RunOutcome::Failed, "HTTP 503 from upstream")],
        ..progress(&id, epoch, pb::JobCounters { runs: 1, runs_failed: 1, ..Default::default() })
    };
    let mut client = h.worker_client().await;
    report(&mut client, vec![message(vec![failed])]).await.expect("report failure");
    wait_for(3).await;
    let succeeded = pb::JobProgress {
        last_success_time: Some(timestamp(t0 + 60_000)),
        runs: vec![run(2, t0 + 59_000, pb::RunOutcome::Succeeded, "")],
        ..progress(&id, epoch, pb::JobCounters { runs: 2, runs_failed: 1, ..Default::default() })
    };
    report(&mut client, vec![message(vec![succeeded])]).await.expect("report success");
    wait_for(4).await;

    let (accepted, refused) = {
        let held = hooks.lock().expect("hooks");
        (held.accepted.clone(), held.refused)
    };
    let hooks = Hooks { accepted, refused };
    assert_eq!(events(&hooks), ["job.unschedulable", "job.recovered", "job.failing", "job.recovered"]);
    assert_eq!(hooks.refused, 1, "the first delivery was refused and sent again");
    let failing = &hooks.accepted[2].1;
    assert_eq!(failing["job"]["id"], id.as_str());
    assert_eq!(failing["state"], "failing");
    assert_eq!(failing["consecutive_failures"], 1);
    assert_eq!(failing["last_error"]["message"], "HTTP 503 from upstream");
    assert_eq!(hooks.accepted[3].1["state"], "running");
    assert!(hooks.accepted.iter().all(|(_, _, sig)| sig.starts_with("sha256=")));
    let job = h.client.get_job(pb::GetJobRequest { id: id.clone() }).await.expect("get").into_inner().job;
    assert_eq!(job.and_then(|j| j.status).map(|s| s.consecutive_failures), Some(0));
    stop.cancel();
    h.stop().await;
}
