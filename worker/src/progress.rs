//! Per-job counters of the jobs this worker owns, and the stream that reports
//! them to control. Reports carry totals since the claim, so a lost or
//! repeated report is harmless and nothing is written to the store per item.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_model::{ClaimProgress, Counters, ErrorRecord, MAX_RUNS, RunOutcome, RunRecord, UnixMillis, now_millis};
use ingest_proto::convert::claim_progress_to_pb;
use ingest_proto::v1 as pb;
use ingest_proto::v1::worker_service_client::WorkerServiceClient;
use ingest_store::Revision;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

use ingest_runtime::tokens::{Role, TokenSource};

use crate::jobs::RunReport;

/// How long connecting to control may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often counters are sent to control.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
struct Entry {
    epoch: Revision,
    counters: Counters,
    last_success: Option<UnixMillis>,
    last_error: Option<ErrorRecord>,
    /// Runs not yet acknowledged by control, oldest first (at most
    /// `MAX_RUNS`); the first `in_flight` are in the report being sent.
    runs: Vec<RunRecord>,
    in_flight: usize,
    /// Changed since the last report.
    dirty: bool,
    /// The claim ended: drop the entry once reported.
    finished: bool,
}

/// How a run ended, for the job's status.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    Success,
    /// Succeeded, with something the user should see.
    Warning(&'a str),
    Failure(&'a str),
}

impl<'a> Outcome<'a> {
    pub fn success_or_warning(warning: Option<&'a str>) -> Self {
        warning.map_or(Self::Success, Self::Warning)
    }
}

/// Counters of the jobs this worker owns, by job id.
#[derive(Clone, Default)]
pub struct ProgressTable {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl ProgressTable {
    /// Records the outcome of one run of `job` under claim `epoch`, started
    /// at `started`: its counters, and the run for the job's history.
    pub fn record(&self, job: &str, epoch: Revision, started: UnixMillis, report: &RunReport, outcome: Outcome<'_>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        let entry = entries.entry(job.to_string()).or_default();
        if entry.epoch != epoch {
            *entry = Entry { epoch, ..Entry::default() };
        }
        let counters = Counters {
            items_fetched: report.items_fetched,
            items_written: report.items_written,
            items_failed: report.items_failed,
            bytes_fetched: report.bytes_fetched,
            runs: 1,
            runs_failed: u64::from(matches!(outcome, Outcome::Failure(_))),
            items_filtered: report.items_filtered,
        };
        entry.counters.add(&counters);
        let now = now_millis();
        let (run_outcome, message) = match outcome {
            Outcome::Success => (RunOutcome::Succeeded, None),
            Outcome::Warning(message) => (RunOutcome::Warning, Some(message.to_string())),
            Outcome::Failure(message) => (RunOutcome::Failed, Some(message.to_string())),
        };
        entry.runs.push(RunRecord {
            epoch,
            seq: entry.counters.runs,
            worker: String::new(),
            start: started,
            duration_ms: now.saturating_sub(started).max(0) as u64,
            outcome: run_outcome,
            counters,
            message,
        });
        if entry.runs.len() > MAX_RUNS {
            // Control has been away for a while: the oldest go.
            entry.runs.remove(0);
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
        match outcome {
            Outcome::Success => entry.last_success = Some(now),
            // A success whose problem is shown (same time: not failing).
            Outcome::Warning(message) => {
                entry.last_success = Some(now);
                entry.last_error = Some(ErrorRecord { time: now, message: message.to_string() });
            }
            Outcome::Failure(message) => {
                entry.last_error = Some(ErrorRecord { time: now, message: message.to_string() })
            }
        }
        entry.dirty = true;
    }

    /// The claim on `job` ended; its last totals are still reported once.
    pub fn finish(&self, job: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(job)
        {
            entry.finished = true;
        }
    }

    /// Totals of `job` under its current claim.
    pub fn counters(&self, job: &str) -> Option<Counters> {
        self.entries.lock().ok()?.get(job).map(|e| e.counters)
    }

    /// The entries changed since the last call, as a report.
    fn take_dirty(&self) -> Vec<pb::JobProgress> {
        let Ok(mut entries) = self.entries.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for (id, entry) in entries.iter_mut().filter(|(_, e)| e.dirty) {
            entry.dirty = false;
            entry.in_flight = entry.runs.len();
            let progress = ClaimProgress {
                epoch: entry.epoch,
                totals: entry.counters,
                last_success: entry.last_success,
                last_error: entry.last_error.clone(),
                runs: entry.runs.clone(),
            };
            out.push(claim_progress_to_pb(id, &progress));
        }
        out
    }

    /// After a successful report: the runs it carried are acknowledged,
    /// and entries of ended claims with nothing new are done.
    fn acknowledge(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            for entry in entries.values_mut() {
                let sent = std::mem::take(&mut entry.in_flight).min(entry.runs.len());
                entry.runs.drain(..sent);
                if entry.runs.is_empty() && entry.runs.capacity() > 0 {
                    entry.runs = Vec::new();
                }
            }
            entries.retain(|_, e| !e.finished || e.dirty);
        }
    }

    /// Marks `reports` dirty again after a failed send.
    fn restore(&self, reports: &[pb::JobProgress]) {
        if let Ok(mut entries) = self.entries.lock() {
            for r in reports {
                if let Some(entry) = entries.get_mut(&r.job_id) {
                    entry.dirty = true;
                }
            }
        }
    }
}

/// Where and how to reach control.
#[derive(Clone, Debug)]
pub struct ControlEndpoint {
    pub url: String,
    /// The token to send: `--token`, or the worker (else admin) token of
    /// `--token-file`, read again at each connection so a rotated file is
    /// picked up.
    pub token: TokenSource,
    /// TLS to control (an `https://` URL): the CA to trust and the
    /// certificate to present when control requires one (mTLS).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Takes progress reports in this process: standalone hands them straight
/// to its control's recorder, with no network, token or TLS between.
pub trait ProgressReceiver: Send + Sync {
    fn receive(&self, report: pb::ReportProgressRequest) -> Result<(), String>;
}

/// Where a worker's counters go.
#[derive(Clone)]
pub enum ReportTo {
    Control(ControlEndpoint),
    InProcess(Arc<dyn ProgressReceiver>),
}

impl std::fmt::Debug for ReportTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportTo::Control(control) => f.debug_tuple("Control").field(&control.url).finish(),
            ReportTo::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

impl ReportTo {
    fn describe(&self) -> &str {
        match self {
            ReportTo::Control(control) => &control.url,
            ReportTo::InProcess(_) => "in-process control",
        }
    }
}

/// A connection to control and the token sent on it.
struct Connection {
    client: WorkerServiceClient<tonic::transport::Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

/// Sends changed counters every [`REPORT_INTERVAL`] until `shutdown`, then
/// once more. Reconnects as needed; control being away loses nothing (the
/// totals are sent again).
pub async fn report_loop(table: ProgressTable, worker: String, to: ReportTo, shutdown: CancellationToken) {
    let mut connection: Option<Connection> = None;
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let reports = table.take_dirty();
        if reports.is_empty() {
            table.acknowledge();
        } else {
            let message = pb::ReportProgressRequest { worker: worker.clone(), jobs: reports.clone() };
            let sent = match &to {
                ReportTo::Control(control) => send(&mut connection, control, message).await,
                ReportTo::InProcess(receiver) => receiver.receive(message),
            };
            if let Err(error) = sent {
                tracing::warn!(%error, control = %to.describe(), jobs = reports.len(), "cannot report progress; will retry");
                connection = None;
                table.restore(&reports);
            } else {
                table.acknowledge();
            }
        }
        if last {
            return;
        }
    }
}

async fn connect(control: &ControlEndpoint) -> Result<Connection, String> {
    let authorization =
        match control.token.token_for(Role::Worker).map_err(|e| ingest_runtime::error_chain(e.as_ref()))? {
            Some(token) => Some(
                format!("Bearer {token}").parse().map_err(|_| "the token is not a valid header value".to_string())?,
            ),
            None => None,
        };
    // Bounded, so the last report on shutdown cannot hold the drain.
    let mut endpoint = tonic::transport::Endpoint::from_shared(control.url.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = &control.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| ingest_runtime::error_chain(&e))?;
    Ok(Connection { client: WorkerServiceClient::new(channel), authorization })
}

async fn send(
    connection: &mut Option<Connection>,
    control: &ControlEndpoint,
    message: pb::ReportProgressRequest,
) -> Result<(), String> {
    if connection.is_none() {
        *connection = Some(connect(control).await?);
    }
    let Some(connection) = connection.as_mut() else { return Err("no connection".to_string()) };
    // One short stream per report: simple, and a broken connection is
    // noticed at the next tick.
    let mut request = tonic::Request::new(tokio_stream::iter([message]));
    if let Some(value) = &connection.authorization {
        request.metadata_mut().insert("authorization", value.clone());
    }
    tokio::time::timeout(Duration::from_secs(10), connection.client.report_progress(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(report: &[pb::JobProgress]) -> Vec<u64> {
        report.iter().flat_map(|p| p.runs.iter().map(|r| r.seq)).collect()
    }

    #[test]
    fn runs_are_sent_until_acknowledged_and_capped_while_control_is_away() {
        let table = ProgressTable::default();
        let report = RunReport { items_fetched: 3, ..Default::default() };
        table.record("a", 7, now_millis() - 1_500, &report, Outcome::Success);
        table.record("a", 7, now_millis(), &report, Outcome::Failure("HTTP 503"));
        let first = table.take_dirty();
        assert_eq!(seqs(&first), [1, 2]);
        let failed = &first[0].runs[1];
        assert_eq!((failed.outcome, failed.message.as_str()), (pb::RunOutcome::Failed as i32, "HTTP 503"));
        assert!(first[0].runs[0].duration.is_some_and(|d| d.seconds >= 1), "{:?}", first[0].runs[0].duration);
        // The send failed: the same runs go again, with the one since.
        table.restore(&first);
        table.record("a", 7, now_millis(), &report, Outcome::Success);
        let second = table.take_dirty();
        assert_eq!(seqs(&second), [1, 2, 3]);
        // A run finished while that report was on its way is kept for the next.
        table.record("a", 7, now_millis(), &report, Outcome::Success);
        table.acknowledge();
        assert_eq!(seqs(&table.take_dirty()), [4]);
        table.acknowledge();
        assert_eq!(seqs(&table.take_dirty()), Vec::<u64>::new());
        // Control away for long: only the newest MAX_RUNS wait.
        for _ in 0..(MAX_RUNS + 10) {
            table.record("a", 7, now_millis(), &report, Outcome::Success);
        }
        let waiting = seqs(&table.take_dirty());
        assert_eq!(waiting.len(), MAX_RUNS);
        assert_eq!(waiting.last(), Some(&(4 + MAX_RUNS as u64 + 10)));
    }
}
