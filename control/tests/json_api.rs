//! The HTTP face of control: the JobService over HTTP/JSON (same validation,
//! errors, secrets and auth as gRPC), the WatchJobs line stream, the
//! cross-origin refusal, and the embedded UI files with their headers.

mod common;

use std::time::Duration;

use common::{Harness, create, probe_job};
use serde_json::{Value, json};

struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
    origin: Option<String>,
}

impl Http {
    fn new(harness: &Harness) -> Self {
        Self {
            base: format!("http://{}", harness.http_addr),
            client: reqwest::Client::new(),
            token: None,
            origin: None,
        }
    }

    fn request(&self, method: &str, body: &str) -> reqwest::RequestBuilder {
        let mut request =
            self.client.post(format!("{}/api/ingest.v1.JobService/{method}", self.base)).body(body.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = &self.origin {
            request = request.header("origin", origin);
        }
        request
    }

    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        let response = self.request(method, &body.to_string()).send().await.expect("HTTP call");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }
}

fn fields(error: &Value) -> Vec<&str> {
    let mut fields: Vec<&str> =
        error["fieldViolations"].as_array().expect("violations").iter().filter_map(|v| v["field"].as_str()).collect();
    fields.sort();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_service_answers_json_as_grpc_does() {
    let harness = Harness::embedded().await;
    let http = Http::new(&harness);

    let (status, types) = http.call("ListJobTypes", json!({})).await;
    assert_eq!(status, 200);
    let probe = types["jobTypes"].as_array().unwrap().iter().find(|t| t["name"] == "probe").expect("probe type");
    let limit = probe["params"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["kind"], "PARAM_KIND_INTEGER");
    assert_eq!(limit["maximum"], 100.0);
    assert_eq!(probe["defaultInterval"], "300s");

    // Bad input: one violation per field, nothing written.
    let before = harness.dump().await;
    let bad = json!({"jobId": "p1", "job": {"name": "", "type": "probe", "params": {"limit": 0, "url": "ftp://x"}}});
    let (status, error) = http.call("CreateJob", bad).await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], "INVALID_ARGUMENT");
    assert_eq!(fields(&error), ["job.name", "job.params.limit", "job.params.url"]);
    assert_eq!(harness.dump().await, before, "nothing written");

    // A good job; its secret is stored and never answered.
    let good = json!({"jobId": "p1", "job": {"name": "probe one", "type": "probe", "interval": "30s",
        "params": {"url": "https://example.org/feed", "limit": 5, "api_key": "s3cr3t"}}});
    let (status, created) = http.call("CreateJob", good).await;
    assert_eq!(status, 200, "{created}");
    let job = &created["job"];
    assert_eq!(job["id"], "p1");
    assert_eq!(job["interval"], "30s");
    assert_eq!(job["secretParamsSet"], json!(["api_key"]));
    assert!(!created.to_string().contains("s3cr3t"), "secrets are write-only");
    // No worker runs the probe type here.
    assert_eq!(job["status"]["state"], "JOB_STATE_UNSCHEDULABLE");
    let revision = job["revision"].as_str().expect("int64 as a string").to_string();

    let (status, again) = http.call("CreateJob", json!({"jobId": "p1", "job": job})).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("ALREADY_EXISTS")));

    // Updates check the revision: a stale one is refused and changes nothing.
    let rename = |revision: &str| json!({"job": {"id": "p1", "revision": revision, "name": "renamed"}, "updateMask": {"paths": ["name"]}});
    let (status, stale) = http.call("UpdateJob", rename("1")).await;
    assert_eq!((status, stale["code"].as_str()), (409, Some("ABORTED")));
    let (status, renamed) = http.call("UpdateJob", rename(&revision)).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["job"]["name"], "renamed");

    let (status, paused) = http.call("PauseJob", json!({"id": "p1"})).await;
    assert_eq!((status, paused["job"]["status"]["state"].as_str()), (200, Some("JOB_STATE_PAUSED")));
    let (status, listed) = http.call("ListJobs", json!({"state": "JOB_STATE_PAUSED"})).await;
    assert_eq!((status, listed["jobs"].as_array().map(Vec::len)), (200, Some(1)));

    let (status, missing) = http.call("GetJob", json!({"id": "nope"})).await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, unknown) = http.call("LaunchRocket", json!({})).await;
    assert_eq!((status, unknown["code"].as_str()), (501, Some("UNIMPLEMENTED")));
    let response = http.request("GetJob", "{not json").send().await.expect("call");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = serde_json::from_str(&response.text().await.expect("body")).expect("JSON error");
    assert!(error["message"].as_str().unwrap().starts_with("request body:"), "{error}");
    let (status, wrong_type) = http.call("GetJob", json!({"id": 5})).await;
    assert_eq!((status, wrong_type["code"].as_str()), (400, Some("INVALID_ARGUMENT")));

    let (status, _) = http.call("DeleteJob", json!({"id": "p1", "revision": "0"})).await;
    assert_eq!(status, 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_jobs_streams_json_lines() {
    let mut harness = Harness::embedded().await;
    create(&mut harness.client, probe_job("first")).await;
    let http = Http::new(&harness);
    let mut response = http.request("WatchJobs", "{}").send().await.expect("watch");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");

    let mut buffer = String::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut next = async || -> Value {
        loop {
            if let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                return serde_json::from_str(&line).expect("a JSON line");
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .expect("a line within 10 s")
                .expect("chunk")
                .expect("stream open");
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    };
    loop {
        let message = next().await;
        let synced = message["synced"] == true;
        messages.push(message);
        if synced {
            break;
        }
    }
    let snapshot: Vec<&str> = messages
        .iter()
        .flat_map(|m| m["events"].as_array().unwrap())
        .filter_map(|e| e["job"]["name"].as_str())
        .collect();
    assert_eq!(snapshot, ["first"]);

    create(&mut harness.client, probe_job("second")).await;
    let update = loop {
        let message = next().await;
        if message["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break message;
        }
    };
    assert_eq!(update["snapshot"], false);
    assert_eq!(update["events"][0]["type"], "JOB_EVENT_TYPE_UPSERTED");
    assert_eq!(update["events"][0]["job"]["name"], "second");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_the_origin_are_checked() {
    let harness = Harness::with_token("t0k3n").await;
    let mut http = Http::new(&harness);
    for method in ["ListJobs", "WatchJobs"] {
        let (status, error) = http.call(method, json!({})).await;
        assert_eq!((status, error["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{method}");
    }
    http.token = Some("wrong".into());
    assert_eq!(http.call("ListJobs", json!({})).await.0, 401);
    http.token = Some("t0k3n".into());
    assert_eq!(http.call("ListJobs", json!({})).await.0, 200);

    // A page of another origin cannot call, even with the token; the UI's own can.
    http.origin = Some("http://evil.example".into());
    let (status, error) = http.call("CreateJob", json!({"job": {"name": "x", "type": "other"}})).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("PERMISSION_DENIED")));
    assert!(error["message"].as_str().unwrap().contains("http://evil.example"), "{error}");
    http.origin = Some(format!("http://{}", harness.http_addr));
    let (status, created) = http.call("CreateJob", json!({"job": {"name": "x", "type": "other"}})).await;
    assert_eq!(status, 200, "{created}");
    harness.stop().await;
}

/// The HTTP face applies the token roles as gRPC does, and tells the UI
/// what the caller's token may do (`/api/session`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_the_same_roles_over_http() {
    let harness = Harness::with_token_file("admin adm\nread rd\nworker wk\n").await;
    let mut http = Http::new(&harness);
    let session = |token: Option<&str>| {
        let mut request = http.client.post(format!("{}/api/session", http.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("session");
            (response.status().as_u16(), response.json::<Value>().await.expect("JSON"))
        }
    };
    assert_eq!(session(Some("adm")).await, (200, json!({"auth": true, "role": "admin"})));
    assert_eq!(session(Some("rd")).await, (200, json!({"auth": true, "role": "read"})));
    assert_eq!(session(Some("wk")).await, (200, json!({"auth": true, "role": "worker"})));
    assert_eq!(session(None).await.0, 401);
    assert_eq!(session(Some("nope")).await.0, 401);

    let create = json!({"job": {"name": "by admin", "type": "other"}});
    http.token = Some("rd".into());
    for method in ["ListJobs", "ListJobTypes", "ListWorkers"] {
        assert_eq!(http.call(method, json!({})).await.0, 200, "read token, {method}");
    }
    let before = harness.dump().await;
    let (status, error) = http.call("CreateJob", create.clone()).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{error}");
    assert_eq!(error["message"], "this token has the role read; CreateJob needs a token with the role admin");
    assert_eq!(harness.dump().await, before, "nothing written");
    http.token = Some("wk".into());
    let (status, error) = http.call("ListJobs", json!({})).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{error}");
    // The HTTP API has no way to WorkerService; a worker token reads nothing.
    let (status, _) = http.call("WatchJobs", json!({})).await;
    assert_eq!(status, 403);
    http.token = Some("adm".into());
    let (status, created) = http.call("CreateJob", create).await;
    assert_eq!(status, 200, "{created}");
    harness.stop().await;

    let open = Harness::embedded().await;
    let response =
        reqwest::Client::new().post(format!("http://{}/api/session", open.http_addr)).send().await.expect("session");
    assert_eq!(response.json::<Value>().await.expect("JSON"), json!({"auth": false, "role": "admin"}));
    open.stop().await;
}

/// Without a token (the standalone default) the API still refuses what a
/// hostile page can send: a cross-site form post (no `Origin`, but the
/// browser's `Sec-Fetch-Site: cross-site`), and a DNS-rebinding page (the
/// request names the attacker's host). Nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_rebound_hosts_are_refused_without_a_token() {
    let harness = Harness::embedded().await;
    let http = Http::new(&harness);
    let create = json!({"job": {"name": "x", "type": "other"}}).to_string();
    let before = harness.dump().await;
    for site in ["cross-site", "same-site"] {
        let response = http
            .request("CreateJob", &create)
            .header("content-type", "text/plain")
            .header("sec-fetch-site", site)
            .send()
            .await
            .expect("call");
        assert_eq!(response.status().as_u16(), 403, "{site}");
        let error: Value = response.json().await.expect("JSON");
        assert!(error["message"].as_str().is_some_and(|m| m.contains(site)), "{error}");
    }
    let port = harness.http_addr.port();
    let rebound = http.request("CreateJob", &create).header("host", format!("rebound.evil.example:{port}"));
    let response = rebound.send().await.expect("call");
    assert_eq!(response.status().as_u16(), 403);
    let error: Value = response.json().await.expect("JSON");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("--http-allowed-hosts")), "{error}");
    assert_eq!(harness.dump().await, before, "nothing written");
    // The UI's own requests (same-origin), curl (no header) and localhost pass.
    let same = http.request("ListJobs", "{}").header("sec-fetch-site", "same-origin").send().await.expect("call");
    assert_eq!(same.status().as_u16(), 200);
    let local = http.request("ListJobs", "{}").header("host", format!("localhost:{port}")).send().await.expect("call");
    assert_eq!(local.status().as_u16(), 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_from_the_binary_with_a_strict_policy() {
    let harness = Harness::embedded().await;
    let base = format!("http://{}", harness.http_addr);
    let index = reqwest::get(format!("{base}/")).await.expect("GET /");
    assert_eq!(index.status().as_u16(), 200);
    let policy = index.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = index.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
    for file in ["app.js", "api.js", "dom.js", "form.js", "jobs.js", "workers.js"] {
        let response = reqwest::get(format!("{base}/ui/{file}")).await.expect("GET");
        assert_eq!(response.status().as_u16(), 200, "{file}");
        assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
        // Every module the UI imports is served.
        for import in response.text().await.unwrap().lines().filter_map(|l| l.split("from './").nth(1)) {
            let name = import.split('\'').next().unwrap();
            let imported = reqwest::get(format!("{base}/ui/{name}")).await.expect("GET");
            assert_eq!(imported.status().as_u16(), 200, "{file} imports {name}");
        }
    }
    assert_eq!(reqwest::get(format!("{base}/ui/%2e%2e%2fCargo.toml")).await.unwrap().status().as_u16(), 404);
    assert_eq!(reqwest::get(format!("{base}/ui/nope.js")).await.unwrap().status().as_u16(), 404);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_across_parameters_are_published_and_enforced() {
    use ingest_model::{JobTypeSpec, ParamKind, ParamRule, ParamSpec};
    let mut harness = Harness::embedded().await;
    let ruled = JobTypeSpec {
        name: "ruled".into(),
        description: String::new(),
        params: vec![
            ParamSpec::new("mode", ParamKind::Enum, "m").allowed(&["search", "timeline"]).default_value("search"),
            ParamSpec::new("query", ParamKind::String, "q"),
            ParamSpec::new("bearer", ParamKind::Secret, "b"),
            ParamSpec::new("key", ParamKind::Secret, "k"),
            ParamSpec::new("secret", ParamKind::Secret, "s"),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
        rules: vec![
            ParamRule::required_if("query", "mode", "search"),
            ParamRule::one_of(&[&["bearer"], &["key", "secret"]], true),
        ],
    };
    let _worker = harness.start_worker("ruler", vec![ruled]).await;
    let http = Http::new(&harness);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let published = loop {
        let (_, types) = http.call("ListJobTypes", json!({})).await;
        if let Some(t) = types["jobTypes"].as_array().unwrap().iter().find(|t| t["name"] == "ruled") {
            break t.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the ruled type was not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(published["rules"][0]["requiredIf"], json!({"param": "query", "when": "mode", "equals": "search"}));
    assert_eq!(published["rules"][1]["oneOf"]["sets"][1]["params"], json!(["key", "secret"]));

    // The worker registers in the background: compare everything but its key.
    let jobs_keys = async || -> Vec<(String, Vec<u8>)> {
        harness.dump().await.into_iter().filter(|(key, _)| !key.contains("/workers/")).collect()
    };
    let before = jobs_keys().await;
    let create = |params: Value| json!({"jobId": "r1", "job": {"name": "r", "type": "ruled", "params": params}});
    let (status, error) = http.call("CreateJob", create(json!({"key": "k"}))).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&error), ["job.params.query", "job.params.secret"]);
    assert_eq!(jobs_keys().await, before, "nothing written");
    let (status, created) = http.call("CreateJob", create(json!({"query": "q", "bearer": "t"}))).await;
    assert_eq!(status, 200, "{created}");
    harness.stop().await;
}

/// Clients that trickle a request's headers (one line every 2 s) or keep an
/// idle connection open are cut off after the header-read timeout (10 s), so
/// they cannot hold the port's connections; the server answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_and_idle_http_clients_are_cut_off() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let harness = Harness::embedded().await;
    let addr = harness.http_addr;
    let base = format!("http://{addr}");
    let cut_off = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut open: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").expect("write");
                stream
            })
            .collect();
        // One more, idle after a complete request and its answer.
        let mut idle = TcpStream::connect(addr).expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
        idle.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut answer = [0u8; 512];
        let n = idle.read(&mut answer).expect("an answer");
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        idle.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        open.push(idle);
        let mut closed_at = Vec::new();
        while !open.is_empty() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_secs(2));
            open.retain_mut(|stream| {
                let _ = stream.write_all(b"X-Slow: 1\r\n");
                let mut buf = [0u8; 256];
                let still_open = match stream.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => false, // an error answer, then the close
                    Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                };
                if !still_open {
                    closed_at.push(started.elapsed());
                }
                still_open
            });
        }
        (open.len(), closed_at)
    });
    // Meanwhile the server answers everyone else.
    for _ in 0..5 {
        let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
        assert_eq!(health.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (still_open, closed_at) = cut_off.await.expect("clients");
    assert_eq!(still_open, 0, "connections still open after 30 s");
    let last = closed_at.iter().max().copied().unwrap_or_default();
    assert!(last < Duration::from_secs(16), "the last connection closed after {last:?}");
    harness.stop().await;
}
