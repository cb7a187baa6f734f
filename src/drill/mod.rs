//! DR drills and incident restores that measure RTO and RPO against the policy's objectives.
//!
//! - [`scenario`]: the `runbooks/*.toml` files (steps, order, parallelism) and
//!   the Markdown runbooks generated from them.
//! - [`runner`]: runs a scenario — restores into scratch targets (drill) or
//!   the real endpoints (incident), runs the checks, times every step — and
//!   wires the private parts below, lowest first:
//!   - `text`, `series`: words and numbers of the reports; the trend's data.
//!   - `verdict`: RPO/RTO achieved against the objectives, the report's failures.
//!   - `incident`: the state file, so a failed incident resumes without redoing finished steps.
//!   - `plan`: which backup each restore uses, from where, into where (`--plan`).
//!   - `scratch`: the scratch directory and servers of a drill, cleaned up also on failure.
//!   - `ctx`: what every step of a run shares.
//!   - `steps`: which step runs when (order, parallelism, skips).
//!   - `scheduled`: [`run_scheduled`], the daemon's entry point.
//! - [`checks`] and [`canary`]: what a check looks at; heartbeat canaries give
//!   the recovered point of each source.
//! - `engines` (private): the engines' restore steps into scratch servers
//!   (each engine's own, [`crate::source::Scratch`]) or real endpoints.
//! - `preflight` (private): checks every step against the policy (sources and
//!   their engines, `[velero]`, scratch server programs) before anything runs.
//! - `store` (private, re-exported from [`runner`]): where reports go, pruning.
//! - [`report`]: the report (JSON, Markdown, self-contained HTML with an SVG
//!   timeline), stored under `<prefix>/drills/<stamp>/<scenario>/`.
//! - [`trend`]: the last drills' RTO/RPO and a projection of the RTO from data growth.
//!
//! Definitions: **RPO achieved** = run start − newest point actually recovered
//! (the newest canary found in the restored data; the manifest's recovery point
//! where no canary can exist, and the report says so). **RTO achieved** = run
//! start → every step passed (all restored services verified).

pub mod canary;
pub mod checks;
mod ctx;
mod engines;
mod incident;
mod plan;
mod preflight;
pub mod report;
pub mod runner;
pub mod scenario;
mod scheduled;
mod scratch;
mod series;
mod steps;
mod store;
mod text;
pub mod trend;
mod verdict;

use std::path::PathBuf;

pub use report::{DrillReport, RunKind};
pub use runner::{plan, run, Plan, RunOptions};
pub use scenario::{Action, BackupCopy, Scenario, Step};
pub use scheduled::run_scheduled;

/// Errors of drills and incident restores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrillError {
    /// A scenario file is invalid.
    #[error("scenario {}: {message}", file.display())]
    Scenario {
        /// The file.
        file: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The state file of an incident run is unreadable or for another scenario.
    #[error("incident state file {}: {message}", file.display())]
    State {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A gsdr operation failed.
    #[error(transparent)]
    Gsdr(#[from] crate::Error),
}

impl From<crate::catalog::CatalogError> for DrillError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        DrillError::Gsdr(e.into())
    }
}

impl From<crate::storage::StorageError> for DrillError {
    fn from(e: crate::storage::StorageError) -> Self {
        DrillError::Gsdr(e.into())
    }
}
