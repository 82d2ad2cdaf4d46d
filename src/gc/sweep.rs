//! Sweep: untagged manifests (on request), then unmarked blobs, then the
//! links of what went, then old uploads and temp files. Each deletion of a
//! file the server may touch moves it aside, looks at its time again, and
//! puts it back if a push touched it (see the module above).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::mark::{read_dir, Marked};
use super::{par_each, GcError, Options, Report};
use crate::oci::{Digest, RepoName};
use crate::storage::backend::fs::{prune_empty_parents, Filesystem};
use crate::storage::backend::Backend;
use crate::storage::purge::{purge, PurgeAges};
use crate::storage::Layout;

/// Temp files are left alone this long at least, whatever the grace: the
/// server writes them for a moment during every push.
const TEMP_MIN_AGE: Duration = Duration::from_secs(3600);
/// Suffix of a file moved aside for deletion.
const ASIDE: &str = "gc-aside";

pub struct Sweeper<'a> {
    layout: &'a Layout,
    options: &'a Options,
    cutoff: SystemTime,
    stop: &'a AtomicBool,
}

/// What happened to one file.
enum Outcome {
    Deleted(u64),
    /// Modified within the grace period: left alone.
    Young,
    /// Touched during the pass: in use, put back.
    InUse,
    Gone,
}

fn mtime(p: &Path) -> io::Result<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified())
}

