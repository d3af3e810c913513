//! The store transactions of claiming, checkpointing and releasing jobs. A
//! claim is `owners/<id>` created under the worker's lease; its create
//! revision is the epoch, and every later write of the owner is fenced on
//! that epoch and lease (a lease is not a lock).

use std::time::Instant;

use ingest_model::{CheckpointRecord, OwnerRecord};
use ingest_store::keys::Keys;
use ingest_store::{
    Compare, CompareOp, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio_util::sync::CancellationToken;

use ingest_runtime::write_window::{WriteWindow, in_window};

/// Jobs per claim or release transaction. etcd allows 128 operations per
/// branch and 128 compares by default; each job takes two of each, so 64
/// fill a transaction (at 100 000 jobs, 40 made 2 500 claim transactions
/// and the cold start took 11-18 s; 64 make 1 563).
pub const BATCH: usize = 64;

/// A job to claim: its id and the revision of its spec as seen, so a job
/// changed, paused or deleted meanwhile is not claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub id: String,
    pub spec_revision: Revision,
}

/// Whether a job's owner and spec, as read by a failed claim, leave it free
/// to claim: no owner, and the spec still at the revision seen.
fn still_free(read: &[TxnOpResponse], spec_revision: Revision) -> bool {
    match read {
        [TxnOpResponse::Range(owner), TxnOpResponse::Range(job)] => {
            owner.kvs.is_empty() && job.kvs.first().is_some_and(|kv| kv.mod_revision == spec_revision)
        }
        _ => false,
    }
}

/// What a round of claims did: the claims won, and the owners and specs
/// read by batches that failed (newer than the view that asked, so the
/// view learns from them and does not ask again for a job already taken:
/// with a view that lags, asking every tick kept etcd busy with failing
/// claims at 100 000 jobs, which made every view lag more).
#[derive(Debug, Default)]
pub struct Claimed {
    pub won: Vec<Won>,
    pub seen: Vec<KeyValue>,
}

/// A won claim with the checkpoint to resume from (or why it cannot be
/// read).
#[derive(Clone, Debug)]
pub struct Won {
    pub id: String,
    pub epoch: Revision,
    pub checkpoint: Result<CheckpointRecord, String>,
}

/// A claim to release; `checkpoint` is written in the same transaction
/// unless `None` (the job was deleted).
#[derive(Clone, Debug)]
pub struct Release {
    pub id: String,
    pub epoch: Revision,
    pub checkpoint: Option<CheckpointRecord>,
}

pub struct ClaimTxns<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a Keys,
    pub worker: &'a str,
    pub lease: LeaseId,
    /// How many claim or release transactions may be in flight.
    pub window: &'a WriteWindow,
}

