//! A collection in a bucket, beside nodes that go on taking pushes.
//!
//! The mark is the file system's (`mark::keep`), read with a few listings
//! instead of a directory at a time: one of the markers of use, one of
//! every key under `repositories/`, concurrent reads of the tags' links and
//! of the manifests, one of every blob. Deletions follow the protocol of
//! `storage::in_use`, a batch at a time: intents, a look at the markers,
//! one DeleteObjects request for what nobody claimed, and the intents gone.
//!
//! Times in a bucket are whole seconds: the grace period is lengthened by up
//! to one second so that an object written within it is never taken for
//! older.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use object_store::PutPayload;

use super::mark::{keep, parse_refs, RepoManifests, Untagged};
use super::{GcError, Options, Report};
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::backend::s3::{Listed, S3Config, S3};
use crate::storage::backend::{parse_link, Backend, Objects};
use crate::storage::in_use::{intent_is_live, ACTS};
use crate::storage::layout::repository_key;
use crate::storage::purge::{purge, PurgeAges};
use crate::storage::{discard_session, Layout, StorageError};

/// Digests decided on together (their keys go in one or a few
/// DeleteObjects requests), and batches under way at once: the object
/// store's time per deleted key is what a pass waits for.
const BATCH: usize = 250;
const BATCHES_AT_ONCE: usize = 4;
/// Requests in flight at once.
const CONCURRENT: usize = 32;
/// Manifests read at once during the mark (bounds the memory they take).
const MANIFESTS_AT_ONCE: usize = 1000;

/// What goes with a digest nobody claimed, in two requests: the links
/// first, then the content. An upload that finds the content gone (and so
/// claims nothing) stores it again and links it after both: its new link
/// cannot be among those deleted.
struct Doomed {
    links: Vec<PathBuf>,
    content: Vec<PathBuf>,
}

/// Everything the mark read from `repositories/`, and the blobs listed
/// meanwhile.
#[derive(Default)]
struct Repositories {
    manifests: HashMap<RepoName, RepoManifests>,
    /// Every `_layers` link, by the digest it names.
    layer_links: HashMap<Digest, Vec<PathBuf>>,
    blobs: Vec<Listed>,
}

struct Collector<'a> {
    backend: &'a Backend,
    s3: &'a S3,
    layout: Layout,
    options: &'a Options,
    cutoff: SystemTime,
    /// This pass's name, the last part of its intents' keys.
    pass: String,
    /// The markers of use as the pass began.
    markers: HashMap<Digest, Listed>,
    stop: &'a AtomicBool,
}

/// Run one pass over the store in the bucket `config` names.
pub fn collect(
    config: &S3Config,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
    stop: &AtomicBool,
) -> Result<Report, GcError> {
    let backend = Backend::S3(S3::connect(config)?);
    let Backend::S3(s3) = &backend else {
        unreachable!("built just above")
    };
    let layout = Layout::new(Path::new(&config.root_key()));
    let slack = options.grace.min(Duration::from_secs(1));
    let cutoff = SystemTime::now()
        .checked_sub(options.grace + slack)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };

    if let Some(expire) = &options.expire_cached {
        progress("expiring cached manifests nobody pulled");
        report.cached_manifests_expired =
            super::expire::cached(backend.objects(), &layout, expire, options.dry_run, stop)?;
    }
    let started = Instant::now();
    progress("marking");
    // The markers first: a claim after this point shows as a change.
    let markers = by_digest(s3.wait(s3.list_all(&layout.in_use_dir()))?);
    let collector = Collector {
        backend: &backend,
        s3,
        layout,
        options,
        cutoff,
        pass: hex::encode(rand::random::<[u8; 8]>()),
        markers,
        stop,
    };
    collector.remove_stale_intents()?;
    let Repositories {
        manifests,
        layer_links,
        blobs,
    } = collector.read_repositories()?;
    report.repositories = manifests.len();
    let mut marked = HashSet::new();
    let mut untagged = Vec::new();
    for (repo, manifests) in manifests {
        let (kept, blobs, u) = keep(&repo, manifests, options, cutoff);
        report.manifests_kept += kept;
        marked.extend(blobs);
        untagged.extend(u);
    }
    collector.stopped()?;
    report
        .phases
        .push(("mark".into(), started.elapsed().as_secs_f64()));

    let started = Instant::now();
    progress("sweeping manifests");
    collector.untagged(untagged, &mut marked, &mut report)?;
    report.blobs_kept = marked.len();
    progress("sweeping blobs and their links");
    collector.blobs(blobs, &marked, &layer_links, &mut report)?;
    progress("sweeping uploads");
    collector.uploads(&mut report)?;
    report
        .phases
        .push(("sweep".into(), started.elapsed().as_secs_f64()));
    collector.stopped()?;
    Ok(report)
}

