//! Off-site replication: every committed backup is copied from the primary
//! target to the off-site one (another S3 endpoint with its own
//! credentials), data first, manifest last, so the off-site catalog never
//! lists a backup whose data is not there whole.
//!
//! The data object is streamed (memory: the off-site store's upload bound,
//! `part_size × (upload_concurrency + 1)`), through a reader that hashes it
//! on the way and turns the end of the stream into an error unless size and
//! SHA-256 match the manifest: a corrupt or cut copy is never committed.
//!
//! [`catch_up`] copies whatever the off-site copy lacks, archived WAL
//! included ([`wal`]; the daemon runs it on start and after every backup).
//! Every copy is bounded by the stores' own deadlines (S3 `read_timeout` on
//! the primary's download, `part_timeout` on the off-site upload); a copy
//! that still fails with a temporary error after its attempts ends the
//! sweep's copying (the rest are reported as not tried), so a dead server
//! costs one copy's attempts, not one per backup. [`check`] lists what it lacks without
//! copying (`gsdr replicate --check`); [`safety`] computes the RPO view: a
//! backup is *safe* only once both copies exist.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::catalog::{Catalog, Manifest};
use crate::error::{Error, Result, RetryClass};
use crate::metrics::events;
use crate::pipeline::PipelineError;
use crate::signing::Trust;
use crate::storage::{PutCondition, PutOptions, Store};

/// Attempts per backup within one sweep (temporary errors only).
const COPY_ATTEMPTS: u32 = 3;
/// First wait between attempts (doubled each time).
const COPY_BACKOFF: Duration = Duration::from_secs(2);