impl ClaimTxns<'_> {
    /// Claims as many of `requests` as are still free, in batches. A batch
    /// that fails (a peer was faster on some jobs, or a spec changed) reads
    /// in the same transaction which jobs are taken or changed, and the rest
    /// are tried again together: one more transaction per conflict, not a
    /// split down to single jobs (which cost 10 workers starting at once
    /// seconds of sequential transactions). Once `stop` is cancelled no
    /// more batches are sent (those in flight finish).
    pub async fn claim(&self, requests: &[ClaimRequest], stop: &CancellationToken) -> Result<Claimed, StoreError> {
        let owner = serde_json::to_vec(&OwnerRecord { worker: self.worker.to_string() })
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut claimed = Claimed::default();
        let owner = &owner;
        let pending = requests.chunks(BATCH).map(<[ClaimRequest]>::to_vec).collect();
        let send = |batch| self.try_claim(batch, owner, stop);
        in_window(self.window, pending, send, |batch, response, pending| {
            let Some(response) = response.transpose()? else { return Ok(()) };
            if response.succeeded {
                claimed.won.extend(batch.iter().zip(checkpoints(&response, batch.len())).map(|(r, checkpoint)| Won {
                    id: r.id.clone(),
                    epoch: response.revision,
                    checkpoint,
                }));
                return Ok(());
            }
            let free: Vec<ClaimRequest> = batch
                .iter()
                .zip(response.responses.chunks(2))
                .filter(|(r, read)| still_free(read, r.spec_revision))
                .map(|(r, _)| r.clone())
                .collect();
            for read in &response.responses {
                if let TxnOpResponse::Range(range) = read {
                    claimed.seen.extend(range.kvs.iter().cloned());
                }
            }
            if free.len() < batch.len() {
                if !free.is_empty() {
                    pending.push_back(free);
                }
            } else if batch.len() > 1 {
                // Nothing looked taken (a read that raced): split.
                let (a, b) = batch.split_at(batch.len() / 2);
                pending.push_back(a.to_vec());
                pending.push_back(b.to_vec());
            }
            Ok(())
        })
        .await?;
        Ok(claimed)
    }

    /// One batch's transaction; `None` when `stop` came first.
    async fn try_claim(
        &self,
        batch: Vec<ClaimRequest>,
        owner: &[u8],
        stop: &CancellationToken,
    ) -> (Vec<ClaimRequest>, Option<Result<TxnResponse, StoreError>>) {
        if stop.is_cancelled() {
            return (batch, None);
        }
        let started = Instant::now();
        let response = self.store.txn(self.claim_txn(&batch, owner)).await;
        metrics::histogram!(ingest_runtime::metrics::CLAIM_SECONDS).record(started.elapsed().as_secs_f64());
        (batch, Some(response))
    }

    /// Claims `batch` if every job is unowned and at the spec revision seen,
    /// reading the checkpoints; else reads why (owners and specs).
    fn claim_txn(&self, batch: &[ClaimRequest], owner: &[u8]) -> Txn {
        let compares = batch.iter().flat_map(|r| {
            [
                Compare::absent(self.keys.owner(&r.id)),
                Compare::mod_revision(self.keys.job(&r.id), CompareOp::Equal, r.spec_revision),
            ]
        });
        let puts = batch.iter().map(|r| TxnOp::put_with_lease(self.keys.owner(&r.id), owner.to_vec(), self.lease));
        let gets = batch.iter().map(|r| TxnOp::get(self.keys.state(&r.id)));
        let why = batch.iter().flat_map(|r| [TxnOp::get(self.keys.owner(&r.id)), TxnOp::get(self.keys.job(&r.id))]);
        Txn::new().when(compares).and_then(puts.chain(gets)).or_else(why)
    }

    /// Writes checkpoints, each only if this worker still holds the claim at
    /// its epoch under its lease, in transactions of up to [`BATCH`]; a batch
    /// with a lost claim is split until each write is decided. Per item:
    /// `false` means the claim is lost (stop that job now).
    pub async fn checkpoints(&self, items: &[(&str, Revision, &CheckpointRecord)]) -> Result<Vec<bool>, StoreError> {
        let mut written = vec![false; items.len()];
        let mut pending: Vec<(usize, usize)> =
            (0..items.len()).step_by(BATCH).map(|i| (i, (i + BATCH).min(items.len()))).collect();
        while let Some((from, to)) = pending.pop() {
            let batch = &items[from..to];
            let compares = batch.iter().flat_map(|(id, epoch, _)| self.fence(id, *epoch));
            let mut puts = Vec::with_capacity(batch.len());
            for (id, _, checkpoint) in batch {
                let value = serde_json::to_vec(checkpoint).map_err(|e| StoreError::Invalid(e.to_string()))?;
                puts.push(TxnOp::put(self.keys.state(id), value));
            }
            if self.store.txn(Txn::new().when(compares).and_then(puts)).await?.succeeded {
                written[from..to].iter_mut().for_each(|w| *w = true);
            } else if batch.len() > 1 {
                let mid = from + batch.len() / 2;
                pending.push((from, mid));
                pending.push((mid, to));
            }
        }
        Ok(written)
    }

    /// Releases claims, each with its final checkpoint in the same
    /// transaction. Claims already lost are skipped. Returns the released ids
    /// with the revision of their release.
    pub async fn release(&self, releases: &[Release]) -> Result<Vec<(String, Revision)>, StoreError> {
        let mut released = Vec::new();
        let pending = releases.chunks(BATCH).collect();
        in_window(
            self.window,
            pending,
            |batch| self.try_release(batch),
            |batch, response, pending| {
                let response = response?;
                if response.succeeded {
                    released.extend(batch.iter().map(|r| (r.id.clone(), response.revision)));
                } else if batch.len() > 1 {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    pending.push_back(a);
                    pending.push_back(b);
                }
                Ok(())
            },
        )
        .await?;
        Ok(released)
    }

    async fn try_release<'r>(&self, batch: &'r [Release]) -> (&'r [Release], Result<TxnResponse, StoreError>) {
        let response = match self.release_txn(batch) {
            Ok(txn) => self.store.txn(txn).await,
            Err(error) => Err(error),
        };
        (batch, response)
    }

    /// Writes each checkpoint and deletes each claim of `batch` if every
    /// claim is still this worker's at its epoch.
    fn release_txn(&self, batch: &[Release]) -> Result<Txn, StoreError> {
        let compares = batch.iter().flat_map(|r| self.fence(&r.id, r.epoch));
        let mut ops = Vec::with_capacity(batch.len() * 2);
        for r in batch {
            if let Some(checkpoint) = &r.checkpoint {
                let value = serde_json::to_vec(checkpoint).map_err(|e| StoreError::Invalid(e.to_string()))?;
                ops.push(TxnOp::put(self.keys.state(&r.id), value));
            }
            ops.push(TxnOp::delete(self.keys.owner(&r.id)));
        }
        Ok(Txn::new().when(compares).and_then(ops))
    }

    /// The claim on `id` is still the one made at `epoch` under this lease.
    fn fence(&self, id: &str, epoch: Revision) -> [Compare; 2] {
        let key = self.keys.owner(id);
        [
            Compare::create_revision(key.clone(), CompareOp::Equal, epoch),
            Compare::lease(key, CompareOp::Equal, self.lease),
        ]
    }
}

