//! JobService over real gRPC, on the embedded store and on a real etcd: every
//! test body runs against both.

mod common;

use std::time::Duration;

use common::{Harness, create, eventually, params, probe_job, probe_type, violated_fields};
use ingest_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

on_both_stores!(
    create_then_get_returns_the_job_without_its_secret,
    bad_creates_get_one_violation_per_field_and_write_nothing,
    oversized_requests_are_refused_and_write_nothing,
    update_with_a_stale_revision_aborts_and_writes_nothing,
    update_keeps_secrets_unless_given,
    secrets_are_not_sent_to_a_new_origin_unless_entered_again,
    undecodable_and_non_finite_requests_are_invalid_arguments,
    list_jobs_pages_and_filters,
    pause_resume_and_run_now,
    delete_removes_every_key_of_the_job,
    state_follows_the_live_workers,
    watch_sends_a_snapshot_then_changes_and_resumes,
    watch_from_compacted_history_is_out_of_range,
    labels_pick_jobs_to_list_watch_and_change_in_bulk,
    bad_labels_selectors_and_picks_write_nothing,
    schedules_are_checked_stored_and_previewed,
    opml_and_json_move_jobs_in_and_out,
    dead_letters_are_listed_paged_flagged_and_purged,
    a_republished_type_spec_is_validated_against_at_once,
);

const SECRET: &str = "hunter2-very-secret";

async fn create_then_get_returns_the_job_without_its_secret(mut h: Harness) {
    let mut job = probe_job("with secret");
    job.params = params(json!({"url": "https://example.org/a", "api_key": SECRET, "tags": ["x"]}));
    job.interval = Some(pbjson_types::Duration { seconds: 120, nanos: 0 });
    let created = create(&mut h.client, job).await;
    assert_eq!(created.secret_params_set, ["api_key"]);
    assert!(created.revision > 0);
    let fetched = h.client.get_job(pb::GetJobRequest { id: created.id.clone() }).await.expect("get").into_inner();
    let fetched = fetched.job.expect("job");
    assert_eq!(fetched.name, "with secret");
    assert_eq!(fetched.interval, Some(pbjson_types::Duration { seconds: 120, nanos: 0 }));
    let fields = &fetched.params.as_ref().expect("params").fields;
    assert!(fields.contains_key("url") && !fields.contains_key("api_key"), "{fields:?}");
    assert_eq!(fetched.status.as_ref().map(|s| s.state), Some(pb::JobState::Unschedulable as i32));

    // The secret is stored, but apart from the job and under its own key.
    let dump = h.dump().await;
    let holders: Vec<&str> =
        dump.iter().filter(|(_, v)| String::from_utf8_lossy(v).contains(SECRET)).map(|(k, _)| k.as_str()).collect();
    assert_eq!(holders, [h.keys.secret(&created.id)]);

    // And no read path returns it.
    let list = h.client.list_jobs(pb::ListJobsRequest::default()).await.expect("list").into_inner();
    let mut watch = h.client.watch_jobs(pb::WatchJobsRequest::default()).await.expect("watch").into_inner();
    let snapshot = watch.message().await.expect("snapshot").expect("a message");
    for text in [format!("{created:?}"), format!("{fetched:?}"), format!("{list:?}"), format!("{snapshot:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
    }
    h.stop().await;
}

async fn bad_creates_get_one_violation_per_field_and_write_nothing(mut h: Harness) {
    let before = h.dump().await;
    let cases: Vec<(pb::CreateJobRequest, Vec<&str>)> = vec![
        (pb::CreateJobRequest::default(), vec!["job"]),
        (
            pb::CreateJobRequest {
                job: Some(pb::Job { name: "x".into(), r#type: "nope".into(), ..Default::default() }),
                ..Default::default()
            },
            vec!["job.type"],
        ),
        (
            pb::CreateJobRequest {
                job: Some(pb::Job { name: "x".into(), ..Default::default() }),
                ..Default::default()
            },
            vec!["job.type"],
        ),
        (
            pb::CreateJobRequest {
                job: Some(pb::Job {
                    name: "".into(),
                    r#type: "probe".into(),
                    params: params(json!({
                        "limit": 0, "ratio": "half", "verbose": "yes", "mode": "old", "timeout": "2h",
                        "tags": ["a", "b", "c", "d"], "label": "x".repeat(21), "unknown": 1, "url": "ftp://x"
                    })),
                    interval: Some(pbjson_types::Duration { seconds: 5, nanos: 0 }),
                    ..Default::default()
                }),
                job_id: "Not_An_Id".into(),
                validate_only: false,
            },
            vec![
                "job.interval",
                "job.name",
                "job.params.label",
                "job.params.limit",
                "job.params.mode",
                "job.params.ratio",
                "job.params.tags",
                "job.params.timeout",
                "job.params.unknown",
                "job.params.url",
                "job.params.verbose",
                "job_id",
            ],
        ),
        (
            pb::CreateJobRequest {
                job: Some(pb::Job { name: "no url".into(), r#type: "probe".into(), ..Default::default() }),
                ..Default::default()
            },
            vec!["job.params.url"],
        ),
        (
            pb::CreateJobRequest {
                job: Some(pb::Job {
                    name: "negative".into(),
                    r#type: "probe".into(),
                    params: params(json!({"url": "https://a.example"})),
                    interval: Some(pbjson_types::Duration { seconds: -1, nanos: 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            vec!["job.interval"],
        ),
    ];
    for (request, want) in cases {
        let status = h.client.create_job(request.clone()).await.expect_err("must be refused");
        assert_eq!(violated_fields(&status), want, "{request:?}");
    }
    // validate_only checks without writing.
    let request = pb::CreateJobRequest { job: Some(probe_job("dry run")), validate_only: true, ..Default::default() };
    let dry = h.client.create_job(request).await.expect("valid").into_inner().job.expect("job");
    assert_eq!(dry.name, "dry run");
    assert_eq!(h.dump().await, before, "refused and dry-run requests must write nothing");
    // A duplicate id is refused without touching the first job.
    let request = pb::CreateJobRequest { job: Some(probe_job("one")), job_id: "fixed-id".into(), validate_only: false };
    h.client.create_job(request.clone()).await.expect("first create");
    let status = h.client.create_job(request).await.expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);
    h.stop().await;
}

async fn oversized_requests_are_refused_and_write_nothing(mut h: Harness) {
    let before = h.dump().await;
    let mut long_name = probe_job(&"n".repeat(201));
    long_name.params = params(json!({"url": "https://a.example", "label": "x".repeat(100_000)}));
    let status = h
        .client
        .create_job(pb::CreateJobRequest { job: Some(long_name), ..Default::default() })
        .await
        .expect_err("too big");
    assert_eq!(violated_fields(&status), ["job.name", "job.params", "job.params.label"]);
    // Beyond the transport limit the call fails before reaching the service.
    let mut huge = probe_job("huge");
    huge.params = params(json!({"url": "https://a.example", "label": "x".repeat(5 * 1024 * 1024)}));
    let status =
        h.client.create_job(pb::CreateJobRequest { job: Some(huge), ..Default::default() }).await.expect_err("huge");
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument), "{status:?}");
    assert_eq!(h.dump().await, before);
    // The server is still fine.
    create(&mut h.client, probe_job("after")).await;
    h.stop().await;
}

async fn update_with_a_stale_revision_aborts_and_writes_nothing(mut h: Harness) {
    let job = create(&mut h.client, probe_job("v1")).await;
    let mut change = job.clone();
    change.name = "v2".into();
    let updated = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change.clone()), update_mask: None })
        .await
        .expect("update");
    let updated = updated.into_inner().job.expect("job");
    assert_eq!(updated.name, "v2");
    assert!(updated.revision > job.revision);

    let before = h.dump().await;
    change.name = "v3 from a stale read".into();
    let status = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change.clone()), update_mask: None })
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    change.revision = 0;
    let status = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change.clone()), update_mask: None })
        .await
        .expect_err("no revision");
    assert_eq!(violated_fields(&status), ["job.revision"]);
    change.revision = updated.revision;
    change.r#type = "other".into();
    let status = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change), update_mask: None })
        .await
        .expect_err("type change");
    assert_eq!(violated_fields(&status), ["job.type"]);
    let mask = pbjson_types::FieldMask { paths: vec!["status".into()] };
    let status = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(updated.clone()), update_mask: Some(mask) })
        .await
        .expect_err("bad mask");
    assert_eq!(violated_fields(&status), ["update_mask"]);
    assert_eq!(h.dump().await, before);
    h.stop().await;
}

