//! `gsdr daemon`: run every source on its schedule until SIGTERM, with metrics and health endpoints.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use gsdr::metrics::server::{self, Health};
use gsdr::scheduler::{self, runner, OutcomeHook, Scheduler, SystemClock};

use super::{Ctx, Outcome};

/// Arguments of `gsdr daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen here for /metrics, /healthz, /readyz instead of `daemon.metrics_addr`.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub(crate) fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(event = "signal", signal = "SIGTERM"),
            _ = int.recv() => tracing::info!(event = "signal", signal = "SIGINT"),
        }
        t.cancel();
    });
    Ok(token)
}

/// The webhook notifier of the policy, if one is configured.
pub(crate) fn hooks(env: &gsdr::job::Env) -> anyhow::Result<Vec<Arc<dyn OutcomeHook>>> {
    let d = &env.policy.daemon;
    let Some(r) = &d.webhook_url else {
        return Ok(Vec::new());
    };
    let url = r
        .read()
        .map_err(|e| anyhow::anyhow!("daemon.webhook_url: {e}"))?;
    let n = Arc::new(gsdr::notify::Notifier::new(
        url,
        &env.policy.name,
        d.notify_min_interval.0,
    ));
    Ok(vec![Arc::new(n)])
}

/// Runs `gsdr daemon`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = Arc::new(ctx.env()?);
    let settings = scheduler::Settings::from_policy(&env.policy.daemon)?;
    let shutdown = shutdown_on_signal()?;
    let addr = match args.metrics_addr {
        Some(a) => a,
        None => env.policy.daemon.metrics_addr.parse()?,
    };
    let health = Health::default();
    let server_stop = CancellationToken::new();
    let (bound, server) = server::serve(addr, health.clone(), server_stop.clone()).await?;
    eprintln!("gsdr daemon: metrics on http://{bound}/metrics");
    runner::publish_objectives(&env, settings.offset);
    let plans = runner::plans(&env).await?;
    let job_runner = Arc::new(runner::JobRunner::new(env.clone()));
    // Catch-up sweep on start, then every `replicate_every`: whatever the
    // off-site copy lacks (failed copies are retried), and the safety metrics.
    let sweeper = {
        let (runner, env, stop) = (job_runner.clone(), env.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                for s in env.policy.sources.keys() {
                    tokio::select! {
                        _ = runner.replicate_source(s) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(env.policy.daemon.replicate_every.0) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    // The end of the contiguous WAL chain of each postgres source, on start and every
    // `wal_status_every`: wal-push runs in PostgreSQL's archiver, not here.
    let wal_watch = {
        let (runner, env, stop) = (job_runner.clone(), env.clone(), shutdown.clone());
        let pg: Vec<String> = env
            .policy
            .sources
            .iter()
            .filter(|(_, c)| c.kind == gsdr::policy::Engine::Postgres)
            .map(|(n, _)| n.clone())
            .collect();
        tokio::spawn(async move {
            if pg.is_empty() {
                return;
            }
            loop {
                for s in &pg {
                    tokio::select! {
                        _ = runner.refresh_wal_status(s) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(env.policy.daemon.wal_status_every.0) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    // Garbage collection on start, then every `gc_every`.
    let gc = tokio::spawn(scheduler::gc::run_every(env.clone(), shutdown.clone()));
    let sched = Scheduler::new(
        plans,
        job_runner,
        Arc::new(SystemClock),
        settings,
        hooks(&env)?,
    );
    health.set_ready(true);
    let stop = shutdown.clone();
    let watch = {
        let health = health.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            health.set_ready(false);
        })
    };
    let summary = sched.run(shutdown).await;
    watch.abort();
    let _ = sweeper.await;
    let _ = wal_watch.await;
    let _ = gc.await;
    server_stop.cancel();
    let _ = server.await;
    if summary.aborted_in_flight {
        anyhow::bail!("running jobs were aborted at the end of the grace period; nothing partial was committed");
    }
    Ok(Outcome::Ok)
}
