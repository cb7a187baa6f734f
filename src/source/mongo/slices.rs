//! Oplog slices: the continuous capture's log, kept beside the dumps.
//!
//! A slice is a BSON sequence (the raw oplog entries, one after the other,
//! in oplog order), compressed and encrypted like a backup, under
//! `<source>/log/oplog/<from>-<end>.bson.zst.age`, where `from` is the
//! position the slice continues from (exclusive: the previous slice's end or
//! a dump's `oplog_end`) and `end` its last entry, each written
//! `<seconds>.<increment>` zero-padded so keys sort in oplog order. Its
//! sidecar `<from>-<end>.json` ([`SliceMeta`]: entries, wall-clock bounds,
//! raw size and SHA-256) is written after the data and is the commit marker:
//! a slice without one does not exist. Slices chain when one's `from` is the
//! previous one's `end`; a restore follows the chain from its dump's
//! `oplog_end` and stops at the first break.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mongodb::bson::{RawDocumentBuf, Timestamp};
use serde::{Deserialize, Serialize};

use crate::catalog::Manifest;
use crate::layout;
use crate::pipeline::keys::Identities;
use crate::pipeline::{self, DecodeExpect, EncodeOptions, Ends, StreamError};
use crate::source::{LogPruned, LogSweep, SourceMeta, SourceStream};
use crate::storage::{PutCondition, PutOptions, Store, StorageError};

use super::backup::DumpDetails;

/// What a slice's sidecar says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceMeta {
    /// The position the slice continues from (exclusive), `(seconds, increment)`.
    pub from: (u32, u32),
    /// Its last entry (inclusive).
    pub end: (u32, u32),
    /// Entries in it.
    pub entries: u64,
    /// Wall-clock time of its first entry (`wall`, else `ts`).
    pub wall_start: Option<DateTime<Utc>>,
    /// Wall-clock time of its last entry.
    pub wall_end: Option<DateTime<Utc>>,
    /// Raw (BSON) bytes.
    pub raw_bytes: u64,
    /// SHA-256 of the raw bytes, checked on every read.
    pub raw_sha256: String,
    /// Stored (compressed, encrypted) bytes.
    pub stored_bytes: u64,
    /// The replica-set member it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// A stored slice as a listing shows it (from its key alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceKey {
    /// `oplog/<from>-<end>`, the name both objects start with.
    pub name: String,
    /// The position it continues from.
    pub from: Timestamp,
    /// Its last entry.
    pub end: Timestamp,
    /// When its sidecar was stored.
    pub stored_at: Option<DateTime<Utc>>,
}

/// The folder of slices inside the source's log.
pub const FOLDER: &str = "oplog/";

fn pos(ts: Timestamp) -> String {
    format!("{:010}.{:010}", ts.time, ts.increment)
}

fn parse_pos(s: &str) -> Option<Timestamp> {
    let (t, i) = s.split_once('.')?;
    Some(Timestamp {
        time: t.parse().ok()?,
        increment: i.parse().ok()?,
    })
}

/// The name of the slice `(from, end]`.
pub fn slice_name(from: Timestamp, end: Timestamp) -> String {
    format!("{FOLDER}{}-{}", pos(from), pos(end))
}

/// The data object's key.
pub fn data_key(source: &str, name: &str) -> String {
    layout::log_object(source, &format!("{name}.bson.zst.age"))
}

/// The sidecar's key.
pub fn meta_key(source: &str, name: &str) -> String {
    layout::log_object(source, &format!("{name}.json"))
}

/// `(seconds, increment)` as a Timestamp.
pub fn ts_of(p: (u32, u32)) -> Timestamp {
    Timestamp {
        time: p.0,
        increment: p.1,
    }
}

/// A timestamp's seconds as a time.
pub fn ts_time(ts: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(ts.time as i64, 0).unwrap_or_default()
}

