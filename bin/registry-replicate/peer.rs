//! A peer: a registry spoken to over HTTP, or a store on this machine read
//! through the storage library. Both answer the same questions: which
//! repositories and tags exist, what a manifest is, and a blob's bytes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng;
use registry::client::{collect, header, next_frame, read_text, Conn, Frames, Target};
use registry::oci::{media, Descriptor, Digest, Manifest, Reference, RepoName};
use registry::storage::{BlobContent, StorageError, Store, StoreOptions};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Every manifest type a copy may meet, for `Accept`.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Frames a local blob is read in.
const READ_CHUNK: usize = 1 << 20;
/// Attempts of one request before it counts as failed.
pub const ATTEMPTS: u32 = 5;

/// A manifest as fetched: its exact bytes, so the copy has the same digest.
#[derive(Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// An upload session on a target: where it is, and how many bytes it holds.
pub struct Upload {
    location: String,
    pub offset: u64,
}

/// A blob's bytes on their way: how many, and a channel of frames.
pub struct BlobStream {
    pub size: u64,
    pub frames: mpsc::Receiver<std::io::Result<Bytes>>,
}

pub enum Peer {
    Remote(Remote),
    Local(LocalStore),
}

/// A failed request with the status the registry answered, so that the
/// retry loop can tell a busy registry from a refusal.
#[derive(Debug)]
pub struct StatusError {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for StatusError {}

/// Whether an error may go away if the request is tried again, and how
/// long the registry asked us to wait.
pub fn transient(e: &anyhow::Error) -> Option<Option<Duration>> {
    if e.downcast_ref::<registry::client::LoginRefused>().is_some() {
        return None;
    }
    match e.downcast_ref::<StatusError>() {
        Some(s) if s.status == StatusCode::TOO_MANY_REQUESTS || s.status.is_server_error() => {
            Some(s.retry_after)
        }
        Some(_) => None,
        // No answer at all: a reset, a refused connection, a timeout.
        None => Some(None),
    }
}

/// Exponential backoff with up to 50% jitter, so that many clients
/// retrying at once spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200 << attempt.min(6));
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 2))
}

/// Run `f` until it succeeds, fails for good, or has been tried ATTEMPTS
/// times; between tries wait as the registry asked (Retry-After) or back
/// off exponentially with jitter.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let Some(asked) = transient(&e) else {
                    return Err(e.context(what.to_string()));
                };
                if attempt >= ATTEMPTS {
                    return Err(e.context(format!("{what} (gave up after {attempt} attempts)")));
                }
                let backoff = Duration::from_millis(200 << attempt.min(6));
                let jitter = Duration::from_millis(
                    rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2),
                );
                let wait = asked
                    .unwrap_or(backoff + jitter)
                    .min(Duration::from_secs(60));
                tracing::debug!(what, attempt, ?wait, error = %format!("{e:#}"), "retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Pages of a list followed at most.
const MAX_PAGES: usize = 100_000;

/// The target of `Link: <...>; rel="next"`, among any other links.
fn next_link(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                matches!(
                    p.trim().replace(' ', "").as_str(),
                    "rel=\"next\"" | "rel=next"
                )
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            (is_next && !target.is_empty()).then(|| target.to_string())
        })
}

/// A `StatusError` for an answer the caller did not expect, with the wait
/// a `Retry-After` header asks for.
fn unexpected(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> anyhow::Error {
    anyhow!(StatusError {
        status,
        retry_after: retry_after(headers),
        message: String::from_utf8_lossy(body).chars().take(300).collect(),
    })
}

/// `Retry-After` in seconds (the HTTP-date form is taken as a minute).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    Some(Duration::from_secs(v.parse::<u64>().unwrap_or(60)))
}

/// Turn an unexpected answer into a `StatusError` with the registry's words.
async fn refuse(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    let text = read_text(resp).await.unwrap_or_default();
    anyhow!(StatusError {
        status,
        retry_after,
        message: text.chars().take(300).collect()
    })
}

