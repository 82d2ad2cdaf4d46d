//! `registry verify`: are the bytes in the store still right?
//!
//! Every blob is read and hashed against its name; every manifest each
//! repository holds is parsed, and its config, layers and children are
//! checked to be there and linked where pulls look for them; every tag is
//! checked to name a manifest its repository holds. Each problem comes with
//! the images it breaks (`repo:tag`, or `repo@digest` for a manifest no tag
//! reaches).
//!
//! It only reads, so it is safe beside a running server and collector: a
//! problem seen while they change the store is looked at again at the end,
//! and reported only if it is still there and still matters (a blob the
//! collector deleted because nothing needs it any more is no problem).
//! Memory holds the list of digests and what needs them, and one 1 MiB
//! buffer per blob being read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::oci::{Digest, Manifest, RepoName, Tag};
use crate::storage::{StorageError, Store};

/// What to check, and how many blobs to read at once.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only the repositories whose names match this glob (`*` matches any
    /// run, `/` included); then only the blobs their manifests need are read.
    pub repositories: Option<String>,
    /// Blobs read at once (and repositories surveyed at once).
    pub readers: usize,
}

/// Counts as the check goes, for a progress line.
#[derive(Default)]
pub struct Progress {
    pub manifests: AtomicU64,
    pub blobs_total: AtomicU64,
    pub blobs_read: AtomicU64,
    pub bytes_read: AtomicU64,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A blob whose bytes do not hash to its name.
    Corrupt,
    /// A blob a manifest needs that is not in the store.
    Missing,
    /// A blob in the store that a repository's manifest needs but the
    /// repository does not link: pulls through it are refused.
    NotLinked,
    /// A manifest whose bytes are not a manifest.
    BadManifest,
    /// A child of an index that the index's repository does not hold.
    MissingChild,
    /// A tag naming a manifest its repository does not hold.
    DanglingTag,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    /// The blob or manifest at fault.
    pub digest: Digest,
    /// The repository, where the problem is one repository's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The tag, for a tag that names what is not there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub detail: String,
    /// The images it breaks.
    pub breaks: Vec<String>,
    /// The manifest that needs the digest, for problems of one repository.
    #[serde(skip)]
    needed_by: Option<Digest>,
}

#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub repositories: usize,
    pub tags: usize,
    pub manifests: usize,
    /// Blobs read and hashed.
    pub blobs: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "verified {} repositories, {} tags, {} manifests, {} blobs ({:.1} MiB) in {:.1} s\n",
            self.repositories,
            self.tags,
            self.manifests,
            self.blobs,
            self.bytes as f64 / (1 << 20) as f64,
            self.seconds
        );
        if self.problems.is_empty() {
            out.push_str("no problems found\n");
            return out;
        }
        out.push_str(&format!("{} PROBLEMS:\n", self.problems.len()));
        for p in &self.problems {
            let kind = serde_json::to_value(p.kind).unwrap_or_default();
            out.push_str(&format!(
                "  {} {}{}: {}\n",
                kind.as_str().unwrap_or("?"),
                p.digest,
                p.repository
                    .as_deref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default(),
                p.detail
            ));
            for b in &p.breaks {
                out.push_str(&format!("    breaks {b}\n"));
            }
        }
        out
    }
}

/// A blob read through: its size and the digest of what was read.
type Hashed = (u64, Digest);

/// A manifest that needs a blob: where it is and the images it makes up.
#[derive(Clone)]
struct Need {
    repo: RepoName,
    manifest: Digest,
}

/// What one repository holds and what its manifests need.
#[derive(Default)]
struct Survey {
    tags: usize,
    manifests: usize,
    /// Blob -> the manifests of this repository that need it (a manifest
    /// needs its own bytes too).
    needs: HashMap<Digest, Vec<Digest>>,
    /// The images each manifest makes up.
    names: HashMap<Digest, Vec<String>>,
    problems: Vec<Problem>,
}

