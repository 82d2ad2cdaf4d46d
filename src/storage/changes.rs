//! Notes of change between processes that share one store: several nodes
//! on one bucket (or one shared directory), a collector, a second server.
//!
//! The in-memory index (and the referrers lists) are caches of the layout.
//! A process that changes a repository's tags, or creates a repository,
//! or stores a manifest with a subject, leaves a note in `_changes/` naming
//! the repository: an empty object whose key is
//! `<millis since the epoch>.<node>.<sequence>.<repository, '/' as '+'>`,
//! so that one listing after a key gives every note since. Every process
//! lists the notes once a `POLL` (start-after its cursor) and reads each
//! named repository anew from the layout, so what it serves is at most
//! about one poll behind another node's write. A note says only which
//! repository to read again, never what changed, so notes may arrive late,
//! twice or out of order without harm.
//!
//! Clocks: a note is named by its writer's clock when it is sent; a reader
//! lists from its last poll minus `SKEW` and skips keys it has seen, so
//! notes from writers up to `SKEW` behind (or slowed by retries that long)
//! are still heard. A catch-up before a listing (`poll_since`) looks only
//! `QUICK` back: after a burst of writes the whole window holds thousands
//! of notes, and a listing must not list them all each time. So a write is
//! listed by another node at once when their clocks agree within `QUICK`,
//! and within a poll otherwise. Notes older than `KEEP` are removed by whoever
//! sees them; a reader that fell further behind than that (stopped for a
//! while) rebuilds its whole index instead.
//!
//! `_changes/` sits beside `blobs/` and `repositories/`, where Distribution
//! never looks.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::backend::Backend;
use super::error::StorageError;
use super::layout::Layout;
use crate::oci::RepoName;

/// How often a process looks for other processes' notes.
pub const POLL: Duration = Duration::from_secs(1);
/// How far behind another writer's clock may be and still be heard; also
/// longer than the object-store client's retries of one note's PUT (30 s),
/// since a note is named before it is sent.
const SKEW: Duration = Duration::from_secs(45);
/// How far back a catch-up before a listing looks.
const QUICK: Duration = Duration::from_secs(5);
/// How long notes are kept.
const KEEP: Duration = Duration::from_secs(600);
/// Longest repository name a note carries; a note for a longer one says
/// `EVERYTHING` (a note's name must stay a valid file name).
const MAX_NAMED: usize = 200;
const EVERYTHING: &str = "~";
/// How often a process removes notes older than `KEEP`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct Journal {
    dir: PathBuf,
    /// Whether this process removes old notes (not when it only reads the
    /// store).
    prunes: bool,
    node: String,
    seq: AtomicU64,
    reader: Mutex<Reader>,
}

struct Reader {
    /// When the last poll listed (millis); the next lists from `SKEW` before.
    last_poll: u64,
    /// Keys seen since `last_poll - SKEW`, so none is heard twice.
    seen: BTreeSet<String>,
    last_prune: u64,
    /// When the last poll began listing, for `poll_since`.
    began: Instant,
}