/// Listed objects named `<alg>/<hex>` (markers), by digest.
fn by_digest(listed: Vec<Listed>) -> HashMap<Digest, Listed> {
    listed
        .into_iter()
        .filter_map(|l| {
            let (alg, hex) = l.name.split_once('/')?;
            let d = Digest::from_layout(alg, hex)?;
            Some((d, l))
        })
        .collect()
}

/// Whether a marker is as it was when the pass began: nobody claimed its
/// blob since. A marker gone meanwhile went with its blob (another pass).
/// Every claim writes new content, so the ETag tells; without ETags, the
/// time (to the second, as a HEAD gives it) and the size.
fn unchanged(now: Option<&Listed>, then: Option<&Listed>) -> bool {
    let seconds = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    };
    let etag = |l: &Listed| l.etag.as_deref().map(|e| e.trim_matches('"').to_string());
    match (now, then) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(n), Some(t)) => match (etag(n), etag(t)) {
            (Some(a), Some(b)) => a == b,
            _ => seconds(n.modified) == seconds(t.modified) && n.size == t.size,
        },
    }
}

impl Collector<'_> {
    fn stopped(&self) -> Result<(), GcError> {
        super::interrupted(self.stop)
    }

    fn old(&self, modified: SystemTime) -> bool {
        modified < self.cutoff
    }

    /// Whether the blob was last claimed before the grace period.
    fn unused_lately(&self, d: &Digest) -> bool {
        self.markers.get(d).is_none_or(|m| self.old(m.modified))
    }

    /// Intents that dead passes left behind: no node honours them any more.
    fn remove_stale_intents(&self) -> Result<(), GcError> {
        if self.options.dry_run {
            return Ok(());
        }
        let dir = self.layout.deletion_intents_dir();
        let now = SystemTime::now();
        let stale: Vec<PathBuf> = self
            .s3
            .wait(self.s3.list_all(&dir))?
            .into_iter()
            .filter(|i| !intent_is_live(i.modified, now))
            .map(|i| dir.join(i.name))
            .collect();
        Ok(self.s3.wait(self.s3.delete_many(&stale))?)
    }

    /// One listing of `repositories/` (and, beside it, one of `blobs/`),
    /// then the tags' links and the manifests read concurrently. Anything
    /// unreadable stops the pass. (A blob stored after its listing is no
    /// candidate: only what was listed may be deleted.)
    fn read_repositories(&self) -> Result<Repositories, GcError> {
        let root = self.layout.repositories_dir();
        let blobs_dir = self.layout.blobs_dir();
        let (listed, blobs) = self.s3.wait(futures_util::future::join(
            self.s3.list_all(&root),
            self.s3.list_all(&blobs_dir),
        ));
        let listed = listed?;
        let mut repos = Repositories {
            blobs: blobs?,
            ..Repositories::default()
        };
        let mut tag_links: Vec<(RepoName, PathBuf)> = Vec::new();
        for l in &listed {
            let Some((repo, parts)) = repository_key(&l.name) else {
                continue;
            };
            let entry = repos.manifests.entry(repo.clone()).or_default();
            match parts[..] {
                ["_manifests", "revisions", alg, hex, "link"] => {
                    // The link's place names the revision (the server
                    // answers from it); its content is not read.
                    if let Some(d) = Digest::from_layout(alg, hex) {
                        entry.revisions.insert(d, (l.modified, None));
                    }
                }
                ["_manifests", "tags", tag, "current", "link"] if tag.parse::<Tag>().is_ok() => {
                    tag_links.push((repo, root.join(&l.name)));
                }
                ["_layers", alg, hex, "link"] => {
                    if let Some(d) = Digest::from_layout(alg, hex) {
                        repos
                            .layer_links
                            .entry(d)
                            .or_default()
                            .push(root.join(&l.name));
                    }
                }
                _ => {}
            }
        }
        self.stopped()?;

        let keys: Vec<PathBuf> = tag_links.iter().map(|(_, k)| k.clone()).collect();
        let read = self.s3.read_many(&keys)?;
        for ((repo, key), bytes) in tag_links.iter().zip(read) {
            // A tag deleted since the listing names nothing.
            if let Some(bytes) = bytes {
                let d = parse_link(key, &bytes).map_err(|e| GcError::io(key, e))?;
                if let Some(m) = repos.manifests.get_mut(repo) {
                    m.tagged.push(d);
                }
            }
        }

        // Each manifest once, whatever number of repositories hold it.
        let digests: Vec<Digest> = repos
            .manifests
            .values()
            .flat_map(|m| m.revisions.keys().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut refs = HashMap::new();
        for chunk in digests.chunks(MANIFESTS_AT_ONCE) {
            self.stopped()?;
            let keys: Vec<PathBuf> = chunk.iter().map(|d| self.layout.blob_data(d)).collect();
            for ((d, key), bytes) in chunk.iter().zip(&keys).zip(self.s3.read_many(&keys)?) {
                if let Some(bytes) = bytes {
                    refs.insert(d.clone(), parse_refs(key, d, &bytes)?);
                }
            }
        }
        for m in repos.manifests.values_mut() {
            for (d, (_, r)) in m.revisions.iter_mut() {
                if let Some(found) = refs.get(d) {
                    *r = Some(found.clone());
                }
            }
        }
        Ok(repos)
    }

    /// Decide about `candidates` under the protocol of `in_use`, a batch at
    /// a time and `BATCHES_AT_ONCE` batches at once: `keys` names what goes
    /// with a digest nobody claimed (`true`: its marker exists). Returns the
    /// digests kept because they were claimed during the pass.
    fn decide(
        &self,
        candidates: &[Digest],
        keys: impl Fn(&Digest, bool) -> Doomed + Sync,
    ) -> Result<HashSet<Digest>, GcError> {
        let batches = candidates
            .chunks(BATCH)
            .map(|b| self.decide_batch(b, &keys));
        let kept: Vec<Vec<Digest>> = self.s3.wait(
            futures_util::stream::iter(batches)
                .buffer_unordered(BATCHES_AT_ONCE)
                .try_collect(),
        )?;
        self.stopped()?;
        Ok(kept.into_iter().flatten().collect())
    }

    /// Steps 1 to 4 of `in_use` for one batch; the digests kept.
    async fn decide_batch(
        &self,
        batch: &[Digest],
        keys: &(impl Fn(&Digest, bool) -> Doomed + Sync),
    ) -> Result<Vec<Digest>, StorageError> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(batch.to_vec());
        }
        let s3 = self.s3;
        let began = Instant::now();
        let intents: Vec<PathBuf> = batch
            .iter()
            .map(|d| self.layout.deletion_intents(d).join(&self.pass))
            .collect();
        let decided: Result<Vec<Digest>, StorageError> = async {
            futures_util::stream::iter(intents.iter().map(|k| s3.put(k, PutPayload::default())))
                .buffer_unordered(CONCURRENT)
                .try_collect::<Vec<()>>()
                .await?;
            let markers: Vec<PathBuf> =
                batch.iter().map(|d| self.layout.in_use_marker(d)).collect();
            let now: Vec<Option<Listed>> =
                futures_util::stream::iter(markers.iter().map(|k| s3.head(k)))
                    .buffered(CONCURRENT)
                    .try_collect()
                    .await?;
            // Past `ACTS` nodes may no longer honour the intents: decide
            // nothing, keep everything (a later pass tries again).
            if began.elapsed() >= ACTS {
                tracing::warn!(
                    "a batch of {} deletions took longer than {}s to decide; all kept",
                    batch.len(),
                    ACTS.as_secs()
                );
                return Ok(batch.to_vec());
            }
            let (mut links, mut content) = (Vec::new(), Vec::new());
            let mut used = Vec::new();
            for (d, now) in batch.iter().zip(&now) {
                if unchanged(now.as_ref(), self.markers.get(d)) {
                    let doomed = keys(d, now.is_some());
                    links.extend(doomed.links);
                    content.extend(doomed.content);
                } else {
                    used.push(d.clone());
                }
            }
            s3.delete_many(&links).await?;
            s3.delete_many(&content).await?;
            Ok(used)
        }
        .await;
        // The intents go whatever happened (a node waits for them).
        let removed = s3.delete_many(&intents).await;
        let used = decided?;
        removed?;
        Ok(used)
    }

    /// Untagged revisions (with `delete_untagged`): their links go, unless
    /// the manifest was claimed lately (pushed again, or named by a new
    /// index); one kept keeps everything it reaches.
    fn untagged(
        &self,
        untagged: Vec<Untagged>,
        marked: &mut HashSet<Digest>,
        report: &mut Report,
    ) -> Result<(), GcError> {
        let mut by_digest: HashMap<Digest, Vec<Untagged>> = HashMap::new();
        for u in untagged {
            if self.unused_lately(&u.digest) {
                by_digest.entry(u.digest.clone()).or_default().push(u);
            } else {
                marked.extend(u.reaches);
            }
        }
        let digests: Vec<Digest> = by_digest.keys().cloned().collect();
        let in_use = if self.options.dry_run {
            HashSet::new()
        } else {
            // The revision links go; the manifest's content and marker stay
            // for the blob sweep.
            self.decide(&digests, |d, _| Doomed {
                links: by_digest[d]
                    .iter()
                    .map(|u| self.layout.revision_link(&u.repo, &u.digest))
                    .collect(),
                content: Vec::new(),
            })?
        };
        for (d, revisions) in &by_digest {
            if in_use.contains(d) {
                report.kept_in_use += 1;
                marked.extend(revisions.iter().flat_map(|u| u.reaches.iter().cloned()));
            } else {
                report.manifests_deleted += revisions.len();
            }
        }
        Ok(())
    }

    /// Blobs no kept manifest needs, older than the grace period and not
    /// claimed within it, with their markers and every link to them.
    fn blobs(
        &self,
        listed: Vec<Listed>,
        marked: &HashSet<Digest>,
        layer_links: &HashMap<Digest, Vec<PathBuf>>,
        report: &mut Report,
    ) -> Result<(), GcError> {
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        for l in listed {
            // `<alg>/<hex[0..2]>/<hex>/data`
            let parts: Vec<&str> = l.name.split('/').collect();
            let [alg, _, hex, "data"] = parts[..] else {
                continue;
            };
            let Some(d) = Digest::from_layout(alg, hex) else {
                continue;
            };
            if !marked.contains(&d) && self.old(l.modified) && self.unused_lately(&d) {
                sizes.insert(d, l.size);
            }
        }
        let candidates: Vec<Digest> = sizes.keys().cloned().collect();
        let in_use = if self.options.dry_run {
            HashSet::new()
        } else {
            self.decide(&candidates, |d, marker| {
                let mut content = vec![self.layout.blob_data(d)];
                if marker {
                    content.push(self.layout.in_use_marker(d));
                }
                Doomed {
                    links: layer_links.get(d).cloned().unwrap_or_default(),
                    content,
                }
            })?
        };
        for (d, size) in &sizes {
            if in_use.contains(d) {
                report.kept_in_use += 1;
            } else {
                report.blobs_deleted += 1;
                report.bytes_freed += size;
                report.links_deleted += layer_links.get(d).map_or(0, Vec::len);
            }
        }
        Ok(())
    }

    /// Upload sessions idle longer than the purge age; their multipart
    /// uploads are aborted.
    fn uploads(&self, report: &mut Report) -> Result<(), GcError> {
        let backend = self.backend;
        let ages = PurgeAges {
            upload: self.options.upload_age,
            temp: self.options.upload_age,
        };
        let purged = purge(
            backend,
            &self.layout,
            ages,
            self.options.dry_run,
            |repo, id, _| discard_session(backend, &self.layout, repo, id).map(|()| true),
        )?;
        report.uploads_deleted += purged.uploads;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(etag: Option<&str>, secs: u64, size: u64) -> Listed {
        Listed {
            name: String::new(),
            size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250),
            etag: etag.map(str::to_string),
        }
    }

    #[test]
    fn a_marker_written_again_is_a_change() {
        let then = marker(Some("\"aa\""), 100, 30);
        assert!(unchanged(Some(&marker(Some("aa"), 100, 30)), Some(&then)));
        assert!(!unchanged(Some(&marker(Some("bb"), 100, 30)), Some(&then)));
        // Appeared during the pass: claimed.
        assert!(!unchanged(Some(&then), None));
        // Gone with its blob (another pass): nobody claimed it.
        assert!(unchanged(None, Some(&then)));
        assert!(unchanged(None, None));
        // Without ETags: the second and the size.
        let bare = marker(None, 100, 30);
        assert!(unchanged(Some(&marker(None, 100, 30)), Some(&bare)));
        assert!(!unchanged(Some(&marker(None, 101, 30)), Some(&bare)));
        assert!(!unchanged(Some(&marker(None, 100, 31)), Some(&bare)));
    }

    #[test]
    fn markers_are_found_by_digest() {
        let hex = "a".repeat(64);
        let found = by_digest(vec![
            Listed {
                name: format!("sha256/{hex}"),
                ..marker(None, 1, 1)
            },
            Listed {
                name: "sha256/not-a-digest".into(),
                ..marker(None, 1, 1)
            },
        ]);
        assert_eq!(found.len(), 1);
        assert!(found.contains_key(&format!("sha256:{hex}").parse::<Digest>().unwrap()));
    }
}
