//! Plans and runs a scenario: restores, checks, timing, scratch targets,
//! resumable incident state, RTO/RPO against the policy's objectives, and the
//! stored report.
//!
//! Order: a step starts once every step in its `after` list has finished;
//! the steps ready at the same time run concurrently, at most
//! `max_parallel` at once. A failed step makes its dependents `skipped`.
//!
//! Scratch targets (drills): one temporary directory per run (restored files,
//! and the data directories of scratch servers) plus the scratch servers.
//! They are removed by an explicit async cleanup at the end of the run —
//! also when a step failed — and, as a last resort (panic, cancellation), by
//! their `Drop` guards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use super::canary::Recovered;
use super::report::{
    DrillReport, RpoResult, RtoResult, RunKind, StepReport, StepStatus, REPORT_SCHEMA,
};
use super::scenario::{Action, BackupCopy, Scenario, Step};
use super::{checks, DrillError};
use crate::catalog::Manifest;
use crate::error::Error;
use crate::job::{Env, Progress};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Drill (scratch targets) or incident (real endpoints).
    pub kind: RunKind,
    /// Parent directory of scratch targets (default: the system temp dir).
    pub scratch_root: Option<PathBuf>,
    /// Incident endpoints by source (a file path for `command` sources, a URI for servers).
    pub endpoints: BTreeMap<String, String>,
    /// Incident state file (resumable progress).
    pub state_file: Option<PathBuf>,
    /// Continue the run recorded in `state_file`, skipping finished steps.
    pub resume: bool,
    /// Point-in-time target; the scenario's `pitr_before` is subtracted from it (default: the run start).
    pub target_time: Option<DateTime<Utc>>,
    /// Past reports read back for the trend.
    pub trend_reports: usize,
    /// Store the report in the report target.
    pub store_report: bool,
    /// Incident: start restored PostgreSQL data directories (on the source's
    /// port) instead of leaving that to the operator.
    pub start_postgres: bool,
    /// Incident: whether a restored PostgreSQL keeps archiving into the
    /// source's WAL archive once promoted (it replaces production), or does
    /// not archive. `None`: not chosen yet — an incident with a PostgreSQL
    /// step refuses to run until it is. Drills never archive.
    pub keep_archiving: Option<bool>,
}

impl RunOptions {
    /// Defaults for a drill.
    pub fn drill() -> Self {
        RunOptions {
            kind: RunKind::Drill,
            scratch_root: None,
            endpoints: BTreeMap::new(),
            state_file: None,
            resume: false,
            target_time: None,
            trend_reports: 10,
            store_report: true,
            start_postgres: false,
            keep_archiving: None,
        }
    }
}

/// What a run will do, before it does it (`--plan`).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Scenario.
    pub scenario: String,
    /// Title.
    pub title: String,
    /// Drill or incident.
    pub kind: RunKind,
    /// When the plan was made (implied RPOs are measured from it).
    pub planned_at: DateTime<Utc>,
    /// Point-in-time target, if any.
    pub target_time: Option<DateTime<Utc>>,
    /// Steps in order.
    pub steps: Vec<PlannedStep>,
}

/// One planned step.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Runs after.
    pub after: Vec<String>,
    /// Source.
    pub source: Option<String>,
    /// In words.
    pub description: String,
    /// Backup a restore step will use.
    pub backup: Option<PlannedBackup>,
    /// Where a restore step writes.
    pub into: Option<String>,
    /// Incident: what the step destroys at its endpoint, in words
    /// ("flushes 50,002 keys in redis://…"); the confirmation asks about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overwrites: Option<crate::source::Overwrite>,
    /// Incident, PostgreSQL: what the restored cluster does with its WAL once promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archiving: Option<String>,
}

impl Plan {
    /// True when a PostgreSQL restore step needs the archiving choice
    /// (`--keep-archiving` / `--no-archiving`) that was not made.
    pub fn needs_archiving_choice(&self, opts: &RunOptions) -> bool {
        opts.kind == RunKind::Incident
            && opts.keep_archiving.is_none()
            && self.steps.iter().any(|s| s.archiving.is_some())
    }
}

