//! Cluster membership: one lease per worker, a registration key under it, the
//! job types' parameter specs published for control, and a keepalive loop
//! that tracks the local lease deadline on a monotonic clock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ingest_model::{JobTypeSpec, WorkerRecord, WorkerState, now_millis};
use ingest_store::keys::Keys;
use ingest_store::{Compare, CompareOp, LeaseId, Store, StoreError, Txn, TxnOp};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait between two registration attempts while the store is away.
const MAX_REGISTER_BACKOFF: Duration = Duration::from_secs(5);

/// The worker's current lease and the instant by which it must have stopped
/// every job unless the lease is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: LeaseId,
    pub deadline: Instant,
    /// When the worker registered under this lease.
    pub registered: Instant,
}

impl LeaseState {
    /// A lease registered now, good until `deadline`.
    pub fn until(lease: LeaseId, deadline: Instant) -> Self {
        Self { lease, deadline, registered: Instant::now() }
    }
}

/// How a worker presents itself to the cluster.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique among live workers.
    pub name: String,
    /// Relative share of jobs this worker should take.
    pub weight: f64,
    /// Lease time to live: a dead worker's jobs are free after this long.
    pub lease_ttl: Duration,
    /// The job types it runs (empty: every type of the catalogue).
    pub job_types: Vec<String>,
}

/// A worker's live membership in the cluster.
pub struct Membership {
    store: Arc<dyn Store>,
    keys: Keys,
    config: WorkerConfig,
    types: Vec<JobTypeSpec>,
}

