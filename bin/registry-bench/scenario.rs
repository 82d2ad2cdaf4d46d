//! The scenarios: what one operation is, what must exist before it runs,
//! and how its answer is checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, StatusCode};
use registry::oci::{media, Digest};

use crate::content::{Blob, BlobMaker, Image};
use registry::client::{
    drain, expect, follow_redirects, header, join_all, read_text, verified_bytes, verify_body,
    Conn, Frames,
};

const MIB: usize = 1 << 20;
/// Repositories a catalog page asks for.
pub const CATALOG_PAGE: usize = 1000;
/// Extra tags the tags-list scenario puts on one repository.
const TAGS: usize = 100;
/// Distinct blobs (and images) the pull scenarios cycle through.
const PULL_SET: u64 = 8;
/// Chunk size of the chunked push.
const CHUNK: u64 = 8 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    ManifestGet,
    BlobHead,
    TagsList,
    Catalog,
    /// Not in `all()` (its setup takes minutes): named to run.
    Catalog10k,
    Push1M,
    Push64M,
    PushChunked,
    Pull1M,
    Pull64M,
    ImagePush,
    ImagePull,
    Mix,
}

/// Every scenario; `all` leaves out those only run when named.
pub const NAMED: [Scenario; 13] = [
    Scenario::ManifestGet,
    Scenario::BlobHead,
    Scenario::TagsList,
    Scenario::Catalog,
    Scenario::Catalog10k,
    Scenario::Push1M,
    Scenario::Push64M,
    Scenario::PushChunked,
    Scenario::Pull1M,
    Scenario::Pull64M,
    Scenario::ImagePush,
    Scenario::ImagePull,
    Scenario::Mix,
];

/// What `all` runs: every scenario but `catalog-10k`, whose setup takes
/// minutes.
pub fn all() -> Vec<Scenario> {
    NAMED
        .into_iter()
        .filter(|s| *s != Scenario::Catalog10k)
        .collect()
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ManifestGet => "manifest-get",
            Scenario::BlobHead => "blob-head",
            Scenario::TagsList => "tags-list",
            Scenario::Catalog => "catalog",
            Scenario::Catalog10k => "catalog-10k",
            Scenario::Push1M => "push-1m",
            Scenario::Push64M => "push-64m",
            Scenario::PushChunked => "push-chunked",
            Scenario::Pull1M => "pull-1m",
            Scenario::Pull64M => "pull-64m",
            Scenario::ImagePush => "image-push",
            Scenario::ImagePull => "image-pull",
            Scenario::Mix => "mix-75-25",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::ManifestGet => "GET a manifest by tag, digest checked",
            Scenario::BlobHead => "HEAD a 1 MiB blob, size checked",
            Scenario::TagsList => "GET tags/list of a repository with 101 tags",
            Scenario::Catalog => "GET _catalog?n=1000 over 1,001 repositories",
            Scenario::Catalog10k => {
                "GET _catalog?n=1000 over 10,001 repositories (run only when named)"
            }
            Scenario::Push1M => "monolithic push (POST, PUT) of a new 1 MiB blob",
            Scenario::Push64M => "monolithic push (POST, PUT) of a new 64 MiB blob",
            Scenario::PushChunked => "chunked push of a new 64 MiB blob in 8 MiB PATCHes",
            Scenario::Pull1M => "GET a 1 MiB blob, digest checked",
            Scenario::Pull64M => "GET a 64 MiB blob, digest checked",
            Scenario::ImagePush => {
                "push an image (HEAD, upload config + 1 MiB + 4 MiB layers, manifest)"
            }
            Scenario::ImagePull => "pull an image (manifest, config, 2 layers, all checked)",
            Scenario::Mix => "3 image pulls to 1 image push",
        }
    }

    /// The DESIGN.md target: our rate over Distribution's.
    pub fn target(self) -> f64 {
        match self {
            Scenario::ManifestGet | Scenario::BlobHead | Scenario::TagsList => 5.0,
            Scenario::Catalog | Scenario::Catalog10k => 10.0,
            Scenario::Push64M => 2.5,
            Scenario::Pull64M => 1.3,
            _ => 3.0,
        }
    }

    /// The target when both registries keep their store in one bucket
    /// (DESIGN.md: catalog 20x, whole images at least 2x, the rest as on
    /// a file system).
    pub fn target_on_s3(self) -> f64 {
        match self {
            Scenario::Catalog | Scenario::Catalog10k => 20.0,
            Scenario::ImagePush | Scenario::ImagePull | Scenario::Mix => 2.0,
            other => other.target(),
        }
    }

    /// The repositories the catalog scenarios create (besides the static one).
    fn catalog_repos(self) -> usize {
        match self {
            Scenario::Catalog10k => 10 * CATALOG_PAGE,
            _ => CATALOG_PAGE,
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        NAMED
            .into_iter()
            .find(|x| x.name() == s || (s == "mix" && *x == Scenario::Mix))
    }
}

