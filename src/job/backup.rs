//! One backup: source → pipeline → store, then the manifest, last.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::Env;
use crate::catalog::{new_backup_id, Catalog, Manifest, MANIFEST_SCHEMA};
use crate::error::{Error, Result};
use crate::pipeline::{self, EncodeOptions, Ends, StreamError};
use crate::source::BackupSource;
use crate::storage::{PutOptions, StorageError, Store};
use crate::stream::progress::counting;

/// A committed backup and where it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupOutcome {
    /// The committed manifest.
    pub manifest: Manifest,
    /// Target name.
    pub target: String,
    /// Wall time of the whole backup, seconds.
    pub duration_secs: f64,
}

/// Backs up the source named `source` to its primary target.
pub async fn backup(env: &Env, source: &str, progress: &dyn Progress) -> Result<BackupOutcome> {
    backup_cancellable(env, source, progress, None).await
}

/// [`backup`] that `cancel` (a deadline, shutdown) ends cleanly: the stream
/// is cancelled, the upload aborted, nothing committed.
pub async fn backup_cancellable(
    env: &Env,
    source: &str,
    progress: &dyn Progress,
    cancel: Option<&CancellationToken>,
) -> Result<BackupOutcome> {
    let cfg = env.source_config(source)?;
    let engine = cfg.engine(source)?;
    let src = engine.backup()?;
    let target = env.primary_target_name(source)?;
    let store = env.store(&target).await?;
    let opts = env.encode_options()?;
    let start = Instant::now();
    let manifest = backup_stream(
        source,
        engine.kind(),
        src.as_ref(),
        store,
        &opts,
        progress,
        cancel,
    )
    .await?;
    Ok(BackupOutcome {
        manifest,
        target,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

/// Backs up `src` into `store` (engines and tests call this directly).
pub async fn backup_with(
    source: &str,
    engine: &str,
    src: &dyn BackupSource,
    store: Arc<dyn Store>,
    opts: &EncodeOptions,
    progress: &dyn Progress,
) -> Result<Manifest> {
    backup_stream(source, engine, src, store, opts, progress, None).await
}

async fn backup_stream(
    source: &str,
    engine: &str,
    src: &dyn BackupSource,
    store: Arc<dyn Store>,
    opts: &EncodeOptions,
    progress: &dyn Progress,
    cancel: Option<&CancellationToken>,
) -> Result<Manifest> {
    let started_at = Utc::now();
    let id = new_backup_id(started_at);
    let kind = src.kind();
    let key = crate::layout::backup_data(source, kind, &id);
    tracing::info!(event = "backup_started", source, engine, id = %id, store = %store.describe());
    progress.start(&format!("backup {source}"), None);

    let stream = src.open().await?;
    let encoded = pipeline::encode(stream, opts.clone());
    let input = format!("the source `{source}`");
    let output = format!("the upload of `{key}` to {}", store.describe());
    let ended = encoded
        .finish(Ends::new(&input, &output), cancel, |reader| async {
            let mut reader = counting(reader, progress);
            store
                .put_stream(
                    &key,
                    &mut reader,
                    PutOptions {
                        size_hint: None,
                        if_absent: true,
                    },
                )
                .await
        })
        .await;
    progress.finish();

    let (stats, meta) = match ended {
        Err(e) => {
            // The put never committed (the stream ended in an error), but a
            // store that committed anyway must not keep an object without a manifest.
            let _ = store.delete(&key).await;
            let e: Error = match e {
                StreamError::Pipeline(e) => e.into(),
                StreamError::Sink(e) => e.into(),
            };
            tracing::warn!(event = "backup_failed", source, id = %id, error = %e);
            return Err(e);
        }
        Ok(((stats, meta), put)) => {
            if put.size != stats.stored_bytes {
                let _ = store.delete(&key).await;
                return Err(Error::Invalid(format!(
                    "upload of `{key}` stored {} bytes but the pipeline produced {}; backup abandoned",
                    put.size, stats.stored_bytes
                )));
            }
            (stats, meta)
        }
    };
    // Confirm the object is really there, whole, before the manifest makes it a backup.
    match store.head(&key).await? {
        Some(o) if o.size == stats.stored_bytes => {}
        other => {
            return Err(StorageError::Config {
                store: store.describe(),
                message: format!(
                    "`{key}` reads back as {:?} bytes after upload, expected {}; backup abandoned",
                    other.map(|o| o.size),
                    stats.stored_bytes
                ),
            }
            .into())
        }
    }
    let mut manifest = Manifest {
        schema_version: MANIFEST_SCHEMA,
        id: id.clone(),
        source: source.to_string(),
        engine: engine.to_string(),
        kind: kind.to_string(),
        started_at,
        finished_at: Utc::now(),
        consistency: meta,
        raw_bytes: stats.raw_bytes,
        raw_sha256: stats.raw_sha256,
        stored_bytes: stats.stored_bytes,
        stored_sha256: stats.stored_sha256,
        data_key: key,
        zstd_level: opts.level,
        recipients: opts.recipients.iter().map(|r| r.to_string()).collect(),
        gsdr_version: env!("CARGO_PKG_VERSION").to_string(),
        signature: None,
        data_version: None,
    };
    if let Some(s) = &opts.signer {
        manifest.sign(s);
    }
    Catalog::new(store.clone()).commit(&manifest).await?;
    tracing::info!(
        event = "backup_committed",
        source,
        id = %id,
        bytes_raw = manifest.raw_bytes,
        bytes_stored = manifest.stored_bytes,
        duration_secs = (manifest.finished_at - started_at).num_milliseconds() as f64 / 1000.0,
    );
    Ok(manifest)
}
