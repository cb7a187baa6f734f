//! The `postgres` engine: continuous WAL archiving, base backups and
//! point-in-time restore.
//!
//! - [`wal`]: `wal-push` (PostgreSQL's `archive_command`) and `wal-fetch`
//!   (`restore_command`). WAL objects live at
//!   `<source>/wal/<timeline>/<name>.zst.age`, each with a small sidecar
//!   `<name>.json` (SHA-256 and size of the raw file) that makes a repeated
//!   push of the same file recognisable without the private key.
//! - [`base`]: a [`crate::source::BackupSource`] of kind `base` streaming
//!   `pg_basebackup -D - -Ft -X none` through the pipeline.
//! - [`archiver`]: refuses a base backup of a cluster whose archiving is off
//!   or failing, and bounds PostgreSQL's wait for the backup's WAL.
//! - [`restore`]: unpacks the newest base backup before the target into a
//!   data directory and writes the recovery settings.
//! - [`walverify`]: gaps in the archived WAL chain per timeline, the end of
//!   the contiguous chain (the cluster's current RPO), and the retention helper.
//! - [`walchain`]: the contiguous chain from a base backup's first segment,
//!   and why a segment `wal-fetch` did not find is missing (end or hole).
//! - [`walname`]: WAL file names and the keys of their objects; [`walfloor`]:
//!   from which segment on the retained base backups need WAL (both pure,
//!   below the other WAL files).
//! - [`stream`]: `capture = "stream"`, WAL received with `pg_receivewal`
//!   and a physical slot, stored as it grows (partials) and as segments.
//! - [`walprune`]: after `gsdr prune` decided which base backups stay, deletes
//!   the archived WAL none of them needs.

mod drill;
pub use drill::DRILL_STEPS;
pub mod archiver;
pub mod backup;
pub mod canary;
pub mod config;
pub mod restore;
pub mod scratch;
pub mod stream;
pub mod tls;
pub mod wal;
pub mod walchain;
pub mod walcopy;
pub mod walfloor;
pub mod walname;
pub mod walprune;
pub mod walverify;

// The base backup was `base`; the WAL modules still name it so.
pub use backup as base;
pub use config::PostgresConfig;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::source::{
    not_supported, BackupSource, DeepVerify, Engine, EngineResult, Overwrite, RestoreCtx,
    RestoreOutcome, RestoreSpec, RestoreTarget, Scratch, ScratchSpec, SourceError,
};

/// The engine's name in policies and manifests.
pub const KIND: &str = "postgres";

