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

/// The worker's current lease and the instant by which it must have stopped
/// every job unless the lease is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: LeaseId,
    pub deadline: Instant,
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

    /// Publishes the job types, registers, and keeps the registration alive
    /// until `shutdown`; then revokes the lease, which removes it and every
    /// claim under it at once. The current lease is published on `lease_tx`.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        lease_tx: watch::Sender<Option<LeaseState>>,
    ) -> anyhow::Result<()> {
        self.publish_types().await?;
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
    /// yet; fails if a live worker keeps it longer than that. `None` when
    /// shut down meanwhile.
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
        let give_up = Instant::now() + self.config.lease_ttl + Duration::from_secs(2);
        loop {
            let lease = self.store.lease_grant(self.config.lease_ttl).await.context("granting a lease")?;
            let txn = Txn::new().when([Compare::absent(key.clone())]).and_then([TxnOp::put_with_lease(
                key.clone(),
                value.clone(),
                lease,
            )]);
            let response = self.store.txn(txn).await.context("registering the worker")?;
            if response.succeeded {
                tracing::info!(worker = %name, lease, revision = response.revision, types = ?record.types, "worker registered");
                return Ok(Some(lease));
            }
            let _ = self.store.lease_revoke(lease).await;
            if Instant::now() > give_up {
                anyhow::bail!("worker name '{name}' is held by another live worker; give each worker a unique --name");
            }
            tracing::warn!(worker = %name, "worker name still registered (previous run?); waiting for its lease to expire");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Renews the lease every TTL/3 until shutdown or until the lease is
    /// gone. The local deadline (send time of the last successful keepalive
    /// + TTL − margin) is when this worker must have stopped all its jobs.
    async fn keep_alive(
        &self,
        lease: LeaseId,
        shutdown: &CancellationToken,
        lease_tx: &watch::Sender<Option<LeaseState>>,
    ) {
        let ttl = self.config.lease_ttl;
        let margin = (ttl / 4).min(Duration::from_secs(2));
        let mut deadline = Instant::now() + ttl - margin;
        lease_tx.send_replace(Some(LeaseState { lease, deadline }));
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
                    lease_tx.send_replace(Some(LeaseState { lease, deadline }));
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!(worker = %self.config.name, lease, "lease expired; registering again");
                    return;
                }
                Err(error) => {
                    metrics::counter!(ingest_runtime::metrics::LEASE_RENEWAL_FAILURES).increment(1);
                    let past_deadline = Instant::now() >= deadline;
                    tracing::warn!(worker = %self.config.name, lease, %error, past_deadline, "lease keepalive failed");
                }
            }
        }
    }
}
