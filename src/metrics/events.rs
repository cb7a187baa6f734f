//! Named events: one struct per thing that happens; `emit()` logs one line and updates the metrics.

use chrono::{DateTime, Utc};

use super::{
    global, src, ClassLabel, GcLabel, OnlyTargetLabel, ResultLabel, ScenarioLabel,
    StoreReasonLabel, TargetLabel,
};
use crate::fault::RetryClass;
use crate::job_id::JobId;

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A scheduled or on-demand run of a source started (attempt 1 = first try).
#[derive(Debug, Clone)]
pub struct RunStarted<'a> {
    /// Source.
    pub source: &'a str,
    /// The cron slot it serves.
    pub slot: DateTime<Utc>,
    /// Attempt number, from 1.
    pub attempt: u32,
}

impl RunStarted<'_> {
    /// Logs the event.
    pub fn emit(&self) {
        tracing::info!(event = "run_started", source = self.source, slot = %self.slot.to_rfc3339(), attempt = self.attempt);
    }
}

/// A backup committed.
#[derive(Debug, Clone)]
pub struct BackupSucceeded<'a> {
    /// Source.
    pub source: &'a str,
    /// Backup id.
    pub id: &'a str,
    /// Raw bytes.
    pub bytes_raw: u64,
    /// Stored bytes.
    pub bytes_stored: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// When it committed.
    pub finished_at: DateTime<Utc>,
}

impl BackupSucceeded<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "backup_succeeded",
            source = self.source,
            id = self.id,
            bytes_raw = self.bytes_raw,
            bytes_stored = self.bytes_stored,
            duration_secs = self.duration_secs
        );
        let m = global();
        let l = src(self.source);
        m.last_success.get_or_create(&l).set(secs(self.finished_at));
        m.last_attempt_success.get_or_create(&l).set(1.0);
        m.duration.get_or_create(&l).set(self.duration_secs);
        m.raw_bytes.get_or_create(&l).set(self.bytes_raw as f64);
        m.stored_bytes
            .get_or_create(&l)
            .set(self.bytes_stored as f64);
    }
}

/// A job panicked; the panic was contained and counts as a failed attempt.
#[derive(Debug, Clone)]
pub struct JobPanicked<'a> {
    /// Source.
    pub source: &'a str,
    /// The panic's message.
    pub message: &'a str,
}

impl JobPanicked<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::error!(
            event = "job_panicked",
            source = self.source,
            message = self.message
        );
        global().job_panics.get_or_create(&src(self.source)).inc();
    }
}

/// A job ran past its deadline and was cancelled.
#[derive(Debug, Clone)]
pub struct JobDeadlineExceeded<'a> {
    /// Source.
    pub source: &'a str,
    /// The deadline.
    pub timeout_secs: u64,
}

impl JobDeadlineExceeded<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "job_deadline_exceeded",
            source = self.source,
            timeout_secs = self.timeout_secs
        );
        global()
            .job_deadlines
            .get_or_create(&src(self.source))
            .inc();
    }
}

/// Registers a running job for `/healthz` until the returned guard is dropped.
pub fn running_job(source: &str, deadline: std::time::Duration) -> super::jobs::RunningJob {
    super::jobs::start(&format!("backup of `{source}`"), deadline)
}

/// A backup attempt failed.
#[derive(Debug, Clone)]
pub struct BackupFailed<'a> {
    /// Source.
    pub source: &'a str,
    /// The error, as the operator reads it.
    pub error: &'a str,
    /// Its retry class.
    pub class: RetryClass,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Whether the scheduler will retry.
    pub will_retry: bool,
}

impl BackupFailed<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        let class = match self.class {
            RetryClass::Temporary => "temporary",
            RetryClass::Permanent => "permanent",
        };
        tracing::warn!(
            event = "backup_failed",
            source = self.source,
            error = self.error,
            class,
            attempt = self.attempt,
            will_retry = self.will_retry
        );
        let m = global();
        m.last_attempt_success
            .get_or_create(&src(self.source))
            .set(0.0);
        m.failures
            .get_or_create(&ClassLabel {
                source: self.source.to_string(),
                class: class.to_string(),
            })
            .inc();
    }
}

/// A run (all its attempts) ended.
#[derive(Debug, Clone)]
pub struct RunFinished<'a> {
    /// Source.
    pub source: &'a str,
    /// `success`, `failure` or `skipped`.
    pub result: &'a str,
    /// Why, for `skipped` and `failure`.
    pub detail: &'a str,
}

