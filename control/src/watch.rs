//! WatchJobs: a snapshot of the jobs, then every change, resumable from a
//! revision.
//!
//! Each stream keeps its own view of every job's pieces (spec, claim,
//! counters, checkpoint) and of the live workers, loaded by range reads and
//! then kept current by one store watch on the whole key root. Every piece
//! remembers the revision it was written at and an event only applies when it
//! is newer, so the watch can safely start from a revision older than the
//! loaded view: nothing is missed and nothing goes backwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ingest_model::WorkerRecord;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EventKind, Revision, StoreError, WatchBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ControlError;
use crate::service::{ControlService, JobFilter};
use crate::views::{JobPieces, JobView, decode, live_types, scan_prefix};

/// Jobs per snapshot message.
const SNAPSHOT_CHUNK: usize = 100;
/// Wait before re-watching after the store went away.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    Upserted(Box<JobView>),
    Deleted(String),
}

/// One message of a job watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchUpdate {
    /// The revision these events bring the watcher up to.
    pub revision: Revision,
    pub events: Vec<JobEvent>,
    /// Part of the initial snapshot.
    pub snapshot: bool,
    /// The snapshot is complete.
    pub synced: bool,
}

/// Starts a watch over the jobs `filter` admits (its state is not used). With
/// `start_revision > 0`, no snapshot is sent and every change after that
/// revision is.
pub async fn watch_jobs(
    service: &ControlService,
    filter: JobFilter,
    start_revision: Revision,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Result<WatchUpdate, ControlError>>, ControlError> {
    if start_revision < 0 {
        return Err(ControlError::invalid("start_revision", "must not be negative"));
    }
    let current = service.store().current_revision().await?;
    if start_revision > current {
        return Err(ControlError::invalid(
            "start_revision",
            format!("revision {start_revision} is in the future (current revision {current})"),
        ));
    }
    let mut view = JobsView::load(service, filter, start_revision).await?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let result = view.run(&tx, shutdown).await;
        if let Err(err) = result {
            let _ = tx.send(Err(err)).await;
        }
    });
    Ok(rx)
}

struct JobsView {
    service: ControlService,
    keys: Keys,
    filter: JobFilter,
    start_revision: Revision,
    /// The highest revision the loaded view may reflect.
    loaded_at: Revision,
    watch_from: Revision,
    pieces: HashMap<String, JobPieces>,
    workers: BTreeMap<String, WorkerRecord>,
    live_types: HashSet<String>,
}

impl JobsView {
    async fn load(service: &ControlService, filter: JobFilter, start_revision: Revision) -> Result<Self, ControlError> {
        let store = service.store().as_ref();
        let keys = service.keys().clone();
        let before = store.current_revision().await?;
        let prefix = |kind| keys.prefix(kind);
        let (jobs, owners, stats, states, workers) = futures::try_join!(
            scan_prefix(store, prefix(KeyKind::Job)),
            scan_prefix(store, prefix(KeyKind::Owner)),
            scan_prefix(store, prefix(KeyKind::Stats)),
            scan_prefix(store, prefix(KeyKind::State)),
            scan_prefix(store, prefix(KeyKind::Worker)),
        )?;
        let loaded_at = store.current_revision().await?;
        let mut view = Self {
            service: service.clone(),
            keys: keys.clone(),
            filter,
            start_revision,
            loaded_at,
            // Changes after `before` may or may not be in what was read; the
            // revision guard in `JobPieces::apply` makes replaying them safe.
            watch_from: if start_revision > 0 { start_revision + 1 } else { before + 1 },
            pieces: HashMap::new(),
            workers: BTreeMap::new(),
            live_types: HashSet::new(),
        };
        for kv in jobs.iter().chain(&owners).chain(&stats).chain(&states) {
            if let Some((kind, id)) = keys.parse(&kv.key) {
                view.pieces.entry(id.to_string()).or_default().apply(kind, kv, false);
            }
        }
        for kv in &workers {
            if let Some(worker) = decode::<WorkerRecord>(kv) {
                view.workers.insert(worker.name.clone(), worker);
            }
        }
        view.live_types = live_types(&view.workers);
        Ok(view)
    }

