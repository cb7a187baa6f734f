//! Runs a scenario: its plan, its steps in the order `steps` decides, each
//! step's restore or check, the incident state file, the scratch targets, the
//! verdict and the stored report.
//!
//! Scratch targets (drills): one temporary directory per run (restored files,
//! and the data directories of scratch servers) plus the scratch servers.
//! They are removed by an explicit async cleanup at the end of the run —
//! also when a step failed — and, as a last resort (panic, cancellation), by
//! their `Drop` guards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;

use super::ctx::{planned_backup, restored_of, Ctx, Restored};
use super::engines::{restore_source, restore_velero, server_uri};
use super::incident::IncidentState;
use super::report::{DrillReport, RunKind, StepReport, StepStatus};
use super::scenario::{Action, Scenario, Step};
use super::scratch::Scratch;
use super::steps::run_steps;
use super::store::with_trend;
use super::verdict::{build_report, secs_between};
use super::{checks, DrillError};
use crate::error::Error;
use crate::job::{Env, Progress};

pub use super::plan::{archiving_words, plan, Plan, PlannedBackup, PlannedStep, RunOptions};
pub use super::store::{prune_reports, report_prefix, report_target, store_report, write_local};

/// Outcome of [`run`]: the report and where it was stored.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The report.
    pub report: DrillReport,
    /// Keys written in the report target.
    pub stored_keys: Vec<String>,
    /// Why storing the report failed, if it did.
    pub store_error: Option<String>,
}