/// The plan's words for a PostgreSQL step's archiving choice.
pub fn archiving_words(source: &str, keep: Option<bool>) -> String {
    match keep {
        Some(true) => format!(
            "KEPT (--keep-archiving): once promoted it continues the WAL archive of `{source}` on a new timeline, as the cluster that replaces production"
        ),
        Some(false) => format!(
            "off (--no-archiving): it never writes into the WAL archive of `{source}`; re-enabling after a real failover is described in its postgresql.auto.conf"
        ),
        None => format!(
            "NOT CHOSEN: pass --keep-archiving if the restored cluster replaces production (it continues the WAL archive of `{source}`), or --no-archiving for a copy that must never write there"
        ),
    }
}

/// What restoring `m` into the incident endpoint of `action` destroys.
async fn overwrite_of(
    env: &Env,
    action: &Action,
    m: &Manifest,
    endpoint: &str,
) -> Option<crate::source::Overwrite> {
    use crate::source::Overwrite;
    Some(match action {
        Action::RestoreRedis { .. } => {
            crate::source::redis::describe_overwrite(env, m, endpoint).await
        }
        Action::RestoreMongo { .. } => {
            crate::source::mongo::describe_overwrite(env, m, Some(endpoint)).await
        }
        Action::RestorePostgresPitr { .. } => {
            crate::source::postgres::restore::describe_overwrite(Path::new(endpoint))
        }
        Action::RestoreCommandSource { .. } => match std::fs::metadata(endpoint) {
            Ok(md) => Overwrite::destroys(format!(
                "overwrites {endpoint} ({} bytes), once the restored stream passed every check",
                crate::source::thousands(md.len())
            )),
            Err(_) => {
                Overwrite::nothing(format!("{endpoint} does not exist: nothing is overwritten"))
            }
        },
        _ => return None,
    })
}

/// The backup a restore step will use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedBackup {
    /// Backup id.
    pub id: String,
    /// Engine.
    pub engine: String,
    /// Target it is read from.
    pub target: String,
    /// Its recovery point.
    pub recovery_point: DateTime<Utc>,
    /// Plan time − the newest point the restore reaches (its recovery point;
    /// for a PostgreSQL base backup the end of the contiguous WAL chain on
    /// the target, capped at the target time): the RPO it implies, seconds.
    pub implied_rpo_secs: f64,
    /// The source's RPO objective, seconds.
    pub rpo_target_secs: Option<f64>,
    /// Raw bytes.
    pub raw_bytes: u64,
    /// Object Lock of the backup's data (the earlier of data and manifest),
    /// when the scenario requires locked backups.
    #[serde(default)]
    pub object_lock: Option<crate::storage::ObjectLock>,
    /// Newer backups passed over because they are not locked.
    #[serde(default)]
    pub skipped_unlocked: usize,
}

/// Target a scenario reads `source`'s backups from.
fn copy_target(env: &Env, scenario: &Scenario, source: &str) -> Result<String, DrillError> {
    match scenario.from {
        BackupCopy::Primary => {
            if scenario.primary_hostile {
                return Err(DrillError::Scenario {
                    file: PathBuf::from(format!("{}.toml", scenario.name)),
                    message: "primary_hostile needs from = \"offsite\"".into(),
                });
            }
            Ok(env.primary_target_name(source)?)
        }
        BackupCopy::Offsite => {
            env.source_config(source)?;
            env.policy
                .offsite_of(source)
                .map(str::to_string)
                .ok_or_else(|| {
                    DrillError::Gsdr(Error::Invalid(format!(
                        "scenario `{}` restores from the off-site copy, but source `{source}` has no off-site target (set defaults.offsite)",
                        scenario.name
                    )))
                })
        }
    }
}

fn effective_target_time(
    scenario: &Scenario,
    opts: &RunOptions,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match scenario.pitr_offset() {
        Some(off) => Some(
            opts.target_time.unwrap_or(now)
                - chrono::Duration::from_std(off).unwrap_or(chrono::Duration::zero()),
        ),
        None => opts.target_time,
    }
}

