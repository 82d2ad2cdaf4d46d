//! Mark: every repository is read (in parallel) for the manifests it
//! keeps, and the blobs they need are collected in one set. Memory grows
//! with the number of live digests, not with the bytes stored.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{GcError, Options};
use crate::oci::{Digest, Manifest, ManifestError, RepoName};
use crate::storage::backend::fs::{read_link, Filesystem};
use crate::storage::{Index, Layout};

/// A manifest revision that no tag reaches (with `delete_untagged`).
pub struct Untagged {
    pub repo: RepoName,
    pub digest: Digest,
    /// Every blob it reaches (itself, config, layers, children): kept
    /// after all if its deletion is called off.
    pub reaches: Vec<Digest>,
}

#[derive(Default)]
pub struct Marked {
    /// Every repository, as listed for the mark (the sweep walks them again).
    pub repos: Vec<RepoName>,
    pub repositories: usize,
    pub manifests_kept: usize,
    pub blobs: HashSet<Digest>,
    pub untagged: Vec<Untagged>,
}

/// What one manifest refers to.
#[derive(Clone)]
pub struct Refs {
    pub children: Vec<Digest>,
    pub blobs: Vec<Digest>,
    pub subject: Option<Digest>,
}

/// A repository's manifests as the mark needs them: every revision with
/// its link's time and what it refers to (`None`: its content is gone), and
/// the digests its tags name.
#[derive(Default)]
pub struct RepoManifests {
    pub revisions: HashMap<Digest, (SystemTime, Option<Refs>)>,
    pub tagged: Vec<Digest>,
}

pub fn mark(
    layout: &Layout,
    options: &Options,
    cutoff: SystemTime,
    stop: &AtomicBool,
) -> Result<Marked, GcError> {
    let files = Filesystem::new(layout.tmp_dir());
    let index =
        Index::build(&files, layout).map_err(|e| GcError::io(&layout.repositories_dir(), e))?;
    let repos = index.catalog(usize::MAX, None, |_| true).items;
    let result = Mutex::new(Marked {
        repositories: repos.len(),
        ..Marked::default()
    });
    let errors = super::par_each(&repos, stop, |repo| {
        let (kept, blobs, untagged) = mark_repo(layout, &index, repo, options, cutoff)?;
        let mut r = result.lock().unwrap();
        r.manifests_kept += kept;
        r.blobs.extend(blobs);
        r.untagged.extend(untagged);
        Ok(())
    });
    super::interrupted(stop)?;
    if !errors.is_empty() {
        return Err(GcError::Incomplete(errors));
    }
    let mut marked = result.into_inner().unwrap();
    marked.repos = repos;
    Ok(marked)
}

pub type RepoResult = (usize, Vec<Digest>, Vec<Untagged>);

fn mark_repo(
    layout: &Layout,
    index: &Index,
    repo: &RepoName,
    options: &Options,
    cutoff: SystemTime,
) -> Result<RepoResult, GcError> {
    // Every revision, with its link's time, and what it refers to.
    let mut revisions: HashMap<Digest, (SystemTime, Option<Refs>)> = HashMap::new();
    let dir = layout.revisions_dir(repo);
    for alg in read_dir(&dir)? {
        for hex in read_dir(&alg)? {
            let link = hex.join("link");
            let named = format!(
                "{}:{}",
                alg.file_name().unwrap_or_default().to_string_lossy(),
                hex.file_name().unwrap_or_default().to_string_lossy()
            );
            let Some(digest) = read_link(&link).map_err(|e| GcError::io(&link, e))? else {
                continue; // a directory without a link: nothing to keep
            };
            if digest.to_string() != named {
                return Err(GcError::io(&link, format!("names {digest}, not {named}")));
            }
            let time = match fs::metadata(&link).and_then(|m| m.modified()) {
                Ok(t) => t,
                // Deleted by the server since we listed it: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(GcError::io(&link, e)),
            };
            revisions.insert(digest.clone(), (time, refs(layout, &digest)?));
        }
    }
    let tagged = index
        .tags(repo, usize::MAX, None)
        .map(|p| p.items)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| index.tag_digest(repo, t))
        .collect();
    Ok(keep(
        repo,
        RepoManifests { revisions, tagged },
        options,
        cutoff,
    ))
}

