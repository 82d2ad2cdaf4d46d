//! Upload sessions: a file that grows chunk by chunk, hashed as the bytes
//! pass, and committed into the blob store by rename once its digest checks.
//!
//! The data path: the connection task hashes each body frame and copies it
//! into a 1 MiB buffer; full buffers go through a short channel to one
//! blocking writer thread per request, so hashing and writing overlap and an
//! upload holds a few MiB of memory whatever the blob's size. The file is
//! never read back, except to rebuild the hash state of a session the
//! process has not seen (after a restart) or whose last request failed.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Mutex;

use super::error::StorageError;
use super::fsutil::{exists, remove_dir, rename_into, write_atomic};
use super::layout::UploadId;
use super::writer::{AlignedBuf, BlockWriter, WriteMode, ALIGN};
use super::Store;
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// Size of the buffers handed to the writer thread.
const WRITE_CHUNK: usize = 1 << 20;
/// Buffers in flight between the hashing task and the writer.
const WRITE_QUEUE: usize = 2;

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
    /// Hash of the first `size` bytes; `None` when it must be rebuilt from the file.
    hasher: Option<Hasher>,
    /// Set once the session is committed or cancelled.
    closed: bool,
}

impl Session {
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

#[derive(Default)]
pub(super) struct Sessions {
    map: DashMap<UploadId, Arc<Mutex<Session>>>,
}

impl Store {
    /// Start an upload session in `repo`.
    pub fn create_upload(&self, repo: &RepoName) -> Result<UploadId, StorageError> {
        self.check_writable()?;
        let id = UploadId::random();
        let dir = self.layout.upload_dir(repo, &id);
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let started = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let created = write_atomic(
            &self.layout,
            &self.layout.upload_started_at(repo, &id),
            started.as_bytes(),
        )
        .and_then(|()| {
            let data = self.layout.upload_data(repo, &id);
            File::create(&data)
                .map(drop)
                .map_err(|e| StorageError::io(&data, e))
        });
        if let Err(e) = created {
            let _ = remove_dir(&dir);
            return Err(e);
        }
        self.uploads.map.insert(
            id.clone(),
            Arc::new(Mutex::new(Session {
                repo: repo.clone(),
                size: 0,
                hasher: Some(Algorithm::Sha256.hasher()),
                closed: false,
            })),
        );
        Ok(id)
    }

