//! The storage seam: the few operations the store needs from where its
//! bytes live, and the two places they can live.
//!
//! Every key is a path built by `storage::layout` (Distribution's layout);
//! a backend maps it to a file under the root directory or to an object
//! in a bucket. Small objects (links, manifests, upload state) go through
//! [`Objects`]; the bulk data paths (an upload's bytes, a blob's download)
//! are specific to each backend and chosen in `uploads` and `blobs` by
//! matching on [`Backend`].
//!
//! The methods are blocking: the store runs them on the blocking pool. The
//! object-store backend waits there for its asynchronous client.

pub mod fs;
pub mod s3;

use std::path::Path;
use std::time::SystemTime;

use super::error::StorageError;
use crate::oci::Digest;

/// What a stat tells about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
}

/// One name in a listed directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// A directory (a common prefix in a bucket) rather than a file.
    pub is_dir: bool,
}

/// The operations on small objects that both backends provide, with the
/// same meaning; one test suite (below) runs against each.
pub trait Objects: Send + Sync {
    /// The whole object, or `None` if it does not exist.
    fn read(&self, key: &Path) -> Result<Option<Vec<u8>>, StorageError>;
    /// Write the whole object atomically and durably: a reader sees the old
    /// content, or none, or all of the new.
    fn write(&self, key: &Path, data: &[u8]) -> Result<(), StorageError>;
    /// Size and modification time, or `None` if it does not exist.
    fn stat(&self, key: &Path) -> Result<Option<Meta>, StorageError>;
    /// Mark an object as used now (see `gc`); `false` if it does not exist.
    fn touch(&self, key: &Path) -> Result<bool, StorageError>;
    /// Remove one object; absent is fine.
    fn delete(&self, key: &Path) -> Result<(), StorageError>;
    /// Remove a directory and everything under it; absent is fine.
    fn delete_dir(&self, dir: &Path) -> Result<(), StorageError>;
    /// The names directly under a directory; empty if it does not exist.
    fn list(&self, dir: &Path) -> Result<Vec<Entry>, StorageError>;
    /// The names of the files directly under `dir` that sort after `after`,
    /// in order: one request in a bucket, whatever came before.
    fn list_after(&self, dir: &Path, after: &str) -> Result<Vec<String>, StorageError>;
    /// Every file under `dir`, at any depth, as paths relative to it: one
    /// paged listing in a bucket, where a listing per directory would cost a
    /// round trip each.
    fn walk(&self, dir: &Path) -> Result<Vec<String>, StorageError>;
    /// Several whole objects (each `None` if it does not exist); a bucket
    /// reads them concurrently.
    fn read_many(&self, keys: &[std::path::PathBuf]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|k| self.read(k)).collect()
    }
    /// The size and time of several objects (each `None` if it does not
    /// exist); a bucket asks for them concurrently.
    fn stat_many(&self, keys: &[std::path::PathBuf]) -> Result<Vec<Option<Meta>>, StorageError> {
        keys.iter().map(|k| self.stat(k)).collect()
    }
    /// Create an empty object that matters by its name alone, without the
    /// cost of making it durable (a note of change: losing one in a crash
    /// delays what others see, it loses nothing).
    fn mark(&self, key: &Path) -> Result<(), StorageError>;
}

/// The digest a link file holds (`sha256:<hex>`, no newline; we accept one).
pub fn parse_link(key: &Path, bytes: &[u8]) -> Result<Digest, StorageError> {
    String::from_utf8_lossy(bytes)
        .trim()
        .parse()
        .map_err(|e| StorageError::invalid(key, format!("bad link: {e}")))
}

/// Where a store's bytes live.
pub enum Backend {
    Filesystem(fs::Filesystem),
    S3(s3::S3),
}

impl Backend {
    pub fn objects(&self) -> &dyn Objects {
        match self {
            Backend::Filesystem(b) => b,
            Backend::S3(b) => b,
        }
    }

