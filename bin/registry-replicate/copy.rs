//! One pass of one rule: for every admitted tag whose digest differs on
//! the target, copy what it needs in the order that never exposes a
//! dangling reference: blobs, then child manifests, then the manifest,
//! then its referrers, and the tag last.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use registry::oci::{Descriptor, Digest, Manifest, RepoName, Tag};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::config::Rule;
use crate::content::Fetched;
use crate::counters::Counters;
use crate::limit::{throttle, Limiter};
use crate::peer::Peer;
use crate::retry::StatusError;
use http::StatusCode;
use registry::client::join_all;

/// Tags of one repository compared or copied at once.
const TAGS_AT_ONCE: usize = 8;
/// Blobs larger than this are sent in chunks that can resume after a cut.
const CHUNKED_ABOVE: u64 = 16 << 20;
/// Size of those chunks (each PATCH holds one in memory).
const CHUNK: u64 = 8 << 20;

#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub rule: String,
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    pub tags_copied: u64,
    pub tags_current: u64,
    pub tags_deleted: u64,
    pub manifests_copied: u64,
    pub blobs_copied: u64,
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    /// Uploads that went on in the same session, from the offset the
    /// target reported, after a cut or a busy answer.
    pub blobs_resumed: u64,
    /// The sizes of the blobs sent: the bytes the copy needed.
    pub bytes_copied: u64,
    /// Blob bytes handed to the target, sent again after a cut included.
    pub bytes_sent: u64,
    /// Blob bytes that arrived from the source, read again included.
    pub bytes_received: u64,
    /// Requests sent again, to either peer, after no answer or a busy one.
    pub requests_retried: u64,
    /// Source reads cut in the middle that went on from the byte reached.
    pub reads_resumed: u64,
    pub seconds: f64,
    /// What could not be copied, each with the reason.
    pub failed: Vec<String>,
    /// In a dry run: the tags that would be copied or deleted.
    pub planned: Vec<String>,
}

/// A blob's first transfer, which others wait on so that the same digest
/// never crosses twice at once: the repository it went to, or the error.
type Transfer = Arc<OnceCell<Result<String, String>>>;

pub struct Pass<'a> {
    rule: &'a Rule,
    /// The peers, counting into `counters`.
    source: Peer,
    target: Peer,
    dry_run: bool,
    stop: &'a AtomicBool,
    counters: Arc<Counters>,
    failed: Mutex<Vec<String>>,
    planned: Mutex<Vec<String>>,
    /// Each blob's first transfer in this pass.
    transfers: Mutex<HashMap<Digest, Transfer>>,
    /// Blobs known to be in a target repository in this pass.
    placed: Mutex<HashSet<(String, Digest)>>,
    /// Bandwidth limits of the source and target.
    limits: Vec<Arc<Limiter>>,
    /// A target repository known to hold each blob, for mounts.
    holders: Mutex<HashMap<Digest, String>>,
    /// Manifests already on the target in this pass, per repository.
    manifests_done: Mutex<HashSet<(String, Digest)>>,
}

