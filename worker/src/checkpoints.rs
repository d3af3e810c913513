//! Batches the fenced checkpoint writes of all runners of a worker into few
//! transactions: thousands of jobs finishing a run together (a cold start,
//! a takeover) cost tens of store transactions, not thousands.

use std::time::Duration;

use ingest_model::CheckpointRecord;
use ingest_store::keys::Keys;
use ingest_store::{LeaseId, Revision, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::claims::{BATCH, ClaimTxns};
use ingest_runtime::write_window::WriteWindow;

/// How long the writer waits for more writes to join a batch.
const GATHER: Duration = Duration::from_millis(10);

struct Pending {
    id: String,
    epoch: Revision,
    lease: LeaseId,
    checkpoint: CheckpointRecord,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// A handle to the worker's checkpoint writer task. Cheap to clone.
#[derive(Clone)]
pub struct CheckpointWriter {
    tx: mpsc::Sender<Pending>,
}

impl CheckpointWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: Arc<dyn Store>, keys: Keys, worker: String) -> Self {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        tokio::spawn(write_loop(store, keys, worker, rx));
        Self { tx }
    }

    /// Writes `checkpoint` if the claim on `id` is still at `epoch` under
    /// `lease`. `Ok(false)`: the claim is lost.
    pub async fn write(
        &self,
        id: &str,
        epoch: Revision,
        lease: LeaseId,
        checkpoint: CheckpointRecord,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { id: id.to_string(), epoch, lease, checkpoint, reply };
        self.tx.send(pending).await.map_err(|_| StoreError::Other("checkpoint writer stopped".to_string()))?;
        answer.await.map_err(|_| StoreError::Other("checkpoint writer stopped".to_string()))?
    }
}

async fn write_loop(store: Arc<dyn Store>, keys: Keys, worker: String, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match tokio::time::timeout(GATHER, rx.recv()).await {
                Ok(Some(pending)) => batch.push(pending),
                Ok(None) | Err(_) => break,
            }
        }
        // One transaction per lease (normally there is only one).
        while !batch.is_empty() {
            let lease = batch[0].lease;
            let (same, rest): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|p| p.lease == lease);
            batch = rest;
            let txns = ClaimTxns {
                store: store.as_ref(),
                keys: &keys,
                worker: &worker,
                lease,
                window: &WriteWindow::new(ingest_runtime::metrics::WRITE_WINDOW),
            };
            let items: Vec<(&str, Revision, &CheckpointRecord)> =
                same.iter().map(|p| (p.id.as_str(), p.epoch, &p.checkpoint)).collect();
            let results = txns.checkpoints(&items).await;
            match results {
                Ok(written) => {
                    for (pending, ok) in same.into_iter().zip(written) {
                        let _ = pending.reply.send(Ok(ok));
                    }
                }
                Err(error) => {
                    for pending in same {
                        let _ = pending.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
