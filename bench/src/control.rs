//! `ingest-bench control`: the control plane over a real etcd, each figure
//! next to a baseline measured in the same run on the same store client:
//!
//! * CreateJob throughput vs raw etcd transactions of the same shape (one
//!   put of a value of the same size, guarded by `create_revision == 0`);
//! * ListJobs latency (page of 100 at random pages) vs a raw range read of
//!   the same 101 job keys; the DESIGN.md §9 bar is p99 <= 50 ms;
//! * one full WatchJobs snapshot;
//! * where the time goes: the service layer's store round trips per ListJobs
//!   and CreateJob (in-process, no gRPC).
//!
//! `--with-status` adds 3 workers and every job's claim, counters and
//! checkpoint first, as in a live cluster; by default only the specs exist.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use ingest_control::service::{JobFilter, NewJob};
use ingest_control::{ControlService, Listeners, ServeArgs, serve};
use ingest_model::{CheckpointRecord, Counters, OwnerRecord, StatsRecord, WorkerRecord, WorkerState};
use ingest_proto::v1 as pb;
use ingest_proto::v1::job_service_client::JobServiceClient;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{Compare, EtcdOptions, EtcdStore, KeyRange, RangeRequest, Store, Txn, TxnOp, prefix_end};
use ingest_testkit::EtcdServer;
use ingest_worker::{Membership, WorkerConfig, catalogue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::counting::CountingStore;
use crate::stats::{Latencies, Rng, millis, ms, rate};

/// Jobs per ListJobs page (the API default).
const PAGE_SIZE: usize = 100;
/// DESIGN.md §9: control `ListJobs` over 10 000 jobs, p99 <= 50 ms.
const LIST_P99_BAR: Duration = Duration::from_millis(50);
/// In-process ListJobs calls traced store call by store call.
const BREAKDOWN_SAMPLES: usize = 200;
/// Where the raw baseline writes, outside the control keys.
const RAW_ROOT: &str = "/ingest-bench/raw/";

type Client = JobServiceClient<Channel>;

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Jobs to create (and list, and watch).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
    /// Concurrent CreateJob requests (and raw transactions).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Sequential ListJobs calls at random pages (and raw range reads).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Seed of the page picks; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Before reading, make the cluster look live: 3 registered workers and,
    /// for every job, a claim, counters and a checkpoint (what ListJobs and
    /// WatchJobs also read). Off: only the job specs exist.
    #[arg(long)]
    with_status: bool,
}

/// What one run does, from the flags.
struct Plan {
    jobs: usize,
    concurrency: usize,
    samples: usize,
    seed: u64,
    status: Status,
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let plan = Plan {
        jobs: args.jobs as usize,
        concurrency: args.concurrency as usize,
        samples: args.samples as usize,
        seed: args.seed.unwrap_or_else(time_seed),
        status: if args.with_status { Status::Live } else { Status::SpecsOnly },
    };
    // `start` blocks and panics with etcd's log tail when etcd does not come
    // up; on a blocking thread the panic becomes an error here.
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.context("etcd did not start")?;
    let control = Control::start(&etcd).await?;
    let Plan { jobs, concurrency, samples, seed, status } = &plan;
    println!(
        "ingest-bench control: {jobs} jobs, concurrency {concurrency}, {samples} samples, seed {seed}, {status:?}"
    );
    println!(
        "  etcd {} (data on {}), control gRPC on {}",
        etcd.endpoint(),
        etcd.data_dir().display(),
        control.grpc_addr
    );

    let result = measure(&control, &plan).await;
    control.stop().await;
    drop(etcd);
    let list_p99 = result?;
    let verdict = if list_p99 <= LIST_P99_BAR { "PASS" } else { "MISS" };
    println!();
    println!("ListJobs p99 = {:.2} ms (bar <= {} ms): {verdict}", millis(list_p99), LIST_P99_BAR.as_millis());
    Ok(())
}

/// Runs every measurement and prints it; returns ListJobs' p99.
async fn measure(control: &Control, plan: &Plan) -> anyhow::Result<Duration> {
    let &Plan { jobs, concurrency, samples, seed, status } = plan;
    bench_create(control, jobs, concurrency).await?;
    let ids = bench_paging_pass(control, jobs).await?;
    if status == Status::Live {
        write_live_status(control, &ids).await?;
    }
    let mut rng = Rng::new(seed);
    println!();
    println!("ListJobs latency (page_size {PAGE_SIZE}, {samples} random pages, sequential)");
    let list_p99 = bench_list(control, &ids, samples, &mut rng).await?;
    bench_watch(control, jobs).await?;
    breakdown_list(control, &ids, samples.min(BREAKDOWN_SAMPLES), &mut rng).await?;

    breakdown_create(control).await?;
    Ok(list_p99)
}

