//! Continuous oplog capture (`oplog = "continuous"`): the oplog of ONE
//! replica-set member (the one the newest dump read, while it is a member;
//! else the one the read preference selects) tailed from the newest stored
//! position into time-sliced segments ([`super::slices`]).
//!
//! - Start: the newest slice's end, or the newest dump's `oplog_end` when
//!   that is later (a new base after a gap). Nothing stored: an error asking
//!   for a dump first.
//! - Gap: the entry at the position must still be in the oplog; when it is
//!   not (the oplog rolled over, or a rollback removed it) the capture emits
//!   `CaptureReconnect { reason: "new-base" }` and fails saying a new dump is
//!   needed. It never skips entries.
//! - Reading: a tailable await cursor on `local.oplog.rs`; with the
//!   `oplog_namespace` test hook, a polled `find({ts: {$gt: last}})`.
//!   The reader runs in its own task and hands entries over a bounded channel.
//! - Slices: cut `slice` (default 10 s) after their first entry or at
//!   `slice_bytes`, stored on the primary target, then copied to each
//!   off-site target; `CaptureStored` after each store. Memory: about
//!   `2 × slice_bytes` (the raw slice and its encoding) plus 256 entries in
//!   the channel.
//! - Stall: no entry for `stall` (a replica set writes a noop every 10 s)
//!   reopens the cursor (`CaptureReconnect { reason: "stalled" }`); a read
//!   error reopens it after a backoff of 1, 2, 4… up to 30 s
//!   (`"disconnected"`); five failures in a row end the run with the error
//!   (the daemon restarts it). Cancel stores what is buffered and returns.

use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::options::CursorType;
use mongodb::Client;
use sha2::Digest;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backup::{DumpDetails, OplogSource};
use super::oplog::entry_ts;
use super::slices::{self, SliceMeta};
use super::{connect_member, read_uri, MongoConfig, MongoEngine};
use crate::catalog::Catalog;
use crate::metrics::events::{CaptureReconnect, CaptureStored};
use crate::source::capture::{CaptureCtx, CaptureReport};
use crate::source::error::{EngineError, EngineResult};
use crate::source::SourceError;

enum Read {
    Entry(RawDocumentBuf),
    /// The entry at the start position is gone: a new base is needed.
    Gap(String),
    Failed(String),
}

fn cap_err(source: &str, message: String) -> EngineError {
    SourceError::Dump {
        source_name: source.to_string(),
        message,
        class: crate::fault::RetryClass::Temporary,
        cause: None,
    }
    .into()
}

fn ts_text(ts: Timestamp) -> String {
    format!("Timestamp({}, {})", ts.time, ts.increment)
}

/// Where the capture starts: (position, member to prefer).
async fn start_position(
    ctx: &CaptureCtx,
) -> EngineResult<(Timestamp, Option<String>)> {
    let store = ctx.primary.1.clone();
    let newest_slice = slices::list(store.as_ref(), &ctx.source)
        .await?
        .into_iter()
        .map(|s| s.end)
        .max();
    let cat = Catalog::new(store);
    let dump = match cat.newest_before(&ctx.source, Some("full"), None).await {
        Ok(m) => serde_json::from_value::<DumpDetails>(m.consistency.details.clone()).ok(),
        Err(_) => None,
    };
    let dump_end = dump.as_ref().and_then(|d| d.oplog_end).map(slices::ts_of);
    let member = dump.and_then(|d| d.member);
    match (newest_slice, dump_end) {
        (Some(s), Some(d)) => Ok((s.max(d), member)),
        (Some(s), None) => Ok((s, member)),
        (None, Some(d)) => Ok((d, member)),
        (None, None) => Err(EngineError::Invalid(format!(
            "source `{0}` has no oplog slice and no dump with an oplog on target `{1}`: run `gsdr backup --source {0}` first (on a replica set), then the capture continues from its oplog end",
            ctx.source, ctx.primary.0
        ))),
    }
}

