//! A worker's view of the cluster: the job specs, the claims and the live
//! workers, loaded by range reads and kept current by a watch of each of
//! their prefixes. Every entry remembers the revision it was written at and
//! an event only applies when newer, so the watch may start before the load
//! ended and the prefixes' batches need no order between them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::spec::RunSpec;
use ingest_model::{JobRecord, OwnerRecord, UNREADABLE_OWNER, WorkerRecord, WorkerState};
use ingest_store::keys::{KeyKind, Keys};
use ingest_store::{EventKind, KeyValue, LeaseId, Revision, Store, StoreError, WatchBatch, scan_prefix};

/// A claim on a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// One copy per worker name, shared by its claims (a worker's view
    /// holds every job's claim).
    pub worker: Arc<str>,
    /// The claim key's create revision.
    pub epoch: Revision,
    pub lease: LeaseId,
}

#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub workers: HashMap<String, (WorkerRecord, Revision)>,
    /// Job specs: every job's, most of them other workers' (see [`JobSpec`]).
    pub jobs: HashMap<String, (JobSpec, Revision)>,
    /// The host each paced job is placed by (`catalogue::paced_host`); other
    /// jobs are placed by their id.
    pub hosts: HashMap<String, Arc<str>>,
    pub claims: HashMap<String, (Claim, Revision)>,
    /// When this worker first saw each live peer (local monotonic time).
    pub first_seen: HashMap<String, tokio::time::Instant>,
    /// When a claim of each worker last came in (local monotonic time): a
    /// peer whose claims still come is working through its share.
    pub last_claim: HashMap<Arc<str>, tokio::time::Instant>,
    /// Claims this worker released itself, with the revision of the release:
    /// older events for them are stale.
    released: HashMap<String, Revision>,
    /// Revision of the load; the watch continues after it.
    pub loaded_at: Revision,
    /// One copy of each job type's and worker's name, shared by the specs and claims.
    names: HashSet<Arc<str>>,
}

/// A job's spec as the view holds it. Most specs in a cluster are other
/// workers' jobs (100 000 of them on every worker): of those the view keeps
/// what placement reads, decoded, and the record as stored; the decoded
/// record only of the jobs this worker runs, shared with their runners.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub job_type: Arc<str>,
    pub paused: bool,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    Decoded(Arc<RunSpec>),
    Stored(Box<[u8]>),
}

impl JobSpec {
    /// A spec held as stored, as the watch leaves it.
    #[cfg(test)]
    pub fn stored(record: &JobRecord) -> Self {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        Self { job_type: record.job_type.as_str().into(), paused: record.paused, body: Body::Stored(bytes.into()) }
    }

    /// The whole record (decoded again when only stored; it decoded when it
    /// came in, so `None` is not expected).
    pub fn record(&self) -> Option<Arc<RunSpec>> {
        match &self.body {
            Body::Decoded(record) => Some(record.clone()),
            Body::Stored(bytes) => RunSpec::decode(bytes).map(Arc::new),
        }
    }
}

/// What a batch of events changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub workers: bool,
    /// Jobs whose spec or claim changed.
    pub jobs: Vec<String>,
}

impl Changes {
    /// Nothing that scheduling looks at changed (e.g. only checkpoints or
    /// counters were written).
    pub fn is_empty(&self) -> bool {
        !self.workers && self.jobs.is_empty()
    }
}

impl ClusterView {
    /// Reads the specs and claims, then the workers: the peers that
    /// registered while 100 000 specs loaded (seconds, in a cold start) are
    /// in the view its first decision ranks by. Read first, they were not:
    /// a worker whose view knew only itself claimed every job.
    pub async fn load(store: &dyn Store, keys: &Keys) -> Result<Self, StoreError> {
        let loaded_at = store.current_revision().await?;
        let (specs, owners) = (keys.prefix(KeyKind::Job), keys.prefix(KeyKind::Owner));
        let (jobs, claims) = futures::try_join!(scan_prefix(store, &specs), scan_prefix(store, &owners))?;
        let workers = scan_prefix(store, &keys.prefix(KeyKind::Worker)).await?;
        let mut view = Self { loaded_at, ..Self::default() };
        for kv in jobs.iter().chain(&claims).chain(&workers) {
            view.apply_kv(keys, kv, false);
        }
        Ok(view)
    }

