//! The production [`Runner`]: what each [`JobKind`] does, and the policy's job plans.
//!
//! - backup: `job::backup`, then replication of that source and (with
//!   `daemon.prune_after_run`) its retention;
//! - velero: a Velero Backup of the job, waited for and recorded in the catalog;
//! - drill: the `[drills]` scenarios (`drill::run_scheduled`);
//! - prune: retention of every source; replicate: the catch-up sweep of every
//!   source; gc: garbage collection of every target;
//! - wal-status: the per-replica refresh ([`super::status::refresh`]) of
//!   everything the metrics derive from the catalog.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{Env, NoProgress};
use crate::metrics::events;
use crate::replicate;
use crate::scheduler::job::{JobId, JobKind, JobPlan, Trigger};
use crate::scheduler::{record, RunReport, Runner};

/// Runs a policy's jobs.
#[derive(Debug, Clone)]
pub struct JobRunner {
    env: Arc<Env>,
}

/// The name of the policy-wide jobs (prune, replicate, gc, wal-status).
pub const ALL: &str = "all";
/// The name of the scheduled drill job.
pub const SCHEDULED_DRILLS: &str = "scheduled";

impl JobRunner {
    /// A runner over `env`.
    pub fn new(env: Arc<Env>) -> Self {
        JobRunner { env }
    }

    /// Copies what the off-site target of `source` lacks (all of it: a catch-up
    /// sweep) and publishes the source's safety state. A failure is reported
    /// ([`events::ReplicationFailed`]) and returned.
    pub async fn replicate_source(&self, source: &str) -> Result<()> {
        let r: Result<()> = async {
            let primary = self
                .env
                .store(&self.env.primary_target_name(source)?)
                .await?;
            match self.env.policy.offsite_of(source) {
                Some(off) => {
                    let offsite = self.env.store(off).await?;
                    let rep = replicate::catch_up(&primary, &offsite, Some(source), &self.env.engines(), &self.env.trust()?).await?;
                    if !rep.failed.is_empty() {
                        let (id, e) = &rep.failed[0];
                        return Err(Error::Invalid(format!(
                            "{} of the backups of `{source}` could not be copied off-site (first: {id}: {e})",
                            rep.failed.len()
                        )));
                    }
                }
                None => replicate::safety(&primary, None, source, &self.env.engines()).await?.emit(),
            }
            Ok(())
        }
        .await;
        if let Err(e) = &r {
            let msg = e.to_string();
            events::ReplicationFailed {
                source,
                id: "(sweep)",
                error: &msg,
            }
            .emit();
        }
        r
    }

    async fn backup(&self, source: &str, cancel: CancellationToken) -> Result<RunReport> {
        // The heartbeat drills measure RPO from: written just before the dump, so
        // the newest canary a restore finds is this backup's point (best effort).
        let engine = self
            .env
            .source_config(source)
            .ok()
            .and_then(|c| c.engine(source).ok());
        if let Some(engine) = engine.filter(|e| e.has_canary()) {
            if let Err(e) = engine.canary_write().await {
                tracing::warn!(event = "canary_failed", source, error = %e);
            }
        }
        // The backup watches `cancel` itself: its stream is cancelled and its
        // upload aborted, so nothing half-written is left for cleanup.
        let out = crate::job::backup_cancellable(&self.env, source, &NoProgress, Some(&cancel))
            .await
            .map_err(|e| {
                if cancel.is_cancelled() {
                    Error::Invalid(format!(
                        "backup of `{source}` cancelled before its manifest was written (deadline or shutdown): nothing was committed ({e})"
                    ))
                } else {
                    e
                }
            })?;
        // The backup is committed: replication is best effort here (the sweep retries).
        tokio::select! {
            r = self.replicate_source(source) => { let _ = r; }
            _ = cancel.cancelled() => tracing::warn!(event = "replication_aborted", source),
        }
        if self.env.policy.daemon.prune_after_run && !cancel.is_cancelled() {
            if let Err(e) = self.prune_source(source).await {
                tracing::warn!(event = "prune_failed", source, error = %e);
            }
        }
        Ok(RunReport {
            id: out.manifest.id.clone(),
            bytes_raw: out.manifest.raw_bytes,
            bytes_stored: out.manifest.stored_bytes,
            duration_secs: out.duration_secs,
            committed_at: Some(out.manifest.finished_at),
        })
    }

