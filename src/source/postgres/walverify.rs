//! The state of a WAL archive: gaps per timeline (`gsdr wal-verify`), how
//! far a restore reaches (`gsdr status`: the end of the contiguous chain,
//! the cluster's current RPO). The retention rule that keeps every segment
//! a retained base backup needs is [`super::walfloor`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::base::BaseDetails;
use super::wal::{self, WalArchive, WalError};
use super::walchain::{self, WalIndex};
use super::walname::file_of_key;
use super::SegmentId;
use crate::catalog::Catalog;
use crate::layout;

/// Most missing names listed per timeline (the count is always exact).
const MAX_LISTED: usize = 100;

/// One timeline of the archive.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Timeline id, 8 hex digits.
    pub timeline: String,
    /// Oldest segment archived.
    pub first: String,
    /// Newest segment archived.
    pub last: String,
    /// Segments present (object and sidecar).
    pub found: usize,
    /// Segments missing between `first` and `last`.
    pub missing_count: u64,
    /// The first missing names (up to 100).
    pub missing: Vec<String>,
    /// Names with a sidecar but no data object (or an empty one), or the
    /// reverse (an interrupted push, a damaged object).
    pub incomplete: Vec<String>,
}

/// Whether one base backup can be restored from this archive.
#[derive(Debug, Clone, Serialize)]
pub struct BaseCoverage {
    /// Backup id.
    pub id: String,
    /// First WAL file needed.
    pub first_segment: String,
    /// WAL file holding its stop LSN.
    pub last_segment: String,
    /// Every file from first to last is archived.
    pub restorable: bool,
}

/// Result of `gsdr wal-verify`.
#[derive(Debug, Clone, Serialize)]
pub struct WalVerifyReport {
    /// Source.
    pub source: String,
    /// Per timeline.
    pub timelines: Vec<TimelineReport>,
    /// `.history` files archived.
    pub history_files: Vec<String>,
    /// Base backups and whether their WAL is complete.
    pub base_backups: Vec<BaseCoverage>,
    /// Files whose sidecar the policy's `signing.verify_keys` do not accept
    /// (checked only when the policy has verify keys): never replayed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untrusted: Vec<UntrustedFile>,
    /// No gaps, nothing incomplete, every base backup restorable.
    pub ok: bool,
}

/// A WAL file whose sidecar is refused.
#[derive(Debug, Clone, Serialize)]
pub struct UntrustedFile {
    /// File name.
    pub name: String,
    /// Why, naming the key, and what to do ([`WalError::Untrusted`]).
    pub problem: String,
}

/// Sidecars read at once while checking signatures.
const SIDECAR_READS: usize = 16;

/// The files among `names` whose sidecar `ctx.trust` refuses (or that
/// cannot be read); nothing is read when the policy has no verify keys.
async fn untrusted(ctx: &WalArchive, names: Vec<String>) -> Result<Vec<UntrustedFile>, WalError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    if ctx.trust.keys.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<Option<UntrustedFile>> = stream::iter(names.into_iter().map(|n| async move {
        let refused = |e: WalError| {
            Some(UntrustedFile {
                name: n.clone(),
                problem: e.to_string(),
            })
        };
        match wal::read_sidecar(ctx, &n, wal::Purpose::Fetch).await {
            Ok(Some((sc, _))) => Ok(wal::authenticate_sidecar(ctx, &n, &sc).err().and_then(refused)),
            // Listed a moment ago: deleted since (prune), nothing to trust.
            Ok(None) => Ok(None),
            Err(e @ WalError::Invalid(_)) => Ok(refused(e)),
            Err(e) => Err(e),
        }
    }))
    .buffered(SIDECAR_READS)
    .try_collect()
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Result of `gsdr status` for a postgres source.
#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    /// Source.
    pub source: String,
    /// The end of the contiguous WAL chain from the first segment of the
    /// newest restorable base backup: what a restore to latest reaches
    /// ([`super::walchain`]). `None` without a restorable base backup.
    pub last_segment: Option<String>,
    /// When it was stored (when the streamed partial after it was, if one is:
    /// recovery replays into that partial).
    pub last_archived_at: Option<DateTime<Utc>>,
    /// The streamed partial after `last_segment` (`capture = "stream"`), if stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streamed_partial: Option<String>,
    /// Seconds since then: the current RPO bound from archiving alone.
    pub seconds_since_last_archive: Option<i64>,
    /// The base backup that chain starts from.
    pub chain_base_backup: Option<String>,
    /// Its first segment (where the chain starts).
    pub chain_first: Option<String>,
    /// The missing segment that cuts the chain while later ones are stored
    /// (those restore nothing until it is back).
    pub hole_at: Option<String>,
    /// The newest complete segment stored, chain or not.
    pub newest_segment: Option<String>,
    /// Newest base backup id.
    pub last_base_backup: Option<String>,
    /// Its consistency time.
    pub last_base_backup_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Entry {
    data: bool,
    sidecar: bool,
    at: Option<DateTime<Utc>>,
}

