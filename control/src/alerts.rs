//! Failing jobs, visible to machines. Every control server follows the jobs
//! (one `WatchJobs` stream of its own) and
//!
//! - exports `ingest_jobs{type,state}` and the distribution of consecutive
//!   failures `ingest_job_consecutive_failures{le}` as gauges (the same
//!   cluster-wide figures on every control server: aggregate with `max`);
//! - with `--notify-url`, posts a webhook when a job becomes failing or
//!   unschedulable and when it recovers. Once per transition cluster-wide:
//!   the first control server to move `alerts/<id>` (present while the job is
//!   alerted, by a transaction guarded on the revision it read) sends it; the
//!   others see the key already there. A control server that starts catches
//!   up with transitions no one saw (the key disagrees with the job's state).
//!
//! Deliveries: a JSON body, `x-ingest-event`, and with `--notify-secret-file`
//! `x-ingest-signature: sha256=<hex HMAC-SHA256 of the body>`; retried with
//! backoff on network errors, 408, 429 and 5xx (6 attempts over about a
//! minute), given up on other answers; at most 8 at once, 1 000 waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use ingest_model::{JobState, UnixMillis, now_millis};
use ingest_runtime::Secret;
use ingest_runtime::metrics as m;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{Compare, CompareOp, Revision, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::service::{ControlService, JobFilter};
use crate::views::JobView;
use crate::watch::{JobEvent, WatchUpdate, watch_jobs};

/// Bucket bounds of `ingest_job_consecutive_failures` (cumulative, plus +Inf).
const FAILURE_BUCKETS: [u32; 5] = [0, 1, 3, 10, 50];
/// Wait before following the jobs again after the stream ended.
const RESTART_DELAY: Duration = Duration::from_secs(2);
const DELIVERY_ATTEMPTS: u32 = 6;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_WAITING: usize = 1000;
const MAX_DELIVERING: usize = 8;

/// Where webhooks go (`--notify-url`) and the key that signs them.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub url: url::Url,
    pub secret: Option<Secret>,
    /// First retry delay (doubled at each attempt); tests shorten it.
    pub retry_delay: Duration,
}

impl NotifyConfig {
    pub fn new(url: url::Url, secret: Option<Secret>) -> Self {
        Self { url, secret, retry_delay: Duration::from_secs(1) }
    }
}

/// What operators are told about: a job is fine, failing or unschedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Failing,
    Unschedulable,
}

impl Health {
    pub fn of(state: JobState) -> Self {
        match state {
            JobState::Failing => Self::Failing,
            JobState::Unschedulable => Self::Unschedulable,
            JobState::Pending | JobState::Running | JobState::Paused => Self::Ok,
        }
    }

    fn event(self) -> &'static str {
        match self {
            Self::Ok => "job.recovered",
            Self::Failing => "job.failing",
            Self::Unschedulable => "job.unschedulable",
        }
    }
}

/// What `alerts/<id>` holds while a job is alerted.
#[derive(Debug, Serialize, Deserialize)]
struct AlertRecord {
    health: Health,
    since: UnixMillis,
}

/// The jobs by type, state and consecutive failures: the gauges' figures.
#[derive(Default)]
pub struct Tally {
    jobs: HashMap<String, (String, JobState, u32)>,
    /// Every (type, state) ever counted, so one that empties reads 0.
    seen: BTreeSet<(String, &'static str)>,
}

impl Tally {
    /// Counts a job as it is now; returns its health before, if known.
    pub fn upsert(&mut self, view: &JobView) -> Option<Health> {
        let entry = (view.record.job_type.clone(), view.status.state, view.status.stats.consecutive_failures);
        self.jobs.insert(view.record.id.clone(), entry).map(|(_, state, _)| Health::of(state))
    }

    pub fn remove(&mut self, id: &str) {
        self.jobs.remove(id);
    }

    /// Forgets every job (a new snapshot follows); the (type, state) pairs
    /// seen stay, to read 0.
    fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Jobs per (type, state), including pairs that emptied.
    pub fn by_type_and_state(&mut self) -> BTreeMap<(String, &'static str), u64> {
        let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for (job_type, state, _) in self.jobs.values() {
            *counts.entry((job_type.clone(), state_label(*state))).or_default() += 1;
        }
        self.seen.extend(counts.keys().cloned());
        self.seen.iter().map(|key| (key.clone(), counts.get(key).copied().unwrap_or(0))).collect()
    }

    /// Jobs with at most `le` consecutive failures, for each bucket bound
    /// (cumulative, as Prometheus buckets are), then all of them (+Inf).
    pub fn failure_buckets(&self) -> Vec<(String, u64)> {
        let mut buckets: Vec<(String, u64)> = FAILURE_BUCKETS
            .iter()
            .map(|le| (le.to_string(), self.jobs.values().filter(|(_, _, f)| f <= le).count() as u64))
            .collect();
        buckets.push(("+Inf".to_string(), self.jobs.len() as u64));
        buckets
    }