    /// Applies a batch of watch events.
    pub fn apply(&mut self, keys: &Keys, batch: &WatchBatch) -> Changes {
        let mut changes = Changes::default();
        for event in &batch.events {
            match self.apply_kv(keys, &event.kv, event.kind == EventKind::Delete) {
                Some(Touched::Worker) => changes.workers = true,
                Some(Touched::Job(id)) => changes.jobs.push(id),
                None => {}
            }
        }
        changes
    }

    /// Applies keys read outside the watch (by a claim that failed): newer
    /// than the view, or older and ignored like a stale event.
    pub fn apply_read(&mut self, keys: &Keys, kvs: &[KeyValue]) -> Changes {
        let mut changes = Changes::default();
        for kv in kvs {
            match self.apply_kv(keys, kv, false) {
                Some(Touched::Worker) => changes.workers = true,
                Some(Touched::Job(id)) => changes.jobs.push(id),
                None => {}
            }
        }
        changes
    }

    fn apply_kv(&mut self, keys: &Keys, kv: &KeyValue, deleted: bool) -> Option<Touched> {
        let (kind, name) = keys.parse(&kv.key)?;
        let rev = kv.mod_revision;
        match kind {
            KeyKind::Job => {
                let mut host = None;
                let names = &mut self.names;
                let spec = || {
                    // Decoded whole once: what does not decode is skipped.
                    let record = decode::<JobRecord>(kv)?;
                    host = crate::catalogue::paced_host(&record.job_type, &record.params);
                    let job_type = intern(names, &record.job_type);
                    Some(JobSpec { job_type, paused: record.paused, body: Body::Stored(kv.value.clone().into()) })
                };
                apply_entry(&mut self.jobs, name, rev, deleted, spec)?;
                match host {
                    Some(host) => self.hosts.insert(name.to_string(), host.into()),
                    None => self.hosts.remove(name),
                };
                Some(Touched::Job(name.to_string()))
            }
            KeyKind::Owner => {
                if self.released.get(name).is_some_and(|released| *released >= rev) {
                    return None;
                }
                self.released.remove(name);
                // A claim that does not decode is still a claim (its key, lease
                // and revision are real): held by someone this worker cannot
                // name, so nobody tries to claim the job over it; it goes
                // when its lease does.
                let names = &mut self.names;
                let claim = || {
                    let owner = decode::<OwnerRecord>(kv);
                    let worker = intern(names, owner.as_ref().map_or(UNREADABLE_OWNER, |o| o.worker.as_str()));
                    Some(Claim { worker, epoch: kv.create_revision, lease: kv.lease })
                };
                apply_entry(&mut self.claims, name, rev, deleted, claim)?;
                if let Some((claim, _)) = self.claims.get(name).filter(|_| !deleted) {
                    self.last_claim.insert(claim.worker.clone(), tokio::time::Instant::now());
                }
                Some(Touched::Job(name.to_string()))
            }
            KeyKind::Worker => {
                apply_entry(&mut self.workers, name, rev, deleted, || decode::<WorkerRecord>(kv))?;
                if deleted {
                    self.first_seen.remove(name);
                    self.last_claim.remove(name);
                } else {
                    self.first_seen.entry(name.to_string()).or_insert_with(tokio::time::Instant::now);
                }
                Some(Touched::Worker)
            }
            _ => None,
        }
    }

    /// Holds `job`'s spec decoded while this worker runs it: the runner's
    /// copy (when the view holds that revision).
    pub fn hold_decoded(&mut self, job: &str, revision: Revision, record: &Arc<RunSpec>) {
        if let Some((spec, held)) = self.jobs.get_mut(job)
            && *held == revision
        {
            spec.body = Body::Decoded(record.clone());
        }
    }

    /// Records a claim this worker just won, before the watch reports it.
    pub fn record_claim(&mut self, id: &str, worker: &str, epoch: Revision, lease: LeaseId) {
        let claim = Claim { worker: intern(&mut self.names, worker), epoch, lease };
        self.claims.insert(id.to_string(), (claim, epoch));
    }

    /// Records a claim this worker just released at `revision`, before the
    /// watch reports it.
    pub fn record_release(&mut self, id: &str, revision: Revision) {
        self.claims.remove(id);
        self.released.insert(id.to_string(), revision);
    }

    /// What `job` is ranked by: its host when it is paced, else its id.
    pub fn rank_key<'a>(&'a self, job: &'a str) -> &'a str {
        self.hosts.get(job).map_or(job, |host| host)
    }

