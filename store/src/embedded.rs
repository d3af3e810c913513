//! An in-process [`Store`] with etcd's semantics, for `ingest standalone`
//! and fast tests. Everything lives in memory; writes are also committed to
//! a redb file under the data directory before they return.
//!
//! Semantics follow etcd 3.4 (and the contract tests check both stores
//! alike): one global revision bumped once per write transaction; per-key
//! create/mod revision and version; compares on absent keys see 0 (a value
//! compare on an absent key fails); a key may be written at most once per
//! transaction branch ("duplicate key"); at most `max_txn_ops` operations per
//! branch (etcd's `--max-txn-ops`, 128 by default); prefix watches from any
//! revision still in the history.
//!
//! What is *not* persisted, on purpose:
//! - **History.** After a reopen, watches can start from the next revision
//!   only (an older start revision fails with `Compacted`).
//! - **Leases.** A lease's holder lives in the same process as the store, so
//!   when the process is gone so is the holder: on open, every key that was
//!   attached to a lease is deleted (in one write, one new revision), as if
//!   the leases had expired.
//!
//! Concurrency: writes queue on an async gate (so waiting writers hold no
//! thread), then run one at a time on a blocking thread (redb commits block)
//! under the writer mutex. Readers use a `RwLock` over the in-memory state
//! that a writer takes only for the in-memory apply after the disk commit,
//! so reads never wait for a disk sync. No std lock is held across an
//! `.await`.

mod disk;
pub use disk::create_private_dir;
mod txn;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{
    KeyRange, KeyValue, LeaseId, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnOp, TxnResponse,
    WatchStream,
};
use disk::Disk;
use watch::History;

/// How often expired leases are looked for.
const LEASE_TICK: Duration = Duration::from_millis(100);
/// How often non-durable commits are made durable when `fsync` is off.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Sync every commit to disk before the write returns (the default).
    /// When false, commits use redb's non-durable mode and are made durable
    /// about once a second and on a clean shutdown (the last handle dropped):
    /// a crash (kill -9, power loss) may then lose up to about a second of
    /// acknowledged writes, but the file always holds a consistent prefix.
    pub fsync: bool,
    /// Events kept in memory for watches from a past revision.
    pub max_history_events: usize,
    /// Operations allowed per transaction branch and compares per
    /// transaction, as etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Capacity of each watch's channel, in batches.
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { fsync: true, max_history_events: 100_000, max_txn_ops: 128, watch_buffer: 64 }
    }
}

/// The embedded store. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Queues writers without blocking threads; taken before `writer`.
    write_gate: tokio::sync::Mutex<()>,
    /// Serialises writes; holds the disk (none when in memory).
    writer: Mutex<Writer>,
    state: RwLock<State>,
    leases: Mutex<HashMap<LeaseId, Lease>>,
    next_lease: AtomicI64,
    /// The current revision, for waking watchers.
    revision_tx: tokio::sync::watch::Sender<Revision>,
    options: EmbeddedOptions,
}

struct Writer {
    disk: Option<Disk>,
}

struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// The revision of the last `compact` (0 if none; the loaded revision
    /// after a reopen).
    compacted: Revision,
    history: History,
    /// Keys attached to each lease.
    lease_keys: HashMap<LeaseId, BTreeSet<String>>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

// Poison only means another thread panicked while holding the lock; the data
// is still consistent because every mutation is applied without panicking
// paths, so keep going rather than cascading the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl EmbeddedStore {
    /// Opens (or creates) the store persisted under `dir`, with default
    /// options. Must be called within a tokio runtime (lease expiry runs as
    /// a task).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Opens the store under `dir`: loads every key, and deletes the keys
    /// that were attached to leases (see the module doc).
    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let mut disk = Disk::open(dir, options.fsync)?;
        let (mut kvs, mut revision) = disk.load()?;
        let orphans: BTreeMap<String, Option<KeyValue>> =
            kvs.values().filter(|kv| kv.lease != 0).map(|kv| (kv.key.clone(), None)).collect();
        if !orphans.is_empty() {
            revision += 1;
            disk.commit(&orphans, revision)?;
            disk.flush()?;
            for key in orphans.keys() {
                kvs.remove(key);
            }
        }
        tracing::info!(dir = %dir.display(), keys = kvs.len(), revision, leased_keys_deleted = orphans.len(), "embedded store opened");
        Self::start(kvs, revision, Some(disk), options)
    }

    /// A store that lives in memory only (for tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::start(BTreeMap::new(), 0, None, EmbeddedOptions::default())
    }

    fn start(
        kvs: BTreeMap<String, KeyValue>,
        revision: Revision,
        disk: Option<Disk>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Invalid("the embedded store must be opened within a tokio runtime".into()))?;
        // Lease ids only need to be unique; starting from the clock keeps
        // them unique across restarts too.
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(1);
        let inner = Arc::new(Inner {
            write_gate: tokio::sync::Mutex::new(()),
            writer: Mutex::new(Writer { disk }),
            state: RwLock::new(State {
                kvs,
                revision,
                compacted: revision,
                history: History::new(revision, options.max_history_events),
                lease_keys: HashMap::new(),
            }),
            leases: Mutex::new(HashMap::new()),
            next_lease: AtomicI64::new(i64::try_from(seed).unwrap_or(1).max(1)),
            revision_tx: tokio::sync::watch::channel(revision).0,
            options,
        });
        runtime.spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Runs a write on the writer: on a blocking thread when it commits to
    /// disk (a redb commit blocks), inline when in memory. If the caller
    /// stops waiting, a write already handed to the blocking thread still
    /// completes (as an etcd request that timed out may still apply).
    async fn write_op<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner, &mut Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _turn = self.inner.write_gate.lock().await;
        let inner = self.inner.clone();
        if lock(&inner.writer).disk.is_none() {
            let mut writer = lock(&inner.writer);
            return op(&inner, &mut writer);
        }
        tokio::task::spawn_blocking(move || {
            let mut writer = lock(&inner.writer);
            op(&inner, &mut writer)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded store write task failed: {e}")))?
    }

    /// Makes every acknowledged write durable now (only matters with
    /// `fsync: false`; call it on graceful shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write_op(|_, writer| writer.disk.as_mut().map_or(Ok(()), |disk| disk.flush())).await
    }
}

