//! The frame guard: a stream adapter between the TLS stream and fe2o3-amqp that hands on only
//! whole frames Onramp has checked. fe2o3's decoder (serde_amqp's reader) trusts declared
//! lengths and counts, so a client that got past the login (or any client with a certificate,
//! which is checked per request) could make it allocate gigabytes with one small frame. Here
//! every frame's size is bounded, its performative and payload are walked with the
//! bounds-checked `encoding` cursor, and a message spanning several transfers is checked whole
//! once its last transfer arrives, before fe2o3 decodes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::encoding::{Cursor, Malformed};

/// The descriptor code of the `transfer` performative; `open` to `close` are 0x10..=0x18.
const TRANSFER: u64 = 0x14;
const PROTOCOL_HEADER: usize = 8;
/// Bytes read from the TLS stream at a time.
const CHUNK: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes (allowed: 8 to {1})")]
    Size(usize, usize),
    #[error("not an AMQP frame (data offset {0}, type {1})")]
    Header(u8, u8),
    #[error("performative code {0:#x} is not one of AMQP's")]
    Performative(u64),
    #[error("a message of more than {0} bytes")]
    MessageSize(usize),
    #[error(transparent)]
    Encoding(#[from] Malformed),
}

/// The largest frame and the largest message (all its transfers) a client may send.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_frame: usize,
    pub max_message: usize,
}

/// The transfers of messages that are not complete yet, by link handle.
#[derive(Debug, Default)]
pub struct Deliveries {
    partial: Vec<(u32, Vec<u8>)>,
}

