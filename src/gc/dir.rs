//! A directory the sweep holds open, and the calls it makes relative to
//! it. A deletion names `<hex>/data` from its prefix directory instead of
//! a path from the storage root, so the kernel looks up two names instead
//! of ten for each of the five calls a deletion makes (path lookups were
//! about a sixth of a sweep's system time).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{renameat, statat, unlinkat, AtFlags};

use super::GcError;

pub(super) struct OpenDir {
    handle: File,
    path: PathBuf,
}

/// What the sweep reads of a file before deciding.
pub(super) struct Seen {
    pub modified: SystemTime,
    pub size: u64,
}

impl OpenDir {
    /// `None` if the directory does not exist (a concurrent deletion, or
    /// nothing was ever stored there).
    pub fn open(path: &Path) -> Result<Option<OpenDir>, GcError> {
        match File::open(path) {
            Ok(handle) => Ok(Some(OpenDir {
                handle,
                path: path.to_path_buf(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(GcError::io(path, e)),
        }
    }

    /// The names in the directory (those that are not UTF-8 are no names
    /// of ours, and are skipped).
    pub fn names(&self) -> Result<Vec<String>, GcError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(GcError::io(&self.path, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| GcError::io(&self.path, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// A file's time and size, without following a symbolic link; `None`
    /// if it is not there.
    pub fn look(&self, name: &str) -> io::Result<Option<Seen>> {
        match statat(&self.handle, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let secs = u64::try_from(st.st_mtime).unwrap_or(0);
                let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
                Ok(Some(Seen {
                    modified: SystemTime::UNIX_EPOCH + Duration::new(secs, nanos),
                    size: u64::try_from(st.st_size).unwrap_or(0),
                }))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(renameat(&self.handle, from, &self.handle, to)?)
    }

    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        Ok(unlinkat(&self.handle, name, AtFlags::empty())?)
    }

    pub fn remove_dir(&self, name: &str) -> io::Result<()> {
        Ok(unlinkat(&self.handle, name, AtFlags::REMOVEDIR)?)
    }

    /// The whole path of `name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// An error about `name`, named by its whole path.
    pub fn error(&self, name: &str, e: io::Error) -> GcError {
        GcError::io(&self.join(name), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_act_on_names_relative_to_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("ab")).unwrap();
        fs::write(tmp.path().join("ab/data"), b"12345").unwrap();
        let dir = OpenDir::open(tmp.path()).unwrap().unwrap();
        assert_eq!(dir.names().unwrap(), vec!["ab".to_string()]);

        let seen = dir.look("ab/data").unwrap().unwrap();
        assert_eq!(seen.size, 5);
        let age = SystemTime::now().duration_since(seen.modified).unwrap();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert!(dir.look("ab/none").unwrap().is_none());

        dir.rename("ab/data", "ab/data.x").unwrap();
        assert!(tmp.path().join("ab/data.x").exists());
        assert!(dir.remove_dir("ab").is_err(), "not empty yet");
        dir.remove_file("ab/data.x").unwrap();
        dir.remove_dir("ab").unwrap();
        assert!(!tmp.path().join("ab").exists());
        let e = dir.remove_file("ab/data.x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(dir.error("ab", e).to_string().contains("/ab:"));

        assert!(OpenDir::open(&tmp.path().join("none")).unwrap().is_none());
    }
}