    fn publish(&mut self) {
        for ((job_type, state), n) in self.by_type_and_state() {
            metrics::gauge!(m::JOBS, "type" => job_type, "state" => state).set(n as f64);
        }
        for (le, n) in self.failure_buckets() {
            metrics::gauge!(m::JOB_CONSECUTIVE_FAILURES, "le" => le).set(n as f64);
        }
    }
}

fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Paused => "paused",
        JobState::Unschedulable => "unschedulable",
        JobState::Failing => "failing",
    }
}

/// Follows the jobs until `shutdown`: keeps the gauges, and tells
/// `notifier` (when there is one) of every change of a job's health.
pub async fn run(service: ControlService, notifier: Option<Arc<Notifier>>, shutdown: CancellationToken) {
    let mut tally = Tally::default();
    while !shutdown.is_cancelled() {
        match follow(&service, notifier.as_deref(), &mut tally, &shutdown).await {
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, "following the jobs for alerts and gauges; starting again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

async fn follow(
    service: &ControlService,
    notifier: Option<&Notifier>,
    tally: &mut Tally,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    // Alerts as stored: the snapshot is compared with them, so transitions
    // that happened while no control server watched are caught up.
    let mut stored = match notifier {
        Some(notifier) => notifier.stored().await.map_err(|e| e.to_string())?,
        None => HashMap::new(),
    };
    let mut rx =
        watch_jobs(service, JobFilter::default(), 0, shutdown.child_token()).await.map_err(|e| e.to_string())?;
    tally.clear();
    while let Some(update) = rx.recv().await {
        let WatchUpdate { events, snapshot, synced, .. } = update.map_err(|e| e.to_string())?;
        for event in events {
            match event {
                JobEvent::Upserted(view) => {
                    let health = Health::of(view.status.state);
                    let before = tally.upsert(&view);
                    let changed = if snapshot {
                        stored.remove(&view.record.id).unwrap_or(Health::Ok) != health
                    } else {
                        before != Some(health)
                    };
                    if let Some(notifier) = notifier.filter(|_| changed)
                        && let Err(error) = notifier.observe(&view, health).await
                    {
                        tracing::warn!(job = %view.record.id, %error, "cannot record the job's alert state");
                    }
                }
                JobEvent::Deleted(id) => tally.remove(&id),
            }
        }
        if synced {
            // Alerts of jobs that are gone: DeleteJob removes them, this
            // only tidies up after older versions.
            stored.clear();
        }
        if !snapshot || synced {
            tally.publish();
        }
    }
    Ok(())
}

/// Posts webhooks for health changes, once per change cluster-wide.
pub struct Notifier {
    store: Arc<dyn Store>,
    keys: Keys,
    queue: mpsc::Sender<Notice>,
}

/// One webhook to deliver.
struct Notice {
    event: &'static str,
    body: Vec<u8>,
}

impl Notifier {
    /// Starts delivering in the background until `shutdown`.
    pub fn start(service: &ControlService, config: NotifyConfig, shutdown: CancellationToken) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(MAX_WAITING);
        tokio::spawn(deliver_all(config, rx, shutdown));
        Arc::new(Self { store: service.store().clone(), keys: service.keys().clone(), queue })
    }

    /// Every stored alert, by job id.
    async fn stored(&self) -> Result<HashMap<String, Health>, StoreError> {
        let kvs = ingest_store::scan_prefix(self.store.as_ref(), &self.keys.prefix(KeyKind::Alert)).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let (_, id) = self.keys.parse(&kv.key)?;
                let record: AlertRecord = serde_json::from_slice(&kv.value).ok()?;
                Some((id.to_string(), record.health))
            })
            .collect())
    }

    /// The job's health is now `health`: record it, and if this control
    /// server is the one that moved it, send the webhook.
    async fn observe(&self, view: &JobView, health: Health) -> Result<(), StoreError> {
        let key = self.keys.alert(&view.record.id);
        let (held, revision) = match self.store.get(&key).await? {
            Some(kv) => (serde_json::from_slice::<AlertRecord>(&kv.value).ok().map(|r| r.health), kv.mod_revision),
            None => (None, 0),
        };
        if held.unwrap_or(Health::Ok) == health {
            return Ok(()); // told already (by another control server, or before)
        }
        let guard = Compare::mod_revision(key.clone(), CompareOp::Equal, revision);
        // Never recreate the alert of a job deleted meanwhile.
        let exists = Compare::create_revision(self.keys.job(&view.record.id), CompareOp::Greater, 0);
        let op = match health {
            Health::Ok => TxnOp::delete(key),
            _ => {
                let record = AlertRecord { health, since: now_millis() };
                let value = serde_json::to_vec(&record).map_err(|e| StoreError::Other(e.to_string()))?;
                TxnOp::put(key, value)
            }
        };
        let response = self.store.txn(Txn::new().when([guard, exists]).and_then([op])).await?;
        if !response.succeeded {
            return Ok(()); // another control server got there first
        }
        let event = health.event();
        let notice = Notice { event, body: body(event, view, response.revision) };
        tracing::info!(job = %view.record.id, event, "job health changed; notifying");
        if self.queue.try_send(notice).is_err() {
            metrics::counter!(m::NOTIFICATIONS, "event" => event, "outcome" => "dropped").increment(1);
            tracing::warn!(job = %view.record.id, event, "too many webhooks waiting; this one is dropped");
        }
        Ok(())
    }
}

