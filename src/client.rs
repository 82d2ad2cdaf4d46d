//! The HTTP/1.1 client that registry-bench and registry-replicate speak to
//! registries with: one kept-alive connection per worker, request bodies
//! sent as shared `Bytes` frames (no copies) or streamed from a channel,
//! and response bodies streamed through a digest check, never buffered
//! whole unless the caller asks for the text.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::oci::{Algorithm, Digest};

/// Where the load goes: a registry's base URL and how to log in.
pub struct Target {
    pub https: bool,
    /// `host:port`.
    pub authority: String,
    pub authorization: Option<HeaderValue>,
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl Target {
    /// `url` is `http://host:port` or `https://host:port`; `ca` names a PEM
    /// file of roots for https (the system's bundle otherwise).
    pub fn new(
        url: &str,
        credentials: Option<(String, String)>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Target> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("{url:?}: the registry URL must start with http:// or https://");
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            bail!("{url:?}: give the registry's base URL (scheme, host and port), without a path");
        }
        let authority = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else if https {
            format!("{host}:443")
        } else {
            format!("{host}:80")
        };
        let authorization = credentials.map(|(user, password)| {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header")
        });
        let (tls, server_name) = if https {
            let bundle = ca.unwrap_or(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"));
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject as _;
            let certs =
                rustls_pki_types::CertificateDer::pem_file_iter(bundle).with_context(|| {
                    format!("cannot read CA certificates from {}", bundle.display())
                })?;
            for cert in certs {
                let cert = cert.with_context(|| format!("{}: bad PEM", bundle.display()))?;
                roots.add(cert).context("unusable CA certificate")?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .context("TLS set-up")?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = authority
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&authority);
            let name =
                rustls_pki_types::ServerName::try_from(name.trim_matches(['[', ']']).to_string())
                    .map_err(|_| anyhow!("{name:?} is not a host name"))?;
            (
                Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
                Some(name),
            )
        } else {
            (None, None)
        };
        Ok(Target {
            https,
            authority,
            authorization,
            tls,
            server_name,
        })
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

/// One kept-alive connection, reopened after any failure.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Frames>>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Conn {
        Conn {
            target,
            sender: None,
        }
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Frames>> {
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("cannot connect to {}", self.target.authority))?;
        stream.set_nodelay(true)?;
        let sender = match (&self.target.tls, &self.target.server_name) {
            (Some(tls), Some(name)) => {
                let stream = tls
                    .connect(name.clone(), stream)
                    .await
                    .context("TLS handshake")?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                sender
            }
            _ => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    /// Send one request; `path` is the path and query, or an absolute URL
    /// on the same registry (as `Location` headers may be).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Frames,
    ) -> anyhow::Result<Response<Incoming>> {
        let path = match path.find("://") {
            Some(i) => match path[i + 3..].find('/') {
                Some(j) => &path[i + 3 + j..],
                None => "/",
            },
            None => path,
        };
        let has_body = matches!(method, Method::PUT | Method::POST | Method::PATCH);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.target.authority);
        if let Some(auth) = &self.target.authorization {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        let len = body.len();
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if len > 0 || has_body {
            req = req.header(http::header::CONTENT_LENGTH, len);
        }
        let req = req.body(body).context("building the request")?;
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(self.open().await?),
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            bail!("connection closed");
        }
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.sender = None;
                Err(anyhow!("request failed: {e}"))
            }
        }
    }

    /// Forget the connection: the next request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

/// Fail unless the status is the one expected, with the server's words.
pub async fn expect(
    resp: Response<Incoming>,
    want: StatusCode,
    what: &str,
) -> anyhow::Result<Response<Incoming>> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let text = read_text(resp).await.unwrap_or_default();
    bail!(
        "{what}: {status} (wanted {want}): {}",
        text.chars().take(300).collect::<String>()
    )
}

/// The whole body as text (small answers: manifests, lists, errors).
pub async fn read_text(resp: Response<Incoming>) -> anyhow::Result<String> {
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// Read the body through a hasher and check it is exactly `digest` and
/// `size` bytes: a fast wrong answer is a failure. Returns the byte count.
pub async fn verify_body(
    resp: Response<Incoming>,
    digest: &Digest,
    size: Option<u64>,
) -> anyhow::Result<u64> {
    let mut body = resp.into_body();
    let mut hasher = digest.algorithm().hasher();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("body cut short")?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            n += data.len() as u64;
        }
    }
    if let Some(size) = size {
        if n != size {
            bail!("{digest}: got {n} bytes, wanted {size}");
        }
    }
    let got = hasher.finish();
    if &got != digest {
        bail!("{digest}: content hashes to {got}");
    }
    Ok(n)
}

/// Read and discard the body; the byte count.
pub async fn drain(resp: Response<Incoming>) -> anyhow::Result<u64> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("body cut short")?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Like `verify_body` but keeps the bytes (manifests, which are parsed next).
pub async fn verified_bytes(resp: Response<Incoming>, digest: &Digest) -> anyhow::Result<Bytes> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    let got = Digest::of(Algorithm::Sha256, &bytes);
    if &got != digest {
        bail!("{digest}: content hashes to {got}");
    }
    Ok(bytes)
}

pub fn header<'a>(resp: &'a Response<Incoming>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A request body: shared frames sent without copying, then optionally a
/// stream of frames from a channel (a blob copied from elsewhere).
pub struct Frames {
    frames: VecDeque<Bytes>,
    stream: Option<mpsc::Receiver<io::Result<Bytes>>>,
    /// Bytes still to send.
    len: u64,
}

impl Frames {
    pub fn empty() -> Frames {
        Frames::new([])
    }

    pub fn new(frames: impl IntoIterator<Item = Bytes>) -> Frames {
        let frames: VecDeque<Bytes> = frames.into_iter().filter(|f| !f.is_empty()).collect();
        let len = frames.iter().map(|f| f.len() as u64).sum();
        Frames {
            frames,
            stream: None,
            len,
        }
    }

    /// `len` bytes arriving on `rx`; an error on the channel aborts the
    /// request, and so does a stream shorter or longer than `len`.
    pub fn stream(rx: mpsc::Receiver<io::Result<Bytes>>, len: u64) -> Frames {
        Frames {
            frames: VecDeque::new(),
            stream: Some(rx),
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let next = match self.frames.pop_front() {
            Some(f) => Some(Ok(f)),
            None => match self.stream.as_mut() {
                None => None,
                Some(rx) => match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(item) => item,
                },
            },
        };
        match next {
            Some(Ok(f)) => {
                if f.len() as u64 > self.len {
                    return Poll::Ready(Some(Err(io::Error::other("body longer than declared"))));
                }
                self.len -= f.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(f))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None if self.len > 0 => {
                Poll::Ready(Some(Err(io::Error::other("body shorter than declared"))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.len == 0 && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