impl RunFinished<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "run_finished",
            source = self.source,
            result = self.result,
            detail = self.detail
        );
        global()
            .runs
            .get_or_create(&ResultLabel {
                source: self.source.to_string(),
                result: self.result.to_string(),
            })
            .inc();
    }
}

/// A run was not started here because another replica holds the lease or already did the slot.
#[derive(Debug, Clone)]
pub struct LeaseConflict<'a> {
    /// Source.
    pub source: &'a str,
    /// Who holds it (holder id), or who did the slot.
    pub holder: &'a str,
    /// The slot.
    pub slot: DateTime<Utc>,
}

impl LeaseConflict<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(event = "lease_conflict", source = self.source, holder = self.holder, slot = %self.slot.to_rfc3339());
        global()
            .lease_conflicts
            .get_or_create(&src(self.source))
            .inc();
    }
}

/// The schedule and objectives of a source, published once at start.
#[derive(Debug, Clone)]
pub struct SourceConfigured<'a> {
    /// Source.
    pub source: &'a str,
    /// Scheduled interval, seconds (0 if unscheduled).
    pub interval_secs: f64,
    /// RPO objective, seconds, if any.
    pub rpo_secs: Option<f64>,
}

impl SourceConfigured<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(
            event = "source_configured",
            source = self.source,
            interval_secs = self.interval_secs,
            rpo_secs = self.rpo_secs
        );
        let m = global();
        m.interval
            .get_or_create(&src(self.source))
            .set(self.interval_secs);
        if let Some(r) = self.rpo_secs {
            m.rpo_target.get_or_create(&src(self.source)).set(r);
        }
    }
}

/// One backup was copied to the off-site target.
#[derive(Debug, Clone)]
pub struct Replicated<'a> {
    /// Source.
    pub source: &'a str,
    /// Backup id.
    pub id: &'a str,
    /// Stored bytes copied.
    pub bytes: u64,
    /// Seconds taken.
    pub duration_secs: f64,
}

impl Replicated<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "replicated",
            source = self.source,
            id = self.id,
            bytes = self.bytes,
            duration_secs = self.duration_secs
        );
        global()
            .replicated_bytes
            .get_or_create(&src(self.source))
            .inc_by(self.bytes);
    }
}

/// A sweep copied archived WAL of a source off-site.
#[derive(Debug, Clone)]
pub struct WalReplicated<'a> {
    /// Source.
    pub source: &'a str,
    /// Objects copied.
    pub files: u64,
    /// Stored bytes copied.
    pub bytes: u64,
    /// Objects that could not be copied.
    pub failed: u64,
}

impl WalReplicated<'_> {
    /// Logs the event and updates the metrics (the bytes count as replicated).
    pub fn emit(&self) {
        if self.failed > 0 {
            tracing::warn!(
                event = "wal_replicated",
                source = self.source,
                files = self.files,
                bytes = self.bytes,
                failed = self.failed
            );
        } else {
            tracing::info!(
                event = "wal_replicated",
                source = self.source,
                files = self.files,
                bytes = self.bytes
            );
        }
        global()
            .replicated_bytes
            .get_or_create(&src(self.source))
            .inc_by(self.bytes);
    }
}

/// Copying one backup off-site failed.
#[derive(Debug, Clone)]
pub struct ReplicationFailed<'a> {
    /// Source.
    pub source: &'a str,
    /// Backup id.
    pub id: &'a str,
    /// The error.
    pub error: &'a str,
}

impl ReplicationFailed<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "replication_failed",
            source = self.source,
            id = self.id,
            error = self.error
        );
        global()
            .replication_failures
            .get_or_create(&src(self.source))
            .inc();
    }
}

/// The state of a source's copies: what is safe, and how far off-site lags.
#[derive(Debug, Clone)]
pub struct SafetyState<'a> {
    /// Source.
    pub source: &'a str,
    /// Newest recovery point present on every required copy.
    pub safe_point: Option<DateTime<Utc>>,
    /// Newest primary recovery point − newest off-site one (0 when none is missing).
    pub replication_lag_secs: f64,
}