/// What exists in the store besides the job specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Only specs: no workers, claims, counters or checkpoints.
    SpecsOnly,
    /// 3 workers, and a claim, counters and a checkpoint for every job.
    Live,
}

/// Control in-process on ephemeral ports over the etcd, and a gRPC client.
struct Control {
    /// The store client control itself uses; baselines go through it too.
    store: Arc<dyn Store>,
    keys: Keys,
    grpc_addr: SocketAddr,
    client: Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Control {
    async fn start(etcd: &EtcdServer) -> anyhow::Result<Self> {
        let options = EtcdOptions { endpoints: vec![etcd.endpoint()], ..Default::default() };
        let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(options).await.context("connecting to etcd")?);
        let keys = Keys::default();
        let args = ServeArgs::loopback();
        let listeners = Listeners::bind(&args).await?;
        let grpc_addr = listeners.grpc.local_addr().context("gRPC listener address")?;
        let shutdown = CancellationToken::new();
        let service = ControlService::new(store.clone(), keys.clone());
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(service, &args, listeners, shutdown).await }
        });
        // Workers publish the job types CreateJob validates against.
        let publisher = WorkerConfig {
            name: "ingest-bench".to_string(),
            weight: 1.0,
            lease_ttl: Duration::from_secs(10),
            job_types: Vec::new(),
        };
        Membership::new(store.clone(), keys.clone(), publisher, catalogue::job_types())
            .publish_types()
            .await
            .context("publishing the job types")?;
        let client = JobServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .with_context(|| format!("connecting to control at {grpc_addr}"))?;
        Ok(Self { store, keys, grpc_addr, client, shutdown, server })
    }

    async fn stop(self) {
        drop(self.client);
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("warning: control server failed: {error:#}"),
            Ok(Err(error)) => eprintln!("warning: control server task failed: {error}"),
            Err(_) => eprintln!("warning: control server did not stop within 5 s"),
        }
    }

    fn jobs_prefix(&self) -> String {
        self.keys.prefix(KeyKind::Job)
    }
}

// ---------------------------------------------------------------- CreateJob

async fn bench_create(control: &Control, jobs: usize, concurrency: usize) -> anyhow::Result<()> {
    let client = control.client.clone();
    let create = run_concurrently(jobs, concurrency, move |i| {
        let mut client = client.clone();
        async move {
            let response = client.create_job(create_request(i)).await.with_context(|| format!("CreateJob #{i}"))?;
            ensure!(response.into_inner().job.is_some_and(|j| !j.id.is_empty()), "CreateJob #{i} returned no job");
            Ok(())
        }
    })
    .await?;

    // The baseline writes values as big as a stored job, in the same shape
    // of transaction CreateJob does: one put if the key is absent.
    let value_len = stored_job_size(control).await?;
    let store = control.store.clone();
    let raw = run_concurrently(jobs, concurrency, move |i| {
        let store = store.clone();
        async move {
            let key = format!("{RAW_ROOT}{i:032x}");
            let txn =
                Txn::new().when([Compare::absent(key.clone())]).and_then([TxnOp::put(key, vec![b'x'; value_len])]);
            let response = store.txn(txn).await.with_context(|| format!("raw txn #{i}"))?;
            ensure!(response.succeeded, "raw txn #{i}: key already exists");
            Ok(())
        }
    })
    .await?;

    let (create_rate, raw_rate) = (rate(jobs, create), rate(jobs, raw));
    println!();
    println!("CreateJob throughput ({jobs} jobs, {concurrency} concurrent requests)");
    println!("  CreateJob over gRPC      {:>8.2} s  {create_rate:>8.0} jobs/s", create.as_secs_f64());
    println!(
        "  raw etcd txn (baseline)  {:>8.2} s  {raw_rate:>8.0} txn/s   (put {value_len} B if create_revision == 0)",
        raw.as_secs_f64()
    );
    println!("  ratio CreateJob/s / raw txn/s = {:.3}", create_rate / raw_rate);
    Ok(())
}

fn create_request(i: usize) -> pb::CreateJobRequest {
    let items_per_run = pbjson_types::Value { kind: Some(pbjson_types::value::Kind::NumberValue(5.0)) };
    let params = pbjson_types::Struct { fields: [("items_per_run".to_string(), items_per_run)].into() };
    pb::CreateJobRequest {
        job: Some(pb::Job {
            name: format!("bench job {i}"),
            r#type: "demo".to_string(),
            params: Some(params),
            ..Default::default()
        }),
        job_id: String::new(),
        validate_only: false,
    }
}

