//! Metrics and health: a Prometheus registry fed by named events.
//!
//! Every observable thing gsdr does is one struct in [`events`] whose
//! `emit()` writes ONE structured `tracing` line and updates the metrics, so
//! logs and metrics never disagree. The registry is process-global
//! ([`global`]); [`server::serve`] exposes it on `/metrics` (Prometheus text
//! format) next to `/healthz` and `/readyz`.
//!
//! Metric names (all labelled by `source` unless noted):
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `gsdr_backup_last_success_timestamp_seconds` | gauge | finish time of the last committed backup |
//! | `gsdr_backup_last_attempt_success` | gauge | 1 if the last attempt committed, 0 if it failed |
//! | `gsdr_backup_duration_seconds` | gauge | wall time of the last committed backup |
//! | `gsdr_backup_raw_bytes` / `gsdr_backup_stored_bytes` | gauge | sizes of the last committed backup |
//! | `gsdr_backup_failures_total` | counter | failed attempts (label `class`: temporary/permanent) |
//! | `gsdr_backup_runs_total` | counter | finished runs (label `result`: success/failure/skipped) |
//! | `gsdr_job_panics_total` | counter | jobs that panicked (each also counts as a failed attempt) |
//! | `gsdr_job_deadline_exceeded_total` | counter | jobs cancelled at their deadline (`timeout`) |
//! | `gsdr_backup_interval_seconds` | gauge | scheduled interval (for staleness alerts) |
//! | `gsdr_rpo_target_seconds` | gauge | the source's RPO objective |
//! | `gsdr_rpo_safe_point_timestamp_seconds` | gauge | newest recovery point present on primary AND off-site (primary only when no off-site) |
//! | `gsdr_rpo_exposure_seconds` | gauge | now − that safe point, refreshed at every scrape |
//! | `gsdr_replication_lag_seconds` | gauge | newest primary recovery point − newest off-site one |
//! | `gsdr_replication_failures_total` | counter | failed copies to the off-site target |
//! | `gsdr_replicated_bytes_total` | counter | stored bytes copied off-site |
//! | `gsdr_wal_last_archived_timestamp_seconds` | gauge | (PostgreSQL engine) when the last segment a restore reaches was stored: the end of the contiguous WAL chain from the newest restorable base backup, never a newer segment a hole cuts off; absent without a restorable base backup (read from the primary target every `daemon.wal_status_every`) |
//! | `gsdr_wal_archive_lag_seconds` | gauge | (PostgreSQL engine) now − that time, refreshed at every scrape: on a quiet cluster it grows up to `archive_timeout` |
//! | `gsdr_wal_push_failures_total` | counter | (PostgreSQL engine) failed `wal-push` calls in this process (`wal-push` runs in PostgreSQL's archiver, so the daemon sees archive failures through the lag) |
//! | `gsdr_drill_last_success` | gauge | (label `scenario`) 1 if the last drill met its targets |
//! | `gsdr_lease_conflicts_total` | counter | runs skipped because another replica held or had done the run |
//! | `gsdr_pruned_backups_total` | counter | backups deleted by retention (label `target`) |
//! | `gsdr_pruned_wal_files_total` / `gsdr_pruned_wal_bytes_total` | counter | (PostgreSQL engine) WAL files and their stored bytes deleted by retention (label `target`) |
//! | `gsdr_catalog_manifests_skipped_total` | counter | (labels `store`, `reason`: unreadable/newer_schema/mismatch; no `source`) manifests a listing skipped, once per listing that met them |
//! | `gsdr_gc_removed_objects_total` / `gsdr_gc_removed_bytes_total` | counter | (labels `target`, `category`: multipart_upload/temp_file/orphan_data; no `source`) leftovers garbage collection removed |
//! | `gsdr_job_last_attempt_success` | gauge | (labels `kind`, `name`; no `source`) 1 if the job's last run succeeded, 0 if it failed; from the job's record in the catalog, so every replica publishes the same value |
//! | `gsdr_job_last_success_timestamp_seconds` | gauge | (labels `kind`, `name`) end of the job's last successful run (job record) |
//! | `gsdr_job_last_run_timestamp_seconds` | gauge | (labels `kind`, `name`) end of the job's last run, whatever its outcome (job record) |
//! | `gsdr_job_last_duration_seconds` | gauge | (labels `kind`, `name`) wall time of the job's last run (job record) |
//! | `gsdr_job_next_run_timestamp_seconds` | gauge | (labels `kind`, `name`) the job's next slot as this replica's scheduler sees it |
//! | `gsdr_job_runs_total` | counter | (labels `kind`, `name`, `result`: success/failure/skipped) slots this process handled |
//! | `gsdr_job_failures_total` | counter | (labels `kind`, `name`) failed attempts in this process |
//! | `gsdr_drill_last_run_timestamp_seconds` | gauge | (label `scenario`) when the scenario's newest drill report in the catalog started |
//! | `gsdr_drill_rto_seconds` / `gsdr_drill_rto_target_seconds` | gauge | (label `scenario`) RTO achieved by that drill and its objective |
//! | `gsdr_velero_last_attempt_success` | gauge | (label `name`: the Velero job) 1 if the last Velero backup of the job completed, 0 otherwise (job record) |
//! | `gsdr_velero_last_success_timestamp_seconds` | gauge | (label `name`) end of its last completed Velero backup (job record) |
//! | `gsdr_gc_failures_total` | counter | (label `target`; no `source`) garbage collection runs that could not finish or removals that failed |
//! | `gsdr_recovery_point_timestamp_seconds` | gauge | (label `target`) the newest point a restore from that target reaches: its newest backup, extended by the source's log there (WAL, a continuous capture's segments) |
//! | `gsdr_target_rpo_exposure_seconds` | gauge | (label `target`) now − that point, refreshed at every scrape: the data lost if only that target survived |
//! | `gsdr_capture_last_stored_timestamp_seconds` | gauge | (label `target`) continuous capture: the newest point of the source's change log durably stored on that target |
//! | `gsdr_capture_lag_seconds` | gauge | (label `target`) continuous capture: the server's newest change minus that stored point, when it was stored (0 when caught up) |
//! | `gsdr_capture_retained_bytes` | gauge | continuous capture: what the server keeps for gsdr (PostgreSQL: WAL retained by the replication slot) |
//! | `gsdr_capture_retained_limit_bytes` | gauge | continuous capture: the cap on that (PostgreSQL: `slot_max_retained`, the server invalidates the slot past it) |
//! | `gsdr_capture_reconnects_total` | counter | (label `class`: stalled, disconnected, failover, new-base) continuous capture runs that lost their server and reconnected, or started a new base |