impl<'a> Pass<'a> {
    pub fn new(
        rule: &'a Rule,
        source: &'a Peer,
        target: &'a Peer,
        dry_run: bool,
        stop: &'a AtomicBool,
    ) -> Pass<'a> {
        let counters = Arc::<Counters>::default();
        Pass {
            rule,
            source: source.counted(counters.clone()),
            target: target.counted(counters.clone()),
            dry_run,
            stop,
            counters,
            failed: Mutex::default(),
            planned: Mutex::default(),
            transfers: Mutex::default(),
            placed: Mutex::default(),
            limits: vec![],
            holders: Mutex::default(),
            manifests_done: Mutex::default(),
        }
    }

    /// Blob bytes go no faster than these allow.
    pub fn limited(mut self, limits: Vec<Arc<Limiter>>) -> Self {
        self.limits = limits;
        self
    }

    /// The live counters, for a progress line while the pass runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    fn fail(&self, what: String) {
        tracing::warn!("{what}");
        self.failed.lock().expect("lock").push(what);
    }

    /// Run the pass over every admitted repository, `repos_at_once` at a time.
    pub async fn run(self, repos_at_once: usize) -> Summary {
        let start = Instant::now();
        if let Err(e) = self.source.refresh().await {
            self.fail(format!("source {}: {e:#}", self.source.label()));
        }
        let repos = match self.source.repositories().await {
            Ok(r) => r
                .into_iter()
                .filter(|r| self.rule.repositories.admits(r))
                .collect::<Vec<_>>(),
            Err(e) => {
                self.fail(format!(
                    "listing repositories of {}: {e:#}",
                    self.source.label()
                ));
                vec![]
            }
        };
        let slots = tokio::sync::Semaphore::new(repos_at_once.max(1));
        let (slots, this) = (&slots, &self);
        let jobs = repos.iter().map(|repo| async move {
            let _slot = slots.acquire().await.expect("never closed");
            if this.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = this.repository(repo).await {
                this.fail(format!("{repo}: {e:#}"));
            }
        });
        join_all(jobs).await;
        if self.stop.load(Ordering::Relaxed) {
            // What the stop skipped is not copied: the run must not pass.
            self.fail("stopped by a signal before the pass finished".into());
        }
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Summary {
            rule: self.rule.name.clone(),
            source: self.source.label(),
            target: self.target.label(),
            dry_run: self.dry_run,
            tags_copied: load(&c.tags_copied),
            tags_current: load(&c.tags_current),
            tags_deleted: load(&c.tags_deleted),
            manifests_copied: load(&c.manifests_copied),
            blobs_copied: load(&c.blobs_copied),
            blobs_present: load(&c.blobs_present),
            blobs_mounted: load(&c.blobs_mounted),
            blobs_resumed: load(&c.blobs_resumed),
            bytes_copied: load(&c.bytes_copied),
            bytes_sent: load(&c.bytes_sent),
            bytes_received: load(&c.bytes_received),
            requests_retried: load(&c.requests_retried),
            reads_resumed: load(&c.reads_resumed),
            seconds: start.elapsed().as_secs_f64(),
            failed: self.failed.into_inner().expect("lock"),
            planned: self.planned.into_inner().expect("lock"),
        }
    }

    async fn repository(&self, repo: &str) -> anyhow::Result<()> {
        let dest = format!("{}{repo}", self.rule.prefix);
        // Names from the source go into the target's URLs: only valid ones.
        for name in [repo, dest.as_str()] {
            if let Err(e) = name.parse::<RepoName>() {
                anyhow::bail!("not a valid repository name: {e}");
            }
        }
        let mut tags = vec![];
        for t in self.source.tags(repo).await? {
            if t.parse::<Tag>().is_err() {
                self.fail(format!(
                    "{repo}: the source lists {t:?}, which is not a valid tag"
                ));
            } else if self.rule.tags.admits(&t) {
                tags.push(t);
            }
        }
        // Tags side by side: the peers' own limits bound the requests, and
        // shared blobs and manifests are copied once (see `blob`).
        let slots = tokio::sync::Semaphore::new(TAGS_AT_ONCE);
        let (slots, dest_ref) = (&slots, &dest);
        join_all(tags.iter().map(|tag| async move {
            let _slot = slots.acquire().await.expect("never closed");
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = self.tag(repo, dest_ref, tag).await {
                self.fail(format!("{repo}:{tag}: {e:#}"));
            }
        }))
        .await;
        if self.rule.deletes {
            let have: HashSet<&String> = tags.iter().collect();
            let theirs = self.target.tags(&dest).await?;
            for t in theirs.iter().filter(|t| {
                t.parse::<Tag>().is_ok() && self.rule.tags.admits(t) && !have.contains(t)
            }) {
                if self.dry_run {
                    self.planned
                        .lock()
                        .expect("lock")
                        .push(format!("delete {dest}:{t}"));
                    continue;
                }
                match self.target.remote()?.delete_manifest(&dest, t).await {
                    Ok(()) => {
                        self.counters.tags_deleted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.fail(format!("deleting {dest}:{t}: {e:#}")),
                }
            }
        }
        Ok(())
    }

    async fn tag(&self, repo: &str, dest: &str, tag: &str) -> anyhow::Result<()> {
        // Digests first (HEAD on both sides); the manifest is read only if
        // it must be copied, by digest, so a tag moving meanwhile cannot
        // mix two versions.
        let Some(digest) = self.source.manifest_digest(repo, tag).await? else {
            // Deleted while we looked.
            return Ok(());
        };
        // The target's digest and the source's referrers side by side: a
        // current tag (the common case) then costs two round trips, not
        // three. A signature or SBOM may have been attached since.
        let (theirs, referrers) = tokio::join!(self.target.manifest_digest(dest, tag), async {
            match self.dry_run {
                true => Ok(vec![]),
                false => self.source.referrers(repo, &digest).await,
            }
        });
        if theirs? == Some(digest.clone()) {
            self.counters.tags_current.fetch_add(1, Ordering::Relaxed);
            return self.copy_referrers(repo, dest, &digest, referrers?).await;
        }
        let m = self
            .source
            .manifest(repo, &digest.to_string())
            .await?
            .ok_or_else(|| anyhow!("{digest} vanished from the source while being read"))?;
        if self.dry_run {
            self.planned
                .lock()
                .expect("lock")
                .push(format!("copy {repo}:{tag} ({}) to {dest}:{tag}", m.digest));
            return Ok(());
        }
        self.manifest(repo, dest, &m).await?;
        // The tag last: by now everything it reaches is on the target.
        self.target
            .remote()?
            .put_manifest(dest, tag, &m)
            .await
            .context("tagging")?;
        self.counters.tags_copied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copy a manifest by digest with everything it references, and then
    /// the manifests that refer to it (signatures, SBOMs).
    fn manifest<'b>(
        &'b self,
        repo: &'b str,
        dest: &'b str,
        m: &'b Fetched,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'b>> {
        Box::pin(async move {
            let key = (dest.to_string(), m.digest.clone());
            if self.manifests_done.lock().expect("lock").contains(&key) {
                return Ok(());
            }
            let present = self
                .target
                .manifest_digest(dest, &m.digest.to_string())
                .await?
                .is_some();
            if !present {
                let parsed = Manifest::parse(&m.bytes, Some(&m.media_type))
                    .map_err(|e| anyhow!("{}: {e}", m.digest))?;
                // Children side by side, then blobs side by side: the peers'
                // own limits bound the requests in flight.
                let children = parsed.manifests.iter().map(|child| async move {
                    let fetched = self
                        .source
                        .manifest(repo, &child.digest.to_string())
                        .await?
                        .ok_or_else(|| {
                            anyhow!(
                                "the index names {}, which the source does not have",
                                child.digest
                            )
                        })?;
                    self.manifest(repo, dest, &fetched).await
                });
                join_all(children)
                    .await
                    .into_iter()
                    .collect::<anyhow::Result<Vec<()>>>()?;
                let blobs = parsed
                    .required_blobs()
                    .map(|blob| self.blob(repo, dest, blob));
                join_all(blobs)
                    .await
                    .into_iter()
                    .collect::<anyhow::Result<Vec<()>>>()?;
                self.target
                    .remote()?
                    .put_manifest(dest, &m.digest.to_string(), m)
                    .await?;
                self.counters
                    .manifests_copied
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.manifests_done.lock().expect("lock").insert(key);
            self.referrers(repo, dest, &m.digest).await
        })
    }

    /// Copy the manifests the source lists as referring to `subject`.
    async fn referrers(&self, repo: &str, dest: &str, subject: &Digest) -> anyhow::Result<()> {
        let listed = self.source.referrers(repo, subject).await?;
        self.copy_referrers(repo, dest, subject, listed).await
    }

    /// Copy the manifests `listed` as referring to `subject`.
    async fn copy_referrers(
        &self,
        repo: &str,
        dest: &str,
        subject: &Digest,
        listed: Vec<Descriptor>,
    ) -> anyhow::Result<()> {
        for r in listed {
            let fetched = self
                .source
                .manifest(repo, &r.digest.to_string())
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "the source lists {} as a referrer of {subject} but does not serve it",
                        r.digest
                    )
                })?;
            self.manifest(repo, dest, &fetched).await?;
        }
        Ok(())
    }

    /// Make a blob present in the target repository: already there, mounted
    /// from another repository of the target, or sent.
    async fn blob(&self, repo: &str, dest: &str, d: &Descriptor) -> anyhow::Result<()> {
        let here = (dest.to_string(), d.digest.clone());
        if self.placed.lock().expect("lock").contains(&here) {
            return Ok(());
        }
        // One transfer per digest: whoever comes first copies it into its
        // repository; the others wait, then mount it from there.
        let cell = self
            .transfers
            .lock()
            .expect("lock")
            .entry(d.digest.clone())
            .or_default()
            .clone();
        let first = cell
            .get_or_init(|| async {
                self.transfer(repo, dest, d)
                    .await
                    .map(|()| dest.to_string())
                    .map_err(|e| format!("blob {}: {e:#}", d.digest))
            })
            .await;
        match first {
            Err(e) => {
                // Let a later manifest try again rather than inherit the failure.
                self.transfers.lock().expect("lock").remove(&d.digest);
                return Err(anyhow!("{e}"));
            }
            Ok(holder) if holder == dest => {}
            Ok(_) => self.transfer(repo, dest, d).await?,
        }
        self.placed.lock().expect("lock").insert(here);
        Ok(())
    }

    async fn transfer(&self, repo: &str, dest: &str, d: &Descriptor) -> anyhow::Result<()> {
        let c = &self.counters;
        if self.target.remote()?.has_blob(dest, &d.digest).await? {
            c.blobs_present.fetch_add(1, Ordering::Relaxed);
        } else {
            let holder = self.holders.lock().expect("lock").get(&d.digest).cloned();
            let mounted = match holder {
                Some(from) if from != dest => {
                    self.target.remote()?.mount(dest, &from, &d.digest).await?
                }
                _ => false,
            };
            if mounted {
                c.blobs_mounted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.send_blob(repo, dest, d).await?;
                c.blobs_copied.fetch_add(1, Ordering::Relaxed);
                c.bytes_copied.fetch_add(d.size, Ordering::Relaxed);
            }
        }
        self.holders
            .lock()
            .expect("lock")
            .entry(d.digest.clone())
            .or_insert_with(|| dest.to_string());
        Ok(())
    }

    /// Send a blob through one upload session: in one PUT when small, in
    /// PATCHes of `CHUNK` bytes when large. After a cut or a busy answer,
    /// ask the target how much it holds and go on from there, reading the
    /// source from that byte on: nothing that arrived is sent twice.
    async fn send_blob(&self, repo: &str, dest: &str, d: &Descriptor) -> anyhow::Result<()> {
        let target = self.target.remote()?;
        let mut up = target.start_upload(dest).await?;
        let mut tries = target.retries();
        let mut fresh_starts = 0;
        loop {
            let reached = up.offset;
            let mut stream = self
                .source
                .open_blob(repo, &d.digest, d.size, up.offset)
                .await?;
            let source_failure = stream.source_failure();
            stream.frames = throttle(stream.frames, self.limits.clone());
            let sent = if d.size > CHUNKED_ABOVE {
                match target.send_chunks(&mut up, stream, CHUNK).await {
                    Ok(()) => target.finish_upload(&up, &d.digest).await,
                    Err(e) => Err(e),
                }
            } else {
                target.put_rest(&up, &d.digest, stream).await
            };
            let Err(e) = sent else {
                return Ok(());
            };
            if let Some(why) = source_failure.get() {
                bail!("reading the source: {why}");
            }
            let what = format!("sending {} at byte {}", d.digest, up.offset);
            // The target disagrees with what was sent: an offset it did not
            // expect (416) is asked again, a blob it found wrong (400) is
            // sent again from the start, at most twice; both count as tries.
            let status = e.downcast_ref::<StatusError>().map(|s| s.status);
            let start_over = status == Some(StatusCode::BAD_REQUEST) && fresh_starts < 2;
            if start_over || status == Some(StatusCode::RANGE_NOT_SATISFIABLE) {
                tries.again(e, &what).await?;
            } else {
                tries.after(e, &what).await?;
            }
            if start_over {
                fresh_starts += 1;
                up = target.start_upload(dest).await?;
                continue;
            }
            // Where to go on from; a session the target lost, or an offset
            // past the blob, means a new session.
            match target.upload_offset(&mut up).await {
                Ok(()) if up.offset <= d.size => {
                    tracing::info!(digest = %d.digest, offset = up.offset, "resuming the upload");
                    self.counters.blobs_resumed.fetch_add(1, Ordering::Relaxed);
                    // Bytes arrived since the last fault: the time to retry
                    // starts again.
                    if up.offset > reached {
                        tries = target.retries();
                    }
                }
                _ => up = target.start_upload(dest).await?,
            }
        }
    }
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}: {} -> {}{}\n  tags: {} copied, {} already current, {} deleted\n  manifests copied: {}\n  blobs: {} sent ({:.1} MiB), {} mounted, {} already there\n  bytes: {:.1} MiB sent for {:.1} MiB needed, {:.1} MiB read from the source\n  faults: {} requests retried, {} reads and {} uploads resumed after a cut\n  time: {:.2} s\n",
            self.rule,
            self.source,
            self.target,
            if self.dry_run { " (dry run: nothing written)" } else { "" },
            self.tags_copied,
            self.tags_current,
            self.tags_deleted,
            self.manifests_copied,
            self.blobs_copied,
            mib(self.bytes_copied),
            self.blobs_mounted,
            self.blobs_present,
            mib(self.bytes_sent),
            mib(self.bytes_copied),
            mib(self.bytes_received),
            self.requests_retried,
            self.reads_resumed,
            self.blobs_resumed,
            self.seconds
        );
        for p in &self.planned {
            out.push_str(&format!("  would {p}\n"));
        }
        if !self.failed.is_empty() {
            out.push_str(&format!("  NOT COPIED ({}):\n", self.failed.len()));
            for f in &self.failed {
                out.push_str(&format!("    {f}\n"));
            }
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
