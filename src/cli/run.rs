//! `gsdr run --once`: CronJob mode — run every job that is due (or the named source's backup) and exit.

use std::sync::Arc;

use serde::Serialize;

use gsdr::daemon::runner;
use gsdr::scheduler::{self, SlotOutcome, SystemClock};

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run once and exit (the only mode; the long-running mode is `gsdr daemon`).
    #[arg(long, required = true)]
    once: bool,
    /// Back up this source now, due or not (default: every job whose scheduled time has passed since its last success).
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
}

#[derive(Serialize)]
struct Row {
    /// `kind/name`.
    job: String,
    kind: scheduler::JobKind,
    /// The source, for backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
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
    runner::publish_objectives(&env, settings.zone);
    // One process: the leases need no compare-and-swap against a replica.
    env.check_capabilities(false).await?;
    let mut plans = runner::plans(&env).await?;
    if let Some(s) = &args.source {
        if !plans.iter().any(|p| p.id == scheduler::JobId::backup(s)) {
            // An unscheduled source can still be run by name.
            env.source_config(s)?;
            plans.push(scheduler::JobPlan::backup(
                s,
                "@yearly".parse()?,
                Some(env.store(&env.primary_target_name(s)?).await?),
                env.policy.timeout_of(s),
            ));
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
    for (id, o) in outcomes {
        let source = (id.kind == scheduler::JobKind::Backup).then(|| id.name.clone());
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
            job: id.to_string(),
            kind: id.kind,
            source,
            result,
            detail,
            bytes_stored,
        });
    }
    push_metrics(&env.policy, "gsdr").await;
    emit(ctx.json, &report, |r| {
        if r.runs.is_empty() {
            return "nothing due\n".to_string();
        }
        r.runs
            .iter()
            .map(|x| {
                format!(
                    "{:<8}{:<24} {}{}\n",
                    x.result,
                    x.source.as_deref().unwrap_or(&x.job),
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

/// Pushes the registry to `daemon.pushgateway_url` when it is set; a failed
/// push is a warning, never the job's failure.
pub(crate) async fn push_metrics(policy: &gsdr::policy::Policy, job: &str) {
    let Some(url) = &policy.daemon.pushgateway_url else {
        return;
    };
    let body = gsdr::metrics::global().encode(chrono::Utc::now());
    let pushed = match url.read() {
        Ok(u) => gsdr::metrics::push::push(u.expose(), job, &policy.name, &body)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match pushed {
        Ok(()) => tracing::info!(event = "metrics_pushed", job),
        Err(e) => {
            tracing::warn!(event = "metrics_push_failed", job, error = %e, "daemon.pushgateway_url: metrics not pushed")
        }
    }
}
