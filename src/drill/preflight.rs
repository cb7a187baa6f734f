//! Pre-run validation of a scenario against the policy: every step's
//! configuration and every program a drill starts are checked before
//! anything is restored, so a run cannot fail half-way for a reason known
//! up front (validate, then run).

use super::scenario::{Action, Scenario, Step};
use super::DrillError;
use super::RunKind;
use crate::error::Error;
use crate::job::Env;

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
    if let Some(want) = crate::source::kind_of_step(st.action.kind()) {
        if cfg.kind.as_str() != want {
            return Err(format!(
                "source `{source}` is a {} source, the step needs a {want} source",
                cfg.kind.as_str(),
            ));
        }
    }
    // Only drills start scratch servers; an incident restores into the endpoints.
    if kind != RunKind::Drill || !st.action.is_restore() {
        return Ok(());
    }
    let engine = cfg.engine(source).map_err(|e| e.to_string())?;
    let argv = env
        .policy
        .drills
        .clone()
        .unwrap_or_default()
        .mongo_scratch_argv;
    engine.scratch_programs(&argv)
}