    /// Retention of one source on its targets; the first failed deletion is the error.
    async fn prune_source(&self, source: &str) -> Result<usize> {
        let report =
            crate::job::prune::prune_policy_source(&self.env, source, None, Utc::now(), false)
                .await?;
        let mut first = None;
        for a in report.actions.iter().filter(|a| a.error.is_some()) {
            let e = a.error.as_deref().unwrap_or("");
            tracing::warn!(event = "prune_failed", source, target = %a.target, id = %a.decision.id, error = e);
            first.get_or_insert_with(|| format!("deleting {} in {}: {e}", a.decision.id, a.target));
        }
        for w in &report.wal {
            if let Some(e) = w.error() {
                tracing::warn!(event = "wal_prune_failed", source, target = %w.target(), error = e);
                first.get_or_insert_with(|| format!("pruning WAL in {}: {e}", w.target()));
            }
        }
        match first {
            Some(e) => Err(Error::Invalid(format!("retention of `{source}`: {e}"))),
            None => Ok(report.actions.iter().filter(|a| a.error.is_none()).count()),
        }
    }

    /// Runs `f` for every source; fails with the count and the first error if any failed.
    async fn every_source<F, Fut>(&self, what: &str, f: F) -> Result<usize>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<usize>>,
    {
        let (mut done, mut failed) = (0, Vec::new());
        for s in self.env.policy.sources.keys() {
            match f(s.clone()).await {
                Ok(n) => done += n,
                Err(e) => failed.push(format!("`{s}`: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(done)
        } else {
            Err(Error::Invalid(format!(
                "{what} failed for {} of {} sources: {}",
                failed.len(),
                self.env.policy.sources.len(),
                failed.join("; ")
            )))
        }
    }

    async fn velero(&self, job: &str) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let cfg = self
            .env
            .policy
            .velero
            .clone()
            .ok_or_else(|| Error::Invalid("the policy has no [velero] section".into()))?;
        let client = crate::velero::VeleroClient::connect(cfg.namespace.clone()).await?;
        let rec = crate::velero::backup(&client, &cfg, job).await?;
        let home = self.env.home_store().await?;
        crate::velero::put_record(home.as_ref(), &rec).await?;
        if rec.outcome != crate::velero::Outcome::Completed {
            return Err(Error::Velero(crate::velero::VeleroError::Invalid(format!(
                "Velero backup `{}` of job `{job}` ended {:?} with {} errors and {} warnings (record: {})",
                rec.name,
                rec.outcome,
                rec.errors,
                rec.warnings,
                crate::velero::record_key(job, &rec.name)
            ))));
        }
        Ok(RunReport {
            id: rec.name.clone(),
            bytes_raw: 0,
            bytes_stored: 0,
            duration_secs: started.elapsed().as_secs_f64(),
            committed_at: None,
        })
    }

    async fn drills(&self) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let results = crate::drill::run_scheduled(&self.env, None, &NoProgress)
            .await
            .map_err(drill_error)?;
        let mut failed = Vec::new();
        let mut where_ = Vec::new();
        for (name, r) in &results {
            match r {
                Ok(run) => {
                    let at = run.stored_keys.first().cloned().unwrap_or_default();
                    if !run.report.passed {
                        failed.push(format!(
                            "`{name}` failed ({}); report {at}",
                            run.report.failures.join("; ")
                        ));
                    }
                    where_.push(at);
                }
                Err(e) => failed.push(format!("`{name}` did not run: {e}")),
            }
        }
        if results.is_empty() {
            return Err(Error::Invalid(
                "no drill scenario matched `drills.scenarios` in `drills.runbooks_dir`".into(),
            ));
        }
        if !failed.is_empty() {
            return Err(Error::Invalid(format!(
                "{} of {} drills failed: {}",
                failed.len(),
                results.len(),
                failed.join("; ")
            )));
        }
        Ok(RunReport {
            id: format!("{} drills passed: {}", results.len(), where_.join(", ")),
            bytes_raw: 0,
            bytes_stored: 0,
            duration_secs: started.elapsed().as_secs_f64(),
            committed_at: None,
        })
    }

    async fn replicate_all(&self) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let n = self
            .every_source("the replication sweep", |s| async move {
                self.replicate_source(&s).await.map(|_| 1)
            })
            .await?;
        Ok(summary(format!("{n} sources swept"), started))
    }

