//! Raw → zstd → age, on one blocking thread.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;

use super::chan::{ChunkWriter, Msg};
use super::finish::{Running, StreamCtl, WIND_DOWN};
use super::{hex_digest, PipelineError, CHUNK_BYTES, ZSTD_JOB_BYTES};
use crate::stream::{SourceMeta, SourceStream};

/// How to compress and to whom to encrypt.
#[derive(Clone)]
pub struct EncodeOptions {
    /// zstd level (1–19).
    pub level: i32,
    /// zstd worker threads; 0 compresses on the pipeline thread itself.
    pub workers: u32,
    /// age X25519 recipients (public keys); at least one.
    pub recipients: Vec<age::x25519::Recipient>,
    /// No progress for this long cancels the stream ([`DEFAULT_STALL_TIMEOUT`] unless the policy says).
    pub stall_timeout: std::time::Duration,
    /// Signs the metadata written beside the data (manifests, WAL sidecars); `None`: unsigned.
    pub signer: Option<std::sync::Arc<crate::signing::Signer>>,
}

impl std::fmt::Debug for EncodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeOptions")
            .field("level", &self.level)
            .field("workers", &self.workers)
            .field("recipients", &self.recipients.len())
            .field("stall_timeout", &self.stall_timeout)
            .field("signer", &self.signer)
            .finish()
    }
}

/// What an encode measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeStats {
    /// Bytes read from the source.
    pub raw_bytes: u64,
    /// SHA-256 of the raw stream.
    pub raw_sha256: String,
    /// Bytes produced (compressed and encrypted).
    pub stored_bytes: u64,
    /// SHA-256 of the stored stream.
    pub stored_sha256: String,
}

/// A running encode: its stored (encrypted) bytes and, once they were read
/// to the end, its stats and the source's metadata. Run it with
/// [`Running::finish`].
pub type Encoded = Running<(EncodeStats, SourceMeta)>;

/// Starts encoding `src`. Must be called inside a Tokio runtime.
pub fn encode(src: SourceStream, opts: EncodeOptions) -> Encoded {
    let stall_timeout = opts.stall_timeout;
    Running::spawn(stall_timeout, move |tx, handle, ctl| {
        run(src, &opts, tx, handle, ctl)
    })
}

/// Marks the codec as waiting for its input before each read.
pub(super) struct WaitingRead<'a, R> {
    pub(super) inner: R,
    pub(super) ctl: &'a StreamCtl,
}

impl<R: Read> Read for WaitingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ctl.watch.wait_input();
        self.inner.read(buf)
    }
}

fn run(
    src: SourceStream,
    opts: &EncodeOptions,
    tx: tokio::sync::mpsc::Sender<Msg>,
    handle: &tokio::runtime::Handle,
    ctl: &StreamCtl,
) -> Result<(EncodeStats, SourceMeta), PipelineError> {
    if opts.recipients.is_empty() {
        return Err(PipelineError::Key(
            "no age recipients configured: a backup must be encrypted to at least one public key"
                .into(),
        ));
    }
    let SourceStream { reader, done } = src;
    let mut input = WaitingRead {
        inner: SyncIoBridge::new_with_handle(ctl.input(reader), handle.clone()),
        ctl,
    };
    // The source's own completion check, bounded once the stream is cancelled.
    let finish_source = |done: futures::future::BoxFuture<
        'static,
        Result<SourceMeta, crate::stream::SourceError>,
    >|
     -> Result<SourceMeta, PipelineError> {
        ctl.watch.wait_input();
        let cancel = ctl.clone();
        let r = handle.block_on(async move {
            tokio::select! {
                r = done => Some(r),
                _ = async {
                    while !cancel.is_cancelled() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    tokio::time::sleep(WIND_DOWN / 2).await;
                } => None,
            }
        });
        match r {
            Some(r) => r.map_err(PipelineError::Source),
            None => Err(ctl.cancelled_error()),
        }
    };

    let recipients = opts.recipients.iter().map(|r| r as &dyn age::Recipient);
    let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| {
        PipelineError::Key(format!("cannot encrypt to the configured recipients: {e}"))
    })?;
    let age_w = encryptor
        .wrap_output(ChunkWriter::new(tx, ctl.watch.clone()))
        .map_err(closed_or("age"))?;
    let mut z = zstd::stream::write::Encoder::new(age_w, opts.level).map_err(io_err("zstd"))?;
    z.include_checksum(true).map_err(io_err("zstd"))?;
    if opts.workers > 0 {
        z.multithread(opts.workers).map_err(io_err("zstd"))?;
        z.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_BYTES))
            .map_err(io_err("zstd"))?;
    }

    let mut raw_hasher = Sha256::new();
    let mut raw_bytes = 0u64;
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The source's own verdict explains a broken stream better than the read error.
                drop(input);
                if ctl.is_cancelled() {
                    return Err(ctl.cancelled_error());
                }
                return match finish_source(done) {
                    Err(e @ (PipelineError::Source(_) | PipelineError::Cancelled(_))) => Err(e),
                    _ => Err(PipelineError::Io {
                        stage: "reading the source",
                        source: e,
                    }),
                };
            }
        };
        raw_hasher.update(&buf[..n]);
        raw_bytes += n as u64;
        z.write_all(&buf[..n]).map_err(closed_or("zstd"))?;
    }
    drop(input);
    // The source confirms completeness (child exit status, trailer CRC...) before we seal.
    let meta = finish_source(done)?;

    let age_w = z.finish().map_err(closed_or("zstd"))?;
    let sink = age_w.finish().map_err(closed_or("age"))?;
    let (tx, stored_hasher, stored_bytes) = sink.finish().map_err(closed_or("upload"))?;
    if ctl.is_cancelled() {
        return Err(ctl.cancelled_error());
    }
    tx.blocking_send(Msg::Done)
        .map_err(|_| PipelineError::Closed("upload"))?;
    Ok((
        EncodeStats {
            raw_bytes,
            raw_sha256: hex_digest(raw_hasher),
            stored_bytes,
            stored_sha256: hex_digest(stored_hasher),
        },
        meta,
    ))
}

fn io_err(stage: &'static str) -> impl Fn(io::Error) -> PipelineError {
    move |source| PipelineError::Io { stage, source }
}

/// A broken pipe towards the sink means the upload failed first: say so.
fn closed_or(stage: &'static str) -> impl Fn(io::Error) -> PipelineError {
    move |source| {
        if source.kind() == io::ErrorKind::BrokenPipe {
            PipelineError::Closed("upload")
        } else {
            PipelineError::Io { stage, source }
        }
    }
}
