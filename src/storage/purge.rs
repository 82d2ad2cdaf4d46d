//! Upload purging (`storage.maintenance.uploadpurging`, and the last phase
//! of a garbage collection): upload sessions idle longer than a purge age
//! are removed, and so are temp files a crash left in `_tmp`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::StorageError;
use super::fsutil::remove_dir;
use super::layout::{Layout, UploadId};
use super::Store;

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
        purge(&self.layout, ages, dry_run, |id, dir| {
            self.purge_session(id, dir)
        })
    }
}

/// Walk every `_uploads` directory (repositories with uploads but no
/// content yet included) and `_tmp`. `remove` takes an old session away
/// and says whether it did (the server skips sessions in use).
pub fn purge(
    layout: &Layout,
    ages: PurgeAges,
    dry_run: bool,
    remove: impl Fn(&UploadId, &Path) -> Result<bool, StorageError>,
) -> Result<PurgeReport, StorageError> {
    let now = SystemTime::now();
    let older = |p: &Path, age: Duration| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() >= age)
            .unwrap_or(false)
    };
    let mut report = PurgeReport::default();
    let mut stack = vec![layout.repositories_dir()];
    while let Some(dir) = stack.pop() {
        for entry in read_dir(&dir)? {
            if !entry.is_dir() {
                continue;
            }
            let name = entry
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == "_uploads" {
                for upload in read_dir(&entry)? {
                    let Some(id) = upload
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(UploadId::parse)
                    else {
                        continue;
                    };
                    let data = upload.join("data");
                    // Age from the last write: a slow chunked upload that
                    // is still growing is not abandoned.
                    let stamp = if data.exists() {
                        data.clone()
                    } else {
                        upload.clone()
                    };
                    if !older(&stamp, ages.upload) {
                        continue;
                    }
                    let bytes = fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                    if dry_run || remove(&id, &upload)? {
                        report.uploads += 1;
                        report.bytes += bytes;
                    }
                }
            } else if !name.starts_with('_') {
                stack.push(entry);
            }
        }
    }
    for file in read_dir(&layout.tmp_dir())? {
        if older(&file, ages.temp) {
            report.temp_files += 1;
            report.bytes += fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                match fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(&file, e)),
                }
            }
        }
    }
    Ok(report)
}

/// Remove one upload session's directory (for callers without sessions in memory).
pub fn remove_session(dir: &Path) -> Result<bool, StorageError> {
    remove_dir(dir)?;
    Ok(true)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.map(|e| e.path())
                    .map_err(|err| StorageError::io(dir, err))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(StorageError::io(dir, e)),
    }
}