    /// Active workers that run `job_type`, with their weights.
    pub fn candidates(&self, job_type: &str) -> Vec<crate::assign::Candidate<'_>> {
        self.workers
            .values()
            .filter(|(w, _)| w.state == WorkerState::Active && w.types.iter().any(|t| t == job_type))
            .map(|(w, _)| crate::assign::Candidate { name: w.name.as_str(), weight: w.weight })
            .collect()
    }
}

enum Touched {
    Worker,
    Job(String),
}

/// Puts or removes `name` if the event at `rev` is newer than what is held;
/// `None` when nothing changed.
fn apply_entry<T>(
    map: &mut HashMap<String, (T, Revision)>,
    name: &str,
    rev: Revision,
    deleted: bool,
    value: impl FnOnce() -> Option<T>,
) -> Option<()> {
    if map.get(name).is_some_and(|(_, held)| *held >= rev) {
        return None;
    }
    if deleted {
        return map.remove(name).map(|_| ());
    }
    map.insert(name.to_string(), (value()?, rev));
    Some(())
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "skipping undecodable record");
            None
        }
    }
}

/// The one copy of `name` in `names`.
fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(name) = names.get(name) {
        return name.clone();
    }
    let name: Arc<str> = name.into();
    names.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use ingest_store::{KeyValue, WatchBatch, WatchEvent};

    use super::*;

    fn worker_kv(keys: &Keys, name: &str, types: &[&str], state: WorkerState, rev: Revision) -> KeyValue {
        let record = WorkerRecord {
            name: name.into(),
            state,
            weight: 1.0,
            types: types.iter().map(|t| t.to_string()).collect(),
            version: "test".into(),
            start_time: 0,
        };
        KeyValue {
            key: keys.worker(name),
            value: serde_json::to_vec(&record).unwrap_or_default(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 7,
        }
    }

    fn put(kv: KeyValue) -> WatchEvent {
        WatchEvent { kind: EventKind::Put, kv }
    }

    #[test]
    fn only_active_workers_that_run_the_type_are_candidates() {
        let keys = Keys::default();
        let mut view = ClusterView::default();
        let events = vec![
            put(worker_kv(&keys, "feeds", &["rss", "demo"], WorkerState::Active, 2)),
            put(worker_kv(&keys, "social", &["reddit"], WorkerState::Active, 3)),
            put(worker_kv(&keys, "leaving", &["rss"], WorkerState::Draining, 4)),
        ];
        let changes = view.apply(&keys, &WatchBatch { events, revision: 4 });
        assert!(changes.workers);
        let names = |t: &str| view.candidates(t).iter().map(|c| c.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names("rss"), ["feeds"]);
        assert_eq!(names("reddit"), ["social"]);
        assert!(names("weather").is_empty());
    }

    #[test]
    fn stale_events_do_not_undo_newer_state() {
        let keys = Keys::default();
        let mut view = ClusterView::default();
        let newer = worker_kv(&keys, "w", &["demo"], WorkerState::Draining, 9);
        view.apply(&keys, &WatchBatch { events: vec![put(newer)], revision: 9 });
        let older = worker_kv(&keys, "w", &["demo"], WorkerState::Active, 5);
        view.apply(&keys, &WatchBatch { events: vec![put(older)], revision: 9 });
        assert!(view.candidates("demo").is_empty(), "the draining state (newer) wins");
        // A claim released locally ignores the (older) event of its creation.
        view.record_release("job-1", 12);
        let mut claim = worker_kv(&keys, "x", &[], WorkerState::Active, 11);
        claim.key = keys.owner("job-1");
        claim.value = br#"{"worker":"w"}"#.to_vec();
        view.apply(&keys, &WatchBatch { events: vec![put(claim)], revision: 12 });
        assert!(!view.claims.contains_key("job-1"));
    }

    /// A spec from the watch is kept as stored and reads back whole; the
    /// jobs this worker runs share the runner's decoded copy, and a spec
    /// that does not decode leaves the view as it was.
    #[test]
    fn specs_are_kept_stored_until_run_here() {
        let keys = Keys::default();
        let mut view = ClusterView::default();
        let mut record = serde_json::json!({
            "id": "job-1", "name": "job-1", "type": "rss", "params": {"url": "https://Feeds.Example.org/a.xml"},
            "interval": 60000, "paused": false, "create_time": 1, "update_time": 1
        });
        let mut kv = worker_kv(&keys, "x", &[], WorkerState::Active, 5);
        kv.key = keys.job("job-1");
        kv.value = serde_json::to_vec(&record).expect("json");
        view.apply(&keys, &WatchBatch { events: vec![put(kv.clone())], revision: 5 });
        let (spec, revision) = view.jobs.get("job-1").cloned().expect("the spec is in the view");
        assert_eq!((&*spec.job_type, spec.paused, revision), ("rss", false, 5));
        assert!(matches!(spec.body, Body::Stored(_)));
        let whole = spec.record().expect("the stored spec decodes");
        assert_eq!(whole.params().get("url").and_then(|u| u.as_str()), Some("https://Feeds.Example.org/a.xml"));
        assert_eq!(view.rank_key("job-1"), "feeds.example.org", "a paced job ranks by its host");

        view.hold_decoded("job-1", 4, &whole);
        assert!(matches!(view.jobs["job-1"].0.body, Body::Stored(_)), "another revision is not held");
        view.hold_decoded("job-1", 5, &whole);
        let held = view.jobs["job-1"].0.record().expect("held");
        assert!(Arc::ptr_eq(&held, &whole), "one decoded copy, the runner's");

        kv.value = b"{not json".to_vec();
        kv.mod_revision = 6;
        view.apply(&keys, &WatchBatch { events: vec![put(kv.clone())], revision: 6 });
        assert_eq!(view.jobs["job-1"].1, 5, "an undecodable spec changes nothing");
        record["paused"] = true.into();
        kv.value = serde_json::to_vec(&record).expect("json");
        kv.mod_revision = 7;
        view.apply(&keys, &WatchBatch { events: vec![put(kv)], revision: 7 });
        assert!(view.jobs["job-1"].0.paused);
    }

    /// The embedded store, where a peer registers when the specs are first
    /// read (as in a cold start, where loading 100 000 specs takes seconds).
    struct PeerRegistersDuringLoad {
        inner: ingest_store::EmbeddedStore,
        keys: Keys,
        registered: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl ingest_store::StoreWrapper for PeerRegistersDuringLoad {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }

        async fn range(&self, request: ingest_store::RangeRequest) -> Result<ingest_store::RangeResponse, StoreError> {
            let specs = request.range.start.starts_with(&self.keys.prefix(KeyKind::Job));
            if specs && !self.registered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // The specs take a while; whatever else is read meanwhile
                // sees no peer yet.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let peer = worker_kv(&self.keys, "peer", &["demo"], WorkerState::Active, 0);
                self.inner.put(&peer.key, peer.value, 0).await?;
            }
            self.inner.range(request).await
        }
    }

    /// The peers a view ranks by are read after the specs: one that
    /// registered while they loaded is in it (read before, it was not, and
    /// a worker that knew only itself claimed every job).
    #[tokio::test]
    async fn a_peer_registered_while_the_specs_load_is_in_the_view() {
        let keys = Keys::default();
        let store = PeerRegistersDuringLoad {
            inner: ingest_store::EmbeddedStore::in_memory().expect("store"),
            keys: keys.clone(),
            registered: Default::default(),
        };
        let me = worker_kv(&keys, "me", &["demo"], WorkerState::Active, 0);
        store.inner.put(&me.key, me.value, 0).await.expect("put");
        let job = serde_json::to_vec(&ingest_testkit::job_record("job-1", "demo")).expect("json");
        store.inner.put(&keys.job("job-1"), job, 0).await.expect("put");

        let view = ClusterView::load(&store, &keys).await.expect("load");
        assert!(store.registered.load(std::sync::atomic::Ordering::SeqCst), "the specs were read");
        let mut names: Vec<&str> = view.candidates("demo").iter().map(|c| c.name).collect();
        names.sort_unstable();
        assert_eq!(names, ["me", "peer"]);
        assert!(view.jobs.contains_key("job-1"));
    }

    /// A claim record that does not decode still holds its job: nobody
    /// claims over it (the claim goes when its lease does).
    #[test]
    fn an_unreadable_claim_still_holds_its_job() {
        let keys = Keys::default();
        let mut view = ClusterView::default();
        let mut claim = worker_kv(&keys, "x", &[], WorkerState::Active, 11);
        claim.key = keys.owner("job-1");
        claim.value = b"{not json".to_vec();
        view.apply(&keys, &WatchBatch { events: vec![put(claim)], revision: 11 });
        let held = view.claims.get("job-1").map(|(c, _)| c.clone()).expect("the claim is in the view");
        assert_eq!(held, Claim { worker: UNREADABLE_OWNER.into(), epoch: 11, lease: 7 });
    }
}
