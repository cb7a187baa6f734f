//! A reader that fails when its inner reader delivers nothing for a while:
//! a server that stops answering mid-download must not hang a restore. Its
//! errors name the object, and a failed read keeps its causes (the SDK's
//! own message is only "streaming error").

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Fails a read that waits longer than `timeout` for its next byte.
pub struct IdleTimeout<R> {
    inner: R,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    what: String,
}

impl<R> IdleTimeout<R> {
    /// Wraps `inner`; `what` names it in the error ("`key` in s3://bucket").
    pub fn new(inner: R, timeout: Duration, what: String) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            what,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.sleep.as_mut().reset(Instant::now() + this.timeout);
                Poll::Ready(r.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("reading {} failed: {}", this.what, causes(&e)),
                    )
                }))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} sent no data for {} s (read_timeout); the server stopped answering",
                        this.what,
                        this.timeout.as_secs()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// `e` and each of its sources, joined with `: `.
fn causes(e: &io::Error) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_reader_times_out_and_a_slow_one_does_not() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(rx, Duration::from_secs(5), "`k` in test".into());
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.write_all(b"x").await.unwrap();
            }
            // Then silence, with the writer kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        }
        let err = r.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.to_string().contains("`k` in test sent no data for 5 s"),
            "{err}"
        );
        writer.abort();
    }

    #[tokio::test]
    async fn a_failed_read_names_the_object_and_keeps_its_causes() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection reset by peer")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("streaming error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::other(Outer(Inner))))
            }
        }
        let mut r = IdleTimeout::new(Failing, Duration::from_secs(5), "`k` in s3://b".into());
        let err = r.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading `k` in s3://b failed: streaming error: connection reset by peer"
        );
    }
}
