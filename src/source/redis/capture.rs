//! Continuous capture of a Redis source: gsdr attaches as a replica and keeps
//! the link.
//!
//! 1. Handshake as a replica ([`SyncMode::Replica`]): `PSYNC ? -1`, or
//!    `PSYNC <replid> <offset + 1>` to continue the stream it already holds.
//! 2. `+FULLRESYNC`: the RDB that follows is stored as a new backup (a normal
//!    manifest, `capture: true`, its replid and offset in the details): the
//!    *base* of a new chain. After a drop, a full resync means the node could
//!    not continue the stream (its backlog no longer holds our offset, or it
//!    is another data set): a `new-base` reconnect event says so, and
//!    restores to a time between the old chain's end and the new base are
//!    not possible. `+CONTINUE`: the same chain goes on (after a Sentinel
//!    failover the promoted replica accepts the old replid through its
//!    `replid2`).
//! 3. The command stream is cut by [`Slicer`] every `slice` or at
//!    `slice_max_bytes` and each segment is stored ([`super::log`]) on the
//!    primary target, then copied to each off-site target.
//! 4. `REPLCONF ACK <offset>` goes out every second and on `REPLCONF GETACK`,
//!    with the offset of the last byte *stored* on the primary: a client's
//!    `WAIT 1 …` returns once its write is in gsdr's store.
//!
//! A drop or a stall (no byte for `pipeline.stall_timeout`; a master pings
//! its replicas every 10 s) stores the complete commands held, emits a
//! `capture_reconnect` event and reconnects (with Sentinel: to the master it
//! names now) with backoff; only after `stall_timeout` without a working
//! link does the run fail (the daemon restarts it later, with a new base).
//! Cancelling stores the open slice and returns `Ok`.
//!
//! Memory: the 64 KiB read buffer, the socket's 256 KiB buffer, the open
//! slice (≤ `slice_max_bytes` + one command) and its encoded copy while
//! it is stored (about as large), plus the pipeline's buffers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::backup::{synced_stream, RedisSource};
use super::log::{encode_segment, segment_key};
use super::replication::{self, Conn, PsyncReply, SyncMode, Timeouts};
use super::slicer::{Segment, Slicer};
use crate::metrics::events::{CaptureReconnect, CaptureStored};
use crate::source::capture::{Capture, CaptureCtx, CaptureReport};
use crate::source::error::{EngineError, EngineResult};
use crate::catalog::{new_backup_id, Catalog, Manifest, MANIFEST_SCHEMA};
use crate::pipeline::{self, EncodeOptions, Ends, StreamError};
use crate::source::{SourceError, SourceStream};
use crate::storage::{PutCondition, PutOptions, StorageError, Store};

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 << 10;
/// How often the slice timer and the stall detector look.
const TICK: Duration = Duration::from_millis(100);
/// How often the offset is acknowledged.
const ACK_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for the pipeline to hand the link back after the snapshot.
const LINK_BACK: Duration = Duration::from_secs(60);

/// The capture of one Redis source.
#[derive(Debug, Clone)]
pub struct RedisCapture {
    src: RedisSource,
}

impl RedisCapture {
    /// The capture of `src` (its settings enable `continuous`).
    pub fn new(src: RedisSource) -> RedisCapture {
        RedisCapture { src }
    }
}

/// The chain being extended.
#[derive(Debug, Clone)]
struct Chain {
    base: String,
    replid: String,
    /// Offset of the last byte stored on the primary.
    offset: u64,
    node: String,
}

/// Why a session ended other than by cancellation.
struct Lost {
    reason: &'static str,
    error: EngineError,
    /// The link had been up (the backoff starts over).
    connected: bool,
}

fn lost(reason: &'static str, connected: bool) -> impl FnOnce(EngineError) -> Lost {
    move |error| Lost {
        reason,
        error,
        connected,
    }
}

