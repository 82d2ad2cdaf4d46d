//! Upload sessions: bytes that grow chunk by chunk, hashed as they pass,
//! and committed into the blob store once their digest checks.
//!
//! This module holds what both backends share: the sessions and their
//! locks, the order of chunks, and the outcome of a commit. Where the bytes
//! go is the backend's: `file` appends to the session's `data` file and
//! commits by rename; `object` sends them to a multipart upload in the
//! bucket and keeps the session's state there, so that any node can
//! continue it.
//!
//! Every request locks its session, so the requests of one upload on one
//! node run one at a time; clients send them one at a time anyway (each
//! needs the offset the last one reached).

mod file;
mod object;

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Mutex;

use super::backend::Backend;
use super::buffers::BufferPool;
use super::error::StorageError;
use super::layout::{Layout, UploadId};
use super::Store;
use crate::oci::{Digest, Hasher, RepoName};

/// A body being received: the storage layer's view of an HTTP request body.
pub trait ByteSource: Send {
    /// The next piece of the body; `None` at its end; an error if the
    /// client went away or broke the framing.
    fn next_chunk(&mut self) -> impl Future<Output = Option<io::Result<Bytes>>> + Send;
}

/// What a client may learn about an upload in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// Bytes received so far.
    pub size: u64,
}

struct Session {
    repo: RepoName,
    size: u64,
    /// Hash of the first `size` bytes; `None` when it must be rebuilt.
    hasher: Option<Hasher>,
    /// In a bucket: where the bytes so far are (read anew at every lock).
    object: Option<object::State>,
    /// In a bucket: the end of a PUT's body, not stored until the commit.
    pending: Vec<Bytes>,
    /// Set once the session is committed or cancelled.
    closed: bool,
}

impl Session {
    fn new(repo: &RepoName) -> Session {
        Session {
            repo: repo.clone(),
            size: 0,
            hasher: None,
            object: None,
            pending: Vec::new(),
            closed: false,
        }
    }

    /// A chunk must start where the data so far ends.
    fn check_start(&self, start: Option<u64>) -> Result<(), StorageError> {
        match start {
            Some(got) if got != self.size => Err(StorageError::ChunkOutOfOrder {
                have: self.size,
                got,
            }),
            _ => Ok(()),
        }
    }
}

pub(super) struct Sessions {
    map: DashMap<UploadId, Arc<Mutex<Session>>>,
    /// Buffers for the bytes of uploads on a file system.
    buffers: Arc<BufferPool>,
}

impl Sessions {
    pub(super) fn new(buffer_memory: usize) -> Sessions {
        Sessions {
            map: DashMap::new(),
            buffers: BufferPool::new(buffer_memory),
        }
    }
}

type Locked = tokio::sync::OwnedMutexGuard<Session>;

impl Store {
    /// Start an upload session in `repo`.
    pub fn create_upload(&self, repo: &RepoName) -> Result<UploadId, StorageError> {
        self.check_writable()?;
        let id = UploadId::random();
        let mut session = Session::new(repo);
        match &self.backend {
            Backend::Filesystem(_) => {
                file::create(&self.layout, repo, &id)?;
                session.hasher = Some(crate::oci::Algorithm::Sha256.hasher());
            }
            Backend::S3(_) => {
                // The start time is the session's mark in the bucket; its
                // state object appears with the first bytes.
                let started = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                self.backend.objects().write(
                    &self.layout.upload_started_at(repo, &id),
                    started.as_bytes(),
                )?;
            }
        }
        self.uploads
            .map
            .insert(id.clone(), Arc::new(Mutex::new(session)));
        Ok(id)
    }

