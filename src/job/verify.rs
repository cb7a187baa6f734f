//! Verify: stream a backup back, check size and SHA-256, decrypt and decompress to nowhere.

use std::time::Instant;

use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Ends, StreamError};

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
    /// The kind of what failed (`damaged` for bad data; others when the check could not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
}

impl VerifyReport {
    /// A report of a backup whose check could not run, carrying the error.
    pub fn failed(id: &str, source: &str, error: String, kind: ErrorKind) -> Self {
        VerifyReport {
            id: id.to_string(),
            source: source.to_string(),
            ok: false,
            stored_bytes: 0,
            raw_bytes: 0,
            duration_secs: 0.0,
            error: Some(error),
            error_kind: Some(kind),
        }
    }
}

/// Verifies one backup. `Ok` with `ok: false` when the data is bad (truncated,
/// altered, corrupt); `Err` when verification could not run (no key file, a
/// wrong key, store unreachable).
pub async fn verify(env: &Env, catalog: &Catalog, m: &Manifest) -> Result<VerifyReport> {
    let start = Instant::now();
    let decoded = match env.open_backup(catalog, m).await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::Damaged => {
            return Ok(damaged(m, e.to_string(), start));
        }
        Err(e) => return Err(e),
    };
    let input = Env::download_label(catalog, m);
    let ended = decoded
        .finish(
            Ends::new(&input, "the verifier"),
            None,
            |mut reader| async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await },
        )
        .await;
    let report = match ended {
        Ok((s, _)) => VerifyReport {
            id: m.id.clone(),
            source: m.source.clone(),
            ok: true,
            stored_bytes: s.stored_bytes,
            raw_bytes: s.raw_bytes,
            duration_secs: start.elapsed().as_secs_f64(),
            error: None,
            error_kind: None,
        },
        Err(StreamError::Pipeline(e)) => {
            let e = Error::Pipeline(e);
            // Only damage is a finding; a wrong key or a stalled server means the check did not run.
            if e.kind() != ErrorKind::Damaged {
                return Err(e);
            }
            damaged(m, e.to_string(), start)
        }
        Err(StreamError::Sink(e)) => {
            return Err(Error::LocalIo {
                what: "discarding the verified stream",
                path: "/dev/null".into(),
                source: e,
            })
        }
    };
    tracing::info!(event = "verify_finished", id = %m.id, ok = report.ok, error = report.error.as_deref().unwrap_or(""));
    Ok(report)
}

fn damaged(m: &Manifest, error: String, start: Instant) -> VerifyReport {
    let mut r = VerifyReport::failed(&m.id, &m.source, error, ErrorKind::Damaged);
    r.duration_secs = start.elapsed().as_secs_f64();
    r
}
