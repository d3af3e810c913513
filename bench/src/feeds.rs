//! `ingest-bench feeds`: end-to-end items/s from local fixture feeds into a
//! real OpenSearch 2 or Elasticsearch 9 (`--engine`), next to two baselines measured in the same run on the
//! same documents:
//!
//! - the ceiling: the same documents, pre-built as NDJSON, sent straight to
//!   `_bulk` with the same batch bounds and requests in flight;
//! - a plain Python pipeline: feedparser and opensearch-py's bulk helper,
//!   fetching the same feeds (bench/python/feeds_pipeline.py).
//!
//! The ingest side is the whole product path: rss jobs created through
//! control, claimed and run by a worker, fetched over HTTP through the
//! guarded fetcher, parsed by feed-rs, each feed archived (gzipped, to local
//! files here) and the documents indexed through the shared bulk queue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use elasticsearch::BulkParts;
use elasticsearch::http::transport::Transport;
use futures::StreamExt;
use ingest_control::service::NewJob;
use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_model::CheckpointRecord;
use ingest_sinks::batcher::BulkConfig;
use ingest_sinks::delivery::index_mapping;
use ingest_sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use ingest_sinks::local::LocalObjects;
use ingest_sinks::{Document, Sinks, bulk};
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EmbeddedStore, Store, scan_prefix};
use ingest_testkit::{Engine, SearchServer};
use ingest_worker::fetch::{FetchArgs, Fetcher};
use ingest_worker::jobs::{JobType, rss};
use ingest_worker::{ControlEndpoint, JobServices, ReportTo, SchedulerConfig, WorkerConfig, run_worker};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct FeedsArgs {
    /// Feeds served (one rss job each).
    #[arg(long, default_value_t = 300)]
    feeds: usize,
    /// Items per feed.
    #[arg(long, default_value_t = 100)]
    items: usize,
    /// Python with feedparser and opensearch-py (the baseline); without
    /// it, a venv is made under $INGEST_CACHE/bench-venv.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Leave the Python baseline out.
    #[arg(long)]
    skip_python: bool,
    /// The search server, started for the run.
    #[arg(long, value_enum, default_value_t = SearchEngine::Opensearch)]
    engine: SearchEngine,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SearchEngine {
    /// OpenSearch 2.19.6.
    Opensearch,
    /// Elasticsearch 9.1.0.
    Elasticsearch9,
    /// Elasticsearch 8.19.0.
    Elasticsearch8,
}

pub async fn run(args: FeedsArgs) -> anyhow::Result<()> {
    let total = (args.feeds * args.items) as u64;
    println!("corpus: {} feeds × {} items = {total} items", args.feeds, args.items);
    let feeds: Arc<Vec<String>> = Arc::new((0..args.feeds).map(|f| feed_xml(f, args.items)).collect());
    let corpus_bytes: usize = feeds.iter().map(String::len).sum();
    println!("corpus size: {:.1} MB of RSS", corpus_bytes as f64 / 1e6);
    let server = serve_feeds(feeds.clone()).await?;
    let urls: Vec<String> = (0..args.feeds).map(|f| format!("http://{server}/feeds/{f}.xml")).collect();

    let engine = match args.engine {
        SearchEngine::Opensearch => Engine::OpenSearch,
        SearchEngine::Elasticsearch9 => Engine::Elasticsearch9,
        SearchEngine::Elasticsearch8 => Engine::Elasticsearch8,
    };
    println!("search server: {}", engine.name());
    let opensearch = tokio::task::spawn_blocking(move || SearchServer::start(engine)).await?;
    let mapping = index_mapping(&<rss::Rss as JobType>::properties());
    // The same settings for all three: no replica (one node), a bulk-load refresh interval.
    let settings = json!({"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "30s"});
    for index in ["ceiling", "ingest-rss", "python-rss", "warmup"] {
        let body = json!({"settings": settings, "mappings": mapping});
        opensearch_json(&opensearch, "PUT", &format!("/{index}"), Some(body)).await?;
    }
    let bulk = BulkConfig::default();

    // Warm-up: the JVM compiles its hot paths on the first requests.
    let docs = documents(&feeds, &urls, "warmup")?;
    ceiling(&opensearch, &docs[..docs.len().min(20_000)], &bulk).await?;

    let docs = documents(&feeds, &urls, "ceiling")?;
    let cpu = CpuUse::start();
    let ceiling_secs = ceiling(&opensearch, &docs, &bulk).await?;
    let ceiling_cpu = cpu.report(ceiling_secs);
    expect_count(&opensearch, "ceiling", total).await?;
    let ceiling_rate = total as f64 / ceiling_secs;
    println!("ceiling (pre-built NDJSON to _bulk):  {ceiling_rate:>9.0} items/s  ({ceiling_secs:.2} s; {ceiling_cpu})");

    let cpu = CpuUse::start();
    let ingest_secs = pipeline(&opensearch, &urls).await?;
    let ingest_cpu = cpu.report(ingest_secs);
    expect_count(&opensearch, "ingest-rss", total).await?;
    let ingest_rate = total as f64 / ingest_secs;
    println!(
        "ingest (rss jobs, fetch, parse, archive, index): {ingest_rate:>9.0} items/s  ({ingest_secs:.2} s; {ingest_cpu})  = {:.0} % of the ceiling (bar: 95 %)",
        100.0 * ingest_rate / ceiling_rate
    );

    if !args.skip_python {
        let python = match args.python {
            Some(python) => python,
            None => python_venv().await?,
        };
        let python_secs = python_pipeline(&python, &opensearch, &urls, &bulk).await?;
        expect_count(&opensearch, "python-rss", total).await?;
        let python_rate = total as f64 / python_secs;
        println!(
            "python (feedparser + opensearch-py bulk):  {python_rate:>9.0} items/s  ({python_secs:.2} s); ingest is {:.1}× (bar: 5×)",
            ingest_rate / python_rate
        );
    }
    Ok(())
}

/// One RSS 2.0 feed with `items` items of about 1 KB each.
pub fn feed_xml(feed: usize, items: usize) -> String {
    let words = ["ingest", "feeds", "scale", "worker", "lease", "shard", "index", "bulk", "archive", "cursor"];
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\
         <channel><title>Bench feed {feed}</title><link>https://example.org/{feed}/</link><description>Feed {feed}</description>\n"
    );
    for i in 0..items {
        let body: Vec<&str> = (0..110).map(|w| words[(feed * 7 + i * 3 + w) % words.len()]).collect();
        xml.push_str(&format!(
            "<item><title>Item {i} of feed {feed}: {}</title><link>https://example.org/{feed}/items/{i}</link>\
             <guid isPermaLink=\"false\">feed-{feed}-item-{i}</guid><dc:creator>Author {}</dc:creator>\
             <category>{}</category><pubDate>Mon, {:02} Nov 2026 {:02}:{:02}:00 GMT</pubDate>\
             <description>{}</description></item>\n",
            body[..6].join(" "),
            i % 17,
            words[i % words.len()],
            1 + i % 28,
            i % 24,
            i % 60,
            body.join(" ")
        ));
    }
    xml.push_str("</channel></rss>\n");
    xml
}

async fn serve_feeds(feeds: Arc<Vec<String>>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/feeds/{name}",
            get(|State(feeds): State<Arc<Vec<String>>>, Path(name): Path<String>| async move {
                let n: usize = name.trim_end_matches(".xml").parse().unwrap_or(usize::MAX);
                match feeds.get(n) {
                    Some(xml) => ([("content-type", "application/rss+xml")], xml.clone()).into_response(),
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .with_state(feeds);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

use axum::response::IntoResponse;

/// The documents the rss type makes of the corpus, for `index`.
fn documents(feeds: &[String], urls: &[String], index: &str) -> anyhow::Result<Vec<Document>> {
    let index: Arc<str> = index.into();
    let mut docs = Vec::new();
    for (xml, url) in feeds.iter().zip(urls) {
        let url: url::Url = url.parse()?;
        let feed = rss::parse(xml.as_bytes(), &url).map_err(|e| anyhow::anyhow!(e.message))?;
        for entry in &feed.entries {
            let mut item = rss::item(&feed, entry, &url, rss::entry_id(&url, entry));
            item.doc.insert("job_id".into(), json!("ceiling"));
            item.doc.insert("job_type".into(), json!("rss"));
            docs.push(Document { index: index.clone(), id: item.id, source: serde_json::to_vec(&item.doc)?.into() });
        }
    }
    Ok(docs)
}

/// Sends pre-built NDJSON to `_bulk` in requests bounded like the bulk
/// queue's, with as many in flight; seconds taken.
async fn ceiling(opensearch: &SearchServer, docs: &[Document], config: &BulkConfig) -> anyhow::Result<f64> {
    let client = elasticsearch::Elasticsearch::new(Transport::single_node(&opensearch.url())?);
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let mut count = 0;
    for doc in docs {
        if count > 0 && (body.len() + bulk::encoded_len(doc) > config.max_bytes || count >= config.max_docs) {
            bodies.push(Bytes::from(std::mem::take(&mut body)));
            count = 0;
        }
        bulk::encode(doc, &mut body);
        count += 1;
    }
    bodies.push(Bytes::from(body));
    let started = Instant::now();
    let sends = bodies.into_iter().map(|body| {
        let client = client.clone();
        async move {
            let response = client
                .bulk(BulkParts::None)
                .filter_path(bulk::FILTER_PATH)
                .body(vec![body])
                .send()
                .await
                .context("ceiling _bulk")?;
            let text = response.text().await?;
            if text.contains("\"errors\":true") {
                bail!("ceiling _bulk had errors: {}", &text[..text.len().min(300)]);
            }
            Ok(())
        }
    });
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(sends).buffer_unordered(config.concurrency).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(started.elapsed().as_secs_f64())
}

/// The product path, in one process: embedded store, control, one worker.
async fn pipeline(opensearch: &SearchServer, urls: &[String]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path())?);
    let keys = Keys::default();
    let args = ServeArgs::loopback();
    let listeners = Listeners::bind(&args).await?;
    let control_url = format!("http://{}", listeners.grpc.local_addr()?);
    let control = ControlService::new(store.clone(), keys.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let (control, shutdown) = (control.clone(), shutdown.clone());
        async move { serve(control, &args, listeners, shutdown).await }
    });
    let documents = ElasticsearchSink::connect(ElasticsearchConfig {
        urls: vec![opensearch.url().parse()?],
        auth: None,
        ca_pem: None,
        request_timeout: Duration::from_secs(60),
        bulk: BulkConfig::default(),
    })?;
    let services = JobServices {
        sinks: Arc::new(Sinks::new(
            Arc::new(documents),
            Arc::new(LocalObjects::new(dir.path().join("objects"))),
            Duration::from_secs(60),
        )),
        fetcher: Arc::new(
            Fetcher::new(&FetchArgs {
                fetch_allow: "127.0.0.1".parse().map_err(anyhow::Error::msg)?,
                ..FetchArgs::default()
            })
            .map_err(anyhow::Error::msg)?,
        ),
        secrets_keys: None,
    };
    let config =
        WorkerConfig { name: "bench".into(), weight: 1.0, lease_ttl: Duration::from_secs(10), job_types: Vec::new() };
    let worker = tokio::spawn(run_worker(
        store.clone(),
        keys.clone(),
        config,
        SchedulerConfig::default(),
        ReportTo::Control(ControlEndpoint { url: control_url, token: Default::default(), tls: None }),
        services,
        None,
        shutdown.clone(),
    ));
    while store.get(&keys.job_type(rss::NAME)).await?.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let creates = urls.iter().enumerate().map(|(i, url)| {
        let control = control.clone();
        let params = json!({"url": url}).as_object().cloned().unwrap_or_default();
        async move {
            let new = NewJob {
                id: Some(format!("feed-{i:05}")),
                name: format!("feed {i}"),
                job_type: rss::NAME.into(),
                params,
                interval: Some(Duration::from_secs(3600)),
                paused: false,
                ..Default::default()
            };
            control.create_job(new, false).await.map_err(|e| anyhow::anyhow!("create job: {e:?}"))
        }
    });
    let created: Vec<_> = futures::stream::iter(creates).buffer_unordered(32).collect().await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    // Done when every job has checkpointed its run: a checkpoint is written
    // only after the index acknowledged the run's documents. (Polling the
    // index itself would need refreshes, which would slow it down.)
    let deadline = Instant::now() + Duration::from_secs(600);
    let prefix = keys.prefix(KeyKind::State);
    loop {
        let states = scan_prefix(store.as_ref(), &prefix).await?;
        let done = states
            .iter()
            .filter_map(|kv| serde_json::from_slice::<CheckpointRecord>(&kv.value).ok())
            .filter(|c| c.cursor.get("seen").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty()))
            .count();
        if done == urls.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the jobs did not all deliver within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = worker.await;
    Ok(secs)
}

pub async fn python_venv() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("INGEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ingest"));
    let venv = cache.join("bench-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("making {} (feedparser, opensearch-py)", venv.display());
        let status = tokio::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().await?;
        if !status.success() {
            bail!("python3 -m venv failed");
        }
    }
    let status = tokio::process::Command::new(&python)
        .args(["-m", "pip", "install", "-q", "feedparser==6.0.12", "opensearch-py==3.0.0"])
        .status()
        .await?;
    if !status.success() {
        bail!("pip install feedparser opensearch-py failed");
    }
    Ok(python)
}

async fn python_pipeline(
    python: &std::path::Path,
    opensearch: &SearchServer,
    urls: &[String],
    config: &BulkConfig,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n"))?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/feeds_pipeline.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .args(["--urls", &list.display().to_string(), "--opensearch", &opensearch.url(), "--index", "python-rss"])
        .args(["--chunk-docs", &config.max_docs.to_string(), "--chunk-bytes", &config.max_bytes.to_string()])
        .output()
        .await?;
    if !output.status.success() {
        bail!("the Python pipeline failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let report: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the Python pipeline's report: {}", String::from_utf8_lossy(&output.stdout)))?;
    report.get("seconds").and_then(|s| s.as_f64()).context("no seconds in the Python report")
}

async fn opensearch_json(
    opensearch: &SearchServer,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let (url, method, path) = (opensearch.url(), method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let text = body.map(|b| b.to_string());
        let (status, answer) = ingest_testkit::services::http(&url, &method, &path, text.as_deref());
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null))
    })
    .await?
}

