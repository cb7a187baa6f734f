//! Bounded chunk channels between the blocking codec threads and async code.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::finish::{Running, StreamCtl, Watch};
use super::PipelineError;
use super::{CHANNEL_CHUNKS, CHUNK_BYTES};

/// One message on a chunk channel.
pub(crate) enum Msg {
    /// Bytes of the stream.
    Data(Bytes),
    /// The stream is complete and verified.
    Done,
    /// The producer failed; the stream is invalid.
    Failed(io::Error),
}

/// A new bounded chunk channel.
pub(crate) fn channel() -> (mpsc::Sender<Msg>, ChunkReader) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        tx,
        ChunkReader {
            rx,
            current: Bytes::new(),
            state: State::Open,
        },
    )
}

#[derive(PartialEq)]
enum State {
    Open,
    Done,
    Failed,
}

/// AsyncRead over a chunk channel: end-of-file only after an explicit `Done`.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
    state: State,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::other("the pipeline failed earlier")))
                }
                State::Open => {}
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Msg::Data(b))) => self.current = b,
                Poll::Ready(Some(Msg::Done)) => self.state = State::Done,
                Poll::Ready(Some(Msg::Failed(e))) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the pipeline stopped before the end of the stream",
                    )));
                }
            }
        }
    }
}

/// A blocking `Write` that batches into chunks, hashes and counts them, and
/// sends them on a chunk channel, waiting when the channel is full.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Msg>,
    watch: Arc<Watch>,
    buf: BytesMut,
    pub(crate) hasher: Sha256,
    pub(crate) bytes: u64,
}

impl ChunkWriter {
    pub(crate) fn new(tx: mpsc::Sender<Msg>, watch: Arc<Watch>) -> Self {
        ChunkWriter {
            tx,
            watch,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        self.send(Msg::Data(chunk))
    }

    pub(crate) fn send(&self, msg: Msg) -> io::Result<()> {
        self.watch.wait_output();
        self.tx
            .blocking_send(msg)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "receiver went away"))?;
        self.watch.touch();
        Ok(())
    }

    /// Flushes the last chunk; the caller sends `Done` once everything is verified.
    pub(crate) fn finish(mut self) -> io::Result<(mpsc::Sender<Msg>, Sha256, u64)> {
        self.send_buf()?;
        Ok((self.tx, self.hasher, self.bytes))
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Here, not in `finish`: the codec writes into this module's channel, and
// `finish` must not import `chan` (which watches through `finish`).
impl<S: Send + 'static> Running<S> {
    /// Runs the codec `run` on a blocking thread, writing into the returned
    /// reader. Its failure is also sent down the stream, so the sink aborts
    /// instead of committing (never blocking: a sink that stopped reading is
    /// cancelled anyway). Must be called inside a Tokio runtime.
    pub(crate) fn spawn(
        stall_timeout: std::time::Duration,
        run: impl FnOnce(
                tokio::sync::mpsc::Sender<Msg>,
                &tokio::runtime::Handle,
                &StreamCtl,
            ) -> Result<S, PipelineError>
            + Send
            + 'static,
    ) -> Running<S> {
        let (tx, reader) = channel();
        let handle = tokio::runtime::Handle::current();
        let ctl = StreamCtl::new();
        let thread_ctl = ctl.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let fail_tx = tx.clone();
            let result = run(tx, &handle, &thread_ctl);
            if let Err(e) = &result {
                let msg = Msg::Failed(io::Error::other(e.to_string()));
                let _ = fail_tx.try_send(msg);
            }
            result
        });
        Running {
            reader: Box::pin(reader),
            stats,
            ctl,
            stall_timeout,
        }
    }
}