async fn scan(ctx: &WalArchive) -> Result<(BTreeMap<String, Entry>, u64, Catalog), WalError> {
    let source = ctx.source.as_str();
    let objects = ctx.store.list(&layout::wal_prefix(source)).await?;
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for o in objects {
        let Some((name, is_data)) = file_of_key(source, &o.key) else {
            continue;
        };
        let e = files.entry(name.to_string()).or_default();
        if is_data {
            // A zero-byte object holds nothing: as good as missing.
            e.data = o.size > 0;
            e.at = o.last_modified;
        } else {
            e.sidecar = true;
        }
    }
    Ok((
        files,
        ctx.cfg.wal_segment_bytes,
        Catalog::new(ctx.store.clone()),
    ))
}

/// Checks the archive `ctx` (its source on one target): gaps per timeline
/// and base backup coverage.
pub async fn wal_verify(ctx: &WalArchive) -> Result<WalVerifyReport, WalError> {
    let source = ctx.source.as_str();
    let (files, seg_bytes, catalog) = scan(ctx).await?;
    let with_sidecar = files
        .iter()
        .filter(|(_, e)| e.sidecar)
        .map(|(n, _)| n.clone())
        .collect();
    let untrusted = untrusted(ctx, with_sidecar).await?;
    let refused: std::collections::BTreeSet<&str> =
        untrusted.iter().map(|u| u.name.as_str()).collect();
    let complete = |n: &str| {
        !refused.contains(n) && files.get(n).is_some_and(|e| e.data && e.sidecar)
    };
    let mut by_tli: BTreeMap<u32, Vec<(SegmentId, String)>> = BTreeMap::new();
    let mut history = Vec::new();
    for name in files.keys() {
        if name.ends_with(".history") {
            history.push(name.clone());
        }
        if let Some(s) = SegmentId::parse(name, seg_bytes) {
            by_tli
                .entry(s.timeline)
                .or_default()
                .push((s, name.clone()));
        }
    }
    let mut timelines = Vec::new();
    for (tli, segs) in by_tli {
        let first = segs.first().expect("non-empty").0;
        let last = segs.last().expect("non-empty").0;
        let mut missing = Vec::new();
        let mut missing_count = 0u64;
        let mut incomplete = Vec::new();
        let mut found = 0;
        let mut s = first;
        while s <= last {
            let n = s.name(seg_bytes);
            match files.get(&n) {
                Some(e) if e.data && e.sidecar => found += 1,
                Some(_) => incomplete.push(n),
                None => {
                    missing_count += 1;
                    if missing.len() < MAX_LISTED {
                        missing.push(n);
                    }
                }
            }
            s = s.next();
        }
        timelines.push(TimelineReport {
            timeline: format!("{tli:08X}"),
            first: first.name(seg_bytes),
            last: last.name(seg_bytes),
            found,
            missing_count,
            missing,
            incomplete,
        });
    }
    let mut base_backups = Vec::new();
    for m in catalog.list(Some(source)).await? {
        let Ok(d) = serde_json::from_value::<BaseDetails>(m.consistency.details.clone()) else {
            continue;
        };
        let (Some(a), Some(b)) = (
            SegmentId::parse(&d.first_segment, seg_bytes),
            SegmentId::parse(&d.last_segment, seg_bytes),
        ) else {
            continue;
        };
        let mut s = a;
        let mut ok = true;
        while s <= b {
            ok &= complete(&s.name(seg_bytes));
            s = s.next();
        }
        base_backups.push(BaseCoverage {
            id: m.id,
            first_segment: d.first_segment,
            last_segment: d.last_segment,
            restorable: ok,
        });
    }
    let ok = timelines
        .iter()
        .all(|t| t.missing_count == 0 && t.incomplete.is_empty())
        && base_backups.iter().all(|b| b.restorable)
        && untrusted.is_empty();
    Ok(WalVerifyReport {
        source: source.to_string(),
        timelines,
        history_files: history,
        base_backups,
        untrusted,
        ok,
    })
}

/// How far a restore to latest of the archive `ctx` reaches (the end of
/// the contiguous WAL chain), and its newest base backup.
pub async fn wal_status(ctx: &WalArchive) -> Result<WalStatus, WalError> {
    let source = ctx.source.as_str();
    let index = WalIndex::read(ctx.store.as_ref(), source, None, ctx.cfg.wal_segment_bytes).await?;
    let manifests = Catalog::new(ctx.store.clone()).list(Some(source)).await?;
    let base = manifests
        .iter()
        .filter(|m| m.kind == "base")
        .max_by_key(|m| m.recovery_point());
    let rec = walchain::recoverable(&index, &manifests);
    let at = rec.as_ref().and_then(|r| r.chain.reached_at());
    Ok(WalStatus {
        source: source.to_string(),
        last_segment: rec.as_ref().map(|r| r.chain.last.clone()),
        last_archived_at: at,
        streamed_partial: rec.as_ref().and_then(|r| r.chain.partial.clone()),
        seconds_since_last_archive: at.map(|t| (Utc::now() - t).num_seconds()),
        chain_base_backup: rec.as_ref().map(|r| r.backup.clone()),
        chain_first: rec.as_ref().map(|r| r.chain.first.clone()),
        hole_at: rec.as_ref().and_then(|r| r.chain.hole_at.clone()),
        newest_segment: index.newest().map(|(n, _)| n),
        last_base_backup: base.map(|m| m.id.clone()),
        last_base_backup_at: base.map(|m| m.recovery_point()),
    })
}