/// What a scenario's operations share: the content prepared before the
/// clock starts and a counter for new blobs.
pub struct Fixture {
    pub scenario: Scenario,
    repo: String,
    run: u64,
    next: AtomicU64,
    one_mib: BlobMaker,
    four_mib: Option<BlobMaker>,
    big: Option<BlobMaker>,
    /// The image every read scenario looks at.
    static_image: Option<Image>,
    pull_blobs: Vec<Blob>,
    pull_images: Vec<(String, Image)>,
    /// Kept-alive connections to where blob reads are redirected (a
    /// registry on object storage hands out signed URLs), between pulls.
    elsewhere: std::sync::Mutex<Vec<Conn>>,
}

impl Fixture {
    /// Build the content and put what the scenario reads into the
    /// registry, with `conns` connections in parallel.
    pub async fn prepare(
        scenario: Scenario,
        repo: &str,
        conns: &mut [Conn],
    ) -> anyhow::Result<Arc<Fixture>> {
        let run = crate::content::run_id();
        let needs_big = matches!(
            scenario,
            Scenario::Push64M | Scenario::PushChunked | Scenario::Pull64M
        );
        let needs_four = matches!(
            scenario,
            Scenario::ImagePush | Scenario::ImagePull | Scenario::Mix
        );
        let mut f = Fixture {
            scenario,
            repo: repo.to_string(),
            run,
            next: AtomicU64::new(0),
            one_mib: BlobMaker::new(MIB),
            four_mib: needs_four.then(|| BlobMaker::new(4 * MIB)),
            big: needs_big.then(|| BlobMaker::new(64 * MIB)),
            static_image: None,
            pull_blobs: vec![],
            pull_images: vec![],
            elsewhere: std::sync::Mutex::new(vec![]),
        };
        let conn = &mut conns[0];
        match scenario {
            Scenario::ManifestGet
            | Scenario::BlobHead
            | Scenario::TagsList
            | Scenario::Catalog
            | Scenario::Catalog10k => {
                let image = Image::new(vec![f.one_mib.make(run, u64::MAX)], "static");
                let static_repo = format!("{repo}/static");
                push_image(conn, &static_repo, "latest", &image).await?;
                if scenario == Scenario::TagsList {
                    for i in 0..TAGS {
                        put_manifest(conn, &static_repo, &format!("t{i:03}"), &image).await?;
                    }
                }
                if matches!(scenario, Scenario::Catalog | Scenario::Catalog10k) {
                    let image = &image;
                    let static_repo = &static_repo;
                    let count = scenario.catalog_repos();
                    let per = count.div_ceil(conns.len());
                    let jobs = conns.iter_mut().enumerate().map(|(w, conn)| async move {
                        for i in (w * per)..((w + 1) * per).min(count) {
                            let r = format!("{repo}/catalog/r{i:05}");
                            for b in image.blobs() {
                                mount_or_push(conn, &r, static_repo, b).await?;
                            }
                            put_manifest(conn, &r, "latest", image).await?;
                        }
                        anyhow::Ok(())
                    });
                    for r in join_all(jobs).await {
                        r?;
                    }
                }
                f.static_image = Some(image);
            }
            Scenario::Pull1M | Scenario::Pull64M => {
                let maker = f.big.as_ref().unwrap_or(&f.one_mib);
                for n in 0..PULL_SET {
                    let b = maker.make(run, u64::MAX - n);
                    push_blob(conn, &format!("{repo}/pull"), &b).await?;
                    f.pull_blobs.push(b);
                }
            }
            Scenario::ImagePull | Scenario::Mix => {
                for n in 0..PULL_SET {
                    let image = f.new_image(u64::MAX - 2 * n);
                    let tag = format!("pull{n}");
                    push_image(conn, &format!("{repo}/images"), &tag, &image).await?;
                    f.pull_images.push((tag, image));
                }
            }
            Scenario::Push1M | Scenario::Push64M | Scenario::PushChunked | Scenario::ImagePush => {
                // Pushes need nothing there, but the first upload of a run
                // pays for directory creation: pay it now.
                push_blob(
                    conn,
                    &format!("{repo}/push"),
                    &f.one_mib.make(run, u64::MAX),
                )
                .await?;
            }
        }
        Ok(Arc::new(f))
    }

