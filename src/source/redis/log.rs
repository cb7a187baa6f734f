//! The Redis capture log: the replication stream's segments, stored beside
//! the backups, and what status, retention, the off-site sweep and
//! restores read from it ([`RedisLog`], the engine's
//! [`LogArchive`](crate::source::LogArchive)).
//!
//! Layout: `<source>/log/<base id>/<start>-<end>_<t0>_<t1>_<replid>.seg`, one object
//! per segment, where `<base id>` is the backup (the RDB of the full sync)
//! the segment continues, `<start>`/`<end>` the replication offsets before
//! its first and of its last byte (20 digits, so keys sort by offset), and
//! `<t0>`/`<t1>` unix milliseconds: when its first byte was received and
//! when it was cut (every byte of it was received by then), and the
//! master's replication id it came under (so a restarted capture can ask
//! to continue the stream without decrypting anything). The object is
//! the pipeline's zstd + age of a header line (JSON: replid, offsets,
//! times, the receive-time marks) followed by the raw stream bytes.
//!
//! A base's *chain* is its segments from the base's own offset on, each
//! starting where the previous ended; a restore replays the chain and
//! never past a hole.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::slicer::Segment;
use crate::catalog::Manifest;
use crate::layout;
use crate::pipeline::{self, keys::Identities, DecodeExpect, EncodeOptions, Ends, StreamError};
use crate::source::error::{EngineError, EngineResult};
use crate::source::{LogError, LogPruned, LogSweep, LogTail, SourceMeta, SourceStream};
use crate::storage::{ObjectMeta, StorageError, Store};

/// Largest segment object read back (a segment is at most `slice_max_bytes`
/// plus one command, compressed).
const MAX_SEGMENT_STORED: u64 = 1 << 30;

/// The header line of a stored segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// Format version (1).
    pub v: u32,
    /// The master's replication id the bytes came under.
    pub replid: String,
    /// Offset before the first byte.
    pub start: u64,
    /// Offset of the last byte.
    pub end: u64,
    /// Unix ms the first byte was received.
    pub t0_ms: i64,
    /// Unix ms the segment was cut.
    pub t1_ms: i64,
    /// `(offset, unix ms)`: every byte up to `offset` was received by then.
    pub marks: Vec<(u64, i64)>,
}

/// A stored segment as its key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegKey {
    /// Key of the object.
    pub key: String,
    /// Stored size.
    pub size: u64,
    /// The backup it continues.
    pub base: String,
    /// Offset before its first byte.
    pub start: u64,
    /// Offset of its last byte.
    pub end: u64,
    /// Unix ms its first byte was received.
    pub t0_ms: i64,
    /// Unix ms it was cut.
    pub t1_ms: i64,
    /// The replication id it came under.
    pub replid: String,
}

impl SegKey {
    /// When it was cut.
    pub fn t1(&self) -> DateTime<Utc> {
        ms_time(self.t1_ms)
    }
}

/// A unix-ms instant.
pub fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The log key of segment `seg` of base `base` of `source`, received under `replid`.
pub fn segment_key(source: &str, base: &str, seg: &Segment, replid: &str) -> String {
    layout::log_object(
        source,
        &format!(
            "{base}/{:020}-{:020}_{}_{}_{replid}.seg",
            seg.start, seg.end, seg.t0_ms, seg.t1_ms
        ),
    )
}

/// Parses a key of `source`'s log; `None` for anything else.
pub fn parse_key(source: &str, o: &ObjectMeta) -> Option<SegKey> {
    let rest = o.key.strip_prefix(&layout::log_prefix(source))?;
    let (base, file) = rest.split_once('/')?;
    let file = file.strip_suffix(".seg")?;
    let (range, times) = file.split_once('_')?;
    let (start, end) = range.split_once('-')?;
    let (t0, rest) = times.split_once('_')?;
    let (t1, replid) = rest.split_once('_')?;
    Some(SegKey {
        key: o.key.clone(),
        size: o.size,
        base: base.to_string(),
        start: start.parse().ok()?,
        end: end.parse().ok()?,
        t0_ms: t0.parse().ok()?,
        t1_ms: t1.parse().ok()?,
        replid: replid.to_string(),
    })
}

/// Every segment of `source` in `store`, per base, by start offset.
pub async fn list(
    store: &dyn Store,
    source: &str,
) -> Result<BTreeMap<String, Vec<SegKey>>, StorageError> {
    let mut out: BTreeMap<String, Vec<SegKey>> = BTreeMap::new();
    for o in store.list(&layout::log_prefix(source)).await? {
        if let Some(k) = parse_key(source, &o) {
            out.entry(k.base.clone()).or_default().push(k);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|k| (k.start, std::cmp::Reverse(k.end)));
    }
    Ok(out)
}

