//! Restore of a raw stream to a file (every engine's escape hatch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::progress::{Counting, Progress};
use super::Env;
use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result};
use crate::pipeline::{Ends, StreamError};
use crate::source::{NsRename, RecoveryPoint, RestoreCtx, RestoreSpec, RestoreTarget};

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

/// What the operator asked a restore to do, as the CLI's flags say it.
/// [`RestoreRequest::spec`] turns it into the typed [`RestoreSpec`] engines
/// receive, refusing combinations no restore can honour.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Write the raw stream (decrypted, decompressed) to this file; `-` is stdout.
    pub to_file: Option<std::path::PathBuf>,
    /// Restore into this running server (Mongo URI, Redis URL).
    pub to_uri: Option<String>,
    /// Restore into this directory (PostgreSQL data directory).
    pub to_dir: Option<std::path::PathBuf>,
    /// Namespace pattern to rename from (`db.*`).
    pub ns_from: Option<String>,
    /// Namespace pattern to rename to (`drill_db.*`).
    pub ns_to: Option<String>,
    /// Replace existing data (Mongo `--drop`, Redis `--flush`, a non-empty directory).
    pub replace: bool,
    /// Do not ask for confirmation.
    pub yes: bool,
    /// Point-in-time target.
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// LSN target (PostgreSQL).
    pub target_lsn: Option<String>,
    /// Recover to the newest point available.
    pub latest: bool,
    /// The target the backup is read from when it is not the source's
    /// primary (the off-site copy): PostgreSQL then fetches WAL from it too.
    pub from_target: Option<String>,
    /// PostgreSQL: the restored cluster keeps archiving into the source's WAL
    /// archive once promoted (it replaces production). Unset, it does not
    /// archive at all (`archive_mode = off`).
    pub keep_archiving: bool,
}

impl RestoreRequest {
    /// The typed restore: one destination (`--to-file` wins, as the escape
    /// hatch), one recovery point, a rename only as a pair.
    pub fn spec(&self) -> Result<RestoreSpec> {
        let target = match (&self.to_file, &self.to_uri, &self.to_dir) {
            (Some(f), _, _) => RestoreTarget::File(f.clone()),
            (None, Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give one destination: --to URI or --to-dir DIR, not both".into(),
                ))
            }
            (None, Some(u), None) => RestoreTarget::Server(u.clone()),
            (None, None, Some(d)) => RestoreTarget::DataDir(d.clone()),
            (None, None, None) => RestoreTarget::Origin,
        };
        let point = match (&self.target_time, &self.target_lsn, self.latest) {
            (Some(_), Some(_), _) => {
                return Err(Error::Invalid(
                    "give either --target-time or --target-lsn, not both".into(),
                ))
            }
            (Some(t), None, _) => RecoveryPoint::Time(*t),
            (None, Some(l), _) => RecoveryPoint::Lsn(l.clone()),
            (None, None, true) => RecoveryPoint::Latest,
            (None, None, false) => RecoveryPoint::Backup,
        };
        let rename = match (&self.ns_from, &self.ns_to) {
            (Some(from), Some(to)) => Some(NsRename {
                from: from.clone(),
                to: to.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Invalid(
                    "pass both --ns-from and --ns-to, or neither".into(),
                ))
            }
        };
        Ok(RestoreSpec {
            target,
            point,
            rename,
            replace: self.replace,
            from_target: self.from_target.clone(),
            keep_archiving: self.keep_archiving,
        })
    }
}

/// The engine of backup `m`, from the policy's settings of its source.
pub fn engine_for(env: &Env, m: &Manifest) -> Result<std::sync::Arc<dyn crate::source::Engine>> {
    let cfg = env
        .policy
        .sources
        .get(&m.source)
        .and_then(|c| crate::source::config_of(&m.source, c).ok());
    Ok(crate::source::engine_for_manifest(m, cfg.as_ref())?)
}

/// Restores `m` as `req` asks, through the backup's engine.
pub async fn restore(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    req: &RestoreRequest,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    restore_spec(env, catalog, m, &req.spec()?, progress).await
}

/// Restores `m` as `spec` asks, through the backup's engine.
pub async fn restore_spec(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    spec: &RestoreSpec,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    // Every engine's raw stream can be written to a file: the operator's escape hatch.
    if let RestoreTarget::File(path) = &spec.target {
        return restore_raw_to_file(env, catalog, m, path, spec.replace, progress).await;
    }
    let ctx = RestoreCtx {
        env,
        catalog,
        manifest: m,
        progress,
    };
    engine_for(env, m)?.restore(&ctx, spec).await
}

/// What restoring `m` as `req` asks would destroy at its destination (a
/// `--replace` into a server or a data directory); `None` when the restore
/// cannot destroy anything (no `--replace`, or a file, which is renamed into
/// place only after every check).
pub async fn describe_overwrite(
    env: &Env,
    m: &Manifest,
    req: &RestoreRequest,
) -> Option<crate::source::Overwrite> {
    let spec = req.spec().ok()?;
    if !spec.replace || matches!(spec.target, RestoreTarget::File(_)) {
        return None;
    }
    engine_for(env, m)
        .ok()?
        .describe_overwrite(env, m, &spec)
        .await
}

/// Deep-verifies `m` through its engine (`scratch`: a server the operator
/// gave, for engines that cannot start their own).
pub async fn verify_deep(
    env: &Env,
    catalog: &Catalog,
    m: &Manifest,
    scratch: Option<&str>,
    progress: &dyn Progress,
) -> Result<crate::source::DeepVerify> {
    let ctx = RestoreCtx {
        env,
        catalog,
        manifest: m,
        progress,
    };
    engine_for(env, m)?.verify_deep(&ctx, scratch).await
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
