//! The store: blobs, repositories (links and tags), upload sessions and the
//! in-memory listing index, in CNCF Distribution's layout, on a file
//! system or in an S3-compatible bucket (`backend`, the seam between the
//! two).
//!
//! The store knows nothing of HTTP. Its methods are blocking (they touch the
//! file system or wait for the object store) except the upload paths, which
//! consume a body as it streams; the server calls the blocking ones from
//! `spawn_blocking`.
//!
//! Invariants kept here:
//! - every object at a final path is complete: on a file system writes go to
//!   `_tmp` (or the upload's own file), are verified and fsynced, then
//!   renamed into place; in a bucket an object appears whole or not at all;
//! - a tag is written after the manifest it names, and a manifest after the
//!   blobs it references were checked, so nothing points at what is missing;
//! - the listing index changes only after the disk did.

mod audit;
pub mod backend;
mod blobs;
mod buffers;
mod cache;
pub mod changes;
mod error;
pub mod in_use;
mod index;
pub mod layout;
mod manifests;
pub mod purge;
pub mod reader;
mod referrers;
mod uploads;
#[cfg(feature = "io-uring")]
mod uring;
mod writer;

use std::path::Path;
use std::sync::Arc;

use self::backend::fs::Filesystem;
use self::backend::Backend;

use dashmap::DashMap;

use crate::oci::media::ManifestKind;
use crate::oci::{Digest, RepoName};

pub use blobs::{BlobContent, OpenBlob};
pub use buffers::DEFAULT_BUDGET as DEFAULT_UPLOAD_MEMORY;
pub use error::StorageError;
pub use index::Index;
pub use layout::{Layout, UploadId};
pub use manifests::{ManifestPut, StoredManifest};
pub use purge::PurgeReport;
pub use uploads::{discard_session, ByteSource, UploadStatus};
pub use writer::WriteMode;

/// The index from the layout: directory by directory on a file system (the
/// walk skips what repositories hold besides their tags), in one paged
/// listing in a bucket.
fn build_index(backend: &Backend, layout: &Layout) -> Result<Index, StorageError> {
    match backend {
        Backend::Filesystem(_) => Index::build(backend.objects(), layout),
        Backend::S3(_) => Index::build_by_walk(backend.objects(), layout),
    }
}

