//! Point-in-time restores of a captured Redis source: the base snapshot
//! loaded into a scratch server, then its capture log replayed into it.
//!
//! - The base: among the source's capture bases at or before the target
//!   time (and the backup the operator picked), the one whose log reaches
//!   furthest towards the target; the newest on a tie.
//! - The replay: the base's contiguous chain of segments ([`super::log`]),
//!   in offset order, over one connection (so the replicated `SELECT`s
//!   carry over), skipping the link's own `PING`/`REPLCONF`. A segment cut
//!   at or before the target is replayed whole; in the segment holding the
//!   target, the commands up to its last receive-time mark at or before the
//!   target (marks are at most [`super::slicer::MARK_EVERY_MS`] apart;
//!   receipt follows execution on the master by the network delay, so a
//!   command executed just before the target may be left out, one executed
//!   after it never goes in).
//! - Memory: one segment at a time, and the pipelined batch of commands.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::log::{self, base_offset, chain, read_segment, SegKey};
use super::slicer::{commands, is_link_traffic, parse_command, reply_len};
use crate::catalog::{Catalog, Manifest};
use crate::pipeline::keys::Identities;
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::storage::Store;

/// Commands sent before their replies are read.
const BATCH: usize = 1000;

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Replayed {
    /// The base backup replayed onto.
    pub base: String,
    /// Segments replayed (the last maybe in part).
    pub segments: u64,
    /// Commands sent.
    pub commands: u64,
    /// Commands the scratch server answered with an error.
    pub errors: u64,
    /// The first such error.
    pub first_error: Option<String>,
    /// Replication offset of the last byte replayed.
    pub offset: Option<u64>,
    /// The time the replayed log is complete to.
    pub reached: Option<DateTime<Utc>>,
    /// The log stopped before the target (a hole, or not captured yet).
    pub short_of_target: bool,
}

/// The base a restore to `until` (`None`: latest) replays onto: `m`, or a
/// capture base whose log reaches further (module doc).
pub async fn pick_base(
    catalog: &Catalog,
    m: &Manifest,
    until: Option<DateTime<Utc>>,
) -> Result<Manifest> {
    let segs = log::list(catalog.store().as_ref(), &m.source).await?;
    let reach = |b: &Manifest| -> DateTime<Utc> {
        let end = base_offset(b)
            .and_then(|o| {
                segs.get(&b.id)
                    .and_then(|s| chain(o, s).last().map(|k| k.t1()))
            })
            .unwrap_or(b.recovery_point())
            .max(b.recovery_point());
        until.map_or(end, |t| end.min(t))
    };
    let mut best = m.clone();
    let mut best_reach = reach(m);
    for b in catalog.list(Some(&m.source)).await? {
        if b.engine != super::KIND
            || base_offset(&b).is_none()
            || until.is_some_and(|t| b.recovery_point() > t)
        {
            continue;
        }
        let r = reach(&b);
        if r > best_reach || (r == best_reach && b.recovery_point() > best.recovery_point()) {
            best_reach = r;
            best = b;
        }
    }
    Ok(best)
}

