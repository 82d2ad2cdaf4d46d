//! Upload buffers from one pool with a byte budget, so that the memory
//! uploads hold is bounded by the bytes in flight, not by the number of
//! uploads open.
//!
//! An upload takes a buffer when bytes arrive and gives it back when the
//! buffer's write is done (the write job drops it), or, for a client that
//! pauses, once what it holds is written (see `uploads::file`). When the
//! budget is spent, uploads wait for a buffer and their clients for TCP's
//! window: a thousand slow pushes cost the budget, not a thousand buffers.
//! Buffers given back are kept for the next upload rather than freed:
//! memory handed back to the host is slow to get again on these machines
//! (DESIGN.md, "Measuring on these machines").
//!
//! A write never waits for a buffer, so a buffer taken is always given
//! back: the pool cannot deadlock.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::writer::AlignedBuf;

/// Size of one buffer: one write to the disk.
pub const BUFFER: usize = 1 << 20;

/// The default budget: enough buffers in flight to keep a disk and two
/// cores busy (measured: BENCHMARKS.md, "Memory per upload").
pub const DEFAULT_BUDGET: usize = 24 << 20;

pub struct BufferPool {
    /// Buffers given back, ready to fill again.
    free: Mutex<Vec<AlignedBuf>>,
    /// One permit per buffer the budget allows.
    permits: Arc<Semaphore>,
}

impl BufferPool {
    /// A pool of at most `budget` bytes of buffers (at least two buffers).
    pub fn new(budget: usize) -> Arc<BufferPool> {
        let count = (budget / BUFFER).max(2);
        Arc::new(BufferPool {
            free: Mutex::new(Vec::with_capacity(count)),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// An empty buffer, once the budget allows one.
    pub async fn take(self: &Arc<Self>) -> PooledBuf {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let buf = self
            .free_list()
            .pop()
            .unwrap_or_else(|| AlignedBuf::new(BUFFER));
        PooledBuf {
            buf: Some(buf),
            pool: self.clone(),
            _permit: permit,
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<AlignedBuf>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer of the pool; dropping it gives it back.
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: Arc<BufferPool>,
    _permit: OwnedSemaphorePermit,
}

impl PooledBuf {
    /// The buffer itself, for a write that must own it (io_uring); give it
    /// back with [`PooledBuf::restore`].
    #[cfg(feature = "io-uring")]
    pub fn detach(&mut self) -> AlignedBuf {
        self.buf.take().expect("not detached twice")
    }

    #[cfg(feature = "io-uring")]
    pub fn restore(&mut self, buf: AlignedBuf) {
        self.buf = Some(buf);
    }
}

impl Deref for PooledBuf {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.buf.as_ref().expect("not detached")
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("not detached")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(mut buf) = self.buf.take() {
            buf.clear();
            self.pool.free_list().push(buf);
        }
        // The permit goes back after the buffer: whoever it wakes finds
        // the buffer in the free list.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takers_wait_for_the_budget_and_buffers_are_reused() {
        let pool = BufferPool::new(2 * BUFFER);
        let mut a = pool.take().await;
        a.fill(b"abc", BUFFER);
        let first = a.as_slice().as_ptr();
        let _b = pool.take().await;
        // The budget is spent: a third taker waits until one comes back.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), pool.take());
        assert!(waiting.await.is_err());
        drop(a);
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), pool.take())
            .await
            .expect("a buffer came back");
        assert!(c.is_empty(), "given back empty");
        assert_eq!(c.as_slice().as_ptr(), first, "the same memory, reused");
        assert_eq!(pool.free_list().len(), 0);
    }
}
