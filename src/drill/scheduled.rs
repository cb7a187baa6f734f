//! The daemon's entry point: the policy's `[drills]` scenarios, run as drills.

use std::path::Path;

use super::plan::RunOptions;
use super::runner::{run, RunResult};
use super::store::prune_reports;
use super::DrillError;
use crate::job::{Env, Progress};

/// The daemon's entry point: runs the scenarios of the policy's `[drills]`
/// section as drills, stores each report and keeps the newest `keep_reports`.
/// `runbooks` overrides `drills.runbooks_dir`. One scenario that cannot run
/// (no backup yet, a server that will not start) does not stop the others:
/// each scenario has its own result. `Err` only when the scenarios cannot be read.
pub async fn run_scheduled(
    env: &Env,
    runbooks: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Vec<(String, Result<RunResult, DrillError>)>, DrillError> {
    let cfg = env.policy.drills.clone().unwrap_or_default();
    let dir = runbooks
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cfg.runbooks_dir.clone());
    let mut scenarios = Vec::new();
    for name in &cfg.scenarios {
        scenarios.extend(super::scenario::select(&dir, name)?);
    }
    let opts = RunOptions {
        scratch_root: cfg.scratch_dir.clone(),
        trend_reports: cfg.trend_reports,
        ..RunOptions::drill()
    };
    let mut out = Vec::new();
    for s in &scenarios {
        let r = run(env, s, &opts, progress).await;
        let rep = r.as_ref().ok().map(|x| &x.report);
        crate::metrics::events::DrillFinished {
            scenario: &s.name,
            ok: rep.is_some_and(|x| x.passed),
        }
        .emit();
        if let Some(rep) = rep {
            rep.observed().emit();
        }
        match &r {
            Ok(_) => {
                if let Err(e) = prune_reports(env, s, cfg.keep_reports as usize).await {
                    tracing::warn!(event = "drill_report_prune_failed", scenario = %s.name, error = %e);
                }
            }
            Err(e) => tracing::error!(event = "drill_not_run", scenario = %s.name, error = %e),
        }
        out.push((s.name.clone(), r));
    }
    Ok(out)
}
