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
mod config;
mod decode;
mod encode;
mod finish;
pub mod keys;

pub use config::*;
pub use decode::{decode, DecodeExpect, DecodeStats, Decoded};
pub use encode::{encode, EncodeOptions, EncodeStats, Encoded};
pub use finish::{Ends, Running, StreamCtl, StreamError, DEFAULT_STALL_TIMEOUT, WIND_DOWN};

use crate::fault::ErrorKind;
use crate::fault::RetryClass;
use crate::stream::SourceError;

use crate::stream::{CHANNEL_CHUNKS, CHUNK_BYTES, ZSTD_JOB_BYTES};

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
    /// Nothing moved for the stall timeout; the stream was cancelled.
    #[error("{side} made no progress for {secs} s; the stream was cancelled (raise `pipeline.stall_timeout` if this server is legitimately that slow)")]
    Stalled {
        /// What stalled: the source, the upload, the restore target...
        side: String,
        /// The stall timeout.
        secs: u64,
    },
    /// The stream was cancelled from outside (a job deadline, shutdown) or by its other side.
    #[error("{0}")]
    Cancelled(String),
    /// The codec thread panicked (a bug); the stream was abandoned.
    #[error("the compression/encryption thread panicked: {0}; nothing was committed")]
    Panicked(String),
}

impl PipelineError {
    /// Whether a retry may help.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            PipelineError::Source(e) => e.retry_class(),
            PipelineError::Io { .. } | PipelineError::Closed(_) | PipelineError::Stalled { .. } => {
                RetryClass::Temporary
            }
            _ => RetryClass::Permanent,
        }
    }
}

/// SHA-256 as lower-case hex.
pub(crate) fn hex_digest(h: sha2::Sha256) -> String {
    use sha2::Digest;
    hex::encode(h.finalize())
}

impl PipelineError {
    /// What the operator must fix (exit codes, `--json` error documents).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::WrongKey { .. } | PipelineError::Key(_) => ErrorKind::WrongKey,
            PipelineError::Truncated { .. }
            | PipelineError::ChecksumMismatch { .. }
            | PipelineError::Corrupt { .. } => ErrorKind::Damaged,
            PipelineError::Source(e) => e.kind(),
            PipelineError::Stalled { .. } => ErrorKind::Unreachable,
            PipelineError::Cancelled(_) => ErrorKind::Cancelled,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::keys::Identities;
    use super::*;
    use crate::stream::{SourceMeta, SourceStream};

    fn key() -> (age::x25519::Identity, age::x25519::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (id, r)
    }