fn body(event: &str, view: &JobView, revision: Revision) -> Vec<u8> {
    // RFC 3339, as the proto3 JSON mapping writes timestamps.
    let time = |ms: UnixMillis| serde_json::to_value(ingest_proto::convert::timestamp(ms)).unwrap_or_default();
    let stats = &view.status.stats;
    let value = json!({
        "event": event,
        "time": time(now_millis()),
        "revision": revision,
        "job": {
            "id": view.record.id,
            "name": view.record.name,
            "type": view.record.job_type,
            "labels": view.record.labels,
        },
        "state": state_label(view.status.state),
        "reason": view.status.reason,
        "owner": view.status.owner,
        "consecutive_failures": stats.consecutive_failures,
        "last_error": stats.last_error.as_ref().map(|e| json!({"time": time(e.time), "message": e.message})),
        "last_success_time": stats.last_success.map(time),
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The signature header's value: `sha256=` and the HMAC-SHA256 of `body`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new(); // HMAC takes keys of any length
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver_all(config: NotifyConfig, mut rx: mpsc::Receiver<Notice>, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).user_agent(user_agent()).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; no webhook will be sent");
            return;
        }
    };
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_DELIVERING));
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            notice = rx.recv() => match notice { Some(n) => n, None => return },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (client, config, shutdown) = (client.clone(), config.clone(), shutdown.clone());
        tokio::spawn(async move {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => "abandoned",
                outcome = deliver(&client, &config, &notice) => outcome,
            };
            metrics::counter!(m::NOTIFICATIONS, "event" => notice.event, "outcome" => outcome).increment(1);
            drop(slot);
        });
    }
}

/// Sends one webhook, retrying what may pass later; "sent" or "failed".
async fn deliver(client: &reqwest::Client, config: &NotifyConfig, notice: &Notice) -> &'static str {
    let mut delay = config.retry_delay;
    for attempt in 1..=DELIVERY_ATTEMPTS {
        let mut request = client
            .post(config.url.clone())
            .header("content-type", "application/json")
            .header("x-ingest-event", notice.event)
            .body(notice.body.clone());
        if let Some(secret) = &config.secret {
            request = request.header("x-ingest-signature", signature(secret, &notice.body));
        }
        let retry = match request.send().await {
            Ok(response) if response.status().is_success() => return "sent",
            Ok(response) => {
                let status = response.status();
                let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                tracing::warn!(event = notice.event, %status, attempt, retry, "webhook refused");
                retry
            }
            Err(error) => {
                tracing::warn!(event = notice.event, error = %ingest_runtime::error_chain(&error), attempt, "webhook not delivered");
                true
            }
        };
        if !retry || attempt == DELIVERY_ATTEMPTS {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    "failed"
}

fn user_agent() -> String {
    format!("ingest/{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use ingest_model::{JobRecord, StatsRecord};

    use super::*;
    use crate::views::JobStatusView;

    fn view(id: &str, job_type: &str, state: JobState, failures: u32) -> JobView {
        let record: JobRecord = serde_json::from_value(json!({
            "id": id, "name": id, "type": job_type, "params": {}, "interval": 60000, "paused": false,
            "create_time": 0, "update_time": 0,
        }))
        .expect("record");
        let stats = StatsRecord { consecutive_failures: failures, ..Default::default() };
        let status = JobStatusView {
            state,
            reason: String::new(),
            owner: None,
            epoch: 0,
            stats,
            next_run: None,
            checkpoint: None,
        };
        JobView { record, revision: 1, status }
    }

    #[test]
    fn the_tally_counts_by_type_and_state_and_buckets_failures() {
        let mut tally = Tally::default();
        assert_eq!(tally.upsert(&view("a", "rss", JobState::Running, 0)), None);
        tally.upsert(&view("b", "rss", JobState::Failing, 2));
        tally.upsert(&view("c", "demo", JobState::Failing, 12));
        assert_eq!(tally.upsert(&view("b", "rss", JobState::Failing, 3)), Some(Health::Failing));
        let counts = tally.by_type_and_state();
        assert_eq!(counts.get(&("rss".to_string(), "running")), Some(&1));
        assert_eq!(counts.get(&("rss".to_string(), "failing")), Some(&1));
        assert_eq!(counts.get(&("demo".to_string(), "failing")), Some(&1));
        let buckets: Vec<(String, u64)> = tally.failure_buckets();
        let expected = [("0", 1), ("1", 1), ("3", 2), ("10", 2), ("50", 3), ("+Inf", 3)];
        assert_eq!(buckets, expected.map(|(le, n)| (le.to_string(), n)));
        // A pair that empties reads 0 rather than vanishing.
        tally.remove("c");
        assert_eq!(tally.by_type_and_state().get(&("demo".to_string(), "failing")), Some(&0));
    }

    #[test]
    fn webhooks_are_signed_with_hmac_sha256() {
        // RFC 4231 test case 2.
        let secret = Secret::new("Jefe".to_string());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
