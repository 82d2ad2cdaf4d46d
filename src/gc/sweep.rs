//! Sweep: untagged manifests (on request), then unmarked blobs, then the
//! links of what went, then old uploads and temp files. Each deletion of a
//! blob or a revision moves it aside, looks at its time again, and puts it
//! back if a push touched it (see the module above); a link of a deleted
//! blob is removed, and written back if the blob came back meanwhile.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::dir::OpenDir;
use super::mark::{read_dir, Marked, Untagged};
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
    /// For the few writes a sweep makes (a link written back), and the
    /// server's purge of uploads.
    backend: Backend,
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
            backend: Backend::Filesystem(Filesystem::new(layout.tmp_dir())),
        }
    }

    fn stopped(&self) -> Result<(), GcError> {
        super::interrupted(self.stop)
    }

    /// Delete `name` in `dir` if it is older than the cutoff, safely
    /// against a concurrent touch: look at its time, move it aside, look
    /// again (the safety is this second look), and put it back if it was
    /// touched meanwhile. In a dry run, only look.
    fn delete(&self, dir: &OpenDir, name: &str) -> Result<Outcome, GcError> {
        let Some(seen) = dir.look(name).map_err(|e| dir.error(name, e))? else {
            return Ok(Outcome::Gone);
        };
        if seen.modified >= self.cutoff {
            return Ok(Outcome::Young);
        }
        if self.options.dry_run {
            return Ok(Outcome::Deleted(seen.size));
        }
        let aside = aside_name(name);
        match dir.rename(name, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(dir.error(name, e)),
        }
        // A touch between our look and the move: put it back. (The server
        // may also have removed the whole directory meanwhile: then it is
        // gone, by its hand.)
        let Some(moved) = dir.look(&aside).map_err(|e| dir.error(&aside, e))? else {
            return Ok(Outcome::Gone);
        };
        if moved.modified >= self.cutoff {
            return match dir.rename(&aside, name) {
                Ok(()) => Ok(Outcome::InUse),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
                Err(e) => Err(dir.error(name, e)),
            };
        }
        match dir.remove_file(&aside) {
            Ok(()) => Ok(Outcome::Deleted(seen.size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Gone),
            Err(e) => Err(dir.error(&aside, e)),
        }
    }

    /// Untagged manifests (with `delete_untagged`): their revision links go;
    /// one in use after all keeps everything it reaches.
    pub fn manifests(&self, mut marked: Marked, report: &mut Report) -> Result<Marked, GcError> {
        let untagged = std::mem::take(&mut marked.untagged);
        // By repository: each one's revisions directory is opened once.
        let mut by_repo: HashMap<&RepoName, Vec<&Untagged>> = HashMap::new();
        for u in &untagged {
            by_repo.entry(&u.repo).or_default().push(u);
        }
        let by_repo: Vec<_> = by_repo.into_iter().collect();
        let outcome = Mutex::new((0usize, 0usize, Vec::new())); // deleted, in use, blobs to keep
        let errors = par_each(&by_repo, self.stop, |(repo, revisions)| {
            let revisions_dir = self.layout.revisions_dir(repo);
            let Some(dir) = OpenDir::open(&revisions_dir)? else {
                return Ok(()); // no revisions left at all
            };
            let mut pruned = false;
            for u in revisions {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                let link = name_under(&revisions_dir, &self.layout.revision_link(repo, &u.digest));
                match self.delete(&dir, &link)? {
                    Outcome::Deleted(_) => {
                        outcome.lock().unwrap().0 += 1;
                        if !self.options.dry_run {
                            // The digest's directory now; its parents once
                            // the repository is done, not once per link.
                            if let Some((digest_dir, _)) = link.rsplit_once('/') {
                                let _ = dir.remove_dir(digest_dir);
                            }
                            pruned = true;
                        }
                    }
                    kept @ (Outcome::InUse | Outcome::Young) => {
                        let mut o = outcome.lock().unwrap();
                        o.1 += matches!(kept, Outcome::InUse) as usize;
                        o.2.extend(u.reaches.iter().cloned());
                    }
                    Outcome::Gone => {}
                }
            }
            if pruned {
                prune_empty_alg_dirs(&revisions_dir);
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
        let Some(dir) = OpenDir::open(prefix)? else {
            return Ok(());
        };
        // Counted here, added to the totals once per prefix.
        let (mut n, mut bytes, mut in_use) = (0usize, 0u64, 0usize);
        let mut gone = Vec::new();
        for hex in dir.names()? {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(digest) = Digest::from_layout(&alg, &hex) else {
                continue; // not a blob directory of ours
            };
            // A kept blob costs no system call at all.
            if marked.contains(&digest) {
                continue;
            }
            let data = format!("{hex}/data");
            match self.delete(&dir, &data)? {
                Outcome::Deleted(size) => {
                    if !self.options.dry_run {
                        remove_emptied_dir(&dir, &hex, &data);
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
                    if dir.remove_file(&aside_name(&data)).is_ok() {
                        let _ = dir.remove_dir(&hex);
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
        let blobs_dir = self.layout.blobs_dir();
        let blobs = OpenDir::open(&blobs_dir)?;
        let count = AtomicUsize::new(0);
        let errors = par_each(repos, self.stop, |repo| {
            // Walk the repository's links (not every deleted digest per
            // repository): O(links), whatever was deleted.
            let layers = self.layout.repo_dir(repo).join("_layers");
            let mut pruned = false;
            for alg in read_dir(&layers)? {
                let Some(dir) = OpenDir::open(&alg)? else {
                    continue;
                };
                let alg_name = alg
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                for hex in dir.names()? {
                    let Some(d) = Digest::from_layout(&alg_name, &hex) else {
                        continue;
                    };
                    if !deleted.contains(&d) {
                        continue;
                    }
                    let data = name_under(&blobs_dir, &self.layout.blob_data(&d));
                    if self.delete_layer_link(&dir, &hex, &d, blobs.as_ref(), &data)? {
                        count.fetch_add(1, Ordering::Relaxed);
                        pruned = true;
                    }
                }
            }
            if pruned && !self.options.dry_run {
                prune_empty_alg_dirs(&layers);
            }
            Ok(())
        });
        self.check(errors)?;
        report.links_deleted += count.into_inner();
        Ok(())
    }

    /// Remove `<hex>/link` in `dir`, a link to a blob this pass deleted;
    /// whether it went. No move aside and look: a push that brings the
    /// blob back writes its data before its link, so data found again
    /// once the link is removed means such a push, and the link is written
    /// back; a link such a push writes after the removal is not touched.
    /// (A manifest put that checks the link in the moment it is away is
    /// refused, as it is while a link is moved aside; the client pushes
    /// again.)
    fn delete_layer_link(
        &self,
        dir: &OpenDir,
        hex: &str,
        digest: &Digest,
        blobs: Option<&OpenDir>,
        data: &str,
    ) -> Result<bool, GcError> {
        let link = format!("{hex}/link");
        if self.options.dry_run {
            return Ok(dir.look(&link).map_err(|e| dir.error(&link, e))?.is_some());
        }
        match dir.remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(dir.error(&link, e)),
        }
        let back = match blobs {
            Some(blobs) => blobs
                .look(data)
                .map_err(|e| blobs.error(data, e))?
                .is_some(),
            None => false,
        };
        if back {
            self.backend.write_link(&dir.join(&link), digest)?;
            return Ok(false);
        }
        remove_emptied_dir(dir, hex, &link);
        Ok(true)
    }

    /// Upload sessions idle longer than the purge age, and temp files
    /// (the server's own purge, run from here).
    pub fn uploads_and_temp(&self, report: &mut Report) -> Result<(), GcError> {
        let ages = PurgeAges {
            upload: self.options.upload_age,
            temp: self.options.grace.max(TEMP_MIN_AGE),
        };
        let backend = &self.backend;
        let purged = purge(
            backend,
            self.layout,
            ages,
            self.options.dry_run,
            |repo, id, _| {
                crate::storage::discard_session(backend, self.layout, repo, id).map(|()| true)
            },
        )
        .map_err(|e| GcError::io(self.layout.v2(), e))?;
        report.uploads_deleted += purged.uploads;
        report.temp_files_deleted += purged.temp_files;
        Ok(())
    }
}

/// Remove `sub` in `dir` once its one file, `file`, went; a copy of that
/// file an interrupted pass left aside there goes too.
fn remove_emptied_dir(dir: &OpenDir, sub: &str, file: &str) {
    if dir.remove_dir(sub).is_err() && dir.remove_file(&aside_name(file)).is_ok() {
        let _ = dir.remove_dir(sub);
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

/// The name a file is moved aside to while its deletion is decided.
fn aside_name(name: &str) -> String {
    format!("{name}.{ASIDE}")
}

/// `path`, a file the layout names under `dir`, as a name relative to it.
fn name_under(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dry_run: bool) -> Options {
        Options {
            dry_run,
            delete_untagged: false,
            grace: Duration::ZERO,
            upload_age: Duration::from_secs(3600),
            expire_cached: None,
        }
    }

    /// A repository's link to a blob this pass deleted: removed with its
    /// directory; written back if the blob was pushed again meanwhile.
    #[test]
    fn a_link_of_a_deleted_blob_goes_unless_the_blob_came_back() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let repo: RepoName = "team/app".parse().unwrap();
        let digest = Digest::sha256(b"layer");
        let backend = Backend::Filesystem(Filesystem::new(layout.tmp_dir()));
        let link = layout.layer_link(&repo, &digest);
        let stop = AtomicBool::new(false);
        let run = |dry_run: bool| {
            let options = options(dry_run);
            let sweeper = Sweeper::new(&layout, &options, SystemTime::now(), &stop);
            let alg = link.parent().unwrap().parent().unwrap();
            let dir = OpenDir::open(alg).unwrap().unwrap();
            let blobs_dir = layout.blobs_dir();
            let blobs = OpenDir::open(&blobs_dir).unwrap();
            let data = name_under(&blobs_dir, &layout.blob_data(&digest));
            sweeper
                .delete_layer_link(&dir, digest.hex(), &digest, blobs.as_ref(), &data)
                .unwrap()
        };

        // The blob is gone: the link goes, and its directory.
        backend.write_link(&link, &digest).unwrap();
        assert!(run(true), "a dry run counts it");
        assert!(link.exists(), "and leaves it");
        assert!(run(false));
        assert!(!link.parent().unwrap().exists());
        assert!(!run(false), "nothing left to delete");

        // The blob was pushed again during the pass: its link stays.
        backend.write_link(&link, &digest).unwrap();
        backend
            .objects()
            .write(&layout.blob_data(&digest), b"layer")
            .unwrap();
        assert!(!run(false));
        assert_eq!(backend.read_link(&link).unwrap(), Some(digest.clone()));
    }
}
