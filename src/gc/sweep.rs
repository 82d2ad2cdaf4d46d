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
        self.delete_looking(path, true)
    }

    /// `delete`, where `look_first` says whether to look at the file's time
    /// before moving it aside. The look spares a young file the move (and
    /// its readers the moment it is away); without it, a young file is
    /// moved, seen young by the look after the move, and put back. The
    /// safety is the look after the move either way.
    fn delete_looking(&self, path: &Path, look_first: bool) -> Result<Outcome, GcError> {
        let mut size = 0;
        if look_first || self.options.dry_run {
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
            size = meta.len();
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
        let (touched, moved_size) = match fs::metadata(&aside) {
            Ok(m) => (
                m.modified().map_err(|e| GcError::io(&aside, e))? >= self.cutoff,
                m.len(),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(GcError::io(&aside, e)),
        };
        if touched {
            return match fs::rename(&aside, path) {
                Ok(()) if look_first => Ok(Outcome::InUse),
                Ok(()) => Ok(Outcome::Young),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
                Err(e) => Err(GcError::io(path, e)),
            };
        }
        if !look_first {
            size = moved_size;
        }
        match fs::remove_file(&aside) {
            Ok(()) => Ok(Outcome::Deleted(size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
            Err(e) => Err(GcError::io(&aside, e)),
        }
    }

    /// Untagged manifests (with `delete_untagged`): their revision links go;
    /// one in use after all keeps everything it reaches.
    pub fn manifests(&self, mut marked: Marked, report: &mut Report) -> Result<Marked, GcError> {
        let untagged = std::mem::take(&mut marked.untagged);
        let outcome = Mutex::new((0usize, 0usize, Vec::new())); // deleted, in use, blobs to keep
        let touched = Mutex::new(HashSet::new());
        let errors = par_each(&untagged, self.stop, |u| {
            let link = self.layout.revision_link(&u.repo, &u.digest);
            match self.delete(&link)? {
                Outcome::Deleted(_) => {
                    outcome.lock().unwrap().0 += 1;
                    if !self.options.dry_run {
                        // The digest's directory now; its parents once the
                        // repository is done (below), not once per link.
                        if let Some(dir) = link.parent() {
                            let _ = fs::remove_dir(dir);
                        }
                        touched.lock().unwrap().insert(u.repo.clone());
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
        for repo in touched.into_inner().unwrap() {
            prune_empty_alg_dirs(&self.layout.revisions_dir(&repo));
        }
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
        // Counted here, added to the totals once per prefix.
        let (mut n, mut bytes, mut in_use) = (0usize, 0u64, 0usize);
        let mut gone = Vec::new();
        for dir in read_dir(prefix)? {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let hex = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some(digest) = Digest::from_layout(&alg, &hex) else {
                continue; // not a blob directory of ours
            };
            // A kept blob costs no system call at all.
            if marked.contains(&digest) {
                continue;
            }
            let data = dir.join("data");
            match self.delete(&data)? {
                Outcome::Deleted(size) => {
                    if !self.options.dry_run {
                        remove_blob_dir(&dir, &data);
                    }
                    n += 1;
                    bytes += size;
                    gone.push(digest);
                }
                Outcome::InUse => in_use += 1,
                // No data: a pass that stopped between moving it aside and
                // removing it may have left it aside. (A directory without
                // either is a push in progress: left alone.)
                Outcome::Gone if !self.options.dry_run => {
                    if fs::remove_file(aside_path(&data)).is_ok() {
                        let _ = fs::remove_dir(&dir);
                    }
                }
                Outcome::Young | Outcome::Gone => {}
            }
        }
        if n > 0 {
            if !self.options.dry_run {
                // Once per prefix, not once per blob: it is empty only when
                // every blob in it went.
                let _ = fs::remove_dir(prefix);
            }
            let mut t = totals.lock().unwrap();
            t.0 += n;
            t.1 += bytes;
            deleted.lock().unwrap().extend(gone);
        }
        totals.lock().unwrap().2 += in_use;
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
            let mut pruned = false;
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
                    // No look before the move: the blob is gone, so nothing
                    // is served through this link while it is away; a link
                    // written again during the pass is seen young after
                    // the move and put back.
                    if let Outcome::Deleted(_) = self.delete_looking(&link, false)? {
                        count.fetch_add(1, Ordering::Relaxed);
                        if !self.options.dry_run {
                            let _ = fs::remove_dir(&hex);
                            pruned = true;
                        }
                    }
                }
            }
            if pruned {
                prune_empty_alg_dirs(&layers);
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

/// Remove a blob's directory once its data went; a file another pass left
/// aside there goes too.
fn remove_blob_dir(dir: &Path, data: &Path) {
    if fs::remove_dir(dir).is_err() && fs::remove_file(aside_path(data)).is_ok() {
        let _ = fs::remove_dir(dir);
    }
}

/// Remove the algorithm directories under `dir` (`sha256/`) left empty.
fn prune_empty_alg_dirs(dir: &Path) {
    if let Ok(algs) = read_dir(dir) {
        for alg in algs {
            prune_empty_parents(&alg.join("x"), dir);
        }
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ASIDE);
    path.with_file_name(name)
}