/// Reads the oplog after `from` into `tx` until the channel closes.
async fn reader(client: Client, src: OplogSource, from: Timestamp, tx: mpsc::Sender<Read>) {
    let coll = client
        .database(&src.ns.db)
        .collection::<RawDocumentBuf>(&src.ns.collection);
    // The entry at `from` must still be there, else entries after it are lost.
    let first = coll
        .find_one(doc! {"ts": {"$gte": src.ts_value(from)}})
        .sort(src.order(1))
        .await;
    match first {
        Err(e) => {
            let _ = tx
                .send(Read::Failed(format!("reading {}: {e}", src.ns)))
                .await;
            return;
        }
        Ok(d) => {
            let at = d
                .and_then(|d| d.to_document().ok())
                .and_then(|d| entry_ts(&d));
            if at != Some(from) {
                let _ = tx
                    .send(Read::Gap(format!(
                        "the oplog no longer holds the stored position {} (its first entry from there is {})",
                        ts_text(from),
                        at.map(ts_text).unwrap_or_else(|| "none".into())
                    )))
                    .await;
                return;
            }
        }
    }
    let mut last = from;
    loop {
        let find = coll
            .find(doc! {"ts": {"$gt": src.ts_value(last)}})
            .sort(src.order(1));
        let cursor = if src.hook {
            find.batch_size(1000).await
        } else {
            find.cursor_type(CursorType::TailableAwait)
                .max_await_time(Duration::from_secs(1))
                .no_cursor_timeout(true)
                .await
        };
        let mut cursor = match cursor {
            Ok(c) => c,
            Err(e) => {
                let _ = tx
                    .send(Read::Failed(format!("opening a cursor on {}: {e}", src.ns)))
                    .await;
                return;
            }
        };
        loop {
            match cursor.try_next().await {
                Ok(Some(d)) => {
                    if let Some(ts) = d.to_document().ok().and_then(|d| entry_ts(&d)) {
                        last = ts;
                    }
                    if tx.send(Read::Entry(d)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx
                        .send(Read::Failed(format!("reading {}: {e}", src.ns)))
                        .await;
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        // Polled (or a tailable cursor the server closed): look again shortly.
        tokio::time::sleep(Duration::from_millis(if src.hook { 250 } else { 100 })).await;
    }
}

struct Slice {
    raw: Vec<u8>,
    entries: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    wall_start: Option<chrono::DateTime<Utc>>,
    wall_end: Option<chrono::DateTime<Utc>>,
    opened: Option<Instant>,
}

impl Slice {
    fn new() -> Slice {
        Slice {
            raw: Vec::new(),
            entries: 0,
            first: None,
            last: None,
            wall_start: None,
            wall_end: None,
            opened: None,
        }
    }
}

/// Normalises an entry for the slice: the test hook's int64 `ts` becomes a
/// Timestamp, so slices are always shaped like the real oplog.
fn normalise(raw: RawDocumentBuf, hook: bool) -> Option<(RawDocumentBuf, Timestamp, Option<chrono::DateTime<Utc>>)> {
    let mut d: Document = raw.to_document().ok()?;
    let ts = entry_ts(&d)?;
    let wall = match d.get("wall") {
        Some(Bson::DateTime(w)) => chrono::DateTime::from_timestamp_millis(w.timestamp_millis()),
        _ => None,
    };
    if hook {
        d.insert("ts", Bson::Timestamp(ts));
        return Some((RawDocumentBuf::from_document(&d).ok()?, ts, wall));
    }
    Some((raw, ts, wall))
}

/// Runs the capture of `engine`'s source.
pub(super) async fn run(engine: &MongoEngine, ctx: CaptureCtx) -> EngineResult<CaptureReport> {
    let cfg: MongoConfig = engine.config()?.clone();
    let source = ctx.source.clone();
    let uri = read_uri(&source, &cfg)?;
    let src = OplogSource::of(&cfg);
    let (mut stored_pos, prefer) = start_position(&ctx).await?;
    let mut read_pos = stored_pos;
    let mut report = CaptureReport::default();
    let mut slice = Slice::new();
    let mut failures = 0u32;
    let mut member: Option<String> = None;
    'connect: loop {
        let (client, m) = match connect_member(&source, uri.expose(), &cfg, prefer.as_deref()).await {
            Ok(x) => x,
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
                    return Err(e.into());
                }
                let detail = format!("cannot connect: {e}");
                CaptureReconnect { source: &source, reason: "disconnected", detail: &detail }.emit();
                if backoff(&ctx, failures).await {
                    break 'connect;
                }
                continue;
            }
        };
        member = m.or(member);
        let (tx, mut rx) = mpsc::channel::<Read>(256);
        let task = tokio::spawn(reader(client, src.clone(), read_pos, tx));
        let mut last_entry = Instant::now();
        let why: String = loop {
            let deadline = slice
                .opened
                .map(|o| o + cfg.slice.0)
                .unwrap_or_else(|| Instant::now() + cfg.slice.0);
            let stall_at = last_entry + cfg.stall.0;
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    task.abort();
                    break 'connect;
                }
                _ = tokio::time::sleep_until(deadline.min(stall_at)) => {
                    if slice.opened.is_some_and(|o| o + cfg.slice.0 <= Instant::now()) {
                        flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
                    }
                    if !src.hook && Instant::now() >= stall_at {
                        let detail = format!("no oplog entry for {} s after {}", cfg.stall.0.as_secs(), ts_text(read_pos));
                        CaptureReconnect { source: &source, reason: "stalled", detail: &detail }.emit();
                        break detail;
                    }
                    if src.hook {
                        last_entry = Instant::now(); // polled: idle is not a stall
                    }
                }
                r = rx.recv() => match r {
                    Some(Read::Entry(raw)) => {
                        failures = 0;
                        last_entry = Instant::now();
                        let Some((raw, ts, wall)) = normalise(raw, src.hook) else {
                            task.abort();
                            flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
                            return Err(cap_err(&source, format!("an oplog entry after {} has no readable `ts`", ts_text(read_pos))));
                        };
                        if ts <= read_pos {
                            continue; // a reopened cursor repeating what we hold
                        }
                        read_pos = ts;
                        slice.raw.extend_from_slice(raw.as_bytes());
                        slice.entries += 1;
                        slice.first.get_or_insert(ts);
                        slice.last = Some(ts);
                        let wall = wall.unwrap_or_else(|| slices::ts_time(ts));
                        slice.wall_start.get_or_insert(wall);
                        slice.wall_end = Some(wall);
                        slice.opened.get_or_insert_with(Instant::now);
                        if slice.raw.len() as u64 >= cfg.slice_bytes.0 {
                            flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
                        }
                    }
                    Some(Read::Gap(detail)) => {
                        task.abort();
                        flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
                        CaptureReconnect { source: &source, reason: "new-base", detail: &detail }.emit();
                        return Err(cap_err(&source, format!(
                            "{detail}: the oplog rolled over past the capture, so entries after it are lost; a new dump is needed (`gsdr backup --source {source}`), from whose oplog end the capture continues. Enlarge the oplog or keep the capture running"
                        )));
                    }
                    Some(Read::Failed(e)) => {
                        CaptureReconnect { source: &source, reason: "disconnected", detail: &e }.emit();
                        break e;
                    }
                    None => break "the oplog reader stopped".to_string(),
                }
            }
        };
        task.abort();
        failures += 1;
        if failures >= 5 {
            flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
            return Err(cap_err(&source, format!("the oplog capture failed 5 times in a row: {why}")));
        }
        if backoff(&ctx, failures).await {
            break 'connect;
        }
    }
    flush(&ctx, &mut slice, &mut stored_pos, &member, &mut report).await?;
    report.detail = format!(
        "oplog of `{source}` stored up to {}{}",
        ts_text(stored_pos),
        member.map(|m| format!(" from member {m}")).unwrap_or_default()
    );
    Ok(report)
}

