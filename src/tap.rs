//! A TCP stream that tells a [`Tap`] when bytes move, for the two places that need to know:
//! a client's connection, whose first bytes after an idle spell start a request head's clock
//! ([`crate::server`]), and an upstream's, whose bytes say a request got some of its answer
//! ([`crate::proxy::clients`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Told about a [`Tapped`] stream's traffic, on the task that reads or writes it.
pub trait Tap {
    /// Bytes were read.
    fn read(&self);
    /// Bytes were written.
    fn wrote(&self) {}
}

/// `stream`, reporting to `tap`.
pub struct Tapped<T> {
    stream: TcpStream,
    tap: T,
}

impl<T> Tapped<T> {
    pub fn new(stream: TcpStream, tap: T) -> Tapped<T> {
        Tapped { stream, tap }
    }

    pub fn tap(&self) -> &T {
        &self.tap
    }
}

impl<T: Tap + Unpin> AsyncRead for Tapped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.tap.read();
        }
        read
    }
}

impl<T: Tap + Unpin> AsyncWrite for Tapped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.tap.wrote();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.tap.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
