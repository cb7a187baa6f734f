//! `wal-push` (`archive_command`) and `wal-fetch` (`restore_command`).
//!
//! Layout: `<source>/wal/<timeline>/<name>.zst.age` (compressed, encrypted)
//! and beside it `<name>.json`, a sidecar with the SHA-256 and size of the
//! raw file. The sidecar is written first, create-only: it *claims* the name
//! for one content. A second push of the same name compares hashes — equal:
//! success without uploading again; different: refused loudly, never
//! overwritten. Comparing by decrypting is impossible on the archiving side,
//! which holds only public keys; the sidecar needs no key and one small GET.
//! `<source>/wal/cluster.json` records the system identifier of the cluster
//! that owns the prefix; segments of another cluster are refused.
//!
//! Exit codes ([`WalError::push_exit_code`], [`WalError::fetch_exit_code`]):
//! `wal-push` exits 1 on every failure (PostgreSQL keeps the segment and
//! retries; above 125 would restart the archiver without counting the
//! failure). `wal-fetch` exits 1 when the file is not in the archive
//! (`.history` included: recovery ends cleanly there) and
//! [`FATAL_EXIT`] for anything else (unreachable target after retries,
//! corrupt or altered object, wrong key, a sidecar without its data object,
//! a hole before a stored segment): those must stop recovery rather than
//! let PostgreSQL promote at a point short of the real end of WAL.
//!
//! Memory: one segment in flight per concurrent push or fetch, each bounded by
//! the pipeline's chunk channel (a few MiB), never a whole segment in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{timeline_of, PostgresConfig, SegmentId};
use crate::job::Env;
use crate::pipeline::keys::Identities;
use crate::pipeline::{self, DecodeExpect, EncodeOptions, Ends, PipelineError, StreamError};
use crate::source::{SourceMeta, SourceStream};
use crate::storage::{PutCondition, PutOptions, StorageError, Store};

/// Exit status of `wal-fetch` for errors that must stop recovery (PostgreSQL aborts above 125).
pub const FATAL_EXIT: u8 = 255;
/// Name of the prefetch cache directory inside `pg_wal`.
pub const PREFETCH_DIR: &str = ".gsdr-prefetch";
const SIDECAR_MAX_BYTES: u64 = 64 << 10;

/// The sidecar stored beside every WAL object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSidecar {
    /// File name as PostgreSQL named it.
    pub name: String,
    /// SHA-256 of the raw file.
    pub raw_sha256: String,
    /// Raw size in bytes.
    pub raw_bytes: u64,
    /// When it was first pushed.
    pub pushed_at: chrono::DateTime<chrono::Utc>,
    /// gsdr version that pushed it.
    pub gsdr_version: String,
}

/// `<source>/wal/cluster.json`: which cluster owns the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// PostgreSQL system identifier (`pg_controldata`: "Database system identifier").
    pub system_identifier: String,
    /// WAL segment size in bytes.
    pub wal_segment_bytes: u64,
    /// When the first segment was archived.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What `wal-push` did with the requested file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalPushOutcome {
    /// Uploaded now.
    Uploaded,
    /// Already stored with the same content (an earlier call or look-ahead upload).
    AlreadyStored,
}

/// Result of one `wal-push` call.
#[derive(Debug, Clone, Serialize)]
pub struct WalPushReport {
    /// The requested file.
    pub name: String,
    /// What happened to it.
    pub outcome: WalPushOutcome,
    /// Following `.ready` files uploaded ahead in the same call.
    pub ahead_uploaded: usize,
    /// Following `.ready` files whose look-ahead upload failed (retried by their own call).
    pub ahead_failed: usize,
}

/// Where `wal-fetch` found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchOutcome {
    /// Downloaded now.
    Downloaded,
    /// Taken from the prefetch cache.
    Prefetched,
}

