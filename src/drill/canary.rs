//! Heartbeat canaries: a small timestamped record gsdr writes into each source
//! on a schedule, so that after a restore the newest canary found in the
//! restored data is the point actually recovered (the RPO is measured from
//! data, not from what a manifest claims).
//!
//! Each engine writes and reads its canary itself
//! ([`crate::source::Engine::canary_write`], `canary_read`, in
//! `src/source/<engine>/canary.rs`); an engine without canaries (an opaque
//! stream) makes the drill fall back to the manifest's recovery point and say so.

use chrono::{DateTime, Utc};

/// How a recovered point was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recovered {
    /// The newest point recovered.
    pub point: DateTime<Utc>,
    /// `canary` or `manifest`.
    pub measured_by: String,
    /// Why the manifest was used, if it was.
    pub note: Option<String>,
}

/// Writes a heartbeat canary into the source named `source` now; returns its time.
pub async fn write(env: &crate::job::Env, source: &str) -> Result<DateTime<Utc>, crate::Error> {
    let cfg = env.source_config(source)?;
    Ok(cfg.engine(source)?.canary_write().await?)
}

/// A point measured by a canary.
pub(super) fn by_canary(point: DateTime<Utc>) -> Recovered {
    Recovered {
        point,
        measured_by: "canary".into(),
        note: None,
    }
}
