//! Upload writes through io_uring (cargo feature `io-uring`): one dedicated
//! thread runs a tokio-uring runtime, whose types are not `Send`, and takes
//! write jobs over a channel. Each job is a writer and a full buffer; the
//! whole blocks go to the kernel as one io_uring write on the O_DIRECT
//! descriptor, and the buffer and writer come back on a oneshot.
//!
//! If io_uring cannot be set up (an old kernel, a sandbox that forbids it),
//! `submit` returns the job untouched and the caller writes on the
//! blocking pool as without the feature.

use std::io;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::buffers::PooledBuf;
use super::writer::BlockWriter;

/// What comes back from a write: the writer, its buffer, the outcome.
pub type Done = (BlockWriter, io::Result<()>);

struct Job {
    writer: BlockWriter,
    buf: PooledBuf,
    reply: oneshot::Sender<Done>,
}

/// The channel to the io_uring thread, or None if it could not start.
fn service() -> &'static Option<mpsc::UnboundedSender<Job>> {
    static SERVICE: OnceLock<Option<mpsc::UnboundedSender<Job>>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("io-uring".into())
            .spawn(move || {
                let runtime = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio_uring::spawn(async move {
                            let Job {
                                mut writer,
                                mut buf,
                                reply,
                            } = job;
                            let (aligned, result) = writer.write_uring(buf.detach()).await;
                            buf.restore(aligned);
                            // Back to the pool before the reply.
                            drop(buf);
                            let _ = reply.send((writer, result));
                        });
                    }
                });
            });
        match spawned.ok().and_then(|_| ready_rx.recv().ok()) {
            Some(Ok(())) => Some(tx),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "io_uring unavailable; upload writes use the blocking pool");
                None
            }
            None => None,
        }
    })
}

/// Hand a write to the io_uring thread, or give it back if there is none
/// or the write is not one io_uring serves (no O_DIRECT, unaligned start).
pub fn submit(
    writer: BlockWriter,
    buf: PooledBuf,
) -> Result<oneshot::Receiver<Done>, (BlockWriter, PooledBuf)> {
    let Some(tx) = service().as_ref().filter(|_| writer.direct_ready()) else {
        return Err((writer, buf));
    };
    let (reply, rx) = oneshot::channel();
    match tx.send(Job { writer, buf, reply }) {
        Ok(()) => Ok(rx),
        Err(mpsc::error::SendError(job)) => Err((job.writer, job.buf)),
    }
}