/// Reader that checks size and SHA-256 at end of stream.
struct Checked<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expect_size: u64,
    expect_sha: String,
    key: String,
    /// Set when the object read back differs from the manifest: (bytes, SHA-256).
    mismatch: Option<(u64, String)>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() && buf.remaining() > 0 {
                    let sha = hex::encode(this.hasher.clone().finalize());
                    if this.read != this.expect_size || sha != this.expect_sha {
                        this.mismatch = Some((this.read, sha.clone()));
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "`{}` read back as {} bytes with SHA-256 {sha}, but its manifest says {} bytes, {}; not copied",
                                this.key, this.read, this.expect_size, this.expect_sha
                            ),
                        )));
                    }
                } else {
                    this.hasher.update(new);
                    this.read += new.len() as u64;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Copies one backup: data (streamed, checked), then the manifest. Returns
/// stored bytes copied. A manifest `trust` refuses (forged, unsigned) is not
/// copied: the off-site copy must not launder it.
pub async fn copy_backup(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    m: &Manifest,
    trust: &Trust,
) -> Result<u64> {
    m.authenticate(trust)?;
    let manifest_key = m.manifest_key();
    let (manifest_bytes, _) = primary.get_small(&manifest_key, 16 << 20).await?;
    let body = primary.get_stream(&m.data_key).await?;
    let mut reader = Checked {
        inner: body,
        hasher: Sha256::new(),
        read: 0,
        expect_size: m.stored_bytes,
        expect_sha: m.stored_sha256.clone(),
        key: m.data_key.clone(),
        mismatch: None,
    };
    let put = offsite
        .put_stream(
            &m.data_key,
            &mut reader,
            PutOptions {
                size_hint: Some(m.stored_bytes),
                if_absent: false,
            },
        )
        .await;
    // The primary's object is not the one the manifest signed for: damage,
    // not a store to wait for (no retry, and the other copies go on).
    if let Some((read, actual)) = reader.mismatch {
        return Err(if read != m.stored_bytes {
            PipelineError::Truncated {
                read,
                expected: m.stored_bytes,
            }
        } else {
            PipelineError::ChecksumMismatch {
                expected: m.stored_sha256.clone(),
                actual,
            }
        }
        .into());
    }
    let put = put?;
    if put.size != m.stored_bytes {
        return Err(Error::Invalid(format!(
            "off-site copy of `{}` in {} stored {} bytes, expected {}",
            m.data_key,
            offsite.describe(),
            put.size,
            m.stored_bytes
        )));
    }
    match offsite
        .put_small(&manifest_key, manifest_bytes, PutCondition::IfAbsent)
        .await
    {
        Ok(_) | Err(crate::storage::StorageError::PreconditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(m.stored_bytes)
}

/// Ids of the backups whose manifest the off-site store holds, by manifest key.
async fn offsite_manifests(
    offsite: &Arc<dyn Store>,
    source: Option<&str>,
) -> Result<BTreeSet<String>> {
    if let Some(s) = source {
        // The backup folders only, not the WAL beside them.
        return Ok(Catalog::new(offsite.clone())
            .manifest_keys(s)
            .await?
            .into_iter()
            .collect());
    }
    Ok(offsite
        .list("")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(crate::layout::MANIFEST_OBJECT))
        .collect())
}

/// What one sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// Backups copied (ids).
    pub copied: Vec<String>,
    /// Stored bytes copied.
    pub bytes: u64,
    /// Backups that could not be copied, with the error.
    pub failed: Vec<(String, String)>,
    /// Archived WAL copied, per source that has any (PostgreSQL).
    pub wal: Vec<crate::source::LogSweep>,
}

pub use crate::source::Engines;

/// Copies every backup (of `source`, if given) the off-site store lacks,
/// oldest first, then each source's log; manifests `trust` refuses are
/// reported, not copied.
pub async fn catch_up(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: Option<&str>,
    engines: &Engines,
    trust: &Trust,
) -> Result<SweepReport> {
    let have = offsite_manifests(offsite, source).await?;
    let all = Catalog::new(primary.clone()).list(source).await?;
    let mut report = SweepReport::default();
    // Set once a copy failed with a temporary error after every attempt
    // (a store down or not answering): the rest wait for the next sweep
    // rather than each spending its attempts on the same dead server.
    let mut gave_up: Option<String> = None;
    for m in all.iter().filter(|m| !have.contains(&m.manifest_key())) {
        if let Some(why) = &gave_up {
            report.failed.push((
                m.id.clone(),
                format!("not tried in this sweep: an earlier copy failed ({why})"),
            ));
            continue;
        }
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match copy_backup(primary, offsite, m, trust).await {
                Ok(bytes) => {
                    events::Replicated {
                        source: &m.source,
                        id: &m.id,
                        bytes,
                        duration_secs: start.elapsed().as_secs_f64(),
                    }
                    .emit();
                    report.copied.push(m.id.clone());
                    report.bytes += bytes;
                    break;
                }
                Err(e) => {
                    let msg = e.to_string();
                    events::ReplicationFailed {
                        source: &m.source,
                        id: &m.id,
                        error: &msg,
                    }
                    .emit();
                    let temporary = e.retry_class() == RetryClass::Temporary;
                    if temporary && attempt < COPY_ATTEMPTS {
                        tokio::time::sleep(COPY_BACKOFF * 2u32.pow(attempt - 1)).await;
                        attempt += 1;
                        continue;
                    }
                    if temporary {
                        gave_up = Some(format!("{}: {msg}", m.id));
                    }
                    report.failed.push((m.id.clone(), msg));
                    break;
                }
            }
        }
    }
    // WAL after the backups: a base backup off-site is only restorable with it.
    // A failed WAL sweep is reported beside the backups' failures, not in
    // their place (its error would hide why the copies failed).
    for (s, engine) in log_sources(&all, source, engines) {
        let Some(log) = engine.log_archive() else {
            continue;
        };
        match log.catch_up(primary, offsite, trust).await {
            Ok(w) if w.copied > 0 || !w.failed.is_empty() => report.wal.push(w),
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                events::ReplicationFailed {
                    source: &s,
                    id: "(wal sweep)",
                    error: &msg,
                }
                .emit();
                report.wal.push(crate::source::LogSweep {
                    failed: vec![(format!("{s}/wal/"), msg)],
                    source: s,
                    ..Default::default()
                });
            }
        }
    }
    for s in sources_of(&all) {
        if let Ok(st) = safety(primary, Some(offsite), &s, engines).await {
            st.emit();
        }
    }
    Ok(report)
}