    fn session(&self, repo: &RepoName, id: &UploadId) -> Arc<Mutex<Session>> {
        self.uploads
            .map
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Session::new(repo))))
            .clone()
    }

    /// Lock a session and make its state whole. On a file system, after a
    /// restart or a request that did not finish, the hash state is rebuilt
    /// from the file, so size and hash always describe exactly the bytes on
    /// disk; in a bucket, the state is read from the bucket every time,
    /// since another node may have added to it.
    async fn locked_session(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<Locked, StorageError> {
        let session = self.session(repo, id);
        let mut guard = session.lock_owned().await;
        if guard.closed || guard.repo != *repo {
            return Err(StorageError::UploadUnknown);
        }
        let loaded = match &self.backend {
            // Another process (a node on the same directory) may have added
            // to the file since: then the hash state is rebuilt.
            Backend::Filesystem(_) if file::current(self, &guard, id).await? => Ok(()),
            Backend::Filesystem(_) => file::load(self, &mut guard, id).await,
            Backend::S3(_) => object::load(self, &mut guard, id).await,
        };
        if let Err(e) = loaded {
            if matches!(e, StorageError::UploadUnknown) {
                // Cancelled, purged or committed meanwhile (here or elsewhere).
                self.close(&mut guard, id);
            }
            return Err(e);
        }
        Ok(guard)
    }

    fn close(&self, session: &mut Session, id: &UploadId) {
        session.closed = true;
        self.uploads.map.remove(id);
    }

    pub async fn upload_status(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<UploadStatus, StorageError> {
        let _forget = Forget { store: self, id };
        let s = self.locked_session(repo, id).await?;
        Ok(UploadStatus { size: s.size })
    }

    /// Append a chunk. `start`, from `Content-Range`, must equal the bytes
    /// received so far. Returns the new status.
    pub async fn append_upload(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: &mut impl ByteSource,
    ) -> Result<UploadStatus, StorageError> {
        self.check_writable()?;
        let _forget = Forget { store: self, id };
        let mut session = self.locked_session(repo, id).await?;
        session.check_start(start)?;
        self.receive(&mut session, id, body, false).await?;
        Ok(UploadStatus { size: session.size })
    }

    /// Append an optional last chunk, check the digest, and move the data
    /// into the blob store, linked into `repo`. On a digest mismatch the
    /// upload is removed.
    pub async fn complete_upload(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        start: Option<u64>,
        body: Option<&mut impl ByteSource>,
    ) -> Result<u64, StorageError> {
        self.check_writable()?;
        let _forget = Forget { store: self, id };
        let mut session = self.locked_session(repo, id).await?;
        session.check_start(start)?;
        if let Some(body) = body {
            self.receive(&mut session, id, body, true).await?;
        }
        let result = match &self.backend {
            Backend::Filesystem(_) => file::commit(self, &mut session, id, digest).await,
            Backend::S3(_) => object::commit(self, &mut session, id, digest).await,
        };
        match &result {
            Ok(_) => self.close(&mut session, id),
            Err(StorageError::DigestMismatch { .. }) => {
                // Content that can never become this digest: gone.
                let _ = self.discard(&mut session, id).await;
            }
            Err(_) => {}
        }
        result
    }

    /// Cancel an upload and remove its data.
    pub async fn cancel_upload(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<(), StorageError> {
        self.check_writable()?;
        let mut session = self.locked_session(repo, id).await?;
        self.discard(&mut session, id).await
    }

    /// Remove a session's data and forget it.
    async fn discard(
        self: &Arc<Self>,
        session: &mut Session,
        id: &UploadId,
    ) -> Result<(), StorageError> {
        let store = self.clone();
        let (repo, id2, state) = (session.repo.clone(), id.clone(), session.object.take());
        self.close(session, id);
        blocking(move || store.remove_session(&repo, &id2, state.as_ref())).await
    }

    /// Remove a session's directory (and, in a bucket, its multipart upload).
    fn remove_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
        state: Option<&object::State>,
    ) -> Result<(), StorageError> {
        remove(&self.backend, &self.layout, repo, id, state)
    }

    /// Stream `body` onto the end of the session's bytes. `last` says no
    /// chunk follows (a PUT), so nothing needs keeping for a next request.
    async fn receive(
        self: &Arc<Self>,
        session: &mut Session,
        id: &UploadId,
        body: &mut impl ByteSource,
        last: bool,
    ) -> Result<(), StorageError> {
        let received = match &self.backend {
            Backend::Filesystem(_) => file::receive(self, session, id, body).await,
            Backend::S3(_) => object::receive(self, session, id, body, last).await,
        };
        match (received, &self.backend) {
            (Ok(()), _) => Ok(()),
            // Everything received was kept: the session stays usable.
            (Err(e @ StorageError::ClientGone(_)), _) => Err(e),
            // In a bucket the state never names what is missing (a part or
            // piece is stored before the state names it): the session is as
            // its state says, and the next request reads it again. An object
            // store that failed for a moment must not cost the client its
            // upload.
            (Err(e), Backend::S3(_)) => {
                session.object = None;
                session.pending.clear();
                Err(e)
            }
            (Err(e), Backend::Filesystem(_)) => {
                // The disk failed, not the client: what the file holds is
                // unknown now, so drop it rather than keep a broken partial.
                let _ = self.discard(session, id).await;
                Err(e)
            }
        }
    }

    /// Link a committed blob into the repository and remove the session.
    fn finish_commit(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        size: u64,
    ) -> Result<u64, StorageError> {
        self.link_blob(repo, digest)?;
        match &self.backend {
            // The session's file became the blob; a session directory of
            // Distribution's shape is left to remove.
            Backend::Filesystem(_) => file::remove(&self.layout, repo, id)?,
            Backend::S3(_) => {
                // The start time first: a session half removed reads as
                // unknown, not as an empty upload a retried PUT would fail
                // against.
                let objects = self.backend.objects();
                objects.delete(&self.layout.upload_started_at(repo, id))?;
                objects.delete_dir(&self.layout.upload_dir(repo, id))?;
            }
        }
        Ok(size)
    }

    /// Remove an abandoned session (for `purge`), unless a request holds it
    /// right now. Returns whether it was removed.
    pub(super) fn purge_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<bool, StorageError> {
        let state = match &self.backend {
            Backend::S3(_) => object::read_state(self, repo, id)?,
            Backend::Filesystem(_) => None,
        };
        match self.uploads.map.get(id).map(|s| s.clone()) {
            Some(session) => {
                let Ok(mut guard) = session.try_lock() else {
                    return Ok(false);
                };
                self.remove_session(repo, id, state.as_ref())?;
                self.close(&mut guard, id);
            }
            None => self.remove_session(repo, id, state.as_ref())?,
        }
        Ok(true)
    }
}

/// Remove an abandoned session from a process that holds none (a
/// collector): in a bucket its multipart upload is aborted first, from the
/// state it left (a state that cannot be read leaves only the parts, which
/// the bucket's own lifecycle rules can expire).
pub fn discard_session(
    backend: &Backend,
    layout: &Layout,
    repo: &RepoName,
    id: &UploadId,
) -> Result<(), StorageError> {
    let state = match backend {
        Backend::S3(_) => object::state_in(backend.objects(), layout, repo, id)
            .ok()
            .flatten(),
        Backend::Filesystem(_) => None,
    };
    remove(backend, layout, repo, id, state.as_ref())
}

/// A session's multipart upload aborted (in a bucket, from `state`), then
/// its objects deleted.
fn remove(
    backend: &Backend,
    layout: &Layout,
    repo: &RepoName,
    id: &UploadId,
    state: Option<&object::State>,
) -> Result<(), StorageError> {
    match backend {
        Backend::S3(s3) => {
            object::abort(s3, layout, repo, id, state)?;
            backend.objects().delete_dir(&layout.upload_dir(repo, id))
        }
        Backend::Filesystem(_) => file::remove(layout, repo, id),
    }
}

/// In a bucket, a session lives in memory only while a request holds it:
/// its state is in the bucket, and the next request may go to another
/// node. Dropped after the session's lock (declared before it).
struct Forget<'a> {
    store: &'a Store,
    id: &'a UploadId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Backend::S3(_) = self.store.backend {
            // Only the map holds it: no request of this node is using it.
            self.store
                .uploads
                .map
                .remove_if(self.id, |_, s| Arc::strong_count(s) == 1);
        }
    }
}

/// Run blocking storage work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Io {
            path: String::new(),
            source: io::Error::other(format!("storage task failed: {e}")),
        })
    })
}
