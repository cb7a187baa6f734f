//! The production [`Runner`]: `job::backup`, then replication to the off-site target.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{RunReport, Runner, SourcePlan};
use crate::error::{Error, Result};
use crate::job::{Env, NoProgress};
use crate::metrics::events;
use crate::replicate;

/// Runs a policy's jobs.
#[derive(Debug, Clone)]
pub struct JobRunner {
    env: Arc<Env>,
}

impl JobRunner {
    /// A runner over `env`.
    pub fn new(env: Arc<Env>) -> Self {
        JobRunner { env }
    }

    /// Reads the end of the contiguous WAL chain of a postgres `source` (how
    /// far a restore reaches, [`crate::source::postgres::walchain`]) and
    /// publishes when it was stored. Errors are logged, not returned: the
    /// gauges keep their last value (and the lag keeps growing, which alerts).
    pub async fn refresh_wal_status(&self, source: &str) {
        match crate::source::postgres::walverify::wal_status(&self.env, source).await {
            Ok(st) => {
                if let (Some(segment), Some(at)) = (&st.last_segment, st.last_archived_at) {
                    events::WalArchived {
                        source,
                        segment,
                        archived_at: at,
                    }
                    .emit();
                }
            }
            Err(e) => {
                tracing::warn!(event = "wal_status_failed", source, error = %e);
            }
        }
    }

    /// Copies what the off-site target of `source` lacks (all of it: a catch-up
    /// sweep) and publishes the source's safety state. Errors are logged, not returned.
    pub async fn replicate_source(&self, source: &str) {
        let r: Result<()> = async {
            let primary = self
                .env
                .store(&self.env.primary_target_name(source)?)
                .await?;
            match self.env.policy.offsite_of(source) {
                Some(off) => {
                    let offsite = self.env.store(off).await?;
                    let rep = replicate::catch_up(&primary, &offsite, Some(source)).await?;
                    if !rep.failed.is_empty() {
                        tracing::warn!(
                            event = "replication_incomplete",
                            source,
                            failed = rep.failed.len()
                        );
                    }
                }
                None => replicate::safety(&primary, None, source).await?.emit(),
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            let msg = e.to_string();
            events::ReplicationFailed {
                source,
                id: "(sweep)",
                error: &msg,
            }
            .emit();
        }
    }
}

#[async_trait]
impl Runner for JobRunner {
    async fn run(&self, source: &str, cancel: CancellationToken) -> Result<RunReport> {
        inject_panic_for_tests(source);
        // The heartbeat drills measure RPO from: written just before the dump, so
        // the newest canary a restore finds is this backup's point (best effort).
        if let Ok(cfg) = self.env.source_config(source) {
            if crate::drill::canary::supported(cfg.kind) {
                if let Err(e) = crate::drill::canary::write(&self.env, source).await {
                    tracing::warn!(event = "canary_failed", source, error = %e);
                }
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
        // The backup is committed: replication is best effort here (the next sweep retries).
        tokio::select! {
            _ = self.replicate_source(source) => {}
            _ = cancel.cancelled() => tracing::warn!(event = "replication_aborted", source),
        }
        if self.env.policy.daemon.prune_after_run && !cancel.is_cancelled() {
            match crate::retention::prune_policy_source(&self.env, source, None, Utc::now(), false)
                .await
            {
                Ok(report) => {
                    for a in report.actions.iter().filter(|a| a.error.is_some()) {
                        tracing::warn!(event = "prune_failed", source, target = %a.target, id = %a.decision.id, error = a.error.as_deref().unwrap_or(""));
                    }
                    for w in report.wal.iter().filter(|w| w.error.is_some()) {
                        tracing::warn!(event = "wal_prune_failed", source, target = %w.target, error = w.error.as_deref().unwrap_or(""));
                    }
                }
                Err(e) => tracing::warn!(event = "prune_failed", source, error = %e),
            }
        }
        Ok(RunReport {
            id: out.manifest.id.clone(),
            bytes_raw: out.manifest.raw_bytes,
            bytes_stored: out.manifest.stored_bytes,
            duration_secs: out.duration_secs,
        })
    }

    async fn last_success(&self, source: &str) -> Result<Option<DateTime<Utc>>> {
        let cat = self.env.catalog_for(source).await?;
        Ok(cat
            .list(Some(source))
            .await?
            .iter()
            .map(|m| m.finished_at)
            .max())
    }
}

/// The scheduled sources of the policy, each with its lease on its primary target.
pub async fn plans(env: &Env) -> Result<Vec<SourcePlan>> {
    let mut out = Vec::new();
    for (name, cfg) in &env.policy.sources {
        let Some(sched) = &cfg.schedule else { continue };
        let store = env.store(&env.primary_target_name(name)?).await?;
        out.push(SourcePlan {
            name: name.clone(),
            schedule: sched.clone(),
            lease_store: Some(store),
            timeout: env.policy.timeout_of(name),
        });
    }
    Ok(out)
}

/// Publishes every source's interval and RPO objective.
pub fn publish_objectives(env: &Env, offset: chrono::FixedOffset) {
    for (name, cfg) in &env.policy.sources {
        let ival = cfg
            .schedule
            .as_ref()
            .and_then(|s| super::interval(s, offset, Utc::now()));
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
fn inject_panic_for_tests(source: &str) {
    #[cfg(debug_assertions)]
    if let Some(flag) = std::env::var_os("GSDR_TEST_PANIC_ONCE") {
        if std::fs::remove_file(&flag).is_ok() {
            panic!("injected panic in the backup of `{source}` (GSDR_TEST_PANIC_ONCE)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = source;
}