/// Size of the first stored job record.
async fn stored_job_size(control: &Control) -> anyhow::Result<usize> {
    let range = RangeRequest::new(KeyRange::prefix(control.jobs_prefix())).limit(1);
    let response = control.store.range(range).await.context("reading a stored job")?;
    match response.kvs.first() {
        Some(kv) => Ok(kv.value.len()),
        None => bail!("no job stored after CreateJob"),
    }
}

/// Runs `op(0..n)` on `concurrency` tasks, each taking the next index when
/// done with the last; returns the wall time. Fails on the first error.
async fn run_concurrently<F, Fut>(n: usize, concurrency: usize, op: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                op(i).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("benchmark task panicked")??;
    }
    Ok(started.elapsed())
}

/// Writes 3 worker registrations and, for every job, the claim, counters and
/// checkpoint its workers would write (without leases: nothing expires
/// during the run). 40 jobs per transaction (120 puts, under etcd's default
/// limit of 128 operations).
async fn write_live_status(control: &Control, ids: &[String]) -> anyhow::Result<()> {
    const WORKERS: usize = 3;
    let started = Instant::now();
    let now = ingest_model::now_millis();
    let keys = &control.keys;
    let workers: Vec<String> = (0..WORKERS).map(|w| format!("bench-worker-{w}")).collect();
    for name in &workers {
        let record = WorkerRecord {
            name: name.clone(),
            state: WorkerState::Active,
            weight: 1.0,
            types: vec!["demo".to_string()],
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: now,
        };
        control.store.put(&keys.worker(name), serde_json::to_vec(&record)?, 0).await.context("registering a worker")?;
    }
    for (chunk_index, chunk) in ids.chunks(40).enumerate() {
        let mut ops = Vec::with_capacity(chunk.len() * 3);
        for (offset, id) in chunk.iter().enumerate() {
            let n = (chunk_index * 40 + offset) as u64;
            let owner = OwnerRecord { worker: workers[n as usize % WORKERS].clone() };
            let stats = StatsRecord {
                counters: Counters {
                    items_fetched: 5 * n,
                    items_written: 5 * n,
                    bytes_fetched: 1280 * n,
                    runs: n,
                    ..Counters::default()
                },
                last_success: Some(now),
                last_error: None,
                consecutive_failures: 0,
            };
            let checkpoint = CheckpointRecord {
                next_run: Some(now + 60_000),
                cursor: serde_json::json!({ "seq": 5 * n }),
                ..Default::default()
            };
            ops.push(TxnOp::put(keys.owner(id), serde_json::to_vec(&owner)?));
            ops.push(TxnOp::put(keys.stats(id), serde_json::to_vec(&stats)?));
            ops.push(TxnOp::put(keys.state(id), serde_json::to_vec(&checkpoint)?));
        }
        control.store.txn(Txn::new().and_then(ops)).await.context("writing job status")?;
    }
    println!();
    println!(
        "Live status written: {WORKERS} workers; claim, counters and checkpoint of {} jobs in {:.2} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------- ListJobs

/// Pages through every job once; returns the ids in order.
async fn bench_paging_pass(control: &Control, jobs: usize) -> anyhow::Result<Vec<String>> {
    let mut client = control.client.clone();
    let mut ids = Vec::with_capacity(jobs);
    let mut token = String::new();
    let mut pages = 0;
    let started = Instant::now();
    loop {
        let request = pb::ListJobsRequest { page_size: PAGE_SIZE as i32, page_token: token, ..Default::default() };
        let page = client.list_jobs(request).await.context("ListJobs (paging pass)")?.into_inner();
        pages += 1;
        ids.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let took = started.elapsed();
    ensure!(ids.len() == jobs, "paging through ListJobs found {} jobs, expected {jobs}", ids.len());
    ensure!(ids.windows(2).all(|w| w[0] < w[1]), "ListJobs pages are not in strictly increasing id order");
    println!();
    println!(
        "ListJobs full paging pass: {} jobs in {pages} pages, {:.2} s ({} per page)",
        ids.len(),
        took.as_secs_f64(),
        ms(took / pages)
    );
    Ok(ids)
}

/// A random page: the index of its first job and its page token (the id of
/// the job before it, empty for the first page).
fn random_page<'a>(ids: &'a [String], rng: &mut Rng) -> (usize, &'a str) {
    let start = rng.below(ids.len().saturating_sub(PAGE_SIZE) + 1);
    let token = if start == 0 { "" } else { ids[start - 1].as_str() };
    (start, token)
}

async fn bench_list(control: &Control, ids: &[String], samples: usize, rng: &mut Rng) -> anyhow::Result<Duration> {
    let mut client = control.client.clone();
    let mut list = Vec::with_capacity(samples);
    let mut raw = Vec::with_capacity(samples);
    for sample in 0..samples {
        let (start, token) = random_page(ids, rng);
        let expected = (ids.len() - start).min(PAGE_SIZE);
        // Alternate which goes first so neither always reads a warmer cache.
        if sample % 2 == 0 {
            list.push(time_list_page(&mut client, token, &ids[start], expected).await?);
            raw.push(time_raw_page(control, token, expected).await?);
        } else {
            raw.push(time_raw_page(control, token, expected).await?);
            list.push(time_list_page(&mut client, token, &ids[start], expected).await?);
        }
    }
    let (list, raw) = (Latencies::new(list), Latencies::new(raw));
    println!("  ListJobs over gRPC           {}", list.summary());
    println!("  raw etcd range, limit {}    {}", PAGE_SIZE + 1, raw.summary());
    println!(
        "  ratio ListJobs / raw range:  p50 {:.2}  p99 {:.2}",
        millis(list.percentile(50.0)) / millis(raw.percentile(50.0)),
        millis(list.percentile(99.0)) / millis(raw.percentile(99.0))
    );
    Ok(list.percentile(99.0))
}

async fn time_list_page(client: &mut Client, token: &str, first_id: &str, expected: usize) -> anyhow::Result<Duration> {
    let request =
        pb::ListJobsRequest { page_size: PAGE_SIZE as i32, page_token: token.to_string(), ..Default::default() };
    let started = Instant::now();
    let page = client.list_jobs(request).await.context("ListJobs")?.into_inner();
    let took = started.elapsed();
    ensure!(
        page.jobs.len() == expected,
        "ListJobs after '{token}' returned {} jobs, expected {expected}",
        page.jobs.len()
    );
    ensure!(
        page.jobs.first().is_some_and(|j| j.id == first_id),
        "ListJobs after '{token}' did not start at {first_id}"
    );
    Ok(took)
}

/// The read ListJobs starts with: the page's job keys plus one, from the
/// same start key.
async fn time_raw_page(control: &Control, token: &str, expected: usize) -> anyhow::Result<Duration> {
    let prefix = control.jobs_prefix();
    let from = if token.is_empty() { prefix.clone() } else { format!("{}\0", control.keys.job(token)) };
    let range = RangeRequest::new(KeyRange::between(from, prefix_end(&prefix))).limit(PAGE_SIZE as i64 + 1);
    let started = Instant::now();
    let response = control.store.range(range).await.context("raw range read")?;
    let took = started.elapsed();
    ensure!(
        response.kvs.len() >= expected,
        "raw range after '{token}' read {} keys, expected {expected}",
        response.kvs.len()
    );
    Ok(took)
}

// ---------------------------------------------------------------- WatchJobs

/// Streams kept open after the first, to see what an open stream holds.
const HELD_STREAMS: usize = 3;

async fn bench_watch(control: &Control, jobs: usize) -> anyhow::Result<()> {
    let before = rss_mb();
    let (stream, took, first, messages) = watch_snapshot(control, jobs).await?;
    let one = rss_mb();
    println!();
    println!(
        "WatchJobs snapshot: {jobs} jobs in {messages} messages, synced after {} (first message after {})",
        ms(took),
        ms(first)
    );
    // The streams stay open (synced, idle): what each holds is what the
    // control server keeps per watcher.
    let mut held = vec![stream];
    for _ in 0..HELD_STREAMS {
        held.push(watch_snapshot(control, jobs).await?.0);
    }
    let all = rss_mb();
    if let (Some(before), Some(one), Some(all)) = (before, one, all) {
        println!(
            "  RSS of this process (bench and control): {before:.1} MB before, {one:.1} MB with one stream open, \
             {all:.1} MB with {}: {:.1} MB per further open stream ({:.2} KB per job)",
            held.len(),
            (all - one) / HELD_STREAMS as f64,
            (all - one) / HELD_STREAMS as f64 * 1000.0 / jobs.max(1) as f64
        );
    }
    drop(held);
    Ok(())
}

/// VmRSS of this process in MB (Linux).
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1000.0)
}