/// Errors of `wal-push` / `wal-fetch`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The file is not in the archive.
    #[error("WAL file `{name}` is not in the archive of source `{source_name}` in {store}")]
    NotFound {
        /// File name.
        name: String,
        /// Source.
        source_name: String,
        /// Store description.
        store: String,
    },
    /// The archive holds a different file under this name.
    #[error("REFUSED: WAL file `{name}` is already archived in {store} with different content (stored sha256 {stored_sha256}, local {local_sha256}); not overwriting. Two clusters may be archiving into the same source prefix, or a restored cluster reused a timeline: give each cluster its own source")]
    Conflict {
        /// File name.
        name: String,
        /// Store description.
        store: String,
        /// Hash recorded in the archive.
        stored_sha256: String,
        /// Hash of the local file.
        local_sha256: String,
    },
    /// The prefix belongs to another cluster.
    #[error("REFUSED: the WAL archive of source `{source_name}` in {store} belongs to the cluster with system identifier {stored}, but `{name}` comes from cluster {local}; point this cluster at its own source")]
    OtherCluster {
        /// Source.
        source_name: String,
        /// Store description.
        store: String,
        /// Identifier recorded in cluster.json.
        stored: String,
        /// Identifier of the local segment.
        local: String,
        /// Segment checked.
        name: String,
    },
    /// The archive is broken at this segment (a sidecar without its data
    /// object, or a hole before a stored segment): recovery must stop here,
    /// not end silently one segment short ([`super::walchain`]).
    #[error("WAL segment `{name}` of source `{source_name}` in {store}: {problem}. Recovery stops here instead of ending silently before it: put the segment back (from the server's pg_wal or another target, with `gsdr wal-push`), or restore to a point before it (--target-lsn below {starts_at}, where it starts)")]
    Broken {
        /// Segment name.
        name: String,
        /// Source.
        source_name: String,
        /// Store description.
        store: String,
        /// What is wrong, in words.
        problem: String,
        /// LSN where the segment starts.
        starts_at: String,
    },
    /// The file name is not a WAL file name.
    #[error("`{0}` is not a WAL segment, .history, .backup or .partial file name")]
    BadName(String),
    /// A local file could not be read or written.
    #[error("{what} `{path}`: {source}")]
    Local {
        /// What gsdr was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The local segment is not what PostgreSQL writes.
    #[error("`{path}` is not a valid WAL segment: {message}")]
    BadSegment {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Configuration, target, pipeline or key failure.
    #[error(transparent)]
    Job(#[from] crate::Error),
}

impl From<StorageError> for WalError {
    fn from(e: StorageError) -> Self {
        WalError::Job(e.into())
    }
}

impl From<PipelineError> for WalError {
    fn from(e: PipelineError) -> Self {
        WalError::Job(e.into())
    }
}

impl WalError {
    /// Exit status for `archive_command`: always 1 (never above 125).
    pub fn push_exit_code(&self) -> u8 {
        1
    }

    /// Exit status for `restore_command`: 1 when the file is absent, [`FATAL_EXIT`] otherwise.
    pub fn fetch_exit_code(&self) -> u8 {
        match self {
            WalError::NotFound { .. } | WalError::BadName(_) => 1,
            _ => FATAL_EXIT,
        }
    }

    fn is_temporary(&self) -> bool {
        match self {
            WalError::Job(e) => e.retry_class() == crate::RetryClass::Temporary,
            _ => false,
        }
    }
}

/// Key of the stored WAL object for file `name`.
pub fn data_key(source: &str, name: &str) -> String {
    format!(
        "{source}/wal/{}/{name}.zst.age",
        timeline_of(name).unwrap_or("other")
    )
}

/// Key of the sidecar of file `name`.
pub fn sidecar_key(source: &str, name: &str) -> String {
    format!(
        "{source}/wal/{}/{name}.json",
        timeline_of(name).unwrap_or("other")
    )
}

/// The WAL file an object of `source`'s archive belongs to, and whether it
/// is the data object (else the sidecar); `None` for any key outside the
/// layout (`cluster.json`, stray objects).
pub fn file_of_key<'k>(source: &str, key: &'k str) -> Option<(&'k str, bool)> {
    let file = key.rsplit('/').next()?;
    let (name, is_data) = match file.strip_suffix(".zst.age") {
        Some(n) => (n, true),
        None => (file.strip_suffix(".json")?, false),
    };
    check_name(name).ok()?;
    let expected = if is_data {
        data_key(source, name)
    } else {
        sidecar_key(source, name)
    };
    (key == expected).then_some((name, is_data))
}

/// Key of the cluster identity document.
pub fn cluster_key(source: &str) -> String {
    format!("{source}/wal/cluster.json")
}

/// Checks a file name PostgreSQL hands to archive/restore commands.
pub fn check_name(name: &str) -> Result<(), WalError> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = (name.len() == 24 && hex(name))
        || name
            .strip_suffix(".history")
            .is_some_and(|t| t.len() == 8 && hex(t))
        || name
            .strip_suffix(".partial")
            .is_some_and(|t| t.len() == 24 && hex(t))
        || name.strip_suffix(".backup").is_some_and(|t| {
            t.len() == 33 && hex(&t[..24]) && t.as_bytes()[24] == b'.' && hex(&t[25..])
        });
    if ok {
        Ok(())
    } else {
        Err(WalError::BadName(name.to_string()))
    }
}

