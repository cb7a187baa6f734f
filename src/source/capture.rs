//! Continuous capture: a source's change log streamed into its targets
//! between backups (PostgreSQL WAL over replication, the Redis replication
//! stream, the MongoDB oplog), so the RPO is seconds instead of a schedule.
//!
//! An engine that can capture returns a [`Capture`] from
//! [`super::Engine::capture`] when its source's settings enable it. The daemon
//! runs it as the leased job `capture/<source>` (one replica streams; a failed
//! run is restarted at the next slot, `daemon.capture_restart` later, which is
//! the reconnect backoff), `gsdr capture --source S` runs it in the
//! foreground. What it stores is the engine's own log archive
//! ([`super::LogArchive`]): restores, status, metrics, retention and the
//! off-site sweep read it from there.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::EngineResult;
use crate::pipeline::EncodeOptions;
use crate::storage::Store;

/// What a capture runs with.
pub struct CaptureCtx {
    /// Source name (the first folder of its keys).
    pub source: String,
    /// The source's primary target: name and opened store.
    pub primary: (String, Arc<dyn Store>),
    /// Off-site targets: every object stored on the primary is copied there
    /// as soon as it is stored (the replicate sweep stays as the catch-up).
    pub offsite: Vec<(String, Arc<dyn Store>)>,
    /// How stored objects are compressed and encrypted.
    pub encode: EncodeOptions,
    /// Fires when the capture must stop (shutdown, lost lease, Ctrl-C): the
    /// engine flushes what it holds, stores it, and returns `Ok`.
    pub cancel: CancellationToken,
}

/// What one capture run did, for its job record and the operator.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureReport {
    /// Objects stored on the primary target.
    pub objects: u64,
    /// Stored (compressed, encrypted) bytes.
    pub bytes: u64,
    /// One line: what was captured and up to where.
    pub detail: String,
}

/// A continuous capture of one source.
#[async_trait]
pub trait Capture: Send + Sync {
    /// Streams until `ctx.cancel` fires (then `Ok`). An error ends this run:
    /// nothing acknowledged to the server is lost, because the engine only
    /// acknowledges what it has stored (PostgreSQL's slot, Redis offsets,
    /// the oplog position read back from the archive).
    async fn run(&self, ctx: CaptureCtx) -> EngineResult<CaptureReport>;
}