/// Opens a WatchJobs stream and reads its snapshot: the stream (still
/// open), when it was synced and its first message came, and how many
/// messages it took.
async fn watch_snapshot(
    control: &Control,
    jobs: usize,
) -> anyhow::Result<(tonic::Streaming<pb::WatchJobsResponse>, Duration, Duration, usize)> {
    let mut client = control.client.clone();
    let started = Instant::now();
    let mut stream = client.watch_jobs(pb::WatchJobsRequest::default()).await.context("WatchJobs")?.into_inner();
    let (mut messages, mut seen, mut first) = (0usize, 0usize, None);
    loop {
        let Some(message) = stream.message().await.context("WatchJobs stream")? else {
            bail!("WatchJobs ended before the snapshot was synced");
        };
        first.get_or_insert_with(|| started.elapsed());
        messages += 1;
        seen += message.events.len();
        if message.synced {
            break;
        }
    }
    let took = started.elapsed();
    ensure!(seen == jobs, "the WatchJobs snapshot held {seen} jobs, expected {jobs}");
    Ok((stream, took, first.unwrap_or_default(), messages))
}

// ---------------------------------------------------------------- breakdown

/// Calls `ControlService::list_jobs` in-process (no gRPC) over a store that
/// logs every call, to show the store round trips a ListJobs costs.
async fn breakdown_list(control: &Control, ids: &[String], samples: usize, rng: &mut Rng) -> anyhow::Result<()> {
    let counting = Arc::new(CountingStore::new(control.store.clone(), control.keys.root()));
    let service = ControlService::new(counting.clone(), control.keys.clone());
    let filter = JobFilter::default();
    let mut latencies = Vec::with_capacity(samples);
    // Per store call kind: (calls, total time).
    let mut calls: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for _ in 0..samples {
        let (_, token) = random_page(ids, rng);
        counting.take();
        let started = Instant::now();
        let page = service
            .list_jobs(&filter, PAGE_SIZE, Some(token).filter(|t| !t.is_empty()))
            .await
            .context("in-process list_jobs")?;
        latencies.push(started.elapsed());
        ensure!(!page.jobs.is_empty(), "in-process list_jobs returned no jobs");
        for call in counting.take() {
            let entry = calls.entry(call.what).or_default();
            entry.0 += 1;
            entry.1 += call.took;
        }
    }
    let latencies = Latencies::new(latencies);
    let per_call: usize = calls.values().map(|(n, _)| n).sum();
    println!();
    println!("Where ListJobs time goes (ControlService::list_jobs in-process, no gRPC, {samples} random pages)");
    println!("  in-process list_jobs         {}", latencies.summary());
    println!("  store calls per ListJobs: {:.1}", per_call as f64 / samples as f64);
    for (what, (n, total)) in &calls {
        println!(
            "    {what:<22} {:>5.2} per call, mean {}",
            *n as f64 / samples as f64,
            ms(*total / (*n).max(1) as u32)
        );
    }
    Ok(())
}