/// Plans `scenario`: which backup each restore uses, from where, into where, and the RPO it implies.
pub async fn plan(
    env: &Env,
    scenario: &Scenario,
    opts: &RunOptions,
    now: DateTime<Utc>,
) -> Result<Plan, DrillError> {
    // Every step's configuration and program, before any catalog is read.
    super::preflight::check(env, scenario, opts.kind)?;
    let target_time = effective_target_time(scenario, opts, now);
    let mut steps = Vec::new();
    for st in &scenario.steps {
        let mut backup = None;
        let mut into = None;
        let mut overwrites = None;
        let mut archiving = None;
        if st.action.is_restore() {
            if let Some(source) = st.action.source() {
                let target = copy_target(env, scenario, source)?;
                let cat = env.catalog(&target).await?;
                let (m, object_lock, skipped_unlocked) = if scenario.require_object_lock {
                    newest_locked(&cat, &scenario.name, source, &target, target_time, now).await?
                } else {
                    (cat.newest_before(source, None, target_time).await?, None, 0)
                };
                // A PostgreSQL restore goes on past its base backup to the end of
                // the contiguous WAL chain there (never past a hole), up to the target time.
                let reaches = crate::source::postgres::walchain::restore_reaches(cat.store(), &m)
                    .await
                    .map_err(Error::from)?
                    .unwrap_or(m.recovery_point());
                let reaches = target_time
                    .map_or(reaches, |t| reaches.min(t))
                    .max(m.recovery_point());
                if let (RunKind::Incident, Some(ep)) = (opts.kind, opts.endpoints.get(source)) {
                    overwrites = overwrite_of(env, &st.action, &m, ep).await;
                }
                if let (RunKind::Incident, Action::RestorePostgresPitr { .. }) =
                    (opts.kind, &st.action)
                {
                    archiving = Some(archiving_words(source, opts.keep_archiving));
                }
                backup = Some(PlannedBackup {
                    object_lock,
                    skipped_unlocked,
                    implied_rpo_secs: secs_between(reaches, now),
                    rpo_target_secs: env
                        .policy
                        .objectives_of(source)
                        .map(|o| o.rpo.0.as_secs_f64()),
                    id: m.id,
                    engine: m.engine,
                    target,
                    recovery_point: m.consistency.consistency_time.unwrap_or(m.started_at),
                    raw_bytes: m.raw_bytes,
                });
                into = Some(match opts.kind {
                    RunKind::Drill => "a scratch target".to_string(),
                    RunKind::Incident => {
                        opts.endpoints.get(source).cloned().unwrap_or_else(|| {
                            format!("(no endpoint: pass --into {source}=PATH|URI)")
                        })
                    }
                });
            }
        }
        steps.push(PlannedStep {
            name: st.name.clone(),
            kind: st.action.kind().into(),
            after: st.after.clone(),
            source: st.action.source().map(str::to_string),
            description: st.action.describe(),
            backup,
            into,
            overwrites,
            archiving,
        });
    }
    Ok(Plan {
        scenario: scenario.name.clone(),
        title: scenario.title.clone(),
        kind: opts.kind,
        planned_at: now,
        target_time,
        steps,
    })
}

