//! What every replica derives from the catalog, and `gsdr status`.
//!
//! [`refresh`] runs on every replica (the `wal-status` job, not leased) and
//! sets every per-source and per-job series from what is stored: the newest
//! committed backup of each source, its safe point and off-site lag, the end
//! of each postgres source's WAL chain, each job's record, each drill
//! scenario's newest report. So two replicas publish the same values, and a
//! restarted one publishes them again within one `wal_status_every`.
//!
//! [`collect`] gives every job of the policy with its schedule, next slot,
//! last run and outcome, from the same records: any replica, or a laptop
//! with the policy, shows the same.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::job::Env;
use crate::metrics::events;
use crate::replicate;
use crate::scheduler::job::{JobId, JobKind, JobPlan};
use crate::scheduler::record::{self, JobRecord, RunEntry};

/// Refreshes this replica's metrics from the catalog. Errors are logged and
/// the series keep their last values (ages keep growing, which alerts).
pub async fn refresh(env: &Env) {
    for name in env.policy.sources.keys() {
        refresh_log_status(env, name).await;
        if let Err(e) = refresh_source(env, name).await {
            tracing::warn!(event = "status_refresh_failed", source = %name, error = %e);
        }
    }
    if let Err(e) = refresh_jobs(env).await {
        tracing::warn!(event = "status_refresh_failed", what = "job records", error = %e);
    }
    refresh_drills(env).await;
}

/// Reads the end of the contiguous log chain of `source` (PostgreSQL's WAL:
/// how far a restore reaches) and publishes when it was stored. Errors are
/// logged, not returned: the gauges keep their last value (and the lag keeps
/// growing, which alerts).
async fn refresh_log_status(env: &Env, source: &str) {
    match env.log_tail(source).await {
        Some(Ok(tail)) => {
            if let (Some(segment), Some(at)) = (&tail.last, tail.stored_at) {
                events::WalArchived {
                    source,
                    segment,
                    archived_at: at,
                }
                .emit();
            }
        }
        Some(Err(e)) => {
            tracing::warn!(event = "wal_status_failed", source, error = %e);
        }
        None => {}
    }
}

async fn refresh_source(env: &Env, source: &str) -> Result<()> {
    let primary = env.store(&env.primary_target_name(source)?).await?;
    let newest = Catalog::new(primary.clone())
        .list(Some(source))
        .await?
        .iter()
        .map(|m| m.finished_at)
        .max();
    if let Some(t) = newest {
        events::BackupObserved {
            source,
            finished_at: t,
        }
        .emit();
    }
    if let Some(r) = record::read(primary.as_ref(), &JobId::backup(source)).await? {
        r.recorded().emit();
    }
    let offsite = match env.policy.offsite_of(source) {
        Some(o) => Some(env.store(o).await?),
        None => None,
    };
    replicate::safety(&primary, offsite.as_ref(), source, &env.engines())
        .await?
        .emit();
    for p in recoverable_points(env, source).await? {
        if let Some(point) = p.point {
            events::RecoveryPointObserved {
                source,
                target: &p.target,
                point,
            }
            .emit();
        }
    }
    Ok(())
}

/// How far a restore of one source from one target reaches.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPoint {
    /// Target name.
    pub target: String,
    /// `primary` or `offsite`.
    pub role: &'static str,
    /// The newest point a restore from it reaches (`None`: nothing restorable there).
    pub point: Option<DateTime<Utc>>,
}

/// The newest recoverable point of `source` on each of its targets (primary, then off-site).
pub async fn recoverable_points(env: &Env, source: &str) -> Result<Vec<TargetPoint>> {
    let mut targets = vec![(env.primary_target_name(source)?, "primary")];
    if let Some(o) = env.policy.offsite_of(source) {
        targets.push((o.to_string(), "offsite"));
    }
    let mut out = Vec::new();
    for (target, role) in targets {
        let store = env.store(&target).await?;
        let point = replicate::recoverable_point(&store, source, &env.engines()).await?;
        out.push(TargetPoint {
            target,
            role,
            point,
        });
    }
    Ok(out)
}

