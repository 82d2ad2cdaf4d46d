//! A pull-through cache (`proxy`): what clients ask for and the store lacks
//! is fetched from the upstream registry, stored, and served.
//!
//! - A manifest by tag asks the upstream which digest the tag names (a HEAD),
//!   unless the tag was confirmed within `ttl`; by digest, it is fetched
//!   once and never asked about again. Every manifest is checked against
//!   its digest before it is stored.
//! - A missing blob is fetched once, however many clients ask at the same
//!   time (`fetch`): the bytes go into the store through an ordinary upload,
//!   which checks the digest before anything is kept, and into a spool file
//!   from which every waiting client reads as it grows. The last byte is
//!   held back until the digest is checked, so a corrupt upstream answer
//!   ends every client's download short instead of completing it.
//! - When the upstream is down, slow or refuses, what is cached is served
//!   (tags included, with a log line); what is not is 503 with the reason.

mod fetch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::{Method, StatusCode};

pub use self::fetch::Fetch;
use crate::client::{self, Conn, Frames, Target};
use crate::config::ProxyConfig;
use crate::oci::media::ManifestKind;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::prometheus;
use crate::storage::{StorageError, Store};

/// Why the cache cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the upstream has no {0}")]
    NotFound(String),
    #[error("the upstream {upstream} is unavailable: {why}")]
    Unavailable {
        upstream: String,
        why: String,
        /// The upstream's `Retry-After`, passed on.
        retry_after: Option<String>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A failure, kept to be shared.
#[derive(Clone, Debug)]
enum Failure {
    NotFound(String),
    Unavailable {
        why: String,
        retry_after: Option<String>,
    },
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub coalesced: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub stale_served: AtomicU64,
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

pub struct Cache {
    /// The repositories it serves start with this; upstream, without it.
    prefix: String,
    upstream: Arc<Target>,
    url: String,
    ttl: Duration,
    pool: Mutex<Vec<Conn>>,
    /// When each tag was last confirmed with the upstream.
    confirmed: DashMap<(RepoName, Tag), Instant>,
    /// One manifest fetch at a time per repository and reference.
    manifest_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Blob fetches in flight, by digest.
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    spool: PathBuf,
    /// Until when the upstream asked not to be asked (`Retry-After`).
    quiet_until: Mutex<Option<Instant>>,
    /// The upstream's last failure per tag or blob, for the requests that
    /// waited for the same answer (they share it instead of asking again).
    failures: DashMap<String, (Instant, Failure)>,
    /// Upstream hosts a blob was redirected to (a CDN), set up once.
    redirects: DashMap<String, Arc<Target>>,
    /// When each manifest's pull was last written down (`note_pulled`).
    pulled: DashMap<(RepoName, Digest), Instant>,
    pub stats: Stats,
}

/// A pull is written down at most this often per manifest.
const PULL_NOTE: Duration = Duration::from_secs(3600);
/// The longest pause an upstream's `Retry-After` imposes.
const MAX_QUIET: Duration = Duration::from_secs(300);
/// How long a tag's check may take when the store has the tag: past it,
/// the cached tag is served (a slow upstream slows no pull by more).
const TAG_CHECK: Duration = Duration::from_secs(5);

/// Every manifest type clients push, in one `Accept`.
fn accept_all() -> String {
    [
        ManifestKind::OciIndex,
        ManifestKind::OciManifest,
        ManifestKind::DockerManifestList,
        ManifestKind::DockerManifest,
    ]
    .map(ManifestKind::media_type)
    .join(", ")
}

impl Cache {
    pub fn new(config: &ProxyConfig) -> anyhow::Result<Cache> {
        let credentials = config.username.clone().zip(config.password.clone());
        let upstream = Target::new(&config.remoteurl, credentials, None)?;
        // A directory of its own, that nobody else can enter.
        let spool = std::env::temp_dir().join(format!(
            "registry-proxy-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&spool)?;
        }
        Ok(Cache {
            prefix: config.prefix.clone(),
            upstream: Arc::new(upstream),
            url: config.remoteurl.clone(),
            ttl: config.ttl,
            pool: Mutex::new(Vec::new()),
            confirmed: DashMap::new(),
            manifest_locks: DashMap::new(),
            fetches: Mutex::new(HashMap::new()),
            spool,
            quiet_until: Mutex::new(None),
            failures: DashMap::new(),
            redirects: DashMap::new(),
            pulled: DashMap::new(),
            stats: Stats::default(),
        })
    }

    /// The upstream's URL, for messages.
    pub fn upstream(&self) -> &str {
        &self.url
    }

    /// Keep `e` a moment for the requests waiting on `key`.
    fn remember_failure(&self, key: impl ToString, e: &ProxyError) {
        let f = match e {
            ProxyError::NotFound(what) => Failure::NotFound(what.clone()),
            ProxyError::Unavailable {
                why, retry_after, ..
            } => Failure::Unavailable {
                why: why.clone(),
                retry_after: retry_after.clone(),
            },
            ProxyError::Storage(_) => return,
        };
        if self.failures.len() > 10_000 {
            self.failures
                .retain(|_, (at, _)| at.elapsed() < Duration::from_secs(60));
        }
        self.failures.insert(key.to_string(), (Instant::now(), f));
    }

    /// The failure on `key` that came after `since`, if one did.
    fn failure_since(&self, key: impl ToString, since: Instant) -> Option<ProxyError> {
        let entry = self.failures.get(&key.to_string())?;
        let (at, f) = entry.value();
        (*at >= since).then(|| match f.clone() {
            Failure::NotFound(what) => ProxyError::NotFound(what),
            Failure::Unavailable { why, retry_after } => ProxyError::Unavailable {
                upstream: self.url.clone(),
                why,
                retry_after,
            },
        })
    }

    /// The name the upstream knows `repo` by.
    fn remote<'r>(&self, repo: &'r RepoName) -> &'r str {
        repo.as_str()
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(repo.as_str())
    }

    /// A connection to the upstream, and whether it was kept from before.
    fn conn(&self) -> (Conn, bool) {
        match self.pool.lock().unwrap().pop() {
            Some(c) => (c, true),
            None => (Conn::new(self.upstream.clone()), false),
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < 16 {
            pool.push(conn);
        }
    }

    fn unavailable(&self, why: impl std::fmt::Display, retry_after: Option<String>) -> ProxyError {
        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        ProxyError::Unavailable {
            upstream: self.url.clone(),
            why: why.to_string(),
            retry_after,
        }
    }

    /// One request to the upstream; a status it cannot be asked again
    /// about (5xx, 429, 401, 403) is an error with the reason. The
    /// connection comes back with the answer: it goes back to the pool
    /// (`give_back`) once the answer's body is read, never before, so that
    /// no request waits behind another's blob.
    async fn ask(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<(Conn, http::Response<hyper::body::Incoming>), ProxyError> {
        // An upstream that said when to come back is not asked before.
        if let Some(until) = *self.quiet_until.lock().unwrap() {
            if let Some(left) = until.checked_duration_since(Instant::now()) {
                return Err(self.unavailable(
                    "it asked for a pause (Retry-After)",
                    Some(left.as_secs().max(1).to_string()),
                ));
            }
        }
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (mut conn, pooled) = self.conn();
        let resp = match conn
            .send(method.clone(), path, &headers, Frames::empty())
            .await
        {
            Ok(r) => r,
            // A kept connection the upstream has closed meanwhile: once
            // more on a new one.
            Err(_) if pooled => {
                conn = Conn::new(self.upstream.clone());
                conn.send(method, path, &headers, Frames::empty())
                    .await
                    .map_err(|e| self.unavailable(format!("{e:#}"), None))?
            }
            Err(e) => return Err(self.unavailable(format!("{e:#}"), None)),
        };
        let status = resp.status();
        if let Some(secs) = client::header(&resp, "retry-after")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|_| {
                status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            })
        {
            *self.quiet_until.lock().unwrap() =
                Some(Instant::now() + Duration::from_secs(secs.min(MAX_QUIET.as_secs())));
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
        {
            let retry_after = client::header(&resp, "retry-after").map(str::to_string);
            let text = client::read_text(resp).await.unwrap_or_default();
            let why = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    format!("it refused the configured credentials ({status})")
                }
                _ => format!("it answered {status}"),
            };
            let detail: String = text.chars().take(200).collect();
            return Err(self.unavailable(format!("{why}: {detail}"), retry_after));
        }
        Ok((conn, resp))
    }

    /// Make sure the store holds what `reference` names in `repo`, fresh
    /// from the upstream as far as the upstream can be asked.
    pub async fn ensure_manifest(
        &self,
        store: &Arc<Store>,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), ProxyError> {
        match reference {
            Reference::Digest(d) => self.ensure_manifest_digest(store, repo, d).await,
            Reference::Tag(t) => self.ensure_tag(store, repo, t).await,
        }
    }

    fn lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        if self.manifest_locks.len() > 10_000 {
            self.manifest_locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        self.manifest_locks.entry(key).or_default().clone()
    }

    async fn local(
        store: &Arc<Store>,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Digest>, ProxyError> {
        let (s, r, reff) = (store.clone(), repo.clone(), reference.clone());
        match blocking(move || s.resolve(&r, &reff)).await {
            Ok(d) => Ok(Some(d)),
            Err(StorageError::ManifestUnknown(_) | StorageError::NameUnknown) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_manifest_digest(
        &self,
        store: &Arc<Store>,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(), ProxyError> {
        let reference = Reference::Digest(d.clone());
        if Self::local(store, repo, &reference).await?.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let lock = self.lock(format!("{repo}@{d}"));
        let _one = lock.lock().await;
        if Self::local(store, repo, &reference).await?.is_some() {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let (bytes, content_type) = self.fetch_manifest(repo, d).await?;
        self.store_manifest(store, repo, reference, bytes, content_type)
            .await
    }

    /// GET a manifest by digest from the upstream, checked against it.
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<(Bytes, Option<String>), ProxyError> {
        let (conn, resp) = self
            .ask(
                Method::GET,
                &format!("/v2/{}/manifests/{d}", self.remote(repo)),
                Some(&accept_all()),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(ProxyError::NotFound(format!("manifest {repo}@{d}")))
            }
            s => {
                return Err(
                    self.unavailable(format!("it answered {s} for manifest {repo}@{d}"), None)
                )
            }
        }
        let content_type = client::header(&resp, "content-type").map(str::to_string);
        let bytes = client::collect(resp)
            .await
            .map_err(|e| self.unavailable(format!("{e:#}"), None))?;
        self.give_back(conn);
        self.stats
            .upstream_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if Digest::of(d.algorithm(), &bytes) != *d {
            return Err(self.unavailable(
                format!("it sent a manifest for {repo}@{d} that does not match that digest"),
                None,
            ));
        }
        Ok((bytes, content_type))
    }

    async fn store_manifest(
        &self,
        store: &Arc<Store>,
        repo: &RepoName,
        reference: Reference,
        bytes: Bytes,
        content_type: Option<String>,
    ) -> Result<(), ProxyError> {
        let (s, r) = (store.clone(), repo.clone());
        blocking(move || s.put_cached_manifest(&r, &reference, &bytes, content_type.as_deref()))
            .await?;
        Ok(())
    }

    async fn ensure_tag(
        &self,
        store: &Arc<Store>,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), ProxyError> {
        let key = (repo.clone(), tag.clone());
        let reference = Reference::Tag(tag.clone());
        let fresh = self
            .confirmed
            .get(&key)
            .is_some_and(|at| at.elapsed() < self.ttl);
        let cached = Self::local(store, repo, &reference).await?;
        if fresh && cached.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let asked = Instant::now();
        let name = format!("{repo}:{tag}");
        let lock = self.lock(name.clone());
        // With a cached copy, no pull waits longer than one check may take,
        // however many wait before it.
        let _one = match cached {
            Some(_) => match tokio::time::timeout(TAG_CHECK, lock.lock()).await {
                Ok(guard) => guard,
                Err(_) => return self.stale(repo, tag, "another check of this tag is slow"),
            },
            None => lock.lock().await,
        };
        let local = Self::local(store, repo, &reference).await?;
        if local.is_some() && self.confirmed.get(&key).is_some_and(|at| *at >= asked) {
            // Another request confirmed it while this one waited.
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(failed) = self.failure_since(&name, asked) {
            // Another request found the upstream failing meanwhile.
            return match local {
                Some(_) => self.stale(repo, tag, &failed.to_string()),
                None => Err(failed),
            };
        }
        let refresh = self.refresh_tag(store, repo, tag, local.as_ref());
        let result = match local {
            Some(_) => tokio::time::timeout(TAG_CHECK, refresh)
                .await
                .unwrap_or_else(|_| {
                    Err(self.unavailable(format!("no answer within {TAG_CHECK:?}"), None))
                }),
            None => refresh.await,
        };
        match result {
            Ok(()) => {
                if self.confirmed.len() > 10_000 {
                    let ttl = self.ttl;
                    self.confirmed.retain(|_, at| at.elapsed() < ttl);
                }
                self.confirmed.insert(key, Instant::now());
                Ok(())
            }
            Err(ProxyError::Storage(e)) => Err(e.into()),
            Err(e) => {
                self.remember_failure(&name, &e);
                match local {
                    Some(_) => self.stale(repo, tag, &e.to_string()),
                    None => Err(e),
                }
            }
        }
    }

    /// Serve the cached tag, saying why.
    fn stale(&self, repo: &RepoName, tag: &Tag, why: &str) -> Result<(), ProxyError> {
        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(repository = %repo, tag = %tag, upstream = %self.url, reason = %why, "upstream unavailable: serving the cached tag");
        Ok(())
    }

    /// Ask the upstream what `tag` names, and store it if it is new here.
    async fn refresh_tag(
        &self,
        store: &Arc<Store>,
        repo: &RepoName,
        tag: &Tag,
        local: Option<&Digest>,
    ) -> Result<(), ProxyError> {
        let Some(digest) = self.tag_digest(repo, tag).await? else {
            return Err(ProxyError::NotFound(format!("manifest {repo}:{tag}")));
        };
        if local == Some(&digest) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let by_digest = Reference::Digest(digest.clone());
        let (bytes, content_type) = match Self::local(store, repo, &by_digest).await? {
            // The content is here already: only the tag moves.
            Some(_) => {
                let (s, r, b) = (store.clone(), repo.clone(), by_digest.clone());
                let m = blocking(move || s.get_manifest(&r, &b)).await?;
                (m.bytes, Some(m.media_type.to_string()))
            }
            None => self.fetch_manifest(repo, &digest).await?,
        };
        self.store_manifest(
            store,
            repo,
            Reference::Tag(tag.clone()),
            bytes,
            content_type,
        )
        .await
    }

    /// The upstream's tags of `repo` (`query`: its `n` and `last`, passed
    /// on), named by the local name; with whether more follow.
    pub async fn tags(
        &self,
        repo: &RepoName,
        query: &str,
    ) -> Result<(Vec<String>, bool), ProxyError> {
        let mut path = format!("/v2/{}/tags/list", self.remote(repo));
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let (conn, resp) = self.ask(Method::GET, &path, None).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(ProxyError::NotFound(format!("repository {repo}")))
            }
            s => {
                return Err(
                    self.unavailable(format!("it answered {s} for the tags of {repo}"), None)
                )
            }
        }
        let more = client::header(&resp, "link").is_some_and(|l| l.contains("rel=\"next\""));
        let bytes = client::collect(resp)
            .await
            .map_err(|e| self.unavailable(format!("{e:#}"), None))?;
        self.give_back(conn);
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&bytes)
            .map_err(|e| self.unavailable(format!("its tag list is not JSON: {e}"), None))?;
        Ok((list.tags.unwrap_or_default(), more))
    }

    /// Write down that `digest` was pulled from `repo` (at most hourly per
    /// manifest, in the background), so that `registry-gc --cache-unused`
    /// keeps what is in use.
    pub fn note_pulled(&self, store: &Arc<Store>, repo: &RepoName, digest: &Digest) {
        let key = (repo.clone(), digest.clone());
        if self
            .pulled
            .get(&key)
            .is_some_and(|at| at.elapsed() < PULL_NOTE)
        {
            return;
        }
        if self.pulled.len() > 100_000 {
            self.pulled.retain(|_, at| at.elapsed() < PULL_NOTE);
        }
        self.pulled.insert(key, Instant::now());
        let (s, r, d) = (store.clone(), repo.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = s.note_pulled(&r, &d) {
                tracing::warn!(repository = %r, digest = %d, error = %e, "cannot note a pull");
            }
        });
    }

    /// The digest `tag` names upstream; `None` if the upstream has no such
    /// tag. A HEAD, and a GET when the HEAD names no digest.
    async fn tag_digest(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, ProxyError> {
        let path = format!("/v2/{}/manifests/{tag}", self.remote(repo));
        let accept = accept_all();
        let (conn, resp) = self.ask(Method::HEAD, &path, Some(&accept)).await?;
        self.give_back(conn);
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::OK => {}
            s => return Err(self.unavailable(format!("it answered {s} for {repo}:{tag}"), None)),
        }
        if let Some(d) = client::header(&resp, "docker-content-digest").and_then(|d| d.parse().ok())
        {
            return Ok(Some(d));
        }
        let (conn, resp) = self.ask(Method::GET, &path, Some(&accept)).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.unavailable(format!("it answered {s} for {repo}:{tag}"), None)),
        }
        let bytes = client::collect(resp)
            .await
            .map_err(|e| self.unavailable(format!("{e:#}"), None))?;
        self.give_back(conn);
        Ok(Some(Digest::sha256(&bytes)))
    }
}

