//! Probing an S3 server for what gsdr relies on ([`Capabilities`]).
//!
//! The probe works on a few tiny objects under `<prefix>/.gsdr-probe/<random>/`
//! and deletes them again; of the bucket it only *reads* settings (versioning,
//! Object Lock, lifecycle), never changes them. A capability counts as
//! present only when the server behaved as asked — a server that accepts
//! `If-Match` with a stale etag ignores the header, which is as bad as not
//! having it — and as missing when the server answers `NotImplemented` /
//! HTTP 501 (Garage's answer for an API it lacks) or ignores the request's
//! condition. Any other failure leaves it [`Support::Unknown`], with the
//! server's answer as the detail.
//!
//! Requests, in order: PUT (plain: if that fails the target is unusable and
//! the probe returns that error), PUT `If-None-Match: *` twice, PUT `If-Match`
//! with a stale and then the current etag, a 1-part multipart upload, a
//! ranged GET, `ListObjectVersions` + `GetBucketVersioning`,
//! `GetObjectLockConfiguration`, `GetBucketLifecycleConfiguration`, and the
//! deletes — on a versioned bucket also of every version under the probe's
//! folder (a version Object Lock holds stays until its retention ends).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled,
};
use bytes::Bytes;

use super::error::summarize;
use super::S3Store;
use crate::storage::capabilities::{Capabilities, Probe};
use crate::storage::{PutCondition, StorageError, Store};

const BODY: &[u8] = b"gsdr-capability-probe";
/// An etag no object has: a write conditional on it must be refused.
const STALE_ETAG: &str = "\"00000000000000000000000000000000\"";

/// What a failed probe request means for its capability.
fn refused<E>(e: &SdkError<E, HttpResponse>) -> Probe
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let summary = summarize(e);
    if e.code() == Some("NotImplemented") || status == Some(501) {
        Probe::no(format!("the server answered {summary}"))
    } else {
        Probe::unknown(format!("the probe failed: {summary}"))
    }
}

/// A probe that failed through gsdr's own store methods.
fn failed(e: &StorageError) -> Probe {
    let text = e.to_string();
    if text.contains("NotImplemented") || text.contains("HTTP 501") {
        Probe::no(format!("the server answered {text}"))
    } else {
        Probe::unknown(format!("the probe failed: {text}"))
    }
}

impl S3Store {
    /// Probes the server (see the module doc). An error only when even a
    /// plain write fails: the target is unreachable or unusable, and that
    /// error says why.
    pub async fn probe_capabilities(&self) -> Result<Capabilities, StorageError> {
        let base = format!(".gsdr-probe/{:016x}", rand::random::<u64>());
        let object = format!("{base}/object");
        let first = self
            .put_small(&object, Bytes::from_static(BODY), PutCondition::Overwrite)
            .await?;
        let caps = Capabilities {
            conditional_create: self.probe_create(&format!("{base}/create")).await,
            conditional_replace: self.probe_replace(&object, first.etag.as_deref()).await,
            multipart: self.probe_multipart(&format!("{base}/multipart")).await,
            ranged_get: self.probe_range(&object).await,
            versioning: self.probe_versioning(&base).await,
            object_lock: self.probe_object_lock().await,
            lifecycle: self.probe_lifecycle().await,
        };
        for k in ["object", "create", "multipart"] {
            if let Err(e) = self.delete(&format!("{base}/{k}")).await {
                tracing::warn!(event = "capability_probe_cleanup_failed", store = %self.describe(), error = %e);
            }
        }
        if caps.versioning.support == crate::storage::capabilities::Support::Yes {
            self.remove_versions_under(&base).await;
        }
        Ok(caps)
    }

    /// Probes only what can be read without writing: versioning (the
    /// bucket's status), Object Lock and lifecycle; the write capabilities
    /// are [`Support::Unknown`](crate::storage::capabilities::Support)
    /// ("not probed"). For `gsdr storage init`, which must not leave object
    /// versions in a bucket whose Object Lock it is about to configure.
    pub async fn probe_bucket_settings(&self) -> Capabilities {
        let not_probed = || Probe::unknown("not probed (bucket settings only)");
        Capabilities {
            conditional_create: not_probed(),
            conditional_replace: not_probed(),
            multipart: not_probed(),
            ranged_get: not_probed(),
            versioning: self.probe_versioning(".gsdr-probe").await,
            object_lock: self.probe_object_lock().await,
            lifecycle: self.probe_lifecycle().await,
        }
    }