/// Waits the backoff for the `n`th failure; true when cancelled meanwhile.
async fn backoff(ctx: &CaptureCtx, n: u32) -> bool {
    let secs = (1u64 << n.saturating_sub(1).min(5)).min(30);
    tokio::select! {
        _ = ctx.cancel.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(secs)) => false,
    }
}

/// Stores the buffered slice (if any) on the primary, then off-site.
async fn flush(
    ctx: &CaptureCtx,
    slice: &mut Slice,
    stored_pos: &mut Timestamp,
    member: &Option<String>,
    report: &mut CaptureReport,
) -> EngineResult<()> {
    let Some(end) = slice.last else {
        slice.opened = None;
        return Ok(());
    };
    let full = std::mem::replace(slice, Slice::new());
    let raw_bytes = full.raw.len() as u64;
    let sha = hex::encode(sha2::Sha256::digest(&full.raw));
    let (stored, raw_sha) = slices::encode(full.raw, &ctx.encode).await?;
    debug_assert_eq!(sha, raw_sha);
    let meta = SliceMeta {
        from: (stored_pos.time, stored_pos.increment),
        end: (end.time, end.increment),
        entries: full.entries,
        wall_start: full.wall_start,
        wall_end: full.wall_end,
        raw_bytes,
        raw_sha256: raw_sha,
        stored_bytes: stored.len() as u64,
        member: member.clone(),
    };
    let point = full.wall_end.unwrap_or_else(|| slices::ts_time(end));
    let lag = (Utc::now() - point).num_milliseconds().max(0) as f64 / 1000.0;
    let key = slices::put(ctx.primary.1.as_ref(), &ctx.source, &meta, &stored).await?;
    *stored_pos = end;
    report.objects += 1;
    report.bytes += stored.len() as u64;
    CaptureStored {
        source: &ctx.source,
        target: &ctx.primary.0,
        point,
        lag_secs: lag,
        object: &key,
    }
    .emit();
    for (name, store) in &ctx.offsite {
        match slices::put(store.as_ref(), &ctx.source, &meta, &stored).await {
            Ok(k) => CaptureStored {
                source: &ctx.source,
                target: name,
                point,
                lag_secs: (Utc::now() - point).num_milliseconds().max(0) as f64 / 1000.0,
                object: &k,
            }
            .emit(),
            // The replicate sweep copies it later (`LogArchive::catch_up`).
            Err(e) => tracing::warn!(event = "capture_offsite_failed", source = %ctx.source, target = %name, object = %key, error = %e),
        }
    }
    Ok(())
}
