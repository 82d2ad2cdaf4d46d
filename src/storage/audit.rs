//! Reading the store whole, for `verify`: which blobs exist, which
//! manifests a repository holds, whether a link is where pulls look for
//! it, and a blob's bytes hashed as they are read. Nothing here writes.

use std::io::{self, Read};
use std::sync::Arc;

use super::backend::Backend;
use super::error::StorageError;
use super::Store;
use crate::oci::{Digest, RepoName};

/// Bytes a blob is read in: one buffer per blob being read.
const READ_CHUNK: usize = 1 << 20;

impl Store {
    /// Every blob in the store (`blobs/<algorithm>/<xx>/<hex>/data`), in no
    /// particular order.
    pub fn blob_digests(&self) -> Result<Vec<Digest>, StorageError> {
        let keys = self.backend.objects().walk(&self.layout.blobs_dir())?;
        Ok(keys
            .iter()
            .filter_map(|key| match key.split('/').collect::<Vec<_>>()[..] {
                [algorithm, _, hex, "data"] => format!("{algorithm}:{hex}").parse().ok(),
                _ => None,
            })
            .collect())
    }

    /// The manifests a repository holds: its revisions with a link.
    pub fn revisions(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError> {
        let keys = self
            .backend
            .objects()
            .walk(&self.layout.revisions_dir(repo))?;
        Ok(keys
            .iter()
            .filter_map(|key| match key.split('/').collect::<Vec<_>>()[..] {
                [algorithm, hex, "link"] => format!("{algorithm}:{hex}").parse().ok(),
                _ => None,
            })
            .collect())
    }

    /// Whether `repo` links the blob, so that pulls through it find it.
    pub fn has_layer_link(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.backend.exists(&self.layout.layer_link(repo, digest))
    }

    /// Whether `repo` holds the manifest.
    pub fn has_revision(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.backend
            .exists(&self.layout.revision_link(repo, digest))
    }

    /// A blob's whole bytes (a manifest), or `None` if it is not there.
    pub fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend.objects().read(&self.layout.blob_data(digest))
    }

    /// Read a blob through once: its size and the digest of what was read,
    /// or `None` if it is not there. Memory: one buffer of 1 MiB.
    pub async fn hash_blob(
        self: &Arc<Self>,
        digest: &Digest,
    ) -> Result<Option<(u64, Digest)>, StorageError> {
        let key = self.layout.blob_data(digest);
        let mut hasher = digest.algorithm().hasher();
        let mut size = 0u64;
        match &self.backend {
            Backend::Filesystem(_) => {
                let k = key.clone();
                let read = tokio::task::spawn_blocking(move || -> io::Result<_> {
                    let mut file = match std::fs::File::open(&k) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                        r => r?,
                    };
                    let mut buf = vec![0u8; READ_CHUNK];
                    loop {
                        match file.read(&mut buf) {
                            Ok(0) => return Ok(Some((size, hasher.finish()))),
                            Ok(n) => {
                                hasher.update(&buf[..n]);
                                size += n as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                })
                .await
                .map_err(|e| StorageError::io(&key, io::Error::other(e)))?;
                read.map_err(|e| StorageError::io(&key, e))
            }
            Backend::S3(_) => {
                use futures_util::StreamExt;
                let (me, d) = (self.clone(), digest.clone());
                let len = tokio::task::spawn_blocking(move || me.blob_size(&d))
                    .await
                    .map_err(|e| StorageError::io(&key, io::Error::other(e)))??;
                let Some(len) = len else {
                    return Ok(None);
                };
                let mut stream = match self.read_object(digest, 0, len).await {
                    Err(StorageError::BlobUnknown(_)) => return Ok(None),
                    r => r?,
                };
                while let Some(piece) = stream.next().await {
                    let piece = piece.map_err(|e| StorageError::io(&key, e))?;
                    hasher.update(&piece);
                    size += piece.len() as u64;
                }
                Ok(Some((size, hasher.finish())))
            }
        }
    }
}
