//! Uploads on a file system: the session's bytes are its `data` file.
//!
//! The data path: the connection task hashes each body frame and copies it
//! into a 1 MiB buffer from the store's pool (`storage::buffers`); each full
//! buffer is written by a job on the blocking pool while the next one fills
//! (one write in flight), so hashing and writing overlap. An upload holds
//! at most two buffers whatever the blob's size, none while its client
//! pauses, and all uploads together no more than the pool's budget; a
//! stalled client holds no thread. The file is never
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
use crate::storage::buffers::{BufferPool, PooledBuf};
use crate::storage::error::StorageError;
use crate::storage::layout::{Layout, UploadId};
use crate::storage::writer::{BlockWriter, WriteMode, ALIGN};

/// Size of the buffers handed to the writer thread.
const WRITE_CHUNK: usize = crate::storage::buffers::BUFFER;

/// Make the session's file, empty.
///
/// A session is one file, `_uploads/<id>`, where Distribution makes a
/// directory holding `data` and `startedat`: one inode instead of three,
/// and no durable write of a start time (purges go by the time of the last
/// write, which the file carries). Committed data is in Distribution's
/// layout either way, and sessions in its shape (from Distribution on a
/// shared directory, or from an older version of ours) are still served;
/// Distribution's purge leaves a session without `startedat` alone.
pub(super) fn create(layout: &Layout, repo: &RepoName, id: &UploadId) -> Result<(), StorageError> {
    let path = layout.upload_file(repo, id);
    let create = || File::options().write(true).create_new(true).open(&path);
    match create() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = layout.uploads_dir(repo);
            fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            create().map(drop).map_err(|e| StorageError::io(&path, e))
        }
        Err(e) => Err(StorageError::io(&path, e)),
    }
}

/// The file holding a session's bytes: its own file, or `data` in a
/// session directory of Distribution's shape.
fn session_file(layout: &Layout, repo: &RepoName, id: &UploadId) -> PathBuf {
    let file = layout.upload_file(repo, id);
    match fs::symlink_metadata(&file) {
        Ok(meta) if meta.is_dir() => layout.upload_data(repo, id),
        _ => file,
    }
}

/// Remove a session's bytes, in either shape; absent is fine.
pub(super) fn remove(layout: &Layout, repo: &RepoName, id: &UploadId) -> Result<(), StorageError> {
    let file = layout.upload_file(repo, id);
    match fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // A directory (EISDIR from unlink on Linux).
        Err(_) => Filesystem::new(layout.tmp_dir()).delete_dir(&layout.upload_dir(repo, id)),
    }
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
    let (st, repo, id) = (store.clone(), session.repo.clone(), id.clone());
    let size = blocking(move || {
        let key = session_file(&st.layout, &repo, &id);
        st.backend.objects().stat(&key)
    })
    .await?;
    Ok(size.map(|m| m.size) == Some(session.size))
}

