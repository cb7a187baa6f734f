//! The catalog: one `manifest.json` per backup, written last.
//!
//! A backup exists only once its manifest exists: the manifest is written
//! with a create-only conditional put after the data object is confirmed
//! stored (size and hash checked). Listing reads manifests only, so data
//! objects of failed runs never show.
//!
//! Layout under a target's prefix ([`crate::layout`]):
//! `<source>/<kind>/<backup-id>/data.zst.age` and `.../manifest.json`.
//!
//! # One source, one prefix
//!
//! Everything of a source lies under `<source>/`: a lookup of one source
//! ([`Catalog::list`] with a source, [`Catalog::find_of`],
//! [`Catalog::newest_before`]) lists the folders of that prefix and then its
//! backup kinds' folders only (never `wal/` or `log/`). Only the callers that
//! want every source (`gsdr list` without `--source`, [`Catalog::find`] of an
//! id whose source is unknown) list the whole target; `find` then reads only
//! the manifests whose key carries the id.
//!
//! # The per-source index
//!
//! `<source>/index.json` holds the source's manifests, so that listing a
//! source costs its folder listings and one GET instead of one GET per
//! backup; it is kept up to date by [`Catalog::commit`] and
//! [`Catalog::forget`] and repaired by every listing that finds it
//! stale. The manifests stay the truth and their signatures are checked the
//! same way: see `index.rs`. Manifests that must be read are read
//! [`READ_CONCURRENCY`] at a time.
//!
//! # A tolerant, suspicious listing
//!
//! A manifest counts only if its content matches the key it was read from:
//! `source`, `kind` and `id` equal the key's three folders and `data_key`
//! lies under the same folder. Everything that acts on a listed backup
//! (prune, replicate, restore) therefore touches only keys under the
//! manifest's own location. A manifest that does not parse, was written by a
//! newer gsdr (`schema_version` above [`MANIFEST_SCHEMA`]) or does not match
//! its key is skipped — reported by a warning event and
//! `gsdr_catalog_manifests_skipped_total` — and never fails the listing of
//! the others. Failing to *reach* the store is still an error.

mod index;
mod locked;

use crate::fault::ErrorKind;
pub use locked::LockedBackup;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::{self, BackupKey};
use crate::storage::{ObjectMeta, PutCondition, StorageError, Store};
use crate::stream::SourceMeta;

/// Manifest schema version written by this build.
pub const MANIFEST_SCHEMA: u32 = 1;
/// Largest manifest gsdr reads (they hold metadata only).
const MANIFEST_MAX_BYTES: u64 = 16 << 20;
/// Manifests read at a time when a listing must read them.
const READ_CONCURRENCY: usize = 16;

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
    /// The writer's Ed25519 signature over the rest ([`crate::signing`]); absent when
    /// the policy has no signing key (and in manifests from before signing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::Signature>,
    /// Set only when read from a locked object version ([`Catalog::locked_backups`]):
    /// the version of the data object to restore instead of the current one.
    /// Never stored (an attacker's manifest cannot choose it).
    #[serde(skip)]
    pub data_version: Option<String>,
}

impl Manifest {
    /// Key of this manifest.
    pub fn manifest_key(&self) -> String {
        layout::backup_manifest(&self.source, &self.kind, &self.id)
    }

