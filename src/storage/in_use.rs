//! How the nodes and a collector on a bucket agree, without a lock, that a
//! blob a push is using is never deleted under it.
//!
//! On a file system a node touches what it uses, and the collector moves a
//! file aside before looking at its time once more (see `gc`). An object
//! can be neither touched nor moved, so in a bucket the two sides meet in
//! `_gc/` instead:
//!
//! - A node about to rely on a blob that may already exist (a manifest
//!   naming it or naming itself, an upload or a mount finding it there)
//!   *claims* it: it (1) rewrites the blob's marker `_gc/used/<alg>/<hex>`
//!   with content never written before, (2) lists the intents under
//!   `_gc/deleting/<alg>/<hex>/` and, while a live one is there, waits and
//!   starts again from (1), then (3) looks whether the blob exists.
//! - A collector about to delete a blob no kept manifest needs (1) writes its
//!   intent `_gc/deleting/<alg>/<hex>/<pass>`, (2) reads the marker and keeps
//!   the blob if the marker is not exactly as it was when the pass began;
//!   otherwise it (3) deletes the blob's links, then the blob and its
//!   marker, then (4) its intent.
//!
//! Why nothing in use is lost: the object store is strongly consistent (S3
//! is, and so is SeaweedFS), so the node's listing (2) and the collector's
//! intent (1) are ordered. If the listing came first, the node's marker
//! write came before the intent and so before the collector's read (2): the
//! collector sees a changed marker and keeps the blob. If the intent came
//! first, the node sees it and waits until it is gone; by then the blob is
//! deleted or kept, and the node's look (3) tells which: a deleted blob is
//! stored again by the upload that found it gone, or the manifest naming it
//! is refused, as for any blob that does not exist.
//!
//! A blob that is probably new (an upload's, a manifest's own content) is
//! looked at first and claimed only if it is there: one that is not is
//! stored by the push itself, new, and its links written after; since a
//! collector deletes a blob's links before its content, a link written
//! after the content was found gone is never among those it deletes.
//!
//! What was used before the pass began is protected by time, as on a file
//! system: the collector leaves alone a blob whose marker was written within
//! the grace period.
//!
//! A collector that dies leaves its intents behind. A node honours an intent
//! for `TRUSTED` after it was written (by the object store's clock, read
//! with the node's); a collector deletes only within `ACTS` of writing its
//! intents (by its own monotonic clock); so clocks may disagree by the
//! difference. A later pass removes intents older than that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::PutPayload;

use super::backend::s3::S3;
use super::backend::Backend;
use super::error::StorageError;
use super::layout::Layout;
use super::Store;
use crate::oci::Digest;

/// How long after writing its intents a collector may still delete (a
/// batch is decided in well under a second).
pub const ACTS: Duration = Duration::from_secs(15);
/// How long a node honours an intent: `ACTS` and a minute for clocks. A
/// collector killed with intents written holds the pushes that claim those
/// blobs this long.
pub const TRUSTED: Duration = Duration::from_secs(75);
/// How often a node waiting for an intent to go looks again.
const WAIT: Duration = Duration::from_millis(100);
/// Claims in flight at once for one manifest.
const CONCURRENT: usize = 16;

/// Content for a marker no process wrote before (so its ETag changes).
fn fresh_stamp() -> Bytes {
    static NODE: OnceLock<String> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let node = NODE.get_or_init(|| hex::encode(rand::random::<[u8; 8]>()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    Bytes::from(format!("{node} {nanos} {seq}"))
}

/// Whether an intent written at `written` (object-store time) still holds.
pub fn intent_is_live(written: SystemTime, now: SystemTime) -> bool {
    now.duration_since(written).unwrap_or_default() < TRUSTED
}

/// Claim a blob that is probably new (an upload's, a manifest's own
/// content): one look first, and a claim only if it is there. A blob that
/// is not there needs none: whoever stores it makes it new, and a
/// collection leaves new blobs alone.
pub async fn claim_if_present(
    s3: &S3,
    layout: &Layout,
    digest: &Digest,
) -> Result<bool, StorageError> {
    if s3.head(&layout.blob_data(digest)).await?.is_none() {
        return Ok(false);
    }
    claim(s3, layout, digest).await
}

/// Claim `digest` for a push (steps 1 to 3 above): whether the blob exists,
/// and, if it does, that no collection will delete it now.
pub async fn claim(s3: &S3, layout: &Layout, digest: &Digest) -> Result<bool, StorageError> {
    let began = Instant::now();
    let intents = layout.deletion_intents(digest);
    loop {
        s3.put(
            &layout.in_use_marker(digest),
            PutPayload::from(fresh_stamp()),
        )
        .await?;
        let now = SystemTime::now();
        let held = s3
            .list_all(&intents)
            .await?
            .iter()
            .any(|i| intent_is_live(i.modified, now));
        if !held {
            return Ok(s3.head(&layout.blob_data(digest)).await?.is_some());
        }
        // A collection is deciding about this blob: it takes milliseconds,
        // unless the collector died, and then the intent lapses.
        if began.elapsed() > TRUSTED {
            return Err(StorageError::Unavailable(format!(
                "blob {digest} has been held by a collection for {}s",
                TRUSTED.as_secs()
            )));
        }
        tokio::time::sleep(WAIT).await;
    }
}

impl Store {
    /// Claim blobs a push is about to rely on: for each, whether it exists;
    /// one that does is kept by any collection running now. On a file
    /// system the blob's time is touched (see `gc`), in a bucket it is
    /// claimed as above, several at once.
    pub(super) fn claim_blobs(&self, digests: &[Digest]) -> Result<Vec<bool>, StorageError> {
        match &self.backend {
            Backend::Filesystem(_) => digests.iter().map(|d| self.touch_blob(d)).collect(),
            Backend::S3(s3) => {
                let claims =
                    futures_util::stream::iter(digests.iter().map(|d| claim(s3, &self.layout, d)))
                        .buffered(CONCURRENT)
                        .try_collect();
                s3.wait(claims)
            }
        }
    }

    /// `claim_blobs` for one blob that is probably new (a manifest's own
    /// content): see `claim_if_present`.
    pub(super) fn claim_if_present(&self, digest: &Digest) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Filesystem(_) => self.touch_blob(digest),
            Backend::S3(s3) => s3.wait(claim_if_present(s3, &self.layout, digest)),
        }
    }

    fn touch_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.backend.objects().touch(&self.layout.blob_data(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_holds_for_a_while_then_lapses() {
        let now = SystemTime::now();
        assert!(intent_is_live(now, now));
        assert!(intent_is_live(
            now - (TRUSTED - Duration::from_secs(1)),
            now
        ));
        assert!(!intent_is_live(now - TRUSTED, now));
        // Written by a clock ahead of ours: live.
        assert!(intent_is_live(now + Duration::from_secs(30), now));
        assert!(
            TRUSTED > ACTS,
            "nodes honour an intent longer than a collector acts on it"
        );
    }

    #[test]
    fn every_stamp_is_new() {
        assert_ne!(fresh_stamp(), fresh_stamp());
    }
}
