//! The storage layer's one error type.

use std::io;
use std::path::Path;

use crate::oci::{Digest, ManifestError};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("upload unknown to registry")]
    UploadUnknown,
    #[error("provided digest {expected} did not match uploaded content {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("chunk starts at {got} but the upload has {have} bytes; send the next chunk from offset {have}")]
    ChunkOutOfOrder { have: u64, got: u64 },
    #[error("{0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("the upload body ended before it was complete: {0}")]
    ClientGone(io::Error),
    #[error("deletes are disabled (storage.delete.enabled is false)")]
    DeleteDisabled,
    #[error("the registry is in read-only mode (storage.maintenance.readonly)")]
    ReadOnly,
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// The object store cannot be reached or keeps failing: try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    pub fn io(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Content that is there but is not what the layout says it must be.
    pub fn invalid(path: &Path, why: String) -> StorageError {
        StorageError::io(path, io::Error::new(io::ErrorKind::InvalidData, why))
    }

    /// The underlying I/O error kind, for errors caused by the disk.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}
