//! Bounds at the edge: how many connections a listener holds open at once and how many TLS
//! handshakes run at once. At the bound a listener stops accepting (the kernel's backlog
//! holds or refuses the rest) instead of taking on memory and tasks without end; a
//! connection's place is given back when it closes.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// Connections one listener holds open at once: far above what the executor's callers open
/// (a workflow service keeps a few HTTP/2 connections; 10,000 watchers share channels), far
/// below the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 8192;
/// TLS handshakes in progress at once on one listener: each costs a task and CPU for the
/// key exchange; a flood of them must not starve the connections already open.
pub const MAX_HANDSHAKES: usize = 128;

/// A connection that holds its listener's place until it is dropped.
pub struct Counted<T> {
    inner: T,
    _place: OwnedSemaphorePermit,
}

impl<T> Counted<T> {
    pub fn new(inner: T, place: OwnedSemaphorePermit) -> Self {
        Counted {
            inner,
            _place: place,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// `incoming`, holding at most `max` connections open at once: the next one is accepted only
/// once a place is free.
pub fn limit_incoming<S, T>(incoming: S, max: usize) -> impl Stream<Item = io::Result<Counted<T>>>
where
    S: Stream<Item = io::Result<T>> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(max));
    futures::stream::unfold(
        (Box::pin(incoming), places),
        |(mut incoming, places)| async move {
            let place = places.clone().acquire_owned().await.ok()?;
            let next = incoming.next().await?;
            Some((next.map(|io| Counted::new(io, place)), (incoming, places)))
        },
    )
}

/// An axum listener holding at most `max` connections open at once.
pub struct LimitedListener<L> {
    inner: L,
    places: Arc<Semaphore>,
}

impl<L> LimitedListener<L> {
    pub fn new(inner: L, max: usize) -> Self {
        LimitedListener {
            inner,
            places: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<L> axum::serve::Listener for LimitedListener<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let place = match self.places.clone().acquire_owned().await {
            Ok(place) => place,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        };
        let (io, addr) = self.inner.accept().await;
        (Counted::new(io, place), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_next_connection_waits_until_a_place_is_free() {
        let incoming = futures::stream::iter((0..3).map(io::Result::Ok));
        let mut limited = Box::pin(limit_incoming(incoming, 2));
        let first = limited.next().await.unwrap().unwrap();
        let _second = limited.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), limited.next());
        assert!(third.await.is_err(), "a third connection waits");
        drop(first);
        let third = limited.next().await.unwrap().unwrap();
        assert_eq!(third.inner, 2);
    }
}
