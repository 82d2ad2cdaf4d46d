//! A peer: a registry spoken to over HTTP, or a store on this machine read
//! through the storage library. Both answer the same questions: which
//! repositories and tags exist, what a manifest is, and a blob's bytes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use registry::oci::{Descriptor, Digest, Reference, RepoName};
use registry::storage::{BlobContent, StorageError, Store, StoreOptions};

use crate::content::{BlobStream, Feed, Fetched};
use crate::counters::Counters;
use crate::remote::Remote;

/// Frames a local blob is read in.
const READ_CHUNK: usize = 1 << 20;

/// A peer as one pass sees it: what it asks is counted into the pass's
/// `Counters` (`Peer::counted`).
#[derive(Clone)]
pub enum Peer {
    Remote(Remote),
    Local(Arc<LocalStore>, Arc<Counters>),
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
    pub fn local(store: LocalStore) -> Peer {
        Peer::Local(Arc::new(store), Arc::default())
    }

    /// The same peer, counting into `counters`.
    pub fn counted(&self, counters: Arc<Counters>) -> Peer {
        match self {
            Peer::Remote(r) => Peer::Remote(r.counted(counters)),
            Peer::Local(l, _) => Peer::Local(l.clone(), counters),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Peer::Remote(r) => r.url(),
            Peer::Local(l, _) => l.label(),
        }
    }

    /// The registry behind a target: a store on disk is a source only.
    pub fn remote(&self) -> anyhow::Result<&Remote> {
        match self {
            Peer::Remote(r) => Ok(r),
            Peer::Local(l, _) => bail!("{} is read only here", l.label()),
        }
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        match self {
            Peer::Remote(_) => Ok(()),
            Peer::Local(l, _) => l.refresh().await,
        }
    }

    pub async fn repositories(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Peer::Remote(r) => r.repositories().await,
            Peer::Local(l, _) => {
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
            Peer::Local(l, _) => {
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
            Peer::Local(..) => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
        }
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
        match self {
            Peer::Remote(r) => r.manifest(repo, reference).await,
            Peer::Local(l, _) => {
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
            Peer::Local(l, counters) => {
                let store = l.store();
                let (name, d, st) = (repo_name(repo)?, digest.clone(), store.clone());
                let blob = blocking(move || Ok(st.open_blob(&name, &d)?)).await?;
                let len = blob.size;
                if len != size {
                    bail!("{digest}: {len} bytes on disk, the manifest says {size}");
                }
                let (stream, feed) = BlobStream::channel(size - from);
                let (digest, counters) = (digest.clone(), counters.clone());
                match blob.content {
                    BlobContent::File(file, _) => {
                        tokio::task::spawn_blocking(move || {
                            read_into(file, from, &digest, &feed, &counters)
                        });
                    }
                    BlobContent::Object(d) => {
                        let object = store.read_object(&d, from, size - from).await?;
                        tokio::spawn(async move {
                            forward_object(object, from, &digest, &feed, &counters).await
                        });
                    }
                }
                Ok(stream)
            }
        }
    }

    pub async fn referrers(&self, repo: &str, digest: &Digest) -> anyhow::Result<Vec<Descriptor>> {
        match self {
            Peer::Remote(r) => r.referrers(repo, digest).await,
            Peer::Local(l, _) => {
                let store = l.store();
                let (name, d) = (repo_name(repo)?, digest.clone());
                blocking(move || Ok(store.referrers(&name, &d, None)?)).await
            }
        }
    }
}

/// Pass an object's bytes from byte `from` on into `feed`; read whole,
/// its digest is checked as it goes.
async fn forward_object(
    mut object: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
    from: u64,
    digest: &Digest,
    feed: &Feed,
    counters: &Counters,
) {
    use futures_util::StreamExt;
    let mut hasher = (from == 0).then(|| digest.algorithm().hasher());
    while let Some(piece) = object.next().await {
        let data = match piece {
            Ok(d) => d,
            Err(e) => {
                return feed
                    .fail(format!("reading {digest} from the bucket: {e}"))
                    .await
            }
        };
        counters
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(h) = hasher.as_mut() {
            h.update(&data);
        }
        if !feed.send(data).await {
            return;
        }
    }
    if let Some(got) = hasher.map(|h| h.finish()) {
        if got != *digest {
            feed.fail(format!(
                "the object in the bucket hashes to {got}, not {digest}"
            ))
            .await;
        }
    }
}

/// Read a local blob from byte `from` into `feed` in 1 MiB frames; read
/// whole, its digest is checked as it goes.
fn read_into(
    mut file: std::fs::File,
    from: u64,
    digest: &Digest,
    feed: &Feed,
    counters: &Counters,
) {
    use std::io::{Read, Seek};
    if let Err(e) = file.seek(std::io::SeekFrom::Start(from)) {
        return feed.blocking_fail(format!("reading {digest}: {e}"));
    }
    let mut hasher = (from == 0).then(|| digest.algorithm().hasher());
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf);
                }
                if !feed.blocking_send(Bytes::from(buf)) {
                    return;
                }
            }
            Err(e) => return feed.blocking_fail(format!("reading {digest}: {e}")),
        }
    }
    if let Some(got) = hasher.map(|h| h.finish()) {
        if got != *digest {
            feed.blocking_fail(format!("the file on disk hashes to {got}, not {digest}"));
        }
    }
}
