//! WAL retention: once `gsdr prune` has decided which base backups of a
//! postgres source stay on a target, delete the archived WAL none of them
//! needs, and never any that one does.
//!
//! - [`WalFloor::of`] names the oldest segment a remaining base backup needs
//!   (its `first_segment`), and which backup that is. No base backup, or one
//!   whose manifest records no readable first segment: no floor, and nothing
//!   is deleted (a blind guess could cost the only restorable backup).
//! - [`unneeded`] picks, from a listing of `<source>/wal/`, the WAL files that
//!   [`super::walfloor::wal_is_needed`] does not keep — every object of the
//!   file: the segment and its sidecar. `cluster.json` and anything that is
//!   not a WAL object of the layout ([`crate::layout`]) are never touched.
//! - [`prune_wal`] deletes them oldest first, data object then sidecar, and
//!   stops at the first failure, so that what remains is still one
//!   contiguous archive that the next prune finishes.

use std::collections::BTreeMap;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::walfloor::wal_is_needed;
use super::walname::file_of_key;
use crate::catalog::Manifest;
use crate::layout;
use crate::storage::{ObjectMeta, StorageError, Store};

pub use super::walfloor::WalFloor;

/// WAL files deleted at once: a day of WAL is thousands of small deletes,
/// too slow one by one on S3; a small window keeps a failure's effect local.
const DELETE_CONCURRENCY: usize = 8;

/// One archived WAL file and its stored objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFile {
    /// File name as PostgreSQL named it.
    pub name: String,
    /// Its objects: the data object and/or the sidecar.
    pub keys: Vec<String>,
    /// Their stored size.
    pub bytes: u64,
}

/// Order of WAL positions: (log, segment), then the timeline, then the rest of the name.
fn position(name: &str) -> (&str, &str) {
    if name.len() >= 24 {
        (&name[8..24], name)
    } else {
        ("", name)
    }
}

/// The WAL files of `source` in `objects` (a listing of `<source>/wal/`),
/// oldest position first. Objects outside the WAL layout are left out.
pub fn wal_files(objects: &[ObjectMeta], source: &str) -> Vec<WalFile> {
    let mut files: BTreeMap<String, WalFile> = BTreeMap::new();
    for o in objects {
        let Some((name, _)) = file_of_key(source, &o.key) else {
            continue;
        };
        let f = files.entry(name.to_string()).or_insert_with(|| WalFile {
            name: name.to_string(),
            keys: Vec::new(),
            bytes: 0,
        });
        f.keys.push(o.key.clone());
        f.bytes += o.size;
    }
    let mut out: Vec<WalFile> = files.into_values().collect();
    for f in &mut out {
        // The data object first: the sidecar goes last, as it is written first.
        f.keys.sort_by_key(|k| k.ends_with(".json"));
    }
    out.sort_by(|a, b| position(&a.name).cmp(&position(&b.name)));
    out
}

/// The WAL files among `files` that no remaining base backup needs, given the floor.
pub fn unneeded(files: &[WalFile], floor: &WalFloor) -> Vec<WalFile> {
    let from = floor.segment();
    if from.is_none() {
        return Vec::new();
    }
    files
        .iter()
        .filter(|f| !wal_is_needed(&f.name, from))
        .cloned()
        .collect()
}

/// Deletes the objects of one WAL file, in order.
async fn delete_file(store: &dyn Store, f: &WalFile) -> Result<(), StorageError> {
    for k in &f.keys {
        store.delete(k).await?;
    }
    Ok(())
}

/// What prune did (or would do) to the WAL of one postgres source on one target.
#[derive(Debug, Clone, Serialize)]
pub struct WalPrune {
    /// Target name.
    pub target: String,
    /// Source.
    pub source: String,
    /// From where WAL is kept, and why.
    pub floor: WalFloor,
    /// [`WalFloor::explain`], plus any failed backup deletion it accounts for.
    pub reason: String,
    /// WAL files deleted (in a dry run: to delete; after an error: deleted before it).
    pub files: usize,
    /// Their objects (segment and sidecar).
    pub objects: usize,
    /// Their stored bytes.
    pub bytes: u64,
    /// Oldest file deleted.
    pub first: Option<String>,
    /// Newest file deleted.
    pub last: Option<String>,
    /// Oldest WAL segment left in the archive.
    pub oldest_kept: Option<String>,
    /// Deletions were made (false in a dry run).
    pub deleted: bool,
    /// Why listing or a deletion failed, if it did.
    pub error: Option<String>,
}