impl Inner {
    /// Whether `lease` exists and has not expired.
    fn lease_alive(&self, lease: LeaseId) -> bool {
        lock(&self.leases).get(&lease).is_some_and(|l| l.deadline > Instant::now())
    }

    /// Removes `lease` and deletes its keys in one revision. Caller holds
    /// the writer. `only_if_expired` guards the expiry path against a lease
    /// renewed in the meantime.
    fn revoke_locked(&self, writer: &mut Writer, lease: LeaseId, only_if_expired: bool) -> Result<(), StoreError> {
        {
            let mut leases = lock(&self.leases);
            match leases.get(&lease) {
                None => return Err(StoreError::LeaseNotFound(lease)),
                Some(l) if only_if_expired && l.deadline > Instant::now() => return Ok(()),
                Some(_) => {
                    leases.remove(&lease);
                }
            }
        }
        let keys: Vec<String> =
            read(&self.state).lease_keys.get(&lease).map(|keys| keys.iter().cloned().collect()).unwrap_or_default();
        let ops = keys.into_iter().map(TxnOp::delete).collect();
        let deleted = txn::execute(self, writer, Vec::new(), ops, Vec::new())?;
        tracing::debug!(lease, revision = deleted.revision, "lease revoked, keys deleted");
        Ok(())
    }
}

/// Expires leases (every [`LEASE_TICK`]) and flushes non-durable commits
/// (every [`FLUSH_EVERY`]) until the store is dropped.
async fn housekeeping(store: Weak<Inner>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<LeaseId> =
            lock(&inner.leases).iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        let flush = !inner.options.fsync && now.duration_since(last_flush) >= FLUSH_EVERY;
        if expired.is_empty() && !flush {
            continue;
        }
        if flush {
            last_flush = now;
        }
        let store = EmbeddedStore { inner };
        let result = store
            .write_op(move |inner, writer| {
                for lease in expired {
                    tracing::info!(lease, "lease expired");
                    match inner.revoke_locked(writer, lease, true) {
                        Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                match (&mut writer.disk, flush) {
                    (Some(disk), true) => disk.flush(),
                    _ => Ok(()),
                }
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(error = %error, "embedded store housekeeping failed");
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let state = read(&self.inner.state);
        Ok(txn::range(&state.kvs, &BTreeMap::new(), &request, state.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn::validate(&txn, self.inner.options.max_txn_ops)?;
        self.write_op(move |inner, writer| txn::execute(inner, writer, txn.compares, txn.success, txn.failure)).await
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, StoreError> {
        // Decide the start under the state lock: no write can slip between
        // reading the revision and the watcher's first look at the history.
        let next = {
            let state = read(&self.inner.state);
            if start_revision == 0 {
                state.revision + 1
            } else if start_revision < state.history.oldest() {
                return Err(StoreError::Compacted {
                    requested: start_revision,
                    compact_revision: state.history.oldest(),
                });
            } else {
                start_revision
            }
        };
        let (tx, rx) = mpsc::channel(self.inner.options.watch_buffer.max(1));
        let changed = self.inner.revision_tx.subscribe();
        tokio::spawn(watch::run_watcher(Arc::downgrade(&self.inner), changed, prefix.to_string(), next, tx));
        Ok(WatchStream::new(rx))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd turns a zero TTL into its minimum; so do we.
        let ttl = if ttl.is_zero() { Duration::from_secs(1) } else { ttl };
        let id = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.leases).insert(id, Lease { ttl, deadline: Instant::now() + ttl });
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut leases = lock(&self.inner.leases);
        let now = Instant::now();
        match leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(l.ttl)
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write_op(move |inner, writer| inner.revoke_locked(writer, lease, false)).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let now = Instant::now();
        Ok(lock(&self.inner.leases).get(&lease).and_then(|l| l.deadline.checked_duration_since(now)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = write(&self.inner.state);
        if revision <= state.compacted {
            return Err(StoreError::Compacted { requested: revision, compact_revision: state.compacted });
        }
        if revision > state.revision {
            return Err(StoreError::FutureRevision { requested: revision, current: state.revision });
        }
        state.compacted = revision;
        state.history.compact(revision);
        Ok(())
    }
}

/// `range` as `BTreeMap::range` bounds; `None` when it is empty (an end at
/// or before the start).
fn bounds(range: &KeyRange) -> Option<(std::ops::Bound<&str>, std::ops::Bound<&str>)> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    if range.end.is_empty() {
        return Some((Included(range.start.as_str()), Included(range.start.as_str())));
    }
    if range.end == "\0" {
        return Some((Included(range.start.as_str()), Unbounded));
    }
    // BTreeMap::range panics on an inverted range; etcd returns nothing.
    (range.start < range.end).then_some((Included(range.start.as_str()), Excluded(range.end.as_str())))
}
