//! The bucket layout: every object key gsdr writes or reads, built and
//! parsed here and nowhere else.
//!
//! Keys are relative to a target's prefix (the store adds it). Under it:
//!
//! | what | key |
//! |---|---|
//! | a backup's data object | `<source>/<kind>/<backup-id>/data.zst.age` |
//! | its manifest | `<source>/<kind>/<backup-id>/manifest.json` |
//! | the source's catalog index (its manifests in one object) | `<source>/index.json` |
//! | a WAL file | `<source>/wal/<timeline>/<name>.zst.age` |
//! | its sidecar | `<source>/wal/<timeline>/<name>.json` |
//! | the WAL archive's cluster | `<source>/wal/cluster.json` |
//! | a streamed segment's partial (replaced as it grows) | `<source>/wal/<timeline>/<name>.stream.zst.age` |
//! | a continuous capture's log object (Redis stream segment, oplog slice) | `<source>/log/<name>` (the engine names it) |
//! | a Velero backup record | `velero/<job>/<name>.json` |
//! | a drill report | `drills/<stamp>/<scenario>/report.<ext>` (incidents: `incidents/…`) |
//! | a source's run lease | `<locks>/<source>.json` |
//! | another job's run lease | `<locks>/jobs/<kind>/<name>.json` |
//! | a job record | `jobs/<kind>/<name>.json` |
//! | the watch state | `jobs/watch-state.json` |
//!
//! Everything of one source lives under `<source>/` ([`source_prefix`]), so
//! a look at one source lists that prefix only. Existing buckets hold these
//! exact keys: a change here is a data migration, and the unit test
//! `keys_are_byte_identical_to_the_released_layout` pins them.
//!
//! The parsers are strict: a key that does not have exactly the shape the
//! builder makes is `None`, so foreign objects (a WAL file, a lease, a
//! report, a hand-copied file) are never taken for something else.

use chrono::{DateTime, Utc};

/// File name of a backup's data object.
pub const DATA_OBJECT: &str = "data.zst.age";
/// File name of a backup's manifest.
pub const MANIFEST_OBJECT: &str = "manifest.json";
/// Folder of a source's archived WAL, beside its backup kinds (no backup kind may be named so).
pub const WAL_FOLDER: &str = "wal";
/// Suffix of a stored (compressed, encrypted) WAL file.
pub const WAL_DATA_SUFFIX: &str = ".zst.age";
/// Suffix of a WAL file's sidecar.
pub const WAL_SIDECAR_SUFFIX: &str = ".json";
/// Suffix of a streamed segment's partial object (no sidecar: it is
/// replaced as the segment grows, and dropped once the segment is stored).
pub const WAL_STREAM_PARTIAL_SUFFIX: &str = ".stream.zst.age";
/// File name of the WAL archive's cluster identity, in `<source>/wal/`.
pub const WAL_CLUSTER_FILE: &str = "cluster.json";
/// Folder of a source's continuous-capture log (Redis, MongoDB), beside its backup kinds.
pub const LOG_FOLDER: &str = "log";
/// Folder of a WAL file whose name has no timeline (never one PostgreSQL names).
pub const WAL_NO_TIMELINE: &str = "other";
/// Top folder of the Velero backup records.
pub const VELERO_FOLDER: &str = "velero";
/// Top folder of drill reports.
pub const DRILLS_FOLDER: &str = "drills";
/// Top folder of incident reports.
pub const INCIDENTS_FOLDER: &str = "incidents";
/// Top folder of job records.
pub const JOBS_FOLDER: &str = "jobs";
/// Key of the watch state (the notices already sent).
pub const WATCH_STATE: &str = "jobs/watch-state.json";
/// How a drill report's folder names its start (UTC).
const REPORT_STAMP: &str = "%Y-%m-%dT%H%M%SZ";

/// The `/`-separated components of `key` when there are exactly `N`, none empty.
fn parts<const N: usize>(key: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut it = key.split('/');
    for slot in &mut out {
        *slot = it.next().filter(|p| !p.is_empty())?;
    }
    it.next().is_none().then_some(out)
}

// ---------------------------------------------------------------- backups

/// Everything of `source` on a target: `<source>/` (backups and WAL).
pub fn source_prefix(source: &str) -> String {
    format!("{source}/")
}

/// File name of a source's catalog index, in `<source>/`.
pub const INDEX_OBJECT: &str = "index.json";

