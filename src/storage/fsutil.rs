//! Small file-system helpers: atomic writes, link files, tidy removal.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::layout::Layout;
use crate::oci::Digest;

/// A temporary file in `_tmp` that is removed on drop unless persisted.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn create(layout: &Layout) -> Result<TempFile, StorageError> {
        let dir = layout.tmp_dir();
        let name = format!("{}.tmp", hex::encode(rand::random::<[u8; 12]>()));
        let path = dir.join(name);
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
                File::create(&path).map_err(|e| StorageError::io(&path, e))?
            }
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("temp file open until persisted");
        file.write_all(data)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// fsync, then rename to `target` (creating its directory), then fsync
    /// the directory so the rename itself survives a crash.
    pub fn persist(mut self, target: &Path) -> Result<(), StorageError> {
        let file = self.file.take().expect("persist once");
        file.sync_all()
            .map_err(|e| StorageError::io(&self.path, e))?;
        drop(file);
        rename_into(&self.path, target)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Rename `from` to `to`, creating `to`'s parent, and fsync that parent.
pub fn rename_into(from: &Path, to: &Path) -> Result<(), StorageError> {
    let parent = to.parent().expect("target has a parent");
    if let Err(e) = fs::rename(from, to) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(StorageError::io(to, e));
        }
        fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
        fs::rename(from, to).map_err(|e| StorageError::io(to, e))?;
    }
    sync_dir(parent)
}

pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Write `data` to `target` atomically.
pub fn write_atomic(layout: &Layout, target: &Path, data: &[u8]) -> Result<(), StorageError> {
    let mut tmp = TempFile::create(layout)?;
    tmp.write_all(data)?;
    tmp.persist(target)
}

/// Write a link file naming `digest`; one that already does is touched
/// instead (see `touch`: a link in use must look recently used).
pub fn write_link(layout: &Layout, target: &Path, digest: &Digest) -> Result<(), StorageError> {
    if read_link(target)?.as_ref() == Some(digest) && touch(target)? {
        return Ok(());
    }
    write_atomic(layout, target, digest.to_string().as_bytes())
}

/// Set a file's modification time to now; `false` if it does not exist.
///
/// This is the server's half of the protocol that lets garbage collection
/// run beside it: before a manifest is stored, every blob and link it
/// depends on is touched. The collector deletes only files whose time is
/// older than its cutoff, and checks that time again after moving a file
/// aside: a file touched before the move is put back; a touch after the
/// move finds nothing, and the manifest is refused (the client uploads
/// the blob again). So nothing a stored manifest needs is ever deleted.
pub fn touch(path: &Path) -> Result<bool, StorageError> {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => {
            f.set_modified(std::time::SystemTime::now())
                .map_err(|e| StorageError::io(path, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => Ok(false),
        // Not ours to write (a read-only store): existence is all we learn.
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.kind() == io::ErrorKind::ReadOnlyFilesystem =>
        {
            exists(path)
        }
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Read a link file: `None` if it does not exist, an error if it is unreadable
/// or does not hold a digest.
pub fn read_link(path: &Path) -> Result<Option<Digest>, StorageError> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|e| {
            StorageError::io(
                path,
                io::Error::new(io::ErrorKind::InvalidData, format!("bad link: {e}")),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(20) => Ok(None), // ENOTDIR: a parent is a file
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Whether a path exists; an error other than not-found is an error.
pub fn exists(path: &Path) -> Result<bool, StorageError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(20) => Ok(false),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Remove a directory tree; absent is fine.
pub fn remove_dir(path: &Path) -> Result<(), StorageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Remove now-empty parent directories of `path` up to (not including) `stop`.
pub fn prune_empty_parents(path: &Path, stop: &Path) {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        if dir == stop || !dir.starts_with(stop) || fs::remove_dir(dir).is_err() {
            break;
        }
        cur = dir.parent();
    }
}