/// The newest backup of `source` (before `before`) whose data object and
/// manifest are both under Object Lock until after `now`, the lock that ends
/// first, and how many newer backups were passed over.
async fn newest_locked(
    cat: &crate::catalog::Catalog,
    scenario: &str,
    source: &str,
    target: &str,
    before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(Manifest, Option<crate::storage::ObjectLock>, usize), DrillError> {
    let mut candidates: Vec<Manifest> = cat
        .list(Some(source))
        .await?
        .into_iter()
        .filter(|m| before.is_none_or(|t| m.recovery_point() <= t))
        .collect();
    candidates.sort_by(|a, b| (b.recovery_point(), &b.id).cmp(&(a.recovery_point(), &a.id)));
    let store = cat.store();
    for (i, m) in candidates.iter().enumerate() {
        let data = store.object_lock(&m.data_key).await.map_err(Error::from)?;
        let manifest = store
            .object_lock(&m.manifest_key())
            .await
            .map_err(Error::from)?;
        if let (Some(d), Some(mf)) = (data, manifest) {
            if d.retain_until > now && mf.retain_until > now {
                if i > 0 {
                    tracing::warn!(event = "drill_unlocked_backups_skipped", source, target, skipped = i, used = %m.id);
                }
                let first_to_end = if d.retain_until <= mf.retain_until {
                    d
                } else {
                    mf
                };
                return Ok((m.clone(), Some(first_to_end), i));
            }
        }
    }
    Err(DrillError::Gsdr(Error::Invalid(format!(
        "scenario `{scenario}` restores only object-locked backups, but none of the {} backups of source `{source}` on target `{target}` is locked: enable `object_lock` in [targets.{target}.lifecycle] and run `gsdr storage init` (new backups are then locked)",
        candidates.len()
    ))))
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// A restored source, as later steps (checks) and resumed runs need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Restored {
    pub(super) manifest: Manifest,
    pub(super) target: String,
    pub(super) into: String,
    pub(super) path: Option<PathBuf>,
    /// Server URI of a restore into a server (scratch or real).
    #[serde(default)]
    pub(super) uri: Option<String>,
    pub(super) recovered: Option<Recovered>,
}

/// The resumable record of an incident run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IncidentState {
    scenario: String,
    started_at: DateTime<Utc>,
    steps: BTreeMap<String, StepReport>,
    restored: BTreeMap<String, Restored>,
}

impl IncidentState {
    fn load(path: &Path, scenario: &str) -> Result<IncidentState, DrillError> {
        let err = |message: String| DrillError::State {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read it ({e}); run without --resume to start over"
            ))
        })?;
        let s: IncidentState =
            serde_json::from_str(&text).map_err(|e| err(format!("unreadable: {e}")))?;
        if s.scenario != scenario {
            return Err(err(format!(
                "it records scenario `{}`, not `{scenario}`",
                s.scenario
            )));
        }
        Ok(s)
    }

    fn save(&self, path: &Path) -> Result<(), DrillError> {
        let tmp = path.with_extension("tmp");
        let io = |e| {
            DrillError::Gsdr(Error::LocalIo {
                what: "writing the incident state file",
                path: path.to_path_buf(),
                source: e,
            })
        };
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("state serialises"),
        )
        .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Scratch targets of a drill: a directory and the scratch servers started in it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(root: Option<&Path>, scenario: &str) -> Result<Scratch, DrillError> {
        let root = root
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root).ok();
        let dir = tempfile::Builder::new()
            .prefix(&format!("gsdr-drill-{scenario}-"))
            .tempdir_in(&root)
            .map_err(|e| {
                DrillError::Gsdr(Error::LocalIo {
                    what: "creating the scratch directory in",
                    path: root.clone(),
                    source: e,
                })
            })?;
        // Traversable (not listable) by other users: a scratch server may run
        // as its own user (PostgreSQL as `postgres`) below this directory.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711));
        }
        Ok(Scratch { dir })
    }

    /// Removes everything; true when nothing is left.
    async fn cleanup(self) -> bool {
        let path = self.dir.path().to_path_buf();
        if let Err(e) = tokio::fs::remove_dir_all(&path).await {
            tracing::warn!(event = "drill_scratch_cleanup_failed", path = %path.display(), error = %e);
        }
        drop(self.dir); // the guard retries synchronously if anything is left
        !path.exists()
    }
}

