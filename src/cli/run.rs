//! `gsdr run --once`: CronJob mode — run what is due (or the named source) and exit.

use std::sync::Arc;

use serde::Serialize;

use gsdr::scheduler::{self, runner, SlotOutcome, SystemClock};

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run once and exit (the only mode; the long-running mode is `gsdr daemon`).
    #[arg(long, required = true)]
    once: bool,
    /// Run this source now, due or not (default: every source whose scheduled time has passed since its last backup).
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
}

#[derive(Serialize)]
struct Row {
    source: String,
    result: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_stored: Option<u64>,
}

#[derive(Serialize)]
struct Report {
    runs: Vec<Row>,
}

/// Runs `gsdr run --once`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let _ = args.once;
    let env = Arc::new(ctx.env()?);
    let settings = scheduler::Settings::from_policy(&env.policy.daemon)?;
    runner::publish_objectives(&env, settings.offset);
    let mut plans = runner::plans(&env).await?;
    if let Some(s) = &args.source {
        if !plans.iter().any(|p| &p.name == s) {
            // An unscheduled source can still be run by name.
            env.source_config(s)?;
            plans.push(scheduler::SourcePlan {
                name: s.clone(),
                schedule: "@yearly".parse()?,
                lease_store: Some(env.store(&env.primary_target_name(s)?).await?),
                timeout: env.policy.timeout_of(s),
            });
        }
    }
    let job_runner = Arc::new(runner::JobRunner::new(env.clone()));
    let shutdown = super::daemon::shutdown_on_signal()?;
    let outcomes = scheduler::run_once(
        &plans,
        args.source.as_deref(),
        job_runner,
        Arc::new(SystemClock),
        settings,
        super::daemon::hooks(&env)?,
        shutdown,
    )
    .await;
    let mut report = Report { runs: Vec::new() };
    let mut failed = 0;
    for (source, o) in outcomes {
        let (result, detail, bytes_stored) = match o {
            SlotOutcome::Success(r) => ("ok", r.id, Some(r.bytes_stored)),
            SlotOutcome::Skipped(w) => ("skipped", w, None),
            SlotOutcome::Failed(e) => ("FAILED", e, None),
            SlotOutcome::Aborted => ("ABORTED", "shutdown".into(), None),
        };
        if matches!(result, "FAILED" | "ABORTED") {
            failed += 1;
        }
        report.runs.push(Row {
            source,
            result,
            detail,
            bytes_stored,
        });
    }
    emit(ctx.json, &report, |r| {
        if r.runs.is_empty() {
            return "nothing due\n".to_string();
        }
        r.runs
            .iter()
            .map(|x| {
                format!(
                    "{:<8}{:<20} {}{}\n",
                    x.result,
                    x.source,
                    x.detail,
                    x.bytes_stored
                        .map(|b| format!(" ({})", bytes(b)))
                        .unwrap_or_default()
                )
            })
            .collect()
    })?;
    if failed > 0 {
        anyhow::bail!("{failed} of {} runs failed", report.runs.len());
    }
    Ok(Outcome::Ok)
}