/// The contiguous chain from `offset` among `segs` (sorted by start): at
/// each step the segment starting where the last ended (the longest, if a
/// retried cut stored two).
pub fn chain(offset: u64, segs: &[SegKey]) -> Vec<&SegKey> {
    let mut out = Vec::new();
    let mut at = offset;
    loop {
        let next = segs
            .iter()
            .filter(|s| s.start == at && s.end > at)
            .max_by_key(|s| s.end);
        match next {
            Some(s) => {
                at = s.end;
                out.push(s);
            }
            None => return out,
        }
    }
}

/// The replication offset a capture base starts from (its `FULLRESYNC`
/// offset); `None` for a backup that is not a capture's base.
pub fn base_offset(m: &Manifest) -> Option<u64> {
    let d = &m.consistency.details;
    if d.get("capture").and_then(|v| v.as_bool()) != Some(true) {
        return None;
    }
    d.get("master_repl_offset").and_then(|v| v.as_u64())
}

/// Where the newest capture base of `source` in `store` ends: its id, the
/// replication id and the offset of the last byte of its contiguous chain
/// (the base's own when it has no segment), for a restarted capture to ask
/// the node to continue (`PSYNC`).
pub async fn resume_point(
    store: &Arc<dyn Store>,
    source: &str,
) -> EngineResult<Option<(String, String, u64)>> {
    let manifests = crate::catalog::Catalog::new(store.clone())
        .list(Some(source))
        .await?;
    let Some((base, offset)) = manifests
        .iter()
        .filter_map(|m| base_offset(m).map(|o| (m, o)))
        .max_by_key(|(m, _)| m.id.clone())
    else {
        return Ok(None);
    };
    let Some(replid) = base
        .consistency
        .details
        .get("master_replid")
        .and_then(|v| v.as_str())
    else {
        return Ok(None);
    };
    let segs = list(store.as_ref(), source).await?;
    let c = segs.get(&base.id).map(|s| chain(offset, s)).unwrap_or_default();
    Ok(Some(match c.last() {
        Some(last) => (base.id.clone(), last.replid.clone(), last.end),
        None => (base.id.clone(), replid.to_string(), offset),
    }))
}

/// The stored bytes of a segment: header line + raw bytes, compressed and
/// encrypted by the pipeline (one thread, no zstd workers: segments are small).
pub async fn encode_segment(
    seg: &Segment,
    replid: &str,
    opts: &EncodeOptions,
) -> EngineResult<Vec<u8>> {
    let header = SegmentHeader {
        v: 1,
        replid: replid.to_string(),
        start: seg.start,
        end: seg.end,
        t0_ms: seg.t0_ms,
        t1_ms: seg.t1_ms,
        marks: seg.marks.clone(),
    };
    let mut raw = serde_json::to_vec(&header).expect("header serializes");
    raw.push(b'\n');
    raw.extend_from_slice(&seg.bytes);
    let src = SourceStream {
        reader: Box::pin(std::io::Cursor::new(raw)),
        done: Box::pin(async { Ok(SourceMeta::default()) }),
    };
    let mut opts = opts.clone();
    opts.workers = 0;
    let ended = pipeline::encode(src, opts)
        .finish_to_vec(Ends::new("a capture segment", "memory"))
        .await;
    match ended {
        Ok((_, out)) => Ok(out),
        Err(StreamError::Pipeline(e)) => Err(e.into()),
        Err(StreamError::Sink(e)) => Err(EngineError::Invalid(format!(
            "encoding a capture segment: {e}"
        ))),
    }
}

/// Reads segment `key` back: its header and raw stream bytes, checked
/// against the offsets its header and key name.
pub async fn read_segment(
    store: &dyn Store,
    k: &SegKey,
    ids: Arc<Identities>,
) -> EngineResult<(SegmentHeader, Vec<u8>)> {
    let (stored, _) = store.get_small(&k.key, MAX_SEGMENT_STORED).await?;
    let reader: crate::stream::BoxRead = Box::pin(std::io::Cursor::new(stored.to_vec()));
    let decoded = pipeline::decode(reader, ids, DecodeExpect::default());
    let input = format!("`{}` from {}", k.key, store.describe());
    let ended = decoded
        .finish_to_vec(Ends::new(&input, "memory"))
        .await;
    let raw = match ended {
        Ok((_, out)) => out,
        Err(StreamError::Pipeline(e)) => return Err(e.into()),
        Err(StreamError::Sink(e)) => {
            return Err(EngineError::Invalid(format!("reading `{}`: {e}", k.key)))
        }
    };
    let bad = |why: String| {
        EngineError::Invalid(format!(
            "capture segment `{}` in {} is damaged: {why}",
            k.key,
            store.describe()
        ))
    };
    let nl = raw
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line".into()))?;
    let header: SegmentHeader =
        serde_json::from_slice(&raw[..nl]).map_err(|e| bad(format!("header: {e}")))?;
    let bytes = raw[nl + 1..].to_vec();
    if header.start != k.start
        || header.end != k.end
        || header.end - header.start != bytes.len() as u64
    {
        return Err(bad(format!(
            "it holds {} bytes for offsets {}..{} (key: {}..{})",
            bytes.len(),
            header.start,
            header.end,
            k.start,
            k.end
        )));
    }
    Ok((header, bytes))
}