/// Stores the snapshot stream of a full sync as a backup, as the backup job
/// does (the engines sit below the jobs): the data object create-only,
/// read back at its size, then the manifest, last.
async fn store_base(
    source: &str,
    stream: SourceStream,
    store: Arc<dyn Store>,
    opts: &EncodeOptions,
) -> EngineResult<Manifest> {
    let started_at = chrono::Utc::now();
    let id = new_backup_id(started_at);
    let key = crate::layout::backup_data(source, "rdb", &id);
    let input = format!("the source `{source}`");
    let output = format!("the upload of `{key}` to {}", store.describe());
    let ended = pipeline::encode(stream, opts.clone())
        .finish(Ends::new(&input, &output), None, |reader| async {
            let mut reader = reader;
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
    let (stats, meta) = match ended {
        Ok(((stats, meta), put)) if put.size == stats.stored_bytes => (stats, meta),
        Ok(((stats, _), put)) => {
            let _ = store.delete(&key).await;
            return Err(EngineError::Invalid(format!(
                "upload of `{key}` stored {} bytes but the pipeline produced {}; base abandoned",
                put.size, stats.stored_bytes
            )));
        }
        Err(e) => {
            let _ = store.delete(&key).await;
            return Err(match e {
                StreamError::Pipeline(e) => e.into(),
                StreamError::Sink(e) => e.into(),
            });
        }
    };
    match store.head(&key).await? {
        Some(o) if o.size == stats.stored_bytes => {}
        other => {
            return Err(EngineError::Invalid(format!(
                "`{key}` reads back as {:?} bytes after upload, expected {}; base abandoned",
                other.map(|o| o.size),
                stats.stored_bytes
            )))
        }
    }
    let mut m = Manifest {
        schema_version: MANIFEST_SCHEMA,
        id,
        source: source.to_string(),
        engine: super::KIND.to_string(),
        kind: "rdb".to_string(),
        started_at,
        finished_at: chrono::Utc::now(),
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
        m.sign(s);
    }
    Catalog::new(store).commit(&m).await?;
    tracing::info!(event = "backup_committed", source, id = %m.id, bytes_raw = m.raw_bytes, bytes_stored = m.stored_bytes);
    Ok(m)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Capture for RedisCapture {
    async fn run(&self, ctx: CaptureCtx) -> EngineResult<CaptureReport> {
        let name = self.src.name().to_string();
        let give_up = ctx.encode.stall_timeout.max(Duration::from_secs(30));
        let mut chain: Option<Chain> = None;
        let mut report = CaptureReport::default();
        let mut down_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        let mut bases = 0u32;
        // Continue the newest stored chain if the node still can: a restart
        // of gsdr then costs no new full sync.
        match super::log::resume_point(&ctx.primary.1, &name).await {
            Ok(Some((base, replid, offset))) => {
                tracing::info!(event = "redis_capture_resume", source = %name, base = %base, replid = %replid, offset);
                chain = Some(Chain {
                    base,
                    replid,
                    offset,
                    node: String::new(),
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(event = "redis_capture_resume_unknown", source = %name, error = %e, "starting a new base")
            }
        }
        loop {
            if ctx.cancel.is_cancelled() {
                break;
            }
            match self.session(&ctx, &mut chain, &mut report, &mut bases).await {
                Ok(()) => break,
                Err(l) => {
                    if l.connected {
                        down_since = None;
                        backoff = Duration::from_millis(200);
                    }
                    let since = *down_since.get_or_insert_with(Instant::now);
                    let detail = l.error.to_string();
                    CaptureReconnect {
                        source: &name,
                        reason: l.reason,
                        detail: &detail,
                    }
                    .emit();
                    if since.elapsed() > give_up {
                        return Err(l.error);
                    }
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        report.detail = match &chain {
            Some(c) => format!(
                "{bases} base(s); base {} (replid {}) stored to offset {}",
                c.base, c.replid, c.offset
            ),
            None => "no base stored".into(),
        };
        Ok(report)
    }
}

impl RedisCapture {
    /// One connection: handshake, the base if the node sends one, then the
    /// stream until cancelled (`Ok`) or lost.
    async fn session(
        &self,
        ctx: &CaptureCtx,
        chain: &mut Option<Chain>,
        report: &mut CaptureReport,
        bases: &mut u32,
    ) -> Result<(), Lost> {
        let cfg = self.src.config();
        let name = self.src.name();
        let (host, port, discovery) = self
            .src
            .resolve_master()
            .await
            .map_err(|e| lost("disconnected", false)(e.into()))?;
        let node = format!("{host}:{port}");
        if let Some(c) = chain
            .as_ref()
            .filter(|c| !c.node.is_empty() && c.node != node)
        {
            let detail = format!(
                "the master moved from {} to {node}: continuing replid {} from offset {} there",
                c.node, c.replid, c.offset
            );
            CaptureReconnect {
                source: name,
                reason: "failover",
                detail: &detail,
            }
            .emit();
        }
        let creds = self
            .src
            .access()
            .map_err(|e| lost("disconnected", false)(e.into()))?;
        let t = Timeouts {
            connect: cfg.connect_timeout.0,
            read: cfg.read_timeout.0,
        };
        let mode = SyncMode::Replica {
            resume: chain.as_ref().map(|c| (c.replid.clone(), c.offset)),
        };
        let (conn, reply) = replication::handshake(&host, port, &creds, t, &mode)
            .await
            .map_err(|e| lost("disconnected", false)(self.src.repl_err(&node, e).into()))?;
        let conn = match reply {
            PsyncReply::Full(sync) => {
                if let Some(c) = chain.as_ref() {
                    let detail = format!(
                        "{node} could not continue replid {} at offset {} (base {}) and sent a full resync: a new base backup starts; restores between the old chain's end and the new base are not possible",
                        c.replid, c.offset, c.base
                    );
                    CaptureReconnect {
                        source: name,
                        reason: "new-base",
                        detail: &detail,
                    }
                    .emit();
                }
                let (replid, offset) = match (&sync.replid, sync.offset) {
                    (Some(r), Some(o)) => (r.clone(), o),
                    _ => {
                        return Err(lost("disconnected", false)(EngineError::Invalid(format!(
                            "{node} sent a full resync without a replication id and offset"
                        ))))
                    }
                };
                let (mut stream, outcome) = replication::rdb_stream(conn, &sync.framing, t.read);
                let back = stream.keep_link();
                let ss = synced_stream(
                    name.to_string(),
                    node.clone(),
                    discovery,
                    stream,
                    sync,
                    outcome,
                    true,
                );
                let (target, store) = &ctx.primary;
                let m = store_base(name, ss, store.clone(), &ctx.encode)
                    .await
                    .map_err(|e| {
                        lost("disconnected", false)(EngineError::Invalid(format!(
                            "storing the capture's base snapshot of `{name}` from {node}: {e}"
                        )))
                    })?;
                report.objects += 1;
                report.bytes += m.stored_bytes;
                *bases += 1;
                CaptureStored {
                    source: name,
                    target,
                    point: m.recovery_point(),
                    lag_secs: (chrono::Utc::now() - m.recovery_point()).num_milliseconds() as f64
                        / 1000.0,
                    object: &m.data_key,
                }
                .emit();
                tracing::info!(event = "redis_capture_base", source = name, id = %m.id, replid = %replid, offset, node = %node);
                let conn = tokio::time::timeout(LINK_BACK, back)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .ok_or_else(|| {
                        lost("disconnected", false)(EngineError::Invalid(format!(
                            "the link to {node} was not handed back after the snapshot"
                        )))
                    })?;
                *chain = Some(Chain {
                    base: m.id.clone(),
                    replid,
                    offset,
                    node: node.clone(),
                });
                conn
            }
            PsyncReply::Continue { new_replid, .. } => {
                let c = chain.as_mut().expect("PSYNC continues a chain");
                tracing::info!(event = "redis_capture_continue", source = name, node = %node, replid = %c.replid, new_replid = new_replid.as_deref().unwrap_or(""), offset = c.offset);
                if let Some(r) = new_replid {
                    c.replid = r;
                }
                c.node = node.clone();
                conn
            }
        };
        let c = chain.as_mut().expect("a chain after the handshake");
        self.stream(ctx, conn, c, report).await
    }

    /// Reads the command stream into segments until cancelled or lost.
    async fn stream(
        &self,
        ctx: &CaptureCtx,
        mut conn: Conn,
        chain: &mut Chain,
        report: &mut CaptureReport,
    ) -> Result<(), Lost> {
        let cfg = self.src.config();
        let slice_ms = cfg.slice.0.as_millis() as i64;
        let stall = ctx.encode.stall_timeout;
        let mut slicer = Slicer::new(chain.offset, cfg.slice_max_bytes as usize);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_byte = Instant::now();
        // The first ACK: after a diskless sync the master streams only once it came.
        self.ack(&mut conn, chain.offset)
            .await
            .map_err(lost("disconnected", true))?;
        let mut last_ack = Instant::now();
        enum Ev {
            Cancel,
            Read(std::io::Result<usize>),
            Tick,
        }
        loop {
            let ev = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => Ev::Cancel,
                r = conn.read(&mut buf) => Ev::Read(r),
                _ = tick.tick() => Ev::Tick,
            };
            let end = match ev {
                Ev::Cancel => None,
                Ev::Read(Ok(0)) => Some((
                    "disconnected",
                    format!("{} closed the replication link", chain.node),
                )),
                Ev::Read(Err(e)) => Some((
                    "disconnected",
                    format!("reading the replication stream from {}: {e}", chain.node),
                )),
                Ev::Read(Ok(n)) => {
                    last_byte = Instant::now();
                    if let Err(e) = slicer.feed(&buf[..n], now_ms()) {
                        Some((
                            "disconnected",
                            format!("the replication stream from {} is malformed: {e}", chain.node),
                        ))
                    } else {
                        if slicer.is_full() {
                            self.cut(ctx, chain, &mut slicer, report)
                                .await
                                .map_err(lost("disconnected", true))?;
                        }
                        if slicer.take_getack() {
                            self.ack(&mut conn, chain.offset)
                                .await
                                .map_err(lost("disconnected", true))?;
                            last_ack = Instant::now();
                        }
                        continue;
                    }
                }
                Ev::Tick if last_byte.elapsed() > stall => Some((
                    "stalled",
                    format!(
                        "{} sent nothing (not even its pings) for {stall:?}; reconnecting",
                        chain.node
                    ),
                )),
                Ev::Tick => {
                    if slicer
                        .opened_ms()
                        .is_some_and(|t0| now_ms() - t0 >= slice_ms)
                    {
                        self.cut(ctx, chain, &mut slicer, report)
                            .await
                            .map_err(lost("disconnected", true))?;
                    }
                    if last_ack.elapsed() >= ACK_EVERY {
                        self.ack(&mut conn, chain.offset)
                            .await
                            .map_err(lost("disconnected", true))?;
                        last_ack = Instant::now();
                    }
                    continue;
                }
            };
            // Cancelled or lost: keep every complete command received.
            self.cut(ctx, chain, &mut slicer, report)
                .await
                .map_err(lost("disconnected", true))?;
            return match end {
                None => Ok(()),
                Some((reason, msg)) => Err(Lost {
                    reason,
                    error: EngineError::Source(SourceError::Connect {
                        source_name: self.src.name().to_string(),
                        message: msg,
                        cause: None,
                    }),
                    connected: true,
                }),
            };
        }
    }

    async fn ack(&self, conn: &mut Conn, offset: u64) -> EngineResult<()> {
        let o = offset.to_string();
        replication::send_command(conn, &[b"REPLCONF", b"ACK", o.as_bytes()])
            .await
            .map_err(|e| self.src.repl_err("the replication link", e).into())
    }

    /// Cuts and stores the complete commands held, if any.
    async fn cut(
        &self,
        ctx: &CaptureCtx,
        chain: &mut Chain,
        slicer: &mut Slicer,
        report: &mut CaptureReport,
    ) -> EngineResult<()> {
        let Some(seg) = slicer.cut(now_ms()) else {
            return Ok(());
        };
        self.store(ctx, chain, &seg, report).await?;
        chain.offset = seg.end;
        Ok(())
    }

    /// Stores `seg` on the primary (it must succeed), then on each off-site
    /// target (a failure there is left to the replicate sweep).
    async fn store(
        &self,
        ctx: &CaptureCtx,
        chain: &Chain,
        seg: &Segment,
        report: &mut CaptureReport,
    ) -> EngineResult<()> {
        let name = self.src.name();
        let key = segment_key(name, &chain.base, seg, &chain.replid);
        let body = Bytes::from(encode_segment(seg, &chain.replid, &ctx.encode).await?);
        let point = super::log::ms_time(seg.t1_ms);
        let (target, store) = &ctx.primary;
        match store
            .put_small(&key, body.clone(), PutCondition::IfAbsent)
            .await
        {
            Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        report.objects += 1;
        report.bytes += body.len() as u64;
        let lag = |()| (chrono::Utc::now() - point).num_milliseconds() as f64 / 1000.0;
        CaptureStored {
            source: name,
            target,
            point,
            lag_secs: lag(()),
            object: &key,
        }
        .emit();
        for (target, store) in &ctx.offsite {
            match store
                .put_small(&key, body.clone(), PutCondition::IfAbsent)
                .await
            {
                Ok(_) | Err(StorageError::PreconditionFailed { .. }) => CaptureStored {
                    source: name,
                    target,
                    point,
                    lag_secs: lag(()),
                    object: &key,
                }
                .emit(),
                Err(e) => {
                    tracing::warn!(event = "redis_capture_offsite_failed", source = name, target = %target, key = %key, error = %e, "the replicate sweep copies it later")
                }
            }
        }
        Ok(())
    }
}
