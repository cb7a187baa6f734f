//! Progress reporting: the library reports, the binary renders
//! (a bar on a terminal, tracing events otherwise).

/// Receives progress of a long operation.
pub trait Progress: Send + Sync {
    /// A phase starts (`backup readings`, `restore …`); `total` bytes if known.
    fn start(&self, what: &str, total: Option<u64>);
    /// `bytes` more were processed.
    fn advance(&self, bytes: u64);
    /// The phase ended.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A reader that shows every chunk it reads to `seen`: progress, byte
/// counters, stream watchers.
pub struct Inspect<R, F> {
    inner: R,
    seen: F,
}

impl<R, F: FnMut(&[u8])> Inspect<R, F> {
    /// Wraps `inner`; `seen` gets each chunk read, in order.
    pub fn new(inner: R, seen: F) -> Self {
        Inspect { inner, seen }
    }
}

impl<R: tokio::io::AsyncRead + Unpin, F: FnMut(&[u8]) + Unpin> tokio::io::AsyncRead
    for Inspect<R, F>
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let this = &mut *self;
            (this.seen)(&buf.filled()[before..]);
        }
        r
    }
}

/// `inner`, reporting the bytes read to `progress`.
pub fn counting<'a, R>(
    inner: R,
    progress: &'a dyn Progress,
) -> Inspect<R, impl FnMut(&[u8]) + Unpin + 'a> {
    Inspect::new(inner, move |b: &[u8]| {
        if !b.is_empty() {
            progress.advance(b.len() as u64)
        }
    })
}
