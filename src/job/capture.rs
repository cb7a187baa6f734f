//! Running a source's continuous capture (`source::capture`): what the daemon's
//! `capture/<source>` job and `gsdr capture` do.

use tokio_util::sync::CancellationToken;

use super::Env;
use crate::error::{Error, Result};
use crate::source::capture::{CaptureCtx, CaptureReport};

/// The sources whose settings enable a continuous capture, in policy order.
pub fn captured_sources(env: &Env) -> Vec<String> {
    env.policy
        .sources
        .iter()
        .filter(|(n, c)| c.engine(n).is_ok_and(|e| e.capture().is_some()))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Runs `source`'s capture until `cancel` fires (then `Ok`) or it fails.
pub async fn run(env: &Env, source: &str, cancel: CancellationToken) -> Result<CaptureReport> {
    let engine = env.source_config(source)?.engine(source)?;
    let Some(capture) = engine.capture() else {
        return Err(Error::Invalid(format!(
            "source `{source}` has no continuous capture: enable it in [sources.{source}.{}] (see README, \"Continuous capture\")",
            engine.kind()
        )));
    };
    let primary_name = env.primary_target_name(source)?;
    let primary = env.store(&primary_name).await?;
    let mut offsite = Vec::new();
    if let Some(o) = env.policy.offsite_of(source) {
        offsite.push((o.to_string(), env.store(o).await?));
    }
    let ctx = CaptureCtx {
        source: source.to_string(),
        primary: (primary_name, primary),
        offsite,
        encode: env.encode_options()?,
        cancel,
    };
    tracing::info!(event = "capture_started", source);
    let r = capture.run(ctx).await;
    match &r {
        Ok(rep) => {
            tracing::info!(event = "capture_stopped", source, objects = rep.objects, bytes = rep.bytes, detail = %rep.detail)
        }
        Err(e) => tracing::warn!(event = "capture_failed", source, error = %e),
    }
    Ok(r?)
}
