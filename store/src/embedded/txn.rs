//! Transactions and ranges of the embedded store.
//!
//! A transaction runs against a read view (the committed keys plus an
//! overlay of its own writes so far), so that it can be written to disk
//! before anything becomes visible to readers or watchers.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use super::{Inner, State, Writer, bounds, read, write};
use crate::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, StoreError, Txn,
    TxnOp, TxnOpResponse, TxnResponse, WatchEvent,
};

/// A transaction's own writes: `Some` is a put, `None` a delete.
type Overlay = BTreeMap<String, Option<KeyValue>>;

/// Rejects what etcd rejects before running a transaction: too many
/// operations, empty keys, and a key written twice in one branch.
pub(super) fn validate(txn: &Txn, max_ops: usize) -> Result<(), StoreError> {
    if txn.compares.len() > max_ops || txn.success.len() > max_ops || txn.failure.len() > max_ops {
        return Err(StoreError::Invalid(format!("too many operations in txn request (at most {max_ops} per branch)")));
    }
    if txn.compares.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::Invalid("key is not provided".into()));
    }
    for branch in [&txn.success, &txn.failure] {
        let mut puts = HashSet::new();
        for op in branch {
            match op {
                TxnOp::Put { key, .. } if key.is_empty() => {
                    return Err(StoreError::Invalid("key is not provided".into()));
                }
                TxnOp::Put { key, .. } if !puts.insert(key.as_str()) => {
                    return Err(StoreError::Invalid(format!("duplicate key given in txn request: {key:?}")));
                }
                TxnOp::Delete { range } | TxnOp::Range(RangeRequest { range, .. }) if range.start.is_empty() => {
                    return Err(StoreError::Invalid("key is not provided".into()));
                }
                _ => {}
            }
        }
        for op in branch {
            if let TxnOp::Delete { range } = op
                && let Some(key) = puts.iter().find(|key| range.contains(key))
            {
                return Err(StoreError::Invalid(format!("duplicate key given in txn request: {key:?}")));
            }
        }
    }
    Ok(())
}

/// Runs a transaction; the caller holds the writer. Writes go to disk, then
/// to memory and the history in one step under the state lock, then
/// watchers are woken.
pub(super) fn execute(
    inner: &Inner,
    writer: &mut Writer,
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
) -> Result<TxnResponse, StoreError> {
    let mut overlay = Overlay::new();
    let mut events = Vec::new();
    let mut responses = Vec::new();
    let (succeeded, revision) = {
        // Only writers change the keys and we are the writer, so this view
        // stays valid after the read lock is released below.
        let state = read(&inner.state);
        let base = &state.kvs;
        let succeeded = compares.iter().all(|c| holds(get(base, &overlay, &c.key), c));
        let new_revision = state.revision + 1;
        for op in if succeeded { success } else { failure } {
            match op {
                TxnOp::Put { key, value, lease } => {
                    if lease != 0 && !inner.lease_alive(lease) {
                        return Err(StoreError::LeaseNotFound(lease));
                    }
                    let previous = get(base, &overlay, &key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: previous.map_or(new_revision, |p| p.create_revision),
                        mod_revision: new_revision,
                        version: previous.map_or(1, |p| p.version + 1),
                        lease,
                    };
                    events.push(WatchEvent { kind: EventKind::Put, kv: kv.clone() });
                    overlay.insert(key, Some(kv));
                    responses.push(TxnOpResponse::Put);
                }
                TxnOp::Delete { range } => {
                    let keys: Vec<String> = match bounds(&range) {
                        Some(b) => merged(base, &overlay, b).map(|kv| kv.key.clone()).collect(),
                        None => Vec::new(),
                    };
                    for key in &keys {
                        // etcd's delete event: the key and the delete's revision only.
                        let kv = KeyValue {
                            key: key.clone(),
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: new_revision,
                            version: 0,
                            lease: 0,
                        };
                        events.push(WatchEvent { kind: EventKind::Delete, kv });
                        overlay.insert(key.clone(), None);
                    }
                    responses.push(TxnOpResponse::Delete(keys.len() as i64));
                }
                TxnOp::Range(request) => {
                    // Like etcd, a range after a write in the same txn reports the new revision.
                    let at = if overlay.is_empty() { state.revision } else { new_revision };
                    responses.push(TxnOpResponse::Range(range(base, &overlay, &request, at)));
                }
            }
        }
        if overlay.is_empty() {
            return Ok(TxnResponse { succeeded, revision: state.revision, responses });
        }
        (succeeded, new_revision)
    };
    if let Some(disk) = &mut writer.disk {
        disk.commit(&overlay, revision)?;
    }
    apply(&mut write(&inner.state), overlay, events, revision);
    inner.revision_tx.send_replace(revision);
    Ok(TxnResponse { succeeded, revision, responses })
}

