//! A [`Store`] wrapper that logs every call (what it read or wrote, and how
//! long it took), to see how many store round trips an operation makes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ingest_store::{RangeRequest, RangeResponse, Store, StoreError, Txn, TxnResponse};

/// One store call: e.g. `range jobs/` and its duration.
#[derive(Clone, Debug)]
pub struct Call {
    pub what: String,
    pub took: Duration,
}

pub struct CountingStore {
    inner: Arc<dyn Store>,
    root: String,
    calls: Mutex<Vec<Call>>,
}

impl CountingStore {
    /// Wraps `inner`; keys are labelled relative to `root`.
    pub fn new(inner: Arc<dyn Store>, root: &str) -> Self {
        Self { inner, root: root.to_string(), calls: Mutex::new(Vec::new()) }
    }

    /// The calls logged since the last `take`.
    pub fn take(&self) -> Vec<Call> {
        match self.calls.lock() {
            Ok(mut calls) => std::mem::take(&mut *calls),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// `jobs/` for `/ingest/v1/jobs/0196…`: the key kind, without the id.
    fn label(&self, key: &str) -> String {
        let rest = key.strip_prefix(self.root.as_str()).unwrap_or(key);
        match rest.find('/') {
            Some(slash) => rest[..=slash].to_string(),
            None => rest.to_string(),
        }
    }

    fn log(&self, what: String, started: Instant) {
        let call = Call { what, took: started.elapsed() };
        match self.calls.lock() {
            Ok(mut calls) => calls.push(call),
            Err(poisoned) => poisoned.into_inner().push(call),
        }
    }
}

#[async_trait]
impl ingest_store::StoreWrapper for CountingStore {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let what = format!("range {}", self.label(&request.range.start));
        let started = Instant::now();
        let result = self.inner.range(request).await;
        self.log(what, started);
        result
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let started = Instant::now();
        let result = self.inner.txn(txn).await;
        self.log("txn".to_string(), started);
        result
    }
}
