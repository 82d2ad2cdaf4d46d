//! What a source hands over: a manifest's exact bytes, and a blob's bytes
//! as a stream whose feeding end can say why the source gave up.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use registry::oci::Digest;
use tokio::sync::mpsc;

/// A manifest as fetched: its exact bytes, so the copy has the same digest.
#[derive(Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// A blob's bytes on their way: how many, and a channel of frames.
pub struct BlobStream {
    pub size: u64,
    pub frames: mpsc::Receiver<std::io::Result<Bytes>>,
    /// Set when the source gave up: a copy cut by this must not be retried.
    gave_up: Arc<OnceLock<String>>,
}

impl BlobStream {
    /// A stream of `size` bytes, and the end that feeds it.
    pub fn channel(size: u64) -> (BlobStream, Feed) {
        let (tx, frames) = mpsc::channel(4);
        let gave_up = Arc::new(OnceLock::new());
        let feed = Feed {
            tx,
            gave_up: gave_up.clone(),
        };
        (
            BlobStream {
                size,
                frames,
                gave_up,
            },
            feed,
        )
    }

    /// Why the source gave up on this stream, once it has.
    pub fn source_failure(&self) -> Arc<OnceLock<String>> {
        self.gave_up.clone()
    }
}

/// The source's end of a `BlobStream`.
pub struct Feed {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    gave_up: Arc<OnceLock<String>>,
}

impl Feed {
    /// Pass bytes on; false once the reader is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.tx.send(Ok(data)).await.is_ok()
    }

    /// End the stream with the reason the source gave up.
    pub async fn fail(&self, why: String) {
        let _ = self.gave_up.set(why.clone());
        let _ = self.tx.send(Err(std::io::Error::other(why))).await;
    }

    pub fn blocking_send(&self, data: Bytes) -> bool {
        self.tx.blocking_send(Ok(data)).is_ok()
    }

    pub fn blocking_fail(&self, why: String) {
        let _ = self.gave_up.set(why.clone());
        let _ = self.tx.blocking_send(Err(std::io::Error::other(why)));
    }
}
