//! WatchJobs: a snapshot of the jobs, then every change, resumable from a
//! revision.
//!
//! A watch from now (no start revision) reads the server's one follower of
//! the jobs ([`feed`]): one copy of every job's pieces per control server
//! however many streams are open; a stream keeps only the ids its client
//! holds and makes views a chunk at a time. A watch resumed from a revision
//! replays the store's history from there on a view of its own (what its
//! client missed while away).
//!
//! Every piece remembers the revision it was written at and an event only
//! applies when it is newer, so a watch can start from a revision older
//! than the loaded view: nothing is missed and nothing goes backwards.

mod feed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ingest_model::WorkerRecord;
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EventKind, Revision, Store, StoreError, WatchBatch};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::ControlError;
use crate::service::{ControlService, JobFilter};
use crate::views::{JobPieces, JobView, apply_worker, decode, live_types, scan_prefix};

pub(crate) use feed::{FeedSlot, JobsFeed};

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

type Updates = mpsc::Sender<Result<WatchUpdate, ControlError>>;

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
    let (tx, rx) = mpsc::channel(16);
    if start_revision == 0 {
        let feed = JobsFeed::get(service).await?;
        let changes = feed.subscribe();
        tokio::spawn(async move {
            let client = Client { filter, held: HashSet::new() };
            if let Err(err) = follow_feed(&feed, client, changes, &tx, shutdown).await {
                let _ = tx.send(Err(err)).await;
            }
        });
    } else {
        let mut replay = Replay::load(service, filter, start_revision).await?;
        tokio::spawn(async move {
            if let Err(err) = replay.run(&tx, shutdown).await {
                let _ = tx.send(Err(err)).await;
            }
        });
    }
    Ok(rx)
}

/// The pieces of every job (spec, claim, counters, checkpoint) and the live
/// workers, as of `revision`.
#[derive(Default)]
pub(crate) struct JobsState {
    pieces: HashMap<String, JobPieces>,
    workers: BTreeMap<String, WorkerRecord>,
    live_types: HashSet<String>,
    revision: Revision,
}

/// A job a batch of events touched.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Touched {
    /// Its spec was written or deleted.
    spec_changed: bool,
    /// Touched by an event at or before the replay's load (resuming): the
    /// client has not seen it, even if the load already held it.
    replayed: bool,
}

impl JobsState {
    /// Reads every piece; also returns the revision before the reads (a
    /// watch from just after it misses nothing).
    async fn load(store: &dyn Store, keys: &Keys) -> Result<(Self, Revision), ControlError> {
        let before = store.current_revision().await?;
        let prefix = |kind| keys.prefix(kind);
        let (jobs, owners, stats, states, workers) = futures::try_join!(
            scan_prefix(store, prefix(KeyKind::Job)),
            scan_prefix(store, prefix(KeyKind::Owner)),
            scan_prefix(store, prefix(KeyKind::Stats)),
            scan_prefix(store, prefix(KeyKind::State)),
            scan_prefix(store, prefix(KeyKind::Worker)),
        )?;
        let mut state = Self { revision: store.current_revision().await?, ..Self::default() };
        for kv in jobs.iter().chain(&owners).chain(&stats).chain(&states) {
            if let Some((kind, id)) = keys.parse(&kv.key) {
                state.pieces.entry(id.to_string()).or_default().apply(kind, kv, false);
            }
        }
        for kv in &workers {
            if let Some(worker) = decode::<WorkerRecord>(kv) {
                state.workers.insert(worker.name.clone(), worker);
            }
        }
        state.live_types = live_types(&state.workers);
        Ok((state, before))
    }

