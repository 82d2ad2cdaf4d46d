//! Uploads on a file system: the session's bytes are its `data` file.
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

use super::{blocking, ByteSource, Session, Store};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::backend::fs::{rename_into, touch, Filesystem};
use crate::storage::backend::Objects;
use crate::storage::error::StorageError;
use crate::storage::layout::{Layout, UploadId};
use crate::storage::writer::{AlignedBuf, BlockWriter, WriteMode, ALIGN};

/// Size of the buffers handed to the writer thread.
const WRITE_CHUNK: usize = 1 << 20;

/// Make the session's directory with its start time and an empty `data`.
pub(super) fn create(
    layout: &Layout,
    repo: &RepoName,
    id: &UploadId,
    started: &[u8],
) -> Result<(), StorageError> {
    let dir = layout.upload_dir(repo, id);
    fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
    let files = Filesystem::new(layout.tmp_dir());
    let created = files
        .write(&layout.upload_started_at(repo, id), started)
        .and_then(|()| {
            let data = layout.upload_data(repo, id);
            File::create(&data)
                .map(drop)
                .map_err(|e| StorageError::io(&data, e))
        });
    if let Err(e) = created {
        let _ = files.delete_dir(&dir);
        return Err(e);
    }
    Ok(())
}

/// Whether the session's hash state in memory describes the file: it holds
/// one, and the file has not grown since (another process on the same
/// directory may have appended to it).
pub(super) async fn current(
    store: &Arc<Store>,
    session: &Session,
    id: &UploadId,
) -> Result<bool, StorageError> {
    if session.hasher.is_none() {
        return Ok(false);
    }
    let (st, key) = (store.clone(), store.layout.upload_data(&session.repo, id));
    let size = blocking(move || st.backend.objects().stat(&key)).await?;
    Ok(size.map(|m| m.size) == Some(session.size))
}

/// Rebuild size and hash from the file (a session this process has not
/// seen, or whose last request never finished).
pub(super) async fn load(
    store: &Store,
    session: &mut Session,
    id: &UploadId,
) -> Result<(), StorageError> {
    let path = store.layout.upload_data(&session.repo, id);
    match blocking(move || rehash(&path, Algorithm::Sha256)).await {
        Ok((hasher, size)) => {
            session.hasher = Some(hasher);
            session.size = size;
            Ok(())
        }
        Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => Err(StorageError::UploadUnknown),
        Err(e) => Err(e),
    }
}

/// Stream `body` onto the end of the session's file.
pub(super) async fn receive(
    store: &Store,
    session: &mut Session,
    id: &UploadId,
    body: &mut impl ByteSource,
) -> Result<(), StorageError> {
    let path = store.layout.upload_data(&session.repo, id);
    // Taken out while streaming: if this request never finishes, the
    // next one finds no hasher and rebuilds it from the file.
    let mut hasher = session.hasher.take().expect("locked_session rebuilt it");
    let outcome = stream_to_file(&path, session.size, store.write_mode(), &mut hasher, body).await;
    match outcome {
        Ok(received) => {
            session.size += received;
            session.hasher = Some(hasher);
            Ok(())
        }
        Err(StreamError::Client { received, error }) => {
            session.size += received;
            session.hasher = Some(hasher);
            Err(StorageError::ClientGone(error))
        }
        Err(StreamError::Disk(e)) => Err(e),
    }
}

/// Verify the digest and move the data into place.
pub(super) async fn commit(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
    digest: &Digest,
) -> Result<u64, StorageError> {
    let store = store.clone();
    let (repo, id, digest) = (session.repo.clone(), id.clone(), digest.clone());
    let hasher = session.hasher.take();
    blocking(move || commit_blocking(&store, &repo, &id, &digest, hasher)).await
}

fn commit_blocking(
    store: &Store,
    repo: &RepoName,
    id: &UploadId,
    digest: &Digest,
    hasher: Option<Hasher>,
) -> Result<u64, StorageError> {
    let data = store.layout.upload_data(repo, id);
    let target = store.layout.blob_data(digest);
    let actual = match hasher {
        Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
        // Another algorithm: hash the file.
        _ => match rehash(&data, digest.algorithm()) {
            Ok((h, _)) => h.finish(),
            // A retried PUT whose first attempt moved the data into
            // place and then failed (linking, tidying): finish the job.
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                match store.blob_size(digest)? {
                    Some(size) => return store.finish_commit(repo, id, digest, size),
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
    // it (see backend::fs::touch); one that is gone is replaced by ours,
    // which is touched once in place, so it counts as new from now.
    if !touch(&target)? {
        file.sync_all().map_err(|e| StorageError::io(&data, e))?;
        rename_into(&data, &target)?;
        touch(&target)?;
    }
    drop(file);
    store.finish_commit(repo, id, digest, size)
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
        let (writer, full) = match crate::storage::uring::submit(writer, full) {
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
