//! Garbage collection of one target: what interrupted runs leave behind.
//!
//! A crash, an OOM kill or a cancellation between the first byte and the
//! manifest leaves garbage that no listing shows but that costs storage:
//!
//! - **multipart uploads** never completed nor aborted (S3),
//! - **temp files** (`.tmp-*`) never renamed into place (folder targets),
//! - **orphan data**: a `<source>/<kind>/<id>/data.zst.age` with no
//!   `manifest.json` beside it (the run died after the upload, before the
//!   commit).
//!
//! [`gc_target`] removes each of them once it is older than the grace period
//! and no live run of its source may still be writing it (the caller passes
//! the sources whose run lease is held). It never removes a data object with
//! a manifest beside it — readable or not: a manifest of a newer gsdr is
//! still a backup — never anything under `<source>/wal/`, and never anything
//! else (manifests, leases, drill reports, Velero records). An orphan's
//! folder is looked up once more right before the delete, so a backup that
//! commits meanwhile keeps its data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::layout::{DATA_OBJECT, LOG_FOLDER, MANIFEST_OBJECT, WAL_FOLDER};
use crate::metrics::events;
use crate::storage::{IncompleteKind, Store};

/// What garbage collection may remove, and from whom it must keep off.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Leftovers younger than this are kept: they may be writes in progress.
    pub grace: Duration,
    /// Report only; remove nothing.
    pub dry_run: bool,
    /// "Now", for ages.
    pub now: DateTime<Utc>,
    /// Sources whose run lease is held (source → holder): nothing of theirs is removed.
    pub busy: BTreeMap<String, String>,
}

/// A kind of leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// An open S3 multipart upload.
    MultipartUpload,
    /// A folder target's `.tmp-*` file.
    TempFile,
    /// A data object without a manifest.
    OrphanData,
}

impl Category {
    /// `multipart_upload`, `temp_file`, `orphan_data` (metric label, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::MultipartUpload => "multipart_upload",
            Category::TempFile => "temp_file",
            Category::OrphanData => "orphan_data",
        }
    }

    /// How people call it.
    pub fn human(self) -> &'static str {
        match self {
            Category::MultipartUpload => "incomplete multipart uploads",
            Category::TempFile => "temp files",
            Category::OrphanData => "data objects without a manifest",
        }
    }
}

/// What happened to one leftover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "detail")]
pub enum GcAction {
    /// Removed.
    Removed,
    /// Would be removed (dry run).
    WouldRemove,
    /// Kept, and why (too young, a live run).
    Kept(String),
    /// The removal failed.
    Failed(String),
}

/// One leftover found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcItem {
    /// Its category.
    pub category: Category,
    /// The key it was written for (relative to the target's prefix).
    pub key: String,
    /// Bytes it holds.
    pub bytes: u64,
    /// When it was started or last written, if known.
    pub since: Option<DateTime<Utc>>,
    /// What gc did.
    #[serde(flatten)]
    pub action: GcAction,
}

/// Count and bytes of one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Leftovers.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What garbage collection did on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetGc {
    /// Target name.
    pub target: String,
    /// The store (`s3://bucket/prefix`, `file:///path`).
    pub store: String,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Removed (in a dry run: would be removed), per category.
    pub removed: BTreeMap<Category, Tally>,
    /// Kept (too young, or a live run), per category.
    pub kept: BTreeMap<Category, Tally>,
    /// Removals that failed.
    pub failed: u64,
    /// Every leftover found, in the order handled.
    pub items: Vec<GcItem>,
}

impl TargetGc {
    /// How many leftovers were removed (or, in a dry run, would be).
    pub fn removed_count(&self) -> u64 {
        self.removed.values().map(|t| t.count).sum()
    }

    fn record(&mut self, item: GcItem) {
        let tally = match &item.action {
            GcAction::Removed | GcAction::WouldRemove => {
                Some(self.removed.entry(item.category).or_default())
            }
            GcAction::Kept(_) => Some(self.kept.entry(item.category).or_default()),
            GcAction::Failed(_) => {
                self.failed += 1;
                None
            }
        };
        if let Some(t) = tally {
            t.count += 1;
            t.bytes += item.bytes;
        }
        self.items.push(item);
    }

    /// Leftovers removed (or removable, in a dry run), all categories.
    pub fn removed_total(&self) -> Tally {
        total(&self.removed)
    }

    /// Leftovers kept, all categories.
    pub fn kept_total(&self) -> Tally {
        total(&self.kept)
    }
}

fn total(m: &BTreeMap<Category, Tally>) -> Tally {
    m.values().fold(Tally::default(), |a, t| Tally {
        count: a.count + t.count,
        bytes: a.bytes + t.bytes,
    })
}

/// The source a key belongs to: its first folder.
fn source_of(key: &str) -> &str {
    key.split('/').next().unwrap_or("")
}

/// `<source>/<kind>/<id>` of a backup's data object key, `None` for anything
/// else (WAL and continuous-capture logs included).
fn data_dir(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [_, kind, _, DATA_OBJECT] if *kind != WAL_FOLDER && *kind != LOG_FOLDER => {
            key.strip_suffix(DATA_OBJECT)?.strip_suffix('/')
        }
        _ => None,
    }
}

/// Why a leftover must stay, if it must.
fn keep_reason(opts: &GcOptions, key: &str, since: Option<DateTime<Utc>>) -> Option<String> {
    if let Some(holder) = opts.busy.get(source_of(key)) {
        return Some(format!(
            "a run of `{}` holds its lease ({holder})",
            source_of(key)
        ));
    }
    let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
    match since {
        None => Some("its age is unknown".into()),
        Some(t) if opts.now - t < grace => Some(format!(
            "younger than the grace period ({})",
            humantime::format_duration(opts.grace)
        )),
        Some(_) => None,
    }
}