/// Key of `source`'s catalog index: `<source>/index.json`.
pub fn source_index(source: &str) -> String {
    format!("{source}/{INDEX_OBJECT}")
}

/// Every backup of one kind of `source`: `<source>/<kind>/`.
pub fn kind_prefix(source: &str, kind: &str) -> String {
    format!("{source}/{kind}/")
}

/// Whether a folder under `<source>/` holds no backups (`wal`, `log`):
/// no backup kind may be named so.
pub fn is_reserved_folder(name: &str) -> bool {
    name == WAL_FOLDER || name == LOG_FOLDER
}

/// Folder of one backup: `<source>/<kind>/<id>`.
pub fn backup_dir(source: &str, kind: &str, id: &str) -> String {
    format!("{source}/{kind}/{id}")
}

/// Key of a backup's data object.
pub fn backup_data(source: &str, kind: &str, id: &str) -> String {
    format!("{}/{DATA_OBJECT}", backup_dir(source, kind, id))
}

/// Key of a backup's manifest.
pub fn backup_manifest(source: &str, kind: &str, id: &str) -> String {
    format!("{}/{MANIFEST_OBJECT}", backup_dir(source, kind, id))
}

/// Whether `key` is an object inside the folder of backup
/// `<source>/<kind>/<id>` (no `.` or `..` component, not the folder itself).
pub fn is_inside_backup(source: &str, kind: &str, id: &str, key: &str) -> bool {
    let dir = format!("{}/", backup_dir(source, kind, id));
    key.strip_prefix(&dir).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    })
}

/// Which object of a backup a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupObject {
    /// `data.zst.age`.
    Data,
    /// `manifest.json`.
    Manifest,
}

/// A parsed backup key: `<source>/<kind>/<id>/{data.zst.age,manifest.json}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupKey<'k> {
    /// Source.
    pub source: &'k str,
    /// Backup kind (`stdout`, `full`, `rdb`, `base`, …; never `wal`).
    pub kind: &'k str,
    /// Backup id.
    pub id: &'k str,
    /// Data object or manifest.
    pub object: BackupObject,
}

impl<'k> BackupKey<'k> {
    /// Parses `key`; `None` for anything that is not a backup's data object
    /// or manifest (WAL, leases, reports, records, stray objects).
    pub fn parse(key: &'k str) -> Option<Self> {
        let [source, kind, id, file] = parts::<4>(key)?;
        let object = match file {
            DATA_OBJECT => BackupObject::Data,
            MANIFEST_OBJECT => BackupObject::Manifest,
            _ => return None,
        };
        (kind != WAL_FOLDER).then_some(BackupKey {
            source,
            kind,
            id,
            object,
        })
    }

    /// Parses `key` when it is a backup's manifest.
    pub fn manifest(key: &'k str) -> Option<Self> {
        Self::parse(key).filter(|k| k.object == BackupObject::Manifest)
    }

    /// The backup's folder (`<source>/<kind>/<id>`).
    pub fn dir(&self) -> String {
        backup_dir(self.source, self.kind, self.id)
    }

    /// The key this was parsed from.
    pub fn key(&self) -> String {
        match self.object {
            BackupObject::Data => backup_data(self.source, self.kind, self.id),
            BackupObject::Manifest => backup_manifest(self.source, self.kind, self.id),
        }
    }
}

// -------------------------------------------------------------------- log

/// Every continuous-capture log object of `source`: `<source>/log/`.
pub fn log_prefix(source: &str) -> String {
    format!("{source}/{LOG_FOLDER}/")
}

/// Key of log object `name` of `source` (the engine names it; it may hold
/// `/`, never `manifest.json` or `data.zst.age`, which are a backup's).
pub fn log_object(source: &str, name: &str) -> String {
    debug_assert!(!name.ends_with(MANIFEST_OBJECT) && !name.ends_with(DATA_OBJECT));
    format!("{source}/{LOG_FOLDER}/{name}")
}

// -------------------------------------------------------------------- WAL

/// Every WAL object of `source`: `<source>/wal/`.
pub fn wal_prefix(source: &str) -> String {
    format!("{source}/{WAL_FOLDER}/")
}

/// The WAL objects of one timeline (`00000002`): `<source>/wal/<timeline>/`.
pub fn wal_timeline_prefix(source: &str, timeline: &str) -> String {
    format!("{source}/{WAL_FOLDER}/{timeline}/")
}