impl SafetyState<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(
            event = "safety_state",
            source = self.source,
            safe_point = self.safe_point.map(|t| t.to_rfc3339()).unwrap_or_default(),
            replication_lag_secs = self.replication_lag_secs
        );
        let m = global();
        m.replication_lag
            .get_or_create(&src(self.source))
            .set(self.replication_lag_secs);
        if let Some(t) = self.safe_point {
            m.set_safe_point(self.source, secs(t));
        }
    }
}

/// The newest point a restore of a source from one target reaches, as read from the catalog.
#[derive(Debug, Clone)]
pub struct RecoveryPointObserved<'a> {
    /// Source.
    pub source: &'a str,
    /// Target name.
    pub target: &'a str,
    /// The point.
    pub point: DateTime<Utc>,
}

impl RecoveryPointObserved<'_> {
    /// Logs the event and updates the metrics (the exposure is refreshed at every scrape).
    pub fn emit(&self) {
        tracing::debug!(
            event = "recovery_point_observed",
            source = self.source,
            target = self.target,
            point = %self.point.to_rfc3339()
        );
        global().set_recovery_point(self.source, self.target, secs(self.point));
    }
}

/// Retention deleted a backup.
#[derive(Debug, Clone)]
pub struct BackupPruned<'a> {
    /// Source.
    pub source: &'a str,
    /// Target name.
    pub target: &'a str,
    /// Backup id.
    pub id: &'a str,
}

impl BackupPruned<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "backup_pruned",
            source = self.source,
            target = self.target,
            id = self.id
        );
        global()
            .pruned
            .get_or_create(&TargetLabel {
                source: self.source.to_string(),
                target: self.target.to_string(),
            })
            .inc();
    }
}

/// Retention deleted the WAL no kept base backup needs (PostgreSQL engine), on one target.
#[derive(Debug, Clone)]
pub struct WalPruned<'a> {
    /// Source.
    pub source: &'a str,
    /// Target name.
    pub target: &'a str,
    /// WAL files deleted.
    pub files: usize,
    /// Their objects (segment and sidecar).
    pub objects: usize,
    /// Their stored bytes.
    pub bytes: u64,
    /// Oldest file deleted.
    pub first: Option<&'a str>,
    /// Newest file deleted.
    pub last: Option<&'a str>,
    /// WAL kept from this segment on; `None`: no base backup kept, nothing deleted.
    pub keep_from: Option<&'a str>,
}

impl WalPruned<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "wal_pruned",
            source = self.source,
            target = self.target,
            files = self.files,
            objects = self.objects,
            bytes = self.bytes,
            first = self.first.unwrap_or(""),
            last = self.last.unwrap_or(""),
            keep_from = self.keep_from.unwrap_or("")
        );
        let m = global();
        let l = TargetLabel {
            source: self.source.to_string(),
            target: self.target.to_string(),
        };
        m.pruned_wal_files
            .get_or_create(&l)
            .inc_by(self.files as u64);
        m.pruned_wal_bytes.get_or_create(&l).inc_by(self.bytes);
    }
}

/// How far a restore of a postgres source reaches, as the daemon read it from the store: the end of
/// the contiguous WAL chain from its newest restorable base backup (`source::postgres::walchain`).
#[derive(Debug, Clone)]
pub struct WalArchived<'a> {
    /// Source.
    pub source: &'a str,
    /// Newest archived segment.
    pub segment: &'a str,
    /// When it was stored.
    pub archived_at: chrono::DateTime<chrono::Utc>,
}

impl WalArchived<'_> {
    /// Logs the event and updates the metrics (the lag is refreshed at every scrape).
    pub fn emit(&self) {
        tracing::debug!(
            event = "wal_archived",
            source = self.source,
            segment = self.segment,
            archived_at = %self.archived_at.to_rfc3339(),
            lag_secs = (chrono::Utc::now() - self.archived_at).num_milliseconds() as f64 / 1000.0
        );
        global().set_wal_archived(self.source, secs(self.archived_at));
    }
}

/// A `wal-push` failed (PostgreSQL engine).
#[derive(Debug, Clone)]
pub struct WalPushFailed<'a> {
    /// Source.
    pub source: &'a str,
    /// Segment name.
    pub segment: &'a str,
    /// The error.
    pub error: &'a str,
}

impl WalPushFailed<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "wal_push_failed",
            source = self.source,
            segment = self.segment,
            error = self.error
        );
        global()
            .wal_push_failures
            .get_or_create(&src(self.source))
            .inc();
    }
}

