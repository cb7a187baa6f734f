//! Heartbeat canaries of a `command` source: none can exist in an opaque
//! stream, so the drill falls back to the manifest's recovery point.

use crate::source::{not_supported, SourceError};

/// Why the recovered point of a `command` source comes from its manifest.
pub const FALLBACK_NOTE: &str =
    "command sources are opaque streams and cannot hold a heartbeat canary: the RPO uses the manifest's recovery point";

/// The error of a canary asked of a `command` source.
pub fn unsupported(source: &str) -> SourceError {
    not_supported(source, format!("source `{source}`: {FALLBACK_NOTE}"))
}
