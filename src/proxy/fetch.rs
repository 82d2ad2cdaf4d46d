//! One blob fetched from the upstream for every client that asks while it
//! arrives: into the store through an ordinary upload (checked against its
//! digest before it is kept), and into a spool file that each client reads
//! as it grows. The last byte waits for the check.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::{blocking, Cache, ProxyError};
use crate::client::{self, Conn, Frames, Target};
use crate::oci::{Digest, RepoName};
use crate::storage::{ByteSource, StorageError, Store};

/// How long the upstream may send nothing before the fetch is given up.
const STALL: Duration = Duration::from_secs(60);
/// The most a client read takes from the spool at once.
const READ: u64 = 1 << 20;

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Bytes in the spool file.
    written: u64,
    /// Set when the fetch ended: stored and checked, or why not.
    outcome: Option<Result<(), String>>,
}

/// A fetch in flight (or just ended), shared by the clients that read it.
pub struct Fetch {
    pub size: u64,
    /// The repository it was fetched for (upstream, the blob is known there).
    repo: RepoName,
    /// The spool: a file already unlinked, gone with its last reader.
    file: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
}

/// The task of one fetch: however it ends, even by a panic, the fetch
/// leaves the map, and its readers hear that it ended.
struct Running {
    cache: Arc<Cache>,
    digest: Digest,
    tx: watch::Sender<Progress>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cache.fetches.lock().unwrap().remove(&self.digest);
        self.tx.send_if_modified(|p| {
            let unset = p.outcome.is_none();
            if unset {
                p.outcome = Some(Err("the fetch stopped".into()));
            }
            unset
        });
    }
}