    async fn prune_all(&self) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let n = self
            .every_source("retention", |s| async move { self.prune_source(&s).await })
            .await?;
        Ok(summary(format!("{n} backups deleted"), started))
    }

    async fn gc(&self) -> Result<RunReport> {
        let started = std::time::Instant::now();
        let d = &self.env.policy.daemon;
        let results = super::gc::collect(&self.env, None, d.gc_grace.0, false).await?;
        let mut removed = 0;
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(t) => removed += t.removed_count(),
                Err((name, e)) => failed.push(format!("{name}: {e}")),
            }
        }
        if !failed.is_empty() {
            return Err(Error::Invalid(format!(
                "garbage collection failed on {}",
                failed.join("; ")
            )));
        }
        Ok(summary(format!("{removed} leftovers removed"), started))
    }
}

fn summary(id: String, started: std::time::Instant) -> RunReport {
    RunReport {
        id,
        bytes_raw: 0,
        bytes_stored: 0,
        duration_secs: started.elapsed().as_secs_f64(),
        committed_at: None,
    }
}

fn drill_error(e: crate::drill::DrillError) -> Error {
    match e {
        crate::drill::DrillError::Gsdr(e) => e,
        other => Error::Invalid(other.to_string()),
    }
}

#[async_trait]
impl Runner for JobRunner {
    async fn run(&self, job: &JobId, cancel: CancellationToken) -> Result<RunReport> {
        inject_panic_for_tests(job);
        match job.kind {
            JobKind::Backup => self.backup(&job.name, cancel).await,
            JobKind::Velero => self.velero(&job.name).await,
            JobKind::Drill => self.drills().await,
            JobKind::Prune => self.prune_all().await,
            JobKind::Replicate => self.replicate_all().await,
            JobKind::Gc => self.gc().await,
            JobKind::WalStatus => {
                let started = std::time::Instant::now();
                super::status::refresh(&self.env).await;
                Ok(summary(
                    "metrics refreshed from the catalog".into(),
                    started,
                ))
            }
            JobKind::Watch => {
                let started = std::time::Instant::now();
                let n = super::watch::run(&self.env).await?;
                Ok(summary(format!("{n} notices sent"), started))
            }
            JobKind::Capture => {
                let started = std::time::Instant::now();
                let r = crate::job::capture::run(&self.env, &job.name, cancel).await?;
                Ok(RunReport {
                    bytes_stored: r.bytes,
                    ..summary(r.detail, started)
                })
            }
        }
    }

    async fn last_success(&self, job: &JobId) -> Result<Option<DateTime<Utc>>> {
        match job.kind {
            JobKind::Backup => {
                let cat = self.env.catalog_for(&job.name).await?;
                Ok(cat
                    .list(Some(&job.name))
                    .await?
                    .iter()
                    .map(|m| m.finished_at)
                    .max())
            }
            // Every replica refreshes its own metrics at start.
            JobKind::WalStatus => Ok(None),
            _ => {
                let home = self.env.home_store().await?;
                Ok(record::read(home.as_ref(), job)
                    .await?
                    .and_then(|r| r.last_success)
                    .map(|e| e.finished_at))
            }
        }
    }
}

/// The deadline of one attempt of a job of `kind` (not backups: `timeout_of`).
pub fn timeout_of(env: &Env, id: &JobId) -> Duration {
    let t = &env.policy.daemon.timeouts;
    match id.kind {
        JobKind::Backup => env.policy.timeout_of(&id.name),
        JobKind::Velero => t.velero.map(|d| d.0).unwrap_or_else(|| {
            // Velero's own wait, plus time to create, fetch the log and record.
            let wait = env
                .policy
                .velero
                .as_ref()
                .and_then(|v| v.job(&id.name).ok().map(|j| v.timeout_of(j)))
                .unwrap_or(Duration::from_secs(4 * 3600));
            wait + Duration::from_secs(600)
        }),
        JobKind::Drill => t.drill.0,
        JobKind::Prune => t.prune.0,
        JobKind::Replicate => t.replicate.0,
        JobKind::Gc => t.gc.0,
        JobKind::WalStatus => t.wal_status.0,
        JobKind::Watch => t.watch.0,
        // A capture runs until shutdown: its deadline is its stall detector's business.
        JobKind::Capture => Duration::from_secs(100 * 365 * 24 * 3600),
    }
}

