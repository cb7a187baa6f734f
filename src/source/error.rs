//! The error of an engine's restore, deep verify, canary and scratch server:
//! the layer errors it passes through unchanged, and its own few cases.
//! Engines return it instead of the aggregate `gsdr::Error` (which sits
//! above them); that one takes each variant over as its namesake, so
//! messages, kinds and retry classes read the same from every command.

use std::path::PathBuf;

use crate::catalog::CatalogError;
use crate::fault::{ErrorKind, RetryClass};
use crate::pipeline::PipelineError;
use crate::storage::StorageError;
use crate::stream::SourceError;

/// Any error an engine's restore-side operations can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The source (database, command) failed to produce or accept data.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Reading from a target failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Decryption, decompression or a stream check failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A catalog entry is missing or unreadable.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A local file could not be read or written.
    #[error("{what} `{path}`: {source}")]
    LocalIo {
        /// What gsdr was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The operation is valid but this engine or feature is not built yet.
    #[error("{0}: not supported yet")]
    NotSupported(String),
    /// Anything the operator asked for that cannot be done as asked.
    #[error("{0}")]
    Invalid(String),
}

impl EngineError {
    /// Whether a retry may succeed (as `gsdr::Error` answers for the same case).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            EngineError::Storage(e) => e.retry_class(),
            EngineError::Source(e) => e.retry_class(),
            EngineError::Pipeline(e) => e.retry_class(),
            EngineError::LocalIo { .. } => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }

    /// What kind of failure this is (as `gsdr::Error` answers for the same case).
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Invalid(_) => ErrorKind::InvalidInput,
            EngineError::Storage(e) => e.kind(),
            EngineError::Pipeline(e) => e.kind(),
            EngineError::Source(e) => e.kind(),
            EngineError::Catalog(e) => e.kind(),
            EngineError::LocalIo { .. } => ErrorKind::LocalIo,
            EngineError::NotSupported(_) => ErrorKind::NotSupported,
        }
    }
}

/// Result with an engine's [`EngineError`].
pub type EngineResult<T, E = EngineError> = std::result::Result<T, E>;