fn sources_of(all: &[Manifest]) -> BTreeSet<String> {
    all.iter().map(|m| m.source.clone()).collect()
}

/// Sources whose log (PostgreSQL's WAL) is replicated, with their engine:
/// those with backups of an engine that keeps a log (a log without a backup
/// restores nothing), plus the named source (its log is looked for by every
/// engine that keeps one: without a backup its engine is not known here).
fn log_sources(
    all: &[Manifest],
    source: Option<&str>,
    engines: &Engines,
) -> BTreeMap<String, Arc<dyn crate::source::Engine>> {
    // The policy's engine when it is of the backups' kind: its settings
    // decide whether the source keeps a log (a captured Redis source does,
    // a snapshot-only one not); else the kind's defaults, for a source no
    // longer in the policy. A named source without backups takes only the
    // policy's engine: guessing a kind would sweep another engine's log.
    let mut out = BTreeMap::new();
    let named = source.map(|s| (s, None));
    for (s, kind) in all
        .iter()
        .map(|m| (m.source.as_str(), Some(m.engine.as_str())))
        .chain(named)
    {
        if out.contains_key(s) {
            continue;
        }
        let engine = match (engines.get(s), kind) {
            (Some(e), None) => Some(e.clone()),
            (Some(e), Some(k)) if e.kind() == k => Some(e.clone()),
            (_, Some(k)) => crate::source::engine_for_kind(k, s).and_then(Result::ok),
            (None, None) => None,
        };
        if let Some(e) = engine.filter(|e| e.log_archive().is_some()) {
            out.insert(s.to_string(), e);
        }
    }
    out
}

/// Something the off-site copy lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// Source.
    pub source: String,
    /// Backup id.
    pub id: String,
    /// What is wrong with the off-site copy.
    pub problem: String,
}

/// Lists what the off-site copy lacks or holds differently (`gsdr replicate --check`). Copies nothing.
/// Per source: the primary's listing and the off-site one (each its index
/// and its backup folders' objects, whose sizes stand for a HEAD of each
/// data object), not one request per backup.
pub async fn check(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: Option<&str>,
    engines: &Engines,
) -> Result<Vec<Missing>> {
    let off_cat = Catalog::new(offsite.clone());
    let all = Catalog::new(primary.clone()).list(source).await?;
    let sources: BTreeSet<&str> = all.iter().map(|m| m.source.as_str()).collect();
    let mut off_manifests = std::collections::HashMap::new();
    let mut off_skipped = std::collections::HashMap::new();
    let mut off_sizes = std::collections::HashMap::new();
    for s in sources {
        let (listing, objects) = off_cat.list_with_objects(s).await?;
        off_manifests.extend(listing.manifests.into_iter().map(|m| (m.manifest_key(), m)));
        off_skipped.extend(listing.skipped.into_iter().map(|k| (k.key.clone(), k)));
        off_sizes.extend(objects.into_iter().map(|o| (o.key, o.size)));
    }
    let mut out = Vec::new();
    for m in &all {
        let miss = |problem: String| Missing {
            source: m.source.clone(),
            id: m.id.clone(),
            problem,
        };
        match off_manifests.get(&m.manifest_key()) {
            Some(o) if o.stored_sha256 == m.stored_sha256 && o.stored_bytes == m.stored_bytes => {}
            Some(_) => {
                out.push(miss(
                    "the off-site manifest differs from the primary one".into(),
                ));
                continue;
            }
            None => {
                out.push(miss(match off_skipped.get(&m.manifest_key()) {
                    Some(k) => format!("the off-site manifest is unreadable: {}", k.detail),
                    None => "no manifest off-site".into(),
                }));
                continue;
            }
        }
        match off_sizes.get(&m.data_key) {
            None => out.push(miss("no data object off-site".into())),
            Some(&size) if size != m.stored_bytes => out.push(miss(format!(
                "the off-site data object is {size} bytes, the manifest says {}",
                m.stored_bytes
            ))),
            Some(_) => {}
        }
    }
    for (s, engine) in log_sources(&all, source, engines) {
        let Some(log) = engine.log_archive() else {
            continue;
        };
        if let Some(problem) = log
            .offsite_gap(primary, offsite)
            .await
            .map_err(Error::from_log)?
        {
            out.push(Missing {
                source: s,
                id: "wal".into(),
                problem,
            });
        }
    }
    Ok(out)
}