/// The first build of a server's index, on its own thread: tried until it
/// succeeds (a bucket may be unreachable at start), then installed, the
/// repositories changed meanwhile read again under their locks, and the
/// index marked complete.
fn build_in_background(store: std::sync::Weak<Store>) {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        let Some(s) = store.upgrade() else {
            return;
        };
        match build_index(&s.backend, &s.layout) {
            Ok(fresh) => {
                for repo in s.index.install(fresh) {
                    let _repo = s.lock_repo(&repo);
                    if let Err(e) = s.index.refresh_repo(s.backend.objects(), &s.layout, &repo) {
                        // Read again at the next full rebuild.
                        tracing::warn!("index: cannot read {repo} again: {e}");
                        s.rebuild_owed
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                s.index.mark_complete();
                tracing::info!(
                    repositories = s.index.repo_count(),
                    seconds = started.elapsed().as_secs_f64(),
                    "index of repositories built"
                );
                return;
            }
            Err(e) => {
                tracing::warn!("index: cannot build it yet ({e}); trying again");
                drop(s);
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

/// Memory for manifest bytes (see `cache`): some thousands of manifests.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

/// What the store may do, from `storage.*` in the config.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub delete_enabled: bool,
    pub readonly: bool,
    pub write_mode: WriteMode,
    /// Bytes of upload buffers in all, on a file system (0: the default).
    pub upload_memory: usize,
    /// Open at once and build the index on a thread of its own (a server,
    /// which must answer right after a start); otherwise `open` returns
    /// with the index complete.
    pub index_in_background: bool,
}

/// One registry store, on a file system or in a bucket.
pub struct Store {
    layout: Layout,
    backend: Backend,
    options: StoreOptions,
    index: Index,
    /// Kinds of manifests read or written, to answer GET without parsing.
    manifest_kinds: DashMap<Digest, ManifestKind>,
    /// Bytes of manifests read or written (content-addressed: never stale).
    manifest_bytes: cache::ManifestBytes,
    /// In a bucket, sizes of blobs seen (content-addressed; see `blobs`).
    object_sizes: DashMap<Digest, u64>,
    uploads: uploads::Sessions,
    referrers: referrers::Cache,
    /// Notes of change to and from other processes on the same store.
    journal: changes::Journal,
    /// One catch-up at a time (see `catch_up_since`).
    catching_up: std::sync::Mutex<()>,
    /// A catch-up failed part way: the next one rebuilds the index.
    rebuild_owed: std::sync::atomic::AtomicBool,
    /// One lock per repository, held by manifest puts and by every delete,
    /// so that a delete's view of the tags (from the index) cannot be
    /// overtaken by a put naming the same manifest, and a put's reference
    /// check cannot be overtaken by a blob delete.
    repo_locks: DashMap<RepoName, Arc<tokio::sync::Mutex<()>>>,
}

impl Store {
    /// Open (creating if needed) the store under the directory `root` and
    /// build the index.
    pub fn open(root: &Path, options: StoreOptions) -> Result<Arc<Store>, StorageError> {
        let layout = Layout::new(root);
        if !options.readonly {
            for dir in [
                layout.tmp_dir(),
                layout.blobs_dir(),
                layout.repositories_dir(),
            ] {
                std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            }
        }
        let backend = Backend::Filesystem(Filesystem::new(layout.tmp_dir()));
        Store::with_backend(layout, backend, options)
    }

    /// Open the store in a bucket, under its `rootdirectory`, and build the index.
    pub fn open_s3(
        config: &backend::s3::S3Config,
        options: StoreOptions,
    ) -> Result<Arc<Store>, StorageError> {
        let s3 = backend::s3::S3::connect(config)?;
        let layout = Layout::new(Path::new(&config.root_key()));
        Store::with_backend(layout, Backend::S3(s3), options)
    }

    fn with_backend(
        layout: Layout,
        backend: Backend,
        options: StoreOptions,
    ) -> Result<Arc<Store>, StorageError> {
        let journal = if options.readonly {
            changes::Journal::reader(&layout)
        } else {
            changes::Journal::new(&layout)
        };
        let background = options.index_in_background;
        let upload_memory = match options.upload_memory {
            0 => DEFAULT_UPLOAD_MEMORY,
            n => n,
        };
        let index = if background {
            Index::pending()
        } else {
            build_index(&backend, &layout)?
        };
        let store = Arc::new(Store {
            journal,
            catching_up: std::sync::Mutex::new(()),
            rebuild_owed: std::sync::atomic::AtomicBool::new(false),
            layout,
            backend,
            options,
            index,
            manifest_kinds: DashMap::new(),
            manifest_bytes: cache::ManifestBytes::new(MANIFEST_CACHE_BYTES),
            object_sizes: DashMap::new(),
            uploads: uploads::Sessions::new(upload_memory),
            referrers: referrers::Cache::default(),
            repo_locks: DashMap::new(),
        });
        if background {
            let weak = Arc::downgrade(&store);
            std::thread::Builder::new()
                .name("index".into())
                .spawn(move || build_in_background(weak))
                .map_err(|e| StorageError::io(Path::new("index"), e))?;
        }
        Ok(store)
    }

    /// Tell other processes on the same store that `repo` changed.
    fn changed(&self, repo: &RepoName) -> Result<(), StorageError> {
        self.journal.note(&self.backend, repo)
    }

    /// Catch up with what other processes changed (see `changes`): the
    /// repositories they noted are read anew. Blocking; the server calls it
    /// every `changes::POLL`.
    pub fn catch_up(&self) -> Result<usize, StorageError> {
        let _one = self.catching_up.lock().unwrap();
        let heard = self.journal.poll(&self.backend)?;
        self.apply(heard)
    }

    /// Catch up with every note written before `since` (a request's
    /// arrival), sharing a poll that began after it. In a bucket the
    /// listings call this first, so a repository or tag written through
    /// any node is listed at once by every other.
    pub fn catch_up_since(&self, since: std::time::Instant) -> Result<usize, StorageError> {
        // Poll and apply under one lock: a request that finds a poll begun
        // after it arrived also finds that poll's changes applied.
        let _one = self.catching_up.lock().unwrap();
        match self.journal.poll_since(&self.backend, since)? {
            Some(heard) => self.apply(heard),
            None => Ok(0),
        }
    }

    /// Whether listings should catch up before answering (see `catch_up_since`).
    pub fn listings_catch_up(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
    }

    /// Read again what notes named. A failure part way leaves a whole
    /// rebuild owed (the notes are heard once), done at the next poll.
    fn apply(&self, heard: changes::Heard) -> Result<usize, StorageError> {
        use std::sync::atomic::Ordering;
        if heard.rebuild || self.rebuild_owed.load(Ordering::Relaxed) {
            self.rebuild_owed.store(true, Ordering::Relaxed);
            self.index
                .replace_with(build_index(&self.backend, &self.layout)?);
            self.referrers.forget_all();
            self.rebuild_owed.store(false, Ordering::Relaxed);
            return Ok(heard.repos.len());
        }
        for repo in &heard.repos {
            // Under the repository's lock, so a tag this node writes at the
            // same moment is not overwritten by what was read before it.
            let _repo = self.lock_repo(repo);
            let refreshed = self
                .index
                .refresh_repo(self.backend.objects(), &self.layout, repo);
            if let Err(e) = refreshed {
                self.rebuild_owed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            self.referrers.forget(repo);
        }
        Ok(heard.repos.len())
    }

    /// Whether the storage answers: the root directory is there, or the
    /// bucket can be listed. (Blocking; for `/readyz`.)
    pub fn ready(&self) -> bool {
        match &self.backend {
            Backend::Filesystem(_) => self.layout.v2().is_dir(),
            Backend::S3(_) => self.backend.objects().list(self.layout.v2()).is_ok(),
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Hold the repository's lock (see `repo_locks`) until the guard drops.
    /// Blocking: callers run on the blocking pool, never on an async worker.
    fn lock_repo(&self, repo: &RepoName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.repo_locks.entry(repo.clone()).or_default().clone();
        lock.blocking_lock_owned()
    }

    fn write_mode(&self) -> WriteMode {
        self.options.write_mode
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.options.readonly {
            Err(StorageError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn check_delete(&self) -> Result<(), StorageError> {
        self.check_writable()?;
        if self.options.delete_enabled {
            Ok(())
        } else {
            Err(StorageError::DeleteDisabled)
        }
    }
}
