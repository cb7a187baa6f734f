//! `capture = "stream"`: WAL streamed over replication into the archive,
//! so the RPO on the primary target is `stream_flush`, not a segment.
//!
//! gsdr drives `pg_receivewal` (from the source's `pg_bin`) as a child
//! process rather than speaking the replication protocol itself: the
//! `tokio-postgres` gsdr uses cannot run a replication connection
//! (`START_REPLICATION` answers in CopyBoth mode, which it does not
//! implement), while pg_receivewal is PostgreSQL's own client for exactly
//! this — SCRAM and every other authentication method, timeline switches
//! (it fetches `.history` files and follows the new timeline), status
//! feedback — and ships with every server.
//!
//! Durability rule: the server keeps every byte gsdr has not stored. The
//! physical slot (`slot`, created by gsdr) is never used by pg_receivewal's
//! connection, so its feedback cannot move it: gsdr itself advances the
//! slot with `pg_replication_slot_advance` past a segment only once the
//! complete segment is stored on the primary target. A killed gsdr, a lost
//! spool folder or a capture moved to another replica therefore loses
//! nothing: the next run seeds the spool at the slot's position (an empty,
//! zero-filled `<segment>.partial`, where pg_receivewal resumes) and streams
//! again from there. The slot's retained WAL is bounded by the server's
//! `max_slot_wal_keep_size`, which the capture requires to be set at or
//! below `slot_max_retained` (else it refuses to start and names the
//! `ALTER SYSTEM` to run): a dead gsdr cannot fill the server's disk; past
//! the cap PostgreSQL invalidates the slot, and the capture then stops with
//! the fix (a new slot and a new base backup).
//!
//! The loop, every `stream_flush`: complete segments in the spool (and
//! `.history` files) are stored through `wal-push`'s own path (cluster
//! identity, create-only sidecar, idempotency, timeline checks), copied
//! off-site, their partial object dropped, the slot advanced, the local file
//! deleted; then, when the current `.partial` grew, a snapshot of it is
//! stored as the segment's partial object
//! (`<source>/wal/<timeline>/<segment>.stream.zst.age`, replaced as it
//! grows) and copied off-site. More than `spool_segments` complete segments
//! waiting (uploads failing) stops pg_receivewal until they drain; the slot
//! keeps the WAL meanwhile. No progress of the receiver for
//! `pipeline.stall_timeout` while the server has newer WAL kills it and ends
//! the run with an error (the daemon restarts it `daemon.capture_restart`
//! later); so does pg_receivewal exiting on its own (`--no-loop`). On
//! cancel: a last flush, then pg_receivewal is stopped.
//!
//! Memory: the pipeline's chunk buffers for one upload at a time; the
//! partial's snapshot is a local file copy, never held in memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::wal::{self, PushOptions, WalArchive};
use super::{format_lsn, parse_lsn, PostgresConfig, SegmentId};
use crate::fault::RetryClass;
use crate::layout;
use crate::metrics::events::{CaptureReconnect, CaptureRetained, CaptureStored};
use crate::source::capture::{Capture, CaptureCtx, CaptureReport};
use crate::source::{EngineError, EngineResult, SourceError};
use crate::storage::Store;

/// File in the spool holding the pid of the running pg_receivewal, so a run
/// after a killed gsdr stops the receiver the killed one left behind.
const RECEIVER_PID: &str = ".gsdr-receiver.pid";
/// Folder in the spool for the snapshot of the current partial.
const SNAPSHOT_DIR: &str = ".gsdr-snapshot";
/// Lines of pg_receivewal's stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// The stream capture of one postgres source.
#[derive(Debug, Clone)]
pub struct StreamCapture {
    source: String,
    cfg: PostgresConfig,
}

impl StreamCapture {
    /// The capture of source `source` with settings `cfg`.
    pub fn new(source: &str, cfg: PostgresConfig) -> Self {
        StreamCapture {
            source: source.to_string(),
            cfg,
        }
    }

    fn fail(&self, message: String) -> EngineError {
        EngineError::Source(SourceError::Dump {
            source_name: self.source.clone(),
            message,
            class: RetryClass::Temporary,
            cause: None,
        })
    }

    fn refuse(&self, message: String) -> EngineError {
        EngineError::Source(SourceError::Config {
            message: format!("[sources.{}.postgres] capture = \"stream\": {message}", self.source),
        })
    }
}

