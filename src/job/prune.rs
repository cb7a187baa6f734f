//! `gsdr prune`: retention of one source on its primary and off-site
//! targets, then the engine's own clean-up (PostgreSQL: its WAL).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::Env;
use crate::error::Result;
use crate::retention::{effective, prune_source, PruneAction};

/// What `gsdr prune` did (or would do) for one source, on every target.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// One per backup.
    pub actions: Vec<PruneAction>,
    /// Sources with a log archive (PostgreSQL's WAL): the log deleted per target.
    pub wal: Vec<Box<dyn crate::source::LogPruned>>,
}

impl PruneReport {
    /// Failed deletions, backups and WAL.
    pub fn errors(&self) -> usize {
        self.actions.iter().filter(|a| a.error.is_some()).count()
            + self.wal.iter().filter(|w| w.error().is_some()).count()
    }
}

/// Prunes `source` on its primary and off-site targets under the policy's
/// retention; for a postgres source, then its WAL on each target.
pub async fn prune_policy_source(
    env: &Env,
    source: &str,
    only_target: Option<&str>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport> {
    let engine = env.source_config(source)?.engine(source)?;
    let mut targets = BTreeSet::new();
    targets.insert(env.primary_target_name(source)?);
    if let Some(o) = env.policy.offsite_of(source) {
        targets.insert(o.to_string());
    }
    let rules = effective(env.policy.retention_of(source).as_ref());
    let mut out = PruneReport::default();
    for t in targets
        .iter()
        .filter(|t| only_target.is_none_or(|w| w == t.as_str()))
    {
        let cat = env.catalog(t).await?;
        let done = prune_source(&cat, t, source, &rules, now, dry_run).await?;
        if let Some(log) = engine.log_archive() {
            let failed = done.actions.iter().filter(|a| a.error.is_some()).count();
            out.wal.push(
                log.prune(cat.store().as_ref(), t, &done.remaining, failed, dry_run)
                    .await,
            );
        }
        out.actions.extend(done.actions);
    }
    Ok(out)
}
