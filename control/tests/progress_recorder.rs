//! The progress recorder on real stores (embedded and a real etcd), with
//! what a cluster does to it: another writer between its read and its write
//! (another control replica, a DeleteJob), a store outage, a shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ingest_control::progress::{ProgressRecorder, RecorderConfig};
use ingest_model::{ClaimProgress, Counters, StatsLedger};
use ingest_store::keys::Keys;
use ingest_store::{EmbeddedStore, EtcdOptions, EtcdStore, Store, StoreError, Txn, TxnOp, TxnResponse};
use ingest_testkit::EtcdServer;
use tokio_util::sync::CancellationToken;

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::embedded()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Setup::etcd().await).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_concurrent_write_is_read_again_and_folded_over,
    a_job_deleted_between_read_and_write_gets_no_stats,
    one_write_per_fifty_jobs_and_none_when_nothing_changed,
    stopping_flushes_once_more,
);

/// A real store, and what keeps it alive.
struct Setup {
    store: Arc<Interposed>,
    keys: Keys,
    _dir: Option<tempfile::TempDir>,
    etcd: Option<EtcdServer>,
}

impl Setup {
    fn embedded() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
        Setup { store: Interposed::new(store), keys: Keys::new("/test/"), _dir: Some(dir), etcd: None }
    }

    async fn etcd() -> Setup {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("start etcd");
        let mut options = EtcdOptions::new([etcd.endpoint()]);
        options.request_timeout = Duration::from_secs(1);
        let store = Arc::new(EtcdStore::connect(options).await.expect("connect to etcd"));
        Setup { store: Interposed::new(store), keys: Keys::new("/test/"), _dir: None, etcd: Some(etcd) }
    }

    fn recorder(&self, flush_interval: Duration) -> Arc<ProgressRecorder> {
        let config = RecorderConfig { flush_interval, ..RecorderConfig::default() };
        Arc::new(ProgressRecorder::new(self.store.clone(), self.keys.clone(), config))
    }

    /// Creates job keys (the recorder only checks that they exist); returns
    /// an epoch later than all of them, as a claim's would be.
    async fn jobs(&self, ids: &[String]) -> i64 {
        let mut revision = 0;
        for chunk in ids.chunks(100) {
            let puts = chunk.iter().map(|id| TxnOp::put(self.keys.job(id), b"{}".to_vec()));
            revision = self.store.txn(Txn::new().and_then(puts)).await.expect("create jobs").revision;
        }
        revision + 1
    }

    async fn stats(&self, id: &str) -> Option<StatsLedger> {
        let kv = self.store.get(&self.keys.stats(id)).await.expect("get stats")?;
        Some(serde_json::from_slice(&kv.value).expect("stats decode"))
    }
}

fn report(epoch: i64, items_fetched: u64, runs: u64) -> ClaimProgress {
    ClaimProgress { epoch, totals: Counters { items_fetched, runs, ..Default::default() }, ..Default::default() }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("job-{i:03}")).collect()
}

async fn a_concurrent_write_is_read_again_and_folded_over(s: Setup) {
    let [a, b] = ["a".to_string(), "b".to_string()];
    let epoch = s.jobs(&[a.clone(), b.clone()]).await;
    // Another replica folds a newer report of the same claim (more items,
    // fewer runs) between this recorder's read and its write.
    let mut theirs = StatsLedger::default();
    theirs.fold(&report(epoch, 50, 2));
    s.store.before_next_write(TxnOp::put(s.keys.stats(&a), serde_json::to_vec(&theirs).expect("encode")));

    let recorder = s.recorder(Duration::from_secs(3600));
    recorder.record([(a.clone(), report(epoch, 30, 3)), (b.clone(), report(epoch, 5, 1))]);
    recorder.flush().await.expect("flush");
    assert_eq!(s.stats(&a).await.map(|l| l.stats.counters), Some(report(0, 50, 3).totals), "both folds kept");
    assert_eq!(s.stats(&b).await.map(|l| l.stats.counters), Some(report(0, 5, 1).totals));
    assert_eq!(recorder.pending_jobs(), 0);
}

