//! `S3Store`: any S3 endpoint (MinIO, AWS, moto) through aws-sdk-s3.
//!
//! Keys are relative to the target's `prefix`: key `k` is stored as
//! `prefix/k`, and listings strip the prefix again.
//!
//! # Streaming uploads and their memory bound
//!
//! [`Store::put_stream`] reads the body into parts. A body shorter than one
//! part goes up in a single `PutObject`; anything longer becomes a multipart
//! upload with at most `upload_concurrency` parts in flight while the next part
//! is being filled, so memory is bounded by
//! `part_size × (upload_concurrency + 1)` whatever the stream's length.
//!
//! S3 allows 10,000 parts per object. The first 1,000 parts have the configured
//! part size and every further 1,000 parts double it (capped at 5 GiB), the
//! starting size being raised (in whole MiB) if needed so that 10,000 parts
//! hold `max(size_hint, max_object_size)` bytes (see [`PartPlan`]). Small
//! streams therefore keep small parts: a stream of `n` bytes never uses parts
//! much larger than `max(part_size, n / 500)`.
//!
//! On any failure — the body's reader erring ([`StorageError::Body`]) or S3
//! refusing a request — in-flight part uploads are cancelled, the multipart
//! upload is aborted and the *original* error is returned; nothing becomes
//! visible under the key. A crash (no chance to abort) leaves an incomplete
//! upload that `gsdr storage gc` ([`Store::incomplete_writes`],
//! [`Store::remove_incomplete`]) or the bucket's lifecycle rule removes.
//!
//! # Errors
//!
//! S3 errors are classified by their error *code*, not the HTTP status (moto
//! answers `AccessDenied` with HTTP 400): `AccessDenied` and signature errors →
//! [`StorageError::AccessDenied`], `NoSuchKey`/`NotFound` →
//! [`StorageError::NotFound`], `NoSuchBucket` → [`StorageError::Config`],
//! HTTP 412 / `PreconditionFailed` / `ConditionalRequestConflict` →
//! [`StorageError::PreconditionFailed`]; network failures, timeouts, 5xx and
//! throttling are [`RetryClass::Temporary`], everything else permanent.

mod capabilities;
mod error;
mod plan;
mod upload;
mod versions;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    BoxRead, IncompleteKind, IncompleteWrite, ObjectLock, ObjectMeta, PutCondition, PutOptions,
    PutResult, StorageError, Store,
};
use crate::fault::RetryClass;
use crate::storage::{ChecksumMode, S3Target};

use error::{kind_of, summarize, Kind, S3Failure};
pub use plan::{PartPlan, MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};
use upload::read_part;

/// A bucket (and prefix) on an S3-compatible server.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Without a trailing slash; may be empty.
    prefix: String,
    part_size: u64,
    concurrency: usize,
    /// Bytes of part buffers one upload may hold (see [`crate::stream::budget`]).
    upload_budget: u64,
    max_object_size: u64,
    /// Attempt timeout of requests that carry a part.
    part_timeout: Duration,
    /// A download that delivers no byte for this long fails.
    read_timeout: Duration,
    /// The endpoint as errors name it (no userinfo), if the target sets one.
    endpoint: Option<String>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the client: its config holds the credentials provider.
        f.debug_struct("S3Store")
            .field("target", &self.describe())
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.concurrency)
            .finish()
    }
}

impl S3Store {
    /// A GET of `key` (its current version, or `version`) sent, its body not read yet.
    async fn get_object(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StorageError> {
        self.check_key(key)?;
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.err("read", key, version.map(|v| format!("version {v}")), e))
    }

    /// The body of a sent GET as a stream that fails after `read_timeout` without a byte.
    fn body_stream(
        &self,
        out: aws_sdk_s3::operation::get_object::GetObjectOutput,
        what: String,
    ) -> BoxRead {
        Box::pin(super::idle::IdleTimeout::new(
            out.body.into_async_read(),
            self.read_timeout,
            format!("{what} in {}", self.describe()),
        ))
    }