impl Cache {
    /// The size of a blob the upstream has, asked without fetching it (or
    /// known from a fetch for the same repository).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64, ProxyError> {
        if let Some(f) = self.fetches.lock().unwrap().get(digest) {
            if f.repo == *repo {
                return Ok(f.size);
            }
        }
        self.upstream_has(repo, digest).await
    }

    /// Whether the upstream has the blob under this repository's name (its
    /// size): asked every time, so that content the store holds for other
    /// repositories is only served where the upstream serves it too.
    pub async fn upstream_has(&self, repo: &RepoName, digest: &Digest) -> Result<u64, ProxyError> {
        let resp = self
            .follow(
                Method::HEAD,
                &format!("/v2/{}/blobs/{digest}", self.remote(repo)),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => client::header(&resp, "content-length")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| self.unavailable("it gave no Content-Length for a blob", None)),
            StatusCode::NOT_FOUND => Err(ProxyError::NotFound(format!("blob {repo}@{digest}"))),
            s => Err(self.unavailable(format!("it answered {s} for blob {digest}"), None)),
        }
    }

    /// A request for a blob, following a redirect (Docker Hub sends blobs
    /// from a CDN, without the registry's credentials).
    async fn follow(
        &self,
        method: Method,
        path: &str,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let (conn, resp) = self.ask(method.clone(), path, None).await?;
        if !resp.status().is_redirection() {
            if method == Method::HEAD {
                self.give_back(conn);
            }
            return Ok(resp);
        }
        let location = client::header(&resp, "location")
            .ok_or_else(|| self.unavailable("a redirect without a Location", None))?
            .to_string();
        let (target, path) = self.redirect(&location)?;
        Conn::new(target)
            .send(method, &path, &[], Frames::empty())
            .await
            .map_err(|e| self.unavailable(format!("{e:#}"), None))
    }

    /// Where a redirect leads: its host's target (made once per host: it
    /// reads the CA bundle), and the path. No credentials go there.
    fn redirect(&self, location: &str) -> Result<(Arc<Target>, String), ProxyError> {
        let base_end = location
            .find("://")
            .and_then(|i| location[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(location.len());
        let base = &location[..base_end];
        if let Some(t) = self.redirects.get(base) {
            let path = &location[base_end..];
            return Ok((
                t.clone(),
                if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
            ));
        }
        let (target, path) = self
            .upstream
            .redirect(location)
            .map_err(|e| self.unavailable(format!("{e:#}"), None))?;
        if self.redirects.len() < 64 {
            self.redirects.insert(base.to_string(), target.clone());
        }
        Ok((target, path))
    }

    /// The blob's GET from the upstream, with its size.
    async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(u64, http::Response<Incoming>), ProxyError> {
        let resp = self
            .follow(
                Method::GET,
                &format!("/v2/{}/blobs/{digest}", self.remote(repo)),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(ProxyError::NotFound(format!("blob {repo}@{digest}")))
            }
            s => return Err(self.unavailable(format!("it answered {s} for blob {digest}"), None)),
        }
        let size = client::header(&resp, "content-length")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.unavailable("it gave no Content-Length for a blob", None))?;
        Ok((size, resp))
    }

    /// The fetch of `digest` for `repo`: the one in flight, or a new one;
    /// `None` if the store has the blob by now (a fetch just ended, or it
    /// was stored for another repository) and the upstream has it for
    /// `repo` too.
    pub async fn fetch(
        self: &Arc<Self>,
        store: &Arc<Store>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Arc<Fetch>>, ProxyError> {
        // One request at a time decides, per digest: the others then join
        // its fetch, find the blob stored, or share its failure.
        let asked = Instant::now();
        let lock = self.lock(format!("blob {digest}"));
        let _one = lock.lock().await;
        if let Some(failed) = self.failure_since(digest, asked) {
            return Err(failed);
        }
        let running = self.fetches.lock().unwrap().get(digest).cloned();
        if let Some(f) = running {
            if f.repo != *repo {
                self.upstream_has(repo, digest).await?;
            }
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(f));
        }
        let (s, d) = (store.clone(), digest.clone());
        let stored = blocking(move || s.blob_size(&d)).await?;
        if stored.is_some() {
            self.upstream_has(repo, digest).await?;
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let (size, resp) = match self.get_blob(repo, digest).await {
            Ok(r) => r,
            Err(e) => {
                self.remember_failure(digest, &e);
                return Err(e);
            }
        };
        let file = self.spool_file().await?;
        let (tx, rx) = watch::channel(Progress::default());
        let fetch = Arc::new(Fetch {
            size,
            repo: repo.clone(),
            file: file.clone(),
            progress: rx,
        });
        self.fetches
            .lock()
            .unwrap()
            .insert(digest.clone(), fetch.clone());
        let running = Running {
            cache: self.clone(),
            digest: digest.clone(),
            tx,
        };
        let (store, repo, digest) = (store.clone(), repo.clone(), digest.clone());
        tokio::spawn(async move {
            let cache = running.cache.clone();
            let mut tee = Tee {
                body: resp.into_body(),
                file,
                pending: Vec::new(),
                pending_len: 0,
                written: 0,
                tx: &running.tx,
                cache: &cache,
            };
            let outcome = store_blob(&store, &repo, &digest, &mut tee).await;
            if let Err(e) = &outcome {
                tracing::warn!(repository = %repo, %digest, upstream = %cache.url, error = %e, "blob not cached");
            }
            // Out of the map first: a request from now on finds the blob
            // stored, or starts afresh; never joins what ended.
            cache.fetches.lock().unwrap().remove(&digest);
            running.tx.send_modify(|p| p.outcome = Some(outcome));
        });
        Ok(Some(fetch))
    }

    /// A spool file: created in the cache's own directory, then unlinked at
    /// once, so nothing is left behind and nobody can open it by name.
    async fn spool_file(&self) -> Result<Arc<std::fs::File>, ProxyError> {
        let path = self.spool.join(format!("{:016x}", rand::random::<u64>()));
        let file = blocking(move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            Ok(f)
        })
        .await?;
        Ok(Arc::new(file))
    }
}