/// A drill finished (drill module).
#[derive(Debug, Clone)]
pub struct DrillFinished<'a> {
    /// Scenario.
    pub scenario: &'a str,
    /// Whether it met its targets.
    pub ok: bool,
}

impl DrillFinished<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "drill_finished",
            scenario = self.scenario,
            ok = self.ok
        );
        global()
            .drill_last_success
            .get_or_create(&ScenarioLabel {
                scenario: self.scenario.to_string(),
            })
            .set(if self.ok { 1.0 } else { 0.0 });
    }
}

/// A catalog listing skipped a manifest that does not count (unreadable, newer schema, not matching its key).
#[derive(Debug, Clone)]
pub struct ManifestSkipped<'a> {
    /// Store description.
    pub store: &'a str,
    /// Key of the manifest.
    pub key: &'a str,
    /// Why (`unreadable`, `newer_schema`, `mismatch`).
    pub reason: &'static str,
    /// What exactly.
    pub detail: &'a str,
}

impl ManifestSkipped<'_> {
    /// Logs the event (a warning) and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "manifest_skipped",
            store = self.store,
            key = self.key,
            reason = self.reason,
            detail = self.detail
        );
        global()
            .catalog_skipped
            .get_or_create(&StoreReasonLabel {
                store: self.store.to_string(),
                reason: self.reason.to_string(),
            })
            .inc();
    }
}

/// Garbage collection removed (or, in a dry run, would remove) one leftover.
#[derive(Debug, Clone)]
pub struct GcRemoved<'a> {
    /// Target name.
    pub target: &'a str,
    /// `multipart_upload`, `temp_file` or `orphan_data`.
    pub category: &'a str,
    /// The key it was written for.
    pub key: &'a str,
    /// Bytes it held.
    pub bytes: u64,
    /// A dry run: nothing was removed (no metric then).
    pub dry_run: bool,
}

impl GcRemoved<'_> {
    /// Logs the event and, unless a dry run, updates the metrics.
    pub fn emit(&self) {
        tracing::info!(
            event = "gc_removed",
            target = self.target,
            category = self.category,
            key = self.key,
            bytes = self.bytes,
            dry_run = self.dry_run
        );
        if self.dry_run {
            return;
        }
        let m = global();
        let l = GcLabel {
            target: self.target.to_string(),
            category: self.category.to_string(),
        };
        m.gc_removed_objects.get_or_create(&l).inc();
        m.gc_removed_bytes.get_or_create(&l).inc_by(self.bytes);
    }
}

/// Garbage collection of a target failed, entirely or for one leftover.
#[derive(Debug, Clone)]
pub struct GcFailed<'a> {
    /// Target name.
    pub target: &'a str,
    /// The key concerned, empty when the whole run failed.
    pub key: &'a str,
    /// The error.
    pub error: &'a str,
}

impl GcFailed<'_> {
    /// Logs the event (a warning) and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "gc_failed",
            target = self.target,
            key = self.key,
            error = self.error
        );
        global()
            .gc_failures
            .get_or_create(&OnlyTargetLabel {
                target: self.target.to_string(),
            })
            .inc();
    }
}

/// Garbage collection of one target finished.
#[derive(Debug, Clone)]
pub struct GcFinished<'a> {
    /// Target name.
    pub target: &'a str,
    /// Leftovers removed (or found, in a dry run).
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Leftovers kept: too young, or a live run may still be writing them.
    pub kept: u64,
    /// Removals that failed.
    pub failed: u64,
    /// A dry run.
    pub dry_run: bool,
}

impl GcFinished<'_> {
    /// Logs the event.
    pub fn emit(&self) {
        tracing::info!(
            event = "gc_finished",
            target = self.target,
            removed = self.removed,
            bytes = self.bytes,
            kept = self.kept,
            failed = self.failed,
            dry_run = self.dry_run
        );
    }
}

/// An attempt of a scheduled job failed (a backup's also counts as [`BackupFailed`]).
#[derive(Debug, Clone)]
pub struct JobFailed<'a> {
    /// The job.
    pub job: &'a JobId,
    /// The error, as the operator reads it.
    pub error: &'a str,
    /// Its retry class.
    pub class: RetryClass,
    /// Attempt number, from 1 (0: the lease could not be taken).
    pub attempt: u32,
    /// Whether the scheduler will retry.
    pub will_retry: bool,
}