/// Runs `scenario`: every step, the checks, the RTO/RPO comparison, the trend, the stored report.
pub async fn run(
    env: &Env,
    scenario: &Scenario,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<RunResult, DrillError> {
    // Validate, then run: state, plan and endpoints first.
    let mut state = match (&opts.state_file, opts.resume) {
        (Some(p), true) => {
            let mut s = IncidentState::load(p, &scenario.name)?;
            s.reconnect(&opts.endpoints);
            Some(s)
        }
        (Some(p), false) if p.exists() => {
            return Err(DrillError::State {
                file: p.clone(),
                message: "a previous run of this incident left this state file: pass --resume to continue it, or remove it to start over".into(),
            })
        }
        (None, true) => {
            return Err(DrillError::State {
                file: PathBuf::from("(none)"),
                message: "--resume needs a state file".into(),
            })
        }
        _ => None,
    };
    let started_at = state
        .as_ref()
        .map(|s| s.started_at)
        .unwrap_or_else(Utc::now);
    let plan = plan(env, scenario, opts, started_at).await?;
    if opts.kind == RunKind::Incident {
        for st in &scenario.steps {
            if let (true, Some(src)) = (st.action.is_restore(), st.action.source()) {
                if !opts.endpoints.contains_key(src) {
                    return Err(DrillError::Gsdr(Error::Invalid(format!(
                        "step `{}`: no endpoint for source `{src}`; pass --into {src}=PATH|URI",
                        st.name
                    ))));
                }
            }
        }
    }
    let state_init = IncidentState {
        scenario: scenario.name.clone(),
        started_at,
        steps: BTreeMap::new(),
        restored: BTreeMap::new(),
    };
    if opts.kind == RunKind::Incident && state.is_none() {
        state = Some(state_init);
    }
    let scratch = match opts.kind {
        RunKind::Drill => Some(Scratch::new(opts.scratch_root.as_deref(), &scenario.name)?),
        RunKind::Incident => None,
    };
    tracing::info!(event = "drill_started", scenario = %scenario.name, kind = ?opts.kind);
    let ctx = Ctx {
        env,
        scenario,
        opts,
        plan: &plan,
        started_at,
        scratch: scratch.as_ref().map(|s| s.dir.path().to_path_buf()),
        restored: Mutex::new(
            state
                .as_ref()
                .map(|s| s.restored.clone())
                .unwrap_or_default(),
        ),
        servers: Mutex::new(Vec::new()),
        scratch_namespaces: Mutex::new(Vec::new()),
        progress,
    };

    let earlier = state.as_ref().map(|s| s.steps.clone()).unwrap_or_default();
    let mut steps = run_steps(
        &scenario.steps,
        scenario.max_parallel,
        &earlier,
        started_at,
        |st| exec_step(&ctx, st),
        |st, r| match (state.as_mut(), &opts.state_file) {
            (Some(s), Some(p)) => {
                s.steps.insert(st.name.clone(), r.clone());
                s.restored = ctx.restored.lock().expect("lock").clone();
                s.save(p)
            }
            _ => Ok(()),
        },
    )
    .await?;
    // Scratch servers first (their data lives in the scratch dir), off the async threads.
    let servers: Vec<_> = std::mem::take(&mut *ctx.servers.lock().expect("lock"));
    let n_servers = servers.len();
    for s in servers {
        s.stop().await;
    }
    if n_servers > 0 {
        tracing::info!(event = "drill_scratch_servers_stopped", count = n_servers);
    }
    let namespaces: Vec<String> =
        std::mem::take(&mut *ctx.scratch_namespaces.lock().expect("lock"));
    let namespaces_deleted = super::engines::delete_scratch_namespaces(env, &namespaces).await;
    let scratch_cleaned = match scratch {
        Some(s) => Some(s.cleanup().await && namespaces_deleted),
        None => None,
    };
    let finished_at = Utc::now();
    steps.sort_by(|a, b| a.start_offset_secs.total_cmp(&b.start_offset_secs));
    let restored = ctx.restored.lock().expect("lock").clone();
    let report = build_report(
        env,
        scenario,
        opts.kind,
        started_at,
        finished_at,
        steps,
        &restored,
        scratch_cleaned,
    );
    let report = with_trend(env, scenario, opts, report).await;
    let (stored_keys, store_error) = if opts.store_report {
        match store_report(env, scenario, &report).await {
            Ok(k) => (k, None),
            Err(e) => {
                tracing::warn!(event = "drill_report_not_stored", error = %e);
                (Vec::new(), Some(e.to_string()))
            }
        }
    } else {
        (Vec::new(), None)
    };
    if let (RunKind::Incident, true, Some(p)) = (opts.kind, report.passed, &opts.state_file) {
        let _ = std::fs::remove_file(p);
    }
    Ok(RunResult {
        report,
        stored_keys,
        store_error,
    })
}

async fn exec_step(ctx: &Ctx<'_>, st: &Step) -> StepReport {
    let offset = secs_between(ctx.started_at, Utc::now());
    let t = Instant::now();
    tracing::info!(event = "drill_step_started", step = %st.name, kind = st.action.kind());
    let mut rep = StepReport {
        name: st.name.clone(),
        kind: st.action.kind().into(),
        source: st.action.source().map(str::to_string),
        status: StepStatus::Ok,
        start_offset_secs: offset,
        duration_secs: 0.0,
        backup_id: None,
        from_target: None,
        into: None,
        raw_bytes: None,
        detail: String::new(),
    };
    let res = exec_action(ctx, st, &mut rep).await;
    rep.duration_secs = t.elapsed().as_secs_f64();
    match res {
        Ok(detail) => rep.detail = detail,
        Err(e) => {
            rep.status = StepStatus::Failed;
            rep.detail = error_chain(&e);
        }
    }
    rep
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s += &format!(": {cs}");
        }
        cur = c.source();
    }
    s
}

/// A count in the restored server of `source` through its engine (keys, a
/// collection's documents, a query's integer).
async fn engine_count(
    ctx: &Ctx<'_>,
    st: &Step,
    source: &str,
    query: Option<&str>,
) -> Result<i64, Error> {
    let r = restored_of(ctx, source)?;
    let uri = server_uri(ctx, st, source)?;
    let engine = crate::job::engine_for(ctx.env, &r.manifest)?;
    engine
        .count(&uri, query)
        .await
        .map_err(|e| with_start_hint(ctx, source, e))
}

/// A check that cannot connect to a restored endpoint that is not started
/// yet says what to do (the engine's hint).
fn with_start_hint(ctx: &Ctx<'_>, source: &str, e: crate::source::EngineError) -> Error {
    use crate::source::{EngineError, SourceError};
    let hint = restored_of(ctx, source).ok().and_then(|r| r.start_hint);
    match (hint, e) {
        (Some(h), EngineError::Source(SourceError::Unreachable { message })) => {
            Error::Invalid(format!("{message}: {h}"))
        }
        (_, e) => e.into(),
    }
}