    /// The backend's name, as in the config (`filesystem`, `s3`).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Filesystem(_) => "filesystem",
            Backend::S3(_) => "s3",
        }
    }

    pub fn note(&self, key: &Path) -> Result<(), StorageError> {
        self.objects().mark(key)
    }

    pub fn list_after(&self, dir: &Path, after: &str) -> Result<Vec<String>, StorageError> {
        self.objects().list_after(dir, after)
    }

    pub fn exists(&self, key: &Path) -> Result<bool, StorageError> {
        Ok(self.objects().stat(key)?.is_some())
    }

    /// Read a link file: `None` if it does not exist, an error if it does
    /// not hold a digest.
    pub fn read_link(&self, key: &Path) -> Result<Option<Digest>, StorageError> {
        match self.objects().read(key)? {
            Some(bytes) => parse_link(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Write a link file naming `digest`. On a file system one that already
    /// does is touched instead (a link in use must look recently used, see
    /// `gc`; a touch costs less than a durable write). In a bucket the link
    /// is put whole whatever was there: one request, where reading it first
    /// would take one or two.
    pub fn write_link(&self, key: &Path, digest: &Digest) -> Result<(), StorageError> {
        let unchanged = match self {
            Backend::Filesystem(_) => {
                self.read_link(key)?.as_ref() == Some(digest) && self.objects().touch(key)?
            }
            Backend::S3(_) => false,
        };
        if unchanged {
            return Ok(());
        }
        self.objects().write(key, digest.to_string().as_bytes())
    }

    /// Remove a link's directory, and on a file system the parents it
    /// leaves empty, up to `stop`.
    pub fn delete_link_dir(&self, dir: &Path, stop: &Path) -> Result<(), StorageError> {
        self.objects().delete_dir(dir)?;
        if let Backend::Filesystem(_) = self {
            fs::prune_empty_parents(dir, stop);
        }
        Ok(())
    }
}

/// The one suite every backend must pass, the same calls with the same
/// answers: run by the unit tests on a temporary directory and by the
/// integration tests on a real bucket.
#[doc(hidden)]
pub mod suite {
    use super::*;

    pub fn run(b: &dyn Objects, root: &Path) {
        let key = root.join("a/b/c/link");
        assert_eq!(b.read(&key).unwrap(), None);
        assert_eq!(b.stat(&key).unwrap(), None);
        assert!(!b.touch(&key).unwrap());
        assert!(b.list(&root.join("a")).unwrap().is_empty());

        b.write(&key, b"one").unwrap();
        assert_eq!(b.read(&key).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(b.stat(&key).unwrap().map(|m| m.size), Some(3));
        b.write(&key, b"second").unwrap();
        assert_eq!(b.read(&key).unwrap().as_deref(), Some(&b"second"[..]));
        assert!(b.touch(&key).unwrap());

        b.write(&root.join("a/b/d"), b"x").unwrap();
        b.write(&root.join("a/e/f"), b"y").unwrap();
        let mut names = b.list(&root.join("a/b")).unwrap();
        names.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            names,
            vec![
                Entry {
                    name: "c".into(),
                    is_dir: true
                },
                Entry {
                    name: "d".into(),
                    is_dir: false
                }
            ]
        );
        // A name that is a file is not a directory to list.
        assert!(b.list(&root.join("a/b/d")).unwrap().is_empty());
        // Reading below a file finds nothing rather than failing.
        assert_eq!(b.read(&root.join("a/b/d/x")).unwrap(), None);

        b.delete_dir(&root.join("a/b")).unwrap();
        assert_eq!(b.read(&key).unwrap(), None);
        assert_eq!(b.read(&root.join("a/b/d")).unwrap(), None);
        assert_eq!(
            b.read(&root.join("a/e/f")).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        b.delete_dir(&root.join("a/b")).unwrap();
        b.delete_dir(&root.join("nothing/here")).unwrap();

        let mut walked = b.walk(&root.join("a")).unwrap();
        walked.sort();
        assert_eq!(walked, ["e/f"]);
        assert!(b.walk(&root.join("nothing")).unwrap().is_empty());
        let many = b
            .read_many(&[root.join("a/e/f"), root.join("a/none")])
            .unwrap();
        assert_eq!(many, [Some(b"y".to_vec()), None]);
        let stats = b
            .stat_many(&[root.join("a/none"), root.join("a/e/f")])
            .unwrap();
        assert_eq!(stats[0], None);
        assert_eq!(stats[1].as_ref().map(|m| m.size), Some(1));

        let notes = root.join("notes");
        assert!(b.list_after(&notes, "").unwrap().is_empty());
        for n in ["003", "001", "002"] {
            b.mark(&notes.join(n)).unwrap();
        }
        assert_eq!(b.list_after(&notes, "").unwrap(), ["001", "002", "003"]);
        assert_eq!(b.list_after(&notes, "001").unwrap(), ["002", "003"]);
        assert!(b.list_after(&notes, "003").unwrap().is_empty());
        b.delete(&notes.join("002")).unwrap();
        b.delete(&notes.join("002")).unwrap();
        assert_eq!(b.list_after(&notes, "0").unwrap(), ["001", "003"]);
    }
}