pub(super) struct Ctx<'a> {
    pub(super) env: &'a Env,
    pub(super) scenario: &'a Scenario,
    pub(super) opts: &'a RunOptions,
    pub(super) plan: &'a Plan,
    pub(super) started_at: DateTime<Utc>,
    pub(super) scratch: Option<PathBuf>,
    pub(super) restored: Mutex<BTreeMap<String, Restored>>,
    /// Scratch servers started by restore steps; stopped at the end of the run.
    pub(super) redis_servers: Mutex<Vec<crate::source::redis::ScratchServer>>,
    /// Scratch PostgreSQL servers.
    pub(super) pg_servers: Mutex<Vec<super::scratch_pg::ScratchPg>>,
    /// Scratch MongoDB servers.
    pub(super) mongo_servers: Mutex<Vec<super::scratch_mongo::ScratchMongo>>,
    /// Kubernetes namespaces a Velero restore step created; deleted at the end.
    pub(super) scratch_namespaces: Mutex<Vec<String>>,
    pub(super) progress: &'a dyn Progress,
}

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
        (Some(p), true) => Some(IncidentState::load(p, &scenario.name)?),
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
        redis_servers: Mutex::new(Vec::new()),
        pg_servers: Mutex::new(Vec::new()),
        mongo_servers: Mutex::new(Vec::new()),
        scratch_namespaces: Mutex::new(Vec::new()),
        progress,
    };

    let mut decided: BTreeMap<String, StepReport> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        // Decide every step whose dependencies are decided: skip, already done, or start (within max_parallel).
        let mut progressed = true;
        while progressed {
            progressed = false;
            for st in &scenario.steps {
                if decided.contains_key(&st.name)
                    || running.contains(&st.name)
                    || !st.after.iter().all(|a| decided.contains_key(a))
                {
                    continue;
                }
                let dep_failed = st.after.iter().any(|a| {
                    !matches!(decided[a].status, StepStatus::Ok | StepStatus::AlreadyDone)
                });
                let previous = state
                    .as_ref()
                    .and_then(|s| s.steps.get(&st.name))
                    .filter(|r| matches!(r.status, StepStatus::Ok | StepStatus::AlreadyDone));
                if dep_failed {
                    decided.insert(
                        st.name.clone(),
                        skipped(st, started_at, "a step it runs after failed"),
                    );
                    order.push(st.name.clone());
                    progressed = true;
                } else if let Some(prev) = previous {
                    let mut r = prev.clone();
                    r.status = StepStatus::AlreadyDone;
                    r.detail = format!("finished in an earlier run: {}", prev.detail);
                    tracing::info!(event = "drill_step_already_done", step = %st.name);
                    decided.insert(st.name.clone(), r);
                    order.push(st.name.clone());
                    progressed = true;
                } else if running.len() < scenario.max_parallel {
                    running.insert(st.name.clone());
                    let ctx = &ctx;
                    in_flight.push(async move { (st, exec_step(ctx, st).await) });
                }
            }
        }
        let Some((st, r)) = in_flight.next().await else {
            break;
        };
        tracing::info!(event = "drill_step_finished", step = %st.name, status = ?r.status, duration_secs = r.duration_secs, detail = %r.detail);
        running.remove(&st.name);
        decided.insert(st.name.clone(), r);
        order.push(st.name.clone());
        if let (Some(s), Some(p)) = (state.as_mut(), &opts.state_file) {
            s.steps.insert(st.name.clone(), decided[&st.name].clone());
            s.restored = ctx.restored.lock().expect("lock").clone();
            s.save(p)?;
        }
    }
    // Scratch servers first (their data lives in the scratch dir), off the async threads.
    let servers: Vec<_> = std::mem::take(&mut *ctx.redis_servers.lock().expect("lock"));
    let pgs: Vec<_> = std::mem::take(&mut *ctx.pg_servers.lock().expect("lock"));
    let mongos: Vec<_> = std::mem::take(&mut *ctx.mongo_servers.lock().expect("lock"));
    let n_servers = servers.len() + pgs.len() + mongos.len();
    for m in mongos {
        m.stop().await;
    }
    for pg in pgs {
        pg.stop().await;
    }
    let _ = tokio::task::spawn_blocking(move || drop(servers)).await;
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
    let mut steps: Vec<StepReport> = order.iter().map(|n| decided[n].clone()).collect();
    steps.sort_by(|a, b| a.start_offset_secs.total_cmp(&b.start_offset_secs));
    let restored = ctx.restored.lock().expect("lock").clone();
    let report = build_report(
        env,
        scenario,
        opts,
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

fn skipped(st: &Step, started_at: DateTime<Utc>, why: &str) -> StepReport {
    StepReport {
        name: st.name.clone(),
        kind: st.action.kind().into(),
        source: st.action.source().map(str::to_string),
        status: StepStatus::Skipped,
        start_offset_secs: secs_between(started_at, Utc::now()),
        duration_secs: 0.0,
        backup_id: None,
        from_target: None,
        into: None,
        raw_bytes: None,
        detail: why.into(),
    }
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

/// Connection settings of a restored PostgreSQL: its URI, with the source's
/// password from the policy (never stored in the state file or the report).
fn pg_conn(ctx: &Ctx<'_>, st: &Step, source: &str) -> Result<tokio_postgres::Config, Error> {
    let uri = server_uri(ctx, st, source)?;
    let mut c: tokio_postgres::Config = uri
        .parse()
        .map_err(|e| Error::Invalid(format!("restored PostgreSQL `{uri}`: {e}")))?;
    let cfg = ctx.env.source_config(source)?;
    if let Some(p) = cfg.postgres.as_ref().and_then(|p| p.password.as_ref()) {
        let pw = p.read().map_err(|m| {
            Error::Invalid(format!("source `{source}`: cannot read the password: {m}"))
        })?;
        c.password(pw.expose());
    }
    Ok(c)
}

/// In an incident, a PostgreSQL check that cannot connect says what to do.
fn with_start_hint(ctx: &Ctx<'_>, e: Error) -> Error {
    match (ctx.opts.kind, e) {
        (RunKind::Incident, Error::Invalid(m)) if m.contains("cannot connect") => Error::Invalid(format!(
            "{m}: start PostgreSQL on the restored data directory (or pass --start-postgres), then rerun with --resume"
        )),
        (_, e) => e,
    }
}

pub(super) fn planned_backup<'p>(ctx: &'p Ctx<'_>, st: &Step) -> Result<&'p PlannedBackup, Error> {
    ctx.plan
        .steps
        .iter()
        .find(|p| p.name == st.name)
        .and_then(|p| p.backup.as_ref())
        .ok_or_else(|| Error::Invalid(format!("step `{}` has no planned backup", st.name)))
}

pub(super) fn restored_of(ctx: &Ctx<'_>, source: &str) -> Result<Restored, Error> {
    ctx.restored
        .lock()
        .expect("lock")
        .get(source)
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "source `{source}` was not restored before this check: add its restore step to `after`"
            ))
        })
}

