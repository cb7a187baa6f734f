//! What every step of a run shares: the run's inputs, its plan, what was
//! restored so far and the scratch servers to stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub(super) use super::incident::Restored;
use super::plan::{Plan, PlannedBackup, RunOptions};
use super::scenario::{Scenario, Step};
use crate::error::Error;
use crate::job::{Env, Progress};

/// The context of one run, shared by its steps.
pub(super) struct Ctx<'a> {
    pub(super) env: &'a Env,
    pub(super) scenario: &'a Scenario,
    pub(super) opts: &'a RunOptions,
    pub(super) plan: &'a Plan,
    pub(super) started_at: DateTime<Utc>,
    pub(super) scratch: Option<PathBuf>,
    pub(super) restored: Mutex<BTreeMap<String, Restored>>,
    /// Scratch servers started by restore steps, of every engine; stopped at the end of the run.
    pub(super) servers: Mutex<Vec<Box<dyn crate::source::Scratch>>>,
    /// Kubernetes namespaces a Velero restore step created; deleted at the end.
    pub(super) scratch_namespaces: Mutex<Vec<String>>,
    pub(super) progress: &'a dyn Progress,
}

/// The plan's backup for restore step `st`.
pub(super) fn planned_backup<'p>(ctx: &'p Ctx<'_>, st: &Step) -> Result<&'p PlannedBackup, Error> {
    ctx.plan
        .steps
        .iter()
        .find(|p| p.name == st.name)
        .and_then(|p| p.backup.as_ref())
        .ok_or_else(|| Error::Invalid(format!("step `{}` has no planned backup", st.name)))
}

/// What an earlier step restored of `source`.
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
