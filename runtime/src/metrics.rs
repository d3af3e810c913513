//! Prometheus metrics. Code records through the `metrics` facade; one
//! recorder per process renders the text exposition at `/metrics` (control's
//! HTTP server, the worker's `--metrics-addr`).
//!
//! Every metric is named here, with its help text. Labels are bounded: a job
//! type, an outcome, a gRPC method or code — never a job id or a URL.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const JOBS_OWNED: &str = "ingest_worker_jobs_owned";
pub const ITEMS_FETCHED: &str = "ingest_worker_items_fetched_total";
pub const ITEMS_WRITTEN: &str = "ingest_worker_items_written_total";
pub const ITEMS_FAILED: &str = "ingest_worker_items_failed_total";
pub const BYTES_FETCHED: &str = "ingest_worker_bytes_fetched_total";
pub const RUNS: &str = "ingest_worker_runs_total";
pub const CLAIM_SECONDS: &str = "ingest_worker_claim_seconds";
pub const LEASE_RENEWAL_LAG_SECONDS: &str = "ingest_worker_lease_renewal_lag_seconds";
pub const LEASE_RENEWAL_FAILURES: &str = "ingest_worker_lease_renewal_failures_total";
pub const WRITE_WINDOW: &str = "ingest_worker_write_window";
pub const BULK_SECONDS: &str = "ingest_sink_bulk_seconds";
pub const BULK_DOCUMENTS: &str = "ingest_sink_bulk_documents_total";
pub const REQUESTS: &str = "ingest_control_requests_total";
pub const REQUEST_SECONDS: &str = "ingest_control_request_seconds";
pub const PROGRESS_REPORTS: &str = "ingest_control_progress_reports_total";
pub const PROGRESS_WRITE_WINDOW: &str = "ingest_control_progress_write_window";
pub const FEED_PROBLEMS: &str = "ingest_worker_feed_problems_total";
pub const JOBS: &str = "ingest_jobs";
pub const JOB_CONSECUTIVE_FAILURES: &str = "ingest_job_consecutive_failures";
pub const NOTIFICATIONS: &str = "ingest_control_notifications_total";

/// Name, kind and help of every metric.
const DESCRIPTIONS: [(&str, Kind, &str); 20] = [
    (JOBS_OWNED, Kind::Gauge, "Jobs this worker owns."),
    (ITEMS_FETCHED, Kind::Counter, "Items fetched from sources, by job type."),
    (ITEMS_WRITTEN, Kind::Counter, "Items acknowledged by the sinks, by job type."),
    (ITEMS_FAILED, Kind::Counter, "Items refused by the index (kept as dead letters), by job type."),
    (BYTES_FETCHED, Kind::Counter, "Bytes fetched from sources, by job type."),
    (RUNS, Kind::Counter, "Job runs, by job type and outcome (success, warning, failure)."),
    (CLAIM_SECONDS, Kind::Histogram, "Time of one claim transaction in the store."),
    (LEASE_RENEWAL_LAG_SECONDS, Kind::Histogram, "How late each lease renewal was sent, after its schedule."),
    (LEASE_RENEWAL_FAILURES, Kind::Counter, "Lease renewals that failed."),
    (
        WRITE_WINDOW,
        Kind::Gauge,
        "Claim and release transactions this worker keeps in flight (fewer while the store answers slowly).",
    ),
    (BULK_SECONDS, Kind::Histogram, "Time of one _bulk request, by outcome (ok, retry, error)."),
    (BULK_DOCUMENTS, Kind::Counter, "Documents sent in _bulk requests, by result (written, rejected, retried)."),
    (REQUESTS, Kind::Counter, "JobService calls (gRPC and HTTP/JSON), by method and status code."),
    (REQUEST_SECONDS, Kind::Histogram, "Time to answer a JobService call, by method."),
    (PROGRESS_REPORTS, Kind::Counter, "Progress reports received from workers."),
    (
        PROGRESS_WRITE_WINDOW,
        Kind::Gauge,
        "Progress batches this control server keeps in flight (fewer while the store answers slowly).",
    ),
    (JOBS, Kind::Gauge, "Jobs in the cluster by type and state (each control server counts all of them)."),
    (
        JOB_CONSECUTIVE_FAILURES,
        Kind::Gauge,
        "Jobs with at most `le` failed runs in a row (cumulative buckets, as in a histogram).",
    ),
    (
        NOTIFICATIONS,
        Kind::Counter,
        "Webhooks about job health, by event and outcome (sent, failed, dropped, abandoned).",
    ),
    (
        FEED_PROBLEMS,
        Kind::Counter,
        "Feeds read with a problem shown on the job, by problem (no_entries, not_well_formed, entries_dropped).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Buckets of every `_seconds` histogram: 1 ms to 30 s.
const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process's recorder (once; later calls return at once).
/// Call it before recording: what is recorded earlier is not kept.
pub fn init() {
    HANDLE.get_or_init(|| {
        let builder =
            match PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS) {
                Ok(builder) => builder,
                Err(error) => {
                    tracing::warn!(%error, "metrics disabled");
                    return None;
                }
            };
        match builder.install_recorder() {
            Ok(handle) => {
                describe();
                // Histogram samples wait in buffers until upkeep folds them
                // into buckets; without a scrape nobody else would.
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
                if let Err(error) = spawned {
                    tracing::warn!(%error, "no metrics upkeep thread; histograms fold only when scraped");
                }
                Some(handle)
            }
            Err(error) => {
                // Another recorder is installed (e.g. by an embedding program).
                tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
                None
            }
        }
    });
}

fn describe() {
    for (name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// The Prometheus text exposition of everything recorded in this process.
pub fn render() -> String {
    init();
    let handle = HANDLE.get().and_then(Option::as_ref);
    handle
        .map(|h| {
            // Histograms are summarized lazily; keep memory bounded.
            h.run_upkeep();
            h.render()
        })
        .unwrap_or_default()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
