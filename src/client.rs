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
use std::time::Duration;

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

/// A registry: its base URL and how to log in. With credentials, requests
/// carry Basic authentication; a registry that answers with a Bearer
/// challenge (token auth, as Docker Hub, Harbor and Distribution's `token`
/// do) gets a token from its realm, kept per repository.
pub struct Target {
    pub https: bool,
    /// `host:port`.
    pub authority: String,
    pub authorization: Option<HeaderValue>,
    credentials: Option<(String, String)>,
    ca: Option<std::path::PathBuf>,
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    /// Bearer tokens by scope key (a repository name, `_catalog`, or `""`).
    tokens: std::sync::Mutex<std::collections::HashMap<String, HeaderValue>>,
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
        let authorization = credentials.clone().map(|(user, password)| {
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
            credentials,
            ca: ca.map(std::path::Path::to_path_buf),
            tls,
            server_name,
            tokens: Default::default(),
        })
    }

    /// Get a token from the realm a Bearer challenge names, with our
    /// credentials if we have any, and keep it for requests to `key`.
    async fn fetch_token(&self, challenge: &str, key: &str) -> anyhow::Result<()> {
        let params = challenge_params(challenge);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.as_str())
            .context("Bearer challenge without a realm")?;
        let (base, path) = match realm
            .find("://")
            .and_then(|i| realm[i + 3..].find('/').map(|j| i + 3 + j))
        {
            Some(at) => (&realm[..at], &realm[at..]),
            None => (realm, "/"),
        };
        let url = token_request(path, &params);
        let realm_target = Arc::new(Target::new(
            base,
            self.credentials.clone(),
            self.ca.as_deref(),
        )?);
        let resp = Conn::new(realm_target)
            .send_once(Method::GET, &url, &[], Frames::empty())
            .await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = read_text(resp).await.unwrap_or_default();
            return Err(anyhow!(LoginRefused(format!(
                "the token service {realm} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ))));
        }
        let v: serde_json::Value = serde_json::from_str(&read_text(resp).await?)
            .context("the token answer is not JSON")?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .context("the token answer holds no token")?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header")?;
        self.tokens
            .lock()
            .expect("token lock")
            .insert(key.to_string(), value);
        Ok(())
    }

    /// Where a redirect points: this registry (with its credentials) if
    /// the URL is on it, or another origin without any; and the path.
    pub fn redirect(self: &Arc<Self>, location: &str) -> anyhow::Result<(Arc<Target>, String)> {
        let Some(at) = location.find("://") else {
            return Ok((self.clone(), location.to_string()));
        };
        let split = location[at + 3..]
            .find('/')
            .map_or(location.len(), |j| at + 3 + j);
        let (base, path) = (&location[..split], &location[split..]);
        let path = if path.is_empty() { "/" } else { path };
        let other = Target::new(base, None, self.ca.as_deref())?;
        if other.authority == self.authority && other.https == self.https {
            return Ok((self.clone(), path.to_string()));
        }
        Ok((Arc::new(other), path.to_string()))
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

    /// The registry (or other origin) this connection goes to.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Frames>> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.target.authority),
        )
        .await
        .map_err(|_| anyhow!("cannot connect to {}: timed out", self.target.authority))?
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
    /// on the same registry (as `Location` headers may be). A Bearer
    /// challenge is answered once with a token from its realm, when the
    /// body can be sent again (anything but a stream).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Frames,
    ) -> anyhow::Result<Response<Incoming>> {
        let path = local_path(path);
        let again = body.try_clone();
        let resp = self.send_once(method.clone(), path, headers, body).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = match header(&resp, "www-authenticate") {
            Some(c) if c.len() > 7 && c[..7].eq_ignore_ascii_case("bearer ") => c[7..].to_string(),
            _ => return Ok(resp),
        };
        let Some(body) = again else {
            return Ok(resp);
        };
        // A challenge that names no scope (some registries leave it out
        // when the credentials were of another kind): ask for what this
        // request needs, as docker does.
        let challenge = match implied_scope(path, &method) {
            Some(scope) if !challenge.contains("scope=") => {
                format!("{challenge},scope=\"{scope}\"")
            }
            _ => challenge,
        };
        read_text(resp).await?;
        self.target.fetch_token(&challenge, scope_key(path)).await?;
        self.send_once(method, path, headers, body).await
    }

    /// One request as given; `path` is already a path and query.
    async fn send_once(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Frames,
    ) -> anyhow::Result<Response<Incoming>> {
        let has_body = matches!(method, Method::PUT | Method::POST | Method::PATCH);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.target.authority);
        let token = self
            .target
            .tokens
            .lock()
            .expect("token lock")
            .get(scope_key(path))
            .cloned();
        if let Some(auth) = token.as_ref().or(self.target.authorization.as_ref()) {
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
        // Until the answer's head: a minute, plus a second per MiB sent,
        // so a registry that stops answering cannot hold a run for ever.
        let limit = ANSWER_TIMEOUT + Duration::from_secs(len >> 20);
        match tokio::time::timeout(limit, sender.send_request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(anyhow!("request failed: {e}"))
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow!("no answer within {} s", limit.as_secs()))
            }
        }
    }

    /// Forget the connection: the next request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

