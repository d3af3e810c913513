//! The control server's one follower of the jobs for WatchJobs streams: the
//! pieces of every job, loaded once and kept current by one store watch,
//! shared by every open stream (at 100 000 jobs a stream holding its own
//! copy cost 152 MB). Each applied batch is announced with the jobs it
//! touched; a stream composes their views from the shared state.
//!
//! Started by the first stream that needs it, ended when the last goes.

use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};

use ingest_store::{Revision, StoreError, WatchBatch};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{JobsState, REWATCH_DELAY, Touched};
use crate::error::ControlError;
use crate::service::ControlService;

/// Batches a stream may fall behind before it is sent every job again.
const BACKLOG: usize = 1024;

/// What changed, as announced to the streams.
pub(crate) type Change = Arc<Changed>;

#[derive(Debug)]
pub(crate) enum Changed {
    /// A batch of store events, applied: the jobs whose view it may change.
    Jobs { revision: Revision, touched: Vec<(String, Touched)> },
    /// The state was loaded again (the watch's history was compacted):
    /// every job may have changed.
    Reloaded,
}

pub(crate) struct JobsFeed {
    state: RwLock<JobsState>,
    changes: broadcast::Sender<Change>,
    /// Ends the follower when the last stream drops the feed.
    stop: CancellationToken,
}

/// Where a server keeps its feed while streams use it.
pub(crate) type FeedSlot = Arc<tokio::sync::Mutex<Weak<JobsFeed>>>;

impl Drop for JobsFeed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl JobsFeed {
    /// The server's feed: the running one, or a new one, loaded before this
    /// returns.
    pub(crate) async fn get(service: &ControlService) -> Result<Arc<Self>, ControlError> {
        let slot = service.jobs_feed_slot();
        let mut slot = slot.lock().await;
        if let Some(feed) = slot.upgrade() {
            return Ok(feed);
        }
        let (state, before) = JobsState::load(service.store().as_ref(), service.keys()).await?;
        let (changes, _) = broadcast::channel(BACKLOG);
        let feed = Arc::new(Self { state: RwLock::new(state), changes, stop: CancellationToken::new() });
        tokio::spawn(follow(Arc::downgrade(&feed), service.clone(), before + 1, feed.stop.clone()));
        *slot = Arc::downgrade(&feed);
        Ok(feed)
    }

    /// Changes from now on (subscribe before reading the state: nothing
    /// is missed between the two).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, JobsState> {
        // Nothing panics while holding the lock; a poisoned one is consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, service: &ControlService, batch: &WatchBatch) {
        let touched = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.apply(service.keys(), batch, 0)
        };
        if !touched.is_empty() {
            let touched = touched.into_iter().collect();
            // No stream open right now is not an error.
            let _ = self.changes.send(Arc::new(Changed::Jobs { revision: batch.revision, touched }));
        }
    }

    fn replace(&self, state: JobsState) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        let _ = self.changes.send(Arc::new(Changed::Reloaded));
    }
}

/// Keeps the feed current until it is dropped: re-watches from where it
/// stopped when the store goes away, loads again when that history is gone.
async fn follow(feed: Weak<JobsFeed>, service: ControlService, mut next: Revision, stop: CancellationToken) {
    let store = service.store().clone();
    loop {
        let watched = store.watch_prefix(service.keys().root(), next).await;
        let mut stream = match watched {
            Ok(stream) => Some(stream),
            Err(StoreError::Compacted { .. }) => None,
            Err(error) => {
                tracing::warn!(%error, revision = next, "job feed: cannot watch; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REWATCH_DELAY) => continue,
                }
            }
        };
        while let Some(watch) = stream.as_mut() {
            let item = tokio::select! {
                () = stop.cancelled() => return,
                item = watch.next() => item,
            };
            match item {
                Some(Ok(batch)) => {
                    let Some(feed) = feed.upgrade() else { return };
                    next = next.max(batch.resume_from());
                    feed.apply(&service, &batch);
                }
                Some(Err(StoreError::Compacted { .. })) => stream = None,
                Some(Err(error)) => {
                    tracing::warn!(%error, revision = next, "job feed: watch broken; re-watching");
                    break;
                }
                None => break,
            }
        }
        if stream.is_none() {
            // The history from `next` is gone: load every job again.
            tracing::warn!(revision = next, "job feed: watch history compacted; loading the jobs again");
            match JobsState::load(store.as_ref(), service.keys()).await {
                Ok((state, before)) => {
                    let Some(feed) = feed.upgrade() else { return };
                    feed.replace(state);
                    next = before + 1;
                    continue;
                }
                Err(error) => tracing::warn!(%error, "job feed: cannot load the jobs; retrying"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REWATCH_DELAY) => {}
        }
    }
}