/// What the server says about the capture's slot.
#[derive(Debug, Clone)]
struct SlotState {
    restart_lsn: Option<u64>,
    wal_status: Option<String>,
    retained: u64,
}

/// The SQL side of the capture: slot checks, advances, receiver progress.
struct Server {
    client: tokio_postgres::Client,
    slot: String,
    app: String,
}

fn sql_err(what: &str, e: tokio_postgres::Error) -> String {
    format!("{what}: {}", crate::fault::root_cause(&e))
}

impl Server {
    async fn slot(&self) -> Result<Option<SlotState>, String> {
        let row = self
            .client
            .query_opt(
                "SELECT restart_lsn::text, wal_status, slot_type, \
                 coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| sql_err("reading pg_replication_slots", e))?;
        let Some(r) = row else { return Ok(None) };
        let kind: String = r.get(2);
        if kind != "physical" {
            return Err(format!(
                "replication slot `{}` exists and is {kind}, not physical; set `slot` to another name",
                self.slot
            ));
        }
        let lsn: Option<String> = r.get(0);
        Ok(Some(SlotState {
            restart_lsn: lsn.as_deref().and_then(parse_lsn),
            wal_status: r.get(1),
            retained: r.get::<_, i64>(3).max(0) as u64,
        }))
    }

    /// Moves the slot to `lsn` when it is behind (never backwards).
    async fn advance(&self, lsn: u64) -> Result<(), String> {
        let l = format_lsn(lsn);
        self.client
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn) \
                 FROM pg_replication_slots WHERE slot_name = $1 AND restart_lsn < $2::text::pg_lsn",
                &[&self.slot, &l],
            )
            .await
            .map(|_| ())
            .map_err(|e| sql_err("advancing the replication slot", e))
    }

    /// The server's current WAL position and how far pg_receivewal has
    /// received (`None` while it is not connected).
    async fn receiver(&self) -> Result<(u64, Option<u64>), String> {
        let r = self
            .client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, \
                 (SELECT max(write_lsn)::text FROM pg_stat_replication WHERE application_name = $1)",
                &[&self.app],
            )
            .await
            .map_err(|e| sql_err("reading pg_stat_replication", e))?;
        let cur: String = r.get(0);
        let got: Option<String> = r.get(1);
        Ok((
            parse_lsn(&cur).unwrap_or(0),
            got.as_deref().and_then(parse_lsn),
        ))
    }
}

/// The `max_slot_wal_keep_size` the capture needs, or why the server's is refused.
fn check_keep_size(setting_mb: i64, cap: u64, slot: &str) -> Result<(), String> {
    let cap_mb = (cap >> 20).max(1);
    let fix = format!(
        "run `ALTER SYSTEM SET max_slot_wal_keep_size = '{cap_mb}MB'; SELECT pg_reload_conf();` on the server (or raise slot_max_retained)"
    );
    if setting_mb < 0 {
        return Err(format!(
            "the server's max_slot_wal_keep_size is -1 (unlimited): the slot `{slot}` could fill the server's disk while gsdr is down; {fix}"
        ));
    }
    if (setting_mb as u64) > cap_mb {
        return Err(format!(
            "the server's max_slot_wal_keep_size is {setting_mb}MB, above slot_max_retained ({cap_mb}MB); {fix}"
        ));
    }
    Ok(())
}

/// The files pg_receivewal left in the spool.
#[derive(Debug, Default)]
struct Spool {
    /// Complete segments and `.history` files, in the order they are stored.
    complete: Vec<String>,
    /// The current partial segment (the newest `.partial`).
    partial: Option<String>,
    /// Older `.partial` files (a timeline switch leaves one).
    stale_partials: Vec<String>,
}

fn read_spool(dir: &Path) -> std::io::Result<Spool> {
    let mut s = Spool::default();
    let mut partials = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(seg) = n.strip_suffix(".partial") {
            if seg.len() == 24 && super::walname::is_wal_name(seg) {
                partials.push(seg.to_string());
            }
        } else if super::walname::is_wal_name(&n) && !n.starts_with('.') {
            s.complete.push(n);
        }
    }
    // History files first (a new timeline needs them), then segments in order.
    s.complete
        .sort_by_key(|n| (!n.ends_with(".history"), n[8.min(n.len())..].to_string(), n.clone()));
    partials.sort_by_key(|n| (n[8..].to_string(), n.clone()));
    s.partial = partials.pop();
    s.stale_partials = partials;
    Ok(s)
}