    fn new_image(&self, n: u64) -> Image {
        let four = self.four_mib.as_ref().expect("prepared for images");
        Image::new(
            vec![self.one_mib.make(self.run, n), four.make(self.run, n)],
            &format!("{:016x}-{n}", self.run),
        )
    }

    fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Run operation number `i` of worker `worker`; the bytes it moved.
    pub async fn op(&self, conn: &mut Conn, worker: usize, i: u64) -> anyhow::Result<u64> {
        let repo = &self.repo;
        match self.scenario {
            Scenario::ManifestGet => {
                let image = self.static_image.as_ref().expect("prepared");
                let resp = conn
                    .send(
                        Method::GET,
                        &format!("/v2/{repo}/static/manifests/latest"),
                        &[("accept", media::OCI_MANIFEST)],
                        Frames::empty(),
                    )
                    .await?;
                let resp = expect(resp, StatusCode::OK, "manifest GET").await?;
                Ok(verify_body(resp, &image.digest, Some(image.manifest.len() as u64)).await?)
            }
            Scenario::BlobHead => {
                let layer = &self.static_image.as_ref().expect("prepared").layers[0];
                let resp = conn
                    .send(
                        Method::HEAD,
                        &format!("/v2/{repo}/static/blobs/{}", layer.digest),
                        &[],
                        Frames::empty(),
                    )
                    .await?;
                let resp = expect(resp, StatusCode::OK, "blob HEAD").await?;
                let len = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok());
                if len != Some(layer.size) {
                    bail!("blob HEAD: Content-Length {len:?}, wanted {}", layer.size);
                }
                drain(resp).await?;
                Ok(0)
            }
            Scenario::TagsList => {
                let resp = conn
                    .send(
                        Method::GET,
                        &format!("/v2/{repo}/static/tags/list"),
                        &[],
                        Frames::empty(),
                    )
                    .await?;
                let text = read_text(expect(resp, StatusCode::OK, "tags list").await?).await?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).context("tags list is not JSON")?;
                let n = v["tags"].as_array().map_or(0, |t| t.len());
                if n != TAGS + 1 {
                    bail!("tags list has {n} tags, wanted {}", TAGS + 1);
                }
                Ok(text.len() as u64)
            }
            Scenario::Catalog | Scenario::Catalog10k => {
                let resp = conn
                    .send(Method::GET, "/v2/_catalog?n=1000", &[], Frames::empty())
                    .await?;
                let text = read_text(expect(resp, StatusCode::OK, "catalog").await?).await?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).context("catalog is not JSON")?;
                let n = v["repositories"].as_array().map_or(0, |t| t.len());
                if n != CATALOG_PAGE {
                    bail!("catalog page has {n} repositories, wanted {CATALOG_PAGE}");
                }
                Ok(text.len() as u64)
            }
            Scenario::Push1M | Scenario::Push64M => {
                let maker = self.big.as_ref().unwrap_or(&self.one_mib);
                let b = maker.make(self.run, self.fresh());
                push_blob(conn, &format!("{repo}/push"), &b).await?;
                Ok(b.size)
            }
            Scenario::PushChunked => {
                let b = self
                    .big
                    .as_ref()
                    .expect("prepared")
                    .make(self.run, self.fresh());
                push_chunked(conn, &format!("{repo}/push"), &b, CHUNK).await?;
                Ok(b.size)
            }
            Scenario::Pull1M | Scenario::Pull64M => {
                let b = &self.pull_blobs[(i as usize + worker) % self.pull_blobs.len()];
                let path = format!("/v2/{repo}/pull/blobs/{}", b.digest);
                self.pull_blob(conn, &path, &b.digest, Some(b.size)).await
            }
            Scenario::ImagePush => self.push_new_image(conn, worker, i).await,
            Scenario::ImagePull => self.pull_image(conn, worker, i).await,
            Scenario::Mix => {
                if i % 4 == 3 {
                    self.push_new_image(conn, worker, i).await
                } else {
                    self.pull_image(conn, worker, i).await
                }
            }
        }
    }

    /// GET a blob and check it, as a client does: a redirect (to a signed
    /// URL of the registry's object store) is followed, on a connection
    /// kept for the next pull. The bytes read.
    async fn pull_blob(
        &self,
        conn: &mut Conn,
        path: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> anyhow::Result<u64> {
        let resp = conn.send(Method::GET, path, &[], Frames::empty()).await?;
        let mut elsewhere = self.elsewhere.lock().expect("pool lock").pop();
        let resp = follow_redirects(conn.target(), resp, &[], &mut elsewhere).await?;
        let resp = expect(resp, StatusCode::OK, "blob GET").await?;
        let read = verify_body(resp, digest, size).await?;
        if let Some(c) = elsewhere {
            self.elsewhere.lock().expect("pool lock").push(c);
        }
        Ok(read)
    }

    async fn push_new_image(&self, conn: &mut Conn, worker: usize, i: u64) -> anyhow::Result<u64> {
        let image = self.new_image(self.fresh());
        push_image(
            conn,
            &format!("{}/images", self.repo),
            &format!("w{worker}-{i}"),
            &image,
        )
        .await?;
        Ok(image.blobs().map(|b| b.size).sum::<u64>() + image.manifest.len() as u64)
    }

    /// Pull as a client does: the manifest by tag, then what it names.
    async fn pull_image(&self, conn: &mut Conn, worker: usize, i: u64) -> anyhow::Result<u64> {
        let (tag, image) = &self.pull_images[(i as usize + worker) % self.pull_images.len()];
        let repo = format!("{}/images", self.repo);
        let resp = conn
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("accept", media::OCI_MANIFEST)],
                Frames::empty(),
            )
            .await?;
        let resp = expect(resp, StatusCode::OK, "manifest GET").await?;
        let manifest = verified_bytes(resp, &image.digest).await?;
        let mut total = manifest.len() as u64;
        let m: serde_json::Value =
            serde_json::from_slice(&manifest).context("manifest is not JSON")?;
        let mut wanted = vec![&m["config"]];
        wanted.extend(m["layers"].as_array().into_iter().flatten());
        for d in wanted {
            let digest: Digest = d["digest"]
                .as_str()
                .unwrap_or("")
                .parse()
                .context("manifest names a bad digest")?;
            let path = format!("/v2/{repo}/blobs/{digest}");
            total += self
                .pull_blob(conn, &path, &digest, d["size"].as_u64())
                .await?;
        }
        Ok(total)
    }
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