async fn update_keeps_secrets_unless_given(mut h: Harness) {
    let mut job = probe_job("secretive");
    job.params = params(json!({"url": "https://example.org/a", "api_key": "first"}));
    let job = create(&mut h.client, job).await;
    let secret_value = |dump: &[(String, Vec<u8>)], key: &str| {
        dump.iter().find(|(k, _)| k == key).map(|(_, v)| String::from_utf8_lossy(v).to_string()).unwrap_or_default()
    };
    let secret_key = h.keys.secret(&job.id);

    // Params without the secret: the secret is kept.
    let mut change = job.clone();
    change.params = params(json!({"url": "https://example.org/b"}));
    let mask = Some(pbjson_types::FieldMask { paths: vec!["params".into()] });
    let updated = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change), update_mask: mask.clone() })
        .await
        .expect("update");
    let updated = updated.into_inner().job.expect("job");
    assert_eq!(updated.secret_params_set, ["api_key"]);
    assert!(secret_value(&h.dump().await, &secret_key).contains("first"));

    // Params with the secret: replaced.
    let mut change = updated.clone();
    change.params = params(json!({"url": "https://example.org/b", "api_key": "second"}));
    let updated =
        h.client.update_job(pb::UpdateJobRequest { job: Some(change), update_mask: mask }).await.expect("update");
    assert_eq!(updated.into_inner().job.expect("job").secret_params_set, ["api_key"]);
    let stored = secret_value(&h.dump().await, &secret_key);
    assert!(stored.contains("second") && !stored.contains("first"), "{stored}");
    h.stop().await;
}

async fn secrets_are_not_sent_to_a_new_origin_unless_entered_again(mut h: Harness) {
    let mut job = probe_job("bound secret");
    job.params = params(json!({"url": "https://api.example.org/v1/items", "api_key": "for-example-org"}));
    let job = create(&mut h.client, job).await;
    let mask = Some(pbjson_types::FieldMask { paths: vec!["params".into()] });
    let before = h.dump().await;
    // Pointing the job at another host, port or scheme, keeping the secret: refused, nothing written.
    for url in
        ["https://attacker.example/collect", "https://api.example.org:8443/v1/items", "http://api.example.org/v1"]
    {
        let mut change = job.clone();
        change.params = params(json!({"url": url}));
        let status = h
            .client
            .update_job(pb::UpdateJobRequest { job: Some(change), update_mask: mask.clone() })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert_eq!(violated_fields(&status), ["job.params.api_key"], "{url}");
        let details = tonic_types::StatusExt::get_error_details(&status);
        let description = &details.bad_request().expect("details").field_violations[0].description;
        assert!(description.starts_with("enter api_key again: url now points at "), "{description}");
        assert!(description.contains("entered for https://api.example.org"), "{description}");
        assert_eq!(h.dump().await, before, "nothing written for {url}");
    }
    // Same origin, another path: the secret is kept.
    let mut change = job.clone();
    change.params = params(json!({"url": "https://api.example.org/v2/items?page=1"}));
    let updated = h
        .client
        .update_job(pb::UpdateJobRequest { job: Some(change), update_mask: mask.clone() })
        .await
        .expect("same origin");
    let updated = updated.into_inner().job.expect("job");
    assert_eq!(updated.secret_params_set, ["api_key"]);
    // Another origin with the secret entered again: accepted.
    let mut change = updated.clone();
    change.params = params(json!({"url": "https://other.example/v1", "api_key": "for-other"}));
    h.client.update_job(pb::UpdateJobRequest { job: Some(change), update_mask: mask }).await.expect("re-entered");
    h.stop().await;
}