/// Every job of the policy: each scheduled source's backup, each scheduled
/// Velero job, the scheduled drills, prune, the replication sweep, garbage
/// collection and the status refresh. Each job lives on its home target.
pub async fn plans(env: &Env) -> Result<Vec<JobPlan>> {
    let mut out = Vec::new();
    let d = &env.policy.daemon;
    for (name, cfg) in &env.policy.sources {
        let Some(sched) = &cfg.schedule else { continue };
        let store = env.store(&env.primary_target_name(name)?).await?;
        out.push(JobPlan::backup(
            name,
            sched.clone(),
            Some(store),
            env.policy.timeout_of(name),
        ));
    }
    let home = env.home_store().await?;
    let mut add = |id: JobId, trigger: Trigger| {
        let timeout = timeout_of(env, &id);
        out.push(JobPlan {
            id,
            trigger,
            home: Some(home.clone()),
            timeout,
        });
    };
    if let Some(v) = &env.policy.velero {
        for (name, job) in &v.jobs {
            if let Some(s) = &job.schedule {
                add(
                    JobId::new(JobKind::Velero, name),
                    Trigger::Cron(Box::new(s.clone())),
                );
            }
        }
    }
    if let Some(s) = env
        .policy
        .drills
        .as_ref()
        .filter(|x| x.in_daemon)
        .and_then(|x| x.schedule.as_ref())
    {
        add(
            JobId::new(JobKind::Drill, SCHEDULED_DRILLS),
            Trigger::Cron(Box::new(s.clone())),
        );
    }
    if let Some(s) = &d.prune_schedule {
        add(
            JobId::new(JobKind::Prune, ALL),
            Trigger::Cron(Box::new(s.clone())),
        );
    }
    if env.policy.sources.values().any(|c| c.schedule.is_some()) {
        add(
            JobId::new(JobKind::Replicate, ALL),
            Trigger::Every(d.replicate_every.0),
        );
    }
    add(JobId::new(JobKind::Gc, ALL), Trigger::Every(d.gc_every.0));
    for name in crate::job::capture::captured_sources(env) {
        add(
            JobId::new(JobKind::Capture, name),
            Trigger::Every(d.capture_restart.0),
        );
    }
    add(
        JobId::new(JobKind::WalStatus, ALL),
        Trigger::Every(d.wal_status_every.0),
    );
    if d.webhook_url.is_some() || d.heartbeat_url.is_some() {
        add(
            JobId::new(JobKind::Watch, ALL),
            Trigger::Every(d.watch_every.0),
        );
    }
    Ok(out)
}

/// Publishes every source's interval and RPO objective.
pub fn publish_objectives(env: &Env, zone: crate::cron::Zone) {
    for (name, cfg) in &env.policy.sources {
        let ival = cfg
            .schedule
            .as_ref()
            .and_then(|s| crate::scheduler::interval(s, zone, Utc::now()));
        events::SourceConfigured {
            source: name,
            interval_secs: ival.map_or(0.0, |d| d.as_secs_f64()),
            rpo_secs: env
                .policy
                .objectives_of(name)
                .map(|o| o.rpo.0.as_secs_f64()),
        }
        .emit();
    }
}

/// Test-only fault injection (debug builds): when `GSDR_TEST_PANIC_ONCE`
/// names a file that exists, the next job removes it and panics, so the fault
/// suite can check that a panic is contained and the next slot runs.
/// `GSDR_TEST_PANIC_JOB` (e.g. `prune/all`) limits it to one job.
fn inject_panic_for_tests(job: &JobId) {
    #[cfg(debug_assertions)]
    if let Some(flag) = std::env::var_os("GSDR_TEST_PANIC_ONCE") {
        let only = std::env::var("GSDR_TEST_PANIC_JOB").ok();
        let wanted = match &only {
            Some(j) => *j == job.to_string(),
            None => job.kind == JobKind::Backup,
        };
        if wanted && std::fs::remove_file(&flag).is_ok() {
            match job.kind {
                JobKind::Backup => panic!(
                    "injected panic in the backup of `{}` (GSDR_TEST_PANIC_ONCE)",
                    job.name
                ),
                _ => panic!("injected panic in job `{job}` (GSDR_TEST_PANIC_ONCE)"),
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = job;
}
