//! What a pass did, counted as it goes: by the pass (tags, manifests,
//! blobs) and by the peers it talks to (retries, resumed reads and writes,
//! the bytes that crossed each way).

use std::sync::atomic::AtomicU64;

#[derive(Default)]
pub struct Counters {
    pub tags_copied: AtomicU64,
    pub tags_current: AtomicU64,
    pub tags_deleted: AtomicU64,
    pub manifests_copied: AtomicU64,
    pub blobs_copied: AtomicU64,
    pub blobs_present: AtomicU64,
    pub blobs_mounted: AtomicU64,
    /// Uploads that went on from the target's offset after a cut.
    pub blobs_resumed: AtomicU64,
    /// The sizes of the blobs copied: the bytes the copy needed.
    pub bytes_copied: AtomicU64,
    /// Requests sent again after no answer or a busy one.
    pub requests_retried: AtomicU64,
    /// Source reads cut in the middle and continued from the byte reached.
    pub reads_resumed: AtomicU64,
    /// Blob bytes that arrived from the source, read again included.
    pub bytes_received: AtomicU64,
    /// Blob bytes handed to the target, sent again included.
    pub bytes_sent: AtomicU64,
}
