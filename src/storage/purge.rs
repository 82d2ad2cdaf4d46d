//! Upload purging (`storage.maintenance.uploadpurging`, and the last phase
//! of a garbage collection): upload sessions idle longer than a purge age
//! are removed, and so are temp files a crash left in `_tmp`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::backend::{Backend, Objects};
use super::error::StorageError;
use super::layout::{Layout, UploadId};
use super::Store;
use crate::oci::RepoName;

/// What one purge pass found (and removed, unless it was a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub uploads: usize,
    pub temp_files: usize,
    pub bytes: u64,
}

/// How a purge runs.
#[derive(Clone, Copy, Debug)]
pub struct PurgeAges {
    /// Sessions whose data was last written longer ago than this go.
    pub upload: Duration,
    /// Temp files older than this go.
    pub temp: Duration,
}

impl Store {
    /// Remove upload sessions and temp files older than `age`, leaving
    /// alone any session a request holds. With `dry_run`, only report.
    pub fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport, StorageError> {
        let ages = PurgeAges {
            upload: age,
            temp: age,
        };
        purge(&self.backend, &self.layout, ages, dry_run, |repo, id, _| {
            self.purge_session(repo, id)
        })
    }
}

/// Walk every `_uploads` directory (repositories with uploads but no
/// content yet included) and, on a file system, `_tmp`. `remove` takes an
/// old session away and says whether it did (the server skips sessions in
/// use).
pub fn purge(
    backend: &Backend,
    layout: &Layout,
    ages: PurgeAges,
    dry_run: bool,
    remove: impl Fn(&RepoName, &UploadId, &Path) -> Result<bool, StorageError>,
) -> Result<PurgeReport, StorageError> {
    let objects = backend.objects();
    let now = SystemTime::now();
    let older = |modified: SystemTime, age: Duration| {
        now.duration_since(modified).unwrap_or_default() >= age
    };
    let mut report = PurgeReport::default();
    let mut stack = vec![layout.repositories_dir()];
    while let Some(dir) = stack.pop() {
        for entry in objects.list(&dir)? {
            if !entry.is_dir {
                continue;
            }
            let path = dir.join(&entry.name);
            if entry.name == "_uploads" {
                let rel = dir.strip_prefix(layout.repositories_dir()).unwrap_or(&dir);
                // Under a directory that is no valid name no request can
                // hold a session: its old ones are removed directly.
                let repo = rel.to_str().and_then(|s| s.parse::<RepoName>().ok());
                for upload in objects.list(&path)? {
                    let Some(id) = UploadId::parse(&upload.name) else {
                        continue;
                    };
                    let session = path.join(&upload.name);
                    // Age from the last write: a slow chunked upload that
                    // is still growing is not abandoned.
                    let last = match upload.is_dir {
                        true => last_write(objects, &session)?,
                        // A session that is one file (see `uploads::file`).
                        false => objects.stat(&session)?,
                    };
                    let Some(last) = last else {
                        continue;
                    };
                    if !older(last.modified, ages.upload) {
                        continue;
                    }
                    let removed = dry_run
                        || match &repo {
                            Some(repo) => remove(repo, &id, &session)?,
                            None if upload.is_dir => objects.delete_dir(&session).map(|()| true)?,
                            None => objects.delete(&session).map(|()| true)?,
                        };
                    if removed {
                        report.uploads += 1;
                        report.bytes += last.size;
                    }
                }
            } else if !entry.name.starts_with('_') {
                stack.push(path);
            }
        }
    }
    if let Backend::Filesystem(fs) = backend {
        let tmp = fs.tmp_dir();
        for file in objects.list(tmp)? {
            let path = tmp.join(&file.name);
            let Some(meta) = objects.stat(&path)? else {
                continue;
            };
            if older(meta.modified, ages.temp) {
                report.temp_files += 1;
                report.bytes += meta.size;
                if !dry_run {
                    objects.delete(&path)?;
                }
            }
        }
    }
    Ok(report)
}

/// The newest write to an upload session, with the size of its data: the
/// `data` file on a file system; in a bucket, whichever of its objects
/// (state, pieces) was written last. `None` if it vanished meanwhile.
fn last_write(
    objects: &dyn Objects,
    session: &Path,
) -> Result<Option<super::backend::Meta>, StorageError> {
    if let Some(meta) = objects.stat(&session.join("data"))? {
        return Ok(Some(meta));
    }
    let mut newest: Option<super::backend::Meta> = None;
    for entry in objects.list(session)? {
        if let Some(meta) = objects.stat(&session.join(&entry.name))? {
            newest = Some(match newest {
                Some(n) if n.modified >= meta.modified => n,
                _ => meta,
            });
        }
    }
    Ok(newest)
}
