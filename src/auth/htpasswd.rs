//! `auth.htpasswd`: users from an Apache htpasswd file with bcrypt entries,
//! reloaded when the file changes, with a cache of successful checks.
//!
//! A bcrypt check costs ~60 ms of CPU at the default cost, and a CI job
//! sends hundreds of requests with the same credentials, so a successful
//! check is remembered for a short while. The cache key is a hash of the
//! user, the password *and the stored hash*: a changed password or a
//! removed user misses the cache, so the cache never outlives the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use notify::Watcher;
use sha2::{Digest as _, Sha256};

/// How long a successful check is trusted without running bcrypt again.
const CACHE_TTL: Duration = Duration::from_secs(120);
/// Wait after a change before reading the file.
const RELOAD_SETTLE: Duration = Duration::from_millis(150);
/// Entries kept at most; past it the cache is cleared (a flood of distinct
/// credentials must not grow memory without bound).
const CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

type Users = HashMap<String, String>;

/// Parse htpasswd text: `user:hash` lines, bcrypt only.
pub fn parse(path: &str, text: &str) -> Result<Users, HtpasswdError> {
    let mut users = Users::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| HtpasswdError::Line {
            path: path.to_string(),
            line: i + 1,
            message,
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| err("expected user:hash".into()))?;
        if user.is_empty() {
            return Err(err("empty user name".into()));
        }
        let kind =
            if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
                None
            } else if hash.starts_with("$apr1$") {
                Some("an Apache MD5 ($apr1$) hash")
            } else if hash.starts_with("{SHA}") {
                Some("a SHA-1 ({SHA}) hash")
            } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$")
            {
                Some("a crypt(3) hash")
            } else if hash.len() == 13 {
                Some("a DES crypt hash")
            } else {
                Some("not a bcrypt hash")
            };
        if let Some(kind) = kind {
            return Err(err(format!(
                "user {user:?} has {kind}; only bcrypt is accepted: recreate it with `htpasswd -B {path} {user}`"
            )));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

fn load(path: &Path) -> Result<Users, HtpasswdError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&name, &text)
}

/// The users of one htpasswd file, kept current.
pub struct Htpasswd {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    verified: DashMap<[u8; 32], Instant>,
    /// Kept alive for as long as the users are; it holds only a weak
    /// reference back, so dropping the users stops the watching.
    watcher: std::sync::Mutex<Option<notify::RecommendedWatcher>>,
}

impl Htpasswd {
    /// Load the file (an error stops start-up) and watch it for changes.
    pub fn open(path: &Path) -> Result<Arc<Htpasswd>, HtpasswdError> {
        let users = load(path)?;
        let this = Arc::new(Htpasswd {
            path: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
            verified: DashMap::new(),
            watcher: std::sync::Mutex::new(None),
        });
        *this.watcher.lock().unwrap() = watch(Arc::downgrade(&this), path);
        Ok(this)
    }

    /// Wait until the file reads the same twice `RELOAD_SETTLE` apart (at
    /// most a few seconds): a writer that truncates and then writes sends
    /// an event in between, and a file read empty then would drop every
    /// user.
    fn settle(&self) {
        let mut last = std::fs::read(&self.path).ok();
        for _ in 0..20 {
            std::thread::sleep(RELOAD_SETTLE);
            let now = std::fs::read(&self.path).ok();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Re-read the file; a malformed file keeps the previous users.
    pub fn reload(&self) {
        match load(&self.path) {
            Ok(users) => {
                let n = users.len();
                *self.users.write().unwrap() = Arc::new(users);
                tracing::info!(path = %self.path.display(), users = n, "htpasswd reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd not reloaded; keeping the previous users")
            }
        }
    }

    /// `user`'s stored password hash, if the user is in the file: it
    /// changes with the password.
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        self.users.read().unwrap().get(user).cloned()
    }

    /// Whether `user` with `password` passed a check recently (cheap: no
    /// bcrypt, fine on an async thread).
    pub fn recently_verified(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.read().unwrap().get(user).cloned() else {
            return false;
        };
        self.verified
            .get(&cache_key(user, password, &hash))
            .is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    /// Whether `user` with `password` is valid. Runs bcrypt on a cache miss
    /// (call it off the async threads).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.read().unwrap().get(user).cloned() else {
            // Same cost as a wrong password, so timing does not reveal
            // which user names exist.
            let _ = bcrypt::verify(password, dummy_hash());
            return false;
        };
        let key = cache_key(user, password, &hash);
        if self
            .verified
            .get(&key)
            .is_some_and(|at| at.elapsed() < CACHE_TTL)
        {
            return true;
        }
        let ok = bcrypt::verify(password, &hash).unwrap_or(false);
        if ok {
            if self.verified.len() >= CACHE_MAX {
                self.verified.clear();
            }
            self.verified.insert(key, Instant::now());
        }
        ok
    }
}