/// Run futures together on the calling task and collect their outputs in
/// order: for a handful of I/O-bound jobs that borrow from the caller (a
/// spawned task could not), as both tools run them.
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer's head may take, beyond the time to send the body.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a body may go without a byte.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The path and query of a request target that may be an absolute URL on
/// the same registry (as `Location` headers may be).
fn local_path(path: &str) -> &str {
    match path.find("://") {
        Some(i) => match path[i + 3..].find('/') {
            Some(j) => &path[i + 3 + j..],
            None => "/",
        },
        None => path,
    }
}

/// The next frame of a body, or an error if none comes for a minute.
pub async fn next_frame(body: &mut Incoming) -> Option<anyhow::Result<Frame<Bytes>>> {
    match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
        Ok(f) => f.map(|r| r.map_err(|e| anyhow!("reading the body: {e}"))),
        Err(_) => Some(Err(anyhow!(
            "the body stalled for {} s",
            BODY_IDLE_TIMEOUT.as_secs()
        ))),
    }
}

/// A token service refused our credentials: trying again will not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoginRefused(pub String);

/// A redirect without a `Location`: asking again would get the same.
#[derive(Debug, thiserror::Error)]
#[error("a redirect without Location")]
pub struct RedirectWithoutLocation;

/// Follow `resp` while it is a redirect (at most three), as a client does
/// with a blob read that a registry on object storage sends to a signed
/// URL: a GET with the same `headers` to where `Location` points (resolved
/// against `from`), without `from`'s credentials on another origin.
/// `elsewhere` is the connection used there: one given that goes to the
/// same origin is used, any other replaced. The last answer, whose body
/// arrives on `elsewhere` if a redirect was followed.
pub async fn follow_redirects(
    from: &Arc<Target>,
    mut resp: Response<Incoming>,
    headers: &[(&str, &str)],
    elsewhere: &mut Option<Conn>,
) -> anyhow::Result<Response<Incoming>> {
    for _ in 0..3 {
        if !resp.status().is_redirection() {
            break;
        }
        let location = header(&resp, "location")
            .ok_or(RedirectWithoutLocation)?
            .to_string();
        read_text(resp).await?;
        let (target, path) = from.redirect(&location)?;
        let conn = match elsewhere.take() {
            Some(c) if c.target().url() == target.url() => elsewhere.insert(c),
            _ => elsewhere.insert(Conn::new(target)),
        };
        resp = conn
            .send(Method::GET, &path, headers, Frames::empty())
            .await?;
    }
    Ok(resp)
}

/// What a token is good for, from a request path: the repository it
/// names, `_catalog`, or `""` for the base endpoint.
fn scope_key(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/v2/") else {
        return "";
    };
    if rest.starts_with("_catalog") {
        return "_catalog";
    }
    ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|k| rest.rfind(k))
        .max()
        .map_or("", |at| &rest[..at])
}