impl<'a> Sweeper<'a> {
    pub fn new(
        layout: &'a Layout,
        options: &'a Options,
        cutoff: SystemTime,
        stop: &'a AtomicBool,
    ) -> Sweeper<'a> {
        Sweeper {
            layout,
            options,
            cutoff,
            stop,
        }
    }

    fn stopped(&self) -> Result<(), GcError> {
        super::interrupted(self.stop)
    }

    /// Delete `path` if it is older than the cutoff, safely against a
    /// concurrent touch. In a dry run, only look.
    fn delete(&self, path: &Path) -> Result<Outcome, GcError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(GcError::io(path, e)),
        };
        let modified = meta.modified().map_err(|e| GcError::io(path, e))?;
        if modified >= self.cutoff {
            return Ok(Outcome::Young);
        }
        if self.options.dry_run {
            return Ok(Outcome::Deleted(meta.len()));
        }
        let aside = aside_path(path);
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(GcError::io(path, e)),
        }
        // A touch between our look and the move: put it back. (The server
        // may also have removed the whole directory meanwhile: then it is
        // gone, by its hand.)
        let touched = match mtime(&aside) {
            Ok(t) => t >= self.cutoff,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(GcError::io(&aside, e)),
        };
        if touched {
            return match fs::rename(&aside, path) {
                Ok(()) => Ok(Outcome::InUse),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
                Err(e) => Err(GcError::io(path, e)),
            };
        }
        match fs::remove_file(&aside) {
            Ok(()) => Ok(Outcome::Deleted(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
            Err(e) => Err(GcError::io(&aside, e)),
        }
    }

    /// Untagged manifests (with `delete_untagged`): their revision links go;
    /// one in use after all keeps everything it reaches.
    pub fn manifests(&self, mut marked: Marked, report: &mut Report) -> Result<Marked, GcError> {
        let untagged = std::mem::take(&mut marked.untagged);
        let outcome = Mutex::new((0usize, 0usize, Vec::new())); // deleted, in use, blobs to keep
        let errors = par_each(&untagged, self.stop, |u| {
            let link = self.layout.revision_link(&u.repo, &u.digest);
            match self.delete(&link)? {
                Outcome::Deleted(_) => {
                    outcome.lock().unwrap().0 += 1;
                    if !self.options.dry_run {
                        prune_empty_parents(&link, &self.layout.revisions_dir(&u.repo));
                    }
                }
                kept @ (Outcome::InUse | Outcome::Young) => {
                    let mut o = outcome.lock().unwrap();
                    o.1 += matches!(kept, Outcome::InUse) as usize;
                    o.2.extend(u.reaches.iter().cloned());
                }
                Outcome::Gone => {}
            }
            Ok(())
        });
        self.check(errors)?;
        let (deleted, in_use, keep) = outcome.into_inner().unwrap();
        report.manifests_deleted += deleted;
        report.kept_in_use += in_use;
        marked.blobs.extend(keep);
        Ok(marked)
    }

    /// Stop on an interruption, or on the first error of a phase.
    fn check(&self, errors: Vec<String>) -> Result<(), GcError> {
        self.stopped()?;
        match errors.into_iter().next() {
            Some(first) => Err(GcError::Unreadable {
                path: self.layout.v2().display().to_string(),
                message: first,
            }),
            None => Ok(()),
        }
    }

    /// Blobs nothing kept needs, older than the cutoff. The 256 prefix
    /// directories of each algorithm are walked in parallel.
    pub fn blobs(
        &self,
        marked: &HashSet<Digest>,
        report: &mut Report,
    ) -> Result<HashSet<Digest>, GcError> {
        let mut prefixes = Vec::new();
        for alg in read_dir(&self.layout.blobs_dir())? {
            prefixes.extend(read_dir(&alg)?);
        }
        let deleted = Mutex::new(HashSet::new());
        let totals = Mutex::new((0usize, 0u64, 0usize));
        let errors = par_each(&prefixes, self.stop, |prefix| {
            self.sweep_prefix(prefix, marked, &deleted, &totals)
        });
        self.check(errors)?;
        let (n, bytes, in_use) = totals.into_inner().unwrap();
        report.blobs_deleted += n;
        report.bytes_freed += bytes;
        report.kept_in_use += in_use;
        Ok(deleted.into_inner().unwrap())
    }

    fn sweep_prefix(
        &self,
        prefix: &Path,
        marked: &HashSet<Digest>,
        deleted: &Mutex<HashSet<Digest>>,
        totals: &Mutex<(usize, u64, usize)>,
    ) -> Result<(), GcError> {
        let alg = prefix
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for dir in read_dir(prefix)? {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let hex = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some(digest) = Digest::from_layout(&alg, &hex) else {
                continue; // not a blob directory of ours
            };
            let data = dir.join("data");
            // A file set aside by a pass that did not finish: it was being deleted.
            let left = aside_path(&data);
            if !self.options.dry_run && left.exists() && !data.exists() {
                let _ = fs::remove_file(&left);
            }
            if marked.contains(&digest) {
                continue;
            }
            match self.delete(&data)? {
                Outcome::Deleted(size) => {
                    if !self.options.dry_run {
                        let _ = fs::remove_dir(&dir);
                        let _ = fs::remove_dir(prefix);
                    }
                    let mut t = totals.lock().unwrap();
                    t.0 += 1;
                    t.1 += size;
                    deleted.lock().unwrap().insert(digest);
                }
                Outcome::InUse => totals.lock().unwrap().2 += 1,
                Outcome::Young | Outcome::Gone => {}
            }
        }
        Ok(())
    }

    /// The `_layers` links of deleted blobs, in every repository (a link
    /// written during the pass, by an upload of the same content, stays).
    pub fn layer_links(
        &self,
        deleted: &HashSet<Digest>,
        repos: &[RepoName],
        report: &mut Report,
    ) -> Result<(), GcError> {
        if deleted.is_empty() {
            return Ok(());
        }
        let count = AtomicUsize::new(0);
        let errors = par_each(repos, self.stop, |repo| {
            // Walk the repository's links (not every deleted digest per
            // repository): O(links), whatever was deleted.
            let layers = self.layout.repo_dir(repo).join("_layers");
            for alg in read_dir(&layers)? {
                let alg_name = alg
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                for hex in read_dir(&alg)? {
                    let hex_name = hex
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    let Some(d) = Digest::from_layout(&alg_name, &hex_name) else {
                        continue;
                    };
                    if !deleted.contains(&d) {
                        continue;
                    }
                    let link = hex.join("link");
                    if let Outcome::Deleted(_) = self.delete(&link)? {
                        count.fetch_add(1, Ordering::Relaxed);
                        if !self.options.dry_run {
                            prune_empty_parents(&link, &layers);
                        }
                    }
                }
            }
            Ok(())
        });
        self.check(errors)?;
        report.links_deleted += count.into_inner();
        Ok(())
    }

    /// Upload sessions idle longer than the purge age, and temp files
    /// (the server's own purge, run from here).
    pub fn uploads_and_temp(&self, report: &mut Report) -> Result<(), GcError> {
        let ages = PurgeAges {
            upload: self.options.upload_age,
            temp: self.options.grace.max(TEMP_MIN_AGE),
        };
        let backend = Backend::Filesystem(Filesystem::new(self.layout.tmp_dir()));
        let purged = purge(
            &backend,
            self.layout,
            ages,
            self.options.dry_run,
            |repo, id, _| {
                crate::storage::discard_session(&backend, self.layout, repo, id).map(|()| true)
            },
        )
        .map_err(|e| GcError::io(self.layout.v2(), e))?;
        report.uploads_deleted += purged.uploads;
        report.temp_files_deleted += purged.temp_files;
        Ok(())
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ASIDE);
    path.with_file_name(name)
}
