//! Restore of a raw stream to a file (every engine's escape hatch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::progress::{Counting, Progress};
use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::{Ends, StreamError};

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

/// Restores `m` as `req` asks, dispatching on the backup's engine.
pub async fn restore(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    req: &crate::source::RestoreRequest,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    // Every engine's raw stream can be written to a file: the operator's escape hatch.
    if let Some(path) = &req.to_file {
        return restore_raw_to_file(env, catalog, m, path, req.replace, progress).await;
    }
    match m.engine.as_str() {
        "redis" => crate::source::redis::restore(env, catalog, m, req, progress).await,
        "command" => Err(Error::Invalid(
            "a `command` backup restores to a file only: pass --to-file PATH (or - for stdout)"
                .into(),
        )),
        "postgres" => {
            crate::source::postgres::restore::restore(
                env,
                catalog,
                &m.source,
                Some(m),
                req,
                progress,
            )
            .await
        }
        "mongo" => crate::source::mongo::restore(env, catalog, m, req, progress).await,
        other => Err(Error::NotSupported(format!(
            "restoring `{other}` backups into a server"
        ))),
    }
}

/// What restoring `m` as `req` asks would destroy at its destination (a
/// `--replace` into a server or a data directory); `None` when the restore
/// cannot destroy anything (no `--replace`, or a file, which is renamed into
/// place only after every check).
pub async fn describe_overwrite(
    env: &Env,
    m: &Manifest,
    req: &crate::source::RestoreRequest,
) -> Option<crate::source::Overwrite> {
    if !req.replace || req.to_file.is_some() {
        return None;
    }
    match m.engine.as_str() {
        "redis" => match &req.to_uri {
            Some(uri) => Some(crate::source::redis::describe_overwrite(env, m, uri).await),
            None => None,
        },
        "mongo" => {
            Some(crate::source::mongo::describe_overwrite(env, m, req.to_uri.as_deref()).await)
        }
        "postgres" => req
            .to_dir
            .as_deref()
            .map(crate::source::postgres::restore::describe_overwrite),
        _ => None,
    }
}

/// Writes the raw stream of `m` to `path` (`-` for stdout). A file is written
/// under a temporary name and renamed only once every check passed, so a
/// failed restore never leaves a file that looks complete.
pub async fn restore_raw_to_file(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    path: &Path,
    replace: bool,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let start = Instant::now();
    let to_stdout = path == Path::new("-");
    if !to_stdout && !replace && path.exists() {
        return Err(Error::Invalid(format!(
            "`{}` exists; refusing to overwrite it (pass --force to replace it)",
            path.display()
        )));
    }
    let decoded = env.open_backup(catalog, m).await?;
    progress.start(&format!("restore {}", m.id), Some(m.raw_bytes));
    let tmp: Option<PathBuf> = (!to_stdout).then(|| partial_name(path));
    let input = Env::download_label(catalog, m);
    let output = format!("writing `{}`", path.display());
    let ended = decoded
        .finish(
            Ends {
                input: &input,
                output: &output,
            },
            None,
            |reader| async {
                let mut reader = Counting {
                    inner: reader,
                    progress,
                };
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
            },
        )
        .await;
    progress.finish();
    let outcome = match ended {
        Ok((s, ())) => Ok(s),
        Err(StreamError::Pipeline(e)) => Err(Error::Pipeline(e)),
        Err(StreamError::Sink(e)) => Err(Error::LocalIo {
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
                    .map_err(|e| Error::LocalIo {
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