/// The cache key: a changed stored hash (new password) or a removed user
/// can never match an old entry.
fn cache_key(user: &str, password: &str, stored: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .chain_update([0])
        .chain_update(stored.as_bytes())
        .finalize()
        .into()
}

/// A bcrypt hash of a random string at `htpasswd -B`'s default cost, for
/// checks of unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        bcrypt::hash(secret, 5).unwrap_or_default()
    })
}

/// Watch the file's directory (editors and `htpasswd` replace the file),
/// reloading on any change that names it.
fn watch(target: std::sync::Weak<Htpasswd>, path: &Path) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(&name)) {
            if let Some(h) = target.upgrade() {
                h.settle();
                h.reload();
            }
        }
    })
    .map_err(
        |e| tracing::warn!(error = %e, "cannot watch the htpasswd file; changes need a restart"),
    )
    .ok()?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the htpasswd file; changes need a restart"))
        .ok()?;
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt() {
        let ok = "# comment\n\nalice:$2y$05$abcdefghijklmnopqrstuu5Z6Y5h7b8q9Zs0YQ1p2dJ1x3rG4m5e\nbob:$2b$05$x\n";
        let users = parse("f", ok).unwrap();
        assert_eq!(users.len(), 2);
        let cases = [
            (
                "carol:$apr1$xyz$abc\n",
                "line 1: user \"carol\" has an Apache MD5",
            ),
            (
                "x:ok\ndave:{SHA}abc=\n",
                "line 1: user \"x\" has not a bcrypt hash",
            ),
            ("erin:abcdefghijklm\n", "a DES crypt hash"),
            ("nocolon\n", "line 1: expected user:hash"),
        ];
        for (text, want) in cases {
            let err = parse("f", text).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(
                err.contains("htpasswd -B") || want.contains("expected"),
                "{err}"
            );
        }
    }

    #[test]
    fn verify_and_cache_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "secret"));
        assert!(h.verify("alice", "secret"), "cached");
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("nobody", "secret"));
        // A new password: the old one stops working at once.
        let hash2 = bcrypt::hash("other", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash2}\n")).unwrap();
        h.reload();
        assert!(!h.verify("alice", "secret"));
        assert!(h.verify("alice", "other"));
        // A malformed file keeps the previous users.
        std::fs::write(&path, "alice:$apr1$x$y\n").unwrap();
        h.reload();
        assert!(h.verify("alice", "other"));
        // Removed user.
        std::fs::write(&path, "").unwrap();
        h.reload();
        assert!(!h.verify("alice", "other"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_by_line(text in "\\PC{0,300}") {
            let _ = parse("htpasswd", &text);
        }

        #[test]
        fn user_lines_are_read_back(
            users in proptest::collection::btree_map("[a-zA-Z0-9._-]{1,12}", "[./A-Za-z0-9]{53}", 1..6),
            cost in 4u8..14,
        ) {
            let text: String = users
                .iter()
                .map(|(u, h)| format!("{u}:$2y${cost:02}${h}\n"))
                .collect();
            let read = parse("htpasswd", &text).unwrap();
            prop_assert_eq!(read.len(), users.len());
            for u in users.keys() {
                prop_assert!(read.contains_key(u));
            }
        }
    }
}
