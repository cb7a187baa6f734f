//! Scratch servers of a `command` source: there is no server to start.

use crate::source::{not_supported, SourceError};

/// The error of a scratch server asked of a `command` source.
pub fn unsupported(source: &str) -> SourceError {
    not_supported(
        source,
        "a `command` backup has no server to start: restore it to a file",
    )
}