impl JobFailed<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        use crate::job_id::JobKind;
        if self.job.kind == JobKind::Backup {
            BackupFailed {
                source: &self.job.name,
                error: self.error,
                class: self.class,
                attempt: self.attempt,
                will_retry: self.will_retry,
            }
            .emit();
        } else {
            tracing::warn!(
                event = "job_failed",
                job = %self.job,
                error = self.error,
                attempt = self.attempt,
                will_retry = self.will_retry
            );
        }
        let m = global();
        let l = super::job_label(self.job);
        m.job_failures.get_or_create(&l).inc();
        m.job_last_attempt_success.get_or_create(&l).set(0.0);
    }
}

/// A slot of a scheduled job ended (a backup's also counts as [`RunFinished`]).
#[derive(Debug, Clone)]
pub struct JobFinished<'a> {
    /// The job.
    pub job: &'a JobId,
    /// `success`, `failure` or `skipped`.
    pub result: &'a str,
    /// What it made, or why not.
    pub detail: &'a str,
    /// Wall time of the slot.
    pub duration_secs: f64,
    /// When it succeeded (success only).
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobFinished<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        use crate::job_id::JobKind;
        if self.job.kind == JobKind::Backup {
            RunFinished {
                source: &self.job.name,
                result: self.result,
                detail: self.detail,
            }
            .emit();
        } else {
            tracing::info!(
                event = "job_finished",
                job = %self.job,
                result = self.result,
                detail = self.detail,
                duration_secs = self.duration_secs
            );
        }
        let m = global();
        let l = super::job_label(self.job);
        m.job_runs
            .get_or_create(&super::JobResultLabel {
                kind: l.kind.clone(),
                name: l.name.clone(),
                result: self.result.to_string(),
            })
            .inc();
        if let Some(t) = self.finished_at {
            m.job_last_attempt_success.get_or_create(&l).set(1.0);
            m.job_last_success.get_or_create(&l).set(secs(t));
        }
    }
}

/// The scheduler computed a job's next slot.
#[derive(Debug, Clone)]
pub struct JobNextRun<'a> {
    /// The job.
    pub job: &'a JobId,
    /// Its next slot.
    pub at: DateTime<Utc>,
}

impl JobNextRun<'_> {
    /// Logs the event (debug) and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(event = "job_next_run", job = %self.job, at = %self.at.to_rfc3339());
        global()
            .job_next_run
            .get_or_create(&super::job_label(self.job))
            .set(secs(self.at));
    }
}

/// A job record was written or read back from the catalog: the metrics follow it,
/// so every replica publishes the same last outcome whoever ran the job.
#[derive(Debug, Clone)]
pub struct JobRecorded<'a> {
    /// The job.
    pub job: &'a JobId,
    /// Whether its newest run succeeded.
    pub ok: bool,
    /// When its newest run finished.
    pub last_finished_at: DateTime<Utc>,
    /// How long its newest run took, seconds.
    pub last_duration_secs: f64,
    /// When its newest successful run finished.
    pub last_success_at: Option<DateTime<Utc>>,
}

impl JobRecorded<'_> {
    /// Logs the event (debug) and updates the metrics.
    pub fn emit(&self) {
        use crate::job_id::JobKind;
        tracing::debug!(event = "job_recorded", job = %self.job, ok = self.ok);
        let m = global();
        let l = super::job_label(self.job);
        let ok = if self.ok { 1.0 } else { 0.0 };
        m.job_last_attempt_success.get_or_create(&l).set(ok);
        m.job_last_run
            .get_or_create(&l)
            .set(secs(self.last_finished_at));
        m.job_last_duration
            .get_or_create(&l)
            .set(self.last_duration_secs);
        if let Some(t) = self.last_success_at {
            m.job_last_success.get_or_create(&l).set(secs(t));
        }
        match self.job.kind {
            JobKind::Backup => {
                m.last_attempt_success
                    .get_or_create(&src(&self.job.name))
                    .set(ok);
            }
            JobKind::Velero => {
                let v = super::VeleroJobLabel {
                    name: self.job.name.clone(),
                };
                m.velero_last_attempt_success.get_or_create(&v).set(ok);
                if let Some(t) = self.last_success_at {
                    m.velero_last_success.get_or_create(&v).set(secs(t));
                }
            }
            _ => {}
        }
    }
}