/// The folder a WAL file is stored in: its timeline, the first 8 hex
/// digits of its name ([`WAL_NO_TIMELINE`] when there are none).
pub fn wal_folder_of(name: &str) -> &str {
    match name.get(..8) {
        Some(t) if t.bytes().all(|b| b.is_ascii_hexdigit()) => t,
        _ => WAL_NO_TIMELINE,
    }
}

/// Key of the stored WAL file `name`.
pub fn wal_data(source: &str, name: &str) -> String {
    format!(
        "{}{name}{WAL_DATA_SUFFIX}",
        wal_timeline_prefix(source, wal_folder_of(name))
    )
}

/// Key of the sidecar of WAL file `name`.
pub fn wal_sidecar(source: &str, name: &str) -> String {
    format!(
        "{}{name}{WAL_SIDECAR_SUFFIX}",
        wal_timeline_prefix(source, wal_folder_of(name))
    )
}

/// Key of the partial object of segment `name` while it is streamed.
pub fn wal_stream_partial(source: &str, name: &str) -> String {
    format!(
        "{}{name}{WAL_STREAM_PARTIAL_SUFFIX}",
        wal_timeline_prefix(source, wal_folder_of(name))
    )
}

/// Key of the cluster identity document of `source`'s WAL archive.
pub fn wal_cluster(source: &str) -> String {
    format!("{source}/{WAL_FOLDER}/{WAL_CLUSTER_FILE}")
}

/// Which object of a WAL file a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalObject {
    /// `<name>.zst.age`.
    Data,
    /// `<name>.json`.
    Sidecar,
}

/// A parsed WAL key: `<source>/wal/<timeline>/<name>{.zst.age,.json}`, in
/// the folder [`wal_folder_of`] gives its name. The name itself is not
/// checked here (the engine knows PostgreSQL's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalKey<'k> {
    /// Source.
    pub source: &'k str,
    /// WAL file name as PostgreSQL named it.
    pub name: &'k str,
    /// Data object or sidecar.
    pub object: WalObject,
}

impl<'k> WalKey<'k> {
    /// Parses `key`; `None` for anything else (`cluster.json`, a file in
    /// another timeline's folder, stray objects, backups).
    pub fn parse(key: &'k str) -> Option<Self> {
        let [source, wal, folder, file] = parts::<4>(key)?;
        if wal != WAL_FOLDER {
            return None;
        }
        let (name, object) = match file.strip_suffix(WAL_DATA_SUFFIX) {
            Some(n) => (n, WalObject::Data),
            None => (file.strip_suffix(WAL_SIDECAR_SUFFIX)?, WalObject::Sidecar),
        };
        (!name.is_empty() && wal_folder_of(name) == folder).then_some(WalKey {
            source,
            name,
            object,
        })
    }

    /// The key this was parsed from.
    pub fn key(&self) -> String {
        match self.object {
            WalObject::Data => wal_data(self.source, self.name),
            WalObject::Sidecar => wal_sidecar(self.source, self.name),
        }
    }
}

// ----------------------------------------------------------------- Velero

/// The Velero records (of `job` if given): `velero/` or `velero/<job>/`.
pub fn velero_prefix(job: Option<&str>) -> String {
    match job {
        Some(j) => format!("{VELERO_FOLDER}/{j}/"),
        None => format!("{VELERO_FOLDER}/"),
    }
}

/// Key of the record of Velero backup `name` made by gsdr job `job`.
pub fn velero_record(job: &str, name: &str) -> String {
    format!("{VELERO_FOLDER}/{job}/{name}.json")
}

/// A parsed Velero record key: `velero/<job>/<name>.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VeleroKey<'k> {
    /// The gsdr job that made the backup.
    pub job: &'k str,
    /// The Velero backup's name.
    pub name: &'k str,
}

impl<'k> VeleroKey<'k> {
    /// Parses `key`; `None` for anything else.
    pub fn parse(key: &'k str) -> Option<Self> {
        let [top, job, file] = parts::<3>(key)?;
        let name = file.strip_suffix(".json").filter(|n| !n.is_empty())?;
        (top == VELERO_FOLDER).then_some(VeleroKey { job, name })
    }
}

// ---------------------------------------------------------- drill reports

/// Whether a report is of a scheduled drill or of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFolder {
    /// `drills/`.
    Drill,
    /// `incidents/`.
    Incident,
}

