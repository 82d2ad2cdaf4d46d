//! The file-system backend: Distribution's layout as files under the root
//! directory. Writes are atomic (a temp file in `_tmp`, fsync, rename,
//! fsync of the directory); a touch sets the modification time.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Entry, Meta, Objects};
use crate::storage::error::StorageError;

/// The files of one store; `tmp` is the staging directory for atomic writes.
pub struct Filesystem {
    tmp: PathBuf,
}

impl Filesystem {
    pub fn new(tmp: PathBuf) -> Filesystem {
        Filesystem { tmp }
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }
}

impl Objects for Filesystem {
    fn read(&self, key: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        match fs::read(key) {
            Ok(b) => Ok(Some(b)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StorageError::io(key, e)),
        }
    }

    fn write(&self, key: &Path, data: &[u8]) -> Result<(), StorageError> {
        let mut tmp = TempFile::create(&self.tmp)?;
        tmp.write_all(data)?;
        tmp.persist(key)
    }

    fn stat(&self, key: &Path) -> Result<Option<Meta>, StorageError> {
        match fs::metadata(key) {
            Ok(m) => Ok(Some(Meta {
                size: m.len(),
                modified: m.modified().map_err(|e| StorageError::io(key, e))?,
            })),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StorageError::io(key, e)),
        }
    }

    fn touch(&self, key: &Path) -> Result<bool, StorageError> {
        touch(key)
    }

    fn delete(&self, key: &Path) -> Result<(), StorageError> {
        match fs::remove_file(key) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(StorageError::io(key, e)),
        }
    }

    fn delete_dir(&self, dir: &Path) -> Result<(), StorageError> {
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(StorageError::io(dir, e)),
        }
    }

    fn list(&self, dir: &Path) -> Result<Vec<Entry>, StorageError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if absent(&e) => return Ok(vec![]),
            Err(e) => return Err(StorageError::io(dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no name of ours
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.push(Entry { name, is_dir });
        }
        Ok(out)
    }

    fn list_after(&self, dir: &Path, after: &str) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .list(dir)?
            .into_iter()
            .filter(|e| !e.is_dir && e.name.as_str() > after)
            .map(|e| e.name)
            .collect();
        names.sort();
        Ok(names)
    }

    fn walk(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            for e in self.list(&dir.join(&rel))? {
                let path = if rel.is_empty() {
                    e.name
                } else {
                    format!("{rel}/{}", e.name)
                };
                if e.is_dir {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    fn mark(&self, key: &Path) -> Result<(), StorageError> {
        match Filesystem::mark_file(key) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = key.parent().expect("a key has a directory");
                fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
                Filesystem::mark_file(key).map_err(|e| StorageError::io(key, e))
            }
            r => r.map_err(|e| StorageError::io(key, e)),
        }
    }
}

impl Filesystem {
    fn mark_file(key: &Path) -> io::Result<()> {
        File::create(key).map(drop)
    }
}

/// Not found, or a parent that is a file (ENOTDIR): nothing there.
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// A temporary file in `_tmp` that is removed on drop unless persisted.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn create(dir: &Path) -> Result<TempFile, StorageError> {
        let name = format!("{}.tmp", hex::encode(rand::random::<[u8; 12]>()));
        let path = dir.join(name);
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
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
    // A collector removes the directories its deletions empty, and may
    // remove one created here before the rename lands in it: then it is
    // created again (a few times; a missing `from` ends it too).
    let mut created = 0;
    loop {
        match fs::rename(from, to) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound && created < 4 => {
                created += 1;
                fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
            }
            Err(e) => return Err(StorageError::io(to, e)),
        }
    }
    sync_dir(parent)
}

pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
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
///
/// A touch is an open, then a time set on the open file: the collector may
/// move the file aside and look at its (old) time between the two, and
/// delete it. So once the time is set, the path must still name the file
/// touched; if it does not, the touch counts as having found nothing (a
/// touch that raced with a move the collector then undid refuses one
/// manifest needlessly, which is safe).
pub fn touch(path: &Path) -> Result<bool, StorageError> {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => {
            f.set_modified(std::time::SystemTime::now())
                .map_err(|e| StorageError::io(path, e))?;
            still_named(&f, path)
        }
        Err(e) if absent(&e) => Ok(false),
        // Not ours to write (a read-only store): existence is all we learn.
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.kind() == io::ErrorKind::ReadOnlyFilesystem =>
        {
            match fs::symlink_metadata(path) {
                Ok(_) => Ok(true),
                Err(e) if absent(&e) => Ok(false),
                Err(e) => Err(StorageError::io(path, e)),
            }
        }
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Whether `path` names the open file `f` (not another, nor nothing).
fn still_named(f: &File, path: &Path) -> Result<bool, StorageError> {
    use std::os::unix::fs::MetadataExt;
    let open = f.metadata().map_err(|e| StorageError::io(path, e))?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.ino() == open.ino() && now.dev() == open.dev()),
        Err(e) if absent(&e) => Ok(false),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Read a link file: `None` if it does not exist, an error if it is
/// unreadable or does not hold a digest. (For the collector, which walks
/// the files itself.)
pub fn read_link(path: &Path) -> Result<Option<crate::oci::Digest>, StorageError> {
    match fs::read(path) {
        Ok(bytes) => super::parse_link(path, &bytes).map(Some),
        Err(e) if absent(&e) => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a touch checks once the time is set: a file moved aside (or
    /// replaced by another) between its open and the time is not the one
    /// the path names, so the touch found nothing.
    #[test]
    fn a_touched_file_moved_aside_meanwhile_counts_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let aside = dir.path().join("data.gc-aside");
        fs::write(&path, b"blob").unwrap();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(still_named(&f, &path).unwrap());
        fs::rename(&path, &aside).unwrap();
        assert!(!still_named(&f, &path).unwrap(), "moved aside");
        fs::write(&path, b"blob").unwrap();
        assert!(!still_named(&f, &path).unwrap(), "another file now");
        fs::rename(&aside, &path).unwrap();
        assert!(still_named(&f, &path).unwrap(), "put back");
        assert!(touch(&path).unwrap());
        assert!(!touch(&dir.path().join("none")).unwrap());
    }

    #[test]
    fn passes_the_backend_suite() {
        let dir = tempfile::tempdir().unwrap();
        let b = Filesystem::new(dir.path().join("_tmp"));
        crate::storage::backend::suite::run(&b, dir.path());
    }
}
