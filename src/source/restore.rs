//! What every engine's restore shares: the host that lends it the backup
//! (the job layer implements [`RestoreHost`], so engines never see the job
//! environment or the policy), what a restore did ([`RestoreOutcome`]), and
//! the raw stream to a file, every engine's escape hatch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::error::{EngineError, EngineResult};
use crate::catalog::{Catalog, Manifest};
use crate::pipeline::keys::Identities;
use crate::pipeline::{self, DecodeExpect, Decoded, Ends, PipelineError, StreamError};
use crate::stream::progress::{counting, Progress};

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    /// Backup id restored.
    pub id: String,
    /// Source.
    pub source: String,
    /// Where it went.
    pub destination: String,
    /// Raw bytes written.
    pub raw_bytes: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// Engine-specific details.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// How a restored server calls gsdr back (PostgreSQL's `restore_command`
/// runs `gsdr wal-fetch`): the pieces of the running invocation it repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsdrCall {
    /// The policy file (`--policy`).
    pub policy_path: PathBuf,
    /// The identity file the operator passed (`--identity`), if any.
    pub identity_file: Option<PathBuf>,
    /// The source's primary target, if it has one.
    pub primary_target: Option<String>,
    /// `--allow-unsigned` was given: `wal-fetch` accepts unsigned WAL sidecars too.
    pub allow_unsigned: bool,
}

/// What the layer running a restore lends the engine: the backup's bytes,
/// the keys, and how to call gsdr back. Implemented by the job environment.
#[async_trait]
pub trait RestoreHost: Send + Sync {
    /// The identities that open backups; an error says how to provide them.
    fn identities(&self) -> EngineResult<Arc<Identities>>;

    /// How long a stream may make no progress before it fails.
    fn stall_timeout(&self) -> Duration;

    /// How a restored server calls gsdr back for `source`; an error when the
    /// policy has no source `source`.
    fn gsdr_call(&self, source: &str) -> EngineResult<GsdrCall>;

    /// Streams a backup's raw bytes back out of `catalog`'s store, checking
    /// size and SHA-256 against the manifest on the way.
    async fn open_backup(&self, catalog: &Catalog, m: &Manifest) -> EngineResult<Decoded> {
        open_backup(catalog, m, self.identities()?, self.stall_timeout()).await
    }
}

/// Streams a backup's raw bytes back out of `catalog`'s store with `ids`,
/// checking size and SHA-256 against the manifest on the way.
pub async fn open_backup(
    catalog: &Catalog,
    m: &Manifest,
    ids: Arc<Identities>,
    stall_timeout: Duration,
) -> EngineResult<Decoded> {
    // A locked version chosen by the ransomware view: its size was matched
    // against the manifest when it was chosen.
    if let Some(v) = &m.data_version {
        let stored = catalog.store().get_version(&m.data_key, v).await?;
        return Ok(decode_checked(stored, m, ids, stall_timeout));
    }
    // A cut object is caught before a single byte is restored.
    match catalog.store().head(&m.data_key).await? {
        Some(o) if o.size < m.stored_bytes => {
            return Err(PipelineError::Truncated {
                read: o.size,
                expected: m.stored_bytes,
            }
            .into())
        }
        Some(_) => {}
        None => {
            return Err(crate::storage::StorageError::NotFound {
                store: catalog.store().describe(),
                key: m.data_key.clone(),
            }
            .into())
        }
    }
    let stored = catalog.store().get_stream(&m.data_key).await?;
    Ok(decode_checked(stored, m, ids, stall_timeout))
}

/// The decoder of `stored`, checking size and digests against `m`.
fn decode_checked(
    stored: crate::stream::BoxRead,
    m: &Manifest,
    ids: Arc<Identities>,
    stall_timeout: Duration,
) -> Decoded {
    pipeline::decode(
        stored,
        ids,
        DecodeExpect {
            stored_bytes: Some(m.stored_bytes),
            stored_sha256: Some(m.stored_sha256.clone()),
            raw_sha256: Some(m.raw_sha256.clone()),
            recipients: m.recipients.clone(),
        },
    )
    .stall_after(stall_timeout)
}

/// How a backup's download is named in stall and failure messages.
pub fn download_label(catalog: &Catalog, m: &Manifest) -> String {
    format!(
        "the download of `{}` from {}",
        m.data_key,
        catalog.store().describe()
    )
}

/// Writes the raw stream of `m` to `path` (`-` for stdout). A file is written
/// under a temporary name and renamed only once every check passed, so a
/// failed restore never leaves a file that looks complete.
pub async fn restore_raw_to_file(
    host: &dyn RestoreHost,
    catalog: &Catalog,
    m: &Manifest,
    path: &Path,
    replace: bool,
    progress: &dyn Progress,
) -> EngineResult<RestoreOutcome> {
    let start = Instant::now();
    let to_stdout = path == Path::new("-");
    if !to_stdout && !replace && path.exists() {
        return Err(EngineError::Invalid(format!(
            "`{}` exists; refusing to overwrite it (pass --force to replace it)",
            path.display()
        )));
    }
    let decoded = host.open_backup(catalog, m).await?;
    progress.start(&format!("restore {}", m.id), Some(m.raw_bytes));
    let tmp: Option<PathBuf> = (!to_stdout).then(|| partial_name(path));
    let input = download_label(catalog, m);
    let output = format!("writing `{}`", path.display());
    let ended = decoded
        .finish(Ends::new(&input, &output), None, |reader| async {
            let mut reader = counting(reader, progress);
            if let Some(tmp) = &tmp {
                let mut f = tokio::fs::File::create(tmp).await?;
                tokio::io::copy(&mut reader, &mut f).await?;
                f.sync_all().await?;
            } else {
                let mut out = tokio::io::stdout();
                tokio::io::copy(&mut reader, &mut out).await?;
                out.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
    progress.finish();
    let outcome = match ended {
        Ok((s, ())) => Ok(s),
        Err(StreamError::Pipeline(e)) => Err(EngineError::Pipeline(e)),
        Err(StreamError::Sink(e)) => Err(EngineError::LocalIo {
            what: "writing the restored data to",
            path: path.to_path_buf(),
            source: e,
        }),
    };
    match outcome {
        Ok(s) => {
            if let Some(tmp) = &tmp {
                tokio::fs::rename(tmp, path)
                    .await
                    .map_err(|e| EngineError::LocalIo {
                        what: "renaming the restored file into place at",
                        path: path.to_path_buf(),
                        source: e,
                    })?;
            }
            Ok(RestoreOutcome {
                id: m.id.clone(),
                source: m.source.clone(),
                destination: path.display().to_string(),
                raw_bytes: s.raw_bytes,
                duration_secs: start.elapsed().as_secs_f64(),
                details: serde_json::Value::Null,
            })
        }
        Err(e) => {
            if let Some(tmp) = &tmp {
                let _ = tokio::fs::remove_file(tmp).await;
            }
            Err(e)
        }
    }
}

fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    path.with_file_name(format!(".{name}.gsdr-partial"))
}
