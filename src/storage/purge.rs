//! Upload purging (`storage.maintenance.uploadpurging`): upload sessions
//! older than the purge age are removed, and so are temp files a crash left
//! in `_tmp`.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::StorageError;
use super::layout::UploadId;
use super::Store;

/// What one purge pass found (and removed, unless it was a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub uploads: usize,
    pub temp_files: usize,
    pub bytes: u64,
}

impl Store {
    /// Remove upload sessions and temp files older than `age`. With
    /// `dry_run` it only reports what it would remove.
    pub fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport, StorageError> {
        let now = SystemTime::now();
        let old = |p: &Path| -> bool {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false)
        };
        let mut report = PurgeReport::default();
        // Repositories with uploads but no content yet are not in the
        // index: walk the tree for `_uploads` directories instead.
        let mut stack = vec![self.layout.repositories_dir()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name();
                if name == "_uploads" {
                    for upload in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                        let path = upload.path();
                        let Some(id) = upload.file_name().to_str().and_then(UploadId::parse) else {
                            continue;
                        };
                        let data = path.join("data");
                        // Age from the last write: a slow chunked upload that
                        // is still growing is not abandoned.
                        let stamp = if data.exists() {
                            data.clone()
                        } else {
                            path.clone()
                        };
                        if !old(&stamp) {
                            continue;
                        }
                        let bytes = fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                        let counted = if dry_run {
                            true
                        } else {
                            // Skipped if a request holds the session now.
                            self.purge_session(&id, &path)?
                        };
                        if counted {
                            report.uploads += 1;
                            report.bytes += bytes;
                        }
                    }
                } else if !name.to_string_lossy().starts_with('_') {
                    stack.push(entry.path());
                }
            }
        }
        for entry in fs::read_dir(self.layout.tmp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if old(&path) {
                report.temp_files += 1;
                report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(report)
    }
}
