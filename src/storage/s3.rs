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
//! upload that [`Store::cleanup_incomplete`] removes.
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
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::{BoxRead, ObjectMeta, PutCondition, PutOptions, PutResult, StorageError, Store};
use crate::error::RetryClass;
use crate::policy::{ChecksumMode, S3Target};

const MIB: u64 = 1 << 20;
/// Parts per multipart upload allowed by S3.
pub const MAX_PARTS: u64 = 10_000;
/// Smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Parts uploaded at one size before the part size doubles.
const PARTS_PER_TIER: u64 = 1_000;

/// How a stream is cut into parts: `first` bytes per part for the first 1,000
/// parts, doubling every 1,000 parts, never above 5 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    /// Size of the first parts, a whole number of MiB.
    pub first: u64,
}

impl PartPlan {
    /// The plan for a target whose configured part size is `configured`, for a
    /// stream expected to be at most `expected` bytes.
    pub fn new(configured: u64, expected: u64) -> PartPlan {
        let mut first = configured.clamp(MIN_PART_SIZE, MAX_PART_SIZE).div_ceil(MIB) * MIB;
        while first < MAX_PART_SIZE && (PartPlan { first }).capacity() < expected {
            first = (first + first / 4).div_ceil(MIB) * MIB;
        }
        PartPlan {
            first: first.min(MAX_PART_SIZE),
        }
    }

    /// Size of part `number` (1-based).
    pub fn size_of(&self, number: u64) -> u64 {
        let tier = (number.saturating_sub(1) / PARTS_PER_TIER).min(32) as u32;
        self.first.saturating_mul(1u64 << tier).min(MAX_PART_SIZE)
    }