/// Check the store. Errors are for a check that could not run (the store
/// unreadable); what it finds wrong is in the report.
pub async fn verify(
    store: Arc<Store>,
    options: &Options,
    progress: &Arc<Progress>,
) -> Result<Report, StorageError> {
    let started = Instant::now();
    let readers = options.readers.max(1);
    let repos: Vec<RepoName> = store
        .index()
        .catalog(usize::MAX, None, |_| true)
        .items
        .into_iter()
        .filter(|r| {
            options
                .repositories
                .as_deref()
                .is_none_or(|g| crate::auth::access::glob(g, r.as_str()))
        })
        .collect();
    let mut report = Report {
        repositories: repos.len(),
        ..Report::default()
    };

    // Manifests and tags, repositories side by side.
    let surveys: Vec<(RepoName, Result<Survey, StorageError>)> = futures_util::stream::iter(repos)
        .map(|repo| {
            let (store, progress) = (store.clone(), progress.clone());
            async move {
                let r = repo.clone();
                let survey = blocking(move || survey(&store, &r, &progress)).await;
                (repo, survey)
            }
        })
        .buffer_unordered(readers)
        .collect()
        .await;
    let mut needs: HashMap<Digest, Vec<Need>> = HashMap::new();
    let mut names: HashMap<(RepoName, Digest), Vec<String>> = HashMap::new();
    let mut candidates = vec![];
    for (repo, survey) in surveys {
        let s = survey?;
        report.tags += s.tags;
        report.manifests += s.manifests;
        for (blob, manifests) in s.needs {
            needs
                .entry(blob)
                .or_default()
                .extend(manifests.into_iter().map(|m| Need {
                    repo: repo.clone(),
                    manifest: m,
                }));
        }
        for (m, n) in s.names {
            names.insert((repo.clone(), m), n);
        }
        candidates.extend(s.problems);
    }

    // Blobs: every one in the store, or (for some repositories) the ones
    // their manifests need.
    let mut to_read: BTreeSet<Digest> = needs.keys().cloned().collect();
    if options.repositories.is_none() {
        let st = store.clone();
        to_read.extend(blocking(move || st.blob_digests()).await?);
    }
    progress
        .blobs_total
        .store(to_read.len() as u64, Ordering::Relaxed);
    let read: Vec<(Digest, Result<Option<Hashed>, StorageError>)> =
        futures_util::stream::iter(to_read)
            .map(|d| {
                let store = store.clone();
                async move {
                    let got = store.hash_blob(&d).await;
                    progress.blobs_read.fetch_add(1, Ordering::Relaxed);
                    if let Ok(Some((n, _))) = &got {
                        progress.bytes_read.fetch_add(*n, Ordering::Relaxed);
                    }
                    (d, got)
                }
            })
            .buffer_unordered(readers)
            .collect()
            .await;
    for (digest, got) in read {
        let detail = match got? {
            Some((n, actual)) if actual != digest => {
                report.blobs += 1;
                report.bytes += n;
                format!("its {n} bytes hash to {actual}")
            }
            Some((n, _)) => {
                report.blobs += 1;
                report.bytes += n;
                continue;
            }
            None if needs.contains_key(&digest) => String::new(),
            // Gone since it was listed, and nothing needs it: collected.
            None => continue,
        };
        let kind = if detail.is_empty() {
            Kind::Missing
        } else {
            Kind::Corrupt
        };
        candidates.push(Problem {
            kind,
            digest,
            repository: None,
            tag: None,
            detail: if detail.is_empty() {
                "not in the store".into()
            } else {
                detail
            },
            breaks: vec![],
            needed_by: None,
        });
    }

    // Look again at what was found, then name what it breaks.
    let mut problems = vec![];
    for p in candidates {
        let st = store.clone();
        let owners = needs.get(&p.digest).cloned().unwrap_or_default();
        let (p, owners) = blocking(move || confirm(&st, p, owners)).await?;
        let Some(mut p) = p else {
            continue;
        };
        let mut breaks = BTreeSet::new();
        match &p.repository {
            Some(repo) if p.tag.is_some() => {
                breaks.insert(format!("{repo}:{}", p.tag.as_deref().unwrap_or_default()));
            }
            Some(repo) => {
                let repo: RepoName = repo.parse().expect("a repository's own name");
                breaks.extend(image_names(&names, &repo, &p.digest, &owners));
            }
            None => {
                for need in &owners {
                    breaks.extend(
                        names
                            .get(&(need.repo.clone(), need.manifest.clone()))
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
        p.breaks = breaks.into_iter().collect();
        problems.push(p);
    }
    problems.sort_by(|a, b| {
        (a.kind, &a.digest, &a.repository).cmp(&(b.kind, &b.digest, &b.repository))
    });
    problems.dedup();
    report.problems = problems;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The images a problem of one repository breaks: those of the manifests
/// in it that need the digest, or of the manifest itself.
fn image_names(
    names: &HashMap<(RepoName, Digest), Vec<String>>,
    repo: &RepoName,
    digest: &Digest,
    owners: &[Need],
) -> Vec<String> {
    let mut out: Vec<String> = owners
        .iter()
        .filter(|n| &n.repo == repo)
        .flat_map(|n| {
            names
                .get(&(n.repo.clone(), n.manifest.clone()))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    if out.is_empty() {
        out = names
            .get(&(repo.clone(), digest.clone()))
            .cloned()
            .unwrap_or_else(|| vec![format!("{repo}@{digest}")]);
    }
    out
}

/// Read one repository: its tags and manifests, what they need, and the
/// problems that can be seen from it alone.
fn survey(store: &Store, repo: &RepoName, progress: &Progress) -> Result<Survey, StorageError> {
    let mut s = Survey::default();
    let revisions: HashSet<Digest> = store.revisions(repo)?.into_iter().collect();
    let tags: Vec<(Tag, Digest)> = store.index().tags_with_digests(repo).unwrap_or_default();
    s.tags = tags.len();
    s.manifests = revisions.len();
    let problem = |kind, digest: &Digest, needed_by: &Digest, detail: String| Problem {
        kind,
        digest: digest.clone(),
        repository: Some(repo.to_string()),
        tag: None,
        detail,
        breaks: vec![],
        needed_by: Some(needed_by.clone()),
    };
    // Which indexes hold which manifests, for the images a problem breaks.
    let mut parents: HashMap<Digest, Vec<Digest>> = HashMap::new();
    for m in &revisions {
        progress.manifests.fetch_add(1, Ordering::Relaxed);
        s.needs.entry(m.clone()).or_default().push(m.clone());
        let Some(bytes) = store.read_blob(m)? else {
            // Reported by the blob check, as missing.
            continue;
        };
        if Digest::sha256(&bytes) != *m {
            // Reported by the blob check, as corrupt.
            continue;
        }
        let parsed = match Manifest::parse(&bytes, None) {
            Ok(p) => p,
            Err(e) => {
                s.problems.push(problem(
                    Kind::BadManifest,
                    m,
                    m,
                    format!("not a manifest: {e}"),
                ));
                continue;
            }
        };
        for blob in parsed.required_blobs() {
            s.needs
                .entry(blob.digest.clone())
                .or_default()
                .push(m.clone());
            if !store.has_layer_link(repo, &blob.digest)? {
                s.problems.push(problem(
                    Kind::NotLinked,
                    &blob.digest,
                    m,
                    format!("needed by {m}, but the repository does not link it"),
                ));
            }
        }
        for child in &parsed.manifests {
            parents
                .entry(child.digest.clone())
                .or_default()
                .push(m.clone());
            if !revisions.contains(&child.digest) {
                s.problems.push(problem(
                    Kind::MissingChild,
                    &child.digest,
                    m,
                    format!("the index {m} names it, but the repository does not hold it"),
                ));
            }
        }
    }
    for (tag, d) in &tags {
        if !revisions.contains(d) {
            s.problems.push(Problem {
                tag: Some(tag.to_string()),
                needed_by: None,
                ..problem(
                    Kind::DanglingTag,
                    d,
                    d,
                    format!("the tag {tag} names it, but the repository does not hold it"),
                )
            });
        }
    }
    // Each manifest's images: the tags that reach it, directly or through
    // the indexes that hold it.
    let mut tagged: HashMap<&Digest, Vec<String>> = HashMap::new();
    for (tag, d) in &tags {
        tagged.entry(d).or_default().push(format!("{repo}:{tag}"));
    }
    for m in revisions.iter().chain(parents.keys()) {
        let mut found = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut stack = vec![m];
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            found.extend(tagged.get(x).into_iter().flatten().cloned());
            stack.extend(parents.get(x).into_iter().flatten());
        }
        let names = if found.is_empty() {
            vec![format!("{repo}@{m}")]
        } else {
            found.into_iter().collect()
        };
        s.names.insert(m.clone(), names);
    }
    Ok(s)
}

/// Look at a problem again, now that the pass is over: is it still there,
/// and does it still matter? Returns it (or `None`) with the manifests that
/// still need its digest.
fn confirm(
    store: &Store,
    p: Problem,
    owners: Vec<Need>,
) -> Result<(Option<Problem>, Vec<Need>), StorageError> {
    let mut live = vec![];
    for n in owners {
        if store.has_revision(&n.repo, &n.manifest)? {
            live.push(n);
        }
    }
    let repo = p
        .repository
        .as_deref()
        .and_then(|r| r.parse::<RepoName>().ok());
    let still = match (p.kind, &repo) {
        (Kind::Missing, _) => !live.is_empty() && store.blob_size(&p.digest)?.is_none(),
        // Blobs are never rewritten in place: still there, still wrong.
        (Kind::Corrupt, _) => store.blob_size(&p.digest)?.is_some(),
        (Kind::DanglingTag, Some(r)) => {
            let tag = p.tag.as_deref().and_then(|t| t.parse::<Tag>().ok());
            let named = match tag {
                Some(t) => store.tag_link(r, &t)?.as_ref() == Some(&p.digest),
                None => false,
            };
            named && !store.has_revision(r, &p.digest)?
        }
        (Kind::NotLinked | Kind::MissingChild | Kind::BadManifest, Some(r)) => {
            // The manifest that needs it (or is it) is still there...
            let by = p.needed_by.as_ref().unwrap_or(&p.digest);
            store.has_revision(r, by)?
                // ...and what it needs is still not.
                && match p.kind {
                    Kind::NotLinked => !store.has_layer_link(r, &p.digest)?,
                    Kind::MissingChild => !store.has_revision(r, &p.digest)?,
                    _ => true,
                }
        }
        _ => true,
    };
    Ok((still.then_some(p), live))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        StorageError::io(
            std::path::Path::new("verify"),
            std::io::Error::other(format!("a task failed: {e}")),
        )
    })?
}
