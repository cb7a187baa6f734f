//! How a stream ends: the one place that reconciles a codec thread with the
//! consumer of its output.
//!
//! A running encode or decode ([`Running`]) has three parties: its input (a
//! source, or a stored object being downloaded), the codec thread, and the
//! sink that consumes the output (an upload, a file, a database). Any of them
//! can fail or stop answering. [`Running::finish`] runs the sink and watches
//! all three:
//!
//! - whichever side fails first, the others are cancelled: the input reader
//!   and the output channel return errors at once (so a multipart upload
//!   aborts and a blocked codec thread wakes up), and each side gets
//!   [`WIND_DOWN`] to stop before `finish` returns anyway;
//! - no progress (no byte read from the input, none taken by the sink) for
//!   the stall timeout cancels the stream with an error that names the side
//!   that stalled;
//! - the first *cause* is returned: a codec error that only reports the sink
//!   going away ([`PipelineError::Closed`]) gives way to the sink's own error,
//!   and a sink error that only reports the codec's failure gives way to it.
//!
//! Nothing here relies on `Drop` for correctness: a stream that was cancelled
//! never sends its end-of-stream message, so no store commits it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::PipelineError;
use crate::stream::BoxRead;

/// Time each side gets to stop once the stream was cancelled.
pub const WIND_DOWN: Duration = Duration::from_secs(10);
/// Default for how long a stream may make no progress before it is cancelled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the stall detector looks.
const TICK: Duration = Duration::from_millis(500);

/// Which part of a stream is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Waiting {
    /// Nobody: the codec is computing.
    Codec = 0,
    /// The codec waits for bytes from the input.
    Input = 1,
    /// The codec waits for the sink to take bytes.
    Output = 2,
}

/// Progress of one stream, shared by the codec thread and [`Running::finish`].
#[derive(Debug)]
pub(crate) struct Watch {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte moved.
    last: AtomicU64,
    waiting: AtomicU8,
}

impl Watch {
    fn new() -> Self {
        Watch {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            waiting: AtomicU8::new(Waiting::Codec as u8),
        }
    }

    /// Records progress (bytes moved) and that the codec is computing again.
    pub(crate) fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
        self.waiting.store(Waiting::Codec as u8, Ordering::Relaxed);
    }

    /// The codec now waits for its input.
    pub(crate) fn wait_input(&self) {
        self.waiting.store(Waiting::Input as u8, Ordering::Relaxed);
    }

    /// The codec now waits for the sink.
    pub(crate) fn wait_output(&self) {
        self.waiting.store(Waiting::Output as u8, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn waiting(&self) -> Waiting {
        match self.waiting.load(Ordering::Relaxed) {
            1 => Waiting::Input,
            2 => Waiting::Output,
            _ => Waiting::Codec,
        }
    }
}

/// Cancellation and progress of one stream.
#[derive(Debug, Clone)]
pub struct StreamCtl {
    cancel: CancellationToken,
    pub(crate) watch: Arc<Watch>,
    reason: Arc<Mutex<Option<String>>>,
}

impl StreamCtl {
    pub(crate) fn new() -> Self {
        StreamCtl {
            cancel: CancellationToken::new(),
            watch: Arc::new(Watch::new()),
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Cancels the stream: its input and output fail from now on.
    pub fn cancel(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.cancel.cancel();
    }

    /// Whether the stream was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The error a cancelled stream's sides report.
    pub(crate) fn cancelled_error(&self) -> PipelineError {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the stream was cancelled".into());
        PipelineError::Cancelled(reason)
    }

    /// `reader`, failing once the stream is cancelled; its reads count as input progress.
    pub(crate) fn input<R: AsyncRead + Send + Unpin + 'static>(&self, reader: R) -> BoxRead {
        Box::pin(CancelRead {
            inner: reader,
            cancelled: Box::pin(self.cancel.clone().cancelled_owned()),
            watch: Some(self.watch.clone()),
        })
    }

    /// `reader`, failing once the stream is cancelled.
    pub(crate) fn output<R: AsyncRead + Send + Unpin + 'static>(&self, reader: R) -> BoxRead {
        Box::pin(CancelRead {
            inner: reader,
            cancelled: Box::pin(self.cancel.clone().cancelled_owned()),
            watch: None,
        })
    }
}

/// An `AsyncRead` that fails once its stream is cancelled.
struct CancelRead<R> {
    inner: R,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    watch: Option<Arc<Watch>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CancelRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::other("the stream was cancelled")));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(w)) = (&r, &self.watch) {
            if buf.filled().len() > before {
                w.touch();
            }
        }
        r
    }
}

/// A codec running on its thread: read `reader` (through [`Running::finish`]).
pub struct Running<S> {
    /// The codec's output. Ends with EOF only if everything succeeded.
    pub reader: BoxRead,
    /// The codec thread.
    pub stats: JoinHandle<Result<S, PipelineError>>,
    /// Its cancellation and progress.
    pub ctl: StreamCtl,
    /// No progress for this long cancels the stream.
    pub stall_timeout: Duration,
}

/// The names of a stream's two ends, for the stall message.
#[derive(Debug, Clone, Copy)]
pub struct Ends<'a> {
    /// Where bytes come from, e.g. "the source `pg-main`".
    pub input: &'a str,
    /// Where bytes go, e.g. "the upload to s3://backups/gsdr".
    pub output: &'a str,
}

