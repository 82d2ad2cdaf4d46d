//! A peer's bandwidth limit, shared by every transfer to or from it.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes per second, paced on a virtual clock: each frame is given the
/// next free slot of time its size needs, and waits for it. Transfers
/// sharing the limiter share the rate.
pub struct Limiter {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl Limiter {
    pub fn new(bytes_per_sec: u64) -> Limiter {
        Limiter {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    async fn take(&self, n: usize) {
        let start = {
            let mut next = self.next_free.lock().expect("limiter lock");
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Frames of `rx` passed on no faster than every limiter allows.
pub fn throttle(
    mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
    limiters: Vec<std::sync::Arc<Limiter>>,
) -> mpsc::Receiver<std::io::Result<Bytes>> {
    if limiters.is_empty() {
        return rx;
    }
    let (tx, out) = mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Ok(f) = &frame {
                for l in &limiters {
                    l.take(f.len()).await;
                }
            }
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    out
}