async fn a_job_deleted_between_read_and_write_gets_no_stats(s: Setup) {
    let [a, b] = ["a".to_string(), "b".to_string()];
    let epoch = s.jobs(&[a.clone(), b.clone()]).await;
    s.store.before_next_write(TxnOp::delete(s.keys.job(&a)));
    let recorder = s.recorder(Duration::from_secs(3600));
    recorder.record([(a.clone(), report(epoch, 30, 3)), (b.clone(), report(epoch, 5, 1))]);
    recorder.flush().await.expect("flush");
    assert_eq!(s.stats(&a).await, None, "stats written for a deleted job");
    assert_eq!(s.stats(&b).await.map(|l| l.stats.counters), Some(report(0, 5, 1).totals));
    assert_eq!(recorder.pending_jobs(), 0, "a deleted job's reports are dropped, not retried");
}

async fn one_write_per_fifty_jobs_and_none_when_nothing_changed(s: Setup) {
    let ids = ids(120);
    let epoch = s.jobs(&ids).await;
    let recorder = s.recorder(Duration::from_secs(3600));
    let reports = || ids.iter().flat_map(|id| (1..=5).map(move |n| (id.clone(), report(epoch, n * 10, n))));
    recorder.record(reports());
    let before = s.store.current_revision().await.expect("revision");
    recorder.flush().await.expect("flush");
    let after = s.store.current_revision().await.expect("revision");
    assert_eq!(after - before, 3, "600 reports of 120 jobs: 3 write transactions");
    for id in &ids {
        let ledger = s.stats(id).await.expect("stats");
        assert_eq!((ledger.epoch, ledger.stats.counters), (epoch, report(0, 50, 5).totals));
    }
    // The same reports again (a worker resending after a reconnect).
    recorder.record(reports());
    recorder.flush().await.expect("flush");
    assert_eq!(s.store.current_revision().await.expect("revision"), after, "nothing changed, nothing written");
}

async fn stopping_flushes_once_more(s: Setup) {
    let id = "stopped".to_string();
    let epoch = s.jobs(std::slice::from_ref(&id)).await;
    let recorder = s.recorder(Duration::from_secs(3600));
    let stop = CancellationToken::new();
    let running = tokio::spawn(recorder.clone().run(stop.clone()));
    // Past the first (immediate) tick; the next is an hour away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    recorder.record([(id.clone(), report(epoch, 7, 1))]);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("run stops").expect("run");
    assert_eq!(s.stats(&id).await.map(|l| l.stats.counters), Some(report(0, 7, 1).totals));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_through_a_store_outage() {
    let mut s = Setup::etcd().await;
    // Several batches (written a few at once): every one is kept.
    let ids = ids(130);
    let epoch = s.jobs(&ids).await;
    let recorder = s.recorder(Duration::from_secs(3600));
    let etcd = s.etcd.as_mut().expect("etcd");
    tokio::task::block_in_place(|| etcd.stop());
    recorder.record(ids.iter().map(|id| (id.clone(), report(epoch, 3, 1))));
    assert!(recorder.flush().await.is_err(), "etcd is down");
    assert_eq!(recorder.pending_jobs(), ids.len(), "reports kept for the next flush");
    recorder.record(ids.iter().map(|id| (id.clone(), report(epoch, 4, 2))));

    tokio::task::block_in_place(|| etcd.start_again());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while recorder.flush().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "flush still failing after etcd came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(s.stats(id).await.map(|l| l.stats.counters), Some(report(0, 4, 2).totals), "{id}");
    }
    assert_eq!(recorder.pending_jobs(), 0);
}

/// A real store that runs one given operation just before the next write
/// transaction: what another process does between a read and a write.
struct Interposed {
    inner: Arc<dyn Store>,
    hook: Mutex<Option<TxnOp>>,
}

impl Interposed {
    fn new(inner: Arc<dyn Store>) -> Arc<Interposed> {
        Arc::new(Interposed { inner, hook: Mutex::new(None) })
    }

    fn before_next_write(&self, op: TxnOp) {
        *self.hook.lock().expect("hook lock") = Some(op);
    }
}

#[async_trait]
impl ingest_store::StoreWrapper for Interposed {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let writes = txn.success.iter().any(|op| matches!(op, TxnOp::Put { .. }));
        let hook = if writes { self.hook.lock().expect("hook lock").take() } else { None };
        if let Some(op) = hook {
            self.inner.txn(Txn::new().and_then([op])).await?;
        }
        self.inner.txn(txn).await
    }
}