    /// Applies a batch of store events; returns the jobs whose view it may
    /// have changed. Events at or before `replay_upto` count even when the
    /// state already held them (see [`Touched::replayed`]).
    fn apply(&mut self, keys: &Keys, batch: &WatchBatch, replay_upto: Revision) -> BTreeMap<String, Touched> {
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        let mut workers_changed = false;
        for event in &batch.events {
            let Some((kind, id)) = keys.parse(&event.kv.key) else { continue };
            let deleted = event.kind == EventKind::Delete;
            match kind {
                KeyKind::Worker => {
                    workers_changed = true;
                    apply_worker(&mut self.workers, id, &event.kv, deleted);
                }
                KeyKind::Job | KeyKind::Owner | KeyKind::Stats | KeyKind::State => {
                    let applied = self.pieces.entry(id.to_string()).or_default().apply(kind, &event.kv, deleted);
                    let replayed = event.kv.mod_revision <= replay_upto;
                    if applied || replayed {
                        let slot =
                            touched.entry(id.to_string()).or_insert(Touched { spec_changed: false, replayed: false });
                        slot.spec_changed |= kind == KeyKind::Job;
                        slot.replayed |= replayed;
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
            // A type that gained or lost its last live worker changes the
            // state of every job of that type.
            let live = live_types(&self.workers);
            let flipped: HashSet<&String> = live.symmetric_difference(&self.live_types).collect();
            for (id, piece) in &self.pieces {
                if let Some((record, _)) = &piece.job
                    && flipped.contains(&record.job_type)
                {
                    touched.entry(id.clone()).or_insert(Touched { spec_changed: false, replayed: false });
                }
            }
            self.live_types = live;
        }
        for id in touched.keys() {
            if self.pieces.get(id).is_some_and(JobPieces::is_empty) {
                self.pieces.remove(id);
            }
        }
        self.revision = self.revision.max(batch.revision);
        touched
    }

    fn view(&self, id: &str) -> Option<JobView> {
        self.pieces.get(id)?.view(&self.live_types)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.pieces.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// What one stream's client holds: the jobs it was sent and not told were
/// deleted (so a job that leaves the filter or goes is reported once).
struct Client {
    filter: JobFilter,
    held: HashSet<String>,
}

impl Client {
    /// The event for job `id` as `state` has it, if the client is to hear.
    fn event(&mut self, state: &JobsState, id: &str, touched: Touched) -> Option<JobEvent> {
        match state.view(id).filter(|view| self.filter.admits(&view.record)) {
            Some(view) => {
                self.held.insert(id.to_string());
                Some(JobEvent::Upserted(Box::new(view)))
            }
            // Gone or filtered out: said once to a client that holds it (or
            // may, when replaying what it missed).
            None if self.held.remove(id) || (touched.replayed && touched.spec_changed) => {
                Some(JobEvent::Deleted(id.to_string()))
            }
            None => None,
        }
    }

    /// Every job again (after missing changes): what `state` has, and a
    /// deletion for what the client holds that it has not.
    fn resync(&mut self, state: &JobsState) -> Vec<JobEvent> {
        let touched = Touched { spec_changed: false, replayed: false };
        let mut ids = state.ids();
        ids.extend(self.held.iter().filter(|id| !state.pieces.contains_key(*id)).cloned());
        let mut events = Vec::new();
        for id in ids {
            events.extend(self.event(state, &id, touched));
        }
        events
    }
}

/// Sends `events` in chunks; false when the client went away.
async fn send(tx: &Updates, revision: Revision, events: Vec<JobEvent>, snapshot: bool) -> bool {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<JobEvent> = events.by_ref().take(SNAPSHOT_CHUNK).collect();
        if tx.send(Ok(WatchUpdate { revision, events: chunk, snapshot, synced: false })).await.is_err() {
            return false;
        }
    }
    true
}

/// A watch from now on the server's feed: the snapshot a chunk of views at a
/// time, the synced marker, then the feed's changes.
async fn follow_feed(
    feed: &JobsFeed,
    mut client: Client,
    mut changes: broadcast::Receiver<feed::Change>,
    tx: &Updates,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let (ids, loaded_at) = {
        let state = feed.read();
        (state.ids(), state.revision)
    };
    let none = Touched { spec_changed: false, replayed: false };
    for chunk in ids.chunks(SNAPSHOT_CHUNK) {
        let mut events = Vec::with_capacity(chunk.len());
        {
            let state = feed.read();
            for id in chunk {
                events.extend(client.event(&state, id, none));
            }
        }
        if !events.is_empty() && !send(tx, loaded_at, events, true).await {
            return Ok(());
        }
    }
    let synced = WatchUpdate { revision: loaded_at, events: Vec::new(), snapshot: true, synced: true };
    if tx.send(Ok(synced)).await.is_err() {
        return Ok(());
    }
    let mut seen = loaded_at;
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tx.closed() => return Ok(()),
            change = changes.recv() => change,
        };
        let (revision, events) = match change {
            Ok(change) => match &*change {
                feed::Changed::Jobs { revision, .. } if *revision <= seen => continue,
                feed::Changed::Jobs { revision, touched } => {
                    let state = feed.read();
                    let mut events = Vec::new();
                    for (id, touched) in touched {
                        events.extend(client.event(&state, id, *touched));
                    }
                    (*revision, events)
                }
                feed::Changed::Reloaded => {
                    let state = feed.read();
                    (state.revision, client.resync(&state))
                }
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "job watch fell behind the feed; sending every job again");
                let state = feed.read();
                (state.revision, client.resync(&state))
            }
            Err(broadcast::error::RecvError::Closed) => {
                return Err(ControlError::Unavailable("the job feed ended; watch again".into()));
            }
        };
        seen = seen.max(revision);
        if !events.is_empty() && !send(tx, revision, events, false).await {
            return Ok(());
        }
    }
}

/// A watch resumed from a revision: its own view, loaded now, and the store's
/// history from that revision on (compacted history: OUT_OF_RANGE).
struct Replay {
    service: ControlService,
    client: Client,
    state: JobsState,
    /// The load's revision: events up to it are sent even when the load
    /// already held them (the client has not seen them).
    loaded_at: Revision,
    next: Revision,
}

impl Replay {
    async fn load(service: &ControlService, filter: JobFilter, start_revision: Revision) -> Result<Self, ControlError> {
        let (state, _) = JobsState::load(service.store().as_ref(), service.keys()).await?;
        // The client holds what it was sent: after the replay, the jobs the
        // filter admits.
        let mut held = HashSet::new();
        for id in state.pieces.keys() {
            if state.view(id).is_some_and(|view| filter.admits(&view.record)) {
                held.insert(id.clone());
            }
        }
        let loaded_at = state.revision;
        Ok(Self {
            service: service.clone(),
            client: Client { filter, held },
            state,
            loaded_at,
            next: start_revision + 1,
        })
    }