/// A registry over HTTP, with a pool of kept-alive connections and a
/// limit on requests in flight.
pub struct Remote {
    /// Set once the registry answers the referrers API with 404.
    no_referrers_api: std::sync::atomic::AtomicBool,
    target: Arc<Target>,
    pool: Mutex<Vec<Conn>>,
    slots: Arc<Semaphore>,
}

/// A connection taken from the pool; it goes back when dropped, if the
/// last answer was read to its end.
struct Pooled<'a> {
    remote: &'a Remote,
    conn: Option<Conn>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.remote.pool.lock().expect("pool lock").push(c);
        }
    }
}

/// A pooled connection is used as the connection itself (whose `send`
/// already drops a broken connection).
impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Pooled<'_> {
    /// Keep the connection out of the pool (its answer was not read whole).
    fn discard(&mut self) {
        self.conn = None;
    }
}

impl Remote {
    pub fn new(target: Target, concurrency: usize) -> Remote {
        Remote {
            no_referrers_api: Default::default(),
            target: Arc::new(target),
            pool: Mutex::new(vec![]),
            slots: Arc::new(Semaphore::new(concurrency)),
        }
    }

    pub fn url(&self) -> String {
        self.target.url()
    }

    async fn conn(&self) -> Pooled<'_> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let conn = self
            .pool
            .lock()
            .expect("pool lock")
            .pop()
            .unwrap_or_else(|| Conn::new(self.target.clone()));
        Pooled {
            remote: self,
            conn: Some(conn),
            _slot: slot,
        }
    }

    /// A request whose whole answer is small: status and text.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Frames,
    ) -> anyhow::Result<(StatusCode, http::HeaderMap, Bytes)> {
        let mut c = self.conn().await;
        let resp = c.send(method, path, headers, body).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = match collect(resp).await {
            Ok(b) => b,
            Err(e) => {
                c.discard();
                return Err(e);
            }
        };
        Ok((status, headers, body))
    }

    /// GET or HEAD something that may be missing: its headers and body,
    /// or None on 404 (and on `also_missing`), retried while transient.
    async fn lookup(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        also_missing: &[StatusCode],
    ) -> anyhow::Result<Option<(http::HeaderMap, Bytes)>> {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        retry(&format!("{method} {path}"), || async {
            let (status, answer, body) = self
                .exchange(method.clone(), path, &headers, Frames::empty())
                .await?;
            match status {
                StatusCode::OK => Ok(Some((answer, body))),
                s if s == StatusCode::NOT_FOUND || also_missing.contains(&s) => Ok(None),
                _ => Err(unexpected(status, &answer, &body)),
            }
        })
        .await
    }

    /// Every item of the list `key` in a paginated answer, following
    /// `Link: <...>; rel="next"`; None if the first page is missing (404,
    /// or a status in `also_missing`).
    async fn get_pages(
        &self,
        first: String,
        key: &str,
        also_missing: &[StatusCode],
    ) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
        let mut out = vec![];
        let mut seen = HashSet::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
                bail!("GET {path}: the registry's pages do not end");
            }
            let Some((headers, body)) = self.lookup(Method::GET, &path, None, also_missing).await?
            else {
                if seen.len() == 1 {
                    return Ok(None);
                }
                bail!("GET {path}: a page went missing");
            };
            let v: serde_json::Value =
                serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))?;
            out.extend(v[key].as_array().into_iter().flatten().cloned());
            next = next_link(&headers);
        }
        Ok(Some(out))
    }

    async fn get_list(&self, first: String, key: &str) -> anyhow::Result<Vec<String>> {
        let items = self.get_pages(first, key, &[]).await?.unwrap_or_default();
        Ok(items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect())
    }

    async fn repositories(&self) -> anyhow::Result<Vec<String>> {
        self.get_list("/v2/_catalog?n=1000".into(), "repositories")
            .await
    }

    async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        self.get_list(format!("/v2/{repo}/tags/list?n=1000"), "tags")
            .await
    }

    async fn manifest_digest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<Digest>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some((headers, _)) = self
            .lookup(Method::HEAD, &path, Some(ACCEPT_MANIFESTS), &[])
            .await?
        else {
            return Ok(None);
        };
        match headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(d) => Ok(Some(d.parse().map_err(|e| {
                anyhow!("HEAD {path}: bad Docker-Content-Digest: {e}")
            })?)),
            // Some registries leave it out: read the manifest and hash it.
            None => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
        }
    }

    async fn manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some((headers, body)) = self
            .lookup(Method::GET, &path, Some(ACCEPT_MANIFESTS), &[])
            .await?
        else {
            return Ok(None);
        };
        let digest = Digest::sha256(&body);
        if let Ok(Reference::Digest(want)) = reference.parse::<Reference>() {
            if want != digest {
                bail!("GET {path}: the manifest hashes to {digest}");
            }
        }
        let media_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .filter(|v| v.starts_with("application/vnd."))
            .unwrap_or_else(|| kind_of(&body));
        Ok(Some(Fetched {
            bytes: body,
            media_type,
            digest,
        }))
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Fetched,
    ) -> anyhow::Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        retry(&format!("PUT {path}"), || async {
            let mut c = self.conn().await;
            let resp = c
                .send(
                    Method::PUT,
                    &path,
                    &[("content-type", m.media_type.as_str())],
                    Frames::new([m.bytes.clone()]),
                )
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(refuse(resp).await);
            }
            let got = header(&resp, "docker-content-digest").map(str::to_string);
            read_text(resp).await?;
            if let Some(got) = got {
                if got != m.digest.to_string() {
                    bail!("the target stored it as {got}, not {}", m.digest);
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        retry(&format!("DELETE {path}"), || async {
            let (status, headers, body) = self
                .exchange(Method::DELETE, &path, &[], Frames::empty())
                .await?;
            match status {
                StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
                _ => Err(unexpected(status, &headers, &body)),
            }
        })
        .await
    }

    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<bool> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        retry(&format!("HEAD {path}"), || async {
            let (status, headers, body) = self
                .exchange(Method::HEAD, &path, &[], Frames::empty())
                .await?;
            match status {
                // A redirect to where the bytes are kept: it is there.
                s if s == StatusCode::OK || s.is_redirection() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(unexpected(status, &headers, &body)),
            }
        })
        .await
    }

    /// Link a blob from `from` on the same registry; false if it would not.
    pub async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> anyhow::Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        retry(&format!("POST {path}"), || async {
            let (status, headers, body) = self
                .exchange(Method::POST, &path, &[], Frames::empty())
                .await?;
            match status {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    // An upload was opened instead: close it.
                    if let Some(loc) = headers.get("location").and_then(|v| v.to_str().ok()) {
                        let _ = self
                            .exchange(Method::DELETE, loc, &[], Frames::empty())
                            .await;
                    }
                    Ok(false)
                }
                _ => Err(unexpected(status, &headers, &body)),
            }
        })
        .await
    }

    /// Stream a blob out of this registry, checking its digest as it goes.
    /// Stream a blob from byte `from` on. From the start its digest is
    /// checked as it goes; a resumed tail is checked by the target, which
    /// verifies the whole upload against the digest.
    async fn open_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        from: u64,
    ) -> anyhow::Result<BlobStream> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let range = format!("bytes={from}-");
        let headers: &[(&str, &str)] = if from > 0 { &[("range", &range)] } else { &[] };
        let mut c = self.conn().await;
        let mut resp = c.send(Method::GET, &path, headers, Frames::empty()).await?;
        // Registries on object storage send blob reads elsewhere (a 307 to
        // a signed URL): follow, without our credentials.
        let mut elsewhere = None;
        for _ in 0..3 {
            if !resp.status().is_redirection() {
                break;
            }
            let location = header(&resp, "location")
                .context("a redirect without Location")?
                .to_string();
            read_text(resp).await?;
            let (target, path) = self.target.redirect(&location)?;
            let conn = elsewhere.insert(Conn::new(target));
            resp = conn
                .send(Method::GET, &path, headers, Frames::empty())
                .await?;
        }
        let want = if from > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if resp.status() != want {
            return Err(refuse(resp).await);
        }
        let (tx, rx) = mpsc::channel(4);
        let mut body = resp.into_body();
        let digest = digest.clone();
        // The connection stays with this task until the body is read.
        let mut conn = match elsewhere {
            Some(other) => Some(other),
            None => c.conn.take(),
        };
        tokio::spawn(async move {
            let mut hasher = digest.algorithm().hasher();
            let mut n = 0u64;
            while let Some(frame) = next_frame(&mut body).await {
                let data = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::other(format!(
                                "source cut the blob short: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                hasher.update(&data);
                n += data.len() as u64;
                if tx.send(Ok(data)).await.is_err() {
                    return;
                }
            }
            let got = hasher.finish();
            if from == 0 && (got != digest || n != size) {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "source sent {n} bytes hashing to {got}"
                    ))))
                    .await;
            }
            drop(conn.take());
        });
        Ok(BlobStream {
            size: size - from,
            frames: rx,
        })
    }

    /// POST, then PUT with the blob's bytes from `blob`.
    pub async fn upload(
        &self,
        repo: &str,
        digest: &Digest,
        blob: BlobStream,
    ) -> anyhow::Result<()> {
        let up = self.start_upload(repo).await?;
        let location = up.location.as_str();
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let mut c = self.conn().await;
        let resp = match c
            .send(
                Method::PUT,
                &put,
                &[("content-type", "application/octet-stream")],
                Frames::stream(blob.frames, blob.size),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                c.discard();
                return Err(e);
            }
        };
        if resp.status() != StatusCode::CREATED {
            return Err(refuse(resp).await);
        }
        read_text(resp).await?;
        Ok(())
    }

    /// Open an upload session for a blob sent in chunks.
    pub async fn start_upload(&self, repo: &str) -> anyhow::Result<Upload> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        retry(&format!("POST {path}"), || async {
            let (status, headers, body) = self
                .exchange(Method::POST, &path, &[], Frames::empty())
                .await?;
            if status != StatusCode::ACCEPTED {
                return Err(unexpected(status, &headers, &body));
            }
            let location = headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .context("upload POST: no Location")?;
            Ok(Upload {
                location: location.to_string(),
                offset: 0,
            })
        })
        .await
    }

    /// Send the rest of the blob in PATCHes of `chunk` bytes, each with its
    /// Content-Range; the session remembers how far the target has it.
    pub async fn send_chunks(
        &self,
        up: &mut Upload,
        mut blob: BlobStream,
        chunk: u64,
    ) -> anyhow::Result<()> {
        let end = up.offset + blob.size;
        let mut pending: Option<Bytes> = None;
        while up.offset < end {
            let want = chunk.min(end - up.offset);
            let mut frames = vec![];
            let mut have = 0u64;
            while have < want {
                let mut f = match pending.take() {
                    Some(f) => f,
                    None => match blob.frames.recv().await {
                        Some(r) => r.context("reading the source")?,
                        None => bail!("the source ended after {} of {end} bytes", up.offset + have),
                    },
                };
                if have + f.len() as u64 > want {
                    pending = Some(f.split_off((want - have) as usize));
                }
                have += f.len() as u64;
                frames.push(f);
            }
            let range = format!("{}-{}", up.offset, up.offset + have - 1);
            let mut c = self.conn().await;
            let resp = c
                .send(
                    Method::PATCH,
                    &up.location,
                    &[
                        ("content-type", "application/octet-stream"),
                        ("content-range", &range),
                    ],
                    Frames::new(frames),
                )
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(refuse(resp).await);
            }
            if let Some(loc) = header(&resp, "location") {
                up.location = loc.to_string();
            }
            read_text(resp).await?;
            up.offset += have;
        }
        Ok(())
    }

    /// Ask the target how much of the upload it holds (after a cut).
    pub async fn upload_offset(&self, up: &mut Upload) -> anyhow::Result<()> {
        let location = up.location.clone();
        let headers = retry("upload status", || async {
            let (status, headers, body) = self
                .exchange(Method::GET, &location, &[], Frames::empty())
                .await?;
            match status {
                StatusCode::NO_CONTENT => Ok(headers),
                _ => Err(unexpected(status, &headers, &body)),
            }
        })
        .await?;
        // `Range: 0-N` holds bytes 0..=N; "0-0" is also what an empty
        // upload reports, and resending one byte costs nothing.
        let end = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.split_once('-'))
            .and_then(|(_, e)| e.parse::<u64>().ok())
            .context("upload status: no Range")?;
        up.offset = if end == 0 { 0 } else { end + 1 };
        if let Some(loc) = headers.get("location").and_then(|v| v.to_str().ok()) {
            up.location = loc.to_string();
        }
        Ok(())
    }

    /// Close a chunked upload: PUT with the digest and no body.
    pub async fn finish_upload(&self, up: &Upload, digest: &Digest) -> anyhow::Result<()> {
        let sep = if up.location.contains('?') { '&' } else { '?' };
        let put = format!("{}{sep}digest={digest}", up.location);
        retry("upload PUT", || async {
            let (status, headers, body) = self
                .exchange(Method::PUT, &put, &[], Frames::empty())
                .await?;
            match status {
                StatusCode::CREATED => Ok(()),
                _ => Err(unexpected(status, &headers, &body)),
            }
        })
        .await
    }

    async fn referrers(&self, repo: &str, digest: &Digest) -> anyhow::Result<Vec<Descriptor>> {
        use std::sync::atomic::Ordering;
        if self.no_referrers_api.load(Ordering::Relaxed) {
            return Ok(vec![]);
        }
        // A registry without the referrers API (Distribution 2.8) answers
        // 404 where the spec says an empty list: it has none, ever.
        let Some(items) = self
            .get_pages(
                format!("/v2/{repo}/referrers/{digest}"),
                "manifests",
                &[StatusCode::METHOD_NOT_ALLOWED],
            )
            .await?
        else {
            self.no_referrers_api.store(true, Ordering::Relaxed);
            return Ok(vec![]);
        };
        items
            .into_iter()
            .map(|d| serde_json::from_value(d).context("referrers: a bad descriptor"))
            .collect()
    }
}

