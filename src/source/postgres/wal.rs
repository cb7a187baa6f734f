//! `wal-push` (`archive_command`) and `wal-fetch` (`restore_command`).
//!
//! Layout ([`crate::layout`]): `<source>/wal/<timeline>/<name>.zst.age` (compressed, encrypted)
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
//!
//! The commands work on a [`WalArchive`] (the source's settings and the
//! opened store) and take the keys they need as arguments; the caller (the
//! CLI, the daemon) builds them from the policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::walchain::{self, Missing, WalIndex};
use super::walname::is_wal_name;
use super::{PostgresConfig, SegmentId};
use crate::catalog::CatalogError;
use crate::layout;
use crate::pipeline::keys::Identities;
use crate::pipeline::{
    self, DecodeExpect, EncodeOptions, EncodeStats, Ends, PipelineError, StreamError,
};
use crate::source::SourceError;
use crate::storage::{PutCondition, PutOptions, PutResult, StorageError, Store};
use crate::stream::{SourceMeta, SourceStream};

pub use super::walname::file_of_key;

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
    /// Size of the stored (compressed, encrypted) object, recorded once it
    /// was uploaded and read back: an object of any other size is damaged,
    /// never "already stored". Absent in sidecars of older versions and
    /// while the first upload is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// The pusher's Ed25519 signature over the rest and the source's name
    /// ([`WalSidecar::signed_bytes`]); absent when the policy has no
    /// signing key (and in sidecars from before signing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::Signature>,
}

impl WalSidecar {
    /// The bytes its signature covers: a label, the source's name and its
    /// JSON without the signature. The label keeps a sidecar signature from
    /// passing as a manifest's; the source keeps a sidecar copied from
    /// another source's archive (same key pair, same segment name) from
    /// passing here.
    pub fn signed_bytes(&self, source: &str) -> Vec<u8> {
        let mut sc = self.clone();
        sc.signature = None;
        let mut b = format!("gsdr-wal-sidecar\n{source}\n").into_bytes();
        b.extend(serde_json::to_vec(&sc).expect("sidecar serialises"));
        b
    }

    /// Signs it with `signer` (replacing any signature it had).
    pub fn sign(&mut self, source: &str, signer: &crate::signing::Signer) {
        self.signature = None;
        self.signature = Some(signer.sign(&self.signed_bytes(source)));
    }