fn apply(state: &mut State, overlay: Overlay, events: Vec<WatchEvent>, revision: Revision) {
    for (key, change) in overlay {
        let new_lease = change.as_ref().map_or(0, |kv| kv.lease);
        let old = match change {
            Some(kv) => state.kvs.insert(key.clone(), kv),
            None => state.kvs.remove(&key),
        };
        if let Some(old) = old
            && old.lease != 0
            && let Some(keys) = state.lease_keys.get_mut(&old.lease)
        {
            keys.remove(&key);
            if keys.is_empty() {
                state.lease_keys.remove(&old.lease);
            }
        }
        if new_lease != 0 {
            state.lease_keys.entry(new_lease).or_default().insert(key);
        }
    }
    state.revision = revision;
    state.history.push(revision, events);
}

/// A range read over the committed keys and a transaction's overlay.
pub(super) fn range(
    base: &BTreeMap<String, KeyValue>,
    overlay: &Overlay,
    request: &RangeRequest,
    revision: Revision,
) -> RangeResponse {
    let mut response = RangeResponse { revision, ..RangeResponse::default() };
    let Some(b) = bounds(&request.range) else {
        return response;
    };
    let mut keys = merged(base, overlay, b);
    if request.count_only {
        response.count = keys.count() as i64;
        return response;
    }
    let limit = usize::try_from(request.limit).ok().filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut count = 0usize;
    for kv in keys.by_ref() {
        count += 1;
        if response.kvs.len() < limit {
            let mut kv = kv.clone();
            if request.keys_only {
                kv.value = Vec::new();
            }
            response.kvs.push(kv);
        }
    }
    response.more = count > response.kvs.len();
    response.count = count as i64;
    response
}

/// The key as the transaction sees it.
fn get<'a>(base: &'a BTreeMap<String, KeyValue>, overlay: &'a Overlay, key: &str) -> Option<&'a KeyValue> {
    match overlay.get(key) {
        Some(change) => change.as_ref(),
        None => base.get(key),
    }
}

/// Whether a compare holds; absent keys have revisions, version and lease 0,
/// and a value compare on an absent key fails (as in etcd).
fn holds(kv: Option<&KeyValue>, compare: &Compare) -> bool {
    let ordering = match &compare.target {
        CompareTarget::CreateRevision(r) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
        CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
        CompareTarget::Lease(l) => kv.map_or(0, |kv| kv.lease).cmp(l),
        CompareTarget::Value(v) => match kv {
            Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            None => return false,
        },
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
    }
}

/// The committed keys in `b` with the overlay applied, in key order.
fn merged<'a>(
    base: &'a BTreeMap<String, KeyValue>,
    overlay: &'a Overlay,
    b: (Bound<&'a str>, Bound<&'a str>),
) -> impl Iterator<Item = &'a KeyValue> + 'a {
    let mut committed = base.range::<str, _>(b).peekable();
    let mut own = overlay.range::<str, _>(b).peekable();
    std::iter::from_fn(move || {
        loop {
            let order = match (committed.peek(), own.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((c, _)), Some((o, _))) => c.as_str().cmp(o.as_str()),
            };
            if order == Ordering::Less {
                return committed.next().map(|(_, kv)| kv);
            }
            if order == Ordering::Equal {
                committed.next(); // shadowed by the overlay
            }
            if let Some((_, Some(kv))) = own.next() {
                return Some(kv);
            }
            // A delete in the overlay: skip the key.
        }
    })
}
