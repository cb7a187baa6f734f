//! A [`Store`] wrapper that counts the requests made through it: what the
//! catalog tests assert and `scripts/bench-catalog.sh` prints.
//!
//! With `GSDR_STORE_STATS=1` in the environment, [`super::open_target`]
//! wraps every target in one process-wide counter and the CLI prints it to
//! stderr when the command ends (`gsdr-store-stats: requests=… list=…`).
//!
//! A "request" is one call, except that a listing counts one request per
//! 1,000 keys it returns (at least one): the pages S3 answers a
//! `ListObjectsV2` with, so the figure is the same for a folder and a bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use super::{
    BoxRead, IncompleteWrite, ObjectLock, ObjectMeta, ObjectVersion, PutCondition, PutOptions,
    PutResult, StorageError, Store,
};

/// Keys S3 returns per listing page.
const KEYS_PER_PAGE: u64 = 1000;
/// The environment variable that turns on the process-wide counter.
pub const STATS_ENV: &str = "GSDR_STORE_STATS";

/// Requests counted by a [`CountedStore`], per kind.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Listing pages (objects, versions or folders).
    pub list: AtomicU64,
    /// Reads (`get_small`, `get_stream`, versions).
    pub get: AtomicU64,
    /// `head` and lock look-ups.
    pub head: AtomicU64,
    /// Writes.
    pub put: AtomicU64,
    /// Deletes.
    pub delete: AtomicU64,
    /// Anything else (probe, incomplete writes).
    pub other: AtomicU64,
}

impl RequestCounts {
    /// Every request counted so far.
    pub fn total(&self) -> u64 {
        [
            &self.list,
            &self.get,
            &self.head,
            &self.put,
            &self.delete,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// One line: `requests=12 list=2 get=9 head=0 put=1 delete=0 other=0`.
    pub fn summary(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "requests={} list={} get={} head={} put={} delete={} other={}",
            self.total(),
            l(&self.list),
            l(&self.get),
            l(&self.head),
            l(&self.put),
            l(&self.delete),
            l(&self.other)
        )
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn listed(&self, keys: usize) {
        Self::add(&self.list, (keys as u64).div_ceil(KEYS_PER_PAGE).max(1));
    }
}

/// The process-wide counter when `GSDR_STORE_STATS` is set (non-empty, not `0`).
pub fn global() -> Option<&'static Arc<RequestCounts>> {
    static GLOBAL: OnceLock<Option<Arc<RequestCounts>>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            std::env::var(STATS_ENV)
                .ok()
                .filter(|v| !v.is_empty() && v != "0")
                .map(|_| Arc::default())
        })
        .as_ref()
}

/// A store whose requests are counted in [`RequestCounts`].
#[derive(Debug)]
pub struct CountedStore {
    inner: Arc<dyn Store>,
    counts: Arc<RequestCounts>,
}

impl CountedStore {
    /// Wraps `inner`, counting into `counts`.
    pub fn new(inner: Arc<dyn Store>, counts: Arc<RequestCounts>) -> Self {
        CountedStore { inner, counts }
    }

    /// The counter.
    pub fn counts(&self) -> &Arc<RequestCounts> {
        &self.counts
    }
}

#[async_trait]
impl Store for CountedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        opts: PutOptions,
    ) -> Result<PutResult, StorageError> {
        RequestCounts::add(&self.counts.put, 1);
        self.inner.put_stream(key, body, opts).await
    }

    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        cond: PutCondition,
    ) -> Result<PutResult, StorageError> {
        RequestCounts::add(&self.counts.put, 1);
        self.inner.put_small(key, body, cond).await
    }

    async fn get_stream(&self, key: &str) -> Result<BoxRead, StorageError> {
        RequestCounts::add(&self.counts.get, 1);
        self.inner.get_stream(key).await
    }

    async fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), StorageError> {
        RequestCounts::add(&self.counts.get, 1);
        self.inner.get_small(key, max_bytes).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        RequestCounts::add(&self.counts.head, 1);
        self.inner.head(key).await
    }

    async fn object_lock(&self, key: &str) -> Result<Option<ObjectLock>, StorageError> {
        RequestCounts::add(&self.counts.head, 1);
        self.inner.object_lock(key).await
    }

    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Option<Vec<ObjectVersion>>, StorageError> {
        let out = self.inner.list_versions(prefix).await?;
        self.counts.listed(out.as_ref().map_or(0, Vec::len));
        Ok(out)
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<BoxRead, StorageError> {
        RequestCounts::add(&self.counts.get, 1);
        self.inner.get_version(key, version_id).await
    }

    async fn version_lock(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectLock>, StorageError> {
        RequestCounts::add(&self.counts.head, 1);
        self.inner.version_lock(key, version_id).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let out = self.inner.list(prefix).await?;
        self.counts.listed(out.len());
        Ok(out)
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let out = self.inner.list_after(prefix, start_after).await?;
        self.counts.listed(out.len());
        Ok(out)
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let out = self.inner.list_folders(prefix).await?;
        self.counts.listed(out.len());
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        RequestCounts::add(&self.counts.delete, 1);
        self.inner.delete(key).await
    }

    async fn probe(&self) -> Result<(), StorageError> {
        RequestCounts::add(&self.counts.other, 1);
        self.inner.probe().await
    }

    async fn incomplete_writes(&self) -> Result<Vec<IncompleteWrite>, StorageError> {
        RequestCounts::add(&self.counts.other, 1);
        self.inner.incomplete_writes().await
    }

    async fn remove_incomplete(&self, w: &IncompleteWrite) -> Result<(), StorageError> {
        RequestCounts::add(&self.counts.other, 1);
        self.inner.remove_incomplete(w).await
    }

    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        self.inner.cleanup_incomplete(older_than).await
    }
}
