//! The `command` engine: back up any program's stdout (`pg_dumpall`, `tar`, …).
//!
//! The stream is opaque to gsdr, so the engine backs up ([`backup`]) and
//! probes, and restores to a file only (which every engine can); server
//! restores, deep verification, canaries and scratch servers are
//! [`SourceError::NotSupported`] ([`restore`], [`canary`], [`scratch`]).

/// The scenario steps of this engine.
pub const DRILL_STEPS: &[&str] = &["restore_command_source"];

mod backup;
pub mod canary;
mod config;
pub mod restore;
pub mod scratch;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use backup::CommandSource;
pub use config::CommandConfig;

use crate::source::{
    BackupSource, DeepVerify, Engine, EngineResult, Overwrite, RestoreCtx, RestoreOutcome,
    RestoreSpec, Scratch, ScratchSpec, SourceError,
};

/// The engine's name in policies and manifests.
pub const KIND: &str = "command";

/// The engine has no error types of its own beyond [`SourceError`](crate::source::SourceError).
pub fn error_kind(_: &(dyn std::error::Error + 'static)) -> Option<crate::fault::ErrorKind> {
    None
}

/// The engine of source `source`. A command has no defaults: without its
/// settings (a backup whose source left the policy) only the file restore,
/// which needs no engine, remains.
pub fn engine(source: &str, cfg: Option<&CommandConfig>) -> Result<Arc<dyn Engine>, SourceError> {
    Ok(Arc::new(CommandEngine {
        name: source.to_string(),
        config: cfg.cloned(),
    }))
}

/// A `command` source.
#[derive(Debug, Clone)]
pub struct CommandEngine {
    name: String,
    config: Option<CommandConfig>,
}

impl CommandEngine {
    fn config(&self) -> Result<&CommandConfig, SourceError> {
        crate::source::settings(self.config.as_ref(), &self.name, KIND)
    }
}

#[async_trait]
impl Engine for CommandEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn source_name(&self) -> &str {
        &self.name
    }

    fn backup(&self) -> Result<Box<dyn BackupSource>, SourceError> {
        Ok(Box::new(CommandSource::new(
            &self.name,
            self.config()?.clone(),
        )))
    }

    async fn probe(&self) -> Result<(), SourceError> {
        backup::probe(&self.name, self.config()?)
    }

    async fn restore(
        &self,
        _ctx: &RestoreCtx<'_>,
        _spec: &RestoreSpec,
    ) -> EngineResult<RestoreOutcome> {
        Err(restore::into_server(&self.name).into())
    }

    async fn describe_overwrite(
        &self,
        _m: &crate::catalog::Manifest,
        _spec: &RestoreSpec,
    ) -> Option<Overwrite> {
        None
    }

    async fn verify_deep(
        &self,
        _ctx: &RestoreCtx<'_>,
        _scratch: Option<&str>,
    ) -> EngineResult<DeepVerify> {
        Err(restore::deep_verify(&self.name).into())
    }

    fn has_canary(&self) -> bool {
        false
    }

    fn canary_absent_note(&self) -> Option<&'static str> {
        Some(canary::FALLBACK_NOTE)
    }

    async fn canary_write(&self) -> EngineResult<DateTime<Utc>> {
        Err(canary::unsupported(&self.name).into())
    }

    async fn canary_read(&self, _uri: &str) -> EngineResult<DateTime<Utc>> {
        Err(canary::unsupported(&self.name).into())
    }

    async fn scratch_start(&self, _spec: &ScratchSpec<'_>) -> EngineResult<Box<dyn Scratch>> {
        Err(scratch::unsupported(&self.name).into())
    }

    async fn stand_in(
        &self,
        ctx: &RestoreCtx<'_>,
        req: &crate::source::StandIn<'_>,
    ) -> EngineResult<crate::source::StoodIn> {
        let _ = (ctx, req);
        Err(crate::source::not_supported(
            &self.name,
            "a `command` backup restores to a file (restore_command_source), not into a server",
        )
        .into())
    }

    fn endpoint_target(&self, endpoint: &str) -> crate::source::RestoreTarget {
        crate::source::RestoreTarget::File(endpoint.into())
    }

    fn scratch_programs(&self, argv: &[String]) -> Result<(), String> {
        let _ = argv;
        Ok(())
    }

    async fn count(&self, uri: &str, query: Option<&str>) -> EngineResult<i64> {
        let _ = (uri, query);
        Err(crate::source::not_supported(
            &self.name,
            "a `command` backup has no server to count in",
        )
        .into())
    }
}
