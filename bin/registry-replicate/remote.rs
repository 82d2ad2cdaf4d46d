//! A registry spoken to over HTTP: a pool of kept-alive connections, a
//! limit on requests in flight, and every request retried on its own
//! (`retry`). A blob read cut in the middle goes on with `Range` from the
//! byte reached; an upload cut in the middle goes on from the offset the
//! target reports.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use registry::client::{
    collect, follow_redirects, header, next_frame, read_text, Conn, Frames, Meter, Target,
};
use registry::oci::{media, Descriptor, Digest, Manifest, Reference};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::content::{BlobStream, Feed, Fetched};
use crate::counters::Counters;
use crate::retry::{retry, retry_after, BadAnswer, Health, Retries, StatusError};

/// Every manifest type a copy may meet, for `Accept`.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// An upload session on a target: where it is, and how many bytes it holds.
pub struct Upload {
    location: String,
    pub offset: u64,
}

/// A blob's answer on its way: the body, how many bytes at its start were
/// already passed on (a registry that ignored `Range`), and the connection
/// it arrives on, kept out of the pool until it is read.
struct BlobAnswer {
    body: Incoming,
    skip: u64,
    _conn: Option<Conn>,
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
/// limit on requests in flight. Clones share the pool and the limit; each
/// pass counts into its own `Counters` (`counted`).
#[derive(Clone)]
pub struct Remote {
    /// Set once the registry answers the referrers API with 404.
    no_referrers_api: Arc<AtomicBool>,
    target: Arc<Target>,
    pool: Arc<Mutex<Vec<Conn>>>,
    slots: Arc<Semaphore>,
    /// How long one request (or one blob's transfer) is retried.
    retry_for: Duration,
    health: Arc<Health>,
    counters: Arc<Counters>,
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
    pub fn new(target: Target, concurrency: usize, retry_for: Duration) -> Remote {
        Remote {
            no_referrers_api: Default::default(),
            target: Arc::new(target),
            pool: Arc::default(),
            slots: Arc::new(Semaphore::new(concurrency)),
            retry_for,
            health: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The same registry, counting into `counters`.
    pub fn counted(&self, counters: Arc<Counters>) -> Remote {
        Remote {
            counters,
            ..self.clone()
        }
    }

    /// The tries of a request or transfer to this registry.
    pub fn retries(&self) -> Retries<'_> {
        Retries::new(self.retry_for, &self.counters, &self.health)
    }

    /// Run one request until it succeeds, fails for good, or `retry_for`
    /// is spent.
    async fn retry<T, F, Fut>(&self, what: &str, f: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        retry(what, self.retries(), f).await
    }

    /// Counts what a request body hands to the connection as sent.
    fn sent_meter(&self) -> Meter {
        let counters = self.counters.clone();
        Arc::new(move |n| {
            counters.bytes_sent.fetch_add(n, Ordering::Relaxed);
        })
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
        self.retry(&format!("{method} {path}"), || async {
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

    pub async fn repositories(&self) -> anyhow::Result<Vec<String>> {
        self.get_list("/v2/_catalog?n=1000".into(), "repositories")
            .await
    }

    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        self.get_list(format!("/v2/{repo}/tags/list?n=1000"), "tags")
            .await
    }

    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<Digest>> {
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

    pub async fn manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
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
        self.retry(&format!("PUT {path}"), || async {
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
                    return Err(anyhow!(BadAnswer(format!(
                        "the target stored it as {got}, not {}",
                        m.digest
                    ))));
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.retry(&format!("DELETE {path}"), || async {
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
        self.retry(&format!("HEAD {path}"), || async {
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
        self.retry(&format!("POST {path}"), || async {
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

    /// A blob's bytes from byte `from` on. A read cut in the middle goes
    /// on with `Range` from the byte reached, or from the start with what
    /// was already passed on skipped where the registry ignores `Range`;
    /// nothing is passed on twice. Read from the start, the digest is
    /// checked as it goes; a resumed tail is checked by the target, which
    /// verifies the whole upload against the digest.
    pub async fn open_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        from: u64,
    ) -> anyhow::Result<BlobStream> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        // The first answer here, so that a refusal (a 404) fails the copy.
        let first = self
            .retry(&format!("GET {path}"), || self.blob_answer(&path, from))
            .await?;
        let (stream, feed) = BlobStream::channel(size - from);
        let (remote, digest) = (self.clone(), digest.clone());
        tokio::spawn(async move {
            remote
                .read_blob(&path, &digest, size, from, first, feed)
                .await
        });
        Ok(stream)
    }

    /// One GET of a blob from byte `at`, following a redirect to where the
    /// bytes are kept.
    async fn blob_answer(&self, path: &str, at: u64) -> anyhow::Result<BlobAnswer> {
        let range = format!("bytes={at}-");
        let headers: &[(&str, &str)] = if at > 0 { &[("range", &range)] } else { &[] };
        let mut c = self.conn().await;
        let resp = c.send(Method::GET, path, headers, Frames::empty()).await?;
        // Registries on object storage send blob reads elsewhere (a 307 to
        // a signed URL): follow, without our credentials.
        let mut elsewhere = None;
        let resp = follow_redirects(&self.target, resp, headers, &mut elsewhere).await?;
        let skip = match resp.status() {
            // The whole blob, asked for or not.
            StatusCode::OK => at,
            StatusCode::PARTIAL_CONTENT if at > 0 => {
                let start = header(&resp, "content-range")
                    .and_then(|v| v.trim().strip_prefix("bytes"))
                    .and_then(|v| v.trim().split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if start != Some(at) {
                    return Err(anyhow!(BadAnswer(format!(
                        "asked for bytes {at}- and got Content-Range {:?}",
                        header(&resp, "content-range")
                    ))));
                }
                0
            }
            _ => return Err(refuse(resp).await),
        };
        // The connection stays with the body until it is read.
        let conn = elsewhere.or_else(|| c.conn.take());
        Ok(BlobAnswer {
            body: resp.into_body(),
            skip,
            _conn: conn,
        })
    }

    /// Pass a blob's bytes into `feed`, from `answer` and, after each cut,
    /// from a new request that goes on at the byte reached.
    async fn read_blob(
        &self,
        path: &str,
        digest: &Digest,
        size: u64,
        from: u64,
        mut answer: BlobAnswer,
        feed: Feed,
    ) {
        let mut hasher = (from == 0).then(|| digest.algorithm().hasher());
        let mut at = from;
        let mut tries = self.retries();
        loop {
            let reached = at;
            let cut = loop {
                let mut data = match next_frame(&mut answer.body).await {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                self.counters
                    .bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let skipped = answer.skip.min(data.len() as u64);
                answer.skip -= skipped;
                let data = data.split_off(skipped as usize);
                if data.is_empty() {
                    continue;
                }
                if at + data.len() as u64 > size {
                    feed.fail(format!(
                        "the source sent more than the {size} bytes of {digest}"
                    ))
                    .await;
                    return;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&data);
                }
                at += data.len() as u64;
                if !feed.send(data).await {
                    return;
                }
            };
            if at == size {
                break;
            }
            let e = match cut {
                Some(e) => e.context(format!("the source cut {digest} at byte {at} of {size}")),
                None => anyhow!("the source's answer for {digest} ended at byte {at} of {size}"),
            };
            // Bytes arrived since the last cut: the time to retry starts again.
            if at > reached {
                tries = self.retries();
                self.health.succeeded();
            }
            if let Err(e) = tries.after(e, &format!("GET {path}")).await {
                feed.fail(format!("{e:#}")).await;
                return;
            }
            self.counters.reads_resumed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%digest, at, "resuming the read");
            answer = match self
                .retry(&format!("GET {path} from byte {at}"), || {
                    self.blob_answer(path, at)
                })
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    feed.fail(format!("{e:#}")).await;
                    return;
                }
            };
        }
        if let Some(got) = hasher.map(|h| h.finish()) {
            if got != *digest {
                feed.fail(format!("the source sent {size} bytes hashing to {got}"))
                    .await;
            }
        }
    }

    /// Close an upload with its last bytes: PUT the rest of `blob` with the
    /// digest. Cut or refused, the session stays for `upload_offset`.
    pub async fn put_rest(
        &self,
        up: &Upload,
        digest: &Digest,
        blob: BlobStream,
    ) -> anyhow::Result<()> {
        let location = up.location.as_str();
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let mut c = self.conn().await;
        let resp = match c
            .send(
                Method::PUT,
                &put,
                &[("content-type", "application/octet-stream")],
                Frames::stream(blob.frames, blob.size).metered(self.sent_meter()),
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
        self.retry(&format!("POST {path}"), || async {
            let (status, headers, body) = self
                .exchange(Method::POST, &path, &[], Frames::empty())
                .await?;
            if status != StatusCode::ACCEPTED {
                return Err(unexpected(status, &headers, &body));
            }
            let location = headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!(BadAnswer("upload POST: no Location".into())))?;
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
                    Frames::new(frames).metered(self.sent_meter()),
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
        let headers = self
            .retry("upload status", || async {
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
        self.retry("upload PUT", || async {
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

    pub async fn referrers(&self, repo: &str, digest: &Digest) -> anyhow::Result<Vec<Descriptor>> {
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
}