/// Offset of the end of the data in a zero-filled partial segment (the last
/// non-zero byte + 1): a measure of its progress.
fn data_end(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Stops the pg_receivewal a killed gsdr left running in `spool`, if any
/// (its pid file names it; it is checked to be pg_receivewal first).
fn stop_leftover_receiver(spool: &Path) {
    let Ok(text) = std::fs::read_to_string(spool.join(RECEIVER_PID)) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmdline);
    if cmd.contains("pg_receivewal") && cmd.contains(&*spool.to_string_lossy()) {
        tracing::warn!(event = "capture_leftover_receiver", pid, spool = %spool.display(), "stopping the pg_receivewal an earlier gsdr left running");
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if nix::sys::signal::kill(p, None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_file(spool.join(RECEIVER_PID));
}

/// A running pg_receivewal and the tail of its stderr.
struct Receiver {
    child: tokio::process::Child,
    stderr: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Receiver {
    fn last_lines(&self) -> String {
        let l = self.stderr.lock().expect("not poisoned");
        l.iter().cloned().collect::<Vec<_>>().join("; ")
    }

    async fn stop(mut self, spool: &Path) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(spool.join(RECEIVER_PID));
    }
}

/// The run's state between flushes.
struct Run<'a> {
    cap: &'a StreamCapture,
    ctx: &'a CaptureCtx,
    archive: WalArchive,
    server: Server,
    spool: PathBuf,
    seg_bytes: u64,
    /// The partial last stored: segment and data end.
    stored_partial: Option<(String, u64)>,
    report: CaptureReport,
    /// When the newest WAL was stored, and which object.
    last_point: Option<(DateTime<Utc>, String)>,
}

impl Run<'_> {
    fn emit_stored(&self, target: &str, point: DateTime<Utc>, object: &str) {
        let lag = (Utc::now() - point).num_milliseconds().max(0) as f64 / 1000.0;
        CaptureStored {
            source: &self.cap.source,
            target,
            point,
            lag_secs: lag,
            object,
        }
        .emit();
    }

    /// Stores the complete files in the spool, oldest first; stops at the
    /// first failure (the next flush retries). Returns how many are left.
    async fn store_complete(&mut self, files: &[String]) -> usize {
        for (i, name) in files.iter().enumerate() {
            let path = self.spool.join(name);
            let point = Utc::now();
            match self.store_one(&path, name).await {
                Ok(()) => {
                    let _ = tokio::fs::remove_file(&path).await;
                    self.last_point = Some((point, name.clone()));
                }
                Err(e) => {
                    tracing::warn!(event = "capture_store_failed", source = %self.cap.source, name, error = %e, "retried at the next flush; the slot keeps the WAL on the server");
                    return files.len() - i;
                }
            }
        }
        0
    }

    async fn store_one(&mut self, path: &Path, name: &str) -> Result<(), String> {
        let seg = SegmentId::parse(name, self.seg_bytes);
        if seg.is_some() {
            wal::check_cluster(&self.archive, path, name)
                .await
                .map_err(|e| e.to_string())?;
        }
        let outcome = wal::push_one(
            &self.archive,
            &self.ctx.encode,
            PushOptions::default(),
            path,
            name,
        )
        .await
        .map_err(|e| e.to_string())?;
        let point = Utc::now();
        self.report.objects += 1;
        if let Ok(Some(o)) = self
            .archive
            .store
            .head(&layout::wal_data(&self.cap.source, name))
            .await
        {
            self.report.bytes += o.size;
        }
        tracing::info!(event = "capture_segment_stored", source = %self.cap.source, name, outcome = ?outcome);
        self.emit_stored(&self.ctx.primary.0, point, name);
        for (oname, ostore) in &self.ctx.offsite {
            if super::walcopy::copy_offsite(&self.archive, Some((oname, ostore)), name)
                .await
                .is_some()
            {
                self.emit_stored(oname, point, name);
            }
        }
        if let Some(seg) = seg {
            // The complete segment replaces its partial, on every target.
            let pk = layout::wal_stream_partial(&self.cap.source, name);
            let _ = self.archive.store.delete(&pk).await;
            for (_, ostore) in &self.ctx.offsite {
                let _ = ostore.delete(&pk).await;
            }
            if self.stored_partial.as_ref().is_some_and(|(n, _)| n == name) {
                self.stored_partial = None;
            }
            // Stored: the server may now recycle it.
            self.server
                .advance((seg.number + 1) * self.seg_bytes)
                .await?;
        }
        Ok(())
    }

    /// Stores the current partial when it grew since the last flush.
    /// `Ok(true)` when it stored something.
    async fn store_partial(&mut self, name: &str) -> Result<bool, String> {
        let path = self.spool.join(format!("{name}.partial"));
        let snap_dir = self.spool.join(SNAPSHOT_DIR);
        let snap = snap_dir.join(name);
        let point = Utc::now();
        let (p, s) = (path.clone(), snap.clone());
        let end = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(s.parent().expect("in a folder"))?;
            std::fs::copy(&p, &s)?;
            data_end(&s)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("snapshotting `{}`: {e}", path.display()))?;
        if end == 0
            || self
                .stored_partial
                .as_ref()
                .is_some_and(|(n, e)| n == name && *e >= end)
        {
            let _ = tokio::fs::remove_file(&snap).await;
            return Ok(false);
        }
        let r = wal::store_partial(&self.archive, &self.ctx.encode, &snap, name).await;
        let _ = tokio::fs::remove_file(&snap).await;
        let stored = r.map_err(|e| e.to_string())?;
        self.report.objects += 1;
        self.report.bytes += stored;
        self.stored_partial = Some((name.to_string(), end));
        let object = format!("{name}.partial");
        self.emit_stored(&self.ctx.primary.0, point, &object);
        for (oname, ostore) in &self.ctx.offsite {
            match super::walcopy::copy_partial(&self.archive.store, ostore, &self.cap.source, name)
                .await
            {
                Ok(_) => self.emit_stored(oname, point, &object),
                Err(e) => {
                    tracing::warn!(event = "wal_offsite_copy_failed", source = %self.cap.source, name = %object, target = %oname, error = %e, "the replicate sweep copies it later")
                }
            }
        }
        self.last_point = Some((point, object));
        Ok(true)
    }

    /// One flush: complete files, then the partial. Returns the complete
    /// files still waiting and whether anything was stored.
    async fn flush(&mut self) -> (usize, bool) {
        let spool = match read_spool(&self.spool) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "capture_spool_unreadable", source = %self.cap.source, spool = %self.spool.display(), error = %e);
                return (0, false);
            }
        };
        let before = self.report.objects;
        let waiting = self.store_complete(&spool.complete).await;
        for p in &spool.stale_partials {
            // A timeline switch leaves the old timeline's partial: its WAL is
            // in the new timeline's first segment.
            let _ = std::fs::remove_file(self.spool.join(format!("{p}.partial")));
        }
        if waiting == 0 {
            if let Some(p) = &spool.partial {
                if let Err(e) = self.store_partial(p).await {
                    tracing::warn!(event = "capture_partial_failed", source = %self.cap.source, name = %p, error = %e, "retried at the next flush");
                }
            }
        }
        (waiting, self.report.objects > before)
    }

    fn spawn_receiver(&self) -> Result<Receiver, EngineError> {
        let cfg = &self.cap.cfg;
        let prog = cfg.program("pg_receivewal");
        let mut cmd = tokio::process::Command::new(&prog);
        cmd.arg("-D")
            .arg(&self.spool)
            .args(["-h", &cfg.host, "-p", &cfg.port.to_string(), "-U", &cfg.user])
            // No slot: its feedback would move the slot past what gsdr stored.
            .args(["-w", "--no-loop", "-v", "--status-interval=1"])
            .env("PGAPPNAME", &self.server.app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let base = super::backup::BaseBackupSource::new(&self.cap.source, cfg.clone());
        if let Some(p) = base.password()? {
            cmd.env("PGPASSWORD", p);
        }
        super::tls::libpq_env(cfg, &mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            self.cap.refuse(format!(
                "cannot start `{}` ({e}); install the PostgreSQL client or set pg_bin",
                prog.display()
            ))
        })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(self.spool.join(RECEIVER_PID), pid.to_string());
        }
        let lines = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let keep = lines.clone();
        let stderr = child.stderr.take().expect("piped");
        let source = self.cap.source.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                tracing::debug!(event = "pg_receivewal", source = %source, line = %l);
                let mut k = keep.lock().expect("not poisoned");
                if k.len() >= STDERR_LINES {
                    k.pop_front();
                }
                k.push_back(l);
            }
        });
        Ok(Receiver {
            child,
            stderr: lines,
        })
    }
}

