//! The referrers of each subject, per repository: built from the
//! repository's manifest revisions on first use, then kept by our writes.
//!
//! Distribution 2.8 keeps no referrers index, so a store it wrote is read
//! the same way: every revision is parsed once and its `subject` noted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::error::StorageError;
use super::manifests::referrer_descriptor;
use super::Store;
use crate::oci::{Descriptor, Digest, Manifest, RepoName};

type BySubject = HashMap<Digest, Vec<Descriptor>>;

#[derive(Default)]
pub(super) struct Cache {
    repos: DashMap<RepoName, Arc<Mutex<Option<BySubject>>>>,
}

impl Cache {
    fn slot(&self, repo: &RepoName) -> Arc<Mutex<Option<BySubject>>> {
        self.repos.entry(repo.clone()).or_default().clone()
    }

    pub fn get(
        &self,
        store: &Store,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, StorageError> {
        let slot = self.slot(repo);
        let mut guard = slot.lock().unwrap();
        if guard.is_none() {
            *guard = Some(scan(store, repo)?);
        }
        // A collector running beside the server (or another node) may have
        // deleted a referrer since the list was built: drop the ones whose
        // revision link is gone.
        let mut list = match guard.as_mut().and_then(|m| m.get_mut(subject)) {
            Some(list) => {
                // Asked first, then dropped: an error leaves the list whole.
                let mut gone = Vec::new();
                for d in list.iter() {
                    if !store
                        .backend
                        .exists(&store.layout.revision_link(repo, &d.digest))?
                    {
                        gone.push(d.digest.clone());
                    }
                }
                list.retain(|d| !gone.contains(&d.digest));
                list.clone()
            }
            None => vec![],
        };
        list.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(list)
    }

    /// Note a new referrer, if the repository's list has been built.
    pub fn add(&self, repo: &RepoName, subject: &Digest, desc: Descriptor) {
        let slot = self.slot(repo);
        let mut guard = slot.lock().unwrap();
        if let Some(map) = guard.as_mut() {
            let list = map.entry(subject.clone()).or_default();
            if !list.iter().any(|d| d.digest == desc.digest) {
                list.push(desc);
            }
        }
    }

    /// Drop what is known of a repository (another process changed it);
    /// it is read again on its next use.
    pub fn forget(&self, repo: &RepoName) {
        self.repos.remove(repo);
    }

    pub fn forget_all(&self) {
        self.repos.clear();
    }

    pub fn remove(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) {
        let slot = self.slot(repo);
        let mut guard = slot.lock().unwrap();
        if let Some(list) = guard.as_mut().and_then(|m| m.get_mut(subject)) {
            list.retain(|d| d.digest != *referrer);
        }
    }
}

fn scan(store: &Store, repo: &RepoName) -> Result<BySubject, StorageError> {
    let mut map = BySubject::new();
    let (layout, objects) = (&store.layout, store.backend.objects());
    let revisions = layout.revisions_dir(repo);
    for alg in objects.list(&revisions)? {
        for hex in objects.list(&revisions.join(&alg.name))? {
            let Ok(digest) = format!("{}:{}", alg.name, hex.name).parse::<Digest>() else {
                continue;
            };
            if !store.backend.exists(&layout.revision_link(repo, &digest))? {
                continue;
            }
            // Content that is gone or does not parse refers to nothing.
            let Some(bytes) = objects.read(&layout.blob_data(&digest))? else {
                continue;
            };
            let Ok(m) = Manifest::parse(&bytes, None) else {
                continue;
            };
            if let Some(subject) = &m.subject {
                map.entry(subject.digest.clone())
                    .or_default()
                    .push(referrer_descriptor(&m, &digest, bytes.len() as u64));
            }
        }
    }
    Ok(map)
}
