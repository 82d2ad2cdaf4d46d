//! Garbage collection: mark every blob that a kept manifest needs, then
//! sweep the rest, while the server goes on taking pushes.
//!
//! Kept: every tag's manifest, every manifest revision (unless untagged
//! ones are being deleted), recursively the children of indexes, the
//! config and layers of every kept manifest, and referrers (manifests whose
//! `subject` is kept). Swept: blobs nothing kept needs, the repository
//! links of what is deleted, untagged manifests (on request), upload
//! sessions older than the purge age, and temp files left by a crash.
//!
//! Safety beside a live server (no read-only mode): nothing younger than
//! the grace period is deleted (a layer waiting for its manifest), and
//! every deletion of a blob or a revision moves the file aside first and
//! looks at its time again: the server touches every blob and link a
//! manifest needs before storing it (storage::backend::fs::touch), so a
//! touch before the move puts the file back, and a touch after it finds
//! nothing and the push is refused. A manifest whose deletion is called off
//! keeps everything it references. The links of deleted blobs are removed
//! and written back if the blob came back meanwhile (`sweep`).
//!
//! Doubt never deletes: if any directory, link or manifest cannot be read,
//! the pass reports it and deletes nothing.

mod bucket;
mod dir;
pub mod expire;
mod mark;
mod sweep;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::StorageConfig;
use crate::storage::Layout;

/// How a pass runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Report what would be freed; change nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (and what only they need).
    pub delete_untagged: bool,
    /// Nothing modified more recently than this is deleted.
    pub grace: Duration,
    /// Upload sessions idle longer than this are removed.
    pub upload_age: Duration,
    /// Cached manifests nobody pulled for a while go first (`expire`).
    pub expire_cached: Option<expire::Expire>,
}

/// What a pass found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests_kept: usize,
    pub blobs_kept: usize,
    /// Blobs deleted (or, in a dry run, that would be).
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub manifests_deleted: usize,
    pub links_deleted: usize,
    pub uploads_deleted: usize,
    pub temp_files_deleted: usize,
    /// Manifests of pull-through caches that nobody pulled for the limit.
    pub cached_manifests_expired: usize,
    /// Candidates a concurrent push touched between the mark and their
    /// deletion: put back and kept.
    pub kept_in_use: usize,
    /// Seconds each phase took.
    pub phases: Vec<(String, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("storage root {0} does not exist")]
    NoRoot(String),
    #[error("{path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("{} problem(s) while marking; nothing was deleted:\n  {}", .0.len(), .0.join("\n  "))]
    Incomplete(Vec<String>),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

impl GcError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> GcError {
        GcError::Unreadable {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Run one pass over the store a config names: in a directory or a bucket.
pub fn collect_store(
    storage: &StorageConfig,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
    stop: &AtomicBool,
) -> Result<Report, GcError> {
    match &storage.s3 {
        Some(s3) => bucket::collect(s3, options, progress, stop),
        None => collect(&storage.rootdirectory, options, progress, stop),
    }
}

/// Run one pass over the store under `root`. `progress` receives a line
/// per phase; `stop` abandons the pass between two deletions.
pub fn collect(
    root: &Path,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
    stop: &AtomicBool,
) -> Result<Report, GcError> {
    if !root.is_dir() {
        return Err(GcError::NoRoot(root.display().to_string()));
    }
    let layout = Layout::new(root);
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    // Files modified after this are not touched by this pass.
    let cutoff = SystemTime::now()
        .checked_sub(options.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);

    if let Some(expire) = &options.expire_cached {
        progress("expiring cached manifests nobody pulled");
        let files = crate::storage::backend::fs::Filesystem::new(layout.tmp_dir());
        report.cached_manifests_expired =
            expire::cached(&files, &layout, expire, options.dry_run, stop)?;
    }
    let started = Instant::now();
    progress("marking");
    let marked = mark::mark(&layout, options, cutoff, stop)?;
    report.repositories = marked.repositories;
    report.manifests_kept = marked.manifests_kept;
    report
        .phases
        .push(("mark".into(), started.elapsed().as_secs_f64()));

    let sweeper = sweep::Sweeper::new(&layout, options, cutoff, stop);
    // Each part of the sweep timed on its own.
    let timed = |report: &mut Report, phase: &str, started: Instant| {
        report
            .phases
            .push((phase.into(), started.elapsed().as_secs_f64()));
        Instant::now()
    };
    let started = Instant::now();
    progress("sweeping manifests");
    let marked = sweeper.manifests(marked, &mut report)?;
    report.blobs_kept = marked.blobs.len();
    let started = timed(&mut report, "manifests", started);
    progress("sweeping blobs");
    let deleted = sweeper.blobs(&marked.blobs, &mut report)?;
    let started = timed(&mut report, "blobs", started);
    progress("sweeping links");
    sweeper.layer_links(&deleted, &marked.repos, &mut report)?;
    let started = timed(&mut report, "links", started);
    progress("sweeping uploads and temp files");
    sweeper.uploads_and_temp(&mut report)?;
    timed(&mut report, "uploads", started);
    interrupted(stop)?;
    Ok(report)
}

/// `Interrupted` once `stop` is set (a signal): a pass checks between
/// phases and batches.
pub(crate) fn interrupted(stop: &AtomicBool) -> Result<(), GcError> {
    if stop.load(Ordering::Relaxed) {
        Err(GcError::Interrupted)
    } else {
        Ok(())
    }
}

/// Run `f` on every item with a few worker threads (directories are read
/// and files removed in parallel); stop early when `stop` is set. Returns
/// the errors, as text.
pub(crate) fn par_each<T: Sync>(
    items: &[T],
    stop: &AtomicBool,
    f: impl Fn(&T) -> Result<(), GcError> + Sync,
) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    // Most of a sweep's time is the disk's: a file system mounted with
    // `discard` waits for each freed block's discard, so threads beyond
    // the cores overlap those waits (delete-untagged on 36,500 blobs, two
    // cores: 4.6 s of sweep with 2 threads, 3.1 s with 4, 1.7-2.2 s with 8,
    // 1.5-1.6 s with 16, 1.7 s with 32).
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() * 8)
        .unwrap_or(16)
        .clamp(8, 32);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = f(&items[i]) {
                    errors.lock().unwrap().push(e.to_string());
                }
            });
        }
    });
    errors.into_inner().unwrap()
}

impl Report {
    /// A few lines for a person.
    pub fn to_text(&self) -> String {
        let verb = if self.dry_run { "would free" } else { "freed" };
        let mb = self.bytes_freed as f64 / (1 << 20) as f64;
        let mut out = format!(
            "{} repositories, {} manifests and {} blobs kept\n{verb} {} blobs ({mb:.1} MiB), {} manifests, {} links, {} uploads, {} temp files",
            self.repositories,
            self.manifests_kept,
            self.blobs_kept,
            self.blobs_deleted,
            self.manifests_deleted,
            self.links_deleted,
            self.uploads_deleted,
            self.temp_files_deleted,
        );
        if self.cached_manifests_expired > 0 {
            out.push_str(&format!(
                "\n{} cached manifests nobody pulled {}",
                self.cached_manifests_expired,
                if self.dry_run {
                    "would expire"
                } else {
                    "expired"
                }
            ));
        }
        if self.kept_in_use > 0 {
            out.push_str(&format!(
                "\n{} candidates kept: a push used them during the pass",
                self.kept_in_use
            ));
        }
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.2}s"))
            .collect();
        out.push_str(&format!("\n{}", phases.join(", ")));
        out
    }
}