    async fn run(&mut self, tx: &Updates, shutdown: CancellationToken) -> Result<(), ControlError> {
        loop {
            let mut stream = match self.service.store().watch_prefix(self.service.keys().root(), self.next).await {
                Ok(stream) => stream,
                Err(StoreError::Unavailable(error)) => {
                    tracing::warn!(%error, revision = self.next, "store unavailable; re-watching");
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
                        tracing::warn!(%error, revision = self.next, "watch broken; re-watching");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tx.closed() => return Ok(()),
                            () = tokio::time::sleep(REWATCH_DELAY) => break,
                        }
                    }
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(batch)) => {
                        self.next = self.next.max(batch.resume_from());
                        let touched = self.state.apply(self.service.keys(), &batch, self.loaded_at);
                        let mut events = Vec::new();
                        for (id, touched) in touched {
                            events.extend(self.client.event(&self.state, &id, touched));
                        }
                        if !events.is_empty() && !send(tx, batch.revision, events, false).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ingest_store::{EmbeddedStore, KeyValue, WatchEvent};

    use super::*;

    async fn put_job(store: &dyn Store, keys: &Keys, id: &str) {
        let value = serde_json::to_vec(&ingest_testkit::job_record(id, "demo")).expect("json");
        store.put(&keys.job(id), value, 0).await.expect("put");
    }

    /// Job ids of upserts (`+id`) and deletions (`-id`) until the next
    /// message that has any, or of the whole snapshot.
    async fn next_ids(rx: &mut mpsc::Receiver<Result<WatchUpdate, ControlError>>) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let update = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an update in time")
                .expect("the stream runs")
                .expect("no error");
            for event in update.events {
                ids.push(match event {
                    JobEvent::Upserted(view) => format!("+{}", view.record.id),
                    JobEvent::Deleted(id) => format!("-{id}"),
                });
            }
            if (!ids.is_empty() && !update.snapshot) || update.synced {
                return ids;
            }
        }
    }