/// Collects the garbage of target `target` (store `store`); see the module doc.
/// Fails only when the store cannot be listed; a failed removal is recorded
/// (and reported by an event) and the others go on.
pub async fn gc_target(target: &str, store: &Arc<dyn Store>, opts: &GcOptions) -> Result<TargetGc> {
    let mut report = TargetGc {
        target: target.to_string(),
        store: store.describe(),
        dry_run: opts.dry_run,
        removed: BTreeMap::new(),
        kept: BTreeMap::new(),
        failed: 0,
        items: Vec::new(),
    };
    // 1. Interrupted writes.
    for w in store.incomplete_writes().await? {
        let category = match w.kind {
            IncompleteKind::MultipartUpload => Category::MultipartUpload,
            IncompleteKind::TempFile => Category::TempFile,
        };
        let bytes = w.bytes.unwrap_or(0);
        let action = match keep_reason(opts, &w.key, w.started) {
            Some(why) => GcAction::Kept(why),
            None if opts.dry_run => GcAction::WouldRemove,
            None => match store.remove_incomplete(&w).await {
                Ok(()) => GcAction::Removed,
                Err(e) => GcAction::Failed(e.to_string()),
            },
        };
        report.record(announce(
            target,
            category,
            &w.key,
            bytes,
            opts.dry_run,
            w.started,
            action,
        ));
    }
    // 2. Data objects with no manifest beside them.
    let objects = store.list("").await?;
    let with_manifest: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(MANIFEST_OBJECT)?.strip_suffix('/'))
        .collect();
    for o in &objects {
        let Some(dir) = data_dir(&o.key) else {
            continue;
        };
        if with_manifest.contains(dir) {
            continue;
        }
        let action = match keep_reason(opts, &o.key, o.last_modified) {
            Some(why) => GcAction::Kept(why),
            None if opts.dry_run => GcAction::WouldRemove,
            None => {
                let manifest = format!("{dir}/{MANIFEST_OBJECT}");
                match store.head(&manifest).await {
                    // Committed since the listing: a backup now, not garbage.
                    Ok(Some(_)) => continue,
                    Ok(None) => match store.delete(&o.key).await {
                        Ok(()) => GcAction::Removed,
                        Err(e) => GcAction::Failed(e.to_string()),
                    },
                    Err(e) => GcAction::Failed(e.to_string()),
                }
            }
        };
        report.record(announce(
            target,
            Category::OrphanData,
            &o.key,
            o.size,
            opts.dry_run,
            o.last_modified,
            action,
        ));
    }
    let (removed, kept) = (report.removed_total(), report.kept_total());
    events::GcFinished {
        target,
        removed: removed.count,
        bytes: removed.bytes,
        kept: kept.count,
        failed: report.failed,
        dry_run: opts.dry_run,
    }
    .emit();
    Ok(report)
}

/// Emits the event of one leftover's fate and makes its report item.
fn announce(
    target: &str,
    category: Category,
    key: &str,
    bytes: u64,
    dry_run: bool,
    since: Option<DateTime<Utc>>,
    action: GcAction,
) -> GcItem {
    match &action {
        GcAction::Removed | GcAction::WouldRemove => events::GcRemoved {
            target,
            category: category.as_str(),
            key,
            bytes,
            dry_run,
        }
        .emit(),
        GcAction::Failed(e) => events::GcFailed {
            target,
            key,
            error: e,
        }
        .emit(),
        GcAction::Kept(_) => {}
    }
    GcItem {
        category,
        key: key.to_string(),
        bytes,
        since,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::data(
        "db/full/20261129T014500Z-1a2b3c/data.zst.age",
        Some("db/full/20261129T014500Z-1a2b3c")
    )]
    #[case::manifest("db/full/20261129T014500Z-1a2b3c/manifest.json", None)]
    #[case::wal_named_like_data("pg/wal/00000001/data.zst.age", None)]
    #[case::wal_segment("pg/wal/00000001/000000010000000000000003.zst.age", None)]
    #[case::too_deep("db/full/x/y/data.zst.age", None)]
    #[case::lease("locks/db.json", None)]
    #[case::drill_report("drills/2026-11-29/node-loss/report.json", None)]
    fn data_dirs(#[case] key: &str, #[case] want: Option<&str>) {
        assert_eq!(data_dir(key), want);
    }

    fn opts(grace_secs: u64, busy: &[&str]) -> GcOptions {
        GcOptions {
            grace: Duration::from_secs(grace_secs),
            dry_run: false,
            now: DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            busy: busy
                .iter()
                .map(|s| (s.to_string(), "host-1-abc".to_string()))
                .collect(),
        }
    }

    #[rstest]
    #[case::old(3600, &[], Some(7200), None)]
    #[case::young(3600, &[], Some(60), Some("younger than the grace period (1h)"))]
    #[case::exactly_grace(3600, &[], Some(3600), None)]
    #[case::unknown_age(3600, &[], None, Some("its age is unknown"))]
    #[case::live_run(3600, &["db"], Some(7200), Some("a run of `db` holds its lease (host-1-abc)"))]
    #[case::other_source_busy(3600, &["other"], Some(7200), None)]
    fn keeps(
        #[case] grace: u64,
        #[case] busy: &[&str],
        #[case] age_secs: Option<i64>,
        #[case] want: Option<&str>,
    ) {
        let o = opts(grace, busy);
        let since = age_secs.map(|s| o.now - chrono::Duration::seconds(s));
        assert_eq!(
            keep_reason(&o, "db/full/x/data.zst.age", since).as_deref(),
            want
        );
    }
}
