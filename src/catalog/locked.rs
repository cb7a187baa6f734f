//! The ransomware view of a versioned, Object-Locked bucket: each backup as
//! its newest *locked* versions give it. Whoever holds write credentials
//! can put a new version over a manifest or data object, or a delete marker,
//! but cannot remove a locked version: the restore reads those.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;

use super::{check_manifest, Catalog, CatalogError, Manifest, MANIFEST_MAX_BYTES};
use crate::layout::BackupKey;
use crate::storage::{ObjectLock, ObjectVersion};

/// One backup as the versions of a versioned bucket give it.
#[derive(Debug, Clone)]
pub struct LockedBackup {
    /// The manifest of its newest locked (else newest) version that
    /// `accept` took; `data_version` set when a locked data version matches.
    pub manifest: Manifest,
    /// The lock that ends first of the manifest's and the data's versions;
    /// `None` when either has no version locked past `now`.
    pub lock: Option<ObjectLock>,
}

impl Catalog {
    /// Every backup of `source` from the object versions (delete markers and
    /// overwrites seen through), oldest first; `None` when the store keeps
    /// no versions. Per manifest key: the newest version locked past `now`
    /// whose manifest parses and that `accept` takes (the caller's trust:
    /// a forged manifest may be locked too), else the newest such version
    /// unlocked; for a locked one, the newest locked data version of the
    /// manifest's stored size written no later than that manifest version
    /// (the data is written first; a later version is not this backup's).
    pub async fn locked_backups(
        &self,
        source: &str,
        now: DateTime<Utc>,
        accept: impl Fn(&Manifest) -> bool,
    ) -> Result<Option<Vec<LockedBackup>>, CatalogError> {
        let store = self.store();
        let Some(versions) = store
            .list_versions(&crate::layout::source_prefix(source))
            .await?
        else {
            return Ok(None);
        };
        let mut by_key: BTreeMap<&str, Vec<&ObjectVersion>> = BTreeMap::new();
        for v in versions.iter().filter(|v| !v.delete_marker) {
            by_key.entry(v.key.as_str()).or_default().push(v);
        }
        let locked = |key: String, v: String| async move {
            Ok::<_, CatalogError>(
                store
                    .version_lock(&key, &v)
                    .await?
                    .filter(|l| l.retain_until > now),
            )
        };
        let mut out = Vec::new();
        for (key, vs) in &by_key {
            if BackupKey::manifest(key).is_none() {
                continue;
            }
            let mut chosen: Option<(Manifest, Option<(ObjectLock, &ObjectVersion)>)> = None;
            for v in vs {
                let lock = locked(key.to_string(), v.version_id.clone()).await?;
                if lock.is_none() && chosen.is_some() {
                    continue;
                }
                let Some(m) = self.read_version(key, &v.version_id).await? else {
                    continue;
                };
                if !accept(&m) {
                    continue;
                }
                match lock {
                    Some(l) => {
                        chosen = Some((m, Some((l, v))));
                        break;
                    }
                    None => chosen = Some((m, None)),
                }
            }
            let Some((mut m, mlock)) = chosen else {
                continue;
            };
            let mut lock = None;
            if let Some((ml, mv)) = mlock {
                let data = by_key.get(m.data_key.as_str()).into_iter().flatten();
                for v in
                    data.filter(|v| v.size == m.stored_bytes && v.last_modified <= mv.last_modified)
                {
                    if let Some(dl) = locked(m.data_key.clone(), v.version_id.clone()).await? {
                        m.data_version = Some(v.version_id.clone());
                        lock = Some(if dl.retain_until <= ml.retain_until {
                            dl
                        } else {
                            ml
                        });
                        break;
                    }
                }
            }
            out.push(LockedBackup { manifest: m, lock });
        }
        out.sort_by(|a, b| {
            (a.manifest.recovery_point(), &a.manifest.id)
                .cmp(&(b.manifest.recovery_point(), &b.manifest.id))
        });
        Ok(Some(out))
    }

    /// The manifest in version `version_id` of `key`; `None` when that
    /// version is no readable manifest (an attacker's garbage is skipped).
    async fn read_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Manifest>, CatalogError> {
        let mut body = self.store().get_version(key, version_id).await?;
        let mut bytes = Vec::new();
        let mut limited = (&mut body).take(MANIFEST_MAX_BYTES + 1);
        if let Err(e) = limited.read_to_end(&mut bytes).await {
            tracing::warn!(event = "manifest_version_unreadable", key, version_id, error = %e);
            return Ok(None);
        }
        if bytes.len() as u64 > MANIFEST_MAX_BYTES {
            return Ok(None);
        }
        match check_manifest(key, &bytes) {
            Ok(m) => Ok(Some(m)),
            Err(s) => {
                tracing::warn!(event = "manifest_version_skipped", key, version_id, reason = %s.detail);
                Ok(None)
            }
        }
    }
}
