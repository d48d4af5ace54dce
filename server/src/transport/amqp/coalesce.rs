//! Write coalescing under fe2o3-amqp: its engine writes and flushes every frame on its own (an
//! open, a begin, two attaches and two flows answering one burst from the client), and each
//! flush through TLS is a record, a syscall and a TCP segment. Here writes are kept and go out
//! together when the connection would wait for the client: when a read finds nothing and the
//! engine had nothing more to write since it last found nothing, on shutdown, or once 16 KiB
//! are pending. The engine's answer to one burst comes from several tasks (connection, session,
//! links), so a first empty read yields once to let them write before the output leaves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pending output beyond this is written at once.
const HIGH_WATER: usize = 16 * 1024;

pub struct Coalesced<S> {
    inner: S,
    pending: Vec<u8>,
    /// Something was written since a read last found nothing.
    written: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced {
            inner,
            pending: Vec::new(),
            written: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything pending, then flushes the stream below.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            super::consume(&mut self.pending, n);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending() && !this.pending.is_empty() {
            if std::mem::take(&mut this.written) {
                // Other tasks of the connection may still be answering: come back after them.
                cx.waker().wake_by_ref();
            } else if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                // About to wait for the client: what it should hear goes now. A write that
                // cannot finish wakes this same reader when the socket drains.
                return Poll::Ready(Err(e));
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.pending.extend_from_slice(buf);
        this.written = true;
        Poll::Ready(Ok(buf.len()))
    }

    /// Kept for the next read that would wait (see the module comment).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_leave_together_when_the_reader_would_wait() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut server = Coalesced::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        for frame in [&b"open"[..], b"begin", b"attach"] {
            server.write_all(frame).await.unwrap();
            server.flush().await.unwrap();
        }
        // Nothing has left yet: the client sees no byte.
        let mut first = [0u8; 64];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            client_read.read(&mut first),
        )
        .await;
        assert!(early.is_err(), "output left before the server waited");
        // The server waits for the client: everything goes out, in one piece and in order.
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.map(|_| server)
        });
        let n = client_read.read(&mut first).await.unwrap();
        assert_eq!(&first[..n], b"openbeginattach");
        client_write.write_all(b"x").await.unwrap();
        let mut server = reader.await.unwrap().unwrap();
        // Shutdown writes what is pending first.
        server.write_all(b"close").await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_read.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"close");
    }

    /// What another task writes after a first empty read still joins the output: it leaves
    /// only when a read finds nothing twice with no write between.
    #[test]
    fn a_first_empty_read_yields_to_the_other_tasks_writes() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut client, mut server) =
            (Box::pin(client), Pin::new(Box::new(Coalesced::new(server))));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut read = |server: &mut Pin<Box<Coalesced<_>>>| {
            let mut buf = ReadBuf::new(&mut byte);
            server.as_mut().poll_read(&mut cx, &mut buf).is_pending()
        };
        let mut received = || {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut chunk = [0u8; 64];
            let mut buf = ReadBuf::new(&mut chunk);
            match client.as_mut().poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) => buf.filled().to_vec(),
                _ => Vec::new(),
            }
        };
        let write = |server: &mut Pin<Box<Coalesced<_>>>, frame: &[u8]| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(server.as_mut().poll_write(&mut cx, frame).is_ready());
        };
        write(&mut server, b"open");
        assert!(read(&mut server));
        assert_eq!(received(), b"", "left at the first empty read");
        write(&mut server, b"begin");
        assert!(read(&mut server));
        assert_eq!(received(), b"", "left although a write came between");
        assert!(read(&mut server));
        assert_eq!(received(), b"openbegin");
    }
}