/// Every committed slice of `source` in `store`, in oplog order.
pub async fn list(store: &dyn Store, source: &str) -> Result<Vec<SliceKey>, StorageError> {
    let prefix = layout::log_object(source, FOLDER);
    let objects = store.list(&prefix).await?;
    let data: std::collections::HashSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(".bson.zst.age"))
        .collect();
    let mut out: Vec<SliceKey> = objects
        .iter()
        .filter_map(|o| {
            let base = o.key.strip_suffix(".json")?;
            if !data.contains(base) {
                return None;
            }
            let rest = base.strip_prefix(&prefix)?;
            let (f, e) = rest.split_once('-')?;
            Some(SliceKey {
                name: format!("{FOLDER}{rest}"),
                from: parse_pos(f)?,
                end: parse_pos(e)?,
                stored_at: o.last_modified,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.from, s.end));
    Ok(out)
}

/// The contiguous chain of slices that continues from `start`: the first
/// holds the entry after `start`, each next one starts where the previous ended.
pub fn chain_from(slices: &[SliceKey], start: Timestamp) -> Vec<SliceKey> {
    let mut out = Vec::new();
    let mut cur = start;
    loop {
        // Exactly continuing first; else one that covers `cur` (a later dump's
        // end falls inside a slice).
        let next = slices
            .iter()
            .find(|s| s.from == cur)
            .or_else(|| slices.iter().find(|s| s.from < cur && cur < s.end));
        match next {
            Some(s) => {
                cur = s.end;
                out.push(s.clone());
            }
            None => return out,
        }
    }
}

/// The oplog end of a mongo dump, if it captured one.
pub fn dump_end(m: &Manifest) -> Option<Timestamp> {
    serde_json::from_value::<DumpDetails>(m.consistency.details.clone())
        .ok()?
        .oplog_end
        .map(ts_of)
}

/// Encodes `raw` (a BSON sequence) into stored bytes, in memory (a slice is
/// at most `slice_bytes`, so this is bounded).
pub async fn encode(
    raw: Vec<u8>,
    opts: &EncodeOptions,
) -> Result<(Vec<u8>, String), pipeline::PipelineError> {
    let src = SourceStream {
        reader: Box::pin(std::io::Cursor::new(raw)),
        done: Box::pin(async { Ok(SourceMeta::default()) }),
    };
    let enc = pipeline::encode(src, opts.clone());
    let ended = enc
        .finish_to_vec(Ends::new("an oplog slice", "its encoding in memory"))
        .await;
    match ended {
        Ok(((st, _), out)) => Ok((out, st.raw_sha256)),
        Err(StreamError::Pipeline(e)) => Err(e),
        Err(StreamError::Sink(source)) => Err(pipeline::PipelineError::Io {
            stage: "encoding an oplog slice",
            source,
        }),
    }
}

/// Stores an encoded slice and then its sidecar (the commit marker).
pub async fn put(
    store: &dyn Store,
    source: &str,
    meta: &SliceMeta,
    stored: &[u8],
) -> Result<String, StorageError> {
    let name = slice_name(ts_of(meta.from), ts_of(meta.end));
    let key = data_key(source, &name);
    let mut body = stored;
    store
        .put_stream(
            &key,
            &mut body,
            PutOptions {
                size_hint: Some(stored.len() as u64),
                if_absent: false,
            },
        )
        .await?;
    let json = serde_json::to_vec_pretty(meta).expect("slice meta serialises");
    store
        .put_small(
            &meta_key(source, &name),
            json.into(),
            PutCondition::Overwrite,
        )
        .await?;
    Ok(key)
}

/// Why a slice could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Decryption, decompression or the SHA-256 check failed.
    #[error("oplog slice `{name}`: {source}")]
    Pipeline {
        /// The slice.
        name: String,
        /// Why.
        #[source]
        source: pipeline::PipelineError,
    },
    /// The sidecar or the BSON inside is not what it should be.
    #[error("oplog slice `{name}`: {message}")]
    Invalid {
        /// The slice.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads slice `name` back: its entries, checked against its sidecar.
pub async fn read(
    store: &dyn Store,
    source: &str,
    name: &str,
    ids: Arc<Identities>,
) -> Result<Vec<RawDocumentBuf>, SliceError> {
    let (meta, _) = store.get_small(&meta_key(source, name), 1 << 20).await?;
    let meta: SliceMeta = serde_json::from_slice(&meta).map_err(|e| SliceError::Invalid {
        name: name.into(),
        message: format!("unreadable sidecar: {e}"),
    })?;
    let stored = store.get_stream(&data_key(source, name)).await?;
    let decoded = pipeline::decode(
        stored,
        ids,
        DecodeExpect {
            raw_sha256: Some(meta.raw_sha256.clone()),
            ..Default::default()
        },
    );
    let ended = decoded
        .finish_to_vec(Ends::new("an oplog slice", "memory"))
        .await;
    let raw = match ended {
        Ok((_, raw)) => raw,
        Err(StreamError::Pipeline(source)) => {
            return Err(SliceError::Pipeline {
                name: name.into(),
                source,
            })
        }
        Err(StreamError::Sink(e)) => {
            return Err(SliceError::Pipeline {
                name: name.into(),
                source: pipeline::PipelineError::Io {
                    stage: "reading an oplog slice",
                    source: e,
                },
            })
        }
    };
    let docs = split_sequence(&raw).map_err(|m| SliceError::Invalid {
        name: name.into(),
        message: m,
    })?;
    if docs.len() as u64 != meta.entries {
        return Err(SliceError::Invalid {
            name: name.into(),
            message: format!("{} entries, the sidecar says {}", docs.len(), meta.entries),
        });
    }
    Ok(docs)
}

/// Splits a BSON sequence into its documents.
pub fn split_sequence(raw: &[u8]) -> Result<Vec<RawDocumentBuf>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let Some(len) = raw
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return Err(format!("a cut document length at byte {at}"));
        };
        let Some(d) = raw.get(at..at + len).filter(|_| len >= 5) else {
            return Err(format!("a cut document at byte {at}"));
        };
        out.push(
            RawDocumentBuf::from_bytes(d.to_vec())
                .map_err(|e| format!("invalid BSON at byte {at}: {e}"))?,
        );
        at += len;
    }
    Ok(out)
}