/// What a poll found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Repositories another process changed.
    pub repos: HashSet<RepoName>,
    /// The reader fell behind what is kept: rebuild everything.
    pub rebuild: bool,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Journal {
    pub fn new(layout: &Layout) -> Journal {
        Journal::with_pruning(layout, true)
    }

    /// A journal that hears notes but never removes any (a read-only store).
    pub fn reader(layout: &Layout) -> Journal {
        Journal::with_pruning(layout, false)
    }

    fn with_pruning(layout: &Layout, prunes: bool) -> Journal {
        let now = now_millis();
        Journal {
            dir: layout.changes_dir(),
            prunes,
            node: hex::encode(rand::random::<[u8; 6]>()),
            seq: AtomicU64::new(0),
            reader: Mutex::new(Reader {
                // The index was just built from the layout: notes from
                // before now are already in it (the skew window re-reads a
                // few, harmlessly).
                last_poll: now,
                seen: BTreeSet::new(),
                last_prune: now,
                began: Instant::now(),
            }),
        }
    }

    /// Leave a note that `repo` changed.
    pub fn note(&self, backend: &Backend, repo: &RepoName) -> Result<(), StorageError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // A name too long for a file name (names may have 255 characters)
        // asks readers to read everything again instead.
        let named = match repo.as_str() {
            r if r.len() <= MAX_NAMED => r.replace('/', "+"),
            _ => EVERYTHING.to_string(),
        };
        let name = format!("{:013}.{}.{seq:08}.{named}", now_millis(), self.node);
        backend.note(&self.dir.join(name))
    }

    /// The repositories other processes changed since the last poll.
    pub fn poll(&self, backend: &Backend) -> Result<Heard, StorageError> {
        let r = self.reader.lock().unwrap();
        self.poll_locked(backend, r, SKEW)
    }

    /// Like `poll`, looking `QUICK` back, unless a poll that began after
    /// `since` already ran (then `None`): a request that arrived at `since`
    /// sees every note written before it, and concurrent requests share one
    /// listing.
    pub fn poll_since(
        &self,
        backend: &Backend,
        since: Instant,
    ) -> Result<Option<Heard>, StorageError> {
        let r = self.reader.lock().unwrap();
        if r.began > since {
            return Ok(None);
        }
        self.poll_locked(backend, r, QUICK).map(Some)
    }

    /// List the notes from `back` before the last poll, of either kind: a
    /// quick poll moves the next full poll's window by the time between
    /// them, well under a second, not by `SKEW`.
    fn poll_locked(
        &self,
        backend: &Backend,
        mut r: std::sync::MutexGuard<'_, Reader>,
        back: Duration,
    ) -> Result<Heard, StorageError> {
        r.began = Instant::now();
        let now = now_millis();
        let skew = SKEW.as_millis() as u64;
        let from = r.last_poll.saturating_sub(back.as_millis() as u64);
        let mut heard = Heard {
            // Notes since the last poll may have been pruned already.
            rebuild: now.saturating_sub(r.last_poll) > (KEEP - SKEW).as_millis() as u64,
            ..Heard::default()
        };
        for name in backend.list_after(&self.dir, &format!("{from:013}"))? {
            let Some(note) = Note::parse(&name) else {
                continue;
            };
            if note.millis < from || r.seen.contains(&name) {
                continue;
            }
            if note.node != self.node {
                match note.repo {
                    Some(repo) => {
                        heard.repos.insert(repo);
                    }
                    None => heard.rebuild = true,
                }
            }
            r.seen.insert(name);
        }
        r.last_poll = now;
        let floor = format!("{:013}", now.saturating_sub(skew));
        r.seen = r.seen.split_off(&floor);
        if self.prunes && now.saturating_sub(r.last_prune) >= PRUNE_EVERY.as_millis() as u64 {
            r.last_prune = now;
            drop(r);
            // Tidying: what was heard stands whether or not it succeeds.
            if let Err(e) = self.prune(backend, now) {
                tracing::debug!(error = %e, "old notes left for the next pruning");
            }
        }
        Ok(heard)
    }

    /// Remove notes older than `KEEP` (any process's: removing twice is harmless).
    fn prune(&self, backend: &Backend, now: u64) -> Result<(), StorageError> {
        let oldest = now.saturating_sub(KEEP.as_millis() as u64);
        for name in backend.list_after(&self.dir, "")? {
            match Note::parse(&name) {
                Some(n) if n.millis >= oldest => break,
                _ => backend.objects().delete(&self.dir.join(&name))?,
            }
        }
        Ok(())
    }
}

struct Note {
    millis: u64,
    node: String,
    /// `None`: read everything again (a name too long to carry).
    repo: Option<RepoName>,
}

impl Note {
    fn parse(name: &str) -> Option<Note> {
        let mut parts = name.splitn(4, '.');
        let millis = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_string();
        let _seq = parts.next()?;
        let repo = match parts.next()? {
            EVERYTHING => None,
            named => Some(named.replace('+', "/").parse().ok()?),
        };
        Some(Note { millis, node, repo })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::fs::Filesystem;

    #[test]
    fn notes_of_one_process_are_heard_by_another_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let backend = Backend::Filesystem(Filesystem::new(layout.tmp_dir()));
        let (a, b) = (Journal::new(&layout), Journal::new(&layout));
        let repo: RepoName = "x/y".parse().unwrap();
        a.note(&backend, &repo).unwrap();
        assert!(a.poll(&backend).unwrap().repos.is_empty(), "not its own");
        let heard = b.poll(&backend).unwrap();
        assert_eq!(heard.repos, HashSet::from([repo.clone()]));
        assert!(!heard.rebuild);
        assert!(b.poll(&backend).unwrap().repos.is_empty(), "only once");
        b.note(&backend, &repo).unwrap();
        assert_eq!(a.poll(&backend).unwrap().repos.len(), 1);

        // A name too long for a file name asks for everything instead.
        let long: RepoName = format!("{}/x", "a".repeat(240)).parse().unwrap();
        a.note(&backend, &long).unwrap();
        let heard = b.poll(&backend).unwrap();
        assert!(heard.rebuild && heard.repos.is_empty());
    }

    #[test]
    fn note_names_round_trip() {
        let n = Note::parse("0001764470000123.a1b2c3d4e5f6.00000007.library+alpine").unwrap();
        assert_eq!(n.millis, 1764470000123);
        assert_eq!(n.repo.unwrap().as_str(), "library/alpine");
        assert!(Note::parse("junk").is_none());
        assert!(Note::parse("1.n.1.UPPER").is_none());
    }
}
