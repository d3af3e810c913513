//! Several prefix watches read as one stream, for a reader that needs a few
//! kinds of keys and not the rest (a worker needs the specs, claims and
//! workers, not every checkpoint and counter written under the root).
//!
//! Each prefix keeps the revision it has delivered up to, so a watch that
//! broke is re-made from where it stopped, and the others go on. Batches of
//! different prefixes are not ordered with respect to each other: a reader
//! applies them per key (each key's events still arrive in order).

use std::task::Poll;

use crate::{Revision, Store, StoreError, WatchBatch, WatchStream};

pub struct WatchSet {
    members: Vec<Member>,
    /// The member looked at first by the next poll (round robin, so a busy
    /// prefix does not starve the others).
    first: usize,
}

struct Member {
    prefix: String,
    /// The first revision not delivered yet.
    next: Revision,
    stream: Option<WatchStream>,
}

impl WatchSet {
    /// Watches of `prefixes` from revision `from` on, not opened yet.
    pub fn new(prefixes: impl IntoIterator<Item = String>, from: Revision) -> Self {
        let members = prefixes.into_iter().map(|prefix| Member { prefix, next: from, stream: None }).collect();
        Self { members, first: 0 }
    }

    /// Opens every watch that is not running, each from its own revision.
    /// `Compacted` when one of them cannot continue: the reader must load
    /// again.
    pub async fn open(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        for member in self.members.iter_mut().filter(|m| m.stream.is_none()) {
            member.stream = Some(store.watch_prefix(&member.prefix, member.next).await?);
        }
        Ok(())
    }

    /// Whether every watch is running.
    pub fn is_open(&self) -> bool {
        self.members.iter().all(|m| m.stream.is_some())
    }

    /// The next batch of any prefix. `None` at once while a watch is not
    /// running (one ended or failed: [`WatchSet::open`] re-makes it); an
    /// error closes the watch that reported it.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        if !self.is_open() {
            return None;
        }
        std::future::poll_fn(|cx| {
            let count = self.members.len();
            for step in 0..count {
                let index = (self.first + step) % count;
                let member = &mut self.members[index];
                let Some(stream) = member.stream.as_mut() else { continue };
                let Poll::Ready(item) = stream.poll_next(cx) else { continue };
                self.first = (index + 1) % count;
                match &item {
                    Some(Ok(batch)) => member.delivered(batch),
                    Some(Err(_)) | None => member.stream = None,
                }
                return Poll::Ready(item);
            }
            Poll::Pending
        })
        .await
    }
}

impl Member {
    fn delivered(&mut self, batch: &WatchBatch) {
        self.next = self.next.max(batch.resume_from());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::EmbeddedStore;

    async fn put(store: &dyn Store, key: &str) -> Revision {
        store.put(key, b"v".to_vec(), 0).await.expect("put")
    }

    async fn keys_of(watch: &mut WatchSet, count: usize) -> Vec<String> {
        let mut keys = Vec::new();
        while keys.len() < count {
            let batch = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
                .await
                .expect("a batch in time")
                .expect("the watch runs")
                .expect("no error");
            keys.extend(batch.events.into_iter().map(|e| e.kv.key));
        }
        keys
    }

    /// Only the watched prefixes are delivered, and a watch that is re-made
    /// continues where it stopped: nothing missed, nothing twice.
    #[tokio::test]
    async fn a_set_delivers_its_prefixes_only_and_resumes_each_where_it_stopped() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let start = store.current_revision().await.expect("revision");
        let mut watch = WatchSet::new(["/a/".to_string(), "/c/".to_string()], start + 1);
        watch.open(store.as_ref()).await.expect("open");
        for key in ["/a/1", "/b/1", "/c/1"] {
            put(store.as_ref(), key).await;
        }
        let mut seen = keys_of(&mut watch, 2).await;
        seen.sort();
        assert_eq!(seen, ["/a/1", "/c/1"]);

        // Every watch closed (as when the store went away), writes meanwhile.
        for member in &mut watch.members {
            member.stream = None;
        }
        assert!(watch.next().await.is_none(), "a closed watch says so at once");
        for key in ["/c/2", "/b/2", "/a/2"] {
            put(store.as_ref(), key).await;
        }
        watch.open(store.as_ref()).await.expect("reopen");
        put(store.as_ref(), "/a/3").await;
        let mut seen = keys_of(&mut watch, 3).await;
        seen.sort();
        assert_eq!(seen, ["/a/2", "/a/3", "/c/2"]);
        let more = tokio::time::timeout(std::time::Duration::from_millis(200), watch.next()).await;
        assert!(more.is_err(), "nothing is delivered twice: {more:?}");
    }
}
