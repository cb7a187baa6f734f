//! Where reports go: the report target, `drills/<stamp>/<scenario>/` keys,
//! local copies, pruning to the newest N.

use std::path::{Path, PathBuf};

use super::plan::RunOptions;
use super::report::{DrillReport, RunKind};
use super::scenario::{BackupCopy, Scenario};
use super::{trend, DrillError};
use crate::error::Error;
use crate::job::Env;
use crate::storage::PutCondition;

/// The target reports of `scenario` go to: the primary one, or the off-site one
/// when the scenario restores from it (the primary is lost or hostile).
pub fn report_target(env: &Env, scenario: &Scenario) -> Option<String> {
    let first = scenario.restored_sources().into_iter().next();
    if scenario.primary_hostile || scenario.from == BackupCopy::Offsite {
        return env
            .policy
            .defaults
            .offsite
            .clone()
            .or_else(|| first.and_then(|s| env.policy.offsite_of(&s).map(str::to_string)));
    }
    env.policy
        .defaults
        .target
        .clone()
        .or_else(|| first.and_then(|s| env.policy.target_of(&s).map(str::to_string)))
        .or_else(|| {
            (env.policy.targets.len() == 1)
                .then(|| env.policy.targets.keys().next().cloned())
                .flatten()
        })
}

pub(super) async fn with_trend(
    env: &Env,
    scenario: &Scenario,
    opts: &RunOptions,
    mut report: DrillReport,
) -> DrillReport {
    if opts.kind != RunKind::Drill || opts.trend_reports == 0 {
        return report;
    }
    let past = match report_target(env, scenario) {
        Some(t) => match env.store(&t).await {
            Ok(store) => trend::history(
                store.as_ref(),
                &scenario.name,
                opts.trend_reports.saturating_sub(1),
            )
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(event = "drill_trend_unavailable", error = %e);
                Vec::new()
            }),
            Err(e) => {
                tracing::warn!(event = "drill_trend_unavailable", error = %e);
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    report.trend = Some(trend::compute(&past, &report));
    report
}

/// Key prefix of a report: `drills/<stamp>/<scenario>` (incidents: `incidents/…`).
pub fn report_prefix(report: &DrillReport) -> String {
    format!(
        "{}/{}/{}",
        match report.kind {
            RunKind::Drill => "drills",
            RunKind::Incident => "incidents",
        },
        report.started_at.format("%Y-%m-%dT%H%M%SZ"),
        report.scenario
    )
}

/// Stores `report.{json,md,html}` in the report target; returns the keys.
pub async fn store_report(
    env: &Env,
    scenario: &Scenario,
    report: &DrillReport,
) -> Result<Vec<String>, DrillError> {
    let target = report_target(env, scenario).ok_or_else(|| {
        DrillError::Gsdr(Error::Invalid(
            "no target to store the drill report in: set defaults.target".into(),
        ))
    })?;
    let store = env.store(&target).await?;
    let prefix = report_prefix(report);
    let mut keys = Vec::new();
    for (ext, body) in [
        ("json", report.to_json()),
        ("md", report.to_markdown()),
        ("html", report.to_html()),
    ] {
        let key = format!("{prefix}/report.{ext}");
        store
            .put_small(&key, body.into_bytes().into(), PutCondition::Overwrite)
            .await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Writes `report.{json,md,html}` into `dir` (`--out`); returns the paths.
pub fn write_local(dir: &Path, report: &DrillReport) -> Result<Vec<PathBuf>, DrillError> {
    let sub = dir.join(&report.scenario);
    let io = |p: &Path, e| {
        DrillError::Gsdr(Error::LocalIo {
            what: "writing the drill report",
            path: p.to_path_buf(),
            source: e,
        })
    };
    std::fs::create_dir_all(&sub).map_err(|e| io(&sub, e))?;
    let mut out = Vec::new();
    for (ext, body) in [
        ("json", report.to_json()),
        ("md", report.to_markdown()),
        ("html", report.to_html()),
        ("prom", report.to_prometheus()),
    ] {
        let p = sub.join(format!("report.{ext}"));
        std::fs::write(&p, body).map_err(|e| io(&p, e))?;
        out.push(p);
    }
    Ok(out)
}

/// Deletes the oldest reports of `scenario` beyond the newest `keep`.
pub async fn prune_reports(
    env: &Env,
    scenario: &Scenario,
    keep: usize,
) -> Result<usize, DrillError> {
    let Some(target) = report_target(env, scenario) else {
        return Ok(0);
    };
    let store = env.store(&target).await?;
    let marker = format!("/{}/report.", scenario.name);
    let mut keys: Vec<String> = store
        .list("drills/")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.contains(&marker))
        .collect();
    keys.sort();
    let mut runs: Vec<String> = keys
        .iter()
        .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    runs.dedup();
    let drop_n = runs.len().saturating_sub(keep);
    let doomed: Vec<&String> = runs.iter().take(drop_n).collect();
    for k in keys
        .iter()
        .filter(|k| doomed.iter().any(|d| k.starts_with(d.as_str())))
    {
        store.delete(k).await?;
    }
    Ok(drop_n)
}