    /// Find a session, in memory or (after a restart) on disk.
    fn session(&self, repo: &RepoName, id: &UploadId) -> Result<Arc<Mutex<Session>>, StorageError> {
        if let Some(s) = self.uploads.map.get(id) {
            return Ok(s.clone());
        }
        let data = self.layout.upload_data(repo, id);
        let size = match fs::metadata(&data) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::UploadUnknown)
            }
            Err(e) => return Err(StorageError::io(&data, e)),
        };
        let session = Arc::new(Mutex::new(Session {
            repo: repo.clone(),
            size,
            hasher: None,
            closed: false,
        }));
        Ok(self
            .uploads
            .map
            .entry(id.clone())
            .or_insert(session)
            .clone())
    }

    async fn locked_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<tokio::sync::OwnedMutexGuard<Session>, StorageError> {
        let session = self.session(repo, id)?;
        let guard = session.lock_owned().await;
        if guard.closed || guard.repo != *repo {
            return Err(StorageError::UploadUnknown);
        }
        Ok(guard)
    }

    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<UploadStatus, StorageError> {
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
        let mut session = self.locked_session(repo, id).await?;
        session.check_start(start)?;
        self.receive(&mut session, id, body).await?;
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
        let mut session = self.locked_session(repo, id).await?;
        session.check_start(start)?;
        if let Some(body) = body {
            self.receive(&mut session, id, body).await?;
        }
        let store = self.clone();
        let (repo, id2, digest2) = (repo.clone(), id.clone(), digest.clone());
        let hasher = session.hasher.take();
        let result = blocking(move || store.commit(&repo, &id2, &digest2, hasher)).await;
        match &result {
            Ok(_) | Err(StorageError::DigestMismatch { .. }) => {
                // Committed, or content that can never become this digest: gone either way.
                session.closed = true;
                self.uploads.map.remove(id);
                if result.is_err() {
                    let dir = self.layout.upload_dir(&session.repo, id);
                    let _ = blocking(move || remove_dir(&dir)).await;
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Cancel an upload and remove its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<(), StorageError> {
        let mut session = self.locked_session(repo, id).await?;
        let dir = self.layout.upload_dir(repo, id);
        blocking(move || remove_dir(&dir)).await?;
        session.closed = true;
        self.uploads.map.remove(id);
        Ok(())
    }

    /// Stream `body` onto the end of the session's file.
    async fn receive(
        &self,
        session: &mut Session,
        id: &UploadId,
        body: &mut impl ByteSource,
    ) -> Result<(), StorageError> {
        let path = self.layout.upload_data(&session.repo, id);
        if session.hasher.is_none() {
            let p = path.clone();
            let (hasher, size) = blocking(move || rehash(&p, Algorithm::Sha256)).await?;
            session.hasher = Some(hasher);
            session.size = size;
        }
        let mut hasher = session.hasher.take().expect("hasher rebuilt above");
        let outcome =
            stream_to_file(&path, session.size, self.write_mode(), &mut hasher, body).await;
        match outcome {
            Ok(received) => {
                session.size += received;
                session.hasher = Some(hasher);
                Ok(())
            }
            Err(StreamError::Client { received, error }) => {
                // Everything received was written: the session stays usable.
                session.size += received;
                session.hasher = Some(hasher);
                Err(StorageError::ClientGone(error))
            }
            Err(StreamError::Disk(e)) => {
                // The file's contents are unknown now; the disk failed, not the
                // client, so drop the upload rather than keep a broken partial.
                session.closed = true;
                self.uploads.map.remove(id);
                let dir = self.layout.upload_dir(&session.repo, id);
                let _ = blocking(move || remove_dir(&dir)).await;
                Err(e)
            }
        }
    }

    /// Verify and move an upload's data into place (blocking).
    fn commit(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        hasher: Option<Hasher>,
    ) -> Result<u64, StorageError> {
        let data = self.layout.upload_data(repo, id);
        let actual = match hasher {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            // Another algorithm, or no state after a failure: hash the file.
            _ => rehash(&data, digest.algorithm())?.0.finish(),
        };
        if actual != *digest {
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let file = File::open(&data).map_err(|e| StorageError::io(&data, e))?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::io(&data, e))?
            .len();
        let target = self.layout.blob_data(digest);
        if !exists(&target)? {
            file.sync_all().map_err(|e| StorageError::io(&data, e))?;
            rename_into(&data, &target)?;
        }
        drop(file);
        self.blob_sizes.insert(digest.clone(), size);
        self.link_blob(repo, digest)?;
        remove_dir(&self.layout.upload_dir(repo, id))?;
        Ok(size)
    }

    /// Remove sessions and temp files older than `age` (see `purge`).
    pub(super) fn forget_session(&self, id: &UploadId) {
        self.uploads.map.remove(id);
    }

    pub(super) fn session_active(&self, id: &UploadId) -> bool {
        self.uploads
            .map
            .get(id)
            .is_some_and(|s| s.try_lock().is_err())
    }
}

enum StreamError {
    Client { received: u64, error: io::Error },
    Disk(StorageError),
}

/// Hash every frame of `body` and write it through a blocking writer
/// thread, appending to the file at `path` (which holds `offset` bytes).
async fn stream_to_file(
    path: &Path,
    offset: u64,
    mode: WriteMode,
    hasher: &mut Hasher,
    body: &mut impl ByteSource,
) -> Result<u64, StreamError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<AlignedBuf>(WRITE_QUEUE);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<AlignedBuf>();
    let writer_path: PathBuf = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
        let io_err = |e| StorageError::io(&writer_path, e);
        let mut file = BlockWriter::open(&writer_path, mode).map_err(io_err)?;
        while let Some(mut buf) = rx.blocking_recv() {
            file.write(buf.as_slice()).map_err(io_err)?;
            buf.clear();
            let _ = spare_tx.send(buf);
        }
        Ok(())
    });

    // The first buffer ends where the file reaches a block boundary, so
    // every later buffer starts aligned and can be written directly.
    let mut limit = WRITE_CHUNK - (offset % ALIGN as u64) as usize;
    let mut buf = AlignedBuf::new(WRITE_CHUNK);
    let mut received = 0u64;
    let mut client_error = None;
    'body: loop {
        match body.next_chunk().await {
            Some(Ok(frame)) => {
                hasher.update(&frame);
                received += frame.len() as u64;
                let mut rest = &frame[..];
                while !rest.is_empty() {
                    let n = buf.fill(rest, limit);
                    rest = &rest[n..];
                    if buf.len() == limit {
                        limit = WRITE_CHUNK;
                        let next = spare_rx
                            .try_recv()
                            .unwrap_or_else(|_| AlignedBuf::new(WRITE_CHUNK));
                        if tx.send(std::mem::replace(&mut buf, next)).await.is_err() {
                            break 'body; // the writer failed; its result says why
                        }
                    }
                }
            }
            Some(Err(e)) => {
                client_error = Some(e);
                break;
            }
            None => break,
        }
    }
    if !buf.is_empty() {
        let _ = tx.send(buf).await;
    }
    drop(tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(StreamError::Disk(e)),
        Err(join) => {
            return Err(StreamError::Disk(StorageError::io(
                path,
                io::Error::other(format!("writer thread failed: {join}")),
            )))
        }
    }
    match client_error {
        Some(error) => Err(StreamError::Client { received, error }),
        None => Ok(received),
    }
}

/// Hash a file from the start: the hasher and the file's length.
fn rehash(path: &Path, algorithm: Algorithm) -> Result<(Hasher, u64), StorageError> {
    let mut f = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; WRITE_CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| StorageError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher, size))
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