/// How far the log after `m` reaches in `slices` (its own point when no slice continues it).
pub fn reach_of(slices: &[SliceKey], m: &Manifest) -> DateTime<Utc> {
    let own = m.recovery_point();
    match dump_end(m) {
        Some(end) => chain_from(slices, end)
            .last()
            .map(|s| ts_time(s.end).max(own))
            .unwrap_or(own),
        None => own,
    }
}

/// Copies the slices `offsite` lacks (data, then sidecar).
pub async fn catch_up(
    primary: &dyn Store,
    offsite: &dyn Store,
    source: &str,
) -> Result<LogSweep, StorageError> {
    let have = list(offsite, source).await?;
    let mut sweep = LogSweep {
        source: source.to_string(),
        ..Default::default()
    };
    for s in list(primary, source).await? {
        if have.iter().any(|h| h.name == s.name) {
            continue;
        }
        let r: Result<u64, StorageError> = async {
            let dk = data_key(source, &s.name);
            let mut body = primary.get_stream(&dk).await?;
            let put = offsite
                .put_stream(&dk, &mut body, PutOptions::default())
                .await?;
            let mk = meta_key(source, &s.name);
            let (meta, _) = primary.get_small(&mk, 1 << 20).await?;
            offsite.put_small(&mk, meta, PutCondition::Overwrite).await?;
            Ok(put.size)
        }
        .await;
        match r {
            Ok(n) => {
                sweep.copied += 1;
                sweep.bytes += n;
            }
            Err(e) => sweep.failed.push((s.name.clone(), e.to_string())),
        }
    }
    Ok(sweep)
}

/// What the off-site copy lacks, as one line.
pub async fn offsite_gap(
    primary: &dyn Store,
    offsite: &dyn Store,
    source: &str,
) -> Result<Option<String>, StorageError> {
    let have = list(offsite, source).await?;
    let missing: Vec<SliceKey> = list(primary, source)
        .await?
        .into_iter()
        .filter(|s| !have.iter().any(|h| h.name == s.name))
        .collect();
    Ok(missing.last().map(|newest| {
        format!(
            "{} oplog slices of `{source}` are not off-site yet (the newest ends {})",
            missing.len(),
            ts_time(newest.end).to_rfc3339()
        )
    }))
}

