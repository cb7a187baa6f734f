//! The `redis` engine: RDB snapshots streamed over the replication protocol,
//! Sentinel-aware node selection, and restores.
//!
//! - [`RedisSource`] connects to one node (`addr`) or asks the sentinels for
//!   a healthy, in-sync replica ([`sentinel`]), runs the replication
//!   handshake ([`replication`]) and streams the RDB payload straight into
//!   the pipeline, checking its header and CRC-64 on the way ([`rdb`]). A
//!   truncated or corrupt payload fails the `done` future, so nothing commits.
//! - The manifest records the replication id and offset of the snapshot,
//!   keys per database, the Redis and RDB versions.
//! - [`restore`] writes the `dump.rdb` to a file, or loads it into a scratch
//!   `redis-server` and copies every key (`DUMP`/`RESTORE … ABSTTL`) into a
//!   running instance; [`verify_deep`] loads it and checks that the server
//!   holds every key of the RDB ([`rdbkeys`]) except those already expired.
//!
//! With `tls = true` every connection, to nodes and sentinels, is TLS with
//! the policy's CA and client certificate ([`connect`]).

mod drill;
pub use drill::DRILL_STEPS;
mod backup;
pub mod canary;
mod config;
pub mod connect;
pub mod rdb;
pub mod rdbkeys;
pub mod replication;
mod restore;
pub mod slicer;
pub mod log;
pub mod replay;
mod capture;
pub mod scratch;
pub mod sentinel;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use backup::{probe, RedisSource};
pub use config::RedisConfig;
pub use restore::{describe_overwrite, restore, verify_deep, DeepVerifyReport};
pub use scratch::ScratchServer;

use crate::source::{
    BackupSource, DeepVerify, Engine, EngineResult, Overwrite, RestoreCtx, RestoreOutcome,
    RestoreSpec, RestoreTarget, Scratch, ScratchSpec, SourceError,
};

/// The engine's name in policies and manifests.
pub const KIND: &str = "redis";

/// The engine has no error types of its own beyond [`SourceError`](crate::source::SourceError).
pub fn error_kind(_: &(dyn std::error::Error + 'static)) -> Option<crate::fault::ErrorKind> {
    None
}

/// The engine of source `source`; without settings (a backup whose source
/// left the policy), restores use the defaults (`redis-server` on `PATH`, no TLS).
pub fn engine(source: &str, cfg: Option<&RedisConfig>) -> Result<Arc<dyn Engine>, SourceError> {
    let capture = match cfg {
        Some(c) if c.continuous => Some(capture::RedisCapture::new(RedisSource::new(
            source,
            c.clone(),
        )?)),
        _ => None,
    };
    Ok(Arc::new(RedisEngine {
        name: source.to_string(),
        config: cfg.cloned(),
        log: log::RedisLog {
            source: source.to_string(),
        },
        capture,
    }))
}

/// A Redis source.
#[derive(Debug, Clone)]
pub struct RedisEngine {
    name: String,
    config: Option<RedisConfig>,
    log: log::RedisLog,
    capture: Option<capture::RedisCapture>,
}

impl RedisEngine {
    fn config(&self) -> Result<&RedisConfig, SourceError> {
        crate::source::settings(self.config.as_ref(), &self.name, KIND)
    }

    fn redis_server(&self) -> String {
        self.config
            .as_ref()
            .map(|r| r.redis_server.clone())
            .unwrap_or_else(config::default_redis_server)
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn source_name(&self) -> &str {
        &self.name
    }

    fn backup(&self) -> Result<Box<dyn BackupSource>, SourceError> {
        Ok(Box::new(RedisSource::new(
            &self.name,
            self.config()?.clone(),
        )?))
    }

    async fn probe(&self) -> Result<(), SourceError> {
        probe(&self.name, self.config()?).await
    }

    async fn restore(
        &self,
        ctx: &RestoreCtx<'_>,
        spec: &RestoreSpec,
    ) -> EngineResult<RestoreOutcome> {
        restore(ctx, self.config.as_ref(), spec)
        .await
    }

    async fn describe_overwrite(
        &self,
        m: &crate::catalog::Manifest,
        spec: &RestoreSpec,
    ) -> Option<Overwrite> {
        match &spec.target {
            RestoreTarget::Server(uri) if spec.replace => {
                Some(describe_overwrite(self.config.as_ref(), m, uri).await)
            }
            _ => None,
        }
    }

    async fn verify_deep(
        &self,
        ctx: &RestoreCtx<'_>,
        _scratch: Option<&str>,
    ) -> EngineResult<DeepVerify> {
        let r = verify_deep(
            ctx.host,
            self.config.as_ref(),
            ctx.catalog,
            ctx.manifest,
            ctx.progress,
        )
        .await?;
        Ok(DeepVerify {
            ok: r.ok,
            report: serde_json::to_value(&r).unwrap_or_default(),
        })
    }

    async fn canary_write(&self) -> EngineResult<DateTime<Utc>> {
        Ok(canary::write(&self.name, self.config()?).await?)
    }

    async fn canary_read(&self, uri: &str) -> EngineResult<DateTime<Utc>> {
        Ok(canary::read(uri).await?)
    }

    async fn scratch_start(&self, spec: &ScratchSpec<'_>) -> EngineResult<Box<dyn Scratch>> {
        Ok(Box::new(
            ScratchServer::start(&self.redis_server(), spec.dir).await?,
        ))
    }

    async fn stand_in(
        &self,
        ctx: &RestoreCtx<'_>,
        req: &crate::source::StandIn<'_>,
    ) -> EngineResult<crate::source::StoodIn> {
        drill::stand_in(self, ctx, req).await
    }

    fn policy_password(&self) -> Option<crate::secret::Secret> {
        self.config.as_ref()?.password.as_ref()?.read().ok()
    }

    fn scratch_programs(&self, argv: &[String]) -> Result<(), String> {
        let _ = argv;
        drill::scratch_programs(self)
    }

    async fn count(&self, uri: &str, query: Option<&str>) -> EngineResult<i64> {
        drill::count(uri, query).await
    }

    fn log_archive(&self) -> Option<&dyn crate::source::LogArchive> {
        // Only a captured source keeps a log: the others' restores, drills
        // and incidents stay snapshot-only.
        self.capture.is_some().then_some(&self.log as _)
    }

    fn capture(&self) -> Option<&dyn crate::source::capture::Capture> {
        self.capture.as_ref().map(|c| c as _)
    }
}
