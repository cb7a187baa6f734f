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
use crate::source::SourceError;
use crate::storage::StorageError;

/// The kind of the first cause in `e`'s chain that is one of gsdr's error
/// types, preferring a specific kind (wrong key, damage, unreachable…)
/// found deeper over a generic one wrapping it.
pub fn kind_of_chain<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> ErrorKind {
    let mut first = None;
    for c in chain {
        if let Some(k) = kind_of(c) {
            if !matches!(k, ErrorKind::Other | ErrorKind::SourceFailed) {
                return k;
            }
            first.get_or_insert(k);
        }
    }
    first.unwrap_or(ErrorKind::Other)
}

/// The kind of `e` if it is one of gsdr's error types.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(e) = e.downcast_ref::<Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<StorageError>() {
        return Some(storage_kind(e));
    }
    if let Some(e) = e.downcast_ref::<PipelineError>() {
        return Some(pipeline_kind(e));
    }
    if let Some(e) = e.downcast_ref::<SourceError>() {
        return Some(source_kind(e));
    }
    if let Some(e) = e.downcast_ref::<crate::catalog::CatalogError>() {
        return Some(catalog_kind(e));
    }
    if e.downcast_ref::<PolicyError>().is_some() {
        return Some(ErrorKind::InvalidInput);
    }
    if e.downcast_ref::<crate::metrics::server::ServeError>()
        .is_some()
    {
        return Some(ErrorKind::InvalidInput);
    }
    if let Some(e) = e.downcast_ref::<crate::velero::VeleroError>() {
        return Some(velero_kind(e));
    }
    if let Some(e) = e.downcast_ref::<crate::drill::DrillError>() {
        return Some(match e {
            crate::drill::DrillError::Gsdr(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        });
    }
    if let Some(e) = e.downcast_ref::<crate::source::postgres::wal::WalError>() {
        return Some(match e {
            crate::source::postgres::wal::WalError::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Other,
        });
    }
    None
}

fn storage_kind(e: &StorageError) -> ErrorKind {
    match e {
        StorageError::NotFound { .. } => ErrorKind::NotFound,
        StorageError::AccessDenied { .. } => ErrorKind::AccessDenied,
        StorageError::Config { .. } => ErrorKind::InvalidInput,
        // Backends mark network failures, timeouts and 5xx temporary.
        StorageError::Io {
            class: RetryClass::Temporary,
            ..
        } => ErrorKind::Unreachable,
        StorageError::Body { .. } => ErrorKind::SourceFailed,
        _ => ErrorKind::Other,
    }
}

fn pipeline_kind(e: &PipelineError) -> ErrorKind {
    match e {
        PipelineError::WrongKey { .. } | PipelineError::Key(_) => ErrorKind::WrongKey,
        PipelineError::Truncated { .. }
        | PipelineError::ChecksumMismatch { .. }
        | PipelineError::Corrupt { .. } => ErrorKind::Damaged,
        PipelineError::Source(e) => source_kind(e),
        PipelineError::Stalled { .. } => ErrorKind::Unreachable,
        PipelineError::Cancelled(_) => ErrorKind::Cancelled,
        _ => ErrorKind::Other,
    }
}

fn source_kind(e: &SourceError) -> ErrorKind {
    match e {
        SourceError::Connect { .. } => ErrorKind::Unreachable,
        SourceError::Auth { .. } => ErrorKind::AccessDenied,
        _ => ErrorKind::SourceFailed,
    }
}

fn catalog_kind(e: &crate::catalog::CatalogError) -> ErrorKind {
    use crate::catalog::CatalogError;
    match e {
        CatalogError::UnknownBackup { .. } | CatalogError::NoBackup { .. } => ErrorKind::NotFound,
        CatalogError::BadManifest { .. } => ErrorKind::Damaged,
        CatalogError::Storage(e) => storage_kind(e),
    }
}

fn velero_kind(e: &crate::velero::VeleroError) -> ErrorKind {
    use crate::velero::VeleroError;
    match e {
        VeleroError::Kube { .. } | VeleroError::Http { .. } => ErrorKind::Unreachable,
        VeleroError::Timeout { .. } => ErrorKind::Cancelled,
        VeleroError::UnknownJob { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::Other,
    }
}

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
            Error::Storage(e) => storage_kind(e),
            Error::Pipeline(e) => pipeline_kind(e),
            Error::Source(e) => source_kind(e),
            Error::Catalog(e) => catalog_kind(e),
            Error::Velero(e) => velero_kind(e),
            Error::LocalIo { .. } => ErrorKind::LocalIo,
            Error::NotSupported(_) => ErrorKind::NotSupported,
            Error::DeadlineExceeded(_) => ErrorKind::Cancelled,
            _ => ErrorKind::Other,
        }
    }
}

/// Result with gsdr's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_found_under_context_and_damage_alone_exits_1() {
        let wrong = anyhow::Error::from(Error::Pipeline(PipelineError::WrongKey {
            recipients: "age1…".into(),
        }))
        .context("restore of `cache`");
        let k = kind_of_chain(wrong.chain());
        assert_eq!((k, k.exit_code()), (ErrorKind::WrongKey, 2));
        let cut = anyhow::Error::from(PipelineError::Truncated {
            read: 1,
            expected: 2,
        })
        .context("verify");
        let k = kind_of_chain(cut.chain());
        assert_eq!((k, k.exit_code()), (ErrorKind::Damaged, 1));
        let bare = anyhow::anyhow!("something else");
        assert_eq!(kind_of_chain(bare.chain()), ErrorKind::Other);
    }
}