/// The settings, store and names one WAL command works with.
pub(crate) struct WalCtx {
    pub(crate) source: String,
    pub(crate) cfg: PostgresConfig,
    pub(crate) store: Arc<dyn Store>,
}

pub(crate) async fn wal_ctx(env: &Env, source: &str) -> Result<WalCtx, WalError> {
    wal_ctx_on(env, source, None).await
}

/// [`wal_ctx`] on `target` instead of the source's primary target.
pub(crate) async fn wal_ctx_on(
    env: &Env,
    source: &str,
    target: Option<&str>,
) -> Result<WalCtx, WalError> {
    let sc = env.source_config(source)?;
    let cfg = sc.postgres.clone().ok_or_else(|| {
        crate::Error::Invalid(format!(
            "source `{source}` is not a postgres source: WAL commands need [sources.{source}.postgres]"
        ))
    })?;
    let target = match target {
        Some(t) => t.to_string(),
        None => env.primary_target_name(source)?,
    };
    let store = env.store(&target).await?;
    Ok(WalCtx {
        source: source.to_string(),
        cfg,
        store,
    })
}

async fn read_sidecar(ctx: &WalCtx, name: &str) -> Result<Option<WalSidecar>, WalError> {
    let key = sidecar_key(&ctx.source, name);
    match ctx.store.get_small(&key, SIDECAR_MAX_BYTES).await {
        Ok((b, _)) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            crate::Error::Invalid(format!(
                "WAL sidecar `{key}` in {} is unreadable: {e}",
                ctx.store.describe()
            ))
            .into()
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn hash_file(path: &Path) -> Result<(String, u64), WalError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let r = f.read(&mut buf)?;
            if r == 0 {
                break;
            }
            h.update(&buf[..r]);
            n += r as u64;
        }
        Ok::<_, std::io::Error>((hex::encode(h.finalize()), n))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|source| WalError::Local {
        what: "reading WAL file",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the system identifier and segment size from a segment's long page header.
pub fn read_segment_header(path: &Path) -> Result<(u64, u32), WalError> {
    use std::io::Read;
    let mut hdr = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut hdr))
        .map_err(|source| WalError::Local {
            what: "reading the header of WAL segment",
            path: path.to_path_buf(),
            source,
        })?;
    let info = u16::from_le_bytes([hdr[2], hdr[3]]);
    const XLP_LONG_HEADER: u16 = 0x0002;
    if info & XLP_LONG_HEADER == 0 {
        return Err(WalError::BadSegment {
            path: path.to_path_buf(),
            message: "its first page has no long header".into(),
        });
    }
    let sysid = u64::from_le_bytes(hdr[24..32].try_into().expect("8 bytes"));
    let seg = u32::from_le_bytes(hdr[32..36].try_into().expect("4 bytes"));
    Ok((sysid, seg))
}

