//! Manifests and tags: put (checking every reference), get by tag or
//! digest, delete by digest (with the tags that name it) or by tag alone.

use bytes::Bytes;

use super::error::StorageError;
use super::Store;
use crate::oci::media::ManifestKind;
use crate::oci::{Algorithm, Descriptor, Digest, Manifest, Reference, RepoName, Tag};

/// A manifest as stored: the client's bytes, its digest and media type.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: &'static str,
}

/// The outcome of a manifest PUT.
#[derive(Clone, Debug)]
pub struct ManifestPut {
    pub digest: Digest,
    /// The manifest's `subject`, for the `OCI-Subject` response header.
    pub subject: Option<Digest>,
    /// Its media type, as parsed.
    pub media_type: &'static str,
}

impl Store {
    /// Store a manifest under a tag or its digest, after checking that the
    /// repository has everything it references.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<ManifestPut, StorageError> {
        self.store_manifest(repo, reference, bytes, content_type, true)
    }

    /// Store a manifest fetched from a pull-through cache's upstream: what
    /// it references is fetched when a client asks for it, so nothing is
    /// checked but the manifest itself (and its digest).
    pub fn put_cached_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<ManifestPut, StorageError> {
        self.store_manifest(repo, reference, bytes, content_type, false)
    }

    fn store_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
        check_references: bool,
    ) -> Result<ManifestPut, StorageError> {
        self.check_writable()?;
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, bytes);
        if let Reference::Digest(expected) = reference {
            if *expected != digest {
                return Err(StorageError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let manifest = Manifest::parse(bytes, content_type)?;
        let _repo = self.lock_repo(repo);
        // Everything it references, and itself, claimed at once (see
        // `in_use`): what exists is kept by a collection running now. The
        // links are looked at after the claim: a collection that deleted a
        // blob before it took the blob's links too.
        if check_references {
            let uses: Vec<Digest> = manifest
                .required_blobs()
                .map(|b| b.digest.clone())
                .chain(manifest.manifests.iter().map(|c| c.digest.clone()))
                .collect();
            let exists = self.claim_blobs(&uses)?;
            if let Some((d, _)) = uses.iter().zip(&exists).find(|(_, e)| !**e) {
                return Err(StorageError::ManifestBlobUnknown(d.clone()));
            }
            self.check_linked(repo, &manifest)?;
        }
        let stored = self.claim_if_present(&digest)?;

        // Content first, then the revision link, then the tag.
        let data = self.layout.blob_data(&digest);
        let objects = self.backend.objects();
        if !stored {
            objects.write(&data, bytes)?;
        }
        self.manifest_kinds.insert(digest.clone(), manifest.kind);
        if !self.manifest_bytes.contains(&digest) {
            self.manifest_bytes
                .put(&digest, &Bytes::copy_from_slice(bytes));
        }
        self.backend
            .write_link(&self.layout.revision_link(repo, &digest), &digest)?;
        let new_repo = self.index.add_repo(repo);
        if let Reference::Tag(tag) = reference {
            self.backend
                .write_link(&self.layout.tag_index_link(repo, tag, &digest), &digest)?;
            self.backend
                .write_link(&self.layout.tag_current_link(repo, tag), &digest)?;
            self.index.set_tag(repo, tag, &digest);
        }
        let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            self.referrers.add(
                repo,
                subject,
                referrer_descriptor(&manifest, &digest, bytes.len() as u64),
            );
        }
        // What other processes list (repositories, tags, referrers) changed.
        if new_repo || matches!(reference, Reference::Tag(_)) || subject.is_some() {
            self.changed(repo)?;
        }
        Ok(ManifestPut {
            digest,
            subject,
            media_type: manifest.kind.media_type(),
        })
    }

    /// Everything the manifest references must be linked into the
    /// repository: a blob by its `_layers` link, a child manifest as a
    /// revision (or a blob).
    fn check_linked(&self, repo: &RepoName, m: &Manifest) -> Result<(), StorageError> {
        let (b, objects) = (&self.backend, self.backend.objects());
        for blob in m.required_blobs() {
            let d = &blob.digest;
            if !b.exists(&self.layout.layer_link(repo, d))? {
                return Err(StorageError::ManifestBlobUnknown(d.clone()));
            }
        }
        for child in &m.manifests {
            let d = &child.digest;
            // The revision link is touched: on a file system its time is
            // what keeps an untagged child from a collection.
            let linked = objects.touch(&self.layout.revision_link(repo, d))?
                || b.exists(&self.layout.layer_link(repo, d))?;
            if !linked {
                return Err(StorageError::ManifestBlobUnknown(d.clone()));
            }
        }
        Ok(())
    }

    /// The digest a reference names in `repo`.
    pub fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest, StorageError> {
        match reference {
            Reference::Digest(d) => {
                if self.backend.exists(&self.layout.revision_link(repo, d))? {
                    Ok(d.clone())
                } else {
                    Err(StorageError::ManifestUnknown(d.to_string()))
                }
            }
            Reference::Tag(tag) => self
                .tag_link(repo, tag)?
                .ok_or_else(|| self.unknown_tag(repo, tag)),
        }
    }

    /// Where a tag points now, read from storage (not the index).
    pub fn tag_link(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        self.backend
            .read_link(&self.layout.tag_current_link(repo, tag))
    }

    fn unknown_tag(&self, repo: &RepoName, tag: &Tag) -> StorageError {
        // Until the index is complete, the layout tells whether it exists.
        let known = self.index.contains_repo(repo)
            || (!self.index.is_complete()
                && self
                    .backend
                    .objects()
                    .list(&self.layout.repo_dir(repo))
                    .is_ok_and(|e| !e.is_empty()));
        if known {
            StorageError::ManifestUnknown(tag.to_string())
        } else {
            StorageError::NameUnknown
        }
    }

    /// Read a manifest by tag or digest.
    pub fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest, StorageError> {
        let digest = self.resolve(repo, reference)?;
        let bytes = match self.manifest_bytes.get(&digest) {
            Some(b) => b,
            None => {
                let Some(bytes) = self
                    .backend
                    .objects()
                    .read(&self.layout.blob_data(&digest))?
                else {
                    return Err(StorageError::ManifestUnknown(reference.to_string()));
                };
                let bytes = Bytes::from(bytes);
                self.manifest_bytes.put(&digest, &bytes);
                bytes
            }
        };
        let kind = match self.manifest_kinds.get(&digest) {
            Some(k) => *k,
            None => {
                let kind = Manifest::parse(&bytes, None)
                    .map(|m| m.kind)
                    // Stored by another registry in a form we would refuse
                    // today: serve the bytes as the most generic type.
                    .unwrap_or(ManifestKind::OciManifest);
                self.manifest_kinds.insert(digest.clone(), kind);
                kind
            }
        };
        Ok(StoredManifest {
            bytes,
            digest,
            media_type: kind.media_type(),
        })
    }

    /// Size and media type of a manifest, for HEAD, without reading it
    /// when its kind is already known.
    pub fn stat_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, u64, &'static str), StorageError> {
        let digest = self.resolve(repo, reference)?;
        let kind = self.manifest_kinds.get(&digest).map(|k| *k);
        if let (Some(kind), Some(bytes)) = (kind, self.manifest_bytes.get(&digest)) {
            return Ok((digest, bytes.len() as u64, kind.media_type()));
        }
        if let (Some(kind), Some(size)) = (kind, self.blob_size(&digest)?) {
            return Ok((digest, size, kind.media_type()));
        }
        let m = self.get_manifest(repo, &Reference::Digest(digest))?;
        Ok((m.digest, m.bytes.len() as u64, m.media_type))
    }

    /// Delete a manifest by digest, with every tag that points at it.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.check_delete()?;
        let _repo = self.lock_repo(repo);
        let link = self.layout.revision_link(repo, digest);
        if !self.backend.exists(&link)? {
            return Err(StorageError::ManifestUnknown(digest.to_string()));
        }
        // Tags first: a tag must never name a manifest that is gone. They
        // are read from the layout, not the index: another node may have
        // tagged the manifest a moment ago.
        self.index
            .refresh_repo(self.backend.objects(), &self.layout, repo)?;
        for tag in self.index.tags_pointing_at(repo, digest) {
            self.remove_tag_dir(repo, &tag)?;
        }
        let subject = self
            .backend
            .objects()
            .read(&self.layout.blob_data(digest))?
            .and_then(|b| Manifest::parse(&b, None).ok())
            .and_then(|m| m.subject.map(|s| s.digest));
        self.backend
            .objects()
            .delete_dir(link.parent().expect("link has a directory"))?;
        if let Some(subject) = subject {
            self.referrers.remove(repo, &subject, digest);
        }
        self.changed(repo)
    }

    /// Rewrite a manifest's revision link: its time says when a pull-through
    /// cache last served it (`gc::expire`).
    pub fn note_pulled(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let link = self.layout.revision_link(repo, digest);
        if self.backend.exists(&link)? {
            self.backend.write_link(&link, digest)?;
        }
        Ok(())
    }

    /// When each of `tags` was last pointed at a manifest: the time its
    /// link was written (`None` for a tag gone since). Concurrent in a bucket.
    pub fn tags_pushed(
        &self,
        repo: &RepoName,
        tags: &[&Tag],
    ) -> Result<Vec<Option<std::time::SystemTime>>, StorageError> {
        let links: Vec<_> = tags
            .iter()
            .map(|t| self.layout.tag_current_link(repo, t))
            .collect();
        Ok(self
            .backend
            .objects()
            .stat_many(&links)?
            .into_iter()
            .map(|m| m.map(|m| m.modified))
            .collect())
    }

    /// Delete one tag; the manifest stays, reachable by digest.
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), StorageError> {
        self.check_delete()?;
        let _repo = self.lock_repo(repo);
        if !self
            .backend
            .exists(&self.layout.tag_current_link(repo, tag))?
        {
            return Err(self.unknown_tag(repo, tag));
        }
        self.remove_tag_dir(repo, tag)
    }

    /// Delete `tag` only if it still names `expected`, checked and deleted
    /// under the repository's lock (a push through this process waits);
    /// `Ok(false)` if it names another manifest now.
    pub fn delete_tag_if(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expected: &Digest,
    ) -> Result<bool, StorageError> {
        self.check_delete()?;
        let _repo = self.lock_repo(repo);
        match self.tag_link(repo, tag)? {
            None => Err(self.unknown_tag(repo, tag)),
            Some(now) if now != *expected => Ok(false),
            Some(_) => self.remove_tag_dir(repo, tag).map(|()| true),
        }
    }

    fn remove_tag_dir(&self, repo: &RepoName, tag: &Tag) -> Result<(), StorageError> {
        self.backend
            .objects()
            .delete_dir(&self.layout.tag_dir(repo, tag))?;
        self.index.remove_tag(repo, tag);
        self.changed(repo)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally filtered by artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, StorageError> {
        let all = self.referrers.get(self, repo, subject)?;
        Ok(match artifact_type {
            None => all,
            Some(t) => all
                .into_iter()
                .filter(|d| d.artifact_type.as_deref() == Some(t))
                .collect(),
        })
    }
}

/// The descriptor a referrers list shows for a manifest.
pub(super) fn referrer_descriptor(m: &Manifest, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: m.kind.media_type().to_string(),
        digest: digest.clone(),
        size,
        urls: vec![],
        annotations: m.annotations.clone().filter(|a| !a.is_empty()),
        artifact_type: m.effective_artifact_type(),
        platform: None,
    }
}