async fn start_upload(
    conn: &mut Conn,
    repo: &str,
    query: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let resp = conn
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/{query}"),
            &[],
            Frames::empty(),
        )
        .await?;
    let status = resp.status();
    if status != StatusCode::ACCEPTED && status != StatusCode::CREATED {
        expect(resp, StatusCode::ACCEPTED, "upload POST").await?;
        unreachable!("expect fails on any other status");
    }
    let location = header(&resp, "location")
        .context("upload POST: no Location")?
        .to_string();
    read_text(resp).await?;
    Ok((status, location))
}

/// POST then PUT with the whole blob: the monolithic push.
pub async fn push_blob(conn: &mut Conn, repo: &str, b: &Blob) -> anyhow::Result<()> {
    let (_, location) = start_upload(conn, repo, "").await?;
    finish_upload(conn, &location, b, Frames::new(b.frames.iter().cloned())).await
}

async fn finish_upload(
    conn: &mut Conn,
    location: &str,
    b: &Blob,
    body: Frames,
) -> anyhow::Result<()> {
    let url = with_query(location, &format!("digest={}", b.digest));
    let resp = conn
        .send(
            Method::PUT,
            &url,
            &[("content-type", "application/octet-stream")],
            body,
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "upload PUT").await?;
    if header(&resp, "docker-content-digest") != Some(b.digest.to_string().as_str()) {
        bail!(
            "upload PUT: Docker-Content-Digest {:?}, wanted {}",
            header(&resp, "docker-content-digest"),
            b.digest
        );
    }
    read_text(resp).await?;
    Ok(())
}

