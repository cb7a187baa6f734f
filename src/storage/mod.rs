//! Object storage: the [`Store`] trait and its implementations.
//!
//! A `Store` holds objects under `/`-separated keys relative to the target's
//! prefix. Writes are streaming ([`Store::put_stream`]) or small and
//! conditional ([`Store::put_small`]); nothing is visible under its key until
//! the write has been committed completely (S3: `CompleteMultipartUpload`;
//! folder: rename of a fully synced temp file).
//!
//! Memory bound of a streaming put: `part_size × (upload_concurrency + 1)`
//! for S3 (the part size grows only for streams beyond 1,000 parts, see
//! [`s3::PartPlan`]); one 1 MiB copy buffer for the folder store.

use crate::fault::ErrorKind;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::fault::RetryClass;

pub mod capabilities;
mod config;
pub mod counted;
pub mod fs;
pub mod idle;
pub mod lifecycle;
pub mod s3;

pub use config::*;

use crate::stream::BoxRead;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    /// Key relative to the store's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Opaque version tag used for compare-and-swap (`If-Match`).
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// An object's Object Lock retention.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectLock {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub mode: String,
    /// Until when the version cannot be deleted or overwritten.
    pub retain_until: chrono::DateTime<chrono::Utc>,
}

/// One stored version of an object, in a bucket that keeps versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Key (relative to the store's prefix).
    pub key: String,
    /// The server's version id (`null` for an object written before versioning).
    pub version_id: String,
    /// Bytes (0 for a delete marker).
    pub size: u64,
    /// When this version was written.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
    /// The current version of its key.
    pub latest: bool,
    /// A delete marker (a delete on a versioned bucket), not data.
    pub delete_marker: bool,
}

/// Condition on a small write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Overwrite whatever is there.
    Overwrite,
    /// Create only: fail with [`StorageError::PreconditionFailed`] if the key exists.
    IfAbsent,
    /// Replace only if the current version's etag matches (compare-and-swap).
    IfMatch(String),
}

/// Options for a streaming put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Bytes the caller expects to send, if known: lets S3 pick a part size.
    pub size_hint: Option<u64>,
    /// Create only: refuse to replace an existing object.
    pub if_absent: bool,
}

/// Outcome of a committed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Bytes stored.
    pub size: u64,
    /// Version tag of the stored object.
    pub etag: Option<String>,
}