/// The upload of what `tee` brings; the store checks the digest.
async fn store_blob(
    store: &Arc<Store>,
    repo: &RepoName,
    digest: &Digest,
    tee: &mut Tee<'_>,
) -> Result<(), String> {
    let (s, r) = (store.clone(), repo.clone());
    let id = blocking(move || s.create_upload(&r))
        .await
        .map_err(|e| e.to_string())?;
    match store
        .complete_upload(repo, &id, digest, None, Some(tee))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = store.cancel_upload(repo, &id).await;
            Err(match e {
                StorageError::DigestMismatch { actual, .. } => {
                    format!("the upstream sent content whose digest is {actual}")
                }
                e => e.to_string(),
            })
        }
    }
}

/// The upstream's body, on its way into the store and the spool file.
struct Tee<'a> {
    body: Incoming,
    file: Arc<std::fs::File>,
    /// Received, not yet in the spool: written a few hundred KiB at a time
    /// (one job on the blocking pool each, not one per frame).
    pending: Vec<Bytes>,
    pending_len: usize,
    written: u64,
    tx: &'a watch::Sender<Progress>,
    cache: &'a Cache,
}

/// How much is gathered before a write to the spool.
const SPOOL_WRITE: usize = 512 << 10;

impl Tee<'_> {
    /// Write what is pending to the spool, then tell the readers.
    async fn spill(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (file, chunks) = (self.file.clone(), std::mem::take(&mut self.pending));
        let at = self.written;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut at = at;
            for c in &chunks {
                file.write_all_at(c, at)?;
                at += c.len() as u64;
            }
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(io::Error::other)??;
        self.written += self.pending_len as u64;
        self.pending_len = 0;
        let written = self.written;
        self.tx.send_modify(|p| p.written = written);
        Ok(())
    }
}

impl ByteSource for Tee<'_> {
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(STALL, self.body.frame()).await {
                Err(_) => {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upstream stopped sending",
                    )))
                }
                Ok(None) => {
                    return match self.spill().await {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    }
                }
                Ok(Some(Err(e))) => return Some(Err(io::Error::other(e))),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.cache
                .stats
                .upstream_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.pending_len += data.len();
            self.pending.push(data.clone());
            if self.pending_len >= SPOOL_WRITE {
                if let Err(e) = self.spill().await {
                    return Some(Err(e));
                }
            }
            return Some(Ok(data));
        }
    }
}

impl Fetch {
    /// Bytes `start..end` of the blob, as they arrive; the last byte of the
    /// blob only once the store has checked the digest.
    pub fn read(
        self: Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let rx = self.progress.clone();
        futures_util::stream::unfold(
            (self, rx, start, false),
            move |(fetch, mut rx, pos, failed)| async move {
                if failed || pos >= end {
                    return None;
                }
                loop {
                    let p = rx.borrow_and_update().clone();
                    let available = match &p.outcome {
                        Some(Err(why)) => {
                            let e = io::Error::other(format!(
                                "the upstream's blob was not stored: {why}"
                            ));
                            return Some((Err(e), (fetch, rx, pos, true)));
                        }
                        Some(Ok(())) => fetch.size,
                        None => p.written.min(fetch.size.saturating_sub(1)),
                    };
                    let until = available.min(end);
                    if until > pos {
                        let n = (until - pos).min(READ);
                        let f = fetch.file.clone();
                        let read = tokio::task::spawn_blocking(move || {
                            use std::os::unix::fs::FileExt;
                            let mut buf = vec![0u8; n as usize];
                            f.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                        })
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e)));
                        return Some(match read {
                            Ok(b) => (Ok(b), (fetch, rx, pos + n, false)),
                            Err(e) => (Err(e), (fetch, rx, pos, true)),
                        });
                    }
                    if rx.changed().await.is_err() {
                        let e = io::Error::other("the fetch from the upstream ended");
                        return Some((Err(e), (fetch, rx, pos, true)));
                    }
                }
            },
        )
    }
}