/// What pruning a source's slices on one target did.
#[derive(Debug, Clone, Serialize)]
pub struct SlicesPruned {
    /// Target.
    pub target: String,
    /// Source.
    pub source: String,
    /// Slices deleted (or, dry run, to delete).
    pub deleted: Vec<String>,
    /// Slices kept.
    pub kept: usize,
    /// Only listed what would go.
    pub dry_run: bool,
    /// Why nothing (or not everything) was deleted.
    pub note: Option<String>,
    /// What failed.
    pub error: Option<String>,
}

impl LogPruned for SlicesPruned {
    fn line(&self) -> String {
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let mut s = format!(
            "{}: oplog slices of `{}`: {verb} {}, kept {}",
            self.target,
            self.source,
            self.deleted.len(),
            self.kept
        );
        if let Some(n) = &self.note {
            s.push_str(&format!(" ({n})"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("; failed: {e}"));
        }
        s
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

/// Deletes the slices that end at or before the oldest kept dump's oplog
/// end: no kept dump replays them. Nothing is deleted while no kept dump
/// has an oplog end or a backup's deletion failed (it may still need them).
pub async fn prune(
    store: &dyn Store,
    target: &str,
    source: &str,
    remaining: &[Manifest],
    failed: usize,
    dry_run: bool,
) -> SlicesPruned {
    let mut out = SlicesPruned {
        target: target.to_string(),
        source: source.to_string(),
        deleted: Vec::new(),
        kept: 0,
        dry_run,
        note: None,
        error: None,
    };
    let slices = match list(store, source).await {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let floor = remaining.iter().filter_map(dump_end).min();
    let Some(floor) = floor.filter(|_| failed == 0) else {
        out.kept = slices.len();
        out.note = Some(if failed > 0 {
            format!("{failed} backup deletions failed: those backups may still need every slice")
        } else {
            "no kept dump has an oplog end: every slice is kept".into()
        });
        return out;
    };
    for s in slices {
        if s.end > floor {
            out.kept += 1;
            continue;
        }
        if !dry_run {
            for k in [meta_key(source, &s.name), data_key(source, &s.name)] {
                if let Err(e) = store.delete(&k).await {
                    out.error = Some(format!("deleting `{k}`: {e}"));
                    return out;
                }
            }
        }
        out.deleted.push(s.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(f: u32, e: u32) -> SliceKey {
        SliceKey {
            name: slice_name(ts_of((f, 1)), ts_of((e, 1))),
            from: ts_of((f, 1)),
            end: ts_of((e, 1)),
            stored_at: None,
        }
    }

    #[test]
    fn names_sort_in_oplog_order_and_chains_stop_at_a_gap() {
        assert_eq!(
            slice_name(ts_of((5, 2)), ts_of((1_700_000_000, 30))),
            "oplog/0000000005.0000000002-1700000000.0000000030"
        );
        let s = vec![k(10, 20), k(20, 30), k(30, 40), k(50, 60)];
        let c = chain_from(&s, ts_of((10, 1)));
        assert_eq!(c.len(), 3);
        // A later dump ending inside a slice continues with that slice.
        let c = chain_from(&s, ts_of((25, 0)));
        assert_eq!(c.iter().map(|x| x.end.time).collect::<Vec<_>>(), [30, 40]);
        assert!(chain_from(&s, ts_of((45, 0))).is_empty());
    }

    #[test]
    fn bson_sequences_split_and_cut_ones_fail() {
        let a = RawDocumentBuf::from_document(&mongodb::bson::doc! {"a": 1}).unwrap();
        let b = RawDocumentBuf::from_document(&mongodb::bson::doc! {"b": "x"}).unwrap();
        let mut raw = a.as_bytes().to_vec();
        raw.extend_from_slice(b.as_bytes());
        assert_eq!(split_sequence(&raw).unwrap(), vec![a, b]);
        assert!(split_sequence(&raw[..raw.len() - 1]).is_err());
    }
}