/// The newest drill report of a scenario, as the catalog has it.
#[derive(Debug, Clone)]
pub struct DrillObserved<'a> {
    /// Scenario.
    pub scenario: &'a str,
    /// Whether it passed and met its targets.
    pub ok: bool,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// RTO achieved, seconds (none if it never finished).
    pub rto_secs: Option<f64>,
    /// RTO objective, seconds.
    pub rto_target_secs: Option<f64>,
}

impl DrillObserved<'_> {
    /// Logs the event (debug) and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(
            event = "drill_observed",
            scenario = self.scenario,
            ok = self.ok
        );
        let m = global();
        let l = ScenarioLabel {
            scenario: self.scenario.to_string(),
        };
        m.drill_last_success
            .get_or_create(&l)
            .set(if self.ok { 1.0 } else { 0.0 });
        m.drill_last_run
            .get_or_create(&l)
            .set(secs(self.started_at));
        if let Some(v) = self.rto_secs {
            m.drill_rto.get_or_create(&l).set(v);
        }
        if let Some(v) = self.rto_target_secs {
            m.drill_rto_target.get_or_create(&l).set(v);
        }
    }
}

/// The newest committed backup of a source, as the catalog has it (every replica reads it).
#[derive(Debug, Clone)]
pub struct BackupObserved<'a> {
    /// Source.
    pub source: &'a str,
    /// When it committed.
    pub finished_at: DateTime<Utc>,
}

impl BackupObserved<'_> {
    /// Updates the metrics.
    pub fn emit(&self) {
        global()
            .last_success
            .get_or_create(&src(self.source))
            .set(secs(self.finished_at));
    }
}

/// A continuous capture stored its change log up to `point` on `target` (`source::capture`).
#[derive(Debug, Clone)]
pub struct CaptureStored<'a> {
    /// Source.
    pub source: &'a str,
    /// Target name.
    pub target: &'a str,
    /// The newest change now durably stored there.
    pub point: chrono::DateTime<chrono::Utc>,
    /// The server's newest change minus `point`, as the engine knows it (0 when caught up).
    pub lag_secs: f64,
    /// The object just stored (a segment, a slice, a partial).
    pub object: &'a str,
}

impl CaptureStored<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(
            event = "capture_stored",
            source = self.source,
            target = self.target,
            object = self.object,
            point = %self.point.to_rfc3339(),
            lag_secs = self.lag_secs
        );
        let l = super::TargetLabel {
            source: self.source.to_string(),
            target: self.target.to_string(),
        };
        let m = global();
        m.capture_last_stored
            .get_or_create(&l)
            .set(secs(self.point));
        m.capture_lag.get_or_create(&l).set(self.lag_secs.max(0.0));
    }
}

/// What the server retains for a source's capture (PostgreSQL: WAL held by the slot).
#[derive(Debug, Clone)]
pub struct CaptureRetained<'a> {
    /// Source.
    pub source: &'a str,
    /// Bytes retained.
    pub bytes: u64,
    /// The cap past which the server drops them (and the capture needs a new base).
    pub limit: u64,
}

impl CaptureRetained<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::debug!(
            event = "capture_retained",
            source = self.source,
            bytes = self.bytes,
            limit = self.limit
        );
        let m = global();
        m.capture_retained
            .get_or_create(&src(self.source))
            .set(self.bytes as f64);
        m.capture_retained_limit
            .get_or_create(&src(self.source))
            .set(self.limit as f64);
    }
}

/// A continuous capture lost its server and reconnects (or starts a new base).
#[derive(Debug, Clone)]
pub struct CaptureReconnect<'a> {
    /// Source.
    pub source: &'a str,
    /// `stalled`, `disconnected`, `failover`, `new-base` (the metric's `class`).
    pub reason: &'a str,
    /// What happened, for the log.
    pub detail: &'a str,
}

impl CaptureReconnect<'_> {
    /// Logs the event and updates the metrics.
    pub fn emit(&self) {
        tracing::warn!(
            event = "capture_reconnect",
            source = self.source,
            reason = self.reason,
            detail = self.detail
        );
        global()
            .capture_reconnects
            .get_or_create(&super::ClassLabel {
                source: self.source.to_string(),
                class: self.reason.to_string(),
            })
            .inc();
    }
}
