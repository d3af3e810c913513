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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use ingest_model::{JobState, StatsRecord, UnixMillis, WorkerRecord, derive_state, now_millis};
use ingest_runtime::Secret;
use ingest_runtime::metrics as m;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{Compare, CompareOp, EventKind, KeyValue, Revision, Store, StoreError, Txn, TxnOp, WatchSet};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::service::ControlService;
use crate::views::{JobView, apply_worker, live_types};

/// Bucket bounds of `ingest_job_consecutive_failures` (cumulative, plus +Inf).
const FAILURE_BUCKETS: [u32; 5] = [0, 1, 3, 10, 50];
/// Wait before following the jobs again after the stream ended.
const RESTART_DELAY: Duration = Duration::from_secs(2);
/// The gauges are updated at most this often.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
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
    pub fn upsert(&mut self, id: &str, job_type: &str, state: JobState, failures: u32) -> Option<Health> {
        match self.jobs.get_mut(id) {
            Some(held) => {
                let before = Health::of(held.1);
                if held.0 != job_type {
                    held.0 = job_type.to_string();
                }
                (held.1, held.2) = (state, failures);
                Some(before)
            }
            None => {
                self.jobs.insert(id.to_string(), (job_type.to_string(), state, failures));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.jobs.remove(id);
    }

    /// Forgets every job (a new load follows); the (type, state) pairs
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
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "following the jobs for alerts and gauges; starting again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

/// What the health of a job depends on, and nothing more: the follower
/// reads only specs, claims, counters and workers (never checkpoints), and
/// decodes of a spec only its type and whether it is paused. Each part
/// remembers the revision it was read at, so replays never go backwards.
#[derive(Default)]
struct Bits {
    spec: Option<(SpecBits, Revision)>,
    owner: Option<Revision>,
    stats: Option<(StatsRecord, Revision)>,
}

#[derive(Deserialize)]
struct SpecBits {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default)]
    paused: bool,
}

impl Bits {
    /// The job's type, state (derived as every view derives it) and
    /// failures in a row; `None` without a spec.
    fn state(&self, live: &HashSet<String>) -> Option<(&str, JobState, u32)> {
        let (spec, _) = self.spec.as_ref()?;
        let stats = self.stats.as_ref().map(|(s, _)| s);
        let owner = self.owner.map(|_| "");
        let (state, _) = derive_state(&spec.job_type, spec.paused, owner, stats, live.contains(&spec.job_type));
        Some((spec.job_type.as_str(), state, stats.map_or(0, |s| s.consecutive_failures)))
    }

    /// Applies one key's change; false when it is older than what is held.
    fn apply(&mut self, kind: KeyKind, kv: &KeyValue, deleted: bool) -> bool {
        let rev = kv.mod_revision;
        let newer = |held: Option<Revision>| held.is_none_or(|h| rev > h);
        match kind {
            KeyKind::Job if newer(self.spec.as_ref().map(|s| s.1)) => {
                self.spec = if deleted { None } else { serde_json::from_slice(&kv.value).ok().map(|s| (s, rev)) };
                true
            }
            KeyKind::Owner if newer(self.owner) => {
                self.owner = (!deleted).then_some(rev);
                true
            }
            KeyKind::Stats if newer(self.stats.as_ref().map(|s| s.1)) => {
                self.stats = if deleted { None } else { serde_json::from_slice(&kv.value).ok().map(|s| (s, rev)) };
                true
            }
            _ => false,
        }
    }
}