/// POST, PATCH chunks with Content-Range, then PUT with the digest.
async fn push_chunked(conn: &mut Conn, repo: &str, b: &Blob, chunk: u64) -> anyhow::Result<()> {
    let (_, mut location) = start_upload(conn, repo, "").await?;
    let mut at = 0;
    while at < b.size {
        let end = (at + chunk).min(b.size);
        let range = format!("{at}-{}", end - 1);
        let resp = conn
            .send(
                Method::PATCH,
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                Frames::new(b.range(at, end)),
            )
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "upload PATCH").await?;
        location = header(&resp, "location")
            .context("upload PATCH: no Location")?
            .to_string();
        read_text(resp).await?;
        at = end;
    }
    finish_upload(conn, &location, b, Frames::empty()).await
}

/// Link a blob from another repository, or upload it if the registry
/// will not mount.
async fn mount_or_push(conn: &mut Conn, repo: &str, from: &str, b: &Blob) -> anyhow::Result<()> {
    let (status, location) =
        start_upload(conn, repo, &format!("?mount={}&from={from}", b.digest)).await?;
    if status == StatusCode::CREATED {
        return Ok(());
    }
    finish_upload(conn, &location, b, Frames::new(b.frames.iter().cloned())).await
}

/// What docker does: HEAD each blob, upload the missing, then the manifest.
pub async fn push_image(
    conn: &mut Conn,
    repo: &str,
    tag: &str,
    image: &Image,
) -> anyhow::Result<()> {
    for b in image.blobs() {
        let resp = conn
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{}", b.digest),
                &[],
                Frames::empty(),
            )
            .await?;
        let status = resp.status();
        read_text(resp).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => push_blob(conn, repo, b).await?,
            other => bail!("blob HEAD: {other}"),
        }
    }
    put_manifest(conn, repo, tag, image).await
}

async fn put_manifest(conn: &mut Conn, repo: &str, tag: &str, image: &Image) -> anyhow::Result<()> {
    let resp = conn
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("content-type", media::OCI_MANIFEST)],
            Frames::new([Bytes::clone(&image.manifest)]),
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "manifest PUT").await?;
    if header(&resp, "docker-content-digest") != Some(image.digest.to_string().as_str()) {
        bail!(
            "manifest PUT: Docker-Content-Digest {:?}, wanted {}",
            header(&resp, "docker-content-digest"),
            image.digest
        );
    }
    read_text(resp).await?;
    Ok(())
}
