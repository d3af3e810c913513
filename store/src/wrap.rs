//! A store built on another: implement `inner` and override the calls that
//! differ (count them, delay them, fail some, run something first); every
//! other call passes through. For benchmarks and tests that need a real
//! store with a twist. Implement it by path (`impl ingest_store::StoreWrapper
//! for …`) so calls on the wrapper itself resolve to `Store` unambiguously.

use std::time::Duration;

use async_trait::async_trait;

use crate::{LeaseId, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse, WatchStream};

#[async_trait]
pub trait StoreWrapper: Send + Sync + 'static {
    /// The store every call not overridden goes to.
    fn inner(&self) -> &dyn Store;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.inner().range(request).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.inner().txn(txn).await
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, StoreError> {
        self.inner().watch_prefix(prefix, start_revision).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner().lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.inner().lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner().lease_revoke(lease).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.inner().lease_time_to_live(lease).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner().compact(revision).await
    }
}

#[async_trait]
impl<W: StoreWrapper> Store for W {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        StoreWrapper::range(self, request).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        StoreWrapper::txn(self, txn).await
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream, StoreError> {
        StoreWrapper::watch_prefix(self, prefix, start_revision).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        StoreWrapper::lease_grant(self, ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        StoreWrapper::lease_keep_alive(self, lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        StoreWrapper::lease_revoke(self, lease).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        StoreWrapper::lease_time_to_live(self, lease).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        StoreWrapper::compact(self, revision).await
    }
}
