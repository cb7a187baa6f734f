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
    let report = Report {
        policy: env.policy.name.clone(),
        jobs,
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
        s
    })?;
    Ok(Outcome::Ok)
}