impl crate::source::LogPruned for WalPrune {
    /// One human line for the WAL of a source on a target.
    fn line(&self) -> String {
        let w = self;
        let what = match (&w.error, w.deleted) {
            (Some(_), _) => "FAILED",
            (None, _) if w.files == 0 => "keep",
            (None, true) => "deleted",
            (None, false) => "delete",
        };
        let range = match (&w.first, &w.last) {
            (Some(a), Some(b)) => format!(" {a} .. {b}"),
            _ => String::new(),
        };
        let mut line = format!(
        "{what:<8}{:<12}{:<20} WAL: {} files ({} objects, {}){range}\n        oldest kept {}: {}\n",
        w.target,
        w.source,
        w.files,
        w.objects,
        crate::units::human_bytes(w.bytes),
        w.oldest_kept.as_deref().unwrap_or("none"),
        w.reason
    );
        if let Some(e) = &w.error {
            line += &format!("        {e}\n");
        }
        line
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// Deletes (unless `dry_run`) the WAL of `source` in `store` (target `target`)
/// that none of `remaining` needs. `remaining` are the backups that exist
/// after the backup deletions, those whose deletion failed included;
/// `failed_backups` counts the latter, for the reason.
pub async fn prune_wal(
    store: &dyn Store,
    target: &str,
    source: &str,
    remaining: &[Manifest],
    failed_backups: usize,
    dry_run: bool,
) -> WalPrune {
    let floor = WalFloor::of(remaining);
    let mut reason = floor.explain();
    if failed_backups > 0 {
        reason += &format!(
            " (counting {failed_backups} backup(s) whose deletion failed, as they still exist)"
        );
    }
    let mut report = WalPrune {
        target: target.to_string(),
        source: source.to_string(),
        floor,
        reason,
        files: 0,
        objects: 0,
        bytes: 0,
        first: None,
        last: None,
        oldest_kept: None,
        deleted: !dry_run,
        error: None,
    };
    let files = match store.list(&layout::wal_prefix(source)).await {
        Ok(objects) => wal_files(&objects, source),
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let chosen = unneeded(&files, &report.floor);
    let done = if dry_run {
        chosen.len()
    } else {
        // Boxed and collected first: a closure in the stream's type trips the
        // compiler's `Send` inference for the daemon's `async_trait` runner.
        let deletions: Vec<BoxFuture<'_, Result<(), StorageError>>> = chosen
            .iter()
            .map(|f| delete_file(store, f).boxed())
            .collect();
        let results: Vec<_> = stream::iter(deletions)
            .buffered(DELETE_CONCURRENCY)
            .collect()
            .await;
        // Counted up to the first failure: the archive stays contiguous from there.
        let ok = results.iter().take_while(|r| r.is_ok()).count();
        if let Some(Err(e)) = results.get(ok) {
            report.error = Some(format!(
                "deleting WAL `{}` failed: {e}; WAL from there on was kept",
                chosen[ok].name
            ));
        }
        ok
    };
    let gone = &chosen[..done];
    report.files = gone.len();
    report.objects = gone.iter().map(|f| f.keys.len()).sum();
    report.bytes = gone.iter().map(|f| f.bytes).sum();
    report.first = gone.first().map(|f| f.name.clone());
    report.last = gone.last().map(|f| f.name.clone());
    report.oldest_kept = files
        .iter()
        .filter(|f| f.name.len() == 24 && !gone.iter().any(|g| g.name == f.name))
        .map(|f| f.name.clone())
        .next();
    if !dry_run {
        crate::metrics::events::WalPruned {
            source,
            target,
            files: report.files,
            objects: report.objects,
            bytes: report.bytes,
            first: report.first.as_deref(),
            last: report.last.as_deref(),
            keep_from: report.floor.segment(),
        }
        .emit();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{wal_data as data_key, wal_sidecar as sidecar_key};

    fn manifest(id: &str, kind: &str, first_segment: Option<&str>) -> Manifest {
        let details = match first_segment {
            Some(s) => serde_json::json!({
                "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "timeline": 1,
                "system_identifier": "1", "first_segment": s, "last_segment": s,
                "start_time": "2026-11-29T00:00:00Z", "stop_time": "2026-11-29T00:00:01Z",
                "server_version": "15", "wal_segment_bytes": 16777216
            }),
            None => serde_json::json!({"other": true}),
        };
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": id, "source": "pg", "engine": "postgres", "kind": kind,
            "started_at": "2026-11-29T00:00:00Z", "finished_at": "2026-11-29T00:00:01Z",
            "consistency": {"consistency_time": "2026-11-29T00:00:01Z", "details": details},
            "raw_bytes": 1, "raw_sha256": "", "stored_bytes": 1, "stored_sha256": "",
            "data_key": format!("pg/{kind}/{id}/data.zst.age"), "zstd_level": 3,
            "recipients": [], "gsdr_version": "0"
        }))
        .unwrap()
    }

    fn listing(names: &[&str]) -> Vec<ObjectMeta> {
        let mut out = Vec::new();
        for n in names {
            for key in [data_key("pg", n), sidecar_key("pg", n)] {
                out.push(ObjectMeta {
                    size: if key.ends_with(".json") { 100 } else { 1000 },
                    key,
                    etag: None,
                    last_modified: None,
                });
            }
        }
        out
    }

    fn names(files: &[WalFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn floor_is_the_oldest_position_of_the_kept_base_backups() {
        let kept = [
            manifest("b2", "base", Some("000000020000000000000009")),
            manifest("b1", "base", Some("000000010000000000000005")),
        ];
        assert_eq!(
            WalFloor::of(&kept),
            WalFloor::From {
                segment: "000000010000000000000005".into(),
                backup: "b1".into()
            }
        );
        // Position beats timeline: a later timeline at an earlier position is the floor.
        let kept = [
            manifest("b1", "base", Some("000000010000000000000007")),
            manifest("b3", "base", Some("000000030000000000000006")),
        ];
        assert_eq!(
            WalFloor::of(&kept).segment(),
            Some("000000030000000000000006")
        );
        // walverify's helper agrees.
        assert_eq!(
            super::super::walfloor::wal_needed_from(&kept).as_deref(),
            Some("000000030000000000000006")
        );
    }

    #[test]
    fn nothing_is_deleted_without_a_readable_kept_base_backup() {
        let files = wal_files(
            &listing(&["000000010000000000000001", "000000010000000000000002"]),
            "pg",
        );
        assert_eq!(files.len(), 2);
        assert_eq!(WalFloor::of(&[]), WalFloor::NoBaseBackup);
        assert!(unneeded(&files, &WalFloor::of(&[])).is_empty());
        // A non-base manifest is no base backup.
        let other = [manifest("x", "stdout", Some("000000010000000000000009"))];
        assert!(unneeded(&files, &WalFloor::of(&other)).is_empty());
        // One kept base backup without a readable first segment vetoes everything.
        let kept = [
            manifest("good", "base", Some("000000010000000000000009")),
            manifest("bad", "base", None),
        ];
        assert_eq!(
            WalFloor::of(&kept),
            WalFloor::Unreadable {
                backup: "bad".into()
            }
        );
        assert!(unneeded(&files, &WalFloor::of(&kept)).is_empty());
        assert!(WalFloor::of(&kept).explain().contains("no WAL deleted"));
    }

    #[test]
    fn selection_spans_timelines_keeps_history_and_ignores_other_objects() {
        let mut objects = listing(&[
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000004.00000028.backup",
            "00000002.history",
            "000000020000000000000004.partial",
            "000000010000000000000005",
            "000000020000000000000005",
            "000000010000000000000006",
            "000000020000000000000006",
        ]);
        // Not WAL objects of the layout: never selected.
        for key in [
            "pg/wal/cluster.json",
            "pg/wal/00000001/notes.txt",
            "pg/wal/00000009/000000010000000000000001.zst.age",
            "pg/base/x/manifest.json",
        ] {
            objects.push(ObjectMeta {
                key: key.into(),
                size: 1,
                etag: None,
                last_modified: None,
            });
        }
        // An interrupted push: a sidecar only.
        objects.push(ObjectMeta {
            key: sidecar_key("pg", "000000010000000000000002"),
            size: 100,
            etag: None,
            last_modified: None,
        });
        let files = wal_files(&objects, "pg");
        let floor = WalFloor::of(&[manifest("b", "base", Some("000000020000000000000005"))]);
        let gone = unneeded(&files, &floor);
        assert_eq!(
            names(&gone),
            vec![
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000004.00000028.backup",
                "000000020000000000000004.partial",
            ]
        );
        // Each file goes with its sidecar, data object first.
        assert_eq!(
            gone[1].keys,
            vec![
                data_key("pg", "000000010000000000000003"),
                sidecar_key("pg", "000000010000000000000003")
            ]
        );
        assert_eq!(gone[1].bytes, 1100);
        assert_eq!(
            gone[0].keys,
            vec![sidecar_key("pg", "000000010000000000000002")]
        );
        // Kept: the floor and later on both timelines, and the history file.
        let kept: Vec<&str> = names(&files)
            .into_iter()
            .filter(|n| !names(&gone).contains(n))
            .collect();
        assert_eq!(
            kept,
            vec![
                "00000002.history",
                "000000010000000000000005",
                "000000020000000000000005",
                "000000010000000000000006",
                "000000020000000000000006",
            ]
        );
    }

    fn seg(n: u32) -> String {
        format!("0000000100000000{n:08X}")
    }

    #[tokio::test]
    async fn wal_follows_the_backups_that_still_exist() {
        use crate::catalog::Catalog;
        use crate::storage::{fs::FsStore, PutCondition};
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(FsStore::new(dir.path()).unwrap());
        let cat = Catalog::new(store.clone());
        let old = manifest("b1", "base", Some(&seg(2)));
        let new = manifest("b2", "base", Some(&seg(5)));
        for m in [&old, &new] {
            cat.commit(m).await.unwrap();
        }
        store
            .put_small(&new.data_key, "x".into(), PutCondition::Overwrite)
            .await
            .unwrap();
        // The old backup's data cannot be deleted: a folder stands at its key.
        std::fs::create_dir_all(dir.path().join(&old.data_key)).unwrap();
        std::fs::write(dir.path().join(&old.data_key).join("x"), "x").unwrap();
        for n in 1..=6 {
            for key in [data_key("pg", &seg(n)), sidecar_key("pg", &seg(n))] {
                store
                    .put_small(&key, "x".into(), PutCondition::Overwrite)
                    .await
                    .unwrap();
            }
        }
        let rules = crate::retention::Retention {
            keep_within: None,
            keep_last: Some(1),
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
        };
        let now = chrono::Utc::now();
        let prune = |dry_run| crate::retention::prune_source(&cat, "t", "pg", &rules, now, dry_run);

        // Dry run: from the kept backup only; nothing deleted.
        let tp = prune(true).await.unwrap();
        let w = prune_wal(store.as_ref(), "t", "pg", &tp.remaining, 0, true).await;
        assert_eq!((w.files, w.objects, w.bytes), (4, 8, 8));
        assert_eq!(
            (w.first.clone(), w.last.clone()),
            (Some(seg(1)), Some(seg(4)))
        );
        assert_eq!(w.oldest_kept, Some(seg(5)));
        assert!(!w.deleted);
        assert_eq!(store.list("pg/wal/").await.unwrap().len(), 12);

        // The old backup's deletion fails: it still counts, and keeps its WAL.
        let tp = prune(false).await.unwrap();
        let failed = tp.actions.iter().filter(|a| a.error.is_some()).count();
        assert_eq!(failed, 1, "{:?}", tp.actions);
        let w = prune_wal(store.as_ref(), "t", "pg", &tp.remaining, failed, false).await;
        assert_eq!(w.floor.segment(), Some(seg(2).as_str()));
        assert_eq!((w.files, w.first.clone()), (1, Some(seg(1))));
        assert!(w.reason.contains("deletion failed"), "{}", w.reason);
        assert!(w.deleted && w.error.is_none());
        let left: Vec<String> = store
            .list("pg/wal/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left.len(), 10);
        assert!(
            !left.contains(&data_key("pg", &seg(1))) && !left.contains(&sidecar_key("pg", &seg(1)))
        );
        assert!(left.contains(&data_key("pg", &seg(2))));
    }
}