/// Calls `ControlService::create_job` in-process over a store that logs
/// every call, under a separate key root so the jobs measured above are
/// untouched.
async fn breakdown_create(control: &Control) -> anyhow::Result<()> {
    const CREATES: usize = 100;
    let keys = Keys::new("/ingest-bench/breakdown/");
    let counting = Arc::new(CountingStore::new(control.store.clone(), keys.root()));
    let publisher = WorkerConfig {
        name: "ingest-bench".to_string(),
        weight: 1.0,
        lease_ttl: Duration::from_secs(10),
        job_types: Vec::new(),
    };
    Membership::new(control.store.clone(), keys.clone(), publisher, catalogue::job_types())
        .publish_types()
        .await
        .context("publishing the job types")?;
    let service = ControlService::new(counting.clone(), keys);
    let mut latencies = Vec::with_capacity(CREATES);
    let mut calls: Vec<String> = Vec::new();
    for i in 0..CREATES {
        let new = NewJob {
            name: format!("breakdown job {i}"),
            job_type: "demo".to_string(),
            params: serde_json::Map::from_iter([("items_per_run".to_string(), serde_json::json!(5))]),
            ..Default::default()
        };
        counting.take();
        let started = Instant::now();
        service.create_job(new, false).await.context("in-process create_job")?;
        latencies.push(started.elapsed());
        calls = counting.take().into_iter().map(|c| c.what).collect();
    }
    let latencies = Latencies::new(latencies);
    println!();
    println!("Where CreateJob time goes (ControlService::create_job in-process, no gRPC, {CREATES} sequential)");
    println!("  in-process create_job        {}", latencies.summary());
    println!("  store calls per CreateJob: {} ({})", calls.len(), calls.join(", "));
    Ok(())
}

fn time_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
