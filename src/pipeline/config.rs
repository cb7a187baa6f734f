//! The `[encryption]`, `[compression]` and `[pipeline]` settings of a policy.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::{ByteSize, HumanDuration};

/// age encryption settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// age X25519 recipients (public keys, `age1…`): typically an operations key and an offline break-glass key.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of further recipients, one per line (`#` comments allowed), e.g. a mounted ConfigMap.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// Identity file (private key) used to restore and verify; only needed there. A mounted secret.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

/// zstd settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level, 1–19.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0 = one per CPU.
    #[serde(default)]
    pub workers: u32,
}

fn default_level() -> i32 {
    3
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: default_level(),
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
#[serde(deny_unknown_fields)]
pub struct PipelineLimits {
    /// Memory one stream may use: the zstd worker count and the S3 part
    /// buffers in flight are derived from it (see `docs/ARCHITECTURE.md`, "Memory").
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// A stream that moves no byte for this long (source silent, upload or
    /// restore target not answering) is cancelled with an error naming the side that stalled.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: HumanDuration,
}

fn default_memory_budget() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_stall_timeout() -> HumanDuration {
    HumanDuration(crate::pipeline::DEFAULT_STALL_TIMEOUT)
}

impl Default for PipelineLimits {
    fn default() -> Self {
        PipelineLimits {
            memory_budget: default_memory_budget(),
            stall_timeout: default_stall_timeout(),
        }
    }
}
