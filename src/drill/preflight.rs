//! Pre-run validation of a scenario against the policy: every step's
//! configuration and every program a drill starts are checked before
//! anything is restored, so a run cannot fail half-way for a reason known
//! up front (validate, then run).

use std::path::{Path, PathBuf};

use super::scenario::{Action, Scenario, Step};
use super::DrillError;
use super::RunKind;
use crate::error::Error;
use crate::job::Env;
use crate::policy::Engine;

/// Checks every step of `scenario`: its source exists and is of the engine
/// the step needs, a Velero step has a `[velero]` section, and (drills) the
/// scratch server programs are found.
pub fn check(env: &Env, scenario: &Scenario, kind: RunKind) -> Result<(), DrillError> {
    for st in &scenario.steps {
        check_step(env, st, kind).map_err(|message| {
            DrillError::Gsdr(Error::Invalid(format!(
                "scenario `{}`, step `{}` ({}): {message}",
                scenario.name,
                st.name,
                st.action.kind()
            )))
        })?;
    }
    Ok(())
}

/// The engine a step's source must be, if the step is tied to one.
fn engine_of(action: &Action) -> Option<Engine> {
    match action {
        Action::RestoreCommandSource { .. } => Some(Engine::Command),
        Action::RestorePostgresPitr { .. } | Action::Sql { .. } => Some(Engine::Postgres),
        Action::RestoreMongo { .. } | Action::MongoCount { .. } => Some(Engine::Mongo),
        Action::RestoreRedis { .. } | Action::RedisKeys { .. } => Some(Engine::Redis),
        Action::VeleroRestore { .. } | Action::CanaryAge { .. } | Action::Sha256 { .. } => None,
    }
}

fn check_step(env: &Env, st: &Step, kind: RunKind) -> Result<(), String> {
    if let Action::VeleroRestore { .. } = st.action {
        if env.policy.velero.is_none() {
            return Err("the policy has no [velero] section; add one (see docs/velero.md) or remove the step".into());
        }
        return Ok(());
    }
    let Some(source) = st.action.source() else {
        return Ok(());
    };
    let Some(cfg) = env.policy.sources.get(source) else {
        let known: Vec<&str> = env.policy.sources.keys().map(String::as_str).collect();
        return Err(format!(
            "there is no source `{source}` in the policy (its sources: {})",
            known.join(", ")
        ));
    };
    if let Some(want) = engine_of(&st.action) {
        if cfg.kind != want {
            return Err(format!(
                "source `{source}` is a {} source, the step needs a {} source",
                cfg.kind.as_str(),
                want.as_str()
            ));
        }
    }
    // Only drills start scratch servers; an incident restores into the endpoints.
    if kind != RunKind::Drill {
        return Ok(());
    }
    match &st.action {
        Action::RestorePostgresPitr { .. } => {
            let pg = cfg
                .postgres
                .as_ref()
                .ok_or_else(|| format!("source `{source}` has no [sources.{source}.postgres]"))?;
            for prog in ["pg_ctl", "postgres"] {
                let p = pg.program(prog);
                if find_program(&p).is_none() {
                    return Err(format!(
                        "`{}` (for the scratch PostgreSQL) is not found; set sources.{source}.postgres.pg_bin to the folder of the PostgreSQL programs",
                        p.display()
                    ));
                }
            }
        }
        Action::RestoreRedis { .. } => {
            let bin = cfg
                .redis
                .as_ref()
                .map(|r| r.redis_server.clone())
                .unwrap_or_else(|| "redis-server".into());
            if find_program(Path::new(&bin)).is_none() {
                return Err(format!(
                    "`{bin}` (for the scratch Redis) is not found; install redis-server or set sources.{source}.redis.redis_server"
                ));
            }
        }
        Action::RestoreMongo { .. } => {
            let argv = env
                .policy
                .drills
                .clone()
                .unwrap_or_default()
                .mongo_scratch_argv;
            let Some(prog) = argv.first() else {
                return Err("drills.mongo_scratch_argv is empty: name the server program".into());
            };
            if find_program(Path::new(prog)).is_none() {
                return Err(format!(
                    "`{prog}` (drills.mongo_scratch_argv[0], the scratch MongoDB) is not found on PATH; install it or set drills.mongo_scratch_argv"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `prog` as the OS would run it: a path with a `/` as is, a bare name searched on `PATH`.
fn find_program(prog: &Path) -> Option<PathBuf> {
    if prog.components().count() > 1 {
        return is_executable(prog).then(|| prog.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