/// The media type a manifest names, or the one its shape implies.
fn kind_of(bytes: &[u8]) -> String {
    Manifest::parse(bytes, None)
        .map(|m| m.kind.media_type())
        .unwrap_or(media::OCI_MANIFEST)
        .to_string()
}

/// Where a store read straight from storage is.
#[derive(Clone, Debug)]
pub enum LocalSource {
    /// A directory in Distribution's layout.
    Directory(std::path::PathBuf),
    /// A registry's config.yml: a directory or a bucket (`storage.s3`).
    RegistryConfig(std::path::PathBuf),
}

impl LocalSource {
    fn label(&self) -> String {
        match self {
            LocalSource::Directory(p) => p.display().to_string(),
            LocalSource::RegistryConfig(p) => format!("the store of {}", p.display()),
        }
    }
}

/// A registry store read straight from storage, read-only; on a file
/// system it is opened again for each pass (tags and repositories are
/// indexed once per open), in a bucket it catches up with the notes the
/// registry's nodes leave (storage::changes).
pub struct LocalStore {
    source: LocalSource,
    /// The store's root directory, when it is on a file system.
    directory: Option<std::path::PathBuf>,
    store: Mutex<Arc<Store>>,
}

impl LocalStore {
    pub fn open(source: LocalSource) -> anyhow::Result<LocalStore> {
        let (store, directory) = open_store(&source)?;
        Ok(LocalStore {
            source,
            directory,
            store: Mutex::new(store),
        })
    }

