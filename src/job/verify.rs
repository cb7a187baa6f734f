//! Verify: stream a backup back, check size and SHA-256, decrypt and decompress to nowhere.

use std::time::Instant;

use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::{Ends, PipelineError, StreamError};

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
    let input = Env::download_label(catalog, m);
    let ended = decoded
        .finish(
            Ends {
                input: &input,
                output: "the verifier",
            },
            None,
            |mut reader| async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await },
        )
        .await;
    let mut report = VerifyReport {
        id: m.id.clone(),
        source: m.source.clone(),
        ok: false,
        stored_bytes: 0,
        raw_bytes: 0,
        duration_secs: 0.0,
        error: None,
    };
    match ended {
        Ok((s, _)) => {
            report.ok = true;
            report.stored_bytes = s.stored_bytes;
            report.raw_bytes = s.raw_bytes;
        }
        Err(StreamError::Pipeline(e @ PipelineError::Key(_))) => return Err(Error::Pipeline(e)),
        Err(e) => report.error = Some(e.to_string()),
    }
    report.duration_secs = start.elapsed().as_secs_f64();
    tracing::info!(event = "verify_finished", id = %m.id, ok = report.ok, error = report.error.as_deref().unwrap_or(""));
    Ok(report)
}