async fn check_cluster(ctx: &WalCtx, path: &Path, name: &str) -> Result<(), WalError> {
    let (sysid, seg) = read_segment_header(path)?;
    if seg as u64 != ctx.cfg.wal_segment_bytes {
        return Err(crate::Error::Invalid(format!(
            "`{}` is a {seg}-byte WAL segment but source `{}` has wal_segment_bytes = {}; set it to {seg}",
            path.display(),
            ctx.source,
            ctx.cfg.wal_segment_bytes
        ))
        .into());
    }
    let key = cluster_key(&ctx.source);
    let local = sysid.to_string();
    for _ in 0..2 {
        match ctx.store.get_small(&key, SIDECAR_MAX_BYTES).await {
            Ok((b, _)) => {
                let info: ClusterInfo = serde_json::from_slice(&b).map_err(|e| {
                    crate::Error::Invalid(format!(
                        "`{key}` in {} is unreadable: {e}",
                        ctx.store.describe()
                    ))
                })?;
                if info.system_identifier != local {
                    return Err(WalError::OtherCluster {
                        source_name: ctx.source.clone(),
                        store: ctx.store.describe(),
                        stored: info.system_identifier,
                        local,
                        name: name.to_string(),
                    });
                }
                return Ok(());
            }
            Err(e) if e.is_not_found() => {
                let info = ClusterInfo {
                    system_identifier: local.clone(),
                    wal_segment_bytes: seg as u64,
                    created_at: chrono::Utc::now(),
                };
                let body = serde_json::to_vec_pretty(&info).expect("serialises");
                match ctx
                    .store
                    .put_small(&key, body.into(), PutCondition::IfAbsent)
                    .await
                {
                    Ok(_) => return Ok(()),
                    // Another pusher won the race: read and compare.
                    Err(StorageError::PreconditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Uploads one WAL file (no cluster check).
pub(crate) async fn push_one(
    ctx: &WalCtx,
    opts: &EncodeOptions,
    path: &Path,
    name: &str,
) -> Result<WalPushOutcome, WalError> {
    let (sha, size) = hash_file(path).await?;
    let dk = data_key(&ctx.source, name);
    let sk = sidecar_key(&ctx.source, name);
    let conflict = |stored: String| WalError::Conflict {
        name: name.to_string(),
        store: ctx.store.describe(),
        stored_sha256: stored,
        local_sha256: sha.clone(),
    };
    // Claim the name for this content (create-only), or compare with the claim.
    let mut claimed = false;
    for _ in 0..2 {
        match read_sidecar(ctx, name).await? {
            Some(sc) if sc.raw_sha256 != sha => return Err(conflict(sc.raw_sha256)),
            Some(_) => {
                claimed = true;
                break;
            }
            None => {
                let sc = WalSidecar {
                    name: name.to_string(),
                    raw_sha256: sha.clone(),
                    raw_bytes: size,
                    pushed_at: chrono::Utc::now(),
                    gsdr_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                let body = serde_json::to_vec(&sc).expect("serialises");
                match ctx
                    .store
                    .put_small(&sk, body.into(), PutCondition::IfAbsent)
                    .await
                {
                    Ok(_) => {
                        claimed = true;
                        break;
                    }
                    Err(StorageError::PreconditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if !claimed {
        return Err(crate::Error::Invalid(format!(
            "could not claim `{sk}` in {}",
            ctx.store.describe()
        ))
        .into());
    }
    if let Some(o) = ctx.store.head(&dk).await? {
        if o.size > 0 {
            return Ok(WalPushOutcome::AlreadyStored);
        }
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| WalError::Local {
            what: "opening WAL file",
            path: path.to_path_buf(),
            source,
        })?;
    let src = SourceStream {
        reader: Box::pin(file),
        done: Box::pin(async { Ok(SourceMeta::default()) }),
    };
    let enc = pipeline::encode(src, opts.clone());
    let input = format!("reading `{}`", path.display());
    let output = format!("the upload of `{dk}` to {}", ctx.store.describe());
    let dk_ref = dk.as_str();
    let ended = enc
        .finish(
            Ends {
                input: &input,
                output: &output,
            },
            None,
            |mut reader| async move {
                ctx.store
                    .put_stream(
                        dk_ref,
                        &mut reader,
                        PutOptions {
                            size_hint: Some(size),
                            if_absent: true,
                        },
                    )
                    .await
            },
        )
        .await;
    match ended.map(|((st, meta), put)| (put, (st, meta))) {
        // A concurrent pusher stored it first; the sidecar says it is this content.
        Err(StreamError::Sink(StorageError::PreconditionFailed { .. })) => {
            Ok(WalPushOutcome::AlreadyStored)
        }
        Err(StreamError::Sink(e)) => Err(e.into()),
        Err(StreamError::Pipeline(e)) => {
            let _ = ctx.store.delete(&dk).await;
            Err(e.into())
        }
        Ok((put, (st, _))) => {
            if st.raw_sha256 != sha {
                let _ = ctx.store.delete(&dk).await;
                return Err(crate::Error::Invalid(format!(
                    "`{}` changed while it was archived (sha256 {sha} then {}); upload discarded",
                    path.display(),
                    st.raw_sha256
                ))
                .into());
            }
            match ctx.store.head(&dk).await? {
                Some(o) if o.size == put.size && o.size == st.stored_bytes => {
                    Ok(WalPushOutcome::Uploaded)
                }
                other => Err(crate::Error::Invalid(format!(
                    "`{dk}` reads back as {:?} bytes after upload, expected {}",
                    other.map(|o| o.size),
                    st.stored_bytes
                ))
                .into()),
            }
        }
    }
}

/// `.ready` files after `name` in `pg_wal/archive_status`, oldest first.
fn ready_after(pg_wal: &Path, name: &str, max: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".ready"))
                .map(str::to_string)
        })
        .filter(|n| n != name && check_name(n).is_ok())
        .collect();
    // History files first (a new timeline needs them), then segments in order.
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names.truncate(max);
    names
}

/// `archive_command`: archives the file at `path` (as PostgreSQL passes `%p`),
/// and uploads following `.ready` files ahead in parallel.
pub async fn wal_push(env: &Env, source: &str, path: &Path) -> Result<WalPushReport, WalError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::BadName(path.display().to_string()))?
        .to_string();
    check_name(&name)?;
    let ctx = wal_ctx(env, source).await?;
    let mut opts = env.encode_options()?;
    // One segment is 16 MiB: a couple of zstd workers is plenty and starts fast.
    opts.workers = opts.workers.min(2);
    let is_segment = name.len() == 24 || name.ends_with(".partial");
    if is_segment {
        check_cluster(&ctx, path, &name).await?;
    }
    let pg_wal = path.parent().unwrap_or(Path::new("."));
    let ahead = if is_segment && name.len() == 24 {
        ready_after(pg_wal, &name, ctx.cfg.push_concurrency.saturating_mul(2))
            .into_iter()
            .filter(|n| n.as_str() > name.as_str() || n.ends_with(".history"))
            .collect()
    } else {
        Vec::new()
    };
    let conc = ctx.cfg.push_concurrency.max(1);
    let ctx_ref = &ctx;
    let opts_ref = &opts;
    let main = push_one(ctx_ref, opts_ref, path, &name);
    let extras = stream::iter(ahead.into_iter().map(|n| {
        let p = pg_wal.join(&n);
        async move {
            let r = push_one(ctx_ref, opts_ref, &p, &n).await;
            if let Err(e) = &r {
                tracing::warn!(event = "wal_push_ahead_failed", name = %n, error = %e);
            }
            r
        }
    }))
    .buffer_unordered(conc.saturating_sub(1).max(1))
    .collect::<Vec<_>>();
    let (main, extras) = tokio::join!(main, extras);
    let outcome = match main {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(event = "wal_push_failed", source, name = %name, error = %e);
            return Err(e);
        }
    };
    let ahead_uploaded = extras
        .iter()
        .filter(|r| matches!(r, Ok(WalPushOutcome::Uploaded)))
        .count();
    let ahead_failed = extras.iter().filter(|r| r.is_err()).count();
    tracing::info!(event = "wal_pushed", source, name = %name, outcome = ?outcome, ahead_uploaded, ahead_failed);
    Ok(WalPushReport {
        name,
        outcome,
        ahead_uploaded,
        ahead_failed,
    })
}

/// Downloads `name` to `dest` (via a temp file renamed into place).
async fn fetch_one(
    ctx: &WalCtx,
    ids: Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<(), WalError> {
    let not_found = || WalError::NotFound {
        name: name.to_string(),
        source_name: ctx.source.clone(),
        store: ctx.store.describe(),
    };
    let sc = read_sidecar(ctx, name).await?.ok_or_else(not_found)?;
    let stored = match ctx.store.get_stream(&data_key(&ctx.source, name)).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let decoded = pipeline::decode(
        stored,
        ids,
        DecodeExpect {
            raw_sha256: Some(sc.raw_sha256.clone()),
            ..Default::default()
        },
    );
    let tmp = dest.with_file_name(format!(
        ".{}.gsdr-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let input = format!("the download of `{name}` from {}", ctx.store.describe());
    let output = format!("writing `{}`", tmp.display());
    let tmp_ref = tmp.as_path();
    let ended = decoded
        .finish(
            Ends {
                input: &input,
                output: &output,
            },
            None,
            |mut reader| async move {
                let mut f = tokio::fs::File::create(tmp_ref).await?;
                tokio::io::copy(&mut reader, &mut f).await?;
                f.flush().await?;
                Ok::<(), std::io::Error>(())
            },
        )
        .await;
    let res = match ended {
        Err(StreamError::Pipeline(e)) => Err(WalError::from(e)),
        Err(StreamError::Sink(source)) => Err(WalError::Local {
            what: "writing fetched WAL to",
            path: tmp.clone(),
            source,
        }),
        Ok((s, ())) if s.raw_bytes != sc.raw_bytes => Err(crate::Error::Invalid(format!(
            "`{name}` decoded to {} bytes but {} were archived",
            s.raw_bytes, sc.raw_bytes
        ))
        .into()),
        Ok(_) => tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|source| WalError::Local {
                what: "moving fetched WAL into place at",
                path: dest.to_path_buf(),
                source,
            }),
    };
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    res
}

pub(crate) async fn fetch_with_retries(
    ctx: &WalCtx,
    ids: &Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<(), WalError> {
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match fetch_one(ctx, ids.clone(), name, dest).await {
            Err(e) if e.is_temporary() && attempt < 3 => {
                tracing::warn!(event = "wal_fetch_retry", name, attempt, error = %e);
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `restore_command`: fetches WAL file `name` (`%f`) to `dest` (`%p`), using
/// and refilling the prefetch cache `pg_wal/.gsdr-prefetch`.
pub async fn wal_fetch(
    env: &Env,
    source: &str,
    target: Option<&str>,
    name: &str,
    dest: &Path,
) -> Result<FetchOutcome, WalError> {
    check_name(name)?;
    let ctx = wal_ctx_on(env, source, target).await?;
    let ids = env.identities()?;
    let pg_wal = dest.parent().unwrap_or(Path::new("."));
    let cache = pg_wal.join(PREFETCH_DIR);
    let seg = SegmentId::parse(name, ctx.cfg.wal_segment_bytes);
    let cached = cache.join(name);
    let outcome = if seg.is_some() && cached.exists() {
        tokio::fs::rename(&cached, dest)
            .await
            .map_err(|source| WalError::Local {
                what: "moving prefetched WAL into place at",
                path: dest.to_path_buf(),
                source,
            })?;
        FetchOutcome::Prefetched
    } else {
        // A missing segment is the end of the archive, or a broken archive (an error).
        super::walchain::fetch_or_explain(&ctx, &ids, name, dest).await?;
        FetchOutcome::Downloaded
    };
    if let (Some(seg), true) = (seg, ctx.cfg.prefetch > 0) {
        prefetch(&ctx, &ids, &cache, seg).await;
    }
    tracing::debug!(event = "wal_fetched", source, name, outcome = ?outcome);
    Ok(outcome)
}

/// Keeps the next `prefetch` segments after `seg` in `cache`: refills (in
/// parallel) once fewer than half are there, and drops older leftovers.
async fn prefetch(ctx: &WalCtx, ids: &Arc<Identities>, cache: &Path, seg: SegmentId) {
    let bytes = ctx.cfg.wal_segment_bytes;
    let n = ctx.cfg.prefetch;
    if tokio::fs::create_dir_all(cache).await.is_err() {
        return;
    }
    let current = seg.name(bytes);
    if let Ok(rd) = std::fs::read_dir(cache) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with('.') || f.as_str() <= current.as_str() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut want = Vec::new();
    let mut s = seg;
    for _ in 0..n {
        s = s.next();
        let nm = s.name(bytes);
        if !cache.join(&nm).exists() {
            want.push(nm);
        }
    }
    if want.len() * 2 < n {
        return;
    }
    let conc = ctx.cfg.push_concurrency.max(2);
    stream::iter(want.into_iter().map(|nm| {
        let dest = cache.join(&nm);
        async move {
            match fetch_one(ctx, ids.clone(), &nm, &dest).await {
                Ok(()) | Err(WalError::NotFound { .. }) => {}
                Err(e) => tracing::debug!(event = "wal_prefetch_failed", name = %nm, error = %e),
            }
        }
    }))
    .buffer_unordered(conc)
    .collect::<Vec<_>>()
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in [
            "000000010000000000000002",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000002.partial",
        ] {
            check_name(ok).unwrap();
        }
        for bad in [
            "RECOVERYXLOG",
            "../etc/passwd",
            "00000001",
            "0000000100000000000000zz",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_follow_the_layout() {
        assert_eq!(
            data_key("pg", "000000020000000000000003"),
            "pg/wal/00000002/000000020000000000000003.zst.age"
        );
        assert_eq!(
            sidecar_key("pg", "00000002.history"),
            "pg/wal/00000002/00000002.history.json"
        );
        let seg = "000000020000000000000003";
        assert_eq!(file_of_key("pg", &data_key("pg", seg)), Some((seg, true)));
        assert_eq!(
            file_of_key("pg", &sidecar_key("pg", seg)),
            Some((seg, false))
        );
        for stray in [
            "pg/wal/cluster.json",
            "pg/wal/00000001/000000020000000000000003.zst.age",
            "other/wal/00000002/000000020000000000000003.json",
            "pg/wal/00000002/notes.txt",
        ] {
            assert_eq!(file_of_key("pg", stray), None, "{stray}");
        }
    }

    #[test]
    fn exit_codes() {
        let nf = WalError::NotFound {
            name: "x".into(),
            source_name: "s".into(),
            store: "t".into(),
        };
        assert_eq!(nf.fetch_exit_code(), 1);
        assert_eq!(nf.push_exit_code(), 1);
        let c = WalError::Conflict {
            name: "x".into(),
            store: "t".into(),
            stored_sha256: "a".into(),
            local_sha256: "b".into(),
        };
        assert_eq!(c.push_exit_code(), 1);
        assert!(c.fetch_exit_code() > 125);
    }
}
