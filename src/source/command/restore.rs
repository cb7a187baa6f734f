//! Restores of a `command` backup: the raw stream to a file (done by the
//! job for every engine) and nothing else, since gsdr cannot know what
//! consumes the program's output.

use crate::source::{not_supported, SourceError};

/// Why a `command` backup cannot be restored into a server.
pub fn into_server(source: &str) -> SourceError {
    not_supported(
        source,
        "a `command` backup restores to a file only: pass --to-file PATH (or - for stdout)",
    )
}

/// Why a `command` backup has no deep verification.
pub fn deep_verify(source: &str) -> SourceError {
    not_supported(
        source,
        "a `command` backup is an opaque stream: no deep verification; the stream checks apply",
    )
}