impl ReportFolder {
    /// The top folder's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFolder::Drill => DRILLS_FOLDER,
            ReportFolder::Incident => INCIDENTS_FOLDER,
        }
    }
}

/// Every report of `folder`'s kind: `drills/` or `incidents/`.
pub fn reports_prefix(folder: ReportFolder) -> String {
    format!("{}/", folder.as_str())
}

/// Folder of one report: `drills/<stamp>/<scenario>`, the stamp being
/// the run's start in UTC (`2026-11-29T014500Z`).
pub fn report_dir(folder: ReportFolder, started_at: DateTime<Utc>, scenario: &str) -> String {
    format!(
        "{}/{}/{scenario}",
        folder.as_str(),
        started_at.format(REPORT_STAMP)
    )
}

/// Key of one rendering of a report (`ext`: `json`, `md`, `html`) in `dir` ([`report_dir`]).
pub fn report_file(dir: &str, ext: &str) -> String {
    format!("{dir}/report.{ext}")
}

/// A parsed report key: `<drills|incidents>/<stamp>/<scenario>/report.<ext>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportKey<'k> {
    /// Drill or incident.
    pub folder: ReportFolder,
    /// The run's start, as the folder names it.
    pub stamp: &'k str,
    /// Scenario.
    pub scenario: &'k str,
    /// `json`, `md`, `html`.
    pub ext: &'k str,
}

impl<'k> ReportKey<'k> {
    /// Parses `key`; `None` for anything else.
    pub fn parse(key: &'k str) -> Option<Self> {
        let [top, stamp, scenario, file] = parts::<4>(key)?;
        let folder = match top {
            DRILLS_FOLDER => ReportFolder::Drill,
            INCIDENTS_FOLDER => ReportFolder::Incident,
            _ => return None,
        };
        let ext = file.strip_prefix("report.").filter(|e| !e.is_empty())?;
        Some(ReportKey {
            folder,
            stamp,
            scenario,
            ext,
        })
    }

    /// The report's folder ([`report_dir`]).
    pub fn dir(&self) -> String {
        format!("{}/{}/{}", self.folder.as_str(), self.stamp, self.scenario)
    }
}

// ----------------------------------------------------------------- leases

/// Key of the run lease of a source's backups: `<locks>/<source>.json`
/// (the key older daemons and `storage gc` read).
pub fn source_lease(locks_prefix: &str, source: &str) -> String {
    format!("{locks_prefix}/{source}.json")
}

/// Key of the run lease of any other job: `<locks>/jobs/<kind>/<name>.json`.
pub fn job_lease(locks_prefix: &str, kind: &str, name: &str) -> String {
    format!(
        "{}/{JOBS_FOLDER}/{kind}/{name}.json",
        locks_prefix.trim_end_matches('/')
    )
}

/// A parsed lease key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKey<'k> {
    /// [`source_lease`].
    Source {
        /// Source.
        source: &'k str,
    },
    /// [`job_lease`].
    Job {
        /// Job kind.
        kind: &'k str,
        /// Job name.
        name: &'k str,
    },
}

impl<'k> LeaseKey<'k> {
    /// Parses `key` under `locks_prefix`; `None` for anything else.
    pub fn parse(locks_prefix: &str, key: &'k str) -> Option<Self> {
        let rest = key
            .strip_prefix(locks_prefix.trim_end_matches('/'))?
            .strip_prefix('/')?;
        if let Some(job) = rest.strip_prefix(&format!("{JOBS_FOLDER}/")) {
            let [kind, file] = parts::<2>(job)?;
            let name = file.strip_suffix(".json").filter(|n| !n.is_empty())?;
            return Some(LeaseKey::Job { kind, name });
        }
        let [file] = parts::<1>(rest)?;
        let source = file.strip_suffix(".json").filter(|n| !n.is_empty())?;
        Some(LeaseKey::Source { source })
    }
}

// ------------------------------------------------------------ job records

/// Every record of jobs of `kind`: `jobs/<kind>/`.
pub fn job_records_prefix(kind: &str) -> String {
    format!("{JOBS_FOLDER}/{kind}/")
}

/// Key of the record of job `name` of `kind`: `jobs/<kind>/<name>.json`.
pub fn job_record(kind: &str, name: &str) -> String {
    format!("{JOBS_FOLDER}/{kind}/{name}.json")
}

