//! `gsdr status`: every scheduled job with its next slot, last run and
//! outcome, from the catalog's job records (any replica, or a laptop, shows
//! the same); `gsdr status --source PG` is a postgres source's WAL status.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use gsdr::daemon::{runner, status};
use gsdr::scheduler;

use super::output::emit;
use super::{wal, Ctx, Outcome};

#[derive(Serialize)]
struct Report {
    policy: String,
    jobs: Vec<status::JobStatus>,
    sources: Vec<SourcePoints>,
}

/// How far a restore of one source reaches on each of its targets.
#[derive(Serialize)]
struct SourcePoints {
    source: String,
    /// The source's RPO objective, if it has one.
    rpo_target_secs: Option<f64>,
    targets: Vec<TargetRow>,
    /// Why the points could not be read, if they could not.
    error: Option<String>,
}

#[derive(Serialize)]
struct TargetRow {
    #[serde(flatten)]
    point: status::TargetPoint,
    /// Now − the point: what is lost if only this target survives.
    exposure_secs: Option<f64>,
}

fn when(t: Option<chrono::DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Runs `gsdr status`.
pub async fn run(ctx: &Ctx, a: wal::VerifyArgs) -> anyhow::Result<Outcome> {
    if a.source.is_some() || a.target.is_some() {
        return wal::status(ctx, a).await;
    }
    let env = Arc::new(ctx.env()?);
    let settings = scheduler::Settings::from_policy(&env.policy.daemon)?;
    let plans = runner::plans(&env).await?;
    let jobs = status::collect(
        &plans,
        &env.policy.daemon.locks_prefix,
        settings.zone,
        Utc::now(),
    )
    .await?;
    let now = Utc::now();
    let mut sources = Vec::new();
    for name in env.policy.sources.keys() {
        let (targets, error) = match status::recoverable_points(&env, name).await {
            Ok(v) => (
                v.into_iter()
                    .map(|p| TargetRow {
                        exposure_secs: p
                            .point
                            .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
                        point: p,
                    })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        sources.push(SourcePoints {
            source: name.clone(),
            rpo_target_secs: env
                .policy
                .objectives_of(name)
                .map(|o| o.rpo.0.as_secs_f64()),
            targets,
            error,
        });
    }
    let report = Report {
        policy: env.policy.name.clone(),
        jobs,
        sources,
    };
    emit(ctx.json, &report, |r| {
        let mut s = format!(
            "{:<28} {:<22} {:<21} {:<21} {:<8} {:>9}  {}\n",
            "JOB", "SCHEDULE", "NEXT", "LAST RUN", "RESULT", "DURATION", "DETAIL"
        );
        for j in &r.jobs {
            let (last, result, dur, detail) = match &j.last_run {
                Some(l) => (
                    when(Some(l.finished_at)),
                    format!("{:?}", l.result).to_lowercase(),
                    format!("{:.1}s", l.duration_secs()),
                    l.detail.clone(),
                ),
                None if !j.leased => (
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "every replica runs it".into(),
                ),
                None => ("never".into(), "-".into(), "-".into(), String::new()),
            };
            let detail = match &j.running_on {
                Some(h) => format!("running on {h}; {detail}"),
                None => detail,
            };
            s += &format!(
                "{:<28} {:<22} {:<21} {:<21} {:<8} {:>9}  {}\n",
                j.job,
                j.schedule,
                when(j.next_run),
                last,
                result,
                dur,
                detail.chars().take(120).collect::<String>()
            );
        }
        s += &format!(
            "\n{:<20} {:<14} {:<8} {:<21} {:>10} {:>10}\n",
            "SOURCE", "TARGET", "ROLE", "NEWEST RECOVERABLE", "EXPOSURE", "RPO TARGET"
        );
        for src in &r.sources {
            if let Some(e) = &src.error {
                s += &format!("{:<20} cannot read its targets: {e}\n", src.source);
            }
            for t in &src.targets {
                s += &format!(
                    "{:<20} {:<14} {:<8} {:<21} {:>10} {:>10}\n",
                    src.source,
                    t.point.target,
                    t.point.role,
                    when(t.point.point),
                    t.exposure_secs.map_or("-".into(), secs),
                    src.rpo_target_secs.map_or("-".into(), secs),
                );
            }
        }
        s
    })?;
    Ok(Outcome::Ok)
}

/// Seconds for people: `12.3s`, `4m05s`, `6h00m`.
fn secs(v: f64) -> String {
    let v = v.max(0.0);
    if v < 60.0 {
        format!("{v:.1}s")
    } else if v < 3600.0 {
        format!("{}m{:02}s", (v / 60.0) as u64, (v as u64) % 60)
    } else {
        format!("{}h{:02}m", (v / 3600.0) as u64, ((v as u64) % 3600) / 60)
    }
}
