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

/// Wraps a reader, reporting bytes read.
pub struct Counting<'a, R> {
    /// The reader counted.
    pub inner: R,
    /// Where the bytes read are reported.
    pub progress: &'a dyn Progress,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.progress.advance(n as u64);
        }
        r
    }
}