/// The Redis capture log of one source.
#[derive(Debug, Clone)]
pub struct RedisLog {
    /// Source.
    pub source: String,
}

/// How far base `m`'s chain in `segs` reaches: the cut time of its last
/// segment (`None`: `m` is no capture base, or has no segment yet).
fn chain_end(m: &Manifest, segs: &BTreeMap<String, Vec<SegKey>>) -> Option<(DateTime<Utc>, String)> {
    let off = base_offset(m)?;
    let c = chain(off, segs.get(&m.id)?);
    c.last().map(|s| (s.t1(), s.key.clone()))
}

/// What pruning the log did.
#[derive(Debug, Clone, Serialize)]
pub struct RedisLogPruned {
    /// Target.
    pub target: String,
    /// Source.
    pub source: String,
    /// Bases whose segments were (or would be) deleted.
    pub bases: Vec<String>,
    /// Segments deleted (or that would be).
    pub segments: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Only listed.
    pub dry_run: bool,
    /// What failed.
    pub error: Option<String>,
}

impl LogPruned for RedisLogPruned {
    fn line(&self) -> String {
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        match &self.error {
            Some(e) => format!(
                "{}: capture log of `{}`: {verb} {} segments, then failed: {e}",
                self.target, self.source, self.segments
            ),
            None => format!(
                "{}: capture log of `{}`: {verb} {} segments ({} bytes) of {} pruned base(s)",
                self.target,
                self.source,
                self.segments,
                self.bytes,
                self.bases.len()
            ),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[async_trait]
impl crate::source::LogArchive for RedisLog {
    async fn tail(&self, store: Arc<dyn Store>) -> Result<LogTail, LogError> {
        let segs = list(store.as_ref(), &self.source).await?;
        let manifests = crate::catalog::Catalog::new(store.clone())
            .list(Some(&self.source))
            .await?;
        let best = manifests
            .iter()
            .filter_map(|m| chain_end(m, &segs))
            .max_by_key(|(t, _)| *t);
        Ok(match best {
            Some((t, key)) => LogTail {
                last: Some(key),
                stored_at: Some(t),
            },
            None => LogTail::default(),
        })
    }

    async fn reaches(
        &self,
        store: &Arc<dyn Store>,
        m: &Manifest,
    ) -> Result<Option<DateTime<Utc>>, LogError> {
        if base_offset(m).is_none() {
            return Ok(Some(m.recovery_point()));
        }
        let segs = list(store.as_ref(), &self.source).await?;
        Ok(Some(
            chain_end(m, &segs)
                .map(|(t, _)| t)
                .unwrap_or(m.recovery_point())
                .max(m.recovery_point()),
        ))
    }

    async fn newest(
        &self,
        store: &Arc<dyn Store>,
        manifests: &[Manifest],
    ) -> Result<Option<DateTime<Utc>>, LogError> {
        let segs = list(store.as_ref(), &self.source).await?;
        Ok(manifests
            .iter()
            .filter(|m| m.source == self.source)
            .map(|m| {
                chain_end(m, &segs)
                    .map(|(t, _)| t)
                    .unwrap_or(m.recovery_point())
                    .max(m.recovery_point())
            })
            .max())
    }

    async fn catch_up(
        &self,
        primary: &Arc<dyn Store>,
        offsite: &Arc<dyn Store>,
        _trust: &crate::signing::Trust,
    ) -> Result<LogSweep, LogError> {
        let mut sweep = LogSweep {
            source: self.source.clone(),
            ..LogSweep::default()
        };
        for k in missing(primary.as_ref(), offsite.as_ref(), &self.source).await? {
            let copied = async {
                let (body, _) = primary.get_small(&k.key, MAX_SEGMENT_STORED).await?;
                offsite
                    .put_small(&k.key, body, crate::storage::PutCondition::Overwrite)
                    .await
            }
            .await;
            match copied {
                Ok(_) => {
                    sweep.copied += 1;
                    sweep.bytes += k.size;
                }
                Err(e) => sweep.failed.push((k.key.clone(), e.to_string())),
            }
        }
        Ok(sweep)
    }

    async fn offsite_gap(
        &self,
        primary: &Arc<dyn Store>,
        offsite: &Arc<dyn Store>,
    ) -> Result<Option<String>, LogError> {
        let miss = missing(primary.as_ref(), offsite.as_ref(), &self.source).await?;
        Ok(match miss.as_slice() {
            [] => None,
            [first, ..] => Some(format!(
                "{} capture segment(s) of `{}` not copied off-site, the oldest cut {}",
                miss.len(),
                self.source,
                first.t1().to_rfc3339()
            )),
        })
    }

    async fn prune(
        &self,
        store: &dyn Store,
        target: &str,
        remaining: &[Manifest],
        _failed: usize,
        dry_run: bool,
    ) -> Box<dyn LogPruned> {
        let mut out = RedisLogPruned {
            target: target.to_string(),
            source: self.source.clone(),
            bases: Vec::new(),
            segments: 0,
            bytes: 0,
            dry_run,
            error: None,
        };
        // A base newer than every remaining backup may be one a running
        // capture has just committed after the list was taken: never touched.
        let Some(newest_kept) = remaining
            .iter()
            .filter(|m| m.source == self.source)
            .map(|m| m.id.as_str())
            .max()
        else {
            return Box::new(out);
        };
        let kept: std::collections::HashSet<&str> =
            remaining.iter().map(|m| m.id.as_str()).collect();
        let segs = match list(store, &self.source).await {
            Ok(s) => s,
            Err(e) => {
                out.error = Some(format!("listing the capture log: {e}"));
                return Box::new(out);
            }
        };
        for (base, keys) in &segs {
            if kept.contains(base.as_str()) || base.as_str() >= newest_kept {
                continue;
            }
            out.bases.push(base.clone());
            for k in keys {
                if !dry_run {
                    if let Err(e) = store.delete(&k.key).await {
                        out.error = Some(format!("deleting `{}`: {e}", k.key));
                        return Box::new(out);
                    }
                }
                out.segments += 1;
                out.bytes += k.size;
            }
        }
        Box::new(out)
    }
}

/// The segments `primary` holds and `offsite` lacks, oldest cut first.
async fn missing(
    primary: &dyn Store,
    offsite: &dyn Store,
    source: &str,
) -> Result<Vec<SegKey>, StorageError> {
    let have: std::collections::HashSet<String> = offsite
        .list(&layout::log_prefix(source))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut miss: Vec<SegKey> = list(primary, source)
        .await?
        .into_values()
        .flatten()
        .filter(|k| !have.contains(&k.key))
        .collect();
    miss.sort_by_key(|k| k.t1_ms);
    Ok(miss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(start: u64, end: u64) -> SegKey {
        SegKey {
            key: format!("s/log/b/{start}-{end}"),
            size: 1,
            base: "b".into(),
            start,
            end,
            t0_ms: 0,
            t1_ms: end as i64,
            replid: "r".into(),
        }
    }

    #[test]
    fn the_chain_stops_at_a_hole_and_takes_the_longest_retry() {
        let segs = vec![k(10, 20), k(20, 25), k(20, 30), k(30, 40), k(45, 50)];
        let c: Vec<(u64, u64)> = chain(10, &segs).iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(c, vec![(10, 20), (20, 30), (30, 40)]);
        assert!(chain(11, &segs).is_empty());
    }

    #[test]
    fn keys_round_trip() {
        let seg = Segment {
            start: 7,
            end: 99,
            t0_ms: 1_700_000_000_000,
            t1_ms: 1_700_000_000_500,
            marks: vec![],
            bytes: vec![],
        };
        let key = segment_key("cache", "20261203T090000Z-abcdef", &seg, "8c1f");
        let o = ObjectMeta {
            key: key.clone(),
            size: 3,
            etag: None,
            last_modified: None,
        };
        let p = parse_key("cache", &o).unwrap();
        assert_eq!(
            (p.base.as_str(), p.start, p.end, p.t0_ms, p.t1_ms, p.replid.as_str()),
            ("20261203T090000Z-abcdef", 7, 99, seg.t0_ms, seg.t1_ms, "8c1f")
        );
        assert!(!key.ends_with("manifest.json") && !key.ends_with("data.zst.age"));
    }
}