impl StreamCapture {
    /// Checks what the capture needs of the server (`wal_level`,
    /// `max_wal_senders`, `max_slot_wal_keep_size` within
    /// `slot_max_retained`) and returns its timeline; `gsdr policy check
    /// --connect` runs it too, so a server that would refuse the capture is
    /// found before the daemon starts.
    pub(super) async fn check_settings(
        &self,
        client: &tokio_postgres::Client,
        slot: &str,
    ) -> EngineResult<u32> {
        let q = |e: tokio_postgres::Error| self.fail(sql_err("reading the server's settings", e));
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int, \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), \
                 (SELECT timeline_id FROM pg_control_checkpoint())",
                &[],
            )
            .await
            .map_err(q)?;
        let wal_level: String = row.get(0);
        if wal_level == "minimal" {
            return Err(self.refuse(
                "the server's wal_level is minimal; set wal_level = replica (and restart it)".into(),
            ));
        }
        if row.get::<_, i32>(1) < 1 {
            return Err(self.refuse(
                "the server's max_wal_senders is 0; set it to at least 2 (and restart it)".into(),
            ));
        }
        check_keep_size(row.get::<_, i64>(2), self.cfg.slot_max_retained.0, slot)
            .map_err(|m| self.refuse(m))?;
        Ok(row.get::<_, i32>(3) as u32)
    }

    /// What `policy check --connect` asks of a streamed source: the server
    /// settings the capture needs (the slot is neither created nor moved).
    pub(super) async fn probe(&self) -> Result<(), SourceError> {
        let base = super::backup::BaseBackupSource::new(&self.source, self.cfg.clone());
        let password = base.password()?;
        let client = base.connect(password.as_deref()).await?;
        let slot = self.cfg.slot_name(&self.source);
        match self.check_settings(&client, &slot).await {
            Ok(_) => Ok(()),
            Err(EngineError::Source(e)) => Err(e),
            Err(e) => Err(SourceError::Config {
                message: e.to_string(),
            }),
        }
    }

    /// Connects, checks the server's settings and the slot (creating it),
    /// and returns the SQL session and the slot's position.
    async fn prepare(&self) -> EngineResult<(Server, SlotState, u32)> {
        let base = super::backup::BaseBackupSource::new(&self.source, self.cfg.clone());
        let password = base.password()?;
        let client = base.connect(password.as_deref()).await?;
        let slot = self.cfg.slot_name(&self.source);
        let timeline = self.check_settings(&client, &slot).await?;
        let server = Server {
            client,
            slot: slot.clone(),
            app: format!("gsdr-stream-{slot}"),
        };
        let state = match server.slot().await.map_err(|m| self.fail(m))? {
            Some(s) => s,
            None => {
                server
                    .client
                    .execute("SELECT pg_create_physical_replication_slot($1, true)", &[&slot])
                    .await
                    .map_err(|e| self.fail(sql_err(&format!("creating replication slot `{slot}`"), e)))?;
                tracing::info!(event = "capture_slot_created", source = %self.source, slot = %slot);
                server
                    .slot()
                    .await
                    .map_err(|m| self.fail(m))?
                    .ok_or_else(|| self.fail(format!("replication slot `{slot}` vanished after it was created")))?
            }
        };
        if state.wal_status.as_deref() == Some("lost") || state.restart_lsn.is_none() {
            return Err(self.refuse(format!(
                "the replication slot `{slot}` lost WAL (its retention passed max_slot_wal_keep_size while nothing streamed): the archive has a hole from there. Drop it (`SELECT pg_drop_replication_slot('{slot}');`), then take a base backup (`gsdr backup --source {}`); the next capture creates the slot again",
                self.source
            )));
        }
        Ok((server, state, timeline))
    }
}

