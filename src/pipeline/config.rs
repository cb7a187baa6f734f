//! The `[encryption]`, `[compression]` and `[pipeline]` settings of a policy.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::{ByteSize, HumanDuration};

/// age encryption settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Encryption {
    /// age X25519 recipients (public keys, `age1…`): typically an operations key and an offline break-glass key.
    pub recipients: Vec<String>,
    /// A file of further recipients, one per line (`#` comments allowed), e.g. a mounted ConfigMap.
    pub recipients_file: Option<PathBuf>,
    /// Identity file (private key) used to restore and verify; only needed there. A mounted secret.
    pub identity_file: Option<PathBuf>,
}

/// zstd settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// zstd level, 1–19.
    pub level: i32,
    /// zstd worker threads; 0 = one per CPU.
    pub workers: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: 3,
            workers: 0,
        }
    }
}

impl Compression {
    /// Worker threads to use, resolving 0 to the CPU count.
    pub fn effective_workers(&self) -> u32 {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            self.workers
        }
    }
}

/// `[pipeline]`: what one stream (a backup, a restore, a WAL segment) may use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineLimits {
    /// Memory one stream may use: the zstd worker count and the S3 part
    /// buffers in flight are derived from it (see `docs/ARCHITECTURE.md`, "Memory").
    pub memory_budget: ByteSize,
    /// A stream that moves no byte for this long (source silent, upload or
    /// restore target not answering) is cancelled with an error naming the side that stalled.
    pub stall_timeout: HumanDuration,
}

impl Default for PipelineLimits {
    fn default() -> Self {
        PipelineLimits {
            memory_budget: ByteSize(256 << 20),
            stall_timeout: HumanDuration(crate::pipeline::DEFAULT_STALL_TIMEOUT),
        }
    }
}