async fn exec_action(ctx: &Ctx<'_>, st: &Step, rep: &mut StepReport) -> Result<String, Error> {
    match &st.action {
        Action::RestoreCommandSource { source } => {
            let pb = planned_backup(ctx, st)?;
            let cat = ctx.env.catalog(&pb.target).await?;
            let m = pb.manifest_in(&cat).await?;
            let path = match ctx.opts.kind {
                RunKind::Drill => ctx
                    .scratch
                    .as_ref()
                    .expect("drills have a scratch dir")
                    .join(format!("{source}.restored")),
                RunKind::Incident => PathBuf::from(&ctx.opts.endpoints[source]),
            };
            rep.backup_id = Some(m.id.clone());
            rep.from_target = Some(pb.target.clone());
            rep.into = Some(path.display().to_string());
            let out = crate::job::restore_raw_to_file(ctx.env, &cat, &m, &path, true, ctx.progress)
                .await?;
            rep.raw_bytes = Some(out.raw_bytes);
            ctx.restored.lock().expect("lock").insert(
                source.clone(),
                Restored {
                    manifest: m.clone(),
                    target: pb.target.clone(),
                    into: path.display().to_string(),
                    path: Some(path.clone()),
                    uri: None,
                    recovered: None,
                    start_hint: None,
                },
            );
            Ok(format!(
                "restored backup {} from target `{}` ({} bytes) to {}",
                m.id,
                pb.target,
                out.raw_bytes,
                path.display()
            ))
        }
        Action::RestoreRedis { source }
        | Action::RestorePostgresPitr { source }
        | Action::RestoreMongo { source } => restore_source(ctx, st, source, rep).await,
        Action::VeleroRestore {
            schedule,
            namespace_mapping,
        } => restore_velero(ctx, schedule, namespace_mapping, rep).await,
        Action::RedisKeys { source, min } => {
            let n = engine_count(ctx, st, source, None).await?;
            if n < *min as i64 {
                return Err(Error::Invalid(format!(
                    "restored Redis of `{source}` holds {n} keys, fewer than the {min} expected"
                )));
            }
            Ok(format!("{n} keys (at least {min} expected)"))
        }
        Action::Sql { source, query, min } => {
            let v = engine_count(ctx, st, source, Some(query)).await?;
            if v < *min {
                return Err(Error::Invalid(format!(
                    "restored PostgreSQL of `{source}`: `{query}` returned {v}, less than the {min} expected"
                )));
            }
            Ok(format!("`{query}` = {v} (at least {min} expected)"))
        }
        Action::MongoCount {
            source,
            collection,
            min,
        } => {
            let n = engine_count(ctx, st, source, Some(collection)).await?;
            if n < *min as i64 {
                return Err(Error::Invalid(format!(
                    "restored MongoDB of `{source}`: `{collection}` holds {n} documents, fewer than the {min} expected"
                )));
            }
            Ok(format!(
                "`{collection}`: {n} documents (at least {min} expected)"
            ))
        }
        Action::Sha256 { source } => {
            let r = restored_of(ctx, source)?;
            let path = r.path.ok_or_else(|| {
                Error::Invalid(format!(
                    "check `{}`: source `{source}` was restored into a server, not a file; use an engine check",
                    st.name
                ))
            })?;
            Ok(checks::sha256(&path, &r.manifest).await?.detail)
        }
        Action::CanaryAge { source } => {
            let r = restored_of(ctx, source)?;
            let engine = crate::job::engine_for(ctx.env, &r.manifest)?;
            let out = if engine.has_canary() {
                let uri = server_uri(ctx, st, source)?;
                let point = engine
                    .canary_read(&uri)
                    .await
                    .map_err(|e| with_start_hint(ctx, source, e))?;
                let rec = super::canary::by_canary(point);
                checks::CheckOutcome {
                    detail: format!(
                        "newest canary in the restored data: {} (backup {} recorded {})",
                        rec.point.to_rfc3339(),
                        r.manifest.id,
                        r.manifest.recovery_point().to_rfc3339()
                    ),
                    recovered: Some(rec),
                }
            } else {
                checks::manifest_recovered_point(
                    &r.manifest,
                    engine.canary_absent_note().unwrap_or_default(),
                )
            };
            if let Some(rec) = &out.recovered {
                if let Some(x) = ctx.restored.lock().expect("lock").get_mut(source) {
                    x.recovered = Some(rec.clone());
                }
            }
            let _ = ctx.scenario;
            Ok(out.detail)
        }
    }
}