async fn refresh_jobs(env: &Env) -> Result<()> {
    let home = env.home_store().await?;
    for kind in JobKind::ALL {
        if matches!(kind, JobKind::Backup | JobKind::WalStatus) {
            continue;
        }
        for r in record::list(home.as_ref(), kind).await? {
            r.recorded().emit();
        }
    }
    Ok(())
}

async fn refresh_drills(env: &Env) {
    for (_, rep) in newest_drill_reports(env).await {
        rep.observed().emit();
    }
}

/// The newest stored report of each `[drills]` scenario, with where it is
/// (`<store>/drills/<stamp>/<scenario>/report.json`). What cannot be read is
/// logged and left out.
pub(crate) async fn newest_drill_reports(env: &Env) -> Vec<(String, crate::drill::DrillReport)> {
    let Some(cfg) = &env.policy.drills else {
        return Vec::new();
    };
    let mut scenarios = Vec::new();
    for name in &cfg.scenarios {
        match crate::drill::scenario::select(&cfg.runbooks_dir, name) {
            Ok(v) => scenarios.extend(v),
            Err(e) => {
                tracing::warn!(event = "drill_reports_unreadable", what = "drill scenarios", error = %e);
                return Vec::new();
            }
        }
    }
    let mut out = Vec::new();
    for s in &scenarios {
        let Some(target) = crate::drill::runner::report_target(env, s) else {
            continue;
        };
        let r = async {
            let store = env.store(&target).await?;
            let v = crate::drill::trend::history(store.as_ref(), &s.name, 1).await?;
            Ok::<_, crate::Error>((store.describe(), v))
        }
        .await;
        match r {
            Ok((store, mut v)) => {
                if let Some(rep) = v.pop() {
                    let at = format!(
                        "{store}/{}/report.json",
                        crate::drill::runner::report_prefix(&rep)
                    );
                    out.push((at, rep));
                }
            }
            Err(e) => {
                tracing::warn!(event = "drill_reports_unreadable", scenario = %s.name, error = %e)
            }
        }
    }
    out
}

/// One job as `gsdr status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// `kind/name`.
    pub job: String,
    /// Kind.
    pub kind: JobKind,
    /// Name.
    pub name: String,
    /// Its schedule.
    pub schedule: String,
    /// Deadline of one attempt, seconds.
    pub timeout_secs: u64,
    /// Whether one replica runs each slot (a lease) or every replica does.
    pub leased: bool,
    /// Its next slot.
    pub next_run: Option<DateTime<Utc>>,
    /// Its newest run, from the catalog (none for jobs every replica runs).
    pub last_run: Option<RunEntry>,
    /// End of its newest successful run.
    pub last_success: Option<DateTime<Utc>>,
    /// Who holds its lease right now (a run in progress), if anyone.
    pub running_on: Option<String>,
}

/// Every job of `plans` with its record.
pub async fn collect(
    plans: &[JobPlan],
    locks_prefix: &str,
    zone: crate::cron::Zone,
    now: DateTime<Utc>,
) -> Result<Vec<JobStatus>> {
    let mut out = Vec::new();
    for p in plans {
        let rec: Option<JobRecord> = match (&p.home, p.id.kind.leased()) {
            (Some(h), true) => record::read(h.as_ref(), &p.id).await?,
            _ => None,
        };
        let running_on = match (&p.home, p.id.kind.leased()) {
            (Some(h), true) => {
                crate::scheduler::lease::read(h.as_ref(), &p.id.lease_key(locks_prefix))
                    .await?
                    .filter(|d| !d.released && d.expires_at > now)
                    .map(|d| d.holder)
            }
            _ => None,
        };
        out.push(JobStatus {
            job: p.id.to_string(),
            kind: p.id.kind,
            name: p.id.name.clone(),
            schedule: p.trigger.describe(),
            timeout_secs: p.timeout.as_secs(),
            leased: p.id.kind.leased(),
            next_run: p.trigger.slots(zone, now).1,
            last_success: rec
                .as_ref()
                .and_then(|r| r.last_success.as_ref())
                .map(|e| e.finished_at),
            last_run: rec.map(|r| r.last),
            running_on,
        });
    }
    Ok(out)
}
