//! Object versions on a versioned bucket: listing them, reading one, and its
//! Object Lock retention. What a ransomware restore reads when an attacker
//! has written new versions or delete markers over the backups.

use aws_sdk_s3::operation::head_object::HeadObjectOutput;

use super::{to_chrono, S3Store};
use crate::storage::{ObjectLock, ObjectVersion, StorageError};
use crate::stream::BoxRead;

impl S3Store {
    /// Every version and delete marker under `prefix`, newest first per key.
    pub(super) async fn versions_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<ObjectVersion>, StorageError> {
        let full = self.full(prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list the versions under", prefix, None, e))?;
            for v in page.versions() {
                let Some(key) = v.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                out.push(ObjectVersion {
                    key: key.to_string(),
                    version_id: v.version_id().unwrap_or("null").to_string(),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_chrono(v.last_modified()),
                    latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                });
            }
            for d in page.delete_markers() {
                let Some(key) = d.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                out.push(ObjectVersion {
                    key: key.to_string(),
                    version_id: d.version_id().unwrap_or("null").to_string(),
                    size: 0,
                    last_modified: to_chrono(d.last_modified()),
                    latest: d.is_latest().unwrap_or(false),
                    delete_marker: true,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        // Newest first per key; the server's own order is that already, but
        // versions and delete markers come in two lists.
        out.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(b.latest.cmp(&a.latest))
                .then(b.last_modified.cmp(&a.last_modified))
        });
        Ok(out)
    }

    /// Streams one version of `key`.
    pub(super) async fn version_stream(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<BoxRead, StorageError> {
        let out = self.get_object(key, Some(version_id)).await?;
        Ok(self.body_stream(out, format!("`{key}` (version {version_id})")))
    }

    /// The retention of one version of `key`.
    pub(super) async fn lock_of_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectLock>, StorageError> {
        let out = self
            .head_object(key, Some(version_id), "look up the retention of")
            .await?;
        Ok(lock_of(&out))
    }
}

/// The Object Lock retention a HEAD reports, if any.
pub(super) fn lock_of(out: &HeadObjectOutput) -> Option<ObjectLock> {
    match (
        out.object_lock_mode(),
        to_chrono(out.object_lock_retain_until_date()),
    ) {
        (Some(mode), Some(retain_until)) => Some(ObjectLock {
            mode: mode.as_str().to_string(),
            retain_until,
        }),
        _ => None,
    }
}
