//! `/v2/<name>/blobs/<digest>`: GET and HEAD (with single `Range`
//! requests), DELETE of the repository's link.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use std::sync::atomic::Ordering;

use futures_util::TryStreamExt;

use super::{header_str, pull_through, respond};
use crate::notify::{Action, Occurrence};
use crate::oci::{Digest, ErrorCode, RepoName};
use crate::proxy::Cache;
use crate::server::announce::record;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::sendfile::{self, FileQueue};
use crate::server::App;
use crate::storage::reader::{self, BlobReader};
use crate::storage::BlobContent;

/// A satisfiable byte range, inclusive.
#[derive(Debug, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    end: u64,
}

/// Parse a `Range` header against a blob of `size` bytes. `Ok(None)` means
/// serve the whole blob (no header, or a form we may ignore such as several
/// ranges); `Err` means the range cannot be satisfied (416).
fn parse_range(value: Option<&str>, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(value) = value else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last `b` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            let Ok(end) = b.parse::<u64>() else {
                return Ok(None);
            };
            if end < start {
                return Ok(None);
            }
            end.min(size.saturating_sub(1))
        };
        if start >= size {
            return Err(());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

/// The headers of a blob's answer.
fn blob_headers(digest: &Digest, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("docker-content-digest", digest.to_string()),
        ("etag", format!("\"{digest}\"")),
        ("accept-ranges", "bytes".to_string()),
        ("cache-control", "max-age=31536000".to_string()),
        ("content-type", "application/octet-stream".to_string()),
        ("content-length", size.to_string()),
    ]
}

/// The head of a GET's answer for a blob of `size` bytes: the whole, or
/// the `Range` asked for (206); with where its body starts and its length.
fn answer_head(
    req: &Request<Incoming>,
    digest: &Digest,
    size: u64,
) -> Result<(Response<Body>, u64, u64), ApiError> {
    let range =
        parse_range(header_str(req.headers(), http::header::RANGE), size).map_err(|()| {
            ApiError::new(
                ErrorCode::RangeInvalid,
                format!("range not satisfiable: the blob has {size} bytes"),
            )
            .with_header(http::header::CONTENT_RANGE, format!("bytes */{size}"))
        })?;
    let (status, start, len, mut headers) = match range {
        None => (StatusCode::OK, 0, size, blob_headers(digest, size)),
        Some(r) => {
            let len = r.end - r.start + 1;
            let mut h = blob_headers(digest, len);
            h.push((
                "content-range",
                format!("bytes {}-{}/{size}", r.start, r.end),
            ));
            (StatusCode::PARTIAL_CONTENT, r.start, len, h)
        }
    };
    headers.retain(|(n, _)| *n != "content-length");
    let mut resp = respond(status, &headers);
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    Ok((resp, start, len))
}