    /// The root directory of a store on a file system (to watch its tags).
    pub fn directory(&self) -> Option<&std::path::Path> {
        self.directory.as_deref()
    }

    /// See the store as it is now.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let store = self.store();
        if store.listings_catch_up() {
            blocking(move || Ok(store.catch_up()?)).await?;
            return Ok(());
        }
        let source = self.source.clone();
        let (store, _) = tokio::task::spawn_blocking(move || open_store(&source)).await??;
        *self.store.lock().expect("store lock") = store;
        Ok(())
    }

    fn store(&self) -> Arc<Store> {
        self.store.lock().expect("store lock").clone()
    }

    pub fn label(&self) -> String {
        self.source.label()
    }
}

/// The store, and its root directory when it is on a file system.
type Opened = (Arc<Store>, Option<std::path::PathBuf>);

fn open_store(source: &LocalSource) -> anyhow::Result<Opened> {
    let options = StoreOptions {
        readonly: true,
        ..StoreOptions::default()
    };
    let root = match source {
        LocalSource::Directory(root) => root.clone(),
        LocalSource::RegistryConfig(path) => {
            let config = registry::config::Config::load(path)?;
            if let Some(s3) = &config.storage.s3 {
                let store = Store::open_s3(s3, options)
                    .with_context(|| format!("cannot open the store in bucket {:?}", s3.bucket))?;
                return Ok((store, None));
            }
            config.storage.rootdirectory
        }
    };
    if !root.join("docker/registry/v2").is_dir() {
        bail!(
            "{} holds no registry store (no docker/registry/v2)",
            root.display()
        );
    }
    let store = Store::open(&root, options)
        .with_context(|| format!("cannot open the store at {}", root.display()))?;
    Ok((store, Some(root)))
}

