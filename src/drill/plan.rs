//! The plan of a run: which backup each restore step uses, from which
//! target, into where, and the RPO it implies — made once, before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::RunKind;
use super::scenario::{BackupCopy, Scenario};
use super::verdict::secs_between;
use super::DrillError;
use crate::catalog::Manifest;
use crate::error::Error;
use crate::job::Env;

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

/// What restoring `m` into the incident endpoint `endpoint` destroys,
/// through the backup's engine: a file is overwritten once the restored
/// stream passed every check; a server or directory as the engine says.
async fn overwrite_of(env: &Env, m: &Manifest, endpoint: &str) -> Option<crate::source::Overwrite> {
    use crate::source::{Overwrite, RestoreSpec, RestoreTarget};
    let engine = crate::job::engine_for(env, m).ok()?;
    let spec = RestoreSpec {
        replace: true,
        ..RestoreSpec::new(engine.endpoint_target(endpoint))
    };
    if let RestoreTarget::File(_) = spec.target {
        return Some(match std::fs::metadata(endpoint) {
            Ok(md) => Overwrite::destroys(format!(
                "overwrites {endpoint} ({} bytes), once the restored stream passed every check",
                crate::source::thousands(md.len())
            )),
            Err(_) => {
                Overwrite::nothing(format!("{endpoint} does not exist: nothing is overwritten"))
            }
        });
    }
    engine.describe_overwrite(m, &spec).await
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
    /// The locked version of the data object restored, on a versioned
    /// bucket (the current version may be an attacker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_version: Option<String>,
    /// The manifest chosen, so the steps restore exactly it (a locked
    /// version is not what a fresh listing returns). Not kept in the
    /// incident state: a resumed run reads the manifest again.
    #[serde(skip)]
    pub manifest: Option<Box<Manifest>>,
}

impl PlannedBackup {
    /// The manifest the plan chose (read again from `cat` after a resume).
    pub async fn manifest_in(&self, cat: &crate::catalog::Catalog) -> Result<Manifest, Error> {
        match &self.manifest {
            Some(m) => Ok((**m).clone()),
            None => Ok(cat.find(&self.id).await?),
        }
    }
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
                    newest_locked(
                        &cat,
                        &scenario.name,
                        source,
                        &target,
                        target_time,
                        now,
                        |m| env.authenticate(m).is_ok(),
                    )
                    .await?
                } else {
                    (cat.newest_before(source, None, target_time).await?, None, 0)
                };
                // A restore of an engine with a log archive (PostgreSQL) goes on
                // past its backup to the end of the contiguous log there (never
                // past a hole), up to the target time.
                let engine = crate::job::engine_for(env, &m)?;
                let reaches = match engine.log_archive() {
                    Some(log) => log
                        .reaches(cat.store(), &m)
                        .await
                        .map_err(Error::from_log)?,
                    None => None,
                }
                .unwrap_or(m.recovery_point());
                let reaches = target_time
                    .map_or(reaches, |t| reaches.min(t))
                    .max(m.recovery_point());
                if let (RunKind::Incident, Some(ep)) = (opts.kind, opts.endpoints.get(source)) {
                    overwrites = overwrite_of(env, &m, ep).await;
                }
                if opts.kind == RunKind::Incident && engine.restore_keeps_archiving() {
                    archiving = Some(archiving_words(source, opts.keep_archiving));
                }
                backup = Some(PlannedBackup {
                    object_lock,
                    skipped_unlocked,
                    data_version: m.data_version.clone(),
                    manifest: Some(Box::new(m.clone())),
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
                        // Never the password an endpoint may hold.
                        opts.endpoints
                            .get(source)
                            .map(|e| crate::secret::strip_uri_password(e))
                            .unwrap_or_else(|| {
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
    accept: impl Fn(&Manifest) -> bool,
) -> Result<(Manifest, Option<crate::storage::ObjectLock>, usize), DrillError> {
    // A versioned bucket: the locked versions, whatever was written or
    // deleted over them since (the restore then reads those versions).
    if let Some(mut all) = cat.locked_backups(source, now, accept).await? {
        all.retain(|b| before.is_none_or(|t| b.manifest.recovery_point() <= t));
        let total = all.len();
        for (i, b) in all.into_iter().rev().enumerate() {
            if let Some(lock) = b.lock {
                if i > 0 {
                    tracing::warn!(event = "drill_unlocked_backups_skipped", source, target, skipped = i, used = %b.manifest.id);
                }
                return Ok((b.manifest, Some(lock), i));
            }
        }
        return Err(none_locked(scenario, source, target, total));
    }
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
    Err(none_locked(scenario, source, target, candidates.len()))
}

fn none_locked(scenario: &str, source: &str, target: &str, n: usize) -> DrillError {
    DrillError::Gsdr(Error::Invalid(format!(
        "scenario `{scenario}` restores only object-locked backups, but none of the {n} backups of source `{source}` on target `{target}` is locked: enable `object_lock` in [targets.{target}.lifecycle] and run `gsdr storage init` (new backups are then locked)"
    )))
}