/// The caches of a registry, each serving the repositories under its
/// prefix (the longest that matches).
#[derive(Default)]
pub struct Caches {
    list: Vec<Arc<Cache>>,
}

impl Caches {
    pub fn new(configs: &[ProxyConfig]) -> anyhow::Result<Caches> {
        let mut list = configs
            .iter()
            .map(|c| Cache::new(c).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        list.sort_by_key(|c| std::cmp::Reverse(c.prefix.len()));
        Ok(Caches { list })
    }

    /// The cache that serves `repo`, if one does.
    pub fn for_repo(&self, repo: &RepoName) -> Option<&Arc<Cache>> {
        self.list
            .iter()
            .find(|c| repo.as_str().starts_with(c.prefix.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Prometheus text of every cache's counters, by prefix.
    pub fn render_metrics(&self, out: &mut String) {
        if self.list.is_empty() {
            return;
        }
        type Counter = fn(&Stats) -> &AtomicU64;
        let series: [(&str, &str, Counter); 6] = [
            (
                "registry_proxy_hits_total",
                "Requests the cache answered without fetching.",
                |s| &s.hits,
            ),
            (
                "registry_proxy_misses_total",
                "Manifests and blobs fetched from the upstream.",
                |s| &s.misses,
            ),
            (
                "registry_proxy_upstream_bytes_total",
                "Bytes of manifests and blobs received from the upstream.",
                |s| &s.upstream_bytes,
            ),
            (
                "registry_proxy_coalesced_total",
                "Requests that waited for a fetch another request started.",
                |s| &s.coalesced,
            ),
            (
                "registry_proxy_upstream_errors_total",
                "Upstream requests that failed or were refused.",
                |s| &s.upstream_errors,
            ),
            (
                "registry_proxy_stale_served_total",
                "Cached tags served because the upstream could not be asked.",
                |s| &s.stale_served,
            ),
        ];
        for (name, help, counter) in series {
            let rows: Vec<(String, u64)> = self
                .list
                .iter()
                .map(|c| {
                    let labels = format!(
                        "prefix=\"{}\",upstream=\"{}\"",
                        prometheus::label(&c.prefix),
                        prometheus::label(&c.url)
                    );
                    (labels, counter(&c.stats).load(Ordering::Relaxed))
                })
                .collect();
            prometheus::family(out, name, "counter", help, &rows);
        }
    }
}

/// Blocking store or file work, off the async threads; a task that could
/// not finish is an unavailable store.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Unavailable(format!(
            "storage task failed: {e}"
        )))
    })
}
