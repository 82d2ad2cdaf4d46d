//! A registry that misbehaves as busy registries and long links do, per
//! request rather than per connection: an HTTP proxy (hyper on both sides)
//! in front of a real server that answers a share of all requests with 429
//! (`Retry-After: 1`) or 503, cuts a share of large answers (source reads)
//! and of large request bodies (target writes) in the middle, can ignore
//! `Range`, and counts what crosses. Its choices come from a seeded
//! generator, so a failing run can be repeated.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};

/// What goes wrong, and how often (shares from 0 to 1).
#[derive(Clone, Copy, Default)]
pub struct Misbehaviour {
    /// Requests answered 429 with `Retry-After: 1`, or 503 without it
    /// (half each), before they reach the registry.
    pub refuse: f64,
    /// Answers to GET over `CUT_ABOVE` bytes cut somewhere in their body.
    pub cut_answers: f64,
    /// Request bodies over `CUT_ABOVE` bytes cut somewhere in the middle.
    pub cut_requests: f64,
    /// Drop `Range` from requests, as a registry that does not honour it.
    pub ignore_range: bool,
    /// Seed of the choices.
    pub seed: u64,
}

/// Bodies smaller than this are never cut.
const CUT_ABOVE: u64 = 64 << 10;

#[derive(Default)]
pub struct Tally {
    pub requests: AtomicU64,
    pub refused_429: AtomicU64,
    pub refused_503: AtomicU64,
    pub answers_cut: AtomicU64,
    pub requests_cut: AtomicU64,
    /// Request body bytes passed on to the registry.
    pub bytes_in: AtomicU64,
    /// Answer body bytes passed on to the client.
    pub bytes_out: AtomicU64,
}

impl Tally {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

pub struct MisbehavingRegistry {
    pub addr: String,
    pub tally: Arc<Tally>,
    _runtime: tokio::runtime::Runtime,
}

struct Shared {
    upstream: String,
    how: Misbehaviour,
    rng: Mutex<rand::rngs::StdRng>,
    tally: Arc<Tally>,
}

impl Shared {
    /// True with probability `p`.
    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().gen_bool(p.min(1.0))
    }

    /// Where in a body of `len` bytes to cut: somewhere in its middle.
    fn cut_point(&self, len: u64) -> u64 {
        self.rng.lock().unwrap().gen_range(len / 10..len * 9 / 10)
    }
}

type Answer = http::Response<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

impl MisbehavingRegistry {
    pub fn start(upstream: &str, how: Misbehaviour) -> MisbehavingRegistry {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tally = Arc::new(Tally::default());
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            how,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(how.seed)),
            tally: tally.clone(),
        });
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { handle(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MisbehavingRegistry {
            addr,
            tally,
            _runtime: runtime,
        }
    }
}

fn plain(status: u16, headers: &[(&str, &str)]) -> Answer {
    let mut resp = http::Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(*k, *v);
    }
    resp.body(
        http_body_util::Full::new(Bytes::from_static(b"{\"errors\":[]}"))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    )
    .unwrap()
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Pass one request on, or refuse it, or cut it; an `Err` closes the
/// client's connection, which is how a cut request looks to it.
async fn handle(shared: &Shared, req: http::Request<Incoming>) -> Result<Answer, std::io::Error> {
    let t = &shared.tally;
    t.requests.fetch_add(1, Ordering::SeqCst);
    if shared.roll(shared.how.refuse) {
        return Ok(if shared.roll(0.5) {
            t.refused_429.fetch_add(1, Ordering::SeqCst);
            plain(429, &[("retry-after", "1")])
        } else {
            t.refused_503.fetch_add(1, Ordering::SeqCst);
            plain(503, &[])
        });
    }
    let (mut parts, body) = req.into_parts();
    let is_get = parts.method == http::Method::GET;
    if shared.how.ignore_range {
        parts.headers.remove(http::header::RANGE);
    }
    let length = content_length(&parts.headers);
    let cut_request = (length > CUT_ABOVE && shared.roll(shared.how.cut_requests))
        .then(|| shared.cut_point(length));
    let request_cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = Metered {
        inner: body,
        seen: 0,
        cut_at: cut_request,
        tally: t.clone(),
        bytes: |t| &t.bytes_in,
        cuts: |t| &t.requests_cut,
        on_cut: Some(request_cut.clone()),
    };
    let stream = tokio::net::TcpStream::connect(&shared.upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let upstream_req = http::Request::from_parts(parts, body);
    let answer = sender.send_request(upstream_req).await;
    if request_cut.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("request cut"));
    }
    let answer = answer.map_err(std::io::Error::other)?;
    let (parts, body) = answer.into_parts();
    let length = content_length(&parts.headers);
    let cut_answer = (is_get && length > CUT_ABOVE && shared.roll(shared.how.cut_answers))
        .then(|| shared.cut_point(length));
    let body = Metered {
        inner: body,
        seen: 0,
        cut_at: cut_answer,
        tally: t.clone(),
        bytes: |t| &t.bytes_out,
        cuts: |t| &t.answers_cut,
        on_cut: None,
    };
    Ok(http::Response::from_parts(parts, body.boxed()))
}

/// A body passed on frame by frame, counted, and ended with an error once
/// `cut_at` bytes have gone through (a cut is counted when it happens, not
/// when a reader gone before it would have met it).
struct Metered {
    inner: Incoming,
    seen: u64,
    cut_at: Option<u64>,
    tally: Arc<Tally>,
    bytes: fn(&Tally) -> &AtomicU64,
    cuts: fn(&Tally) -> &AtomicU64,
    on_cut: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(at) = self.cut_at {
            if self.seen >= at {
                self.cut_at = None;
                (self.cuts)(&self.tally).fetch_add(1, Ordering::SeqCst);
                if let Some(flag) = &self.on_cut {
                    flag.store(true, Ordering::SeqCst);
                }
                return Poll::Ready(Some(Err(std::io::Error::other("cut"))));
            }
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        let Ok(mut data) = frame.into_data() else {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
        };
        if let Some(at) = self.cut_at {
            // Pass on what comes before the cut; the cut comes next time.
            let room = at.saturating_sub(self.seen) as usize;
            data.truncate(room.min(data.len()));
        }
        self.seen += data.len() as u64;
        (self.bytes)(&self.tally).fetch_add(data.len() as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
