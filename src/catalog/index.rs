//! The per-source index: `<source>/index.json`, the source's manifests in
//! one object, so that a listing costs a few requests instead of one GET per
//! backup.
//!
//! # The manifests stay the truth
//!
//! The index holds each manifest whole (its signature included) with the
//! etag of the object it was read from. A listing lists the manifest keys of
//! the source's backup kinds (never its WAL or log folders) and GETs the
//! index at the same time; a manifest is taken from the index only when the
//! listing shows its key with the etag the index recorded. Any other listed
//! manifest — committed by an older gsdr, replaced, or missing from a
//! damaged or deleted index — is read (16 at a time), and index entries
//! whose key is no longer listed (pruned) are dropped. When that changed
//! anything the index is rewritten with a conditional put (`If-Match` the
//! etag read, create-only when it was absent); a writer that loses the race
//! leaves it to the next listing, which finds the same difference.
//!
//! # No way around signatures
//!
//! An index entry is checked like a manifest read from its key (source,
//! kind, id and data key must match where it lies) and is the manifest's
//! full document, so [`super::Manifest::authenticate`] verifies its
//! signature exactly as it verifies the object's: editing an entry breaks
//! it. [`super::Catalog::newest_before`], which picks what a restore or a
//! drill uses, reads the chosen manifest from its own object again and falls
//! back to reading every manifest when the index disagrees.
//!
//! Updates after a commit or a prune are best effort: the backup or the
//! deletion has happened whatever becomes of the index, and a failed update
//! only costs the next listing the reads it repairs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{check_placement, Catalog, Manifest, MANIFEST_SCHEMA};
use crate::layout;
use crate::storage::{PutCondition, StorageError};

/// Index schema version written by this build.
pub const INDEX_SCHEMA: u32 = 1;
/// Largest index gsdr reads or writes (about 60,000 manifests); a source
/// beyond it is listed by reading its manifests.
const INDEX_MAX_BYTES: u64 = 64 << 20;
/// Conditional writes tried by a commit or prune before it leaves the index stale.
const UPDATE_ATTEMPTS: usize = 3;

/// The document stored at `<source>/index.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexDoc {
    /// [`INDEX_SCHEMA`].
    schema_version: u32,
    /// The source it indexes.
    source: String,
    /// One entry per manifest, in key order.
    entries: Vec<IndexEntry>,
}

/// [`IndexDoc`] as written, borrowing the manifests.
#[derive(Serialize)]
struct IndexDocRef<'a> {
    schema_version: u32,
    source: &'a str,
    entries: Vec<IndexEntryRef<'a>>,
}

/// [`IndexEntry`] as written.
#[derive(Serialize)]
struct IndexEntryRef<'a> {
    etag: &'a str,
    manifest: &'a Manifest,
}

/// One manifest as the index keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexEntry {
    /// Etag of the manifest object the entry was read from (or written as).
    pub etag: String,
    /// The manifest, signature included.
    pub manifest: Manifest,
}

/// What reading the index gave.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Etag of the index object; `None` when there is none.
    pub etag: Option<String>,
    /// Entries by manifest key (only those that belong where they say).
    pub entries: HashMap<String, IndexEntry>,
    /// Entries the document held, good or not (a difference means a rewrite).
    pub stored: usize,
    /// False when the index was written by a newer gsdr: left alone.
    pub writable: bool,
}