async fn opensearch_count(opensearch: &SearchServer, index: &str) -> anyhow::Result<u64> {
    opensearch_json(opensearch, "POST", &format!("/{index}/_refresh"), None).await?;
    let answer = opensearch_json(opensearch, "GET", &format!("/{index}/_count"), None).await?;
    answer["count"].as_u64().context("a count")
}

async fn expect_count(opensearch: &SearchServer, index: &str, total: u64) -> anyhow::Result<()> {
    let count = opensearch_count(opensearch, index).await?;
    if count != total {
        bail!("{index} holds {count} documents, expected {total}");
    }
    Ok(())
}

/// CPU used during a phase: the whole machine's (from /proc/stat) and this
/// process's (the pipeline and the feed server), so a ratio below the bar
/// can be told apart from a machine with no CPU left.
struct CpuUse {
    machine: Option<f64>,
    bench: Option<f64>,
}

impl CpuUse {
    fn start() -> Self {
        Self { machine: machine_busy_secs(), bench: crate::cluster::cpu_secs("self") }
    }

    fn report(&self, wall_secs: f64) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rate = |before: Option<f64>, now: Option<f64>| match (before, now) {
            (Some(before), Some(now)) if wall_secs > 0.0 => format!("{:.2}", (now - before) / wall_secs),
            _ => "?".to_string(),
        };
        format!(
            "machine busy {} of {cores} cores, this process {} cores",
            rate(self.machine, machine_busy_secs()),
            rate(self.bench, crate::cluster::cpu_secs("self"))
        )
    }
}

/// Busy CPU seconds of every core since boot: /proc/stat's first line
/// (user nice system idle iowait irq softirq steal), USER_HZ = 100.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    let busy = ticks.first()? + ticks.get(1)? + ticks.get(2)? + ticks.get(5)? + ticks.get(6)? + ticks.get(7)?;
    Some(busy as f64 / 100.0)
}
