//! Verify: stream a backup back, check size and SHA-256, decrypt and decompress to nowhere.

use std::time::Instant;

use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::PipelineError;

/// The outcome of a verify.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Backup id.
    pub id: String,
    /// Source.
    pub source: String,
    /// Every check passed.
    pub ok: bool,
    /// Stored bytes read.
    pub stored_bytes: u64,
    /// Raw bytes produced.
    pub raw_bytes: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// Verifies one backup. `Ok` with `ok: false` when the data is bad; `Err` when
/// verification could not run (no key file, store unreachable).
pub async fn verify(env: &Env, catalog: &Catalog, m: &Manifest) -> Result<VerifyReport> {
    let start = Instant::now();
    let decoded = env.open_backup(catalog, m).await?;
    let mut reader = decoded.reader;
    let copied = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
    let stats = decoded.stats.await.map_err(|e| PipelineError::Io {
        stage: "pipeline thread",
        source: std::io::Error::other(e),
    })?;
    let mut report = VerifyReport {
        id: m.id.clone(),
        source: m.source.clone(),
        ok: false,
        stored_bytes: 0,
        raw_bytes: 0,
        duration_secs: 0.0,
        error: None,
    };
    match (copied, stats) {
        (Ok(_), Ok(s)) => {
            report.ok = true;
            report.stored_bytes = s.stored_bytes;
            report.raw_bytes = s.raw_bytes;
        }
        (_, Err(e @ PipelineError::Key(_))) => return Err(Error::Pipeline(e)),
        (_, Err(e)) => report.error = Some(e.to_string()),
        (Err(e), Ok(_)) => report.error = Some(e.to_string()),
    }
    report.duration_secs = start.elapsed().as_secs_f64();
    tracing::info!(event = "verify_finished", id = %m.id, ok = report.ok, error = report.error.as_deref().unwrap_or(""));
    Ok(report)
}