    /// Bytes that 10,000 parts of this plan hold.
    pub fn capacity(&self) -> u64 {
        (0..MAX_PARTS / PARTS_PER_TIER)
            .map(|t| {
                self.size_of(t * PARTS_PER_TIER + 1)
                    .saturating_mul(PARTS_PER_TIER)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Parts needed for a stream of `total` bytes (at least 1).
    pub fn parts_for(&self, total: u64) -> u64 {
        let (mut n, mut left) = (0u64, total);
        loop {
            n += 1;
            let s = self.size_of(n);
            if left <= s {
                return n;
            }
            left -= s;
        }
    }
}

/// A bucket (and prefix) on an S3-compatible server.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Without a trailing slash; may be empty.
    prefix: String,
    part_size: u64,
    concurrency: usize,
    max_object_size: u64,
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

/// A failed S3 call, summarised for people (`SdkError`'s own `Display` says
/// only "service error"), keeping the SDK error as its source.
#[derive(Debug)]
struct S3Failure {
    summary: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for S3Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// What an SDK error means for gsdr.
enum Kind {
    AccessDenied,
    NotFound,
    NoSuchBucket,
    Precondition,
    Other(RetryClass),
}

fn kind_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Kind {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err.code() {
        Some(
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AllAccessDisabled",
        ) => return Kind::AccessDenied,
        Some("NoSuchKey" | "NotFound") => return Kind::NotFound,
        Some("NoSuchBucket") => return Kind::NoSuchBucket,
        Some("PreconditionFailed" | "ConditionalRequestConflict") => return Kind::Precondition,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeTooSkewed",
        ) => return Kind::Other(RetryClass::Temporary),
        _ => {}
    }
    match (err, status) {
        (_, Some(412)) => Kind::Precondition,
        (_, Some(404)) => Kind::NotFound,
        (_, Some(403)) => Kind::AccessDenied,
        (_, Some(s)) if s >= 500 || s == 429 => Kind::Other(RetryClass::Temporary),
        (
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_),
            _,
        ) => Kind::Other(RetryClass::Temporary),
        _ => Kind::Other(RetryClass::Permanent),
    }
}

fn summarize<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (
        err.code(),
        err.message().filter(|m| !m.trim().is_empty()),
        status,
    ) {
        (Some(code), Some(msg), Some(s)) => format!("{code}: {msg} (HTTP {s})"),
        (Some(code), None, Some(s)) => format!("{code} (HTTP {s})"),
        (None, _, Some(s)) => format!("HTTP {s}"),
        _ => match err {
            SdkError::DispatchFailure(_) => format!("cannot reach the server: {}", causes(err)),
            SdkError::TimeoutError(_) => "the request timed out".to_string(),
            _ => causes(err),
        },
    }
}

/// The error and its causes, `: `-separated, without repeating a message
/// that already contains the next one.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

impl S3Store {
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
            max_object_size: target.max_object_size.0,
        })
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
        let mut summary = summarize(&err);
        if let Some(d) = detail {
            summary = format!("{d}: {summary}");
        }
        let kind = kind_of(&err);
        let source = Box::new(S3Failure {
            summary,
            source: Box::new(err),
        });
        match kind {
            Kind::AccessDenied => StorageError::AccessDenied { op, store, key, source },
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

    async fn put_single(
        &self,
        key: &str,
        body: Bytes,
        if_absent: bool,
    ) -> Result<PutResult, StorageError> {
        let size = body.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(body));
        if if_absent {
            req = req.if_none_match("*");
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err("upload", key, None, e))?;
        Ok(PutResult {
            size,
            etag: out.e_tag().map(str::to_string),
        })
    }

    /// The multipart path: `first` is the first, full part already read.
    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        plan: PartPlan,
        if_absent: bool,
    ) -> Result<PutResult, StorageError> {
        let full = self.full(key);
        // No checksum algorithm is declared for the whole object: the SDK still
        // sends a CRC32 with every part (`when_supported`), and servers that
        // keep a composite checksum without the `-<parts>` suffix (moto) would
        // otherwise fail the SDK's response validation on every later GET.
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full);
        let created = create
            .send()
            .await
            .map_err(|e| self.err("start upload of", key, None, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(StorageError::Io {
                op: "start upload of",
                store: self.describe(),
                key: key.to_string(),
                class: RetryClass::Permanent,
                source: "the server returned no upload id".into(),
            });
        }
        let mut tasks = JoinSet::new();
        let result = self
            .upload_parts(
                key, &full, &upload_id, first, body, plan, if_absent, &mut tasks,
            )
            .await;
        if result.is_err() {
            // Cancel parts still in flight, then drop the upload; keep the first error.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            if let Err(abort_err) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    target = %self.describe(),
                    key,
                    error = %summarize(&abort_err),
                    "could not abort the failed multipart upload; `cleanup_incomplete` will remove it"
                );
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        plan: PartPlan,
        if_absent: bool,
        tasks: &mut JoinSet<(i32, Result<CompletedPart, StorageError>)>,
    ) -> Result<PutResult, StorageError> {
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut next = Some(first);
        let mut number: u64 = 0;
        let mut size: u64 = 0;
        while let Some(part) = next.take() {
            number += 1;
            if number > MAX_PARTS {
                return Err(StorageError::Config {
                    store: self.describe(),
                    message: format!(
                        "`{key}` needs more than {MAX_PARTS} parts; raise `max_object_size` (now {} bytes) or `part_size`",
                        self.max_object_size
                    ),
                });
            }
            let full_part = part.len() as u64 == plan.size_of(number);
            size += part.len() as u64;
            self.spawn_part(tasks, key, full, upload_id, number as i32, part);
            if !full_part {
                break; // a short part is the last one
            }
            // Keep at most `concurrency` parts in flight while filling the next one.
            while tasks.len() >= self.concurrency {
                let joined = tasks.join_next().await.expect("tasks is not empty");
                done.push(self.joined(key, joined)?);
            }
            let want = plan.size_of(number + 1) as usize;
            let read = read_part(body, want);
            tokio::pin!(read);
            let part = loop {
                tokio::select! {
                    biased;
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => done.push(self.joined(key, joined)?),
                    r = &mut read => break r,
                }
            };
            let part = part.map_err(|source| StorageError::Body {
                store: self.describe(),
                key: key.to_string(),
                source,
            })?;
            if !part.is_empty() {
                next = Some(part);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            done.push(self.joined(key, joined)?);
        }
        done.sort_by_key(|p| p.part_number());
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        if if_absent {
            complete = complete.if_none_match("*");
        }
        let out = complete
            .send()
            .await
            .map_err(|e| self.err("complete upload of", key, None, e))?;
        Ok(PutResult {
            size,
            etag: out.e_tag().map(str::to_string),
        })
    }

    fn spawn_part(
        &self,
        tasks: &mut JoinSet<(i32, Result<CompletedPart, StorageError>)>,
        key: &str,
        full: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) {
        let this = self.clone();
        let (key, full, upload_id) = (key.to_string(), full.to_string(), upload_id.to_string());
        tasks.spawn(async move {
            let res = this
                .client
                .upload_part()
                .bucket(&this.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(data))
                .send()
                .await;
            let res = match res {
                Ok(out) => Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build()),
                Err(e) => Err(this.err(
                    "upload",
                    &key,
                    Some(format!("part {number} of the multipart upload")),
                    e,
                )),
            };
            (number, res)
        });
    }

    fn joined(
        &self,
        key: &str,
        joined: Result<(i32, Result<CompletedPart, StorageError>), tokio::task::JoinError>,
    ) -> Result<CompletedPart, StorageError> {
        match joined {
            Ok((_, res)) => res,
            Err(e) => Err(StorageError::Io {
                op: "upload",
                store: self.describe(),
                key: key.to_string(),
                class: RetryClass::Temporary,
                source: Box::new(e),
            }),
        }
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

/// Reads up to `want` bytes (fewer only at the end of the stream).
async fn read_part(
    body: &mut (dyn AsyncRead + Send + Unpin),
    want: usize,
) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(want);
    while buf.len() < want {
        let mut limited = (&mut *body).take((want - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
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
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| match self.err("reach bucket", "", None, e) {
                StorageError::NotFound { store, .. } => StorageError::Config {
                    message: format!(
                        "bucket `{}` does not exist; create it or fix `bucket` in the target",
                        self.bucket
                    ),
                    store,
                },
                other => other,
            })?;
        Ok(())
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
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(body));
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
        self.check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.err("read", key, None, e))?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    async fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), StorageError> {
        self.check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.err("read", key, None, e))?;
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
        let mut reader = out.body.into_async_read().take(max_bytes + 1);
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
        self.check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().map(str::to_string),
                last_modified: to_chrono(out.last_modified()),
            })),
            Err(e) => match self.err("look up", key, None, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
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

    async fn cleanup_incomplete(&self, older_than: Duration) -> Result<usize, StorageError> {
        let cutoff = std::time::SystemTime::now() - older_than;
        let cutoff_secs = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut removed = 0;
        for (full, id, initiated) in self.open_uploads().await? {
            // An upload without a start time is left alone: it may be in progress.
            let Some(initiated) = initiated else { continue };
            if initiated.as_secs_f64() >= cutoff_secs {
                continue;
            }
            let key = self.relative(&full).unwrap_or(&full).to_string();
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&id)
                .send()
                .await
            {
                Ok(_) => removed += 1,
                Err(e) => match self.err("abort incomplete upload of", &key, None, e) {
                    // Completed or aborted by someone else meanwhile.
                    StorageError::NotFound { .. } => {}
                    other => return Err(other),
                },
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    #[test]
    fn two_tib_fits_in_ten_thousand_parts() {
        for configured in [5 * MIB, 16 * MIB, 64 * MIB] {
            let plan = PartPlan::new(configured, 2 * TIB);
            assert!(
                plan.parts_for(2 * TIB) <= MAX_PARTS,
                "{plan:?}: {} parts",
                plan.parts_for(2 * TIB)
            );
            assert!(plan.capacity() >= 2 * TIB);
            assert_eq!(plan.first % MIB, 0);
        }
        // S3's own maximum object size, 5 TiB, fits too.
        let plan = PartPlan::new(5 * MIB, 5 * TIB);
        assert!(plan.parts_for(5 * TIB) <= MAX_PARTS);
    }

    #[test]
    fn small_streams_keep_the_configured_part_size() {
        let plan = PartPlan::new(16 * MIB, 2 * TIB);
        assert_eq!(plan.first, 16 * MIB);
        assert_eq!(plan.size_of(1), 16 * MIB);
        assert_eq!(plan.size_of(1000), 16 * MIB);
        assert_eq!(plan.size_of(1001), 32 * MIB);
        assert_eq!(plan.parts_for(12 * MIB), 1);
        // 1,000 parts of 16 MiB, 1,000 of 32 MiB, then 64 MiB parts.
        assert_eq!(
            plan.parts_for(100 * GIB),
            2000 + (100 * GIB - 1000 * 48 * MIB).div_ceil(64 * MIB)
        );
    }

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        let plan = PartPlan::new(MIB, 2 * TIB);
        assert_eq!(plan.first, MIN_PART_SIZE);
        let huge = PartPlan::new(5 * MIB, 1 << 50);
        assert!(huge.first <= MAX_PART_SIZE);
        for n in [1, 1000, 5000, 9999, 10_000] {
            assert!(huge.size_of(n) <= MAX_PART_SIZE);
            assert!(PartPlan::new(5 * MIB, 2 * TIB).size_of(n) >= MIN_PART_SIZE);
        }
    }

    #[test]
    fn describe_names_bucket_and_prefix_only() {
        assert_eq!(describe("backups", "prod/"), "s3://backups/prod");
        assert_eq!(describe("backups", ""), "s3://backups");
    }
}
