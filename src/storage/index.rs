//! The in-memory index of repositories and their tags, answering `_catalog`
//! and `tags/list` in O(page) and manifest deletes without a tag scan.
//!
//! It is built from the layout at start and changed by the store's own
//! writes, after the disk. The layout stays the truth.
//!
//! A server builds it in the background (`pending`, then `install`), so
//! that it serves pulls and pushes at once after a start, whatever the
//! size of the store: until it is complete, the repositories changed
//! meanwhile are remembered and read again once it is in, and listings wait
//! for it (`wait_complete`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use super::backend::{parse_link, Objects};
use super::error::StorageError;
use super::layout::{repository_key, Layout};
use crate::oci::{Digest, RepoName, Tag};

type Tags = BTreeMap<Tag, Digest>;

pub struct Index {
    repos: RwLock<BTreeMap<RepoName, Tags>>,
    /// While the first build runs: the repositories changed meanwhile.
    changed_while_building: Mutex<Option<BTreeSet<RepoName>>>,
    /// Whether it holds every repository.
    complete: tokio::sync::watch::Sender<bool>,
}

/// One page of a sorted listing, and whether more follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// The keys strictly after `last`, or all of them.
fn after(last: Option<&str>) -> (Bound<&str>, Bound<&str>) {
    match last {
        Some(l) => (Bound::Excluded(l), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

fn page<'a, K: Ord + Clone + 'a>(range: impl Iterator<Item = &'a K>, n: usize) -> Page<K> {
    let mut items = Vec::with_capacity(n.min(1024));
    let mut more = false;
    for k in range {
        if items.len() == n {
            more = true;
            break;
        }
        items.push(k.clone());
    }
    Page { items, more }
}

impl Default for Index {
    /// An empty, complete index.
    fn default() -> Self {
        Index::with(BTreeMap::new())
    }
}

impl Index {
    fn with(repos: BTreeMap<RepoName, Tags>) -> Index {
        Index {
            repos: RwLock::new(repos),
            changed_while_building: Mutex::new(None),
            complete: tokio::sync::watch::Sender::new(true),
        }
    }

    /// An empty index whose build is still to come (see `install`).
    pub fn pending() -> Index {
        Index {
            repos: RwLock::default(),
            changed_while_building: Mutex::new(Some(BTreeSet::new())),
            complete: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Take a freshly built index in place of a pending one; returns the
    /// repositories changed while it was being built, which the caller
    /// reads again (`refresh_repo`) before calling `mark_complete`.
    pub fn install(&self, fresh: Index) -> BTreeSet<RepoName> {
        let mut changed = self.changed_while_building.lock().unwrap();
        *self.repos.write().unwrap() = fresh.repos.into_inner().unwrap();
        changed.take().unwrap_or_default()
    }

    pub fn mark_complete(&self) {
        self.complete.send_replace(true);
    }

    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// Wait until the index is complete, at most `limit`; whether it is.
    pub async fn wait_complete(&self, limit: Duration) -> bool {
        let mut rx = self.complete.subscribe();
        let done = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
        matches!(done, Ok(Ok(_)))
    }

    /// Remember that `repo` changed, if the first build is still running.
    fn note(&self, repo: &RepoName) {
        if let Some(changed) = self.changed_while_building.lock().unwrap().as_mut() {
            changed.insert(repo.clone());
        }
    }

    /// Walk `repositories/` once: a directory holding `_manifests` or
    /// `_layers` is a repository; its tags are `_manifests/tags/*/current/link`.
    /// Directories are read by `WALKERS` threads at once: with a cold page
    /// cache each listing waits for the disk, and several in flight let it
    /// serve them together.
    pub fn build(objects: &dyn Objects, layout: &Layout) -> Result<Index, StorageError> {
        let root = layout.repositories_dir();
        // Directories still to read, and how many are being read.
        let work = Mutex::new((vec![root.clone()], 0usize));
        let more = std::sync::Condvar::new();
        let found = Mutex::new(BTreeMap::new());
        let failed: Mutex<Option<StorageError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..WALKERS {
                scope.spawn(|| loop {
                    let dir = {
                        let mut w = work.lock().unwrap();
                        loop {
                            if failed.lock().unwrap().is_some() {
                                return;
                            }
                            if let Some(d) = w.0.pop() {
                                w.1 += 1;
                                break d;
                            }
                            if w.1 == 0 {
                                more.notify_all();
                                return;
                            }
                            w = more.wait(w).unwrap();
                        }
                    };
                    let visited = visit(objects, layout, &root, &dir);
                    let mut w = work.lock().unwrap();
                    w.1 -= 1;
                    match visited {
                        Ok((subdirs, repo)) => {
                            w.0.extend(subdirs);
                            if let Some((name, tags)) = repo {
                                found.lock().unwrap().insert(name, tags);
                            }
                        }
                        Err(e) => {
                            failed.lock().unwrap().get_or_insert(e);
                        }
                    }
                    more.notify_all();
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap() {
            return Err(e);
        }
        Ok(Index::with(found.into_inner().unwrap()))
    }

    /// The same from one walk of every key under `repositories/` and a
    /// concurrent read of the tags' links: for a bucket, where listing one
    /// directory at a time would cost a round trip per directory.
    pub fn build_by_walk(objects: &dyn Objects, layout: &Layout) -> Result<Index, StorageError> {
        let root = layout.repositories_dir();
        let mut repos: BTreeMap<RepoName, Tags> = BTreeMap::new();
        let mut links = Vec::new();
        for key in objects.walk(&root)? {
            let Some((repo, parts)) = repository_key(&key) else {
                continue;
            };
            if let ["_manifests", "tags", tag, "current", "link"] = parts[..] {
                if let Ok(tag) = tag.parse::<Tag>() {
                    links.push((repo.clone(), tag));
                }
            }
            repos.entry(repo).or_default();
        }
        let keys: Vec<_> = links
            .iter()
            .map(|(repo, tag)| layout.tag_current_link(repo, tag))
            .collect();
        let read = objects.read_many(&keys)?;
        for (((repo, tag), key), bytes) in links.into_iter().zip(&keys).zip(read) {
            if let Some(bytes) = bytes {
                let digest = parse_link(key, &bytes)?;
                repos.entry(repo).or_default().insert(tag, digest);
            }
        }
        Ok(Index::with(repos))
    }

    pub fn repo_count(&self) -> usize {
        self.repos.read().unwrap().len()
    }

    pub fn contains_repo(&self, repo: &RepoName) -> bool {
        self.repos.read().unwrap().contains_key(repo)
    }

    /// Repositories after `last` that `visible` admits, at most `n`:
    /// O(log repos + n) when all are visible.
    pub fn catalog(
        &self,
        n: usize,
        last: Option<&str>,
        visible: impl Fn(&RepoName) -> bool,
    ) -> Page<RepoName> {
        let repos = self.repos.read().unwrap();
        page(
            repos
                .range::<str, _>(after(last))
                .map(|(k, _)| k)
                .filter(|r| visible(r)),
            n,
        )
    }

    /// Visit every repository in name order with its number of tags, under
    /// one read lock (a search's pass over all names).
    pub fn for_each_repo(&self, mut f: impl FnMut(&RepoName, usize)) {
        for (name, tags) in self.repos.read().unwrap().iter() {
            f(name, tags.len());
        }
    }

    /// The number of tags of `repo`, if it is known.
    pub fn tag_count(&self, repo: &RepoName) -> Option<usize> {
        self.repos.read().unwrap().get(repo).map(|t| t.len())
    }

    /// Every tag of `repo` with its digest, in name order.
    pub fn tags_with_digests(&self, repo: &RepoName) -> Option<Vec<(Tag, Digest)>> {
        let repos = self.repos.read().unwrap();
        Some(
            repos
                .get(repo)?
                .iter()
                .map(|(t, d)| (t.clone(), d.clone()))
                .collect(),
        )
    }

    /// Tags of `repo` after `last`, at most `n`; `None` if the repository is unknown.
    pub fn tags(&self, repo: &RepoName, n: usize, last: Option<&str>) -> Option<Page<Tag>> {
        let repos = self.repos.read().unwrap();
        let tags = repos.get(repo)?;
        Some(page(tags.range::<str, _>(after(last)).map(|(k, _)| k), n))
    }

    /// Tags of `repo` that currently point at `digest`.
    pub fn tags_pointing_at(&self, repo: &RepoName, digest: &Digest) -> Vec<Tag> {
        let repos = self.repos.read().unwrap();
        repos
            .get(repo)
            .map(|tags| {
                tags.iter()
                    .filter(|(_, d)| *d == digest)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tag_digest(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        self.repos.read().unwrap().get(repo)?.get(tag).cloned()
    }

    /// Note a repository; `true` if it was not known.
    pub fn add_repo(&self, repo: &RepoName) -> bool {
        self.note(repo);
        let known = self.repos.read().unwrap().contains_key(repo);
        if known {
            return false;
        }
        let mut repos = self.repos.write().unwrap();
        let new = !repos.contains_key(repo);
        repos.entry(repo.clone()).or_default();
        new
    }

    /// Read one repository anew from the layout (another process changed it).
    pub fn refresh_repo(
        &self,
        objects: &dyn Objects,
        layout: &Layout,
        repo: &RepoName,
    ) -> Result<(), StorageError> {
        let exists = objects
            .list(&layout.repo_dir(repo))?
            .iter()
            .any(|e| e.is_dir && (e.name == "_manifests" || e.name == "_layers"));
        let tags = if exists {
            Some(read_tags(objects, layout, repo)?)
        } else {
            None
        };
        self.note(repo);
        let mut repos = self.repos.write().unwrap();
        match tags {
            Some(tags) => {
                repos.insert(repo.clone(), tags);
            }
            None => {
                repos.remove(repo);
            }
        }
        Ok(())
    }

    /// Take everything from a freshly built index.
    pub fn replace_with(&self, fresh: Index) {
        let fresh = fresh.repos.into_inner().unwrap();
        *self.repos.write().unwrap() = fresh;
    }

    pub fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) {
        self.note(repo);
        self.repos
            .write()
            .unwrap()
            .entry(repo.clone())
            .or_default()
            .insert(tag.clone(), digest.clone());
    }

    pub fn remove_tag(&self, repo: &RepoName, tag: &Tag) {
        self.note(repo);
        if let Some(tags) = self.repos.write().unwrap().get_mut(repo) {
            tags.remove(tag);
        }
    }
}

/// Threads reading directories in `Index::build`.
const WALKERS: usize = 8;

/// The directories under one directory, and the repository it is.
type Visited = (Vec<std::path::PathBuf>, Option<(RepoName, Tags)>);

/// One directory of `repositories/`: the directories under it to read
/// next, and the repository it is, with its tags, if it is one.
fn visit(
    objects: &dyn Objects,
    layout: &Layout,
    root: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Visited, StorageError> {
    let mut subdirs = vec![];
    let mut is_repo = false;
    for entry in objects.list(dir)? {
        if !entry.is_dir {
            continue;
        }
        if entry.name == "_manifests" || entry.name == "_layers" {
            is_repo = true;
        } else if !entry.name.starts_with('_') {
            subdirs.push(dir.join(&entry.name));
        }
    }
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    // Directories that are not valid names are not ours to serve.
    let repo = match rel.to_str().and_then(|s| s.parse::<RepoName>().ok()) {
        Some(repo) if is_repo => {
            let tags = read_tags(objects, layout, &repo)?;
            Some((repo, tags))
        }
        _ => None,
    };
    Ok((subdirs, repo))
}

fn read_tags(
    objects: &dyn Objects,
    layout: &Layout,
    repo: &RepoName,
) -> Result<Tags, StorageError> {
    let names: Vec<Tag> = objects
        .list(&layout.tags_dir(repo))?
        .into_iter()
        .filter_map(|e| e.name.parse::<Tag>().ok())
        .collect();
    let links: Vec<_> = names
        .iter()
        .map(|tag| layout.tag_current_link(repo, tag))
        .collect();
    // In a bucket, concurrently: a repository of many tags is read again on
    // every note another node leaves for it.
    let read = objects.read_many(&links)?;
    let mut tags = Tags::new();
    for ((tag, link), bytes) in names.into_iter().zip(&links).zip(read) {
        if let Some(bytes) = bytes {
            tags.insert(tag, parse_link(link, &bytes)?);
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::fs::Filesystem;

    #[tokio::test]
    async fn a_pending_index_remembers_what_changed_until_it_is_installed() {
        let index = Index::pending();
        assert!(!index.is_complete());
        let (a, b): (RepoName, RepoName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let d = Digest::sha256(b"m");
        index.set_tag(&a, &"v1".parse().unwrap(), &d);
        index.add_repo(&b);
        assert!(
            !index.wait_complete(Duration::from_millis(10)).await,
            "complete before it was built"
        );
        // The build read the store before those writes: it knows neither.
        let mut built = BTreeMap::new();
        built.insert("c".parse::<RepoName>().unwrap(), Tags::new());
        let changed = index.install(Index::with(built));
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![a.clone(), b]);
        // Changes after the install go straight in, and are not remembered.
        index.set_tag(&a, &"v2".parse().unwrap(), &d);
        assert_eq!(index.install(Index::with(BTreeMap::new())), BTreeSet::new());
        index.mark_complete();
        assert!(index.wait_complete(Duration::from_millis(10)).await);
        assert!(index.is_complete());
    }

    #[test]
    fn one_walk_finds_what_the_walk_by_directory_finds() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let files = Filesystem::new(layout.tmp_dir());
        let d = Digest::sha256(b"m");
        let link = d.to_string();
        let repos = layout.repositories_dir();
        for key in [
            "a/b/_layers/sha256/00/link",
            "a/b/_manifests/tags/v1/current/link",
            "a/b/_manifests/tags/v1/index/sha256/00/link",
            "a/b/_manifests/tags/v2/current/link",
            "c/_manifests/revisions/sha256/00/link",
            "only-uploads/_uploads/x/startedat",
            "Not-A-Name/_layers/sha256/00/link",
        ] {
            files.write(&repos.join(key), link.as_bytes()).unwrap();
        }
        // A tag whose link is gone (deleted) is no tag.
        files
            .write(&repos.join("c/_manifests/tags/old/index/x"), b"")
            .unwrap();
        let by_dir = Index::build(&files, &layout).unwrap();
        let by_walk = Index::build_by_walk(&files, &layout).unwrap();
        let all = |i: &Index| i.catalog(100, None, |_| true).items;
        assert_eq!(all(&by_walk), all(&by_dir));
        let names: Vec<String> = all(&by_walk).iter().map(|r| r.to_string()).collect();
        assert_eq!(names, ["a/b", "c"]);
        let ab: RepoName = "a/b".parse().unwrap();
        let tags = |i: &Index| i.tags(&ab, 10, None).unwrap().items;
        assert_eq!(tags(&by_walk), tags(&by_dir));
        assert_eq!(by_walk.tag_digest(&ab, &"v2".parse().unwrap()), Some(d));
        assert_eq!(
            by_walk.tags(&"c".parse().unwrap(), 10, None).unwrap().items,
            vec![]
        );
    }
}