/// In a pull-through cache, a blob this repository lacks: linked from
/// another repository of the store if it is there and the upstream has it
/// under this name, else fetched from the upstream while it is streamed
/// (HEAD only asks its size). `None`: the
/// store now has it, serve it as usual.
async fn pull_through(
    app: &App,
    cache: &Arc<Cache>,
    req: &Request<Incoming>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<Response<Body>>, ApiError> {
    let (r, d) = (repo.clone(), digest.clone());
    let (linked, stored) = app
        .blocking(move |s| Ok((s.blob_linked(&r, &d)?, s.blob_size(&d)?.is_some())))
        .await?;
    let failed = |e| pull_through::error(e, ErrorCode::BlobUnknown);
    if linked || stored {
        if !linked {
            // Stored for another repository: linked here only if the
            // upstream serves it under this name too (no reading of other
            // repositories' content by digest).
            cache.upstream_has(repo, digest).await.map_err(failed)?;
            let (r, d) = (repo.clone(), digest.clone());
            app.blocking(move |s| s.mount_blob(&r, &d, None)).await?;
        }
        cache.stats.hits.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    if req.method() == Method::HEAD {
        let size = cache.blob_size(repo, digest).await.map_err(failed)?;
        return Ok(Some(respond(StatusCode::OK, &blob_headers(digest, size))));
    }
    let Some(fetch) = cache
        .fetch(&app.store, repo, digest)
        .await
        .map_err(failed)?
    else {
        // Stored by a fetch that just ended, perhaps for another repository.
        let (r, d) = (repo.clone(), digest.clone());
        app.blocking(move |s| s.mount_blob(&r, &d, None)).await?;
        return Ok(None);
    };
    let (mut resp, start, len) = answer_head(req, digest, fetch.size)?;
    let stream = fetch
        .read(start, start + len)
        .map_ok(http_body::Frame::data);
    *resp.body_mut() = http_body_util::StreamBody::new(stream).boxed();
    Ok(Some(resp))
}

pub(super) async fn get(
    app: &App,
    req: &Request<Incoming>,
    repo: RepoName,
    digest: Digest,
) -> Result<Response<Body>, ApiError> {
    if let Some(cache) = app.caches.for_repo(&repo) {
        if let Some(resp) = pull_through(app, cache, req, &repo, &digest).await? {
            return Ok(resp);
        }
    }
    if req.method() == Method::HEAD {
        let d = digest.clone();
        let size = app.blocking(move |s| s.stat_blob(&repo, &d)).await?;
        return Ok(respond(StatusCode::OK, &blob_headers(&digest, size)));
    }
    // Streamed from a bucket, once the blob's size is known: the
    // repository's link is checked while the object's read starts, one
    // round trip to the object store before the first byte instead of two.
    let (size, content) = match app.store.streamed_object_size(&digest) {
        Some(size) => (size, None),
        None => {
            let (r, d) = (repo.clone(), digest.clone());
            let blob = app.blocking(move |s| s.open_blob(&r, &d)).await?;
            if let BlobContent::Object(d) = &blob.content {
                // In a bucket: the client fetches the bytes from the object
                // store itself (as from Distribution), Range and all.
                if let Some(url) = app.store.object_url(d).await? {
                    return Ok(respond(
                        StatusCode::TEMPORARY_REDIRECT,
                        &[
                            ("location", url),
                            ("docker-content-digest", digest.to_string()),
                        ],
                    ));
                }
            }
            (blob.size, Some(blob.content))
        }
    };
    let (mut resp, start, len) = answer_head(req, &digest, size)?;
    *resp.body_mut() = match content {
        Some(BlobContent::File(file, path)) => {
            let kernel = req.extensions().get::<FileQueue>().cloned();
            FileBody::spawn(BlobReader::new(file, path), start, len, kernel).boxed()
        }
        Some(BlobContent::Object(d)) => {
            let stream = app.store.read_object(&d, start, len).await?;
            ObjectBody::spawn(stream, len).boxed()
        }
        None => {
            let d = digest.clone();
            let (linked, stream) = tokio::join!(
                app.blocking(move |s| s.stat_blob(&repo, &d)),
                app.store.read_object(&digest, start, len)
            );
            // Not linked here: the read is dropped unsent.
            linked?;
            ObjectBody::spawn(stream?, len).boxed()
        }
    };
    Ok(resp)
}

pub(super) async fn delete(
    app: &App,
    repo: RepoName,
    digest: Digest,
) -> Result<Response<Body>, ApiError> {
    let (r, d) = (repo.clone(), digest.clone());
    app.blocking(move |s| s.delete_blob(&r, &d)).await?;
    let mut resp = respond(
        StatusCode::ACCEPTED,
        &[("docker-content-digest", digest.to_string())],
    );
    record(
        &mut resp,
        Occurrence::new(Action::Delete, repo.as_str()).digest(&digest),
    );
    Ok(resp)
}

/// Streams `remaining` bytes of a file. On a connection that sends files
/// itself (`kernel`), while other clients are connected, each piece whose
/// pages are cached is handed to the socket's `sendfile` as a placeholder
/// frame (see `server::sendfile`). Otherwise, and for pieces that would
/// wait for the disk, it reads in positioned reads of up to 1 MiB, each a
/// job on the blocking pool, `READS_AHEAD` of them in flight: disk reads
/// overlap each other and the socket's writes, and a client that stops
/// reading holds those buffers and no thread.
struct FileBody {
    reader: Arc<BlobReader>,
    /// The next byte to send, and how many are left to send.
    offset: u64,
    remaining: u64,
    /// Reads in flight, in order, for the bytes from `offset` on.
    reads: VecDeque<tokio::task::JoinHandle<io::Result<Bytes>>>,
    /// How many bytes those reads cover.
    reading: u64,
    kernel: Option<FileQueue>,
}

/// Reads in flight per download. One read of 1 MiB at a time left a cold
/// pull waiting on the disk between reads; with several the disk's queue
/// stays full.
const READS_AHEAD: usize = 3;

impl FileBody {
    fn spawn(reader: BlobReader, start: u64, len: u64, kernel: Option<FileQueue>) -> FileBody {
        let mut body = FileBody {
            reader: Arc::new(reader),
            offset: start,
            remaining: len,
            reads: VecDeque::new(),
            reading: 0,
            kernel,
        };
        body.read_ahead();
        body
    }

    /// Start reads up to `READS_AHEAD`, unless the kernel will send the
    /// next piece from the page cache.
    fn read_ahead(&mut self) {
        if self.reads.is_empty() && (self.remaining == 0 || self.next_sent_by_kernel()) {
            return;
        }
        self.fill_reads();
    }

    fn fill_reads(&mut self) {
        while self.reads.len() < READS_AHEAD && self.reading < self.remaining {
            self.start_read();
        }
    }

    /// Read the next piece not yet asked for on the blocking pool: through
    /// the page cache if it is there, around it if not (see
    /// `storage::reader`). A piece must come whole: the next is already
    /// being read from where it ends.
    fn start_read(&mut self) {
        let want = (self.remaining - self.reading).min(reader::PIECE as u64) as usize;
        let (reader, at) = (self.reader.clone(), self.offset + self.reading);
        self.reading += want as u64;
        self.reads.push_back(tokio::task::spawn_blocking(move || {
            let cold = !reader.cached(at, want as u64);
            let piece = reader.read(at, want, cold)?;
            if piece.len() < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob ended early",
                ));
            }
            Ok(piece)
        }));
    }

    fn kernel_piece(&self) -> u64 {
        self.remaining.min(sendfile::FRAME as u64)
    }

    fn next_sent_by_kernel(&self) -> bool {
        self.kernel.as_ref().is_some_and(FileQueue::by_kernel)
            && self.reader.cached(self.offset, self.kernel_piece())
    }

    fn advance(&mut self, n: u64) {
        self.offset += n;
        self.remaining -= n;
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.reads.is_empty() {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            // Asked again now: the piece may have been cached since, or
            // other clients connected.
            if let Some(queue) = self.kernel.as_ref().filter(|_| self.next_sent_by_kernel()) {
                let n = self.kernel_piece();
                let frame = queue.frame(self.reader.clone(), self.offset, n as usize);
                self.advance(n);
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            self.fill_reads();
        }
        let read = self.reads.front_mut().expect("started above");
        let result = match Pin::new(read).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.reads.pop_front();
        match result {
            Ok(Ok(data)) => {
                let n = data.len() as u64;
                self.reading -= n;
                self.advance(n);
                self.read_ahead();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(Err(e)) => Poll::Ready(Some(Err(e))),
            Err(e) => Poll::Ready(Some(Err(io::Error::other(format!("read job failed: {e}"))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Streams an object from the object store: a task reads it into a
/// channel of one piece, so the body stays `Sync` and a client that stops
/// reading stops the read. Fewer bytes than promised fail the body rather
/// than end it, so a short blob is never taken as whole.
struct ObjectBody {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl ObjectBody {
    fn spawn(
        mut stream: futures_util::stream::BoxStream<'static, io::Result<Bytes>>,
        len: u64,
    ) -> ObjectBody {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while let Some(piece) = stream.next().await {
                let failed = piece.is_err();
                if let Ok(b) = &piece {
                    sent += b.len() as u64;
                }
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
            if sent < len {
                let short = io::Error::new(io::ErrorKind::UnexpectedEof, "blob ended early");
                let _ = tx.send(Err(short)).await;
            }
        });
        ObjectBody { rx, remaining: len }
    }
}

impl HttpBody for ObjectBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                self.remaining = self.remaining.saturating_sub(data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::other("blob read stopped")))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s, e| Ok(Some(ByteRange { start: s, end: e }));
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), r(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), r(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), r(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), r(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Ok(None));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_range_header_is_served_refused_or_ignored(
            value in prop_oneof![
                "\\PC{0,40}",
                "bytes=[0-9 ]{0,22}-[0-9 ]{0,22}",
                "bytes=-[0-9]{0,22}",
                "bytes=[0-9]{1,6}-[0-9]{0,6}(,[0-9]{1,6}-[0-9]{0,6})?",
            ],
            size in prop_oneof![Just(0u64), 0u64..4096, any::<u64>()],
        ) {
            // A range served lies inside the blob, first byte before last.
            if let Ok(Some(r)) = parse_range(Some(&value), size) {
                prop_assert!(r.start <= r.end, "{value:?} of {size}: {}-{}", r.start, r.end);
                prop_assert!(r.end < size, "{value:?} of {size}: {}-{}", r.start, r.end);
            }
        }
    }
}
