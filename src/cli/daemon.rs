//! `gsdr daemon`: run every job of the policy on its schedule until SIGTERM, with metrics and health endpoints.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use gsdr::metrics::server::{self, Health};
use gsdr::scheduler::{self, OutcomeHook, SystemClock};

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

/// The webhook notifier of the policy (its format and URL), if one is configured.
pub(crate) fn hooks(env: &gsdr::job::Env) -> anyhow::Result<Vec<Arc<dyn OutcomeHook>>> {
    let d = &env.policy.daemon;
    if d.webhook_url.is_none() {
        return Ok(Vec::new());
    }
    let sender = gsdr::notify::Sender::from_policy(&env.policy)?;
    let n = Arc::new(gsdr::notify::Notifier::with_sender(
        sender,
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
    let watch = {
        let (health, stop) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            health.set_ready(false);
        })
    };
    let ready = health.clone();
    let summary = gsdr::daemon::run(
        env.clone(),
        settings,
        Arc::new(SystemClock),
        hooks(&env)?,
        shutdown,
        move || ready.set_ready(true),
    )
    .await;
    watch.abort();
    server_stop.cancel();
    let _ = server.await;
    if summary?.aborted_in_flight {
        anyhow::bail!("running jobs were aborted at the end of the grace period; nothing partial was committed");
    }
    Ok(Outcome::Ok)
}
