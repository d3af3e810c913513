//! Event history and watchers of the embedded store.
//!
//! Writers never wait for watchers: a write appends its events to a bounded
//! in-memory history and bumps a `tokio::sync::watch` channel. Each watcher is
//! a task that remembers the next revision it needs and copies matching
//! events out of the history whenever the revision moves. A slow watcher thus
//! catches up from the history at its own pace, and gets `Compacted` if the
//! history it needs was trimmed meanwhile: it never silently misses events.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, watch};

use super::Inner;
use crate::{Revision, StoreError, WatchBatch, WatchEvent};

/// At most this many events per batch (whole revisions, so a single larger
/// revision still goes out as one batch).
const MAX_BATCH_EVENTS: usize = 1000;

/// The events of the most recent revisions, oldest first, without gaps.
pub(super) struct History {
    revisions: VecDeque<(Revision, Arc<[WatchEvent]>)>,
    events: usize,
    max_events: usize,
    /// The oldest revision a watch may start from: history holds every
    /// revision from here to the store's current revision.
    oldest: Revision,
}

impl History {
    /// An empty history for a store at `revision`: only later changes can be
    /// watched.
    pub(super) fn new(revision: Revision, max_events: usize) -> Self {
        Self { revisions: VecDeque::new(), events: 0, max_events, oldest: revision + 1 }
    }

    pub(super) fn oldest(&self) -> Revision {
        self.oldest
    }

    /// Records the events of `revision` (the store's new revision) and trims
    /// the oldest revisions beyond the bound.
    pub(super) fn push(&mut self, revision: Revision, events: Vec<WatchEvent>) {
        self.events += events.len();
        self.revisions.push_back((revision, events.into()));
        while self.events > self.max_events && self.revisions.len() > 1 {
            self.pop_front();
        }
    }

    /// Drops every revision below `revision`.
    pub(super) fn compact(&mut self, revision: Revision) {
        while self.revisions.front().is_some_and(|(r, _)| *r < revision) {
            self.pop_front();
        }
        self.oldest = self.oldest.max(revision);
    }

    fn pop_front(&mut self) {
        if let Some((revision, events)) = self.revisions.pop_front() {
            self.events -= events.len();
            self.oldest = revision + 1;
        }
    }

    /// Events under `prefix` from revision `next` on, at most about
    /// [`MAX_BATCH_EVENTS`], and the last revision looked at (`None` when
    /// `next` is beyond the history).
    fn collect(&self, prefix: &str, next: Revision) -> Result<Option<(Vec<WatchEvent>, Revision)>, StoreError> {
        if next < self.oldest {
            return Err(StoreError::Compacted { requested: next, compact_revision: self.oldest });
        }
        let Some(&(front, _)) = self.revisions.front() else {
            return Ok(None);
        };
        let Ok(skip) = usize::try_from(next - front) else {
            return Ok(None);
        };
        let mut events = Vec::new();
        let mut last = None;
        for (revision, batch) in self.revisions.iter().skip(skip) {
            events.extend(batch.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned());
            last = Some(*revision);
            if events.len() >= MAX_BATCH_EVENTS {
                break;
            }
        }
        Ok(last.map(|last| (events, last)))
    }
}

/// Runs one watcher until its consumer goes away, the store is dropped, or
/// the history it needs is gone.
pub(super) async fn run_watcher(
    store: Weak<Inner>,
    mut changed: watch::Receiver<Revision>,
    prefix: String,
    mut next: Revision,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
) {
    loop {
        // Mark the current revision seen *before* reading the history, so a
        // write landing after the read wakes the wait below.
        changed.borrow_and_update();
        let step = {
            let Some(inner) = store.upgrade() else { return };
            let state = super::read(&inner.state);
            state.history.collect(&prefix, next)
        };
        match step {
            Err(error) => {
                tracing::info!(prefix = %prefix, error = %error, "embedded watch fell behind the history");
                let _ = tx.send(Err(error)).await;
                return;
            }
            Ok(Some((events, last))) => {
                next = last + 1;
                if !events.is_empty() && tx.send(Ok(WatchBatch { events, revision: last })).await.is_err() {
                    return;
                }
                // There may be more history to catch up on before waiting.
                continue;
            }
            Ok(None) => {}
        }
        tokio::select! {
            result = changed.changed() => {
                if result.is_err() {
                    return; // the store was dropped
                }
            }
            _ = tx.closed() => return,
        }
    }
}
