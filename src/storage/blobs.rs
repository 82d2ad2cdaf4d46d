//! Blobs: content by digest in the global store, visible to a repository
//! through a link in its `_layers` (or, for manifests, `_manifests/revisions`).

use std::fs::{self, File};
use std::io;

use super::error::StorageError;
use super::fsutil::{exists, prune_empty_parents, remove_dir, write_link};
use super::Store;
use crate::oci::{Digest, RepoName};

impl Store {
    /// Size of a blob in the global store, if it exists. Read from the
    /// disk each time: garbage collection may remove what we saw before.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.layout.blob_data(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Whether `repo` links the blob, as a layer/config or as a manifest.
    pub fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        Ok(exists(&self.layout.layer_link(repo, digest))?
            || exists(&self.layout.revision_link(repo, digest))?)
    }

    /// Size of a blob as seen from `repo`: linked there and present.
    pub fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, StorageError> {
        if !self.blob_linked(repo, digest)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        self.blob_size(digest)?
            .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))
    }

    /// Open a blob for reading, with its size.
    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(File, u64), StorageError> {
        if !self.blob_linked(repo, digest)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        let path = self.layout.blob_data(digest);
        match File::open(&path) {
            Ok(f) => {
                let size = f.metadata().map_err(|e| StorageError::io(&path, e))?.len();
                Ok((f, size))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Unlink a blob from a repository. The content stays in the global
    /// store until garbage collection finds nothing else uses it.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.check_delete()?;
        let _repo = self.lock_repo(repo);
        let link = self.layout.layer_link(repo, digest);
        if !exists(&link)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        let dir = link.parent().expect("link has a directory");
        remove_dir(dir)?;
        prune_empty_parents(dir, &self.layout.repo_dir(repo).join("_layers"));
        Ok(())
    }

    /// Link an existing blob into `repo`: from `from` when given (it must be
    /// linked there), otherwise from the global store. Returns whether the
    /// blob was mounted; `false` means the client must upload it.
    pub fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool, StorageError> {
        self.check_writable()?;
        if let Some(from) = from {
            if !self.blob_linked(from, digest)? {
                return Ok(false);
            }
        }
        if self.blob_size(digest)?.is_none() {
            return Ok(false);
        }
        self.link_blob(repo, digest)?;
        Ok(true)
    }

    /// Write the `_layers` link for a blob known to exist.
    pub(super) fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        write_link(&self.layout, &self.layout.layer_link(repo, digest), digest)?;
        self.index.add_repo(repo);
        Ok(())
    }
}