/// Prepares the spool for pg_receivewal: when it holds no WAL at or after
/// the slot's segment, it is emptied and seeded with a zero-filled partial
/// of that segment, where pg_receivewal then starts.
fn seed_spool(
    spool: &Path,
    restart: SegmentId,
    seg_bytes: u64,
) -> std::io::Result<()> {
    std::fs::create_dir_all(spool)?;
    let s = read_spool(spool)?;
    let newest = s
        .partial
        .iter()
        .chain(s.complete.iter())
        .filter_map(|n| SegmentId::parse(n, seg_bytes))
        .map(|x| x.number)
        .max();
    if newest.is_some_and(|n| n >= restart.number) {
        return Ok(());
    }
    for n in s.complete.iter().chain(s.partial.iter()) {
        if SegmentId::parse(n, seg_bytes).is_some() {
            let _ = std::fs::remove_file(spool.join(n));
            let _ = std::fs::remove_file(spool.join(format!("{n}.partial")));
        }
    }
    let f = std::fs::File::create(spool.join(format!("{}.partial", restart.name(seg_bytes))))?;
    f.set_len(seg_bytes)?;
    f.sync_all()
}

#[async_trait]
impl Capture for StreamCapture {
    async fn run(&self, ctx: CaptureCtx) -> EngineResult<CaptureReport> {
        let (server, slot, timeline) = self.prepare().await?;
        let seg_bytes = self.cfg.wal_segment_bytes;
        let spool = self.cfg.spool_for(&self.source);
        stop_leftover_receiver(&spool);
        let archive = WalArchive {
            source: self.source.clone(),
            cfg: self.cfg.clone(),
            store: ctx.primary.1.clone() as Arc<dyn Store>,
            trust: crate::signing::Trust::default(),
        };
        let mut run = Run {
            cap: self,
            ctx: &ctx,
            archive,
            server,
            spool: spool.clone(),
            seg_bytes,
            stored_partial: None,
            report: CaptureReport::default(),
            last_point: None,
        };
        std::fs::create_dir_all(&spool).map_err(|e| EngineError::LocalIo {
            what: "creating the capture's spool folder",
            path: spool.clone(),
            source: e,
        })?;
        // What an earlier run left complete is stored before streaming on.
        run.flush().await;
        let slot = match run.server.slot().await {
            Ok(Some(s)) => s,
            _ => slot,
        };
        let restart = SegmentId::of_lsn(timeline, slot.restart_lsn.unwrap_or(0), seg_bytes);
        seed_spool(&spool, restart, seg_bytes).map_err(|e| EngineError::LocalIo {
            what: "seeding the capture's spool folder",
            path: spool.clone(),
            source: e,
        })?;
        tracing::info!(event = "capture_streaming", source = %self.source, slot = %run.server.slot, from = %format_lsn(slot.restart_lsn.unwrap_or(0)), spool = %spool.display());
        let flush_every = self.cfg.stream_flush.0;
        let stall = ctx.encode.stall_timeout.max(flush_every * 2);
        let mut receiver = Some(run.spawn_receiver()?);
        let mut last_progress = Instant::now();
        let mut last_received: Option<u64> = None;
        let mut tick = tokio::time::interval(flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let outcome: EngineResult<()> = loop {
            let exited = tokio::select! {
                _ = ctx.cancel.cancelled() => break Ok(()),
                _ = tick.tick() => false,
                st = async { match receiver.as_mut() { Some(r) => r.child.wait().await.ok(), None => std::future::pending().await } } => {
                    tracing::debug!(event = "pg_receivewal_exited", status = ?st);
                    true
                }
            };
            let (waiting, _) = run.flush().await;
            if exited {
                let r = receiver.take().expect("it was running");
                let detail = r.last_lines();
                r.stop(&spool).await;
                CaptureReconnect {
                    source: &self.source,
                    reason: "disconnected",
                    detail: &detail,
                }
                .emit();
                break Err(self.fail(format!(
                    "pg_receivewal stopped streaming from {}:{}: {detail}",
                    self.cfg.host, self.cfg.port
                )));
            }
            // Bounded spool: stop receiving while uploads fail.
            if waiting > self.cfg.spool_segments && receiver.is_some() {
                tracing::warn!(event = "capture_paused", source = %self.source, waiting, "uploads are behind: pg_receivewal stopped until the spool drains (the slot keeps the WAL)");
                if let Some(r) = receiver.take() {
                    r.stop(&spool).await;
                }
            } else if waiting == 0 && receiver.is_none() {
                tracing::info!(event = "capture_resumed", source = %self.source);
                receiver = Some(run.spawn_receiver()?);
                last_progress = Instant::now();
            }
            match run.server.slot().await {
                Ok(Some(s)) => {
                    CaptureRetained {
                        source: &self.source,
                        bytes: s.retained,
                        limit: self.cfg.slot_max_retained.0,
                    }
                    .emit();
                    if s.wal_status.as_deref() == Some("lost") {
                        break Err(self.refuse(format!(
                            "the replication slot `{}` was invalidated by the server (max_slot_wal_keep_size): WAL is lost from there; drop the slot and take a base backup",
                            run.server.slot
                        )));
                    }
                }
                Ok(None) => {
                    break Err(self.fail(format!(
                        "the replication slot `{}` was dropped on the server; the next run creates it again (take a base backup: WAL may be missing)",
                        run.server.slot
                    )))
                }
                Err(m) => break Err(self.fail(m)),
            }
            // Stall detector: the server has newer WAL and the receiver got none of it.
            if receiver.is_some() {
                match run.server.receiver().await {
                    Ok((current, got)) => {
                        let behind = got.is_none_or(|g| g < current);
                        if got != last_received || !behind {
                            last_received = got;
                            last_progress = Instant::now();
                        } else if last_progress.elapsed() > stall {
                            let detail = format!(
                                "no WAL received for {}s while the server is at {} (received: {})",
                                last_progress.elapsed().as_secs(),
                                format_lsn(current),
                                got.map_or("nothing".into(), format_lsn)
                            );
                            CaptureReconnect {
                                source: &self.source,
                                reason: "stalled",
                                detail: &detail,
                            }
                            .emit();
                            break Err(self.fail(format!("the WAL stream stalled: {detail}")));
                        }
                    }
                    Err(m) => break Err(self.fail(m)),
                }
            }
        };
        // Stop receiving first, then store what it wrote.
        if let Some(r) = receiver.take() {
            r.stop(&spool).await;
        }
        run.flush().await;
        let detail = match &run.last_point {
            Some((at, obj)) => format!(
                "streamed into the archive up to `{obj}` (stored {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "nothing new streamed".to_string(),
        };
        outcome?;
        Ok(CaptureReport {
            detail,
            ..run.report
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_size_must_be_set_and_within_the_cap() {
        let cap = 1u64 << 30;
        let e = check_keep_size(-1, cap, "gsdr_pg").unwrap_err();
        assert!(e.contains("ALTER SYSTEM SET max_slot_wal_keep_size = '1024MB'"), "{e}");
        assert!(check_keep_size(2048, cap, "gsdr_pg").unwrap_err().contains("above"));
        assert!(check_keep_size(1024, cap, "gsdr_pg").is_ok());
        assert!(check_keep_size(64, cap, "gsdr_pg").is_ok());
    }

    #[test]
    fn spool_orders_history_first_then_segments_and_finds_the_partial() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000003",
            "000000010000000000000002",
            "00000002.history",
            "000000010000000000000004.partial",
            "000000020000000000000005.partial",
            "junk",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let s = read_spool(d.path()).unwrap();
        assert_eq!(
            s.complete,
            [
                "00000002.history",
                "000000010000000000000002",
                "000000010000000000000003"
            ]
        );
        assert_eq!(s.partial.as_deref(), Some("000000020000000000000005"));
        assert_eq!(s.stale_partials, ["000000010000000000000004"]);
    }

    #[test]
    fn data_end_is_past_the_last_non_zero_byte() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p");
        let mut v = vec![0u8; 3 << 20];
        assert_eq!({ std::fs::write(&p, &v).unwrap(); data_end(&p).unwrap() }, 0);
        v[(1 << 20) + 7] = 1;
        std::fs::write(&p, &v).unwrap();
        assert_eq!(data_end(&p).unwrap(), (1 << 20) + 8);
    }

    #[test]
    fn an_empty_or_stale_spool_is_seeded_at_the_slot() {
        let d = tempfile::tempdir().unwrap();
        let seg = 1u64 << 24;
        let at = SegmentId::parse("000000010000000000000007", seg).unwrap();
        std::fs::write(d.path().join("000000010000000000000003"), b"old").unwrap();
        seed_spool(d.path(), at, seg).unwrap();
        let s = read_spool(d.path()).unwrap();
        assert!(s.complete.is_empty(), "{:?}", s.complete);
        assert_eq!(s.partial.as_deref(), Some("000000010000000000000007"));
        let m = std::fs::metadata(d.path().join("000000010000000000000007.partial")).unwrap();
        assert_eq!(m.len(), seg);
        // A spool at or past the slot is left as it is.
        std::fs::write(d.path().join("000000010000000000000008"), b"new").unwrap();
        seed_spool(d.path(), at, seg).unwrap();
        assert!(d.path().join("000000010000000000000008").exists());
    }
}