fn repo_name(repo: &str) -> anyhow::Result<RepoName> {
    repo.parse().map_err(|e| anyhow!("{repo:?}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("blocking task failed: {e}"))?
}

impl Peer {
    pub fn label(&self) -> String {
        match self {
            Peer::Remote(r) => r.url(),
            Peer::Local(l) => l.label(),
        }
    }

    /// The registry behind a target: a store on disk is a source only.
    pub fn remote(&self) -> anyhow::Result<&Remote> {
        match self {
            Peer::Remote(r) => Ok(r),
            Peer::Local(l) => bail!("{} is read only here", l.label()),
        }
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        match self {
            Peer::Remote(_) => Ok(()),
            Peer::Local(l) => l.refresh().await,
        }
    }

    pub async fn repositories(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Peer::Remote(r) => r.repositories().await,
            Peer::Local(l) => {
                let store = l.store();
                Ok(store
                    .index()
                    .catalog(usize::MAX, None, |_| true)
                    .items
                    .iter()
                    .map(|r| r.to_string())
                    .collect())
            }
        }
    }

    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Peer::Remote(r) => r.tags(repo).await,
            Peer::Local(l) => {
                let store = l.store();
                let name = repo_name(repo)?;
                Ok(store
                    .index()
                    .tags(&name, usize::MAX, None)
                    .map(|p| p.items.iter().map(|t| t.to_string()).collect())
                    .unwrap_or_default())
            }
        }
    }

    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<Digest>> {
        match self {
            Peer::Remote(r) => r.manifest_digest(repo, reference).await,
            Peer::Local(_) => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
        }
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
        match self {
            Peer::Remote(r) => r.manifest(repo, reference).await,
            Peer::Local(l) => {
                let store = l.store();
                let (name, reference) = (
                    repo_name(repo)?,
                    reference
                        .parse::<Reference>()
                        .map_err(|e| anyhow!("{reference:?}: {e}"))?,
                );
                blocking(move || match store.get_manifest(&name, &reference) {
                    Ok(m) => Ok(Some(Fetched {
                        bytes: m.bytes,
                        media_type: m.media_type.to_string(),
                        digest: m.digest,
                    })),
                    Err(StorageError::ManifestUnknown(_) | StorageError::NameUnknown) => Ok(None),
                    Err(e) => Err(e.into()),
                })
                .await
            }
        }
    }

    /// A blob's bytes from byte `from` on.
    pub async fn open_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        from: u64,
    ) -> anyhow::Result<BlobStream> {
        match self {
            Peer::Remote(r) => r.open_blob(repo, digest, size, from).await,
            Peer::Local(l) => {
                let store = l.store();
                let (name, d, st) = (repo_name(repo)?, digest.clone(), store.clone());
                let blob = blocking(move || Ok(st.open_blob(&name, &d)?)).await?;
                let len = blob.size;
                if len != size {
                    bail!("{digest}: {len} bytes on disk, the manifest says {size}");
                }
                let (tx, rx) = mpsc::channel(4);
                let digest = digest.clone();
                match blob.content {
                    BlobContent::File(file) => {
                        tokio::task::spawn_blocking(move || read_into(file, from, digest, tx));
                    }
                    BlobContent::Object(d) => {
                        let stream = store.read_object(&d, from, size - from).await?;
                        tokio::spawn(forward_object(stream, from, digest, tx));
                    }
                }
                Ok(BlobStream {
                    size: size - from,
                    frames: rx,
                })
            }
        }
    }

    pub async fn referrers(&self, repo: &str, digest: &Digest) -> anyhow::Result<Vec<Descriptor>> {
        match self {
            Peer::Remote(r) => r.referrers(repo, digest).await,
            Peer::Local(l) => {
                let store = l.store();
                let (name, d) = (repo_name(repo)?, digest.clone());
                blocking(move || Ok(store.referrers(&name, &d, None)?)).await
            }
        }
    }
}

