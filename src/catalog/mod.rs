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
//! [`Catalog::newest_before`]) lists that prefix only, and reads only the
//! manifests whose key can answer (the id, the kind are in the key). Only
//! the callers that want every source (`gsdr list` without `--source`,
//! [`Catalog::find`] of an id whose source is unknown) list the whole target.
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

mod locked;

use crate::fault::ErrorKind;
pub use locked::LockedBackup;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::{self, BackupKey};
use crate::storage::{ObjectMeta, PutCondition, StorageError, Store};
use crate::stream::SourceMeta;

/// Manifest schema version written by this build.
pub const MANIFEST_SCHEMA: u32 = 1;
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

    /// Commits a manifest (create-only: an existing manifest is never replaced).
    pub async fn commit(&self, m: &Manifest) -> Result<(), CatalogError> {
        let body = serde_json::to_vec_pretty(m).expect("manifest serialises");
        self.store
            .put_small(&m.manifest_key(), body.into(), PutCondition::IfAbsent)
            .await?;
        Ok(())
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
    /// With a source, only `<source>/` is listed.
    pub async fn list_checked(&self, source: Option<&str>) -> Result<Listing, CatalogError> {
        let objects = self.listing(source).await?;
        self.read_listed(&objects, |_| true).await
    }

    /// The objects under `<source>/` (the whole target without a source).
    async fn listing(&self, source: Option<&str>) -> Result<Vec<ObjectMeta>, CatalogError> {
        let prefix = source.map(layout::source_prefix).unwrap_or_default();
        Ok(self.store.list(&prefix).await?)
    }

    /// Reads and checks the manifests among `objects` whose key `wanted`
    /// accepts (nothing else is read), oldest first.
    async fn read_listed(
        &self,
        objects: &[ObjectMeta],
        wanted: impl Fn(&BackupKey<'_>) -> bool,
    ) -> Result<Listing, CatalogError> {
        let mut out = Listing::default();
        let keys = objects
            .iter()
            .filter(|o| BackupKey::manifest(&o.key).is_some_and(|k| wanted(&k)));
        for o in keys {
            let checked = match self.store.get_small(&o.key, MANIFEST_MAX_BYTES).await {
                Ok((bytes, _)) => check_manifest(&o.key, &bytes),
                // Pruned between the listing and the read: gone, not bad.
                Err(e) if e.is_not_found() => continue,
                Err(StorageError::TooLarge { size, max, .. }) => Err(Skipped {
                    key: o.key.clone(),
                    reason: SkipReason::Unreadable,
                    detail: format!("{size} bytes, more than the {max} a manifest may have"),
                }),
                Err(e) => return Err(e.into()),
            };
            match checked {
                Ok(m) => out.manifests.push(m),
                Err(s) => {
                    crate::metrics::events::ManifestSkipped {
                        store: &self.store.describe(),
                        key: &s.key,
                        reason: s.reason.as_str(),
                        detail: &s.detail,
                    }
                    .emit();
                    out.skipped.push(s);
                }
            }
        }
        out.manifests
            .sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }

    /// The backup with this id, of any source: lists the whole target, but
    /// reads only the manifests whose key carries the id.
    pub async fn find(&self, id: &str) -> Result<Manifest, CatalogError> {
        self.find_in(None, id).await
    }

    /// The backup of `source` with this id: lists `<source>/` only.
    pub async fn find_of(&self, source: &str, id: &str) -> Result<Manifest, CatalogError> {
        self.find_in(Some(source), id).await
    }

    async fn find_in(&self, source: Option<&str>, id: &str) -> Result<Manifest, CatalogError> {
        let objects = self.listing(source).await?;
        self.read_listed(&objects, |k| k.id == id)
            .await?
            .manifests
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| CatalogError::UnknownBackup {
                id: id.to_string(),
                store: self.store.describe(),
            })
    }

    /// The newest backup of `source` (of `kind` if given) whose recovery
    /// point is at or before `before`. Lists `<source>/` only and reads the
    /// manifests of that kind: the recovery point is in the manifest, not in
    /// the key (the id names the dump's start, which the consistency point
    /// need not follow), so no manifest of the kind can be left unread.
    pub async fn newest_before(
        &self,
        source: &str,
        kind: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Manifest, CatalogError> {
        let objects = self.listing(Some(source)).await?;
        self.read_listed(&objects, |k| kind.is_none_or(|want| k.kind == want))
            .await?
            .manifests
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
    Ok(m)
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
