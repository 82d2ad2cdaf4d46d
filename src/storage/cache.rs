//! Manifest bytes kept in memory, by digest. Content-addressed bytes never
//! change for their digest, so serving them from memory is never stale;
//! whether a repository may see them (its revision link, its tag) is still
//! read from the store on every request. In a bucket this saves a request
//! to the object store on every manifest GET.
//!
//! Bounded by bytes: past the bound, entries are dropped (in no particular
//! order) until a quarter is free again; a bound, not a ranking of use.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;

use crate::oci::Digest;

pub struct ManifestBytes {
    map: DashMap<Digest, Bytes>,
    held: AtomicUsize,
    cap: usize,
}

impl ManifestBytes {
    pub fn new(cap: usize) -> ManifestBytes {
        ManifestBytes {
            map: DashMap::new(),
            held: AtomicUsize::new(0),
            cap,
        }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.map.contains_key(digest)
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.map.get(digest).map(|b| b.clone())
    }

    pub fn put(&self, digest: &Digest, bytes: &Bytes) {
        // One large manifest must not push out many small ones.
        if bytes.len() > self.cap / 64 || self.map.contains_key(digest) {
            return;
        }
        if self.map.insert(digest.clone(), bytes.clone()).is_none() {
            let held = self.held.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
            if held > self.cap {
                self.shrink();
            }
        }
    }

    fn shrink(&self) {
        let goal = self.cap / 4 * 3;
        let victims: Vec<Digest> = self
            .map
            .iter()
            .scan(self.held.load(Ordering::Relaxed), |held, e| {
                (*held > goal).then(|| {
                    *held = held.saturating_sub(e.value().len());
                    e.key().clone()
                })
            })
            .collect();
        for d in victims {
            if let Some((_, b)) = self.map.remove(&d) {
                self.held.fetch_sub(b.len(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound() {
        let cache = ManifestBytes::new(64 * 1024);
        for i in 0..1000u32 {
            let bytes = Bytes::from(vec![i as u8; 700]);
            cache.put(&Digest::sha256(&i.to_be_bytes()), &bytes);
            assert!(cache.held.load(Ordering::Relaxed) <= 64 * 1024);
        }
        let last = Digest::sha256(&999u32.to_be_bytes());
        assert_eq!(cache.get(&last).map(|b| b.len()), Some(700));
        // Too large for the cache: not kept.
        let big = Digest::sha256(b"big");
        cache.put(&big, &Bytes::from(vec![0u8; 2048]));
        assert!(cache.get(&big).is_none());
    }
}
