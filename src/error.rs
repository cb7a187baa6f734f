//! Error policy.
//!
//! - Library code returns these typed errors; the binary adds context with `anyhow`.
//! - Every message says what failed, on what, and what to do next, and keeps
//!   its cause (`#[source]`): nothing is flattened into a bare string.
//! - Every error has a [`RetryClass`]: the scheduler retries `Temporary` ones
//!   with backoff and gives up at once on `Permanent` ones.
//! - Secrets never appear in messages: errors name the *reference* to a secret
//!   (an env var name, a file path), never its value.
//! - Every error has an [`ErrorKind`]: what the operator must fix. The CLI
//!   derives its exit code and `--json` error document from it, so the same
//!   failure reads the same from every command.

use std::path::PathBuf;

pub use crate::fault::{ErrorKind, RetryClass};
use crate::pipeline::PipelineError;
use crate::policy::PolicyError;
use crate::source::error::EngineError;
use crate::source::SourceError;
use crate::storage::StorageError;

/// Any error gsdr's library can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Reading from or writing to a target failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Compression, encryption or their reverse failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A source (database, command) failed to produce or accept data.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A catalog entry is missing or unreadable.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// Velero (through the Kubernetes API) failed.
    #[error(transparent)]
    Velero(#[from] crate::velero::VeleroError),
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
    /// A job panicked (a bug); the panic was contained and nothing committed.
    #[error("{0}")]
    Panicked(String),
    /// A job ran past its deadline and was cancelled.
    #[error("{0}")]
    DeadlineExceeded(String),
}

impl Error {
    /// An engine's log-archive error as the aggregate error, keeping a
    /// storage failure's kind (unreachable, not found...).
    pub fn from_log(e: crate::source::LogError) -> Error {
        match e.downcast::<StorageError>() {
            Ok(s) => Error::Storage(*s),
            Err(e) => Error::Invalid(e.to_string()),
        }
    }
}

impl Error {
    /// Whether a retry may succeed.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::Storage(e) => e.retry_class(),
            Error::Source(e) => e.retry_class(),
            Error::Pipeline(e) => e.retry_class(),
            Error::Velero(e) => e.retry_class(),
            Error::LocalIo { .. } => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Policy(_) | Error::Invalid(_) => ErrorKind::InvalidInput,
            Error::Storage(e) => e.kind(),
            Error::Pipeline(e) => e.kind(),
            Error::Source(e) => e.kind(),
            Error::Catalog(e) => e.kind(),
            Error::Velero(e) => e.kind(),
            Error::LocalIo { .. } => ErrorKind::LocalIo,
            Error::NotSupported(_) => ErrorKind::NotSupported,
            Error::DeadlineExceeded(_) => ErrorKind::Cancelled,
            _ => ErrorKind::Other,
        }
    }
}

/// An engine's error becomes its namesake here, so a restore's failure reads
/// (message, kind, retry class, cause chain) exactly as it did when engines
/// returned [`Error`] themselves, and callers matching on [`Error::Pipeline`]
/// and the like still see it.
impl From<EngineError> for Error {
    fn from(e: EngineError) -> Error {
        match e {
            EngineError::Source(e) => Error::Source(e),
            EngineError::Storage(e) => Error::Storage(e),
            EngineError::Pipeline(e) => Error::Pipeline(e),
            EngineError::Catalog(e) => Error::Catalog(e),
            EngineError::LocalIo { what, path, source } => Error::LocalIo { what, path, source },
            EngineError::NotSupported(m) => Error::NotSupported(m),
            EngineError::Invalid(m) => Error::Invalid(m),
        }
    }
}

/// Result with gsdr's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine's error reads the same through the aggregate error: same
    /// message, kind (so exit code) and retry class.
    #[test]
    fn engine_errors_keep_message_kind_and_retry_class() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let cases: Vec<fn() -> EngineError> = vec![
            || EngineError::Invalid("bad request".into()),
            || EngineError::NotSupported("restoring `x` backups into a server".into()),
            || {
                EngineError::Pipeline(PipelineError::WrongKey {
                    recipients: "age1…".into(),
                })
            },
            || {
                EngineError::Pipeline(PipelineError::Truncated {
                    read: 1,
                    expected: 2,
                })
            },
            || {
                EngineError::Source(SourceError::Invalid {
                    message: "scratch server".into(),
                })
            },
        ];
        for make in cases {
            let (e, a) = (make(), Error::from(make()));
            assert_eq!(e.to_string(), a.to_string());
            assert_eq!(e.kind(), a.kind(), "{e}");
            assert_eq!(e.retry_class(), a.retry_class(), "{e}");
        }
        let local = EngineError::LocalIo {
            what: "writing",
            path: "/x".into(),
            source: io(),
        };
        let (msg, kind, retry) = (local.to_string(), local.kind(), local.retry_class());
        let a = Error::from(local);
        assert!(matches!(a, Error::LocalIo { .. }));
        assert_eq!(
            (msg, kind, retry),
            (a.to_string(), a.kind(), a.retry_class())
        );
        assert_eq!(kind, ErrorKind::LocalIo);
    }
}