/// Rebuild size and hash from the file (a session this process has not
/// seen, or whose last request never finished).
pub(super) async fn load(
    store: &Store,
    session: &mut Session,
    id: &UploadId,
) -> Result<(), StorageError> {
    let path = session_file(&store.layout, &session.repo, id);
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
    let path = session_file(&store.layout, &session.repo, id);
    // Taken out while streaming: if this request never finishes, the
    // next one finds no hasher and rebuilds it from the file.
    let mut hasher = session.hasher.take().expect("locked_session rebuilt it");
    let outcome = stream_to_file(
        &path,
        session.size,
        store.write_mode(),
        &store.uploads.buffers,
        &mut hasher,
        body,
    )
    .await;
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
    let data = session_file(&store.layout, repo, id);
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

/// One buffer's write, done on the blocking pool, which gives the buffer
/// back to the pool as soon as it is written; the writer comes back for
/// the next one.
type WriteJob =
    std::pin::Pin<Box<dyn Future<Output = Result<(BlockWriter, io::Result<()>), String>> + Send>>;

/// How long a client may pause with bytes of ours in a buffer before they
/// are written out and the buffer given back: an upload that trickles or
/// stalls holds no buffer while it waits.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Where a buffer that starts at file offset `at` must end for the next
/// one to start on a block boundary (and so be written directly).
fn buffer_limit(at: u64) -> usize {
    WRITE_CHUNK - (at % ALIGN as u64) as usize
}

/// Hash every frame of `body` and append it to the file at `path` (which
/// holds `offset` bytes). Frames are copied into buffers of the shared
/// pool; each full buffer is written by a blocking job while the next one
/// fills (one job at a time), so hashing and writing overlap, and a client
/// that stalls holds no thread and, after `PAUSE`, no buffer.
async fn stream_to_file(
    path: &Path,
    offset: u64,
    mode: WriteMode,
    pool: &Arc<BufferPool>,
    hasher: &mut Hasher,
    body: &mut impl ByteSource,
) -> Result<u64, StreamError> {
    let p: PathBuf = path.to_path_buf();
    let writer = blocking(move || BlockWriter::open(&p, mode).map_err(|e| StorageError::io(&p, e)))
        .await
        .map_err(StreamError::Disk)?;
    let mut pipe = WritePipe {
        path,
        idle: Some(writer),
        job: None,
    };

    // Where the bytes handed to the writer so far end.
    let mut end = offset;
    let mut buf: Option<PooledBuf> = None;
    let mut received = 0u64;
    let mut client_error = None;
    loop {
        let holding = buf.as_ref().is_some_and(|b| !b.is_empty());
        let next = {
            let mut chunk = std::pin::pin!(body.next_chunk());
            if !holding {
                chunk.await
            } else {
                match tokio::time::timeout(PAUSE, chunk.as_mut()).await {
                    Ok(next) => next,
                    Err(_paused) => {
                        let part = buf.take().expect("holds bytes");
                        end += part.len() as u64;
                        pipe.submit(part).await.map_err(StreamError::Disk)?;
                        // The same wait goes on: a source need not be safe
                        // to cancel (the pull-through cache's tee is not).
                        chunk.await
                    }
                }
            }
        };
        match next {
            Some(Ok(frame)) => {
                hasher.update(&frame);
                received += frame.len() as u64;
                let mut rest = &frame[..];
                while !rest.is_empty() {
                    let b = match &mut buf {
                        Some(b) => b,
                        None => buf.insert(pool.take().await),
                    };
                    let limit = buffer_limit(end);
                    rest = &rest[b.fill(rest, limit)..];
                    if b.len() == limit {
                        let full = buf.take().expect("just filled");
                        end += full.len() as u64;
                        pipe.submit(full).await.map_err(StreamError::Disk)?;
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
    if let Some(last) = buf.filter(|b| !b.is_empty()) {
        pipe.submit(last).await.map_err(StreamError::Disk)?;
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
    /// The writer when no job holds it.
    idle: Option<BlockWriter>,
    job: Option<WriteJob>,
}

impl WritePipe<'_> {
    /// Wait for the write in flight, if any, and take the writer back.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(job) = self.job.take() {
            let (writer, result) = job.await.map_err(|e| {
                StorageError::io(
                    self.path,
                    io::Error::other(format!("write job failed: {e}")),
                )
            })?;
            result.map_err(|e| StorageError::io(self.path, e))?;
            self.idle = Some(writer);
        }
        Ok(())
    }

    /// Start writing `full`, once the write before it is done.
    async fn submit(&mut self, full: PooledBuf) -> Result<(), StorageError> {
        self.settle().await?;
        let writer = self.idle.take().expect("settled");
        #[cfg(feature = "io-uring")]
        let (writer, full) = match crate::storage::uring::submit(writer, full) {
            Ok(done) => {
                self.job = Some(Box::pin(async move {
                    done.await
                        .map_err(|_| "the io_uring thread is gone".to_string())
                }));
                return Ok(());
            }
            Err(back) => back,
        };
        let mut writer = writer;
        let handle = tokio::task::spawn_blocking(move || {
            let result = writer.write(full.as_slice());
            drop(full);
            (writer, result)
        });
        self.job = Some(Box::pin(
            async move { handle.await.map_err(|e| e.to_string()) },
        ));
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A source that takes each chunk off its queue, then waits before
    /// handing it over: cancelled during the wait, it would lose the chunk.
    struct Slow {
        queue: std::collections::VecDeque<Bytes>,
        wait: std::time::Duration,
    }

    impl ByteSource for Slow {
        async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
            let chunk = self.queue.pop_front()?;
            tokio::time::sleep(self.wait).await;
            Some(Ok(chunk))
        }
    }

    #[tokio::test]
    async fn a_source_that_pauses_loses_nothing_and_its_bytes_are_written_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        std::fs::write(&path, b"").unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let mut body = Slow {
            queue: data.chunks(70_001).map(Bytes::copy_from_slice).collect(),
            // Longer than PAUSE: every chunk after the first finds bytes
            // held, which are written out while the source still waits.
            wait: PAUSE * 3,
        };
        let pool = BufferPool::new(2 * WRITE_CHUNK);
        let mut hasher = Algorithm::Sha256.hasher();
        let received = match stream_to_file(
            &path,
            0,
            WriteMode::Direct,
            &pool,
            &mut hasher,
            &mut body,
        )
        .await
        {
            Ok(n) => n,
            Err(_) => panic!("the stream failed"),
        };
        assert_eq!(received, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let mut expected = Algorithm::Sha256.hasher();
        expected.update(&data);
        assert_eq!(hasher.finish(), expected.finish());
    }
}