    async fn run(
        &mut self,
        tx: &mpsc::Sender<Result<WatchUpdate, ControlError>>,
        shutdown: CancellationToken,
    ) -> Result<(), ControlError> {
        if self.start_revision == 0 && !self.send_snapshot(tx).await {
            return Ok(());
        }
        let mut next = self.watch_from;
        loop {
            let mut stream = match self.service.store().watch_prefix(self.keys.root(), next).await {
                Ok(stream) => stream,
                Err(StoreError::Unavailable(error)) => {
                    tracing::warn!(%error, revision = next, "store unavailable; re-watching");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(REWATCH_DELAY) => continue,
                    }
                }
                Err(err) => return Err(err.into()),
            };
            loop {
                let item = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tx.closed() => return Ok(()),
                    item = stream.next() => item,
                };
                match item {
                    None => return Ok(()),
                    Some(Err(StoreError::Unavailable(error))) => {
                        tracing::warn!(%error, revision = next, "watch broken; re-watching");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tx.closed() => return Ok(()),
                            () = tokio::time::sleep(REWATCH_DELAY) => break,
                        }
                    }
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(batch)) => {
                        next = batch.revision + 1;
                        let update = self.apply(batch);
                        if !update.events.is_empty() && tx.send(Ok(update)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Sends every job in chunks, then the `synced` marker. False when the
    /// client went away. Views are made a chunk at a time as the client
    /// takes them: a stream never holds the views of every job.
    async fn send_snapshot(&self, tx: &mpsc::Sender<Result<WatchUpdate, ControlError>>) -> bool {
        let mut ids: Vec<&String> = self.pieces.keys().collect();
        ids.sort();
        let mut events = Vec::with_capacity(SNAPSHOT_CHUNK);
        for (i, id) in ids.iter().enumerate() {
            if let Some(view) = self.visible_view(id) {
                events.push(JobEvent::Upserted(Box::new(view)));
            }
            if events.len() == SNAPSHOT_CHUNK || (i + 1 == ids.len() && !events.is_empty()) {
                let events = std::mem::replace(&mut events, Vec::with_capacity(SNAPSHOT_CHUNK));
                let update = WatchUpdate { revision: self.loaded_at, events, snapshot: true, synced: false };
                if tx.send(Ok(update)).await.is_err() {
                    return false;
                }
            }
        }
        let synced = WatchUpdate { revision: self.loaded_at, events: Vec::new(), snapshot: true, synced: true };
        tx.send(Ok(synced)).await.is_ok()
    }

    fn visible_view(&self, id: &str) -> Option<JobView> {
        let view = self.pieces.get(id)?.view(&self.live_types)?;
        self.filter.admits(&view.record).then_some(view)
    }

    /// Applies a batch of store events and returns the job events it causes.
    fn apply(&mut self, batch: WatchBatch) -> WatchUpdate {
        // Resuming: changes up to the load were already folded into the view
        // but the client has not seen them, so they are sent regardless.
        let resuming = self.start_revision > 0;
        // Job id -> whether the client may hold it (the spec it had before
        // this batch passed the filter, or was unknown), and whether its spec
        // was deleted or changed.
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        let mut workers_changed = false;
        for event in &batch.events {
            let Some((kind, id)) = self.keys.parse(&event.kv.key) else { continue };
            let deleted = event.kind == EventKind::Delete;
            match kind {
                KeyKind::Worker => {
                    workers_changed = true;
                    if deleted {
                        self.workers.remove(id);
                    } else if let Some(worker) = decode::<WorkerRecord>(&event.kv) {
                        self.workers.insert(id.to_string(), worker);
                    }
                }
                KeyKind::Job | KeyKind::Owner | KeyKind::Stats | KeyKind::State => {
                    let entry = self.pieces.entry(id.to_string()).or_default();
                    // A spec deleted before this watch knew it may be one the
                    // client holds (resuming); a new one is not.
                    let held = match &entry.job {
                        Some((record, _)) => self.filter.admits(record),
                        None => kind == KeyKind::Job && deleted,
                    };
                    let applied = entry.apply(kind, &event.kv, deleted);
                    if applied || (resuming && event.kv.mod_revision <= self.loaded_at) {
                        let slot = touched.entry(id.to_string()).or_insert(Touched { held, spec_changed: false });
                        slot.held |= held;
                        slot.spec_changed |= kind == KeyKind::Job;
                    }
                }
                KeyKind::Secret
                | KeyKind::Type
                | KeyKind::Runs
                | KeyKind::Alert
                | KeyKind::Load
                | KeyKind::Preview
                | KeyKind::DeadLetter => {}
            }
        }
        if workers_changed {
            let live = live_types(&self.workers);
            let flipped: HashSet<&String> = live.symmetric_difference(&self.live_types).collect();
            for (id, piece) in &self.pieces {
                if let Some((record, _)) = &piece.job
                    && flipped.contains(&record.job_type)
                {
                    let held = self.filter.admits(record);
                    touched.entry(id.clone()).or_insert(Touched { held, spec_changed: false });
                }
            }
            self.live_types = live;
        }
        let mut events = Vec::new();
        for (id, Touched { held, spec_changed }) in touched {
            let empty = match self.pieces.get(&id) {
                Some(piece) => {
                    piece.job.is_none() && piece.owner.is_none() && piece.stats.is_none() && piece.state.is_none()
                }
                None => true,
            };
            if let Some(view) = self.visible_view(&id) {
                events.push(JobEvent::Upserted(Box::new(view)));
            } else if held && spec_changed {
                // Deleted, or changed so that the filter drops it (labels).
                events.push(JobEvent::Deleted(id.clone()));
            }
            if empty {
                self.pieces.remove(&id);
            }
        }
        WatchUpdate { revision: batch.revision, events, snapshot: false, synced: false }
    }
}

/// A job a batch of events touched.
struct Touched {
    /// The client may hold it: a spec it had in the batch passed the filter
    /// (or one it did not know was deleted).
    held: bool,
    /// Its spec was written or deleted.
    spec_changed: bool,
}