    /// A source yielding `data` in the given chunk sizes (cycled).
    fn source(data: Vec<u8>, chunks: Vec<usize>) -> SourceStream {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut pos = 0;
            let mut i = 0;
            while pos < data.len() {
                let n = chunks[i % chunks.len()].max(1).min(data.len() - pos);
                tx.write_all(&data[pos..pos + n]).await.unwrap();
                pos += n;
                i += 1;
            }
        });
        SourceStream {
            reader: Box::pin(rx),
            done: Box::pin(async { Ok(SourceMeta::default()) }),
        }
    }

    async fn encode_all(
        data: Vec<u8>,
        chunks: Vec<usize>,
        workers: u32,
        r: age::x25519::Recipient,
    ) -> (Vec<u8>, EncodeStats) {
        let enc = encode(
            source(data, chunks),
            EncodeOptions {
                level: 3,
                workers,
                recipients: vec![r],
                stall_timeout: crate::pipeline::DEFAULT_STALL_TIMEOUT,
                signer: None,
            },
        );
        let mut stored = Vec::new();
        let mut reader = enc.reader;
        reader.read_to_end(&mut stored).await.unwrap();
        let (stats, _) = enc.stats.await.unwrap().unwrap();
        (stored, stats)
    }

    async fn decode_all(
        stored: Vec<u8>,
        id: age::x25519::Identity,
        expect: DecodeExpect,
    ) -> (Vec<u8>, Result<DecodeStats, PipelineError>) {
        let dec = decode(
            Box::pin(std::io::Cursor::new(stored)),
            Arc::new(Identities::from_x25519(vec![id])),
            expect,
        );
        let mut raw = Vec::new();
        let mut reader = dec.reader;
        let _ = reader.read_to_end(&mut raw).await;
        (raw, dec.stats.await.unwrap())
    }

    fn text_like(n: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut x = seed;
        while out.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(
                format!("{{\"id\":{},\"glucose\":{}}}\n", x >> 40, (x >> 20) % 400).as_bytes(),
            );
        }
        out.truncate(n);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// compress → encrypt → decrypt → decompress is the identity, for any input and chunking.
        #[test]
        fn round_trip_any_input(data in proptest::collection::vec(any::<u8>(), 0..300_000),
                                chunks in proptest::collection::vec(1usize..70_000, 1..6),
                                workers in 0u32..3) {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let (id, r) = key();
                let (stored, stats) = encode_all(data.clone(), chunks, workers, r).await;
                prop_assert_eq!(stats.raw_bytes, data.len() as u64);
                prop_assert_eq!(stats.stored_bytes, stored.len() as u64);
                let (raw, res) = decode_all(stored, id, DecodeExpect { stored_sha256: Some(stats.stored_sha256.clone()), ..Default::default() }).await;
                let res = res.unwrap();
                prop_assert_eq!(res.raw_sha256, stats.raw_sha256);
                prop_assert!(raw == data);
                Ok(())
            })?;
        }
    }

    async fn stored_sample() -> (Vec<u8>, EncodeStats, age::x25519::Identity) {
        let (id, r) = key();
        let data = text_like(3 << 20, 7);
        let (stored, stats) = encode_all(data, vec![100_000], 2, r).await;
        (stored, stats, id)
    }

    fn expect(stats: &EncodeStats) -> DecodeExpect {
        DecodeExpect {
            stored_bytes: Some(stats.stored_bytes),
            stored_sha256: Some(stats.stored_sha256.clone()),
            raw_sha256: Some(stats.raw_sha256.clone()),
            recipients: vec![],
        }
    }

    #[tokio::test]
    async fn flipped_byte_is_corruption() {
        let (mut stored, stats, id) = stored_sample().await;
        let mid = stored.len() / 2;
        stored[mid] ^= 0x01;
        let (_, res) = decode_all(stored, id, expect(&stats)).await;
        let err = res.unwrap_err();
        assert!(
            matches!(err, PipelineError::Corrupt { stage: "age", .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_download_that_fails_midway_is_an_io_error_not_corruption() {
        use tokio::io::AsyncReadExt as _;
        let (stored, stats, id) = stored_sample().await;
        let half = stored.len() / 2;
        // The first half, then the error a cut connection gives (kind `Other`).
        let cut = std::io::Cursor::new(stored[..half].to_vec()).chain(FailingRead);
        let dec = decode(
            Box::pin(cut),
            Arc::new(Identities::from_x25519(vec![id])),
            expect(&stats),
        );
        let mut reader = dec.reader;
        let _ = reader.read_to_end(&mut Vec::new()).await;
        let err = dec.stats.await.unwrap().unwrap_err();
        assert!(matches!(err, PipelineError::Io { .. }), "{err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    struct FailingRead;

    impl tokio::io::AsyncRead for FailingRead {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::other("connection reset")))
        }
    }

    #[tokio::test]
    async fn truncated_object_is_reported_as_truncated() {
        let (mut stored, stats, id) = stored_sample().await;
        stored.truncate(stored.len() - 1000);
        let (_, res) = decode_all(stored, id, expect(&stats)).await;
        let err = res.unwrap_err();
        assert!(matches!(err, PipelineError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("truncated"));
    }

    #[tokio::test]
    async fn wrong_key_is_named() {
        let (stored, stats, _) = stored_sample().await;
        let (other, _) = key();
        let (raw, res) = decode_all(stored, other, expect(&stats)).await;
        assert!(
            raw.is_empty(),
            "nothing may be produced without the right key"
        );
        assert!(matches!(res.unwrap_err(), PipelineError::WrongKey { .. }));
    }

    #[tokio::test]
    async fn altered_but_decodable_object_fails_the_checksum() {
        // Re-encrypting other data gives a valid age file with a different hash.
        let (stored, stats, id) = stored_sample().await;
        let mut exp = expect(&stats);
        exp.stored_sha256 = Some("0".repeat(64));
        exp.stored_bytes = Some(stored.len() as u64);
        let (_, res) = decode_all(stored, id, exp).await;
        assert!(matches!(
            res.unwrap_err(),
            PipelineError::ChecksumMismatch { .. }
        ));
    }

    #[tokio::test]
    async fn failing_source_never_ends_the_stored_stream_cleanly() {
        let (_, r) = key();
        let src = SourceStream {
            reader: Box::pin(std::io::Cursor::new(vec![1u8; 100_000])),
            done: Box::pin(async {
                Err(crate::stream::SourceError::Format {
                    source_name: "t".into(),
                    message: "bad trailer".into(),
                })
            }),
        };
        let enc = encode(
            src,
            EncodeOptions {
                level: 3,
                workers: 0,
                recipients: vec![r],
                stall_timeout: crate::pipeline::DEFAULT_STALL_TIMEOUT,
                signer: None,
            },
        );
        let mut reader = enc.reader;
        let mut sink = Vec::new();
        let read = reader.read_to_end(&mut sink).await;
        assert!(
            read.is_err(),
            "the stored stream must end in an error, not EOF"
        );
        assert!(matches!(
            enc.stats.await.unwrap(),
            Err(PipelineError::Source(_))
        ));
    }
}