pub mod events;
pub mod jobs;
pub mod push;
pub mod server;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A gauge holding an `f64`.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Label set `{source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Source name.
    pub source: String,
}

/// Label set `{store, reason}` (catalog).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreReasonLabel {
    /// Store description (`s3://bucket/prefix`, `file:///path`).
    pub store: String,
    /// Why.
    pub reason: String,
}

/// Label set `{target, category}` (garbage collection).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcLabel {
    /// Target name.
    pub target: String,
    /// What was removed.
    pub category: String,
}

/// Label set `{target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OnlyTargetLabel {
    /// Target name.
    pub target: String,
}

/// Label set `{kind, name}` (scheduled jobs; not `job`, which is Prometheus's own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    /// Job kind (`backup`, `velero`, `drill`, …).
    pub kind: String,
    /// Job name (source, Velero job, `all`).
    pub name: String,
}

/// Label set `{kind, name, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobResultLabel {
    /// Job kind.
    pub kind: String,
    /// Job name.
    pub name: String,
    /// `success`, `failure` or `skipped`.
    pub result: String,
}

/// Label set `{name}` (Velero jobs; not `job`, which is Prometheus's own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VeleroJobLabel {
    /// `[velero.jobs.NAME]`.
    pub name: String,
}

/// Label set `{source, class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// Source name.
    pub source: String,
    /// `temporary` or `permanent`.
    pub class: String,
}

/// Label set `{source, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Source name.
    pub source: String,
    /// `success`, `failure` or `skipped`.
    pub result: String,
}

/// Label set `{source, target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// Source name.
    pub source: String,
    /// Target name.
    pub target: String,
}

/// Label set `{scenario}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScenarioLabel {
    /// Drill scenario.
    pub scenario: String,
}