/// Pass an object's bytes from byte `from` on into the channel; read
/// whole, its digest is checked as it goes.
async fn forward_object(
    mut stream: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
    from: u64,
    digest: Digest,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    use futures_util::StreamExt;
    let mut hasher = (from == 0).then(|| digest.algorithm().hasher());
    while let Some(piece) = stream.next().await {
        if let (Some(h), Ok(b)) = (hasher.as_mut(), &piece) {
            h.update(b);
        }
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            return;
        }
    }
    if let Some(got) = hasher.map(|h| h.finish()) {
        if got != digest {
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "the object in the bucket hashes to {got}"
                ))))
                .await;
        }
    }
}

/// Read a local blob from byte `from` into the channel in 1 MiB frames;
/// read whole, its digest is checked as it goes.
fn read_into(
    mut file: std::fs::File,
    from: u64,
    digest: Digest,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    use std::io::{Read, Seek};
    if let Err(e) = file.seek(std::io::SeekFrom::Start(from)) {
        let _ = tx.blocking_send(Err(e));
        return;
    }
    let mut hasher = digest.algorithm().hasher();
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                hasher.update(&buf);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
    let got = hasher.finish();
    if got != digest {
        let _ = tx.blocking_send(Err(std::io::Error::other(format!(
            "the file on disk hashes to {got}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let mut h = http::HeaderMap::new();
        assert_eq!(next_link(&h), None);
        h.insert(
            "link",
            r#"</v2/_catalog?last=b&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        h.insert(
            "link",
            r#"</v2/x?p=1>; rel="prev", </v2/x?p=3>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/x?p=3"));
        h.insert("link", r#"</v2/x?p=1>; rel="prev""#.parse().unwrap());
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }
}
