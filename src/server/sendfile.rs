//! Blob bodies handed to the kernel: on a plain TCP connection the bytes of
//! a file go from the page cache to the socket with `sendfile(2)`, never
//! through our memory.
//!
//! hyper writes a response's body frames itself, so the seam is between
//! hyper and the socket. A body that wants the kernel to send a piece of a
//! file yields a *placeholder* frame: a slice of [`PLACEHOLDER`], a static
//! region nothing else points into, and queues the file range on the
//! connection's [`FileQueue`]. hyper queues frames as they are (it writes
//! with `writev` and never copies a body buffer when the socket takes
//! vectored writes), so the socket wrapper, [`SendfileIo`], sees the
//! placeholder's address among the slices it is asked to write and sends
//! the queued range with `sendfile` instead. Everything else about the
//! connection is hyper's, as on any other: keep-alive, `Content-Length`,
//! timeouts, the access log and metrics (which read the head), and
//! back-pressure (a client that stops reading leaves the socket unwritable
//! and the connection task asleep, holding no buffer at all).
//!
//! A placeholder never reaches a client as bytes: every one is matched
//! against the queue by address and length, and a mismatch fails the
//! connection. Only connections served through [`SendfileIo`] get a queue,
//! so TLS keeps the ordinary path.
//!
//! A frame whose pages are not in the page cache is read into memory on the
//! blocking pool instead (`FileBody`'s read path, asking
//! `storage::reader::BlobReader::cached`), because `sendfile` would wait for
//! the disk on a runtime thread.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The largest piece of a file one placeholder frame stands for.
pub const FRAME: usize = 8 << 20;

/// Addresses only: its bytes are zero and are never sent. It lives in the
/// zero-initialised data segment, so it costs no memory until read, and
/// nothing reads it.
static PLACEHOLDER: [u8; FRAME] = [0; FRAME];

/// A file range waiting for the socket.
struct Pending {
    file: Arc<dyn AsFd + Send + Sync>,
    offset: u64,
    len: usize,
}

/// The ranges a connection's current response has queued, in order.
#[derive(Clone, Default)]
pub struct FileQueue(Arc<Mutex<VecDeque<Pending>>>);

/// Connections served through [`SendfileIo`] now.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

impl FileQueue {
    /// Whether the kernel should send cached pieces of files now: only
    /// while other connections are open beside this one.
    ///
    /// A client alone goes faster with its blob copied through the server
    /// when it shares the machine (loopback: a local CI runner, a kind
    /// cluster's registry): the server's core then reads the page cache
    /// while the client's core copies out of a socket buffer still in the
    /// CPU's cache, where with `sendfile` the client alone reads the page
    /// cache. With one client here, copying was 1.28x faster; from two
    /// clients on, the server's CPU is what limits, and `sendfile` spends a
    /// sixth of it (BENCHMARKS.md).
    pub fn by_kernel(&self) -> bool {
        CONNECTIONS.load(Ordering::Relaxed) > 1
    }

    /// A frame standing for `len` bytes of `file` from `offset` (at most
    /// [`FRAME`]), to be sent by the connection's socket.
    pub fn frame(&self, file: Arc<dyn AsFd + Send + Sync>, offset: u64, len: usize) -> Bytes {
        let len = len.min(FRAME);
        self.lock().push_back(Pending { file, offset, len });
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        // A panic elsewhere cannot leave the queue half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where in [`PLACEHOLDER`] a slice starts, if it is one.
fn placeholder_at(buf: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (at < FRAME && !buf.is_empty()).then_some(at)
}

fn broken(what: &str) -> io::Error {
    io::Error::other(format!("placeholder frame without its file range: {what}"))
}

/// A plain TCP connection whose writes send queued file ranges with
/// `sendfile`.
pub struct SendfileIo {
    inner: TokioIo<TcpStream>,
    queue: FileQueue,
    /// Bytes sent with `sendfile`, for the metrics.
    sent: Arc<AtomicU64>,
}

impl SendfileIo {
    pub fn new(stream: TcpStream, sent: Arc<AtomicU64>) -> (SendfileIo, FileQueue) {
        let queue = FileQueue::default();
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let io = SendfileIo {
            inner: TokioIo::new(stream),
            queue: queue.clone(),
            sent,
        };
        (io, queue)
    }

    /// Send the queued range that `buf` (a placeholder slice) stands for,
    /// from where `buf` starts in it.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        at: usize,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.queue.lock();
        let Some(front) = queue.front() else {
            return Poll::Ready(Err(broken("nothing queued")));
        };
        // hyper hands back the frame as it was, less what it has written.
        if at + buf.len() != front.len {
            return Poll::Ready(Err(broken("length differs")));
        }
        let stream = self.inner.inner();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            let mut offset = front.offset + at as u64;
            let sent = stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(stream, front.file.as_fd(), Some(&mut offset), buf.len())
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    // The file is shorter than the length announced: fail
                    // the connection rather than end a short blob as whole.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob ended early",
                    )));
                }
                Ok(n) => {
                    self.sent.fetch_add(n as u64, Ordering::Relaxed);
                    if at + n == front.len {
                        queue.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for SendfileIo {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::rt::Read for SendfileIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SendfileIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match placeholder_at(buf) {
            Some(at) => self.poll_sendfile(cx, at, buf),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Ordinary bytes before the first placeholder go out as they are;
        // hyper comes back for the rest.
        let first = bufs.iter().position(|b| placeholder_at(b).is_some());
        match first {
            Some(0) => {
                let at = placeholder_at(&bufs[0]).expect("found above");
                self.poll_sendfile(cx, at, &bufs[0])
            }
            Some(i) => Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..i]),
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues body frames uncopied only for vectored writers.
        true
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
    use super::*;

    #[test]
    fn only_placeholder_slices_are_recognised() {
        let q = FileQueue::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let frame = q.frame(file.clone(), 0, 100);
        assert_eq!(placeholder_at(&frame), Some(0));
        assert_eq!(placeholder_at(&frame[10..]), Some(10));
        assert_eq!(placeholder_at(&frame[..0]), None);
        let other = vec![0u8; 100];
        assert_eq!(placeholder_at(&other), None);
        let past = q.frame(file, 0, FRAME + 10);
        assert_eq!(past.len(), FRAME);
    }
}