/// Newest recovery points of `source` and what is safe. For PostgreSQL the
/// archived WAL after a base backup counts too: a cluster is recoverable up
/// to the end of the contiguous WAL chain from its newest restorable base
/// backup on the copy that matters (`source::postgres::walchain`).
pub async fn safety(
    primary: &Arc<dyn Store>,
    offsite: Option<&Arc<dyn Store>>,
    source: &str,
    engines: &Engines,
) -> Result<Safety> {
    let prim = Catalog::new(primary.clone()).list(Some(source)).await?;
    let p = newest_point(primary, &prim, source, engines).await?;
    let (safe, lag) = match offsite {
        None => (p, 0.0),
        Some(o) => {
            let have = offsite_manifests(o, Some(source)).await?;
            let both: Vec<Manifest> = prim
                .into_iter()
                .filter(|m| have.contains(&m.manifest_key()))
                .collect();
            let s = newest_point(o, &both, source, engines).await?;
            let lag = match (p, s) {
                (Some(p), Some(s)) => secs_between(s, p),
                (Some(p), None) => secs_between(DateTime::<Utc>::UNIX_EPOCH, p),
                _ => 0.0,
            };
            (s, lag)
        }
    };
    Ok(Safety {
        source: source.to_string(),
        safe_point: safe,
        replication_lag_secs: lag,
    })
}

/// The RPO view of one source: its newest safe recovery point and the replication lag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Safety {
    /// Source.
    pub source: String,
    /// Newest recovery point on every required copy.
    pub safe_point: Option<DateTime<Utc>>,
    /// Newest primary recovery point − newest off-site one, seconds.
    pub replication_lag_secs: f64,
}

impl Safety {
    /// Publishes it ([`events::SafetyState`]).
    pub fn emit(&self) {
        events::SafetyState {
            source: &self.source,
            safe_point: self.safe_point,
            replication_lag_secs: self.replication_lag_secs,
        }
        .emit();
    }
}

/// The newest point a restore of `source` from `store` alone reaches: its
/// newest backup there, extended by the source's log there (WAL, a
/// continuous capture's segments).
pub async fn recoverable_point(
    store: &Arc<dyn Store>,
    source: &str,
    engines: &Engines,
) -> Result<Option<DateTime<Utc>>> {
    let manifests = Catalog::new(store.clone()).list(Some(source)).await?;
    newest_point(store, &manifests, source, engines).await
}

/// The newest recovery point `manifests` (all on `store`) give, extended,
/// for a postgres source with a restorable base backup there, to the end of
/// the contiguous WAL chain on `store` from that backup's first segment
/// (never to a newer segment a hole cuts off).
async fn newest_point(
    store: &Arc<dyn Store>,
    manifests: &[Manifest],
    source: &str,
    engines: &Engines,
) -> Result<Option<DateTime<Utc>>> {
    let backups = manifests.iter().map(Manifest::recovery_point).max();
    let mut logs = None;
    for (_, engine) in log_sources(manifests, Some(source), engines)
        .into_iter()
        .filter(|(s, _)| s == source)
    {
        if let Some(log) = engine.log_archive() {
            logs = logs.max(
                log.newest(store, manifests)
                    .await
                    .map_err(Error::from_log)?,
            );
        }
    }
    Ok(backups.max(logs))
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0)
}
