//! Stored → age → zstd → raw, on one blocking thread, checking SHA-256 and size.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;

use super::chan::{ChunkWriter, Msg};
use super::encode::WaitingRead;
use super::finish::{Running, StreamCtl, DEFAULT_STALL_TIMEOUT};
use super::keys::Identities;
use super::{hex_digest, PipelineError, CHUNK_BYTES};
use crate::stream::BoxRead;

/// What the manifest says the stored object must be.
#[derive(Debug, Clone, Default)]
pub struct DecodeExpect {
    /// Stored size in bytes.
    pub stored_bytes: Option<u64>,
    /// SHA-256 of the stored object.
    pub stored_sha256: Option<String>,
    /// SHA-256 of the raw stream.
    pub raw_sha256: Option<String>,
    /// Recipients, for the wrong-key message.
    pub recipients: Vec<String>,
}

/// What a decode measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeStats {
    /// Stored bytes read.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes.
    pub stored_sha256: String,
    /// Raw bytes produced.
    pub raw_bytes: u64,
    /// SHA-256 of the raw bytes.
    pub raw_sha256: String,
}

/// A running decode: its raw bytes, which end with EOF only once every check
/// passed (a failed check shows as a read error, after which nothing written
/// is valid), and its stats. Run it with [`Running::finish`].
pub type Decoded = Running<DecodeStats>;

/// Starts decoding `stored` with `identities`. Must be called inside a Tokio runtime.
pub fn decode(stored: BoxRead, identities: Arc<Identities>, expect: DecodeExpect) -> Decoded {
    Running::spawn(DEFAULT_STALL_TIMEOUT, move |tx, handle, ctl| {
        run(stored, &identities, &expect, tx, handle, ctl)
    })
}

/// Counts and hashes what passes through, and keeps the first read error:
/// age and zstd pass a failed read on as if the payload were damaged.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            if self.failed.is_none() && e.kind() != io::ErrorKind::Interrupted {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn run(
    stored: BoxRead,
    identities: &Identities,
    expect: &DecodeExpect,
    tx: tokio::sync::mpsc::Sender<Msg>,
    handle: &tokio::runtime::Handle,
    ctl: &StreamCtl,
) -> Result<DecodeStats, PipelineError> {
    let input = Hashing {
        inner: WaitingRead {
            inner: SyncIoBridge::new_with_handle(ctl.input(stored), handle.clone()),
            ctl,
        },
        hasher: Sha256::new(),
        bytes: 0,
        failed: None,
    };
    let mut input = BufReader::with_capacity(CHUNK_BYTES / 4, input);
    let mut out = ChunkWriter::new(tx, ctl.watch.clone());
    let result = decrypt_into(&mut input, identities, expect, &mut out);
    if result.is_err() && ctl.is_cancelled() {
        return Err(ctl.cancelled_error());
    }
    if let Err(e) = result {
        // The download failed (a cut connection, a server that stopped
        // answering): that is the cause, not a damaged object.
        if let Some(source) = input.get_mut().failed.take() {
            return Err(PipelineError::Io {
                stage: "reading the stored object",
                source,
            });
        }
        // A damaged last chunk at end-of-input on a short object is a cut, not corruption.
        let at_eof = matches!(io::BufRead::fill_buf(&mut input), Ok(b) if b.is_empty());
        let read = input.get_ref().bytes;
        let short = expect.stored_bytes.is_some_and(|want| read < want);
        let e = match e {
            PipelineError::Corrupt { .. } if at_eof && short => PipelineError::Truncated {
                read: 0,
                expected: 0,
            },
            other => other,
        };
        return Err(classify_short(e, read, expect));
    }
    // Hash whatever follows age's last chunk too: the manifest hash covers the whole object.
    io::copy(&mut input, &mut io::sink()).map_err(|source| PipelineError::Io {
        stage: "reading the stored object",
        source,
    })?;
    let Hashing {
        hasher,
        bytes: stored_bytes,
        ..
    } = input.into_inner();
    let stored_sha256 = hex_digest(hasher);
    if let Some(want) = expect.stored_bytes {
        if stored_bytes < want {
            return Err(PipelineError::Truncated {
                read: stored_bytes,
                expected: want,
            });
        }
    }
    if let Some(want) = &expect.stored_sha256 {
        if *want != stored_sha256 {
            return Err(PipelineError::ChecksumMismatch {
                expected: want.clone(),
                actual: stored_sha256,
            });
        }
    }
    let (tx, raw_hasher, raw_bytes) = out.finish().map_err(|_| PipelineError::Closed("restore"))?;
    let raw_sha256 = hex_digest(raw_hasher);
    if let Some(want) = &expect.raw_sha256 {
        if *want != raw_sha256 {
            return Err(PipelineError::ChecksumMismatch {
                expected: want.clone(),
                actual: raw_sha256,
            });
        }
    }
    if ctl.is_cancelled() {
        return Err(ctl.cancelled_error());
    }
    tx.blocking_send(Msg::Done)
        .map_err(|_| PipelineError::Closed("restore"))?;
    Ok(DecodeStats {
        stored_bytes,
        stored_sha256,
        raw_bytes,
        raw_sha256,
    })
}

fn decrypt_into<R: io::BufRead>(
    input: &mut R,
    identities: &Identities,
    expect: &DecodeExpect,
    out: &mut ChunkWriter,
) -> Result<(), PipelineError> {
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| age_err(e, expect))?;
    let plain = decryptor
        .decrypt(identities.iter())
        .map_err(|e| age_err(e, expect))?;
    let mut z = zstd::stream::read::Decoder::new(plain).map_err(|e| PipelineError::Io {
        stage: "zstd",
        source: e,
    })?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match z.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_err(e)),
        };
        out.write_all(&buf[..n])
            .map_err(|_| PipelineError::Closed("restore"))?;
    }
}

/// Errors while reading the payload: age reports damaged chunks as
/// `InvalidData`, a cut stream as `UnexpectedEof`; zstd as `Other`.
fn stream_err(e: io::Error) -> PipelineError {
    let msg = e.to_string();
    match e.kind() {
        io::ErrorKind::UnexpectedEof => PipelineError::Truncated {
            read: 0,
            expected: 0,
        },
        io::ErrorKind::InvalidData if msg.contains("decrypt") || msg.contains("chunk") => {
            PipelineError::Corrupt {
                stage: "age",
                message: msg,
            }
        }
        io::ErrorKind::Other | io::ErrorKind::InvalidData => PipelineError::Corrupt {
            stage: "zstd",
            message: msg,
        },
        _ => PipelineError::Io {
            stage: "reading the stored object",
            source: e,
        },
    }
}

/// Fills in the byte counts of a truncation; other errors pass through.
/// (A short object is also caught before decoding, from its stored size.)
fn classify_short(e: PipelineError, read: u64, expect: &DecodeExpect) -> PipelineError {
    match e {
        PipelineError::Truncated { .. } => PipelineError::Truncated {
            read,
            expected: expect.stored_bytes.unwrap_or(0),
        },
        other => other,
    }
}

fn age_err(e: age::DecryptError, expect: &DecodeExpect) -> PipelineError {
    match e {
        age::DecryptError::NoMatchingKeys => PipelineError::WrongKey {
            recipients: if expect.recipients.is_empty() {
                "unknown recipients".into()
            } else {
                expect.recipients.join(", ")
            },
        },
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            PipelineError::Truncated {
                read: 0,
                expected: 0,
            }
        }
        other => PipelineError::Corrupt {
            stage: "age",
            message: other.to_string(),
        },
    }
}