impl Deliveries {
    fn buffered(&self) -> usize {
        self.partial.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

/// Checks one whole frame (from its 4-byte size on). A transfer's payload is checked when its
/// message is complete: at once for a single transfer, else with the last one.
pub fn check_frame(
    frame: &[u8],
    limits: FrameLimits,
    deliveries: &mut Deliveries,
) -> Result<(), FrameError> {
    let size = frame.len();
    if !(8..=limits.max_frame).contains(&size) {
        return Err(FrameError::Size(size, limits.max_frame));
    }
    let (doff, kind) = (frame[4], frame[5]);
    let body_start = usize::from(doff) * 4;
    if doff < 2 || kind != 0 || body_start > size {
        return Err(FrameError::Header(doff, kind));
    }
    let mut body = Cursor(&frame[body_start..]);
    if body.is_empty() {
        return Ok(()); // a heartbeat
    }
    let performative = body;
    body.skip_value(0)?;
    let mut fields = Cursor(performative.0);
    let code = fields.descriptor()?;
    if !(0x10..=0x18).contains(&code) {
        return Err(FrameError::Performative(code));
    }
    if code != TRANSFER {
        return match body.is_empty() {
            true => Ok(()),
            false => Err(Malformed("bytes after a performative other than transfer").into()),
        };
    }
    // transfer: handle, delivery-id, delivery-tag, message-format, settled, more, rcv-settle-mode,
    // state, resume, aborted.
    let mut fields = fields.list()?;
    let handle = fields
        .uint()?
        .ok_or(Malformed("a transfer without a handle"))?;
    for _ in 0..4 {
        fields.skip()?;
    }
    let more = fields.boolean()?.unwrap_or(false);
    for _ in 0..3 {
        fields.skip()?;
    }
    let aborted = fields.boolean()?.unwrap_or(false);
    let position = deliveries.partial.iter().position(|(h, _)| *h == handle);
    if aborted {
        if let Some(i) = position {
            deliveries.partial.swap_remove(i);
        }
        return Ok(());
    }
    let payload = body.0;
    if !more && position.is_none() {
        return check_message(payload);
    }
    if deliveries.buffered() + payload.len() > limits.max_message {
        return Err(FrameError::MessageSize(limits.max_message));
    }
    let i = position.unwrap_or_else(|| {
        deliveries.partial.push((handle, Vec::new()));
        deliveries.partial.len() - 1
    });
    deliveries.partial[i].1.extend_from_slice(payload);
    if more {
        return Ok(());
    }
    let (_, message) = deliveries.partial.swap_remove(i);
    check_message(&message)
}

/// A message is a sequence of sections, each an encoded value.
fn check_message(bytes: &[u8]) -> Result<(), FrameError> {
    let mut cursor = Cursor(bytes);
    while !cursor.is_empty() {
        cursor.skip_value(0)?;
    }
    Ok(())
}

/// The stream fe2o3 reads: the protocol header passes, then only checked frames do. Writes go
/// straight through.
pub struct FrameGuard<S> {
    inner: S,
    limits: FrameLimits,
    /// Bytes read and not handed on yet; the first `checked` of them may go.
    buffer: Vec<u8>,
    checked: usize,
    header_left: usize,
    deliveries: Deliveries,
    failed: Option<FrameError>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, limits: FrameLimits) -> FrameGuard<S> {
        FrameGuard {
            inner,
            limits,
            buffer: Vec::new(),
            checked: 0,
            header_left: PROTOCOL_HEADER,
            deliveries: Deliveries::default(),
            failed: None,
        }
    }

    /// Marks every whole frame at hand as checked, or fails.
    fn advance(&mut self) -> Result<(), FrameError> {
        loop {
            let rest = &self.buffer[self.checked..];
            if self.header_left > 0 {
                let n = self.header_left.min(rest.len());
                if n == 0 {
                    return Ok(());
                }
                self.header_left -= n;
                self.checked += n;
                continue;
            }
            let Some(size) = rest.get(..4) else {
                return Ok(());
            };
            let size = u32::from_be_bytes(size.try_into().expect("4 bytes")) as usize;
            if !(8..=self.limits.max_frame).contains(&size) {
                return Err(FrameError::Size(size, self.limits.max_frame));
            }
            let Some(frame) = rest.get(..size) else {
                return Ok(());
            };
            check_frame(frame, self.limits, &mut self.deliveries)?;
            self.checked += size;
        }
    }
}

impl<S> std::fmt::Debug for FrameGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameGuard")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

fn invalid(e: &FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.checked > 0 {
                let n = this.checked.min(buf.remaining());
                buf.put_slice(&this.buffer[..n]);
                super::consume(&mut this.buffer, n);
                this.checked -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(invalid(e)));
            }
            let mut chunk = [0u8; CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // the end; a partial frame is dropped with it
            }
            this.buffer.extend_from_slice(read.filled());
            if let Err(e) = this.advance() {
                tracing::debug!(error = %e, "AMQP frame refused");
                // Frames checked before the bad one still go; the error comes after them.
                this.failed = Some(e);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: FrameLimits = FrameLimits {
        max_frame: 1024,
        max_message: 2048,
    };

    fn frame(body: &[u8]) -> Vec<u8> {
        let size = (body.len() + 8) as u32;
        [&size.to_be_bytes()[..], &[2, 0, 0, 0], body].concat()
    }

    /// A transfer on `handle` (its `more` flag as given) followed by `payload`.
    fn transfer(handle: u8, more: bool, payload: &[u8]) -> Vec<u8> {
        let more = if more { 0x41 } else { 0x42 };
        // handle, delivery-id, delivery-tag, message-format, settled, more
        let fields = [0x52, handle, 0x43, 0xa0, 0x01, 0x07, 0x43, 0x42, more];
        let list = [&[0xc0, fields.len() as u8 + 1, 6][..], &fields].concat();
        frame(&[&[0x00, 0x53, 0x14][..], &list, payload].concat())
    }

    /// A data section of `n` bytes.
    fn data(n: usize) -> Vec<u8> {
        [
            &[0x00, 0x53, 0x75, 0xb0][..],
            &(n as u32).to_be_bytes(),
            &vec![7; n],
        ]
        .concat()
    }

    fn check(frames: &[Vec<u8>]) -> Result<(), FrameError> {
        let mut deliveries = Deliveries::default();
        frames
            .iter()
            .try_for_each(|f| check_frame(f, LIMITS, &mut deliveries))
    }

    #[test]
    fn performatives_and_messages_pass() {
        let open = frame(b"\x00\x53\x10\xc0\x03\x01\xa1\x00"); // open with an empty container-id
        let message = data(100);
        assert_eq!(
            check(&[frame(b""), open, transfer(0, false, &message)]),
            Ok(())
        );
        // One message in three transfers, interleaved with another link's.
        let (a, b) = message.split_at(40);
        let (b, c) = b.split_at(30);
        assert_eq!(
            check(&[
                transfer(1, true, a),
                transfer(2, false, &data(3)),
                transfer(1, true, b),
                transfer(1, false, c),
            ]),
            Ok(())
        );
    }

    #[test]
    fn lies_and_oversizes_are_refused() {
        // A data section declaring 4 GB, in one transfer and spread over two.
        let lie = b"\x00\x53\x75\xb0\xff\xff\xff\xff\x01";
        assert!(matches!(
            check(&[transfer(0, false, lie)]),
            Err(FrameError::Encoding(_))
        ));
        let (a, b) = lie.split_at(5);
        assert!(check(&[transfer(0, true, a), transfer(0, false, b)]).is_err());
        // An open whose container-id declares more bytes than the frame has.
        let open = frame(b"\x00\x53\x10\xc0\x06\x01\xb1\xff\xff\xff\xff");
        assert!(check(&[open]).is_err());
        assert_eq!(
            check(&[frame(b"\x00\x53\x30\x45")]),
            Err(FrameError::Performative(0x30))
        );
        assert_eq!(
            check(&[vec![0, 0, 0, 8, 2, 1, 0, 0]]),
            Err(FrameError::Header(2, 1))
        );
        assert_eq!(
            check(&[frame(&[0x40; 1100])]),
            Err(FrameError::Size(1108, 1024))
        );
        // A message over the limit, in transfers each below the frame limit.
        let parts: Vec<_> = (0..3).map(|_| transfer(0, true, &[0x40; 900])).collect();
        assert_eq!(check(&parts), Err(FrameError::MessageSize(2048)));
        // An aborted delivery leaves nothing behind.
        let mut deliveries = Deliveries::default();
        check_frame(&transfer(0, true, &[0x40; 900]), LIMITS, &mut deliveries).unwrap();
        let abort = frame(b"\x00\x53\x14\xc0\x0b\x0a\x43\x40\x40\x40\x40\x40\x40\x40\x40\x41");
        check_frame(&abort, LIMITS, &mut deliveries).unwrap();
        assert_eq!(deliveries.buffered(), 0);
    }

    #[tokio::test]
    async fn the_stream_passes_checked_frames_and_then_fails() {
        let good = transfer(0, false, &data(10));
        let bad = frame(b"\x00\x53\x10\xc0\x06\x01\xb1\xff\xff\xff\xff");
        let input = [&b"AMQP\x00\x01\x00\x00"[..], &good, &bad].concat();
        // The client's bytes arrive a few at a time, as TLS records may cut them.
        let (mut client, server) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(5) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
            }
            client
        });
        let mut guard = FrameGuard::new(server, LIMITS);
        let mut passed = Vec::new();
        let error = loop {
            let mut buf = [0u8; 16];
            match guard.read(&mut buf).await {
                Ok(0) => panic!("the stream ended without refusing the bad frame"),
                Ok(n) => passed.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(passed, [&b"AMQP\x00\x01\x00\x00"[..], &good].concat());
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        drop(writer.await);
    }
}
