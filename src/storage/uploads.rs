//! Upload sessions: a file that grows chunk by chunk, hashed as the bytes
//! pass, and committed into the blob store by rename once its digest checks.
//!
//! The data path: the connection task hashes each body frame and copies it
//! into a 1 MiB buffer; each full buffer is written by a job on the blocking
//! pool while the next one fills (one write in flight), so hashing and
//! writing overlap, an upload holds about 3 MiB of memory whatever the
//! blob's size, and a stalled client holds no thread. The file is never
//! read back, except to rebuild the hash state of a session the process has
//! not seen (after a restart) or whose last request never finished.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Mutex;

use super::error::StorageError;
use super::fsutil::{remove_dir, rename_into, touch, write_atomic};
use super::layout::UploadId;
use super::writer::{AlignedBuf, BlockWriter, WriteMode, ALIGN};
use super::Store;
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// Size of the buffers handed to the writer thread.
const WRITE_CHUNK: usize = 1 << 20;

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

    /// Lock a session and make its state whole: after a restart, or after
    /// a request that did not finish, the hash state is rebuilt from the
    /// file, so size and hash always describe exactly the bytes on disk.
    async fn locked_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<tokio::sync::OwnedMutexGuard<Session>, StorageError> {
        let session = self.session(repo, id)?;
        let mut guard = session.lock_owned().await;
        if guard.closed || guard.repo != *repo {
            return Err(StorageError::UploadUnknown);
        }
        if guard.hasher.is_none() {
            let path = self.layout.upload_data(repo, id);
            match blocking(move || rehash(&path, Algorithm::Sha256)).await {
                Ok((hasher, size)) => {
                    guard.hasher = Some(hasher);
                    guard.size = size;
                }
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                    // Cancelled or purged meanwhile.
                    guard.closed = true;
                    self.uploads.map.remove(id);
                    return Err(StorageError::UploadUnknown);
                }
                Err(e) => return Err(e),
            }
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
        self.check_writable()?;
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
        // Taken out while streaming: if this request never finishes, the
        // next one finds no hasher and rebuilds it from the file.
        let mut hasher = session.hasher.take().expect("locked_session rebuilt it");
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
        let target = self.layout.blob_data(digest);
        let actual = match hasher {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            // Another algorithm: hash the file.
            _ => match rehash(&data, digest.algorithm()) {
                Ok((h, _)) => h.finish(),
                // A retried PUT whose first attempt moved the data into
                // place and then failed (linking, tidying): finish the job.
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                    match self.blob_size(digest)? {
                        Some(size) => return self.finish_commit(repo, id, digest, size),
                        None => return Err(StorageError::UploadUnknown),
                    }
                }
                Err(e) => return Err(e),
            },
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
        // A blob already there is touched, so a collector running now keeps
        // it (see fsutil::touch); one that is gone is replaced by ours, which
        // is touched once in place, so it counts as new from now.
        if !touch(&target)? {
            file.sync_all().map_err(|e| StorageError::io(&data, e))?;
            rename_into(&data, &target)?;
            touch(&target)?;
        }
        drop(file);
        self.finish_commit(repo, id, digest, size)
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
        remove_dir(&self.layout.upload_dir(repo, id))?;
        Ok(size)
    }

    /// Remove an abandoned session's directory (for `purge`), unless a
    /// request holds it right now. Returns whether it was removed.
    pub(super) fn purge_session(&self, id: &UploadId, dir: &Path) -> Result<bool, StorageError> {
        match self.uploads.map.get(id).map(|s| s.clone()) {
            Some(session) => {
                let Ok(mut guard) = session.try_lock() else {
                    return Ok(false);
                };
                remove_dir(dir)?;
                guard.closed = true;
                self.uploads.map.remove(id);
            }
            None => remove_dir(dir)?,
        }
        Ok(true)
    }
}

enum StreamError {
    Client { received: u64, error: io::Error },
    Disk(StorageError),
}

/// One buffer's write, done on the blocking pool; the writer and the
/// buffer come back for the next one.
type WriteJob = std::pin::Pin<
    Box<dyn Future<Output = Result<(BlockWriter, AlignedBuf, io::Result<()>), String>> + Send>,
>;

/// Hash every frame of `body` and append it to the file at `path` (which
/// holds `offset` bytes). Each full buffer is written by a blocking job
/// while the next one fills, one job at a time: hashing and writing overlap,
/// and a client that stalls holds no thread.
async fn stream_to_file(
    path: &Path,
    offset: u64,
    mode: WriteMode,
    hasher: &mut Hasher,
    body: &mut impl ByteSource,
) -> Result<u64, StreamError> {
    let p: PathBuf = path.to_path_buf();
    let writer = blocking(move || BlockWriter::open(&p, mode).map_err(|e| StorageError::io(&p, e)))
        .await
        .map_err(StreamError::Disk)?;
    let mut pipe = WritePipe {
        path,
        idle: Some((writer, None)),
        job: None,
    };

    // The first buffer ends where the file reaches a block boundary, so
    // every later buffer starts aligned and can be written directly.
    let mut limit = WRITE_CHUNK - (offset % ALIGN as u64) as usize;
    let mut buf = AlignedBuf::new(WRITE_CHUNK);
    let mut received = 0u64;
    let mut client_error = None;
    loop {
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
                        buf = pipe.submit(buf).await.map_err(StreamError::Disk)?;
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
        pipe.submit(buf).await.map_err(StreamError::Disk)?;
    }
    pipe.finish().await.map_err(StreamError::Disk)?;
    match client_error {
        Some(error) => Err(StreamError::Client { received, error }),
        None => Ok(received),
    }
}

/// The writer and at most one write in flight.
struct WritePipe<'a> {
    path: &'a Path,
    /// The writer when no job holds it, with a spare buffer to fill next.
    idle: Option<(BlockWriter, Option<AlignedBuf>)>,
    job: Option<WriteJob>,
}

impl WritePipe<'_> {
    /// Wait for the write in flight, if any, and take the writer back.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(job) = self.job.take() {
            let (writer, mut buf, result) = job.await.map_err(|e| {
                StorageError::io(
                    self.path,
                    io::Error::other(format!("write job failed: {e}")),
                )
            })?;
            result.map_err(|e| StorageError::io(self.path, e))?;
            buf.clear();
            self.idle = Some((writer, Some(buf)));
        }
        Ok(())
    }

    /// Start writing `full`; return an empty buffer to fill next.
    async fn submit(&mut self, full: AlignedBuf) -> Result<AlignedBuf, StorageError> {
        self.settle().await?;
        let (writer, spare) = self.idle.take().expect("settled");
        #[cfg(feature = "io-uring")]
        let (writer, full) = match super::uring::submit(writer, full) {
            Ok(done) => {
                self.job = Some(Box::pin(async move {
                    done.await
                        .map_err(|_| "the io_uring thread is gone".to_string())
                }));
                return Ok(spare.unwrap_or_else(|| AlignedBuf::new(WRITE_CHUNK)));
            }
            Err(back) => back,
        };
        let mut writer = writer;
        let handle = tokio::task::spawn_blocking(move || {
            let result = writer.write(full.as_slice());
            (writer, full, result)
        });
        self.job = Some(Box::pin(
            async move { handle.await.map_err(|e| e.to_string()) },
        ));
        Ok(spare.unwrap_or_else(|| AlignedBuf::new(WRITE_CHUNK)))
    }

    async fn finish(mut self) -> Result<(), StorageError> {
        self.settle().await
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