    /// The bytes its signature covers: its JSON without the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.signature = None;
        serde_json::to_vec(&m).expect("manifest serialises")
    }

    /// Signs it with `signer` (replacing any signature it had).
    pub fn sign(&mut self, signer: &crate::signing::Signer) {
        self.signature = None;
        self.signature = Some(signer.sign(&self.signed_bytes()));
    }

    /// Whether `trust` accepts this manifest (see [`crate::signing`]).
    pub fn authenticate(&self, trust: &crate::signing::Trust) -> Result<(), CatalogError> {
        Ok(trust.check(
            &self.manifest_key(),
            &self.signed_bytes(),
            self.signature.as_ref(),
        )?)
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
    /// A manifest is unsigned, signed by an unknown key, or its signature does not verify.
    #[error(transparent)]
    Untrusted(#[from] crate::signing::SignError),
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

    /// Commits a manifest (create-only: an existing manifest is never
    /// replaced), then adds it to its source's index (best effort, see
    /// [the index](self#the-per-source-index)).
    pub async fn commit(&self, m: &Manifest) -> Result<(), CatalogError> {
        let body = serde_json::to_vec_pretty(m).expect("manifest serialises");
        let put = self
            .store
            .put_small(&m.manifest_key(), body.into(), PutCondition::IfAbsent)
            .await?;
        if let Some(etag) = put.etag {
            let entry = index::IndexEntry {
                etag,
                manifest: m.clone(),
            };
            let key = m.manifest_key();
            self.update_index(&m.source, |entries| {
                entries.retain(|e| e.manifest.manifest_key() != key);
                entries.push(entry.clone());
            })
            .await;
        }
        Ok(())
    }

    /// Drops the backups `ids` of `source` from its index after a prune
    /// deleted their manifests (best effort: a listing drops them anyway).
    pub async fn forget(&self, source: &str, ids: &[&str]) {
        if ids.is_empty() {
            return;
        }
        self.update_index(source, |entries| {
            entries.retain(|e| !ids.contains(&e.manifest.id.as_str()));
        })
        .await;
    }

    /// Reads one manifest by key and checks it against the key
    /// ([`CatalogError::BadManifest`] if it does not parse, is of a newer
    /// schema, or does not match).
    pub async fn read(&self, key: &str) -> Result<Manifest, CatalogError> {
        let (bytes, _) = self.store.get_small(key, MANIFEST_MAX_BYTES).await?;
        check_manifest(key, &bytes).map_err(|s| CatalogError::BadManifest {
            key: key.to_string(),
            store: self.store.describe(),
            message: s.detail,
        })
    }

    /// Every committed backup (of `source` if given), oldest first. Manifests
    /// that do not count are skipped (see [`Catalog::list_checked`]).
    pub async fn list(&self, source: Option<&str>) -> Result<Vec<Manifest>, CatalogError> {
        Ok(self.list_checked(source).await?.manifests)
    }

    /// Every committed backup (of `source` if given), oldest first, and the
    /// manifests skipped because they do not count, each reported by a
    /// [`ManifestSkipped`](crate::metrics::events::ManifestSkipped) event.
    /// With a source, only the manifest keys of `<source>/`'s backup kinds
    /// are listed and the manifests come from its index, read only where the
    /// index lacks them ([the index](self#the-per-source-index)); without, the
    /// whole target is listed once and each source found read through its
    /// index.
    pub async fn list_checked(&self, source: Option<&str>) -> Result<Listing, CatalogError> {
        match source {
            Some(s) => self.indexed(s).await,
            None => {
                // One listing of everything, then each source's manifests
                // through its index: GETs per source, not per backup.
                let objects = self.store.list("").await?;
                let mut by_source: std::collections::BTreeMap<&str, Vec<ObjectMeta>> =
                    Default::default();
                for o in &objects {
                    if let Some(k) = BackupKey::manifest(&o.key) {
                        by_source.entry(k.source).or_default().push(o.clone());
                    }
                }
                let mut out = Listing::default();
                for (s, objs) in by_source {
                    let loaded = self.load_index(s).await;
                    let l = self.indexed_from(s, &objs, loaded).await?;
                    out.manifests.extend(l.manifests);
                    out.skipped.extend(l.skipped);
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Every committed backup of `source` without its index: lists the
    /// manifests and reads each one.
    pub async fn list_unindexed(&self, source: &str) -> Result<Listing, CatalogError> {
        let objects = self.manifest_objects(source).await?;
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut out = Listing::default();
        for (_, r) in self.read_many(&keys).await? {
            out.push(r, &self.store.describe());
        }
        out.sort();
        Ok(out)
    }

    /// [`Catalog::list_checked`] of `source`, and every object of its
    /// backup kinds' folders (data objects and manifests, with their sizes)
    /// from the same listing: what `replicate --check` compares.
    pub async fn list_with_objects(
        &self,
        source: &str,
    ) -> Result<(Listing, Vec<ObjectMeta>), CatalogError> {
        let (objects, loaded) = tokio::join!(self.backup_objects(source), self.load_index(source));
        let objects = objects?;
        let listing = self.indexed_from(source, &objects, loaded).await?;
        Ok((listing, objects))
    }

    /// The listing of `source` through its index (see [the index](self#the-per-source-index)).
    async fn indexed(&self, source: &str) -> Result<Listing, CatalogError> {
        Ok(self.list_with_objects(source).await?.0)
    }

    /// The listing of `source` from its backup objects and its index.
    async fn indexed_from(
        &self,
        source: &str,
        objects: &[ObjectMeta],
        loaded: index::Loaded,
    ) -> Result<Listing, CatalogError> {
        let objects: Vec<&ObjectMeta> = objects
            .iter()
            .filter(|o| BackupKey::manifest(&o.key).is_some())
            .collect();
        let mut loaded = loaded;
        let stored = loaded.stored;
        let mut out = Listing::default();
        // Parallel to `out.manifests` until sorted: the etag each was read as
        // (`None`: not to be indexed). Entries are moved, not copied: an
        // index of 10,000 manifests is about 10 MB.
        let mut etags: Vec<Option<String>> = Vec::with_capacity(objects.len());
        let mut to_read = Vec::new();
        for o in objects {
            match loaded.entries.remove(&o.key) {
                Some(e) if o.etag.as_deref() == Some(e.etag.as_str()) => {
                    out.manifests.push(e.manifest);
                    etags.push(Some(e.etag));
                }
                _ => to_read.push(o.key.as_str()),
            }
        }
        let reused = out.manifests.len();
        let store = self.store.describe();
        for (etag, r) in self.read_many(&to_read).await? {
            if r.is_ok() {
                etags.push(etag);
            }
            out.push(r, &store);
        }
        let indexed = etags.iter().filter(|e| e.is_some()).count();
        // No index and nothing to index: write none (a mistyped source
        // name must not leave a folder behind).
        let changed =
            (loaded.etag.is_none() && indexed > 0) || indexed != reused || reused != stored;
        if changed && loaded.writable {
            let entries: Vec<(&str, &Manifest)> = etags
                .iter()
                .zip(&out.manifests)
                .filter_map(|(e, m)| Some((e.as_deref()?, m)))
                .collect();
            match self
                .store_index(source, loaded.etag.as_deref(), entries)
                .await
            {
                Ok(written) => tracing::debug!(
                    event = "catalog_index_refreshed",
                    store,
                    source,
                    reused,
                    read = to_read.len(),
                    written
                ),
                Err(e) => tracing::warn!(
                    event = "catalog_index_not_updated",
                    store,
                    source,
                    error = %e,
                    "listings read the manifests the index lacks until it can be written"
                ),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The keys of `source`'s manifests, from its backup folders' listing
    /// (not its WAL or log folders); nothing is read.
    pub async fn manifest_keys(&self, source: &str) -> Result<Vec<String>, CatalogError> {
        Ok(self
            .manifest_objects(source)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// The manifest objects of `source` ([`Catalog::backup_objects`]).
    async fn manifest_objects(&self, source: &str) -> Result<Vec<ObjectMeta>, CatalogError> {
        let mut all = self.backup_objects(source).await?;
        all.retain(|o| BackupKey::manifest(&o.key).is_some());
        Ok(all)
    }

    /// The objects of `source`'s backups: one listing of each backup kind's
    /// folder (`<source>/<kind>/`), never of its WAL or log folders, which
    /// hold no manifests and may hold most of its objects.
    async fn backup_objects(&self, source: &str) -> Result<Vec<ObjectMeta>, CatalogError> {
        let prefix = layout::source_prefix(source);
        let kinds = self.store.list_folders(&prefix).await?;
        // Futures of owned values: a stream of closures over borrows is not
        // `Send` for every lifetime, which the daemon's spawned jobs need.
        let lists: Vec<_> = kinds
            .iter()
            .filter(|k| !layout::is_reserved_folder(k))
            .map(|k| list_owned(self.store.clone(), layout::kind_prefix(source, k)))
            .collect();
        let lists = stream::iter(lists)
            .buffered(READ_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let mut out: Vec<ObjectMeta> = lists.into_iter().flatten().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Reads and checks the manifests at `keys`, [`READ_CONCURRENCY`] at a
    /// time, in key order, each with the etag of the object read; manifests
    /// gone since the listing (pruned) are left out.
    async fn read_many(
        &self,
        keys: &[&str],
    ) -> Result<Vec<(Option<String>, Result<Manifest, Skipped>)>, CatalogError> {
        let reads: Vec<_> = keys
            .iter()
            .map(|k| read_owned(self.store.clone(), k.to_string()))
            .collect();
        let read = stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// The backup with this id, of any source: lists the whole target (the
    /// only part that grows with the bucket), and reads only the manifests
    /// whose key carries the id.
    pub async fn find(&self, id: &str) -> Result<Manifest, CatalogError> {
        let objects = self.store.list("").await?;
        let keys: Vec<&str> = objects
            .iter()
            .filter(|o| BackupKey::manifest(&o.key).is_some_and(|k| k.id == id))
            .map(|o| o.key.as_str())
            .collect();
        self.first_of(id, &keys).await
    }

    /// The backup of `source` with this id: lists the folders of `<source>/`
    /// and reads `<source>/<kind>/<id>/manifest.json` of each backup kind.
    pub async fn find_of(&self, source: &str, id: &str) -> Result<Manifest, CatalogError> {
        let kinds = self
            .store
            .list_folders(&layout::source_prefix(source))
            .await?;
        let keys: Vec<String> = kinds
            .iter()
            .filter(|k| !layout::is_reserved_folder(k))
            .map(|k| layout::backup_manifest(source, k, id))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.first_of(id, &keys).await
    }

    /// The first manifest among `keys` that counts and has `id`.
    async fn first_of(&self, id: &str, keys: &[&str]) -> Result<Manifest, CatalogError> {
        let mut out = Listing::default();
        for (_, r) in self.read_many(keys).await? {
            out.push(r, &self.store.describe());
        }
        out.manifests
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| CatalogError::UnknownBackup {
                id: id.to_string(),
                store: self.store.describe(),
            })
    }

    /// The newest backup of `source` (of `kind` if given) whose recovery
    /// point is at or before `before`. The recovery point is in the
    /// manifest, not in the key (the id names the dump's start, which the
    /// consistency point need not follow), so the choice is made over the
    /// source's listing (its index); the chosen manifest is then read from
    /// its own object, and when that differs from the index every manifest
    /// is read and the choice made again: what a restore uses never comes
    /// from the index alone.
    pub async fn newest_before(
        &self,
        source: &str,
        kind: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Manifest, CatalogError> {
        let pick = |ms: Vec<Manifest>| {
            ms.into_iter()
                .filter(|m| kind.is_none_or(|k| m.kind == k))
                .filter(|m| before.is_none_or(|t| m.recovery_point() <= t))
                .max_by(|a, b| (a.recovery_point(), &a.id).cmp(&(b.recovery_point(), &b.id)))
        };
        let chosen = match pick(self.indexed(source).await?.manifests) {
            Some(m) => match self.read(&m.manifest_key()).await {
                Ok(read) if read == m => Some(read),
                _ => {
                    tracing::warn!(event = "catalog_index_disagrees", store = %self.store.describe(), key = %m.manifest_key(), "choosing from the manifests themselves");
                    pick(self.list_unindexed(source).await?.manifests)
                }
            },
            None => None,
        };
        chosen.ok_or_else(|| CatalogError::NoBackup {
            source_name: source.to_string(),
            store: self.store.describe(),
            detail: before
                .map(|t| format!(" before {}", t.to_rfc3339()))
                .unwrap_or_default(),
        })
    }
}

/// [`Store::list`] of an owned prefix.
async fn list_owned(
    store: Arc<dyn Store>,
    prefix: String,
) -> Result<Vec<ObjectMeta>, StorageError> {
    store.list(&prefix).await
}

/// One manifest read: `None` when gone since the listing (pruned: not
/// bad), else the etag of the object read and the checked manifest.
type ManifestRead = Option<(Option<String>, Result<Manifest, Skipped>)>;

/// Reads and checks the manifest at `key`.
async fn read_owned(store: Arc<dyn Store>, key: String) -> Result<ManifestRead, CatalogError> {
    match store.get_small(&key, MANIFEST_MAX_BYTES).await {
        Ok((bytes, meta)) => Ok(Some((meta.etag, check_manifest(&key, &bytes)))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(StorageError::TooLarge { size, max, .. }) => Ok(Some((
            None,
            Err(Skipped {
                key,
                reason: SkipReason::Unreadable,
                detail: format!("{size} bytes, more than the {max} a manifest may have"),
            }),
        ))),
        Err(e) => Err(CatalogError::from(e)),
    }
}

/// True for `<source>/<kind>/<id>/manifest.json` keys (not WAL, drills, leases).
pub fn is_backup_manifest(key: &str) -> bool {
    BackupKey::manifest(key).is_some()
}

/// What a listing found: the manifests that count, and those skipped.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Committed backups, oldest first.
    pub manifests: Vec<Manifest>,
    /// Manifests that do not count, in key order.
    pub skipped: Vec<Skipped>,
}

impl Listing {
    /// Adds one manifest read, or one skipped (reported by an event).
    fn push(&mut self, r: Result<Manifest, Skipped>, store: &str) {
        match r {
            Ok(m) => self.manifests.push(m),
            Err(s) => {
                crate::metrics::events::ManifestSkipped {
                    store,
                    key: &s.key,
                    reason: s.reason.as_str(),
                    detail: &s.detail,
                }
                .emit();
                self.skipped.push(s);
            }
        }
    }

    /// Oldest first; skipped ones in key order.
    fn sort(&mut self) {
        self.manifests
            .sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        self.skipped.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

/// Why a manifest was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Not a manifest this build can parse (garbage, truncated, wrong fields, too large).
    Unreadable,
    /// Written by a newer gsdr: `schema_version` above [`MANIFEST_SCHEMA`].
    NewerSchema,
    /// Parses, but its source, kind, id or data key do not match where it was found.
    Mismatch,
}

impl SkipReason {
    /// The metric label: `unreadable`, `newer_schema`, `mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unreadable => "unreadable",
            SkipReason::NewerSchema => "newer_schema",
            SkipReason::Mismatch => "mismatch",
        }
    }
}

/// A manifest the catalog does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Its key.
    pub key: String,
    /// Why.
    pub reason: SkipReason,
    /// What exactly, for the operator.
    pub detail: String,
}

/// Parses the manifest read from `key` and checks that it belongs there.
fn check_manifest(key: &str, bytes: &[u8]) -> Result<Manifest, Skipped> {
    let skip = |reason, detail: String| Skipped {
        key: key.to_string(),
        reason,
        detail,
    };
    // The schema version first: a newer manifest may have fields this build
    // rejects, and "upgrade gsdr" is the useful message then.
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<u64>,
    }
    match serde_json::from_slice::<Version>(bytes) {
        Ok(Version {
            schema_version: Some(v),
        }) if v > u64::from(MANIFEST_SCHEMA) => {
            return Err(skip(
                SkipReason::NewerSchema,
                format!("schema_version {v} was written by a newer gsdr (this build reads up to {MANIFEST_SCHEMA}); upgrade gsdr to use this backup"),
            ))
        }
        _ => {}
    }
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| skip(SkipReason::Unreadable, format!("not a valid manifest: {e}")))?;
    check_placement(key, &m)?;
    Ok(m)
}

/// Checks that manifest `m` belongs at `key`: its source, kind and id are
/// the key's folders and its data object lies in the same folder.
fn check_placement(key: &str, m: &Manifest) -> Result<(), Skipped> {
    let skip = |reason, detail: String| Skipped {
        key: key.to_string(),
        reason,
        detail,
    };
    let Some(BackupKey {
        source, kind, id, ..
    }) = BackupKey::manifest(key)
    else {
        return Err(skip(
            SkipReason::Mismatch,
            "not at <source>/<kind>/<id>/manifest.json".into(),
        ));
    };
    let mut wrong = Vec::new();
    for (field, found, want) in [
        ("source", m.source.as_str(), source),
        ("kind", m.kind.as_str(), kind),
        ("id", m.id.as_str(), id),
    ] {
        if found != want {
            wrong.push(format!("{field} `{found}` (the key says `{want}`)"));
        }
    }
    if !layout::is_inside_backup(source, kind, id, &m.data_key) {
        let dir = format!("{}/", layout::backup_dir(source, kind, id));
        wrong.push(format!("data_key `{}` outside `{dir}`", m.data_key));
    }
    if !wrong.is_empty() {
        return Err(skip(
            SkipReason::Mismatch,
            format!(
                "its content does not match its key: {}; it was copied or edited by hand — move it back or delete it",
                wrong.join(", ")
            ),
        ));
    }
    Ok(())
}

impl CatalogError {
    /// What the operator must fix (exit codes, `--json` error documents).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::UnknownBackup { .. } | CatalogError::NoBackup { .. } => {
                ErrorKind::NotFound
            }
            CatalogError::BadManifest { .. } | CatalogError::Untrusted(_) => ErrorKind::Damaged,
            CatalogError::Storage(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn doc(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schema_version": 1, "id": "20261129T000000Z-aaaaaa", "source": "db", "engine": "command",
            "kind": "stdout", "started_at": "2026-11-29T00:00:00Z", "finished_at": "2026-11-29T00:00:01Z",
            "consistency": {"consistency_time": null},
            "raw_bytes": 1, "raw_sha256": "", "stored_bytes": 1, "stored_sha256": "",
            "data_key": "db/stdout/20261129T000000Z-aaaaaa/data.zst.age", "zstd_level": 3,
            "recipients": [], "gsdr_version": "0"
        });
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    const KEY: &str = "db/stdout/20261129T000000Z-aaaaaa/manifest.json";

    #[rstest]
    #[case::ok(doc(|_| {}), KEY, None)]
    #[case::garbage(b"{not json".to_vec(), KEY, Some((SkipReason::Unreadable, "not a valid manifest")))]
    #[case::unknown_field(doc(|v| v["extra"] = 1.into()), KEY, Some((SkipReason::Unreadable, "unknown field `extra`")))]
    #[case::newer(doc(|v| { v["schema_version"] = 2.into(); v["new_field"] = true.into(); }), KEY, Some((SkipReason::NewerSchema, "schema_version 2 was written by a newer gsdr")))]
    #[case::copied_to_other_id(doc(|_| {}), "db/stdout/20261130T000000Z-bbbbbb/manifest.json", Some((SkipReason::Mismatch, "id `20261129T000000Z-aaaaaa` (the key says `20261130T000000Z-bbbbbb`)")))]
    #[case::other_source(doc(|v| v["source"] = "other".into()), KEY, Some((SkipReason::Mismatch, "source `other` (the key says `db`)")))]
    #[case::other_kind(doc(|v| v["kind"] = "full".into()), KEY, Some((SkipReason::Mismatch, "kind `full`")))]
    #[case::data_elsewhere(doc(|v| v["data_key"] = "other/stdout/x/data.zst.age".into()), KEY, Some((SkipReason::Mismatch, "data_key `other/stdout/x/data.zst.age` outside `db/stdout/20261129T000000Z-aaaaaa/`")))]
    #[case::data_escapes(doc(|v| v["data_key"] = "db/stdout/20261129T000000Z-aaaaaa/../../../locks/db.json".into()), KEY, Some((SkipReason::Mismatch, "outside")))]
    #[case::data_is_dir(doc(|v| v["data_key"] = "db/stdout/20261129T000000Z-aaaaaa/".into()), KEY, Some((SkipReason::Mismatch, "outside")))]
    fn manifests_count_only_where_they_belong(
        #[case] bytes: Vec<u8>,
        #[case] key: &str,
        #[case] want: Option<(SkipReason, &str)>,
    ) {
        match (check_manifest(key, &bytes), want) {
            (Ok(m), None) => assert_eq!(m.manifest_key(), key),
            (Err(s), Some((reason, text))) => {
                assert_eq!(s.reason, reason, "{}", s.detail);
                assert!(s.detail.contains(text), "{}", s.detail);
                assert_eq!(s.key, key);
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }
}
