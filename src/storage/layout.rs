//! Every path of the on-disk layout, and nothing else. The layout is CNCF
//! Distribution's, so a `registry:2` data directory can be served as it is:
//!
//! ```text
//! <root>/docker/registry/v2/
//!   blobs/<alg>/<hex[0..2]>/<hex>/data                    content, by digest
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                            blob linked into the repo
//!     _manifests/revisions/<alg>/<hex>/link               manifest in the repo
//!     _manifests/tags/<tag>/current/link                  what the tag points at
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link        every digest it pointed at
//!     _uploads/<id>                                       ours, on a file system: upload in progress
//!     _uploads/<id>/data                                  upload in progress (Distribution's shape; a bucket)
//!     _uploads/<id>/startedat                             RFC 3339 start time (the same)
//!   _tmp/                                                 ours: staging for atomic writes
//!   _changes/<millis>.<node>.<seq>.<name>                 ours: notes of change between nodes
//!   _gc/used/<alg>/<hex>                                  ours, in a bucket: last use of a blob
//!   _gc/deleting/<alg>/<hex>/<pass>                       ours, in a bucket: a collector's intent
//! ```
//!
//! A link file holds the digest as text (`sha256:<hex>`, no newline).
//! `_tmp`, `_changes` and `_gc` are outside `blobs/` and `repositories/`, where
//! Distribution never looks, so they do not disturb a Distribution reading
//! the tree.

use std::path::{Path, PathBuf};

use crate::oci::{Digest, RepoName, Tag};

/// The paths of one store, rooted at `storage.filesystem.rootdirectory`.
#[derive(Clone, Debug)]
pub struct Layout {
    v2: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            v2: root.join("docker/registry/v2"),
        }
    }

    pub fn v2(&self) -> &Path {
        &self.v2
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.v2.join("_tmp")
    }

    /// Notes of change between processes sharing the store (`changes`).
    pub fn changes_dir(&self) -> PathBuf {
        self.v2.join("_changes")
    }

    /// Where the nodes and a collector on a bucket meet (`storage::in_use`).
    pub fn in_use_dir(&self) -> PathBuf {
        self.v2.join("_gc/used")
    }

    /// The object a node rewrites each time it uses a blob in a bucket.
    pub fn in_use_marker(&self, d: &Digest) -> PathBuf {
        self.in_use_dir().join(d.algorithm().as_str()).join(d.hex())
    }

    pub fn deletion_intents_dir(&self) -> PathBuf {
        self.v2.join("_gc/deleting")
    }

    /// The intents of collectors to delete one blob, one object per pass.
    pub fn deletion_intents(&self, d: &Digest) -> PathBuf {
        self.deletion_intents_dir()
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.v2.join("blobs")
    }

    pub fn blob_dir(&self, d: &Digest) -> PathBuf {
        self.v2
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.blob_dir(d).join("data")
    }

    pub fn repositories_dir(&self) -> PathBuf {
        self.v2.join("repositories")
    }

    pub fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        // RepoName's grammar guarantees a relative path without `.` or `..`.
        self.repositories_dir().join(repo.as_str())
    }

    pub fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
            .join("link")
    }

    pub fn revision_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.revisions_dir(repo)
            .join(d.algorithm().as_str())
            .join(d.hex())
            .join("link")
    }

    pub fn revisions_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_manifests/revisions")
    }

    pub fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags")
    }

    pub fn tag_dir(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.tags_dir(repo).join(tag.as_str())
    }

    pub fn tag_current_link(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.tag_dir(repo, tag).join("current/link")
    }

    pub fn tag_index_link(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> PathBuf {
        self.tag_dir(repo, tag)
            .join("index")
            .join(d.algorithm().as_str())
            .join(d.hex())
            .join("link")
    }

    pub fn uploads_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_uploads")
    }

    /// An upload session on a file system: one file holding its bytes (a
    /// directory in Distribution's shape, and in a bucket; see `upload_dir`).
    pub fn upload_file(&self, repo: &RepoName, id: &UploadId) -> PathBuf {
        self.uploads_dir(repo).join(id.as_str())
    }

    pub fn upload_dir(&self, repo: &RepoName, id: &UploadId) -> PathBuf {
        self.uploads_dir(repo).join(id.as_str())
    }

    pub fn upload_data(&self, repo: &RepoName, id: &UploadId) -> PathBuf {
        self.upload_dir(repo, id).join("data")
    }

    pub fn upload_started_at(&self, repo: &RepoName, id: &UploadId) -> PathBuf {
        self.upload_dir(repo, id).join("startedat")
    }
}

/// A key under `repositories/` (relative to it) split at the repository's
/// first `_` directory: the repository, and the path inside it from
/// `_manifests` or `_layers` on. `None` for other keys (uploads, names
/// that are no valid repository name).
pub fn repository_key(key: &str) -> Option<(RepoName, Vec<&str>)> {
    let parts: Vec<&str> = key.split('/').collect();
    // The repository's name ends where its first `_` directory starts.
    let at = parts.iter().position(|p| p.starts_with('_'))?;
    if !matches!(parts[at], "_manifests" | "_layers") {
        return None;
    }
    let repo = parts[..at].join("/").parse::<RepoName>().ok()?;
    Some((repo, parts[at..].to_vec()))
}

/// An upload session id: a UUID, or anything of the same safe alphabet
/// (Distribution writes UUIDs; we accept what it wrote).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn random() -> UploadId {
        let b: [u8; 16] = rand::random();
        let h = hex::encode(b);
        // Shaped as a version-4 UUID so clients that log it see the familiar form.
        UploadId(format!(
            "{}-{}-4{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    pub fn parse(s: &str) -> Option<UploadId> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !s.starts_with('-');
        ok.then(|| UploadId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_distribution() {
        let l = Layout::new(Path::new("/r"));
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let tag: Tag = "latest".parse().unwrap();
        let hex = d.hex();
        assert_eq!(
            l.blob_data(&d),
            PathBuf::from(format!("/r/docker/registry/v2/blobs/sha256/e3/{hex}/data"))
        );
        assert_eq!(
            l.layer_link(&repo, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_layers/sha256/{hex}/link"
            ))
        );
        assert_eq!(
            l.revision_link(&repo, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_manifests/revisions/sha256/{hex}/link"
            ))
        );
        assert_eq!(
            l.tag_current_link(&repo, &tag),
            PathBuf::from(
                "/r/docker/registry/v2/repositories/a/b/_manifests/tags/latest/current/link"
            )
        );
        assert_eq!(
            l.tag_index_link(&repo, &tag, &d),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/_manifests/tags/latest/index/sha256/{hex}/link"
            ))
        );
    }

    #[test]
    fn upload_ids() {
        let id = UploadId::random();
        assert_eq!(id.as_str().len(), 36);
        assert!(UploadId::parse(id.as_str()).is_some());
        for bad in ["", "..", "a/b", "../x", "-x", "a.b", "%2e"] {
            assert!(UploadId::parse(bad).is_none(), "{bad}");
        }
    }
}
