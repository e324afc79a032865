//! A cap on an HTTP listener's connections (the profile downloads, which anyone can reach,
//! and the admin API): a flood of connections that never finish a request (slowloris) must
//! not hold the daemon's file descriptors — the listeners, the store and the RADIUS side
//! share them. At most a set number are open at once (the others are closed as soon as they
//! are accepted), and none lives longer than a set lifetime, so a slot always comes free
//! again. (The header-read timeout that cuts off a half-sent request is set on the HTTP
//! builder, in `server.rs`.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// An acceptor (wrapped by TLS, when configured) that holds a permit for each connection.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    lifetime: Duration,
    /// Set while connections are being refused: one warning per flood, not one per connection.
    full: Arc<AtomicBool>,
    /// The listener, for that warning.
    listener: &'static str,
}

impl ConnectionCap {
    /// `max` connections at once, each open for `lifetime` at most.
    pub fn new(max: usize, lifetime: Duration, listener: &'static str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            lifetime,
            full: Arc::default(),
            listener,
        }
    }
}

impl<I, S> Accept<I, S> for ConnectionCap
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = Capped<I>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Capped<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    listener = self.listener,
                    "listener full: closing new connections"
                );
            }
            // Dropping the stream closes it at once.
            return std::future::ready(Err(io::Error::other("connection cap reached")));
        };
        self.full.store(false, Ordering::Relaxed);
        std::future::ready(Ok((
            Capped {
                inner: stream,
                _permit: permit,
                deadline: Box::pin(tokio::time::sleep(self.lifetime)),
            },
            service,
        )))
    }
}

/// A connection holding its permit until it is dropped, and failing once its lifetime is up
/// (hyper always has a read pending, so it notices and closes the connection).
pub struct Capped<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
}

impl<I> Capped<I> {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn lifetime_over() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection lifetime over")
}

impl<I: AsyncRead + Unpin> AsyncRead for Capped<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Capped<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;

    fn accept(cap: &ConnectionCap) -> io::Result<Capped<DuplexStream>> {
        let (stream, _peer) = tokio::io::duplex(64);
        let ready = Accept::<_, ()>::accept(cap, stream, ());
        ready.into_inner().map(|(s, ())| s)
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_none_outlives_its_lifetime() {
        let cap = ConnectionCap::new(2, Duration::from_millis(50), "test");
        let mut first = accept(&cap).unwrap();
        let second = accept(&cap).unwrap();
        assert!(accept(&cap).is_err());
        drop(second);
        let _third = accept(&cap).unwrap();

        tokio::time::sleep(Duration::from_millis(60)).await;
        let err = first.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
