//! The catalog: one `manifest.json` per backup, written last.
//!
//! A backup exists only once its manifest exists: the manifest is written
//! with a create-only conditional put after the data object is confirmed
//! stored (size and hash checked). Listing reads manifests only, so data
//! objects of failed runs never show.
//!
//! Layout under a target's prefix:
//! `<source>/<kind>/<backup-id>/data.zst.age` and `.../manifest.json`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::SourceMeta;
use crate::storage::{PutCondition, StorageError, Store};

/// Manifest schema version written by this build.
pub const MANIFEST_SCHEMA: u32 = 1;
/// File name of a backup's data object.
pub const DATA_OBJECT: &str = "data.zst.age";
/// File name of a backup's manifest.
pub const MANIFEST_OBJECT: &str = "manifest.json";
/// Largest manifest gsdr reads (they hold metadata only).
const MANIFEST_MAX_BYTES: u64 = 16 << 20;

/// Everything known about one committed backup. Metadata only: no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version of this document.
    pub schema_version: u32,
    /// Backup id, sortable by time: `20261129T014500Z-1a2b3c`.
    pub id: String,
    /// Policy name of the source.
    pub source: String,
    /// Engine: `command`, `mongo`, `redis`, `postgres`.
    pub engine: String,
    /// Kind of backup: `stdout`, `full`, `rdb`, `base`.
    pub kind: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the manifest was committed.
    pub finished_at: DateTime<Utc>,
    /// The point in time the backup restores to, and engine details.
    pub consistency: SourceMeta,
    /// Raw (uncompressed, plaintext) size in bytes.
    pub raw_bytes: u64,
    /// SHA-256 of the raw stream.
    pub raw_sha256: String,
    /// Stored (compressed, encrypted) size in bytes.
    pub stored_bytes: u64,
    /// SHA-256 of the stored object.
    pub stored_sha256: String,
    /// Key of the data object relative to the target prefix.
    pub data_key: String,
    /// zstd level used.
    pub zstd_level: i32,
    /// age recipients (public keys) the data was encrypted to.
    pub recipients: Vec<String>,
    /// gsdr version that wrote it.
    pub gsdr_version: String,
}

impl Manifest {
    /// Directory key of a backup: `<source>/<kind>/<id>`.
    pub fn dir_key(source: &str, kind: &str, id: &str) -> String {
        format!("{source}/{kind}/{id}")
    }

    /// Key of this manifest.
    pub fn manifest_key(&self) -> String {
        format!(
            "{}/{MANIFEST_OBJECT}",
            Self::dir_key(&self.source, &self.kind, &self.id)
        )
    }

    /// The instant RPO is measured from: the consistency point, or the dump start.
    pub fn recovery_point(&self) -> DateTime<Utc> {
        self.consistency.consistency_time.unwrap_or(self.started_at)
    }
}

/// A new backup id for a dump starting at `at`.
pub fn new_backup_id(at: DateTime<Utc>) -> String {
    let rnd: u32 = rand::random();
    format!("{}-{:06x}", at.format("%Y%m%dT%H%M%SZ"), rnd & 0xff_ffff)
}

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No backup with that id.
    #[error("no backup `{id}` in {store}; `gsdr list` shows the backups there")]
    UnknownBackup {
        /// Requested id.
        id: String,
        /// Store description.
        store: String,
    },
    /// No backup of a source matches.
    #[error("no restorable backup of source `{source_name}` in {store}{detail}")]
    NoBackup {
        /// Source.
        source_name: String,
        /// Store description.
        store: String,
        /// Extra constraint text, e.g. " before 2026-11-28T10:00:00Z".
        detail: String,
    },
    /// A manifest could not be parsed.
    #[error("manifest `{key}` in {store} is unreadable: {message}")]
    BadManifest {
        /// Key.
        key: String,
        /// Store description.
        store: String,
        /// Parser message.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The manifests of one target.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
}

impl Catalog {
    /// A catalog over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Catalog { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Commits a manifest (create-only: an existing manifest is never replaced).
    pub async fn commit(&self, m: &Manifest) -> Result<(), CatalogError> {
        let body = serde_json::to_vec_pretty(m).expect("manifest serialises");
        self.store
            .put_small(&m.manifest_key(), body.into(), PutCondition::IfAbsent)
            .await?;
        Ok(())
    }

    /// Reads one manifest by key.
    pub async fn read(&self, key: &str) -> Result<Manifest, CatalogError> {
        let (bytes, _) = self.store.get_small(key, MANIFEST_MAX_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| CatalogError::BadManifest {
            key: key.to_string(),
            store: self.store.describe(),
            message: e.to_string(),
        })
    }

    /// Every committed backup (of `source` if given), oldest first.
    pub async fn list(&self, source: Option<&str>) -> Result<Vec<Manifest>, CatalogError> {
        let prefix = source.map(|s| format!("{s}/")).unwrap_or_default();
        let objects = self.store.list(&prefix).await?;
        let mut out = Vec::new();
        for o in objects.iter().filter(|o| is_backup_manifest(&o.key)) {
            out.push(self.read(&o.key).await?);
        }
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }

    /// The backup with this id.
    pub async fn find(&self, id: &str) -> Result<Manifest, CatalogError> {
        self.list(None)
            .await?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| CatalogError::UnknownBackup {
                id: id.to_string(),
                store: self.store.describe(),
            })
    }

    /// The newest backup of `source` (of `kind` if given) whose recovery point is at or before `before`.
    pub async fn newest_before(
        &self,
        source: &str,
        kind: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Manifest, CatalogError> {
        self.list(Some(source))
            .await?
            .into_iter()
            .filter(|m| kind.is_none_or(|k| m.kind == k))
            .filter(|m| before.is_none_or(|t| m.recovery_point() <= t))
            .max_by(|a, b| (a.recovery_point(), &a.id).cmp(&(b.recovery_point(), &b.id)))
            .ok_or_else(|| CatalogError::NoBackup {
                source_name: source.to_string(),
                store: self.store.describe(),
                detail: before
                    .map(|t| format!(" before {}", t.to_rfc3339()))
                    .unwrap_or_default(),
            })
    }
}

/// True for `<source>/<kind>/<id>/manifest.json` keys (not WAL, drills, leases).
fn is_backup_manifest(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 4 && parts[3] == MANIFEST_OBJECT
}
