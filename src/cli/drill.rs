//! `gsdr drill`: rehearse recovery scenarios into scratch targets, measure RTO
//! and RPO against the policy's objectives, and write the reports.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::output::emit;
use super::{progress, Ctx, Outcome};
use gsdr::drill::report::secs;
use gsdr::drill::runner::{self, RunOptions};
use gsdr::drill::{scenario, DrillReport};

/// Arguments of `gsdr drill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario to rehearse (a file stem in the runbooks directory), or `all`.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present_any = ["render_runbooks", "scheduled"]
    )]
    scenario: Option<String>,
    /// Run the policy's `[drills]` scenarios as the schedule does (stores every
    /// report, keeps the newest `keep_reports`): what the drills CronJob runs.
    #[arg(long, conflicts_with_all = ["scenario", "no_store", "target_time", "scratch_dir", "render_runbooks"])]
    scheduled: bool,
    /// Directory of the scenario files (default: the policy's `drills.runbooks_dir`, else `runbooks`).
    #[arg(long, value_name = "DIR", env = "GSDR_RUNBOOKS")]
    runbooks: Option<PathBuf>,
    /// Also write report.{json,md,html} under DIR/<scenario>/.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Parent directory of scratch targets (default: the policy's `drills.scratch_dir`, else the temp dir).
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Point-in-time target for scenarios with `pitr_before` (RFC 3339; default: now).
    #[arg(long, value_name = "TIME")]
    target_time: Option<DateTime<Utc>>,
    /// Do not store the report in the target.
    #[arg(long)]
    no_store: bool,
    /// (Re)generate the Markdown runbook of every scenario file next to it, then exit.
    #[arg(long)]
    render_runbooks: bool,
}

#[derive(Serialize)]
struct Summary {
    passed: bool,
    reports: Vec<Entry>,
    /// Scenarios that could not run at all (no backup, a scratch server that would not start…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_run: Vec<NotRun>,
}

#[derive(Serialize)]
struct NotRun {
    scenario: String,
    error: String,
}

#[derive(Serialize)]
struct Entry {
    report: DrillReport,
    stored_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    local_files: Vec<PathBuf>,
}

/// The runbooks directory: flag, then policy, then `runbooks`.
pub fn runbooks_dir(flag: Option<&Path>, ctx: &Ctx) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    ctx.load_policy()
        .ok()
        .and_then(|p| p.drills.map(|d| d.runbooks_dir))
        .unwrap_or_else(|| PathBuf::from("runbooks"))
}