async fn list_jobs_pages_and_filters(mut h: Harness) {
    let mut ids = Vec::new();
    for i in 0..23 {
        let job = if i % 3 == 0 {
            pb::Job { name: format!("other {i}"), r#type: "other".into(), ..Default::default() }
        } else {
            probe_job(&format!("probe {i}"))
        };
        ids.push(create(&mut h.client, job).await.id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::ListJobsRequest { page_size: 10, page_token: token.clone(), ..Default::default() };
        let page = h.client.list_jobs(request).await.expect("list").into_inner();
        assert!(page.jobs.len() <= 10);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every job once, in id order");

    let by_type = pb::ListJobsRequest { page_size: 5, r#type: "other".into(), ..Default::default() };
    let page = h.client.list_jobs(by_type).await.expect("list").into_inner();
    assert_eq!(page.jobs.len(), 5);
    assert!(page.jobs.iter().all(|j| j.r#type == "other"));
    let rest = pb::ListJobsRequest {
        page_size: 5,
        r#type: "other".into(),
        page_token: page.next_page_token,
        ..Default::default()
    };
    let rest = h.client.list_jobs(rest).await.expect("list").into_inner();
    assert_eq!(rest.jobs.len(), 3, "8 'other' jobs in all");
    assert!(rest.next_page_token.is_empty());

    h.client.pause_job(pb::PauseJobRequest { id: ids[4].clone() }).await.expect("pause");
    let paused = pb::ListJobsRequest { state: pb::JobState::Paused as i32, ..Default::default() };
    let page = h.client.list_jobs(paused).await.expect("list").into_inner();
    assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [ids[4].as_str()]);

    for bad in [
        pb::ListJobsRequest { page_size: -1, ..Default::default() },
        pb::ListJobsRequest { page_token: "../../etc".into(), ..Default::default() },
        pb::ListJobsRequest { state: 99, ..Default::default() },
    ] {
        let status = h.client.list_jobs(bad.clone()).await.expect_err("bad list");
        assert_eq!(violated_fields(&status).len(), 1, "{bad:?}");
    }
    h.stop().await;
}

async fn pause_resume_and_run_now(mut h: Harness) {
    let job = create(&mut h.client, probe_job("p")).await;
    let paused = h.client.pause_job(pb::PauseJobRequest { id: job.id.clone() }).await.expect("pause").into_inner();
    let paused = paused.job.expect("job");
    assert!(paused.paused);
    assert_eq!(paused.status.as_ref().map(|s| s.state), Some(pb::JobState::Paused as i32));
    let again = h.client.pause_job(pb::PauseJobRequest { id: job.id.clone() }).await.expect("pause twice").into_inner();
    assert_eq!(again.job.expect("job").revision, paused.revision, "pausing a paused job writes nothing");
    let resumed = h.client.resume_job(pb::ResumeJobRequest { id: job.id.clone() }).await.expect("resume").into_inner();
    assert!(!resumed.job.expect("job").paused);
    let before = h.revision().await;
    let ran = h.client.run_job_now(pb::RunJobNowRequest { id: job.id.clone() }).await.expect("run now").into_inner();
    assert!(ran.job.expect("job").revision > before, "run-now is recorded for the owner to see");
    let missing = h.client.pause_job(pb::PauseJobRequest { id: "missing".into() }).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let bad = h.client.run_job_now(pb::RunJobNowRequest { id: "BAD ID".into() }).await.expect_err("bad id");
    assert_eq!(violated_fields(&bad), ["id"]);
    h.stop().await;
}

async fn delete_removes_every_key_of_the_job(mut h: Harness) {
    let mut job = probe_job("doomed");
    job.params = params(json!({"url": "https://example.org/a", "api_key": SECRET}));
    let job = create(&mut h.client, job).await;
    let keep = create(&mut h.client, probe_job("kept")).await;
    let stale = pb::DeleteJobRequest { id: job.id.clone(), revision: job.revision - 1 };
    assert_eq!(h.client.delete_job(stale).await.expect_err("stale").code(), Code::Aborted);
    h.client.delete_job(pb::DeleteJobRequest { id: job.id.clone(), revision: job.revision }).await.expect("delete");
    let dump = h.dump().await;
    assert!(dump.iter().all(|(k, _)| !k.ends_with(&job.id)), "{:?}", dump.iter().map(|(k, _)| k).collect::<Vec<_>>());
    assert!(dump.iter().any(|(k, _)| k.ends_with(&keep.id)));
    let get = h.client.get_job(pb::GetJobRequest { id: job.id.clone() }).await.expect_err("gone");
    assert_eq!(get.code(), Code::NotFound);
    let again = h.client.delete_job(pb::DeleteJobRequest { id: job.id, revision: 0 }).await.expect_err("gone");
    assert_eq!(again.code(), Code::NotFound);
    h.stop().await;
}

async fn state_follows_the_live_workers(mut h: Harness) {
    let job = create(&mut h.client, probe_job("waiting")).await;
    assert_eq!(job.status.as_ref().map(|s| s.state), Some(pb::JobState::Unschedulable as i32));
    assert!(job.status.as_ref().is_some_and(|s| s.state_reason.contains("probe")));

    let worker = h.start_worker("w1", vec![probe_type()]).await;
    let mut client = h.client.clone();
    eventually(Duration::from_secs(10), "job becomes pending", || {
        let mut client = client.clone();
        let id = job.id.clone();
        async move {
            let job = client.get_job(pb::GetJobRequest { id }).await.ok().and_then(|r| r.into_inner().job);
            job.and_then(|j| j.status).is_some_and(|s| s.state == pb::JobState::Pending as i32)
        }
    })
    .await;
    let workers = client.list_workers(pb::ListWorkersRequest {}).await.expect("workers").into_inner().workers;
    let w1 = workers.iter().find(|w| w.name == "w1").expect("w1 listed");
    assert_eq!(w1.job_types, ["probe"]);
    assert_eq!(w1.state, pb::WorkerState::Active as i32);
    let types = client.list_job_types(pb::ListJobTypesRequest {}).await.expect("types").into_inner().job_types;
    let probe = types.iter().find(|t| t.name == "probe").expect("probe type");
    assert_eq!(probe.workers, ["w1"]);
    assert_eq!(probe.params.len(), probe_type().params.len());
    let other = types.iter().find(|t| t.name == "other").expect("other type");
    assert!(other.workers.is_empty());

    // A worker that leaves takes the type's schedulability with it.
    worker.cancel();
    eventually(Duration::from_secs(10), "job unschedulable again", || {
        let mut client = client.clone();
        let id = job.id.clone();
        async move {
            let job = client.get_job(pb::GetJobRequest { id }).await.ok().and_then(|r| r.into_inner().job);
            job.and_then(|j| j.status).is_some_and(|s| s.state == pb::JobState::Unschedulable as i32)
        }
    })
    .await;
    h.stop().await;
}

async fn next_message(stream: &mut tonic::Streaming<pb::WatchJobsResponse>) -> pb::WatchJobsResponse {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(message))) => message,
        other => panic!("expected a watch message, got {other:?}"),
    }
}

/// Messages until one carries an event for `id`.
async fn event_for(stream: &mut tonic::Streaming<pb::WatchJobsResponse>, id: &str) -> (i64, pb::JobEvent) {
    loop {
        let message = next_message(stream).await;
        if let Some(event) = message.events.iter().find(|e| e.job.as_ref().is_some_and(|j| j.id == id)) {
            return (message.revision, event.clone());
        }
    }
}

async fn watch_sends_a_snapshot_then_changes_and_resumes(mut h: Harness) {
    let first = create(&mut h.client, probe_job("first")).await;
    let mut watch = h.client.watch_jobs(pb::WatchJobsRequest::default()).await.expect("watch").into_inner();
    let snapshot = next_message(&mut watch).await;
    assert!(snapshot.snapshot && !snapshot.synced);
    assert_eq!(snapshot.events.len(), 1);
    assert_eq!(snapshot.events[0].job.as_ref().map(|j| j.id.as_str()), Some(first.id.as_str()));
    let synced = next_message(&mut watch).await;
    assert!(synced.synced && synced.events.is_empty());

    let second = create(&mut h.client, probe_job("second")).await;
    let (_, event) = event_for(&mut watch, &second.id).await;
    assert_eq!(event.r#type, pb::JobEventType::Upserted as i32);
    assert_eq!(event.job.as_ref().map(|j| j.name.as_str()), Some("second"));
    let (seen_revision, _) = {
        h.client.pause_job(pb::PauseJobRequest { id: first.id.clone() }).await.expect("pause");
        event_for(&mut watch, &first.id).await
    };
    drop(watch);

    // Changes made while no one watches arrive on resume, and nothing older.
    h.client.delete_job(pb::DeleteJobRequest { id: second.id.clone(), revision: 0 }).await.expect("delete");
    let third = create(&mut h.client, probe_job("third")).await;
    let resume = pb::WatchJobsRequest { start_revision: seen_revision, ..Default::default() };
    let mut watch = h.client.watch_jobs(resume).await.expect("resume").into_inner();
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = next_message(&mut watch).await;
        assert!(!message.snapshot, "a resumed watch sends no snapshot");
        for event in message.events {
            got.push((event.r#type, event.job.map(|j| j.id).unwrap_or_default()));
        }
    }
    assert_eq!(
        got,
        [(pb::JobEventType::Deleted as i32, second.id.clone()), (pb::JobEventType::Upserted as i32, third.id.clone())]
    );

    // A type filter hides other types.
    let filtered = pb::WatchJobsRequest { r#type: "other".into(), ..Default::default() };
    let mut watch = h.client.watch_jobs(filtered).await.expect("watch").into_inner();
    let synced = next_message(&mut watch).await;
    assert!(synced.synced && synced.events.is_empty(), "no 'other' jobs yet");
    create(&mut h.client, probe_job("invisible")).await;
    let other =
        create(&mut h.client, pb::Job { name: "visible".into(), r#type: "other".into(), ..Default::default() }).await;
    let message = next_message(&mut watch).await;
    let ids: Vec<String> = message.events.iter().filter_map(|e| e.job.as_ref().map(|j| j.id.clone())).collect();
    assert_eq!(ids, [other.id]);
    h.stop().await;
}

async fn watch_from_compacted_history_is_out_of_range(mut h: Harness) {
    let job = create(&mut h.client, probe_job("a")).await;
    for i in 0..3 {
        create(&mut h.client, probe_job(&format!("b{i}"))).await;
    }
    let current = h.revision().await;
    h.store.compact(current).await.expect("compact");
    let resume = pb::WatchJobsRequest { start_revision: job.revision, ..Default::default() };
    let result = match h.client.watch_jobs(resume).await {
        Err(status) => status,
        Ok(stream) => {
            let mut stream = stream.into_inner();
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected OUT_OF_RANGE, got {other:?}"),
            }
        }
    };
    assert_eq!(result.code(), Code::OutOfRange, "{result:?}");
    assert!(result.message().contains("without start_revision"), "{}", result.message());
    let future = pb::WatchJobsRequest { start_revision: current + 1000, ..Default::default() };
    let status = h.client.watch_jobs(future).await.expect_err("future revision");
    assert_eq!(violated_fields(&status), ["start_revision"]);
    h.stop().await;
}

/// Request bytes that do not decode, NaN in params and a negative revision
/// are the caller's bad input: INVALID_ARGUMENT, nothing written.
async fn undecodable_and_non_finite_requests_are_invalid_arguments(mut h: Harness) {
    let job = create(&mut h.client, probe_job("kept")).await;
    let before = h.dump().await;

    // Raw bytes as GetJob requests: field 1 (id, a string) with invalid
    // UTF-8, and a message cut short.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.grpc_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // And a CreateJob whose params nest 10 000 Structs deep (prost stops at 100).
    let deep = create_job_with_params_nested(10_000);
    let requests = [
        ("/ingest.v1.JobService/GetJob", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("/ingest.v1.JobService/GetJob", vec![0x0a, 0x10, b'a']),
        ("/ingest.v1.JobService/CreateJob", deep),
    ];
    for (path, bytes) in requests {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let method = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let status = grpc
            .unary::<Vec<u8>, Vec<u8>, RawCodec>(tonic::Request::new(bytes.clone()), method, RawCodec)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{path} ({} bytes): {status:?}", bytes.len());
        assert!(status.message().contains("does not decode"), "{status:?}");
    }

    // NaN and infinity have no JSON form: refused by field, not defaulted.
    let mut bad = probe_job("not a number");
    let mut fields = bad.params.take().unwrap_or_default().fields;
    fields.insert("ratio".into(), pbjson_types::Value { kind: Some(pbjson_types::value::Kind::NumberValue(f64::NAN)) });
    fields.insert(
        "limit".into(),
        pbjson_types::Value { kind: Some(pbjson_types::value::Kind::NumberValue(f64::INFINITY)) },
    );
    bad.params = Some(pbjson_types::Struct { fields });
    let status =
        h.client.create_job(pb::CreateJobRequest { job: Some(bad), ..Default::default() }).await.expect_err("refused");
    assert_eq!(violated_fields(&status), ["job.params.limit", "job.params.ratio"]);

    // A negative revision is no revision: refused (UpdateJob refuses it too).
    let status =
        h.client.delete_job(pb::DeleteJobRequest { id: job.id.clone(), revision: -1 }).await.expect_err("refused");
    assert_eq!(violated_fields(&status), ["revision"]);
    assert_eq!(h.dump().await, before, "nothing written");
    h.stop().await;
}

/// The bytes of `CreateJobRequest{job: {params: {"a": {"a": … {}}}}}` with
/// `depth` Structs, built from the inside out (no recursion in the test).
fn create_job_with_params_nested(depth: usize) -> Vec<u8> {
    fn field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        let mut len = body.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(body);
        out
    }
    let mut structure: Vec<u8> = Vec::new();
    for _ in 1..depth {
        // Value{struct_value (5)} in a map entry {key (1): "a", value (2)}
        // in Struct.fields (1).
        let value = field(5, &structure);
        let mut entry = field(1, b"a");
        entry.extend(field(2, &value));
        structure = field(1, &entry);
    }
    let job = field(4, &structure);
    field(1, &job)
}

/// Passes bytes through as they are, to send what no client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> pb::Job {
    pb::Job { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..probe_job(name) }
}

async fn listed(h: &mut Harness, selector: &str) -> Vec<String> {
    let request = pb::ListJobsRequest { label_selector: selector.into(), ..Default::default() };
    let page = h.client.list_jobs(request).await.expect("list").into_inner();
    page.jobs.into_iter().map(|j| j.name).collect()
}

fn results(results: &[pb::JobResult]) -> Vec<(String, i32)> {
    results.iter().map(|r| (r.id.clone(), r.code)).collect()
}

async fn labels_pick_jobs_to_list_watch_and_change_in_bulk(mut h: Harness) {
    let a = create(&mut h.client, labelled("a", &[("team", "news"), ("env", "prod")])).await;
    let b = create(&mut h.client, labelled("b", &[("team", "news"), ("env", "test")])).await;
    let c = create(&mut h.client, labelled("c", &[("team", "sport"), ("example.com/tier", "")])).await;
    assert_eq!(a.labels.get("team").map(String::as_str), Some("news"));
    assert_eq!(listed(&mut h, "team=news").await, ["a", "b"]);
    assert_eq!(listed(&mut h, "team=news,env!=test").await, ["a"]);
    assert_eq!(listed(&mut h, "team in (sport, x),example.com/tier").await, ["c"]);
    assert_eq!(listed(&mut h, "!env").await, ["c"]);
    assert_eq!(listed(&mut h, "").await, ["a", "b", "c"]);

    // A watch by selector: the snapshot holds the matching jobs; a job
    // relabelled into the selection arrives, one relabelled out leaves.
    let request = pb::WatchJobsRequest { label_selector: "team=news".into(), ..Default::default() };
    let mut watch = h.client.watch_jobs(request).await.expect("watch").into_inner();
    let mut snapshot = Vec::new();
    loop {
        let message = next_message(&mut watch).await;
        snapshot.extend(message.events.into_iter().filter_map(|e| e.job.map(|j| j.name)));
        if message.synced {
            break;
        }
    }
    assert_eq!(snapshot, ["a", "b"]);
    let relabel = |job: &pb::Job, labels: &[(&str, &str)]| pb::UpdateJobRequest {
        job: Some(pb::Job {
            id: job.id.clone(),
            revision: job.revision,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask { paths: vec!["labels".into()] }),
    };
    let moved_in = h.client.update_job(relabel(&c, &[("team", "news")])).await.expect("relabel c").into_inner();
    assert_eq!(moved_in.job.as_ref().map(|j| j.name.as_str()), Some("c"), "only labels change");
    let (_, event) = event_for(&mut watch, &c.id).await;
    assert_eq!(event.r#type, pb::JobEventType::Upserted as i32);
    h.client.update_job(relabel(&a, &[("team", "sport")])).await.expect("relabel a");
    let (_, event) = event_for(&mut watch, &a.id).await;
    assert_eq!(event.r#type, pb::JobEventType::Deleted as i32, "a left the selection");
    // A job created outside the selection is not announced at all.
    let d = create(&mut h.client, labelled("d", &[("team", "sport")])).await;
    h.client.run_job_now(pb::RunJobNowRequest { id: b.id.clone() }).await.expect("touch b");
    let (_, event) = event_for(&mut watch, &b.id).await;
    assert_eq!(event.r#type, pb::JobEventType::Upserted as i32);

    // Bulk changes by selector: one result per job, in id order.
    let mut news = vec![b.id.clone(), c.id.clone()];
    news.sort();
    let paused = h
        .client
        .pause_jobs(pb::PauseJobsRequest { label_selector: "team=news".into(), ..Default::default() })
        .await
        .expect("pause by selector")
        .into_inner();
    assert_eq!(results(&paused.results), news.iter().map(|id| (id.clone(), 0)).collect::<Vec<_>>());
    assert!(paused.results.iter().all(|r| r.revision > 0 && r.message.is_empty()));
    for id in [&b.id, &c.id, &a.id, &d.id] {
        let job = h.client.get_job(pb::GetJobRequest { id: id.clone() }).await.expect("get").into_inner().job;
        assert_eq!(job.expect("job").paused, news.contains(id), "{id}");
    }
    // By ids; a missing job fails alone, a paused one is left as it is.
    let mut ids = vec![b.id.clone(), "missing-job".to_string(), b.id.clone()];
    let answer = h
        .client
        .pause_jobs(pb::PauseJobsRequest { ids: ids.clone(), ..Default::default() })
        .await
        .expect("pause by ids")
        .into_inner();
    ids.sort();
    ids.dedup();
    let mut expected: Vec<(String, i32)> =
        ids.iter().map(|id| (id.clone(), if id == "missing-job" { Code::NotFound as i32 } else { 0 })).collect();
    expected.sort();
    assert_eq!(results(&answer.results), expected);
    let b_result = answer.results.iter().find(|r| r.id == b.id).expect("b");
    let b_paused = paused.results.iter().find(|r| r.id == b.id).expect("b");
    assert_eq!(b_result.revision, b_paused.revision, "pausing a paused job writes nothing");
    assert!(answer.results.iter().any(|r| r.message.contains("missing-job")), "{:?}", answer.results);

    let before = h.revision().await;
    let ran = h
        .client
        .run_jobs_now(pb::RunJobsNowRequest { label_selector: "team=sport".into(), ..Default::default() })
        .await
        .expect("run now")
        .into_inner();
    assert_eq!(ran.results.len(), 2, "a and d");
    assert!(ran.results.iter().all(|r| r.code == 0 && r.revision > before), "{:?}", ran.results);
    let resumed = h
        .client
        .resume_jobs(pb::ResumeJobsRequest { ids: news.clone(), ..Default::default() })
        .await
        .expect("resume")
        .into_inner();
    assert!(resumed.results.iter().all(|r| r.code == 0), "{:?}", resumed.results);

    let deleted = h
        .client
        .delete_jobs(pb::DeleteJobsRequest { label_selector: "team=sport".into(), ..Default::default() })
        .await
        .expect("delete by selector")
        .into_inner();
    let mut sport = [a.id.clone(), d.id.clone()];
    sport.sort();
    assert_eq!(results(&deleted.results), sport.iter().map(|id| (id.clone(), 0)).collect::<Vec<_>>());
    assert_eq!(listed(&mut h, "").await, ["b", "c"]);
    let dump = h.dump().await;
    assert!(!dump.iter().any(|(k, _)| k.ends_with(&a.id) || k.ends_with(&d.id)), "every key of a and d is gone");
    h.stop().await;
}

async fn bad_labels_selectors_and_picks_write_nothing(mut h: Harness) {
    let job = create(&mut h.client, labelled("ok", &[("team", "news")])).await;
    let before = h.dump().await;
    let bad = labelled("bad", &[("te am", "x"), ("env", "-prod"), ("fine", "yes")]);
    let status = h
        .client
        .create_job(pb::CreateJobRequest { job: Some(bad), ..Default::default() })
        .await
        .expect_err("bad labels");
    assert_eq!(violated_fields(&status), ["job.labels.env", "job.labels.te am"]);
    let update = pb::UpdateJobRequest {
        job: Some(pb::Job {
            id: job.id.clone(),
            revision: job.revision,
            labels: [("x".repeat(64), String::new())].into_iter().collect(),
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask { paths: vec!["labels".into()] }),
    };
    let status = h.client.update_job(update).await.expect_err("long key");
    assert_eq!(violated_fields(&status), [format!("job.labels.{}", "x".repeat(64))]);

    for selector in ["team in (a", "te am", "a,,b", "=x"] {
        let list = pb::ListJobsRequest { label_selector: selector.into(), ..Default::default() };
        let status = h.client.list_jobs(list).await.expect_err(selector);
        assert_eq!(violated_fields(&status), ["label_selector"], "{selector}");
        let watch = pb::WatchJobsRequest { label_selector: selector.into(), ..Default::default() };
        let status = h.client.watch_jobs(watch).await.expect_err(selector);
        assert_eq!(violated_fields(&status), ["label_selector"], "{selector}");
    }
    // "team=" selects jobs whose team label is empty: a valid selector.
    assert_eq!(listed(&mut h, "team=").await, Vec::<String>::new());

    let pick = |ids: Vec<&str>, selector: &str| pb::DeleteJobsRequest {
        ids: ids.into_iter().map(String::from).collect(),
        label_selector: selector.into(),
    };
    for (request, field) in [
        (pick(vec![], ""), "ids"),
        (pick(vec![], "  "), "ids"),
        (pick(vec![&job.id], "team=news"), "label_selector"),
        (pick(vec![&job.id, "Not An Id"], ""), "ids[1]"),
        (pick(vec![], "team in (a"), "label_selector"),
    ] {
        let status = h.client.delete_jobs(request).await.expect_err(field);
        assert_eq!(violated_fields(&status), [field]);
    }
    let too_many: Vec<String> = (0..10_001).map(|i| format!("j{i}")).collect();
    let status =
        h.client.pause_jobs(pb::PauseJobsRequest { ids: too_many, ..Default::default() }).await.expect_err("too many");
    assert_eq!(violated_fields(&status), ["ids"]);
    assert_eq!(h.dump().await, before, "nothing was written");
    h.stop().await;
}

fn schedule(cron: &str, zone: &str, windows: &[(&str, &str)]) -> pb::Schedule {
    pb::Schedule {
        cron: cron.into(),
        time_zone: zone.into(),
        windows: windows.iter().map(|(s, e)| pb::TimeWindow { start: s.to_string(), end: e.to_string() }).collect(),
    }
}

async fn schedules_are_checked_stored_and_previewed(mut h: Harness) {
    let before = h.dump().await;
    let bad = pb::Job { schedule: Some(schedule("0 7 * *", "Mars/Base", &[("7am", "09:00")])), ..probe_job("bad") };
    let status = h
        .client
        .create_job(pb::CreateJobRequest { job: Some(bad), ..Default::default() })
        .await
        .expect_err("bad schedule");
    assert_eq!(
        violated_fields(&status),
        ["job.schedule.cron", "job.schedule.time_zone", "job.schedule.windows[0].start"]
    );
    let never = pb::Job { schedule: Some(schedule("0 3 * * *", "", &[("09:00", "17:00")])), ..probe_job("never") };
    let status = h
        .client
        .create_job(pb::CreateJobRequest { job: Some(never), ..Default::default() })
        .await
        .expect_err("never runs");
    assert_eq!(violated_fields(&status), ["job.schedule"]);
    assert_eq!(h.dump().await, before, "nothing written");

    let weekday_mornings = schedule("0 7 * * MON-FRI", "Europe/Paris", &[("06:00", "10:00")]);
    let job = pb::Job { schedule: Some(weekday_mornings.clone()), ..probe_job("mornings") };
    let created = create(&mut h.client, job).await;
    assert_eq!(created.schedule.as_ref(), Some(&weekday_mornings));
    let got = h.client.get_job(pb::GetJobRequest { id: created.id.clone() }).await.expect("get").into_inner();
    assert_eq!(got.job.and_then(|j| j.schedule), Some(weekday_mornings));

    // Cleared by an update of the schedule alone.
    let update = pb::UpdateJobRequest {
        job: Some(pb::Job { id: created.id.clone(), revision: created.revision, ..Default::default() }),
        update_mask: Some(pbjson_types::FieldMask { paths: vec!["schedule".into()] }),
    };
    let updated = h.client.update_job(update).await.expect("clear").into_inner().job.expect("job");
    assert_eq!(updated.schedule, None);
    assert_eq!(updated.name, "mornings", "only the schedule changed");

    let preview = |s: pb::Schedule, count: i32| pb::PreviewScheduleRequest {
        schedule: Some(s),
        interval: Some(pbjson_types::Duration { seconds: 600, nanos: 0 }),
        count,
    };
    let daily = h.client.preview_schedule(preview(schedule("@daily", "UTC", &[]), 3)).await.expect("preview");
    let times = daily.into_inner().run_times;
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| t.seconds % 86_400 == 0 && t.nanos == 0), "midnights: {times:?}");
    assert!(times.windows(2).all(|w| w[1].seconds - w[0].seconds == 86_400), "{times:?}");
    // Without cron: every interval (10 min) from now, inside the window.
    let every = h.client.preview_schedule(preview(schedule("", "", &[]), 0)).await.expect("preview").into_inner();
    assert_eq!(every.run_times.len(), 5, "5 by default");
    assert!(every.run_times.windows(2).all(|w| w[1].seconds - w[0].seconds == 600), "{:?}", every.run_times);
    let status = h.client.preview_schedule(preview(schedule("every day", "", &[]), 3)).await.expect_err("bad cron");
    assert_eq!(violated_fields(&status), ["schedule.cron"]);
    h.stop().await;
}

const OPML: &str = r#"<?xml version="1.0"?>
<opml version="2.0"><head><title>subscriptions</title></head><body>
  <outline text="Tech &amp; Code">
    <outline type="rss" text="Rust Blog" xmlUrl="https://blog.rust-lang.org/feed.xml"/>
    <outline type="rss" text="LWN" xmlUrl="https://lwn.net/headlines/rss"/>
  </outline>
  <outline type="rss" title="Example" xmlUrl="HTTPS://Example.COM/a"/>
  <outline type="rss" text="LWN again" xmlUrl="https://lwn.net/headlines/rss"/>
  <outline type="rss" text="Not http" xmlUrl="ftp://files.example.org/feed"/>
</body></opml>"#;

fn outcomes(feeds: &[pb::ImportedFeed]) -> Vec<(i32, &str)> {
    feeds.iter().map(|f| (f.outcome, f.job_id.as_str())).collect()
}

async fn opml_and_json_move_jobs_in_and_out(mut h: Harness) {
    use pb::FeedImport as F;
    let rss = ingest_worker::catalogue::job_types().into_iter().filter(|t| t.name == "rss").collect();
    ingest_worker::Membership::new(h.store.clone(), h.keys.clone(), common::worker_config("rss-publisher"), rss)
        .publish_types()
        .await
        .expect("publish rss");
    let rss_job = |name: &str, url: &str| pb::Job {
        name: name.into(),
        r#type: "rss".into(),
        params: params(json!({"url": url})),
        ..Default::default()
    };
    let existing = create(&mut h.client, rss_job("rust", "https://blog.rust-lang.org/feed.xml")).await;

    // A dry run lists what would happen and writes nothing.
    let before = h.dump().await;
    let dry = pb::ImportOpmlRequest { opml: OPML.into(), validate_only: true, ..Default::default() };
    let dry = h.client.import_opml(dry).await.expect("dry run").into_inner().feeds;
    assert_eq!(
        outcomes(&dry),
        [
            (F::Duplicate as i32, existing.id.as_str()),
            (F::WouldCreate as i32, ""),
            (F::WouldCreate as i32, ""),
            (F::Duplicate as i32, ""),
            (F::Invalid as i32, ""),
        ]
    );
    assert!(dry[4].message.contains("job.params.url"), "{}", dry[4].message);
    assert_eq!(h.dump().await, before, "a dry run writes nothing");

    let import = pb::ImportOpmlRequest {
        opml: OPML.into(),
        labels: [("source".to_string(), "opml".to_string())].into(),
        ..Default::default()
    };
    let feeds = h.client.import_opml(import.clone()).await.expect("import").into_inner().feeds;
    let kinds: Vec<i32> = feeds.iter().map(|f| f.outcome).collect();
    let created = F::Created as i32;
    assert_eq!(kinds, [F::Duplicate as i32, created, created, F::Duplicate as i32, F::Invalid as i32]);
    let lwn = h.client.get_job(pb::GetJobRequest { id: feeds[1].job_id.clone() }).await.expect("lwn");
    let lwn = lwn.into_inner().job.expect("job");
    assert_eq!((lwn.name.as_str(), lwn.r#type.as_str()), ("LWN", "rss"));
    let labels: Vec<(&str, &str)> = {
        let mut l: Vec<(&str, &str)> = lwn.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        l.sort();
        l
    };
    assert_eq!(labels, [("category", "tech-code"), ("source", "opml")]);
    // Importing again creates nothing: every feed is read already.
    let again = h.client.import_opml(import).await.expect("again").into_inner().feeds;
    assert!(again.iter().all(|f| f.outcome != created), "{again:?}");

    // Export: every rss job, or those a selector picks; the output reads back.
    let all = h.client.export_opml(pb::ExportOpmlRequest::default()).await.expect("export").into_inner().opml;
    let mut urls: Vec<String> =
        ingest_control::opml::parse(&all).expect("valid OPML").into_iter().map(|f| f.url).collect();
    urls.sort();
    assert_eq!(urls, ["HTTPS://Example.COM/a", "https://blog.rust-lang.org/feed.xml", "https://lwn.net/headlines/rss"]);
    let tech = pb::ExportOpmlRequest { label_selector: "category=tech-code".into() };
    let tech = h.client.export_opml(tech).await.expect("export").into_inner().opml;
    assert_eq!(ingest_control::opml::parse(&tech).expect("valid").len(), 1);
    let bad = pb::ImportOpmlRequest { opml: "<html/>".into(), ..Default::default() };
    assert_eq!(violated_fields(&h.client.import_opml(bad).await.expect_err("not OPML")), ["opml"]);

    // JSON: the spec without secret values; importing needs them again.
    let mut with_secret = probe_job("secretive");
    with_secret.params = params(json!({"url": "https://example.org/x", "api_key": "s3cr3t"}));
    with_secret.labels = [("move".to_string(), "me".to_string())].into();
    let original = create(&mut h.client, with_secret).await;
    let exported = pb::ExportJobsRequest { label_selector: "move=me".into() };
    let exported = h.client.export_jobs(exported).await.expect("export jobs").into_inner().jobs;
    assert_eq!(exported.len(), 1);
    let spec = exported[0].clone();
    assert_eq!(spec.secret_params_set, ["api_key"]);
    assert!(spec.status.is_none() && spec.revision == 0, "{spec:?}");
    assert!(!format!("{spec:?}").contains("s3cr3t"), "no secret value exported");
    h.client.delete_job(pb::DeleteJobRequest { id: original.id.clone(), revision: 0 }).await.expect("delete");
    let import = |jobs: Vec<pb::Job>| pb::ImportJobsRequest { jobs, validate_only: false };
    let results = h.client.import_jobs(import(vec![spec.clone()])).await.expect("import").into_inner().results;
    assert_eq!((results[0].code, results[0].id.as_str()), (Code::InvalidArgument as i32, original.id.as_str()));
    assert!(results[0].message.contains("api_key"), "{}", results[0].message);
    let mut filled = spec.clone();
    if let Some(p) = filled.params.as_mut() {
        p.fields.insert("api_key".into(), pbjson_types::Value::from("n3w".to_string()));
    }
    let results = h.client.import_jobs(import(vec![filled.clone()])).await.expect("import").into_inner().results;
    assert_eq!(results[0].code, 0, "{}", results[0].message);
    let back = h.client.get_job(pb::GetJobRequest { id: original.id.clone() }).await.expect("back").into_inner().job;
    let back = back.expect("job");
    assert_eq!(
        (back.name.as_str(), back.secret_params_set.as_slice()),
        ("secretive", ["api_key".to_string()].as_slice())
    );
    assert_eq!(back.labels, spec.labels);
    let results = h.client.import_jobs(import(vec![filled])).await.expect("again").into_inner().results;
    assert_eq!(results[0].code, Code::AlreadyExists as i32);
    h.stop().await;
}

async fn dead_letters_are_listed_paged_flagged_and_purged(mut h: Harness) {
    let job = create(&mut h.client, probe_job("refused")).await;
    // As an owner lists them: three refused documents.
    let mut names = Vec::new();
    for n in 0..3 {
        let name = format!("{:064x}", n + 1);
        let record = ingest_model::DeadLetterRecord {
            id: format!("doc-{n}"),
            index: "ingest-probe".into(),
            status: 400,
            reason: "mapper_parsing_exception: failed to parse field [seq]".into(),
            key: format!("dead-letters/ingest-probe/2026/11/30/{name}.json"),
            time: 1_800_000_000_000 + n,
            preview: format!("{{\"seq\":{n}}}"),
            bytes: 9,
            replay: false,
        };
        let key = h.keys.dead_letter(&job.id, &name);
        h.store.put(&key, serde_json::to_vec(&record).expect("encode"), 0).await.expect("put");
        names.push(name);
    }
    let list =
        |token: &str| pb::ListDeadLettersRequest { job_id: job.id.clone(), page_size: 2, page_token: token.into() };
    let first = h.client.list_dead_letters(list("")).await.expect("list").into_inner();
    assert_eq!((first.total, first.dead_letters.len()), (3, 2));
    assert!(first.dead_letters.iter().all(|l| l.preview.is_empty()), "no preview in a list");
    let second = h.client.list_dead_letters(list(&first.next_page_token)).await.expect("page 2").into_inner();
    assert_eq!(second.dead_letters.len(), 1);
    assert!(second.next_page_token.is_empty());
    let one = pb::GetDeadLetterRequest { job_id: job.id.clone(), letter_id: names[1].clone() };
    let one = h.client.get_dead_letter(one).await.expect("get").into_inner().dead_letter.expect("letter");
    assert_eq!((one.document_id.as_str(), one.status, one.preview.as_str()), ("doc-1", 400, "{\"seq\":1}"));

    // Replay needs an owner to do it.
    let replay = |ids: Vec<String>| pb::ReplayDeadLettersRequest { job_id: job.id.clone(), letter_ids: ids };
    let status = h.client.replay_dead_letters(replay(vec![])).await.expect_err("no owner");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("resume"), "{}", status.message());
    h.claim(&job.id, "w1").await;
    let queued = h.client.replay_dead_letters(replay(vec![names[0].clone()])).await.expect("replay one");
    assert_eq!(queued.into_inner().queued, 1);
    let all = h.client.list_dead_letters(list("")).await.expect("list").into_inner().dead_letters;
    assert!(all.iter().any(|l| l.replay_pending) && !all.iter().all(|l| l.replay_pending), "{all:?}");

    // Bad input: field violations, nothing written.
    let before = h.dump().await;
    let bad = pb::GetDeadLetterRequest { job_id: job.id.clone(), letter_id: "nope".into() };
    assert_eq!(violated_fields(&h.client.get_dead_letter(bad).await.expect_err("bad id")), ["letter_id"]);
    let bad = pb::PurgeDeadLettersRequest { job_id: job.id.clone(), letter_ids: vec!["x".into()] };
    assert_eq!(violated_fields(&h.client.purge_dead_letters(bad).await.expect_err("bad id")), ["letter_ids[0]"]);
    let missing = pb::ListDeadLettersRequest { job_id: "missing-job".into(), ..Default::default() };
    assert_eq!(h.client.list_dead_letters(missing).await.expect_err("missing").code(), Code::NotFound);
    assert_eq!(h.dump().await, before);

    let purge = |ids: Vec<String>| pb::PurgeDeadLettersRequest { job_id: job.id.clone(), letter_ids: ids };
    assert_eq!(
        h.client.purge_dead_letters(purge(vec![names[2].clone()])).await.expect("purge one").into_inner().purged,
        1
    );
    assert_eq!(h.client.purge_dead_letters(purge(vec![])).await.expect("purge all").into_inner().purged, 2);
    assert_eq!(h.client.list_dead_letters(list("")).await.expect("list").into_inner().total, 0);
    // Deleting a job deletes its letters.
    let key = h.keys.dead_letter(&job.id, &names[0]);
    h.store.put(&key, b"{}".to_vec(), 0).await.expect("put");
    h.client.delete_job(pb::DeleteJobRequest { id: job.id.clone(), revision: 0 }).await.expect("delete");
    assert!(h.store.get(&key).await.expect("get").is_none(), "the job's letters outlived it");
    h.stop().await;
}

/// CreateJob keeps the type specs it validated against, guarded by their
/// revision: a spec a worker republishes is used from the next create on,
/// and the job's state in the answer comes from the workers read with it.
async fn a_republished_type_spec_is_validated_against_at_once(mut h: Harness) {
    let first = create(&mut h.client, probe_job("before")).await;
    assert_eq!(first.status.as_ref().map(|s| s.state), Some(pb::JobState::Unschedulable as i32));
    let mut spec = probe_type();
    spec.params.push(ingest_model::ParamSpec::new("region", ingest_model::ParamKind::String, "where").required());
    let value = serde_json::to_vec(&spec).expect("encode");
    h.store.put(&h.keys.job_type("probe"), value, 0).await.expect("republish");

    let before = h.dump().await;
    let refused = h.client.create_job(pb::CreateJobRequest { job: Some(probe_job("after")), ..Default::default() });
    let status = refused.await.expect_err("the new spec requires a region");
    assert_eq!((status.code(), violated_fields(&status)), (Code::InvalidArgument, vec!["job.params.region".into()]));
    assert_eq!(h.dump().await, before, "a refused create writes nothing");

    h.start_worker("w1", vec![spec]).await;
    let mut job = probe_job("after");
    job.params = params(json!({"url": "https://example.org/a", "region": "eu"}));
    eventually(Duration::from_secs(10), "a worker for the type", || {
        let (mut client, job) = (h.client.clone(), job.clone());
        async move {
            let created = client.create_job(pb::CreateJobRequest { job: Some(job), ..Default::default() }).await;
            let created = created.expect("create").into_inner().job.expect("job");
            let state = created.status.as_ref().map(|s| s.state);
            let _ = client.delete_job(pb::DeleteJobRequest { id: created.id, revision: 0 }).await;
            state == Some(pb::JobState::Pending as i32)
        }
    })
    .await;
    h.stop().await;
}