    /// Whether `trust` accepts this sidecar, stored under `key` for `source`.
    pub fn authenticate(
        &self,
        source: &str,
        key: &str,
        trust: &crate::signing::Trust,
    ) -> Result<(), crate::signing::SignError> {
        trust.check(key, &self.signed_bytes(source), self.signature.as_ref())
    }
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
    /// A damaged object (zero-byte, short) was under the name: deleted and uploaded again.
    Replaced,
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
    /// Every file of the call now stored (the requested one first): what the
    /// caller copies off-site at once.
    pub stored: Vec<String>,
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
    /// Another cluster already started this timeline in the archive.
    #[error("REFUSED: `{name}` is already archived in {store} with different content (stored sha256 {stored_sha256}, local {local_sha256}): another server with this cluster's system identifier already started timeline {timeline} in this archive — most likely a copy restored from it and started with archiving on. Its timeline is not this cluster's; see \"Restored copies\" in docs/postgres.md to move it aside, then archiving resumes")]
    TimelineTaken {
        /// The `.history` file.
        name: String,
        /// Timeline (8 hex digits).
        timeline: String,
        /// Store description.
        store: String,
        /// Hash recorded in the archive.
        stored_sha256: String,
        /// Hash of the local file.
        local_sha256: String,
    },
    /// A new timeline that does not continue the archived ones.
    #[error("REFUSED: new timeline {timeline} (`{name}`) does not descend from the timelines archived in {store}: {why}. The server pushing it is most likely a copy restored from this archive and started with archiving on; a restored copy must not archive here (`gsdr restore` turns archiving off unless --keep-archiving). If this cluster really replaces production after a point-in-time restore, archive with `wal-push --allow-branch` (see \"Restored copies\" in docs/postgres.md)")]
    ForeignTimeline {
        /// The `.history` file.
        name: String,
        /// Timeline (8 hex digits).
        timeline: String,
        /// Store description.
        store: String,
        /// What does not fit.
        why: String,
    },
    /// The sidecar of a WAL file is not one the policy's verify keys accept
    /// (unsigned, signed by an unknown key, or changed): the file is not
    /// replayed, copied off-site or counted as archived.
    #[error("REFUSED: WAL file `{name}` of source `{source_name}` in {store}: {problem}. {remedy}")]
    Untrusted {
        /// File name.
        name: String,
        /// Source.
        source_name: String,
        /// Store description.
        store: String,
        /// Which key, and what is wrong ([`untrusted_problem`]).
        problem: String,
        /// What to do.
        remedy: String,
    },
    /// S3 denied a lookup of a key that may simply not exist.
    #[error("{op} `{key}` in {store}: access denied. S3 answers 403 AccessDenied instead of 404 for a key that does not exist when the user may not list the bucket: grant gsdr's user s3:ListBucket on the bucket (besides s3:GetObject and s3:PutObject on the prefix); {}", .purpose.consequence())]
    ListDenied {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// Store description.
        store: String,
        /// What the denial means for the caller.
        purpose: Purpose,
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
    /// Reading from or writing to the target failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Compression, encryption or their reverse failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The catalog of base backups could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// What the archive holds or the file is cannot be accepted as it is.
    #[error("{0}")]
    Invalid(String),
    /// The caller could not provide what the command needs (policy, target, keys).
    #[error(transparent)]
    Setup(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Which command met a [`WalError::ListDenied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `wal-push`.
    Push,
    /// `wal-fetch`.
    Fetch,
}

impl Purpose {
    fn consequence(&self) -> &'static str {
        match self {
            Purpose::Fetch => "until then gsdr cannot tell a missing WAL file from a forbidden one, so it stops recovery (exit 255) instead of ending it early at a file that may exist, or retrying forever",
            Purpose::Push => "until then gsdr cannot tell whether a WAL file is already archived, so archiving fails (PostgreSQL keeps the file and retries)",
        }
    }
}

/// A storage error of a lookup whose key may legitimately be absent:
/// `AccessDenied` there is, on S3, most likely a missing `s3:ListBucket`.
fn lookup_err(e: StorageError, purpose: Purpose) -> WalError {
    match e {
        StorageError::AccessDenied { op, store, key, .. } => WalError::ListDenied {
            op,
            key,
            store,
            purpose,
        },
        e => e.into(),
    }
}

impl WalError {
    /// What the operator must fix: a WAL file that is not there, or anything else.
    pub fn kind(&self) -> crate::fault::ErrorKind {
        match self {
            WalError::NotFound { .. } => crate::fault::ErrorKind::NotFound,
            _ => crate::fault::ErrorKind::Other,
        }
    }

    /// The caller's failure to provide what a WAL command needs (the policy,
    /// a target, the keys), reported as the command's own failure.
    pub fn setup(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        WalError::Setup(e.into())
    }

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
            WalError::Storage(e) => e.retry_class() == crate::fault::RetryClass::Temporary,
            WalError::Pipeline(e) => e.retry_class() == crate::fault::RetryClass::Temporary,
            _ => false,
        }
    }
}

/// Checks a file name PostgreSQL hands to archive/restore commands.
pub fn check_name(name: &str) -> Result<(), WalError> {
    if is_wal_name(name) {
        Ok(())
    } else {
        Err(WalError::BadName(name.to_string()))
    }
}

/// The WAL archive of one postgres source on one target: what every WAL
/// command works with.
#[derive(Debug, Clone)]
pub struct WalArchive {
    /// Source name (the first folder of its keys).
    pub source: String,
    /// The source's PostgreSQL settings.
    pub cfg: PostgresConfig,
    /// The opened target.
    pub store: Arc<dyn Store>,
    /// The verify keys fetched sidecars must be signed with (none: not checked).
    pub trust: crate::signing::Trust,
}

impl WalArchive {
    /// The WAL archive of source `source` (its engine settings `cfg`) in `store`.
    pub fn of(
        source: &str,
        cfg: Option<&crate::source::EngineConfig>,
        store: Arc<dyn Store>,
    ) -> Result<WalArchive, SourceError> {
        match cfg {
            Some(crate::source::EngineConfig::Postgres(c)) => Ok(WalArchive {
                source: source.to_string(),
                cfg: c.clone(),
                store,
                trust: crate::signing::Trust::default(),
            }),
            _ => Err(SourceError::Config {
                message: format!(
                    "source `{source}` is not a postgres source: WAL commands need [sources.{source}.postgres]"
                ),
            }),
        }
    }
}

/// What is wrong with a sidecar `trust` refused, in words that name the key.
pub fn untrusted_problem(e: &crate::signing::SignError) -> String {
    use crate::signing::SignError as S;
    match e {
        S::Unsigned { key } => format!("its sidecar `{key}` is not signed, and the policy's signing.verify_keys require signed WAL sidecars: a file archived before signing was set up (run the restore, or this command, with --allow-unsigned after checking where it came from: a restore passes it on to wal-fetch), or one somebody placed in the bucket"),
        S::UnknownKey { key, key_id } => format!("its sidecar `{key}` is signed by key {key_id}, which is not among the policy's signing.verify_keys: add that key's `gsdr-ed25519:…` line if it is yours (a rotated key), otherwise it is forged"),
        S::BadSignature { key, key_id } => format!("the signature of key {key_id} over its sidecar `{key}` does not verify: the sidecar was changed after it was signed, or forged"),
        other => other.to_string(),
    }
}

/// Refuses the sidecar `sc` of `name` unless the archive's trust accepts it.
pub(crate) fn authenticate_sidecar(
    ctx: &WalArchive,
    name: &str,
    sc: &WalSidecar,
) -> Result<(), WalError> {
    let key = layout::wal_sidecar(&ctx.source, name);
    sc.authenticate(&ctx.source, &key, &ctx.trust).map_err(|e| {
        let remedy = match SegmentId::parse(name, ctx.cfg.wal_segment_bytes) {
            Some(seg) => format!(
                "Recovery stops here rather than replay WAL nobody can vouch for: restore to a point before it (--target-lsn below {}, where it starts), or, if the server still has the genuine file, delete both objects of `{name}` and archive it again (`gsdr wal-push`)",
                super::format_lsn(seg.number * ctx.cfg.wal_segment_bytes)
            ),
            None => format!(
                "It is not used: if the server still has the genuine `{name}`, delete both objects of it and archive it again (`gsdr wal-push`)"
            ),
        };
        let err = WalError::Untrusted {
            name: name.to_string(),
            source_name: ctx.source.clone(),
            store: ctx.store.describe(),
            problem: untrusted_problem(&e),
            remedy,
        };
        tracing::error!(event = "wal_sidecar_untrusted", source = %ctx.source, name, error = %err);
        err
    })
}

/// The sidecar of `name` and its version tag, `None` if absent.
pub(crate) async fn read_sidecar(
    ctx: &WalArchive,
    name: &str,
    purpose: Purpose,
) -> Result<Option<(WalSidecar, Option<String>)>, WalError> {
    let key = layout::wal_sidecar(&ctx.source, name);
    match ctx.store.get_small(&key, SIDECAR_MAX_BYTES).await {
        Ok((b, meta)) => serde_json::from_slice(&b)
            .map(|sc| Some((sc, meta.etag)))
            .map_err(|e| {
                WalError::Invalid(format!(
                    "WAL sidecar `{key}` in {} is unreadable: {e}",
                    ctx.store.describe()
                ))
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(lookup_err(e, purpose)),
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

pub(crate) async fn check_cluster(ctx: &WalArchive, path: &Path, name: &str) -> Result<(), WalError> {
    let (sysid, seg) = read_segment_header(path)?;
    if seg as u64 != ctx.cfg.wal_segment_bytes {
        return Err(WalError::Invalid(format!(
            "`{}` is a {seg}-byte WAL segment but source `{}` has wal_segment_bytes = {}; set it to {seg}",
            path.display(),
            ctx.source,
            ctx.cfg.wal_segment_bytes
        )));
    }
    let key = layout::wal_cluster(&ctx.source);
    let local = sysid.to_string();
    for _ in 0..2 {
        match ctx.store.get_small(&key, SIDECAR_MAX_BYTES).await {
            Ok((b, _)) => {
                let info: ClusterInfo = serde_json::from_slice(&b).map_err(|e| {
                    WalError::Invalid(format!(
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
            Err(e) if !e.is_not_found() => return Err(lookup_err(e, Purpose::Push)),
            Err(_) => {
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
        }
    }
    Ok(())
}

/// How `wal-push` treats what it finds in the archive.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// Accept a new timeline that branches off its parent before the end of
    /// the parent's archived WAL (a cluster that replaces production after a
    /// point-in-time restore). Never accepts a history that contradicts an
    /// archived one.
    pub allow_branch: bool,
}

/// Parses a timeline history file: `(parent timeline, switch LSN)` per line.
pub fn parse_history(text: &str) -> Option<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let tli = f.next()?.parse().ok()?;
        let lsn = super::parse_lsn(f.next()?)?;
        out.push((tli, lsn));
    }
    Some(out)
}

/// Checks that the new timeline whose history file is at `path` continues
/// the archived ones: its history must begin with the archived history of
/// its parent byte for byte (PostgreSQL copies the parent's file and appends
/// one line), and — unless `allow_branch` — its parent must not hold
/// archived WAL a whole segment or more past the switch point, which a
/// failover never leaves but a copy restored to an earlier point does.
async fn check_new_timeline(
    ctx: &WalArchive,
    path: &Path,
    name: &str,
    opts: PushOptions,
) -> Result<(), WalError> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|source| WalError::Local {
            what: "reading timeline history file",
            path: path.to_path_buf(),
            source,
        })?;
    let timeline = name.trim_end_matches(".history").to_string();
    let foreign = |why: String| WalError::ForeignTimeline {
        name: name.to_string(),
        timeline: timeline.clone(),
        store: ctx.store.describe(),
        why,
    };
    let Some(lines) = parse_history(&String::from_utf8_lossy(&text)) else {
        tracing::warn!(
            event = "wal_history_unparsed",
            name,
            "not checked against the archive"
        );
        return Ok(());
    };
    let Some(&(parent, switch)) = lines.last() else {
        return Ok(());
    };
    if parent > 1 {
        let pname = format!("{parent:08X}.history");
        if let Some((psc, _)) = read_sidecar(ctx, &pname, Purpose::Push).await? {
            let n = psc.raw_bytes as usize;
            let same = text.len() > n && hex::encode(Sha256::digest(&text[..n])) == psc.raw_sha256;
            if !same {
                return Err(foreign(format!(
                    "its history does not begin with the archived history of its parent timeline {parent:08X} (`{pname}`)"
                )));
            }
        }
    }
    if opts.allow_branch {
        tracing::info!(event = "wal_branch_allowed", name, parent, switch = %super::format_lsn(switch));
        return Ok(());
    }
    let seg_bytes = ctx.cfg.wal_segment_bytes;
    let at = SegmentId::of_lsn(parent, switch, seg_bytes);
    let prefix = layout::wal_timeline_prefix(&ctx.source, &format!("{parent:08X}"));
    let later: Vec<String> = ctx
        .store
        .list(&prefix)
        .await
        .map_err(|e| lookup_err(e, Purpose::Push))?
        .into_iter()
        .filter_map(|o| file_of_key(&ctx.source, &o.key).map(|(n, _)| n.to_string()))
        .filter(|n| SegmentId::parse(n, seg_bytes).is_some_and(|s| s.number > at.number))
        .collect();
    if let Some(last) = later.iter().max() {
        let mut names = later.clone();
        names.sort();
        names.dedup();
        return Err(foreign(format!(
            "it branches off timeline {parent:08X} at {}, but the archive already holds {} later segment(s) of timeline {parent:08X} (up to `{last}`), written after that point by the cluster the archive follows",
            super::format_lsn(switch),
            names.len()
        )));
    }
    Ok(())
}

/// The smallest stored object gsdr can write: an age header with one
/// recipient stanza, the payload nonce and one chunk's tag.
const MIN_STORED_BYTES: u64 = 150;
/// Bytes read to find the end of an age header (one stanza per recipient).
const AGE_HEADER_MAX: usize = 16 << 10;

/// Whether a stored object of `size` bytes whose sidecar records no stored
/// size (older versions) can be complete: an age file whose payload length
/// fits age's 64 KiB chunking. Reads the header only.
async fn plausible_object(
    ctx: &WalArchive,
    key: &str,
    size: u64,
) -> Result<Result<(), String>, WalError> {
    use tokio::io::AsyncReadExt;
    if size < MIN_STORED_BYTES {
        return Ok(Err(format!("it is {size} bytes long")));
    }
    let mut r = ctx
        .store
        .get_stream(key)
        .await
        .map_err(|e| lookup_err(e, Purpose::Push))?;
    let mut head = vec![0u8; AGE_HEADER_MAX.min(size as usize)];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await.map_err(|e| {
            WalError::from(StorageError::Io {
                op: "read",
                store: ctx.store.describe(),
                key: key.to_string(),
                class: crate::fault::RetryClass::Temporary,
                source: Box::new(e),
            })
        })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    if !head.starts_with(b"age-encryption.org/v1\n") {
        return Ok(Err("it does not start with an age header".into()));
    }
    // The header ends with the `--- <mac>` line.
    let Some(mac) = head.windows(5).position(|w| w == b"\n--- ") else {
        return Ok(Err("its age header has no end".into()));
    };
    let Some(nl) = head[mac + 5..].iter().position(|&b| b == b'\n') else {
        return Ok(Err("its age header has no end".into()));
    };
    let header = (mac + 5 + nl + 1) as u64;
    const CHUNK: u64 = 64 * 1024 + 16;
    let payload = size.saturating_sub(header + 16);
    let last = payload % CHUNK;
    if payload < 16 || (last != 0 && last <= 16) {
        return Ok(Err(format!(
            "its {size} bytes do not end on an age chunk: truncated"
        )));
    }
    Ok(Ok(()))
}

/// Uploads one WAL file (no cluster check).
///
/// An object already under the name counts as stored only when its size is
/// the one the sidecar recorded after the upload (or, for sidecars of older
/// versions, when it is a plausible age file); a zero-byte, short or
/// otherwise damaged object is deleted and uploaded again — only for the
/// content the sidecar claims, so create-only still holds for the name.
pub(crate) async fn push_one(
    ctx: &WalArchive,
    opts: &EncodeOptions,
    push: PushOptions,
    path: &Path,
    name: &str,
) -> Result<WalPushOutcome, WalError> {
    let (sha, size) = hash_file(path).await?;
    let dk = layout::wal_data(&ctx.source, name);
    let sk = layout::wal_sidecar(&ctx.source, name);
    let conflict = |stored: String| {
        if name.ends_with(".history") {
            WalError::TimelineTaken {
                name: name.to_string(),
                timeline: name.trim_end_matches(".history").to_string(),
                store: ctx.store.describe(),
                stored_sha256: stored,
                local_sha256: sha.clone(),
            }
        } else {
            WalError::Conflict {
                name: name.to_string(),
                store: ctx.store.describe(),
                stored_sha256: stored,
                local_sha256: sha.clone(),
            }
        }
    };
    // Claim the name for this content (create-only), or compare with the claim.
    let mut claim: Option<(WalSidecar, Option<String>)> = None;
    for _ in 0..2 {
        match read_sidecar(ctx, name, Purpose::Push).await? {
            Some((sc, _)) if sc.raw_sha256 != sha => return Err(conflict(sc.raw_sha256)),
            Some(found) => {
                claim = Some(found);
                break;
            }
            None => {
                if name.ends_with(".history") {
                    check_new_timeline(ctx, path, name, push).await?;
                }
                let mut sc = WalSidecar {
                    name: name.to_string(),
                    raw_sha256: sha.clone(),
                    raw_bytes: size,
                    pushed_at: chrono::Utc::now(),
                    gsdr_version: env!("CARGO_PKG_VERSION").to_string(),
                    stored_bytes: None,
                    signature: None,
                };
                if let Some(s) = &opts.signer {
                    sc.sign(&ctx.source, s);
                }
                let body = serde_json::to_vec(&sc).expect("serialises");
                match ctx
                    .store
                    .put_small(&sk, body.into(), PutCondition::IfAbsent)
                    .await
                {
                    Ok(put) => {
                        claim = Some((sc, put.etag));
                        break;
                    }
                    Err(StorageError::PreconditionFailed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let Some((mut sidecar, mut sidecar_etag)) = claim else {
        return Err(WalError::Invalid(format!(
            "could not claim `{sk}` in {}",
            ctx.store.describe()
        )));
    };
    let mut replaced = false;
    for attempt in 0..2 {
        if let Some(o) = ctx
            .store
            .head(&dk)
            .await
            .map_err(|e| lookup_err(e, Purpose::Push))?
        {
            let damage = match sidecar.stored_bytes {
                Some(n) if n == o.size => None,
                Some(n) => Some(format!(
                    "it is {} bytes long, but {n} were stored and read back",
                    o.size
                )),
                None => plausible_object(ctx, &dk, o.size).await?.err(),
            };
            match damage {
                None => {
                    if sidecar.stored_bytes.is_none() {
                        record_stored_size(ctx, opts, &sk, &mut sidecar, &mut sidecar_etag, o.size).await;
                    }
                    return Ok(if replaced {
                        WalPushOutcome::Replaced
                    } else {
                        WalPushOutcome::AlreadyStored
                    });
                }
                Some(why) if attempt == 0 => {
                    tracing::warn!(event = "wal_object_damaged", name, key = %dk, store = %ctx.store.describe(), why = %why, "deleting it and uploading the file again");
                    ctx.store.delete(&dk).await.map_err(|e| {
                        WalError::Invalid(format!(
                            "`{dk}` in {} is damaged ({why}) and could not be deleted to store it again: {e}; delete it by hand (the file is still in pg_wal)",
                            ctx.store.describe()
                        ))
                    })?;
                    replaced = true;
                }
                Some(why) => {
                    return Err(WalError::Invalid(format!(
                        "`{dk}` in {} is damaged ({why}) and is still there after it was deleted; check the bucket's versioning and Object Lock settings",
                        ctx.store.describe()
                    )))
                }
            }
        }
        match upload(ctx, opts, path, &dk, &sha, size).await? {
            Some(stored) => {
                record_stored_size(ctx, opts, &sk, &mut sidecar, &mut sidecar_etag, stored).await;
                return Ok(if replaced {
                    WalPushOutcome::Replaced
                } else {
                    WalPushOutcome::Uploaded
                });
            }
            // A concurrent pusher stored it first: check what it stored.
            None => {
                if let Some((sc, etag)) = read_sidecar(ctx, name, Purpose::Push).await? {
                    sidecar = sc;
                    sidecar_etag = etag;
                }
            }
        }
    }
    Err(WalError::Invalid(format!(
        "`{dk}` in {} keeps changing while it is archived; another pusher may be writing it",
        ctx.store.describe()
    )))
}

/// Writes the stored size into the sidecar (compare-and-swap on the claim
/// this push holds). Best effort: without it, the next push of the name
/// checks the object's structure instead.
async fn record_stored_size(
    ctx: &WalArchive,
    opts: &EncodeOptions,
    key: &str,
    sidecar: &mut WalSidecar,
    etag: &mut Option<String>,
    stored: u64,
) {
    let Some(tag) = etag.clone() else { return };
    sidecar.stored_bytes = Some(stored);
    // Signed again: the size is part of what the signature covers.
    if let Some(s) = &opts.signer {
        sidecar.sign(&ctx.source, s);
    }
    let body = serde_json::to_vec(&sidecar).expect("serialises");
    match ctx
        .store
        .put_small(key, body.into(), PutCondition::IfMatch(tag))
        .await
    {
        Ok(put) => *etag = put.etag,
        Err(e) => tracing::debug!(event = "wal_sidecar_size_not_recorded", key, error = %e),
    }
}

/// Encodes and uploads `path` create-only to `dk`; `Some(stored bytes)` once
/// it is stored and read back at that size, `None` when a concurrent pusher
/// stored the name first.
async fn upload(
    ctx: &WalArchive,
    opts: &EncodeOptions,
    path: &Path,
    dk: &str,
    sha: &str,
    size: u64,
) -> Result<Option<u64>, WalError> {
    let put = PutOptions {
        size_hint: Some(size),
        if_absent: true,
    };
    let ended = encode_and_put(ctx, opts, path, dk, put).await?;
    match ended {
        // A concurrent pusher stored it first.
        Err(StreamError::Sink(StorageError::PreconditionFailed { .. })) => Ok(None),
        Err(StreamError::Sink(e)) => Err(e.into()),
        Err(StreamError::Pipeline(e)) => {
            let _ = ctx.store.delete(dk).await;
            Err(e.into())
        }
        Ok((st, put)) => {
            if st.raw_sha256 != sha {
                let _ = ctx.store.delete(dk).await;
                return Err(WalError::Invalid(format!(
                    "`{}` changed while it was archived (sha256 {sha} then {}); upload discarded",
                    path.display(),
                    st.raw_sha256
                )));
            }
            stored_size(ctx, dk, &put, &st).await.map(Some)
        }
    }
}

/// Encodes the local file `path` and uploads it to `key` with `put`: the
/// encoder's stats and the PUT's result, or the stream's first failure.
async fn encode_and_put(
    ctx: &WalArchive,
    opts: &EncodeOptions,
    path: &Path,
    key: &str,
    put: PutOptions,
) -> Result<Result<(EncodeStats, PutResult), StreamError<StorageError>>, WalError> {
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
    let input = format!("reading `{}`", path.display());
    let output = format!("the upload of `{key}` to {}", ctx.store.describe());
    let ended = pipeline::encode(src, opts.clone())
        .finish(Ends::new(&input, &output), None, |mut reader| async move {
            ctx.store.put_stream(key, &mut reader, put).await
        })
        .await;
    Ok(ended.map(|((st, _), put)| (st, put)))
}

/// Checks that `key` reads back at the size its upload stored; that size.
async fn stored_size(
    ctx: &WalArchive,
    key: &str,
    put: &PutResult,
    st: &EncodeStats,
) -> Result<u64, WalError> {
    match ctx.store.head(key).await? {
        Some(o) if o.size == put.size && o.size == st.stored_bytes => Ok(o.size),
        other => Err(WalError::Invalid(format!(
            "`{key}` reads back as {:?} bytes after upload, expected {}",
            other.map(|o| o.size),
            st.stored_bytes
        ))),
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

/// The WAL file name of `path` (as PostgreSQL passes `%p` to `wal-push`), checked.
pub fn push_name(path: &Path) -> Result<String, WalError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::BadName(path.display().to_string()))?
        .to_string();
    check_name(&name)?;
    Ok(name)
}

/// Decodes `decoded` (read from `input`, for messages) into the file `tmp`.
async fn decode_to_file(
    decoded: pipeline::Decoded,
    input: &str,
    tmp: &Path,
) -> Result<pipeline::DecodeStats, WalError> {
    let output = format!("writing `{}`", tmp.display());
    let ended = decoded
        .finish(Ends::new(input, &output), None, |mut reader| async move {
            let mut f = tokio::fs::File::create(tmp).await?;
            tokio::io::copy(&mut reader, &mut f).await?;
            f.flush().await?;
            Ok::<(), std::io::Error>(())
        })
        .await;
    match ended {
        Err(StreamError::Pipeline(e)) => Err(WalError::from(e)),
        Err(StreamError::Sink(source)) => Err(WalError::Local {
            what: "writing fetched WAL to",
            path: tmp.to_path_buf(),
            source,
        }),
        Ok((s, ())) => Ok(s),
    }
}

/// `archive_command`: archives the file at `path` (as PostgreSQL passes `%p`)
/// into `ctx`, encrypted with `opts`, and uploads following `.ready` files
/// ahead in parallel.
pub async fn wal_push(
    ctx: &WalArchive,
    mut opts: EncodeOptions,
    path: &Path,
    push: PushOptions,
) -> Result<WalPushReport, WalError> {
    let name = push_name(path)?;
    let source = ctx.source.as_str();
    // One segment is 16 MiB: a couple of zstd workers is plenty and starts fast.
    opts.workers = opts.workers.min(2);
    let is_segment = name.len() == 24 || name.ends_with(".partial");
    if is_segment {
        check_cluster(ctx, path, &name).await?;
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
    let ctx_ref = ctx;
    let opts_ref = &opts;
    let main = push_one(ctx_ref, opts_ref, push, path, &name);
    let extras = stream::iter(ahead.into_iter().map(|n| {
        let p = pg_wal.join(&n);
        async move {
            let r = push_one(ctx_ref, opts_ref, push, &p, &n).await;
            if let Err(e) = &r {
                tracing::warn!(event = "wal_push_ahead_failed", name = %n, error = %e);
            }
            r.map(|o| (n, o))
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
        .filter(|r| matches!(r, Ok((_, WalPushOutcome::Uploaded | WalPushOutcome::Replaced))))
        .count();
    let mut stored = vec![name.clone()];
    stored.extend(extras.iter().filter_map(|r| r.as_ref().ok().map(|(n, _)| n.clone())));
    let ahead_failed = extras.iter().filter(|r| r.is_err()).count();
    tracing::info!(event = "wal_pushed", source, name = %name, outcome = ?outcome, ahead_uploaded, ahead_failed);
    Ok(WalPushReport {
        name,
        outcome,
        ahead_uploaded,
        ahead_failed,
        stored,
    })
}

/// Downloads `name` to `dest` (via a temp file renamed into place).
async fn fetch_one(
    ctx: &WalArchive,
    ids: Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<(), WalError> {
    let not_found = || WalError::NotFound {
        name: name.to_string(),
        source_name: ctx.source.clone(),
        store: ctx.store.describe(),
    };
    let (sc, _) = read_sidecar(ctx, name, Purpose::Fetch)
        .await?
        .ok_or_else(not_found)?;
    // Before a byte of data is read: the sidecar's checksum is what the
    // data is checked against, so it must be the pusher's own.
    authenticate_sidecar(ctx, name, &sc)?;
    let stored = match ctx
        .store
        .get_stream(&layout::wal_data(&ctx.source, name))
        .await
    {
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
    decode_into_place(decoded, &input, &tmp, dest, |raw| {
        (raw == sc.raw_bytes).then_some(()).ok_or_else(|| {
            WalError::Invalid(format!(
                "`{name}` decoded to {raw} bytes but {} were archived",
                sc.raw_bytes
            ))
        })
    })
    .await
}

/// Decodes `decoded` (read from `input`) into `tmp`, checks its decoded size
/// with `size_ok`, then renames it to `dest`; `tmp` goes on any failure.
async fn decode_into_place(
    decoded: pipeline::Decoded,
    input: &str,
    tmp: &Path,
    dest: &Path,
    size_ok: impl FnOnce(u64) -> Result<(), WalError>,
) -> Result<(), WalError> {
    let res = match decode_to_file(decoded, input, tmp).await {
        Err(e) => Err(e),
        Ok(s) => match size_ok(s.raw_bytes) {
            Err(e) => Err(e),
            Ok(()) => tokio::fs::rename(tmp, dest)
                .await
                .map_err(|source| WalError::Local {
                    what: "moving fetched WAL into place at",
                    path: dest.to_path_buf(),
                    source,
                }),
        },
    };
    if res.is_err() {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    res
}

pub(crate) async fn fetch_with_retries(
    ctx: &WalArchive,
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

/// `restore_command`: fetches WAL file `name` (`%f`) from `ctx` to `dest`
/// (`%p`), decrypting with `ids`, using and refilling the prefetch cache
/// `pg_wal/.gsdr-prefetch`.
pub async fn wal_fetch(
    ctx: &WalArchive,
    ids: Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<FetchOutcome, WalError> {
    check_name(name)?;
    let source = ctx.source.as_str();
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
        fetch_or_explain(ctx, &ids, name, dest).await?;
        FetchOutcome::Downloaded
    };
    if let (Some(seg), true) = (seg, ctx.cfg.prefetch > 0) {
        prefetch(ctx, &ids, &cache, seg).await;
    }
    tracing::debug!(event = "wal_fetched", source, name, outcome = ?outcome);
    Ok(outcome)
}

/// `wal-fetch` of one file that is not in the prefetch cache: downloads it,
/// and when a segment is not found, tells the end of the archive
/// ([`WalError::NotFound`], exit 1) from a broken one ([`WalError::Broken`],
/// which stops recovery). Evidence younger than `in_flight_grace` (a
/// sidecar or later segment just stored) may be a push under way: the
/// segment is looked for again, once a second, for up to that long.
pub(crate) async fn fetch_or_explain(
    ctx: &WalArchive,
    ids: &Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<(), WalError> {
    let seg_bytes = ctx.cfg.wal_segment_bytes;
    let grace = ctx.cfg.in_flight_grace.0;
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let not_found = match fetch_with_retries(ctx, ids, name, dest).await {
            Err(e @ WalError::NotFound { .. }) => e,
            other => return other,
        };
        // `.history` and other files: absent is the answer PostgreSQL expects.
        let Some(seg) = SegmentId::parse(name, seg_bytes) else {
            return Err(not_found);
        };
        let index =
            WalIndex::read(ctx.store.as_ref(), &ctx.source, Some(&name[..8]), seg_bytes).await?;
        let missing = index.missing(seg);
        if missing == Missing::End {
            // The segment being streamed: its newest partial is the end of WAL.
            if fetch_partial(ctx, ids, name, dest).await? {
                return Ok(());
            }
            // Completed (and its partial dropped) since the first look?
            return match fetch_with_retries(ctx, ids, name, dest).await {
                Err(WalError::NotFound { .. }) => Err(not_found),
                other => other,
            };
        }
        let now = Utc::now();
        let young = missing
            .evidence_at()
            .is_some_and(|t| now.signed_duration_since(t).to_std().unwrap_or_default() < grace);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if young && !left.is_zero() {
            tracing::info!(event = "wal_fetch_waiting_for_push", source = %ctx.source, name, left_secs = left.as_secs());
            tokio::time::sleep(left.min(std::time::Duration::from_secs(1))).await;
            continue;
        }
        let when = |t: Option<DateTime<Utc>>| {
            t.map_or("stored at an unknown time".to_string(), |t| {
                format!(
                    "stored at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
        };
        let err = WalError::Broken {
            name: name.to_string(),
            source_name: ctx.source.clone(),
            store: ctx.store.describe(),
            problem: walchain::describe(&missing, when),
            starts_at: super::format_lsn(seg.number * seg_bytes),
        };
        tracing::error!(event = "wal_fetch_broken_archive", source = %ctx.source, name, error = %err);
        return Err(err);
    }
}

/// Downloads the streamed partial of segment `name` (`capture = "stream"`)
/// to `dest`; `false` when there is none. pg_receivewal's partial files are
/// full-size, zero-filled past the last received byte, which recovery reads
/// as the end of WAL. No sidecar: the age encryption authenticates the
/// object, and its decoded size must be one segment.
pub(crate) async fn fetch_partial(
    ctx: &WalArchive,
    ids: &Arc<Identities>,
    name: &str,
    dest: &Path,
) -> Result<bool, WalError> {
    let key = layout::wal_stream_partial(&ctx.source, name);
    let stored = match ctx.store.get_stream(&key).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(lookup_err(e, Purpose::Fetch)),
    };
    let decoded = pipeline::decode(stored, ids.clone(), DecodeExpect::default());
    let tmp = dest.with_file_name(format!(".{name}.partial.gsdr-tmp"));
    let input = format!("the download of `{key}` from {}", ctx.store.describe());
    let segment = ctx.cfg.wal_segment_bytes;
    decode_into_place(decoded, &input, &tmp, dest, |raw| {
        (raw == segment).then_some(()).ok_or_else(|| {
            WalError::Invalid(format!(
                "the streamed partial `{key}` decoded to {raw} bytes, not one {segment}-byte segment"
            ))
        })
    })
    .await?;
    tracing::info!(event = "wal_fetched_partial", source = %ctx.source, name, "the streamed partial: recovery ends in it");
    Ok(true)
}

/// Stores the local file `path` (a snapshot of pg_receivewal's `.partial`)
/// as the streamed partial of segment `name`, replacing the previous one
/// (one PUT: a reader sees the old or the new object, whole). Returns the
/// stored size, read back.
pub(crate) async fn store_partial(
    ctx: &WalArchive,
    opts: &EncodeOptions,
    path: &Path,
    name: &str,
) -> Result<u64, WalError> {
    let key = layout::wal_stream_partial(&ctx.source, name);
    let put = PutOptions {
        size_hint: Some(ctx.cfg.wal_segment_bytes),
        if_absent: false,
    };
    match encode_and_put(ctx, opts, path, &key, put).await? {
        Err(StreamError::Sink(e)) => Err(e.into()),
        Err(StreamError::Pipeline(e)) => Err(e.into()),
        Ok((st, put)) => stored_size(ctx, &key, &put, &st).await,
    }
}

/// Keeps the next `prefetch` segments after `seg` in `cache`: refills (in
/// parallel) once fewer than half are there, and drops older leftovers.
async fn prefetch(ctx: &WalArchive, ids: &Arc<Identities>, cache: &Path, seg: SegmentId) {
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
    use crate::layout::{wal_data as data_key, wal_sidecar as sidecar_key};

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
    fn history_files_parse() {
        let h = "1\t0/3000000\tno recovery target specified\n\n# comment\n2\t0/5A00100\tbefore 2026-01-01\n";
        assert_eq!(
            parse_history(h),
            Some(vec![(1, 0x300_0000), (2, 0x5A0_0100)])
        );
        assert_eq!(parse_history(""), Some(vec![]));
        assert_eq!(parse_history("x\t0/1\n"), None);
    }

    #[test]
    fn list_denied_names_the_permission_and_stops_recovery() {
        let e = lookup_err(
            StorageError::AccessDenied {
                op: "read",
                store: "s3://b/p".into(),
                key: "pg/wal/00000002/00000002.history.json".into(),
                reason: crate::storage::Denied::Permission,
                source: "403".into(),
            },
            Purpose::Fetch,
        );
        let m = e.to_string();
        assert!(
            m.contains("s3:ListBucket") && m.contains("stops recovery"),
            "{m}"
        );
        assert!(e.fetch_exit_code() > 125);
        assert_eq!(e.push_exit_code(), 1);
        let nf = lookup_err(
            StorageError::NotFound {
                store: "s".into(),
                key: "k".into(),
            },
            Purpose::Push,
        );
        assert!(matches!(nf, WalError::Storage(_)));
    }

    #[test]
    fn a_signed_sidecar_verifies_for_its_source_only_and_any_change_is_refused() {
        use crate::signing::{SignError, Signer, Trust};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, Signer::generate().0).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let signer = Signer::read(&p).unwrap();
        let mut sc = WalSidecar {
            name: "000000010000000000000003".into(),
            raw_sha256: "ab".repeat(32),
            raw_bytes: 16 << 20,
            pushed_at: chrono::Utc::now(),
            gsdr_version: "1".into(),
            stored_bytes: Some(1000),
            signature: None,
        };
        sc.sign("pg", &signer);
        let trust = Trust {
            keys: vec![signer.verify_key()],
            allow_unsigned: false,
        };
        // Read back from its JSON, as wal-fetch does.
        let back: WalSidecar = serde_json::from_slice(&serde_json::to_vec(&sc).unwrap()).unwrap();
        back.authenticate("pg", "k", &trust).unwrap();
        // The same sidecar under another source's prefix does not pass.
        assert!(matches!(
            back.authenticate("pg2", "k", &trust),
            Err(SignError::BadSignature { .. })
        ));
        let mut changed = back.clone();
        changed.stored_bytes = Some(999);
        assert!(matches!(
            changed.authenticate("pg", "k", &trust),
            Err(SignError::BadSignature { .. })
        ));
        let mut unsigned = back.clone();
        unsigned.signature = None;
        let e = unsigned.authenticate("pg", "k", &trust).unwrap_err();
        assert!(untrusted_problem(&e).contains("--allow-unsigned"), "{e}");
        // A manifest signature over the same JSON is no sidecar signature.
        let mut plain = back.clone();
        plain.signature = None;
        let as_manifest = signer.sign(&serde_json::to_vec(&plain).unwrap());
        plain.signature = Some(as_manifest);
        assert!(plain.authenticate("pg", "k", &trust).is_err());
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
