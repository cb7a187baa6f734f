//! The stream vocabulary every layer shares: a boxed byte reader, the chunk
//! sizes and memory budget of one stream, and what a source hands the
//! pipeline (a raw [`SourceStream`] whose `done` future confirms it, the
//! [`SourceMeta`] stored in the manifest, the [`SourceError`] it can fail with).

use crate::fault::ErrorKind;
use std::pin::Pin;

use futures::future::BoxFuture;
use tokio::io::AsyncRead;

use crate::fault::RetryClass;

pub mod budget;
pub mod progress;

/// A boxed byte reader, as stores return and accept them.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// Size of the chunks that travel between stages.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks a channel between stages holds before the producer waits.
pub const CHANNEL_CHUNKS: usize = 4;
/// zstd multithreading job size: bounds the per-worker buffers.
pub const ZSTD_JOB_BYTES: u32 = 4 << 20;

/// Engine-specific facts about a finished dump, stored in the manifest.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceMeta {
    /// The consistency point: the moment the backup restores to (RPO is
    /// measured from it). `None` where the engine cannot tell.
    pub consistency_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Engine-specific details (LSNs, oplog timestamps, replication offsets,
    /// per-collection counts and digests), free-form JSON.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// A raw byte stream from a source and the future that confirms it.
pub struct SourceStream {
    /// The raw bytes (a mongodump archive, an RDB file, a tar...).
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves once the reader is exhausted: `Ok` only if the stream is complete.
    pub done: BoxFuture<'static, Result<SourceMeta, SourceError>>,
}

/// Errors of a source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Could not reach or talk to the server.
    #[error("source `{source_name}`: {message}")]
    Connect {
        /// Policy name of the source.
        source_name: String,
        /// What happened, with advice.
        message: String,
        /// Cause.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server refused our credentials.
    #[error("source `{source_name}`: authentication failed: {message}")]
    Auth {
        /// Policy name of the source.
        source_name: String,
        /// What the server said (never the password).
        message: String,
    },
    /// The dump started but did not complete.
    #[error("source `{source_name}`: dump failed: {message}")]
    Dump {
        /// Policy name of the source.
        source_name: String,
        /// What happened.
        message: String,
        /// Whether retrying may help.
        class: RetryClass,
        /// Cause.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A restore into the engine failed.
    #[error("source `{source_name}`: restore failed: {message}")]
    Restore {
        /// Policy name of the source.
        source_name: String,
        /// What happened.
        message: String,
        /// Cause.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The engine has no such capability (a `command` source cannot be
    /// restored into a server, Redis has no point-in-time recovery...).
    #[error("{what}")]
    NotSupported {
        /// Policy name of the source.
        source_name: String,
        /// What was asked, and what to do instead.
        what: String,
    },
    /// A restored or scratch server does not answer (it may not be started yet).
    #[error("{message}")]
    Unreachable {
        /// What could not be reached, and the cause.
        message: String,
    },
    /// The source's settings are invalid (what the run would refuse).
    #[error("{message}")]
    Config {
        /// What is wrong, naming the source and the setting.
        message: String,
    },
    /// Something the operation needs is not there (no canary in restored data...).
    #[error("{message}")]
    NotFound {
        /// What is missing, and what to do.
        message: String,
    },
    /// The request is not one the engine can carry out as asked.
    #[error("{message}")]
    Invalid {
        /// What is wrong with it.
        message: String,
    },
    /// The data is not what the engine's format requires.
    #[error("source `{source_name}`: invalid data: {message}")]
    Format {
        /// Policy name of the source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

impl SourceError {
    /// Whether this is [`SourceError::NotSupported`]: the engine lacks the capability.
    pub fn is_not_supported(&self) -> bool {
        matches!(self, SourceError::NotSupported { .. })
    }

    /// Whether a retry may help.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            SourceError::Connect { .. } | SourceError::Unreachable { .. } => RetryClass::Temporary,
            SourceError::Dump { class, .. } => *class,
            _ => RetryClass::Permanent,
        }
    }
}

impl SourceError {
    /// What the operator must fix (exit codes, `--json` error documents).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Connect { .. } | SourceError::Unreachable { .. } => ErrorKind::Unreachable,
            SourceError::Auth { .. } => ErrorKind::AccessDenied,
            SourceError::NotSupported { .. } => ErrorKind::NotSupported,
            SourceError::Config { .. } | SourceError::Invalid { .. } => ErrorKind::InvalidInput,
            SourceError::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::SourceFailed,
        }
    }
}