    async fn streams_holding_the_feed(service: &ControlService) -> usize {
        service.jobs_feed_slot().lock().await.strong_count()
    }

    /// Every stream from now reads the server's one feed; a stream that
    /// closes leaves the others going, and the feed goes with the last.
    #[tokio::test]
    async fn streams_share_one_feed_until_the_last_goes() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let keys = Keys::default();
        let service = ControlService::new(store.clone(), keys.clone());
        put_job(store.as_ref(), &keys, "a").await;
        let token = CancellationToken::new();
        let mut one = watch_jobs(&service, JobFilter::default(), 0, token.clone()).await.expect("watch");
        let only_demo = JobFilter { job_type: Some("demo".into()), ..JobFilter::default() };
        let mut two = watch_jobs(&service, only_demo, 0, token.clone()).await.expect("watch");
        assert_eq!(next_ids(&mut one).await, ["+a"]);
        assert_eq!(next_ids(&mut two).await, ["+a"]);
        assert_eq!(streams_holding_the_feed(&service).await, 2, "one feed, held by both streams");

        put_job(store.as_ref(), &keys, "b").await;
        assert_eq!(next_ids(&mut one).await, ["+b"]);
        assert_eq!(next_ids(&mut two).await, ["+b"]);
        drop(one);
        store.delete(&keys.job("a")).await.expect("delete");
        assert_eq!(next_ids(&mut two).await, ["-a"]);
        let waited = tokio::time::Instant::now();
        while streams_holding_the_feed(&service).await != 1 {
            assert!(waited.elapsed() < Duration::from_secs(5), "the closed stream let go of the feed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(two);
        put_job(store.as_ref(), &keys, "c").await;
        while streams_holding_the_feed(&service).await != 0 {
            assert!(waited.elapsed() < Duration::from_secs(5), "the feed ends with its last stream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A new stream starts a new feed, loaded afresh.
        let mut three = watch_jobs(&service, JobFilter::default(), 0, token).await.expect("watch");
        assert_eq!(next_ids(&mut three).await, ["+b", "+c"]);
    }

    /// A stream that fell behind the feed is sent every job again, and told
    /// of the jobs it holds that are gone (once).
    #[test]
    fn a_client_that_fell_behind_is_sent_every_job_and_what_went() {
        let keys = Keys::default();
        let mut state = JobsState::default();
        let put = |id: &str, revision| WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: keys.job(id),
                value: serde_json::to_vec(&ingest_testkit::job_record(id, "demo")).unwrap_or_default(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
        };
        let touched = state.apply(&keys, &WatchBatch { events: vec![put("a", 2), put("b", 3)], revision: 3 }, 0);
        assert_eq!(touched.keys().collect::<Vec<_>>(), ["a", "b"]);
        let mut client = Client { filter: JobFilter::default(), held: ["a", "gone"].map(String::from).into() };
        let ids = |events: Vec<JobEvent>| -> Vec<String> {
            events
                .into_iter()
                .map(|e| match e {
                    JobEvent::Upserted(view) => format!("+{}", view.record.id),
                    JobEvent::Deleted(id) => format!("-{id}"),
                })
                .collect()
        };
        assert_eq!(ids(client.resync(&state)), ["+a", "+b", "-gone"]);
        assert_eq!(ids(client.resync(&state)), ["+a", "+b"], "a deletion is said once");
    }
}
