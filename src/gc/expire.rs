//! Cached content nobody pulled (`registry-gc --cache-unused`): in the
//! repositories a pull-through cache serves, a manifest whose revision
//! link was last written longer ago than the limit loses that link and the
//! tags that name it. The cache writes the link when it stores a manifest
//! and again, at most hourly, when a client pulls it; the rest of the pass
//! then frees what only those manifests used, and a later pull fetches
//! them again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use super::{interrupted, GcError};
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::backend::{parse_link, Objects};
use crate::storage::layout::{repository_key, Layout};

/// Which cached content expires, and when.
#[derive(Clone, Debug)]
pub struct Expire {
    /// Not pulled for this long.
    pub unused: Duration,
    /// The caches' prefixes (`""`: every repository).
    pub prefixes: Vec<String>,
}

impl Expire {
    fn covers(&self, repo: &RepoName) -> bool {
        self.prefixes
            .iter()
            .any(|p| repo.as_str().starts_with(p.as_str()))
    }
}

/// Remove the revisions (and their tags) of cached manifests not pulled
/// within `expire.unused`; how many revisions went (or, in a dry run,
/// would go).
pub fn cached(
    objects: &dyn Objects,
    layout: &Layout,
    expire: &Expire,
    dry_run: bool,
    stop: &AtomicBool,
) -> Result<usize, GcError> {
    let mut revisions: Vec<(RepoName, Digest)> = Vec::new();
    let mut tags: Vec<(RepoName, Tag)> = Vec::new();
    for key in objects.walk(&layout.repositories_dir())? {
        let Some((repo, parts)) = repository_key(&key) else {
            continue;
        };
        if !expire.covers(&repo) {
            continue;
        }
        match parts[..] {
            ["_manifests", "revisions", alg, hex, "link"] => {
                if let Some(d) = Digest::from_layout(alg, hex) {
                    revisions.push((repo, d));
                }
            }
            ["_manifests", "tags", tag, "current", "link"] => {
                if let Ok(t) = tag.parse::<Tag>() {
                    tags.push((repo, t));
                }
            }
            _ => {}
        }
    }
    let links: Vec<PathBuf> = revisions
        .iter()
        .map(|(r, d)| layout.revision_link(r, d))
        .collect();
    let limit = SystemTime::now()
        .checked_sub(expire.unused)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let old: HashSet<(RepoName, Digest)> = revisions
        .into_iter()
        .zip(objects.stat_many(&links)?)
        .filter(|(_, meta)| meta.as_ref().is_some_and(|m| m.modified < limit))
        .map(|(rd, _)| rd)
        .collect();
    if old.is_empty() || dry_run {
        return Ok(old.len());
    }
    interrupted(stop)?;
    // Tags first: a tag never names a manifest that is gone.
    let tag_links: Vec<PathBuf> = tags
        .iter()
        .map(|(r, t)| layout.tag_current_link(r, t))
        .collect();
    for (((repo, tag), key), bytes) in tags
        .iter()
        .zip(&tag_links)
        .zip(objects.read_many(&tag_links)?)
    {
        let Some(bytes) = bytes else { continue };
        let digest = parse_link(key, &bytes)?;
        if old.contains(&(repo.clone(), digest)) {
            objects.delete_dir(&layout.tag_dir(repo, tag))?;
        }
    }
    for (repo, digest) in &old {
        interrupted(stop)?;
        let link = layout.revision_link(repo, digest);
        objects.delete_dir(link.parent().expect("a link has a directory"))?;
    }
    Ok(old.len())
}