async fn follow(
    service: &ControlService,
    notifier: Option<&Notifier>,
    tally: &mut Tally,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let store = service.store().as_ref();
    let keys = service.keys();
    // Alerts as stored: the load is compared with them, so transitions that
    // happened while no control server watched are caught up.
    let mut stored = match notifier {
        Some(notifier) => notifier.stored().await.map_err(|e| e.to_string())?,
        None => HashMap::new(),
    };
    let before = store.current_revision().await.map_err(|e| e.to_string())?;
    let mut jobs: HashMap<String, Bits> = HashMap::new();
    let mut workers: BTreeMap<String, WorkerRecord> = BTreeMap::new();
    let followed = [KeyKind::Job, KeyKind::Owner, KeyKind::Stats, KeyKind::Worker];
    for kind in followed {
        let kvs = ingest_store::scan_prefix(store, &keys.prefix(kind)).await.map_err(|e| e.to_string())?;
        for kv in &kvs {
            let Some((_, id)) = keys.parse(&kv.key) else { continue };
            if kind == KeyKind::Worker {
                if let Ok(worker) = serde_json::from_slice::<WorkerRecord>(&kv.value) {
                    workers.insert(id.to_string(), worker);
                }
            } else {
                jobs.entry(id.to_string()).or_default().apply(kind, kv, false);
            }
        }
    }
    let mut live = live_types(&workers);
    tally.clear();
    for (id, bits) in &jobs {
        let Some((job_type, state, failures)) = bits.state(&live) else { continue };
        tally.upsert(id, job_type, state, failures);
        let health = Health::of(state);
        if stored.remove(id).unwrap_or(Health::Ok) != health
            && let Some(notifier) = notifier
        {
            notifier.changed(service, id, health).await;
        }
    }
    drop(stored);
    tally.publish();
    // Those prefixes only: not the checkpoints and run records every run writes.
    let mut watch = WatchSet::new(followed.map(|kind| keys.prefix(kind)), before + 1);
    watch.open(store).await.map_err(|e| e.to_string())?;
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = publish.tick(), if dirty => {
                tally.publish();
                dirty = false;
                continue;
            }
            batch = watch.next() => match batch {
                Some(Ok(batch)) => batch,
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the store's watch ended".to_string()),
            },
        };
        let mut touched: Vec<String> = Vec::new();
        let mut workers_changed = false;
        for event in &batch.events {
            let Some((kind, id)) = keys.parse(&event.kv.key) else { continue };
            let deleted = event.kind == EventKind::Delete;
            match kind {
                KeyKind::Worker => {
                    workers_changed = true;
                    apply_worker(&mut workers, id, &event.kv, deleted);
                }
                KeyKind::Job | KeyKind::Owner | KeyKind::Stats
                    if jobs.entry(id.to_string()).or_default().apply(kind, &event.kv, deleted) =>
                {
                    touched.push(id.to_string());
                }
                _ => {}
            }
        }
        if workers_changed {
            let now_live = live_types(&workers);
            if now_live != live {
                live = now_live;
                touched = jobs.keys().cloned().collect();
            }
        }
        for id in touched {
            let Some(bits) = jobs.get(&id) else { continue };
            let Some((job_type, state, failures)) = bits.state(&live) else {
                tally.remove(&id);
                if bits.spec.is_none() && bits.owner.is_none() && bits.stats.is_none() {
                    jobs.remove(&id);
                }
                dirty = true;
                continue;
            };
            let health = Health::of(state);
            let before = tally.upsert(&id, job_type, state, failures);
            dirty = true;
            // A new job is told of only when it starts out alerted.
            let changed = before.map_or(health != Health::Ok, |b| b != health);
            if changed && let Some(notifier) = notifier {
                notifier.changed(service, &id, health).await;
            }
        }
    }
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

    /// A job's health changed to `health`: its view (for the webhook) is
    /// read, then recorded as below. Errors are logged.
    async fn changed(&self, service: &ControlService, id: &str, health: Health) {
        let observed = match service.get_job(id).await {
            // Its health as read now (it may have moved on since the event).
            Ok(view) => self.observe(&view, Health::of(view.status.state)).await.map_err(|e| e.to_string()),
            Err(crate::error::ControlError::NotFound { .. }) => Ok(()), // deleted meanwhile
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = observed {
            tracing::warn!(job = %id, ?health, %error, "cannot record the job's alert state");
        }
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
    use super::*;

    #[test]
    fn the_tally_counts_by_type_and_state_and_buckets_failures() {
        let mut tally = Tally::default();
        assert_eq!(tally.upsert("a", "rss", JobState::Running, 0), None);
        tally.upsert("b", "rss", JobState::Failing, 2);
        tally.upsert("c", "demo", JobState::Failing, 12);
        assert_eq!(tally.upsert("b", "rss", JobState::Failing, 3), Some(Health::Failing));
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
    fn a_job_s_bits_give_the_state_every_view_gives() {
        let kv = |value: serde_json::Value, rev: Revision| KeyValue {
            key: String::new(),
            value: serde_json::to_vec(&value).expect("json"),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        let live: HashSet<String> = ["rss".to_string()].into();
        let mut bits = Bits::default();
        assert!(bits.state(&live).is_none(), "no spec, no job");
        let spec = json!({"type": "rss", "paused": false, "name": "x", "params": {"url": "https://a.test/"}});
        assert!(bits.apply(KeyKind::Job, &kv(spec.clone(), 5), false));
        assert_eq!(bits.state(&live).map(|s| s.1), Some(JobState::Pending));
        assert_eq!(bits.state(&HashSet::new()).map(|s| s.1), Some(JobState::Unschedulable));
        bits.apply(KeyKind::Owner, &kv(json!({"worker": "w1"}), 6), false);
        assert_eq!(bits.state(&live).map(|s| s.1), Some(JobState::Running));
        let failing = json!({"last_error": {"time": 10, "message": "boom"}, "consecutive_failures": 2});
        bits.apply(KeyKind::Stats, &kv(failing, 7), false);
        assert_eq!(bits.state(&live), Some(("rss", JobState::Failing, 2)));
        // An older event does not undo a newer one.
        assert!(!bits.apply(KeyKind::Stats, &kv(json!({}), 6), false));
        assert_eq!(bits.state(&live).map(|s| s.1), Some(JobState::Failing));
        let paused = json!({"type": "rss", "paused": true});
        bits.apply(KeyKind::Job, &kv(paused, 8), false);
        assert_eq!(bits.state(&live).map(|s| s.1), Some(JobState::Paused));
        bits.apply(KeyKind::Job, &kv(json!(null), 9), true);
        assert!(bits.state(&live).is_none(), "deleted");
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