async fn exec_action(ctx: &Ctx<'_>, st: &Step, rep: &mut StepReport) -> Result<String, Error> {
    match &st.action {
        Action::RestoreCommandSource { source } => {
            let pb = planned_backup(ctx, st)?;
            let cat = ctx.env.catalog(&pb.target).await?;
            let m = cat.find(&pb.id).await?;
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
        Action::RestoreRedis { source } => restore_redis(ctx, st, source, rep).await,
        Action::RestorePostgresPitr { source } => restore_postgres(ctx, st, source, rep).await,
        Action::RestoreMongo { source } => restore_mongo(ctx, st, source, rep).await,
        Action::VeleroRestore {
            schedule,
            namespace_mapping,
        } => restore_velero(ctx, schedule, namespace_mapping, rep).await,
        Action::RedisKeys { source, min } => {
            let uri = server_uri(ctx, st, source)?;
            let n = super::canary::redis_key_count(&uri).await?;
            if n < *min {
                return Err(Error::Invalid(format!(
                    "restored Redis of `{source}` holds {n} keys, fewer than the {min} expected"
                )));
            }
            Ok(format!("{n} keys (at least {min} expected)"))
        }
        Action::Sql { source, query, min } => {
            let conn = pg_conn(ctx, st, source)?;
            let v = super::scratch_pg::query_i64(&conn, query)
                .await
                .map_err(|e| with_start_hint(ctx, e))?;
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
            let uri = server_uri(ctx, st, source)?;
            let n = super::scratch_mongo::count(&uri, collection).await?;
            if n < *min {
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
            let out = match r.manifest.engine.as_str() {
                "command" => checks::command_recovered_point(&r.manifest),
                "redis" | "postgres" | "mongo" => {
                    let uri = server_uri(ctx, st, source)?;
                    let rec = match r.manifest.engine.as_str() {
                        "redis" => super::canary::read_redis(&uri).await?,
                        "postgres" => super::canary::read_postgres(&pg_conn(ctx, st, source)?)
                            .await
                            .map_err(|e| with_start_hint(ctx, e))?,
                        _ => super::canary::read_mongo(&uri).await?,
                    };
                    checks::CheckOutcome {
                        detail: format!(
                            "newest canary in the restored data: {} (backup {} recorded {})",
                            rec.point.to_rfc3339(),
                            r.manifest.id,
                            r.manifest.recovery_point().to_rfc3339()
                        ),
                        recovered: Some(rec),
                    }
                }
                other => {
                    return Err(Error::NotSupported(format!(
                        "reading heartbeat canaries from restored `{other}` data"
                    )))
                }
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

#[allow(clippy::too_many_arguments)]
fn build_report(
    env: &Env,
    scenario: &Scenario,
    opts: &RunOptions,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    steps: Vec<StepReport>,
    restored: &BTreeMap<String, Restored>,
    scratch_cleaned: Option<bool>,
) -> DrillReport {
    let mut failures = Vec::new();
    for s in &steps {
        match s.status {
            StepStatus::Failed => failures.push(format!("step `{}` failed: {}", s.name, s.detail)),
            StepStatus::Skipped => {
                failures.push(format!("step `{}` skipped: {}", s.name, s.detail))
            }
            _ => {}
        }
    }
    let all_ok = failures.is_empty();
    let mut rpo = Vec::new();
    for src in scenario.restored_sources() {
        let Some(r) = restored.get(&src) else {
            continue;
        };
        let rec = r.recovered.clone().unwrap_or_else(|| Recovered {
            point: r.manifest.recovery_point(),
            measured_by: "manifest".into(),
            note: Some(if r.manifest.engine == "command" {
                super::canary::COMMAND_FALLBACK_NOTE.into()
            } else {
                "the scenario has no canary_age check for this source: the RPO uses the manifest's recovery point".into()
            }),
        });
        let achieved = secs_between(rec.point, started_at);
        let target = env
            .policy
            .objectives_of(&src)
            .map(|o| o.rpo.0.as_secs_f64());
        let met = target.is_none_or(|t| achieved <= t);
        if !met {
            failures.push(format!(
                "RPO of `{src}` missed: {} achieved (recovered point {}, by {}), target {}, over by {}",
                super::report::secs(achieved),
                rec.point.to_rfc3339(),
                rec.measured_by,
                super::report::secs(target.unwrap_or(0.0)),
                super::report::secs(achieved - target.unwrap_or(0.0))
            ));
        }
        rpo.push(RpoResult {
            source: src,
            recovered_point: rec.point,
            achieved_secs: achieved,
            target_secs: target,
            met,
            measured_by: rec.measured_by,
            note: rec.note,
        });
    }
    let rto_target = scenario
        .restored_sources()
        .iter()
        .filter_map(|s| env.policy.objectives_of(s).map(|o| o.rto.0.as_secs_f64()))
        .reduce(f64::min);
    let achieved = all_ok.then(|| {
        steps
            .iter()
            .map(|s| s.start_offset_secs + s.duration_secs)
            .fold(0.0, f64::max)
    });
    let rto_met = match (achieved, rto_target) {
        (Some(a), Some(t)) => a <= t,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if let (Some(a), Some(t), false) = (achieved, rto_target, rto_met) {
        failures.push(format!(
            "RTO missed: {} achieved, target {}",
            super::report::secs(a),
            super::report::secs(t)
        ));
    }
    DrillReport {
        schema_version: REPORT_SCHEMA,
        kind: opts.kind,
        id: format!("{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), scenario.name),
        scenario: scenario.name.clone(),
        title: scenario.title.clone(),
        policy: env.policy.name.clone(),
        started_at,
        finished_at,
        passed: failures.is_empty(),
        steps,
        rto: RtoResult {
            achieved_secs: achieved,
            target_secs: rto_target,
            met: rto_met,
        },
        rpo,
        failures,
        scratch_cleaned,
        trend: None,
    }
}

use super::engines::{restore_mongo, restore_postgres, restore_redis, restore_velero, server_uri};
use super::store::with_trend;
pub use super::store::{
    prune_reports, report_prefix, report_target, run_scheduled, store_report, write_local,
};