/// Replays `m`'s capture log from `store` into the scratch server on
/// `127.0.0.1:port` (which holds `m`'s snapshot, and requires `password`), up to `until`.
pub async fn replay(
    store: &Arc<dyn Store>,
    ids: Arc<Identities>,
    m: &Manifest,
    until: Option<DateTime<Utc>>,
    port: u16,
    password: &crate::secret::Secret,
) -> Result<Replayed> {
    let mut out = Replayed {
        base: m.id.clone(),
        reached: Some(m.recovery_point()),
        ..Replayed::default()
    };
    let Some(offset) = base_offset(m) else {
        out.short_of_target = until.is_none_or(|t| t > m.recovery_point());
        return Ok(out);
    };
    out.offset = Some(offset);
    let segs = log::list(store.as_ref(), &m.source).await?;
    let none = Vec::new();
    let chain: Vec<SegKey> = chain(offset, segs.get(&m.id).unwrap_or(&none))
        .into_iter()
        .cloned()
        .collect();
    let until_ms = until.map(|t| t.timestamp_millis());
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| Error::Invalid(format!("replaying the capture log: connecting to the scratch redis-server: {e}")))?;
    let pw = password.expose();
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
    let mut authed = Replayed::default();
    send_batch(&mut conn, auth.as_bytes(), 1, &mut authed).await?;
    if authed.errors > 0 {
        return Err(Error::Invalid(
            "replaying the capture log: the scratch redis-server refused its password".into(),
        ));
    }
    let mut done_to_target = false;
    for k in &chain {
        if until_ms.is_some_and(|t| k.t0_ms > t) {
            done_to_target = true;
            break;
        }
        let (header, bytes) = read_segment(store.as_ref(), k, ids.clone()).await?;
        let (limit, partial) = limit_for(&header, until_ms);
        let mut batch: Vec<u8> = Vec::new();
        let mut n = 0usize;
        for (from, to) in commands(&bytes).map_err(|e| {
            Error::Invalid(format!("capture segment `{}`: {e}", k.key))
        })? {
            if to > limit {
                break;
            }
            let raw = &bytes[from..to];
            let Some((_, args)) = parse_command(raw).ok().flatten() else {
                continue;
            };
            if is_link_traffic(&args) {
                continue;
            }
            batch.extend_from_slice(raw);
            n += 1;
            if n >= BATCH {
                send_batch(&mut conn, &batch, n, &mut out).await?;
                batch.clear();
                n = 0;
            }
        }
        if n > 0 {
            send_batch(&mut conn, &batch, n, &mut out).await?;
        }
        out.segments += 1;
        out.offset = Some(header.start + limit as u64);
        out.reached = Some(match (partial, until) {
            (true, Some(t)) => t,
            _ => log::ms_time(header.t1_ms).max(m.recovery_point()),
        });
        if partial {
            done_to_target = true;
            break;
        }
    }
    if let Some(t) = until {
        if !done_to_target && out.reached.is_some_and(|r| r < t) {
            out.short_of_target = true;
        }
    }
    tracing::info!(event = "redis_log_replayed", base = %m.id, segments = out.segments, commands = out.commands, errors = out.errors, offset = out.offset.unwrap_or(0), short = out.short_of_target);
    Ok(out)
}

/// How many bytes of the segment `h` a restore to `until_ms` replays, and
/// whether that stops inside it: all of a segment cut by then; else up to
/// its last mark at or before then (all of it received by then).
fn limit_for(h: &super::log::SegmentHeader, until_ms: Option<i64>) -> (usize, bool) {
    let all = (h.end - h.start) as usize;
    match until_ms {
        Some(t) if h.t1_ms > t => {
            let cut = h
                .marks
                .iter()
                .filter(|(o, ms)| *ms <= t && *o >= h.start && *o <= h.end)
                .map(|(o, _)| *o)
                .max()
                .unwrap_or(h.start);
            ((cut - h.start) as usize, true)
        }
        _ => (all, false),
    }
}

async fn send_batch(
    conn: &mut tokio::net::TcpStream,
    batch: &[u8],
    n: usize,
    out: &mut Replayed,
) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::Invalid(format!(
            "replaying the capture log into the scratch redis-server: {e}"
        ))
    };
    conn.write_all(batch).await.map_err(io)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut seen = 0;
    let mut pos = 0;
    while seen < n {
        match reply_len(&buf[pos..]).map_err(|e| Error::Invalid(format!("scratch reply: {e}")))? {
            Some((len, is_err)) => {
                if is_err {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error =
                            Some(String::from_utf8_lossy(&buf[pos..pos + len]).trim().to_string());
                    }
                }
                pos += len;
                seen += 1;
            }
            None => {
                buf.drain(..pos);
                pos = 0;
                let r = conn.read(&mut chunk).await.map_err(io)?;
                if r == 0 {
                    return Err(io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the scratch server closed the connection",
                    )));
                }
                buf.extend_from_slice(&chunk[..r]);
            }
        }
    }
    out.commands += n as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::log::SegmentHeader;
    use super::*;

    #[test]
    fn a_restore_inside_a_segment_stops_at_the_last_mark_received_by_then() {
        let h = SegmentHeader {
            v: 1,
            replid: "r".into(),
            start: 100,
            end: 400,
            t0_ms: 1_000,
            t1_ms: 2_000,
            marks: vec![(150, 1_100), (300, 1_500), (400, 1_900)],
        };
        assert_eq!(limit_for(&h, None), (300, false), "latest: all of it");
        assert_eq!(limit_for(&h, Some(2_000)), (300, false), "cut by then: all");
        assert_eq!(limit_for(&h, Some(1_899)), (200, true), "up to the mark at 1.5 s");
        assert_eq!(limit_for(&h, Some(1_500)), (200, true), "a mark at the target counts");
        assert_eq!(limit_for(&h, Some(1_099)), (0, true), "nothing received by then");
    }
}