/// The job name of a key listed under [`job_records_prefix`]`(kind)`; `None`
/// for anything else. Names are taken as they are (a name is never
/// rejected on read: the record is rewritten under the same key).
pub fn job_record_name<'k>(kind: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(&job_records_prefix(kind))?
        .strip_suffix(".json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The keys buckets written by released versions hold: byte for byte.
    #[test]
    fn keys_are_byte_identical_to_the_released_layout() {
        let id = "20261129T014500Z-1a2b3c";
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 1, 45, 0).unwrap();
        for (got, want) in [
            (source_prefix("db"), "db/"),
            (source_index("db"), "db/index.json"),
            (kind_prefix("db", "full"), "db/full/"),
            (log_prefix("db"), "db/log/"),
            (
                wal_stream_partial("db", "000000010000000000000003"),
                "db/wal/00000001/000000010000000000000003.stream.zst.age",
            ),
            (
                log_object("db", "a/1-2.seg.zst.age"),
                "db/log/a/1-2.seg.zst.age",
            ),
            (
                backup_dir("db", "full", id),
                "db/full/20261129T014500Z-1a2b3c",
            ),
            (
                backup_data("db", "full", id),
                "db/full/20261129T014500Z-1a2b3c/data.zst.age",
            ),
            (
                backup_manifest("db", "full", id),
                "db/full/20261129T014500Z-1a2b3c/manifest.json",
            ),
            (wal_prefix("pg"), "pg/wal/"),
            (wal_timeline_prefix("pg", "00000002"), "pg/wal/00000002/"),
            (
                wal_data("pg", "000000020000000000000003"),
                "pg/wal/00000002/000000020000000000000003.zst.age",
            ),
            (
                wal_sidecar("pg", "000000020000000000000003"),
                "pg/wal/00000002/000000020000000000000003.json",
            ),
            (
                wal_sidecar("pg", "00000002.history"),
                "pg/wal/00000002/00000002.history.json",
            ),
            (
                wal_data("pg", "000000010000000000000002.00000028.backup"),
                "pg/wal/00000001/000000010000000000000002.00000028.backup.zst.age",
            ),
            (wal_data("pg", "RECOVERY"), "pg/wal/other/RECOVERY.zst.age"),
            (wal_cluster("pg"), "pg/wal/cluster.json"),
            (velero_prefix(None), "velero/"),
            (velero_prefix(Some("daily")), "velero/daily/"),
            (
                velero_record("daily", "daily-20261129030000-ab12"),
                "velero/daily/daily-20261129030000-ab12.json",
            ),
            (reports_prefix(ReportFolder::Drill), "drills/"),
            (reports_prefix(ReportFolder::Incident), "incidents/"),
            (
                report_dir(ReportFolder::Drill, at, "full-loss"),
                "drills/2026-11-29T014500Z/full-loss",
            ),
            (
                report_file(&report_dir(ReportFolder::Incident, at, "x"), "json"),
                "incidents/2026-11-29T014500Z/x/report.json",
            ),
            (source_lease("locks", "pg"), "locks/pg.json"),
            // Released behaviour: a trailing `/` doubles for source leases, not for job leases.
            (source_lease("locks/", "pg"), "locks//pg.json"),
            (
                job_lease("locks", "velero", "daily"),
                "locks/jobs/velero/daily.json",
            ),
            (
                job_lease("locks/", "velero", "daily"),
                "locks/jobs/velero/daily.json",
            ),
            (job_records_prefix("backup"), "jobs/backup/"),
            (job_record("backup", "pg"), "jobs/backup/pg.json"),
            (WATCH_STATE.to_string(), "jobs/watch-state.json"),
        ] {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn backup_keys_roundtrip_and_foreign_keys_are_rejected() {
        let id = "20261129T014500Z-1a2b3c";
        for (key, object) in [
            (backup_data("db", "full", id), BackupObject::Data),
            (backup_manifest("db", "full", id), BackupObject::Manifest),
        ] {
            let k = BackupKey::parse(&key).expect("parses");
            assert_eq!(
                (k.source, k.kind, k.id, k.object),
                ("db", "full", id, object)
            );
            assert_eq!(k.key(), key);
            assert_eq!(k.dir(), backup_dir("db", "full", id));
        }
        assert!(BackupKey::manifest(&backup_data("db", "full", id)).is_none());
        for foreign in [
            "db/full/x/notes.txt",
            "db/full/manifest.json",
            "db/full/x/y/manifest.json",
            "db//x/manifest.json",
            "/db/full/x/manifest.json",
            "pg/wal/00000001/data.zst.age",
            "pg/wal/00000001/manifest.json",
            "locks/db.json",
            "jobs/backup/pg.json",
            "velero/daily/x.json",
            "drills/2026-11-29T014500Z/full-loss/report.json",
        ] {
            assert_eq!(BackupKey::parse(foreign), None, "{foreign}");
        }
        assert!(is_inside_backup(
            "db",
            "full",
            id,
            &backup_data("db", "full", id)
        ));
        for outside in [
            "db/full/20261129T014500Z-1a2b3c/",
            "db/full/20261129T014500Z-1a2b3c/../../x",
            "db/full/20261129T014500Z-1a2b3c/./data.zst.age",
            "other/full/20261129T014500Z-1a2b3c/data.zst.age",
            "db/full/20261129T014500Z-1a2b3cd/data.zst.age",
        ] {
            assert!(!is_inside_backup("db", "full", id, outside), "{outside}");
        }
    }

    #[test]
    fn wal_keys_roundtrip_and_foreign_keys_are_rejected() {
        for name in [
            "000000020000000000000003",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000002.partial",
        ] {
            for (key, object) in [
                (wal_data("pg", name), WalObject::Data),
                (wal_sidecar("pg", name), WalObject::Sidecar),
            ] {
                let k = WalKey::parse(&key).expect("parses");
                assert_eq!((k.source, k.name, k.object), ("pg", name, object));
                assert_eq!(k.key(), key);
                assert!(key.starts_with(&wal_prefix("pg")));
            }
        }
        for foreign in [
            "pg/wal/cluster.json",
            "pg/wal/00000001/000000020000000000000003.zst.age",
            "pg/wal/00000002/notes.txt",
            "pg/wal/00000002/.json",
            "pg/base/00000002/000000020000000000000003.json",
            "pg/wal/00000002/x/000000020000000000000003.json",
            "pg/base/x/manifest.json",
        ] {
            assert_eq!(WalKey::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn other_keys_roundtrip_and_foreign_keys_are_rejected() {
        let key = velero_record("daily", "b1");
        assert_eq!(
            VeleroKey::parse(&key),
            Some(VeleroKey {
                job: "daily",
                name: "b1"
            })
        );
        assert!(key.starts_with(&velero_prefix(Some("daily"))));
        for foreign in ["velero/daily/b1.yaml", "velero/b1.json", "x/daily/b1.json"] {
            assert_eq!(VeleroKey::parse(foreign), None, "{foreign}");
        }

        let at = Utc.with_ymd_and_hms(2026, 11, 29, 1, 45, 0).unwrap();
        for folder in [ReportFolder::Drill, ReportFolder::Incident] {
            let dir = report_dir(folder, at, "full-loss");
            let key = report_file(&dir, "md");
            let k = ReportKey::parse(&key).expect("parses");
            assert_eq!(
                (k.folder, k.stamp, k.scenario, k.ext),
                (folder, "2026-11-29T014500Z", "full-loss", "md")
            );
            assert_eq!(k.dir(), dir);
            assert!(key.starts_with(&reports_prefix(folder)));
        }
        for foreign in [
            "drills/2026-11-29T014500Z/full-loss/notes.md",
            "drills/full-loss/report.json",
            "reports/2026-11-29T014500Z/full-loss/report.json",
        ] {
            assert_eq!(ReportKey::parse(foreign), None, "{foreign}");
        }

        for prefix in ["locks", "locks/", "gsdr/locks"] {
            assert_eq!(
                LeaseKey::parse(prefix, &job_lease(prefix, "velero", "daily")),
                Some(LeaseKey::Job {
                    kind: "velero",
                    name: "daily"
                })
            );
        }
        assert_eq!(
            LeaseKey::parse("locks", &source_lease("locks", "pg")),
            Some(LeaseKey::Source { source: "pg" })
        );
        for foreign in [
            "locks/pg.txt",
            "other/pg.json",
            "locks/a/b.json",
            "locksmith/pg.json",
        ] {
            assert_eq!(LeaseKey::parse("locks", foreign), None, "{foreign}");
        }

        let key = job_record("backup", "pg");
        assert_eq!(job_record_name("backup", &key), Some("pg"));
        assert_eq!(job_record_name("velero", &key), None);
        assert_eq!(job_record_name("backup", WATCH_STATE), None);
        assert_eq!(job_record_name("backup", "jobs/backup/pg.txt"), None);
    }
}