impl Membership {
    pub fn new(store: Arc<dyn Store>, keys: Keys, config: WorkerConfig, types: Vec<JobTypeSpec>) -> Self {
        Self { store, keys, config, types }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Registers, and keeps the registration alive until `shutdown`; then
    /// revokes the lease, which removes it and every claim under it at once.
    /// The current lease is published on `lease_tx`. The job types are
    /// published before, once ([`publish_types`](Self::publish_types)): a
    /// second time here cost ten workers starting at once eight more
    /// linearizable reads each while they loaded 100 000 specs (registered
    /// 2.2 s after spawn instead of 0.6-1.1 s).
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        lease_tx: watch::Sender<Option<LeaseState>>,
    ) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            let Some(lease) = self.register(&shutdown).await? else { break };
            self.keep_alive(lease, &shutdown, &lease_tx).await;
            lease_tx.send_replace(None);
            if shutdown.is_cancelled() {
                match self.store.lease_revoke(lease).await {
                    Ok(()) => tracing::info!(worker = %self.config.name, lease, "lease revoked"),
                    Err(error) => {
                        tracing::warn!(worker = %self.config.name, %error, "could not revoke lease; it will expire")
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes each type's spec under `types/<name>` unless already there
    /// as is. Specs are not leased: jobs of a type whose workers are all gone
    /// still validate, and show as unschedulable.
    pub async fn publish_types(&self) -> anyhow::Result<()> {
        for spec in &self.types {
            let key = self.keys.job_type(&spec.name);
            let value = serde_json::to_vec(spec).context("encoding a job type spec")?;
            let current = self.store.get(&key).await.context("reading published job types")?;
            if current.is_some_and(|kv| kv.value == value) {
                continue;
            }
            let revision = self.store.put(&key, value, 0).await.context("publishing job types")?;
            tracing::info!(job_type = %spec.name, revision, "job type published");
        }
        Ok(())
    }

    /// Marks this worker draining: peers stop ranking it for any job and take
    /// over what it releases. Guarded by the lease, so a stale call is a no-op.
    pub async fn set_draining(&self, lease: LeaseId, types: &[String]) -> anyhow::Result<()> {
        let record = WorkerRecord {
            name: self.config.name.clone(),
            state: WorkerState::Draining,
            weight: self.config.weight,
            types: types.to_vec(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: now_millis(),
        };
        let key = self.keys.worker(&self.config.name);
        let value = serde_json::to_vec(&record).context("encoding the worker record")?;
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put_with_lease(key, value, lease)]);
        self.store.txn(txn).await.context("marking the worker draining")?;
        tracing::info!(worker = %self.config.name, "worker draining");
        Ok(())
    }

    /// Grants a lease and creates `workers/<name>` under it. Retries while
    /// the name is held by a previous incarnation whose lease has not expired
    /// yet (fails if a live worker keeps it longer than that), and while the
    /// store is unavailable, with backoff. `None` when shut down meanwhile.
    async fn register(&self, shutdown: &CancellationToken) -> anyhow::Result<Option<LeaseId>> {
        let name = &self.config.name;
        let record = WorkerRecord {
            name: name.clone(),
            state: WorkerState::Active,
            weight: self.config.weight,
            types: self.types.iter().map(|t| t.name.clone()).collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: now_millis(),
        };
        let value = serde_json::to_vec(&record).context("encoding the worker record")?;
        let key = self.keys.worker(name);
        // Counted from the first refusal, so time spent waiting out an
        // outage is not held against a name that is merely slow to expire.
        let mut give_up: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = async {
                let lease = self.store.lease_grant(self.config.lease_ttl).await?;
                let txn = Txn::new().when([Compare::absent(key.clone())]).and_then([TxnOp::put_with_lease(
                    key.clone(),
                    value.clone(),
                    lease,
                )]);
                match self.store.txn(txn).await {
                    Ok(response) => Ok((lease, response)),
                    Err(error) => {
                        let _ = self.store.lease_revoke(lease).await;
                        Err(error)
                    }
                }
            };
            let wait = match attempt.await {
                Ok((lease, response)) if response.succeeded => {
                    tracing::info!(worker = %name, lease, revision = response.revision, types = ?record.types, "worker registered");
                    return Ok(Some(lease));
                }
                Ok((lease, _)) => {
                    let _ = self.store.lease_revoke(lease).await;
                    let deadline =
                        *give_up.get_or_insert_with(|| Instant::now() + self.config.lease_ttl + Duration::from_secs(2));
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "worker name '{name}' is held by another live worker; give each worker a unique --name"
                        );
                    }
                    tracing::warn!(worker = %name, "worker name still registered (previous run?); waiting for its lease to expire");
                    Duration::from_secs(1)
                }
                // The store is away or the new lease died young: try again,
                // more slowly each time; a worker does not exit for an outage.
                Err(error @ (StoreError::Unavailable(_) | StoreError::LeaseNotFound(_))) => {
                    tracing::warn!(worker = %name, %error, retry_in = ?backoff, "cannot register; will retry");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_REGISTER_BACKOFF);
                    wait
                }
                Err(error) => return Err(anyhow::Error::new(error).context("registering the worker")),
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the lease every TTL/3 (every TTL/20 after a failure) until
    /// shutdown or until the lease is gone. The local deadline (send time of the last successful keepalive
    /// + TTL − margin) is when this worker must have stopped all its jobs.
    async fn keep_alive(
        &self,
        lease: LeaseId,
        shutdown: &CancellationToken,
        lease_tx: &watch::Sender<Option<LeaseState>>,
    ) {
        let ttl = self.config.lease_ttl;
        let margin = (ttl / 4).min(Duration::from_secs(2));
        let registered = Instant::now();
        let mut deadline = registered + ttl - margin;
        lease_tx.send_replace(Some(LeaseState { lease, deadline, registered }));
        let mut ticker = tokio::time::interval(ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let scheduled = tokio::select! {
                () = shutdown.cancelled() => return,
                scheduled = ticker.tick() => scheduled,
            };
            let sent = Instant::now();
            let lag = sent.saturating_duration_since(scheduled).as_secs_f64();
            metrics::histogram!(ingest_runtime::metrics::LEASE_RENEWAL_LAG_SECONDS).record(lag);
            match self.store.lease_keep_alive(lease).await {
                Ok(granted) => {
                    deadline = sent + granted.saturating_sub(margin);
                    lease_tx.send_replace(Some(LeaseState { lease, deadline, registered }));
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!(worker = %self.config.name, lease, "lease expired; registering again");
                    return;
                }
                Err(error) => {
                    metrics::counter!(ingest_runtime::metrics::LEASE_RENEWAL_FAILURES).increment(1);
                    let past_deadline = Instant::now() >= deadline;
                    tracing::warn!(worker = %self.config.name, lease, %error, past_deadline, "lease keepalive failed");
                    // Again soon, not a third of the TTL later: etcd refuses
                    // renewals while its apply lags (for a second or two
                    // under a burst of writes), and waiting 3.3 s of a 10 s
                    // TTL after each refusal lost leases that one more
                    // attempt would have kept.
                    ticker.reset_after(ttl / 20);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use ingest_store::{EmbeddedStore, StoreWrapper};

    use super::*;

    /// The embedded store, whose lease grants (renewals) fail (Unavailable)
    /// while `failing_grants` (`failing_renewals`) is above zero.
    struct Flapping {
        inner: EmbeddedStore,
        failing_grants: AtomicUsize,
        grants: AtomicUsize,
        failing_renewals: AtomicUsize,
    }

    impl Flapping {
        fn new(inner: EmbeddedStore, failing_renewals: usize) -> Arc<Self> {
            Arc::new(Self {
                inner,
                failing_grants: AtomicUsize::new(0),
                grants: AtomicUsize::new(0),
                failing_renewals: AtomicUsize::new(failing_renewals),
            })
        }
    }

    /// A membership of `w1` with `ttl` running on `store`, once registered:
    /// its task, its lease updates, its shutdown and its first lease.
    async fn registered(
        store: &Arc<Flapping>,
        ttl: Duration,
    ) -> (tokio::task::JoinHandle<anyhow::Result<()>>, watch::Receiver<Option<LeaseState>>, CancellationToken, LeaseState)
    {
        let config = WorkerConfig { name: "w1".into(), weight: 1.0, lease_ttl: ttl, job_types: Vec::new() };
        let membership = Arc::new(Membership::new(store.clone(), Keys::new("/t/"), config, Vec::new()));
        let (lease_tx, mut lease_rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { membership.run(shutdown, lease_tx).await }
        });
        let first = loop {
            lease_rx.changed().await.expect("running");
            if let Some(state) = *lease_rx.borrow() {
                break state;
            }
        };
        (run, lease_rx, shutdown, first)
    }

    #[async_trait]
    impl StoreWrapper for Flapping {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }

        async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
            self.grants.fetch_add(1, Ordering::SeqCst);
            let failing = self.failing_grants.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_grants.store(failing - 1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("etcd is restarting".into()));
            }
            self.inner.lease_grant(ttl).await
        }

        async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
            let failing = self.failing_renewals.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_renewals.store(failing - 1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("waiting for the applied index took too long".into()));
            }
            self.inner.lease_keep_alive(lease).await
        }
    }

    /// Refused renewals are tried again within a twentieth of the TTL, not
    /// a third: three refusals in a row still leave the lease renewed before
    /// its first deadline.
    #[tokio::test]
    async fn a_refused_renewal_is_tried_again_soon() {
        let store = Flapping::new(EmbeddedStore::in_memory().expect("store"), 3);
        let (run, mut lease_rx, shutdown, first) = registered(&store, Duration::from_secs(2)).await;
        // Renewals at 0.67 s (refused), then every 0.1 s: renewed by ≈ 1 s,
        // before the first deadline (1.5 s; waiting a tick per refusal
        // renewed at 2.7 s).
        let renewed = tokio::time::timeout_at(first.deadline, async {
            loop {
                lease_rx.changed().await.expect("running");
                if let Some(state) = (*lease_rx.borrow()).filter(|s| s.deadline > first.deadline) {
                    break state;
                }
            }
        })
        .await
        .expect("renewed before the first deadline");
        assert_eq!((renewed.lease, store.failing_renewals.load(Ordering::SeqCst)), (first.lease, 0));
        shutdown.cancel();
        run.await.expect("join").expect("clean exit");
    }

    /// A lease lost while the store flaps: registering again meets
    /// Unavailable a few times, and the worker stays in the cluster instead
    /// of exiting.
    #[tokio::test]
    async fn registering_again_survives_a_flapping_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Flapping::new(EmbeddedStore::open(dir.path()).expect("store"), 0);
        let (run, mut lease_rx, shutdown, first) = registered(&store, Duration::from_secs(1)).await;
        let first = first.lease;
        // The lease is lost, and the next three grants fail.
        store.failing_grants.store(3, Ordering::SeqCst);
        store.inner.lease_revoke(first).await.expect("revoke");
        let second = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                lease_rx.changed().await.expect("running");
                if let Some(state) = (*lease_rx.borrow()).filter(|s| s.lease != first) {
                    break state.lease;
                }
            }
        })
        .await
        .expect("registered again after the outage");
        assert_ne!(second, first);
        assert!(!run.is_finished(), "membership must not end on a transient error");
        assert!(store.grants.load(Ordering::SeqCst) >= 5, "one grant, three refused, one more");
        shutdown.cancel();
        run.await.expect("join").expect("clean exit");
    }
}
