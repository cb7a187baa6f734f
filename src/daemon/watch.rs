//! The watch job (`watch/all`, one replica per slot): observes from the
//! catalog what the on-call engineer must know beyond a job's own failure —
//! each source's RPO exposure against its objective, its WAL archive lag and
//! its off-site lag against `daemon.wal_lag_alert` / `offsite_lag_alert`,
//! every new drill result (with its report's location), and the heartbeat —
//! runs [`notify::watch::evaluate`](crate::notify::watch::evaluate), sends the
//! notices and stores the state at `jobs/watch-state.json` on the home target.
//!
//! Job failures and recoveries are sent by the slot that ran the job
//! ([`crate::notify::Notifier`]); here the job records only decide whether
//! anything is failing (no heartbeat then).

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;

use crate::error::{Error, Result};
use crate::job::Env;
use crate::notify::watch::{
    evaluate, JobObservation, JobOutcome, Observations, Rules, SourceObservation, WatchState,
};
use crate::notify::{DrillResult, Notice, Sender};
use crate::replicate;
use crate::scheduler::job::{JobId, JobKind};
use crate::scheduler::record::{self, RunResult};
use crate::storage::PutCondition;

const STATE_KEY: &str = "jobs/watch-state.json";

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

/// What the catalog says now.
async fn observe(env: &Env) -> Result<Observations> {
    let now = Utc::now();
    let mut obs = Observations::default();
    for name in env.policy.sources.keys() {
        let primary = env.store(&env.primary_target_name(name)?).await?;
        let offsite = match env.policy.offsite_of(name) {
            Some(o) => Some(env.store(o).await?),
            None => None,
        };
        let safety = replicate::safety(&primary, offsite.as_ref(), name, &env.engines()).await?;
        let wal_lag = match env.log_tail(name).await {
            Some(tail) => tail
                .map_err(|e| Error::Invalid(format!("WAL status of `{name}`: {e}")))?
                .stored_at
                .map(|t| secs((now - t).num_milliseconds() as f64 / 1000.0)),
            None => None,
        };
        obs.sources.insert(
            name.clone(),
            SourceObservation {
                rpo_exposure: safety
                    .safe_point
                    .map(|t| secs((now - t).num_milliseconds() as f64 / 1000.0)),
                rpo_target: env.policy.objectives_of(name).map(|o| o.rpo.0),
                wal_lag,
                offsite_lag: offsite.as_ref().map(|_| secs(safety.replication_lag_secs)),
            },
        );
        if let Some(r) = record::read(primary.as_ref(), &JobId::backup(name)).await? {
            obs.jobs.push(job_obs(&r));
        }
    }
    let home = env.home_store().await?;
    for kind in [
        JobKind::Velero,
        JobKind::Prune,
        JobKind::Replicate,
        JobKind::Gc,
    ] {
        for r in record::list(home.as_ref(), kind).await? {
            obs.jobs.push(job_obs(&r));
        }
    }
    for (at, rep) in super::status::newest_drill_reports(env).await {
        obs.jobs.push(JobObservation {
            kind: JobKind::Drill,
            name: rep.scenario.clone(),
            finished_at: rep.finished_at,
            outcome: JobOutcome::Drill(DrillResult::from_report(&rep, at)),
        });
    }
    Ok(obs)
}

fn job_obs(r: &record::JobRecord) -> JobObservation {
    JobObservation {
        kind: r.id.kind,
        name: r.id.name.clone(),
        finished_at: r.last.finished_at,
        outcome: match r.last.result {
            RunResult::Success => JobOutcome::Succeeded {
                id: Some(r.last.detail.clone()),
            },
            _ => JobOutcome::Failed {
                error: r.last.detail.clone(),
            },
        },
    }
}

/// One watch pass: observe, evaluate against the stored state, send, store.
pub async fn run(env: &Env) -> Result<usize> {
    let home = env.home_store().await?;
    let prev: WatchState = match home.get_small(STATE_KEY, 1 << 20).await {
        Ok((b, _)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(event = "watch_state_unreadable", error = %e);
            WatchState::default()
        }),
        Err(e) if e.is_not_found() => WatchState::default(),
        Err(e) => return Err(e.into()),
    };
    let obs = observe(env).await?;
    let rules = Rules::from_policy(&env.policy.daemon);
    let (next, notices) = evaluate(&prev, &obs, &rules, Utc::now());
    // Job failures and recoveries went out with their slot; the rest is ours.
    let ours: Vec<&Notice> = notices
        .iter()
        .filter(|n| {
            !matches!(
                n,
                Notice::BackupFailed { .. }
                    | Notice::BackupRecovered { .. }
                    | Notice::JobFailed { .. }
                    | Notice::JobRecovered { .. }
                    | Notice::VeleroFailed { .. }
                    | Notice::VeleroRecovered { .. }
            )
        })
        .collect();
    let sender = Sender::from_policy(&env.policy).map_err(|e| Error::Invalid(e.to_string()))?;
    for n in &ours {
        // A failed send keeps the previous state: the next pass sends it again.
        sender
            .send(n)
            .await
            .map_err(|e| Error::Invalid(format!("notification not sent: {e}")))?;
    }
    let body = serde_json::to_vec_pretty(&next).expect("the watch state serialises");
    home.put_small(STATE_KEY, Bytes::from(body), PutCondition::Overwrite)
        .await?;
    Ok(ours.len())
}
