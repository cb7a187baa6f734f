//! The long-running daemon: every job of the policy on its trigger until
//! shutdown (`gsdr daemon` wires the CLI, the signals and the HTTP server).

pub mod alloc;
pub mod gc;
pub mod runner;
pub mod status;
pub mod watch;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::job::Env;
use crate::scheduler::{Clock, OutcomeHook, Scheduler, Settings, Summary};

/// Runs every job of `env`'s policy until `shutdown`, then lets running jobs
/// finish within the grace period. Refuses to start when a target lacks a
/// capability the policy needs ([`Env::check_capabilities`]). `on_started` is told once the jobs are
/// planned (readiness).
pub async fn run(
    env: Arc<Env>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    hooks: Vec<Arc<dyn OutcomeHook>>,
    shutdown: CancellationToken,
    on_started: impl FnOnce(),
) -> Result<Summary> {
    runner::publish_objectives(&env, settings.zone);
    // A store that ignores `If-Match` would hand one lease to two replicas:
    // refuse up front what the targets cannot serve (docs/s3-compat.md).
    env.check_capabilities(true).await?;
    let plans = runner::plans(&env).await?;
    let job_runner = Arc::new(runner::JobRunner::new(env.clone()));
    let sched = Scheduler::new(plans, job_runner, clock, settings, hooks);
    on_started();
    Ok(sched.run(shutdown).await)
}