/// A place to keep objects: S3 or a local folder.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// A human name for messages, e.g. `s3://bucket/prefix` (never credentials).
    fn describe(&self) -> String;

    /// Streams `body` to `key`. The object becomes visible only once the whole
    /// stream was read without error and stored; on any error nothing is left
    /// behind (a multipart upload is aborted) and the original error returned.
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        opts: PutOptions,
    ) -> Result<PutResult, StorageError>;

    /// Writes a small object (manifests, leases, reports) in one request.
    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        cond: PutCondition,
    ) -> Result<PutResult, StorageError>;

    /// Streams the object back. [`StorageError::NotFound`] if absent.
    async fn get_stream(&self, key: &str) -> Result<BoxRead, StorageError>;

    /// Reads a small object whole, refusing objects above `max_bytes`.
    async fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), StorageError>;

    /// Size and version of an object, `None` if absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// The Object Lock retention of an object's current version, `None` when
    /// it has none (or the store cannot lock: a folder never can).
    async fn object_lock(&self, key: &str) -> Result<Option<ObjectLock>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// Every version of every object under `prefix` (delete markers too),
    /// newest first per key; `None` when the store keeps no versions (a
    /// folder). What Object Lock protects lives here: an attacker's new
    /// version or delete marker hides, but cannot remove, a locked version.
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Option<Vec<ObjectVersion>>, StorageError> {
        let _ = prefix;
        Ok(None)
    }

    /// Streams version `version_id` of `key` ([`Store::list_versions`]).
    async fn get_version(&self, key: &str, version_id: &str) -> Result<BoxRead, StorageError> {
        let _ = version_id;
        Err(StorageError::Config {
            store: self.describe(),
            message: format!("keeps no object versions: cannot read a version of `{key}`"),
        })
    }

    /// The Object Lock retention of version `version_id` of `key`.
    async fn version_lock(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectLock>, StorageError> {
        let _ = (key, version_id);
        Ok(None)
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` and sorts after
    /// `start_after`, sorted by key: what is new since the last key seen
    /// (S3: `start-after`, so the server skips the rest; a folder skips the
    /// subfolders that sort before it). The default filters [`Store::list`].
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut all = self.list(prefix).await?;
        all.retain(|o| o.key.as_str() > start_after);
        Ok(all)
    }

    /// The names of the folders right under `prefix` (empty, or ending in
    /// `/`), sorted: for `db/` holding `db/full/…` and `db/wal/…`,
    /// `["full", "wal"]`. S3 answers it with one delimiter listing, a folder
    /// with one `read_dir`, so a caller can skip a big folder (the WAL)
    /// without listing its objects. The default derives it from [`Store::list`].
    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = self
            .list(prefix)
            .await?
            .iter()
            .filter_map(|o| {
                let (dir, _) = o.key.strip_prefix(prefix)?.split_once('/')?;
                (!dir.is_empty()).then(|| dir.to_string())
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    /// Deletes an object; deleting an absent one is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Checks that the target is reachable and usable (`gsdr policy check
    /// --connect`): S3 asks for the bucket and looks up a key that cannot
    /// exist (403 instead of 404 there means `s3:ListBucket` is missing), a
    /// folder must be writable. The default looks up one key, which checks
    /// connectivity and read access.
    async fn probe(&self) -> Result<(), StorageError> {
        self.head("gsdr-probe").await.map(|_| ())
    }

    /// Probes what the server can do ([`capabilities::Capabilities`]): S3
    /// writes, reads and deletes a few objects under `<prefix>/.gsdr-probe/`
    /// and reads the bucket's settings (changes none). `None` for a store
    /// that is no S3 server (a folder).
    async fn capabilities(&self) -> Result<Option<capabilities::Capabilities>, StorageError> {
        Ok(None)
    }

    /// Leftovers of interrupted writes under the store's prefix: open
    /// multipart uploads (S3) or `.tmp-*` files (folder). A write in progress
    /// looks the same; callers decide by age ([`IncompleteWrite::started`])
    /// and by who may still be writing (`gsdr storage gc` checks run leases).
    async fn incomplete_writes(&self) -> Result<Vec<IncompleteWrite>, StorageError>;

    /// Removes one leftover listed by [`Store::incomplete_writes`] (aborts the
    /// upload, deletes the temp file). One already gone is not an error.
    async fn remove_incomplete(&self, w: &IncompleteWrite) -> Result<(), StorageError>;

    /// Removes leftovers of interrupted writes (incomplete multipart uploads,
    /// temp files) started more than `older_than` ago; returns how many were
    /// removed. One without a start time is left alone: it may be in progress.
    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut removed = 0;
        for w in self.incomplete_writes().await? {
            if w.started.is_some_and(|t| t < cutoff) {
                self.remove_incomplete(&w).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// What an interrupted write leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteKind {
    /// An S3 multipart upload never completed nor aborted.
    MultipartUpload,
    /// A folder store's `.tmp-*` file never renamed into place.
    TempFile,
}

/// One leftover of an interrupted write (or a write still in progress).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncompleteWrite {
    /// The key being written, relative to the store's prefix.
    pub key: String,
    /// Upload or temp file.
    pub kind: IncompleteKind,
    /// The backend's handle: the S3 upload id, or the temp file's path relative to the folder.
    pub handle: String,
    /// When the upload was initiated (S3) or the temp file last written (folder).
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes it holds (uploaded parts, file size), if known.
    pub bytes: Option<u64>,
}

/// Opens the target named `name` of a policy: a folder or an S3 bucket
/// (its requests counted when `GSDR_STORE_STATS` is set, [`counted`]).
/// Makes no request; call [`Store::probe`] to check that it is reachable.
pub async fn open_target(
    name: &str,
    cfg: &crate::storage::TargetConfig,
    memory_budget: u64,
) -> Result<Arc<dyn Store>, StorageError> {
    use crate::storage::TargetConfig;
    let named = |e: StorageError| match e {
        StorageError::Config { store, message } => StorageError::Config {
            store: format!("`{name}` ({store})"),
            message,
        },
        other => other,
    };
    let store: Arc<dyn Store> = match cfg {
        TargetConfig::Fs(t) => Arc::new(fs::FsStore::new(&t.path).map_err(named)?),
        TargetConfig::S3(t) => Arc::new(
            s3::S3Store::new(t)
                .await
                .map_err(named)?
                .with_upload_budget(crate::stream::budget::upload_share(memory_budget)),
        ),
    };
    Ok(match counted::global() {
        Some(counts) => Arc::new(counted::CountedStore::new(store, counts.clone())),
        None => store,
    })
}

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object `{key}` not found in {store}")]
    NotFound {
        /// Store description.
        store: String,
        /// Key.
        key: String,
    },
    /// A conditional write lost: the object exists or changed.
    #[error("object `{key}` in {store} already exists or changed (conditional write refused)")]
    PreconditionFailed {
        /// Store description.
        store: String,
        /// Key.
        key: String,
    },
    /// The server refused our credentials or policy.
    #[error("{op} `{key}` in {store}: access denied (the server answered {source}); {}", .reason.advice(op))]
    AccessDenied {
        /// Operation.
        op: &'static str,
        /// Store description.
        store: String,
        /// Key.
        key: String,
        /// Which of the two the server's answer says.
        reason: Denied,
        /// Cause: the server's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An object is larger than the caller allows.
    #[error("object `{key}` in {store} is {size} bytes, more than the {max} allowed here")]
    TooLarge {
        /// Store description.
        store: String,
        /// Key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The stream to upload failed (the source or pipeline broke); the upload was abandoned.
    #[error("upload of `{key}` to {store} abandoned: the data stream failed: {source}")]
    Body {
        /// Store description.
        store: String,
        /// Key.
        key: String,
        /// Cause from the producer.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the server or the disk failed.
    #[error("{op} `{key}` in {store} failed: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Store description.
        store: String,
        /// Key.
        key: String,
        /// Retry class decided by the backend.
        class: RetryClass,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server lacks a capability the policy needs ([`capabilities::check`]).
    #[error("target {store}: the server lacks {capability} ({detail}), needed by {needed_by}: {alternative}")]
    Unsupported {
        /// Target name and store description.
        store: String,
        /// The capability, as on the wire.
        capability: &'static str,
        /// The setting or use that needs it.
        needed_by: String,
        /// What the probe saw.
        detail: String,
        /// Why, and what to do instead.
        alternative: String,
    },
    /// The target's configuration cannot work.
    #[error("target {store}: {message}")]
    Config {
        /// Store description.
        store: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The server does not accept the credentials (unknown access key, wrong secret).
    Credentials,
    /// The credentials are fine, their rights do not cover the request.
    Permission,
}

impl Denied {
    /// What to do, for operation `op` (the S3 action it needs, for a permission).
    pub fn advice(self, op: &str) -> String {
        match self {
            Denied::Credentials => "the server does not accept gsdr's credentials: check `access_key_id` and `secret_access_key` of the target (an unknown or revoked key, or a secret that is not the key's)".to_string(),
            Denied::Permission => format!(
                "gsdr's user lacks {} on the bucket: grant it in the bucket policy (or the key's rights on the bucket)",
                s3_action(op)
            ),
        }
    }
}

/// The S3 permission a store operation (the `op` of [`StorageError`]) needs.
pub fn s3_action(op: &str) -> &'static str {
    match op {
        "read" | "look up" => "s3:GetObject",
        "write" | "upload" | "start upload of" | "complete upload of" => "s3:PutObject",
        "delete" => "s3:DeleteObject",
        "list" | "reach bucket" => "s3:ListBucket",
        "list incomplete uploads under" => "s3:ListBucketMultipartUploads",
        "abort incomplete upload of" => "s3:AbortMultipartUpload",
        "list the parts of the incomplete upload of" => "s3:ListMultipartUploadParts",
        "look up the retention of" => "s3:GetObjectRetention",
        "list the versions under" => "s3:ListBucketVersions",
        _ => "the permission for this request",
    }
}

impl StorageError {
    /// Whether a retry may help.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            StorageError::Io { class, .. } => *class,
            StorageError::Body { .. } => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }

    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

impl StorageError {
    /// What the operator must fix (exit codes, `--json` error documents).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::NotFound { .. } => ErrorKind::NotFound,
            StorageError::AccessDenied { .. } => ErrorKind::AccessDenied,
            StorageError::Config { .. } | StorageError::Unsupported { .. } => {
                ErrorKind::InvalidInput
            }
            // Backends mark network failures, timeouts and 5xx temporary.
            StorageError::Io {
                class: RetryClass::Temporary,
                ..
            } => ErrorKind::Unreachable,
            StorageError::Body { .. } => ErrorKind::SourceFailed,
            _ => ErrorKind::Other,
        }
    }
}