/// The checkpoints read by a claim transaction (the `get`s after the puts).
fn checkpoints(response: &TxnResponse, n: usize) -> Vec<Result<CheckpointRecord, String>> {
    response.responses[n.min(response.responses.len())..]
        .iter()
        .map(stored_checkpoint)
        .chain(std::iter::repeat_with(|| Ok(CheckpointRecord::default())))
        .take(n)
        .collect()
}

/// The checkpoint a `get` of `state/<id>` read: none yet is a fresh start.
pub fn stored_checkpoint(read: &TxnOpResponse) -> Result<CheckpointRecord, String> {
    match read {
        TxnOpResponse::Range(range) => {
            range.kvs.first().map_or_else(|| Ok(CheckpointRecord::default()), |kv| CheckpointRecord::decode(&kv.value))
        }
        _ => Ok(CheckpointRecord::default()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use ingest_store::{EmbeddedStore, StoreWrapper};

    use ingest_runtime::metrics::WRITE_WINDOW;

    use super::*;

    /// The embedded store, counting transactions.
    struct Counting {
        inner: EmbeddedStore,
        txns: AtomicUsize,
    }

    #[async_trait]
    impl StoreWrapper for Counting {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }

        async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
            self.txns.fetch_add(1, Ordering::SeqCst);
            self.inner.txn(txn).await
        }
    }

    /// A batch some of whose jobs a peer claimed first, or whose spec
    /// changed, costs one more transaction for the rest, not a split down to
    /// single jobs.
    #[tokio::test]
    async fn a_batch_with_taken_jobs_claims_the_rest_in_one_more_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Counting { inner: EmbeddedStore::open(dir.path()).expect("store"), txns: AtomicUsize::new(0) };
        let keys = Keys::new("/t/");
        let mut requests = Vec::new();
        for i in 0..BATCH {
            let id = format!("job-{i:02}");
            let revision = store.inner.put(&keys.job(&id), b"{}".to_vec(), 0).await.expect("put job");
            requests.push(ClaimRequest { id, spec_revision: revision });
        }
        // A peer holds every fourth job; one spec changed after it was seen.
        for r in requests.iter().step_by(4) {
            store.inner.put(&keys.owner(&r.id), br#"{"worker":"peer"}"#.to_vec(), 0).await.expect("put owner");
        }
        store.inner.put(&keys.job("job-01"), b"{\"changed\":1}".to_vec(), 0).await.expect("change");
        let lease = store.inner.lease_grant(std::time::Duration::from_secs(30)).await.expect("lease");
        let window = WriteWindow::new(WRITE_WINDOW);
        let txns = ClaimTxns { store: &store, keys: &keys, worker: "me", lease, window: &window };
        let claimed = txns.claim(&requests, &CancellationToken::new()).await.expect("claim");
        let mut ids: Vec<&str> = claimed.won.iter().map(|w| w.id.as_str()).collect();
        ids.sort_unstable();
        let expected: Vec<&str> =
            requests.iter().enumerate().filter(|(i, _)| i % 4 != 0 && *i != 1).map(|(_, r)| r.id.as_str()).collect();
        assert_eq!(ids, expected);
        assert_eq!(store.txns.load(Ordering::SeqCst), 2, "the failed batch, then the rest together");
        // What the failed batch read is handed back for the view: the
        // peer's claims and the changed spec among them.
        let seen = |key: &str| claimed.seen.iter().find(|kv| kv.key == key).map(|kv| kv.value.clone());
        for r in requests.iter().step_by(4) {
            assert_eq!(seen(&keys.owner(&r.id)).as_deref(), Some(&br#"{"worker":"peer"}"#[..]));
        }
        assert_eq!(seen(&keys.job("job-01")).as_deref(), Some(&b"{\"changed\":1}"[..]));
    }

    /// The embedded store, answering each transaction after `delay` and
    /// noting how many were in flight as each one came.
    struct Slow {
        inner: EmbeddedStore,
        delay: std::time::Duration,
        in_flight: AtomicUsize,
        seen: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl StoreWrapper for Slow {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }

        async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen.lock().expect("lock").push(now);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.txn(txn).await
        }
    }

    /// Claim transactions in flight follow etcd's answers: quick ones let
    /// the window grow to four, slow ones (etcd's apply lagging) keep one.
    #[tokio::test]
    async fn claims_in_flight_follow_the_answer_time() {
        let ms = std::time::Duration::from_millis;
        for (delay, most, size) in [(ms(1), 4, 4), (ms(80), 1, 1)] {
            let store = Slow {
                inner: EmbeddedStore::in_memory().expect("store"),
                delay,
                in_flight: AtomicUsize::new(0),
                seen: std::sync::Mutex::new(Vec::new()),
            };
            let keys = Keys::new("/t/");
            let mut requests = Vec::new();
            for i in 0..16 * BATCH {
                let id = format!("job-{i:04}");
                let revision = store.inner.put(&keys.job(&id), b"{}".to_vec(), 0).await.expect("put job");
                requests.push(ClaimRequest { id, spec_revision: revision });
            }
            let lease = store.inner.lease_grant(std::time::Duration::from_secs(30)).await.expect("lease");
            let window = WriteWindow::with_thresholds(WRITE_WINDOW, ms(50), ms(20));
            let txns = ClaimTxns { store: &store, keys: &keys, worker: "me", lease, window: &window };
            let claimed = txns.claim(&requests, &CancellationToken::new()).await.expect("claim");
            assert_eq!(claimed.won.len(), 16 * BATCH);
            let seen = store.seen.lock().expect("lock").clone();
            assert_eq!(
                (seen[0], seen.iter().max().copied(), window.size()),
                (1, Some(most), size),
                "{delay:?}: {seen:?}"
            );
        }
    }

    /// A worker shutting down claims nothing more.
    #[tokio::test]
    async fn no_claim_is_sent_once_stopping() {
        let store = Counting { inner: EmbeddedStore::in_memory().expect("store"), txns: AtomicUsize::new(0) };
        let keys = Keys::new("/t/");
        let revision = store.inner.put(&keys.job("job-1"), b"{}".to_vec(), 0).await.expect("put job");
        let lease = store.inner.lease_grant(std::time::Duration::from_secs(30)).await.expect("lease");
        let window = WriteWindow::new(WRITE_WINDOW);
        let txns = ClaimTxns { store: &store, keys: &keys, worker: "me", lease, window: &window };
        let stop = CancellationToken::new();
        stop.cancel();
        let request = [ClaimRequest { id: "job-1".into(), spec_revision: revision }];
        let claimed = txns.claim(&request, &stop).await.expect("no error");
        assert!(claimed.won.is_empty());
        assert_eq!(store.txns.load(Ordering::SeqCst), 0);
        let claimed = txns.claim(&request, &CancellationToken::new()).await.expect("claim");
        assert_eq!(claimed.won.len(), 1, "the same claim, not stopping");
    }
}