impl<'a> Ends<'a> {
    /// Bytes flow from `input` to `output`.
    pub fn new(input: &'a str, output: &'a str) -> Self {
        Ends { input, output }
    }
}

/// Why a stream failed: the codec (input included) or the sink.
#[derive(Debug)]
pub enum StreamError<E> {
    /// The codec, its input, a stall or a cancellation.
    Pipeline(PipelineError),
    /// The sink's own failure.
    Sink(E),
}

impl<E: std::fmt::Display> std::fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Pipeline(e) => e.fmt(f),
            StreamError::Sink(e) => e.fmt(f),
        }
    }
}

impl<S: Send + 'static> Running<S> {
    /// Overrides the stall timeout.
    pub fn stall_after(mut self, d: Duration) -> Self {
        self.stall_timeout = d;
        self
    }

    /// [`finish`](Self::finish) into memory: for the small streams (a log
    /// slice or segment) whose whole output is bounded by their settings.
    pub async fn finish_to_vec(
        self,
        ends: Ends<'_>,
    ) -> Result<(S, Vec<u8>), StreamError<std::io::Error>> {
        self.finish(ends, None, |mut reader| async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut out).await?;
            Ok(out)
        })
        .await
    }

    /// Runs `sink` over the output to the end and returns both results, or
    /// the first cause of failure (see the module doc). `cancel` (a job's
    /// deadline or shutdown) cancels the stream too.
    pub async fn finish<T, E, Fut>(
        self,
        ends: Ends<'_>,
        cancel: Option<&CancellationToken>,
        sink: impl FnOnce(BoxRead) -> Fut,
    ) -> Result<(S, T), StreamError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let Running {
            reader,
            stats,
            ctl,
            stall_timeout,
        } = self;
        let outer = cancel.cloned().unwrap_or_default();
        let sink = sink(ctl.output(reader));
        tokio::pin!(sink);
        let mut stats = stats;
        let mut sink_res: Option<Result<T, E>> = None;
        let mut codec_res: Option<Result<S, PipelineError>> = None;
        // Set once the stream was cancelled here (stall, outer cancel): the first cause.
        let mut own_cause: Option<PipelineError> = None;
        let mut wind_down: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while sink_res.is_none() || codec_res.is_none() {
            if let Some(at) = wind_down {
                if tokio::time::Instant::now() >= at {
                    break;
                }
            }
            tokio::select! {
                r = &mut sink, if sink_res.is_none() => {
                    if r.is_err() {
                        ctl.cancel("the sink failed");
                        wind_down.get_or_insert_with(|| tokio::time::Instant::now() + WIND_DOWN);
                    }
                    sink_res = Some(r);
                }
                r = &mut stats, if codec_res.is_none() => {
                    let r = r.unwrap_or_else(|e| Err(PipelineError::Panicked(panic_text(e))));
                    if r.is_err() {
                        // The codec told the sink (its stream ends in an error); the
                        // token wakes a sink that is not reading right now.
                        ctl.cancel("the pipeline failed");
                        wind_down.get_or_insert_with(|| tokio::time::Instant::now() + WIND_DOWN);
                    }
                    codec_res = Some(r);
                }
                _ = outer.cancelled(), if own_cause.is_none() => {
                    let e = PipelineError::Cancelled("the job was cancelled (deadline or shutdown)".into());
                    ctl.cancel(&e.to_string());
                    own_cause = Some(e);
                    wind_down.get_or_insert_with(|| tokio::time::Instant::now() + WIND_DOWN);
                }
                _ = tick.tick(), if own_cause.is_none() => {
                    if ctl.watch.idle() >= stall_timeout {
                        let side = match ctl.watch.waiting() {
                            Waiting::Input => ends.input,
                            Waiting::Output => ends.output,
                            Waiting::Codec => "the compression/encryption thread",
                        };
                        let e = PipelineError::Stalled {
                            side: side.to_string(),
                            secs: stall_timeout.as_secs(),
                        };
                        tracing::warn!(event = "stream_stalled", side, secs = stall_timeout.as_secs());
                        ctl.cancel(&e.to_string());
                        own_cause = Some(e);
                        wind_down.get_or_insert_with(|| tokio::time::Instant::now() + WIND_DOWN);
                    }
                }
                _ = async { tokio::time::sleep_until(wind_down.expect("checked")).await }, if wind_down.is_some() => {}
            }
        }
        if let Some(e) = own_cause {
            return Err(StreamError::Pipeline(e));
        }
        match (codec_res, sink_res) {
            (Some(Ok(s)), Some(Ok(t))) => Ok((s, t)),
            // The codec's own failure is the cause; `Closed` only says the sink left.
            (Some(Err(e)), _)
                if !matches!(e, PipelineError::Closed(_) | PipelineError::Cancelled(_)) =>
            {
                Err(StreamError::Pipeline(e))
            }
            (_, Some(Err(e))) => Err(StreamError::Sink(e)),
            (Some(Err(e)), _) => Err(StreamError::Pipeline(e)),
            (None, _) => Err(StreamError::Pipeline(PipelineError::Stalled {
                side: "the compression/encryption thread".into(),
                secs: WIND_DOWN.as_secs(),
            })),
            (Some(Ok(_)), None) => Err(StreamError::Pipeline(PipelineError::Stalled {
                side: ends.output.to_string(),
                secs: WIND_DOWN.as_secs(),
            })),
        }
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}