    /// A PUT of `body` at `key`, its conditions and overrides still to add.
    fn put_request(
        &self,
        key: &str,
        body: Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(body))
    }

    /// Builds a client for `target`: explicit credentials when the target names
    /// them, else the SDK's default chain (env, web identity, instance role).
    /// Makes no request; see [`Store::probe`].
    pub async fn new(target: &S3Target) -> Result<S3Store, StorageError> {
        let store_name = describe(&target.bucket, &target.prefix);
        let config_err = |message: String| StorageError::Config {
            store: store_name.clone(),
            message,
        };
        if target.bucket.is_empty() {
            return Err(config_err("the bucket name is empty".into()));
        }
        let region = Region::new(target.region.clone());
        let mut b = match (&target.access_key_id, &target.secret_access_key) {
            (Some(id), Some(secret)) => {
                let id = id.read().map_err(|e| config_err(format!("access_key_id: {e}")))?;
                let secret = secret.read().map_err(|e| config_err(format!("secret_access_key: {e}")))?;
                let creds = Credentials::new(id.expose(), secret.expose(), None, None, "gsdr-policy");
                aws_sdk_s3::Config::builder()
                    .behavior_version_latest()
                    .credentials_provider(creds)
            }
            (None, None) => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(region.clone())
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&sdk)
            }
            _ => {
                return Err(config_err(
                    "set both access_key_id and secret_access_key, or neither (to use the SDK's default chain)".into(),
                ))
            }
        };
        b = b
            .region(region)
            .force_path_style(target.path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(target.request_timeout.0)
                    .build(),
            );
        if let Some(endpoint) = target.endpoint.as_deref().filter(|e| !e.is_empty()) {
            b = b.endpoint_url(endpoint);
        }
        if let Some(n) = target.max_attempts {
            b = b.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
        }
        b = match target.request_checksums {
            ChecksumMode::WhenSupported => b
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
                .response_checksum_validation(ResponseChecksumValidation::WhenSupported),
            ChecksumMode::WhenRequired => b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
        };
        if target.upload_concurrency == 0 {
            return Err(config_err("upload_concurrency must be at least 1".into()));
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: target.bucket.clone(),
            prefix: target.prefix.trim_matches('/').to_string(),
            part_size: target.part_size.0,
            concurrency: target.upload_concurrency,
            upload_budget: u64::MAX,
            max_object_size: target.max_object_size.0,
            part_timeout: target.part_timeout.0,
            read_timeout: target.read_timeout.0,
            endpoint: target
                .endpoint
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(error::without_userinfo),
        })
    }

    /// Caps the part buffers of each upload at `bytes` (the policy's memory
    /// budget share, see [`crate::stream::budget::upload_share`]).
    pub fn with_upload_budget(mut self, bytes: u64) -> Self {
        self.upload_budget = bytes;
        self
    }

    /// A config override for requests that carry a part: the longer part timeout.
    fn part_config(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(self.part_timeout)
                .build(),
        )
    }

    /// The SDK client, for bucket-level settings (lifecycle, versioning, Object Lock).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix, without a trailing slash (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full object key of `key`.
    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `key` relative to the prefix, or `None` if it lies outside it.
    fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        if key.is_empty() || key.starts_with('/') {
            return Err(StorageError::Config {
                store: self.describe(),
                message: format!("invalid object key `{key}`"),
            });
        }
        Ok(())
    }

    /// Maps an SDK error of operation `op` on `key`; `detail` (e.g. "part 7 of
    /// the multipart upload") goes in front of the server's reason.
    fn err<E>(
        &self,
        op: &'static str,
        key: &str,
        detail: Option<String>,
        err: SdkError<E, HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.describe();
        let key = key.to_string();
        // A server that cannot be reached: the endpoint once and the root
        // cause once (the SDK's layers each repeat it in other words).
        let unreachable = error::unreachable(&err, self.endpoint.as_deref());
        let mut summary = unreachable.clone().unwrap_or_else(|| summarize(&err));
        if let Some(d) = detail {
            summary = format!("{d}: {summary}");
        }
        let kind = kind_of(&err);
        let source = Box::new(S3Failure {
            summary,
            source: unreachable.is_none().then(|| Box::new(err) as _),
        });
        match kind {
            Kind::AccessDenied(reason) => StorageError::AccessDenied {
                op,
                store,
                key,
                reason,
                source,
            },
            Kind::NotFound => StorageError::NotFound { store, key },
            Kind::Precondition => StorageError::PreconditionFailed { store, key },
            Kind::NoSuchBucket => StorageError::Config {
                message: format!(
                    "bucket `{}` does not exist ({op} `{key}`: {source}); create it or fix `bucket` in the target",
                    self.bucket
                ),
                store,
            },
            Kind::Other(class) => StorageError::Io { op, store, key, class, source },
        }
    }

    /// Keys (relative to the prefix) of multipart uploads still open under the
    /// prefix, with their upload ids: what a crash or an unaborted failure leaves.
    pub async fn incomplete_uploads(&self) -> Result<Vec<(String, String)>, StorageError> {
        Ok(self
            .open_uploads()
            .await?
            .into_iter()
            .map(|(k, id, _)| (self.relative(&k).unwrap_or(&k).to_string(), id))
            .collect())
    }

    /// Open multipart uploads under the prefix: (full key, upload id, initiated).
    async fn open_uploads(
        &self,
    ) -> Result<Vec<(String, String, Option<aws_smithy_types::DateTime>)>, StorageError> {
        let list_prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&list_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list incomplete uploads under", "", None, e))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k.to_string(), id.to_string(), u.initiated().copied()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

fn describe(bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

impl S3Store {
    /// `HeadObject` of `key`; `op` names the operation in errors.
    async fn head_object(
        &self,
        key: &str,
        version: Option<&str>,
        op: &'static str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, StorageError> {
        self.check_key(key)?;
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.err(op, key, version.map(|v| format!("version {v}")), e))
    }
}

impl S3Store {
    /// `prefix` with the store's own prefix in front.
    fn full_prefix(&self, prefix: &str) -> String {
        if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        }
    }

    /// Every object under `prefix` (after `start_after` if given), sorted.
    async fn list_from(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_prefix(prefix))
            .set_start_after(
                // No `start-after` at all for "": Garage answers an empty one with nothing.
                start_after.filter(|k| !k.is_empty()).map(|k| self.full(k)),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", prefix, None, e))?;
            for o in page.contents() {
                let Some(rel) = o.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(str::to_string),
                    last_modified: to_chrono(o.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

fn to_chrono(t: Option<&aws_smithy_types::DateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        describe(&self.bucket, &self.prefix)
    }

    async fn probe(&self) -> Result<(), StorageError> {
        let head = self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.err("reach bucket", "", None, e));
        // A HEAD answer has no body, so a 403 cannot say whether the
        // credentials or the rights are wrong: ask again with a request
        // whose error comes with its code and message.
        let head = match head {
            Err(StorageError::AccessDenied { .. }) => match self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .max_keys(1)
                .send()
                .await
                .map_err(|e| self.err("reach bucket", "", None, e))
            {
                Err(
                    e @ StorageError::AccessDenied {
                        reason: super::Denied::Credentials,
                        ..
                    },
                ) => return Err(e),
                _ => head,
            },
            other => other,
        };
        head.map(|_| ())
            .map_err(|e| match e {
                // HeadBucket is allowed by s3:ListBucket, nothing else.
                StorageError::AccessDenied { store, source, .. } => StorageError::Config {
                    message: format!(
                        "reaching bucket `{}` was denied ({source}): HeadBucket needs s3:ListBucket, which gsdr's user also needs so that a missing WAL file reads as missing (404, not 403); check the credentials and grant s3:ListBucket on the bucket",
                        self.bucket
                    ),
                    store,
                },
                StorageError::NotFound { store, .. } => StorageError::Config {
                    message: format!(
                        "bucket `{}` does not exist; create it or fix `bucket` in the target",
                        self.bucket
                    ),
                    store,
                },
                other => other,
            })?;
        // A key that cannot exist must read as missing (404). Without
        // s3:ListBucket, S3 answers 403 for it instead, and gsdr could not
        // tell a missing WAL file from a forbidden one (wal-fetch, wal-push).
        let probe = format!("gsdr-probe-missing-{:016x}", rand::random::<u64>());
        match self.head_object(&probe, None, "look up").await {
            Err(StorageError::NotFound { .. }) => Ok(()),
            Ok(_) => Ok(()),
            Err(StorageError::AccessDenied { store, key, .. }) => Err(StorageError::Config {
                store,
                message: format!(
                    "looking up the missing key `{key}` was denied (403) instead of answering 404: gsdr's user lacks s3:ListBucket on bucket `{}` (besides s3:GetObject, s3:PutObject, s3:DeleteObject on the prefix); grant it — without it wal-fetch cannot tell a missing WAL file from a forbidden one and stops recovery, and wal-push fails",
                    self.bucket
                ),
            }),
            Err(e) => Err(e),
        }
    }

    async fn capabilities(
        &self,
    ) -> Result<Option<crate::storage::capabilities::Capabilities>, StorageError> {
        self.probe_capabilities().await.map(Some)
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        opts: PutOptions,
    ) -> Result<PutResult, StorageError> {
        self.check_key(key)?;
        let expected = opts.size_hint.unwrap_or(0).max(self.max_object_size);
        let plan = PartPlan::new(self.part_size, expected);
        let first = read_part(body, plan.size_of(1) as usize)
            .await
            .map_err(|source| StorageError::Body {
                store: self.describe(),
                key: key.to_string(),
                source,
            })?;
        if (first.len() as u64) < plan.size_of(1) {
            return self.put_single(key, first, opts.if_absent).await;
        }
        // Refuse early rather than upload a large stream that the conditional
        // commit will refuse anyway; the commit stays the atomic check.
        if opts.if_absent && self.head(key).await?.is_some() {
            return Err(StorageError::PreconditionFailed {
                store: self.describe(),
                key: key.to_string(),
            });
        }
        self.put_multipart(key, first, body, plan, opts.if_absent)
            .await
    }

    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        cond: PutCondition,
    ) -> Result<PutResult, StorageError> {
        self.check_key(key)?;
        let size = body.len() as u64;
        let mut req = self.put_request(key, body);
        let if_match = matches!(cond, PutCondition::IfMatch(_));
        req = match cond {
            PutCondition::Overwrite => req,
            PutCondition::IfAbsent => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        let out = req
            .send()
            .await
            .map_err(|e| match self.err("write", key, None, e) {
                // S3 answers `If-Match` on an absent object with 404: the version we
                // expected is not there, which is a lost compare-and-swap.
                StorageError::NotFound { store, key } if if_match => {
                    StorageError::PreconditionFailed { store, key }
                }
                other => other,
            })?;
        Ok(PutResult {
            size,
            etag: out.e_tag().map(str::to_string),
        })
    }

    async fn get_stream(&self, key: &str) -> Result<BoxRead, StorageError> {
        let out = self.get_object(key, None).await?;
        Ok(self.body_stream(out, format!("`{key}`")))
    }

    async fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), StorageError> {
        let out = self.get_object(key, None).await?;
        let too_large = |size: u64| StorageError::TooLarge {
            store: self.describe(),
            key: key.to_string(),
            size,
            max: max_bytes,
        };
        let declared = out.content_length().map(|n| n.max(0) as u64);
        if let Some(size) = declared.filter(|&n| n > max_bytes) {
            return Err(too_large(size));
        }
        let mut meta = ObjectMeta {
            key: key.to_string(),
            size: declared.unwrap_or(0),
            etag: out.e_tag().map(str::to_string),
            last_modified: to_chrono(out.last_modified()),
        };
        // The length was checked; `take` guards against a server that sends more.
        let mut reader = super::idle::IdleTimeout::new(
            out.body.into_async_read(),
            self.read_timeout,
            format!("`{key}` in {}", self.describe()),
        )
        .take(max_bytes + 1);
        let mut buf = BytesMut::with_capacity(meta.size as usize);
        loop {
            match reader.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(StorageError::Io {
                        op: "read",
                        store: self.describe(),
                        key: key.to_string(),
                        class: RetryClass::Temporary,
                        source: Box::new(e),
                    })
                }
            }
        }
        if buf.len() as u64 > max_bytes {
            return Err(too_large(buf.len() as u64));
        }
        meta.size = buf.len() as u64;
        Ok((buf.freeze(), meta))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        match self.head_object(key, None, "look up").await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().map(str::to_string),
                last_modified: to_chrono(out.last_modified()),
            })),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    async fn object_lock(&self, key: &str) -> Result<Option<ObjectLock>, StorageError> {
        let out = self
            .head_object(key, None, "look up the retention of")
            .await?;
        Ok(versions::lock_of(&out))
    }

    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Option<Vec<super::ObjectVersion>>, StorageError> {
        self.versions_under(prefix).await.map(Some)
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<BoxRead, StorageError> {
        self.version_stream(key, version_id).await
    }

    async fn version_lock(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectLock>, StorageError> {
        self.lock_of_version(key, version_id).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_from(prefix, None).await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_from(prefix, Some(start_after)).await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let full_prefix = self.full_prefix(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list folders of", prefix, None, e))?;
            for p in page.common_prefixes() {
                let name = p
                    .prefix()
                    .and_then(|p| p.strip_prefix(full_prefix.as_str()))
                    .and_then(|p| p.strip_suffix('/'))
                    .filter(|n| !n.is_empty());
                if let Some(n) = name {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.check_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.err("delete", key, None, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn incomplete_writes(&self) -> Result<Vec<IncompleteWrite>, StorageError> {
        let mut out = Vec::new();
        for (full, id, initiated) in self.open_uploads().await? {
            let key = self.relative(&full).unwrap_or(&full).to_string();
            let bytes = match self.uploaded_bytes(&full, &key, &id).await {
                Ok(n) => Some(n),
                // Completed or aborted since it was listed: nothing left.
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            out.push(IncompleteWrite {
                key,
                kind: IncompleteKind::MultipartUpload,
                handle: id,
                started: to_chrono(initiated.as_ref()),
                bytes,
            });
        }
        Ok(out)
    }

    async fn remove_incomplete(&self, w: &IncompleteWrite) -> Result<(), StorageError> {
        self.check_key(&w.key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(&w.key))
            .upload_id(&w.handle)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.err("abort incomplete upload of", &w.key, None, e) {
                // Completed or aborted by someone else meanwhile.
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

impl S3Store {
    /// Bytes held by the parts already uploaded to an open multipart upload.
    async fn uploaded_bytes(&self, full: &str, key: &str, id: &str) -> Result<u64, StorageError> {
        let mut total = 0u64;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| {
                    self.err("list the parts of the incomplete upload of", key, None, e)
                })?;
            total += page
                .parts()
                .iter()
                .map(|p| p.size().unwrap_or(0).max(0) as u64)
                .sum::<u64>();
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_bucket_and_prefix_only() {
        assert_eq!(describe("backups", "prod/"), "s3://backups/prod");
        assert_eq!(describe("backups", ""), "s3://backups");
    }
}