impl Catalog {
    /// Reads `source`'s index. Missing, unreadable or damaged: empty (and
    /// rewritable); of a newer schema: empty and left alone. Never fails:
    /// the listing that follows reads the manifests instead.
    pub(super) async fn load_index(&self, source: &str) -> Loaded {
        let key = layout::source_index(source);
        let (bytes, meta) = match self.store.get_small(&key, INDEX_MAX_BYTES).await {
            Ok(got) => got,
            Err(e) if e.is_not_found() => {
                return Loaded {
                    writable: true,
                    ..Loaded::default()
                }
            }
            Err(e) => {
                tracing::warn!(event = "catalog_index_unreadable", store = %self.store.describe(), key, error = %e);
                // A present index that cannot be read: rewrite it only over what is there.
                return Loaded {
                    etag: None,
                    writable: !matches!(e, StorageError::TooLarge { .. }),
                    ..Loaded::default()
                };
            }
        };
        let etag = meta.etag;
        // One pass over the document; the version is looked at only when it
        // does not parse (a newer gsdr's may have fields this build rejects).
        let doc = match serde_json::from_slice::<IndexDoc>(&bytes) {
            Ok(d) if d.schema_version <= INDEX_SCHEMA => d,
            parsed => {
                #[derive(Deserialize)]
                struct Version {
                    schema_version: Option<u64>,
                }
                if let Ok(Version {
                    schema_version: Some(v),
                }) = serde_json::from_slice::<Version>(&bytes)
                {
                    if v > u64::from(INDEX_SCHEMA) {
                        tracing::debug!(event = "catalog_index_newer", key, schema_version = v);
                        return Loaded::default();
                    }
                }
                let error = parsed.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(event = "catalog_index_unreadable", store = %self.store.describe(), key, error);
                return Loaded {
                    etag,
                    writable: true,
                    ..Loaded::default()
                };
            }
        };
        let stored = doc.entries.len();
        let entries = doc
            .entries
            .into_iter()
            .filter(|e| doc.source == source && entry_belongs(source, e))
            .map(|e| (e.manifest.manifest_key(), e))
            .collect();
        Loaded {
            etag,
            entries,
            stored,
            writable: true,
        }
    }

    /// Writes `entries` (etag, manifest) as `source`'s index over the
    /// version whose etag was read (`None`: create it). `Ok(false)` when
    /// another writer changed it first.
    pub(super) async fn store_index(
        &self,
        source: &str,
        over: Option<&str>,
        mut entries: Vec<(&str, &Manifest)>,
    ) -> Result<bool, StorageError> {
        entries.sort_by_cached_key(|(_, m)| m.manifest_key());
        let doc = IndexDocRef {
            schema_version: INDEX_SCHEMA,
            source,
            entries: entries
                .into_iter()
                .map(|(etag, manifest)| IndexEntryRef { etag, manifest })
                .collect(),
        };
        let body = serde_json::to_vec(&doc).expect("index serialises");
        let key = layout::source_index(source);
        if body.len() as u64 > INDEX_MAX_BYTES {
            tracing::warn!(event = "catalog_index_too_large", key, bytes = body.len());
            return Ok(false);
        }
        let cond = match over {
            Some(etag) => PutCondition::IfMatch(etag.to_string()),
            None => PutCondition::IfAbsent,
        };
        match self.store.put_small(&key, body.into(), cond).await {
            Ok(_) => Ok(true),
            Err(StorageError::PreconditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// After a commit or prune: applies `change` to `source`'s index and
    /// writes it, retrying when another writer won; leaves it stale (a
    /// warning) when that keeps failing or the store refuses.
    pub(super) async fn update_index(&self, source: &str, change: impl Fn(&mut Vec<IndexEntry>)) {
        for _ in 0..UPDATE_ATTEMPTS {
            let loaded = self.load_index(source).await;
            if !loaded.writable {
                return;
            }
            let mut entries: Vec<IndexEntry> = loaded.entries.into_values().collect();
            change(&mut entries);
            let refs = entries
                .iter()
                .map(|e| (e.etag.as_str(), &e.manifest))
                .collect();
            match self.store_index(source, loaded.etag.as_deref(), refs).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(event = "catalog_index_not_updated", store = %self.store.describe(), source, error = %e, "the next listing reads the manifests it lacks and rewrites it");
                    return;
                }
            }
        }
        tracing::debug!(
            event = "catalog_index_contended",
            source,
            attempts = UPDATE_ATTEMPTS
        );
    }
}

/// Whether an index entry of `source` may stand for the manifest at its key.
fn entry_belongs(source: &str, e: &IndexEntry) -> bool {
    let m = &e.manifest;
    m.source == source
        && m.schema_version <= MANIFEST_SCHEMA
        && m.data_version.is_none()
        && check_placement(&m.manifest_key(), m).is_ok()
}