/// The kind of the WAL commands' errors.
pub fn error_kind(e: &(dyn std::error::Error + 'static)) -> Option<crate::fault::ErrorKind> {
    e.downcast_ref::<wal::WalError>().map(wal::WalError::kind)
}

/// The engine of source `source`. Its settings are checked here (a run
/// refuses what `validate` refuses). Without settings, nothing but the file
/// restore works: a PostgreSQL restore needs the source's WAL archive.
pub fn engine(source: &str, cfg: Option<&PostgresConfig>) -> Result<Arc<dyn Engine>, SourceError> {
    if let Some(c) = cfg {
        c.validate().map_err(|m| SourceError::Config {
            message: format!("[sources.{source}.postgres]: {m}"),
        })?;
    }
    Ok(Arc::new(PostgresEngine {
        name: source.to_string(),
        config: cfg.cloned(),
        stream: cfg
            .filter(|c| c.streams())
            .map(|c| stream::StreamCapture::new(source, c.clone())),
    }))
}

/// A PostgreSQL source.
#[derive(Debug, Clone)]
pub struct PostgresEngine {
    name: String,
    config: Option<PostgresConfig>,
    /// The WAL stream when `capture = "stream"`.
    stream: Option<stream::StreamCapture>,
}

impl PostgresEngine {
    fn config(&self) -> Result<&PostgresConfig, SourceError> {
        self.config.as_ref().ok_or_else(|| SourceError::Config {
            message: format!("source `{0}` is not a postgres source", self.name),
        })
    }
}

/// A scratch PostgreSQL and how to reach it as the source's user.
struct PgScratch {
    server: scratch::ScratchPg,
    uri: String,
}

#[async_trait]
impl Scratch for PgScratch {
    fn uri(&self) -> String {
        self.uri.clone()
    }

    async fn stop(self: Box<Self>) {
        self.server.stop().await;
    }

    fn detach(self: Box<Self>) {
        self.server.detach();
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn source_name(&self) -> &str {
        &self.name
    }

    fn backup(&self) -> Result<Box<dyn BackupSource>, SourceError> {
        Ok(Box::new(backup::BaseBackupSource::new(
            &self.name,
            self.config()?.clone(),
        )))
    }

    async fn probe(&self) -> Result<(), SourceError> {
        backup::BaseBackupSource::new(&self.name, self.config()?.clone())
            .probe()
            .await?;
        match &self.stream {
            Some(s) => s.probe().await,
            None => Ok(()),
        }
    }

    async fn restore(
        &self,
        ctx: &RestoreCtx<'_>,
        spec: &RestoreSpec,
    ) -> EngineResult<RestoreOutcome> {
        restore::restore(
            ctx.host,
            self.config.as_ref(),
            ctx.catalog,
            &ctx.manifest.source,
            Some(ctx.manifest),
            spec,
            ctx.progress,
        )
        .await
    }

    async fn describe_overwrite(
        &self,
        _m: &crate::catalog::Manifest,
        spec: &RestoreSpec,
    ) -> Option<Overwrite> {
        match &spec.target {
            RestoreTarget::DataDir(d) if spec.replace => Some(restore::describe_overwrite(d)),
            _ => None,
        }
    }

    async fn verify_deep(
        &self,
        _ctx: &RestoreCtx<'_>,
        _scratch: Option<&str>,
    ) -> EngineResult<DeepVerify> {
        Err(not_supported(
            &self.name,
            "no deep verification for PostgreSQL backups; a drill restores and checks them",
        )
        .into())
    }

    async fn canary_write(&self) -> EngineResult<DateTime<Utc>> {
        canary::write(&self.name, self.config()?).await
    }

    async fn canary_read(&self, uri: &str) -> EngineResult<DateTime<Utc>> {
        let conn = canary::restored_conn(&self.name, uri, self.config.as_ref())?;
        canary::read(&conn).await
    }

    async fn scratch_start(&self, spec: &ScratchSpec<'_>) -> EngineResult<Box<dyn Scratch>> {
        let cfg = self.config()?;
        let server = if spec.as_endpoint {
            scratch::ScratchPg::start_endpoint(&self.name, cfg, spec.dir).await?
        } else {
            scratch::ScratchPg::start(&self.name, cfg, spec.dir).await?
        };
        let uri = server.conn_string(cfg);
        Ok(Box::new(PgScratch { server, uri }))
    }

    fn log_archive(&self) -> Option<&dyn crate::source::LogArchive> {
        Some(self)
    }

    fn restore_keeps_archiving(&self) -> bool {
        true
    }

    fn capture(&self) -> Option<&dyn crate::source::capture::Capture> {
        self.stream
            .as_ref()
            .map(|s| s as &dyn crate::source::capture::Capture)
    }

    async fn stand_in(
        &self,
        ctx: &RestoreCtx<'_>,
        req: &crate::source::StandIn<'_>,
    ) -> EngineResult<crate::source::StoodIn> {
        drill::stand_in(self, ctx, req).await
    }

    fn endpoint_target(&self, endpoint: &str) -> RestoreTarget {
        drill::endpoint_target(endpoint)
    }

    fn scratch_programs(&self, argv: &[String]) -> Result<(), String> {
        let _ = argv;
        drill::scratch_programs(self)
    }

    async fn count(&self, uri: &str, query: Option<&str>) -> EngineResult<i64> {
        drill::count(self, uri, query).await
    }

    fn check_files(&self) -> Option<Result<(), String>> {
        let c = self.config.as_ref().filter(|c| c.tls)?;
        Some(tls::PgTls::load(c).map(|_| ()))
    }
}

#[async_trait]
impl crate::source::LogArchive for PostgresEngine {
    async fn tail(
        &self,
        store: Arc<dyn crate::storage::Store>,
    ) -> Result<crate::source::LogTail, crate::source::LogError> {
        let archive = wal::WalArchive {
            source: self.name.clone(),
            cfg: self.config()?.clone(),
            store,
            trust: crate::signing::Trust::default(),
        };
        let st = walverify::wal_status(&archive).await?;
        Ok(crate::source::LogTail {
            last: st.last_segment,
            stored_at: st.last_archived_at,
        })
    }

    async fn reaches(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        m: &crate::catalog::Manifest,
    ) -> Result<Option<DateTime<Utc>>, crate::source::LogError> {
        Ok(walchain::restore_reaches(store, m).await?)
    }

    async fn newest(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        manifests: &[crate::catalog::Manifest],
    ) -> Result<Option<DateTime<Utc>>, crate::source::LogError> {
        let r = walchain::recoverable_on(store, &self.name, manifests).await?;
        Ok(r.map(|r| r.until))
    }

    async fn catch_up(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
        trust: &crate::signing::Trust,
    ) -> Result<crate::source::LogSweep, crate::source::LogError> {
        Ok(walcopy::catch_up(primary, offsite, &self.name, trust).await?)
    }

    async fn offsite_gap(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
    ) -> Result<Option<String>, crate::source::LogError> {
        Ok(walcopy::check(primary, offsite, &self.name).await?)
    }

    async fn prune(
        &self,
        store: &dyn crate::storage::Store,
        target: &str,
        remaining: &[crate::catalog::Manifest],
        failed: usize,
        dry_run: bool,
    ) -> Box<dyn crate::source::LogPruned> {
        Box::new(walprune::prune_wal(store, target, &self.name, remaining, failed, dry_run).await)
    }
}

/// Default WAL segment size (PostgreSQL's `--wal-segsize` default).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// A WAL segment position: timeline, and segment number counted from LSN 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    /// Timeline id.
    pub timeline: u32,
    /// Segment number (`LSN / segment size`).
    pub number: u64,
}

impl SegmentId {
    /// Parses a 24-hex-digit segment file name.
    pub fn parse(name: &str, seg_bytes: u64) -> Option<SegmentId> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per_log = segments_per_log(seg_bytes);
        if seg >= per_log {
            return None;
        }
        Some(SegmentId {
            timeline: tli,
            number: log * per_log + seg,
        })
    }

    /// The segment holding `lsn` on `timeline`.
    pub fn of_lsn(timeline: u32, lsn: u64, seg_bytes: u64) -> SegmentId {
        SegmentId {
            timeline,
            number: lsn / seg_bytes,
        }
    }

    /// The file name (`TTTTTTTTLLLLLLLLSSSSSSSS`).
    pub fn name(&self, seg_bytes: u64) -> String {
        let per_log = segments_per_log(seg_bytes);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> SegmentId {
        SegmentId {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }
}

fn segments_per_log(seg_bytes: u64) -> u64 {
    0x1_0000_0000 / seg_bytes
}

/// Parses an LSN written as `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

/// Formats an LSN as `16/B374D848`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The timeline directory a WAL file belongs to (first 8 hex digits), if it is a WAL file name.
pub fn timeline_of(name: &str) -> Option<&str> {
    let ok = name.len() >= 8 && name.as_bytes()[..8].iter().all(|b| b.is_ascii_hexdigit());
    ok.then(|| &name[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let s = SegmentId::parse("000000010000000A000000FF", DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(s.timeline, 1);
        assert_eq!(s.name(DEFAULT_SEGMENT_BYTES), "000000010000000A000000FF");
        assert_eq!(
            s.next().name(DEFAULT_SEGMENT_BYTES),
            "000000010000000B00000000"
        );
        assert!(SegmentId::parse("000000010000000A00000100", DEFAULT_SEGMENT_BYTES).is_none());
        assert!(SegmentId::parse("00000002.history", DEFAULT_SEGMENT_BYTES).is_none());
    }

    #[test]
    fn lsn_maps_to_its_segment() {
        let lsn = parse_lsn("0/2000028").unwrap();
        assert_eq!(format_lsn(lsn), "0/2000028");
        let s = SegmentId::of_lsn(1, lsn, DEFAULT_SEGMENT_BYTES);
        assert_eq!(s.name(DEFAULT_SEGMENT_BYTES), "000000010000000000000002");
        assert_eq!(
            SegmentId::of_lsn(3, parse_lsn("1/FF000000").unwrap(), DEFAULT_SEGMENT_BYTES)
                .name(DEFAULT_SEGMENT_BYTES),
            "0000000300000001000000FF"
        );
    }
}
