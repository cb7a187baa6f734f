//! The data path: raw bytes → zstd → age → stored bytes, and back.
//!
//! Both directions run their codecs on one blocking thread each and talk to
//! the async world through bounded channels of [`CHUNK_BYTES`]-sized chunks,
//! hashing (SHA-256) and counting the raw and the stored stream on the way.
//!
//! Memory bound of one encode: `CHUNK_BYTES × (CHANNEL_CHUNKS + 2)` for the
//! buffers, plus zstd's window and, with `workers > 0`, one job of
//! `ZSTD_JOB_BYTES` in and out per worker. With the defaults (level 3, 2
//! workers) that is about 6 MiB + 2 × 2 × 4 MiB ≈ 24 MiB. Decoding holds one
//! zstd window (8 MiB at most at level ≤ 19) and the same chunk buffers.
//!
//! Every stage finishes or aborts explicitly: the stored stream ends with an
//! explicit end-of-stream message sent only after `zstd::Encoder::finish`,
//! `age::StreamWriter::finish` and the source's own completion check all
//! succeeded. A stream that stops without it reads as an error, never as a
//! short but valid end-of-file, so a store cannot commit a truncated object.

mod chan;
mod decode;
mod encode;
pub mod keys;

pub use decode::{decode, DecodeExpect, DecodeStats, Decoded};
pub use encode::{encode, EncodeOptions, EncodeStats, Encoded};

use crate::error::RetryClass;
use crate::source::SourceError;

/// Size of the chunks that travel between stages.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks a channel between stages holds before the producer waits.
pub const CHANNEL_CHUNKS: usize = 4;
/// zstd multithreading job size: bounds the per-worker buffers.
pub const ZSTD_JOB_BYTES: u32 = 4 << 20;

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// No identity in the identity file can open this backup.
    #[error("none of the identities in the identity file can decrypt this backup: wrong key (the backup was encrypted to {recipients})")]
    WrongKey {
        /// The recipients the backup was encrypted to, if known from the manifest.
        recipients: String,
    },
    /// The stored object ended early.
    #[error("the stored object is truncated: read {read} of {expected} bytes; the backup is incomplete or the object was cut")]
    Truncated {
        /// Bytes read.
        read: u64,
        /// Bytes the manifest records.
        expected: u64,
    },
    /// The stored bytes do not hash to what the manifest records.
    #[error("checksum mismatch: the stored object hashes to {actual} but the manifest records {expected}; the object was altered after it was written")]
    ChecksumMismatch {
        /// SHA-256 from the manifest.
        expected: String,
        /// SHA-256 computed.
        actual: String,
    },
    /// Decryption or decompression found damaged data.
    #[error("the stored object is corrupt ({stage}): {message}")]
    Corrupt {
        /// `age` or `zstd`.
        stage: &'static str,
        /// Details.
        message: String,
    },
    /// The key material cannot be used.
    #[error("{0}")]
    Key(String),
    /// The source failed while streaming; the backup was abandoned.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Reading the input or writing the output failed.
    #[error("{stage}: {source}")]
    Io {
        /// Where.
        stage: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The other end of the pipeline went away (the upload or the consumer failed first).
    #[error("the {0} side of the pipeline stopped before the end of the stream")]
    Closed(&'static str),
}

impl PipelineError {
    /// Whether a retry may help.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            PipelineError::Source(e) => e.retry_class(),
            PipelineError::Io { .. } | PipelineError::Closed(_) => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }
}

/// SHA-256 as lower-case hex.
pub(crate) fn hex_digest(h: sha2::Sha256) -> String {
    use sha2::Digest;
    hex::encode(h.finalize())
}