/// What a repository keeps, from its manifests: the number of manifests
/// kept, the blobs they need, and (with `delete_untagged`) the revisions no
/// tag reaches, with what each would have kept.
pub fn keep(
    repo: &RepoName,
    manifests: RepoManifests,
    options: &Options,
    cutoff: SystemTime,
) -> RepoResult {
    let RepoManifests { revisions, tagged } = manifests;
    // Roots: tags; every revision unless untagged ones go; and, either way,
    // revisions younger than the grace period (a push in progress).
    let mut roots = tagged;
    for (d, (time, _)) in &revisions {
        if !options.delete_untagged || *time >= cutoff {
            roots.push(d.clone());
        }
    }
    let reach = |from: &[Digest]| -> HashSet<Digest> {
        let mut seen = HashSet::new();
        let mut todo: Vec<Digest> = from.to_vec();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if let Some((_, Some(r))) = revisions.get(&d) {
                todo.extend(r.children.iter().cloned());
            }
        }
        seen
    };
    // Referrers of kept manifests are kept, until nothing changes.
    let mut kept = reach(&roots);
    loop {
        let more: Vec<Digest> = revisions
            .iter()
            .filter(|(d, (_, r))| {
                !kept.contains(*d)
                    && r.as_ref()
                        .and_then(|r| r.subject.as_ref())
                        .is_some_and(|s| kept.contains(s))
            })
            .map(|(d, _)| d.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        kept.extend(reach(&more));
    }
    let blobs_of = |manifests: &HashSet<Digest>| -> Vec<Digest> {
        let mut out = Vec::new();
        for d in manifests {
            out.push(d.clone());
            if let Some((_, Some(r))) = revisions.get(d) {
                out.extend(r.blobs.iter().cloned());
                out.extend(r.children.iter().cloned());
            }
        }
        out
    };
    let untagged = revisions
        .keys()
        .filter(|d| !kept.contains(*d))
        .map(|d| Untagged {
            repo: repo.clone(),
            digest: d.clone(),
            reaches: blobs_of(&reach(std::slice::from_ref(d))),
        })
        .collect();
    (kept.len(), blobs_of(&kept), untagged)
}

/// What a manifest refers to; `None` if its content is gone (a revision
/// link Distribution left behind). Content that does not parse stops the
/// pass: what it references cannot be known, so nothing may be deleted.
fn refs(layout: &Layout, digest: &Digest) -> Result<Option<Refs>, GcError> {
    let path = layout.blob_data(digest);
    match fs::read(&path) {
        Ok(bytes) => parse_refs(&path, digest, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GcError::io(&path, e)),
    }
}

/// What the manifest `digest`, stored at `path`, refers to.
pub fn parse_refs(path: &Path, digest: &Digest, bytes: &[u8]) -> Result<Refs, GcError> {
    let unparsable = |e: &dyn std::fmt::Display| {
        GcError::io(path, format!("manifest {digest} cannot be parsed: {e}"))
    };
    let m = match Manifest::parse(bytes, None) {
        Ok(m) => m,
        // Old Docker schema1 manifests (which the server no longer takes)
        // still hold layers in stores written long ago.
        Err(ManifestError::Schema1) => return schema1_refs(bytes).map_err(|e| unparsable(&e)),
        Err(e) => return Err(unparsable(&e)),
    };
    Ok(Refs {
        children: m.manifests.iter().map(|c| c.digest.clone()).collect(),
        blobs: m
            .config
            .iter()
            .chain(m.layers.iter())
            .map(|b| b.digest.clone())
            .collect(),
        subject: m.subject.map(|s| s.digest),
    })
}

fn schema1_refs(bytes: &[u8]) -> Result<Refs, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layer {
        blob_sum: Digest,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Schema1 {
        fs_layers: Vec<Layer>,
    }
    let m: Schema1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Refs {
        children: vec![],
        blobs: m.fs_layers.into_iter().map(|l| l.blob_sum).collect(),
        subject: None,
    })
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, GcError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()).map_err(|err| GcError::io(dir, err)))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(GcError::io(dir, e)),
    }
}
