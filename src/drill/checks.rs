//! Checks: what a check step looks at in the restored data.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::canary::Recovered;
use crate::catalog::Manifest;
use crate::error::{Error, Result};

/// What a passing check found.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// In words, with the measured values.
    pub detail: String,
    /// A recovered point, for canary checks.
    pub recovered: Option<Recovered>,
}

/// SHA-256 of a file, streamed in 1 MiB reads.
pub async fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let io = |e| Error::LocalIo {
        what: "reading the restored file",
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).await.map_err(io)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The restored file's SHA-256 equals the manifest's raw SHA-256.
pub async fn sha256(path: &Path, m: &Manifest) -> Result<CheckOutcome> {
    let (got, n) = sha256_file(path).await?;
    if got != m.raw_sha256 {
        return Err(Error::Invalid(format!(
            "restored data of `{}` at {} has SHA-256 {got} ({n} bytes) but backup {} recorded {} ({} bytes)",
            m.source,
            path.display(),
            m.id,
            m.raw_sha256,
            m.raw_bytes
        )));
    }
    Ok(CheckOutcome {
        detail: format!(
            "SHA-256 {}… matches backup {} ({n} bytes)",
            &got[..16],
            m.id
        ),
        recovered: None,
    })
}

/// Recovered point of a source whose engine holds no canary: the
/// manifest's, with the engine's reason (`note`).
pub fn manifest_recovered_point(m: &Manifest, note: &str) -> CheckOutcome {
    let point = m.recovery_point();
    CheckOutcome {
        detail: format!(
            "no canary possible ({} source): recovered point {} from manifest {}",
            m.engine,
            point.to_rfc3339(),
            m.id
        ),
        recovered: Some(Recovered {
            point,
            measured_by: "manifest".into(),
            note: Some(note.into()),
        }),
    }
}