/// The realm's path with the challenge's service and scopes as query.
fn token_request(path: &str, params: &[(String, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        match k.as_str() {
            "service" => {
                query.append_pair("service", v);
            }
            "scope" => {
                for scope in v.split(' ') {
                    query.append_pair("scope", scope);
                }
            }
            _ => {}
        }
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", query.finish())
}

/// The token scope a request needs, from its path and method.
fn implied_scope(path: &str, method: &Method) -> Option<String> {
    match scope_key(path) {
        "" => None,
        "_catalog" => Some("registry:catalog:*".into()),
        repo if *method == Method::GET || *method == Method::HEAD => {
            Some(format!("repository:{repo}:pull"))
        }
        repo if *method == Method::DELETE => Some(format!("repository:{repo}:delete")),
        repo => Some(format!("repository:{repo}:pull,push")),
    }
}

/// `realm="...",service="...",scope="..."` as pairs.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start_matches([',', ' ']);
    }
    out
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
    Ok(String::from_utf8_lossy(&collect(resp).await?).into_owned())
}

/// A small answer's whole body, within the idle limit.
pub async fn collect(resp: Response<Incoming>) -> anyhow::Result<Bytes> {
    match tokio::time::timeout(BODY_IDLE_TIMEOUT, resp.into_body().collect()).await {
        Ok(b) => Ok(b.context("reading the body")?.to_bytes()),
        Err(_) => bail!("the body stalled for {} s", BODY_IDLE_TIMEOUT.as_secs()),
    }
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
    while let Some(frame) = next_frame(&mut body).await {
        if let Ok(data) = frame?.into_data() {
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
    while let Some(frame) = next_frame(&mut body).await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Like `verify_body` but keeps the bytes (manifests, which are parsed next).
pub async fn verified_bytes(resp: Response<Incoming>, digest: &Digest) -> anyhow::Result<Bytes> {
    let bytes = collect(resp).await?;
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
    /// Told each frame's length as the connection takes it.
    meter: Option<Meter>,
}

/// Counts the bytes a body hands to its connection.
pub type Meter = Arc<dyn Fn(u64) + Send + Sync>;

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
            meter: None,
        }
    }

    /// `len` bytes arriving on `rx`; an error on the channel aborts the
    /// request, and so does a stream shorter or longer than `len`.
    pub fn stream(rx: mpsc::Receiver<io::Result<Bytes>>, len: u64) -> Frames {
        Frames {
            frames: VecDeque::new(),
            stream: Some(rx),
            len,
            meter: None,
        }
    }

    /// Tell `meter` the length of each frame as the connection takes it:
    /// what a request actually sent, if it was cut.
    pub fn metered(mut self, meter: Meter) -> Frames {
        self.meter = Some(meter);
        self
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The same body again, unless it streams from a channel.
    pub fn try_clone(&self) -> Option<Frames> {
        match self.stream {
            Some(_) => None,
            None => Some(Frames {
                frames: self.frames.clone(),
                stream: None,
                len: self.len,
                meter: self.meter.clone(),
            }),
        }
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
                if let Some(meter) = &self.meter {
                    meter(f.len() as u64);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys() {
        assert_eq!(scope_key("/v2/"), "");
        assert_eq!(scope_key("/v2/_catalog?n=10"), "_catalog");
        assert_eq!(scope_key("/v2/a/b/manifests/latest"), "a/b");
        assert_eq!(scope_key("/v2/a/blobs/uploads/x?_state=1"), "a");
        // A name that contains a keyword: the last one is the resource.
        assert_eq!(scope_key("/v2/x/manifests/y/tags/list"), "x/manifests/y");
    }

    #[test]
    fn challenges() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                (
                    "realm".to_string(),
                    "https://auth.example/token".to_string()
                ),
                ("service".to_string(), "registry.example".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
    }
}