    /// On a versioned bucket a delete only hides the probe's objects behind
    /// delete markers: remove every version under `base` too. A version that
    /// Object Lock holds stays until its retention ends (21 bytes each).
    async fn remove_versions_under(&self, base: &str) {
        let versions = match self.versions_under(base).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(event = "capability_probe_cleanup_failed", store = %self.describe(), error = %e);
                return;
            }
        };
        for v in versions {
            if let Err(e) = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full(&v.key))
                .version_id(&v.version_id)
                .send()
                .await
            {
                tracing::warn!(event = "capability_probe_cleanup_failed", store = %self.describe(), key = %v.key, error = %summarize(&e));
            }
        }
    }

    async fn probe_create(&self, key: &str) -> Probe {
        let body = || Bytes::from_static(BODY);
        if let Err(e) = self.put_small(key, body(), PutCondition::IfAbsent).await {
            return failed(&e);
        }
        match self.put_small(key, body(), PutCondition::IfAbsent).await {
            Err(StorageError::PreconditionFailed { .. }) => {
                Probe::yes("a second create-only write was refused (412)")
            }
            Ok(_) => Probe::no(
                "a second create-only write replaced the object: the server ignores `If-None-Match: *`",
            ),
            Err(e) => failed(&e),
        }
    }

    async fn probe_replace(&self, key: &str, etag: Option<&str>) -> Probe {
        let Some(etag) = etag else {
            return Probe::no("the server returned no ETag for a write, so nothing can compare it");
        };
        let put = |etag: &str| {
            self.put_small(
                key,
                Bytes::from_static(BODY),
                PutCondition::IfMatch(etag.to_string()),
            )
        };
        match put(STALE_ETAG).await {
            Err(StorageError::PreconditionFailed { .. }) => {}
            Ok(_) => return Probe::no(
                "a write with a stale `If-Match` etag was accepted: the server ignores `If-Match`",
            ),
            Err(e) => return failed(&e),
        }
        match put(etag).await {
            Ok(_) => Probe::yes("a stale etag was refused (412), the current one accepted"),
            Err(StorageError::PreconditionFailed { .. }) => Probe::no(
                "the server refused `If-Match` with the object's own etag: it does not compare etags",
            ),
            Err(e) => failed(&e),
        }
    }

    async fn probe_multipart(&self, key: &str) -> Probe {
        let full = self.full(key);
        let created = match self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(c) => c,
            Err(e) => return refused(&e),
        };
        let Some(id) = created.upload_id().map(str::to_string) else {
            return Probe::unknown("CreateMultipartUpload returned no upload id");
        };
        let outcome = async {
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&id)
                .part_number(1)
                .body(ByteStream::from_static(BODY))
                .send()
                .await
                .map_err(|e| refused(&e))?;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .set_e_tag(part.e_tag().map(str::to_string))
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(|e| refused(&e))?;
            Ok::<_, Probe>(())
        }
        .await;
        match outcome {
            Err(p) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&id)
                    .send()
                    .await;
                p
            }
            Ok(()) => match self.head(key).await {
                Ok(Some(m)) if m.size == BODY.len() as u64 => {
                    Probe::yes("a 1-part upload was completed")
                }
                Ok(m) => Probe::no(format!(
                    "the completed upload holds {:?} bytes, not {}",
                    m.map(|m| m.size),
                    BODY.len()
                )),
                Err(e) => failed(&e),
            },
        }
    }

    async fn probe_range(&self, key: &str) -> Probe {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range("bytes=2-5")
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => return refused(&e),
        };
        match out.body.collect().await.map(|b| b.into_bytes()) {
            Ok(b) if b[..] == BODY[2..=5] => Probe::yes("bytes 2–5 came back alone"),
            Ok(b) if b[..] == *BODY => {
                Probe::no("the server ignored `Range` and sent the whole object")
            }
            Ok(b) => Probe::no(format!("a range of 4 bytes came back as {} bytes", b.len())),
            Err(e) => Probe::unknown(format!("reading the ranged answer failed: {e}")),
        }
    }

    async fn probe_versioning(&self, base: &str) -> Probe {
        if let Err(e) = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(self.full(base))
            .max_keys(1)
            .send()
            .await
        {
            return refused(&e);
        }
        match self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(v) => Probe::yes(match v.status() {
                Some(BucketVersioningStatus::Enabled) => "enabled on the bucket",
                Some(BucketVersioningStatus::Suspended) => "supported; suspended on the bucket",
                _ => "supported; off on the bucket",
            }),
            Err(e) => refused(&e),
        }
    }

    async fn probe_object_lock(&self) -> Probe {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => {
                let on = o
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                Probe::yes(if on {
                    "enabled on the bucket"
                } else {
                    "supported; not enabled on the bucket"
                })
            }
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => {
                Probe::yes("supported; the bucket was created without Object Lock")
            }
            Err(e) => refused(&e),
        }
    }

    async fn probe_lifecycle(&self) -> Probe {
        match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => Probe::yes(format!("{} rule(s) on the bucket", o.rules().len())),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => {
                Probe::yes("supported; no rules on the bucket")
            }
            Err(e) => refused(&e),
        }
    }
}