/// Every metric gsdr exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// See the module table.
    pub last_success: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub last_attempt_success: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub duration: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub raw_bytes: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub stored_bytes: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub failures: Family<ClassLabel, Counter>,
    /// See the module table.
    pub runs: Family<ResultLabel, Counter>,
    /// See the module table.
    pub interval: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub rpo_target: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub safe_point: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub rpo_exposure: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub replication_lag: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub replication_failures: Family<SourceLabel, Counter>,
    /// See the module table.
    pub replicated_bytes: Family<SourceLabel, Counter>,
    /// See the module table.
    pub wal_archive_lag: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub wal_last_archived: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub wal_push_failures: Family<SourceLabel, Counter>,
    /// See the module table.
    pub drill_last_success: Family<ScenarioLabel, FGauge>,
    /// See the module table.
    pub lease_conflicts: Family<SourceLabel, Counter>,
    /// See the module table.
    pub pruned: Family<TargetLabel, Counter>,
    /// See the module table.
    pub pruned_wal_files: Family<TargetLabel, Counter>,
    /// See the module table.
    pub pruned_wal_bytes: Family<TargetLabel, Counter>,
    /// See the module table.
    pub job_panics: Family<SourceLabel, Counter>,
    /// See the module table.
    pub job_deadlines: Family<SourceLabel, Counter>,
    /// See the module table.
    pub job_last_attempt_success: Family<JobLabel, FGauge>,
    /// See the module table.
    pub job_last_success: Family<JobLabel, FGauge>,
    /// See the module table.
    pub job_last_run: Family<JobLabel, FGauge>,
    /// See the module table.
    pub job_last_duration: Family<JobLabel, FGauge>,
    /// See the module table.
    pub job_next_run: Family<JobLabel, FGauge>,
    /// See the module table.
    pub job_runs: Family<JobResultLabel, Counter>,
    /// See the module table.
    pub job_failures: Family<JobLabel, Counter>,
    /// See the module table.
    pub drill_last_run: Family<ScenarioLabel, FGauge>,
    /// See the module table.
    pub drill_rto: Family<ScenarioLabel, FGauge>,
    /// See the module table.
    pub drill_rto_target: Family<ScenarioLabel, FGauge>,
    /// See the module table.
    pub velero_last_attempt_success: Family<VeleroJobLabel, FGauge>,
    /// See the module table.
    pub velero_last_success: Family<VeleroJobLabel, FGauge>,
    /// See the module table.
    pub catalog_skipped: Family<StoreReasonLabel, Counter>,
    /// See the module table.
    pub gc_removed_objects: Family<GcLabel, Counter>,
    /// See the module table.
    pub gc_removed_bytes: Family<GcLabel, Counter>,
    /// See the module table.
    pub gc_failures: Family<OnlyTargetLabel, Counter>,
    /// See the module table.
    pub recovery_point: Family<TargetLabel, FGauge>,
    /// See the module table.
    pub target_exposure: Family<TargetLabel, FGauge>,
    /// See the module table.
    pub capture_last_stored: Family<TargetLabel, FGauge>,
    /// See the module table.
    pub capture_lag: Family<TargetLabel, FGauge>,
    /// See the module table.
    pub capture_retained: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub capture_retained_limit: Family<SourceLabel, FGauge>,
    /// See the module table.
    pub capture_reconnects: Family<ClassLabel, Counter>,
    /// Safe points by source (seconds since the epoch), for the exposure refresh at scrape time.
    safe_points: Mutex<BTreeMap<String, f64>>,
    /// Newest archived WAL by source (seconds since the epoch), for the lag refresh at scrape time.
    wal_archived: Mutex<BTreeMap<String, f64>>,
    /// Newest recovery point by (source, target), for the per-target exposure refresh at scrape time.
    recovery_points: Mutex<BTreeMap<(String, String), f64>>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        macro_rules! reg {
            ($name:literal, $help:literal) => {{
                let f = Family::default();
                registry.register($name, $help, f.clone());
                f
            }};
        }
        Metrics {
            last_success: reg!(
                "gsdr_backup_last_success_timestamp_seconds",
                "Finish time of the last committed backup"
            ),
            last_attempt_success: reg!(
                "gsdr_backup_last_attempt_success",
                "1 if the last attempt committed a backup, 0 if it failed"
            ),
            duration: reg!(
                "gsdr_backup_duration_seconds",
                "Wall time of the last committed backup"
            ),
            raw_bytes: reg!(
                "gsdr_backup_raw_bytes",
                "Raw size of the last committed backup"
            ),
            stored_bytes: reg!(
                "gsdr_backup_stored_bytes",
                "Stored (compressed, encrypted) size of the last committed backup"
            ),
            failures: reg!(
                "gsdr_backup_failures",
                "Failed backup attempts by retry class"
            ),
            runs: reg!("gsdr_backup_runs", "Finished scheduled runs by result"),
            job_panics: reg!(
                "gsdr_job_panics",
                "Jobs that panicked (contained: reported as failures)"
            ),
            job_deadlines: reg!(
                "gsdr_job_deadline_exceeded",
                "Jobs cancelled because they ran past their deadline"
            ),
            interval: reg!(
                "gsdr_backup_interval_seconds",
                "Scheduled interval of the source"
            ),
            rpo_target: reg!("gsdr_rpo_target_seconds", "RPO objective of the source"),
            safe_point: reg!(
                "gsdr_rpo_safe_point_timestamp_seconds",
                "Newest recovery point stored on the primary and off-site targets"
            ),
            rpo_exposure: reg!(
                "gsdr_rpo_exposure_seconds",
                "Now minus the newest safe recovery point"
            ),
            replication_lag: reg!(
                "gsdr_replication_lag_seconds",
                "Newest primary recovery point minus the newest off-site one"
            ),
            replication_failures: reg!(
                "gsdr_replication_failures",
                "Failed copies to the off-site target"
            ),
            replicated_bytes: reg!(
                "gsdr_replicated_bytes",
                "Stored bytes copied to the off-site target"
            ),
            wal_archive_lag: reg!(
                "gsdr_wal_archive_lag_seconds",
                "Age of the last WAL segment a restore reaches (the end of the contiguous chain)"
            ),
            wal_last_archived: reg!(
                "gsdr_wal_last_archived_timestamp_seconds",
                "When the last WAL segment a restore reaches (the end of the contiguous chain) was stored"
            ),
            wal_push_failures: reg!("gsdr_wal_push_failures", "Failed wal-push calls"),
            drill_last_success: reg!(
                "gsdr_drill_last_success",
                "1 if the last drill of the scenario met its targets"
            ),
            lease_conflicts: reg!(
                "gsdr_lease_conflicts",
                "Runs skipped because another replica held or had done them"
            ),
            pruned: reg!("gsdr_pruned_backups", "Backups deleted by retention"),
            pruned_wal_files: reg!(
                "gsdr_pruned_wal_files",
                "WAL files deleted by retention (PostgreSQL engine)"
            ),
            pruned_wal_bytes: reg!(
                "gsdr_pruned_wal_bytes",
                "Stored bytes of the WAL files deleted by retention (PostgreSQL engine)"
            ),
            job_last_attempt_success: reg!(
                "gsdr_job_last_attempt_success",
                "1 if the job's last run succeeded, 0 if it failed (from the catalog's job record)"
            ),
            job_last_success: reg!(
                "gsdr_job_last_success_timestamp_seconds",
                "End of the job's last successful run (from the catalog's job record)"
            ),
            job_last_run: reg!(
                "gsdr_job_last_run_timestamp_seconds",
                "End of the job's last run, whatever its outcome (from the catalog's job record)"
            ),
            job_last_duration: reg!(
                "gsdr_job_last_duration_seconds",
                "Wall time of the job's last run (from the catalog's job record)"
            ),
            job_next_run: reg!(
                "gsdr_job_next_run_timestamp_seconds",
                "The job's next scheduled slot"
            ),
            job_runs: reg!("gsdr_job_runs", "Slots of scheduled jobs handled by this process, by result"),
            job_failures: reg!("gsdr_job_failures", "Failed attempts of scheduled jobs in this process"),
            drill_last_run: reg!(
                "gsdr_drill_last_run_timestamp_seconds",
                "Start of the scenario's newest drill report in the catalog"
            ),
            drill_rto: reg!(
                "gsdr_drill_rto_seconds",
                "RTO achieved by the scenario's newest drill"
            ),
            drill_rto_target: reg!(
                "gsdr_drill_rto_target_seconds",
                "RTO objective of the scenario's newest drill"
            ),
            velero_last_attempt_success: reg!(
                "gsdr_velero_last_attempt_success",
                "1 if the last Velero backup of the job completed, 0 otherwise"
            ),
            velero_last_success: reg!(
                "gsdr_velero_last_success_timestamp_seconds",
                "End of the job's last completed Velero backup"
            ),
            catalog_skipped: reg!(
                "gsdr_catalog_manifests_skipped",
                "Manifests a catalog listing skipped (unreadable, newer schema, or not matching their key)"
            ),
            gc_removed_objects: reg!(
                "gsdr_gc_removed_objects",
                "Leftovers removed by garbage collection"
            ),
            gc_removed_bytes: reg!(
                "gsdr_gc_removed_bytes",
                "Bytes held by the leftovers removed by garbage collection"
            ),
            gc_failures: reg!(
                "gsdr_gc_failures",
                "Garbage collection runs or removals that failed"
            ),
            recovery_point: reg!(
                "gsdr_recovery_point_timestamp_seconds",
                "Newest point a restore from the target reaches (backups extended by the source's log there)"
            ),
            target_exposure: reg!(
                "gsdr_target_rpo_exposure_seconds",
                "Now minus the newest point a restore from the target reaches"
            ),
            capture_last_stored: reg!(
                "gsdr_capture_last_stored_timestamp_seconds",
                "Newest point of the source's change log durably stored on the target (continuous capture)"
            ),
            capture_lag: reg!(
                "gsdr_capture_lag_seconds",
                "The server's newest change minus the newest point stored on the target (continuous capture)"
            ),
            capture_retained: reg!(
                "gsdr_capture_retained_bytes",
                "What the server keeps for gsdr's capture (PostgreSQL: WAL retained by the slot)"
            ),
            capture_retained_limit: reg!(
                "gsdr_capture_retained_limit_bytes",
                "The cap on what the server keeps for gsdr's capture (PostgreSQL: slot_max_retained)"
            ),
            capture_reconnects: reg!(
                "gsdr_capture_reconnects",
                "Continuous capture runs that lost their server and reconnected or started a new base"
            ),
            safe_points: Mutex::new(BTreeMap::new()),
            wal_archived: Mutex::new(BTreeMap::new()),
            recovery_points: Mutex::new(BTreeMap::new()),
            registry,
        }
    }

    /// Records a source's safe point (seconds since the epoch).
    pub(crate) fn set_safe_point(&self, source: &str, ts: f64) {
        self.safe_point.get_or_create(&src(source)).set(ts);
        self.safe_points
            .lock()
            .expect("metrics lock")
            .insert(source.to_string(), ts);
    }

    /// Records when the end of a source's contiguous WAL chain was stored (seconds since the epoch).
    pub(crate) fn set_wal_archived(&self, source: &str, ts: f64) {
        self.wal_last_archived.get_or_create(&src(source)).set(ts);
        self.wal_archived
            .lock()
            .expect("metrics lock")
            .insert(source.to_string(), ts);
    }

    /// Records the newest point a restore of `source` from `target` reaches (seconds since the epoch).
    pub(crate) fn set_recovery_point(&self, source: &str, target: &str, ts: f64) {
        let l = TargetLabel {
            source: source.to_string(),
            target: target.to_string(),
        };
        self.recovery_point.get_or_create(&l).set(ts);
        self.recovery_points
            .lock()
            .expect("metrics lock")
            .insert((source.to_string(), target.to_string()), ts);
    }

    /// The registry in Prometheus text format, RPO exposure and WAL archive lag refreshed to `now`.
    pub fn encode(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let now = now.timestamp_millis() as f64 / 1000.0;
        for (s, ts) in self.safe_points.lock().expect("metrics lock").iter() {
            self.rpo_exposure
                .get_or_create(&src(s))
                .set((now - ts).max(0.0));
        }
        for ((s, t), ts) in self.recovery_points.lock().expect("metrics lock").iter() {
            let l = TargetLabel {
                source: s.clone(),
                target: t.clone(),
            };
            self.target_exposure
                .get_or_create(&l)
                .set((now - ts).max(0.0));
        }
        for (s, ts) in self.wal_archived.lock().expect("metrics lock").iter() {
            self.wal_archive_lag
                .get_or_create(&src(s))
                .set((now - ts).max(0.0));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `{kind, job}` labels.
pub(crate) fn job_label(id: &crate::job_id::JobId) -> JobLabel {
    JobLabel {
        kind: id.kind.as_str().to_string(),
        name: id.name.clone(),
    }
}

/// `{source}` labels.
pub(crate) fn src(source: &str) -> SourceLabel {
    SourceLabel {
        source: source.to_string(),
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