/// Runs `gsdr drill`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let dir = runbooks_dir(args.runbooks.as_deref(), ctx);
    if args.render_runbooks {
        for s in scenario::load_dir(&dir)? {
            let p = dir.join(format!("{}.md", s.name));
            std::fs::write(&p, s.render_markdown())?;
            if !ctx.quiet {
                eprintln!("wrote {}", p.display());
            }
        }
        return Ok(Outcome::Ok);
    }
    let env = ctx.env()?;
    let progress = progress::for_terminal(ctx.quiet || ctx.json);
    let started = chrono::Utc::now();
    let results = if args.scheduled {
        gsdr::drill::run_scheduled(&env, args.runbooks.as_deref(), progress.as_ref()).await?
    } else {
        let name = args.scenario.as_deref().expect("clap requires --scenario");
        let cfg = env.policy.drills.clone().unwrap_or_default();
        let opts = RunOptions {
            scratch_root: args.scratch_dir.clone().or(cfg.scratch_dir.clone()),
            target_time: args.target_time,
            trend_reports: cfg.trend_reports,
            store_report: !args.no_store,
            ..RunOptions::drill()
        };
        let mut results = Vec::new();
        for s in scenario::select(&dir, name)? {
            let r = runner::run(&env, &s, &opts, progress.as_ref()).await;
            results.push((s.name, r));
        }
        results
    };
    if args.scheduled {
        record_scheduled(&env, started, &results).await;
        super::run::push_metrics(&env.policy, "gsdr-drill").await;
    }
    let total = results.len();
    let mut summary = Summary {
        passed: true,
        reports: Vec::new(),
        not_run: Vec::new(),
    };
    for (name, r) in results {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                summary.passed = false;
                summary.not_run.push(NotRun {
                    scenario: name,
                    error: format!("{:#}", anyhow::Error::from(e)),
                });
                continue;
            }
        };
        let local_files = match &args.out {
            Some(d) => runner::write_local(d, &r.report)?,
            None => Vec::new(),
        };
        summary.passed &= r.report.passed;
        summary.reports.push(Entry {
            report: r.report,
            stored_keys: r.stored_keys,
            store_error: r.store_error,
            local_files,
        });
    }
    emit(ctx.json, &summary, human)?;
    if !summary.not_run.is_empty() {
        anyhow::bail!(
            "{} of {} scenarios could not run: {}",
            summary.not_run.len(),
            total,
            summary
                .not_run
                .iter()
                .map(|n| n.scenario.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if summary.passed {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn human(s: &Summary) -> String {
    let mut out = String::new();
    for n in &s.not_run {
        out += &format!("NOT RUN {}: {}\n", n.scenario, n.error);
    }
    for e in &s.reports {
        let r = &e.report;
        out += &format!(
            "{} {}: RTO {} (target {})\n",
            if r.passed { "PASSED" } else { "FAILED" },
            r.scenario,
            r.rto.achieved_secs.map(secs).unwrap_or_else(|| "–".into()),
            r.rto.target_secs.map(secs).unwrap_or_else(|| "–".into()),
        );
        for st in &r.steps {
            out += &format!(
                "  {:<8} {:<24} {:>10}  {}\n",
                format!("{:?}", st.status).to_lowercase(),
                st.name,
                secs(st.duration_secs),
                st.detail
            );
        }
        for p in &r.rpo {
            out += &format!(
                "  RPO {:<20} {} (target {}, by {}){}\n",
                p.source,
                secs(p.achieved_secs),
                p.target_secs.map(secs).unwrap_or_else(|| "–".into()),
                p.measured_by,
                if p.met { "" } else { "  MISSED" }
            );
        }
        for f in &r.failures {
            out += &format!("  failure: {f}\n");
        }
        for k in &e.stored_keys {
            out += &format!("  stored {k}\n");
        }
        if let Some(err) = &e.store_error {
            out += &format!("  report NOT stored: {err}\n");
        }
        for p in &e.local_files {
            out += &format!("  wrote {}\n", p.display());
        }
    }
    out
}

/// Options of `gsdr restore --scenario` (incident mode).
pub struct IncidentArgs {
    /// Scenario name.
    pub scenario: String,
    /// Print the plan only.
    pub plan: bool,
    /// `SOURCE=ENDPOINT` overrides.
    pub into: Vec<String>,
    /// Passwords of endpoint URIs written without one.
    pub passwords: super::restore::Passwords,
    /// State file.
    pub state: Option<PathBuf>,
    /// Resume.
    pub resume: bool,
    /// Runbooks directory.
    pub runbooks: Option<PathBuf>,
    /// Local output directory.
    pub out: Option<PathBuf>,
    /// Skip the confirmation.
    pub yes: bool,
    /// Point-in-time target.
    pub target_time: Option<DateTime<Utc>>,
    /// Start restored PostgreSQL data directories.
    pub start_postgres: bool,
    /// PostgreSQL: keep archiving into the source's WAL archive (`Some(true)`),
    /// never archive (`Some(false)`), or not chosen.
    pub archiving: Option<bool>,
}

/// Runs `gsdr restore --scenario NAME`: plan, confirm, execute, record.
pub async fn incident(ctx: &Ctx, a: IncidentArgs) -> anyhow::Result<Outcome> {
    use anyhow::Context as _;
    let dir = runbooks_dir(a.runbooks.as_deref(), ctx);
    let env = ctx.env()?;
    let mut scenarios = scenario::select(&dir, &a.scenario)?;
    anyhow::ensure!(
        scenarios.len() == 1,
        "an incident restore recovers one scenario at a time; name it (not `all`)"
    );
    let sc = scenarios.remove(0);
    let mut endpoints = std::collections::BTreeMap::new();
    for kv in &a.into {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--into `{kv}`: write SOURCE=PATH or SOURCE=URI"))?;
        // The endpoint gets its password here, in memory only: from
        // --password-env/--password-file or the source's own policy secret.
        let v = gsdr::job::endpoint_with_password(&env, k, v, a.passwords.of(k));
        endpoints.insert(k.to_string(), v);
    }
    let state = a
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("gsdr-incident-{}.state.json", sc.name)));
    let mut opts = RunOptions {
        kind: gsdr::drill::RunKind::Incident,
        endpoints,
        state_file: Some(state),
        resume: a.resume,
        target_time: a.target_time,
        start_postgres: a.start_postgres,
        keep_archiving: a.archiving,
        ..RunOptions::drill()
    };
    let plan = runner::plan(&env, &sc, &opts, Utc::now()).await?;
    if a.plan || !a.yes {
        emit(ctx.json, &plan, render_plan)?;
    }
    if a.plan {
        return Ok(Outcome::Ok);
    }
    use std::io::{BufRead, IsTerminal, Write};
    let ask = |question: &str| -> anyhow::Result<String> {
        eprint!("{question}");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    if plan.needs_archiving_choice(&opts) {
        anyhow::ensure!(
            !a.yes && std::io::stdin().is_terminal(),
            "the plan restores PostgreSQL: say what the restored cluster does with its WAL once promoted — --keep-archiving (it replaces production and continues the source's WAL archive) or --no-archiving (a copy that never writes there)"
        );
        let answer = ask(
            "Does the restored PostgreSQL replace production and keep archiving into its WAL archive? Type `keep` or `off`: ",
        )?;
        opts.keep_archiving = match answer.as_str() {
            "keep" => Some(true),
            "off" => Some(false),
            _ => anyhow::bail!("neither `keep` nor `off`; nothing was restored"),
        };
    }
    if !a.yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "executing an incident restore needs confirmation: pass --yes (stdin is not a terminal)"
        );
        let destroys: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| {
                s.overwrites
                    .as_ref()
                    .filter(|o| o.destroys)
                    .map(|o| format!("  {}: {}", s.name, o.text))
            })
            .collect();
        let question = if destroys.is_empty() {
            "Restore into the endpoints above? Type `yes` to proceed: ".to_string()
        } else {
            format!(
                "This restore overwrites:\n{}\nProceed? Type `yes` to proceed: ",
                destroys.join("\n")
            )
        };
        anyhow::ensure!(
            ask(&question)? == "yes",
            "not confirmed; nothing was restored"
        );
    }
    let progress = progress::for_terminal(ctx.quiet || ctx.json);
    let r = runner::run(&env, &sc, &opts, progress.as_ref()).await?;
    let local_files = match &a.out {
        Some(d) => runner::write_local(d, &r.report)?,
        None => Vec::new(),
    };
    let passed = r.report.passed;
    let summary = Summary {
        passed,
        not_run: Vec::new(),
        reports: vec![Entry {
            report: r.report,
            stored_keys: r.stored_keys,
            store_error: r.store_error,
            local_files,
        }],
    };
    emit(ctx.json, &summary, human)?;
    if !passed && !ctx.quiet {
        eprintln!(
            "the incident restore did not finish: fix the cause, then rerun with --resume to continue from the failed step"
        );
    }
    Ok(if passed {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn render_plan(p: &runner::Plan) -> String {
    let mut out = format!(
        "Plan for scenario `{}` ({:?}): {}\nplanned at {}{}\n",
        p.scenario,
        p.kind,
        p.title,
        p.planned_at.to_rfc3339(),
        p.target_time
            .map(|t| format!("; point-in-time target {}", t.to_rfc3339()))
            .unwrap_or_default()
    );
    for (i, s) in p.steps.iter().enumerate() {
        out += &format!(
            "{:>2}. {} [{}]{}\n    {}\n",
            i + 1,
            s.name,
            s.kind,
            if s.after.is_empty() {
                String::new()
            } else {
                format!(" after {}", s.after.join(", "))
            },
            s.description
        );
        if let Some(b) = &s.backup {
            out += &format!(
                "    backup {} ({}, {} bytes) from target `{}`, recovery point {}\n    implied RPO {} (target {}){}\n",
                b.id,
                b.engine,
                b.raw_bytes,
                b.target,
                b.recovery_point.to_rfc3339(),
                secs(b.implied_rpo_secs),
                b.rpo_target_secs.map(secs).unwrap_or_else(|| "–".into()),
                match b.rpo_target_secs {
                    Some(t) if b.implied_rpo_secs > t => "  EXCEEDS TARGET",
                    _ => "",
                }
            );
            if let Some(l) = &b.object_lock {
                out += &format!(
                    "    object lock {} until {}{}\n",
                    l.mode,
                    l.retain_until.to_rfc3339(),
                    match b.skipped_unlocked {
                        0 => String::new(),
                        n => format!("; {n} newer unlocked backup(s) skipped"),
                    }
                );
            }
        }
        if let Some(i) = &s.into {
            out += &format!("    into {i}\n");
        }
        if let Some(o) = &s.overwrites {
            out += &format!("    overwrites: {}\n", o.text);
        }
        if let Some(a) = &s.archiving {
            out += &format!("    archiving after promotion: {a}\n");
        }
    }
    out
}

/// Records a `--scheduled` run as the daemon's `drill/scheduled` job (its
/// record, metrics and notifications), so `gsdr status` and the alerts see
/// drills the CronJob ran. Best effort: a failure here is a warning.
async fn record_scheduled(
    env: &gsdr::job::Env,
    started: chrono::DateTime<chrono::Utc>,
    results: &[(
        String,
        Result<gsdr::drill::runner::RunResult, gsdr::drill::DrillError>,
    )],
) {
    use gsdr::daemon::runner;
    use gsdr::scheduler::{JobId, JobKind, RunReport, SlotOutcome};
    let mut failed = Vec::new();
    let mut keys = Vec::new();
    for (name, r) in results {
        match r {
            Ok(r) if r.report.passed => keys.extend(r.stored_keys.first().cloned()),
            Ok(r) => failed.push(format!(
                "`{name}` failed ({})",
                r.report.failures.join("; ")
            )),
            Err(e) => failed.push(format!("`{name}` did not run: {e}")),
        }
    }
    let outcome = if failed.is_empty() {
        SlotOutcome::Success(RunReport {
            id: format!("{} drills passed: {}", results.len(), keys.join(", ")),
            bytes_raw: 0,
            bytes_stored: 0,
            duration_secs: (chrono::Utc::now() - started).num_milliseconds() as f64 / 1000.0,
            committed_at: None,
        })
    } else {
        SlotOutcome::Failed(format!(
            "{} of {} drills failed: {}",
            failed.len(),
            results.len(),
            failed.join("; ")
        ))
    };
    let hooks = match super::daemon::hooks(env) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(event = "drill_record_failed", error = %e);
            Vec::new()
        }
    };
    match env.home_store().await {
        Ok(home) => {
            let id = JobId::new(JobKind::Drill, runner::SCHEDULED_DRILLS);
            gsdr::scheduler::record_outside_run(home.as_ref(), &id, started, &outcome, &hooks)
                .await;
        }
        Err(e) => tracing::warn!(event = "drill_record_failed", error = %e),
    }
}
