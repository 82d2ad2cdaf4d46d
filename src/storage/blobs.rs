//! Blobs: content by digest in the global store, visible to a repository
//! through a link in its `_layers` (or, for manifests, `_manifests/revisions`).

use std::fs::File;
use std::io;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use super::backend::Backend;
use super::error::StorageError;
use super::Store;
use crate::oci::{Digest, RepoName};

/// A blob opened for a download: its size and where its bytes come from.
pub struct OpenBlob {
    pub size: u64,
    pub content: BlobContent,
}

pub enum BlobContent {
    /// A file, read by the server in positioned reads (or sent by the
    /// kernel); its path, to open it again for reads around the page cache.
    File(File, std::path::PathBuf),
    /// An object in a bucket: the server sends the client to a presigned
    /// URL (`Store::object_url`), or streams it (`Store::read_object`).
    Object(Digest),
}

impl Store {
    /// Where to send a client for an object's bytes (a presigned URL), or
    /// `None` when the server streams them itself (a file system, or
    /// `storage.redirect.disable`).
    pub async fn object_url(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        match &self.backend {
            Backend::S3(s3) if s3.redirect => s3
                .presigned_get(&self.layout.blob_data(digest))
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The bytes `start..start+len` of an object in a bucket, as they arrive.
    pub async fn read_object(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, StorageError> {
        let key = self.layout.blob_data(digest);
        match &self.backend {
            Backend::S3(s3) => match s3.read_range(&key, start, len).await {
                // Gone since it was opened (a collection, another node).
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                    Err(StorageError::BlobUnknown(digest.clone()))
                }
                r => r,
            },
            Backend::Filesystem(_) => Err(StorageError::invalid(
                &key,
                "objects are read from buckets only".into(),
            )),
        }
    }

    /// Size of a blob in the global store, if it exists. Read from the
    /// storage each time: garbage collection may remove what we saw before.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self
            .backend
            .objects()
            .stat(&self.layout.blob_data(digest))?
            .map(|m| m.size))
    }

    /// The whole content of a small blob linked in `repo` (an image config,
    /// for people to read); `None` if it is missing or larger than `max`.
    pub fn read_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        if !self.blob_linked(repo, digest)? {
            return Ok(None);
        }
        match self.remembered_size(digest)? {
            Some(size) if size <= max => {}
            _ => return Ok(None),
        }
        self.backend.objects().read(&self.layout.blob_data(digest))
    }

    /// Whether `repo` links the blob, as a layer/config or as a manifest.
    pub fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        Ok(self.backend.exists(&self.layout.layer_link(repo, digest))?
            || self
                .backend
                .exists(&self.layout.revision_link(repo, digest))?)
    }

    /// Size of a blob as seen from `repo`: linked there and present.
    pub fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, StorageError> {
        if !self.blob_linked(repo, digest)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        self.remembered_size(digest)?
            .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))
    }

    /// `blob_size`, answered from memory in a bucket once seen.
    fn remembered_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if let Some(size) = self.known_object_size(digest) {
            return Ok(Some(size));
        }
        let size = self.blob_size(digest)?;
        if let Some(size) = size {
            self.note_object_size(digest, size);
        }
        Ok(size)
    }

    /// The size of a blob the server streams from a bucket, if known (see
    /// `known_object_size`); `None` when it must be opened first, or when
    /// clients are sent to presigned URLs instead.
    pub fn streamed_object_size(&self, digest: &Digest) -> Option<u64> {
        match &self.backend {
            Backend::S3(s3) if !s3.redirect => self.known_object_size(digest),
            _ => None,
        }
    }

    /// In a bucket, a blob's size once seen, so that a HEAD or GET costs
    /// the object store one request (the repository's link) rather than
    /// two. A digest's size never changes; whether the blob is there is
    /// still asked every time (the link; a GET fails if the object went).
    /// On a file system a stat costs about what a lookup would, and the
    /// collector's protocol reads times there, so nothing is kept.
    fn known_object_size(&self, digest: &Digest) -> Option<u64> {
        match self.backend {
            Backend::S3(_) => self.object_sizes.get(digest).map(|s| *s),
            Backend::Filesystem(_) => None,
        }
    }

    fn note_object_size(&self, digest: &Digest, size: u64) {
        if let Backend::S3(_) = self.backend {
            // A bound, not a ranking: past a million sizes, start over.
            if self.object_sizes.len() >= 1 << 20 {
                self.object_sizes.clear();
            }
            self.object_sizes.insert(digest.clone(), size);
        }
    }

    /// Open a blob for reading, with its size.
    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<OpenBlob, StorageError> {
        if !self.blob_linked(repo, digest)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        let path = self.layout.blob_data(digest);
        match &self.backend {
            Backend::Filesystem(_) => match File::open(&path) {
                Ok(f) => {
                    let size = f.metadata().map_err(|e| StorageError::io(&path, e))?.len();
                    Ok(OpenBlob {
                        size,
                        content: BlobContent::File(f, path),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(StorageError::BlobUnknown(digest.clone()))
                }
                Err(e) => Err(StorageError::io(&path, e)),
            },
            Backend::S3(_) => match self.remembered_size(digest)? {
                Some(size) => Ok(OpenBlob {
                    size,
                    content: BlobContent::Object(digest.clone()),
                }),
                None => Err(StorageError::BlobUnknown(digest.clone())),
            },
        }
    }

    /// Unlink a blob from a repository. The content stays in the global
    /// store until garbage collection finds nothing else uses it.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.check_delete()?;
        let _repo = self.lock_repo(repo);
        let link = self.layout.layer_link(repo, digest);
        if !self.backend.exists(&link)? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        let dir = link.parent().expect("link has a directory");
        self.backend
            .delete_link_dir(dir, &self.layout.repo_dir(repo).join("_layers"))
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
        // Claimed, not just looked at: a collection running now keeps it.
        if !self.claim_blobs(std::slice::from_ref(digest))?[0] {
            return Ok(false);
        }
        self.link_blob(repo, digest)?;
        Ok(true)
    }

    /// Write the `_layers` link for a blob known to exist.
    pub(super) fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.backend
            .write_link(&self.layout.layer_link(repo, digest), digest)?;
        if self.index.add_repo(repo) {
            self.changed(repo)?;
        }
        Ok(())
    }
}
